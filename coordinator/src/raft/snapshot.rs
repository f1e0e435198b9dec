//! Snapshots as files of JSON lines, written and read one line at a time: the first line is the
//! state (the audit trail's head, not its entries), then every audit entry, oldest first. Neither
//! building, sending nor installing one holds the whole trail in memory.

use super::store::StoreError;
use crate::state::audit::AuditEntry;
use crate::state::State;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The first line of a snapshot file.
#[derive(Serialize, Deserialize)]
pub struct Header {
    pub state: State,
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

    /// Writes snapshot `id`: the header, then `entries` (each one entry's JSON, one line each);
    /// fsynced and renamed into place.
    pub fn write(
        &self,
        id: &str,
        header: &Header,
        entries: impl Iterator<Item = Result<Vec<u8>, StoreError>>,
    ) -> Result<(), StoreError> {
        self.write_with(id, |out| {
            serde_json::to_writer(&mut *out, header)
                .map_err(|e| StoreError::Encode { what: "snapshot header", source: e })?;
            out.write_all(b"\n").map_err(io("write a snapshot"))?;
            for entry in entries {
                out.write_all(&entry?).map_err(io("write a snapshot"))?;
                out.write_all(b"\n").map_err(io("write a snapshot"))?;
            }
            Ok(())
        })
    }

    /// Keeps a received snapshot (`file`, read from its start) as snapshot `id`.
    pub fn keep(&self, id: &str, file: &mut File) -> Result<(), StoreError> {
        file.seek(SeekFrom::Start(0)).map_err(io("rewind a received snapshot"))?;
        self.write_with(id, |out| {
            std::io::copy(file, out).map_err(io("copy a received snapshot"))?;
            Ok(())
        })
    }

    fn write_with(
        &self,
        id: &str,
        fill: impl FnOnce(&mut BufWriter<File>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let part = self.dir.join(format!("{id}.part"));
        // Owner-only: the state carries the cluster CA's key.
        let file =
            std::os::unix::fs::OpenOptionsExt::mode(File::options().write(true).create(true).truncate(true), 0o600)
                .open(&part)
                .map_err(io("create a snapshot file"))?;
        let mut out = BufWriter::new(file);
        fill(&mut out)?;
        let file = out.into_inner().map_err(|e| StoreError::Io { what: "write a snapshot", source: e.into_error() })?;
        file.sync_all().map_err(io("fsync a snapshot"))?;
        std::fs::rename(&part, self.path(id)).map_err(io("rename a snapshot into place"))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io("fsync the snapshot directory"))?;
        Ok(())
    }

    /// Removes every snapshot file but `keep`'s (and any half-written one).
    pub fn remove_others(&self, keep: &str) {
        let Ok(dir) = std::fs::read_dir(&self.dir) else { return };
        let keep = format!("{keep}.snap");
        for entry in dir.flatten() {
            if entry.file_name().to_str() != Some(keep.as_str()) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// A new, nameless file to receive a snapshot into (it vanishes when closed unless kept).
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

/// Reads a snapshot from its start: the header, then the entries one at a time.
pub fn read(
    file: &mut File,
) -> Result<(Header, impl Iterator<Item = Result<AuditEntry, StoreError>> + '_), StoreError> {
    file.seek(SeekFrom::Start(0)).map_err(io("rewind a snapshot"))?;
    let mut lines = BufReader::new(&mut *file).lines();
    let first = lines.next().transpose().map_err(io("read a snapshot"))?.unwrap_or_default();
    let header: Header =
        serde_json::from_str(&first).map_err(|source| StoreError::Decode { what: "snapshot header", source })?;
    let entries = lines.map(|line| {
        let line = line.map_err(io("read a snapshot"))?;
        serde_json::from_str(&line).map_err(|source| StoreError::Decode { what: "snapshot entry", source })
    });
    Ok((header, entries))
}
