//! Who gets in, and how fast: per-source token buckets for unauthenticated traffic, per-key token
//! buckets for API keys, caps on concurrent handshakes and connections, and the listeners'
//! timeouts. Every table here is bounded, so a flood costs O(1) memory whatever its sources.

use crate::refusals::Refusals;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Limits of one coordinator's listeners (typed; parsed from `serve` flags by `LimitArgs`).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Unauthenticated refusals (REST requests without a valid key, failed handshakes, bogus
    /// joins) one source address may cause per second, and in a burst. Past it, REST answers 429
    /// and new connections from that address are closed before any TLS work.
    pub anonymous_rate: f64,
    pub anonymous_burst: f64,
    /// Device enrollment attempts one source address may make per second, and in a burst
    /// (accepted or not: each costs a Raft write); past it, `RESOURCE_EXHAUSTED`.
    pub enroll_rate: f64,
    pub enroll_burst: f64,
    /// Requests per second (and burst) of one customer or auditor key.
    pub key_rate: f64,
    pub key_burst: f64,
    /// Requests per second (and burst) of one admin key.
    pub admin_key_rate: f64,
    pub admin_key_burst: f64,
    /// TLS handshakes in progress per listener, and per source address.
    pub max_handshakes: usize,
    pub max_handshakes_per_source: u32,
    pub handshake_timeout: Duration,
    /// Open REST connections, and per source address.
    pub max_api_connections: usize,
    pub max_api_connections_per_source: u32,
    /// An HTTP/1 request head must arrive within this.
    pub header_read_timeout: Duration,
    /// A REST connection that moves no byte for this long is closed (after its requests finish).
    pub idle_timeout: Duration,
    /// At most one audit entry per source address per this long for its unauthenticated refusals.
    pub refusal_audit_every: Duration,
    /// Source addresses whose refusals are counted one by one; the rest share one bucket.
    pub max_tracked_sources: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            anonymous_rate: 10.0,
            anonymous_burst: 50.0,
            enroll_rate: 5.0,
            enroll_burst: 50.0,
            key_rate: 50.0,
            key_burst: 100.0,
            admin_key_rate: 1000.0,
            admin_key_burst: 2000.0,
            max_handshakes: 256,
            max_handshakes_per_source: 32,
            handshake_timeout: Duration::from_secs(5),
            max_api_connections: 4096,
            max_api_connections_per_source: 256,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            refusal_audit_every: Duration::from_secs(60),
            max_tracked_sources: 1024,
        }
    }
}

/// `serve` flags for the limits; defaults are `Limits::default()`.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// Requests per second of one customer or auditor API key (0: unlimited); past it, 429.
    #[arg(long, default_value_t = Limits::default().key_rate)]
    pub key_rate: f64,
    #[arg(long, default_value_t = Limits::default().key_burst)]
    pub key_burst: f64,
    /// Requests per second of one admin API key (0: unlimited).
    #[arg(long, default_value_t = Limits::default().admin_key_rate)]
    pub admin_key_rate: f64,
    #[arg(long, default_value_t = Limits::default().admin_key_burst)]
    pub admin_key_burst: f64,
    /// Unauthenticated refusals per second one source address may cause before it gets 429 and
    /// its new connections are closed unread (0: unlimited).
    #[arg(long, default_value_t = Limits::default().anonymous_rate)]
    pub anonymous_rate: f64,
    #[arg(long, default_value_t = Limits::default().anonymous_burst)]
    pub anonymous_burst: f64,
    /// Device enrollment attempts per second one source address may make (0: unlimited).
    #[arg(long, default_value_t = Limits::default().enroll_rate)]
    pub enroll_rate: f64,
    #[arg(long, default_value_t = Limits::default().enroll_burst)]
    pub enroll_burst: f64,
    /// At most one audit entry per source address this often for its unauthenticated refusals
    /// (the first is written at once, the rest are counted into one summary entry).
    #[arg(long, default_value = "60s")]
    pub refusal_audit_every: String,
    /// How long a client has to send an HTTP/1 request head.
    #[arg(long, default_value = "10s")]
    pub header_read_timeout: String,
}

