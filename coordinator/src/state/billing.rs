//! Invoices: one per tenant and calendar month, priced by the tenant's tier plan from its usage
//! (`compute`), kept in Raft with the plan's prices they were made with, and moved draft →
//! issued → paid. "Overdue" is not stored: an issued invoice past its due date reads as overdue
//! (`Invoice::status_at`). Invoicing a tenant and month that already has an invoice returns that
//! invoice (same number), never a second one. At most `MAX_INVOICES_PER_TENANT` are kept per
//! tenant: a new one replaces the oldest paid one, and is refused while none is paid. A purged
//! tenant's invoices go with it. Pure, like the rest of `state`.

pub mod compute;
pub mod export;

pub mod plan;
pub mod provider;

use super::action::{details, Action, Target};
use super::names::TenantName;
use super::period::Period;
use super::tenant::Tier;
use super::usage::UsageTotals;
use super::{Cx, DomainError, Handled, Reply, State, Touched};
use compute::Line;
use plan::{Currency, PricePlan};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// The invoice commands (`Op::Invoice`); all admin-only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InvoiceOp {
    /// Invoice a tenant for a month under its tier's plan (from the coordinator's configuration,
    /// carried in the command so every replica prices alike); the month's invoice if it has one.
    Create { tenant: TenantName, period: Period, plan: Box<PricePlan> },
    /// Draft → issued.
    Issue { tenant: TenantName, id: String },
    /// Issued (or overdue) → paid.
    MarkPaid { tenant: TenantName, id: String },
}

impl InvoiceOp {
    /// The audit action and target (`Op::describe`'s part for invoices).
    pub fn describe(&self) -> (Action, Target) {
        match self {
            InvoiceOp::Create { tenant, period, .. } => {
                (Action::InvoiceCreate, Target::Invoice(tenant.clone(), invoice_id(tenant, *period)))
            }
            InvoiceOp::Issue { tenant, id } => (Action::InvoiceIssue, Target::Invoice(tenant.clone(), id.clone())),
            InvoiceOp::MarkPaid { tenant, id } => (Action::InvoicePaid, Target::Invoice(tenant.clone(), id.clone())),
        }
    }
}

/// Invoices kept per tenant (three years of months).
pub const MAX_INVOICES_PER_TENANT: usize = 36;

const MS_PER_DAY: u64 = 86_400_000;

/// Where an invoice is in its life, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InvoiceStatus {
    /// Computed, not yet sent: nothing is owed yet.
    Draft,
    /// Sent to the customer; due `payment_terms_days` after issue.
    Issued,
    Paid,
}

/// Where an invoice is in its life at a given time: `Overdue` is an issued invoice past its due date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShownStatus {
    Draft,
    Issued,
    Overdue,
    Paid,
}

impl ShownStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            ShownStatus::Draft => "draft",
            ShownStatus::Issued => "issued",
            ShownStatus::Overdue => "overdue",
            ShownStatus::Paid => "paid",
        }
    }
}

/// One tenant's invoice for one month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    /// `{tenant}-{YYYY}-{MM}`: the number, and the idempotency key of the tenant and month.
    pub id: String,
    pub tenant: TenantName,
    pub period: Period,
    pub tier: Tier,
    pub currency: Currency,
    pub issuer: String,
    /// The usage it was computed from.
    pub usage: UsageTotals,
    pub lines: Vec<Line>,
    pub subtotal: Decimal,
    pub total: Decimal,
    pub status: InvoiceStatus,
    pub payment_terms_days: u32,
    pub created_at_ms: u64,
    #[serde(default)]
    pub issued_at_ms: Option<u64>,
    #[serde(default)]
    pub due_at_ms: Option<u64>,
    #[serde(default)]
    pub paid_at_ms: Option<u64>,
}

/// The number of `tenant`'s invoice for `period`.
pub fn invoice_id(tenant: &TenantName, period: Period) -> String {
    format!("{tenant}-{period}")
}

/// The tenant and period an invoice number names (`acme-2026-11`), if it is well formed.
pub fn parse_invoice_id(raw: &str) -> Option<(TenantName, Period)> {
    let (tenant, period) = raw.split_once('-')?;
    Some((TenantName::parse(tenant).ok()?, Period::parse(period).ok()?))
}

impl Invoice {
    /// The status as a reader at `now_ms` sees it.
    pub fn status_at(&self, now_ms: u64) -> ShownStatus {
        match (self.status, self.due_at_ms) {
            (InvoiceStatus::Draft, _) => ShownStatus::Draft,
            (InvoiceStatus::Paid, _) => ShownStatus::Paid,
            (InvoiceStatus::Issued, Some(due)) if now_ms > due => ShownStatus::Overdue,
            (InvoiceStatus::Issued, _) => ShownStatus::Issued,
        }
    }
}

fn not_found(tenant: &TenantName, id: &str) -> DomainError {
    DomainError::NotFound(format!("tenant {tenant} has no invoice {id}"))
}

impl State {
    /// `tenant`'s invoices, oldest period first.
    pub fn invoices_of(&self, tenant: &TenantName) -> Vec<&Invoice> {
        let mut v: Vec<&Invoice> = self.invoices.values().filter(|i| &i.tenant == tenant).collect();
        v.sort_by_key(|i| i.period);
        v
    }

    /// Runs an invoice command (`State::dispatch`'s part for invoices).
    pub(super) fn invoice_command(&mut self, cx: Cx<'_>, op: &InvoiceOp) -> Handled {
        match op {
            InvoiceOp::Create { tenant, period, plan } => self.create_invoice(cx, tenant, *period, plan),
            InvoiceOp::Issue { tenant, id } => self.issue_invoice(cx, tenant, id),
            InvoiceOp::MarkPaid { tenant, id } => self.mark_invoice_paid(cx, tenant, id),
        }
    }

