//! Backups end to end: a coordinator, a db node agent with the PostgreSQL driver, a real
//! PostgreSQL and a real S3-compatible server (`s3s-fs`, in the db host's namespace). The
//! coordinators make the tenant's data key and schedule; the agent backs up, reports, restores
//! and deletes what retention expired; everything seen through the CLI and in the bucket.

use crate::db::{setup_configured, Env};
use berqenas_tests::s3::S3;
use berqenas_tests::wait_for;
use serde_json::Value;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MARKER: &str = "MARKER-ROW-5ca1ab1e";

fn list(env: &Env, tenant: &str) -> Value {
    env.json(&["backup", "list", "--tenant", tenant])
}

fn backups(v: &Value) -> Vec<Value> {
    v["backups"].as_array().cloned().unwrap_or_default()
}

/// An md5 of each of acme's tables, rows in a fixed order.
fn checksums(env: &Env, schema: &str) -> String {
    let sum = |table: &str| {
        format!("(SELECT coalesce(md5(string_agg(r::text, ',' ORDER BY r::text)), '') FROM {schema}.{table} r)")
    };
    env.superuser(&format!("SELECT {} || ' ' || {}", sum("orders"), sum("events")))
}

/// The `.bqb` objects of `tenant` in the bucket (s3s-fs keeps each object as a file at its key).
fn objects(s3: &S3, tenant: &str) -> Vec<String> {
    let prefix = format!("{}/tenants/{tenant}/", s3.bucket);
    let mut v: Vec<String> = s3
        .files()
        .into_iter()
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| p.starts_with(&prefix) && p.ends_with(".bqb"))
        .map(|p| p[s3.bucket.len() + 1..].to_string())
        .collect();
    v.sort();
    v
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn refused(out: std::process::Output, what: &str) -> String {
    assert!(!out.status.success(), "{what} was allowed: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn scheduled_backups_restore_expire_survive_a_stopped_bucket_and_gate_purge() {
    let (env, mut s3) = setup_configured(|_, db, tmp, cfg| {
        let s3 = S3::start_in(&db.netns, &db.addr.to_string(), tmp);
        cfg.backup = Some(s3.config());
        s3
    });

    // The bucket is down when acme's first (scheduled) backup runs: the failure is reported with
    // its reason, nothing is catalogued, no object exists.
    s3.kill();
    let acme = env.create("acme", &["--vpn", "disabled", "--ddl", "enabled"]);
    let (user, pw) = (acme["db_user"].as_str().expect("user"), acme["db_password"].as_str().expect("password"));
    env.as_tenant(
        user,
        pw,
        &[
            "CREATE TABLE orders (id int PRIMARY KEY, note text, amount numeric(12,2))",
            &format!("INSERT INTO orders VALUES (1, '{MARKER}', 42.00)"),
            "INSERT INTO orders SELECT g, md5(g::text), g / 100.0 FROM generate_series(2, 2000) g",
            "INSERT INTO events (device_id, event_type, payload) VALUES ('plc-1', 'temp', '{\"c\": 1}')",
        ],
    )
    .expect("acme fills its schema");
    let failed = wait_for("acme's first backup to fail", Duration::from_secs(60), || {
        let v = list(&env, "acme");
        v["last_failure"].is_object().then_some(v)
    });
    assert!(backups(&failed).is_empty(), "no catalog entry for a failed upload: {failed}");
    let reason = failed["last_failure"]["reason"].as_str().unwrap_or_default().to_string();
    assert!(reason.contains("S3"), "the reason names the bucket: {reason}");
    let text = env.cli(&["backup", "list", "--tenant", "acme"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("last failure"), "shown in the table too");
    assert!(objects(&s3, "acme").is_empty());

    // Offboarding without any backup: delete asks for a final one (it fails, the bucket is
    // down), and purge is refused until forced.
    env.create("gone", &["--vpn", "disabled"]);
    wait_for("gone's data key", Duration::from_secs(20), || list(&env, "gone")["keyed"].as_bool().filter(|k| *k));
    env.json(&["tenant", "delete", "gone"]);
    wait_for("gone's final backup to end", Duration::from_secs(60), || {
        let v = list(&env, "gone");
        v["last_run"].is_object().then_some(v)
    });
    let err = refused(env.cli(&["tenant", "purge", "gone"]), "purge without a backup");
    assert!(err.contains("has no backup"), "{err}");
    env.json(&["tenant", "purge", "gone", "--force"]);

    // The bucket is back: the retry (with backoff) succeeds; the entry names a whole object
    // holding none of the plaintext.
    let at_backup = checksums(&env, "tenant_acme");
    s3.resume();
    let first = wait_for("acme's retried backup", Duration::from_secs(120), || {
        let v = list(&env, "acme");
        backups(&v).first().cloned()
    });
    assert!(list(&env, "acme")["last_failure"].is_null(), "a completed backup clears the failure");
    let object = first["object"].as_str().expect("object").to_string();
    assert_eq!(objects(&s3, "acme"), std::slice::from_ref(&object));
    let stored = std::fs::read(s3.object_path(&object)).expect("object on disk");
    assert_eq!(stored.len() as u64, first["bytes"].as_u64().expect("bytes"));
    assert!(!stored.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()), "no plaintext in the object");

    // `--at` takes whole seconds: restore at the first backup's time rounded up to the next
    // second, and change nothing before that second has passed, so the next backup is newer
    // than it (a backup on demand started within it would be the one picked).
    let first_ms = first["taken_ms"].as_u64().expect("taken");
    let at_ms = (first_ms / 1000 + 1) * 1000;
    while SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis() <= u128::from(at_ms) {
        std::thread::sleep(Duration::from_millis(50));
    }

    // Rows change; a backup on demand; then overwrite restore at the first backup's time
    // brings back exactly what was there.
    env.as_tenant(
        user,
        pw,
        &[
            "UPDATE orders SET amount = amount + 1 WHERE id % 3 = 0",
            "DELETE FROM orders WHERE id % 5 = 0",
            "DELETE FROM events",
        ],
    )
    .expect("changes");
    let changed = checksums(&env, "tenant_acme");
    assert_ne!(changed, at_backup);

    // The data key is rotated (admin only): the next backup is sealed with the new key, and the
    // first one still restores below with the key it was sealed with.
    assert_eq!(first["key_id"], "acme-1", "{first}");
    let rotated = env.json(&["backup", "rotate-key", "--tenant", "acme"]);
    assert_eq!(rotated["current_key"], "acme-2", "{rotated}");
    let audit = env.json(&["audit", "list", "--tenant", "acme", "--limit", "100000"]);
    let entries = audit.as_array().or_else(|| audit["entries"].as_array()).cloned().unwrap_or_default();
    assert!(
        entries.iter().any(|e| e["action"] == "backup.key.rotate" && e["details"]["key"] == "acme-2"),
        "the rotation is audited: {audit}"
    );
    let second = env.json(&["backup", "run", "--tenant", "acme"]);
    assert!(second["taken_ms"].as_u64() > first["taken_ms"].as_u64(), "{second}");
    assert_eq!(second["key_id"], "acme-2", "sealed with the new key: {second}");
    let at = rfc3339(at_ms);
    let restored = env.json(&["backup", "restore", "--tenant", "acme", "--at", &at, "--mode", "overwrite"]);
    assert_eq!(restored["made"], "tenant_acme", "{restored}");
    assert_eq!(checksums(&env, "tenant_acme"), at_backup, "every table as it was at the backup");
    let kept = restored["kept"].as_str().expect("the live schema was kept aside").to_string();
    assert_eq!(checksums(&env, &kept), changed);
    wait_for("the tenant to read its restored schema", Duration::from_secs(20), || {
        env.as_tenant(user, pw, &["SELECT count(*) FROM orders"]).ok()
    });

    // Clone: the newest backup into a new schema the tenant can read; the live one untouched.
    let clone = env.json(&["backup", "restore", "--tenant", "acme", "--at", "now", "--mode", "clone"]);
    let schema = clone["made"].as_str().expect("clone schema").to_string();
    assert!(schema.starts_with("tenant_acme_clone_"), "{clone}");
    assert_eq!(checksums(&env, &schema), changed, "the clone holds the newest backup");
    assert_eq!(checksums(&env, "tenant_acme"), at_backup, "the live schema is untouched");
    let count = wait_for("the tenant to read the clone", Duration::from_secs(20), || {
        env.as_tenant(user, pw, &[&format!("SELECT count(*) FROM {schema}.orders")]).ok()
    });
    assert_eq!(count, "1600");

    // Another tenant's customer key cannot list, run or restore acme's backups.
    env.create("globex", &["--vpn", "disabled"]);
    let key = env.json(&["apikey", "create", "--role", "customer", "--tenant", "globex"]);
    let key = key["token"].as_str().expect("token");
    for args in [
        &["backup", "list", "--tenant", "acme"][..],
        &["backup", "run", "--tenant", "acme", "--no-wait"],
        &["backup", "restore", "--tenant", "acme", "--at", "now", "--mode", "overwrite", "--no-wait"],
    ] {
        let err = refused(env.cli_as(key, args), &args.join(" "));
        assert!(err.contains("(403)"), "{args:?}: {err}");
    }
    assert!(env.cli_as(key, &["backup", "list", "--tenant", "globex"]).status.success(), "its own tenant");
    let err = refused(env.cli_as(key, &["backup", "rotate-key", "--tenant", "globex"]), "a customer rotating a key");
    assert!(err.contains("(403)"), "admin only, even for its own tenant: {err}");
    assert!(list(&env, "acme")["run"].is_null() && list(&env, "acme")["restore"].is_null());

    // Retention: keep 2. The objects and the entries go together, and nothing else is left.
    let out = env.cli(&["tenant", "update", "acme", "--backup-keep", "2", "--backup-interval", "2h"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown = env.json(&["tenant", "get", "acme"]);
    assert_eq!(shown["backup_policy"]["keep_count"], 2, "{shown}");
    assert_eq!(shown["backup_policy"]["interval_s"], 7200);
    let bad = refused(env.cli(&["tenant", "update", "acme", "--backup-interval", "1m"]), "a 1-minute interval");
    assert!(bad.contains("interval_s must be between 300"), "{bad}");
    // A backup under way shows how far it got: pg_dump waits for a lock a session holds on
    // acme's table, meanwhile `backup list` shows the run's progress from the db node's reports
    // and `backup run` prints it while it waits.
    let run = std::thread::scope(|s| {
        let lock = s.spawn(|| {
            env.superuser("BEGIN; LOCK TABLE tenant_acme.orders IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(8); COMMIT")
        });
        wait_for("the lock on acme's table", Duration::from_secs(10), || {
            let held = env.superuser(
                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
                 WHERE c.relname = 'orders' AND l.mode = 'AccessExclusiveLock' AND l.granted",
            );
            (held == "1").then_some(())
        });
        let run = s.spawn(|| env.cli(&["backup", "run", "--tenant", "acme"]));
        let shown = wait_for("the backup's progress", Duration::from_secs(10), || {
            let v = list(&env, "acme");
            v["progress"].is_object().then_some(v)
        });
        assert_eq!(shown["progress"]["request"], shown["run"]["id"], "{shown}");
        assert!(shown["progress"]["dumped"].is_u64() && shown["progress"]["uploaded"].is_u64(), "{shown}");
        lock.join().expect("lock holder");
        run.join().expect("backup run")
    });
    let said = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{said}");
    assert!(said.contains(": dumped ") && said.contains(" MB, uploaded "), "progress in bytes while waiting: {said}");
    assert!(list(&env, "acme")["progress"].is_null(), "nothing under way once it ended");
    let kept = wait_for("retention to remove the oldest backups", Duration::from_secs(60), || {
        let v = list(&env, "acme");
        let b = backups(&v);
        (b.len() == 2 && b.iter().all(|e| e["expiring"] == false)).then_some(b)
    });
    let mut listed: Vec<String> = kept.iter().map(|e| e["object"].as_str().expect("object").to_string()).collect();
    listed.sort();
    assert_eq!(objects(&s3, "acme"), listed, "no entry without its object, no object without its entry");
    assert!(!listed.contains(&object), "the first backup's object is gone");
}
