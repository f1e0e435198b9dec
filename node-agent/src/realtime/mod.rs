//! Realtime: a role of the node agent on PostgreSQL db nodes. Devices publish events over gRPC
//! (`Ingest.Publish`) or HTTP (`POST /v1/tenants/{t}/events`) with their certificates (devices
//! enrolled in public mode add a customer key and their fingerprint); the tenant's apps
//! subscribe with a customer key over Server-Sent Events. One TLS port serves all
//! (`--realtime-listen`).
//!
//! Why in the agent: the db node already holds the tenant's database and the superuser
//! connection to it; an ingest elsewhere would need those credentials shipped to it. Here they
//! never leave the node, and the assignment that says which devices and keys are allowed
//! arrives on the agent's existing watch.
//!
//! - `auth`: who may publish and subscribe (pure, from the assignment).
//! - `event`, `quota`: event validation and the events/min bucket (pure).
//! - `ingest`: the one admission path of a batch (`Shared::admit`), the gRPC service and the
//!   per-tenant batching writers. `publish`: the same over HTTP (`POST …/events`, JSON).
//! - `pgoutput`, `feed`: the committed rows of each tenant's `events` table through logical
//!   decoding, the resumable window, the live fan-out.
//! - `replication`: the logical replication client; `pgpass`: its password from libpq's file.
//! - `sse`: the subscribers' endpoint. `listener`: TLS, the client's identity, one port for both.
//!
//! Never LISTEN/NOTIFY: channels are not tenant-private.

pub mod auth;
pub mod event;
pub mod feed;
pub mod ingest;
pub mod listener;
pub mod pgoutput;
pub mod pgpass;
pub mod publish;
pub mod quota;
pub mod replication;
pub mod sse;

use crate::assignment::DbTenant;
use crate::config::RealtimeConfig;
use crate::driver::Condition;
use auth::Tenants;
use feed::Feed;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::ConnectOptions;
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Writers (concurrent transactions) per tenant.
const WRITERS: u64 = 4;
/// Queued batches per writer before publishers wait.
const WRITER_QUEUE: usize = 1_024;

/// A tenant's feed and the task reading it.
struct Running {
    feed: Arc<Feed>,
    task: tokio::task::JoinHandle<()>,
}

/// What the ingest, the writers, the feeds and the subscribers share.
pub struct Shared {
    /// The current tenants (devices, keys, quotas): changed by the agent, read on every batch
    /// and every subscription.
    pub tenants: watch::Sender<Tenants>,
    base: PgConnectOptions,
    /// The same server for replication connections (the feeds stream their slots).
    replication: replication::Target,
    cfg: RealtimeConfig,
    pools: Mutex<HashMap<String, PgPool>>,
    /// By `tenant/n`.
    writers: Mutex<HashMap<String, mpsc::Sender<ingest::Job>>>,
    feeds: Mutex<HashMap<String, Running>>,
    quotas: Mutex<HashMap<String, quota::Bucket>>,
    counters: Mutex<BTreeMap<String, u64>>,
    conditions: Mutex<Vec<Condition>>,
}

impl Shared {
    /// A pool on the main database (None) or another database of the same server.
    pub fn pool(&self, database: Option<&str>) -> PgPool {
        let key = database.unwrap_or("").to_string();
        let Ok(mut pools) = self.pools.lock() else {
            return PgPoolOptions::new().connect_lazy_with(self.base.clone());
        };
        pools
            .entry(key)
            .or_insert_with(|| {
                let options = match database {
                    Some(d) => self.base.clone().database(d),
                    None => self.base.clone(),
                };
                PgPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect_lazy_with(options)
            })
            .clone()
    }

