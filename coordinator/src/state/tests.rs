//! Unit tests of the state machine commands.

use super::action::Action;
use super::allocation::VpnPool;
use super::apikey::{ApiKey, Role};
use super::audit;
use super::node::{Node, NodeCapacity, NodeRole};
use super::quota::ByteSize;
use super::tenant::*;
use super::*;

const DAY_MS: u64 = 86_400_000;

fn meta(t: u64) -> Meta {
    Meta { time_ms: t, actor: "k_admin".into(), source: "127.0.0.1".into(), key_role: None }
}

fn cmd(t: u64, op: Op) -> Command {
    Command { meta: meta(t), op }
}

fn name(n: &str) -> TenantName {
    TenantName::parse(n).expect("valid test name")
}

fn admin_key() -> ApiKey {
    ApiKey {
        id: "00000000000000aa".into(),
        role: Role::Admin,
        tenant: None,
        description: "first admin".into(),
        secret_hash: apikey::hash_secret("s"),
        created_at_ms: 0,
        expires_at_ms: None,
        revoked_at_ms: None,
    }
}

fn booted(pool: &str) -> State {
    let mut s = State::default();
    let settings = ClusterSettings {
        cluster_id: "test".into(),
        vpn_pool: VpnPool::parse(pool).expect("valid pool"),
        retention_ms: 30 * DAY_MS,
        ca_fingerprint: "sha256:00".into(),
        ca_cert_pem: String::new(),
        ca_key_pem: SecretPem::default(),
    };
    let (r, _) = s.apply(1, &cmd(0, Op::Bootstrap { settings, admin_key: admin_key() }));
    assert_eq!(r, Ok(Reply::Done));
    s
}

fn spec(n: &str) -> TenantSpec {
    let d = Tier::Free.defaults();
    TenantSpec {
        name: name(n),
        tier: Tier::Free,
        db_type: DbType::Postgres,
        isolation: Isolation::Schema,
        db_quota: ByteSize::parse("5GB").expect("valid"),
        connection_limit: d.connection_limit,
        events_per_min: d.events_per_min,
        vpn_enabled: true,
        public_api: true,
        ddl_enabled: false,
        access_mode: AccessMode::Hybrid,
        dedicated: false,
        node_selector: BTreeMap::new(),
        db_password_verifier: String::new(),
    }
}

fn create(s: &mut State, idx: u64, n: &str) -> Response {
    s.apply(idx, &cmd(idx, Op::CreateTenant(spec(n)))).0
}

