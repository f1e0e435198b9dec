//! The ledger's fold (deltas, restarts, peaks, disk over time), its compaction and its bound,
//! and the ledger through `State::apply` (reports, API-call batches, purge).

use super::*;
use crate::state::gateway::{GatewayTenantStatus, PeerStatus, WgKey};
use crate::state::node::{NodeRole, Report};
use crate::state::tests_support::{booted, create, next_index, register};
use crate::state::{Command, Meta, Op};

/// 2026-11-01T00:00:00Z.
const NOV_1: u64 = 1_793_491_200_000;
const MIN_MS: u64 = 60_000;

fn acme() -> TenantName {
    TenantName::parse("acme").expect("valid")
}

fn key(b: u8) -> WgKey {
    WgKey::from_bytes(&[b; 32])
}

fn sample(db_bytes: u64, connections: u32, events_total: u64, peers: &[(u8, u64, u64)]) -> NodeTenantStatus {
    let peers: Vec<PeerStatus> = peers
        .iter()
        .map(|&(k, rx, tx)| PeerStatus {
            public_key: key(k),
            last_handshake_ms: None,
            rx_bytes: rx,
            tx_bytes: tx,
            endpoint: None,
            session_start_ms: None,
        })
        .collect();
    NodeTenantStatus {
        ready: true,
        reason: None,
        revision: 1,
        db_bytes,
        quota_exceeded: false,
        connections,
        gateway: (!peers.is_empty()).then(|| GatewayTenantStatus { public_key: None, peers, exposures: vec![] }),
        events_total,
    }
}

fn fold(l: &mut Ledger, node: u64, at: u64, s: NodeTenantStatus) {
    l.fold_report(&acme(), node, at, &s, &mut Vec::new());
}

fn totals(l: &Ledger, from: u64, to: u64) -> Usage {
    let mut u = Usage::default();
    l.buckets_in(&acme(), from, to).for_each(|b| u.add(&b.usage));
    u
}

#[test]
fn disk_is_each_samples_size_held_until_the_next_split_at_hours_and_not_across_a_gap() {
    let mut l = Ledger::default();
    fold(&mut l, 1, NOV_1 + 55 * MIN_MS, sample(1000, 0, 0, &[]));
    assert_eq!(totals(&l, NOV_1, NOV_1 + DAY_MS).disk_byte_ms, 0, "one sample holds nothing yet");
    // 10 minutes later, across the hour: 10 min of 1000 bytes, 5 in hour 0 and 5 in hour 1.
    fold(&mut l, 1, NOV_1 + 60 * MIN_MS + 5 * MIN_MS, sample(4000, 0, 0, &[]));
    let first = totals(&l, NOV_1, NOV_1 + HOUR_MS);
    let second = totals(&l, NOV_1 + HOUR_MS, NOV_1 + 2 * HOUR_MS);
    assert_eq!(first.disk_byte_ms, 1000 * 5 * u128::from(MIN_MS));
    assert_eq!(second.disk_byte_ms, 1000 * 5 * u128::from(MIN_MS));
    assert_eq!((first.disk_max_bytes, second.disk_max_bytes), (1000, 4000));
    // A gap longer than MAX_SAMPLE_GAP_MS counts nothing for the gap.
    fold(&mut l, 1, NOV_1 + 5 * HOUR_MS, sample(4000, 0, 0, &[]));
    assert_eq!(totals(&l, NOV_1 + 2 * HOUR_MS, NOV_1 + DAY_MS).disk_byte_ms, 0);
    // Fifteen samples a minute apart at 3.6 MB: a quarter hour of it is 0.9 MB-hours.
    for m in 1..=15 {
        fold(&mut l, 1, NOV_1 + 5 * HOUR_MS + m * MIN_MS, sample(3_600_000, 0, 0, &[]));
    }
    let t: UsageTotals = totals(&l, NOV_1 + 5 * HOUR_MS, NOV_1 + 6 * HOUR_MS).into();
    assert_eq!(t.disk_byte_hours, 4000 / 60 + 14 * 3_600_000 / 60);
}

#[test]
fn events_are_counter_increases_and_an_agent_restart_counts_from_zero() {
    let mut l = Ledger::default();
    fold(&mut l, 1, NOV_1, sample(0, 0, 5, &[]));
    fold(&mut l, 1, NOV_1 + MIN_MS, sample(0, 0, 12, &[]));
    fold(&mut l, 1, NOV_1 + 2 * MIN_MS, sample(0, 0, 12, &[]));
    // The agent restarted: its counter is back near 0.
    fold(&mut l, 1, NOV_1 + 3 * MIN_MS, sample(0, 0, 3, &[]));
    fold(&mut l, 1, NOV_1 + 4 * MIN_MS, sample(0, 0, 10, &[]));
    assert_eq!(totals(&l, NOV_1, NOV_1 + HOUR_MS).events, 5 + 7 + 3 + 7);
    // Another node's counter is its own.
    fold(&mut l, 2, NOV_1 + 5 * MIN_MS, sample(0, 0, 100, &[]));
    assert_eq!(totals(&l, NOV_1, NOV_1 + HOUR_MS).events, 122);
}

