//! Replication, failover and restart of real coordinator processes.

use crate::harness::Cluster;
use berqenas_tests::wait_for;
use std::time::Duration;

#[test]
fn three_node_cluster_survives_leader_sigkill_and_the_node_catches_up() {
    let mut c = Cluster::three();
    let status = c.json(1, &["cluster", "status"]);
    assert_eq!(status["members"].as_array().map(Vec::len), Some(3), "{status}");
    assert!(status["members"].as_array().into_iter().flatten().all(|m| m["voter"] == true), "{status}");
    // Every coordinator holds the cluster backup key (the joiners got it with their certificate).
    let keys: Vec<String> =
        c.nodes.iter().map(|n| std::fs::read_to_string(n.dir.join("backup.key")).expect("backup.key")).collect();
    assert!(keys[0].trim().len() == 64 && keys.iter().all(|k| *k == keys[0]), "one cluster backup key everywhere");

    let leader = wait_for("a leader", Duration::from_secs(10), || c.leader_seen_by(0));
    let follower = c.nodes.iter().position(|n| n.id != leader).expect("a follower exists");
    let mut acknowledged = Vec::new();
    for i in 0..5 {
        let name = format!("tenant_{i}");
        let t = c.json(follower, &["tenant", "create", "--name", &name, "--db-quota", "1GB"]);
        assert_eq!(t["name"], name.as_str());
        acknowledged.push(name);
    }

    let leader_idx = c.index_of(leader);
    c.kill(leader_idx);
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader_idx).collect();
    let new_leader =
        wait_for("a new leader", Duration::from_secs(15), || c.leader_seen_by(survivors[0]).filter(|l| *l != leader));
    assert_ne!(new_leader, leader);

    for &i in &survivors {
        let names = c.local_tenants(i).expect("survivor answers");
        for name in &acknowledged {
            assert!(names.contains(name), "node {} lost acknowledged tenant {name}: {names:?}", c.nodes[i].id);
        }
    }

    let t = c.json(survivors[1], &["tenant", "create", "--name", "after_failover"]);
    assert_eq!(t["status"], "provisioning");
    acknowledged.push("after_failover".into());

    c.start(leader_idx);
    wait_for("the restarted node to catch up", Duration::from_secs(20), || {
        let names = c.local_tenants(leader_idx)?;
        acknowledged.iter().all(|n| names.contains(n)).then_some(())
    });
    // Every node agrees on the audit chain, and it verifies.
    for i in 0..3 {
        let v = c.json(i, &["audit", "verify"]);
        assert_eq!(v["ok"], true, "node {i}: {v}");
    }
}

#[test]
fn single_node_restart_keeps_state() {
    let mut c = Cluster::single();
    c.ok(0, &["tenant", "create", "--name", "acme", "--db-quota", "5GB", "--vpn", "enabled", "--public-api", "true"]);
    c.ok(0, &["tenant", "create", "--name", "globex"]);
    c.ok(0, &["tenant", "delete", "globex"]);
    let key = c.json(0, &["apikey", "create", "--role", "auditor"]);
    let auditor = key["token"].as_str().expect("token").to_string();
    let before = c.json(0, &["tenant", "list"]);
    let audit_before = c.json(0, &["audit", "list"]);

    c.stop(0);
    c.start(0);

    wait_for("restarted node to lead", Duration::from_secs(10), || c.leader_seen_by(0));
    assert_eq!(c.json(0, &["tenant", "list"]), before);
    assert_eq!(c.json(0, &["audit", "list"]), audit_before);
    let out = c.cli_as(0, &auditor, &["audit", "verify"]);
    assert!(out.status.success(), "auditor key survives restart: {}", crate::harness::stderr(&out));
    // Writes still work and continue the index allocation.
    let t = c.json(0, &["tenant", "create", "--name", "initech"]);
    assert_eq!(t["network"]["vpn_subnet"], "198.18.3.0/24");
}

