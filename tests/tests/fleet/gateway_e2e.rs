//! The gateway end to end with the project's real binaries and real packets. Network namespaces
//! on the lab bridge: a coordinator (with a db agent beside it), a gateway running
//! `berqenas-node-agent` (joined `--roles gateway --public-address 198.51.100.10 --public-ports
//! 15000-15999`, driver none, so the real gateway driver with userspace wireguard-go), two device
//! hosts of tenant A (`acme`), one of tenant B (`beta`) and an outside client in 203.0.113.0/24.
//! Devices are configured only from `berqenas-coordinator device config --format wg-quick`, the
//! way wg-quick would apply it (`wireguard-go`, `wg setconf`, `ip`, the file's PostUp lines): no
//! code of ours runs on a device. TCP services and clients are `nft-lab serve/connect/burst`.
//!
//! The gateway agent gets a private `/run/wireguard` (a tmpfs in its own mount namespace):
//! wireguard-go's control sockets live there, named after the interface, and `bqt1` of this lab
//! must not meet the `bqt1` of another lab running at the same time.
//!
//! Prerequisites (a missing one fails the test): root, /dev/net/tun, `wireguard-go`, `wg`, `ip`,
//! `nft`, `nsenter`, `ping`, `python3`.

use crate::harness::{agent_bin, coordinator_bin};
use berqenas_tests::coordinator;
use berqenas_tests::lab::{Host, Lab};
use berqenas_tests::{wait_for, workspace_bin, Proc};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const PUBLIC: &str = "198.51.100.10";
/// How long a change takes to reach the gateway and be applied (agents resync every 2 s).
const CONVERGE: Duration = Duration::from_secs(20);
/// A device whose session the gateway lost (peer or interface repaired, tenant resumed) notices
/// only when its data goes unanswered: WireGuard then handshakes again after about 15 s.
const REHANDSHAKE: Duration = Duration::from_secs(45);

static ENVS: AtomicU32 = AtomicU32::new(0);

fn require_prerequisites() {
    assert!(rustix::process::geteuid().is_root(), "the gateway lab needs root (network namespaces, tun devices)");
    assert!(Path::new("/dev/net/tun").exists(), "/dev/net/tun is missing: the gateway lab needs tun devices");
    for tool in ["wireguard-go", "wg", "ip", "nft", "nsenter", "ping", "python3"] {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "{tool} is not installed (wireguard-go wireguard-tools iproute2 nftables util-linux iputils-ping python3)"
        );
    }
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A device host: its WireGuard key pair (made with `wg genkey`/`wg pubkey`), its name in the
/// coordinator and the interface the wg-quick config is applied to.
#[derive(Clone)]
struct Device {
    host: Host,
    tenant: &'static str,
    name: &'static str,
    interface: String,
    private_key: String,
    public_key: String,
    /// From `device add`.
    address: String,
}

/// A wg-quick file as `wg-quick up` reads it: the wg-quick-only keys apart, the rest for
/// `wg setconf`.
#[derive(Debug, Default)]
struct WgQuick {
    addresses: Vec<String>,
    table_off: bool,
    post_up: Vec<String>,
    pre_down: Vec<String>,
    allowed_ips: Vec<String>,
    /// The `[Interface]`/`[Peer]` sections without wg-quick's own keys: `wg setconf`'s input.
    setconf: String,
}

impl WgQuick {
    /// Parses `config`, putting `private_key` where the file has its placeholder.
    fn parse(config: &str, private_key: &str) -> WgQuick {
        let mut q = WgQuick::default();
        let mut section = String::new();
        for line in config.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.starts_with('[') {
                section = line.to_string();
                q.setconf.push_str(&format!("{line}\n"));
                continue;
            }
            let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("not key = value: {line:?}"));
            let (key, value) = (key.trim(), value.trim());
            match (section.as_str(), key.to_ascii_lowercase().as_str()) {
                ("[Interface]", "privatekey") => {
                    assert!(value.starts_with('<'), "the private key is a placeholder, never a key: {value}");
                    q.setconf.push_str(&format!("PrivateKey = {private_key}\n"));
                }
                ("[Interface]", "address") => q.addresses.extend(value.split(',').map(|a| a.trim().to_string())),
                ("[Interface]", "table") => q.table_off = value == "off",
                ("[Interface]", "postup") => q.post_up.push(value.to_string()),
                ("[Interface]", "predown") => q.pre_down.push(value.to_string()),
                ("[Interface]", "dns" | "mtu" | "saveconfig" | "preup" | "postdown") => {
                    panic!("the lab does not apply {key}: {config}")
                }
                ("[Peer]", "allowedips") => {
                    q.allowed_ips.extend(value.split(',').map(|a| a.trim().to_string()));
                    q.setconf.push_str(&format!("{line}\n"));
                }
                _ => q.setconf.push_str(&format!("{line}\n")),
            }
        }
        q
    }
}

