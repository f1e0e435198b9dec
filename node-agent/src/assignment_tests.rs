//! Wire → agent conversion tests: enums once, parts per role, every malformed value refused by field.
use super::*;

fn wire() -> pb::TenantAssignment {
    pb::TenantAssignment {
        name: "acme".into(),
        revision: 2,
        roles: vec![pb::Role::Db.into(), pb::Role::Gateway.into()],
        lifecycle: pb::Lifecycle::Suspended.into(),
        index: 1,
        db: Some(pb::DbAssignment {
            db_type: pb::DbType::Postgres.into(),
            isolation: pb::Isolation::Database.into(),
            quota_bytes: 1,
            connection_limit: 5,
            events_per_min: 1,
            access_mode: pb::AccessMode::VpnOnly.into(),
            vpn_subnet: "198.18.1.0/24".into(),
            vpn_enabled: true,
            public_api: false,
            password_verifier: String::new(),
            ddl_enabled: false,
            devices: vec![pb::RealtimeDevice { id: "plc-1".into(), name: "PLC 1".into(), ..Default::default() }],
            subscriber_keys: vec![pb::SubscriberKey {
                id: "0123456789abcdef".into(),
                secret_hash: "AB".repeat(32),
                ..Default::default()
            }],
            backup: None,
        }),
        gateway: Some(pb::GatewayAssignment {
            vpn_subnet: "198.18.1.0/24".into(),
            gateway_address: "198.18.1.1".into(),
            interface: "bqt1".into(),
            listen_port: 51821,
            ..Default::default()
        }),
    }
}

#[test]
fn wire_enums_become_domain_enums_once() {
    let a = Assignment::try_from(wire()).expect("valid");
    assert_eq!(a.roles, [Role::Db, Role::Gateway]);
    assert_eq!(a.lifecycle, Lifecycle::Suspended);
    assert!(!a.runs() && a.has_role(Role::Gateway));
    let db = a.db_tenant().expect("db part").db;
    assert_eq!(
        (db.db_type, db.isolation, db.access_mode),
        (DbType::Postgres, Isolation::Database, AccessMode::VpnOnly)
    );
    let gw = a.gateway_tenant().expect("gateway part").gateway;
    assert_eq!((gw.interface.as_str(), gw.gateway_address.to_string()), ("bqt1", "198.18.1.1".to_string()));
    // Persisted (applied.json) with the wire's spelling.
    let json = serde_json::to_value(&a).expect("json");
    assert_eq!(json["db"]["access_mode"], "vpn-only");
    assert_eq!(json["roles"], serde_json::json!(["db", "gateway"]));
    assert_eq!(serde_json::from_value::<Assignment>(json).expect("back"), a);
}

