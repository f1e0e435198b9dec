//! Break-glass recovery of admin access (like Consul's and Nomad's ACL bootstrap reset): whoever
//! can write a coordinator's data directory (root, or the service user) runs
//! `berqenas-coordinator recover-admin --data-dir D`, which mints an admin key, writes only its
//! hash into `D/recovery.json` (0600) and prints the key once. The coordinator on that host picks
//! the file up (at start and then every second), commits the key through Raft as an
//! `apikey.recovered` audit entry naming the host, and deletes the file.

use crate::server::Coordinator;
use crate::state::apikey::{ApiKey, Role};
use crate::state::{Command, DomainError, Meta, Op};
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The pending request, in the data directory.
pub const FILE: &str = "recovery.json";
/// A request the coordinator refused is kept here for the operator to read.
pub const REJECTED: &str = "recovery.json.rejected";
/// How often a running coordinator looks for a request.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// Largest request file read.
const MAX_BYTES: u64 = 4096;

/// What `recover-admin` leaves for the coordinator: the key's id and hash, never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub key_id: String,
    pub secret_hash: String,
    pub created_at_ms: u64,
    pub host: String,
}

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

/// This host's name, as the audit entry shows it.
pub fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let clean: String =
        raw.trim().chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')).take(64).collect();
    if clean.is_empty() {
        "unknown".into()
    } else {
        clean
    }
}

/// Mints a break-glass admin key for the coordinator in `data_dir`: writes the request file and
/// returns the key (to print once) and its id. Replaces a request nobody has picked up yet.
pub fn request(data_dir: &Path) -> anyhow::Result<(String, String)> {
    if !crate::server::NodeConfig::path(data_dir).exists() || !data_dir.join("raft.redb").exists() {
        bail!("{} is not a coordinator's data directory (no node.json and raft.redb)", data_dir.display());
    }
    // A request refused earlier is superseded by this one.
    let _ = std::fs::remove_file(data_dir.join(REJECTED));
    let host = host_name();
    let (token, key) = crate::server::new_api_key(Role::Admin, None, format!("break-glass recovery on {host}"), None)?;
    let req = Request { key_id: key.id.clone(), secret_hash: key.secret_hash, created_at_ms: key.created_at_ms, host };
    let file = path(data_dir);
    crate::datadir::write_private(&file, &serde_json::to_vec_pretty(&req)?)
        .with_context(|| format!("write {}", file.display()))?;
    // Run as root for a coordinator running as its service user: the file must be that user's.
    let owner = std::fs::metadata(data_dir).with_context(|| format!("stat {}", data_dir.display()))?;
    let mine = std::fs::metadata(&file).with_context(|| format!("stat {}", file.display()))?;
    if (mine.uid(), mine.gid()) != (owner.uid(), owner.gid()) {
        std::os::unix::fs::chown(&file, Some(owner.uid()), Some(owner.gid()))
            .with_context(|| format!("give {} to the data directory's owner", file.display()))?;
    }
    Ok((token, key.id))
}

/// Looks for a request every `INTERVAL` until `stop`; the first look is immediate, so a request
/// written while the coordinator was down is taken at start.
pub async fn watch(c: Arc<Coordinator>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.wait_for(|v| *v) => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = pick_up(&c).await {
            tracing::warn!(error = format!("{e:#}"), "break-glass recovery request not taken yet");
        }
    }
}

/// Why a request file is refused for good (it is moved aside, not retried).
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("{0} is not a regular file")]
    NotAFile(String),
    #[error("{0} is readable or writable by others (mode {1:o}); expected 0600")]
    Mode(String, u32),
    #[error("{0} belongs to uid {1}, neither root nor the data directory's owner")]
    Owner(String, u32),
    #[error("{0} is larger than {MAX_BYTES} bytes")]
    TooLarge(String),
    #[error("{0} is not a recovery request: {1}")]
    Malformed(String, String),
}

/// Reads and checks the request file, if there is one.
fn read_request(data_dir: &Path) -> anyhow::Result<Option<Result<Request, Refused>>> {
    let file = path(data_dir);
    let shown = file.display().to_string();
    let meta = match std::fs::symlink_metadata(&file) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("stat {shown}")),
    };
    let dir_owner = std::fs::metadata(data_dir).with_context(|| format!("stat {}", data_dir.display()))?.uid();
    let checked = (|| {
        if !meta.file_type().is_file() {
            return Err(Refused::NotAFile(shown.clone()));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(Refused::Mode(shown.clone(), meta.mode() & 0o7777));
        }
        if meta.uid() != 0 && meta.uid() != dir_owner {
            return Err(Refused::Owner(shown.clone(), meta.uid()));
        }
        if meta.len() > MAX_BYTES {
            return Err(Refused::TooLarge(shown.clone()));
        }
        Ok(())
    })();
    if let Err(refused) = checked {
        return Ok(Some(Err(refused)));
    }
    let bytes = std::fs::read(&file).with_context(|| format!("read {shown}"))?;
    let parsed = serde_json::from_slice::<Request>(&bytes)
        .map_err(|e| Refused::Malformed(shown.clone(), e.to_string()))
        .and_then(|r| {
            let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
            if hex(&r.key_id, 16) && hex(&r.secret_hash, 64) {
                Ok(r)
            } else {
                Err(Refused::Malformed(shown.clone(), "key_id or secret_hash has the wrong shape".into()))
            }
        });
    Ok(Some(parsed))
}

/// Commits a pending request through Raft and removes the file. A request whose key is already
/// in the state (committed before a crash) is removed too; a refused one is moved aside.
async fn pick_up(c: &Coordinator) -> anyhow::Result<()> {
    let file = path(&c.data_dir);
    let req = match read_request(&c.data_dir)? {
        None => return Ok(()),
        Some(Ok(r)) => r,
        Some(Err(refused)) => {
            tracing::error!(reason = %refused, "break-glass recovery request refused");
            return set_aside(&c.data_dir);
        }
    };
    let key = ApiKey {
        id: req.key_id.clone(),
        role: Role::Admin,
        tenant: None,
        description: format!("break-glass recovery on {}", req.host),
        secret_hash: req.secret_hash.clone(),
        created_at_ms: req.created_at_ms,
        expires_at_ms: None,
        revoked_at_ms: None,
    };
    let meta = Meta {
        time_ms: crate::time::now_ms(),
        actor: "break-glass".into(),
        source: format!("host/{}", req.host),
        key_role: None,
        user_generation: None,
    };
    let cmd = Command { meta, op: Op::RecoverAdmin { key, host: req.host.clone() } };
    match c.write(cmd).await.context("propose the recovered key")? {
        Ok(_) => {
            tracing::warn!(key = %req.key_id, host = %req.host, "break-glass admin key added (audited as apikey.recovered)");
        }
        Err(DomainError::Conflict(_))
            if c.read(|d| d.state.api_keys.get(&req.key_id).is_some_and(|k| k.secret_hash == req.secret_hash)) =>
        {
            tracing::info!(key = %req.key_id, "break-glass admin key was already added");
        }
        Err(e) => {
            tracing::error!(key = %req.key_id, error = %e, "break-glass recovery refused by the cluster");
            return set_aside(&c.data_dir);
        }
    }
    std::fs::remove_file(&file).with_context(|| format!("remove {}", file.display()))
}

fn set_aside(data_dir: &Path) -> anyhow::Result<()> {
    let (from, to) = (path(data_dir), data_dir.join(REJECTED));
    std::fs::rename(&from, &to).with_context(|| format!("move {} to {}", from.display(), to.display()))
}