    /// The queue of the tenant's writer that serves `device`, started on first use. A tenant
    /// has `WRITERS` writers (one transaction builds while another commits); a device always
    /// goes to the same one, so its batches commit in the order it sent them.
    fn writer(self: &Arc<Self>, tenant: &str, device: &str) -> Option<mpsc::Sender<ingest::Job>> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        device.hash(&mut h);
        let key = format!("{tenant}/{}", h.finish() % WRITERS);
        let mut writers = self.writers.lock().ok()?;
        if let Some(w) = writers.get(&key).filter(|w| !w.is_closed()) {
            return Some(w.clone());
        }
        let (tx, rx) = mpsc::channel(WRITER_QUEUE);
        tokio::spawn(ingest::writer(self.clone(), tenant.to_string(), rx));
        writers.insert(key, tx.clone());
        Some(tx)
    }

    /// Charges `n` events to the tenant's quota; Err(seconds until they would fit) when over.
    fn take_quota(&self, tenant: &str, n: usize, per_min: u32) -> Result<(), Option<u64>> {
        let now = Instant::now();
        let mut quotas = self.quotas.lock().map_err(|_| None)?;
        let bucket = quotas.entry(tenant.to_string()).or_insert_with(|| quota::Bucket::new(per_min, now));
        if bucket.take(n, per_min, now) {
            Ok(())
        } else {
            Err(bucket.wait_secs(n))
        }
    }

    fn count(&self, tenant: &str, n: u64) {
        if let Ok(mut c) = self.counters.lock() {
            *c.entry(tenant.to_string()).or_default() += n;
        }
    }

    pub fn feed(&self, tenant: &str) -> Option<Arc<Feed>> {
        self.feeds.lock().ok()?.get(tenant).map(|r| r.feed.clone())
    }
}

/// The realtime role of this node.
#[derive(Clone)]
pub struct Realtime {
    pub shared: Arc<Shared>,
}

/// `wal_level` as the server runs it.
async fn wal_level(pool: &PgPool) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_catalog.current_setting('wal_level')").fetch_one(pool).await
}

