//! State-machine tests of backups: the policy on the tenant, data keys, the catalog written only
//! from the db node's reports, retention, restore at a time, the final backup and the purge gate.

use super::*;
use crate::state::backup::desired::part;
use crate::state::backup::{BackupEntry, BackupOp, BackupPolicy, InvalidPolicy, Outcome, WrappedKey};

/// acme on db node 2, with its first data key.
fn world() -> State {
    let mut s = booted("10.50.0.0/16");
    assert!(s.apply(2, &cmd(2, Op::RegisterNode(node(2, &[])))).0.is_ok());
    tenant(create(&mut s, 3, "acme"));
    assert_eq!(s.tenants[&name("acme")].placement.db_node, Some(2));
    assert!(run(&mut s, 4, 4, BackupOp::AddKey { tenant: name("acme"), key: wrapped("acme-1") }).is_ok());
    s
}

fn wrapped(id: &str) -> WrappedKey {
    WrappedKey { id: id.into(), cluster_key_id: "c1".into(), nonce: "00".repeat(12), sealed: "11".repeat(48) }
}

fn run(s: &mut State, i: u64, t: u64, op: BackupOp) -> Response {
    s.apply(i, &cmd(t, Op::Backup(op))).0
}

fn entry(id: &str, taken_ms: u64) -> BackupEntry {
    BackupEntry {
        id: id.into(),
        tenant: name("acme"),
        key: format!("tenants/acme/2026-12-02T10:00:00Z-{id}.bqb"),
        taken_ms,
        bytes: 10,
        sha256: "ab".repeat(32),
        dumped: 20,
        duration_ms: 5,
        format_version: 1,
        server_version: 150_018,
        key_id: "acme-1".into(),
        node_id: 2,
    }
}

fn done(id: &str, taken_ms: u64, request: Option<&str>) -> BackupOp {
    BackupOp::Done { node_id: 2, entry: entry(id, taken_ms), request: request.map(str::to_string) }
}

fn ids(s: &State) -> Vec<String> {
    s.backups[&name("acme")].entries.iter().map(|e| e.id.clone()).collect()
}

#[test]
fn policy_defaults_by_tier_and_updates_are_checked() {
    let mut s = world();
    assert_eq!(s.backup_policy(&name("acme")), Some(BackupPolicy::for_tier(Tier::Free)));
    let patch = TenantPatch { backup_interval_s: Some(1800), backup_keep: Some(48), ..TenantPatch::default() };
    assert!(s.apply(5, &cmd(5, Op::UpdateTenant { name: name("acme"), patch })).0.is_ok());
    let p = s.backup_policy(&name("acme")).expect("policy");
    assert_eq!((p.interval_s, p.keep_count, p.keep_days), (1800, 48, 7));
    let before = s.tenants.clone();
    let patch = TenantPatch { backup_interval_s: Some(60), ..TenantPatch::default() };
    let r = s.apply(6, &cmd(6, Op::UpdateTenant { name: name("acme"), patch })).0;
    assert_eq!(r, Err(DomainError::InvalidTenant(InvalidTenant::Backup(InvalidPolicy::Interval(60)))));
    assert_eq!(s.tenants, before, "a refused policy changes nothing");
    let premium = TenantPatch { tier: Some(Tier::Premium), ..TenantPatch::default() };
    assert!(s.apply(7, &cmd(7, Op::UpdateTenant { name: name("globex"), patch: premium })).0.is_err());
}

#[test]
fn the_catalog_changes_only_from_the_tenants_db_node() {
    let mut s = world();
    let foreign = BackupOp::Done { node_id: 9, entry: entry("b1", 100), request: None };
    assert!(matches!(run(&mut s, 5, 5, foreign), Err(DomainError::Invalid(_))));
    let mut other_key = entry("b1", 100);
    other_key.key_id = "acme-9".into();
    let r = run(&mut s, 6, 6, BackupOp::Done { node_id: 2, entry: other_key, request: None });
    assert!(matches!(r, Err(DomainError::Invalid(_))), "{r:?}");
    let mut climbing = entry("b1", 100);
    climbing.key = "tenants/globex/x.bqb".into();
    let r = run(&mut s, 7, 7, BackupOp::Done { node_id: 2, entry: climbing, request: None });
    assert!(matches!(r, Err(DomainError::Invalid(_))), "{r:?}");
    assert!(s.backups[&name("acme")].entries.is_empty());
    assert!(run(&mut s, 8, 8, done("b1", 100, None)).is_ok());
    assert!(run(&mut s, 9, 9, done("b1", 100, None)).is_ok(), "a repeated report is idempotent");
    assert_eq!(ids(&s), ["b1"]);
    assert_eq!(s.audit.last().map(|e| e.action.as_str()), Some("backup.done"));
}

