//! Tenants on the wire: the create and update bodies, the list query, the lifecycle actions and the
//! tenant as answered (`TenantView`: the stored tenant without its password verifier).

use super::{project, wire_enum};
use crate::state::node::NodeTenantStatus;
use crate::state::tenant::{AccessMode, DbType, Isolation, NetworkAllocation, Placement, Tenant, TenantStatus, Tier};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

wire_enum!(Tier, "A tier and its default quotas.", [Tier::Free, Tier::Premium, Tier::Enterprise]);
wire_enum!(
    TenantStatus,
    "Where the tenant is in its lifecycle.",
    [
        TenantStatus::Provisioning,
        TenantStatus::Active,
        TenantStatus::Suspended,
        TenantStatus::Deleting,
        TenantStatus::DeletedPendingPurge,
        TenantStatus::QuotaExceeded,
    ]
);

/// `^…$` of a tenant name; the reserved names below and the `pg_`/`bq_` prefixes are refused too.
pub const TENANT_NAME_PATTERN: &str = "^[a-z][a-z0-9_]{1,30}$";
/// The names `TenantName::parse` reserves (a test checks each), for the document to state.
pub const RESERVED_NAMES: &str = "public postgres template0 template1 information_schema berqenas admin root system default all none user current_user session_user";
/// Prefixes no tenant name may start with.
pub const RESERVED_PREFIX_PATTERN: &str = "^(pg_|bq_)";

/// The create body: a name, and whatever differs from the tier's and access defaults.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantBody {
    #[schema(example = "acme")]
    pub name: String,
    /// Disk quota such as `5GB`, `500MB`, `1TiB` (at most 1 PB); the tier's default when absent.
    #[serde(default)]
    #[schema(example = "5GB")]
    pub db_quota: Option<String>,
    /// Default true.
    #[serde(default)]
    pub vpn_enabled: Option<bool>,
    /// Whether clients outside the VPN may connect; default: what `access_mode` implies, else
    /// true without a VPN and false with one. Must agree with `access_mode`.
    #[serde(default)]
    pub public_api: Option<bool>,
    /// Let the tenant's database user create tables and other objects in its schema. Default false.
    #[serde(default)]
    pub ddl_enabled: Option<bool>,
    #[serde(default)]
    pub tier: Option<Tier>,
    #[serde(default)]
    pub db_type: Option<DbType>,
    /// Default `schema` for PostgreSQL; SQL Server tenants always get `database`.
    #[serde(default)]
    pub isolation: Option<Isolation>,
    #[serde(default)]
    pub access_mode: Option<AccessMode>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10_000)]
    pub connection_limit: Option<u32>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10_000_000)]
    pub events_per_min: Option<u32>,
    /// Place alone on a node labelled `dedicated=true`.
    #[serde(default)]
    pub dedicated: Option<bool>,
    /// Labels a node must carry to host this tenant (at most 16).
    #[serde(default)]
    #[schema(schema_with = super::optional_labels)]
    pub node_selector: Option<BTreeMap<String, String>>,
}

/// A PATCH body: only the fields to change, at least one, none of them null. Whether the result
/// keeps the tenant's invariants depends on the tenant as it is; a change that would break one is
/// refused with 409.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenantBody {
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub tier: Option<Tier>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    #[schema(example = "10GB")]
    pub db_quota: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    #[schema(minimum = 1, maximum = 10_000)]
    pub connection_limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    #[schema(minimum = 1, maximum = 10_000_000)]
    pub events_per_min: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub vpn_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub public_api: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub ddl_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub access_mode: Option<AccessMode>,
    /// Limit of the tenant's VPN traffic on its gateway, each way: a whole number of `kbit`,
    /// `mbit` or `gbit` (at most 100gbit), or `0`/`none` to clear it.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    #[schema(example = "50mbit")]
    pub bandwidth: Option<String>,
    /// Whether the tenant's devices may reach each other through the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub device_to_device: Option<bool>,
    /// Seconds between scheduled backups (5 minutes to a week).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    #[schema(example = 3600, minimum = 300, maximum = 604_800)]
    pub backup_interval_s: Option<u32>,
    /// The newest this many backups are kept.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    #[schema(minimum = 1, maximum = 500)]
    pub backup_keep: Option<u32>,
    /// Backups older than this many days are removed (the newest is always kept).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    #[schema(minimum = 1, maximum = 3650)]
    pub backup_days: Option<u32>,
}

