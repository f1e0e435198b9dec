//! The Raft log and vote in one redb file, shared with the state machine's tables
//! (`state_machine`, `tables`): its errors, its opening, and group commit (`spawn_flusher`).

use super::state_machine::StateMachineStore;
use super::{LogId, TypeConfig};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use redb::{Database, Durability, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Serialize};
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const RAFT_META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
pub(super) const SM_META: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_meta");
/// Audit entries by sequence number. Public so the tamper test can edit one.
pub const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// The offset index of the audit trail as a snapshot ships it: byte offset → the sequence number
/// of the entry starting there, one row every `snapshot::MARK_EVERY` entries.
pub(super) const AUDIT_MARKS: TableDefinition<u64, u64> = TableDefinition::new("audit_marks");

/// redb's page cache (its default is 1 GiB, which a long audit trail would fill): the log's tail,
/// the tables' upper levels and the pages an applied batch touches fit in far less.
const PAGE_CACHE_BYTES: usize = 32 << 20;

pub(super) type StorageResult<T> = Result<T, StorageError<u64>>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redb: {0}")]
    Db(Box<redb::Error>),
    #[error("start the store flusher thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("the store could not be made durable (see the log)")]
    Flush,
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("encode {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("snapshot: {0}")]
    Snapshot(&'static str),
    #[error("decode {what}: {source}")]
    Decode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

macro_rules! redb_from {
    ($($t:ty),*) => {$(impl From<$t> for StoreError {
        fn from(e: $t) -> Self { StoreError::Db(Box::new(e.into())) }
    })*};
}
redb_from!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

pub(super) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Our types serialize to JSON without failure (string keys, no non-finite floats).
    serde_json::to_vec(v).unwrap_or_default()
}

pub(super) fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Decode { what, source })
}

pub(super) fn io_read(e: impl Into<StoreError>) -> StorageError<u64> {
    let e: StoreError = e.into();
    StorageIOError::read(&e).into()
}

pub(super) fn io_write(e: impl Into<StoreError>) -> StorageError<u64> {
    let e: StoreError = e.into();
    StorageIOError::write(&e).into()
}

/// Opens (or creates) the store at `path` (snapshot files beside it in `snapshots/`) and loads
/// the state machine.
pub fn open(path: &Path) -> Result<(LogStore, StateMachineStore), StoreError> {
    let db = redb::Builder::new().set_cache_size(PAGE_CACHE_BYTES).create(path)?;
    {
        let txn = db.begin_write()?;
        txn.open_table(LOG)?;
        txn.open_table(RAFT_META)?;
        txn.open_table(SM_META)?;
        txn.open_table(AUDIT)?;
        txn.open_table(AUDIT_MARKS)?;
        for table in super::tables::TABLES {
            table.create(&txn)?;
        }
        txn.commit()?;
    }
    let db = Arc::new(db);
    let committed = Arc::new(std::sync::Mutex::new(Committed::default()));
    let flusher = spawn_flusher(db.clone(), committed.clone())?;
    let snapshots = path.parent().unwrap_or(Path::new(".")).join("snapshots");
    let sm = StateMachineStore::open(db.clone(), flusher.clone(), &snapshots)?;
    Ok((LogStore { db, flusher, committed }, sm))
}

/// Restores a Raft snapshot as shipped (`input`, positioned at its header line) into a new store
/// at `path` as the whole state of a single-voter cluster of `id` at `node` (`snapshot restore`):
/// the state machine at `meta`'s position with the membership replaced by `id` alone, an empty
/// log (openraft purges up to the applied position at start), and a vote at the snapshot's term,
/// so the node's first election comes after every entry the snapshot holds. Durable on return;
/// answers the restored state machine.
pub fn restore(
    path: &Path,
    meta: &openraft::SnapshotMeta<u64, super::CoordinatorNode>,
    id: u64,
    node: super::CoordinatorNode,
    input: Box<dyn super::snapshot::ReadSeek>,
) -> Result<super::state_machine::SmData, StoreError> {
    if path.exists() {
        return Err(StoreError::Snapshot("a store already exists where the snapshot is to be restored"));
    }
    let (log, sm) = open(path)?;
    let members = openraft::Membership::new(vec![[id].into()], std::collections::BTreeMap::from([(id, node)]));
    let meta = openraft::SnapshotMeta {
        last_log_id: meta.last_log_id,
        last_membership: openraft::StoredMembership::new(meta.last_log_id, members),
        snapshot_id: meta.snapshot_id.clone(),
    };
    let data = sm.install(&meta, input)?;
    let term = meta.last_log_id.map_or(0, |l| l.leader_id.term);
    log.meta_put("vote", &Vote::new(term, id), Durability::Immediate)?;
    log.meta_put("committed", &meta.last_log_id, Durability::Immediate)?;
    Ok(data)
}

