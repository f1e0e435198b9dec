//! `deploy/bench.sh fanout`: simulated node agents (one process, one real mTLS connection and
//! Watch stream each) on a 3-node loopback cluster. For 50 and then 200 agents: time from a tenant
//! write to every node it is placed on holding a state that contains it (p50/p99), coordinator
//! CPU and RSS, and mTLS handshakes (join + watch connections) per second. One JSON line.
//! Usage: bench-fanout PATH/TO/berqenas-coordinator

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: it starts the project's binaries and lab tools, and a failed setup step is a failed test"
)]

use berqenas_proto::node as pb;
use berqenas_tests::bench::{addr, percentile, proc_stats, round2, BenchCluster};
use berqenas_tests::{wait_for, Proc};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WRITES: usize = 40;

/// node id → (tenant → first time the node saw it).
type Seen = Arc<Mutex<HashMap<u64, HashMap<String, Instant>>>>;

async fn join_one(node_addr: &str, pin: &str, token: &str) -> (u64, Arc<rustls::ClientConfig>) {
    let tls = Arc::new(berqenas_pki::pinned_client_config(pin).expect("pinned tls"));
    let mut client = berqenas_node_agent::connect::node_client(node_addr, tls).await.expect("connect");
    let kc = berqenas_pki::new_key_and_csr("sim").expect("csr");
    let resp = client
        .join(pb::JoinRequest {
            token: token.into(),
            csr_pem: kc.csr_pem.clone(),
            roles: vec!["gateway".into(), "db".into()],
            labels: Default::default(),
            address: "127.0.0.1".into(),
            capacity: Some(pb::Capacity { cpus: 2, memory_bytes: 4 << 30, disk_bytes: 1 << 40, max_tenants: 1000 }),
            ..Default::default()
        })
        .await
        .expect("join")
        .into_inner();
    let tls = berqenas_pki::client_config(&resp.ca_pem, Some((&resp.cert_chain_pem, &kc.key_pem))).expect("mtls");
    (resp.node_id, Arc::new(tls))
}

async fn watch_one(node_addr: String, node_id: u64, tls: Arc<rustls::ClientConfig>, seen: Seen) {
    let mut client = berqenas_node_agent::connect::node_client(&node_addr, tls).await.expect("mtls connect");
    let mut stream = client.watch(pb::WatchRequest { last_applied_revision: 0 }).await.expect("watch").into_inner();
    tokio::spawn(async move {
        while let Ok(Some(state)) = stream.message().await {
            if state.bookmark {
                continue;
            }
            let now = Instant::now();
            if let Ok(mut s) = seen.lock() {
                let mine = s.entry(node_id).or_default();
                for t in state.tenants {
                    mine.entry(t.name).or_insert(now);
                }
            }
        }
    });
}

/// Adds agents until there are `target`; returns handshakes per second for this batch.
async fn grow(cluster: &BenchCluster, target: usize, agents: &mut Vec<u64>, seen: &Seen, pin: &str) -> f64 {
    let http = reqwest::Client::new();
    let mut tokens = Vec::new();
    for _ in agents.len()..target {
        let v: Value = http
            .post(format!("{}/api/v1/nodes/tokens", cluster.first_api()))
            .bearer_auth(&cluster.key)
            .json(&json!({"roles": ["gateway", "db"], "ttl": "1h"}))
            .send()
            .await
            .expect("token")
            .json()
            .await
            .expect("json");
        tokens.push(v["token"].as_str().expect("token").to_string());
    }
    let started = Instant::now();
    let mut handshakes = 0usize;
    let mut joins = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let coord = &cluster.nodes[(agents.len() + i) % cluster.nodes.len()];
        let node_addr = addr(coord.node);
        let (pin, token) = (pin.to_string(), token.clone());
        joins.push(tokio::spawn(async move {
            let (id, tls) = join_one(&node_addr, &pin, &token).await;
            (id, tls, node_addr)
        }));
    }
    let mut watches = Vec::new();
    for j in joins {
        let (id, tls, node_addr) = j.await.expect("join task");
        handshakes += 1;
        agents.push(id);
        watches.push(tokio::spawn(watch_one(node_addr, id, tls, seen.clone())));
    }
    for w in watches {
        w.await.expect("watch task");
        handshakes += 1;
    }
    handshakes as f64 / started.elapsed().as_secs_f64()
}

