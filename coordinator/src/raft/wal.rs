//! The Raft log as an append-only journal (`raft-log/` beside `raft.redb`): segment files of
//! checksummed records written at their end, one `fdatasync` of the segment per group of appends
//! (`sync`). A write to the log touches one or two pages of one file, so its fsync is the disk's
//! cheapest (the redb B-tree it replaces dirtied ~20 scattered pages per write, all flushed by
//! the same fsync). The newest entries are kept decoded in memory (`TAIL_BYTES`), so replication
//! and apply read them without touching the disk.
//!
//! A record is `len: u32 | crc32(index ‖ payload): u32 | index: u64 | payload` (little endian;
//! the payload is the JSON entry). A segment is created at `SEGMENT_BYTES` (sparse) and named
//! after its first index; the data ends at the first record of length 0. Reading a directory
//! back keeps every record up to the first torn one in the last segment and zeroes the rest, so
//! a later append can never be followed by a stale record; a bad record anywhere else is
//! corruption and refuses to open. Truncating zeroes the segment from the cut for the same
//! reason. Purging drops whole segments below the purge point (the purged position itself is
//! kept by the caller, in `raft_meta`).

use super::store::{decode, encode, StoreError};
use super::{LogId, TypeConfig};
use openraft::Entry;
use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

type LogEntry = Entry<TypeConfig>;

/// Size a segment is created with; a larger batch gets a segment of its own size.
const SEGMENT_BYTES: u64 = 64 << 20;
/// Bytes of decoded entries kept in memory (by their records' size: decoded, about twice that),
/// newest first: what replication and apply read, a second or more of writes at full load.
const TAIL_BYTES: usize = 4 << 20;
const HEADER: usize = 16;
const SUFFIX: &str = ".log";

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> StoreError {
    move |source| StoreError::Io { what, source }
}

/// One segment file.
#[derive(Debug)]
struct Segment {
    /// The index its name carries (its first record's when it was created).
    first: u64,
    path: PathBuf,
    file: File,
    /// Its size: appends that would pass it go to a new segment.
    cap: u64,
}

/// Where an entry's record is.
#[derive(Clone)]
struct Loc {
    segment: Arc<Segment>,
    offset: u64,
    len: u32,
}

struct Inner {
    segments: Vec<Arc<Segment>>,
    /// The segment appends go to and where its data ends (`None`: the next append creates one).
    active: Option<(Arc<Segment>, u64)>,
    /// Records of the entries in the log, `locs[0]` being index `first`.
    locs: VecDeque<Loc>,
    first: u64,
    last: Option<LogId>,
    /// The newest entries decoded, `tail[0]` being index `tail_first`.
    tail: VecDeque<(LogEntry, usize)>,
    tail_first: u64,
    tail_bytes: usize,
    /// Segments written since the last `sync`, and the last entry written.
    dirty: Vec<Arc<Segment>>,
    written: Option<LogId>,
    synced: Option<LogId>,
}

/// The journal (see the module doc).
pub(super) struct Wal {
    dir: PathBuf,
    inner: Mutex<Inner>,
    /// Held through a whole `sync`: one that finds nothing written since the last one must not
    /// report the log durable while that one's fsync is still running (the log syncer, a
    /// follower's inline append and a shutdown all sync).
    syncing: Mutex<()>,
}

fn record(index: u64, payload: &[u8], out: &mut Vec<u8>) {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&index.to_le_bytes());
    crc.update(payload);
    // An entry is far below 4 GiB (a batch holds at most 256 bounded commands).
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(payload);
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

fn segment_name(first: u64) -> String {
    format!("{first:020}{SUFFIX}")
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io("sync the log directory"))
}

/// Zeroes `segment` from `offset` to its end (a shrink then a regrow: the freed blocks read as
/// zeros), durably.
fn zero_from(segment: &Segment, offset: u64) -> Result<(), StoreError> {
    let size = segment.file.metadata().map_err(io("stat a log segment"))?.len().max(SEGMENT_BYTES);
    segment.file.set_len(offset).map_err(io("cut a log segment"))?;
    segment.file.set_len(size).map_err(io("extend a log segment"))?;
    segment.file.sync_all().map_err(io("sync a log segment"))
}

/// What reading one segment back found.
struct Scanned {
    records: Vec<(u64, Loc)>,
    end: u64,
    torn: bool,
}

