//! Device tokens and enrolled devices on the wire: the token request (with the grammars the
//! OpenAPI document states), the token as created (its secret and the device's enroll command,
//! shown once) and as listed, and what a device reports about itself.

use super::{project, wire_enum};
use crate::state::device::DeviceState;
use crate::state::devicetoken::DeviceToken;
use crate::state::presence::Fingerprint;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

wire_enum!(
    DeviceState,
    "Where a device stands: a peer (active), waiting for `device approve` (pending), disabled, or revoked.",
    [DeviceState::Active, DeviceState::Pending, DeviceState::Disabled, DeviceState::Revoked]
);

/// `^…$` of a token's uses: a count from 1 to 999999, or `unlimited`.
pub const USES_PATTERN: &str = "^([1-9][0-9]{0,5}|unlimited)$";
/// `^…$` of an ephemeral device's offline time: from 1m, in whole minutes, hours or days.
pub const EPHEMERAL_PATTERN: &str = "^([1-9][0-9]{0,4}m|[1-9][0-9]{0,3}h|[1-9][0-9]{0,2}d)$";

/// How devices enrolled with a token start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Approve {
    /// Active at once (a peer of the tenant's gateway).
    #[default]
    Auto,
    /// Pending until `device approve`.
    Manual,
}

/// `POST /api/v1/tenant/{name}/device-tokens`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDeviceTokenBody {
    /// The enrolled device's name (later ones, for a token of several uses, get `{name}-{n}`);
    /// absent: the device's own choice, or `d{id}`.
    #[serde(default)]
    #[schema(example = "plc1")]
    pub name: Option<String>,
    /// How long the token can be used: 1s to 7d, 24h when absent.
    #[serde(default)]
    #[schema(example = "24h")]
    pub ttl: Option<String>,
    /// How many devices it may enroll: `1` (when absent), a count, or `unlimited`.
    #[serde(default)]
    #[schema(example = "1")]
    pub uses: Option<String>,
    /// Labels the enrolled devices get (at most 16).
    #[serde(default)]
    #[schema(schema_with = super::optional_labels)]
    pub labels: Option<BTreeMap<String, String>>,
    /// Enrolled devices are removed after this long offline (at least 1m); absent: never.
    #[serde(default)]
    #[schema(example = "30m")]
    pub ephemeral: Option<String>,
    #[serde(default)]
    pub approve: Option<Approve>,
    /// Enrolled devices publish events from outside the VPN (public mode): each publish then
    /// needs a customer key of the tenant and the device's fingerprint as enrolled. Only for
    /// tenants with `public_api`; absent: false.
    #[serde(default)]
    pub public: Option<bool>,
}

/// A device token as listed: never its secret or the secret's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeviceTokenView {
    #[schema(pattern = "^[0-9a-f]{16}$")]
    pub id: String,
    /// What the token starts with (`bqd_{id}_`): enough to recognise it, useless to enroll.
    #[schema(example = "bqd_0123456789abcdef_")]
    pub prefix: String,
    pub tenant: String,
    pub name: Option<String>,
    #[schema(example = json!({"site": "ist"}))]
    pub labels: BTreeMap<String, String>,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    /// `null`: unlimited.
    pub max_uses: Option<u32>,
    pub uses: u32,
    /// Offline time after which enrolled devices are removed; `null`: never.
    pub ephemeral_ms: Option<u64>,
    pub approve: Approve,
    /// Devices enrolled with it publish in public mode (API key + fingerprint, no VPN).
    pub public: bool,
    pub revoked_at_ms: Option<u64>,
    pub last_used_at_ms: Option<u64>,
}

impl From<&DeviceToken> for DeviceTokenView {
    fn from(t: &DeviceToken) -> Self {
        // Exhaustive: a new stored field is a compile error here until it is shown or hidden.
        let DeviceToken {
            id,
            tenant,
            name,
            secret_hash: _,
            labels,
            created_at_ms,
            expires_at_ms,
            max_uses,
            uses,
            ephemeral_ms,
            approve_manual,
            public,
            revoked_at_ms,
            last_used_at_ms,
        } = t.clone();
        DeviceTokenView {
            prefix: format!("bqd_{id}_"),
            id,
            tenant: tenant.to_string(),
            name: name.map(|n| n.to_string()),
            labels,
            created_at_ms,
            expires_at_ms,
            max_uses,
            uses,
            ephemeral_ms,
            approve: if approve_manual { Approve::Manual } else { Approve::Auto },
            public,
            revoked_at_ms,
            last_used_at_ms,
        }
    }
}

/// A new device token: `token` and `command` are shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedDeviceToken {
    #[schema(example = "bqd_0123456789abcdef_…")]
    pub token: String,
    /// `sha256:…` of the cluster CA, which the device pins.
    pub ca_fingerprint: String,
    /// `https://HOST:PORT` of a coordinator's node listener.
    pub coordinator: String,
    /// What to run on the device.
    pub command: String,
    pub device_token: DeviceTokenView,
}

/// What an enrolled device last reported about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FingerprintView {
    /// SHA-256 (hex) of each interface MAC address.
    pub mac_hashes: Vec<String>,
    /// SHA-256 (hex) of the machine id; empty when unknown.
    pub machine_id_hash: String,
    pub os_name: String,
    pub os_version: String,
    pub arch: String,
    pub client_version: String,
}

impl From<Fingerprint> for FingerprintView {
    fn from(f: Fingerprint) -> Self {
        project!(f => Fingerprint => FingerprintView {
            mac_hashes, machine_id_hash, os_name, os_version, arch, client_version
        })
    }
}
