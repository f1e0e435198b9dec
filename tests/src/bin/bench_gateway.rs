//! `deploy/bench.sh gateway`: one gateway node at scale, in a network namespace of its own (the
//! host's network is untouched), beside the seed's way of doing the same. Prints one JSON line.
//!
//! - The agent's nftables sync (`gateway::nft`, the code the driver runs) for TENANTS tenants
//!   (default 1,000) × 10 devices × 3 exposures (an allowlist, a rate limit, both source modes)
//!   and 2 firewall rules each: a cold full apply, one tenant's rule change with the others
//!   present (planned against the last sync, as the driver does for a desired-state change, and
//!   with a listing of the table, as the periodic resync does) at 100 and at TENANTS tenants,
//!   and `nft -f` loading the same ruleset as one file into an empty namespace (the ratio).
//! - The peak RSS of this process (the one doing the syncs) on the change path, and after a
//!   resync pass that lists the whole table.
//! - The seed's way (`iptables` per rule, iptables-nft) for the same rules: the first 100
//!   tenants' commands timed one by one into an empty ruleset and the last 100's with the
//!   others loaded (iptables-restore); the whole is extrapolated from those two samples and
//!   labelled so. One tenant's rule change (2 commands) and one tenant's rules replaced are timed
//!   with all others present.
//! - WireGuard: `bench-wg-peers` (the driver's passes with 10,000 peers on one interface,
//!   userspace backend) run beside it, and `wg set` per peer (the seed's way) for the first
//!   1,000 peers and for 1,000 more with 9,000 present, extrapolated to 10,000 and labelled so.
//!
//! Figures are medians of several runs where a run is cheap enough to repeat (`runs` says how
//! many). Needs root, nft, iptables, wg, wireguard-go and /dev/net/tun.
//! Usage: bench-gateway [TENANTS] [PEERS]

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "benchmark driver: it makes a lab namespace and runs lab tools, and a failed setup step is a failed run"
)]

use berqenas_node_agent::assignment::{GatewayTenant, PeerSpec};
use berqenas_node_agent::config::GatewayConfig;
use berqenas_node_agent::gateway::nft;
use berqenas_node_agent::host::exec;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PUBLIC: &str = "198.51.100.10";
const DEVICES: u32 = 10;
const EXPOSURES: u32 = 3;
/// Repeats of the cheap measurements (medians reported).
const RUNS: usize = 5;

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 10.0).round() / 10.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn key(i: u32) -> berqenas_common::net::WgKey {
    let mut b = [0u8; 32];
    b[..4].copy_from_slice(&i.to_be_bytes());
    b[31] = 0x42;
    berqenas_common::net::WgKey::from_bytes(&b)
}

/// Tenant `i`'s /24 prefix (`198.18.0` for tenant 0 … `198.19.x` above 255).
fn base(i: u32) -> String {
    format!("198.{}.{}", 18 + i / 256, i % 256)
}

fn public_port(i: u32, k: u32) -> u32 {
    10_000 + (i * EXPOSURES + k) % 55_000
}

/// Tenant `i`: 10 devices, 3 exposures (allowlist, rate limit, keep/nat), 2 firewall rules.
fn tenant(i: u32) -> GatewayTenant {
    let base = base(i);
    let exposures: Vec<Value> = (0..EXPOSURES)
        .map(|k| {
            json!({"id": format!("e{k}"), "device_id": format!("d{k}"), "device_address": format!("{base}.{}", 10 + k),
                   "port": 8080 + k, "public_port": public_port(i, k), "protocol": "tcp",
                   "allow": if k == 0 { json!(["203.0.113.0/24", "192.0.2.7/32"]) } else { json!([]) },
                   "rate_per_second": if k == 1 { 100 } else { 0 }, "source": if k == 2 { "keep" } else { "nat" },
                   "enabled": true})
        })
        .collect();
    let mut t: GatewayTenant = serde_json::from_value(json!({
        "name": format!("t{i}"), "revision": 1, "lifecycle": "run", "index": i,
        "gateway": {"vpn_subnet": format!("{base}.0/24"), "gateway_address": format!("{base}.1"),
            "interface": format!("bqt{i}"), "listen_port": 51820, "exposures": exposures,
            "rules": [{"id": "r1", "position": 1, "verdict": "deny", "sources": ["203.0.113.8/32"],
                       "destinations": [], "ports": {"first": 22, "last": 22}, "protocol": "tcp", "vpn_required": false},
                      {"id": "r2", "position": 2, "verdict": "allow", "sources": [], "destinations": ["192.0.2.0/24"],
                       "ports": null, "protocol": "any", "vpn_required": false}],
            "blocked_domains": []}
    }))
    .expect("tenant");
    t.gateway.peers = (0..DEVICES)
        .map(|d| PeerSpec {
            id: format!("d{d}"),
            name: format!("dev{d}"),
            public_key: key(i * DEVICES + d),
            address: format!("{base}.{}", 10 + d).parse().expect("address"),
            enabled: true,
        })
        .collect();
    t
}

