//! The REST API (axum): the seed's tenant endpoints, API keys, audit, cluster membership and the
//! OpenAPI document. Only this module knows about HTTP. Bodies are parsed by hand so that every
//! malformed, oversized or unknown-field body gets a JSON 4xx and an audit entry.

pub mod audit_trail;
pub mod auth;
pub mod cluster;
pub mod error;
pub mod refusals;
pub mod tokens;

use crate::raft::CoordinatorNode;
use crate::server::{new_api_key, Consistency, Coordinator};
use crate::state::action::Action;
use crate::state::apikey::{ApiKey, Role};
use crate::state::audit::{self, AuditEntry, Break};
use crate::state::names::{validate_label_part, TenantName};
use crate::state::node::{JoinToken, Node, NodeRole};
use crate::state::quota::ByteSize;
use crate::state::tenant::{AccessMode, DbType, Isolation, NewTenant, Tenant, TenantPatch, TenantSpec, Tier};
use crate::state::{Command, Lifecycle, Op, Reply};
use audit_trail::*;
use auth::{Ctx, Need};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use cluster::*;
use error::{ApiError, ErrorBody};
use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::ChangeMembers;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use utoipa::{OpenApi, ToSchema};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

type Result<T> = std::result::Result<T, ApiError>;

pub fn router(c: Arc<Coordinator>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/openapi.json", get(openapi_json))
        .route("/api/v1/tenant", post(create_tenant))
        .route("/api/v1/tenant/{name}", get(get_tenant).patch(update_tenant).delete(delete_tenant))
        .route("/api/v1/tenant/{name}/{action}", post(tenant_lifecycle))
        .route("/api/v1/tenant/{name}/audit", get(tenant_audit))
        .route("/api/v1/tenants", get(list_tenants))
        .route("/api/v1/nodes", get(list_nodes))
        .route("/api/v1/nodes/tokens", post(create_join_token))
        .route("/api/v1/nodes/{id}/{action}", post(node_action))
        .route("/api/v1/apikeys", get(list_api_keys).post(create_api_key))
        .route("/api/v1/apikeys/{id}", delete(revoke_api_key))
        .route("/api/v1/audit", get(list_audit))
        .route("/api/v1/audit/verify", get(verify_audit))
        .route("/api/v1/cluster", get(cluster_status))
        .route("/api/v1/refusals", get(refusals::refusal_stats))
        .route("/api/v1/cluster/learners", post(add_learner))
        .route("/api/v1/cluster/tokens", get(tokens::list_coordinator_tokens).post(create_coordinator_token))
        .route("/api/v1/cluster/tokens/{id}", delete(tokens::revoke_coordinator_token))
        .route("/api/v1/cluster/voters", post(promote))
        .route("/api/v1/cluster/members/{id}", delete(remove_member))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(c)
}

/// Parses a JSON body strictly; any failure is audited and answered with 400/413.
async fn parse_body<T: DeserializeOwned>(
    ctx: &Ctx,
    actor: &str,
    action: Action,
    target: &str,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<T> {
    let bytes = match body {
        Ok(b) => b,
        Err(rejection) => {
            let err = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("request body is larger than {MAX_BODY_BYTES} bytes"),
                )
            } else {
                ApiError::invalid(format!("unreadable request body: {}", rejection.body_text()))
            };
            return Err(ctx.reject(actor, action, target, err).await);
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(v) => Ok(v),
        Err(e) => Err(ctx.reject(actor, action, target, ApiError::invalid(format!("invalid JSON body: {e}"))).await),
    }
}

/// A path tenant name, validated; a bad one is audited under `action`.
async fn tenant_name(ctx: &Ctx, actor: &str, action: Action, raw: &str) -> Result<TenantName> {
    match TenantName::parse(raw) {
        Ok(n) => Ok(n),
        Err(e) => Err(ctx.reject(actor, action, &target_of(raw), ApiError::invalid(e.to_string())).await),
    }
}

