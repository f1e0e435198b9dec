//! Payment providers as adapters behind one trait: each turns an issued invoice into the payload
//! its API takes. Nothing here talks to the network; the operator (or a later integration) sends
//! the payload. Stripe takes invoice items in the currency's minor units with an idempotency key;
//! Iyzico takes a basket whose prices are decimal strings summing to the price.

use super::compute::LineKind;
use super::{Invoice, InvoiceStatus};
use rust_decimal::Decimal;
use serde_json::{json, Value};

/// Why an invoice cannot be exported to a provider.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    #[error("invoice {0} is a draft; issue it before exporting it to a payment provider")]
    Draft(String),
    #[error("{provider} does not take {currency}")]
    Currency { provider: &'static str, currency: &'static str },
    #[error("invoice {0} totals zero; there is nothing for {1} to charge")]
    Nothing(String, &'static str),
    #[error("an amount of invoice {0} does not fit the provider's integer minor units")]
    Amount(String),
}

/// A payment provider's view of an invoice.
pub trait PaymentProvider {
    /// The provider's name as `billing export --provider` takes it.
    fn name(&self) -> &'static str;
    /// The request payload the provider's API takes for this invoice.
    fn payload(&self, invoice: &Invoice) -> Result<Value, ExportError>;
}

/// The provider named `name` (`stripe`, `iyzico`).
pub fn by_name(name: &str) -> Option<&'static dyn PaymentProvider> {
    match name {
        "stripe" => Some(&Stripe),
        "iyzico" => Some(&Iyzico),
        _ => None,
    }
}

/// The lines a provider charges: issued or paid invoices, lines with a non-zero amount.
fn chargeable<'a>(invoice: &'a Invoice, provider: &'static str) -> Result<Vec<&'a super::compute::Line>, ExportError> {
    if invoice.status == InvoiceStatus::Draft {
        return Err(ExportError::Draft(invoice.id.clone()));
    }
    let lines: Vec<_> = invoice.lines.iter().filter(|l| !l.amount.is_zero()).collect();
    if lines.is_empty() {
        return Err(ExportError::Nothing(invoice.id.clone(), provider));
    }
    Ok(lines)
}

/// `amount` in the currency's minor units (exact: amounts are rounded to them).
fn minor_units(invoice: &Invoice, amount: Decimal) -> Result<i64, ExportError> {
    let scaled = amount * Decimal::from(10i64.pow(invoice.currency.minor_units()));
    if !scaled.fract().is_zero() {
        return Err(ExportError::Amount(invoice.id.clone()));
    }
    i64::try_from(scaled.mantissa() / 10i128.pow(scaled.scale())).map_err(|_| ExportError::Amount(invoice.id.clone()))
}

/// Stripe: one invoice item per line (`POST /v1/invoiceitems`, `amount` in minor units, lower-case
/// currency), then an invoice (`POST /v1/invoices`, sent for payment in the plan's terms). Each
/// request carries an `Idempotency-Key` derived from the invoice number, so a payload sent twice
/// makes one Stripe invoice. `customer` is the tenant name; the operator maps it to a Stripe
/// customer id.
pub struct Stripe;

impl PaymentProvider for Stripe {
    fn name(&self) -> &'static str {
        "stripe"
    }

    fn payload(&self, invoice: &Invoice) -> Result<Value, ExportError> {
        let lines = chargeable(invoice, self.name())?;
        let currency = invoice.currency.code().to_ascii_lowercase();
        let period = json!({"start": invoice.period.from_ms() / 1000, "end": invoice.period.to_ms() / 1000});
        let mut items = Vec::new();
        for l in lines {
            items.push(json!({
                "idempotency_key": format!("berqenas-{}-{}", invoice.id, l.kind.as_str()),
                "customer": invoice.tenant.as_str(),
                "amount": minor_units(invoice, l.amount)?,
                "currency": currency,
                "description": l.description,
                "period": period,
                "metadata": {"berqenas_invoice": invoice.id, "item": l.kind.as_str()},
            }));
        }
        Ok(json!({
            "provider": "stripe",
            "invoice_items": items,
            "invoice": {
                "idempotency_key": format!("berqenas-{}", invoice.id),
                "customer": invoice.tenant.as_str(),
                "currency": currency,
                "collection_method": "send_invoice",
                "days_until_due": invoice.payment_terms_days,
                "pending_invoice_items_behavior": "include",
                "metadata": {"berqenas_invoice": invoice.id, "period": invoice.period.to_string()},
            },
            "total": minor_units(invoice, invoice.total)?,
        }))
    }
}

