//! The tenant's realtime objects in PostgreSQL: the publication and the live and keep slots
//! (their names, creation, reads through SQL, moves and removal), the window's rebuild from the
//! keep slot, and the keep slot following the window.

use super::decode::{decode, Decoder};
use super::window::{Cursor, Feed};
use super::Source;
use std::time::{Duration, Instant};

/// Most changes one read of the live slot returns (whole transactions: it may be more). Large,
/// because each read first re-decodes the WAL since the slot's restart point (5,000 measured no
/// better in the bench, within its noise).
pub(super) const READ_CHANGES: i32 = 20_000;

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

pub(super) async fn changes(
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
pub(super) async fn rebuild(src: &Source, feed: &Feed, decoder: &mut Decoder) -> Result<(), String> {
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
pub(super) struct Keep {
    last_advance: Instant,
    /// Where the slot may move to.
    pending: Option<u64>,
    /// The move under way: its target and whether it succeeded.
    running: Option<(u64, tokio::task::JoinHandle<bool>)>,
}

impl Keep {
    pub(super) fn new() -> Self {
        Self { last_advance: Instant::now(), pending: None, running: None }
    }

    pub(super) async fn evict(&mut self, src: &Source, feed: &Feed) {
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
