//! Attacks on the Raft transport by holders of coordinator certificates, against real processes:
//! a non-member with a certificate from an unused join token, a removed member on its still-open
//! channel, a revoked join token, a revoked key's write forwarded by a lagging follower, and a
//! peer answering for another id. Each one tries to forge an admin key and must fail.

use crate::harness::Cluster;
use berqenas_coordinator::raft::network::{Peers, TransportError};
use berqenas_coordinator::state::apikey::{ApiKey, KeyRefused, Role};
use berqenas_coordinator::state::{Command, DomainError, Meta, Op};
use berqenas_coordinator::transport::Identity;
use berqenas_proto::raft::RaftRequest;
use berqenas_tests::wait_for;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const RPC: Duration = Duration::from_secs(5);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
}

/// A Raft client speaking as the coordinator whose key and certificate are in `dir`.
fn peers_as(id: u64, dir: &Path) -> Peers {
    let identity = Identity { dir: dir.to_path_buf() };
    let (_, client) = identity.configs(Arc::new(berqenas_pki::NoRevocations)).expect("client TLS from the data dir");
    Peers::new(id, client)
}

fn admin_key_id(cluster: &Cluster) -> String {
    let (id, _) = berqenas_coordinator::state::apikey::split_token(&cluster.key).expect("admin token");
    id.to_string()
}

/// A command creating a new admin key whose token the attacker knows, claiming to act with
/// API key `actor` as an admin.
fn forge_admin_key(actor: &str, what: &str) -> (String, ApiKey, Command) {
    let (token, key) =
        berqenas_coordinator::server::new_api_key(Role::Admin, None, format!("forged by {what}"), None).expect("key");
    let meta = Meta {
        time_ms: berqenas_coordinator::time::now_ms(),
        actor: actor.to_string(),
        source: "127.0.0.1".into(),
        key_role: Some(Role::Admin),
        user_generation: None,
    };
    (token, key.clone(), Command { meta, op: Op::CreateApiKey(key) })
}

fn key_ids(cluster: &Cluster, idx: usize) -> Vec<String> {
    let keys = cluster.json(idx, &["apikey", "list"]);
    keys.as_array().into_iter().flatten().filter_map(|k| k["id"].as_str().map(str::to_string)).collect()
}

/// The forged key does not exist on the members at `members` and its token opens nothing.
fn assert_not_forged(cluster: &Cluster, members: &[usize], key: &ApiKey, token: &str) {
    for &idx in members {
        assert!(!key_ids(cluster, idx).contains(&key.id), "node {idx} holds the forged key {}", key.id);
        let out = cluster.cli_as(idx, token, &["tenant", "list"]);
        assert!(!out.status.success(), "the forged token works on node {idx}");
    }
}

fn permission_denied<T: std::fmt::Debug>(r: Result<T, TransportError>, what: &str) -> String {
    match r {
        Err(TransportError::Status(s)) if s.code() == tonic::Code::PermissionDenied => s.message().to_string(),
        other => panic!("{what}: expected a refusal, got {other:?}"),
    }
}

/// Sends every Raft RPC but `Hello` as `peers` to `target`; each must be refused before its
/// payload is even decoded.
async fn every_rpc_refused(peers: &Peers, target: u64, addr: &str) {
    let mut client = peers.client(target, addr).expect("client");
    let req = || RaftRequest { from: peers.self_id(), target, payload: b"{}".to_vec() };
    let calls = [
        ("append_entries", client.append_entries(req()).await.map(|_| ())),
        ("vote", client.vote(req()).await.map(|_| ())),
        ("install_snapshot", client.install_snapshot(req()).await.map(|_| ())),
        ("read_index", client.read_index(req()).await.map(|_| ())),
        ("forward", client.forward(req()).await.map(|_| ())),
    ];
    for (rpc, result) in calls {
        let status = result.expect_err(rpc);
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{rpc}: {status:?}");
        assert!(status.message().contains("not a voter or learner"), "{rpc}: {}", status.message());
    }
}

