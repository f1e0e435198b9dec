//! `berqenas-node-agent join`: makes the node key here, sends only a CSR with the one-time
//! token, trusts the coordinator only if its CA matches the pinned fingerprint, and stores the
//! certificate, the CA and `agent.toml`.

use crate::config::{AgentConfig, DriverConfig, GatewayConfig, RealtimeConfig};
use crate::connect::node_client;
use crate::host::files::write_atomic;
use anyhow::{bail, Context};
use berqenas_proto::node as pb;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

pub struct JoinArgs {
    pub coordinator: String,
    pub token: String,
    pub ca_pin: String,
    pub roles: Vec<String>,
    pub labels: HashMap<String, String>,
    pub address: String,
    pub data_dir: PathBuf,
    pub driver: DriverConfig,
    pub resync_interval: std::time::Duration,
    /// Most tenants per role this node takes (0: the coordinator's default, 500).
    pub max_tenants: u32,
    /// Gateway role only: the public address and the public ports exposures may be given.
    pub gateway: Option<GatewayConfig>,
    /// Db role on PostgreSQL only: the realtime ingest and subscriber endpoint.
    pub realtime: Option<RealtimeConfig>,
}

/// What the node advertises as its realtime address: the listen address, or the node's own
/// address with the listen port when it listens on every address.
pub fn realtime_address(listen: std::net::SocketAddr, node_address: &str) -> String {
    if !listen.ip().is_unspecified() {
        return listen.to_string();
    }
    match node_address.parse::<std::net::IpAddr>() {
        Ok(ip) => std::net::SocketAddr::new(ip, listen.port()).to_string(),
        Err(_) => format!("{node_address}:{}", listen.port()),
    }
}

/// host:port from `https://host:port` or `host:port`.
pub fn coordinator_addr(raw: &str) -> anyhow::Result<String> {
    let addr = raw.strip_prefix("https://").unwrap_or(raw).trim_end_matches('/');
    if addr.starts_with("http://") {
        bail!("the coordinator must be reached over TLS (https://)");
    }
    if !addr.contains(':') {
        bail!("coordinator {raw:?} must be https://HOST:PORT");
    }
    Ok(addr.to_string())
}

/// Host capacity from sysinfo: CPUs, memory, and the disk holding `data_dir`.
pub fn host_capacity(data_dir: &std::path::Path) -> pb::Capacity {
    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    sys.refresh_cpu_all();
    let disks = sysinfo::Disks::new_with_refreshed_list();
    let dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let disk = disks
        .list()
        .iter()
        .filter(|d| dir.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len())
        .map(|d| d.available_space())
        .unwrap_or(0);
    pb::Capacity {
        cpus: u32::try_from(sys.cpus().len()).unwrap_or(u32::MAX),
        memory_bytes: sys.total_memory(),
        disk_bytes: disk,
        max_tenants: 0,
    }
}

