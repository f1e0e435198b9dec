//! Devices, exposures and firewall rules through the CLI and REST API: allocation as users see
//! it, bad input refused with a clear 4xx that changes nothing, and customer keys limited to their
//! own tenant.

use crate::harness::{stderr, Cluster};
use serde_json::Value;

const KEY_A: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
const KEY_B: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";
const KEY_C: &str = "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=";

fn refused(c: &Cluster, key: Option<&str>, args: &[&str], want: &str) {
    let out = match key {
        Some(k) => c.cli_as(0, k, args),
        None => c.cli(0, args),
    };
    assert!(!out.status.success(), "`{}` should fail", args.join(" "));
    // `want` is "text (status)": the message names the text, the line ends with the status.
    let (text, status) = want.rsplit_once(" (").map_or(("", want), |(t, s)| (t, s));
    let status = format!("({}", status.trim_start_matches('('));
    let err = stderr(&out);
    assert!(err.contains(text) && err.trim_end().ends_with(&status), "`{}` wants {want}: {err}", args.join(" "));
}

fn devices(c: &Cluster, tenant: &str) -> Value {
    c.json(0, &["device", "list", "--tenant", tenant])
}

#[test]
fn devices_get_addresses_configs_and_refuse_bad_input_without_changing_anything() {
    let c = Cluster::single();
    c.json(0, &["tenant", "create", "--name", "acme"]);
    c.json(0, &["tenant", "create", "--name", "globex"]);
    let plc = c.json(0, &["device", "add", "--tenant", "acme", "--name", "plc1", "--public-key", KEY_A]);
    assert_eq!(plc["address"], "198.18.1.2");
    assert_eq!(plc["enabled"], true);
    let cam = c.json(
        0,
        &["device", "add", "--tenant", "acme", "--name", "cam", "--public-key", KEY_B, "--address", "198.18.1.10"],
    );
    assert_eq!(cam["address"], "198.18.1.10");

    let before = devices(&c, "acme");
    for (args, want) in [
        (vec!["--name", "x", "--public-key", "nope"], "(400)"),
        (vec!["--name", "plc1", "--public-key", KEY_C], "already has a device plc1 (409)"),
        (vec!["--name", "x", "--public-key", KEY_A], "already registered to device plc1 (409)"),
        (vec!["--name", "x", "--public-key", KEY_C, "--address", "198.18.1.1"], "tenant's gateway (409)"),
        (vec!["--name", "x", "--public-key", KEY_C, "--address", "198.18.1.255"], "broadcast address (409)"),
        (vec!["--name", "x", "--public-key", KEY_C, "--address", "198.18.2.5"], "outside the tenant subnet (409)"),
        (vec!["--name", "x", "--public-key", KEY_C, "--address", "198.18.1.10"], "taken by another device (409)"),
        (vec!["--name", "Bad Name", "--public-key", KEY_C], "device name (400)"),
    ] {
        let mut all = vec!["device", "add", "--tenant", "acme"];
        all.extend(args);
        refused(&c, None, &all, want);
    }
    assert_eq!(devices(&c, "acme"), before, "refusals change nothing");

    // The config names what is not known yet: no gateway node has joined here.
    let out = c.cli(0, &["device", "config", "plc1", "--tenant", "acme", "--format", "wg-quick"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let config = String::from_utf8_lossy(&out.stdout);
    assert!(config.contains("Address = 198.18.1.2/32"), "{config}");
    assert!(config.contains("AllowedIPs = 198.18.1.0/24") && config.contains("PersistentKeepalive = 25"), "{config}");
    assert!(config.contains("PrivateKey = <"), "a placeholder, never a key: {config}");
    assert!(stderr(&out).contains("no endpoint is known"), "{}", stderr(&out));

    let disabled = c.json(0, &["device", "disable", "plc1", "--tenant", "acme"]);
    assert_eq!((disabled["enabled"].clone(), disabled["address"].clone()), (false.into(), "198.18.1.2".into()));
    refused(&c, None, &["device", "disable", "plc1", "--tenant", "acme"], "already disabled (409)");
    c.json(0, &["device", "enable", "plc1", "--tenant", "acme"]);
    refused(&c, None, &["device", "show", "nope", "--tenant", "acme"], "(404)");

    // A firewall rule naming the device keeps it from being removed until the rule goes.
    let rule = c.json(
        0,
        &[
            "firewall",
            "add",
            "--tenant",
            "acme",
            "--device",
            "plc1",
            "--ports",
            "22",
            "--proto",
            "tcp",
            "--verdict",
            "deny",
        ],
    );
    let id = rule[0]["id"].as_str().expect("rule id").to_string();
    assert_eq!(rule[0]["destinations"][0], "device/plc1");
    refused(&c, None, &["device", "rm", "plc1", "--tenant", "acme"], "firewall rules (409)");
    refused(&c, None, &["firewall", "add", "--tenant", "acme", "--source", "203.0.113.7/33"], "(400)");
    refused(&c, None, &["firewall", "add", "--tenant", "acme", "--ports", "0"], "(400)");
    refused(&c, None, &["firewall", "add", "--tenant", "acme", "--ports", "22", "--proto", "any"], "tcp or udp (400)");
    refused(&c, None, &["firewall", "add", "--tenant", "acme", "--ports", "22"], "tcp or udp (400)");
    assert_eq!(c.json(0, &["firewall", "list", "--tenant", "acme"]).as_array().map(Vec::len), Some(1));
    // Host bits are cleared, and the answer says what was stored.
    let masked = c.json(0, &["firewall", "add", "--tenant", "acme", "--source", "203.0.113.7/24", "--verdict", "deny"]);
    assert_eq!(masked[0]["sources"][0], "203.0.113.0/24", "{masked}");
    let masked_id = masked[0]["id"].as_str().expect("rule id").to_string();
    c.json(0, &["firewall", "rm", &masked_id, "--tenant", "acme"]);
    c.json(0, &["firewall", "rm", &id, "--tenant", "acme"]);
    c.json(0, &["device", "rm", "plc1", "--tenant", "acme"]);
    let again = c.json(0, &["device", "add", "--tenant", "acme", "--name", "plc2", "--public-key", KEY_A]);
    assert_eq!(again["address"], "198.18.1.2", "a removed device's address is free again");

    // Domains, bandwidth and device-to-device.
    assert_eq!(
        c.json(0, &["firewall", "block-domain", "Example.COM", "--tenant", "acme"]),
        serde_json::json!(["example.com"])
    );
    refused(&c, None, &["firewall", "block-domain", "example.com", "--tenant", "acme"], "already blocked (409)");
    refused(&c, None, &["firewall", "block-domain", "x;flush ruleset", "--tenant", "acme"], "(400)");
    let t = c.json(0, &["tenant", "update", "acme", "--bandwidth", "50mbit", "--device-to-device", "deny"]);
    assert_eq!((t["bandwidth_bps"].clone(), t["device_to_device"].clone()), (50_000_000.into(), false.into()));
    refused(&c, None, &["tenant", "update", "acme", "--bandwidth", "50mb"], "(400)");
    assert_eq!(c.json(0, &["tenant", "update", "acme", "--bandwidth", "none"])["bandwidth_bps"], 0);

    // An exposure needs a gateway node with a public port range; none has joined here.
    refused(
        &c,
        None,
        &["expose", "add", "--tenant", "acme", "--device", "plc2", "--port", "5432"],
        "gateway node (409)",
    );
    refused(
        &c,
        None,
        &["expose", "add", "--tenant", "acme", "--device", "ghost", "--port", "5432"],
        "has no device ghost (409)",
    );

    let audit = c.json(0, &["audit", "list", "--tenant", "acme", "--limit", "1000"]);
    let actions: Vec<&str> = audit.as_array().into_iter().flatten().filter_map(|e| e["action"].as_str()).collect();
    for a in ["device.add", "device.disable", "device.rm", "firewall.add", "firewall.rm", "firewall.block-domain"] {
        assert!(actions.contains(&a), "{a} audited under the tenant: {actions:?}");
    }
}

#[test]
fn a_customer_key_manages_its_own_tenants_devices_and_nothing_else() {
    let c = Cluster::single();
    c.json(0, &["tenant", "create", "--name", "acme"]);
    c.json(0, &["tenant", "create", "--name", "globex"]);
    let key = |t: &str| {
        let k = c.json(0, &["apikey", "create", "--role", "customer", "--tenant", t]);
        k["token"].as_str().expect("token").to_string()
    };
    let (acme, globex) = (key("acme"), key("globex"));
    let out = c.cli_as(
        0,
        &acme,
        &["device", "add", "--tenant", "acme", "--name", "plc1", "--public-key", KEY_A, "--output", "json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    c.json(0, &["device", "add", "--tenant", "globex", "--name", "cam", "--public-key", KEY_B]);
    let globex_before = devices(&c, "globex");
    refused(&c, Some(&acme), &["device", "add", "--tenant", "globex", "--name", "x", "--public-key", KEY_C], "(403)");
    refused(&c, Some(&acme), &["device", "rm", "cam", "--tenant", "globex"], "(403)");
    refused(&c, Some(&acme), &["device", "list", "--tenant", "globex"], "(403)");
    refused(&c, Some(&acme), &["device", "config", "cam", "--tenant", "globex"], "(403)");
    refused(&c, Some(&acme), &["firewall", "add", "--tenant", "globex", "--ports", "22", "--proto", "tcp"], "(403)");
    refused(&c, Some(&acme), &["firewall", "block-domain", "example.com", "--tenant", "globex"], "(403)");
    refused(&c, Some(&globex), &["device", "disable", "plc1", "--tenant", "acme"], "(403)");
    refused(&c, Some(&acme), &["tenant", "update", "acme", "--bandwidth", "1gbit"], "(403)");
    assert_eq!(devices(&c, "globex"), globex_before, "nothing changed for globex");
    assert!(c.json(0, &["firewall", "list", "--tenant", "globex"]).as_array().is_some_and(Vec::is_empty));
    let out = c.cli_as(
        0,
        &acme,
        &["firewall", "add", "--tenant", "acme", "--device", "plc1", "--ports", "22", "--proto", "tcp"],
    );
    assert!(out.status.success(), "own tenant: {}", stderr(&out));
}