    /// Invoices `tenant` for `period` under `plan` (the plan of the tenant's tier, from the
    /// coordinator's configuration), or returns the invoice it already has for that month.
    fn create_invoice(&mut self, cx: Cx<'_>, tenant: &TenantName, period: Period, plan: &PricePlan) -> Handled {
        let id = invoice_id(tenant, period);
        let mut facts = cx.facts.with(details(&[("period", period.to_string())]));
        if let Some(existing) = self.invoices.get(&id) {
            facts.details.insert("existing".into(), "true".into());
            return (Ok(Reply::Invoice(Box::new(existing.clone()))), facts);
        }
        let result = self.new_invoice(cx.at.now, tenant, period, plan, cx.touched);
        if let Ok(Reply::Invoice(i)) = &result {
            facts.details.insert("total".into(), format!("{} {}", i.total, i.currency));
        }
        (result, facts)
    }

    fn new_invoice(
        &mut self,
        now: u64,
        tenant: &TenantName,
        period: Period,
        plan: &PricePlan,
        touched: &mut Vec<Touched>,
    ) -> super::Response {
        plan.check().map_err(|e| DomainError::Invalid(e.to_string()))?;
        let t = self.tenants.get(tenant).ok_or_else(|| DomainError::NotFound(format!("tenant {tenant} not found")))?;
        if t.tier != plan.tier {
            return Err(DomainError::Conflict(format!(
                "tenant {tenant} changed tier while it was invoiced; try again"
            )));
        }
        if period.to_ms() > now {
            return Err(DomainError::Conflict(format!(
                "period {period} has not ended yet; invoice it from its next month"
            )));
        }
        let usage = self.usage_totals(tenant, period.from_ms(), period.to_ms());
        let computed = compute::compute(plan, &usage, period).map_err(|e| DomainError::Invalid(e.to_string()))?;
        if self.invoices_of(tenant).len() >= MAX_INVOICES_PER_TENANT {
            let oldest_paid = self.invoices_of(tenant).into_iter().find(|i| i.status == InvoiceStatus::Paid);
            let Some(oldest_paid) = oldest_paid.map(|i| i.id.clone()) else {
                return Err(DomainError::Exhausted(format!(
                    "tenant {tenant} has {MAX_INVOICES_PER_TENANT} unpaid invoices; mark some paid first"
                )));
            };
            self.invoices.remove(&oldest_paid);
            touched.push(Touched::Invoice(oldest_paid));
        }
        let id = invoice_id(tenant, period);
        let invoice = Invoice {
            id: id.clone(),
            tenant: tenant.clone(),
            period,
            tier: plan.tier,
            currency: plan.currency,
            issuer: plan.issuer.clone(),
            usage,
            lines: computed.lines,
            subtotal: computed.subtotal,
            total: computed.total,
            status: InvoiceStatus::Draft,
            payment_terms_days: plan.payment_terms_days,
            created_at_ms: now,
            issued_at_ms: None,
            due_at_ms: None,
            paid_at_ms: None,
        };
        self.invoices.insert(id.clone(), invoice.clone());
        touched.push(Touched::Invoice(id));
        Ok(Reply::Invoice(Box::new(invoice)))
    }

    /// Draft → issued: due `payment_terms_days` from now.
    fn issue_invoice(&mut self, cx: Cx<'_>, tenant: &TenantName, id: &str) -> Handled {
        let now = cx.at.now;
        let result = match self.invoices.get_mut(id).filter(|i| &i.tenant == tenant) {
            None => Err(not_found(tenant, id)),
            Some(i) if i.status != InvoiceStatus::Draft => {
                Err(DomainError::Conflict(format!("invoice {id} is already {}", i.status_at(now).as_str())))
            }
            Some(i) => {
                i.status = InvoiceStatus::Issued;
                i.issued_at_ms = Some(now);
                i.due_at_ms = Some(now.saturating_add(u64::from(i.payment_terms_days) * MS_PER_DAY));
                cx.touched.push(Touched::Invoice(id.to_string()));
                Ok(Reply::Invoice(Box::new(i.clone())))
            }
        };
        (result, cx.facts)
    }

    /// Issued (or overdue) → paid. A draft is issued first; paid stays paid.
    fn mark_invoice_paid(&mut self, cx: Cx<'_>, tenant: &TenantName, id: &str) -> Handled {
        let now = cx.at.now;
        let result = match self.invoices.get_mut(id).filter(|i| &i.tenant == tenant) {
            None => Err(not_found(tenant, id)),
            Some(i) if i.status == InvoiceStatus::Draft => {
                Err(DomainError::Conflict(format!("invoice {id} is a draft; issue it before marking it paid")))
            }
            Some(i) if i.status == InvoiceStatus::Paid => {
                Err(DomainError::Conflict(format!("invoice {id} is already paid")))
            }
            Some(i) => {
                i.status = InvoiceStatus::Paid;
                i.paid_at_ms = Some(now);
                cx.touched.push(Touched::Invoice(id.to_string()));
                Ok(Reply::Invoice(Box::new(i.clone())))
            }
        };
        (result, cx.facts)
    }

    /// A purged tenant's invoices go with it (a tenant of the same name starts afresh).
    pub(super) fn drop_invoices(&mut self, tenant: &TenantName, touched: &mut Vec<Touched>) {
        let ids: Vec<String> = self.invoices_of(tenant).into_iter().map(|i| i.id.clone()).collect();
        for id in ids {
            self.invoices.remove(&id);
            touched.push(Touched::Invoice(id));
        }
    }
}

#[cfg(test)]
mod tests;
