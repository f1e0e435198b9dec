//! `berqenas-node-agent run`: the reconcile loop and the connection to the coordinators.
//!
//! - The reconcile loop is level-triggered: on every new desired state and on a periodic resync
//!   it hands the whole desired state to the driver (observe → plan → apply), persists what it
//!   applied, and publishes a status report.
//! - The connection loop holds one mTLS session (Watch + Report) with one coordinator at a time,
//!   moves to the next on failure with exponential backoff and full jitter, and never applies a
//!   state older than one it has applied. With no coordinator reachable nothing is torn down:
//!   the last applied state stays and keeps being enforced (fail static).

use crate::assignment::Assignment;
use crate::config::AgentConfig;
use crate::connect::node_client;
use crate::driver::Driver;
use crate::host::files::write_atomic;
use anyhow::Context;
use berqenas_proto::node as pb;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

/// The newest state this node applied; persisted so a restart resumes from it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub revision: u64,
    pub tenants: Vec<Assignment>,
    #[serde(default)]
    pub coordinators: Vec<String>,
}

impl Applied {
    pub fn load(cfg: &AgentConfig) -> anyhow::Result<Self> {
        match std::fs::read(cfg.applied_path()) {
            Ok(bytes) => serde_json::from_slice(&bytes).context("parse applied.json"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).context("read applied.json"),
        }
    }

    fn save(&self, cfg: &AgentConfig) -> anyhow::Result<()> {
        Ok(write_atomic(&cfg.applied_path(), &serde_json::to_vec_pretty(self)?, 0o600)?)
    }
}

#[derive(Debug, Clone)]
struct Desired {
    revision: u64,
    tenants: Vec<Assignment>,
}

/// A session with no message for this long is considered dead (coordinators send bookmarks).
const SILENCE_LIMIT: Duration = Duration::from_secs(15);
/// Reports are re-sent this often even when unchanged.
const REPORT_EVERY: Duration = Duration::from_secs(20);
const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// Passes start at least this far apart: while changes keep arriving (a burst of creates) they
/// are taken in batches, each pass costing one observe, one saved state and one report, instead
/// of one pass per change. A change after a quiet spell starts its pass at once.
const MIN_PASS_GAP: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(5);

/// Full jitter: a uniformly random wait up to `min(cap, base * 2^failures)`.
pub fn backoff(failures: u32) -> Duration {
    let ceiling = BACKOFF_BASE.saturating_mul(1u32 << failures.min(16)).min(BACKOFF_CAP);
    let ms = rand::thread_rng().gen_range(0..=ceiling.as_millis() as u64);
    Duration::from_millis(ms)
}

struct Shared {
    cfg: AgentConfig,
    applied_revision: AtomicU64,
    coordinators: Mutex<Vec<String>>,
    desired: watch::Sender<Option<Desired>>,
    report: watch::Sender<Option<pb::StatusReport>>,
    /// The db role's realtime ingest, when this node serves one: told every new desired state.
    realtime: Option<crate::realtime::Realtime>,
    /// The db role's backup scheduler, when `[backup]` names a bucket (PostgreSQL driver).
    backups: Option<crate::backup::schedule::Backups>,
    /// The db role's login watcher (PostgreSQL driver): told every new desired state and what
    /// the coordinators recorded.
    logins: Option<crate::db::postgres::logins::Logins>,
}

/// The report with the backup events not yet acknowledged, the backups under way and the
/// logins not yet recorded.
fn with_backups(shared: &Shared, mut r: pb::StatusReport) -> pb::StatusReport {
    if let Some(b) = &shared.backups {
        r.backups = b.events().borrow().clone();
        r.backup_progress = b.progress().borrow().values().cloned().collect();
    }
    if let Some(l) = &shared.logins {
        r.db_logins = l.outbox().borrow().iter().map(crate::report::login_pb).collect();
    }
    r
}

/// The PostgreSQL tenants of these assignments (whose roles' logins are reported).
fn postgres_tenant_names(tenants: &[Assignment]) -> std::collections::BTreeSet<String> {
    let db = db_tenants(tenants);
    crate::db::postgres_tenants(&db).map(|a| a.name.clone()).collect()
}

