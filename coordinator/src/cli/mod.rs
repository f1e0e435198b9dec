//! The admin CLI: clap definitions and the subcommands that call the REST API (`client`) and
//! print tables or JSON. `init` and `serve` run the coordinator itself.
//! tidy: long because it is the CLI's table of contents: every clap subcommand and its
//! arguments in one place, each handler a few lines that call `client` and print.

mod backup;
mod billing;
pub mod client;
mod commands;
mod devicetoken;
mod gateway;
pub mod output;
mod snapshot;
mod usage;
mod user;

use crate::api::dto::UpdateTenantBody;
use crate::state::allocation::VpnPool;
use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use client::Client;
use commands::{apikey, audit, cluster, node, tenant};
use output::{say, Output};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Parser)]
#[command(name = "berqenas-coordinator", version, about = "Berqenas coordinator and admin CLI")]
pub struct Cli {
    /// REST endpoint of any coordinator.
    #[arg(long, global = true, env = "BERQENAS_ENDPOINT", default_value = "http://127.0.0.1:7201")]
    pub endpoint: String,
    /// API key (bqk_…).
    #[arg(long, global = true, env = "BERQENAS_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Answer reads from the contacted coordinator's own state, even if it lags the leader.
    #[arg(long, global = true)]
    pub stale: bool,
    /// CA certificate (PEM) to trust for an https endpoint: the cluster CA (DATA_DIR/ca.pem) or
    /// the operator's own.
    #[arg(long, global = true, env = "BERQENAS_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bootstrap a new single-voter cluster in a data dir (cluster CA, first admin key).
    Init(InitArgs),
    /// Run a coordinator node.
    Serve(Box<ServeArgs>),
    /// Break-glass: mint a new admin key from this host's coordinator data directory (needs write
    /// access to it: root or the service user). Works whether or not the coordinator is running.
    RecoverAdmin(RecoverAdminArgs),
    #[command(subcommand)]
    Tenant(TenantCmd),
    #[command(subcommand)]
    Apikey(ApiKeyCmd),
    #[command(subcommand)]
    Audit(AuditCmd),
    #[command(subcommand)]
    Cluster(ClusterCmd),
    #[command(subcommand)]
    Node(NodeCmd),
    /// Devices: registered by their WireGuard key, or enrolled with a device token.
    #[command(subcommand)]
    Device(gateway::DeviceCmd),
    /// Public ports on the tenant gateway that reach a device's port.
    #[command(subcommand)]
    Expose(gateway::ExposeCmd),
    /// A tenant's firewall rules and blocked domains.
    #[command(subcommand)]
    Firewall(gateway::FirewallCmd),
    /// A tenant's usage ledger: disk, connections, events, VPN traffic, API calls per day.
    #[command(subcommand)]
    Usage(usage::UsageCmd),
    /// Panel users (platform admins and tenant users); passwords are made by the coordinator and
    /// printed once.
    #[command(subcommand)]
    User(user::UserCmd),
    /// Invoices: per tenant and month, priced by the tier plans of `serve --billing-plans`.
    #[command(subcommand)]
    Billing(billing::BillingCmd),
    /// A tenant's backups: run one now, list them, restore one by time.
    #[command(subcommand)]
    Backup(backup::BackupCmd),
    /// Print the shell completion script (bash, zsh, fish, powershell, elvish).
    Completions(berqenas_common::manual::CompletionsArgs),
    /// Print the man page, or write every page (one per subcommand) with --dir.
    Man(berqenas_common::manual::ManArgs),
    /// Backups of the coordinators' own data: save a sealed snapshot from a running cluster,
    /// restore one offline into a new data directory.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCmd),
}

