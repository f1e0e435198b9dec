//! Cluster membership over HTTP: status, add a learner (after asking the address which id
//! answers), promote, remove; and the coordinator join tokens a new member presents (create, list
//! without their secret, revoke while unused). Each change is recorded in the audit trail.

use super::apikeys::is_hex_id;
use super::auth::{Ctx, Need};
use super::dto::{
    parse_ttl, AddLearnerBody, ClusterStatus, CoordinatorToken, CreateCoordinatorTokenBody, CreatedJoinToken,
    ErrorBody, Member, PromoteBody, ReadQuery,
};
use super::error::ApiError;
use super::extract::{clipped, path, Body, PathOf, QueryOf, Scope};
use super::nodes::{coordinator_token_request, issue_join_token};
use super::{barrier, Result};
use crate::raft::CoordinatorNode;
use crate::server::Coordinator;
use crate::state::action::Action;
use crate::state::{Op, Reply};
use axum::http::StatusCode;
use axum::Json;
use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::ChangeMembers;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

fn conflict(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "conflict", message)
}

#[utoipa::path(get, path = "/api/v1/cluster", responses((status = 200, body = ClusterStatus)), security(("api_key" = [])))]
pub(super) async fn cluster_status(ctx: Ctx) -> Result<Json<ClusterStatus>> {
    ctx.scope(Need::AuditRead, Action::ClusterStatus, "cluster").await?;
    Ok(Json(status_of(&ctx.coordinator)))
}

fn status_of(c: &Coordinator) -> ClusterStatus {
    let m = c.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let members = membership
        .nodes()
        .map(|(id, n)| Member {
            id: *id,
            raft_addr: n.raft_addr.clone(),
            api_addr: n.api_addr.clone(),
            voter: voters.contains(id),
        })
        .collect();
    let (settings, tenants, audit_entries) =
        c.read(|d| (d.state.settings.clone(), d.state.tenants.len(), d.state.audit.len()));
    let audit_entries = usize::try_from(audit_entries).unwrap_or(usize::MAX);
    ClusterStatus {
        node_id: c.config.id,
        state: format!("{:?}", m.state),
        leader_id: m.current_leader,
        term: m.current_term,
        last_log_index: m.last_log_index,
        last_applied: m.last_applied.map(|l| l.index),
        snapshot_index: m.snapshot.map(|l| l.index),
        purged_index: m.purged.map(|l| l.index),
        members,
        cluster_id: settings.as_ref().map(|s| s.cluster_id.clone()),
        vpn_pool: settings.as_ref().map(|s| s.vpn_pool.to_string()),
        ca_fingerprint: settings.map(|s| s.ca_fingerprint),
        tenants,
        audit_entries,
    }
}

fn validate_host_port(what: &str, raw: &str) -> std::result::Result<(), ApiError> {
    let refused = |why: &str| Err(conflict(format!("{what} {raw:?} {why}")));
    let Some((host, port)) = raw.rsplit_once(':') else { return refused("must be host:port") };
    if port.parse::<u16>().ok().filter(|p| *p != 0).is_none() {
        return refused("has an invalid port");
    }
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
    if !host_ok {
        return refused("has an invalid host");
    }
    Ok(())
}

/// Maps a membership-change failure; a follower answers with the leader's API address.
fn membership_error(c: &Coordinator, e: RaftError<u64, ClientWriteError<u64, CoordinatorNode>>) -> ApiError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
            ApiError::not_leader(c.leader().map(|(_, n)| n.api_addr))
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(ChangeMembershipError::InProgress(_))) => {
            conflict("another membership change is in progress; retry")
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => conflict(e.to_string()),
        RaftError::Fatal(e) => ApiError::internal("membership change", e),
    }
}

async fn record_membership(scope: &Scope<'_>, node_id: u64, details: BTreeMap<String, String>) -> Result<()> {
    scope.run(Op::Membership { action: scope.action, node_id, details }).await.map(|_| ())
}

