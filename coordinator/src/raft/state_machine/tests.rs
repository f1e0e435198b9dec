//! Snapshots over a real store: a snapshot file holds the state, not the history; what is shipped
//! reads the same from any offset; a follower installs only the entries it lacks (or replaces a
//! trail that diverged) and ends with the leader's trail, index and snapshot bytes.

use super::*;
use crate::raft::snapshot::MARK_EVERY;
use crate::raft::store;
use crate::state::action::Action;
use crate::state::{Command, Meta, Op};
use openraft::storage::RaftStateMachine;
use redb::ReadableTableMetadata;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// `n` applied entries from log index `from` on, each audited with a ~500-byte reason, in
/// batches of 100 like openraft's.
async fn fill(sm: &mut StateMachineStore, from: u64, n: u64, flavour: &str) {
    let entries: Vec<Entry<TypeConfig>> = (from..from + n)
        .map(|i| Entry {
            log_id: openraft::testing::log_id(1, 1, i),
            payload: EntryPayload::Normal(crate::raft::Proposal::One(Box::new(Command {
                meta: Meta {
                    time_ms: i,
                    actor: "k_admin".into(),
                    source: "127.0.0.1".into(),
                    key_role: None,
                    user_generation: None,
                },
                op: Op::Rejected {
                    action: Action::TenantGet,
                    target: format!("tenant/t{i}"),
                    reason: format!("{flavour} {}", "x".repeat(500)),
                },
            }))),
        })
        .collect();
    for batch in entries.chunks(100) {
        sm.apply(batch.to_vec()).await.expect("apply");
    }
}

fn open(dir: &Path) -> StateMachineStore {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        // The flusher thread of a dropped store lets go of the file a moment later.
        match store::open(&dir.join("raft.redb")) {
            Ok((_, sm)) => return sm,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("open the store: {e}"),
        }
    }
}

/// The whole snapshot as shipped, read as openraft's sender does: seek, then chunk by chunk.
async fn shipped(sm: &mut StateMachineStore) -> Vec<u8> {
    let mut snap = sm.get_current_snapshot().await.expect("read").expect("a snapshot").snapshot;
    let end = snap.seek(std::io::SeekFrom::End(0)).await.expect("seek");
    let mut out = Vec::new();
    while (out.len() as u64) < end {
        snap.seek(std::io::SeekFrom::Start(out.len() as u64)).await.expect("seek");
        let mut chunk = Vec::with_capacity(300_000);
        while chunk.len() < chunk.capacity() {
            if snap.read_buf(&mut chunk).await.expect("read") == 0 {
                break;
            }
        }
        assert!(!chunk.is_empty(), "the stream ended at {} of {end}", out.len());
        out.extend(chunk);
    }
    out
}

/// Stored audit rows (seq, bytes) and offset marks (offset, seq).
type Stored = (Vec<(u64, Vec<u8>)>, Vec<(u64, u64)>);

/// Every stored audit row and offset mark.
fn stored(sm: &StateMachineStore) -> Stored {
    sm.write_applied().expect("write what was applied");
    let txn = sm.db.begin_read().expect("read");
    let audit = txn.open_table(AUDIT).expect("audit");
    let rows = audit
        .iter()
        .expect("iter")
        .map(|r| r.map(|(k, v)| (k.value(), v.value().to_vec())))
        .collect::<Result<_, _>>()
        .expect("rows");
    let marks = txn.open_table(AUDIT_MARKS).expect("marks");
    let marks = marks
        .iter()
        .expect("iter")
        .map(|r| r.map(|(k, v)| (k.value(), v.value())))
        .collect::<Result<_, _>>()
        .expect("marks");
    (rows, marks)
}

