//! State-machine tests of the tenant commands: create, update, lifecycle, placement, readiness.

use super::*;

#[test]
fn create_allocates_index_subnet_and_port() {
    let mut s = booted("198.18.0.0/15");
    let a = tenant(create(&mut s, 2, "acme"));
    let b = tenant(create(&mut s, 3, "globex"));
    assert_eq!(a.network.vpn_subnet, "198.18.1.0/24");
    assert_eq!(b.network.vpn_subnet, "198.18.2.0/24");
    assert_eq!(b.network.listen_port, 51822);
    assert_eq!(a.status, TenantStatus::Provisioning);
    assert_eq!(a.status_reason.as_deref(), Some("no db node fits: no nodes are registered"));
    assert_eq!(a.revision, 2);
    assert_eq!(a.db_quota, "5GB");
}

#[test]
fn duplicate_name_is_refused_and_audited_without_change() {
    let mut s = booted("10.50.0.0/16");
    tenant(create(&mut s, 2, "acme"));
    let before = s.tenants.clone();
    let r = create(&mut s, 3, "acme");
    assert_eq!(r, Err(DomainError::Conflict("tenant acme already exists".into())));
    assert_eq!(s.tenants, before);
    let last = s.audit.last().expect("audited");
    assert_eq!(last.outcome, audit::Outcome::Rejected);
    assert_eq!(last.action, "tenant.create");
    assert_eq!(last.details.get("reason").map(String::as_str), Some("tenant acme already exists"));
}

#[test]
fn freed_index_is_reused_only_after_purge() {
    let mut s = booted("10.50.0.0/16");
    tenant(create(&mut s, 2, "acme"));
    tenant(create(&mut s, 3, "globex"));
    let _ = s.apply(4, &cmd(4, Op::Lifecycle { name: name("acme"), step: Lifecycle::Delete }));
    let c = tenant(create(&mut s, 5, "initech"));
    assert_eq!(c.network.index, 3, "a deleted tenant keeps its index until purge");
    let r = s.apply(6, &cmd(6, Op::Lifecycle { name: name("acme"), step: Lifecycle::Purge { force: true } })).0;
    assert!(r.is_ok(), "{r:?}");
    let d = tenant(create(&mut s, 7, "umbrella"));
    assert_eq!(d.network.index, 1, "purged index is reused");
}

#[test]
fn pool_exhaustion_is_a_clear_error() {
    let mut s = booted("10.0.0.0/23");
    tenant(create(&mut s, 2, "aa"));
    let r = create(&mut s, 3, "bb");
    assert!(matches!(r, Err(DomainError::Exhausted(_))), "{r:?}");
}

#[test]
fn lifecycle_round_trip_and_retention() {
    let mut s = booted("10.50.0.0/16");
    tenant(create(&mut s, 2, "acme"));
    let step = |s: &mut State, i: u64, t: u64, st: Lifecycle| {
        s.apply(i, &cmd(t, Op::Lifecycle { name: name("acme"), step: st })).0
    };

    assert_eq!(tenant(step(&mut s, 3, 3, Lifecycle::Suspend)).status, TenantStatus::Suspended);
    assert!(matches!(step(&mut s, 4, 4, Lifecycle::Suspend), Err(DomainError::Conflict(_))));
    assert_eq!(tenant(step(&mut s, 5, 5, Lifecycle::Resume)).status, TenantStatus::Provisioning);

    let deleted = tenant(step(&mut s, 6, 1000, Lifecycle::Delete));
    assert_eq!(deleted.status, TenantStatus::DeletedPendingPurge);
    assert_eq!(deleted.purge_after_ms, Some(1000 + 30 * DAY_MS));
    assert_eq!(tenant(step(&mut s, 7, 2000, Lifecycle::Restore)).status, TenantStatus::Provisioning);

    tenant(step(&mut s, 8, 3000, Lifecycle::Delete));
    let early = step(&mut s, 9, 4000, Lifecycle::Purge { force: false });
    assert!(matches!(&early, Err(DomainError::Conflict(m)) if m.contains("has no backup")), "{early:?}");
    assert!(s.tenants.contains_key(&name("acme")));
    let late = step(&mut s, 10, 3000 + 30 * DAY_MS, Lifecycle::Purge { force: false });
    assert!(matches!(&late, Err(DomainError::Conflict(m)) if m.contains("has no backup")), "{late:?}");
    let forced = step(&mut s, 10, 3000 + 30 * DAY_MS, Lifecycle::Purge { force: true });
    assert!(forced.is_ok(), "{forced:?}");
    assert!(!s.tenants.contains_key(&name("acme")));
    assert!(matches!(step(&mut s, 11, 11, Lifecycle::Restore), Err(DomainError::NotFound(_))));
}

