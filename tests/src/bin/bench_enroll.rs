//! `deploy/bench.sh enroll`: token → tunnel up for 100 sequential devices, with the real
//! `berqenas-coordinator`, a real gateway agent (wireguard-go) and a db agent, and the real
//! `berqenas-device`, in lab network namespaces (as tests/tests/fleet/device_e2e.rs does once).
//!
//! One device's "token → tunnel up" starts when `device token create` has answered (the token is
//! in the operator's hand) and ends when the device's first `ping -c 1 -W 1` of the tenant's
//! gateway address through its WireGuard tunnel is answered: `berqenas-device enroll` (keys,
//! CSR, fingerprint; the coordinator signs and allocates), `berqenas-device up` (retried until
//! the coordinator gives it a complete tunnel; it waits for the gateway's handshake, starting
//! fresh initiations while none comes) and pings until the gateway agent has added the
//! peer and the handshake is done. Every process start (`ip netns exec`) is inside the time.
//! Side by side, the bring-your-own-key path for as many devices on another tenant: `wg genkey` and
//! `wg pubkey`, `device add --public-key`, `device config --format wg-quick` (waited until
//! complete) and `wg-quick up` of that file (userspace wireguard-go), until the same ping.
//! Then `berqenas-device run` of one enrolled device: its RSS after 10 s; and the sizes of the
//! device binaries given on the command line. One JSON line.
//!
//! Usage: bench-enroll COORDINATOR AGENT DEVICE [TARGET=PATH…] (BERQENAS_BENCH_DEVICES=N).
//! Needs root, /dev/net/tun, wireguard-go, wg, wg-quick, ip, nsenter, ping.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: it starts the project's binaries and lab tools, and a failed setup step is a failed test"
)]

use berqenas_tests::bench::{percentile, proc_stats, round2};
use berqenas_tests::coordinator;
use berqenas_tests::lab::{enroll_args, wg_keypair, Host, Lab};
use berqenas_tests::{wait_for, Proc};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

const PUBLIC: &str = "198.51.100.10";
const CONVERGE: Duration = Duration::from_secs(30);

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn require_prerequisites() {
    assert!(rustix::process::geteuid().is_root(), "bench-enroll needs root (network namespaces, tun devices)");
    assert!(Path::new("/dev/net/tun").exists(), "/dev/net/tun is missing (wireguard-go needs it)");
    for tool in ["wireguard-go", "wg", "wg-quick", "ip", "nsenter", "ping"] {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(found, "{tool} is not installed (wireguard-go wireguard-tools iproute2 util-linux iputils-ping)");
    }
}

/// p50/p99/max of a sample, rounded.
fn stats(v: &[f64]) -> Value {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    json!({"p50": round2(percentile(&v, 0.5)), "p99": round2(percentile(&v, 0.99)), "max": round2(v.last().copied().unwrap_or(0.0))})
}

/// Deletes the WireGuard links left in `host` when the bench ends (wireguard-go exits with its
/// link and would otherwise keep a deleted namespace alive).
struct Links<'a> {
    lab: &'a Lab,
    host: Host,
    names: Vec<String>,
}

impl Drop for Links<'_> {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = self.lab.run(&self.host, Path::new("ip"), &["link", "del", n], &[]);
        }
    }
}

struct Bench {
    lab: Lab,
    coord: Host,
    gw: Host,
    tmp: tempfile::TempDir,
    key: String,
    coordinator: PathBuf,
    agent: PathBuf,
}

