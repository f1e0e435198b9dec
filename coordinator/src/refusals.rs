//! Unauthenticated refusals (REST requests without a valid key, failed TLS handshakes, bogus
//! joins, throttled requests) are counted in memory per source address, not written one by one:
//! a source gets at most one audit entry per window — its first refusal as itself, then one
//! summary ("1,204 refused requests from 198.51.100.7 in the last 60 s: …") for the rest. The
//! table is bounded; sources past the cap share one `others` row.

use crate::admission::source_key;
use crate::state::action::Action;
use crate::state::{Command, Meta, Op};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Distinct actions kept per source in one window; the rest are counted as `other`.
const MAX_ACTIONS: usize = 8;
/// Sample reasons are clipped to this many characters.
const MAX_REASON: usize = 120;
/// At most one log line about refusals this often.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// One refused attempt.
#[derive(Debug, Clone, Copy)]
pub struct Refusal<'a> {
    /// The caller's address, if known.
    pub source: Option<IpAddr>,
    /// What was attempted, e.g. `tenant.get`, `node.handshake`, `node.join`.
    pub action: Action,
    pub target: &'a str,
    pub reason: &'a str,
    /// Whether this refusal may be written as itself when its source's window is free (false
    /// for bare connects, timeouts and throttling, which only ever appear in summaries).
    pub sample: bool,
}

#[derive(Debug, Default, Clone)]
struct Tally {
    total: u64,
    since: Option<Instant>,
    /// (action, count, first reason), at most `MAX_ACTIONS` plus `other`.
    actions: Vec<(String, u64, String)>,
}

