//! The gateway end-to-end lab (`Env`): namespaces, the coordinator and agents as real processes,
//! devices brought up from their wg-quick config by hand, and the probes the tests use.

use crate::harness::{agent_bin, coordinator_bin};
use berqenas_tests::coordinator;
use berqenas_tests::lab::{self, wg_keypair, Host, Lab};
use berqenas_tests::{wait_for, workspace_bin, Proc};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const PUBLIC: &str = "198.51.100.10";
/// How long a change takes to reach the gateway and be applied (agents resync every 2 s).
pub const CONVERGE: Duration = Duration::from_secs(20);
/// A device whose session the gateway lost (peer or interface repaired, tenant resumed) notices
/// only when its data goes unanswered: WireGuard then handshakes again after about 15 s.
/// Counters and sources are samples: the coordinator writes them when the rest of a report
/// changes or with its 60 s refresh, and the agent reads them from the table on its resync pass.
pub const SAMPLES: Duration = Duration::from_secs(90);
pub const REHANDSHAKE: Duration = Duration::from_secs(45);

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

pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A device host: its WireGuard key pair (made with `wg genkey`/`wg pubkey`), its name in the
/// coordinator and the interface the wg-quick config is applied to.
#[derive(Clone)]
pub struct Device {
    pub host: Host,
    pub tenant: &'static str,
    pub name: &'static str,
    pub interface: String,
    pub private_key: String,
    pub public_key: String,
    /// From `device add`.
    pub address: String,
}

