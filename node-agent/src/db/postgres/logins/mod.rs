//! Logins and failed logins of this node's tenant roles, observed in PostgreSQL's own log and
//! reported to the coordinators as security events (issue 12).
//!
//! PostgreSQL writes them when `log_connections = on` (a login: `connection authorized`) and
//! always for a refused one (a FATAL with a login SQLSTATE). The agent reads the server's
//! **jsonlog** (`log_destination` including `jsonlog`, which needs `logging_collector = on`)
//! over its own superuser connection — `pg_current_logfile('jsonlog')` and
//! `pg_read_binary_file(file, offset, length)` — so the agent may run on another host than the
//! server, and reads only complete lines, at most `MAX_READ` bytes per tick. It keeps a cursor
//! (file and offset) so each line is read once; on a rotation it finishes the old file, then
//! starts the new one at 0. The first look ever starts at the end of the current file.
//!
//! What a line becomes is `parse::line` (only a tenant role, an address, a fixed reason and the
//! time; never the message). A tick's logins are folded (identical tenant, role, outcome, client
//! address and reason become one with a count) and bounded per tenant (`MAX_PER_TENANT`
//! itemised; past that one per role and outcome, client unknown). Each gets the next number
//! (`seq`) and waits in the outbox, repeated in every report until a desired state says the
//! coordinators recorded it (`DesiredState.db_logins_recorded`). The cursor, the next number and
//! the outbox are one 0600 file (`db-logins.json`) written after every change, so a restart
//! neither loses nor repeats a login. A full outbox (`MAX_OUTBOX`, coordinators unreachable)
//! stops the reading until it drains: the log waits, nothing is dropped.
//!
//! If the server's settings keep logins from being seen, the node reports the condition
//! `db-logins-unobserved` naming what to set, instead of silently nothing.

pub mod parse;

use crate::driver::Condition;
use crate::host::files::write_atomic;
use berqenas_common::tenancy::LoginFailure;
use parse::{Client, Seen};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// How often the log is read.
pub const TICK: Duration = Duration::from_secs(2);
/// Most bytes of log read per tick.
pub const MAX_READ: i64 = 1 << 20;
/// Logins one tenant adds per tick, itemised; the rest are folded per role and outcome.
pub const MAX_PER_TENANT: usize = 8;
/// Logins held until the coordinators record them; past this the reading pauses.
pub const MAX_OUTBOX: usize = 512;
/// Ticks after which the watcher's session is replaced by a new one.
const RECONNECT_EVERY: u32 = 30;
/// The condition reported while logins cannot be seen.
pub const UNOBSERVED: &str = "db-logins-unobserved";

/// One login waiting to be recorded (what goes on the wire as `DbLogin`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Login {
    pub seq: u64,
    pub tenant: String,
    pub role: String,
    pub failure: Option<LoginFailure>,
    /// `ip:port` or `local`; `None`: not known (or several, folded).
    pub client: Option<String>,
    pub at_ms: u64,
    pub count: u32,
}

/// Where the reading is, what is numbered next and what waits; persisted as one file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The jsonlog file (as `pg_current_logfile` names it) and the offset of the next line.
    pub file: Option<String>,
    pub offset: u64,
    pub next_seq: u64,
    pub outbox: Vec<Login>,
}

impl Progress {
    /// Numbers and folds one tick's logins into the outbox (pure). `now_ms` stands in for a
    /// line whose time could not be read.
    pub fn add(&mut self, seen: Vec<Seen>, now_ms: u64) {
        type Key = (String, String, Option<LoginFailure>, Option<IpAddr>, bool);
        let mut index: BTreeMap<Key, usize> = BTreeMap::new();
        let mut itemised: BTreeMap<String, usize> = BTreeMap::new();
        let mut new: Vec<Login> = Vec::new();
        for s in seen {
            let ip = s.client.as_ref().map(|c| c.ip());
            let key: Key =
                (s.tenant.clone(), s.role.clone(), s.failure, ip.flatten(), matches!(s.client, Some(Client::Local)));
            if let Some(&i) = index.get(&key) {
                new[i].count = new[i].count.saturating_add(1);
                continue;
            }
            let n = itemised.entry(s.tenant.clone()).or_default();
            let (key, client) = if *n < MAX_PER_TENANT {
                *n += 1;
                (key, s.client.map(|c| c.to_string()))
            } else {
                // Past the bound: one entry per role and outcome, whatever the address.
                ((s.tenant.clone(), s.role.clone(), s.failure, None, false), None)
            };
            match index.get(&key) {
                Some(&i) => new[i].count = new[i].count.saturating_add(1),
                None => {
                    index.insert(key, new.len());
                    new.push(Login {
                        seq: 0,
                        tenant: s.tenant,
                        role: s.role,
                        failure: s.failure,
                        client,
                        at_ms: s.at_ms.unwrap_or(now_ms),
                        count: 1,
                    });
                }
            }
        }
        for mut l in new {
            self.next_seq += 1;
            l.seq = self.next_seq;
            self.outbox.push(l);
        }
    }

