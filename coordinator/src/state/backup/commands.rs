//! The backup commands, pure like the rest of `state`: data keys made by a coordinator, runs and
//! restores asked for by an admin or the tenant's customer key, and what the tenant's db node
//! reports (a completed upload, a failure, objects retention removed, a restore's end). The
//! catalog changes only here, and only from the report of the node that holds the tenant's db
//! role: an entry exists only for an upload that completed.

use super::{expired, pick, BackupEntry, BackupPolicy, Failure, Outcome, RestoreRequest, RunRequest, TenantBackups};
use super::{WrappedKey, MAX_PER_TENANT};
use crate::state::action::{details, Action, Target};
use crate::state::names::TenantName;
use crate::state::tenant::{DbType, TenantStatus};
use crate::state::{Cx, DomainError, Handled, Reply, Response, State, Touched};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackupOp {
    /// A coordinator made data key `key` for the tenant (its first, or a rotation: it becomes
    /// current, older keys stay while an entry names them).
    AddKey { tenant: TenantName, key: WrappedKey },
    /// An admin rotated the tenant's data key (`backup rotate-key`): `key` (made and wrapped by
    /// the coordinator that took the request) seals the backups from now on; older keys stay
    /// while an entry names them, so older backups restore with the key they were sealed with.
    RotateKey { tenant: TenantName, key: WrappedKey },
    /// A backup now (`backup run`).
    Run { tenant: TenantName },
    /// The newest backup at or before `at_ms` restored: over the live schema (kept as `schema`)
    /// or into the new schema `schema`; `None` names it after the request.
    Restore { tenant: TenantName, at_ms: u64, overwrite: bool, schema: Option<String> },
    /// Node `node_id` completed the upload of `entry` (for on-demand request `request`).
    Done { node_id: u64, entry: BackupEntry, request: Option<String> },
    /// Node `node_id` failed a backup of the tenant; nothing was catalogued.
    Failed { node_id: u64, tenant: TenantName, at_ms: u64, reason: String, request: Option<String> },
    /// Node `node_id` deleted the objects of these expiring entries.
    Deleted { node_id: u64, tenant: TenantName, ids: Vec<String> },
    /// Node `node_id` finished restore request `outcome.id`.
    Restored { node_id: u64, tenant: TenantName, outcome: Outcome },
}

impl BackupOp {
    pub fn tenant(&self) -> &TenantName {
        match self {
            BackupOp::AddKey { tenant, .. }
            | BackupOp::RotateKey { tenant, .. }
            | BackupOp::Run { tenant }
            | BackupOp::Restore { tenant, .. }
            | BackupOp::Failed { tenant, .. }
            | BackupOp::Deleted { tenant, .. }
            | BackupOp::Restored { tenant, .. } => tenant,
            BackupOp::Done { entry, .. } => &entry.tenant,
        }
    }

    /// Only an admin key may rotate a data key.
    pub fn needs_admin_key(&self) -> bool {
        matches!(self, BackupOp::RotateKey { .. })
    }

    /// The tenant whose customer key may ask for this (runs and restores).
    pub fn customer_tenant(&self) -> Option<&TenantName> {
        match self {
            BackupOp::Run { tenant } | BackupOp::Restore { tenant, .. } => Some(tenant),
            _ => None,
        }
    }

    pub fn describe(&self) -> (Action, Target) {
        let action = match self {
            BackupOp::AddKey { .. } => Action::BackupKeyCreate,
            BackupOp::RotateKey { .. } => Action::BackupKeyRotate,
            BackupOp::Run { .. } => Action::BackupRun,
            BackupOp::Restore { .. } => Action::BackupRestore,
            BackupOp::Done { .. } => Action::BackupDone,
            BackupOp::Failed { .. } => Action::BackupFailed,
            BackupOp::Deleted { .. } => Action::BackupExpire,
            BackupOp::Restored { .. } => Action::BackupRestored,
        };
        (action, Target::Tenant(self.tenant().clone()))
    }
}

