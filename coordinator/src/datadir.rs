//! The coordinator's data directory on disk: created 0700, every file in it 0600 whatever the
//! umask, because `raft.redb` holds the cluster CA key, key hashes and password verifiers.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Mode of the data directory and of every directory under it.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file in it.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` (and missing parents) and sets it to 0700, even if it existed with a wider mode.
pub fn create(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename, fsync of the directory) with
/// mode 0600.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    berqenas_common::files::write_atomic(path, bytes, FILE_MODE)
}

/// Sets `dir` and every directory under it to 0700 and every regular file to 0600. Symbolic
/// links are left alone (their target is not ours to change).
/// Only modes that differ are changed, so a directory already right needs no ownership of it.
pub fn tighten(dir: &Path) -> std::io::Result<()> {
    set_mode(dir, DIR_MODE)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            tighten(&entry.path())?;
        } else if kind.is_file() {
            set_mode(&entry.path(), FILE_MODE)?;
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    if std::fs::metadata(path)?.permissions().mode() & 0o7777 != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("metadata").permissions().mode() & 0o7777
    }

    #[test]
    fn tighten_fixes_wide_modes() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().join("data");
        create(&dir).expect("create");
        assert_eq!(mode(&dir), DIR_MODE);
        let file = dir.join("raft.redb");
        std::fs::write(&file, b"x").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        tighten(&dir).expect("tighten");
        assert_eq!((mode(&dir), mode(&file)), (DIR_MODE, FILE_MODE));
        write_private(&dir.join("node.json"), b"{}").expect("write");
        assert_eq!(mode(&dir.join("node.json")), FILE_MODE);
    }
}
