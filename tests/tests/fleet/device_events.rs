//! Events from the device client reach an ingest exactly once from the device's point of view:
//! `send` without `run` waits for the acknowledgement; through `run`'s socket, an ingest that
//! dies mid-stream (after acknowledging part of what it got) and a client SIGKILLed with events
//! in its spool lose nothing: everything not acknowledged is resent, and the spool empties only
//! as acknowledgements arrive.
//!
//! The ingest here is a stand-in speaking the real contract (`realtime.proto` over mTLS with
//! certificates of a real cluster CA, a node identity on the server, the device's on the client):
//! the node agent's ingest is built on another branch and tested there; this test is about the
//! client's spool, acks and resends.

use berqenas_pki::{ClientAuth, ClusterCa, Identity, NoRevocations};
use berqenas_proto::realtime as pb;
use berqenas_tests::{wait_for, Proc};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// What the stand-in ingest stored (by event id, so a resend is stored once), how many events it
/// received in all, and which identity published.
#[derive(Default)]
struct Store {
    events: BTreeMap<String, pb::Event>,
    received: usize,
    publishers: Vec<String>,
    /// Acknowledge this many more events, then end the stream with an error (a crash).
    fail_after: Option<usize>,
}

#[derive(Clone)]
struct StandIn(Arc<Mutex<Store>>);

type AckStream = Pin<Box<dyn Stream<Item = Result<pb::PublishAck, Status>> + Send>>;

#[tonic::async_trait]
impl pb::ingest_server::Ingest for StandIn {
    type PublishStream = AckStream;

