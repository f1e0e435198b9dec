//! `deploy/bench.sh coordinator`: a 3-node loopback cluster of release coordinators next to a
//! 3-member etcd cluster on the same host. Measures one replicated write per request on both with
//! the same client code (etcd `PUT` of a 600-byte value vs `PATCH /api/v1/tenant/acme`) at 1, 16
//! and 64 clients (the two taking turns in 1 s slices, 5 s each per level), the disk's fsync latency (the floor) next to single-client commit latency,
//! 1,000 creates with 16 concurrent clients, leader failover time, and each coordinator's RSS with
//! 10,000 tenants, then with 10,000 tenants and 1,000,000 audit entries (one follower stopped
//! during the fill); then the last snapshot the leader built (time, file size, bytes it ships),
//! a restarted follower's memory (the load path) and the stopped follower's catch-up through a
//! snapshot of the whole trail (time, memory). Prints one JSON line.
//! Usage: bench-coordinator PATH/TO/berqenas-coordinator PATH/TO/etcd

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: it starts the project's binaries and lab tools, and a failed setup step is a failed test"
)]

use berqenas_tests::bench::{
    addr, closed_loop, closed_loop_samples, percentile, proc_stats, round2, BenchCluster, LoadFigures, Samples,
};
use berqenas_tests::etcd::EtcdCluster;
use berqenas_tests::{wait_for, Proc};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENTS: usize = 16;
const CREATES: usize = 1_000;
const SINGLE: usize = 200;
const TOTAL_TENANTS: usize = 10_000;
/// Audit entries for the history memory figure (`BERQENAS_BENCH_AUDIT_ENTRIES` overrides), and
/// the longest the bench spends writing them.
const AUDIT_ENTRIES: u64 = 1_000_000;
const AUDIT_FILL_LIMIT: Duration = Duration::from_secs(20 * 60);
/// Concurrent clients writing the audit fill.
const FILL_CLIENTS: usize = 128;
/// Concurrent clients of the side-by-side write comparison, and how long each system runs at each
/// level: `SLICES` slices of `SLICE`, the two systems taking turns (etcd first in even slices,
/// Berqenas first in odd ones), so both see the same load from whatever else the host runs.
const LEVELS: [usize; 3] = [1, 16, 64];
const SLICES: u32 = 5;
const SLICE: Duration = Duration::from_secs(1);
/// 600 bytes ("AAA" × 200), base64-encoded as the etcd v3 JSON gateway wants it.
const ETCD_VALUE_B64: &str = "QUFB";
const ETCD_KEY_B64: &str = "YmVuY2g="; // "bench"

/// One replicated write per request on each system, level by level: etcd `PUT` of a 600-byte
/// value against `PATCH /api/v1/tenant/acme` changing `events_per_min` each time, in alternating
/// slices (see `SLICES`).
async fn compare_with_etcd(etcd: &EtcdCluster, berqenas: &str, key: &str) -> Vec<Value> {
    let probe = reqwest::Client::new();
    let etcd_leader = etcd.wait_leader(&probe).await;
    create(&probe, berqenas, key, "acme").await.expect("create acme");
    let (url, value) = (format!("{etcd_leader}/v3/kv/put"), ETCD_VALUE_B64.repeat(200));
    let put = Arc::new(move |http: &reqwest::Client, _: u64| {
        http.post(&url).json(&json!({"key": ETCD_KEY_B64, "value": value}))
    });
    let (url, key) = (format!("{berqenas}/api/v1/tenant/acme"), key.to_string());
    let patch = Arc::new(move |http: &reqwest::Client, n: u64| {
        let events = 2_000 + (n % 1_000_000);
        http.patch(&url).bearer_auth(&key).json(&json!({"events_per_min": events}))
    });
    let mut out = Vec::new();
    for clients in LEVELS {
        let (mut e, mut b) = (Samples::default(), Samples::default());
        for slice in 0..SLICES {
            if slice % 2 == 0 {
                e.merge(closed_loop_samples(clients, SLICE, put.clone()).await);
                b.merge(closed_loop_samples(clients, SLICE, patch.clone()).await);
            } else {
                b.merge(closed_loop_samples(clients, SLICE, patch.clone()).await);
                e.merge(closed_loop_samples(clients, SLICE, put.clone()).await);
            }
        }
        out.push(ratio_line(&b.figures(), &e.figures()));
    }
    out
}

