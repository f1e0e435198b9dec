//! A device host of the gateway lab running our device client: `berqenas-device` with its own
//! state directory and interface (userspace WireGuard), enrolled from the command `device token
//! create` printed, its link deleted when the test ends.

use super::env::{text, Env};
use berqenas_tests::lab::{enroll_args, Host};
use berqenas_tests::workspace_bin;
use std::path::Path;
use std::process::Output;

/// Deletes the device's link at the end, passed or failed (wireguard-go exits with it).
pub struct Link(String, String);

impl Drop for Link {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["-n", &self.0, "link", "del", &self.1]).output();
    }
}

/// A device host's `berqenas-device` with its own state directory and interface.
pub struct Edge<'a> {
    env: &'a Env,
    pub host: Host,
    state: String,
    pub interface: String,
}

/// The device `name` on `host` (tenant acme), and the guard of its link.
pub fn edge<'a>(env: &'a Env, host: &Host, name: &str) -> (Edge<'a>, Link) {
    let interface = format!("bqh{}{name}", std::process::id() % 100_000);
    let link = Link(host.netns.clone(), interface.clone());
    let state = env.tmp.path().join(format!("{name}-state")).to_str().expect("UTF-8").to_string();
    (Edge { env, host: host.clone(), state, interface }, link)
}

impl Edge<'_> {
    /// `berqenas-device --state-dir … ARGS…` in the device's host.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut all = vec!["--state-dir", self.state.as_str()];
        all.extend_from_slice(args);
        self.env.lab.run(&self.host, &workspace_bin("berqenas-device"), &all, &[("BERQENAS_DEVICE_WG", "userspace")])
    }

    /// `device token create --tenant acme --name NAME TOKEN…` then `enroll` with the command it
    /// printed; enroll's output.
    pub fn enroll(&self, name: &str, token: &[&str]) -> String {
        let mut create = vec!["device", "token", "create", "--tenant", "acme", "--name", name];
        create.extend_from_slice(token);
        let mut args = enroll_args(&self.env.json(&create));
        args.extend(["--interface".to_string(), self.interface.clone()]);
        let out = self.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(out.status.success(), "enroll {name}: {}", text(&out));
        text(&out)
    }

    /// `wg show` of the device's interface (empty when it is not there yet).
    pub fn wg(&self, what: &str) -> String {
        let out = self.env.lab.run(&self.host, Path::new("wg"), &["show", &self.interface, what], &[]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The device's peer (its gateway) has a handshake on record.
    pub fn handshaken(&self) -> bool {
        self.wg("latest-handshakes").split_whitespace().nth(1).is_some_and(|t| t != "0")
    }
}
