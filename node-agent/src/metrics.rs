//! The agent's Prometheus metrics (OpenMetrics text on `GET /metrics` of `--metrics-listen`,
//! loopback by default): reconcile timings and failures by driver, revision lag, the realtime
//! ingest's events, batch sizes and commit latency, per-tenant samples of the last pass (disk,
//! sessions, events, VPN bytes) and the host's CPU, memory and disk. One process-wide
//! `METRICS`: instruments are recorded where things happen (`runtime`, `driver::ByRole`,
//! `realtime::ingest`) without threading a handle through every driver. Label values are
//! driver names and tenant names, never secrets or addresses.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, SystemTime};

/// What `/metrics` answers with (Prometheus negotiates OpenMetrics).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A device whose last handshake is this recent has a VPN session (WireGuard re-handshakes
/// every 2 minutes while traffic flows).
const SESSION_FRESH: Duration = Duration::from_secs(180);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DriverLabel {
    driver: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabel {
    certificate: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabel {
    tenant: String,
}

type DriverHistogram = Family<DriverLabel, Histogram, fn() -> Histogram>;

/// 1 ms to ~65 s.
fn reconcile_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// What the last pass measured of one tenant; `None` where this node's drivers do not measure it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantSample {
    pub name: String,
    pub ready: bool,
    pub db_bytes: Option<u64>,
    pub quota_exceeded: Option<bool>,
    pub db_sessions: Option<u32>,
    pub events: Option<u64>,
    /// Sums over the tenant's enabled devices (WireGuard's counters: they restart with its
    /// interface).
    pub vpn_rx_bytes: Option<u64>,
    pub vpn_tx_bytes: Option<u64>,
    pub vpn_sessions: Option<u64>,
}

impl TenantSample {
    /// The sample of one tenant's status after a pass, with its ingest count.
    pub fn of(s: &crate::driver::Status, events: Option<u64>, now: SystemTime) -> Self {
        let gateway = s.gateway.as_ref();
        let fresh = |p: &&crate::gateway::PeerStatus| {
            p.last_handshake.and_then(|t| now.duration_since(t).ok()).is_some_and(|age| age <= SESSION_FRESH)
        };
        Self {
            name: s.name.clone(),
            ready: s.ready,
            db_bytes: s.usage.map(|u| u.db_bytes),
            quota_exceeded: s.usage.map(|u| u.quota_exceeded),
            db_sessions: s.usage.map(|u| u.connections),
            events,
            vpn_rx_bytes: gateway.map(|g| g.peers.iter().map(|p| p.rx_bytes).sum()),
            vpn_tx_bytes: gateway.map(|g| g.peers.iter().map(|p| p.tx_bytes).sum()),
            vpn_sessions: gateway.map(|g| g.peers.iter().filter(fresh).count() as u64),
        }
    }
}

/// The realtime ingest's instruments.
pub struct IngestMetrics {
    events: Counter,
    failed_batches: Counter,
    batch_rows: Histogram,
    commit_seconds: Histogram,
}

impl IngestMetrics {
    /// One transaction of events committed: rows sent, rows new, how long it took.
    pub fn committed(&self, rows: usize, inserted: u64, took: Duration) {
        self.events.inc_by(inserted);
        self.batch_rows.observe(rows as f64);
        self.commit_seconds.observe(took.as_secs_f64());
    }

    pub fn failed(&self) {
        self.failed_batches.inc();
    }
}

pub struct AgentMetrics {
    reconcile_seconds: DriverHistogram,
    reconcile_failures: Family<DriverLabel, Counter>,
    desired_revision: Gauge<u64, AtomicU64>,
    applied_revision: Gauge<u64, AtomicU64>,
    connected: Gauge,
    pub ingest: IngestMetrics,
    tenants: Mutex<Vec<TenantSample>>,
    system: Mutex<sysinfo::System>,
    /// Unix seconds of each tenant's newest completed backup (db role with backups).
    backups: Mutex<std::collections::BTreeMap<String, u64>>,
}

/// The process's metrics.
pub static METRICS: LazyLock<AgentMetrics> = LazyLock::new(AgentMetrics::new);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl AgentMetrics {
    /// Every instrument at zero.
    fn new() -> Self {
        Self {
            reconcile_seconds: Family::new_with_constructor(reconcile_histogram),
            reconcile_failures: Family::default(),
            desired_revision: Gauge::default(),
            applied_revision: Gauge::default(),
            connected: Gauge::default(),
            ingest: IngestMetrics {
                events: Counter::default(),
                failed_batches: Counter::default(),
                // 1 to 4,096 rows.
                batch_rows: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
                // 0.25 ms to ~4 s.
                commit_seconds: Histogram::new(exponential_buckets(0.00025, 2.0, 15)),
            },
            tenants: Mutex::new(Vec::new()),
            system: Mutex::new(sysinfo::System::new()),
            backups: Mutex::new(std::collections::BTreeMap::new()),
        }
    }

    /// One driver's part of a pass: how long it took and how many tenants it left not ready.
    pub fn pass(&self, driver: &'static str, took: Duration, failed: usize) {
        let label = DriverLabel { driver };
        self.reconcile_seconds.get_or_create(&label).observe(took.as_secs_f64());
        // Created even at 0, so a driver that never failed shows a zero series to rate().
        self.reconcile_failures.get_or_create(&label).inc_by(failed as u64);
    }

    /// A desired state arrived.
    pub fn desired(&self, revision: u64) {
        self.desired_revision.set(revision.max(self.desired_revision.get()));
    }

    /// A pass applied `revision`; `tenants` is what it measured.
    pub fn applied(&self, revision: u64, tenants: Vec<TenantSample>) {
        self.applied_revision.set(revision);
        self.desired(revision);
        *lock(&self.tenants) = tenants;
    }

    /// The tenants with backups on this node and the newest completed backup of each (Unix
    /// seconds; `None` = none yet, not exported); tenants not named are dropped.
    pub fn backups(&self, last: std::collections::BTreeMap<String, Option<u64>>) {
        let mut m = lock(&self.backups);
        m.retain(|t, _| last.contains_key(t));
        for (tenant, secs) in last {
            if let Some(secs) = secs {
                let v = m.entry(tenant).or_insert(0);
                *v = (*v).max(secs);
            }
        }
    }

    pub fn connected(&self, up: bool) {
        self.connected.set(i64::from(up));
    }

    /// Everything, for one scrape. `data_dir` picks the disk; `cert` is the node certificate.
    pub fn render(&self, data_dir: &std::path::Path, cert: &std::path::Path) -> Result<String, std::fmt::Error> {
        let mut reg = Registry::with_prefix("berqenas");
        reg.register(
            "agent_reconcile_duration_seconds",
            "Reconcile passes by driver and how long each took",
            self.reconcile_seconds.clone(),
        );
        reg.register(
            "agent_reconcile_failures",
            "Tenants a driver's pass left not ready, summed over passes",
            self.reconcile_failures.clone(),
        );
        reg.register(
            "agent_desired_revision",
            "Newest desired-state revision this agent has received",
            self.desired_revision.clone(),
        );
        reg.register(
            "agent_applied_revision",
            "Desired-state revision of this agent's last completed pass",
            self.applied_revision.clone(),
        );
        let lag: Gauge<u64, AtomicU64> = Gauge::default();
        lag.set(self.desired_revision.get().saturating_sub(self.applied_revision.get()));
        reg.register("agent_revision_lag", "Desired minus applied revision (0: converged to what it knows)", lag);
        reg.register(
            "agent_coordinator_connected",
            "1 while the agent holds a watch stream with a coordinator",
            self.connected.clone(),
        );
        reg.register("ingest_events", "Realtime events stored (new rows) since start", self.ingest.events.clone());
        reg.register(
            "ingest_failed_batches",
            "Realtime transactions that failed (their devices were told; nothing acknowledged)",
            self.ingest.failed_batches.clone(),
        );
        reg.register("ingest_batch_size", "Events per realtime transaction", self.ingest.batch_rows.clone());
        reg.register(
            "ingest_commit_duration_seconds",
            "How long one realtime transaction took, insert to commit",
            self.ingest.commit_seconds.clone(),
        );
        self.tenant_families(&mut reg);
        self.host_families(&mut reg, data_dir, cert);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg)?;
        Ok(out)
    }

    fn tenant_families(&self, reg: &mut Registry) {
        let ready: Family<TenantLabel, Gauge> = Family::default();
        let db_bytes: Family<TenantLabel, Gauge> = Family::default();
        let quota: Family<TenantLabel, Gauge> = Family::default();
        let sessions: Family<TenantLabel, Gauge> = Family::default();
        let events: Family<TenantLabel, Counter> = Family::default();
        let rx: Family<TenantLabel, Counter> = Family::default();
        let tx: Family<TenantLabel, Counter> = Family::default();
        let vpn_sessions: Family<TenantLabel, Gauge> = Family::default();
        for t in lock(&self.tenants).iter() {
            let l = TenantLabel { tenant: t.name.clone() };
            ready.get_or_create(&l).set(i64::from(t.ready));
            if let Some(v) = t.db_bytes {
                db_bytes.get_or_create(&l).set(int(v));
            }
            if let Some(v) = t.quota_exceeded {
                quota.get_or_create(&l).set(i64::from(v));
            }
            if let Some(v) = t.db_sessions {
                sessions.get_or_create(&l).set(i64::from(v));
            }
            if let Some(v) = t.events {
                events.get_or_create(&l).inc_by(v);
            }
            if let Some(v) = t.vpn_rx_bytes {
                rx.get_or_create(&l).inc_by(v);
            }
            if let Some(v) = t.vpn_tx_bytes {
                tx.get_or_create(&l).inc_by(v);
            }
            if let Some(v) = t.vpn_sessions {
                vpn_sessions.get_or_create(&l).set(int(v));
            }
        }
        reg.register("tenant_ready", "1 when the last pass left the tenant ready on this node", ready);
        reg.register("tenant_db_bytes", "Disk the tenant's database uses on this node", db_bytes);
        reg.register("tenant_quota_exceeded", "1 while the tenant's database is over its disk quota", quota);
        reg.register("tenant_db_sessions", "Sessions of the tenant's database user", sessions);
        reg.register("tenant_events", "Realtime events stored for the tenant since the agent started", events);
        reg.register("tenant_vpn_rx_bytes", "Bytes the gateway received from the tenant's devices", rx);
        reg.register("tenant_vpn_tx_bytes", "Bytes the gateway sent to the tenant's devices", tx);
        let backups: Family<TenantLabel, Gauge> = Family::default();
        for (tenant, secs) in lock(&self.backups).iter() {
            backups.get_or_create(&TenantLabel { tenant: tenant.clone() }).set(int(*secs));
        }
        reg.register(
            "backup_last_success_timestamp_seconds",
            "Unix time of the tenant's newest completed backup (its upload finished)",
            backups,
        );
        reg.register(
            "tenant_vpn_sessions",
            "The tenant's devices with a WireGuard handshake in the last 3 minutes",
            vpn_sessions,
        );
    }

    fn host_families(&self, reg: &mut Registry, data_dir: &std::path::Path, cert: &std::path::Path) {
        let (cpu, cpus, mem_used, mem_total, load1) = {
            let mut sys = lock(&self.system);
            sys.refresh_cpu_usage();
            sys.refresh_memory();
            let load = sysinfo::System::load_average().one;
            (
                f64::from(sys.global_cpu_usage()) / 100.0,
                sys.cpus().len() as u64,
                sys.used_memory(),
                sys.total_memory(),
                load,
            )
        };
        let f = |v: f64| {
            let g: Gauge<f64, AtomicU64> = Gauge::default();
            g.set(v);
            g
        };
        let u = |v: u64| {
            let g: Gauge<u64, AtomicU64> = Gauge::default();
            g.set(v);
            g
        };
        reg.register(
            "node_cpu_usage_ratio",
            "Share of all CPUs busy since the previous scrape (0 on the first)",
            f(cpu),
        );
        reg.register("node_cpus", "CPUs of this host", u(cpus));
        reg.register("node_load1", "One-minute load average", f(load1));
        reg.register("node_memory_used_bytes", "Memory in use on this host", u(mem_used));
        reg.register("node_memory_total_bytes", "Memory of this host", u(mem_total));
        let disks = sysinfo::Disks::new_with_refreshed_list();
        let dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
        let disk = disks
            .list()
            .iter()
            .filter(|d| dir.starts_with(d.mount_point()))
            .max_by_key(|d| d.mount_point().as_os_str().len())
            .map(|d| (d.available_space(), d.total_space()));
        let (avail, total) = disk.unwrap_or((0, 0));
        reg.register(
            "node_disk_available_bytes",
            "Free space on the disk holding the agent's data directory",
            u(avail),
        );
        reg.register("node_disk_total_bytes", "Size of the disk holding the agent's data directory", u(total));
        let expiry: Family<CertificateLabel, Gauge> = Family::default();
        if let Some(t) = not_after(cert) {
            let at = t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| int(d.as_secs()));
            expiry.get_or_create(&CertificateLabel { certificate: "node" }).set(at);
        }
        reg.register(
            "certificate_expiry_timestamp_seconds",
            "When this node's certificate expires (Unix seconds)",
            expiry,
        );
    }
}

