//! State-machine tests of devices, exposures and firewall rules: allocation, collisions,
//! refusals that change nothing, customer keys limited to their tenant, purge.

use super::*;
use crate::state::device::{DeviceName, NewDevice};
use crate::state::exposure::{NewExposure, Protocol, SourceMode};
use crate::state::firewall::{NewDestination, NewRule, RuleProtocol, Verdict};
use crate::state::gateway::{GatewaySettings, PortRange, WgKey};

fn wg(b: u8) -> WgKey {
    WgKey::from_bytes(&[b; 32])
}

fn dev(tenant: &str, n: &str, k: u8, address: Option<&str>) -> Op {
    Op::AddDevice(NewDevice {
        tenant: name(tenant),
        name: DeviceName::parse(n).expect("name"),
        public_key: wg(k),
        address: address.map(|a| a.parse().expect("ip")),
    })
}

fn expose(tenant: &str, device: &str, port: u16, public_port: Option<u16>, protocol: Protocol) -> Op {
    Op::AddExposure(NewExposure {
        tenant: name(tenant),
        device: DeviceName::parse(device).expect("name"),
        port,
        public_port,
        protocol,
        allow: vec![],
        rate_per_second: 0,
        source: SourceMode::Keep,
    })
}

/// Two tenants on one gateway node with public ports 15000-15002.
fn gateway_world() -> State {
    let mut s = booted("198.18.0.0/15");
    let mut n = node(1, &[]);
    n.gateway.settings = Some(GatewaySettings {
        public_address: "198.51.100.10".parse().expect("ip"),
        public_ports: PortRange::new(15000, 15002).expect("range"),
    });
    let _ = s.apply(2, &cmd(2, Op::RegisterNode(n)));
    tenant(create(&mut s, 3, "acme"));
    tenant(create(&mut s, 4, "globex"));
    s
}

fn run(s: &mut State, op: Op) -> Response {
    let i = s.audit.len() + 10;
    s.apply(i, &cmd(i, op)).0
}

fn device_of(r: Response) -> crate::state::device::Device {
    match r {
        Ok(Reply::Device(d)) => *d,
        other => panic!("expected a device, got {other:?}"),
    }
}

#[test]
fn device_addresses_are_allocated_in_the_tenant_subnet_and_never_shared() {
    let mut s = gateway_world();
    let a = device_of(run(&mut s, dev("acme", "plc1", 1, None)));
    assert_eq!(a.address.to_string(), "198.18.1.2");
    let b = device_of(run(&mut s, dev("acme", "cam", 2, Some("198.18.1.10"))));
    assert_eq!(b.address.to_string(), "198.18.1.10");
    assert_eq!(device_of(run(&mut s, dev("acme", "c3", 3, None))).address.to_string(), "198.18.1.3");
    assert_eq!(device_of(run(&mut s, dev("globex", "plc1", 4, None))).address.to_string(), "198.18.2.2");
    let before = s.devices.clone();
    for (op, want) in [
        (dev("acme", "plc1", 9, None), "already has a device"),
        (dev("globex", "x", 1, None), "already registered"),
        (dev("acme", "x", 9, Some("198.18.1.10")), "taken"),
        (dev("acme", "x", 9, Some("198.18.1.1")), "gateway"),
        (dev("acme", "x", 9, Some("198.18.1.0")), "network address"),
        (dev("acme", "x", 9, Some("198.18.1.255")), "broadcast"),
        (dev("acme", "x", 9, Some("198.18.2.9")), "outside the tenant subnet"),
        (dev("nobody", "x", 9, None), "not found"),
    ] {
        let r = run(&mut s, op);
        assert!(r.as_ref().is_err_and(|e| e.to_string().contains(want)), "{want}: {r:?}");
    }
    assert_eq!(s.devices, before, "refusals change nothing");
    let _ = run(&mut s, Op::RemoveDevice { tenant: name("acme"), name: DeviceName::parse("plc1").expect("n") });
    assert_eq!(device_of(run(&mut s, dev("acme", "new", 5, None))).address.to_string(), "198.18.1.2", "freed");
}

