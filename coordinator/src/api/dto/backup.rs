//! Backups on the wire: a tenant's policy, catalog, requests and their outcomes
//! (`GET /api/v1/tenant/{name}/backups`), and the restore request body.

use crate::state::backup::{BackupEntry, BackupPolicy, Failure, Outcome, TenantBackups};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How often a tenant is backed up and how long backups are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackupPolicyView {
    /// Seconds between scheduled backups.
    #[schema(example = 3600)]
    pub interval_s: u32,
    /// The newest this many backups are kept.
    pub keep_count: u32,
    /// Backups older than this many days are removed (the newest is always kept).
    pub keep_days: u32,
}

impl From<BackupPolicy> for BackupPolicyView {
    fn from(p: BackupPolicy) -> Self {
        let BackupPolicy { interval_s, keep_count, keep_days } = p;
        Self { interval_s, keep_count, keep_days }
    }
}

/// One completed backup (its object in the bucket and what the db node measured).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackupView {
    pub id: String,
    /// When the dump started (RFC 3339, UTC): the time the backup is "at".
    pub taken_at: String,
    pub taken_ms: u64,
    /// The object key in the bucket.
    pub object: String,
    /// Object (ciphertext) bytes and its SHA-256, hex.
    pub bytes: u64,
    pub sha256: String,
    /// Plain dump bytes.
    pub dumped: u64,
    pub duration_ms: u64,
    pub format_version: u8,
    /// PostgreSQL's `server_version_num` the dump came from.
    pub server_version: u32,
    /// The data key the object is sealed with (its id; the key never leaves the coordinators
    /// and the tenant's db node).
    pub key_id: String,
    pub node_id: u64,
    /// Retention removes it: its object is being deleted and it is no longer restored.
    pub expiring: bool,
}

impl BackupView {
    fn new(e: &BackupEntry, expiring: bool) -> Self {
        Self {
            id: e.id.clone(),
            taken_at: crate::time::rfc3339(e.taken_ms),
            taken_ms: e.taken_ms,
            object: e.key.clone(),
            bytes: e.bytes,
            sha256: e.sha256.clone(),
            dumped: e.dumped,
            duration_ms: e.duration_ms,
            format_version: e.format_version,
            server_version: e.server_version,
            key_id: e.key_id.clone(),
            node_id: e.node_id,
            expiring,
        }
    }
}

/// The failed attempts since the last completed backup; the db node retries with backoff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackupFailureView {
    pub at: String,
    pub at_ms: u64,
    pub reason: String,
    pub failures: u32,
}

impl From<&Failure> for BackupFailureView {
    fn from(f: &Failure) -> Self {
        Self { at: crate::time::rfc3339(f.at_ms), at_ms: f.at_ms, reason: f.reason.clone(), failures: f.failures }
    }
}

/// A request under way (run or restore).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackupRequestView {
    pub id: String,
    pub requested_ms: u64,
    /// Restore: the backup restored, the mode and the schema made or kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<RestoreMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Run: the final backup `tenant delete` asked for.
    pub final_backup: bool,
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackupOutcomeView {
    pub id: String,
    pub at_ms: u64,
    pub ok: bool,
    pub reason: Option<String>,
    /// Run: the backup made. Restore: the schema holding the backup's content.
    pub made: Option<String>,
    /// Overwrite restore: the schema the live content was moved to.
    pub kept: Option<String>,
}

impl From<&Outcome> for BackupOutcomeView {
    fn from(o: &Outcome) -> Self {
        let Outcome { id, at_ms, ok, reason, made, kept } = o.clone();
        Self { id, at_ms, ok, reason, made, kept }
    }
}

/// A tenant's backups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackupsView {
    pub tenant: String,
    pub policy: BackupPolicyView,
    /// Whether the tenant has a data key yet (made once it is placed on a db node).
    pub keyed: bool,
    /// The data key new backups are sealed with (its id; `backup rotate-key` makes a new one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_key: Option<String>,
    /// Oldest first.
    pub backups: Vec<BackupView>,
    pub last_failure: Option<BackupFailureView>,
    pub run: Option<BackupRequestView>,
    pub last_run: Option<BackupOutcomeView>,
    pub restore: Option<BackupRequestView>,
    pub last_restore: Option<BackupOutcomeView>,
    /// The backup under way on the tenant's db node and how far it got, as the node last
    /// reported it to the coordinator answering (absent when it reports to another one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<BackupProgressView>,
}

/// A backup under way: bytes pg_dump wrote and bytes of the object sealed for upload so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackupProgressView {
    /// The on-demand request it answers; absent for a scheduled backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    pub started_ms: u64,
    pub dumped: u64,
    pub uploaded: u64,
    /// Parts whose upload completed.
    pub parts: u32,
}

impl From<crate::backupprogress::Shown> for BackupProgressView {
    fn from(s: crate::backupprogress::Shown) -> Self {
        let crate::backupprogress::Shown { request, started_ms, dumped, uploaded, parts } = s;
        Self { request, started_ms, dumped, uploaded, parts }
    }
}

impl BackupsView {
    pub fn new(tenant: &str, policy: BackupPolicy, b: Option<&TenantBackups>) -> Self {
        let Some(b) = b else {
            return Self {
                tenant: tenant.into(),
                policy: policy.into(),
                keyed: false,
                current_key: None,
                backups: vec![],
                last_failure: None,
                run: None,
                last_run: None,
                restore: None,
                last_restore: None,
                progress: None,
            };
        };
        Self {
            tenant: tenant.into(),
            policy: policy.into(),
            keyed: b.current_key().is_some(),
            current_key: b.current_key().map(|k| k.id.clone()),
            backups: b.entries.iter().map(|e| BackupView::new(e, b.expiring.contains(&e.id))).collect(),
            last_failure: b.failure.as_ref().map(Into::into),
            run: b.run.as_ref().map(|r| BackupRequestView {
                id: r.id.clone(),
                requested_ms: r.requested_ms,
                backup: None,
                mode: None,
                schema: None,
                final_backup: r.final_backup,
            }),
            last_run: b.last_run.as_ref().map(Into::into),
            restore: b.restore.as_ref().map(|r| BackupRequestView {
                id: r.id.clone(),
                requested_ms: r.requested_ms,
                backup: Some(r.entry.clone()),
                mode: Some(if r.overwrite { RestoreMode::Overwrite } else { RestoreMode::Clone }),
                schema: Some(r.schema.clone()),
                final_backup: false,
            }),
            last_restore: b.last_restore.as_ref().map(Into::into),
            progress: None,
        }
    }
}

/// Where a restore puts the backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RestoreMode {
    /// Into a new schema beside the live one (readable by the tenant); the live one untouched.
    Clone,
    /// In place of the live schema, swapped in one transaction; the live one is kept aside.
    Overwrite,
}

/// `POST /api/v1/tenant/{name}/backups/restore`: the newest backup at or before `at_ms`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreBackupBody {
    /// Unix milliseconds (UTC): the backup taken at or most recently before this time.
    #[schema(example = 1_795_000_000_000_u64)]
    pub at_ms: u64,
    pub mode: RestoreMode,
}