/// Creates `WRITES` tenants one by one; returns write → all placed nodes hold it, in ms.
async fn measure(cluster: &BenchCluster, leader_api: &str, seen: &Seen, prefix: &str) -> Vec<f64> {
    let http = reqwest::Client::new();
    let mut out = Vec::new();
    for i in 0..WRITES {
        let name = format!("{prefix}{i:04}");
        let t0 = Instant::now();
        let resp: Value = http
            .post(format!("{leader_api}/api/v1/tenant"))
            .bearer_auth(&cluster.key)
            .json(&json!({"name": name, "db_quota": "1GB", "vpn_enabled": true}))
            .send()
            .await
            .expect("create")
            .json()
            .await
            .expect("json");
        let nodes: Vec<u64> = [resp["placement"]["db_node"].as_u64(), resp["placement"]["gateway_node"].as_u64()]
            .into_iter()
            .flatten()
            .collect();
        assert!(!nodes.is_empty(), "tenant placed: {resp}");
        let deadline = Instant::now() + Duration::from_secs(10);
        let done = loop {
            let latest = seen.lock().ok().and_then(|s| {
                nodes.iter().map(|n| s.get(n).and_then(|m| m.get(&name)).copied()).collect::<Option<Vec<Instant>>>()
            });
            if let Some(times) = latest {
                break times.into_iter().max();
            }
            assert!(Instant::now() < deadline, "{name} did not reach its nodes within 10 s");
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        if let Some(t) = done {
            out.push(t.duration_since(t0).as_secs_f64() * 1000.0);
        }
    }
    out
}

fn cpu_and_rss(cluster: &BenchCluster) -> (f64, Vec<Value>) {
    let mut cpu = 0.0;
    let mut rss = Vec::new();
    for n in &cluster.nodes {
        let (r, peak, c) = proc_stats(n.proc.as_ref().map(Proc::pid).unwrap_or(0));
        cpu += c;
        rss.push(json!({"id": n.id, "rss_mb": round2(r), "peak_rss_mb": round2(peak)}));
    }
    (cpu, rss)
}

fn summary(mut lat: Vec<f64>) -> (f64, f64) {
    lat.sort_by(|a, b| a.total_cmp(b));
    (round2(percentile(&lat, 0.5)), round2(percentile(&lat, 0.99)))
}

#[tokio::main]
async fn main() {
    let bin = PathBuf::from(std::env::args().nth(1).expect("usage: bench-fanout PATH/TO/berqenas-coordinator"));
    let cluster = BenchCluster::start(&bin, 3, "100.64.0.0/10");
    let leader = wait_for("leader", Duration::from_secs(10), || cluster.leader());
    let leader_api = format!("http://{}", addr(cluster.nodes[(leader - 1) as usize].api));
    let status = cluster.cli(&["cluster", "status"]);
    let pin = status["ca_fingerprint"].as_str().expect("pin").to_string();
    let seen: Seen = Arc::new(Mutex::new(HashMap::new()));
    let mut agents = Vec::new();
    let mut stages = Vec::new();
    for (target, prefix) in [(50usize, "a"), (200usize, "b")] {
        let handshakes_per_s = grow(&cluster, target, &mut agents, &seen, &pin).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (cpu_before, _) = cpu_and_rss(&cluster);
        let started = Instant::now();
        let lat = measure(&cluster, &leader_api, &seen, prefix).await;
        let wall = started.elapsed().as_secs_f64();
        let (cpu_after, rss) = cpu_and_rss(&cluster);
        let (p50, p99) = summary(lat);
        stages.push(json!({
            "agents": target,
            "write_to_all_nodes_p50_ms": p50,
            "write_to_all_nodes_p99_ms": p99,
            "coordinators_cpu_percent_of_one_core": round2((cpu_after - cpu_before) / wall * 100.0),
            "mtls_handshakes_per_s": round2(handshakes_per_s),
            "rss": rss,
        }));
    }
    let line = json!({
        "bench": "fanout",
        "coordinators": 3,
        "writes_per_stage": WRITES,
        "stages": stages,
        "target": {"agents": 200, "p99_ms": "< 500"},
    });
    println!("{line}");
}