/// Iyzico: a payment or checkout-form request whose `basketItems` prices (decimal strings with
/// the currency's decimals) add up to `price` and `paidPrice`; items priced zero are left out
/// (Iyzico refuses them). `conversationId` and `basketId` are the invoice number.
pub struct Iyzico;

/// The currencies Iyzico takes.
const IYZICO_CURRENCIES: &[&str] = &["TRY", "USD", "EUR", "GBP", "NOK", "CHF"];

impl PaymentProvider for Iyzico {
    fn name(&self) -> &'static str {
        "iyzico"
    }

    fn payload(&self, invoice: &Invoice) -> Result<Value, ExportError> {
        let code = invoice.currency.code();
        if !IYZICO_CURRENCIES.contains(&code) {
            return Err(ExportError::Currency { provider: self.name(), currency: code });
        }
        let lines = chargeable(invoice, self.name())?;
        let items: Vec<Value> = lines
            .iter()
            .map(|l| {
                json!({
                    "id": format!("{}-{}", invoice.id, l.kind.as_str()),
                    "name": l.description,
                    "category1": "Cloud services",
                    "category2": category(l.kind),
                    "itemType": "VIRTUAL",
                    "price": l.amount.to_string(),
                })
            })
            .collect();
        Ok(json!({
            "provider": "iyzico",
            "locale": "en",
            "conversationId": invoice.id,
            "price": invoice.total.to_string(),
            "paidPrice": invoice.total.to_string(),
            "currency": code,
            "basketId": invoice.id,
            "paymentGroup": "SUBSCRIPTION",
            "buyer": {"id": invoice.tenant.as_str()},
            "basketItems": items,
        }))
    }
}

fn category(kind: LineKind) -> &'static str {
    match kind {
        LineKind::BaseFee => "Subscription",
        LineKind::Disk => "Storage",
        LineKind::Events => "Realtime",
        LineKind::Vpn => "Network",
        LineKind::Connections => "Database",
    }
}

#[cfg(test)]
mod tests {
    use super::super::compute::{compute, Line};
    use super::super::plan::{Currency, PricePlan};
    use super::super::{Period, ShownStatus};
    use super::*;
    use crate::state::names::TenantName;
    use crate::state::tenant::Tier;
    use crate::state::usage::UsageTotals;

    fn d(s: &str) -> Decimal {
        Decimal::from_str_exact(s).expect("decimal")
    }

    /// Premium, 2026-11: base 49.00, disk 15 GB-months × 0.125 = 1.88, events 0 (all included).
    fn issued() -> Invoice {
        let plan = PricePlan {
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
        };
        let period = Period::parse("2026-11").expect("valid");
        let usage = UsageTotals { disk_byte_hours: 25_000_000_000 * 720, events: 500_000, ..UsageTotals::default() };
        let c = compute(&plan, &usage, period).expect("prices");
        Invoice {
            id: "acme-2026-11".into(),
            tenant: TenantName::parse("acme").expect("valid"),
            period,
            tier: plan.tier,
            currency: plan.currency,
            issuer: plan.issuer,
            usage,
            lines: c.lines,
            subtotal: c.subtotal,
            total: c.total,
            status: InvoiceStatus::Issued,
            payment_terms_days: 30,
            created_at_ms: 1,
            issued_at_ms: Some(1),
            due_at_ms: Some(2),
            paid_at_ms: None,
        }
    }