/// The newest committed log id openraft reported (`save_committed`), written by the flusher's
/// next durable commit instead of a write transaction of its own on the commit path.
#[derive(Default)]
pub(super) struct Committed {
    latest: Option<Option<LogId>>,
    dirty: bool,
}

/// A read-only view of the newest commit index openraft saved (for `/metrics`; openraft 0.9's
/// `RaftMetrics` carries the applied index but not the committed one).
#[derive(Clone)]
pub struct CommitIndex(Arc<std::sync::Mutex<Committed>>);

impl CommitIndex {
    /// The committed log index this node knows, `None` before the first commit it saw.
    pub fn get(&self) -> Option<u64> {
        let c = match self.0.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        c.latest.flatten().map(|id| id.index)
    }
}

/// The Raft log and vote.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// Appended batches waiting for their fsync (see `spawn_flusher`).
    flusher: Flusher,
    committed: Arc<std::sync::Mutex<Committed>>,
}

/// What the flusher thread is asked to make durable.
pub(super) enum Flush {
    /// An appended batch: reported flushed after the fsync that covers it.
    Log(LogFlushed<TypeConfig>),
    /// Applied rows: made durable soon; nobody waits.
    Rows,
    /// Everything written so far: answered once durable.
    Sync(std::sync::mpsc::Sender<bool>),
}

pub(super) type Flusher = std::sync::mpsc::Sender<Flush>;

/// How long applied rows may stay non-durable when no append comes to carry them.
const ROWS_LINGER: std::time::Duration = std::time::Duration::from_millis(20);

