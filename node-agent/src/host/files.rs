//! The agent's one way to replace a file: [`berqenas_common::files::write_atomic`] (temp file,
//! fsync, explicit mode, rename, fsync of the directory), with the path named in its error.

use berqenas_common::files::Owner;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("cannot write {}: {error}", path.display())]
pub struct WriteError {
    pub path: PathBuf,
    pub error: std::io::Error,
}

/// Replaces `path` with `bytes`, mode `mode`, atomically.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), WriteError> {
    write_owned(path, bytes, mode, None)
}

/// [`write_atomic`], owned by `owner` when given.
pub fn write_owned(path: &Path, bytes: &[u8], mode: u32, owner: Option<Owner>) -> Result<(), WriteError> {
    berqenas_common::files::write_atomic_owned(path, bytes, mode, owner)
        .map_err(|error| WriteError { path: path.to_path_buf(), error })
}

/// Writes `text` to `path` (atomically, `mode`, `owner`) unless it already holds exactly that.
/// Returns whether it wrote.
pub fn write_if_changed(path: &Path, text: &str, mode: u32, owner: Option<Owner>) -> Result<bool, WriteError> {
    if std::fs::read_to_string(path).ok().as_deref() == Some(text) {
        return Ok(false);
    }
    write_owned(path, text.as_bytes(), mode, owner)?;
    Ok(true)
}