/// How many audit entries the coordinator at `base` holds (as it stands, without a read barrier).
async fn audit_count(http: &reqwest::Client, base: &str, key: &str) -> u64 {
    let url = format!("{base}/api/v1/cluster?consistency=stale");
    let status: Value = match http.get(url).bearer_auth(key).send().await {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => Value::Null,
    };
    status["audit_entries"].as_u64().unwrap_or(0)
}

fn ratio_line(berqenas: &LoadFigures, etcd: &LoadFigures) -> Value {
    let ratio = if etcd.per_s > 0.0 { round2(berqenas.per_s / etcd.per_s) } else { 0.0 };
    json!({"clients": berqenas.clients, "berqenas": berqenas.json(), "etcd": etcd.json(), "throughput_ratio": ratio})
}

fn stats_ms(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (round2(percentile(&v, 0.5)), round2(percentile(&v, 0.99)))
}

/// fsync latency of the disk the coordinators write to: 4 KiB write + fdatasync.
fn fsync_floor(dir: &Path) -> (f64, f64) {
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path).expect("probe file");
    let block = vec![7u8; 4096];
    let mut samples = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        f.write_all(&block).expect("write");
        f.sync_data().expect("fsync");
        samples.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let _ = std::fs::remove_file(path);
    stats_ms(samples)
}

/// The last "snapshot built" line of a coordinator's log, as numbers.
fn last_snapshot(log: &str) -> Value {
    let Some(line) = log.lines().rev().find(|l| l.contains("snapshot built")) else { return Value::Null };
    // Strip the terminal colours, then read `key=value` pairs.
    let mut plain = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let field = |k: &str| {
        plain.split_whitespace().find_map(|w| w.strip_prefix(&format!("{k}="))?.parse::<u64>().ok()).unwrap_or(0)
    };
    json!({
        "build_ms": field("ms"),
        "file_bytes": field("file_bytes"),
        "audit_entries": field("audit_entries"),
        "shipped_bytes": field("shipped_bytes"),
    })
}

fn rss_of(cluster: &BenchCluster, i: usize) -> Value {
    let pid = cluster.nodes[i].proc.as_ref().map(Proc::pid).unwrap_or(0);
    let (rss, peak, _) = proc_stats(pid);
    json!({"id": cluster.nodes[i].id, "rss_mb": round2(rss), "peak_rss_mb": round2(peak)})
}

/// Each coordinator's resident and peak memory, in MB.
fn memory(cluster: &BenchCluster) -> Vec<Value> {
    cluster
        .nodes
        .iter()
        .map(|n| {
            let pid = n.proc.as_ref().map(Proc::pid).unwrap_or(0);
            let (rss, peak, _) = proc_stats(pid);
            json!({"id": n.id, "rss_mb": round2(rss), "peak_rss_mb": round2(peak)})
        })
        .collect()
}

async fn create(http: &reqwest::Client, base: &str, key: &str, name: &str) -> Result<(), String> {
    let resp = http
        .post(format!("{base}/api/v1/tenant"))
        .bearer_auth(key)
        .json(&json!({"name": name, "db_quota": "1GB", "vpn_enabled": true, "public_api": false}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if resp.status().as_u16() == 201 {
        Ok(())
    } else {
        Err(format!("{} {}", resp.status(), resp.text().await.unwrap_or_default()))
    }
}

/// Creates `names` with `clients` concurrent workers; returns per-request latencies (ms) and wall time.
async fn create_many(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    names: Vec<String>,
    clients: usize,
) -> (Vec<f64>, Duration) {
    let names = Arc::new(names);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, base, key, names, next) =
            (http.clone(), base.to_string(), key.to_string(), names.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(name) = names.get(i) else { break };
                let t = Instant::now();
                if let Err(e) = create(&http, &base, &key, name).await {
                    panic!("create {name} failed: {e}");
                }
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("worker"));
    }
    (all, started.elapsed())
}