/// A field that may be absent but not null (`Option::None` only when absent).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// `GET /api/v1/tenants` query.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TenantListQuery {
    #[serde(default)]
    pub consistency: Option<crate::server::Consistency>,
    /// Only tenants in this status.
    #[serde(default)]
    pub status: Option<TenantStatus>,
}

/// What `POST /api/v1/tenant/{name}/{action}` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TenantAction {
    Suspend,
    Resume,
    Restore,
    Purge,
}

/// `?force=` of a purge.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PurgeQuery {
    /// Purge before the retention period has run out (purge only).
    #[serde(default)]
    pub force: bool,
}

/// A tenant as the API shows it: everything but the password verifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TenantView {
    #[schema(value_type = String, example = "acme")]
    pub name: crate::state::names::TenantName,
    pub tier: Tier,
    pub db_type: DbType,
    pub isolation: Isolation,
    /// Disk quota in bytes.
    #[schema(example = 100_000_000)]
    pub db_quota_bytes: u64,
    /// The quota as a human size, e.g. `5GB`.
    #[schema(example = "100MB")]
    pub db_quota: String,
    #[schema(minimum = 1, maximum = 10_000)]
    pub connection_limit: u32,
    #[schema(minimum = 1, maximum = 10_000_000)]
    pub events_per_min: u32,
    #[schema(example = true)]
    pub vpn_enabled: bool,
    pub public_api: bool,
    /// The tenant's database user may create objects (DDL) in its schema.
    pub ddl_enabled: bool,
    pub access_mode: AccessMode,
    #[schema(example = false)]
    pub dedicated: bool,
    /// Labels a node must carry to host this tenant.
    #[schema(example = json!({"region": "ist"}))]
    pub node_selector: BTreeMap<String, String>,
    pub status: TenantStatus,
    /// Why the tenant is not (yet) where it should be, e.g. "no node fits".
    pub status_reason: Option<String>,
    pub network: NetworkView,
    pub placement: PlacementView,
    /// Raft log index of the last change to this tenant.
    #[schema(example = 42)]
    pub revision: u64,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    #[schema(example = json!(null))]
    pub deleted_at_ms: Option<u64>,
    pub purge_after_ms: Option<u64>,
    /// Status to return to on `resume`/`restore`.
    pub status_before_offboarding: Option<TenantStatus>,
    /// What each node the tenant is placed on last reported about it, by node id.
    #[schema(value_type = BTreeMap<String, NodeTenantStatusView>)]
    pub node_status: BTreeMap<u64, NodeTenantStatusView>,
    /// Limit of the tenant's VPN traffic on its gateway, bits per second each way; 0: none.
    pub bandwidth_bps: u64,
    /// The tenant's devices may reach each other through the gateway.
    pub device_to_device: bool,
    /// Domains whose addresses the tenant's devices may not reach.
    pub blocked_domains: Vec<String>,
    /// Raft index of the last change to what its gateway serves (devices, exposures, firewall
    /// rules, blocked domains); the gateway node must report at least this for the tenant to be
    /// active.
    pub gateway_revision: u64,
    /// Raft index of the last change to what its db node's realtime ingest serves (active
    /// devices, customer keys); the db node must report at least this for the tenant to be active.
    pub ingest_revision: u64,
    /// The backup policy in force: the tenant's own or its tier's.
    pub backup_policy: super::BackupPolicyView,
}

