//! API keys: `bqk_{id}_{secret}`. Only the SHA-256 of the secret is stored (the secret is 256
//! random bits, so a slow hash adds nothing); lookup is by id, comparison in constant time.
//! Their commands — create, revoke (never the last lasting admin key), break-glass recovery —
//! and the re-check at apply of the key a command acts with.

use super::action::details;
use super::names::TenantName;
use super::{Cx, DomainError, Handled, Reply, Response, State, Touched};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Everything.
    Admin,
    /// Its own tenant only.
    Customer,
    /// Reads the audit trail and cluster status.
    Auditor,
}

/// The stored record of a key. Holds no secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: String,
    pub role: Role,
    pub tenant: Option<TenantName>,
    pub description: String,
    /// Hex SHA-256 of the secret part.
    #[serde(default)]
    pub secret_hash: String,
    pub created_at_ms: u64,
    pub expires_at_ms: Option<u64>,
    pub revoked_at_ms: Option<u64>,
}

impl ApiKey {
    pub fn is_usable(&self, now_ms: u64) -> bool {
        self.revoked_at_ms.is_none() && self.expires_at_ms.is_none_or(|t| now_ms < t)
    }

    /// Constant-time comparison of a presented secret with the stored hash.
    pub fn matches(&self, secret: &str) -> bool {
        let presented = hash_secret(secret);
        presented.as_bytes().ct_eq(self.secret_hash.as_bytes()).into()
    }

    /// A copy for output: the hash stays inside the coordinator.
    pub fn redacted(&self) -> Self {
        Self { secret_hash: String::new(), ..self.clone() }
    }
}

/// Why the key a command acts with was refused at apply; the message is the audit reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum KeyRefused {
    #[error("api key {0} does not exist")]
    Missing(String),
    #[error("api key {id} is a {} key, not the {} key the command claims", role_name(*.actual), role_name(*.claimed))]
    WrongRole { id: String, actual: Role, claimed: Role },
    #[error("api key {0} was revoked before this command was committed")]
    Revoked(String),
    #[error("api key {0} had expired when this command was made")]
    Expired(String),
    #[error("a {} key may not change the cluster or another tenant", role_name(*.0))]
    NotAdmin(Role),
}

/// The check at apply of a command acting with key `actor` and claiming `claimed`: the key must
/// exist, have that role, be unrevoked and unexpired at `now_ms` (the command's own time), and be
/// an admin key, or a customer key of `tenant` when the command is one a customer may give for its
/// own tenant (devices, exposures, firewall rules).
pub fn recheck(
    key: Option<&ApiKey>,
    actor: &str,
    claimed: Role,
    now_ms: u64,
    tenant: Option<&TenantName>,
) -> Result<(), KeyRefused> {
    let key = key.ok_or_else(|| KeyRefused::Missing(actor.to_string()))?;
    if key.role != claimed {
        return Err(KeyRefused::WrongRole { id: actor.to_string(), actual: key.role, claimed });
    }
    if key.revoked_at_ms.is_some() {
        return Err(KeyRefused::Revoked(actor.to_string()));
    }
    if !key.is_usable(now_ms) {
        return Err(KeyRefused::Expired(actor.to_string()));
    }
    match (key.role, tenant) {
        (Role::Admin, _) => Ok(()),
        (Role::Customer, Some(t)) if key.tenant.as_ref() == Some(t) => Ok(()),
        (role, _) => Err(KeyRefused::NotAdmin(role)),
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Admin => "admin",
        Role::Customer => "customer",
        Role::Auditor => "auditor",
    }
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A presented token split into id and secret, if it has the right shape.
pub fn split_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("bqk_")?;
    let (id, secret) = rest.split_once('_')?;
    let valid = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    (valid(id, 16) && valid(secret, 64)).then_some((id, secret))
}

pub fn format_token(id: &str, secret: &str) -> String {
    format!("bqk_{id}_{secret}")
}

impl State {
    pub(super) fn create_api_key(&mut self, cx: Cx<'_>, key: &ApiKey) -> Handled {
        let mut d = details(&[("role", role_name(key.role).to_string())]);
        if let Some(t) = &key.tenant {
            d.insert("tenant".into(), t.to_string());
        }
        (self.add_api_key(key, cx.touched), cx.facts.with(d))
    }

