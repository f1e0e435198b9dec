//! Invoices on the wire: the create body (a month), the action path (`issue`, `mark-paid`) and
//! the invoice as shown, with money and quantities as exact decimal strings and the status as a
//! reader sees it now (`overdue` for an issued invoice past due). The view converts back to the
//! stored invoice exactly (`TryFrom<InvoiceView>`), so the CLI renders CSV, HTML and provider
//! payloads from what the API returned.

use super::wire_enum;
use crate::state::billing::compute::{Line, LineKind};
use crate::state::billing::plan::Currency;
use crate::state::billing::{Invoice, InvoiceStatus, ShownStatus};
use crate::state::names::TenantName;
use crate::state::period::Period;
use crate::state::tenant::Tier;
use crate::state::usage::UsageTotals;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use crate::state::period::PERIOD_PATTERN;
/// `^…$` of an invoice number: `{tenant}-{YYYY}-{MM}`.
pub const INVOICE_ID_PATTERN: &str = "^[a-z][a-z0-9_]{1,30}-[2-9][0-9]{3}-(0[1-9]|1[0-2])$";
/// `^…$` of a decimal string as invoices show money and quantities.
pub const DECIMAL_PATTERN: &str = "^-?[0-9]+(\\.[0-9]+)?$";

wire_enum!(
    ShownStatus,
    "An invoice's status now: draft, issued, overdue (issued and past its due date) or paid.",
    [ShownStatus::Draft, ShownStatus::Issued, ShownStatus::Overdue, ShownStatus::Paid]
);

wire_enum!(
    LineKind,
    "What a line charges for: the base fee, database disk, realtime events, VPN traffic, or connections above the included peak.",
    [LineKind::BaseFee, LineKind::Disk, LineKind::Events, LineKind::Vpn, LineKind::Connections]
);

/// `POST /api/v1/tenant/{name}/invoices`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInvoiceBody {
    /// The calendar month (UTC) to invoice, once it has ended.
    #[schema(example = "2026-11")]
    pub period: String,
}

/// `POST /api/v1/tenant/{name}/invoices/{id}/{action}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum InvoiceAction {
    /// Draft → issued (due after the plan's payment terms).
    Issue,
    /// Issued or overdue → paid.
    MarkPaid,
}

/// What the invoice was computed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InvoiceUsageView {
    /// Disk bytes × hours over the month (a decimal string: it may exceed 2^53).
    #[schema(pattern = "^[0-9]+$")]
    pub disk_byte_hours: String,
    pub peak_connections: u32,
    pub events: u64,
    pub vpn_rx_bytes: u64,
    pub vpn_tx_bytes: u64,
    pub api_calls: u64,
}

/// One line item: `quantity` = `usage` − `included` (not below zero), `amount` = `quantity` ×
/// `unit_price` rounded half-even to the currency's minor unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InvoiceLineView {
    pub kind: LineKind,
    pub description: String,
    #[schema(example = "25.000000")]
    pub usage: String,
    pub included: String,
    pub quantity: String,
    /// The unit of usage, included, quantity and unit price.
    #[schema(example = "GB-month")]
    pub unit: String,
    #[schema(example = "0.125")]
    pub unit_price: String,
    #[schema(example = "1.88")]
    pub amount: String,
}

/// An invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InvoiceView {
    #[schema(example = "acme-2026-11")]
    pub id: String,
    pub tenant: String,
    #[schema(example = "2026-11")]
    pub period: String,
    /// The tenant's tier whose plan priced it.
    pub tier: Tier,
    /// ISO 4217.
    #[schema(example = "USD")]
    pub currency: String,
    pub issuer: String,
    pub status: ShownStatus,
    pub usage: InvoiceUsageView,
    pub lines: Vec<InvoiceLineView>,
    #[schema(example = "60.24")]
    pub subtotal: String,
    /// The subtotal (no taxes are added).
    #[schema(example = "60.24")]
    pub total: String,
    pub payment_terms_days: u32,
    pub created_at_ms: u64,
    pub issued_at_ms: Option<u64>,
    pub due_at_ms: Option<u64>,
    pub paid_at_ms: Option<u64>,
}

