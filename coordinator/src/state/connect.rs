//! VPN connects as security events (seed §13: who, from where, what): a gateway reports, per
//! device, the handshake that started its current session; each newer session start becomes one
//! `device.connect` audit entry by the gateway node, naming the tenant, the device, its key and
//! the endpoint it connected from, and is kept on the device (`device show`). Bounded by design:
//! one entry per session start, and session starts of one device at least `SESSION_GAP_MS` apart
//! (the agent's rule, checked again here, so no report can flood the trail). Pure.

use super::action::details;
use super::device::DeviceName;
use super::gateway::WgKey;
use super::names::TenantName;
use super::node::Report;
use super::{Cx, DomainError, Handled, Reply, State, Touched};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Session starts of one device closer than this are one session (WireGuard renews its keys
/// every two minutes while a session lasts; a session expires after three).
pub const SESSION_GAP_MS: u64 = 180_000;

/// A device's VPN connect as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connect {
    /// Unix milliseconds of the handshake that started the session.
    pub at_ms: u64,
    /// Where the device connected from, as its gateway saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<SocketAddr>,
    /// The gateway node that reported it.
    pub node_id: u64,
}

/// A session start reported by a gateway, for one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewConnect {
    pub node_id: u64,
    pub tenant: TenantName,
    pub device: DeviceName,
    pub public_key: WgKey,
    pub at_ms: u64,
    pub endpoint: Option<SocketAddr>,
}

/// Whether a session start at `at_ms` is a connect not yet recorded after `last`.
pub fn is_new(last: Option<&Connect>, at_ms: u64) -> bool {
    last.is_none_or(|c| at_ms >= c.at_ms.saturating_add(SESSION_GAP_MS))
}

/// The connects in `report` not yet recorded: each reported session start of a device of a
/// tenant this node is the gateway of, newer than the device's last connect by a session gap.
/// The edge proposes one command for each.
pub fn in_report(state: &State, report: &Report) -> Vec<NewConnect> {
    let mut out = Vec::new();
    for (name, status) in &report.tenants {
        let Ok(tenant) = TenantName::parse(name) else { continue };
        let Some(t) = state.tenants.get(&tenant) else { continue };
        if t.placement.gateway_node != Some(report.node_id) {
            continue;
        }
        let Some(gateway) = &status.gateway else { continue };
        for peer in &gateway.peers {
            let Some(at_ms) = peer.session_start_ms else { continue };
            let Some(device) = state.devices.values().find(|d| d.tenant == tenant && d.public_key == peer.public_key)
            else {
                continue;
            };
            if is_new(device.last_connect.as_ref(), at_ms) {
                out.push(NewConnect {
                    node_id: report.node_id,
                    tenant: tenant.clone(),
                    device: device.name.clone(),
                    public_key: peer.public_key.clone(),
                    at_ms,
                    endpoint: peer.endpoint,
                });
            }
        }
    }
    out
}

impl State {
    /// Records a device's VPN connect: only from the tenant's gateway node, for a device with
    /// that key, and only a session start not yet recorded.
    pub(super) fn device_connect(&mut self, cx: Cx<'_>, c: &NewConnect) -> Handled {
        let facts = cx.facts.with(details(&[
            ("node", c.node_id.to_string()),
            ("public_key", c.public_key.to_string()),
            ("endpoint", c.endpoint.map_or_else(|| "unknown".to_string(), |e| e.to_string())),
            ("session_start", crate::time::rfc3339(c.at_ms)),
        ]));
        let result = (|| {
            let t = self.tenants.get(&c.tenant).ok_or_else(|| super::tenant::not_found(&c.tenant))?;
            if t.placement.gateway_node != Some(c.node_id) {
                return Err(DomainError::Rejected(format!("node {} is not the gateway of {}", c.node_id, c.tenant)));
            }
            let device = self
                .devices
                .values_mut()
                .find(|d| d.tenant == c.tenant && d.name == c.device && d.public_key == c.public_key)
                .ok_or_else(|| DomainError::NotFound(format!("device {} with that key", c.device)))?;
            if !is_new(device.last_connect.as_ref(), c.at_ms) {
                return Err(DomainError::Conflict(format!("this session of device {} is recorded", c.device)));
            }
            device.last_connect = Some(Connect { at_ms: c.at_ms, endpoint: c.endpoint, node_id: c.node_id });
            cx.touched.push(Touched::Device(device.id.clone()));
            Ok(Reply::Done)
        })();
        (result, facts)
    }
}
