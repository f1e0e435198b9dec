//! The Raft transport server: receives peers' RPCs and hands them to the local Raft node.
//! Every RPC but `Hello` must come from a current voter or learner (checked per call, so a
//! removed coordinator on a still-open channel is refused at once), from the coordinator its
//! certificate names, to this node's id. Forwarded writes that act with an API key must say so:
//! the state machine re-checks that key when it applies them. While snapshot chunks arrive,
//! this node does not start elections (`SnapshotQuiet`).

use super::propose::{ProposeError, ProposeFailure, Proposer};
use super::{CoordinatorNode, Raft};
use crate::state::{Command, Op};
use berqenas_proto::raft::{raft_server, RaftReply, RaftRequest};
use serde::{de::DeserializeOwned, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status};

pub struct RaftService {
    pub id: u64,
    pub raft: Raft,
    /// Forwarded writes join this node's own batches.
    pub proposer: Proposer,
    quiet: SnapshotQuiet,
}

impl RaftService {
    pub fn new(id: u64, raft: Raft, proposer: Proposer) -> Self {
        Self { id, raft, proposer, quiet: SnapshotQuiet::default() }
    }
}

/// How long elections stay off after the last snapshot chunk arrived: longer than the leader
/// takes between two chunks.
const SNAPSHOT_QUIET: Duration = Duration::from_secs(3);

/// Keeps a follower that is receiving a snapshot from starting elections. openraft 0.9 refreshes
/// a follower's election timer only with a snapshot's last chunk, and sends it no heartbeats
/// while the chunks go out, so a follower receiving a snapshot that takes longer than an election
/// timeout (hundreds of MB of audit trail) would elect itself, depose the sending leader, and
/// make it start over from the first chunk, forever. Elections stay off while a chunk is being
/// handled (the last one's reply waits for the install) and until `SNAPSHOT_QUIET` after it.
#[derive(Default, Clone)]
struct SnapshotQuiet(Arc<Mutex<Quiet>>);

#[derive(Default)]
struct Quiet {
    in_flight: u32,
    last: Option<Instant>,
    watching: bool,
}

/// Held while one chunk is handled.
struct Chunk(SnapshotQuiet);

impl Drop for Chunk {
    fn drop(&mut self) {
        if let Ok(mut q) = self.0 .0.lock() {
            q.in_flight = q.in_flight.saturating_sub(1);
            q.last = Some(Instant::now());
        }
    }
}

impl SnapshotQuiet {
    fn chunk(&self, raft: &Raft) -> Chunk {
        let Ok(mut q) = self.0.lock() else { return Chunk(self.clone()) };
        q.in_flight += 1;
        q.last = Some(Instant::now());
        if !q.watching {
            q.watching = true;
            raft.runtime_config().elect(false);
            tracing::info!("receiving a snapshot: no elections until it is in");
            let (quiet, raft) = (self.clone(), raft.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    let Ok(mut q) = quiet.0.lock() else { break };
                    if q.in_flight == 0 && q.last.is_none_or(|t| t.elapsed() > SNAPSHOT_QUIET) {
                        q.watching = false;
                        break;
                    }
                }
                raft.runtime_config().elect(true);
            });
        }
        Chunk(self.clone())
    }
}

fn decode<T: DeserializeOwned>(req: &RaftRequest) -> Result<T, Status> {
    serde_json::from_slice(&req.payload).map_err(|e| Status::invalid_argument(format!("undecodable payload: {e}")))
}

fn reply<T: Serialize>(value: &T) -> Result<Response<RaftReply>, Status> {
    let payload = serde_json::to_vec(value).map_err(|e| Status::internal(format!("encode reply: {e}")))?;
    Ok(Response::new(RaftReply { payload, ops_level: 0 }))
}

/// The coordinator id in the verified client certificate.
fn peer_coordinator<T>(request: &Request<T>) -> Result<u64, Status> {
    let certs = request.peer_certs().ok_or_else(|| Status::unauthenticated("a coordinator certificate is required"))?;
    let leaf = certs.first().ok_or_else(|| Status::unauthenticated("a coordinator certificate is required"))?;
    match berqenas_pki::peer_identity(leaf) {
        Ok(berqenas_pki::Identity::Coordinator(id)) => Ok(id),
        Ok(other) => Err(Status::permission_denied(format!("{other} may not speak raft"))),
        Err(e) => Err(Status::unauthenticated(e.to_string())),
    }
}

/// Whether coordinator `peer` may send Raft RPCs to a node holding `membership` (openraft's
/// effective configuration: the newest one in the log, committed or not, so a removal counts
/// here as soon as it is appended). Voters and learners of every joint half may. A node that
/// holds no membership at all is a new coordinator waiting to be added: it has no state to
/// protect, and its first entries come from the leader that adds it, whatever its id.
pub fn admits(membership: &openraft::Membership<u64, CoordinatorNode>, peer: u64) -> bool {
    let mut nodes = membership.nodes().peekable();
    nodes.peek().is_none() || membership.get_node(&peer).is_some()
}

/// How often one refused peer is logged (a removed coordinator retries elections every second).
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);
static LAST_LOGGED: Mutex<BTreeMap<u64, Instant>> = Mutex::new(BTreeMap::new());

fn log_refusal(peer: u64, rpc: &str) {
    let Ok(mut last) = LAST_LOGGED.lock() else { return };
    let now = Instant::now();
    if last.get(&peer).is_some_and(|t| now.duration_since(*t) < REFUSAL_LOG_EVERY) {
        return;
    }
    if last.len() > 1024 {
        last.clear();
    }
    last.insert(peer, now);
    tracing::warn!(peer, rpc, "refused raft calls from a coordinator that is not a member (logged once a minute)");
}

