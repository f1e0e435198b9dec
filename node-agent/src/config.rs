//! `agent.toml`: written by `join`, read by `run`. Paths of the node's key and certificates
//! are derived from `data_dir`.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub node_id: u64,
    pub data_dir: PathBuf,
    /// host:port of coordinators' node listeners; the agent also learns the current list from them.
    pub coordinators: Vec<String>,
    /// Reconcile at least this often even when nothing changed (drift repair).
    #[serde(default = "default_resync", with = "humantime_serde_compat")]
    pub resync_interval: Duration,
    #[serde(default)]
    pub driver: DriverConfig,
    /// Most tenants per role this node takes; reported with its capacity.
    #[serde(default = "default_max_tenants")]
    pub max_tenants: u32,
    /// The gateway role's settings, given at join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayConfig>,
    /// The db role's realtime ingest and subscriber endpoint (`--realtime-listen`); PostgreSQL
    /// nodes only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realtime: Option<RealtimeConfig>,
    /// The db role's backup bucket (`[backup]`: endpoint, region, bucket, path style,
    /// credentials); PostgreSQL nodes only. Read by `backup::store::Store::new`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<crate::backup::store::S3Config>,
    /// Where `GET /metrics` (Prometheus, plain HTTP, no authentication) is served: loopback by
    /// default, so only the host itself can read it; put it on an address Prometheus reaches
    /// only through a firewall or a tunnel (`run --metrics-listen` overrides it).
    #[serde(default = "default_metrics_listen")]
    pub metrics_listen: std::net::SocketAddr,
}

pub fn default_metrics_listen() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 9464))
}

/// `[realtime]`: where devices publish and subscribers read (one TLS port for both), and how
/// long a subscriber may stay away and still resume exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealtimeConfig {
    pub listen: std::net::SocketAddr,
    /// Committed rows are kept this long for subscribers that resume from a cursor (in memory
    /// and, across an agent restart, in PostgreSQL's WAL through a replication slot).
    #[serde(default = "default_retention", with = "humantime_serde_compat")]
    pub retention: Duration,
    /// At most this many recent rows per tenant are kept for resuming, whatever their age.
    #[serde(default = "default_window_rows")]
    pub window_rows: usize,
}

impl RealtimeConfig {
    pub fn new(listen: std::net::SocketAddr) -> Self {
        Self { listen, retention: default_retention(), window_rows: default_window_rows() }
    }
}

fn default_retention() -> Duration {
    Duration::from_secs(600)
}

fn default_window_rows() -> usize {
    200_000
}

/// What a gateway states at join (`--public-address`, `--public-ports`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// The address the public reaches this gateway at: WireGuard endpoints and exposures.
    pub public_address: std::net::Ipv4Addr,
    /// The public ports exposures may be given.
    pub public_ports: berqenas_common::net::PortRange,
    /// Networks no tenant device may reach through this gateway, whatever its tenant's rules
    /// allow: the operator's management and internal networks (`--protected-network`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protected_networks: Vec<berqenas_common::net::Ipv4Cidr>,
}

fn default_max_tenants() -> u32 {
    500
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum DriverConfig {
    /// Materialises each assignment as a file under `path` (the test and dry-run driver).
    Dir { path: PathBuf },
    /// The `db` role on PostgreSQL: `url` is a superuser connection to the node's own server
    /// (it stays in this 0600 file and never leaves the node).
    Postgres {
        url: String,
        /// Where to record gateway assignments until the WireGuard/nftables driver exists.
        #[serde(default)]
        gateway_dir: Option<PathBuf>,
        /// pgBouncer on this host, when tenants connect through it.
        #[serde(default)]
        pgbouncer: Option<PgBouncerConfig>,
        /// Hard limits on tenant sessions (the session guard enforces them; tenants cannot
        /// lift them with `SET`).
        #[serde(default)]
        limits: SessionLimits,
    },
    /// The `db` role on SQL Server: `url` is an ADO connection string of a login that may create
    /// databases and logins (it stays in this 0600 file and never leaves the node). Join such a
    /// node with the label `engines=mssql` so placement sends it SQL Server tenants.
    Mssql {
        url: String,
        #[serde(default)]
        gateway_dir: Option<PathBuf>,
    },
    /// Applies nothing; reports every tenant ready. For control-plane tests only.
    #[default]
    None,
}

/// pgBouncer on the database host. The agent owns `berqenas-pools.ini`, `berqenas-users.txt`
/// and `berqenas-hba.conf` in `dir` (owned by pgBouncer's user) and reloads pgBouncer through
/// `pidfile`. `pgbouncer.ini` sets `auth_type = hba`, `auth_hba_file` and `auth_file` to those
/// files and ends with `%include …/berqenas-pools.ini` (see `deploy/pgbouncer.ini`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgBouncerConfig {
    pub dir: PathBuf,
    pub pidfile: PathBuf,
    /// The port pgBouncer listens on (its `listen_port`).
    #[serde(default = "default_pgbouncer_port")]
    pub port: u16,
    /// Most connections one source address may hold open to it at once (an nftables rule the
    /// agent keeps), so half-open sockets from one place cannot use up `max_client_conn`.
    /// 0: no limit (and no nftables table).
    #[serde(default = "default_per_source")]
    pub max_per_source: u32,
}

fn default_pgbouncer_port() -> u16 {
    6432
}