/// An audit target for user-typed text: bounded and escaped.
fn target_of(raw: &str) -> String {
    let clipped: String = raw.chars().take(64).collect();
    format!("tenant/{}", clipped.escape_debug())
}

/// Runs a command through Raft and maps the domain result.
async fn run(ctx: &Ctx, actor: &str, op: Op) -> Result<Reply> {
    let mut meta = ctx.meta(actor);
    // The role the caller's key was authenticated with (roles never change); the state machine
    // re-checks the key when the command is applied, on the leader's log position.
    meta.key_role = ctx.coordinator.read(|d| d.state.api_keys.get(actor).map(|k| k.role));
    let cmd = Command { meta, op };
    Ok(ctx.coordinator.write(cmd).await??)
}

fn expect_tenant(reply: Reply) -> Result<Tenant> {
    match reply {
        Reply::Tenant(t) => Ok(t.redacted()),
        other => Err(ApiError::internal("tenant command", format!("unexpected reply {other:?}"))),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ReadParams {
    /// `stale` answers from this coordinator's own state without asking the leader.
    #[serde(default)]
    #[param(value_type = Option<String>)]
    pub consistency: Option<Consistency>,
}

async fn barrier(ctx: &Ctx, params: &ReadParams) -> Result<()> {
    Ok(ctx.coordinator.read_barrier(params.consistency.unwrap_or_default()).await?)
}

#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "the process is up")))]
async fn healthz() -> &'static str {
    "ok"
}

async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// The seed's create body, plus the optional extras of DESIGN.md.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantBody {
    #[schema(example = "acme")]
    pub name: String,
    /// Disk quota such as `5GB`, `500MB`, `1TiB`; the tier's default when absent.
    #[schema(example = "5GB")]
    pub db_quota: Option<String>,
    /// Default true.
    pub vpn_enabled: Option<bool>,
    /// Whether clients outside the VPN may connect; default: what `access_mode` implies, else
    /// true without a VPN and false with one. Must agree with `access_mode`.
    pub public_api: Option<bool>,
    /// Let the tenant's database user create tables and other objects in its schema. Default false.
    pub ddl_enabled: Option<bool>,
    pub tier: Option<Tier>,
    pub db_type: Option<DbType>,
    pub isolation: Option<Isolation>,
    pub access_mode: Option<AccessMode>,
    pub connection_limit: Option<u32>,
    pub events_per_min: Option<u32>,
    pub dedicated: Option<bool>,
    pub node_selector: Option<BTreeMap<String, String>>,
}

fn validate_selector(sel: BTreeMap<String, String>) -> std::result::Result<BTreeMap<String, String>, String> {
    if sel.len() > 16 {
        return Err("at most 16 node selector labels".into());
    }
    for (k, v) in &sel {
        validate_label_part(k).map_err(|e| e.to_string())?;
        validate_label_part(v).map_err(|e| e.to_string())?;
    }
    Ok(sel)
}

impl CreateTenantBody {
    /// Parses the names and sizes here; defaults and invariants are the domain's (`TenantSpec::new`).
    fn into_spec(self) -> std::result::Result<TenantSpec, String> {
        let name = TenantName::parse(&self.name).map_err(|e| e.to_string())?;
        let db_quota = match &self.db_quota {
            Some(q) => Some(ByteSize::parse(q).map_err(|e| format!("db_quota: {e}"))?),
            None => None,
        };
        let request = NewTenant {
            tier: self.tier,
            db_type: self.db_type,
            isolation: self.isolation,
            db_quota,
            connection_limit: self.connection_limit,
            events_per_min: self.events_per_min,
            vpn_enabled: self.vpn_enabled,
            public_api: self.public_api,
            ddl_enabled: self.ddl_enabled,
            access_mode: self.access_mode,
            dedicated: self.dedicated,
            node_selector: self.node_selector.unwrap_or_default(),
        };
        TenantSpec::new(name, request).map_err(|e| e.to_string())
    }
}

#[utoipa::path(post, path = "/api/v1/tenant", request_body = CreateTenantBody,
    responses((status = 201, body = CreatedTenant), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("api_key" = [])))]
