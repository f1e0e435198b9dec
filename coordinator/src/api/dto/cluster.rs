//! Cluster membership on the wire: the status a coordinator reports, the learner and voter bodies,
//! and coordinator join tokens (created with an id, listed without their secret).

use crate::state::node::JoinToken;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Member {
    pub id: u64,
    pub raft_addr: String,
    pub api_addr: String,
    pub voter: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClusterStatus {
    /// The coordinator that answered.
    pub node_id: u64,
    /// Its Raft state: `Leader`, `Follower`, `Candidate` or `Learner`.
    pub state: String,
    pub leader_id: Option<u64>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    /// Last log index covered by this node's current snapshot.
    pub snapshot_index: Option<u64>,
    /// Log entries up to here are purged from this node's log.
    pub purged_index: Option<u64>,
    pub members: Vec<Member>,
    pub cluster_id: Option<String>,
    pub vpn_pool: Option<String>,
    pub ca_fingerprint: Option<String>,
    pub tenants: usize,
    pub audit_entries: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddLearnerBody {
    #[schema(minimum = 1)]
    pub id: u64,
    /// host:port of the new coordinator's Raft listener.
    pub raft_addr: String,
    /// host:port of its REST API.
    pub api_addr: String,
    /// host:port of its node-agent listener.
    #[serde(default)]
    pub node_addr: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteBody {
    #[schema(minimum = 1)]
    pub id: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCoordinatorTokenBody {
    /// The id the new coordinator will have (never a current or removed member's).
    #[schema(minimum = 1)]
    pub id: u64,
    /// Default `1h`; between 1s and 7d.
    #[serde(default)]
    #[schema(example = "1h")]
    pub ttl: Option<String>,
}

/// Where a coordinator join token is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TokenStatus {
    Unused,
    Used,
    Revoked,
    Expired,
}

/// A coordinator join token as listed: ids and times only, never the secret or its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CoordinatorToken {
    #[schema(pattern = "^[0-9a-f]{16}$")]
    pub id: String,
    /// The id the coordinator joining with it gets.
    pub coordinator_id: u64,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    #[schema(example = json!(null))]
    pub used_at_ms: Option<u64>,
    pub revoked_at_ms: Option<u64>,
    pub status: TokenStatus,
}

impl CoordinatorToken {
    /// The listing of `token` at `now_ms`, if it is a coordinator token.
    pub fn of(token: &JoinToken, now_ms: u64) -> Option<Self> {
        let coordinator_id = token.coordinator_id?;
        let status = match (token.used_at_ms, token.revoked_at_ms) {
            (Some(_), _) => TokenStatus::Used,
            (None, Some(_)) => TokenStatus::Revoked,
            (None, None) if now_ms >= token.expires_at_ms => TokenStatus::Expired,
            (None, None) => TokenStatus::Unused,
        };
        Some(Self {
            id: token.id.clone(),
            coordinator_id,
            created_at_ms: token.created_at_ms,
            expires_at_ms: token.expires_at_ms,
            used_at_ms: token.used_at_ms,
            revoked_at_ms: token.revoked_at_ms,
            status,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(coordinator_id: Option<u64>) -> JoinToken {
        JoinToken {
            id: "00000000000000cc".into(),
            roles: Default::default(),
            labels: Default::default(),
            secret_hash: "hash".into(),
            created_at_ms: 1,
            expires_at_ms: 100,
            used_at_ms: None,
            used_by_node: None,
            coordinator_id,
            revoked_at_ms: None,
        }
    }

    #[test]
    fn listing_shows_status_and_never_the_hash() {
        assert_eq!(CoordinatorToken::of(&token(None), 0), None, "node tokens are not coordinator tokens");
        let unused = CoordinatorToken::of(&token(Some(4)), 50).expect("coordinator token");
        assert_eq!((unused.coordinator_id, unused.status), (4, TokenStatus::Unused));
        assert!(!serde_json::to_string(&unused).expect("json").contains("hash"));
        assert_eq!(CoordinatorToken::of(&token(Some(4)), 100).map(|t| t.status), Some(TokenStatus::Expired));
        let revoked = JoinToken { revoked_at_ms: Some(5), ..token(Some(4)) };
        assert_eq!(CoordinatorToken::of(&revoked, 50).map(|t| t.status), Some(TokenStatus::Revoked));
        let used = JoinToken { used_at_ms: Some(6), ..token(Some(4)) };
        assert_eq!(CoordinatorToken::of(&used, 500).map(|t| t.status), Some(TokenStatus::Used));
    }
}
