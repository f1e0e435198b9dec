//! `deploy/bench.sh provision`: 1,000 tenants on one db node (coordinator, node agent with the
//! PostgreSQL driver, and PostgreSQL, all on loopback). Figures: `tenant create` → active
//! (p50/p99), the agent's full resync with 1,000 tenants present, one usage pass over 1,000
//! schemas, the agent's RSS; side by side, the seed's way: `psql` running the seed's SQL per tenant.
//! One JSON line. Usage: bench-provision PATH/TO/berqenas-coordinator PATH/TO/berqenas-node-agent

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: it starts the project's binaries and lab tools, and a failed setup step is a failed test"
)]

use berqenas_node_agent::assignment::Assignment;
use berqenas_node_agent::driver::Driver;
use berqenas_tests::bench::{percentile, proc_stats, round2};
use berqenas_tests::postgres::Postgres;
use berqenas_tests::{free_port, run, wait_for, Proc};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TENANTS: usize = 1000;
const CLIENTS: usize = 8;

/// One benchmark tenant through the REST API (10 MB quota, no VPN); panics unless created.
async fn create(http: &reqwest::Client, base: &str, key: &str, name: &str) {
    let resp = http
        .post(format!("{base}/api/v1/tenant"))
        .bearer_auth(key)
        .json(&json!({"name": name, "db_quota": "10MB", "vpn_enabled": false}))
        .send()
        .await
        .expect("create");
    assert_eq!(resp.status().as_u16(), 201, "create {name}");
}

fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (round2(percentile(&v, 0.5)), round2(percentile(&v, 0.99)))
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let coordinator = PathBuf::from(args.next().expect("usage: bench-provision COORDINATOR AGENT"));
    let agent = PathBuf::from(args.next().expect("usage: bench-provision COORDINATOR AGENT"));
    let tmp = tempfile::tempdir().expect("tmp");
    let pg = Postgres::start_loopback(tmp.path());
    let (raft, api, node) = (free_port(), free_port(), free_port());
    let addr = |p: u16| format!("127.0.0.1:{p}");
    let data = tmp.path().join("c1");
    let listen = berqenas_tests::coordinator::Listen { raft: addr(raft), api: addr(api), node: addr(node) };
    let key = berqenas_tests::coordinator::init(&coordinator, &data, &listen, "100.64.0.0/10");
    let coord =
        Proc::spawn("coordinator", &coordinator, &["serve", "--data-dir", data.to_str().expect("utf-8")], tmp.path());
    wait_for("node listener", Duration::from_secs(20), || {
        coord.log_text().contains("node listener serving").then_some(())
    });
    let base = format!("http://{}", addr(api));
    let http = reqwest::Client::new();
    let tok: Value = http
        .post(format!("{base}/api/v1/nodes/tokens"))
        .bearer_auth(&key)
        .json(&json!({"roles": ["db"], "ttl": "1h"}))
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let agent_dir = tmp.path().join("agent");
    let join = run(
        &agent,
        &[
            "join",
            "--coordinator",
            &format!("https://{}", addr(node)),
            "--token",
            tok["token"].as_str().expect("token"),
            "--ca-pin",
            tok["ca_fingerprint"].as_str().expect("pin"),
            "--roles",
            "db",
            "--data-dir",
            agent_dir.to_str().expect("utf-8"),
            "--driver",
            "postgres",
            "--driver-url",
            &pg.url(),
            "--resync-interval",
            "10m",
            "--max-tenants",
            "2000",
        ],
        &[],
    );
    assert!(join.status.success(), "join: {}", String::from_utf8_lossy(&join.stderr));
    let agent_proc = Proc::spawn(
        "agent",
        &agent,
        &["run", "--config", agent_dir.join("agent.toml").to_str().expect("utf-8")],
        tmp.path(),
    );

    // Creates with CLIENTS workers; a watcher records when each created tenant first no longer
    // shows `provisioning` (it asks only for those: listing all 1,000 tenants every 20 ms would
    // spend the box's 2 cores on JSON rather than on the system under test).
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let created: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let active: Arc<Mutex<HashMap<String, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let watcher = {
        let (http, base, key) = (http.clone(), base.clone(), key.clone());
        let (created, active) = (created.clone(), active.clone());
        tokio::spawn(async move {
            loop {
                let url = format!("{base}/api/v1/tenants?consistency=stale&status=provisioning");
                if let Ok(resp) = http.get(url).bearer_auth(&key).send().await {
                    if let Ok(list) = resp.json::<Vec<Value>>().await {
                        let now = Instant::now();
                        let waiting: std::collections::HashSet<&str> =
                            list.iter().filter_map(|t| t["name"].as_str()).collect();
                        let done: Vec<String> = created
                            .lock()
                            .map(|c| c.iter().filter(|n| !waiting.contains(n.as_str())).cloned().collect())
                            .unwrap_or_default();
                        if let Ok(mut a) = active.lock() {
                            for n in done {
                                a.entry(n).or_insert(now);
                            }
                            if a.len() >= TENANTS {
                                return;
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..CLIENTS {
        let (http, base, key, sent, next) = (http.clone(), base.clone(), key.clone(), sent.clone(), next.clone());
        let created = created.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= TENANTS {
                    return;
                }
                let name = format!("t{i:04}");
                if let Ok(mut s) = sent.lock() {
                    s.insert(name.clone(), Instant::now());
                }
                create(&http, &base, &key, &name).await;
                if let Ok(mut c) = created.lock() {
                    c.push(name);
                }
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    let all_created = started.elapsed();
    tokio::time::timeout(Duration::from_secs(600), watcher).await.expect("all tenants active within 10 minutes").ok();
    let all_ready = started.elapsed();
    let latencies: Vec<f64> = {
        let (s, a) = (sent.lock().expect("lock"), active.lock().expect("lock"));
        s.iter().filter_map(|(n, t0)| a.get(n).map(|t1| t1.duration_since(*t0).as_secs_f64() * 1000.0)).collect()
    };
    let (ready_p50, ready_p99) = stats(latencies);
    // Steady state: one create at a time with 1,000 tenants present.
    let mut steady = Vec::new();
    for i in 0..20 {
        let name = format!("steady{i:02}");
        let t0 = Instant::now();
        create(&http, &base, &key, &name).await;
        loop {
            let t: Value = http
                .get(format!("{base}/api/v1/tenant/{name}?consistency=stale"))
                .bearer_auth(&key)
                .send()
                .await
                .expect("get")
                .json()
                .await
                .expect("json");
            if t["status"] == "active" {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "{name} not active within 60 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        steady.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    let (steady_p50, steady_p99) = stats(steady);
    let (agent_rss, agent_peak, _) = proc_stats(agent_proc.pid());

    // A full resync with 1,000 tenants present: the driver's observe + plan over the real
    // database, nothing left to apply (the agent's own applied state is the desired state).
    let applied: Value =
        serde_json::from_slice(&std::fs::read(agent_dir.join("applied.json")).expect("applied.json")).expect("json");
    let desired: Vec<Assignment> = serde_json::from_value(applied["tenants"].clone()).expect("assignments");
    assert_eq!(desired.len(), TENANTS + 20);
    let desired: Vec<_> = desired.iter().filter_map(Assignment::db_tenant).collect();
    let url = pg.url();
    let resync_ms = tokio::spawn(async move {
        let mut driver = berqenas_node_agent::db::postgres::PostgresDriver::new(
            url,
            None,
            Duration::from_secs(10),
            Default::default(),
        );
        let t = Instant::now();
        let statuses = driver.reconcile(&desired).await;
        assert!(statuses.iter().all(|s| s.ready), "converged");
        t.elapsed().as_secs_f64() * 1000.0
    })
    .await
    .expect("resync");

    // One usage pass alone: the per-schema size query over 1,000 schemas on a fresh connection.
    let psql = pg.bin.join("psql");
    let size_sql = "SELECT n.nspname, COALESCE(sum(pg_total_relation_size(c.oid)), 0) FROM pg_namespace n \
                    LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relkind IN ('r', 'p', 'm') \
                    WHERE n.nspname ~ '^tenant_' GROUP BY n.nspname";
    let usage_ms = {
        let t = Instant::now();
        let out = Command::new(&psql)
            .args(["-h", "127.0.0.1", "-p", &pg.port.to_string(), "-U", "postgres", "-tAc", size_sql])
            .env("PGPASSWORD", &pg.password)
            .output()
            .expect("psql");
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), TENANTS + 20);
        t.elapsed().as_secs_f64() * 1000.0
    };

    // The seed's way: one psql per tenant running the seed's SQL (schema, role, grant, default
    // privileges, temp_file_limit) — no events table, no hardening, no checks.
    let mut seed = Vec::new();
    let seed_started = Instant::now();
    for i in 0..TENANTS {
        let n = format!("seed{i:04}");
        let sql = format!(
            "CREATE SCHEMA tenant_{n}; CREATE ROLE tenant_{n}_user LOGIN PASSWORD 'secret{i}'; \
             GRANT USAGE ON SCHEMA tenant_{n} TO tenant_{n}_user; \
             ALTER DEFAULT PRIVILEGES IN SCHEMA tenant_{n} GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO tenant_{n}_user; \
             ALTER ROLE tenant_{n}_user SET temp_file_limit = '5GB';"
        );
        let t = Instant::now();
        let out = Command::new(&psql)
            .args(["-h", "127.0.0.1", "-p", &pg.port.to_string(), "-U", "postgres", "-q", "-c", &sql])
            .env("PGPASSWORD", &pg.password)
            .output()
            .expect("psql");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        seed.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let seed_total = seed_started.elapsed();
    let (seed_p50, seed_p99) = stats(seed);

    let line = json!({
        "bench": "provision",
        "tenants": TENANTS,
        "clients": CLIENTS,
        "create_to_ready_p50_ms": ready_p50,
        "create_to_ready_p99_ms": ready_p99,
        "all_ready_s": round2(all_ready.as_secs_f64()),
        "all_created_s": round2(all_created.as_secs_f64()),
        "steady_create_to_ready_p50_ms": steady_p50,
        "steady_create_to_ready_p99_ms": steady_p99,
        "full_resync_ms": round2(resync_ms),
        "usage_pass_ms": round2(usage_ms),
        "agent_rss_mb": round2(agent_rss),
        "agent_peak_rss_mb": round2(agent_peak),
        "seed_psql_per_tenant_p50_ms": seed_p50,
        "seed_psql_per_tenant_p99_ms": seed_p99,
        "seed_psql_total_s": round2(seed_total.as_secs_f64()),
        "targets": {"create_to_ready_p99_ms": "< 1000", "full_resync_ms": "< 5000", "usage_pass_ms": "< 2000", "agent_rss_mb": "< 50"},
        "note": "PostgreSQL runs with fsync=off for both sides",
    });
    println!("{line}");
    drop(agent_proc);
    drop(coord);
}
