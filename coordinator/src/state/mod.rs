//! The replicated domain state and the commands that change it. `State::apply` is a pure,
//! deterministic function of the state and the command: no clock, no randomness, no IO. Every
//! command, accepted or refused, appends exactly one audit entry in the same step.

pub mod allocation;
pub mod apikey;
pub mod audit;
pub mod desired;
pub mod names;
pub mod node;
pub mod placement;
pub mod quota;
pub mod tenant;

use allocation::VpnPool;
use apikey::{ApiKey, Role};
use audit::{AuditEntry, Draft, Outcome};
use names::TenantName;
use node::{JoinToken, Node, NodeRole, NodeTenantStatus, Report};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use tenant::{Placement, Tenant, TenantPatch, TenantSpec, TenantStatus};

/// Cluster-wide settings fixed at `init`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClusterSettings {
    pub cluster_id: String,
    #[schema(value_type = String, example = "10.50.0.0/16")]
    pub vpn_pool: VpnPool,
    /// How long a deleted tenant can be restored before it may be purged.
    pub retention_ms: u64,
    /// SHA-256 fingerprint of the cluster CA certificate, for agents to pin.
    pub ca_fingerprint: String,
    /// The cluster CA certificate (public).
    #[serde(default)]
    pub ca_cert_pem: String,
    /// The CA private key: replicated to coordinators only, so any of them can sign node CSRs.
    #[serde(default)]
    #[schema(ignore)]
    pub ca_key_pem: SecretPem,
}

/// A PEM private key that never shows in `Debug` output or logs.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretPem(pub String);

impl std::fmt::Debug for SecretPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretPem(..)")
    }
}

/// Who asked, when and from where; stamped by the coordinator that received the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub time_ms: u64,
    pub actor: String,
    pub source: String,
    /// Set when `actor` is an API key id: the role the edge authenticated the key with. The state
    /// machine re-checks the key at apply (`State::authorise`), so a key revoked a moment ago
    /// cannot act through a lagging follower. Absent on older log entries and non-key actors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_role: Option<Role>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Lifecycle {
    Suspend,
    Resume,
    Delete,
    Restore,
    Purge { force: bool },
}

