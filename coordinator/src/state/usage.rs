//! The usage ledger (issue 12, seed §14): per tenant, hourly buckets of disk byte-time, peak
//! connections, realtime events, VPN bytes and API calls, folded from node reports
//! (`Op::NodeReport`) and coordinators' API-call batches (`Op::RecordUsage`). Bounded: hourly
//! buckets older than `Retention::hourly_days` become one daily bucket per UTC day, and daily
//! buckets older than `Retention::keep_days` are dropped (each `RecordUsage` compacts). Pure:
//! every time comes in the command.

use super::action::details;
use super::names::TenantName;
use super::node::NodeTenantStatus;
use super::{Cx, DomainError, Handled, Reply, State, Touched};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const HOUR_MS: u64 = 3_600_000;
pub const DAY_MS: u64 = 24 * HOUR_MS;
/// Two samples further apart than this count no disk use in between: the node was away (or no
/// coordinator took its reports), and the next sample starts a new interval.
pub const MAX_SAMPLE_GAP_MS: u64 = 15 * 60 * 1000;
/// Most tenants one API-call batch may name (more are dropped at the edge).
pub const MAX_BATCH_TENANTS: usize = 100_000;

/// How long the ledger keeps hourly detail, and how long it keeps anything. Carried by every
/// `Op::RecordUsage` (from `serve --usage-hourly-days/--usage-keep-days`), so compaction is
/// deterministic; coordinators should agree on it (the batch applied last compacts by its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    pub hourly_days: u32,
    pub keep_days: u32,
}

impl Default for Retention {
    /// 35 days of hours (a month's invoice is computed from hourly buckets for a few days after
    /// it ends), 400 days in all (a year back plus a month).
    fn default() -> Self {
        Retention { hourly_days: 35, keep_days: 400 }
    }
}

impl Retention {
    /// Hourly detail for 1–366 days; everything for longer than that, up to 10 years.
    pub fn new(hourly_days: u32, keep_days: u32) -> Result<Self, DomainError> {
        if !(1..=366).contains(&hourly_days) || keep_days <= hourly_days || keep_days > 3660 {
            return Err(DomainError::Invalid(format!(
                "usage retention: hourly days must be 1-366 and keep days above them, at most 3660 \
                 (got {hourly_days} and {keep_days})"
            )));
        }
        Ok(Retention { hourly_days, keep_days })
    }

    /// Hourly buckets of days starting before this become daily buckets.
    fn compact_before(&self, now: u64) -> u64 {
        day_start(now.saturating_sub(u64::from(self.hourly_days) * DAY_MS))
    }

    /// Daily buckets of days starting before this are dropped.
    fn drop_before(&self, now: u64) -> u64 {
        day_start(now.saturating_sub(u64::from(self.keep_days) * DAY_MS))
    }
}

pub fn hour_start(ms: u64) -> u64 {
    ms - ms % HOUR_MS
}

pub fn day_start(ms: u64) -> u64 {
    ms - ms % DAY_MS
}

/// What a tenant used in one bucket. Disk is byte-milliseconds (each sample's size held until the
/// next sample); the peaks are the largest sample; the rest are sums of counter increases.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub disk_byte_ms: u128,
    #[serde(default)]
    pub disk_max_bytes: u64,
    #[serde(default)]
    pub peak_connections: u32,
    #[serde(default)]
    pub events: u64,
    #[serde(default)]
    pub vpn_rx_bytes: u64,
    #[serde(default)]
    pub vpn_tx_bytes: u64,
    #[serde(default)]
    pub api_calls: u64,
}

impl Usage {
    pub fn add(&mut self, o: &Usage) {
        self.disk_byte_ms = self.disk_byte_ms.saturating_add(o.disk_byte_ms);
        self.disk_max_bytes = self.disk_max_bytes.max(o.disk_max_bytes);
        self.peak_connections = self.peak_connections.max(o.peak_connections);
        self.events = self.events.saturating_add(o.events);
        self.vpn_rx_bytes = self.vpn_rx_bytes.saturating_add(o.vpn_rx_bytes);
        self.vpn_tx_bytes = self.vpn_tx_bytes.saturating_add(o.vpn_tx_bytes);
        self.api_calls = self.api_calls.saturating_add(o.api_calls);
    }

    pub fn disk_byte_hours(&self) -> u128 {
        self.disk_byte_ms / u128::from(HOUR_MS)
    }
}

/// What a tenant used over a period, as billing reads it (`State::usage_totals`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageTotals {
    pub disk_byte_hours: u128,
    pub peak_connections: u32,
    pub events: u64,
    pub vpn_rx_bytes: u64,
    pub vpn_tx_bytes: u64,
    pub api_calls: u64,
}

