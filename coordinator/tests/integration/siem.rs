//! The audit trail forwarded to a SIEM by a real coordinator process: a TLS syslog receiver and
//! an HTTPS receiver started here (tokio + rustls, certificates from rcgen), actions made with
//! the CLI and the enrollment service, the receiver stopped and restarted, the coordinator
//! restarted, a receiver whose certificate the coordinator must not trust.

use crate::enroll::{new_token, pinned, request};
use crate::harness::{Cluster, BIN};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// A CA and a `localhost` certificate it signed: (CA PEM, chain PEM, key PEM).
fn ca_and_leaf(name: &str) -> (String, String, String) {
    let ca_key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let ca = params.self_signed(&ca_key).expect("ca");
    let leaf_key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .signed_by(&leaf_key, &ca, &ca_key)
        .expect("leaf");
    (ca.pem(), format!("{}{}", leaf.pem(), ca.pem()), leaf_key.serialize_pem())
}

/// What a receiver got.
#[derive(Default)]
struct Seen {
    /// Syslog messages (octet-counted frames, unframed) or HTTPS bodies, in arrival order.
    messages: Mutex<Vec<String>>,
    /// `authorization` header of each HTTPS request.
    auth: Mutex<Vec<String>>,
    connections: AtomicUsize,
    failed_handshakes: AtomicUsize,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Syslog,
    Https,
}

/// A TLS receiver on 127.0.0.1; `stop` drops the listener and every connection.
struct Receiver {
    kind: Kind,
    port: u16,
    tls: Arc<rustls::ServerConfig>,
    seen: Arc<Seen>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    async fn start(kind: Kind, chain: &str, key: &str) -> Self {
        Self::start_with(kind, berqenas_pki::api_server_config(chain, key).expect("tls")).await
    }

    async fn start_with(kind: Kind, mut tls: rustls::ServerConfig) -> Self {
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut r = Self { kind, port: 0, tls: Arc::new(tls), seen: Arc::default(), task: None };
        r.listen().await;
        r
    }

    async fn listen(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.expect("bind the receiver");
        self.port = listener.local_addr().expect("addr").port();
        let (acceptor, seen, kind) = (tokio_rustls::TlsAcceptor::from(self.tls.clone()), self.seen.clone(), self.kind);
        self.task = Some(tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                seen.connections.fetch_add(1, Ordering::SeqCst);
                let (acceptor, seen) = (acceptor.clone(), seen.clone());
                conns.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        seen.failed_handshakes.fetch_add(1, Ordering::SeqCst);
                        return;
                    };
                    let mut io = BufReader::new(tls);
                    match kind {
                        Kind::Syslog => {
                            while let Some(m) = read_frame(&mut io).await {
                                seen.messages.lock().expect("lock").push(m);
                            }
                        }
                        Kind::Https => {
                            while let Some((auth, body)) = read_request(&mut io).await {
                                seen.auth.lock().expect("lock").push(auth);
                                seen.messages.lock().expect("lock").push(body);
                                let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                                if io.get_mut().write_all(ok).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        }));
    }

    /// Closes the listener and every open connection (their tasks are aborted with the set).
    async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    fn messages(&self) -> Vec<String> {
        self.seen.messages.lock().expect("lock").clone()
    }
}

/// One RFC 6587 octet-counted frame: `LEN SP MSG`.
async fn read_frame<R: tokio::io::AsyncBufRead + Unpin>(io: &mut R) -> Option<String> {
    let mut len = Vec::new();
    io.read_until(b' ', &mut len).await.ok()?;
    let len: usize = std::str::from_utf8(len.strip_suffix(b" ")?).ok()?.parse().ok()?;
    let mut msg = vec![0u8; len];
    io.read_exact(&mut msg).await.ok()?;
    String::from_utf8(msg).ok()
}

/// One HTTP/1.1 request with a content-length body: (authorization header, body).
async fn read_request<R: tokio::io::AsyncBufRead + Unpin>(io: &mut R) -> Option<(String, String)> {
    let (mut auth, mut length) = (String::new(), 0usize);
    let mut first = true;
    loop {
        let mut line = String::new();
        if io.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if first {
            assert!(line.starts_with("POST /ingest "), "{line}");
            first = false;
            continue;
        }
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        match name.to_ascii_lowercase().as_str() {
            "authorization" => auth = value.trim().to_string(),
            "content-length" => length = value.trim().parse().ok()?,
            _ => {}
        }
    }
    let mut body = vec![0u8; length];
    io.read_exact(&mut body).await.ok()?;
    Some((auth, String::from_utf8(body).ok()?))
}

