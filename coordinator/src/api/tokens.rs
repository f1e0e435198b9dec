//! Coordinator join tokens after they are made: list them (never their secret) and revoke one
//! that has not been used, so a token handed out by mistake cannot admit a coordinator.

use super::auth::{Ctx, Need};
use super::error::{ApiError, ErrorBody};
use super::{barrier, run, ReadParams, Result};
use crate::state::action::Action;
use crate::state::node::JoinToken;
use crate::state::{Op, Reply};
use axum::extract::{Path, Query};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A coordinator join token as listed: ids and times only, never the secret or its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CoordinatorToken {
    pub id: String,
    /// The id the coordinator joining with it gets.
    pub coordinator_id: u64,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    pub used_at_ms: Option<u64>,
    pub revoked_at_ms: Option<u64>,
    /// `unused`, `used`, `revoked` or `expired`.
    pub status: String,
}

impl CoordinatorToken {
    /// The listing of `token` at `now_ms`, if it is a coordinator token.
    pub fn of(token: &JoinToken, now_ms: u64) -> Option<Self> {
        let coordinator_id = token.coordinator_id?;
        let status = match (token.used_at_ms, token.revoked_at_ms) {
            (Some(_), _) => "used",
            (None, Some(_)) => "revoked",
            (None, None) if now_ms >= token.expires_at_ms => "expired",
            (None, None) => "unused",
        };
        Some(Self {
            id: token.id.clone(),
            coordinator_id,
            created_at_ms: token.created_at_ms,
            expires_at_ms: token.expires_at_ms,
            used_at_ms: token.used_at_ms,
            revoked_at_ms: token.revoked_at_ms,
            status: status.into(),
        })
    }
}

#[utoipa::path(get, path = "/api/v1/cluster/tokens", params(ReadParams),
    responses((status = 200, body = Vec<CoordinatorToken>)), security(("api_key" = [])))]
pub(super) async fn list_coordinator_tokens(
    ctx: Ctx,
    Query(params): Query<ReadParams>,
) -> Result<Json<Vec<CoordinatorToken>>> {
    ctx.require(Need::Admin, Action::ClusterTokenList, "cluster").await?;
    barrier(&ctx, &params).await?;
    let now = crate::time::now_ms();
    let mut tokens: Vec<CoordinatorToken> =
        ctx.coordinator.read(|d| d.state.join_tokens.values().filter_map(|t| CoordinatorToken::of(t, now)).collect());
    tokens.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
    Ok(Json(tokens))
}

#[utoipa::path(delete, path = "/api/v1/cluster/tokens/{id}", params(("id" = String, Path)),
    responses((status = 200, body = CoordinatorToken), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn revoke_coordinator_token(ctx: Ctx, Path(id): Path<String>) -> Result<Json<CoordinatorToken>> {
    const ACTION: Action = Action::ClusterTokenRevoke;
    let target = format!("jointoken/{}", id.chars().take(32).collect::<String>().escape_debug());
    let caller = ctx.require(Need::Admin, ACTION, &target).await?;
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        let err = ApiError::invalid("a join token id is 16 hex digits (the part after bqj_)");
        return Err(ctx.reject(&caller.key_id, ACTION, &target, err).await);
    }
    let is_coordinator_token =
        ctx.coordinator.read(|d| d.state.join_tokens.get(&id).map(|t| t.coordinator_id.is_some()));
    if is_coordinator_token != Some(true) {
        let err = ApiError::not_found(format!("coordinator join token {id} not found"));
        return Err(ctx.reject(&caller.key_id, ACTION, &target, err).await);
    }
    match run(&ctx, &caller.key_id, Op::RevokeJoinToken { id: id.clone() }).await? {
        Reply::Done => {}
        other => return Err(ApiError::internal("join token command", format!("unexpected reply {other:?}"))),
    }
    let now = crate::time::now_ms();
    ctx.coordinator
        .read(|d| d.state.join_tokens.get(&id).and_then(|t| CoordinatorToken::of(t, now)))
        .map(Json)
        .ok_or_else(|| ApiError::internal("join token revoke", "revoked token vanished"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(coordinator_id: Option<u64>) -> JoinToken {
        JoinToken {
            id: "00000000000000cc".into(),
            roles: Default::default(),
            labels: Default::default(),
            secret_hash: "hash".into(),
            created_at_ms: 1,
            expires_at_ms: 100,
            used_at_ms: None,
            used_by_node: None,
            coordinator_id,
            revoked_at_ms: None,
        }
    }

    #[test]
    fn listing_shows_status_and_never_the_hash() {
        assert_eq!(CoordinatorToken::of(&token(None), 0), None, "node tokens are not coordinator tokens");
        let unused = CoordinatorToken::of(&token(Some(4)), 50).expect("coordinator token");
        assert_eq!((unused.coordinator_id, unused.status.as_str()), (4, "unused"));
        assert!(!serde_json::to_string(&unused).expect("json").contains("hash"));
        assert_eq!(CoordinatorToken::of(&token(Some(4)), 100).map(|t| t.status), Some("expired".into()));
        let revoked = JoinToken { revoked_at_ms: Some(5), ..token(Some(4)) };
        assert_eq!(CoordinatorToken::of(&revoked, 50).map(|t| t.status), Some("revoked".into()));
        let used = JoinToken { used_at_ms: Some(6), ..token(Some(4)) };
        assert_eq!(CoordinatorToken::of(&used, 500).map(|t| t.status), Some("used".into()));
    }
}
