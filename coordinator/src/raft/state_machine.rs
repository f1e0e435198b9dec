//! The state machine: the domain `State` in memory (without the audit trail's history), written
//! through to redb. An applied batch writes exactly the rows `State::apply` reported as touched,
//! the audit entries it chained, and the applied position, in one non-durable commit (see
//! `store::spawn_flusher`); a restart reloads the rows and re-applies the log from there.
//! Snapshots are streamed files (`snapshot`).

use super::audit_log::AuditLog;
use super::snapshot::{self, Header, SnapshotDir};
use super::store::{decode, encode, io_read, Flush, Flusher, StorageResult, StoreError, StoreSync, AUDIT, SM_META};
use super::tables::TABLES;
use super::{CoordinatorNode, LogId, StoredMembership, TypeConfig};
use crate::state::audit::{AuditEntry, Trail};
use crate::state::{Reply, State, Touched};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{Entry, EntryPayload, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError};
use redb::{Database, Durability, ReadTransaction, ReadableTable, WriteTransaction};
use std::path::Path;
use std::sync::{Arc, RwLock};

/// The state machine as the API reads it.
#[derive(Debug, Default)]
pub struct SmData {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub state: State,
}

/// The state machine: the domain `State` in memory, written through to redb.
#[derive(Clone)]
pub struct StateMachineStore {
    db: Arc<Database>,
    data: Arc<RwLock<SmData>>,
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
    if let Some((_, last)) = txn.open_table(AUDIT)?.last()? {
        let last: AuditEntry = decode("audit entry", last.value())?;
        data.state.audit = Trail::from_head(last.head());
    }
    Ok(data)
}

fn write_position(txn: &WriteTransaction, data: &SmData) -> Result<(), StoreError> {
    let mut meta = txn.open_table(SM_META)?;
    meta.insert("last_applied", encode(&data.last_applied).as_slice())?;
    meta.insert("membership", encode(&data.membership).as_slice())?;
    Ok(())
}

impl StateMachineStore {
    pub(super) fn open(db: Arc<Database>, flusher: Flusher, snapshots: &Path) -> Result<Self, StoreError> {
        let data = load(&db.begin_read()?)?;
        let (applied, _) = tokio::sync::watch::channel(data.last_applied.map_or(0, |l| l.index));
        let snapshots = SnapshotDir::open(snapshots)?;
        Ok(Self { db, data: Arc::new(RwLock::new(data)), applied: Arc::new(applied), flusher, snapshots })
    }

    /// Shared handle the API reads from.
    pub fn data(&self) -> Arc<RwLock<SmData>> {
        self.data.clone()
    }