impl LimitArgs {
    pub fn limits(&self) -> Result<Limits, String> {
        let duration = |flag: &str, raw: &str| -> Result<Duration, String> {
            let d = humantime::parse_duration(raw).map_err(|e| format!("--{flag} {raw:?}: {e}"))?;
            if d < Duration::from_millis(100) || d > Duration::from_secs(86_400) {
                return Err(format!("--{flag} must be between 100ms and 24h"));
            }
            Ok(d)
        };
        let rate = |flag: &str, v: f64| -> Result<f64, String> {
            if v.is_finite() && (0.0..=1_000_000.0).contains(&v) {
                Ok(v)
            } else {
                Err(format!("--{flag} must be between 0 and 1000000"))
            }
        };
        let burst = |flag: &str, v: f64, r: f64| -> Result<f64, String> {
            let v = rate(flag, v)?;
            if r > 0.0 && v < 1.0 {
                return Err(format!("--{flag} must be at least 1"));
            }
            Ok(v)
        };
        Ok(Limits {
            key_rate: rate("key-rate", self.key_rate)?,
            key_burst: burst("key-burst", self.key_burst, self.key_rate)?,
            admin_key_rate: rate("admin-key-rate", self.admin_key_rate)?,
            admin_key_burst: burst("admin-key-burst", self.admin_key_burst, self.admin_key_rate)?,
            anonymous_rate: rate("anonymous-rate", self.anonymous_rate)?,
            anonymous_burst: burst("anonymous-burst", self.anonymous_burst, self.anonymous_rate)?,
            enroll_rate: rate("enroll-rate", self.enroll_rate)?,
            enroll_burst: burst("enroll-burst", self.enroll_burst, self.enroll_rate)?,
            refusal_audit_every: duration("refusal-audit-every", &self.refusal_audit_every)?,
            header_read_timeout: duration("header-read-timeout", &self.header_read_timeout)?,
            ..Limits::default()
        })
    }
}

/// The address a limit or a count is kept for: the IPv4 address, or the /64 of an IPv6 address
/// (one host usually owns a whole /64, so per-address keys would let it spread freely).
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let seg = v6.segments();
                IpAddr::V6(Ipv6Addr::new(seg[0], seg[1], seg[2], seg[3], 0, 0, 0, 0))
            }
        },
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets per key in a bounded table. When the table is full, idle keys (whose bucket has
/// refilled) are dropped; if none is idle, new keys share one overflow bucket, so many sources
/// cannot grow the table or escape the limit.
pub struct Buckets<K> {
    rate: f64,
    burst: f64,
    max: usize,
    table: Mutex<Table<K>>,
}

struct Table<K> {
    map: HashMap<K, Bucket>,
    overflow: Option<Bucket>,
    last_prune: Option<Instant>,
}

impl<K: Eq + Hash + Clone> Buckets<K> {
    /// `rate` per second, `burst` tokens, at most `max` keys. A rate of 0 means unlimited.
    pub fn new(rate: f64, burst: f64, max: usize) -> Self {
        Self { rate, burst, max, table: Mutex::new(Table { map: HashMap::new(), overflow: None, last_prune: None }) }
    }

    /// Takes one token for `key`, or says how long until one is available.
    pub fn take(&self, key: &K, now: Instant) -> Result<(), Duration> {
        self.with(key, now, true)
    }

    /// Whether `key` has a token left, without taking it.
    pub fn check(&self, key: &K, now: Instant) -> Result<(), Duration> {
        self.with(key, now, false)
    }

    fn with(&self, key: &K, now: Instant, take: bool) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let (rate, burst) = (self.rate, self.burst);
        let refill = |b: &mut Bucket| {
            let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
            b.tokens = (b.tokens + elapsed * rate).min(burst);
            b.at = now;
        };
        let spend = |b: &mut Bucket| -> Result<(), Duration> {
            refill(b);
            if b.tokens >= 1.0 {
                if take {
                    b.tokens -= 1.0;
                }
                Ok(())
            } else {
                Err(Duration::from_secs_f64((1.0 - b.tokens) / rate))
            }
        };
        let mut t = match self.table.lock() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(b) = t.map.get_mut(key) {
            return spend(b);
        }
        if t.map.len() >= self.max
            && t.last_prune.is_none_or(|p| now.saturating_duration_since(p) >= Duration::from_secs(1))
        {
            t.last_prune = Some(now);
            let full = Duration::from_secs_f64(burst / rate);
            t.map.retain(|_, b| now.saturating_duration_since(b.at) < full);
        }
        if t.map.len() < self.max {
            let mut fresh = Bucket { tokens: burst, at: now };
            let result = spend(&mut fresh);
            if take {
                t.map.insert(key.clone(), fresh);
            }
            return result;
        }
        let b = t.overflow.get_or_insert(Bucket { tokens: burst, at: now });
        spend(b)
    }

    pub fn len(&self) -> usize {
        self.table.lock().map(|t| t.map.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Caps things in progress (handshakes, connections) overall and per source address.
pub struct Slots {
    max: usize,
    per_source: u32,
    held: Mutex<(usize, HashMap<IpAddr, u32>)>,
}

/// One held slot; released on drop.
pub struct Slot {
    slots: Arc<Slots>,
    source: IpAddr,
}

impl Slots {
    pub fn new(max: usize, per_source: u32) -> Arc<Self> {
        Arc::new(Self { max, per_source, held: Mutex::new((0, HashMap::new())) })
    }

    /// A slot for `source`, or `None` when the listener or that source is at its cap.
    pub fn acquire(self: &Arc<Self>, source: IpAddr) -> Option<Slot> {
        let mut held = self.held.lock().ok()?;
        if held.0 >= self.max {
            return None;
        }
        let n = held.1.entry(source).or_insert(0);
        if *n >= self.per_source {
            return None;
        }
        *n += 1;
        held.0 += 1;
        Some(Slot { slots: self.clone(), source })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut held) = self.slots.held.lock() {
            held.0 = held.0.saturating_sub(1);
            if let Some(n) = held.1.get_mut(&self.source) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    held.1.remove(&self.source);
                }
            }
        }
    }
}