fn default_per_source() -> u32 {
    32
}

/// `[driver.limits]`: the platform's limits on tenant sessions of a PostgreSQL node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionLimits {
    /// A statement running longer is cancelled.
    #[serde(with = "humantime_serde_compat")]
    pub statement: Duration,
    /// A session idle in a transaction longer (or stuck writing to a client that does not read)
    /// is ended.
    #[serde(with = "humantime_serde_compat")]
    pub idle_in_transaction: Duration,
    /// A transaction open longer is ended.
    #[serde(with = "humantime_serde_compat")]
    pub transaction: Duration,
    /// A session holding an exclusive lock on a relation longer is ended.
    #[serde(with = "humantime_serde_compat")]
    pub exclusive_lock: Duration,
}

impl SessionLimits {
    /// Each limit between 1 s and a day: a zero would end every session at once, and the guard
    /// is pointless past a day.
    pub fn check(&self) -> anyhow::Result<()> {
        for (name, d) in [
            ("statement", self.statement),
            ("idle_in_transaction", self.idle_in_transaction),
            ("transaction", self.transaction),
            ("exclusive_lock", self.exclusive_lock),
        ] {
            if d < Duration::from_secs(1) || d > Duration::from_secs(86_400) {
                anyhow::bail!("{name} = {} is outside 1s..24h", humantime::format_duration(d));
            }
        }
        Ok(())
    }
}

impl Default for SessionLimits {
    fn default() -> Self {
        let d = crate::db::postgres::guard::Limits::default();
        Self {
            statement: d.statement,
            idle_in_transaction: d.idle_in_transaction,
            transaction: d.transaction,
            exclusive_lock: d.exclusive_lock,
        }
    }
}

impl From<SessionLimits> for crate::db::postgres::guard::Limits {
    fn from(l: SessionLimits) -> Self {
        Self {
            statement: l.statement,
            idle_in_transaction: l.idle_in_transaction,
            transaction: l.transaction,
            exclusive_lock: l.exclusive_lock,
        }
    }
}

fn default_resync() -> Duration {
    Duration::from_secs(30)
}

mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let raw = String::deserialize(d)?;
        humantime::parse_duration(&raw).map_err(serde::de::Error::custom)
    }
}

impl AgentConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let cfg: Self = toml::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
        if cfg.coordinators.is_empty() {
            anyhow::bail!("{}: at least one coordinator is required", path.display());
        }
        if let DriverConfig::Postgres { limits, .. } = &cfg.driver {
            limits.check().with_context(|| format!("{}: [driver.limits]", path.display()))?;
        }
        Ok(cfg)
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        Ok(crate::host::files::write_atomic(path, toml::to_string_pretty(self)?.as_bytes(), 0o600)?)
    }

    pub fn key_path(&self) -> PathBuf {
        self.data_dir.join("node.key")
    }

    pub fn cert_path(&self) -> PathBuf {
        self.data_dir.join("node.pem")
    }

    pub fn ca_path(&self) -> PathBuf {
        self.data_dir.join("ca.pem")
    }

    pub fn applied_path(&self) -> PathBuf {
        self.data_dir.join("applied.json")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realtime_settings_round_trip_with_defaults() {
        let text = "node_id = 1\ndata_dir = \"/d\"\ncoordinators = [\"a:1\"]\n[realtime]\nlisten = \"0.0.0.0:7443\"\n";
        let cfg: AgentConfig = toml::from_str(text).expect("parse");
        let rt = cfg.realtime.clone().expect("realtime");
        assert_eq!(rt, RealtimeConfig::new("0.0.0.0:7443".parse().expect("addr")));
        assert_eq!(rt.retention, Duration::from_secs(600));
        let again: AgentConfig = toml::from_str(&toml::to_string_pretty(&cfg).expect("ser")).expect("parse");
        assert_eq!(again, cfg);
    }

    #[test]
    fn backup_bucket_settings_round_trip_and_hide_the_secret() {
        let text = "node_id = 1\ndata_dir = \"/d\"\ncoordinators = [\"a:1\"]\n[backup]\n\
                    endpoint = \"https://s3.example.net\"\nregion = \"eu-central-1\"\nbucket = \"bq\"\n\
                    path_style = true\naccess_key_id = \"AK\"\nsecret_access_key = \"SECRET-9\"\n";
        let cfg: AgentConfig = toml::from_str(text).expect("parse");
        let b = cfg.backup.clone().expect("backup");
        assert!(b.path_style && b.bucket == "bq" && b.secret_access_key.as_deref() == Some("SECRET-9"));
        assert!(!format!("{cfg:?}").contains("SECRET-9"), "Debug never shows the secret");
        let again: AgentConfig = toml::from_str(&toml::to_string_pretty(&cfg).expect("ser")).expect("parse");
        assert_eq!(again, cfg);
    }

    #[test]
    fn session_limits_out_of_range_are_refused_with_their_name() {
        assert!(SessionLimits::default().check().is_ok());
        let zero = SessionLimits { statement: Duration::ZERO, ..SessionLimits::default() };
        let err = zero.check().expect_err("zero").to_string();
        assert!(err.contains("statement") && err.contains("1s..24h"), "{err}");
        let huge = SessionLimits { exclusive_lock: Duration::from_secs(90_000), ..SessionLimits::default() };
        assert!(huge.check().is_err());
    }
}