    /// The stored audit trail.
    pub fn audit_log(&self) -> AuditLog {
        AuditLog::new(self.db.clone())
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

    /// Writes an applied batch: its touched rows, its audit entries and the applied position.
    fn persist(&self, data: &SmData, touched: &[Touched], fresh: &[AuditEntry]) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        // Rebuilt from the log after a crash: no fsync here (see `store::spawn_flusher`).
        txn.set_durability(Durability::None);
        write_position(&txn, data)?;
        write_values(&txn, &data.state, touched, false)?;
        for table in TABLES {
            table.write_touched(&txn, &data.state, touched)?;
        }
        {
            let mut audit = txn.open_table(AUDIT)?;
            for entry in fresh {
                audit.insert(entry.seq, encode(entry).as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Replaces the whole state machine with a snapshot's, durably: every table rewritten and
    /// the audit trail streamed in from the file.
    fn install(
        &self,
        meta: &SnapshotMeta<u64, CoordinatorNode>,
        file: &mut std::fs::File,
    ) -> Result<SmData, StoreError> {
        let (header, entries) = snapshot::read(file)?;
        let data =
            SmData { last_applied: meta.last_log_id, membership: meta.last_membership.clone(), state: header.state };
        let txn = self.db.begin_write()?;
        write_position(&txn, &data)?;
        write_values(&txn, &data.state, &[], true)?;
        for table in TABLES {
            table.rewrite(&txn, &data.state)?;
        }
        txn.delete_table(AUDIT)?;
        {
            let mut audit = txn.open_table(AUDIT)?;
            for entry in entries {
                let entry = entry?;
                audit.insert(entry.seq, encode(&entry).as_slice())?;
            }
        }
        txn.open_table(SM_META)?.insert("snapshot_meta", encode(meta).as_slice())?;
        txn.commit()?;
        Ok(data)
    }

    /// Snapshot `meta`'s file, opened for reading.
    async fn open_snapshot(
        &self,
        meta: SnapshotMeta<u64, CoordinatorNode>,
    ) -> Result<Option<Snapshot<TypeConfig>>, StoreError> {
        match std::fs::File::open(self.snapshots.path(&meta.snapshot_id)) {
            Ok(f) => Ok(Some(Snapshot { meta, snapshot: Box::new(tokio::fs::File::from_std(f)) })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Io { what: "open a snapshot", source }),
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        // Minutes of disk work with a long trail: kept off the runtime's worker threads.
        let store = self.clone();
        let built = tokio::task::spawn_blocking(move || store.write_snapshot()).await;
        let meta = match built {
            Ok(result) => result?,
            Err(e) => return Err(StorageIOError::write_snapshot(None, &std::io::Error::other(e)).into()),
        };
        let signature = meta.signature();
        match self.open_snapshot(meta).await {
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
    /// Writes a snapshot of the applied state and makes it the current one.
    fn write_snapshot(&self) -> StorageResult<SnapshotMeta<u64, CoordinatorNode>> {
        // One read transaction taken under the state's lock sees exactly the applied state.
        let (header, meta, txn) = {
            let data = self.data.read().map_err(|_| poisoned())?;
            let txn = self.db.begin_read().map_err(io_read)?;
            let id = match data.last_applied {
                Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, crate::time::now_ms()),
                None => format!("0-0-{}", crate::time::now_ms()),
            };
            let meta = SnapshotMeta {
                last_log_id: data.last_applied,
                last_membership: data.membership.clone(),
                snapshot_id: id,
            };
            (Header { state: data.state.clone() }, meta, txn)
        };
        let write = || -> Result<(), StoreError> {
            let table = txn.open_table(AUDIT)?;
            // The stored rows are already the entries' JSON: copied as they are.
            let rows = table.range(0..)?.map(|row| -> Result<Vec<u8>, StoreError> { Ok(row?.1.value().to_vec()) });
            self.snapshots.write(&meta.snapshot_id, &header, rows)?;
            let txn = self.db.begin_write()?;
            txn.open_table(SM_META)?.insert("snapshot_meta", encode(&meta).as_slice())?;
            txn.commit()?;
            self.snapshots.remove_others(&meta.snapshot_id);
            Ok(())
        };
        write().map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        Ok(meta)
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
                    for cmd in proposal.commands() {
                        let (reply, t) = data.state.apply(entry.log_id.index, cmd);
                        touched.extend(t);
                        answers.push(reply);
                    }
                    replies.push(answers);
                }
            }
        }
        // A row touched by several commands of a batch is written once.
        touched.sort_unstable();
        touched.dedup();
        let fresh = data.state.audit.take_fresh();
        self.persist(&data, &touched, &fresh).map_err(|e| StorageIOError::write_state_machine(&e))?;
        // Durable soon, off the reply's path; if the flusher is gone the rows still become
        // durable with the next durable commit.
        let _ = self.flusher.send(Flush::Rows);
        self.applied.send_replace(data.last_applied.map_or(0, |l| l.index));
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<tokio::fs::File>> {
        let file = self.snapshots.incoming().map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        Ok(Box::new(tokio::fs::File::from_std(file)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, CoordinatorNode>,
        snapshot: Box<tokio::fs::File>,
    ) -> StorageResult<()> {
        let mut file = snapshot.into_std().await;
        let fail = |e: StoreError| StorageIOError::write_snapshot(Some(meta.signature()), &e);
        self.snapshots.keep(&meta.snapshot_id, &mut file).map_err(fail)?;
        let mut data = self.data.write().map_err(|_| poisoned())?;
        *data = self.install(meta, &mut file).map_err(fail)?;
        self.snapshots.remove_others(&meta.snapshot_id);
        self.applied.send_replace(data.last_applied.map_or(0, |l| l.index));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let meta = (|| -> Result<Option<SnapshotMeta<u64, CoordinatorNode>>, StoreError> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(SM_META)?;
            let meta = table.get("snapshot_meta")?;
            meta.map(|m| decode("snapshot meta", m.value())).transpose()
        })()
        .map_err(io_read)?;
        let Some(meta) = meta else { return Ok(None) };
        self.open_snapshot(meta).await.map_err(io_read)
    }
}
