//! The Raft log, vote and state machine in one redb file. Each append and each applied batch is
//! one redb write transaction; the state machine's rows (tenants, nodes, keys, audit entries)
//! are written through from the in-memory `State` so a restart reloads them without replay.

use super::{CoordinatorNode, LogId, StoredMembership, TypeConfig};
use crate::state::{Reply, State, Touched};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, OptionalSend, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError,
    Vote,
};
use redb::{Database, Durability, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::{Arc, RwLock};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const RAFT_META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const SM_META: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_meta");
const TENANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("tenants");
const NODES: TableDefinition<u64, &[u8]> = TableDefinition::new("nodes");
const API_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_keys");
const JOIN_TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("join_tokens");
/// Audit entries by sequence number. Public so the tamper test can edit one.
pub const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");

type StorageResult<T> = Result<T, StorageError<u64>>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redb: {0}")]
    Db(Box<redb::Error>),
    #[error("start the store flusher thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("the store could not be made durable (see the log)")]
    Flush,
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

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Our types serialize to JSON without failure (string keys, no non-finite floats).
    serde_json::to_vec(v).unwrap_or_default()
}

fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Decode { what, source })
}

fn io_read(e: impl Into<StoreError>) -> StorageError<u64> {
    let e: StoreError = e.into();
    StorageIOError::read(&e).into()
}

fn io_write(e: impl Into<StoreError>) -> StorageError<u64> {
    let e: StoreError = e.into();
    StorageIOError::write(&e).into()
}

/// The state machine as the API reads it.
#[derive(Debug, Default)]
pub struct SmData {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub state: State,
}

/// What a snapshot carries.
#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    state: State,
}

/// Opens (or creates) the store at `path` and loads the state machine.
pub fn open(path: &Path) -> Result<(LogStore, StateMachineStore), StoreError> {
    let db = Database::create(path)?;
    {
        let txn = db.begin_write()?;
        txn.open_table(LOG)?;
        txn.open_table(RAFT_META)?;
        txn.open_table(SM_META)?;
        txn.open_table(TENANTS)?;
        txn.open_table(NODES)?;
        txn.open_table(API_KEYS)?;
        txn.open_table(JOIN_TOKENS)?;
        txn.open_table(AUDIT)?;
        txn.commit()?;
    }
    let db = Arc::new(db);
    let data = load_state_machine(&db)?;
    let (applied, _) = tokio::sync::watch::channel(data.last_applied.map_or(0, |l| l.index));
    let flusher = spawn_flusher(db.clone())?;
    Ok((
        LogStore { db: db.clone(), flusher: flusher.clone() },
        StateMachineStore { db, data: Arc::new(RwLock::new(data)), applied: Arc::new(applied), flusher },
    ))
}

fn load_state_machine(db: &Database) -> Result<SmData, StoreError> {
    let txn = db.begin_read()?;
    let meta = txn.open_table(SM_META)?;
    let get = |k: &str| -> Result<Option<Vec<u8>>, StoreError> { Ok(meta.get(k)?.map(|v| v.value().to_vec())) };
    let mut data = SmData::default();
    if let Some(b) = get("last_applied")? {
        data.last_applied = decode("last_applied", &b)?;
    }
    if let Some(b) = get("membership")? {
        data.membership = decode("membership", &b)?;
    }
    if let Some(b) = get("settings")? {
        data.state.settings = decode("settings", &b)?;
    }
    if let Some(b) = get("retired")? {
        data.state.retired_coordinators = decode("retired", &b)?;
    }
    for row in txn.open_table(TENANTS)?.iter()? {
        let (_, v) = row?;
        let t: crate::state::tenant::Tenant = decode("tenant", v.value())?;
        data.state.tenants.insert(t.name.clone(), t);
    }
    for row in txn.open_table(NODES)?.iter()? {
        let (_, v) = row?;
        let n: crate::state::node::Node = decode("node", v.value())?;
        data.state.nodes.insert(n.id, n);
    }
    for row in txn.open_table(API_KEYS)?.iter()? {
        let (_, v) = row?;
        let k: crate::state::apikey::ApiKey = decode("api key", v.value())?;
        data.state.api_keys.insert(k.id.clone(), k);
    }
    if let Some(b) = get("next_node_id")? {
        data.state.next_node_id = decode("next_node_id", &b)?;
    }
    for row in txn.open_table(JOIN_TOKENS)?.iter()? {
        let (_, v) = row?;
        let t: crate::state::node::JoinToken = decode("join token", v.value())?;
        data.state.join_tokens.insert(t.id.clone(), t);
    }
    for row in txn.open_table(AUDIT)?.iter()? {
        let (_, v) = row?;
        data.state.audit.push(decode("audit entry", v.value())?);
    }
    Ok(data)
}

