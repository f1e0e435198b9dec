//! Who may publish and who may subscribe, decided from the assignment alone. Pure: the
//! identity comes from a verified certificate (devices) or a presented key (subscribers); the
//! tenants from the coordinator's desired state.

use crate::assignment::{DbTenant, DbType, SubscriberKey, Tenant};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use subtle::ConstantTimeEq;

/// What the realtime role knows of one tenant this node has the db role for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtTenant {
    pub name: String,
    /// Lifecycle `run`: devices may publish and subscribers read.
    pub runs: bool,
    pub own_database: bool,
    pub events_per_min: u32,
    pub devices: BTreeSet<String>,
    pub keys: Vec<SubscriberKey>,
}

/// The realtime view of every PostgreSQL tenant of the db role, by name. Suspended and deleted
/// tenants stay (their data does, and a restore resumes their feed); a tenant leaves when it is
/// no longer assigned here (purged or moved).
pub type Tenants = BTreeMap<String, RtTenant>;

pub fn tenants(db: &[DbTenant]) -> Tenants {
    db.iter()
        .filter(|t| t.db.db_type == DbType::Postgres)
        .map(|t| {
            let rt = RtTenant {
                name: t.name.clone(),
                runs: t.runs(),
                own_database: crate::db::own_database(t),
                events_per_min: t.db.events_per_min,
                devices: t.db.devices.iter().cloned().collect(),
                keys: t.db.subscriber_keys.clone(),
            };
            (t.name.clone(), rt)
        })
        .collect()
}

/// Why a caller was refused. The messages say what to fix, never whether another tenant exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("a device certificate is required")]
    NoDevice,
    #[error("this device may not publish here")]
    Device,
    #[error("a customer key is required: Authorization: Bearer bqk_…")]
    NoKey,
    #[error("this key may not read this tenant's events")]
    Key,
}

/// A device (tenant and id from its certificate) may publish when its tenant is assigned here,
/// runs, and lists it among its devices.
pub fn device<'a>(tenants: &'a Tenants, tenant: &str, id: &str) -> Result<&'a RtTenant, Refused> {
    match tenants.get(tenant) {
        Some(t) if t.runs && t.devices.contains(id) => Ok(t),
        _ => Err(Refused::Device),
    }
}

/// A subscriber presenting `authorization` (the whole header value) may read `tenant` when the
/// key is one of that tenant's customer keys, not expired at `now_ms` (Unix milliseconds): id
/// looked up, SHA-256 of the secret compared in constant time.
pub fn subscriber<'a>(
    tenants: &'a Tenants,
    tenant: &str,
    authorization: Option<&str>,
    now_ms: u64,
) -> Result<&'a RtTenant, Refused> {
    let token = authorization.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim).ok_or(Refused::NoKey)?;
    let (id, secret) = split_token(token).ok_or(Refused::NoKey)?;
    let t = tenants.get(tenant).filter(|t| t.runs).ok_or(Refused::Key)?;
    let hash = hex::encode(Sha256::digest(secret.as_bytes()));
    let ok = t
        .keys
        .iter()
        .filter(|k| k.expires_at_ms == 0 || now_ms < k.expires_at_ms)
        .any(|k| k.id.eq_ignore_ascii_case(id) && bool::from(k.secret_hash.as_bytes().ct_eq(hash.as_bytes())));
    if ok {
        Ok(t)
    } else {
        Err(Refused::Key)
    }
}

/// `bqk_{16 hex id}_{64 hex secret}` split, as the coordinator formats keys.
fn split_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("bqk_")?;
    let (id, secret) = rest.split_once('_')?;
    let valid = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    (valid(id, 16) && valid(secret, 64)).then_some((id, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn world() -> Tenants {
        let mut a = crate::assignment::fixture("acme");
        a.db.devices = vec!["plc-1".into()];
        a.db.subscriber_keys = vec![SubscriberKey {
            id: "aaaaaaaaaaaaaaaa".into(),
            secret_hash: hex::encode(Sha256::digest(SECRET)),
            expires_at_ms: 2_000,
        }];
        let mut b = crate::assignment::fixture("globex");
        b.db.devices = vec!["plc-1".into()];
        let mut c = crate::assignment::fixture("initech");
        c.lifecycle = crate::assignment::Lifecycle::Suspended;
        c.db.devices = vec!["plc-9".into()];
        tenants(&[a, b, c])
    }

    #[test]
    fn a_device_publishes_only_into_its_own_running_tenant_when_listed() {
        let w = world();
        assert_eq!(device(&w, "acme", "plc-1").map(|t| t.name.as_str()), Ok("acme"));
        assert_eq!(device(&w, "acme", "plc-2"), Err(Refused::Device), "not in the assignment");
        assert_eq!(device(&w, "initech", "plc-9"), Err(Refused::Device), "suspended tenant");
        assert_eq!(device(&w, "umbrella", "plc-1"), Err(Refused::Device), "not on this node");
    }

    #[test]
    fn a_subscriber_reads_only_with_its_tenants_key() {
        let w = world();
        let good = format!("Bearer bqk_aaaaaaaaaaaaaaaa_{SECRET}");
        assert!(subscriber(&w, "acme", Some(&good), 1_000).is_ok());
        assert_eq!(subscriber(&w, "acme", Some(&good), 2_000), Err(Refused::Key), "expired key");
        assert_eq!(subscriber(&w, "globex", Some(&good), 1_000), Err(Refused::Key), "acme's key on globex");
        let wrong = format!("Bearer bqk_aaaaaaaaaaaaaaaa_{}", SECRET.replace('0', "1"));
        assert_eq!(subscriber(&w, "acme", Some(&wrong), 1_000), Err(Refused::Key));
        assert_eq!(subscriber(&w, "acme", None, 1_000), Err(Refused::NoKey));
        assert_eq!(subscriber(&w, "acme", Some("Bearer nonsense"), 1_000), Err(Refused::NoKey));
        assert_eq!(
            subscriber(&w, "acme", Some(&format!("Basic bqk_aaaaaaaaaaaaaaaa_{SECRET}")), 1_000),
            Err(Refused::NoKey)
        );
    }
}
