//! `berqenas-device up`/`status`/`down` for real, on Linux with wireguard-go: a gateway host
//! (plain wireguard-go + `wg`, as the tenant's gateway interface looks) and a device host in lab
//! namespaces. After `up` the device pings the gateway's tenant address through the tunnel;
//! `status` reports the handshake; with `source_keep`, a client address outside the tenant
//! subnet (the gateway keeps it, as a `--source keep` exposure does) gets its answers back
//! through the tunnel; `down` removes the link and the rule. The state directory is prepared as
//! enrollment leaves it (the coordinator side is tested where it lives).
//!
//! Prerequisites (a missing one fails the test): root, /dev/net/tun, `wireguard-go`, `wg`, `ip`.

use berqenas_tests::lab::{wg_keypair, Host, Lab};
use berqenas_tests::{free_port, wait_for, workspace_bin};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn require_prerequisites() {
    assert!(rustix::process::geteuid().is_root(), "the device tunnel lab needs root (namespaces, tun devices)");
    assert!(Path::new("/dev/net/tun").exists(), "/dev/net/tun is missing");
    for tool in ["wireguard-go", "wg", "ip", "ping"] {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(found, "{tool} is not installed (apt-get install wireguard-go wireguard-tools iproute2 iputils-ping)");
    }
}

/// Deletes the lab's WireGuard links when the test ends (wireguard-go exits with its link).
struct Links(Vec<(String, String)>);

impl Drop for Links {
    fn drop(&mut self) {
        for (netns, link) in &self.0 {
            let _ = std::process::Command::new("ip").args(["-n", netns, "link", "del", link]).output();
        }
    }
}