    #[test]
    fn stripe_gets_items_in_minor_units_with_idempotency_keys() {
        let want = json!({
            "provider": "stripe",
            "invoice_items": [
                {"idempotency_key": "berqenas-acme-2026-11-base_fee", "customer": "acme", "amount": 4900,
                 "currency": "usd", "description": "Base fee (premium), 2026-11",
                 "period": {"start": 1_793_491_200u64, "end": 1_796_083_200u64},
                 "metadata": {"berqenas_invoice": "acme-2026-11", "item": "base_fee"}},
                {"idempotency_key": "berqenas-acme-2026-11-disk", "customer": "acme", "amount": 188,
                 "currency": "usd", "description": "Database disk, 2026-11",
                 "period": {"start": 1_793_491_200u64, "end": 1_796_083_200u64},
                 "metadata": {"berqenas_invoice": "acme-2026-11", "item": "disk"}},
            ],
            "invoice": {"idempotency_key": "berqenas-acme-2026-11", "customer": "acme", "currency": "usd",
                "collection_method": "send_invoice", "days_until_due": 30,
                "pending_invoice_items_behavior": "include",
                "metadata": {"berqenas_invoice": "acme-2026-11", "period": "2026-11"}},
            "total": 5088,
        });
        let invoice = issued();
        assert_eq!(invoice.lines.len(), 3, "the events line is there, at 0.00");
        assert_eq!(Stripe.payload(&invoice), Ok(want));
    }

    #[test]
    fn iyzico_gets_a_basket_of_decimal_strings_summing_to_the_price() {
        let want = json!({
            "provider": "iyzico",
            "locale": "en",
            "conversationId": "acme-2026-11",
            "price": "50.88",
            "paidPrice": "50.88",
            "currency": "USD",
            "basketId": "acme-2026-11",
            "paymentGroup": "SUBSCRIPTION",
            "buyer": {"id": "acme"},
            "basketItems": [
                {"id": "acme-2026-11-base_fee", "name": "Base fee (premium), 2026-11", "category1": "Cloud services",
                 "category2": "Subscription", "itemType": "VIRTUAL", "price": "49.00"},
                {"id": "acme-2026-11-disk", "name": "Database disk, 2026-11", "category1": "Cloud services",
                 "category2": "Storage", "itemType": "VIRTUAL", "price": "1.88"},
            ],
        });
        assert_eq!(Iyzico.payload(&issued()), Ok(want));
    }

    #[test]
    fn drafts_empty_invoices_and_foreign_currencies_are_refused() {
        let mut draft = issued();
        draft.status = InvoiceStatus::Draft;
        for p in [by_name("stripe"), by_name("iyzico")].into_iter().flatten() {
            assert_eq!(p.payload(&draft), Err(ExportError::Draft("acme-2026-11".into())), "{}", p.name());
        }
        let mut free = issued();
        free.lines.retain(|l: &Line| l.kind == LineKind::Events);
        free.total = Decimal::ZERO;
        assert!(matches!(Stripe.payload(&free), Err(ExportError::Nothing(..))));
        let mut yen = issued();
        yen.currency = Currency::parse("JPY").expect("known");
        assert!(matches!(Iyzico.payload(&yen), Err(ExportError::Currency { currency: "JPY", .. })));
        assert!(by_name("paypal").is_none());
        assert_eq!(issued().status_at(3), ShownStatus::Overdue, "overdue invoices export like issued ones");
        assert!(Stripe.payload(&issued()).is_ok());
    }

    #[test]
    fn zero_decimal_currencies_are_whole_units_in_stripe() {
        let mut yen = issued();
        yen.currency = Currency::parse("JPY").expect("known");
        for l in &mut yen.lines {
            l.amount = l.amount.round();
        }
        yen.total = d("51");
        let p = Stripe.payload(&yen).expect("payload");
        assert_eq!(p["total"], 51);
        assert_eq!(p["invoice_items"][0]["amount"], 49);
    }
}