async fn create_tenant(
    ctx: Ctx,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<CreatedTenant>)> {
    const ACTION: Action = Action::TenantCreate;
    let caller = ctx.require(Need::Admin, ACTION, "tenant").await?;
    let body: CreateTenantBody = parse_body(&ctx, &caller.key_id, ACTION, "tenant", body).await?;
    let target = target_of(&body.name);
    let mut spec = match body.into_spec() {
        Ok(s) => s,
        Err(msg) => return Err(ctx.reject(&caller.key_id, ACTION, &target, ApiError::invalid(msg)).await),
    };
    let (db_password, verifier) =
        crate::scram::new_password_for(spec.db_type).map_err(|e| ApiError::internal("password generation", e))?;
    spec.db_password_verifier = verifier;
    let tenant = expect_tenant(run(&ctx, &caller.key_id, Op::CreateTenant(spec)).await?)?;
    let db_user = format!("tenant_{}_user", tenant.name);
    Ok((StatusCode::CREATED, Json(CreatedTenant { tenant, db_user, db_password })))
}

/// A created tenant, with its database login. `db_password` is shown this once; the coordinator
/// keeps only its SCRAM verifier.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedTenant {
    #[serde(flatten)]
    pub tenant: Tenant,
    pub db_user: String,
    pub db_password: String,
}

#[utoipa::path(get, path = "/api/v1/tenant/{name}", params(("name" = String, Path), ReadParams),
    responses((status = 200, body = Tenant), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
async fn get_tenant(ctx: Ctx, Path(raw): Path<String>, Query(params): Query<ReadParams>) -> Result<Json<Tenant>> {
    const ACTION: Action = Action::TenantGet;
    let caller = ctx.require(Need::AnyKey, ACTION, &target_of(&raw)).await?;
    let name = tenant_name(&ctx, &caller.key_id, ACTION, &raw).await?;
    ctx.authorize(&caller, Need::Tenant(&name), ACTION, &target_of(&raw)).await?;
    barrier(&ctx, &params).await?;
    ctx.coordinator
        .read(|d| d.state.tenants.get(&name).map(Tenant::redacted))
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("tenant {name} not found")))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ListParams {
    /// `stale` answers from this coordinator's own state without asking the leader.
    #[serde(default)]
    #[param(value_type = Option<String>)]
    pub consistency: Option<Consistency>,
    /// Only tenants in this status, e.g. `provisioning`.
    #[serde(default)]
    pub status: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/tenants", params(ListParams),
    responses((status = 200, body = Vec<Tenant>), (status = 400, body = ErrorBody)), security(("api_key" = [])))]
async fn list_tenants(ctx: Ctx, Query(params): Query<ListParams>) -> Result<Json<Vec<Tenant>>> {
    const ACTION: Action = Action::TenantList;
    let caller = ctx.require(Need::AnyKey, ACTION, "tenants").await?;
    if caller.role == Role::Auditor {
        ctx.authorize(&caller, Need::Admin, ACTION, "tenants").await?;
    }
    let status = match params
        .status
        .as_deref()
        .map(|s| serde_json::from_value::<crate::state::tenant::TenantStatus>(s.into()))
        .transpose()
    {
        Ok(s) => s,
        Err(_) => {
            let msg = "status must be one of provisioning, active, suspended, deleting, deleted-pending-purge, quota-exceeded";
            return Err(ctx.reject(&caller.key_id, ACTION, "tenants", ApiError::invalid(msg.to_string())).await);
        }
    };
    barrier(&ctx, &ReadParams { consistency: params.consistency }).await?;
    Ok(Json(ctx.coordinator.read(|d| {
        d.state
            .tenants
            .values()
            .filter(|t| caller.role == Role::Admin || caller.tenant.as_ref() == Some(&t.name))
            .filter(|t| status.is_none_or(|s| t.status == s))
            .map(Tenant::redacted)
            .collect()
    })))
}

