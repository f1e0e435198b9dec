//! A tenant's usage on the wire (`GET /api/v1/tenant/{name}/usage`, `usage show`): the period
//! query (a calendar month, UTC), one row per day and the period's totals.

use crate::server::Consistency;
use crate::state::usage::{Usage, UsageTotals};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `?period=&consistency=`.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// A calendar month in UTC, `YYYY-MM`; default: the current month.
    #[serde(default)]
    #[param(example = "2026-11")]
    pub period: Option<String>,
    /// `stale` answers from this coordinator's own state without asking the leader.
    #[serde(default)]
    pub consistency: Option<Consistency>,
}

/// What a tenant used in one day, or in a whole period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UsageAmounts {
    /// Disk in byte-hours: each reported size held until the next report, summed.
    pub disk_byte_hours: u64,
    /// The largest disk size reported.
    pub disk_max_bytes: u64,
    /// The most database sessions reported at once.
    pub peak_connections: u32,
    /// Realtime events stored.
    pub events: u64,
    /// VPN bytes the gateway received from the tenant's devices, and sent to them.
    pub vpn_rx_bytes: u64,
    pub vpn_tx_bytes: u64,
    /// Authenticated API requests acting on the tenant.
    pub api_calls: u64,
}

impl From<Usage> for UsageAmounts {
    fn from(u: Usage) -> Self {
        let totals = UsageTotals::from(u);
        UsageAmounts { disk_max_bytes: u.disk_max_bytes, ..UsageAmounts::from(totals) }
    }
}

impl From<UsageTotals> for UsageAmounts {
    fn from(t: UsageTotals) -> Self {
        let UsageTotals { disk_byte_hours, peak_connections, events, vpn_rx_bytes, vpn_tx_bytes, api_calls } = t;
        UsageAmounts {
            disk_byte_hours: u64::try_from(disk_byte_hours).unwrap_or(u64::MAX),
            disk_max_bytes: 0,
            peak_connections,
            events,
            vpn_rx_bytes,
            vpn_tx_bytes,
            api_calls,
        }
    }
}

/// One UTC day of usage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UsageDay {
    /// `YYYY-MM-DD`.
    pub date: String,
    #[serde(flatten)]
    pub usage: UsageAmounts,
}

/// A tenant's usage in a period: the days with any usage, and the totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UsageView {
    pub tenant: String,
    /// `YYYY-MM`.
    pub period: String,
    /// RFC 3339 start (inclusive) and end (exclusive) of the period.
    pub from: String,
    pub to: String,
    pub days: Vec<UsageDay>,
    pub totals: UsageAmounts,
}
