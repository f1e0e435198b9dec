//! The tenant commands: create, update, the lifecycle (suspend, resume, delete, restore, purge),
//! placement, and readiness from node reports. Pure, like the rest of `state`.

use super::{Lifecycle, Placement, Tenant, TenantPatch, TenantSpec, TenantStatus};
use crate::state::action::{details, Details};
use crate::state::allocation;
use crate::state::names::TenantName;
use crate::state::node::{Node, NodeRole, NodeTenantStatus};
use crate::state::placement;
use crate::state::{At, Cx, DomainError, Handled, Reply, Response, State, Touched};
use std::collections::BTreeSet;

impl State {
    /// Tries to place `tenant`; on failure the tenant stays unplaced with the reason.
    pub(in crate::state) fn place(&self, tenant: &mut Tenant) {
        let nodes: Vec<Node> = self.nodes.values().cloned().collect();
        let req = placement::Request {
            db_type: tenant.db_type,
            db_quota_bytes: tenant.db_quota_bytes,
            needs_gateway: tenant.vpn_enabled,
            dedicated: tenant.dedicated,
            node_selector: &tenant.node_selector,
        };
        // The loads walk every tenant: skipped when no node could take the database anyway
        // (placement then fails on the role alone), which an update of an unplaced tenant, retried
        // here every time, would otherwise pay on every write.
        let loads =
            if nodes.iter().any(|n| n.roles.contains(&NodeRole::Db)) { self.loads() } else { Default::default() };
        match placement::place(&nodes, &loads, &req) {
            Ok(d) => {
                tenant.placement = Placement { db_node: Some(d.db_node), gateway_node: d.gateway_node };
                tenant.status_reason = Some("placed; waiting for node agents to report ready".into());
            }
            Err(reason) => {
                tenant.placement = Placement::default();
                tenant.status_reason = Some(reason);
            }
        }
    }

    pub(in crate::state) fn create_tenant(&mut self, cx: Cx<'_>, spec: &TenantSpec) -> Handled {
        let facts = cx.facts.with(details(&[
            ("tier", format!("{:?}", spec.tier).to_lowercase()),
            ("db_type", format!("{:?}", spec.db_type).to_lowercase()),
            ("db_quota", spec.db_quota.to_string()),
            ("vpn_enabled", spec.vpn_enabled.to_string()),
            ("public_api", spec.public_api.to_string()),
            ("ddl_enabled", spec.ddl_enabled.to_string()),
        ]));
        (self.add_tenant(cx.at, spec, cx.touched), facts)
    }

    fn add_tenant(&mut self, at: At, spec: &TenantSpec, touched: &mut Vec<Touched>) -> Response {
        let settings = self.settings()?.clone();
        spec.check()?;
        if self.tenants.contains_key(&spec.name) {
            return Err(DomainError::Conflict(format!("tenant {} already exists", spec.name)));
        }
        let used: BTreeSet<u32> = self.tenants.values().map(|t| t.network.index).collect();
        let slot = allocation::next_index(settings.vpn_pool, &used).ok_or_else(|| {
            DomainError::Exhausted(format!("the vpn pool {} has no free tenant subnet", settings.vpn_pool))
        })?;
        let network = allocation::network_for(settings.vpn_pool, slot)
            .ok_or_else(|| DomainError::Exhausted("no tenant subnet left".into()))?;
        let mut tenant = Tenant::new(spec, network, at.index, at.now);
        self.place(&mut tenant);
        touched.push(Touched::Tenant(spec.name.clone()));
        self.tenants.insert(spec.name.clone(), tenant.clone());
        Ok(Reply::Tenant(Box::new(tenant)))
    }

    pub(in crate::state) fn update_tenant(&mut self, cx: Cx<'_>, name: &TenantName, patch: &TenantPatch) -> Handled {
        (self.patch_tenant(cx.at, name, patch, cx.touched), cx.facts.with(patch_details(patch)))
    }