#[test]
fn public_ports_come_from_the_gateway_range_per_protocol_and_survive_disable() {
    let mut s = gateway_world();
    device_of(run(&mut s, dev("acme", "plc1", 1, None)));
    device_of(run(&mut s, dev("globex", "db", 2, None)));
    let port = |r: Response| match r {
        Ok(Reply::Exposure(x)) => (x.id.clone(), x.public_port),
        other => panic!("{other:?}"),
    };
    let (first, p1) = port(run(&mut s, expose("acme", "plc1", 5432, None, Protocol::Tcp)));
    assert_eq!(p1, 15000);
    assert_eq!(port(run(&mut s, expose("globex", "db", 5432, None, Protocol::Tcp))).1, 15001, "shared gateway");
    assert_eq!(port(run(&mut s, expose("globex", "db", 53, Some(15000), Protocol::Udp))).1, 15000, "per protocol");
    let taken = run(&mut s, expose("globex", "db", 80, Some(15000), Protocol::Tcp));
    assert!(matches!(&taken, Err(DomainError::Conflict(m)) if m.contains("taken")), "{taken:?}");
    let outside = run(&mut s, expose("globex", "db", 80, Some(16000), Protocol::Tcp));
    assert!(matches!(&outside, Err(DomainError::Invalid(m)) if m.contains("outside")), "{outside:?}");
    assert_eq!(port(run(&mut s, expose("acme", "plc1", 22, None, Protocol::Tcp))).1, 15002);
    let full = run(&mut s, expose("acme", "plc1", 23, None, Protocol::Tcp));
    assert!(matches!(&full, Err(DomainError::Exhausted(m)) if m.contains("all taken")), "{full:?}");
    let disabled = run(&mut s, Op::EnableExposure { tenant: name("acme"), id: first.clone(), enabled: false });
    assert!(matches!(disabled, Ok(Reply::Exposure(ref x)) if !x.enabled && x.public_port == 15000));
    let again = run(&mut s, Op::EnableExposure { tenant: name("acme"), id: first.clone(), enabled: true });
    assert!(matches!(again, Ok(Reply::Exposure(ref x)) if x.enabled && x.public_port == 15000), "same port");
    let other = run(&mut s, Op::RemoveExposure { tenant: name("globex"), id: first.clone() });
    assert!(matches!(other, Err(DomainError::NotFound(_))), "another tenant's exposure is not found");
    let busy = run(&mut s, Op::RemoveDevice { tenant: name("acme"), name: DeviceName::parse("plc1").expect("n") });
    assert!(matches!(&busy, Err(DomainError::Conflict(m)) if m.contains("exposures")), "{busy:?}");

    let gw = desired::for_node(&s, 1).expect("node 1");
    let acme = gw.iter().find(|a| a.name == "acme").and_then(|a| a.gateway.clone()).expect("gateway part");
    assert_eq!(acme.peers.len(), 1);
    assert_eq!(acme.exposures.len(), 2);
    assert_eq!(acme.exposures[0].1.to_string(), "198.18.1.2", "the device's address travels with it");
}

