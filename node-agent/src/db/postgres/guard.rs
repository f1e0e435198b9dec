//! The platform's limits on tenant sessions of a PostgreSQL node, enforced from outside the
//! sessions, once a second. A tenant can `SET statement_timeout = 0` and
//! `SET idle_in_transaction_session_timeout = 0` (role defaults are defaults, not limits), hold
//! a lock for ever, stop reading its socket while LISTENing, or write gigabytes in one statement
//! between two quota measurements. The guard, on its own superuser connection:
//!
//! - cancels statements running longer than the statement limit, ends sessions idle in a
//!   transaction longer than the idle limit, transactions older than the transaction limit, and
//!   idle sessions stuck sending to a client that does not read (they pin the notification
//!   queue); while that cluster-wide queue is more than a quarter full, any session holding a
//!   transaction open for more than 10 s is ended, since only such a session (or a stuck one)
//!   can keep the queue from draining — one tenant cannot fill it for everyone;
//! - ends sessions holding an exclusive lock on a relation longer than the exclusive-lock limit
//!   (a table rewritten in an open transaction grows unmeasured until it commits);
//! - measures, without locks ([`super::size`]), every tenant that ran something since the last
//!   tick; one found over its quota (and not yet held to it) has its sessions ended and the
//!   reconcile loop woken to revoke its writes at once, and its sessions keep being ended until
//!   that is done. The overrun is bounded by about one tick of the tenant's write rate.
//!
//! `judge` and `hot` are pure; `run` is the loop.

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgConnection, Row};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the guard looks.
pub const TICK: Duration = Duration::from_secs(1);

/// Above this fill of the notification queue, sessions that can pin it are ended.
pub const QUEUE_PRESSURE: f64 = 0.25;

/// Under queue pressure, transactions older than this are ended.
const QUEUE_PRESSURE_TRANSACTION: Duration = Duration::from_secs(10);

/// Hard limits on tenant sessions, above the role defaults the tenant may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub statement: Duration,
    pub idle_in_transaction: Duration,
    pub transaction: Duration,
    /// An exclusive lock on a relation held longer ends the session: a table rewritten inside an
    /// open transaction (TRUNCATE, ALTER TABLE, CLUSTER) lives in a new file the catalogs show
    /// only at commit, so its growth is not measured until then.
    pub exclusive_lock: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        // A little above the role defaults (30 s, 60 s), so those fire first for tenants that
        // leave them alone.
        Self {
            statement: Duration::from_secs(35),
            idle_in_transaction: Duration::from_secs(65),
            transaction: Duration::from_secs(600),
            exclusive_lock: Duration::from_secs(30),
        }
    }
}

/// A tenant the driver wants watched: its quota and where its data lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watched {
    pub quota: u64,
    pub own_database: bool,
    /// May create objects (its object count is watched too).
    pub ddl: bool,
}

/// What the driver and the guard share.
#[derive(Default)]
pub struct Shared {
    /// The node's PostgreSQL tenants, as of the driver's last pass.
    pub tenants: Mutex<BTreeMap<String, Watched>>,
    /// The latest measured bytes per tenant, by the guard or by a full pass.
    pub sizes: Mutex<BTreeMap<String, u64>>,
    /// Tenants the guard found over quota that no pass has enforced yet.
    pub pending: Mutex<BTreeSet<String>>,
    /// Tenants whose writes the last pass revoked for their quota.
    pub enforced: Mutex<BTreeSet<String>>,
    /// Wakes the reconcile loop.
    pub wake: Arc<tokio::sync::Notify>,
    /// When the guard last completed a tick, or why it could not.
    pub health: Mutex<Health>,
}

/// The guard's last tick.
#[derive(Debug, Default)]
pub struct Health {
    pub last_ok: Option<Instant>,
    pub last_error: Option<String>,
}