/// The state machine's rows are written without an fsync (the log rebuilds them): a SIGKILL
/// loses them, and the restart re-applies the log from the durable `last_applied`.
#[test]
fn sigkill_of_every_coordinator_loses_no_acknowledged_write() {
    let mut c = Cluster::three();
    let leader = wait_for("a leader", Duration::from_secs(10), || c.leader_seen_by(0));
    let writer = c.index_of(leader);
    let acknowledged: Vec<String> = (0..15).map(|i| format!("crash_{i}")).collect();
    for name in &acknowledged {
        c.ok(writer, &["tenant", "create", "--name", name]);
    }
    let updated = c.json(writer, &["tenant", "update", "crash_0", "--db-quota", "2GB"]);
    let audit_before = c.json(writer, &["audit", "verify"]);
    for i in 0..3 {
        c.kill(i);
    }
    for i in 0..3 {
        c.start(i);
    }
    for i in 0..3 {
        wait_for("every acknowledged write back after the restart", Duration::from_secs(20), || {
            let names = c.local_tenants(i)?;
            acknowledged.iter().all(|n| names.contains(n)).then_some(())
        });
    }
    let t = c.json(0, &["tenant", "get", "crash_0"]);
    assert_eq!(t["db_quota_bytes"], updated["db_quota_bytes"], "{t}");
    let v = c.json(0, &["audit", "verify"]);
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["total"].as_u64() >= audit_before["total"].as_u64(), "{v} vs {audit_before}");
}

#[test]
fn single_node_sigkill_keeps_every_acknowledged_write() {
    let mut c = Cluster::single();
    let names: Vec<String> = (0..10).map(|i| format!("solo_{i}")).collect();
    for name in &names {
        c.ok(0, &["tenant", "create", "--name", name]);
    }
    let audit_before = c.json(0, &["audit", "list"]);
    c.kill(0);
    c.start(0);
    wait_for("restarted node to lead", Duration::from_secs(10), || c.leader_seen_by(0));
    let have = c.local_tenants(0).expect("answers");
    assert!(names.iter().all(|n| have.contains(n)), "{have:?}");
    let audit_after = c.json(0, &["audit", "list"]);
    let before = audit_before.as_array().map(Vec::len).unwrap_or(0);
    assert_eq!(audit_after.as_array().map(|a| a[..before].to_vec()), audit_before.as_array().cloned());
    let v = c.json(0, &["audit", "verify"]);
    assert_eq!(v["ok"], true, "{v}");
}

#[test]
fn removed_node_id_is_never_reused() {
    let mut c = Cluster::three();
    c.ok(0, &["cluster", "remove", "--id", "3"]);
    c.kill(2);
    let out =
        c.cli(0, &["cluster", "add-learner", "--id", "3", "--raft-addr", "127.0.0.1:1", "--api-addr", "127.0.0.1:2"]);
    assert!(!out.status.success());
    assert!(crate::harness::stderr(&out).contains("never reused"), "{}", crate::harness::stderr(&out));
    let out = c.cli(0, &["cluster", "token", "create", "--id", "3"]);
    assert!(!out.status.success(), "no certificate token for a retired id");
    assert!(crate::harness::stderr(&out).contains("never reused"), "{}", crate::harness::stderr(&out));
    // A node answering under another id is refused, and nothing changes.
    let five = c.spawn_unjoined(5);
    let raft5 = format!("127.0.0.1:{}", c.nodes[five].raft);
    let out = c.cli(0, &["cluster", "add-learner", "--id", "9", "--raft-addr", &raft5, "--api-addr", "127.0.0.1:2"]);
    assert!(!out.status.success());
    assert!(crate::harness::stderr(&out).contains("answers as node 5, not 9"), "{}", crate::harness::stderr(&out));
    let status = c.json(0, &["cluster", "status"]);
    let ids: Vec<u64> = status["members"].as_array().into_iter().flatten().filter_map(|m| m["id"].as_u64()).collect();
    assert_eq!(ids, vec![1, 2]);
}

