//! What the coordinator knows about the gateway role: a gateway node's public settings (given at
//! join), what it reports about itself (WireGuard backend, conditions) and, per tenant, what its
//! tenant interface reports (public key, peers, exposure counters and the sources seen). Pure data.

pub use berqenas_common::net::{Ipv4Cidr, PortRange, WgKey};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// A gateway's public side, stated at join: the address the public reaches it at and the public
/// ports it may hand out to exposures. A gateway joined without them hosts no exposures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewaySettings {
    pub public_address: Ipv4Addr,
    pub public_ports: PortRange,
}

/// Which WireGuard implementation a gateway runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WgBackend {
    Kernel,
    Userspace,
}

/// Something on a node that keeps it from doing its job, with the remedy (as reported).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCondition {
    pub kind: String,
    pub message: String,
}

/// The gateway part of a node record: settings from the join, the rest from its reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayNode {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<GatewaySettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard_backend: Option<WgBackend>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<NodeCondition>,
}

/// What a gateway reports about one tenant's interface. The public key is durable state (device
/// configs need it); peer and exposure counters are samples, written with the periodic refresh.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayTenantStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<WgKey>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<PeerStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exposures: Vec<ExposureStatus>,
}

impl GatewayTenantStatus {
    /// Without its samples: what changes only when the gateway itself changes.
    pub fn durable(&self) -> Self {
        GatewayTenantStatus { public_key: self.public_key.clone(), peers: vec![], exposures: vec![] }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub public_key: WgKey,
    /// Unix milliseconds of the last handshake; `None`: never.
    pub last_handshake_ms: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Where the device's packets last came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<std::net::SocketAddr>,
    /// Unix milliseconds of the handshake that started the device's current session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_start_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExposureStatus {
    pub id: String,
    pub accepted_packets: u64,
    pub dropped_packets: u64,
    pub sources: Vec<SourceSeen>,
}

/// A source address seen connecting to an exposure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceSeen {
    pub address: Ipv4Addr,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    pub packets: u64,
    pub bytes: u64,
}

/// Most peers, exposures, sources per exposure and conditions a report may carry (more are dropped).
pub const MAX_REPORTED_PEERS: usize = 4096;
pub const MAX_REPORTED_EXPOSURES: usize = 1024;
pub const MAX_REPORTED_SOURCES: usize = 32;
pub const MAX_CONDITIONS: usize = 16;

/// A tenant's `/24` as the state keeps it (`NetworkAllocation::vpn_subnet`).
pub fn subnet_of(vpn_subnet: &str) -> Option<Ipv4Cidr> {
    vpn_subnet.parse().ok()
}

impl super::Op {
    /// The tenant whose gateway desired state (devices, exposures, firewall rules, blocked
    /// domains) this command changes when it succeeds.
    pub fn gateway_change(&self) -> Option<&super::names::TenantName> {
        match self {
            Self::AddDevice(d) => Some(&d.tenant),
            Self::AddExposure(x) => Some(&x.tenant),
            Self::AddFirewallRule(r) => Some(&r.tenant),
            Self::EnrollDevice(e) => Some(&e.tenant),
            Self::ApproveDevice { tenant, .. }
            | Self::RevokeDevice { tenant, .. }
            | Self::ExpireDevice { tenant, .. } => Some(tenant),
            Self::RemoveDevice { tenant, .. }
            | Self::EnableDevice { tenant, .. }
            | Self::RemoveExposure { tenant, .. }
            | Self::EnableExposure { tenant, .. }
            | Self::RemoveFirewallRule { tenant, .. }
            | Self::BlockDomain { tenant, .. } => Some(tenant),
            // Tenant commands set the revision themselves; the rest change no gateway's work.
            Self::Bootstrap { .. }
            | Self::CreateTenant(_)
            | Self::UpdateTenant { .. }
            | Self::Lifecycle { .. }
            | Self::CreateApiKey(_)
            | Self::RevokeApiKey { .. }
            | Self::RecoverAdmin { .. }
            | Self::RegisterNode(_)
            | Self::CreateJoinToken(_)
            | Self::RevokeJoinToken { .. }
            | Self::JoinCoordinator { .. }
            | Self::JoinNode { .. }
            | Self::RevokeNode { .. }
            | Self::CordonNode { .. }
            | Self::NodeReport(_)
            | Self::DeviceConnect(_)
            | Self::DbLogin(_)
            | Self::CreateDeviceToken(_)
            | Self::RevokeDeviceToken { .. }
            | Self::DeviceHeartbeat(_)
            | Self::Membership { .. }
            | Self::SnapshotSaved { .. }
            | Self::RecordUsage(_)
            | Self::Invoice(_)
            | Self::Backup(_)
            | Self::User(_)
            | Self::Rejected { .. } => None,
        }
    }
}