fn tenant(r: Response) -> Tenant {
    match r {
        Ok(Reply::Tenant(t)) => *t,
        other => panic!("expected a tenant, got {other:?}"),
    }
}

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
fn every_command_appends_one_chained_audit_entry() {
    let mut s = booted("10.50.0.0/16");
    let _ = create(&mut s, 2, "acme");
    let _ = create(&mut s, 3, "acme");
    let _ = s.apply(
        4,
        &cmd(4, Op::Rejected { action: Action::TenantCreate, target: "tenant/Bad".into(), reason: "bad".into() }),
    );
    assert_eq!(s.audit.len(), 4);
    assert_eq!(audit::verify(&s.audit), Ok(4));
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
    assert!(matches!(&early, Err(DomainError::Conflict(m)) if m.contains("can be restored until")), "{early:?}");
    assert!(s.tenants.contains_key(&name("acme")));
    let late = step(&mut s, 10, 3000 + 30 * DAY_MS, Lifecycle::Purge { force: false });
    assert!(late.is_ok(), "{late:?}");
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

fn node(id: u64, labels: &[(&str, &str)]) -> Node {
    Node {
        id,
        roles: [NodeRole::Db, NodeRole::Gateway].into(),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        capacity: NodeCapacity { cpus: 2, memory_bytes: 1 << 33, disk_bytes: 100_000_000_000, max_tenants: 10 },
        address: "192.0.2.10".into(),
        last_seen_ms: 0,
        cordoned: false,
        revoked: false,
        applied_revision: 0,
    }
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
fn api_keys_scoping_and_revocation() {
    let mut s = booted("10.50.0.0/16");
    let customer =
        ApiKey { id: "00000000000000bb".into(), role: Role::Customer, tenant: Some(name("acme")), ..admin_key() };
    let r = s.apply(2, &cmd(2, Op::CreateApiKey(customer.clone()))).0;
    assert!(matches!(r, Err(DomainError::NotFound(_))), "customer key needs an existing tenant");
    tenant(create(&mut s, 3, "acme"));
    let r = s.apply(4, &cmd(4, Op::CreateApiKey(customer.clone()))).0;
    match r {
        Ok(Reply::ApiKey(k)) => assert!(k.secret_hash.is_empty(), "replies never carry the hash"),
        other => panic!("{other:?}"),
    }
    let _ = s.apply(5, &cmd(5, Op::RevokeApiKey { id: customer.id.clone() }));
    assert_eq!(s.api_keys[&customer.id].revoked_at_ms, Some(5));
    assert!(matches!(
        s.apply(6, &cmd(6, Op::RevokeApiKey { id: customer.id.clone() })).0,
        Err(DomainError::Conflict(_))
    ));
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
fn bootstrap_only_once_and_commands_need_it() {
    let mut fresh = State::default();
    assert_eq!(create(&mut fresh, 1, "acme"), Err(DomainError::Uninitialized));
    let mut s = booted("10.50.0.0/16");
    let settings = s.settings.clone().expect("booted");
    let again = s.apply(2, &cmd(2, Op::Bootstrap { settings, admin_key: admin_key() })).0;
    assert!(matches!(again, Err(DomainError::Conflict(_))));
}

#[test]
fn removed_coordinator_ids_are_retired() {
    let mut s = booted("10.50.0.0/16");
    let _ = s.apply(2, &cmd(2, Op::Membership { action: Action::ClusterRemove, node_id: 3, details: BTreeMap::new() }));
    assert!(s.retired_coordinators.contains(&3));
}

fn join_token(id: &str, roles: &[NodeRole], expires: u64) -> node::JoinToken {
    node::JoinToken {
        id: id.into(),
        roles: roles.iter().copied().collect(),
        labels: [("region".to_string(), "ist".to_string())].into(),
        secret_hash: apikey::hash_secret("secret"),
        created_at_ms: 0,
        expires_at_ms: expires,
        used_at_ms: None,
        used_by_node: None,
        coordinator_id: None,
        revoked_at_ms: None,
    }
}

fn join(s: &mut State, idx: u64, token: &str, secret: &str, roles: &[NodeRole]) -> Response {
    let mut n = node(0, &[]);
    n.roles = roles.iter().copied().collect();
    s.apply(idx, &cmd(idx, Op::JoinNode { token_id: token.into(), secret_hash: apikey::hash_secret(secret), node: n }))
        .0
}

#[test]
fn join_tokens_are_single_use_expiring_and_bound_to_roles() {
    let mut s = booted("198.18.0.0/15");
    let _ = s.apply(2, &cmd(2, Op::CreateJoinToken(join_token("t1", &[NodeRole::Db], 100))));
    let _ = s.apply(3, &cmd(3, Op::CreateJoinToken(join_token("t2", &[NodeRole::Db], 100))));
    let _ = s.apply(4, &cmd(4, Op::CreateJoinToken(join_token("t3", &[NodeRole::Db], 5))));

    assert!(matches!(join(&mut s, 5, "t1", "wrong", &[NodeRole::Db]), Err(DomainError::Rejected(_))));
    assert!(matches!(join(&mut s, 6, "t1", "secret", &[NodeRole::Gateway]), Err(DomainError::Invalid(_))));
    let first = join(&mut s, 7, "t1", "secret", &[NodeRole::Db]);
    match first {
        Ok(Reply::Node(n)) => {
            assert_eq!(n.id, 1);
            assert_eq!(n.labels.get("region").map(String::as_str), Some("ist"), "token labels apply");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(join(&mut s, 8, "t1", "secret", &[NodeRole::Db]), Err(DomainError::Rejected(_))), "reused");
    assert!(matches!(join(&mut s, 9, "t3", "secret", &[NodeRole::Db]), Err(DomainError::Rejected(_))), "expired");
    assert!(matches!(join(&mut s, 10, "nope", "secret", &[NodeRole::Db]), Err(DomainError::Rejected(_))));
    match join(&mut s, 11, "t2", "secret", &[NodeRole::Db]) {
        Ok(Reply::Node(n)) => assert_eq!(n.id, 2, "ids are never reused"),
        other => panic!("{other:?}"),
    }
    let last = s.audit.last().expect("audited");
    assert_eq!(last.action, "node.join");
    assert!(!format!("{:?}", s.audit).contains(&apikey::hash_secret("secret")), "no token hash in audit");
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
                },
            )]
            .into(),
            capacity: None,
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
                },
            )]
            .into(),
            capacity: None,
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

