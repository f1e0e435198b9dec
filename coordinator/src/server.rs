//! A running coordinator: its Raft node, the gRPC transport server and the REST API, plus the
//! write path (propose locally or forward to the leader) and the read barrier (linearizable by
//! default, stale on request). `init` bootstraps a single-voter cluster in a data dir.

use crate::admission::{Admission, Limits, Slot, Slots};
use crate::raft::audit_log::AuditLog;
use crate::raft::network::{NetworkFactory, Peers};
use crate::raft::service::RaftService;
use crate::raft::state_machine::SmData;
use crate::raft::store;
use crate::raft::{raft_config, CoordinatorNode, Raft, MAX_RPC_BYTES};
use crate::state::action::Action;
use crate::state::allocation::VpnPool;
use crate::state::apikey::{self, ApiKey, Role};
use crate::state::{ClusterSettings, Command, Meta, Op, Response};
use anyhow::{bail, Context};
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// This node's identity and addresses, kept in `node.json` in its data dir.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub id: u64,
    pub raft_listen: SocketAddr,
    pub raft_advertise: String,
    pub api_listen: SocketAddr,
    pub api_advertise: String,
    /// The mTLS listener node agents connect to.
    #[serde(default = "default_node_listen")]
    pub node_listen: SocketAddr,
    #[serde(default)]
    pub node_advertise: String,
}

fn default_node_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7301))
}

impl NodeConfig {
    pub fn node(&self) -> CoordinatorNode {
        CoordinatorNode {
            raft_addr: self.raft_advertise.clone(),
            api_addr: self.api_advertise.clone(),
            node_addr: self.node_advertise.clone(),
        }
    }

    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("node.json")
    }

    /// Host names and addresses this coordinator is reached at (for its certificate).
    pub fn names(&self) -> Vec<String> {
        let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        for addr in [&self.raft_advertise, &self.api_advertise, &self.node_advertise] {
            let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if crate::raft::tls::valid_name(host) && host != "0.0.0.0" && host != "::" {
                names.push(host.to_string());
            }
        }
        names.sort();
        names.dedup();
        names
    }

    pub fn load(data_dir: &Path) -> anyhow::Result<Option<Self>> {
        let path = Self::path(data_dir);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| format!("parse {}", path.display()))?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
        }
    }

    pub fn save(&self, data_dir: &Path) -> anyhow::Result<()> {
        crate::datadir::create(data_dir).with_context(|| format!("create {}", data_dir.display()))?;
        let path = Self::path(data_dir);
        crate::datadir::write_private(&path, &serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("write {}", path.display()))
    }
}

/// Why a write did not go through Raft.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("no leader is available; try again")]
    NoLeader,
    #[error("raft: {0}")]
    Raft(String),
}

/// Why a read barrier failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("no leader is available for a consistent read; retry or ask for a stale read")]
    NoLeader,
}

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// Reflects every write acknowledged before the read started.
    #[default]
    Linearizable,
    /// This node's own state machine, possibly behind the leader.
    Stale,
}

/// How long a write waits for a leader (elections take well under this).
const WRITE_DEADLINE: Duration = Duration::from_secs(10);
const RPC_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Coordinator {
    pub config: NodeConfig,
    pub data_dir: PathBuf,
    pub raft: Raft,
    pub data: Arc<RwLock<SmData>>,
    pub peers: Peers,
    /// This coordinator's client TLS (for dialing peers); swapped on renewal.
    pub client_tls: crate::raft::tls::ClientTls,
    /// The applied index; changes when the state machine does.
    pub applied: tokio::sync::watch::Receiver<u64>,
    /// Rate limits, connection caps and the refusal counts of this coordinator's listeners.
    pub admission: Admission,
    /// Makes the store's pending (non-durable) writes durable at a clean shutdown.
    store_sync: store::StoreSync,
    /// The audit trail, read from the store (the state holds only its head).
    pub audit: AuditLog,
}

