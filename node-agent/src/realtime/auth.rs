//! Who may publish and who may subscribe, decided from the assignment alone. Pure: the
//! identity comes from a verified certificate (devices) or a presented key (subscribers); the
//! tenants from the coordinator's desired state.

use crate::assignment::{DbTenant, DbType, PublicDevice, SubscriberKey, Tenant};
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
    /// The tenant allows publishing from outside the VPN (public mode).
    pub public_api: bool,
    /// Devices enrolled in public mode, by id: what their publishes must match.
    pub public: BTreeMap<String, PublicDevice>,
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
                public_api: t.db.public_api,
                public: t.db.public_devices.iter().map(|d| (d.id.clone(), d.clone())).collect(),
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
    #[error("this tenant does not allow publishing from outside the VPN (public_api is off)")]
    PublicOff,
    #[error("a public-mode device must present one of its tenant's customer keys: Authorization: Bearer bqk_…")]
    PublicKey,
    #[error("the device's fingerprint is missing or does not match its enrollment")]
    Fingerprint,
}

/// What a publisher presents besides its certificate: the `authorization` and
/// `x-berqenas-fingerprint` header (HTTP) or metadata (gRPC) values, as sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct Presented<'a> {
    pub authorization: Option<&'a str>,
    pub fingerprint: Option<&'a str>,
}

/// The header (HTTP) and metadata key (gRPC) of a device's live fingerprint.
pub const FINGERPRINT_HEADER: &str = "x-berqenas-fingerprint";
/// Most MAC hashes a presented fingerprint may carry.
const MAX_MACS: usize = 64;

/// A fingerprint as presented: `machine-id=HEX; macs=HEX,HEX` (SHA-256 hex; either part may be
/// empty). None when malformed.
pub fn parse_fingerprint(v: &str) -> Option<(String, BTreeSet<String>)> {
    let hex64 = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let (mut machine, mut macs) = (None, None);
    for part in v.split(';') {
        let (k, val) = part.trim().split_once('=')?;
        match k.trim() {
            "machine-id" if machine.is_none() => {
                let m = val.trim();
                (m.is_empty() || hex64(m)).then_some(())?;
                machine = Some(m.to_ascii_lowercase());
            }
            "macs" if macs.is_none() => {
                let list: Vec<&str> = val.split(',').map(str::trim).filter(|m| !m.is_empty()).collect();
                (list.len() <= MAX_MACS && list.iter().all(|m| hex64(m))).then_some(())?;
                macs = Some(list.iter().map(|m| m.to_ascii_lowercase()).collect());
            }
            _ => return None,
        }
    }
    Some((machine?, macs?))
}

/// A live fingerprint matches the enrolled one when the machine id hash is the same (if one was
/// enrolled) and at least one enrolled MAC hash is among the live ones (if any were enrolled):
/// an interface added or removed (a USB adapter, a container bridge) keeps the device, another
/// machine does not. An enrolled fingerprint with neither matches nothing.
pub fn fingerprint_matches(enrolled: &PublicDevice, live_machine: &str, live_macs: &BTreeSet<String>) -> bool {
    if enrolled.machine_id_hash.is_empty() && enrolled.mac_hashes.is_empty() {
        return false;
    }
    let machine_ok = enrolled.machine_id_hash.is_empty()
        || bool::from(enrolled.machine_id_hash.as_bytes().ct_eq(live_machine.as_bytes()));
    let macs_ok = enrolled.mac_hashes.is_empty() || enrolled.mac_hashes.iter().any(|m| live_macs.contains(m));
    machine_ok && macs_ok
}