#[test]
fn a_failure_is_recorded_until_a_backup_completes() {
    let mut s = world();
    let failed = |at_ms| BackupOp::Failed {
        node_id: 2,
        tenant: name("acme"),
        at_ms,
        reason: "S3 UploadPart failed: connection refused".into(),
        request: None,
    };
    assert!(run(&mut s, 5, 5, failed(50)).is_ok());
    assert!(run(&mut s, 6, 6, failed(60)).is_ok());
    let f = s.backups[&name("acme")].failure.clone().expect("failure");
    assert_eq!((f.at_ms, f.failures), (60, 2));
    let t = s.tenants[&name("acme")].clone();
    let p = part(&s, &t).expect("part");
    assert_eq!(p.failure.map(|f| f.failures), Some(2), "the node backs off from it");
    assert!(ids(&s).is_empty(), "a failure writes no entry");
    assert!(run(&mut s, 7, 7, done("b1", 70, None)).is_ok());
    assert_eq!(s.backups[&name("acme")].failure, None);
}

#[test]
fn retention_expires_entries_then_removes_them_when_the_node_deleted_the_objects() {
    let mut s = world();
    let patch = TenantPatch { backup_keep: Some(2), ..TenantPatch::default() };
    assert!(s.apply(5, &cmd(5, Op::UpdateTenant { name: name("acme"), patch })).0.is_ok());
    for (i, id) in ["b1", "b2", "b3"].iter().enumerate() {
        let i = i as u64;
        assert!(run(&mut s, 6 + i, 100 + i, done(id, 100 + i, None)).is_ok());
    }
    let b = &s.backups[&name("acme")];
    assert_eq!(b.expiring.iter().collect::<Vec<_>>(), ["b1"]);
    assert_eq!(b.restorable().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["b2", "b3"]);
    let t = s.tenants[&name("acme")].clone();
    let p = part(&s, &t).expect("part");
    assert_eq!(p.expired, [("b1".to_string(), "tenants/acme/2026-12-02T10:00:00Z-b1.bqb".to_string())]);
    let at_b1 = BackupOp::Restore { tenant: name("acme"), at_ms: 100, overwrite: false, schema: None };
    s.tenants.get_mut(&name("acme")).expect("acme").status = TenantStatus::Active;
    assert!(matches!(run(&mut s, 9, 9, at_b1), Err(DomainError::NotFound(_))), "an expiring backup is not restored");
    let gone = BackupOp::Deleted { node_id: 2, tenant: name("acme"), ids: vec!["b1".into(), "b3".into()] };
    assert!(run(&mut s, 10, 10, gone).is_ok());
    assert_eq!(ids(&s), ["b2", "b3"], "only expiring entries go, with their objects");
    assert!(s.backups[&name("acme")].expiring.is_empty());
}