impl Lifecycle {
    fn action(self) -> &'static str {
        match self {
            Lifecycle::Suspend => "tenant.suspend",
            Lifecycle::Resume => "tenant.resume",
            Lifecycle::Delete => "tenant.delete",
            Lifecycle::Restore => "tenant.restore",
            Lifecycle::Purge { .. } => "tenant.purge",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Bootstrap {
        settings: ClusterSettings,
        admin_key: ApiKey,
    },
    CreateTenant(TenantSpec),
    UpdateTenant {
        name: TenantName,
        patch: TenantPatch,
    },
    Lifecycle {
        name: TenantName,
        step: Lifecycle,
    },
    CreateApiKey(ApiKey),
    RevokeApiKey {
        id: String,
    },
    /// Break-glass: root on coordinator host `host` minted an admin key from the data directory
    /// (`berqenas-coordinator recover-admin`); only the key's hash travels.
    RecoverAdmin {
        key: ApiKey,
        host: String,
    },
    RegisterNode(Node),
    CreateJoinToken(JoinToken),
    /// An unused join token (node or coordinator) can no longer be spent.
    RevokeJoinToken {
        id: String,
    },
    /// A new coordinator spends its id-bound token to obtain a certificate.
    JoinCoordinator {
        token_id: String,
        secret_hash: String,
        id: u64,
    },
    /// A host presenting join token `token_id` whose secret hashes to `secret_hash` asks to
    /// become a node with `node`'s roles, labels, address and capacity (its id is assigned here).
    JoinNode {
        token_id: String,
        secret_hash: String,
        node: Node,
    },
    RevokeNode {
        id: u64,
    },
    CordonNode {
        id: u64,
        cordoned: bool,
    },
    NodeReport(Report),
    /// A Raft membership change that openraft carried out; recorded for the audit trail, and
    /// removed coordinator ids are retired forever.
    Membership {
        action: String,
        node_id: u64,
        details: BTreeMap<String, String>,
    },
    /// A request refused at the edge (bad input, no or wrong key): only the audit entry.
    Rejected {
        action: String,
        target: String,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub meta: Meta,
    pub op: Op,
}

impl Op {
    /// Whether only an admin API key may ask for this (every REST write is admin-only; nodes,
    /// join tokens, break-glass recovery and edge refusals act without a key).
    pub fn needs_admin_key(&self) -> bool {
        match self {
            Op::CreateTenant(_)
            | Op::UpdateTenant { .. }
            | Op::Lifecycle { .. }
            | Op::CreateApiKey(_)
            | Op::RevokeApiKey { .. }
            | Op::RegisterNode(_)
            | Op::CreateJoinToken(_)
            | Op::RevokeJoinToken { .. }
            | Op::RevokeNode { .. }
            | Op::CordonNode { .. }
            | Op::Membership { .. } => true,
            Op::Bootstrap { .. }
            | Op::RecoverAdmin { .. }
            | Op::JoinCoordinator { .. }
            | Op::JoinNode { .. }
            | Op::NodeReport(_)
            | Op::Rejected { .. } => false,
        }
    }

    /// The audit action and target of this command, for an entry written without running it
    /// (a refusal at apply). Agrees with `State::run` (unit tested).
    pub fn describe(&self) -> (String, String) {
        let (action, target): (&str, String) = match self {
            Op::Bootstrap { settings, .. } => ("cluster.init", format!("cluster/{}", settings.cluster_id)),
            Op::CreateTenant(spec) => ("tenant.create", format!("tenant/{}", spec.name)),
            Op::UpdateTenant { name, .. } => ("tenant.update", format!("tenant/{name}")),
            Op::Lifecycle { name, step } => (step.action(), format!("tenant/{name}")),
            Op::CreateApiKey(key) => ("apikey.create", format!("apikey/{}", key.id)),
            Op::RevokeApiKey { id } => ("apikey.revoke", format!("apikey/{id}")),
            Op::RecoverAdmin { key, .. } => ("apikey.recovered", format!("apikey/{}", key.id)),
            Op::RegisterNode(node) => ("node.register", format!("node/{}", node.id)),
            Op::CreateJoinToken(token) => ("node.token.create", format!("jointoken/{}", token.id)),
            Op::RevokeJoinToken { id } => ("jointoken.revoke", format!("jointoken/{id}")),
            Op::JoinCoordinator { id, .. } => ("cluster.join", format!("coordinator/{id}")),
            Op::JoinNode { .. } => ("node.join", "node".to_string()),
            Op::RevokeNode { id } => ("node.revoke", format!("node/{id}")),
            Op::CordonNode { id, cordoned: true } => ("node.cordon", format!("node/{id}")),
            Op::CordonNode { id, cordoned: false } => ("node.uncordon", format!("node/{id}")),
            Op::NodeReport(report) => ("node.report", format!("node/{}", report.node_id)),
            Op::Membership { action, node_id, .. } => (action.as_str(), format!("coordinator/{node_id}")),
            Op::Rejected { action, target, .. } => (action.as_str(), target.clone()),
        };
        (action.to_string(), target)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Tenant(Box<Tenant>),
    ApiKey(Box<ApiKey>),
    Node(Box<Node>),
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum DomainError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    /// The API key a command acts with was refused at apply (gone, revoked, expired, or its role
    /// may not do this), although the edge had accepted it.
    #[error("{0}")]
    Forbidden(String),
    /// A tenant spec or update that breaks a tenant invariant.
    #[error(transparent)]
    InvalidTenant(#[from] tenant::InvalidTenant),
    #[error("{0}")]
    Exhausted(String),
    /// Echo of an edge rejection; the API already told the caller why.
    #[error("{0}")]
    Rejected(String),
    #[error("the cluster is not initialized")]
    Uninitialized,
}

pub type Response = Result<Reply, DomainError>;

/// A key whose stored row changed; the store writes exactly these after a batch.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Touched {
    Settings,
    Tenant(TenantName),
    Node(u64),
    ApiKey(String),
    Audit(u64),
    Retired,
    JoinToken(String),
    Counters,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub settings: Option<ClusterSettings>,
    pub tenants: BTreeMap<TenantName, Tenant>,
    pub nodes: BTreeMap<u64, Node>,
    pub api_keys: BTreeMap<String, ApiKey>,
    pub audit: Vec<AuditEntry>,
    /// Coordinator ids removed from the cluster; never accepted again.
    pub retired_coordinators: BTreeSet<u64>,
    pub join_tokens: BTreeMap<String, JoinToken>,
    /// Node ids are handed out once, in order, and never reused.
    pub next_node_id: u64,
}

fn detail(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

impl State {
    /// Applies one command at Raft log `index`. Returns the reply and the rows it touched.
    pub fn apply(&mut self, index: u64, cmd: &Command) -> (Response, Vec<Touched>) {
        let mut touched = Vec::new();
        let (action, target, result, mut details) = match self.authorise(cmd) {
            Ok(()) => self.run(index, cmd, &mut touched),
            Err(e) => {
                let (action, target) = cmd.op.describe();
                (action, target, Err(e), BTreeMap::new())
            }
        };
        let outcome = if result.is_ok() { Outcome::Ok } else { Outcome::Rejected };
        if let Err(e) = &result {
            details.insert("reason".into(), e.to_string());
        }
        let entry = audit::chain(
            self.audit.last(),
            Draft {
                time_ms: cmd.meta.time_ms,
                actor: cmd.meta.actor.clone(),
                source: cmd.meta.source.clone(),
                action,
                target,
                outcome,
                details,
            },
        );
        touched.push(Touched::Audit(entry.seq));
        self.audit.push(entry);
        (result, touched)
    }

    /// Re-authorises a command that acts with an API key (`Meta::key_role`), against this state
    /// at this log position and the command's own time: deterministic, and a replayed entry gets
    /// the answer it got the first time. Entries without a claim (older logs, nodes, join
    /// tokens, the system) are not key-authorised; edge refusals (`Rejected`) are only audited.
    fn authorise(&self, cmd: &Command) -> Result<(), DomainError> {
        let Some(claimed) = cmd.meta.key_role else { return Ok(()) };
        if let Op::Rejected { .. } = cmd.op {
            return Ok(());
        }
        let key = self.api_keys.get(&cmd.meta.actor);
        apikey::recheck(key, &cmd.meta.actor, claimed, cmd.meta.time_ms).map_err(DomainError::Forbidden)
    }

    fn run(
        &mut self,
        index: u64,
        cmd: &Command,
        touched: &mut Vec<Touched>,
    ) -> (String, String, Response, BTreeMap<String, String>) {
        let now = cmd.meta.time_ms;
        match &cmd.op {
            Op::Bootstrap { settings, admin_key } => {
                let details = detail(&[
                    ("cluster_id", settings.cluster_id.clone()),
                    ("vpn_pool", settings.vpn_pool.to_string()),
                    ("admin_key", admin_key.id.clone()),
                ]);
                let result = if self.settings.is_some() {
                    Err(DomainError::Conflict("the cluster is already initialized".into()))
                } else {
                    self.settings = Some(settings.clone());
                    self.api_keys.insert(admin_key.id.clone(), admin_key.clone());
                    touched.push(Touched::Settings);
                    touched.push(Touched::ApiKey(admin_key.id.clone()));
                    Ok(Reply::Done)
                };
                ("cluster.init".into(), format!("cluster/{}", settings.cluster_id), result, details)
            }
            Op::CreateTenant(spec) => {
                let details = detail(&[
                    ("tier", format!("{:?}", spec.tier).to_lowercase()),
                    ("db_type", format!("{:?}", spec.db_type).to_lowercase()),
                    ("db_quota", spec.db_quota.to_string()),
                    ("vpn_enabled", spec.vpn_enabled.to_string()),
                    ("public_api", spec.public_api.to_string()),
                    ("ddl_enabled", spec.ddl_enabled.to_string()),
                ]);
                let result = self.create_tenant(index, now, spec, touched);
                ("tenant.create".into(), format!("tenant/{}", spec.name), result, details)
            }
            Op::UpdateTenant { name, patch } => {
                let details = patch_details(patch);
                let result = self.update_tenant(index, now, name, patch, touched);
                ("tenant.update".into(), format!("tenant/{name}"), result, details)
            }
            Op::Lifecycle { name, step } => {
                let mut details = BTreeMap::new();
                if let Lifecycle::Purge { force: true } = step {
                    details.insert("force".into(), "true".into());
                }
                let result = self.lifecycle(index, now, name, *step, touched);
                (step.action().into(), format!("tenant/{name}"), result, details)
            }
            Op::CreateApiKey(key) => {
                let mut details = detail(&[("role", format!("{:?}", key.role).to_lowercase())]);
                if let Some(t) = &key.tenant {
                    details.insert("tenant".into(), t.to_string());
                }
                let result = self.create_api_key(key, touched);
                ("apikey.create".into(), format!("apikey/{}", key.id), result, details)
            }
            Op::RevokeApiKey { id } => {
                let result = self.revoke_api_key(now, id, touched);
                ("apikey.revoke".into(), format!("apikey/{id}"), result, BTreeMap::new())
            }
            Op::RecoverAdmin { key, host } => {
                let details = detail(&[
                    ("role", "admin".to_string()),
                    ("host", host.clone()),
                    ("method", "break-glass recovery file in the coordinator's data directory".to_string()),
                ]);
                let result = match (key.role, &key.tenant) {
                    (Role::Admin, None) => self.create_api_key(key, touched),
                    _ => Err(DomainError::Invalid("a recovered key must be an admin key without a tenant".into())),
                };
                ("apikey.recovered".into(), format!("apikey/{}", key.id), result, details)
            }
            Op::RegisterNode(node) => {
                let details = detail(&[
                    ("roles", node.roles.iter().map(|r| format!("{r:?}").to_lowercase()).collect::<Vec<_>>().join(",")),
                    ("address", node.address.clone()),
                ]);
                let result = self.register_node(index, now, node, touched);
                ("node.register".into(), format!("node/{}", node.id), result, details)
            }
            Op::CreateJoinToken(token) => {
                let details = detail(&[
                    ("roles", roles_text(&token.roles)),
                    ("expires_at", crate::time::rfc3339(token.expires_at_ms)),
                ]);
                let result = if self.join_tokens.contains_key(&token.id) {
                    Err(DomainError::Conflict(format!("join token id {} already exists", token.id)))
                } else if token.roles.is_empty() && token.coordinator_id.is_none() {
                    Err(DomainError::Invalid("a join token needs at least one role".into()))
                } else {
                    self.join_tokens.insert(token.id.clone(), token.clone());
                    touched.push(Touched::JoinToken(token.id.clone()));
                    Ok(Reply::Done)
                };
                ("node.token.create".into(), format!("jointoken/{}", token.id), result, details)
            }
            Op::RevokeJoinToken { id } => {
                let result = self.revoke_join_token(now, id, touched);
                (cmd.op.describe().0, format!("jointoken/{id}"), result, BTreeMap::new())
            }
            Op::JoinNode { token_id, secret_hash, node } => {
                let details = detail(&[
                    ("roles", roles_text(&node.roles)),
                    ("address", node.address.clone()),
                    ("token", token_id.clone()),
                ]);
                let result = self.join_node(index, now, token_id, secret_hash, node, touched);
                let target = match &result {
                    Ok(Reply::Node(n)) => format!("node/{}", n.id),
                    _ => "node".to_string(),
                };
                ("node.join".into(), target, result, details)
            }
            Op::JoinCoordinator { token_id, secret_hash, id } => {
                let result = self.spend_coordinator_token(now, token_id, secret_hash, *id, touched);
                ("cluster.join".into(), format!("coordinator/{id}"), result, detail(&[("token", token_id.clone())]))
            }
            Op::RevokeNode { id } => {
                let result = match self.nodes.get_mut(id) {
                    None => Err(DomainError::NotFound(format!("node {id} not found"))),
                    Some(n) if n.revoked => Err(DomainError::Conflict(format!("node {id} is already revoked"))),
                    Some(n) => {
                        n.revoked = true;
                        n.cordoned = true;
                        touched.push(Touched::Node(*id));
                        Ok(Reply::Node(Box::new(n.clone())))
                    }
                };
                ("node.revoke".into(), format!("node/{id}"), result, BTreeMap::new())
            }
            Op::CordonNode { id, cordoned } => {
                let result = match self.nodes.get_mut(id) {
                    None => Err(DomainError::NotFound(format!("node {id} not found"))),
                    Some(n) => {
                        n.cordoned = *cordoned;
                        touched.push(Touched::Node(*id));
                        Ok(Reply::Node(Box::new(n.clone())))
                    }
                };
                let action = if *cordoned { "node.cordon" } else { "node.uncordon" };
                (action.into(), format!("node/{id}"), result, BTreeMap::new())
            }
            Op::NodeReport(report) => {
                let (result, details) = self.node_report(now, report, touched);
                ("node.report".into(), format!("node/{}", report.node_id), result, details)
            }
            Op::Membership { action, node_id, details } => {
                if action == "cluster.remove" {
                    self.retired_coordinators.insert(*node_id);
                    touched.push(Touched::Retired);
                }
                (action.clone(), format!("coordinator/{node_id}"), Ok(Reply::Done), details.clone())
            }
            Op::Rejected { action, target, reason } => {
                (action.clone(), target.clone(), Err(DomainError::Rejected(reason.clone())), BTreeMap::new())
            }
        }
    }

    fn settings(&self) -> Result<&ClusterSettings, DomainError> {
        self.settings.as_ref().ok_or(DomainError::Uninitialized)
    }

    /// Load per node from the tenants already placed.
    pub fn loads(&self) -> BTreeMap<u64, placement::Load> {
        let mut loads: BTreeMap<u64, placement::Load> = BTreeMap::new();
        for t in self.tenants.values() {
            if let Some(db) = t.placement.db_node {
                let l = loads.entry(db).or_default();
                l.db_tenants += 1;
                l.db_quota_bytes += t.db_quota_bytes;
                l.has_dedicated |= t.dedicated;
            }
            if let Some(gw) = t.placement.gateway_node {
                let l = loads.entry(gw).or_default();
                l.gateway_tenants += 1;
                l.has_dedicated |= t.dedicated;
            }
        }
        loads
    }

    /// Tries to place `tenant`; on failure the tenant stays unplaced with the reason.
    fn place(&self, tenant: &mut Tenant) {
        let nodes: Vec<Node> = self.nodes.values().cloned().collect();
        let req = placement::Request {
            db_type: tenant.db_type,
            db_quota_bytes: tenant.db_quota_bytes,
            needs_gateway: tenant.vpn_enabled,
            dedicated: tenant.dedicated,
            node_selector: &tenant.node_selector,
        };
        match placement::place(&nodes, &self.loads(), &req) {
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

    fn create_tenant(&mut self, index: u64, now: u64, spec: &TenantSpec, touched: &mut Vec<Touched>) -> Response {
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
        let mut tenant = Tenant::new(spec, network, index, now);
        self.place(&mut tenant);
        touched.push(Touched::Tenant(spec.name.clone()));
        self.tenants.insert(spec.name.clone(), tenant.clone());
        Ok(Reply::Tenant(Box::new(tenant)))
    }

    fn update_tenant(
        &mut self,
        index: u64,
        now: u64,
        name: &TenantName,
        patch: &TenantPatch,
        touched: &mut Vec<Touched>,
    ) -> Response {
        let current = self.tenants.get(name).ok_or_else(|| not_found(name))?;
        if current.status == TenantStatus::DeletedPendingPurge {
            return Err(DomainError::Conflict(format!("tenant {name} is deleted; restore it first")));
        }
        if patch.is_empty() {
            return Err(DomainError::Invalid("the update names no field to change".into()));
        }
        // Validated as a whole before anything changes: a refused update leaves the tenant as it was.
        let mut updated = current.apply_patch(patch)?;
        updated.revision = index;
        updated.updated_at_ms = now;
        refresh_readiness(&mut updated);
        if updated.placement.db_node.is_none() {
            self.place(&mut updated);
        }
        self.tenants.insert(name.clone(), updated.clone());
        touched.push(Touched::Tenant(name.clone()));
        Ok(Reply::Tenant(Box::new(updated)))
    }

    fn lifecycle(
        &mut self,
        index: u64,
        now: u64,
        name: &TenantName,
        step: Lifecycle,
        touched: &mut Vec<Touched>,
    ) -> Response {
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
                if now < due && !force {
                    return Err(DomainError::Conflict(format!(
                        "tenant {name} can be restored until {}; purge then, or pass force",
                        crate::time::rfc3339(due)
                    )));
                }
                let removed = self.tenants.remove(name);
                touched.push(Touched::Tenant(name.clone()));
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

    fn create_api_key(&mut self, key: &ApiKey, touched: &mut Vec<Touched>) -> Response {
        if self.api_keys.contains_key(&key.id) {
            return Err(DomainError::Conflict(format!("api key id {} already exists", key.id)));
        }
        match (key.role, &key.tenant) {
            (Role::Customer, None) => {
                return Err(DomainError::Invalid("a customer key must name its tenant".into()));
            }
            (Role::Customer, Some(t)) if !self.tenants.contains_key(t) => return Err(not_found(t)),
            (Role::Admin | Role::Auditor, Some(_)) => {
                return Err(DomainError::Invalid("only customer keys are scoped to a tenant".into()));
            }
            _ => {}
        }
        self.api_keys.insert(key.id.clone(), key.clone());
        touched.push(Touched::ApiKey(key.id.clone()));
        Ok(Reply::ApiKey(Box::new(key.redacted())))
    }

    /// Revokes a key, but never the last admin key that is usable and does not expire: without
    /// one, every operator is locked out (or will be when the others expire).
    fn revoke_api_key(&mut self, now: u64, id: &str, touched: &mut Vec<Touched>) -> Response {
        let key = self.api_keys.get(id).ok_or_else(|| DomainError::NotFound(format!("api key {id} not found")))?;
        if key.revoked_at_ms.is_some() {
            return Err(DomainError::Conflict(format!("api key {id} is already revoked")));
        }
        if key.role == Role::Admin && key.is_usable(now) {
            let lasting = |k: &&ApiKey| k.role == Role::Admin && k.is_usable(now) && k.expires_at_ms.is_none();
            if !self.api_keys.values().filter(|k| k.id != id).any(|k| lasting(&k)) {
                return Err(DomainError::Conflict(format!(
                    "api key {id} is the last active admin key that does not expire; revoking it would lock every \
                     operator out: create another admin key without an expiry first (root on a coordinator host can \
                     always mint one with `berqenas-coordinator recover-admin`)"
                )));
            }
        }
        let key = self.api_keys.get_mut(id).ok_or_else(|| DomainError::NotFound(format!("api key {id} not found")))?;
        key.revoked_at_ms = Some(now);
        touched.push(Touched::ApiKey(id.to_string()));
        Ok(Reply::ApiKey(Box::new(key.redacted())))
    }

    fn register_node(&mut self, index: u64, now: u64, node: &Node, touched: &mut Vec<Touched>) -> Response {
        if node.roles.is_empty() {
            return Err(DomainError::Invalid("a node needs at least one role".into()));
        }
        let mut node = node.clone();
        node.last_seen_ms = now;
        self.nodes.insert(node.id, node.clone());
        touched.push(Touched::Node(node.id));
        // Tenants that waited for a node may fit now.
        let waiting: Vec<TenantName> = self
            .tenants
            .values()
            .filter(|t| t.placement.db_node.is_none() && t.status == TenantStatus::Provisioning)
            .map(|t| t.name.clone())
            .collect();
        for name in waiting {
            if let Some(mut t) = self.tenants.get(&name).cloned() {
                self.place(&mut t);
                if t.placement.db_node.is_some() {
                    t.revision = index;
                    t.updated_at_ms = now;
                    self.tenants.insert(name.clone(), t);
                    touched.push(Touched::Tenant(name));
                }
            }
        }
        Ok(Reply::Node(Box::new(node)))
    }

    fn join_node(
        &mut self,
        index: u64,
        now: u64,
        token_id: &str,
        secret_hash: &str,
        request: &Node,
        touched: &mut Vec<Touched>,
    ) -> Response {
        use subtle::ConstantTimeEq;
        let refused = || DomainError::Rejected("join token is invalid, expired or already used".into());
        let token = self.join_tokens.get(token_id).ok_or_else(refused)?;
        let matches: bool = token.secret_hash.as_bytes().ct_eq(secret_hash.as_bytes()).into();
        if !matches
            || token.used_at_ms.is_some()
            || token.revoked_at_ms.is_some()
            || now >= token.expires_at_ms
            || token.coordinator_id.is_some()
        {
            return Err(refused());
        }
        if !request.roles.is_subset(&token.roles) || request.roles.is_empty() {
            return Err(DomainError::Invalid(format!(
                "requested roles {} are not within the token's roles {}",
                roles_text(&request.roles),
                roles_text(&token.roles)
            )));
        }
        let id = self.next_node_id.max(1);
        self.next_node_id = id + 1;
        touched.push(Touched::Counters);
        let mut labels = token.labels.clone();
        for (k, v) in &request.labels {
            labels.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let node = Node { id, labels, revoked: false, applied_revision: 0, cordoned: false, ..request.clone() };
        if let Some(t) = self.join_tokens.get_mut(token_id) {
            t.used_at_ms = Some(now);
            t.used_by_node = Some(id);
        }
        touched.push(Touched::JoinToken(token_id.to_string()));
        self.register_node(index, now, &node, touched)
    }

    fn spend_coordinator_token(
        &mut self,
        now: u64,
        token_id: &str,
        secret_hash: &str,
        id: u64,
        touched: &mut Vec<Touched>,
    ) -> Response {
        use subtle::ConstantTimeEq;
        let refused =
            || DomainError::Rejected("coordinator token is invalid, expired, used, revoked or for another id".into());
        let token = self.join_tokens.get_mut(token_id).ok_or_else(refused)?;
        let matches: bool = token.secret_hash.as_bytes().ct_eq(secret_hash.as_bytes()).into();
        if !matches
            || token.used_at_ms.is_some()
            || token.revoked_at_ms.is_some()
            || now >= token.expires_at_ms
            || token.coordinator_id != Some(id)
        {
            return Err(refused());
        }
        if self.retired_coordinators.contains(&id) {
            return Err(DomainError::Conflict(format!("coordinator id {id} was removed and is never reused")));
        }
        token.used_at_ms = Some(now);
        touched.push(Touched::JoinToken(token_id.to_string()));
        Ok(Reply::Done)
    }

    /// Revokes a join token that has not been spent; a used or revoked one is a conflict.
    fn revoke_join_token(&mut self, now: u64, id: &str, touched: &mut Vec<Touched>) -> Response {
        let token =
            self.join_tokens.get_mut(id).ok_or_else(|| DomainError::NotFound(format!("join token {id} not found")))?;
        if token.revoked_at_ms.is_some() {
            return Err(DomainError::Conflict(format!("join token {id} is already revoked")));
        }
        if let Some(used) = token.used_at_ms {
            return Err(DomainError::Conflict(format!(
                "join token {id} was used at {}; remove the member it admitted instead",
                crate::time::rfc3339(used)
            )));
        }
        token.revoked_at_ms = Some(now);
        touched.push(Touched::JoinToken(id.to_string()));
        Ok(Reply::Done)
    }

    fn node_report(
        &mut self,
        now: u64,
        report: &Report,
        touched: &mut Vec<Touched>,
    ) -> (Response, BTreeMap<String, String>) {
        let mut details = BTreeMap::new();
        let Some(node) = self.nodes.get_mut(&report.node_id) else {
            return (Err(DomainError::NotFound(format!("node {} not found", report.node_id))), details);
        };
        if node.revoked {
            return (Err(DomainError::Rejected(format!("node {} is revoked", report.node_id))), details);
        }
        node.last_seen_ms = now;
        node.applied_revision = node.applied_revision.max(report.applied_revision);
        if let Some(c) = &report.capacity {
            node.capacity = c.clone();
        }
        touched.push(Touched::Node(report.node_id));
        details.insert("applied_revision".into(), report.applied_revision.to_string());
        for (name, status) in &report.tenants {
            let Ok(name) = TenantName::parse(name) else { continue };
            let Some(t) = self.tenants.get_mut(&name) else { continue };
            let placed_here =
                t.placement.db_node == Some(report.node_id) || t.placement.gateway_node == Some(report.node_id);
            if !placed_here {
                continue;
            }
            t.node_status.insert(report.node_id, status.clone());
            let before = t.status;
            refresh_readiness(t);
            if t.status != before {
                details.insert(format!("tenant/{name}"), t.status.as_str().to_string());
            }
            touched.push(Touched::Tenant(name));
        }
        (Ok(Reply::Done), details)
    }

    /// Tenants a customer or admin may list, in name order.
    pub fn tenant_list(&self) -> Vec<&Tenant> {
        self.tenants.values().collect()
    }

    pub fn has_role(&self, role: NodeRole) -> bool {
        self.nodes.values().any(|n| n.roles.contains(&role))
    }
}

fn roles_text(roles: &BTreeSet<NodeRole>) -> String {
    roles.iter().map(|r| format!("{r:?}").to_lowercase()).collect::<Vec<_>>().join(",")
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
            Some(NodeTenantStatus { ready: true, revision, .. }) if *revision >= t.revision => {}
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

fn not_found(name: &TenantName) -> DomainError {
    DomainError::NotFound(format!("tenant {name} not found"))
}

fn patch_details(patch: &TenantPatch) -> BTreeMap<String, String> {
    let mut d = BTreeMap::new();
    if let Some(v) = patch.tier {
        d.insert("tier".into(), format!("{v:?}").to_lowercase());
    }
    if let Some(v) = patch.db_quota {
        d.insert("db_quota".into(), v.to_string());
    }
    if let Some(v) = patch.connection_limit {
        d.insert("connection_limit".into(), v.to_string());
    }
    if let Some(v) = patch.events_per_min {
        d.insert("events_per_min".into(), v.to_string());
    }
    if let Some(v) = patch.vpn_enabled {
        d.insert("vpn_enabled".into(), v.to_string());
    }
    if let Some(v) = patch.public_api {
        d.insert("public_api".into(), v.to_string());
    }
    if let Some(v) = patch.ddl_enabled {
        d.insert("ddl_enabled".into(), v.to_string());
    }
    if let Some(v) = patch.access_mode {
        d.insert("access_mode".into(), format!("{v:?}").to_lowercase());
    }
    d
}

#[cfg(test)]
mod tests;

/// Builders shared by the unit tests of several state modules.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    pub fn booted() -> State {
        let mut s = State::default();
        let settings = ClusterSettings {
            cluster_id: "test".into(),
            vpn_pool: VpnPool::parse("198.18.0.0/15").expect("valid pool"),
            retention_ms: 1000,
            ca_fingerprint: "sha256:00".into(),
            ca_cert_pem: String::new(),
            ca_key_pem: SecretPem::default(),
        };
        let admin = ApiKey {
            id: "00000000000000aa".into(),
            role: Role::Admin,
            tenant: None,
            description: String::new(),
            secret_hash: String::new(),
            created_at_ms: 0,
            expires_at_ms: None,
            revoked_at_ms: None,
        };
        let meta = Meta { time_ms: 0, actor: "t".into(), source: "t".into(), key_role: None };
        let (r, _) = s.apply(1, &Command { meta, op: Op::Bootstrap { settings, admin_key: admin } });
        assert!(r.is_ok());
        s
    }

    pub fn next_index(s: &State) -> u64 {
        s.audit.len() as u64 + 1
    }

    pub fn register(s: &mut State, id: u64, roles: &[NodeRole]) {
        let node = Node {
            id,
            roles: roles.iter().copied().collect(),
            labels: BTreeMap::new(),
            capacity: node::NodeCapacity { cpus: 2, memory_bytes: 1 << 33, disk_bytes: 1 << 40, max_tenants: 100 },
            address: "192.0.2.1".into(),
            last_seen_ms: 0,
            cordoned: false,
            revoked: false,
            applied_revision: 0,
        };
        let i = next_index(s);
        let meta = Meta { time_ms: i, actor: "t".into(), source: "t".into(), key_role: None };
        let (r, _) = s.apply(i, &Command { meta, op: Op::RegisterNode(node) });
        assert!(r.is_ok(), "{r:?}");
    }

    pub fn create(s: &mut State, name: &str) -> Tenant {
        let d = tenant::Tier::Free.defaults();
        let spec = TenantSpec {
            name: TenantName::parse(name).expect("valid"),
            tier: tenant::Tier::Free,
            db_type: tenant::DbType::Postgres,
            isolation: tenant::Isolation::Schema,
            db_quota: d.db_quota,
            connection_limit: d.connection_limit,
            events_per_min: d.events_per_min,
            vpn_enabled: true,
            public_api: false,
            ddl_enabled: false,
            access_mode: tenant::AccessMode::VpnOnly,
            dedicated: false,
            node_selector: BTreeMap::new(),
            db_password_verifier: String::new(),
        };
        let i = next_index(s);
        let meta = Meta { time_ms: i, actor: "t".into(), source: "t".into(), key_role: None };
        match s.apply(i, &Command { meta, op: Op::CreateTenant(spec) }).0 {
            Ok(Reply::Tenant(t)) => *t,
            other => panic!("{other:?}"),
        }
    }
}
