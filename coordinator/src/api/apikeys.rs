//! API keys over HTTP: create one (its token shown once), list them, revoke one.

use super::auth::{Ctx, Need};
use super::dto::{parse_lifetime, ApiKeyView, CreateApiKeyBody, CreatedApiKey, ErrorBody, ReadQuery};
use super::error::ApiError;
use super::extract::{clipped, path, Body, PathOf, QueryOf, Validate};
use super::{barrier, Result};
use crate::server::new_api_key;
use crate::state::action::Action;
use crate::state::apikey::Role;
use crate::state::names::TenantName;
use crate::state::{Op, Reply};
use axum::http::StatusCode;
use axum::Json;

/// Most characters a key's description may have.
pub const MAX_DESCRIPTION: usize = 200;

/// A key request, checked.
pub struct ApiKeyRequest {
    role: Role,
    tenant: Option<TenantName>,
    description: String,
    expires_at_ms: Option<u64>,
}

impl Validate for CreateApiKeyBody {
    type Valid = ApiKeyRequest;

    fn validate(self) -> std::result::Result<ApiKeyRequest, ApiError> {
        let CreateApiKeyBody { role, tenant, description, expires_in } = self;
        let tenant =
            tenant.as_deref().map(TenantName::parse).transpose().map_err(|e| ApiError::invalid(e.to_string()))?;
        let description = description.unwrap_or_default();
        if description.chars().count() > MAX_DESCRIPTION || description.chars().any(char::is_control) {
            return Err(ApiError::invalid(format!(
                "description must be at most {MAX_DESCRIPTION} printable characters"
            )));
        }
        let expires_at_ms = match expires_in {
            Some(raw) => {
                let d = parse_lifetime(&raw).map_err(ApiError::invalid)?;
                Some(crate::time::now_ms().saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
            }
            None => None,
        };
        Ok(ApiKeyRequest { role, tenant, description, expires_at_ms })
    }
}

#[utoipa::path(post, path = "/api/v1/apikeys", request_body = CreateApiKeyBody,
    responses((status = 201, body = CreatedApiKey), (status = 400, body = ErrorBody),
        (status = 404, description = "the customer key's tenant does not exist", body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn create_api_key(ctx: Ctx, body: Body) -> Result<(StatusCode, Json<CreatedApiKey>)> {
    let scope = ctx.scope(Need::Admin, Action::ApiKeyCreate, "apikey").await?;
    let r = scope.body::<CreateApiKeyBody>(body).await?;
    let (token, key) = new_api_key(r.role, r.tenant, r.description, r.expires_at_ms)
        .map_err(|e| ApiError::internal("key generation", e))?;
    match scope.run(Op::CreateApiKey(key)).await? {
        Reply::ApiKey(key) => Ok((StatusCode::CREATED, Json(CreatedApiKey { token, key: ApiKeyView::from(&*key) }))),
        other => Err(ApiError::internal("api key command", format!("unexpected reply {other:?}"))),
    }
}

#[utoipa::path(get, path = "/api/v1/apikeys", params(ReadQuery),
    responses((status = 200, body = Vec<ApiKeyView>), (status = 400, body = ErrorBody)), security(("api_key" = [])))]
pub(super) async fn list_api_keys(ctx: Ctx, query: QueryOf<ReadQuery>) -> Result<Json<Vec<ApiKeyView>>> {
    let scope = ctx.scope(Need::Admin, Action::ApiKeyList, "apikeys").await?;
    barrier(&ctx, scope.query(query).await?.consistency).await?;
    Ok(Json(ctx.coordinator.read(|d| d.state.api_keys.values().map(ApiKeyView::from).collect())))
}

/// `true` for an id of 16 hex digits (API keys and join tokens alike).
pub(super) fn is_hex_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[utoipa::path(delete, path = "/api/v1/apikeys/{id}", params(("id" = String, Path)),
    responses((status = 200, body = ApiKeyView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "already revoked, or the last admin key that does not expire", body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn revoke_api_key(ctx: Ctx, raw: PathOf<String>) -> Result<Json<ApiKeyView>> {
    let id = path(raw)?;
    let scope = ctx.scope(Need::Admin, Action::ApiKeyRevoke, clipped("apikey", &id)).await?;
    if !is_hex_id(&id) {
        return Err(scope.refuse(ApiError::invalid("api key id must be 16 hex digits")).await);
    }
    match scope.run(Op::RevokeApiKey { id }).await? {
        Reply::ApiKey(key) => Ok(Json(ApiKeyView::from(&*key))),
        other => Err(ApiError::internal("api key command", format!("unexpected reply {other:?}"))),
    }
}