impl Shared {
    /// Why tenants cannot be held to their limits now: the guard has not completed a tick for
    /// `grace` (None while it is working).
    pub fn failure(&self, grace: Duration) -> Option<String> {
        let health = self.health.lock().ok()?;
        if health.last_ok.is_some_and(|t| t.elapsed() <= grace) {
            return None;
        }
        let why = health.last_error.clone().unwrap_or_else(|| "it has not run yet".to_string());
        Some(format!("the session guard is not enforcing limits: {why}"))
    }
}

/// A tenant's session as `pg_stat_activity` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub pid: i32,
    pub tenant: String,
    pub state: String,
    pub wait_event: Option<String>,
    /// Seconds since the current (or last) statement started.
    pub query_secs: f64,
    /// Seconds since the transaction started, if one is open.
    pub xact_secs: Option<f64>,
    /// Seconds since `state` last changed.
    pub state_secs: f64,
    /// Holds an `AccessExclusiveLock` on a relation.
    pub exclusive: bool,
    /// Locks it holds (the lock table is one per server, shared by every tenant).
    pub locks: i64,
}

/// A session holding more locks than this is ended at once: the server's lock table is shared,
/// and a tenant filling it fails every connection, the agent's and superusers' included.
pub const MAX_LOCKS: i64 = 1_000;

/// What the guard remembers between ticks: since when a session has been stuck writing to its
/// client, and since when it has held an exclusive lock.
#[derive(Debug, Default)]
pub struct Memory {
    stuck: BTreeMap<i32, Instant>,
    exclusive: BTreeMap<i32, Instant>,
    /// Tenants found over the object cap (reported once; forgotten when back under it).
    capped: BTreeSet<String>,
}

/// Running something (a statement, a fastpath function call, …), not idle.
fn running(s: &Session) -> bool {
    !(s.state.is_empty() || s.state == "idle" || s.state == "disabled" || s.state.starts_with("idle in transaction"))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Cancel { pid: i32, tenant: String, why: String },
    Terminate { pid: i32, tenant: String, why: String },
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Pure: what to do with each session, given the notification queue's fill (0–1). `memory`
/// is kept across ticks (entries of gone sessions are dropped).
pub fn judge(
    sessions: &[Session],
    limits: &Limits,
    queue_usage: f64,
    now: Instant,
    memory: &mut Memory,
) -> Vec<Verdict> {
    let mut verdicts = Vec::new();
    let pressure = queue_usage > QUEUE_PRESSURE;
    let alive = |pid: &i32| sessions.iter().any(|s| s.pid == *pid);
    memory.stuck.retain(|pid, _| alive(pid));
    memory.exclusive.retain(|pid, _| alive(pid));
    let limit = humantime::format_duration;
    for s in sessions {
        let (pid, tenant) = (s.pid, s.tenant.clone());
        let client_write = s.state == "idle" && s.wait_event.as_deref() == Some("ClientWrite");
        let stuck_for = match client_write {
            true => now.duration_since(*memory.stuck.entry(pid).or_insert(now)),
            false => {
                memory.stuck.remove(&pid);
                Duration::ZERO
            }
        };
        let exclusive_for = match s.exclusive {
            true => now.duration_since(*memory.exclusive.entry(pid).or_insert(now)),
            false => {
                memory.exclusive.remove(&pid);
                Duration::ZERO
            }
        };
        let why = if s.locks > MAX_LOCKS {
            Some(format!("holds {} locks, more than the {MAX_LOCKS} a session may", s.locks))
        } else if pressure && (client_write || s.xact_secs.is_some_and(|x| x > secs(QUEUE_PRESSURE_TRANSACTION))) {
            Some(format!("may pin the notification queue, {:.0}% full", queue_usage * 100.0))
        } else if s.xact_secs.is_some_and(|x| x > secs(limits.transaction)) {
            Some(format!("transaction open longer than {}", limit(limits.transaction)))
        } else if exclusive_for > limits.exclusive_lock {
            Some(format!("held an exclusive lock longer than {}", limit(limits.exclusive_lock)))
        } else if s.state.starts_with("idle in transaction") && s.state_secs > secs(limits.idle_in_transaction) {
            Some(format!("idle in a transaction longer than {}", limit(limits.idle_in_transaction)))
        } else if stuck_for > limits.idle_in_transaction {
            Some("not reading from its connection (holds the notification queue)".to_string())
        } else {
            None
        };
        if let Some(why) = why {
            verdicts.push(Verdict::Terminate { pid, tenant, why });
        } else if running(s) && s.query_secs > secs(limits.statement) {
            let why = format!("{} ran longer than {}", s.state, limit(limits.statement));
            verdicts.push(Verdict::Cancel { pid, tenant, why });
        }
    }
    verdicts
}

/// Pure: tenants that ran something since the last tick (or are running now): the ones whose
/// size may have changed.
pub fn hot(sessions: &[Session]) -> BTreeSet<String> {
    sessions.iter().filter(|s| running(s) || s.state_secs <= 2.0 * secs(TICK)).map(|s| s.tenant.clone()).collect()
}

/// Runs the guard for ever on connections made from `options` (reconnecting after failures).
pub async fn run(options: PgConnectOptions, shared: Arc<Shared>, limits: Limits) {
    let mut conn: Option<PgConnection> = None;
    let mut memory = Memory::default();
    let mut last_error: Option<Instant> = None;
    loop {
        tokio::time::sleep(TICK).await;
        if conn.is_none() {
            conn = options.connect().await.ok();
        }
        let Some(c) = conn.as_mut() else {
            if let Ok(mut h) = shared.health.lock() {
                h.last_error = Some("cannot connect to PostgreSQL".to_string());
            }
            continue;
        };
        let result = tick(c, &shared, &limits, &mut memory).await;
        if let Ok(mut h) = shared.health.lock() {
            match &result {
                Ok(()) => h.last_ok = Some(Instant::now()),
                Err(e) => h.last_error = Some(e.clone()),
            }
        }
        if let Err(e) = result {
            if last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                tracing::warn!(error = %e, "session guard: tick failed; reconnecting");
                last_error = Some(Instant::now());
            }
            conn = None;
        }
    }
}

