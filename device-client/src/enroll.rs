//! `berqenas-device enroll`: makes the WireGuard key pair and the TLS key here, sends only the
//! public key, a CSR and the fingerprint with the one-time token to a coordinator trusted by its
//! pinned CA, and stores what it answers. `device.json` is written last: a directory holding it
//! is a complete enrollment. The token is never logged or stored.

use crate::connect;
use crate::keys::WgPrivateKey;
use crate::state::{valid_endpoint, valid_interface, valid_wg_key, Device, StateDir, Tunnel};
use anyhow::{bail, Context};
use berqenas_proto::device as pb;

pub struct EnrollArgs {
    pub coordinator: String,
    pub token: String,
    pub ca_pin: Option<String>,
    pub name: Option<String>,
    pub interface: String,
}

fn valid_pin(pin: &str) -> bool {
    pin.strip_prefix("sha256:").is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The coordinator's tunnel description, checked so nothing in it can reach a config file raw.
pub fn tunnel_from_pb(t: pb::TunnelConfig) -> anyhow::Result<Tunnel> {
    let pb::TunnelConfig {
        address,
        subnet,
        gateway_address,
        gateway_public_key,
        endpoint,
        keepalive_seconds,
        source_keep,
    } = t;
    let tunnel = Tunnel {
        address: address.parse().with_context(|| format!("the coordinator sent a bad address {address:?}"))?,
        subnet: subnet.clone(),
        gateway_address: gateway_address
            .parse()
            .with_context(|| format!("the coordinator sent a bad gateway address {gateway_address:?}"))?,
        gateway_public_key,
        endpoint,
        keepalive_seconds: keepalive_seconds.min(3600),
        source_keep,
    };
    tunnel.subnet_parts().context("the coordinator sent a bad subnet")?;
    if !valid_wg_key(&tunnel.gateway_public_key) {
        bail!("the coordinator sent a bad gateway key");
    }
    if !valid_endpoint(&tunnel.endpoint) {
        bail!("the coordinator sent a bad gateway endpoint {:?}", tunnel.endpoint);
    }
    Ok(tunnel)
}

pub fn state_name(state: i32) -> &'static str {
    match pb::DeviceState::try_from(state) {
        Ok(pb::DeviceState::Active) => "active",
        Ok(pb::DeviceState::Pending) => "pending",
        Ok(pb::DeviceState::Disabled) => "disabled",
        Ok(pb::DeviceState::Unspecified) | Err(_) => "unknown",
    }
}

