//! Operators cannot lock themselves out: the last lasting admin key cannot be revoked, and root on
//! a coordinator host can always mint a new admin key from the data directory (break-glass).

use crate::harness::{stderr, Cluster, BIN};
use berqenas_tests::{run, wait_for};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

async fn status_with(base: &str, key: &str) -> u16 {
    let resp = reqwest::Client::new().get(format!("{base}/api/v1/tenants")).bearer_auth(key).send().await;
    resp.expect("GET tenants").status().as_u16()
}

async fn revoke(base: &str, key: &str, id: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .delete(format!("{base}/api/v1/apikeys/{id}"))
        .bearer_auth(key)
        .send()
        .await
        .expect("DELETE apikey");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON body"))
}

fn recover_admin(dir: &Path, wait: &str) -> Value {
    let dir = dir.to_str().expect("UTF-8 path");
    let out = run(Path::new(BIN), &["recover-admin", "--data-dir", dir, "--wait", wait, "--output", "json"], &[]);
    assert!(out.status.success(), "recover-admin: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("recover-admin prints JSON")
}

#[tokio::test(flavor = "multi_thread")]
async fn last_admin_key_cannot_be_revoked() {
    let c = Cluster::single();
    let base = c.nodes[0].endpoint();
    let first_id = c.json(0, &["apikey", "list"])[0]["id"].as_str().expect("first key id").to_string();
    let second = c.json(0, &["apikey", "create", "--role", "admin"]);
    let (second_id, second) = (second["key"]["id"].as_str().expect("id"), second["token"].as_str().expect("token"));

    // The second admin revokes the first: allowed, another admin key remains.
    let (status, body) = revoke(&base, second, &first_id).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(status_with(&base, &c.key).await, 401, "the first key is revoked");

    // The second admin key is now the last one: revoking it is refused with the reason.
    let (status, body) = revoke(&base, second, second_id).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("conflict")), "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("last active admin key") && message.contains("recover-admin"), "{body}");
    assert_eq!(status_with(&base, second).await, 200, "the last admin key still works");
    let out = c.cli_as(0, second, &["apikey", "revoke", second_id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("(409)"), "{}", stderr(&out));
    let last = c.cli_as(0, second, &["audit", "list", "--limit", "1", "--output", "json"]);
    let last: Value = serde_json::from_slice(&last.stdout).expect("JSON");
    assert_eq!((&last[0]["action"], &last[0]["outcome"]), (&Value::from("apikey.revoke"), &Value::from("rejected")));
    assert_eq!(status_with(&base, second).await, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn recover_admin_mints_a_working_key_audited_as_break_glass() {
    let mut c = Cluster::single();
    let base = c.nodes[0].endpoint();
    let dir = c.nodes[0].dir.clone();

    // The operators lost every admin key they had (here: the only one is forgotten).
    let lost = std::mem::take(&mut c.key);
    let recovered = recover_admin(&dir, "20s");
    assert_eq!(recovered["added"], true, "the running coordinator took the request: {recovered}");
    let key = recovered["admin_api_key"].as_str().expect("key printed").to_string();
    let id = recovered["key_id"].as_str().expect("id").to_string();
    assert_eq!(status_with(&base, &key).await, 200, "the recovered key works");
    assert!(!dir.join("recovery.json").exists(), "the request is consumed");

    let trail = c.cli_as(0, &key, &["audit", "export"]);
    let trail = String::from_utf8_lossy(&trail.stdout).into_owned();
    let entry: Value = trail
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["action"] == "apikey.recovered")
        .expect("the recovery is audited");
    assert_eq!(entry["target"], format!("apikey/{id}"));
    assert_eq!((&entry["actor"], &entry["outcome"]), (&Value::from("break-glass"), &Value::from("ok")));
    assert!(entry["details"]["host"].as_str().is_some_and(|h| !h.is_empty()), "{entry}");
    let secret = key.rsplit('_').next().expect("secret part");
    assert!(!trail.contains(secret), "the secret is not in the audit trail");
    let log = c.nodes[0].proc.as_ref().map(|p| p.log_text()).unwrap_or_default();
    assert!(!log.contains(secret), "the secret is not in the coordinator's log");
    // The recovered key is a full admin: it can replace the lost one.
    let listed = c.cli_as(0, &key, &["apikey", "list", "--output", "json"]);
    let listed: Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    assert_eq!(listed.as_array().map(Vec::len), Some(2));
    assert_eq!(status_with(&base, &lost).await, 200, "recovery revokes nothing");

    // With the coordinator down, the request waits in the data directory (0600) and is taken at start.
    c.key = key;
    c.stop(0);
    let pending = recover_admin(&dir, "1s");
    assert_eq!(pending["added"], false, "{pending}");
    let mode = std::fs::metadata(dir.join("recovery.json")).expect("pending request").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let file = std::fs::read_to_string(dir.join("recovery.json")).expect("read request");
    let second = pending["admin_api_key"].as_str().expect("key").to_string();
    assert!(!file.contains(second.rsplit('_').next().expect("secret")), "only the hash is on disk");
    c.start(0);
    wait_for("the pending recovery to be taken at start", Duration::from_secs(20), || {
        c.cli_as(0, &second, &["tenant", "list"]).status.success().then_some(())
    });
    assert!(!dir.join("recovery.json").exists());
}
