//! Device enrollment tokens (`bqd_{id}_{secret}`): minted for one tenant with a use limit, an
//! expiry, labels for the devices they enroll, an optional offline timeout (ephemeral devices)
//! and manual approval. Only the SHA-256 of the secret is kept; it is compared in constant time.
//! Their commands — create, revoke (devices enrolled with it stay), and enroll: a device spends
//! one use, gets the next free address of the tenant's /24 and the token's labels. Pure.

use super::action::{details, Target};
use super::device::{DeviceName, NewDevice};
use super::gateway::WgKey;
use super::names::TenantName;
use super::presence::Fingerprint;
use super::{Cx, DomainError, Handled, Reply, Response, State, Touched};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Shortest offline time after which an ephemeral device may be removed: four heartbeats of the
/// fastest cadence a device is asked for (`presence::heartbeat_ms`, `presence::seen_refresh_ms`
/// keep a live one's last-seen within about half of it).
pub const MIN_EPHEMERAL_MS: u64 = 60_000;
/// Most labels a token carries to its devices.
pub const MAX_DEVICE_LABELS: usize = 16;

/// Device labels (a token's, or a firewall rule's selector): at most `MAX_DEVICE_LABELS`
/// pairs, each key and value a label part.
pub fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), String> {
    if labels.len() > MAX_DEVICE_LABELS {
        return Err(format!("at most {MAX_DEVICE_LABELS} device labels"));
    }
    for (k, v) in labels {
        super::names::validate_label_part(k)
            .and_then(|()| super::names::validate_label_part(v))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A device token as stored: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceToken {
    /// 16 hex digits; the token's visible prefix (`bqd_{id}_…`).
    pub id: String,
    pub tenant: TenantName,
    /// The name the (first) device enrolled with it gets; later ones get `{name}-{n}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<DeviceName>,
    /// Hex SHA-256 of the secret part.
    pub secret_hash: String,
    pub labels: BTreeMap<String, String>,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    /// How many enrollments it allows; `None`: unlimited (until it expires or is revoked).
    pub max_uses: Option<u32>,
    pub uses: u32,
    /// Devices enrolled with it are removed after this long without a heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral_ms: Option<u64>,
    /// Devices enrolled with it stay pending until `device approve`.
    #[serde(default)]
    pub approve_manual: bool,
    /// Devices enrolled with it publish from outside the VPN (public mode): each publish needs a
    /// customer key of the tenant and a fingerprint matching the enrollment's. Only for tenants
    /// with `public_api`.
    #[serde(default)]
    pub public: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at_ms: Option<u64>,
}

impl DeviceToken {
    /// Whether it can still enroll a device at `now`.
    pub fn spendable(&self, now: u64) -> bool {
        self.revoked_at_ms.is_none() && now < self.expires_at_ms && self.max_uses.is_none_or(|m| self.uses < m)
    }
}

/// Splits `bqd_{16 hex id}_{64 hex secret}`.
pub fn split_device_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("bqd_")?;
    let (id, secret) = rest.split_once('_')?;
    let valid = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    (valid(id, 16) && valid(secret, 64)).then_some((id, secret))
}

/// A device presenting token `token_id` (whose secret hashes to `secret_hash`) asks to enroll
/// in `tenant` (as the edge found it on the token; re-checked here) with its WireGuard key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    pub token_id: String,
    pub secret_hash: String,
    pub tenant: TenantName,
    /// The name the device asked for (used when the token names none).
    pub name: Option<DeviceName>,
    pub public_key: WgKey,
    pub fingerprint: Fingerprint,
}

/// The one refusal of a token that cannot be spent, whatever the cause (a holder of a guessed id
/// learns nothing); the cause is in the audit entry's details.
pub const TOKEN_REFUSED: &str = "device token is invalid, expired, revoked or used up";

impl State {
    /// A tenant's device tokens, newest first.
    pub fn device_tokens_of(&self, tenant: &TenantName) -> Vec<&DeviceToken> {
        let mut out: Vec<&DeviceToken> = self.device_tokens.values().filter(|t| &t.tenant == tenant).collect();
        out.sort_by(|a, b| b.created_at_ms.cmp(&a.created_at_ms).then_with(|| a.id.cmp(&b.id)));
        out
    }

