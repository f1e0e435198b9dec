//! A device's WireGuard config in wg-quick's format, rendered from the state: its address, the
//! tenant gateway's public key (as the gateway reported it) and endpoint, the tenant subnet, and —
//! for a device with a `--source keep` exposure — the policy routing that sends replies to outside
//! clients back through the tunnel. The private key is the user's: the file has a placeholder.

use super::device::Device;
use super::exposure::SourceMode;
use super::State;
use std::fmt::Write as _;

/// The rendered file, and what the coordinator does not know yet (the file says so too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    pub text: String,
    pub missing: Vec<String>,
}

pub const PRIVATE_KEY_PLACEHOLDER: &str = "<this device's private key: wg genkey on the device>";

/// What a device needs to bring its tunnel up (the enrolled client gets it over gRPC; `wg_quick`
/// renders the same as a file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    pub address: std::net::Ipv4Addr,
    pub subnet: String,
    pub gateway_address: String,
    /// The gateway's key for the tenant's interface, once the gateway has reported it.
    pub gateway_public_key: Option<String>,
    /// `public-address:listen-port` of the gateway, once known.
    pub endpoint: Option<String>,
    pub keepalive_seconds: u32,
    /// An exposure of the device keeps the client's source: replies must go back through the tunnel.
    pub source_keep: bool,
}

/// The tunnel of `device` as the state knows it.
pub fn tunnel(state: &State, device: &Device) -> Tunnel {
    let tenant = state.tenants.get(&device.tenant);
    let listen_port = tenant.map_or(0, |t| t.network.listen_port);
    let gateway = tenant.and_then(|t| t.placement.gateway_node);
    Tunnel {
        address: device.address,
        subnet: tenant.map_or_else(String::new, |t| t.network.vpn_subnet.clone()),
        gateway_address: tenant.map_or_else(String::new, |t| t.network.gateway_address.clone()),
        gateway_public_key: gateway
            .and_then(|g| tenant?.node_status.get(&g)?.gateway.as_ref()?.public_key.clone())
            .map(|k| k.to_string()),
        endpoint: gateway
            .and_then(|g| state.nodes.get(&g)?.gateway.settings)
            .map(|s| format!("{}:{listen_port}", s.public_address)),
        keepalive_seconds: 25,
        source_keep: state.exposures.values().any(|x| x.device_id == device.id && x.source == SourceMode::Keep),
    }
}