impl Coordinator {
    /// Opens the store and starts the Raft node (no listeners yet).
    pub async fn start(
        config: NodeConfig,
        data_dir: &Path,
        snapshot_logs: u64,
        limits: Limits,
    ) -> anyhow::Result<Arc<Self>> {
        crate::datadir::create(data_dir).with_context(|| format!("create {}", data_dir.display()))?;
        let (log_store, sm_store) = store::open(&data_dir.join("raft.redb"))
            .with_context(|| format!("open store in {}", data_dir.display()))?;
        // redb creates its file with the process umask; the CA key is in it. Older data dirs are
        // fixed here too.
        crate::datadir::tighten(data_dir)
            .with_context(|| format!("restrict {} to its owner (0700/0600)", data_dir.display()))?;
        let data = sm_store.data();
        let applied = sm_store.applied_watch();
        let store_sync = sm_store.syncer();
        let audit = sm_store.audit_log();
        let identity = crate::raft::tls::Identity { dir: data_dir.to_path_buf() };
        if !identity.exists() {
            bail!(
                "{} has no coordinator certificate; create a token with `cluster token create --id {}` and start \
                 with --join https://COORDINATOR:NODE_PORT --token TOKEN --ca-pin sha256:…",
                data_dir.display(),
                config.id
            );
        }
        let (_, client_tls) = identity.configs(Arc::new(berqenas_pki::NoRevocations))?;
        let peers = Peers::new(config.id, client_tls.clone());
        let raft = Raft::new(
            config.id,
            Arc::new(raft_config(snapshot_logs).context("raft config")?),
            NetworkFactory { peers: peers.clone() },
            log_store,
            sm_store,
        )
        .await
        .context("start raft")?;
        let admission = Admission::new(limits);
        Ok(Arc::new(Self {
            config,
            data_dir: data_dir.to_path_buf(),
            raft,
            data,
            peers,
            client_tls,
            applied,
            admission,
            store_sync,
            audit,
        }))
    }

