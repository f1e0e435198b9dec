//! The Raft log (the journal in `wal`) and the vote, committed and purged positions (in the redb
//! file it shares with the state machine's tables: `state_machine`, `tables`): the store's
//! errors, its opening, and the two threads that make writes durable (`spawn_syncer` for the
//! log, group commit; `spawn_flusher` for the state machine's rows, lazily).

use super::state_machine::StateMachineStore;
use super::wal::Wal;
use super::{LogId, TypeConfig};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use redb::{Database, Durability, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Serialize};
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

mod threads;
pub use threads::StoreSync;
use threads::{spawn_flusher, spawn_syncer};
pub(super) use threads::{Flush, Flusher};

/// The log of stores written before the journal (`wal`): moved there when such a store opens.
const LEGACY_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
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
    #[error("write a snapshot: {0}")]
    WriteSnapshot(#[source] Box<StorageError<u64>>),
    #[error("raft log: {0}")]
    Log(String),
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

/// Opens (or creates) the store at `path` (the log's journal beside it in `raft-log/`, snapshot
/// files in `snapshots/`) and loads the state machine.
pub fn open(path: &Path) -> Result<(LogStore, StateMachineStore), StoreError> {
    let db = redb::Builder::new().set_cache_size(PAGE_CACHE_BYTES).create(path)?;
    {
        let txn = db.begin_write()?;
        txn.open_table(LEGACY_LOG)?;
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
    let dir = path.parent().unwrap_or(Path::new("."));
    let wal = Arc::new(open_log(&db, &dir.join("raft-log"))?);
    let committed = Arc::new(std::sync::Mutex::new(Committed::default()));
    let syncer = spawn_syncer(wal.clone())?;
    let (tx, rx) = std::sync::mpsc::channel::<Flush>();
    let flusher = Flusher { tx, rows: Arc::new(AtomicBool::new(false)) };
    let sm = StateMachineStore::open(db.clone(), flusher.clone(), &dir.join("snapshots"))?;
    spawn_flusher(rx, &flusher, db.clone(), committed.clone(), wal.clone(), sm.behind())?;
    sm.cover_applied(wal.last()?.or(meta_get(&db, "last_purged")?))?;
    Ok((LogStore { db, wal, syncer, committed }, sm))
}

/// The journal in `dir`, holding the entries after the purged position. A store written before
/// the journal has its log in redb: it is copied into a new journal, made durable, and only then
/// removed from redb (a crash in between copies it again).
fn open_log(db: &Database, dir: &Path) -> Result<Wal, StoreError> {
    let purged: Option<LogId> = meta_get(db, "last_purged")?;
    let legacy = {
        let txn = db.begin_read()?;
        let table = txn.open_table(LEGACY_LOG)?;
        let mut entries = Vec::new();
        for row in table.iter()? {
            let (_, v) = row?;
            entries.push(decode::<Entry<TypeConfig>>("log entry", v.value())?);
        }
        entries
    };
    if legacy.is_empty() {
        return Wal::open(dir, purged);
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|source| StoreError::Io { what: "clear the log directory", source })?;
    }
    let wal = Wal::open(dir, purged)?;
    let moved = legacy.len();
    wal.append(legacy)?;
    wal.sync()?;
    let txn = db.begin_write()?;
    txn.delete_table(LEGACY_LOG)?;
    txn.open_table(LEGACY_LOG)?;
    txn.commit()?;
    tracing::info!(entries = moved, "moved the raft log from the store into its journal");
    Ok(wal)
}

fn meta_get<T: DeserializeOwned>(db: &Database, key: &'static str) -> Result<Option<T>, StoreError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(RAFT_META)?;
    let value = table.get(key)?;
    value.map(|v| decode(key, v.value())).transpose()
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
/// next durable commit instead of a write transaction of its own on the commit path (no further
/// than the journal is durable: a restart re-applies up to it from the log).
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
    wal: Arc<Wal>,
    /// Appended batches waiting for their fsync (see `spawn_syncer`).
    syncer: std::sync::mpsc::Sender<LogFlushed<TypeConfig>>,
    committed: Arc<std::sync::Mutex<Committed>>,
}

impl LogStore {
    /// Makes node `id` start as a follower even when it led when it stopped: a vote of its own
    /// that a quorum granted is stored as not granted (same term, same candidate), so openraft's
    /// start does not restore it as leader of that term. A leader sends entries before its own
    /// fsync ends (vendor patch 1), so its journal may lack entries of its term that others hold;
    /// leading that term again, it would append other entries under the same log ids, and a
    /// follower holding the first ones would take the new ones' successors as matching (the log
    /// matching property broken: divergent states, an acknowledged write missing from the
    /// majority). It leads again only after winning an election for a new term. Durable on return.
    pub fn start_as_follower(&self, id: u64) -> Result<(), StoreError> {
        let Some(vote) = self.meta_get::<Vote<u64>>("vote")? else { return Ok(()) };
        if vote.is_committed() && vote.leader_id().voted_for() == Some(id) {
            self.meta_put("vote", &Vote::new(vote.leader_id().term, id), Durability::Immediate)?;
            tracing::info!(term = vote.leader_id().term, "led when stopped: starts as a follower");
        }
        Ok(())
    }

    pub fn commit_index(&self) -> CommitIndex {
        CommitIndex(self.committed.clone())
    }

    fn meta_get<T: DeserializeOwned>(&self, key: &'static str) -> Result<Option<T>, StoreError> {
        meta_get(&self.db, key)
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
        use std::ops::Bound;
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => i.saturating_add(1),
            Bound::Excluded(i) => *i,
            Bound::Unbounded => u64::MAX,
        };
        self.wal.entries(start, end).map_err(io_read)
    }

    /// What replication sends in one AppendEntries: at most `REPLICATION_BYTES` of records. An
    /// entry is a batch of up to 256 commands, so openraft's count limit alone lets a catching-up
    /// follower's request reach megabytes, which it cannot take in within the RPC's timeout.
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> StorageResult<Vec<Entry<TypeConfig>>> {
        self.wal.entries_within(start, end, REPLICATION_BYTES).map_err(io_read)
    }
}