fn scan(segment: &Arc<Segment>) -> Result<Scanned, StoreError> {
    let size = segment.file.metadata().map_err(io("stat a log segment"))?.len();
    let mut reader = std::io::BufReader::with_capacity(1 << 20, &segment.file);
    let mut records = Vec::new();
    let mut offset = 0u64;
    let mut header = [0u8; HEADER];
    let mut payload = Vec::new();
    loop {
        if offset + HEADER as u64 > size {
            return Ok(Scanned { records, end: offset, torn: false });
        }
        std::io::Read::read_exact(&mut reader, &mut header).map_err(io("read a log segment"))?;
        let len = le_u32(&header[0..4]);
        if len == 0 {
            let torn = header.iter().any(|b| *b != 0);
            return Ok(Scanned { records, end: offset, torn });
        }
        let index = le_u64(&header[8..16]);
        if offset + (HEADER as u64) + u64::from(len) > size {
            return Ok(Scanned { records, end: offset, torn: true });
        }
        payload.resize(len as usize, 0);
        std::io::Read::read_exact(&mut reader, &mut payload).map_err(io("read a log segment"))?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&index.to_le_bytes());
        crc.update(&payload);
        if crc.finalize() != le_u32(&header[4..8]) {
            return Ok(Scanned { records, end: offset, torn: true });
        }
        records.push((index, Loc { segment: segment.clone(), offset, len }));
        offset += HEADER as u64 + u64::from(len);
    }
}

fn read_loc(loc: &Loc) -> Result<LogEntry, StoreError> {
    let mut buf = vec![0; HEADER + loc.len as usize];
    loc.segment.file.read_exact_at(&mut buf, loc.offset).map_err(io("read a log entry"))?;
    decode("log entry", &buf[HEADER..])
}

impl Wal {
    /// Opens the journal in `dir` (created if missing) with every entry up to `purged` dropped,
    /// cutting a torn tail left by a crash.
    pub(super) fn open(dir: &Path, purged: Option<LogId>) -> Result<Self, StoreError> {
        crate::datadir::create(dir).map_err(io("create the log directory"))?;
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io("list the log directory"))? {
            let entry = entry.map_err(io("list the log directory"))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(first) = name.strip_suffix(SUFFIX).and_then(|n| n.parse::<u64>().ok()) {
                names.push((first, entry.path()));
            }
        }
        names.sort();
        let mut segments = Vec::new();
        for (first, path) in names {
            let file = File::options().read(true).write(true).open(&path).map_err(io("open a log segment"))?;
            // What `zero_from` leaves the last one at: a segment a crash left before `rotate`
            // sized it is written into, not replaced by a second segment of the same name.
            let cap = file.metadata().map_err(io("stat a log segment"))?.len().max(SEGMENT_BYTES);
            segments.push(Arc::new(Segment { first, path, file, cap }));
        }
        let floor = purged.map_or(0, |p| p.index + 1);
        let mut locs = VecDeque::new();
        let mut last_index = None;
        let mut active = None;
        for (i, segment) in segments.iter().enumerate() {
            let scanned = scan(segment)?;
            let is_last = i + 1 == segments.len();
            if scanned.torn && !is_last {
                return Err(StoreError::Log(format!("a record in {} is damaged", segment.path.display())));
            }
            for (index, loc) in scanned.records {
                if index < floor {
                    continue;
                }
                let expected = last_index.map_or(floor, |l: u64| l + 1);
                if index != expected && !(last_index.is_none() && purged.is_none()) {
                    return Err(StoreError::Log(format!(
                        "{} holds entry {index} where {expected} was expected",
                        segment.path.display()
                    )));
                }
                last_index = Some(index);
                locs.push_back(loc);
            }
            if is_last {
                if scanned.torn {
                    tracing::warn!(segment = %segment.path.display(), at = scanned.end, "cut the log's torn tail");
                }
                // Zeroed even after a clean end: a crash can leave a later record of an unsynced
                // write behind a zero header, which a new record of the same size would join.
                zero_from(segment, scanned.end)?;
                active = Some((segment.clone(), scanned.end));
            }
        }
        let first = match (last_index, locs.len()) {
            (Some(last), n) => last + 1 - n as u64,
            (None, _) => floor,
        };
        let last = match locs.back() {
            Some(loc) => Some(read_loc(loc)?.log_id),
            None => None,
        };
        let inner = Inner {
            segments,
            active,
            locs,
            first,
            last,
            tail: VecDeque::new(),
            tail_first: first,
            tail_bytes: 0,
            dirty: Vec::new(),
            written: last,
            synced: last,
        };
        Ok(Self { dir: dir.to_path_buf(), inner: Mutex::new(inner), syncing: Mutex::new(()) })
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>, StoreError> {
        self.inner.lock().map_err(|_| StoreError::Log("the log's lock is poisoned".into()))
    }

    /// The last entry's id (`None` when the log holds none).
    pub(super) fn last(&self) -> Result<Option<LogId>, StoreError> {
        Ok(self.lock()?.last)
    }

