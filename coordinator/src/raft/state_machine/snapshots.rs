//! Snapshots of the state machine: building one (the state and the range of the stored trail it
//! covers), installing a received one, and the current one; they take turns (`snapshot_lock`).

use super::{lock_error, poisoned, stored_head, write_position, write_values, SmData, StateMachineStore};
use crate::raft::snapshot::{self, AuditRange, ReadSeek, SnapshotData, StoredReader};
use crate::raft::store::{decode, encode, StorageResult, StoreError, AUDIT, AUDIT_MARKS, SM_META};
use crate::raft::tables::TABLES;
use crate::raft::{CoordinatorNode, LogId, TypeConfig};
use crate::state::audit::{AuditEntry, Head};
use openraft::storage::Snapshot;
use openraft::{RaftSnapshotBuilder, SnapshotMeta, StorageIOError};
use redb::{ReadableTable, WriteTransaction};
use std::io::Seek;

impl StateMachineStore {
    /// Replaces the whole state machine with a snapshot's, durably: every table rewritten, the
    /// audit entries this replica lacks copied in from the stream (its own trail is a prefix of
    /// any snapshot it is sent; if not, the whole trail is replaced), and a snapshot file of its
    /// own written for the same id (the only one left).
    pub(in crate::raft) fn install(
        &self,
        meta: &SnapshotMeta<u64, CoordinatorNode>,
        input: Box<dyn ReadSeek>,
    ) -> Result<SmData, StoreError> {
        let _snapshots = self.snapshot_lock.lock().map_err(|_| lock_error())?;
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
        self.snapshots.remove_others(&meta.snapshot_id);
        Ok(data)
    }

    /// The current snapshot's position and its range of the stored trail (`None` for a snapshot
    /// written before: its entries are in its file), with its file open. Call with
    /// `snapshot_lock` held.
    pub(super) fn current_snapshot(&self) -> Result<Option<(Meta, Option<AuditRange>, std::fs::File)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SM_META)?;
        let Some(meta) = table.get("snapshot_meta")? else { return Ok(None) };
        let meta: Meta = decode("snapshot meta", meta.value())?;
        let audit = table.get("snapshot_audit")?.map(|a| decode("snapshot audit range", a.value())).transpose()?;
        match std::fs::File::open(self.snapshots.path(&meta.snapshot_id)) {
            Ok(file) => Ok(Some((meta, audit, file))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Io { what: "open a snapshot", source }),
        }
    }

    /// A snapshot's open `file`, ready to be read as shipped: with the stored trail up to `audit`
    /// behind it, or alone for a snapshot written before (its entries are in the file).
    pub(super) fn snapshot_of(
        &self,
        meta: Meta,
        audit: Option<AuditRange>,
        file: std::fs::File,
    ) -> Result<Snapshot<TypeConfig>, StoreError> {
        let data = match audit {
            Some(audit) => SnapshotData::stored(StoredReader::new(self.db.clone(), file, audit)?),
            None => SnapshotData::file(tokio::fs::File::from_std(file)),
        };
        Ok(Snapshot { meta, snapshot: Box::new(data) })
    }
}

/// A snapshot's position.
type Meta = SnapshotMeta<u64, CoordinatorNode>;

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
        let (meta, audit, file) = match built {
            Ok(result) => result?,
            Err(e) => return Err(StorageIOError::write_snapshot(None, &std::io::Error::other(e)).into()),
        };
        let signature = meta.signature();
        self.snapshot_of(meta, audit, file).map_err(|e| StorageIOError::read_snapshot(Some(signature), &e).into())
    }
}

impl StateMachineStore {
    /// Makes sure a snapshot covers the applied position when the log (ending at `log_end`, its
    /// last entry or purged position) stops short of it: a leader applies entries its two
    /// followers made durable before its own fsync does, so a power cut can leave its durable
    /// state ahead of its journal. openraft's start then purges the log up to the applied
    /// position, and a purge past the current snapshot stops it (it holds that every purged
    /// entry is in the snapshot, the only way to send it to a node that lacks it).
    pub(in crate::raft) fn cover_applied(&self, log_end: Option<LogId>) -> Result<(), StoreError> {
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
    /// Answers the current snapshot, its file open: this one, or one at least as new that an
    /// install (or another build) made current meanwhile.
    fn write_snapshot(&self) -> StorageResult<(Meta, Option<AuditRange>, std::fs::File)> {
        let started = std::time::Instant::now();
        let _snapshots = self.snapshot_lock.lock().map_err(|_| poisoned())?;
        // Taken as written, under the state's lock: the state, the applied position and the
        // stored trail's length all describe the same applied batch, the last one in the store
        // (openraft builds in a task of its own: applies go on meanwhile).
        let captured = self.behind.write_then(|data, bytes| {
            let id = match data.last_applied {
                Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, crate::time::now_ms()),
                None => format!("0-0-{}", crate::time::now_ms()),
            };
            let meta = SnapshotMeta {
                last_log_id: data.last_applied,
                last_membership: data.membership.clone(),
                snapshot_id: id,
            };
            let audit = AuditRange { upto: data.state.audit.head().seq, bytes };
            (data.state.clone(), meta, audit)
        });
        let (state, meta, audit) = captured.map_err(|e| StorageIOError::write_state_machine(&e))?;
        match self.current_snapshot() {
            Ok(Some((current, audit, file))) if current.last_log_id >= meta.last_log_id => {
                return Ok((current, audit, file))
            }
            Ok(_) => {}
            Err(e) => return Err(StorageIOError::read_snapshot(None, &e).into()),
        }
        let write = || -> Result<std::fs::File, StoreError> {
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
            std::fs::File::open(self.snapshots.path(&meta.snapshot_id))
                .map_err(|source| StoreError::Io { what: "open a snapshot", source })
        };
        let file = write().map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        let file_bytes = file.metadata().map_or(0, |m| m.len());
        tracing::info!(
            id = %meta.snapshot_id,
            file_bytes,
            audit_entries = audit.upto,
            shipped_bytes = file_bytes + audit.bytes,
            ms = started.elapsed().as_millis() as u64,
            "snapshot built"
        );
        Ok((meta, Some(audit), file))
    }
}
