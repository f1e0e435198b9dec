//! The Raft transport server: receives peers' RPCs and hands them to the local Raft node.
//! A request addressed to another node id is refused, so a misaddressed peer (or a node
//! pointed at itself) never joins the wrong cluster.

use super::Raft;
use crate::state::Command;
use berqenas_proto::raft::{raft_server, RaftReply, RaftRequest};
use serde::{de::DeserializeOwned, Serialize};
use tonic::{Request, Response, Status};

pub struct RaftService {
    pub id: u64,
    pub raft: Raft,
}

fn decode<T: DeserializeOwned>(req: &RaftRequest) -> Result<T, Status> {
    serde_json::from_slice(&req.payload).map_err(|e| Status::invalid_argument(format!("undecodable payload: {e}")))
}

fn reply<T: Serialize>(value: &T) -> Result<Response<RaftReply>, Status> {
    let payload = serde_json::to_vec(value).map_err(|e| Status::internal(format!("encode reply: {e}")))?;
    Ok(Response::new(RaftReply { payload }))
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

impl RaftService {
    /// The request must come from the coordinator its certificate names, to this node.
    fn checked(&self, request: Request<RaftRequest>) -> Result<RaftRequest, Status> {
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

#[tonic::async_trait]
impl raft_server::Raft for RaftService {
    async fn append_entries(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let req = self.checked(request)?;
        reply(&self.raft.append_entries(decode(&req)?).await)
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let req = self.checked(request)?;
        reply(&self.raft.vote(decode(&req)?).await)
    }

    async fn install_snapshot(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let req = self.checked(request)?;
        reply(&self.raft.install_snapshot(decode(&req)?).await)
    }

    async fn forward(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let req = self.checked(request)?;
        let cmd: Command = decode(&req)?;
        reply(&self.raft.client_write(cmd).await)
    }

    async fn read_index(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        self.checked(request)?;
        let result: Result<Option<u64>, String> = match self.raft.ensure_linearizable().await {
            Ok(log_id) => Ok(log_id.map(|l| l.index)),
            Err(e) => Err(e.to_string()),
        };
        reply(&result)
    }

    async fn hello(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        peer_coordinator(&request)?;
        reply(&self.id)
    }
}