/// A PATCH body: only the fields to change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenantBody {
    pub tier: Option<Tier>,
    #[schema(example = "10GB")]
    pub db_quota: Option<String>,
    pub connection_limit: Option<u32>,
    pub events_per_min: Option<u32>,
    pub vpn_enabled: Option<bool>,
    pub public_api: Option<bool>,
    pub ddl_enabled: Option<bool>,
    pub access_mode: Option<AccessMode>,
}

impl UpdateTenantBody {
    fn into_patch(self) -> std::result::Result<TenantPatch, String> {
        Ok(TenantPatch {
            tier: self.tier,
            db_quota: self.db_quota.map(|q| ByteSize::parse(&q).map_err(|e| format!("db_quota: {e}"))).transpose()?,
            connection_limit: self.connection_limit,
            events_per_min: self.events_per_min,
            vpn_enabled: self.vpn_enabled,
            public_api: self.public_api,
            ddl_enabled: self.ddl_enabled,
            access_mode: self.access_mode,
        })
    }
}

#[utoipa::path(patch, path = "/api/v1/tenant/{name}", params(("name" = String, Path)), request_body = UpdateTenantBody,
    responses((status = 200, body = Tenant), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
async fn update_tenant(
    ctx: Ctx,
    Path(raw): Path<String>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Json<Tenant>> {
    const ACTION: Action = Action::TenantUpdate;
    let target = target_of(&raw);
    let caller = ctx.require(Need::Admin, ACTION, &target).await?;
    let name = tenant_name(&ctx, &caller.key_id, ACTION, &raw).await?;
    let body: UpdateTenantBody = parse_body(&ctx, &caller.key_id, ACTION, &target, body).await?;
    let patch = match body.into_patch() {
        Ok(p) => p,
        Err(msg) => return Err(ctx.reject(&caller.key_id, ACTION, &target, ApiError::invalid(msg)).await),
    };
    Ok(Json(expect_tenant(run(&ctx, &caller.key_id, Op::UpdateTenant { name, patch }).await?)?))
}

#[utoipa::path(delete, path = "/api/v1/tenant/{name}", params(("name" = String, Path)),
    responses((status = 200, description = "the tenant is deleted-pending-purge and can be restored", body = Tenant),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("api_key" = [])))]
async fn delete_tenant(ctx: Ctx, Path(raw): Path<String>) -> Result<Json<Tenant>> {
    lifecycle(ctx, raw, Lifecycle::Delete).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct PurgeParams {
    /// Purge before the retention period has run out.
    #[serde(default)]
    pub force: bool,
}

#[utoipa::path(post, path = "/api/v1/tenant/{name}/{action}",
    params(("name" = String, Path), ("action" = String, Path, description = "suspend, resume, restore or purge"), PurgeParams),
    responses((status = 200, body = Tenant), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("api_key" = [])))]
async fn tenant_lifecycle(
    ctx: Ctx,
    Path((raw, action)): Path<(String, String)>,
    Query(p): Query<PurgeParams>,
) -> Result<Json<Tenant>> {
    let step = match action.as_str() {
        "suspend" => Lifecycle::Suspend,
        "resume" => Lifecycle::Resume,
        "restore" => Lifecycle::Restore,
        "purge" => Lifecycle::Purge { force: p.force },
        _ => {
            return Err(ApiError::not_found(format!(
                "no tenant action {:?}",
                action.chars().take(32).collect::<String>()
            )))
        }
    };
    lifecycle(ctx, raw, step).await
}

async fn lifecycle(ctx: Ctx, raw: String, step: Lifecycle) -> Result<Json<Tenant>> {
    let action = Action::from(step);
    let caller = ctx.require(Need::Admin, action, &target_of(&raw)).await?;
    let name = tenant_name(&ctx, &caller.key_id, action, &raw).await?;
    Ok(Json(expect_tenant(run(&ctx, &caller.key_id, Op::Lifecycle { name, step }).await?)?))
}

#[utoipa::path(get, path = "/api/v1/nodes", params(ReadParams), responses((status = 200, body = Vec<Node>)),
    security(("api_key" = [])))]