async fn tick(conn: &mut PgConnection, shared: &Shared, limits: &Limits, memory: &mut Memory) -> Result<(), String> {
    let rows = sqlx::query(
        "SELECT pid, usename::text AS u, COALESCE(state, '') AS state, wait_event, \
         COALESCE(EXTRACT(epoch FROM now() OPERATOR(pg_catalog.-) query_start), 0)::float8 AS q, \
         EXTRACT(epoch FROM now() OPERATOR(pg_catalog.-) xact_start)::float8 AS x, \
         COALESCE(EXTRACT(epoch FROM now() OPERATOR(pg_catalog.-) state_change), 0)::float8 AS s, \
         EXISTS (SELECT 1 FROM pg_catalog.pg_locks l WHERE l.pid OPERATOR(pg_catalog.=) a.pid \
                 AND l.locktype OPERATOR(pg_catalog.=) 'relation' \
                 AND l.mode OPERATOR(pg_catalog.=) 'AccessExclusiveLock' AND l.granted) AS xl, \
         (SELECT pg_catalog.count(*) FROM pg_catalog.pg_locks l WHERE l.pid OPERATOR(pg_catalog.=) a.pid) AS nl \
         FROM pg_catalog.pg_stat_activity a WHERE backend_type OPERATOR(pg_catalog.=) 'client backend' \
         AND usename OPERATOR(pg_catalog.~) '^tenant_[a-z][a-z0-9_]{1,30}_user$'",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| format!("reading sessions: {e}"))?;
    let mut sessions = Vec::with_capacity(rows.len());
    for r in rows {
        let user: String = r.try_get("u").map_err(|e| e.to_string())?;
        let Some(tenant) = user.strip_prefix("tenant_").and_then(|n| n.strip_suffix("_user")) else { continue };
        sessions.push(Session {
            pid: r.try_get("pid").map_err(|e| e.to_string())?,
            tenant: tenant.to_string(),
            state: r.try_get("state").map_err(|e| e.to_string())?,
            wait_event: r.try_get("wait_event").map_err(|e| e.to_string())?,
            query_secs: r.try_get("q").map_err(|e| e.to_string())?,
            xact_secs: r.try_get("x").map_err(|e| e.to_string())?,
            state_secs: r.try_get("s").map_err(|e| e.to_string())?,
            exclusive: r.try_get("xl").map_err(|e| e.to_string())?,
            locks: r.try_get("nl").map_err(|e| e.to_string())?,
        });
    }
    let queue_usage: f64 = sqlx::query_scalar("SELECT pg_catalog.pg_notification_queue_usage()")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| format!("reading the notification queue: {e}"))?;
    for verdict in judge(&sessions, limits, queue_usage, Instant::now(), memory) {
        match verdict {
            Verdict::Cancel { pid, tenant, why } => {
                tracing::info!(tenant, pid, why, "session guard cancels a statement");
                signal(conn, "pg_cancel_backend", pid).await?;
            }
            Verdict::Terminate { pid, tenant, why } => {
                tracing::info!(tenant, pid, why, "session guard ends a session");
                signal(conn, "pg_terminate_backend", pid).await?;
            }
        }
    }

    let watched = shared.tenants.lock().map(|t| t.clone()).unwrap_or_default();
    let hot = hot(&sessions);

    // Objects: a DDL tenant that ran something and owns more than it may loses CREATE now (no
    // lock needed; the pass keeps it revoked while it owns too many).
    let creators: Vec<String> = hot
        .iter()
        .filter(|n| watched.get(*n).is_some_and(|w| w.ddl && !w.own_database))
        .map(|n| format!("tenant_{n}_user"))
        .collect();
    if !creators.is_empty() {
        let counts = sqlx::query(
            "SELECT r.rolname::text AS u, pg_catalog.count(*) AS n FROM pg_catalog.pg_roles r \
             JOIN pg_catalog.pg_shdepend d ON d.refobjid OPERATOR(pg_catalog.=) r.oid \
             AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_authid'::pg_catalog.regclass \
             AND d.deptype OPERATOR(pg_catalog.=) 'o' \
             AND d.classid OPERATOR(pg_catalog.<>) 'pg_catalog.pg_default_acl'::pg_catalog.regclass \
             WHERE r.rolname::text OPERATOR(pg_catalog.=) ANY($1) GROUP BY r.rolname",
        )
        .bind(&creators)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| format!("counting tenant objects: {e}"))?;
        for row in counts {
            let user: String = row.try_get("u").map_err(|e| e.to_string())?;
            let n: i64 = row.try_get("n").map_err(|e| e.to_string())?;
            let Some(name) = user.strip_prefix("tenant_").and_then(|u| u.strip_suffix("_user")) else { continue };
            if n <= super::MAX_OBJECTS {
                memory.capped.remove(name);
                continue;
            }
            let first = memory.capped.insert(name.to_string());
            // A validated name (it came from an assignment), quoted.
            let revoke = format!("REVOKE CREATE ON SCHEMA \"tenant_{name}\" FROM \"{user}\"");
            sqlx::query(&revoke)
                .persistent(false)
                .execute(&mut *conn)
                .await
                .map_err(|e| format!("revoking CREATE: {e}"))?;
            // Its sessions go on: every CREATE checks the privilege afresh, so the revoke stops
            // a running loop at its next object, and a session may be the one dropping objects
            // to get back under the cap.
            if first {
                tracing::warn!(
                    tenant = name,
                    objects = n,
                    "session guard: tenant owns too many objects; CREATE revoked"
                );
                shared.wake.notify_one();
            }
        }
    }

    // Quota: measure whoever ran something; stop the ones over their quota at once.
    let (mut schemas, mut databases) = (BTreeSet::new(), BTreeSet::new());
    for name in hot.iter().filter(|n| watched.contains_key(*n)) {
        match watched[name].own_database {
            true => databases.insert(name.clone()),
            false => schemas.insert(name.clone()),
        };
    }
    let sizes = super::size::measure(conn, &schemas, &databases).await?;
    let mut over = Vec::new();
    let enforced = shared.enforced.lock().map(|e| e.clone()).unwrap_or_default();
    if let Ok(mut known) = shared.sizes.lock() {
        for (name, bytes) in sizes {
            if watched.get(&name).is_some_and(|w| bytes > w.quota) && !enforced.contains(&name) {
                over.push(name.clone());
            }
            known.insert(name, bytes);
        }
    }
    let mut wake = false;
    if let Ok(mut pending) = shared.pending.lock() {
        for name in &over {
            if pending.insert(name.clone()) {
                tracing::warn!(tenant = %name, "session guard: tenant over its quota; stopping its writes");
                wake = true;
            }
        }
        over = pending.iter().cloned().collect();
    }
    if wake {
        shared.wake.notify_one();
    }
    // Until a pass has revoked its writes, it holds no session (and no lock the pass needs).
    for s in sessions.iter().filter(|s| over.contains(&s.tenant)) {
        signal(conn, "pg_terminate_backend", s.pid).await?;
    }
    Ok(())
}