/// The seed's `iptables` commands for tenant `i`'s same rules (isolation, firewall rules both
/// ways, input, and per exposure DNAT, forward accept per allowed source, rate limit, masquerade).
fn iptables_rules(i: u32) -> Vec<Vec<String>> {
    let b = base(i);
    let (ifc, subnet, gw) = (format!("bqt{i}"), format!("{b}.0/24"), format!("{b}.1"));
    let mut r: Vec<String> = vec![
        format!("-A FORWARD -i {ifc} ! -s {subnet} -j DROP"),
        format!("-A FORWARD -i {ifc} -s 203.0.113.8/32 -p tcp --dport 22 -j DROP"),
        format!("-A FORWARD -i {ifc} -d 192.0.2.0/24 -j ACCEPT"),
        format!("-A FORWARD -i {ifc} -o {ifc} -j DROP"),
        format!("-A FORWARD -i {ifc} -o bqt+ -j DROP"),
        format!("-A FORWARD -i {ifc} -j DROP"),
        format!("-A FORWARD -o {ifc} -s 203.0.113.8/32 -p tcp --dport 22 -j DROP"),
        format!("-A FORWARD -o {ifc} -d 192.0.2.0/24 -j ACCEPT"),
        format!("-A INPUT -i {ifc} -d {gw} -j ACCEPT"),
        format!("-A INPUT -i {ifc} -j DROP"),
    ];
    for k in 0..EXPOSURES {
        let (dev, port, pp) = (format!("{b}.{}", 10 + k), 8080 + k, public_port(i, k));
        r.push(format!("-t nat -A PREROUTING -d {PUBLIC} -p tcp --dport {pp} -j DNAT --to-destination {dev}:{port}"));
        let flow = format!("-A FORWARD -o {ifc} -d {dev} -p tcp --dport {port}");
        match k {
            0 => {
                for src in ["203.0.113.0/24", "192.0.2.7/32"] {
                    r.push(format!("{flow} -s {src} -m state --state NEW,ESTABLISHED,RELATED -j ACCEPT"));
                }
            }
            1 => {
                r.push(format!("{flow} -m state --state NEW -m limit --limit 100/second --limit-burst 100 -j ACCEPT"));
                r.push(format!("{flow} -m state --state ESTABLISHED,RELATED -j ACCEPT"));
            }
            _ => r.push(format!("{flow} -m state --state NEW,ESTABLISHED,RELATED -j ACCEPT")),
        }
        if k != 2 {
            r.push(format!("-t nat -A POSTROUTING -o {ifc} -d {dev} -p tcp --dport {port} -j MASQUERADE"));
        }
    }
    r.push(format!("-A FORWARD -o {ifc} -j DROP"));
    r.into_iter().map(|l| l.split(' ').map(str::to_string).collect()).collect()
}