/// A request's id as a schema name part (`b12-1` → `b12_1`).
fn name_part(id: &str) -> String {
    id.replace('-', "_")
}

/// A restore target must be a fresh name in the tenant's own namespace (the agent checks again).
pub fn valid_target(tenant: &TenantName, name: &str) -> bool {
    let prefix = format!("tenant_{tenant}_");
    name.len() <= 63
        && name.len() > prefix.len()
        && name.starts_with(&prefix)
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn clip(reason: &str) -> String {
    reason.chars().take(300).collect()
}

impl State {
    /// The tenant's backup record, made on first use.
    fn backups_mut(&mut self, tenant: &TenantName, touched: &mut Vec<Touched>) -> &mut TenantBackups {
        touched.push(Touched::Backups(tenant.clone()));
        self.backups.entry(tenant.clone()).or_insert_with(|| TenantBackups::new(tenant.clone()))
    }

    /// The policy the tenant has now: its own, or its tier's.
    pub fn backup_policy(&self, tenant: &TenantName) -> Option<BackupPolicy> {
        let t = self.tenants.get(tenant)?;
        Some(t.backup_policy.unwrap_or(BackupPolicy::for_tier(t.tier)))
    }

    /// `tenant delete` asks for a final backup before anything is dropped (a PostgreSQL tenant
    /// on a db node); purge waits for it.
    pub(in crate::state) fn request_final_backup(
        &mut self,
        cx_at: crate::state::At,
        tenant: &TenantName,
        touched: &mut Vec<Touched>,
    ) {
        let Some(t) = self.tenants.get(tenant) else { return };
        if t.db_type != DbType::Postgres || t.placement.db_node.is_none() {
            return;
        }
        let b = self.backups_mut(tenant, touched);
        b.run = Some(RunRequest { id: cx_at.id('b'), requested_ms: cx_at.now, final_backup: true });
    }

    /// Whether a deleted tenant may be purged: it has a backup and its final one is not still
    /// pending, unless forced. Purge then forgets the catalog and the wrapped data keys, so the
    /// objects left in the bucket can no longer be opened (see ARCHITECTURE.md, "Backups").
    pub(in crate::state) fn purge_gate(&self, tenant: &TenantName, force: bool) -> Result<(), DomainError> {
        if force {
            return Ok(());
        }
        let b = self.backups.get(tenant);
        if b.and_then(|b| b.run.as_ref()).is_some_and(|r| r.final_backup) {
            return Err(DomainError::Conflict(format!(
                "tenant {tenant}'s final backup has not completed yet (see `backup list --tenant {tenant}`); wait, or pass force"
            )));
        }
        if b.is_none_or(|b| b.entries.is_empty()) {
            return Err(DomainError::Conflict(format!(
                "tenant {tenant} has no backup; purge would lose its data for good: take one (`backup run --tenant {tenant}`), or pass force"
            )));
        }
        Ok(())
    }

    pub(in crate::state) fn backup(&mut self, cx: Cx<'_>, op: &BackupOp) -> Handled {
        let mut d = crate::state::action::Details::new();
        let result = self.backup_step(cx.at, op, cx.touched, &mut d);
        (result, cx.facts.with(d))
    }

    fn backup_step(
        &mut self,
        at: crate::state::At,
        op: &BackupOp,
        touched: &mut Vec<Touched>,
        d: &mut crate::state::action::Details,
    ) -> Response {
        let tenant = op.tenant().clone();
        let t = self.tenants.get(&tenant).ok_or_else(|| crate::state::tenant::not_found(&tenant))?;
        let (db_node, db_type, status) = (t.placement.db_node, t.db_type, t.status);
        let policy = self.backup_policy(&tenant).unwrap_or_default();
        // What a node reports counts only from the node holding the tenant's db role.
        let from_db_node = |node_id: u64| {
            if db_node == Some(node_id) {
                Ok(())
            } else {
                Err(DomainError::Invalid(format!("node {node_id} does not hold tenant {tenant}'s database")))
            }
        };
        match op {
            BackupOp::AddKey { key, .. } | BackupOp::RotateKey { key, .. } => {
                let rotating = matches!(op, BackupOp::RotateKey { .. });
                if rotating && self.backups.get(&tenant).is_none_or(|b| b.keys.is_empty()) {
                    return Err(DomainError::Conflict(format!(
                        "tenant {tenant} has no data key yet (one is made once it is placed on a db node)"
                    )));
                }
                let b = self.backups_mut(&tenant, touched);
                let expected = format!("{tenant}-{}", b.next_key);
                if key.id != expected {
                    return Err(DomainError::Conflict(format!(
                        "the next data key of {tenant} is {expected}, not {}",
                        key.id
                    )));
                }
                b.next_key += 1;
                b.keys.push(key.clone());
                d.extend(details(&[("key", key.id.clone()), ("cluster_key", key.cluster_key_id.clone())]));
                if rotating {
                    let previous = b.keys.iter().rev().nth(1).map(|k| k.id.clone()).unwrap_or_default();
                    d.insert("previous".into(), previous);
                }
            }
            BackupOp::Run { .. } => {
                if db_type != DbType::Postgres {
                    return Err(DomainError::Conflict(format!(
                        "tenant {tenant} is on SQL Server: backups are built for PostgreSQL tenants only"
                    )));
                }
                if db_node.is_none() {
                    return Err(DomainError::Conflict(format!("tenant {tenant} is not placed on a db node yet")));
                }
                let b = self.backups_mut(&tenant, touched);
                if let Some(r) = &b.run {
                    return Err(DomainError::Conflict(format!("backup {} of {tenant} is already under way", r.id)));
                }
                let id = at.id('b');
                d.insert("request".into(), id.clone());
                b.run = Some(RunRequest { id, requested_ms: at.now, final_backup: false });
            }
            BackupOp::Restore { at_ms, overwrite, schema, .. } => {
                if db_type != DbType::Postgres {
                    return Err(DomainError::Conflict(format!(
                        "tenant {tenant} is on SQL Server: backups are built for PostgreSQL tenants only"
                    )));
                }
                if !matches!(status, TenantStatus::Active | TenantStatus::QuotaExceeded | TenantStatus::Suspended) {
                    return Err(DomainError::Conflict(format!(
                        "tenant {tenant} is {}; restore it first",
                        status.as_str()
                    )));
                }
                let id = at.id('r');
                let schema = match schema {
                    Some(s) => s.clone(),
                    None if *overwrite => format!("tenant_{tenant}_before_{}", name_part(&id)),
                    None => format!("tenant_{tenant}_clone_{}", name_part(&id)),
                };
                if !valid_target(&tenant, &schema) {
                    return Err(DomainError::Invalid(format!(
                        "{schema:?} is not a schema a restore may make: tenant_{tenant}_<suffix>, [a-z0-9_], at most 63 bytes"
                    )));
                }
                let b = self.backups_mut(&tenant, touched);
                if let Some(r) = &b.restore {
                    return Err(DomainError::Conflict(format!("restore {} of {tenant} is already under way", r.id)));
                }
                let entry = pick(b.restorable(), *at_ms).ok_or_else(|| {
                    DomainError::NotFound(format!(
                        "tenant {tenant} has no backup at or before {}",
                        crate::time::rfc3339(*at_ms)
                    ))
                })?;
                d.extend(details(&[
                    ("request", id.clone()),
                    ("backup", entry.id.clone()),
                    ("mode", if *overwrite { "overwrite" } else { "clone" }.into()),
                    ("schema", schema.clone()),
                ]));
                let entry = entry.id.clone();
                b.restore = Some(RestoreRequest { id, entry, overwrite: *overwrite, schema, requested_ms: at.now });
            }
            BackupOp::Done { node_id, entry, request } => {
                from_db_node(*node_id)?;
                entry.check().map_err(|e| DomainError::Invalid(e.to_string()))?;
                let b = self.backups_mut(&tenant, touched);
                if !b.keys.iter().any(|k| k.id == entry.key_id) {
                    return Err(DomainError::Invalid(format!("{tenant} has no data key {}", entry.key_id)));
                }
                d.extend(details(&[
                    ("backup", entry.id.clone()),
                    ("object", entry.key.clone()),
                    ("bytes", entry.bytes.to_string()),
                    ("node", node_id.to_string()),
                ]));
                if b.entries.iter().any(|e| e.id == entry.id) {
                    return Ok(Reply::Backups(Box::new(b.clone())));
                }
                b.entries.push(entry.clone());
                b.entries.sort_by_key(|e| (e.taken_ms, e.id.clone()));
                b.failure = None;
                if let Some(r) = b.run.take_if(|r| request.as_deref() == Some(r.id.as_str())) {
                    b.last_run = Some(Outcome {
                        id: r.id,
                        at_ms: at.now,
                        ok: true,
                        reason: None,
                        made: Some(entry.id.clone()),
                        kept: None,
                    });
                }
                // Retention, decided here: the node deletes the objects, then the entries go.
                let live: Vec<&BackupEntry> = b.restorable().collect();
                let gone = expired(&policy, live, at.now);
                if !gone.is_empty() {
                    d.insert("expiring".into(), gone.join(","));
                }
                b.expiring.extend(gone);
                debug_assert!(b.entries.len() - b.expiring.len() <= MAX_PER_TENANT as usize);
            }
            BackupOp::Failed { node_id, at_ms, reason, request, .. } => {
                from_db_node(*node_id)?;
                let b = self.backups_mut(&tenant, touched);
                let failures = b.failure.as_ref().map_or(0, |f| f.failures) + 1;
                b.failure = Some(Failure { at_ms: *at_ms, reason: clip(reason), failures });
                if let Some(r) = b.run.take_if(|r| request.as_deref() == Some(r.id.as_str())) {
                    b.last_run = Some(Outcome {
                        id: r.id,
                        at_ms: at.now,
                        ok: false,
                        reason: Some(clip(reason)),
                        made: None,
                        kept: None,
                    });
                }
                d.extend(details(&[("reason", clip(reason)), ("failures", failures.to_string())]));
            }
            BackupOp::Deleted { node_id, ids, .. } => {
                from_db_node(*node_id)?;
                let b = self.backups_mut(&tenant, touched);
                let gone: Vec<String> = ids.iter().filter(|id| b.expiring.contains(*id)).cloned().collect();
                b.entries.retain(|e| !gone.contains(&e.id));
                for id in &gone {
                    b.expiring.remove(id);
                }
                // A data key goes with the last entry naming it; the current one stays.
                let current = b.current_key().map(|k| k.id.clone());
                let named: std::collections::BTreeSet<&str> = b.entries.iter().map(|e| e.key_id.as_str()).collect();
                let named: std::collections::BTreeSet<String> = named.into_iter().map(str::to_string).collect();
                b.keys.retain(|k| Some(&k.id) == current.as_ref() || named.contains(&k.id));
                d.insert("backups".into(), gone.join(","));
            }
            BackupOp::Restored { node_id, outcome, .. } => {
                from_db_node(*node_id)?;
                let b = self.backups_mut(&tenant, touched);
                if b.restore.as_ref().map(|r| &r.id) != Some(&outcome.id) {
                    return Err(DomainError::Conflict(format!("no restore {} of {tenant} is under way", outcome.id)));
                }
                b.restore = None;
                let outcome = Outcome { reason: outcome.reason.as_deref().map(clip), at_ms: at.now, ..outcome.clone() };
                d.extend(details(&[("request", outcome.id.clone()), ("ok", outcome.ok.to_string())]));
                if let Some(r) = &outcome.reason {
                    d.insert("failure".into(), r.clone());
                }
                b.last_restore = Some(outcome);
            }
        }
        let b = self.backups.get(&tenant).cloned().unwrap_or_else(|| TenantBackups::new(tenant.clone()));
        Ok(Reply::Backups(Box::new(b)))
    }
}
