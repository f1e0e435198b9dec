//! The one way Berqenas replaces a file: atomically, with an explicit mode.
//!
//! `write_atomic` writes a temp file in the same directory, fsyncs it, sets its mode explicitly
//! (so the umask never widens or narrows it), renames it over the target and fsyncs the
//! directory, so after a crash the file holds either the old or the new bytes, never a mix, and
//! the rename itself is durable. On any error the temp file is removed.
//!
//! On Windows (the device client) there are no mode bits and no owner ids: `mode` and `owner`
//! are ignored (the caller restricts the directory with an ACL, which new files inherit), the
//! rename replaces the target (`MoveFileExW` with `MOVEFILE_REPLACE_EXISTING`), and the directory
//! cannot be opened to fsync it (NTFS journals the rename itself).

use std::io::Write;
#[cfg(unix)]
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Who should own the new file (the replaced file's owner, say); `None` keeps the writer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// Replaces `path` with `bytes`, mode `mode` (e.g. `0o600`), atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    write_atomic_owned(path, bytes, mode, None)
}

/// [`write_atomic`], and the new file is owned by `owner` (needs the right to chown).
pub fn write_atomic_owned(path: &Path, bytes: &[u8], mode: u32, owner: Option<Owner>) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = temp_path(dir, path);
    let result = write_temp(&tmp, bytes, mode, owner).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)
}

/// A file that replaces `path` atomically once written, for content streamed in pieces: the bytes
/// go to a temp file beside it (mode `mode`, exactly); `commit` fsyncs it, renames it over `path`
/// and fsyncs the directory. Dropped without `commit`, the temp file is removed and `path` is
/// untouched.
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<std::fs::File>,
}

impl AtomicFile {
    pub fn create(path: &Path, mode: u32) -> std::io::Result<Self> {
        let tmp = temp_path(parent(path), path);
        let file = create_temp(&tmp, mode)?;
        Ok(Self { path: path.to_path_buf(), tmp, file: Some(file) })
    }

    /// The temp file, to write the content to.
    pub fn file(&mut self) -> std::io::Result<&mut std::fs::File> {
        self.file.as_mut().ok_or_else(|| std::io::Error::other("the file was already committed"))
    }

    /// Makes the written content durable and puts it at `path`.
    pub fn commit(mut self) -> std::io::Result<()> {
        let file = self.file.take().ok_or_else(|| std::io::Error::other("the file was already committed"))?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&self.tmp, &self.path)?;
        sync_dir(parent(&self.path))
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

#[cfg(not(unix))]
fn create_temp(tmp: &Path, _mode: u32) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().write(true).create_new(true).open(tmp)
}

#[cfg(unix)]
fn create_temp(tmp: &Path, mode: u32) -> std::io::Result<std::fs::File> {
    let f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(tmp)?;
    // `mode` at creation is masked by the umask; set it exactly.
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    Ok(f)
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_: &Path) -> std::io::Result<()> {
    Ok(())
}

/// A name beside `path` no other writer (thread or process) uses at the same time.
fn temp_path(dir: &Path, path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

#[cfg(not(unix))]
fn write_temp(tmp: &Path, bytes: &[u8], _mode: u32, _owner: Option<Owner>) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(tmp)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(unix)]
fn write_temp(tmp: &Path, bytes: &[u8], mode: u32, owner: Option<Owner>) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(tmp)?;
    // `mode` at creation is masked by the umask; set it exactly.
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    if let Some(o) = owner {
        std::os::unix::fs::fchown(&f, Some(o.uid), Some(o.gid))?;
    }
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn mode_is_honoured_whatever_the_umask() {
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("shared.conf");
        write_atomic(&path, b"x", 0o664).expect("write");
        assert_eq!(std::fs::metadata(&path).expect("stat").mode() & 0o7777, 0o664, "umask 022 did not mask it");
        write_atomic(&path, b"y", 0o600).expect("rewrite");
        assert_eq!(std::fs::metadata(&path).expect("stat").mode() & 0o7777, 0o600, "the new mode, not the old file's");
    }

    #[test]
    fn no_temp_file_is_left_on_error() {
        let dir = tempfile::tempdir().expect("tmp");
        // The target is a directory: the rename fails after the temp file was written.
        std::fs::create_dir(dir.path().join("taken")).expect("dir");
        assert!(write_atomic(&dir.path().join("taken"), b"x", 0o600).is_err());
        assert_eq!(entries(dir.path()), ["taken"]);
        // A missing directory: nothing is created anywhere.
        assert!(write_atomic(&dir.path().join("missing/file"), b"x", 0o600).is_err());
        assert_eq!(entries(dir.path()), ["taken"]);
    }

    #[test]
    fn an_atomic_file_appears_only_when_committed() {
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("snap");
        let mut f = AtomicFile::create(&path, 0o600).expect("create");
        f.file().expect("file").write_all(b"part").expect("write");
        drop(f);
        assert!(entries(dir.path()).is_empty(), "an uncommitted file leaves nothing");
        let mut f = AtomicFile::create(&path, 0o600).expect("create");
        f.file().expect("file").write_all(b"whole").expect("write");
        f.commit().expect("commit");
        assert_eq!(entries(dir.path()), ["snap"]);
        assert_eq!(std::fs::read(&path).expect("read"), b"whole");
        assert_eq!(std::fs::metadata(&path).expect("stat").mode() & 0o7777, 0o600);
    }

    #[test]
    fn content_is_replaced_atomically() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("state.json");
        write_atomic(&path, b"old", 0o600).expect("first");
        let mut reader = std::fs::File::open(&path).expect("open");
        write_atomic(&path, b"new contents", 0o600).expect("second");
        // A reader that opened the old file still reads it whole; the path names the new one.
        let mut old = String::new();
        reader.read_to_string(&mut old).expect("read");
        assert_eq!(old, "old");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "new contents");
        assert_eq!(entries(dir.path()), ["state.json"], "no temp file beside it");
    }

    #[test]
    fn a_relative_path_in_the_working_directory_works() {
        let dir = tempfile::tempdir().expect("tmp");
        let name = Path::new("relative-write-test.txt");
        std::env::set_current_dir(dir.path()).expect("cd");
        write_atomic(name, b"here", 0o640).expect("write");
        assert_eq!(std::fs::read_to_string(dir.path().join(name)).expect("read"), "here");
    }
}
