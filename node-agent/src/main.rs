//! `berqenas-node-agent`: `join` a fleet with a one-time token, then `run` to keep this host
//! matching its desired state; `plan` shows the next pass; `backup` backs a tenant up or restores
//! it by hand.

use anyhow::Context;
use berqenas_node_agent::assignment::GatewayTenant;
use berqenas_node_agent::backup;
use berqenas_node_agent::config::{AgentConfig, DriverConfig};
use berqenas_node_agent::driver::{DirDriver, Driver, NoneDriver};
use clap::{Parser, Subcommand};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "berqenas-node-agent", version, about = "Berqenas node agent")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant, reason = "parsed once at start; boxing clap args buys nothing")]
enum Cmd {
    /// Join the fleet: make the node key here, send a CSR with the token, store the certificate.
    Join {
        /// https://HOST:PORT of a coordinator's node listener.
        #[arg(long)]
        coordinator: String,
        #[arg(long, env = "BERQENAS_JOIN_TOKEN", hide_env_values = true)]
        token: String,
        /// sha256:<hex> fingerprint of the cluster CA, as printed by `node token create`.
        #[arg(long)]
        ca_pin: String,
        #[arg(long, value_delimiter = ',', required = true)]
        roles: Vec<String>,
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
        /// Address other hosts reach this node at (default: the local address facing the coordinator).
        #[arg(long)]
        address: Option<String>,
        #[arg(long)]
        data_dir: PathBuf,
        /// Driver to run with: `postgres` or `mssql` (need --driver-url), `dir` (needs --driver-path) or `none`.
        #[arg(long, default_value = "none")]
        driver: String,
        #[arg(long)]
        driver_path: Option<PathBuf>,
        /// Superuser URL of this node's PostgreSQL for `--driver postgres`; ADO connection string of
        /// this node's SQL Server for `--driver mssql`.
        #[arg(long, env = "BERQENAS_DRIVER_URL", hide_env_values = true)]
        driver_url: Option<String>,
        /// pgBouncer on this host: the directory where the agent writes its pools, auth file and
        /// hba file (owned by pgBouncer's user). Needs --pgbouncer-pidfile.
        #[arg(long, requires = "pgbouncer_pidfile")]
        pgbouncer_dir: Option<PathBuf>,
        /// pgBouncer's pidfile, to reload it after a change.
        #[arg(long, requires = "pgbouncer_dir")]
        pgbouncer_pidfile: Option<PathBuf>,
        /// The port pgBouncer listens on; the agent limits connections per source address to it.
        #[arg(long, default_value_t = 6432, requires = "pgbouncer_dir")]
        pgbouncer_port: u16,
        /// Most connections one source address may hold open to pgBouncer (an nftables rule the
        /// agent keeps; needs root and nft). 0 turns the limit off, leaving pgBouncer's node-wide
        /// `max_client_conn` to anyone who opens enough idle sockets.
        #[arg(long, default_value_t = 32, requires = "pgbouncer_dir")]
        pgbouncer_max_per_source: u32,
        /// Reconcile at least this often (drift repair), e.g. 30s.
        #[arg(long, default_value = "30s")]
        resync_interval: String,
        /// Most tenants per role this node takes (default 500).
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        max_tenants: u32,
        /// Gateway role: the IPv4 address the public reaches this gateway at (WireGuard endpoints,
        /// exposures). Needs --public-ports.
        #[arg(long, requires = "public_ports")]
        public_address: Option<std::net::Ipv4Addr>,
        /// Gateway role: the public ports exposures may be given, e.g. 15000-15999. Needs
        /// --public-address.
        #[arg(long, requires = "public_address")]
        public_ports: Option<berqenas_common::net::PortRange>,
        /// Gateway role: a network no tenant device may reach through this gateway whatever its
        /// tenant's rules allow (the operator's management or internal networks), e.g.
        /// 192.0.2.0/24. Repeatable; kept in agent.toml (`protected_networks`).
        #[arg(long = "protected-network", requires = "public_address")]
        protected_networks: Vec<berqenas_common::net::Ipv4Cidr>,
        /// Db role on PostgreSQL: serve the realtime ingest (devices publish events with their
        /// certificates) and the subscribers' Server-Sent Events on this address, e.g.
        /// 0.0.0.0:7443; advertised to the coordinators at join. Kept in agent.toml (`[realtime]`).
        #[arg(long)]
        realtime_listen: Option<std::net::SocketAddr>,
    },
    /// Keep this host matching its desired state.
    Run {
        #[arg(long)]
        config: PathBuf,
        /// Serve Prometheus metrics (`GET /metrics`, plain HTTP, no authentication) on this
        /// address instead of agent.toml's `metrics_listen` (default 127.0.0.1:9464).
        #[arg(long)]
        metrics_listen: Option<std::net::SocketAddr>,
    },
    /// Back up, list or restore one tenant of this db node by hand, without a coordinator
    /// (disaster recovery): the bucket from `[backup]` of agent.toml, the tenant's data key from
    /// --key-file (`{"id": …, "key": "<64 hex>"}`, mode 0600).
    Backup {
        #[command(subcommand)]
        op: BackupCmd,
    },
    /// Print what the next pass would change on this host (SQL with secrets left out, files),
    /// changing nothing: asks a coordinator for the desired state now, observes, plans. Exits 0
    /// when the host is converged, 2 when it is not, 1 on error.
    Plan {
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the shell completion script (bash, zsh, fish, powershell, elvish).
    Completions(berqenas_common::manual::CompletionsArgs),
    /// Print the man page, or write every page (one per subcommand) with --dir.
    Man(berqenas_common::manual::ManArgs),
}

#[derive(Debug, Subcommand)]
enum BackupCmd {
    /// Back the tenant up now; prints its catalog entry as one JSON line.
    Run {
        #[command(flatten)]
        tenant: BackupTenant,
    },
    /// The tenant's objects in the bucket, one key a line.
    List {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        tenant: String,
    },
    /// Restore an object into a new schema beside the live one (--clone NAME) or over the live
    /// one (--overwrite-keep NAME: the live schema is kept under NAME). NAME is
    /// tenant_<tenant>_<suffix>. The object is verified whole before anything changes.
    Restore {
        #[command(flatten)]
        tenant: BackupTenant,
        /// The object's key, as `run` printed it.
        #[arg(long)]
        object: String,
        /// The object's SHA-256, as `run` printed it.
        #[arg(long)]
        sha256: String,
        #[arg(long, conflicts_with = "overwrite_keep", required_unless_present = "overwrite_keep")]
        clone: Option<String>,
        #[arg(long)]
        overwrite_keep: Option<String>,
    },
}

/// The tenant `backup run` and `backup restore` work on: where, which, and its data key.
#[derive(Debug, clap::Args)]
struct BackupTenant {
    #[arg(long)]
    config: PathBuf,
    #[arg(long)]
    tenant: String,
    #[arg(long)]
    key_file: PathBuf,
    /// The tenant has its own database (database isolation).
    #[arg(long)]
    own_database: bool,
}

impl BackupTenant {
    /// The bucket, the tenant's database and its data key.
    fn open(&self) -> anyhow::Result<(backup::store::Store, backup::Source, backup::format::DataKey)> {
        use backup::manual;
        let cfg = AgentConfig::load(&self.config)?;
        let key = manual::load_key(&self.key_file)?;
        let (store, source) = manual::open(&cfg, &self.tenant, self.own_database)?;
        Ok((store, source, key))
    }
}

/// `backup run|list|restore`.
async fn backup(op: BackupCmd) -> anyhow::Result<ExitCode> {
    use berqenas_node_agent::backup::{manual, pg::Mode};
    match op {
        BackupCmd::Run { tenant } => {
            let (store, source, key) = tenant.open()?;
            let done = manual::run(&store, &source, &key).await?;
            println!("{}", manual::entry_json(&done));
        }
        BackupCmd::List { config, tenant } => {
            let cfg = AgentConfig::load(&config)?;
            let (store, source) = manual::open(&cfg, &tenant, false)?;
            for key in store.list(&format!("tenants/{}/", source.tenant)).await? {
                println!("{key}");
            }
        }
        BackupCmd::Restore { tenant, object, sha256, clone, overwrite_keep } => {
            let (store, source, key) = tenant.open()?;
            let mode = match (clone, overwrite_keep) {
                (Some(schema), None) => Mode::Clone { schema },
                (None, Some(keep)) => Mode::Overwrite { keep },
                _ => anyhow::bail!("give --clone NAME or --overwrite-keep NAME"),
            };
            let restored = manual::restore(&store, &source, &key, &object, &sha256, &mode).await?;
            println!("{}", serde_json::json!({ "schema": restored.schema, "kept": restored.kept }));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The gateway driver for a node with gateway settings (`--public-address`); a `gateway_dir`
/// (tests) records gateway assignments as files instead.
fn gateway_for(cfg: &AgentConfig, gateway_dir: &Option<PathBuf>) -> Option<Box<dyn Driver<GatewayTenant>>> {
    if let Some(path) = gateway_dir {
        return Some(Box::new(DirDriver { path: path.clone() }));
    }
    cfg.gateway.clone().map(|node| {
        Box::new(berqenas_node_agent::gateway::GatewayDriver::new(node, &cfg.data_dir))
            as Box<dyn Driver<GatewayTenant>>
    })
}

/// The driver `agent.toml` names.
fn driver_for(cfg: &AgentConfig) -> Box<dyn Driver> {
    match &cfg.driver {
        // A gateway node without a database engine: the gateway driver, db parts reported ready.
        DriverConfig::None if cfg.gateway.is_some() => {
            Box::new(berqenas_node_agent::driver::ByRole { db: Box::new(NoneDriver), gateway: gateway_for(cfg, &None) })
        }
        DriverConfig::None => Box::new(NoneDriver),
        DriverConfig::Dir { path } => Box::new(DirDriver { path: path.clone() }),
        DriverConfig::Postgres { url, gateway_dir, pgbouncer, limits } => {
            Box::new(berqenas_node_agent::driver::ByRole {
                db: Box::new(berqenas_node_agent::db::postgres::PostgresDriver::new(
                    url.clone(),
                    pgbouncer.clone(),
                    cfg.resync_interval.min(FULL_PASS_INTERVAL),
                    (*limits).into(),
                )),
                gateway: gateway_for(cfg, gateway_dir),
            })
        }
        DriverConfig::Mssql { url, gateway_dir } => Box::new(berqenas_node_agent::driver::ByRole {
            db: Box::new(berqenas_node_agent::db::mssql::MssqlDriver { url: url.clone() }),
            gateway: gateway_for(cfg, gateway_dir),
        }),
    }
}

/// Starts the realtime port when agent.toml has `[realtime]` (PostgreSQL driver only): binds
/// it now, so a taken port fails the start rather than a background task.
async fn start_realtime(cfg: &AgentConfig) -> anyhow::Result<Option<berqenas_node_agent::realtime::Realtime>> {
    let Some(rc) = cfg.realtime.clone() else { return Ok(None) };
    let DriverConfig::Postgres { url, .. } = &cfg.driver else {
        anyhow::bail!("[realtime] needs the postgres driver");
    };
    let rt = berqenas_node_agent::realtime::Realtime::new(rc.clone(), url)?;
    let listener = tokio::net::TcpListener::bind(rc.listen).await.with_context(|| format!("bind {}", rc.listen))?;
    let (ca, cert, key) = (cfg.ca_path(), cfg.cert_path(), cfg.key_path());
    let tls: berqenas_node_agent::realtime::listener::TlsSource = std::sync::Arc::new(move || {
        let read = |p: &std::path::Path| std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()));
        berqenas_node_agent::realtime::listener::server_config(&read(&ca)?, &read(&cert)?, &read(&key)?)
    });
    tls().context("the realtime TLS configuration")?;
    let server = rt.clone();
    tokio::spawn(async move {
        if let Err(e) = server.serve(listener, tls).await {
            tracing::error!(error = %format!("{e:#}"), "the realtime listener stopped");
        }
    });
    Ok(Some(rt))
}

/// Serves `/metrics` on `metrics_listen`. A port that cannot be bound is logged, not fatal:
/// reconciling matters more than being watched (Prometheus's `up` shows the gap).
async fn start_metrics(cfg: &AgentConfig) {
    let addr = cfg.metrics_listen;
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot serve metrics; the agent runs without them");
            return;
        }
    };
    tracing::info!(%addr, "serving metrics on /metrics");
    let (data_dir, cert) = (cfg.data_dir.clone(), cfg.cert_path());
    tokio::spawn(async move {
        if let Err(e) = berqenas_node_agent::metrics::serve(listener, data_dir, cert).await {
            tracing::error!(error = %e, "the metrics listener stopped");
        }
    });
}

