//! The gRPC services of the node listener: `Node` (node agents) and `Device` (enrolled devices).
//! Joining and enrolling need no client certificate (the token is the credential); every other
//! call needs a node or device certificate from the cluster CA (revoked or unknown identities are
//! refused during the handshake, see `server::StateRevocation`). The listener that serves them is
//! in `listeners`; `error` maps domain, write and read errors to `Status` once.

mod assignment;
pub mod backups;
mod dblogins;
mod device;
pub mod error;
mod node;
mod report;

pub use device::{DeviceService, DEVICE_CERT_LIFETIME};
pub use node::NodeService;

use std::time::Duration;

/// Lifetime of node certificates; agents renew when a third is left.
pub const NODE_CERT_LIFETIME: Duration = Duration::from_secs(86_400);

/// The `Meta` of a command node `id` gave in its report stream from `source`, now.
fn node_meta(id: u64, source: &str) -> crate::state::Meta {
    crate::state::Meta {
        time_ms: crate::time::now_ms(),
        actor: format!("node/{id}"),
        source: source.to_string(),
        key_role: None,
        user_generation: None,
    }
}
