//! The tenant record, its tiers with default quotas, the lifecycle state machine of its status, and
//! the invariants every tenant keeps: `TenantSpec::new` (create) and `Tenant::apply_patch` (update)
//! both end in `TenantSpec::check`, so create and update cannot disagree. Its commands are in
//! `tenant/commands.rs`.

mod commands;
pub(super) use commands::not_found;
pub use commands::refresh_readiness;

use super::action::Action;
use super::names::TenantName;
use super::quota::ByteSize;
pub use berqenas_common::tenancy::{AccessMode, DbType, Isolation};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// A step of a tenant's lifecycle, as a command asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Lifecycle {
    Suspend,
    Resume,
    Delete,
    Restore,
    Purge { force: bool },
}

impl From<Lifecycle> for Action {
    fn from(step: Lifecycle) -> Action {
        match step {
            Lifecycle::Suspend => Action::TenantSuspend,
            Lifecycle::Resume => Action::TenantResume,
            Lifecycle::Delete => Action::TenantDelete,
            Lifecycle::Restore => Action::TenantRestore,
            Lifecycle::Purge { .. } => Action::TenantPurge,
        }
    }
}

/// Where a tenant runs. `None` means not placed yet (see `Tenant::status_reason`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub db_node: Option<u64>,
    pub gateway_node: Option<u64>,
}

/// The network resources allocated to a tenant from its index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAllocation {
    pub index: u32,
    pub vpn_subnet: String,
    pub gateway_address: String,
    pub interface: String,
    pub listen_port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
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
    /// Raft log index of the last change to what its gateway serves (devices, exposures,
    /// firewall rules, blocked domains); its gateway node gets the newer of the two, and the
    /// tenant is ready once that node reports having applied it. Kept apart from `revision` so
    /// a device change does not make the db node re-plan the tenant.
    #[serde(default)]
    pub gateway_revision: u64,
    /// Raft log index of the last change to what its db node's realtime ingest serves (the
    /// devices that may publish, the customer keys that may subscribe); its db node gets the
    /// newer of this and `revision`.
    #[serde(default)]
    pub ingest_revision: u64,
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
    pub db_password_verifier: String,
    /// Limit of the tenant's VPN traffic on its gateway, bits per second each way; 0: none.
    #[serde(default)]
    pub bandwidth_bps: u64,
    /// The tenant's devices may reach each other through the gateway.
    #[serde(default = "allowed")]
    pub device_to_device: bool,
    /// Domains whose addresses the tenant's devices may not reach.
    #[serde(default)]
    pub blocked_domains: std::collections::BTreeSet<berqenas_common::net::DomainName>,
    /// Its own backup policy; `None`: its tier's (`BackupPolicy::for_tier`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_policy: Option<super::backup::BackupPolicy>,
}

fn allowed() -> bool {
    true
}

impl Tenant {
    /// A new tenant as `spec` describes it, with its network, created at Raft index `revision`
    /// and time `now`: provisioning, not placed yet.
    pub fn new(spec: &TenantSpec, network: NetworkAllocation, revision: u64, now: u64) -> Self {
        Tenant {
            name: spec.name.clone(),
            tier: spec.tier,
            db_type: spec.db_type,
            isolation: spec.isolation,
            db_quota_bytes: spec.db_quota.bytes(),
            db_quota: spec.db_quota.to_string(),
            connection_limit: spec.connection_limit,
            events_per_min: spec.events_per_min,
            vpn_enabled: spec.vpn_enabled,
            public_api: spec.public_api,
            ddl_enabled: spec.ddl_enabled,
            access_mode: spec.access_mode,
            dedicated: spec.dedicated,
            node_selector: spec.node_selector.clone(),
            status: TenantStatus::Provisioning,
            status_reason: None,
            network,
            placement: Placement::default(),
            revision,
            gateway_revision: revision,
            ingest_revision: revision,
            created_at_ms: now,
            updated_at_ms: now,
            deleted_at_ms: None,
            purge_after_ms: None,
            status_before_offboarding: None,
            node_status: BTreeMap::new(),
            db_password_verifier: spec.db_password_verifier.clone(),
            bandwidth_bps: 0,
            device_to_device: true,
            blocked_domains: Default::default(),
            backup_policy: None,
        }
    }

    /// The revision node `node_id` must report the tenant at for it to be ready: the newest of
    /// the tenant's own, its gateway's (gateway role) and its ingest's (db role).
    pub fn revision_for(&self, node_id: u64) -> u64 {
        let mut revision = self.revision;
        if self.placement.gateway_node == Some(node_id) {
            revision = revision.max(self.gateway_revision);
        }
        if self.placement.db_node == Some(node_id) {
            revision = revision.max(self.ingest_revision);
        }
        revision
    }