    pub(super) fn create_device_token(&mut self, cx: Cx<'_>, token: &DeviceToken) -> Handled {
        let facts = cx.facts.with(details(&[
            ("uses", token.max_uses.map_or_else(|| "unlimited".into(), |m| m.to_string())),
            ("expires_at", crate::time::rfc3339(token.expires_at_ms)),
            ("approve", if token.approve_manual { "manual" } else { "auto" }.into()),
            ("mode", if token.public { "public" } else { "vpn" }.into()),
        ]));
        let result = (|| {
            super::device::changeable(self, &token.tenant)?;
            if self.device_tokens.contains_key(&token.id) {
                return Err(DomainError::Conflict(format!("device token id {} already exists", token.id)));
            }
            check_labels(&token.labels).map_err(DomainError::Invalid)?;
            if token.ephemeral_ms.is_some_and(|e| e < MIN_EPHEMERAL_MS) {
                return Err(DomainError::Invalid("an ephemeral device's offline time is at least 1m".into()));
            }
            if token.max_uses == Some(0) {
                return Err(DomainError::Invalid("a token allows at least one use".into()));
            }
            if token.public && !self.tenants.get(&token.tenant).is_some_and(|t| t.public_api) {
                // A valid request the tenant's current settings refuse: a conflict, not bad input.
                return Err(DomainError::Conflict(format!(
                    "tenant {} has no public API: a public device token needs public_api",
                    token.tenant
                )));
            }
            let stored = DeviceToken { uses: 0, revoked_at_ms: None, last_used_at_ms: None, ..token.clone() };
            self.device_tokens.insert(token.id.clone(), stored.clone());
            cx.touched.push(Touched::DeviceToken(token.id.clone()));
            Ok(Reply::DeviceToken(Box::new(stored)))
        })();
        (result, facts)
    }

    /// Revokes a token: it enrolls nothing more; devices it enrolled keep running.
    pub(super) fn revoke_device_token(&mut self, cx: Cx<'_>, tenant: &TenantName, id: &str) -> Handled {
        let result = (|| {
            let token = self
                .device_tokens
                .get_mut(id)
                .filter(|t| &t.tenant == tenant)
                .ok_or_else(|| DomainError::NotFound(format!("device token {id} of tenant {tenant} not found")))?;
            if token.revoked_at_ms.is_some() {
                return Err(DomainError::Conflict(format!("device token {id} is already revoked")));
            }
            token.revoked_at_ms = Some(cx.at.now);
            cx.touched.push(Touched::DeviceToken(id.to_string()));
            Ok(Reply::DeviceToken(Box::new(token.clone())))
        })();
        (result, cx.facts)
    }

    /// A device spends one use of its token: checked here at apply (secret, tenant, expiry,
    /// revocation, uses), then registered like a device added by key, with the token's labels,
    /// pending when the token wants manual approval.
    pub(super) fn enroll_device(&mut self, cx: Cx<'_>, e: &Enrollment) -> Handled {
        let mut d = details(&[
            ("token", e.token_id.clone()),
            ("public_key", e.public_key.to_string()),
            ("os", format!("{} {}", e.fingerprint.os_name, e.fingerprint.os_version)),
        ]);
        let result = self.spend_device_token(cx.at, e, &mut d, cx.touched);
        let facts = match &result {
            Ok(Reply::Device(dev)) => {
                d.insert("address".into(), dev.address.to_string());
                d.insert("id".into(), dev.id.clone());
                let target = Target::Device(dev.tenant.clone(), dev.name.to_string());
                cx.facts.on(target).with(d)
            }
            _ => cx.facts.with(d),
        };
        (result, facts)
    }

