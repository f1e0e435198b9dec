//! The state machine: the domain `State` in memory (without the audit trail's history), written
//! behind to redb (`WriteBehind`): what applied batches changed (the rows `State::apply` reported
//! as touched, the audit entries they chained, the applied position) is written in one commit
//! for many batches, by the store's flusher thread (`store::spawn_flusher`) or first by any
//! reader of the stored rows (audit pages, snapshots), never on an apply's path; a restart
//! reloads the rows and re-applies the log from there.
//! Snapshots are the state plus a range of the stored trail (`snapshot`): building one writes
//! only the state, sending one streams the trail from the store, installing one writes only the
//! entries this replica lacks.

use super::audit_log::AuditLog;
use super::snapshot::{self, AuditRange, ReadSeek, SnapshotData, SnapshotDir, StoredReader};
use super::store::{
    decode, encode, io_read, Flusher, StorageResult, StoreError, StoreSync, AUDIT, AUDIT_MARKS, SM_META,
};
use super::tables::TABLES;
use super::{CoordinatorNode, LogId, StoredMembership, TypeConfig};
use crate::state::audit::{AuditEntry, Head, Trail};
use crate::state::{Reply, State, Touched};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{Entry, EntryPayload, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError};
use redb::{Database, Durability, ReadTransaction, ReadableTable, WriteTransaction};
use std::io::Seek;
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
        let _writer = self.writing.lock().map_err(|_| lock_error())?;
        let bytes = {
            let data = self.data.read().map_err(|_| lock_error())?;
            let (mut touched, fresh) = {
                let mut unwritten = self.unwritten.lock().map_err(|_| lock_error())?;
                if !unwritten.applied {
                    return Ok(());
                }
                unwritten.applied = false;
                (std::mem::take(&mut unwritten.touched), std::mem::take(&mut unwritten.fresh))
            };
            // A row touched by several batches is written once.
            touched.sort_unstable();
            touched.dedup();
            self.persist(&data, &touched, &fresh)?
        };
        // Applies leave `audit_bytes` alone, and writers take turns: it moves only here.
        self.data.write().map_err(|_| lock_error())?.audit_bytes = bytes;
        Ok(())
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
        Ok(Self { db, data, behind, applied: Arc::new(applied), flusher, snapshots })
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

    /// Replaces the whole state machine with a snapshot's, durably: every table rewritten, the
    /// audit entries this replica lacks copied in from the stream (its own trail is a prefix of
    /// any snapshot it is sent; if not, the whole trail is replaced), and a snapshot file of its
    /// own written for the same id.
    pub(super) fn install(
        &self,
        meta: &SnapshotMeta<u64, CoordinatorNode>,
        input: Box<dyn ReadSeek>,
    ) -> Result<SmData, StoreError> {
        let mut input = std::io::BufReader::with_capacity(1 << 16, input);
        let header = snapshot::read_header(&mut input)?;
        let entries_at =
            input.stream_position().map_err(|source| StoreError::Io { what: "read a snapshot", source })?;
        let txn = self.db.begin_write()?;
        let ours = stored_head(&txn.open_table(AUDIT)?)?;
        let our_bytes = match txn.open_table(SM_META)?.get("audit_bytes")? {
            Some(b) => decode("audit_bytes", b.value())?,
            None => 0,
        };
        let copied = match copy_trail(&txn, &mut input, ours, our_bytes)? {
            Some(copied) => copied,
            None => {
                tracing::warn!("the snapshot's audit trail does not extend this replica's: replacing it");
                txn.delete_table(AUDIT)?;
                txn.delete_table(AUDIT_MARKS)?;
                input
                    .seek(std::io::SeekFrom::Start(entries_at))
                    .map_err(|source| StoreError::Io { what: "rewind a snapshot", source })?;
                copy_trail(&txn, &mut input, None, 0)?
                    .ok_or(StoreError::Snapshot("the audit trail could not be copied"))?
            }
        };
        let (head, bytes) = copied;
        if &head != header.state.audit.head() || header.audit.is_some_and(|a| a.upto != head.seq) {
            return Err(StoreError::Snapshot("the audit trail does not end at the state's audit head"));
        }
        let data = SmData {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            state: header.state,
            audit_bytes: bytes,
        };
        write_position(&txn, &data)?;
        write_values(&txn, &data.state, &[], true)?;
        for table in TABLES {
            table.rewrite(&txn, &data.state)?;
        }
        let range = AuditRange { upto: head.seq, bytes };
        self.snapshots.write(&meta.snapshot_id, &data.state, range)?;
        {
            let mut sm_meta = txn.open_table(SM_META)?;
            sm_meta.insert("audit_bytes", encode(&bytes).as_slice())?;
            sm_meta.insert("snapshot_meta", encode(meta).as_slice())?;
            sm_meta.insert("snapshot_audit", encode(&range).as_slice())?;
        }
        txn.commit()?;
        Ok(data)
    }

    /// Snapshot `meta`'s file, ready to be read as shipped: with the stored trail up to `audit`
    /// behind it, or alone for a snapshot written before (its entries are in the file).
    fn open_snapshot(
        &self,
        meta: SnapshotMeta<u64, CoordinatorNode>,
        audit: Option<AuditRange>,
    ) -> Result<Option<Snapshot<TypeConfig>>, StoreError> {
        let file = match std::fs::File::open(self.snapshots.path(&meta.snapshot_id)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StoreError::Io { what: "open a snapshot", source }),
        };
        let data = match audit {
            Some(audit) => SnapshotData::stored(StoredReader::new(self.db.clone(), file, audit)?),
            None => SnapshotData::file(tokio::fs::File::from_std(file)),
        };
        Ok(Some(Snapshot { meta, snapshot: Box::new(data) }))
    }
}