#[test]
fn a_coordinator_certificate_from_an_unused_join_token_cannot_forge_an_admin_key() {
    let c = Cluster::single();
    let rt = runtime();
    // The attacker holds an unused coordinator token for id 9 and uses it as intended: it gets
    // a certificate for berqenas://coordinator/9 signed by the cluster CA.
    let token = c.json(0, &["cluster", "token", "create", "--id", "9"]);
    let dir = c.tmp.path().join("attacker");
    let url = format!("https://{}", c.nodes[0].listen().node);
    let (secret, pin) = (token["token"].as_str().expect("token"), token["ca_fingerprint"].as_str().expect("pin"));
    rt.block_on(berqenas_coordinator::server::join_as_coordinator(&dir, 9, vec![], &url, secret, pin))
        .expect("the token admits a certificate");
    let attacker = peers_as(9, &dir);
    let leader = c.nodes[0].listen().raft;

    let (forged_token, key, cmd) = forge_admin_key(&admin_key_id(&c), "a non-member");
    let refused = rt.block_on(attacker.forward(1, &leader, &cmd, RPC));
    let message = permission_denied(refused, "forward from coordinator 9");
    assert!(message.contains("coordinator 9 is not a voter or learner"), "{message}");
    rt.block_on(every_rpc_refused(&attacker, 1, &leader));
    // `Hello` answers anyone of the CA: add-learner asks it before the address is a member.
    assert_eq!(rt.block_on(attacker.hello(&leader, RPC)).expect("hello"), 1);
    assert_not_forged(&c, &[0], &key, &forged_token);
}

#[test]
fn a_removed_member_is_refused_at_once_on_its_open_channel() {
    let c = Cluster::three();
    let rt = runtime();
    let leader = wait_for("a leader", Duration::from_secs(10), || c.leader_seen_by(0));
    let leader_idx = c.index_of(leader);
    let leader_addr = c.nodes[leader_idx].listen().raft;
    let victim_idx = (0..3).find(|i| *i != leader_idx).expect("a follower");
    let victim = c.nodes[victim_idx].id;
    // The removed coordinator keeps its key and certificate; here it speaks through one
    // channel opened while it was still a member.
    let removed = peers_as(victim, &c.nodes[victim_idx].dir);
    let index = rt.block_on(removed.read_index(leader, &leader_addr, RPC)).expect("a member may read");
    assert!(index.is_ok(), "{index:?}");

    c.ok(leader_idx, &["cluster", "remove", "--id", &victim.to_string()]);

    let (forged_token, key, cmd) = forge_admin_key(&admin_key_id(&c), "a removed member");
    let message = permission_denied(rt.block_on(removed.forward(leader, &leader_addr, &cmd, RPC)), "forward");
    assert!(message.contains(&format!("coordinator {victim} is not a voter or learner")), "{message}");
    rt.block_on(every_rpc_refused(&removed, leader, &leader_addr));
    let members: Vec<usize> = (0..3).filter(|i| *i != victim_idx).collect();
    assert_not_forged(&c, &members, &key, &forged_token);
}

#[test]
fn a_revoked_keys_write_forwarded_by_a_lagging_follower_is_refused_at_apply() {
    let c = Cluster::three();
    let rt = runtime();
    let leader = wait_for("a leader", Duration::from_secs(10), || c.leader_seen_by(0));
    let leader_idx = c.index_of(leader);
    let follower_idx = (0..3).find(|i| *i != leader_idx).expect("a follower");
    let second = c.json(leader_idx, &["apikey", "create", "--role", "admin", "--description", "soon revoked"]);
    let second_id = second["key"]["id"].as_str().expect("key id").to_string();
    c.ok(leader_idx, &["apikey", "revoke", &second_id]);

    // A follower that had not applied the revocation yet accepted the second key at its edge
    // and forwards the write to the leader: its own credentials, the leader's log position.
    let follower = peers_as(c.nodes[follower_idx].id, &c.nodes[follower_idx].dir);
    let (forged_token, key, cmd) = forge_admin_key(&second_id, "a revoked key");
    let reply = rt
        .block_on(follower.forward(leader, &c.nodes[leader_idx].listen().raft, &cmd, RPC))
        .expect("a member's forward reaches the leader")
        .expect("the leader commits the command");
    match reply {
        Err(DomainError::Forbidden(m)) => assert!(matches!(m, KeyRefused::Revoked(_)), "{m}"),
        other => panic!("expected a refusal at apply, got {other:?}"),
    }
    assert_not_forged(&c, &[0, 1, 2], &key, &forged_token);
    let audit = c.json(leader_idx, &["audit", "list"]);
    let entry = audit
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["target"] == format!("apikey/{}", key.id).as_str())
        .unwrap_or_else(|| panic!("the refusal is audited: {audit}"));
    assert_eq!(
        (&entry["action"], &entry["outcome"], &entry["actor"]),
        (&"apikey.create".into(), &"rejected".into(), &Value::from(second_id.as_str()))
    );

    // A forwarded admin write that names no key is refused before it reaches the log.
    let (_, _, mut unclaimed) = forge_admin_key(&second_id, "no claim");
    unclaimed.meta.key_role = None;
    let r = rt.block_on(follower.forward(leader, &c.nodes[leader_idx].listen().raft, &unclaimed, RPC));
    assert!(permission_denied(r, "unclaimed forward").contains("must name the API key"));

    // A channel meant for another coordinator refuses the server that answers there.
    let wrong = (0..3).map(|i| c.nodes[i].id).find(|id| *id != leader && *id != c.nodes[follower_idx].id).expect("id");
    match rt.block_on(follower.read_index(wrong, &c.nodes[leader_idx].listen().raft, RPC)) {
        Err(TransportError::Status(s)) => assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}"),
        other => panic!("coordinator {leader} answered for {wrong}: {other:?}"),
    }
}

