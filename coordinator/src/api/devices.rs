//! Devices over HTTP: register by key, list, show, remove, enable/disable, and the device's
//! wg-quick config. An admin key or the tenant's own customer key; another tenant's key is 403.
//! The invariants (addresses, names, keys) are the domain's (`state/device.rs`).

use super::auth::{Ctx, Need};
use super::dto::{AddDeviceBody, ConfigQuery, DeviceAction, DeviceConfigView, DeviceView, ErrorBody, PeerStatusView};
use super::error::ApiError;
use super::extract::{clipped, path, Body, PathOf, QueryOf, Scope};
use super::Result;
use crate::state::action::Action;
use crate::state::device::{Device, DeviceName, NewDevice};
use crate::state::names::TenantName;
use crate::state::{Op, Reply, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Authenticates for `action` on `target` under tenant `raw`, which the caller must own.
pub(super) async fn tenant_scope<'c>(
    ctx: &'c Ctx,
    action: Action,
    raw: &str,
    target: String,
) -> Result<(Scope<'c>, TenantName)> {
    let scope = ctx.scope(Need::AnyKey, action, target).await?;
    let name = scope.tenant(raw).await?;
    scope.authorize(Need::Tenant(&name)).await?;
    Ok((scope, name))
}

fn target(tenant: &str, device: &str) -> String {
    format!("{}/device/{}", clipped("tenant", tenant), device.chars().take(64).collect::<String>().escape_debug())
}

async fn device_name(scope: &Scope<'_>, raw: &str) -> Result<DeviceName> {
    scope.check(DeviceName::parse(raw).map_err(|e| ApiError::invalid(e.to_string()))).await
}

/// What the tenant's gateway last reported about this device's peer.
fn peer(state: &State, d: &Device) -> Option<PeerStatusView> {
    let t = state.tenants.get(&d.tenant)?;
    let gw = t.node_status.get(&t.placement.gateway_node?)?.gateway.as_ref()?;
    gw.peers.iter().find(|p| p.public_key == d.public_key).cloned().map(Into::into)
}

fn device_reply(ctx: &Ctx, reply: Reply) -> Result<DeviceView> {
    match reply {
        Reply::Device(d) => Ok(ctx.coordinator.read(|s| DeviceView::new(&d, peer(&s.state, &d)))),
        other => Err(ApiError::internal("device command", format!("unexpected reply {other:?}"))),
    }
}

impl AddDeviceBody {
    fn into_new(self, tenant: TenantName) -> std::result::Result<NewDevice, ApiError> {
        let AddDeviceBody { name, public_key, address } = self;
        Ok(NewDevice {
            tenant,
            name: DeviceName::parse(&name).map_err(|e| ApiError::invalid(e.to_string()))?,
            public_key: public_key.parse().map_err(|e| ApiError::invalid(format!("public_key: {e}")))?,
            address: address
                .map(|a| a.parse().map_err(|_| ApiError::invalid(format!("address {a:?} is not an IPv4 address"))))
                .transpose()?,
        })
    }
}

