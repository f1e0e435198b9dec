//! The gateway nft lab's helper, run inside a lab namespace with `ip netns exec`: calls the
//! agent's nft code there (`sync`, `status`, `conditions` on a JSON desired state), and plays
//! the lab's TCP endpoints (`serve` answers each connection with the peer's address, `connect`
//! prints that answer, `burst` counts answered connections, `sink`/`stream` measure throughput).
//! Usage: nft-lab sync|status FILE | conditions | serve PORT… | connect ADDR:PORT [FROM] |
//! burst ADDR:PORT N | sink PORT | stream ADDR:PORT SECONDS [FROM] | bench TENANTS (in an empty
//! namespace: sync times for TENANTS tenants × 3 exposures, one JSON line; NFT_LAB_SPANS=1 prints
//! each timed change's render, plan and nft spans on stderr) | session (the agent's
//! nft session's outcomes against this namespace's nft, one JSON line)

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: it starts the project's binaries and lab tools, and a failed setup step is a failed test"
)]

use berqenas_node_agent::assignment::GatewayTenant;
use berqenas_node_agent::config::GatewayConfig;
use berqenas_node_agent::gateway::nft;
use berqenas_node_agent::host::exec;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

type Desired = (GatewayConfig, Vec<GatewayTenant>, BTreeMap<String, Vec<Ipv4Addr>>);

fn desired(path: &str) -> Desired {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("read desired")).expect("json");
    (
        serde_json::from_value(v["node"].clone()).expect("node"),
        serde_json::from_value(v["tenants"].clone()).expect("tenants"),
        serde_json::from_value(v["resolved"].clone()).unwrap_or_default(),
    )
}

async fn connect(to: SocketAddr, from: Option<Ipv4Addr>, timeout: Duration) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = from {
        socket.bind(SocketAddr::new(ip.into(), 0))?;
    }
    tokio::time::timeout(timeout, socket.connect(to))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "timeout"))?
}