/// The backup part of each db assignment, taken out of the message (its data keys stay in
/// memory, never in applied.json).
fn backup_plans(
    tenants: &mut [pb::TenantAssignment],
) -> std::collections::BTreeMap<String, crate::backup::schedule::Plan> {
    let mut plans = std::collections::BTreeMap::new();
    for t in tenants {
        let deleted = t.lifecycle == pb::Lifecycle::Deleted as i32;
        let Some(db) = t.db.as_mut() else { continue };
        let own_database = db.isolation == pb::Isolation::Database as i32;
        if let Some(part) = db.backup.take() {
            plans.insert(t.name.clone(), crate::backup::schedule::Plan { own_database, deleted, part });
        }
    }
    plans
}

fn db_tenants(tenants: &[Assignment]) -> Vec<crate::assignment::DbTenant> {
    tenants.iter().filter_map(Assignment::db_tenant).collect()
}

async fn reconcile_loop(shared: Arc<Shared>, mut driver: Box<dyn Driver>, mut applied: Applied) {
    let mut desired_rx = shared.desired.subscribe();
    let wake = driver.wake();
    let mut last_start: Option<Instant> = None;
    loop {
        if let Some(wait) = last_start.and_then(|t| MIN_PASS_GAP.checked_sub(t.elapsed())) {
            tokio::time::sleep(wait).await;
        }
        last_start = Some(Instant::now());
        let pending = desired_rx.borrow_and_update().clone();
        if let Some(d) = pending {
            if d.revision >= applied.revision {
                applied.revision = d.revision;
                applied.tenants = d.tenants;
            }
        }
        applied.coordinators = shared.coordinators.lock().map(|c| c.clone()).unwrap_or_default();
        let tenants = applied.tenants.clone();
        if let Some(rt) = &shared.realtime {
            // Before the driver's pass: a purged tenant's slots go before its database does.
            rt.set(&db_tenants(&tenants));
            rt.converge().await;
        }
        let started = Instant::now();
        // On a task of its own, so a panicking driver is reported rather than taking the loop down
        // unseen.
        let result = tokio::spawn(async move {
            let statuses = driver.reconcile(&tenants).await;
            (driver, statuses)
        })
        .await;
        let (d, statuses) = match result {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "driver panicked; the agent stops reconciling");
                return;
            }
        };
        driver = d;
        if !driver.times_itself() {
            let failed = statuses.iter().filter(|s| !s.ready).count();
            crate::metrics::METRICS.pass(driver.name(), started.elapsed(), failed);
        }
        if let Err(e) = applied.save(&shared.cfg) {
            tracing::warn!(error = %e, "could not persist the applied state");
        }
        shared.applied_revision.store(applied.revision, Ordering::SeqCst);
        tracing::debug!(revision = applied.revision, took = ?started.elapsed(), "reconciled");
        let capacity =
            pb::Capacity { max_tenants: shared.cfg.max_tenants, ..crate::join::host_capacity(&shared.cfg.data_dir) };
        let mut node = driver.node_status();
        let events = match &shared.realtime {
            Some(rt) => {
                node.conditions.extend(rt.conditions());
                rt.events_total()
            }
            None => Default::default(),
        };
        if let Some(l) = &shared.logins {
            node.conditions.extend(l.conditions());
        }
        let now = SystemTime::now();
        let served_events = shared.realtime.is_some();
        let samples = statuses
            .iter()
            .map(|s| {
                let events = served_events.then(|| events.get(&s.name).copied().unwrap_or(0));
                crate::metrics::TenantSample::of(s, events, now)
            })
            .collect();
        crate::metrics::METRICS.applied(applied.revision, samples);
        let _ = shared.report.send(Some(crate::report::to_pb(applied.revision, &statuses, capacity, &node, &events)));
        let woken = async {
            match &wake {
                Some(w) => w.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = desired_rx.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(shared.cfg.resync_interval) => {}
            _ = woken => {}
        }
    }
}

fn tls(cfg: &AgentConfig) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let ca = std::fs::read_to_string(cfg.ca_path()).context("read ca.pem")?;
    let cert = std::fs::read_to_string(cfg.cert_path()).context("read node.pem")?;
    let key = std::fs::read_to_string(cfg.key_path()).context("read node.key")?;
    Ok(Arc::new(berqenas_pki::client_config(&ca, Some((&cert, &key)))?))
}

