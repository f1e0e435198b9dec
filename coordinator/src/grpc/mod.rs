//! The node-agent gRPC service: joining needs no client certificate (the one-time token is the
//! credential); every other call needs a node certificate from the cluster CA (revoked or unknown
//! identities are refused during the handshake, see `server::StateRevocation`). The listener that
//! serves it is in `listeners`; `error` maps domain, write and read errors to `Status` once.

pub mod error;
mod node;
mod report;

pub use node::NodeService;

use std::time::Duration;

/// Lifetime of node certificates; agents renew when a third is left.
pub const NODE_CERT_LIFETIME: Duration = Duration::from_secs(86_400);
