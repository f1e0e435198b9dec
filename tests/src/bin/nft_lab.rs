//! The gateway nft lab's helper, run inside a lab namespace with `ip netns exec`: calls the
//! agent's nft code there (`sync`, `status`, `conditions` on a JSON desired state), and plays
//! the lab's TCP endpoints (`serve` answers each connection with the peer's address, `connect`
//! prints that answer, `burst` counts answered connections, `sink`/`stream` measure throughput).
//! Usage: nft-lab sync|status FILE | conditions | serve PORT… | connect ADDR:PORT [FROM] |
//! burst ADDR:PORT N | sink PORT | stream ADDR:PORT SECONDS [FROM]

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: it starts the project's binaries and lab tools, and a failed setup step is a failed test"
)]

use berqenas_node_agent::assignment::GatewayTenant;
use berqenas_node_agent::config::GatewayConfig;
use berqenas_node_agent::gateway::nft;
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
        other => panic!("unknown command {other}"),
    }
}
