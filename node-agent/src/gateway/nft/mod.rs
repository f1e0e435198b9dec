//! The gateway's nftables part: one table the agent owns (`inet berqenas`), whose base chains
//! dispatch by interface and public port (verdict maps: one lookup per packet however many
//! tenants) to per-tenant chains and sets named `<tenant>-…`. Each tenant's part is replaced (or
//! only its chains refilled) in one transaction when it differs; nothing outside the table is
//! ever touched.
//!
//! - `render`: pure, the desired ruleset as data and script text (snapshot tested).
//! - `claims`: pure, which tenant gets an interface or public port several want, decided again
//!   only around a changed tenant.
//! - `observe`: pure, the table as `nft -j` lists it.
//! - `index`: pure, the table's and the ruleset's maps indexed by tenant.
//! - `plan`: pure, the steps from observed to desired and their scripts.
//! - `status`: exposure counters and sources seen, foreign chains that would drop our flows.
//! - `session`: a long-lived `nft -i` per network namespace that carries changes between resyncs.
//!
//! Every value that reaches a script is a parsed type (addresses, networks, ports) or a name
//! validated at the wire boundary (tenant names, ids, interfaces); no text a user typed is
//! written into a script unparsed.

pub mod claims;
pub mod index;
pub mod observe;
pub mod plan;
pub mod render;
pub mod session;
pub mod status;

#[cfg(test)]
mod tests;

use crate::assignment::GatewayTenant;
use crate::config::GatewayConfig;
use crate::host::exec::{self, ExecError};
pub use observe::Observed;
pub use plan::Step;
pub use render::{render, Ruleset, TABLE};
pub use status::{exposure_status, foreign_conditions, Condition, ExposureStatus, SourceSeen};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// How long one `nft` run may take (a cold load of a thousand tenants is well under it).
const NFT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run nft (is nftables installed?): {0}")]
    Exec(#[from] ExecError),
    #[error(transparent)]
    Parse(#[from] observe::ParseError),
}

/// What a `sync` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// The steps carried out, in order.
    pub applied: Vec<Step>,
    /// Tenant (or "node" for the base part) → why its step failed.
    pub failed: BTreeMap<String, String>,
    /// Parts of tenants left out by `render` (port or interface conflicts), with the reason.
    pub refused: Vec<(String, String)>,
    /// nft runs made (1 when everything went in one transaction).
    pub transactions: usize,
    pub elapsed: Duration,
    /// Of `elapsed`, the time spent listing the table (0 when planned against the last sync).
    pub listing: Duration,
    /// Of `elapsed`, the time spent in the `nft -f` runs.
    pub nft: Duration,
    /// Of `elapsed`, the time spent rendering the changed parts (`render::update`, blocked sets).
    pub render: Duration,
    /// Of `elapsed`, the time spent planning and writing the steps' scripts.
    pub plan: Duration,
}

/// What the last successful `sync` left: the ruleset, what its parts were rendered from, the
/// blocked addresses, and the table as it lists now (`plan::as_applied` of them), which
/// `sync_changes` plans against instead of listing the table (which takes seconds at a thousand
/// tenants). Cleared when a sync fails.
struct Synced {
    ruleset: Ruleset,
    inputs: render::Inputs,
    blocked: BTreeMap<String, BTreeSet<Ipv4Addr>>,
    observed: Observed,
}

static LAST_APPLIED: std::sync::Mutex<Option<Synced>> = std::sync::Mutex::new(None);

fn remember(applied: Option<Synced>) {
    if let Ok(mut last) = LAST_APPLIED.lock() {
        *last = applied;
    }
}

/// Lists the agent's table (an empty observation when it does not exist).
pub async fn observe() -> Result<Observed, NftError> {
    match exec::run("nft", &["-j", "list", "table", "inet", TABLE], None, NFT_TIMEOUT).await {
        Ok(json) => Ok(observe::parse(&json, TABLE)?),
        Err(ExecError::Failed { stderr, .. }) if stderr.contains("No such file or directory") => {
            Ok(Observed::default())
        }
        Err(e) => Err(e.into()),
    }
}

