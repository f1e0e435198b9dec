//! Network values both sides validate the same way: IPv4 networks in canonical form, WireGuard
//! public keys, port ranges and DNS names. Parsing is the validation: a value of these types is
//! safe to write into nft, netlink or a config file.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network with no host bits set (`198.18.1.0/24`, `203.0.113.7/32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    len: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    #[error("not an IPv4 network in the form a.b.c.d/len with no host bits set")]
    Cidr,
    #[error("not a WireGuard public key (44 characters of base64 for 32 bytes)")]
    Key,
    #[error("not a port range (first-last, 1-65535, first <= last)")]
    PortRange,
    #[error("not a domain name (letters, digits, hyphens; dot-separated labels; at most 253 characters)")]
    Domain,
}

impl Ipv4Cidr {
    /// `addr/len`, refusing host bits.
    pub fn new(addr: Ipv4Addr, len: u8) -> Result<Self, NetError> {
        if len > 32 || u32::from(addr) & !mask(len) != 0 {
            return Err(NetError::Cidr);
        }
        Ok(Ipv4Cidr { addr, len })
    }

    /// A single address as a /32.
    pub fn host(addr: Ipv4Addr) -> Self {
        Ipv4Cidr { addr, len: 32 }
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.len) == u32::from(self.addr)
    }

    /// The `n`th address of the network (0 is the network address itself), if inside it.
    pub fn nth(&self, n: u32) -> Option<Ipv4Addr> {
        let size = 1u64 << (32 - u32::from(self.len));
        (u64::from(n) < size).then(|| Ipv4Addr::from(u32::from(self.addr) + n))
    }
}

fn mask(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len.min(32))).unwrap_or(0)
}

impl Ipv4Cidr {
    /// `a.b.c.d/len` with host bits cleared (`203.0.113.7/24` is `203.0.113.0/24`): what a
    /// person writing an allowlist or a firewall rule means by it. The spelling is as strict as
    /// `from_str`'s; only the host bits are forgiven, and the value is kept canonical.
    pub fn parse_masking(s: &str) -> Result<Self, NetError> {
        let (addr, len) = split(s)?;
        Ipv4Cidr::new(Ipv4Addr::from(u32::from(addr) & mask(len)), len)
    }
}

/// The address and prefix length of `a.b.c.d/len` in canonical spelling.
fn split(s: &str) -> Result<(Ipv4Addr, u8), NetError> {
    let (addr, len) = s.split_once('/').ok_or(NetError::Cidr)?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| NetError::Cidr)?;
    // Only the canonical spelling: no leading zeros, no `+`, no spaces.
    if len.is_empty()
        || len.len() > 2
        || !len.bytes().all(|b| b.is_ascii_digit())
        || (len.len() == 2 && len.starts_with('0'))
    {
        return Err(NetError::Cidr);
    }
    let len: u8 = len.parse().map_err(|_| NetError::Cidr)?;
    if len > 32 {
        return Err(NetError::Cidr);
    }
    Ok((addr, len))
}

impl FromStr for Ipv4Cidr {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self, NetError> {
        let (addr, len) = split(s)?;
        Ipv4Cidr::new(addr, len)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl serde::Serialize for Ipv4Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Ipv4Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A WireGuard public key: 32 bytes, carried as standard base64 (44 characters).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WgKey(String);

impl WgKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn bytes(&self) -> [u8; 32] {
        use base64::Engine as _;
        let mut out = [0u8; 32];
        if let Ok(v) = base64::engine::general_purpose::STANDARD.decode(&self.0) {
            if v.len() == 32 {
                out.copy_from_slice(&v);
            }
        }
        out
    }