/// The peer's answer to a connection, or `timeout` / the error.
async fn ask(to: SocketAddr, from: Option<Ipv4Addr>) -> String {
    match connect(to, from, Duration::from_millis(1500)).await {
        Ok(mut s) => {
            let mut answer = String::new();
            match tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut answer)).await {
                Ok(Ok(_)) => answer.trim().to_string(),
                Ok(Err(e)) => format!("error: {e}"),
                Err(_) => "timeout".into(),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => "timeout".into(),
        Err(e) => format!("error: {e}"),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_else(|| panic!("missing argument {i}: see the usage"));
    match arg(0).as_str() {
        "sync" => {
            let (node, tenants, resolved) = desired(&arg(1));
            let r = nft::sync(&node, &tenants, &resolved).await.expect("sync");
            let applied: Vec<Value> =
                r.applied.iter().map(|s| json!({"tenant": s.tenant(), "what": s.describe()})).collect();
            println!(
                "{}",
                json!({"applied": applied, "failed": r.failed, "refused": r.refused, "transactions": r.transactions,
                       "elapsed_ms": r.elapsed.as_secs_f64() * 1000.0})
            );
        }
        "status" => {
            let (_, tenants, _) = desired(&arg(1));
            let s = nft::exposure_status(&tenants).await.expect("status");
            let out: BTreeMap<String, Vec<Value>> = s
                .into_iter()
                .map(|(t, list)| {
                    let list = list
                        .into_iter()
                        .map(|x| {
                            let sources: Vec<Value> = x
                                .sources
                                .iter()
                                .map(|s| json!({"address": s.address, "first_seen": s.first_seen, "last_seen": s.last_seen,
                                                "packets": s.packets, "bytes": s.bytes}))
                                .collect();
                            json!({"id": x.id, "accepted": x.accepted_packets, "dropped": x.dropped_packets, "sources": sources})
                        })
                        .collect();
                    (t, list)
                })
                .collect();
            println!("{}", json!(out));
        }
        "conditions" => {
            let c = nft::foreign_conditions().await.expect("conditions");
            let out: Vec<Value> = c.iter().map(|c| json!({"kind": c.kind, "message": c.message})).collect();
            println!("{}", json!(out));
        }
        "serve" => {
            let mut tasks = Vec::new();
            for port in &args[1..] {
                let listener = TcpListener::bind(("0.0.0.0", port.parse::<u16>().expect("port"))).await.expect("bind");
                tasks.push(tokio::spawn(async move {
                    loop {
                        let Ok((mut s, peer)) = listener.accept().await else { continue };
                        tokio::spawn(async move {
                            let _ = s.write_all(format!("{}\n", peer.ip()).as_bytes()).await;
                            let _ = s.shutdown().await;
                        });
                    }
                }));
            }
            println!("serving");
            for t in tasks {
                let _ = t.await;
            }
        }
        "connect" => {
            let from = args.get(2).map(|f| f.parse().expect("from address"));
            println!("{}", ask(arg(1).parse().expect("address"), from).await);
        }
        "burst" => {
            let to: SocketAddr = arg(1).parse().expect("address");
            let n: usize = arg(2).parse().expect("count");
            let attempts: Vec<_> = (0..n).map(|_| tokio::spawn(ask(to, None))).collect();
            let mut answered = 0;
            for a in attempts {
                if a.await.map(|x| !x.starts_with("timeout") && !x.starts_with("error")).unwrap_or(false) {
                    answered += 1;
                }
            }
            println!("{answered}");
        }
        "sink" => {
            let listener = TcpListener::bind(("0.0.0.0", arg(1).parse::<u16>().expect("port"))).await.expect("bind");
            println!("serving");
            loop {
                let Ok((mut s, _)) = listener.accept().await else { continue };
                tokio::spawn(async move {
                    // The whole stream, and its steady part: after WARMUP, when a policer's
                    // initial bucket is spent.
                    const WARMUP: f64 = 2.0;
                    let mut buf = vec![0u8; 256 * 1024];
                    let (mut total, mut steady) = (0u64, 0u64);
                    let mut first: Option<Instant> = None;
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                let f = *first.get_or_insert_with(Instant::now);
                                total += n as u64;
                                if f.elapsed().as_secs_f64() > WARMUP {
                                    steady += n as u64;
                                }
                            }
                        }
                    }
                    let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
                    let steady_secs = (secs - WARMUP).max(0.0);
                    let _ = s.write_all(format!("{total} {secs} {steady} {steady_secs}\n").as_bytes()).await;
                });
            }
        }
        "stream" => {
            let to: SocketAddr = arg(1).parse().expect("address");
            let secs: f64 = arg(2).parse().expect("seconds");
            let from = args.get(3).map(|f| f.parse().expect("from address"));
            let mut s = connect(to, from, Duration::from_secs(3)).await.expect("connect");
            let chunk = vec![0x5au8; 64 * 1024];
            let started = Instant::now();
            while started.elapsed().as_secs_f64() < secs {
                s.write_all(&chunk).await.expect("write");
            }
            s.shutdown().await.expect("shutdown");
            let mut answer = String::new();
            s.read_to_string(&mut answer).await.expect("read");
            let v: Vec<f64> = answer.split_whitespace().map(|x| x.parse().expect("number")).collect();
            let [bytes, took, steady, steady_secs] = v[..] else { panic!("sink answered {answer:?}") };
            println!(
                "{}",
                json!({"bytes": bytes, "seconds": took, "bits_per_second": bytes * 8.0 / took,
                       "steady_bits_per_second": steady * 8.0 / steady_secs})
            );
        }
        "bench" => bench(arg(1).parse().expect("tenant count")).await,
        "session" => session().await,
        other => panic!("unknown command {other}"),
    }
}

