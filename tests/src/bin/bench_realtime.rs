//! `deploy/bench.sh realtime`: the db node's realtime ingest (the agent's `realtime` module in a
//! process of its own, on loopback, with a real PostgreSQL) under 100 simulated devices on one
//! tenant, each a gRPC stream with its own device certificate. Figures: sustained events/s
//! committed and publish→commit p50/p99 (closed loop, 8 batches in flight per device); at a
//! paced 5,000 events/s, publish→commit and publish→subscriber (SSE) p50/p99; the ingest's RSS;
//! side by side in the same run, raw `COPY` of as many rows with psql, and one INSERT per event
//! with psql. One JSON line. Usage: bench-realtime (it runs itself as `bench-realtime serve URL
//! DIR PORT`: the realtime role alone for `realtime::bench_tenant()`, which the kill test
//! SIGKILLs too).

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "benchmark code: a failed setup step is a failed run"
)]

use berqenas_node_agent::driver::Driver;
use berqenas_proto::realtime::PublishRequest;
use berqenas_tests::bench::{percentile, round2};
use berqenas_tests::postgres::Postgres;
use berqenas_tests::realtime::{
    bench_tenant, customer_key, device, event, ingest, uuid, write_node_files, Pki, SseReader,
};
use berqenas_tests::{free_port, Proc};
use serde_json::json;
use std::collections::VecDeque;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

const DEVICES: usize = 100;
const BATCH: usize = 100;
const IN_FLIGHT: usize = 8;
const PACED_RATE: usize = 5_000;

fn micros_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// `serve URL DIR PORT`: the realtime role alone, as the agent runs it.
fn serve(url: &str, dir: &Path, port: u16) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let listen: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let r =
            berqenas_node_agent::realtime::Realtime::new(berqenas_node_agent::config::RealtimeConfig::new(listen), url)
                .expect("realtime");
        r.set(&[bench_tenant()]);
        r.converge().await;
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect("pem");
        let config = berqenas_node_agent::realtime::listener::server_config(
            &read("ca.pem"),
            &read("node.pem"),
            &read("node.key"),
        )
        .expect("tls");
        let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
        let tls: berqenas_node_agent::realtime::listener::TlsSource = Arc::new(move || Ok(config.clone()));
        r.serve(listener, tls).await.expect("serve");
    });
}

fn status_kib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0)
}

