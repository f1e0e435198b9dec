//! Tenants over HTTP: create, read, list, update (PATCH) and the lifecycle (suspend, resume,
//! delete, restore, purge). The invariants are the domain's (`TenantSpec::new`,
//! `Tenant::apply_patch`); this file turns wire bodies into domain requests and back.

use super::auth::{Ctx, Need};
use super::dto::{
    parse_bandwidth, parse_quota, project, CreateTenantBody, CreatedTenant, ErrorBody, PurgeQuery, ReadQuery,
    TenantAction, TenantListQuery, TenantSummary, TenantView, UpdateTenantBody,
};
use super::error::ApiError;
use super::extract::{clipped, path, Body, PathOf, QueryOf, Scope, Validate};
use super::{barrier, Result};
use crate::state::action::Action;
use crate::state::apikey::Role;
use crate::state::names::TenantName;
use crate::state::quota::ByteSize;
use crate::state::tenant::{InvalidTenant, NewTenant, Tenant, TenantPatch, TenantSpec};
use crate::state::{DomainError, Lifecycle, Op, Reply};
use axum::http::StatusCode;
use axum::Json;

impl Validate for CreateTenantBody {
    type Valid = TenantSpec;

    /// Parses the names and sizes here; defaults and invariants are the domain's (`TenantSpec::new`).
    fn validate(self) -> std::result::Result<TenantSpec, ApiError> {
        let name = TenantName::parse(&self.name).map_err(|e| ApiError::invalid(e.to_string()))?;
        let request = project!(self => CreateTenantBody => NewTenant {
            tier, db_type, isolation, connection_limit, events_per_min, vpn_enabled, public_api, ddl_enabled,
            access_mode, dedicated
        } with { db_quota: quota(db_quota)?, node_selector: node_selector.unwrap_or_default() } hidden { name });
        TenantSpec::new(name, request).map_err(|e| ApiError::invalid(e.to_string()))
    }
}

/// A quota as the API takes it, if one is given.
fn quota(raw: Option<String>) -> std::result::Result<Option<ByteSize>, ApiError> {
    raw.map(|q| parse_quota("db_quota", &q)).transpose().map_err(ApiError::invalid)
}

impl Validate for UpdateTenantBody {
    type Valid = TenantPatch;

    fn validate(self) -> std::result::Result<TenantPatch, ApiError> {
        // Destructured exhaustively: a new body field is a compile error here until it is mapped.
        let UpdateTenantBody {
            tier,
            db_quota,
            connection_limit,
            events_per_min,
            vpn_enabled,
            public_api,
            ddl_enabled,
            access_mode,
            bandwidth,
            device_to_device,
            backup_interval_s,
            backup_keep,
            backup_days,
        } = self;
        Ok(TenantPatch {
            tier,
            db_quota: quota(db_quota)?,
            connection_limit,
            events_per_min,
            vpn_enabled,
            public_api,
            ddl_enabled,
            access_mode,
            bandwidth_bps: bandwidth.as_deref().map(parse_bandwidth).transpose().map_err(ApiError::invalid)?,
            device_to_device,
            backup_interval_s,
            backup_keep,
            backup_days,
        })
    }
}

fn tenant_reply(reply: Reply) -> Result<TenantView> {
    match reply {
        Reply::Tenant(t) => Ok(TenantView::from(&*t)),
        other => Err(ApiError::internal("tenant command", format!("unexpected reply {other:?}"))),
    }
}

/// A path tenant name, validated; a bad one is audited under the scope's action.
async fn scoped_tenant<'c>(
    ctx: &'c Ctx,
    need_admin: bool,
    action: Action,
    raw: &str,
) -> Result<(Scope<'c>, TenantName)> {
    let need = if need_admin { Need::Admin } else { Need::AnyKey };
    let scope = ctx.scope(need, action, clipped("tenant", raw)).await?;
    let name = scope.tenant(raw).await?;
    Ok((scope, name))
}

