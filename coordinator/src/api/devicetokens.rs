//! Device tokens over HTTP: create (the token and the device's enroll command, shown once), list
//! (ids and prefixes, never secrets), revoke (devices enrolled with it stay). An admin key or the
//! tenant's own customer key; another tenant's key is 403 and audited. The token's invariants are
//! the domain's (`state/devicetoken.rs`).

use super::auth::Ctx;
use super::devices::tenant_scope;
use super::dto::{parse_ttl, Approve, CreateDeviceTokenBody, CreatedDeviceToken, DeviceTokenView, ErrorBody};
use super::error::ApiError;
use super::extract::{clipped, path, Body, PathOf, Validate};
use super::Result;
use crate::state::action::Action;
use crate::state::device::DeviceName;
use crate::state::devicetoken::{check_labels, DeviceToken};
use crate::state::{Op, Reply};
use axum::http::StatusCode;
use axum::Json;
use std::collections::BTreeMap;
use std::time::Duration;

/// A device token request, checked (the tenant comes from the path).
pub struct DeviceTokenRequest {
    name: Option<DeviceName>,
    ttl: Duration,
    max_uses: Option<u32>,
    labels: BTreeMap<String, String>,
    ephemeral: Option<Duration>,
    approve_manual: bool,
    public: bool,
}

/// `1`…`999999` or `unlimited` (`None`), as `USES_PATTERN` admits.
fn parse_uses(raw: Option<&str>) -> std::result::Result<Option<u32>, String> {
    let Some(raw) = raw else { return Ok(Some(1)) };
    if raw == "unlimited" {
        return Ok(None);
    }
    let ok = (1..=6).contains(&raw.len()) && !raw.starts_with('0') && raw.bytes().all(|b| b.is_ascii_digit());
    match raw.parse::<u32>() {
        Ok(n) if ok => Ok(Some(n)),
        _ => Err(format!("uses {raw:?} must be a count from 1 to 999999, or unlimited")),
    }
}

/// An offline time exactly as `EPHEMERAL_PATTERN` admits: 1m or more, in m, h or d.
fn parse_ephemeral(raw: &str) -> std::result::Result<Duration, String> {
    let refused = || format!("ephemeral {raw:?} must be whole minutes (at least 1m), hours or days, e.g. 30m");
    let split = raw.find(|c: char| !c.is_ascii_digit()).ok_or_else(refused)?;
    let (digits, unit) = raw.split_at(split);
    let (per, min_digits, max_digits) = match unit {
        "m" => (60, 1, 5),
        "h" => (3600, 1, 4),
        "d" => (86_400, 1, 3),
        _ => return Err(refused()),
    };
    if digits.starts_with('0') || digits.len() < min_digits || digits.len() > max_digits {
        return Err(refused());
    }
    let n: u64 = digits.parse().map_err(|_| refused())?;
    Ok(Duration::from_secs(n * per))
}

impl Validate for CreateDeviceTokenBody {
    type Valid = DeviceTokenRequest;

    fn validate(self) -> std::result::Result<DeviceTokenRequest, ApiError> {
        let CreateDeviceTokenBody { name, ttl, uses, labels, ephemeral, approve, public } = self;
        let name = name.map(|n| DeviceName::parse(&n)).transpose().map_err(|e| ApiError::invalid(e.to_string()))?;
        let ttl = parse_ttl(Some(ttl.as_deref().unwrap_or("24h"))).map_err(ApiError::invalid)?;
        let max_uses = parse_uses(uses.as_deref()).map_err(ApiError::invalid)?;
        let labels = labels.unwrap_or_default();
        check_labels(&labels).map_err(ApiError::invalid)?;
        let ephemeral = ephemeral.as_deref().map(parse_ephemeral).transpose().map_err(ApiError::invalid)?;
        let approve_manual = approve.unwrap_or_default() == Approve::Manual;
        Ok(DeviceTokenRequest {
            name,
            ttl,
            max_uses,
            labels,
            ephemeral,
            approve_manual,
            public: public.unwrap_or(false),
        })
    }
}

