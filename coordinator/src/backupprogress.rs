//! How far the backups under way got, as db nodes report them to this coordinator (every few
//! seconds while one runs). Memory only, never in the Raft state: it is shown while a backup
//! runs and means nothing after, and writing it would put an audit entry in the chain every few
//! seconds. A coordinator shows the progress its db nodes report to it; `backup list`/`run`
//! through another coordinator show the request without it.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A report older than this is not shown (the node stopped reporting, or the backup ended
/// without a report saying so).
const FRESH: Duration = Duration::from_secs(60);

/// Most backups under way one node's report may name.
const MAX_PER_REPORT: usize = 64;

/// One backup under way, as its node reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    /// The on-demand request it answers; `None` for a scheduled backup.
    pub request: Option<String>,
    pub started_ms: u64,
    pub dumped: u64,
    pub uploaded: u64,
    pub parts: u32,
}

/// The backups under way by tenant: the reporting node, what it said, and when.
#[derive(Debug, Default)]
pub struct ProgressBoard(Mutex<BTreeMap<String, (u64, Shown, Instant)>>);

impl ProgressBoard {
    /// Node `node`'s report: what it names replaces what it said before (a backup it no longer
    /// names has ended).
    pub fn reported(&self, node: u64, now: Instant, under_way: impl IntoIterator<Item = (String, Shown)>) {
        let Ok(mut board) = self.0.lock() else { return };
        board.retain(|_, (from, _, at)| *from != node && now.duration_since(*at) < FRESH);
        for (tenant, shown) in under_way.into_iter().take(MAX_PER_REPORT) {
            board.insert(tenant, (node, shown, now));
        }
    }

    /// The tenant's backup under way, if `db_node` (the node holding its db role) reported one
    /// lately.
    pub fn get(&self, tenant: &str, db_node: Option<u64>, now: Instant) -> Option<Shown> {
        let board = self.0.lock().ok()?;
        let (from, shown, at) = board.get(tenant)?;
        (Some(*from) == db_node && now.duration_since(*at) < FRESH).then(|| shown.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(dumped: u64) -> Shown {
        Shown { request: Some("b1".into()), started_ms: 1, dumped, uploaded: dumped / 2, parts: 1 }
    }

    #[test]
    fn progress_shows_only_from_the_tenants_db_node_while_fresh() {
        let (board, t0) = (ProgressBoard::default(), Instant::now());
        board.reported(2, t0, [("acme".to_string(), shown(10))]);
        assert_eq!(board.get("acme", Some(2), t0), Some(shown(10)));
        assert_eq!(board.get("acme", Some(3), t0), None, "another node's word does not count");
        assert_eq!(board.get("acme", Some(2), t0 + FRESH), None, "stale");
        board.reported(2, t0, [("acme".to_string(), shown(20))]);
        assert_eq!(board.get("acme", Some(2), t0).map(|s| s.dumped), Some(20));
        board.reported(2, t0, []);
        assert_eq!(board.get("acme", Some(2), t0), None, "a backup the node no longer names has ended");
    }
}