fn sh(lab: &Lab, host: &Host, program: &str, args: &[&str]) -> String {
    let out = lab.run(host, Path::new(program), args, &[]);
    assert!(
        out.status.success(),
        "{program} {} in {} failed: {}",
        args.join(" "),
        host.name,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn device_json(interface: &str, gateway_key: &str, endpoint: &str, source_keep: bool) -> serde_json::Value {
    serde_json::json!({
        "tenant": "acme",
        "device_id": "d1",
        "device_name": "plc1",
        "state": "active",
        "tunnel": {
            "address": "198.18.1.10",
            "subnet": "198.18.1.0/24",
            "gateway_address": "198.18.1.1",
            "gateway_public_key": gateway_key,
            "endpoint": endpoint,
            "keepalive_seconds": 5,
            "source_keep": source_keep
        },
        "realtime_endpoint": "",
        "coordinators": [format!("127.0.0.1:{}", free_port())],
        "labels": {},
        "interface": interface
    })
}

#[test]
fn up_reaches_the_gateway_source_keep_answers_outsiders_and_down_cleans_up() {
    require_prerequisites();
    let bin = workspace_bin("berqenas-device");
    let tmp = tempfile::tempdir().unwrap();
    let mut lab = Lab::new();
    let gw = lab.host("gw");
    let dev = lab.host("dev");
    // Names are unique on the machine: wireguard-go's sockets share /var/run/wireguard.
    let n = std::process::id() % 100_000;
    let (gw_if, dev_if) = (format!("bg{n}"), format!("bd{n}"));
    let _links = Links(vec![(gw.netns.clone(), gw_if.clone()), (dev.netns.clone(), dev_if.clone())]);

    let (gw_private, gw_public) = wg_keypair();
    let (dev_private, dev_public) = wg_keypair();
    let key_file = tmp.path().join("gw.key");
    std::fs::write(&key_file, &gw_private).unwrap();
    sh(&lab, &gw, "wireguard-go", &[&gw_if]);
    sh(
        &lab,
        &gw,
        "wg",
        &[
            "set",
            &gw_if,
            "private-key",
            key_file.to_str().unwrap(),
            "listen-port",
            "51820",
            "peer",
            &dev_public,
            "allowed-ips",
            "198.18.1.10/32",
        ],
    );
    sh(&lab, &gw, "ip", &["addr", "add", "198.18.1.1/24", "dev", &gw_if]);
    sh(&lab, &gw, "ip", &["link", "set", &gw_if, "up"]);

    let state: PathBuf = tmp.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("wg.key"), format!("{dev_private}\n")).unwrap();
    let endpoint = format!("{}:51820", gw.addr);
    let write_device = |source_keep: bool| {
        let d = device_json(&dev_if, &gw_public, &endpoint, source_keep);
        std::fs::write(state.join("device.json"), serde_json::to_string_pretty(&d).unwrap()).unwrap();
    };
    let sd = state.to_str().unwrap();
    let env = [("BERQENAS_DEVICE_WG", "userspace")];
    let client = |args: &[&str]| {
        let mut full = vec!["--state-dir", sd];
        full.extend_from_slice(args);
        let out = lab.run(&dev, &bin, &full, &env);
        assert!(out.status.success(), "berqenas-device {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };

    // up: no coordinator answers, so the stored configuration is used (and said so).
    write_device(false);
    let (out, err) = client(&["up"]);
    assert!(out.contains(&format!("tunnel {dev_if} up")), "{out}");
    assert!(err.contains("using the stored configuration"), "{err}");
    wait_for("a ping of the gateway through the tunnel", Duration::from_secs(15), || {
        lab.run(&dev, Path::new("ping"), &["-c", "1", "-W", "1", "198.18.1.1"], &[]).status.success().then_some(())
    });
    let (out, _) = client(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["tunnel_up"], true, "{status}");
    assert!(status["last_handshake"].as_u64().is_some_and(|t| t > 0), "{status}");
    assert_eq!(status["coordinator_reachable"], false, "{status}");
    // `up` again changes nothing and keeps the session.
    client(&["up"]);
    assert!(lab.run(&dev, Path::new("ping"), &["-c", "1", "-W", "2", "198.18.1.1"], &[]).status.success());

    // A client address outside the tenant subnet, kept by the gateway: without source-keep
    // routing the device has no way back to it.
    sh(&lab, &gw, "ip", &["addr", "add", "203.0.113.5/32", "dev", &gw_if]);
    let outsider_ping =
        || lab.run(&gw, Path::new("ping"), &["-c", "1", "-W", "1", "-I", "203.0.113.5", "198.18.1.10"], &[]);
    assert!(!outsider_ping().status.success(), "answered without source-keep routing");
    write_device(true);
    client(&["up"]);
    let rules = sh(&lab, &dev, "ip", &["rule", "show"]);
    assert!(rules.contains("from 198.18.1.10 lookup 51820"), "{rules}");
    wait_for("an outsider's ping answered through the tunnel", Duration::from_secs(10), || {
        outsider_ping().status.success().then_some(())
    });

    // down: the link and the rule are gone.
    let (out, _) = client(&["down"]);
    assert!(out.contains("down"), "{out}");
    let links = sh(&lab, &dev, "ip", &["link", "show"]);
    assert!(!links.contains(&dev_if), "{links}");
    let rules = sh(&lab, &dev, "ip", &["rule", "show"]);
    assert!(!rules.contains("lookup 51820"), "{rules}");
    let (out, _) = client(&["status", "--json"]);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["tunnel_up"], false);

    // run keeps the tunnel up: it brings it up without a coordinator, and brings it back when
    // the link is deleted under it.
    write_device(false);
    let bin_s = bin.to_str().unwrap();
    let mut run = lab.spawn(
        &dev,
        "device-run",
        Path::new("/usr/bin/env"),
        &["BERQENAS_DEVICE_WG=userspace", "BERQENAS_DEVICE_TUNNEL_CHECK_SECS=1", bin_s, "--state-dir", sd, "run"],
        tmp.path(),
    );
    let gateway_ping =
        || lab.run(&dev, Path::new("ping"), &["-c", "1", "-W", "1", "198.18.1.1"], &[]).status.success().then_some(());
    wait_for("run to bring the tunnel up", Duration::from_secs(20), gateway_ping);
    sh(&lab, &dev, "ip", &["link", "del", &dev_if]);
    wait_for("run to bring the deleted tunnel back", Duration::from_secs(20), gateway_ping);
    // A device no longer active loses its tunnel.
    let mut d = device_json(&dev_if, &gw_public, &endpoint, false);
    d["state"] = "disabled".into();
    std::fs::write(state.join("device.json"), d.to_string()).unwrap();
    wait_for("run to take the tunnel of a disabled device down", Duration::from_secs(20), || {
        (!sh(&lab, &dev, "ip", &["link", "show"]).contains(&dev_if)).then_some(())
    });
    run.stop(Duration::from_secs(5));
    assert!(run.log_text().contains("tunnel"), "{}", run.log_text());
}
