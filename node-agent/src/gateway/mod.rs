//! The `gateway` role: per tenant a WireGuard interface `bqt<index>` (address `.1/24`, listen
//! port, a private key made here, one peer per enabled device) and, from `nft/`, the tenant's
//! nftables table. Each pass is observe → plan (pure, `plan.rs`) → apply, like `db/postgres`.
//!
//! - `plan`: the WireGuard and link plan (pure, unit tested).
//! - `wg`: devices through wireguard-control (kernel module, or wireguard-go).
//! - `link`: links and addresses through rtnetlink.
//! - `keys`: the tenants' private keys in the data directory.
//! - `nft/`: the agent's nftables table (isolation, exposures, rules, blocked domains).
//!
//! Owned here: interfaces `bqt<digits>` in the agent's network namespace and the key files
//! under `<data_dir>/wireguard/`; IPv4 forwarding is turned on (never off) while a tenant is
//! served. Nothing else is changed.

pub mod keys;
pub mod link;
pub mod nft;
pub mod plan;
pub mod wg;

use crate::assignment::{GatewayTenant, Lifecycle, Tenant};
use crate::config::GatewayConfig;
use crate::driver::{Change, Driver, NodeStatus, Status};
use berqenas_common::net::WgKey;
use plan::{Observed, Step};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, SystemTime};
use wg::Backend;

/// What a gateway reports of a tenant (next to ready/reason).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayStatus {
    /// The tenant interface's public key (its private key never leaves this host).
    pub public_key: Option<WgKey>,
    /// Each enabled device of a running tenant.
    pub peers: Vec<PeerStatus>,
    /// Each exposure's counters and the sources seen (from the nftables table).
    pub exposures: Vec<nft::ExposureStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    pub public_key: WgKey,
    pub last_handshake: Option<SystemTime>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Where the device's packets last came from.
    pub endpoint: Option<SocketAddr>,
    /// The handshake that started the device's current session (a "VPN connect"), as seen by
    /// this agent since it started; the coordinator records each new one once.
    pub session_start: Option<SystemTime>,
}

/// Whether handshake `hs` starts a new session, given the previous handshake seen of the same
/// device (`None`: first sight since the agent started) and the time now. At first sight only a
/// handshake of the last session window counts; afterwards a handshake more than a session gap
/// after the previous one (WireGuard renews keys every two minutes while a session lasts), so
/// connects of one device are at least three minutes apart.
pub fn starts_session(previous: Option<SystemTime>, hs: SystemTime, now: SystemTime) -> bool {
    match previous {
        None => now.duration_since(hs).is_ok_and(|age| age < SESSION_GAP),
        Some(p) => hs.duration_since(p).is_ok_and(|gap| gap > SESSION_GAP),
    }
}

/// IPv4 forwarding of the agent's network namespace.
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// A handshake this much newer than the device's previous one starts a new connection (WireGuard
/// renews keys every two minutes while a session lasts; sessions expire after three).
const SESSION_GAP: Duration = Duration::from_secs(180);

/// The gateway role's driver.
pub struct GatewayDriver {
    node: GatewayConfig,
    keys: keys::KeyStore,
    backend: Backend,
    /// The last handshake seen per (tenant, device key): a newer one after a gap is a connect.
    handshakes: BTreeMap<(String, WgKey), SystemTime>,
    /// The handshake that started each device's current session (reported with its status).
    sessions: BTreeMap<(String, WgKey), SystemTime>,
    /// Blocked domains → their addresses as last resolved (kept when a lookup fails, so a
    /// resolver hiccup never unblocks them).
    resolved: BTreeMap<String, Vec<Ipv4Addr>>,
    /// Node conditions found by the last pass (foreign firewall chains that drop our flows).
    conditions: Vec<crate::driver::Condition>,
    /// The desired state of the last pass: a pass with a new one plans the nftables table
    /// against what the last sync left (cheap); a pass with the same one (the periodic resync)
    /// lists the table and repairs hand changes.
    last_desired: Option<Vec<GatewayTenant>>,
    /// The last listing of the nftables table, for the exposures' counters and sources: a pass
    /// with a new desired state reports them as of this listing (new exposures at zero), the
    /// periodic resync lists again.
    status_listing: Option<nft::status::Listing>,
}

