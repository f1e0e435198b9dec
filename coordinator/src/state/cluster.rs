//! The cluster itself: settings fixed at `init`, and its commands — bootstrap, recording Raft
//! membership changes (removed coordinator ids are retired forever), and a new coordinator
//! spending its id-bound join token. Pure, like the rest of `state`.

use super::action::{details, Action, Details};
use super::allocation::VpnPool;
use super::apikey::ApiKey;
use super::{Cx, DomainError, Handled, Reply, State, Touched};
use serde::{Deserialize, Serialize};

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

impl State {
    /// `init`: the settings and the first admin key, once.
    pub(super) fn bootstrap(&mut self, cx: Cx<'_>, settings: &ClusterSettings, admin_key: &ApiKey) -> Handled {
        let facts = cx.facts.with(details(&[
            ("cluster_id", settings.cluster_id.clone()),
            ("vpn_pool", settings.vpn_pool.to_string()),
            ("admin_key", admin_key.id.clone()),
        ]));
        if self.settings.is_some() {
            return (Err(DomainError::Conflict("the cluster is already initialized".into())), facts);
        }
        self.settings = Some(settings.clone());
        self.api_keys.insert(admin_key.id.clone(), admin_key.clone());
        cx.touched.push(Touched::Settings);
        cx.touched.push(Touched::ApiKey(admin_key.id.clone()));
        (Ok(Reply::Done), facts)
    }

    /// A Raft membership change openraft carried out, for the record; a removed coordinator's
    /// id is never accepted again.
    pub(super) fn membership(&mut self, cx: Cx<'_>, action: Action, node_id: u64, details: &Details) -> Handled {
        if action == Action::ClusterRemove {
            self.retired_coordinators.insert(node_id);
            cx.touched.push(Touched::Retired);
        }
        (Ok(Reply::Done), cx.facts.with(details.clone()))
    }

    /// A new coordinator spends its id-bound token to obtain a certificate.
    pub(super) fn join_coordinator(&mut self, cx: Cx<'_>, token_id: &str, secret_hash: &str, id: u64) -> Handled {
        let facts = cx.facts.with(details(&[("token", token_id.to_string())]));
        (self.spend_coordinator_token(cx.at.now, token_id, secret_hash, id, cx.touched), facts)
    }

    fn spend_coordinator_token(
        &mut self,
        now: u64,
        token_id: &str,
        secret_hash: &str,
        id: u64,
        touched: &mut Vec<Touched>,
    ) -> super::Response {
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
}
