//! Snapshots that never copy history. Audit entries are immutable once committed and already
//! live in the store's `audit` table, so a snapshot file holds one JSON line: the small mutable
//! state (tenants, nodes, keys, settings, the audit chain's head) and an `AuditRange` saying how
//! much of the stored trail it covers. Building one costs O(state), not O(history).
//!
//! What travels to a lagging follower is that line followed by every audit entry up to the range,
//! one JSON line each, read straight from the store a chunk at a time (`SnapshotData::Stored`):
//! openraft seeks to a byte offset and reads a chunk, so the store keeps a sparse index from byte
//! offsets in that stream to sequence numbers (`audit_marks`, one mark every `MARK_EVERY`
//! entries, written with the entries themselves). The follower receives the stream into a file
//! and installs it line by line. Nothing here holds the whole trail in memory.

use super::store::{decode, StoreError, AUDIT, AUDIT_MARKS};
use crate::state::State;
use redb::Database;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::future::Future;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

/// One `audit_marks` row (byte offset → sequence number) every this many entries.
pub const MARK_EVERY: u64 = 1024;

/// How much a stored snapshot reads from the store at a time (openraft sends 1 MiB chunks).
const READ_CHUNK: usize = 1 << 20;

/// How much of the stored audit trail a snapshot covers: entries `1..=upto`, which take `bytes`
/// bytes as shipped (each entry's stored JSON and a newline).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRange {
    pub upto: u64,
    pub bytes: u64,
}

/// The first line of a snapshot as shipped. `audit` is absent in snapshots written before the
/// trail stayed in the store (they carry every entry after this line; installing reads them the
/// same way).
#[derive(Deserialize)]
pub struct Header {
    pub state: State,
    #[serde(default)]
    pub audit: Option<AuditRange>,
}

#[derive(Serialize)]
struct HeaderOut<'a> {
    state: &'a State,
    audit: AuditRange,
}

/// Records in the offset index that entry `seq`, whose stored row is `row_len` bytes, starts at
/// `*bytes` in the shipped trail, and moves `*bytes` past it.
pub fn index_entry(
    marks: &mut redb::Table<'_, u64, u64>,
    seq: u64,
    row_len: usize,
    bytes: &mut u64,
) -> Result<(), StoreError> {
    if seq % MARK_EVERY == 1 {
        marks.insert(*bytes, seq)?;
    }
    *bytes += row_len as u64 + 1;
    Ok(())
}

/// The directory holding this coordinator's current snapshot file.
#[derive(Clone)]
pub struct SnapshotDir {
    dir: PathBuf,
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> StoreError {
    move |source| StoreError::Io { what, source }
}

impl SnapshotDir {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(io("create the snapshot directory"))?;
        Ok(Self { dir: dir.to_path_buf() })
    }

    /// The file of snapshot `id` (ids are `term-index-millis`, digits and dashes only).
    pub fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.snap"))
    }

    /// Writes snapshot `id`: `state` and the range of the stored trail it covers, as one line;
    /// created owner-only, fsynced, renamed into place and the directory fsynced.
    pub fn write(&self, id: &str, state: &State, audit: AuditRange) -> Result<(), StoreError> {
        let part = self.dir.join(format!("{id}.part"));
        // Owner-only: the state carries the cluster CA's key.
        let file =
            std::os::unix::fs::OpenOptionsExt::mode(File::options().write(true).create(true).truncate(true), 0o600)
                .open(&part)
                .map_err(io("create a snapshot file"))?;
        let mut out = std::io::BufWriter::new(file);
        serde_json::to_writer(&mut out, &HeaderOut { state, audit })
            .map_err(|e| StoreError::Encode { what: "snapshot header", source: e })?;
        out.write_all(b"\n").map_err(io("write a snapshot"))?;
        let file = out.into_inner().map_err(|e| StoreError::Io { what: "write a snapshot", source: e.into_error() })?;
        file.sync_all().map_err(io("fsync a snapshot"))?;
        std::fs::rename(&part, self.path(id)).map_err(io("rename a snapshot into place"))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io("fsync the snapshot directory"))?;
        Ok(())
    }

    /// Removes every snapshot file but `keep`'s (and any half-written one). A snapshot still
    /// being sent keeps its open file.
    pub fn remove_others(&self, keep: &str) {
        let Ok(dir) = std::fs::read_dir(&self.dir) else { return };
        let keep = format!("{keep}.snap");
        for entry in dir.flatten() {
            if entry.file_name().to_str() != Some(keep.as_str()) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// A new, nameless file to receive a snapshot into (it vanishes when closed).
    pub fn incoming(&self) -> Result<File, StoreError> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self.dir.join(format!("incoming-{}-{n}.part", crate::time::now_ms()));
        let file =
            std::os::unix::fs::OpenOptionsExt::mode(File::options().read(true).write(true).create_new(true), 0o600)
                .open(&path)
                .map_err(io("create a file for a received snapshot"))?;
        std::fs::remove_file(&path).map_err(io("unlink a received snapshot's file"))?;
        Ok(file)
    }
}