    fn spend_device_token(
        &mut self,
        at: super::At,
        e: &Enrollment,
        d: &mut super::action::Details,
        touched: &mut Vec<Touched>,
    ) -> Response {
        use subtle::ConstantTimeEq;
        let refused = |cause: &str, d: &mut super::action::Details| {
            d.insert("cause".into(), cause.into());
            DomainError::Rejected(TOKEN_REFUSED.into())
        };
        let Some(token) = self.device_tokens.get(&e.token_id) else { return Err(refused("unknown token", d)) };
        let matches: bool = token.secret_hash.as_bytes().ct_eq(e.secret_hash.as_bytes()).into();
        if !matches || token.tenant != e.tenant {
            return Err(refused("wrong secret", d));
        }
        if token.revoked_at_ms.is_some() {
            return Err(refused("revoked", d));
        }
        if at.now >= token.expires_at_ms {
            return Err(refused("expired", d));
        }
        if token.max_uses.is_some_and(|m| token.uses >= m) {
            return Err(refused("used up", d));
        }
        let token = token.clone();
        if token.public && e.fingerprint.mac_hashes.is_empty() && e.fingerprint.machine_id_hash.is_empty() {
            return Err(refused("public token without a fingerprint", d));
        }
        if token.public && !self.tenants.get(&token.tenant).is_some_and(|t| t.public_api) {
            return Err(refused("public token, tenant without public API", d));
        }
        if self.tenants.get(&token.tenant).is_some_and(|t| t.status == super::tenant::TenantStatus::Suspended) {
            d.insert("cause".into(), "tenant suspended".into());
            return Err(DomainError::Conflict(format!("tenant {} is suspended; no device enrolls", token.tenant)));
        }
        let name = match (&token.name, &e.name) {
            (Some(n), _) if token.uses == 0 && self.device(&token.tenant, n).is_none() => n.clone(),
            // The first free `{name}-{k}` from the use's number on: a name taken meanwhile (by
            // `device add`, say) must not leave the token's remaining uses unusable. A tenant
            // has at most 253 devices, so a free one is found within that many steps.
            (Some(n), _) => (token.uses + 1..token.uses.saturating_add(300))
                .map(|k| suffixed(n, k))
                .find(|name| self.device(&token.tenant, name).is_none())
                .unwrap_or_else(|| suffixed(n, token.uses + 1)),
            (None, Some(n)) => n.clone(),
            (None, None) => DeviceName::parse(&at.id('d')).map_err(|err| DomainError::Invalid(err.to_string()))?,
        };
        let new = NewDevice { tenant: token.tenant.clone(), name, public_key: e.public_key.clone(), address: None };
        let reply = self.register_device(at, &new, touched)?;
        let Reply::Device(mut device) = reply else { return Ok(reply) };
        device.labels = token.labels.clone();
        device.token_id = Some(token.id.clone());
        device.pending = token.approve_manual;
        device.ephemeral_ms = token.ephemeral_ms;
        device.fingerprint = Some(e.fingerprint.clone());
        device.public_fingerprint = token.public.then(|| e.fingerprint.clone());
        device.last_seen_ms = Some(at.now);
        self.devices.insert(device.id.clone(), (*device).clone());
        if let Some(t) = self.device_tokens.get_mut(&token.id) {
            t.uses = t.uses.saturating_add(1);
            t.last_used_at_ms = Some(at.now);
        }
        touched.push(Touched::DeviceToken(token.id.clone()));
        if device.pending {
            d.insert("state".into(), "pending".into());
        }
        if token.public {
            d.insert("mode".into(), "public".into());
        }
        Ok(Reply::Device(device))
    }

    /// A purged tenant's tokens go with it.
    pub(super) fn drop_device_tokens(&mut self, tenant: &TenantName, touched: &mut Vec<Touched>) {
        let ids: Vec<String> =
            self.device_tokens.values().filter(|t| &t.tenant == tenant).map(|t| t.id.clone()).collect();
        for id in ids {
            self.device_tokens.remove(&id);
            touched.push(Touched::DeviceToken(id));
        }
    }
}

/// `{name}-{n}`, clipped so the result is still a device name (at most 32 characters).
fn suffixed(name: &DeviceName, n: u32) -> DeviceName {
    let suffix = format!("-{n}");
    let keep = 32usize.saturating_sub(suffix.len());
    let base: String = name.as_str().chars().take(keep).collect();
    DeviceName::parse(&format!("{base}{suffix}")).unwrap_or_else(|_| name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_tokens_split_only_in_their_shape() {
        let ok = format!("bqd_{}_{}", "0123456789abcdef", "ab".repeat(32));
        assert_eq!(split_device_token(&ok), Some(("0123456789abcdef", "ab".repeat(32).as_str())));
        for bad in [
            format!("bqj_{}_{}", "0123456789abcdef", "ab".repeat(32)),
            format!("bqd_{}_{}", "0123456789abcde", "ab".repeat(32)),
            format!("bqd_{}_{}", "0123456789abcdef", "ab".repeat(31)),
            format!("bqd_{}_{}x", "0123456789abcdef", "ab".repeat(32)),
            "bqd_".into(),
        ] {
            assert_eq!(split_device_token(&bad), None, "{bad}");
        }
    }

    #[test]
    fn later_devices_of_a_named_token_get_a_numbered_name() {
        let n = DeviceName::parse("plc").expect("name");
        assert_eq!(suffixed(&n, 2).as_str(), "plc-2");
        let long = DeviceName::parse(&"a".repeat(32)).expect("name");
        assert_eq!(suffixed(&long, 12).as_str().len(), 32);
    }
}
