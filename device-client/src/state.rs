//! The device's state directory: what enrollment stored (`device.json`), the WireGuard private
//! key (`wg.key`), the TLS key with its certificate chain (`tls.pem`, one file so a renewal
//! replaces both at once), the cluster CA (`ca.pem`) and the event spool. Every file is written
//! atomically (temp, fsync, rename, fsync of the directory) with mode 0600 whatever the umask;
//! the directory is 0700 on Unix and, on Windows, carries an ACL for SYSTEM and Administrators
//! only. Nothing here is ever logged.

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// `/var/lib/berqenas/device` on Unix, `%ProgramData%\Berqenas\device` on Windows.
pub fn default_dir() -> PathBuf {
    if cfg!(windows) {
        let base = std::env::var_os("ProgramData").map_or_else(|| PathBuf::from(r"C:\ProgramData"), PathBuf::from);
        base.join("Berqenas").join("device")
    } else {
        PathBuf::from("/var/lib/berqenas/device")
    }
}

/// The tunnel as the coordinator described it, validated: nothing in it can break out of the
/// line of a WireGuard configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tunnel {
    pub address: Ipv4Addr,
    /// The tenant subnet, `a.b.c.d/len`.
    pub subnet: String,
    pub gateway_address: Ipv4Addr,
    /// Base64 WireGuard public key of the gateway; empty until the gateway reported it.
    pub gateway_public_key: String,
    /// host:port; empty until known.
    pub endpoint: String,
    pub keepalive_seconds: u32,
    pub source_keep: bool,
}

impl Tunnel {
    /// True when the gateway's key and endpoint are known, so the tunnel can come up.
    pub fn ready(&self) -> bool {
        !self.gateway_public_key.is_empty() && !self.endpoint.is_empty()
    }

    /// The subnet as (network, prefix length).
    pub fn subnet_parts(&self) -> anyhow::Result<(Ipv4Addr, u8)> {
        parse_cidr(&self.subnet)
    }
}

pub fn parse_cidr(s: &str) -> anyhow::Result<(Ipv4Addr, u8)> {
    let (a, l) = s.split_once('/').with_context(|| format!("{s:?} is not a.b.c.d/len"))?;
    let addr: Ipv4Addr = a.parse().with_context(|| format!("{s:?} is not a.b.c.d/len"))?;
    let len: u8 = l.parse().ok().filter(|l| *l <= 32).with_context(|| format!("{s:?} has a bad prefix length"))?;
    Ok((addr, len))
}

/// A base64 WireGuard key (32 bytes), or empty.
pub fn valid_wg_key(s: &str) -> bool {
    use base64::Engine as _;
    s.is_empty() || (s.len() == 44 && base64::engine::general_purpose::STANDARD.decode(s).is_ok_and(|b| b.len() == 32))
}

/// host:port with a plain host (letters, digits, `.`, `-`, `:` and brackets for IPv6), or empty.
pub fn valid_endpoint(s: &str) -> bool {
    if s.is_empty() {
        return true;
    }
    let Some((host, port)) = s.rsplit_once(':') else { return false };
    !host.is_empty()
        && s.len() <= 255
        && port.parse::<u16>().is_ok_and(|p| p > 0)
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

/// What enrollment (and later heartbeats) told the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub tenant: String,
    pub device_id: String,
    pub device_name: String,
    /// `active`, `pending` or `disabled`.
    pub state: String,
    pub tunnel: Tunnel,
    /// host:port of the realtime ingest; empty when the tenant has none.
    pub realtime_endpoint: String,
    /// host:port of the coordinators' node listeners, the one enrolled with first.
    pub coordinators: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// The WireGuard interface (tunnel) name.
    pub interface: String,
    /// How often the coordinator asks for a heartbeat, in seconds (`None`: a minute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_seconds: Option<u32>,
}

/// Interface names: what Linux accepts (at most 15 bytes) and what is safe as a Windows tunnel
/// name and file name.
pub fn valid_interface(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && !name.starts_with('-')
}

#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

const DEVICE: &str = "device.json";
const WG_KEY: &str = "wg.key";
const TLS: &str = "tls.pem";
const CA: &str = "ca.pem";

impl StateDir {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Creates the directory (and its parents) and restricts it to its owner (Unix: 0700;
    /// Windows: SYSTEM and Administrators).
    pub fn create(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.root).with_context(|| format!("create {}", self.root.display()))?;
        restrict_dir(&self.root)
    }

