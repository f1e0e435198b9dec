//! Role drivers: the agent's reconcile loop hands them the desired assignments; each observes
//! the host, plans the difference (a pure function, printable), applies it, and returns a status
//! per tenant. Gateway (WireGuard, nftables) and db (PostgreSQL) drivers plug in here.

use crate::assignment::{Assignment, DbTenant, GatewayTenant, Tenant};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub name: String,
    pub ready: bool,
    pub reason: Option<String>,
    /// Measured by the db driver: bytes used and whether that is over the quota.
    pub usage: Option<Usage>,
    /// The gateway driver's part: the tenant's public key and its devices' sessions.
    pub gateway: Option<crate::gateway::GatewayStatus>,
}

/// What a driver reports of the node itself (next to its tenants).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStatus {
    /// Gateway role: "kernel" or "userspace".
    pub wireguard_backend: Option<&'static str>,
    pub conditions: Vec<Condition>,
}

/// Something on the node that keeps it from doing its job, with the remedy in its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// e.g. `foreign-forward-drop`.
    pub kind: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub db_bytes: u64,
    pub quota_exceeded: bool,
    /// Sessions of the tenant's database user.
    pub connections: u32,
}

/// What a database driver's pass found: per-tenant failures and usage, or why the whole pass
/// failed (every tenant then reports that reason).
pub type PassResult = Result<(BTreeMap<String, String>, BTreeMap<String, Usage>), String>;

/// Statuses for `served` after a pass, followed by `refused` (tenant, why this driver cannot
/// provide it) reported not ready: never silently provided some other way.
pub fn statuses<T: Tenant>(served: &[T], result: &PassResult, refused: Vec<(String, String)>) -> Vec<Status> {
    served
        .iter()
        .map(|a| {
            let (failure, usage) = match result {
                Err(e) => (Some(e.clone()), None),
                Ok((errors, usage)) => (errors.get(a.name()).cloned(), usage.get(a.name()).copied()),
            };
            Status { name: a.name().to_string(), ready: failure.is_none(), reason: failure, usage, gateway: None }
        })
        .chain(refused.into_iter().map(|(name, reason)| Status {
            name,
            ready: false,
            reason: Some(reason),
            usage: None,
            gateway: None,
        }))
        .collect()
}

/// One change the next pass would make, as `berqenas-node-agent plan` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A statement, its secrets left out, for a tenant (None: the node).
    Sql { tenant: Option<String>, sql: String },
    /// A file the pass would write (or remove).
    File { path: PathBuf, what: &'static str },
    /// A tenant this node cannot provide (it will be reported not ready, not served differently).
    Refused { tenant: String, reason: String },
    /// A WireGuard or link step of the gateway.
    Gateway(crate::gateway::plan::Step),
    /// A change to the agent's nftables table, for a tenant (None: the base part).
    Nft { tenant: Option<String>, what: String },
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Sql { tenant, sql } => write!(f, "sql   [{}] {sql}", tenant.as_deref().unwrap_or("node")),
            Change::File { path, what } => write!(f, "file  {} ({what})", path.display()),
            Change::Refused { tenant, reason } => write!(f, "refused [{tenant}] {reason}"),
            Change::Gateway(step) => write!(f, "wg    {step}"),
            Change::Nft { tenant, what } => write!(f, "nft   [{}] {what}", tenant.as_deref().unwrap_or("node")),
        }
    }
}

/// A role driver over tenants of type `T`: whole assignments for the agent's driver, the part
/// of its role for a role driver (`DbTenant`, `GatewayTenant`), so a driver is handed only what
/// it needs. Asynchronous: a pass waits on its database or programs without holding a runtime
/// thread, and nothing in a driver blocks on a future.
#[async_trait::async_trait]
pub trait Driver<T: Tenant = Assignment>: Send {
    fn name(&self) -> &'static str;
    /// Makes the host match `desired` and says how each tenant stands.
    async fn reconcile(&mut self, desired: &[T]) -> Vec<Status>;
    /// Observes the host and plans, changing nothing: what `reconcile` would do now (a full
    /// pass), or why the host could not be observed.
    async fn preview(&mut self, desired: &[T]) -> Result<Vec<Change>, String>;
    /// Notified when the driver needs a pass before the next resync (the PostgreSQL session
    /// guard found a tenant over its quota).
    fn wake(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        None
    }
    /// True when the driver records its own passes in `metrics` (per part, as `ByRole` does);
    /// otherwise the runtime records each whole pass under the driver's name.
    fn times_itself(&self) -> bool {
        false
    }
    /// The node's own status after the last pass (WireGuard backend, conditions).
    fn node_status(&self) -> NodeStatus {
        NodeStatus::default()
    }
}

