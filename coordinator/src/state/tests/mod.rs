//! Unit tests of the state machine: shared builders and what holds across entities (one audit
//! entry per command, `describe` agreeing with apply, replay, old log entries); each entity's
//! commands are tested in its own file here.

use super::action::Action;
use super::allocation::VpnPool;
use super::apikey::{ApiKey, Role};
use super::audit;
use super::node::{Node, NodeCapacity, NodeRole};
use super::quota::ByteSize;
use super::tenant::*;
use super::*;

mod apikeys;
mod backups;
mod devicetokens;
mod gateway;
mod nodes;
mod tenants;

const DAY_MS: u64 = 86_400_000;

fn meta(t: u64) -> Meta {
    Meta { time_ms: t, actor: "k_admin".into(), source: "127.0.0.1".into(), key_role: None, user_generation: None }
}

fn cmd(t: u64, op: Op) -> Command {
    Command { meta: meta(t), op }
}

fn name(n: &str) -> TenantName {
    TenantName::parse(n).expect("valid test name")
}

fn admin_key() -> ApiKey {
    ApiKey {
        description: "first admin".into(),
        secret_hash: apikey::hash_secret("s"),
        ..super::tests_support::admin_key("00000000000000aa")
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
        gateway: Default::default(),
        realtime_address: None,
        db_logins_recorded: 0,
    }
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

fn key(id: &str, role: Role, expires_at_ms: Option<u64>) -> ApiKey {
    ApiKey { id: id.into(), role, expires_at_ms, secret_hash: apikey::hash_secret(id), ..admin_key() }
}

/// A command acting with API key `id`, as the REST API makes it (the key's role claimed).
fn as_key(t: u64, id: &str, role: Role, op: Op) -> Command {
    Command {
        meta: Meta {
            time_ms: t,
            actor: id.into(),
            source: "127.0.0.1".into(),
            key_role: Some(role),
            user_generation: None,
        },
        op,
    }
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
fn audit_names_are_the_ones_stored_before() {
    // The (action, target) every command was audited under before actions were typed; stored
    // entries hash these bytes, so they never change.
    let acme = || name("acme");
    let settings = booted("10.50.0.0/16").settings.expect("booted");
    let cases = [
        (Op::Bootstrap { settings, admin_key: admin_key() }, "cluster.init", "cluster/test"),
        (Op::CreateTenant(spec("acme")), "tenant.create", "tenant/acme"),
        (Op::UpdateTenant { name: acme(), patch: TenantPatch::default() }, "tenant.update", "tenant/acme"),
        (Op::Lifecycle { name: acme(), step: Lifecycle::Suspend }, "tenant.suspend", "tenant/acme"),
        (Op::Lifecycle { name: acme(), step: Lifecycle::Resume }, "tenant.resume", "tenant/acme"),
        (Op::Lifecycle { name: acme(), step: Lifecycle::Delete }, "tenant.delete", "tenant/acme"),
        (Op::Lifecycle { name: acme(), step: Lifecycle::Restore }, "tenant.restore", "tenant/acme"),
        (Op::Lifecycle { name: acme(), step: Lifecycle::Purge { force: true } }, "tenant.purge", "tenant/acme"),
        (Op::CreateApiKey(key("00000000000000bb", Role::Auditor, None)), "apikey.create", "apikey/00000000000000bb"),
        (Op::RevokeApiKey { id: "00000000000000bb".into() }, "apikey.revoke", "apikey/00000000000000bb"),
        (
            Op::RecoverAdmin { key: key("00000000000000cc", Role::Admin, None), host: "h".into() },
            "apikey.recovered",
            "apikey/00000000000000cc",
        ),
        (Op::RegisterNode(node(7, &[])), "node.register", "node/7"),
        (Op::CreateJoinToken(join_token("jt", &[NodeRole::Db], 100)), "node.token.create", "jointoken/jt"),
        (Op::RevokeJoinToken { id: "jt".into() }, "jointoken.revoke", "jointoken/jt"),
        (
            Op::JoinCoordinator { token_id: "ct".into(), secret_hash: String::new(), id: 4 },
            "cluster.join",
            "coordinator/4",
        ),
        (Op::JoinNode { token_id: "jt".into(), secret_hash: String::new(), node: node(0, &[]) }, "node.join", "node"),
        (Op::RevokeNode { id: 7 }, "node.revoke", "node/7"),
        (Op::CordonNode { id: 7, cordoned: true }, "node.cordon", "node/7"),
        (Op::CordonNode { id: 7, cordoned: false }, "node.uncordon", "node/7"),
        (
            Op::NodeReport(node::Report {
                node_id: 7,
                applied_revision: 1,
                tenants: BTreeMap::new(),
                capacity: None,
                wireguard_backend: None,
                conditions: vec![],
            }),
            "node.report",
            "node/7",
        ),
        (
            Op::Membership { action: Action::ClusterRemove, node_id: 3, details: BTreeMap::new() },
            "cluster.remove",
            "coordinator/3",
        ),
        (
            Op::Rejected { action: Action::TenantGet, target: "tenant/Bad".into(), reason: "r".into() },
            "tenant.get",
            "tenant/Bad",
        ),
    ];
    for (op, action, target) in cases {
        let (a, t) = op.describe();
        assert_eq!((a.to_string().as_str(), t.to_string().as_str()), (action, target), "{op:?}");
    }
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