/// Lists the elements of the table's source-tracking sets (`seen`, `first`) into `observed`:
/// what forgetting a port's sources needs when planning without a listing of the table.
async fn observe_sources(observed: &mut Observed) -> Result<(), NftError> {
    for set in [render::seen::SEEN, render::seen::FIRST] {
        let json = exec::run("nft", &["-j", "list", "set", "inet", TABLE, set], None, NFT_TIMEOUT).await?;
        let listed = observe::parse(&json, TABLE)?;
        observed.sets.insert(set.to_string(), listed.sets.get(set).cloned().unwrap_or_default());
    }
    Ok(())
}

/// The blocked addresses of each tenant that has some (a tenant left out has none): only the
/// tenants listing domains cost anything, however many tenants there are.
fn blocked_of(
    desired: &[GatewayTenant],
    resolved: &BTreeMap<String, Vec<Ipv4Addr>>,
) -> BTreeMap<String, BTreeSet<Ipv4Addr>> {
    desired
        .iter()
        .filter(|t| !t.gateway.blocked_domains.is_empty())
        .map(|t| (t.name.clone(), render::blocked(t, resolved)))
        .filter(|(_, b)| !b.is_empty())
        .collect()
}

/// Observes the table and plans, changing nothing.
pub async fn plan_now(
    node: &GatewayConfig,
    desired: &[GatewayTenant],
    resolved: &BTreeMap<String, Vec<Ipv4Addr>>,
) -> Result<(Ruleset, Observed, Vec<Step>), NftError> {
    let ruleset = render(node, desired);
    let observed = observe().await?;
    let steps = plan::plan(&ruleset, &observed, &blocked_of(desired, resolved));
    Ok((ruleset, observed, steps))
}

