//! The gateway's nftables part with real packets: a gateway namespace with a public link
//! (198.51.100.10, and 203.0.113.1 towards the outside client) and two tenant links standing in
//! for WireGuard interfaces (`bqt1`, `bqt2`; veth pairs to one device host each). The agent's
//! code runs inside the gateway namespace (`nft-lab sync`), and clients and services are real
//! TCP endpoints in their own namespaces.

use berqenas_tests::lab::{ip, Host, Lab};
use berqenas_tests::{wait_for, workspace_bin, Proc};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

struct Env {
    lab: Lab,
    gw: Host,
    client: Host,
    dev_a: Host,
    dev_b: Host,
    tmp: tempfile::TempDir,
    procs: Vec<Proc>,
}

fn nft_lab() -> PathBuf {
    workspace_bin("nft-lab")
}

fn in_ns(host: &Host, args: &[&str]) {
    ip(&[&["netns", "exec", host.netns.as_str()][..], args].concat());
}

impl Env {
    fn new() -> Env {
        let mut lab = Lab::new();
        let gw = lab.bare_host("gw");
        let client = lab.bare_host("client");
        let dev_a = lab.bare_host("deva");
        let dev_b = lab.bare_host("devb");
        lab.link(&gw, "wan0", &client, "eth0");
        lab.link(&gw, "bqt1", &dev_a, "eth0");
        lab.link(&gw, "bqt2", &dev_b, "eth0");
        let addr = |h: &Host, a: &str, dev: &str| ip(&["-n", &h.netns, "addr", "add", a, "dev", dev]);
        addr(&gw, "198.51.100.10/24", "wan0");
        addr(&gw, "203.0.113.1/24", "wan0");
        addr(&gw, "198.18.1.1/24", "bqt1");
        addr(&gw, "198.18.2.1/24", "bqt2");
        for a in ["203.0.113.7/24", "203.0.113.8/24", "203.0.113.9/24", "203.0.113.10/24"] {
            addr(&client, a, "eth0");
        }
        addr(&dev_a, "198.18.1.10/24", "eth0");
        addr(&dev_b, "198.18.2.10/24", "eth0");
        ip(&["-n", &client.netns, "route", "add", "default", "via", "203.0.113.1"]);
        // The devices route everything through their gateway (what `source keep` needs).
        ip(&["-n", &dev_a.netns, "route", "add", "default", "via", "198.18.1.1"]);
        ip(&["-n", &dev_b.netns, "route", "add", "default", "via", "198.18.2.1"]);
        in_ns(&gw, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        let tmp = tempfile::tempdir().expect("tmp");
        let mut env = Env { lab, gw, client, dev_a, dev_b, tmp, procs: Vec::new() };
        env.serve(&env.dev_a.clone(), "serve-a", &["serve", "8080", "8081", "8082"]);
        env.serve(&env.dev_b.clone(), "serve-b", &["serve", "8080"]);
        env.serve(&env.client.clone(), "serve-outside", &["serve", "9000"]);
        // A service of the gateway host itself, on every address (like sshd).
        env.serve(&env.gw.clone(), "serve-gateway-host", &["serve", "7000"]);
        env
    }

    fn serve(&mut self, host: &Host, name: &str, args: &[&str]) {
        let p = self.lab.spawn(host, name, &nft_lab(), args, self.tmp.path());
        wait_for(name, Duration::from_secs(10), || p.log_text().contains("serving").then_some(()));
        self.procs.push(p);
    }

    fn pings(&self, host: &Host, target: &str) -> bool {
        let out = self.lab.run(host, std::path::Path::new("ping"), &["-c", "1", "-W", "1", target], &[]);
        out.status.success()
    }

    fn run(&self, host: &Host, args: &[&str]) -> String {
        let out = self.lab.run(host, &nft_lab(), args, &[]);
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success(),
            "nft-lab {args:?} in {}: {stdout}\n{}",
            host.name,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Runs the agent's `sync` inside the gateway with `desired`; returns its report.
    fn sync(&self, desired: &Value) -> Value {
        let path = self.tmp.path().join("desired.json");
        std::fs::write(&path, desired.to_string()).expect("write desired");
        let report: Value =
            serde_json::from_str(&self.run(&self.gw, &["sync", path.to_str().expect("utf-8")])).expect("json");
        assert_eq!(report["failed"], json!({}), "{report}");
        report
    }

    fn status(&self, desired: &Value) -> Value {
        let path = self.tmp.path().join("desired.json");
        std::fs::write(&path, desired.to_string()).expect("write desired");
        serde_json::from_str(&self.run(&self.gw, &["status", path.to_str().expect("utf-8")])).expect("json")
    }

    fn connect(&self, from_host: &Host, to: &str, from: Option<&str>) -> String {
        let mut args = vec!["connect", to];
        args.extend(from);
        self.run(from_host, &args)
    }

    fn nft(&self, args: &[&str]) -> String {
        let out = self.lab.run(&self.gw, std::path::Path::new("nft"), args, &[]);
        assert!(out.status.success(), "nft {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn nft_script(&self, script: &str) {
        let path = self.tmp.path().join("hand.nft");
        std::fs::write(&path, script).expect("write script");
        self.nft(&["-f", path.to_str().expect("utf-8")]);
    }

    /// Handles and counters of a chain's rules, as `nft -j` lists them.
    fn chain_rules(&self, chain: &str) -> Vec<Value> {
        let listing: Value =
            serde_json::from_str(&self.nft(&["-j", "list", "chain", "inet", "berqenas", chain])).expect("json");
        listing["nftables"]
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|i| i.get("rule").map(|r| r["handle"].clone()))
            .collect()
    }
}

fn exposure(id: &str, port: u16, public_port: u16, allow: &[&str], rate: u32, source: &str, enabled: bool) -> Value {
    json!({"id": id, "device_id": "d1", "device_address": "198.18.1.10", "port": port, "public_port": public_port,
           "protocol": "tcp", "allow": allow, "rate_per_second": rate, "source": source, "enabled": enabled})
}

fn desired(acme_exposures: Vec<Value>, acme_bandwidth: u64) -> Value {
    json!({
    "node": {"public_address": "198.51.100.10", "public_ports": {"first": 15000, "last": 15999},
             "protected_networks": ["203.0.113.10/32"]},
    "resolved": {"blocked.example.com": ["203.0.113.9"]},
    "tenants": [
      {"name": "acme", "revision": 1, "lifecycle": "run", "index": 1, "gateway": {
        "vpn_subnet": "198.18.1.0/24", "gateway_address": "198.18.1.1", "interface": "bqt1", "listen_port": 51821,
        "bandwidth_bps": acme_bandwidth, "exposures": acme_exposures,
        "rules": [
          {"id": "r1", "position": 1, "verdict": "deny", "sources": ["203.0.113.8/32"], "destinations": [],
           "ports": {"first": 8082, "last": 8082}, "protocol": "tcp", "vpn_required": false},
          {"id": "r2", "position": 2, "verdict": "allow", "sources": [], "destinations": ["203.0.113.0/24"],
           "ports": null, "protocol": "any", "vpn_required": false}],
        "blocked_domains": ["blocked.example.com"]}},
      {"name": "beta", "revision": 1, "lifecycle": "run", "index": 2, "gateway": {
        "vpn_subnet": "198.18.2.0/24", "gateway_address": "198.18.2.1", "interface": "bqt2", "listen_port": 51822,
        "exposures": [{"id": "b1", "device_id": "d9", "device_address": "198.18.2.10", "port": 8080, "public_port": 15090,
                       "protocol": "tcp", "allow": [], "rate_per_second": 0, "source": "nat", "enabled": true}],
        "rules": [], "blocked_domains": []}}
    ]})
}

fn acme_exposures(e1_enabled: bool) -> Vec<Value> {
    vec![
        // Two networks: an interval set in the rule (.7 inside the /31, .8 just outside it).
        exposure("e1", 8080, 15080, &["192.0.2.0/24", "203.0.113.6/31"], 0, "keep", e1_enabled),
        // More than 8 networks: an anonymous interval set in the rule (the client's /24 inside).
        exposure("e2", 8081, 15081, &LONG_ALLOWLIST, 5, "nat", true),
        exposure("e3", 8082, 15082, &[], 0, "nat", true),
    ]
}

const PUBLIC: &str = "198.51.100.10";
const LONG_ALLOWLIST: [&str; 9] = [
    "192.0.2.0/28",
    "192.0.2.16/28",
    "192.0.2.32/28",
    "192.0.2.48/28",
    "192.0.2.64/28",
    "192.0.2.80/28",
    "192.0.2.96/28",
    "192.0.2.112/28",
    "203.0.113.0/24",
];

#[test]
fn gateway_nft_exposes_isolates_blocks_and_repairs_with_real_packets() {
    let env = Env::new();
    let want = desired(acme_exposures(true), 0);
    let first = env.sync(&want);
    assert_eq!(first["applied"][0]["what"], "create table inet berqenas with its base chains and maps", "{first}");
    assert_eq!(first["transactions"], 1, "a cold start is one transaction: {first}");
    assert_eq!(env.sync(&want)["applied"], json!([]), "converged: the next sync changes nothing");

    // Exposures: keep shows the client's address, nat the gateway's tenant address.
    assert_eq!(env.connect(&env.client, &format!("{PUBLIC}:15080"), Some("203.0.113.7")), "203.0.113.7");
    assert_eq!(env.connect(&env.client, &format!("{PUBLIC}:15081"), Some("203.0.113.7")), "198.18.1.1");
    // Outside the allowlist: dropped.
    assert_eq!(env.connect(&env.client, &format!("{PUBLIC}:15080"), Some("203.0.113.8")), "timeout");
    // A deny rule blocks what it names (source .8, port 8082), and only that.
    assert_eq!(env.connect(&env.client, &format!("{PUBLIC}:15082"), Some("203.0.113.8")), "timeout");
    assert_eq!(env.connect(&env.client, &format!("{PUBLIC}:15082"), Some("203.0.113.7")), "198.18.1.1");
    // Tenant B reaches its own exposure, never A: not A's devices, not A's exposures.
    assert_eq!(env.connect(&env.client, &format!("{PUBLIC}:15090"), None), "198.18.2.1");
    assert_eq!(env.connect(&env.dev_b, "198.18.1.10:8080", None), "timeout");
    assert_eq!(env.connect(&env.dev_b, &format!("{PUBLIC}:15081"), None), "timeout");
    // The gateway itself: A's devices ping A's gateway address, but reach none of the host's
    // own services on it (one listens on every address of the gateway); B's are dropped there.
    assert!(env.pings(&env.dev_a, "198.18.1.1"), "a device pings its gateway address");
    assert!(!env.pings(&env.dev_b, "198.18.1.1"), "B's device cannot ping A's gateway address");
    assert_eq!(env.connect(&env.dev_a, "198.18.1.1:7000", None), "timeout", "host services are out of reach");
    assert_eq!(env.connect(&env.dev_b, "198.18.1.1:7000", None), "timeout");
    assert_eq!(env.connect(&env.client, "203.0.113.1:7000", Some("203.0.113.7")), "203.0.113.7", "it runs");
    assert_eq!(env.connect(&env.dev_a, "198.18.2.10:8080", None), "timeout");
    // A's rule lets its devices reach 203.0.113.0/24; the blocked domain's address stays dropped.
    assert_eq!(env.connect(&env.dev_a, "203.0.113.7:9000", None), "203.0.113.1", "masqueraded as the gateway");
    assert_eq!(env.connect(&env.dev_a, "203.0.113.9:9000", None), "timeout");
    // The operator's protected network stays out of reach although A's rule allows it.
    assert_eq!(env.connect(&env.dev_a, "203.0.113.10:9000", None), "timeout", "a protected network");
    // B has no such rule: its devices reach nothing outside.
    assert_eq!(env.connect(&env.dev_b, "203.0.113.7:9000", None), "timeout");

    // Rate: 5 new connections a second (burst 5) — a burst of 40 mostly dropped.
    let answered: usize = env.run(&env.client, &["burst", &format!("{PUBLIC}:15081"), "40"]).parse().expect("count");
    assert!((1..=15).contains(&answered), "{answered} of 40 answered at 5/s");

    // Who connected from where, and the counters.
    let status = env.status(&want);
    let e1 = &status["acme"][0];
    assert_eq!(e1["id"], "e1");
    assert!(e1["accepted"].as_u64().unwrap_or(0) > 0 && e1["dropped"].as_u64().unwrap_or(0) > 0, "{e1}");
    let sources = e1["sources"].as_array().expect("sources");
    assert_eq!(sources.len(), 1, "the dropped source is not 'seen': {e1}");
    assert_eq!(sources[0]["address"], "203.0.113.7");
    assert!(sources[0]["packets"].as_u64().unwrap_or(0) >= 3 && sources[0]["bytes"].as_u64().unwrap_or(0) > 0, "{e1}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64;
    let last = sources[0]["last_seen"].as_i64().expect("last seen");
    assert!((now - 60..=now + 1).contains(&last) && sources[0]["first_seen"].as_i64() <= Some(last), "{e1}");
    assert!(status["acme"][1]["dropped"].as_u64().unwrap_or(0) > 0, "rate drops counted: {status}");

    // Disable e1: only acme is replaced; beta's rules keep their handles.
    let beta_before = env.chain_rules("beta-in");
    let disabled = desired(acme_exposures(false), 0);
    let report = env.sync(&disabled);
    let tenants: Vec<&Value> = report["applied"].as_array().expect("applied").iter().map(|s| &s["tenant"]).collect();
    assert_eq!(tenants, [&json!("acme")], "{report}");
    // Nothing forwards it any more: the gateway itself refuses the port.
    let answer = env.connect(&env.client, &format!("{PUBLIC}:15080"), Some("203.0.113.7"));
    assert!(answer == "timeout" || answer.contains("refused"), "disabled exposure answered {answer}");
    assert_eq!(env.chain_rules("beta-in"), beta_before, "beta untouched");
    let counted = env.status(&disabled)["acme"][0]["accepted"].clone();
    assert_eq!(counted, e1["accepted"], "a disabled exposure keeps its counts");

    // Deleting A's chain by hand is repaired by the next sync; B is untouched.
    env.nft_script("delete element inet berqenas fwd_to { \"bqt1\" }\nflush chain inet berqenas acme-in\ndelete chain inet berqenas acme-in\n");
    assert_eq!(
        env.connect(&env.client, &format!("{PUBLIC}:15082"), Some("203.0.113.7")),
        "timeout",
        "A broken by hand"
    );
    let report = env.sync(&disabled);
    assert_eq!(
        report["applied"][0]["what"], "replace the tenant's chains, sets and dispatch (chain acme-in missing)",
        "{report}"
    );
    assert_eq!(report["applied"].as_array().map(Vec::len), Some(1), "{report}");
    assert_eq!(env.chain_rules("beta-in"), beta_before, "beta untouched");
    assert_eq!(env.connect(&env.client, &format!("{PUBLIC}:15082"), Some("203.0.113.7")), "198.18.1.1");
    // The whole table deleted by hand: recreated.
    env.nft(&["delete", "table", "inet", "berqenas"]);
    env.sync(&disabled);
    assert_eq!(env.connect(&env.client, &format!("{PUBLIC}:15082"), Some("203.0.113.7")), "198.18.1.1");
    assert_eq!(env.connect(&env.dev_b, "198.18.1.10:8080", None), "timeout");
    // Re-enabled: served again on the same port.
    env.sync(&want);
    assert_eq!(env.connect(&env.client, &format!("{PUBLIC}:15080"), Some("203.0.113.7")), "203.0.113.7");
    // Gone tenant: everything of beta removed, nothing of acme touched.
    let acme_before = env.chain_rules("acme-in");
    let mut only_acme = want.clone();
    only_acme["tenants"].as_array_mut().expect("tenants").pop();
    env.sync(&only_acme);
    let listing = env.nft(&["list", "table", "inet", "berqenas"]);
    assert!(!listing.contains("beta"), "{listing}");
    assert_eq!(env.chain_rules("acme-in"), acme_before);
    // vpn-required: the service on 8082 is for the subnet only, whatever its exposure says.
    let mut vpn_only = only_acme.clone();
    vpn_only["tenants"][0]["gateway"]["rules"].as_array_mut().expect("rules").push(json!(
        {"id": "r3", "position": 3, "verdict": "allow", "sources": [], "destinations": ["198.18.1.10/32"],
         "ports": {"first": 8082, "last": 8082}, "protocol": "tcp", "vpn_required": true}));
    env.sync(&vpn_only);
    assert_eq!(env.connect(&env.client, &format!("{PUBLIC}:15082"), Some("203.0.113.7")), "timeout");
    assert_eq!(env.connect(&env.client, &format!("{PUBLIC}:15081"), Some("203.0.113.7")), "198.18.1.1");
    // Suspended: no exposure, no way out; resumed: the same ports serve again.
    let mut suspended = vpn_only.clone();
    suspended["tenants"][0]["lifecycle"] = json!("suspended");
    env.sync(&suspended);
    let answer = env.connect(&env.client, &format!("{PUBLIC}:15081"), Some("203.0.113.7"));
    assert!(answer == "timeout" || answer.contains("refused"), "suspended exposure answered {answer}");
    assert_eq!(env.connect(&env.dev_a, "203.0.113.7:9000", None), "timeout");
    env.sync(&vpn_only);
    assert_eq!(env.connect(&env.client, &format!("{PUBLIC}:15081"), Some("203.0.113.7")), "198.18.1.1");
    assert_eq!(env.connect(&env.dev_a, "203.0.113.7:9000", None), "203.0.113.1");
    // Tables the agent does not own are never touched.
    env.nft(&["add", "table", "ip", "someone_else"]);
    env.sync(&want);
    env.nft(&["list", "table", "ip", "someone_else"]);
}

#[test]
fn nft_session_applies_refuses_a_change_whole_and_sees_another_writer() {
    let mut lab = Lab::new();
    let gw = lab.bare_host("gw");
    let out = lab.run(&gw, &nft_lab(), &["session"], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_str(stdout.trim()).expect("json");
    assert_eq!(v["applied"], "Applied", "{v}");
    assert!(v["refused"].as_str().is_some_and(|r| r.starts_with("Refused(")), "{v}");
    assert_eq!(v["after_other"], "Applied", "{v}");
    let table = v["table"].as_str().expect("table");
    let c = table.split("chain d").next().unwrap_or_default();
    assert!(c.contains("counter") && !c.contains("accept"), "the refused line left nothing: {table}");
    assert!(table.split("chain d").nth(1).is_some_and(|d| d.contains("accept")), "{table}");
}

#[test]
fn foreign_forward_drop_table_is_reported_as_a_condition() {
    let env = Env::new();
    let want = desired(acme_exposures(true), 0);
    env.sync(&want);
    assert_eq!(env.run(&env.gw, &["conditions"]), "[]");
    assert_eq!(env.connect(&env.client, &format!("{PUBLIC}:15081"), None), "198.18.1.1");
    env.nft_script("table ip foreign {\n chain guard { type filter hook forward priority 10; policy drop; }\n}\n");
    // Our accept does not override their drop: the exposure is cut, and the agent says why.
    assert_eq!(env.connect(&env.client, &format!("{PUBLIC}:15081"), None), "timeout");
    let conditions: Value = serde_json::from_str(&env.run(&env.gw, &["conditions"])).expect("json");
    assert_eq!(conditions[0]["kind"], "foreign-forward-drop", "{conditions}");
    let message = conditions[0]["message"].as_str().expect("message");
    assert!(message.contains("table ip foreign chain guard") && message.contains("Remedy"), "{message}");
    // The remedy the message names works.
    env.nft(&["insert", "rule", "ip", "foreign", "guard", "oifname", "bqt*", "accept"]);
    env.nft(&["insert", "rule", "ip", "foreign", "guard", "iifname", "bqt*", "accept"]);
    assert_eq!(env.connect(&env.client, &format!("{PUBLIC}:15081"), None), "198.18.1.1");
}

#[test]
fn bandwidth_limit_holds_within_ten_percent_for_a_tcp_stream() {
    let mut env = Env::new();
    let limit = 20_000_000u64;
    env.serve(&env.dev_a.clone(), "sink-a", &["sink", "7000"]);
    env.serve(&env.client.clone(), "sink-outside", &["sink", "7001"]);
    let mut exposures = acme_exposures(true);
    exposures.push(exposure("bw", 7000, 15700, &[], 0, "nat", true));
    env.sync(&desired(exposures, limit));
    let rate = |host: &Host, to: &str| -> f64 {
        let out: Value = serde_json::from_str(&env.run(host, &["stream", to, "7"])).expect("json");
        eprintln!("stream to {to}: {out}");
        out["steady_bits_per_second"].as_f64().expect("rate")
    };
    let inbound = rate(&env.client, &format!("{PUBLIC}:15700"));
    let outbound = rate(&env.dev_a, "203.0.113.7:7001");
    eprintln!("bandwidth limit {limit} b/s: inbound {inbound:.0} b/s, outbound {outbound:.0} b/s");
    for (what, r) in [("to the device", inbound), ("from the device", outbound)] {
        let ratio = r / limit as f64;
        assert!((0.9..=1.1).contains(&ratio), "{what}: {r:.0} b/s is {ratio:.2} of the {limit} b/s limit");
    }
}
