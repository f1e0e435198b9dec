//! Shared by the benchmark drivers: a loopback cluster of release coordinators formed with the CLI.

use crate::{free_port, run, wait_for, Proc};
use serde_json::Value;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct BenchNode {
    pub id: u64,
    pub api: u16,
    pub raft: u16,
    pub node: u16,
    pub dir: PathBuf,
    pub proc: Option<Proc>,
}

impl BenchNode {
    pub fn listen(&self) -> crate::coordinator::Listen {
        crate::coordinator::Listen { raft: addr(self.raft), api: addr(self.api), node: addr(self.node) }
    }
}

/// Fields drop in order: processes before the temp dir that holds their logs.
pub struct BenchCluster {
    pub nodes: Vec<BenchNode>,
    pub bin: PathBuf,
    pub key: String,
    /// Passed to every `serve` after the common arguments.
    pub serve_extra: Vec<String>,
    pub tmp: tempfile::TempDir,
}

pub fn addr(p: u16) -> String {
    format!("127.0.0.1:{p}")
}

impl BenchCluster {
    /// `n` coordinators with VPN pool `pool`, formed through the CLI with coordinator tokens.
    pub fn start(bin: &Path, n: u64, pool: &str) -> Self {
        Self::start_with(bin, n, pool, &[])
    }

    /// As `start`, with `serve_extra` added to every coordinator's `serve` arguments.
    pub fn start_with(bin: &Path, n: u64, pool: &str, serve_extra: &[&str]) -> Self {
        // BERQENAS_BENCH_KEEP=1 keeps the coordinators' data and logs for a look afterwards.
        let keep = std::env::var_os("BERQENAS_BENCH_KEEP").is_some();
        let tmp = tempfile::Builder::new().prefix("bench-cluster").disable_cleanup(keep).tempdir().expect("temp dir");
        if keep {
            eprintln!("coordinator data and logs kept in {}", tmp.path().display());
        }
        let nodes: Vec<BenchNode> = (1..=n)
            .map(|id| BenchNode {
                id,
                api: free_port(),
                raft: free_port(),
                node: free_port(),
                dir: tmp.path().join(format!("c{id}")),
                proc: None,
            })
            .collect();
        let key = crate::coordinator::init(bin, &nodes[0].dir, &nodes[0].listen(), pool);
        let serve_extra = serve_extra.iter().map(|a| a.to_string()).collect();
        let mut cluster = Self { tmp, bin: bin.to_path_buf(), key, nodes, serve_extra };
        for i in 0..cluster.nodes.len() {
            cluster.spawn(i);
        }
        cluster
    }

    pub fn first_api(&self) -> String {
        format!("http://{}", addr(self.nodes[0].api))
    }

    /// Runs the CLI against coordinator 1 with `--output json` and returns the parsed output.
    pub fn cli(&self, args: &[&str]) -> Value {
        let first = self.first_api();
        let mut a = args.to_vec();
        a.extend(["--endpoint", &first, "--output", "json"]);
        let out = run(&self.bin, &a, &[("BERQENAS_API_KEY", &self.key)]);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("json")
    }

    fn spawn(&mut self, i: usize) {
        let n = &self.nodes[i];
        let mut args = crate::coordinator::serve_args(&n.dir, n.id, &n.listen());
        args.extend(self.serve_extra.iter().cloned());
        if i > 0 {
            let token = self.cli(&["cluster", "token", "create", "--id", &n.id.to_string()]);
            args.extend(crate::coordinator::join_args(&addr(self.nodes[0].node), &token));
        }
        let n = &self.nodes[i];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let proc = Proc::spawn(&format!("c{}", n.id), &self.bin, &args, self.tmp.path());
        let (port, node_port) = (n.api, n.node);
        wait_for("api", Duration::from_secs(20), || TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ()));
        if i > 0 {
            let learner = crate::coordinator::add_learner_args(n.id, &n.listen());
            self.cli(&learner.iter().map(String::as_str).collect::<Vec<_>>());
            self.cli(&["cluster", "promote", "--id", &n.id.to_string()]);
        }
        // The node listener opens once this coordinator holds the replicated CA.
        wait_for("node listener", Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", node_port)).ok().map(|_| ())
        });
        self.nodes[i].proc = Some(proc);
    }

    /// Stops coordinator `i` cleanly (SIGTERM).
    pub fn stop(&mut self, i: usize) {
        if let Some(mut p) = self.nodes[i].proc.take() {
            p.stop(Duration::from_secs(20));
        }
    }

    /// Starts coordinator `i` again on its data directory (it has joined before).
    pub fn start_again(&mut self, i: usize) {
        let n = &self.nodes[i];
        let mut args = crate::coordinator::serve_args(&n.dir, n.id, &n.listen());
        args.extend(self.serve_extra.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let proc = Proc::spawn(&format!("c{}", n.id), &self.bin, &args, self.tmp.path());
        let port = n.api;
        wait_for("api", Duration::from_secs(60), || TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ()));
        self.nodes[i].proc = Some(proc);
    }

    /// The current leader as coordinator 1 sees it.
    pub fn leader(&self) -> Option<u64> {
        let first = self.first_api();
        let out = run(
            &self.bin,
            &["cluster", "status", "--output", "json", "--endpoint", &first],
            &[("BERQENAS_API_KEY", &self.key)],
        );
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v["leader_id"].as_u64()
    }
}

