//! The network lab: hosts are Linux network namespaces, each with one veth into a bridge that
//! lives in its own namespace, addressed from 192.0.2.0/24 (the documentation range) only.
//! Everything is named per lab (`bql-<pid>-<n>-…`), torn down on drop, and leftovers of crashed
//! runs (whose pid is gone) are removed when the next lab starts. Requires root and iproute2.

use crate::Proc;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static LABS: AtomicU32 = AtomicU32::new(0);

/// One host of the lab.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub netns: String,
    pub addr: Ipv4Addr,
}

pub struct Lab {
    prefix: String,
    bridge_ns: String,
    hosts: Vec<Host>,
}

/// Runs `ip` with `args`; panics with its stderr on failure (a lab that cannot be built is a
/// test failure, never a skip).
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run ip {}: {e} (install iproute2)", args.join(" ")));
    assert!(out.status.success(), "ip {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

fn netns_list() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().expect("ip netns list (install iproute2)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Deletes lab namespaces left by processes that no longer exist.
fn remove_leftovers() {
    for ns in netns_list() {
        let Some(rest) = ns.strip_prefix("bql-") else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "delete", &ns]).status();
        }
    }
}

impl Lab {
    pub fn new() -> Self {
        remove_leftovers();
        let n = LABS.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("bql-{}-{n}", std::process::id());
        let bridge_ns = format!("{prefix}-br");
        ip(&["netns", "add", &bridge_ns]);
        ip(&["-n", &bridge_ns, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &bridge_ns, "link", "set", "br0", "up"]);
        Self { prefix, bridge_ns, hosts: Vec::new() }
    }

    /// Adds a host with the next address in 192.0.2.0/24.
    pub fn host(&mut self, name: &str) -> Host {
        let index = self.hosts.len() + 1;
        assert!(index < 250, "a lab holds at most 249 hosts");
        let netns = format!("{}-{name}", self.prefix);
        let addr = Ipv4Addr::new(192, 0, 2, u8::try_from(index).unwrap_or(250));
        // Interface names are ≤ 15 characters and unique on the host while both ends exist.
        let outer = format!("bq{}x{index}", std::process::id() % 100_000);
        ip(&["netns", "add", &netns]);
        ip(&["-n", &netns, "link", "set", "lo", "up"]);
        ip(&["-n", &netns, "link", "add", "eth0", "type", "veth", "peer", "name", &outer, "netns", &self.bridge_ns]);
        ip(&["-n", &self.bridge_ns, "link", "set", &outer, "master", "br0"]);
        ip(&["-n", &self.bridge_ns, "link", "set", &outer, "up"]);
        ip(&["-n", &netns, "addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        ip(&["-n", &netns, "link", "set", "eth0", "up"]);
        let host = Host { name: name.to_string(), netns, addr };
        self.hosts.push(host.clone());
        host
    }

    /// Adds a host with loopback only (no link into the bridge): for labs that wire hosts to
    /// each other with `link` and address them themselves.
    pub fn bare_host(&mut self, name: &str) -> Host {
        let netns = format!("{}-{name}", self.prefix);
        ip(&["netns", "add", &netns]);
        ip(&["-n", &netns, "link", "set", "lo", "up"]);
        let host = Host { name: name.to_string(), netns, addr: Ipv4Addr::UNSPECIFIED };
        self.hosts.push(host.clone());
        host
    }

    /// Connects `a` and `b` with a veth pair, `a_if` in `a` and `b_if` in `b`, both up.
    pub fn link(&self, a: &Host, a_if: &str, b: &Host, b_if: &str) {
        ip(&["-n", &a.netns, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.netns]);
        ip(&["-n", &a.netns, "link", "set", a_if, "up"]);
        ip(&["-n", &b.netns, "link", "set", b_if, "up"]);
    }

    /// Starts `program` inside `host`, logging into `log_dir`.
    pub fn spawn(&self, host: &Host, name: &str, program: &Path, args: &[&str], log_dir: &Path) -> Proc {
        let mut full = vec!["netns", "exec", host.netns.as_str(), program.to_str().expect("UTF-8 path")];
        full.extend_from_slice(args);
        Proc::spawn(name, Path::new("ip"), &full, log_dir)
    }

    /// `berqenas-node-agent join` (`agent`) in `host` against the coordinator's node listener
    /// `coordinator` (`https://…`) with `token` (what `node token create --output json`
    /// printed), data in `dir`, then `extra` (the role's own flags), where `DIR` stands for
    /// `dir`. Panics with the agent's output when the join fails.
    #[allow(clippy::too_many_arguments, reason = "the join command line, spelled out")]
    pub fn join_agent(
        &self,
        host: &Host,
        agent: &Path,
        coordinator: &str,
        token: &serde_json::Value,
        roles: &str,
        dir: &Path,
        extra: &[&str],
    ) {
        let dir = dir.to_str().expect("UTF-8 path");
        let extra: Vec<String> = extra.iter().map(|a| a.replace("DIR", dir)).collect();
        let mut args = vec![
            "join",
            "--coordinator",
            coordinator,
            "--token",
            token["token"].as_str().expect("token"),
            "--ca-pin",
            token["ca_fingerprint"].as_str().expect("pin"),
            "--roles",
            roles,
            "--data-dir",
            dir,
        ];
        args.extend(extra.iter().map(String::as_str));
        let out = self.run(host, agent, &args, &[]);
        let text = || format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "join in {}: {}", host.name, text());
    }

    /// Runs `program` inside `host` to completion.
    pub fn run(&self, host: &Host, program: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &host.netns]).arg(program).args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap_or_else(|e| panic!("run {} in {}: {e}", program.display(), host.name))
    }
}

