//! gRPC channels over rustls: to a coordinator pinned by its CA fingerprint (enrollment), to a
//! coordinator with the device's certificate (heartbeat, renewal), and to the tenant's realtime
//! ingest on a db node with the device's certificate.

use crate::state::StateDir;
use anyhow::bail;
use berqenas_common::grpc::Liveness;
use berqenas_proto::device::device_client::DeviceClient;
use berqenas_proto::realtime::ingest_client::IngestClient;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;

/// host:port from `https://host:port` or `host:port`.
pub fn coordinator_addr(raw: &str) -> anyhow::Result<String> {
    if raw.starts_with("http://") {
        bail!("the coordinator must be reached over TLS (https://)");
    }
    let addr = raw.strip_prefix("https://").unwrap_or(raw).trim_end_matches('/');
    if !crate::state::valid_endpoint(addr) || addr.is_empty() {
        bail!("coordinator {raw:?} must be https://HOST:PORT");
    }
    Ok(addr.to_string())
}

/// Devices ping rarely (metered links, sleeping boards).
const LIVENESS: Liveness = Liveness { connect: Duration::from_secs(5), ping: Duration::from_secs(20) };

/// Connects to `addr` (host:port) with `tls`; fails within a few seconds when nothing answers.
pub async fn channel(addr: &str, tls: Arc<rustls::ClientConfig>) -> anyhow::Result<Channel> {
    berqenas_common::grpc::channel(addr, tls, 443, LIVENESS).await
}

/// A coordinator trusted only if its CA has the fingerprint `pin` (`sha256:<hex>`).
pub async fn pinned(addr: &str, pin: &str) -> anyhow::Result<DeviceClient<Channel>> {
    let tls = Arc::new(berqenas_pki::pinned_client_config(pin)?);
    Ok(DeviceClient::new(channel(addr, tls).await?))
}

/// The first of `coordinators` that answers, over mTLS with the device's certificate.
pub async fn coordinator(dir: &StateDir, coordinators: &[String]) -> anyhow::Result<DeviceClient<Channel>> {
    let identity = dir.tls_identity()?;
    let tls = Arc::new(berqenas_pki::client_config(&dir.ca_pem()?, Some((&identity, &identity)))?);
    let mut last = None;
    for addr in coordinators {
        match channel(addr, tls.clone()).await {
            Ok(ch) => return Ok(DeviceClient::new(ch)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("the device knows no coordinator")))
}

/// The tenant's realtime ingest at `endpoint`, over mTLS with the device's certificate.
pub async fn ingest(dir: &StateDir, endpoint: &str) -> anyhow::Result<IngestClient<Channel>> {
    if endpoint.is_empty() {
        bail!("the tenant has no realtime ingest (the coordinator named none)");
    }
    let identity = dir.tls_identity()?;
    let tls = Arc::new(berqenas_pki::node_client_config(&dir.ca_pem()?, (&identity, &identity))?);
    Ok(IngestClient::new(channel(endpoint, tls).await?))
}
