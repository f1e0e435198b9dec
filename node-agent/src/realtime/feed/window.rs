//! A tenant's window of committed rows and their live fan-out: cursors, the bounded window a
//! subscriber resumes from, and eviction (which says how far the keep slot may move). No IO.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, Notify};

/// Where a row stands in the tenant's commit order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cursor {
    pub lsn: u64,
    pub n: u32,
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}{:08x}", self.lsn, self.n)
    }
}

impl std::str::FromStr for Cursor {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        if s.len() != 24 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(());
        }
        let lsn = u64::from_str_radix(&s[..16], 16).map_err(|_| ())?;
        let n = u32::from_str_radix(&s[16..], 16).map_err(|_| ())?;
        Ok(Cursor { lsn, n })
    }
}

/// One committed row as subscribers receive it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub cursor: Cursor,
    /// End of its transaction's commit record: where the keep slot may move once it is gone.
    pub end_lsn: u64,
    /// Shared among the window's rows (few devices and types, many rows).
    pub device: Option<Arc<str>>,
    pub kind: Option<Arc<str>>,
    /// `{"id":…,"device_id":…,"type":…,"payload":…,"created_at":…}`, allocated to its length.
    pub data: Box<str>,
    pub at: Instant,
}

/// The cursor asked for is older than the retention window: rows after it are gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

#[derive(Debug, Default)]
struct Window {
    rows: VecDeque<Arc<Committed>>,
    /// A resume from a cursor below this would miss rows (the last row evicted, or on a fresh
    /// start the keep slot's position).
    floor: Option<Cursor>,
    /// The newest row ever pushed: a rebuild never pushes a row twice.
    last: Option<Cursor>,
    /// Bytes of the rows' data held.
    bytes: usize,
}

/// Most bytes of row data one tenant's window holds, whatever its rows and age limits.
pub const MAX_WINDOW_BYTES: usize = 64 * 1024 * 1024;

/// A subscriber's start: the rows it missed, and the receiver of every row after them.
pub type Attached = (VecDeque<Arc<Committed>>, broadcast::Receiver<Arc<Committed>>);

/// One tenant's feed: the window and the live fan-out.
#[derive(Debug)]
pub struct Feed {
    pub tenant: String,
    window: Mutex<Window>,
    live: broadcast::Sender<Arc<Committed>>,
    /// Rung by the ingest after a commit, so that a feed reading through SQL reads at once.
    pub wake: Notify,
    pub subscribers: AtomicUsize,
    /// The window was built once: a resume can be answered exactly.
    pub ready: AtomicBool,
}

impl Feed {
    pub fn new(tenant: &str) -> Self {
        let (live, _) = broadcast::channel(8192);
        Self {
            tenant: tenant.to_string(),
            window: Mutex::new(Window::default()),
            live,
            wake: Notify::new(),
            subscribers: AtomicUsize::new(0),
            ready: AtomicBool::new(false),
        }
    }

    /// The rows after `after` still in the window and a receiver for every later row, taken
    /// under one lock so that no row falls between them. None: from now on.
    pub fn attach(&self, after: Option<Cursor>) -> Result<Attached, Gone> {
        let w = self.window.lock().map_err(|_| Gone)?;
        let backlog = match after {
            None => VecDeque::new(),
            Some(c) => {
                if w.floor.is_some_and(|f| c < f) {
                    return Err(Gone);
                }
                let start = w.rows.partition_point(|r| r.cursor <= c);
                w.rows.range(start..).cloned().collect()
            }
        };
        Ok((backlog, self.live.subscribe()))
    }

    /// Appends committed rows (in commit order) and sends them live; rows at or before the
    /// newest already pushed are skipped.
    pub(super) fn push(&self, rows: Vec<Committed>) {
        let Ok(mut w) = self.window.lock() else { return };
        for r in rows {
            if w.last.is_some_and(|l| r.cursor <= l) {
                continue;
            }
            w.last = Some(r.cursor);
            w.bytes += r.data.len();
            let r = Arc::new(r);
            w.rows.push_back(r.clone());
            let _ = self.live.send(r);
        }
    }

