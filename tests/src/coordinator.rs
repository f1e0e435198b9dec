//! Command lines of a coordinator, shared by every harness that starts one (fleet and
//! coordinator integration tests, the network-namespace lab, the benchmark drivers).

use crate::Proc;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

/// One coordinator of a loopback test cluster.
pub struct Coord {
    pub id: u64,
    pub dir: PathBuf,
    pub raft: u16,
    pub api: u16,
    pub node: u16,
    pub proc: Option<Proc>,
    /// `--join/--token/--ca-pin` for a coordinator's first start.
    pub join_args: Vec<String>,
}

impl Coord {
    /// A coordinator on free loopback ports, data in `dir`, not started.
    pub fn new(id: u64, dir: PathBuf) -> Self {
        let (raft, api, node) = (crate::free_port(), crate::free_port(), crate::free_port());
        Self { id, dir, raft, api, node, proc: None, join_args: Vec::new() }
    }

    /// Its REST API (plain HTTP on loopback).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.api)
    }

    pub fn listen(&self) -> Listen {
        let a = |p: u16| format!("127.0.0.1:{p}");
        Listen { raft: a(self.raft), api: a(self.api), node: a(self.node) }
    }
}

/// The seed's one command for one customer, waiting until every placed node reports it ready.
pub const SEED_CREATE: [&str; 13] = [
    "tenant",
    "create",
    "--name",
    "acme",
    "--db-quota",
    "5GB",
    "--vpn",
    "enabled",
    "--public-api",
    "true",
    "--wait",
    "--wait-timeout",
    "30s",
];

/// The three listeners of one coordinator, as `host:port`.
#[derive(Debug, Clone)]
pub struct Listen {
    pub raft: String,
    pub api: String,
    pub node: String,
}

impl Listen {
    /// Free loopback ports.
    pub fn loopback() -> Self {
        let a = |p: u16| format!("127.0.0.1:{p}");
        Self { raft: a(crate::free_port()), api: a(crate::free_port()), node: a(crate::free_port()) }
    }

    /// Ports 7101/7201/7301 on `host` (a lab host's address).
    pub fn standard(host: &str) -> Self {
        Self { raft: format!("{host}:7101"), api: format!("{host}:7201"), node: format!("{host}:7301") }
    }

    /// The port of `host:port`.
    pub fn port(addr: &str) -> u16 {
        addr.rsplit(':').next().and_then(|p| p.parse().ok()).expect("host:port")
    }
}

/// `init` of coordinator 1 in `dir` with VPN pool `pool`, JSON output.
pub fn init_args(dir: &Path, listen: &Listen, pool: &str) -> Vec<String> {
    let dir = dir.to_str().expect("UTF-8 path");
    [
        "init",
        "--data-dir",
        dir,
        "--id",
        "1",
        "--raft-listen",
        &listen.raft,
        "--api-listen",
        &listen.api,
        "--node-listen",
        &listen.node,
        "--vpn-pool",
        pool,
        "--output",
        "json",
    ]
    .map(str::to_string)
    .to_vec()
}

/// The admin API key `init` printed (the command must have succeeded).
pub fn admin_key(init: &Output) -> String {
    assert!(init.status.success(), "init: {}", String::from_utf8_lossy(&init.stderr));
    let v: Value = serde_json::from_slice(&init.stdout).expect("init prints JSON");
    v["admin_api_key"].as_str().expect("init prints the admin key").to_string()
}

/// Runs `init` on this host; returns the admin API key.
pub fn init(bin: &Path, dir: &Path, listen: &Listen, pool: &str) -> String {
    let args = init_args(dir, listen, pool);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    admin_key(&crate::run(bin, &args, &[]))
}

/// `serve` of coordinator `id` in `dir` (add `join_args` for a new member).
pub fn serve_args(dir: &Path, id: u64, listen: &Listen) -> Vec<String> {
    let (dir, id) = (dir.to_str().expect("UTF-8 path"), id.to_string());
    ["serve", "--data-dir", dir, "--id", &id, "--raft-listen", &listen.raft, "--api-listen", &listen.api]
        .into_iter()
        .chain(["--node-listen", &listen.node])
        .map(str::to_string)
        .collect()
}

/// `--join https://FIRST_NODE --token … --ca-pin …` from a `cluster token create` answer.
pub fn join_args(first_node: &str, token: &Value) -> Vec<String> {
    vec![
        "--join".into(),
        format!("https://{first_node}"),
        "--token".into(),
        token["token"].as_str().expect("token").into(),
        "--ca-pin".into(),
        token["ca_fingerprint"].as_str().expect("pin").into(),
    ]
}

/// `cluster add-learner` for coordinator `id` listening on `listen`.
pub fn add_learner_args(id: u64, listen: &Listen) -> Vec<String> {
    let id = id.to_string();
    ["cluster", "add-learner", "--id", &id, "--raft-addr", &listen.raft, "--api-addr", &listen.api]
        .into_iter()
        .chain(["--node-addr", &listen.node])
        .map(str::to_string)
        .collect()
}
