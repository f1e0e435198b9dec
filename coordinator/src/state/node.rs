//! The node registry: hosts that run node agents, their roles, labels and capacity; and its
//! commands — registration, joins with one-time tokens, token minting and revocation, revoke,
//! cordon, and node reports (which make tenants ready). Pure, like the rest of `state`.

use super::action::{details, Details, Target};
use super::gateway::{GatewayNode, GatewayTenantStatus, NodeCondition, WgBackend};
use super::names::TenantName;
use super::tenant::{refresh_readiness, TenantStatus};
use super::{At, Cx, DomainError, Handled, Reply, Response, State, Touched};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeRole {
    Gateway,
    Db,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCapacity {
    pub cpus: u32,
    pub memory_bytes: u64,
    /// Disk available for tenant databases.
    pub disk_bytes: u64,
    /// Most tenants this node may host per role.
    pub max_tenants: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub id: u64,
    pub roles: BTreeSet<NodeRole>,
    pub labels: BTreeMap<String, String>,
    pub capacity: NodeCapacity,
    pub address: String,
    pub last_seen_ms: u64,
    /// Cordoned nodes keep their tenants but receive no new ones.
    pub cordoned: bool,
    /// A revoked node's certificate is refused at the handshake; it gets no desired state.
    #[serde(default)]
    pub revoked: bool,
    /// The newest desired-state revision the node reported as applied.
    #[serde(default)]
    pub applied_revision: u64,
    /// The gateway role's public settings (from the join) and what the node reports about it.
    #[serde(default)]
    pub gateway: GatewayNode,
    /// Db role: `host:port` of its realtime ingest (from the join), where the devices of its
    /// tenants publish; `None`: no ingest on this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realtime_address: Option<String>,
    /// Db role: the newest of its PostgreSQL logins recorded (`dblogin`); 0: none yet.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub db_logins_recorded: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Node {
    /// Nodes labelled `dedicated=true` host only tenants created with `--dedicated`.
    pub fn is_dedicated(&self) -> bool {
        self.labels.get("dedicated").map(String::as_str) == Some("true")
    }
}

/// A one-time token that lets a host join as a node with the given roles and labels.
/// Only the SHA-256 of its secret is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    pub id: String,
    pub roles: BTreeSet<NodeRole>,
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub secret_hash: String,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    pub used_at_ms: Option<u64>,
    pub used_by_node: Option<u64>,
    /// Set for a token that lets a new coordinator with this id obtain its certificate.
    #[serde(default)]
    pub coordinator_id: Option<u64>,
    /// Set when an admin revoked the token before it was used; it can no longer be spent.
    #[serde(default)]
    pub revoked_at_ms: Option<u64>,
}

impl JoinToken {
    pub fn redacted(&self) -> Self {
        Self { secret_hash: String::new(), ..self.clone() }
    }
}

/// What one node last reported about one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeTenantStatus {
    pub ready: bool,
    pub reason: Option<String>,
    /// Revision of the desired state the node had applied.
    pub revision: u64,
    /// Disk the tenant's database uses there (db role).
    #[serde(default)]
    pub db_bytes: u64,
    /// Over its quota: writes are blocked on that node.
    #[serde(default)]
    pub quota_exceeded: bool,
    /// Sessions of the tenant's database user there (db role), at the last report.
    #[serde(default)]
    pub connections: u32,
    /// The tenant's gateway interface there (gateway role).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayTenantStatus>,
    /// Realtime events the node stored for the tenant since its agent started (a counter that
    /// restarts at 0; the usage ledger folds its increases).
    #[serde(default)]
    pub events_total: u64,
}

/// A node's report as proposed to the state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub node_id: u64,
    pub applied_revision: u64,
    pub tenants: BTreeMap<String, NodeTenantStatus>,
    pub capacity: Option<NodeCapacity>,
    /// Gateway role: the WireGuard implementation in use.
    #[serde(default)]
    pub wireguard_backend: Option<WgBackend>,
    /// What keeps the node from doing its job (empty: nothing).
    #[serde(default)]
    pub conditions: Vec<NodeCondition>,
}