/// The side of a [`Lab::forward`] connection inside the namespace: stdin to the socket, the
/// socket to stdout (python3, which the lab's attack clients use too).
const PIPE: &str = "import socket, sys, threading
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
def up():
    while True:
        d = sys.stdin.buffer.read1(65536)
        if not d:
            s.shutdown(socket.SHUT_WR)
            return
        s.sendall(d)
threading.Thread(target=up, daemon=True).start()
while True:
    d = s.recv(65536)
    if not d:
        break
    sys.stdout.buffer.write(d)
    sys.stdout.buffer.flush()
";

impl Lab {
    /// Makes `host`'s `addr:port` reachable from this (the root) namespace: a port on 127.0.0.1
    /// whose every connection is piped through a process inside `host` (for a browser, which
    /// runs outside the lab). The listener lives as long as the test process.
    pub fn forward(&self, host: &Host, addr: &str, port: u16) -> u16 {
        use std::io::{Read, Write};
        use std::process::Stdio;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a forwarding port");
        let local = listener.local_addr().expect("local address").port();
        let (netns, addr, port) = (host.netns.clone(), addr.to_string(), port.to_string());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut down) = conn else { continue };
                let child = Command::new("ip")
                    .args(["netns", "exec", &netns, "python3", "-c", PIPE, &addr, &port])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn();
                let Ok(mut child) = child else { continue };
                let (Some(mut stdin), Some(mut stdout)) = (child.stdin.take(), child.stdout.take()) else { continue };
                let Ok(mut up) = down.try_clone() else { continue };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    while let Ok(n @ 1..) = up.read(&mut buf) {
                        if stdin.write_all(&buf[..n]).and_then(|()| stdin.flush()).is_err() {
                            break;
                        }
                    }
                });
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    while let Ok(n @ 1..) = stdout.read(&mut buf) {
                        if down.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = down.shutdown(std::net::Shutdown::Both);
                    let _ = child.kill();
                    let _ = child.wait();
                });
            }
        });
        local
    }
}

impl Default for Lab {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for h in &self.hosts {
            let _ = Command::new("ip").args(["netns", "delete", &h.netns]).status();
        }
        let _ = Command::new("ip").args(["netns", "delete", &self.bridge_ns]).status();
    }
}

/// A WireGuard key pair made with `wg genkey` / `wg pubkey`, as a device's owner makes it:
/// (private, public), base64.
pub fn wg_keypair() -> (String, String) {
    use std::io::Write;
    let private = Command::new("wg").arg("genkey").output().expect("wg genkey");
    let private = String::from_utf8_lossy(&private.stdout).trim().to_string();
    let mut child = Command::new("wg")
        .arg("pubkey")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("wg pubkey");
    child.stdin.take().expect("stdin").write_all(private.as_bytes()).expect("write key");
    let public = child.wait_with_output().expect("wg pubkey output");
    (private, String::from_utf8_lossy(&public.stdout).trim().to_string())
}

/// The `enroll` arguments an operator copies from the command `device token create` printed
/// (`created`, its JSON): `enroll --coordinator … --token … --ca-pin …`.
pub fn enroll_args(created: &serde_json::Value) -> Vec<String> {
    let command = created["command"].as_str().unwrap_or_else(|| panic!("command: {created}"));
    let words: Vec<&str> = command.split_whitespace().collect();
    let after = |flag: &str| words[words.iter().position(|w| *w == flag).expect(flag) + 1].to_string();
    vec![
        "enroll".to_string(),
        "--coordinator".to_string(),
        after("--coordinator"),
        "--token".to_string(),
        after("--token"),
        "--ca-pin".to_string(),
        after("--ca-pin"),
    ]
}
