//! The usage ledger end to end (issue 12): a real coordinator and a real db agent on a real
//! PostgreSQL; known activity (rows written, a session held open, API calls with the tenant's
//! key) shows in `usage show --output json` within two report intervals, a customer key reads
//! only its own tenant's usage, and a malformed period is refused with a clear error.

use crate::harness::{coordinator_bin, Fleet};
use berqenas_tests::postgres::Postgres;
use berqenas_tests::{coordinator, wait_for, Proc};
use serde_json::Value;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// `serve --report-refresh`: the coordinator writes an agent's usage samples this often (the
/// agent reconciles, and reports, every second).
const REPORT_INTERVAL: Duration = Duration::from_secs(2);

/// Restarts coordinator 0 with a short report refresh and API-call flush.
fn restart_with_short_intervals(f: &mut Fleet) {
    f.stop_coord(0);
    let c = &mut f.coords[0];
    let mut args = coordinator::serve_args(&c.dir, c.id, &c.listen());
    args.extend(["--report-refresh", "2s", "--usage-flush-interval", "1s"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    c.proc = Some(Proc::spawn("coordinator-1-usage", &coordinator_bin(), &args, f.tmp.path()));
    let (api, node) = (c.api, c.node);
    for (what, port) in [("coordinator API", api), ("node listener", node)] {
        wait_for(what, Duration::from_secs(20), || TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ()));
    }
}

fn usage_json(f: &Fleet, key: &str, args: &[&str]) -> std::process::Output {
    let endpoint = f.coords[0].endpoint();
    let mut all = vec!["usage", "show", "--output", "json"];
    all.extend_from_slice(args);
    berqenas_tests::run(&coordinator_bin(), &all, &[("BERQENAS_ENDPOINT", &endpoint), ("BERQENAS_API_KEY", key)])
}

fn ok_json(out: std::process::Output) -> Value {
    assert!(out.status.success(), "usage show failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

#[test]
fn usage_of_known_activity_shows_within_two_report_intervals_and_customers_read_only_their_own() {
    let mut f = Fleet::new(1);
    restart_with_short_intervals(&mut f);
    let pg = Postgres::start_loopback(f.tmp.path());
    let url = format!("postgres://postgres:{}@127.0.0.1:{}/postgres", pg.password, pg.port);
    f.add_agent_with_driver(
        "db1",
        "db",
        "",
        &["--driver", "postgres", "--driver-url", &url, "--resync-interval", "1s"],
    );
    let acme =
        f.json(0, &["tenant", "create", "--name", "acme", "--vpn", "disabled", "--wait", "--wait-timeout", "30s"]);
    f.json(0, &["tenant", "create", "--name", "globex", "--vpn", "disabled", "--wait", "--wait-timeout", "30s"]);
    let customer = f.json(0, &["apikey", "create", "--role", "customer", "--tenant", "acme"]);
    let customer = customer["token"].as_str().expect("token").to_string();
    let (user, password) = (acme["db_user"].as_str().expect("user"), acme["db_password"].as_str().expect("pw"));

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    // Known activity: about 4 MB of rows in acme's schema, and one session held open.
    let tenant_url = format!("postgres://{user}:{password}@127.0.0.1:{}/postgres", pg.port);
    let session = rt.block_on(async {
        let db = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&tenant_url).await.expect("login");
        sqlx::query(
            "INSERT INTO events (device_id, event_type, payload) \
             SELECT 'dev-' || i, 'reading', jsonb_build_object('pad', repeat('x', 400)) FROM generate_series(1, 8000) i",
        )
        .execute(&db)
        .await
        .expect("rows as the tenant");
        db
    });
    // Ten API calls with the customer's key (each a request acting on acme).
    for _ in 0..10 {
        ok_json(usage_json(&f, &customer, &["--tenant", "acme"]));
    }
    let active = Instant::now();

    // Within two report intervals (plus the agent's pass and the apply): disk held between two
    // samples, the largest size, the session, the calls.
    let deadline = 2 * REPORT_INTERVAL + Duration::from_secs(3);
    let mut last = Value::Null;
    let seen = loop {
        let v = ok_json(usage_json(&f, &f.key, &["--tenant", "acme"]));
        let t = &v["totals"];
        let done = t["disk_max_bytes"].as_u64() >= Some(3_000_000)
            && t["disk_byte_hours"].as_u64() > Some(0)
            && t["peak_connections"].as_u64() >= Some(1)
            && t["api_calls"].as_u64() >= Some(10);
        if done {
            break Some(v);
        }
        last = v;
        if active.elapsed() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let v = seen.unwrap_or_else(|| panic!("usage within {deadline:?} of the activity; last seen {last:#}"));
    let month = crate::usage::this_month();
    assert_eq!(v["period"], month.as_str(), "the current month by default");
    assert_eq!(v["tenant"], "acme");
    let days = v["days"].as_array().expect("days");
    assert!(!days.is_empty(), "{v:#}");
    assert!(days.iter().all(|d| d["date"].as_str().is_some_and(|d| d.starts_with(&month))), "{v:#}");
    let day_calls: u64 = days.iter().filter_map(|d| d["api_calls"].as_u64()).sum();
    assert_eq!(Some(day_calls), v["totals"]["api_calls"].as_u64(), "the days add up to the totals");
    // The tenant's usage is the tenant's: globex had none of acme's activity.
    let globex = ok_json(usage_json(&f, &f.key, &["--tenant", "globex", "--period", &month]));
    // Only the admin's own requests on globex (`--wait` polls, these reads), none of acme's ten.
    assert!(globex["totals"]["api_calls"].as_u64() < Some(10), "{globex:#}");
    assert!(globex["totals"]["disk_max_bytes"].as_u64() < Some(1_000_000), "{globex:#}");
    rt.block_on(session.close());

    // A customer key reads its own tenant only; a bad period is a clear 400.
    let theirs = usage_json(&f, &customer, &["--tenant", "globex"]);
    assert!(!theirs.status.success());
    let err = String::from_utf8_lossy(&theirs.stderr);
    assert!(err.contains("403") || err.contains("may not"), "{err}");
    for bad in ["2026-13", "2026-1", "november", "1969-12"] {
        let out = usage_json(&f, &f.key, &["--tenant", "acme", "--period", bad]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("must be a month as YYYY-MM"), "{bad}: {err}");
    }
    let none = usage_json(&f, &f.key, &["--tenant", "acme", "--period", "2001-01"]);
    assert_eq!(ok_json(none)["days"], serde_json::json!([]), "no usage before the tenant existed");
    // CSV: a header, the day, the totals.
    let endpoint = f.coords[0].endpoint();
    let csv = berqenas_tests::run(
        &coordinator_bin(),
        &["usage", "show", "--tenant", "acme", "--output", "csv"],
        &[("BERQENAS_ENDPOINT", &endpoint), ("BERQENAS_API_KEY", &f.key)],
    );
    let text = String::from_utf8_lossy(&csv.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("date,disk_byte_hours,") && lines[2].starts_with("total,"), "{text}");
}

/// `YYYY-MM` of now, UTC.
pub fn this_month() -> String {
    let out = berqenas_tests::run(std::path::Path::new("date"), &["-u", "+%Y-%m"], &[]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