/// Renews the node certificate over the existing mTLS channel when a third of its life is left.
async fn renew_if_due(
    cfg: &AgentConfig,
    client: &mut pb::node_client::NodeClient<tonic::transport::Channel>,
) -> anyhow::Result<bool> {
    let pem = std::fs::read_to_string(cfg.cert_path()).context("read node.pem")?;
    let (nb, na) = berqenas_pki::validity(&berqenas_pki::first_cert_der(&pem)?)?;
    if !berqenas_pki::should_renew(nb, na, SystemTime::now()) {
        return Ok(false);
    }
    let kc = berqenas_pki::new_key_and_csr("berqenas node")?;
    let resp = client.renew(pb::RenewRequest { csr_pem: kc.csr_pem }).await.context("renew")?.into_inner();
    write_atomic(&cfg.key_path(), kc.key_pem.as_bytes(), 0o600)?;
    write_atomic(&cfg.cert_path(), resp.cert_chain_pem.as_bytes(), 0o644)?;
    tracing::info!("renewed the node certificate");
    Ok(true)
}

/// One session with one coordinator. Returns when the stream ends or fails.
async fn session(shared: &Shared, addr: &str) -> anyhow::Result<()> {
    let mut client = node_client(addr, tls(&shared.cfg)?).await?;
    if renew_if_due(&shared.cfg, &mut client).await? {
        client = node_client(addr, tls(&shared.cfg)?).await?;
    }
    let last = shared.applied_revision.load(Ordering::SeqCst);
    let mut watch = client
        .watch(pb::WatchRequest { last_applied_revision: last })
        .await
        .map_err(|s| anyhow::anyhow!("watch refused: {}", s.message()))?
        .into_inner();
    tracing::info!(coordinator = addr, revision = last, "watching desired state");
    crate::metrics::METRICS.connected(true);
    let (report_tx, report_rx) = tokio::sync::mpsc::channel::<pb::StatusReport>(4);
    let mut report_client = client.clone();
    let reporter =
        tokio::spawn(async move { report_client.report(tokio_stream::wrappers::ReceiverStream::new(report_rx)).await });
    let mut reports = shared.report.subscribe();
    if let Some(r) = reports.borrow_and_update().clone() {
        report_tx.send(with_backups(shared, r)).await.ok();
    }
    let mut backup_events = match &shared.backups {
        Some(b) => b.events(),
        None => tokio::sync::watch::channel(Vec::new()).1,
    };
    let mut backup_progress = match &shared.backups {
        Some(b) => b.progress(),
        None => tokio::sync::watch::channel(Default::default()).1,
    };
    let mut db_logins = match &shared.logins {
        Some(l) => l.outbox(),
        None => tokio::sync::watch::channel(Vec::new()).1,
    };
    let mut ticker = tokio::time::interval(REPORT_EVERY);
    ticker.tick().await;
    let result = loop {
        tokio::select! {
            msg = tokio::time::timeout(SILENCE_LIMIT, watch.message()) => {
                let msg = match msg {
                    Err(_) => break Err(anyhow::anyhow!("no message from {addr} for {SILENCE_LIMIT:?}")),
                    Ok(Err(status)) => break Err(anyhow::anyhow!("watch ended: {}", status.message())),
                    Ok(Ok(None)) => break Ok(()),
                    Ok(Ok(Some(m))) => m,
                };
                accept(shared, msg);
            }
            changed = reports.changed() => {
                if changed.is_err() { break Ok(()); }
                let latest = reports.borrow_and_update().clone();
                if let Some(r) = latest {
                    if report_tx.send(with_backups(shared, r)).await.is_err() { break Err(anyhow::anyhow!("report stream closed")); }
                }
            }
            changed = backup_events.changed(), if shared.backups.is_some() => {
                if changed.is_err() { break Ok(()); }
                backup_events.borrow_and_update();
                let latest = reports.borrow().clone();
                if let Some(r) = latest {
                    if report_tx.send(with_backups(shared, r)).await.is_err() { break Err(anyhow::anyhow!("report stream closed")); }
                }
            }
            changed = db_logins.changed(), if shared.logins.is_some() => {
                if changed.is_err() { break Ok(()); }
                db_logins.borrow_and_update();
                let latest = reports.borrow().clone();
                if let Some(r) = latest {
                    if report_tx.send(with_backups(shared, r)).await.is_err() { break Err(anyhow::anyhow!("report stream closed")); }
                }
            }
            changed = backup_progress.changed(), if shared.backups.is_some() => {
                if changed.is_err() { break Ok(()); }
                backup_progress.borrow_and_update();
                let latest = reports.borrow().clone();
                if let Some(r) = latest {
                    if report_tx.send(with_backups(shared, r)).await.is_err() { break Err(anyhow::anyhow!("report stream closed")); }
                }
            }
            _ = ticker.tick() => {
                let latest = reports.borrow().clone();
                if let Some(r) = latest {
                    if report_tx.send(with_backups(shared, r)).await.is_err() { break Err(anyhow::anyhow!("report stream closed")); }
                }
                // A long session renews the certificate in place, then reconnects with it.
                match renew_if_due(&shared.cfg, &mut client).await {
                    Ok(true) => break Ok(()),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "certificate renewal failed; will retry"),
                }
            }
        }
        if reporter.is_finished() {
            break Err(anyhow::anyhow!("report stream ended"));
        }
    };
    reporter.abort();
    crate::metrics::METRICS.connected(false);
    result
}