#[utoipa::path(post, path = "/api/v1/tenant/{name}/devices", params(("name" = String, Path)), request_body = AddDeviceBody,
    responses((status = 201, body = DeviceView),
        (status = 400, description = "a malformed name, key or address", body = ErrorBody),
        (status = 404, description = "no such tenant", body = ErrorBody),
        (status = 409, description = "the name, key or address is taken, the address is outside the tenant subnet or its .0/.1/.255, or the tenant is deleted", body = ErrorBody),
        (status = 429, description = "the tenant's subnet is full, or too many requests", body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn add_device(ctx: Ctx, raw: PathOf<String>, body: Body) -> Result<(StatusCode, Json<DeviceView>)> {
    let raw = path(raw)?;
    let (mut scope, tenant) = tenant_scope(&ctx, Action::DeviceAdd, &raw, clipped("tenant", &raw)).await?;
    let body: AddDeviceBody = scope.raw_body(body).await?;
    scope.target = target(&raw, &body.name);
    let new = scope.check(body.into_new(tenant)).await?;
    let view = device_reply(&ctx, scope.run(Op::AddDevice(new)).await?)?;
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(get, path = "/api/v1/tenant/{name}/devices", params(("name" = String, Path)),
    responses((status = 200, body = Vec<DeviceView>), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub(super) async fn list_devices(ctx: Ctx, raw: PathOf<String>) -> Result<Json<Vec<DeviceView>>> {
    let raw = path(raw)?;
    let (_scope, tenant) = tenant_scope(&ctx, Action::DeviceList, &raw, clipped("tenant", &raw)).await?;
    super::barrier(&ctx, None).await?;
    ctx.coordinator.read(|d| {
        d.state.tenants.get(&tenant).ok_or_else(|| ApiError::not_found(format!("tenant {tenant} not found")))?;
        Ok(Json(d.state.devices_of(&tenant).into_iter().map(|dev| DeviceView::new(dev, peer(&d.state, dev))).collect()))
    })
}

#[utoipa::path(get, path = "/api/v1/tenant/{name}/devices/{device}", params(("name" = String, Path), ("device" = String, Path)),
    responses((status = 200, body = DeviceView), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub(super) async fn get_device(ctx: Ctx, raw: PathOf<(String, String)>) -> Result<Json<DeviceView>> {
    let (raw, device) = path(raw)?;
    let (scope, tenant) = tenant_scope(&ctx, Action::DeviceGet, &raw, target(&raw, &device)).await?;
    let device = device_name(&scope, &device).await?;
    super::barrier(&ctx, None).await?;
    ctx.coordinator
        .read(|d| d.state.device(&tenant, &device).map(|dev| DeviceView::new(dev, peer(&d.state, dev))))
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("device {device} of tenant {tenant} not found")))
}

#[utoipa::path(delete, path = "/api/v1/tenant/{name}/devices/{device}", params(("name" = String, Path), ("device" = String, Path)),
    responses((status = 200, description = "the removed device", body = DeviceView), (status = 404, body = ErrorBody),
        (status = 409, description = "exposures or firewall rules name it, or the tenant is deleted", body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn remove_device(ctx: Ctx, raw: PathOf<(String, String)>) -> Result<Json<DeviceView>> {
    let (raw, device) = path(raw)?;
    let (scope, tenant) = tenant_scope(&ctx, Action::DeviceRemove, &raw, target(&raw, &device)).await?;
    let name = device_name(&scope, &device).await?;
    Ok(Json(device_reply(&ctx, scope.run(Op::RemoveDevice { tenant, name }).await?)?))
}

#[utoipa::path(post, path = "/api/v1/tenant/{name}/devices/{device}/{action}",
    params(("name" = String, Path), ("device" = String, Path), ("action" = DeviceAction, Path)),
    responses((status = 200, body = DeviceView), (status = 404, description = "no such tenant, device or action", body = ErrorBody),
        (status = 409, description = "already so, not pending (approve), revoked, or the tenant is deleted", body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn switch_device(ctx: Ctx, raw: PathOf<(String, String, String)>) -> Result<Json<DeviceView>> {
    let (raw, device, action) = path(raw)?;
    let Ok(action) = serde_json::from_value::<DeviceAction>(action.clone().into()) else {
        return Err(ApiError::not_found(format!("no device action {:?}", action.chars().take(32).collect::<String>())));
    };
    let act = match action {
        DeviceAction::Enable => Action::DeviceEnable,
        DeviceAction::Disable => Action::DeviceDisable,
        DeviceAction::Approve => Action::DeviceApprove,
        DeviceAction::Revoke => Action::DeviceRevoke,
    };
    let (scope, tenant) = tenant_scope(&ctx, act, &raw, target(&raw, &device)).await?;
    let name = device_name(&scope, &device).await?;
    let op = match action {
        DeviceAction::Enable => Op::EnableDevice { tenant, name, enabled: true },
        DeviceAction::Disable => Op::EnableDevice { tenant, name, enabled: false },
        DeviceAction::Approve => Op::ApproveDevice { tenant, name },
        DeviceAction::Revoke => Op::RevokeDevice { tenant, name },
    };
    Ok(Json(device_reply(&ctx, scope.run(op).await?)?))
}

#[utoipa::path(get, path = "/api/v1/tenant/{name}/devices/{device}/config",
    params(("name" = String, Path), ("device" = String, Path), ConfigQuery),
    responses((status = 200, description = "the wg-quick file as JSON, or with `format=qr` as an SVG QR code of it",
            content((DeviceConfigView = "application/json"), (String = "image/svg+xml"))),
        (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub(super) async fn device_config(
    ctx: Ctx,
    raw: PathOf<(String, String)>,
    query: QueryOf<ConfigQuery>,
) -> Result<Response> {
    let (raw, device) = path(raw)?;
    let (scope, tenant) = tenant_scope(&ctx, Action::DeviceConfig, &raw, target(&raw, &device)).await?;
    let name = device_name(&scope, &device).await?;
    let query = scope.query(query).await?;
    let qr = match query.format.as_deref() {
        None | Some("wg-quick") => false,
        Some("qr") => true,
        Some(_) => return Err(scope.refuse(ApiError::invalid("format must be wg-quick or qr")).await),
    };
    super::barrier(&ctx, None).await?;
    let config = ctx
        .coordinator
        .read(|d| d.state.device(&tenant, &name).map(|dev| crate::state::wgquick::wg_quick(&d.state, dev)));
    let config = config.ok_or_else(|| ApiError::not_found(format!("device {name} of tenant {tenant} not found")))?;
    if qr {
        let svg = crate::qr::svg(&config.text).map_err(|e| ApiError::internal("device config qr", e.to_string()))?;
        return Ok(
            ([(header::CONTENT_TYPE, "image/svg+xml"), (header::CACHE_CONTROL, "no-store")], svg).into_response()
        );
    }
    Ok(Json(DeviceConfigView { format: "wg-quick".into(), config: config.text, missing: config.missing })
        .into_response())
}