#[test]
fn update_changes_named_fields_only() {
    let mut s = booted("10.50.0.0/16");
    tenant(create(&mut s, 2, "acme"));
    let patch =
        TenantPatch { db_quota: ByteSize::parse("10GB").ok(), public_api: Some(false), ..TenantPatch::default() };
    let t = tenant(s.apply(3, &cmd(3, Op::UpdateTenant { name: name("acme"), patch })).0);
    assert_eq!(t.db_quota, "10GB");
    assert!(!t.public_api);
    assert!(t.vpn_enabled);
    assert_eq!(t.revision, 3);
    let empty = s.apply(4, &cmd(4, Op::UpdateTenant { name: name("acme"), patch: TenantPatch::default() })).0;
    assert!(matches!(empty, Err(DomainError::Invalid(_))));
}

#[test]
fn update_is_audited_with_the_named_fields_as_before() {
    let mut s = booted("10.50.0.0/16");
    tenant(create(&mut s, 2, "acme"));
    let patch = TenantPatch {
        tier: Some(Tier::Premium),
        db_quota: ByteSize::parse("10GB").ok(),
        access_mode: Some(AccessMode::Hybrid),
        connection_limit: Some(7),
        ..TenantPatch::default()
    };
    tenant(s.apply(3, &cmd(3, Op::UpdateTenant { name: name("acme"), patch })).0);
    let entry = s.audit.last().expect("audited");
    let details: Vec<(&str, &str)> = entry.details.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        details,
        [("access_mode", "hybrid"), ("connection_limit", "7"), ("db_quota", "10GB"), ("tier", "premium")]
    );
}

#[test]
fn waiting_tenants_are_placed_when_a_node_registers() {
    let mut s = booted("10.50.0.0/16");
    tenant(create(&mut s, 2, "acme"));
    let (r, touched) = s.apply(3, &cmd(3, Op::RegisterNode(node(7, &[]))));
    assert!(r.is_ok());
    assert!(touched.contains(&Touched::Tenant(name("acme"))));
    let t = &s.tenants[&name("acme")];
    assert_eq!(t.placement, Placement { db_node: Some(7), gateway_node: Some(7) });
    assert_eq!(t.revision, 3);
}

#[test]
fn dedicated_tenant_alone_on_dedicated_node() {
    let mut s = booted("10.50.0.0/16");
    let _ = s.apply(2, &cmd(2, Op::RegisterNode(node(1, &[]))));
    let _ = s.apply(3, &cmd(3, Op::RegisterNode(node(2, &[("dedicated", "true")]))));
    let mut d = spec("bigco");
    d.dedicated = true;
    let t = tenant(s.apply(4, &cmd(4, Op::CreateTenant(d))).0);
    assert_eq!(t.placement, Placement { db_node: Some(2), gateway_node: Some(2) });
    let other = tenant(create(&mut s, 5, "smallco"));
    assert_eq!(other.placement.db_node, Some(1));
}

#[test]
fn purge_revokes_the_tenants_keys() {
    let mut s = booted("10.50.0.0/16");
    tenant(create(&mut s, 2, "acme"));
    let customer =
        ApiKey { id: "00000000000000bb".into(), role: Role::Customer, tenant: Some(name("acme")), ..admin_key() };
    let _ = s.apply(3, &cmd(3, Op::CreateApiKey(customer.clone())));
    let _ = s.apply(4, &cmd(4, Op::Lifecycle { name: name("acme"), step: Lifecycle::Delete }));
    let _ = s.apply(5, &cmd(5, Op::Lifecycle { name: name("acme"), step: Lifecycle::Purge { force: true } }));
    assert_eq!(s.api_keys[&customer.id].revoked_at_ms, Some(5));
}

#[test]
fn reports_make_a_tenant_active_and_revision_changes_wait_again() {
    let mut s = booted("198.18.0.0/15");
    let _ = s.apply(2, &cmd(2, Op::RegisterNode(node(1, &[]))));
    let t = tenant(create(&mut s, 3, "acme"));
    assert_eq!(t.placement, Placement { db_node: Some(1), gateway_node: Some(1) });
    let report = |applied: u64, ready: bool| {
        Op::NodeReport(node::Report {
            node_id: 1,
            applied_revision: applied,
            tenants: [(
                "acme".to_string(),
                node::NodeTenantStatus {
                    ready,
                    reason: (!ready).then(|| "interface bqt1 missing".to_string()),
                    revision: applied,
                    db_bytes: 0,
                    quota_exceeded: false,
                    connections: 0,
                    gateway: None,
                    events_total: 0,
                },
            )]
            .into(),
            capacity: None,
            wireguard_backend: None,
            conditions: vec![],
        })
    };
    let _ = s.apply(4, &cmd(4, report(3, false)));
    let t = &s.tenants[&name("acme")];
    assert_eq!(t.status, TenantStatus::Provisioning);
    assert_eq!(t.status_reason.as_deref(), Some("node 1: interface bqt1 missing"));
    let _ = s.apply(5, &cmd(5, report(3, true)));
    assert_eq!(s.tenants[&name("acme")].status, TenantStatus::Active);
    assert_eq!(s.tenants[&name("acme")].revision, 3, "reports do not change the tenant's revision");

    let patch = TenantPatch { connection_limit: Some(9), ..TenantPatch::default() };
    let t = tenant(s.apply(6, &cmd(6, Op::UpdateTenant { name: name("acme"), patch })).0);
    assert_eq!(t.status, TenantStatus::Provisioning, "a change waits for the node again");
    let _ = s.apply(7, &cmd(7, report(6, true)));
    assert_eq!(s.tenants[&name("acme")].status, TenantStatus::Active);

    let _ = s.apply(8, &cmd(8, Op::RevokeNode { id: 1 }));
    assert!(matches!(s.apply(9, &cmd(9, report(8, true))).0, Err(DomainError::Rejected(_))));
    assert_eq!(desired::for_node(&s, 1), None, "a revoked node gets no desired state");
}

