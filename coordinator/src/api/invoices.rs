//! Invoices over HTTP: list and show (an admin key or the tenant's own customer key; another
//! tenant's key is 403 and audited), create a month's invoice, issue it, mark it paid (admin
//! only). Prices come from this coordinator's `--billing-plans`; the command carries the plan, so
//! every replica prices alike. Computation, idempotency and the status rules are the domain's
//! (`state/billing.rs`).

use super::auth::{Ctx, Need};
use super::devices::tenant_scope;
use super::dto::{CreateInvoiceBody, ErrorBody, InvoiceAction, InvoiceView};
use super::error::ApiError;
use super::extract::{clipped, path, Body, PathOf, Validate};
use super::Result;
use crate::state::action::Action;
use crate::state::billing::{parse_invoice_id, Invoice, InvoiceOp};
use crate::state::names::TenantName;
use crate::state::period::Period;
use crate::state::{Op, Reply};
use axum::http::StatusCode;
use axum::Json;

impl Validate for CreateInvoiceBody {
    type Valid = Period;
    fn validate(self) -> std::result::Result<Period, ApiError> {
        Period::parse(&self.period).map_err(|e| ApiError::invalid(e.to_string()))
    }
}

fn target(tenant: &str, id: &str) -> String {
    format!("{}/invoice/{}", clipped("tenant", tenant), id.chars().take(64).collect::<String>().escape_debug())
}

/// An invoice number of `tenant` (`{tenant}-{YYYY}-{MM}`); another tenant's number is not found.
fn invoice_id(tenant: &TenantName, raw: &str) -> std::result::Result<String, ApiError> {
    match parse_invoice_id(raw) {
        Some((t, _)) if &t == tenant => Ok(raw.to_string()),
        Some(_) => Err(ApiError::not_found(format!("tenant {tenant} has no invoice {raw}"))),
        None => Err(ApiError::invalid("an invoice number is {tenant}-{YYYY}-{MM}, e.g. acme-2026-11")),
    }
}

fn view(reply: Reply) -> Result<InvoiceView> {
    match reply {
        Reply::Invoice(i) => Ok(InvoiceView::new(&i, crate::time::now_ms())),
        other => Err(ApiError::internal("invoice command", format!("unexpected reply {other:?}"))),
    }
}

