//! gRPC channels to coordinators over rustls: pinned-CA TLS for joining, mTLS afterwards.

use anyhow::Context;
use berqenas_proto::node::node_client::NodeClient;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint, Uri};

/// Connects to `addr` (host:port) with `tls`; fails fast when the coordinator is down.
pub async fn node_client(addr: &str, tls: Arc<rustls::ClientConfig>) -> anyhow::Result<NodeClient<Channel>> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .with_context(|| format!("invalid coordinator address {addr:?}"))?
        .connect_timeout(Duration::from_secs(3))
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    let connector = tower::service_fn(move |uri: Uri| {
        let tls = tls.clone();
        async move {
            let host = uri.host().unwrap_or("localhost").trim_start_matches('[').trim_end_matches(']').to_string();
            let port = uri.port_u16().unwrap_or(7301);
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = rustls::pki_types::ServerName::try_from(host).map_err(std::io::Error::other)?;
            let stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    let channel = tokio::time::timeout(Duration::from_secs(10), endpoint.connect_with_connector(connector))
        .await
        .with_context(|| format!("connecting to {addr} timed out"))?
        .with_context(|| format!("cannot connect to coordinator {addr}"))?;
    Ok(NodeClient::new(channel))
}