#[derive(Debug, Args)]
pub struct NodeAddrs {
    /// This coordinator's node id (never reused in a cluster).
    #[arg(long)]
    pub id: Option<u64>,
    #[arg(long, default_value = "127.0.0.1:7101")]
    pub raft_listen: SocketAddr,
    /// Address peers use to reach the Raft listener (defaults to --raft-listen).
    #[arg(long)]
    pub raft_advertise: Option<String>,
    #[arg(long, default_value = "127.0.0.1:7201")]
    pub api_listen: SocketAddr,
    /// Address clients use to reach the API (defaults to --api-listen).
    #[arg(long)]
    pub api_advertise: Option<String>,
    /// mTLS listener for node agents.
    #[arg(long, default_value = "127.0.0.1:7301")]
    pub node_listen: SocketAddr,
    /// Address node agents use to reach it (defaults to --node-listen).
    #[arg(long)]
    pub node_advertise: Option<String>,
}

impl NodeAddrs {
    fn config(&self, id: u64) -> crate::server::NodeConfig {
        crate::server::NodeConfig {
            id,
            raft_listen: self.raft_listen,
            raft_advertise: self.raft_advertise.clone().unwrap_or_else(|| self.raft_listen.to_string()),
            api_listen: self.api_listen,
            api_advertise: self.api_advertise.clone().unwrap_or_else(|| self.api_listen.to_string()),
            node_listen: self.node_listen,
            node_advertise: self.node_advertise.clone().unwrap_or_else(|| self.node_listen.to_string()),
        }
    }
}

#[derive(Debug, Args)]
pub struct InitArgs {
    #[arg(long)]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub addrs: NodeAddrs,
    /// IPv4 pool tenant VPN subnets are cut from (one /24 per tenant).
    #[arg(long, default_value = "10.50.0.0/16")]
    pub vpn_pool: String,
    /// How long a deleted tenant can be restored before purge.
    #[arg(long, default_value = "30d")]
    pub retention: String,
}

