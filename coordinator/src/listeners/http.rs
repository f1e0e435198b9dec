//! The REST listener's connections: plain HTTP on loopback or TLS over the shared accept loop,
//! each connection in a slot and under the header and idle timeouts, served by hyper-util.

use crate::admission::{Limits, Slot, Slots};
use crate::refusals::Refusal;
use crate::server::Coordinator;
use crate::state::action::Action;
use crate::transport::{self, Listener};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Serves the REST API: plain HTTP (loopback), or TLS over the shared accept loop (refused
/// handshakes are counted like the other listeners'). Every connection takes a slot (capped
/// overall and per source), HTTP/1 request heads must arrive within the header timeout, a
/// connection with no request in flight that moves no byte for that long is closed, and one
/// whose request stalls is closed after the idle timeout.
pub(super) async fn serve_api(
    c: Arc<Coordinator>,
    listener: tokio::net::TcpListener,
    app: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let limits = c.admission.limits.clone();
    let slots = Slots::new(limits.max_api_connections, limits.max_api_connections_per_source);
    let Some(tls) = tls else {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = stop.wait_for(|v| *v) => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::debug!(error = %e, "api accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            let Some(slot) = slots.acquire(crate::admission::source_key(peer.ip())) else {
                count_unserved(&c, peer, "too many open API connections");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(serve_connection(tcp, peer, app.clone(), limits.clone(), slot));
        }
        return Ok(());
    };
    use tokio_stream::StreamExt;
    let (mut incoming, accept) = transport::incoming(listener, Arc::new(RwLock::new(tls)), c.clone(), Listener::Api);
    loop {
        let stream = tokio::select! {
            _ = stop.wait_for(|v| *v) => break,
            next = incoming.next() => match next {
                Some(Ok(s)) => s,
                Some(Err(_)) => continue,
                None => break,
            },
        };
        let peer = stream.get_ref().0.peer_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let Some(slot) = slots.acquire(crate::admission::source_key(peer.ip())) else {
            count_unserved(&c, peer, "too many open API connections");
            continue;
        };
        tokio::spawn(serve_connection(stream, peer, app.clone(), limits.clone(), slot));
    }
    accept.abort();
    Ok(())
}

/// A connection closed unserved: counted for its source, never written as itself.
fn count_unserved(c: &Coordinator, peer: SocketAddr, reason: &str) {
    let refusal =
        Refusal { source: Some(peer.ip()), action: Action::ApiConnect, target: "api-listener", reason, sample: false };
    let _ = c.admission.refusals.record(&refusal, Instant::now());
}

/// One REST connection with hyper-util's HTTP/1 + HTTP/2 server, under the listener's timeouts.
async fn serve_connection<I>(io: I, peer: SocketAddr, app: axum::Router, limits: Limits, slot: Slot)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let _slot = slot;
    let started = Instant::now();
    let activity = Arc::new(AtomicU64::new(0));
    let in_flight = Arc::new(AtomicU64::new(0));
    let io = Watched { inner: io, started, activity: activity.clone() };
    let svc = Counted { app, peer, in_flight: in_flight.clone() };
    let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(API_MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_concurrent_streams(64)
        .max_header_list_size(API_MAX_HEAD_BYTES as u32);
    let conn =
        builder.serve_connection(hyper_util::rt::TokioIo::new(io), hyper_util::service::TowerToHyperService::new(svc));
    tokio::pin!(conn);
    let tick = (limits.header_read_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, %peer, "api connection ended");
                }
                return;
            }
            _ = tokio::time::sleep(tick) => {}
        }
        let quiet = started.elapsed().saturating_sub(Duration::from_millis(activity.load(Ordering::Relaxed)));
        let busy = in_flight.load(Ordering::Relaxed) > 0;
        if !busy && quiet >= limits.header_read_timeout {
            // Nothing in flight and nothing said: an idle keep-alive connection or a client that
            // stalled in its request head. Nothing is lost by closing it.
            tracing::debug!(%peer, "closing a quiet api connection");
            return;
        }
        if busy && quiet >= limits.idle_timeout {
            tracing::debug!(%peer, "closing an api connection whose request stalled");
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(limits.idle_timeout, conn.as_mut()).await;
            return;
        }
    }
}

/// Largest HTTP request head (request line + headers) accepted.
const API_MAX_HEAD_BYTES: usize = 64 * 1024;

/// The router for one connection: stamps the peer address and counts requests in flight.
#[derive(Clone)]
struct Counted {
    app: axum::Router,
    peer: SocketAddr,
    in_flight: Arc<AtomicU64>,
}

impl<B> tower::Service<axum::http::Request<B>> for Counted
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: axum::http::Request<B>) -> Self::Future {
        req.extensions_mut().insert(axum::extract::ConnectInfo(self.peer));
        let (app, guard) = (self.app.clone(), InFlight::new(self.in_flight.clone()));
        Box::pin(async move {
            let _guard = guard;
            tower::ServiceExt::oneshot(app, req.map(axum::body::Body::new)).await
        })
    }
}

/// Counts a request in flight on its connection until dropped.
struct InFlight(Arc<AtomicU64>);

impl InFlight {
    fn new(counter: Arc<AtomicU64>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An IO stream that notes when it last moved a byte (milliseconds after `started`).
struct Watched<I> {
    inner: I,
    started: Instant,
    activity: Arc<AtomicU64>,
}

impl<I> Watched<I> {
    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.activity.store(ms, Ordering::Relaxed);
    }
}

impl<I: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Watched<I> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        result
    }
}

impl<I: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let result = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        result
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