/// Splits `bqj_{16 hex id}_{64 hex secret}`.
pub fn split_join_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("bqj_")?;
    let (id, secret) = rest.split_once('_')?;
    let valid = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    (valid(id, 16) && valid(secret, 64)).then_some((id, secret))
}

impl State {
    pub(super) fn register_node(&mut self, cx: Cx<'_>, node: &Node) -> Handled {
        let facts = cx.facts.with(details(&[("roles", roles_text(&node.roles)), ("address", node.address.clone())]));
        (self.add_node(cx.at, node, cx.touched), facts)
    }

    fn add_node(&mut self, at: At, node: &Node, touched: &mut Vec<Touched>) -> Response {
        if node.roles.is_empty() {
            return Err(DomainError::Invalid("a node needs at least one role".into()));
        }
        check_gateway_settings(node)?;
        if node.realtime_address.is_some() && !node.roles.contains(&NodeRole::Db) {
            return Err(DomainError::Invalid("a realtime address is for the db role only".into()));
        }
        let mut node = node.clone();
        node.last_seen_ms = at.now;
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
                    t.revision = at.index;
                    t.updated_at_ms = at.now;
                    self.tenants.insert(name.clone(), t);
                    touched.push(Touched::Tenant(name));
                }
            }
        }
        Ok(Reply::Node(Box::new(node)))
    }

    /// A host spends a join token to become a node with (a subset of) the token's roles; its id
    /// is assigned here, once, in order.
    pub(super) fn join_node(&mut self, cx: Cx<'_>, token_id: &str, secret_hash: &str, request: &Node) -> Handled {
        let facts = cx.facts.with(details(&[
            ("roles", roles_text(&request.roles)),
            ("address", request.address.clone()),
            ("token", token_id.to_string()),
        ]));
        let result = self.spend_node_token(cx.at, token_id, secret_hash, request, cx.touched);
        match &result {
            Ok(Reply::Node(n)) => {
                let id = n.id;
                (result, facts.on(Target::Node(id)))
            }
            _ => (result, facts),
        }
    }

    fn spend_node_token(
        &mut self,
        at: At,
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
            || at.now >= token.expires_at_ms
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
        check_gateway_settings(request)?;
        let id = self.next_node_id.max(1);
        self.next_node_id = id + 1;
        touched.push(Touched::Counters);
        let mut labels = token.labels.clone();
        for (k, v) in &request.labels {
            labels.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let gateway = super::gateway::GatewayNode { settings: request.gateway.settings, ..Default::default() };
        let node = Node {
            id,
            labels,
            revoked: false,
            applied_revision: 0,
            cordoned: false,
            gateway,
            db_logins_recorded: 0,
            ..request.clone()
        };
        if let Some(t) = self.join_tokens.get_mut(token_id) {
            t.used_at_ms = Some(at.now);
            t.used_by_node = Some(id);
        }
        touched.push(Touched::JoinToken(token_id.to_string()));
        self.add_node(at, &node, touched)
    }

    /// Mints a join token (for a node, or for the coordinator named in it).
    pub(super) fn create_join_token(&mut self, cx: Cx<'_>, token: &JoinToken) -> Handled {
        let facts = cx.facts.with(details(&[
            ("roles", roles_text(&token.roles)),
            ("expires_at", crate::time::rfc3339(token.expires_at_ms)),
        ]));
        let result = if self.join_tokens.contains_key(&token.id) {
            Err(DomainError::Conflict(format!("join token id {} already exists", token.id)))
        } else if token.roles.is_empty() && token.coordinator_id.is_none() {
            Err(DomainError::Invalid("a join token needs at least one role".into()))
        } else {
            self.join_tokens.insert(token.id.clone(), token.clone());
            cx.touched.push(Touched::JoinToken(token.id.clone()));
            Ok(Reply::Done)
        };
        (result, facts)
    }

    /// Revokes a join token that has not been spent; a used or revoked one is a conflict.
    pub(super) fn revoke_join_token(&mut self, cx: Cx<'_>, id: &str) -> Handled {
        (self.revoke_unspent_token(cx.at.now, id, cx.touched), cx.facts)
    }

    fn revoke_unspent_token(&mut self, now: u64, id: &str, touched: &mut Vec<Touched>) -> Response {
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

    /// A revoked node is cordoned too, and its certificate is refused from now on.
    pub(super) fn revoke_node(&mut self, cx: Cx<'_>, id: u64) -> Handled {
        let result = match self.nodes.get_mut(&id) {
            None => Err(node_not_found(id)),
            Some(n) if n.revoked => Err(DomainError::Conflict(format!("node {id} is already revoked"))),
            Some(n) => {
                n.revoked = true;
                n.cordoned = true;
                cx.touched.push(Touched::Node(id));
                Ok(Reply::Node(Box::new(n.clone())))
            }
        };
        (result, cx.facts)
    }

    pub(super) fn cordon_node(&mut self, cx: Cx<'_>, id: u64, cordoned: bool) -> Handled {
        let result = match self.nodes.get_mut(&id) {
            None => Err(node_not_found(id)),
            Some(n) => {
                n.cordoned = cordoned;
                cx.touched.push(Touched::Node(id));
                Ok(Reply::Node(Box::new(n.clone())))
            }
        };
        (result, cx.facts)
    }

    /// What a node reports: it is alive, what it applied, and each of its tenants' readiness.
    pub(super) fn node_report(&mut self, cx: Cx<'_>, report: &Report) -> Handled {
        let Cx { at, touched, facts } = cx;
        let mut details = Details::new();
        let Some(node) = self.nodes.get_mut(&report.node_id) else {
            return (Err(node_not_found(report.node_id)), facts);
        };
        if node.revoked {
            return (Err(DomainError::Rejected(format!("node {} is revoked", report.node_id))), facts);
        }
        node.last_seen_ms = at.now;
        node.applied_revision = node.applied_revision.max(report.applied_revision);
        if let Some(c) = &report.capacity {
            node.capacity = c.clone();
        }
        if node.gateway.conditions != report.conditions {
            let kinds: Vec<&str> = report.conditions.iter().map(|c| c.kind.as_str()).collect();
            details.insert("conditions".into(), if kinds.is_empty() { "none".into() } else { kinds.join(",") });
        }
        node.gateway.wireguard_backend = report.wireguard_backend;
        node.gateway.conditions = report.conditions.clone();
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
            self.usage.fold_report(&name, report.node_id, at.now, status, touched);
            let before = t.status;
            refresh_readiness(t);
            if t.status != before {
                details.insert(format!("tenant/{name}"), t.status.as_str().to_string());
            }
            touched.push(Touched::Tenant(name));
        }
        (Ok(Reply::Done), facts.with(details))
    }
}

/// A public address and port range only with the gateway role, and a valid range.
fn check_gateway_settings(node: &Node) -> Result<(), DomainError> {
    if let Some(g) = &node.gateway.settings {
        if !node.roles.contains(&NodeRole::Gateway) {
            return Err(DomainError::Invalid("a public address and ports are for the gateway role only".into()));
        }
        if g.public_ports.first == 0 || g.public_ports.first > g.public_ports.last {
            return Err(DomainError::Invalid("public ports must be a range first-last within 1-65535".into()));
        }
    }
    Ok(())
}

fn node_not_found(id: u64) -> DomainError {
    DomainError::NotFound(format!("node {id} not found"))
}

/// Roles as the audit trail and messages name them: `db,gateway`.
pub(super) fn roles_text(roles: &BTreeSet<NodeRole>) -> String {
    roles.iter().map(|r| format!("{r:?}").to_lowercase()).collect::<Vec<_>>().join(",")
}
