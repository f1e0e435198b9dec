//! Backups against real components: a throwaway PostgreSQL with tenants made by the agent's
//! PostgreSQL driver, a real S3-compatible server (`s3s-fs`, objects on disk), and the agent's
//! backup module (pg_dump → zstd → AES-256-GCM → multipart upload, and back through psql).

use crate::realtime::{env, runtime, Env};
use berqenas_node_agent::backup::format::DataKey;
use berqenas_node_agent::backup::pg::Mode;
use berqenas_node_agent::backup::store::Store;
use berqenas_node_agent::backup::{self, BackupError, Catalogued, Source};
use berqenas_tests::realtime::tenant;
use berqenas_tests::s3::S3;
use std::collections::BTreeMap;
use std::time::SystemTime;

const MARKER: &str = "MARKER-ROW-c0ffee-7f3a";

fn source(e: &Env) -> Source {
    Source { url: e.url.clone(), tenant: "acme".into(), own_database: false }
}

fn data_key() -> DataKey {
    DataKey { id: "acme-1".into(), key: rand::random() }
}

/// Each table of `schema`: an md5 of its rows in a fixed order.
async fn checksums(db: &sqlx::PgPool, schema: &str) -> BTreeMap<String, String> {
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = $1 ORDER BY 1")
            .bind(schema)
            .fetch_all(db)
            .await
            .expect("tables");
    let mut out = BTreeMap::new();
    // `who` records who ran the tenant's code; it grows during a restore by design.
    for t in tables.into_iter().filter(|t| t != "who") {
        // Names come from the catalog of a schema this test made.
        let sql =
            format!("SELECT coalesce(md5(string_agg(r::text, ',' ORDER BY r::text)), '') FROM \"{schema}\".\"{t}\" r");
        let sum: String = sqlx::query_scalar(&sql).fetch_one(db).await.expect("checksum");
        out.insert(t, sum);
    }
    out
}

/// As the tenant's owner: a table with a sequence, a marker row and `rows` filler rows.
async fn fill(db: &sqlx::PgPool, rows: i64) {
    let mut tx = db.begin().await.expect("begin");
    for sql in [
        "SET LOCAL ROLE tenant_acme_owner",
        "CREATE TABLE tenant_acme.orders (id bigserial PRIMARY KEY, note text NOT NULL, amount numeric(12,2))",
    ] {
        sqlx::query(sql).execute(&mut *tx).await.expect(sql);
    }
    sqlx::query("INSERT INTO tenant_acme.orders (note, amount) VALUES ($1, 42.00)")
        .bind(MARKER)
        .execute(&mut *tx)
        .await
        .expect("marker");
    sqlx::query(
        "INSERT INTO tenant_acme.orders (note, amount) \
         SELECT md5(random()::text) || md5(random()::text), g / 100.0 FROM generate_series(1, $1) g",
    )
    .bind(rows)
    .execute(&mut *tx)
    .await
    .expect("rows");
    sqlx::query(
        "INSERT INTO tenant_acme.events (id, device_id, event_type, payload) \
         VALUES (gen_random_uuid(), 'plc-1', 'temp', '{\"c\": 1}')",
    )
    .execute(&mut *tx)
    .await
    .expect("event");
    tx.commit().await.expect("commit");
    // A table the tenant made itself (DDL enabled): owned by its login role.
    let mut tx = db.begin().await.expect("begin");
    for sql in [
        "SET LOCAL ROLE tenant_acme_user",
        "CREATE TABLE tenant_acme.notes (id int PRIMARY KEY, body text)",
        "INSERT INTO tenant_acme.notes VALUES (1, 'mine'), (2, 'also mine')",
        // A check that runs the tenant's code for every row loaded, and records who ran it.
        "CREATE TABLE tenant_acme.who (name text)",
        "CREATE FUNCTION tenant_acme.probe() RETURNS boolean LANGUAGE plpgsql AS \
         $$ BEGIN INSERT INTO tenant_acme.who VALUES (current_user::text); RETURN true; END $$",
        "CREATE TABLE tenant_acme.probe (id int CHECK (tenant_acme.probe()))",
        "INSERT INTO tenant_acme.probe VALUES (1)",
    ] {
        sqlx::query(sql).execute(&mut *tx).await.expect(sql);
    }
    tx.commit().await.expect("commit");
}

/// The tenant `acme` with DDL enabled.
fn acme() -> berqenas_node_agent::assignment::DbTenant {
    let mut t = tenant("acme", 1, &["plc-1"], &[], 1000);
    t.db.ddl_enabled = true;
    t
}

