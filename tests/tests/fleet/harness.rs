//! A fleet of real processes: coordinators (init/serve/cluster CLI) and node agents (join/run).

use berqenas_tests::{coordinator, run, wait_for, workspace_bin, Proc};
use serde_json::Value;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

pub fn coordinator_bin() -> PathBuf {
    workspace_bin("berqenas-coordinator")
}

pub fn agent_bin() -> PathBuf {
    workspace_bin("berqenas-node-agent")
}

pub use berqenas_tests::coordinator::Coord;

pub struct Agent {
    /// The agent binary it runs.
    pub bin: PathBuf,
    pub name: String,
    pub dir: PathBuf,
    pub node_id: u64,
    pub proc: Option<Proc>,
}

impl Agent {
    pub fn tenants_dir(&self) -> PathBuf {
        self.dir.join("tenants")
    }

    /// Tenant files the dir driver has materialised.
    pub fn tenant_files(&self) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(self.tenants_dir())
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().to_string_lossy().strip_suffix(".json").map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    pub fn tenant_file(&self, name: &str) -> Option<Value> {
        let text = std::fs::read_to_string(self.tenants_dir().join(format!("{name}.json"))).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn log(&self) -> String {
        self.proc.as_ref().map(Proc::log_text).unwrap_or_default()
    }
}

/// Fields drop in order: processes before the temp dir that holds their logs.
pub struct Fleet {
    pub agents: Vec<Agent>,
    pub coords: Vec<Coord>,
    /// The coordinator binary each of `coords` runs.
    pub coord_bins: Vec<PathBuf>,
    pub key: String,
    /// More `serve` arguments for every coordinator (`new_with`).
    pub serve_extra: Vec<String>,
    pub tmp: tempfile::TempDir,
}

fn addr(p: u16) -> String {
    format!("127.0.0.1:{p}")
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

impl Fleet {
    /// `n` coordinators formed with the CLI.
    pub fn new(n: u64) -> Self {
        Self::new_with(n, &[])
    }

    /// `n` coordinators served with `serve_extra` more arguments (`--api-tls on`: the API over
    /// TLS on loopback too, the CLI then trusts the cluster CA).
    pub fn new_with(n: u64, serve_extra: &[&str]) -> Self {
        let bins = vec![coordinator_bin(); usize::try_from(n).expect("a few coordinators")];
        Self::formed(bins, serve_extra.iter().map(|s| s.to_string()).collect())
    }

    /// One coordinator per binary in `bins` (the first runs `init`), formed with the CLI.
    pub fn with_bins(bins: Vec<PathBuf>) -> Self {
        Self::formed(bins, Vec::new())
    }

    fn formed(bins: Vec<PathBuf>, serve_extra: Vec<String>) -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let mut fleet =
            Self { tmp, key: String::new(), coords: Vec::new(), coord_bins: bins, agents: Vec::new(), serve_extra };
        for id in 1..=fleet.coord_bins.len() as u64 {
            let dir = fleet.tmp.path().join(format!("c{id}"));
            fleet.coords.push(Coord::new(id, dir));
        }
        let c = &fleet.coords[0];
        fleet.key = coordinator::init(&fleet.coord_bins[0], &c.dir, &c.listen(), "198.18.0.0/15");
        fleet.start_coord(0);
        for i in 1..fleet.coords.len() {
            let id = fleet.coords[i].id;
            let token = fleet.json(0, &["cluster", "token", "create", "--id", &id.to_string()]);
            fleet.coords[i].join_args = coordinator::join_args(&addr(fleet.coords[0].node), &token);
            fleet.start_coord(i);
            let learner = coordinator::add_learner_args(id, &fleet.coords[i].listen());
            fleet.ok(0, &learner.iter().map(String::as_str).collect::<Vec<_>>());
            fleet.ok(0, &["cluster", "promote", "--id", &id.to_string()]);
        }
        fleet
    }

    pub fn start_coord(&mut self, i: usize) {
        let c = &mut self.coords[i];
        let mut args = coordinator::serve_args(&c.dir, c.id, &c.listen());
        // Refusals past a source's first are summarised each second, not each minute.
        args.extend(["--refusal-audit-every".to_string(), "1s".to_string()]);
        args.extend(self.serve_extra.iter().cloned());
        args.extend(c.join_args.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let bin = &self.coord_bins[i];
        c.proc = Some(Proc::spawn(&format!("coordinator-{}", c.id), bin, &args, self.tmp.path()));
        let (port, node_port, member) = (c.api, c.node, c.join_args.is_empty());
        wait_for("coordinator API", Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
        });
        if member {
            // A coordinator that already holds the replicated CA opens its node listener at once.
            wait_for("node listener", Duration::from_secs(20), || {
                TcpStream::connect(("127.0.0.1", node_port)).ok().map(|_| ())
            });
        }
    }

    pub fn kill_coord(&mut self, i: usize) {
        if let Some(mut p) = self.coords[i].proc.take() {
            p.kill();
        }
    }

    pub fn stop_coord(&mut self, i: usize) {
        if let Some(mut p) = self.coords[i].proc.take() {
            p.stop(Duration::from_secs(10));
        }
    }

    /// Index of a coordinator that is running.
    pub fn live(&self) -> usize {
        self.coords.iter().position(|c| c.proc.is_some()).expect("a coordinator runs")
    }

    /// Whether the coordinators serve their API over TLS (`--api-tls on`).
    pub fn api_tls(&self) -> bool {
        self.serve_extra.windows(2).any(|w| w[0] == "--api-tls" && w[1] == "on")
    }

    /// The REST API of coordinator `i`, by the scheme it serves.
    pub fn endpoint(&self, i: usize) -> String {
        let c = &self.coords[i];
        if self.api_tls() {
            format!("https://127.0.0.1:{}", c.api)
        } else {
            c.endpoint()
        }
    }

    pub fn cli(&self, i: usize, args: &[&str]) -> Output {
        self.cli_as(i, &self.key, args)
    }

    /// The CLI against coordinator `i` with API key `key`.
    pub fn cli_as(&self, i: usize, key: &str, args: &[&str]) -> Output {
        let endpoint = self.endpoint(i);
        let ca = self.coords[0].dir.join("ca.pem");
        let mut env = vec![("BERQENAS_ENDPOINT", endpoint.as_str()), ("BERQENAS_API_KEY", key)];
        if self.api_tls() {
            env.push(("BERQENAS_CA_CERT", ca.to_str().expect("temp paths are UTF-8")));
        }
        run(&coordinator_bin(), args, &env)
    }

    pub fn ok(&self, i: usize, args: &[&str]) -> String {
        let out = self.cli(i, args);
        assert!(out.status.success(), "`{}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn json(&self, i: usize, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        serde_json::from_str(&self.ok(i, &all)).expect("JSON output")
    }

    /// A join token for `roles`, and the CA pin.
    pub fn token(&self, roles: &str, extra: &[&str]) -> (String, String) {
        let mut args = vec!["node", "token", "create", "--roles", roles];
        args.extend_from_slice(extra);
        let v = self.json(self.live(), &args);
        (v["token"].as_str().expect("token").into(), v["ca_fingerprint"].as_str().expect("pin").into())
    }

    /// Runs `berqenas-node-agent join` for a new agent; returns the command output.
    pub fn join_raw(&self, name: &str, coord: usize, token: &str, pin: &str, roles: &str, labels: &str) -> Output {
        self.join_with_driver(name, coord, token, pin, roles, labels, &[])
    }

    /// `join_raw` with driver arguments (`--driver …`) instead of the dir driver.
    #[allow(clippy::too_many_arguments, reason = "the join command line, spelled out")]
    pub fn join_with_driver(
        &self,
        name: &str,
        coord: usize,
        token: &str,
        pin: &str,
        roles: &str,
        labels: &str,
        driver: &[&str],
    ) -> Output {
        self.join_as(&agent_bin(), name, coord, token, pin, roles, labels, driver)
    }

    /// `join_with_driver` with the agent binary `bin`.
    #[allow(clippy::too_many_arguments, reason = "the join command line, spelled out")]
    pub fn join_as(
        &self,
        bin: &Path,
        name: &str,
        coord: usize,
        token: &str,
        pin: &str,
        roles: &str,
        labels: &str,
        driver: &[&str],
    ) -> Output {
        let dir = self.tmp.path().join(name);
        let url = format!("https://{}", addr(self.coords[coord].node));
        let tenants = dir.join("tenants");
        let mut args = vec![
            "join",
            "--coordinator",
            &url,
            "--token",
            token,
            "--ca-pin",
            pin,
            "--roles",
            roles,
            "--data-dir",
            path_str(&dir),
        ];
        if driver.is_empty() {
            args.extend(["--driver", "dir", "--driver-path", path_str(&tenants)]);
        } else {
            args.extend_from_slice(driver);
        }
        if !labels.is_empty() {
            args.extend(["--labels", labels]);
        }
        run(bin, &args, &[])
    }

    /// Joins and starts an agent with the dir driver.
    pub fn add_agent(&mut self, name: &str, roles: &str, labels: &str) -> usize {
        self.add_agent_with_driver(name, roles, labels, &[])
    }

    /// Joins and starts an agent with the given driver arguments (dir driver when empty).
    pub fn add_agent_with_driver(&mut self, name: &str, roles: &str, labels: &str, driver: &[&str]) -> usize {
        self.add_agent_as(&agent_bin(), name, roles, labels, driver)
    }

    /// Joins and starts an agent running the agent binary `bin`.
    pub fn add_agent_as(&mut self, bin: &Path, name: &str, roles: &str, labels: &str, driver: &[&str]) -> usize {
        let (token, pin) = self.token(roles, &[]);
        let coord = self.live();
        let out = self.join_as(bin, name, coord, &token, &pin, roles, labels, driver);
        assert!(out.status.success(), "join {name}: {}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let node_id: u64 = stdout
            .split_whitespace()
            .nth(3)
            .and_then(|s| s.trim_end_matches(';').parse().ok())
            .unwrap_or_else(|| panic!("join prints the node id: {stdout}"));
        let dir = self.tmp.path().join(name);
        self.agents.push(Agent { bin: bin.to_path_buf(), name: name.into(), dir, node_id, proc: None });
        let i = self.agents.len() - 1;
        self.start_agent(i);
        i
    }

    pub fn start_agent(&mut self, i: usize) {
        self.start_agent_with(i, &[]);
    }

    /// Starts agent `i` with more `run` arguments (e.g. `--metrics-listen`).
    pub fn start_agent_with(&mut self, i: usize, extra: &[&str]) {
        let a = &mut self.agents[i];
        let config = a.dir.join("agent.toml");
        let mut args = vec!["run", "--config", path_str(&config)];
        args.extend_from_slice(extra);
        a.proc = Some(Proc::spawn(&format!("agent-{}", a.name), &a.bin, &args, self.tmp.path()));
    }

    /// The coordinator an agent is streaming from, per its log.
    pub fn agent_coordinator(&self, agent: usize) -> Option<usize> {
        let log = self.agents[agent].log();
        let line = log.lines().rev().find(|l| l.contains("watching desired state"))?;
        self.coords.iter().position(|c| line.contains(&format!("127.0.0.1:{}", c.node)))
    }

    pub fn audit(&self) -> Vec<Value> {
        let v = self.json(self.live(), &["audit", "list", "--limit", "100000"]);
        v.as_array().cloned().unwrap_or_default()
    }
}
