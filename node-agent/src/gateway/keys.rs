//! The tenants' WireGuard private keys: made on this gateway, stored under the agent's data
//! directory (`wireguard/<tenant>.key`, directory 0700, files 0600, written atomically), read
//! only to configure the tenant's device, never logged, reported or sent anywhere. Only the
//! public half leaves this module.

use berqenas_common::net::WgKey;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use wireguard_control::Key;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {}: {error}", path.display())]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{} holds no valid WireGuard private key", path.display())]
    Invalid { path: PathBuf },
    #[error(transparent)]
    Write(#[from] crate::host::files::WriteError),
    #[error("cannot remove {}: {error}", path.display())]
    Remove { path: PathBuf, error: std::io::Error },
}

/// The key directory.
#[derive(Debug, Clone)]
pub struct KeyStore {
    dir: PathBuf,
}

impl KeyStore {
    pub fn new(data_dir: &Path) -> Self {
        Self { dir: data_dir.join("wireguard") }
    }

    fn path(&self, tenant: &str) -> PathBuf {
        // Tenant names are validated at the boundary (lowercase letters, digits, `_`).
        self.dir.join(format!("{tenant}.key"))
    }

    /// Tenants with a stored key, and its public half. A missing directory is an empty store.
    pub fn list(&self) -> Result<BTreeMap<String, WgKey>, KeyError> {
        let read = |error| KeyError::Read { path: self.dir.clone(), error };
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(read(e)),
        };
        let mut out = BTreeMap::new();
        for entry in entries {
            let entry = entry.map_err(read)?;
            let file = entry.file_name().to_string_lossy().into_owned();
            if let Some(tenant) = file.strip_suffix(".key") {
                let public = self.private(tenant)?.get_public();
                out.insert(tenant.to_string(), WgKey::from_bytes(&public.0));
            }
        }
        Ok(out)
    }

    /// The tenant's private key, to configure its device.
    pub fn private(&self, tenant: &str) -> Result<Key, KeyError> {
        let path = self.path(tenant);
        let text = std::fs::read_to_string(&path).map_err(|error| KeyError::Read { path: path.clone(), error })?;
        Key::from_base64(text.trim()).map_err(|_| KeyError::Invalid { path })
    }

    /// Makes and stores a new private key for `tenant`; returns its public half.
    pub fn generate(&self, tenant: &str) -> Result<WgKey, KeyError> {
        use std::os::unix::fs::DirBuilderExt;
        let mkdir = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir);
        mkdir.map_err(|error| KeyError::Read { path: self.dir.clone(), error })?;
        let key = Key::generate_private();
        let text = format!("{}\n", key.to_base64());
        crate::host::files::write_atomic(&self.path(tenant), text.as_bytes(), 0o600)?;
        Ok(WgKey::from_bytes(&key.get_public().0))
    }

    pub fn remove(&self, tenant: &str) -> Result<(), KeyError> {
        let path = self.path(tenant);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(KeyError::Remove { path, error }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keys_are_made_here_private_to_the_agent_and_stable() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = KeyStore::new(dir.path());
        assert!(store.list().expect("empty").is_empty());
        let public = store.generate("acme").expect("generate");
        assert_eq!(store.list().expect("list").get("acme"), Some(&public));
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("wireguard")), 0o700);
        assert_eq!(mode(&dir.path().join("wireguard/acme.key")), 0o600);
        assert_eq!(WgKey::from_bytes(&store.private("acme").expect("private").get_public().0), public);
        store.remove("acme").expect("remove");
        store.remove("acme").expect("removing twice is fine");
        assert!(store.list().expect("list").is_empty());
    }
}