fn run(program: &str, args: &[String]) {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Milliseconds to run each command one by one.
fn timed_commands(program: &str, commands: &[Vec<String>]) -> f64 {
    let started = Instant::now();
    for c in commands {
        run(program, c);
    }
    ms(started.elapsed())
}

/// Loads `tenants`' iptables rules in one `iptables-restore --noflush` (setup, not timed).
fn iptables_restore(tenants: std::ops::Range<u32>) {
    let (mut filter, mut nat) = (String::from("*filter\n"), String::from("*nat\n"));
    for i in tenants {
        for rule in iptables_rules(i) {
            match rule[0].as_str() {
                "-t" => nat.push_str(&format!("{}\n", rule[2..].join(" "))),
                _ => filter.push_str(&format!("{}\n", rule.join(" "))),
            }
        }
    }
    let mut child =
        Command::new("iptables-restore").arg("--noflush").stdin(Stdio::piped()).spawn().expect("iptables-restore");
    let text = format!("{filter}COMMIT\n{nat}COMMIT\n");
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
    assert!(child.wait().expect("wait").success(), "iptables-restore");
}

/// The peak RSS of this process so far (kB), then reset (so the next reading covers what
/// follows only).
fn peak_rss_kb() -> u64 {
    let kb = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    kb
}

async fn nft_cmd(args: &[&str], stdin: Option<&[u8]>) {
    exec::run("nft", args, stdin, Duration::from_secs(300)).await.expect("nft");
}

struct NftFigures {
    cold_ms: Vec<f64>,
    change_ms: Vec<f64>,
    /// Of each change, the time in the `nft -f` run.
    change_nft_ms: Vec<f64>,
    change_listing_ms: f64,
    /// Of the change with a listing, the time listing the table.
    listing_ms: f64,
    transactions: usize,
    script_lines: usize,
    nft_f_ms: Vec<f64>,
    change_rss_kb: u64,
    listing_rss_kb: u64,
}

/// The agent's sync at `n` tenants: `cold_runs` cold applies, RUNS one-tenant changes against
/// the last sync, one with a listing; `nft -f` of the same ruleset `file_runs` times.
async fn nft_at(node: &GatewayConfig, n: u32, cold_runs: usize, file_runs: usize) -> NftFigures {
    let resolved = BTreeMap::new();
    let mut desired: Vec<GatewayTenant> = (1..=n).map(tenant).collect();
    let check = |r: &nft::SyncReport| {
        assert!(r.failed.is_empty() && r.refused.is_empty(), "{:?} {:?}", r.failed, r.refused);
        ms(r.elapsed)
    };
    let mut cold_ms = Vec::new();
    for _ in 0..cold_runs {
        nft_cmd(&["flush", "ruleset"], None).await;
        // A full sync lists the (empty) table first: what a starting agent does.
        cold_ms.push(check(&nft::sync(node, &desired, &resolved).await.expect("cold sync")));
    }
    let _ = peak_rss_kb();
    let mut change_ms = Vec::new();
    let mut change_nft_ms = Vec::new();
    let mut transactions = 0;
    for r in 0..RUNS {
        // One tenant's rule change (device-to-device traffic allowed), a different tenant each run.
        let t = &mut desired[(n as usize / (RUNS + 1)) * (r + 1)];
        t.gateway.device_to_device = !t.gateway.device_to_device;
        let report = nft::sync_changes(node, &desired, &resolved).await.expect("sync");
        assert_eq!(report.applied.len(), 1, "{:?}", report.applied);
        transactions = report.transactions;
        change_nft_ms.push(ms(report.nft));
        change_ms.push(check(&report));
    }
    let change_rss_kb = peak_rss_kb();
    desired[n as usize / 2].gateway.device_to_device = !desired[n as usize / 2].gateway.device_to_device;
    let listed = nft::sync(node, &desired, &resolved).await.expect("sync");
    assert_eq!(listed.applied.len(), 1, "{:?}", listed.applied);
    let change_listing_ms = check(&listed);
    let listing_ms = ms(listed.listing);
    let listing_rss_kb = peak_rss_kb();
    let script = nft::render(node, &desired).script();
    let mut nft_f_ms = Vec::new();
    for _ in 0..file_runs {
        nft_cmd(&["flush", "ruleset"], None).await;
        let started = Instant::now();
        nft_cmd(&["-f", "-"], Some(script.as_bytes())).await;
        nft_f_ms.push(ms(started.elapsed()));
    }
    nft_cmd(&["flush", "ruleset"], None).await;
    NftFigures {
        cold_ms,
        change_ms,
        change_nft_ms,
        change_listing_ms,
        listing_ms,
        transactions,
        script_lines: script.lines().count(),
        nft_f_ms,
        change_rss_kb,
        listing_rss_kb,
    }
}

/// The seed's way for `n` tenants' rules (see the module doc).
fn iptables_at(n: u32) -> Value {
    run("nft", &["flush".into(), "ruleset".into()]);
    let sample = 100.min(n);
    let commands = |r: std::ops::Range<u32>| -> Vec<Vec<String>> { r.flat_map(iptables_rules).collect() };
    let first = commands(1..sample + 1);
    let per_tenant = iptables_rules(1).len();
    let first_ms = timed_commands("iptables", &first);
    iptables_restore(sample + 1..n - sample + 1);
    let last_ms = timed_commands("iptables", &commands(n - sample + 1..n + 1));
    // One tenant's rule change with all others present: the seed deletes the rule and adds
    // the new one.
    let t = n / 2;
    let ifc = format!("bqt{t}");
    let change = |from: &str, to: &str| -> Vec<Vec<String>> {
        [format!("-D FORWARD -i {ifc} -o {ifc} -j {from}"), format!("-I FORWARD -i {ifc} -o {ifc} -j {to}")]
            .iter()
            .map(|l| l.split(' ').map(str::to_string).collect())
            .collect()
    };
    let mut one_rule = Vec::new();
    for r in 0..RUNS {
        let (from, to) = if r % 2 == 0 { ("DROP", "ACCEPT") } else { ("ACCEPT", "DROP") };
        one_rule.push(timed_commands("iptables", &change(from, to)));
    }
    // One tenant's rules replaced whole (what the agent's transaction does): each deleted, then
    // each added again.
    let theirs = iptables_rules(t + 1);
    let deletes: Vec<Vec<String>> = theirs
        .iter()
        .map(|r| r.iter().map(|a| if a == "-A" { "-D".to_string() } else { a.clone() }).collect())
        .collect();
    let replace_ms = timed_commands("iptables", &deletes) + timed_commands("iptables", &theirs);
    let total = f64::from(n) / f64::from(sample) * (first_ms + last_ms) / 2.0;
    run("nft", &["flush".into(), "ruleset".into()]);
    json!({
        "commands_per_tenant": per_tenant,
        "commands_total": per_tenant * n as usize,
        "first_100_tenants_ms": first_ms,
        "last_100_tenants_with_others_loaded_ms": last_ms,
        "full_apply_ms_extrapolated": (total * 10.0).round() / 10.0,
        "extrapolated_how": format!("{n}/{sample} x mean of the first and last {sample} tenants' one-command-per-rule times (cost per command grows with the ruleset)"),
        "one_rule_change_ms": median(one_rule),
        "one_tenant_replaced_ms": replace_ms,
    })
}

/// `wg set` per peer (the seed's way) on a fresh wireguard-go interface: the first `sample`
/// peers, then `sample` more with `peers - sample` present (loaded by `wg addconf`).
fn wg_set_at(peers: u32) -> Value {
    let ifc = "bqt9";
    run("wireguard-go", &[ifc.into()]);
    let sample = 1000.min(peers);
    let set = |r: std::ops::Range<u32>| -> Vec<Vec<String>> {
        r.map(|i| {
            let address = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 10)) + i);
            vec![
                "set".into(),
                ifc.into(),
                "peer".into(),
                key(i).to_string(),
                "allowed-ips".into(),
                format!("{address}/32"),
            ]
        })
        .collect()
    };
    let first_ms = timed_commands("wg", &set(0..sample));
    let mut conf = String::new();
    for i in sample..peers - sample {
        let address = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 10)) + i);
        conf.push_str(&format!("[Peer]\nPublicKey = {}\nAllowedIPs = {address}/32\n", key(i)));
    }
    let file = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(file.path(), conf).expect("write");
    run("wg", &["addconf".into(), ifc.into(), file.path().display().to_string()]);
    let last_ms = timed_commands("wg", &set(peers - sample..peers));
    let _ = Command::new("ip").args(["link", "del", ifc]).output();
    let total = f64::from(peers) / f64::from(sample) * (first_ms + last_ms) / 2.0;
    json!({
        "first_1000_peers_ms": first_ms,
        "last_1000_peers_with_others_present_ms": last_ms,
        "all_peers_ms_extrapolated": (total * 10.0).round() / 10.0,
        "extrapolated_how": format!("{peers}/{sample} x mean of the first and last {sample} peers' wg set times"),
    })
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u32 = args.next().map_or(1000, |a| a.parse().expect("TENANTS"));
    let peers: u32 = args.next().map_or(10_000, |a| a.parse().expect("PEERS"));
    assert!(n >= 200, "at least 200 tenants (100 are timed at each end)");
    for tool in ["nft", "iptables", "iptables-restore", "wg", "wireguard-go"] {
        let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().expect("sh");
        assert!(found.status.success(), "{tool} is missing: the gateway bench needs it (see deploy/bench.sh)");
    }
    // The driver's WireGuard passes, in their own namespace and process.
    let wg_bin = std::env::current_exe().expect("exe").with_file_name("bench-wg-peers");
    let out = Command::new(&wg_bin).arg(peers.to_string()).output().expect("bench-wg-peers");
    assert!(out.status.success(), "bench-wg-peers: {}", String::from_utf8_lossy(&out.stderr));
    let wg_driver: Value = serde_json::from_slice(&out.stdout).expect("bench-wg-peers JSON");

    let netns = format!("bqgw-{}", std::process::id());
    let ok = Command::new("ip").args(["netns", "add", &netns]).status().expect("ip netns add");
    assert!(ok.success(), "ip netns add {netns} (root and iproute2 needed)");
    let result = std::panic::catch_unwind(|| {
        let file = std::fs::File::open(format!("/run/netns/{netns}")).expect("open the namespace");
        rustix::thread::move_into_link_name_space(file.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))
            .expect("setns");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let node = GatewayConfig {
            public_address: PUBLIC.parse().expect("ip"),
            public_ports: "10000-64999".parse().expect("range"),
            protected_networks: Vec::new(),
        };
        let small = rt.block_on(nft_at(&node, 100, RUNS, RUNS));
        let large = rt.block_on(nft_at(&node, n, 3, 3));
        let seed_rules = iptables_at(n);
        let seed_peers = wg_set_at(peers);
        let cold = median(large.cold_ms.clone());
        let file = median(large.nft_f_ms.clone());
        let seed_full = seed_rules["full_apply_ms_extrapolated"].as_f64().unwrap_or(0.0);
        let seed_peers_ms = seed_peers["all_peers_ms_extrapolated"].as_f64().unwrap_or(0.0);
        let driver_peers_ms = wg_driver["cold_pass_ms"].as_f64().unwrap_or(0.0);
        json!({
            "bench": "gateway",
            "tenants": n, "devices_per_tenant": DEVICES, "exposures_per_tenant": EXPOSURES, "rules_per_tenant": 2,
            "runs": {"cheap": RUNS, "cold_at_tenants": 3},
            "nft": {
                "script_lines": large.script_lines,
                "cold_full_apply_ms": cold,
                "cold_full_apply_ms_all": large.cold_ms,
                "nft_f_one_file_ms": file,
                "cold_over_nft_f": ((cold / file) * 100.0).round() / 100.0,
                "one_tenant_change_ms_at_100": median(small.change_ms.clone()),
                "one_tenant_change_ms_at_tenants": median(large.change_ms.clone()),
                "one_tenant_change_ms_all": {"at_100": small.change_ms, "at_tenants": large.change_ms},
                "one_tenant_change_transactions": large.transactions,
                "one_tenant_change_of_which_nft_f_ms": {"at_100": median(small.change_nft_ms), "at_tenants": median(large.change_nft_ms)},
                "table_listing_ms": {"at_100": small.listing_ms, "at_tenants": large.listing_ms},
                "one_tenant_change_with_table_listing_ms": {"at_100": small.change_listing_ms, "at_tenants": large.change_listing_ms},
                "cold_full_apply_ms_at_100": median(small.cold_ms),
                "nft_f_one_file_ms_at_100": median(small.nft_f_ms),
            },
            "agent_peak_rss_kb": {"sync_and_changes": large.change_rss_kb, "resync_listing_the_table": large.listing_rss_kb},
            "seed_iptables": seed_rules,
            "seed_vs_agent_cold_ratio": ((seed_full / cold) * 10.0).round() / 10.0,
            "wireguard": {
                "driver": wg_driver,
                "seed_wg_set_per_peer": seed_peers,
                "seed_vs_driver_cold_ratio": if driver_peers_ms > 0.0 { ((seed_peers_ms / driver_peers_ms) * 10.0).round() / 10.0 } else { 0.0 },
            },
        })
    });
    let _ = Command::new("ip").args(["netns", "delete", &netns]).status();
    match result {
        Ok(line) => println!("{line}"),
        Err(_) => std::process::exit(1),
    }
}