/// A device may publish what it presents: `device` holds, and when it was enrolled in public
/// mode its tenant has `public_api`, it presents one of the tenant's customer keys (valid at
/// `now_ms`) and a live fingerprint matching its enrollment. A device enrolled for the VPN
/// needs its certificate only.
pub fn publisher<'a>(
    tenants: &'a Tenants,
    tenant: &str,
    id: &str,
    presented: Presented<'_>,
    now_ms: u64,
) -> Result<&'a RtTenant, Refused> {
    let t = device(tenants, tenant, id)?;
    let Some(enrolled) = t.public.get(id) else { return Ok(t) };
    if !t.public_api {
        return Err(Refused::PublicOff);
    }
    subscriber(tenants, tenant, presented.authorization, now_ms).map_err(|_| Refused::PublicKey)?;
    let (machine, macs) = presented.fingerprint.and_then(parse_fingerprint).ok_or(Refused::Fingerprint)?;
    if !fingerprint_matches(enrolled, &machine, &macs) {
        return Err(Refused::Fingerprint);
    }
    Ok(t)
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

    const M: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn public_world(public_api: bool) -> Tenants {
        let mut a = crate::assignment::fixture("acme");
        a.db.public_api = public_api;
        a.db.devices = vec!["plc-1".into(), "edge-1".into()];
        a.db.public_devices =
            vec![PublicDevice { id: "edge-1".into(), mac_hashes: vec![A.into()], machine_id_hash: M.into() }];
        a.db.subscriber_keys = vec![SubscriberKey {
            id: "aaaaaaaaaaaaaaaa".into(),
            secret_hash: hex::encode(Sha256::digest(SECRET)),
            expires_at_ms: 0,
        }];
        tenants(&[a])
    }

    #[test]
    fn a_public_device_needs_the_tenants_key_and_its_enrolled_fingerprint() {
        let w = public_world(true);
        let key = format!("Bearer bqk_aaaaaaaaaaaaaaaa_{SECRET}");
        let live = format!("machine-id={M}; macs={B},{A}");
        fn p<'a>(authorization: Option<&'a str>, fingerprint: Option<&'a str>) -> Presented<'a> {
            Presented { authorization, fingerprint }
        }
        let (key, live) = (key.as_str(), live.as_str());
        assert!(publisher(&w, "acme", "edge-1", p(Some(key), Some(live)), 1).is_ok());
        assert!(publisher(&w, "acme", "plc-1", p(None, None), 1).is_ok(), "a VPN device needs its certificate only");
        assert_eq!(publisher(&w, "acme", "edge-1", p(None, Some(live)), 1), Err(Refused::PublicKey));
        let wrong_key = format!("Bearer bqk_aaaaaaaaaaaaaaaa_{}", SECRET.replace('0', "1"));
        assert_eq!(publisher(&w, "acme", "edge-1", p(Some(&wrong_key), Some(live)), 1), Err(Refused::PublicKey));
        assert_eq!(publisher(&w, "acme", "edge-1", p(Some(key), None), 1), Err(Refused::Fingerprint));
        let other_machine = format!("machine-id={B}; macs={A}");
        assert_eq!(publisher(&w, "acme", "edge-1", p(Some(key), Some(&other_machine)), 1), Err(Refused::Fingerprint));
        let other_nic = format!("machine-id={M}; macs={B}");
        assert_eq!(publisher(&w, "acme", "edge-1", p(Some(key), Some(&other_nic)), 1), Err(Refused::Fingerprint));
        assert_eq!(publisher(&w, "acme", "edge-1", p(Some(key), Some("garbage")), 1), Err(Refused::Fingerprint));
        let off = public_world(false);
        assert_eq!(publisher(&off, "acme", "edge-1", p(Some(key), Some(live)), 1), Err(Refused::PublicOff));
    }

    #[test]
    fn fingerprints_parse_strictly() {
        assert_eq!(parse_fingerprint(&format!("machine-id=; macs={A}")).map(|f| f.1.len()), Some(1));
        assert!(parse_fingerprint(&format!("machine-id={M}; macs=")).is_some());
        assert!(parse_fingerprint(&format!("macs={A}")).is_none(), "both parts named");
        assert!(parse_fingerprint(&format!("machine-id={M}; macs={A}; x=1")).is_none());
        assert!(parse_fingerprint(&format!("machine-id={M}; macs=zz")).is_none());
        assert!(parse_fingerprint(&format!("machine-id={M}; machine-id={M}; macs={A}")).is_none());
        let many = vec![A; MAX_MACS + 1].join(",");
        assert!(parse_fingerprint(&format!("machine-id={M}; macs={many}")).is_none());
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
