//! gRPC channels to coordinators over rustls: pinned-CA TLS for joining, mTLS afterwards.

use berqenas_common::grpc::{channel, Liveness};
use berqenas_proto::node::node_client::NodeClient;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;

/// Agents ping their coordinator often: a lost stream must show within seconds.
const LIVENESS: Liveness = Liveness { connect: Duration::from_secs(3), ping: Duration::from_secs(5) };

/// Connects to `addr` (host:port) with `tls`; fails fast when the coordinator is down.
pub async fn node_client(addr: &str, tls: Arc<rustls::ClientConfig>) -> anyhow::Result<NodeClient<Channel>> {
    Ok(NodeClient::new(channel(addr, tls, 7301, LIVENESS).await?))
}
