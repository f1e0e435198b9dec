//! Role drivers: the agent's reconcile loop hands them the desired assignments; each observes
//! the host, plans the difference (a pure function, printable), applies it, and returns a status
//! per tenant. Gateway (WireGuard, nftables) and db (PostgreSQL) drivers plug in here.

use crate::assignment::{Assignment, Role};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub name: String,
    pub ready: bool,
    pub reason: Option<String>,
    /// Measured by the db driver: bytes used and whether that is over the quota.
    pub usage: Option<Usage>,
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
pub fn statuses(served: &[Assignment], result: &PassResult, refused: Vec<(String, String)>) -> Vec<Status> {
    served
        .iter()
        .map(|a| {
            let (failure, usage) = match result {
                Err(e) => (Some(e.clone()), None),
                Ok((errors, usage)) => (errors.get(&a.name).cloned(), usage.get(&a.name).copied()),
            };
            Status { name: a.name.clone(), ready: failure.is_none(), reason: failure, usage }
        })
        .chain(refused.into_iter().map(|(name, reason)| Status {
            name,
            ready: false,
            reason: Some(reason),
            usage: None,
        }))
        .collect()
}

pub trait Driver: Send {
    fn name(&self) -> &'static str;
    /// Makes the host match `desired` and says how each tenant stands.
    fn reconcile(&mut self, desired: &[Assignment]) -> Vec<Status>;
    /// Notified when the driver needs a pass before the next resync (the PostgreSQL session
    /// guard found a tenant over its quota).
    fn wake(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        None
    }
}

/// Reports every tenant ready without touching the host.
pub struct NoneDriver;

impl Driver for NoneDriver {
    fn name(&self) -> &'static str {
        "none"
    }

    fn reconcile(&mut self, desired: &[Assignment]) -> Vec<Status> {
        desired.iter().map(|a| Status { usage: None, name: a.name.clone(), ready: true, reason: None }).collect()
    }
}

/// Splits assignments by role: `db` to one driver, `gateway` to another (or reported not ready
/// when this node has no gateway driver). A tenant is ready when every part of it is.
pub struct ByRole {
    pub db: Box<dyn Driver>,
    pub gateway: Option<Box<dyn Driver>>,
}

impl Driver for ByRole {
    fn name(&self) -> &'static str {
        "by-role"
    }

    fn wake(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        self.db.wake()
    }

    fn reconcile(&mut self, desired: &[Assignment]) -> Vec<Status> {
        let db: Vec<Assignment> = desired.iter().filter(|a| a.has_role(Role::Db)).cloned().collect();
        let gw: Vec<Assignment> = desired.iter().filter(|a| a.has_role(Role::Gateway)).cloned().collect();
        let mut merged: BTreeMap<String, Status> = BTreeMap::new();
        let mut fold = |s: Status| {
            let entry = merged.entry(s.name.clone()).or_insert(Status {
                usage: None,
                name: s.name.clone(),
                ready: true,
                reason: None,
            });
            if s.usage.is_some() {
                entry.usage = s.usage;
            }
            if !s.ready {
                entry.ready = false;
                entry.reason = s.reason;
            }
        };
        for s in self.db.reconcile(&db) {
            fold(s);
        }
        match &mut self.gateway {
            Some(g) => g.reconcile(&gw).into_iter().for_each(&mut fold),
            None => gw.iter().for_each(|a| {
                fold(Status {
                    name: a.name.clone(),
                    ready: false,
                    reason: Some("this node has no gateway driver".into()),
                    usage: None,
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
pub fn plan(desired: &[Assignment], observed: &BTreeMap<String, String>) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut wanted = BTreeMap::new();
    for a in desired {
        let content = serde_json::to_string_pretty(a).unwrap_or_default();
        if observed.get(&a.name) != Some(&content) {
            actions.push(Action::Write { name: a.name.clone(), content: content.clone() });
        }
        wanted.insert(a.name.clone(), ());
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

impl Driver for DirDriver {
    fn name(&self) -> &'static str {
        "dir"
    }

    fn reconcile(&mut self, desired: &[Assignment]) -> Vec<Status> {
        let failed = |reason: String| -> Vec<Status> {
            desired
                .iter()
                .map(|a| Status { usage: None, name: a.name.clone(), ready: false, reason: Some(reason.clone()) })
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
            .map(|a| match errors.get(&a.name) {
                Some(e) => Status { usage: None, name: a.name.clone(), ready: false, reason: Some(e.clone()) },
                None => Status { usage: None, name: a.name.clone(), ready: true, reason: None },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(name: &str, revision: u64) -> Assignment {
        Assignment { revision, ..crate::assignment::fixture(name) }
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

    #[test]
    fn converged_host_yields_empty_plan() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut d = DirDriver { path: dir.path().join("tenants") };
        let desired = vec![a("acme", 2)];
        let status = d.reconcile(&desired);
        assert!(status.iter().all(|s| s.ready));
        let observed = d.observe().expect("observe");
        assert!(plan(&desired, &observed).is_empty());
        // Drift is repaired by the next pass.
        std::fs::remove_file(dir.path().join("tenants/acme.json")).expect("drift");
        assert_eq!(plan(&desired, &d.observe().expect("observe")).len(), 1);
        d.reconcile(&desired);
        assert!(plan(&desired, &d.observe().expect("observe")).is_empty());
    }
}
