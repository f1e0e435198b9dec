//! Wall-clock helpers for the edge (the state machine never reads the clock itself).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

/// `2026-11-22T21:56:19Z` for a millisecond timestamp.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Parses `2026-11-22T21:56:19Z` or a relative age such as `1h` / `30m` (meaning "that long ago").
pub fn parse_since(raw: &str, now_ms: u64) -> Result<u64, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(raw) {
        return t
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .map_err(|_| format!("time {raw:?} is before 1970"));
    }
    match humantime::parse_duration(raw) {
        Ok(d) => Ok(now_ms.saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))),
        Err(_) => Err(format!("since {raw:?} must be an RFC 3339 time or an age such as 1h")),
    }
}
