//! State-machine tests of device tokens and enrolled devices: uses counted at apply, reuse,
//! expiry, revocation, a wrong secret or another tenant refused and audited; labels, manual
//! approval, revocation, heartbeats, ephemeral expiry; what the db node is handed for ingest.

use super::*;
use crate::state::device::{DeviceName, DeviceState};
use crate::state::devicetoken::{DeviceToken, Enrollment, TOKEN_REFUSED};
use crate::state::gateway::WgKey;
use crate::state::presence::{due_for_expiry, Fingerprint, Heartbeat};

const SECRET: &str = "s3cret";

fn wg(b: u8) -> WgKey {
    WgKey::from_bytes(&[b; 32])
}

fn token(id: &str, tenant: &str) -> DeviceToken {
    DeviceToken {
        id: id.into(),
        tenant: name(tenant),
        name: None,
        secret_hash: apikey::hash_secret(SECRET),
        labels: [("site".to_string(), "ist".to_string())].into(),
        created_at_ms: 0,
        expires_at_ms: 1_000_000,
        max_uses: Some(1),
        uses: 0,
        ephemeral_ms: None,
        approve_manual: false,
        public: false,
        revoked_at_ms: None,
        last_used_at_ms: None,
    }
}

fn fp(os: &str) -> Fingerprint {
    Fingerprint { os_name: "linux".into(), os_version: os.into(), ..Default::default() }
}

fn enroll(id: &str, tenant: &str, key: u8) -> Op {
    Op::EnrollDevice(Enrollment {
        token_id: id.into(),
        secret_hash: apikey::hash_secret(SECRET),
        tenant: name(tenant),
        name: None,
        public_key: wg(key),
        fingerprint: fp("6.1"),
    })
}

fn world() -> State {
    let mut s = booted("198.18.0.0/15");
    let _ = s.apply(2, &cmd(2, Op::RegisterNode(node(1, &[]))));
    tenant(create(&mut s, 3, "acme"));
    tenant(create(&mut s, 4, "globex"));
    s
}

/// Applies `op` at time `t` (its index follows the trail).
fn at(s: &mut State, t: u64, op: Op) -> Response {
    let i = s.audit.len() + 10;
    s.apply(i, &cmd(t, op)).0
}

fn device_of(r: Response) -> crate::state::device::Device {
    match r {
        Ok(Reply::Device(d)) => *d,
        other => panic!("expected a device, got {other:?}"),
    }
}

fn dn(n: &str) -> DeviceName {
    DeviceName::parse(n).expect("name")
}

/// The last audit entry: a refused `device.enroll` naming its cause.
fn refused_enrollment(s: &State, cause: &str) {
    let e = s.audit.last().expect("audited");
    assert_eq!((e.action.as_str(), e.outcome), ("device.enroll", audit::Outcome::Rejected), "{e:?}");
    assert_eq!(e.details.get("cause").map(String::as_str), Some(cause), "{e:?}");
    assert_eq!(e.details.get("reason").map(String::as_str), Some(TOKEN_REFUSED), "{e:?}");
}

#[test]
fn a_token_enrolls_as_many_devices_as_its_uses_with_its_labels() {
    let mut s = world();
    let mut t = token("00000000000000a1", "acme");
    t.max_uses = Some(2);
    t.name = Some(dn("plc"));
    assert!(at(&mut s, 1, Op::CreateDeviceToken(t)).is_ok());
    let a = device_of(at(&mut s, 2, enroll("00000000000000a1", "acme", 1)));
    let b = device_of(at(&mut s, 3, enroll("00000000000000a1", "acme", 2)));
    assert_eq!((a.name.as_str(), b.name.as_str()), ("plc", "plc-2"));
    assert_eq!((a.address.to_string(), b.address.to_string()), ("198.18.1.2".into(), "198.18.1.3".into()));
    assert_eq!(a.labels.get("site").map(String::as_str), Some("ist"));
    assert_eq!((a.state(), a.token_id.as_deref()), (DeviceState::Active, Some("00000000000000a1")));
    assert_eq!(s.audit.last().map(|e| e.target.clone()), Some("tenant/acme/device/plc-2".to_string()));

    let before = s.devices.clone();
    assert_eq!(at(&mut s, 4, enroll("00000000000000a1", "acme", 3)), Err(DomainError::Rejected(TOKEN_REFUSED.into())));
    refused_enrollment(&s, "used up");
    assert_eq!(s.devices, before, "a refused enrollment changes nothing");
    assert_eq!(s.device_tokens["00000000000000a1"].uses, 2);
}