/// Addresses the coordinator names, kept only when well formed; `first` stays first.
pub fn coordinator_list(first: Option<&str>, named: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = first.map(str::to_string).into_iter().collect();
    for c in named {
        if valid_endpoint(&c) && !c.is_empty() && !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

/// An enrolled device and whether its gateway had added the peer when the coordinator answered.
pub struct Enrolled {
    pub device: Device,
    pub gateway_has_peer: bool,
}

pub async fn enroll(dir: &StateDir, args: EnrollArgs) -> anyhow::Result<Enrolled> {
    let addr = connect::coordinator_addr(&args.coordinator)?;
    let Some(pin) = args.ca_pin.as_deref() else {
        bail!("--ca-pin sha256:<hex> is required: `device token create` prints it with the token");
    };
    if !valid_pin(pin) {
        bail!("--ca-pin must be sha256:<64 hex digits> as printed by `device token create`");
    }
    if args.token.is_empty() || args.token.len() > 256 || !args.token.bytes().all(|b| b.is_ascii_graphic()) {
        bail!("the token is malformed");
    }
    if !valid_interface(&args.interface) {
        bail!("--interface must be 1-15 letters, digits, '_' or '-'");
    }
    let name = args.name.unwrap_or_default();
    if name.len() > 64 {
        bail!("--name is longer than 64 characters");
    }
    if dir.enrolled() {
        bail!("{} already holds an enrolled device; use another --state-dir", dir.root().display());
    }
    dir.create()?;
    // Keys are made and stored before the request, so an answer is never lost to a failed write.
    let wg = WgPrivateKey::generate()?;
    let tls = berqenas_pki::new_key_and_csr("berqenas device")?;
    dir.save_wg_private_key(&wg)?;
    let mut client = connect::pinned(&addr, pin).await?;
    let request = pb::EnrollRequest {
        token: args.token,
        wg_public_key: wg.public_base64(),
        csr_pem: tls.csr_pem.clone(),
        fingerprint: Some(crate::fingerprint::collect().into()),
        name,
    };
    let resp = client
        .enroll(request)
        .await
        .map_err(|s| anyhow::anyhow!("enrollment refused ({:?}): {}", s.code(), s.message()))?
        .into_inner();
    let pb::EnrollResponse {
        tenant,
        device_id,
        device_name,
        cert_chain_pem,
        ca_pem,
        tunnel,
        realtime_endpoint,
        state,
        coordinators,
        labels,
        gateway_has_peer,
        heartbeat_seconds,
    } = resp;
    let identity = berqenas_pki::peer_identity(&berqenas_pki::first_cert_der(&cert_chain_pem)?)?;
    match &identity {
        berqenas_pki::Identity::Device { tenant: t, id } if *t == tenant && *id == device_id => {}
        other => bail!("the coordinator issued a certificate for {other}, not for device {tenant}/{device_id}"),
    }
    if !valid_endpoint(&realtime_endpoint) {
        bail!("the coordinator sent a bad realtime endpoint");
    }
    let device = Device {
        tenant,
        device_id,
        device_name,
        state: state_name(state).to_string(),
        tunnel: tunnel_from_pb(tunnel.context("the coordinator sent no tunnel configuration")?)?,
        realtime_endpoint,
        coordinators: coordinator_list(Some(&addr), coordinators),
        labels: labels.into_iter().collect(),
        interface: args.interface,
        heartbeat_seconds: (heartbeat_seconds > 0).then_some(heartbeat_seconds),
    };
    dir.save_ca(&ca_pem)?;
    dir.save_tls_identity(&tls.key_pem, &cert_chain_pem)?;
    dir.save(&device)?;
    Ok(Enrolled { device, gateway_has_peer })
}

/// What `enroll` prints: who the device is now and what to do next.
pub fn summary(e: &Enrolled) -> String {
    let d = &e.device;
    let next = match d.state.as_str() {
        "pending" => "waiting for `device approve`; `berqenas-device run` picks it up",
        _ if !d.tunnel.ready() => {
            "the gateway has not reported its key yet; `berqenas-device run` brings the tunnel up when it has"
        }
        _ if !e.gateway_has_peer => {
            "the gateway has not confirmed this device yet; `berqenas-device up` (or `run`) retries the handshake"
        }
        _ => "bring the tunnel up with `berqenas-device up` (or `berqenas-device run` as a service)",
    };
    format!(
        "enrolled device {} ({}) in tenant {}: address {}, state {}\n{next}",
        d.device_name, d.device_id, d.tenant, d.tunnel.address, d.state
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tunnel() -> pb::TunnelConfig {
        pb::TunnelConfig {
            address: "198.18.1.10".into(),
            subnet: "198.18.1.0/24".into(),
            gateway_address: "198.18.1.1".into(),
            gateway_public_key: String::new(),
            endpoint: String::new(),
            keepalive_seconds: 25,
            source_keep: false,
        }
    }

    #[test]
    fn a_gateway_not_yet_known_is_a_tunnel_not_ready() {
        let t = tunnel_from_pb(tunnel()).unwrap();
        assert!(!t.ready());
        assert_eq!(t.subnet_parts().unwrap().1, 24);
    }

    #[test]
    fn hostile_tunnel_fields_are_refused() {
        let bad_endpoint = pb::TunnelConfig { endpoint: "203.0.113.1:51820\n[Peer]".into(), ..tunnel() };
        assert!(tunnel_from_pb(bad_endpoint).is_err());
        let bad_address = pb::TunnelConfig { address: "198.18.1.10/32\nDNS=1.1.1.1".into(), ..tunnel() };
        assert!(tunnel_from_pb(bad_address).is_err());
        let bad_subnet = pb::TunnelConfig { subnet: "0.0.0.0/0, ::/0".into(), ..tunnel() };
        assert!(tunnel_from_pb(bad_subnet).is_err());
    }

    #[test]
    fn pins_and_coordinator_lists_are_checked() {
        assert!(valid_pin(&format!("sha256:{}", "ab".repeat(32))));
        assert!(!valid_pin("sha256:abc"));
        let list = coordinator_list(
            Some("127.0.0.1:7301"),
            vec!["127.0.0.1:7301".into(), "bad\n:1".into(), "127.0.0.2:7301".into()],
        );
        assert_eq!(list, ["127.0.0.1:7301", "127.0.0.2:7301"]);
    }
}
