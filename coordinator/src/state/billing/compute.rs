//! The pure invoice computation: a plan, a tenant's `UsageTotals` and a period → line items.
//!
//! Rules (README "Billing"): a usage quantity is converted to its unit and rounded half-even to
//! 6 decimal places (disk GB-months = byte-hours / (10^9 × hours in the period); events in
//! millions; VPN GB = (received + sent bytes) / 10^9; connections = the period's peak); the
//! included amount is taken off (never below zero); each line's amount = quantity × unit price,
//! rounded half-even to the currency's minor unit; subtotal = the sum of the lines' amounts;
//! total = subtotal (no taxes). A usage line whose usage is zero is left out; the base fee is
//! always the first line.

use super::plan::{tier_name, PricePlan};
use crate::state::period::Period;
use crate::state::usage::UsageTotals;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

/// Decimal places of a line's usage and quantity.
pub const QUANTITY_DECIMALS: u32 = 6;

/// What a line charges for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    BaseFee,
    Disk,
    Events,
    Vpn,
    Connections,
}

impl LineKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            LineKind::BaseFee => "base_fee",
            LineKind::Disk => "disk",
            LineKind::Events => "events",
            LineKind::Vpn => "vpn",
            LineKind::Connections => "connections",
        }
    }

    /// The unit the quantity and unit price are in.
    pub const fn unit(self) -> &'static str {
        match self {
            LineKind::BaseFee => "month",
            LineKind::Disk => "GB-month",
            LineKind::Events => "million events",
            LineKind::Vpn => "GB",
            LineKind::Connections => "connection",
        }
    }

    pub const fn label(self) -> &'static str {
        match self {
            LineKind::BaseFee => "Base fee",
            LineKind::Disk => "Database disk",
            LineKind::Events => "Realtime events",
            LineKind::Vpn => "VPN traffic (received + sent)",
            LineKind::Connections => "Connections above the included peak",
        }
    }
}

/// One line item: `usage` in the kind's unit, `included` of it free, `quantity` billed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub kind: LineKind,
    pub description: String,
    pub usage: Decimal,
    pub included: Decimal,
    pub quantity: Decimal,
    pub unit_price: Decimal,
    pub amount: Decimal,
}

/// What the computation gives: the lines and their sum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Computed {
    pub lines: Vec<Line>,
    pub subtotal: Decimal,
    pub total: Decimal,
}