    /// Break-glass: root on coordinator host `host` minted an admin key from the data directory.
    pub(super) fn recover_admin(&mut self, cx: Cx<'_>, key: &ApiKey, host: &str) -> Handled {
        let facts = cx.facts.with(details(&[
            ("role", "admin".to_string()),
            ("host", host.to_string()),
            ("method", "break-glass recovery file in the coordinator's data directory".to_string()),
        ]));
        let result = match (key.role, &key.tenant) {
            (Role::Admin, None) => self.add_api_key(key, cx.touched),
            _ => Err(DomainError::Invalid("a recovered key must be an admin key without a tenant".into())),
        };
        (result, facts)
    }

    fn add_api_key(&mut self, key: &ApiKey, touched: &mut Vec<Touched>) -> Response {
        if self.api_keys.contains_key(&key.id) {
            return Err(DomainError::Conflict(format!("api key id {} already exists", key.id)));
        }
        match (key.role, &key.tenant) {
            (Role::Customer, None) => {
                return Err(DomainError::Invalid("a customer key must name its tenant".into()));
            }
            (Role::Customer, Some(t)) if !self.tenants.contains_key(t) => return Err(super::tenant::not_found(t)),
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
    pub(super) fn revoke_api_key(&mut self, cx: Cx<'_>, id: &str) -> Handled {
        (self.revoke_key(cx.at.now, id, cx.touched), cx.facts)
    }

    fn revoke_key(&mut self, now: u64, id: &str, touched: &mut Vec<Touched>) -> Response {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trip_and_match() {
        let id = "0123456789abcdef";
        let secret = "ab".repeat(32);
        let token = format_token(id, &secret);
        assert_eq!(split_token(&token), Some((id, secret.as_str())));
        let key = ApiKey {
            id: id.into(),
            role: Role::Admin,
            tenant: None,
            description: String::new(),
            secret_hash: hash_secret(&secret),
            created_at_ms: 0,
            expires_at_ms: Some(10),
            revoked_at_ms: None,
        };
        assert!(key.matches(&secret));
        assert!(!key.matches(&"cd".repeat(32)));
        assert!(key.is_usable(5));
        assert!(!key.is_usable(10));
        assert!(key.redacted().secret_hash.is_empty());
    }

    #[test]
    fn recheck_refuses_missing_revoked_expired_and_non_admin_keys() {
        let admin = ApiKey { expires_at_ms: Some(100), ..crate::state::tests_support::admin_key("00000000000000aa") };
        assert_eq!(recheck(Some(&admin), &admin.id, Role::Admin, 50, None), Ok(()));
        let reason = |r: Result<(), KeyRefused>| r.map_err(|e| e.to_string());
        assert_eq!(
            reason(recheck(None, "00000000000000bb", Role::Admin, 50, None)),
            Err("api key 00000000000000bb does not exist".into())
        );
        assert_eq!(
            reason(recheck(Some(&admin), &admin.id, Role::Admin, 100, None)),
            Err("api key 00000000000000aa had expired when this command was made".into())
        );
        assert_eq!(
            reason(recheck(Some(&admin), &admin.id, Role::Auditor, 50, None)),
            Err("api key 00000000000000aa is a admin key, not the auditor key the command claims".into())
        );
        let revoked = ApiKey { revoked_at_ms: Some(60), ..admin.clone() };
        // Revoked is positional (earlier in the log), whatever the command's own timestamp says.
        assert_eq!(
            recheck(Some(&revoked), &admin.id, Role::Admin, 10, None),
            Err(KeyRefused::Revoked(admin.id.clone()))
        );
        let auditor = ApiKey { role: Role::Auditor, ..admin };
        assert_eq!(
            reason(recheck(Some(&auditor), &auditor.id, Role::Auditor, 50, None)),
            Err("a auditor key may not change the cluster or another tenant".into())
        );
    }

    #[test]
    fn malformed_tokens_are_refused() {
        assert_eq!(split_token("nope"), None);
        assert_eq!(split_token("bqk_short_abc"), None);
        assert_eq!(split_token(&format!("bqk_0123456789abcdef_{}", "z".repeat(64))), None);
    }
}
