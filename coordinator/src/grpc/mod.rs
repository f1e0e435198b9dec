//! The node-agent listener: gRPC `Node` service over TLS. Joining needs no client certificate
//! (the one-time token is the credential); every other call needs a node certificate from the
//! cluster CA, and revoked or unknown identities are refused during the handshake.

pub mod error;
mod node;

use crate::server::Coordinator;
use berqenas_pki::{ClusterCa, Identity, Revocation};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;

/// Lifetime of a coordinator's own certificate; renewed when a third is left.
pub const COORDINATOR_CERT_LIFETIME: Duration = Duration::from_secs(30 * 86_400);
/// Lifetime of node certificates; agents renew when a third is left.
pub const NODE_CERT_LIFETIME: Duration = Duration::from_secs(86_400);

/// Revocation backed by the replicated state: revoked or unknown nodes and retired
/// coordinators are refused.
pub struct StateRevocation(pub Arc<Coordinator>);

impl std::fmt::Debug for StateRevocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateRevocation")
    }
}

impl Revocation for StateRevocation {
    fn is_revoked(&self, identity: &Identity) -> bool {
        self.0.read(|d| match identity {
            Identity::Node(id) => d.state.nodes.get(id).is_none_or(|n| n.revoked),
            Identity::Coordinator(id) => d.state.retired_coordinators.contains(id),
            Identity::Device { .. } => true,
        })
    }
}

/// The CA as loaded from the replicated settings, once they exist.
pub fn cluster_ca(c: &Coordinator) -> Option<Result<ClusterCa, berqenas_pki::PkiError>> {
    c.read(|d| d.state.settings.clone())
        .filter(|s| !s.ca_key_pem.0.is_empty())
        .map(|s| ClusterCa::from_pem(&s.ca_cert_pem, &s.ca_key_pem.0))
}

fn host_of(addr: &str) -> Option<String> {
    let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty() && host != "0.0.0.0" && host != "::").then(|| host.to_string())
}

/// Issues this coordinator's certificate from the CA and builds the server TLS config.
fn server_tls(c: &Arc<Coordinator>, ca: &ClusterCa) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let kc = berqenas_pki::new_key_and_csr("coordinator")?;
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    names.extend(host_of(&c.config.node_advertise));
    names.sort();
    names.dedup();
    let cert = ca.sign_csr(
        &kc.csr_pem,
        &Identity::Coordinator(c.config.id),
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

/// Serves the node listener until `stop` flips. Waits for the cluster CA to be replicated here
/// (a new coordinator has it once it has caught up).
pub async fn serve(c: Arc<Coordinator>, mut stop: tokio::sync::watch::Receiver<bool>) -> anyhow::Result<()> {
    let ca = loop {
        if let Some(ca) = cluster_ca(&c) {
            break ca?;
        }
        tokio::select! {
            _ = stop.wait_for(|v| *v) => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    };
    let tls = Arc::new(RwLock::new(server_tls(&c, &ca)?));
    let listener = TcpListener::bind(c.config.node_listen).await?;
    tracing::info!(addr = %c.config.node_listen, "node listener serving (mTLS)");

    // Renew our own certificate when a third of its life is left.
    let renew = {
        let (c, tls) = (c.clone(), tls.clone());
        tokio::spawn(async move {
            let mut issued = SystemTime::now();
            loop {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                if berqenas_pki::should_renew(issued, issued + COORDINATOR_CERT_LIFETIME, SystemTime::now()) {
                    match server_tls(&c, &ca) {
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

    let (incoming, accept) =
        crate::raft::tls::incoming(listener, tls.clone(), c.clone(), crate::raft::tls::Listener::Node);

    let svc = berqenas_proto::node::node_server::NodeServer::new(node::NodeService::new(c.clone()))
        .max_decoding_message_size(4 << 20);
    let result = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stop.wait_for(|v| *v).await;
        })
        .await;
    accept.abort();
    renew.abort();
    result.map_err(Into::into)
}
