//! Enrolled devices' presence: the fingerprint a device reports (hashed MACs and machine id, OS,
//! architecture, client version), heartbeats as recorded (last seen, fingerprint changes — the
//! edge proposes one only on a change or every `SEEN_REFRESH_MS`), and ephemeral devices removed
//! once offline for their token's time (`due_for_expiry` names them; the leader proposes one
//! `ExpireDevice` each, re-checked here at the command's own time). A live ephemeral device is
//! never taken for gone: it is asked to heartbeat at least four times within its offline time
//! (`heartbeat_ms`), and its heartbeats are written at least every quarter of it
//! (`seen_refresh_ms`), so its recorded last-seen stays well inside it. Pure.

use super::action::details;
use super::device::{Device, DeviceName};
use super::names::TenantName;
use super::{Cx, DomainError, Handled, Reply, State, Touched};
use serde::{Deserialize, Serialize};

/// A live device's heartbeat is written to the log at least this often (and at once on a change
/// of its fingerprint), so `last_seen` is at most this old while it runs.
pub const SEEN_REFRESH_MS: u64 = 5 * 60_000;
/// How often a device heartbeats unless asked otherwise (the client's default).
pub const HEARTBEAT_MS: u64 = 60_000;
/// The most often a device is asked to heartbeat.
pub const MIN_HEARTBEAT_MS: u64 = 15_000;

/// How often `d` is asked to heartbeat: every `HEARTBEAT_MS`; an ephemeral device every quarter
/// of its offline time, at most every `MIN_HEARTBEAT_MS`.
pub fn heartbeat_ms(d: &Device) -> u64 {
    d.ephemeral_ms.map_or(HEARTBEAT_MS, |e| (e / 4).clamp(MIN_HEARTBEAT_MS, HEARTBEAT_MS))
}

/// How old `d`'s recorded last-seen may get before a heartbeat is written again: every
/// `SEEN_REFRESH_MS`; an ephemeral device's every quarter of its offline time. While it runs,
/// its last-seen is then at most this plus one heartbeat interval (+10 % jitter) old: for the
/// shortest offline time (`devicetoken::MIN_EPHEMERAL_MS`, 1 min) 15 s + 16.5 s, about half of it.
pub fn seen_refresh_ms(d: &Device) -> u64 {
    d.ephemeral_ms.map_or(SEEN_REFRESH_MS, |e| (e / 4).min(SEEN_REFRESH_MS))
}

/// What a device says about itself. Hashes are lowercase hex SHA-256 (raw MACs and the machine
/// id never leave the device); the edge validates sizes and shapes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub mac_hashes: Vec<String>,
    pub machine_id_hash: String,
    pub os_name: String,
    pub os_version: String,
    pub arch: String,
    pub client_version: String,
}

impl Fingerprint {
    /// Which parts differ from `other`, by name (for the audit trail).
    pub fn changes(&self, other: &Fingerprint) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.mac_hashes != other.mac_hashes {
            out.push("mac_hashes");
        }
        if self.machine_id_hash != other.machine_id_hash {
            out.push("machine_id_hash");
        }
        if (&self.os_name, &self.os_version) != (&other.os_name, &other.os_version) {
            out.push("os");
        }
        if self.arch != other.arch {
            out.push("arch");
        }
        if self.client_version != other.client_version {
            out.push("client_version");
        }
        out
    }
}

/// A heartbeat as proposed: who (from the device's certificate), what it reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub tenant: TenantName,
    pub device_id: String,
    pub fingerprint: Fingerprint,
}

/// When a device was last known alive: its last heartbeat, VPN connect or enrollment.
pub fn last_alive(d: &Device) -> u64 {
    let connect = d.last_connect.as_ref().map_or(0, |c| c.at_ms);
    d.last_seen_ms.unwrap_or(0).max(connect).max(d.created_at_ms)
}

/// Whether an ephemeral device has been offline for its time at `now`. A device a firewall rule
/// names is kept (as `device rm` refuses to remove it); selection by label does not keep it.
fn expired(state: &State, d: &Device, now: u64) -> bool {
    let Some(after) = d.ephemeral_ms else { return false };
    now >= last_alive(d).saturating_add(after) && !state.firewall_rules.values().any(|r| r.names_device(&d.id))
}

/// The ephemeral devices offline past their time at `now`: (tenant, name) each.
pub fn due_for_expiry(state: &State, now: u64) -> Vec<(TenantName, DeviceName)> {
    state.devices.values().filter(|d| expired(state, d, now)).map(|d| (d.tenant.clone(), d.name.clone())).collect()
}

impl State {
    /// Records a heartbeat: last seen, and the fingerprint when it changed (named in the audit
    /// entry). A revoked or unknown device is refused.
    pub(super) fn device_heartbeat(&mut self, cx: Cx<'_>, hb: &Heartbeat) -> Handled {
        let mut d = details(&[("id", hb.device_id.clone())]);
        let result = (|| {
            let device = self
                .devices
                .get_mut(&hb.device_id)
                .filter(|dev| dev.tenant == hb.tenant)
                .ok_or_else(|| DomainError::NotFound(format!("device {} of tenant {}", hb.device_id, hb.tenant)))?;
            if device.revoked_at_ms.is_some() {
                return Err(DomainError::Rejected(format!("device {} is revoked", device.name)));
            }
            let changed = device
                .fingerprint
                .as_ref()
                .map_or_else(|| vec!["fingerprint"], |before| before.changes(&hb.fingerprint));
            if !changed.is_empty() {
                d.insert("changed".into(), changed.join(","));
                device.fingerprint = Some(hb.fingerprint.clone());
            }
            device.last_seen_ms = Some(cx.at.now);
            cx.touched.push(Touched::Device(device.id.clone()));
            Ok(Reply::Done)
        })();
        (result, cx.facts.with(d))
    }

    /// Removes an ephemeral device offline past its time (checked at the command's own time),
    /// with its exposures.
    pub(super) fn expire_device(&mut self, cx: Cx<'_>, tenant: &TenantName, name: &DeviceName) -> Handled {
        let now = cx.at.now;
        let result = (|| {
            let device = self
                .device(tenant, name)
                .ok_or_else(|| DomainError::NotFound(format!("device {name} of tenant {tenant} not found")))?
                .clone();
            if !expired(self, &device, now) {
                return Err(DomainError::Conflict(format!("device {name} is not an ephemeral device past its time")));
            }
            let exposures: Vec<String> =
                self.exposures.values().filter(|x| x.device_id == device.id).map(|x| x.id.clone()).collect();
            for id in exposures {
                self.exposures.remove(&id);
                cx.touched.push(Touched::Exposure(id));
            }
            self.devices.remove(&device.id);
            cx.touched.push(Touched::Device(device.id.clone()));
            Ok((Reply::Device(Box::new(device.clone())), device))
        })();
        match result {
            Ok((reply, device)) => {
                let facts = cx.facts.with(details(&[
                    ("id", device.id.clone()),
                    ("last_seen", crate::time::rfc3339(last_alive(&device))),
                ]));
                (Ok(reply), facts)
            }
            Err(e) => (Err(e), cx.facts),
        }
    }
}
