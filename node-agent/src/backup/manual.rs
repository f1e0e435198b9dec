//! `berqenas-node-agent backup …`: one tenant of this db node backed up, listed or restored by
//! hand, without a coordinator — disaster recovery, or before the coordinators schedule backups.
//! The bucket comes from `[backup]` of agent.toml, the superuser URL from its PostgreSQL driver,
//! and the tenant's data key from a key file only its owner may read.

use super::format::DataKey;
use super::pg::Mode;
use super::store::Store;
use super::{Catalogued, Restored, Source};
use crate::config::{AgentConfig, DriverConfig};
use anyhow::Context;
use serde::Deserialize;
use std::path::Path;

/// A key file: `{"id": "acme-1", "key": "<64 hex digits>"}`, mode 0600 or stricter.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    id: String,
    key: String,
}

pub fn load_key(path: &Path) -> anyhow::Result<DataKey> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).with_context(|| format!("read {}", path.display()))?;
    if meta.mode() & 0o077 != 0 {
        anyhow::bail!("{} is readable by others (mode {:o}); chmod 600 it", path.display(), meta.mode() & 0o777);
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let file: KeyFile = serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
    let bytes = hex::decode(file.key.trim()).ok().filter(|b| b.len() == 32);
    let key: [u8; 32] = bytes
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("{}: key must be 64 hex digits (32 bytes)", path.display()))?;
    if file.id.is_empty() || file.id.len() > 255 {
        anyhow::bail!("{}: id must be 1 to 255 bytes", path.display());
    }
    Ok(DataKey { id: file.id, key })
}

/// The bucket and the tenant's source, from agent.toml. `tenant` must be a valid tenant name.
pub fn open(cfg: &AgentConfig, tenant: &str, own_database: bool) -> anyhow::Result<(Store, Source)> {
    if !crate::assignment::name_ok(tenant) {
        anyhow::bail!("{tenant:?} is not a tenant name");
    }
    let DriverConfig::Postgres { url, .. } = &cfg.driver else {
        anyhow::bail!("backups need the postgres driver");
    };
    let bucket = cfg.backup.as_ref().context("agent.toml has no [backup] section")?;
    let store = Store::new(bucket)?;
    Ok((store, Source { url: url.clone(), tenant: tenant.to_string(), own_database }))
}

/// Backs `source` up now under a fresh key; returns the catalog entry.
pub async fn run(store: &Store, source: &Source, key: &DataKey) -> anyhow::Result<Catalogued> {
    let id = hex::encode(rand::random::<[u8; 6]>());
    let object = super::object_key(&source.tenant, std::time::SystemTime::now(), &id);
    let done = super::backup(store, source, key, &object, |p| {
        tracing::info!(dumped = p.dumped, uploaded = p.uploaded, parts = p.parts, "backup progress");
    })
    .await?;
    Ok(done)
}

/// Restores `object` (whose SHA-256 is `sha256`) per `mode`.
pub async fn restore(
    store: &Store,
    source: &Source,
    key: &DataKey,
    object: &str,
    sha256: &str,
    mode: &Mode,
) -> anyhow::Result<Restored> {
    if !object.starts_with(&format!("tenants/{}/", source.tenant)) {
        anyhow::bail!("{object:?} is not an object of tenant {}", source.tenant);
    }
    Ok(super::restore(store, source, key, object, sha256, mode).await?)
}

/// The catalog entry as one JSON line.
pub fn entry_json(done: &Catalogued) -> serde_json::Value {
    serde_json::json!({
        "key": done.key,
        "bytes": done.bytes,
        "sha256": done.sha256,
        "dumped": done.dumped,
        "duration_ms": done.duration.as_millis() as u64,
        "format_version": done.format_version,
        "server_version": done.server_version,
        "key_id": done.key_id,
    })
}
