//! The Raft transport client: one long-lived tonic channel per peer (HTTP/2 multiplexed,
//! reconnecting on its own), shared by replication, vote, forwarded writes and read-index calls.
//! Each channel to peer N accepts only a server whose certificate is `berqenas://coordinator/N`.

use super::propose::ProposeError;
use super::{CoordinatorNode, TypeConfig, MAX_RPC_BYTES};
use crate::state::{Command, Response};
use berqenas_proto::raft::{raft_client::RaftClient, RaftRequest};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::{de::DeserializeOwned, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::Channel;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("refusing to connect coordinator {0} to itself")]
    SelfConnection(u64),
    #[error("invalid peer address {0:?}")]
    Address(String),
    #[error("peer call failed: {0}")]
    Status(#[from] tonic::Status),
    #[error("peer call timed out after {0:?}")]
    Timeout(Duration),
    #[error("peer sent an undecodable reply: {0}")]
    Decode(#[from] serde_json::Error),
}

impl TransportError {
    /// Whether the call certainly never reached the peer, so the peer cannot have acted on it.
    pub fn never_sent(&self) -> bool {
        match self {
            TransportError::SelfConnection(_) | TransportError::Address(_) => true,
            TransportError::Status(s) => crate::transport::never_sent(s),
            TransportError::Timeout(_) | TransportError::Decode(_) => false,
        }
    }
}

/// Cached channels to peers, keyed by node id and address.
#[derive(Clone)]
pub struct Peers {
    self_id: u64,
    channels: Arc<Mutex<HashMap<(u64, String), Channel>>>,
    tls: crate::transport::ClientTls,
}

impl Peers {
    /// Peers dialed over mTLS with this coordinator's certificate.
    pub fn new(self_id: u64, tls: crate::transport::ClientTls) -> Self {
        Self { self_id, channels: Arc::new(Mutex::new(HashMap::new())), tls }
    }

    pub fn self_id(&self) -> u64 {
        self.self_id
    }

    /// A client for `target` at `addr`; never for this node itself.
    pub fn client(&self, target: u64, addr: &str) -> Result<RaftClient<Channel>, TransportError> {
        if target == self.self_id {
            return Err(TransportError::SelfConnection(target));
        }
        self.client_unchecked(target, addr)
    }

    fn client_unchecked(&self, target: u64, addr: &str) -> Result<RaftClient<Channel>, TransportError> {
        let mut cache = self.channels.lock().map_err(|_| TransportError::Address(addr.into()))?;
        let channel = match cache.get(&(target, addr.to_string())) {
            Some(c) => c.clone(),
            None => {
                // Id 0 is the `Hello` probe, which asks the address who it is.
                let expected = (target != 0).then_some(target);
                let channel = crate::transport::peer_channel(addr, self.tls.clone(), expected)
                    .map_err(|_| TransportError::Address(addr.to_string()))?;
                cache.insert((target, addr.to_string()), channel.clone());
                channel
            }
        };
        Ok(RaftClient::new(channel).max_decoding_message_size(MAX_RPC_BYTES).max_encoding_message_size(MAX_RPC_BYTES))
    }

    fn request<T: Serialize>(&self, target: u64, body: &T) -> RaftRequest {
        RaftRequest { from: self.self_id, target, payload: serde_json::to_vec(body).unwrap_or_default() }
    }

    /// Sends a client write to the leader.
    pub async fn forward(
        &self,
        target: u64,
        addr: &str,
        cmd: &Command,
        timeout: Duration,
    ) -> Result<Result<Response, ProposeError>, TransportError> {
        let mut client = self.client(target, addr)?;
        let req = self.request(target, cmd);
        let reply = tokio::time::timeout(timeout, client.forward(req))
            .await
            .map_err(|_| TransportError::Timeout(timeout))??;
        Ok(serde_json::from_slice(&reply.into_inner().payload)?)
    }

    /// Asks the leader for a linearizable read index.
    pub async fn read_index(
        &self,
        target: u64,
        addr: &str,
        timeout: Duration,
    ) -> Result<Result<Option<u64>, String>, TransportError> {
        let mut client = self.client(target, addr)?;
        let req = self.request(target, &());
        let reply = tokio::time::timeout(timeout, client.read_index(req))
            .await
            .map_err(|_| TransportError::Timeout(timeout))??;
        Ok(serde_json::from_slice(&reply.into_inner().payload)?)
    }

    /// Which node id answers at `addr` (used before adding a member), and the Raft ops level of
    /// its release (1 for a release that reports none).
    pub async fn hello(&self, addr: &str, timeout: Duration) -> Result<(u64, u32), TransportError> {
        // Id 0 is never a node id; this connection is only for the probe.
        let mut client = self.client_unchecked(0, addr)?;
        let req = self.request(0, &());
        let reply =
            tokio::time::timeout(timeout, client.hello(req)).await.map_err(|_| TransportError::Timeout(timeout))??;
        let reply = reply.into_inner();
        Ok((serde_json::from_slice(&reply.payload)?, reply.ops_level.max(1)))
    }
}

/// Creates per-target Raft network clients over the shared channels.
#[derive(Clone)]
pub struct NetworkFactory {
    pub peers: Peers,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: u64, node: &CoordinatorNode) -> PeerNetwork {
        PeerNetwork { peers: self.peers.clone(), target, addr: node.raft_addr.clone() }
    }
}

pub struct PeerNetwork {
    peers: Peers,
    target: u64,
    addr: String,
}

enum Rpc {
    Append,
    Vote,
    Snapshot,
}

impl PeerNetwork {
    async fn call<Req, Resp, E>(
        &self,
        rpc: Rpc,
        body: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, CoordinatorNode, RaftError<u64, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let unreachable = |e: TransportError| RPCError::Unreachable(Unreachable::new(&e));
        let mut client = self.peers.client(self.target, &self.addr).map_err(unreachable)?;
        let req = self.peers.request(self.target, body);
        let ttl = option.hard_ttl();
        let fut = async {
            match rpc {
                Rpc::Append => client.append_entries(req).await,
                Rpc::Vote => client.vote(req).await,
                Rpc::Snapshot => client.install_snapshot(req).await,
            }
        };
        let reply = match tokio::time::timeout(ttl, fut).await {
            // A slow peer is not an unreachable one: openraft backs off 500 ms after
            // `Unreachable`, longer than a follower waits before it calls an election, so a
            // follower busy taking in a long catch-up would be silenced into disrupting the
            // leader. A timeout is retried at once.
            Err(_) => return Err(RPCError::Network(NetworkError::new(&TransportError::Timeout(ttl)))),
            Ok(Err(status)) => return Err(unreachable(TransportError::Status(status))),
            Ok(Ok(r)) => r.into_inner(),
        };
        let decoded: Result<Resp, RaftError<u64, E>> = serde_json::from_slice(&reply.payload)
            .map_err(|e| RPCError::Network(NetworkError::new(&TransportError::Decode(e))))?;
        decoded.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    /// How long replication to a peer that refused the connection waits before it tries again:
    /// below the election timeout (250 ms), so a restarted follower hears from the leader before
    /// it would call an election (openraft's default is 500 ms).
    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(super::UNREACHABLE_BACKOFF))
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, CoordinatorNode, RaftError<u64>>> {
        self.call(Rpc::Append, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, CoordinatorNode, RaftError<u64, InstallSnapshotError>>>
    {
        self.call(Rpc::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, CoordinatorNode, RaftError<u64>>> {
        self.call(Rpc::Vote, &rpc, &option).await
    }
}
