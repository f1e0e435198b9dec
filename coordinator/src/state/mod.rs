//! The replicated domain state and the commands that change it. `State::apply` is a pure,
//! deterministic function of the state and the command: no clock, no randomness, no IO. Every
//! command, accepted or refused, appends exactly one audit entry in the same step.
//! tidy: long because it is the table of contents of the commands: every `Op` variant with its
//! key needs, its audit `describe` line and its `dispatch` line, each one line per command.

pub mod action;
pub mod allocation;
pub mod apikey;
pub mod audit;
pub mod backup;
pub mod billing;
pub mod cluster;
pub mod connect;
pub mod dblogin;
pub mod desired;
pub mod device;
pub mod devicetoken;
pub mod exposure;
pub mod firewall;
pub mod gateway;
pub mod names;
pub mod node;
pub mod period;
pub mod placement;
pub mod presence;
pub mod quota;
pub mod tenant;
pub mod usage;
pub mod user;
pub mod wgquick;
pub use cluster::{ClusterSettings, SecretPem};
pub use tenant::{refresh_readiness, Lifecycle};

use action::{Action, Details, Facts, Target};
use apikey::{ApiKey, Role};
use audit::{Draft, Outcome};
use names::TenantName;
use node::{JoinToken, Node, NodeRole, Report};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use tenant::{Tenant, TenantPatch, TenantSpec};

/// Who asked, when and from where; stamped by the coordinator that received the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub time_ms: u64,
    pub actor: String,
    pub source: String,
    /// Set when `actor` is an API key id: the role the edge authenticated the key with. The state
    /// machine re-checks the key at apply (`State::authorise`), so a key revoked a moment ago
    /// cannot act through a lagging follower. Absent on older log entries and non-key actors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_role: Option<Role>,
    /// Set when `actor` is a signed-in user (`user/{name}`): the user's generation its session was
    /// made at. The state machine re-checks the user at apply (`user::recheck`): active, same
    /// generation, a role that allows the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_generation: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Bootstrap {
        settings: ClusterSettings,
        admin_key: ApiKey,
    },
    CreateTenant(TenantSpec),
    UpdateTenant {
        name: TenantName,
        patch: TenantPatch,
    },
    Lifecycle {
        name: TenantName,
        step: Lifecycle,
    },
    CreateApiKey(ApiKey),
    RevokeApiKey {
        id: String,
    },
    /// Break-glass: root on coordinator host `host` minted an admin key from the data directory
    /// (`berqenas-coordinator recover-admin`); only the key's hash travels.
    RecoverAdmin {
        key: ApiKey,
        host: String,
    },
    RegisterNode(Node),
    CreateJoinToken(JoinToken),
    /// An unused join token (node or coordinator) can no longer be spent.
    RevokeJoinToken {
        id: String,
    },
    /// A new coordinator spends its id-bound token to obtain a certificate.
    JoinCoordinator {
        token_id: String,
        secret_hash: String,
        id: u64,
    },
    /// A host presenting join token `token_id` whose secret hashes to `secret_hash` asks to
    /// become a node with `node`'s roles, labels, address and capacity (its id is assigned here).
    JoinNode {
        token_id: String,
        secret_hash: String,
        node: Node,
    },
    RevokeNode {
        id: u64,
    },
    CordonNode {
        id: u64,
        cordoned: bool,
    },
    NodeReport(Report),
    AddDevice(device::NewDevice),
    RemoveDevice {
        tenant: TenantName,
        name: device::DeviceName,
    },
    EnableDevice {
        tenant: TenantName,
        name: device::DeviceName,
        enabled: bool,
    },
    /// A gateway reported a device's new VPN session (a security event; changes no desired state).
    DeviceConnect(connect::NewConnect),
    /// A db node reported a login or failed login of a tenant's role (a security event).
    DbLogin(dblogin::NewDbLogin),
    CreateDeviceToken(devicetoken::DeviceToken),
    RevokeDeviceToken {
        tenant: TenantName,
        id: String,
    },
    /// A device spends one use of a device token to enroll (its id and address assigned here).
    EnrollDevice(devicetoken::Enrollment),
    ApproveDevice {
        tenant: TenantName,
        name: device::DeviceName,
    },
    RevokeDevice {
        tenant: TenantName,
        name: device::DeviceName,
    },
    /// An enrolled device's heartbeat (written on a fingerprint change or every few minutes).
    DeviceHeartbeat(presence::Heartbeat),
    /// The leader removes an ephemeral device offline past its time (re-checked at apply).
    ExpireDevice {
        tenant: TenantName,
        name: device::DeviceName,
    },
    AddExposure(exposure::NewExposure),
    RemoveExposure {
        tenant: TenantName,
        id: String,
    },
    EnableExposure {
        tenant: TenantName,
        id: String,
        enabled: bool,
    },
    AddFirewallRule(firewall::NewRule),
    RemoveFirewallRule {
        tenant: TenantName,
        id: String,
    },
    BlockDomain {
        tenant: TenantName,
        domain: berqenas_common::net::DomainName,
        blocked: bool,
    },
    /// A coordinator's API calls per tenant since its last batch; compacts the usage ledger.
    RecordUsage(usage::UsageBatch),
    /// Invoices: create (idempotent per tenant and month), issue, mark paid (`state/billing.rs`).
    Invoice(billing::InvoiceOp),
    /// Backups: data keys, runs and restores asked for, and what the db node reports.
    Backup(backup::BackupOp),
    /// Panel users: management, sign-ins and their failures (`state/user.rs`).
    User(user::UserOp),
    /// A Raft membership change that openraft carried out; recorded for the audit trail, and
    /// removed coordinator ids are retired forever.
    /// `action` is `cluster.add-learner`, `cluster.promote` or `cluster.remove`.
    Membership {
        action: Action,
        node_id: u64,
        details: Details,
    },
    /// An admin took coordinator `node_id`'s snapshot at applied index `index` (`snapshot save`):
    /// only the audit entry. Needs `OpsLevel::SnapshotSave` on every coordinator (`min_level`).
    SnapshotSaved {
        node_id: u64,
        index: u64,
    },
    /// A request refused at the edge (bad input, no or wrong key): only the audit entry. The
    /// target is as the edge wrote it (bounded and escaped there).
    Rejected {
        action: Action,
        target: String,
        reason: String,
    },
}

