//! The gateway role on the wire: a gateway node's public settings, backend and conditions, and
//! what a gateway reports per tenant (its public key, peers, exposure counters and sources seen).

use super::{project, wire_enum};
use crate::state::gateway::{
    ExposureStatus, GatewayNode, GatewaySettings, GatewayTenantStatus, NodeCondition, PeerStatus, SourceSeen, WgBackend,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

wire_enum!(WgBackend, "The WireGuard implementation a gateway runs.", [WgBackend::Kernel, WgBackend::Userspace]);

/// A gateway node's public side and what it reports about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GatewayNodeView {
    /// Set at join (`--public-address`, `--public-ports`); without it the node hosts no exposures
    /// and device configs name no endpoint.
    pub settings: Option<GatewaySettingsView>,
    pub wireguard_backend: Option<WgBackend>,
    /// What keeps the node from doing its job, with the remedy.
    pub conditions: Vec<NodeConditionView>,
}

impl From<GatewayNode> for GatewayNodeView {
    fn from(g: GatewayNode) -> Self {
        project!(g => GatewayNode => GatewayNodeView { wireguard_backend }
            with { settings: settings.map(Into::into), conditions: conditions.into_iter().map(Into::into).collect() })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GatewaySettingsView {
    #[schema(example = "198.51.100.10")]
    pub public_address: String,
    /// First and last public port exposures may be given (inclusive).
    #[schema(example = 15000, minimum = 1, maximum = 65535)]
    pub public_port_first: u16,
    #[schema(example = 15999, minimum = 1, maximum = 65535)]
    pub public_port_last: u16,
}

impl From<GatewaySettings> for GatewaySettingsView {
    fn from(g: GatewaySettings) -> Self {
        let GatewaySettings { public_address, public_ports } = g;
        GatewaySettingsView {
            public_address: public_address.to_string(),
            public_port_first: public_ports.first,
            public_port_last: public_ports.last,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeConditionView {
    #[schema(example = "foreign-forward-drop")]
    pub kind: String,
    pub message: String,
}

impl From<NodeCondition> for NodeConditionView {
    fn from(c: NodeCondition) -> Self {
        project!(c => NodeCondition => NodeConditionView { kind, message })
    }
}

/// What a gateway reports about a tenant's interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GatewayStatusView {
    /// The interface's WireGuard public key (its private key never leaves the gateway).
    pub public_key: Option<String>,
    pub peers: Vec<PeerStatusView>,
    pub exposures: Vec<ExposureStatusView>,
}

impl From<GatewayTenantStatus> for GatewayStatusView {
    fn from(g: GatewayTenantStatus) -> Self {
        project!(g => GatewayTenantStatus => GatewayStatusView {}
        with {
            public_key: public_key.map(|k| k.to_string()),
            peers: peers.into_iter().map(Into::into).collect(),
            exposures: exposures.into_iter().map(Into::into).collect(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PeerStatusView {
    pub public_key: String,
    /// Unix milliseconds of the last handshake; null: never.
    pub last_handshake_ms: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Where the device's packets last came from (IP:port); null: not known.
    #[schema(example = "203.0.113.10:43210")]
    pub endpoint: Option<String>,
    /// Unix milliseconds of the handshake that started the current session; null: none seen.
    pub session_start_ms: Option<u64>,
}

impl From<PeerStatus> for PeerStatusView {
    fn from(p: PeerStatus) -> Self {
        project!(p => PeerStatus => PeerStatusView { last_handshake_ms, rx_bytes, tx_bytes, session_start_ms }
            with { public_key: public_key.to_string(), endpoint: endpoint.map(|e| e.to_string()) })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ExposureStatusView {
    pub id: String,
    pub accepted_packets: u64,
    pub dropped_packets: u64,
    /// Who connected from where (the newest sources the gateway still remembers).
    pub sources: Vec<SourceSeenView>,
}

impl From<ExposureStatus> for ExposureStatusView {
    fn from(x: ExposureStatus) -> Self {
        project!(x => ExposureStatus => ExposureStatusView { id, accepted_packets, dropped_packets }
            with { sources: sources.into_iter().map(Into::into).collect() })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SourceSeenView {
    #[schema(example = "203.0.113.7")]
    pub address: String,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    pub packets: u64,
    pub bytes: u64,
}

impl From<SourceSeen> for SourceSeenView {
    fn from(s: SourceSeen) -> Self {
        project!(s => SourceSeen => SourceSeenView { first_seen_ms, last_seen_ms, packets, bytes }
            with { address: address.to_string() })
    }
}
