//! The state machine: the domain `State` in memory (without the audit trail's history), written
//! behind to redb (`WriteBehind`): what applied batches changed (the rows `State::apply` reported
//! as touched, the audit entries they chained, the applied position) is written in one commit
//! for many batches, by the store's flusher thread (`store::spawn_flusher`) or first by any
//! reader of the stored rows (audit pages, snapshots), never on an apply's path; a restart
//! reloads the rows and re-applies the log from there.
//! Snapshots are the state plus a range of the stored trail (`snapshot`; built and installed in
//! `snapshots`): building one writes only the state, sending one streams the trail from the
//! store, installing one writes only the entries this replica lacks.

use super::audit_log::AuditLog;
use super::snapshot::{self, SnapshotData, SnapshotDir};
use super::store::{
    decode, encode, io_read, Flusher, StorageResult, StoreError, StoreSync, AUDIT, AUDIT_MARKS, SM_META,
};
use super::tables::TABLES;
use super::{CoordinatorNode, LogId, StoredMembership, TypeConfig};
use crate::state::audit::{AuditEntry, Head, Trail};
use crate::state::{Reply, State, Touched};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{Entry, EntryPayload, OptionalSend, SnapshotMeta, StorageError, StorageIOError};
use redb::{Database, Durability, ReadTransaction, ReadableTable, WriteTransaction};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

/// The state machine as the API reads it.
#[derive(Debug, Default)]
pub struct SmData {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub state: State,
    /// Bytes of the stored audit trail as a snapshot ships it (see `snapshot::AuditRange`).
    pub audit_bytes: u64,
}

/// What applied batches changed that is not in redb yet.
#[derive(Default)]
struct Unwritten {
    /// A batch was applied since the last write (the applied position moved).
    applied: bool,
    touched: Vec<Touched>,
    fresh: Vec<AuditEntry>,
}

/// The applied state not yet in redb, and what writes it there. Shared by the state machine
/// (which adds to it) and the flusher thread (which writes it); it holds no handle on that
/// thread, so dropping the store ends the thread.
pub(super) struct WriteBehind {
    db: Arc<Database>,
    data: Arc<RwLock<SmData>>,
    /// Taken after `data` whenever both are held.
    unwritten: Mutex<Unwritten>,
    /// One writer at a time.
    writing: Mutex<()>,
}

fn lock_error() -> StoreError {
    StoreError::Log("the state machine's lock is poisoned".into())
}

impl WriteBehind {
    /// Writes what the batches applied so far changed, in one non-durable commit (made durable
    /// by the flusher's next durable one): the current value of every row they touched, their
    /// audit entries and the applied position. Holds the state's read lock meanwhile, so what is
    /// written is the state after one batch, never half of one.
    pub(super) fn write(&self) -> Result<(), StoreError> {
        self.write_then(|_, _| ())
    }

    /// `write`, then `then` on the state exactly as written and the trail's length in bytes,
    /// before any further apply (a snapshot built from what `write` left behind could describe a
    /// batch applied meanwhile, whose rows and audit entries are not in the store).
    pub(super) fn write_then<T>(&self, then: impl FnOnce(&SmData, u64) -> T) -> Result<T, StoreError> {
        let _writer = self.writing.lock().map_err(|_| lock_error())?;
        let (bytes, answer) = {
            let data = self.data.read().map_err(|_| lock_error())?;
            let taken = {
                let mut unwritten = self.unwritten.lock().map_err(|_| lock_error())?;
                let applied = std::mem::take(&mut unwritten.applied);
                applied.then(|| (std::mem::take(&mut unwritten.touched), std::mem::take(&mut unwritten.fresh)))
            };
            let Some((mut touched, fresh)) = taken else {
                return Ok(then(&data, data.audit_bytes));
            };
            // A row touched by several batches is written once.
            touched.sort_unstable();
            touched.dedup();
            let bytes = self.persist(&data, &touched, &fresh)?;
            (bytes, then(&data, bytes))
        };
        // Applies leave `audit_bytes` alone, and writers take turns: it moves only here.
        self.data.write().map_err(|_| lock_error())?.audit_bytes = bytes;
        Ok(answer)
    }