/// The Raft ops this release knows. An entry holding an `Op` a coordinator does not know cannot be
/// decoded there, so that coordinator stops replicating until it is upgraded: an op newer than
/// level 1 is proposed only when every coordinator that answers says it knows it
/// (`Coordinator::write`; ARCHITECTURE.md, "Upgrades"). Level 1: releases that report no level.
pub const OPS_LEVEL: u32 = 2;

impl Op {
    /// The ops level every coordinator must have before this op may enter the log.
    pub fn min_level(&self) -> u32 {
        match self {
            // New since the previous release (`deploy/previous-release`): snapshots, panel users,
            // tenant data key rotation.
            // PostgreSQL logins (issue 12).
            Op::SnapshotSaved { .. }
            | Op::User(_)
            | Op::Backup(backup::BackupOp::RotateKey { .. })
            | Op::DbLogin(_) => 2,
            _ => 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub meta: Meta,
    pub op: Op,
}

impl Op {
    /// Whether only an admin API key may ask for this (every REST write is admin-only; nodes,
    /// join tokens, break-glass recovery and edge refusals act without a key).
    pub fn needs_admin_key(&self) -> bool {
        match self {
            Op::Backup(b) => b.needs_admin_key(),
            Op::CreateTenant(_)
            | Op::UpdateTenant { .. }
            | Op::Lifecycle { .. }
            | Op::CreateApiKey(_)
            | Op::RevokeApiKey { .. }
            | Op::RegisterNode(_)
            | Op::CreateJoinToken(_)
            | Op::RevokeJoinToken { .. }
            | Op::RevokeNode { .. }
            | Op::CordonNode { .. }
            | Op::Invoice(_)
            | Op::SnapshotSaved { .. }
            | Op::Membership { .. } => true,
            Op::User(u) => u.is_management(),
            Op::AddDevice(_)
            | Op::RemoveDevice { .. }
            | Op::EnableDevice { .. }
            | Op::AddExposure(_)
            | Op::RemoveExposure { .. }
            | Op::EnableExposure { .. }
            | Op::AddFirewallRule(_)
            | Op::RemoveFirewallRule { .. }
            | Op::BlockDomain { .. }
            | Op::Bootstrap { .. }
            | Op::RecoverAdmin { .. }
            | Op::JoinCoordinator { .. }
            | Op::JoinNode { .. }
            | Op::NodeReport(_)
            | Op::DeviceConnect(_)
            | Op::DbLogin(_)
            | Op::CreateDeviceToken(_)
            | Op::RevokeDeviceToken { .. }
            | Op::EnrollDevice(_)
            | Op::ApproveDevice { .. }
            | Op::RevokeDevice { .. }
            | Op::DeviceHeartbeat(_)
            | Op::ExpireDevice { .. }
            | Op::RecordUsage(_)
            | Op::Rejected { .. } => false,
        }
    }

    /// The tenant whose customer key may ask for this (its devices, exposures and firewall), for
    /// commands an admin or that tenant's customer key may give.
    pub fn customer_tenant(&self) -> Option<&TenantName> {
        match self {
            Op::AddDevice(d) => Some(&d.tenant),
            Op::AddExposure(x) => Some(&x.tenant),
            Op::AddFirewallRule(r) => Some(&r.tenant),
            Op::CreateDeviceToken(t) => Some(&t.tenant),
            Op::RevokeDeviceToken { tenant, .. }
            | Op::ApproveDevice { tenant, .. }
            | Op::RevokeDevice { tenant, .. } => Some(tenant),
            Op::RemoveDevice { tenant, .. }
            | Op::EnableDevice { tenant, .. }
            | Op::RemoveExposure { tenant, .. }
            | Op::EnableExposure { tenant, .. }
            | Op::RemoveFirewallRule { tenant, .. }
            | Op::BlockDomain { tenant, .. } => Some(tenant),
            Op::Backup(b) => b.customer_tenant(),
            _ => None,
        }
    }

    /// Whether the command must name the API key it acts with (admin-only or tenant-scoped writes).
    pub fn needs_key(&self) -> bool {
        self.needs_admin_key() || self.customer_tenant().is_some()
    }

    /// The audit action and target of this command: the one mapping from a command to what the
    /// audit trail calls it. A handler may only name its target more exactly (a joined node's id).
    pub fn describe(&self) -> (Action, Target) {
        match self {
            Op::Bootstrap { settings, .. } => (Action::ClusterInit, Target::Cluster(settings.cluster_id.clone())),
            Op::CreateTenant(spec) => (Action::TenantCreate, Target::Tenant(spec.name.clone())),
            Op::UpdateTenant { name, .. } => (Action::TenantUpdate, Target::Tenant(name.clone())),
            Op::Lifecycle { name, step } => (Action::from(*step), Target::Tenant(name.clone())),
            Op::CreateApiKey(key) => (Action::ApiKeyCreate, Target::ApiKey(key.id.clone())),
            Op::RevokeApiKey { id } => (Action::ApiKeyRevoke, Target::ApiKey(id.clone())),
            Op::RecoverAdmin { key, .. } => (Action::ApiKeyRecovered, Target::ApiKey(key.id.clone())),
            Op::RegisterNode(node) => (Action::NodeRegister, Target::Node(node.id)),
            Op::CreateJoinToken(token) => (Action::NodeTokenCreate, Target::JoinToken(token.id.clone())),
            Op::RevokeJoinToken { id } => (Action::JoinTokenRevoke, Target::JoinToken(id.clone())),
            Op::JoinCoordinator { id, .. } => (Action::ClusterJoin, Target::Coordinator(*id)),
            Op::JoinNode { .. } => (Action::NodeJoin, Target::NewNode),
            Op::RevokeNode { id } => (Action::NodeRevoke, Target::Node(*id)),
            Op::CordonNode { id, cordoned: true } => (Action::NodeCordon, Target::Node(*id)),
            Op::CordonNode { id, cordoned: false } => (Action::NodeUncordon, Target::Node(*id)),
            Op::NodeReport(report) => (Action::NodeReport, Target::Node(report.node_id)),
            Op::AddDevice(d) => (Action::DeviceAdd, Target::Device(d.tenant.clone(), d.name.to_string())),
            Op::RemoveDevice { tenant, name } => {
                (Action::DeviceRemove, Target::Device(tenant.clone(), name.to_string()))
            }
            Op::EnableDevice { tenant, name, enabled } => {
                let action = if *enabled { Action::DeviceEnable } else { Action::DeviceDisable };
                (action, Target::Device(tenant.clone(), name.to_string()))
            }
            Op::DeviceConnect(c) => (Action::DeviceConnect, Target::Device(c.tenant.clone(), c.device.to_string())),
            Op::DbLogin(l) => {
                let action = if l.login.failure.is_none() { Action::DbLogin } else { Action::DbLoginFailed };
                (action, Target::Tenant(l.login.tenant.clone()))
            }
            Op::CreateDeviceToken(t) => {
                (Action::DeviceTokenCreate, Target::DeviceToken(t.tenant.clone(), t.id.clone()))
            }
            Op::RevokeDeviceToken { tenant, id } => {
                (Action::DeviceTokenRevoke, Target::DeviceToken(tenant.clone(), id.clone()))
            }
            Op::EnrollDevice(e) => (Action::DeviceEnroll, Target::DeviceToken(e.tenant.clone(), e.token_id.clone())),
            Op::ApproveDevice { tenant, name } => {
                (Action::DeviceApprove, Target::Device(tenant.clone(), name.to_string()))
            }
            Op::RevokeDevice { tenant, name } => {
                (Action::DeviceRevoke, Target::Device(tenant.clone(), name.to_string()))
            }
            Op::DeviceHeartbeat(h) => (Action::DeviceHeartbeat, Target::Device(h.tenant.clone(), h.device_id.clone())),
            Op::ExpireDevice { tenant, name } => {
                (Action::DeviceExpire, Target::Device(tenant.clone(), name.to_string()))
            }
            Op::AddExposure(x) => (Action::ExposeAdd, Target::Tenant(x.tenant.clone())),
            Op::RemoveExposure { tenant, id } => (Action::ExposeRemove, Target::Exposure(tenant.clone(), id.clone())),
            Op::EnableExposure { tenant, id, enabled } => {
                let action = if *enabled { Action::ExposeEnable } else { Action::ExposeDisable };
                (action, Target::Exposure(tenant.clone(), id.clone()))
            }
            Op::AddFirewallRule(r) => (Action::FirewallAdd, Target::Tenant(r.tenant.clone())),
            Op::RemoveFirewallRule { tenant, id } => {
                (Action::FirewallRemove, Target::FirewallRule(tenant.clone(), id.clone()))
            }
            Op::BlockDomain { tenant, blocked, .. } => {
                let action = if *blocked { Action::FirewallBlockDomain } else { Action::FirewallUnblockDomain };
                (action, Target::Tenant(tenant.clone()))
            }
            Op::RecordUsage(b) => (Action::UsageRecord, Target::Coordinator(b.coordinator)),
            Op::Invoice(op) => op.describe(),
            Op::Backup(b) => b.describe(),
            Op::User(u) => u.describe(),
            Op::Membership { action, node_id, .. } => (*action, Target::Coordinator(*node_id)),
            Op::SnapshotSaved { node_id, .. } => (Action::ClusterSnapshotSave, Target::Coordinator(*node_id)),
            Op::Rejected { action, target, .. } => (*action, Target::Edge(target.clone())),
        }
    }

    /// The facts of this command's audit entry before it runs: action and target, no details.
    fn facts(&self) -> Facts {
        let (action, target) = self.describe();
        Facts::new(action, target)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Tenant(Box<Tenant>),
    ApiKey(Box<ApiKey>),
    Node(Box<Node>),
    Device(Box<device::Device>),
    DeviceToken(Box<devicetoken::DeviceToken>),
    Exposure(Box<exposure::Exposure>),
    FirewallRule(Box<firewall::FirewallRule>),
    Invoice(Box<billing::Invoice>),
    Backups(Box<backup::TenantBackups>),
    User(Box<user::User>),
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum DomainError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    /// The API key a command acts with was refused at apply (gone, revoked, expired, or its role
    /// may not do this), although the edge had accepted it.
    #[error(transparent)]
    Forbidden(#[from] apikey::KeyRefused),
    /// The signed-in user a command acts as was refused at apply (gone, disabled, reset since
    /// the session began, or its role may not do this).
    #[error(transparent)]
    UserForbidden(#[from] user::UserRefused),
    /// A tenant spec or update that breaks a tenant invariant.
    #[error(transparent)]
    InvalidTenant(#[from] tenant::InvalidTenant),
    #[error("{0}")]
    Exhausted(String),
    /// Echo of an edge rejection; the API already told the caller why.
    #[error("{0}")]
    Rejected(String),
    #[error("the cluster is not initialized")]
    Uninitialized,
}

pub type Response = Result<Reply, DomainError>;

/// What a command handler gives back: the reply, and the facts its audit entry records.
pub(crate) type Handled = (Response, Facts);

/// Where a command is applied: its Raft log index, its place in that entry's batch (the
/// commands of a batch share the index) and its own time (`Meta::time_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct At {
    pub index: u64,
    pub seq: usize,
    pub now: u64,
}

impl At {
    /// An id no other command ever gets: `{prefix}{index}` for a batch's first command,
    /// `{prefix}{index}-{seq}` for the others (two devices enrolled in one batch must not share
    /// an id: the second would overwrite the first, and their certificates name the same device).
    pub fn id(&self, prefix: char) -> String {
        match self.seq {
            0 => format!("{prefix}{}", self.index),
            seq => format!("{prefix}{}-{seq}", self.index),
        }
    }
}

/// A command being applied, as its handler gets it: where and when, the rows touched so far,
/// and the audit facts `Op::describe` gave it (the handler adds details and returns them).
pub(crate) struct Cx<'a> {
    pub at: At,
    pub touched: &'a mut Vec<Touched>,
    pub facts: Facts,
}

/// A key whose stored row changed; the store writes exactly these after a batch.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Touched {
    Settings,
    Tenant(TenantName),
    Node(u64),
    ApiKey(String),
    Retired,
    JoinToken(String),
    Counters,
    Device(String),
    Exposure(String),
    FirewallRule(String),
    DeviceToken(String),
    /// A usage ledger bucket (`usage::Bucket::id`).
    UsageBucket(String),
    /// A usage ledger cursor (`usage::Cursor::id`).
    UsageCursor(String),
    Invoice(String),
    Backups(TenantName),
    User(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub settings: Option<ClusterSettings>,
    pub tenants: BTreeMap<TenantName, Tenant>,
    pub nodes: BTreeMap<u64, Node>,
    pub api_keys: BTreeMap<String, ApiKey>,
    /// The chain's head and the entries the store has not yet taken; the trail is in the store.
    pub audit: audit::Trail,
    /// Coordinator ids removed from the cluster; never accepted again.
    pub retired_coordinators: BTreeSet<u64>,
    pub join_tokens: BTreeMap<String, JoinToken>,
    /// Node ids are handed out once, in order, and never reused.
    pub next_node_id: u64,
    /// Devices by id (`d…`), exposures (`x…`) and firewall rules (`r…`), each naming its tenant.
    #[serde(default)]
    pub devices: BTreeMap<String, device::Device>,
    #[serde(default)]
    pub exposures: BTreeMap<String, exposure::Exposure>,
    #[serde(default)]
    pub firewall_rules: BTreeMap<String, firewall::FirewallRule>,
    /// Device enrollment tokens by id, each naming its tenant.
    #[serde(default)]
    pub device_tokens: BTreeMap<String, devicetoken::DeviceToken>,
    /// Every tenant's usage ledger (bounded: see `usage::Retention`).
    #[serde(default)]
    pub usage: usage::Ledger,
    #[serde(default)]
    pub invoices: BTreeMap<String, billing::Invoice>,
    /// Each tenant's backups: wrapped data keys, catalog, requests (table `backups`).
    #[serde(default)]
    pub backups: BTreeMap<TenantName, backup::TenantBackups>,
    /// Panel users by name (table `users`).
    #[serde(default)]
    pub users: BTreeMap<String, user::User>,
}

impl State {
    /// Applies one command alone at Raft log `index` (`apply_in_batch` at place 0).
    pub fn apply(&mut self, index: u64, cmd: &Command) -> (Response, Vec<Touched>) {
        self.apply_in_batch(index, 0, cmd)
    }

    /// Applies the command at place `seq` of the batch at Raft log `index`. Returns the reply
    /// and the rows it touched; its audit entry waits in `audit` for the store to take it.
    pub fn apply_in_batch(&mut self, index: u64, seq: usize, cmd: &Command) -> (Response, Vec<Touched>) {
        let mut touched = Vec::new();
        let (result, facts) = match self.authorise(cmd) {
            Ok(()) => self.run(At { index, seq, now: cmd.meta.time_ms }, &cmd.op, &mut touched),
            Err(e) => (Err(e), cmd.op.facts()),
        };
        let Facts { action, target, mut details } = facts;
        let (action, target) = (action.to_string(), target.to_string());
        let outcome = if result.is_ok() { Outcome::Ok } else { Outcome::Rejected };
        if let Err(e) = &result {
            details.insert("reason".into(), e.to_string());
        }
        self.audit.append(Draft {
            time_ms: cmd.meta.time_ms,
            actor: cmd.meta.actor.clone(),
            source: cmd.meta.source.clone(),
            action,
            target,
            outcome,
            details,
        });
        (result, touched)
    }

    /// Re-authorises a command that acts with an API key (`Meta::key_role`), against this state
    /// at this log position and the command's own time: deterministic, and a replayed entry gets
    /// the answer it got the first time. Entries without a claim (older logs, nodes, join
    /// tokens, the system) are not key-authorised; edge refusals (`Rejected`) are only audited.
    fn authorise(&self, cmd: &Command) -> Result<(), DomainError> {
        if let Op::Rejected { .. } = cmd.op {
            return Ok(());
        }
        if let Some(generation) = cmd.meta.user_generation {
            let user = cmd.meta.actor.strip_prefix("user/").and_then(|name| self.users.get(name));
            return Ok(user::recheck(user, &cmd.meta.actor, generation, &cmd.op)?);
        }
        let Some(claimed) = cmd.meta.key_role else { return Ok(()) };
        let key = self.api_keys.get(&cmd.meta.actor);
        Ok(apikey::recheck(key, &cmd.meta.actor, claimed, cmd.meta.time_ms, cmd.op.customer_tenant())?)
    }

    /// Dispatches a command to its entity's handler. A change to what a tenant's gateway serves
    /// makes the tenant's desired state newer, here and nowhere else (`bump_revision`).
    fn run(&mut self, at: At, op: &Op, touched: &mut Vec<Touched>) -> Handled {
        // Which tenant's ingest (active devices, customer keys) this may change, known before
        // it runs (a revoked key's tenant is gone from the op once it is applied).
        let ingest = self.ingest_change(op);
        let handled = self.dispatch(at, op, touched);
        if handled.0.is_ok() {
            if let Some(tenant) = op.gateway_change() {
                self.bump_revision(at, tenant, touched);
            }
            if let Some(tenant) = ingest {
                self.bump_ingest_revision(at, &tenant, touched);
            }
        }
        handled
    }

    /// The tenant's db node part changed at `at` (the devices that may publish, the keys that may
    /// subscribe): its db node gets this revision, and the tenant is ready again once that node
    /// reports having applied it.
    fn bump_ingest_revision(&mut self, at: At, name: &TenantName, touched: &mut Vec<Touched>) {
        if let Some(t) = self.tenants.get_mut(name) {
            t.ingest_revision = at.index;
            refresh_readiness(t);
            touched.push(Touched::Tenant(name.clone()));
        }
    }

    /// The tenant's gateway desired state changed at `at`: its gateway node gets this revision,
    /// and the tenant is not ready again until that node reports having applied it (a device
    /// added a moment ago is not served by a gateway that reports an older revision). The db
    /// node's part is unchanged, so it is not asked to re-plan.
    fn bump_revision(&mut self, at: At, name: &TenantName, touched: &mut Vec<Touched>) {
        if let Some(t) = self.tenants.get_mut(name) {
            t.gateway_revision = at.index;
            refresh_readiness(t);
            touched.push(Touched::Tenant(name.clone()));
        }
    }

    fn dispatch(&mut self, at: At, op: &Op, touched: &mut Vec<Touched>) -> Handled {
        let cx = Cx { at, touched, facts: op.facts() };
        match op {
            Op::Bootstrap { settings, admin_key } => self.bootstrap(cx, settings, admin_key),
            Op::CreateTenant(spec) => self.create_tenant(cx, spec),
            Op::UpdateTenant { name, patch } => self.update_tenant(cx, name, patch),
            Op::Lifecycle { name, step } => self.lifecycle(cx, name, *step),
            Op::CreateApiKey(key) => self.create_api_key(cx, key),
            Op::RevokeApiKey { id } => self.revoke_api_key(cx, id),
            Op::RecoverAdmin { key, host } => self.recover_admin(cx, key, host),
            Op::RegisterNode(node) => self.register_node(cx, node),
            Op::CreateJoinToken(token) => self.create_join_token(cx, token),
            Op::RevokeJoinToken { id } => self.revoke_join_token(cx, id),
            Op::JoinNode { token_id, secret_hash, node } => self.join_node(cx, token_id, secret_hash, node),
            Op::JoinCoordinator { token_id, secret_hash, id } => self.join_coordinator(cx, token_id, secret_hash, *id),
            Op::RevokeNode { id } => self.revoke_node(cx, *id),
            Op::CordonNode { id, cordoned } => self.cordon_node(cx, *id, *cordoned),
            Op::NodeReport(report) => self.node_report(cx, report),
            Op::AddDevice(new) => self.add_device(cx, new),
            Op::RemoveDevice { tenant, name } => self.remove_device(cx, tenant, name),
            Op::EnableDevice { tenant, name, enabled } => self.enable_device(cx, tenant, name, *enabled),
            Op::DeviceConnect(c) => self.device_connect(cx, c),
            Op::DbLogin(l) => self.db_login(cx, l),
            Op::CreateDeviceToken(t) => self.create_device_token(cx, t),
            Op::RevokeDeviceToken { tenant, id } => self.revoke_device_token(cx, tenant, id),
            Op::EnrollDevice(e) => self.enroll_device(cx, e),
            Op::ApproveDevice { tenant, name } => self.approve_device(cx, tenant, name),
            Op::RevokeDevice { tenant, name } => self.revoke_device(cx, tenant, name),
            Op::DeviceHeartbeat(h) => self.device_heartbeat(cx, h),
            Op::ExpireDevice { tenant, name } => self.expire_device(cx, tenant, name),
            Op::AddExposure(new) => self.add_exposure(cx, new),
            Op::RemoveExposure { tenant, id } => self.remove_exposure(cx, tenant, id),
            Op::EnableExposure { tenant, id, enabled } => self.enable_exposure(cx, tenant, id, *enabled),
            Op::AddFirewallRule(new) => self.add_firewall_rule(cx, new),
            Op::RemoveFirewallRule { tenant, id } => self.remove_firewall_rule(cx, tenant, id),
            Op::BlockDomain { tenant, domain, blocked } => self.block_domain(cx, tenant, domain, *blocked),
            Op::RecordUsage(batch) => self.record_usage(cx, batch),
            Op::Invoice(op) => self.invoice_command(cx, op),
            Op::Backup(b) => self.backup(cx, b),
            Op::User(u) => self.user_command(cx, u),
            Op::Membership { action, node_id, details } => self.membership(cx, *action, *node_id, details),
            Op::SnapshotSaved { index, .. } => {
                (Ok(Reply::Done), cx.facts.with(action::details(&[("index", index.to_string())])))
            }
            Op::Rejected { reason, .. } => (Err(DomainError::Rejected(reason.clone())), cx.facts),
        }
    }

    fn settings(&self) -> Result<&ClusterSettings, DomainError> {
        self.settings.as_ref().ok_or(DomainError::Uninitialized)
    }

    /// Load per node from the tenants already placed.
    pub fn loads(&self) -> BTreeMap<u64, placement::Load> {
        let mut loads: BTreeMap<u64, placement::Load> = BTreeMap::new();
        for t in self.tenants.values() {
            if let Some(db) = t.placement.db_node {
                let l = loads.entry(db).or_default();
                l.db_tenants += 1;
                l.db_quota_bytes += t.db_quota_bytes;
                l.has_dedicated |= t.dedicated;
            }
            if let Some(gw) = t.placement.gateway_node {
                let l = loads.entry(gw).or_default();
                l.gateway_tenants += 1;
                l.has_dedicated |= t.dedicated;
            }
        }
        loads
    }

    /// Tenants a customer or admin may list, in name order.
    pub fn tenant_list(&self) -> Vec<&Tenant> {
        self.tenants.values().collect()
    }

    pub fn has_role(&self, role: NodeRole) -> bool {
        self.nodes.values().any(|n| n.roles.contains(&role))
    }
}

#[cfg(test)]
mod tests;

/// Builders shared by the unit tests of several state modules.
#[cfg(test)]
pub(crate) mod tests_support;