/// Sends `leader`'s current snapshot to `follower` and installs it there.
async fn transfer(leader: &mut StateMachineStore, follower: &mut StateMachineStore) {
    let current = leader.get_current_snapshot().await.expect("read").expect("a snapshot");
    let bytes = shipped(leader).await;
    let mut incoming = follower.begin_receiving_snapshot().await.expect("receive");
    tokio::io::AsyncWriteExt::write_all(&mut *incoming, &bytes).await.expect("write");
    tokio::io::AsyncWriteExt::shutdown(&mut *incoming).await.expect("shutdown");
    follower.install_snapshot(&current.meta, incoming).await.expect("install");
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_file_holds_the_state_and_ships_the_trail_from_the_store() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut sm = open(dir.path());
    fill(&mut sm, 1, 3_000, "a").await;
    let snap = sm.get_snapshot_builder().await.build_snapshot().await.expect("build");
    let file = sm.snapshots.path(&snap.meta.snapshot_id);
    let on_disk = std::fs::metadata(&file).expect("file");
    assert!(on_disk.len() < 16 << 10, "the file holds no history: {} bytes", on_disk.len());
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&on_disk.permissions()) & 0o777, 0o600);

    // As shipped: the file's line, then every stored row and a newline, whatever the read sizes.
    let (rows, marks) = stored(&sm);
    assert_eq!(rows.len(), 3_000);
    assert_eq!(marks.len(), 3, "one mark every {MARK_EVERY} entries: {marks:?}");
    let mut expected = std::fs::read(&file).expect("read");
    for (_, row) in &rows {
        expected.extend_from_slice(row);
        expected.push(b'\n');
    }
    assert!(expected.len() > 1 << 21, "the trail spans several read chunks");
    assert!(shipped(&mut sm).await == expected);

    // Any offset (inside the header, at a mark, inside a row, just before the end) reads the same.
    let mut snap = sm.get_current_snapshot().await.expect("read").expect("a snapshot").snapshot;
    let header = on_disk.len() as usize;
    let offsets = [0, 5, header - 1, header, header + marks[1].0 as usize, header + 700_001, expected.len() - 3];
    for at in offsets {
        snap.seek(std::io::SeekFrom::Start(at as u64)).await.expect("seek");
        let mut got = vec![0; (expected.len() - at).min(4096)];
        snap.read_exact(&mut got).await.expect("read");
        assert!(got == expected[at..at + got.len()], "bytes at offset {at}");
    }
    assert_eq!(snap.read(&mut [0; 16]).await.expect("read at the end"), 0);

    // The next snapshot costs no more: the file is the state again.
    fill(&mut sm, 3_001, 500, "a").await;
    let next = sm.get_snapshot_builder().await.build_snapshot().await.expect("build");
    let len = std::fs::metadata(sm.snapshots.path(&next.meta.snapshot_id)).expect("file").len();
    assert!(len < 16 << 10, "{len}");
    assert!(!file.exists(), "the older snapshot file is removed");
}

