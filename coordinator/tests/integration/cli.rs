//! The CLI and REST API as users meet them: exit codes, messages, JSON, and bad input that is
//! refused with a clear 4xx, audited, and changes nothing.

use crate::harness::{stderr, Cluster};
use serde_json::{json, Value};

fn audit_len(c: &Cluster) -> usize {
    c.json(0, &["audit", "list", "--limit", "100000"]).as_array().map(Vec::len).unwrap_or(0)
}

fn last_audit(c: &Cluster) -> Value {
    let v = c.json(0, &["audit", "list", "--limit", "1"]);
    v[0].clone()
}

#[test]
fn seed_create_command_and_json_output() {
    let c = Cluster::single();
    let t = c.json(
        0,
        &["tenant", "create", "--name", "acme", "--db-quota", "5GB", "--vpn", "enabled", "--public-api", "true"],
    );
    assert_eq!(t["name"], "acme");
    assert_eq!(t["db_quota"], "5GB");
    assert_eq!(t["db_quota_bytes"], 5_000_000_000u64);
    assert_eq!(t["vpn_enabled"], true);
    assert_eq!(t["public_api"], true);
    assert_eq!(t["access_mode"], "hybrid");
    assert_eq!(t["tier"], "free");
    assert_eq!(t["status"], "provisioning");
    assert_eq!(t["status_reason"], "no db node fits: no nodes are registered");
    assert_eq!(t["network"]["vpn_subnet"], "198.18.1.0/24");
    assert_eq!(t["network"]["interface"], "bqt1");
    assert_eq!(t["network"]["listen_port"], 51821);

    // The database login is shown once; the coordinator keeps only the SCRAM verifier.
    assert_eq!(t["db_user"], "tenant_acme_user");
    let password = t["db_password"].as_str().expect("password shown at create");
    assert_eq!(password.len(), 24);
    let got = c.json(0, &["tenant", "get", "acme"]);
    assert!(got.get("db_password").is_none(), "{got}");
    assert!(got.get("db_password_verifier").is_none(), "no verifier in API answers: {got}");
    let everything = c.ok(0, &["audit", "export", "--format", "jsonl"]);
    assert!(!everything.contains(password) && !everything.contains("SCRAM-SHA-256"), "no password material in audit");

    let table = c.ok(0, &["tenant", "get", "acme"]);
    assert!(table.contains("198.18.1.0/24") && table.contains("provisioning"), "{table}");
    let list = c.json(0, &["tenant", "list"]);
    assert_eq!(list.as_array().map(Vec::len), Some(1));

    let premium = c.json(0, &["tenant", "create", "--name", "globex", "--tier", "premium", "--access", "vpn-only"]);
    assert_eq!(premium["db_quota"], "1GB");
    assert_eq!(premium["connection_limit"], 20);
    let ms = c.json(0, &["tenant", "create", "--name", "msco", "--db", "mssql"]);
    assert_eq!((&ms["db_type"], &ms["isolation"]), (&Value::from("mssql"), &Value::from("database")), "{ms}");
    assert!(ms["db_password"].as_str().is_some_and(|p| p.len() == 24), "{ms}");
    let out = c.cli(0, &["tenant", "create", "--name", "msco2", "--db", "mssql", "--isolation", "schema"]);
    assert!(!out.status.success() && stderr(&out).contains("database each"), "{}", stderr(&out));
    c.json(0, &["tenant", "delete", "msco"]);
    c.json(0, &["tenant", "purge", "msco", "--force"]);
    c.json(0, &["tenant", "suspend", "globex"]);
    let names = |status: &str| -> Vec<String> {
        let v = c.json(0, &["tenant", "list", "--status", status]);
        v.as_array().into_iter().flatten().filter_map(|t| t["name"].as_str().map(str::to_string)).collect()
    };
    assert_eq!(names("suspended"), ["globex"]);
    assert_eq!(names("provisioning"), ["acme"], "no node agent here: acme waits for one");
    assert!(names("active").is_empty());
    c.json(0, &["tenant", "resume", "globex"]);

    let updated = c.json(0, &["tenant", "update", "acme", "--db-quota", "10GB", "--public-api", "false"]);
    assert_eq!(updated["db_quota"], "10GB");
    assert_eq!(updated["public_api"], false);

    let entry = last_audit(&c);
    assert_eq!(entry["action"], "tenant.update");
    assert_eq!(entry["outcome"], "ok");
    assert_eq!(entry["details"]["db_quota"], "10GB");
}

