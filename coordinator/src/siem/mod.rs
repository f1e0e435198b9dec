//! Forwarding the audit chain to a SIEM (issue 12, SOC). The leader reads the stored trail after
//! its persisted cursor, a batch at a time, in sequence order, and sends each batch as RFC 5424
//! syslog frames or as JSON lines over HTTPS (`sink`); only a delivered batch moves the cursor
//! (`cursor`, 0600 in the data dir). Delivery is at least once: a SIEM outage, a restart or a
//! new leader resends from the cursor, never skips. Memory stays bounded however long the SIEM is
//! away: the backlog is the trail itself, read `BATCH` entries at a time, not a queue.
//!
//! Only the leader forwards; each coordinator keeps its own cursor, advanced only while it led.
//! After a failover the new leader resends from its own cursor (the whole trail if it never led
//! with this target): the SIEM sees duplicates, each recognisable by `cluster` + `seq` + `hash`.
//! Never: a secret in a message (audit details hold none), a plaintext fallback, a skipped seq.

pub mod config;
pub mod cursor;
pub mod message;
mod sink;

pub use config::{SiemArgs, Target};

use crate::server::Coordinator;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Entries per batch (one syslog write or one HTTPS request).
const BATCH: usize = 256;
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often an idle or non-leading forwarder looks again (new entries also wake it).
const IDLE: Duration = Duration::from_secs(1);

/// What `/metrics` shows about forwarding (this process forwards to at most one target).
#[derive(Debug, Default)]
pub struct Stats {
    enabled: AtomicBool,
    delivered: AtomicU64,
    errors: AtomicU64,
}

pub static STATS: Stats =
    Stats { enabled: AtomicBool::new(false), delivered: AtomicU64::new(0), errors: AtomicU64::new(0) };

impl Stats {
    /// `(last delivered seq, failed attempts since start)` when a SIEM is configured.
    pub fn get(&self) -> Option<(u64, u64)> {
        self.enabled
            .load(Ordering::Relaxed)
            .then(|| (self.delivered.load(Ordering::Relaxed), self.errors.load(Ordering::Relaxed)))
    }
}

/// A configured forwarder, its cursor loaded (a damaged cursor file stops `serve` before it binds).
pub struct Forwarder {
    target: Target,
    cursor: cursor::Cursor,
}

impl Forwarder {
    pub fn new(data_dir: &std::path::Path, target: Target) -> anyhow::Result<Self> {
        let cursor = cursor::load(data_dir, &target.describe())?;
        Ok(Self { target, cursor })
    }

    /// Forwards until `stop` flips.
    pub async fn run(mut self, c: Arc<Coordinator>, mut stop: tokio::sync::watch::Receiver<bool>) {
        STATS.enabled.store(true, Ordering::Relaxed);
        STATS.delivered.store(self.cursor.delivered_seq, Ordering::Relaxed);
        let target = self.target.describe();
        tracing::info!(target = %target, from_seq = self.cursor.delivered_seq + 1, "forwarding the audit trail to a SIEM");
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let mut sink = sink::Sink::new(self.target.clone());
        let mut applied = c.applied.clone();
        let mut backoff = MIN_BACKOFF;
        let mut applied_gone = false;
        loop {
            if *stop.borrow() {
                return;
            }
            let leading = c.leader().is_some_and(|(id, _)| id == c.config.id);
            let batch = if leading { self.next_batch(&c).await } else { Vec::new() };
            if batch.is_empty() {
                if !leading {
                    sink.close();
                }
                tokio::select! {
                    _ = stop.wait_for(|v| *v) => return,
                    changed = applied.changed() => if changed.is_err() { applied_gone = true },
                    _ = tokio::time::sleep(IDLE) => {}
                }
                if applied_gone {
                    // The state machine is gone (shutting down): only the timer paces the loop.
                    tokio::select! {
                        _ = stop.wait_for(|v| *v) => return,
                        _ = tokio::time::sleep(IDLE) => {}
                    }
                }
                continue;
            }
            let cluster = c.read(|d| d.state.settings.as_ref().map(|s| s.cluster_id.clone())).unwrap_or_default();
            let origin = message::Origin::new(&hostname, &cluster, c.config.id);
            match sink.send(&origin, &batch).await {
                Ok(()) => {
                    backoff = MIN_BACKOFF;
                    let last = batch.last().map_or(self.cursor.delivered_seq, |e| e.seq);
                    self.cursor.delivered_seq = last;
                    STATS.delivered.store(last, Ordering::Relaxed);
                    if let Err(e) = cursor::save(&c.data_dir, &self.cursor) {
                        tracing::warn!(error = %e, "could not save the SIEM cursor; a restart resends from the last saved one");
                    }
                }
                Err(e) => {
                    STATS.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, target = %target, next_seq = self.cursor.delivered_seq + 1, retry_in = ?backoff, "SIEM delivery failed");
                    sink.close();
                    tokio::select! {
                        _ = stop.wait_for(|v| *v) => return,
                        _ = tokio::time::sleep(jitter(backoff)) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// The next stored entries after the cursor, oldest first (empty on a read error: logged).
    async fn next_batch(&self, c: &Coordinator) -> Vec<crate::state::audit::AuditEntry> {
        let audit = c.audit.clone();
        let after = self.cursor.delivered_seq;
        match tokio::task::spawn_blocking(move || audit.page(|_| true, Some(after), None, BATCH)).await {
            Ok(Ok(page)) => page.entries,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not read the audit trail for the SIEM");
                Vec::new()
            }
            Err(e) => {
                tracing::warn!(error = %e, "audit read task failed");
                Vec::new()
            }
        }
    }
}

/// `d` plus up to a quarter of it, so coordinators restarted together do not retry in step.
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    if getrandom::getrandom(&mut b).is_err() {
        return d;
    }
    let quarter = d / 4;
    d + quarter.mul_f64(f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX))
}