/// Writes the rows `touched` names, as they are now in `state`, plus the applied position.
fn persist(
    db: &Database,
    data: &SmData,
    touched: &[Touched],
    rewrite_all: bool,
    snapshot: Option<(&SnapshotMeta<u64, CoordinatorNode>, &[u8])>,
) -> Result<(), StoreError> {
    let mut txn = db.begin_write()?;
    // Applied rows can be rebuilt from the log (a restart re-applies from the durable
    // `last_applied`), so an applied batch costs no fsync: the next durable commit (a log
    // append, a vote, a snapshot) makes it durable. A snapshot or an installed state is durable
    // at once, since the log behind it may be purged.
    if !rewrite_all && snapshot.is_none() {
        txn.set_durability(Durability::None);
    }
    {
        if rewrite_all {
            txn.delete_table(TENANTS)?;
            txn.delete_table(NODES)?;
            txn.delete_table(API_KEYS)?;
            txn.delete_table(JOIN_TOKENS)?;
            txn.delete_table(AUDIT)?;
        }
        let mut meta = txn.open_table(SM_META)?;
        let mut tenants = txn.open_table(TENANTS)?;
        let mut nodes = txn.open_table(NODES)?;
        let mut keys = txn.open_table(API_KEYS)?;
        let mut audit = txn.open_table(AUDIT)?;
        let mut tokens = txn.open_table(JOIN_TOKENS)?;
        let state = &data.state;
        meta.insert("last_applied", encode(&data.last_applied).as_slice())?;
        meta.insert("membership", encode(&data.membership).as_slice())?;
        if rewrite_all {
            meta.insert("settings", encode(&state.settings).as_slice())?;
            meta.insert("retired", encode(&state.retired_coordinators).as_slice())?;
            meta.insert("next_node_id", encode(&state.next_node_id).as_slice())?;
            for t in state.join_tokens.values() {
                tokens.insert(t.id.as_str(), encode(t).as_slice())?;
            }
            for t in state.tenants.values() {
                tenants.insert(t.name.as_str(), encode(t).as_slice())?;
            }
            for n in state.nodes.values() {
                nodes.insert(n.id, encode(n).as_slice())?;
            }
            for k in state.api_keys.values() {
                keys.insert(k.id.as_str(), encode(k).as_slice())?;
            }
            for e in &state.audit {
                audit.insert(e.seq, encode(e).as_slice())?;
            }
        }
        for t in touched {
            match t {
                Touched::Settings => {
                    meta.insert("settings", encode(&state.settings).as_slice())?;
                }
                Touched::Retired => {
                    meta.insert("retired", encode(&state.retired_coordinators).as_slice())?;
                }
                Touched::Counters => {
                    meta.insert("next_node_id", encode(&state.next_node_id).as_slice())?;
                }
                Touched::JoinToken(id) => match state.join_tokens.get(id) {
                    Some(v) => {
                        tokens.insert(id.as_str(), encode(v).as_slice())?;
                    }
                    None => {
                        tokens.remove(id.as_str())?;
                    }
                },
                Touched::Tenant(name) => match state.tenants.get(name) {
                    Some(v) => {
                        tenants.insert(name.as_str(), encode(v).as_slice())?;
                    }
                    None => {
                        tenants.remove(name.as_str())?;
                    }
                },
                Touched::Node(id) => match state.nodes.get(id) {
                    Some(v) => {
                        nodes.insert(*id, encode(v).as_slice())?;
                    }
                    None => {
                        nodes.remove(*id)?;
                    }
                },
                Touched::ApiKey(id) => match state.api_keys.get(id) {
                    Some(v) => {
                        keys.insert(id.as_str(), encode(v).as_slice())?;
                    }
                    None => {
                        keys.remove(id.as_str())?;
                    }
                },
                Touched::Audit(seq) => {
                    if let Some(e) = state.audit.iter().rev().find(|e| e.seq == *seq) {
                        audit.insert(*seq, encode(e).as_slice())?;
                    }
                }
            }
        }
        if let Some((snap_meta, bytes)) = snapshot {
            meta.insert("snapshot_meta", encode(snap_meta).as_slice())?;
            meta.insert("snapshot_data", bytes)?;
        }
    }
    txn.commit()?;
    Ok(())
}

/// The Raft log and vote.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// Appended batches waiting for their fsync (see `spawn_flusher`).
    flusher: Flusher,
}

/// What the flusher thread is asked to make durable.
enum Flush {
    /// An appended batch: reported flushed after the fsync that covers it.
    Log(LogFlushed<TypeConfig>),
    /// Applied rows: made durable soon; nobody waits.
    Rows,
    /// Everything written so far: answered once durable.
    Sync(std::sync::mpsc::Sender<bool>),
}

type Flusher = std::sync::mpsc::Sender<Flush>;