    /// A copy for API answers: no password verifier.
    pub fn redacted(&self) -> Self {
        Self { db_password_verifier: String::new(), ..self.clone() }
    }
}

/// Why a tenant spec, or an update of one, was refused. Every tenant keeps these invariants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum InvalidTenant {
    #[error(
        "access mode {} needs the VPN enabled; to drop the VPN, set access_mode public (clients from any address) on purpose",
        .0.as_str()
    )]
    AccessNeedsVpn(AccessMode),
    #[error("access mode vpn-only admits no public clients: public_api must be false (or use access_mode hybrid)")]
    VpnOnlyWithPublicApi,
    #[error(
        "access mode {} admits clients from any address: public_api must be true (or use access_mode vpn-only)",
        .0.as_str()
    )]
    PublicAccessWithoutPublicApi(AccessMode),
    #[error("SQL Server tenants get a database each: use isolation database")]
    MssqlNeedsDatabase,
    #[error("connection limit must be between 1 and {MAX_CONNECTION_LIMIT}, got {0}")]
    ConnectionLimit(u32),
    #[error("events per minute must be between 1 and {MAX_EVENTS_PER_MIN}, got {0}")]
    EventsPerMin(u32),
    #[error("at most {MAX_SELECTOR_LABELS} node selector labels, got {0}")]
    TooManyLabels(usize),
    #[error("node selector: {0}")]
    Label(#[from] super::names::InvalidLabel),
    #[error("backup policy: {0}")]
    Backup(#[from] super::backup::InvalidPolicy),
}

/// A validated request to create a tenant: built only by `TenantSpec::new`, re-checked by the
/// state machine with `check` before it is applied.
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

/// What a caller asked for when creating a tenant; `None` takes the default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewTenant {
    pub tier: Option<Tier>,
    pub db_type: Option<DbType>,
    pub isolation: Option<Isolation>,
    pub db_quota: Option<ByteSize>,
    pub connection_limit: Option<u32>,
    pub events_per_min: Option<u32>,
    pub vpn_enabled: Option<bool>,
    pub public_api: Option<bool>,
    pub ddl_enabled: Option<bool>,
    pub access_mode: Option<AccessMode>,
    pub dedicated: Option<bool>,
    pub node_selector: BTreeMap<String, String>,
}

/// Most node selector labels a tenant may name.
pub const MAX_SELECTOR_LABELS: usize = 16;

impl TenantSpec {
    /// A new tenant's spec: the tier's defaults and the access defaults (VPN on, public API off,
    /// so vpn-only; without a VPN the tenant is public; a named mode sets `public_api` to match),
    /// then the invariants.
    pub fn new(name: TenantName, req: NewTenant) -> Result<Self, InvalidTenant> {
        let tier = req.tier.unwrap_or(Tier::Free);
        let defaults = tier.defaults();
        let vpn_enabled = req.vpn_enabled.unwrap_or(true);
        let public_api = match (req.public_api, req.access_mode) {
            (Some(p), _) => p,
            (None, Some(mode)) => mode.admits_public(),
            (None, None) => !vpn_enabled,
        };
        let access_mode = req.access_mode.unwrap_or_else(|| AccessMode::implied(vpn_enabled, public_api));
        let db_type = req.db_type.unwrap_or(DbType::Postgres);
        // SQL Server tenants always get a database of their own.
        let isolation = req.isolation.unwrap_or(match db_type {
            DbType::Mssql => Isolation::Database,
            DbType::Postgres => Isolation::Schema,
        });
        let spec = TenantSpec {
            name,
            tier,
            db_type,
            isolation,
            db_quota: req.db_quota.unwrap_or(defaults.db_quota),
            connection_limit: req.connection_limit.unwrap_or(defaults.connection_limit),
            events_per_min: req.events_per_min.unwrap_or(defaults.events_per_min),
            vpn_enabled,
            public_api,
            ddl_enabled: req.ddl_enabled.unwrap_or(false),
            access_mode,
            dedicated: req.dedicated.unwrap_or(false),
            node_selector: req.node_selector,
            db_password_verifier: String::new(),
        };
        spec.check()?;
        Ok(spec)
    }

