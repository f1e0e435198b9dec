//! Joining: tokens are one-time and expiring, the coordinator is pinned, bad credentials are
//! refused with a clear reason and an audit entry, and nothing changes.

use crate::harness::Fleet;
use berqenas_tests::wait_for;
use std::time::Duration;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn agents_join_and_a_tenant_becomes_active_on_both() {
    let mut f = Fleet::new(3);
    let gw = f.add_agent("gw", "gateway", "region=ist");
    let db = f.add_agent("db", "db", "");
    let nodes = f.json(0, &["node", "list"]);
    let nodes = nodes.as_array().expect("list");
    assert_eq!(nodes.len(), 2);
    let gw_node = nodes.iter().find(|n| n["id"] == f.agents[gw].node_id).expect("gateway node listed");
    assert_eq!(gw_node["roles"], serde_json::json!(["gateway"]));
    assert_eq!(gw_node["labels"]["region"], "ist");
    assert!(gw_node["capacity"]["cpus"].as_u64().unwrap_or(0) >= 1, "{gw_node}");
    assert!(gw_node["capacity"]["memory_bytes"].as_u64().unwrap_or(0) > 0, "{gw_node}");
    assert_eq!(gw_node["address"], "127.0.0.1");

    // The seed's command, waiting until both nodes report the tenant ready.
    let t = f.json(1, &berqenas_tests::coordinator::SEED_CREATE);
    assert_eq!(t["status"], "active", "{t}");
    assert_eq!(t["placement"]["gateway_node"], f.agents[gw].node_id);
    assert_eq!(t["placement"]["db_node"], f.agents[db].node_id);
    let on_gw = f.agents[gw].tenant_file("acme").expect("gateway has acme");
    assert_eq!(on_gw["roles"], serde_json::json!(["gateway"]));
    assert_eq!(on_gw["gateway"]["vpn_subnet"], "198.18.1.0/24");
    assert!(
        on_gw["db"].is_null(),
        "a gateway receives nothing of the database, its password verifier included: {on_gw}"
    );
    let on_db = f.agents[db].tenant_file("acme").expect("db node has acme");
    assert_eq!(on_db["roles"], serde_json::json!(["db"]));
    assert!(on_db["gateway"].is_null(), "{on_db}");
    assert!(on_db["db"]["password_verifier"].as_str().is_some_and(|v| v.starts_with("SCRAM-SHA-256$")), "{on_db}");

    // Suspend reaches the hosts; purge removes the tenant from them.
    f.ok(0, &["tenant", "suspend", "acme"]);
    wait_for("suspension to reach the db node", Duration::from_secs(10), || {
        (f.agents[db].tenant_file("acme")?["lifecycle"] == "suspended").then_some(())
    });
    f.ok(0, &["tenant", "delete", "acme"]);
    f.ok(0, &["tenant", "purge", "acme", "--force"]);
    wait_for("purge to reach both nodes", Duration::from_secs(10), || {
        (f.agents[gw].tenant_files().is_empty() && f.agents[db].tenant_files().is_empty()).then_some(())
    });
}

#[test]
fn bad_join_credentials_are_refused_audited_and_change_nothing() {
    let mut f = Fleet::new(1);
    let (token, pin) = f.token("db", &[]);
    // A wrong pin: the agent refuses the coordinator before sending anything.
    let other_pin = format!("sha256:{}", "ab".repeat(32));
    let out = f.join_raw("a", 0, &token, &other_pin, "db", "");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("does not match the pin"), "{}", stderr(&out));
    // Roles beyond the token's.
    let out = f.join_raw("b", 0, &token, &pin, "db,gateway", "");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not within the token's roles"), "{}", stderr(&out));
    // Malformed token.
    let out = f.join_raw("c", 0, "bqj_nope", &pin, "db", "");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("malformed join token"), "{}", stderr(&out));
    // The token still works once, then never again.
    let out = f.join_raw("d", 0, &token, &pin, "db", "");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = f.join_raw("e", 0, &token, &pin, "db", "");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("invalid, expired or already used"), "{}", stderr(&out));
    // An expired token.
    let (short, _) = f.token("db", &["--ttl", "1s"]);
    std::thread::sleep(Duration::from_millis(1500));
    let out = f.join_raw("g", 0, &short, &pin, "db", "");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("invalid, expired or already used"), "{}", stderr(&out));

    let nodes = f.json(0, &["node", "list"]);
    assert_eq!(nodes.as_array().map(Vec::len), Some(1), "only the one good join made a node");
    // Joins with a real token are audited one by one; the malformed one names no issued token,
    // so it is counted with the source's other anonymous refusals and summarised.
    let refused: Vec<_> =
        f.audit().into_iter().filter(|e| e["action"] == "node.join" && e["outcome"] == "rejected").collect();
    assert_eq!(refused.len(), 3, "every refused join with an issued token is audited: {refused:?}");
    wait_for("the anonymous refusals' summary", Duration::from_secs(15), || {
        f.audit()
            .into_iter()
            .any(|e| e["action"] == "anonymous.refused" && e.to_string().contains("node.join"))
            .then_some(())
    });
    let all = serde_json::to_string(&f.audit()).expect("json");
    assert!(!all.contains(&token), "no token in the audit trail");
    let _ = &mut f;
}
