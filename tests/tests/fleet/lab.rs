//! The fleet across network namespaces: three coordinators and two agents, each its own host
//! on the lab bridge (192.0.2.0/24), talking over real veth links.

use crate::harness::{agent_bin, coordinator_bin};
use berqenas_tests::coordinator;
use berqenas_tests::lab::{Host, Lab};
use berqenas_tests::{wait_for, Proc};
use serde_json::Value;
use std::time::Duration;

/// Fields drop in order: processes first, then the namespaces, then the files (so a failing
/// test can still print the processes' logs).
struct LabFleet {
    coords: Vec<(Host, Option<Proc>, Vec<String>)>,
    key: String,
    lab: Lab,
    tmp: tempfile::TempDir,
}

impl LabFleet {
    /// The CLI inside coordinator `via`'s namespace. Off loopback the API is served over TLS
    /// with the coordinator's certificate, so the CLI trusts the cluster CA.
    fn cli(&self, via: usize, args: &[&str]) -> std::process::Output {
        let endpoint = format!("https://{}:7201", self.coords[via].0.addr);
        let ca = self.tmp.path().join("c1").join("ca.pem");
        let env = [
            ("BERQENAS_ENDPOINT", endpoint.as_str()),
            ("BERQENAS_API_KEY", self.key.as_str()),
            ("BERQENAS_CA_CERT", ca.to_str().expect("utf-8")),
        ];
        self.lab.run(&self.coords[via].0, &coordinator_bin(), args, &env)
    }