#[test]
fn restore_takes_the_newest_backup_at_or_before_the_time_and_reports_its_end() {
    let mut s = world();
    assert!(run(&mut s, 5, 5, done("b1", 1_000, None)).is_ok());
    assert!(run(&mut s, 6, 6, done("b2", 2_000, None)).is_ok());
    let ask = |at_ms| BackupOp::Restore { tenant: name("acme"), at_ms, overwrite: true, schema: None };
    assert!(matches!(run(&mut s, 7, 7, ask(2_500)), Err(DomainError::Conflict(_))), "not active yet");
    s.tenants.get_mut(&name("acme")).expect("acme").status = TenantStatus::Active;
    assert!(matches!(run(&mut s, 8, 8, ask(999)), Err(DomainError::NotFound(_))));
    assert!(run(&mut s, 9, 9, ask(1_999)).is_ok());
    let r = s.backups[&name("acme")].restore.clone().expect("asked");
    assert_eq!((r.entry.as_str(), r.schema.as_str(), r.overwrite), ("b1", "tenant_acme_before_r9", true));
    assert!(matches!(run(&mut s, 10, 10, ask(2_000)), Err(DomainError::Conflict(_))), "one at a time");
    let t = s.tenants[&name("acme")].clone();
    assert_eq!(part(&s, &t).and_then(|p| p.restore).map(|r| r.key), Some(entry("b1", 0).key));
    let outcome = Outcome {
        id: "r9".into(),
        at_ms: 0,
        ok: true,
        reason: None,
        made: Some("tenant_acme".into()),
        kept: Some(r.schema),
    };
    let foreign = BackupOp::Restored { node_id: 3, tenant: name("acme"), outcome: outcome.clone() };
    assert!(run(&mut s, 11, 11, foreign).is_err());
    assert!(run(&mut s, 12, 12, BackupOp::Restored { node_id: 2, tenant: name("acme"), outcome }).is_ok());
    let b = &s.backups[&name("acme")];
    assert!(b.restore.is_none() && b.last_restore.as_ref().is_some_and(|o| o.ok));
}

#[test]
fn delete_asks_for_a_final_backup_and_purge_waits_for_one() {
    let mut s = world();
    let step =
        |s: &mut State, i: u64, st: Lifecycle| s.apply(i, &cmd(i, Op::Lifecycle { name: name("acme"), step: st })).0;
    tenant(step(&mut s, 5, Lifecycle::Delete));
    let request = s.backups[&name("acme")].run.clone().expect("a final backup is asked for");
    assert!(request.final_backup);
    let far = 40 * DAY_MS;
    let r = s.apply(6, &cmd(far, Op::Lifecycle { name: name("acme"), step: Lifecycle::Purge { force: false } })).0;
    assert!(matches!(&r, Err(DomainError::Conflict(m)) if m.contains("final backup")), "{r:?}");
    assert!(run(&mut s, 7, 7, done("b1", 7, Some(&request.id))).is_ok());
    assert!(s.backups[&name("acme")].run.is_none());
    let r = s.apply(8, &cmd(far, Op::Lifecycle { name: name("acme"), step: Lifecycle::Purge { force: false } })).0;
    assert!(r.is_ok(), "{r:?}");
    assert!(!s.backups.contains_key(&name("acme")), "purge forgets the catalog and the wrapped keys");
}

#[test]
fn a_customer_key_runs_and_restores_only_its_own_tenants_backups() {
    let mut s = world();
    tenant(create(&mut s, 5, "globex"));
    let key =
        ApiKey { id: "00000000000000c1".into(), role: Role::Customer, tenant: Some(name("globex")), ..admin_key() };
    assert!(s.apply(6, &cmd(6, Op::CreateApiKey(key))).0.is_ok());
    let as_globex = |op: BackupOp| Command {
        meta: Meta {
            time_ms: 7,
            actor: "00000000000000c1".into(),
            source: "t".into(),
            key_role: Some(Role::Customer),
            user_generation: None,
        },
        op: Op::Backup(op),
    };
    let (r, _) = s.apply(7, &as_globex(BackupOp::Run { tenant: name("acme") }));
    assert!(matches!(r, Err(DomainError::Forbidden(_))), "{r:?}");
    let restore = BackupOp::Restore { tenant: name("acme"), at_ms: u64::MAX, overwrite: true, schema: None };
    let (r, _) = s.apply(8, &as_globex(restore));
    assert!(matches!(r, Err(DomainError::Forbidden(_))), "{r:?}");
    assert!(s.backups[&name("acme")].run.is_none() && s.backups[&name("acme")].restore.is_none());
    let (r, _) = s.apply(9, &as_globex(BackupOp::Run { tenant: name("globex") }));
    assert!(r.is_ok(), "its own tenant: {r:?}");
}
