//! The tenant record, its tiers with default quotas, and the lifecycle state machine of its status.

use super::names::TenantName;
use super::quota::ByteSize;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Tier {
    Free,
    Premium,
    Enterprise,
}

/// Default quotas of a tier (seed 003's storage and request figures, made concrete).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierDefaults {
    pub db_quota: ByteSize,
    pub connection_limit: u32,
    pub events_per_min: u32,
}

impl Tier {
    pub const fn defaults(self) -> TierDefaults {
        match self {
            Tier::Free => {
                TierDefaults { db_quota: ByteSize::from_bytes(100_000_000), connection_limit: 5, events_per_min: 1_000 }
            }
            Tier::Premium => TierDefaults {
                db_quota: ByteSize::from_bytes(1_000_000_000),
                connection_limit: 20,
                events_per_min: 10_000,
            },
            Tier::Enterprise => TierDefaults {
                db_quota: ByteSize::from_bytes(10_000_000_000),
                connection_limit: 100,
                events_per_min: 100_000,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DbType {
    Postgres,
    Mssql,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// A schema per tenant in a shared database (the default).
    Schema,
    /// A database per tenant (seed 002).
    Database,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AccessMode {
    Public,
    VpnOnly,
    Hybrid,
}

impl AccessMode {
    /// The mode implied by the seed's two switches when the caller names none.
    pub fn implied(vpn_enabled: bool, public_api: bool) -> Self {
        match (vpn_enabled, public_api) {
            (true, true) => AccessMode::Hybrid,
            (true, false) => AccessMode::VpnOnly,
            (false, _) => AccessMode::Public,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TenantStatus {
    Provisioning,
    Active,
    Suspended,
    Deleting,
    DeletedPendingPurge,
    /// Ready, but the database is over its disk quota: reads and deletes only.
    QuotaExceeded,
}

impl TenantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Provisioning => "provisioning",
            TenantStatus::Active => "active",
            TenantStatus::Suspended => "suspended",
            TenantStatus::Deleting => "deleting",
            TenantStatus::DeletedPendingPurge => "deleted-pending-purge",
            TenantStatus::QuotaExceeded => "quota-exceeded",
        }
    }
}

/// Where a tenant runs. `None` means not placed yet (see `Tenant::status_reason`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Placement {
    pub db_node: Option<u64>,
    pub gateway_node: Option<u64>,
}

/// The network resources allocated to a tenant from its index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NetworkAllocation {
    pub index: u32,
    pub vpn_subnet: String,
    pub gateway_address: String,
    pub interface: String,
    pub listen_port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Tenant {
    #[schema(value_type = String, example = "acme")]
    pub name: TenantName,
    pub tier: Tier,
    pub db_type: DbType,
    pub isolation: Isolation,
    /// Disk quota in bytes.
    pub db_quota_bytes: u64,
    /// The quota as a human size, e.g. `5GB`.
    pub db_quota: String,
    pub connection_limit: u32,
    pub events_per_min: u32,
    pub vpn_enabled: bool,
    pub public_api: bool,
    /// The tenant's database user may create objects (DDL) in its schema; off by default.
    #[serde(default)]
    pub ddl_enabled: bool,
    pub access_mode: AccessMode,
    pub dedicated: bool,
    /// Labels a node must carry to host this tenant.
    pub node_selector: BTreeMap<String, String>,
    pub status: TenantStatus,
    /// Why the tenant is not (yet) where it should be, e.g. "no node fits".
    pub status_reason: Option<String>,
    pub network: NetworkAllocation,
    pub placement: Placement,
    /// Raft log index of the last change to this tenant.
    pub revision: u64,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub deleted_at_ms: Option<u64>,
    pub purge_after_ms: Option<u64>,
    /// Status to return to on `resume`/`restore`.
    pub status_before_offboarding: Option<TenantStatus>,
    /// What each node the tenant is placed on last reported about it.
    #[serde(default)]
    pub node_status: BTreeMap<u64, super::node::NodeTenantStatus>,
    /// SCRAM-SHA-256 verifier of the database password (never the password). Kept out of API
    /// answers by `redacted`; sent only to the tenant's db node over mTLS.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schema(ignore)]
    pub db_password_verifier: String,
}

impl Tenant {
    /// A copy for API answers: no password verifier.
    pub fn redacted(&self) -> Self {
        Self { db_password_verifier: String::new(), ..self.clone() }
    }
}

/// A validated request to create a tenant (built at the API edge).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantSpec {
    pub name: TenantName,
    pub tier: Tier,
    pub db_type: DbType,
    pub isolation: Isolation,
    pub db_quota: ByteSize,
    pub connection_limit: u32,
    pub events_per_min: u32,
    pub vpn_enabled: bool,
    pub public_api: bool,
    #[serde(default)]
    pub ddl_enabled: bool,
    pub access_mode: AccessMode,
    pub dedicated: bool,
    pub node_selector: BTreeMap<String, String>,
    #[serde(default)]
    pub db_password_verifier: String,
}

/// A validated partial update (PATCH). `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantPatch {
    pub tier: Option<Tier>,
    pub db_quota: Option<ByteSize>,
    pub connection_limit: Option<u32>,
    pub events_per_min: Option<u32>,
    pub vpn_enabled: Option<bool>,
    pub public_api: Option<bool>,
    #[serde(default)]
    pub ddl_enabled: Option<bool>,
    pub access_mode: Option<AccessMode>,
}

impl TenantPatch {
    pub fn is_empty(&self) -> bool {
        self == &TenantPatch::default()
    }
}

/// Largest connection limit and event rate accepted; beyond this is a typo.
pub const MAX_CONNECTION_LIMIT: u32 = 10_000;
pub const MAX_EVENTS_PER_MIN: u32 = 10_000_000;

pub fn validate_connection_limit(limit: u32) -> Result<u32, String> {
    if limit == 0 || limit > MAX_CONNECTION_LIMIT {
        return Err(format!("connection limit must be between 1 and {MAX_CONNECTION_LIMIT}, got {limit}"));
    }
    Ok(limit)
}

pub fn validate_events_per_min(rate: u32) -> Result<u32, String> {
    if rate == 0 || rate > MAX_EVENTS_PER_MIN {
        return Err(format!("events per minute must be between 1 and {MAX_EVENTS_PER_MIN}, got {rate}"));
    }
    Ok(rate)
}
