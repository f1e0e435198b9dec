//! Allocation of tenant indexes and what follows from an index: VPN subnet, gateway address,
//! WireGuard interface name and listen port. Indexes of purged tenants are reused; others never.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;

use super::tenant::NetworkAllocation;

/// First WireGuard listen port; tenant N listens on `BASE_LISTEN_PORT + N`.
pub const BASE_LISTEN_PORT: u16 = 51820;

/// The IPv4 pool tenant subnets are cut from: a prefix of length 8..=23, each tenant a /24.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VpnPool {
    base: Ipv4Addr,
    prefix: u8,
}

/// Why a VPN pool was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPool {
    #[error("vpn pool {0:?} must be a CIDR such as 10.50.0.0/16")]
    NotCidr(String),
    #[error("vpn pool {0:?} has an invalid address")]
    Address(String),
    #[error("vpn pool {0:?} has an invalid prefix")]
    Prefix(String),
    #[error("vpn pool prefix must be between /8 and /23, got /{0}")]
    PrefixLength(u8),
    #[error("vpn pool {0:?} has host bits set")]
    HostBits(String),
}

impl VpnPool {
    pub fn parse(raw: &str) -> Result<Self, InvalidPool> {
        let (addr, prefix) = raw.split_once('/').ok_or_else(|| InvalidPool::NotCidr(raw.to_string()))?;
        let base: Ipv4Addr = addr.parse().map_err(|_| InvalidPool::Address(raw.to_string()))?;
        let prefix: u8 = prefix.parse().map_err(|_| InvalidPool::Prefix(raw.to_string()))?;
        if !(8..=23).contains(&prefix) {
            return Err(InvalidPool::PrefixLength(prefix));
        }
        let mask = u32::MAX << (32 - prefix);
        if u32::from(base) & !mask != 0 {
            return Err(InvalidPool::HostBits(raw.to_string()));
        }
        Ok(Self { base, prefix })
    }

    /// How many tenant /24s the pool holds (index 0 is never used: it would be the pool's own /24).
    pub fn capacity(self) -> u32 {
        (1u32 << (24 - self.prefix)) - 1
    }

    /// The /24 of tenant `index` (1-based).
    pub fn subnet(self, index: u32) -> Option<Ipv4Addr> {
        if index == 0 || index > self.capacity() {
            return None;
        }
        Some(Ipv4Addr::from(u32::from(self.base) + (index << 8)))
    }
}

impl fmt::Display for VpnPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

impl TryFrom<String> for VpnPool {
    type Error = InvalidPool;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<VpnPool> for String {
    fn from(value: VpnPool) -> Self {
        value.to_string()
    }
}

/// The largest index whose listen port still fits in a u16.
const MAX_INDEX_BY_PORT: u32 = (u16::MAX - BASE_LISTEN_PORT) as u32;

/// The smallest index not in `used`, or `None` when the pool is exhausted.
pub fn next_index(pool: VpnPool, used: &BTreeSet<u32>) -> Option<u32> {
    let limit = pool.capacity().min(MAX_INDEX_BY_PORT);
    let mut candidate = 1;
    for &taken in used.range(1..) {
        if taken != candidate {
            break;
        }
        candidate += 1;
    }
    (candidate <= limit).then_some(candidate)
}

/// Everything that follows from an index.
pub fn network_for(pool: VpnPool, index: u32) -> Option<NetworkAllocation> {
    let subnet = pool.subnet(index)?;
    let port = u16::try_from(u32::from(BASE_LISTEN_PORT) + index).ok()?;
    let gateway = Ipv4Addr::from(u32::from(subnet) + 1);
    Some(NetworkAllocation {
        index,
        vpn_subnet: format!("{subnet}/24"),
        gateway_address: gateway.to_string(),
        interface: format!("bqt{index}"),
        listen_port: port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(raw: &str) -> VpnPool {
        VpnPool::parse(raw).expect("test pool is valid")
    }

    #[test]
    fn seed_default_pool_maps_index_to_subnet() {
        let net = network_for(pool("10.50.0.0/16"), 1).expect("index 1 fits");
        assert_eq!(net.vpn_subnet, "10.50.1.0/24");
        assert_eq!(net.gateway_address, "10.50.1.1");
        assert_eq!(net.interface, "bqt1");
        assert_eq!(net.listen_port, 51821);
        assert_eq!(pool("10.50.0.0/16").capacity(), 255);
    }

    #[test]
    fn test_pool_spans_two_octets() {
        let p = pool("198.18.0.0/15");
        assert_eq!(p.capacity(), 511);
        assert_eq!(network_for(p, 256).map(|n| n.vpn_subnet), Some("198.19.0.0/24".into()));
        assert_eq!(network_for(p, 512), None);
    }

    #[test]
    fn next_index_fills_gaps_then_extends() {
        let p = pool("10.50.0.0/16");
        assert_eq!(next_index(p, &BTreeSet::new()), Some(1));
        assert_eq!(next_index(p, &[1, 2, 4].into()), Some(3));
        assert_eq!(next_index(p, &[1, 2, 3].into()), Some(4));
        let full: BTreeSet<u32> = (1..=255).collect();
        assert_eq!(next_index(p, &full), None);
    }

    #[test]
    fn pool_validation() {
        assert!(VpnPool::parse("10.50.0.0/16").is_ok());
        assert!(VpnPool::parse("10.50.1.0/16").is_err());
        assert!(VpnPool::parse("10.50.0.0/24").is_err());
        assert!(VpnPool::parse("10.50.0.0").is_err());
        assert!(VpnPool::parse("banana/16").is_err());
    }
}
