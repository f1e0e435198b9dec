//! The coordinator's transport: TLS over TCP for its three listeners and its outgoing channels.
//! `incoming` is the accept loop that hands finished handshakes to tonic or hyper (refusals are
//! counted per source and summarised in the audit trail by its `Gate`), `connect` dials peers
//! with rustls, `identity` holds this coordinator's own certificate files. It knows nothing of
//! the `Coordinator`: what the accept loop consults and where refusals go come in as a `Gate`.

mod connect;
mod identity;

pub use connect::{channel, never_sent, peer_channel};
pub use identity::{valid_name, Identity, COORDINATOR_CERT_LIFETIME};

use crate::admission::Admission;
use crate::refusals::Refusal;
use crate::state::action::Action;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

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

/// What an accept loop consults before doing work for a caller, and where its refusals go.
pub trait Gate: Send + Sync + 'static {
    /// The limits, buckets and refusal counts of this process's listeners.
    fn admission(&self) -> &Admission;
    /// Counts a refusal and audits it when it is its source's sample. Never fails.
    fn refuse<'a>(&'a self, refusal: Refusal<'a>) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
}

/// Accepts TCP connections for `listener`, runs the TLS handshake off the
/// accept path, and yields the streams that completed it. A source whose unauthenticated
/// refusals used up its bucket has new connections closed unread; handshakes in progress are
/// capped per listener and per source, and time out. Every failed handshake is counted for its
/// source (`refusals`), never written one by one.
pub fn incoming<G: Gate>(
    listener: TcpListener,
    tls: ServerTls,
    c: Arc<G>,
    listener_kind: Listener,
) -> (Incoming, tokio::task::JoinHandle<()>) {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let slots = c.admission().handshake_slots();
    let timeout = c.admission().limits.handshake_timeout;
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
                let _ = c.admission().refusals.record(&refusal, std::time::Instant::now());
            };
            if c.admission().connection_allowed(peer.ip()).is_err() {
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
                let _ = c.admission().charge_anonymous(Some(peer.ip()));
                let refusal = Refusal { source: Some(peer.ip()), action, target: &target, reason: &reason, sample };
                c.refuse(refusal).await;
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