async fn list_nodes(ctx: Ctx, Query(params): Query<ReadParams>) -> Result<Json<Vec<Node>>> {
    ctx.require(Need::Admin, Action::NodeList, "nodes").await?;
    barrier(&ctx, &params).await?;
    Ok(Json(ctx.coordinator.read(|d| d.state.nodes.values().cloned().collect())))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJoinTokenBody {
    /// `gateway`, `db` or both.
    pub roles: Vec<NodeRole>,
    /// How long the token can be used, e.g. `1h` (default), at most 7 days.
    pub ttl: Option<String>,
    /// Labels the node gets.
    pub labels: Option<BTreeMap<String, String>>,
}

/// A new join token: `token` is shown this once; `ca_fingerprint` is what the agent pins.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedJoinToken {
    pub token: String,
    pub ca_fingerprint: String,
    pub join_token: JoinToken,
}

const MAX_JOIN_TOKEN_TTL: Duration = Duration::from_secs(7 * 86_400);

/// A token lifetime: default one hour, at most seven days.
fn token_ttl(raw: Option<&str>) -> std::result::Result<Duration, String> {
    let ttl = match raw {
        Some(t) => humantime::parse_duration(t).map_err(|e| format!("ttl: {e}"))?,
        None => Duration::from_secs(3600),
    };
    if ttl.is_zero() || ttl > MAX_JOIN_TOKEN_TTL {
        return Err("ttl must be between 1s and 7d".into());
    }
    Ok(ttl)
}

/// Makes a one-time token (node roles, or a coordinator id), commits its hash through Raft and
/// returns the token, shown this once, with the CA fingerprint to pin.
async fn issue_join_token(
    ctx: &Ctx,
    actor: &str,
    roles: std::collections::BTreeSet<NodeRole>,
    labels: BTreeMap<String, String>,
    coordinator_id: Option<u64>,
    ttl: Duration,
) -> Result<CreatedJoinToken> {
    let id = crate::server::random_hex(8).map_err(|e| ApiError::internal("token generation", e))?;
    let secret = crate::server::random_hex(32).map_err(|e| ApiError::internal("token generation", e))?;
    let now = crate::time::now_ms();
    let token = JoinToken {
        id: id.clone(),
        roles,
        labels,
        secret_hash: crate::state::apikey::hash_secret(&secret),
        created_at_ms: now,
        expires_at_ms: now.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
        used_at_ms: None,
        used_by_node: None,
        coordinator_id,
        revoked_at_ms: None,
    };
    run(ctx, actor, Op::CreateJoinToken(token.clone())).await?;
    let ca_fingerprint = ctx.coordinator.read(|d| d.state.settings.as_ref().map(|s| s.ca_fingerprint.clone()));
    Ok(CreatedJoinToken {
        token: format!("bqj_{id}_{secret}"),
        ca_fingerprint: ca_fingerprint.unwrap_or_default(),
        join_token: token.redacted(),
    })
}

#[utoipa::path(post, path = "/api/v1/nodes/tokens", request_body = CreateJoinTokenBody,
    responses((status = 201, body = CreatedJoinToken), (status = 400, body = ErrorBody)), security(("api_key" = [])))]
async fn create_join_token(
    ctx: Ctx,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<CreatedJoinToken>)> {
    const ACTION: Action = Action::NodeTokenCreate;
    let caller = ctx.require(Need::Admin, ACTION, "jointoken").await?;
    let body: CreateJoinTokenBody = parse_body(&ctx, &caller.key_id, ACTION, "jointoken", body).await?;
    let parsed = (|| -> std::result::Result<_, String> {
        if body.roles.is_empty() {
            return Err("at least one role is required".into());
        }
        let ttl = token_ttl(body.ttl.as_deref())?;
        let labels = validate_selector(body.labels.clone().unwrap_or_default())?;
        Ok((ttl, labels))
    })();
    let (ttl, labels) = match parsed {
        Ok(p) => p,
        Err(msg) => return Err(ctx.reject(&caller.key_id, ACTION, "jointoken", ApiError::invalid(msg)).await),
    };
    let roles = body.roles.iter().copied().collect();
    let created = issue_join_token(&ctx, &caller.key_id, roles, labels, None, ttl).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCoordinatorTokenBody {
    /// The id the new coordinator will have (never a current or removed member's).
    pub id: u64,
    /// Default `1h`, at most 7 days.
    pub ttl: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/cluster/tokens", request_body = CreateCoordinatorTokenBody,
    responses((status = 201, body = CreatedJoinToken), (status = 409, body = ErrorBody)), security(("api_key" = [])))]
