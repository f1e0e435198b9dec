//! Running a PostgreSQL plan: a tenant's steps as one multi-statement query per transaction (one
//! round trip each; a failure leaves that tenant as it was and marks only it), bursts on three
//! extra connections, shared-row statements after them on the pass's own connection; and the
//! managed block of `pg_hba.conf`.

use super::step::{Step, StepKind};
use crate::assignment::DbTenant;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use std::collections::BTreeMap;

/// A pass with many tenants to change (a burst of creates) applies them on three extra
/// connections.
/// Fewer tenant groups than this run on the pass's own connection.
const PARALLEL_MIN: usize = 8;

/// Runs one group: each transaction in it (split where a step has `commit_before`) as one
/// multi-statement query — one round trip, one implicit transaction; a failed one stops the
/// group, and those before it stay committed.
async fn run_group(conn: &mut PgConnection, tenant: Option<&str>, steps: &[Step]) -> Result<(), String> {
    let label = tenant.unwrap_or("-");
    let mut start = 0;
    while start < steps.len() {
        let end = steps[start + 1..].iter().position(|s| s.commit_before).map_or(steps.len(), |i| start + 1 + i);
        let transaction = &steps[start..end];
        for step in transaction {
            tracing::info!(tenant = label, sql = %step.shown(), "postgres driver applies");
        }
        let sql: Vec<&str> = transaction.iter().map(|s| s.sql.as_str()).collect();
        // Through `Executor::execute` (a boxed `Send` future) rather than `RawSql::execute`,
        // whose generic future the compiler cannot prove `Send` inside the driver's.
        let joined = sql.join(";\n");
        sqlx::Executor::execute(&mut *conn, sqlx::raw_sql(&joined)).await.map_err(|e| {
            let msg = format!("{e}");
            tracing::warn!(tenant = label, error = %msg, "statements failed");
            msg
        })?;
        start = end;
    }
    Ok(())
}

type Queue = std::sync::Mutex<std::collections::VecDeque<(String, Vec<Step>)>>;

/// Takes groups from `queue` until it is empty, on its own connection; returns the failures.
/// A worker that cannot connect leaves its share to the others and to the pass's connection.
async fn worker(queue: &Queue, options: &PgConnectOptions) -> Vec<(String, String)> {
    let mut failed = Vec::new();
    let Ok(mut conn) = options.connect().await else { return failed };
    while let Some((tenant, group)) = queue.lock().ok().and_then(|mut q| q.pop_front()) {
        if let Err(e) = run_group(&mut conn, Some(&tenant), &group).await {
            failed.push((tenant, e));
        }
    }
    let _ = conn.close().await;
    failed
}

/// Runs `steps` on `conn`. A tenant's consecutive statements run as one multi-statement query:
/// one round trip and one implicit transaction, so a failure leaves the tenant as it was and is
/// recorded in `errors`. A failed node bootstrap fails the whole pass.
///
/// With `parallel` (the options of the same database) and many tenants to change, the groups
/// that touch only the tenant's own objects run on three extra connections; what
/// touches shared rows (`GRANT CONNECT ON DATABASE`, databases, `DROP OWNED`) follows on `conn`.
pub(super) async fn apply(
    conn: &mut PgConnection,
    parallel: Option<&PgConnectOptions>,
    steps: Vec<Step>,
    errors: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    let mut groups: Vec<(Option<String>, Vec<Step>)> = Vec::new();
    for step in steps {
        match groups.last_mut() {
            Some((t, group))
                if step.tenant.is_some()
                    && *t == step.tenant
                    && step.kind != StepKind::OutsideTransaction
                    && !group.iter().any(|s| s.kind == StepKind::OutsideTransaction) =>
            {
                group.push(step)
            }
            _ => groups.push((step.tenant.clone(), vec![step])),
        }
    }
    let (bootstrap, tenants): (Vec<_>, Vec<_>) = groups.into_iter().partition(|(t, _)| t.is_none());
    for (_, group) in bootstrap {
        run_group(conn, None, &group).await.map_err(|e| format!("node bootstrap failed: {e}"))?;
    }
    // Split: own-objects part (parallel when worth it), shared-row statements after it.
    let mut own: Vec<(String, Vec<Step>)> = Vec::new();
    let mut shared: Vec<(String, Vec<Step>)> = Vec::new();
    for (tenant, group) in tenants {
        let Some(tenant) = tenant else { continue };
        if group.iter().any(|s| matches!(s.kind, StepKind::OutsideTransaction | StepKind::Purge)) {
            shared.push((tenant, group));
            continue;
        }
        let (late, early): (Vec<Step>, Vec<Step>) = group.into_iter().partition(|s| s.kind == StepKind::SharedRow);
        if !early.is_empty() {
            own.push((tenant.clone(), early));
        }
        if !late.is_empty() {
            shared.push((tenant, late));
        }
    }
    let offboarded: Vec<String> = own
        .iter()
        .chain(shared.iter())
        .filter(|(_, group)| group.iter().any(|s| s.kind == StepKind::Offboard))
        .map(|(t, _)| t.clone())
        .collect();
    let queue = std::sync::Mutex::new(std::collections::VecDeque::from(own));
    if let Some(options) = parallel.filter(|_| queue.lock().map(|q| q.len() >= PARALLEL_MIN).unwrap_or(false)) {
        let n = queue.lock().map(|q| q.len()).unwrap_or(0);
        tracing::info!(tenants = n, "applying on parallel connections");
        // Concurrent in this task (the work happens in PostgreSQL's backends), not spawned.
        let (a, b, c) = tokio::join!(worker(&queue, options), worker(&queue, options), worker(&queue, options));
        for (tenant, e) in a.into_iter().chain(b).chain(c) {
            errors.insert(tenant, e);
        }
    }
    let rest: Vec<(String, Vec<Step>)> = queue.lock().map(|mut q| q.drain(..).collect()).unwrap_or_default();
    for (tenant, group) in rest.into_iter().chain(shared) {
        if errors.contains_key(&tenant) {
            continue;
        }
        if let Err(e) = run_group(conn, Some(&tenant), &group).await {
            errors.insert(tenant, e);
        }
    }
    // Offboarded tenants' open sessions end once their login is refused.
    for t in offboarded.iter().filter(|t| !errors.contains_key(*t)) {
        let _ = sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1")
            .bind(format!("tenant_{t}_user"))
            .execute(&mut *conn)
            .await;
    }
    Ok(())
}