pub async fn join(args: JoinArgs) -> anyhow::Result<AgentConfig> {
    let addr = coordinator_addr(&args.coordinator)?;
    if !args.ca_pin.starts_with("sha256:") || args.ca_pin.len() != 7 + 64 {
        bail!("--ca-pin must be sha256:<64 hex digits> as printed by `node token create`");
    }
    if args.gateway.is_some() && !args.roles.iter().any(|r| r == "gateway") {
        bail!("--public-address and --public-ports are for the gateway role only");
    }
    if args.realtime.is_some() {
        if !args.roles.iter().any(|r| r == "db") {
            bail!("--realtime-listen is for the db role only");
        }
        if !matches!(args.driver, DriverConfig::Postgres { .. }) {
            bail!("--realtime-listen needs --driver postgres");
        }
    }
    let config_path = args.data_dir.join("agent.toml");
    if config_path.exists() {
        bail!("{} already holds a joined node; use a new --data-dir", args.data_dir.display());
    }
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("create {}", args.data_dir.display()))?;
    let data_dir =
        std::fs::canonicalize(&args.data_dir).with_context(|| format!("resolve {}", args.data_dir.display()))?;
    let driver = match args.driver {
        DriverConfig::Dir { path } if path.is_relative() => {
            DriverConfig::Dir { path: std::env::current_dir()?.join(path) }
        }
        other => other,
    };
    let kc = berqenas_pki::new_key_and_csr("berqenas node")?;
    // The key goes to disk before the token is spent: a data directory this process cannot write
    // (a volume owned by another user, a read-only mount) fails here with the token still good.
    // A later join overwrites it (no agent.toml yet: nothing joined).
    let key_path = data_dir.join("node.key");
    write_atomic(&key_path, kc.key_pem.as_bytes(), 0o600)
        .with_context(|| format!("write the node key in {}", data_dir.display()))?;
    let tls = Arc::new(berqenas_pki::pinned_client_config(&args.ca_pin)?);
    let mut client = node_client(&addr, tls).await?;
    let request = pb::JoinRequest {
        token: args.token.clone(),
        csr_pem: kc.csr_pem.clone(),
        roles: args.roles.clone(),
        labels: args.labels.clone(),
        address: args.address.clone(),
        capacity: Some(pb::Capacity { max_tenants: args.max_tenants, ..host_capacity(&args.data_dir) }),
        public_address: args.gateway.as_ref().map(|g| g.public_address.to_string()).unwrap_or_default(),
        public_port_first: args.gateway.as_ref().map_or(0, |g| u32::from(g.public_ports.first)),
        public_port_last: args.gateway.as_ref().map_or(0, |g| u32::from(g.public_ports.last)),
        realtime_address: args.realtime.as_ref().map(|r| realtime_address(r.listen, &args.address)).unwrap_or_default(),
    };
    let resp = client.join(request).await.map_err(|s| anyhow::anyhow!("join refused: {}", s.message()))?.into_inner();
    let mut coordinators: Vec<String> = resp.coordinators.iter().map(|c| c.address.clone()).collect();
    if !coordinators.contains(&addr) {
        coordinators.insert(0, addr);
    }
    let config = AgentConfig {
        node_id: resp.node_id,
        data_dir,
        coordinators,
        resync_interval: args.resync_interval,
        driver,
        max_tenants: args.max_tenants,
        gateway: args.gateway,
        realtime: args.realtime,
        backup: None,
        metrics_listen: crate::config::default_metrics_listen(),
    };
    write_atomic(&config.cert_path(), resp.cert_chain_pem.as_bytes(), 0o644)?;
    write_atomic(&config.ca_path(), resp.ca_pem.as_bytes(), 0o644)?;
    config.save(&config.data_dir.join("agent.toml"))?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realtime_address_is_the_node_address_unless_the_listener_names_one() {
        let any: std::net::SocketAddr = "0.0.0.0:7443".parse().expect("addr");
        assert_eq!(realtime_address(any, "192.0.2.10"), "192.0.2.10:7443");
        assert_eq!(realtime_address(any, "db1.example"), "db1.example:7443");
        let one: std::net::SocketAddr = "198.51.100.4:7443".parse().expect("addr");
        assert_eq!(realtime_address(one, "192.0.2.10"), "198.51.100.4:7443");
    }

    /// A data directory the agent cannot write (in a container: a volume owned by another user)
    /// fails the join before the coordinator is asked, so the one-time token stays good.
    #[tokio::test]
    async fn a_key_that_cannot_be_written_fails_the_join_before_the_token_is_sent() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("node.key")).expect("a directory where the key goes");
        let err = join(JoinArgs {
            // Nothing listens here: reaching it would fail with a connection error instead.
            coordinator: "https://127.0.0.1:1".to_string(),
            token: "bqn_unused".to_string(),
            ca_pin: format!("sha256:{}", "0".repeat(64)),
            roles: vec!["db".to_string()],
            labels: HashMap::new(),
            address: "192.0.2.10".to_string(),
            data_dir: dir.path().to_path_buf(),
            driver: DriverConfig::Dir { path: dir.path().join("db") },
            resync_interval: std::time::Duration::from_secs(30),
            max_tenants: 0,
            gateway: None,
            realtime: None,
        })
        .await
        .expect_err("the key cannot be written");
        assert!(format!("{err:#}").contains("write the node key"), "{err:#}");
        assert!(!dir.path().join("agent.toml").exists());
    }
}