impl Realtime {
    /// `url`: the superuser connection of the db driver (it never leaves the node).
    pub fn new(cfg: RealtimeConfig, url: &str) -> anyhow::Result<Self> {
        let parsed = PgConnectOptions::from_str(url).map_err(|e| anyhow::anyhow!("invalid PostgreSQL URL: {e}"))?;
        let replication = replication::target(&parsed, url);
        let base = parsed.disable_statement_logging().application_name("berqenas-realtime").options([
            ("search_path", "pg_catalog"),
            ("lock_timeout", "5s"),
            ("statement_timeout", "60s"),
            ("timezone", "UTC"),
            // Each read of a slot logs two LOG lines ("starting logical decoding…"): several
            // times a second per tenant would flood the server log. Errors come back to the
            // agent, which logs them.
            ("log_min_messages", "fatal"),
        ]);
        let (tenants, _) = watch::channel(Tenants::new());
        Ok(Self {
            shared: Arc::new(Shared {
                tenants,
                base,
                replication,
                cfg,
                pools: Mutex::new(HashMap::new()),
                writers: Mutex::new(HashMap::new()),
                feeds: Mutex::new(HashMap::new()),
                quotas: Mutex::new(HashMap::new()),
                counters: Mutex::new(BTreeMap::new()),
                conditions: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Takes the tenants of a new desired state: from the next batch on, publishing and
    /// subscribing follow it (a device removed is refused on its next batch).
    pub fn set(&self, db: &[DbTenant]) {
        let new = auth::tenants(db);
        self.shared.tenants.send_if_modified(|t| {
            if *t == new {
                return false;
            }
            *t = new;
            true
        });
        // Writers of tenants no longer here end once their queue drains.
        let tenants = self.shared.tenants.borrow().clone();
        if let Ok(mut w) = self.shared.writers.lock() {
            w.retain(|key, _| key.split_once('/').is_some_and(|(name, _)| tenants.contains_key(name)));
        }
    }

    /// Makes the feeds match the tenants: started for each (when `wal_level` is logical),
    /// stopped with their slots and publication dropped for tenants no longer assigned here
    /// (before the db driver drops a tenant's database, which a slot in it would block).
    pub async fn converge(&self) {
        let tenants = self.shared.tenants.borrow().clone();
        let main = self.shared.pool(None);
        let logical = match wal_level(&main).await {
            Ok(level) if level == "logical" => true,
            Ok(level) => {
                self.condition(Some(format!(
                    "wal_level is {level}: realtime subscribers need wal_level = logical (set it in postgresql.conf \
                     and restart PostgreSQL); devices can still publish"
                )));
                false
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot read wal_level");
                return;
            }
        };
        if logical {
            self.condition(None);
        }
        // Stop feeds of tenants gone.
        let gone: Vec<(String, Arc<Feed>)> = match self.shared.feeds.lock() {
            Ok(mut feeds) => {
                let names: Vec<String> = feeds.keys().filter(|n| !tenants.contains_key(*n)).cloned().collect();
                names
                    .into_iter()
                    .filter_map(|n| {
                        feeds.remove(&n).map(|r| {
                            r.task.abort();
                            (n, r.feed)
                        })
                    })
                    .collect()
            }
            Err(_) => Vec::new(),
        };
        drop(gone);
        // Drop realtime objects of any tenant not assigned here (also after a restart).
        if logical {
            let slots: Result<Vec<(String, String)>, _> = sqlx::query_as(
                "SELECT slot_name::text, database::text FROM pg_catalog.pg_replication_slots \
                 WHERE slot_name LIKE 'berqenas\\_rt%'",
            )
            .fetch_all(&main)
            .await;
            let mut orphans: BTreeMap<String, String> = BTreeMap::new();
            for (slot, database) in slots.unwrap_or_default() {
                if let Some(t) = feed::slot_tenant(&slot).filter(|t| !tenants.contains_key(*t)) {
                    orphans.insert(t.to_string(), database);
                }
            }
            let main_db = self.shared.base.get_database().unwrap_or("postgres").to_string();
            for (tenant, database) in orphans {
                let pool = if database == main_db { main.clone() } else { self.shared.pool(Some(&database)) };
                match feed::drop_objects(&pool, &tenant).await {
                    Ok(()) => tracing::info!(%tenant, "dropped the realtime slots of a tenant no longer here"),
                    Err(e) => tracing::warn!(%tenant, error = %e, "cannot drop realtime slots"),
                }
            }
        }
        // Pools of databases no longer served go too: an idle connection to a tenant's
        // database must not outlive it.
        if let Ok(mut pools) = self.shared.pools.lock() {
            pools.retain(|db, pool| {
                let keep = db.is_empty() || db.strip_prefix("tenant_").is_some_and(|t| tenants.contains_key(t));
                if !keep {
                    let pool = pool.clone();
                    tokio::spawn(async move { pool.close().await });
                }
                keep
            });
        }
        if !logical {
            return;
        }
        let Ok(mut feeds) = self.shared.feeds.lock() else { return };
        for (name, t) in &tenants {
            if feeds.get(name).is_some_and(|r| !r.task.is_finished()) {
                continue;
            }
            let db = t.own_database.then(|| format!("tenant_{name}"));
            let feed = feeds.get(name).map(|r| r.feed.clone()).unwrap_or_else(|| Arc::new(Feed::new(name)));
            let mut target = self.shared.replication.clone();
            if db.is_some() {
                target.database.clone_from(&db);
            }
            let src = feed::Source {
                pool: self.shared.pool(db.as_deref()),
                replication: Some(target),
                retention: self.shared.cfg.retention,
                max_rows: self.shared.cfg.window_rows,
            };
            let task = tokio::spawn(feed::run(src, feed.clone()));
            feeds.insert(name.clone(), Running { feed, task });
        }
    }

    /// Stops every feed and writer queue (the listener is the caller's task to stop).
    pub fn shutdown(&self) {
        if let Ok(mut feeds) = self.shared.feeds.lock() {
            for (_, r) in feeds.drain() {
                r.task.abort();
            }
        }
        if let Ok(mut w) = self.shared.writers.lock() {
            w.clear();
        }
    }

    fn condition(&self, message: Option<String>) {
        if let Ok(mut c) = self.shared.conditions.lock() {
            c.clear();
            if let Some(message) = message {
                c.push(Condition { kind: "realtime-wal-level".into(), message });
            }
        }
    }

    /// Conditions of the realtime role for the node's report.
    pub fn conditions(&self) -> Vec<Condition> {
        self.shared.conditions.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Events stored per tenant since the agent started.
    pub fn events_total(&self) -> BTreeMap<String, u64> {
        self.shared.counters.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

/// Unix milliseconds now, for key expiry.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
