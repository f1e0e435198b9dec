//! Devices, exposures and firewall rules on the wire: request bodies with the constraints the
//! OpenAPI document states, and the views (stored records plus what the gateway reports).

use super::{wire_enum, PeerStatusView};
use crate::state::device::Device;
use crate::state::exposure::{Exposure, Protocol, SourceMode};
use crate::state::firewall::{Destination, FirewallRule, RuleProtocol, Verdict};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

wire_enum!(Protocol, "The protocol an exposure forwards.", [Protocol::Tcp, Protocol::Udp]);
wire_enum!(
    SourceMode,
    "Whose source address the exposed service sees: the gateway's (nat) or the client's own (keep).",
    [SourceMode::Nat, SourceMode::Keep]
);
wire_enum!(Verdict, "What a matching rule does.", [Verdict::Allow, Verdict::Deny]);
wire_enum!(
    RuleProtocol,
    "The protocol a rule matches (ports need tcp or udp).",
    [RuleProtocol::Tcp, RuleProtocol::Udp, RuleProtocol::Any]
);

/// `^…$` of a WireGuard public key (44 characters of base64 for 32 bytes; canonical).
pub const WG_KEY_PATTERN: &str = "^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$";
/// `^…$` of an IPv4 address in dotted decimal without leading zeros.
pub const IPV4_PATTERN: &str =
    "^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$";
/// `^…$` of an IPv4 network `a.b.c.d/len` (host bits are cleared by the API: 203.0.113.7/24 is 203.0.113.0/24).
pub const CIDR_PATTERN: &str = "^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])/(3[0-2]|[12]?[0-9])$";

/// `^…$` of a domain name (at most 253 characters too, stated as `maxLength`).
pub const DOMAIN_PATTERN: &str =
    "^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)+[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.?$";
/// `^…$` of a port `443` or range `8000-8100` (1-65535 each; first <= last is checked by the handler).
pub const PORTS_PATTERN: &str = "^([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])(-([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?$";
/// Longest domain name taken.
pub const MAX_DOMAIN_LEN: usize = 253;

/// `POST /api/v1/tenant/{name}/devices`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddDeviceBody {
    #[schema(example = "plc1")]
    pub name: String,
    /// The device's WireGuard public key (its private key stays on the device).
    pub public_key: String,
    /// An address of the tenant's /24 (not .0, .1 or .255); the next free one when absent.
    #[serde(default)]
    #[schema(example = "198.18.1.10")]
    pub address: Option<String>,
}

/// A device as shown, with what its gateway last reported about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeviceView {
    #[schema(example = "d42")]
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub public_key: String,
    #[schema(example = "198.18.1.2")]
    pub address: String,
    pub enabled: bool,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    /// The gateway's last report of this peer (handshake, bytes), if any.
    pub peer: Option<PeerStatusView>,
    /// The device's last VPN connect (session start) its gateway reported; also in the audit
    /// trail as `device.connect`.
    pub last_connect: Option<ConnectView>,
    pub state: crate::state::device::DeviceState,
    /// From the token it enrolled with.
    #[schema(example = json!({"site": "ist"}))]
    pub labels: std::collections::BTreeMap<String, String>,
    /// The device token it enrolled with; `null`: registered by key.
    pub token_id: Option<String>,
    pub revoked_at_ms: Option<u64>,
    /// Removed after this long offline; `null`: never.
    pub ephemeral_ms: Option<u64>,
    /// What it last reported about itself (enrolled devices).
    pub fingerprint: Option<super::FingerprintView>,
    /// Its last recorded heartbeat (written at most every few minutes while it runs).
    pub last_seen_ms: Option<u64>,
    /// Enrolled in public mode: publishes need a customer key and its enrolled fingerprint.
    pub public: bool,
}

/// A device's VPN connect: when its session started and where from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConnectView {
    /// Unix milliseconds of the handshake that started the session.
    pub at_ms: u64,
    /// IP:port the device connected from; null: not known.
    #[schema(example = "203.0.113.10:43210")]
    pub endpoint: Option<String>,
    /// The gateway node that saw it.
    pub node_id: u64,
}

