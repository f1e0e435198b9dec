//! `billing invoice|list|show|issue|mark-paid|export`: invoices over the REST API with the API's
//! own types. `export` renders what the API returned: JSON (the API's view), CSV or a
//! self-contained HTML page, or the payload a payment provider (Stripe, Iyzico) takes; it sends
//! nothing anywhere.

use super::client::{path_segment, Client, NO_BODY};
use super::output::{self, say, Output};
use crate::api::dto::{CreateInvoiceBody, InvoiceView};
use crate::state::billing::{export, parse_invoice_id, provider, Invoice};
use anyhow::{bail, Context};
use clap::Subcommand;
use reqwest::Method;

#[derive(Debug, Subcommand)]
pub enum BillingCmd {
    /// Invoice a tenant for a month that has ended (or show the invoice it already has): a
    /// draft priced by the tenant's tier plan (`serve --billing-plans`).
    Invoice {
        #[arg(long)]
        tenant: String,
        /// The month, YYYY-MM (UTC).
        #[arg(long)]
        period: String,
        /// Issue it too (due after the plan's payment terms).
        #[arg(long)]
        issue: bool,
    },
    /// A tenant's invoices, oldest month first.
    List {
        #[arg(long)]
        tenant: String,
    },
    /// One invoice with its line items (number: TENANT-YYYY-MM).
    Show { invoice: String },
    /// Draft → issued.
    Issue { invoice: String },
    /// Issued (or overdue) → paid.
    MarkPaid { invoice: String },
    /// Print an invoice as JSON, CSV or HTML, or as a payment provider's payload.
    Export {
        invoice: String,
        #[arg(long, value_parser = ["json", "csv", "html"], default_value = "json", conflicts_with = "provider")]
        format: String,
        /// Print the payload for this provider instead (issued or paid invoices only).
        #[arg(long, value_parser = ["stripe", "iyzico"])]
        provider: Option<String>,
    },
}

fn invoices_path(tenant: &str) -> String {
    format!("/api/v1/tenant/{}/invoices", path_segment(tenant))
}

/// The API path of invoice `number` (its tenant is part of the number).
fn invoice_path(number: &str) -> anyhow::Result<String> {
    let (tenant, _) = parse_invoice_id(number)
        .with_context(|| format!("invoice number {number:?} must be TENANT-YYYY-MM, e.g. acme-2026-11"))?;
    Ok(format!("{}/{}", invoices_path(tenant.as_str()), path_segment(number)))
}

pub(super) async fn billing(client: &Client, cmd: BillingCmd, out: Output) -> anyhow::Result<()> {
    match cmd {
        BillingCmd::Invoice { tenant, period, issue } => {
            let body = CreateInvoiceBody { period };
            let mut invoice: InvoiceView = client.send(Method::POST, &invoices_path(&tenant), Some(&body)).await?;
            if issue && invoice.status == crate::state::billing::ShownStatus::Draft {
                let path = format!("{}/issue", invoice_path(&invoice.id)?);
                invoice = client.send(Method::POST, &path, NO_BODY).await?;
            }
            show(out, &invoice);
        }
        BillingCmd::List { tenant } => list(out, &client.get::<Vec<InvoiceView>>(&invoices_path(&tenant)).await?),
        BillingCmd::Show { invoice } => show(out, &client.get(&invoice_path(&invoice)?).await?),
        BillingCmd::Issue { invoice } => {
            let path = format!("{}/issue", invoice_path(&invoice)?);
            show(out, &client.send(Method::POST, &path, NO_BODY).await?);
        }
        BillingCmd::MarkPaid { invoice } => {
            let path = format!("{}/mark-paid", invoice_path(&invoice)?);
            show(out, &client.send(Method::POST, &path, NO_BODY).await?);
        }
        BillingCmd::Export { invoice, format, provider } => {
            let view: InvoiceView = client.get(&invoice_path(&invoice)?).await?;
            let text = render(view, &format, provider.as_deref())?;
            say(format_args!("{}", text.strip_suffix('\n').unwrap_or(&text)));
        }
    }
    Ok(())
}

/// The export as printed.
fn render(view: InvoiceView, format: &str, provider: Option<&str>) -> anyhow::Result<String> {
    if let Some(name) = provider {
        let invoice = Invoice::try_from(view)?;
        let Some(p) = provider::by_name(name) else { bail!("unknown payment provider {name:?}") };
        return Ok(format!("{}\n", serde_json::to_string_pretty(&p.payload(&invoice)?)?));
    }
    Ok(match format {
        "json" => format!("{}\n", serde_json::to_string_pretty(&view)?),
        "csv" => export::csv(&Invoice::try_from(view)?),
        "html" => export::html(&Invoice::try_from(view)?, crate::time::now_ms()),
        other => bail!("unknown export format {other:?}"),
    })
}

fn when(ms: Option<u64>) -> String {
    ms.map_or_else(|| "-".into(), crate::time::rfc3339)
}

fn list(out: Output, v: &[InvoiceView]) {
    if out == Output::Json {
        return output::print_json(v);
    }
    say(format_args!("{:<40}  {:<7}  {:<8}  {:>14}  {:<8}  DUE", "INVOICE", "PERIOD", "STATUS", "TOTAL", "CURRENCY"));
    for i in v {
        say(format_args!(
            "{:<40}  {:<7}  {:<8}  {:>14}  {:<8}  {}",
            i.id,
            i.period,
            i.status.as_str(),
            i.total,
            i.currency,
            when(i.due_at_ms)
        ));
    }
}

fn show(out: Output, i: &InvoiceView) {
    if out == Output::Json {
        return output::print_json(i);
    }
    say(format_args!("invoice {} for tenant {} ({}), period {}", i.id, i.tenant, output::wire_name(&i.tier), i.period));
    say(format_args!(
        "status: {}   issued: {}   due: {}   paid: {}",
        i.status.as_str(),
        when(i.issued_at_ms),
        when(i.due_at_ms),
        when(i.paid_at_ms)
    ));
    say(format_args!(
        "{:<48}  {:>14}  {:>12}  {:>14}  {:<15}  {:>12}  {:>12}",
        "ITEM", "USAGE", "INCLUDED", "QUANTITY", "UNIT", "UNIT PRICE", "AMOUNT"
    ));
    for l in &i.lines {
        say(format_args!(
            "{:<48}  {:>14}  {:>12}  {:>14}  {:<15}  {:>12}  {:>12}",
            l.description, l.usage, l.included, l.quantity, l.unit, l.unit_price, l.amount
        ));
    }
    say(format_args!("subtotal {} {}", i.subtotal, i.currency));
    say(format_args!("total    {} {}", i.total, i.currency));
}

/// The plan file of `serve --billing-plans`, read and checked (a bad file stops the start).
pub(super) fn load_plans(
    path: Option<&std::path::Path>,
) -> anyhow::Result<Option<crate::state::billing::plan::PricePlans>> {
    let Some(path) = path else { return Ok(None) };
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let plans = crate::state::billing::plan::PricePlans::from_toml(&text)
        .with_context(|| format!("billing plans {}", path.display()))?;
    Ok(Some(plans))
}
