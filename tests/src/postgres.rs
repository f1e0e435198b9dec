//! A throwaway PostgreSQL for tests: `initdb` in a temp dir, started inside a lab host (its own
//! network namespace) so other lab hosts reach it at `host.addr:5432`, stopped on drop. The
//! superuser `postgres` logs in with a random password over TCP (SCRAM) and without one over the
//! Unix socket in the data dir. The server runs as the `postgres` system user (it refuses root).

use crate::lab::{Host, Lab};
use crate::{wait_for, Proc};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// `postgresql.conf` lines that let the db node's agent see logins (`Postgres::start_with`): the
/// jsonlog it reads, connections logged, times in UTC. Not the default: with the logging
/// collector on, the server's own stderr (which some tests read) stays empty.
pub const LOGIN_LOG: &str = "logging_collector = on\nlog_destination = 'jsonlog'\nlog_connections = on\n\
                             log_timezone = 'UTC'\n";

pub struct Postgres {
    /// Declared first: the server stops before its directory goes.
    proc: Proc,
    pub host: Host,
    pub port: u16,
    pub password: String,
    pub bin: PathBuf,
    pub dir: tempfile::TempDir,
}

/// The newest installed PostgreSQL's bin dir (Debian layout).
pub fn bin_dir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).filter(|p| p.join("postgres").exists()).collect()
        })
        .unwrap_or_default();
    dirs.sort_by_key(|p| {
        p.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok())
    });
    dirs.pop().expect("PostgreSQL is not installed (apt-get install postgresql; deploy/test.sh does it)")
}

fn as_postgres(program: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=postgres", "--regid=postgres", "--clear-groups"]).arg(program);
    cmd
}

impl Postgres {
    /// initdb into a temp dir, configured to listen on `listen`:`port`.
    fn init(listen: &str, port: u16, extra_conf: &str) -> (PathBuf, tempfile::TempDir, PathBuf, String) {
        let bin = bin_dir();
        let dir = tempfile::Builder::new().prefix("bq-pg-").tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let password: String = {
            use rand::Rng;
            let mut rng = rand::thread_rng();
            (0..24).map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.gen_range(0..36)])).collect()
        };
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, &password).expect("password file");
        let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status().expect("chown");
        assert!(status.success(), "chown the PostgreSQL temp dir");
        let out = as_postgres(&bin.join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args(["-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256", "--pwfile"])
            .arg(&pwfile)
            .output()
            .expect("run initdb");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let conf = format!(
            "listen_addresses = '{listen}'\nport = {port}\nunix_socket_directories = '{}'\nfsync = off\n\
             log_min_messages = warning\nmax_connections = 200\n\
             wal_level = logical\nmax_replication_slots = 64\nmax_wal_senders = 16\n",
            dir.path().display()
        );
        append(&data.join("postgresql.conf"), &format!("{conf}{extra_conf}"));
        append(
            &data.join("pg_hba.conf"),
            "host all all 127.0.0.1/32 scram-sha-256\nhost all all 192.0.2.0/24 scram-sha-256\n\
             host all all 198.18.0.0/15 scram-sha-256\n",
        );
        (bin, dir, data, password)
    }

    fn server_args(bin: &Path, data: &Path) -> Vec<String> {
        vec![
            "--reuid=postgres".into(),
            "--regid=postgres".into(),
            "--clear-groups".into(),
            bin.join("postgres").to_string_lossy().into_owned(),
            "-D".into(),
            data.to_string_lossy().into_owned(),
        ]
    }

    /// initdb + start inside `host`; returns once it accepts connections.
    pub fn start(lab: &Lab, host: &Host, log_dir: &Path) -> Self {
        Self::start_with(lab, host, log_dir, "")
    }

    /// `start` with `extra_conf` appended to `postgresql.conf` (e.g. `LOGIN_LOG`).
    pub fn start_with(lab: &Lab, host: &Host, log_dir: &Path, extra_conf: &str) -> Self {
        let (bin, dir, data, password) = Self::init("*", 5432, extra_conf);
        let args = Self::server_args(&bin, &data);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let proc = lab.spawn(host, &format!("postgres-{}", host.name), Path::new("/usr/bin/setpriv"), &args, log_dir);
        let pg = Self { proc, host: host.clone(), port: 5432, password, bin, dir };
        wait_for("PostgreSQL to accept connections", Duration::from_secs(30), || {
            let out = lab.run(host, &pg.bin.join("pg_isready"), &["-h", &pg.host.addr.to_string(), "-p", "5432"], &[]);
            out.status.success().then_some(())
        });
        pg
    }

    /// initdb + start on 127.0.0.1 at a free port (no lab), for benchmarks.
    pub fn start_loopback(log_dir: &Path) -> Self {
        let port = crate::free_port();
        let (bin, dir, data, password) = Self::init("127.0.0.1", port, "");
        let args = Self::server_args(&bin, &data);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let proc = Proc::spawn("postgres", Path::new("/usr/bin/setpriv"), &args, log_dir);
        let host = Host { name: "loopback".into(), netns: String::new(), addr: std::net::Ipv4Addr::LOCALHOST };
        let pg = Self { proc, host, port, password, bin, dir };
        wait_for("PostgreSQL to accept connections", Duration::from_secs(30), || {
            let out = Command::new(pg.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                .output()
                .ok()?;
            out.status.success().then_some(())
        });
        pg
    }

    /// `postgres://postgres:…@addr:5432/postgres`
    pub fn url(&self) -> String {
        format!("postgres://postgres:{}@{}:{}/postgres", self.password, self.host.addr, self.port)
    }

    /// Runs `psql -c sql` as the superuser from lab host `from`; returns stdout (tuples only).
    pub fn psql(&self, lab: &Lab, from: &Host, sql: &str) -> Result<String, String> {
        let out = lab.run(
            from,
            &self.bin.join("psql"),
            &["-h", &self.host.addr.to_string(), "-U", "postgres", "-d", "postgres", "-tAc", sql],
            &[("PGPASSWORD", &self.password), ("PGCONNECT_TIMEOUT", "5")],
        );
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGTERM: a smart shutdown that also ends the backends.
        self.proc.stop(Duration::from_secs(10));
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).expect("open PostgreSQL config");
    f.write_all(text.as_bytes()).expect("write PostgreSQL config");
}
