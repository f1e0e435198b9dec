//! gRPC channels over rustls, one way for every Berqenas client (the node agent to its
//! coordinators, the device client to coordinators and to the realtime ingest).

use anyhow::Context;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint, Uri};

/// How a channel notices a dead peer: HTTP/2 pings every `ping` (also while idle).
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    pub connect: Duration,
    pub ping: Duration,
}

/// Connects to `addr` (host:port, `default_port` when it has none) with `tls`; TCP_NODELAY,
/// keepalive pings per `liveness`, and an error within 10 s when nothing answers.
pub async fn channel(
    addr: &str,
    tls: Arc<rustls::ClientConfig>,
    default_port: u16,
    liveness: Liveness,
) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .with_context(|| format!("invalid address {addr:?}"))?
        .connect_timeout(liveness.connect)
        .http2_keep_alive_interval(liveness.ping)
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    let connector = tower::service_fn(move |uri: Uri| {
        let tls = tls.clone();
        async move {
            let host = uri.host().unwrap_or("localhost").trim_start_matches('[').trim_end_matches(']').to_string();
            let port = uri.port_u16().unwrap_or(default_port);
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = rustls::pki_types::ServerName::try_from(host).map_err(std::io::Error::other)?;
            let stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    tokio::time::timeout(Duration::from_secs(10), endpoint.connect_with_connector(connector))
        .await
        .with_context(|| format!("connecting to {addr} timed out"))?
        .with_context(|| format!("cannot connect to {addr}"))
}
