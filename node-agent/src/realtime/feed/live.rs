//! Reading the live slot: streamed over a replication connection as transactions commit, or
//! polled through SQL while streaming is refused. Either way the rows go to the window.

use super::super::pgoutput::{self, Message};
use super::super::replication::{self, Target};
use super::decode::{decode, Decoder};
use super::slots::{changes, names, Keep, READ_CHANGES};
use super::window::Feed;
use super::Source;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How a read of the live slot ended.
pub(super) enum Ended {
    /// Streaming is not available (login refused, no walsender free): read by SQL for a while.
    Refused(String),
    /// The read broke: rebuild the window.
    Broken(String),
    /// The SQL reads' time is up: try streaming again.
    Retry,
}

/// A streaming reader tells the server what it has processed, and evicts, this often.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// Follows the live slot over a replication connection: each transaction arrives as it commits.
/// The slot is confirmed up to the last transaction pushed (or, between transactions, up to
/// what the server has decoded), so a restart resumes right after it.
pub(super) async fn stream(
    src: &Source,
    feed: &Feed,
    decoder: &mut Decoder,
    keep: &mut Keep,
    target: &Target,
) -> Ended {
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
pub(super) async fn poll(
    src: &Source,
    feed: &Feed,
    decoder: &mut Decoder,
    keep: &mut Keep,
    until: Option<Instant>,
) -> Ended {
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