impl DeviceView {
    pub fn new(d: &Device, peer: Option<PeerStatusView>) -> Self {
        let state = d.state();
        let Device {
            id,
            tenant,
            name,
            public_key,
            address,
            enabled,
            created_at_ms,
            updated_at_ms,
            last_connect,
            labels,
            token_id,
            pending: _,
            revoked_at_ms,
            ephemeral_ms,
            fingerprint,
            last_seen_ms,
            public_fingerprint,
        } = d.clone();
        DeviceView {
            state,
            labels,
            token_id,
            revoked_at_ms,
            ephemeral_ms,
            fingerprint: fingerprint.map(Into::into),
            last_seen_ms,
            public: public_fingerprint.is_some(),
            id,
            tenant: tenant.to_string(),
            name: name.to_string(),
            public_key: public_key.to_string(),
            address: address.to_string(),
            enabled,
            created_at_ms,
            updated_at_ms,
            peer,
            last_connect: last_connect.map(|c| ConnectView {
                at_ms: c.at_ms,
                endpoint: c.endpoint.map(|e| e.to_string()),
                node_id: c.node_id,
            }),
        }
    }
}

/// What `POST /api/v1/tenant/{name}/devices/{device}/{action}` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceAction {
    Enable,
    Disable,
    /// A pending device becomes active (a peer of its gateway).
    Approve,
    /// Its peer goes and its certificate is refused; the record stays, marked.
    Revoke,
}

/// What the exposure actions do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SwitchAction {
    Enable,
    Disable,
}

/// `?format=` of a device config.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConfigQuery {
    /// `wg-quick` (JSON with the file; the default) or `qr` (the file as an SVG QR code).
    #[serde(default)]
    #[param(value_type = Option<String>, pattern = "^(wg-quick|qr)$")]
    pub format: Option<String>,
}

/// A device's config file.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeviceConfigView {
    #[schema(example = "wg-quick")]
    pub format: String,
    /// The file; its private key is a placeholder (the key is the user's).
    pub config: String,
    /// What the coordinator does not know yet (gateway key, endpoint); empty when complete.
    pub missing: Vec<String>,
}

/// `POST /api/v1/tenant/{name}/exposures`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddExposureBody {
    /// The device's name.
    pub device: String,
    #[schema(minimum = 1, maximum = 65535, example = 5432)]
    pub port: u16,
    /// From the gateway's public port range; the lowest free one when absent.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 65535)]
    pub public_port: Option<u16>,
    /// Default tcp.
    #[serde(default)]
    pub protocol: Option<Protocol>,
    /// Source networks allowed to connect (at most 64); anyone when absent or empty.
    #[serde(default)]
    #[schema(max_items = 64)]
    pub allow: Option<Vec<String>>,
    /// New connections per second (at most 1,000,000); unlimited when absent or 0.
    #[serde(default)]
    #[schema(maximum = 1_000_000)]
    pub rate_per_second: Option<u32>,
    /// Default nat.
    #[serde(default)]
    pub source: Option<SourceMode>,
}

/// An exposure as shown, with its gateway endpoint and the gateway's last counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ExposureView {
    #[schema(example = "x57")]
    pub id: String,
    pub tenant: String,
    pub device_id: String,
    pub device: Option<String>,
    pub port: u16,
    pub public_port: u16,
    /// `public-address:public-port` when the gateway's public address is known.
    pub endpoint: Option<String>,
    pub protocol: Protocol,
    pub allow: Vec<String>,
    pub rate_per_second: u32,
    pub source: SourceMode,
    pub enabled: bool,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub status: Option<super::ExposureStatusView>,
}