/// Usage too large for exact arithmetic (far beyond any real tenant).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("usage of {0} is too large to price exactly")]
pub struct Overflow(pub &'static str);

fn half_even(v: Decimal, dp: u32) -> Decimal {
    v.round_dp_with_strategy(dp, RoundingStrategy::MidpointNearestEven)
}

/// `n / per` rounded to `QUANTITY_DECIMALS`.
fn per_unit(kind: LineKind, n: u128, per: u128) -> Result<Decimal, Overflow> {
    let too_large = || Overflow(kind.as_str());
    let n =
        Decimal::try_from_i128_with_scale(i128::try_from(n).map_err(|_| too_large())?, 0).map_err(|_| too_large())?;
    let per =
        Decimal::try_from_i128_with_scale(i128::try_from(per).map_err(|_| too_large())?, 0).map_err(|_| too_large())?;
    Ok(half_even(n.checked_div(per).ok_or_else(too_large)?, QUANTITY_DECIMALS))
}

/// The line items of `usage` in `period` under `plan`.
pub fn compute(plan: &PricePlan, usage: &UsageTotals, period: Period) -> Result<Computed, Overflow> {
    let minor = plan.currency.minor_units();
    let line = |kind: LineKind, usage: Decimal, included: Decimal, unit_price: Decimal| -> Result<Line, Overflow> {
        let quantity = (usage - included).max(Decimal::ZERO);
        let mut amount = half_even(quantity.checked_mul(unit_price).ok_or(Overflow(kind.as_str()))?, minor);
        amount.rescale(minor);
        let description = match kind {
            LineKind::BaseFee => format!("{} ({}), {period}", kind.label(), tier_name(plan.tier)),
            _ => format!("{}, {period}", kind.label()),
        };
        Ok(Line { kind, description, usage, included, quantity, unit_price, amount })
    };
    let gb = 1_000_000_000u128;
    let disk_per = gb * u128::from(period.hours());
    let vpn_bytes = u128::from(usage.vpn_rx_bytes) + u128::from(usage.vpn_tx_bytes);
    let mut lines = vec![line(LineKind::BaseFee, Decimal::ONE, Decimal::ZERO, plan.base_fee)?];
    if usage.disk_byte_hours > 0 {
        let q = per_unit(LineKind::Disk, usage.disk_byte_hours, disk_per)?;
        lines.push(line(LineKind::Disk, q, plan.included_disk_gb_months, plan.disk_gb_month)?);
    }
    if usage.events > 0 {
        let q = per_unit(LineKind::Events, u128::from(usage.events), 1_000_000)?;
        lines.push(line(LineKind::Events, q, plan.included_events_millions, plan.events_million)?);
    }
    if vpn_bytes > 0 {
        let q = per_unit(LineKind::Vpn, vpn_bytes, gb)?;
        lines.push(line(LineKind::Vpn, q, plan.included_vpn_gb, plan.vpn_gb)?);
    }
    if usage.peak_connections > 0 {
        let peak = Decimal::from(usage.peak_connections);
        lines.push(line(LineKind::Connections, peak, Decimal::from(plan.included_connections), plan.extra_connection)?);
    }
    let mut subtotal = Decimal::new(0, minor);
    for l in &lines {
        subtotal = subtotal.checked_add(l.amount).ok_or(Overflow("the subtotal"))?;
    }
    Ok(Computed { lines, subtotal, total: subtotal })
}

#[cfg(test)]
mod tests {
    use super::super::plan::Currency;
    use super::*;
    use crate::state::tenant::Tier;

    fn d(s: &str) -> Decimal {
        Decimal::from_str_exact(s).expect("decimal")
    }

    /// The premium plan of the tests: 49.00 USD a month, 10 GB-months, 1 M events, 50 GB of VPN
    /// and 20 connections included.
    pub(crate) fn premium() -> PricePlan {
        PricePlan {
            tier: Tier::Premium,
            currency: Currency::parse("USD").expect("known"),
            issuer: "Berqenas".into(),
            base_fee: d("49.00"),
            disk_gb_month: d("0.125"),
            events_million: d("1.50"),
            vpn_gb: d("0.02"),
            extra_connection: d("0.75"),
            included_disk_gb_months: d("10"),
            included_events_millions: d("1"),
            included_vpn_gb: d("50"),
            included_connections: 20,
            payment_terms_days: 30,
        }
    }

    fn nov() -> Period {
        Period::parse("2026-11").expect("valid")
    }

    /// The fixed synthetic ledger of the "Done means" check.
    pub(crate) fn synthetic() -> UsageTotals {
        UsageTotals {
            // 25 GB kept all month: 25 × 10^9 bytes × 720 h.
            disk_byte_hours: 25_000_000_000 * 720,
            peak_connections: 27,
            events: 3_400_000,
            vpn_rx_bytes: 60_000_000_000,
            vpn_tx_bytes: 15_500_000_000,
            api_calls: 12_345,
        }
    }

    #[test]
    fn synthetic_ledger_invoice_equals_hand_computed_totals() {
        // By hand, premium plan, 2026-11 (720 hours):
        //   base fee                                   1 × 49.00            = 49.00
        //   disk   25 GB-months − 10 included = 15     × 0.125 = 1.875      →  1.88 (half-even)
        //   events 3.4 M − 1 M included = 2.4          × 1.50               =  3.60
        //   VPN    (60 + 15.5) GB = 75.5 − 50 = 25.5   × 0.02               =  0.51
        //   conns  peak 27 − 20 included = 7           × 0.75               =  5.25
        //   API calls are not priced.
        //   subtotal = total = 49.00 + 1.88 + 3.60 + 0.51 + 5.25            = 60.24
        let c = compute(&premium(), &synthetic(), nov()).expect("prices");
        let got: Vec<(LineKind, String, String, String)> = c
            .lines
            .iter()
            .map(|l| {
                (l.kind, l.usage.normalize().to_string(), l.quantity.normalize().to_string(), l.amount.to_string())
            })
            .collect();
        let want = [
            (LineKind::BaseFee, "1", "1", "49.00"),
            (LineKind::Disk, "25", "15", "1.88"),
            (LineKind::Events, "3.4", "2.4", "3.60"),
            (LineKind::Vpn, "75.5", "25.5", "0.51"),
            (LineKind::Connections, "27", "7", "5.25"),
        ]
        .map(|(k, u, q, a)| (k, u.to_string(), q.to_string(), a.to_string()));
        assert_eq!(got, want);
        assert_eq!(c.subtotal, d("60.24"));
        assert_eq!(c.total, d("60.24"));
        assert_eq!(c.lines[1].description, "Database disk, 2026-11");
        assert_eq!(c.lines[0].description, "Base fee (premium), 2026-11");
    }

    #[test]
    fn included_amounts_are_free_and_never_negative() {
        // Everything under the included amounts: usage lines appear at 0.00.
        let small = UsageTotals {
            disk_byte_hours: 5_000_000_000 * 720,
            peak_connections: 3,
            events: 999_999,
            vpn_rx_bytes: 1,
            vpn_tx_bytes: 0,
            api_calls: 0,
        };
        let c = compute(&premium(), &small, nov()).expect("prices");
        assert_eq!(c.lines.len(), 5);
        assert!(c.lines[1..].iter().all(|l| l.quantity.is_zero() && l.amount.is_zero()), "{:?}", c.lines);
        assert_eq!(c.total, d("49.00"));
        // No usage at all: the base fee alone.
        let none = compute(&premium(), &UsageTotals::default(), nov()).expect("prices");
        assert_eq!(none.lines.len(), 1);
        assert_eq!((none.lines[0].kind, none.total), (LineKind::BaseFee, d("49.00")));
    }

    #[test]
    fn rounding_is_half_even_per_line_to_the_minor_unit() {
        let mut plan = premium();
        plan.included_disk_gb_months = Decimal::ZERO;
        plan.included_connections = 0;
        let at = |byte_hours: u128, price: &str, plan: &mut PricePlan| {
            plan.disk_gb_month = d(price);
            let usage = UsageTotals { disk_byte_hours: byte_hours, ..UsageTotals::default() };
            compute(plan, &usage, nov()).expect("prices").lines[1].amount
        };
        let gbm = 1_000_000_000u128 * 720;
        // 1 GB-month × 0.125 = 0.125 → 0.12 (tie to even); × 0.135 = 0.135 → 0.14 (tie to even).
        assert_eq!(at(gbm, "0.125", &mut plan), d("0.12"));
        assert_eq!(at(gbm, "0.135", &mut plan), d("0.14"));
        // 3 GB-months × 0.005 = 0.015 → 0.02; just above a tie rounds up, just below down.
        assert_eq!(at(3 * gbm, "0.005", &mut plan), d("0.02"));
        assert_eq!(at(gbm, "0.005001", &mut plan), d("0.01"));
        assert_eq!(at(gbm, "0.004999", &mut plan), d("0.00"));
        // A third of a GB-month: the quantity is rounded to 6 places first (0.333333).
        let third =
            compute(&plan, &UsageTotals { disk_byte_hours: gbm / 3, ..UsageTotals::default() }, nov()).expect("prices");
        assert_eq!(third.lines[1].quantity, d("0.333333"));
        assert_eq!(third.lines[1].amount, d("0.00"), "0.333333 × 0.004999 = 0.00166…");
        // A zero-decimal currency rounds to whole units: 7 connections × 0.75 JPY = 5.25 → 5.
        plan.currency = Currency::parse("JPY").expect("known");
        plan.base_fee = d("4900");
        let c = compute(&plan, &UsageTotals { peak_connections: 7, ..UsageTotals::default() }, nov()).expect("prices");
        assert_eq!(c.lines[1].amount, d("5"));
        assert_eq!(c.total, d("4905"));
        // Three-decimal currency: 0.0125 × 1 = 0.0125 → 0.012 (tie to even).
        plan.currency = Currency::parse("KWD").expect("known");
        plan.extra_connection = d("0.0125");
        let c = compute(&plan, &UsageTotals { peak_connections: 1, ..UsageTotals::default() }, nov()).expect("prices");
        assert_eq!(c.lines[1].amount, d("0.012"));
    }

    #[test]
    fn huge_usage_is_refused_not_wrapped() {
        let usage = UsageTotals { disk_byte_hours: u128::MAX, ..UsageTotals::default() };
        assert_eq!(compute(&premium(), &usage, nov()), Err(Overflow("disk")));
        let most = UsageTotals {
            events: u64::MAX,
            vpn_rx_bytes: u64::MAX,
            vpn_tx_bytes: u64::MAX,
            peak_connections: u32::MAX,
            ..UsageTotals::default()
        };
        assert!(compute(&premium(), &most, nov()).is_ok(), "every u64 counter prices exactly");
    }
}
