//! Issue 11's full path with the real binaries, in the gateway end-to-end lab
//! (`gateway_e2e::env`): a coordinator; a db node agent on PostgreSQL (wal_level = logical) with
//! its realtime port (`--realtime-listen`) on the coordinator host's lab address; the gateway
//! agent with wireguard-go. Then: `tenant create` → `device token create` → `berqenas-device
//! enroll` in a device namespace → `up` → a ping of the gateway address through WireGuard →
//! `expose add --source keep` → an outside client (203.0.113.7) reaches a TCP service on the
//! device, which sees the client's own address → `berqenas-device send` → the row is in
//! `tenant_acme.events` → a subscriber holding a customer key (SSE, from the outside client's
//! namespace) receives it.
//!
//! The device reaches the realtime port over the lab network (192.0.2.0/24), not through the
//! tunnel: the tunnel carries the tenant's subnet only, and the db node is not in it.

use crate::gateway_e2e::env::{path, text, Env, CONVERGE};
use crate::harness::agent_bin;
use berqenas_tests::postgres::Postgres;
use berqenas_tests::realtime::{node_http_client, SseReader};
use berqenas_tests::{wait_for, workspace_bin};
use std::sync::mpsc;
use std::time::Duration;

/// Deletes the device's link at the end, passed or failed (wireguard-go exits with it).
struct Link(String, String);

impl Drop for Link {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["-n", &self.0, "link", "del", &self.1]).output();
    }
}

enum Sub {
    Subscribed,
    Event(String),
    Failed(String),
}

/// A tenant's app in network namespace `netns`: subscribes to `url` with `key` (retrying while
/// the db node learns the key and starts the feed), then passes on every event it receives.
fn subscriber(netns: String, url: String, ca: String, key: String) -> mpsc::Receiver<Sub> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        use std::os::fd::AsFd;
        let file = std::fs::File::open(format!("/run/netns/{netns}")).expect("netns");
        rustix::thread::move_into_link_name_space(file.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))
            .expect("setns into the client's namespace");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let http = node_http_client(&ca);
            let deadline = tokio::time::Instant::now() + CONVERGE * 2;
            let resp = loop {
                let last = match http.get(&url).bearer_auth(&key).send().await {
                    Ok(r) if r.status() == 200 => break r,
                    Ok(r) => format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
                    Err(e) => format!("{e:#}"),
                };
                if tokio::time::Instant::now() > deadline {
                    let _ = tx.send(Sub::Failed(last));
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            let _ = tx.send(Sub::Subscribed);
            let mut reader = SseReader::new(resp);
            while let Some((_, data)) = reader.next(Duration::from_secs(300)).await {
                if tx.send(Sub::Event(data)).is_err() {
                    return;
                }
            }
        });
    });
    rx
}