fn key(id: &str, role: Role, expires_at_ms: Option<u64>) -> ApiKey {
    ApiKey { id: id.into(), role, expires_at_ms, secret_hash: apikey::hash_secret(id), ..admin_key() }
}

#[test]
fn last_lasting_admin_key_cannot_be_revoked() {
    let mut s = booted("10.50.0.0/16");
    let first = admin_key().id;
    let revoke = |s: &mut State, i: u64, id: &str| s.apply(i, &cmd(i, Op::RevokeApiKey { id: id.into() })).0;
    let r = revoke(&mut s, 2, &first);
    assert!(matches!(&r, Err(DomainError::Conflict(m)) if m.contains("last active admin key")), "{r:?}");
    assert_eq!(s.api_keys[&first].revoked_at_ms, None, "still usable");
    assert_eq!(s.audit.last().map(|e| e.outcome), Some(audit::Outcome::Rejected));

    // An auditor or an admin key that expires is no replacement.
    for (i, k) in [key("00000000000000bb", Role::Auditor, None), key("00000000000000cc", Role::Admin, Some(1_000))]
        .into_iter()
        .enumerate()
    {
        let i = 3 + i as u64;
        assert!(s.apply(i, &cmd(i, Op::CreateApiKey(k))).0.is_ok());
    }
    assert!(matches!(revoke(&mut s, 5, &first), Err(DomainError::Conflict(_))));
    // The expiring admin key may go: a lasting one remains.
    assert!(revoke(&mut s, 6, "00000000000000cc").is_ok());

    assert!(s.apply(7, &cmd(7, Op::CreateApiKey(key("00000000000000dd", Role::Admin, None)))).0.is_ok());
    assert!(revoke(&mut s, 8, &first).is_ok(), "another lasting admin key exists");
    assert!(matches!(revoke(&mut s, 9, "00000000000000dd"), Err(DomainError::Conflict(_))));
}

#[test]
fn recovered_admin_key_is_added_and_audited_as_break_glass() {
    let mut s = booted("10.50.0.0/16");
    let recovered = key("00000000000000ee", Role::Admin, None);
    let op = Op::RecoverAdmin { key: recovered.clone(), host: "coord-1".into() };
    let r = s.apply(
        2,
        &Command {
            meta: Meta { time_ms: 2, actor: "break-glass".into(), source: "host/coord-1".into(), key_role: None },
            op,
        },
    );
    assert!(r.0.is_ok(), "{r:?}");
    assert_eq!(s.api_keys.get(&recovered.id), Some(&recovered));
    let e = s.audit.last().expect("audited");
    assert_eq!(
        (e.action.as_str(), e.target.as_str(), e.outcome),
        ("apikey.recovered", "apikey/00000000000000ee", audit::Outcome::Ok)
    );
    assert_eq!(e.details.get("host").map(String::as_str), Some("coord-1"));
    // Only admin keys can be recovered this way.
    let customer = ApiKey { id: "00000000000000ff".into(), role: Role::Customer, ..recovered };
    let r = s.apply(3, &cmd(3, Op::RecoverAdmin { key: customer, host: "coord-1".into() })).0;
    assert!(matches!(r, Err(DomainError::Invalid(_))), "{r:?}");
}