#[test]
fn firewall_rules_are_ordered_checked_and_name_devices_by_address() {
    let mut s = gateway_world();
    device_of(run(&mut s, dev("acme", "plc1", 1, Some("198.18.1.20"))));
    let rule = |verdict, dests: Vec<NewDestination>, ports: Option<(u16, u16)>, protocol, vpn_required| {
        Op::AddFirewallRule(NewRule {
            tenant: name("acme"),
            position: None,
            verdict,
            sources: vec![],
            source_labels: Default::default(),
            destination_labels: Default::default(),
            destinations: dests,
            ports: ports.map(|(a, b)| PortRange { first: a, last: b }),
            protocol,
            vpn_required,
        })
    };
    let plc = || NewDestination::Device(DeviceName::parse("plc1").expect("n"));
    let ok = run(&mut s, rule(Verdict::Deny, vec![plc()], Some((22, 22)), RuleProtocol::Tcp, false));
    assert!(matches!(ok, Ok(Reply::FirewallRule(ref r)) if r.position == 10), "{ok:?}");
    let second = run(&mut s, rule(Verdict::Allow, vec![], Some((5432, 5432)), RuleProtocol::Tcp, true));
    assert!(matches!(second, Ok(Reply::FirewallRule(ref r)) if r.position == 20), "{second:?}");
    let before = s.firewall_rules.clone();
    for (op, want) in [
        (rule(Verdict::Deny, vec![], Some((22, 22)), RuleProtocol::Any, false), "tcp or udp"),
        (rule(Verdict::Deny, vec![], Some((0, 22)), RuleProtocol::Tcp, false), "range"),
        (rule(Verdict::Allow, vec![], None, RuleProtocol::Any, true), "names destinations"),
        (
            rule(
                Verdict::Deny,
                vec![NewDestination::Device(DeviceName::parse("nope").expect("n"))],
                None,
                RuleProtocol::Any,
                false,
            ),
            "has no device nope",
        ),
    ] {
        let r = run(&mut s, op);
        assert!(r.as_ref().is_err_and(|e| e.to_string().contains(want)), "{want}: {r:?}");
    }
    assert_eq!(s.firewall_rules, before, "refusals change nothing");
    let gw = desired::for_node(&s, 1).expect("node 1");
    let acme = gw.iter().find(|a| a.name == "acme").and_then(|a| a.gateway.clone()).expect("gateway part");
    assert_eq!(acme.rules[0].1.iter().map(ToString::to_string).collect::<Vec<_>>(), ["198.18.1.20/32"]);
    let busy = run(&mut s, Op::RemoveDevice { tenant: name("acme"), name: DeviceName::parse("plc1").expect("n") });
    assert!(matches!(&busy, Err(DomainError::Conflict(m)) if m.contains("firewall rules")), "{busy:?}");
    let domain: berqenas_common::net::DomainName = "example.com".parse().expect("domain");
    let block = |blocked| Op::BlockDomain { tenant: name("acme"), domain: domain.clone(), blocked };
    assert!(run(&mut s, block(true)).is_ok());
    assert!(matches!(run(&mut s, block(true)), Err(DomainError::Conflict(_))));
    assert_eq!(s.tenants[&name("acme")].blocked_domains.len(), 1);
    assert!(run(&mut s, block(false)).is_ok());
    assert!(matches!(run(&mut s, block(false)), Err(DomainError::NotFound(_))));
}

#[test]
fn a_customer_key_acts_only_for_its_own_tenant_and_purge_takes_the_gateway_objects() {
    let mut s = gateway_world();
    let acme_key = ApiKey {
        role: Role::Customer,
        tenant: Some(name("acme")),
        ..super::key("00000000000000c1", Role::Customer, None)
    };
    s.api_keys.insert(acme_key.id.clone(), acme_key.clone());
    let i = s.audit.len() + 10;
    let own = s.apply(i, &as_key(i, &acme_key.id, Role::Customer, dev("acme", "plc1", 1, None))).0;
    assert!(own.is_ok(), "{own:?}");
    let i = s.audit.len() + 10;
    let other = s.apply(i, &as_key(i, &acme_key.id, Role::Customer, dev("globex", "plc1", 2, None))).0;
    assert!(matches!(other, Err(DomainError::Forbidden(_))), "{other:?}");
    assert!(s.devices.values().all(|d| d.tenant == name("acme")), "nothing made for globex");
    let i = s.audit.len() + 10;
    let patch =
        Op::UpdateTenant { name: name("acme"), patch: TenantPatch { bandwidth_bps: Some(1), ..Default::default() } };
    assert!(matches!(s.apply(i, &as_key(i, &acme_key.id, Role::Customer, patch)).0, Err(DomainError::Forbidden(_))));
    let _ = run(&mut s, expose("acme", "plc1", 80, None, Protocol::Tcp));
    let _ = run(&mut s, Op::Lifecycle { name: name("acme"), step: Lifecycle::Delete });
    let refused = run(&mut s, dev("acme", "late", 7, None));
    assert!(matches!(&refused, Err(DomainError::Conflict(m)) if m.contains("deleted")), "{refused:?}");
    let _ = run(&mut s, Op::Lifecycle { name: name("acme"), step: Lifecycle::Purge { force: true } });
    assert!(s.devices.is_empty() && s.exposures.is_empty(), "purge leaves nothing of the tenant");
}

