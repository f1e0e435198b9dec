//! Manual invoices: an invoice rendered as CSV (one row per line item, then subtotal and total)
//! or as one self-contained HTML page (inline style, no scripts, no external assets; every text
//! HTML-escaped). Pure renderers; the JSON export is the API's `InvoiceView`.

use super::{Invoice, ShownStatus};
use std::fmt::Write;

/// Text safe inside HTML element content and double-quoted attributes.
pub fn escape_html(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// One CSV field (RFC 4180 quoting); a field a spreadsheet would read as a formula is prefixed
/// with `'`.
fn csv_field(raw: &str) -> String {
    let guarded = if raw.starts_with(['=', '+', '-', '@', '\t', '\r']) && raw.parse::<f64>().is_err() {
        format!("'{raw}")
    } else {
        raw.to_string()
    };
    if guarded.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", guarded.replace('"', "\"\""))
    } else {
        guarded
    }
}

fn csv_row(fields: &[&str]) -> String {
    let mut row = fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(",");
    row.push_str("\r\n");
    row
}

/// The invoice as CSV: a header, one row per line item, then `subtotal` and `total` rows.
pub fn csv(invoice: &Invoice) -> String {
    let mut out = csv_row(&[
        "invoice",
        "tenant",
        "period",
        "currency",
        "item",
        "description",
        "usage",
        "included",
        "quantity",
        "unit",
        "unit_price",
        "amount",
    ]);
    let (id, tenant, period, currency) =
        (invoice.id.as_str(), invoice.tenant.to_string(), invoice.period.to_string(), invoice.currency.code());
    for l in &invoice.lines {
        let nums = [l.usage, l.included, l.quantity].map(|d| d.normalize().to_string());
        out.push_str(&csv_row(&[
            id,
            &tenant,
            &period,
            currency,
            l.kind.as_str(),
            &l.description,
            &nums[0],
            &nums[1],
            &nums[2],
            l.kind.unit(),
            &l.unit_price.normalize().to_string(),
            &l.amount.to_string(),
        ]));
    }
    for (item, amount) in [("subtotal", invoice.subtotal), ("total", invoice.total)] {
        out.push_str(&csv_row(&[id, &tenant, &period, currency, item, "", "", "", "", "", "", &amount.to_string()]));
    }
    out
}

fn date(ms: Option<u64>) -> String {
    ms.map(crate::time::rfc3339).map(|s| s.chars().take(10).collect()).unwrap_or_else(|| "—".into())
}