async fn signal(conn: &mut PgConnection, function: &'static str, pid: i32) -> Result<(), String> {
    let sql = match function {
        "pg_cancel_backend" => "SELECT pg_catalog.pg_cancel_backend($1)",
        _ => "SELECT pg_catalog.pg_terminate_backend($1)",
    };
    sqlx::query(sql).bind(pid).execute(&mut *conn).await.map(|_| ()).map_err(|e| format!("{function}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(pid: i32, state: &str) -> Session {
        Session {
            pid,
            tenant: "acme".into(),
            state: state.into(),
            wait_event: None,
            query_secs: 1.0,
            xact_secs: None,
            state_secs: 1.0,
            exclusive: false,
            locks: 1,
        }
    }

    #[test]
    fn statements_past_the_limit_are_cancelled_whatever_the_tenant_set() {
        let limits = Limits::default();
        let long = Session { query_secs: 36.0, xact_secs: Some(36.0), ..session(7, "active") };
        let short = Session { query_secs: 34.0, xact_secs: Some(34.0), ..session(8, "active") };
        let v = judge(&[long, short], &limits, 0.0, Instant::now(), &mut Memory::default());
        assert!(matches!(v.as_slice(), [Verdict::Cancel { pid: 7, .. }]), "{v:?}");
    }

    #[test]
    fn lock_holders_idle_in_a_transaction_are_ended() {
        let limits = Limits::default();
        let holder = Session { state_secs: 66.0, xact_secs: Some(70.0), ..session(9, "idle in transaction") };
        let v = judge(&[holder], &limits, 0.0, Instant::now(), &mut Memory::default());
        assert!(matches!(v.as_slice(), [Verdict::Terminate { pid: 9, .. }]), "{v:?}");
    }

    #[test]
    fn busy_transactions_end_at_the_transaction_limit() {
        let limits = Limits::default();
        // Never idle long, never one long statement: only the transaction's age catches it.
        let busy = Session { state_secs: 0.5, query_secs: 0.5, xact_secs: Some(601.0), ..session(3, "active") };
        let v = judge(&[busy], &limits, 0.0, Instant::now(), &mut Memory::default());
        assert!(matches!(v.as_slice(), [Verdict::Terminate { pid: 3, .. }]), "{v:?}");
    }

    #[test]
    fn a_listener_that_stops_reading_is_ended_after_the_idle_limit() {
        let limits = Limits::default();
        let mut stuck = Memory::default();
        let blocked = Session { wait_event: Some("ClientWrite".into()), state_secs: 5000.0, ..session(4, "idle") };
        let t0 = Instant::now();
        assert!(judge(std::slice::from_ref(&blocked), &limits, 0.0, t0, &mut stuck).is_empty(), "not at first sight");
        let later = t0 + Duration::from_secs(66);
        let v = judge(std::slice::from_ref(&blocked), &limits, 0.0, later, &mut stuck);
        assert!(matches!(v.as_slice(), [Verdict::Terminate { pid: 4, .. }]), "{v:?}");
        // A session that got unstuck starts over.
        let reading = session(4, "idle");
        assert!(judge(&[reading], &limits, 0.0, later, &mut stuck).is_empty());
        assert!(stuck.stuck.is_empty());
    }

    #[test]
    fn a_session_filling_the_shared_lock_table_is_ended_at_once() {
        let limits = Limits::default();
        let hoarder = Session { locks: MAX_LOCKS + 1, ..session(15, "idle") };
        let v = judge(&[hoarder], &limits, 0.0, Instant::now(), &mut Memory::default());
        assert!(matches!(v.as_slice(), [Verdict::Terminate { pid: 15, .. }]), "{v:?}");
    }

    #[test]
    fn fastpath_calls_are_held_to_the_statement_limit() {
        let limits = Limits::default();
        let call = Session { query_secs: 40.0, ..session(13, "fastpath function call") };
        let v = judge(&[call], &limits, 0.0, Instant::now(), &mut Memory::default());
        assert!(matches!(v.as_slice(), [Verdict::Cancel { pid: 13, .. }]), "{v:?}");
    }

    #[test]
    fn exclusive_locks_end_at_their_limit() {
        let limits = Limits::default();
        let mut memory = Memory::default();
        let rewriting = Session { exclusive: true, xact_secs: Some(5.0), ..session(14, "active") };
        let t0 = Instant::now();
        assert!(judge(std::slice::from_ref(&rewriting), &limits, 0.0, t0, &mut memory).is_empty());
        let later = t0 + Duration::from_secs(31);
        let v = judge(std::slice::from_ref(&rewriting), &limits, 0.0, later, &mut memory);
        assert!(matches!(v.as_slice(), [Verdict::Terminate { pid: 14, .. }]), "{v:?}");
        // Released meanwhile: the clock starts again.
        let released = Session { exclusive: false, ..rewriting.clone() };
        assert!(judge(&[released], &limits, 0.0, later, &mut memory).is_empty());
        assert!(judge(&[rewriting], &limits, 0.0, later + Duration::from_secs(1), &mut memory).is_empty());
    }

    #[test]
    fn under_queue_pressure_open_transactions_are_ended() {
        let limits = Limits::default();
        let pin = Session { state_secs: 12.0, xact_secs: Some(12.0), ..session(11, "idle in transaction") };
        let fresh = Session { state_secs: 2.0, xact_secs: Some(2.0), ..session(12, "idle in transaction") };
        let calm = judge(&[pin.clone(), fresh.clone()], &limits, 0.2, Instant::now(), &mut Memory::default());
        assert!(calm.is_empty(), "{calm:?}");
        let v = judge(&[pin, fresh], &limits, 0.3, Instant::now(), &mut Memory::default());
        assert!(matches!(v.as_slice(), [Verdict::Terminate { pid: 11, .. }]), "{v:?}");
    }

    #[test]
    fn idle_sessions_are_left_alone_and_not_measured() {
        let limits = Limits::default();
        let idle = Session { state_secs: 10_000.0, ..session(5, "idle") };
        assert!(judge(std::slice::from_ref(&idle), &limits, 0.0, Instant::now(), &mut Memory::default()).is_empty());
        assert!(hot(&[idle]).is_empty());
        let writer = Session { tenant: "globex".into(), ..session(6, "active") };
        let just_done = Session { tenant: "initech".into(), state_secs: 0.4, ..session(7, "idle") };
        assert_eq!(hot(&[writer, just_done]), BTreeSet::from(["globex".to_string(), "initech".to_string()]));
    }
}
