//! API keys: `bqk_{id}_{secret}`. Only the SHA-256 of the secret is stored (the secret is 256
//! random bits, so a slow hash adds nothing); lookup is by id, comparison in constant time.

use super::names::TenantName;
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

/// The check at apply of a command acting with key `actor` and claiming `claimed`: the key must
/// exist, have that role, be unrevoked and unexpired at `now_ms` (the command's own time), and be
/// an admin key (every key-authorised write is admin-only). The reason is the audit text.
pub fn recheck(key: Option<&ApiKey>, actor: &str, claimed: Role, now_ms: u64) -> Result<(), String> {
    let key = key.ok_or_else(|| format!("api key {actor} does not exist"))?;
    if key.role != claimed {
        return Err(format!(
            "api key {actor} is a {} key, not the {} key the command claims",
            role_name(key.role),
            role_name(claimed)
        ));
    }
    if key.revoked_at_ms.is_some() {
        return Err(format!("api key {actor} was revoked before this command was committed"));
    }
    if !key.is_usable(now_ms) {
        return Err(format!("api key {actor} had expired when this command was made"));
    }
    if key.role != Role::Admin {
        return Err(format!("a {} key may not change the cluster", role_name(key.role)));
    }
    Ok(())
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
        let admin = ApiKey {
            id: "00000000000000aa".into(),
            role: Role::Admin,
            tenant: None,
            description: String::new(),
            secret_hash: String::new(),
            created_at_ms: 0,
            expires_at_ms: Some(100),
            revoked_at_ms: None,
        };
        assert_eq!(recheck(Some(&admin), &admin.id, Role::Admin, 50), Ok(()));
        assert!(recheck(None, "00000000000000bb", Role::Admin, 50).is_err_and(|r| r.contains("does not exist")));
        assert!(recheck(Some(&admin), &admin.id, Role::Admin, 100).is_err_and(|r| r.contains("expired")));
        assert!(recheck(Some(&admin), &admin.id, Role::Auditor, 50).is_err_and(|r| r.contains("not the auditor key")));
        let revoked = ApiKey { revoked_at_ms: Some(60), ..admin.clone() };
        // Revoked is positional (earlier in the log), whatever the command's own timestamp says.
        assert!(recheck(Some(&revoked), &admin.id, Role::Admin, 10).is_err_and(|r| r.contains("revoked")));
        let auditor = ApiKey { role: Role::Auditor, ..admin };
        assert!(recheck(Some(&auditor), &auditor.id, Role::Auditor, 50).is_err_and(|r| r.contains("may not")));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        assert_eq!(split_token("nope"), None);
        assert_eq!(split_token("bqk_short_abc"), None);
        assert_eq!(split_token(&format!("bqk_0123456789abcdef_{}", "z".repeat(64))), None);
    }
}