    pub fn from_bytes(b: &[u8; 32]) -> Self {
        use base64::Engine as _;
        WgKey(base64::engine::general_purpose::STANDARD.encode(b))
    }
}

impl FromStr for WgKey {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self, NetError> {
        use base64::Engine as _;
        if s.len() != 44 {
            return Err(NetError::Key);
        }
        match base64::engine::general_purpose::STANDARD.decode(s) {
            // Canonical only: re-encoding gives the same text.
            Ok(v) if v.len() == 32 && base64::engine::general_purpose::STANDARD.encode(&v) == s => {
                Ok(WgKey(s.to_string()))
            }
            _ => Err(NetError::Key),
        }
    }
}

impl fmt::Display for WgKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for WgKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for WgKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An inclusive port range, `first <= last`, no port 0 (`15000-15999`, or `80` alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn new(first: u16, last: u16) -> Result<Self, NetError> {
        if first == 0 || first > last {
            return Err(NetError::PortRange);
        }
        Ok(PortRange { first, last })
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    /// `first-last` in either order (`443-80` is `80-443`): the ports between the two, as a
    /// person writing a firewall rule means. Otherwise as strict as `from_str`.
    pub fn parse_unordered(s: &str) -> Result<Self, NetError> {
        match s.split_once('-') {
            Some((a, b)) => {
                let (a, b): (PortRange, PortRange) = (a.parse()?, b.parse()?);
                if a.first != a.last || b.first != b.last {
                    return Err(NetError::PortRange);
                }
                PortRange::new(a.first.min(b.first), a.first.max(b.first))
            }
            None => s.parse(),
        }
    }
}

impl FromStr for PortRange {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self, NetError> {
        let port = |p: &str| {
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(NetError::PortRange);
            }
            p.parse::<u16>().map_err(|_| NetError::PortRange)
        };
        match s.split_once('-') {
            Some((a, b)) => PortRange::new(port(a)?, port(b)?),
            None => {
                let p = port(s)?;
                PortRange::new(p, p)
            }
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.first == self.last {
            true => write!(f, "{}", self.first),
            false => write!(f, "{}-{}", self.first, self.last),
        }
    }
}

/// A DNS name (lowercased on parse): what a domain block lists.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct DomainName(String);

impl DomainName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for DomainName {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self, NetError> {
        let s = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
        let label_ok = |l: &str| {
            (1..=63).contains(&l.len())
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        let labels: Vec<&str> = s.split('.').collect();
        if s.len() > 253 || labels.len() < 2 || !labels.iter().all(|l| label_ok(l)) {
            return Err(NetError::Domain);
        }
        Ok(DomainName(s))
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for DomainName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_are_canonical_or_refused() {
        let c: Ipv4Cidr = "198.18.1.0/24".parse().expect("valid");
        assert_eq!(c.to_string(), "198.18.1.0/24");
        assert!(c.contains("198.18.1.77".parse().expect("ip")) && !c.contains("198.18.2.1".parse().expect("ip")));
        assert_eq!(c.nth(1), Some("198.18.1.1".parse().expect("ip")));
        assert_eq!(c.nth(256), None);
        for bad in [
            "198.18.1.1/24",
            "198.18.1.0/33",
            "198.18.1.0",
            "198.18.1.0/024",
            "198.18.1.0/+4",
            "0.0.0.0/0 trust",
            "x/8",
            "",
        ] {
            assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad}");
        }
        assert!("0.0.0.0/0".parse::<Ipv4Cidr>().is_ok());
        assert_eq!(Ipv4Cidr::parse_masking("203.0.113.7/24").map(|c| c.to_string()), Ok("203.0.113.0/24".into()));
        assert_eq!(
            Ipv4Cidr::parse_masking("250.250.250.250/30").map(|c| c.to_string()),
            Ok("250.250.250.248/30".into())
        );
        for bad in ["198.18.1.0/33", "198.18.1.0/024", "x/8", "1.2.3.4"] {
            assert!(Ipv4Cidr::parse_masking(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_are_32_bytes_of_canonical_base64() {
        let k = WgKey::from_bytes(&[7; 32]);
        assert_eq!(k.as_str().parse::<WgKey>(), Ok(k.clone()));
        assert_eq!(k.bytes(), [7; 32]);
        for bad in [
            "",
            "abc",
            "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
            "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcH",
        ] {
            assert!(bad.parse::<WgKey>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn port_ranges_and_domains() {
        assert_eq!("15000-15999".parse::<PortRange>(), Ok(PortRange { first: 15000, last: 15999 }));
        assert_eq!("80".parse::<PortRange>().map(|r| r.to_string()), Ok("80".into()));
        assert_eq!(PortRange::parse_unordered("64393-60931").map(|r| r.to_string()), Ok("60931-64393".into()));
        for bad in ["0-5", "1-2-3", "-5", "5-", "70000-1"] {
            assert!(PortRange::parse_unordered(bad).is_err(), "{bad}");
        }
        for bad in ["0", "2-1", "1-70000", "-5", "80 ", "1-2-3"] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
        assert_eq!("Example.COM.".parse::<DomainName>().map(|d| d.to_string()), Ok("example.com".into()));
        for bad in ["localhost", "a..b", "-a.com", "a b.com", "x;flush ruleset.com", ""] {
            assert!(bad.parse::<DomainName>().is_err(), "{bad}");
        }
    }
}