/// The invoice as one HTML page, as a reader at `now_ms` sees it (status overdue when past due).
pub fn html(invoice: &Invoice, now_ms: u64) -> String {
    let e = escape_html;
    let status = invoice.status_at(now_ms);
    let mut rows = String::new();
    for l in &invoice.lines {
        let _ = writeln!(
            rows,
            "<tr><td>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td>{}</td><td class=n>{}</td><td class=n>{}</td></tr>",
            e(&l.description),
            l.usage.normalize(),
            l.included.normalize(),
            l.quantity.normalize(),
            e(l.kind.unit()),
            l.unit_price.normalize(),
            l.amount
        );
    }
    let currency = invoice.currency.code();
    let mut page = String::new();
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
<title>Invoice {id}</title>\n<style>body{{font-family:sans-serif;margin:2em;color:#222}}\
table{{border-collapse:collapse;width:100%}}td,th{{border-bottom:1px solid #ccc;padding:.3em .5em;text-align:left}}\
.n{{text-align:right}}.total td{{font-weight:bold}}.status{{text-transform:uppercase;font-weight:bold}}</style></head>\n\
<body>\n<h1>Invoice {id}</h1>\n<p>From: {issuer}<br>To: tenant {tenant} ({tier})<br>Period: {period}<br>\
Issued: {issued}<br>Due: {due}<br>Status: <span class=\"status\">{status}</span></p>\n\
<table>\n<tr><th>Item</th><th class=n>Usage</th><th class=n>Included</th><th class=n>Quantity</th><th>Unit</th>\
<th class=n>Unit price ({currency})</th><th class=n>Amount ({currency})</th></tr>\n{rows}\
<tr class=\"total\"><td colspan=6>Subtotal</td><td class=n>{subtotal}</td></tr>\n\
<tr class=\"total\"><td colspan=6>Total ({currency})</td><td class=n>{total}</td></tr>\n</table>\n</body></html>\n",
        id = e(&invoice.id),
        issuer = e(&invoice.issuer),
        tenant = e(invoice.tenant.as_str()),
        tier = super::plan::tier_name(invoice.tier),
        period = invoice.period,
        issued = date(invoice.issued_at_ms),
        due = date(invoice.due_at_ms),
        status = status_text(status),
        currency = e(currency),
        subtotal = invoice.subtotal,
        total = invoice.total,
    );
    page
}

fn status_text(s: ShownStatus) -> &'static str {
    s.as_str()
}

#[cfg(test)]
mod tests {
    use super::super::compute::{Line, LineKind};
    use super::super::plan::Currency;
    use super::super::{InvoiceStatus, Period};
    use super::*;
    use crate::state::names::TenantName;
    use crate::state::tenant::Tier;
    use crate::state::usage::UsageTotals;
    use rust_decimal::Decimal;

    fn d(s: &str) -> Decimal {
        Decimal::from_str_exact(s).expect("decimal")
    }

    pub(crate) fn sample() -> Invoice {
        let line = |kind, description: &str, usage, included, quantity, unit_price, amount| Line {
            kind,
            description: description.into(),
            usage: d(usage),
            included: d(included),
            quantity: d(quantity),
            unit_price: d(unit_price),
            amount: d(amount),
        };
        Invoice {
            id: "acme-2026-11".into(),
            tenant: TenantName::parse("acme").expect("valid"),
            period: Period::parse("2026-11").expect("valid"),
            tier: Tier::Premium,
            currency: Currency::parse("USD").expect("known"),
            issuer: "Berqenas <script>alert(1)</script> & \"Co\"".into(),
            usage: UsageTotals::default(),
            lines: vec![
                line(LineKind::BaseFee, "Base fee (premium), 2026-11", "1", "0", "1", "49.00", "49.00"),
                line(LineKind::Disk, "Database disk, 2026-11", "25.000000", "10", "15.000000", "0.125", "1.88"),
            ],
            subtotal: d("50.88"),
            total: d("50.88"),
            status: InvoiceStatus::Issued,
            payment_terms_days: 30,
            created_at_ms: 1_796_169_600_000,
            issued_at_ms: Some(1_796_169_600_000),
            due_at_ms: Some(1_796_169_600_000 + 30 * 86_400_000),
            paid_at_ms: None,
        }
    }

    #[test]
    fn csv_has_one_row_per_line_then_the_sums() {
        let want = "invoice,tenant,period,currency,item,description,usage,included,quantity,unit,unit_price,amount\r\n\
acme-2026-11,acme,2026-11,USD,base_fee,\"Base fee (premium), 2026-11\",1,0,1,month,49,49.00\r\n\
acme-2026-11,acme,2026-11,USD,disk,\"Database disk, 2026-11\",25,10,15,GB-month,0.125,1.88\r\n\
acme-2026-11,acme,2026-11,USD,subtotal,,,,,,,50.88\r\n\
acme-2026-11,acme,2026-11,USD,total,,,,,,,50.88\r\n";
        assert_eq!(csv(&sample()), want);
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("-1.5"), "-1.5", "numbers stay numbers");
    }

    #[test]
    fn html_is_self_contained_and_escapes_every_text() {
        let page = html(&sample(), 1_796_169_600_000);
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("Berqenas &lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;Co&quot;"), "{page}");
        assert!(!page.contains("<script"), "no script survives");
        for external in ["http:", "https:", "src=", "href=", "@import", "url("] {
            assert!(!page.contains(external), "no external asset ({external}): {page}");
        }
        assert!(page.contains("<td class=n>1.88</td>") && page.contains("<td class=n>50.88</td>"));
        assert!(page.contains("Status: <span class=\"status\">issued</span>"));
        assert!(page.contains("Due: 2027-01-01"), "{page}");
        let late = html(&sample(), 1_796_169_600_000 + 31 * 86_400_000);
        assert!(late.contains(">overdue</span>"));
    }

    #[test]
    fn escape_html_covers_markup_and_quotes() {
        assert_eq!(escape_html("<a href='x'>&\"</a>\u{7}"), "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;");
    }
}
