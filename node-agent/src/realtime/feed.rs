//! The committed rows of one tenant's `events` table, in commit order, for subscribers: read
//! from PostgreSQL logical decoding, kept in a bounded window, fanned out live.
//!
//! Two logical slots per tenant, both `pgoutput` over a publication of `<schema>.events` only:
//! - `berqenas_rt_{t}` (live) is streamed over a replication connection (`replication.rs`) as
//!   rows commit — every inserted row, whoever inserted it (the ingest or the tenant's own SQL);
//!   while the server refuses a replication connection it is read through SQL instead
//!   (`pg_logical_slot_get_binary_changes`, which re-decodes from the slot's restart point on
//!   every call: slower, and later by up to a poll);
//! - `berqenas_rtk_{t}` (keep) lags behind at the start of the retention window: it is advanced
//!   only past transactions that left the in-memory window. After an agent restart (or any read
//!   error) the window is rebuilt by peeking the keep slot, and the live slot moved past what
//!   the peek returned, so a subscriber resuming within the window gets exactly the rows it
//!   missed.
//!
//! A row's cursor is its transaction's commit LSN and its position in the transaction: commit
//! LSNs increase in commit order, so cursors are totally ordered and a resume is "every row
//! after this cursor".
//! tidy: long because the window, the live and keep slots and their recovery are one state machine
//! whose invariants (cursor order, the keep slot never past the window) read best in one file;
//! its unit tests are at the end.

use super::pgoutput::{self, Message};
use super::replication::{self, Target};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, Notify};

/// Where a row stands in the tenant's commit order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cursor {
    pub lsn: u64,
    pub n: u32,
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}{:08x}", self.lsn, self.n)
    }
}

impl std::str::FromStr for Cursor {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        if s.len() != 24 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(());
        }
        let lsn = u64::from_str_radix(&s[..16], 16).map_err(|_| ())?;
        let n = u32::from_str_radix(&s[16..], 16).map_err(|_| ())?;
        Ok(Cursor { lsn, n })
    }
}

/// One committed row as subscribers receive it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub cursor: Cursor,
    /// End of its transaction's commit record: where the keep slot may move once it is gone.
    pub end_lsn: u64,
    /// Shared among the window's rows (few devices and types, many rows).
    pub device: Option<Arc<str>>,
    pub kind: Option<Arc<str>>,
    /// `{"id":…,"device_id":…,"type":…,"payload":…,"created_at":…}`, allocated to its length.
    pub data: Box<str>,
    pub at: Instant,
}

/// The cursor asked for is older than the retention window: rows after it are gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

#[derive(Debug, Default)]
struct Window {
    rows: VecDeque<Arc<Committed>>,
    /// A resume from a cursor below this would miss rows (the last row evicted, or on a fresh
    /// start the keep slot's position).
    floor: Option<Cursor>,
    /// The newest row ever pushed: a rebuild never pushes a row twice.
    last: Option<Cursor>,
    /// Bytes of the rows' data held.
    bytes: usize,
}

/// Largest payload a row keeps in the window (devices may send at most 64 KiB).
pub const MAX_ROW_PAYLOAD: usize = 256 * 1024;
/// Most bytes of row data one tenant's window holds, whatever its rows and age limits.
pub const MAX_WINDOW_BYTES: usize = 64 * 1024 * 1024;
/// Most changes one read of the live slot returns (whole transactions: it may be more). Large,
/// because each read first re-decodes the WAL since the slot's restart point (5,000 measured no
/// better in the bench, within its noise).
const READ_CHANGES: i32 = 20_000;

/// A subscriber's start: the rows it missed, and the receiver of every row after them.
pub type Attached = (VecDeque<Arc<Committed>>, broadcast::Receiver<Arc<Committed>>);

/// One tenant's feed: the window and the live fan-out.
#[derive(Debug)]
pub struct Feed {
    pub tenant: String,
    window: Mutex<Window>,
    live: broadcast::Sender<Arc<Committed>>,
    /// Rung by the ingest after a commit, so that a feed reading through SQL reads at once.
    pub wake: Notify,
    pub subscribers: AtomicUsize,
    /// The window was built once: a resume can be answered exactly.
    pub ready: AtomicBool,
}

