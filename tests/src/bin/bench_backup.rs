//! `deploy/bench.sh backup`: one tenant schema of about 1 GB (BERQENAS_BENCH_MB) in a throwaway
//! PostgreSQL, backed up and restored with the agent binary (`berqenas-node-agent backup run`,
//! `backup restore --clone`) into `s3s-fs` on loopback: MB/s of dump bytes and the agent's peak
//! RSS for each; side by side, the plain pipeline on the same schema: `pg_dump -Fc | zstd -3` to a
//! file, and `pg_restore` of that dump into another database. The backups run agent, plain,
//! plain, agent on a vacuumed, checkpointed table with autovacuum off, so both sides see the
//! same caches and neither pays for the other's leftovers. One JSON line.
//! Usage: bench-backup PATH/TO/berqenas-node-agent

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: it starts the project's binaries and lab tools, and a failed setup step is a failed test"
)]

use berqenas_node_agent::driver::Driver;
use berqenas_tests::bench::{proc_stats, round2};
use berqenas_tests::postgres::Postgres;
use berqenas_tests::s3::S3;
use serde_json::json;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `cmd` to success; returns its wall time, the peak RSS (MiB) seen while it ran, and its
/// stdout.
fn timed(what: &str, cmd: &mut Command) -> (f64, f64, String) {
    let (secs, peak, out, _, _) = timed_with_log(what, cmd);
    (secs, peak, out)
}

/// CPU seconds (user + system) of this process's children that ended and were waited for.
fn children_cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    // cutime and cstime are fields 16 and 17 of stat; index 13 and 14 after the ')'.
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(13) + ticks(14)) / 100.0
}