/// A command acting with API key `id`, as the REST API makes it (the key's role claimed).
fn as_key(t: u64, id: &str, role: Role, op: Op) -> Command {
    Command { meta: Meta { time_ms: t, actor: id.into(), source: "127.0.0.1".into(), key_role: Some(role) }, op }
}

#[test]
fn a_key_revoked_earlier_in_the_log_cannot_act_through_a_lagging_follower() {
    let mut s = booted("10.50.0.0/16");
    let second = key("00000000000000bb", Role::Admin, None);
    let (r, _) = s.apply(2, &as_key(2, &admin_key().id, Role::Admin, Op::CreateApiKey(second.clone())));
    assert!(r.is_ok(), "{r:?}");
    // The first admin revokes the second at time 10 ...
    let (r, _) = s.apply(3, &as_key(10, &admin_key().id, Role::Admin, Op::RevokeApiKey { id: second.id.clone() }));
    assert!(r.is_ok(), "{r:?}");
    // ... while a follower that had not seen it yet accepted the second key at time 9 and
    // forwarded its command, which the leader's log puts after the revocation.
    let forged = key("00000000000000cc", Role::Admin, None);
    let keys_before = s.api_keys.len();
    let (r, touched) = s.apply(4, &as_key(9, &second.id, Role::Admin, Op::CreateApiKey(forged.clone())));
    assert!(matches!(&r, Err(DomainError::Forbidden(m)) if m.to_string().contains("revoked")), "{r:?}");
    assert_eq!(s.api_keys.len(), keys_before, "no key was made");
    assert!(!s.api_keys.contains_key(&forged.id));
    let seq = s.audit.last().map(|e| e.seq).unwrap_or_default();
    assert_eq!(touched, vec![Touched::Audit(seq)], "only the audit entry is written");
    let entry = s.audit.last().expect("audited");
    assert_eq!((entry.action.as_str(), entry.target.as_str()), ("apikey.create", "apikey/00000000000000cc"));
    assert_eq!(entry.outcome, audit::Outcome::Rejected);
    assert_eq!(entry.actor, second.id);
    assert!(entry.details.get("reason").is_some_and(|m| m.contains("revoked")), "{entry:?}");
}

#[test]
fn keys_are_rechecked_at_apply_for_existence_role_and_expiry() {
    let mut s = booted("10.50.0.0/16");
    let admin = admin_key().id;
    let expiring = key("00000000000000dd", Role::Admin, Some(50));
    let auditor = key("00000000000000ee", Role::Auditor, None);
    for (i, k) in [(2, &expiring), (3, &auditor)] {
        let (r, _) = s.apply(i, &as_key(i, &admin, Role::Admin, Op::CreateApiKey(k.clone())));
        assert!(r.is_ok(), "{r:?}");
    }
    let create = |s: &mut State, i: u64, t: u64, actor: &str, role: Role| {
        s.apply(i, &as_key(t, actor, role, Op::CreateTenant(spec("acme")))).0
    };
    let refused = |r: &Response, why: &str| matches!(r, Err(DomainError::Forbidden(m)) if m.to_string().contains(why));
    assert!(refused(&create(&mut s, 4, 10, "00000000000000ff", Role::Admin), "does not exist"));
    assert!(refused(&create(&mut s, 5, 60, &expiring.id, Role::Admin), "expired"));
    assert!(refused(&create(&mut s, 6, 10, &auditor.id, Role::Admin), "not the admin key"));
    assert!(refused(&create(&mut s, 7, 10, &auditor.id, Role::Auditor), "may not change"));
    assert!(s.tenants.is_empty(), "nothing refused was created");
    assert!(create(&mut s, 8, 40, &expiring.id, Role::Admin).is_ok(), "usable until it expires");
    // An edge refusal of any key is only audited, never re-checked.
    let op = Op::Rejected { action: Action::TenantGet, target: "tenant/x".into(), reason: "forbidden".into() };
    let (r, _) = s.apply(9, &as_key(10, "00000000000000ff", Role::Customer, op));
    assert!(matches!(r, Err(DomainError::Rejected(_))), "{r:?}");
}

