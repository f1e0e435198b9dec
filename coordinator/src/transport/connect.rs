//! Outgoing channels: tonic over rustls to a coordinator, optionally checking that the peer
//! presents the identity the caller meant.

use super::ClientTls;
use anyhow::Context;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// How long TCP + TLS to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How every connect failure's message starts: tonic turns it into an `Unavailable` status with
/// that message, and no other failure does (`never_sent`).
const NOT_CONNECTED: &str = "not connected: ";

/// Whether a failed call certainly never reached the peer: it failed to connect (TCP, TLS or
/// the peer's identity), before any request was sent. Any other failure (a timeout, a reset
/// connection) may come after the peer acted on the request.
pub fn never_sent(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable && status.message().starts_with(NOT_CONNECTED)
}

/// A lazily connecting channel to `addr` over rustls with the current client config, to
/// whichever coordinator of the cluster answers there (joining, `Hello`).
pub fn channel(addr: &str, tls: ClientTls) -> anyhow::Result<Channel> {
    peer_channel(addr, tls, None)
}

/// A lazily connecting channel to `addr`; with `expected`, every connection must reach
/// `berqenas://coordinator/{expected}` (the peer the caller meant, not whoever took over the
/// address), or it is closed after the handshake, before any request is sent.
pub fn peer_channel(addr: &str, tls: ClientTls, expected: Option<u64>) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .with_context(|| format!("invalid peer address {addr:?}"))?
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    let connector = tower::service_fn(move |uri: Uri| {
        let tls = tls.clone();
        async move {
            let config = tls.read().map(|c| c.clone()).map_err(|_| std::io::Error::other("tls config poisoned"))?;
            let host = uri.host().unwrap_or("localhost").trim_start_matches('[').trim_end_matches(']').to_string();
            let port = uri.port_u16().unwrap_or(443);
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect(&host, port, config, expected))
                .await
                .unwrap_or_else(|_| Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")))
                .map_err(|e| std::io::Error::new(e.kind(), format!("{NOT_CONNECTED}{e}")))?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    Ok(endpoint.connect_with_connector_lazy(connector))
}

/// TCP + TLS to `host:port`; with `expected`, the server's certificate must name that coordinator.
async fn connect(
    host: &str,
    port: u16,
    config: Arc<rustls::ClientConfig>,
    expected: Option<u64>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect((host, port)).await?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).map_err(std::io::Error::other)?;
    let stream = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
    if let Some(id) = expected {
        let leaf = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.as_ref());
        if let Err(e) = berqenas_pki::expect_identity(leaf, &berqenas_pki::Identity::Coordinator(id)) {
            tracing::warn!(peer = id, addr = %format!("{host}:{port}"), error = %e, "refused a peer with the wrong identity");
            return Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, e));
        }
    }
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berqenas_pki::{ClusterCa, Identity as Peer};
    use std::time::SystemTime;
    use tokio::net::TcpListener;

    fn leaf(ca: &ClusterCa, id: &Peer) -> (String, String) {
        let kc = berqenas_pki::new_key_and_csr("t").expect("csr");
        let cert = ca
            .sign_csr(&kc.csr_pem, id, &["127.0.0.1".into()], SystemTime::now(), Duration::from_secs(600))
            .expect("sign");
        (format!("{cert}{}", ca.cert_pem), kc.key_pem)
    }

    /// A TLS server on loopback presenting coordinator 2's certificate; accepts forever.
    async fn coordinator_two(ca: &ClusterCa) -> u16 {
        let (chain, key) = leaf(ca, &Peer::Coordinator(2));
        let config = berqenas_pki::server_config(
            &ca.cert_pem,
            &chain,
            &key,
            Arc::new(berqenas_pki::NoRevocations),
            berqenas_pki::ClientAuth::Required,
        )
        .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut stream) = acceptor.accept(tcp).await {
                        let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut [0u8; 16]).await;
                    }
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn a_peer_answering_with_another_coordinators_identity_is_refused() {
        let ca = ClusterCa::generate("t", 2026).expect("ca");
        let port = coordinator_two(&ca).await;
        let (chain, key) = leaf(&ca, &Peer::Coordinator(1));
        let client = Arc::new(berqenas_pki::client_config(&ca.cert_pem, Some((&chain, &key))).expect("client"));

        let err = connect("127.0.0.1", port, client.clone(), Some(3)).await.expect_err("coordinator 3 was meant");
        assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
        assert!(err.to_string().contains("berqenas://coordinator/2, not berqenas://coordinator/3"), "{err}");
        assert!(connect("127.0.0.1", port, client.clone(), Some(2)).await.is_ok(), "the right peer is reached");
        assert!(connect("127.0.0.1", port, client, None).await.is_ok(), "the Hello probe takes whoever answers");
    }

    /// A call that failed to connect (nothing listening, or another coordinator than the one
    /// meant) never reached a peer; one a peer took and never answered may have been acted on.
    #[tokio::test]
    async fn only_a_call_that_never_connected_counts_as_never_sent() {
        use berqenas_proto::raft::{raft_client::RaftClient, RaftRequest};
        let ca = ClusterCa::generate("t", 2026).expect("ca");
        let (chain, key) = leaf(&ca, &Peer::Coordinator(1));
        let client = Arc::new(berqenas_pki::client_config(&ca.cert_pem, Some((&chain, &key))).expect("client"));
        let tls: ClientTls = Arc::new(std::sync::RwLock::new(client));
        let call = |port: u16, expected: u64| {
            let channel = peer_channel(&format!("127.0.0.1:{port}"), tls.clone(), Some(expected)).expect("channel");
            async move {
                let request = RaftRequest { from: 1, target: expected, payload: Vec::new() };
                let mut client = RaftClient::new(channel);
                tokio::time::timeout(Duration::from_secs(3), client.read_index(request))
                    .await
                    .map(|r| r.expect_err("no answer"))
            }
        };
        let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("addr").port();

        let refused = call(closed, 2).await.expect("refused at once");
        assert!(never_sent(&refused), "refused: {refused:?}");
        let port = coordinator_two(&ca).await;
        let wrong = call(port, 3).await.expect("refused after the handshake");
        assert!(never_sent(&wrong), "wrong peer: {wrong:?}");
        // Coordinator 2 takes the connection and the request's first bytes, and never answers:
        // a status other than "not connected", or no answer at all.
        if let Ok(taken) = call(port, 2).await {
            assert!(!never_sent(&taken), "taken, never answered: {taken:?}");
        }
    }
}