#[test]
fn expired_revoked_wrong_secret_and_other_tenant_tokens_are_refused_and_audited() {
    let mut s = world();
    assert!(at(&mut s, 1, Op::CreateDeviceToken(token("00000000000000b1", "acme"))).is_ok());
    assert!(at(&mut s, 1, Op::CreateDeviceToken(token("00000000000000b2", "acme"))).is_ok());

    assert!(at(&mut s, 1_000_000, enroll("00000000000000b1", "acme", 1)).is_err(), "expired at its expiry");
    refused_enrollment(&s, "expired");

    let mut wrong = enroll("00000000000000b1", "acme", 1);
    if let Op::EnrollDevice(e) = &mut wrong {
        e.secret_hash = apikey::hash_secret("guess");
    }
    assert!(at(&mut s, 5, wrong).is_err());
    refused_enrollment(&s, "wrong secret");

    // A token of acme presented as globex's (the edge finds the tenant on the token; apply re-checks).
    assert!(at(&mut s, 5, enroll("00000000000000b1", "globex", 1)).is_err());
    refused_enrollment(&s, "wrong secret");
    assert!(at(&mut s, 5, enroll("00000000000000ff", "acme", 1)).is_err());
    refused_enrollment(&s, "unknown token");

    // Revoked: nothing more enrolls; a device it enrolled before stays.
    let d = device_of(at(&mut s, 6, enroll("00000000000000b2", "acme", 2)));
    let mut t3 = token("00000000000000b3", "acme");
    t3.max_uses = None;
    assert!(at(&mut s, 6, Op::CreateDeviceToken(t3)).is_ok());
    let kept = device_of(at(&mut s, 7, enroll("00000000000000b3", "acme", 3)));
    let revoke = Op::RevokeDeviceToken { tenant: name("acme"), id: "00000000000000b3".into() };
    assert!(at(&mut s, 8, revoke.clone()).is_ok());
    assert!(matches!(at(&mut s, 9, revoke), Err(DomainError::Conflict(_))), "revoking twice is a conflict");
    assert!(at(&mut s, 9, enroll("00000000000000b3", "acme", 4)).is_err());
    refused_enrollment(&s, "revoked");
    assert!(s.devices.contains_key(&kept.id) && s.devices.contains_key(&d.id), "devices enrolled with it stay");

    // A suspended tenant enrolls nothing (the token is not spent).
    let mut t4 = token("00000000000000b4", "acme");
    t4.expires_at_ms = 10_000_000_000;
    assert!(at(&mut s, 10, Op::CreateDeviceToken(t4)).is_ok());
    assert!(at(&mut s, 10, Op::Lifecycle { name: name("acme"), step: Lifecycle::Suspend }).is_ok());
    assert!(matches!(at(&mut s, 11, enroll("00000000000000b4", "acme", 5)), Err(DomainError::Conflict(_))));
    assert_eq!(s.device_tokens["00000000000000b4"].uses, 0);
    assert!(at(&mut s, 12, Op::Lifecycle { name: name("acme"), step: Lifecycle::Resume }).is_ok());
    assert!(at(&mut s, 13, enroll("00000000000000b4", "acme", 5)).is_ok(), "resumed: it enrolls");

    // Another tenant cannot revoke acme's token through its own path.
    let other = Op::RevokeDeviceToken { tenant: name("globex"), id: "00000000000000b2".into() };
    assert!(matches!(at(&mut s, 10, other), Err(DomainError::NotFound(_))));
}