/// One device's closed loop for `secs`: batches of `BATCH`, `IN_FLIGHT` awaiting their ack.
async fn closed_loop(pki: Arc<Pki>, port: u16, i: usize, until: Instant, lat: Arc<Mutex<Vec<f64>>>) -> usize {
    let mut client = ingest(port, pki.client(Some(&device("bench", &format!("dev-{i}"))))).await;
    let (tx, rx) = tokio::sync::mpsc::channel(IN_FLIGHT);
    let mut acks = client.publish(tokio_stream::wrappers::ReceiverStream::new(rx)).await.expect("open").into_inner();
    let sent: Arc<Mutex<VecDeque<Instant>>> = Arc::default();
    let s2 = sent.clone();
    // At most IN_FLIGHT batches unacknowledged, as a device keeping them on disk would.
    let window = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let w2 = window.clone();
    let sender = tokio::spawn(async move {
        let mut seq = 0u64;
        while Instant::now() < until {
            let Ok(permit) = w2.clone().acquire_owned().await else { return };
            permit.forget();
            let events = (0..BATCH)
                .map(|_| {
                    seq += 1;
                    event(&uuid(), "load", &format!("{{\"seq\":{seq},\"v\":21.5,\"dev\":{i}}}"))
                })
                .collect();
            s2.lock().unwrap().push_back(Instant::now());
            if tx.send(PublishRequest { events }).await.is_err() {
                return;
            }
        }
    });
    let mut acked = 0;
    let mut mine = Vec::new();
    while let Ok(Some(a)) = acks.message().await {
        acked += a.ids.len();
        window.add_permits(1);
        if let Some(t) = sent.lock().unwrap().pop_front() {
            mine.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    sender.await.ok();
    lat.lock().unwrap().extend(mine);
    acked
}

/// One device paced at `per_s` events/s in batches every 100 ms, for `secs`.
async fn paced(pki: Arc<Pki>, port: u16, i: usize, per_s: usize, until: Instant, lat: Arc<Mutex<Vec<f64>>>) {
    let mut client = ingest(port, pki.client(Some(&device("bench", &format!("dev-{i}"))))).await;
    let (tx, rx) = tokio::sync::mpsc::channel(IN_FLIGHT);
    let mut acks = client.publish(tokio_stream::wrappers::ReceiverStream::new(rx)).await.expect("open").into_inner();
    let sent: Arc<Mutex<VecDeque<Instant>>> = Arc::default();
    let s2 = sent.clone();
    let per_tick = (per_s / 10).max(1);
    let sender = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tokio::time::sleep(Duration::from_millis((i as u64 * 7) % 100)).await;
        while Instant::now() < until {
            tick.tick().await;
            let events = (0..per_tick).map(|_| event(&uuid(), "lat", &format!("{{\"t\":{}}}", micros_now()))).collect();
            s2.lock().unwrap().push_back(Instant::now());
            if tx.send(PublishRequest { events }).await.is_err() {
                return;
            }
        }
    });
    let mut mine = Vec::new();
    while let Ok(Some(_)) = acks.message().await {
        if let Some(t) = sent.lock().unwrap().pop_front() {
            mine.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    sender.await.ok();
    lat.lock().unwrap().extend(mine);
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v
}

fn psql(pg: &Postgres, args: &[&str]) -> Duration {
    let started = Instant::now();
    let out = Command::new(pg.bin.join("psql"))
        .args(["-h", "127.0.0.1", "-p", &pg.port.to_string(), "-U", "postgres", "-d", "postgres", "-q", "-X"])
        .args(args)
        .env("PGPASSWORD", &pg.password)
        .output()
        .expect("psql");
    assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
    started.elapsed()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve") {
        let port: u16 = args[4].parse().expect("port");
        serve(&args[2], Path::new(&args[3]), port);
        return;
    }
    let secs: u64 = std::env::var("BERQENAS_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let tmp = tempfile::tempdir().expect("tmp");
    let pg = Postgres::start_loopback(tmp.path());
    let url = format!("postgres://postgres:{}@127.0.0.1:{}/postgres", pg.password, pg.port);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut d = berqenas_node_agent::db::postgres::PostgresDriver::new(
            url.clone(),
            None,
            Duration::from_secs(10),
            Default::default(),
        );
        let st = d.reconcile(&[bench_tenant()]).await;
        assert!(st.iter().all(|s| s.ready), "{st:?}");
    });
    let pki = Arc::new(Pki::new());
    write_node_files(&pki, tmp.path());
    let port = free_port();
    let me = std::env::current_exe().expect("exe");
    let dir = tmp.path().to_string_lossy().into_owned();
    let server = Proc::spawn("ingest", &me, &["serve", &url, &dir, &port.to_string()], tmp.path());
    berqenas_tests::wait_for("the ingest to listen", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let pid = server.pid();

    // 1. Paced at 5,000 events/s with a subscriber (first, so no backlog is in the way).
    let paced_commit: Arc<Mutex<Vec<f64>>> = Arc::default();
    let sub_lat: Vec<f64> = rt.block_on(async {
        let http = pki.http_client();
        let key = customer_key(7).0;
        let resp = loop {
            let r = http
                .get(format!("https://127.0.0.1:{port}/v1/tenants/bench/events?type=lat"))
                .bearer_auth(&key)
                .send()
                .await
                .expect("subscribe");
            if r.status() != 503 {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(resp.status(), 200);
        let mut reader = SseReader::new(resp);
        let until = Instant::now() + Duration::from_secs(secs);
        let per_device = PACED_RATE / DEVICES;
        let tasks: Vec<_> = (0..DEVICES)
            .map(|i| tokio::spawn(paced(pki.clone(), port, i, per_device, until, paced_commit.clone())))
            .collect();
        let expected = PACED_RATE * secs as usize;
        let mut lat = Vec::with_capacity(expected);
        while lat.len() < expected * 95 / 100 {
            let Some((_, data)) = reader.next(Duration::from_secs(5)).await else { break };
            let v: serde_json::Value = serde_json::from_str(&data).expect("json");
            if let Some(t) = v["payload"]["t"].as_u64() {
                lat.push(micros_now().saturating_sub(t) as f64 / 1000.0);
            }
        }
        for t in tasks {
            t.await.ok();
        }
        lat
    });
    let sub_lat = sorted(sub_lat);
    let paced_commit = sorted(paced_commit.lock().unwrap().clone());

    // 2. Sustained: 100 devices, closed loop.
    let commit_lat: Arc<Mutex<Vec<f64>>> = Arc::default();
    let (committed, took) = rt.block_on(async {
        let started = Instant::now();
        let until = started + Duration::from_secs(secs);
        let tasks: Vec<_> =
            (0..DEVICES).map(|i| tokio::spawn(closed_loop(pki.clone(), port, i, until, commit_lat.clone()))).collect();
        let mut n = 0;
        for t in tasks {
            n += t.await.expect("device");
        }
        (n, started.elapsed())
    });
    let rss_mb = status_kib(pid, "VmRSS:") / 1024.0;
    let hwm_mb = status_kib(pid, "VmHWM:") / 1024.0;
    let per_s = committed as f64 / took.as_secs_f64();
    let commit_lat = sorted(commit_lat.lock().unwrap().clone());

    // 3. The same number of rows with psql, the ingest stopped (so it takes no CPU from them).: raw COPY, and one INSERT per event.
    drop(server);
    let rows = committed.clamp(10_000, 1_000_000);
    let csv = tmp.path().join("rows.csv");
    let mut text = String::with_capacity(rows * 110);
    for i in 0..rows {
        text.push_str(&format!(
            "{},dev-{},load,\"{{\"\"seq\"\":{i},\"\"v\"\":21.5,\"\"dev\"\":{}}}\"\n",
            uuid(),
            i % DEVICES,
            i % DEVICES
        ));
    }
    std::fs::write(&csv, text).expect("csv");
    let copy = psql(
        &pg,
        &[
            "-c",
            &format!(
                "\\copy tenant_bench.events (id, device_id, event_type, payload) FROM '{}' WITH (FORMAT csv)",
                csv.display()
            ),
        ],
    );
    let copy_per_s = rows as f64 / copy.as_secs_f64();
    let inserts = 20_000;
    let sql = tmp.path().join("inserts.sql");
    let mut text = String::with_capacity(inserts * 160);
    for i in 0..inserts {
        text.push_str(&format!(
            "INSERT INTO tenant_bench.events (id, device_id, event_type, payload) VALUES ('{}', 'dev-{}', 'load', '{{\"seq\":{i}}}');\n",
            uuid(),
            i % DEVICES
        ));
    }
    std::fs::write(&sql, text).expect("sql");
    let insert = psql(&pg, &["-f", &sql.to_string_lossy()]);
    let insert_per_s = inserts as f64 / insert.as_secs_f64();

    let line = json!({
        "bench": "realtime",
        "devices": DEVICES,
        "batch": BATCH,
        "seconds": secs,
        "committed_events": committed,
        "events_per_s": round2(per_s),
        "publish_to_commit_p50_ms": round2(percentile(&commit_lat, 0.5)),
        "publish_to_commit_p99_ms": round2(percentile(&commit_lat, 0.99)),
        "paced_rate": PACED_RATE,
        "paced_publish_to_commit_p50_ms": round2(percentile(&paced_commit, 0.5)),
        "paced_publish_to_commit_p99_ms": round2(percentile(&paced_commit, 0.99)),
        "paced_subscriber_events": sub_lat.len(),
        "publish_to_subscriber_p50_ms": round2(percentile(&sub_lat, 0.5)),
        "publish_to_subscriber_p99_ms": round2(percentile(&sub_lat, 0.99)),
        "ingest_rss_mb": round2(rss_mb),
        "ingest_peak_rss_mb": round2(hwm_mb),
        "psql_copy_rows": rows,
        "psql_copy_events_per_s": round2(copy_per_s),
        "ingest_vs_copy": round2(per_s / copy_per_s),
        "psql_insert_per_event_events_per_s": round2(insert_per_s),
        "postgres": "throwaway, fsync=off, same host",
    });
    println!("{line}");
}