pub fn wg_quick(state: &State, device: &Device) -> DeviceConfig {
    let mut missing = Vec::new();
    let tenant = state.tenants.get(&device.tenant);
    let listen_port = tenant.map_or(0, |t| t.network.listen_port);
    let gateway = tenant.and_then(|t| t.placement.gateway_node);
    let Tunnel { subnet, gateway_public_key: public_key, endpoint, source_keep: keep, .. } = tunnel(state, device);
    let mut t = String::new();
    let _ = writeln!(t, "# Berqenas device {} of tenant {} ({})", device.name, device.tenant, device.id);
    let _ = writeln!(t, "[Interface]");
    let _ = writeln!(t, "# The private key never leaves the device; the coordinator knows only its public key");
    let _ = writeln!(t, "# {}.", device.public_key);
    let _ = writeln!(t, "PrivateKey = {PRIVATE_KEY_PLACEHOLDER}");
    let _ = writeln!(t, "Address = {}/32", device.address);
    if keep {
        // Replies to outside clients of a `--source keep` exposure carry the client's own address
        // as destination; without this they would leave through the device's default route and
        // be dropped. Table 51820+N holds a default route through the tunnel, used only for
        // packets from the device's tunnel address; everything else keeps the host's routes.
        let table = listen_port;
        let _ = writeln!(t, "# --source keep exposure: outside clients reach this device with their own address.");
        let _ = writeln!(t, "# wg-quick must not route everything through the tunnel (Table = off); instead the");
        let _ = writeln!(t, "# tenant subnet goes through it, and replies from {} use table {table},", device.address);
        let _ = writeln!(t, "# whose default route is the tunnel. Other traffic of this host is unchanged.");
        let _ = writeln!(t, "Table = off");
        let _ = writeln!(t, "PostUp = ip route add {subnet} dev %i");
        let _ = writeln!(t, "PostUp = ip route add default dev %i table {table}");
        let _ = writeln!(t, "PostUp = ip rule add from {} table {table} priority 10000", device.address);
        let _ = writeln!(t, "PreDown = ip rule del from {} table {table} priority 10000", device.address);
        let _ = writeln!(t, "PreDown = ip route del default dev %i table {table}");
    }
    let _ = writeln!(t);
    let _ = writeln!(t, "[Peer]");
    let _ = writeln!(t, "# the gateway of tenant {}", device.tenant);
    match &public_key {
        Some(k) => {
            let _ = writeln!(t, "PublicKey = {k}");
        }
        None => {
            missing.push("the gateway has not reported its public key yet".to_string());
            let _ = writeln!(t, "# PublicKey: not known yet (the gateway has not reported it); ask again later");
        }
    }
    match endpoint {
        Some(a) => {
            let _ = writeln!(t, "Endpoint = {a}");
        }
        None => {
            let why = match gateway {
                Some(g) => format!("gateway node {g} joined without --public-address: no endpoint is known"),
                None => "the tenant has no gateway node yet: no endpoint is known".to_string(),
            };
            let _ = writeln!(t, "# Endpoint: {why}");
            missing.push(why);
        }
    }
    // With `keep`, packets from outside clients arrive through the tunnel with their own source
    // address, so the peer must accept any source; routing is limited by the lines above.
    let allowed = if keep { "0.0.0.0/0" } else { subnet.as_str() };
    let _ = writeln!(t, "AllowedIPs = {allowed}");
    let _ = writeln!(t, "PersistentKeepalive = 25");
    DeviceConfig { text: t, missing }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::device::{DeviceName, NewDevice};
    use crate::state::exposure::{NewExposure, Protocol};
    use crate::state::gateway::{GatewaySettings, PortRange};
    use crate::state::node::NodeRole;
    use crate::state::tests_support::{booted, create, next_index, register};
    use crate::state::{Command, Meta, Op};

    fn apply(s: &mut State, op: Op) {
        let i = next_index(s);
        let meta = Meta { time_ms: i, actor: "t".into(), source: "t".into(), key_role: None, user_generation: None };
        let (r, _) = s.apply(i, &Command { meta, op });
        assert!(r.is_ok(), "{r:?}");
    }

    #[test]
    fn config_names_the_gateway_and_keep_exposures_add_policy_routing() {
        let mut s = booted();
        register(&mut s, 1, &[NodeRole::Gateway, NodeRole::Db]);
        if let Some(n) = s.nodes.get_mut(&1) {
            n.gateway.settings = Some(GatewaySettings {
                public_address: "198.51.100.10".parse().expect("ip"),
                public_ports: PortRange::new(15000, 15010).expect("range"),
            });
        }
        let t = create(&mut s, "acme");
        let name = DeviceName::parse("plc1").expect("name");
        let key = crate::state::gateway::WgKey::from_bytes(&[1; 32]);
        apply(
            &mut s,
            Op::AddDevice(NewDevice { tenant: t.name.clone(), name: name.clone(), public_key: key, address: None }),
        );
        let device = s.device(&t.name, &name).cloned().expect("device");
        let plain = wg_quick(&s, &device);
        assert!(plain.text.contains("Address = 198.18.1.2/32"), "{}", plain.text);
        assert!(plain.text.contains("Endpoint = 198.51.100.10:51821"), "{}", plain.text);
        assert!(plain.text.contains("AllowedIPs = 198.18.1.0/24"), "{}", plain.text);
        assert!(!plain.text.contains("Table = off"));
        assert_eq!(plain.missing, vec!["the gateway has not reported its public key yet".to_string()]);
        apply(
            &mut s,
            Op::AddExposure(NewExposure {
                tenant: t.name.clone(),
                device: name,
                port: 5432,
                public_port: None,
                protocol: Protocol::Tcp,
                allow: vec![],
                rate_per_second: 0,
                source: SourceMode::Keep,
            }),
        );
        let keep = wg_quick(&s, &device);
        for line in [
            "Table = off",
            "PostUp = ip route add 198.18.1.0/24 dev %i",
            "PostUp = ip route add default dev %i table 51821",
            "PostUp = ip rule add from 198.18.1.2 table 51821 priority 10000",
            "PreDown = ip rule del from 198.18.1.2 table 51821 priority 10000",
            "AllowedIPs = 0.0.0.0/0",
        ] {
            assert!(keep.text.contains(line), "{line}: {}", keep.text);
        }
    }
}
