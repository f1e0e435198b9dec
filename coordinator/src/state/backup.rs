//! Per-tenant backups as the coordinator will keep them (issue 12), pure: a tenant's backup
//! policy (how often, how many and how long to keep), a catalog entry as the db agent reports
//! it once its upload completed, which backup a restore "at a time" takes, when the next backup
//! is due, and what retention removes; and what the state keeps per tenant (`TenantBackups`:
//! wrapped data keys, catalog, requests and outcomes). Its commands are in `backup/commands.rs`,
//! the db node's part of the desired state in `backup/desired.rs`.

mod commands;
pub mod desired;
pub use commands::BackupOp;

use super::names::TenantName;
use super::tenant::Tier;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// At most this many catalog entries per tenant, whatever its policy says: the catalog lives in
/// the Raft state and must stay bounded.
pub const MAX_PER_TENANT: u32 = 500;

/// How often a tenant is backed up and how long its backups are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupPolicy {
    /// Seconds between scheduled backups (default hourly).
    pub interval_s: u32,
    /// The newest this many backups are kept.
    pub keep_count: u32,
    /// Backups older than this many days are removed (the newest one is always kept).
    pub keep_days: u32,
}

impl Default for BackupPolicy {
    fn default() -> Self {
        Self { interval_s: 3600, keep_count: 48, keep_days: 30 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum InvalidPolicy {
    #[error("interval_s must be between 300 (5 minutes) and 604800 (a week), not {0}")]
    Interval(u32),
    #[error("keep_count must be between 1 and {MAX_PER_TENANT}, not {0}")]
    Count(u32),
    #[error("keep_days must be between 1 and 3650, not {0}")]
    Days(u32),
}

impl BackupPolicy {
    /// The policy of a tenant of `tier` that set none: hourly for every tier; kept longer the
    /// higher the tier.
    pub const fn for_tier(tier: Tier) -> Self {
        match tier {
            Tier::Free => Self { interval_s: 3600, keep_count: 24, keep_days: 7 },
            Tier::Premium => Self { interval_s: 3600, keep_count: 48, keep_days: 30 },
            Tier::Enterprise => Self { interval_s: 3600, keep_count: 168, keep_days: 90 },
        }
    }

    pub fn check(&self) -> Result<(), InvalidPolicy> {
        if !(300..=604_800).contains(&self.interval_s) {
            return Err(InvalidPolicy::Interval(self.interval_s));
        }
        if !(1..=MAX_PER_TENANT).contains(&self.keep_count) {
            return Err(InvalidPolicy::Count(self.keep_count));
        }
        if !(1..=3650).contains(&self.keep_days) {
            return Err(InvalidPolicy::Days(self.keep_days));
        }
        Ok(())
    }

    /// Whether a backup is due at `now_ms` after the last one taken at `last_ms`.
    pub fn due(&self, last_ms: Option<u64>, now_ms: u64) -> bool {
        last_ms.is_none_or(|last| now_ms >= last.saturating_add(u64::from(self.interval_s) * 1000))
    }
}

/// One completed backup: the object in the bucket and what the agent measured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupEntry {
    pub id: String,
    pub tenant: TenantName,
    /// The object key, `tenants/{tenant}/{RFC 3339}-{id}.bqb`.
    pub key: String,
    /// Unix milliseconds when the dump started (the time the backup is "at").
    pub taken_ms: u64,
    /// Object (ciphertext) bytes and its SHA-256, hex.
    pub bytes: u64,
    pub sha256: String,
    /// Plain dump bytes.
    pub dumped: u64,
    pub duration_ms: u64,
    pub format_version: u8,
    /// PostgreSQL's `server_version_num` the dump came from.
    pub server_version: u32,
    /// The data key the object is sealed with.
    pub key_id: String,
    pub node_id: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEntry {
    #[error("object key {0:?} is not under tenants/<tenant>/ or does not end in .bqb")]
    Key(String),
    #[error("sha256 must be 64 lowercase hex digits")]
    Digest,
}

impl BackupEntry {
    /// An entry names an object of its own tenant and a well-formed digest.
    pub fn check(&self) -> Result<(), InvalidEntry> {
        let prefix = format!("tenants/{}/", self.tenant);
        let rest = self.key.strip_prefix(&prefix).unwrap_or_default();
        let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | ':' | '.' | '_');
        if rest.len() <= 4 || !rest.ends_with(".bqb") || !rest.chars().all(plain) {
            return Err(InvalidEntry::Key(self.key.clone()));
        }
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(InvalidEntry::Digest);
        }
        Ok(())
    }
}

/// A tenant's data key as the Raft state holds it: sealed under the cluster backup key
/// (`backupkey.rs`), AAD = tenant and key id. Hex fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedKey {
    /// `{tenant}-{n}`: what an object's header names.
    pub id: String,
    /// The cluster key it is wrapped under.
    pub cluster_key_id: String,
    pub nonce: String,
    pub sealed: String,
}

