//! A tenant's usage over HTTP (`GET /api/v1/tenant/{name}/usage?period=YYYY-MM`): per-day rows
//! and the period's totals from the usage ledger (`state::usage`). Admins read any tenant's,
//! customer keys only their own.

use super::auth::{Ctx, Need};
use super::dto::{ErrorBody, UsageAmounts, UsageDay, UsageQuery, UsageView};
use super::error::ApiError;
use super::extract::{clipped, path, PathOf, QueryOf};
use super::{barrier, Result};
use crate::state::action::Action;
use crate::state::period::{date, Period};
use axum::Json;

#[utoipa::path(get, path = "/api/v1/tenant/{name}/usage", params(("name" = String, Path), UsageQuery),
    responses((status = 200, body = UsageView),
        (status = 400, description = "malformed name or period", body = ErrorBody),
        (status = 404, description = "no such tenant", body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn tenant_usage(ctx: Ctx, raw: PathOf<String>, query: QueryOf<UsageQuery>) -> Result<Json<UsageView>> {
    let raw = path(raw)?;
    let scope = ctx.scope(Need::AnyKey, Action::UsageShow, clipped("tenant", &raw)).await?;
    let name = scope.tenant(&raw).await?;
    scope.authorize(Need::Tenant(&name)).await?;
    let query = scope.query(query).await?;
    let period = match &query.period {
        Some(p) => scope.check(Period::parse(p).map_err(|e| ApiError::invalid(e.to_string()))).await?,
        None => Period::of(crate::time::now_ms()),
    };
    barrier(&ctx, query.consistency).await?;
    let (from, to) = (period.from_ms(), period.to_ms());
    let found = ctx.coordinator.read(|d| {
        let state = &d.state;
        state
            .tenants
            .contains_key(&name)
            .then(|| (state.usage.days(&name, from, to), state.usage_totals(&name, from, to)))
    });
    let (days, totals) = found.ok_or_else(|| ApiError::not_found(format!("tenant {name} not found")))?;
    let disk_max_bytes = days.values().map(|u| u.disk_max_bytes).max().unwrap_or(0);
    Ok(Json(UsageView {
        tenant: name.to_string(),
        period: period.to_string(),
        from: crate::time::rfc3339(from),
        to: crate::time::rfc3339(to),
        days: days.into_iter().map(|(day, u)| UsageDay { date: date(day), usage: u.into() }).collect(),
        totals: UsageAmounts { disk_max_bytes, ..totals.into() },
    }))
}
