//! Berqenas coordinator: the Raft-replicated registry of tenants, nodes, keys and audit, its REST
//! API and the admin CLI that talks to it.

pub mod admission;
pub mod api;
pub mod apicalls;
pub mod backupkey;
pub mod backupprogress;
pub mod branding;
pub mod cli;
pub mod datadir;
pub mod grpc;
pub mod listeners;
pub mod password;
pub mod qr;
pub mod raft;
pub mod recovery;
pub mod refusals;
pub mod scram;
pub mod server;
pub mod session;
pub mod siem;
pub mod snapshotfile;
pub mod state;
pub mod time;
pub mod totp;
pub mod transport;