#[test]
fn invalid_tenant_input_is_refused_audited_and_changes_nothing() {
    let c = Cluster::single();
    c.ok(0, &["tenant", "create", "--name", "acme"]);
    let before = c.json(0, &["tenant", "list"]);
    let cases: &[(&[&str], &str)] = &[
        (&["--name", "Acme"], "must start with a lowercase letter"),
        (&["--name", "acme;drop"], "may contain only lowercase letters"),
        (&["--name", "acme$(id)"], "may contain only lowercase letters"),
        (&["--name", "a234567890123456789012345678901x"], "2 to 31 characters"),
        (&["--name", "public"], "reserved"),
        (&["--name", "pg_shadow"], "reserved"),
        (&["--name", "postgres"], "reserved"),
        (&["--name", "acme"], "already exists"),
        (&["--name", "newco", "--db-quota", "5XB"], "unknown unit"),
        (&["--name", "newco", "--db-quota", "0GB"], "greater than zero"),
        (&["--name", "newco", "--connection-limit", "0"], "connection limit must be between"),
        (&["--name", "newco", "--vpn", "disabled", "--access", "vpn-only"], "needs the VPN enabled"),
    ];
    for (args, expected) in cases {
        let n = audit_len(&c);
        let mut all = vec!["tenant", "create"];
        all.extend_from_slice(args);
        let out = c.cli(0, &all);
        assert_eq!(out.status.code(), Some(1), "{args:?} must exit 1");
        let err = stderr(&out);
        assert!(err.starts_with("error: ") && err.contains(expected), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one-line reason: {err}");
        assert_eq!(audit_len(&c), n + 1, "{args:?} is audited");
        let entry = last_audit(&c);
        assert_eq!(entry["outcome"], "rejected", "{entry}");
        assert_eq!(entry["action"], "tenant.create");
    }
    assert_eq!(c.json(0, &["tenant", "list"]), before, "nothing changed");
}

#[test]
fn lifecycle_delete_restore_purge() {
    let c = Cluster::single();
    c.ok(0, &["tenant", "create", "--name", "acme"]);
    assert_eq!(c.json(0, &["tenant", "suspend", "acme"])["status"], "suspended");
    assert_eq!(c.json(0, &["tenant", "resume", "acme"])["status"], "provisioning");
    let deleted = c.json(0, &["tenant", "delete", "acme"]);
    assert_eq!(deleted["status"], "deleted-pending-purge");
    assert!(deleted["purge_after_ms"].as_u64() > deleted["deleted_at_ms"].as_u64());
    assert_eq!(c.json(0, &["tenant", "restore", "acme"])["status"], "provisioning");
    c.ok(0, &["tenant", "delete", "acme"]);
    let early = c.cli(0, &["tenant", "purge", "acme"]);
    assert_eq!(early.status.code(), Some(1));
    assert!(stderr(&early).contains("has no backup") && stderr(&early).contains("(409)"), "{}", stderr(&early));
    c.ok(0, &["tenant", "purge", "acme", "--force"]);
    let gone = c.cli(0, &["tenant", "get", "acme"]);
    assert!(stderr(&gone).contains("tenant acme not found (404)"), "{}", stderr(&gone));
    // The purged index is free again.
    let t = c.json(0, &["tenant", "create", "--name", "globex"]);
    assert_eq!(t["network"]["index"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn rest_api_refuses_bad_requests_with_json_errors() {
    let c = Cluster::single();
    let base = c.nodes[0].endpoint();
    let http = reqwest::Client::new();
    let admin = c.key.clone();
    c.ok(0, &["tenant", "create", "--name", "acme"]);
    c.ok(0, &["tenant", "create", "--name", "globex"]);
    let customer = c.json(0, &["apikey", "create", "--role", "customer", "--tenant", "acme"]);
    let customer = customer["token"].as_str().expect("token").to_string();
    let auditor = c.json(0, &["apikey", "create", "--role", "auditor"]);
    let auditor = auditor["token"].as_str().expect("token").to_string();
    let revoked = c.json(0, &["apikey", "create", "--role", "admin"]);
    let revoked_id = revoked["key"]["id"].as_str().expect("id").to_string();
    let revoked = revoked["token"].as_str().expect("token").to_string();
    c.ok(0, &["apikey", "revoke", &revoked_id]);
    let tenants_before = c.json(0, &["tenant", "list"]);

    let seed_body = json!({"name": "newco", "db_quota": "5GB", "vpn_enabled": true, "public_api": true});
    struct Case {
        method: reqwest::Method,
        path: &'static str,
        key: Option<String>,
        body: Option<Vec<u8>>,
        status: u16,
        code: &'static str,
    }
    let big = vec![b' '; 200 * 1024];
    let cases = vec![
        Case {
            method: reqwest::Method::POST,
            path: "/api/v1/tenant",
            key: None,
            body: Some(seed_body.to_string().into_bytes()),
            status: 401,
            code: "unauthorized",
        },
        Case {
            method: reqwest::Method::POST,
            path: "/api/v1/tenant",
            key: Some("bqk_0123456789abcdef_".to_string() + &"0".repeat(64)),
            body: Some(seed_body.to_string().into_bytes()),
            status: 401,
            code: "unauthorized",
        },
        Case {
            method: reqwest::Method::POST,
            path: "/api/v1/tenant",
            key: Some("garbage".into()),
            body: Some(seed_body.to_string().into_bytes()),
            status: 401,
            code: "unauthorized",
        },
        Case {
            method: reqwest::Method::POST,
            path: "/api/v1/tenant",
            key: Some(revoked.clone()),
            body: Some(seed_body.to_string().into_bytes()),
            status: 401,
            code: "unauthorized",
        },
        Case {
            method: reqwest::Method::POST,
            path: "/api/v1/tenant",
            key: Some(customer.clone()),
            body: Some(seed_body.to_string().into_bytes()),
            status: 403,
            code: "forbidden",
        },
        Case {
            method: reqwest::Method::GET,
            path: "/api/v1/tenant/globex",
            key: Some(customer.clone()),
            body: None,
            status: 403,
            code: "forbidden",
        },
        Case {
            method: reqwest::Method::DELETE,
            path: "/api/v1/tenant/globex",
            key: Some(auditor.clone()),
            body: None,
            status: 403,
            code: "forbidden",
        },
        Case {
            method: reqwest::Method::POST,
            path: "/api/v1/tenant",
            key: Some(admin.clone()),
            body: Some(br#"{"name":"newco","db_quota":"5GB","colour":"red"}"#.to_vec()),
            status: 400,
            code: "invalid_input",
        },
        Case {
            method: reqwest::Method::POST,
            path: "/api/v1/tenant",
            key: Some(admin.clone()),
            body: Some(b"{not json".to_vec()),
            status: 400,
            code: "invalid_input",
        },
        Case {
            method: reqwest::Method::POST,
            path: "/api/v1/tenant",
            key: Some(admin.clone()),
            body: Some(br#"{"name":"newco","db_quota":"lots"}"#.to_vec()),
            status: 400,
            code: "invalid_input",
        },
        Case {
            method: reqwest::Method::POST,
            path: "/api/v1/tenant",
            key: Some(admin.clone()),
            body: Some(big),
            status: 413,
            code: "body_too_large",
        },
        Case {
            method: reqwest::Method::PATCH,
            path: "/api/v1/tenant/acme",
            key: Some(admin.clone()),
            body: Some(br#"{"name":"renamed"}"#.to_vec()),
            status: 400,
            code: "invalid_input",
        },
        Case {
            method: reqwest::Method::GET,
            path: "/api/v1/tenant/nosuch",
            key: Some(admin.clone()),
            body: None,
            status: 404,
            code: "not_found",
        },
        Case {
            method: reqwest::Method::GET,
            path: "/api/v1/tenant/Bad%27Name",
            key: Some(admin.clone()),
            body: None,
            status: 400,
            code: "invalid_input",
        },
        Case {
            method: reqwest::Method::GET,
            path: "/api/v1/tenants?status=bogus",
            key: Some(admin.clone()),
            body: None,
            status: 400,
            code: "invalid_input",
        },
    ];
    let refused = || async {
        let stats: Value = http
            .get(format!("{base}/api/v1/refusals"))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("json");
        stats["refused_total"].as_u64().expect("refused_total")
    };
    for case in cases {
        let n = audit_len(&c);
        let refused_before = refused().await;
        let mut req = http.request(case.method.clone(), format!("{base}{}", case.path));
        if let Some(k) = &case.key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = case.body.clone() {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.expect("JSON error body");
        assert_eq!(
            (status, body["error"].as_str()),
            (case.status, Some(case.code)),
            "{} {}: {body}",
            case.method,
            case.path
        );
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
        if case.status == 401 {
            // No valid key: counted for the source; only its first refusal in a window is
            // written as itself, the rest go into one summary entry.
            assert_eq!(refused().await, refused_before + 1, "{} {} is counted", case.method, case.path);
            assert!(audit_len(&c) <= n + 1, "{} {} costs at most the source's one entry", case.method, case.path);
        } else if case.status != 404 {
            assert_eq!(audit_len(&c), n + 1, "{} {} is audited", case.method, case.path);
            assert_eq!(last_audit(&c)["outcome"], "rejected");
        }
    }
    assert_eq!(c.json(0, &["tenant", "list"]), tenants_before, "nothing changed");

    // The customer sees its own tenant only; the auditor reads the audit trail but not tenants.
    let own = http.get(format!("{base}/api/v1/tenant/acme")).bearer_auth(&customer).send().await.expect("get");
    assert_eq!(own.status().as_u16(), 200);
    let list: Value = http
        .get(format!("{base}/api/v1/tenants"))
        .bearer_auth(&customer)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    // The summary rows (the panel's lists) follow the same rule: the customer's one tenant, and
    // for an admin a row for every tenant of the full list.
    let summary = |key: String| {
        let http = http.clone();
        let url = format!("{base}/api/v1/tenants/summary");
        async move {
            let resp = http.get(url).bearer_auth(key).send().await.expect("summary");
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, rows) = summary(customer.clone()).await;
    assert_eq!(status, 200, "{rows}");
    let rows = rows.as_array().expect("rows").clone();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0]["name"].as_str(), rows[0]["status"].is_string()), (Some("acme"), true), "{rows:?}");
    assert!(rows[0]["db_password_verifier"].is_null() && rows[0]["network"].is_null(), "a summary, not the tenant");
    let (status, rows) = summary(c.key.clone()).await;
    assert_eq!(status, 200, "{rows}");
    let names = |v: &Value| -> Vec<String> {
        v.as_array().into_iter().flatten().filter_map(|t| t["name"].as_str().map(str::to_owned)).collect()
    };
    assert_eq!(names(&rows), names(&c.json(0, &["tenant", "list"])));
    assert_eq!(summary(auditor.clone()).await.0, 403, "an auditor lists no tenants");
    let audit = http.get(format!("{base}/api/v1/audit")).bearer_auth(&auditor).send().await.expect("audit");
    assert_eq!(audit.status().as_u16(), 200);

    // The OpenAPI document is generated from the code and names the seed's endpoints.
    let doc: Value =
        http.get(format!("{base}/api/v1/openapi.json")).send().await.expect("openapi").json().await.expect("json");
    for path in [
        "/api/v1/tenant",
        "/api/v1/tenant/{name}",
        "/api/v1/tenants",
        "/api/v1/tenants/summary",
        "/api/v1/cluster",
        "/api/v1/audit",
    ] {
        assert!(doc["paths"][path].is_object(), "openapi lacks {path}");
    }
    assert!(doc["paths"]["/api/v1/tenant/{name}"]["patch"].is_object());
    assert!(doc["paths"]["/api/v1/tenant/{name}"]["delete"].is_object());
}

#[test]
fn cli_without_key_or_coordinator_fails_with_one_line() {
    let c = Cluster::single();
    let out = c.cli_as(0, "", &["tenant", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("(401)"), "{}", stderr(&out));
    let out = berqenas_tests::run(
        std::path::Path::new(crate::harness::BIN),
        &["tenant", "list", "--endpoint", "http://127.0.0.1:1"],
        &[("BERQENAS_API_KEY", &c.key)],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot reach coordinator"), "{}", stderr(&out));
}

#[test]
fn audit_list_filters_and_export_is_jsonl() {
    let c = Cluster::single();
    c.ok(0, &["tenant", "create", "--name", "acme"]);
    c.ok(0, &["tenant", "create", "--name", "globex"]);
    c.ok(0, &["tenant", "suspend", "acme"]);
    let acme = c.json(0, &["audit", "list", "--tenant", "acme"]);
    let actions: Vec<&str> = acme.as_array().into_iter().flatten().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(actions, vec!["tenant.create", "tenant.suspend"]);
    let future = c.json(0, &["audit", "list", "--since", "2999-01-01T00:00:00Z"]);
    assert_eq!(future.as_array().map(Vec::len), Some(0));
    let recent = c.json(0, &["audit", "list", "--since", "1h"]);
    assert_eq!(recent.as_array().map(Vec::len), Some(4));
    let bad = c.cli(0, &["audit", "list", "--since", "yesterday-ish"]);
    assert_eq!(bad.status.code(), Some(1));
    let export = c.ok(0, &["audit", "export", "--format", "jsonl"]);
    let lines: Vec<Value> = export.lines().map(|l| serde_json::from_str(l).expect("each line is JSON")).collect();
    assert!(lines.len() >= 5, "{export}");
    assert_eq!(lines[0]["action"], "cluster.init");
    assert_eq!(lines[1]["prev_hash"], lines[0]["hash"]);
    for l in &lines {
        let text = l.to_string();
        assert!(!text.contains(&c.key), "no secrets in the audit trail");
    }
}

#[test]
fn create_wait_reports_why_the_tenant_is_not_ready() {
    let c = Cluster::single();
    let out = c.cli(0, &["tenant", "create", "--name", "acme", "--wait", "--wait-timeout", "1s"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("waiting for acme: provisioning: no db node fits"), "progress shown: {err}");
    assert!(
        err.contains(
            "error: tenant acme is not active after 1s: provisioning: no db node fits: no nodes are registered"
        ),
        "{err}"
    );
    // The tenant was created all the same.
    assert_eq!(c.json(0, &["tenant", "get", "acme"])["status"], "provisioning");
}