/// The JSON event of an RFC 5424 message, after checking its header.
fn event_of_syslog(msg: &str) -> Value {
    let (header, json) = msg.split_once(" - ").expect("no structured data, then MSG");
    let parts: Vec<&str> = header.split(' ').collect();
    assert_eq!(parts.len(), 6, "{header}");
    assert!(parts[0] == "<109>1" || parts[0] == "<108>1", "PRI (log audit) and VERSION: {header}");
    assert!(parts[1].ends_with('Z') && parts[1].contains('T'), "RFC 3339 timestamp: {header}");
    assert_eq!((parts[3], parts[5]), ("berqenas", "audit"), "{header}");
    assert!(parts[4].starts_with("coordinator-"), "PROCID names the forwarding coordinator: {header}");
    serde_json::from_str(json).expect("MSG is JSON")
}

fn events(r: &Receiver) -> Vec<Value> {
    match r.kind {
        Kind::Syslog => r.messages().iter().map(|m| event_of_syslog(m)).collect(),
        Kind::Https => r
            .messages()
            .iter()
            .flat_map(|body| {
                body.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect::<Vec<Value>>()
            })
            .collect(),
    }
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["seq"].as_u64().expect("seq")).collect()
}

/// Every seq from 1 to the last arrived, none ahead of its predecessors (resends allowed: at
/// least once, in order).
fn assert_in_order_without_gaps(seqs: &[u64]) {
    let mut max = 0;
    for (i, s) in seqs.iter().enumerate() {
        assert!(*s >= 1 && *s <= max + 1, "seq {s} at position {i} after {max}: a gap or out of order: {seqs:?}");
        max = max.max(*s);
    }
}

/// The newest audit entry's seq.
fn head(c: &Cluster) -> u64 {
    head_at(c, 0)
}

fn head_at(c: &Cluster, idx: usize) -> u64 {
    c.json(idx, &["audit", "list", "--limit", "1"])[0]["seq"].as_u64().expect("seq")
}

/// The PROCID (`coordinator-N`) of each syslog message, in arrival order.
fn senders(r: &Receiver) -> Vec<String> {
    r.messages().iter().map(|m| m.split(' ').nth(4).expect("PROCID").to_string()).collect()
}

async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !f() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// All of `1..=upto` arrived.
async fn wait_delivered(r: &Receiver, upto: u64) {
    wait_until(&format!("seq 1..={upto} at the receiver"), Duration::from_secs(30), || {
        let got = seqs(&events(r));
        (1..=upto).all(|s| got.contains(&s))
    })
    .await;
}

/// `GET /metrics` with the admin key: (last delivered seq, errors) when the SIEM metrics are there.
fn siem_metrics(c: &Cluster) -> (Option<f64>, Option<f64>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", c.nodes[0].api)).expect("connect");
    let req =
        format!("GET /metrics HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\nconnection: close\r\n\r\n", c.key);
    s.write_all(req.as_bytes()).expect("write");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let value = |name: &str| text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok()));
    (value("berqenas_siem_last_delivered_seq "), value("berqenas_siem_errors_total "))
}

/// Files the coordinator reads: the receiver's CA and, for HTTPS, the token (0600).
fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

/// A device enrollment with a forged secret (refused, audited as `device.enroll`): the real
/// and the forged token, which no message may contain.
async fn failed_enrollment(c: &Cluster) -> (String, String) {
    let (token, pin, _) = new_token(c, "acme", &[]);
    let secret = token.rsplit('_').next().expect("secret");
    let flipped = format!("{}{}", &secret[..63], if secret.ends_with('0') { '1' } else { '0' });
    let forged = format!("{}_{flipped}", token.rsplit_once('_').expect("id").0);
    let kc = berqenas_pki::new_key_and_csr("device").expect("key");
    pinned(c, &pin).enroll(request(&forged, 1, &kc.csr_pem)).await.expect_err("a forged token is refused");
    (token, forged)
}