impl GatewayDriver {
    /// Keys under `data_dir`; the WireGuard backend is detected on this host.
    pub fn new(node: GatewayConfig, data_dir: &Path) -> Self {
        Self::with_backend(node, data_dir, Backend::detect())
    }

    pub fn with_backend(node: GatewayConfig, data_dir: &Path, backend: Backend) -> Self {
        Self {
            node,
            keys: keys::KeyStore::new(data_dir),
            backend,
            handshakes: BTreeMap::new(),
            sessions: BTreeMap::new(),
            resolved: BTreeMap::new(),
            conditions: Vec::new(),
            last_desired: None,
            status_listing: None,
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The node's gateway settings (public address and ports, for exposures).
    pub fn node(&self) -> &GatewayConfig {
        &self.node
    }

    /// Resolves the running tenants' blocked domains (before planning), keeping the previous
    /// addresses of a name that does not resolve now and forgetting names no tenant blocks.
    async fn resolve(&mut self, desired: &[GatewayTenant]) -> BTreeMap<String, Vec<Ipv4Addr>> {
        let fresh = nft::resolve_blocked(desired).await;
        let wanted: std::collections::BTreeSet<&str> = desired
            .iter()
            .filter(|t| t.lifecycle == Lifecycle::Run)
            .flat_map(|t| t.gateway.blocked_domains.iter().map(|d| d.as_str()))
            .collect();
        self.resolved.retain(|name, _| wanted.contains(name.as_str()));
        self.resolved.extend(fresh);
        self.resolved.clone()
    }

    /// Owned links, their WireGuard devices and the stored keys.
    async fn observe(&self, links: &link::Links) -> Result<Observed, String> {
        let found = links.observe().await.map_err(|e| e.to_string())?;
        let device_kind = match self.backend {
            Backend::Kernel => "wireguard",
            Backend::Userspace => "tun",
        };
        let mut observed = Observed::default();
        for (name, l) in found {
            if l.kind.as_deref() == Some(device_kind) {
                if let Some(device) = wg::observe(self.backend, &name).await.map_err(|e| e.to_string())? {
                    observed.devices.insert(name.clone(), device);
                }
            }
            observed.links.insert(name, l.state);
        }
        observed.keys = self.keys.list().map_err(|e| e.to_string())?;
        let forwarding = std::fs::read_to_string(IP_FORWARD).map_err(|e| format!("cannot read {IP_FORWARD}: {e}"))?;
        observed.forwarding_off = forwarding.trim() == "0";
        Ok(observed)
    }

    /// Runs `steps`; returns the failure of each tenant whose steps failed (its later steps are
    /// skipped, other tenants go on). Device changes are gathered into one update per interface.
    async fn apply(&self, links: &link::Links, steps: Vec<Step>) -> BTreeMap<String, String> {
        let mut failed: BTreeMap<String, String> = BTreeMap::new();
        let mut updates: BTreeMap<String, (String, wg::Update)> = BTreeMap::new();
        for step in steps {
            if step.tenant().is_some_and(|t| failed.contains_key(t)) {
                continue;
            }
            // Peers are summed up per interface below (a cold pass may add ten thousand).
            match step {
                Step::AddPeer { .. } | Step::UpdatePeer { .. } | Step::RemovePeer { .. } => {
                    tracing::debug!(step = %step, "gateway applies")
                }
                _ => tracing::info!(step = %step, "gateway applies"),
            }
            let result: Result<(), String> = match &step {
                // A procfs file: written in place, never replaced.
                Step::EnableForwarding => std::fs::write(IP_FORWARD, "1\n").map_err(|e| format!("{IP_FORWARD}: {e}")),
                Step::GenerateKey { tenant } => self.keys.generate(tenant).map(|_| ()).map_err(|e| e.to_string()),
                Step::CreateInterface { interface, .. } => match self.backend {
                    Backend::Kernel => links.create_wireguard(interface).await.map_err(|e| e.to_string()),
                    Backend::Userspace => wg::start_userspace(interface).await.map_err(|e| e.to_string()),
                },
                Step::ConfigureDevice { tenant, interface, listen_port } => match self.keys.private(tenant) {
                    Ok(key) => {
                        let (_, u) =
                            updates.entry(interface.clone()).or_insert_with(|| (tenant.clone(), Default::default()));
                        u.configure(key, *listen_port);
                        Ok(())
                    }
                    Err(e) => Err(e.to_string()),
                },
                Step::AddPeer { tenant, interface, public_key, address } => {
                    let (_, u) =
                        updates.entry(interface.clone()).or_insert_with(|| (tenant.clone(), Default::default()));
                    u.add_peer(public_key.clone(), *address);
                    Ok(())
                }
                Step::UpdatePeer { tenant, interface, public_key, address } => {
                    let (_, u) =
                        updates.entry(interface.clone()).or_insert_with(|| (tenant.clone(), Default::default()));
                    u.update_peer(public_key.clone(), *address);
                    Ok(())
                }
                Step::RemovePeer { tenant, interface, public_key } => {
                    let (_, u) =
                        updates.entry(interface.clone()).or_insert_with(|| (tenant.clone(), Default::default()));
                    u.remove_peer(public_key.clone());
                    Ok(())
                }
                Step::AddAddress { interface, address, prefix_len, .. } => {
                    links.add_address(interface, *address, *prefix_len).await.map_err(|e| e.to_string())
                }
                Step::RemoveAddress { interface, address, prefix_len, .. } => {
                    links.remove_address(interface, *address, *prefix_len).await.map_err(|e| e.to_string())
                }
                Step::LinkUp { interface, mtu, .. } => links.up(interface, *mtu).await.map_err(|e| e.to_string()),
                Step::RemoveInterface { interface } => {
                    let r = links.delete(interface).await.map_err(|e| e.to_string());
                    if self.backend == Backend::Userspace {
                        wg::stopped(interface).await;
                    }
                    r
                }
                Step::RemoveKey { tenant } => self.keys.remove(tenant).map_err(|e| e.to_string()),
            };
            if let Err(e) = result {
                tracing::warn!(step = %step, error = %e, "gateway step failed");
                if let Some(t) = step.tenant() {
                    failed.insert(t.to_string(), format!("{step}: {e}"));
                }
            }
        }
        for (interface, (tenant, update)) in updates {
            if failed.contains_key(&tenant) {
                continue;
            }
            let (added, updated, removed) = update.peer_counts();
            if added + updated + removed > 0 {
                tracing::info!(tenant = %tenant, interface = %interface, added, updated, removed, "gateway applies peers");
            }
            if let Err(e) = wg::apply(self.backend, &interface, update).await {
                tracing::warn!(tenant = %tenant, error = %e, "wireguard update failed");
                failed.insert(tenant, e.to_string());
            }
        }
        failed
    }

    /// Logs a "VPN connect" for each device whose handshake starts a new session, and remembers
    /// the handshakes seen and each session's start (reported, so the coordinator records the
    /// connect as a security event).
    fn connects(&mut self, served: &[&GatewayTenant], observed: &Observed) {
        let now = SystemTime::now();
        let mut seen = BTreeMap::new();
        let mut sessions = BTreeMap::new();
        for t in served {
            let Some(device) = observed.devices.get(&t.gateway.interface) else { continue };
            for (key, peer) in &device.peers {
                let Some(hs) = peer.last_handshake else { continue };
                let id = (t.name.clone(), key.clone());
                let previous = self.handshakes.get(&id).copied();
                if starts_session(previous, hs, now) {
                    sessions.insert(id.clone(), hs);
                    let device_name = t.gateway.peers.iter().find(|p| &p.public_key == key).map(|p| p.name.as_str());
                    let endpoint = peer.endpoint.map(|e: SocketAddr| e.to_string()).unwrap_or_default();
                    tracing::info!(
                        event = "vpn.connect",
                        tenant = %t.name,
                        device = device_name.unwrap_or("unknown"),
                        public_key = key.as_str(),
                        endpoint = %endpoint,
                        "VPN connect"
                    );
                } else if let Some(start) = self.sessions.get(&id) {
                    sessions.insert(id.clone(), *start);
                }
                seen.insert(id, previous.map_or(hs, |p| p.max(hs)));
            }
        }
        self.handshakes = seen;
        self.sessions = sessions;
    }
}

fn status(
    t: &GatewayTenant,
    observed: &Observed,
    sessions: &BTreeMap<(String, WgKey), SystemTime>,
    public_key: Option<WgKey>,
    exposures: Vec<nft::ExposureStatus>,
    failure: Option<String>,
) -> Status {
    let device = observed.devices.get(&t.gateway.interface);
    let peers = if t.lifecycle == Lifecycle::Run {
        t.gateway
            .peers
            .iter()
            .filter(|p| p.enabled)
            .map(|p| {
                let live = device.and_then(|d| d.peers.get(&p.public_key));
                PeerStatus {
                    public_key: p.public_key.clone(),
                    last_handshake: live.and_then(|l| l.last_handshake),
                    rx_bytes: live.map_or(0, |l| l.rx_bytes),
                    tx_bytes: live.map_or(0, |l| l.tx_bytes),
                    endpoint: live.and_then(|l| l.endpoint),
                    session_start: sessions.get(&(t.name.clone(), p.public_key.clone())).copied(),
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    Status {
        name: t.name.clone(),
        ready: failure.is_none(),
        reason: failure,
        usage: None,
        gateway: Some(GatewayStatus { public_key, peers, exposures }),
    }
}

#[async_trait::async_trait]
impl Driver<GatewayTenant> for GatewayDriver {
    fn name(&self) -> &'static str {
        "gateway"
    }

    fn node_status(&self) -> NodeStatus {
        NodeStatus { wireguard_backend: Some(self.backend.as_str()), conditions: self.conditions.clone() }
    }

    async fn preview(&mut self, desired: &[GatewayTenant]) -> Result<Vec<Change>, String> {
        let links = link::Links::connect().map_err(|e| e.to_string())?;
        let observed = self.observe(&links).await?;
        let (_, refused) = plan::served(desired);
        let mut changes: Vec<Change> = plan::plan(desired, &observed).into_iter().map(Change::Gateway).collect();
        changes.extend(refused.into_iter().map(|(tenant, reason)| Change::Refused { tenant, reason }));
        let resolved = self.resolve(desired).await;
        changes.extend(nft::preview(&self.node, desired, &resolved).await?);
        Ok(changes)
    }

    async fn reconcile(&mut self, desired: &[GatewayTenant]) -> Vec<Status> {
        let failed_all = |reason: String| -> Vec<Status> {
            desired
                .iter()
                .map(|t| Status {
                    name: t.name().to_string(),
                    ready: false,
                    reason: Some(reason.clone()),
                    usage: None,
                    gateway: None,
                })
                .collect()
        };
        let links = match link::Links::connect() {
            Ok(l) => l,
            Err(e) => return failed_all(e.to_string()),
        };
        let observed = match self.observe(&links).await {
            Ok(o) => o,
            Err(e) => return failed_all(format!("cannot observe the gateway: {e}")),
        };
        let resolved = self.resolve(desired).await;
        let steps = plan::plan(desired, &observed);
        let mut failed = self.apply(&links, steps).await;
        let (served, refused) = plan::served(desired);
        let mut refused: BTreeMap<String, String> = refused.into_iter().collect();
        // The tenants' nftables parts: each changed tenant replaced in one transaction.
        let whole = |failed: &mut BTreeMap<String, String>, why: String| {
            for t in &served {
                failed.entry(t.name.clone()).or_insert_with(|| why.clone());
            }
        };
        // Listing the table costs seconds at a thousand tenants: a changed desired state is
        // planned against the table as the last sync left it, and the next pass with nothing new
        // (the periodic resync) lists it and repairs what was changed by hand.
        let changed = self.last_desired.as_deref() != Some(desired);
        self.last_desired = Some(desired.to_vec());
        let synced = match changed {
            true => nft::sync_changes(&self.node, desired, &resolved).await,
            false => nft::sync(&self.node, desired, &resolved).await,
        };
        match synced {
            Ok(report) => {
                for (tenant, e) in report.failed {
                    if tenant == "node" {
                        whole(&mut failed, format!("nftables base table: {e}"));
                    } else {
                        failed.entry(tenant).or_insert(format!("nftables: {e}"));
                    }
                }
                for (tenant, why) in report.refused {
                    refused.entry(tenant).or_insert(why);
                }
            }
            Err(e) => whole(&mut failed, format!("nftables: {e}")),
        }
        let (listing, listed_now) = match (changed, self.status_listing.take()) {
            (true, Some(kept)) => (Ok(kept), false),
            _ => (nft::status::listing().await, true),
        };
        let mut exposures = match listing {
            Ok(l) => {
                let x = l.exposures(desired);
                self.status_listing = Some(l);
                x
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read exposure counters");
                BTreeMap::new()
            }
        };
        // Other tables' chains: looked at when the table is listed (the resync), not on every change.
        if listed_now {
            match nft::foreign_conditions().await {
                Ok(c) => {
                    self.conditions =
                        c.into_iter().map(|c| crate::driver::Condition { kind: c.kind, message: c.message }).collect()
                }
                Err(e) => tracing::warn!(error = %e, "cannot list other firewall tables"),
            }
        }
        self.connects(&served, &observed);
        let keys = self.keys.list().unwrap_or_default();
        let mut out: BTreeMap<&str, Status> = BTreeMap::new();
        for t in &served {
            let failure = failed.get(&t.name).or(refused.get(&t.name)).cloned();
            let x = exposures.remove(&t.name).unwrap_or_default();
            out.insert(&t.name, status(t, &observed, &self.sessions, keys.get(&t.name).cloned(), x, failure));
        }
        desired
            .iter()
            .map(|t| match out.remove(t.name.as_str()) {
                Some(s) => s,
                None => Status {
                    name: t.name.clone(),
                    // Deleted tenants are ready once their interface and key are gone.
                    ready: !refused.contains_key(&t.name) && !failed.contains_key(&t.name),
                    reason: refused.get(&t.name).or(failed.get(&t.name)).cloned(),
                    usage: None,
                    gateway: None,
                },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    #[test]
    fn a_handshake_starts_a_session_only_after_a_gap() {
        // First sight: a handshake of the last three minutes is a session start, an older one is not.
        assert!(starts_session(None, at(0), at(60)));
        assert!(!starts_session(None, at(0), at(181)));
        // Key renewals every two minutes while the session lasts are not connects.
        assert!(!starts_session(Some(at(0)), at(120), at(121)));
        assert!(!starts_session(Some(at(0)), at(180), at(200)));
        // Quiet for more than three minutes, then a handshake: a new session.
        assert!(starts_session(Some(at(0)), at(181), at(190)));
        // A handshake older than the one seen (clock step) is never a connect.
        assert!(!starts_session(Some(at(500)), at(100), at(600)));
    }
}