impl From<Usage> for UsageTotals {
    fn from(u: Usage) -> Self {
        UsageTotals {
            disk_byte_hours: u.disk_byte_hours(),
            peak_connections: u.peak_connections,
            events: u.events,
            vpn_rx_bytes: u.vpn_rx_bytes,
            vpn_tx_bytes: u.vpn_tx_bytes,
            api_calls: u.api_calls,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Span {
    Hour,
    Day,
}

/// One hour (or, compacted, one UTC day) of one tenant's usage; a row of its own in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    pub tenant: TenantName,
    pub span: Span,
    pub start_ms: u64,
    pub usage: Usage,
}

impl Bucket {
    pub fn id(&self) -> String {
        bucket_id(&self.tenant, self.span, self.start_ms)
    }
}

/// `{tenant}@h{start}` / `{tenant}@d{start}`, the start zero-padded: one tenant's buckets of one
/// span are a contiguous range in time order (`@` sorts after every character of a tenant name).
fn bucket_id(tenant: &TenantName, span: Span, start_ms: u64) -> String {
    let s = match span {
        Span::Hour => 'h',
        Span::Day => 'd',
    };
    format!("{tenant}@{s}{start_ms:015}")
}

/// The last sample one node reported for one tenant: the base of the next deltas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub tenant: TenantName,
    pub node_id: u64,
    pub at_ms: u64,
    pub db_bytes: u64,
    pub events_total: u64,
    /// Per WireGuard peer (public key): rx and tx bytes at the last sample.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub peers: BTreeMap<String, (u64, u64)>,
}

impl Cursor {
    pub fn id(&self) -> String {
        cursor_id(&self.tenant, self.node_id)
    }
}

fn cursor_id(tenant: &TenantName, node_id: u64) -> String {
    format!("{tenant}@n{node_id:020}")
}

/// The increase of a counter that restarts at 0 (an agent restart, a WireGuard peer re-added):
/// a value below the last one counts from 0.
fn increase(before: u64, now: u64) -> u64 {
    if now >= before {
        now - before
    } else {
        now
    }
}

/// Every tenant's buckets and cursors, each a row in the store (`raft::tables`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    #[serde(default)]
    pub buckets: BTreeMap<String, Bucket>,
    #[serde(default)]
    pub cursors: BTreeMap<String, Cursor>,
}

/// A coordinator's API calls per tenant since its last batch, and its retention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageBatch {
    pub coordinator: u64,
    pub api_calls: BTreeMap<TenantName, u64>,
    pub retention: Retention,
}

impl Ledger {
    /// Adds `u` to the tenant's bucket of the hour holding `at` (its day's bucket if that day is
    /// already compacted).
    fn add(&mut self, tenant: &TenantName, at: u64, u: &Usage, touched: &mut Vec<Touched>) {
        let day = bucket_id(tenant, Span::Day, day_start(at));
        let (id, span, start) = if self.buckets.contains_key(&day) {
            (day, Span::Day, day_start(at))
        } else {
            (bucket_id(tenant, Span::Hour, hour_start(at)), Span::Hour, hour_start(at))
        };
        let bucket = self.buckets.entry(id.clone()).or_insert_with(|| Bucket {
            tenant: tenant.clone(),
            span,
            start_ms: start,
            usage: Usage::default(),
        });
        bucket.usage.add(u);
        touched.push(Touched::UsageBucket(id));
    }

    /// Folds node `node_id`'s sample of `tenant` taken at `now`: the disk held since the node's
    /// last sample (split at hour boundaries, none across a gap over `MAX_SAMPLE_GAP_MS`), the
    /// peaks, and the counters' increases (restarts count from 0).
    pub fn fold_report(
        &mut self,
        tenant: &TenantName,
        node_id: u64,
        now: u64,
        s: &NodeTenantStatus,
        touched: &mut Vec<Touched>,
    ) {
        let id = cursor_id(tenant, node_id);
        let prev = self.cursors.remove(&id).filter(|c| c.at_ms <= now);
        let prev = prev.as_ref();
        if let Some(p) = prev.filter(|p| now - p.at_ms <= MAX_SAMPLE_GAP_MS) {
            let mut from = p.at_ms;
            while from < now {
                let to = now.min(hour_start(from) + HOUR_MS);
                let held = Usage { disk_byte_ms: u128::from(p.db_bytes) * u128::from(to - from), ..Usage::default() };
                self.add(tenant, from, &held, touched);
                from = to;
            }
        }
        let mut u = Usage {
            disk_max_bytes: s.db_bytes,
            peak_connections: s.connections,
            events: increase(prev.map_or(0, |p| p.events_total), s.events_total),
            ..Usage::default()
        };
        let mut peers = BTreeMap::new();
        for peer in s.gateway.iter().flat_map(|g| &g.peers) {
            let key = peer.public_key.to_string();
            let (rx, tx) = prev.and_then(|p| p.peers.get(&key)).copied().unwrap_or((0, 0));
            u.vpn_rx_bytes = u.vpn_rx_bytes.saturating_add(increase(rx, peer.rx_bytes));
            u.vpn_tx_bytes = u.vpn_tx_bytes.saturating_add(increase(tx, peer.tx_bytes));
            peers.insert(key, (peer.rx_bytes, peer.tx_bytes));
        }
        self.add(tenant, now, &u, touched);
        let cursor = Cursor {
            tenant: tenant.clone(),
            node_id,
            at_ms: now,
            db_bytes: s.db_bytes,
            events_total: s.events_total,
            peers,
        };
        self.cursors.insert(id.clone(), cursor);
        touched.push(Touched::UsageCursor(id));
    }

