//! pgBouncer for tests, configured from `deploy/pgbouncer.ini` (paths moved into a temp dir)
//! and started inside a lab host as the `postgres` user; stopped on drop.

use crate::lab::{Host, Lab};
use crate::{wait_for, Proc};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct PgBouncer {
    /// Declared first: pgBouncer stops before its directory goes.
    proc: Proc,
    pub host: Host,
    pub port: u16,
    /// The directory the node agent owns files in (`--pgbouncer-dir`).
    pub dir: PathBuf,
    pub pidfile: PathBuf,
    _tmp: tempfile::TempDir,
}

impl PgBouncer {
    pub fn start(lab: &Lab, host: &Host, log_dir: &Path) -> Self {
        let tmp = tempfile::Builder::new().prefix("bq-pgb-").tempdir().expect("temp dir");
        let dir = tmp.path().join("berqenas");
        std::fs::create_dir(&dir).expect("pgbouncer dir");
        for f in ["berqenas-pools.ini", "berqenas-users.txt", "berqenas-hba.conf"] {
            std::fs::write(dir.join(f), "").expect("empty agent file");
        }
        let template = std::fs::read_to_string(crate::workspace_root().join("deploy/pgbouncer.ini"))
            .expect("deploy/pgbouncer.ini");
        let ini = template
            .replace("/etc/pgbouncer/berqenas", dir.to_str().expect("utf-8"))
            .replace("/run/postgresql", tmp.path().to_str().expect("utf-8"));
        let ini_path = tmp.path().join("pgbouncer.ini");
        std::fs::write(&ini_path, ini).expect("pgbouncer.ini");
        let status = std::process::Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(tmp.path())
            .status()
            .expect("chown");
        assert!(status.success(), "chown the pgBouncer temp dir");
        let binary = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("pgBouncer is not installed (apt-get install pgbouncer; deploy/test.sh does it)");
        let ini_arg = ini_path.to_str().expect("utf-8");
        let args = ["--reuid=postgres", "--regid=postgres", "--clear-groups", binary, ini_arg];
        let proc = lab.spawn(host, &format!("pgbouncer-{}", host.name), Path::new("/usr/bin/setpriv"), &args, log_dir);
        let pidfile = tmp.path().join("pgbouncer.pid");
        wait_for("pgBouncer to listen", Duration::from_secs(20), || {
            (pidfile.exists() && proc.log_text().contains("listening on")).then_some(())
        });
        Self { proc, host: host.clone(), port: 6432, dir, pidfile, _tmp: tmp }
    }

    /// pgBouncer's log so far.
    pub fn log_text(&self) -> String {
        self.proc.log_text()
    }
}
