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
