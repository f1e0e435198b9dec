//! Devices publishing over HTTP (`POST /v1/tenants/{t}/events`) and devices in public mode (no
//! VPN: certificate + a customer key of the tenant + the fingerprint recorded at enrollment),
//! against a throwaway PostgreSQL with tenants made by the agent's driver and the realtime
//! module on loopback (`crate::realtime::env`). The attacks are made for real: the same
//! certificate and key used with another fingerprint, another tenant's key, another tenant in
//! the path, no certificate.

use crate::realtime::{env, runtime};
use berqenas_proto::realtime::{Event, PublishRequest};
use berqenas_tests::realtime::{customer_key, device, event, http_with, ingest, public_device, serve, tenant, uuid};
use std::sync::Arc;
use tonic::Code;

async fn count(db: &sqlx::PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db).await.expect(sql)
}

/// POSTs `body` to `tenant`'s events with `headers`; (status, Retry-After, JSON body).
async fn post(
    http: &reqwest::Client,
    port: u16,
    tenant: &str,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> (u16, Option<String>, serde_json::Value) {
    let mut req = http
        .post(format!("https://127.0.0.1:{port}/v1/tenants/{tenant}/events"))
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("post");
    let status = resp.status().as_u16();
    let retry = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
    let body = resp.json().await.unwrap_or(serde_json::Value::Null);
    (status, retry, body)
}

fn one(id: &str) -> String {
    serde_json::json!({"id": id, "type": "temp", "payload": {"c": 21.5}}).to_string()
}

/// Publishes one batch over gRPC with `metadata`; the acks or the status the stream ended with.
async fn grpc(
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    metadata: &[(&'static str, &str)],
    events: Vec<Event>,
) -> Result<Vec<Vec<String>>, tonic::Status> {
    let mut client = ingest(port, tls).await;
    let mut req = tonic::Request::new(tokio_stream::iter(vec![PublishRequest { events }]));
    for (k, v) in metadata {
        req.metadata_mut().insert(*k, v.parse().expect("metadata"));
    }
    let mut acks = client.publish(req).await?.into_inner();
    let mut out = Vec::new();
    while let Some(a) = acks.message().await? {
        out.push(a.ids);
    }
    Ok(out)
}

/// Announces a body of `len` bytes with `Expect: 100-continue` and returns what the server
/// answers before any of it is sent.
async fn too_large_head(port: u16, tls: Arc<rustls::ClientConfig>, len: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = (*tls).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.expect("tls");
    let head = format!(
        "POST /v1/tenants/acme/events HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         content-length: {len}\r\nexpect: 100-continue\r\nconnection: close\r\n\r\n"
    );
    tls.write_all(head.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), tls.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "answered without the body");
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn realtime_http_publish_stores_once_keeps_devices_in_their_tenant_and_answers_quota_with_retry_after() {
    runtime().block_on(async {
        let acme = tenant("acme", 1, &["plc-1"], &[], 1_000_000);
        let globex = tenant("globex", 2, &["plc-1"], &[], 5);
        let e = env(&[acme.clone(), globex.clone()]).await;
        let (_rt, port, _server) = serve(&e.pki, &e.url, &[acme, globex]).await;
        let plc1 = http_with(&e.pki.client(Some(&device("acme", "plc-1"))));
        let acme_rows = "SELECT count(*) FROM tenant_acme.events WHERE device_id = 'plc-1'";

        // One event: acknowledged with its id after commit, stored once however often resent.
        let id = uuid();
        let (status, _, body) = post(&plc1, port, "acme", &[], one(&id)).await;
        assert_eq!((status, body["ids"].clone()), (200, serde_json::json!([id])));
        assert_eq!(count(&e.db, acme_rows).await, 1);
        assert_eq!(post(&plc1, port, "acme", &[], one(&id)).await.0, 200, "a resend is acknowledged");
        assert_eq!(count(&e.db, acme_rows).await, 1, "and never duplicated");
        let payload: serde_json::Value =
            sqlx::query_scalar("SELECT payload FROM tenant_acme.events WHERE id = $1::text::uuid")
                .bind(&id)
                .fetch_one(&e.db)
                .await
                .expect("row");
        assert_eq!(payload["c"], 21.5);
        // A batch.
        let batch = serde_json::json!({"events": [
            {"id": uuid(), "type": "a", "payload": 1, "created_at_ms": 1_767_225_600_000_i64},
            {"id": uuid(), "type": "b", "payload": "x"},
        ]});
        let (status, _, body) = post(&plc1, port, "acme", &[], batch.to_string()).await;
        assert_eq!((status, body["ids"].as_array().map(Vec::len)), (200, Some(2)));
        assert_eq!(count(&e.db, acme_rows).await, 3);

        // Another tenant in the path: refused, nothing written anywhere.
        let (status, _, body) = post(&plc1, port, "globex", &[], one(&uuid())).await;
        assert_eq!(status, 403, "{body}");
        assert!(body["error"].is_string());
        // No client certificate: refused.
        let anonymous = http_with(&e.pki.client(None));
        let (status, _, body) = post(&anonymous, port, "acme", &[], one(&uuid())).await;
        assert_eq!(status, 401, "{body}");
        // A device not in the assignment.
        let stranger = http_with(&e.pki.client(Some(&device("acme", "plc-9"))));
        assert_eq!(post(&stranger, port, "acme", &[], one(&uuid())).await.0, 403);

        // Bad input: a clear JSON error, nothing stored.
        let bad = |b: &str| b.to_string();
        for (body, want) in [
            (bad("not json"), 400),
            (bad("[]"), 400),
            (serde_json::json!({"id": uuid(), "type": "t", "payload": 1, "device_id": "plc-2"}).to_string(), 400),
            (serde_json::json!({"id": "not-a-uuid", "type": "t", "payload": 1}).to_string(), 400),
            (serde_json::json!({"id": uuid(), "type": "", "payload": 1}).to_string(), 400),
            (serde_json::json!({"id": uuid(), "type": "t", "payload": "a".repeat(70_000)}).to_string(), 413),
            (serde_json::json!({"events": []}).to_string(), 400),
        ] {
            let (status, _, answer) = post(&plc1, port, "acme", &[], body.clone()).await;
            assert_eq!(status, want, "{}: {answer}", &body[..body.len().min(80)]);
            assert!(answer["error"].is_string(), "a JSON error: {answer}");
        }
        // Larger than a request may be: refused from its Content-Length, before the body is
        // sent (`Expect: 100-continue`, as curl does for large bodies).
        let head = too_large_head(port, e.pki.client(Some(&device("acme", "plc-1"))), 5 * 1024 * 1024).await;
        assert!(head.starts_with("HTTP/1.1 413"), "{head}");
        assert!(head.contains("\"error\""), "a JSON error: {head}");
        assert_eq!(count(&e.db, acme_rows).await, 3, "refused bodies store nothing");
        assert_eq!(count(&e.db, "SELECT count(*) FROM tenant_globex.events").await, 0);

        // Over globex's quota (5/min): 429 with Retry-After, over HTTP and gRPC alike.
        let g = e.pki.client(Some(&device("globex", "plc-1")));
        let g_http = http_with(&g);
        let five: Vec<serde_json::Value> =
            (0..5).map(|_| serde_json::json!({"id": uuid(), "type": "t", "payload": 1})).collect();
        let (status, _, _) = post(&g_http, port, "globex", &[], serde_json::json!({"events": five}).to_string()).await;
        assert_eq!(status, 200);
        let (status, retry, body) = post(&g_http, port, "globex", &[], one(&uuid())).await;
        assert_eq!(status, 429, "{body}");
        let secs: u64 = retry.expect("Retry-After").parse().expect("seconds");
        assert!((1..=60).contains(&secs), "Retry-After {secs}: one event frees within 12 s at 5/min");
        let refused = grpc(port, g.clone(), &[], vec![event(&uuid(), "t", "1")]).await.expect_err("over quota");
        assert_eq!(refused.code(), Code::ResourceExhausted);
        let hint: u64 =
            refused.metadata().get("retry-after").expect("retry hint").to_str().expect("ascii").parse().expect("secs");
        assert!((1..=60).contains(&hint));
        assert_eq!(count(&e.db, "SELECT count(*) FROM tenant_globex.events").await, 5);
    });
}

/// SHA-256 hex stand-ins for a device's machine id and interface MACs.
const MACHINE: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const MAC: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const OTHER: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

#[test]
fn realtime_public_devices_publish_only_with_their_tenants_key_and_enrolled_fingerprint() {
    runtime().block_on(async {
        let (key_a, sub_a) = customer_key(0xa1);
        let (key_b, sub_b) = customer_key(0xb2);
        let mut acme = tenant("acme", 1, &["plc-1", "edge-1"], &[sub_a], 1_000_000);
        acme.db.public_devices = vec![public_device("edge-1", &[MAC], MACHINE)];
        // globex has no public API: its public-mode device is refused whatever it presents.
        let mut globex = tenant("globex", 2, &["edge-9"], &[sub_b], 1_000_000);
        globex.db.public_api = false;
        globex.db.public_devices = vec![public_device("edge-9", &[MAC], MACHINE)];
        let e = env(&[acme.clone(), globex.clone()]).await;
        let (_rt, port, _server) = serve(&e.pki, &e.url, &[acme, globex]).await;
        let rows = "SELECT count(*) FROM tenant_acme.events WHERE device_id = 'edge-1'";

        // The device's certificate and key; the thief below uses exactly these.
        let edge_tls = e.pki.client(Some(&device("acme", "edge-1")));
        let edge = http_with(&edge_tls);
        let bearer_a = format!("Bearer {key_a}");
        let bearer_b = format!("Bearer {key_b}");
        let live = format!("machine-id={MACHINE}; macs={OTHER},{MAC}");
        let elsewhere = format!("machine-id={OTHER}; macs={OTHER}");
        let fp = "x-berqenas-fingerprint";

        // The legitimate device: key + live fingerprint (an added interface is fine): stored.
        let (status, _, body) =
            post(&edge, port, "acme", &[("authorization", &bearer_a), (fp, &live)], one(&uuid())).await;
        assert_eq!(status, 200, "{body}");
        let acks =
            grpc(port, edge_tls.clone(), &[("authorization", &bearer_a), (fp, &live)], vec![event(&uuid(), "t", "1")])
                .await
                .expect("gRPC in public mode");
        assert_eq!(acks.len(), 1);
        assert_eq!(count(&e.db, rows).await, 2);

        // Stolen certificate and key, used on another machine: its fingerprint differs.
        let thief = http_with(&edge_tls);
        let (status, _, body) =
            post(&thief, port, "acme", &[("authorization", &bearer_a), (fp, &elsewhere)], one(&uuid())).await;
        assert_eq!(status, 403, "{body}");
        let refused = grpc(
            port,
            edge_tls.clone(),
            &[("authorization", &bearer_a), (fp, &elsewhere)],
            vec![event(&uuid(), "t", "1")],
        )
        .await
        .expect_err("another machine");
        assert_eq!(refused.code(), Code::PermissionDenied);
        // …or no fingerprint at all, or no key.
        assert_eq!(post(&thief, port, "acme", &[("authorization", &bearer_a)], one(&uuid())).await.0, 403);
        assert_eq!(post(&thief, port, "acme", &[(fp, &live)], one(&uuid())).await.0, 403);
        let refused =
            grpc(port, edge_tls.clone(), &[(fp, &live)], vec![event(&uuid(), "t", "1")]).await.expect_err("no key");
        assert_eq!(refused.code(), Code::PermissionDenied);
        // The right fingerprint with another tenant's key.
        let (status, _, body) =
            post(&edge, port, "acme", &[("authorization", &bearer_b), (fp, &live)], one(&uuid())).await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(count(&e.db, rows).await, 2, "no refused publish stored anything");

        // A VPN device of the same tenant still needs only its certificate.
        let plc = http_with(&e.pki.client(Some(&device("acme", "plc-1"))));
        assert_eq!(post(&plc, port, "acme", &[], one(&uuid())).await.0, 200);

        // A tenant without public_api refuses public-mode publishing, key and fingerprint right.
        let edge9_tls = e.pki.client(Some(&device("globex", "edge-9")));
        let (status, _, body) =
            post(&http_with(&edge9_tls), port, "globex", &[("authorization", &bearer_b), (fp, &live)], one(&uuid()))
                .await;
        assert_eq!(status, 403, "{body}");
        let refused =
            grpc(port, edge9_tls, &[("authorization", &bearer_b), (fp, &live)], vec![event(&uuid(), "t", "1")])
                .await
                .expect_err("public_api off");
        assert_eq!(refused.code(), Code::PermissionDenied);
        assert_eq!(count(&e.db, "SELECT count(*) FROM tenant_globex.events").await, 0);
    });
}

/// A state directory as a public enrollment leaves it: the certificate of `acme/edge-1` from
/// the test CA, the ingest at `port`, no tunnel (pending, coordinator unreachable).
fn public_state(dir: &std::path::Path, ca: &berqenas_pki::ClusterCa, port: u16) -> std::path::PathBuf {
    let state = dir.join("edge-state");
    std::fs::create_dir_all(&state).expect("state dir");
    let key = berqenas_pki::new_key_and_csr("berqenas device").expect("csr");
    let cert = ca
        .sign_csr(
            &key.csr_pem,
            &device("acme", "edge-1"),
            &[],
            std::time::SystemTime::now(),
            std::time::Duration::from_secs(3600),
        )
        .expect("sign");
    std::fs::write(state.join("tls.pem"), format!("{}{}{}", key.key_pem, cert, ca.cert_pem)).expect("tls");
    std::fs::write(state.join("ca.pem"), &ca.cert_pem).expect("ca");
    let device = serde_json::json!({
        "tenant": "acme", "device_id": "edge-1", "device_name": "edge1", "state": "pending",
        "tunnel": {
            "address": "198.18.1.10", "subnet": "198.18.1.0/24", "gateway_address": "198.18.1.1",
            "gateway_public_key": "", "endpoint": "", "keepalive_seconds": 25, "source_keep": false
        },
        "realtime_endpoint": format!("127.0.0.1:{port}"),
        "coordinators": [format!("127.0.0.1:{}", berqenas_tests::free_port())],
        "labels": {}, "interface": "bqd0"
    });
    std::fs::write(state.join("device.json"), device.to_string()).expect("device.json");
    std::fs::write(state.join("wg.key"), "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n").expect("wg.key");
    state
}

/// `berqenas-device send` with `env`; (success, stderr).
async fn device_send(state: &std::path::Path, env: &[(&str, &str)]) -> (bool, String) {
    let bin = berqenas_tests::workspace_bin("berqenas-device");
    let state = state.to_str().expect("utf-8").to_string();
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let out = tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        berqenas_tests::run(
            &bin,
            &["--state-dir", &state, "send", "--type", "reading", "--payload", r#"{"n":1}"#],
            &env,
        )
    })
    .await
    .expect("send");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn device_client_in_public_mode_publishes_with_its_key_file_and_live_fingerprint() {
    runtime().block_on(async {
        // The fingerprint this machine has is the one "enrolled".
        let out = berqenas_tests::run(&berqenas_tests::workspace_bin("berqenas-device"), &["fingerprint"], &[]);
        let fp: serde_json::Value = serde_json::from_slice(&out.stdout).expect("fingerprint JSON");
        let macs: Vec<&str> = fp["mac_hashes"].as_array().expect("macs").iter().filter_map(|m| m.as_str()).collect();
        let machine = fp["machine_id_hash"].as_str().expect("machine id hash");
        assert!(!macs.is_empty() || !machine.is_empty(), "this machine has neither MACs nor a machine id: {fp}");
        let (key_a, sub_a) = customer_key(0xa1);
        let (key_b, sub_b) = customer_key(0xb2);
        let mut acme = tenant("acme", 1, &["edge-1"], &[sub_a], 1_000_000);
        acme.db.public_devices = vec![public_device("edge-1", &macs, machine)];
        let globex = tenant("globex", 2, &[], &[sub_b], 1_000_000);
        let e = env(&[acme.clone(), globex.clone()]).await;
        let (_rt, port, _server) = serve(&e.pki, &e.url, &[acme, globex]).await;
        let state = public_state(e.tmp.path(), &e.pki.ca, port);
        let rows = "SELECT count(*) FROM tenant_acme.events WHERE device_id = 'edge-1'";
        let no_env: &[(&str, &str)] = &[("BERQENAS_DEVICE_API_KEY", ""), ("BERQENAS_DEVICE_API_KEY_FILE", "")];

        // No key: refused by the ingest; the event stays in the spool.
        let (ok, stderr) = device_send(&state, no_env).await;
        assert!(!ok && stderr.contains("PermissionDenied"), "{stderr}");
        assert_eq!(count(&e.db, rows).await, 0);
        // Another tenant's key (from the environment): refused.
        let (ok, stderr) = device_send(&state, &[("BERQENAS_DEVICE_API_KEY", &key_b)]).await;
        assert!(!ok && stderr.contains("PermissionDenied"), "{stderr}");
        // A key file others can read is not used.
        let key_file = state.join("api-key");
        std::fs::write(&key_file, format!("{key_a}\n")).expect("key file");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let (ok, stderr) = device_send(&state, no_env).await;
        assert!(!ok && stderr.contains("chmod 600"), "{stderr}");
        assert_eq!(count(&e.db, rows).await, 0);
        // The key file 0600 and the live fingerprint: this event and the three kept are stored.
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let (ok, stderr) = device_send(&state, no_env).await;
        assert!(ok, "{stderr}");
        assert_eq!(count(&e.db, rows).await, 4);
    });
}