impl Bench {
    fn cli(&self, args: &[&str]) -> Value {
        let endpoint = format!("https://{}:7201", self.coord.addr);
        let ca = self.tmp.path().join("coord").join("ca.pem");
        let env = [
            ("BERQENAS_ENDPOINT", endpoint.as_str()),
            ("BERQENAS_API_KEY", self.key.as_str()),
            ("BERQENAS_CA_CERT", path(&ca)),
        ];
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.lab.run(&self.coord, &self.coordinator, &all, &env);
        assert!(out.status.success(), "`{}` failed: {}", args.join(" "), text(&out));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("`{}`: no JSON ({e}): {}", args.join(" "), text(&out)))
    }

    /// `berqenas-node-agent join` in `host`; returns its data directory (`DIR` in `extra`).
    fn join(&self, host: &Host, name: &str, roles: &str, extra: &[&str]) -> PathBuf {
        let tok = self.cli(&["node", "token", "create", "--roles", roles]);
        let dir = self.tmp.path().join(name);
        let url = format!("https://{}:7301", self.coord.addr);
        self.lab.join_agent(host, &self.agent, &url, &tok, roles, &dir, extra);
        dir
    }

    fn pings(&self, host: &Host, target: &str) -> bool {
        self.lab.run(host, Path::new("ping"), &["-c", "1", "-W", "1", target], &[]).status.success()
    }

    fn ping_until(&self, host: &Host, target: &str, what: &str) {
        let deadline = Instant::now() + CONVERGE;
        while !self.pings(host, target) {
            assert!(Instant::now() < deadline, "timed out: {what} ({target})");
        }
    }

    fn gateway_address(&self, tenant: &str) -> String {
        let t = self.cli(&["tenant", "get", tenant]);
        t["network"]["gateway_address"].as_str().unwrap_or_else(|| panic!("gateway address: {t}")).to_string()
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bench-enroll COORDINATOR AGENT DEVICE [TARGET=PATH…]";
    let coordinator_bin = std::fs::canonicalize(args.next().expect(usage)).expect("coordinator_bin: no such file");
    let agent_bin = std::fs::canonicalize(args.next().expect(usage)).expect("agent_bin: no such file");
    let device_bin = std::fs::canonicalize(args.next().expect(usage)).expect("device_bin: no such file");
    let sizes: Vec<(String, PathBuf)> = args
        .map(|a| {
            let (t, p) = a.split_once('=').expect(usage);
            (t.to_string(), PathBuf::from(p))
        })
        .collect();
    let n: usize = std::env::var("BERQENAS_BENCH_DEVICES").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    assert!((1..=200).contains(&n), "BERQENAS_BENCH_DEVICES: 1..=200 (one tenant /24 each)");
    require_prerequisites();

    let mut lab = Lab::new();
    let coord = lab.host("coord");
    let gw = lab.host("gw");
    let dev = lab.host("dev");
    let tmp = tempfile::tempdir().expect("tmp");
    for (h, a) in [(&gw, format!("{PUBLIC}/24")), (&dev, "198.51.100.31/24".to_string())] {
        let out = lab.run(h, Path::new("ip"), &["addr", "add", &a, "dev", "eth0"], &[]);
        assert!(out.status.success(), "{}", text(&out));
    }

    // The coordinator in its namespace, with its default limits (enrollments 5/s per source).
    let listen = coordinator::Listen::standard(&coord.addr.to_string());
    let cdir = tmp.path().join("coord");
    let init = coordinator::init_args(&cdir, &listen, "198.18.0.0/15");
    let init: Vec<&str> = init.iter().map(String::as_str).collect();
    let key = coordinator::admin_key(&lab.run(&coord, &coordinator_bin, &init, &[]));
    let serve = coordinator::serve_args(&cdir, 1, &listen);
    let serve: Vec<&str> = serve.iter().map(String::as_str).collect();
    let cproc = lab.spawn(&coord, "coordinator", &coordinator_bin, &serve, tmp.path());
    wait_for("the coordinator's node listener", Duration::from_secs(30), || {
        cproc.log_text().contains("node listener serving").then_some(())
    });
    let b = Bench { lab, coord, gw, tmp, key, coordinator: coordinator_bin, agent: agent_bin };

    // A db node (dir driver) beside the coordinator, and the gateway agent with a private
    // /run/wireguard held by a sleeping process (as tests/tests/fleet/gateway_e2e/env.rs).
    let db_dir = b.join(&b.coord, "db", "db", &["--driver", "dir", "--driver-path", "DIR/tenants"]);
    let db = b.lab.spawn(
        &b.coord,
        "agent-db",
        &b.agent,
        &["run", "--config", path(&db_dir.join("agent.toml"))],
        b.tmp.path(),
    );
    let gw_dir = b.join(
        &b.gw,
        "gw",
        "gateway",
        &["--public-address", PUBLIC, "--public-ports", "15000-15999", "--resync-interval", "2s"],
    );
    std::fs::create_dir_all("/run/wireguard").expect("/run/wireguard");
    let script = "mount -t tmpfs tmpfs /run/wireguard && echo mounted && exec sleep 100000";
    let holder =
        Proc::spawn("gw-mounts", Path::new("ip"), &["netns", "exec", &b.gw.netns, "sh", "-c", script], b.tmp.path());
    wait_for("the gateway's /run/wireguard", Duration::from_secs(5), || {
        holder.log_text().contains("mounted").then_some(())
    });
    let hpid = holder.pid().to_string();
    let gw_config = gw_dir.join("agent.toml");
    let gw_args = ["-t", hpid.as_str(), "-m", "-n", path(&b.agent), "run", "--config", path(&gw_config)];
    let mut gw_agent = Proc::spawn("agent-gw", Path::new("nsenter"), &gw_args, b.tmp.path());

    for t in ["acme", "byok"] {
        b.cli(&["tenant", "create", "--name", t, "--vpn", "enabled", "--wait", "--wait-timeout", "60s"]);
    }
    let acme_gw = b.gateway_address("acme");
    let byok_gw = b.gateway_address("byok");
    let tag = std::process::id() % 1000;
    let mut links = Links { lab: &b.lab, host: dev.clone(), names: Vec::new() };

    // Enrollment with berqenas-device, one device after the other.
    let denv = [("BERQENAS_DEVICE_WG", "userspace")];
    let (mut token_ms, mut enroll_ms, mut up_ms, mut ping_ms, mut total_ms) = (vec![], vec![], vec![], vec![], vec![]);
    let (mut up_retries, mut unconfirmed, mut no_handshake) = (0u32, 0u32, 0u32);
    let mut last_state = PathBuf::new();
    for i in 0..n {
        let name = format!("e{i}");
        let t0 = Instant::now();
        let created = b.cli(&["device", "token", "create", "--tenant", "acme", "--name", &name]);
        token_ms.push(ms(t0));
        let state = b.tmp.path().join(format!("dev-{name}"));
        let sd = path(&state).to_string();
        let interface = format!("bqb{tag}e{i}");
        links.names.push(interface.clone());
        let mut enroll = enroll_args(&created);
        enroll.extend(["--interface".to_string(), interface.clone()]);
        let enroll: Vec<&str> = enroll.iter().map(String::as_str).collect();
        let device = |a: &[&str]| {
            let mut all = vec!["--state-dir", sd.as_str()];
            all.extend_from_slice(a);
            b.lab.run(&dev, &device_bin, &all, &denv)
        };

        let start = Instant::now();
        let out = device(&enroll);
        assert!(out.status.success(), "enroll {name}: {}", text(&out));
        enroll_ms.push(ms(start));
        unconfirmed += u32::from(text(&out).contains("has not confirmed"));
        let t = Instant::now();
        let deadline = t + CONVERGE;
        loop {
            let out = device(&["up"]);
            if out.status.success() {
                no_handshake += u32::from(!text(&out).contains("handshake with the gateway after"));
                break;
            }
            up_retries += 1;
            assert!(Instant::now() < deadline, "up {name}: {}", text(&out));
            std::thread::sleep(Duration::from_millis(20));
        }
        up_ms.push(ms(t));
        let t = Instant::now();
        b.ping_until(&dev, &acme_gw, "a ping of the gateway through the enrolled device's tunnel");
        ping_ms.push(ms(t));
        total_ms.push(ms(start));
        // Not timed: the tunnel goes down so the next device has the host to itself.
        if i + 1 < n {
            let out = device(&["down"]);
            assert!(out.status.success(), "down {name}: {}", text(&out));
        }
        last_state = state;
    }

    // Bring your own key: wg genkey, device add, device config, wg-quick up.
    let (mut byok_add_ms, mut byok_config_ms, mut byok_up_ms, mut byok_ping_ms, mut byok_total_ms) =
        (vec![], vec![], vec![], vec![], vec![]);
    for i in 0..n {
        let name = format!("p{i}");
        let interface = format!("bqb{tag}p{i}");
        links.names.push(interface.clone());
        let start = Instant::now();
        let (private, public) = wg_keypair();
        let added = b.cli(&["device", "add", "--tenant", "byok", "--name", &name, "--public-key", &public]);
        assert!(added["address"].is_string(), "device add: {added}");
        byok_add_ms.push(ms(start));
        let t = Instant::now();
        let config = wait_for("a complete device config", CONVERGE, || {
            let v = b.cli(&["device", "config", &name, "--tenant", "byok", "--format", "wg-quick"]);
            v["missing"].as_array().is_none_or(Vec::is_empty).then(|| v["config"].as_str().expect("config").to_string())
        });
        byok_config_ms.push(ms(t));
        let t = Instant::now();
        let mut file = String::new();
        for line in config.lines() {
            if line.trim_start().to_ascii_lowercase().starts_with("privatekey") {
                file.push_str(&format!("PrivateKey = {private}\n"));
            } else {
                file.push_str(line);
                file.push('\n');
            }
        }
        let conf = b.tmp.path().join(format!("{interface}.conf"));
        std::fs::write(&conf, file).expect("write the wg-quick file");
        let quick_env = [("WG_QUICK_USERSPACE_IMPLEMENTATION", "wireguard-go")];
        let out = b.lab.run(&dev, Path::new("wg-quick"), &["up", path(&conf)], &quick_env);
        assert!(out.status.success(), "wg-quick up {name}: {}", text(&out));
        byok_up_ms.push(ms(t));
        let t = Instant::now();
        b.ping_until(&dev, &byok_gw, "a ping of the gateway through the wg-quick tunnel");
        byok_ping_ms.push(ms(t));
        byok_total_ms.push(ms(start));
        let out = b.lab.run(&dev, Path::new("wg-quick"), &["down", path(&conf)], &quick_env);
        assert!(out.status.success(), "wg-quick down {name}: {}", text(&out));
    }

    // `run` of the last enrolled device (its tunnel is up): RSS after 10 s of service.
    let dbin = path(&device_bin).to_string();
    let run_args = ["BERQENAS_DEVICE_WG=userspace", dbin.as_str(), "--state-dir", path(&last_state), "run"];
    let mut run = b.lab.spawn(&dev, "device-run", Path::new("/usr/bin/env"), &run_args, b.tmp.path());
    std::thread::sleep(Duration::from_secs(10));
    assert!(b.pings(&dev, &acme_gw), "the tunnel is up under `run`");
    let (run_rss, run_peak, run_cpu) = proc_stats(run.pid());
    run.stop(Duration::from_secs(5));
    let _ = b.lab.run(&dev, &device_bin, &["--state-dir", path(&last_state), "down"], &denv);

    let sizes: serde_json::Map<String, Value> = sizes
        .iter()
        .map(|(t, p)| {
            let len = std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).len();
            (t.clone(), json!(round2(len as f64 / 1_048_576.0)))
        })
        .collect();
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        percentile(&v, 0.5)
    };
    let line = json!({
        "bench": "enroll",
        "devices": n,
        "token_to_tunnel_up_ms": stats(&total_ms),
        "token_to_tunnel_up_phases_ms": {
            "enroll": stats(&enroll_ms), "up": stats(&up_ms), "ping": stats(&ping_ms),
            "up_retries": up_retries,
            "enroll_answered_before_the_gateway_had_the_peer": unconfirmed,
            "up_without_handshake": no_handshake,
        },
        "token_create_ms": stats(&token_ms),
        "byok_to_tunnel_up_ms": stats(&byok_total_ms),
        "byok_phases_ms": {
            "genkey_and_device_add": stats(&byok_add_ms), "device_config": stats(&byok_config_ms),
            "wg_quick_up": stats(&byok_up_ms), "ping": stats(&byok_ping_ms),
        },
        "enroll_vs_byok_p50_ratio": round2(median(&total_ms) / median(&byok_total_ms).max(0.001)),
        "device_run_rss_mb": round2(run_rss),
        "device_run_peak_rss_mb": round2(run_peak),
        "device_run_cpu_s": round2(run_cpu),
        "device_binary_mb": sizes,
        "targets": {"token_to_tunnel_up_p99_ms": "< 1000", "device_binary_mb": "< 10", "device_run_rss_mb": "< 15"},
        "measured": "token in hand → `berqenas-device enroll` → `berqenas-device up` (retried until the \
                     coordinator has the gateway's key) → first answered ping of the tenant gateway \
                     address through WireGuard (wireguard-go on both ends; the gateway agent adds the \
                     peer); every step a process in a lab namespace. byok: wg genkey/pubkey → device add \
                     --public-key → device config (complete) → wg-quick up → the same ping",
    });
    println!("{line}");
    drop(links);
    gw_agent.kill();
    // The gateway's tenant links (wireguard-go exits with its link).
    let out = b.lab.run(&b.gw, Path::new("ip"), &["-o", "link", "show"], &[]);
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(name) = l.split(':').nth(1).map(|n| n.trim().split('@').next().unwrap_or("").to_string()) {
            if name.starts_with("bqt") {
                let _ = b.lab.run(&b.gw, Path::new("ip"), &["link", "del", &name], &[]);
            }
        }
    }
    drop(holder);
    drop(db);
    drop(cproc);
}