/// A blocking reader of a snapshot as shipped, for installing it.
pub trait ReadSeek: Read + Seek + Send {}
impl<T: Read + Seek + Send> ReadSeek for T {}

/// A snapshot stored here as shipped: its file (the header line), then the store's audit rows
/// `1..=audit.upto`, each followed by a newline. Reads go to the store a chunk at a time; the
/// rows are immutable, so any read transaction sees the same bytes.
pub struct StoredReader {
    db: Arc<Database>,
    header: File,
    header_len: u64,
    audit: AuditRange,
    /// The last chunk read and where it starts.
    window: Vec<u8>,
    window_at: u64,
    /// Where the next chunk starts when it continues the last one: (offset in the trail, seq).
    cursor: Option<(u64, u64)>,
    /// The position of the blocking `Read` view.
    pos: u64,
}

impl StoredReader {
    pub fn new(db: Arc<Database>, header: File, audit: AuditRange) -> Result<Self, StoreError> {
        let header_len = header.metadata().map_err(io("read a snapshot's size"))?.len();
        Ok(Self { db, header, header_len, audit, window: Vec::new(), window_at: 0, cursor: None, pos: 0 })
    }

    /// The length of the snapshot as shipped.
    pub fn shipped_len(&self) -> u64 {
        self.header_len + self.audit.bytes
    }

    /// Copies what the last chunk holds from `pos` on into `out`; `None` when it does not hold `pos`.
    fn buffered(&self, pos: u64, out: &mut [u8]) -> Option<usize> {
        let start = usize::try_from(pos.checked_sub(self.window_at)?).ok()?;
        let rest = self.window.get(start..).filter(|r| !r.is_empty())?;
        let n = rest.len().min(out.len());
        out[..n].copy_from_slice(&rest[..n]);
        Some(n)
    }

    /// Reads the chunk starting at `pos` (< `len`).
    fn fill(&mut self, pos: u64) -> std::io::Result<()> {
        self.window.clear();
        self.window_at = pos;
        if pos < self.header_len {
            let n = usize::try_from(self.header_len - pos).unwrap_or(READ_CHUNK).min(READ_CHUNK);
            self.window.resize(n, 0);
            return self.header.read_exact_at(&mut self.window, pos);
        }
        self.fill_audit(pos - self.header_len).map_err(std::io::Error::other)
    }

    /// Reads whole rows from the one holding trail offset `off` until about a chunk is read.
    fn fill_audit(&mut self, off: u64) -> Result<(), StoreError> {
        let txn = self.db.begin_read()?;
        let (mut at, seq) = match self.cursor {
            Some((at, seq)) if at == off => (at, seq),
            _ => match txn.open_table(AUDIT_MARKS)?.range(..=off)?.next_back() {
                Some(mark) => {
                    let (at, seq) = mark?;
                    (at.value(), seq.value())
                }
                None => (0, 1),
            },
        };
        let mut next = seq;
        let table = txn.open_table(AUDIT)?;
        for row in table.range(seq..=self.audit.upto)? {
            let (_, row) = row?;
            let row = row.value();
            let end = at + row.len() as u64 + 1;
            if end > off {
                let skip = usize::try_from(off.saturating_sub(at)).unwrap_or(usize::MAX);
                self.window.extend_from_slice(row.get(skip..).unwrap_or_default());
                self.window.push(b'\n');
            }
            at = end;
            next += 1;
            if self.window.len() >= READ_CHUNK {
                break;
            }
        }
        if at > self.audit.bytes {
            return Err(StoreError::Snapshot("the stored audit rows are longer than their index says"));
        }
        if self.window.is_empty() {
            return Err(StoreError::Snapshot("the stored audit trail ends before the snapshot's range"));
        }
        self.cursor = Some((at, next));
        Ok(())
    }
}

impl Read for StoredReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.shipped_len() || out.is_empty() {
            return Ok(0);
        }
        if self.buffered(self.pos, out).is_none() {
            self.fill(self.pos)?;
        }
        let n = self.buffered(self.pos, out).unwrap_or(0);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for StoredReader {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.pos = seek_target(self.pos, self.shipped_len(), to)?;
        Ok(self.pos)
    }
}

fn seek_target(pos: u64, len: u64, to: SeekFrom) -> std::io::Result<u64> {
    let target = match to {
        SeekFrom::Start(n) => Some(n),
        SeekFrom::End(d) => len.checked_add_signed(d),
        SeekFrom::Current(d) => pos.checked_add_signed(d),
    };
    target.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start"))
}

