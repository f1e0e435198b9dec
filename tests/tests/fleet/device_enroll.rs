//! `berqenas-device enroll` against the real coordinator binary, from the three builds: the
//! native Linux one, the Windows one under Wine and the static aarch64 one under qemu, each with
//! a token from `device token create`. The enrolled device heartbeats (`status`), a used token
//! is refused, and a revoked device's certificate is refused within seconds.

use crate::device_cross::Client;
use crate::harness::Fleet;
use berqenas_tests::wait_for;
use std::path::Path;
use std::time::Duration;

/// A token for acme: (token, CA pin, coordinator URL), as the printed command gives them.
fn new_token(f: &Fleet, extra: &[&str]) -> (String, String, String) {
    let mut args = vec!["device", "token", "create", "--tenant", "acme"];
    args.extend(extra);
    let created = f.json(0, &args);
    let command = created["command"].as_str().expect("command").to_string();
    let words: Vec<&str> = command.split_whitespace().collect();
    let after = |flag: &str| {
        let i = words.iter().position(|w| *w == flag).unwrap_or_else(|| panic!("{flag} in {command}"));
        words[i + 1].to_string()
    };
    assert_eq!(after("--token"), created["token"].as_str().expect("token"));
    (after("--token"), after("--ca-pin"), after("--coordinator"))
}

fn enroll(client: &Client, state: &Path, token: &str, pin: &str, url: &str) -> String {
    let sd = client.path(state);
    client.ok(&["--state-dir", &sd, "enroll", "--coordinator", url, "--token", token, "--ca-pin", pin])
}

fn device_json(state: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(state.join("device.json")).expect("device.json")).expect("JSON")
}

#[test]
fn devices_enroll_from_every_build_heartbeat_and_are_refused_once_revoked() {
    let f = Fleet::new(1);
    f.json(0, &["tenant", "create", "--name", "acme"]);
    let tmp = tempfile::tempdir().unwrap();

    // Native.
    let native = Client::native();
    let (token, pin, url) = new_token(&f, &["--name", "plc1"]);
    let state = tmp.path().join("native");
    let out = enroll(&native, &state, &token, &pin, &url);
    assert!(out.contains("enrolled device plc1"), "{out}");
    let d = device_json(&state);
    assert_eq!((d["tenant"].as_str(), d["state"].as_str()), (Some("acme"), Some("active")), "{d}");
    assert!(d["tunnel"]["address"].as_str().is_some_and(|a| a.starts_with("198.18.")), "{d}");
    {
        use std::os::unix::fs::PermissionsExt;
        for file in ["device.json", "wg.key", "tls.pem", "ca.pem"] {
            let mode = std::fs::metadata(state.join(file)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{file}");
        }
        assert_eq!(std::fs::metadata(&state).unwrap().permissions().mode() & 0o777, 0o700);
    }
    let tls = std::fs::read_to_string(state.join("tls.pem")).unwrap();
    assert!(!tls.contains(&token), "the token is not stored");
    let sd = state.to_str().unwrap();
    let status: serde_json::Value =
        serde_json::from_str(&native.ok(&["--state-dir", sd, "status", "--json"])).expect("status JSON");
    assert_eq!(status["coordinator_reachable"], true, "{status}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(status["cert_not_after"].as_u64().is_some_and(|t| t > now), "{status}");
    // A renewal: a new key and certificate, the same device, still accepted.
    let before = std::fs::read_to_string(state.join("tls.pem")).unwrap();
    let out = native.ok(&["--state-dir", sd, "renew"]);
    assert!(out.contains("certificate renewed"), "{out}");
    let after = std::fs::read_to_string(state.join("tls.pem")).unwrap();
    assert_ne!(before, after);
    let leaf = |pem: &str| berqenas_pki::peer_identity(&berqenas_pki::first_cert_der(pem).unwrap()).unwrap();
    assert_eq!(leaf(&before), leaf(&after), "the same identity");
    let status: serde_json::Value =
        serde_json::from_str(&native.ok(&["--state-dir", sd, "status", "--json"])).expect("status JSON");
    assert_eq!(status["coordinator_reachable"], true, "the renewed certificate is accepted: {status}");
    // The token was for one device.
    let err = native.fails(&[
        "--state-dir",
        tmp.path().join("again").to_str().unwrap(),
        "enroll",
        "--coordinator",
        &url,
        "--token",
        &token,
        "--ca-pin",
        &pin,
    ]);
    assert!(err.contains("enrollment refused"), "{err}");

    // Windows under Wine, aarch64 under qemu.
    let windows = Client::windows(tmp.path());
    let (token, pin, url) = new_token(&f, &["--name", "win1"]);
    let out = enroll(&windows, &tmp.path().join("windows"), &token, &pin, &url);
    assert!(out.contains("enrolled device win1"), "{out}");
    windows.end_wine();
    let arm = Client::aarch64();
    let (token, pin, url) = new_token(&f, &["--name", "arm1"]);
    let out = enroll(&arm, &tmp.path().join("arm"), &token, &pin, &url);
    assert!(out.contains("enrolled device arm1"), "{out}");
    let arm_sd = tmp.path().join("arm");
    let status: serde_json::Value =
        serde_json::from_str(&arm.ok(&["--state-dir", arm_sd.to_str().unwrap(), "status", "--json"])).unwrap();
    assert_eq!(status["coordinator_reachable"], true, "the aarch64 build heartbeats over mTLS: {status}");

    let listed = f.json(0, &["device", "list", "--tenant", "acme"]);
    let names: Vec<&str> = listed.as_array().unwrap().iter().filter_map(|d| d["name"].as_str()).collect();
    for n in ["plc1", "win1", "arm1"] {
        assert!(names.contains(&n), "{n} in {listed}");
    }

    // Revoked: the certificate is refused.
    f.ok(0, &["device", "revoke", "plc1", "--tenant", "acme"]);
    wait_for("the revoked device refused", Duration::from_secs(15), || {
        let out = native.run(&["--state-dir", sd, "status", "--json"]);
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (s["coordinator_reachable"] == false).then_some(())
    });
}
