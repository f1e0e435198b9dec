//! The one place that binds and runs the coordinator's listeners: Raft RPCs (coordinators only),
//! the node-agent gRPC service and the REST API (its connections in `http`), all over the
//! `transport` accept loop, plus the background tasks that live as long as they do (break-glass
//! recovery, refusal summaries, the leader's expiry of ephemeral devices, the leader's SIEM
//! forwarding). The `Coordinator` is the `transport::Gate` of every listener.

mod http;

use crate::grpc::{DeviceService, NodeService};
use crate::raft::service::RaftService;
use crate::raft::MAX_RPC_BYTES;
use crate::refusals::Refusal;
use crate::server::{cluster_ca, Coordinator, StateRevocation};
use crate::transport::{self, Identity, Listener, ServerTls, COORDINATOR_CERT_LIFETIME};
use anyhow::Context;
use berqenas_pki::ClusterCa;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::net::TcpListener;

impl transport::Gate for Coordinator {
    fn admission(&self) -> &crate::admission::Admission {
        &self.admission
    }

    fn refuse<'a>(&'a self, refusal: Refusal<'a>) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(Coordinator::refuse(self, refusal))
    }
}

/// The Raft listener's TLS: coordinators only, retired ids refused at the handshake. Renews
/// this coordinator's certificate first when a third of its life is left and the CA is here.
fn raft_tls(c: &Arc<Coordinator>) -> anyhow::Result<ServerTls> {
    let identity = Identity { dir: c.data_dir.clone() };
    if identity.needs_renewal() {
        if let Some(ca) = cluster_ca(c) {
            identity.issue(&ca?, c.config.id, &c.config.names())?;
            tracing::info!("renewed this coordinator's certificate");
        }
    }
    let (server, client) = identity.configs(Arc::new(StateRevocation(c.clone())))?;
    if let (Ok(mut slot), Ok(fresh)) = (c.client_tls.write(), client.read()) {
        *slot = fresh.clone();
    }
    Ok(server)
}

/// How long a stopping coordinator waits for open connections (requests in flight, the agents'
/// streams) before it closes them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Binds and serves the Raft, node and API listeners, and runs the background tasks (break-glass
/// recovery, refusal summaries), until `shutdown` resolves; then stops Raft and syncs the store.
pub async fn serve(
    c: Arc<Coordinator>,
    api_tls: Option<Arc<rustls::ServerConfig>>,
    expiry_every: Duration,
    siem: Option<crate::siem::Forwarder>,
    usage: crate::apicalls::UsageConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let raft_listener = tokio::net::TcpListener::bind(c.config.raft_listen)
        .await
        .with_context(|| format!("bind raft address {}", c.config.raft_listen))?;
    let api_listener = tokio::net::TcpListener::bind(c.config.api_listen)
        .await
        .with_context(|| format!("bind api address {}", c.config.api_listen))?;
    // Bound now, not once the cluster CA has arrived: a port still free minutes after start could
    // be taken by another process, and the error would show only at shutdown.
    let node_listener = tokio::net::TcpListener::bind(c.config.node_listen)
        .await
        .with_context(|| format!("bind node address {}", c.config.node_listen))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server_tls = raft_tls(&c)?;
    let (raft_incoming, raft_accept) = transport::incoming(raft_listener, server_tls, c.clone(), Listener::Raft);
    let svc = berqenas_proto::raft::raft_server::RaftServer::new(RaftService::new(
        c.config.id,
        c.raft.clone(),
        c.proposer.clone(),
    ))
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
    let app = crate::api::router(c.clone());
    let scheme = if api_tls.is_some() { "https" } else { "http" };
    let api = http::serve_api(c.clone(), api_listener, app, api_tls, api_stop);
    tracing::info!(
        id = c.config.id,
        raft = %c.config.raft_listen,
        api = %c.config.api_listen,
        scheme,
        "coordinator serving"
    );
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    tokio::spawn(crate::recovery::watch(c.clone(), stop_rx.clone()));
    tokio::spawn(refusal_summaries(c.clone(), stop_rx.clone()));
    tokio::spawn(expire_devices(c.clone(), expiry_every, stop_rx.clone()));
    if let Some(forwarder) = siem {
        tokio::spawn(forwarder.run(c.clone(), stop_rx.clone()));
    }
    tokio::spawn(meter_usage(c.clone(), usage, stop_rx.clone()));
    tokio::spawn(backup_keys(c.clone(), stop_rx.clone()));
    let nodes = serve_nodes(c.clone(), node_listener, usage.report_refresh, stop_rx.clone());
    // Once stopping, open connections get SHUTDOWN_GRACE to finish; the node agents' desired-state
    // streams never end by themselves (a stop used to wait for them until systemd's SIGKILL), so
    // after it they are dropped and the agents reconnect to another coordinator.
    let mut grace = stop_rx.clone();
    // The first server to fail ends the coordinator: one that stopped serving must not hide
    // behind the others until shutdown.
    let servers = async {
        tokio::try_join!(
            async { grpc.await.context("raft transport server") },
            async { api.await.context("api server") },
            async { nodes.await.context("node listener") },
        )
    };
    tokio::select! {
        result = servers => {
            result?;
        }
        _ = async {
            let _ = grace.wait_for(|v| *v).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => tracing::info!(grace = ?SHUTDOWN_GRACE, "closing the connections still open"),
    }
    raft_accept.abort();
    c.shutdown().await;
    Ok(())
}

/// Writes the refusal summaries as their windows end, until `stop` flips.
async fn refusal_summaries(c: Arc<Coordinator>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let tick = (c.admission.limits.refusal_audit_every / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = stop.wait_for(|v| *v) => return,
            _ = tokio::time::sleep(tick) => {}
        }
        for cmd in c.admission.refusals.due(Instant::now(), c.config.id) {
            if let Err(e) = c.write(cmd).await {
                tracing::warn!(error = %e, "could not write a refusal summary");
            }
        }
    }
}

