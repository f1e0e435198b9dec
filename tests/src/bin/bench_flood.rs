//! `deploy/bench.sh flood`: a 1-node release coordinator under a 60 s anonymous flood at full
//! speed (keyless GETs, bare TCP connect/close on the node and Raft ports, garbage instead of a
//! TLS ClientHello) while an admin creates a tenant every 500 ms throughout. Prints one JSON
//! line: requests sent, Raft and audit entries the flood added, coordinator RSS before/after,
//! create p99 idle vs flooded. Given a second binary (a baseline, e.g. a build from before the
//! refusal accounting), the same run measures it too, side by side.
//! Usage: bench-flood PATH/TO/berqenas-coordinator [PATH/TO/baseline-berqenas-coordinator]

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: it starts the project's binaries and lab tools, and a failed setup step is a failed test"
)]

use berqenas_tests::bench::{percentile, proc_stats, round2, BenchCluster};
use berqenas_tests::Proc;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

const CREATES: usize = 100;
const FLOOD: Duration = Duration::from_secs(60);
/// Creates during the flood: one per slot, spread over the whole flood.
const CREATE_EVERY: Duration = Duration::from_millis(500);
const GET_TASKS: usize = 4;
const CONNECT_TASKS: usize = 2;
const GARBAGE_TASKS: usize = 1;

async fn get(http: &reqwest::Client, url: &str, key: &str) -> Value {
    http.get(url).bearer_auth(key).send().await.expect("request").json().await.expect("JSON")
}

/// `None` where the coordinator has no such route (an older baseline).
async fn get_opt(http: &reqwest::Client, url: &str, key: &str) -> Option<Value> {
    let resp = http.get(url).bearer_auth(key).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.json().await.ok()
}

/// Creates `n` tenants one after another, each starting at least `every` after the previous
/// one; returns the p99 latency in ms.
async fn creates_p99(http: &reqwest::Client, base: &str, key: &str, prefix: &str, n: usize, every: Duration) -> f64 {
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        tokio::time::sleep_until((start + every * i as u32).into()).await;
        let t = Instant::now();
        let resp = http
            .post(format!("{base}/api/v1/tenant"))
            .bearer_auth(key)
            .json(&json!({"name": format!("{prefix}{i:04}"), "db_quota": "1GB"}))
            .send()
            .await
            .expect("create");
        assert_eq!(resp.status().as_u16(), 201, "{}", resp.text().await.unwrap_or_default());
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    round2(percentile(&lat, 0.99))
}

#[derive(Default)]
struct Sent {
    gets: AtomicU64,
    unauthorized: AtomicU64,
    throttled: AtomicU64,
    connects: AtomicU64,
    garbage: AtomicU64,
}

#[tokio::main]
async fn main() {
    let bin = PathBuf::from(std::env::args().nth(1).expect("usage: bench-flood PATH/TO/berqenas-coordinator"));
    let baseline = std::env::args().nth(2).map(PathBuf::from);
    let after = run(&bin).await;
    let mut line = json!({
        "bench": "flood",
        "nodes": 1,
        "sources": 1,
        "flood_s": FLOOD.as_secs(),
        "after": after,
        "targets": {"anonymous_entries_min_gap_s": ">= 60 (at most one per source per minute)", "create_p99_ratio": "<= 2", "rss_growth_mb": "< 20"},
    });
    if let Some(b) = baseline {
        line["before"] = run(&b).await;
        line["before_binary"] = json!(b.display().to_string());
    }
    println!("{line}");
}