/// Reports every tenant ready without touching the host.
pub struct NoneDriver;

#[async_trait::async_trait]
impl<T: Tenant> Driver<T> for NoneDriver {
    fn name(&self) -> &'static str {
        "none"
    }

    async fn reconcile(&mut self, desired: &[T]) -> Vec<Status> {
        desired
            .iter()
            .map(|a| Status { usage: None, name: a.name().to_string(), ready: true, reason: None, gateway: None })
            .collect()
    }

    async fn preview(&mut self, _desired: &[T]) -> Result<Vec<Change>, String> {
        Ok(Vec::new())
    }
}

/// Splits assignments by role: `db` to one driver, `gateway` to another (or reported not ready
/// when this node has no gateway driver). A tenant is ready when every part of it is.
pub struct ByRole {
    pub db: Box<dyn Driver<DbTenant>>,
    pub gateway: Option<Box<dyn Driver<GatewayTenant>>>,
}

#[async_trait::async_trait]
impl Driver for ByRole {
    fn name(&self) -> &'static str {
        "by-role"
    }

    fn times_itself(&self) -> bool {
        true
    }

    fn wake(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        self.db.wake()
    }

    fn node_status(&self) -> NodeStatus {
        let mut status = self.db.node_status();
        if let Some(g) = &self.gateway {
            let gw = g.node_status();
            status.wireguard_backend = gw.wireguard_backend.or(status.wireguard_backend);
            status.conditions.extend(gw.conditions);
        }
        status
    }

    async fn preview(&mut self, desired: &[Assignment]) -> Result<Vec<Change>, String> {
        let db: Vec<DbTenant> = desired.iter().filter_map(Assignment::db_tenant).collect();
        let gw: Vec<GatewayTenant> = desired.iter().filter_map(Assignment::gateway_tenant).collect();
        let mut changes = self.db.preview(&db).await?;
        match &mut self.gateway {
            Some(g) => changes.extend(g.preview(&gw).await?),
            None => {
                changes.extend(gw.iter().map(|a| Change::Refused {
                    tenant: a.name.clone(),
                    reason: "this node has no gateway driver".into(),
                }))
            }
        }
        Ok(changes)
    }

    async fn reconcile(&mut self, desired: &[Assignment]) -> Vec<Status> {
        let db: Vec<DbTenant> = desired.iter().filter_map(Assignment::db_tenant).collect();
        let gw: Vec<GatewayTenant> = desired.iter().filter_map(Assignment::gateway_tenant).collect();
        let mut merged: BTreeMap<String, Status> = BTreeMap::new();
        let mut fold = |s: Status| {
            let entry = merged.entry(s.name.clone()).or_insert(Status {
                usage: None,
                name: s.name.clone(),
                ready: true,
                reason: None,
                gateway: None,
            });
            if s.usage.is_some() {
                entry.usage = s.usage;
            }
            if s.gateway.is_some() {
                entry.gateway = s.gateway;
            }
            if !s.ready {
                entry.ready = false;
                entry.reason = s.reason;
            }
        };
        let not_ready = |statuses: &[Status]| statuses.iter().filter(|s| !s.ready).count();
        let started = std::time::Instant::now();
        let statuses = self.db.reconcile(&db).await;
        crate::metrics::METRICS.pass("db", started.elapsed(), not_ready(&statuses));
        statuses.into_iter().for_each(&mut fold);
        match &mut self.gateway {
            Some(g) => {
                let started = std::time::Instant::now();
                let statuses = g.reconcile(&gw).await;
                crate::metrics::METRICS.pass("gateway", started.elapsed(), not_ready(&statuses));
                statuses.into_iter().for_each(&mut fold)
            }
            None => gw.iter().for_each(|a| {
                fold(Status {
                    name: a.name.clone(),
                    ready: false,
                    reason: Some("this node has no gateway driver".into()),
                    usage: None,
                    gateway: None,
                })
            }),
        }
        desired.iter().filter_map(|a| merged.remove(&a.name)).collect()
    }
}

/// One change the dir driver will make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Write { name: String, content: String },
    Remove { name: String },
}

/// Pure: what to change so that `observed` (file name → content) becomes `desired`.
/// A converged directory yields an empty plan.
pub fn plan<T: Tenant>(desired: &[T], observed: &BTreeMap<String, String>) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut wanted = BTreeMap::new();
    for a in desired {
        let content = serde_json::to_string_pretty(a).unwrap_or_default();
        if observed.get(a.name()) != Some(&content) {
            actions.push(Action::Write { name: a.name().to_string(), content: content.clone() });
        }
        wanted.insert(a.name().to_string(), ());
    }
    for name in observed.keys() {
        if !wanted.contains_key(name) {
            actions.push(Action::Remove { name: name.clone() });
        }
    }
    actions
}

