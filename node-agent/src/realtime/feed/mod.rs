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
//!
//! Read in this order:
//! - `window`: `Cursor`, `Committed` and `Feed`: the bounded window a subscriber attaches to
//!   (backlog after its cursor + the live fan-out) and its eviction. No IO.
//! - `decode`: `pgoutput` messages → committed rows with their subscriber JSON. No IO.
//! - `slots`: the publication and both slots in PostgreSQL (create, read by SQL, move, drop),
//!   the window's rebuild from the keep slot, and `Keep`, which moves the keep slot behind it.
//! - `live`: the live slot read as it commits (streamed), or polled by SQL while streaming is
//!   refused.
//! - here: `run`, the feed task that ties them together (rebuild, read, rebuild on error).

mod decode;
mod live;
mod slots;
mod window;

pub use decode::{Decoder, MAX_ROW_PAYLOAD};
pub use slots::{drop_objects, format_lsn, names, parse_lsn, slot_tenant};
pub use window::{Attached, Committed, Cursor, Feed, Gone, MAX_WINDOW_BYTES};

use super::replication::Target;
use live::{poll, stream, Ended};
use slots::{rebuild, Keep};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// After streaming is refused, the slot is read by SQL this long before streaming is tried again.
const POLL_AFTER_REFUSAL: Duration = Duration::from_secs(60);

/// How the feed task reads: where its rows come from and how long it keeps them.
pub struct Source {
    pub pool: sqlx::PgPool,
    /// The same database over a replication connection; None: read through SQL only.
    pub replication: Option<Target>,
    pub retention: Duration,
    pub max_rows: usize,
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