fn target(tenant: &str, id: &str) -> String {
    format!("{}/device-token/{}", clipped("tenant", tenant), id.chars().take(64).collect::<String>().escape_debug())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The device's enroll command for a token: the coordinator's node listener and the CA pin.
pub fn enroll_command(coordinator: &str, token: &str, ca_fingerprint: &str) -> String {
    format!("berqenas-device enroll --coordinator {coordinator} --token {token} --ca-pin {ca_fingerprint}")
}

#[utoipa::path(post, path = "/api/v1/tenant/{name}/device-tokens", params(("name" = String, Path)),
    request_body = CreateDeviceTokenBody,
    responses((status = 201, body = CreatedDeviceToken),
        (status = 400, description = "a malformed name, ttl, uses, label or ephemeral time; public for a tenant without public_api", body = ErrorBody),
        (status = 404, description = "no such tenant", body = ErrorBody),
        (status = 409, description = "the tenant is deleted", body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn create_device_token(
    ctx: Ctx,
    raw: PathOf<String>,
    body: Body,
) -> Result<(StatusCode, Json<CreatedDeviceToken>)> {
    let raw = path(raw)?;
    let (scope, tenant) =
        tenant_scope(&ctx, Action::DeviceTokenCreate, &raw, format!("{}/device-token", clipped("tenant", &raw)))
            .await?;
    let request = scope.body::<CreateDeviceTokenBody>(body).await?;
    let id = crate::server::random_hex(8).map_err(|e| ApiError::internal("token generation", e))?;
    let secret = crate::server::random_hex(32).map_err(|e| ApiError::internal("token generation", e))?;
    let now = crate::time::now_ms();
    let token = DeviceToken {
        id: id.clone(),
        tenant: tenant.clone(),
        name: request.name,
        secret_hash: crate::state::apikey::hash_secret(&secret),
        labels: request.labels,
        created_at_ms: now,
        expires_at_ms: now.saturating_add(millis(request.ttl)),
        max_uses: request.max_uses,
        uses: 0,
        ephemeral_ms: request.ephemeral.map(millis),
        approve_manual: request.approve_manual,
        public: request.public,
        revoked_at_ms: None,
        last_used_at_ms: None,
    };
    let stored = match scope.run(Op::CreateDeviceToken(token)).await? {
        Reply::DeviceToken(t) => t,
        other => return Err(ApiError::internal("device token", format!("unexpected reply {other:?}"))),
    };
    let ca_fingerprint =
        ctx.coordinator.read(|d| d.state.settings.as_ref().map(|s| s.ca_fingerprint.clone())).unwrap_or_default();
    let coordinator = format!("https://{}", ctx.coordinator.config.node_advertise);
    let token = format!("bqd_{id}_{secret}");
    Ok((
        StatusCode::CREATED,
        Json(CreatedDeviceToken {
            command: enroll_command(&coordinator, &token, &ca_fingerprint),
            token,
            ca_fingerprint,
            coordinator,
            device_token: (&*stored).into(),
        }),
    ))
}

#[utoipa::path(get, path = "/api/v1/tenant/{name}/device-tokens", params(("name" = String, Path)),
    responses((status = 200, body = Vec<DeviceTokenView>), (status = 404, description = "no such tenant", body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn list_device_tokens(ctx: Ctx, raw: PathOf<String>) -> Result<Json<Vec<DeviceTokenView>>> {
    let raw = path(raw)?;
    let (_scope, tenant) =
        tenant_scope(&ctx, Action::DeviceTokenList, &raw, format!("{}/device-token", clipped("tenant", &raw))).await?;
    super::barrier(&ctx, None).await?;
    ctx.coordinator.read(|d| {
        d.state.tenants.get(&tenant).ok_or_else(|| ApiError::not_found(format!("tenant {tenant} not found")))?;
        Ok(Json(d.state.device_tokens_of(&tenant).into_iter().map(DeviceTokenView::from).collect()))
    })
}

#[utoipa::path(delete, path = "/api/v1/tenant/{name}/device-tokens/{id}", params(("name" = String, Path), ("id" = String, Path)),
    responses((status = 200, description = "the revoked token; devices enrolled with it stay", body = DeviceTokenView),
        (status = 404, description = "no such tenant, or no such token of it", body = ErrorBody),
        (status = 409, description = "the token is already revoked", body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn revoke_device_token(ctx: Ctx, raw: PathOf<(String, String)>) -> Result<Json<DeviceTokenView>> {
    let (raw, id) = path(raw)?;
    let (scope, tenant) = tenant_scope(&ctx, Action::DeviceTokenRevoke, &raw, target(&raw, &id)).await?;
    let id = scope.check(hex_id(&id)).await?;
    match scope.run(Op::RevokeDeviceToken { tenant: tenant.clone(), id }).await? {
        Reply::DeviceToken(t) => Ok(Json((&*t).into())),
        other => Err(ApiError::internal("device token", format!("unexpected reply {other:?}"))),
    }
}

/// A token id: 16 hex digits (the listing shows lowercase; either case is taken).
fn hex_id(raw: &str) -> std::result::Result<String, ApiError> {
    if raw.len() == 16 && raw.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(raw.to_ascii_lowercase())
    } else {
        Err(ApiError::invalid("a device token id is 16 hex digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::names::TenantName;

    #[test]
    fn uses_and_ephemeral_follow_their_patterns() {
        assert_eq!(parse_uses(None), Ok(Some(1)));
        assert_eq!(parse_uses(Some("5")), Ok(Some(5)));
        assert_eq!(parse_uses(Some("unlimited")), Ok(None));
        for bad in ["0", "05", "1000000", "-1", "many", ""] {
            assert!(parse_uses(Some(bad)).is_err(), "{bad}");
        }
        assert_eq!(parse_ephemeral("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_ephemeral("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["0m", "100000m", "0h", "30s", "1w", "m", "010m"] {
            assert!(parse_ephemeral(bad).is_err(), "{bad}");
        }
        assert!(["1m", "10m", "99999m", "9999h", "999d"].iter().all(|s| parse_ephemeral(s).is_ok()));
    }

    #[test]
    fn tenant_names_in_targets_are_clipped() {
        let t = TenantName::parse("acme").expect("valid");
        assert_eq!(target(t.as_str(), "0123456789abcdef"), "tenant/acme/device-token/0123456789abcdef");
    }
}