/// Copies the audit entries of a snapshot's stream (positioned after its header) that come after
/// `ours` (this replica's last stored entry) into the store, indexing them from `bytes` on.
/// Answers the new head and length, or `None` (having written nothing) when the stream does not
/// extend `ours`: it lacks that entry or has another in its place.
fn copy_trail(
    txn: &WriteTransaction,
    input: &mut impl std::io::BufRead,
    ours: Option<Head>,
    mut bytes: u64,
) -> Result<Option<(Head, u64)>, StoreError> {
    let mut audit = txn.open_table(AUDIT)?;
    let mut marks = txn.open_table(AUDIT_MARKS)?;
    let mut head = ours.unwrap_or_default();
    let keep = head.seq;
    let mut reached = keep == 0;
    let mut line = Vec::new();
    while snapshot::read_line(input, &mut line)? {
        let entry: AuditEntry = decode("snapshot entry", &line)?;
        if entry.seq <= keep {
            if entry.seq == keep {
                if entry.hash != head.hash {
                    return Ok(None);
                }
                reached = true;
            }
            continue;
        }
        if !reached {
            return Ok(None);
        }
        if entry.seq != head.seq + 1 {
            return Err(StoreError::Snapshot("the audit entries are not consecutive"));
        }
        snapshot::index_entry(&mut marks, entry.seq, line.len(), &mut bytes)?;
        audit.insert(entry.seq, line.as_slice())?;
        head = entry.head();
    }
    Ok(reached.then_some((head, bytes)))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        // Writes and fsyncs the state (megabytes at 10,000 tenants): off the runtime's workers.
        let store = self.clone();
        let built = tokio::task::spawn_blocking(move || store.write_snapshot()).await;
        let (meta, audit) = match built {
            Ok(result) => result?,
            Err(e) => return Err(StorageIOError::write_snapshot(None, &std::io::Error::other(e)).into()),
        };
        let signature = meta.signature();
        match self.open_snapshot(meta, Some(audit)) {
            Ok(Some(snapshot)) => Ok(snapshot),
            Ok(None) => {
                Err(StorageIOError::read_snapshot(Some(signature), &std::io::Error::other("snapshot file vanished"))
                    .into())
            }
            Err(e) => Err(StorageIOError::read_snapshot(Some(signature), &e).into()),
        }
    }
}