impl Tally {
    fn add(&mut self, action: &str, reason: &str, now: Instant) {
        self.total += 1;
        self.since.get_or_insert(now);
        if let Some(a) = self.actions.iter_mut().find(|a| a.0 == action) {
            a.1 += 1;
            return;
        }
        let (action, reason) = if self.actions.len() < MAX_ACTIONS { (action, reason) } else { ("other", "various") };
        match self.actions.iter_mut().find(|a| a.0 == action) {
            Some(a) => a.1 += 1,
            None => self.actions.push((action.to_string(), 1, clip(reason))),
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Row {
    /// When this source's last audit entry was written.
    last_entry: Option<Instant>,
    pending: Tally,
}

impl Row {
    fn window_free(&self, now: Instant, every: Duration) -> bool {
        self.last_entry.is_none_or(|l| now.saturating_duration_since(l) >= every)
    }
}

struct Table {
    /// Every refusal since start by what was attempted (a bounded set: `Action`), for `/metrics`.
    by_action: std::collections::BTreeMap<Action, u64>,
    sources: HashMap<IpAddr, Row>,
    others: Row,
    last_log: Option<Instant>,
    since_log: u64,
}

/// Counters since start, for the metrics endpoint and the log.
#[derive(Debug, Default)]
struct Totals {
    refused: AtomicU64,
    sampled: AtomicU64,
    summaries: AtomicU64,
    overflowed: AtomicU64,
}

/// What `GET /api/v1/refusals` shows.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RefusalStats {
    /// Unauthenticated or throttled attempts refused since this coordinator started.
    pub refused_total: u64,
    /// Refusals written to the audit trail as themselves.
    pub sampled_entries: u64,
    /// Summary entries written.
    pub summary_entries: u64,
    /// Refusals counted in the shared `others` row because the table was full.
    pub overflowed: u64,
    /// Sources with refusals not yet summarised, and how many each.
    pub pending: Vec<PendingSource>,
    pub window_secs: u64,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct PendingSource {
    pub source: String,
    pub refused: u64,
}

pub struct Refusals {
    every: Duration,
    max_sources: usize,
    table: Mutex<Table>,
    totals: Totals,
}

fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(MAX_REASON).collect();
    if s.chars().count() > MAX_REASON {
        out.push('…');
    }
    out
}

/// `1204` → `1,204`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Refusals {
    pub fn new(every: Duration, max_sources: usize) -> Self {
        Self {
            every,
            max_sources: max_sources.max(1),
            table: Mutex::new(Table {
                by_action: Default::default(),
                sources: HashMap::new(),
                others: Row::default(),
                last_log: None,
                since_log: 0,
            }),
            totals: Totals::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        match self.table.lock() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Counts `r`. Returns the command to write now when `r` is its source's sample for this
    /// window; otherwise it waits for the source's summary.
    pub fn record(&self, r: &Refusal<'_>, now: Instant) -> Option<Command> {
        self.totals.refused.fetch_add(1, Ordering::Relaxed);
        let mut t = self.lock();
        *t.by_action.entry(r.action).or_default() += 1;
        t.since_log += 1;
        if t.last_log.is_none_or(|l| now.saturating_duration_since(l) >= LOG_EVERY) {
            tracing::warn!(
                refused = t.since_log,
                sources = t.sources.len(),
                last_source = %r.source.map(|s| s.to_string()).unwrap_or_else(|| "unknown".into()),
                last_action = %r.action,
                last_reason = %clip(r.reason),
                "refusing unauthenticated traffic (counted, summarised in the audit trail)"
            );
            t.last_log = Some(now);
            t.since_log = 0;
        }
        let key = r.source.map(source_key);
        let max = self.max_sources;
        let every = self.every;
        let row = match key {
            Some(k) if t.sources.contains_key(&k) || t.sources.len() < max => t.sources.entry(k).or_default(),
            _ => {
                self.totals.overflowed.fetch_add(1, Ordering::Relaxed);
                &mut t.others
            }
        };
        if r.sample && row.window_free(now, every) {
            row.last_entry = Some(now);
            self.totals.sampled.fetch_add(1, Ordering::Relaxed);
            let source = r.source.map(|s| s.to_string()).unwrap_or_else(|| "unknown".into());
            return Some(Command {
                meta: Meta {
                    time_ms: crate::time::now_ms(),
                    actor: "anonymous".into(),
                    source,
                    key_role: None,
                    user_generation: None,
                },
                op: Op::Rejected { action: r.action, target: r.target.into(), reason: clip(r.reason) },
            });
        }
        row.pending.add(r.action.as_str(), r.reason, now);
        None
    }

    /// Summaries due at `now` (one per source whose window has passed), and forgets sources with
    /// nothing pending whose window is over.
    pub fn due(&self, now: Instant, coordinator_id: u64) -> Vec<Command> {
        let every = self.every;
        let mut t = self.lock();
        let mut out = Vec::new();
        let ready = |row: &Row| {
            row.pending.total > 0
                && row.window_free(now, every)
                && row.pending.since.is_some_and(|s| now.saturating_duration_since(s) >= every)
        };
        let mut summarise = |label: String, row: &mut Row| {
            let tally = std::mem::take(&mut row.pending);
            row.last_entry = Some(now);
            let span = tally.since.map(|s| now.saturating_duration_since(s)).unwrap_or(every);
            let parts: Vec<String> =
                tally.actions.iter().map(|(a, n, reason)| format!("{} {a} ({reason})", thousands(*n))).collect();
            let reason = format!(
                "{} refused anonymous requests from {label} in the last {} s at coordinator {coordinator_id}: {}",
                thousands(tally.total),
                span.as_secs().max(1),
                parts.join("; ")
            );
            out.push(Command {
                meta: Meta {
                    time_ms: crate::time::now_ms(),
                    actor: "anonymous".into(),
                    source: label.clone(),
                    key_role: None,
                    user_generation: None,
                },
                op: Op::Rejected { action: Action::AnonymousRefused, target: format!("source/{label}"), reason },
            });
        };
        for (ip, row) in t.sources.iter_mut() {
            if ready(row) {
                summarise(ip.to_string(), row);
            }
        }
        if ready(&t.others) {
            let others = &mut t.others;
            summarise("other sources".into(), others);
        }
        t.sources.retain(|_, row| row.pending.total > 0 || !row.window_free(now, every));
        self.totals.summaries.fetch_add(out.len() as u64, Ordering::Relaxed);
        out
    }

    /// Refusals since start by the action attempted (`node.join`, `api.handshake`, …).
    pub fn by_action(&self) -> Vec<(Action, u64)> {
        self.lock().by_action.iter().map(|(a, n)| (*a, *n)).collect()
    }

    pub fn stats(&self) -> RefusalStats {
        let t = self.lock();
        let mut pending: Vec<PendingSource> = t
            .sources
            .iter()
            .filter(|(_, r)| r.pending.total > 0)
            .map(|(ip, r)| PendingSource { source: ip.to_string(), refused: r.pending.total })
            .collect();
        if t.others.pending.total > 0 {
            pending.push(PendingSource { source: "other sources".into(), refused: t.others.pending.total });
        }
        pending.sort_by_key(|p| std::cmp::Reverse(p.refused));
        pending.truncate(20);
        RefusalStats {
            refused_total: self.totals.refused.load(Ordering::Relaxed),
            sampled_entries: self.totals.sampled.load(Ordering::Relaxed),
            summary_entries: self.totals.summaries.load(Ordering::Relaxed),
            overflowed: self.totals.overflowed.load(Ordering::Relaxed),
            pending,
            window_secs: self.every.as_secs(),
        }
    }

    /// Rows held (for tests).
    pub fn tracked(&self) -> usize {
        self.lock().sources.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(ip: &str, action: Action, sample: bool) -> (IpAddr, Action, bool) {
        (ip.parse().expect("ip"), action, sample)
    }

    fn record(r: &Refusals, (ip, action, sample): (IpAddr, Action, bool), now: Instant) -> Option<Command> {
        r.record(&Refusal { source: Some(ip), action, target: "t", reason: "missing API key", sample }, now)
    }

    fn summary_count(cmd: &Command) -> u64 {
        let Op::Rejected { reason, .. } = &cmd.op else { panic!("not a refusal: {cmd:?}") };
        reason.split_whitespace().next().expect("count").replace(',', "").parse().expect("number")
    }

    #[test]
    fn a_flood_from_one_source_is_one_sample_then_one_summary_per_window() {
        let r = Refusals::new(Duration::from_secs(60), 16);
        let t0 = Instant::now();
        let src = refusal("198.51.100.7", Action::TenantGet, true);
        assert!(record(&r, src, t0).is_some(), "the first refusal is written as itself");
        for i in 1..1204u64 {
            assert!(record(&r, src, t0 + Duration::from_millis(i)).is_none(), "the rest are counted");
        }
        assert!(r.due(t0 + Duration::from_secs(30), 1).is_empty(), "nothing before the window ends");
        let due = r.due(t0 + Duration::from_secs(61), 1);
        assert_eq!(due.len(), 1);
        assert_eq!(summary_count(&due[0]), 1203);
        let Op::Rejected { reason, target, .. } = &due[0].op else { panic!() };
        assert!(reason.starts_with("1,203 refused anonymous requests from 198.51.100.7"), "{reason}");
        assert_eq!(target, "source/198.51.100.7");
        assert!(r.due(t0 + Duration::from_secs(200), 1).is_empty(), "nothing more to say");
        assert_eq!(r.tracked(), 0, "quiet sources are forgotten");
    }

    #[test]
    fn bare_connects_only_appear_in_summaries_and_leave_the_sample_free() {
        let r = Refusals::new(Duration::from_secs(60), 16);
        let t0 = Instant::now();
        assert!(record(&r, refusal("192.0.2.1", Action::NodeHandshake, false), t0).is_none());
        assert!(record(&r, refusal("192.0.2.1", Action::NodeJoin, true), t0).is_some(), "a real attempt is sampled");
        assert!(record(&r, refusal("192.0.2.1", Action::NodeJoin, true), t0).is_none(), "one sample per window");
        let due = r.due(t0 + Duration::from_secs(60), 1);
        assert_eq!(due.iter().map(summary_count).sum::<u64>(), 2);
    }

    #[test]
    fn many_sources_cost_a_bounded_table() {
        let r = Refusals::new(Duration::from_secs(60), 100);
        let t0 = Instant::now();
        let mut written = 0;
        for i in 0..100_000u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            written += usize::from(record(&r, (ip, Action::TenantGet, true), t0).is_some());
        }
        assert_eq!(r.tracked(), 100);
        assert_eq!(written, 101, "one sample per tracked source and one for the shared row");
        let due = r.due(t0 + Duration::from_secs(60), 1);
        assert_eq!(due.len(), 1, "only the shared row has more to say");
        assert_eq!(summary_count(&due[0]), 100_000 - 101);
    }

    #[test]
    fn summaries_list_actions_with_a_sample_reason_and_stay_bounded() {
        let r = Refusals::new(Duration::from_secs(1), 4);
        let t0 = Instant::now();
        let ip: IpAddr = "203.0.113.9".parse().expect("ip");
        for &action in &Action::ALL[..20] {
            r.record(&Refusal { source: Some(ip), action, target: "t", reason: &"r".repeat(500), sample: false }, t0);
        }
        let due = r.due(t0 + Duration::from_secs(1), 3);
        let Op::Rejected { reason, .. } = &due[0].op else { panic!() };
        assert!(reason.contains("12 other (various)"), "{reason}");
        assert!(reason.len() < 2000, "{}", reason.len());
        assert!(reason.contains("at coordinator 3"), "{reason}");
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1204), "1,204");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }
}
