//! Anonymous floods against real coordinator processes: keyless requests, bare TCP connects,
//! garbage TLS and bogus joins cost a handful of summarised audit entries, not one each; keys
//! are rate limited with 429 + Retry-After; stalled request heads are cut off.

use crate::harness::Cluster;
use berqenas_proto::node::node_client::NodeClient;
use berqenas_proto::node::JoinRequest;
use berqenas_tests::wait_for;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

const KEYLESS: usize = 600;
const CONNECTS: usize = 150;
const GARBAGE: usize = 30;
const JOINS: usize = 20;

async fn get(http: &reqwest::Client, url: &str, key: &str) -> Value {
    http.get(url).bearer_auth(key).send().await.expect("request").json().await.expect("JSON")
}

/// Audit entries after `seq`, every page.
async fn audit_after(http: &reqwest::Client, base: &str, key: &str, mut seq: u64) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let page = get(http, &format!("{base}/api/v1/audit?after={seq}"), key).await;
        let page = page.as_array().cloned().unwrap_or_default();
        if page.is_empty() {
            return out;
        }
        seq = page.iter().filter_map(|e| e["seq"].as_u64()).max().unwrap_or(seq);
        out.extend(page);
    }
}

/// How many refusals an anonymous entry stands for: 1 for a sample, N for a summary.
fn refusals_in(e: &Value) -> u64 {
    if e["action"] == "anonymous.refused" {
        let reason = e["details"]["reason"].as_str().unwrap_or("");
        reason.split_whitespace().next().unwrap_or("0").replace(',', "").parse().unwrap_or(0)
    } else {
        1
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_flood_adds_no_raft_entries() {
    let c = Cluster::single_with(&["--refusal-audit-every", "2s"]);
    let base = c.nodes[0].endpoint();
    let http = reqwest::Client::new();
    let pin =
        c.json(0, &["node", "token", "create", "--roles", "db"])["ca_fingerprint"].as_str().expect("pin").to_string();
    let cluster = get(&http, &format!("{base}/api/v1/cluster"), &c.key).await;
    let index_before = cluster["last_log_index"].as_u64().expect("log index");
    let seq_before = get(&http, &format!("{base}/api/v1/audit/verify"), &c.key).await["total"].as_u64().expect("total");
    let started = Instant::now();

    // Keyless and forged-key requests: 401 until the source's bucket is empty, then 429.
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    let mut retry_after = None;
    for i in 0..KEYLESS {
        let mut req = http.get(format!("{base}/api/v1/tenants"));
        if i % 2 == 1 {
            req = req.bearer_auth(format!("bqk_0123456789abcdef_{}", "0".repeat(64)));
        }
        let resp = req.send().await.expect("request");
        if resp.status().as_u16() == 429 {
            retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
        }
        *statuses.entry(resp.status().as_u16()).or_default() += 1;
    }
    assert_eq!(statuses.values().sum::<usize>(), KEYLESS);
    assert!(statuses.keys().all(|s| *s == 401 || *s == 429), "{statuses:?}");
    assert!(statuses.get(&429).is_some_and(|n| *n > KEYLESS / 2), "the source is throttled: {statuses:?}");
    assert!(retry_after.as_deref().and_then(|s| s.parse::<u64>().ok()).is_some_and(|s| s >= 1), "{retry_after:?}");

    // Bare connect-and-close on the Raft and node ports, and garbage instead of a ClientHello.
    let (raft, node) = (c.nodes[0].raft, c.nodes[0].node);
    for i in 0..CONNECTS {
        let port = if i % 2 == 0 { raft } else { node };
        drop(TcpStream::connect(("127.0.0.1", port)).expect("connect"));
    }
    for _ in 0..GARBAGE {
        let mut s = TcpStream::connect(("127.0.0.1", node)).expect("connect");
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = s.read(&mut [0u8; 64]);
    }
    // Bogus joins with well-formed tokens nobody issued. The source is over its limit by now, so
    // let its bucket refill enough for a TLS session first.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let pinned = Arc::new(RwLock::new(Arc::new(berqenas_pki::pinned_client_config(&pin).expect("tls"))));
    let node_addr = format!("127.0.0.1:{node}");
    let mut client = NodeClient::new(berqenas_coordinator::transport::channel(&node_addr, pinned).expect("channel"));
    let kc = berqenas_pki::new_key_and_csr("n").expect("csr");
    let mut join_codes = Vec::new();
    for i in 0..JOINS {
        let token = format!("bqj_{i:016x}_{}", "ab".repeat(32));
        let req = JoinRequest {
            token,
            csr_pem: kc.csr_pem.clone(),
            roles: vec!["db".into()],
            labels: Default::default(),
            address: "127.0.0.1".into(),
            capacity: None,
            ..Default::default()
        };
        let status = client.join(req).await.expect_err("a bogus token is refused");
        join_codes.push(status.code());
    }
    assert!(
        join_codes.iter().all(|c| matches!(c, tonic::Code::InvalidArgument | tonic::Code::ResourceExhausted)),
        "{join_codes:?}"
    );
    let attempts = (KEYLESS + CONNECTS + GARBAGE + JOINS) as u64;

    // Every attempt is accounted for in the trail, in a handful of entries.
    let deadline = Instant::now() + Duration::from_secs(20);
    let entries = loop {
        let entries = audit_after(&http, &base, &c.key, seq_before).await;
        let counted: u64 = entries.iter().filter(|e| e["actor"] == "anonymous").map(refusals_in).sum();
        if counted >= attempts || Instant::now() > deadline {
            assert_eq!(counted, attempts, "every refusal is counted exactly once: {entries:#?}");
            break entries;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let windows = started.elapsed().as_secs() / 2 + 2;
    assert!(entries.len() as u64 <= windows, "{} entries for {attempts} refusals in {windows} windows", entries.len());
    assert!(entries.iter().all(|e| e["actor"] == "anonymous" && e["source"] == "127.0.0.1"), "{entries:#?}");
    let summary = entries.iter().find(|e| e["action"] == "anonymous.refused").expect("a summary entry");
    let reason = summary["details"]["reason"].as_str().expect("reason");
    assert!(reason.contains("refused anonymous requests from 127.0.0.1"), "{reason}");
    assert_eq!(summary["target"], "source/127.0.0.1");

    let index_after =
        get(&http, &format!("{base}/api/v1/cluster"), &c.key).await["last_log_index"].as_u64().expect("index");
    assert_eq!(index_after - index_before, entries.len() as u64, "one Raft entry per audit entry, nothing else");

    let stats = get(&http, &format!("{base}/api/v1/refusals"), &c.key).await;
    assert!(stats["refused_total"].as_u64().is_some_and(|n| n >= attempts), "{stats}");
}

#[tokio::test(flavor = "multi_thread")]
async fn per_key_rate_limit_answers_429_with_retry_after() {
    let c = Cluster::single_with(&["--key-rate", "2", "--key-burst", "10"]);
    let base = c.nodes[0].endpoint();
    let http = reqwest::Client::new();
    c.ok(0, &["tenant", "create", "--name", "acme"]);
    let key = c.json(0, &["apikey", "create", "--role", "customer", "--tenant", "acme"]);
    let key = key["token"].as_str().expect("token").to_string();
    let audit_before =
        get(&http, &format!("{base}/api/v1/audit/verify"), &c.key).await["total"].as_u64().expect("total");

    let mut ok = 0;
    let mut limited = None;
    for _ in 0..40 {
        let resp = http.get(format!("{base}/api/v1/tenant/acme")).bearer_auth(&key).send().await.expect("request");
        match resp.status().as_u16() {
            200 => ok += 1,
            429 => {
                let retry = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
                let body: Value = resp.json().await.expect("JSON");
                limited.get_or_insert((retry, body));
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!((10..=12).contains(&ok), "the burst, then the rate: {ok} answered");
    let (retry, body) = limited.expect("a 429");
    let retry: u64 = retry.expect("Retry-After").parse().expect("whole seconds");
    assert!(retry >= 1, "{retry}");
    assert_eq!(body["error"], "rate_limited", "{body}");

    // The admin key has its own bucket; the customer's comes back after Retry-After.
    let admin = http.get(format!("{base}/api/v1/tenant/acme")).bearer_auth(&c.key).send().await.expect("request");
    assert_eq!(admin.status().as_u16(), 200);
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let again = http.get(format!("{base}/api/v1/tenant/acme")).bearer_auth(&key).send().await.expect("request");
    assert_eq!(again.status().as_u16(), 200);

    // Throttled requests are counted, not written one by one.
    let audit_after =
        get(&http, &format!("{base}/api/v1/audit/verify"), &c.key).await["total"].as_u64().expect("total");
    assert!(
        audit_after - audit_before <= 1,
        "{} entries for {} throttled requests",
        audit_after - audit_before,
        40 - ok
    );
}

#[test]
fn slowloris_headers_are_cut_off() {
    let c = Cluster::single_with(&["--header-read-timeout", "1s"]);
    let port = c.nodes[0].api;
    let cut_off = |first: &[u8]| -> Duration {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.write_all(first).expect("write");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let started = Instant::now();
        let mut buf = [0u8; 512];
        // Read until the server closes (hyper may answer 408 first).
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => panic!("the connection was not closed within 10 s: {e}"),
            }
        }
        started.elapsed()
    };
    for (first, what) in [
        (&b"GET /api/v1/tenants HT"[..], "half a request line"),
        (&b"GET /api/v1/tenants HTTP/1.1\r\nHost: x\r\n"[..], "headers without their end"),
        (&b""[..], "nothing at all"),
        (&b"PRI * HTTP/2.0\r\n"[..], "half an HTTP/2 preface"),
    ] {
        let took = cut_off(first);
        assert!(took < Duration::from_secs(4), "{what}: closed after {took:?}");
    }
    // A client that finishes its request in time is served.
    let out = c.cli(0, &["tenant", "list"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for("a keep-alive request to be served", Duration::from_secs(5), || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).ok()?;
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200").then_some(())
    });
}