#[utoipa::path(post, path = "/api/v1/tenant", request_body = CreateTenantBody,
    responses((status = 201, body = CreatedTenant),
        (status = 400, description = "malformed body, or settings that contradict each other", body = ErrorBody),
        (status = 409, description = "the name is taken", body = ErrorBody),
        (status = 429, description = "the VPN pool is exhausted, or too many requests", body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn create_tenant(ctx: Ctx, body: Body) -> Result<(StatusCode, Json<CreatedTenant>)> {
    let mut scope = ctx.scope(Need::Admin, Action::TenantCreate, "tenant").await?;
    let raw: CreateTenantBody = scope.raw_body(body).await?;
    scope.target = clipped("tenant", &raw.name);
    let mut spec = scope.check(raw.validate()).await?;
    let (db_password, verifier) =
        crate::scram::new_password_for(spec.db_type).map_err(|e| ApiError::internal("password generation", e))?;
    spec.db_password_verifier = verifier;
    let tenant = tenant_reply(scope.run(Op::CreateTenant(spec)).await?)?;
    let db_user = format!("tenant_{}_user", tenant.name);
    Ok((StatusCode::CREATED, Json(CreatedTenant { tenant, db_user, db_password })))
}

#[utoipa::path(get, path = "/api/v1/tenant/{name}", params(("name" = String, Path), ReadQuery),
    responses((status = 200, body = TenantView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn get_tenant(ctx: Ctx, raw: PathOf<String>, query: QueryOf<ReadQuery>) -> Result<Json<TenantView>> {
    let raw = path(raw)?;
    let (scope, name) = scoped_tenant(&ctx, false, Action::TenantGet, &raw).await?;
    scope.authorize(Need::Tenant(&name)).await?;
    barrier(&ctx, scope.query(query).await?.consistency).await?;
    ctx.coordinator
        .read(|d| d.state.tenants.get(&name).map(TenantView::from))
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("tenant {name} not found")))
}

#[utoipa::path(get, path = "/api/v1/tenants", params(TenantListQuery),
    responses((status = 200, body = Vec<TenantView>), (status = 400, body = ErrorBody)), security(("api_key" = [])))]
pub(super) async fn list_tenants(ctx: Ctx, query: QueryOf<TenantListQuery>) -> Result<Json<Vec<TenantView>>> {
    listed(ctx, query).await.map(Json)
}

#[utoipa::path(get, path = "/api/v1/tenants/summary", params(TenantListQuery),
    responses((status = 200, description = "the same tenants as `GET /api/v1/tenants`, one summary row each", body = Vec<TenantSummary>),
        (status = 400, body = ErrorBody)), security(("api_key" = [])))]
pub(super) async fn list_tenant_summaries(
    ctx: Ctx,
    query: QueryOf<TenantListQuery>,
) -> Result<Json<Vec<TenantSummary>>> {
    listed(ctx, query).await.map(Json)
}

/// The tenants the caller may list (all for an admin, its own for a customer key or user; an
/// auditor needs admin), in the status asked for, each as `T`.
async fn listed<T: for<'a> From<&'a Tenant>>(ctx: Ctx, query: QueryOf<TenantListQuery>) -> Result<Vec<T>> {
    let scope = ctx.scope(Need::AnyKey, Action::TenantList, "tenants").await?;
    let caller = &scope.caller;
    if caller.role == Role::Auditor {
        scope.authorize(Need::Admin).await?;
    }
    let query = scope.query(query).await?;
    barrier(&ctx, query.consistency).await?;
    Ok(ctx.coordinator.read(|d| {
        d.state
            .tenants
            .values()
            .filter(|t| caller.role == Role::Admin || caller.tenant.as_ref() == Some(&t.name))
            .filter(|t| query.status.is_none_or(|s| t.status == s))
            .map(T::from)
            .collect()
    }))
}