impl ExposureView {
    pub fn new(
        x: &Exposure,
        device: Option<String>,
        endpoint: Option<String>,
        status: Option<super::ExposureStatusView>,
    ) -> Self {
        let Exposure {
            id,
            tenant,
            device_id,
            port,
            public_port,
            protocol,
            allow,
            rate_per_second,
            source,
            enabled,
            created_at_ms,
            updated_at_ms,
        } = x.clone();
        ExposureView {
            id,
            tenant: tenant.to_string(),
            device_id,
            device,
            port,
            public_port,
            endpoint,
            protocol,
            allow: allow.iter().map(ToString::to_string).collect(),
            rate_per_second,
            source,
            enabled,
            created_at_ms,
            updated_at_ms,
            status,
        }
    }
}

/// `POST /api/v1/tenant/{name}/firewall/rule`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddRuleBody {
    /// Evaluation order (ascending, first match decides); after the last rule when absent.
    #[serde(default)]
    pub position: Option<u32>,
    /// Default deny.
    #[serde(default)]
    pub verdict: Option<Verdict>,
    /// Source networks (at most 64); any when absent or empty.
    #[serde(default)]
    #[schema(max_items = 64)]
    pub sources: Option<Vec<String>>,
    /// Destination networks (at most 64); any when absent or empty (with `devices`).
    #[serde(default)]
    #[schema(max_items = 64)]
    pub destinations: Option<Vec<String>>,
    /// Destination devices by name (each sent as its /32; at most 64 with `destinations`).
    #[serde(default)]
    #[schema(max_items = 64)]
    pub devices: Option<Vec<String>>,
    /// Source devices by label: the tenant's active devices carrying every pair, as they are
    /// whenever the gateway is configured (devices enrolled later included), beside `sources`.
    /// One that matches no device makes the rule match nothing (never any source).
    #[serde(default)]
    #[schema(schema_with = super::optional_labels, example = json!({"role": "camera"}))]
    pub source_labels: Option<BTreeMap<String, String>>,
    /// Destination devices by label, like `source_labels`, beside `destinations` and `devices`.
    #[serde(default)]
    #[schema(schema_with = super::optional_labels, example = json!({"role": "camera"}))]
    pub destination_labels: Option<BTreeMap<String, String>>,
    /// A port `443` or range `8000-8100`; any when absent (needs protocol tcp or udp).
    #[serde(default)]
    #[schema(example = "443")]
    pub ports: Option<String>,
    /// Default any.
    #[serde(default)]
    pub protocol: Option<RuleProtocol>,
    /// The destinations/ports are reachable only from inside the tenant subnet.
    #[serde(default)]
    pub vpn_required: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RuleView {
    #[schema(example = "r60")]
    pub id: String,
    pub position: u32,
    pub verdict: Verdict,
    pub sources: Vec<String>,
    /// Source devices by label (empty: none chosen by label).
    #[schema(example = json!({"role": "camera"}))]
    pub source_labels: BTreeMap<String, String>,
    /// Networks, and devices as `device/{name}`.
    pub destinations: Vec<String>,
    /// Destination devices by label (empty: none chosen by label).
    #[schema(example = json!({"role": "camera"}))]
    pub destination_labels: BTreeMap<String, String>,
    pub ports: Option<String>,
    pub protocol: RuleProtocol,
    pub vpn_required: bool,
    pub created_at_ms: u64,
}

impl From<&FirewallRule> for RuleView {
    fn from(r: &FirewallRule) -> Self {
        let FirewallRule {
            id,
            tenant: _,
            position,
            verdict,
            sources,
            source_labels,
            destinations,
            destination_labels,
            ports,
            protocol,
            vpn_required,
            created_at_ms,
        } = r.clone();
        RuleView {
            id,
            position,
            verdict,
            sources: sources.iter().map(ToString::to_string).collect(),
            source_labels: source_labels.into(),
            destination_labels: destination_labels.into(),
            destinations: destinations
                .iter()
                .map(|d| match d {
                    Destination::Cidr(c) => c.to_string(),
                    Destination::Device { name, .. } => format!("device/{name}"),
                })
                .collect(),
            ports: ports.map(|p| p.to_string()),
            protocol,
            vpn_required,
            created_at_ms,
        }
    }
}

/// `POST /api/v1/tenant/{name}/firewall/domains`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlockDomainBody {
    #[schema(example = "example.com", max_length = 253)]
    pub domain: String,
}