impl Feed {
    pub fn new(tenant: &str) -> Self {
        let (live, _) = broadcast::channel(8192);
        Self {
            tenant: tenant.to_string(),
            window: Mutex::new(Window::default()),
            live,
            wake: Notify::new(),
            subscribers: AtomicUsize::new(0),
            ready: AtomicBool::new(false),
        }
    }

    /// The rows after `after` still in the window and a receiver for every later row, taken
    /// under one lock so that no row falls between them. None: from now on.
    pub fn attach(&self, after: Option<Cursor>) -> Result<Attached, Gone> {
        let w = self.window.lock().map_err(|_| Gone)?;
        let backlog = match after {
            None => VecDeque::new(),
            Some(c) => {
                if w.floor.is_some_and(|f| c < f) {
                    return Err(Gone);
                }
                let start = w.rows.partition_point(|r| r.cursor <= c);
                w.rows.range(start..).cloned().collect()
            }
        };
        Ok((backlog, self.live.subscribe()))
    }

    /// Appends committed rows (in commit order) and sends them live; rows at or before the
    /// newest already pushed are skipped.
    fn push(&self, rows: Vec<Committed>) {
        let Ok(mut w) = self.window.lock() else { return };
        for r in rows {
            if w.last.is_some_and(|l| r.cursor <= l) {
                continue;
            }
            w.last = Some(r.cursor);
            w.bytes += r.data.len();
            let r = Arc::new(r);
            w.rows.push_back(r.clone());
            let _ = self.live.send(r);
        }
    }

    /// Sets the floor when nothing was ever evicted (a fresh start: what the keep slot holds).
    fn start_floor(&self, floor: Cursor) {
        if let Ok(mut w) = self.window.lock() {
            if w.floor.is_none() {
                w.floor = Some(floor);
            }
        }
    }

    /// Drops rows older than `retention` or beyond `max_rows`; returns the end LSN of the last
    /// transaction that left the window whole (where the keep slot may move).
    fn evict(&self, now: Instant, retention: Duration, max_rows: usize) -> Option<u64> {
        let Ok(mut w) = self.window.lock() else { return None };
        let mut advance = None;
        while let Some(front) = w.rows.front().cloned() {
            if now.saturating_duration_since(front.at) <= retention
                && w.rows.len() <= max_rows
                && w.bytes <= MAX_WINDOW_BYTES
            {
                break;
            }
            w.rows.pop_front();
            w.bytes = w.bytes.saturating_sub(front.data.len());
            // A client that saw this row still gets every row after it.
            w.floor = Some(front.cursor);
            let txn_done = w.rows.front().is_none_or(|next| next.cursor.lsn != front.cursor.lsn);
            if txn_done {
                advance = Some(front.end_lsn);
            }
        }
        advance
    }