    /// The last entry known to be on disk.
    pub(super) fn synced(&self) -> Result<Option<LogId>, StoreError> {
        Ok(self.lock()?.synced)
    }

    /// Writes `entries` (which follow the last one) at the end of the journal, not yet durably.
    pub(super) fn append(&self, entries: Vec<LogEntry>) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        let mut sizes = Vec::with_capacity(entries.len());
        for entry in &entries {
            let payload = encode(entry);
            let at = buf.len();
            record(entry.log_id.index, &payload, &mut buf);
            sizes.push((at, payload.len()));
        }
        let mut inner = self.lock()?;
        let first_index = entries[0].log_id.index;
        // An empty log takes any position (openraft's storage suite appends below a purge).
        let expected = inner.last.map_or(first_index, |l| l.index + 1);
        if first_index != expected {
            return Err(StoreError::Log(format!("append of entry {first_index} where {expected} was expected")));
        }
        let fits = inner.active.as_ref().is_some_and(|(s, end)| end + buf.len() as u64 <= s.cap);
        if !fits {
            self.rotate(&mut inner, first_index, buf.len() as u64)?;
        }
        let Some((segment, end)) = inner.active.clone() else {
            return Err(StoreError::Log("no log segment to write to".into()));
        };
        segment.file.write_all_at(&buf, end).map_err(io("write the log"))?;
        inner.active = Some((segment.clone(), end + buf.len() as u64));
        if !inner.dirty.iter().any(|s| Arc::ptr_eq(s, &segment)) {
            inner.dirty.push(segment.clone());
        }
        if inner.locs.is_empty() {
            inner.first = first_index;
        }
        if inner.tail.is_empty() {
            inner.tail_first = first_index;
        }
        for (entry, (at, len)) in entries.into_iter().zip(sizes) {
            inner.locs.push_back(Loc { segment: segment.clone(), offset: end + at as u64, len: len as u32 });
            inner.last = Some(entry.log_id);
            inner.tail_bytes += len;
            inner.tail.push_back((entry, len));
        }
        inner.written = inner.last;
        while inner.tail_bytes > TAIL_BYTES && inner.tail.len() > 1 {
            if let Some((_, len)) = inner.tail.pop_front() {
                inner.tail_bytes -= len;
                inner.tail_first += 1;
            }
        }
        Ok(())
    }

    /// Seals the active segment (durably) and starts one for entries from `first`, of at least
    /// `need` bytes.
    fn rotate(&self, inner: &mut Inner, first: u64, need: u64) -> Result<(), StoreError> {
        if let Some((old, _)) = inner.active.take() {
            old.file.sync_data().map_err(io("sync a log segment"))?;
            inner.dirty.retain(|s| !Arc::ptr_eq(s, &old));
        }
        let path = self.dir.join(segment_name(first));
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(crate::datadir::FILE_MODE)
            .open(&path)
            .map_err(io("create a log segment"))?;
        let cap = need.max(SEGMENT_BYTES);
        file.set_len(cap).map_err(io("size a log segment"))?;
        file.sync_all().map_err(io("sync a log segment"))?;
        sync_dir(&self.dir)?;
        let segment = Arc::new(Segment { first, path, file, cap });
        // A segment of that name holds no entry (they would be from `first` on): it is the file
        // just truncated, and must not be removed as a second segment by a later purge.
        inner.segments.retain(|s| s.path != segment.path);
        inner.segments.push(segment.clone());
        inner.active = Some((segment, 0));
        Ok(())
    }

    /// Makes everything written so far durable: one `fdatasync` per segment written since.
    pub(super) fn sync(&self) -> Result<(), StoreError> {
        let _one_at_a_time =
            self.syncing.lock().map_err(|_| StoreError::Log("the log's sync lock is poisoned".into()))?;
        let (dirty, written) = {
            let mut inner = self.lock()?;
            (std::mem::take(&mut inner.dirty), inner.written)
        };
        for segment in &dirty {
            segment.file.sync_data().map_err(io("sync the log"))?;
        }
        let mut inner = self.lock()?;
        if written.map(|w| w.index) > inner.synced.map(|s| s.index) || written.is_none() {
            inner.synced = written;
        }
        Ok(())
    }

    /// The entries with indexes in `[start, end)` that the log holds, in order.
    pub(super) fn entries(&self, start: u64, end: u64) -> Result<Vec<LogEntry>, StoreError> {
        self.entries_within(start, end, usize::MAX)
    }

    /// As `entries`, stopping before the entry that would take the records' total past `budget`
    /// bytes (the first entry always comes: the caller needs progress).
    pub(super) fn entries_within(&self, start: u64, end: u64, budget: usize) -> Result<Vec<LogEntry>, StoreError> {
        enum Slot {
            Kept(LogEntry),
            Stored(Loc),
        }
        let mut slots = Vec::new();
        {
            let inner = self.lock()?;
            let last = inner.last.map_or(inner.first, |l| l.index + 1);
            let (start, end) = (start.max(inner.first), end.min(last));
            let mut bytes = 0usize;
            for index in start..end {
                let Some(loc) = inner.locs.get((index - inner.first) as usize) else { continue };
                bytes = bytes.saturating_add(loc.len as usize);
                if bytes > budget && !slots.is_empty() {
                    break;
                }
                if index >= inner.tail_first {
                    if let Some((entry, _)) = inner.tail.get((index - inner.tail_first) as usize) {
                        slots.push(Slot::Kept(entry.clone()));
                        continue;
                    }
                }
                slots.push(Slot::Stored(loc.clone()));
            }
        }
        // Entries older than the tail are read without holding the lock.
        slots
            .into_iter()
            .map(|slot| match slot {
                Slot::Kept(entry) => Ok(entry),
                Slot::Stored(loc) => read_loc(&loc),
            })
            .collect()
    }

    /// Removes the entries from `index` on, durably.
    pub(super) fn truncate(&self, index: u64) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        let last = inner.last.map_or(inner.first, |l| l.index + 1);
        if index >= last {
            return Ok(());
        }
        let keep = index.saturating_sub(inner.first) as usize;
        let Some(cut) = inner.locs.get(keep).cloned() else { return Ok(()) };
        // Segments that start after the cut go whole.
        let (gone, kept): (Vec<_>, Vec<_>) =
            inner.segments.drain(..).partition(|s| s.first > cut.segment.first && !Arc::ptr_eq(s, &cut.segment));
        inner.segments = kept;
        // Later segments go first: a crash in between leaves a prefix of the log as it was
        // (entries past the cut are a conflicting leader's, never committed), never a segment
        // that ends early followed by one that starts late, which `open` would refuse.
        for s in &gone {
            std::fs::remove_file(&s.path).map_err(io("remove a log segment"))?;
        }
        if !gone.is_empty() {
            sync_dir(&self.dir)?;
        }
        zero_from(&cut.segment, cut.offset)?;
        inner.dirty.retain(|s| !gone.iter().any(|g| Arc::ptr_eq(s, g)));
        inner.active = Some((cut.segment.clone(), cut.offset));
        inner.locs.truncate(keep);
        if index < inner.tail_first {
            inner.tail.clear();
            inner.tail_bytes = 0;
            inner.tail_first = index;
        } else {
            let keep_tail = (index - inner.tail_first) as usize;
            while inner.tail.len() > keep_tail {
                if let Some((_, len)) = inner.tail.pop_back() {
                    inner.tail_bytes -= len;
                }
            }
        }
        inner.last = match inner.locs.back() {
            None => None,
            Some(loc) => Some(match inner.tail.back() {
                Some((entry, _)) => entry.log_id,
                None => read_loc(loc)?.log_id,
            }),
        };
        inner.written = inner.last;
        if inner.synced.map(|s| s.index) >= Some(index) {
            inner.synced = inner.last;
        }
        Ok(())
    }

    /// Forgets the entries up to `upto` (its position is the caller's to keep) and removes the
    /// segments that hold nothing after it.
    pub(super) fn purge(&self, upto: LogId) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        let floor = upto.index + 1;
        while inner.first < floor && !inner.locs.is_empty() {
            inner.locs.pop_front();
            inner.first += 1;
        }
        inner.first = inner.first.max(floor);
        while inner.tail_first < floor && !inner.tail.is_empty() {
            if let Some((_, len)) = inner.tail.pop_front() {
                inner.tail_bytes -= len;
            }
            inner.tail_first += 1;
        }
        inner.tail_first = inner.tail_first.max(floor);
        if inner.locs.is_empty() {
            // Nothing left: the next append starts a segment of its own (a purge past the last
            // entry, as after a snapshot install, must not leave a gap inside a segment).
            inner.last = None;
            inner.written = None;
            inner.synced = None;
            inner.active = None;
            inner.dirty.clear();
        }
        // A segment holds nothing after the purge point when the next one starts at or below it.
        let live: Vec<*const Segment> = inner.locs.iter().map(|l| Arc::as_ptr(&l.segment)).collect();
        let active = inner.active.as_ref().map(|(s, _)| Arc::as_ptr(s));
        let (gone, kept): (Vec<_>, Vec<_>) =
            inner.segments.drain(..).partition(|s| !live.contains(&Arc::as_ptr(s)) && active != Some(Arc::as_ptr(s)));
        inner.segments = kept;
        for s in gone {
            std::fs::remove_file(&s.path).map_err(io("remove a log segment"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