/// acme's node reports it ready at its current revision; acme is active.
fn acme_ready(s: &mut State) {
    let revision = s.tenants[&name("acme")].revision_for(1);
    let status = crate::state::node::NodeTenantStatus {
        ready: true,
        reason: None,
        revision,
        db_bytes: 0,
        quota_exceeded: false,
        connections: 0,
        gateway: None,
        events_total: 0,
    };
    let report = crate::state::node::Report {
        node_id: 1,
        applied_revision: revision,
        tenants: [("acme".to_string(), status)].into(),
        capacity: None,
        wireguard_backend: None,
        conditions: vec![],
    };
    assert_eq!(run(s, Op::NodeReport(report)), Ok(Reply::Done));
    assert_eq!(s.tenants[&name("acme")].status, TenantStatus::Active);
}

/// Each of `ops` (a change of acme's gateway desired state) gives acme the command's revision,
/// and acme waits for its node to report it; a refused command changes no revision.
fn each_bumps_the_revision(s: &mut State, ops: Vec<Op>) {
    for op in ops {
        acme_ready(s);
        let before = s.tenants[&name("acme")].revision_for(1);
        let label = format!("{op:?}");
        assert!(run(s, op.clone()).is_ok(), "{label}");
        let t = &s.tenants[&name("acme")];
        let revision = t.revision_for(1);
        assert!(revision > before, "{label}: revision {before} → {revision}");
        assert_eq!(t.status, TenantStatus::Provisioning, "{label}");
        assert_eq!(t.status_reason.as_deref(), Some("waiting for node 1"), "{label}");
        let desired = desired::for_node(s, 1).expect("node 1");
        assert_eq!(desired.iter().find(|a| a.name == "acme").map(|a| a.revision), Some(revision), "{label}");
        acme_ready(s);
        assert!(run(s, op).is_err(), "{label} again is refused");
        assert_eq!(s.tenants[&name("acme")].revision_for(1), revision, "{label}: a refusal changes no revision");
    }
}

#[test]
fn device_changes_bump_the_tenant_revision() {
    let mut s = gateway_world();
    let plc1 = || DeviceName::parse("plc1").expect("n");
    each_bumps_the_revision(
        &mut s,
        vec![
            dev("acme", "plc1", 1, None),
            Op::EnableDevice { tenant: name("acme"), name: plc1(), enabled: false },
            Op::EnableDevice { tenant: name("acme"), name: plc1(), enabled: true },
            Op::RemoveDevice { tenant: name("acme"), name: plc1() },
        ],
    );
    let globex = s.tenants[&name("globex")].revision_for(1);
    assert!(run(&mut s, dev("acme", "cam", 2, None)).is_ok());
    assert_eq!(s.tenants[&name("globex")].revision_for(1), globex, "another tenant's device changes nothing of globex");
}

#[test]
fn a_new_device_is_on_its_gateway_once_the_gateway_reports_the_revision_that_holds_it() {
    let mut s = gateway_world();
    acme_ready(&mut s);
    assert!(run(&mut s, dev("acme", "plc1", 1, None)).is_ok());
    let revision = s.tenants[&name("acme")].gateway_revision;
    assert_eq!(s.gateway_applied(&name("acme"), revision), Some(false), "not reported yet");
    acme_ready(&mut s);
    assert_eq!(s.gateway_applied(&name("acme"), revision), Some(true));
    assert_eq!(s.gateway_applied(&name("nope"), revision), None, "no such tenant: no gateway");
}

