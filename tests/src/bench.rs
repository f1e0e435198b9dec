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
    pub tmp: tempfile::TempDir,
}

pub fn addr(p: u16) -> String {
    format!("127.0.0.1:{p}")
}

impl BenchCluster {
    /// `n` coordinators with VPN pool `pool`, formed through the CLI with coordinator tokens.
    pub fn start(bin: &Path, n: u64, pool: &str) -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
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
        let mut cluster = Self { tmp, bin: bin.to_path_buf(), key, nodes };
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