    /// Turns the tenant's hourly buckets of days before the retention's hourly window into daily
    /// buckets, drops daily buckets (and cursors) past its whole window.
    pub fn compact(&mut self, tenant: &TenantName, now: u64, r: Retention, touched: &mut Vec<Touched>) {
        let before = r.compact_before(now);
        let old: Vec<String> = self
            .buckets
            .range(bucket_id(tenant, Span::Hour, 0)..bucket_id(tenant, Span::Hour, before))
            .map(|(id, _)| id.clone())
            .collect();
        for id in old {
            let Some(hour) = self.buckets.remove(&id) else { continue };
            touched.push(Touched::UsageBucket(id));
            let start = day_start(hour.start_ms);
            let day = bucket_id(tenant, Span::Day, start);
            let bucket = self.buckets.entry(day.clone()).or_insert_with(|| Bucket {
                tenant: tenant.clone(),
                span: Span::Day,
                start_ms: start,
                usage: Usage::default(),
            });
            bucket.usage.add(&hour.usage);
            touched.push(Touched::UsageBucket(day));
        }
        let gone: Vec<String> = self
            .buckets
            .range(bucket_id(tenant, Span::Day, 0)..bucket_id(tenant, Span::Day, r.drop_before(now)))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.buckets.remove(&id);
            touched.push(Touched::UsageBucket(id));
        }
        let stale: Vec<String> = self
            .cursors
            .range(cursor_id(tenant, 0)..=cursor_id(tenant, u64::MAX))
            .filter(|(_, c)| c.at_ms < before)
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            self.cursors.remove(&id);
            touched.push(Touched::UsageCursor(id));
        }
    }

    /// Removes everything the ledger holds for `tenant`.
    pub fn drop_tenant(&mut self, tenant: &TenantName, touched: &mut Vec<Touched>) {
        let lo = format!("{tenant}@");
        let hi = format!("{tenant}A");
        let buckets: Vec<String> = self.buckets.range(lo.clone()..hi.clone()).map(|(id, _)| id.clone()).collect();
        for id in buckets {
            self.buckets.remove(&id);
            touched.push(Touched::UsageBucket(id));
        }
        let cursors: Vec<String> = self.cursors.range(lo..hi).map(|(id, _)| id.clone()).collect();
        for id in cursors {
            self.cursors.remove(&id);
            touched.push(Touched::UsageCursor(id));
        }
    }

    /// The tenant's buckets starting in `[from, to)`, hourly and daily, in no particular order.
    pub fn buckets_in<'a>(&'a self, tenant: &TenantName, from: u64, to: u64) -> impl Iterator<Item = &'a Bucket> {
        let range = |span| {
            let (lo, hi) = (bucket_id(tenant, span, from), bucket_id(tenant, span, to.max(from)));
            self.buckets.range(lo..hi).map(|(_, b)| b)
        };
        range(Span::Day).chain(range(Span::Hour))
    }

    /// Per UTC day starting in `[from, to)`: the tenant's usage that day (days without any left out).
    pub fn days(&self, tenant: &TenantName, from: u64, to: u64) -> BTreeMap<u64, Usage> {
        let mut days: BTreeMap<u64, Usage> = BTreeMap::new();
        for b in self.buckets_in(tenant, from, to) {
            days.entry(day_start(b.start_ms)).or_default().add(&b.usage);
        }
        days
    }
}

impl State {
    /// What `tenant` used in `[from_ms, to_ms)` (hour-aligned; a compacted day counts when its
    /// start is in the range).
    pub fn usage_totals(&self, tenant: &TenantName, from_ms: u64, to_ms: u64) -> UsageTotals {
        let mut sum = Usage::default();
        for b in self.usage.buckets_in(tenant, from_ms, to_ms) {
            sum.add(&b.usage);
        }
        sum.into()
    }

    /// A coordinator's API-call counts (tenants that no longer exist are skipped), then every
    /// tenant's ledger compacted by the batch's retention.
    pub(super) fn record_usage(&mut self, cx: Cx<'_>, batch: &UsageBatch) -> Handled {
        let Cx { at, touched, facts } = cx;
        if let Err(e) = Retention::new(batch.retention.hourly_days, batch.retention.keep_days) {
            return (Err(e), facts);
        }
        let mut calls = 0u64;
        let mut tenants = 0usize;
        for (tenant, n) in batch.api_calls.iter().take(MAX_BATCH_TENANTS) {
            if *n == 0 || !self.tenants.contains_key(tenant) {
                continue;
            }
            self.usage.add(tenant, at.now, &Usage { api_calls: *n, ..Usage::default() }, touched);
            calls = calls.saturating_add(*n);
            tenants += 1;
        }
        let names: Vec<TenantName> = self.tenants.keys().cloned().collect();
        for name in &names {
            self.usage.compact(name, at.now, batch.retention, touched);
        }
        let facts = facts.with(details(&[("api_calls", calls.to_string()), ("tenants", tenants.to_string())]));
        (Ok(Reply::Done), facts)
    }
}

#[cfg(test)]
mod tests;
