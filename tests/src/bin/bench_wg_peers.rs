//! `deploy/bench.sh wg-peers`: the gateway driver's WireGuard side at scale, in a network
//! namespace of its own (the host's network is untouched) with the userspace backend
//! (wireguard-go). One tenant interface: a cold pass with N peers (default 10,000), a converged
//! pass (observe + empty plan), one peer added by diff, one removed, all removed (suspend).
//! Each is a whole driver pass, so it includes the tenant's nftables sync and status reads.
//! Prints one JSON line of milliseconds (and the process's peak RSS). Needs root, wireguard-go, nft and /dev/net/tun.
//! Usage: bench-wg-peers [N]
//!
//! Where the cold pass goes (profiled 2026-12-02, wireguard-go v0.0.20220316, 2 shared cores):
//! ~95% is wireguard-go itself serving the one UAPI `set` of 10,000 peers (1.1-1.5 s; `wg setconf`
//! of the same peers, no agent involved, takes 0.85-1.7 s; peers cost it ~10 kB RSS each, and
//! neither the private key nor GOGC changes it). The driver's own part (observe, plan, interface,
//! nftables, status) is ~50 ms. The converged and add-one passes are bounded by the UAPI `get` of
//! 10,000 peers (`wg show dump`: 83-98 ms).
//!
//! `bare_uapi_set_ms` is the yardstick: the same peers in one UAPI `set` written straight to a
//! fresh wireguard-go's socket, no driver involved (2026-12-03, 6 runs: driver cold pass
//! 0.77-1.19 s, median 0.97; bare set 0.78-1.10 s, median 0.89: the driver's share is ~8%).

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "benchmark driver: it makes a lab namespace, and a failed setup step is a failed run"
)]

use berqenas_node_agent::assignment::{GatewaySpec, GatewayTenant, Lifecycle, PeerSpec};
use berqenas_node_agent::config::GatewayConfig;
use berqenas_node_agent::driver::Driver;
use berqenas_node_agent::gateway::{wg::Backend, GatewayDriver};
use serde_json::json;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::process::Command;
use std::time::Instant;

fn key(i: u32) -> berqenas_common::net::WgKey {
    let mut b = [0u8; 32];
    b[..4].copy_from_slice(&i.to_be_bytes());
    b[31] = 0x42;
    berqenas_common::net::WgKey::from_bytes(&b)
}

fn tenant(n: u32, lifecycle: Lifecycle, interface: &str) -> GatewayTenant {
    GatewayTenant {
        name: "bench".into(),
        revision: 1,
        lifecycle,
        index: 1,
        gateway: GatewaySpec {
            vpn_subnet: "198.18.0.0/15".parse().expect("cidr"),
            gateway_address: Ipv4Addr::new(198, 18, 0, 1),
            interface: interface.into(),
            listen_port: 51821,
            bandwidth_bps: 0,
            device_to_device: false,
            peers: (0..n)
                .map(|i| PeerSpec {
                    id: format!("d{i}"),
                    name: format!("dev{i}"),
                    public_key: key(i),
                    address: Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 10)) + i),
                    enabled: true,
                })
                .collect(),
            exposures: vec![],
            rules: vec![],
            blocked_domains: vec![],
        },
    }
}

/// This process's peak RSS (kB): the driver's, holding every peer.
fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0)
}