    /// Forgets what the coordinators recorded (numbers up to `up_to`).
    pub fn recorded(&mut self, up_to: u64) -> bool {
        let before = self.outbox.len();
        self.outbox.retain(|l| l.seq > up_to);
        self.outbox.len() != before
    }

    /// Forgets logins of tenants no longer on this node (the coordinators would not take them).
    pub fn keep_tenants(&mut self, tenants: &BTreeSet<String>) -> bool {
        let before = self.outbox.len();
        self.outbox.retain(|l| tenants.contains(&l.tenant));
        self.outbox.len() != before
    }
}

/// The complete lines at the start of `bytes` and how many bytes they take. A chunk without a
/// line end that fills the whole read is one over-long line: skipped whole.
pub fn complete_lines(bytes: &[u8], full_read: bool) -> (Vec<&str>, usize) {
    let Some(end) = bytes.iter().rposition(|b| *b == b'\n') else {
        return (Vec::new(), if full_read { bytes.len() } else { 0 });
    };
    let lines = bytes[..end].split(|b| *b == b'\n').filter_map(|l| std::str::from_utf8(l).ok()).collect();
    (lines, end + 1)
}

struct Inner {
    tenants: Mutex<BTreeSet<String>>,
    progress: Mutex<Progress>,
    condition: Mutex<Option<Condition>>,
    outbox: watch::Sender<Vec<Login>>,
    path: PathBuf,
}

/// The login watcher of a PostgreSQL db node: its own task, its own connection.
#[derive(Clone)]
pub struct Logins {
    inner: Arc<Inner>,
}

impl Logins {
    /// Starts watching the server at `url` (the driver's superuser URL) for the roles of
    /// `tenants`; the cursor and outbox live in `data_dir/db-logins.json`.
    pub fn start(url: String, data_dir: &std::path::Path, tenants: BTreeSet<String>) -> Self {
        let path = data_dir.join("db-logins.json");
        let progress = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "db-logins.json is unreadable; logins are read from the log's end");
                Progress::default()
            }),
            Err(_) => Progress::default(),
        };
        let (outbox, _) = watch::channel(progress.outbox.clone());
        let inner = Arc::new(Inner {
            tenants: Mutex::new(tenants),
            progress: Mutex::new(progress),
            condition: Mutex::default(),
            outbox,
            path,
        });
        tokio::spawn(run(url, inner.clone()));
        Self { inner }
    }

    /// The node's PostgreSQL tenants, from each new desired state (their roles are the ones
    /// reported; waiting logins of tenants that left are forgotten).
    pub fn set_tenants(&self, tenants: BTreeSet<String>) {
        if let Ok(mut p) = self.inner.progress.lock() {
            if p.keep_tenants(&tenants) {
                save(&self.inner, &p);
            }
        }
        if let Ok(mut t) = self.inner.tenants.lock() {
            *t = tenants;
        }
    }

    /// The logins not yet recorded, as they change.
    pub fn outbox(&self) -> watch::Receiver<Vec<Login>> {
        self.inner.outbox.subscribe()
    }

    /// The coordinators recorded this node's logins up to `seq`.
    pub fn recorded(&self, seq: u64) {
        let Ok(mut p) = self.inner.progress.lock() else { return };
        if p.recorded(seq) {
            save(&self.inner, &p);
        }
    }

    /// `db-logins-unobserved` while the server's settings keep logins from being seen.
    pub fn conditions(&self) -> Vec<Condition> {
        self.inner.condition.lock().ok().and_then(|c| c.clone()).into_iter().collect()
    }
}

