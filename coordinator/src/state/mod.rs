//! The replicated domain state and the commands that change it. `State::apply` is a pure,
//! deterministic function of the state and the command: no clock, no randomness, no IO. Every
//! command, accepted or refused, appends exactly one audit entry in the same step.

pub mod allocation;
pub mod apikey;
pub mod audit;
pub mod desired;
pub mod names;
pub mod node;
mod node_commands;
pub mod placement;
pub mod quota;
pub mod tenant;
mod tenant_commands;
use node_commands::roles_text;
pub use tenant_commands::refresh_readiness;
use tenant_commands::{not_found, patch_details};

use allocation::VpnPool;
use apikey::{ApiKey, Role};
use audit::{AuditEntry, Draft, Outcome};
use names::TenantName;
use node::{JoinToken, Node, NodeRole, NodeTenantStatus, Report};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use tenant::{Placement, Tenant, TenantPatch, TenantSpec, TenantStatus};

/// Cluster-wide settings fixed at `init`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSettings {
    pub cluster_id: String,
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

    /// Tenants a customer or admin may list, in name order.
    pub fn tenant_list(&self) -> Vec<&Tenant> {
        self.tenants.values().collect()
    }

    pub fn has_role(&self, role: NodeRole) -> bool {
        self.nodes.values().any(|n| n.roles.contains(&role))
    }
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
