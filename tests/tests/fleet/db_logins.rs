//! PostgreSQL logins of tenant roles as security events, end to end: a real PostgreSQL writing
//! its jsonlog, the db node's agent reading it over SQL, the coordinator recording each login in
//! the tenant's audit trail and forwarding it to a SIEM (plaintext syslog to a receiver in the
//! coordinator's lab host). The wrong password used is a marker that must appear nowhere.

use crate::db::{setup_full, Options};
use berqenas_tests::postgres::LOGIN_LOG;
use berqenas_tests::wait_for;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The wrong password tried; it must not reach the audit trail, the SIEM or any log.
const MARKER: &str = "Marker-Pw-5f1c9a77e2";

/// What the SIEM receiver got: each message, in arrival order.
type Received = Arc<Mutex<Vec<String>>>;

/// A plaintext syslog receiver (RFC 6587 octet counting) listening on 127.0.0.1 inside network
/// namespace `netns`: every message's JSON part, in arrival order.
fn siem_receiver(netns: &str) -> (u16, Received) {
    let seen: Received = Arc::default();
    let (tx, rx) = std::sync::mpsc::channel();
    let (netns, kept) = (netns.to_string(), seen.clone());
    std::thread::spawn(move || {
        use std::os::fd::AsFd;
        let file = std::fs::File::open(format!("/run/netns/{netns}")).expect("netns");
        rustix::thread::move_into_link_name_space(file.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))
            .expect("setns into the coordinator's namespace");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the SIEM receiver");
        tx.send(listener.local_addr().expect("addr").port()).expect("port");
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let kept = kept.clone();
            std::thread::spawn(move || {
                let mut io = BufReader::new(conn);
                loop {
                    let mut len = Vec::new();
                    if io.read_until(b' ', &mut len).unwrap_or(0) == 0 {
                        return;
                    }
                    let Some(len) = std::str::from_utf8(&len).ok().and_then(|l| l.trim().parse::<usize>().ok()) else {
                        return;
                    };
                    let mut msg = vec![0u8; len];
                    if io.read_exact(&mut msg).is_err() {
                        return;
                    }
                    let msg = String::from_utf8_lossy(&msg).into_owned();
                    kept.lock().expect("lock").push(msg);
                }
            });
        }
    });
    (rx.recv_timeout(Duration::from_secs(10)).expect("the receiver's port"), seen)
}

fn actions(entries: &Value, prefix: &str) -> Vec<Value> {
    entries
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"].as_str().is_some_and(|a| a.starts_with(prefix)))
        .cloned()
        .collect()
}

