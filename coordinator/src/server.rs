//! A running coordinator: its Raft node and store, the write path (propose locally or forward to
//! the leader), the read barrier (linearizable by default, stale on request) and the refusal
//! audit. `init` bootstraps a single-voter cluster in a data dir. The listeners that serve it are
//! in `listeners`; the handlers that call it in `api` and `grpc`.

use crate::admission::{Admission, Limits};
use crate::raft::audit_log::AuditLog;
use crate::raft::network::{NetworkFactory, Peers};
use crate::raft::propose::{ProposeFailure, Proposer};
use crate::raft::state_machine::SmData;
use crate::raft::store;
use crate::raft::{raft_config, CoordinatorNode, Raft};
use crate::refusals::Refusal;
use crate::state::allocation::VpnPool;
use crate::state::apikey::{self, ApiKey, Role};
use crate::state::{ClusterSettings, Command, Meta, Op, Response};
use anyhow::{bail, Context};
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
            if crate::transport::valid_name(host) && host != "0.0.0.0" && host != "::" {
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
    /// The coordinator that proposed the write stopped leading before it was answered (see
    /// `raft::propose::ProposeFailure::Unsettled`), or the leader it was forwarded to did not
    /// answer: it may or may not have been applied.
    #[error(
        "the leader stepped down or stopped answering with this write in flight: whether it was applied is unknown; read before retrying"
    )]
    Unsettled,
    /// A coordinator of the cluster runs a release that cannot decode this command (see
    /// `state::OPS_LEVEL`); it is refused until that coordinator is upgraded.
    #[error("coordinator {id} runs an older release (Raft ops level {level}, this needs {needs}); upgrade it first")]
    OlderRelease { id: u64, level: u32, needs: u32 },
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
    /// Batches this node's proposals (`raft::propose`).
    pub proposer: Proposer,
    pub data: Arc<RwLock<SmData>>,
    pub peers: Peers,
    /// This coordinator's client TLS (for dialing peers); swapped on renewal.
    pub client_tls: crate::transport::ClientTls,
    /// The applied index; changes when the state machine does.
    pub applied: tokio::sync::watch::Receiver<u64>,
    /// Rate limits, connection caps and the refusal counts of this coordinator's listeners.
    pub admission: Admission,
    /// API calls per tenant counted here since the last usage batch (`listeners::meter_usage`).
    pub api_calls: crate::apicalls::ApiCalls,
    /// Makes the store's pending (non-durable) writes durable at a clean shutdown.
    store_sync: store::StoreSync,
    /// The audit trail, read from the store (the state holds only its head).
    pub audit: AuditLog,
    /// The newest commit index this node's log store saw (for `/metrics`).
    pub commit_index: store::CommitIndex,
    /// Price plans per tier (`serve --billing-plans`), set once at start; none: invoicing refused.
    pub price_plans: std::sync::OnceLock<crate::state::billing::plan::PricePlans>,
    /// The panel's look (`serve --branding`), set once at start; none: the default.
    pub branding: std::sync::OnceLock<crate::branding::Branding>,
    /// How long a panel session lasts (`serve --session-ttl`), set once at start; 12 h if unset.
    pub session_ttl: std::sync::OnceLock<std::time::Duration>,
    /// The cluster backup key (`backup.key`): wraps and unwraps tenants' data keys. `None` on a
    /// coordinator whose data directory lacks it (made before backups existed): it then makes
    /// and sends no data keys.
    pub backup_key: Option<Arc<crate::backupkey::ClusterKey>>,
    /// How far the backups under way got, as db nodes report them here (memory only).
    pub backup_progress: crate::backupprogress::ProgressBoard,
    /// The state machine's store, for `snapshot save` to read the current snapshot from.
    pub state_machine: crate::raft::state_machine::StateMachineStore,
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
        let state_machine = sm_store.clone();
        let commit_index = log_store.commit_index();
        let identity = crate::transport::Identity { dir: data_dir.to_path_buf() };
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
        log_store.start_as_follower(config.id).context("step down from a leadership held before the restart")?;
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
        let proposer = Proposer::spawn(raft.clone());
        let backup_key = crate::backupkey::ClusterKey::load(data_dir)?.map(Arc::new);
        if backup_key.is_none() {
            tracing::warn!(
                dir = %data_dir.display(),
                "no cluster backup key (backup.key) in the data directory: this coordinator makes and sends no backup data keys"
            );
        }
        Ok(Arc::new(Self {
            config,
            data_dir: data_dir.to_path_buf(),
            raft,
            proposer,
            data,
            peers,
            client_tls,
            applied,
            admission,
            api_calls: Default::default(),
            store_sync,
            audit,
            commit_index,
            price_plans: std::sync::OnceLock::new(),
            branding: std::sync::OnceLock::new(),
            session_ttl: std::sync::OnceLock::new(),
            backup_key,
            backup_progress: Default::default(),
            state_machine,
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
    /// a leader during an election, and proposes again only what certainly was not applied: a
    /// node answered that it does not lead, or this node could not connect to the leader. A
    /// forward that failed after it was sent (a timeout, a dropped connection, a leader that
    /// stepped down with it in flight) may have been applied: it is `Unsettled`, never sent
    /// again, so no write is applied twice.
    pub async fn write(&self, cmd: Command) -> Result<Response, WriteError> {
        self.check_ops_level(&cmd.op).await?;
        let started = Instant::now();
        loop {
            let proposed = match self.proposer.write(cmd.clone()).await {
                Ok(r) => return Ok(r),
                Err(ProposeFailure::Unsettled) => return Err(WriteError::Unsettled),
                Err(ProposeFailure::Raft(e)) => *e,
            };
            let outcome = match proposed {
                RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => match (f.leader_id, f.leader_node) {
                    (Some(id), Some(node)) if id != self.config.id => {
                        match self.peers.forward(id, &node.raft_addr, &cmd, RPC_TIMEOUT).await {
                            Ok(Ok(r)) => return Ok(r),
                            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => "leader moved",
                            Ok(Err(e)) => return Err(WriteError::Raft(e.to_string())),
                            Err(e) if e.never_sent() => {
                                tracing::debug!(error = %e, leader = id, "could not reach the leader");
                                "leader unreachable"
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, leader = id, "a forwarded write failed after it was sent");
                                return Err(WriteError::Unsettled);
                            }
                        }
                    }
                    _ => "no leader",
                },
                RaftError::APIError(e) => return Err(WriteError::Raft(e.to_string())),
                RaftError::Fatal(e) => return Err(WriteError::Raft(e.to_string())),
            };
            if started.elapsed() > WRITE_DEADLINE {
                tracing::warn!(reason = outcome, "write gave up waiting for a leader");
                return Err(WriteError::NoLeader);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Refuses an op newer than level 1 while a coordinator that answers runs a release that does
    /// not know it: it could not decode the entry and would stop replicating. A member that does
    /// not answer is not waited for (logged); if it comes back on an older release it stays
    /// behind, refusing the entry, until it is upgraded.
    async fn check_ops_level(&self, op: &Op) -> Result<(), WriteError> {
        let needs = op.min_level();
        if needs <= 1 {
            return Ok(());
        }
        let members: Vec<(u64, CoordinatorNode)> = {
            let metrics = self.raft.metrics().borrow().clone();
            metrics.membership_config.membership().nodes().map(|(id, n)| (*id, n.clone())).collect()
        };
        for (id, node) in members.into_iter().filter(|(id, _)| *id != self.config.id) {
            match self.peers.hello(&node.raft_addr, RPC_TIMEOUT).await {
                Ok((answered, level)) if answered == id && level < needs => {
                    return Err(WriteError::OlderRelease { id, level, needs })
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(id, error = %e, "could not ask a coordinator for its release's ops level"),
            }
        }
        Ok(())
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

    /// Counts a refusal and writes its audit entry when it is its source's sample. Never fails.
    pub async fn refuse(&self, r: Refusal<'_>) {
        if let Some(cmd) = self.admission.refusals.record(&r, Instant::now()) {
            if let Err(e) = self.write(cmd).await {
                tracing::warn!(error = %e, action = %r.action, "could not audit a refusal");
            }
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
}

/// Revocation backed by the replicated state: revoked or unknown nodes and retired
/// coordinators are refused.
pub struct StateRevocation(pub Arc<Coordinator>);

impl std::fmt::Debug for StateRevocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateRevocation")
    }
}

impl berqenas_pki::Revocation for StateRevocation {
    fn is_revoked(&self, identity: &berqenas_pki::Identity) -> bool {
        use berqenas_pki::Identity;
        self.0.read(|d| match identity {
            Identity::Node(id) => d.state.nodes.get(id).is_none_or(|n| n.revoked),
            Identity::Coordinator(id) => d.state.retired_coordinators.contains(id),
            // A device of that tenant with that id, not revoked (pending ones may heartbeat).
            Identity::Device { tenant, id } => {
                d.state.devices.get(id).is_none_or(|dev| dev.tenant.as_str() != tenant || dev.revoked_at_ms.is_some())
            }
        })
    }
}

/// The CA as loaded from the replicated settings, once they exist.
pub fn cluster_ca(c: &Coordinator) -> Option<Result<berqenas_pki::ClusterCa, berqenas_pki::PkiError>> {
    c.read(|d| d.state.settings.clone())
        .filter(|s| !s.ca_key_pem.0.is_empty())
        .map(|s| berqenas_pki::ClusterCa::from_pem(&s.ca_cert_pem, &s.ca_key_pem.0))
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
    crate::backupkey::ClusterKey::generate()?.save(data_dir)?;
    let cluster_id = random_hex(8)?;
    let year = 1970 + i32::try_from(crate::time::now_ms() / 31_556_952_000).unwrap_or(2026);
    let ca = berqenas_pki::ClusterCa::generate(&cluster_id, year).context("create cluster CA")?;
    crate::transport::Identity { dir: data_dir.to_path_buf() }.issue(&ca, config.id, &config.names())?;

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
        meta: Meta {
            time_ms: now,
            actor: "system".into(),
            source: "init".into(),
            key_role: None,
            user_generation: None,
        },
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
    let mut client = berqenas_proto::node::node_client::NodeClient::new(crate::transport::channel(addr, tls)?);
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
    match &resp.backup_key {
        Some(k) => {
            let key: [u8; 32] =
                k.key.as_slice().try_into().map_err(|_| anyhow::anyhow!("the cluster backup key is not 32 bytes"))?;
            let key = crate::backupkey::ClusterKey::from_bytes(key);
            if key.id != k.id {
                bail!("the cluster backup key does not match its id {}", k.id);
            }
            key.save(data_dir)?;
        }
        None => tracing::warn!("the cluster sent no backup key: this coordinator will not serve backup data keys"),
    }
    crate::transport::Identity { dir: data_dir.to_path_buf() }.save(&kc.key_pem, &resp.cert_chain_pem, &resp.ca_pem)
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
