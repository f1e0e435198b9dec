//! The store's two threads: `raft-log-sync` (group commit of the journal) and `raft-store-flush`
//! (the applied state written behind and redb made durable), and the handles that talk to them.

use super::{encode, Committed, StoreError, RAFT_META};
use crate::raft::state_machine::{StateMachineStore, WriteBehind};
use crate::raft::wal::Wal;
use crate::raft::TypeConfig;
use openraft::storage::LogFlushed;
use redb::{Database, Durability};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Group commit of the log: `append` writes its entries to the journal (readable at once, so the
/// leader replicates them while its own disk syncs) and hands openraft's callback to this thread,
/// which makes everything written so far durable with one `fdatasync` and then reports every
/// batch that was waiting as flushed. Openraft counts an entry toward its quorum only once its
/// callback says so.
pub(super) fn spawn_syncer(wal: Arc<Wal>) -> Result<std::sync::mpsc::Sender<LogFlushed<TypeConfig>>, StoreError> {
    let (tx, rx) = std::sync::mpsc::channel::<LogFlushed<TypeConfig>>();
    let spawned = std::thread::Builder::new().name("raft-log-sync".into()).spawn(move || {
        while let Ok(first) = rx.recv() {
            let mut waiting = vec![first];
            waiting.extend(rx.try_iter());
            let synced = wal.sync();
            if let Err(e) = &synced {
                tracing::error!(error = %e, "raft log fsync failed");
            }
            for callback in waiting {
                let result = synced.as_ref().map(|_| ()).map_err(|e| std::io::Error::other(e.to_string()));
                callback.log_io_completed(result);
            }
        }
    });
    spawned.map_err(StoreError::Thread)?;
    Ok(tx)
}

/// What the flusher thread is asked to make durable.
pub(in crate::raft) enum Flush {
    /// Applied rows: made durable soon; nobody waits.
    Rows,
    /// Everything written so far: answered once durable.
    Sync(std::sync::mpsc::Sender<bool>),
}

/// The state machine's side of the flusher thread (`spawn_flusher`).
#[derive(Clone)]
pub(in crate::raft) struct Flusher {
    pub(super) tx: std::sync::mpsc::Sender<Flush>,
    /// Rows were written since the flusher last took them (one wake-up per round, not per apply).
    pub(super) rows: Arc<AtomicBool>,
}

impl Flusher {
    /// A batch was applied: its changes are written and made durable within `ROWS_LINGER`.
    pub(in crate::raft) fn rows(&self) {
        if !self.rows.swap(true, Ordering::AcqRel) {
            let _ = self.tx.send(Flush::Rows);
        }
    }
}

/// How long applied batches may stay unwritten. They are rebuilt from the log after a crash, so
/// this bounds only the work of a restart, the memory they hold meanwhile, and the size of one
/// write (the state's read lock is held while it runs).
const ROWS_LINGER: std::time::Duration = std::time::Duration::from_millis(20);

/// Writes the state machine's applied changes behind it and makes them durable: at most
/// `ROWS_LINGER` after a batch is applied, this thread writes everything applied since its last
/// round (`WriteBehind::write`, one redb commit for all those batches) and makes it durable with
/// a durable commit. Nothing of this is on an apply's or a reply's path. Applied changes lost to
/// a crash before it are rebuilt: a restart re-applies the log from the durable `last_applied`.
/// The committed log id openraft last saved rides along, no further than the journal is durable.
pub(super) fn spawn_flusher(
    rx: std::sync::mpsc::Receiver<Flush>,
    flusher: &Flusher,
    db: Arc<Database>,
    committed: Arc<std::sync::Mutex<Committed>>,
    wal: Arc<Wal>,
    behind: Arc<WriteBehind>,
) -> Result<(), StoreError> {
    let rows = flusher.rows.clone();
    let spawned = std::thread::Builder::new().name("raft-store-flush".into()).spawn(move || {
        while let Ok(first) = rx.recv() {
            let mut waiting = vec![first];
            if matches!(waiting[0], Flush::Rows) {
                // Rows wait a little, so that one commit carries many applies.
                if let Ok(more) = rx.recv_timeout(ROWS_LINGER) {
                    waiting.push(more);
                }
            }
            waiting.extend(rx.try_iter());
            let sync = waiting.iter().any(|f| matches!(f, Flush::Sync(_)));
            rows.store(false, Ordering::Release);
            let flushed = (|| -> Result<(), StoreError> {
                behind.write()?;
                if sync {
                    wal.sync()?;
                }
                let durable_log = wal.synced()?;
                let mut txn = db.begin_write()?;
                txn.set_durability(Durability::Immediate);
                let pending = match committed.lock() {
                    Ok(mut c) if c.dirty => {
                        let latest = c.latest.flatten();
                        if latest.map(|l| l.index) <= durable_log.map(|l| l.index) {
                            c.dirty = false;
                            Some(latest)
                        } else {
                            // The journal is not durable that far yet: a restart could not
                            // re-apply up to it. The durable part will do; the rest next time.
                            durable_log.map(Some)
                        }
                    }
                    _ => None,
                };
                if let Some(value) = pending {
                    txn.open_table(RAFT_META)?.insert("committed", encode(&value).as_slice())?;
                }
                txn.commit()?;
                Ok(())
            })();
            if let Err(e) = &flushed {
                tracing::error!(error = %e, "store fsync failed");
            }
            for flush in waiting {
                if let Flush::Sync(reply) = flush {
                    let _ = reply.send(flushed.is_ok());
                }
            }
        }
    });
    spawned.map_err(StoreError::Thread)?;
    Ok(())
}

/// Waits until everything written to the store so far is durable (at a clean shutdown).
#[derive(Clone)]
pub struct StoreSync {
    pub(in crate::raft) flusher: Flusher,
    pub(in crate::raft) sm: StateMachineStore,
}

impl StoreSync {
    pub fn sync(&self) -> Result<(), StoreError> {
        self.sm.write_applied()?;
        let (tx, rx) = std::sync::mpsc::channel();
        self.flusher.tx.send(Flush::Sync(tx)).map_err(|_| StoreError::Flush)?;
        match rx.recv() {
            Ok(true) => Ok(()),
            _ => Err(StoreError::Flush),
        }
    }
}