/// Resident and peak memory (MiB) and CPU seconds (user + system) of a process, from /proc.
pub fn proc_stats(pid: u32) -> (f64, f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |field: &str| -> f64 {
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat; index 11 and 12 after the ')'.
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0, cpu)
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// What one closed-loop run measured.
#[derive(Debug, Clone, Copy)]
pub struct LoadFigures {
    pub clients: usize,
    pub requests: usize,
    pub per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl LoadFigures {
    pub fn json(&self) -> Value {
        serde_json::json!({
            "clients": self.clients, "requests": self.requests, "per_s": round2(self.per_s),
            "p50_ms": round2(self.p50_ms), "p99_ms": round2(self.p99_ms),
        })
    }
}

/// What closed-loop runs saw: every request's latency (ms) and the runs' wall time (s).
#[derive(Debug, Clone, Default)]
pub struct Samples {
    pub clients: usize,
    pub latencies_ms: Vec<f64>,
    pub wall_s: f64,
}

impl Samples {
    /// Adds another run's samples (of as many clients) to these.
    pub fn merge(&mut self, other: Samples) {
        self.clients = other.clients;
        self.latencies_ms.extend(other.latencies_ms);
        self.wall_s += other.wall_s;
    }

    pub fn figures(mut self) -> LoadFigures {
        self.latencies_ms.sort_by(|a, b| a.total_cmp(b));
        let per_s = if self.wall_s > 0.0 { self.latencies_ms.len() as f64 / self.wall_s } else { 0.0 };
        LoadFigures {
            clients: self.clients,
            requests: self.latencies_ms.len(),
            per_s,
            p50_ms: percentile(&self.latencies_ms, 0.5),
            p99_ms: percentile(&self.latencies_ms, 0.99),
        }
    }
}

/// `clients` tasks, each with its own HTTP/1.1 keep-alive connection, send requests back to back
/// for `duration`; `request(client, n)` builds the `n`th request (`n` unique across tasks). Every
/// answer must be a success, else the run panics naming it.
pub async fn closed_loop<F>(clients: usize, duration: Duration, request: F) -> LoadFigures
where
    F: Fn(&reqwest::Client, u64) -> reqwest::RequestBuilder + Send + Sync + 'static,
{
    closed_loop_samples(clients, duration, std::sync::Arc::new(request)).await.figures()
}

/// As `closed_loop`, answering the samples (to merge several runs).
pub async fn closed_loop_samples<F>(clients: usize, duration: Duration, request: std::sync::Arc<F>) -> Samples
where
    F: Fn(&reqwest::Client, u64) -> reqwest::RequestBuilder + Send + Sync + 'static,
{
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Instant;
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (request, next) = (request.clone(), next.clone());
        let http = reqwest::Client::builder().http1_only().pool_max_idle_per_host(1).build().expect("client");
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                let resp = request(&http, n).send().await.unwrap_or_else(|e| panic!("request {n}: {e}"));
                let status = resp.status();
                let body = resp.bytes().await.unwrap_or_default();
                assert!(status.is_success(), "request {n}: {status} {}", String::from_utf8_lossy(&body));
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("load task"));
    }
    Samples { clients, latencies_ms: all, wall_s: started.elapsed().as_secs_f64() }
}
