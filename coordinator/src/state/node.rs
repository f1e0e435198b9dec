//! The node registry: hosts that run node agents, their roles, labels and capacity.

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
}

/// A node's report as proposed to the state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub node_id: u64,
    pub applied_revision: u64,
    pub tenants: BTreeMap<String, NodeTenantStatus>,
    pub capacity: Option<NodeCapacity>,
}

/// Splits `bqj_{16 hex id}_{64 hex secret}`.
pub fn split_join_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("bqj_")?;
    let (id, secret) = rest.split_once('_')?;
    let valid = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    (valid(id, 16) && valid(secret, 64)).then_some((id, secret))
}
