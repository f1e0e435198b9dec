//! The journal's tests: reopen, torn and unsynced tails, truncation, purge, rotation, bounded
//! reads, and reads from disk against the decoded tail.

use super::*;
use openraft::{CommittedLeaderId, EntryPayload};

fn id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn entry(term: u64, index: u64) -> LogEntry {
    Entry { log_id: id(term, index), payload: EntryPayload::Blank }
}

fn indexes(wal: &Wal, start: u64, end: u64) -> Vec<(u64, u64)> {
    let got = wal.entries(start, end).expect("entries");
    got.iter().map(|e| (e.log_id.leader_id.term, e.log_id.index)).collect()
}

#[test]
fn entries_survive_a_reopen_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wal = Wal::open(dir.path(), None).expect("open");
    wal.append((0..5).map(|i| entry(1, i)).collect()).expect("append");
    wal.append(vec![entry(2, 5)]).expect("append");
    wal.sync().expect("sync");
    drop(wal);
    let wal = Wal::open(dir.path(), None).expect("reopen");
    assert_eq!(wal.last().expect("last"), Some(id(2, 5)));
    assert_eq!(indexes(&wal, 3, 10), [(1, 3), (1, 4), (2, 5)]);
}

/// Writes entries 0..4 of term 1, overwrites entry 2's record at `skip` bytes into it with
/// `bytes` (what a crash left), reopens, appends `next` and reopens again: the log's indexes.
fn crash_at_record_2_then_append(bytes: &[u8], skip: u64, next: LogEntry) -> Vec<(u64, u64)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let wal = Wal::open(dir.path(), None).expect("open");
    wal.append((0..4).map(|i| entry(1, i)).collect()).expect("append");
    let (segment, at) = {
        let inner = wal.lock().expect("lock");
        (inner.active.clone().expect("active").0, inner.locs[2].offset)
    };
    drop(wal);
    segment.file.write_all_at(bytes, at + skip).expect("damage");
    let wal = Wal::open(dir.path(), None).expect("reopen");
    assert_eq!(wal.last().expect("last"), Some(id(1, 1)));
    wal.append(vec![next]).expect("append");
    drop(wal);
    let wal = Wal::open(dir.path(), None).expect("reopen");
    indexes(&wal, 0, 10)
}

#[test]
fn torn_tail_is_cut_and_never_followed_by_a_stale_record() {
    // Entry 2's payload is damaged: entries 2 and 3 are the torn tail. A new entry 2 of
    // another term is the end of the log after a reopen.
    assert_eq!(crash_at_record_2_then_append(&[0xff], HEADER as u64, entry(3, 2)), [(1, 0), (1, 1), (3, 2)]);
}

#[test]
fn an_unsynced_record_behind_a_clean_end_never_joins_the_log() {
    // A crash wrote record 3 but not record 2: its place reads as the log's clean end. The new
    // entry 2 has the old one's size, so the stale record 3 would follow it exactly.
    assert_eq!(crash_at_record_2_then_append(&[0; HEADER], 0, entry(1, 2)), [(1, 0), (1, 1), (1, 2)]);
}

#[test]
fn truncated_entries_do_not_come_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wal = Wal::open(dir.path(), None).expect("open");
    wal.append((0..6).map(|i| entry(1, i)).collect()).expect("append");
    wal.truncate(3).expect("truncate");
    assert_eq!(wal.last().expect("last"), Some(id(1, 2)));
    wal.append(vec![entry(2, 3)]).expect("append");
    drop(wal);
    let wal = Wal::open(dir.path(), None).expect("reopen");
    assert_eq!(indexes(&wal, 0, 10), [(1, 0), (1, 1), (1, 2), (2, 3)]);
}

#[test]
fn purge_past_the_end_starts_the_next_append_afresh() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wal = Wal::open(dir.path(), None).expect("open");
    wal.append((0..3).map(|i| entry(1, i)).collect()).expect("append");
    wal.purge(id(4, 100)).expect("purge");
    assert_eq!(wal.last().expect("last"), None);
    wal.append(vec![entry(4, 101)]).expect("append");
    drop(wal);
    let wal = Wal::open(dir.path(), Some(id(4, 100))).expect("reopen");
    assert_eq!(indexes(&wal, 0, 200), [(4, 101)]);
}

#[test]
fn a_segment_left_empty_by_a_crash_in_rotate_takes_the_next_entries() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wal = Wal::open(dir.path(), None).expect("open");
    wal.append((0..3).map(|i| entry(1, i)).collect()).expect("append");
    wal.sync().expect("sync");
    drop(wal);
    // `rotate` created the next segment and the crash came before it was sized.
    File::create(dir.path().join(segment_name(3))).expect("create");
    let wal = Wal::open(dir.path(), None).expect("reopen");
    wal.append(vec![entry(1, 3), entry(1, 4)]).expect("append");
    wal.sync().expect("sync");
    // The purge removes the first segment, never the one the entries went to.
    wal.purge(id(1, 2)).expect("purge");
    drop(wal);
    let wal = Wal::open(dir.path(), Some(id(1, 2))).expect("reopen");
    assert_eq!(indexes(&wal, 0, 10), [(1, 3), (1, 4)]);
}

#[test]
fn entries_read_from_disk_match_those_kept_in_memory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wal = Wal::open(dir.path(), None).expect("open");
    wal.append((0..50).map(|i| entry(1, i)).collect()).expect("append");
    let cached = indexes(&wal, 10, 20);
    {
        let mut inner = wal.lock().expect("lock");
        inner.tail.clear();
        inner.tail_bytes = 0;
        inner.tail_first = 50;
    }
    assert_eq!(indexes(&wal, 10, 20), cached);
}

#[test]
fn a_bounded_read_stops_at_its_byte_budget_but_always_returns_one_entry() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wal = Wal::open(dir.path(), None).expect("open");
    wal.append((0..10).map(|i| entry(1, i)).collect()).expect("append");
    let one = wal.lock().expect("lock").locs[0].len as usize;
    assert_eq!(wal.entries_within(2, 10, 3 * one).expect("read").len(), 3);
    assert_eq!(wal.entries_within(2, 10, 1).expect("read").len(), 1);
    assert_eq!(wal.entries_within(2, 10, usize::MAX).expect("read").len(), 8);
}

#[test]
fn a_batch_larger_than_a_segment_rotates_into_its_own() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wal = Wal::open(dir.path(), None).expect("open");
    wal.append(vec![entry(1, 0)]).expect("append");
    {
        // Pretend the active segment is full.
        let mut inner = wal.lock().expect("lock");
        if let Some((_, end)) = inner.active.as_mut() {
            *end = SEGMENT_BYTES - 8;
        }
    }
    wal.append(vec![entry(1, 1), entry(1, 2)]).expect("append");
    assert_eq!(wal.lock().expect("lock").segments.len(), 2);
    wal.purge(id(1, 0)).expect("purge");
    assert_eq!(wal.lock().expect("lock").segments.len(), 1);
    drop(wal);
    let wal = Wal::open(dir.path(), Some(id(1, 0))).expect("reopen");
    assert_eq!(indexes(&wal, 0, 10), [(1, 1), (1, 2)]);
}
