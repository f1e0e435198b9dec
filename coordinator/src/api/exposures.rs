//! Exposures over HTTP: a device's port published on the tenant gateway's public address. An
//! admin key or the tenant's own customer key. Ports and collisions are the domain's
//! (`state/exposure.rs`).

use super::devices::tenant_scope;
use super::dto::{AddExposureBody, ErrorBody, ExposureView, SwitchAction};
use super::error::ApiError;
use super::extract::{clipped, path, Body, PathOf};
use super::Result;
use crate::state::action::Action;
use crate::state::device::DeviceName;
use crate::state::exposure::{Exposure, NewExposure, Protocol, SourceMode};
use crate::state::gateway::Ipv4Cidr;
use crate::state::names::TenantName;
use crate::state::{Op, Reply, State};
use axum::http::StatusCode;
use axum::Json;

fn target(tenant: &str, id: &str) -> String {
    format!("{}/exposure/{}", clipped("tenant", tenant), id.chars().take(64).collect::<String>().escape_debug())
}

/// An exposure with its device name, endpoint and the gateway's last counters.
pub(super) fn view(state: &State, x: &Exposure) -> ExposureView {
    let device = state.devices.get(&x.device_id).map(|d| d.name.to_string());
    let tenant = state.tenants.get(&x.tenant);
    let gateway = tenant.and_then(|t| t.placement.gateway_node);
    let endpoint = gateway
        .and_then(|g| state.nodes.get(&g)?.gateway.settings)
        .map(|s| format!("{}:{}", s.public_address, x.public_port));
    let status = gateway
        .and_then(|g| tenant?.node_status.get(&g)?.gateway.as_ref()?.exposures.iter().find(|e| e.id == x.id).cloned())
        .map(Into::into);
    ExposureView::new(x, device, endpoint, status)
}

fn reply(ctx: &super::auth::Ctx, reply: Reply) -> Result<ExposureView> {
    match reply {
        Reply::Exposure(x) => Ok(ctx.coordinator.read(|d| view(&d.state, &x))),
        other => Err(ApiError::internal("exposure command", format!("unexpected reply {other:?}"))),
    }
}

