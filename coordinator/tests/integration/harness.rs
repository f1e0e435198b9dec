//! A cluster of real coordinator processes in a temp dir, and CLI helpers.

use berqenas_tests::{coordinator, run, wait_for, Proc};
use serde_json::Value;
use std::net::TcpStream;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_berqenas-coordinator");

pub use berqenas_tests::coordinator::Coord;

/// Fields drop in order: processes before the temp dir that holds their logs.
pub struct Cluster {
    pub nodes: Vec<Coord>,
    pub key: String,
    /// Extra flags for every `serve`.
    pub serve_args: Vec<String>,
    pub tmp: tempfile::TempDir,
}

impl Cluster {
    /// `init` + `serve` of coordinator 1 with the test VPN pool.
    pub fn single() -> Self {
        Self::single_with(&[])
    }

    /// Like `single`, with extra `serve` flags for every node.
    pub fn single_with(serve_args: &[&str]) -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let first = Coord::new(1, tmp.path().join("c1"));
        let key = coordinator::init(Path::new(BIN), &first.dir, &first.listen(), "198.18.0.0/15");
        let mut cluster =
            Self { tmp, key, nodes: vec![first], serve_args: serve_args.iter().map(|s| s.to_string()).collect() };
        cluster.start(0);
        cluster
    }

    /// A three-voter cluster formed with the CLI alone.
    pub fn three() -> Self {
        Self::three_with(&[])
    }

    pub fn three_with(serve_args: &[&str]) -> Self {
        let mut c = Self::single_with(serve_args);
        for id in [2, 3] {
            c.join(id);
        }
        c
    }

    /// Starts coordinator `id` in a fresh dir and adds it as learner, then voter, through the CLI.
    pub fn join(&mut self, id: u64) {
        let idx = self.spawn_unjoined(id);
        let learner = coordinator::add_learner_args(id, &self.nodes[idx].listen());
        self.ok(0, &learner.iter().map(String::as_str).collect::<Vec<_>>());
        self.ok(0, &["cluster", "promote", "--id", &id.to_string()]);
    }

    /// Starts coordinator `id` in a fresh dir without adding it to the cluster.
    pub fn spawn_unjoined(&mut self, id: u64) -> usize {
        let token = self.json(0, &["cluster", "token", "create", "--id", &id.to_string()]);
        let mut coord = Coord::new(id, self.tmp.path().join(format!("c{id}")));
        coord.join_args = coordinator::join_args(&self.nodes[0].listen().node, &token);
        self.nodes.push(coord);
        let idx = self.nodes.len() - 1;
        self.start(idx);
        idx
    }

    pub fn start(&mut self, idx: usize) {
        let node = &mut self.nodes[idx];
        let mut args = coordinator::serve_args(&node.dir, node.id, &node.listen());
        args.extend(self.serve_args.iter().cloned());
        args.extend(node.join_args.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let proc = Proc::spawn(&format!("coordinator-{}", node.id), Path::new(BIN), &args, self.tmp.path());
        node.proc = Some(proc);
        let port = node.api;
        wait_for("coordinator API to listen", Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
        });
    }

    pub fn kill(&mut self, idx: usize) {
        if let Some(mut p) = self.nodes[idx].proc.take() {
            p.kill();
        }
    }

    pub fn stop(&mut self, idx: usize) {
        if let Some(mut p) = self.nodes[idx].proc.take() {
            p.stop(Duration::from_secs(10));
        }
    }

    /// Runs the CLI against node `idx` with the admin key.
    pub fn cli(&self, idx: usize, args: &[&str]) -> Output {
        self.cli_as(idx, &self.key, args)
    }

    pub fn cli_as(&self, idx: usize, key: &str, args: &[&str]) -> Output {
        let endpoint = self.nodes[idx].endpoint();
        run(Path::new(BIN), args, &[("BERQENAS_ENDPOINT", &endpoint), ("BERQENAS_API_KEY", key)])
    }

    /// Runs the CLI, asserts exit 0, returns stdout.
    pub fn ok(&self, idx: usize, args: &[&str]) -> String {
        let out = self.cli(idx, args);
        assert!(out.status.success(), "`{}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs the CLI with `--output json`, asserts exit 0, parses stdout.
    pub fn json(&self, idx: usize, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        serde_json::from_str(&self.ok(idx, &all)).expect("JSON output")
    }

    /// Tenant names node `idx` holds in its own state machine (a stale read: what it has applied).
    pub fn local_tenants(&self, idx: usize) -> Option<Vec<String>> {
        let out = self.cli(idx, &["tenant", "list", "--stale", "--output", "json"]);
        if !out.status.success() {
            return None;
        }
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        Some(v.as_array()?.iter().filter_map(|t| t["name"].as_str().map(str::to_string)).collect())
    }

    /// The leader as node `idx` sees it.
    pub fn leader_seen_by(&self, idx: usize) -> Option<u64> {
        let out = self.cli(idx, &["cluster", "status", "--output", "json"]);
        if !out.status.success() {
            return None;
        }
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v["leader_id"].as_u64()
    }

    pub fn index_of(&self, id: u64) -> usize {
        self.nodes.iter().position(|n| n.id == id).expect("known node id")
    }
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

impl Cluster {
    /// Like `json` but does not require exit 0 (for commands that fail by design and still print).
    pub fn json_allow_fail(&self, idx: usize, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.cli(idx, &all);
        serde_json::from_slice(&out.stdout).expect("JSON output")
    }
}