impl RaftService {
    /// The request must come from a current member, from the coordinator its certificate
    /// names, to this node.
    fn checked(&self, request: Request<RaftRequest>, rpc: &str) -> Result<RaftRequest, Status> {
        let peer = peer_coordinator(&request)?;
        let req = request.into_inner();
        if req.from != peer {
            tracing::warn!(claimed = req.from, certificate = peer, "refused raft request with a forged sender");
            return Err(Status::permission_denied(format!(
                "certificate is coordinator {peer}, request claims {}",
                req.from
            )));
        }
        self.check(&req)?;
        let member = admits(self.raft.metrics().borrow().membership_config.membership(), peer);
        if !member {
            log_refusal(peer, rpc);
            return Err(Status::permission_denied(format!(
                "coordinator {peer} is not a voter or learner of this cluster"
            )));
        }
        Ok(req)
    }

    fn check(&self, req: &RaftRequest) -> Result<(), Status> {
        if req.target != self.id {
            tracing::warn!(from = req.from, target = req.target, "refused raft request meant for another node");
            return Err(Status::failed_precondition(format!("this is coordinator {}, not {}", self.id, req.target)));
        }
        if req.from == self.id {
            return Err(Status::failed_precondition("a coordinator cannot send raft requests to itself"));
        }
        Ok(())
    }
}

/// What a member may forward: never a bootstrap (`init` commits it on a lone voter), and a write
/// only an admin key may ask for must name the key and role it acts with, so the state machine
/// can re-check them at apply.
pub fn forwardable(cmd: &Command) -> Result<(), Status> {
    if let Op::Bootstrap { .. } = cmd.op {
        return Err(Status::permission_denied("a bootstrap is never forwarded"));
    }
    if cmd.op.needs_key() && cmd.meta.key_role.is_none() && cmd.meta.user_generation.is_none() {
        return Err(Status::permission_denied(format!(
            "a forwarded {} must name the API key it acts with",
            cmd.op.describe().0
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl raft_server::Raft for RaftService {
    async fn append_entries(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let req = self.checked(request, "append_entries")?;
        reply(&self.raft.append_entries(decode(&req)?).await)
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let req = self.checked(request, "vote")?;
        reply(&self.raft.vote(decode(&req)?).await)
    }

    async fn install_snapshot(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let req = self.checked(request, "install_snapshot")?;
        let _chunk = self.quiet.chunk(&self.raft);
        reply(&self.raft.install_snapshot(decode(&req)?).await)
    }

    async fn forward(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let req = self.checked(request, "forward")?;
        let cmd: Command = decode(&req)?;
        forwardable(&cmd)?;
        match self.proposer.write(cmd).await {
            Ok(r) => reply(&Ok::<_, ProposeError>(r)),
            Err(ProposeFailure::Raft(e)) => reply(&Err::<crate::state::Response, _>(*e)),
            // The forwarding coordinator takes this as a lost reply (its own unknown outcome).
            Err(ProposeFailure::Unsettled) => Err(Status::unavailable(
                "the leader stepped down with this write in flight: whether it was applied is unknown",
            )),
        }
    }

    async fn read_index(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        self.checked(request, "read_index")?;
        let result: Result<Option<u64>, String> = match self.raft.ensure_linearizable().await {
            Ok(log_id) => Ok(log_id.map(|l| l.index)),
            Err(e) => Err(e.to_string()),
        };
        reply(&result)
    }

    /// Answers which id this node is, to any coordinator of the cluster CA: `add-learner` asks it
    /// before the address is a member. It runs nothing and tells what the server certificate
    /// already says, and which Raft ops this release knows (`state::OPS_LEVEL`).
    async fn hello(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        peer_coordinator(&request)?;
        let mut answer = reply(&self.id)?;
        answer.get_mut().ops_level = crate::state::OPS_LEVEL;
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::action::Action;
    use crate::state::apikey::Role;
    use crate::state::Meta;
    use std::collections::BTreeSet;

    fn node() -> CoordinatorNode {
        CoordinatorNode::default()
    }

    #[test]
    fn only_voters_and_learners_are_admitted() {
        let voters: BTreeSet<u64> = [1, 2].into();
        let nodes: BTreeMap<u64, CoordinatorNode> = [(1, node()), (2, node()), (4, node())].into();
        let m = openraft::Membership::new(vec![voters], nodes);
        assert!(admits(&m, 1));
        assert!(admits(&m, 4), "a learner is admitted");
        assert!(!admits(&m, 3), "a coordinator outside the membership is refused");
    }

    #[test]
    fn a_node_without_membership_admits_the_leader_that_adds_it() {
        let empty: openraft::Membership<u64, CoordinatorNode> = openraft::Membership::default();
        assert!(admits(&empty, 7));
    }

    fn command(op: Op, key_role: Option<Role>) -> Command {
        Command {
            meta: Meta {
                time_ms: 1,
                actor: "00000000000000aa".into(),
                source: "t".into(),
                key_role,
                user_generation: None,
            },
            op,
        }
    }

    #[test]
    fn forwarded_admin_writes_must_name_their_key() {
        let key = crate::state::tests_support::admin_key("00000000000000bb");
        let forged = command(Op::CreateApiKey(key.clone()), None);
        assert!(forwardable(&forged).is_err_and(|s| s.code() == tonic::Code::PermissionDenied));
        assert!(forwardable(&command(Op::CreateApiKey(key), Some(Role::Admin))).is_ok());
        let audit = Op::Rejected { action: Action::TenantGet, target: "y".into(), reason: "z".into() };
        assert!(forwardable(&command(audit, None)).is_ok());
    }
}
