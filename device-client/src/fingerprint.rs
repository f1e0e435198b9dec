//! What the device tells the coordinator about itself (enrollment and every heartbeat): SHA-256
//! hex of each non-loopback interface MAC and of the machine id, OS name and version,
//! architecture and client version. Raw MACs and the machine id never leave this module.

use serde::Serialize;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fingerprint {
    pub mac_hashes: Vec<String>,
    pub machine_id_hash: String,
    pub os_name: String,
    pub os_version: String,
    pub arch: String,
    pub client_version: String,
}

impl From<Fingerprint> for berqenas_proto::device::Fingerprint {
    fn from(f: Fingerprint) -> Self {
        let Fingerprint { mac_hashes, machine_id_hash, os_name, os_version, arch, client_version } = f;
        Self { mac_hashes, machine_id_hash, os_name, os_version, arch, client_version }
    }
}

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Lowercase `aa:bb:…`, or None for an all-zero or malformed address.
pub fn normalize_mac(raw: &str) -> Option<String> {
    let mac = raw.trim().to_ascii_lowercase();
    let parts: Vec<&str> = mac.split(':').collect();
    let ok = parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    (ok && parts.iter().any(|p| *p != "00")).then_some(mac)
}

/// Builds the fingerprint from raw facts: hashes, deduplicates and sorts the MACs.
pub fn from_parts(macs: &[String], machine_id: &str, os_version: String) -> Fingerprint {
    let mut mac_hashes: Vec<String> = macs.iter().filter_map(|m| normalize_mac(m)).map(|m| sha256_hex(&m)).collect();
    mac_hashes.sort();
    mac_hashes.dedup();
    let machine_id = machine_id.trim();
    Fingerprint {
        mac_hashes,
        machine_id_hash: if machine_id.is_empty() { String::new() } else { sha256_hex(machine_id) },
        os_name: std::env::consts::OS.to_string(),
        os_version,
        arch: std::env::consts::ARCH.to_string(),
        client_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

#[cfg(not(windows))]
pub fn collect() -> Fingerprint {
    let mut macs = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/sys/class/net") {
        for entry in entries.flatten() {
            let dir = entry.path();
            // ARPHRD_LOOPBACK (772): skip loopback whatever it is named.
            let kind = std::fs::read_to_string(dir.join("type")).unwrap_or_default();
            if kind.trim() == "772" || entry.file_name() == "lo" {
                continue;
            }
            if let Ok(mac) = std::fs::read_to_string(dir.join("address")) {
                macs.push(mac);
            }
        }
    }
    let machine_id = std::fs::read_to_string("/etc/machine-id")
        .or_else(|_| std::fs::read_to_string("/var/lib/dbus/machine-id"))
        .unwrap_or_default();
    from_parts(&macs, &machine_id, os_release())
}

/// PRETTY_NAME from os-release (stable across kernel updates), else the kernel release.
#[cfg(not(windows))]
fn os_release() -> String {
    let text = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .unwrap_or_default();
    let pretty = text.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=")).map(|v| v.trim_matches('"').to_string());
    pretty.unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
    })
}

#[cfg(windows)]
pub fn collect() -> Fingerprint {
    let sys = crate::windows::system::facts();
    from_parts(&sys.macs, &sys.machine_guid, sys.os_version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_hashed_normalized_sorted_and_zero_ones_dropped() {
        let fp = from_parts(
            &["AA:BB:CC:DD:EE:FF\n".into(), "00:00:00:00:00:00".into(), "aa:bb:cc:dd:ee:ff".into(), "junk".into()],
            "0123456789abcdef\n",
            "Test OS 1".into(),
        );
        assert_eq!(fp.mac_hashes, vec![sha256_hex("aa:bb:cc:dd:ee:ff")]);
        assert_eq!(fp.machine_id_hash, sha256_hex("0123456789abcdef"));
        assert!(!serde_json::to_string(&fp).unwrap().contains("aa:bb"), "no raw MAC in the output");
        assert_eq!(from_parts(&[], "  ", String::new()).machine_id_hash, "");
    }

    #[test]
    fn this_host_has_a_fingerprint() {
        let fp = collect();
        assert_eq!(fp.os_name, std::env::consts::OS);
        assert!(fp.mac_hashes.iter().all(|h| h.len() == 64));
    }
}