/// Makes the agent's table match `desired`: the base part created or repaired, each tenant whose
/// part differs replaced in one transaction (the others untouched), parts of gone tenants
/// removed, blocked addresses (`resolved`: domain → addresses) refreshed. All steps go in one
/// `nft` transaction; when it is refused, each step runs on its own so one tenant's failure
/// stays its own. Lists the whole table first, so it also repairs changes made by hand: the
/// driver's periodic resync.
pub async fn sync(
    node: &GatewayConfig,
    desired: &[GatewayTenant],
    resolved: &BTreeMap<String, Vec<Ipv4Addr>>,
) -> Result<SyncReport, NftError> {
    let started = Instant::now();
    // The last sync's ruleset and table are not needed once the table is listed anew: let go
    // of them first, so a thousand tenants' table is not held twice at the peak.
    remember(None);
    let observed = observe().await?;
    let listing = started.elapsed();
    let mut ruleset = Ruleset::new(render::base_part(node));
    let mut inputs = render::Inputs::new();
    render::update(node, desired, &mut ruleset, &mut inputs);
    let blocked = blocked_of(desired, resolved);
    let steps = plan::plan(&ruleset, &observed, &blocked);
    let mut report = SyncReport { refused: ruleset.refused.clone(), listing, ..SyncReport::default() };
    let ok = run_steps(&mut report, steps, &ruleset, &observed, Via::Once).await;
    drop(observed);
    match ok {
        Some(true) => {
            let observed = plan::as_applied(&ruleset, &blocked);
            remember(Some(Synced { ruleset, inputs, blocked, observed }));
        }
        Some(false) | None => remember(None),
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Like `sync`, but plans against the table as the last successful sync of this process left
/// it instead of listing it (a full `sync` when there is none): for desired-state changes
/// between resyncs, where listing a large table would cost more than the change. Only the
/// tenants whose part or blocked addresses changed since are rendered and compared; the others
/// are as that sync left them. Changes made by hand since are repaired by the next full `sync`.
pub async fn sync_changes(
    node: &GatewayConfig,
    desired: &[GatewayTenant],
    resolved: &BTreeMap<String, Vec<Ipv4Addr>>,
) -> Result<SyncReport, NftError> {
    let started = Instant::now();
    // Taken, not copied: put back updated when the sync succeeds (nothing when it fails).
    let cached = LAST_APPLIED.lock().ok().and_then(|mut l| l.take());
    let Some(Synced { mut ruleset, mut inputs, blocked: had, mut observed }) = cached else {
        return sync(node, desired, resolved).await;
    };
    let base = ruleset.base.clone();
    let t_render = Instant::now();
    let replaced = render::update(node, desired, &mut ruleset, &mut inputs);
    let blocked = blocked_of(desired, resolved);
    let mut scope: BTreeSet<String> = replaced.keys().cloned().collect();
    for name in blocked.keys().chain(had.keys()) {
        if blocked.get(name) != had.get(name) {
            scope.insert(name.clone());
        }
    }
    let base_changed = base != ruleset.base;
    let render_took = t_render.elapsed();
    let t_plan = Instant::now();
    let steps = {
        let scope: BTreeSet<&str> = scope.iter().map(String::as_str).collect();
        match base_changed {
            true => plan::plan(&ruleset, &observed, &blocked),
            false => plan::plan_only(&ruleset, &observed, &blocked, &scope),
        }
    };
    let mut report = SyncReport {
        refused: ruleset.refused.clone(),
        render: render_took,
        plan: t_plan.elapsed(),
        ..SyncReport::default()
    };
    // A port given up: its sources seen are deleted one by one, so they are listed first (the
    // only listing a change needs, and only then).
    let forgets = steps.iter().any(|s| matches!(s, Step::Forget { .. }));
    if forgets {
        if let Err(e) = observe_sources(&mut observed).await {
            remember(None);
            return Err(e);
        }
    }
    let Some(ok) = run_steps(&mut report, steps, &ruleset, &observed, Via::Session).await else {
        // What the table holds now is unknown: list it and plan again.
        return sync(node, desired, resolved).await;
    };
    if forgets {
        // Not kept: the next listing of them is made when they are needed again.
        for set in [render::seen::SEEN, render::seen::FIRST] {
            observed.sets.insert(set.to_string(), Vec::new());
        }
    }
    if ok {
        if base_changed {
            observed = plan::as_applied(&ruleset, &blocked);
        } else {
            // The table as listed now: each changed tenant's previous part out, its new one in.
            for name in &scope {
                match replaced.get(name) {
                    Some(previous) => previous.iter().for_each(|p| plan::remove_applied(&mut observed, p)),
                    None => ruleset.tenants.get(name).iter().for_each(|p| plan::remove_applied(&mut observed, p)),
                }
            }
            for part in scope.iter().filter_map(|name| ruleset.tenants.get(name)) {
                plan::add_applied(&mut observed, part, &blocked);
            }
        }
        remember(Some(Synced { ruleset, inputs, blocked, observed }));
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// How `run_steps` sends the batch of steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// A one-shot `nft -f` (a resync: the listing costs far more than the run).
    Once,
    /// The namespace's `nft -i` session, `nft -f` when it cannot take the batch (see `session`).
    Session,
}

/// Runs `steps` (planned against `observed`) in one `nft` transaction, or each on its own when
/// that one is refused, recording them in `report`. True when the table is now as planned,
/// false when some step failed, None when the session lost the batch's answer (it may or may
/// not have been applied: only a listing of the table tells).
async fn run_steps(
    report: &mut SyncReport,
    steps: Vec<Step>,
    ruleset: &Ruleset,
    observed: &Observed,
    via: Via,
) -> Option<bool> {
    if steps.is_empty() {
        return Some(true);
    }
    let t_scripts = Instant::now();
    let scripts = plan::scripts(&steps, ruleset, observed);
    let batch: String = scripts.iter().map(|(_, s)| s.as_str()).collect();
    report.plan += t_scripts.elapsed();
    report.transactions = 1;
    let nft_started = Instant::now();
    let once = || exec::run("nft", &["-f", "-"], Some(batch.as_bytes()), NFT_TIMEOUT);
    let batch_result: Result<(), String> = match via {
        Via::Once => once().await.map(|_| ()).map_err(|e| e.to_string()),
        Via::Session => match session::run(&batch, NFT_TIMEOUT).await {
            session::Outcome::Applied => Ok(()),
            session::Outcome::Refused(e) => Err(e),
            session::Outcome::NotSent(why) => {
                tracing::debug!(%why, "nft session not used; running nft -f");
                once().await.map(|_| ()).map_err(|e| e.to_string())
            }
            session::Outcome::Unknown(why) => {
                report.nft = nft_started.elapsed();
                tracing::warn!(%why, "nft session lost the answer to a change");
                return None;
            }
        },
    };
    report.nft = nft_started.elapsed();
    let ok = match batch_result {
        Ok(()) => {
            report.applied = scripts.into_iter().map(|(step, _)| step).collect();
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "nft refused the whole batch; applying step by step");
            for (step, script) in scripts {
                report.transactions += 1;
                let one_started = Instant::now();
                let one = exec::run("nft", &["-f", "-"], Some(script.as_bytes()), NFT_TIMEOUT).await;
                report.nft += one_started.elapsed();
                match one {
                    Ok(_) => report.applied.push(step),
                    Err(e) => {
                        report.failed.insert(step.tenant().unwrap_or("node").to_string(), e.to_string());
                    }
                }
            }
            false
        }
    };
    for step in &report.applied {
        tracing::info!(tenant = step.tenant().unwrap_or("node"), "nft: {}", step.describe());
    }
    Some(ok)
}

/// What `sync` would change now, as `berqenas-node-agent plan` prints it.
pub async fn preview(
    node: &GatewayConfig,
    desired: &[GatewayTenant],
    resolved: &BTreeMap<String, Vec<Ipv4Addr>>,
) -> Result<Vec<crate::driver::Change>, String> {
    let (ruleset, _, steps) = plan_now(node, desired, resolved).await.map_err(|e| e.to_string())?;
    let refused = ruleset.refused.into_iter().map(|(tenant, reason)| crate::driver::Change::Refused { tenant, reason });
    Ok(steps
        .iter()
        .map(|s| crate::driver::Change::Nft { tenant: s.tenant().map(str::to_string), what: s.describe() })
        .chain(refused)
        .collect())
}

/// Resolves the blocked domains of running tenants to their IPv4 addresses (tokio's resolver,
/// 5 s per name). A name that does not resolve is left out of the answer: the caller keeps its
/// previous addresses rather than unblocking them on a resolver hiccup.
pub async fn resolve_blocked(desired: &[GatewayTenant]) -> BTreeMap<String, Vec<Ipv4Addr>> {
    let names: BTreeSet<&str> = desired
        .iter()
        .filter(|t| t.lifecycle == crate::assignment::Lifecycle::Run)
        .flat_map(|t| t.gateway.blocked_domains.iter().map(|d| d.as_str()))
        .collect();
    let mut out = BTreeMap::new();
    for name in names {
        let lookup = tokio::net::lookup_host((name, 0));
        match tokio::time::timeout(Duration::from_secs(5), lookup).await {
            Ok(Ok(addrs)) => {
                let v4: BTreeSet<Ipv4Addr> = addrs
                    .filter_map(|a| match a.ip() {
                        std::net::IpAddr::V4(v4) => Some(v4),
                        std::net::IpAddr::V6(_) => None,
                    })
                    .collect();
                out.insert(name.to_string(), v4.into_iter().collect());
            }
            Ok(Err(e)) => tracing::warn!(domain = name, error = %e, "blocked domain does not resolve"),
            Err(_) => tracing::warn!(domain = name, "blocked domain: resolver timed out"),
        }
    }
    out
}
