//! Builders shared by the unit tests of several state modules: a booted state, nodes, tenants.

use super::*;
use allocation::VpnPool;

/// An admin key without a secret, expiry or revocation.
pub fn admin_key(id: &str) -> ApiKey {
    ApiKey {
        id: id.into(),
        role: Role::Admin,
        tenant: None,
        description: String::new(),
        secret_hash: String::new(),
        created_at_ms: 0,
        expires_at_ms: None,
        revoked_at_ms: None,
    }
}

pub fn booted() -> State {
    let mut s = State::default();
    let settings = ClusterSettings {
        cluster_id: "test".into(),
        vpn_pool: VpnPool::parse("198.18.0.0/15").expect("valid pool"),
        retention_ms: 1000,
        ca_fingerprint: "sha256:00".into(),
        ca_cert_pem: String::new(),
        ca_key_pem: SecretPem::default(),
    };
    let admin = admin_key("00000000000000aa");
    let meta = Meta { time_ms: 0, actor: "t".into(), source: "t".into(), key_role: None, user_generation: None };
    let (r, _) = s.apply(1, &Command { meta, op: Op::Bootstrap { settings, admin_key: admin } });
    assert!(r.is_ok());
    s
}

pub fn next_index(s: &State) -> u64 {
    s.audit.len() + 1
}

pub fn register(s: &mut State, id: u64, roles: &[NodeRole]) {
    let node = Node {
        id,
        roles: roles.iter().copied().collect(),
        labels: BTreeMap::new(),
        capacity: node::NodeCapacity { cpus: 2, memory_bytes: 1 << 33, disk_bytes: 1 << 40, max_tenants: 100 },
        address: "192.0.2.1".into(),
        last_seen_ms: 0,
        cordoned: false,
        revoked: false,
        applied_revision: 0,
        gateway: Default::default(),
        realtime_address: None,
        db_logins_recorded: 0,
    };
    let i = next_index(s);
    let meta = Meta { time_ms: i, actor: "t".into(), source: "t".into(), key_role: None, user_generation: None };
    let (r, _) = s.apply(i, &Command { meta, op: Op::RegisterNode(node) });
    assert!(r.is_ok(), "{r:?}");
}

pub fn create(s: &mut State, name: &str) -> Tenant {
    let d = tenant::Tier::Free.defaults();
    let spec = TenantSpec {
        name: TenantName::parse(name).expect("valid"),
        tier: tenant::Tier::Free,
        db_type: tenant::DbType::Postgres,
        isolation: tenant::Isolation::Schema,
        db_quota: d.db_quota,
        connection_limit: d.connection_limit,
        events_per_min: d.events_per_min,
        vpn_enabled: true,
        public_api: false,
        ddl_enabled: false,
        access_mode: tenant::AccessMode::VpnOnly,
        dedicated: false,
        node_selector: BTreeMap::new(),
        db_password_verifier: String::new(),
    };
    let i = next_index(s);
    let meta = Meta { time_ms: i, actor: "t".into(), source: "t".into(), key_role: None, user_generation: None };
    match s.apply(i, &Command { meta, op: Op::CreateTenant(spec) }).0 {
        Ok(Reply::Tenant(t)) => *t,
        other => panic!("{other:?}"),
    }
}
