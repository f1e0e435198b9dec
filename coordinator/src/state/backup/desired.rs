//! The backup part of a db node's desired state for one tenant, pure: the policy's interval,
//! the data keys still wrapped (the gRPC layer unwraps them for the wire), when the last backup
//! was taken and failed, what is asked for, and which objects retention removes. Changes here
//! reach the node without bumping the tenant's revision: readiness does not wait on backups.

use super::TenantBackups;
use crate::state::tenant::{DbType, Tenant};
use crate::state::State;

/// What the tenant's db node needs to run its backups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupPart {
    pub interval_s: u32,
    /// Current key last.
    pub keys: Vec<super::WrappedKey>,
    pub last_taken_ms: Option<u64>,
    pub failure: Option<super::Failure>,
    pub run_request: Option<String>,
    pub restore: Option<Restore>,
    /// (entry id, object key) of each expiring entry.
    pub expired: Vec<(String, String)>,
}

/// A restore request with its catalog entry resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restore {
    pub request: String,
    pub key: String,
    pub sha256: String,
    pub key_id: String,
    pub overwrite: bool,
    pub schema: String,
}

/// The part for tenant `t`, once it has a data key (PostgreSQL only).
pub fn part(state: &State, t: &Tenant) -> Option<BackupPart> {
    if t.db_type != DbType::Postgres {
        return None;
    }
    let b: &TenantBackups = state.backups.get(&t.name)?;
    b.current_key()?;
    let policy = state.backup_policy(&t.name)?;
    let restore = b.restore.as_ref().and_then(|r| {
        let e = b.entries.iter().find(|e| e.id == r.entry)?;
        Some(Restore {
            request: r.id.clone(),
            key: e.key.clone(),
            sha256: e.sha256.clone(),
            key_id: e.key_id.clone(),
            overwrite: r.overwrite,
            schema: r.schema.clone(),
        })
    });
    Some(BackupPart {
        interval_s: policy.interval_s,
        keys: b.keys.clone(),
        last_taken_ms: b.last_taken_ms(),
        failure: b.failure.clone(),
        run_request: b.run.as_ref().map(|r| r.id.clone()),
        restore,
        expired: b
            .entries
            .iter()
            .filter(|e| b.expiring.contains(&e.id))
            .map(|e| (e.id.clone(), e.key.clone()))
            .collect(),
    })
}

/// Tenants placed on a db node that need a data key: PostgreSQL, not yet keyed.
pub fn needing_key(state: &State) -> Vec<(crate::state::names::TenantName, String)> {
    state
        .tenants
        .values()
        .filter(|t| t.db_type == DbType::Postgres && t.placement.db_node.is_some())
        .filter_map(|t| {
            let b = state.backups.get(&t.name);
            if b.is_some_and(|b| b.current_key().is_some()) {
                return None;
            }
            let n = b.map_or(1, |b| b.next_key);
            Some((t.name.clone(), format!("{}-{n}", t.name)))
        })
        .collect()
}
