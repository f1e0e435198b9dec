//! Token → tunnel up without WireGuard's 5 s retry, on the real fleet (`gateway_e2e::env`: a
//! coordinator, a db agent, a gateway agent with wireguard-go, all real processes in network
//! namespaces). WireGuard retries an unanswered handshake initiation only after REKEY_TIMEOUT
//! (5 s), so a device whose first initiation reaches the gateway before the gateway agent has
//! added its peer used to wait 5 s for its tunnel. Now the coordinator answers `Enroll` once the
//! gateway has reported the peer (at most 3 s), and `berqenas-device up` starts fresh initiations
//! until the gateway answers.

use crate::gateway_e2e::edge::edge;
use crate::gateway_e2e::env::{path, text, Env, CONVERGE};
use crate::harness::agent_bin;
use berqenas_tests::wait_for;
use std::path::Path;
use std::time::{Duration, Instant};

/// The gateway agent stopped (SIGSTOP) until dropped: it adds no peer meanwhile, while its
/// wireguard-go keeps answering the peers it has.
struct Paused(u32);

impl Paused {
    fn new(pid: u32) -> Paused {
        let out = berqenas_tests::run(Path::new("kill"), &["-STOP", &pid.to_string()], &[]);
        assert!(out.status.success(), "SIGSTOP the gateway agent: {}", text(&out));
        Paused(pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        let _ = berqenas_tests::run(Path::new("kill"), &["-CONT", &self.0.to_string()], &[]);
    }
}

#[test]
fn a_device_handshakes_right_after_its_gateway_adds_the_peer_late() {
    let (env, hosts, ()) = Env::with_db(&["hs1", "hs2"], |env| {
        let coord = env.coord.clone();
        let db_dir = env.join(&coord, "db", "db", &["--driver", "dir", "--driver-path", "DIR/tenants"]);
        let config = db_dir.join("agent.toml");
        let db = env.lab.spawn(&coord, "agent-db", &agent_bin(), &["run", "--config", path(&config)], env.tmp.path());
        env.procs.push(db);
    });
    env.json(&["tenant", "create", "--name", "acme", "--vpn", "enabled", "--wait", "--wait-timeout", "60s"]);
    let gateway = env.gateway_address("acme");

    // The usual path: the coordinator answers once the gateway has the peer; `up` reports the
    // handshake it waited for.
    let (first, _first_link) = edge(&env, &hosts[0], "a");
    let enrolled = first.enroll("edge-a", &[]);
    assert!(!enrolled.contains("not confirmed"), "the gateway had the peer before the answer: {enrolled}");
    let first_up = wait_for("up with the gateway's key", CONVERGE, || {
        let out = first.run(&["up"]);
        out.status.success().then_some(out)
    });
    assert!(env.pings(&first.host, &gateway), "the first device pings its gateway right after `up`");
    let out = first.run(&["down"]);
    assert!(out.status.success(), "down: {}", text(&out));

    // The gateway agent paused: enrollment answers without the peer confirmed, and the device's
    // first initiation reaches a gateway that does not know it.
    let (late, _late_link) = edge(&env, &hosts[1], "b");
    let agent_pid = env.agent.as_ref().expect("the gateway agent").pid();
    let paused = Paused::new(agent_pid);
    let enrolled = late.enroll("edge-b", &[]);
    let public_key = env
        .json(&["device", "list", "--tenant", "acme"])
        .as_array()
        .and_then(|a| a.iter().find(|d| d["name"] == "edge-b").cloned())
        .and_then(|d| d["public_key"].as_str().map(str::to_string))
        .expect("edge-b's public key");
    let up_started = Instant::now();
    let up = std::thread::scope(|s| {
        let up = s.spawn(|| late.run(&["up"]));
        // The interface is up with its peer: its keepalive (and so its first initiation) is out.
        wait_for("the late device's interface up with its gateway peer", CONVERGE, || {
            let link = env.lab.run(&late.host, Path::new("ip"), &["link", "show", &late.interface], &[]);
            let up = String::from_utf8_lossy(&link.stdout).contains(",UP");
            (up && !late.wg("peers").is_empty()).then_some(())
        });
        assert!(!late.handshaken(), "no handshake while the gateway agent is paused");
        drop(paused);
        // From here the gateway adds the peer; the device's next initiation must follow it
        // within a fraction of WireGuard's own 5 s retry.
        let deadline = Instant::now() + CONVERGE;
        let mut peer_seen: Option<Instant> = None;
        let handshake = loop {
            if peer_seen.is_none() && env.gw_wg(&["show", "all", "peers"]).contains(&public_key) {
                peer_seen = Some(Instant::now());
            }
            if late.handshaken() {
                break Instant::now();
            }
            assert!(Instant::now() < deadline, "no handshake within {CONVERGE:?}");
            std::thread::sleep(Duration::from_millis(10));
        };
        let peer_seen = peer_seen.unwrap_or(handshake);
        let after_peer = handshake.saturating_duration_since(peer_seen);
        let after_up = handshake.duration_since(up_started);
        eprintln!(
            "peer on the gateway {:?} after `up` started; handshake {after_peer:?} later",
            peer_seen - up_started
        );
        // Without fresh initiations the handshake comes at the earliest 5 s after the first
        // initiation (itself after `up` started): `after_up` ≥ 5 s.
        assert!(
            after_peer < Duration::from_millis(2500) && after_up < Duration::from_millis(4500),
            "handshake {after_peer:?} after the peer appeared, {after_up:?} after `up` started"
        );
        up.join().expect("up thread")
    });
    assert!(up.status.success(), "up: {}", text(&up));
    // What `up` said, checked last so a client that says nothing still shows the timing above.
    assert!(text(&first_up).contains("handshake with the gateway after"), "{}", text(&first_up));
    assert!(text(&up).contains("handshake with the gateway after"), "{}", text(&up));
    assert!(enrolled.contains("has not confirmed this device yet"), "{enrolled}");
    assert!(env.pings(&late.host, &gateway), "the late device pings its gateway");
    let out = late.run(&["down"]);
    assert!(out.status.success(), "down: {}", text(&out));
}