#[test]
fn vpn_bytes_are_summed_over_devices_and_a_wireguard_counter_reset_counts_from_zero() {
    let mut l = Ledger::default();
    fold(&mut l, 3, NOV_1, sample(0, 0, 0, &[(1, 100, 10), (2, 50, 5)]));
    fold(&mut l, 3, NOV_1 + MIN_MS, sample(0, 0, 0, &[(1, 150, 30), (2, 60, 6)]));
    // Peer 1 was removed and re-added (its counters restart); peer 3 is new; peer 2 is gone.
    fold(&mut l, 3, NOV_1 + 2 * MIN_MS, sample(0, 0, 0, &[(1, 20, 2), (3, 7, 1)]));
    let u = totals(&l, NOV_1, NOV_1 + HOUR_MS);
    assert_eq!(u.vpn_rx_bytes, (100 + 50) + (50 + 10) + (20 + 7));
    assert_eq!(u.vpn_tx_bytes, (10 + 5) + (20 + 1) + (2 + 1));
    let cursor = l.cursors.values().next().expect("a cursor");
    assert_eq!(cursor.peers.len(), 2, "a peer no longer reported is forgotten");
}

#[test]
fn peak_connections_is_the_largest_sample_of_the_period() {
    let mut l = Ledger::default();
    for (m, c) in [(0, 3), (1, 9), (2, 4)] {
        fold(&mut l, 1, NOV_1 + m * MIN_MS, sample(0, c, 0, &[]));
    }
    fold(&mut l, 1, NOV_1 + DAY_MS, sample(0, 2, 0, &[]));
    assert_eq!(totals(&l, NOV_1, NOV_1 + HOUR_MS).peak_connections, 9);
    let t: UsageTotals = totals(&l, NOV_1 + HOUR_MS, NOV_1 + 2 * DAY_MS).into();
    assert_eq!(t.peak_connections, 2);
}

#[test]
fn compaction_keeps_the_totals_of_whole_days_and_drops_only_past_the_keep_window() {
    let mut l = Ledger::default();
    let r = Retention::new(2, 5).expect("valid");
    for h in 0..24 {
        fold(&mut l, 1, NOV_1 + h * HOUR_MS + MIN_MS, sample(10, h as u32, h * 2, &[(1, h * 100, h)]));
    }
    let before = totals(&l, NOV_1, NOV_1 + DAY_MS);
    l.compact(&acme(), NOV_1 + 3 * DAY_MS, r, &mut Vec::new());
    let days: Vec<Span> = l.buckets.values().map(|b| b.span).collect();
    assert_eq!(days, vec![Span::Day], "one daily bucket for Nov 1");
    assert_eq!(totals(&l, NOV_1, NOV_1 + DAY_MS), before);
    // A sample for a compacted day lands in its daily bucket.
    l.add(&acme(), NOV_1 + 5 * HOUR_MS, &Usage { api_calls: 4, ..Usage::default() }, &mut Vec::new());
    assert_eq!(l.buckets.len(), 1);
    assert_eq!(totals(&l, NOV_1, NOV_1 + DAY_MS).api_calls, 4);
    l.compact(&acme(), NOV_1 + 6 * DAY_MS - 1, r, &mut Vec::new());
    assert_eq!(l.buckets.len(), 1, "kept for five whole days");
    l.compact(&acme(), NOV_1 + 6 * DAY_MS, r, &mut Vec::new());
    assert!(l.buckets.is_empty() && l.cursors.is_empty(), "dropped after");
}

fn at(s: &mut State, time_ms: u64, op: Op) -> crate::state::Response {
    let i = next_index(s);
    let meta = Meta { time_ms, actor: "node/1".into(), source: "t".into(), key_role: None, user_generation: None };
    s.apply(i, &Command { meta, op }).0
}

fn report(s: &NodeTenantStatus) -> Op {
    Op::NodeReport(Report {
        node_id: 1,
        applied_revision: 1,
        tenants: [("acme".to_string(), s.clone())].into(),
        capacity: None,
        wireguard_backend: None,
        conditions: vec![],
    })
}

fn batch(calls: &[(&str, u64)], r: Retention) -> Op {
    let api_calls = calls.iter().map(|(t, n)| (TenantName::parse(t).expect("valid"), *n)).collect();
    Op::RecordUsage(UsageBatch { coordinator: 1, api_calls, retention: r })
}

