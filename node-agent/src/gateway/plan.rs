//! The gateway's WireGuard and link plan: a pure function from the desired tenants and what was
//! observed (links `bqt*`, their WireGuard devices, the stored keys) to typed steps. No IO, no
//! clock: a converged host yields an empty plan, and every step can be printed (no step carries a
//! secret; the private key is read from the key store only when a step is applied).
//!
//! What the agent owns: interfaces named `bqt<digits>` in its network namespace and the key files
//! in its data directory. Everything else is never touched, and never planned.

use crate::assignment::{GatewayTenant, Lifecycle};
use berqenas_common::net::WgKey;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::SystemTime;

/// The MTU of every tenant interface (WireGuard's default: 1500 less the IPv6+UDP+WireGuard
/// overhead).
pub const MTU: u32 = 1420;

/// True for the interface names the agent owns: `bqt` followed by digits, at most 15 characters.
pub fn owned(interface: &str) -> bool {
    interface.len() <= 15
        && interface.strip_prefix("bqt").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// An owned link as netlink shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkState {
    pub index: u32,
    pub up: bool,
    pub mtu: u32,
    /// IPv4 addresses with their prefix length.
    pub addresses: Vec<(Ipv4Addr, u8)>,
}

/// One peer of a live WireGuard device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerState {
    pub allowed_ips: Vec<(Ipv4Addr, u8)>,
    pub endpoint: Option<SocketAddr>,
    pub last_handshake: Option<SystemTime>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// A live WireGuard device (kernel or wireguard-go) on an owned link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceState {
    pub public_key: Option<WgKey>,
    pub listen_port: Option<u16>,
    pub peers: BTreeMap<WgKey, PeerState>,
}

/// Everything the plan looks at, gathered before planning.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Owned links (`bqt*`) by name.
    pub links: BTreeMap<String, LinkState>,
    /// The WireGuard device of each owned link that has one (a link without is not ours to use
    /// as is: it is removed and made again).
    pub devices: BTreeMap<String, DeviceState>,
    /// Tenants with a stored private key, and its public half.
    pub keys: BTreeMap<String, WgKey>,
    /// IPv4 forwarding is off in the agent's network namespace: nothing would pass between the
    /// tenant interfaces and the public side (a fresh host or namespace starts so).
    pub forwarding_off: bool,
}

/// One change to the host. Steps of a tenant run in the order planned; a failed step stops that
/// tenant's remaining steps, not other tenants'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Turn on IPv4 forwarding (`net.ipv4.ip_forward`), which every tenant's traffic needs.
    EnableForwarding,
    /// Make the tenant's private key here and store it (0600); it never leaves the host.
    GenerateKey {
        tenant: String,
    },
    /// Make the WireGuard interface (a kernel link, or a wireguard-go process and its tun).
    CreateInterface {
        tenant: String,
        interface: String,
    },
    /// Give the device the tenant's stored private key and its listen port.
    ConfigureDevice {
        tenant: String,
        interface: String,
        listen_port: u16,
    },
    AddAddress {
        tenant: String,
        interface: String,
        address: Ipv4Addr,
        prefix_len: u8,
    },
    RemoveAddress {
        tenant: String,
        interface: String,
        address: Ipv4Addr,
        prefix_len: u8,
    },
    /// Set the MTU and bring the link up.
    LinkUp {
        tenant: String,
        interface: String,
        mtu: u32,
    },
    /// A device of the tenant: AllowedIPs = `address/32`.
    AddPeer {
        tenant: String,
        interface: String,
        public_key: WgKey,
        address: Ipv4Addr,
    },
    /// The peer exists with other AllowedIPs: replace them (its session and counters stay).
    UpdatePeer {
        tenant: String,
        interface: String,
        public_key: WgKey,
        address: Ipv4Addr,
    },
    RemovePeer {
        tenant: String,
        interface: String,
        public_key: WgKey,
    },
    /// Remove an owned interface no desired tenant uses (or that is not a WireGuard device).
    RemoveInterface {
        interface: String,
    },
    /// Remove the key of a tenant gone from this gateway.
    RemoveKey {
        tenant: String,
    },
}