    pub fn len(&self) -> usize {
        self.window.lock().map(|w| w.rows.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Turns decoded messages into committed rows of `schema.events`; keeps relation ids across
/// calls.
#[derive(Debug, Default)]
pub struct Decoder {
    relations: BTreeMap<u32, Vec<String>>,
    /// The open transaction: its commit LSN and its rows so far (their `end_lsn` set at commit).
    txn: Option<(u64, Vec<Committed>)>,
    /// Device ids and event types seen lately, shared by the rows that carry them.
    names: HashSet<Arc<str>>,
}

/// Most names `Decoder::names` holds before it starts over.
const MAX_NAMES: usize = 4_096;

/// The shared copy of `s`.
fn intern(names: &mut HashSet<Arc<str>>, s: Option<&str>) -> Option<Arc<str>> {
    let s = s?;
    if let Some(n) = names.get(s) {
        return Some(n.clone());
    }
    if names.len() >= MAX_NAMES {
        names.clear();
    }
    let n: Arc<str> = Arc::from(s);
    names.insert(n.clone());
    Some(n)
}

fn json_str(s: Option<&str>) -> String {
    match s {
        Some(s) => serde_json::to_string(s).unwrap_or_else(|_| "null".into()),
        None => "null".into(),
    }
}

impl Decoder {
    /// Feeds one message; returns the rows of a transaction when its commit arrives.
    pub fn feed(&mut self, schema: &str, msg: Message, now: Instant) -> Vec<Committed> {
        match msg {
            Message::Begin { final_lsn, .. } => {
                self.txn = Some((final_lsn, Vec::new()));
            }
            Message::Relation { id, namespace, name, columns } => {
                if namespace == schema && name == "events" {
                    self.relations.insert(id, columns);
                } else {
                    self.relations.remove(&id);
                }
            }
            Message::Insert { relation, values } => {
                let (Some(columns), Some((lsn, rows))) = (self.relations.get(&relation), self.txn.as_mut()) else {
                    return Vec::new();
                };
                let get = |name: &str| columns.iter().position(|c| c == name).and_then(|i| values.get(i)?.as_deref());
                // The tenant's own SQL may store far larger documents than devices may send; the
                // window keeps at most MAX_ROW_PAYLOAD of one (readers take the rest from the
                // table by id).
                let payload = match get("payload") {
                    Some(p) if p.len() <= MAX_ROW_PAYLOAD => p,
                    Some(_) => "{\"berqenas_payload_too_large\":true}",
                    None => "null",
                };
                let data = format!(
                    "{{\"id\":{},\"device_id\":{},\"type\":{},\"payload\":{},\"created_at\":{}}}",
                    json_str(get("id")),
                    json_str(get("device_id")),
                    json_str(get("event_type")),
                    payload,
                    json_str(get("created_at")),
                );
                let n = u32::try_from(rows.len()).unwrap_or(u32::MAX);
                rows.push(Committed {
                    cursor: Cursor { lsn: *lsn, n },
                    end_lsn: 0,
                    device: intern(&mut self.names, get("device_id")),
                    kind: intern(&mut self.names, get("event_type")),
                    data: data.into_boxed_str(),
                    at: now,
                });
            }
            Message::Commit { end_lsn, .. } => {
                if let Some((_, rows)) = self.txn.take() {
                    return rows.into_iter().map(|r| Committed { end_lsn, at: now, ..r }).collect();
                }
            }
            Message::Other(_) => {}
        }
        Vec::new()
    }
}

/// `X/Y` (PostgreSQL's pg_lsn text) as a number.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// Names of a tenant's realtime objects: (live slot, keep slot, publication).
pub fn names(tenant: &str) -> (String, String, String) {
    (format!("berqenas_rt_{tenant}"), format!("berqenas_rtk_{tenant}"), format!("berqenas_rt_{tenant}"))
}

/// The tenant a realtime slot belongs to, from its name.
pub fn slot_tenant(slot: &str) -> Option<&str> {
    slot.strip_prefix("berqenas_rtk_").or_else(|| slot.strip_prefix("berqenas_rt_"))
}

/// How the feed task reads: where its rows come from and how long it keeps them.
pub struct Source {
    pub pool: sqlx::PgPool,
    /// The same database over a replication connection; None: read through SQL only.
    pub replication: Option<Target>,
    pub retention: Duration,
    pub max_rows: usize,
}

/// The keep slot is moved at most this often: each move decodes the WAL since its restart point.
const KEEP_ADVANCE_EVERY: Duration = Duration::from_secs(10);

const OPTS: &str = "'proto_version', '1', 'publication_names'";

async fn ensure_objects(pool: &sqlx::PgPool, tenant: &str) -> Result<(), sqlx::Error> {
    let (live, keep, publication) = names(tenant);
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1")
        .bind(&publication)
        .fetch_optional(pool)
        .await?;
    if exists.is_none() {
        // Identifiers from a validated tenant name (lowercase letters, digits, underscores).
        sqlx::query(&format!("CREATE PUBLICATION \"{publication}\" FOR TABLE \"tenant_{tenant}\".events"))
            .execute(pool)
            .await?;
    }
    let slots: Vec<String> = sqlx::query_scalar(
        "SELECT slot_name::text FROM pg_catalog.pg_replication_slots WHERE slot_name = ANY($1::text[])",
    )
    .bind(vec![live.clone(), keep.clone()])
    .fetch_all(pool)
    .await?;
    // The keep slot first: the live slot never starts before it.
    for slot in [&keep, &live] {
        if !slots.contains(slot) {
            sqlx::query("SELECT pg_catalog.pg_create_logical_replication_slot($1, 'pgoutput')")
                .bind(slot)
                .execute(pool)
                .await?;
        }
    }
    Ok(())
}

async fn changes(
    pool: &sqlx::PgPool,
    function: &str,
    slot: &str,
    publication: &str,
) -> Result<Vec<Vec<u8>>, sqlx::Error> {
    let limit = if function == "peek" { None } else { Some(READ_CHANGES) };
    sqlx::query_scalar(&format!(
        "SELECT data FROM pg_catalog.pg_logical_slot_{function}_binary_changes($1, NULL, $3, {OPTS}, $2)"
    ))
    .bind(slot)
    .bind(publication)
    .bind(limit)
    .fetch_all(pool)
    .await
}

fn decode(decoder: &mut Decoder, schema: &str, data: Vec<Vec<u8>>) -> Result<(Vec<Committed>, Option<u64>), String> {
    let now = Instant::now();
    let mut rows = Vec::new();
    let mut last_end = None;
    for d in data {
        let msg = pgoutput::parse(&d).map_err(|e| e.to_string())?;
        if let Message::Commit { end_lsn, .. } = msg {
            last_end = Some(end_lsn);
        }
        rows.extend(decoder.feed(schema, msg, now));
    }
    Ok((rows, last_end))
}

async fn confirmed(pool: &sqlx::PgPool, slot: &str) -> Result<Option<u64>, sqlx::Error> {
    let lsn: Option<Option<String>> = sqlx::query_scalar(
        "SELECT confirmed_flush_lsn::text FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
    )
    .bind(slot)
    .fetch_optional(pool)
    .await?;
    Ok(lsn.flatten().as_deref().and_then(parse_lsn))
}

async fn advance(pool: &sqlx::PgPool, slot: &str, lsn: u64) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1 FROM pg_catalog.pg_replication_slot_advance($1, $2::text::pg_lsn)")
        .bind(slot)
        .bind(format_lsn(lsn))
        .execute(pool)
        .await
        .map(|_| ())
}

/// Rebuilds the window from the keep slot and moves the live slot past it.
async fn rebuild(src: &Source, feed: &Feed, decoder: &mut Decoder) -> Result<(), String> {
    let (live, keep, publication) = names(&feed.tenant);
    let schema = format!("tenant_{}", feed.tenant);
    ensure_objects(&src.pool, &feed.tenant).await.map_err(|e| format!("realtime objects: {e}"))?;
    let floor = confirmed(&src.pool, &keep).await.map_err(|e| e.to_string())?.unwrap_or(0);
    feed.start_floor(Cursor { lsn: floor, n: 0 });
    *decoder = Decoder::default();
    let data = changes(&src.pool, "peek", &keep, &publication).await.map_err(|e| format!("peek: {e}"))?;
    let (rows, last_end) = decode(decoder, &schema, data)?;
    feed.push(rows);
    if let Some(end) = last_end {
        let at = confirmed(&src.pool, &live).await.map_err(|e| e.to_string())?.unwrap_or(0);
        if at < end {
            advance(&src.pool, &live, end).await.map_err(|e| format!("advance: {e}"))?;
        }
    }
    *decoder = Decoder::default();
    Ok(())
}

/// When to move the keep slot: rows leave the window, and at most every `KEEP_ADVANCE_EVERY`
/// the slot follows them. The move runs in a task of its own (it decodes the WAL since the
/// slot's restart point, which may take a while): the live slot is read meanwhile.
struct Keep {
    last_advance: Instant,
    /// Where the slot may move to.
    pending: Option<u64>,
    /// The move under way: its target and whether it succeeded.
    running: Option<(u64, tokio::task::JoinHandle<bool>)>,
}

impl Keep {
    fn new() -> Self {
        Self { last_advance: Instant::now(), pending: None, running: None }
    }

    async fn evict(&mut self, src: &Source, feed: &Feed) {
        if let Some(end) = feed.evict(Instant::now(), src.retention, src.max_rows) {
            self.pending = Some(end);
        }
        if let Some((end, task)) = self.running.take() {
            if !task.is_finished() {
                self.running = Some((end, task));
                return;
            }
            if task.await.unwrap_or(false) && self.pending == Some(end) {
                self.pending = None;
            }
        }
        let Some(end) = self.pending.filter(|_| self.last_advance.elapsed() > KEEP_ADVANCE_EVERY) else { return };
        self.last_advance = Instant::now();
        let (_, keep, _) = names(&feed.tenant);
        let (pool, tenant) = (src.pool.clone(), feed.tenant.clone());
        let task = tokio::spawn(async move {
            advance(&pool, &keep, end)
                .await
                .map_err(|e| tracing::warn!(%tenant, error = %e, "cannot advance the keep slot"))
                .is_ok()
        });
        self.running = Some((end, task));
    }
}

/// How a read of the live slot ended.
enum Ended {
    /// Streaming is not available (login refused, no walsender free): read by SQL for a while.
    Refused(String),
    /// The read broke: rebuild the window.
    Broken(String),
    /// The SQL reads' time is up: try streaming again.
    Retry,
}

/// After streaming is refused, the slot is read by SQL this long before streaming is tried again.
const POLL_AFTER_REFUSAL: Duration = Duration::from_secs(60);
/// A streaming reader tells the server what it has processed, and evicts, this often.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// Follows the live slot over a replication connection: each transaction arrives as it commits.
/// The slot is confirmed up to the last transaction pushed (or, between transactions, up to
/// what the server has decoded), so a restart resumes right after it.
async fn stream(src: &Source, feed: &Feed, decoder: &mut Decoder, keep: &mut Keep, target: &Target) -> Ended {
    let (live, _, publication) = names(&feed.tenant);
    let schema = format!("tenant_{}", feed.tenant);
    let mut conn = match replication::Conn::connect(target).await {
        Ok(c) => c,
        Err(e @ (replication::Error::Refused(_) | replication::Error::Io(_))) => return Ended::Refused(e.to_string()),
        Err(e) => return Ended::Broken(e.to_string()),
    };
    if let Err(e) = conn.start(&live, &publication).await {
        return Ended::Broken(e.to_string());
    }
    // A transaction cut by a broken stream is sent again whole.
    decoder.txn = None;
    let mut flushed = 0u64;
    let mut tick = tokio::time::interval(STATUS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let copy = tokio::select! {
            c = conn.next() => match c {
                Ok(c) => Some(c),
                Err(e) => return Ended::Broken(e.to_string()),
            },
            _ = tick.tick() => None,
        };
        let reply = match copy {
            Some(replication::Copy::XLogData { data, .. }) => {
                let msg = match pgoutput::parse(&data) {
                    Ok(m) => m,
                    Err(e) => return Ended::Broken(e.to_string()),
                };
                let end = match msg {
                    Message::Commit { end_lsn, .. } => Some(end_lsn),
                    _ => None,
                };
                let rows = decoder.feed(&schema, msg, Instant::now());
                if !rows.is_empty() {
                    feed.push(rows);
                    keep.evict(src, feed).await;
                }
                if let Some(end) = end {
                    flushed = flushed.max(end);
                }
                false
            }
            Some(replication::Copy::Keepalive { wal_end, reply }) => {
                // Between transactions everything before the server's position was sent.
                if decoder.txn.is_none() {
                    flushed = flushed.max(wal_end);
                }
                reply
            }
            None => {
                keep.evict(src, feed).await;
                true
            }
        };
        if reply && flushed > 0 {
            if let Err(e) = conn.status(flushed).await {
                return Ended::Broken(e.to_string());
            }
        }
    }
}

/// Reads the live slot through SQL until `until` (or a read fails): every 50 ms with
/// subscribers, 500 ms without, at once when the ingest commits.
async fn poll(src: &Source, feed: &Feed, decoder: &mut Decoder, keep: &mut Keep, until: Option<Instant>) -> Ended {
    let (live, _, publication) = names(&feed.tenant);
    let schema = format!("tenant_{}", feed.tenant);
    loop {
        if until.is_some_and(|t| Instant::now() >= t) {
            return Ended::Retry;
        }
        let data = match changes(&src.pool, "get", &live, &publication).await {
            Ok(d) => d,
            Err(e) => return Ended::Broken(format!("read: {e}")),
        };
        let full = data.len() >= READ_CHANGES as usize;
        match decode(decoder, &schema, data) {
            Ok((rows, _)) => feed.push(rows),
            Err(e) => return Ended::Broken(format!("undecodable change: {e}")),
        }
        keep.evict(src, feed).await;
        if full {
            continue;
        }
        let idle = if feed.subscribers.load(Ordering::Relaxed) > 0 { 50 } else { 500 };
        tokio::select! {
            _ = feed.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(idle)) => {}
        }
    }
}

/// Reads the tenant's committed rows until aborted: streamed over a replication connection,
/// or through SQL while streaming is refused. Errors are logged and the window rebuilt.
pub async fn run(src: Source, feed: Arc<Feed>) {
    let mut decoder = Decoder::default();
    let mut failures = 0u32;
    let mut refused_until: Option<Instant> = None;
    'rebuild: loop {
        if let Err(e) = rebuild(&src, &feed, &mut decoder).await {
            failures += 1;
            // A new tenant's table is made by the db driver's pass, which runs just after.
            if failures > 10 {
                tracing::warn!(tenant = %feed.tenant, error = %e, "realtime feed cannot start; retrying");
            } else {
                tracing::debug!(tenant = %feed.tenant, error = %e, "realtime feed cannot start yet; retrying");
            }
            tokio::time::sleep(Duration::from_millis(200 * u64::from(failures.min(25)))).await;
            continue;
        }
        failures = 0;
        feed.ready.store(true, Ordering::Release);
        let mut keep = Keep::new();
        loop {
            let streaming = src.replication.as_ref().filter(|_| refused_until.is_none_or(|t| Instant::now() >= t));
            let ended = match streaming {
                Some(target) => stream(&src, &feed, &mut decoder, &mut keep, target).await,
                None => poll(&src, &feed, &mut decoder, &mut keep, refused_until).await,
            };
            match ended {
                Ended::Refused(e) => {
                    tracing::warn!(tenant = %feed.tenant, error = %e, "cannot stream the realtime slot; reading it by SQL for now");
                    refused_until = Some(Instant::now() + POLL_AFTER_REFUSAL);
                }
                Ended::Retry => refused_until = None,
                Ended::Broken(e) => {
                    tracing::warn!(tenant = %feed.tenant, error = %e, "realtime feed read failed; rebuilding");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue 'rebuild;
                }
            }
        }
    }
}