/// Pins every thread of process `pid` to `cores` (taskset); false where that is not possible
/// (a single core, or no taskset).
fn pin(pid: u32, cores: &str) -> bool {
    let online = std::thread::available_parallelism().map_or(1, usize::from);
    online > 1
        && std::process::Command::new("taskset")
            .args(["-a", "-p", "-c", cores, &pid.to_string()])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// One coordinator, one flood; the figures.
async fn run(bin: &std::path::Path) -> Value {
    let cluster = BenchCluster::start(bin, 1, "100.64.0.0/10");
    let node = &cluster.nodes[0];
    let (base, key) = (cluster.first_api(), cluster.key.clone());
    let pid = node.proc.as_ref().map(Proc::pid).unwrap_or(0);
    let http = reqwest::Client::new();
    // The attacker is another host: the coordinator gets core 0, this flood client the rest, so
    // the figures compare the coordinator with itself rather than with the client's CPU use.
    let pinned = pin(pid, "0") && pin(std::process::id(), "1-1023");

    // Idle figure first, then the baseline of the log and the trail.
    let idle_p99 = creates_p99(&http, &base, &key, "idle", CREATES, CREATE_EVERY / 10).await;
    let index = |v: Value| v["last_log_index"].as_u64().expect("log index");
    let total = |v: Value| v["total"].as_u64().expect("total");
    let index_before = index(get(&http, &format!("{base}/api/v1/cluster"), &key).await);
    let audit_before = total(get(&http, &format!("{base}/api/v1/audit/verify"), &key).await);
    let (rss_before, _, cpu_before) = proc_stats(pid);

    let sent = Arc::new(Sent::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..GET_TASKS {
        let (sent, stop, base) = (sent.clone(), stop.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            while !stop.load(Ordering::Relaxed) {
                if let Ok(resp) = http.get(format!("{base}/api/v1/tenants")).send().await {
                    let counter = if resp.status().as_u16() == 429 { &sent.throttled } else { &sent.unauthorized };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                sent.gets.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for i in 0..CONNECT_TASKS {
        let port = if i % 2 == 0 { node.node } else { node.raft };
        let (sent, stop) = (sent.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                drop(tokio::net::TcpStream::connect(("127.0.0.1", port)).await);
                sent.connects.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for _ in 0..GARBAGE_TASKS {
        let (sent, stop, port) = (sent.clone(), stop.clone(), node.node);
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                    // A TLS record header announcing a handshake, then junk.
                    let _ = s.write_all(b"\x16\x03\x01\x00\x20not a client hello at all, sorry").await;
                    let _ = s.shutdown().await;
                }
                sent.garbage.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    // Creates throughout the flood (one every CREATE_EVERY), then the rest of the flood.
    let started = Instant::now();
    let flood_p99 = creates_p99(&http, &base, &key, "flood", CREATES, CREATE_EVERY).await;
    tokio::time::sleep(FLOOD.saturating_sub(started.elapsed())).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let flood_secs = started.elapsed().as_secs_f64();
    let (rss_after, peak, cpu_after) = proc_stats(pid);

    // Wait for this window's summaries to be written (where the coordinator summarises), then
    // count what the flood added.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut stats = Value::Null;
    while let Some(s) = get_opt(&http, &format!("{base}/api/v1/refusals"), &key).await {
        stats = s;
        if stats["pending"].as_array().is_some_and(Vec::is_empty) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let index_after = index(get(&http, &format!("{base}/api/v1/cluster"), &key).await);
    let audit_after = total(get(&http, &format!("{base}/api/v1/audit/verify"), &key).await);
    // When the flood's entries were written: a source's entries must be a window apart.
    let mut times = Vec::new();
    let mut seq = audit_before;
    while let Some(page) = get_opt(&http, &format!("{base}/api/v1/audit?after={seq}&limit=1000"), &key).await {
        let page = page.as_array().cloned().unwrap_or_default();
        let Some(last) = page.iter().filter_map(|e| e["seq"].as_u64()).max() else { break };
        seq = last;
        times.extend(page.iter().filter(|e| e["actor"] == "anonymous").filter_map(|e| e["time_ms"].as_u64()));
    }
    let min_gap_s = times.windows(2).map(|w| w[1].saturating_sub(w[0])).min().map(|ms| round2(ms as f64 / 1000.0));
    let raft_added = index_after - index_before;
    // Each create is one Raft entry and one audit entry; the rest is the flood's.
    let raft_by_anonymous = raft_added.saturating_sub(CREATES as u64);
    let audit_by_anonymous = (audit_after - audit_before).saturating_sub(CREATES as u64);
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let sent_total = load(&sent.gets) + load(&sent.connects) + load(&sent.garbage);
    // The entries span the flood plus the wait for its last summary.
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    json!({
        "binary": bin.display().to_string(),
        "coordinator_pinned_to_core_0": pinned,
        "requests_sent": {
            "keyless_gets": load(&sent.gets),
            "answered_401_403": load(&sent.unauthorized),
            "answered_429": load(&sent.throttled),
            "tcp_connect_close": load(&sent.connects),
            "garbage_tls": load(&sent.garbage),
            "total": sent_total,
            "per_s": round2(sent_total as f64 / flood_secs),
        },
        "refusals_counted": stats["refused_total"],
        "raft_entries_added": raft_added,
        "raft_entries_by_anonymous": raft_by_anonymous,
        "raft_entries_by_anonymous_per_source_per_minute": round2(raft_by_anonymous as f64 / minutes),
        "audit_entries_by_anonymous": audit_by_anonymous,
        "anonymous_entries_min_gap_s": min_gap_s,
        "rss_mb_before": round2(rss_before),
        "rss_mb_after": round2(rss_after),
        "rss_growth_mb": round2(rss_after - rss_before),
        "peak_rss_mb": round2(peak),
        "coordinator_cpu_s_during_flood": round2(cpu_after - cpu_before),
        "create_p99_idle_ms": idle_p99,
        "create_p99_flood_ms": flood_p99,
        "create_p99_ratio": if idle_p99 > 0.0 { round2(flood_p99 / idle_p99) } else { 0.0 },
    })
}
