//! Nodes on the wire: the node as listed, its actions, and the one-time join tokens (for node
//! agents and for new coordinators) as created and as shown afterwards.

use super::{project, wire_enum};
use crate::state::node::{JoinToken, Node, NodeCapacity, NodeRole};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use utoipa::ToSchema;

wire_enum!(NodeRole, "What a node hosts: tenant gateways or tenant databases.", [NodeRole::Gateway, NodeRole::Db]);

/// A node as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeView {
    pub id: u64,
    #[schema(min_items = 1)]
    pub roles: BTreeSet<NodeRole>,
    #[schema(example = json!({"region": "ist"}))]
    pub labels: BTreeMap<String, String>,
    pub capacity: NodeCapacityView,
    #[schema(example = "10.0.0.5")]
    pub address: String,
    /// When the node last reported (0: never).
    pub last_seen_ms: u64,
    /// Cordoned nodes keep their tenants but receive no new ones.
    #[schema(example = false)]
    pub cordoned: bool,
    /// A revoked node's certificate is refused at the handshake; it gets no desired state.
    pub revoked: bool,
    /// The newest desired-state revision the node reported as applied.
    pub applied_revision: u64,
    /// The gateway role: public address and ports, WireGuard backend, conditions.
    pub gateway: super::GatewayNodeView,
    /// The db role: `host:port` of its realtime ingest; `null`: none.
    #[schema(example = "192.0.2.10:7401")]
    pub realtime_address: Option<String>,
}

impl From<&Node> for NodeView {
    fn from(n: &Node) -> Self {
        project!(n.clone() => Node => NodeView {
            id, roles, labels, capacity, address, last_seen_ms, cordoned, revoked, applied_revision, gateway,
            realtime_address
        } hidden { db_logins_recorded })
    }
}

/// What a node offers its tenants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeCapacityView {
    pub cpus: u32,
    pub memory_bytes: u64,
    /// Disk available for tenant databases.
    pub disk_bytes: u64,
    /// Most tenants this node may host per role.
    #[schema(minimum = 1)]
    pub max_tenants: u32,
}

impl From<NodeCapacity> for NodeCapacityView {
    fn from(c: NodeCapacity) -> Self {
        project!(c => NodeCapacity => NodeCapacityView { cpus, memory_bytes, disk_bytes, max_tenants })
    }
}

/// What `POST /api/v1/nodes/{id}/{action}` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum NodeAction {
    Revoke,
    Cordon,
    Uncordon,
}

impl NodeAction {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeAction::Revoke => "revoke",
            NodeAction::Cordon => "cordon",
            NodeAction::Uncordon => "uncordon",
        }
    }
}

/// A join token for node agents.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJoinTokenBody {
    /// `gateway`, `db` or both.
    #[schema(min_items = 1)]
    pub roles: Vec<NodeRole>,
    /// How long the token can be used, e.g. `1h` (default); between 1s and 7d.
    #[serde(default)]
    #[schema(example = "1h")]
    pub ttl: Option<String>,
    /// Labels the node gets (at most 16).
    #[serde(default)]
    #[schema(schema_with = super::optional_labels)]
    pub labels: Option<BTreeMap<String, String>>,
}

/// A join token as shown: ids, roles and times, never its secret or the secret's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JoinTokenView {
    #[schema(pattern = "^[0-9a-f]{16}$")]
    pub id: String,
    pub roles: BTreeSet<NodeRole>,
    #[schema(example = json!({"region": "ist"}))]
    pub labels: BTreeMap<String, String>,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    #[schema(example = json!(null))]
    pub used_at_ms: Option<u64>,
    pub used_by_node: Option<u64>,
    /// Set for a token that lets a new coordinator with this id obtain its certificate.
    pub coordinator_id: Option<u64>,
    /// Set when an admin revoked the token before it was used.
    pub revoked_at_ms: Option<u64>,
}

impl From<&JoinToken> for JoinTokenView {
    fn from(t: &JoinToken) -> Self {
        project!(t.clone() => JoinToken => JoinTokenView {
            id, roles, labels, created_at_ms, expires_at_ms, used_at_ms, used_by_node, coordinator_id, revoked_at_ms
        } hidden { secret_hash })
    }
}

/// A new join token: `token` is shown this once; `ca_fingerprint` is what the agent pins.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedJoinToken {
    pub token: String,
    pub ca_fingerprint: String,
    pub join_token: JoinTokenView,
}