#[test]
fn exposure_changes_bump_the_tenant_revision() {
    let mut s = gateway_world();
    device_of(run(&mut s, dev("acme", "plc1", 1, None)));
    acme_ready(&mut s);
    let before = s.tenants[&name("acme")].revision_for(1);
    let id = match run(&mut s, expose("acme", "plc1", 5432, Some(15000), Protocol::Tcp)) {
        Ok(Reply::Exposure(x)) => x.id.clone(),
        other => panic!("{other:?}"),
    };
    assert!(s.tenants[&name("acme")].revision_for(1) > before, "expose add");
    each_bumps_the_revision(
        &mut s,
        vec![
            Op::EnableExposure { tenant: name("acme"), id: id.clone(), enabled: false },
            Op::EnableExposure { tenant: name("acme"), id: id.clone(), enabled: true },
            Op::RemoveExposure { tenant: name("acme"), id },
            expose("acme", "plc1", 5432, Some(15000), Protocol::Tcp),
        ],
    );
}

#[test]
fn firewall_rule_changes_bump_the_tenant_revision() {
    let mut s = gateway_world();
    let rule = || {
        Op::AddFirewallRule(NewRule {
            tenant: name("acme"),
            position: None,
            verdict: Verdict::Deny,
            sources: vec![],
            source_labels: Default::default(),
            destination_labels: Default::default(),
            destinations: vec![],
            ports: Some(PortRange { first: 22, last: 22 }),
            protocol: RuleProtocol::Tcp,
            vpn_required: false,
        })
    };
    acme_ready(&mut s);
    let before = s.tenants[&name("acme")].revision_for(1);
    let id = match run(&mut s, rule()) {
        Ok(Reply::FirewallRule(r)) => r.id.clone(),
        other => panic!("{other:?}"),
    };
    assert!(s.tenants[&name("acme")].revision_for(1) > before, "firewall add");
    each_bumps_the_revision(&mut s, vec![Op::RemoveFirewallRule { tenant: name("acme"), id }]);
}

#[test]
fn blocked_domain_changes_bump_the_tenant_revision() {
    let mut s = gateway_world();
    let domain: berqenas_common::net::DomainName = "example.com".parse().expect("domain");
    let block = |blocked| Op::BlockDomain { tenant: name("acme"), domain: domain.clone(), blocked };
    each_bumps_the_revision(&mut s, vec![block(true), block(false)]);
}

/// A report by node `node` of acme's device key 1 with a session that started at `start_ms`.
fn session_report(node: u64, start_ms: u64) -> crate::state::node::Report {
    let peer = crate::state::gateway::PeerStatus {
        public_key: wg(1),
        last_handshake_ms: Some(start_ms + 1000),
        rx_bytes: 10,
        tx_bytes: 20,
        endpoint: "203.0.113.10:43210".parse().ok(),
        session_start_ms: Some(start_ms),
    };
    let status = crate::state::node::NodeTenantStatus {
        ready: true,
        reason: None,
        revision: 1,
        db_bytes: 0,
        quota_exceeded: false,
        connections: 0,
        gateway: Some(crate::state::gateway::GatewayTenantStatus {
            public_key: None,
            peers: vec![peer],
            exposures: vec![],
        }),
        events_total: 0,
    };
    crate::state::node::Report {
        node_id: node,
        applied_revision: 1,
        tenants: [("acme".to_string(), status)].into(),
        capacity: None,
        wireguard_backend: None,
        conditions: vec![],
    }
}

