//! The typed facts of an audit entry: what was done (`Action`), to what (`Target`) and the
//! details. `Action::as_str` is the one table of action names; the stored and hashed entry keeps
//! exactly these strings, and commands that carry an action (`Op::Rejected`, `Op::Membership`)
//! serialize it as the same string, so older logs and audit chains read back unchanged.

use super::names::TenantName;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Facts about a change, by name; never secrets.
pub type Details = BTreeMap<String, String>;

macro_rules! actions {
    ($($(#[$doc:meta])* $variant:ident = $text:literal,)*) => {
        /// Everything the audit trail records, at apply or at the edge.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "&'static str")]
        pub enum Action {
            $($(#[$doc])* $variant,)*
        }

        impl Action {
            /// Every action, in declaration order.
            pub const ALL: &'static [Action] = &[$(Action::$variant,)*];

            /// The name stored in (and hashed into) the audit entry.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Action::$variant => $text,)*
                }
            }
        }
    };
}

actions! {
    ClusterInit = "cluster.init",
    /// A new coordinator spent its token for a certificate.
    ClusterJoin = "cluster.join",
    ClusterAddLearner = "cluster.add-learner",
    ClusterPromote = "cluster.promote",
    ClusterRemove = "cluster.remove",
    /// An admin downloaded a coordinator's snapshot (`snapshot save`).
    ClusterSnapshotSave = "cluster.snapshot-save",
    ClusterStatus = "cluster.status",
    ClusterTokenCreate = "cluster.token.create",
    ClusterTokenList = "cluster.token.list",
    ClusterTokenRevoke = "cluster.token.revoke",
    TenantCreate = "tenant.create",
    TenantGet = "tenant.get",
    TenantList = "tenant.list",
    TenantUpdate = "tenant.update",
    TenantSuspend = "tenant.suspend",
    TenantResume = "tenant.resume",
    TenantDelete = "tenant.delete",
    TenantRestore = "tenant.restore",
    TenantPurge = "tenant.purge",
    NodeList = "node.list",
    NodeRegister = "node.register",
    NodeJoin = "node.join",
    NodeRevoke = "node.revoke",
    NodeCordon = "node.cordon",
    NodeUncordon = "node.uncordon",
    NodeReport = "node.report",
    /// A join token (node or coordinator) was minted.
    NodeTokenCreate = "node.token.create",
    JoinTokenRevoke = "jointoken.revoke",
    ApiKeyCreate = "apikey.create",
    ApiKeyList = "apikey.list",
    ApiKeyRevoke = "apikey.revoke",
    /// Break-glass: an admin key minted from a coordinator's data directory.
    ApiKeyRecovered = "apikey.recovered",
    ApiKeyThrottled = "apikey.throttled",
    DeviceAdd = "device.add",
    DeviceList = "device.list",
    DeviceGet = "device.get",
    DeviceRemove = "device.rm",
    DeviceEnable = "device.enable",
    DeviceDisable = "device.disable",
    DeviceConfig = "device.config",
    /// A device started a VPN session (reported by its gateway: who, from where).
    DeviceConnect = "device.connect",
    /// A tenant's role logged in to PostgreSQL (reported by its db node: role, from where).
    DbLogin = "db.login",
    /// A login as a tenant's role was refused (wrong password, not allowed, …; never the password).
    DbLoginFailed = "db.login-failed",
    /// A device token was minted for a tenant (its secret shown once, never stored).
    DeviceTokenCreate = "device.token.create",
    DeviceTokenList = "device.token.list",
    DeviceTokenRevoke = "device.token.revoke",
    /// A device spent a device token (accepted or refused: every attempt is audited).
    DeviceEnroll = "device.enroll",
    DeviceApprove = "device.approve",
    DeviceRevoke = "device.revoke",
    /// An enrolled device's heartbeat as written (on a fingerprint change, or every few minutes).
    DeviceHeartbeat = "device.heartbeat",
    /// An ephemeral device removed after its offline time.
    DeviceExpire = "device.expire",
    ExposeAdd = "expose.add",
    ExposeList = "expose.list",
    ExposeGet = "expose.get",
    ExposeRemove = "expose.rm",
    ExposeEnable = "expose.enable",
    ExposeDisable = "expose.disable",
    FirewallAdd = "firewall.add",
    FirewallList = "firewall.list",
    FirewallRemove = "firewall.rm",
    FirewallBlockDomain = "firewall.block-domain",
    FirewallUnblockDomain = "firewall.unblock-domain",
    /// A coordinator's batch of API calls per tenant, folded into the usage ledger.
    UsageRecord = "usage.record",
    UsageShow = "usage.show",
    /// A tenant's invoice for a month was computed (or the existing one returned).
    InvoiceCreate = "invoice.create",
    InvoiceList = "invoice.list",
    InvoiceGet = "invoice.get",
    InvoiceIssue = "invoice.issue",
    InvoicePaid = "invoice.mark-paid",
    /// A coordinator made a tenant's backup data key (stored wrapped).
    BackupKeyCreate = "backup.key.create",
    /// An admin rotated a tenant's backup data key (new backups use the new one).
    BackupKeyRotate = "backup.key.rotate",
    BackupList = "backup.list",
    /// A backup asked for on demand.
    BackupRun = "backup.run",
    BackupRestore = "backup.restore",
    /// The tenant's db node reported a completed upload: the catalog entry.
    BackupDone = "backup.done",
    BackupFailed = "backup.failed",
    /// Retention: the db node deleted expired objects; their entries went with them.
    BackupExpire = "backup.expire",
    BackupRestored = "backup.restored",
    UserCreate = "user.create",
    UserList = "user.list",
    UserEnable = "user.enable",
    UserDisable = "user.disable",
    UserResetMfa = "user.reset-mfa",
    UserResetPassword = "user.reset-password",
    /// A user's first sign-in with TOTP: the secret confirmed by a code, and the sign-in.
    UserTotpEnrol = "user.totp-enrol",
    UserSignIn = "user.sign-in",
    /// A wrong password or code for an existing user (counts towards its lockout).
    UserSignInFailed = "user.sign-in-failed",
    UserSignOut = "user.sign-out",
    /// A signed-in user changed its own password (the current one checked); its other sessions end.
    UserChangePassword = "user.change-password",
    /// A cookie request that changes something without the session's CSRF token.
    SessionCsrfRefused = "session.csrf-refused",
    AuditList = "audit.list",
    AuditVerify = "audit.verify",
    RefusalsList = "refusals.list",
    /// A Prometheus scrape of `GET /metrics` (refused ones are audited; allowed ones are not written).
    MetricsRead = "metrics.read",
    /// A summary of refused unauthenticated attempts from one source.
    AnonymousRefused = "anonymous.refused",
    ApiConnect = "api.connect",
    ApiHandshake = "api.handshake",
    NodeHandshake = "node.handshake",
    RaftHandshake = "raft.handshake",
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not an action (e.g. a command written by a version with an action this one
/// does not know).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown audit action {0:?}")]
pub struct UnknownAction(pub String);

impl std::str::FromStr for Action {
    type Err = UnknownAction;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::ALL.iter().copied().find(|a| a.as_str() == s).ok_or_else(|| UnknownAction(s.to_string()))
    }
}

impl TryFrom<String> for Action {
    type Error = UnknownAction;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<Action> for &'static str {
    fn from(value: Action) -> Self {
        value.as_str()
    }
}

/// What an audit entry is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `cluster/{cluster_id}`
    Cluster(String),
    /// `tenant/{name}`
    Tenant(TenantName),
    /// `node/{id}`
    Node(u64),
    /// `node`: a join refused before the node had an id.
    NewNode,
    /// `apikey/{id}`
    ApiKey(String),
    /// `jointoken/{id}`
    JoinToken(String),
    /// `coordinator/{id}`
    Coordinator(u64),
    /// `tenant/{name}/device/{device}`
    Device(TenantName, String),
    /// `tenant/{name}/device-token/{id}`
    DeviceToken(TenantName, String),
    /// `tenant/{name}/exposure/{id}`
    Exposure(TenantName, String),
    /// `tenant/{name}/firewall/rule/{id}`
    FirewallRule(TenantName, String),
    /// `tenant/{name}/invoice/{number}`
    Invoice(TenantName, String),
    /// `user/{name}`
    User(String),
    /// As the edge wrote it (bounded and escaped there), for refusals of unparsed input.
    Edge(String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Cluster(id) => write!(f, "cluster/{id}"),
            Target::Tenant(name) => write!(f, "tenant/{name}"),
            Target::Node(id) => write!(f, "node/{id}"),
            Target::NewNode => f.write_str("node"),
            Target::ApiKey(id) => write!(f, "apikey/{id}"),
            Target::JoinToken(id) => write!(f, "jointoken/{id}"),
            Target::Coordinator(id) => write!(f, "coordinator/{id}"),
            Target::Device(t, name) => write!(f, "tenant/{t}/device/{name}"),
            Target::DeviceToken(t, id) => write!(f, "tenant/{t}/device-token/{id}"),
            Target::Exposure(t, id) => write!(f, "tenant/{t}/exposure/{id}"),
            Target::FirewallRule(t, id) => write!(f, "tenant/{t}/firewall/rule/{id}"),
            Target::Invoice(t, id) => write!(f, "tenant/{t}/invoice/{id}"),
            Target::User(name) => write!(f, "user/{name}"),
            Target::Edge(text) => f.write_str(text),
        }
    }
}

/// The facts an audit entry records about one command: its action, its target and details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub action: Action,
    pub target: Target,
    pub details: Details,
}

