//! A throwaway S3-compatible server for tests: `s3s-fs` (objects as files in a temp dir) on
//! 127.0.0.1 at a free port, with a random access key and secret; stopped on drop. It can be
//! stopped and started again on the same port and directory (what was stored survives).

use crate::{wait_for, Proc};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct S3 {
    proc: Option<Proc>,
    pub port: u16,
    pub access_key: String,
    pub secret_key: String,
    pub bucket: String,
    pub dir: tempfile::TempDir,
    log_dir: PathBuf,
    /// The lab namespace it runs in (`None`: this host), and the address it listens on.
    netns: Option<String>,
    pub host: String,
}

/// `s3s-fs` on PATH or in cargo's bin dir (deploy/test.sh installs it).
pub fn binary() -> PathBuf {
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .map(|c| c.join("bin/s3s-fs"));
    let on_path =
        std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join("s3s-fs")).find(|p| p.exists()));
    on_path
        .or(cargo_bin.filter(|p| p.exists()))
        .expect("s3s-fs is not installed (cargo install s3s-fs --version 0.14.1 --locked --features binary; deploy/test.sh does it)")
}

fn random(n: usize) -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..n).map(|_| char::from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"[rng.gen_range(0..36)])).collect()
}

impl S3 {
    /// Starts the server with one bucket, `backups`.
    pub fn start(log_dir: &Path) -> Self {
        Self::start_at(None, "127.0.0.1", log_dir)
    }

    /// Starts it inside lab namespace `netns`, listening on `host` there (a lab host's address).
    pub fn start_in(netns: &str, host: &str, log_dir: &Path) -> Self {
        Self::start_at(Some(netns.to_string()), host, log_dir)
    }

    fn start_at(netns: Option<String>, host: &str, log_dir: &Path) -> Self {
        let dir = tempfile::Builder::new().prefix("bq-s3-").tempdir().expect("temp dir");
        // s3s-fs serves each top-level directory as a bucket.
        std::fs::create_dir(dir.path().join("backups")).expect("bucket dir");
        let mut s3 = Self {
            proc: None,
            port: crate::free_port(),
            access_key: random(20),
            secret_key: random(40),
            bucket: "backups".into(),
            dir,
            log_dir: log_dir.to_path_buf(),
            netns,
            host: host.to_string(),
        };
        s3.resume();
        s3
    }

    /// The server's process id (0 while it is stopped).
    pub fn pid(&self) -> u32 {
        self.proc.as_ref().map(Proc::pid).unwrap_or(0)
    }

    /// Starts it again (after [`S3::kill`]) on the same port and directory.
    pub fn resume(&mut self) {
        let port = self.port.to_string();
        let root = self.dir.path().to_string_lossy().into_owned();
        let args = [
            "--host",
            &self.host,
            "--port",
            &port,
            "--access-key",
            &self.access_key,
            "--secret-key",
            &self.secret_key,
            &root,
        ];
        let Some(ns) = self.netns.clone() else {
            self.proc = Some(Proc::spawn("s3s-fs", &binary(), &args, &self.log_dir));
            wait_for("s3s-fs to listen", Duration::from_secs(20), || TcpStream::connect(("127.0.0.1", self.port)).ok());
            return;
        };
        let bin = binary();
        let mut full = vec!["netns", "exec", ns.as_str(), bin.to_str().expect("UTF-8 path")];
        full.extend_from_slice(&args);
        self.proc = Some(Proc::spawn("s3s-fs", Path::new("ip"), &full, &self.log_dir));
        let probe = format!("exec 3<>/dev/tcp/{}/{}", self.host, self.port);
        wait_for("s3s-fs to listen in its namespace", Duration::from_secs(20), || {
            std::process::Command::new("ip")
                .args(["netns", "exec", &ns, "bash", "-c", &probe])
                .status()
                .ok()
                .filter(|s| s.success())
        });
    }

    /// SIGKILL: uploads in flight see their connection drop.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    /// The agent's `[backup]` settings for this server.
    pub fn config(&self) -> berqenas_node_agent::backup::store::S3Config {
        berqenas_node_agent::backup::store::S3Config {
            endpoint: Some(self.endpoint()),
            region: "us-east-1".into(),
            bucket: self.bucket.clone(),
            path_style: true,
            access_key_id: Some(self.access_key.clone()),
            secret_access_key: Some(self.secret_key.clone()),
        }
    }

    /// A db node's `agent.toml` for `backup run|list|restore` by hand into this store: the
    /// postgres driver at `url`, data in `data_dir`, no reachable coordinator.
    pub fn agent_config(&self, data_dir: &Path, url: &str) -> berqenas_node_agent::config::AgentConfig {
        use berqenas_node_agent::config::{default_metrics_listen, AgentConfig, DriverConfig};
        AgentConfig {
            node_id: 1,
            data_dir: data_dir.to_path_buf(),
            coordinators: vec!["127.0.0.1:1".into()],
            resync_interval: Duration::from_secs(30),
            driver: DriverConfig::Postgres {
                url: url.to_string(),
                gateway_dir: None,
                pgbouncer: None,
                limits: Default::default(),
            },
            max_tenants: 10,
            gateway: None,
            realtime: None,
            backup: Some(self.config()),
            metrics_listen: default_metrics_listen(),
        }
    }

    /// Every file under the bucket's directory (objects and upload leftovers), relative paths.
    pub fn files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, base: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, base, out);
                } else if let Ok(rel) = p.strip_prefix(base) {
                    out.push(rel.to_path_buf());
                }
            }
        }
        let mut out = Vec::new();
        walk(self.dir.path(), self.dir.path(), &mut out);
        out
    }

    /// The stored bytes of object `key` (s3s-fs keeps each object as a file at its key).
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.dir.path().join(&self.bucket).join(key)
    }
}