#[test]
fn device_full_path_enroll_tunnel_expose_keep_send_row_and_subscriber() {
    let (mut env, hosts, pg) = Env::with_db(&["dv"], |env| {
        let coord = env.coord.clone();
        let pg = Postgres::start(&env.lab, &coord, env.tmp.path());
        let listen = format!("{}:7443", coord.addr);
        let url = pg.url();
        let args =
            ["--driver", "postgres", "--driver-url", &url, "--realtime-listen", &listen, "--resync-interval", "2s"];
        let dir = env.join(&coord, "db", "db", &args);
        let config = dir.join("agent.toml");
        let metrics = format!("{}:9464", coord.addr);
        let run = ["run", "--config", path(&config), "--metrics-listen", &metrics];
        let db = env.lab.spawn(&coord, "agent-db", &agent_bin(), &run, env.tmp.path());
        env.procs.push(db);
        pg
    });
    let host = hosts[0].clone();
    let interface = format!("bqz{}", std::process::id() % 100_000);
    let _link = Link(host.netns.clone(), interface.clone());

    // The tenant, placed on the db node (PostgreSQL) and the gateway.
    env.json(&["tenant", "create", "--name", "acme", "--vpn", "enabled", "--wait", "--wait-timeout", "60s"]);
    let nodes = env.json(&["node", "list"]);
    let realtime = format!("{}:7443", env.coord.addr);
    assert!(nodes.to_string().contains(&realtime), "the db node advertises its realtime port: {nodes}");

    // A TCP service on the device host, answering each connection with the address it sees.
    env.serve(&host, "device-service", &["8080"]);

    // The tenant's app subscribes with a customer key, from the outside client's namespace.
    let key = env.json(&["apikey", "create", "--role", "customer", "--tenant", "acme"]);
    let key = key["token"].as_str().unwrap_or_else(|| panic!("customer key: {key}")).to_string();
    let ca = std::fs::read_to_string(env.tmp.path().join("db").join("ca.pem")).expect("the cluster CA");
    let url = format!("https://{realtime}/v1/tenants/acme/events");
    let events = subscriber(env.client.netns.clone(), url, ca, key);
    match events.recv_timeout(CONVERGE * 3) {
        Ok(Sub::Subscribed) => {}
        Ok(Sub::Failed(last)) => panic!("the subscriber was refused: {last}"),
        _ => panic!("the subscriber never answered"),
    }

    // Token → enroll in the device's namespace → up → ping of the gateway through WireGuard.
    let bin = workspace_bin("berqenas-device");
    let state = env.tmp.path().join("plc1-state");
    let sd = path(&state).to_string();
    let device = |args: &[&str]| {
        let mut all = vec!["--state-dir", sd.as_str()];
        all.extend_from_slice(args);
        env.lab.run(&host, &bin, &all, &[("BERQENAS_DEVICE_WG", "userspace")])
    };
    let mut enroll = env.enroll_args("acme", "plc1");
    enroll.extend(["--interface".to_string(), interface.clone()]);
    let out = device(&enroll.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "enroll: {}", text(&out));
    let stored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("device.json")).expect("device.json")).expect("json");
    assert_eq!(stored["realtime_endpoint"], realtime.as_str(), "enrollment names the db node's realtime port");
    let device_id = stored["device_id"].as_str().expect("device id").to_string();
    wait_for("up with the gateway's key", CONVERGE, || device(&["up"]).status.success().then_some(()));
    let gateway = env.gateway_address("acme");
    wait_for("a ping of the gateway through the enrolled device's tunnel", CONVERGE, || {
        env.pings(&host, &gateway).then_some(())
    });

    // The device's service, exposed with --source keep; `up` again takes the return
    // routing the coordinator now sends; the outside client is seen with its own address.
    let (_, endpoint) = env.expose("acme", "plc1", "8080", &["--source", "keep"]);
    let out = device(&["up"]);
    assert!(out.status.success(), "up with source keep: {}", text(&out));
    let rules = env.sh(&host, "ip", &["rule", "show"]);
    assert!(rules.contains("lookup 51820"), "the source-keep rule: {rules}");
    wait_for("the gateway through the keep tunnel", CONVERGE, || env.pings(&host, &gateway).then_some(()));
    env.connects(&env.client, &endpoint, Some("203.0.113.7"), "203.0.113.7", "the device sees the client's address");

    // send: acknowledged only after commit; the row is in tenant_acme.events; the subscriber
    // receives it.
    let out = wait_for("send acknowledged by the db node's ingest", CONVERGE, || {
        let out = device(&["send", "--type", "reading", "--payload", r#"{"celsius":21.5}"#]);
        out.status.success().then_some(out)
    });
    let ack: serde_json::Value = serde_json::from_slice(&out.stdout).expect("send prints JSON");
    assert_eq!(ack["status"], "acknowledged", "{ack}");
    let id = ack["id"].as_str().expect("event id").to_string();
    let sql = format!(
        "SELECT device_id || '|' || event_type || '|' || payload::text FROM tenant_acme.events WHERE id = '{id}'"
    );
    let row = pg.psql(&env.lab, &env.coord, &sql).expect("psql");
    assert_eq!(row.replace(' ', ""), format!(r#"{device_id}|reading|{{"celsius":21.5}}"#), "the row of event {id}");
    let got = wait_for("the subscriber to receive the event", Duration::from_secs(30), || {
        match events.recv_timeout(Duration::from_millis(200)) {
            Ok(Sub::Event(data)) => {
                let v: serde_json::Value = serde_json::from_str(&data).expect("event JSON");
                (v["id"] == id.as_str()).then_some(v)
            }
            _ => None,
        }
    });
    assert_eq!((got["device_id"].as_str(), got["type"].as_str()), (Some(device_id.as_str()), Some("reading")), "{got}");
    assert_eq!(got["payload"]["celsius"], 21.5, "{got}");

    // The db agent's metrics count what its ingest stored: as many events as the table holds,
    // in at least one committed transaction, none failed.
    let rows = pg.psql(&env.lab, &env.coord, "SELECT count(*) FROM tenant_acme.events").expect("psql");
    let metrics = env.sh(&env.coord, "curl", &["-sf", &format!("http://{}:9464/metrics", env.coord.addr)]);
    let sample =
        |name: &str| metrics.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok());
    assert_eq!(sample("berqenas_ingest_events_total"), rows.trim().parse::<f64>().ok(), "{metrics}");
    assert_eq!(sample("berqenas_ingest_failed_batches_total"), Some(0.0), "{metrics}");
    assert!(sample("berqenas_ingest_batch_size_count") >= Some(1.0), "{metrics}");
    assert!(sample("berqenas_ingest_commit_duration_seconds_count") >= Some(1.0), "{metrics}");
}