    /// The invariants of every tenant, checked on create and on every update.
    pub fn check(&self) -> Result<(), InvalidTenant> {
        if self.access_mode != AccessMode::Public && !self.vpn_enabled {
            return Err(InvalidTenant::AccessNeedsVpn(self.access_mode));
        }
        match (self.access_mode.admits_public(), self.public_api) {
            (false, true) => return Err(InvalidTenant::VpnOnlyWithPublicApi),
            (true, false) => return Err(InvalidTenant::PublicAccessWithoutPublicApi(self.access_mode)),
            _ => {}
        }
        if self.db_type == DbType::Mssql && self.isolation != Isolation::Database {
            return Err(InvalidTenant::MssqlNeedsDatabase);
        }
        if self.connection_limit == 0 || self.connection_limit > MAX_CONNECTION_LIMIT {
            return Err(InvalidTenant::ConnectionLimit(self.connection_limit));
        }
        if self.events_per_min == 0 || self.events_per_min > MAX_EVENTS_PER_MIN {
            return Err(InvalidTenant::EventsPerMin(self.events_per_min));
        }
        if self.node_selector.len() > MAX_SELECTOR_LABELS {
            return Err(InvalidTenant::TooManyLabels(self.node_selector.len()));
        }
        for (k, v) in &self.node_selector {
            super::names::validate_label_part(k)?;
            super::names::validate_label_part(v)?;
        }
        Ok(())
    }
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
    /// Bits per second; 0 clears the limit.
    #[serde(default)]
    pub bandwidth_bps: Option<u64>,
    #[serde(default)]
    pub device_to_device: Option<bool>,
    /// Backup policy: seconds between backups, how many and how many days to keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_interval_s: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_keep: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_days: Option<u32>,
}

impl TenantPatch {
    pub fn is_empty(&self) -> bool {
        self == &TenantPatch::default()
    }
}

impl Tenant {
    /// The spec this tenant now has (what `check` validates).
    pub fn spec(&self) -> TenantSpec {
        TenantSpec {
            name: self.name.clone(),
            tier: self.tier,
            db_type: self.db_type,
            isolation: self.isolation,
            db_quota: ByteSize::from_bytes(self.db_quota_bytes),
            connection_limit: self.connection_limit,
            events_per_min: self.events_per_min,
            vpn_enabled: self.vpn_enabled,
            public_api: self.public_api,
            ddl_enabled: self.ddl_enabled,
            access_mode: self.access_mode,
            dedicated: self.dedicated,
            node_selector: self.node_selector.clone(),
            db_password_verifier: String::new(),
        }
    }

    /// This tenant with `patch` applied, or why the result would break an invariant (then nothing
    /// changes). Access: a named mode sets `public_api` to match unless it is named too; switches
    /// named without a mode re-derive the mode from them, except that a tenant never becomes
    /// reachable from any address unless `public_api` is true, so a vpn-only tenant cannot drop
    /// its VPN by accident.
    pub fn apply_patch(&self, patch: &TenantPatch) -> Result<Tenant, InvalidTenant> {
        let mut t = self.clone();
        let vpn_enabled = patch.vpn_enabled.unwrap_or(self.vpn_enabled);
        let public_api = match (patch.public_api, patch.access_mode) {
            (Some(p), _) => p,
            (None, Some(mode)) => mode.admits_public(),
            (None, None) => self.public_api,
        };
        let switched = (vpn_enabled, public_api) != (self.vpn_enabled, self.public_api);
        t.access_mode = match patch.access_mode {
            Some(mode) => mode,
            None if switched && (vpn_enabled || public_api) => AccessMode::implied(vpn_enabled, public_api),
            None => self.access_mode,
        };
        t.vpn_enabled = vpn_enabled;
        t.public_api = public_api;
        if let Some(v) = patch.tier {
            t.tier = v;
        }
        if let Some(v) = patch.db_quota {
            t.db_quota_bytes = v.bytes();
            t.db_quota = v.to_string();
        }
        if let Some(v) = patch.connection_limit {
            t.connection_limit = v;
        }
        if let Some(v) = patch.events_per_min {
            t.events_per_min = v;
        }
        if let Some(v) = patch.ddl_enabled {
            t.ddl_enabled = v;
        }
        if let Some(v) = patch.bandwidth_bps {
            t.bandwidth_bps = v;
        }
        if let Some(v) = patch.device_to_device {
            t.device_to_device = v;
        }
        if patch.backup_interval_s.is_some() || patch.backup_keep.is_some() || patch.backup_days.is_some() {
            let was = self.backup_policy.unwrap_or(super::backup::BackupPolicy::for_tier(self.tier));
            let policy = super::backup::BackupPolicy {
                interval_s: patch.backup_interval_s.unwrap_or(was.interval_s),
                keep_count: patch.backup_keep.unwrap_or(was.keep_count),
                keep_days: patch.backup_days.unwrap_or(was.keep_days),
            };
            policy.check()?;
            t.backup_policy = Some(policy);
        }
        t.spec().check()?;
        Ok(t)
    }
}

/// Largest connection limit and event rate accepted; beyond this is a typo.
pub const MAX_CONNECTION_LIMIT: u32 = 10_000;
pub const MAX_EVENTS_PER_MIN: u32 = 10_000_000;

#[cfg(test)]
mod tests;