    /// Sets the floor when nothing was ever evicted (a fresh start: what the keep slot holds).
    pub(super) fn start_floor(&self, floor: Cursor) {
        if let Ok(mut w) = self.window.lock() {
            if w.floor.is_none() {
                w.floor = Some(floor);
            }
        }
    }

    /// Drops rows older than `retention` or beyond `max_rows`; returns the end LSN of the last
    /// transaction that left the window whole (where the keep slot may move).
    pub(super) fn evict(&self, now: Instant, retention: Duration, max_rows: usize) -> Option<u64> {
        let Ok(mut w) = self.window.lock() else { return None };
        let mut advance = None;
        while let Some(front) = w.rows.front().cloned() {
            if now.saturating_duration_since(front.at) <= retention
                && w.rows.len() <= max_rows
                && w.bytes <= MAX_WINDOW_BYTES
            {
                break;
            }
            w.rows.pop_front();
            w.bytes = w.bytes.saturating_sub(front.data.len());
            // A client that saw this row still gets every row after it.
            w.floor = Some(front.cursor);
            let txn_done = w.rows.front().is_none_or(|next| next.cursor.lsn != front.cursor.lsn);
            if txn_done {
                advance = Some(front.end_lsn);
            }
        }
        advance
    }

    pub fn len(&self) -> usize {
        self.window.lock().map(|w| w.rows.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::super::slots::{format_lsn, parse_lsn};
    use super::*;

    fn row(lsn: u64, n: u32, end: u64, at: Instant) -> Committed {
        Committed { cursor: Cursor { lsn, n }, end_lsn: end, device: None, kind: None, data: "".into(), at }
    }

    #[test]
    fn cursors_round_trip_and_order_by_commit_then_position() {
        let c = Cursor { lsn: 0x1_6B37_4800, n: 3 };
        assert_eq!(c.to_string().parse::<Cursor>(), Ok(c));
        assert!(Cursor { lsn: 1, n: 9 } < Cursor { lsn: 2, n: 0 });
        assert!("xyz".parse::<Cursor>().is_err());
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
    }

    #[test]
    fn resume_gets_exactly_the_rows_after_the_cursor_and_never_a_row_twice() {
        let t = Instant::now();
        let f = Feed::new("acme");
        f.push(vec![row(10, 0, 11, t), row(10, 1, 11, t), row(20, 0, 21, t)]);
        f.push(vec![row(10, 1, 11, t), row(30, 0, 31, t)]);
        let (backlog, _) = f.attach(Some(Cursor { lsn: 10, n: 0 })).expect("in window");
        let got: Vec<Cursor> = backlog.iter().map(|r| r.cursor).collect();
        assert_eq!(got, [Cursor { lsn: 10, n: 1 }, Cursor { lsn: 20, n: 0 }, Cursor { lsn: 30, n: 0 }]);
        let (backlog, _) = f.attach(None).expect("tail");
        assert!(backlog.is_empty(), "no cursor: from now on");
    }

    #[test]
    fn eviction_moves_the_floor_and_the_keep_slot_only_past_whole_transactions() {
        let t = Instant::now();
        let f = Feed::new("acme");
        f.push(vec![row(10, 0, 11, t), row(10, 1, 11, t), row(20, 0, 21, t)]);
        assert_eq!(f.evict(t, Duration::from_secs(60), 2), None, "half of transaction 10 left");
        assert_eq!(f.attach(Some(Cursor { lsn: 5, n: 0 })).err(), Some(Gone));
        assert!(f.attach(Some(Cursor { lsn: 10, n: 0 })).is_ok(), "resumable right after the evicted row");
        assert_eq!(f.evict(t, Duration::from_secs(60), 1), Some(11));
        assert_eq!(f.evict(t + Duration::from_secs(61), Duration::from_secs(60), 10), Some(21));
        assert!(f.is_empty());
    }
}
