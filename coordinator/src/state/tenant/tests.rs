//! Unit tests of the tenant invariants: create (`TenantSpec::new`) and update
//! (`Tenant::apply_patch`) refuse the same specs.

use super::*;

fn name(n: &str) -> TenantName {
    TenantName::parse(n).expect("valid test name")
}

/// A stored tenant built from a spec the way the state machine builds one.
fn stored(spec: &TenantSpec) -> Tenant {
    let network = NetworkAllocation {
        index: 1,
        vpn_subnet: "198.18.1.0/24".into(),
        gateway_address: "198.18.1.1".into(),
        interface: "bqt1".into(),
        listen_port: 51821,
    };
    Tenant::new(spec, network, 2, 0)
}

fn new(req: NewTenant) -> Result<TenantSpec, InvalidTenant> {
    TenantSpec::new(name("acme"), req)
}

#[test]
fn defaults_are_vpn_only_and_without_vpn_public() {
    let s = new(NewTenant::default()).expect("defaults are valid");
    assert_eq!((s.access_mode, s.vpn_enabled, s.public_api), (AccessMode::VpnOnly, true, false));
    let s = new(NewTenant { vpn_enabled: Some(false), ..Default::default() }).expect("valid");
    assert_eq!((s.access_mode, s.vpn_enabled, s.public_api), (AccessMode::Public, false, true));
    let s = new(NewTenant { public_api: Some(true), ..Default::default() }).expect("seed flags");
    assert_eq!(s.access_mode, AccessMode::Hybrid);
    let s = new(NewTenant { access_mode: Some(AccessMode::Hybrid), ..Default::default() }).expect("valid");
    assert!(s.public_api, "a named mode sets public_api to match");
}

#[test]
fn mssql_implies_database_isolation() {
    let s = new(NewTenant { db_type: Some(DbType::Mssql), ..Default::default() }).expect("valid");
    assert_eq!(s.isolation, Isolation::Database);
    let bad = NewTenant { db_type: Some(DbType::Mssql), isolation: Some(Isolation::Schema), ..Default::default() };
    assert_eq!(new(bad), Err(InvalidTenant::MssqlNeedsDatabase));
}

#[test]
fn vpn_only_tenant_cannot_drop_its_vpn() {
    let t = stored(&new(NewTenant::default()).expect("valid"));
    let patch = TenantPatch { vpn_enabled: Some(false), ..Default::default() };
    assert_eq!(t.apply_patch(&patch), Err(InvalidTenant::AccessNeedsVpn(AccessMode::VpnOnly)));
    let with_mode = TenantPatch { access_mode: Some(AccessMode::VpnOnly), ..patch.clone() };
    assert_eq!(t.apply_patch(&with_mode), Err(InvalidTenant::AccessNeedsVpn(AccessMode::VpnOnly)));
    // Opening it to every address is possible, but only on purpose.
    let open = TenantPatch { access_mode: Some(AccessMode::Public), ..patch };
    let opened = t.apply_patch(&open).expect("explicit public is allowed");
    assert_eq!((opened.access_mode, opened.vpn_enabled, opened.public_api), (AccessMode::Public, false, true));
}

#[test]
fn switching_off_the_public_api_narrows_access() {
    let hybrid = stored(&new(NewTenant { public_api: Some(true), ..Default::default() }).expect("valid"));
    let t = hybrid.apply_patch(&TenantPatch { public_api: Some(false), ..Default::default() }).expect("valid");
    assert_eq!((t.access_mode, t.vpn_enabled, t.public_api), (AccessMode::VpnOnly, true, false));
    let t = hybrid.apply_patch(&TenantPatch { vpn_enabled: Some(false), ..Default::default() }).expect("valid");
    assert_eq!((t.access_mode, t.vpn_enabled, t.public_api), (AccessMode::Public, false, true));
    let neither = TenantPatch { vpn_enabled: Some(false), public_api: Some(false), ..Default::default() };
    assert_eq!(hybrid.apply_patch(&neither), Err(InvalidTenant::AccessNeedsVpn(AccessMode::Hybrid)));
}

#[test]
fn create_and_update_refuse_the_same_specs() {
    let base = stored(&new(NewTenant { public_api: Some(true), ..Default::default() }).expect("valid"));
    let cases: Vec<(NewTenant, TenantPatch, InvalidTenant)> = vec![
        (
            NewTenant { access_mode: Some(AccessMode::VpnOnly), public_api: Some(true), ..Default::default() },
            TenantPatch { access_mode: Some(AccessMode::VpnOnly), public_api: Some(true), ..Default::default() },
            InvalidTenant::VpnOnlyWithPublicApi,
        ),
        (
            NewTenant { access_mode: Some(AccessMode::Public), public_api: Some(false), ..Default::default() },
            TenantPatch { access_mode: Some(AccessMode::Public), public_api: Some(false), ..Default::default() },
            InvalidTenant::PublicAccessWithoutPublicApi(AccessMode::Public),
        ),
        (
            NewTenant { access_mode: Some(AccessMode::Hybrid), vpn_enabled: Some(false), ..Default::default() },
            TenantPatch { access_mode: Some(AccessMode::Hybrid), vpn_enabled: Some(false), ..Default::default() },
            InvalidTenant::AccessNeedsVpn(AccessMode::Hybrid),
        ),
        (
            NewTenant { connection_limit: Some(0), ..Default::default() },
            TenantPatch { connection_limit: Some(0), ..Default::default() },
            InvalidTenant::ConnectionLimit(0),
        ),
        (
            NewTenant { connection_limit: Some(MAX_CONNECTION_LIMIT + 1), ..Default::default() },
            TenantPatch { connection_limit: Some(MAX_CONNECTION_LIMIT + 1), ..Default::default() },
            InvalidTenant::ConnectionLimit(MAX_CONNECTION_LIMIT + 1),
        ),
        (
            NewTenant { events_per_min: Some(0), ..Default::default() },
            TenantPatch { events_per_min: Some(0), ..Default::default() },
            InvalidTenant::EventsPerMin(0),
        ),
    ];
    for (create, patch, expected) in cases {
        assert_eq!(new(create.clone()), Err(expected.clone()), "create {create:?}");
        assert_eq!(base.apply_patch(&patch), Err(expected), "update {patch:?}");
    }
}

#[test]
fn node_selector_is_bounded_and_validated() {
    let many = (0..17).map(|i| (format!("k{i}"), "v".to_string())).collect();
    assert_eq!(new(NewTenant { node_selector: many, ..Default::default() }), Err(InvalidTenant::TooManyLabels(17)));
    let bad = [("region".to_string(), "ist;drop".to_string())].into();
    assert!(matches!(new(NewTenant { node_selector: bad, ..Default::default() }), Err(InvalidTenant::Label(_))));
}