/// Materialises each assignment as `<path>/<tenant>.json`: a real, observable host effect for
/// testing the control plane (drift = a file edited or removed by hand).
pub struct DirDriver {
    pub path: PathBuf,
}

impl DirDriver {
    fn observe(&self) -> std::io::Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for entry in std::fs::read_dir(&self.path)? {
            let entry = entry?;
            let file = entry.file_name().to_string_lossy().into_owned();
            if let Some(name) = file.strip_suffix(".json") {
                out.insert(name.to_string(), std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        Ok(out)
    }
}

#[async_trait::async_trait]
impl<T: Tenant> Driver<T> for DirDriver {
    fn name(&self) -> &'static str {
        "dir"
    }

    async fn preview(&mut self, desired: &[T]) -> Result<Vec<Change>, String> {
        let observed = match self.observe() {
            Ok(o) => o,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(format!("cannot read {}: {e}", self.path.display())),
        };
        Ok(plan(desired, &observed)
            .into_iter()
            .map(|action| match action {
                Action::Write { name, .. } => {
                    Change::File { path: self.path.join(format!("{name}.json")), what: "write" }
                }
                Action::Remove { name } => {
                    Change::File { path: self.path.join(format!("{name}.json")), what: "remove" }
                }
            })
            .collect())
    }

    async fn reconcile(&mut self, desired: &[T]) -> Vec<Status> {
        let failed = |reason: String| -> Vec<Status> {
            desired
                .iter()
                .map(|a| Status {
                    usage: None,
                    name: a.name().to_string(),
                    ready: false,
                    reason: Some(reason.clone()),
                    gateway: None,
                })
                .collect()
        };
        if let Err(e) = std::fs::create_dir_all(&self.path) {
            return failed(format!("cannot create {}: {e}", self.path.display()));
        }
        let observed = match self.observe() {
            Ok(o) => o,
            Err(e) => return failed(format!("cannot read {}: {e}", self.path.display())),
        };
        let mut errors: BTreeMap<String, String> = BTreeMap::new();
        for action in plan(desired, &observed) {
            match &action {
                Action::Write { name, .. } => tracing::info!(tenant = %name, "dir driver writes"),
                Action::Remove { name } => tracing::info!(tenant = %name, "dir driver removes"),
            }
            let result = match &action {
                Action::Write { name, content } => {
                    crate::host::files::write_atomic(&self.path.join(format!("{name}.json")), content.as_bytes(), 0o600)
                        .map_err(|e| (name.clone(), e.to_string()))
                }
                Action::Remove { name } => std::fs::remove_file(self.path.join(format!("{name}.json")))
                    .map_err(|e| (name.clone(), e.to_string())),
            };
            if let Err((name, e)) = result {
                errors.insert(name, e);
            }
        }
        desired
            .iter()
            .map(|a| match errors.get(a.name()) {
                Some(e) => Status {
                    usage: None,
                    name: a.name().to_string(),
                    ready: false,
                    reason: Some(e.clone()),
                    gateway: None,
                },
                None => Status { usage: None, name: a.name().to_string(), ready: true, reason: None, gateway: None },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(name: &str, revision: u64) -> DbTenant {
        DbTenant { revision, ..crate::assignment::fixture(name) }
    }

    #[test]
    fn plan_creates_updates_and_removes() {
        let desired = vec![a("acme", 2), a("globex", 3)];
        let mut observed = BTreeMap::new();
        observed.insert("acme".to_string(), "stale".to_string());
        observed.insert("initech".to_string(), "{}".to_string());
        let p = plan(&desired, &observed);
        assert_eq!(p.len(), 3);
        assert!(matches!(&p[0], Action::Write { name, .. } if name == "acme"));
        assert!(matches!(&p[1], Action::Write { name, .. } if name == "globex"));
        assert_eq!(p[2], Action::Remove { name: "initech".into() });
    }

    #[tokio::test]
    async fn converged_host_yields_empty_plan() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut d = DirDriver { path: dir.path().join("tenants") };
        let desired = vec![a("acme", 2)];
        let status = d.reconcile(&desired).await;
        assert!(status.iter().all(|s| s.ready));
        let observed = d.observe().expect("observe");
        assert!(plan(&desired, &observed).is_empty());
        // Drift is repaired by the next pass.
        std::fs::remove_file(dir.path().join("tenants/acme.json")).expect("drift");
        assert_eq!(plan(&desired, &d.observe().expect("observe")).len(), 1);
        d.reconcile(&desired).await;
        assert!(plan(&desired, &d.observe().expect("observe")).is_empty());
    }
}