async fn change(db: &sqlx::PgPool) {
    for sql in [
        "UPDATE tenant_acme.orders SET amount = amount + 1 WHERE id % 3 = 0",
        "DELETE FROM tenant_acme.orders WHERE id % 5 = 0",
        "INSERT INTO tenant_acme.orders (note) VALUES ('after the backup')",
        "DELETE FROM tenant_acme.events",
        "UPDATE tenant_acme.notes SET body = 'changed'",
    ] {
        sqlx::query(sql).execute(db).await.expect(sql);
    }
}

async fn schemas(db: &sqlx::PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'tenant_acme%' ORDER BY 1")
        .fetch_all(db)
        .await
        .expect("schemas")
}

async fn take(store: &Store, e: &Env, key: &DataKey) -> Catalogued {
    let object = backup::object_key("acme", SystemTime::now(), "b1");
    backup::backup(store, &source(e), key, &object, |_| {}).await.expect("backup")
}

#[test]
fn backup_then_clone_and_overwrite_restore_the_tables_as_they_were() {
    runtime().block_on(async {
        let e = env(&[acme()]).await;
        let s3 = S3::start(e.tmp.path());
        let store = Store::new(&s3.config()).expect("store");
        fill(&e.db, 2_000).await;
        let at_backup = checksums(&e.db, "tenant_acme").await;
        assert_eq!(at_backup.keys().collect::<Vec<_>>(), ["events", "notes", "orders", "probe"]);

        let key = data_key();
        let done = take(&store, &e, &key).await;
        assert!(done.key.starts_with("tenants/acme/") && done.key.ends_with("-b1.bqb"), "{}", done.key);
        assert!(done.dumped > 100_000 && done.bytes > 0 && done.server_version >= 150_000, "{done:?}");
        // The stored object is what the catalog says, and none of it is plaintext.
        let stored = std::fs::read(s3.object_path(&done.key)).expect("object on the server's disk");
        assert_eq!(stored.len() as u64, done.bytes);
        assert_eq!(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&stored)), done.sha256);
        assert!(stored.starts_with(b"BQB\x01"));
        for needle in [MARKER.as_bytes(), b"CREATE TABLE", b"tenant_acme", b"orders"] {
            assert!(!stored.windows(needle.len()).any(|w| w == needle), "plaintext {:?} in the object", needle);
        }

        change(&e.db).await;
        let changed = checksums(&e.db, "tenant_acme").await;
        assert_ne!(changed, at_backup);

        // Clone: the backup beside the live schema, readable by the tenant; the live one untouched.
        let clone = Mode::Clone { schema: "tenant_acme_r1".into() };
        let made = backup::restore(&store, &source(&e), &key, &done.key, &done.sha256, &clone).await.expect("clone");
        assert_eq!(made.schema, "tenant_acme_r1");
        assert_eq!(checksums(&e.db, "tenant_acme_r1").await, at_backup);
        assert_eq!(checksums(&e.db, "tenant_acme").await, changed, "clone leaves the live schema as it is");
        let mut tx = e.db.begin().await.expect("begin");
        sqlx::query("SET LOCAL ROLE tenant_acme_user").execute(&mut *tx).await.expect("as the tenant");
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_acme_r1.orders WHERE note = $1")
            .bind(MARKER)
            .fetch_one(&mut *tx)
            .await
            .expect("the tenant reads its clone");
        assert_eq!(n, 1);
        tx.rollback().await.expect("rollback");
        // The tenant's code ran during the restore, as the tenant's owner role, never as the superuser.
        let ran_as: Vec<String> = sqlx::query_scalar("SELECT DISTINCT name FROM tenant_acme_r1.who ORDER BY 1")
            .fetch_all(&e.db)
            .await
            .expect("who");
        assert_eq!(ran_as, ["tenant_acme_owner", "tenant_acme_user"]);
        let owner: String =
            sqlx::query_scalar("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'tenant_acme_r1'")
                .fetch_one(&e.db)
                .await
                .expect("owner");
        assert_eq!(owner, "tenant_acme_owner");
        let notes: String = sqlx::query_scalar(
            "SELECT tableowner::text FROM pg_tables WHERE schemaname = 'tenant_acme_r1' AND tablename = 'notes'",
        )
        .fetch_one(&e.db)
        .await
        .expect("notes owner");
        assert_eq!(notes, "tenant_acme_user", "the tenant's own table is its own again");
        let member: bool = sqlx::query_scalar("SELECT pg_has_role('tenant_acme_owner', 'tenant_acme_user', 'MEMBER')")
            .fetch_one(&e.db)
            .await
            .expect("membership");
        assert!(!member, "the owner's temporary membership ended with the restore");
        let may_create: bool =
            sqlx::query_scalar("SELECT has_database_privilege('tenant_acme_owner', current_database(), 'CREATE')")
                .fetch_one(&e.db)
                .await
                .expect("privilege");
        assert!(!may_create, "the owner's temporary CREATE right ended with the restore");

        // Overwrite: the backup becomes the live schema; the previous content is kept aside, and
        // the realtime feed's publication follows the live events table.
        sqlx::query("CREATE PUBLICATION berqenas_rt_acme FOR TABLE tenant_acme.events")
            .execute(&e.db)
            .await
            .expect("publication");
        let over = Mode::Overwrite { keep: "tenant_acme_old1".into() };
        let made = backup::restore(&store, &source(&e), &key, &done.key, &done.sha256, &over).await.expect("overwrite");
        assert_eq!(made.kept.as_deref(), Some("tenant_acme_old1"));
        assert_eq!(checksums(&e.db, "tenant_acme").await, at_backup);
        assert_eq!(checksums(&e.db, "tenant_acme_old1").await, changed);
        let published: Vec<String> =
            sqlx::query_scalar("SELECT schemaname::text FROM pg_publication_tables WHERE pubname = 'berqenas_rt_acme'")
                .fetch_all(&e.db)
                .await
                .expect("publication tables");
        assert_eq!(published, ["tenant_acme"]);
        // The tenant's sequence goes on from the backup's.
        sqlx::query("INSERT INTO tenant_acme.orders (note) VALUES ('after restore')")
            .execute(&e.db)
            .await
            .expect("insert");

        // A restore never takes a name that exists.
        let again = backup::restore(&store, &source(&e), &key, &done.key, &done.sha256, &clone).await;
        assert!(matches!(again, Err(BackupError::Exists(_))), "{again:?}");
        let outside = Mode::Clone { schema: "tenant_globex_x".into() };
        let refused = backup::restore(&store, &source(&e), &key, &done.key, &done.sha256, &outside).await;
        assert!(matches!(refused, Err(BackupError::Target(_))), "{refused:?}");
    });
}