impl Facts {
    pub fn new(action: Action, target: Target) -> Self {
        Facts { action, target, details: Details::new() }
    }

    /// These facts with `details` recorded.
    pub fn with(self, details: Details) -> Self {
        Facts { details, ..self }
    }

    /// These facts about `target` instead (e.g. a joined node once it has its id).
    pub fn on(self, target: Target) -> Self {
        Facts { target, ..self }
    }
}

/// Details from `(name, value)` pairs.
pub fn details(pairs: &[(&str, String)]) -> Details {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_round_trips_through_its_name_and_serde() {
        let mut names = std::collections::BTreeSet::new();
        for a in Action::ALL {
            assert!(names.insert(a.as_str()), "duplicate action name {a}");
            assert_eq!(a.as_str().parse::<Action>(), Ok(*a));
            let json = serde_json::to_string(a).expect("serializes");
            assert_eq!(json, format!("\"{}\"", a.as_str()), "serialized as the plain name");
            assert_eq!(serde_json::from_str::<Action>(&json).expect("decodes"), *a);
        }
        assert!(serde_json::from_str::<Action>("\"tenant.explode\"").is_err());
    }

    #[test]
    fn targets_print_as_stored_before() {
        let acme = TenantName::parse("acme").expect("valid");
        let cases = [
            (Target::Cluster("c1".into()), "cluster/c1"),
            (Target::Tenant(acme), "tenant/acme"),
            (Target::Node(3), "node/3"),
            (Target::NewNode, "node"),
            (Target::ApiKey("ab".into()), "apikey/ab"),
            (Target::JoinToken("cd".into()), "jointoken/cd"),
            (Target::Coordinator(2), "coordinator/2"),
            (Target::Edge("source/10.0.0.1".into()), "source/10.0.0.1"),
        ];
        for (target, text) in cases {
            assert_eq!(target.to_string(), text);
        }
    }
}