impl InvoiceView {
    /// The invoice as a reader at `now_ms` sees it.
    pub fn new(i: &Invoice, now_ms: u64) -> Self {
        let Invoice {
            id,
            tenant,
            period,
            tier,
            currency,
            issuer,
            usage,
            lines,
            subtotal,
            total,
            status: _,
            payment_terms_days,
            created_at_ms,
            issued_at_ms,
            due_at_ms,
            paid_at_ms,
        } = i;
        let UsageTotals { disk_byte_hours, peak_connections, events, vpn_rx_bytes, vpn_tx_bytes, api_calls } = *usage;
        InvoiceView {
            id: id.clone(),
            tenant: tenant.to_string(),
            period: period.to_string(),
            tier: *tier,
            currency: currency.code().to_string(),
            issuer: issuer.clone(),
            status: i.status_at(now_ms),
            usage: InvoiceUsageView {
                disk_byte_hours: disk_byte_hours.to_string(),
                peak_connections,
                events,
                vpn_rx_bytes,
                vpn_tx_bytes,
                api_calls,
            },
            lines: lines.iter().map(InvoiceLineView::from).collect(),
            subtotal: subtotal.to_string(),
            total: total.to_string(),
            payment_terms_days: *payment_terms_days,
            created_at_ms: *created_at_ms,
            issued_at_ms: *issued_at_ms,
            due_at_ms: *due_at_ms,
            paid_at_ms: *paid_at_ms,
        }
    }
}

impl From<&Line> for InvoiceLineView {
    fn from(l: &Line) -> Self {
        let Line { kind, description, usage, included, quantity, unit_price, amount } = l;
        InvoiceLineView {
            kind: *kind,
            description: description.clone(),
            usage: usage.to_string(),
            included: included.to_string(),
            quantity: quantity.to_string(),
            unit: kind.unit().to_string(),
            unit_price: unit_price.to_string(),
            amount: amount.to_string(),
        }
    }
}

/// An invoice view that does not describe an invoice (a coordinator speaking another contract).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invoice view: {0}")]
pub struct InvalidInvoiceView(String);

fn dec(field: &str, raw: &str) -> Result<Decimal, InvalidInvoiceView> {
    Decimal::from_str_exact(raw).map_err(|_| InvalidInvoiceView(format!("{field} {raw:?} is not a decimal")))
}

impl TryFrom<InvoiceView> for Invoice {
    type Error = InvalidInvoiceView;
    fn try_from(v: InvoiceView) -> Result<Self, Self::Error> {
        let bad = |e: &dyn std::fmt::Display| InvalidInvoiceView(e.to_string());
        let mut lines = Vec::new();
        for l in v.lines {
            lines.push(Line {
                kind: l.kind,
                description: l.description,
                usage: dec("usage", &l.usage)?,
                included: dec("included", &l.included)?,
                quantity: dec("quantity", &l.quantity)?,
                unit_price: dec("unit_price", &l.unit_price)?,
                amount: dec("amount", &l.amount)?,
            });
        }
        let status = match v.status {
            ShownStatus::Draft => InvoiceStatus::Draft,
            ShownStatus::Issued | ShownStatus::Overdue => InvoiceStatus::Issued,
            ShownStatus::Paid => InvoiceStatus::Paid,
        };
        Ok(Invoice {
            id: v.id,
            tenant: TenantName::parse(&v.tenant).map_err(|e| bad(&e))?,
            period: Period::parse(&v.period).map_err(|e| bad(&e))?,
            tier: v.tier,
            currency: Currency::parse(&v.currency).map_err(|e| bad(&e))?,
            issuer: v.issuer,
            usage: UsageTotals {
                disk_byte_hours: v.usage.disk_byte_hours.parse().map_err(|e| bad(&e))?,
                peak_connections: v.usage.peak_connections,
                events: v.usage.events,
                vpn_rx_bytes: v.usage.vpn_rx_bytes,
                vpn_tx_bytes: v.usage.vpn_tx_bytes,
                api_calls: v.usage.api_calls,
            },
            lines,
            subtotal: dec("subtotal", &v.subtotal)?,
            total: dec("total", &v.total)?,
            status,
            payment_terms_days: v.payment_terms_days,
            created_at_ms: v.created_at_ms,
            issued_at_ms: v.issued_at_ms,
            due_at_ms: v.due_at_ms,
            paid_at_ms: v.paid_at_ms,
        })
    }
}