/// Fields drop in order: processes first (their logs print when a test fails), then the lab's
/// namespaces, then the files. `Drop` deletes the WireGuard links before that: a wireguard-go
/// process exits with its link and would otherwise keep a deleted namespace alive.
struct Env {
    agent: Option<Proc>,
    /// Holds the gateway's mount namespace (its private `/run/wireguard`).
    holder: Option<Proc>,
    procs: Vec<Proc>,
    lab: Lab,
    tmp: tempfile::TempDir,
    key: String,
    coord: Host,
    gw: Host,
    client: Host,
    /// acme's d1 and d2, beta's d3.
    devices: Vec<Device>,
    gw_dir: PathBuf,
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            a.kill();
        }
        let links = self.lab.run(&self.gw, Path::new("ip"), &["-o", "link", "show"], &[]);
        for line in String::from_utf8_lossy(&links.stdout).lines() {
            let Some(name) = line.split(':').nth(1).map(|n| n.trim().split('@').next().unwrap_or("")) else { continue };
            if name.starts_with("bqt") {
                let _ = self.lab.run(&self.gw, Path::new("ip"), &["link", "del", name], &[]);
            }
        }
        for d in &self.devices {
            let _ = self.lab.run(&d.host, Path::new("ip"), &["link", "del", &d.interface], &[]);
        }
    }
}

fn wg_keypair() -> (String, String) {
    use std::io::Write;
    let private = std::process::Command::new("wg").arg("genkey").output().expect("wg genkey");
    let private = String::from_utf8_lossy(&private.stdout).trim().to_string();
    let mut child = std::process::Command::new("wg")
        .arg("pubkey")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("wg pubkey");
    child.stdin.take().expect("stdin").write_all(private.as_bytes()).expect("write key");
    let public = child.wait_with_output().expect("wg pubkey output");
    (private, String::from_utf8_lossy(&public.stdout).trim().to_string())
}

impl Env {
    /// The whole lab: coordinator, db agent, gateway agent, tenants acme (d1, d2) and beta (d3),
    /// each device configured from its `device config` and pinging its gateway address.
    fn new() -> Env {
        require_prerequisites();
        let n = ENVS.fetch_add(1, Ordering::SeqCst);
        let mut lab = Lab::new();
        let coord = lab.host("coord");
        let gw = lab.host("gw");
        let hosts: Vec<Host> = ["a1", "a2", "b1"].iter().map(|h| lab.host(h)).collect();
        let client = lab.host("client");
        let tmp = tempfile::tempdir().expect("tmp");
        let ip = |h: &Host, args: &[&str]| {
            let out = lab.run(h, Path::new("ip"), args, &[]);
            assert!(out.status.success(), "ip {args:?} in {}: {}", h.name, text(&out));
        };
        // The public side: the gateway's public address, and its address towards the outside
        // client's network, which routes the public range through it.
        ip(&gw, &["addr", "add", &format!("{PUBLIC}/24"), "dev", "eth0"]);
        ip(&gw, &["addr", "add", "203.0.113.1/24", "dev", "eth0"]);
        for (i, h) in hosts.iter().enumerate() {
            ip(h, &["addr", "add", &format!("198.51.100.{}/24", 21 + i), "dev", "eth0"]);
        }
        for a in ["203.0.113.7/24", "203.0.113.8/24"] {
            ip(&client, &["addr", "add", a, "dev", "eth0"]);
        }
        ip(&client, &["route", "add", "198.51.100.0/24", "via", "203.0.113.1"]);

        // The coordinator, in its namespace (its API over TLS off loopback).
        let listen = coordinator::Listen::standard(&coord.addr.to_string());
        let cdir = tmp.path().join("coord");
        let init = coordinator::init_args(&cdir, &listen, "198.18.0.0/15");
        let init: Vec<&str> = init.iter().map(String::as_str).collect();
        let key = coordinator::admin_key(&lab.run(&coord, &coordinator_bin(), &init, &[]));
        let serve = coordinator::serve_args(&cdir, 1, &listen);
        let serve: Vec<&str> = serve.iter().map(String::as_str).collect();
        let cproc = lab.spawn(&coord, "coordinator", &coordinator_bin(), &serve, tmp.path());
        wait_for("the coordinator's node listener", Duration::from_secs(20), || {
            cproc.log_text().contains("node listener serving").then_some(())
        });
        let mut env = Env {
            agent: None,
            holder: None,
            procs: vec![cproc],
            lab,
            tmp,
            key,
            coord: coord.clone(),
            gw: gw.clone(),
            client: client.clone(),
            devices: Vec::new(),
            gw_dir: PathBuf::new(),
        };

        // A db node for the tenants' database part (dir driver), beside the coordinator.
        let db_dir = env.join(&coord, "db", "db", &["--driver", "dir", "--driver-path", "DIR/tenants"]);
        let config = db_dir.join("agent.toml");
        let db = env.lab.spawn(&coord, "agent-db", &agent_bin(), &["run", "--config", path(&config)], env.tmp.path());
        env.procs.push(db);
        // The gateway: driver none with a public address is the real gateway driver.
        env.gw_dir = env.join(
            &gw,
            "gw",
            "gateway",
            &["--public-address", PUBLIC, "--public-ports", "15000-15999", "--resync-interval", "2s"],
        );
        env.start_gateway("agent-gw");

        env.json(&["tenant", "create", "--name", "acme", "--vpn", "enabled", "--wait", "--wait-timeout", "60s"]);
        env.json(&["tenant", "create", "--name", "beta", "--vpn", "enabled", "--wait", "--wait-timeout", "60s"]);
        for (host, tenant, name) in [(&hosts[0], "acme", "d1"), (&hosts[1], "acme", "d2"), (&hosts[2], "beta", "d3")] {
            let (private_key, public_key) = wg_keypair();
            let added = env.json(&["device", "add", "--tenant", tenant, "--name", name, "--public-key", &public_key]);
            let address = added["address"].as_str().unwrap_or_else(|| panic!("device add: {added}")).to_string();
            env.devices.push(Device {
                host: host.clone(),
                tenant,
                name,
                // ≤ 15 characters, unique on the machine: wireguard-go's sockets share a directory.
                interface: format!("bqe{}x{n}{}", std::process::id() % 100_000, env.devices.len()),
                private_key,
                public_key,
                address,
            });
        }
        for i in 0..env.devices.len() {
            let d = env.devices[i].clone();
            env.up(&d);
            env.reach(&d, &env.gateway_address(d.tenant), CONVERGE, "a device pings its gateway through the tunnel");
        }
        env
    }

