//! The audit trail over HTTP: pages of entries with before/after cursors, a tenant's own view (no
//! refusals of anonymous callers or other tenants' keys), chain verification, and the counts of
//! refused unauthenticated traffic (the trail holds only one entry per source per window).

use super::auth::{Ctx, Need};
use super::dto::{
    parse_since, AuditEntryView, AuditFilterQuery, AuditVerification, ErrorBody, PageQuery, ReadQuery,
    DEFAULT_AUDIT_PAGE, MAX_AUDIT_PAGE, NEXT_AFTER, NEXT_BEFORE,
};
use super::error::ApiError;
use super::extract::{clipped, path, PathOf, QueryOf, Scope};
use super::{barrier, Result};
use crate::refusals::RefusalStats;
use crate::state::action::Action;
use crate::state::apikey::{ApiKey, Role};
use crate::state::audit::{self, AuditEntry};
use crate::state::names::TenantName;
use axum::http::{HeaderMap, HeaderValue};
use axum::Json;
use std::collections::BTreeMap;

type AuditAnswer = (HeaderMap, Json<Vec<AuditEntryView>>);

/// The page's entries as JSON, with the cursor headers when more entries remain.
fn audit_page(page: audit::Page) -> AuditAnswer {
    let mut headers = HeaderMap::new();
    for (name, seq) in [(NEXT_BEFORE, page.older), (NEXT_AFTER, page.newer)] {
        if let Some(seq) = seq {
            headers.insert(name, HeaderValue::from(seq));
        }
    }
    (headers, Json(page.entries.iter().map(AuditEntryView::from).collect()))
}

/// A page query checked: the page size within bounds.
async fn page_size(scope: &Scope<'_>, page: &PageQuery) -> Result<usize> {
    let limit = page.limit.unwrap_or(DEFAULT_AUDIT_PAGE);
    if !(1..=MAX_AUDIT_PAGE).contains(&limit) {
        let err = ApiError::invalid(format!("limit must be between 1 and {MAX_AUDIT_PAGE}"));
        return Err(scope.refuse(err).await);
    }
    usize::try_from(limit).map_err(|e| ApiError::internal("page size", e))
}

#[utoipa::path(get, path = "/api/v1/audit", params(AuditFilterQuery, PageQuery),
    responses((status = 200, body = Vec<AuditEntryView>, headers(
        ("x-audit-next-before" = u64, description = "older entries remain: pass it as `before`"),
        ("x-audit-next-after" = u64, description = "newer entries remain: pass it as `after`"))),
        (status = 400, body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn list_audit(
    ctx: Ctx,
    filter: QueryOf<AuditFilterQuery>,
    page: QueryOf<PageQuery>,
) -> Result<AuditAnswer> {
    let scope = ctx.scope(Need::AuditRead, Action::AuditList, "audit").await?;
    let filter = scope.query(filter).await?;
    let page = scope.query(page).await?;
    let tenant = match &filter.tenant {
        Some(raw) => Some(scope.tenant(raw).await?),
        None => None,
    };
    let since = match &filter.since {
        Some(raw) => Some(scope.check(parse_since(raw, crate::time::now_ms()).map_err(ApiError::invalid)).await?),
        None => None,
    };
    let limit = page_size(&scope, &page).await?;
    barrier(&ctx, page.consistency).await?;
    let target = tenant.map(|t| format!("tenant/{t}"));
    let keep =
        |e: &AuditEntry| since.is_none_or(|s| e.time_ms >= s) && target.as_ref().is_none_or(|t| about(&e.target, t));
    let page = ctx.coordinator.audit.page(keep, page.after, page.before, limit);
    Ok(audit_page(page.map_err(|e| ApiError::internal("read the audit trail", e))?))
}

/// Whether an entry's target is the tenant `target` or something of it (`tenant/acme/device/plc1`).
fn about(entry_target: &str, target: &str) -> bool {
    entry_target.strip_prefix(target).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// A customer's view of its tenant's trail: what was done to it, and refusals of its own or an
/// admin's keys. Refusals of anonymous callers and of other tenants' keys are not theirs to see
/// (and must not let anyone write into a customer's trail).
fn visible_to_tenant(e: &AuditEntry, target: &str, name: &TenantName, keys: &BTreeMap<String, ApiKey>) -> bool {
    if !about(&e.target, target) {
        return false;
    }
    e.outcome == audit::Outcome::Ok
        || keys.get(&e.actor).is_some_and(|k| k.role == Role::Admin || k.tenant.as_ref() == Some(name))
}

#[utoipa::path(get, path = "/api/v1/tenant/{name}/audit", params(("name" = String, Path), PageQuery),
    responses((status = 200, body = Vec<AuditEntryView>, headers(
        ("x-audit-next-before" = u64, description = "older entries remain: pass it as `before`"),
        ("x-audit-next-after" = u64, description = "newer entries remain: pass it as `after`"))),
        (status = 400, body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn tenant_audit(ctx: Ctx, raw: PathOf<String>, page: QueryOf<PageQuery>) -> Result<AuditAnswer> {
    let raw = path(raw)?;
    let scope = ctx.scope(Need::AnyKey, Action::AuditList, clipped("tenant", &raw)).await?;
    let name = scope.tenant(&raw).await?;
    if scope.caller.role != Role::Auditor {
        scope.authorize(Need::Tenant(&name)).await?;
    }
    let page = scope.query(page).await?;
    let limit = page_size(&scope, &page).await?;
    barrier(&ctx, page.consistency).await?;
    let target = format!("tenant/{name}");
    // The keys as they are now decide whose refusals the tenant sees (a small map, copied).
    let keys = ctx.coordinator.read(|d| d.state.api_keys.clone());
    let keep = |e: &AuditEntry| visible_to_tenant(e, &target, &name, &keys);
    let page = ctx.coordinator.audit.page(keep, page.after, page.before, limit);
    Ok(audit_page(page.map_err(|e| ApiError::internal("read the audit trail", e))?))
}

#[utoipa::path(get, path = "/api/v1/audit/verify", params(ReadQuery),
    responses((status = 200, body = AuditVerification), (status = 400, body = ErrorBody)), security(("api_key" = [])))]
pub(super) async fn verify_audit(ctx: Ctx, query: QueryOf<ReadQuery>) -> Result<Json<AuditVerification>> {
    let scope = ctx.scope(Need::AuditRead, Action::AuditVerify, "audit").await?;
    barrier(&ctx, scope.query(query).await?.consistency).await?;
    // Streams the stored chain in one read transaction, one entry in memory at a time.
    let coordinator = ctx.coordinator.clone();
    let verified = tokio::task::spawn_blocking(move || coordinator.audit.verify())
        .await
        .map_err(|e| ApiError::internal("verify the audit trail", e))?
        .map_err(|e| ApiError::internal("verify the audit trail", e))?;
    Ok(Json(match verified {
        (Ok(n), total) => AuditVerification { ok: true, verified: n, total, broken: None },
        (Err(b), total) => {
            AuditVerification { ok: false, verified: b.seq.saturating_sub(1), total, broken: Some(b.into()) }
        }
    }))
}

#[utoipa::path(get, path = "/api/v1/refusals", responses((status = 200, body = RefusalStats)), security(("api_key" = [])))]
pub(super) async fn refusal_stats(ctx: Ctx) -> Result<Json<RefusalStats>> {
    ctx.scope(Need::AuditRead, Action::RefusalsList, "refusals").await?;
    Ok(Json(ctx.coordinator.admission.refusals.stats()))
}
