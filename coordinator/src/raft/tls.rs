//! TLS plumbing shared by the coordinator's listeners and its outgoing channels: an accept loop
//! that hands finished handshakes to tonic (refusals are counted per source and summarised in
//! the audit trail, see `refusals`), a connector that dials peers with rustls, and this
//! coordinator's own certificate files.

use crate::refusals::Refusal;
use crate::server::Coordinator;
use crate::state::action::Action;
use anyhow::Context;
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tonic::transport::{Channel, Endpoint, Uri};

pub type ServerTls = Arc<RwLock<Arc<rustls::ServerConfig>>>;
pub type ClientTls = Arc<RwLock<Arc<rustls::ClientConfig>>>;
pub type Incoming = tokio_stream::wrappers::ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>>;

/// The coordinator's TLS listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Api,
    Node,
    Raft,
}

impl Listener {
    pub const fn as_str(self) -> &'static str {
        match self {
            Listener::Api => "api",
            Listener::Node => "node",
            Listener::Raft => "raft",
        }
    }

    /// What the audit trail calls a failed handshake on this listener.
    pub const fn handshake(self) -> Action {
        match self {
            Listener::Api => Action::ApiHandshake,
            Listener::Node => Action::NodeHandshake,
            Listener::Raft => Action::RaftHandshake,
        }
    }
}

/// Accepts TCP connections for `listener`, runs the TLS handshake off the
/// accept path, and yields the streams that completed it. A source whose unauthenticated
/// refusals used up its bucket has new connections closed unread; handshakes in progress are
/// capped per listener and per source, and time out. Every failed handshake is counted for its
/// source (`refusals`), never written one by one.
pub fn incoming(
    listener: TcpListener,
    tls: ServerTls,
    c: Arc<Coordinator>,
    listener_kind: Listener,
) -> (Incoming, tokio::task::JoinHandle<()>) {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let slots = c.admission.handshake_slots();
    let timeout = c.admission.limits.handshake_timeout;
    let task = tokio::spawn(async move {
        let (name, action) = (listener_kind.as_str(), listener_kind.handshake());
        let target = format!("{name}-listener");
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors or similar: do not spin.
                    tracing::debug!(error = %e, listener = name, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let count = |reason: &str| {
                let refusal = Refusal { source: Some(peer.ip()), action, target: &target, reason, sample: false };
                let _ = c.admission.refusals.record(&refusal, std::time::Instant::now());
            };
            if c.admission.connection_allowed(peer.ip()).is_err() {
                count("source is over its limit of unauthenticated refusals; closed unread");
                continue;
            }
            let Some(slot) = slots.acquire(crate::admission::source_key(peer.ip())) else {
                count("too many handshakes in progress; closed unread");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let Ok(config) = tls.read().map(|c| c.clone()) else { continue };
            let (tx, c, target) = (tx.clone(), c.clone(), target.clone());
            tokio::spawn(async move {
                let acceptor = tokio_rustls::TlsAcceptor::from(config);
                let outcome = tokio::time::timeout(timeout, acceptor.accept(tcp)).await;
                drop(slot);
                let (reason, sample) = match outcome {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                        return;
                    }
                    // A bare connect and close, or a reset: a probe, counted only.
                    Ok(Err(e)) => (e.to_string(), !is_probe(&e)),
                    Err(_) => ("handshake timed out".to_string(), false),
                };
                tracing::debug!(%peer, listener = name, reason, "refused a TLS handshake");
                let _ = c.admission.charge_anonymous(Some(peer.ip()));
                let refusal = Refusal { source: Some(peer.ip()), action, target: &target, reason: &reason, sample };
                crate::refusals::refuse(&c, refusal).await;
            });
        }
    });
    (tokio_stream::wrappers::ReceiverStream::new(rx), task)
}

/// Whether a handshake error means the peer never really tried (closed, reset, aborted).
fn is_probe(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe | NotConnected)
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
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    let connector = tower::service_fn(move |uri: Uri| {
        let tls = tls.clone();
        async move {
            let config = tls.read().map(|c| c.clone()).map_err(|_| std::io::Error::other("tls config poisoned"))?;
            let host = uri.host().unwrap_or("localhost").trim_start_matches('[').trim_end_matches(']').to_string();
            let port = uri.port_u16().unwrap_or(443);
            let stream = connect(&host, port, config, expected).await?;
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

/// This coordinator's key, certificate chain and the cluster CA, in its data dir.
pub struct Identity {
    pub dir: PathBuf,
}

impl Identity {
    pub fn key_path(&self) -> PathBuf {
        self.dir.join("coordinator.key")
    }
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("coordinator.pem")
    }
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    pub fn exists(&self) -> bool {
        self.key_path().exists() && self.cert_path().exists() && self.ca_path().exists()
    }

    pub fn save(&self, key_pem: &str, chain_pem: &str, ca_pem: &str) -> anyhow::Result<()> {
        // Every file of the data dir is 0600, certificates included (see `datadir`).
        write_file(&self.key_path(), key_pem.as_bytes())?;
        write_file(&self.cert_path(), chain_pem.as_bytes())?;
        write_file(&self.ca_path(), ca_pem.as_bytes())
    }

    pub fn read(&self) -> anyhow::Result<(String, String, String)> {
        let r = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()));
        Ok((r(&self.ca_path())?, r(&self.cert_path())?, r(&self.key_path())?))
    }

    /// TLS configs for the Raft listener (coordinators only) and for dialing peers.
    pub fn configs(&self, revocation: Arc<dyn berqenas_pki::Revocation>) -> anyhow::Result<(ServerTls, ClientTls)> {
        let (ca, chain, key) = self.read()?;
        let server = berqenas_pki::server_config(&ca, &chain, &key, revocation, berqenas_pki::ClientAuth::Required)?;
        let client = berqenas_pki::client_config(&ca, Some((&chain, &key)))?;
        Ok((Arc::new(RwLock::new(Arc::new(server))), Arc::new(RwLock::new(Arc::new(client)))))
    }

    /// Whether the certificate is missing or has less than a third of its life left.
    pub fn needs_renewal(&self) -> bool {
        let Ok(pem) = std::fs::read_to_string(self.cert_path()) else { return true };
        let Ok(der) = berqenas_pki::first_cert_der(&pem) else { return true };
        match berqenas_pki::validity(&der) {
            Ok((nb, na)) => berqenas_pki::should_renew(nb, na, std::time::SystemTime::now()),
            Err(_) => true,
        }
    }

    /// Issues a fresh certificate for coordinator `id` with the CA (held by coordinators), valid
    /// for `names` too (its advertised hosts), so the REST API can present it.
    pub fn issue(&self, ca: &berqenas_pki::ClusterCa, id: u64, names: &[String]) -> anyhow::Result<()> {
        let kc = berqenas_pki::new_key_and_csr("coordinator")?;
        let cert = ca.sign_csr(
            &kc.csr_pem,
            &berqenas_pki::Identity::Coordinator(id),
            names,
            std::time::SystemTime::now(),
            crate::grpc::COORDINATOR_CERT_LIFETIME,
        )?;
        self.save(&kc.key_pem, &format!("{cert}{}", ca.cert_pem), &ca.cert_pem)
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    crate::datadir::write_private(path, bytes).with_context(|| format!("write {}", path.display()))
}

/// Whether `name` can go into a certificate as a DNS name or IP address.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
        && !name.starts_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use berqenas_pki::{ClusterCa, Identity as Peer};
    use std::time::SystemTime;

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
}