/// `tenants` tenants with 3 exposures (allowlists, rate, both source modes) and 2 rules each.
fn bench_state(tenants: u32) -> Vec<GatewayTenant> {
    (1..=tenants)
        .map(|i| {
            let third = i % 256;
            let second = 18 + (i / 256);
            let base = format!("198.{second}.{third}");
            let exposures: Vec<Value> = (0..3u32)
                .map(|k| {
                    json!({"id": format!("e{k}"), "device_id": "d1", "device_address": format!("{base}.10"),
                           "port": 8080 + k, "public_port": 10_000 + (i * 3 + k) % 55_000, "protocol": "tcp",
                           "allow": if k == 0 { json!(["203.0.113.0/24", "192.0.2.7/32"]) } else { json!([]) },
                           "rate_per_second": if k == 1 { 100 } else { 0 }, "source": if k == 2 { "keep" } else { "nat" },
                           "enabled": true})
                })
                .collect();
            serde_json::from_value(json!({
                "name": format!("t{i}"), "revision": 1, "lifecycle": "run", "index": i,
                "gateway": {"vpn_subnet": format!("{base}.0/24"), "gateway_address": format!("{base}.1"),
                    "interface": format!("bqt{i}"), "listen_port": 51820, "exposures": exposures,
                    "rules": [{"id": "r1", "position": 1, "verdict": "deny", "sources": ["203.0.113.8/32"],
                               "destinations": [], "ports": {"first": 22, "last": 22}, "protocol": "tcp", "vpn_required": false},
                              {"id": "r2", "position": 2, "verdict": "allow", "sources": [], "destinations": ["192.0.2.0/24"],
                               "ports": null, "protocol": "any", "vpn_required": false}],
                    "blocked_domains": []}
            }))
            .expect("tenant")
        })
        .collect()
}

/// The agent's `nft -i` session against the real nft of this namespace: a change applied, a
/// change refused whole (its first command not applied either), and a change after another nft
/// process changed the table (the session sees it); prints the outcomes and the table.
async fn session() {
    use berqenas_node_agent::gateway::nft::session::{self, Outcome};
    let t = Duration::from_secs(10);
    let show = |o: Outcome| format!("{o:?}");
    let applied =
        show(session::run("add table inet bqs\nadd chain inet bqs c\nadd rule inet bqs c counter\n", t).await);
    let refused = show(session::run("add rule inet bqs c accept\nadd rule inet bqs missing accept\n", t).await);
    let nft = |args: &'static [&'static str]| {
        berqenas_node_agent::host::exec::run("nft", args, None, Duration::from_secs(10))
    };
    nft(&["add", "chain", "inet", "bqs", "d"]).await.expect("another nft adds a chain");
    let after_other = show(session::run("add rule inet bqs d accept\n", t).await);
    let table = nft(&["list", "table", "inet", "bqs"]).await.expect("list");
    println!("{}", json!({"applied": applied, "refused": refused, "after_other": after_other, "table": table}));
}

/// One-tenant changes timed after the first (their median is reported).
const CHANGES: usize = 9;