impl StateMachineStore {
    /// Makes sure a snapshot covers the applied position when the log (ending at `log_end`, its
    /// last entry or purged position) stops short of it: a leader applies entries its two
    /// followers made durable before its own fsync does, so a power cut can leave its durable
    /// state ahead of its journal. openraft's start then purges the log up to the applied
    /// position, and a purge past the current snapshot stops it (it holds that every purged
    /// entry is in the snapshot, the only way to send it to a node that lacks it).
    pub(super) fn cover_applied(&self, log_end: Option<LogId>) -> Result<(), StoreError> {
        let applied = self.data.read().map_err(|_| lock_error())?.last_applied;
        if applied.map(|a| a.index) <= log_end.map(|l| l.index) {
            return Ok(());
        }
        let txn = self.db.begin_read()?;
        let snapshot = match txn.open_table(SM_META)?.get("snapshot_meta")? {
            Some(meta) => decode::<SnapshotMeta<u64, CoordinatorNode>>("snapshot meta", meta.value())?.last_log_id,
            None => None,
        };
        if snapshot.map(|s| s.index) >= applied.map(|a| a.index) {
            return Ok(());
        }
        tracing::warn!(
            applied = applied.map_or(0, |a| a.index),
            log_end = log_end.map_or(0, |l| l.index),
            "the applied state is ahead of the raft log: snapshotting it"
        );
        self.write_snapshot().map(|_| ()).map_err(|e| StoreError::WriteSnapshot(Box::new(e)))
    }

    /// Writes a snapshot of the applied state and makes it the current one: the state and the
    /// range of the stored trail it covers, nothing of the trail itself.
    fn write_snapshot(&self) -> StorageResult<(SnapshotMeta<u64, CoordinatorNode>, AuditRange)> {
        let started = std::time::Instant::now();
        self.write_applied().map_err(|e| StorageIOError::write_state_machine(&e))?;
        // Taken under the state's lock: the state, the applied position and the stored trail's
        // length all describe the same applied batch.
        let (state, meta, audit) = {
            let data = self.data.read().map_err(|_| poisoned())?;
            let id = match data.last_applied {
                Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, crate::time::now_ms()),
                None => format!("0-0-{}", crate::time::now_ms()),
            };
            let meta = SnapshotMeta {
                last_log_id: data.last_applied,
                last_membership: data.membership.clone(),
                snapshot_id: id,
            };
            let audit = AuditRange { upto: data.state.audit.head().seq, bytes: data.audit_bytes };
            (data.state.clone(), meta, audit)
        };
        let write = || -> Result<(), StoreError> {
            self.snapshots.write(&meta.snapshot_id, &state, audit)?;
            // Durable: the rows the snapshot points at (committed before, perhaps without an
            // fsync) become durable with it.
            let txn = self.db.begin_write()?;
            {
                let mut sm_meta = txn.open_table(SM_META)?;
                sm_meta.insert("snapshot_meta", encode(&meta).as_slice())?;
                sm_meta.insert("snapshot_audit", encode(&audit).as_slice())?;
            }
            txn.commit()?;
            self.snapshots.remove_others(&meta.snapshot_id);
            Ok(())
        };
        write().map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        let file_bytes = std::fs::metadata(self.snapshots.path(&meta.snapshot_id)).map_or(0, |m| m.len());
        tracing::info!(
            id = %meta.snapshot_id,
            file_bytes,
            audit_entries = audit.upto,
            shipped_bytes = file_bytes + audit.bytes,
            ms = started.elapsed().as_millis() as u64,
            "snapshot built"
        );
        Ok((meta, audit))
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
        self.snapshots.remove_others(&meta.snapshot_id);
        self.applied.send_replace(applied);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        type Current = Option<(SnapshotMeta<u64, CoordinatorNode>, Option<AuditRange>)>;
        let current = (|| -> Result<Current, StoreError> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(SM_META)?;
            let Some(meta) = table.get("snapshot_meta")? else { return Ok(None) };
            let meta = decode("snapshot meta", meta.value())?;
            let audit = table.get("snapshot_audit")?.map(|a| decode("snapshot audit range", a.value())).transpose()?;
            Ok(Some((meta, audit)))
        })()
        .map_err(io_read)?;
        let Some((meta, audit)) = current else { return Ok(None) };
        self.open_snapshot(meta, audit).map_err(io_read)
    }
}

#[cfg(test)]
mod tests;