#[test]
fn a_flipped_byte_in_the_object_fails_the_restore_and_changes_nothing() {
    runtime().block_on(async {
        let e = env(&[acme()]).await;
        let s3 = S3::start(e.tmp.path());
        let store = Store::new(&s3.config()).expect("store");
        fill(&e.db, 20_000).await;
        let key = data_key();
        let done = take(&store, &e, &key).await;
        change(&e.db).await;
        let live = checksums(&e.db, "tenant_acme").await;
        let before = schemas(&e.db).await;

        let path = s3.object_path(&done.key);
        let mut bytes = std::fs::read(&path).expect("object");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        std::fs::write(&path, &bytes).expect("flip a byte");

        for mode in
            [Mode::Clone { schema: "tenant_acme_r2".into() }, Mode::Overwrite { keep: "tenant_acme_old2".into() }]
        {
            let err = backup::restore(&store, &source(&e), &key, &done.key, &done.sha256, &mode)
                .await
                .expect_err("a tampered object is refused");
            assert!(matches!(err, BackupError::Format(_)), "{err}");
            assert!(err.to_string().contains("failed authentication"), "{err}");
            assert_eq!(schemas(&e.db).await, before, "no schema made, renamed or dropped");
            assert_eq!(checksums(&e.db, "tenant_acme").await, live, "the tenant's tables are untouched");
        }

        // Another tenant's key (same id, other bytes) opens nothing either.
        bytes[middle] ^= 0x01;
        std::fs::write(&path, &bytes).expect("restore the byte");
        let wrong = DataKey { id: key.id.clone(), key: rand::random() };
        let clone = Mode::Clone { schema: "tenant_acme_r3".into() };
        let err =
            backup::restore(&store, &source(&e), &wrong, &done.key, &done.sha256, &clone).await.expect_err("wrong key");
        assert!(matches!(err, BackupError::Format(_)), "{err}");
        let err =
            backup::restore(&store, &source(&e), &key, &done.key, &"0".repeat(64), &clone).await.expect_err("digest");
        assert!(matches!(err, BackupError::Digest { .. }), "{err}");
        assert_eq!(schemas(&e.db).await, before);
    });
}

