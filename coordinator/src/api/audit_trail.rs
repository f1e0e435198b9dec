//! The audit trail over HTTP: pages of entries with before/after cursors, a tenant's own view
//! (no refusals of anonymous callers or other tenants' keys), and chain verification.

use super::*;
use crate::state::action::Action;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct AuditParams {
    /// Only entries about this tenant.
    pub tenant: Option<String>,
    /// RFC 3339 time, or an age such as `1h`.
    pub since: Option<String>,
    /// At most this many entries per page, oldest first (default 1000, at most 100000).
    pub limit: Option<usize>,
    /// Only entries older than this sequence number (the `x-audit-next-before` of a page).
    pub before: Option<u64>,
    /// Only entries newer than this sequence number, oldest first (`x-audit-next-after`).
    pub after: Option<u64>,
    #[serde(default)]
    #[param(value_type = Option<String>)]
    pub consistency: Option<Consistency>,
}

/// Paging of the audit trail: a page is newest entries first read back from `before` (or the
/// end), or oldest first from `after`; these headers say where the next page starts.
pub const NEXT_BEFORE: &str = "x-audit-next-before";
pub const NEXT_AFTER: &str = "x-audit-next-after";
const DEFAULT_AUDIT_PAGE: usize = 1000;
const MAX_AUDIT_PAGE: usize = 100_000;

/// The page's entries as JSON, with the cursor headers when more entries remain.
pub(super) fn audit_page(page: audit::Page) -> (axum::http::HeaderMap, Json<Vec<AuditEntry>>) {
    let mut headers = axum::http::HeaderMap::new();
    for (name, seq) in [(NEXT_BEFORE, page.older), (NEXT_AFTER, page.newer)] {
        if let Some(seq) = seq {
            headers.insert(name, axum::http::HeaderValue::from(seq));
        }
    }
    (headers, Json(page.entries))
}

type AuditAnswer = (axum::http::HeaderMap, Json<Vec<AuditEntry>>);

#[utoipa::path(get, path = "/api/v1/audit", params(AuditParams),
    responses((status = 200, body = Vec<AuditEntry>, headers(
        ("x-audit-next-before" = u64, description = "older entries remain: pass it as `before`"),
        ("x-audit-next-after" = u64, description = "newer entries remain: pass it as `after`")))),
    security(("api_key" = [])))]
pub(super) async fn list_audit(ctx: Ctx, Query(p): Query<AuditParams>) -> Result<AuditAnswer> {
    const ACTION: Action = Action::AuditList;
    let caller = ctx.require(Need::AuditRead, ACTION, "audit").await?;
    let tenant = match &p.tenant {
        Some(raw) => Some(tenant_name(&ctx, &caller.key_id, ACTION, raw).await?),
        None => None,
    };
    let since = match &p.since {
        Some(raw) => match crate::time::parse_since(raw, crate::time::now_ms()) {
            Ok(t) => Some(t),
            Err(msg) => return Err(ctx.reject(&caller.key_id, ACTION, "audit", ApiError::invalid(msg)).await),
        },
        None => None,
    };
    let limit = p.limit.unwrap_or(DEFAULT_AUDIT_PAGE).min(MAX_AUDIT_PAGE);
    barrier(&ctx, &ReadParams { consistency: p.consistency }).await?;
    let target = tenant.map(|t| format!("tenant/{t}"));
    let keep = |e: &AuditEntry| since.is_none_or(|s| e.time_ms >= s) && target.as_ref().is_none_or(|t| &e.target == t);
    let page = ctx.coordinator.audit.page(keep, p.after, p.before, limit);
    Ok(audit_page(page.map_err(|e| ApiError::internal("read the audit trail", e.to_string()))?))
}