#[test]
fn a_customer_key_manages_only_its_own_tenants_tokens() {
    let mut s = world();
    let key =
        ApiKey { id: "00000000000000c1".into(), role: Role::Customer, tenant: Some(name("globex")), ..admin_key() };
    assert!(at(&mut s, 1, Op::CreateApiKey(key)).is_ok());
    let as_customer = |op: Op| Command {
        meta: Meta {
            time_ms: 2,
            actor: "00000000000000c1".into(),
            source: "t".into(),
            key_role: Some(Role::Customer),
            user_generation: None,
        },
        op,
    };
    let i = s.audit.len() + 10;
    let (r, _) = s.apply(i, &as_customer(Op::CreateDeviceToken(token("00000000000000c2", "acme"))));
    assert!(matches!(r, Err(DomainError::Forbidden(_))), "{r:?}");
    let i = s.audit.len() + 10;
    let (r, _) = s.apply(i, &as_customer(Op::CreateDeviceToken(token("00000000000000c3", "globex"))));
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(s.device_tokens.keys().collect::<Vec<_>>(), vec!["00000000000000c3"]);
}

#[test]
fn manual_approval_keeps_a_device_pending_and_out_of_the_gateway_until_approved() {
    let mut s = world();
    let mut t = token("00000000000000d1", "acme");
    t.approve_manual = true;
    assert!(at(&mut s, 1, Op::CreateDeviceToken(t)).is_ok());
    let d = device_of(at(&mut s, 2, enroll("00000000000000d1", "acme", 1)));
    assert_eq!(d.state(), DeviceState::Pending);
    let peers = |s: &State| {
        let a = desired::for_node(s, 1).expect("node").into_iter().find(|a| a.name == "acme").expect("acme");
        let g = a.gateway.expect("gateway part");
        let db = a.db.expect("db part");
        (g.peers.iter().filter(|p| p.is_active()).count(), db.devices.len())
    };
    assert_eq!(peers(&s), (0, 0), "pending: no peer, may not publish");
    let approve = Op::ApproveDevice { tenant: name("acme"), name: d.name.clone() };
    assert_eq!(device_of(at(&mut s, 3, approve.clone())).state(), DeviceState::Active);
    assert_eq!(peers(&s), (1, 1));
    assert!(matches!(at(&mut s, 4, approve), Err(DomainError::Conflict(_))), "approving twice is a conflict");
}

