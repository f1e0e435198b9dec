//! Raft plumbing: the openraft type configuration, the redb-backed log (`store`), state machine
//! (`state_machine`, its tables in `tables`, the stored audit trail in `audit_log`, snapshots in
//! `snapshot`: the state plus a range of the stored trail, streamed from the store when sent), and
//! the tonic RPCs between coordinators (`network` client over `transport`, `service` server).

pub mod audit_log;
pub mod network;
pub mod service;
mod snapshot;
pub mod state_machine;
pub mod store;
mod tables;

use crate::state::{Command, Response};
use serde::{Deserialize, Serialize};
use std::fmt;

/// How a coordinator is reached: Raft RPCs and the REST API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordinatorNode {
    pub raft_addr: String,
    pub api_addr: String,
    /// host:port of the node-agent listener (mTLS).
    #[serde(default)]
    pub node_addr: String,
}

impl fmt::Display for CoordinatorNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "raft={} api={} node={}", self.raft_addr, self.api_addr, self.node_addr)
    }
}

openraft::declare_raft_types!(
    /// The coordinator's Raft types: commands in, domain responses out.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = u64,
        Node = CoordinatorNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = snapshot::SnapshotData,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<u64>;
pub type StoredMembership = openraft::StoredMembership<u64, CoordinatorNode>;

/// Log entries between snapshots unless `serve --snapshot-logs` says otherwise.
pub const DEFAULT_SNAPSHOT_LOGS: u64 = 5_000;

/// Timing and snapshot settings, defined once. Election timeouts are short enough for a
/// sub-second failover on loopback and long enough not to flap on a loaded 2-core host.
/// A snapshot is taken every `snapshot_logs` entries and a fifth of that is kept behind it.
pub fn raft_config(snapshot_logs: u64) -> Result<openraft::Config, openraft::ConfigError> {
    openraft::Config {
        cluster_name: "berqenas".into(),
        heartbeat_interval: 50,
        election_timeout_min: 250,
        election_timeout_max: 500,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(snapshot_logs),
        max_in_snapshot_log_to_keep: snapshot_logs / 5,
        snapshot_max_chunk_size: 1 << 20,
        // Per snapshot chunk, and the last chunk's reply waits for the follower to install the
        // whole snapshot (every audit entry it lacks: tens of seconds at a million entries).
        // The default 200 ms fails any chunk of a megabyte in a debug build.
        install_snapshot_timeout: 120_000,
        max_payload_entries: 256,
        ..openraft::Config::default()
    }
    .validate()
}

/// Largest gRPC message between coordinators (a snapshot chunk is JSON-encoded bytes).
pub const MAX_RPC_BYTES: usize = 32 << 20;