    /// `berqenas-node-agent join` in `host`; returns the agent's data directory. `DIR` in
    /// `extra` stands for it.
    fn join(&self, host: &Host, name: &str, roles: &str, extra: &[&str]) -> PathBuf {
        let tok = self.json(&["node", "token", "create", "--roles", roles]);
        let dir = self.tmp.path().join(name);
        let url = format!("https://{}:7301", self.coord.addr);
        let extra: Vec<String> = extra.iter().map(|a| a.replace("DIR", path(&dir))).collect();
        let mut args = vec![
            "join",
            "--coordinator",
            &url,
            "--token",
            tok["token"].as_str().expect("token"),
            "--ca-pin",
            tok["ca_fingerprint"].as_str().expect("pin"),
            "--roles",
            roles,
            "--data-dir",
            path(&dir),
        ];
        args.extend(extra.iter().map(String::as_str));
        let out = self.lab.run(host, &agent_bin(), &args, &[]);
        assert!(out.status.success(), "join in {}: {}", host.name, text(&out));
        dir
    }

    /// Starts the gateway agent (again) in its namespace with a private `/run/wireguard`, kept
    /// by a holder process so a restarted agent finds the wireguard-go sockets of the last one.
    /// `name` names its log.
    fn start_gateway(&mut self, name: &str) {
        if self.holder.is_none() {
            std::fs::create_dir_all("/run/wireguard").expect("/run/wireguard");
            // `ip netns exec` runs its command in a mount namespace of its own: the tmpfs stays
            // there, and `exec` keeps the holder in it.
            let script = "mount -t tmpfs tmpfs /run/wireguard && echo mounted && exec sleep 100000";
            let args = ["netns", "exec", &self.gw.netns, "sh", "-c", script];
            let holder = Proc::spawn("gw-mounts", Path::new("ip"), &args, self.tmp.path());
            wait_for("the gateway's /run/wireguard", Duration::from_secs(5), || {
                holder.log_text().contains("mounted").then_some(())
            });
            self.holder = Some(holder);
        }
        let holder = self.holder.as_ref().expect("holder").pid().to_string();
        let config = self.gw_dir.join("agent.toml");
        let agent = agent_bin();
        let args = [
            "-t",
            &holder,
            "-m",
            "-n",
            "env",
            "RUST_LOG=info,berqenas_node_agent::runtime=debug",
            path(&agent),
            "run",
            "--config",
            path(&config),
        ];
        self.agent = Some(Proc::spawn(name, Path::new("nsenter"), &args, self.tmp.path()));
    }