#[test]
fn a_revoked_device_keeps_its_address_and_loses_its_peer_and_heartbeats() {
    let mut s = world();
    assert!(at(&mut s, 1, Op::CreateDeviceToken(token("00000000000000e1", "acme"))).is_ok());
    let d = device_of(at(&mut s, 2, enroll("00000000000000e1", "acme", 1)));
    let hb = |os: &str| {
        Op::DeviceHeartbeat(Heartbeat { tenant: name("acme"), device_id: d.id.clone(), fingerprint: fp(os) })
    };
    let ingest = s.tenants[&name("acme")].ingest_revision;
    let desired_before = desired::for_node(&s, 1);
    assert!(at(&mut s, 3, hb("6.1")).is_ok());
    assert_eq!(desired::for_node(&s, 1), desired_before, "a heartbeat sends no node a new desired state");
    assert_eq!(s.audit.last().and_then(|e| e.details.get("changed")), None, "same fingerprint: no change named");
    assert_eq!(s.tenants[&name("acme")].ingest_revision, ingest, "a plain heartbeat changes no desired state");
    assert!(at(&mut s, 4, hb("6.2")).is_ok());
    assert!(s.tenants[&name("acme")].ingest_revision > ingest, "a new fingerprint reaches the db node");
    assert_eq!(s.audit.last().and_then(|e| e.details.get("changed")).map(String::as_str), Some("os"));
    assert_eq!(s.devices[&d.id].last_seen_ms, Some(4));

    let revision = s.tenants[&name("acme")].ingest_revision;
    let revoked = device_of(at(&mut s, 5, Op::RevokeDevice { tenant: name("acme"), name: d.name.clone() }));
    assert_eq!(revoked.state(), DeviceState::Revoked);
    assert!(s.tenants[&name("acme")].ingest_revision > revision, "the db node hears of it");
    let a = desired::for_node(&s, 1).expect("node").into_iter().find(|a| a.name == "acme").expect("acme");
    assert!(a.gateway.expect("gw").peers.iter().all(|p| !p.is_active()), "no peer");
    assert!(a.db.expect("db").devices.is_empty(), "may not publish");
    assert!(matches!(at(&mut s, 6, hb("6.2")), Err(DomainError::Rejected(_))), "no heartbeat after revocation");
    let enable = Op::EnableDevice { tenant: name("acme"), name: d.name.clone(), enabled: false };
    assert!(matches!(at(&mut s, 6, enable), Err(DomainError::Conflict(_))));
    // Its address and key stay taken.
    let mut t2 = token("00000000000000e2", "acme");
    t2.max_uses = Some(2);
    assert!(at(&mut s, 7, Op::CreateDeviceToken(t2)).is_ok());
    assert!(at(&mut s, 8, enroll("00000000000000e2", "acme", 1)).is_err(), "the revoked device's key is still taken");
    assert_eq!(device_of(at(&mut s, 9, enroll("00000000000000e2", "acme", 2))).address.to_string(), "198.18.1.3");
}

#[test]
fn ephemeral_devices_go_after_their_offline_time_and_not_before() {
    let mut s = world();
    let mut t = token("00000000000000f1", "acme");
    t.ephemeral_ms = Some(600_000);
    t.max_uses = None;
    t.expires_at_ms = 10_000_000_000;
    assert!(at(&mut s, 1, Op::CreateDeviceToken(t)).is_ok());
    let d = device_of(at(&mut s, 1_000, enroll("00000000000000f1", "acme", 1)));
    let lasting = device_of(at(
        &mut s,
        1_000,
        Op::AddDevice(crate::state::device::NewDevice {
            tenant: name("acme"),
            name: dn("byo"),
            public_key: wg(9),
            address: None,
        }),
    ));
    assert!(due_for_expiry(&s, 600_999).is_empty());
    let hb = Op::DeviceHeartbeat(Heartbeat { tenant: name("acme"), device_id: d.id.clone(), fingerprint: fp("6.1") });
    assert!(at(&mut s, 500_000, hb).is_ok());
    assert!(due_for_expiry(&s, 1_000_000).is_empty(), "seen at 500 s: not offline for 10 min yet");
    let expire = Op::ExpireDevice { tenant: name("acme"), name: d.name.clone() };
    assert!(matches!(at(&mut s, 1_000_000, expire.clone()), Err(DomainError::Conflict(_))), "re-checked at apply");
    assert_eq!(due_for_expiry(&s, 1_100_000), vec![(name("acme"), d.name.clone())]);
    assert!(at(&mut s, 1_100_000, expire).is_ok());
    assert!(!s.devices.contains_key(&d.id) && s.devices.contains_key(&lasting.id), "only the ephemeral one goes");
    assert_eq!(s.audit.last().map(|e| e.action.clone()), Some("device.expire".to_string()));
}