    async fn publish(&self, req: Request<Streaming<pb::PublishRequest>>) -> Result<Response<AckStream>, Status> {
        let certs = req.peer_certs().ok_or_else(|| Status::unauthenticated("no client certificate"))?;
        let who = berqenas_pki::peer_identity(&certs[0]).map_err(|e| Status::unauthenticated(e.to_string()))?;
        self.0.lock().unwrap().publishers.push(who.uri());
        let mut input = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let store = self.0.clone();
        tokio::spawn(async move {
            while let Some(Ok(batch)) = input.next().await {
                let mut ids = Vec::new();
                let mut crash = false;
                {
                    let mut s = store.lock().unwrap();
                    for e in batch.events {
                        if let Some(n) = s.fail_after {
                            if n == 0 {
                                s.fail_after = None;
                                crash = true;
                                break;
                            }
                            s.fail_after = Some(n - 1);
                        }
                        s.received += 1;
                        ids.push(e.id.clone());
                        s.events.insert(e.id.clone(), e);
                    }
                }
                if !ids.is_empty() && tx.send(Ok(pb::PublishAck { ids })).await.is_err() {
                    return;
                }
                if crash {
                    let _ = tx.send(Err(Status::unavailable("ingest crashed"))).await;
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// The stand-in served on `addr` on its own runtime; dropping it kills every connection at once.
struct Ingest {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Ingest {
    fn start(addr: SocketAddr, ca: &ClusterCa, store: Arc<Mutex<Store>>) -> Self {
        let key = berqenas_pki::new_key_and_csr("ingest").unwrap();
        let chain =
            ca.sign_csr(&key.csr_pem, &Identity::Node(7), &[], SystemTime::now(), Duration::from_secs(3600)).unwrap();
        let chain = format!("{chain}{}", ca.cert_pem);
        let tls = berqenas_pki::server_config(
            &ca.cert_pem,
            &chain,
            &key.key_pem,
            Arc::new(NoRevocations),
            ClientAuth::Required,
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind(addr)).expect("bind the ingest port");
        runtime.spawn(async move {
            let (tx, rx) = tokio::sync::mpsc::channel(16);
            tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let acceptor = acceptor.clone();
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        if let Ok(tls) = acceptor.accept(tcp).await {
                            let _ = tx.send(Ok::<_, std::io::Error>(tls)).await;
                        }
                    });
                }
            });
            let _ = tonic::transport::Server::builder()
                .add_service(pb::ingest_server::IngestServer::new(StandIn(store)))
                .serve_with_incoming(ReceiverStream::new(rx))
                .await;
        });
        Self { runtime: Some(runtime) }
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A state directory as enrollment leaves it: the device's key and certificate from `ca`,
/// pending (so `run` brings up no tunnel), its coordinator unreachable, its ingest at `ingest`.
fn enrolled_state(dir: &Path, ca: &ClusterCa, ingest: SocketAddr) -> PathBuf {
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let key = berqenas_pki::new_key_and_csr("berqenas device").unwrap();
    let identity = Identity::Device { tenant: "acme".into(), id: "d1".into() };
    let cert = ca.sign_csr(&key.csr_pem, &identity, &[], SystemTime::now(), Duration::from_secs(3600)).unwrap();
    std::fs::write(state.join("tls.pem"), format!("{}{}{}", key.key_pem, cert, ca.cert_pem)).unwrap();
    std::fs::write(state.join("ca.pem"), &ca.cert_pem).unwrap();
    let device = serde_json::json!({
        "tenant": "acme", "device_id": "d1", "device_name": "plc1", "state": "pending",
        "tunnel": {
            "address": "198.18.1.10", "subnet": "198.18.1.0/24", "gateway_address": "198.18.1.1",
            "gateway_public_key": "", "endpoint": "", "keepalive_seconds": 25, "source_keep": false
        },
        "realtime_endpoint": ingest.to_string(),
        "coordinators": [format!("127.0.0.1:{}", berqenas_tests::free_port())],
        "labels": {}, "interface": "bqd0"
    });
    std::fs::write(state.join("device.json"), device.to_string()).unwrap();
    std::fs::write(state.join("wg.key"), "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n").unwrap();
    state
}

fn shipped_bin() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| berqenas_tests::workspace_root().join("target"));
    let path = target.join("device").join("berqenas-device");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --profile device -p berqenas-device` (deploy/test.sh does)",
        path.display()
    );
    path
}

fn send(bin: &Path, state: &Path, n: u32) -> std::process::Output {
    berqenas_tests::run(
        bin,
        &["--state-dir", state.to_str().unwrap(), "send", "--type", "reading", "--payload", &format!(r#"{{"n":{n}}}"#)],
        &[],
    )
}

fn pending_in_spool(state: &Path) -> usize {
    let text = std::fs::read_to_string(state.join("spool.jsonl")).unwrap_or_default();
    let mut pending = std::collections::BTreeSet::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(id) = v["event"]["id"].as_str() {
            pending.insert(id.to_string());
        } else if let Some(id) = v["ack"].as_str() {
            pending.remove(id);
        }
    }
    pending.len()
}

#[test]
fn events_survive_ingest_crashes_and_client_kills_and_are_stored_once() {
    // The shipped build (`--profile device`), whose footprint is measured below.
    let bin = shipped_bin();
    let tmp = tempfile::tempdir().unwrap();
    let ca = ClusterCa::generate("events-test", 2026).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", berqenas_tests::free_port()).parse().unwrap();
    let state = enrolled_state(tmp.path(), &ca, addr);
    let store = Arc::new(Mutex::new(Store::default()));
    let ingest = Ingest::start(addr, &ca, store.clone());

    // send without run: acknowledged, stored, nothing left in the spool.
    let out = send(&bin, &state, 0);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("acknowledged"));
    assert_eq!(store.lock().unwrap().events.len(), 1);
    assert_eq!(store.lock().unwrap().publishers, ["berqenas://device/acme/d1"], "the device's certificate publishes");
    assert_eq!(pending_in_spool(&state), 0);

    // Through run: the ingest crashes after acknowledging 3 of the next events.
    store.lock().unwrap().fail_after = Some(3);
    let mut run = Proc::spawn("device-run", &bin, &["--state-dir", state.to_str().unwrap(), "run"], tmp.path());
    wait_for("run's event socket", Duration::from_secs(10), || state.join("events.sock").exists().then_some(()));
    for n in 1..=10 {
        let out = send(&bin, &state, n);
        assert!(String::from_utf8_lossy(&out.stdout).contains("spooled"), "{}", String::from_utf8_lossy(&out.stderr));
    }
    wait_for("all 11 events stored after the crash", Duration::from_secs(30), || {
        (store.lock().unwrap().events.len() == 11).then_some(())
    });
    wait_for("the spool to empty as acks arrive", Duration::from_secs(10), || {
        (pending_in_spool(&state) == 0).then_some(())
    });

    // The ingest goes away; events wait in the spool; the client is SIGKILLed; both come back.
    drop(ingest);
    for n in 11..=15 {
        assert!(String::from_utf8_lossy(&send(&bin, &state, n).stdout).contains("spooled"));
    }
    assert_eq!(pending_in_spool(&state), 5, "unacknowledged events are on disk");
    run.kill();
    let _ingest = Ingest::start(addr, &ca, store.clone());
    let run = Proc::spawn("device-run-2", &bin, &["--state-dir", state.to_str().unwrap(), "run"], tmp.path());
    wait_for("the spooled events resent after the restart", Duration::from_secs(60), || {
        (store.lock().unwrap().events.len() == 16).then_some(())
    });
    wait_for("the spool to empty", Duration::from_secs(10), || (pending_in_spool(&state) == 0).then_some(()));
    // Footprint on small boards (issue 11: `run` under 15 MB), after TLS, HTTP/2 and a stream.
    let status = std::fs::read_to_string(format!("/proc/{}/status", run.pid())).unwrap();
    let peak_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    eprintln!("device run peak RSS: {peak_kb} kB");
    assert!(peak_kb < 15 * 1024, "run's peak RSS is {peak_kb} kB");
    let s = store.lock().unwrap();
    let ns: std::collections::BTreeSet<i64> = s
        .events
        .values()
        .map(|e| serde_json::from_str::<serde_json::Value>(&e.payload_json).unwrap()["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, (0..=15).collect(), "every event once");
    assert!(s.events.values().all(|e| e.r#type == "reading" && e.id.len() == 36));
}