/// openraft's `SnapshotData`: a snapshot being received (a file), or one stored here being read
/// for sending (`StoredReader`, its blocking reads run on tokio's blocking pool).
pub struct SnapshotData(Inner);

enum Inner {
    File(tokio::fs::File),
    Stored(Stored),
}

type Filled = (StoredReader, std::io::Result<()>);

struct Stored {
    len: u64,
    pos: u64,
    /// `None` while a chunk is being read on the blocking pool (`pending`).
    reader: Option<StoredReader>,
    pending: Option<tokio::task::JoinHandle<Filled>>,
}

impl std::fmt::Debug for SnapshotData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Inner::File(_) => f.write_str("SnapshotData::File"),
            Inner::Stored(s) => write!(f, "SnapshotData::Stored({} bytes)", s.len),
        }
    }
}

impl SnapshotData {
    pub fn file(file: tokio::fs::File) -> Self {
        Self(Inner::File(file))
    }

    pub fn stored(reader: StoredReader) -> Self {
        Self(Inner::Stored(Stored { len: reader.shipped_len(), pos: 0, reader: Some(reader), pending: None }))
    }

    /// A blocking reader of the whole snapshot from its start.
    pub async fn into_reader(self) -> std::io::Result<Box<dyn ReadSeek>> {
        match self.0 {
            Inner::File(file) => {
                let mut file = file.into_std().await;
                file.seek(SeekFrom::Start(0))?;
                Ok(Box::new(file))
            }
            Inner::Stored(stored) => {
                let mut reader = match (stored.reader, stored.pending) {
                    (Some(reader), _) => reader,
                    (None, Some(pending)) => pending.await.map_err(std::io::Error::other)?.0,
                    (None, None) => return Err(std::io::Error::other("snapshot reader lost")),
                };
                reader.pos = 0;
                Ok(Box::new(reader))
            }
        }
    }
}

fn read_only() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::Unsupported, "a stored snapshot is read only")
}

impl AsyncRead for SnapshotData {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let s = match &mut self.0 {
            Inner::File(f) => return Pin::new(f).poll_read(cx, out),
            Inner::Stored(s) => s,
        };
        loop {
            if let Some(pending) = &mut s.pending {
                let (reader, filled) = match Pin::new(pending).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(joined) => joined.map_err(std::io::Error::other)?,
                };
                s.pending = None;
                s.reader = Some(reader);
                filled?;
            }
            let Some(reader) = s.reader.take() else {
                return Poll::Ready(Err(std::io::Error::other("snapshot reader lost")));
            };
            if s.pos >= s.len || out.remaining() == 0 {
                s.reader = Some(reader);
                return Poll::Ready(Ok(()));
            }
            let dst = out.initialize_unfilled();
            if let Some(n) = reader.buffered(s.pos, dst) {
                out.advance(n);
                s.pos += n as u64;
                s.reader = Some(reader);
                return Poll::Ready(Ok(()));
            }
            let pos = s.pos;
            let mut reader = reader;
            s.pending = Some(tokio::task::spawn_blocking(move || {
                let filled = reader.fill(pos);
                (reader, filled)
            }));
        }
    }
}

impl AsyncSeek for SnapshotData {
    fn start_seek(mut self: Pin<&mut Self>, to: SeekFrom) -> std::io::Result<()> {
        match &mut self.0 {
            Inner::File(f) => Pin::new(f).start_seek(to),
            Inner::Stored(s) => {
                s.pos = seek_target(s.pos, s.len, to)?;
                Ok(())
            }
        }
    }

    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<u64>> {
        match &mut self.0 {
            Inner::File(f) => Pin::new(f).poll_complete(cx),
            Inner::Stored(s) => Poll::Ready(Ok(s.pos)),
        }
    }
}

impl AsyncWrite for SnapshotData {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match &mut self.0 {
            Inner::File(f) => Pin::new(f).poll_write(cx, buf),
            Inner::Stored(_) => Poll::Ready(Err(read_only())),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.0 {
            Inner::File(f) => Pin::new(f).poll_flush(cx),
            Inner::Stored(_) => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.0 {
            Inner::File(f) => Pin::new(f).poll_shutdown(cx),
            Inner::Stored(_) => Poll::Ready(Ok(())),
        }
    }
}

/// Reads one line (without its newline) into `line`; false at the end of the input.
pub fn read_line(input: &mut impl std::io::BufRead, line: &mut Vec<u8>) -> Result<bool, StoreError> {
    line.clear();
    let n = input.read_until(b'\n', line).map_err(io("read a snapshot"))?;
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    Ok(n > 0)
}

/// Reads the header line of a snapshot as shipped.
pub fn read_header(input: &mut impl std::io::BufRead) -> Result<Header, StoreError> {
    let mut line = Vec::new();
    read_line(input, &mut line)?;
    decode("snapshot header", &line)
}