/// How long applied rows may stay non-durable when no append comes to carry them.
const ROWS_LINGER: std::time::Duration = std::time::Duration::from_millis(20);

/// Group commit: `append` writes its entries and `apply` its rows in non-durable redb commits
/// (visible at once, so the leader replicates entries while its own disk syncs, and a reply never
/// waits for the state machine's fsync) and tell this thread, which makes everything written so
/// far durable with one empty durable commit (one fsync) and then reports every batch that was
/// waiting as flushed. Openraft counts an entry toward its quorum only once its callback says so.
/// Applied rows lost to a crash before their fsync are rebuilt: a restart re-applies the log
/// from the durable `last_applied`.
fn spawn_flusher(db: Arc<Database>) -> Result<Flusher, StoreError> {
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
    flusher: Flusher,
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
        // leader): losing the newest value to a crash is harmless, so this costs no fsync.
        self.meta_put("committed", &committed, Durability::None).map_err(io_write)
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId>> {
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

/// The state machine: the domain `State` in memory, written through to redb.
#[derive(Clone)]
pub struct StateMachineStore {
    db: Arc<Database>,
    data: Arc<RwLock<SmData>>,
    /// The applied index, published after every applied batch or installed snapshot.
    applied: Arc<tokio::sync::watch::Sender<u64>>,
    flusher: Flusher,
}

impl StateMachineStore {
    /// Shared handle the API reads from.
    pub fn data(&self) -> Arc<RwLock<SmData>> {
        self.data.clone()
    }

    /// Changes exactly when the state machine's content changes (unlike Raft metrics, which
    /// tick with every heartbeat).
    pub fn applied_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// A handle that waits for the store's pending writes to be durable.
    pub fn syncer(&self) -> StoreSync {
        StoreSync { flusher: self.flusher.clone() }
    }
}

fn poisoned() -> StorageError<u64> {
    StorageIOError::read_state_machine(&std::io::Error::other("state machine lock poisoned")).into()
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let (meta, bytes) = {
            let data = self.data.read().map_err(|_| poisoned())?;
            let body = SnapshotBody { state: data.state.clone() };
            let bytes = encode(&body);
            let id = match data.last_applied {
                Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, crate::time::now_ms()),
                None => format!("0-0-{}", crate::time::now_ms()),
            };
            let meta = SnapshotMeta {
                last_log_id: data.last_applied,
                last_membership: data.membership.clone(),
                snapshot_id: id,
            };
            persist(&self.db, &data, &[], false, Some((&meta, &bytes)))
                .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
            (meta, bytes)
        };
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> StorageResult<(Option<LogId>, StoredMembership)> {
        let data = self.data.read().map_err(|_| poisoned())?;
        Ok((data.last_applied, data.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<crate::state::Response>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut data = self.data.write().map_err(|_| poisoned())?;
        let mut replies = Vec::new();
        let mut touched = Vec::new();
        for entry in entries {
            data.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => replies.push(Ok(Reply::Done)),
                EntryPayload::Membership(m) => {
                    data.membership = StoredMembership::new(Some(entry.log_id), m);
                    replies.push(Ok(Reply::Done));
                }
                EntryPayload::Normal(cmd) => {
                    let (reply, t) = data.state.apply(entry.log_id.index, &cmd);
                    touched.extend(t);
                    replies.push(reply);
                }
            }
        }
        persist(&self.db, &data, &touched, false, None).map_err(|e| StorageIOError::write_state_machine(&e))?;
        // Durable soon, off the reply's path (see `spawn_flusher`); if the flusher is gone the
        // rows still become durable with the next durable commit.
        let _ = self.flusher.send(Flush::Rows);
        self.applied.send_replace(data.last_applied.map_or(0, |l| l.index));
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, CoordinatorNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let bytes = snapshot.into_inner();
        let body: SnapshotBody =
            decode("snapshot", &bytes).map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let mut data = self.data.write().map_err(|_| poisoned())?;
        data.state = body.state;
        data.last_applied = meta.last_log_id;
        data.membership = meta.last_membership.clone();
        persist(&self.db, &data, &[], true, Some((meta, &bytes)))
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        self.applied.send_replace(data.last_applied.map_or(0, |l| l.index));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let read = || -> Result<Option<Snapshot<TypeConfig>>, StoreError> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(SM_META)?;
            let (Some(meta), Some(data)) = (table.get("snapshot_meta")?, table.get("snapshot_data")?) else {
                return Ok(None);
            };
            let meta: SnapshotMeta<u64, CoordinatorNode> = decode("snapshot meta", meta.value())?;
            Ok(Some(Snapshot { meta, snapshot: Box::new(Cursor::new(data.value().to_vec())) }))
        };
        read().map_err(io_read)
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