#[test]
fn unknown_wire_values_are_refused_naming_the_field() {
    let refused = |change: &dyn Fn(&mut pb::TenantAssignment)| {
        let mut w = wire();
        change(&mut w);
        Assignment::try_from(w).expect_err("invalid").reason
    };
    fn db(w: &mut pb::TenantAssignment) -> &mut pb::DbAssignment {
        w.db.get_or_insert_with(Default::default)
    }
    fn gw(w: &mut pb::TenantAssignment) -> &mut pb::GatewayAssignment {
        w.gateway.get_or_insert_with(Default::default)
    }
    assert_eq!(refused(&|w| db(w).isolation = 99), Invalid::Isolation);
    assert_eq!(refused(&|w| db(w).db_type = pb::DbType::Unspecified.into()), Invalid::DbType);
    assert_eq!(refused(&|w| db(w).access_mode = 7), Invalid::AccessMode);
    assert_eq!(refused(&|w| db(w).vpn_subnet = "0.0.0.0/0 trust".into()), Invalid::Subnet);
    assert_eq!(refused(&|w| gw(w).interface = "eth0".into()), Invalid::Interface);
    assert_eq!(refused(&|w| gw(w).listen_port = 70_000), Invalid::ListenPort);
    assert_eq!(refused(&|w| w.gateway = None), Invalid::MissingPart);
    assert_eq!(refused(&|w| w.roles = vec![pb::Role::Db.into()]), Invalid::MissingPart);
    assert_eq!(refused(&|w| gw(w).gateway_address = "198.18.2.1".into()), Invalid::Subnet);
    let peer = |address: &str, key: &str| pb::Peer {
        id: "d1".into(),
        name: "plc1".into(),
        public_key: key.into(),
        address: address.into(),
        enabled: true,
    };
    let key = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
    assert!(Assignment::try_from({
        let mut w = wire();
        gw(&mut w).peers.push(peer("198.18.1.10", key));
        w
    })
    .is_ok());
    assert_eq!(refused(&|w| gw(w).peers.push(peer("198.18.2.10", key))), Invalid::Peer, "outside the tenant subnet");
    assert_eq!(refused(&|w| gw(w).peers.push(peer("198.18.1.1", key))), Invalid::Peer, "the gateway's own address");
    assert_eq!(refused(&|w| gw(w).peers.push(peer("198.18.1.10", "k\n[Peer]"))), Invalid::Peer);
    assert_eq!(refused(&|w| gw(w).blocked_domains.push("x; flush ruleset".into())), Invalid::Domain);
    let rule = pb::FirewallRule {
        id: "r1".into(),
        verdict: pb::Verdict::Deny.into(),
        protocol: pb::Protocol::Any.into(),
        port_first: 22,
        port_last: 22,
        ..Default::default()
    };
    assert_eq!(refused(&move |w| gw(w).rules.push(rule.clone())), Invalid::Rule, "ports need tcp or udp");
    assert_eq!(refused(&|w| w.lifecycle = 0), Invalid::Lifecycle);
    assert_eq!(refused(&|w| w.roles.clear()), Invalid::Roles);
    assert_eq!(refused(&|w| w.roles.push(42)), Invalid::Roles);
    assert_eq!(refused(&|w| w.name = "Acme".into()), Invalid::Name);
    assert_eq!(refused(&|w| db(w).password_verifier = "x'--".into()), Invalid::PasswordVerifier);
}

#[test]
fn realtime_devices_and_subscriber_keys_are_parsed_and_malformed_ones_refused() {
    let db = Assignment::try_from(wire()).expect("valid").db_tenant().expect("db").db;
    assert_eq!(db.devices, ["plc-1"]);
    assert_eq!(db.subscriber_keys[0].secret_hash, "ab".repeat(32), "hashes compared in lowercase");
    let with = |f: &dyn Fn(&mut pb::DbAssignment)| {
        let mut w = wire();
        f(w.db.as_mut().expect("db"));
        Assignment::try_from(w).map(|_| ()).map_err(|e| e.reason)
    };
    assert_eq!(with(&|d| d.devices[0].id = "a/b".into()), Err(Invalid::Device));
    assert_eq!(with(&|d| d.devices[0].id = String::new()), Err(Invalid::Device));
    assert_eq!(with(&|d| d.subscriber_keys[0].id = "short".into()), Err(Invalid::SubscriberKey));
    assert_eq!(with(&|d| d.subscriber_keys[0].secret_hash = "zz".repeat(32)), Err(Invalid::SubscriberKey));
}

#[test]
fn public_devices_arrive_with_their_enrolled_fingerprint_and_a_malformed_one_is_refused() {
    let mut w = wire();
    let db = w.db.as_mut().expect("db");
    db.devices.push(pb::RealtimeDevice {
        id: "edge-1".into(),
        mac_hashes: vec!["AA".repeat(32)],
        machine_id_hash: "11".repeat(32),
        public: true,
        ..Default::default()
    });
    let a = Assignment::try_from(w.clone()).expect("valid");
    let spec = a.db_tenant().expect("db part").db;
    assert_eq!(spec.devices, ["plc-1", "edge-1"]);
    assert_eq!(
        spec.public_devices,
        [PublicDevice { id: "edge-1".into(), mac_hashes: vec!["aa".repeat(32)], machine_id_hash: "11".repeat(32) }]
    );
    for bad in [vec!["zz".repeat(32)], vec![]] {
        let mut w = w.clone();
        let d = w.db.as_mut().expect("db").devices.last_mut().expect("edge");
        d.mac_hashes = bad;
        if d.mac_hashes.is_empty() {
            d.machine_id_hash.clear();
        }
        assert!(Assignment::try_from(w).is_err(), "a public device without a usable fingerprint is refused");
    }
}