impl Step {
    /// The tenant the step serves; None for the removal of something no tenant claims.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Step::GenerateKey { tenant }
            | Step::CreateInterface { tenant, .. }
            | Step::ConfigureDevice { tenant, .. }
            | Step::AddAddress { tenant, .. }
            | Step::RemoveAddress { tenant, .. }
            | Step::LinkUp { tenant, .. }
            | Step::AddPeer { tenant, .. }
            | Step::UpdatePeer { tenant, .. }
            | Step::RemovePeer { tenant, .. } => Some(tenant),
            Step::EnableForwarding | Step::RemoveKey { .. } | Step::RemoveInterface { .. } => None,
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::EnableForwarding => write!(f, "[node] enable IPv4 forwarding (net.ipv4.ip_forward = 1)"),
            Step::GenerateKey { tenant } => write!(f, "[{tenant}] generate the WireGuard key"),
            Step::CreateInterface { tenant, interface } => write!(f, "[{tenant}] create interface {interface}"),
            Step::ConfigureDevice { tenant, interface, listen_port } => {
                write!(f, "[{tenant}] {interface}: private key, listen port {listen_port}")
            }
            Step::AddAddress { tenant, interface, address, prefix_len } => {
                write!(f, "[{tenant}] {interface}: add address {address}/{prefix_len}")
            }
            Step::RemoveAddress { tenant, interface, address, prefix_len } => {
                write!(f, "[{tenant}] {interface}: remove address {address}/{prefix_len}")
            }
            Step::LinkUp { tenant, interface, mtu } => write!(f, "[{tenant}] {interface}: mtu {mtu}, up"),
            Step::AddPeer { tenant, interface, public_key, address } => {
                write!(f, "[{tenant}] {interface}: add peer {} allowed-ips {address}/32", public_key.as_str())
            }
            Step::UpdatePeer { tenant, interface, public_key, address } => {
                write!(f, "[{tenant}] {interface}: peer {} allowed-ips {address}/32", public_key.as_str())
            }
            Step::RemovePeer { tenant, interface, public_key } => {
                write!(f, "[{tenant}] {interface}: remove peer {}", public_key.as_str())
            }
            Step::RemoveInterface { interface } => write!(f, "[node] remove interface {interface}"),
            Step::RemoveKey { tenant } => write!(f, "[{tenant}] remove the WireGuard key"),
        }
    }
}

/// The tenants this gateway serves now (running or suspended; deleted ones are gone), by name.
/// A second tenant claiming an interface already claimed is refused (returned apart).
pub fn served(desired: &[GatewayTenant]) -> (Vec<&GatewayTenant>, Vec<(String, String)>) {
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    let mut served = Vec::new();
    let mut refused = Vec::new();
    for t in desired.iter().filter(|t| t.lifecycle != Lifecycle::Deleted) {
        match seen.get(t.gateway.interface.as_str()) {
            Some(other) => refused.push((t.name.clone(), format!("interface {} is {other}'s", t.gateway.interface))),
            None => {
                seen.insert(&t.gateway.interface, &t.name);
                served.push(t);
            }
        }
    }
    (served, refused)
}