#[test]
fn the_db_node_gets_active_devices_and_customer_keys_with_a_newer_revision() {
    let mut s = world();
    let db = |s: &State| {
        let a = desired::for_node(s, 1).expect("node").into_iter().find(|a| a.name == "acme").expect("acme");
        (a.revision, a.db.expect("db part"))
    };
    let (r0, part) = db(&s);
    assert!(part.devices.is_empty() && part.subscriber_keys.is_empty());
    let key = ApiKey {
        id: "00000000000000c9".into(),
        role: Role::Customer,
        tenant: Some(name("acme")),
        secret_hash: apikey::hash_secret("k"),
        expires_at_ms: Some(99),
        ..admin_key()
    };
    assert!(at(&mut s, 1, Op::CreateApiKey(key)).is_ok());
    let (r1, part) = db(&s);
    assert!(r1 > r0, "a new customer key reaches the db node");
    assert_eq!(part.subscriber_keys.len(), 1);
    assert_eq!(
        (part.subscriber_keys[0].secret_hash.as_str(), part.subscriber_keys[0].expires_at_ms),
        (apikey::hash_secret("k").as_str(), Some(99))
    );
    assert!(at(&mut s, 2, Op::CreateDeviceToken(token("00000000000000c8", "acme"))).is_ok());
    let d = device_of(at(&mut s, 3, enroll("00000000000000c8", "acme", 1)));
    let (r2, part) = db(&s);
    assert!(r2 > r1);
    assert_eq!(
        part.devices.iter().map(|x| (x.id.as_str(), x.name.as_str())).collect::<Vec<_>>(),
        vec![(d.id.as_str(), d.name.as_str())]
    );
    assert!(at(&mut s, 4, Op::RevokeApiKey { id: "00000000000000c9".into() }).is_ok());
    let (r3, part) = db(&s);
    assert!(r3 > r2 && part.subscriber_keys.is_empty(), "a revoked key no longer subscribes");
    let globex = desired::for_node(&s, 1).expect("node").into_iter().find(|a| a.name == "globex").expect("globex");
    assert!(globex.db.expect("db").devices.is_empty(), "another tenant sees none of acme's devices");
}

#[test]
fn devices_enrolled_in_one_batch_get_ids_of_their_own() {
    // The proposer puts concurrent writes into one Raft entry: its commands share the index.
    let mut s = world();
    let mut t = token("00000000000000f1", "acme");
    t.max_uses = None;
    assert!(at(&mut s, 1, Op::CreateDeviceToken(t)).is_ok());
    let batch: Vec<Response> = (1..=3)
        .map(|key| s.apply_in_batch(50, usize::from(key - 1), &cmd(2, enroll("00000000000000f1", "acme", key))).0)
        .collect();
    let ids: Vec<String> = batch.into_iter().map(|r| device_of(r).id).collect();
    assert_eq!(ids, vec!["d50", "d50-1", "d50-2"]);
    assert_eq!(s.devices.len(), 3, "none overwrote another");
    let keys: Vec<WgKey> = ids.iter().map(|id| s.devices[id].public_key.clone()).collect();
    assert_eq!(keys, vec![wg(1), wg(2), wg(3)]);
}

