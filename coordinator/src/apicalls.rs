//! Metering at the coordinator (issue 12): API calls per tenant counted in memory by the
//! coordinator that served them (`ApiCalls`), written through Raft as one `Op::RecordUsage`
//! batch per interval (`UsageConfig::flush_every`), never one write per call; and the `serve`
//! flags of the usage ledger (retention, report refresh).

use crate::state::names::TenantName;
use crate::state::usage::{Retention, UsageBatch, MAX_BATCH_TENANTS};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Calls per tenant since the last batch. Bounded: at most `MAX_BATCH_TENANTS` tenants (only
/// tenants named by an authenticated key are counted, and those exist).
#[derive(Debug, Default)]
pub struct ApiCalls {
    counts: Mutex<BTreeMap<TenantName, u64>>,
}

impl ApiCalls {
    /// One authenticated request acting on `tenant`.
    pub fn count(&self, tenant: &TenantName) {
        let Ok(mut counts) = self.counts.lock() else { return };
        if let Some(n) = counts.get_mut(tenant) {
            *n = n.saturating_add(1);
        } else if counts.len() < MAX_BATCH_TENANTS {
            counts.insert(tenant.clone(), 1);
        }
    }

    /// The counts so far, leaving none.
    pub fn take(&self) -> BTreeMap<TenantName, u64> {
        self.counts.lock().map(|mut c| std::mem::take(&mut *c)).unwrap_or_default()
    }

    /// Counts a batch that could not be written, so they go with the next one.
    pub fn restore(&self, batch: BTreeMap<TenantName, u64>) {
        let Ok(mut counts) = self.counts.lock() else { return };
        for (tenant, n) in batch {
            let slot = counts.entry(tenant).or_default();
            *slot = slot.saturating_add(n);
        }
    }

    /// The batch this coordinator proposes now: its counts and its retention. `None` when there
    /// is nothing to count and no compaction is due (`compact`: the leader, once an hour).
    pub fn batch(&self, coordinator: u64, retention: Retention, compact: bool) -> Option<UsageBatch> {
        let api_calls = self.take();
        (compact || !api_calls.is_empty()).then_some(UsageBatch { coordinator, api_calls, retention })
    }
}

/// The usage ledger's settings of one coordinator (`serve` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageConfig {
    /// API-call counts are written this often.
    pub flush_every: Duration,
    /// An agent's report whose only changes are usage samples is written at most this often (and
    /// at least this often, refreshing its last-seen): the ledger's sampling interval.
    pub report_refresh: Duration,
    pub retention: Retention,
}

impl Default for UsageConfig {
    fn default() -> Self {
        UsageConfig {
            flush_every: Duration::from_secs(60),
            report_refresh: Duration::from_secs(60),
            retention: Retention::default(),
        }
    }
}

/// The usage ledger's `serve` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct UsageArgs {
    /// How often this coordinator writes the API calls it counted per tenant (1s to 1h).
    #[arg(long, default_value = "60s", value_parser = parse_interval)]
    pub usage_flush_interval: Duration,
    /// How often an agent's report is written when only its usage samples changed (1s to 1h): the
    /// usage ledger's sampling interval.
    #[arg(long, default_value = "60s", value_parser = parse_interval)]
    pub report_refresh: Duration,
    /// Days of hourly usage detail; older hours are compacted into one bucket per UTC day.
    #[arg(long, default_value_t = Retention::default().hourly_days)]
    pub usage_hourly_days: u32,
    /// Days of usage kept at all; older days are dropped.
    #[arg(long, default_value_t = Retention::default().keep_days)]
    pub usage_keep_days: u32,
}

impl UsageArgs {
    pub fn config(&self) -> Result<UsageConfig, String> {
        let retention = Retention::new(self.usage_hourly_days, self.usage_keep_days).map_err(|e| e.to_string())?;
        Ok(UsageConfig { flush_every: self.usage_flush_interval, report_refresh: self.report_refresh, retention })
    }
}

fn parse_interval(raw: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(raw).map_err(|e| format!("{raw:?}: {e}"))?;
    if d < Duration::from_secs(1) || d > Duration::from_secs(3600) {
        return Err("must be between 1s and 1h".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_taken_once_and_a_failed_batch_goes_with_the_next() {
        let calls = ApiCalls::default();
        let acme = TenantName::parse("acme").expect("valid");
        assert_eq!(calls.batch(1, Retention::default(), false), None, "nothing to write");
        assert!(calls.batch(1, Retention::default(), true).is_some_and(|b| b.api_calls.is_empty()));
        calls.count(&acme);
        calls.count(&acme);
        let batch = calls.batch(1, Retention::default(), false).expect("a batch");
        assert_eq!(batch.api_calls.get(&acme), Some(&2));
        assert!(calls.take().is_empty());
        calls.count(&acme);
        calls.restore(batch.api_calls);
        assert_eq!(calls.take().get(&acme), Some(&3));
    }
}