/// What to change so the host matches `desired`. Pure.
pub fn plan(desired: &[GatewayTenant], observed: &Observed) -> Vec<Step> {
    let (served, _) = served(desired);
    let mut steps = Vec::new();
    if observed.forwarding_off && !served.is_empty() {
        steps.push(Step::EnableForwarding);
    }
    let empty = DeviceState::default();
    for t in &served {
        let g = &t.gateway;
        let tenant = t.name.clone();
        let interface = g.interface.clone();
        let key = observed.keys.get(&t.name);
        if key.is_none() {
            steps.push(Step::GenerateKey { tenant: tenant.clone() });
        }
        let link = observed.links.get(&interface);
        let device = match (link, observed.devices.get(&interface)) {
            (Some(_), Some(device)) => device,
            (Some(_), None) => {
                // An owned name that is not a usable WireGuard device: made again.
                steps.push(Step::RemoveInterface { interface: interface.clone() });
                steps.push(Step::CreateInterface { tenant: tenant.clone(), interface: interface.clone() });
                &empty
            }
            (None, _) => {
                steps.push(Step::CreateInterface { tenant: tenant.clone(), interface: interface.clone() });
                &empty
            }
        };
        let fresh = link.is_none() || !observed.devices.contains_key(&interface);
        if key.is_none() || device.public_key.as_ref() != key || device.listen_port != Some(g.listen_port) {
            steps.push(Step::ConfigureDevice {
                tenant: tenant.clone(),
                interface: interface.clone(),
                listen_port: g.listen_port,
            });
        }
        let prefix_len = g.vpn_subnet.prefix_len();
        let addresses: &[(Ipv4Addr, u8)] = match link {
            Some(l) if !fresh => &l.addresses,
            _ => &[],
        };
        if !addresses.contains(&(g.gateway_address, prefix_len)) {
            steps.push(Step::AddAddress {
                tenant: tenant.clone(),
                interface: interface.clone(),
                address: g.gateway_address,
                prefix_len,
            });
        }
        for &(address, len) in addresses.iter().filter(|a| **a != (g.gateway_address, prefix_len)) {
            steps.push(Step::RemoveAddress {
                tenant: tenant.clone(),
                interface: interface.clone(),
                address,
                prefix_len: len,
            });
        }
        match link {
            Some(l) if !fresh && l.up && l.mtu == MTU => {}
            _ => steps.push(Step::LinkUp { tenant: tenant.clone(), interface: interface.clone(), mtu: MTU }),
        }
        // Peers by diff against the live device: never a replacement of all.
        let mut wanted: BTreeMap<&WgKey, Ipv4Addr> = BTreeMap::new();
        if t.lifecycle == Lifecycle::Run {
            for p in g.peers.iter().filter(|p| p.enabled) {
                wanted.entry(&p.public_key).or_insert(p.address);
            }
        }
        for (public_key, address) in &wanted {
            match device.peers.get(*public_key) {
                None => steps.push(Step::AddPeer {
                    tenant: tenant.clone(),
                    interface: interface.clone(),
                    public_key: (*public_key).clone(),
                    address: *address,
                }),
                Some(p) if p.allowed_ips != [(*address, 32)] => steps.push(Step::UpdatePeer {
                    tenant: tenant.clone(),
                    interface: interface.clone(),
                    public_key: (*public_key).clone(),
                    address: *address,
                }),
                Some(_) => {}
            }
        }
        for public_key in device.peers.keys().filter(|k| !wanted.contains_key(k)) {
            steps.push(Step::RemovePeer {
                tenant: tenant.clone(),
                interface: interface.clone(),
                public_key: public_key.clone(),
            });
        }
    }
    let interfaces: BTreeSet<&str> = served.iter().map(|t| t.gateway.interface.as_str()).collect();
    for name in observed.links.keys().filter(|n| owned(n) && !interfaces.contains(n.as_str())) {
        steps.push(Step::RemoveInterface { interface: name.clone() });
    }
    let tenants: BTreeSet<&str> = served.iter().map(|t| t.name.as_str()).collect();
    for tenant in observed.keys.keys().filter(|t| !tenants.contains(t.as_str())) {
        steps.push(Step::RemoveKey { tenant: tenant.clone() });
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assignment::{GatewaySpec, PeerSpec};

    fn key(n: u8) -> WgKey {
        WgKey::from_bytes(&[n; 32])
    }

    fn tenant(name: &str, index: u32, peers: &[(u8, u8, bool)]) -> GatewayTenant {
        GatewayTenant {
            name: name.into(),
            revision: 1,
            lifecycle: Lifecycle::Run,
            index,
            gateway: GatewaySpec {
                vpn_subnet: format!("198.18.{index}.0/24").parse().expect("cidr"),
                gateway_address: Ipv4Addr::new(198, 18, index as u8, 1),
                interface: format!("bqt{index}"),
                listen_port: 51820 + index as u16,
                bandwidth_bps: 0,
                device_to_device: false,
                peers: peers
                    .iter()
                    .map(|&(k, host, enabled)| PeerSpec {
                        id: format!("d{k}"),
                        name: format!("dev{k}"),
                        public_key: key(k),
                        address: Ipv4Addr::new(198, 18, index as u8, host),
                        enabled,
                    })
                    .collect(),
                exposures: vec![],
                rules: vec![],
                blocked_domains: vec![],
            },
        }
    }

    /// The host as it is once `desired` was applied (what the apply of `plan` leads to).
    fn converged(desired: &[GatewayTenant]) -> Observed {
        let mut o = Observed::default();
        for t in desired.iter().filter(|t| t.lifecycle != Lifecycle::Deleted) {
            let g = &t.gateway;
            o.keys.insert(t.name.clone(), key(200));
            o.links.insert(
                g.interface.clone(),
                LinkState {
                    index: t.index + 10,
                    up: true,
                    mtu: MTU,
                    addresses: vec![(g.gateway_address, g.vpn_subnet.prefix_len())],
                },
            );
            let peers = if t.lifecycle == Lifecycle::Run {
                g.peers
                    .iter()
                    .filter(|p| p.enabled)
                    .map(|p| {
                        (p.public_key.clone(), PeerState { allowed_ips: vec![(p.address, 32)], ..Default::default() })
                    })
                    .collect()
            } else {
                BTreeMap::new()
            };
            o.devices.insert(
                g.interface.clone(),
                DeviceState { public_key: Some(key(200)), listen_port: Some(g.listen_port), peers },
            );
        }
        o
    }

    #[test]
    fn converged_host_yields_empty_plan() {
        let desired = vec![tenant("acme", 1, &[(1, 10, true), (2, 11, false)]), tenant("globex", 2, &[])];
        assert_eq!(plan(&desired, &converged(&desired)), vec![]);
    }

    #[test]
    fn new_tenant_gets_key_interface_address_and_enabled_peers_only() {
        let desired = vec![tenant("acme", 1, &[(1, 10, true), (2, 11, false)])];
        let steps = plan(&desired, &Observed::default());
        let shown: Vec<String> = steps.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "[acme] generate the WireGuard key",
                "[acme] create interface bqt1",
                "[acme] bqt1: private key, listen port 51821",
                "[acme] bqt1: add address 198.18.1.1/24",
                "[acme] bqt1: mtu 1420, up",
                &format!("[acme] bqt1: add peer {} allowed-ips 198.18.1.10/32", key(1).as_str()),
            ]
        );
    }

    #[test]
    fn peers_change_by_diff_never_by_replacing_all() {
        let before = vec![tenant("acme", 1, &[(1, 10, true), (2, 11, true), (3, 12, true)])];
        let observed = converged(&before);
        // Device 2 disabled, device 3 moved, device 4 added; device 1 untouched.
        let after = vec![tenant("acme", 1, &[(1, 10, true), (2, 11, false), (3, 13, true), (4, 14, true)])];
        let steps = plan(&after, &observed);
        let iface = || "bqt1".to_string();
        assert_eq!(
            steps,
            vec![
                Step::UpdatePeer {
                    tenant: "acme".into(),
                    interface: iface(),
                    public_key: key(3),
                    address: Ipv4Addr::new(198, 18, 1, 13)
                },
                Step::AddPeer {
                    tenant: "acme".into(),
                    interface: iface(),
                    public_key: key(4),
                    address: Ipv4Addr::new(198, 18, 1, 14)
                },
                Step::RemovePeer { tenant: "acme".into(), interface: iface(), public_key: key(2) },
            ]
        );
    }

    #[test]
    fn suspended_tenant_loses_its_peers_and_keeps_interface_key_and_port() {
        let running = vec![tenant("acme", 1, &[(1, 10, true), (2, 11, true)])];
        let observed = converged(&running);
        let mut suspended = running.clone();
        suspended[0].lifecycle = Lifecycle::Suspended;
        let steps = plan(&suspended, &observed);
        assert_eq!(steps.len(), 2, "{steps:?}");
        assert!(steps.iter().all(|s| matches!(s, Step::RemovePeer { .. })), "{steps:?}");
        // Resumed: the same interface and key, the peers come back.
        let mut after_suspend = observed.clone();
        after_suspend.devices.get_mut("bqt1").expect("device").peers.clear();
        let steps = plan(&running, &after_suspend);
        assert_eq!(steps.len(), 2, "{steps:?}");
        assert!(steps.iter().all(|s| matches!(s, Step::AddPeer { .. })), "{steps:?}");
    }

    #[test]
    fn gone_and_deleted_tenants_lose_interface_and_key_and_foreign_links_are_never_planned() {
        let desired = vec![tenant("acme", 1, &[(1, 10, true)]), tenant("globex", 2, &[])];
        let mut observed = converged(&desired);
        // Not ours: never in a plan (observation only keeps owned names, but the plan checks too).
        observed.links.insert("eth0".into(), LinkState::default());
        observed.links.insert("bqtx".into(), LinkState::default());
        let mut now = vec![desired[0].clone(), desired[1].clone()];
        now[1].lifecycle = Lifecycle::Deleted;
        let steps = plan(&now, &observed);
        assert_eq!(
            steps,
            vec![Step::RemoveInterface { interface: "bqt2".into() }, Step::RemoveKey { tenant: "globex".into() }]
        );
        assert_eq!(plan(&now[..1], &observed), steps, "deleted and gone are the same");
    }

    #[test]
    fn drift_is_repaired_peer_interface_address_and_link_state() {
        let desired = vec![tenant("acme", 1, &[(1, 10, true)])];
        let good = converged(&desired);
        // A peer removed by hand.
        let mut o = good.clone();
        o.devices.get_mut("bqt1").expect("device").peers.clear();
        assert!(matches!(plan(&desired, &o)[..], [Step::AddPeer { .. }]));
        // The interface deleted by hand: made again with the stored key (no new key).
        let mut o = good.clone();
        o.links.clear();
        o.devices.clear();
        let steps = plan(&desired, &o);
        assert!(matches!(steps[0], Step::CreateInterface { .. }), "{steps:?}");
        assert!(!steps.iter().any(|s| matches!(s, Step::GenerateKey { .. })), "{steps:?}");
        assert_eq!(steps.len(), 5, "create, configure, address, up, peer: {steps:?}");
        // A foreign address added, the link set down, the port changed.
        let mut o = good.clone();
        let link = o.links.get_mut("bqt1").expect("link");
        link.addresses.push((Ipv4Addr::new(192, 0, 2, 9), 24));
        link.up = false;
        o.devices.get_mut("bqt1").expect("device").listen_port = Some(1);
        let steps = plan(&desired, &o);
        assert!(matches!(steps[0], Step::ConfigureDevice { listen_port: 51821, .. }), "{steps:?}");
        assert!(matches!(steps[1], Step::RemoveAddress { prefix_len: 24, .. }), "{steps:?}");
        assert!(matches!(steps[2], Step::LinkUp { .. }), "{steps:?}");
        // A link with our name but no WireGuard device on it: removed and made again.
        let mut o = good;
        o.devices.clear();
        let steps = plan(&desired, &o);
        assert_eq!(steps[0], Step::RemoveInterface { interface: "bqt1".into() });
        assert!(matches!(steps[1], Step::CreateInterface { .. }));
    }

    #[test]
    fn a_second_tenant_on_the_same_interface_is_refused_not_merged() {
        let mut b = tenant("globex", 1, &[(9, 10, true)]);
        b.name = "globex".into();
        let desired = vec![tenant("acme", 1, &[]), b];
        let (served, refused) = served(&desired);
        assert_eq!(served.len(), 1);
        assert_eq!(refused, vec![("globex".to_string(), "interface bqt1 is acme's".to_string())]);
        assert!(!plan(&desired, &Observed::default()).iter().any(|s| s.to_string().contains(key(9).as_str())));
    }

    #[test]
    fn forwarding_off_is_turned_on_once_a_tenant_is_served() {
        let desired = vec![tenant("acme", 1, &[(1, 10, true)])];
        let mut observed = converged(&desired);
        observed.forwarding_off = true;
        assert_eq!(plan(&desired, &observed), vec![Step::EnableForwarding]);
        assert_eq!(plan(&[], &Observed { forwarding_off: true, ..Default::default() }), vec![], "no tenant, no change");
    }

    #[test]
    fn only_bqt_digits_are_owned() {
        assert!(owned("bqt1") && owned("bqt123456789012"));
        assert!(!owned("bqt") && !owned("bqtx") && !owned("wg0") && !owned("bqt1234567890123"));
    }
}
