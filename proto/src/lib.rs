//! The Berqenas wire contract: protobuf messages and tonic services shared by coordinators,
//! node agents and devices.

/// Coordinator-to-coordinator Raft transport.
pub mod raft {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("berqenas.raft.v1");
}

/// Coordinator-to-node-agent service: join, certificate renewal, desired state, reports.
pub mod node {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("berqenas.node.v1");

    impl std::fmt::Debug for DataKey {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("DataKey").field("id", &self.id).finish_non_exhaustive()
        }
    }

    impl std::fmt::Debug for ClusterBackupKey {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("ClusterBackupKey").field("id", &self.id).finish_non_exhaustive()
        }
    }
}

/// Coordinator-to-device service: enrollment, certificate renewal, heartbeats.
pub mod device {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("berqenas.device.v1");
}

/// Device-to-ingest service: events published by devices.
pub mod realtime {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("berqenas.realtime.v1");
}
