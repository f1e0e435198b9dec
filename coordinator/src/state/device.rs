//! Devices, registered by key or enrolled with a token (`devicetoken`): a WireGuard peer of a
//! tenant, with an address in the tenant's /24 (`.2`–`.254`; `.0`, `.1` (the gateway) and `.255`
//! never), a public key unique across the cluster and a name unique within its tenant. Its
//! commands — add, remove, enable, disable, approve (pending → active), revoke (the row stays,
//! marked, so its address and key are not reused and its certificate is refused) — and the
//! gateway objects that go with a tenant. Pure, like the rest of `state`.

use super::action::details;
use super::gateway::{subnet_of, Ipv4Cidr, WgKey};
use super::names::TenantName;
use super::tenant::{Tenant, TenantStatus};
use super::{At, Cx, DomainError, Handled, Reply, Response, State, Touched};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

/// `^…$` of a device name.
pub const DEVICE_NAME_PATTERN: &str = "^[a-z0-9][a-z0-9_-]{0,31}$";

/// A device name: `^[a-z0-9][a-z0-9_-]{0,31}$`, unique within its tenant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("device name {0:?} must be 1 to 32 characters: lowercase letters, digits, '-' and '_', starting with a letter or digit")]
pub struct InvalidDeviceName(pub String);

impl DeviceName {
    pub fn parse(raw: &str) -> Result<Self, InvalidDeviceName> {
        let ok = (1..=32).contains(&raw.len())
            && raw.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(DeviceName(raw.to_string()))
        } else {
            Err(InvalidDeviceName(raw.chars().take(40).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DeviceName {
    type Error = InvalidDeviceName;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<DeviceName> for String {
    fn from(value: DeviceName) -> Self {
        value.0
    }
}

impl fmt::Display for DeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// `d{raft index of its creation}` (`d{index}-{n}` for the n-th of a batch, `At::id`):
    /// stable, never reused.
    pub id: String,
    pub tenant: TenantName,
    pub name: DeviceName,
    pub public_key: WgKey,
    pub address: Ipv4Addr,
    /// A disabled device keeps its address and key but is not a peer.
    pub enabled: bool,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    /// The device's last VPN connect (session start) its gateway reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_connect: Option<super::connect::Connect>,
    /// From the token it enrolled with (firewall rules and exposures may select by them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The device token it enrolled with; `None`: registered by key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// Enrolled with a token that wants manual approval, and not approved yet: not a peer.
    #[serde(default)]
    pub pending: bool,
    /// Revoked: not a peer, its certificate refused; the row keeps its address and key taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at_ms: Option<u64>,
    /// Removed after this long without being seen (ephemeral devices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral_ms: Option<u64>,
    /// What it last reported about itself (enrolled devices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<super::presence::Fingerprint>,
    /// Its last recorded heartbeat (at most `presence::SEEN_REFRESH_MS` old while it runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_ms: Option<u64>,
    /// Enrolled with a public token (no VPN): the fingerprint recorded at enrollment, which its
    /// publishes must match (with a customer key of its tenant). Heartbeats never change it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_fingerprint: Option<super::presence::Fingerprint>,
}

impl Device {
    /// A peer of its gateway and allowed to publish: enabled, approved and not revoked.
    pub fn is_active(&self) -> bool {
        self.enabled && !self.pending && self.revoked_at_ms.is_none()
    }

    /// `active`, `pending`, `disabled` or `revoked`.
    pub fn state(&self) -> DeviceState {
        if self.revoked_at_ms.is_some() {
            DeviceState::Revoked
        } else if self.pending {
            DeviceState::Pending
        } else if !self.enabled {
            DeviceState::Disabled
        } else {
            DeviceState::Active
        }
    }
}

/// Where a device stands (`Device::state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceState {
    Active,
    Pending,
    Disabled,
    Revoked,
}

/// A request to register a device; `address` `None` takes the next free one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewDevice {
    pub tenant: TenantName,
    pub name: DeviceName,
    pub public_key: WgKey,
    pub address: Option<Ipv4Addr>,
}

/// Why an address cannot be a device's in `subnet`.
pub fn check_address(subnet: Ipv4Cidr, addr: Ipv4Addr) -> Result<(), String> {
    if !subnet.contains(addr) {
        return Err(format!("address {addr} is outside the tenant subnet {subnet}"));
    }
    match addr.octets()[3] {
        0 => Err(format!("address {addr} is the subnet's network address")),
        1 => Err(format!("address {addr} is the tenant's gateway")),
        255 => Err(format!("address {addr} is the subnet's broadcast address")),
        _ => Ok(()),
    }
}

/// The lowest address of `subnet` from `.2` to `.254` not in `used`.
pub fn next_address(subnet: Ipv4Cidr, used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    (2..=254).filter_map(|n| subnet.nth(n)).find(|a| !used.contains(a))
}

/// A tenant's gateway objects may change unless it is deleted.
pub(super) fn changeable<'a>(state: &'a State, tenant: &TenantName) -> Result<&'a Tenant, DomainError> {
    let t = state.tenants.get(tenant).ok_or_else(|| super::tenant::not_found(tenant))?;
    if t.status == TenantStatus::DeletedPendingPurge {
        return Err(DomainError::Conflict(format!("tenant {tenant} is deleted; restore it first")));
    }
    Ok(t)
}

