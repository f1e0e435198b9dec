//! The tenant's events/min quota as a token bucket: `events_per_min` tokens at most, refilled
//! continuously at `events_per_min / 60` per second. A batch takes all its tokens or none. Pure:
//! time is passed in.

use std::time::Instant;

#[derive(Debug, Clone)]
pub struct Bucket {
    per_min: u32,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(per_min: u32, now: Instant) -> Self {
        Self { per_min, tokens: f64::from(per_min), last: now }
    }

    /// Takes `n` tokens if there are that many; a changed quota applies from now on.
    pub fn take(&mut self, n: usize, per_min: u32, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.per_min = per_min;
        let cap = f64::from(per_min);
        self.tokens = (self.tokens + elapsed * cap / 60.0).min(cap);
        let n = n as f64;
        if n <= self.tokens {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Seconds until `n` tokens are there (for a `Retry-After`); None when never (quota 0 or
    /// below `n`).
    pub fn wait_secs(&self, n: usize) -> Option<u64> {
        let n = n as f64;
        if self.per_min == 0 || n > f64::from(self.per_min) {
            return None;
        }
        let missing = (n - self.tokens).max(0.0);
        Some((missing * 60.0 / f64::from(self.per_min)).ceil() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_up_to_the_quota_passes_then_the_rate_refills() {
        let t0 = Instant::now();
        let mut b = Bucket::new(600, t0);
        assert!(b.take(600, 600, t0));
        assert!(!b.take(1, 600, t0), "quota used up");
        assert_eq!(b.wait_secs(10), Some(1));
        assert!(b.take(10, 600, t0 + Duration::from_secs(1)), "10 per second refill");
        assert!(!b.take(1, 600, t0 + Duration::from_secs(1)));
        assert!(b.take(600, 600, t0 + Duration::from_secs(3600)), "never above the quota");
        assert!(!b.take(1, 600, t0 + Duration::from_secs(3600)));
    }

    #[test]
    fn zero_quota_admits_nothing_and_a_batch_takes_all_or_none() {
        let t0 = Instant::now();
        let mut z = Bucket::new(0, t0);
        assert!(!z.take(1, 0, t0 + Duration::from_secs(60)));
        assert_eq!(z.wait_secs(1), None);
        let mut b = Bucket::new(10, t0);
        assert!(!b.take(11, 10, t0));
        assert!(b.take(10, 10, t0), "the refused batch took nothing");
    }
}