    /// Writes applied batches' changes: the touched rows, the audit entries (and their offsets)
    /// and the applied position. Answers the trail's new length in bytes.
    fn persist(&self, data: &SmData, touched: &[Touched], fresh: &[AuditEntry]) -> Result<u64, StoreError> {
        let mut txn = self.db.begin_write()?;
        // Rebuilt from the log after a crash: no fsync here (see `store::spawn_flusher`).
        txn.set_durability(Durability::None);
        write_position(&txn, data)?;
        write_values(&txn, &data.state, touched, false)?;
        for table in TABLES {
            table.write_touched(&txn, &data.state, touched)?;
        }
        let mut bytes = data.audit_bytes;
        if !fresh.is_empty() {
            {
                let mut audit = txn.open_table(AUDIT)?;
                let mut marks = txn.open_table(AUDIT_MARKS)?;
                for entry in fresh {
                    let row = encode(entry);
                    snapshot::index_entry(&mut marks, entry.seq, row.len(), &mut bytes)?;
                    audit.insert(entry.seq, row.as_slice())?;
                }
            }
            txn.open_table(SM_META)?.insert("audit_bytes", encode(&bytes).as_slice())?;
        }
        txn.commit()?;
        Ok(bytes)
    }
}

/// The state machine: the domain `State` in memory, written behind to redb.
#[derive(Clone)]
pub struct StateMachineStore {
    db: Arc<Database>,
    data: Arc<RwLock<SmData>>,
    behind: Arc<WriteBehind>,
    /// The applied index, published after every applied batch or installed snapshot.
    applied: Arc<tokio::sync::watch::Sender<u64>>,
    flusher: Flusher,
    snapshots: SnapshotDir,
    /// Held by whatever writes snapshot files or the current snapshot's position (building,
    /// installing) and by opening the current one. openraft builds a snapshot in a task of its
    /// own, so an install can run meanwhile: each removes the other snapshot files, and a build
    /// that ended after an install made its older snapshot the current one again.
    snapshot_lock: Arc<Mutex<()>>,
}

fn poisoned() -> StorageError<u64> {
    StorageIOError::read_state_machine(&std::io::Error::other("state machine lock poisoned")).into()
}

/// Singleton values of the state, kept in `sm_meta` under their name.
fn write_values(txn: &WriteTransaction, state: &State, touched: &[Touched], all: bool) -> Result<(), StoreError> {
    let mut meta = txn.open_table(SM_META)?;
    if all || touched.contains(&Touched::Settings) {
        meta.insert("settings", encode(&state.settings).as_slice())?;
    }
    if all || touched.contains(&Touched::Retired) {
        meta.insert("retired", encode(&state.retired_coordinators).as_slice())?;
    }
    if all || touched.contains(&Touched::Counters) {
        meta.insert("next_node_id", encode(&state.next_node_id).as_slice())?;
    }
    Ok(())
}

fn load(txn: &ReadTransaction) -> Result<SmData, StoreError> {
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
    if let Some(b) = get("next_node_id")? {
        data.state.next_node_id = decode("next_node_id", &b)?;
    }
    for table in TABLES {
        table.load(txn, &mut data.state)?;
    }
    if let Some(head) = stored_head(&txn.open_table(AUDIT)?)? {
        data.state.audit = Trail::from_head(head);
    }
    if let Some(b) = get("audit_bytes")? {
        data.audit_bytes = decode("audit_bytes", &b)?;
    }
    Ok(data)
}

/// The last stored audit entry's head.
fn stored_head(table: &impl ReadableTable<u64, &'static [u8]>) -> Result<Option<Head>, StoreError> {
    match table.last()? {
        Some((_, last)) => Ok(Some(decode::<AuditEntry>("audit entry", last.value())?.head())),
        None => Ok(None),
    }
}

/// Rebuilds the audit trail's offset index (`audit_marks`, `audit_bytes`) from the stored rows,
/// one row at a time: once, for a store written before the index existed.
fn reindex(db: &Database) -> Result<u64, StoreError> {
    let txn = db.begin_write()?;
    txn.delete_table(AUDIT_MARKS)?;
    let mut bytes = 0;
    {
        let audit = txn.open_table(AUDIT)?;
        let mut marks = txn.open_table(AUDIT_MARKS)?;
        for row in audit.iter()? {
            let (seq, row) = row?;
            snapshot::index_entry(&mut marks, seq.value(), row.value().len(), &mut bytes)?;
        }
    }
    txn.open_table(SM_META)?.insert("audit_bytes", encode(&bytes).as_slice())?;
    txn.commit()?;
    Ok(bytes)
}

fn write_position(txn: &WriteTransaction, data: &SmData) -> Result<(), StoreError> {
    let mut meta = txn.open_table(SM_META)?;
    meta.insert("last_applied", encode(&data.last_applied).as_slice())?;
    meta.insert("membership", encode(&data.membership).as_slice())?;
    Ok(())
}

