//! The gateway role's control plane end to end: a gateway joins with its public address and port
//! range, `node list` shows them, exposures take public ports from that range, and the gateway
//! agent receives peers and exposures in its desired state.

use crate::harness::Fleet;
use berqenas_tests::wait_for;
use std::time::Duration;

const KEY: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

#[test]
fn a_gateway_joined_with_public_ports_hosts_exposures_from_its_range() {
    let mut f = Fleet::new(1);
    // Public settings are for the gateway role only: refused before anything is sent.
    let (token, pin) = f.token("db", &[]);
    let dir = f.tmp.path().join("dbgw");
    let dir = dir.to_str().expect("utf-8");
    let out = f.join_with_driver(
        "dbgw",
        0,
        &token,
        &pin,
        "db",
        "",
        &[
            "--driver",
            "dir",
            "--driver-path",
            dir,
            "--public-address",
            "198.51.100.10",
            "--public-ports",
            "15000-15001",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("gateway role only"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let tenants = f.tmp.path().join("gw").join("tenants");
    let tenants = tenants.to_str().expect("utf-8").to_string();
    let gw = f.add_agent_with_driver(
        "gw",
        "gateway,db",
        "",
        &[
            "--driver",
            "dir",
            "--driver-path",
            &tenants,
            "--public-address",
            "198.51.100.10",
            "--public-ports",
            "15000-15001",
        ],
    );
    let nodes = f.json(0, &["node", "list"]);
    let node = &nodes[0];
    assert_eq!(node["gateway"]["settings"]["public_address"], "198.51.100.10", "{node}");
    assert_eq!(node["gateway"]["settings"]["public_port_first"], 15000);
    assert_eq!(node["gateway"]["settings"]["public_port_last"], 15001);
    let table = f.ok(0, &["node", "list"]);
    assert!(table.contains("198.51.100.10 ports 15000-15001"), "{table}");

    f.json(0, &["tenant", "create", "--name", "acme"]);
    f.json(0, &["device", "add", "--tenant", "acme", "--name", "plc1", "--public-key", KEY]);
    let x = f.json(
        0,
        &[
            "expose",
            "add",
            "--tenant",
            "acme",
            "--device",
            "plc1",
            "--port",
            "5432",
            "--source",
            "keep",
            "--allow",
            "203.0.113.7/32",
            "--rate",
            "100/s",
        ],
    );
    assert_eq!(x["public_port"], 15000);
    assert_eq!(x["endpoint"], "198.51.100.10:15000");
    let second = f.json(0, &["expose", "add", "--tenant", "acme", "--device", "plc1", "--port", "22"]);
    assert_eq!(second["public_port"], 15001);
    let full = f.cli(0, &["expose", "add", "--tenant", "acme", "--device", "plc1", "--port", "80"]);
    assert!(!full.status.success());
    assert!(
        String::from_utf8_lossy(&full.stderr).contains("are all taken (429)"),
        "{}",
        String::from_utf8_lossy(&full.stderr)
    );
    let id = x["id"].as_str().expect("id").to_string();
    f.json(0, &["expose", "disable", &id, "--tenant", "acme"]);
    let again = f.json(0, &["expose", "enable", &id, "--tenant", "acme"]);
    assert_eq!(again["public_port"], 15000, "the port survives disable/enable");

    // The gateway's desired state carries the peer and the exposures with the device's address.
    wait_for("the gateway to receive the exposures", Duration::from_secs(15), || {
        let file = f.agents[gw].tenant_file("acme")?;
        let g = &file["gateway"];
        (g["peers"].as_array()?.len() == 1 && g["exposures"].as_array()?.len() == 2).then(|| file.clone())
    });
    let file = f.agents[gw].tenant_file("acme").expect("file");
    let g = &file["gateway"];
    assert_eq!(g["peers"][0]["address"], "198.18.1.2", "{g}");
    let keep = g["exposures"].as_array().into_iter().flatten().find(|e| e["public_port"] == 15000).expect("exposure");
    assert_eq!(keep["device_address"], "198.18.1.2", "{keep}");

    // The device config names the endpoint; the dir driver reports no public key, so it says so.
    let out = f.cli(0, &["device", "config", "plc1", "--tenant", "acme"]);
    let config = String::from_utf8_lossy(&out.stdout);
    assert!(config.contains("Endpoint = 198.51.100.10:51821"), "{config}");
    assert!(
        config.contains("Table = off") && config.contains("AllowedIPs = 0.0.0.0/0"),
        "keep needs policy routing: {config}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("public key"), "{}", String::from_utf8_lossy(&out.stderr));
}