/// The failed attempts since the last completed backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub at_ms: u64,
    pub reason: String,
    pub failures: u32,
}

/// An on-demand backup asked for (`backup run`, or the final one at delete).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRequest {
    pub id: String,
    pub requested_ms: u64,
    /// Asked for by `tenant delete`: purge waits for it.
    #[serde(default)]
    pub final_backup: bool,
}

/// How a request (run or restore) ended, as the db node reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub id: String,
    pub at_ms: u64,
    pub ok: bool,
    /// Why it failed (the agent's error, at most 300 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Run: the catalog entry made. Restore: the schema holding the backup's content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub made: Option<String>,
    /// Overwrite restore: the schema the live content was moved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept: Option<String>,
}

/// A restore asked for: catalog entry `entry` into `schema` (clone) or over the live schema,
/// keeping it as `schema` (overwrite).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreRequest {
    pub id: String,
    pub entry: String,
    pub overwrite: bool,
    pub schema: String,
    pub requested_ms: u64,
}

/// Everything the state keeps about one tenant's backups (its own table, `backups`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantBackups {
    pub tenant: TenantName,
    /// Data keys, wrapped; the last is current. A key stays while an entry names it.
    pub keys: Vec<WrappedKey>,
    /// The number the next data key gets (`{tenant}-{n}`); never reused.
    pub next_key: u32,
    /// Completed backups, oldest first.
    pub entries: Vec<BackupEntry>,
    /// Entries retention removes: their objects are being deleted by the db node; they are no
    /// longer restored, and go from `entries` when the node reports the objects gone.
    pub expiring: BTreeSet<String>,
    pub failure: Option<Failure>,
    pub run: Option<RunRequest>,
    pub last_run: Option<Outcome>,
    pub restore: Option<RestoreRequest>,
    pub last_restore: Option<Outcome>,
}

impl TenantBackups {
    pub fn new(tenant: TenantName) -> Self {
        Self {
            tenant,
            keys: Vec::new(),
            next_key: 1,
            entries: Vec::new(),
            expiring: BTreeSet::new(),
            failure: None,
            run: None,
            last_run: None,
            restore: None,
            last_restore: None,
        }
    }

    pub fn current_key(&self) -> Option<&WrappedKey> {
        self.keys.last()
    }

    /// The entries a restore may take (not being removed by retention).
    pub fn restorable(&self) -> impl Iterator<Item = &BackupEntry> {
        self.entries.iter().filter(|e| !self.expiring.contains(&e.id))
    }

    /// The newest restorable backup's time.
    pub fn last_taken_ms(&self) -> Option<u64> {
        self.entries.iter().map(|e| e.taken_ms).max()
    }
}

/// The backup a restore "at `at_ms`" takes: the newest taken at or before that time.
pub fn pick<'a>(entries: impl IntoIterator<Item = &'a BackupEntry>, at_ms: u64) -> Option<&'a BackupEntry> {
    entries.into_iter().filter(|e| e.taken_ms <= at_ms).max_by_key(|e| (e.taken_ms, e.id.clone()))
}