/// Takes a message from the watch: bookmarks only prove liveness; a full state is handed to the
/// reconcile loop unless it is older than what was already applied.
fn accept(shared: &Shared, mut msg: pb::DesiredState) {
    if let Some(l) = &shared.logins {
        l.recorded(msg.db_logins_recorded);
    }
    if msg.bookmark {
        return;
    }
    let applied = shared.applied_revision.load(Ordering::SeqCst);
    let pending = shared.desired.borrow().as_ref().map_or(0, |d| d.revision);
    if msg.revision < applied.max(pending) {
        tracing::warn!(offered = msg.revision, applied, "ignoring a desired state older than the one applied");
        return;
    }
    let plans = backup_plans(&mut msg.tenants);
    if let Some(b) = &shared.backups {
        b.set(plans);
    }
    let mut tenants = Vec::new();
    for t in msg.tenants {
        match Assignment::try_from(t) {
            Ok(a) => tenants.push(a),
            Err(e) => tracing::warn!(error = %e, "skipping an invalid assignment"),
        }
    }
    if !msg.coordinators.is_empty() {
        if let Ok(mut list) = shared.coordinators.lock() {
            *list = msg.coordinators.iter().map(|c| c.address.clone()).collect();
        }
    }
    tracing::info!(revision = msg.revision, tenants = tenants.len(), "new desired state");
    crate::metrics::METRICS.desired(msg.revision);
    if let Some(rt) = &shared.realtime {
        rt.set(&db_tenants(&tenants));
    }
    if let Some(l) = &shared.logins {
        l.set_tenants(postgres_tenant_names(&tenants));
    }
    let _ = shared.desired.send(Some(Desired { revision: msg.revision, tenants }));
}

/// What the coordinators want this node to do now, for `plan`: the first full state a watch
/// sends, from the first coordinator (as `run` knows them) that answers. Invalid assignments are
/// left out with a warning, as `run` does. Renews nothing, reports nothing.
pub async fn fetch_desired(cfg: &AgentConfig) -> anyhow::Result<(u64, Vec<Assignment>)> {
    let mut coordinators = cfg.coordinators.clone();
    for c in Applied::load(cfg)?.coordinators {
        if !coordinators.contains(&c) {
            coordinators.push(c);
        }
    }
    let mut last = anyhow::anyhow!("no coordinator is known");
    for addr in &coordinators {
        let attempt = async {
            let mut client = node_client(addr, tls(cfg)?).await?;
            let mut watch = client
                .watch(pb::WatchRequest { last_applied_revision: 0 })
                .await
                .map_err(|s| anyhow::anyhow!("watch refused: {}", s.message()))?
                .into_inner();
            loop {
                let msg = tokio::time::timeout(SILENCE_LIMIT, watch.message())
                    .await
                    .map_err(|_| anyhow::anyhow!("no desired state from {addr} within {SILENCE_LIMIT:?}"))?
                    .map_err(|s| anyhow::anyhow!("watch ended: {}", s.message()))?
                    .ok_or_else(|| anyhow::anyhow!("watch ended"))?;
                if !msg.bookmark {
                    break Ok::<_, anyhow::Error>(msg);
                }
            }
        };
        match attempt.await {
            Ok(msg) => {
                let tenants = msg
                    .tenants
                    .into_iter()
                    .filter_map(|t| match Assignment::try_from(t) {
                        Ok(a) => Some(a),
                        Err(e) => {
                            tracing::warn!(error = %e, "skipping an invalid assignment");
                            None
                        }
                    })
                    .collect();
                return Ok((msg.revision, tenants));
            }
            Err(e) => {
                tracing::warn!(coordinator = %addr, error = %format!("{e:#}"), "cannot read the desired state");
                last = e.context(format!("coordinator {addr}"));
            }
        }
    }
    Err(last.context("no coordinator gave the desired state"))
}