/// Everything the listeners consult before doing work for a caller.
pub struct Admission {
    pub limits: Limits,
    pub refusals: Refusals,
    /// Unauthenticated refusals per source address.
    pub anonymous: Buckets<IpAddr>,
    /// Device enrollment attempts per source address.
    pub enrollments: Buckets<IpAddr>,
    /// Requests per customer/auditor key id, and per admin key id.
    pub keys: Buckets<String>,
    pub admin_keys: Buckets<String>,
}

impl Admission {
    pub fn new(limits: Limits) -> Self {
        let max = limits.max_tracked_sources.max(16) * 4;
        Self {
            refusals: Refusals::new(limits.refusal_audit_every, limits.max_tracked_sources),
            anonymous: Buckets::new(limits.anonymous_rate, limits.anonymous_burst, max),
            enrollments: Buckets::new(limits.enroll_rate, limits.enroll_burst, max),
            keys: Buckets::new(limits.key_rate, limits.key_burst, 100_000),
            admin_keys: Buckets::new(limits.admin_key_rate, limits.admin_key_burst, 10_000),
            limits,
        }
    }

    /// Handshake slots of one listener.
    pub fn handshake_slots(&self) -> Arc<Slots> {
        Slots::new(self.limits.max_handshakes, self.limits.max_handshakes_per_source)
    }

    /// Whether `source` may open a connection: `Err` when its unauthenticated refusals used up
    /// its bucket (a well-behaved source never notices).
    pub fn connection_allowed(&self, source: IpAddr) -> Result<(), Duration> {
        self.anonymous.check(&source_key(source), Instant::now())
    }

    /// Charges one device enrollment attempt to `source`; `Err` when it is over its limit.
    pub fn charge_enrollment(&self, source: Option<IpAddr>) -> Result<(), Duration> {
        match source {
            Some(ip) => self.enrollments.take(&source_key(ip), Instant::now()),
            None => Ok(()),
        }
    }

    /// Charges one unauthenticated refusal to `source`; `Err` when it is over its limit.
    pub fn charge_anonymous(&self, source: Option<IpAddr>) -> Result<(), Duration> {
        match source {
            Some(ip) => self.anonymous.take(&source_key(ip), Instant::now()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let b = Buckets::new(10.0, 3.0, 10);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(b.take(&1, t0).is_ok());
        }
        let wait = b.take(&1, t0).expect_err("burst spent");
        assert!(wait <= Duration::from_millis(100) && wait > Duration::ZERO, "{wait:?}");
        assert!(b.take(&1, t0 + Duration::from_millis(100)).is_ok(), "one token back after 1/rate");
        assert!(b.take(&2, t0).is_ok(), "another key has its own bucket");
    }

    #[test]
    fn table_stays_bounded_and_full_tables_share_an_overflow_bucket() {
        let b = Buckets::new(1.0, 2.0, 4);
        let t0 = Instant::now();
        for k in 0..1000 {
            let _ = b.take(&k, t0);
        }
        assert_eq!(b.len(), 4, "never more keys than the cap");
        // Keys past the cap share one bucket of burst 2: the third new key is refused.
        let refused = (1000..1010).filter(|k| b.take(k, t0).is_err()).count();
        assert!(refused >= 8, "{refused} refused");
        // Once the tracked keys are idle (refilled), new keys get their own buckets again.
        let later = t0 + Duration::from_secs(10);
        assert!(b.take(&5000, later).is_ok());
        assert!(b.len() <= 4);
    }

    #[test]
    fn zero_rate_is_unlimited_and_check_takes_nothing() {
        let b = Buckets::new(0.0, 0.0, 1);
        assert!((0..10_000).all(|k| b.take(&k, Instant::now()).is_ok()));
        let c = Buckets::new(1.0, 1.0, 4);
        let now = Instant::now();
        assert!(c.check(&1, now).is_ok() && c.check(&1, now).is_ok());
        assert!(c.take(&1, now).is_ok() && c.check(&1, now).is_err());
    }

    #[test]
    fn ipv6_sources_are_counted_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().expect("ip");
        assert_eq!(source_key(a), source_key(b));
        let v4: IpAddr = "::ffff:198.51.100.7".parse().expect("ip");
        assert_eq!(source_key(v4), "198.51.100.7".parse::<IpAddr>().expect("ip"));
    }

    #[test]
    fn slots_cap_overall_and_per_source() {
        let s = Slots::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let (a1, _a2) = (s.acquire(a).expect("a1"), s.acquire(a).expect("a2"));
        assert!(s.acquire(a).is_none(), "per-source cap");
        let _b1 = s.acquire(b).expect("b1");
        assert!(s.acquire(b).is_none(), "overall cap");
        drop(a1);
        assert!(s.acquire(b).is_some(), "released on drop");
    }
}