/// The middle value (sorts `v`).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn bench(tenants: u32) {
    let node = GatewayConfig {
        public_address: "198.51.100.10".parse().expect("ip"),
        public_ports: "10000-64999".parse().expect("range"),
        protected_networks: Vec::new(),
    };
    let resolved = BTreeMap::new();
    let mut desired = bench_state(tenants);
    let ms = |d: Duration| (d.as_secs_f64() * 1000.0 * 10.0).round() / 10.0;
    let timed = |r: &nft::SyncReport| {
        assert!(r.failed.is_empty() && r.refused.is_empty(), "{:?} {:?}", r.failed, r.refused);
        ms(r.elapsed)
    };
    let cold = timed(&nft::sync(&node, &desired, &resolved).await.expect("sync"));
    let noop = timed(&nft::sync(&node, &desired, &resolved).await.expect("sync"));
    desired[tenants as usize / 2].gateway.device_to_device = true;
    let one = nft::sync(&node, &desired, &resolved).await.expect("sync");
    assert_eq!(one.applied.len(), 1);
    let one = timed(&one);
    // The same change planned against the last applied state instead of a listing. The first
    // one starts the agent's nft session (and fills its cache); the next ones are the steady
    // state between resyncs: their median.
    let change = |desired: &mut [GatewayTenant], i: usize| {
        let t = &mut desired[i].gateway;
        t.device_to_device = !t.device_to_device;
    };
    change(&mut desired, tenants as usize / 3);
    let quick = nft::sync_changes(&node, &desired, &resolved).await.expect("sync");
    assert_eq!(quick.applied.len(), 1);
    let first = timed(&quick);
    let (mut changes, mut in_nft) = (Vec::new(), Vec::new());
    let (mut in_render, mut in_plan) = (Vec::new(), Vec::new());
    for k in 0..CHANGES {
        change(&mut desired, k * 7 % tenants as usize);
        let r = nft::sync_changes(&node, &desired, &resolved).await.expect("sync");
        assert_eq!(r.applied.len(), 1);
        changes.push(timed(&r));
        in_nft.push(ms(r.nft));
        in_render.push((r.render.as_secs_f64() * 1e5).round() / 100.0);
        in_plan.push((r.plan.as_secs_f64() * 1e5).round() / 100.0);
        if std::env::var_os("NFT_LAB_SPANS").is_some() {
            eprintln!("change {k}: total {:?} render {:?} plan {:?} nft {:?}", r.elapsed, r.render, r.plan, r.nft);
        }
    }
    let (quick, quick_nft) = (median(&mut changes), median(&mut in_nft));
    let (quick_render, quick_plan) = (median(&mut in_render), median(&mut in_plan));
    // nft's own part of such a change, side by side: the same one-tenant change as a one-shot
    // `nft -f` (a process, a cache fill, the commit and its exit), and through the agent's
    // session a one-rule change of a scratch chain, with a verdict (the kernel validates the
    // whole table again, as for any rule with a verdict) and without (a counter: it does not).
    let at = tenants as usize / 2;
    let refill = |desired: &[GatewayTenant]| {
        let step = nft::Step::Refill { tenant: desired[at].name.clone(), why: String::new() };
        let ruleset = nft::render(&node, desired);
        nft::plan::scripts(&[step], &ruleset, &nft::Observed::default()).remove(0).1
    };
    let before = refill(&desired);
    change(&mut desired, at);
    let after = refill(&desired);
    let mut by_hand = Vec::new();
    for k in 0..CHANGES {
        let script = if k % 2 == 0 { &after } else { &before };
        let started = Instant::now();
        exec::run("nft", &["-f", "-"], Some(script.as_bytes()), Duration::from_secs(60)).await.expect("nft -f");
        by_hand.push(ms(started.elapsed()));
    }
    let probe = |rule: &'static str| async move {
        use nft::session::{run, Outcome};
        let t = Duration::from_secs(10);
        assert_eq!(run(&format!("add chain inet {} probe\n", nft::TABLE), t).await, Outcome::Applied);
        let line = format!("flush chain inet {0} probe\nadd rule inet {0} probe {rule}\n", nft::TABLE);
        let mut took = Vec::new();
        for _ in 0..CHANGES {
            let started = Instant::now();
            assert_eq!(run(&line, t).await, Outcome::Applied);
            took.push(ms(started.elapsed()));
        }
        median(&mut took)
    };
    let (with_verdict, without_verdict) = (probe("drop").await, probe("counter").await);
    // The same ruleset loaded as one file by nft itself, into an empty table.
    let script = nft::render(&node, &desired).script();
    exec::run("nft", &["delete", "table", "inet", nft::TABLE], None, Duration::from_secs(60)).await.expect("delete");
    let started = Instant::now();
    exec::run("nft", &["-f", "-"], Some(script.as_bytes()), Duration::from_secs(120)).await.expect("nft -f");
    let file = ms(started.elapsed());
    let rss_kb = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    println!(
        "{}",
        json!({"tenants": tenants, "exposures_per_tenant": 3, "script_lines": script.lines().count(),
               "cold_sync_ms": cold, "converged_sync_ms": noop, "one_tenant_change_ms": one, "one_tenant_change_from_last_applied_ms": quick,
               "first_change_from_last_applied_ms": first, "change_in_nft_ms": quick_nft, "changes_timed": CHANGES,
               "change_render_ms": quick_render, "change_plan_ms": quick_plan,
               "nft_f_one_tenant_change_ms": median(&mut by_hand),
               "nft_session_rule_with_verdict_ms": with_verdict, "nft_session_rule_without_verdict_ms": without_verdict,
               "nft_f_whole_file_ms": file, "helper_peak_rss_kb": rss_kb})
    );
}
