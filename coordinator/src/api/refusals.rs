//! `GET /api/v1/refusals`: this coordinator's counts of refused unauthenticated and throttled
//! traffic (the audit trail holds only one entry per source per window).

use super::auth::{Ctx, Need};
use super::error::{ApiError, ErrorBody};
use crate::refusals::RefusalStats;
use crate::state::action::Action;
use axum::Json;

#[utoipa::path(get, path = "/api/v1/refusals",
    responses((status = 200, body = RefusalStats), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn refusal_stats(ctx: Ctx) -> Result<Json<RefusalStats>, ApiError> {
    ctx.require(Need::AuditRead, Action::RefusalsList, "refusals").await?;
    Ok(Json(ctx.coordinator.admission.refusals.stats()))
}
