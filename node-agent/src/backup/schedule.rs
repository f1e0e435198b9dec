//! The db role's backup scheduler: per tenant, from the backup part of its assignment (policy
//! interval, data keys, last backup and failure, requests, expired objects), it backs up when
//! due (or asked), retries a failure with backoff, restores when asked, and deletes the objects
//! retention expired — with the pipelines of `backup/mod.rs`. Each result is an event in the
//! outbox, sent with every report until the desired state shows the coordinators recorded it;
//! the catalog changes only from those reports. Data keys live in memory only.
//!
//! `decide` (what to do now) and `prune` (which events are acknowledged) are pure.

use super::format::DataKey;
use super::pg::Mode;
use super::store::Store;
use super::Source;
use berqenas_proto::node as pb;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// One tenant's backups as the scheduler needs them.
#[derive(Clone)]
pub struct Plan {
    pub own_database: bool,
    /// Offboarded: only a requested (final) backup runs, nothing on schedule.
    pub deleted: bool,
    pub part: pb::BackupAssignment,
}

/// The first retry after a failure, doubled each failure, at most the policy's interval.
const RETRY_BASE: Duration = Duration::from_secs(15);

/// How long after a failure (the `failures`th in a row) the next attempt waits.
pub fn retry_after(interval_s: u32, failures: u32) -> Duration {
    let interval = Duration::from_secs(u64::from(interval_s.max(1)));
    RETRY_BASE.saturating_mul(1u32 << failures.saturating_sub(1).min(16)).min(interval)
}

/// What to do for a tenant now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Delete these expired objects: (entry id, object key).
    Delete(Vec<(String, String)>),
    Restore(pb::BackupRestore),
    /// Back up now; `Some(id)` answers on-demand request `id`.
    Backup(Option<String>),
}

fn events_of<'a>(outbox: &'a [pb::BackupEvent], tenant: &'a str) -> impl Iterator<Item = &'a pb::backup_event::Event> {
    outbox.iter().filter(move |e| e.tenant == tenant).filter_map(|e| e.event.as_ref())
}

/// What tenant `tenant` needs at `now_ms`, given its plan and the events not yet acknowledged.
pub fn decide(now_ms: u64, tenant: &str, plan: &Plan, outbox: &[pb::BackupEvent]) -> Vec<Step> {
    use pb::backup_event::Event;
    let p = &plan.part;
    let mut last_taken = p.last_taken_ms;
    let (mut failed_at, mut failures) = (p.failed_at_ms, p.failures);
    let mut answered = std::collections::BTreeSet::new();
    let mut deleted = std::collections::BTreeSet::new();
    for e in events_of(outbox, tenant) {
        match e {
            Event::Done(d) => {
                last_taken = last_taken.max(d.taken_ms);
                answered.insert(d.request.clone());
            }
            Event::Failed(f) => {
                if f.at_ms > failed_at {
                    failed_at = f.at_ms;
                    failures = p.failures + 1;
                }
                answered.insert(f.request.clone());
            }
            Event::Deleted(d) => deleted.extend(d.ids.iter().cloned()),
            Event::Restored(r) => {
                answered.insert(r.request.clone());
            }
        }
    }
    let mut steps = Vec::new();
    let expired: Vec<(String, String)> =
        p.expired.iter().filter(|o| !deleted.contains(&o.id)).map(|o| (o.id.clone(), o.key.clone())).collect();
    if !expired.is_empty() {
        steps.push(Step::Delete(expired));
    }
    if let Some(r) = p.restore.as_ref().filter(|r| !answered.contains(&r.request)) {
        steps.push(Step::Restore(r.clone()));
    }
    if !p.run_request.is_empty() && !answered.contains(&p.run_request) {
        steps.push(Step::Backup(Some(p.run_request.clone())));
        return steps;
    }
    if plan.deleted {
        return steps;
    }
    let interval_ms = u64::from(p.interval_s) * 1000;
    let due = last_taken == 0 || now_ms >= last_taken.saturating_add(interval_ms);
    let failing = failed_at > last_taken && failures > 0;
    let waited = !failing || now_ms >= failed_at.saturating_add(retry_after(p.interval_s, failures).as_millis() as u64);
    if due && waited {
        steps.push(Step::Backup(None));
    }
    steps
}

