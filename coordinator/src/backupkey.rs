//! The cluster backup key: 32 random bytes every coordinator holds in `backup.key` of its data
//! directory (0600, never in the Raft state), made at `init` and handed to a joining coordinator
//! in its join answer. It wraps each tenant's data keys (AES-256-GCM, AAD = tenant and data key
//! id), so the Raft state, its snapshots and its log hold data keys only wrapped; a coordinator
//! unwraps one only to send it to the tenant's db node over mTLS.

use crate::state::backup::WrappedKey;
use crate::state::names::TenantName;
use anyhow::Context;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The file in the data directory.
pub const FILE: &str = "backup.key";

/// The cluster backup key. Never printed.
#[derive(Clone)]
pub struct ClusterKey {
    /// 16 hex digits of SHA-256 of the key: names the key without revealing it.
    pub id: String,
    key: [u8; 32],
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterKey").field("id", &self.id).finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnwrapError {
    #[error("data key {key} is wrapped under cluster key {wrapped_under}, this coordinator holds {held}")]
    OtherClusterKey { key: String, wrapped_under: String, held: String },
    #[error("data key {0} does not authenticate (wrong tenant, id or cluster key, or changed bytes)")]
    Authentication(String),
}

/// Additional data of a wrapped key: it opens only as that key of that tenant.
fn aad(tenant: &TenantName, key_id: &str) -> Vec<u8> {
    let mut a = b"berqenas data key v1\0".to_vec();
    a.extend_from_slice(tenant.as_str().as_bytes());
    a.push(0);
    a.extend_from_slice(key_id.as_bytes());
    a
}

pub fn random32() -> anyhow::Result<[u8; 32]> {
    let mut key = [0u8; 32];
    getrandom::getrandom(&mut key).map_err(|e| anyhow::anyhow!("system randomness unavailable: {e}"))?;
    Ok(key)
}

impl ClusterKey {
    pub fn from_bytes(key: [u8; 32]) -> Self {
        let mut h = Sha256::new();
        h.update(b"berqenas cluster backup key id\0");
        h.update(key);
        Self { id: hex::encode(&h.finalize()[..8]), key }
    }