#[test]
fn coordinator_join_tokens_are_listed_and_a_revoked_one_cannot_join() {
    let c = Cluster::single();
    let rt = runtime();
    let url = format!("https://{}", c.nodes[0].listen().node);
    let revoked = c.json(0, &["cluster", "token", "create", "--id", "5"]);
    let used = c.json(0, &["cluster", "token", "create", "--id", "6"]);
    let id_of = |t: &Value| t["join_token"]["id"].as_str().expect("token id").to_string();
    let (revoked_id, used_id) = (id_of(&revoked), id_of(&used));

    let listed = c.json(0, &["cluster", "token", "list"]);
    let text = listed.to_string();
    assert!(!text.contains(revoked["token"].as_str().expect("secret")), "no secret in the list");
    assert!(!text.contains("hash"), "no hash in the list: {text}");
    let status = |list: &Value, id: &str| {
        list.as_array().into_iter().flatten().find(|t| t["id"] == id).map(|t| t["status"].clone())
    };
    assert_eq!(status(&listed, &revoked_id), Some("unused".into()));
    assert_eq!(listed.as_array().and_then(|a| a.first()).map(|t| t["coordinator_id"].clone()), Some(5.into()));

    let answer = c.json(0, &["cluster", "token", "revoke", &revoked_id]);
    assert_eq!(answer["status"], "revoked");
    let join = |t: &Value, id: u64, dir: &str| {
        let (secret, pin) = (t["token"].as_str().expect("token"), t["ca_fingerprint"].as_str().expect("pin"));
        rt.block_on(berqenas_coordinator::server::join_as_coordinator(
            &c.tmp.path().join(dir),
            id,
            vec![],
            &url,
            secret,
            pin,
        ))
    };
    let err = join(&revoked, 5, "c5").expect_err("a revoked token cannot join");
    assert!(err.to_string().contains("revoked"), "{err}");
    assert!(!c.tmp.path().join("c5").join("coordinator.pem").exists(), "no certificate was issued");

    join(&used, 6, "c6").expect("an unused token joins once");
    let listed = c.json(0, &["cluster", "token", "list"]);
    assert_eq!(status(&listed, &used_id), Some("used".into()));
    assert_eq!(status(&listed, &revoked_id), Some("revoked".into()));
    assert!(join(&used, 6, "c6-again").is_err(), "a used token cannot join again");

    let again = c.cli(0, &["cluster", "token", "revoke", &used_id]);
    assert!(!again.status.success());
    assert!(crate::harness::stderr(&again).contains("was used"), "{}", crate::harness::stderr(&again));
    let bad = c.cli(0, &["cluster", "token", "revoke", "not-an-id"]);
    assert!(crate::harness::stderr(&bad).contains("16 hex digits"), "{}", crate::harness::stderr(&bad));
    let unknown = c.cli(0, &["cluster", "token", "revoke", "00000000000000ff"]);
    assert!(crate::harness::stderr(&unknown).contains("not found"), "{}", crate::harness::stderr(&unknown));
    let audit = c.json(0, &["audit", "list"]).to_string();
    assert!(audit.contains("jointoken.revoke"), "the revocation is audited");
}