#[utoipa::path(post, path = "/api/v1/cluster/learners", request_body = AddLearnerBody,
    responses((status = 200, body = ClusterStatus), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 421, description = "send to the leader named in the body", body = ErrorBody),
        (status = 502, description = "the new coordinator cannot be reached", body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn add_learner(ctx: Ctx, body: Body) -> Result<Json<ClusterStatus>> {
    let mut scope = ctx.scope(Need::Admin, Action::ClusterAddLearner, "cluster").await?;
    let body: AddLearnerBody = scope.raw_body(body).await?;
    scope.target = format!("coordinator/{}", body.id);
    let c = ctx.coordinator.clone();
    let checked = (|| {
        if body.id == 0 {
            return Err(conflict("node id must be 1 or greater"));
        }
        validate_host_port("raft_addr", &body.raft_addr)?;
        validate_host_port("api_addr", &body.api_addr)?;
        if let Some(n) = &body.node_addr {
            validate_host_port("node_addr", n)?;
        }
        c.read(|d| {
            if d.state.retired_coordinators.contains(&body.id) {
                return Err(conflict(format!("node id {} was removed from this cluster and is never reused", body.id)));
            }
            if d.membership.membership().get_node(&body.id).is_some() {
                return Err(conflict(format!("node id {} is already a member", body.id)));
            }
            if d.membership.membership().nodes().any(|(_, n)| n.raft_addr == body.raft_addr) {
                return Err(conflict(format!("raft address {} already belongs to a member", body.raft_addr)));
            }
            Ok(())
        })
    })();
    scope.check(checked).await?;
    if c.raft.current_leader().await != Some(c.config.id) {
        return Err(ApiError::not_leader(c.leader().map(|(_, n)| n.api_addr)));
    }
    let hello = match c.peers.hello(&body.raft_addr, Duration::from_secs(3)).await {
        Ok((id, _)) if id == body.id => Ok(()),
        Ok((other, _)) => Err(conflict(format!("{} answers as node {other}, not {}", body.raft_addr, body.id))),
        Err(e) => {
            Err(ApiError::new(StatusCode::BAD_GATEWAY, "unreachable", format!("cannot reach {}: {e}", body.raft_addr)))
        }
    };
    scope.check(hello).await?;
    let node = CoordinatorNode {
        raft_addr: body.raft_addr.clone(),
        api_addr: body.api_addr.clone(),
        node_addr: body.node_addr.clone().unwrap_or_default(),
    };
    c.raft.add_learner(body.id, node, true).await.map_err(|e| membership_error(&c, e))?;
    let details = [("raft_addr".to_string(), body.raft_addr), ("api_addr".to_string(), body.api_addr)].into();
    record_membership(&scope, body.id, details).await?;
    Ok(Json(status_of(&c)))
}

#[utoipa::path(post, path = "/api/v1/cluster/voters", request_body = PromoteBody,
    responses((status = 200, body = ClusterStatus), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 421, body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn promote(ctx: Ctx, body: Body) -> Result<Json<ClusterStatus>> {
    let mut scope = ctx.scope(Need::Admin, Action::ClusterPromote, "cluster").await?;
    let body: PromoteBody = scope.raw_body(body).await?;
    scope.target = format!("coordinator/{}", body.id);
    let c = ctx.coordinator.clone();
    if !c.read(|d| d.membership.membership().get_node(&body.id).is_some()) {
        let err = ApiError::not_found(format!("node {} is not a member; add it as a learner first", body.id));
        return Err(scope.refuse(err).await);
    }
    c.raft
        .change_membership(ChangeMembers::AddVoterIds([body.id].into()), false)
        .await
        .map_err(|e| membership_error(&c, e))?;
    record_membership(&scope, body.id, BTreeMap::new()).await?;
    Ok(Json(status_of(&c)))
}

#[utoipa::path(delete, path = "/api/v1/cluster/members/{id}", params(("id" = u64, Path)),
    responses((status = 200, body = ClusterStatus), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 421, body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn remove_member(ctx: Ctx, raw: PathOf<String>) -> Result<Json<ClusterStatus>> {
    let raw = path(raw)?;
    let scope = ctx.scope(Need::Admin, Action::ClusterRemove, clipped("coordinator", &raw)).await?;
    let id = scope.check(raw.parse::<u64>().map_err(|_| ApiError::invalid("a node id is a whole number"))).await?;
    let c = ctx.coordinator.clone();
    let (known, voter, voters) = c.read(|d| {
        let m = d.membership.membership();
        (m.get_node(&id).is_some(), m.voter_ids().any(|v| v == id), m.voter_ids().count())
    });
    if !known {
        return Err(scope.refuse(ApiError::not_found(format!("node {id} is not a member"))).await);
    }
    if voter && voters == 1 {
        return Err(scope.refuse(conflict("cannot remove the last voter")).await);
    }
    let change = if voter { ChangeMembers::RemoveVoters([id].into()) } else { ChangeMembers::RemoveNodes([id].into()) };
    c.raft.change_membership(change, false).await.map_err(|e| membership_error(&c, e))?;
    record_membership(&scope, id, BTreeMap::new()).await?;
    Ok(Json(status_of(&c)))
}

#[utoipa::path(post, path = "/api/v1/cluster/tokens", request_body = CreateCoordinatorTokenBody,
    responses((status = 201, body = CreatedJoinToken), (status = 400, body = ErrorBody),
        (status = 409, description = "the id is a current or removed member's", body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn create_coordinator_token(ctx: Ctx, body: Body) -> Result<(StatusCode, Json<CreatedJoinToken>)> {
    let mut scope = ctx.scope(Need::Admin, Action::ClusterTokenCreate, "cluster").await?;
    let body: CreateCoordinatorTokenBody = scope.raw_body(body).await?;
    scope.target = format!("coordinator/{}", body.id);
    let id = body.id;
    let checked = parse_ttl(body.ttl.as_deref()).map_err(ApiError::invalid).and_then(|ttl| {
        if id == 0 {
            return Err(ApiError::invalid("coordinator id must be 1 or greater"));
        }
        ctx.coordinator.read(|d| {
            if d.state.retired_coordinators.contains(&id) {
                return Err(conflict(format!("coordinator id {id} was removed and is never reused")));
            }
            if d.membership.membership().get_node(&id).is_some() {
                return Err(conflict(format!("coordinator id {id} is already a member")));
            }
            Ok(ttl)
        })
    });
    let ttl = scope.check(checked).await?;
    let created = issue_join_token(&scope, coordinator_token_request(ttl), Some(id)).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(get, path = "/api/v1/cluster/tokens", params(ReadQuery),
    responses((status = 200, body = Vec<CoordinatorToken>), (status = 400, body = ErrorBody)), security(("api_key" = [])))]
pub(super) async fn list_coordinator_tokens(
    ctx: Ctx,
    query: QueryOf<ReadQuery>,
) -> Result<Json<Vec<CoordinatorToken>>> {
    let scope = ctx.scope(Need::Admin, Action::ClusterTokenList, "cluster").await?;
    barrier(&ctx, scope.query(query).await?.consistency).await?;
    let now = crate::time::now_ms();
    let mut tokens: Vec<CoordinatorToken> =
        ctx.coordinator.read(|d| d.state.join_tokens.values().filter_map(|t| CoordinatorToken::of(t, now)).collect());
    tokens.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
    Ok(Json(tokens))
}

#[utoipa::path(delete, path = "/api/v1/cluster/tokens/{id}", params(("id" = String, Path)),
    responses((status = 200, body = CoordinatorToken), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "already used or revoked", body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn revoke_coordinator_token(ctx: Ctx, raw: PathOf<String>) -> Result<Json<CoordinatorToken>> {
    let id = path(raw)?;
    let scope = ctx.scope(Need::Admin, Action::ClusterTokenRevoke, clipped("jointoken", &id)).await?;
    if !is_hex_id(&id) {
        return Err(scope.refuse(ApiError::invalid("a join token id is 16 hex digits (the part after bqj_)")).await);
    }
    let is_coordinator_token =
        ctx.coordinator.read(|d| d.state.join_tokens.get(&id).map(|t| t.coordinator_id.is_some()));
    if is_coordinator_token != Some(true) {
        return Err(scope.refuse(ApiError::not_found(format!("coordinator join token {id} not found"))).await);
    }
    match scope.run(Op::RevokeJoinToken { id: id.clone() }).await? {
        Reply::Done => {}
        other => return Err(ApiError::internal("join token command", format!("unexpected reply {other:?}"))),
    }
    let now = crate::time::now_ms();
    ctx.coordinator
        .read(|d| d.state.join_tokens.get(&id).and_then(|t| CoordinatorToken::of(t, now)))
        .map(Json)
        .ok_or_else(|| ApiError::internal("join token revoke", "revoked token vanished"))
}