    fn cli(&self, args: &[&str]) -> Output {
        let endpoint = format!("https://{}:7201", self.coord.addr);
        let ca = self.tmp.path().join("coord").join("ca.pem");
        let env = [
            ("BERQENAS_ENDPOINT", endpoint.as_str()),
            ("BERQENAS_API_KEY", self.key.as_str()),
            ("BERQENAS_CA_CERT", path(&ca)),
        ];
        self.lab.run(&self.coord, &coordinator_bin(), args, &env)
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.cli(&all);
        assert!(out.status.success(), "`{}` failed: {}", args.join(" "), text(&out));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("`{}` printed no JSON ({e}): {}", args.join(" "), text(&out)))
    }

    fn gateway_address(&self, tenant: &str) -> String {
        let t = self.json(&["tenant", "get", tenant]);
        t["network"]["gateway_address"].as_str().unwrap_or_else(|| panic!("gateway address: {t}")).to_string()
    }

    /// `device config --format wg-quick`, once the coordinator knows everything it needs.
    fn device_config(&self, d: &Device) -> String {
        wait_for("a complete device config (the gateway's public key)", CONVERGE, || {
            let v = self.json(&["device", "config", d.name, "--tenant", d.tenant, "--format", "wg-quick"]);
            let missing = v["missing"].as_array().map_or(true, Vec::is_empty);
            missing.then(|| v["config"].as_str().expect("config").to_string())
        })
    }

    /// In `host`: `program args`, which must succeed; its stdout.
    fn sh(&self, host: &Host, program: &str, args: &[&str]) -> String {
        let out = self.lab.run(host, Path::new(program), args, &[]);
        assert!(out.status.success(), "{program} {} in {}: {}", args.join(" "), host.name, text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `wg` on the gateway, in the agent's mount namespace (where its control sockets are).
    fn gw_wg(&self, args: &[&str]) -> String {
        let pid = self.holder.as_ref().expect("the gateway's mount namespace").pid().to_string();
        let mut all = vec!["-t", pid.as_str(), "-m", "-n", "wg"];
        all.extend_from_slice(args);
        let out = berqenas_tests::run(Path::new("nsenter"), &all, &[]);
        assert!(out.status.success(), "wg {args:?} on the gateway: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `wg-quick up` of the device's current config, by hand: wireguard-go, `wg setconf` with
    /// the file's WireGuard part, its addresses, the routes of AllowedIPs (unless `Table = off`)
    /// and its PostUp lines.
    fn up(&self, d: &Device) {
        let config = self.device_config(d);
        let q = WgQuick::parse(&config, &d.private_key);
        let i = d.interface.as_str();
        self.sh(&d.host, "wireguard-go", &[i]);
        wait_for("the device's wireguard-go", Duration::from_secs(5), || {
            self.lab.run(&d.host, Path::new("wg"), &["show", i], &[]).status.success().then_some(())
        });
        let file = self.tmp.path().join(format!("{}.conf", d.name));
        std::fs::write(&file, &q.setconf).expect("write the setconf file");
        self.sh(&d.host, "wg", &["setconf", i, path(&file)]);
        for a in &q.addresses {
            self.sh(&d.host, "ip", &["-4", "address", "add", a, "dev", i]);
        }
        self.sh(&d.host, "ip", &["link", "set", "mtu", "1420", "up", "dev", i]);
        if !q.table_off {
            for a in &q.allowed_ips {
                assert_ne!(a, "0.0.0.0/0", "wg-quick's default-route mode is not part of this lab: {config}");
                self.sh(&d.host, "ip", &["-4", "route", "add", a, "dev", i]);
            }
        }
        for line in &q.post_up {
            self.sh(&d.host, "sh", &["-c", &line.replace("%i", i)]);
        }
    }

    /// `wg-quick down`: the PreDown lines of the config it was brought up with, then the link.
    fn down(&self, d: &Device, config: &str) {
        let q = WgQuick::parse(config, &d.private_key);
        for line in &q.pre_down {
            self.sh(&d.host, "sh", &["-c", &line.replace("%i", &d.interface)]);
        }
        self.sh(&d.host, "ip", &["link", "del", &d.interface]);
    }

    fn pings(&self, host: &Host, target: &str) -> bool {
        self.lab.run(host, Path::new("ping"), &["-c", "1", "-W", "1", target], &[]).status.success()
    }

    /// Waits until `d` pings `target`; on timeout, shows both ends' WireGuard.
    fn reach(&self, d: &Device, target: &str, within: Duration, what: &str) {
        let deadline = Instant::now() + within;
        while !self.pings(&d.host, target) {
            if Instant::now() > deadline {
                let dev = self.lab.run(&d.host, Path::new("wg"), &["show", "all"], &[]);
                let routes = self.lab.run(&d.host, Path::new("ip"), &["route", "show", "table", "all"], &[]);
                panic!(
                    "timed out after {within:?}: {what} ({} → {target})\ngateway wg:\n{}\ndevice wg:\n{}\ndevice routes:\n{}",
                    d.name,
                    self.gw_wg(&["show", "all"]),
                    text(&dev),
                    text(&routes)
                );
            }
        }
    }

    fn device(&self, name: &str) -> Device {
        self.devices.iter().find(|d| d.name == name).cloned().expect("device")
    }

    fn serve(&mut self, host: &Host, name: &str, ports: &[&str]) {
        let mut args = vec!["serve"];
        args.extend_from_slice(ports);
        let p = self.lab.spawn(host, name, &workspace_bin("nft-lab"), &args, self.tmp.path());
        wait_for(name, Duration::from_secs(10), || p.log_text().contains("serving").then_some(()));
        self.procs.push(p);
    }

    /// What a TCP service at `to` answers a connection from `host` (bound to `from`): the
    /// address it sees, `timeout`, or the error.
    fn connect(&self, host: &Host, to: &str, from: Option<&str>) -> String {
        let mut args = vec!["connect", to];
        args.extend(from);
        let out = self.lab.run(host, &workspace_bin("nft-lab"), &args, &[]);
        assert!(out.status.success(), "nft-lab connect {to}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Waits until a connection from `host` to `to` is answered with `want`.
    fn connects(&self, host: &Host, to: &str, from: Option<&str>, want: &str, what: &str) {
        let mut last = String::new();
        let deadline = Instant::now() + CONVERGE;
        while Instant::now() < deadline {
            last = self.connect(host, to, from);
            if last == want {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("{what}: {to} from {} answered {last:?}, want {want:?}\n{}", host.name, self.nft_ruleset());
    }

    /// Waits until a connection from `host` to `to` is no longer answered.
    fn refused(&self, host: &Host, to: &str, from: Option<&str>, what: &str) {
        let mut last = String::new();
        let deadline = Instant::now() + CONVERGE;
        while Instant::now() < deadline {
            last = self.connect(host, to, from);
            if last == "timeout" || last.contains("refused") {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("{what}: {to} from {} still answers {last:?}\n{}", host.name, self.nft_ruleset());
    }

    fn nft_ruleset(&self) -> String {
        text(&self.lab.run(&self.gw, Path::new("nft"), &["list", "ruleset"], &[]))
    }

    fn expose(&self, tenant: &str, device: &str, port: &str, extra: &[&str]) -> (String, String) {
        let mut args = vec!["expose", "add", "--tenant", tenant, "--device", device, "--port", port];
        args.extend_from_slice(extra);
        let x = self.json(&args);
        let id = x["id"].as_str().unwrap_or_else(|| panic!("exposure id: {x}")).to_string();
        let endpoint = x["endpoint"].as_str().unwrap_or_else(|| panic!("exposure endpoint: {x}")).to_string();
        (id, endpoint)
    }

    fn tenant_status(&self, tenant: &str) -> String {
        self.json(&["tenant", "get", tenant])["status"].as_str().unwrap_or_default().to_string()
    }

    /// The gateway's links, one name each.
    fn gw_links(&self) -> Vec<String> {
        let out = self.sh(&self.gw, "ip", &["-o", "link", "show"]);
        out.lines()
            .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().split('@').next().unwrap_or("").to_string()))
            .collect()
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("lab paths are UTF-8")
}

#[test]
fn gateway_e2e_devices_from_their_config_reach_the_gateway_and_exposures_serve_the_outside() {
    let mut env = Env::new();
    let (d1, d2) = (env.device("d1"), env.device("d2"));
    let node = env.json(&["node", "list"]);
    let gw =
        node.as_array().into_iter().flatten().find(|n| n["roles"].to_string().contains("gateway")).expect("gateway");
    assert_eq!(gw["gateway"]["wireguard_backend"], "userspace", "{gw}");
    env.serve(&d1.host.clone(), "serve-d1", &["8080"]);
    env.serve(&d2.host.clone(), "serve-d2", &["8080", "8081", "8082"]);
    let client = env.client.clone();

    // nat: the service sees the gateway's tenant address.
    let (nat, endpoint) = env.expose("acme", "d2", "8080", &[]);
    assert!(endpoint.starts_with(&format!("{PUBLIC}:150")), "{endpoint}");
    env.connects(&client, &endpoint, None, &env.gateway_address("acme"), "the outside client reaches the nat exposure");
    env.json(&["expose", "disable", &nat, "--tenant", "acme"]);
    env.refused(&client, &endpoint, None, "a disabled exposure");
    let again = env.json(&["expose", "enable", &nat, "--tenant", "acme"]);
    assert_eq!(again["endpoint"].as_str(), Some(endpoint.as_str()), "the public port survives disable/enable");
    env.connects(&client, &endpoint, None, &env.gateway_address("acme"), "the re-enabled exposure");

    // --allow: only the listed network.
    let (allow_id, allowed) = env.expose("acme", "d2", "8081", &["--allow", "203.0.113.7/32"]);
    env.connects(&client, &allowed, Some("203.0.113.7"), &env.gateway_address("acme"), "an allowed client");
    assert_eq!(env.connect(&client, &allowed, Some("203.0.113.8")), "timeout", "a client outside --allow is dropped");
    // `expose show`: who connected from where, and the drops.
    let shown = wait_for("the exposure's counters in `expose show`", CONVERGE, || {
        let x = env.json(&["expose", "show", &allow_id, "--tenant", "acme"]);
        (x["status"]["dropped_packets"].as_u64() > Some(0)).then_some(x)
    });
    let sources: Vec<&str> =
        shown["status"]["sources"].as_array().into_iter().flatten().filter_map(|s| s["address"].as_str()).collect();
    assert_eq!(sources, ["203.0.113.7"], "the dropped client is not a source seen: {shown}");

    // --rate: the excess of a burst is dropped.
    let (_, limited) = env.expose("acme", "d2", "8082", &["--rate", "5/s"]);
    env.connects(&client, &limited, None, &env.gateway_address("acme"), "the rate-limited exposure");
    let out = env.sh(&client, path(&workspace_bin("nft-lab")), &["burst", &limited, "40"]);
    let answered: usize = out.parse().expect("count");
    assert!((1..=15).contains(&answered), "{answered} of 40 answered at 5/s");

    // keep: the device's config changes (policy routing); applied as printed, the service sees
    // the outside client's own address.
    let before = env.device_config(&d1);
    let (_, kept) = env.expose("acme", "d1", "8080", &["--source", "keep"]);
    let after = env.device_config(&d1);
    assert!(after.contains("Table = off") && !before.contains("Table = off"), "{after}");
    env.down(&d1, &before);
    env.up(&d1);
    env.reach(&d1, &env.gateway_address("acme"), CONVERGE, "d1 with its keep config");
    env.connects(&client, &kept, Some("203.0.113.7"), "203.0.113.7", "keep shows the client's address");

    // The agent's own view: nothing left to do on the gateway.
    let pid = env.holder.as_ref().expect("the gateway's mount namespace").pid().to_string();
    let config = env.gw_dir.join("agent.toml");
    let plan = berqenas_tests::run(
        Path::new("nsenter"),
        &["-t", &pid, "-m", "-n", path(&agent_bin()), "plan", "--config", path(&config)],
        &[],
    );
    assert!(plan.status.success() && text(&plan).contains("converged"), "berqenas-node-agent plan: {}", text(&plan));

    // A restarted agent finds its gateway as it left it: it changes nothing, sessions go on.
    let handshakes = env.gw_wg(&["show", "all", "latest-handshakes"]);
    if let Some(mut a) = env.agent.take() {
        a.stop(Duration::from_secs(10));
    }
    env.start_gateway("agent-gw-restarted");
    let agent = env.agent.as_ref().expect("agent");
    wait_for("two passes of the restarted agent", CONVERGE, || {
        let log = agent.log_text();
        (log.contains("new desired state") && log.matches("reconciled").count() >= 2).then_some(())
    });
    let log = agent.log_text();
    assert!(!log.contains("gateway applies") && !log.contains("nft:"), "a restart changed the gateway:\n{log}");
    assert_eq!(env.gw_wg(&["show", "all", "latest-handshakes"]), handshakes, "sessions are kept");
    for d in [&d1, &d2] {
        assert!(env.pings(&d.host, &env.gateway_address("acme")), "{} after the agent's restart", d.name);
    }
    env.connects(&client, &kept, Some("203.0.113.7"), "203.0.113.7", "keep after the agent's restart");
}

/// A UDP listener printing each datagram as `PAYLOAD SOURCE` (python3, no code of ours).
const UDP_LISTEN: &str = "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
s.bind(('0.0.0.0', 9001))\nprint('serving', flush=True)\nwhile True:\n    d, a = s.recvfrom(100)\n    \
print(d.decode(), a[0], flush=True)\n";
/// `python3 -c UDP_SEND FROM PAYLOAD TO`: one datagram to TO:9001 from address FROM.
const UDP_SEND: &str = "import socket, sys\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
s.bind((sys.argv[1], 0))\ns.sendto(sys.argv[2].encode(), (sys.argv[3], 9001))\n";

#[test]
fn gateway_e2e_tenants_are_isolated_and_firewall_rules_hold() {
    let mut env = Env::new();
    let (d1, d2, d3) = (env.device("d1"), env.device("d2"), env.device("d3"));
    let client = env.client.clone();
    env.serve(&d1.host.clone(), "serve-d1", &["8080", "8083", "8084"]);
    env.serve(&d2.host.clone(), "serve-d2", &["8080"]);
    env.serve(&d3.host.clone(), "serve-d3", &["8080"]);
    let gwa = env.gateway_address("acme");
    let gwb = env.gateway_address("beta");
    let (_, exposed) = env.expose("acme", "d1", "8080", &[]);
    env.connects(&client, &exposed, None, &gwa, "A's exposure");

    // B's device widens its own tunnel towards A's subnet and the public address (its side of
    // the tunnel is its owner's to change): the gateway still delivers none of it.
    let i3 = d3.interface.as_str();
    let peer = env.sh(&d3.host, "wg", &["show", i3, "peers"]);
    env.sh(
        &d3.host,
        "wg",
        &["set", i3, "fwmark", "51820", "peer", &peer, "allowed-ips", "198.18.0.0/15,198.51.100.10/32"],
    );
    env.sh(&d3.host, "ip", &["route", "add", "198.18.1.0/24", "dev", i3]);
    env.sh(&d3.host, "ip", &["route", "add", "198.51.100.10/32", "dev", i3, "src", &d3.address, "table", "200"]);
    env.sh(&d3.host, "ip", &["rule", "add", "not", "fwmark", "51820", "table", "200", "priority", "100"]);
    env.reach(&d3, &gwb, CONVERGE, "B's device still reaches its own gateway");
    assert!(!env.pings(&d3.host, &gwa), "B's device reaches A's gateway address");
    assert_eq!(env.connect(&d3.host, &format!("{}:8080", d1.address), None), "timeout", "B reaches A's device");
    assert_eq!(env.connect(&d3.host, &format!("{}:8080", d2.address), None), "timeout", "B reaches A's device");
    assert_eq!(env.connect(&d3.host, &exposed, None), "timeout", "B reaches A's exposure from inside");
    // ...while A's devices reach each other (device-to-device is allowed by default).
    assert_eq!(env.connect(&d2.host, &format!("{}:8080", d1.address), None), d2.address);

    // A deny rule blocks what it names, and only that.
    let (_, denied) = env.expose("acme", "d1", "8083", &[]);
    env.connects(&client, &denied, Some("203.0.113.8"), &gwa, "before the deny rule");
    env.json(&[
        "firewall",
        "add",
        "--tenant",
        "acme",
        "--verdict",
        "deny",
        "--source",
        "203.0.113.8/32",
        "--device",
        "d1",
        "--ports",
        "8083",
        "--proto",
        "tcp",
    ]);
    env.refused(&client, &denied, Some("203.0.113.8"), "the source the deny rule names");
    assert_eq!(env.connect(&client, &denied, Some("203.0.113.7")), gwa, "another source");
    assert_eq!(env.connect(&client, &exposed, Some("203.0.113.8")), gwa, "another port");

    // vpn-required: the service is for the tenant's subnet only, whatever its exposure says.
    let (_, vpn_only) = env.expose("acme", "d1", "8084", &[]);
    env.connects(&client, &vpn_only, None, &gwa, "before the vpn-required rule");
    env.json(&[
        "firewall",
        "add",
        "--tenant",
        "acme",
        "--verdict",
        "allow",
        "--device",
        "d1",
        "--ports",
        "8084",
        "--proto",
        "tcp",
        "--vpn-required",
    ]);
    env.refused(&client, &vpn_only, None, "a vpn-required service from outside");
    assert_eq!(env.connect(&d2.host, &format!("{}:8084", d1.address), None), d2.address, "from A's subnet");
    assert_eq!(env.connect(&d3.host, &format!("{}:8084", d1.address), None), "timeout", "from B's subnet");

    // A device that forges another device's source address is dropped by WireGuard (AllowedIPs
    // is the device's /32 on the gateway). d1 sends to the outside client through its tunnel
    // (A's rules let its devices reach 203.0.113.0/24), as itself and as d2.
    env.json(&["firewall", "add", "--tenant", "acme", "--verdict", "allow", "--destination", "203.0.113.0/24"]);
    let listener =
        env.lab.spawn(&client, "udp-listen", Path::new("python3"), &["-u", "-c", UDP_LISTEN], env.tmp.path());
    wait_for("the UDP listener", Duration::from_secs(10), || listener.log_text().contains("serving").then_some(()));
    let i1 = d1.interface.as_str();
    let peer = env.sh(&d1.host, "wg", &["show", i1, "peers"]);
    let allowed = env.sh(&d1.host, "wg", &["show", i1, "allowed-ips"]);
    let allowed = allowed.split_whitespace().skip(1).collect::<Vec<_>>().join(",");
    env.sh(&d1.host, "wg", &["set", i1, "peer", &peer, "allowed-ips", &format!("{allowed},203.0.113.7/32")]);
    env.sh(&d1.host, "ip", &["route", "add", "203.0.113.7/32", "dev", i1, "src", &d1.address]);
    env.sh(&d1.host, "ip", &["addr", "add", &format!("{}/32", d2.address), "dev", i1]);
    let send = |from: &str, payload: &str| {
        env.sh(&d1.host, "python3", &["-c", UDP_SEND, from, payload, "203.0.113.7"]);
    };
    wait_for("a datagram from d1's own address to arrive", CONVERGE, || {
        send(&d1.address, "genuine");
        std::thread::sleep(Duration::from_millis(200));
        listener.log_text().contains("genuine").then_some(())
    });
    for _ in 0..3 {
        send(&d2.address, "forged");
    }
    send(&d1.address, "after");
    wait_for("the datagram sent after the forged ones", Duration::from_secs(5), || {
        listener.log_text().contains("after").then_some(())
    });
    assert!(!listener.log_text().contains("forged"), "a forged source passed the gateway: {}", listener.log_text());
    env.procs.push(listener);

    // Device-to-device denied: A's devices no longer reach each other.
    env.json(&["tenant", "update", "acme", "--device-to-device", "deny"]);
    env.refused(&d2.host, &format!("{}:8080", d1.address), None, "device-to-device denied");
    // A disabled device is no peer: cut off; enabled again, it is back.
    env.json(&["device", "disable", "d2", "--tenant", "acme"]);
    wait_for("a disabled device to be cut off", CONVERGE, || (!env.pings(&d2.host, &gwa)).then_some(()));
    env.json(&["device", "enable", "d2", "--tenant", "acme"]);
    env.reach(&d2, &gwa, REHANDSHAKE, "d2 enabled again");
}

#[test]
fn gateway_e2e_hand_changes_are_repaired_and_suspend_resume_purge_follow_the_tenant() {
    let mut env = Env::new();
    let (d1, d3) = (env.device("d1"), env.device("d3"));
    let client = env.client.clone();
    env.serve(&d1.host.clone(), "serve-d1", &["8080"]);
    let gwa = env.gateway_address("acme");
    let gwb = env.gateway_address("beta");
    let (_, exposed) = env.expose("acme", "d1", "8080", &[]);
    env.connects(&client, &exposed, None, &gwa, "A's exposure");
    let tenant = env.json(&["tenant", "get", "acme"]);
    let iface = tenant["network"]["interface"].as_str().expect("interface").to_string();
    let gw_key = env.gw_wg(&["show", &iface, "public-key"]);

    // The nftables table deleted by hand: back at the next resync.
    env.sh(&env.gw, "nft", &["delete", "table", "inet", "berqenas"]);
    wait_for("the table to be repaired", CONVERGE, || {
        env.lab
            .run(&env.gw, Path::new("nft"), &["list", "table", "inet", "berqenas"], &[])
            .status
            .success()
            .then_some(())
    });
    env.connects(&client, &exposed, None, &gwa, "the exposure after the table was repaired");

    // A peer removed by hand.
    env.gw_wg(&["set", &iface, "peer", &d1.public_key, "remove"]);
    wait_for("the peer to be repaired", CONVERGE, || {
        env.gw_wg(&["show", &iface, "peers"]).contains(&d1.public_key).then_some(())
    });
    env.reach(&d1, &gwa, REHANDSHAKE, "d1 after its peer was repaired");

    // The interface deleted by hand: made again with the same key and port.
    env.sh(&env.gw, "ip", &["link", "del", &iface]);
    wait_for("the interface to be repaired", CONVERGE, || env.gw_links().contains(&iface).then_some(()));
    env.reach(&d1, &gwa, REHANDSHAKE, "d1 after the interface was repaired");
    assert_eq!(env.gw_wg(&["show", &iface, "public-key"]), gw_key, "the same key");

    // Suspended: A's devices and exposures are cut; B goes on.
    let config = env.device_config(&d1);
    env.json(&["tenant", "suspend", "acme"]);
    wait_for("A's device to be cut off", CONVERGE, || (!env.pings(&d1.host, &gwa)).then_some(()));
    env.refused(&client, &exposed, None, "a suspended tenant's exposure");
    env.reach(&d3, &gwb, CONVERGE, "B during A's suspension");
    // Resumed: the same key, ports and device config.
    env.json(&["tenant", "resume", "acme"]);
    env.reach(&d1, &gwa, REHANDSHAKE, "d1 after resume");
    env.connects(&client, &exposed, None, &gwa, "the exposure on the same public port after resume");
    assert_eq!(env.gw_wg(&["show", &iface, "public-key"]), gw_key, "the same key after resume");
    assert_eq!(env.device_config(&d1), config, "the device's config is unchanged");

    // Deleted and purged: nothing of A is left on the gateway; B goes on.
    env.json(&["tenant", "delete", "acme"]);
    env.json(&["tenant", "purge", "acme", "--force"]);
    let key_file = env.gw_dir.join("wireguard").join("acme.key");
    wait_for("nothing of A on the gateway", CONVERGE, || {
        let nft = env.sh(&env.gw, "nft", &["list", "ruleset"]);
        (!env.gw_links().contains(&iface) && !nft.contains("acme") && !key_file.exists()).then_some(())
    });
    env.reach(&d3, &gwb, CONVERGE, "B after A was purged");
    assert_eq!(env.tenant_status("beta"), "active");
}
