//! Cluster membership over HTTP: status, add a learner (after asking the address which id
//! answers), promote, remove; each recorded in the audit trail.

use super::*;
use crate::state::action::Action;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Member {
    pub id: u64,
    pub raft_addr: String,
    pub api_addr: String,
    pub voter: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClusterStatus {
    /// The coordinator that answered.
    pub node_id: u64,
    pub state: String,
    pub leader_id: Option<u64>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    /// Last log index covered by this node's current snapshot.
    pub snapshot_index: Option<u64>,
    /// Log entries up to here are purged from this node's log.
    pub purged_index: Option<u64>,
    pub members: Vec<Member>,
    pub cluster_id: Option<String>,
    pub vpn_pool: Option<String>,
    pub ca_fingerprint: Option<String>,
    pub tenants: usize,
    pub audit_entries: usize,
}

#[utoipa::path(get, path = "/api/v1/cluster", responses((status = 200, body = ClusterStatus)), security(("api_key" = [])))]
pub(super) async fn cluster_status(ctx: Ctx) -> Result<Json<ClusterStatus>> {
    ctx.require(Need::AuditRead, Action::ClusterStatus, "cluster").await?;
    let c = &ctx.coordinator;
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
    Ok(Json(ClusterStatus {
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
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddLearnerBody {
    pub id: u64,
    /// host:port of the new coordinator's Raft listener.
    pub raft_addr: String,
    /// host:port of its REST API.
    pub api_addr: String,
    /// host:port of its node-agent listener.
    #[serde(default)]
    pub node_addr: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteBody {
    pub id: u64,
}

pub(super) fn validate_host_port(what: &str, raw: &str) -> std::result::Result<(), String> {
    let (host, port) = raw.rsplit_once(':').ok_or_else(|| format!("{what} {raw:?} must be host:port"))?;
    port.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| format!("{what} {raw:?} has an invalid port"))?;
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
    if !host_ok {
        return Err(format!("{what} {raw:?} has an invalid host"));
    }
    Ok(())
}

/// Maps a membership-change failure; a follower answers with the leader's API address.
pub(super) fn membership_error(c: &Coordinator, e: RaftError<u64, ClientWriteError<u64, CoordinatorNode>>) -> ApiError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
            ApiError::not_leader(c.leader().map(|(_, n)| n.api_addr))
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(ChangeMembershipError::InProgress(_))) => {
            ApiError::new(StatusCode::CONFLICT, "conflict", "another membership change is in progress; retry")
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
        }
        RaftError::Fatal(e) => ApiError::internal("membership change", e),
    }
}

pub(super) async fn record_membership(
    ctx: &Ctx,
    actor: &str,
    action: Action,
    node_id: u64,
    details: BTreeMap<String, String>,
) -> Result<()> {
    run(ctx, actor, Op::Membership { action, node_id, details }).await.map(|_| ())
}

#[utoipa::path(post, path = "/api/v1/cluster/learners", request_body = AddLearnerBody,
    responses((status = 200, body = ClusterStatus), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 421, description = "send to the leader named in the body", body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn add_learner(
    ctx: Ctx,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Json<ClusterStatus>> {
    const ACTION: Action = Action::ClusterAddLearner;
    let caller = ctx.require(Need::Admin, ACTION, "cluster").await?;
    let body: AddLearnerBody = parse_body(&ctx, &caller.key_id, ACTION, "cluster", body).await?;
    let target = format!("coordinator/{}", body.id);
    let c = ctx.coordinator.clone();
    let invalid = (|| -> std::result::Result<(), String> {
        if body.id == 0 {
            return Err("node id must be 1 or greater".into());
        }
        validate_host_port("raft_addr", &body.raft_addr)?;
        validate_host_port("api_addr", &body.api_addr)?;
        if let Some(n) = &body.node_addr {
            validate_host_port("node_addr", n)?;
        }
        c.read(|d| {
            if d.state.retired_coordinators.contains(&body.id) {
                return Err(format!("node id {} was removed from this cluster and is never reused", body.id));
            }
            if d.membership.membership().get_node(&body.id).is_some() {
                return Err(format!("node id {} is already a member", body.id));
            }
            if d.membership.membership().nodes().any(|(_, n)| n.raft_addr == body.raft_addr) {
                return Err(format!("raft address {} already belongs to a member", body.raft_addr));
            }
            Ok(())
        })
    })();
    if let Err(msg) = invalid {
        return Err(ctx
            .reject(&caller.key_id, ACTION, &target, ApiError::new(StatusCode::CONFLICT, "conflict", msg))
            .await);
    }
    if c.raft.current_leader().await != Some(c.config.id) {
        return Err(ApiError::not_leader(c.leader().map(|(_, n)| n.api_addr)));
    }
    match c.peers.hello(&body.raft_addr, Duration::from_secs(3)).await {
        Ok(id) if id == body.id => {}
        Ok(other) => {
            let msg = format!("{} answers as node {other}, not {}", body.raft_addr, body.id);
            return Err(ctx
                .reject(&caller.key_id, ACTION, &target, ApiError::new(StatusCode::CONFLICT, "conflict", msg))
                .await);
        }
        Err(e) => {
            let msg = format!("cannot reach {}: {e}", body.raft_addr);
            return Err(ctx
                .reject(&caller.key_id, ACTION, &target, ApiError::new(StatusCode::BAD_GATEWAY, "unreachable", msg))
                .await);
        }
    }
    let node = CoordinatorNode {
        raft_addr: body.raft_addr.clone(),
        api_addr: body.api_addr.clone(),
        node_addr: body.node_addr.clone().unwrap_or_default(),
    };
    c.raft.add_learner(body.id, node, true).await.map_err(|e| membership_error(&c, e))?;
    let details = [("raft_addr".to_string(), body.raft_addr), ("api_addr".to_string(), body.api_addr)].into();
    record_membership(&ctx, &caller.key_id, ACTION, body.id, details).await?;
    cluster_status(ctx).await
}

#[utoipa::path(post, path = "/api/v1/cluster/voters", request_body = PromoteBody,
    responses((status = 200, body = ClusterStatus), (status = 409, body = ErrorBody), (status = 421, body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn promote(ctx: Ctx, body: std::result::Result<Bytes, BytesRejection>) -> Result<Json<ClusterStatus>> {
    const ACTION: Action = Action::ClusterPromote;
    let caller = ctx.require(Need::Admin, ACTION, "cluster").await?;
    let body: PromoteBody = parse_body(&ctx, &caller.key_id, ACTION, "cluster", body).await?;
    let c = ctx.coordinator.clone();
    let target = format!("coordinator/{}", body.id);
    let known = c.read(|d| d.membership.membership().get_node(&body.id).is_some());
    if !known {
        let err = ApiError::not_found(format!("node {} is not a member; add it as a learner first", body.id));
        return Err(ctx.reject(&caller.key_id, ACTION, &target, err).await);
    }
    c.raft
        .change_membership(ChangeMembers::AddVoterIds([body.id].into()), false)
        .await
        .map_err(|e| membership_error(&c, e))?;
    record_membership(&ctx, &caller.key_id, ACTION, body.id, BTreeMap::new()).await?;
    cluster_status(ctx).await
}

#[utoipa::path(delete, path = "/api/v1/cluster/members/{id}", params(("id" = u64, Path)),
    responses((status = 200, body = ClusterStatus), (status = 404, body = ErrorBody), (status = 421, body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn remove_member(ctx: Ctx, Path(id): Path<u64>) -> Result<Json<ClusterStatus>> {
    const ACTION: Action = Action::ClusterRemove;
    let target = format!("coordinator/{id}");
    let caller = ctx.require(Need::Admin, ACTION, &target).await?;
    let c = ctx.coordinator.clone();
    let (known, voter, voters) = c.read(|d| {
        let m = d.membership.membership();
        (m.get_node(&id).is_some(), m.voter_ids().any(|v| v == id), m.voter_ids().count())
    });
    if !known {
        return Err(ctx
            .reject(&caller.key_id, ACTION, &target, ApiError::not_found(format!("node {id} is not a member")))
            .await);
    }
    if voter && voters == 1 {
        let err = ApiError::new(StatusCode::CONFLICT, "conflict", "cannot remove the last voter");
        return Err(ctx.reject(&caller.key_id, ACTION, &target, err).await);
    }
    let change = if voter { ChangeMembers::RemoveVoters([id].into()) } else { ChangeMembers::RemoveNodes([id].into()) };
    c.raft.change_membership(change, false).await.map_err(|e| membership_error(&c, e))?;
    record_membership(&ctx, &caller.key_id, ACTION, id, BTreeMap::new()).await?;
    cluster_status(ctx).await
}