#[utoipa::path(get, path = "/api/v1/tenant/{name}/invoices", params(("name" = String, Path)),
    responses((status = 200, description = "the tenant's invoices, oldest month first", body = Vec<InvoiceView>),
        (status = 404, description = "no such tenant", body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn list_invoices(ctx: Ctx, raw: PathOf<String>) -> Result<Json<Vec<InvoiceView>>> {
    let raw = path(raw)?;
    let (_scope, tenant) =
        tenant_scope(&ctx, Action::InvoiceList, &raw, format!("{}/invoice", clipped("tenant", &raw))).await?;
    super::barrier(&ctx, None).await?;
    let now = crate::time::now_ms();
    ctx.coordinator.read(|d| {
        d.state.tenants.get(&tenant).ok_or_else(|| ApiError::not_found(format!("tenant {tenant} not found")))?;
        Ok(Json(d.state.invoices_of(&tenant).into_iter().map(|i| InvoiceView::new(i, now)).collect()))
    })
}

#[utoipa::path(get, path = "/api/v1/tenant/{name}/invoices/{invoice}", params(("name" = String, Path), ("invoice" = String, Path)),
    responses((status = 200, body = InvoiceView),
        (status = 400, description = "a malformed invoice number", body = ErrorBody),
        (status = 404, description = "no such tenant, or no such invoice of it", body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn get_invoice(ctx: Ctx, raw: PathOf<(String, String)>) -> Result<Json<InvoiceView>> {
    let (raw, id) = path(raw)?;
    let (scope, tenant) = tenant_scope(&ctx, Action::InvoiceGet, &raw, target(&raw, &id)).await?;
    let id = scope.check(invoice_id(&tenant, &id)).await?;
    super::barrier(&ctx, None).await?;
    let now = crate::time::now_ms();
    ctx.coordinator.read(|d| {
        d.state.tenants.get(&tenant).ok_or_else(|| ApiError::not_found(format!("tenant {tenant} not found")))?;
        let invoice: Option<&Invoice> = d.state.invoices.get(&id).filter(|i| i.tenant == tenant);
        let invoice = invoice.ok_or_else(|| ApiError::not_found(format!("tenant {tenant} has no invoice {id}")))?;
        Ok(Json(InvoiceView::new(invoice, now)))
    })
}

#[utoipa::path(post, path = "/api/v1/tenant/{name}/invoices", params(("name" = String, Path)),
    request_body = CreateInvoiceBody,
    responses((status = 201, description = "the month's invoice, computed now as a draft", body = InvoiceView),
        (status = 200, description = "the month's invoice as it already was (never a second one)", body = InvoiceView),
        (status = 400, description = "a malformed period", body = ErrorBody),
        (status = 404, description = "no such tenant", body = ErrorBody),
        (status = 409, description = "the month has not ended, or no price plans are configured", body = ErrorBody),
        (status = 429, description = "the tenant has the most unpaid invoices kept, or too many requests", body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn create_invoice(
    ctx: Ctx,
    raw: PathOf<String>,
    body: Body,
) -> Result<(StatusCode, Json<InvoiceView>)> {
    let raw = path(raw)?;
    let scope = ctx.scope(Need::Admin, Action::InvoiceCreate, format!("{}/invoice", clipped("tenant", &raw))).await?;
    let tenant = scope.tenant(&raw).await?;
    let period = scope.body::<CreateInvoiceBody>(body).await?;
    super::barrier(&ctx, None).await?;
    let tier = ctx.coordinator.read(|d| d.state.tenants.get(&tenant).map(|t| t.tier));
    let tier = scope.check(tier.ok_or_else(|| ApiError::not_found(format!("tenant {tenant} not found")))).await?;
    let plan = ctx.coordinator.price_plans.get().and_then(|p| p.for_tier(tier)).cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "no price plans are configured; start the coordinator with --billing-plans FILE",
        )
    });
    let plan = scope.check(plan).await?;
    let started = crate::time::now_ms();
    let reply = scope.run(Op::Invoice(InvoiceOp::Create { tenant, period, plan: Box::new(plan) })).await?;
    let view = view(reply)?;
    let status = if view.created_at_ms >= started { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(view)))
}

#[utoipa::path(post, path = "/api/v1/tenant/{name}/invoices/{invoice}/{action}",
    params(("name" = String, Path), ("invoice" = String, Path), ("action" = InvoiceAction, Path)),
    responses((status = 200, body = InvoiceView),
        (status = 400, description = "a malformed invoice number", body = ErrorBody),
        (status = 404, description = "no such tenant, invoice or action", body = ErrorBody),
        (status = 409, description = "not a draft (issue), a draft or already paid (mark-paid)", body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn invoice_action(ctx: Ctx, raw: PathOf<(String, String, String)>) -> Result<Json<InvoiceView>> {
    let (raw, id, action) = path(raw)?;
    let Ok(action) = serde_json::from_value::<InvoiceAction>(action.clone().into()) else {
        return Err(ApiError::not_found(format!(
            "no invoice action {:?}",
            action.chars().take(32).collect::<String>()
        )));
    };
    let act = match action {
        InvoiceAction::Issue => Action::InvoiceIssue,
        InvoiceAction::MarkPaid => Action::InvoicePaid,
    };
    let scope = ctx.scope(Need::Admin, act, target(&raw, &id)).await?;
    let tenant = scope.tenant(&raw).await?;
    let id = scope.check(invoice_id(&tenant, &id)).await?;
    let op = match action {
        InvoiceAction::Issue => InvoiceOp::Issue { tenant, id },
        InvoiceAction::MarkPaid => InvoiceOp::MarkPaid { tenant, id },
    };
    Ok(Json(view(scope.run(Op::Invoice(op)).await?)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invoice_numbers_are_checked_against_the_path_tenant() {
        let acme = TenantName::parse("acme").expect("valid");
        assert_eq!(invoice_id(&acme, "acme-2026-11").ok().as_deref(), Some("acme-2026-11"));
        assert_eq!(invoice_id(&acme, "globex-2026-11").map_err(|e| e.status), Err(StatusCode::NOT_FOUND));
        assert_eq!(invoice_id(&acme, "acme-11").map_err(|e| e.status), Err(StatusCode::BAD_REQUEST));
    }
}
