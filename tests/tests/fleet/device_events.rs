//! Events from the device client reach the real realtime ingest exactly once from the device's
//! point of view: `send` without `run` waits for the acknowledgement (given after commit);
//! through `run`'s socket, an ingest process SIGKILLed mid-stream and a client SIGKILLed with
//! events in its spool lose nothing: every event the client saw acknowledged is in the table,
//! everything else is resent, each event is stored once, and the spool empties only as
//! acknowledgements arrive.
//!
//! The ingest is the node agent's realtime module in a process of its own (`bench-realtime
//! serve`: PostgreSQL with wal_level = logical, tenant `bench` made by the agent's PostgreSQL
//! driver, devices `dev-0`…, a node certificate of a test cluster CA), so it can be SIGKILLed
//! and restarted on the same port; the device's certificate comes from the same CA.

use crate::realtime::{env, ingest_process, runtime};
use berqenas_pki::{ClusterCa, Identity};
use berqenas_tests::{wait_for, Proc};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A state directory as enrollment leaves it: the device's key and certificate from `ca`,
/// pending (so `run` brings up no tunnel), its coordinator unreachable, its ingest at `ingest`.
fn enrolled_state(dir: &Path, ca: &ClusterCa, ingest: SocketAddr) -> PathBuf {
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let key = berqenas_pki::new_key_and_csr("berqenas device").unwrap();
    let identity = Identity::Device { tenant: "bench".into(), id: "dev-0".into() };
    let cert = ca.sign_csr(&key.csr_pem, &identity, &[], SystemTime::now(), Duration::from_secs(3600)).unwrap();
    std::fs::write(state.join("tls.pem"), format!("{}{}{}", key.key_pem, cert, ca.cert_pem)).unwrap();
    std::fs::write(state.join("ca.pem"), &ca.cert_pem).unwrap();
    let device = serde_json::json!({
        "tenant": "bench", "device_id": "dev-0", "device_name": "plc1", "state": "pending",
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

/// The ids the client saw acknowledged (its spool's ack lines).
fn acked_in_spool(state: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(state.join("spool.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["ack"].as_str().map(str::to_string))
        .collect()
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

/// The stored events: (id, n of the payload), every row of tenant `bench`.
fn stored(rt: &tokio::runtime::Runtime, db: &sqlx::PgPool) -> Vec<(String, i64)> {
    rt.block_on(async {
        sqlx::query_as(
            "SELECT id::text, (payload->>'n')::bigint FROM tenant_bench.events WHERE device_id = 'dev-0' ORDER BY 2",
        )
        .fetch_all(db)
        .await
        .expect("rows")
    })
}

fn ns(rows: &[(String, i64)]) -> Vec<i64> {
    rows.iter().map(|r| r.1).collect()
}

#[test]
fn events_survive_ingest_kills_and_client_kills_and_are_stored_once() {
    // The shipped build (`--profile device`), whose footprint is measured below.
    let bin = shipped_bin();
    let rt = runtime();
    let e = rt.block_on(env(&[berqenas_tests::realtime::bench_tenant()]));
    berqenas_tests::realtime::write_node_files(&e.pki, e.tmp.path());
    let port = berqenas_tests::free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let state = enrolled_state(e.tmp.path(), &e.pki.ca, addr);
    let mut ingest = ingest_process(&e, port);

    // send without run: acknowledged after commit, stored with the certificate's device id.
    let out = send(&bin, &state, 0);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("acknowledged"));
    assert_eq!(ns(&stored(&rt, &e.db)), [0], "stored at acknowledgement, as device dev-0");
    assert_eq!(pending_in_spool(&state), 0);

    // Through run: the ingest process is SIGKILLed while the events stream in.
    let mut run = Proc::spawn("device-run", &bin, &["--state-dir", state.to_str().unwrap(), "run"], e.tmp.path());
    wait_for("run's event socket", Duration::from_secs(10), || state.join("events.sock").exists().then_some(()));
    for n in 1..=10 {
        let out = send(&bin, &state, n);
        assert!(String::from_utf8_lossy(&out.stdout).contains("spooled"), "{}", String::from_utf8_lossy(&out.stderr));
        if n == 5 {
            // Killed once the stream has delivered part of what run relays.
            wait_for("some of run's events stored", Duration::from_secs(20), || {
                (stored(&rt, &e.db).len() >= 2).then_some(())
            });
            ingest.kill();
        }
    }
    let ids: BTreeSet<String> = stored(&rt, &e.db).into_iter().map(|r| r.0).collect();
    let acked = acked_in_spool(&state);
    assert!(acked.is_subset(&ids), "every event the client saw acknowledged is stored: {acked:?} ⊄ {ids:?}");
    eprintln!("stored when the ingest was killed: {} of 11", ids.len());
    let second = ingest_process(&e, port);
    wait_for("all 11 events stored after the ingest's restart", Duration::from_secs(60), || {
        (ns(&stored(&rt, &e.db)) == (0..=10).collect::<Vec<_>>()).then_some(())
    });
    wait_for("the spool to empty as acks arrive", Duration::from_secs(10), || {
        (pending_in_spool(&state) == 0).then_some(())
    });

    // The ingest goes away; events wait in the spool; the client is SIGKILLed; both come back.
    drop(second);
    for n in 11..=15 {
        assert!(String::from_utf8_lossy(&send(&bin, &state, n).stdout).contains("spooled"));
    }
    assert_eq!(pending_in_spool(&state), 5, "unacknowledged events are on disk");
    run.kill();
    let _third = ingest_process(&e, port);
    let run = Proc::spawn("device-run-2", &bin, &["--state-dir", state.to_str().unwrap(), "run"], e.tmp.path());
    wait_for("the spooled events resent after the restart", Duration::from_secs(60), || {
        (ns(&stored(&rt, &e.db)) == (0..=15).collect::<Vec<_>>()).then_some(())
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
    let rows = stored(&rt, &e.db);
    assert!(rows.iter().all(|r| r.0.len() == 36), "client-made UUIDs: {rows:?}");
}
