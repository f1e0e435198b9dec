//! The node registry: hosts that run node agents, their roles, labels and capacity.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum NodeRole {
    Gateway,
    Db,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeCapacity {
    pub cpus: u32,
    pub memory_bytes: u64,
    /// Disk available for tenant databases.
    pub disk_bytes: u64,
    /// Most tenants this node may host per role.
    pub max_tenants: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Node {
    pub id: u64,
    pub roles: BTreeSet<NodeRole>,
    pub labels: BTreeMap<String, String>,
    pub capacity: NodeCapacity,
    pub address: String,
    pub last_seen_ms: u64,
    /// Cordoned nodes keep their tenants but receive no new ones.
    pub cordoned: bool,
}

impl Node {
    /// Nodes labelled `dedicated=true` host only tenants created with `--dedicated`.
    pub fn is_dedicated(&self) -> bool {
        self.labels.get("dedicated").map(String::as_str) == Some("true")
    }
}