/// On the leader, every `every` (`serve --expiry-interval`, default 30 s): proposes the removal
/// of each ephemeral device offline past its time (`presence::due_for_expiry`), one command
/// each, re-checked at apply with the command's own time; until `stop` flips.
async fn expire_devices(c: Arc<Coordinator>, every: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.wait_for(|v| *v) => return,
            _ = tokio::time::sleep(every) => {}
        }
        if c.leader().map(|(id, _)| id) != Some(c.config.id) {
            continue;
        }
        let now = crate::time::now_ms();
        for (tenant, name) in c.read(|d| crate::state::presence::due_for_expiry(&d.state, now)) {
            let meta = crate::state::Meta {
                time_ms: crate::time::now_ms(),
                actor: format!("coordinator/{}", c.config.id),
                source: "expiry".into(),
                key_role: None,
                user_generation: None,
            };
            let op = crate::state::Op::ExpireDevice { tenant, name };
            if let Err(e) = c.write(crate::state::Command { meta, op }).await {
                tracing::warn!(error = %e, "could not expire an ephemeral device");
            }
        }
    }
}

/// Every `flush_every` (`serve --usage-flush-interval`, default 60 s): writes the API calls this
/// coordinator counted per tenant as one `Op::RecordUsage` (its counts are kept for the next
/// batch if the write fails); every batch compacts the usage ledger by this coordinator's
/// retention, and the leader writes one at least hourly for that. Until `stop` flips.
async fn meter_usage(
    c: Arc<Coordinator>,
    usage: crate::apicalls::UsageConfig,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    const COMPACT_EVERY: Duration = Duration::from_secs(3600);
    // The first idle compaction an hour after start: a short-lived coordinator writes nothing
    // unless it counted calls (each such batch compacts too).
    let mut compacted = Instant::now();
    loop {
        tokio::select! {
            _ = stop.wait_for(|v| *v) => return,
            _ = tokio::time::sleep(usage.flush_every) => {}
        }
        let leader = c.leader().map(|(id, _)| id) == Some(c.config.id);
        let compact = leader && compacted.elapsed() >= COMPACT_EVERY;
        let Some(batch) = c.api_calls.batch(c.config.id, usage.retention, compact) else { continue };
        let meta = crate::state::Meta {
            time_ms: crate::time::now_ms(),
            actor: format!("coordinator/{}", c.config.id),
            source: "usage".into(),
            key_role: None,
            user_generation: None,
        };
        let counts = batch.api_calls.clone();
        match c.write(crate::state::Command { meta, op: crate::state::Op::RecordUsage(batch) }).await {
            Ok(Ok(_)) => compacted = Instant::now(),
            Ok(Err(e)) => tracing::warn!(error = %e, "the usage batch was refused"),
            Err(e) => {
                tracing::warn!(error = %e, "could not write the usage batch; its counts go with the next");
                c.api_calls.restore(counts);
            }
        }
    }
}