impl StateMachineStore {
    pub(super) fn open(db: Arc<Database>, flusher: Flusher, snapshots: &Path) -> Result<Self, StoreError> {
        let mut data = load(&db.begin_read()?)?;
        let indexed = db.begin_read()?.open_table(SM_META)?.get("audit_bytes")?.is_some();
        if !indexed && data.state.audit.head().seq > 0 {
            data.audit_bytes = reindex(&db)?;
            tracing::info!(entries = data.state.audit.head().seq, "indexed the stored audit trail");
        }
        let (applied, _) = tokio::sync::watch::channel(data.last_applied.map_or(0, |l| l.index));
        let snapshots = SnapshotDir::open(snapshots)?;
        let data = Arc::new(RwLock::new(data));
        let behind = Arc::new(WriteBehind {
            db: db.clone(),
            data: data.clone(),
            unwritten: Mutex::default(),
            writing: Mutex::default(),
        });
        Ok(Self { db, data, behind, applied: Arc::new(applied), flusher, snapshots, snapshot_lock: Arc::default() })
    }

    /// Shared handle the API reads from.
    pub fn data(&self) -> Arc<RwLock<SmData>> {
        self.data.clone()
    }

    /// The stored audit trail.
    pub fn audit_log(&self) -> AuditLog {
        AuditLog::new(self.clone())
    }

    pub(super) fn db(&self) -> &Database {
        &self.db
    }

    /// Changes exactly when the state machine's content changes (unlike Raft metrics, which
    /// tick with every heartbeat).
    pub fn applied_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// A handle that waits for the store's pending writes to be durable.
    pub fn syncer(&self) -> StoreSync {
        StoreSync { flusher: self.flusher.clone(), sm: self.clone() }
    }

    /// Writes what the batches applied so far changed, if nobody has yet: every reader of the
    /// stored rows (audit pages, snapshots) calls it first, so it sees every batch applied before.
    pub(super) fn write_applied(&self) -> Result<(), StoreError> {
        self.behind.write()
    }

    /// The write-behind state, for the flusher thread.
    pub(super) fn behind(&self) -> Arc<WriteBehind> {
        self.behind.clone()
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> StorageResult<(Option<LogId>, StoredMembership)> {
        let data = self.data.read().map_err(|_| poisoned())?;
        Ok((data.last_applied, data.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Vec<crate::state::Response>>>
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
                EntryPayload::Blank => replies.push(vec![Ok(Reply::Done)]),
                EntryPayload::Membership(m) => {
                    data.membership = StoredMembership::new(Some(entry.log_id), m);
                    replies.push(vec![Ok(Reply::Done)]);
                }
                EntryPayload::Normal(proposal) => {
                    let mut answers = Vec::with_capacity(proposal.commands().len());
                    for (seq, cmd) in proposal.commands().iter().enumerate() {
                        let (reply, t) = data.state.apply_in_batch(entry.log_id.index, seq, cmd);
                        touched.extend(t);
                        answers.push(reply);
                    }
                    replies.push(answers);
                }
            }
        }
        let fresh = data.state.audit.take_fresh();
        {
            // Added under the state's lock, so a writer sees either all of this batch or none.
            let mut unwritten = self.behind.unwritten.lock().map_err(|_| poisoned())?;
            unwritten.applied = true;
            unwritten.touched.extend(touched);
            unwritten.fresh.extend(fresh);
        }
        let applied = data.last_applied.map_or(0, |l| l.index);
        drop(data);
        // Written behind by the flusher thread (or a reader before it).
        self.flusher.rows();
        self.applied.send_replace(applied);
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<SnapshotData>> {
        let file = self.snapshots.incoming().map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        Ok(Box::new(SnapshotData::file(tokio::fs::File::from_std(file))))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, CoordinatorNode>,
        snapshot: Box<SnapshotData>,
    ) -> StorageResult<()> {
        let fail = |e: StoreError| StorageIOError::write_snapshot(Some(meta.signature()), &e);
        self.write_applied().map_err(fail)?;
        let input = snapshot
            .into_reader()
            .await
            .map_err(|source| fail(StoreError::Io { what: "read a received snapshot", source }))?;
        // Seconds of disk work with a long trail: kept off the runtime's worker threads.
        let (store, owned) = (self.clone(), meta.clone());
        let installed = tokio::task::spawn_blocking(move || store.install(&owned, input)).await;
        let installed = match installed {
            Ok(Ok(installed)) => installed,
            Ok(Err(e)) => return Err(fail(e).into()),
            Err(e) => {
                return Err(fail(StoreError::Io { what: "install a snapshot", source: std::io::Error::other(e) }).into())
            }
        };
        let applied = installed.last_applied.map_or(0, |l| l.index);
        *self.data.write().map_err(|_| poisoned())? = installed;
        self.applied.send_replace(applied);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let current = {
            let _snapshots = self.snapshot_lock.lock().map_err(|_| poisoned())?;
            self.current_snapshot().map_err(io_read)?
        };
        let Some((meta, audit, file)) = current else { return Ok(None) };
        self.snapshot_of(meta, audit, file).map(Some).map_err(io_read)
    }
}

mod snapshots;

#[cfg(test)]
mod tests;