/// Runs the agent until `shutdown` resolves.
pub async fn run(
    cfg: AgentConfig,
    driver: Box<dyn Driver>,
    realtime: Option<crate::realtime::Realtime>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let applied = Applied::load(&cfg)?;
    let mut coordinators = cfg.coordinators.clone();
    for c in &applied.coordinators {
        if !coordinators.contains(c) {
            coordinators.push(c.clone());
        }
    }
    tracing::info!(node = cfg.node_id, revision = applied.revision, driver = driver.name(), "agent starting");
    let (desired, _) = watch::channel(None);
    let (report, _) = watch::channel(None);
    let backups = match (&cfg.backup, &cfg.driver) {
        (Some(bucket), crate::config::DriverConfig::Postgres { url, .. }) => {
            let store = crate::backup::store::Store::new(bucket).context("the [backup] bucket")?;
            tracing::info!(bucket = %bucket.bucket, "backups scheduled by the coordinators");
            Some(crate::backup::schedule::Backups::start(store, url.clone()))
        }
        (Some(_), _) => {
            tracing::warn!("[backup] is set but backups need the postgres driver; no backups run");
            None
        }
        (None, _) => None,
    };
    let logins = match &cfg.driver {
        crate::config::DriverConfig::Postgres { url, .. } => Some(crate::db::postgres::logins::Logins::start(
            url.clone(),
            &cfg.data_dir,
            postgres_tenant_names(&applied.tenants),
        )),
        _ => None,
    };
    let shared = Arc::new(Shared {
        applied_revision: AtomicU64::new(applied.revision),
        coordinators: Mutex::new(coordinators),
        desired,
        report,
        cfg,
        realtime,
        backups,
        logins,
    });
    let reconciler = tokio::spawn(reconcile_loop(shared.clone(), driver, applied));
    let connections = {
        let shared = shared.clone();
        async move {
            let mut failures = 0u32;
            let mut next = 0usize;
            loop {
                let list = shared.coordinators.lock().map(|c| c.clone()).unwrap_or_default();
                if list.is_empty() {
                    tokio::time::sleep(BACKOFF_CAP).await;
                    continue;
                }
                let addr = list[next % list.len()].clone();
                next += 1;
                let started = Instant::now();
                match session(&shared, &addr).await {
                    Ok(()) => tracing::info!(coordinator = %addr, "session ended"),
                    Err(e) => tracing::warn!(coordinator = %addr, error = %format!("{e:#}"), "session failed"),
                }
                failures = if started.elapsed() > Duration::from_secs(10) { 0 } else { failures + 1 };
                tokio::time::sleep(backoff(failures)).await;
            }
        }
    };
    tokio::select! {
        _ = connections => {}
        _ = shutdown => tracing::info!("agent stopping; the host keeps its last applied state"),
    }
    reconciler.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        for failures in 0..40 {
            assert!(backoff(failures) <= BACKOFF_CAP);
        }
        let samples: std::collections::BTreeSet<u128> = (0..50).map(|_| backoff(10).as_millis()).collect();
        assert!(samples.len() > 10, "full jitter spreads reconnects: {samples:?}");
    }
}
