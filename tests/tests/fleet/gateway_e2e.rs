//! The gateway end to end with the project's real binaries and real packets. Network namespaces
//! on the lab bridge: a coordinator (with a db agent beside it), a gateway running
//! `berqenas-node-agent` (joined `--roles gateway --public-address 198.51.100.10 --public-ports
//! 15000-15999`, driver none, so the real gateway driver with userspace wireguard-go), two device
//! hosts of tenant A (`acme`), one of tenant B (`beta`) and an outside client in 203.0.113.0/24.
//! Devices are configured only from `berqenas-coordinator device config --format wg-quick`, the
//! way wg-quick would apply it (`wireguard-go`, `wg setconf`, `ip`, the file's PostUp lines): no
//! code of ours runs on a device. TCP services and clients are `nft-lab serve/connect/burst`.
//!
//! The gateway agent gets a private `/run/wireguard` (a tmpfs in a mount namespace that a holder
//! process keeps, so a restarted agent finds its wireguard-go sockets): those sockets are named
//! after the interface, and `bqt1` of this lab must not meet the `bqt1` of another lab running at
//! the same time. The lab itself is in `gateway_e2e/env.rs`, a device running `berqenas-device` in
//! `gateway_e2e/edge.rs`.
//!
//! Prerequisites (a missing one fails the test): root, /dev/net/tun, `wireguard-go`, `wg`, `ip`,
//! `nft`, `nsenter`, `ping`, `python3`.

pub mod edge;
pub mod env;

use crate::harness::agent_bin;
use berqenas_tests::{wait_for, workspace_bin};
use env::{path, text, Env, CONVERGE, PUBLIC, REHANDSHAKE, SAMPLES};
use std::path::Path;
use std::time::Duration;

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
    let shown = wait_for("the exposure's counters in `expose show`", SAMPLES, || {
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
    let handshakes = |env: &Env| {
        let mut lines: Vec<String> =
            env.gw_wg(&["show", "all", "latest-handshakes"]).lines().map(str::to_string).collect();
        lines.sort();
        lines
    };
    let before = handshakes(&env);
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
    assert_eq!(handshakes(&env), before, "sessions are kept");
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