#[test]
fn lagging_node_catches_up_from_a_snapshot() {
    let mut c = Cluster::three_with(&["--snapshot-logs", "20"]);
    let leader = wait_for("a leader", Duration::from_secs(10), || c.leader_seen_by(0));
    let lagging = c.nodes.iter().position(|n| n.id != leader).expect("a follower");
    let writer = (0..3).find(|i| *i != lagging).expect("another node");
    c.kill(lagging);
    let names: Vec<String> = (0..60).map(|i| format!("snap_{i}")).collect();
    for name in &names {
        c.ok(writer, &["tenant", "create", "--name", name]);
    }
    let status = c.json(writer, &["cluster", "status"]);
    assert!(status["purged_index"].as_u64().unwrap_or(0) > 0, "the log was compacted: {status}");

    c.start(lagging);
    wait_for("the lagging node to install the snapshot", Duration::from_secs(20), || {
        let have = c.local_tenants(lagging)?;
        names.iter().all(|n| have.contains(n)).then_some(())
    });
    let status = c.json(lagging, &["cluster", "status", "--stale"]);
    assert!(status["snapshot_index"].as_u64().unwrap_or(0) > 0, "caught up through a snapshot: {status}");

    // What the snapshot installed is on disk: it survives another restart, and the chain verifies.
    c.stop(lagging);
    c.start(lagging);
    let have = wait_for("restarted node answers", Duration::from_secs(10), || c.local_tenants(lagging));
    assert!(names.iter().all(|n| have.contains(n)), "{have:?}");
    let v = c.json(lagging, &["audit", "verify", "--stale"]);
    assert_eq!(v["ok"], true, "{v}");
}

/// `audit verify` on node `idx` as it stands, once it answers.
fn verify(c: &Cluster, idx: usize) -> Option<serde_json::Value> {
    serde_json::from_slice(&c.cli(idx, &["audit", "verify", "--stale", "--output", "json"]).stdout).ok()
}

