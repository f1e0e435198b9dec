//! Exposures, the seed's public ↔ VPN switch: `public-address:public-port` on the tenant's gateway
//! forwarded to `device:port` in the tunnel. Public ports come from the gateway node's range and
//! never collide on that gateway (per protocol); an exposure keeps its port across disable and
//! enable. Its commands — add, remove, enable, disable. Pure, like the rest of `state`.

use super::action::details;
use super::device::{changeable, DeviceName};
use super::gateway::Ipv4Cidr;
use super::names::TenantName;
use super::{At, Cx, DomainError, Handled, Reply, Response, State, Touched};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// Whose source address the exposed service sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceMode {
    /// The gateway's tenant address (masquerade): works with any device.
    Nat,
    /// The outside client's own address: the device routes replies back through the tunnel.
    Keep,
}

/// Most allowlist entries per exposure, and the highest rate limit.
pub const MAX_ALLOW: usize = 64;
pub const MAX_RATE: u32 = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exposure {
    /// `x{raft index of its creation}` (`At::id`).
    pub id: String,
    pub tenant: TenantName,
    pub device_id: String,
    pub port: u16,
    pub public_port: u16,
    pub protocol: Protocol,
    /// Source networks allowed to connect; empty: anyone.
    pub allow: Vec<Ipv4Cidr>,
    /// New connections per second; 0: unlimited.
    pub rate_per_second: u32,
    pub source: SourceMode,
    /// A disabled exposure keeps its public port but forwards nothing.
    pub enabled: bool,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewExposure {
    pub tenant: TenantName,
    pub device: DeviceName,
    pub port: u16,
    pub public_port: Option<u16>,
    pub protocol: Protocol,
    pub allow: Vec<Ipv4Cidr>,
    pub rate_per_second: u32,
    pub source: SourceMode,
}

impl NewExposure {
    pub fn check(&self) -> Result<(), String> {
        if self.port == 0 || self.public_port == Some(0) {
            return Err("ports must be between 1 and 65535".into());
        }
        if self.allow.len() > MAX_ALLOW {
            return Err(format!("at most {MAX_ALLOW} allowed source networks"));
        }
        if self.rate_per_second > MAX_RATE {
            return Err(format!("rate must be at most {MAX_RATE} per second"));
        }
        Ok(())
    }
}

impl State {
    /// A tenant's exposures, by id.
    pub fn exposures_of(&self, tenant: &TenantName) -> Vec<&Exposure> {
        self.exposures.values().filter(|x| &x.tenant == tenant).collect()
    }

    fn exposure_id(&self, tenant: &TenantName, id: &str) -> Result<String, DomainError> {
        match self.exposures.get(id) {
            Some(x) if &x.tenant == tenant => Ok(x.id.clone()),
            _ => Err(DomainError::NotFound(format!("exposure {id} of tenant {tenant} not found"))),
        }
    }

    pub(super) fn add_exposure(&mut self, cx: Cx<'_>, new: &NewExposure) -> Handled {
        let mut d = details(&[
            ("device", new.device.to_string()),
            ("port", new.port.to_string()),
            ("protocol", format!("{:?}", new.protocol).to_lowercase()),
            ("source", format!("{:?}", new.source).to_lowercase()),
        ]);
        if !new.allow.is_empty() {
            d.insert("allow".into(), new.allow.iter().map(ToString::to_string).collect::<Vec<_>>().join(","));
        }
        let result = self.open_exposure(cx.at, new, cx.touched);
        if let Ok(Reply::Exposure(x)) = &result {
            d.insert("public_port".into(), x.public_port.to_string());
            d.insert("id".into(), x.id.clone());
        }
        (result, cx.facts.with(d))
    }

    fn open_exposure(&mut self, at: At, new: &NewExposure, touched: &mut Vec<Touched>) -> Response {
        new.check().map_err(DomainError::Invalid)?;
        let tenant = changeable(self, &new.tenant)?;
        // A device the body names (not the resource addressed) that does not exist: the request
        // conflicts with the tenant's state (404 is kept for the tenant in the path).
        let device = self
            .device(&new.tenant, &new.device)
            .ok_or_else(|| DomainError::Conflict(format!("tenant {} has no device {}", new.tenant, new.device)))?;
        let gateway = tenant.placement.gateway_node.ok_or_else(|| {
            DomainError::Conflict(format!("tenant {} has no gateway node yet: exposures need one", new.tenant))
        })?;
        let range =
            self.nodes.get(&gateway).and_then(|n| n.gateway.settings).map(|g| g.public_ports).ok_or_else(|| {
                DomainError::Conflict(format!(
                    "gateway node {gateway} has no public port range: join it with --public-address and --public-ports"
                ))
            })?;
        if self.exposures.values().any(|x| x.device_id == device.id && x.port == new.port && x.protocol == new.protocol)
        {
            return Err(DomainError::Conflict(format!(
                "port {} of device {} is already exposed over {:?}",
                new.port, new.device, new.protocol
            )));
        }
        let on_gateway: BTreeSet<&str> = self
            .tenants
            .values()
            .filter(|t| t.placement.gateway_node == Some(gateway))
            .map(|t| t.name.as_str())
            .collect();
        let used: BTreeSet<u16> = self
            .exposures
            .values()
            .filter(|x| x.protocol == new.protocol && on_gateway.contains(x.tenant.as_str()))
            .map(|x| x.public_port)
            .collect();
        let public_port = match new.public_port {
            Some(p) if !range.contains(p) => {
                return Err(DomainError::Invalid(format!(
                    "public port {p} is outside gateway node {gateway}'s range {}-{}",
                    range.first, range.last
                )))
            }
            Some(p) if used.contains(&p) => {
                return Err(DomainError::Conflict(format!("public port {p} is taken on gateway node {gateway}")))
            }
            Some(p) => p,
            None => (range.first..=range.last).find(|p| !used.contains(p)).ok_or_else(|| {
                DomainError::Exhausted(format!(
                    "gateway node {gateway}'s public ports {}-{} are all taken",
                    range.first, range.last
                ))
            })?,
        };
        let exposure = Exposure {
            id: at.id('x'),
            tenant: new.tenant.clone(),
            device_id: device.id.clone(),
            port: new.port,
            public_port,
            protocol: new.protocol,
            allow: new.allow.clone(),
            rate_per_second: new.rate_per_second,
            source: new.source,
            enabled: true,
            created_at_ms: at.now,
            updated_at_ms: at.now,
        };
        self.exposures.insert(exposure.id.clone(), exposure.clone());
        touched.push(Touched::Exposure(exposure.id.clone()));
        Ok(Reply::Exposure(Box::new(exposure)))
    }

    pub(super) fn remove_exposure(&mut self, cx: Cx<'_>, tenant: &TenantName, id: &str) -> Handled {
        let result = changeable(self, tenant).and_then(|_| self.exposure_id(tenant, id)).and_then(|id| {
            let x = self.exposures.remove(&id).ok_or_else(|| DomainError::NotFound(format!("exposure {id}")))?;
            cx.touched.push(Touched::Exposure(id));
            Ok(Reply::Exposure(Box::new(x)))
        });
        (result, cx.facts)
    }

    pub(super) fn enable_exposure(&mut self, cx: Cx<'_>, tenant: &TenantName, id: &str, enabled: bool) -> Handled {
        let result = changeable(self, tenant).and_then(|_| self.exposure_id(tenant, id)).and_then(|id| {
            let x = self.exposures.get_mut(&id).ok_or_else(|| DomainError::NotFound(format!("exposure {id}")))?;
            if x.enabled == enabled {
                let state = if enabled { "enabled" } else { "disabled" };
                return Err(DomainError::Conflict(format!("exposure {id} is already {state}")));
            }
            x.enabled = enabled;
            x.updated_at_ms = cx.at.now;
            cx.touched.push(Touched::Exposure(id));
            Ok(Reply::Exposure(Box::new(x.clone())))
        });
        (result, cx.facts)
    }
}