    pub fn enrolled(&self) -> bool {
        self.path(DEVICE).exists()
    }

    /// Writes `name` atomically, mode 0600.
    pub fn write(&self, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
        let path = self.path(name);
        berqenas_common::files::write_atomic(&path, bytes, 0o600).with_context(|| format!("write {}", path.display()))
    }

    pub fn read(&self, name: &str) -> anyhow::Result<String> {
        let path = self.path(name);
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))
    }

    pub fn load(&self) -> anyhow::Result<Device> {
        if !self.enrolled() {
            bail!("{} holds no enrolled device: run `berqenas-device enroll` first", self.root.display());
        }
        let text = self.read(DEVICE)?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a device state file", self.path(DEVICE).display()))
    }

    pub fn save(&self, device: &Device) -> anyhow::Result<()> {
        self.write(DEVICE, serde_json::to_string_pretty(device)?.as_bytes())
    }

    pub fn wg_private_key(&self) -> anyhow::Result<crate::keys::WgPrivateKey> {
        let text = self.read(WG_KEY)?;
        crate::keys::WgPrivateKey::from_base64(text.trim())
            .with_context(|| format!("{} holds no valid WireGuard private key", self.path(WG_KEY).display()))
    }

    pub fn save_wg_private_key(&self, key: &crate::keys::WgPrivateKey) -> anyhow::Result<()> {
        self.write(WG_KEY, format!("{}\n", key.to_base64()).as_bytes())
    }

    /// The TLS key followed by the certificate chain (leaf, then CA).
    pub fn tls_identity(&self) -> anyhow::Result<String> {
        self.read(TLS)
    }

    pub fn save_tls_identity(&self, key_pem: &str, chain_pem: &str) -> anyhow::Result<()> {
        let mut text = key_pem.trim_end().to_string();
        text.push('\n');
        text.push_str(chain_pem.trim_end());
        text.push('\n');
        self.write(TLS, text.as_bytes())
    }

    pub fn ca_pem(&self) -> anyhow::Result<String> {
        self.read(CA)
    }

    pub fn save_ca(&self, ca_pem: &str) -> anyhow::Result<()> {
        self.write(CA, ca_pem.as_bytes())
    }

    /// Validity of the device's certificate.
    pub fn cert_validity(&self) -> anyhow::Result<(std::time::SystemTime, std::time::SystemTime)> {
        let der = berqenas_pki::first_cert_der(&self.tls_identity()?)?;
        Ok(berqenas_pki::validity(&der)?)
    }
}

#[cfg(unix)]
fn restrict_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restrict {} to its owner", dir.display()))
}

#[cfg(windows)]
fn restrict_dir(dir: &Path) -> anyhow::Result<()> {
    crate::windows::acl::restrict_to_system_and_admins(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinator_text_cannot_break_a_config_line() {
        assert!(valid_endpoint("203.0.113.7:51820"));
        assert!(valid_endpoint("gw.example.net:51820"));
        assert!(valid_endpoint("[2001:db8::1]:51820"));
        assert!(valid_endpoint(""));
        assert!(!valid_endpoint("203.0.113.7:51820\nPostUp = rm -rf /"));
        assert!(!valid_endpoint("203.0.113.7"));
        assert!(!valid_endpoint("host:0"));
        assert!(valid_wg_key(""));
        assert!(!valid_wg_key("AAAA\nPostUp=x"));
        assert!(valid_interface("bqd0"));
        assert!(!valid_interface("a-very-long-interface"));
        assert!(!valid_interface("../x"));
        assert_eq!(parse_cidr("198.18.1.0/24").unwrap(), (Ipv4Addr::new(198, 18, 1, 0), 24));
        assert!(parse_cidr("198.18.1.0/33").is_err());
    }

    #[cfg(unix)]
    #[test]
    fn state_files_are_private_whatever_the_umask() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path().join("state"));
        dir.create().unwrap();
        dir.save_tls_identity("KEY", "CHAIN").unwrap();
        assert_eq!(std::fs::metadata(dir.path(TLS)).unwrap().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(dir.root()).unwrap().mode() & 0o777, 0o700);
        assert_eq!(dir.tls_identity().unwrap(), "KEY\nCHAIN\n");
    }
}