    fn json(&self, via: usize, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.cli(via, &all);
        assert!(out.status.success(), "`{}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("json")
    }

    fn start(&mut self, i: usize) {
        let (host, _, extra) = &self.coords[i];
        let dir = self.tmp.path().join(&host.name);
        let a = host.addr.to_string();
        let (raft, api, node) = (format!("{a}:7101"), format!("{a}:7201"), format!("{a}:7301"));
        let id = (i + 1).to_string();
        let mut args = vec![
            "serve",
            "--data-dir",
            dir.to_str().expect("utf-8"),
            "--id",
            &id,
            "--raft-listen",
            &raft,
            "--api-listen",
            &api,
            "--node-listen",
            &node,
        ];
        args.extend(extra.iter().map(String::as_str));
        // The log file is appended across restarts: wait for one more "serving" line than it
        // held before this start.
        let log = self.tmp.path().join(format!("coordinator-{}.log", host.name));
        let before = std::fs::read_to_string(&log).unwrap_or_default().matches("coordinator serving").count();
        let proc =
            self.lab.spawn(host, &format!("coordinator-{}", host.name), &coordinator_bin(), &args, self.tmp.path());
        let served = |p: &Proc| p.log_text().matches("coordinator serving").count();
        wait_for("the coordinator to serve in its namespace", Duration::from_secs(20), || {
            (served(&proc) > before).then_some(())
        });
        self.coords[i].1 = Some(proc);
    }
}

#[test]
fn lab_fleet_across_namespaces_joins_converges_and_survives_a_coordinator() {
    let mut lab = Lab::new();
    let hosts: Vec<Host> = ["c1", "c2", "c3"].iter().map(|n| lab.host(n)).collect();
    let gw = lab.host("gw");
    let db = lab.host("db");
    let tmp = tempfile::tempdir().expect("tmp");
    let c1 = &hosts[0];
    let listen = coordinator::Listen::standard(&c1.addr.to_string());
    let init_args = coordinator::init_args(&tmp.path().join("c1"), &listen, "198.18.0.0/15");
    let init_args: Vec<&str> = init_args.iter().map(String::as_str).collect();
    let key = coordinator::admin_key(&lab.run(c1, &coordinator_bin(), &init_args, &[]));
    let mut f = LabFleet { lab, tmp, key, coords: hosts.into_iter().map(|h| (h, None, Vec::new())).collect() };
    f.start(0);
    for i in 1..3 {
        let id = (i + 1).to_string();
        let tok = f.json(0, &["cluster", "token", "create", "--id", &id]);
        f.coords[i].2 = coordinator::join_args(&listen.node, &tok);
        f.start(i);
        let learner = coordinator::Listen::standard(&f.coords[i].0.addr.to_string());
        let learner = coordinator::add_learner_args(i as u64 + 1, &learner);
        f.json(0, &learner.iter().map(String::as_str).collect::<Vec<_>>());
        f.json(0, &["cluster", "promote", "--id", &id]);
        // Once it holds the replicated CA it opens its node listener.
        wait_for("the node listener", Duration::from_secs(20), || {
            f.coords[i].1.as_ref()?.log_text().contains("node listener serving").then_some(())
        });
    }

    // Two agents, each in its own namespace, joining through different coordinators.
    let mut agents = Vec::new();
    for (host, roles, via) in [(&gw, "gateway", 1usize), (&db, "db", 2usize)] {
        let tok = f.json(0, &["node", "token", "create", "--roles", roles]);
        let dir = f.tmp.path().join(&host.name);
        let tenants = dir.join("tenants");
        let url = format!("https://{}:7301", f.coords[via].0.addr);
        let driver = ["--driver", "dir", "--driver-path", tenants.to_str().expect("utf-8")];
        f.lab.join_agent(host, &agent_bin(), &url, &tok, roles, &dir, &driver);
        let config = dir.join("agent.toml");
        let proc = f.lab.spawn(
            host,
            &format!("agent-{}", host.name),
            &agent_bin(),
            &["run", "--config", config.to_str().expect("utf-8")],
            f.tmp.path(),
        );
        agents.push((host.clone(), proc, tenants));
    }
    let nodes = f.json(0, &["node", "list"]);
    let mut addrs: Vec<String> =
        nodes.as_array().into_iter().flatten().filter_map(|n| n["address"].as_str().map(str::to_string)).collect();
    addrs.sort();
    assert_eq!(addrs, vec![gw.addr.to_string(), db.addr.to_string()], "agents registered with their lab addresses");

    let t = f.json(2, &berqenas_tests::coordinator::SEED_CREATE);
    assert_eq!(t["status"], "active", "{t}");
    for (host, _, tenants) in &agents {
        assert!(tenants.join("acme.json").exists(), "{} has acme", host.name);
    }

    // Kill the coordinator the gateway agent streams from; the next change still arrives.
    let connected = wait_for("the gateway agent to stream", Duration::from_secs(10), || {
        let log = agents[0].1.log_text();
        let line = log.lines().rev().find(|l| l.contains("watching desired state"))?.to_string();
        f.coords.iter().position(|(h, _, _)| line.contains(&format!("{}:7301", h.addr)))
    });
    if let Some(mut p) = f.coords[connected].1.take() {
        p.kill();
    }
    let via = (0..3).find(|i| *i != connected).expect("a survivor");
    let t = f.json(via, &["tenant", "create", "--name", "globex", "--wait", "--wait-timeout", "30s"]);
    assert_eq!(t["status"], "active", "{t}");
    assert!(agents[0].2.join("globex.json").exists());

    // The whole control plane goes away: agents keep their hosts as they are (fail static)...
    for c in f.coords.iter_mut() {
        if let Some(mut p) = c.1.take() {
            p.stop(Duration::from_secs(10));
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    for (host, proc, tenants) in &agents {
        assert!(
            tenants.join("acme.json").exists() && tenants.join("globex.json").exists(),
            "{} kept its state",
            host.name
        );
        assert!(!proc.log_text().contains("removes"), "{} tore nothing down", host.name);
    }
    // ...and converge again when it returns.
    for i in 0..3 {
        f.start(i);
    }
    let t = f.json(0, &["tenant", "create", "--name", "initech", "--wait", "--wait-timeout", "60s"]);
    assert_eq!(t["status"], "active", "{t}");
    for (host, _, tenants) in &agents {
        assert!(tenants.join("initech.json").exists(), "{} got the change after the outage", host.name);
    }
    let via = 0;

    // The API refuses plain HTTP off loopback, and an https client without the CA refuses it.
    let host = f.coords[via].0.clone();
    let plain = f.lab.run(
        &host,
        &coordinator_bin(),
        &["tenant", "list", "--endpoint", &format!("http://{}:7201", host.addr)],
        &[("BERQENAS_API_KEY", &f.key)],
    );
    assert!(!plain.status.success(), "plain HTTP to a TLS API must fail");
    let untrusted = f.lab.run(
        &host,
        &coordinator_bin(),
        &["tenant", "list", "--endpoint", &format!("https://{}:7201", host.addr)],
        &[("BERQENAS_API_KEY", &f.key)],
    );
    let err = String::from_utf8_lossy(&untrusted.stderr);
    assert!(err.contains("needs --ca-cert"), "{err}");
}

#[test]
fn lab_postgres_is_reachable_from_other_lab_hosts_only_with_its_password() {
    let mut lab = Lab::new();
    let db = lab.host("pg");
    let client = lab.host("client");
    let tmp = tempfile::tempdir().expect("tmp");
    let pg = berqenas_tests::postgres::Postgres::start(&lab, &db, tmp.path());
    assert_eq!(pg.psql(&lab, &client, "select 40 + 2"), Ok("42".to_string()));
    let wrong = lab.run(
        &client,
        &pg.bin.join("psql"),
        &["-h", &db.addr.to_string(), "-U", "postgres", "-tAc", "select 1"],
        &[("PGPASSWORD", "nope"), ("PGCONNECT_TIMEOUT", "5")],
    );
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("password authentication failed"));
}