    fn patch_tenant(&mut self, at: At, name: &TenantName, patch: &TenantPatch, touched: &mut Vec<Touched>) -> Response {
        let current = self.tenants.get(name).ok_or_else(|| not_found(name))?;
        if current.status == TenantStatus::DeletedPendingPurge {
            return Err(DomainError::Conflict(format!("tenant {name} is deleted; restore it first")));
        }
        if patch.is_empty() {
            return Err(DomainError::Invalid("the update names no field to change".into()));
        }
        // Validated as a whole before anything changes: a refused update leaves the tenant as it was.
        let mut updated = current.apply_patch(patch)?;
        updated.revision = at.index;
        updated.updated_at_ms = at.now;
        refresh_readiness(&mut updated);
        if updated.placement.db_node.is_none() {
            self.place(&mut updated);
        }
        self.tenants.insert(name.clone(), updated.clone());
        touched.push(Touched::Tenant(name.clone()));
        Ok(Reply::Tenant(Box::new(updated)))
    }

    pub(in crate::state) fn lifecycle(&mut self, cx: Cx<'_>, name: &TenantName, step: Lifecycle) -> Handled {
        let mut d = Details::new();
        if let Lifecycle::Purge { force: true } = step {
            d.insert("force".into(), "true".into());
        }
        (self.step_tenant(cx.at, name, step, cx.touched), cx.facts.with(d))
    }

    fn step_tenant(&mut self, at: At, name: &TenantName, step: Lifecycle, touched: &mut Vec<Touched>) -> Response {
        let (index, now) = (at.index, at.now);
        let retention = self.settings()?.retention_ms;
        let tenant = self.tenants.get_mut(name).ok_or_else(|| not_found(name))?;
        let from = tenant.status;
        let conflict =
            |what: &str| Err(DomainError::Conflict(format!("tenant {name} is {}; cannot {what}", from.as_str())));
        use TenantStatus::*;
        match step {
            Lifecycle::Suspend => match from {
                Provisioning | Active | QuotaExceeded => {
                    tenant.status_before_offboarding = Some(from);
                    tenant.status = Suspended;
                }
                _ => return conflict("suspend"),
            },
            Lifecycle::Resume => match from {
                Suspended => {
                    tenant.status = tenant.status_before_offboarding.take().unwrap_or(Provisioning);
                }
                _ => return conflict("resume"),
            },
            Lifecycle::Delete => match from {
                Provisioning | Active | QuotaExceeded | Suspended => {
                    if from != Suspended {
                        tenant.status_before_offboarding = Some(from);
                    }
                    tenant.status = DeletedPendingPurge;
                    tenant.deleted_at_ms = Some(now);
                    tenant.purge_after_ms = Some(now.saturating_add(retention));
                    tenant.revision = index;
                    tenant.updated_at_ms = now;
                    touched.push(Touched::Tenant(name.clone()));
                    let reply = tenant.clone();
                    // Before anything is dropped: a final backup (purge waits for it).
                    self.request_final_backup(at, name, touched);
                    return Ok(Reply::Tenant(Box::new(reply)));
                }
                _ => return conflict("delete"),
            },
            Lifecycle::Restore => match from {
                DeletedPendingPurge => {
                    tenant.status = tenant.status_before_offboarding.take().unwrap_or(Provisioning);
                    tenant.deleted_at_ms = None;
                    tenant.purge_after_ms = None;
                }
                _ => return conflict("restore"),
            },
            Lifecycle::Purge { force } => {
                if from != DeletedPendingPurge {
                    return Err(DomainError::Conflict(format!(
                        "tenant {name} is {}; only a deleted tenant can be purged",
                        from.as_str()
                    )));
                }
                let due = tenant.purge_after_ms.unwrap_or(0);
                // A tenant without a backup is refused first: that is what force overrides for good.
                self.purge_gate(name, force)?;
                if now < due && !force {
                    return Err(DomainError::Conflict(format!(
                        "tenant {name} can be restored until {}; purge then, or pass force",
                        crate::time::rfc3339(due)
                    )));
                }
                let removed = self.tenants.remove(name);
                touched.push(Touched::Tenant(name.clone()));
                // The catalog and the wrapped data keys go: the objects left in the bucket can
                // no longer be opened by anyone.
                if self.backups.remove(name).is_some() {
                    touched.push(Touched::Backups(name.clone()));
                }
                self.drop_gateway_objects(name, touched);
                self.drop_device_tokens(name, touched);
                // Invoice before purging: the usage ledger goes with the tenant (a new tenant of
                // the same name starts empty).
                self.usage.drop_tenant(name, touched);
                self.drop_invoices(name, touched);
                for key in self.api_keys.values_mut() {
                    if key.tenant.as_ref() == Some(name) && key.revoked_at_ms.is_none() {
                        key.revoked_at_ms = Some(now);
                        touched.push(Touched::ApiKey(key.id.clone()));
                    }
                }
                return match removed {
                    Some(t) => Ok(Reply::Tenant(Box::new(t))),
                    None => Err(not_found(name)),
                };
            }
        }
        tenant.revision = index;
        tenant.updated_at_ms = now;
        refresh_readiness(tenant);
        touched.push(Touched::Tenant(name.clone()));
        Ok(Reply::Tenant(Box::new(tenant.clone())))
    }
}