#[test]
fn quota_reports_turn_a_tenant_quota_exceeded_and_back() {
    let mut s = booted("198.18.0.0/15");
    let _ = s.apply(2, &cmd(2, Op::RegisterNode(node(1, &[]))));
    let _ = tenant(create(&mut s, 3, "acme"));
    let report = |exceeded: bool| {
        Op::NodeReport(node::Report {
            node_id: 1,
            applied_revision: 3,
            tenants: [(
                "acme".to_string(),
                node::NodeTenantStatus {
                    ready: true,
                    reason: None,
                    revision: 3,
                    db_bytes: if exceeded { 6_000_000_000 } else { 10 },
                    quota_exceeded: exceeded,
                    connections: 1,
                    gateway: None,
                    events_total: 0,
                },
            )]
            .into(),
            capacity: None,
            wireguard_backend: None,
            conditions: vec![],
        })
    };
    let _ = s.apply(4, &cmd(4, report(true)));
    let t = &s.tenants[&name("acme")];
    assert_eq!(t.status, TenantStatus::QuotaExceeded);
    assert_eq!(
        t.node_status.get(&1).map(|n| (n.db_bytes, n.connections)),
        Some((6_000_000_000, 1)),
        "usage samples kept"
    );
    assert!(t.status_reason.as_deref().is_some_and(|r| r.contains("6000000000 bytes")), "{:?}", t.status_reason);
    let entry = s.audit.last().expect("audited");
    assert_eq!(
        entry.details.get("tenant/acme").map(String::as_str),
        Some("quota-exceeded"),
        "the transition is audited"
    );
    assert_eq!(desired::for_node(&s, 1).map(|d| d[0].lifecycle), Some(desired::Lifecycle::Run));
    let _ = s.apply(5, &cmd(5, report(false)));
    assert_eq!(s.tenants[&name("acme")].status, TenantStatus::Active);
    assert_eq!(s.audit.last().and_then(|e| e.details.get("tenant/acme").cloned()).as_deref(), Some("active"));
}

#[test]
fn refused_update_changes_nothing_and_is_audited() {
    let mut s = booted("10.50.0.0/16");
    let mut vpn_only = spec("acme");
    vpn_only.public_api = false;
    vpn_only.access_mode = AccessMode::VpnOnly;
    tenant(s.apply(2, &cmd(2, Op::CreateTenant(vpn_only))).0);
    let before = s.tenants.clone();
    let patch = TenantPatch { vpn_enabled: Some(false), ..TenantPatch::default() };
    let (r, touched) = s.apply(3, &cmd(3, Op::UpdateTenant { name: name("acme"), patch }));
    assert_eq!(r, Err(DomainError::InvalidTenant(InvalidTenant::AccessNeedsVpn(AccessMode::VpnOnly))));
    assert_eq!(s.tenants, before, "nothing changed");
    assert!(!touched.iter().any(|t| matches!(t, Touched::Tenant(_))), "{touched:?}");
    let last = s.audit.last().expect("audited");
    assert_eq!((last.action.as_str(), last.outcome), ("tenant.update", audit::Outcome::Rejected));
    assert!(last.details.get("reason").is_some_and(|r| r.contains("needs the VPN enabled")), "{last:?}");
}

#[test]
fn state_machine_refuses_a_spec_that_breaks_an_invariant() {
    // A command that bypassed the API edge (e.g. forwarded by a peer) is checked again at apply.
    let mut s = booted("10.50.0.0/16");
    let mut bad = spec("acme");
    bad.db_type = DbType::Mssql;
    let r = s.apply(2, &cmd(2, Op::CreateTenant(bad))).0;
    assert_eq!(r, Err(DomainError::InvalidTenant(InvalidTenant::MssqlNeedsDatabase)));
    assert!(s.tenants.is_empty());
}
