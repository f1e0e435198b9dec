//! Nodes over HTTP: list them, act on one (revoke, cordon, uncordon), and make the one-time join
//! tokens node agents (and, through `cluster`, new coordinators) present to get a certificate.

use super::auth::{Ctx, Need};
use super::dto::{parse_ttl, CreateJoinTokenBody, CreatedJoinToken, ErrorBody, NodeAction, NodeView, ReadQuery};
use super::error::ApiError;
use super::extract::{clipped, path, Body, PathOf, QueryOf, Scope, Validate};
use super::{barrier, Result};
use crate::state::action::Action;
use crate::state::names::validate_label_part;
use crate::state::node::{JoinToken, NodeRole};
use crate::state::tenant::MAX_SELECTOR_LABELS;
use crate::state::{Op, Reply};
use axum::http::StatusCode;
use axum::Json;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A join token request, checked: roles, lifetime and labels.
pub struct JoinTokenRequest {
    roles: BTreeSet<NodeRole>,
    ttl: Duration,
    labels: BTreeMap<String, String>,
}

/// Node labels: at most 16, each key and value a label part.
fn checked_labels(labels: BTreeMap<String, String>) -> std::result::Result<BTreeMap<String, String>, ApiError> {
    if labels.len() > MAX_SELECTOR_LABELS {
        return Err(ApiError::invalid(format!("at most {MAX_SELECTOR_LABELS} node labels")));
    }
    for (k, v) in &labels {
        validate_label_part(k).and_then(|()| validate_label_part(v)).map_err(|e| ApiError::invalid(e.to_string()))?;
    }
    Ok(labels)
}

impl Validate for CreateJoinTokenBody {
    type Valid = JoinTokenRequest;

    fn validate(self) -> std::result::Result<JoinTokenRequest, ApiError> {
        if self.roles.is_empty() {
            return Err(ApiError::invalid("at least one role is required"));
        }
        let ttl = parse_ttl(self.ttl.as_deref()).map_err(ApiError::invalid)?;
        let labels = checked_labels(self.labels.unwrap_or_default())?;
        Ok(JoinTokenRequest { roles: self.roles.into_iter().collect(), ttl, labels })
    }
}

#[utoipa::path(get, path = "/api/v1/nodes", params(ReadQuery),
    responses((status = 200, body = Vec<NodeView>), (status = 400, body = ErrorBody)), security(("api_key" = [])))]
pub(super) async fn list_nodes(ctx: Ctx, query: QueryOf<ReadQuery>) -> Result<Json<Vec<NodeView>>> {
    let scope = ctx.scope(Need::Admin, Action::NodeList, "nodes").await?;
    barrier(&ctx, scope.query(query).await?.consistency).await?;
    Ok(Json(ctx.coordinator.read(|d| d.state.nodes.values().map(NodeView::from).collect())))
}

/// Makes a one-time token (node roles, or a coordinator id), commits its hash through Raft and
/// returns the token, shown this once, with the CA fingerprint to pin.
pub(super) async fn issue_join_token(
    scope: &Scope<'_>,
    request: JoinTokenRequest,
    coordinator_id: Option<u64>,
) -> Result<CreatedJoinToken> {
    let id = crate::server::random_hex(8).map_err(|e| ApiError::internal("token generation", e))?;
    let secret = crate::server::random_hex(32).map_err(|e| ApiError::internal("token generation", e))?;
    let now = crate::time::now_ms();
    let token = JoinToken {
        id: id.clone(),
        roles: request.roles,
        labels: request.labels,
        secret_hash: crate::state::apikey::hash_secret(&secret),
        created_at_ms: now,
        expires_at_ms: now.saturating_add(u64::try_from(request.ttl.as_millis()).unwrap_or(u64::MAX)),
        used_at_ms: None,
        used_by_node: None,
        coordinator_id,
        revoked_at_ms: None,
    };
    scope.run(Op::CreateJoinToken(token.clone())).await?;
    let ca_fingerprint = scope.ctx.coordinator.read(|d| d.state.settings.as_ref().map(|s| s.ca_fingerprint.clone()));
    Ok(CreatedJoinToken {
        token: format!("bqj_{id}_{secret}"),
        ca_fingerprint: ca_fingerprint.unwrap_or_default(),
        join_token: (&token).into(),
    })
}

/// A coordinator join token's request: no roles or labels.
pub(super) fn coordinator_token_request(ttl: Duration) -> JoinTokenRequest {
    JoinTokenRequest { roles: BTreeSet::new(), ttl, labels: BTreeMap::new() }
}

#[utoipa::path(post, path = "/api/v1/nodes/tokens", request_body = CreateJoinTokenBody,
    responses((status = 201, body = CreatedJoinToken), (status = 400, body = ErrorBody)), security(("api_key" = [])))]
pub(super) async fn create_join_token(ctx: Ctx, body: Body) -> Result<(StatusCode, Json<CreatedJoinToken>)> {
    let scope = ctx.scope(Need::Admin, Action::NodeTokenCreate, "jointoken").await?;
    let request = scope.body::<CreateJoinTokenBody>(body).await?;
    Ok((StatusCode::CREATED, Json(issue_join_token(&scope, request, None).await?)))
}

#[utoipa::path(post, path = "/api/v1/nodes/{id}/{action}",
    params(("id" = u64, Path), ("action" = NodeAction, Path)),
    responses((status = 200, body = NodeView), (status = 400, description = "the id is not a number", body = ErrorBody),
        (status = 404, description = "no such node or action", body = ErrorBody),
        (status = 409, description = "the node is already revoked", body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn node_action(ctx: Ctx, raw: PathOf<(String, String)>) -> Result<Json<NodeView>> {
    let (raw_id, raw_action) = path(raw)?;
    let Ok(action) = serde_json::from_value::<NodeAction>(raw_action.into()) else {
        return Err(ApiError::not_found("no such node action"));
    };
    let audited = match action {
        NodeAction::Revoke => Action::NodeRevoke,
        NodeAction::Cordon => Action::NodeCordon,
        NodeAction::Uncordon => Action::NodeUncordon,
    };
    let scope = ctx.scope(Need::Admin, audited, clipped("node", &raw_id)).await?;
    let id = scope.check(raw_id.parse::<u64>().map_err(|_| ApiError::invalid("a node id is a whole number"))).await?;
    let op = match action {
        NodeAction::Revoke => Op::RevokeNode { id },
        NodeAction::Cordon => Op::CordonNode { id, cordoned: true },
        NodeAction::Uncordon => Op::CordonNode { id, cordoned: false },
    };
    match scope.run(op).await? {
        Reply::Node(n) => Ok(Json(NodeView::from(&*n))),
        other => Err(ApiError::internal("node command", format!("unexpected reply {other:?}"))),
    }
}