#[tokio::test(flavor = "multi_thread")]
async fn follower_installs_only_the_entries_it_lacks_and_ends_with_the_leaders_trail() {
    let (ld, fd) = (tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp"));
    let (mut leader, mut follower) = (open(ld.path()), open(fd.path()));
    fill(&mut leader, 1, 3_000, "a").await;
    // The follower applied the first 1,100 entries before it fell behind.
    fill(&mut follower, 1, 1_100, "a").await;
    leader.get_snapshot_builder().await.build_snapshot().await.expect("build");
    transfer(&mut leader, &mut follower).await;

    assert!(stored(&follower) == stored(&leader), "the same rows and offset index");
    let (verdict, total) = follower.audit_log().verify().expect("verify");
    assert_eq!((verdict.map_err(|b| b.seq), total), (Ok(3_000), 3_000));
    {
        let (l, f) = (leader.data.read().expect("lock"), follower.data.read().expect("lock"));
        assert_eq!(f.state.audit.head(), l.state.audit.head());
        assert_eq!((f.audit_bytes, f.last_applied), (l.audit_bytes, l.last_applied));
    }
    // What the follower would ship is the leader's snapshot, byte for byte.
    assert!(shipped(&mut follower).await == shipped(&mut leader).await);

    // Installed durably: a reopened follower has the trail, its index and its snapshot.
    drop(follower);
    let mut follower = open(fd.path());
    assert!(stored(&follower) == stored(&leader));
    assert_eq!(follower.data.read().expect("lock").audit_bytes, leader.data.read().expect("lock").audit_bytes);
    assert!(shipped(&mut follower).await == shipped(&mut leader).await);

    // It goes on from there: applying the next entries chains on the installed head.
    fill(&mut follower, 3_001, 10, "a").await;
    assert_eq!(follower.audit_log().verify().expect("verify").0.map_err(|b| b.seq), Ok(3_010));
}

#[tokio::test(flavor = "multi_thread")]
async fn follower_whose_trail_diverged_gets_the_leaders() {
    let (ld, fd) = (tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp"));
    let (mut leader, mut follower) = (open(ld.path()), open(fd.path()));
    fill(&mut leader, 1, 2_000, "a").await;
    fill(&mut follower, 1, 1_500, "b").await;
    leader.get_snapshot_builder().await.build_snapshot().await.expect("build");
    transfer(&mut leader, &mut follower).await;
    assert!(stored(&follower) == stored(&leader));
    assert_eq!(follower.audit_log().verify().expect("verify").0.map_err(|b| b.seq), Ok(2_000));
}

#[tokio::test(flavor = "multi_thread")]
async fn store_written_before_the_offset_index_is_indexed_when_opened() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut sm = open(dir.path());
    fill(&mut sm, 1, 2_100, "a").await;
    let before = (stored(&sm), sm.data.read().expect("lock").audit_bytes);
    {
        let txn = sm.db.begin_write().expect("write");
        txn.delete_table(AUDIT_MARKS).expect("drop marks");
        txn.open_table(SM_META).expect("meta").remove("audit_bytes").expect("drop length");
        txn.commit().expect("commit");
    }
    assert_eq!(sm.db.begin_read().expect("read").open_table(AUDIT).expect("audit").len().expect("len"), 2_100);
    drop(sm);
    let sm = open(dir.path());
    assert!((stored(&sm), sm.data.read().expect("lock").audit_bytes) == before);
}

/// A leader's applied state can be durable ahead of its own journal (entries its followers made
/// durable, applied before its fsync): opened, the store snapshots that state, so openraft's
/// start, which purges the log up to the applied position, finds a snapshot covering the purge.
#[tokio::test(flavor = "multi_thread")]
async fn state_ahead_of_the_log_is_snapshotted_when_opened() {
    let dir = tempfile::tempdir().expect("tmp");
    {
        let mut sm = open(dir.path());
        fill(&mut sm, 1, 30, "a").await;
        sm.get_snapshot_builder().await.build_snapshot().await.expect("build");
        // Applied past the snapshot, none of it in the (empty) log.
        fill(&mut sm, 31, 10, "a").await;
        sm.syncer().sync().expect("durable");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (mut log, mut sm) = loop {
        match store::open(&dir.path().join("raft.redb")) {
            Ok(opened) => break opened,
            Err(_) if std::time::Instant::now() < deadline => std::thread::sleep(std::time::Duration::from_millis(20)),
            Err(e) => panic!("open the store: {e}"),
        }
    };
    let state = openraft::storage::StorageHelper::new(&mut log, &mut sm).get_initial_state().await.expect("start");
    let at_40 = Some(openraft::testing::log_id(1, 1, 40));
    assert_eq!(state.committed, at_40);
    assert_eq!(state.snapshot_meta.last_log_id, at_40, "the snapshot covers the log purged up to the state");
    let stored = sm.get_current_snapshot().await.expect("read").expect("a snapshot");
    assert_eq!(stored.meta.last_log_id, at_40);
}
