//! The `Node` gRPC service: join with a token, renew a certificate, watch the desired state,
//! stream status reports.

use super::error::internal;
use super::report::{conditions, gateway_status, significant, wireguard_backend};
use super::NODE_CERT_LIFETIME;
use crate::server::cluster_ca;
use crate::server::Coordinator;
use crate::state::action::Action;
use crate::state::apikey::hash_secret;
use crate::state::desired::{self, Assignment};
use crate::state::gateway::{GatewayNode, GatewaySettings, PortRange};
use crate::state::names::validate_label_part;
use crate::state::node::{Node, NodeCapacity, NodeRole, NodeTenantStatus, Report};
use crate::state::{Command, Meta, Op, Reply};
use berqenas_pki::Identity;
use berqenas_proto::node as pb;
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// How long changes are gathered before a new state is sent, and the longest a burst can delay it.
const DEBOUNCE: Duration = Duration::from_millis(20);
const MAX_DEBOUNCE: Duration = Duration::from_millis(200);
/// An idle watch gets a bookmark this often.
pub const KEEPALIVE: Duration = Duration::from_secs(5);
pub struct NodeService {
    c: Arc<Coordinator>,
    /// A report that changes nothing but its usage samples is written this often (it refreshes
    /// last-seen and feeds the usage ledger): `serve --report-refresh`.
    report_refresh: Duration,
    last_reports: Mutex<HashMap<u64, (Report, Instant)>>,
}

impl NodeService {
    /// Whether a join token with this id and secret hash is usable, as this coordinator knows it;
    /// when it does not, after catching up with the leader (a token created a moment ago through
    /// another coordinator may not be applied here yet). Costs a read index, never a Raft write.
    async fn token_known(&self, token_id: &str, secret_hash: &str) -> bool {
        if self.c.read(|d| known_token(&d.state, token_id, secret_hash)) {
            return true;
        }
        if let Err(e) = self.c.read_barrier(crate::server::Consistency::Linearizable).await {
            tracing::debug!(error = %e, "could not catch up with the leader to check a join token");
            return false;
        }
        self.c.read(|d| known_token(&d.state, token_id, secret_hash))
    }

    pub fn new(c: Arc<Coordinator>, report_refresh: Duration) -> Self {
        Self { c, report_refresh, last_reports: Mutex::new(HashMap::new()) }
    }
}

fn source<T>(req: &Request<T>) -> String {
    req.remote_addr().map(|a| a.ip().to_string()).unwrap_or_else(|| "unknown".into())
}

/// The node id in the verified client certificate.
fn node_identity<T>(req: &Request<T>) -> Result<u64, Status> {
    let certs = req.peer_certs().ok_or_else(|| Status::unauthenticated("a node certificate is required"))?;
    let leaf = certs.first().ok_or_else(|| Status::unauthenticated("a node certificate is required"))?;
    match berqenas_pki::peer_identity(leaf) {
        Ok(Identity::Node(id)) => Ok(id),
        Ok(other) => Err(Status::permission_denied(format!("{other} is not a node"))),
        Err(e) => Err(Status::unauthenticated(e.to_string())),
    }
}

fn parse_roles(raw: &[String]) -> Result<std::collections::BTreeSet<NodeRole>, String> {
    raw.iter()
        .map(|r| match r.as_str() {
            "gateway" => Ok(NodeRole::Gateway),
            "db" => Ok(NodeRole::Db),
            other => Err(format!("unknown role {:?}; use gateway or db", other.chars().take(32).collect::<String>())),
        })
        .collect()
}

fn capacity(c: Option<pb::Capacity>) -> NodeCapacity {
    let c = c.unwrap_or_default();
    NodeCapacity {
        cpus: c.cpus,
        memory_bytes: c.memory_bytes,
        disk_bytes: c.disk_bytes,
        max_tenants: if c.max_tenants == 0 { 500 } else { c.max_tenants.min(100_000) },
    }
}