    pub fn generate() -> anyhow::Result<Self> {
        Ok(Self::from_bytes(random32()?))
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.key
    }

    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(FILE)
    }

    /// The key in `data_dir`, if there is one: 64 hex digits.
    pub fn load(data_dir: &Path) -> anyhow::Result<Option<Self>> {
        let path = Self::path(data_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        };
        let key: [u8; 32] = hex::decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .with_context(|| format!("{} must hold 64 hex digits", path.display()))?;
        Ok(Some(Self::from_bytes(key)))
    }

    /// Writes the key to `data_dir` with mode 0600, whatever the umask.
    pub fn save(&self, data_dir: &Path) -> anyhow::Result<()> {
        let path = Self::path(data_dir);
        crate::datadir::write_private(&path, hex::encode(self.key).as_bytes())
            .with_context(|| format!("write {}", path.display()))
    }

    /// Seals data key `key_id` of `tenant` under this key with a fresh random nonce.
    pub fn wrap(&self, tenant: &TenantName, key_id: &str, data_key: &[u8; 32]) -> anyhow::Result<WrappedKey> {
        let mut nonce = [0u8; 12];
        getrandom::getrandom(&mut nonce).map_err(|e| anyhow::anyhow!("system randomness unavailable: {e}"))?;
        let mut sealed = data_key.to_vec();
        self.aead()
            .ok_or_else(|| anyhow::anyhow!("the cluster backup key is not an AES-256 key"))?
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad(tenant, key_id)), &mut sealed)
            .map_err(|_| anyhow::anyhow!("sealing a data key failed"))?;
        Ok(WrappedKey {
            id: key_id.to_string(),
            cluster_key_id: self.id.clone(),
            nonce: hex::encode(nonce),
            sealed: hex::encode(sealed),
        })
    }

    /// Opens a wrapped data key of `tenant`; refuses one of another tenant, id or cluster key.
    pub fn unwrap(&self, tenant: &TenantName, w: &WrappedKey) -> Result<[u8; 32], UnwrapError> {
        if w.cluster_key_id != self.id {
            return Err(UnwrapError::OtherClusterKey {
                key: w.id.clone(),
                wrapped_under: w.cluster_key_id.clone(),
                held: self.id.clone(),
            });
        }
        let refused = || UnwrapError::Authentication(w.id.clone());
        let nonce: [u8; 12] = hex::decode(&w.nonce).ok().and_then(|n| n.try_into().ok()).ok_or_else(refused)?;
        let mut sealed = hex::decode(&w.sealed).map_err(|_| refused())?;
        let plain = self
            .aead()
            .ok_or_else(refused)?
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad(tenant, &w.id)), &mut sealed)
            .map_err(|_| refused())?;
        plain.try_into().map_err(|_| refused())
    }

    /// A key for another purpose, derived with HKDF-SHA256 under its own `label` (sessions, TOTP
    /// secrets): one secret to keep on every coordinator, and no derived key opens another's data.
    pub fn derive(&self, label: &[u8]) -> [u8; 32] {
        struct Len32;
        impl ring::hkdf::KeyType for Len32 {
            fn len(&self) -> usize {
                32
            }
        }
        let prk =
            ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"berqenas cluster key derivation v1").extract(&self.key);
        let mut out = [0u8; 32];
        #[allow(clippy::expect_used, reason = "one 32-byte block is far below HKDF-SHA256's 255 × 32 byte limit")]
        prk.expand(&[label], Len32)
            .and_then(|okm| okm.fill(&mut out))
            .expect("one 32-byte block is far below HKDF-SHA256's 255 × 32 byte limit");
        out
    }

    /// The AEAD key; `None` never happens for 32 bytes.
    fn aead(&self) -> Option<LessSafeKey> {
        UnboundKey::new(&AES_256_GCM, &self.key).ok().map(LessSafeKey::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> TenantName {
        TenantName::parse(n).expect("name")
    }

    #[test]
    fn a_wrapped_key_opens_only_as_itself() {
        let cluster = ClusterKey::from_bytes([7; 32]);
        let data = [42u8; 32];
        let w = cluster.wrap(&name("acme"), "acme-1", &data).expect("wrap");
        assert!(!w.sealed.contains(&hex::encode(data)), "the Raft state never holds the key in clear");
        assert_eq!(cluster.unwrap(&name("acme"), &w), Ok(data));
        assert_eq!(cluster.unwrap(&name("globex"), &w), Err(UnwrapError::Authentication("acme-1".into())));
        let renamed = WrappedKey { id: "acme-2".into(), ..w.clone() };
        assert!(cluster.unwrap(&name("acme"), &renamed).is_err(), "the id is authenticated");
        let mut flipped = w.clone();
        flipped.sealed.replace_range(0..2, if &w.sealed[0..2] == "00" { "01" } else { "00" });
        assert!(cluster.unwrap(&name("acme"), &flipped).is_err());
        let other = ClusterKey::from_bytes([8; 32]);
        assert!(matches!(other.unwrap(&name("acme"), &w), Err(UnwrapError::OtherClusterKey { .. })));
        let forged = WrappedKey { cluster_key_id: other.id.clone(), ..w };
        assert_eq!(other.unwrap(&name("acme"), &forged), Err(UnwrapError::Authentication("acme-1".into())));
    }

    #[test]
    fn two_wraps_of_one_key_differ_and_the_id_names_the_key() {
        let cluster = ClusterKey::from_bytes([7; 32]);
        let a = cluster.wrap(&name("acme"), "acme-1", &[1; 32]).expect("wrap");
        let b = cluster.wrap(&name("acme"), "acme-1", &[1; 32]).expect("wrap");
        assert_ne!(a.nonce, b.nonce);
        assert_eq!(ClusterKey::from_bytes([7; 32]).id, cluster.id);
        assert_ne!(ClusterKey::from_bytes([9; 32]).id, cluster.id);
        assert!(!format!("{cluster:?}").contains(&hex::encode([7u8; 32])));
    }

    #[test]
    fn derived_keys_differ_by_label_and_never_equal_the_key() {
        let cluster = ClusterKey::from_bytes([7; 32]);
        let a = cluster.derive(b"berqenas session tokens v1");
        assert_eq!(a, ClusterKey::from_bytes([7; 32]).derive(b"berqenas session tokens v1"));
        assert_ne!(a, cluster.derive(b"berqenas totp secrets v1"));
        assert_ne!(a, *cluster.bytes());
    }

    #[test]
    fn the_key_file_is_private_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tmp");
        let key = ClusterKey::generate().expect("key");
        key.save(tmp.path()).expect("save");
        let mode = std::fs::metadata(ClusterKey::path(tmp.path())).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = ClusterKey::load(tmp.path()).expect("load").expect("present");
        assert_eq!((loaded.id, loaded.key), (key.id.clone(), key.key));
        assert!(ClusterKey::load(&tmp.path().join("none")).expect("absent is fine").is_none());
    }
}