impl From<&Tenant> for TenantView {
    fn from(t: &Tenant) -> Self {
        project!(t.clone() => Tenant => TenantView {
            name, tier, db_type, isolation, db_quota_bytes, db_quota, connection_limit, events_per_min, vpn_enabled,
            public_api, ddl_enabled, access_mode, dedicated, node_selector, status, status_reason, network, placement,
            revision, gateway_revision, ingest_revision, created_at_ms, updated_at_ms, deleted_at_ms, purge_after_ms, status_before_offboarding,
            bandwidth_bps, device_to_device
        } with {
            node_status: node_status.into_iter().map(|(id, s)| (id, s.into())).collect(),
            blocked_domains: blocked_domains.into_iter().map(|d| d.to_string()).collect(),
            backup_policy: backup_policy.unwrap_or(crate::state::backup::BackupPolicy::for_tier(t.tier)).into(),
        }
          hidden { db_password_verifier })
    }
}

/// One row of the tenant list (`GET /api/v1/tenants/summary`): what a list of many tenants
/// shows (the panel's tenants and fleet pages), about a tenth of a `TenantView`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TenantSummary {
    #[schema(value_type = String, example = "acme")]
    pub name: crate::state::names::TenantName,
    pub status: TenantStatus,
    pub tier: Tier,
    pub db_type: DbType,
    /// Disk quota in bytes.
    #[schema(example = 100_000_000)]
    pub db_quota_bytes: u64,
    pub access_mode: AccessMode,
    pub placement: PlacementView,
    /// The nodes whose last report about the tenant is older than its revision.
    pub lagging_nodes: Vec<u64>,
}

impl From<&Tenant> for TenantSummary {
    fn from(t: &Tenant) -> Self {
        Self {
            name: t.name.clone(),
            status: t.status,
            tier: t.tier,
            db_type: t.db_type,
            db_quota_bytes: t.db_quota_bytes,
            access_mode: t.access_mode,
            placement: t.placement.clone().into(),
            lagging_nodes: t.node_status.iter().filter(|(_, s)| s.revision < t.revision).map(|(id, _)| *id).collect(),
        }
    }
}

/// The network resources allocated to a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NetworkView {
    pub index: u32,
    #[schema(example = "10.50.1.0/24")]
    pub vpn_subnet: String,
    pub gateway_address: String,
    /// The WireGuard interface on the gateway node.
    pub interface: String,
    pub listen_port: u16,
}

impl From<NetworkAllocation> for NetworkView {
    fn from(n: NetworkAllocation) -> Self {
        project!(n => NetworkAllocation => NetworkView { index, vpn_subnet, gateway_address, interface, listen_port })
    }
}

/// Where a tenant runs; `null` means not placed yet (see `status_reason`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PlacementView {
    pub db_node: Option<u64>,
    pub gateway_node: Option<u64>,
}

impl From<Placement> for PlacementView {
    fn from(p: Placement) -> Self {
        project!(p => Placement => PlacementView { db_node, gateway_node })
    }
}

/// What one node last reported about one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeTenantStatusView {
    pub ready: bool,
    pub reason: Option<String>,
    /// Revision of the desired state the node had applied.
    pub revision: u64,
    /// Disk the tenant's database uses there (db role).
    pub db_bytes: u64,
    /// Over its quota: writes are blocked on that node.
    pub quota_exceeded: bool,
    /// Sessions of the tenant's database user there (db role), at the last report.
    pub connections: u32,
    /// The tenant's gateway interface there (gateway role).
    pub gateway: Option<super::GatewayStatusView>,
    /// Realtime events the node stored for the tenant since its agent started (a counter that
    /// restarts at 0 with the agent).
    pub events_total: u64,
}

impl From<NodeTenantStatus> for NodeTenantStatusView {
    fn from(s: NodeTenantStatus) -> Self {
        project!(s => NodeTenantStatus => NodeTenantStatusView {
            ready, reason, revision, db_bytes, quota_exceeded, connections, events_total
        } with { gateway: gateway.map(Into::into) })
    }
}

/// A created tenant, with its database login. `db_password` is shown this once; the coordinator
/// keeps only its SCRAM verifier.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedTenant {
    #[serde(flatten)]
    pub tenant: TenantView,
    pub db_user: String,
    pub db_password: String,
}