async fn create_coordinator_token(
    ctx: Ctx,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<CreatedJoinToken>)> {
    const ACTION: Action = Action::ClusterTokenCreate;
    let caller = ctx.require(Need::Admin, ACTION, "cluster").await?;
    let body: CreateCoordinatorTokenBody = parse_body(&ctx, &caller.key_id, ACTION, "cluster", body).await?;
    let target = format!("coordinator/{}", body.id);
    let checked = (|| -> std::result::Result<Duration, String> {
        if body.id == 0 {
            return Err("coordinator id must be 1 or greater".into());
        }
        let ttl = token_ttl(body.ttl.as_deref())?;
        ctx.coordinator.read(|d| {
            if d.state.retired_coordinators.contains(&body.id) {
                return Err(format!("coordinator id {} was removed and is never reused", body.id));
            }
            if d.membership.membership().get_node(&body.id).is_some() {
                return Err(format!("coordinator id {} is already a member", body.id));
            }
            Ok(ttl)
        })
    })();
    let ttl = match checked {
        Ok(t) => t,
        Err(msg) => {
            let err = ApiError::new(StatusCode::CONFLICT, "conflict", msg);
            return Err(ctx.reject(&caller.key_id, ACTION, &target, err).await);
        }
    };
    let created =
        issue_join_token(&ctx, &caller.key_id, Default::default(), BTreeMap::new(), Some(body.id), ttl).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(post, path = "/api/v1/nodes/{id}/{action}",
    params(("id" = u64, Path), ("action" = String, Path, description = "revoke, cordon or uncordon")),
    responses((status = 200, body = Node), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
async fn node_action(ctx: Ctx, Path((id, action)): Path<(u64, String)>) -> Result<Json<Node>> {
    let op = match action.as_str() {
        "revoke" => Op::RevokeNode { id },
        "cordon" => Op::CordonNode { id, cordoned: true },
        "uncordon" => Op::CordonNode { id, cordoned: false },
        _ => return Err(ApiError::not_found("no such node action")),
    };
    let caller = ctx.require(Need::Admin, op.describe().0, &format!("node/{id}")).await?;
    match run(&ctx, &caller.key_id, op).await? {
        Reply::Node(n) => Ok(Json(*n)),
        other => Err(ApiError::internal("node command", format!("unexpected reply {other:?}"))),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyBody {
    pub role: Role,
    /// Required for customer keys: the one tenant the key may touch.
    pub tenant: Option<String>,
    pub description: Option<String>,
    /// Lifetime such as `30d` or `12h`; no expiry when absent.
    pub expires_in: Option<String>,
}

/// A new key: `token` is shown this once and stored nowhere.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedApiKey {
    pub token: String,
    pub key: ApiKey,
}

#[utoipa::path(post, path = "/api/v1/apikeys", request_body = CreateApiKeyBody,
    responses((status = 201, body = CreatedApiKey), (status = 400, body = ErrorBody)), security(("api_key" = [])))]
async fn create_api_key(
    ctx: Ctx,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<CreatedApiKey>)> {
    const ACTION: Action = Action::ApiKeyCreate;
    let caller = ctx.require(Need::Admin, ACTION, "apikey").await?;
    let body: CreateApiKeyBody = parse_body(&ctx, &caller.key_id, ACTION, "apikey", body).await?;
    let parsed = (|| -> std::result::Result<_, String> {
        let tenant = body.tenant.as_deref().map(TenantName::parse).transpose().map_err(|e| e.to_string())?;
        let description = body.description.unwrap_or_default();
        if description.len() > 200 || description.chars().any(char::is_control) {
            return Err("description must be at most 200 printable characters".into());
        }
        let expires = match &body.expires_in {
            Some(d) => {
                let d = humantime::parse_duration(d).map_err(|e| format!("expires_in: {e}"))?;
                Some(crate::time::now_ms().saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
            }
            None => None,
        };
        Ok((tenant, description, expires))
    })();
    let (tenant, description, expires) = match parsed {
        Ok(p) => p,
        Err(msg) => return Err(ctx.reject(&caller.key_id, ACTION, "apikey", ApiError::invalid(msg)).await),
    };
    let (token, key) =
        new_api_key(body.role, tenant, description, expires).map_err(|e| ApiError::internal("key generation", e))?;
    match run(&ctx, &caller.key_id, Op::CreateApiKey(key)).await? {
        Reply::ApiKey(key) => Ok((StatusCode::CREATED, Json(CreatedApiKey { token, key: *key }))),
        other => Err(ApiError::internal("api key command", format!("unexpected reply {other:?}"))),
    }
}

#[utoipa::path(get, path = "/api/v1/apikeys", params(ReadParams), responses((status = 200, body = Vec<ApiKey>)),
    security(("api_key" = [])))]
async fn list_api_keys(ctx: Ctx, Query(params): Query<ReadParams>) -> Result<Json<Vec<ApiKey>>> {
    ctx.require(Need::Admin, Action::ApiKeyList, "apikeys").await?;
    barrier(&ctx, &params).await?;
    Ok(Json(ctx.coordinator.read(|d| d.state.api_keys.values().map(ApiKey::redacted).collect())))
}

#[utoipa::path(delete, path = "/api/v1/apikeys/{id}", params(("id" = String, Path)),
    responses((status = 200, body = ApiKey), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
async fn revoke_api_key(ctx: Ctx, Path(id): Path<String>) -> Result<Json<ApiKey>> {
    const ACTION: Action = Action::ApiKeyRevoke;
    let target = format!("apikey/{}", id.chars().take(32).collect::<String>().escape_debug());
    let caller = ctx.require(Need::Admin, ACTION, &target).await?;
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ctx
            .reject(&caller.key_id, ACTION, &target, ApiError::invalid("api key id must be 16 hex digits"))
            .await);
    }
    match run(&ctx, &caller.key_id, Op::RevokeApiKey { id }).await? {
        Reply::ApiKey(key) => Ok(Json(*key)),
        other => Err(ApiError::internal("api key command", format!("unexpected reply {other:?}"))),
    }
}

struct SecurityAddon;

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("bqk_{id}_{secret}").build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Berqenas coordinator API", description = "Tenants, API keys, audit and cluster membership."),
    paths(healthz, create_tenant, get_tenant, list_tenants, update_tenant, delete_tenant, tenant_lifecycle, tenant_audit,
        list_nodes, create_join_token, node_action, create_api_key, list_api_keys, revoke_api_key, list_audit, verify_audit, cluster_status,
        add_learner, promote, remove_member, create_coordinator_token, tokens::list_coordinator_tokens,
        tokens::revoke_coordinator_token, refusals::refusal_stats),
    components(schemas(ErrorBody, Tenant, CreatedTenant, CreateTenantBody, UpdateTenantBody, ApiKey, CreatedApiKey, CreateApiKeyBody,
        AuditEntry, AuditVerification, Break, ClusterStatus, Member, AddLearnerBody, PromoteBody, Node, JoinToken, CreateJoinTokenBody, CreatedJoinToken, CreateCoordinatorTokenBody,
        tokens::CoordinatorToken, crate::refusals::RefusalStats, crate::refusals::PendingSource)),
    modifiers(&SecurityAddon)
)]
pub struct ApiDoc;