/// A follower down while the trail grew by many snapshots' worth (and past several read chunks
/// and offset marks) comes back with the leader's whole trail, entry for entry: the snapshot it
/// installs ships the entries from the leader's store, and it keeps the ones it already had.
#[tokio::test(flavor = "multi_thread")]
async fn follower_that_missed_many_snapshots_gets_the_whole_audit_trail() {
    // Concurrent writes are batched (a few commands per log entry), so snapshots come every 20
    // entries here to be many.
    let mut c = Cluster::three_with(&["--snapshot-logs", "20", "--admin-key-rate", "0"]);
    let leader = wait_for("a leader", Duration::from_secs(10), || c.leader_seen_by(0));
    let lagging = c.nodes.iter().position(|n| n.id != leader).expect("a follower");
    let writer = c.index_of(leader);
    c.ok(writer, &["tenant", "create", "--name", "acme"]);
    // The follower has history of its own before it falls behind.
    wait_for("the follower to apply the create", Duration::from_secs(10), || {
        c.local_tenants(lagging)?.contains(&"acme".to_string()).then_some(())
    });
    c.kill(lagging);

    // 3,000 entries (each over 400 bytes: more than a megabyte of trail) through the API.
    let (http, base, key) =
        (reqwest::Client::new(), format!("http://127.0.0.1:{}", c.nodes[writer].api), c.key.clone());
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (http, base, key, next) = (http.clone(), base.clone(), key.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= 3_000 {
                        break;
                    }
                    let resp = http
                        .patch(format!("{base}/api/v1/tenant/acme"))
                        .bearer_auth(&key)
                        .json(&serde_json::json!({"events_per_min": 2_000 + n}))
                        .send()
                        .await
                        .expect("PATCH");
                    assert_eq!(resp.status().as_u16(), 200, "{}", resp.text().await.unwrap_or_default());
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("writer");
    }
    let status = c.json(writer, &["cluster", "status"]);
    assert!(status["purged_index"].as_u64().unwrap_or(0) > 200, "the log was compacted well past it: {status}");
    let total = c.json(writer, &["audit", "verify"])["total"].as_u64().expect("total");
    assert!(total > 3_000, "{total}");

    c.start(lagging);
    wait_for("the follower to catch up with the trail", Duration::from_secs(60), || {
        let v = verify(&c, lagging)?;
        (v["total"].as_u64() >= Some(total)).then_some(())
    });
    let status = c.json(lagging, &["cluster", "status", "--stale"]);
    assert!(status["snapshot_index"].as_u64().unwrap_or(0) > 200, "caught up through a snapshot: {status}");
    let v = c.json(lagging, &["audit", "verify", "--stale"]);
    assert_eq!(v["ok"], true, "{v}");
    // Entry for entry the leader's trail (up to the entries both have: reports may add more).
    let export = |idx: usize| {
        let out = c.cli(idx, &["audit", "export", "--stale"]);
        assert!(out.status.success(), "{}", crate::harness::stderr(&out));
        String::from_utf8(out.stdout)
            .expect("UTF-8")
            .lines()
            .take(total as usize)
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let (theirs, ours) = (export(writer), export(lagging));
    assert_eq!(ours.len(), total as usize);
    assert!(ours == theirs, "the follower's trail differs from the leader's");

    // Restarted, it still has it all.
    c.stop(lagging);
    c.start(lagging);
    let v = wait_for("the restarted follower answers", Duration::from_secs(10), || {
        let v = verify(&c, lagging)?;
        v["ok"].as_bool().map(|_| v)
    });
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["total"].as_u64() >= Some(total), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn raft_listener_accepts_coordinators_only_and_tokens_are_single_use() {
    use berqenas_proto::node::{node_client::NodeClient, JoinRequest};
    use berqenas_proto::raft::{raft_client::RaftClient, RaftRequest};
    use std::sync::{Arc, RwLock};

    let c = Cluster::single();
    let coordinator_token = c.json(0, &["cluster", "token", "create", "--id", "2"]);
    let (token, pin) = (
        coordinator_token["token"].as_str().expect("token").to_string(),
        coordinator_token["ca_fingerprint"].as_str().expect("pin").to_string(),
    );
    let node_url = format!("https://127.0.0.1:{}", c.nodes[0].node);
    let dir = tempfile::tempdir().expect("tmp");
    berqenas_coordinator::server::join_as_coordinator(&dir.path().join("a"), 2, vec![], &node_url, &token, &pin)
        .await
        .expect("first use works");
    let again =
        berqenas_coordinator::server::join_as_coordinator(&dir.path().join("b"), 2, vec![], &node_url, &token, &pin)
            .await;
    let err = format!("{:#}", again.expect_err("second use refused"));
    assert!(err.contains("invalid, expired, used"), "{err}");

    // A node certificate (obtained the proper way) is refused by the Raft listener.
    let node_token = c.json(0, &["node", "token", "create", "--roles", "db"]);
    let pinned = Arc::new(RwLock::new(Arc::new(berqenas_pki::pinned_client_config(&pin).expect("tls"))));
    let node_addr = format!("127.0.0.1:{}", c.nodes[0].node);
    let mut client = NodeClient::new(berqenas_coordinator::transport::channel(&node_addr, pinned).expect("channel"));
    let kc = berqenas_pki::new_key_and_csr("n").expect("csr");
    let joined = client
        .join(JoinRequest {
            token: node_token["token"].as_str().expect("token").into(),
            csr_pem: kc.csr_pem.clone(),
            roles: vec!["db".into()],
            labels: Default::default(),
            address: "127.0.0.1".into(),
            capacity: None,
            ..Default::default()
        })
        .await
        .expect("node joins")
        .into_inner();
    let ca = joined.ca_pem.clone();
    let node_tls = berqenas_pki::client_config(&ca, Some((&joined.cert_chain_pem, &kc.key_pem))).expect("tls");
    let raft_addr = format!("127.0.0.1:{}", c.nodes[0].raft);
    let channel = berqenas_coordinator::transport::channel(&raft_addr, Arc::new(RwLock::new(Arc::new(node_tls))))
        .expect("channel");
    let refused = RaftClient::new(channel).hello(RaftRequest { from: 1, target: 1, payload: vec![] }).await;
    let status = refused.expect_err("a node may not speak raft");
    assert!(status.message().contains("may not speak raft"), "{status:?}");

    // Without any certificate the Raft listener refuses the handshake itself, and audits it.
    let anonymous = berqenas_pki::client_config(&ca, None).expect("tls");
    let channel = berqenas_coordinator::transport::channel(&raft_addr, Arc::new(RwLock::new(Arc::new(anonymous))))
        .expect("channel");
    assert!(RaftClient::new(channel).hello(RaftRequest { from: 1, target: 1, payload: vec![] }).await.is_err());
    let refusals = c.json(0, &["audit", "list"]);
    assert!(
        refusals
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["action"] == "raft.handshake" && e["outcome"] == "rejected"),
        "{refusals}"
    );
}