impl AddExposureBody {
    fn into_new(self, tenant: TenantName) -> std::result::Result<NewExposure, ApiError> {
        let AddExposureBody { device, port, public_port, protocol, allow, rate_per_second, source } = self;
        let allow = allow
            .unwrap_or_default()
            .iter()
            .map(|c| {
                Ipv4Cidr::parse_masking(c)
                    .map_err(|e| ApiError::invalid(format!("allow {:?}: {e}", c.chars().take(40).collect::<String>())))
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let new = NewExposure {
            tenant,
            device: DeviceName::parse(&device).map_err(|e| ApiError::invalid(e.to_string()))?,
            port,
            public_port,
            protocol: protocol.unwrap_or(Protocol::Tcp),
            allow,
            rate_per_second: rate_per_second.unwrap_or(0),
            source: source.unwrap_or(SourceMode::Nat),
        };
        new.check().map_err(ApiError::invalid)?;
        Ok(new)
    }
}

#[utoipa::path(post, path = "/api/v1/tenant/{name}/exposures", params(("name" = String, Path)), request_body = AddExposureBody,
    responses((status = 201, body = ExposureView),
        (status = 400, description = "a malformed body, port 0, or a public port outside the gateway's range (host bits of an allowed network are cleared)", body = ErrorBody),
        (status = 404, description = "no such tenant", body = ErrorBody),
        (status = 409, description = "the device does not exist, the public port is taken, the port is exposed already, the gateway has no public range, or the tenant is deleted", body = ErrorBody),
        (status = 429, description = "the gateway's public ports are all taken, or too many requests", body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn add_exposure(
    ctx: super::auth::Ctx,
    raw: PathOf<String>,
    body: Body,
) -> Result<(StatusCode, Json<ExposureView>)> {
    let raw = path(raw)?;
    let (scope, tenant) = tenant_scope(&ctx, Action::ExposeAdd, &raw, clipped("tenant", &raw)).await?;
    let body: AddExposureBody = scope.raw_body(body).await?;
    let new = scope.check(body.into_new(tenant)).await?;
    Ok((StatusCode::CREATED, Json(reply(&ctx, scope.run(Op::AddExposure(new)).await?)?)))
}

#[utoipa::path(get, path = "/api/v1/tenant/{name}/exposures", params(("name" = String, Path)),
    responses((status = 200, body = Vec<ExposureView>), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub(super) async fn list_exposures(ctx: super::auth::Ctx, raw: PathOf<String>) -> Result<Json<Vec<ExposureView>>> {
    let raw = path(raw)?;
    let (_scope, tenant) = tenant_scope(&ctx, Action::ExposeList, &raw, clipped("tenant", &raw)).await?;
    super::barrier(&ctx, None).await?;
    ctx.coordinator.read(|d| {
        d.state.tenants.get(&tenant).ok_or_else(|| ApiError::not_found(format!("tenant {tenant} not found")))?;
        Ok(Json(d.state.exposures_of(&tenant).into_iter().map(|x| view(&d.state, x)).collect()))
    })
}

#[utoipa::path(get, path = "/api/v1/tenant/{name}/exposures/{id}", params(("name" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = ExposureView), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub(super) async fn get_exposure(ctx: super::auth::Ctx, raw: PathOf<(String, String)>) -> Result<Json<ExposureView>> {
    let (raw, id) = path(raw)?;
    let (_scope, tenant) = tenant_scope(&ctx, Action::ExposeGet, &raw, target(&raw, &id)).await?;
    super::barrier(&ctx, None).await?;
    ctx.coordinator
        .read(|d| d.state.exposures.get(&id).filter(|x| x.tenant == tenant).map(|x| view(&d.state, x)))
        .map(Json)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "exposure {} of tenant {tenant} not found",
                id.chars().take(64).collect::<String>()
            ))
        })
}

#[utoipa::path(delete, path = "/api/v1/tenant/{name}/exposures/{id}", params(("name" = String, Path), ("id" = String, Path)),
    responses((status = 200, description = "the removed exposure", body = ExposureView), (status = 404, body = ErrorBody),
        (status = 409, description = "the tenant is deleted", body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn remove_exposure(
    ctx: super::auth::Ctx,
    raw: PathOf<(String, String)>,
) -> Result<Json<ExposureView>> {
    let (raw, id) = path(raw)?;
    let (scope, tenant) = tenant_scope(&ctx, Action::ExposeRemove, &raw, target(&raw, &id)).await?;
    let id: String = id.chars().take(64).collect();
    Ok(Json(reply(&ctx, scope.run(Op::RemoveExposure { tenant, id }).await?)?))
}

#[utoipa::path(post, path = "/api/v1/tenant/{name}/exposures/{id}/{action}",
    params(("name" = String, Path), ("id" = String, Path), ("action" = SwitchAction, Path)),
    responses((status = 200, body = ExposureView), (status = 404, description = "no such tenant, exposure or action", body = ErrorBody),
        (status = 409, description = "already so, or the tenant is deleted", body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn switch_exposure(
    ctx: super::auth::Ctx,
    raw: PathOf<(String, String, String)>,
) -> Result<Json<ExposureView>> {
    let (raw, id, action) = path(raw)?;
    let enabled = match serde_json::from_value::<SwitchAction>(action.clone().into()) {
        Ok(SwitchAction::Enable) => true,
        Ok(SwitchAction::Disable) => false,
        Err(_) => {
            return Err(ApiError::not_found(format!(
                "no exposure action {:?}",
                action.chars().take(32).collect::<String>()
            )))
        }
    };
    let act = if enabled { Action::ExposeEnable } else { Action::ExposeDisable };
    let (scope, tenant) = tenant_scope(&ctx, act, &raw, target(&raw, &id)).await?;
    let id: String = id.chars().take(64).collect();
    Ok(Json(reply(&ctx, scope.run(Op::EnableExposure { tenant, id, enabled }).await?)?))
}
