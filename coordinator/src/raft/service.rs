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

impl RaftService {
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
        let req = request.into_inner();
        self.check(&req)?;
        reply(&self.raft.append_entries(decode(&req)?).await)
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let req = request.into_inner();
        self.check(&req)?;
        reply(&self.raft.vote(decode(&req)?).await)
    }

    async fn install_snapshot(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let req = request.into_inner();
        self.check(&req)?;
        reply(&self.raft.install_snapshot(decode(&req)?).await)
    }

    async fn forward(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let req = request.into_inner();
        self.check(&req)?;
        let cmd: Command = decode(&req)?;
        reply(&self.raft.client_write(cmd).await)
    }

    async fn read_index(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let req = request.into_inner();
        self.check(&req)?;
        let result: Result<Option<u64>, String> = match self.raft.ensure_linearizable().await {
            Ok(log_id) => Ok(log_id.map(|l| l.index)),
            Err(e) => Err(e.to_string()),
        };
        reply(&result)
    }

    async fn hello(&self, _request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        reply(&self.id)
    }
}