/// `^…$` of a bandwidth limit (`parse_bandwidth`).
pub const BANDWIDTH_PATTERN: &str = "^(0|none|[1-9][0-9]{0,7}kbit|[1-9][0-9]{0,4}mbit|([1-9][0-9]?|100)gbit)$";

/// A bandwidth limit in bits per second: `50mbit`, `512kbit`, `1gbit` (powers of 1000, at most
/// 100gbit); `0` or `none` clears it.
pub fn parse_bandwidth(raw: &str) -> Result<u64, String> {
    let refused =
        || format!("bandwidth {raw:?} must be a whole number of kbit, mbit or gbit (at most 100gbit), or 0/none");
    if raw == "0" || raw == "none" {
        return Ok(0);
    }
    let split = raw.find(|c: char| !c.is_ascii_digit()).ok_or_else(refused)?;
    let (digits, unit) = raw.split_at(split);
    let (per, max_digits) = match unit {
        "kbit" => (1_000u64, 8),
        "mbit" => (1_000_000, 5),
        "gbit" => (1_000_000_000, 3),
        _ => return Err(refused()),
    };
    if digits.is_empty() || digits.len() > max_digits || digits.starts_with('0') {
        return Err(refused());
    }
    let bps = digits.parse::<u64>().ok().and_then(|n| n.checked_mul(per)).ok_or_else(refused)?;
    if bps > 100_000_000_000 {
        return Err(refused());
    }
    Ok(bps)
}

/// The bounds the schema states, checked against the domain's own (see the test).
pub const CONNECTION_LIMIT_MAX: u32 = 10_000;
pub const EVENTS_PER_MIN_MAX: u32 = 10_000_000;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tenant::{MAX_CONNECTION_LIMIT, MAX_EVENTS_PER_MIN};

    #[test]
    fn reserved_names_are_the_domains() {
        for name in RESERVED_NAMES.split_whitespace().chain(["pg_x", "bq_x"]) {
            assert!(crate::state::names::TenantName::parse(name).is_err(), "{name} is reserved");
        }
    }

    #[test]
    fn bandwidths_are_whole_numbers_of_bits() {
        assert_eq!(parse_bandwidth("50mbit"), Ok(50_000_000));
        assert_eq!(parse_bandwidth("512kbit"), Ok(512_000));
        assert_eq!(parse_bandwidth("100gbit"), Ok(100_000_000_000));
        assert_eq!(parse_bandwidth("none"), Ok(0));
        assert_eq!(parse_bandwidth("0"), Ok(0));
        let pattern = regex_lite(BANDWIDTH_PATTERN);
        for bad in ["50", "50mb", "050mbit", "101gbit", "1.5mbit", "-1mbit", "", "999999999kbit"] {
            assert!(parse_bandwidth(bad).is_err(), "{bad}");
            assert!(!pattern(bad), "the pattern refuses {bad}");
        }
        for ok in ["50mbit", "512kbit", "100gbit", "none", "0", "99999mbit", "99999999kbit"] {
            assert!(pattern(ok) && parse_bandwidth(ok).is_ok(), "{ok}");
        }
    }

    /// The pattern's alternatives, checked by hand (no regex crate here).
    fn regex_lite(_pattern: &str) -> impl Fn(&str) -> bool {
        |s: &str| {
            let num = |d: &str, max: usize| {
                !d.is_empty() && d.len() <= max && !d.starts_with('0') && d.bytes().all(|b| b.is_ascii_digit())
            };
            s == "0"
                || s == "none"
                || s.strip_suffix("kbit").is_some_and(|d| num(d, 8))
                || s.strip_suffix("mbit").is_some_and(|d| num(d, 5))
                || s.strip_suffix("gbit").is_some_and(|d| num(d, 2) || d == "100")
        }
    }

    #[test]
    fn schema_bounds_are_the_domains() {
        assert_eq!(CONNECTION_LIMIT_MAX, MAX_CONNECTION_LIMIT);
        assert_eq!(EVENTS_PER_MIN_MAX, MAX_EVENTS_PER_MIN);
    }
}
