//! Attacks on device enrollment by a tenant that holds a customer key, a token, an enrolled
//! device (its WireGuard key) and a network position, against a real coordinator process:
//! enrollments raced (uses, ids), tokens guessed and crossed between tenants, oversized and
//! malformed requests, names and keys already taken (a gateway's own key too), address
//! exhaustion, another tenant's key, secrets looked for in every output and the log. Attacks
//! with certificates are in `enroll_identity`.

use crate::enroll::{devices, fingerprint, mtls, new_token, pinned, request, wg};
use crate::harness::{stderr, Cluster};
use berqenas_coordinator::state::gateway::WgKey;
use berqenas_proto::device::{DeviceState, EnrollRequest, HeartbeatRequest};
use berqenas_proto::node::node_client::NodeClient;
use serde_json::Value;
use std::sync::{Arc, RwLock};
use tonic::transport::Channel;

const REFUSED: &str = "device token is invalid, expired, revoked or used up";

pub(super) fn tls(ca_pem: &str, chain_pem: &str, key_pem: &str) -> berqenas_coordinator::transport::ClientTls {
    let config = berqenas_pki::client_config(ca_pem, Some((chain_pem, key_pem))).expect("tls");
    Arc::new(RwLock::new(Arc::new(config)))
}

pub(super) fn hb(os: &str) -> HeartbeatRequest {
    HeartbeatRequest { fingerprint: Some(fingerprint(os)), last_handshake: 0, tunnel_up: false }
}

/// A distinct WireGuard key for each `n`.
pub(super) fn key_n(n: u16) -> String {
    let mut b = [7u8; 32];
    b[..2].copy_from_slice(&n.to_be_bytes());
    WgKey::from_bytes(&b).to_string()
}