/// Bytes of log records one AppendEntries carries at most (beyond its first entry).
const REPLICATION_BYTES: usize = 256 << 10;

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let read = || -> Result<LogState<TypeConfig>, StoreError> {
            let last_purged: Option<LogId> = self.meta_get("last_purged")?;
            let last = self.wal.last()?.or(last_purged);
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
        match self.wal.append(entries.into_iter().collect()) {
            Ok(()) => {
                if let Err(std::sync::mpsc::SendError(callback)) = self.syncer.send(callback) {
                    let gone = std::io::Error::other("the raft log syncer has stopped");
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

    async fn append_and_wait<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // A follower's core waits for this flush anyway: done here, it costs no wake-up of the
        // syncer thread (which, on a busy host, waits for a CPU) and no hand-off back.
        let written = self.wal.append(entries.into_iter().collect()).and_then(|()| self.wal.sync());
        let result = written.as_ref().map(|_| ()).map_err(|e| std::io::Error::other(e.to_string()));
        callback.log_io_completed(result);
        written.map_err(io_write)
    }

    async fn truncate(&mut self, log_id: LogId) -> StorageResult<()> {
        self.wal.truncate(log_id.index).map_err(io_write)
    }

    async fn purge(&mut self, log_id: LogId) -> StorageResult<()> {
        // The purged position is durable before any entry goes (the commit also makes the applied
        // rows durable, and openraft purges only what a snapshot covers, so the durable state is
        // never behind the log's first entry).
        self.meta_put("last_purged", &Some(log_id), Durability::Immediate).map_err(io_write)?;
        self.wal.purge(log_id).map_err(io_write)
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

    #[tokio::test]
    async fn a_node_that_led_when_stopped_starts_as_a_follower() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut log, _sm) = open(&dir.path().join("raft.redb")).expect("open");
        log.save_vote(&Vote::new_committed(7, 1)).await.expect("vote");
        log.start_as_follower(2).expect("another node's leadership");
        assert_eq!(log.read_vote().await.expect("read"), Some(Vote::new_committed(7, 1)));
        log.start_as_follower(1).expect("its own leadership");
        // The same term and candidate, not granted: it will not vote for another in term 7 with
        // a lower id, and leads again only after an election for a new term.
        assert_eq!(log.read_vote().await.expect("read"), Some(Vote::new(7, 1)));
    }

    #[tokio::test]
    async fn a_log_kept_in_redb_by_an_older_release_moves_into_the_journal() {
        use openraft::{CommittedLeaderId, EntryPayload};
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("raft.redb");
        let entry = |i| Entry::<TypeConfig> {
            log_id: LogId::new(CommittedLeaderId::new(2, 1), i),
            payload: EntryPayload::Blank,
        };
        {
            let db = Database::create(&path).expect("create");
            let txn = db.begin_write().expect("write");
            {
                let mut meta = txn.open_table(RAFT_META).expect("meta");
                meta.insert("last_purged", encode(&Some(entry(4).log_id)).as_slice()).expect("purged");
                let mut log = txn.open_table(LEGACY_LOG).expect("log");
                for i in 5..9 {
                    log.insert(i, encode(&entry(i)).as_slice()).expect("insert");
                }
            }
            txn.commit().expect("commit");
        }
        for _ in 0..2 {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            // The threads of a dropped store let go of the file a moment later.
            let (mut log, _sm) = loop {
                match open(&path) {
                    Ok(opened) => break opened,
                    Err(_) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(std::time::Duration::from_millis(20))
                    }
                    Err(e) => panic!("open the store: {e}"),
                }
            };
            let state = log.get_log_state().await.expect("state");
            assert_eq!(state.last_log_id, Some(entry(8).log_id));
            let got = log.try_get_log_entries(0..100).await.expect("entries");
            assert_eq!(got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(), [5, 6, 7, 8]);
            let txn = log.db.begin_read().expect("read");
            assert!(redb::ReadableTableMetadata::is_empty(&txn.open_table(LEGACY_LOG).expect("log")).expect("empty"));
        }
    }
}