impl State {
    /// The device `name` of `tenant`.
    pub fn device(&self, tenant: &TenantName, name: &DeviceName) -> Option<&Device> {
        self.devices.values().find(|d| &d.tenant == tenant && &d.name == name)
    }

    /// A tenant's devices in name order.
    pub fn devices_of(&self, tenant: &TenantName) -> Vec<&Device> {
        let mut out: Vec<&Device> = self.devices.values().filter(|d| &d.tenant == tenant).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Whether the gateway of `tenant` has reported applying desired state revision `revision`
    /// (or later) and its interface ready: the peers that revision holds are on the gateway.
    /// `None` when the tenant has no gateway placed.
    pub fn gateway_applied(&self, tenant: &TenantName, revision: u64) -> Option<bool> {
        let t = self.tenants.get(tenant)?;
        let node = t.placement.gateway_node?;
        Some(t.node_status.get(&node).is_some_and(|s| s.ready && s.revision >= revision))
    }

    fn device_or_404(&self, tenant: &TenantName, name: &DeviceName) -> Result<&Device, DomainError> {
        self.device(tenant, name)
            .ok_or_else(|| DomainError::NotFound(format!("device {name} of tenant {tenant} not found")))
    }

    pub(super) fn add_device(&mut self, cx: Cx<'_>, new: &NewDevice) -> Handled {
        let mut d = details(&[("public_key", new.public_key.to_string())]);
        let result = self.register_device(cx.at, new, cx.touched);
        if let Ok(Reply::Device(dev)) = &result {
            d.insert("address".into(), dev.address.to_string());
            d.insert("id".into(), dev.id.clone());
        }
        (result, cx.facts.with(d))
    }

    pub(super) fn register_device(&mut self, at: At, new: &NewDevice, touched: &mut Vec<Touched>) -> Response {
        let tenant = changeable(self, &new.tenant)?;
        let subnet = subnet_of(&tenant.network.vpn_subnet)
            .ok_or_else(|| DomainError::Invalid(format!("tenant {} has no usable subnet", new.tenant)))?;
        if self.device(&new.tenant, &new.name).is_some() {
            return Err(DomainError::Conflict(format!("tenant {} already has a device {}", new.tenant, new.name)));
        }
        if let Some(other) = self.devices.values().find(|d| d.public_key == new.public_key) {
            let owner =
                if other.tenant == new.tenant { format!("device {}", other.name) } else { "another device".into() };
            return Err(DomainError::Conflict(format!(
                "public key {} is already registered to {owner}",
                new.public_key
            )));
        }
        // A gateway interface's own key (any tenant's: devices learn theirs from their config)
        // as a peer would never converge: WireGuard ignores a peer with the interface's key.
        let gateway_key = self
            .tenants
            .values()
            .flat_map(|t| t.node_status.values())
            .any(|s| s.gateway.as_ref().and_then(|g| g.public_key.as_ref()) == Some(&new.public_key));
        if gateway_key {
            return Err(DomainError::Conflict(format!(
                "public key {} is a gateway's key; a device needs a key of its own",
                new.public_key
            )));
        }
        let used: BTreeSet<Ipv4Addr> =
            self.devices.values().filter(|d| d.tenant == new.tenant).map(|d| d.address).collect();
        let address = match new.address {
            Some(a) => {
                // It does not fit this tenant's subnet: a conflict with the tenant as it is.
                check_address(subnet, a).map_err(DomainError::Conflict)?;
                if used.contains(&a) {
                    return Err(DomainError::Conflict(format!("address {a} is taken by another device of the tenant")));
                }
                a
            }
            None => next_address(subnet, &used).ok_or_else(|| {
                DomainError::Exhausted(format!("tenant {} has no free address left in {subnet}", new.tenant))
            })?,
        };
        let device = Device {
            id: at.id('d'),
            tenant: new.tenant.clone(),
            name: new.name.clone(),
            public_key: new.public_key.clone(),
            address,
            enabled: true,
            created_at_ms: at.now,
            updated_at_ms: at.now,
            last_connect: None,
            labels: BTreeMap::new(),
            token_id: None,
            pending: false,
            revoked_at_ms: None,
            ephemeral_ms: None,
            fingerprint: None,
            last_seen_ms: None,
            public_fingerprint: None,
        };
        self.devices.insert(device.id.clone(), device.clone());
        touched.push(Touched::Device(device.id.clone()));
        Ok(Reply::Device(Box::new(device)))
    }

    /// Removes a device; refused while exposures or firewall rules name it.
    pub(super) fn remove_device(&mut self, cx: Cx<'_>, tenant: &TenantName, name: &DeviceName) -> Handled {
        (self.drop_device(tenant, name, cx.touched), cx.facts)
    }

    fn drop_device(&mut self, tenant: &TenantName, name: &DeviceName, touched: &mut Vec<Touched>) -> Response {
        changeable(self, tenant)?;
        let device = self.device_or_404(tenant, name)?.clone();
        let exposures: Vec<&str> =
            self.exposures.values().filter(|x| x.device_id == device.id).map(|x| x.id.as_str()).collect();
        if !exposures.is_empty() {
            return Err(DomainError::Conflict(format!(
                "device {name} has exposures {}; remove them first",
                exposures.join(", ")
            )));
        }
        let rules: Vec<&str> =
            self.firewall_rules.values().filter(|r| r.names_device(&device.id)).map(|r| r.id.as_str()).collect();
        if !rules.is_empty() {
            return Err(DomainError::Conflict(format!(
                "device {name} is named by firewall rules {}; remove them first",
                rules.join(", ")
            )));
        }
        self.devices.remove(&device.id);
        touched.push(Touched::Device(device.id.clone()));
        Ok(Reply::Device(Box::new(device)))
    }

    pub(super) fn enable_device(
        &mut self,
        cx: Cx<'_>,
        tenant: &TenantName,
        name: &DeviceName,
        enabled: bool,
    ) -> Handled {
        let result = changeable(self, tenant).and_then(|_| self.device_or_404(tenant, name).map(|d| d.id.clone()));
        let result = result.and_then(|id| {
            let device = self.devices.get_mut(&id).ok_or_else(|| DomainError::NotFound(format!("device {name}")))?;
            if device.revoked_at_ms.is_some() {
                return Err(DomainError::Conflict(format!("device {name} is revoked")));
            }
            if device.enabled == enabled {
                let state = if enabled { "enabled" } else { "disabled" };
                return Err(DomainError::Conflict(format!("device {name} is already {state}")));
            }
            device.enabled = enabled;
            device.updated_at_ms = cx.at.now;
            cx.touched.push(Touched::Device(id));
            Ok(Reply::Device(Box::new(device.clone())))
        });
        (result, cx.facts)
    }

    /// A pending device becomes active (a peer of its gateway).
    pub(super) fn approve_device(&mut self, cx: Cx<'_>, tenant: &TenantName, name: &DeviceName) -> Handled {
        let now = cx.at.now;
        let result = self.change_device(tenant, name, cx.touched, |device| {
            if device.revoked_at_ms.is_some() {
                return Err(DomainError::Conflict(format!("device {name} is revoked")));
            }
            if !device.pending {
                return Err(DomainError::Conflict(format!("device {name} is not pending approval")));
            }
            device.pending = false;
            device.updated_at_ms = now;
            Ok(())
        });
        (result, cx.facts)
    }

    /// Revokes a device: its peer goes from the gateway, its certificate is refused at the next
    /// handshake, its heartbeats and renewals are refused. The row stays (marked), so neither its
    /// address nor its key is handed out again; `device rm` removes it.
    pub(super) fn revoke_device(&mut self, cx: Cx<'_>, tenant: &TenantName, name: &DeviceName) -> Handled {
        let now = cx.at.now;
        let result = self.change_device(tenant, name, cx.touched, |device| {
            if device.revoked_at_ms.is_some() {
                return Err(DomainError::Conflict(format!("device {name} is already revoked")));
            }
            device.revoked_at_ms = Some(now);
            device.updated_at_ms = now;
            Ok(())
        });
        (result, cx.facts)
    }

    fn change_device(
        &mut self,
        tenant: &TenantName,
        name: &DeviceName,
        touched: &mut Vec<Touched>,
        change: impl FnOnce(&mut Device) -> Result<(), DomainError>,
    ) -> Response {
        changeable(self, tenant)?;
        let id = self.device_or_404(tenant, name)?.id.clone();
        let device = self.devices.get_mut(&id).ok_or_else(|| DomainError::NotFound(format!("device {name}")))?;
        change(device)?;
        touched.push(Touched::Device(id));
        Ok(Reply::Device(Box::new(device.clone())))
    }

    /// A purged tenant's devices, exposures and firewall rules go with it.
    pub(super) fn drop_gateway_objects(&mut self, tenant: &TenantName, touched: &mut Vec<Touched>) {
        let devices: Vec<String> =
            self.devices.values().filter(|d| &d.tenant == tenant).map(|d| d.id.clone()).collect();
        for id in devices {
            self.devices.remove(&id);
            touched.push(Touched::Device(id));
        }
        let exposures: Vec<String> =
            self.exposures.values().filter(|x| &x.tenant == tenant).map(|x| x.id.clone()).collect();
        for id in exposures {
            self.exposures.remove(&id);
            touched.push(Touched::Exposure(id));
        }
        let rules: Vec<String> =
            self.firewall_rules.values().filter(|r| &r.tenant == tenant).map(|r| r.id.clone()).collect();
        for id in rules {
            self.firewall_rules.remove(&id);
            touched.push(Touched::FirewallRule(id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet() -> Ipv4Cidr {
        "198.18.1.0/24".parse().expect("cidr")
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("ip")
    }

    #[test]
    fn addresses_skip_network_gateway_and_broadcast() {
        assert_eq!(next_address(subnet(), &BTreeSet::new()), Some(ip("198.18.1.2")));
        assert_eq!(next_address(subnet(), &[ip("198.18.1.2"), ip("198.18.1.4")].into()), Some(ip("198.18.1.3")));
        let full: BTreeSet<Ipv4Addr> = (2..=254).map(|n| ip(&format!("198.18.1.{n}"))).collect();
        assert_eq!(next_address(subnet(), &full), None, ".255 is never handed out");
        for bad in ["198.18.1.0", "198.18.1.1", "198.18.1.255", "198.18.2.7"] {
            assert!(check_address(subnet(), ip(bad)).is_err(), "{bad}");
        }
        assert!(check_address(subnet(), ip("198.18.1.10")).is_ok());
    }

    #[test]
    fn device_names_are_validated() {
        for ok in ["plc1", "cam-01", "0x", "a_b"] {
            assert!(DeviceName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "PLC", "a b", "a;b", &"a".repeat(33)] {
            assert!(DeviceName::parse(bad).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<DeviceName>("\"Bad\"").is_err());
    }
}