/// Active when every node the tenant is placed on reports it ready at (or after) its revision;
/// otherwise provisioning, with the nodes' reasons. Suspended and deleted tenants keep their status.
pub fn refresh_readiness(t: &mut Tenant) {
    if !matches!(t.status, TenantStatus::Provisioning | TenantStatus::Active | TenantStatus::QuotaExceeded) {
        return;
    }
    let nodes: BTreeSet<u64> = [t.placement.db_node, t.placement.gateway_node].into_iter().flatten().collect();
    if nodes.is_empty() {
        t.status = TenantStatus::Provisioning;
        return;
    }
    let mut waiting = Vec::new();
    for id in &nodes {
        match t.node_status.get(id) {
            Some(NodeTenantStatus { ready: true, revision, .. }) if *revision >= t.revision_for(*id) => {}
            Some(NodeTenantStatus { ready: false, reason: Some(r), .. }) => waiting.push(format!("node {id}: {r}")),
            _ => waiting.push(format!("waiting for node {id}")),
        }
    }
    let over: Vec<(u64, u64)> = nodes
        .iter()
        .filter_map(|id| t.node_status.get(id))
        .filter(|s| s.quota_exceeded)
        .map(|s| (s.db_bytes, t.db_quota_bytes))
        .collect();
    if waiting.is_empty() && !over.is_empty() {
        let (used, quota) = over[0];
        t.status = TenantStatus::QuotaExceeded;
        t.status_reason = Some(format!(
            "database uses {used} bytes of its {quota}-byte quota ({}): inserts and updates are blocked until it is back under",
            t.db_quota
        ));
    } else if waiting.is_empty() {
        t.status = TenantStatus::Active;
        t.status_reason = None;
    } else {
        t.status = TenantStatus::Provisioning;
        t.status_reason = Some(waiting.join("; "));
    }
}

pub(in crate::state) fn not_found(name: &TenantName) -> DomainError {
    DomainError::NotFound(format!("tenant {name} not found"))
}

fn patch_details(patch: &TenantPatch) -> Details {
    let lower = |v: &dyn std::fmt::Debug| format!("{v:?}").to_lowercase();
    let named = [
        ("tier", patch.tier.map(|v| lower(&v))),
        ("db_quota", patch.db_quota.map(|v| v.to_string())),
        ("connection_limit", patch.connection_limit.map(|v| v.to_string())),
        ("events_per_min", patch.events_per_min.map(|v| v.to_string())),
        ("vpn_enabled", patch.vpn_enabled.map(|v| v.to_string())),
        ("public_api", patch.public_api.map(|v| v.to_string())),
        ("ddl_enabled", patch.ddl_enabled.map(|v| v.to_string())),
        ("access_mode", patch.access_mode.map(|v| lower(&v))),
        ("bandwidth_bps", patch.bandwidth_bps.map(|v| v.to_string())),
        ("device_to_device", patch.device_to_device.map(|v| if v { "allow".into() } else { "deny".into() })),
    ];
    named.into_iter().filter_map(|(name, value)| Some((name.to_string(), value?))).collect()
}