/// A refused enrollment: as its own entry, or (a forged secret is refused at the edge, counted
/// per source) in its source's refusal summary.
fn enrollment_refused(e: &Value) -> bool {
    e["outcome"] == "rejected"
        && (e["action"] == "device.enroll"
            || (e["action"] == "anonymous.refused" && e["details"].to_string().contains("device.enroll")))
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_entries_reach_a_tls_syslog_receiver_in_order_across_outages_and_restarts() {
    let files = tempfile::tempdir().expect("tmp");
    let (ca, chain, key) = ca_and_leaf("siem test ca");
    let mut r = Receiver::start(Kind::Syslog, &chain, &key).await;
    let ca_file = write(files.path(), "siem-ca.pem", &ca);
    let target = format!("syslog+tls://localhost:{}", r.port);
    let mut c = Cluster::single_with(&[
        "--siem-target",
        &target,
        "--siem-ca",
        ca_file.to_str().expect("utf-8"),
        "--refusal-audit-every",
        "1s",
    ]);

    // Security events of every kind the issue names that the coordinator sees.
    c.json(0, &["tenant", "create", "--name", "acme"]);
    c.json(0, &["firewall", "add", "--tenant", "acme", "--verdict", "allow", "--ports", "443", "--proto", "tcp"]);
    let bad_key = format!("bqk_{}_{}", "d".repeat(16), "e".repeat(64));
    assert!(!c.cli_as(0, &bad_key, &["tenant", "list"]).status.success(), "a bad key is refused");
    let (token, forged) = failed_enrollment(&c).await;
    wait_until("the failed enrollment at the receiver", Duration::from_secs(20), || {
        events(&r).iter().any(enrollment_refused)
    })
    .await;
    let upto = head(&c);
    wait_delivered(&r, upto).await;
    let got = events(&r);
    assert_in_order_without_gaps(&seqs(&got));
    let find = |action: &str, outcome: &str| {
        got.iter().any(|e| {
            e["action"] == action && e["outcome"] == outcome && e["hash"].as_str().is_some_and(|h| h.len() == 64)
        })
    };
    assert!(find("tenant.create", "ok") && find("firewall.add", "ok"), "changes arrive");
    assert!(find("tenant.list", "rejected"), "the refused API key arrives: {got:#?}");
    for pair in got.windows(2) {
        if pair[1]["seq"].as_u64() == pair[0]["seq"].as_u64().map(|s| s + 1) {
            assert_eq!(pair[1]["prev_hash"], pair[0]["hash"], "the chain holds across messages");
        }
    }

    // The receiver goes away; what happens meanwhile arrives once it is back, in order.
    r.stop().await;
    c.json(0, &["tenant", "create", "--name", "beta"]);
    c.json(0, &["firewall", "add", "--tenant", "beta", "--verdict", "deny", "--ports", "22", "--proto", "tcp"]);
    wait_until("a failed delivery counted", Duration::from_secs(20), || {
        siem_metrics(&c).1.is_some_and(|errors| errors >= 1.0)
    })
    .await;
    r.listen().await;
    let upto = head(&c);
    wait_delivered(&r, upto).await;
    let all = seqs(&events(&r));
    assert_in_order_without_gaps(&all);
    wait_until("the delivered seq in /metrics", Duration::from_secs(10), || siem_metrics(&c).0 == Some(upto as f64))
        .await;

    // A restarted coordinator resumes from its cursor: nothing delivered before is sent again.
    let before = r.messages().len();
    let delivered = *all.iter().max().expect("some");
    c.stop(0);
    let cursor = c.nodes[0].dir.join("siem.cursor");
    let mode = std::fs::metadata(&cursor).expect("cursor file").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let saved: Value = serde_json::from_slice(&std::fs::read(&cursor).expect("read")).expect("json");
    assert_eq!(saved["delivered_seq"].as_u64(), Some(delivered));
    c.start(0);
    c.json(0, &["tenant", "create", "--name", "gamma"]);
    let upto = head(&c);
    wait_delivered(&r, upto).await;
    let after_restart: Vec<u64> =
        r.messages()[before..].iter().map(|m| event_of_syslog(m)["seq"].as_u64().expect("seq")).collect();
    assert_eq!(after_restart.first(), Some(&(delivered + 1)), "resumed after the cursor: {after_restart:?}");
    assert_in_order_without_gaps(&seqs(&events(&r)));

    // No secret in any message.
    let text = r.messages().join("\n");
    for secret in [&c.key, &bad_key, &token, &forged] {
        let secret_part = secret.rsplit('_').next().expect("secret part");
        assert!(!text.contains(secret_part), "a secret reached the SIEM");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_https_receiver_gets_json_lines_with_its_bearer_token_and_no_secret() {
    let files = tempfile::tempdir().expect("tmp");
    let (ca, chain, key) = ca_and_leaf("siem https ca");
    let r = Receiver::start(Kind::Https, &chain, &key).await;
    let ca_file = write(files.path(), "siem-ca.pem", &ca);
    let bearer = "siem-ingest-token-0123456789";
    let token_file = write(files.path(), "siem-token", &format!("{bearer}\n"));
    let target = format!("https://localhost:{}/ingest", r.port);
    let c = Cluster::single_with(&[
        "--siem-target",
        &target,
        "--siem-ca",
        ca_file.to_str().expect("utf-8"),
        "--siem-token-file",
        token_file.to_str().expect("utf-8"),
        "--refusal-audit-every",
        "1s",
    ]);
    c.json(0, &["tenant", "create", "--name", "acme"]);
    c.json(0, &["firewall", "add", "--tenant", "acme", "--verdict", "allow", "--ports", "443", "--proto", "tcp"]);
    let (token, forged) = failed_enrollment(&c).await;
    wait_until("the failed enrollment at the receiver", Duration::from_secs(20), || {
        events(&r).iter().any(enrollment_refused)
    })
    .await;
    let upto = head(&c);
    wait_delivered(&r, upto).await;
    let got = events(&r);
    assert_in_order_without_gaps(&seqs(&got));
    assert!(
        got.iter().any(|e| e["action"] == "firewall.add" && e["target"].as_str().is_some_and(|t| t.contains("acme"))),
        "{got:#?}"
    );
    let auth = r.seen.auth.lock().expect("lock").clone();
    assert!(!auth.is_empty() && auth.iter().all(|a| *a == format!("Bearer {bearer}")), "{auth:?}");
    let text = r.messages().join("\n");
    for secret in [c.key.as_str(), bearer, &token, &forged] {
        let secret_part = secret.rsplit('_').next().expect("secret part");
        assert!(!text.contains(secret_part), "a secret reached the SIEM body");
    }
    // Nor does the coordinator's log show the bearer token.
    let logs: String = std::fs::read_dir(c.tmp.path())
        .expect("logs")
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .collect();
    assert!(!logs.contains(bearer), "the token reached a log");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_the_ca_does_not_vouch_for_gets_nothing_and_errors_are_counted() {
    let files = tempfile::tempdir().expect("tmp");
    let (trusted_ca, _, _) = ca_and_leaf("the SIEM's real ca");
    let (_, impostor_chain, impostor_key) = ca_and_leaf("an impostor's ca");
    let r = Receiver::start(Kind::Syslog, &impostor_chain, &impostor_key).await;
    let ca_file = write(files.path(), "siem-ca.pem", &trusted_ca);
    let target = format!("syslog+tls://localhost:{}", r.port);
    let c = Cluster::single_with(&["--siem-target", &target, "--siem-ca", ca_file.to_str().expect("utf-8")]);
    c.json(0, &["tenant", "create", "--name", "acme"]);
    wait_until("failed deliveries counted", Duration::from_secs(20), || {
        siem_metrics(&c).1.is_some_and(|errors| errors >= 2.0)
    })
    .await;
    assert!(r.seen.connections.load(Ordering::SeqCst) >= 1, "the forwarder tried");
    assert!(r.messages().is_empty(), "nothing reached the impostor");
    assert_eq!(siem_metrics(&c).0, Some(0.0), "nothing counts as delivered");
    let cursor = c.nodes[0].dir.join("siem.cursor");
    assert!(!cursor.exists(), "no cursor moved");
}

#[test]
fn plaintext_syslog_is_refused_at_start_without_the_explicit_flag() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("c1");
    let out = berqenas_tests::run(
        Path::new(BIN),
        &[
            "serve",
            "--data-dir",
            data.to_str().expect("utf-8"),
            "--id",
            "1",
            "--siem-target",
            "syslog+tcp://127.0.0.1:6514",
        ],
        &[],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--siem-insecure-plaintext"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_leader_forwards_and_after_a_failover_the_new_one_loses_nothing() {
    let files = tempfile::tempdir().expect("tmp");
    let (ca, chain, key) = ca_and_leaf("siem failover ca");
    let r = Receiver::start(Kind::Syslog, &chain, &key).await;
    let ca_file = write(files.path(), "siem-ca.pem", &ca);
    let target = format!("syslog+tls://localhost:{}", r.port);
    let mut c = Cluster::three_with(&["--siem-target", &target, "--siem-ca", ca_file.to_str().expect("utf-8")]);
    c.json(0, &["tenant", "create", "--name", "acme"]);
    let upto = head(&c);
    wait_delivered(&r, upto).await;
    let leader = c.leader_seen_by(0).expect("a leader");
    let mut from: Vec<String> = senders(&r);
    from.dedup();
    assert_eq!(from, vec![format!("coordinator-{leader}")], "one coordinator forwards: the leader");

    let before = r.messages().len();
    let old = c.index_of(leader);
    c.kill(old);
    let survivor = (old + 1) % 3;
    wait_until("a new leader", Duration::from_secs(30), || c.leader_seen_by(survivor).is_some_and(|l| l != leader))
        .await;
    let new_leader = c.leader_seen_by(survivor).expect("a leader");
    c.json(survivor, &["tenant", "create", "--name", "beta"]);
    let upto = head_at(&c, survivor);
    wait_delivered(&r, upto).await;
    assert_in_order_without_gaps(&seqs(&events(&r)));
    let after: Vec<String> = senders(&r)[before..].to_vec();
    assert!(
        after.iter().all(|p| *p == format!("coordinator-{new_leader}")),
        "after the failover only the new leader forwards: {after:?}"
    );
}

/// A server config that requires a client certificate from `client_ca_pem`.
fn requiring_client_certificates(client_ca_pem: &str, chain: &str, key: &str) -> rustls::ServerConfig {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(client_ca_pem.as_bytes()).expect("ca")).expect("root");
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .expect("verifier");
    let certs: Vec<_> = CertificateDer::pem_slice_iter(chain.as_bytes()).map(|c| c.expect("cert")).collect();
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key"))
        .expect("server config")
}

/// A client certificate (clientAuth) signed by a fresh CA: (CA PEM, chain PEM, key PEM).
fn client_ca_and_cert() -> (String, String, String) {
    let ca_key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, "siem client ca");
    let ca = params.self_signed(&ca_key).expect("ca");
    let leaf_key = KeyPair::generate().expect("key");
    let mut leaf = CertificateParams::new(vec!["coordinator.example".to_string()]).expect("params");
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let leaf = leaf.signed_by(&leaf_key, &ca, &ca_key).expect("leaf");
    (ca.pem(), format!("{}{}", leaf.pem(), ca.pem()), leaf_key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_siem_that_requires_a_client_certificate_gets_entries_only_from_one_that_has_it() {
    let files = tempfile::tempdir().expect("tmp");
    let (ca, chain, key) = ca_and_leaf("siem mtls ca");
    let (client_ca, client_chain, client_key) = client_ca_and_cert();
    let r = Receiver::start_with(Kind::Syslog, requiring_client_certificates(&client_ca, &chain, &key)).await;
    let ca_file = write(files.path(), "siem-ca.pem", &ca);
    let cert_file = write(files.path(), "client.pem", &client_chain);
    let key_file = write(files.path(), "client.key", &client_key);
    let target = format!("syslog+tls://localhost:{}", r.port);
    let ca_arg = ca_file.to_str().expect("utf-8");

    // Without the certificate: refused by the SIEM, counted, never delivered.
    let c = Cluster::single_with(&["--siem-target", &target, "--siem-ca", ca_arg]);
    c.json(0, &["tenant", "create", "--name", "acme"]);
    wait_until("failed deliveries counted", Duration::from_secs(20), || {
        siem_metrics(&c).1.is_some_and(|errors| errors >= 2.0)
    })
    .await;
    assert!(r.messages().is_empty(), "nothing reached the SIEM without a client certificate");
    assert_eq!(siem_metrics(&c).0, Some(0.0));
    drop(c);

    // With it: delivered.
    let c = Cluster::single_with(&[
        "--siem-target",
        &target,
        "--siem-ca",
        ca_arg,
        "--siem-client-cert",
        cert_file.to_str().expect("utf-8"),
        "--siem-client-key",
        key_file.to_str().expect("utf-8"),
    ]);
    c.json(0, &["tenant", "create", "--name", "acme"]);
    let upto = head(&c);
    wait_delivered(&r, upto).await;
    assert_in_order_without_gaps(&seqs(&events(&r)));
}