/// The ids retention removes at `now_ms`: all but the newest `keep_count`, and those older than
/// `keep_days`, never the newest backup (a tenant always keeps one), and always enough that at
/// most [`MAX_PER_TENANT`] remain.
pub fn expired<'a>(
    policy: &BackupPolicy,
    entries: impl IntoIterator<Item = &'a BackupEntry>,
    now_ms: u64,
) -> Vec<String> {
    let mut all: Vec<&BackupEntry> = entries.into_iter().collect();
    all.sort_by_key(|e| std::cmp::Reverse((e.taken_ms, e.id.clone())));
    let keep = policy.keep_count.min(MAX_PER_TENANT) as usize;
    let oldest = now_ms.saturating_sub(u64::from(policy.keep_days) * 86_400_000);
    all.iter()
        .enumerate()
        .filter(|(i, e)| *i > 0 && (*i >= keep || e.taken_ms < oldest))
        .map(|(_, e)| e.id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, taken_ms: u64) -> BackupEntry {
        let tenant = TenantName::parse("acme").expect("name");
        BackupEntry {
            id: id.into(),
            key: format!("tenants/acme/2026-12-02T10:00:00Z-{id}.bqb"),
            tenant,
            taken_ms,
            bytes: 10,
            sha256: "ab".repeat(32),
            dumped: 20,
            duration_ms: 5,
            format_version: 1,
            server_version: 150_018,
            key_id: "k1".into(),
            node_id: 2,
        }
    }

    #[test]
    fn restore_at_a_time_takes_the_newest_backup_at_or_before_it() {
        let es = [entry("b1", 1_000), entry("b2", 2_000), entry("b3", 3_000)];
        assert_eq!(pick(&es, 2_500).map(|e| e.id.as_str()), Some("b2"));
        assert_eq!(pick(&es, 2_000).map(|e| e.id.as_str()), Some("b2"), "at the backup's own time");
        assert_eq!(pick(&es, 999), None, "nothing before the first backup");
        assert_eq!(pick(&es, u64::MAX).map(|e| e.id.as_str()), Some("b3"));
    }

    #[test]
    fn retention_keeps_the_newest_by_count_and_age_and_never_the_last_one() {
        let day = 86_400_000;
        let es: Vec<_> = (0..5).map(|i| entry(&format!("b{i}"), (i + 1) * day)).collect();
        let policy = BackupPolicy { interval_s: 3600, keep_count: 3, keep_days: 30 };
        let mut gone = expired(&policy, &es, 6 * day);
        gone.sort();
        assert_eq!(gone, ["b0", "b1"]);
        let short = BackupPolicy { keep_days: 2, ..policy };
        let mut gone = expired(&short, &es, 6 * day);
        gone.sort();
        assert_eq!(gone, ["b0", "b1", "b2"], "b3 is two days old, b4 one");
        assert_eq!(expired(&short, &es, 100 * day), ["b3", "b2", "b1", "b0"], "the newest stays, however old");
    }

    #[test]
    fn policy_is_due_hourly_by_default_and_refuses_nonsense() {
        let p = BackupPolicy::default();
        assert!(p.due(None, 0));
        assert!(!p.due(Some(1_000), 3_600_999));
        assert!(p.due(Some(1_000), 3_601_000));
        assert_eq!(BackupPolicy { interval_s: 10, ..p }.check(), Err(InvalidPolicy::Interval(10)));
        assert_eq!(BackupPolicy { keep_count: 0, ..p }.check(), Err(InvalidPolicy::Count(0)));
        assert_eq!(BackupPolicy { keep_days: 0, ..p }.check(), Err(InvalidPolicy::Days(0)));
        assert!(p.check().is_ok());
    }

    #[test]
    fn an_entry_names_only_its_own_tenants_objects() {
        assert!(entry("b1", 1).check().is_ok());
        let mut other = entry("b1", 1);
        other.key = "tenants/globex/x.bqb".into();
        assert!(matches!(other.check(), Err(InvalidEntry::Key(_))));
        let mut climb = entry("b1", 1);
        climb.key = "tenants/acme/../globex/x.bqb".into();
        assert!(climb.check().is_err());
        let mut digest = entry("b1", 1);
        digest.sha256 = "AB".repeat(32);
        assert_eq!(digest.check(), Err(InvalidEntry::Digest));
    }
}