#[test]
fn the_ledger_stays_bounded_however_long_the_tenant_reports() {
    let mut s = booted();
    register(&mut s, 1, &[NodeRole::Db, NodeRole::Gateway]);
    create(&mut s, "acme");
    let r = Retention::new(3, 10).expect("valid");
    let bound = (r.hourly_days as usize + 1) * 24 + r.keep_days as usize + 1;
    let mut most = 0;
    // 60 days of a report every 20 minutes and a batch every hour.
    for step in 0..60 * 24 * 3u64 {
        let now = NOV_1 + step * 20 * MIN_MS;
        assert!(at(&mut s, now, report(&sample(1 << 20, 1, step, &[]))).is_ok());
        if step % 3 == 0 {
            assert!(at(&mut s, now, batch(&[("acme", 1)], r)).is_ok());
        }
        most = most.max(s.usage.buckets.len());
    }
    assert!(most <= bound, "{most} buckets, bound {bound}");
    assert_eq!(s.usage.cursors.len(), 1);
    let end = NOV_1 + 60 * DAY_MS;
    let all = s.usage_totals(&acme(), 0, end);
    let last_batch = end - HOUR_MS;
    let kept_from = day_start(last_batch - u64::from(r.keep_days) * DAY_MS);
    assert_eq!(all.api_calls, (end - kept_from) / HOUR_MS, "one call an hour, for the days kept");
    assert_eq!(all.events, (end - kept_from) / (20 * MIN_MS), "one event a report");
}

#[test]
fn api_call_batches_count_for_existing_tenants_and_purge_drops_the_ledger() {
    let mut s = booted();
    register(&mut s, 1, &[NodeRole::Db, NodeRole::Gateway]);
    create(&mut s, "acme");
    let r = Retention::default();
    assert!(at(&mut s, NOV_1 + 5, batch(&[("acme", 7), ("ghost", 3)], r)).is_ok());
    assert!(at(&mut s, NOV_1 + HOUR_MS, batch(&[("acme", 2)], r)).is_ok());
    assert_eq!(s.usage_totals(&acme(), NOV_1, NOV_1 + HOUR_MS).api_calls, 7, "half-open range");
    assert_eq!(s.usage_totals(&acme(), NOV_1, NOV_1 + 2 * HOUR_MS).api_calls, 9);
    assert_eq!(s.usage_totals(&TenantName::parse("ghost").expect("valid"), 0, u64::MAX), UsageTotals::default());
    let bad = Retention { hourly_days: 10, keep_days: 5 };
    assert!(matches!(at(&mut s, NOV_1 + 2 * HOUR_MS, batch(&[("acme", 1)], bad)), Err(DomainError::Invalid(_))));
    assert_eq!(s.usage_totals(&acme(), 0, u64::MAX).api_calls, 9, "a refused batch changes nothing");
    assert!(at(&mut s, NOV_1 + 3 * HOUR_MS, report(&sample(5, 1, 1, &[]))).is_ok());
    assert!(!s.usage.cursors.is_empty());
    let life = |step| Op::Lifecycle { name: acme(), step };
    assert!(at(&mut s, NOV_1 + 4 * HOUR_MS, life(crate::state::Lifecycle::Delete)).is_ok());
    assert_eq!(s.usage_totals(&acme(), 0, u64::MAX).api_calls, 9, "a deleted tenant keeps its ledger");
    let purge = life(crate::state::Lifecycle::Purge { force: true });
    assert!(at(&mut s, NOV_1 + 5 * HOUR_MS, purge).is_ok());
    assert!(s.usage.buckets.is_empty() && s.usage.cursors.is_empty(), "purge drops the ledger");
}

#[test]
fn a_report_for_a_tenant_placed_elsewhere_folds_nothing() {
    let mut s = booted();
    register(&mut s, 1, &[NodeRole::Db, NodeRole::Gateway]);
    create(&mut s, "acme");
    let mut op = report(&sample(5, 1, 1, &[]));
    if let Op::NodeReport(r) = &mut op {
        r.node_id = 2;
    }
    register(&mut s, 2, &[NodeRole::Db]);
    assert!(at(&mut s, NOV_1, op).is_ok());
    assert!(s.usage.buckets.is_empty());
}

#[test]
fn buckets_round_trip_through_json_with_byte_time_past_u64() {
    let mut l = Ledger::default();
    let huge = Usage { disk_byte_ms: u128::from(u64::MAX) * 1000, api_calls: 1, ..Usage::default() };
    l.add(&acme(), NOV_1, &huge, &mut Vec::new());
    let s = State { usage: l, ..State::default() };
    let text = serde_json::to_string(&s).expect("encode");
    let back: State = serde_json::from_str(&text).expect("decode");
    assert_eq!(back, s);
    assert_eq!(back.usage_totals(&acme(), NOV_1, NOV_1 + HOUR_MS).disk_byte_hours, huge.disk_byte_hours());
}