fn save(inner: &Inner, p: &Progress) {
    let _ = inner.outbox.send(p.outbox.clone());
    match serde_json::to_vec(p) {
        Ok(bytes) => {
            if let Err(e) = write_atomic(&inner.path, &bytes, 0o600) {
                tracing::warn!(error = %e, "could not save db-logins.json");
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not encode db-logins.json"),
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0))
}

fn unobserved(message: impl Into<String>) -> Option<Condition> {
    Some(Condition { kind: UNOBSERVED.into(), message: message.into() })
}

async fn run(url: String, inner: Arc<Inner>) {
    let mut conn: Option<PgConnection> = None;
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u32;
    loop {
        interval.tick().await;
        if inner.progress.lock().map_or(true, |p| p.outbox.len() >= MAX_OUTBOX) {
            continue;
        }
        ticks += 1;
        if ticks.is_multiple_of(RECONNECT_EVERY) {
            // A new session sees settings changed since (log_connections takes effect per session).
            if let Some(c) = conn.take() {
                let _ = c.close().await;
            }
        }
        if conn.is_none() {
            match connect(&url).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    set_condition(&inner, unobserved(format!("cannot connect to PostgreSQL to read its log: {e}")));
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        match tick(c, &inner).await {
            Ok(condition) => set_condition(&inner, condition),
            Err(e) => {
                set_condition(&inner, unobserved(format!("cannot read PostgreSQL's log: {e}")));
                if let Some(c) = conn.take() {
                    let _ = c.close().await;
                }
            }
        }
    }
}

fn set_condition(inner: &Inner, condition: Option<Condition>) {
    if let Ok(mut c) = inner.condition.lock() {
        if *c != condition {
            match &condition {
                Some(c) => tracing::warn!(message = %c.message, "{UNOBSERVED}"),
                None => tracing::info!("logins of tenant roles are read from PostgreSQL's jsonlog"),
            }
        }
        *c = condition;
    }
}

async fn connect(url: &str) -> Result<PgConnection, sqlx::Error> {
    PgConnectOptions::from_str(url)?
        .application_name("berqenas-logins")
        .disable_statement_logging()
        .options([("search_path", "pg_catalog"), ("statement_timeout", "30s")])
        .connect()
        .await
}

/// One look at the log: reads what is new, adds its logins. Returns the condition to report.
async fn tick(conn: &mut PgConnection, inner: &Inner) -> Result<Option<Condition>, sqlx::Error> {
    let (current, connections, collector): (Option<String>, String, String) = sqlx::query_as(
        "SELECT pg_current_logfile('jsonlog'), current_setting('log_connections'), current_setting('logging_collector')",
    )
    .fetch_one(&mut *conn)
    .await?;
    let Some(current) = current else {
        return Ok(unobserved(format!(
            "PostgreSQL writes no jsonlog (logging_collector = {collector}): set logging_collector = on (needs a \
             restart) and add 'jsonlog' to log_destination, so logins of tenant roles are seen"
        )));
    };
    let mut progress = inner.progress.lock().map(|p| p.clone()).unwrap_or_default();
    let start = progress.clone();
    let file = match progress.file.clone() {
        Some(f) => f,
        None => {
            // The first look ever: from the current file's end (older logins are history).
            let size: i64 = sqlx::query_scalar::<_, Option<i64>>("SELECT size FROM pg_stat_file($1, true)")
                .bind(&current)
                .fetch_optional(&mut *conn)
                .await?
                .flatten()
                .unwrap_or(0);
            progress.file = Some(current.clone());
            progress.offset = u64::try_from(size).unwrap_or(0);
            current.clone()
        }
    };
    let offset = i64::try_from(progress.offset).unwrap_or(i64::MAX);
    let bytes: Option<Vec<u8>> = sqlx::query_scalar("SELECT pg_read_binary_file($1, $2, $3, true)")
        .bind(&file)
        .bind(offset)
        .bind(MAX_READ)
        .fetch_one(&mut *conn)
        .await?;
    let bytes = bytes.unwrap_or_default();
    let full = i64::try_from(bytes.len()).unwrap_or(i64::MAX) >= MAX_READ;
    let (lines, used) = complete_lines(&bytes, full);
    let tenants = inner.tenants.lock().map(|t| t.clone()).unwrap_or_default();
    let seen: Vec<Seen> = lines.iter().filter_map(|l| parse::line(l, &tenants)).collect();
    progress.offset += used as u64;
    if !seen.is_empty() {
        tracing::info!(logins = seen.len(), "logins of tenant roles read from PostgreSQL's log");
    }
    progress.add(seen, now_ms());
    if !full && file != current {
        // The old file is read to its end (or gone): the new one from its start.
        progress.file = Some(current);
        progress.offset = 0;
    } else if bytes.is_empty() && file == current {
        // The same name written anew (log_truncate_on_rotation): start it over.
        let size: Option<i64> = sqlx::query_scalar::<_, Option<i64>>("SELECT size FROM pg_stat_file($1, true)")
            .bind(&file)
            .fetch_optional(&mut *conn)
            .await?
            .flatten();
        if size.is_some_and(|s| u64::try_from(s).unwrap_or(0) < progress.offset) {
            progress.offset = 0;
        }
    }
    if progress != start {
        if let Ok(mut p) = inner.progress.lock() {
            // The outbox may have shrunk meanwhile (acknowledgements): keep that.
            let had: BTreeSet<u64> = start.outbox.iter().map(|l| l.seq).collect();
            let kept: BTreeSet<u64> = p.outbox.iter().map(|l| l.seq).collect();
            progress.outbox.retain(|l| !had.contains(&l.seq) || kept.contains(&l.seq));
            *p = progress;
            save(inner, &p);
        }
    }
    Ok(if connections != "on" {
        unobserved("log_connections is off: failed logins are seen, successful ones are not; set log_connections = on")
    } else {
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(tenant: &str, failure: Option<LoginFailure>, client: &str) -> Seen {
        Seen {
            tenant: tenant.into(),
            role: format!("tenant_{tenant}_user"),
            failure,
            client: Some(Client::Socket(client.parse().expect("addr"))),
            at_ms: Some(1000),
        }
    }

    #[test]
    fn identical_attempts_fold_and_each_login_is_numbered_once() {
        let mut p = Progress::default();
        let wrong = Some(LoginFailure::WrongPassword);
        p.add(
            vec![
                seen("acme", None, "192.0.2.5:1000"),
                seen("acme", wrong, "192.0.2.5:1001"),
                seen("acme", wrong, "192.0.2.5:1002"),
                seen("globex", wrong, "192.0.2.6:1000"),
            ],
            5,
        );
        let got: Vec<(u64, &str, u32)> = p.outbox.iter().map(|l| (l.seq, l.tenant.as_str(), l.count)).collect();
        assert_eq!(got, vec![(1, "acme", 1), (2, "acme", 2), (3, "globex", 1)]);
        assert_eq!(p.outbox[1].client.as_deref(), Some("192.0.2.5:1001"), "the first attempt's address");
        p.add(vec![seen("acme", None, "192.0.2.5:1003")], 5);
        assert_eq!(p.outbox.last().map(|l| l.seq), Some(4), "numbers only grow");

        assert!(p.recorded(2));
        assert!(!p.recorded(2), "nothing more to forget");
        let tenants: BTreeSet<String> = ["acme".to_string()].into();
        assert!(p.keep_tenants(&tenants));
        let left: Vec<u64> = p.outbox.iter().map(|l| l.seq).collect();
        assert_eq!(left, vec![4], "recorded ones and a departed tenant's are forgotten");
    }

    #[test]
    fn a_flood_from_many_addresses_is_bounded_per_tenant() {
        let mut p = Progress::default();
        let wrong = Some(LoginFailure::WrongPassword);
        let flood: Vec<Seen> = (0..1000).map(|i| seen("acme", wrong, &format!("198.51.100.{}:5", i % 250))).collect();
        p.add(flood, 0);
        assert_eq!(p.outbox.len(), MAX_PER_TENANT + 1, "itemised, then one for the rest");
        assert_eq!(p.outbox.iter().map(|l| u64::from(l.count)).sum::<u64>(), 1000, "every attempt counted");
        assert_eq!(p.outbox.last().and_then(|l| l.client.clone()), None);
    }

    #[test]
    fn only_complete_lines_are_taken() {
        let (lines, used) = complete_lines(b"{\"a\":1}\n{\"b\":2}\n{\"c\"", false);
        assert_eq!((lines, used), (vec!["{\"a\":1}", "{\"b\":2}"], 16));
        assert_eq!(complete_lines(b"{\"partial\"", false), (vec![], 0), "waits for the rest");
        assert_eq!(complete_lines(b"xxxx", true).1, 4, "an over-long line is skipped whole");
    }
}