/// The expiry of the first certificate in a PEM file, if it can be read.
fn not_after(path: &std::path::Path) -> Option<SystemTime> {
    let pem = std::fs::read_to_string(path).ok()?;
    let der = berqenas_pki::first_cert_der(&pem).ok()?;
    berqenas_pki::validity(&der).ok().map(|(_, not_after)| not_after)
}

/// Serves `GET /metrics` on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, data_dir: PathBuf, cert: PathBuf) -> std::io::Result<()> {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (data_dir, cert) = (data_dir.clone(), cert.clone());
            async move {
                // sysinfo reads /proc and the disks: off the async threads.
                let rendered = tokio::task::spawn_blocking(move || METRICS.render(&data_dir, &cert)).await;
                match rendered {
                    Ok(Ok(text)) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
                    _ => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode the metrics").into_response(),
                }
            }
        }),
    );
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_tenant_samples_name_the_tenant_and_nothing_else() {
        let m = AgentMetrics::new();
        m.backups([("acme".to_string(), Some(1_795_000_000)), ("globex".to_string(), None)].into());
        m.desired(12);
        m.pass("postgres", Duration::from_millis(30), 1);
        let sample = TenantSample {
            name: "acme".into(),
            ready: true,
            db_bytes: Some(4096),
            quota_exceeded: Some(false),
            db_sessions: Some(3),
            ..Default::default()
        };
        m.applied(10, vec![sample]);
        m.desired(12);
        let text = m.render(std::path::Path::new("/"), std::path::Path::new("/nonexistent")).expect("encodes");
        assert!(text.contains("berqenas_tenant_db_bytes{tenant=\"acme\"} 4096"), "{text}");
        assert!(text.contains("berqenas_tenant_db_sessions{tenant=\"acme\"} 3"), "{text}");
        assert!(text.contains("berqenas_agent_revision_lag 2"), "{text}");
        assert!(text.contains("berqenas_backup_last_success_timestamp_seconds{tenant=\"acme\"} 1795000000"), "{text}");
        assert!(!text.contains("timestamp_seconds{tenant=\"globex\"}"), "no backup yet, no sample: {text}");
        assert!(text.contains("berqenas_agent_reconcile_failures_total{driver=\"postgres\"} 1"), "{text}");
        assert!(!text.contains("tenant_vpn_rx_bytes_total{"), "no gateway part measured, no VPN sample: {text}");
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
    }
}
