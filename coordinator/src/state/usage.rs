//! A tenant's usage over a period, as billing reads it (`UsageTotals`).
//! placeholder until the usage ledger lands (branch usage); the lead keeps that branch's file

use super::names::TenantName;
use super::State;
use serde::{Deserialize, Serialize};

/// What a tenant used in a half-open, hour-aligned period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageTotals {
    pub disk_byte_hours: u128,
    pub peak_connections: u32,
    pub events: u64,
    pub vpn_rx_bytes: u64,
    pub vpn_tx_bytes: u64,
    pub api_calls: u64,
}

impl State {
    /// The tenant's usage in `[from_ms, to_ms)`.
    pub fn usage_totals(&self, tenant: &TenantName, from_ms: u64, to_ms: u64) -> UsageTotals {
        // placeholder until the usage ledger lands (branch usage); the lead keeps that branch's file
        let _ = (tenant, from_ms, to_ms);
        UsageTotals::default()
    }
}