#[tokio::main]
async fn main() {
    const USAGE: &str = "usage: bench-coordinator PATH/TO/berqenas-coordinator PATH/TO/etcd";
    let bin = PathBuf::from(std::env::args().nth(1).expect(USAGE));
    let etcd_bin = PathBuf::from(std::env::args().nth(2).expect(USAGE));
    let etcd = EtcdCluster::start(&etcd_bin, 3);
    // One admin key drives every client here: its rate limit (an admission policy, not the write
    // path) is lifted so the comparison measures the write path.
    let mut cluster = BenchCluster::start_with(&bin, 3, "100.64.0.0/10", &["--admin-key-rate", "0"]);
    let key = cluster.key.clone();
    let (fsync_p50, fsync_p99) = fsync_floor(&cluster.nodes[0].dir);
    let http = reqwest::Client::builder().pool_max_idle_per_host(CLIENTS).build().expect("client");
    let leader_id = wait_for("leader", Duration::from_secs(10), || cluster.leader());
    let leader_base = format!("http://{}", addr(cluster.nodes[(leader_id - 1) as usize].api));

    let vs_etcd = compare_with_etcd(&etcd, &leader_base, &key).await;
    drop(etcd);
    if std::env::var_os("BERQENAS_BENCH_VS_ETCD_ONLY").is_some() {
        println!("{}", json!({"bench": "coordinator", "nodes": 3, "vs_etcd": vs_etcd}));
        return;
    }

    // Single client: commit latency, one request at a time.
    let single: Vec<String> = (0..SINGLE).map(|i| format!("s{i:05}")).collect();
    let (lat, _) = create_many(&http, &leader_base, &key, single, 1).await;
    let (single_p50, single_p99) = stats_ms(lat);

    // 1,000 creates with 16 clients.
    let batch: Vec<String> = (0..CREATES).map(|i| format!("c{i:05}")).collect();
    let (lat, wall) = create_many(&http, &leader_base, &key, batch, CLIENTS).await;
    let throughput = round2(CREATES as f64 / wall.as_secs_f64());
    let (p50, p99) = stats_ms(lat);

    // Fill to 10,000 tenants for the memory figure.
    let rest: Vec<String> = (0..TOTAL_TENANTS - CREATES - SINGLE).map(|i| format!("f{i:05}")).collect();
    let (_, fill_wall) = create_many(&http, &leader_base, &key, rest, CLIENTS).await;
    let rss = memory(&cluster);

    // Grow the audit trail to AUDIT_ENTRIES with cheap real writes through the API (a PATCH
    // each, FILL_CLIENTS at a time), one follower stopped all along; then measure each
    // coordinator's memory again: history lives in the store, not in RSS.
    let leader_idx = (leader_id - 1) as usize;
    let (lagging, restarted) = ((leader_idx + 1) % 3, (leader_idx + 2) % 3);
    cluster.stop(lagging);
    let audit_target =
        std::env::var("BERQENAS_BENCH_AUDIT_ENTRIES").ok().and_then(|v| v.parse().ok()).unwrap_or(AUDIT_ENTRIES);
    let fill_started = Instant::now();
    let mut audit_entries = audit_count(&http, &leader_base, &key).await;
    let mut fill_rates = Vec::new();
    while audit_entries < audit_target && fill_started.elapsed() < AUDIT_FILL_LIMIT {
        let (url, patch_key) = (format!("{leader_base}/api/v1/tenant/acme"), key.clone());
        let round = closed_loop(FILL_CLIENTS, Duration::from_secs(20), move |http, n| {
            http.patch(&url).bearer_auth(&patch_key).json(&json!({"events_per_min": 3_000_000 + (n % 1_000_000)}))
        })
        .await;
        fill_rates.push(json!({"entries": audit_entries, "writes_per_s": round2(round.per_s)}));
        audit_entries = audit_count(&http, &leader_base, &key).await;
    }
    let audit_fill_s = fill_started.elapsed().as_secs_f64();
    let rss_history = memory(&cluster);
    let snapshot = last_snapshot(&cluster.nodes[leader_idx].proc.as_ref().map(Proc::log_text).unwrap_or_default());

    // The load path: a follower restarted on a store of a million entries.
    cluster.stop(restarted);
    cluster.start_again(restarted);
    let restarted_base = format!("http://{}", addr(cluster.nodes[restarted].api));
    let restart_started = Instant::now();
    while audit_count(&http, &restarted_base, &key).await < audit_entries {
        assert!(restart_started.elapsed() < Duration::from_secs(300), "the restarted follower did not catch up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rss_restarted = rss_of(&cluster, restarted);

    // The follower that missed the whole fill catches up through a snapshot: the leader streams
    // every audit entry from its store, the follower installs them.
    let catch_up_started = Instant::now();
    cluster.start_again(lagging);
    let lagging_base = format!("http://{}", addr(cluster.nodes[lagging].api));
    while audit_count(&http, &lagging_base, &key).await < audit_entries {
        assert!(catch_up_started.elapsed() < Duration::from_secs(900), "the lagging follower did not catch up");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let catch_up_s = catch_up_started.elapsed().as_secs_f64();
    let rss_caught_up = rss_of(&cluster, lagging);
    let verify: Value = http
        .get(format!("{lagging_base}/api/v1/audit/verify?consistency=stale"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("verify")
        .json()
        .await
        .unwrap_or_default();

    // Failover: SIGKILL the leader of the moment (leadership may have moved while followers
    // were stopped and restarted), time until a write through a survivor succeeds.
    let leader_now =
        (wait_for("leader before the failover", Duration::from_secs(10), || cluster.leader()) - 1) as usize;
    let survivor = format!("http://{}", addr(cluster.nodes[(leader_now + 1) % 3].api));
    let killed_at = Instant::now();
    if let Some(mut p) = cluster.nodes[leader_now].proc.take() {
        p.kill();
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        if create(&http, &survivor, &key, &format!("fo{attempt:05}")).await.is_ok() {
            break;
        }
        assert!(killed_at.elapsed() < Duration::from_secs(30), "no write succeeded within 30 s of the leader's death");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let failover_ms = round2(killed_at.elapsed().as_secs_f64() * 1000.0);

    let line = json!({
        "bench": "coordinator",
        "nodes": 3,
        "vs_etcd": vs_etcd,
        "clients": CLIENTS,
        "creates": CREATES,
        "creates_per_s": throughput,
        "create_p50_ms": p50,
        "create_p99_ms": p99,
        "single_client_commit_p50_ms": single_p50,
        "single_client_commit_p99_ms": single_p99,
        "disk_fsync_p50_ms": fsync_p50,
        "disk_fsync_p99_ms": fsync_p99,
        "commit_over_fsync_p50": if fsync_p50 > 0.0 { round2(single_p50 / fsync_p50) } else { 0.0 },
        "failover_ms": failover_ms,
        "failover_killed_leader_id": leader_now + 1,
        "tenants_for_rss": TOTAL_TENANTS,
        "fill_creates_per_s": round2((TOTAL_TENANTS - CREATES - SINGLE) as f64 / fill_wall.as_secs_f64()),
        "rss": rss,
        "audit_entries_for_rss": audit_entries,
        "audit_fill_s": round2(audit_fill_s),
        "rss_with_audit_history": rss_history,
        "fill_clients": FILL_CLIENTS,
        "fill_rates": fill_rates,
        "last_snapshot": snapshot,
        "rss_restarted_follower": rss_restarted,
        "catch_up_through_snapshot_s": round2(catch_up_s),
        "rss_caught_up_follower": rss_caught_up,
        "caught_up_follower_verify": verify,
        "targets": {"creates_per_s": ">= 500", "create_p99_ms": "< 100", "failover_ms": "< 1000", "rss_mb_at_10k": "< 100", "rss_mb_at_10k_and_1m_audit": "< 150", "throughput_ratio": ">= 1.0"},
    });
    println!("{line}");
}