/// Drops the events the plans show recorded (and those of tenants no longer here).
pub fn prune(outbox: &mut Vec<pb::BackupEvent>, plans: &BTreeMap<String, Plan>) {
    use pb::backup_event::Event;
    outbox.retain(|e| {
        let Some(plan) = plans.get(&e.tenant) else { return false };
        let p = &plan.part;
        match &e.event {
            Some(Event::Done(d)) => p.last_taken_ms < d.taken_ms,
            Some(Event::Failed(f)) => p.failed_at_ms < f.at_ms && p.last_taken_ms < f.at_ms,
            Some(Event::Deleted(d)) => p.expired.iter().any(|o| d.ids.contains(&o.id)),
            Some(Event::Restored(r)) => p.restore.as_ref().is_some_and(|x| x.request == r.request),
            None => false,
        }
    });
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The scheduler as the runtime holds it: plans in, events and progress out.
pub struct Backups {
    plans: watch::Sender<BTreeMap<String, Plan>>,
    events: watch::Sender<Vec<pb::BackupEvent>>,
    progress: watch::Sender<BTreeMap<String, pb::BackupProgress>>,
}

/// How often a backup under way tells the reports how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

impl Backups {
    /// Starts the scheduler for the PostgreSQL at `url` and the bucket `store`.
    pub fn start(store: Store, url: String) -> Self {
        let (plans, plans_rx) = watch::channel(BTreeMap::new());
        let (events, _) = watch::channel(Vec::new());
        let (progress, _) = watch::channel(BTreeMap::new());
        let task = Task { store, url, plans: plans_rx, events: events.clone(), progress: progress.clone() };
        tokio::spawn(task.run());
        Self { plans, events, progress }
    }

    /// The tenants' plans from a new desired state.
    pub fn set(&self, plans: BTreeMap<String, Plan>) {
        self.events.send_modify(|outbox| prune(outbox, &plans));
        let _ = self.plans.send(plans);
    }

    /// The events to send with every report, and a receiver that changes when they do.
    pub fn events(&self) -> watch::Receiver<Vec<pb::BackupEvent>> {
        self.events.subscribe()
    }

    /// The backups under way (per tenant), and a receiver that changes when they do (at most
    /// every [`PROGRESS_EVERY`] for each).
    pub fn progress(&self) -> watch::Receiver<BTreeMap<String, pb::BackupProgress>> {
        self.progress.subscribe()
    }
}

struct Task {
    store: Store,
    url: String,
    plans: watch::Receiver<BTreeMap<String, Plan>>,
    events: watch::Sender<Vec<pb::BackupEvent>>,
    progress: watch::Sender<BTreeMap<String, pb::BackupProgress>>,
}

fn clip(e: impl std::fmt::Display) -> String {
    e.to_string().chars().take(300).collect()
}

impl Task {
    async fn run(mut self) {
        loop {
            let plans = self.plans.borrow_and_update().clone();
            let last: BTreeMap<String, Option<u64>> = plans
                .iter()
                .map(|(t, p)| (t.clone(), (p.part.last_taken_ms > 0).then_some(p.part.last_taken_ms / 1000)))
                .collect();
            crate::metrics::METRICS.backups(last);
            for (tenant, plan) in &plans {
                let outbox = self.events.borrow().clone();
                for step in decide(now_ms(), tenant, plan, &outbox) {
                    if let Some(event) = self.step(tenant, plan, step).await {
                        self.events.send_modify(|o| {
                            // Only the newest failure of a tenant is kept.
                            if matches!(event, pb::backup_event::Event::Failed(_)) {
                                o.retain(|e| {
                                    e.tenant != *tenant || !matches!(e.event, Some(pb::backup_event::Event::Failed(_)))
                                });
                            }
                            o.push(pb::BackupEvent { tenant: tenant.clone(), event: Some(event) });
                        });
                    }
                }
            }
            tokio::select! {
                r = self.plans.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    fn key(plan: &Plan, id: &str) -> Option<DataKey> {
        let k = plan.part.keys.iter().find(|k| k.id == id)?;
        Some(DataKey { id: k.id.clone(), key: k.key.as_slice().try_into().ok()? })
    }

    async fn step(&self, tenant: &str, plan: &Plan, step: Step) -> Option<pb::backup_event::Event> {
        use pb::backup_event::Event;
        let source = Source { url: self.url.clone(), tenant: tenant.to_string(), own_database: plan.own_database };
        match step {
            Step::Delete(objects) => {
                let mut ids = Vec::new();
                for (id, key) in objects {
                    if !key.starts_with(&format!("tenants/{tenant}/")) {
                        tracing::warn!(tenant, key, "refusing to delete an object outside the tenant's prefix");
                        continue;
                    }
                    match self.store.delete(&key).await {
                        Ok(()) => ids.push(id),
                        Err(e) => {
                            tracing::warn!(tenant, key, error = %e, "could not delete an expired backup; will retry")
                        }
                    }
                }
                tracing::info!(tenant, deleted = ids.len(), "retention deleted expired backups");
                (!ids.is_empty()).then_some(Event::Deleted(pb::BackupsDeleted { ids }))
            }
            Step::Restore(r) => {
                let mode = if r.overwrite {
                    Mode::Overwrite { keep: r.schema.clone() }
                } else {
                    Mode::Clone { schema: r.schema.clone() }
                };
                let result = match Self::key(plan, &r.key_id) {
                    None => Err(format!("data key {} is not known to this node", r.key_id)),
                    Some(key) if r.key.starts_with(&format!("tenants/{tenant}/")) => {
                        tracing::info!(tenant, request = r.request, object = r.key, "restoring");
                        super::restore(&self.store, &source, &key, &r.key, &r.sha256, &mode).await.map_err(clip)
                    }
                    Some(_) => Err(format!("{} is not an object of tenant {tenant}", r.key)),
                };
                let at_ms = now_ms();
                Some(Event::Restored(match result {
                    Ok(done) => pb::RestoreDone {
                        request: r.request,
                        ok: true,
                        reason: String::new(),
                        schema: done.schema,
                        kept: done.kept.unwrap_or_default(),
                        at_ms,
                    },
                    Err(reason) => {
                        tracing::warn!(tenant, reason, "restore failed");
                        pb::RestoreDone {
                            request: r.request,
                            ok: false,
                            reason,
                            schema: String::new(),
                            kept: String::new(),
                            at_ms,
                        }
                    }
                }))
            }
            Step::Backup(request) => {
                let request_id = request.unwrap_or_default();
                let started = SystemTime::now();
                let taken_ms = now_ms();
                let Some(key) = Self::key(plan, &plan.part.current_key_id) else {
                    let reason = format!("the current data key {} is not known to this node", plan.part.current_key_id);
                    return Some(Event::Failed(pb::BackupFailed { at_ms: taken_ms, reason, request: request_id }));
                };
                let id = hex::encode(rand::random::<[u8; 6]>());
                let object = super::object_key(tenant, started, &id);
                tracing::info!(tenant, object, "backup starting");
                let shown = pb::BackupProgress {
                    tenant: tenant.to_string(),
                    request: request_id.clone(),
                    started_ms: taken_ms,
                    ..Default::default()
                };
                self.progress.send_modify(|p| {
                    p.insert(tenant.to_string(), shown.clone());
                });
                let mut told = std::time::Instant::now();
                let result = super::backup(&self.store, &source, &key, &object, |p| {
                    tracing::debug!(
                        tenant,
                        dumped = p.dumped,
                        uploaded = p.uploaded,
                        parts = p.parts,
                        "backup progress"
                    );
                    if told.elapsed() >= PROGRESS_EVERY {
                        told = std::time::Instant::now();
                        let now = pb::BackupProgress {
                            dumped: p.dumped,
                            uploaded: p.uploaded,
                            parts: u32::try_from(p.parts).unwrap_or(u32::MAX),
                            ..shown.clone()
                        };
                        self.progress.send_modify(|all| {
                            all.insert(tenant.to_string(), now);
                        });
                    }
                })
                .await;
                self.progress.send_modify(|p| {
                    p.remove(tenant);
                });
                Some(match result {
                    Ok(done) => {
                        tracing::info!(tenant, object, bytes = done.bytes, "backup completed");
                        crate::metrics::METRICS.backups(BTreeMap::from([(tenant.to_string(), Some(taken_ms / 1000))]));
                        Event::Done(pb::BackupDone {
                            id,
                            key: done.key,
                            taken_ms,
                            bytes: done.bytes,
                            sha256: done.sha256,
                            dumped: done.dumped,
                            duration_ms: done.duration.as_millis() as u64,
                            format_version: u32::from(done.format_version),
                            server_version: done.server_version,
                            key_id: done.key_id,
                            request: request_id,
                        })
                    }
                    Err(e) => {
                        tracing::warn!(tenant, error = %e, "backup failed; nothing was catalogued");
                        Event::Failed(pb::BackupFailed { at_ms: now_ms(), reason: clip(e), request: request_id })
                    }
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::backup_event::Event;

    fn plan(last: u64, failed_at: u64, failures: u32) -> Plan {
        Plan {
            own_database: false,
            deleted: false,
            part: pb::BackupAssignment {
                interval_s: 3600,
                current_key_id: "acme-1".into(),
                last_taken_ms: last,
                failed_at_ms: failed_at,
                failures,
                ..Default::default()
            },
        }
    }

    fn ev(e: Event) -> pb::BackupEvent {
        pb::BackupEvent { tenant: "acme".into(), event: Some(e) }
    }

    #[test]
    fn a_first_backup_is_due_at_once_then_hourly() {
        assert_eq!(decide(5, "acme", &plan(0, 0, 0), &[]), [Step::Backup(None)]);
        assert_eq!(decide(3_599_999 + 1000, "acme", &plan(1000, 0, 0), &[]), []);
        assert_eq!(decide(3_601_000, "acme", &plan(1000, 0, 0), &[]), [Step::Backup(None)]);
    }

    #[test]
    fn a_reported_backup_is_not_taken_again_before_it_is_acknowledged() {
        let done = ev(Event::Done(pb::BackupDone { taken_ms: 10, ..Default::default() }));
        assert_eq!(decide(20, "acme", &plan(0, 0, 0), std::slice::from_ref(&done)), []);
        let mut outbox = vec![done];
        let plans = BTreeMap::from([("acme".to_string(), plan(10, 0, 0))]);
        prune(&mut outbox, &plans);
        assert!(outbox.is_empty(), "the desired state shows it: acknowledged");
    }

    #[test]
    fn a_failure_is_retried_with_backoff_capped_at_the_interval() {
        assert_eq!(retry_after(3600, 1), Duration::from_secs(15));
        assert_eq!(retry_after(3600, 3), Duration::from_secs(60));
        assert_eq!(retry_after(3600, 30), Duration::from_secs(3600));
        assert_eq!(decide(10_000, "acme", &plan(0, 1_000, 1), &[]), [], "15 s after the failure, not before");
        assert_eq!(decide(16_000, "acme", &plan(0, 1_000, 1), &[]), [Step::Backup(None)]);
        let failed = ev(Event::Failed(pb::BackupFailed { at_ms: 20_000, ..Default::default() }));
        assert_eq!(
            decide(40_000, "acme", &plan(0, 1_000, 1), std::slice::from_ref(&failed)),
            [],
            "the second waits 30 s"
        );
        assert_eq!(decide(50_001, "acme", &plan(0, 1_000, 1), &[failed]), [Step::Backup(None)]);
    }

    #[test]
    fn requests_and_expired_objects_are_served_once() {
        let mut p = plan(1000, 0, 0);
        p.part.run_request = "b7".into();
        p.part.restore = Some(pb::BackupRestore { request: "r8".into(), ..Default::default() });
        p.part.expired = vec![pb::BackupObject { id: "old".into(), key: "tenants/acme/x.bqb".into() }];
        let steps = decide(2000, "acme", &p, &[]);
        assert_eq!(steps.len(), 3, "{steps:?}");
        assert_eq!(steps[2], Step::Backup(Some("b7".into())));
        let outbox = [
            ev(Event::Done(pb::BackupDone { taken_ms: 1500, request: "b7".into(), ..Default::default() })),
            ev(Event::Restored(pb::RestoreDone { request: "r8".into(), ..Default::default() })),
            ev(Event::Deleted(pb::BackupsDeleted { ids: vec!["old".into()] })),
        ];
        assert_eq!(decide(2000, "acme", &p, &outbox), []);
        p.deleted = true;
        p.part.run_request.clear();
        p.part.restore = None;
        p.part.expired.clear();
        assert_eq!(decide(u64::MAX / 2, "acme", &p, &[]), [], "an offboarded tenant is backed up only when asked");
    }
}