    /// Reads the state machine under its lock.
    pub fn read<T>(&self, f: impl FnOnce(&SmData) -> T) -> T {
        let guard = match self.data.read() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&guard)
    }

    pub fn leader(&self) -> Option<(u64, CoordinatorNode)> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let node = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, node))
    }

    /// Proposes `cmd` through Raft: locally when leader, else forwarded to the leader. Waits for
    /// a leader during an election. A create retried after a lost reply is recognised by its
    /// unique timestamp and actor, so the caller never sees its own write as a conflict.
    pub async fn write(&self, cmd: Command) -> Result<Response, WriteError> {
        let started = Instant::now();
        let mut retried = false;
        loop {
            let outcome = match self.raft.client_write(cmd.clone()).await {
                Ok(r) => return Ok(self.settle(&cmd, r.data, retried)),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => match (f.leader_id, f.leader_node) {
                    (Some(id), Some(node)) if id != self.config.id => {
                        match self.peers.forward(id, &node.raft_addr, &cmd, RPC_TIMEOUT).await {
                            Ok(Ok(r)) => return Ok(self.settle(&cmd, r.data, retried)),
                            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => "leader moved",
                            Ok(Err(e)) => return Err(WriteError::Raft(e.to_string())),
                            Err(e) => {
                                tracing::debug!(error = %e, leader = id, "forward to leader failed");
                                retried = true;
                                "leader unreachable"
                            }
                        }
                    }
                    _ => "no leader",
                },
                Err(RaftError::APIError(e)) => return Err(WriteError::Raft(e.to_string())),
                Err(RaftError::Fatal(e)) => return Err(WriteError::Raft(e.to_string())),
            };
            if started.elapsed() > WRITE_DEADLINE {
                tracing::warn!(reason = outcome, "write gave up waiting for a leader");
                return Err(WriteError::NoLeader);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn settle(&self, cmd: &Command, resp: Response, retried: bool) -> Response {
        use crate::state::{DomainError, Reply};
        if let (true, Op::CreateTenant(spec), Err(DomainError::Conflict(_))) = (retried, &cmd.op, &resp) {
            if let Some(t) = self.read(|d| d.state.tenants.get(&spec.name).cloned()) {
                if t.created_at_ms == cmd.meta.time_ms {
                    return Ok(Reply::Tenant(Box::new(t)));
                }
            }
        }
        resp
    }

    /// Stops Raft and makes what the store holds durable, so a clean restart starts from it.
    pub async fn shutdown(&self) {
        self.raft.shutdown().await.ok();
        let sync = self.store_sync.clone();
        match tokio::task::spawn_blocking(move || sync.sync()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "store not synced at shutdown"),
            Err(e) => tracing::warn!(error = %e, "store sync task failed at shutdown"),
        }
    }

    /// Waits until this node's state machine reflects every write committed before now.
    pub async fn read_barrier(&self, consistency: Consistency) -> Result<(), ReadError> {
        if consistency == Consistency::Stale {
            return Ok(());
        }
        let started = Instant::now();
        loop {
            match self.raft.ensure_linearizable().await {
                Ok(_) => return Ok(()),
                Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                    if let (Some(id), Some(node)) = (f.leader_id, f.leader_node) {
                        if let Ok(Ok(index)) = self.peers.read_index(id, &node.raft_addr, RPC_TIMEOUT).await {
                            let wait = self.raft.wait(Some(RPC_TIMEOUT));
                            if wait.applied_index_at_least(index, "read index").await.is_ok() {
                                return Ok(());
                            }
                        }
                    }
                }
                Err(_) => {}
            }
            if started.elapsed() > WRITE_DEADLINE {
                return Err(ReadError::NoLeader);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The Raft listener's TLS: coordinators only, retired ids refused at the handshake. Renews
    /// this coordinator's certificate first when a third of its life is left and the CA is here.
    fn raft_tls(self: &Arc<Self>) -> anyhow::Result<crate::raft::tls::ServerTls> {
        let identity = crate::raft::tls::Identity { dir: self.data_dir.clone() };
        if identity.needs_renewal() {
            if let Some(ca) = crate::grpc::cluster_ca(self) {
                identity.issue(&ca?, self.config.id, &self.config.names())?;
                tracing::info!("renewed this coordinator's certificate");
            }
        }
        let (server, client) = identity.configs(Arc::new(crate::grpc::StateRevocation(self.clone())))?;
        if let (Ok(mut slot), Ok(fresh)) = (self.client_tls.write(), client.read()) {
            *slot = fresh.clone();
        }
        Ok(server)
    }

    /// Serves Raft RPCs and the REST API until `shutdown` resolves.
    pub async fn serve(
        self: Arc<Self>,
        api_tls: Option<Arc<rustls::ServerConfig>>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let raft_listener = tokio::net::TcpListener::bind(self.config.raft_listen)
            .await
            .with_context(|| format!("bind raft address {}", self.config.raft_listen))?;
        let api_listener = tokio::net::TcpListener::bind(self.config.api_listen)
            .await
            .with_context(|| format!("bind api address {}", self.config.api_listen))?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let server_tls = self.raft_tls()?;
        let (raft_incoming, raft_accept) =
            crate::raft::tls::incoming(raft_listener, server_tls, self.clone(), crate::raft::tls::Listener::Raft);
        let svc = berqenas_proto::raft::raft_server::RaftServer::new(RaftService {
            id: self.config.id,
            raft: self.raft.clone(),
        })
        .max_decoding_message_size(MAX_RPC_BYTES)
        .max_encoding_message_size(MAX_RPC_BYTES);
        let mut grpc_stop = stop_rx.clone();
        let grpc = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .add_service(svc)
            .serve_with_incoming_shutdown(raft_incoming, async move {
                let _ = grpc_stop.wait_for(|v| *v).await;
            });
        let api_stop = stop_rx.clone();
        let app = crate::api::router(self.clone());
        let scheme = if api_tls.is_some() { "https" } else { "http" };
        let api = serve_api(self.clone(), api_listener, app, api_tls, api_stop);
        tracing::info!(
            id = self.config.id,
            raft = %self.config.raft_listen,
            api = %self.config.api_listen,
            scheme,
            "coordinator serving"
        );
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        tokio::spawn(crate::recovery::watch(self.clone(), stop_rx.clone()));
        tokio::spawn(crate::refusals::run(self.clone(), stop_rx.clone()));
        let nodes = crate::grpc::serve(self.clone(), stop_rx.clone());
        let (g, a, n) = tokio::join!(grpc, api, nodes);
        g.context("raft transport server")?;
        a.context("api server")?;
        n.context("node listener")?;
        raft_accept.abort();
        self.shutdown().await;
        Ok(())
    }
}

/// Serves the REST API: plain HTTP (loopback), or TLS over the shared accept loop (refused
/// handshakes are counted like the other listeners'). Every connection takes a slot (capped
/// overall and per source), HTTP/1 request heads must arrive within the header timeout, a
/// connection with no request in flight that moves no byte for that long is closed, and one
/// whose request stalls is closed after the idle timeout.
async fn serve_api(
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
    let (mut incoming, accept) =
        crate::raft::tls::incoming(listener, Arc::new(RwLock::new(tls)), c.clone(), crate::raft::tls::Listener::Api);
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
    let refusal = crate::refusals::Refusal {
        source: Some(peer.ip()),
        action: Action::ApiConnect,
        target: "api-listener",
        reason,
        sample: false,
    };
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

/// Creates `node.json`, the cluster CA and the first admin key, and commits a single-voter
/// cluster to the store. Returns the admin token (shown once) and the CA fingerprint.
pub async fn init(
    config: NodeConfig,
    data_dir: &Path,
    vpn_pool: VpnPool,
    retention: Duration,
) -> anyhow::Result<(String, String)> {
    if NodeConfig::path(data_dir).exists() || data_dir.join("raft.redb").exists() {
        bail!("{} already holds a coordinator; refusing to initialize it again", data_dir.display());
    }
    if config.id == 0 {
        bail!("node id must be 1 or greater");
    }
    config.save(data_dir)?;
    let cluster_id = random_hex(8)?;
    let year = 1970 + i32::try_from(crate::time::now_ms() / 31_556_952_000).unwrap_or(2026);
    let ca = berqenas_pki::ClusterCa::generate(&cluster_id, year).context("create cluster CA")?;
    crate::raft::tls::Identity { dir: data_dir.to_path_buf() }.issue(&ca, config.id, &config.names())?;

    let coordinator =
        Coordinator::start(config.clone(), data_dir, crate::raft::DEFAULT_SNAPSHOT_LOGS, Limits::default()).await?;
    let members: BTreeMap<u64, CoordinatorNode> = [(config.id, config.node())].into();
    coordinator.raft.initialize(members).await.context("initialize raft")?;
    coordinator
        .raft
        .wait(Some(Duration::from_secs(10)))
        .current_leader(config.id, "single voter elects itself")
        .await
        .context("wait for leadership")?;
    let (token, key) = new_api_key(Role::Admin, None, "first admin key (init)".into(), None)?;
    let now = crate::time::now_ms();
    let settings = ClusterSettings {
        cluster_id,
        vpn_pool,
        retention_ms: u64::try_from(retention.as_millis()).unwrap_or(u64::MAX),
        ca_fingerprint: ca.fingerprint(),
        ca_cert_pem: ca.cert_pem.clone(),
        ca_key_pem: crate::state::SecretPem(ca.key_pem.clone()),
    };
    let cmd = Command {
        meta: Meta { time_ms: now, actor: "system".into(), source: "init".into(), key_role: None },
        op: Op::Bootstrap { settings, admin_key: key },
    };
    let resp = coordinator.write(cmd).await?;
    if let Err(e) = resp {
        bail!("bootstrap refused: {e}");
    }
    coordinator.shutdown().await;
    Ok((token, ca.fingerprint()))
}

/// Obtains this coordinator's certificate from a running cluster with an id-bound token,
/// trusting the cluster only if its CA matches `ca_pin`. The key is made here and never sent.
pub async fn join_as_coordinator(
    data_dir: &Path,
    id: u64,
    names: Vec<String>,
    url: &str,
    token: &str,
    ca_pin: &str,
) -> anyhow::Result<()> {
    let addr = url.strip_prefix("https://").unwrap_or(url).trim_end_matches('/');
    if addr.starts_with("http://") || !addr.contains(':') {
        bail!("--join must be https://HOST:PORT of a coordinator's node listener");
    }
    crate::datadir::create(data_dir).with_context(|| format!("create {}", data_dir.display()))?;
    let tls = Arc::new(RwLock::new(Arc::new(berqenas_pki::pinned_client_config(ca_pin)?)));
    let mut client = berqenas_proto::node::node_client::NodeClient::new(crate::raft::tls::channel(addr, tls)?);
    let kc = berqenas_pki::new_key_and_csr("coordinator")?;
    let request = berqenas_proto::node::JoinCoordinatorRequest {
        token: token.to_string(),
        csr_pem: kc.csr_pem.clone(),
        id,
        names,
    };
    let resp = tokio::time::timeout(Duration::from_secs(15), client.join_coordinator(request))
        .await
        .context("joining timed out")?
        .map_err(|s| anyhow::anyhow!("join refused: {}", s.message()))?
        .into_inner();
    crate::raft::tls::Identity { dir: data_dir.to_path_buf() }.save(&kc.key_pem, &resp.cert_chain_pem, &resp.ca_pem)
}

/// A new key record and the token that goes with it (the token is never stored).
pub fn new_api_key(
    role: Role,
    tenant: Option<crate::state::names::TenantName>,
    description: String,
    expires_at_ms: Option<u64>,
) -> anyhow::Result<(String, ApiKey)> {
    let id = random_hex(8)?;
    let secret = random_hex(32)?;
    let key = ApiKey {
        id: id.clone(),
        role,
        tenant,
        description,
        secret_hash: apikey::hash_secret(&secret),
        created_at_ms: crate::time::now_ms(),
        expires_at_ms,
        revoked_at_ms: None,
    };
    Ok((apikey::format_token(&id, &secret), key))
}

pub fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::getrandom(&mut buf).map_err(|e| anyhow::anyhow!("system randomness unavailable: {e}"))?;
    Ok(hex::encode(buf))
}