/// A wg-quick file as `wg-quick up` reads it: the wg-quick-only keys apart, the rest for
/// `wg setconf`.
#[derive(Debug, Default)]
pub struct WgQuick {
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
pub struct Env {
    pub agent: Option<Proc>,
    /// Holds the gateway's mount namespace (its private `/run/wireguard`).
    pub holder: Option<Proc>,
    pub procs: Vec<Proc>,
    pub lab: Lab,
    pub tmp: tempfile::TempDir,
    pub key: String,
    pub coord: Host,
    pub gw: Host,
    pub client: Host,
    /// acme's d1 and d2, beta's d3.
    pub devices: Vec<Device>,
    pub gw_dir: PathBuf,
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

impl Env {
    /// The whole lab: coordinator, db agent, gateway agent, tenants acme (d1, d2) and beta (d3),
    /// each device configured from its `device config` and pinging its gateway address.
    pub fn new() -> Env {
        let n = ENVS.fetch_add(1, Ordering::SeqCst);
        let (mut env, hosts, ()) = Env::with_db(&["a1", "a2", "b1"], |env| {
            // A db node for the tenants' database part (dir driver), beside the coordinator.
            let coord = env.coord.clone();
            let db_dir = env.join(&coord, "db", "db", &["--driver", "dir", "--driver-path", "DIR/tenants"]);
            let config = db_dir.join("agent.toml");
            let db =
                env.lab.spawn(&coord, "agent-db", &agent_bin(), &["run", "--config", path(&config)], env.tmp.path());
            env.procs.push(db);
        });
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

    /// The lab without tenants: the coordinator, the db node `db` starts (in the coordinator's
    /// host, before the gateway joins; what it returns is handed back), the gateway agent, the
    /// hosts `device_hosts` (198.51.100.21, .22, … on their eth0) and the outside client.
    pub fn with_db<T>(device_hosts: &[&str], db: impl FnOnce(&mut Env) -> T) -> (Env, Vec<Host>, T) {
        require_prerequisites();
        let mut lab = Lab::new();
        let coord = lab.host("coord");
        let gw = lab.host("gw");
        let hosts: Vec<Host> = device_hosts.iter().map(|h| lab.host(h)).collect();
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

        let made = db(&mut env);
        // The gateway: driver none with a public address is the real gateway driver.
        env.gw_dir = env.join(
            &gw,
            "gw",
            "gateway",
            &["--public-address", PUBLIC, "--public-ports", "15000-15999", "--resync-interval", "2s"],
        );
        env.start_gateway("agent-gw");
        (env, hosts, made)
    }

    /// `berqenas-node-agent join` in `host`; returns the agent's data directory. `DIR` in
    /// `extra` stands for it.
    pub fn join(&self, host: &Host, name: &str, roles: &str, extra: &[&str]) -> PathBuf {
        let tok = self.json(&["node", "token", "create", "--roles", roles]);
        let dir = self.tmp.path().join(name);
        let url = format!("https://{}:7301", self.coord.addr);
        self.lab.join_agent(host, &agent_bin(), &url, &tok, roles, &dir, extra);
        dir
    }

    /// Starts the gateway agent (again) in its namespace with a private `/run/wireguard`, kept
    /// by a holder process so a restarted agent finds the wireguard-go sockets of the last one.
    /// `name` names its log.
    pub fn start_gateway(&mut self, name: &str) {
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

    pub fn cli(&self, args: &[&str]) -> Output {
        let endpoint = format!("https://{}:7201", self.coord.addr);
        let ca = self.tmp.path().join("coord").join("ca.pem");
        let env = [
            ("BERQENAS_ENDPOINT", endpoint.as_str()),
            ("BERQENAS_API_KEY", self.key.as_str()),
            ("BERQENAS_CA_CERT", path(&ca)),
        ];
        self.lab.run(&self.coord, &coordinator_bin(), args, &env)
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.cli(&all);
        assert!(out.status.success(), "`{}` failed: {}", args.join(" "), text(&out));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("`{}` printed no JSON ({e}): {}", args.join(" "), text(&out)))
    }

    /// `device token create --tenant T --name N`, turned into the `enroll` arguments the
    /// operator would copy from its printed command (coordinator, token, CA pin).
    pub fn enroll_args(&self, tenant: &str, name: &str) -> Vec<String> {
        lab::enroll_args(&self.json(&["device", "token", "create", "--tenant", tenant, "--name", name]))
    }

    pub fn gateway_address(&self, tenant: &str) -> String {
        let t = self.json(&["tenant", "get", tenant]);
        t["network"]["gateway_address"].as_str().unwrap_or_else(|| panic!("gateway address: {t}")).to_string()
    }

    /// `device config --format wg-quick`, once the coordinator knows everything it needs.
    pub fn device_config(&self, d: &Device) -> String {
        wait_for("a complete device config (the gateway's public key)", CONVERGE, || {
            let v = self.json(&["device", "config", d.name, "--tenant", d.tenant, "--format", "wg-quick"]);
            let complete = v["missing"].as_array().is_none_or(Vec::is_empty);
            complete.then(|| v["config"].as_str().expect("config").to_string())
        })
    }

    /// In `host`: `program args`, which must succeed; its stdout.
    pub fn sh(&self, host: &Host, program: &str, args: &[&str]) -> String {
        let out = self.lab.run(host, Path::new(program), args, &[]);
        assert!(out.status.success(), "{program} {} in {}: {}", args.join(" "), host.name, text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `wg` on the gateway, in the agent's mount namespace (where its control sockets are).
    pub fn gw_wg(&self, args: &[&str]) -> String {
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
    pub fn up(&self, d: &Device) {
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
    pub fn down(&self, d: &Device, config: &str) {
        let q = WgQuick::parse(config, &d.private_key);
        for line in &q.pre_down {
            self.sh(&d.host, "sh", &["-c", &line.replace("%i", &d.interface)]);
        }
        self.sh(&d.host, "ip", &["link", "del", &d.interface]);
    }

    pub fn pings(&self, host: &Host, target: &str) -> bool {
        self.lab.run(host, Path::new("ping"), &["-c", "1", "-W", "1", target], &[]).status.success()
    }

    /// Waits until `d` pings `target`; on timeout, shows both ends' WireGuard.
    pub fn reach(&self, d: &Device, target: &str, within: Duration, what: &str) {
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

    pub fn device(&self, name: &str) -> Device {
        self.devices.iter().find(|d| d.name == name).cloned().expect("device")
    }

    pub fn serve(&mut self, host: &Host, name: &str, ports: &[&str]) {
        let mut args = vec!["serve"];
        args.extend_from_slice(ports);
        let p = self.lab.spawn(host, name, &workspace_bin("nft-lab"), &args, self.tmp.path());
        wait_for(name, Duration::from_secs(10), || p.log_text().contains("serving").then_some(()));
        self.procs.push(p);
    }

    /// What a TCP service at `to` answers a connection from `host` (bound to `from`): the
    /// address it sees, `timeout`, or the error.
    pub fn connect(&self, host: &Host, to: &str, from: Option<&str>) -> String {
        let mut args = vec!["connect", to];
        args.extend(from);
        let out = self.lab.run(host, &workspace_bin("nft-lab"), &args, &[]);
        assert!(out.status.success(), "nft-lab connect {to}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Waits until a connection from `host` to `to` is answered with `want`.
    pub fn connects(&self, host: &Host, to: &str, from: Option<&str>, want: &str, what: &str) {
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
    pub fn refused(&self, host: &Host, to: &str, from: Option<&str>, what: &str) {
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

    pub fn nft_ruleset(&self) -> String {
        text(&self.lab.run(&self.gw, Path::new("nft"), &["list", "ruleset"], &[]))
    }

    pub fn expose(&self, tenant: &str, device: &str, port: &str, extra: &[&str]) -> (String, String) {
        let mut args = vec!["expose", "add", "--tenant", tenant, "--device", device, "--port", port];
        args.extend_from_slice(extra);
        let x = self.json(&args);
        let id = x["id"].as_str().unwrap_or_else(|| panic!("exposure id: {x}")).to_string();
        let endpoint = x["endpoint"].as_str().unwrap_or_else(|| panic!("exposure endpoint: {x}")).to_string();
        (id, endpoint)
    }

    pub fn tenant_status(&self, tenant: &str) -> String {
        self.json(&["tenant", "get", tenant])["status"].as_str().unwrap_or_default().to_string()
    }

    /// The gateway's links, one name each.
    pub fn gw_links(&self) -> Vec<String> {
        let out = self.sh(&self.gw, "ip", &["-o", "link", "show"]);
        out.lines()
            .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().split('@').next().unwrap_or("").to_string()))
            .collect()
    }
}

pub fn path(p: &Path) -> &str {
    p.to_str().expect("lab paths are UTF-8")
}