/// The address pgBouncer (on this host, reaching PostgreSQL the way the agent does) logs in
/// from, as PostgreSQL sees it.
pub(super) async fn pooler_source(conn: &mut PgConnection) -> Result<crate::db::pghba::Pooler, String> {
    let addr: Option<String> = sqlx::query_scalar("SELECT host(inet_client_addr())")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| format!("cannot read the agent's client address: {e}"))?;
    match addr {
        None => Ok(crate::db::pghba::Pooler::UnixSocket),
        Some(a) => a.parse().map(crate::db::pghba::Pooler::Tcp).map_err(|e| format!("client address {a:?}: {e}")),
    }
}

/// `pg_hba.conf` as it is and as it should be (its managed block for `desired`). The agent runs
/// on the database host.
pub(super) async fn hba_file(
    conn: &mut PgConnection,
    desired: &[DbTenant],
    main_db: &str,
    pooler: Option<crate::db::pghba::Pooler>,
) -> Result<(std::path::PathBuf, String, String), String> {
    let path: String = sqlx::query_scalar("SELECT setting FROM pg_settings WHERE name = 'hba_file'")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| format!("cannot find pg_hba.conf: {e}"))?;
    let path = std::path::PathBuf::from(path);
    let existing = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {} (the agent must run on the database host): {e}", path.display()))?;
    let wanted = crate::db::pghba::splice(&existing, &crate::db::pghba::render(desired, main_db, pooler));
    Ok((path, existing, wanted))
}

/// Observes `pg_hba.conf`, rewrites its managed block when it differs (atomically, keeping the
/// file's owner and mode), and reloads PostgreSQL.
pub(super) async fn sync_hba(
    conn: &mut PgConnection,
    desired: &[DbTenant],
    main_db: &str,
    pooler: Option<crate::db::pghba::Pooler>,
) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let (path, existing, wanted) = hba_file(conn, desired, main_db, pooler).await?;
    if wanted == existing {
        return Ok(());
    }
    let meta = std::fs::metadata(&path).map_err(|e| format!("stat {}: {e}", path.display()))?;
    let owner = berqenas_common::files::Owner { uid: meta.uid(), gid: meta.gid() };
    crate::host::files::write_owned(&path, wanted.as_bytes(), meta.mode() & 0o7777, Some(owner))
        .map_err(|e| e.to_string())?;
    sqlx::query("SELECT pg_reload_conf()").execute(&mut *conn).await.map_err(|e| format!("reload: {e}"))?;
    let broken: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_hba_file_rules WHERE error IS NOT NULL")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| format!("check pg_hba.conf: {e}"))?;
    if broken > 0 {
        return Err(format!("{} has {broken} invalid line(s)", path.display()));
    }
    tracing::info!(path = %path.display(), "rewrote the managed block of pg_hba.conf");
    Ok(())
}