/// On the leader, every second: a backup data key for each tenant that needs one
/// (`grpc::backups::make_data_keys`); until `stop` flips.
async fn backup_keys(c: Arc<Coordinator>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.wait_for(|v| *v) => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        if c.leader().map(|(id, _)| id) == Some(c.config.id) {
            crate::grpc::backups::make_data_keys(&c).await;
        }
    }
}

fn host_of(addr: &str) -> Option<String> {
    let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty() && host != "0.0.0.0" && host != "::").then(|| host.to_string())
}

/// Issues this coordinator's certificate from the CA and builds the server TLS config.
fn node_tls(c: &Arc<Coordinator>, ca: &ClusterCa) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let kc = berqenas_pki::new_key_and_csr("coordinator")?;
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    names.extend(host_of(&c.config.node_advertise));
    names.sort();
    names.dedup();
    let cert = ca.sign_csr(
        &kc.csr_pem,
        &berqenas_pki::Identity::Coordinator(c.config.id),
        &names,
        SystemTime::now(),
        COORDINATOR_CERT_LIFETIME,
    )?;
    let chain = format!("{cert}{}", ca.cert_pem);
    let revocation = Arc::new(StateRevocation(c.clone()));
    let config =
        berqenas_pki::server_config(&ca.cert_pem, &chain, &kc.key_pem, revocation, berqenas_pki::ClientAuth::Optional)?;
    Ok(Arc::new(config))
}

/// Serves the node-agent listener (gRPC `Node` and `Device` over TLS) until `stop` flips. Waits for the cluster CA to be replicated here
/// (a new coordinator has it once it has caught up); until then connections wait in the backlog.
async fn serve_nodes(
    c: Arc<Coordinator>,
    listener: TcpListener,
    report_refresh: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let ca = loop {
        if let Some(ca) = cluster_ca(&c) {
            break ca?;
        }
        tokio::select! {
            _ = stop.wait_for(|v| *v) => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    };
    let tls = Arc::new(RwLock::new(node_tls(&c, &ca)?));
    tracing::info!(addr = %c.config.node_listen, "node listener serving (mTLS)");

    // Renew our own certificate when a third of its life is left.
    let renew = {
        let (c, tls) = (c.clone(), tls.clone());
        tokio::spawn(async move {
            let mut issued = SystemTime::now();
            loop {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                if berqenas_pki::should_renew(issued, issued + COORDINATOR_CERT_LIFETIME, SystemTime::now()) {
                    match node_tls(&c, &ca) {
                        Ok(cfg) => {
                            if let Ok(mut slot) = tls.write() {
                                *slot = cfg;
                                issued = SystemTime::now();
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "renewing the coordinator certificate failed"),
                    }
                }
            }
        })
    };

    let (incoming, accept) = transport::incoming(listener, tls.clone(), c.clone(), Listener::Node);

    let svc = berqenas_proto::node::node_server::NodeServer::new(NodeService::new(c.clone(), report_refresh))
        .max_decoding_message_size(4 << 20);
    let devices = berqenas_proto::device::device_server::DeviceServer::new(DeviceService::new(c.clone()))
        .max_decoding_message_size(64 << 10);
    let result = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(svc)
        .add_service(devices)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stop.wait_for(|v| *v).await;
        })
        .await;
    accept.abort();
    renew.abort();
    result.map_err(Into::into)
}