#[test]
fn replaying_a_log_with_a_later_revocation_gives_the_same_state_and_chain() {
    let admin = admin_key().id;
    let second = key("00000000000000bb", Role::Admin, None);
    let log = [
        as_key(2, &admin, Role::Admin, Op::CreateApiKey(second.clone())),
        as_key(3, &second.id, Role::Admin, Op::CreateTenant(spec("before"))),
        as_key(4, &admin, Role::Admin, Op::RevokeApiKey { id: second.id.clone() }),
        as_key(5, &second.id, Role::Admin, Op::CreateTenant(spec("after"))),
        // Entries from before keys were claimed (older logs) apply as they always did.
        cmd(6, Op::CreateTenant(spec("legacy"))),
    ];
    let run = || {
        let mut s = booted("10.50.0.0/16");
        let replies: Vec<Response> = log.iter().enumerate().map(|(i, c)| s.apply(i as u64 + 2, c).0).collect();
        (s, replies)
    };
    let (first, replies) = run();
    assert!(replies[1].is_ok(), "applied at its position, before the revocation");
    assert!(matches!(replies[3], Err(DomainError::Forbidden(_))), "{:?}", replies[3]);
    assert!(replies[4].is_ok(), "{:?}", replies[4]);
    let names: Vec<&str> = first.tenants.keys().map(|n| n.as_str()).collect();
    assert_eq!(names, ["before", "legacy"]);
    let (again, replies_again) = run();
    assert_eq!(again, first);
    assert_eq!(replies_again, replies);
    assert_eq!(audit::verify(&again.audit), audit::verify(&first.audit));
}

#[test]
fn describe_names_the_same_action_and_target_as_apply() {
    let mut s = booted("10.50.0.0/16");
    let admin = admin_key().id;
    let mut coordinator_token = join_token("ct", &[], 100);
    coordinator_token.coordinator_id = Some(4);
    let ops = vec![
        Op::CreateTenant(spec("acme")),
        Op::UpdateTenant {
            name: name("acme"),
            patch: TenantPatch { db_quota: ByteSize::parse("6GB").ok(), ..Default::default() },
        },
        Op::Lifecycle { name: name("acme"), step: Lifecycle::Suspend },
        Op::CreateApiKey(key("00000000000000bb", Role::Auditor, None)),
        Op::RevokeApiKey { id: "00000000000000bb".into() },
        Op::RegisterNode(node(7, &[])),
        Op::CreateJoinToken(coordinator_token),
        Op::RevokeJoinToken { id: "ct".into() },
        Op::CordonNode { id: 7, cordoned: true },
        Op::RevokeNode { id: 7 },
        Op::Membership { action: Action::ClusterPromote, node_id: 4, details: BTreeMap::new() },
    ];
    for (i, op) in ops.into_iter().enumerate() {
        let i = i as u64 + 2;
        let (action, target) = op.describe();
        let _ = s.apply(i, &as_key(i, &admin, Role::Admin, op));
        let entry = s.audit.last().expect("audited");
        assert_eq!((entry.action.clone(), entry.target.clone()), (action.to_string(), target.to_string()));
    }
}

