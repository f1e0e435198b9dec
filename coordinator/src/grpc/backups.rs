//! Backups on the node wire: the backup part of a db assignment with its data keys unwrapped
//! (the only place a data key exists in clear on a coordinator, on its way to the tenant's db
//! node over mTLS), and the backup events of a report turned into `Op::Backup` commands — each
//! written once (an event the state already reflects is not written again; the agent repeats it
//! until the desired state acknowledges it).

use crate::backupkey::ClusterKey;
use crate::server::Coordinator;
use crate::state::backup::desired::BackupPart;
use crate::state::backup::{BackupEntry, BackupOp, Outcome, TenantBackups};
use crate::state::names::TenantName;
use crate::state::{Command, Meta, Op};
use berqenas_proto::node as pb;

/// Most backup events taken from one report.
const MAX_EVENTS: usize = 64;

/// The part on the wire, keys unwrapped with `cluster`. `None` when this coordinator cannot
/// open the current key (no cluster key, or another one): the node then keeps what it had.
pub(super) fn part_to_pb(tenant: &str, b: &BackupPart, cluster: Option<&ClusterKey>) -> Option<pb::BackupAssignment> {
    let cluster = cluster?;
    let name = TenantName::parse(tenant).ok()?;
    let mut keys = Vec::new();
    for w in &b.keys {
        match cluster.unwrap(&name, w) {
            Ok(key) => keys.push(pb::DataKey { id: w.id.clone(), key: key.to_vec() }),
            Err(e) => tracing::warn!(tenant, error = %e, "a backup data key does not unwrap; not sent"),
        }
    }
    let current = b.keys.last()?;
    if !keys.iter().any(|k| k.id == current.id) {
        return None;
    }
    Some(pb::BackupAssignment {
        interval_s: b.interval_s,
        current_key_id: current.id.clone(),
        keys,
        last_taken_ms: b.last_taken_ms.unwrap_or(0),
        failed_at_ms: b.failure.as_ref().map_or(0, |f| f.at_ms),
        failures: b.failure.as_ref().map_or(0, |f| f.failures),
        run_request: b.run_request.clone().unwrap_or_default(),
        restore: b.restore.as_ref().map(|r| pb::BackupRestore {
            request: r.request.clone(),
            key: r.key.clone(),
            sha256: r.sha256.clone(),
            key_id: r.key_id.clone(),
            overwrite: r.overwrite,
            schema: r.schema.clone(),
        }),
        expired: b.expired.iter().map(|(id, key)| pb::BackupObject { id: id.clone(), key: key.clone() }).collect(),
    })
}

fn bounded(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

fn request(r: &str) -> Option<String> {
    (!r.is_empty()).then(|| bounded(r, 64))
}

/// The command an event asks for, validated at the edge (names, bounds); the state machine checks
/// the node holds the tenant's db role.
fn to_op(node_id: u64, e: &pb::BackupEvent) -> Option<BackupOp> {
    let tenant = TenantName::parse(&e.tenant).ok()?;
    Some(match e.event.as_ref()? {
        pb::backup_event::Event::Done(d) => BackupOp::Done {
            node_id,
            entry: BackupEntry {
                id: bounded(&d.id, 64),
                tenant,
                key: bounded(&d.key, 300),
                taken_ms: d.taken_ms,
                bytes: d.bytes,
                sha256: bounded(&d.sha256, 64),
                dumped: d.dumped,
                duration_ms: d.duration_ms,
                format_version: u8::try_from(d.format_version).ok()?,
                server_version: d.server_version,
                key_id: bounded(&d.key_id, 80),
                node_id,
            },
            request: request(&d.request),
        },
        pb::backup_event::Event::Failed(f) => BackupOp::Failed {
            node_id,
            tenant,
            at_ms: f.at_ms,
            reason: bounded(&f.reason, 300),
            request: request(&f.request),
        },
        pb::backup_event::Event::Deleted(d) => {
            BackupOp::Deleted { node_id, tenant, ids: d.ids.iter().take(600).map(|i| bounded(i, 64)).collect() }
        }
        pb::backup_event::Event::Restored(r) => BackupOp::Restored {
            node_id,
            tenant,
            outcome: Outcome {
                id: bounded(&r.request, 64),
                at_ms: r.at_ms,
                ok: r.ok,
                reason: (!r.reason.is_empty()).then(|| bounded(&r.reason, 300)),
                made: (!r.schema.is_empty()).then(|| bounded(&r.schema, 63)),
                kept: (!r.kept.is_empty()).then(|| bounded(&r.kept, 63)),
            },
        },
    })
}

/// Whether the state already shows what `op` reports.
fn recorded(b: Option<&TenantBackups>, op: &BackupOp) -> bool {
    let Some(b) = b else { return false };
    match op {
        BackupOp::Done { entry, .. } => b.entries.iter().any(|e| e.id == entry.id),
        BackupOp::Failed { at_ms, .. } => b.failure.as_ref().is_some_and(|f| f.at_ms >= *at_ms),
        BackupOp::Deleted { ids, .. } => !ids.iter().any(|id| b.expiring.contains(id)),
        BackupOp::Restored { outcome, .. } => b.restore.as_ref().is_none_or(|r| r.id != outcome.id),
        _ => true,
    }
}

/// Writes each backup event of node `id`'s report the state does not show yet.
pub(super) async fn record(
    c: &Coordinator,
    id: u64,
    src: &str,
    events: &[pb::BackupEvent],
) -> Result<(), tonic::Status> {
    for event in events.iter().take(MAX_EVENTS) {
        let Some(op) = to_op(id, event) else {
            tracing::debug!(node = id, "an invalid backup event was dropped");
            continue;
        };
        if c.read(|d| recorded(d.state.backups.get(op.tenant()), &op)) {
            continue;
        }
        let meta = super::node_meta(id, src);
        match c.write(Command { meta, op: Op::Backup(op) }).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(node = id, error = %e, "a reported backup event was refused"),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Node `id`'s backups under way, kept in memory for `backup list`/`run` to show.
pub(super) fn progress(c: &Coordinator, id: u64, under_way: &[pb::BackupProgress]) {
    let shown = under_way.iter().filter(|p| TenantName::parse(&p.tenant).is_ok()).map(|p| {
        let shown = crate::backupprogress::Shown {
            request: request(&p.request),
            started_ms: p.started_ms,
            dumped: p.dumped,
            uploaded: p.uploaded,
            parts: p.parts,
        };
        (p.tenant.clone(), shown)
    });
    c.backup_progress.reported(id, std::time::Instant::now(), shown);
}

/// On the leader: a data key for each PostgreSQL tenant placed on a db node that has none,
/// made here (32 random bytes), wrapped under the cluster key, proposed with only the wrapped
/// bytes. Run by `listeners` every second.
pub async fn make_data_keys(c: &Coordinator) {
    let Some(cluster) = c.backup_key.clone() else { return };
    for (tenant, key_id) in c.read(|d| crate::state::backup::desired::needing_key(&d.state)) {
        let wrapped = match crate::backupkey::random32().and_then(|k| cluster.wrap(&tenant, &key_id, &k)) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot make a backup data key");
                return;
            }
        };
        let meta = Meta {
            time_ms: crate::time::now_ms(),
            actor: format!("coordinator/{}", c.config.id),
            source: "backup-keys".into(),
            key_role: None,
            user_generation: None,
        };
        let op = Op::Backup(BackupOp::AddKey { tenant, key: wrapped });
        if let Err(e) = c.write(Command { meta, op }).await {
            tracing::warn!(error = %e, "could not store a backup data key");
        }
    }
}