/// Joins a node with `roles` over the node listener; returns (its client TLS, its id).
pub(super) async fn join_node(c: &Cluster, roles: &[&str]) -> (berqenas_coordinator::transport::ClientTls, u64) {
    use berqenas_proto::node::{Capacity, JoinRequest};
    let created = c.json(0, &["node", "token", "create", "--roles", &roles.join(",")]);
    let (token, pin) = (created["token"].as_str().expect("token"), created["ca_fingerprint"].as_str().expect("pin"));
    let _ = pinned(c, pin);
    let anon = Arc::new(RwLock::new(Arc::new(berqenas_pki::pinned_client_config(pin).expect("tls"))));
    let addr = c.nodes[0].listen().node;
    let mut joiner = NodeClient::new(berqenas_coordinator::transport::channel(&addr, anon).expect("channel"));
    let kc = berqenas_pki::new_key_and_csr("node").expect("key");
    let joined = joiner
        .join(JoinRequest {
            token: token.into(),
            csr_pem: kc.csr_pem.clone(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            address: "127.0.0.1".into(),
            realtime_address: if roles.contains(&"db") { "192.0.2.10:7401".into() } else { String::new() },
            capacity: Some(Capacity { cpus: 2, memory_bytes: 1 << 33, disk_bytes: 1 << 40, max_tenants: 100 }),
            ..Default::default()
        })
        .await
        .expect("joined")
        .into_inner();
    (tls(&joined.ca_pem, &joined.cert_chain_pem, &kc.key_pem), joined.node_id)
}

pub(super) fn node_client(c: &Cluster, tls: berqenas_coordinator::transport::ClientTls) -> NodeClient<Channel> {
    NodeClient::new(berqenas_coordinator::transport::channel(&c.nodes[0].listen().node, tls).expect("channel"))
}

pub(super) fn token_uses(c: &Cluster, tenant: &str, id: &str) -> u64 {
    let list = c.json(0, &["device", "token", "list", "--tenant", tenant]);
    let t = list.as_array().expect("list").iter().find(|t| t["id"] == id).cloned().expect("the token is listed");
    t["uses"].as_u64().expect("uses")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_enrollments_spend_exactly_the_uses_a_token_has() {
    const ATTEMPTS: u16 = 24;
    let c = Cluster::single_with(&["--enroll-burst", "1000", "--anonymous-burst", "1000"]);
    c.json(0, &["tenant", "create", "--name", "acme"]);
    let kc = berqenas_pki::new_key_and_csr("device").expect("key");
    let mut enrolled = 0;
    for (round, uses) in [(0u16, 1usize), (1, 3)] {
        let (token, pin, created) = new_token(&c, "acme", &["--uses", &uses.to_string()]);
        let barrier = Arc::new(tokio::sync::Barrier::new(usize::from(ATTEMPTS)));
        let mut tasks = Vec::new();
        for i in 0..ATTEMPTS {
            let mut client = pinned(&c, &pin);
            // The connection is up (and its handshake done) before the race starts.
            let warm = client.enroll(EnrollRequest::default()).await.expect_err("an empty request");
            assert_eq!(warm.code(), tonic::Code::InvalidArgument);
            let req = EnrollRequest { wg_public_key: key_n(round * 100 + i), ..request(&token, 0, &kc.csr_pem) };
            let barrier = barrier.clone();
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                client
                    .enroll(req)
                    .await
                    .map(|r| r.into_inner().device_id)
                    .map_err(|s| (s.code(), s.message().to_string()))
            }));
        }
        let mut won = Vec::new();
        for t in tasks {
            match t.await.expect("task") {
                Ok(id) => won.push(id),
                Err((code, message)) => {
                    assert_eq!((code, message.as_str()), (tonic::Code::PermissionDenied, REFUSED));
                }
            }
        }
        assert_eq!(won.len(), uses, "{ATTEMPTS} racing enrollments with a {uses}-use token");
        enrolled += uses;
        let id = created["device_token"]["id"].as_str().expect("id");
        assert_eq!(token_uses(&c, "acme", id), uses as u64);
        assert_eq!(devices(&c, "acme").len(), enrolled, "exactly the token's uses became devices");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn devices_enrolled_at_the_same_moment_each_get_an_identity_of_their_own() {
    const ATTEMPTS: u16 = 24;
    let c = Cluster::single_with(&["--enroll-burst", "1000", "--anonymous-burst", "1000"]);
    c.json(0, &["tenant", "create", "--name", "acme"]);
    let (token, pin, _) = new_token(&c, "acme", &["--uses", "unlimited"]);
    let barrier = Arc::new(tokio::sync::Barrier::new(usize::from(ATTEMPTS)));
    let mut tasks = Vec::new();
    for i in 0..ATTEMPTS {
        let mut client = pinned(&c, &pin);
        let _ = client.enroll(EnrollRequest::default()).await.expect_err("warm the connection");
        let kc = berqenas_pki::new_key_and_csr("device").expect("key");
        let req = EnrollRequest { wg_public_key: key_n(i), name: format!("dev{i}"), ..request(&token, 0, &kc.csr_pem) };
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            (client.enroll(req).await.expect("enrolled").into_inner(), kc.key_pem)
        }));
    }
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.expect("task"));
    }
    let mut ids: Vec<&str> = got.iter().map(|(e, _)| e.device_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), usize::from(ATTEMPTS), "every device its own id");
    assert_eq!(devices(&c, "acme").len(), usize::from(ATTEMPTS), "no device overwrote another");
    // Each certificate is its own device: its name, its address.
    for (e, key) in &got {
        let beat = mtls(&c, &e.ca_pem, &e.cert_chain_pem, key).heartbeat(hb("6.1")).await.expect("heartbeat");
        let shown = c.json(0, &["device", "show", &e.device_name, "--tenant", "acme"]);
        assert_eq!(shown["id"].as_str(), Some(e.device_id.as_str()));
        let (own, told) = (e.tunnel.clone().expect("tunnel").address, beat.into_inner().tunnel.expect("t").address);
        assert_eq!(own, told, "{} is told its own address", e.device_name);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn guessed_and_crossed_tokens_learn_nothing_and_spend_nothing() {
    let c = Cluster::single();
    c.json(0, &["tenant", "create", "--name", "acme"]);
    c.json(0, &["tenant", "create", "--name", "globex"]);
    let (a, pin, ca) = new_token(&c, "acme", &[]);
    let (b, _, cb) = new_token(&c, "globex", &[]);
    let (a_id, b_id) = (ca["device_token"]["id"].as_str().expect("id"), cb["device_token"]["id"].as_str().expect("id"));
    let secret = |t: &str| t.rsplit('_').next().expect("secret").to_string();
    let flipped = {
        let s = secret(&a);
        let last = if s.ends_with('0') { '1' } else { '0' };
        format!("{}{last}", &s[..63])
    };
    let mut client = pinned(&c, &pin);
    let kc = berqenas_pki::new_key_and_csr("device").expect("key");
    for (what, forged) in [
        ("acme's id with globex's secret", format!("bqd_{a_id}_{}", secret(&b))),
        ("globex's id with acme's secret", format!("bqd_{b_id}_{}", secret(&a))),
        ("an unknown id with acme's secret", format!("bqd_0000000000000000_{}", secret(&a))),
        ("acme's secret in upper case", format!("bqd_{a_id}_{}", secret(&a).to_ascii_uppercase())),
        ("acme's secret with one digit changed", format!("bqd_{a_id}_{flipped}")),
    ] {
        let status = client.enroll(request(&forged, 1, &kc.csr_pem)).await.expect_err(what);
        assert_eq!((status.code(), status.message()), (tonic::Code::PermissionDenied, REFUSED), "{what}");
    }
    assert_eq!((token_uses(&c, "acme", a_id), token_uses(&c, "globex", b_id)), (0, 0), "nothing spent");
    assert!(devices(&c, "acme").is_empty() && devices(&c, "globex").is_empty());

    // The real tokens still work, each into its own tenant, and a spent one answers exactly
    // like a guessed one.
    let got = client.enroll(request(&a, 1, &kc.csr_pem)).await.expect("acme's token").into_inner();
    assert_eq!(got.tenant, "acme");
    let got = client.enroll(request(&b, 2, &kc.csr_pem)).await.expect("globex's token").into_inner();
    assert_eq!(got.tenant, "globex");
    let status = client.enroll(request(&a, 3, &kc.csr_pem)).await.expect_err("spent");
    assert_eq!((status.code(), status.message()), (tonic::Code::PermissionDenied, REFUSED));
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_and_malformed_enrollments_are_refused_and_spend_nothing() {
    let c = Cluster::single();
    c.json(0, &["tenant", "create", "--name", "acme"]);
    c.json(0, &["tenant", "create", "--name", "globex"]);
    c.json(0, &["device", "add", "--tenant", "globex", "--name", "cam", "--public-key", &wg(7)]);
    c.json(0, &["device", "add", "--tenant", "acme", "--name", "taken", "--public-key", &wg(8)]);
    let (token, pin, created) = new_token(&c, "acme", &[]);
    let id = created["device_token"]["id"].as_str().expect("id");
    let mut client = pinned(&c, &pin);
    let kc = berqenas_pki::new_key_and_csr("device").expect("key");
    let ok = || request(&token, 1, &kc.csr_pem);
    let with_fp = |f: &dyn Fn(&mut berqenas_proto::device::Fingerprint)| {
        let mut r = ok();
        if let Some(fp) = r.fingerprint.as_mut() {
            f(fp);
        }
        r
    };
    let certificate = rcgen::generate_simple_self_signed(vec!["x".to_string()]).expect("cert").cert.pem();
    let pem = |body: &str| format!("-----BEGIN CERTIFICATE REQUEST-----\n{body}\n-----END CERTIFICATE REQUEST-----\n");
    let cases: Vec<(&str, EnrollRequest)> = vec![
        ("10k MAC hashes", with_fp(&|f| f.mac_hashes = vec!["a".repeat(64); 10_000])),
        ("65 MAC hashes", with_fp(&|f| f.mac_hashes = (0..65).map(|i| format!("{i:064x}")).collect())),
        ("an upper-case MAC hash", with_fp(&|f| f.mac_hashes = vec!["A".repeat(64)])),
        ("a 10k os name", with_fp(&|f| f.os_name = "x".repeat(10_000))),
        ("a control character", with_fp(&|f| f.os_version = "6.1\u{1b}[2J".into())),
        ("no fingerprint", EnrollRequest { fingerprint: None, ..ok() }),
        ("a 1 MB CSR", EnrollRequest { csr_pem: pem(&"A".repeat(1 << 20)), ..ok() }),
        ("a 9 kB CSR", EnrollRequest { csr_pem: pem(&"A".repeat(9_000)), ..ok() }),
        ("a CSR of garbage", EnrollRequest { csr_pem: pem("AAAA"), ..ok() }),
        ("a certificate for a CSR", EnrollRequest { csr_pem: certificate.clone(), ..ok() }),
        ("no CSR", EnrollRequest { csr_pem: String::new(), ..ok() }),
        ("a key that is not base64", EnrollRequest { wg_public_key: format!("{}!", "A".repeat(43)), ..ok() }),
        ("a non-canonical key", EnrollRequest { wg_public_key: format!("{}B=", "A".repeat(42)), ..ok() }),
        ("a 31-byte key", EnrollRequest { wg_public_key: "A".repeat(40) + "AA==", ..ok() }),
        ("no key", EnrollRequest { wg_public_key: String::new(), ..ok() }),
        ("a path for a name", EnrollRequest { name: "../etc".into(), ..ok() }),
        ("an upper-case name", EnrollRequest { name: "PLC".into(), ..ok() }),
        ("a 33-character name", EnrollRequest { name: "a".repeat(33), ..ok() }),
        ("a token with a tail", EnrollRequest { token: format!("{token}x"), ..ok() }),
        ("globex's device's key", EnrollRequest { wg_public_key: wg(7), ..ok() }),
        ("acme's own device's key", EnrollRequest { wg_public_key: wg(8), ..ok() }),
        ("an existing device's name", EnrollRequest { name: "taken".into(), ..ok() }),
    ];
    for (what, req) in cases {
        let status = client.enroll(req).await.expect_err(what);
        assert_ne!(status.code(), tonic::Code::Ok, "{what}");
        assert!(!status.message().contains("globex") && !status.message().contains("cam"), "{what}: {status}");
        assert_eq!(token_uses(&c, "acme", id), 0, "{what} spent the token");
    }
    assert_eq!(devices(&c, "acme").len(), 1, "only `taken`");
    assert_eq!(devices(&c, "globex")[0]["state"], "active", "globex's device untouched");
    // The token still enrolls a well-formed device.
    let got = client.enroll(ok()).await.expect("a valid request").into_inner();
    assert_eq!(got.tenant, "acme");
    assert_eq!(token_uses(&c, "acme", id), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_subnet_refuses_enrollment_without_spending_the_token() {
    let c = Cluster::single_with(&["--enroll-rate", "0"]);
    c.json(0, &["tenant", "create", "--name", "acme"]);
    let (token, pin, created) = new_token(&c, "acme", &["--uses", "unlimited"]);
    let id = created["device_token"]["id"].as_str().expect("id");
    let mut client = pinned(&c, &pin);
    let kc = berqenas_pki::new_key_and_csr("device").expect("key");
    let enroll = |n: u16| EnrollRequest { wg_public_key: key_n(n), ..request(&token, 0, &kc.csr_pem) };
    for n in 0..253 {
        client.enroll(enroll(n)).await.unwrap_or_else(|s| panic!("enrollment {n}: {s}"));
    }
    let status = client.enroll(enroll(253)).await.expect_err("the /24 is full");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status}");
    assert_eq!(token_uses(&c, "acme", id), 253);
    let listed = devices(&c, "acme");
    let mut addresses: Vec<&str> = listed.iter().filter_map(|d| d["address"].as_str()).collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), 253, "every address once");
    assert!(!addresses.iter().any(|a| a.ends_with(".0") || a.ends_with(".1") || a.ends_with(".255")));

    // A revoked device keeps its address; a removed one frees it for the next enrollment.
    let victim = listed[10]["name"].as_str().expect("name").to_string();
    let address = listed[10]["address"].as_str().expect("address").to_string();
    c.json(0, &["device", "revoke", &victim, "--tenant", "acme"]);
    assert_eq!(client.enroll(enroll(254)).await.map(|_| ()).map_err(|s| s.code()), Err(tonic::Code::ResourceExhausted));
    c.json(0, &["device", "rm", &victim, "--tenant", "acme"]);
    let got = client.enroll(enroll(255)).await.expect("an address is free again").into_inner();
    assert_eq!(got.tunnel.expect("tunnel").address, address);
}

#[tokio::test(flavor = "multi_thread")]
async fn another_tenants_customer_key_cannot_touch_enrolled_devices() {
    let c = Cluster::single();
    c.json(0, &["tenant", "create", "--name", "acme"]);
    c.json(0, &["tenant", "create", "--name", "globex"]);
    let (token, pin, _) = new_token(&c, "acme", &["--approve", "manual"]);
    let kc = berqenas_pki::new_key_and_csr("device").expect("key");
    let enrolled = pinned(&c, &pin).enroll(request(&token, 1, &kc.csr_pem)).await.expect("enrolled").into_inner();
    let name = enrolled.device_name.as_str();
    let before = devices(&c, "acme");
    let key = c.json(0, &["apikey", "create", "--role", "customer", "--tenant", "globex"]);
    let key = key["token"].as_str().expect("key");
    for args in [
        vec!["device", "approve", name, "--tenant", "acme"],
        vec!["device", "revoke", name, "--tenant", "acme"],
        vec!["device", "rm", name, "--tenant", "acme"],
        vec!["device", "enable", name, "--tenant", "acme"],
        vec!["device", "disable", name, "--tenant", "acme"],
        vec!["device", "show", name, "--tenant", "acme"],
        vec!["device", "config", name, "--tenant", "acme"],
        vec!["device", "list", "--tenant", "acme"],
        // The path names globex, the device is acme's: not found, never acme's.
        vec!["device", "approve", name, "--tenant", "globex"],
        vec!["device", "revoke", name, "--tenant", "globex"],
    ] {
        let out = c.cli_as(0, key, &args);
        assert!(!out.status.success(), "`{}` must be refused", args.join(" "));
        let err = stderr(&out);
        assert!(err.contains("(403)") || err.contains("(404)"), "`{}`: {err}", args.join(" "));
    }
    assert_eq!(devices(&c, "acme"), before, "acme's device is untouched");
    let hb = mtls(&c, &enrolled.ca_pem, &enrolled.cert_chain_pem, &kc.key_pem).heartbeat(hb("6.1")).await;
    assert_eq!(hb.expect("still heartbeats").into_inner().state(), DeviceState::Pending);
}

#[tokio::test(flavor = "multi_thread")]
async fn token_secrets_and_their_hashes_appear_in_no_answer_audit_entry_or_log() {
    let c = Cluster::single();
    c.json(0, &["tenant", "create", "--name", "acme"]);
    let (token, pin, created) = new_token(&c, "acme", &["--uses", "2"]);
    let id = created["device_token"]["id"].as_str().expect("id").to_string();
    let secret = token.rsplit('_').next().expect("secret").to_string();
    let hash = berqenas_coordinator::state::apikey::hash_secret(&secret);
    let mut client = pinned(&c, &pin);
    let kc = berqenas_pki::new_key_and_csr("device").expect("key");
    let enrolled = client.enroll(request(&token, 1, &kc.csr_pem)).await.expect("enrolled").into_inner();
    // Refused attempts: a guessed secret, a spent token, an invalid request carrying the token.
    let guess = format!("bqd_{id}_{}", "e".repeat(64));
    let _ = client.enroll(request(&guess, 2, &kc.csr_pem)).await.expect_err("guess");
    let _ = client.enroll(EnrollRequest { name: "BAD".into(), ..request(&token, 2, &kc.csr_pem) }).await;
    client.enroll(request(&token, 3, &kc.csr_pem)).await.expect("second use");
    let _ = client.enroll(request(&token, 4, &kc.csr_pem)).await.expect_err("used up");

    let mut seen = vec![
        enrolled.cert_chain_pem.clone(),
        c.ok(0, &["device", "token", "list", "--tenant", "acme"]),
        c.ok(0, &["device", "token", "list", "--tenant", "acme", "--output", "json"]),
        c.ok(0, &["device", "token", "revoke", &id, "--tenant", "acme", "--output", "json"]),
        c.ok(0, &["device", "list", "--tenant", "acme", "--output", "json"]),
        c.ok(0, &["device", "show", &enrolled.device_name, "--tenant", "acme", "--output", "json"]),
        c.ok(0, &["audit", "list", "--limit", "500", "--output", "json"]),
        c.ok(0, &["audit", "list", "--limit", "500"]),
    ];
    seen.push(c.nodes[0].proc.as_ref().expect("running").log_text());
    for (i, text) in seen.iter().enumerate() {
        for (what, s) in [("secret", &secret), ("hash", &hash), ("guessed secret", &"e".repeat(64))] {
            assert!(!text.contains(s.as_str()), "output {i} shows the token's {what}:\n{text}");
        }
    }
    assert!(seen[1].contains(&format!("bqd_{id}_")), "the list shows the prefix");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_named_token_with_uses_left_skips_names_already_taken() {
    let c = Cluster::single();
    c.json(0, &["tenant", "create", "--name", "acme"]);
    c.json(0, &["device", "add", "--tenant", "acme", "--name", "plc-2", "--public-key", &wg(50)]);
    let (token, pin, _) = new_token(&c, "acme", &["--name", "plc", "--uses", "3"]);
    let mut client = pinned(&c, &pin);
    let kc = berqenas_pki::new_key_and_csr("device").expect("key");
    let mut names = Vec::new();
    for key in 1..=3 {
        let got = client.enroll(request(&token, key, &kc.csr_pem)).await;
        names.push(got.map(|r| r.into_inner().device_name).map_err(|s| s.to_string()));
    }
    assert!(names.iter().all(Result::is_ok), "every use of the token enrolls a device: {names:?}");
    let names: Vec<String> = names.into_iter().map(Result::unwrap).collect();
    assert_eq!(names[0], "plc");
    assert!(!names.contains(&"plc-2".to_string()), "{names:?}");
    let listed = devices(&c, "acme");
    let plc2 = listed.iter().find(|d| d["name"] == "plc-2").expect("plc-2");
    assert_eq!(plc2["public_key"].as_str(), Some(wg(50).as_str()), "the existing plc-2 is untouched");
    assert_eq!(listed.len(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateways_own_key_is_never_a_device_key() {
    use berqenas_proto::node::{GatewayStatus, StatusReport, TenantStatus};
    let c = Cluster::single();
    let (node_tls, _) = join_node(&c, &["gateway", "db"]).await;
    c.json(0, &["tenant", "create", "--name", "acme"]);
    c.json(0, &["tenant", "create", "--name", "globex"]);
    // The gateway reports each tenant interface's public key, as its agent does.
    let gw = |t: &str, b: u8| TenantStatus {
        name: t.into(),
        ready: true,
        gateway: Some(GatewayStatus { public_key: wg(b), ..Default::default() }),
        ..Default::default()
    };
    node_client(&c, node_tls)
        .report(tokio_stream::iter(vec![StatusReport {
            tenants: vec![gw("acme", 200), gw("globex", 201)],
            ..Default::default()
        }]))
        .await
        .expect("report");
    let (token, pin, created) = new_token(&c, "acme", &["--uses", "3"]);
    let id = created["device_token"]["id"].as_str().expect("id");
    let mut client = pinned(&c, &pin);
    let kc = berqenas_pki::new_key_and_csr("device").expect("key");
    let first = client.enroll(request(&token, 1, &kc.csr_pem)).await.expect("enrolled").into_inner();
    assert_eq!(first.tunnel.expect("tunnel").gateway_public_key, wg(200), "the device learns its gateway's key");
    for (what, key) in [("acme's gateway key", 200), ("globex's gateway key", 201)] {
        let status = client.enroll(request(&token, key, &kc.csr_pem)).await.expect_err(what);
        assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{what}: {status}");
        let out = c.cli(0, &["device", "add", "--tenant", "acme", "--name", "gw", "--public-key", &wg(key)]);
        assert!(!out.status.success(), "`device add` with {what}");
    }
    assert_eq!(token_uses(&c, "acme", id), 1, "refusals spend nothing");
    let keys: Vec<Value> = devices(&c, "acme").iter().map(|d| d["public_key"].clone()).collect();
    assert_eq!(keys, vec![Value::from(wg(1))]);
}