fn validate_join(req: &pb::JoinRequest) -> Result<(String, String, Node), String> {
    let (id, secret) = crate::state::node::split_join_token(&req.token).ok_or("malformed join token")?;
    let roles = parse_roles(&req.roles)?;
    if roles.is_empty() {
        return Err("at least one role is required".into());
    }
    if req.labels.len() > 16 {
        return Err("at most 16 labels".into());
    }
    for (k, v) in &req.labels {
        validate_label_part(k).map_err(|e| e.to_string())?;
        validate_label_part(v).map_err(|e| e.to_string())?;
    }
    let address_ok = !req.address.is_empty()
        && req.address.len() <= 253
        && req.address.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if !address_ok {
        return Err(format!("invalid node address {:?}", req.address.chars().take(64).collect::<String>()));
    }
    if req.csr_pem.len() > 8192 {
        return Err("CSR is too large".into());
    }
    let settings = gateway_settings(req, &roles)?;
    let realtime_address = realtime_address(&req.realtime_address, &roles)?;
    let node = Node {
        id: 0,
        roles,
        labels: req.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        capacity: capacity(req.capacity),
        address: req.address.clone(),
        last_seen_ms: 0,
        cordoned: false,
        revoked: false,
        applied_revision: 0,
        gateway: GatewayNode { settings, ..Default::default() },
        realtime_address,
        db_logins_recorded: 0,
    };
    Ok((id.to_string(), hash_secret(secret), node))
}

/// A db node's realtime ingest address from a join: `host:port`, db role only; empty: none.
fn realtime_address(raw: &str, roles: &std::collections::BTreeSet<NodeRole>) -> Result<Option<String>, String> {
    if raw.is_empty() {
        return Ok(None);
    }
    if !roles.contains(&NodeRole::Db) {
        return Err("a realtime address is for the db role only".into());
    }
    let shown = || raw.chars().take(64).collect::<String>();
    let (host, port) =
        raw.rsplit_once(':').ok_or_else(|| format!("realtime address {:?} is not host:port", shown()))?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let port_ok = port.parse::<u16>().is_ok_and(|p| p > 0) && !port.starts_with('0');
    if raw.len() > 260 || !port_ok || !crate::transport::valid_name(host) {
        return Err(format!("realtime address {:?} is not host:port with a port within 1-65535", shown()));
    }
    Ok(Some(raw.to_string()))
}

/// The gateway's public address and port range from a join: both or neither, gateway role only.
fn gateway_settings(
    req: &pb::JoinRequest,
    roles: &std::collections::BTreeSet<NodeRole>,
) -> Result<Option<GatewaySettings>, String> {
    if req.public_address.is_empty() && req.public_port_first == 0 && req.public_port_last == 0 {
        return Ok(None);
    }
    if !roles.contains(&NodeRole::Gateway) {
        return Err("a public address and public ports are for the gateway role only".into());
    }
    let public_address: Ipv4Addr = req.public_address.parse().map_err(|_| {
        format!("public address {:?} is not an IPv4 address", req.public_address.chars().take(64).collect::<String>())
    })?;
    if public_address.is_unspecified() || public_address.is_broadcast() || public_address.is_multicast() {
        return Err(format!("public address {public_address} cannot be reached as a unicast address"));
    }
    let port = |p: u32| u16::try_from(p).map_err(|_| "public ports must be within 1-65535".to_string());
    let public_ports = PortRange::new(port(req.public_port_first)?, port(req.public_port_last)?)
        .map_err(|_| "public ports must be a range first-last within 1-65535 (both given)".to_string())?;
    Ok(Some(GatewaySettings { public_address, public_ports }))
}