#[test]
fn a_public_token_needs_public_api_and_its_devices_publish_against_the_enrolled_fingerprint() {
    let mut s = world();
    let mut closed = spec("initech");
    closed.public_api = false;
    closed.access_mode = AccessMode::VpnOnly;
    tenant(at(&mut s, 1, Op::CreateTenant(closed)));
    let mut t = token("00000000000000f1", "initech");
    t.public = true;
    assert!(matches!(at(&mut s, 1, Op::CreateDeviceToken(t)), Err(DomainError::Conflict(_))), "no public_api");
    let mut t = token("00000000000000f2", "acme");
    t.public = true;
    t.max_uses = Some(2);
    assert!(at(&mut s, 2, Op::CreateDeviceToken(t)).is_ok());
    assert!(at(&mut s, 3, enroll("00000000000000f2", "acme", 1)).is_err(), "nothing to match later");
    refused_enrollment(&s, "public token without a fingerprint");

    let enrolled = Fingerprint { mac_hashes: vec!["a".repeat(64)], machine_id_hash: "1".repeat(64), ..fp("6.1") };
    let op = Op::EnrollDevice(Enrollment {
        token_id: "00000000000000f2".into(),
        secret_hash: apikey::hash_secret(SECRET),
        tenant: name("acme"),
        name: None,
        public_key: wg(1),
        fingerprint: enrolled.clone(),
    });
    let d = device_of(at(&mut s, 4, op));
    assert_eq!(d.public_fingerprint.as_ref(), Some(&enrolled));
    // A heartbeat with another machine's fingerprint (a stolen certificate) is recorded as
    // reported, but what publishes are checked against stays the enrollment's.
    let other = Fingerprint { mac_hashes: vec!["b".repeat(64)], machine_id_hash: "2".repeat(64), ..fp("6.1") };
    let hb = Op::DeviceHeartbeat(Heartbeat { tenant: name("acme"), device_id: d.id.clone(), fingerprint: other });
    assert!(at(&mut s, 5, hb).is_ok());
    let a = desired::for_node(&s, 1).expect("node").into_iter().find(|a| a.name == "acme").expect("acme");
    let ingest = a.db.expect("db").devices.into_iter().find(|x| x.id == d.id).expect("may publish");
    assert!(ingest.public);
    assert_eq!((ingest.mac_hashes, ingest.machine_id_hash), (enrolled.mac_hashes, enrolled.machine_id_hash));
}

/// A firewall rule selecting devices by label: resolved to the active devices carrying the
/// labels each time the gateway's desired state is built; one matching nothing is left out.
fn label_rule(source: &[(&str, &str)], destination: &[(&str, &str)], vpn_required: bool) -> Op {
    use crate::state::firewall::{LabelSelector, NewRule, RuleProtocol, Verdict};
    let selector = |pairs: &[(&str, &str)]| {
        LabelSelector::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()).expect("labels")
    };
    Op::AddFirewallRule(NewRule {
        tenant: name("acme"),
        position: None,
        verdict: Verdict::Deny,
        sources: vec![],
        source_labels: selector(source),
        destinations: vec![],
        destination_labels: selector(destination),
        ports: None,
        protocol: RuleProtocol::Any,
        vpn_required,
    })
}

/// acme's rules as its gateway gets them: (id, sources, destinations), each address as text.
fn gateway_rules(s: &State) -> Vec<(String, Vec<String>, Vec<String>)> {
    let a = desired::for_node(s, 1).expect("node").into_iter().find(|a| a.name == "acme").expect("acme");
    let text = |v: &[crate::state::gateway::Ipv4Cidr]| v.iter().map(ToString::to_string).collect();
    a.gateway.expect("gateway part").rules.iter().map(|(r, d)| (r.id.clone(), text(&r.sources), text(d))).collect()
}

