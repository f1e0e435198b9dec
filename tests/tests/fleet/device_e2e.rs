//! The device client on the real fleet: in the gateway end-to-end lab (`gateway_e2e::env`: a
//! coordinator, a db agent, a gateway agent with wireguard-go, all real processes in network
//! namespaces), a new device host enrolls with a token from `device token create`, brings its
//! tunnel up with `berqenas-device up` (the gateway's key arrives by heartbeat once the gateway
//! has added the peer), pings its gateway address through WireGuard and reports the handshake
//! in `status`; once `device revoke`d, its tunnel no longer carries packets and its certificate
//! is refused.

use crate::gateway_e2e::env::{text, Env, CONVERGE};
use berqenas_tests::{wait_for, workspace_bin};
use std::time::Duration;

/// Deletes the device's link at the end, passed or failed (wireguard-go exits with it).
struct Link(String, String);

impl Drop for Link {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["-n", &self.0, "link", "del", &self.1]).output();
    }
}

#[test]
fn an_enrolled_device_brings_its_tunnel_up_pings_its_gateway_and_loses_it_when_revoked() {
    let mut env = Env::new();
    let host = env.lab.host("dv");
    env.sh(&host, "ip", &["addr", "add", "198.51.100.31/24", "dev", "eth0"]);
    let interface = format!("bqf{}", std::process::id() % 100_000);
    let _link = Link(host.netns.clone(), interface.clone());
    let bin = workspace_bin("berqenas-device");
    let state = env.tmp.path().join("edge1-state");
    let sd = state.to_str().unwrap().to_string();
    let device = |args: &[&str]| {
        let mut all = vec!["--state-dir", sd.as_str()];
        all.extend_from_slice(args);
        env.lab.run(&host, &bin, &all, &[("BERQENAS_DEVICE_WG", "userspace")])
    };

    let mut enroll = env.enroll_args("acme", "edge1");
    enroll.extend(["--interface".to_string(), interface.clone()]);
    let out = device(&enroll.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "enroll: {}", text(&out));
    assert!(text(&out).contains("enrolled device edge1"), "{}", text(&out));

    // `up` asks a coordinator first: it succeeds once the gateway has reported its key.
    wait_for("up with the gateway's key", CONVERGE, || device(&["up"]).status.success().then_some(()));
    let gateway = env.gateway_address("acme");
    wait_for("a ping of the gateway through the enrolled device's tunnel", CONVERGE, || {
        env.pings(&host, &gateway).then_some(())
    });
    let status: serde_json::Value = serde_json::from_slice(&device(&["status", "--json"]).stdout).expect("status");
    assert_eq!(status["tunnel_up"], true, "{status}");
    assert_eq!(status["coordinator_reachable"], true, "{status}");
    assert!(status["last_handshake"].as_u64().is_some_and(|t| t > 0), "{status}");
    let listed = env.json(&["device", "list", "--tenant", "acme"]);
    assert!(listed.as_array().unwrap().iter().any(|d| d["name"] == "edge1"), "{listed}");

    // Revoked: the gateway drops the peer and the coordinator refuses the certificate.
    env.json(&["device", "revoke", "edge1", "--tenant", "acme"]);
    wait_for("the revoked device's tunnel to stop carrying packets", CONVERGE, || {
        (!env.pings(&host, &gateway)).then_some(())
    });
    wait_for("the revoked device's certificate refused", Duration::from_secs(15), || {
        let s: serde_json::Value = serde_json::from_slice(&device(&["status", "--json"]).stdout).ok()?;
        (s["coordinator_reachable"] == false).then_some(())
    });
    let out = device(&["down"]);
    assert!(out.status.success(), "down: {}", text(&out));
    let links = env.sh(&host, "ip", &["link", "show"]);
    assert!(!links.contains(&interface), "{links}");
}