#[test]
fn a_new_vpn_session_is_audited_once_by_the_gateway_and_shown_on_the_device() {
    use crate::state::connect::{in_report, SESSION_GAP_MS};
    let mut s = gateway_world();
    device_of(run(&mut s, dev("acme", "plc1", 1, None)));
    let revision = s.tenants[&name("acme")].revision_for(1);
    let start = 1_700_000_000_000;

    let connects = in_report(&s, &session_report(1, start));
    assert_eq!(connects.len(), 1);
    assert_eq!(connects[0].device.as_str(), "plc1");
    assert_eq!(run(&mut s, Op::DeviceConnect(connects[0].clone())), Ok(Reply::Done));
    let entry = s.audit.last().expect("audited").clone();
    assert_eq!((entry.action.as_str(), entry.target.as_str()), ("device.connect", "tenant/acme/device/plc1"));
    assert_eq!(entry.details.get("endpoint").map(String::as_str), Some("203.0.113.10:43210"));
    assert_eq!(entry.details.get("node").map(String::as_str), Some("1"));
    assert_eq!(entry.details.get("public_key"), Some(&wg(1).to_string()));
    let device = s.devices.values().find(|d| d.name.as_str() == "plc1").expect("device");
    let last = device.last_connect.clone().expect("recorded on the device");
    assert_eq!((last.at_ms, last.node_id), (start, 1));
    assert_eq!(s.tenants[&name("acme")].revision_for(1), revision, "a connect changes no desired state");

    // The agent repeats the session start in every report: recorded once.
    assert!(in_report(&s, &session_report(1, start)).is_empty());
    let again = run(&mut s, Op::DeviceConnect(connects[0].clone()));
    assert!(matches!(again, Err(DomainError::Conflict(_))), "{again:?}");
    // Session starts closer than the gap are one session; a later one is a new connect.
    assert!(in_report(&s, &session_report(1, start + SESSION_GAP_MS - 1)).is_empty());
    assert_eq!(in_report(&s, &session_report(1, start + SESSION_GAP_MS)).len(), 1);

    // Only the tenant's gateway may report its devices' connects.
    assert!(in_report(&s, &session_report(2, start + SESSION_GAP_MS)).is_empty());
    let mut forged = in_report(&s, &session_report(1, start + SESSION_GAP_MS))[0].clone();
    forged.node_id = 2;
    assert!(matches!(run(&mut s, Op::DeviceConnect(forged)), Err(DomainError::Rejected(_))));
}

#[test]
fn a_device_change_waits_for_the_gateway_and_changes_only_the_db_nodes_ingest_part() {
    let mut s = booted("198.18.0.0/15");
    let mut db = node(1, &[]);
    db.roles = [NodeRole::Db].into();
    let mut gw = node(2, &[]);
    gw.roles = [NodeRole::Gateway].into();
    let _ = s.apply(2, &cmd(2, Op::RegisterNode(db)));
    let _ = s.apply(3, &cmd(3, Op::RegisterNode(gw)));
    let t = tenant(create(&mut s, 4, "acme"));
    assert_eq!((t.placement.db_node, t.placement.gateway_node), (Some(1), Some(2)));
    let assignment =
        |s: &State, node: u64| desired::for_node(s, node).expect("node").into_iter().find(|a| a.name == "acme");
    let db_before = assignment(&s, 1);
    let gw_before = assignment(&s, 2).map(|a| a.revision);
    assert!(run(&mut s, dev("acme", "plc1", 1, None)).is_ok());
    // The db node hears of the device (realtime ingest) and of nothing else.
    let strip = |a: Option<desired::Assignment>| {
        a.map(|mut a| {
            a.revision = 0;
            if let Some(db) = a.db.as_mut() {
                db.devices.clear();
            }
            a
        })
    };
    let db_after = assignment(&s, 1);
    assert_eq!(db_after.as_ref().and_then(|a| a.db.as_ref()).map(|d| d.devices.len()), Some(1));
    assert_eq!(strip(db_after), strip(db_before), "only the db node's ingest part changed");
    let t = &s.tenants[&name("acme")];
    assert!(assignment(&s, 2).map(|a| a.revision) > gw_before, "the gateway gets a newer revision");
    assert_eq!((t.revision_for(1), t.revision_for(2)), (t.ingest_revision, t.gateway_revision));
}