#[test]
fn s3_stopped_mid_upload_fails_the_backup_and_leaves_no_object() {
    runtime().block_on(async {
        let e = env(&[acme()]).await;
        let mut s3 = S3::start(e.tmp.path());
        let store = Store::new(&s3.config()).expect("store");
        // Random hex compresses about 2:1: well over two 8 MiB parts.
        fill(&e.db, 500_000).await;
        let key = data_key();
        let object = backup::object_key("acme", SystemTime::now(), "b2");
        let mut seen = Vec::new();
        let result = backup::backup(&store, &source(&e), &key, &object, |p| {
            seen.push(p);
            if p.parts == 1 {
                s3.kill();
            }
        })
        .await;
        assert_eq!(seen.len(), 1, "stopped after the first part: {seen:?}");
        let err = result.expect_err("the backup fails");
        assert!(matches!(err, BackupError::Store(_)), "{err}");
        assert!(err.to_string().contains("UploadPart"), "{err}");

        // Back up again: nothing under the key, nothing listed; a new backup then works.
        s3.resume();
        assert_eq!(store.list("tenants/acme/").await.expect("list"), Vec::<String>::new());
        assert!(!s3.object_path(&object).exists(), "no object, not even a partial one");
        let done = backup::backup(&store, &source(&e), &key, &object, |_| {}).await.expect("backup after the outage");
        assert!(done.bytes > backup::PART as u64, "{done:?}");
        assert_eq!(store.list("tenants/acme/").await.expect("list"), vec![object]);
    });
}

/// Runs `berqenas-node-agent backup ARGS…`; (success, stdout, stderr).
fn agent_backup(args: &[&str]) -> (bool, String, String) {
    let bin = berqenas_tests::workspace_bin("berqenas-node-agent");
    let mut all = vec!["backup"];
    all.extend_from_slice(args);
    let out = berqenas_tests::run(&bin, &all, &[]);
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn the_agent_binary_backs_up_and_restores_a_tenant_by_hand() {
    use std::os::unix::fs::PermissionsExt;
    runtime().block_on(async {
        let e = env(&[acme()]).await;
        let s3 = S3::start(e.tmp.path());
        fill(&e.db, 1_000).await;
        let at_backup = checksums(&e.db, "tenant_acme").await;
        let cfg = s3.agent_config(e.tmp.path(), &e.url);
        let config = e.tmp.path().join("agent.toml");
        cfg.save(&config).expect("agent.toml");
        let key_file = e.tmp.path().join("acme.key");
        let key = serde_json::json!({ "id": "acme-1", "key": hex::encode(rand::random::<[u8; 32]>()) });
        std::fs::write(&key_file, key.to_string()).expect("key file");
        let (config, key_path) = (config.to_str().unwrap(), key_file.to_str().unwrap());

        // A key file others may read is refused before anything runs.
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let (ok, _, err) = agent_backup(&["run", "--config", config, "--tenant", "acme", "--key-file", key_path]);
        assert!(!ok && err.contains("readable by others"), "{err}");
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let (ok, _, err) = agent_backup(&["run", "--config", config, "--tenant", "acme'; --", "--key-file", key_path]);
        assert!(!ok && err.contains("not a tenant name"), "{err}");

        let (ok, out, err) = agent_backup(&["run", "--config", config, "--tenant", "acme", "--key-file", key_path]);
        assert!(ok, "{err}");
        let entry: serde_json::Value = serde_json::from_str(&out).expect("one JSON line");
        let (object, sha) = (entry["key"].as_str().unwrap().to_string(), entry["sha256"].as_str().unwrap().to_string());
        let (ok, listed, err) = agent_backup(&["list", "--config", config, "--tenant", "acme"]);
        assert!(ok, "{err}");
        assert_eq!(listed, object);

        change(&e.db).await;
        let restore = |extra: &[&str]| {
            let mut args = vec!["restore", "--config", config, "--tenant", "acme", "--key-file", key_path];
            args.extend_from_slice(&["--object", object.as_str(), "--sha256", sha.as_str()]);
            args.extend_from_slice(extra);
            agent_backup(&args)
        };
        let (ok, _, err) = restore(&[]);
        assert!(!ok && err.contains("--clone"), "a mode is required: {err}");
        let (ok, out, err) = restore(&["--clone", "tenant_acme_cli"]);
        assert!(ok, "{err}");
        let made: serde_json::Value = serde_json::from_str(&out).expect("one JSON line");
        assert_eq!((made["schema"].as_str(), made["kept"].is_null()), (Some("tenant_acme_cli"), true));
        assert_eq!(checksums(&e.db, "tenant_acme_cli").await, at_backup);
        assert_ne!(checksums(&e.db, "tenant_acme").await, at_backup);
    });
}