#[test]
fn tenant_db_logins_and_failures_reach_its_audit_and_the_siem_without_the_password() {
    let siem: Arc<std::sync::OnceLock<Received>> = Arc::default();
    let hook = siem.clone();
    let options = Options {
        pg_conf: LOGIN_LOG,
        serve_args: Some(Box::new(move |c1| {
            let (port, seen) = siem_receiver(&c1.netns);
            hook.set(seen).expect("one receiver");
            vec!["--siem-target".into(), format!("syslog+tcp://127.0.0.1:{port}"), "--siem-insecure-plaintext".into()]
        })),
    };
    let (env, ()) = setup_full(options, |_, _, _, _| ());
    let siem = siem.get().expect("the receiver").clone();
    let acme = env.create("acme", &["--vpn", "disabled"]);
    env.create("globex", &["--vpn", "disabled"]);
    let (user, password) = (acme["db_user"].as_str().expect("user"), acme["db_password"].as_str().expect("password"));

    // One login with an application name that tries to break a JSON line, one wrong password.
    let injected_app = "app\",\"action\":\"forged\"}\n{\"x\":\"";
    let out = env.lab.run(
        &env.app,
        &env.pg.bin.join("psql"),
        &["-h", &env.pg.host.addr.to_string(), "-U", user, "-d", "postgres", "-tAc", "SELECT 1"],
        &[("PGPASSWORD", password), ("PGAPPNAME", injected_app), ("PGCONNECT_TIMEOUT", "5")],
    );
    assert!(out.status.success(), "login: {}", String::from_utf8_lossy(&out.stderr));
    let err = env.as_tenant(user, MARKER, &["SELECT 1"]).expect_err("a wrong password");
    assert!(err.contains("password authentication failed"), "{err}");
    // A made-up role name carrying the marker is nobody's login.
    let forged = format!("tenant_acme_user\"\n{MARKER}");
    assert!(env.as_tenant(&forged, MARKER, &["SELECT 1"]).is_err());

    // Within a few report intervals: one success and one failure in acme's trail, by the db node,
    // from the app host's address.
    let logins = wait_for("acme's logins in its audit trail", Duration::from_secs(30), || {
        let trail = env.json(&["audit", "list", "--tenant", "acme"]);
        let logins = actions(&trail, "db.login");
        (logins.len() >= 2).then_some(logins)
    });
    assert_eq!(logins.len(), 2, "{logins:#?}");
    let (ok, failed) = (&logins[0], &logins[1]);
    assert_eq!((ok["action"].as_str(), failed["action"].as_str()), (Some("db.login"), Some("db.login-failed")));
    let app = format!("{}:", env.app.addr);
    for e in &logins {
        assert_eq!(e["target"], "tenant/acme", "{e}");
        assert_eq!(e["outcome"], "ok", "{e}");
        assert!(e["actor"].as_str().is_some_and(|a| a.starts_with("node/")), "{e}");
        assert_eq!(e["details"]["role"], "tenant_acme_user", "{e}");
        assert!(e["details"]["client"].as_str().is_some_and(|c| c.starts_with(&app)), "{e}");
    }
    assert_eq!(failed["details"]["failure"], "wrong password", "{failed}");
    assert!(ok["details"].get("failure").is_none(), "{ok}");

    // Customer keys: acme's own view has them; globex's key sees none and cannot look at acme's.
    let key = |t: &str| {
        let k = env.json(&["apikey", "create", "--role", "customer", "--tenant", t]);
        k["token"].as_str().expect("token").to_string()
    };
    let (acme_key, globex_key) = (key("acme"), key("globex"));
    let (status, own) = env.get_as(&acme_key, "/api/v1/tenant/acme/audit");
    assert_eq!((status, actions(&own, "db.login").len()), (200, 2), "{own}");
    let (status, theirs) = env.get_as(&globex_key, "/api/v1/tenant/globex/audit");
    assert_eq!((status, actions(&theirs, "db.login").len()), (200, 0), "{theirs}");
    assert_eq!(env.get_as(&globex_key, "/api/v1/tenant/acme/audit").0, 403);

    // The SIEM gets both as JSON with their audit sequence numbers.
    let seqs: Vec<u64> = logins.iter().map(|e| e["seq"].as_u64().expect("seq")).collect();
    let forwarded = wait_for("the logins at the SIEM", Duration::from_secs(30), || {
        let got: Vec<Value> = siem
            .lock()
            .expect("lock")
            .iter()
            .map(|m| serde_json::from_str(&m[m.find('{').expect("a JSON part")..]).expect("one JSON object"))
            .filter(|e: &Value| e["action"].as_str().is_some_and(|a| a.starts_with("db.login")))
            .collect();
        (got.len() >= 2).then_some(got)
    });
    let forwarded_seqs: Vec<u64> = forwarded.iter().map(|e| e["seq"].as_u64().expect("seq")).collect();
    assert_eq!(forwarded_seqs, seqs);
    assert_eq!(forwarded[1]["details"]["failure"], "wrong password");

    // The other tenant's trail shows none of them; each was recorded once, although the agent
    // repeats a login in its reports until the coordinators acknowledge it.
    assert!(actions(&env.json(&["audit", "list", "--tenant", "globex"]), "db.login").is_empty());
    assert_eq!(actions(&env.json(&["audit", "list"]), "db.login").len(), 2, "each recorded once");

    // The marker and the injected application name are nowhere: trail, SIEM, logs.
    let export = env.cli(&["audit", "export", "--format", "jsonl"]);
    assert!(export.status.success());
    let export = String::from_utf8_lossy(&export.stdout);
    let messages = siem.lock().expect("lock").join("\n");
    for (what, text) in [("the audit export", export.as_ref()), ("the SIEM", messages.as_str())] {
        assert!(!text.contains(MARKER), "the password marker is in {what}");
        assert!(!text.contains("forged"), "the injected application name is in {what}");
    }
    for proc in &env.procs {
        assert!(!proc.log_text().contains(MARKER), "the password marker is in a log");
    }
    let verify = env.json(&["audit", "verify"]);
    assert_eq!(verify["ok"], true, "{verify}");
    // Logins are seen: the node reports no `db-logins-unobserved`.
    let nodes = env.json(&["node", "list"]);
    assert!(!nodes.to_string().contains("db-logins-unobserved"), "{nodes}");
}