/// `timed`, and its stderr and the CPU seconds of the whole command (every thread, and the
/// processes of a pipeline) too.
fn timed_with_log(what: &str, cmd: &mut Command) -> (f64, f64, String, String, f64) {
    let cpu_before = children_cpu_s();
    let started = Instant::now();
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect(what);
    let mut peak: f64 = 0.0;
    while child.try_wait().expect(what).is_none() {
        peak = peak.max(proc_stats(child.id()).1);
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = started.elapsed().as_secs_f64();
    let out = child.wait_with_output().expect(what);
    assert!(out.status.success(), "{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    let cpu = children_cpu_s() - cpu_before;
    (
        secs,
        peak,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        cpu,
    )
}

/// The seconds the agent logged for the store's CompleteMultipartUpload (s3s-fs copies and
/// MD5s every part again there), 0 when it logged none.
fn completion_s(log: &str) -> f64 {
    log.lines()
        .filter(|l| l.contains("the store completed the upload"))
        .filter_map(|l| l.split("seconds=").nth(1)?.split_whitespace().next()?.parse().ok())
        .next()
        .unwrap_or(0.0)
}

fn main() {
    let agent = PathBuf::from(std::env::args().nth(1).expect("usage: bench-backup PATH/TO/berqenas-node-agent"));
    let mb: u64 = std::env::var("BERQENAS_BENCH_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(1024);
    let tmp = tempfile::tempdir().expect("tmp");
    let pg = Postgres::start_loopback(tmp.path());
    let url = format!("postgres://postgres:{}@127.0.0.1:{}/postgres", pg.password, pg.port);
    let s3 = S3::start(tmp.path());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");

    // The tenant, made by the agent's driver, filled as its owner role: rows of 200 bytes of
    // hex text (about 2:1 under zstd, like much real data) until the schema is `mb` MB.
    let mut t = berqenas_tests::realtime::tenant("bench", 1, &[], &[], 1000);
    t.db.quota_bytes = 64 << 30;
    let rows = mb * 1_000_000 / 250;
    let dumped_size = rt.block_on(async {
        let mut driver = berqenas_node_agent::db::postgres::PostgresDriver::new(
            url.clone(),
            None,
            Duration::from_secs(10),
            Default::default(),
        );
        let statuses = driver.reconcile(std::slice::from_ref(&t)).await;
        assert!(statuses.iter().all(|s| s.ready), "tenant made: {statuses:?}");
        let db = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&url).await.expect("connect");
        // No autovacuum: it would wake during whichever run comes first after the fill (or the
        // restore's clone) and take CPU from it; the fill is vacuumed by hand below instead.
        for sql in ["ALTER SYSTEM SET autovacuum = off", "SELECT pg_reload_conf()"] {
            sqlx::query(sql).execute(&db).await.expect(sql);
        }
        let mut tx = db.begin().await.expect("begin");
        for sql in [
            "SET LOCAL ROLE tenant_bench_owner",
            "CREATE TABLE tenant_bench.rows (id bigint PRIMARY KEY, body text NOT NULL)",
        ] {
            sqlx::query(sql).execute(&mut *tx).await.expect(sql);
        }
        sqlx::query(
            "INSERT INTO tenant_bench.rows SELECT g, repeat(md5(g::text), 3) || md5(random()::text) || \
             md5(random()::text) || md5(random()::text) FROM generate_series(1, $1) g",
        )
        .bind(rows as i64)
        .execute(&mut *tx)
        .await
        .expect("fill");
        tx.commit().await.expect("commit");
        // Settled before anything is timed: hint bits set, pages frozen and written out, so the
        // first dump does not pay for what the later ones get for free.
        for sql in ["VACUUM (FREEZE, ANALYZE) tenant_bench.rows", "CHECKPOINT"] {
            sqlx::query(sql).execute(&db).await.expect(sql);
        }
        sqlx::query_scalar::<_, i64>("SELECT pg_total_relation_size('tenant_bench.rows')")
            .fetch_one(&db)
            .await
            .expect("size")
    });

    let cfg = s3.agent_config(tmp.path(), &url);
    let config = tmp.path().join("agent.toml");
    cfg.save(&config).expect("agent.toml");
    let key_file = tmp.path().join("bench.key");
    let key = json!({ "id": "bench-1", "key": hex::encode(rand::random::<[u8; 32]>()) });
    berqenas_common::files::write_atomic(&key_file, key.to_string().as_bytes(), 0o600).expect("key file");
    let (config, key_path) = (config.to_str().unwrap().to_string(), key_file.to_str().unwrap().to_string());

    let env = [
        ("PGHOST", "127.0.0.1".to_string()),
        ("PGPORT", pg.port.to_string()),
        ("PGUSER", "postgres".to_string()),
        ("PGPASSWORD", pg.password.clone()),
        ("PGDATABASE", "postgres".to_string()),
    ];
    let dump_file = tmp.path().join("plain.dump.zst");
    let bin = |name: &str| pg.bin.join(name).to_string_lossy().into_owned();
    let shell = |script: &str| {
        let mut c = Command::new("bash");
        c.args(["-o", "pipefail", "-c", script]).envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        c
    };
    // Each run's wall time, peak RSS, catalog entry, the store's completion time, and CPU
    // seconds: the agent's own, and s3s-fs's meanwhile (PostgreSQL's backend is left out on
    // both sides).
    let s3_pid = s3.pid();
    let agent_backup = || {
        let store_before = proc_stats(s3_pid).2;
        let (secs, rss, out, log, cpu) = timed_with_log(
            "agent backup",
            Command::new(&agent)
                .args(["backup", "run", "--config", &config, "--tenant", "bench", "--key-file", &key_path])
                .env("NO_COLOR", "1"),
        );
        let store_cpu = proc_stats(s3_pid).2 - store_before;
        let entry = serde_json::from_str::<serde_json::Value>(&out).expect("catalog entry");
        (secs, rss, entry, completion_s(&log), cpu, store_cpu)
    };
    // The plain pipeline, same schema, same machine: pg_dump -Fc | zstd -3 to a file; wall time
    // and the CPU seconds of pg_dump and zstd.
    let plain_backup = || {
        let (secs, _, _, _, cpu) = timed_with_log(
            "pg_dump | zstd",
            &mut shell(&format!(
                "{} -Fc -Z0 -n tenant_bench | zstd -3 -q -c > {}",
                bin("pg_dump"),
                dump_file.display()
            )),
        );
        (secs, cpu)
    };

    // Backups in the order agent, plain, plain, agent, so neither side always runs first (cold)
    // or last (after the other warmed the caches); each side's figure is its two runs' mean.
    let (agent_1_s, agent_1_rss, entry, complete_1_s, agent_1_cpu, store_1_cpu) = agent_backup();
    let (plain_1_s, plain_1_cpu) = plain_backup();
    let (plain_2_s, plain_2_cpu) = plain_backup();
    let (agent_2_s, agent_2_rss, _, complete_2_s, agent_2_cpu, store_2_cpu) = agent_backup();
    let (backup_s, plain_dump_s) = ((agent_1_s + agent_2_s) / 2.0, (plain_1_s + plain_2_s) / 2.0);
    let backup_rss = agent_1_rss.max(agent_2_rss);
    let dumped = entry["dumped"].as_u64().unwrap() as f64 / 1e6;
    let (object, sha) = (entry["key"].as_str().unwrap(), entry["sha256"].as_str().unwrap());

    // The agent's restore into a clone, then pg_restore of the plain dump (decompressed on the
    // way) into a fresh database.
    let (restore_s, restore_rss, _) = timed(
        "agent restore",
        Command::new(&agent).args([
            "backup",
            "restore",
            "--config",
            &config,
            "--tenant",
            "bench",
            "--key-file",
            &key_path,
            "--object",
            object,
            "--sha256",
            sha,
            "--clone",
            "tenant_bench_restored",
        ]),
    );
    timed("createdb", &mut shell(&format!("{} plain_restore", bin("createdb"))));
    timed("checkpoint", &mut shell(&format!("{} -qc CHECKPOINT", bin("psql"))));
    let (plain_restore_s, _, _) = timed(
        "zstd -d | pg_restore",
        &mut shell(&format!("zstd -d -q -c {} | {} -d plain_restore", dump_file.display(), bin("pg_restore"))),
    );
    let plain_size = std::fs::metadata(&dump_file).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;
    let object_size = entry["bytes"].as_u64().unwrap() as f64 / 1e6;

    let (backup_mbs, plain_dump_mbs) = (dumped / backup_s, dumped / plain_dump_s);
    let (restore_mbs, plain_restore_mbs) = (dumped / restore_s, dumped / plain_restore_s);
    println!(
        "{}",
        json!({
            "bench": "backup",
            "schema_mb": round2(dumped_size as f64 / 1e6),
            "dump_mb": round2(dumped),
            "agent": {
                "backup_runs_s": [round2(agent_1_s), round2(agent_2_s)],
                "backup_complete_upload_s": [round2(complete_1_s), round2(complete_2_s)],
                "backup_cpu_s": [round2(agent_1_cpu), round2(agent_2_cpu)],
                "s3s_fs_cpu_s": [round2(store_1_cpu), round2(store_2_cpu)],
                "backup_s": round2(backup_s), "backup_mb_s": round2(backup_mbs), "backup_peak_rss_mb": round2(backup_rss),
                "object_mb": round2(object_size),
                "restore_s": round2(restore_s), "restore_mb_s": round2(restore_mbs), "restore_peak_rss_mb": round2(restore_rss),
            },
            "plain": {
                "pg_dump_zstd_runs_s": [round2(plain_1_s), round2(plain_2_s)],
                "pg_dump_zstd_cpu_s": [round2(plain_1_cpu), round2(plain_2_cpu)],
                "pg_dump_zstd_s": round2(plain_dump_s), "pg_dump_zstd_mb_s": round2(plain_dump_mbs), "file_mb": round2(plain_size),
                "pg_restore_s": round2(plain_restore_s), "pg_restore_mb_s": round2(plain_restore_mbs),
            },
            "backup_vs_plain": round2(backup_mbs / plain_dump_mbs),
            "restore_vs_plain": round2(restore_mbs / plain_restore_mbs),
            "note": "backups run agent, plain, plain, agent after a VACUUM FREEZE and CHECKPOINT, autovacuum off; *_s is each side's mean; agent figures include encryption and the upload to s3s-fs on loopback (same disk); the agent's restore reads the object twice (verify, then replay)",
        })
    );
}