/// Group commit: `append` writes its entries and `apply` its rows in non-durable redb commits
/// (visible at once, so the leader replicates entries while its own disk syncs, and a reply never
/// waits for the state machine's fsync) and tell this thread, which makes everything written so
/// far durable with one empty durable commit (one fsync) and then reports every batch that was
/// waiting as flushed. Openraft counts an entry toward its quorum only once its callback says so.
/// Applied rows lost to a crash before their fsync are rebuilt: a restart re-applies the log
/// from the durable `last_applied`.
/// The committed log id openraft last saved rides along in that commit.
fn spawn_flusher(db: Arc<Database>, committed: Arc<std::sync::Mutex<Committed>>) -> Result<Flusher, StoreError> {
    let (tx, rx) = std::sync::mpsc::channel::<Flush>();
    let spawned = std::thread::Builder::new().name("raft-store-flush".into()).spawn(move || {
        while let Ok(first) = rx.recv() {
            let mut waiting = vec![first];
            waiting.extend(rx.try_iter());
            // Applied rows alone wait a little: the next append's fsync usually covers them.
            let deadline = std::time::Instant::now() + ROWS_LINGER;
            while waiting.iter().all(|f| matches!(f, Flush::Rows)) {
                match rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
                    Ok(more) => waiting.push(more),
                    Err(_) => break,
                }
            }
            waiting.extend(rx.try_iter());
            let flushed = (|| -> Result<(), StoreError> {
                let mut txn = db.begin_write()?;
                txn.set_durability(Durability::Immediate);
                let pending = match committed.lock() {
                    Ok(mut c) if c.dirty => {
                        c.dirty = false;
                        c.latest
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
                match flush {
                    Flush::Log(callback) => {
                        let result = flushed.as_ref().map(|_| ()).map_err(|e| std::io::Error::other(e.to_string()));
                        callback.log_io_completed(result);
                    }
                    Flush::Rows => {}
                    Flush::Sync(reply) => {
                        let _ = reply.send(flushed.is_ok());
                    }
                }
            }
        }
    });
    spawned.map_err(StoreError::Thread)?;
    Ok(tx)
}

/// Waits until everything written to the store so far is durable (at a clean shutdown).
#[derive(Clone)]
pub struct StoreSync {
    pub(super) flusher: Flusher,
}

impl StoreSync {
    pub fn sync(&self) -> Result<(), StoreError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.flusher.send(Flush::Sync(tx)).map_err(|_| StoreError::Flush)?;
        match rx.recv() {
            Ok(true) => Ok(()),
            _ => Err(StoreError::Flush),
        }
    }
}

impl LogStore {
    pub fn commit_index(&self) -> CommitIndex {
        CommitIndex(self.committed.clone())
    }

    fn meta_get<T: DeserializeOwned>(&self, key: &'static str) -> Result<Option<T>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(RAFT_META)?;
        let value = table.get(key)?;
        value.map(|v| decode(key, v.value())).transpose()
    }

    fn meta_put<T: Serialize>(&self, key: &'static str, value: &T, durability: Durability) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(durability);
        txn.open_table(RAFT_META)?.insert(key, encode(value).as_slice())?;
        txn.commit()?;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let read = || -> Result<Vec<Entry<TypeConfig>>, StoreError> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(LOG)?;
            let mut out = Vec::new();
            for row in table.range(range)? {
                let (_, v) = row?;
                out.push(decode("log entry", v.value())?);
            }
            Ok(out)
        };
        read().map_err(io_read)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let read = || -> Result<LogState<TypeConfig>, StoreError> {
            let last_purged: Option<LogId> = self.meta_get("last_purged")?;
            let txn = self.db.begin_read()?;
            let table = txn.open_table(LOG)?;
            let last = match table.last()? {
                Some((_, v)) => Some(decode::<Entry<TypeConfig>>("log entry", v.value())?.log_id),
                None => last_purged,
            };
            Ok(LogState { last_purged_log_id: last_purged, last_log_id: last })
        };
        read().map_err(io_read)
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> StorageResult<()> {
        self.meta_put("vote", vote, Durability::Immediate).map_err(io_write)
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<u64>>> {
        self.meta_get("vote").map_err(io_read)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> StorageResult<()> {
        // A lower bound is all a restart needs (it re-applies up to it without waiting for a
        // leader): losing the newest value to a crash is harmless, so it costs neither an fsync
        // nor a write transaction here; the flusher's next commit (the apply that follows every
        // commit asks for one) writes it.
        let mut c = self.committed.lock().map_err(|_| io_write(StoreError::Flush))?;
        c.latest = Some(committed);
        c.dirty = true;
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId>> {
        if let Some(latest) = self.committed.lock().ok().and_then(|c| c.latest) {
            return Ok(latest);
        }
        Ok(self.meta_get::<Option<LogId>>("committed").map_err(io_read)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let write = || -> Result<(), StoreError> {
            let mut txn = self.db.begin_write()?;
            txn.set_durability(Durability::None);
            {
                let mut table = txn.open_table(LOG)?;
                for entry in entries {
                    table.insert(entry.log_id.index, encode(&entry).as_slice())?;
                }
            }
            txn.commit()?;
            Ok(())
        };
        match write() {
            Ok(()) => {
                if let Err(std::sync::mpsc::SendError(Flush::Log(callback))) = self.flusher.send(Flush::Log(callback)) {
                    let gone = std::io::Error::other("the store flusher has stopped");
                    callback.log_io_completed(Err(gone));
                }
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(io_write(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> StorageResult<()> {
        let write = || -> Result<(), StoreError> {
            let txn = self.db.begin_write()?;
            {
                let mut table = txn.open_table(LOG)?;
                let keys: Vec<u64> =
                    table.range(log_id.index..)?.map(|r| r.map(|(k, _)| k.value())).collect::<Result<_, _>>()?;
                for k in keys {
                    table.remove(k)?;
                }
            }
            txn.commit()?;
            Ok(())
        };
        write().map_err(io_write)
    }

    async fn purge(&mut self, log_id: LogId) -> StorageResult<()> {
        let write = || -> Result<(), StoreError> {
            let txn = self.db.begin_write()?;
            {
                txn.open_table(RAFT_META)?.insert("last_purged", encode(&Some(log_id)).as_slice())?;
                let mut table = txn.open_table(LOG)?;
                let keys: Vec<u64> =
                    table.range(..=log_id.index)?.map(|r| r.map(|(k, _)| k.value())).collect::<Result<_, _>>()?;
                for k in keys {
                    table.remove(k)?;
                }
            }
            txn.commit()?;
            Ok(())
        };
        write().map_err(io_write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::testing::{StoreBuilder, Suite};

    struct RedbBuilder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for RedbBuilder {
        async fn build(&self) -> StorageResult<(tempfile::TempDir, LogStore, StateMachineStore)> {
            let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(&e))?;
            let (log, sm) = open(&dir.path().join("raft.redb")).map_err(io_write)?;
            Ok((dir, log, sm))
        }
    }

    #[test]
    fn openraft_storage_suite() -> StorageResult<()> {
        Suite::test_all(RedbBuilder)
    }
}