#[test]
fn revoked_join_tokens_cannot_be_spent_and_used_ones_cannot_be_revoked() {
    let mut s = booted("198.18.0.0/15");
    let mut ct = join_token("ct", &[], 100);
    ct.coordinator_id = Some(4);
    let _ = s.apply(2, &cmd(2, Op::CreateJoinToken(ct)));
    let _ = s.apply(3, &cmd(3, Op::CreateJoinToken(join_token("nt", &[NodeRole::Db], 100))));
    let _ = s.apply(4, &cmd(4, Op::CreateJoinToken(join_token("used", &[NodeRole::Db], 100))));
    assert!(join(&mut s, 5, "used", "secret", &[NodeRole::Db]).is_ok());
    for (i, id) in [(6, "ct"), (7, "nt")] {
        let (r, touched) = s.apply(i, &cmd(i, Op::RevokeJoinToken { id: id.into() }));
        assert_eq!(r, Ok(Reply::Done));
        assert!(touched.contains(&Touched::JoinToken(id.into())));
        assert_eq!(s.join_tokens[id].revoked_at_ms, Some(i));
    }
    let spend = Op::JoinCoordinator { token_id: "ct".into(), secret_hash: apikey::hash_secret("secret"), id: 4 };
    assert!(matches!(s.apply(8, &cmd(8, spend)).0, Err(DomainError::Rejected(m)) if m.contains("revoked")));
    assert!(matches!(join(&mut s, 9, "nt", "secret", &[NodeRole::Db]), Err(DomainError::Rejected(_))));
    let again = s.apply(10, &cmd(10, Op::RevokeJoinToken { id: "ct".into() })).0;
    assert!(matches!(again, Err(DomainError::Conflict(m)) if m.contains("already revoked")));
    let used = s.apply(11, &cmd(11, Op::RevokeJoinToken { id: "used".into() })).0;
    assert!(matches!(used, Err(DomainError::Conflict(m)) if m.contains("was used")));
    let missing = s.apply(12, &cmd(12, Op::RevokeJoinToken { id: "nope".into() })).0;
    assert!(matches!(missing, Err(DomainError::NotFound(_))));
}

#[test]
fn commands_written_with_string_actions_still_decode_and_encode_the_same() {
    // As an older coordinator wrote them to its Raft log, when the action was a plain string.
    let rejected = r#"{"meta":{"time_ms":5,"actor":"anonymous","source":"192.0.2.9"},"op":{"Rejected":{"action":"anonymous.refused","target":"source/192.0.2.9","reason":"3 refused"}}}"#;
    let membership = r#"{"meta":{"time_ms":6,"actor":"00000000000000aa","source":"127.0.0.1"},"op":{"Membership":{"action":"cluster.add-learner","node_id":3,"details":{"address":"10.0.0.3:7000"}}}}"#;
    let decoded: Command = serde_json::from_str(rejected).expect("an old refusal decodes");
    assert_eq!(
        decoded.op,
        Op::Rejected {
            action: Action::AnonymousRefused,
            target: "source/192.0.2.9".into(),
            reason: "3 refused".into()
        }
    );
    assert_eq!(serde_json::to_string(&decoded).expect("encodes"), rejected, "byte-identical");
    let decoded: Command = serde_json::from_str(membership).expect("an old membership change decodes");
    let Op::Membership { action, node_id, .. } = &decoded.op else { panic!("{decoded:?}") };
    assert_eq!((*action, *node_id), (Action::ClusterAddLearner, 3));
    assert_eq!(serde_json::to_string(&decoded).expect("encodes"), membership, "byte-identical");
    // Every action name any version wrote to a log decodes (the edge's names included).
    for name in ["tenant.get", "node.handshake", "raft.handshake", "api.connect", "apikey.throttled", "cluster.remove"]
    {
        let json = format!(r#"{{"Rejected":{{"action":"{name}","target":"t","reason":"r"}}}}"#);
        assert!(serde_json::from_str::<Op>(&json).is_ok(), "{name}");
    }
}