#[test]
fn firewall_rules_select_devices_by_label_as_they_come_and_go_and_a_label_matching_none_matches_nothing() {
    let mut s = world();
    let mut cams = token("00000000000000c1", "acme");
    cams.labels = [("role".to_string(), "camera".to_string()), ("site".to_string(), "ist".to_string())].into();
    cams.max_uses = Some(3);
    cams.approve_manual = true;
    assert!(at(&mut s, 1, Op::CreateDeviceToken(cams)).is_ok());
    assert!(at(&mut s, 1, Op::CreateDeviceToken(token("00000000000000c2", "acme"))).is_ok());
    let mut theirs = token("00000000000000c3", "globex");
    theirs.labels = [("role".to_string(), "camera".to_string())].into();
    assert!(at(&mut s, 1, Op::CreateDeviceToken(theirs)).is_ok());
    let other = device_of(at(&mut s, 2, enroll("00000000000000c3", "globex", 9)));

    let rule = match at(&mut s, 3, label_rule(&[], &[("role", "camera")], false)) {
        Ok(Reply::FirewallRule(r)) => r.id.clone(),
        other => panic!("expected a rule, got {other:?}"),
    };
    let entry = s.audit.last().expect("audited");
    assert_eq!(entry.details.get("destination_labels").map(String::as_str), Some("role=camera"), "{entry:?}");
    assert_eq!(gateway_rules(&s), vec![], "matching no device, the rule matches nothing (never any destination)");

    // A camera enrolled later is covered as soon as it is active (approved), an unlabelled
    // device never, another tenant's camera never.
    let revision = s.tenants[&name("acme")].revision_for(1);
    let cam = device_of(at(&mut s, 4, enroll("00000000000000c1", "acme", 1)));
    let plain = device_of(at(&mut s, 5, enroll("00000000000000c2", "acme", 2)));
    assert!(s.tenants[&name("acme")].revision_for(1) > revision, "the gateway hears of it");
    assert_eq!(gateway_rules(&s), vec![], "a pending camera is no peer and not selected");
    assert!(at(&mut s, 6, Op::ApproveDevice { tenant: name("acme"), name: cam.name.clone() }).is_ok());
    let cam32 = format!("{}/32", cam.address);
    assert_eq!(gateway_rules(&s), vec![(rule.clone(), vec![], vec![cam32.clone()])]);
    assert!(!gateway_rules(&s)[0].2.contains(&format!("{}/32", plain.address)));
    assert!(!gateway_rules(&s)[0].2.contains(&format!("{}/32", other.address)));

    // A second camera joins the rule; disabled, a camera leaves it.
    let cam2 = device_of(at(&mut s, 7, enroll("00000000000000c1", "acme", 3)));
    assert!(at(&mut s, 8, Op::ApproveDevice { tenant: name("acme"), name: cam2.name.clone() }).is_ok());
    assert_eq!(gateway_rules(&s)[0].2, vec![cam32.clone(), format!("{}/32", cam2.address)]);
    assert!(at(&mut s, 9, Op::EnableDevice { tenant: name("acme"), name: cam.name.clone(), enabled: false }).is_ok());
    assert_eq!(gateway_rules(&s)[0].2, vec![format!("{}/32", cam2.address)]);
    // Removed (labels select, they do not pin the device), the last camera takes the rule with it.
    assert!(at(&mut s, 10, Op::RemoveDevice { tenant: name("acme"), name: cam2.name.clone() }).is_ok());
    assert_eq!(gateway_rules(&s), vec![]);

    // Sources by label: all pairs must match.
    assert!(at(&mut s, 11, Op::EnableDevice { tenant: name("acme"), name: cam.name.clone(), enabled: true }).is_ok());
    let both = at(&mut s, 12, label_rule(&[("role", "camera"), ("site", "ist")], &[], false));
    let none = at(&mut s, 13, label_rule(&[("role", "camera"), ("site", "ank")], &[], false));
    let (both, none) = match (both, none) {
        (Ok(Reply::FirewallRule(a)), Ok(Reply::FirewallRule(b))) => (a.id.clone(), b.id.clone()),
        other => panic!("expected rules, got {other:?}"),
    };
    let rules = gateway_rules(&s);
    assert!(rules.contains(&(both, vec![cam32.clone()], vec![])), "{rules:?}");
    assert!(!rules.iter().any(|r| r.0 == none), "site=ank matches no device: {rules:?}");

    // Bad selectors are refused and change nothing.
    let before = s.firewall_rules.clone();
    let r = at(&mut s, 14, label_rule(&[("role", "camera")], &[("role", "camera")], true));
    assert!(r.as_ref().is_err_and(|e| e.to_string().contains("takes no sources")), "{r:?}");
    assert_eq!(s.firewall_rules, before, "refusals change nothing");
    assert!(crate::state::firewall::LabelSelector::new([("role".into(), "a b".into())].into()).is_err());
    assert!(serde_json::from_str::<crate::state::firewall::LabelSelector>(r#"{"role=x":"a"}"#).is_err());
}
