//! The forwarder's persisted position: the last sequence number the SIEM acknowledged (HTTPS) or
//! took (syslog), in `siem.cursor` in the data dir (0600, written atomically). It names the
//! target it belongs to, so pointing the coordinator at a new SIEM sends that SIEM the whole trail.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const FILE: &str = "siem.cursor";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cursor {
    /// `Target::describe` (no secrets).
    pub target: String,
    /// Every entry with `seq <= delivered_seq` was delivered (0: none yet).
    pub delivered_seq: u64,
}

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

/// The cursor for `target`: the stored one if it is that target's, else a fresh one at 0. A file
/// that cannot be parsed is an error (never silently a resend of everything or a skip).
pub fn load(data_dir: &Path, target: &str) -> anyhow::Result<Cursor> {
    let fresh = Cursor { target: target.to_string(), delivered_seq: 0 };
    let file = path(data_dir);
    match std::fs::read(&file) {
        Ok(bytes) => {
            let stored: Cursor = serde_json::from_slice(&bytes)
                .map_err(|e| anyhow::anyhow!("parse {}: {e} (remove it to resend the whole trail)", file.display()))?;
            Ok(if stored.target == target { stored } else { fresh })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(fresh),
        Err(e) => Err(anyhow::anyhow!("read {}: {e}", file.display())),
    }
}

pub fn save(data_dir: &Path, cursor: &Cursor) -> std::io::Result<()> {
    // A struct of a string and an integer always serializes.
    let bytes = serde_json::to_vec(cursor).unwrap_or_default();
    crate::datadir::write_private(&path(data_dir), &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_saved_cursor_is_private_and_belongs_to_its_target() {
        let dir = tempfile::tempdir().expect("tmp");
        assert_eq!(load(dir.path(), "https://a/x").expect("fresh").delivered_seq, 0);
        save(dir.path(), &Cursor { target: "https://a/x".into(), delivered_seq: 17 }).expect("save");
        assert_eq!(load(dir.path(), "https://a/x").expect("load").delivered_seq, 17);
        assert_eq!(load(dir.path(), "syslog+tls://b:6514").expect("other").delivered_seq, 0);
        let mode = std::fs::metadata(path(dir.path())).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(path(dir.path()), b"garbage").expect("write");
        assert!(load(dir.path(), "https://a/x").is_err());
    }
}
