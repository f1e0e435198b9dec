//! Tenant invariants hold on update as on create: a PATCH that would break one is refused with a
//! JSON 4xx (409 when it contradicts the tenant as it is, 400 when a value is out of range),
//! audited, and leaves the tenant exactly as it was.

use crate::harness::{stderr, Cluster};
use serde_json::{json, Value};

async fn patch(base: &str, key: &str, tenant: &str, body: Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .patch(format!("{base}/api/v1/tenant/{tenant}"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .expect("PATCH");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON body"))
}

fn last_audit(c: &Cluster) -> Value {
    c.json(0, &["audit", "list", "--limit", "1"])[0].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn vpn_only_tenant_cannot_drop_its_vpn_by_patch() {
    let c = Cluster::single();
    let base = c.nodes[0].endpoint();
    let created = c.json(0, &["tenant", "create", "--name", "vpnco", "--access", "vpn-only"]);
    assert_eq!((&created["access_mode"], &created["vpn_enabled"]), (&json!("vpn-only"), &json!(true)));
    let before = c.json(0, &["tenant", "get", "vpnco"]);

    // The attack of the issue: the exact PATCH that used to be accepted.
    let (status, body) = patch(&base, &c.key, "vpnco", json!({"vpn_enabled": false})).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("conflict")), "{body}");
    assert!(body["message"].as_str().is_some_and(|m| m.contains("vpn-only needs the VPN enabled")), "{body}");
    assert_eq!(c.json(0, &["tenant", "get", "vpnco"]), before, "the refused PATCH changed nothing");
    let entry = last_audit(&c);
    assert_eq!(
        (&entry["action"], &entry["outcome"], &entry["target"]),
        (&json!("tenant.update"), &json!("rejected"), &json!("tenant/vpnco"))
    );
    assert!(entry["details"]["reason"].as_str().is_some_and(|r| r.contains("needs the VPN enabled")), "{entry}");

    // The CLI refuses the same update with a one-line reason.
    let out = c.cli(0, &["tenant", "update", "vpnco", "--vpn", "disabled"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("needs the VPN enabled") && err.contains("(409)"), "{err}");
    assert_eq!(c.json(0, &["tenant", "get", "vpnco"]), before);

    // Other invariants shared with create are refused the same way.
    for (body, refusal) in [
        (json!({"public_api": true, "access_mode": "vpn-only"}), (409, "conflict")),
        (json!({"access_mode": "public", "public_api": false}), (409, "conflict")),
        (json!({"vpn_enabled": false, "public_api": false}), (409, "conflict")),
        (json!({"connection_limit": 0}), (400, "invalid_input")),
        (json!({"events_per_min": 0}), (400, "invalid_input")),
    ] {
        let (status, resp) = patch(&base, &c.key, "vpnco", body.clone()).await;
        assert_eq!((status, resp["error"].as_str()), (refusal.0, Some(refusal.1)), "{body}: {resp}");
        assert_eq!(last_audit(&c)["outcome"], "rejected", "{body} is audited");
    }
    assert_eq!(c.json(0, &["tenant", "get", "vpnco"]), before, "nothing changed");

    // Opening the tenant to every address stays possible, but only when asked for by name.
    let (status, opened) = patch(&base, &c.key, "vpnco", json!({"vpn_enabled": false, "access_mode": "public"})).await;
    assert_eq!(status, 200, "{opened}");
    assert_eq!(
        (&opened["access_mode"], &opened["vpn_enabled"], &opened["public_api"]),
        (&json!("public"), &json!(false), &json!(true))
    );
}

#[test]
fn create_and_update_agree_on_sql_server_and_access() {
    let c = Cluster::single();
    // Refused at create …
    let out = c.cli(0, &["tenant", "create", "--name", "msco", "--db", "mssql", "--isolation", "schema"]);
    assert!(!out.status.success() && stderr(&out).contains("database each"), "{}", stderr(&out));
    let out = c.cli(0, &["tenant", "create", "--name", "newco", "--access", "vpn-only", "--public-api", "true"]);
    assert!(!out.status.success() && stderr(&out).contains("public_api must be false"), "{}", stderr(&out));
    // … and at update, with the same words.
    c.ok(0, &["tenant", "create", "--name", "acme", "--access", "hybrid"]);
    let out = c.cli(0, &["tenant", "update", "acme", "--access", "vpn-only", "--public-api", "true"]);
    assert!(!out.status.success() && stderr(&out).contains("public_api must be false"), "{}", stderr(&out));
    // Switching the public API off narrows a hybrid tenant to vpn-only.
    let t = c.json(0, &["tenant", "update", "acme", "--public-api", "false"]);
    assert_eq!((&t["access_mode"], &t["public_api"]), (&json!("vpn-only"), &json!(false)), "{t}");
}