/// A customer's view of its tenant's trail: what was done to it, and refusals of its own or an
/// admin's keys. Refusals of anonymous callers and of other tenants' keys are not theirs to see
/// (and must not let anyone write into a customer's trail).
pub(super) fn visible_to_tenant(
    e: &AuditEntry,
    target: &str,
    name: &TenantName,
    keys: &BTreeMap<String, ApiKey>,
) -> bool {
    if e.target != target {
        return false;
    }
    e.outcome == audit::Outcome::Ok
        || keys.get(&e.actor).is_some_and(|k| k.role == Role::Admin || k.tenant.as_ref() == Some(name))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct TenantAuditParams {
    /// At most this many entries per page, oldest first (default 1000, at most 100000).
    pub limit: Option<usize>,
    /// Only entries older than this sequence number (the `x-audit-next-before` of a page).
    pub before: Option<u64>,
    /// Only entries newer than this sequence number, oldest first (`x-audit-next-after`).
    pub after: Option<u64>,
    #[serde(default)]
    #[param(value_type = Option<String>)]
    pub consistency: Option<Consistency>,
}

#[utoipa::path(get, path = "/api/v1/tenant/{name}/audit", params(("name" = String, Path), TenantAuditParams),
    responses((status = 200, body = Vec<AuditEntry>, headers(
        ("x-audit-next-before" = u64, description = "older entries remain: pass it as `before`"),
        ("x-audit-next-after" = u64, description = "newer entries remain: pass it as `after`")))),
    security(("api_key" = [])))]
pub(super) async fn tenant_audit(
    ctx: Ctx,
    Path(raw): Path<String>,
    Query(p): Query<TenantAuditParams>,
) -> Result<AuditAnswer> {
    const ACTION: Action = Action::AuditList;
    let caller = ctx.require(Need::AnyKey, ACTION, &target_of(&raw)).await?;
    let name = tenant_name(&ctx, &caller.key_id, ACTION, &raw).await?;
    if caller.role != Role::Auditor {
        ctx.authorize(&caller, Need::Tenant(&name), ACTION, &target_of(&raw)).await?;
    }
    barrier(&ctx, &ReadParams { consistency: p.consistency }).await?;
    let limit = p.limit.unwrap_or(DEFAULT_AUDIT_PAGE).min(MAX_AUDIT_PAGE);
    let target = format!("tenant/{name}");
    // The keys as they are now decide whose refusals the tenant sees (a small map, copied).
    let keys = ctx.coordinator.read(|d| d.state.api_keys.clone());
    let keep = |e: &AuditEntry| visible_to_tenant(e, &target, &name, &keys);
    let page = ctx.coordinator.audit.page(keep, p.after, p.before, limit);
    Ok(audit_page(page.map_err(|e| ApiError::internal("read the audit trail", e.to_string()))?))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditVerification {
    pub ok: bool,
    /// Entries verified before the first break (all of them when ok).
    pub verified: u64,
    pub total: u64,
    pub broken: Option<Break>,
}

#[utoipa::path(get, path = "/api/v1/audit/verify", params(ReadParams), responses((status = 200, body = AuditVerification)),
    security(("api_key" = [])))]
pub(super) async fn verify_audit(ctx: Ctx, Query(params): Query<ReadParams>) -> Result<Json<AuditVerification>> {
    ctx.require(Need::AuditRead, Action::AuditVerify, "audit").await?;
    barrier(&ctx, &params).await?;
    // Streams the stored chain in one read transaction, one entry in memory at a time.
    let coordinator = ctx.coordinator.clone();
    let verified = tokio::task::spawn_blocking(move || coordinator.audit.verify())
        .await
        .map_err(|e| ApiError::internal("verify the audit trail", e.to_string()))?
        .map_err(|e| ApiError::internal("verify the audit trail", e.to_string()))?;
    Ok(Json(match verified {
        (Ok(n), total) => AuditVerification { ok: true, verified: n, total, broken: None },
        (Err(b), total) => AuditVerification { ok: false, verified: b.seq.saturating_sub(1), total, broken: Some(b) },
    }))
}
