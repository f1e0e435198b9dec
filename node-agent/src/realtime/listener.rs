//! The realtime port: TLS with the node's own certificate, client certificates verified
//! against the cluster CA when presented (devices) and optional (subscribers use keys). Each
//! request carries the connection's verified identity to the `Ingest` service, which refuses a
//! stream without a device certificate. HTTP/2 (gRPC, SSE, HTTP publish) and HTTP/1.1 (SSE,
//! HTTP publish) on one port.

use super::ingest::{IngestService, PeerIdentity};
use super::{publish, sse, Realtime};
use berqenas_proto::realtime as pb;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tower::Service;

/// Most connections open at once; more are closed at accept.
const MAX_CONNECTIONS: usize = 8_192;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The server configuration is rebuilt this often (the node certificate is renewed in place).
const TLS_RELOAD: Duration = Duration::from_secs(300);

/// Builds the realtime server configuration from the node's files: its key and chain, the
/// cluster CA for client certificates (optional at the handshake), h2 and http/1.1.
pub fn server_config(ca_pem: &str, chain_pem: &str, key_pem: &str) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let mut config = berqenas_pki::server_config(
        ca_pem,
        chain_pem,
        key_pem,
        Arc::new(berqenas_pki::NoRevocations),
        berqenas_pki::ClientAuth::Optional,
    )?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

pub type TlsSource = Arc<dyn Fn() -> anyhow::Result<Arc<rustls::ServerConfig>> + Send + Sync>;

impl Realtime {
    /// The router for all: gRPC `Ingest`, HTTP publishing and the subscribers' SSE.
    pub fn router(&self) -> axum::Router {
        let ingest = pb::ingest_server::IngestServer::new(IngestService { shared: self.shared.clone() });
        let events = axum::Router::new()
            .route("/v1/tenants/{tenant}/events", axum::routing::get(sse::events).post(publish::events))
            .with_state(self.shared.clone());
        tonic::service::Routes::new(ingest).into_axum_router().merge(events)
    }

    /// Serves the realtime port until the task is dropped. `tls` is called at start and every
    /// few minutes, so a renewed node certificate is picked up.
    pub async fn serve(&self, listener: TcpListener, tls: TlsSource) -> anyhow::Result<()> {
        let app = self.router();
        let mut config = tls()?;
        let mut loaded = Instant::now();
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        tracing::info!(addr = ?listener.local_addr().ok(), "realtime listening");
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(error = %e, "realtime accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            if loaded.elapsed() > TLS_RELOAD {
                match tls() {
                    Ok(c) => config = c,
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot reload the realtime certificate"),
                }
                loaded = Instant::now();
            }
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "realtime connection refused: too many open");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(connection(tcp, peer, config.clone(), app.clone(), slot));
        }
    }
}

async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    config: Arc<rustls::ServerConfig>,
    app: axum::Router,
    _slot: tokio::sync::OwnedSemaphorePermit,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "realtime handshake refused");
            return;
        }
        Err(_) => return,
    };
    // The chain was verified against the cluster CA during the handshake; only its identity is
    // read here. A certificate without a berqenas identity counts as none.
    let identity = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| berqenas_pki::peer_identity(c).ok());
    let tag = PeerIdentity(identity);
    let svc = tower::service_fn(move |mut req: axum::http::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(tag.clone());
        let mut app = app.clone();
        async move { app.call(req).await }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let io = hyper_util::rt::TokioIo::new(stream);
    if let Err(e) = builder.serve_connection_with_upgrades(io, hyper_util::service::TowerToHyperService::new(svc)).await
    {
        tracing::debug!(%peer, error = %e, "realtime connection ended");
    }
}