/// `plan`: exit code 0 when converged, 2 when the next pass would change something.
async fn plan(config: &std::path::Path) -> anyhow::Result<ExitCode> {
    let cfg = AgentConfig::load(config)?;
    let mut driver = driver_for(&cfg);
    let (revision, desired) = berqenas_node_agent::runtime::fetch_desired(&cfg).await?;
    let changes = driver.preview(&desired).await.map_err(|e| anyhow::anyhow!(e)).context("observing this host")?;
    println!("desired state: revision {revision}, {} tenant(s), driver {}", desired.len(), driver.name());
    if changes.is_empty() {
        println!("converged: the next pass changes nothing");
        return Ok(ExitCode::SUCCESS);
    }
    println!("the next pass would change:");
    for change in &changes {
        println!("  {change}");
    }
    println!("{} change(s) planned; nothing was changed", changes.len());
    Ok(ExitCode::from(2))
}

/// The database driver observes every tenant and measures disk use when its last full pass is
/// older than this (or than the resync interval, if shorter); passes in between, e.g. during a
/// burst of creates, converge only the tenants that changed.
const FULL_PASS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

fn local_address_towards(addr: &str) -> Option<String> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect(addr).ok()?;
    Some(socket.local_addr().ok()?.ip().to_string())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Cmd::Join {
            coordinator,
            token,
            ca_pin,
            roles,
            labels,
            address,
            data_dir,
            driver,
            driver_path,
            driver_url,
            pgbouncer_dir,
            pgbouncer_pidfile,
            pgbouncer_port,
            pgbouncer_max_per_source,
            resync_interval,
            max_tenants,
            public_address,
            public_ports,
            protected_networks,
            realtime_listen,
        } => {
            let mut label_map = HashMap::new();
            for l in labels {
                let (k, v) = l.split_once('=').with_context(|| format!("label {l:?} must be KEY=VALUE"))?;
                label_map.insert(k.to_string(), v.to_string());
            }
            let driver = match driver.as_str() {
                "none" => DriverConfig::None,
                "dir" => DriverConfig::Dir { path: driver_path.context("--driver dir needs --driver-path")? },
                "postgres" => DriverConfig::Postgres {
                    url: driver_url.context("--driver postgres needs --driver-url")?,
                    gateway_dir: driver_path,
                    pgbouncer: pgbouncer_dir.zip(pgbouncer_pidfile).map(|(dir, pidfile)| {
                        berqenas_node_agent::config::PgBouncerConfig {
                            dir,
                            pidfile,
                            port: pgbouncer_port,
                            max_per_source: pgbouncer_max_per_source,
                        }
                    }),
                    limits: Default::default(),
                },
                "mssql" => DriverConfig::Mssql {
                    url: driver_url.context("--driver mssql needs --driver-url")?,
                    gateway_dir: driver_path,
                },
                other => anyhow::bail!("unknown driver {other:?}; use postgres, mssql, dir or none"),
            };
            let addr = berqenas_node_agent::join::coordinator_addr(&coordinator)?;
            let address = address.or_else(|| local_address_towards(&addr)).unwrap_or_else(|| "127.0.0.1".into());
            let cfg = berqenas_node_agent::join::join(berqenas_node_agent::join::JoinArgs {
                coordinator,
                token,
                ca_pin,
                roles,
                labels: label_map,
                address,
                data_dir: data_dir.clone(),
                driver,
                resync_interval: humantime::parse_duration(&resync_interval).context("--resync-interval")?,
                max_tenants,
                gateway: public_address.zip(public_ports).map(|(public_address, public_ports)| {
                    berqenas_node_agent::config::GatewayConfig { public_address, public_ports, protected_networks }
                }),
                realtime: realtime_listen.map(berqenas_node_agent::config::RealtimeConfig::new),
            })
            .await?;
            println!(
                "joined as node {}; start it with: berqenas-node-agent run --config {}",
                cfg.node_id,
                data_dir.join("agent.toml").display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run { config, metrics_listen } => {
            let mut cfg = AgentConfig::load(&config)?;
            if let Some(addr) = metrics_listen {
                cfg.metrics_listen = addr;
            }
            start_metrics(&cfg).await;
            let driver = driver_for(&cfg);
            let realtime = start_realtime(&cfg).await?;
            berqenas_node_agent::runtime::run(cfg, driver, realtime, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Plan { config } => plan(&config).await,
        Cmd::Backup { op } => backup(op).await,
        Cmd::Completions(a) => {
            berqenas_common::manual::completions(<Cli as clap::CommandFactory>::command(), &a, &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Man(a) => {
            berqenas_common::manual::man(<Cli as clap::CommandFactory>::command(), &a, &mut std::io::stdout())
                .context("write the man pages")?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
