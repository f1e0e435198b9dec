//! Public mode (a device enrolled with a `--public` token, publishing without the VPN): every
//! publish carries, besides the device's certificate, a customer key of its tenant and the
//! device's live fingerprint, which the ingest matches against the one recorded at enrollment.
//!
//! The key comes from `BERQENAS_DEVICE_API_KEY`, or the file named by
//! `BERQENAS_DEVICE_API_KEY_FILE`, or `api-key` in the state directory, in that order; a file
//! must not be readable by group or others (Unix). Never a command-line argument: those are
//! visible to every user of the machine. Without a key the device publishes as a VPN device.

use crate::state::StateDir;
use anyhow::{bail, Context};
use std::path::PathBuf;

/// The metadata key of the live fingerprint (the ingest's `auth::FINGERPRINT_HEADER`).
pub const FINGERPRINT_KEY: &str = "x-berqenas-fingerprint";
/// The key file in the state directory.
pub const KEY_FILE: &str = "api-key";

/// What a public-mode publish adds. No `Debug`: it holds a secret.
pub struct Public {
    authorization: tonic::metadata::AsciiMetadataValue,
}

/// `bqk_{16 hex}_{64 hex}`, as the coordinator prints customer keys.
fn valid_key(k: &str) -> bool {
    let Some(rest) = k.strip_prefix("bqk_") else { return false };
    let Some((id, secret)) = rest.split_once('_') else { return false };
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    hex(id, 16) && hex(secret, 64)
}

#[cfg(unix)]
fn check_private(path: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?.permissions().mode();
    if mode & 0o077 != 0 {
        bail!("{} is readable by others (mode {:o}); chmod 600 it", path.display(), mode & 0o777);
    }
    Ok(())
}

/// On Windows the state directory's ACL (SYSTEM and Administrators) protects the file.
#[cfg(not(unix))]
fn check_private(_path: &std::path::Path) -> anyhow::Result<()> {
    Ok(())
}

/// The public-mode credentials, if this device has a key; an error when a key is configured
/// but unusable (malformed, or a file others can read).
pub fn load(dir: &StateDir) -> anyhow::Result<Option<Public>> {
    let key = if let Some(k) = std::env::var_os("BERQENAS_DEVICE_API_KEY").filter(|k| !k.is_empty()) {
        k.into_string().map_err(|_| anyhow::anyhow!("BERQENAS_DEVICE_API_KEY is not a customer key (bqk_…)"))?
    } else {
        let (path, explicit) = match std::env::var_os("BERQENAS_DEVICE_API_KEY_FILE").filter(|p| !p.is_empty()) {
            Some(p) => (PathBuf::from(p), true),
            None => (dir.path(KEY_FILE), false),
        };
        if !explicit && !path.exists() {
            return Ok(None);
        }
        check_private(&path)?;
        std::fs::read_to_string(&path).with_context(|| format!("cannot read the API key file {}", path.display()))?
    };
    let key = key.trim();
    if !valid_key(key) {
        bail!("the configured API key is not a customer key (bqk_…)");
    }
    let authorization = format!("Bearer {key}")
        .parse()
        .map_err(|_| anyhow::anyhow!("the configured API key is not a customer key (bqk_…)"))?;
    Ok(Some(Public { authorization }))
}

/// The live fingerprint as the ingest reads it: `machine-id=HEX; macs=HEX,HEX`.
pub fn fingerprint_value(f: &crate::fingerprint::Fingerprint) -> String {
    format!("machine-id={}; macs={}", f.machine_id_hash, f.mac_hashes.join(","))
}

impl Public {
    /// Adds the key and the fingerprint collected now to a publish call.
    pub fn attach<T>(&self, request: &mut tonic::Request<T>) -> anyhow::Result<()> {
        let live = fingerprint_value(&crate::fingerprint::collect());
        let live = live.parse().map_err(|_| anyhow::anyhow!("the fingerprint is not valid metadata"))?;
        request.metadata_mut().insert("authorization", self.authorization.clone());
        request.metadata_mut().insert(FINGERPRINT_KEY, live);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_and_the_fingerprint_has_the_ingests_form() {
        assert!(valid_key(&format!("bqk_{}_{}", "a".repeat(16), "b".repeat(64))));
        assert!(!valid_key("bqk_short_secret"));
        assert!(!valid_key(&format!("bqd_{}_{}", "a".repeat(16), "b".repeat(64))), "a device token is not a key");
        let f = crate::fingerprint::from_parts(
            &["aa:bb:cc:dd:ee:01".into(), "aa:bb:cc:dd:ee:02".into()],
            "machine",
            String::new(),
        );
        let v = fingerprint_value(&f);
        assert!(v.starts_with(&format!("machine-id={}; macs=", f.machine_id_hash)), "{v}");
        assert_eq!(v.matches(',').count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = StateDir::new(tmp.path().to_path_buf());
        assert!(load(&dir).expect("no key").is_none(), "no key: a VPN device");
        let path = dir.path(KEY_FILE);
        std::fs::write(&path, format!("bqk_{}_{}\n", "a".repeat(16), "b".repeat(64))).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(load(&dir).is_err(), "0644 refused");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(load(&dir).expect("0600").is_some());
    }
}