fn coordinators(c: &Coordinator) -> Vec<pb::Coordinator> {
    c.read(|d| {
        d.membership
            .membership()
            .nodes()
            .filter(|(_, n)| !n.node_addr.is_empty())
            .map(|(id, n)| pb::Coordinator { id: *id, address: n.node_addr.clone() })
            .collect()
    })
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::DesiredState, Status>> + Send>>;

/// Whether `token_id` names an issued token with this secret (used or not: a holder of the real
/// secret is attributable, and the state machine gives it the precise refusal).
fn known_token(state: &crate::state::State, token_id: &str, secret_hash: &str) -> bool {
    use subtle::ConstantTimeEq;
    state.join_tokens.get(token_id).is_some_and(|t| bool::from(t.secret_hash.as_bytes().ct_eq(secret_hash.as_bytes())))
}

impl NodeService {
    /// A join refused before it reached Raft: counted for its source (one audit entry per source
    /// per window at most), `InvalidArgument`, or `ResourceExhausted` past the source's limit.
    async fn refuse_join(&self, ip: &Option<std::net::IpAddr>, action: Action, target: &str, reason: String) -> Status {
        tracing::debug!(source = ?ip, reason, "refused a join");
        let refusal = crate::refusals::Refusal { source: *ip, action, target, reason: &reason, sample: true };
        self.c.refuse(refusal).await;
        match self.c.admission.charge_anonymous(*ip) {
            Ok(()) => Status::invalid_argument(reason),
            Err(wait) => Status::resource_exhausted(format!(
                "too many refused attempts from this address; retry in {} s ({reason})",
                wait.as_secs().max(1)
            )),
        }
    }
}

#[tonic::async_trait]
impl pb::node_server::Node for NodeService {
    async fn join(&self, request: Request<pb::JoinRequest>) -> Result<Response<pb::JoinResponse>, Status> {
        let src = source(&request);
        let request_ip = request.remote_addr().map(|a| a.ip());
        let req = request.into_inner();
        let meta = |actor: String| Meta {
            time_ms: crate::time::now_ms(),
            actor,
            source: src.clone(),
            key_role: None,
            user_generation: None,
        };
        let ca = cluster_ca(&self.c)
            .ok_or_else(|| Status::unavailable("this coordinator has no cluster CA yet"))?
            .map_err(|e| internal("loading the cluster CA", e))?;
        let checked = validate_join(&req).and_then(|v| {
            // Refuse an unusable CSR before the token is spent.
            ca.sign_csr(&req.csr_pem, &Identity::Node(1), &[], SystemTime::now(), Duration::from_secs(60))
                .map_err(|e| e.to_string())?;
            Ok(v)
        });
        let (token_id, secret_hash, node) = match checked {
            Ok(v) => v,
            Err(reason) => return Err(self.refuse_join(&request_ip, Action::NodeJoin, "node", reason).await),
        };
        // A token nobody issued (or a wrong secret) is refused here, counted, and costs no Raft
        // write; the state machine re-checks every token at apply.
        if !self.token_known(&token_id, &secret_hash).await {
            let reason = "join token is invalid, expired or already used".to_string();
            return Err(self.refuse_join(&request_ip, Action::NodeJoin, "node", reason).await);
        }
        let actor = format!("jointoken/{token_id}");
        let resp =
            self.c.write(Command { meta: meta(actor), op: Op::JoinNode { token_id, secret_hash, node } }).await?;
        let node = match resp {
            Ok(Reply::Node(n)) => n,
            Ok(other) => return Err(internal("join", format!("unexpected reply {other:?}"))),
            Err(e) => {
                tracing::warn!(source = %src, reason = %e, "refused a join");
                return Err(e.into());
            }
        };
        // Reply only once this coordinator has applied the join, so the node's first mTLS
        // connection here finds it (a follower may otherwise still call it unknown).
        if let Err(e) = self.c.read_barrier(crate::server::Consistency::Linearizable).await {
            tracing::warn!(error = %e, "join applied on the leader but not yet here");
        }
        let cert = ca
            .sign_csr(&req.csr_pem, &Identity::Node(node.id), &[], SystemTime::now(), NODE_CERT_LIFETIME)
            .map_err(|e| internal("signing a certificate", e))?;
        tracing::info!(node = node.id, source = %src, "node joined");
        Ok(Response::new(pb::JoinResponse {
            node_id: node.id,
            cert_chain_pem: format!("{cert}{}", ca.cert_pem),
            ca_pem: ca.cert_pem.clone(),
            coordinators: coordinators(&self.c),
        }))
    }

    async fn join_coordinator(
        &self,
        request: Request<pb::JoinCoordinatorRequest>,
    ) -> Result<Response<pb::JoinCoordinatorResponse>, Status> {
        let src = source(&request);
        let request_ip = request.remote_addr().map(|a| a.ip());
        let req = request.into_inner();
        let ca = cluster_ca(&self.c)
            .ok_or_else(|| Status::unavailable("this coordinator has no cluster CA yet"))?
            .map_err(|e| internal("loading the cluster CA", e))?;
        let meta = |actor: String| Meta {
            time_ms: crate::time::now_ms(),
            actor,
            source: src.clone(),
            key_role: None,
            user_generation: None,
        };
        let checked = (|| -> Result<(String, String), String> {
            let (id, secret) = crate::state::node::split_join_token(&req.token).ok_or("malformed coordinator token")?;
            if req.id == 0 {
                return Err("coordinator id must be 1 or greater".into());
            }
            if req.csr_pem.len() > 8192 {
                return Err("CSR is too large".into());
            }
            if req.names.len() > 8 || !req.names.iter().all(|n| crate::transport::valid_name(n)) {
                return Err("at most 8 valid host names or addresses".into());
            }
            ca.sign_csr(
                &req.csr_pem,
                &Identity::Coordinator(req.id),
                &req.names,
                SystemTime::now(),
                Duration::from_secs(60),
            )
            .map_err(|e| e.to_string())?;
            Ok((id.to_string(), hash_secret(secret)))
        })();
        let (token_id, secret_hash) = match checked {
            Ok(v) => v,
            Err(reason) => return Err(self.refuse_join(&request_ip, Action::ClusterJoin, "coordinator", reason).await),
        };
        if !self.token_known(&token_id, &secret_hash).await {
            let reason = "coordinator token is invalid, expired, used or for another id".to_string();
            return Err(self.refuse_join(&request_ip, Action::ClusterJoin, "coordinator", reason).await);
        }
        let op = Op::JoinCoordinator { token_id: token_id.clone(), secret_hash, id: req.id };
        let resp = self.c.write(Command { meta: meta(format!("jointoken/{token_id}")), op }).await?;
        if let Err(e) = resp {
            tracing::warn!(source = %src, reason = %e, "refused a coordinator join");
            return Err(e.into());
        }
        let cert = ca
            .sign_csr(
                &req.csr_pem,
                &Identity::Coordinator(req.id),
                &req.names,
                SystemTime::now(),
                crate::transport::COORDINATOR_CERT_LIFETIME,
            )
            .map_err(|e| internal("signing a certificate", e))?;
        tracing::info!(coordinator = req.id, source = %src, "issued a coordinator certificate");
        Ok(Response::new(pb::JoinCoordinatorResponse {
            cert_chain_pem: format!("{cert}{}", ca.cert_pem),
            ca_pem: ca.cert_pem.clone(),
            backup_key: self
                .c
                .backup_key
                .as_ref()
                .map(|k| pb::ClusterBackupKey { id: k.id.clone(), key: k.bytes().to_vec() }),
        }))
    }

    async fn renew(&self, request: Request<pb::RenewRequest>) -> Result<Response<pb::RenewResponse>, Status> {
        let id = node_identity(&request)?;
        let ca = cluster_ca(&self.c)
            .ok_or_else(|| Status::unavailable("this coordinator has no cluster CA yet"))?
            .map_err(|e| internal("loading the cluster CA", e))?;
        let req = request.into_inner();
        if req.csr_pem.len() > 8192 {
            return Err(Status::invalid_argument("CSR is too large"));
        }
        let cert = ca
            .sign_csr(&req.csr_pem, &Identity::Node(id), &[], SystemTime::now(), NODE_CERT_LIFETIME)
            .map_err(|e| Status::invalid_argument(format!("unusable CSR: {e}")))?;
        tracing::info!(node = id, "renewed a node certificate");
        Ok(Response::new(pb::RenewResponse { cert_chain_pem: format!("{cert}{}", ca.cert_pem) }))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, request: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let id = node_identity(&request)?;
        let last_applied = request.get_ref().last_applied_revision;
        let c = self.c.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut applied = c.applied.clone();
            // A lagging coordinator waits until it has applied what the agent already has.
            while c.read(|d| d.last_applied.map_or(0, |l| l.index)) < last_applied {
                if tokio::time::timeout(KEEPALIVE, applied.changed()).await.is_ok_and(|r| r.is_err()) {
                    return;
                }
                if tx.is_closed() {
                    return;
                }
            }
            let mut last_sent: Option<Vec<Assignment>> = None;
            let mut last_send_at = Instant::now();
            let mut logins_sent = 0;
            loop {
                let (revision, desired, logins) = c.read(|d| {
                    let logins = d.state.nodes.get(&id).map_or(0, |n| n.db_logins_recorded);
                    (d.last_applied.map_or(0, |l| l.index), desired::for_node(&d.state, id), logins)
                });
                let Some(desired) = desired else {
                    let _ = tx.send(Err(Status::permission_denied(format!("node {id} is revoked or unknown")))).await;
                    return;
                };
                let msg = if last_sent.as_ref() != Some(&desired) {
                    let msg = pb::DesiredState {
                        revision,
                        bookmark: false,
                        node_id: id,
                        tenants: desired.iter().map(|a| super::assignment::to_pb(a, c.backup_key.as_deref())).collect(),
                        coordinators: coordinators(&c),
                        db_logins_recorded: logins,
                    };
                    last_sent = Some(desired);
                    Some(msg)
                } else if last_send_at.elapsed() >= KEEPALIVE || logins != logins_sent {
                    // A bookmark also tells the agent which of its logins are recorded.
                    Some(pb::DesiredState {
                        revision,
                        bookmark: true,
                        node_id: id,
                        tenants: vec![],
                        coordinators: vec![],
                        db_logins_recorded: logins,
                    })
                } else {
                    None
                };
                if let Some(msg) = msg {
                    if tx.send(Ok(msg)).await.is_err() {
                        return;
                    }
                    last_send_at = Instant::now();
                    logins_sent = logins;
                }
                // Wait for a change (or the keepalive), then gather a burst.
                let wait = KEEPALIVE.saturating_sub(last_send_at.elapsed());
                match tokio::time::timeout(wait, applied.changed()).await {
                    Ok(Err(_)) => return,
                    Ok(Ok(())) => {
                        let started = Instant::now();
                        loop {
                            tokio::time::sleep(DEBOUNCE).await;
                            let more = tokio::time::timeout(Duration::ZERO, applied.changed()).await.is_ok();
                            if !more || started.elapsed() >= MAX_DEBOUNCE {
                                break;
                            }
                        }
                    }
                    Err(_) => {}
                }
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn report(
        &self,
        request: Request<tonic::Streaming<pb::StatusReport>>,
    ) -> Result<Response<pb::ReportAck>, Status> {
        let id = node_identity(&request)?;
        let src = source(&request);
        let mut stream = request.into_inner();
        let mut last_revision = 0;
        while let Some(msg) = stream.message().await? {
            if msg.tenants.len() > 100_000 {
                return Err(Status::invalid_argument("too many tenants in one report"));
            }
            last_revision = msg.applied_revision;
            let tenants: BTreeMap<String, NodeTenantStatus> = msg
                .tenants
                .iter()
                .map(|t| {
                    let reason = (!t.reason.is_empty()).then(|| t.reason.chars().take(300).collect());
                    (
                        t.name.clone(),
                        NodeTenantStatus {
                            ready: t.ready,
                            reason,
                            revision: t.revision,
                            db_bytes: t.db_bytes,
                            quota_exceeded: t.quota_exceeded,
                            connections: t.connections,
                            gateway: t.gateway.as_ref().map(gateway_status),
                            events_total: t.events_total,
                        },
                    )
                })
                .collect();
            let report = Report {
                node_id: id,
                applied_revision: msg.applied_revision,
                tenants,
                capacity: msg.capacity.map(|c| capacity(Some(c))),
                wireguard_backend: wireguard_backend(&msg.wireguard_backend),
                conditions: conditions(&msg.conditions),
            };
            super::report::record_connects(&self.c, id, &src, &report).await?;
            super::backups::record(&self.c, id, &src, &msg.backups).await?;
            super::dblogins::record(&self.c, id, &src, &super::dblogins::parse(id, &msg.db_logins)).await?;
            super::backups::progress(&self.c, id, &msg.backup_progress);
            let due = {
                let last = self.last_reports.lock().map_err(|e| internal("report cache", e))?;
                match last.get(&id) {
                    Some((prev, at)) => {
                        significant(prev) != significant(&report) || at.elapsed() >= self.report_refresh
                    }
                    None => true,
                }
            };
            if !due {
                continue;
            }
            let cmd = Command { meta: super::node_meta(id, &src), op: Op::NodeReport(report.clone()) };
            match self.c.write(cmd).await {
                Ok(Ok(_)) => {
                    if let Ok(mut last) = self.last_reports.lock() {
                        last.insert(id, (report, Instant::now()));
                    }
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Response::new(pb::ReportAck { revision: last_revision }))
    }
}