#[derive(Debug, Args)]
pub struct RecoverAdminArgs {
    /// The data directory of the coordinator on this host.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// How long to wait for a running coordinator to add the key before saying it is pending.
    #[arg(long, default_value = "15s")]
    pub wait: String,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[arg(long)]
    pub data_dir: PathBuf,
    /// For a node joining an existing cluster: its id and addresses (saved on first start).
    #[command(flatten)]
    pub addrs: NodeAddrs,
    /// For a new coordinator: https://HOST:PORT of a running coordinator's node listener to
    /// obtain this coordinator's certificate from (with --token and --ca-pin).
    #[arg(long, requires_all = ["token", "ca_pin"])]
    pub join: Option<String>,
    /// One-time token from `cluster token create --id N`.
    #[arg(long, env = "BERQENAS_COORDINATOR_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// sha256:<hex> of the cluster CA, as printed with the token.
    #[arg(long)]
    pub ca_pin: Option<String>,
    /// Serve the REST API over TLS: `auto` (default) uses plain HTTP only on a loopback address.
    #[arg(long, value_enum, default_value_t = ApiTls::Auto)]
    pub api_tls: ApiTls,
    /// The API's certificate chain (PEM); default: this coordinator's certificate from the cluster CA.
    #[arg(long, requires = "api_key_file")]
    pub api_cert: Option<PathBuf>,
    /// The API certificate's private key (PEM).
    #[arg(long, requires = "api_cert")]
    pub api_key_file: Option<PathBuf>,
    /// Take a Raft snapshot every this many log entries (and keep a fifth of them behind it).
    #[arg(long, default_value_t = crate::raft::DEFAULT_SNAPSHOT_LOGS, value_parser = clap::value_parser!(u64).range(10..))]
    pub snapshot_logs: u64,
    /// How often the leader looks for ephemeral devices offline past their time (1s to 1h); one
    /// is removed at most this long after its time is up.
    #[arg(long, default_value = "30s", value_parser = parse_expiry_interval)]
    pub expiry_interval: std::time::Duration,
    /// Rate limits, refusal audit window and listener timeouts.
    #[command(flatten)]
    pub limits: crate::admission::LimitArgs,
    /// Forwarding the audit trail to a SIEM.
    #[command(flatten)]
    pub siem: crate::siem::SiemArgs,
    /// The usage ledger: sampling, API-call batches, retention.
    #[command(flatten)]
    pub usage: crate::apicalls::UsageArgs,
    /// Price plans per tier (TOML; README "Billing"); checked at start. Without it, invoicing is refused.
    #[arg(long, value_name = "FILE")]
    pub billing_plans: Option<PathBuf>,
    /// The panel's white label (TOML: product_name, logo, primary_color, accent_color,
    /// support_url; README "Panel"); checked at start.
    #[arg(long, value_name = "FILE")]
    pub branding: Option<PathBuf>,
    /// How long a panel session lasts before its user signs in again (absolute, from sign-in).
    #[arg(long, default_value = "12h", value_parser = humantime::parse_duration)]
    pub session_ttl: std::time::Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ApiTls {
    Auto,
    On,
    Off,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Switch {
    Enabled,
    Disabled,
    True,
    False,
}

impl Switch {
    fn on(self) -> bool {
        matches!(self, Switch::Enabled | Switch::True)
    }
}

#[derive(Debug, Subcommand)]
pub enum TenantCmd {
    /// Create a tenant (one command = one customer).
    Create(CreateTenant),
    Get {
        name: String,
    },
    List {
        /// Only tenants in this status.
        #[arg(long, value_parser = ["provisioning", "active", "suspended", "deleting", "deleted-pending-purge", "quota-exceeded"])]
        status: Option<String>,
    },
    Update(UpdateTenant),
    /// Refuse logins and API access, keep data.
    Suspend {
        name: String,
    },
    Resume {
        name: String,
    },
    /// Mark for purge after the retention period; reversible with `restore`.
    Delete {
        name: String,
    },
    Restore {
        name: String,
    },
    /// Remove a deleted tenant for good (after retention, or with --force).
    Purge {
        name: String,
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
pub struct CreateTenant {
    #[arg(long)]
    pub name: String,
    #[command(flatten)]
    pub settings: TenantSettings,
    #[arg(long, value_parser = ["postgres", "mssql"])]
    pub db: Option<String>,
    #[arg(long, value_parser = ["schema", "database"])]
    pub isolation: Option<String>,
    /// Place alone on a node labelled dedicated=true.
    #[arg(long)]
    pub dedicated: bool,
    /// Only nodes with this label (repeatable): --node-selector region=ist
    #[arg(long = "node-selector", value_name = "KEY=VALUE")]
    pub node_selector: Vec<String>,
    /// Return only when the tenant is active; show progress while waiting.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits before failing with the tenant's reason.
    #[arg(long, default_value = "60s")]
    pub wait_timeout: String,
}

#[derive(Debug, Args)]
pub struct UpdateTenant {
    pub name: String,
    #[command(flatten)]
    pub settings: TenantSettings,
    #[command(flatten)]
    pub backup: backup::PolicySettings,
}

/// What `tenant create` and `tenant update` both set.
#[derive(Debug, Args)]
pub struct TenantSettings {
    /// Disk quota: 5GB, 500MB, 1TiB (tier default when absent).
    #[arg(long)]
    pub db_quota: Option<String>,
    #[arg(long, value_enum)]
    pub vpn: Option<Switch>,
    #[arg(long, value_enum)]
    pub public_api: Option<Switch>,
    /// Let the tenant's database user create tables (DDL) in its schema (default disabled).
    #[arg(long, value_enum)]
    pub ddl: Option<Switch>,
    #[arg(long, value_parser = ["free", "premium", "enterprise"])]
    pub tier: Option<String>,
    #[arg(long, value_parser = ["public", "vpn-only", "hybrid"])]
    pub access: Option<String>,
    #[arg(long)]
    pub connection_limit: Option<u32>,
    #[arg(long)]
    pub events_per_min: Option<u32>,
    /// Limit the tenant's VPN traffic on its gateway: 50mbit, 512kbit, 1gbit; 0 or none clears it.
    #[arg(long)]
    pub bandwidth: Option<String>,
    /// Whether the tenant's devices may reach each other through the gateway.
    #[arg(long, value_parser = ["allow", "deny"])]
    pub device_to_device: Option<String>,
}

impl TenantSettings {
    /// The settings as the API's update body (the create body takes the same fields).
    fn body(self) -> anyhow::Result<UpdateTenantBody> {
        Ok(UpdateTenantBody {
            tier: wire(self.tier)?,
            db_quota: self.db_quota,
            connection_limit: self.connection_limit,
            events_per_min: self.events_per_min,
            vpn_enabled: self.vpn.map(Switch::on),
            public_api: self.public_api.map(Switch::on),
            ddl_enabled: self.ddl.map(Switch::on),
            access_mode: wire(self.access)?,
            bandwidth: self.bandwidth,
            device_to_device: self.device_to_device.map(|v| v == "allow"),
            backup_interval_s: None,
            backup_keep: None,
            backup_days: None,
        })
    }
}

/// A value clap has already restricted to the API's names, as the API's type.
fn wire<T: serde::de::DeserializeOwned>(raw: Option<String>) -> anyhow::Result<Option<T>> {
    raw.map(|r| serde_json::from_value(Value::String(r.clone())).with_context(|| format!("unknown value {r:?}")))
        .transpose()
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCmd {
    Create {
        #[arg(long, value_parser = ["admin", "customer", "auditor"])]
        role: String,
        /// The tenant a customer key is scoped to.
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// Lifetime such as 30d; no expiry when absent.
        #[arg(long)]
        expires_in: Option<String>,
    },
    List,
    Revoke {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// One page of the trail (the newest entries unless --before/--after); when more remain,
    /// stderr says which flag fetches the next page.
    List {
        #[arg(long)]
        tenant: Option<String>,
        /// RFC 3339 time or an age such as 1h.
        #[arg(long)]
        since: Option<String>,
        /// Entries per page (default 1000, at most 100000).
        #[arg(long)]
        limit: Option<u32>,
        /// Only entries older than this sequence number (read backwards).
        #[arg(long)]
        before: Option<u64>,
        /// Only entries newer than this sequence number (read forwards, oldest first).
        #[arg(long)]
        after: Option<u64>,
    },
    /// Walk the hash chain; exits non-zero naming the first broken entry.
    Verify,
    Export {
        #[arg(long, value_parser = ["jsonl"], default_value = "jsonl")]
        format: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    Status,
    #[command(subcommand)]
    Token(ClusterTokenCmd),
    /// Add a running, uninitialized coordinator as a non-voting learner.
    AddLearner {
        #[arg(long)]
        id: u64,
        #[arg(long)]
        raft_addr: String,
        #[arg(long)]
        api_addr: String,
        /// host:port of its node-agent listener.
        #[arg(long)]
        node_addr: Option<String>,
    },
    /// Make a learner a voter.
    Promote {
        #[arg(long)]
        id: u64,
    },
    /// Remove a member; its id is retired for good.
    Remove {
        #[arg(long)]
        id: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterTokenCmd {
    /// A one-time token that lets a new coordinator with this id obtain its certificate.
    Create {
        #[arg(long)]
        id: u64,
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
    /// Coordinator join tokens: id, target coordinator id, created, expires, used or revoked.
    List,
    /// Revoke an unused coordinator join token by its id (as `cluster token list` shows it).
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum NodeCmd {
    List,
    /// One node: roles, public address and ports, WireGuard backend, conditions.
    Show {
        id: u64,
    },
    #[command(subcommand)]
    Token(NodeTokenCmd),
    /// Refuse the node's certificate from now on; it gets no desired state.
    Revoke {
        id: u64,
    },
    /// Keep the node's tenants but place no new ones on it.
    Cordon {
        id: u64,
    },
    Uncordon {
        id: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum NodeTokenCmd {
    /// A one-time token for `berqenas-node-agent join`.
    Create {
        /// gateway, db, or gateway,db
        #[arg(long, value_delimiter = ',', required = true, value_parser = ["gateway", "db"])]
        roles: Vec<String>,
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Labels for the node: --labels region=ist,dedicated=true
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
    },
}

fn parse_expiry_interval(raw: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(raw).map_err(|e| format!("{raw:?}: {e}"))?;
    if d < std::time::Duration::from_secs(1) || d > std::time::Duration::from_secs(3600) {
        return Err("must be between 1s and 1h".into());
    }
    Ok(d)
}

fn parse_selector(items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in items {
        let (k, v) = item.split_once('=').with_context(|| format!("label {item:?} must be KEY=VALUE"))?;
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// Runs a CLI command; `Ok` means exit code 0.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let out = cli.output;
    match cli.command {
        Command::Init(a) => init(a, out).await,
        Command::Serve(a) => serve(*a).await,
        Command::RecoverAdmin(a) => recover_admin(a, out).await,
        Command::Completions(a) => {
            berqenas_common::manual::completions(<Cli as clap::CommandFactory>::command(), &a, &mut std::io::stdout());
            Ok(())
        }
        Command::Man(a) => {
            berqenas_common::manual::man(<Cli as clap::CommandFactory>::command(), &a, &mut std::io::stdout())
                .context("write the man pages")?;
            Ok(())
        }
        Command::Backup(backup::BackupCmd::InitKey { data_dir, from }) => {
            backup::init_key(&data_dir, from.as_deref(), out)
        }
        Command::Snapshot(snapshot::SnapshotCmd::Restore(a)) => snapshot::restore(*a, out),
        command => {
            let ca = match &cli.ca_cert {
                Some(p) => Some(std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?),
                None => None,
            };
            let client = Client::new(&cli.endpoint, cli.api_key.as_deref(), cli.stale, ca.as_deref())?;
            api_command(&client, command, out).await
        }
    }
}

async fn init(a: InitArgs, out: Output) -> anyhow::Result<()> {
    let id = a.addrs.id.unwrap_or(1);
    let pool = VpnPool::parse(&a.vpn_pool).map_err(anyhow::Error::msg)?;
    let retention = humantime::parse_duration(&a.retention).context("--retention")?;
    let config = a.addrs.config(id);
    let (token, fingerprint) = crate::server::init(config.clone(), &a.data_dir, pool, retention).await?;
    match out {
        Output::Json => output::print_json(&json!({
            "node_id": id,
            "data_dir": a.data_dir,
            "api": config.api_advertise,
            "admin_api_key": token,
            "ca_fingerprint": fingerprint,
        })),
        Output::Table | Output::Csv => {
            say(format_args!("initialized coordinator {id} in {}", a.data_dir.display()));
            say(format_args!("CA fingerprint: {fingerprint}"));
            say(format_args!("admin API key (shown once, store it now): {token}"));
            say(format_args!("start it with: berqenas-coordinator serve --data-dir {}", a.data_dir.display()));
        }
    }
    Ok(())
}

/// Writes the break-glass request, prints the key once (stdout only), then waits a little for
/// the running coordinator to take it.
async fn recover_admin(a: RecoverAdminArgs, out: Output) -> anyhow::Result<()> {
    let wait = humantime::parse_duration(&a.wait).context("--wait")?;
    let (token, id) = crate::recovery::request(&a.data_dir)?;
    if out != Output::Json {
        say(format_args!("break-glass admin key {id} (shown once, store it now): {token}"));
    }
    let file = crate::recovery::path(&a.data_dir);
    let started = std::time::Instant::now();
    while file.exists() && started.elapsed() < wait {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let rejected = a.data_dir.join(crate::recovery::REJECTED);
    let added = !file.exists() && !rejected.exists();
    match out {
        Output::Json => output::print_json(&json!({"admin_api_key": token, "key_id": id, "added": added})),
        Output::Table | Output::Csv if added => {
            say(format_args!("the coordinator added it (audited as apikey.recovered)"))
        }
        Output::Table | Output::Csv => say(format_args!(
            "no running coordinator took it within {}; it is added when the coordinator on this host starts",
            humantime::format_duration(wait)
        )),
    }
    if !file.exists() && rejected.exists() {
        bail!("the coordinator refused the request; see {} and its log", rejected.display());
    }
    Ok(())
}

async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let plans = billing::load_plans(a.billing_plans.as_deref())?;
    let branding = a
        .branding
        .as_deref()
        .map(|p| crate::branding::Branding::load(p).with_context(|| format!("branding {}", p.display())))
        .transpose()?;
    let config = match crate::server::NodeConfig::load(&a.data_dir)? {
        Some(saved) => {
            if let Some(id) = a.addrs.id {
                if id != saved.id {
                    bail!("{} belongs to node {}, not {id}", a.data_dir.display(), saved.id);
                }
            }
            saved
        }
        None => {
            let id = a.addrs.id.context("a new data dir needs --id (or run init for a new cluster)")?;
            if id == 0 {
                bail!("node id must be 1 or greater");
            }
            let config = a.addrs.config(id);
            config.save(&a.data_dir)?;
            config
        }
    };
    let identity = crate::transport::Identity { dir: a.data_dir.clone() };
    if let (false, Some(url), Some(token), Some(pin)) = (identity.exists(), &a.join, &a.token, &a.ca_pin) {
        crate::server::join_as_coordinator(&a.data_dir, config.id, config.names(), url, token, pin).await?;
        tracing::info!(id = config.id, "obtained this coordinator's certificate");
    }
    let limits = a.limits.limits().map_err(|e| anyhow::anyhow!(e))?;
    let siem = a.siem.target()?.map(|t| crate::siem::Forwarder::new(&a.data_dir, t)).transpose()?;
    let usage = a.usage.config().map_err(|e| anyhow::anyhow!(e))?;
    let coordinator = crate::server::Coordinator::start(config, &a.data_dir, a.snapshot_logs, limits).await?;
    let _ = coordinator.session_ttl.set(a.session_ttl);
    if let Some(plans) = plans {
        let _ = coordinator.price_plans.set(plans);
    }
    if let Some(branding) = branding {
        let _ = coordinator.branding.set(branding);
    }
    let identity = crate::transport::Identity { dir: a.data_dir.clone() };
    let loopback = coordinator.config.api_listen.ip().is_loopback();
    let api_tls = match (a.api_tls, &a.api_cert, &a.api_key_file) {
        (ApiTls::Off, _, _) => None,
        (ApiTls::Auto, None, _) if loopback => None,
        (_, Some(cert), Some(key)) => {
            let read = |p: &PathBuf| std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()));
            Some(berqenas_pki::api_server_config(&read(cert)?, &read(key)?)?)
        }
        _ => {
            let (_, chain, key) = identity.read()?;
            Some(berqenas_pki::api_server_config(&chain, &key)?)
        }
    };
    if api_tls.is_none() && !loopback {
        tracing::warn!(addr = %coordinator.config.api_listen, "the REST API is served over plain HTTP on a non-loopback address");
    }
    crate::listeners::serve(coordinator, api_tls.map(Arc::new), a.expiry_interval, siem, usage, shutdown_signal()).await
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down");
}

async fn api_command(client: &Client, command: Command, out: Output) -> anyhow::Result<()> {
    match command {
        Command::Tenant(t) => tenant(client, t, out).await,
        Command::Apikey(k) => apikey(client, k, out).await,
        Command::Audit(a) => audit(client, a, out).await,
        Command::Cluster(c) => cluster(client, c, out).await,
        Command::Node(n) => node(client, n, out).await,
        Command::Device(d) => gateway::device(client, d, out).await,
        Command::Expose(x) => gateway::expose(client, x, out).await,
        Command::Firewall(f) => gateway::firewall(client, f, out).await,
        Command::Usage(u) => usage::usage(client, u, out).await,
        Command::Billing(b) => billing::billing(client, b, out).await,
        Command::User(u) => user::run(client, u, out).await,
        Command::Backup(b) => backup::run(client, b, out).await,
        Command::Snapshot(snapshot::SnapshotCmd::Save { out: file, passphrase_file }) => {
            snapshot::save(client, &file, &passphrase_file, out).await
        }
        Command::Init(_)
        | Command::Serve(_)
        | Command::RecoverAdmin(_)
        | Command::Snapshot(_)
        | Command::Completions(_)
        | Command::Man(_) => {
            bail!("not an API command")
        }
    }
}
