//! A tenant's usage on the wire (`GET /api/v1/tenant/{name}/usage`, `usage show`): the period
//! query (a calendar month, UTC), one row per day and the period's totals.

use crate::server::Consistency;
use crate::state::usage::{Usage, UsageTotals, DAY_MS};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `^…$` of a period: a calendar month `YYYY-MM` from 1970 to 9999.
pub const PERIOD_PATTERN: &str = "^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])$";

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

/// A calendar month, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub year: u32,
    pub month: u32,
}

impl Period {
    /// `YYYY-MM`, 1970-01 to 9999-12.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let refused = || format!("period {raw:?} must be a month as YYYY-MM, from 1970-01 to 9999-12");
        let (y, m) = raw.split_once('-').ok_or_else(refused)?;
        if y.len() != 4 || m.len() != 2 || !(y.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit())) {
            return Err(refused());
        }
        let (year, month): (u32, u32) = (y.parse().map_err(|_| refused())?, m.parse().map_err(|_| refused())?);
        if year < 1970 || !(1..=12).contains(&month) {
            return Err(refused());
        }
        Ok(Period { year, month })
    }

    /// The month holding `ms`.
    pub fn of(ms: u64) -> Self {
        let (year, month, _) = civil_from_days(ms / DAY_MS);
        Period { year, month }
    }

    /// `[first day 00:00, next month's first day 00:00)` in Unix milliseconds.
    pub fn range_ms(&self) -> (u64, u64) {
        let next = if self.month == 12 { (self.year + 1, 1) } else { (self.year, self.month + 1) };
        (days_from_civil(self.year, self.month, 1) * DAY_MS, days_from_civil(next.0, next.1, 1) * DAY_MS)
    }
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// Days since 1970-01-01 of a date on or after it (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: u32, month: u32, day: u32) -> u64 {
    let y = u64::from(if month <= 2 { year - 1 } else { year });
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = u64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + u64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `days` after 1970-01-01 (`civil_from_days`).
fn civil_from_days(days: u64) -> (u32, u32, u32) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    // Years here stay far below u32::MAX (timestamps are u64 milliseconds).
    (u32::try_from(year).unwrap_or(u32::MAX), u32::try_from(month).unwrap_or(1), u32::try_from(day).unwrap_or(1))
}

/// `2026-11-03` for the day holding `ms`.
pub fn date(ms: u64) -> String {
    let (y, m, d) = civil_from_days(ms / DAY_MS);
    format!("{y:04}-{m:02}-{d:02}")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_calendar_months_in_utc_and_bad_ones_are_refused() {
        let nov = Period::parse("2026-11").expect("valid");
        assert_eq!(nov.range_ms(), (1_793_491_200_000, 1_793_491_200_000 + 30 * DAY_MS));
        assert_eq!(Period::parse("2024-02").expect("valid").range_ms().1 - 1_706_745_600_000, 29 * DAY_MS);
        let dec = Period::parse("2026-12").expect("valid").range_ms();
        assert_eq!(date(dec.1), "2027-01-01");
        assert_eq!(Period::of(1_793_491_200_000 + 29 * DAY_MS), nov);
        assert_eq!(Period::of(0).to_string(), "1970-01");
        assert_eq!(date(1_793_491_200_000 + 2 * DAY_MS + 5), "2026-11-03");
        for bad in
            ["2026-13", "2026-00", "1969-12", "26-11", "2026-1", "2026/11", "2026-11-01", "", "２０２６-11", "+026-11"]
        {
            assert!(Period::parse(bad).is_err(), "{bad:?}");
        }
    }
}
