//! `berqenas-device export`: the tunnel as a wg-quick configuration file for the official
//! WireGuard apps (the private key included: it goes to the terminal of the device's owner, never
//! over the network), or the same text as a QR code drawn in the terminal. Pure renderers.

use crate::keys::WgPrivateKey;
use crate::state::Device;
use anyhow::bail;

/// Routing table for replies from the tunnel address (`--source keep` exposures).
pub const SOURCE_KEEP_TABLE: u32 = 51820;

/// The peer's AllowedIPs: the tenant subnet; everything when an exposure keeps client source
/// addresses (packets from the gateway then carry any source, and WireGuard drops a source
/// outside AllowedIPs).
pub fn allowed_ips(d: &Device) -> String {
    if d.tunnel.source_keep {
        "0.0.0.0/0".to_string()
    } else {
        d.tunnel.subnet.clone()
    }
}

fn comment_safe(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).collect()
}

/// wg-quick text. Every field was validated when it was stored (`enroll::tunnel_from_pb`).
pub fn wg_quick(d: &Device, key: &WgPrivateKey) -> anyhow::Result<String> {
    let t = &d.tunnel;
    if !t.ready() {
        bail!("the gateway has not reported its key and endpoint yet: run `berqenas-device status` later");
    }
    let mut out = format!(
        "# Berqenas device {} ({}), tenant {}\n[Interface]\nPrivateKey = {}\nAddress = {}/32\n",
        comment_safe(&d.device_name),
        comment_safe(&d.device_id),
        comment_safe(&d.tenant),
        key.to_base64(),
        t.address
    );
    if t.source_keep {
        // Linux wg-quick: only replies from the tunnel address use the tunnel for everything.
        out.push_str(&format!(
            "Table = off\nPostUp = ip route add {subnet} dev %i; ip route add default dev %i table {table}; ip rule add from {addr}/32 table {table}\nPostDown = ip rule del from {addr}/32 table {table}\n",
            subnet = t.subnet,
            table = SOURCE_KEEP_TABLE,
            addr = t.address
        ));
    }
    out.push_str(&format!(
        "\n[Peer]\nPublicKey = {}\nEndpoint = {}\nAllowedIPs = {}\n",
        t.gateway_public_key,
        t.endpoint,
        allowed_ips(d)
    ));
    if t.keepalive_seconds > 0 {
        out.push_str(&format!("PersistentKeepalive = {}\n", t.keepalive_seconds));
    }
    Ok(out)
}

/// `text` as a QR code of Unicode half blocks, light on dark so terminals with a dark
/// background show it the way phone cameras expect.
pub fn qr(text: &str) -> anyhow::Result<String> {
    use qrcode::render::unicode::Dense1x2;
    let code = qrcode::QrCode::new(text.as_bytes()).map_err(|e| anyhow::anyhow!("cannot encode a QR code: {e}"))?;
    let mut out =
        code.render::<Dense1x2>().dark_color(Dense1x2::Light).light_color(Dense1x2::Dark).quiet_zone(true).build();
    out.push('\n');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Tunnel;

    pub fn device(source_keep: bool) -> Device {
        Device {
            tenant: "acme".into(),
            device_id: "d1".into(),
            device_name: "plc1\n[Peer]".into(),
            state: "active".into(),
            tunnel: Tunnel {
                address: "198.18.1.10".parse().unwrap(),
                subnet: "198.18.1.0/24".into(),
                gateway_address: "198.18.1.1".parse().unwrap(),
                gateway_public_key: "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=".into(),
                endpoint: "203.0.113.1:51820".into(),
                keepalive_seconds: 25,
                source_keep,
            },
            realtime_endpoint: String::new(),
            coordinators: vec!["127.0.0.1:7301".into()],
            labels: Default::default(),
            heartbeat_seconds: None,
            interface: "bqd0".into(),
        }
    }

    #[test]
    fn wg_quick_names_the_gateway_and_the_subnet() {
        let key = WgPrivateKey::from_base64("yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=").unwrap();
        let text = wg_quick(&device(false), &key).unwrap();
        assert_eq!(
            text,
            "# Berqenas device plc1[Peer] (d1), tenant acme\n[Interface]\nPrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\nAddress = 198.18.1.10/32\n\n[Peer]\nPublicKey = HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=\nEndpoint = 203.0.113.1:51820\nAllowedIPs = 198.18.1.0/24\nPersistentKeepalive = 25\n"
        );
        assert_eq!(text.matches("[Peer]").count(), 2, "the name's bracket stays inside its comment line");
        assert!(text.lines().filter(|l| l.starts_with("[Peer]")).count() == 1);
    }

    #[test]
    fn source_keep_routes_replies_from_the_tunnel_address_back_through_it() {
        let key = WgPrivateKey::generate().unwrap();
        let text = wg_quick(&device(true), &key).unwrap();
        assert!(text.contains("AllowedIPs = 0.0.0.0/0\n"));
        assert!(text.contains("Table = off\n"));
        assert!(text.contains("ip rule add from 198.18.1.10/32 table 51820"));
    }

    #[test]
    fn a_tunnel_without_gateway_is_not_exported() {
        let mut d = device(false);
        d.tunnel.gateway_public_key.clear();
        assert!(wg_quick(&d, &WgPrivateKey::generate().unwrap()).is_err());
    }

    #[test]
    fn qr_is_drawn_with_half_blocks() {
        let q = qr("[Interface]\nPrivateKey = x\n").unwrap();
        assert!(q.lines().count() > 10);
        assert!(q.contains('█') || q.contains('▀') || q.contains('▄'));
    }
}