/// Milliseconds of one UAPI `set` of `n` peers (with a private key and port, as the driver's
/// cold pass sends) written to a fresh wireguard-go for `interface`, until its answer.
fn bare_set(n: u32, interface: &str) -> f64 {
    use std::io::{BufRead, Write};
    let ok = Command::new("wireguard-go").arg(interface).output().expect("wireguard-go");
    assert!(ok.status.success(), "wireguard-go {interface}");
    let path = format!("/var/run/wireguard/{interface}.sock");
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    let sock = loop {
        match std::os::unix::net::UnixStream::connect(&path) {
            Ok(s) => break s,
            Err(e) => assert!(Instant::now() < deadline, "{path}: {e}"),
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let hex = |k: &berqenas_common::net::WgKey| k.bytes().iter().map(|b| format!("{b:02x}")).collect::<String>();
    let mut request = format!("set=1\nprivate_key={}\nlisten_port=51822\n", hex(&key(u32::MAX)));
    for i in 0..n {
        let address = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 10)) + i);
        request.push_str(&format!("public_key={}\nallowed_ip={address}/32\n", hex(&key(i))));
    }
    request.push('\n');
    let started = Instant::now();
    (&sock).write_all(request.as_bytes()).expect("write the set");
    let mut answer = String::new();
    std::io::BufReader::new(&sock).read_line(&mut answer).expect("read the answer");
    let ms = (started.elapsed().as_secs_f64() * 1000.0 * 10.0).round() / 10.0;
    assert_eq!(answer.trim(), "errno=0", "wireguard-go refused the set");
    let _ = Command::new("ip").args(["link", "del", interface]).output();
    ms
}

fn main() {
    let n: u32 = std::env::args().nth(1).map_or(10_000, |a| a.parse().expect("N"));
    let netns = format!("bqb-{}", std::process::id());
    let ok = Command::new("ip").args(["netns", "add", &netns]).status().expect("ip netns add");
    assert!(ok.success(), "ip netns add {netns} (root and iproute2 needed)");
    let interface = format!("bqt{}", 1000 + std::process::id() % 9000);
    let result = std::panic::catch_unwind(|| {
        let file = std::fs::File::open(format!("/run/netns/{netns}")).expect("open the namespace");
        rustix::thread::move_into_link_name_space(file.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))
            .expect("setns");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let data = tempfile::tempdir().expect("tmp");
        let node = GatewayConfig {
            public_address: Ipv4Addr::new(198, 51, 100, 10),
            public_ports: "15000-15999".parse().expect("ports"),
            protected_networks: Vec::new(),
        };
        let mut d = GatewayDriver::with_backend(node, data.path(), Backend::Userspace);
        let mut pass = |desired: &GatewayTenant| {
            let started = Instant::now();
            let s = rt.block_on(d.reconcile(std::slice::from_ref(desired)));
            assert!(s.iter().all(|s| s.ready), "{s:?}");
            (started.elapsed().as_secs_f64() * 1000.0 * 10.0).round() / 10.0
        };
        let full = tenant(n, Lifecycle::Run, &interface);
        let cold = pass(&full);
        let converged = pass(&full);
        let plus_one = tenant(n + 1, Lifecycle::Run, &interface);
        let add_one = pass(&plus_one);
        let remove_one = pass(&full);
        let suspend = pass(&tenant(n, Lifecycle::Suspended, &interface));
        let resume = pass(&full);
        let gone = {
            let started = Instant::now();
            rt.block_on(d.reconcile(&[]));
            (started.elapsed().as_secs_f64() * 1000.0 * 10.0).round() / 10.0
        };
        let bare = bare_set(n, &format!("bqt{}", 1000 + (std::process::id() + 1) % 9000));
        json!({
            "bench": "wg-peers",
            "backend": "userspace",
            "peers": n,
            "cold_pass_ms": cold,
            "converged_pass_ms": converged,
            "add_one_peer_pass_ms": add_one,
            "remove_one_peer_pass_ms": remove_one,
            "suspend_pass_ms": suspend,
            "resume_pass_ms": resume,
            "delete_pass_ms": gone,
            "bare_uapi_set_ms": bare,
            "peak_rss_kb": peak_rss_kb(),
        })
    });
    let _ = Command::new("ip").args(["-n", &netns, "link", "del", &interface]).output();
    let _ = Command::new("ip").args(["netns", "delete", &netns]).status();
    match result {
        Ok(line) => println!("{line}"),
        Err(_) => std::process::exit(1),
    }
}