/// Drops a tenant's slots and publication (purged or no longer on this node). Retries while a
/// slot is still in use by a read that is finishing.
pub async fn drop_objects(pool: &sqlx::PgPool, tenant: &str) -> Result<(), String> {
    let (live, keep, publication) = names(tenant);
    for slot in [live, keep] {
        let mut tries = 0;
        loop {
            let r = sqlx::query(
                "SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots \
                 WHERE slot_name = $1",
            )
            .bind(&slot)
            .execute(pool)
            .await;
            match r {
                Ok(_) => break,
                Err(e) if tries < 25 => {
                    tries += 1;
                    tracing::debug!(%slot, error = %e, "slot busy; retrying the drop");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(format!("drop slot {slot}: {e}")),
            }
        }
    }
    sqlx::query(&format!("DROP PUBLICATION IF EXISTS \"{publication}\""))
        .execute(pool)
        .await
        .map_err(|e| format!("drop publication: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(lsn: u64, n: u32, end: u64, at: Instant) -> Committed {
        Committed { cursor: Cursor { lsn, n }, end_lsn: end, device: None, kind: None, data: "".into(), at }
    }

    #[test]
    fn cursors_round_trip_and_order_by_commit_then_position() {
        let c = Cursor { lsn: 0x1_6B37_4800, n: 3 };
        assert_eq!(c.to_string().parse::<Cursor>(), Ok(c));
        assert!(Cursor { lsn: 1, n: 9 } < Cursor { lsn: 2, n: 0 });
        assert!("xyz".parse::<Cursor>().is_err());
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
    }

    #[test]
    fn resume_gets_exactly_the_rows_after_the_cursor_and_never_a_row_twice() {
        let t = Instant::now();
        let f = Feed::new("acme");
        f.push(vec![row(10, 0, 11, t), row(10, 1, 11, t), row(20, 0, 21, t)]);
        f.push(vec![row(10, 1, 11, t), row(30, 0, 31, t)]);
        let (backlog, _) = f.attach(Some(Cursor { lsn: 10, n: 0 })).expect("in window");
        let got: Vec<Cursor> = backlog.iter().map(|r| r.cursor).collect();
        assert_eq!(got, [Cursor { lsn: 10, n: 1 }, Cursor { lsn: 20, n: 0 }, Cursor { lsn: 30, n: 0 }]);
        let (backlog, _) = f.attach(None).expect("tail");
        assert!(backlog.is_empty(), "no cursor: from now on");
    }

    #[test]
    fn eviction_moves_the_floor_and_the_keep_slot_only_past_whole_transactions() {
        let t = Instant::now();
        let f = Feed::new("acme");
        f.push(vec![row(10, 0, 11, t), row(10, 1, 11, t), row(20, 0, 21, t)]);
        assert_eq!(f.evict(t, Duration::from_secs(60), 2), None, "half of transaction 10 left");
        assert_eq!(f.attach(Some(Cursor { lsn: 5, n: 0 })).err(), Some(Gone));
        assert!(f.attach(Some(Cursor { lsn: 10, n: 0 })).is_ok(), "resumable right after the evicted row");
        assert_eq!(f.evict(t, Duration::from_secs(60), 1), Some(11));
        assert_eq!(f.evict(t + Duration::from_secs(61), Duration::from_secs(60), 10), Some(21));
        assert!(f.is_empty());
    }

    #[test]
    fn decoder_keeps_only_the_tenants_events_rows_with_their_commit_position() {
        let mut d = Decoder::default();
        let t = Instant::now();
        let cols = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        d.feed("tenant_acme", Message::Begin { final_lsn: 100, xid: 1 }, t);
        d.feed(
            "tenant_acme",
            Message::Relation {
                id: 1,
                namespace: "tenant_acme".into(),
                name: "events".into(),
                columns: cols(&["id", "device_id", "event_type", "payload", "created_at"]),
            },
            t,
        );
        d.feed(
            "tenant_acme",
            Message::Relation {
                id: 2,
                namespace: "tenant_other".into(),
                name: "events".into(),
                columns: cols(&["id"]),
            },
            t,
        );
        let values = |v: &[Option<&str>]| v.iter().map(|s| s.map(str::to_string)).collect::<Vec<_>>();
        d.feed(
            "tenant_acme",
            Message::Insert {
                relation: 1,
                values: values(&[Some("u1"), Some("plc"), Some("t\"x"), Some("{\"a\":1}"), None]),
            },
            t,
        );
        d.feed("tenant_acme", Message::Insert { relation: 2, values: values(&[Some("u2")]) }, t);
        let rows = d.feed("tenant_acme", Message::Commit { commit_lsn: 100, end_lsn: 140 }, t);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].cursor, Cursor { lsn: 100, n: 0 });
        assert_eq!(rows[0].end_lsn, 140);
        let v: serde_json::Value = serde_json::from_str(&rows[0].data).expect("json");
        assert_eq!(v["type"], "t\"x");
        assert_eq!(v["payload"]["a"], 1);
        assert_eq!(v["created_at"], serde_json::Value::Null);

        // A huge document inserted by the tenant's SQL is not held in the window.
        let huge = format!("\"{}\"", "x".repeat(MAX_ROW_PAYLOAD));
        d.feed("tenant_acme", Message::Begin { final_lsn: 200, xid: 2 }, t);
        d.feed(
            "tenant_acme",
            Message::Insert { relation: 1, values: values(&[Some("u3"), None, None, Some(huge.as_str()), None]) },
            t,
        );
        let rows = d.feed("tenant_acme", Message::Commit { commit_lsn: 200, end_lsn: 240 }, t);
        assert!(rows[0].data.len() < 1_000, "payload left out");
        let v: serde_json::Value = serde_json::from_str(&rows[0].data).expect("json");
        assert_eq!(v["payload"]["berqenas_payload_too_large"], true);
    }
}