#[utoipa::path(patch, path = "/api/v1/tenant/{name}", params(("name" = String, Path)), request_body = UpdateTenantBody,
    responses((status = 200, body = TenantView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "the change would break an invariant of the tenant as it is", body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn update_tenant(ctx: Ctx, raw: PathOf<String>, body: Body) -> Result<Json<TenantView>> {
    let raw = path(raw)?;
    let (scope, name) = scoped_tenant(&ctx, true, Action::TenantUpdate, &raw).await?;
    let patch = scope.body::<UpdateTenantBody>(body).await?;
    let reply = scope.command(Op::UpdateTenant { name, patch }).await?.map_err(update_refusal)?;
    Ok(Json(tenant_reply(reply)?))
}

#[utoipa::path(delete, path = "/api/v1/tenant/{name}", params(("name" = String, Path)),
    responses((status = 200, description = "the tenant is deleted-pending-purge and can be restored", body = TenantView),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn delete_tenant(ctx: Ctx, raw: PathOf<String>) -> Result<Json<TenantView>> {
    lifecycle(ctx, path(raw)?, Lifecycle::Delete).await
}

#[utoipa::path(post, path = "/api/v1/tenant/{name}/{action}",
    params(("name" = String, Path), ("action" = TenantAction, Path), PurgeQuery),
    responses((status = 200, body = TenantView), (status = 400, body = ErrorBody),
        (status = 404, description = "no such tenant or action", body = ErrorBody),
        (status = 409, description = "the tenant's status does not allow it", body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn tenant_lifecycle(
    ctx: Ctx,
    raw: PathOf<(String, String)>,
    query: QueryOf<PurgeQuery>,
) -> Result<Json<TenantView>> {
    let (raw, action) = path(raw)?;
    let step = match serde_json::from_value::<TenantAction>(action.clone().into()) {
        Ok(TenantAction::Suspend) => Lifecycle::Suspend,
        Ok(TenantAction::Resume) => Lifecycle::Resume,
        Ok(TenantAction::Restore) => Lifecycle::Restore,
        Ok(TenantAction::Purge) => Lifecycle::Purge { force: false },
        Err(_) => {
            let shown: String = action.chars().take(32).collect();
            return Err(ApiError::not_found(format!("no tenant action {shown:?}")));
        }
    };
    let force = match query {
        Ok(axum::extract::Query(q)) => q.force,
        Err(e) => return Err(ApiError::invalid(format!("invalid query: {}", e.body_text()))),
    };
    let step = if let Lifecycle::Purge { .. } = step { Lifecycle::Purge { force } } else { step };
    lifecycle(ctx, raw, step).await
}

async fn lifecycle(ctx: Ctx, raw: String, step: Lifecycle) -> Result<Json<TenantView>> {
    let (scope, name) = scoped_tenant(&ctx, true, Action::from(step), &raw).await?;
    Ok(Json(tenant_reply(scope.run(Op::Lifecycle { name, step }).await?)?))
}

/// What a refused PATCH answers. A change that contradicts the tenant as it is (its access mode,
/// VPN or engine) is a conflict, 409: the body alone was well formed. Out-of-range numbers and
/// labels are malformed bodies, 400, as on create.
fn update_refusal(e: DomainError) -> ApiError {
    match e {
        DomainError::InvalidTenant(invalid) => match invalid {
            InvalidTenant::AccessNeedsVpn(_)
            | InvalidTenant::VpnOnlyWithPublicApi
            | InvalidTenant::PublicAccessWithoutPublicApi(_)
            | InvalidTenant::MssqlNeedsDatabase => ApiError::new(StatusCode::CONFLICT, "conflict", invalid.to_string()),
            InvalidTenant::ConnectionLimit(_)
            | InvalidTenant::EventsPerMin(_)
            | InvalidTenant::TooManyLabels(_)
            | InvalidTenant::Label(_)
            | InvalidTenant::Backup(_) => ApiError::invalid(invalid.to_string()),
        },
        other => other.into(),
    }
}
