//! Raft plumbing: the openraft type configuration, the log (`store`, its journal in `wal`), state machine
//! (`state_machine`, its tables in `tables`, the stored audit trail in `audit_log`, snapshots in
//! `snapshot`: the state plus a range of the stored trail, streamed from the store when sent), and
//! the tonic RPCs between coordinators (`network` client over `transport`, `service` server).

pub mod audit_log;
pub mod network;
pub mod propose;
pub mod service;
mod snapshot;
pub mod state_machine;
pub mod store;
mod tables;
mod wal;

pub use snapshot::{read_header as read_snapshot_header, ReadSeek};

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

/// What one log entry carries: the commands proposed together (`propose`), applied in order,
/// each answered on its own. Entries written before batching hold one bare command and still
/// read as one (untagged: a command is a JSON object, a batch an array; read by hand, because
/// serde's untagged reader buffers the whole entry before it tries a variant).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Proposal {
    Batch(Vec<Command>),
    One(Box<Command>),
}

impl Proposal {
    pub fn commands(&self) -> &[Command] {
        match self {
            Proposal::Batch(cmds) => cmds,
            Proposal::One(cmd) => std::slice::from_ref(&**cmd),
        }
    }
}

impl<'de> Deserialize<'de> for Proposal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
        struct Shape;
        impl<'de> serde::de::Visitor<'de> for Shape {
            type Value = Proposal;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a command or a list of commands")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Proposal, A::Error> {
                Vec::<Command>::deserialize(SeqAccessDeserializer::new(seq)).map(Proposal::Batch)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Proposal, A::Error> {
                Command::deserialize(MapAccessDeserializer::new(map)).map(|c| Proposal::One(Box::new(c)))
            }
        }
        d.deserialize_any(Shape)
    }
}

openraft::declare_raft_types!(
    /// The coordinator's Raft types: batches of commands in, one domain response per command out.
    pub TypeConfig:
        D = Proposal,
        R = Vec<Response>,
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

/// How long replication waits before it calls a peer that refused the connection again
/// (`network::PeerNetwork::backoff`): under `election_timeout_min`.
pub const UNREACHABLE_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// Largest gRPC message between coordinators (a snapshot chunk is JSON-encoded bytes).
pub const MAX_RPC_BYTES: usize = 32 << 20;

#[cfg(test)]
mod tests {
    use super::Proposal;
    use crate::state::action::Action;
    use crate::state::{Command, Meta, Op};

    fn command(target: &str) -> Command {
        let meta =
            Meta { time_ms: 1, actor: "k1".into(), source: "192.0.2.1".into(), key_role: None, user_generation: None };
        Command { meta, op: Op::Rejected { action: Action::TenantCreate, target: target.into(), reason: "r".into() } }
    }

    #[test]
    fn an_entry_written_before_batching_reads_as_a_batch_of_one() {
        let stored = serde_json::to_vec(&command("tenant/a")).expect("encode");
        let read: Proposal = serde_json::from_slice(&stored).expect("decode");
        assert_eq!(read.commands(), [command("tenant/a")]);
    }

    #[test]
    fn a_batch_keeps_its_commands_in_order() {
        let batch = Proposal::Batch(vec![command("tenant/a"), command("tenant/b")]);
        let read: Proposal = serde_json::from_slice(&serde_json::to_vec(&batch).expect("encode")).expect("decode");
        assert_eq!(read.commands(), [command("tenant/a"), command("tenant/b")]);
    }
}
