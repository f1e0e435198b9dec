//! pgBouncer in front of the node's PostgreSQL: one pool per tenant. The agent owns three files
//! in the configured directory and reloads pgBouncer (SIGHUP to the pid in its pidfile) when
//! any of them changes:
//!
//! - `berqenas-pools.ini`: `[databases]` (alias `tenant_{name}` → the tenant's real database,
//!   `pool_size`, `max_db_connections`) and `[users]` (`max_user_connections`); the operator's
//!   `pgbouncer.ini` pulls it in with `%include`.
//! - `berqenas-users.txt`, the `auth_file`: each running tenant's user with the same SCRAM
//!   verifier PostgreSQL holds (no plaintext, no `auth_query`). pgBouncer authenticates the
//!   client with it and logs in to PostgreSQL with the client's SCRAM keys.
//! - `berqenas-hba.conf`, the `auth_hba_file` (`auth_type = hba`): the tenant's access mode, as
//!   in `pg_hba.conf`, enforced at the pooler, because PostgreSQL sees the pooler's address.
//!
//! Suspended and deleted tenants are left out of all three, so their logins are refused.
//! Everything written comes from validated names, integers, checked CIDRs and checked verifiers.

use crate::assignment::{is_verifier, AccessMode, DbTenant, Tenant};
use crate::config::PgBouncerConfig;
use berqenas_common::files::Owner;
use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub const POOLS: &str = "berqenas-pools.ini";
pub const USERS: &str = "berqenas-users.txt";
pub const HBA: &str = "berqenas-hba.conf";

/// Largest server pool per tenant (the seed's `default_pool_size`); a tenant's connection
/// limit caps it further.
pub const MAX_POOL: u32 = 20;

const HEADER: &str = "# Written by the berqenas node agent; edits are replaced on its next pass.\n";

/// Where pgBouncer reaches PostgreSQL: a host name, an address or a unix socket directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub host: String,
    pub port: u16,
    /// The main database (schema isolation lives in it).
    pub database: String,
}

fn plain(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '/'))
}

/// The tenants pgBouncer serves: db role, PostgreSQL, running, with a password verifier.
fn served(desired: &[DbTenant]) -> impl Iterator<Item = &DbTenant> {
    super::postgres_tenants(desired).filter(|a| a.runs() && is_verifier(&a.db.password_verifier))
}

/// `berqenas-pools.ini`. Fails when the server's host or database name could not be written
/// into the file safely.
pub fn render_pools(desired: &[DbTenant], server: &Server) -> Result<String, String> {
    if !plain(&server.host) || !plain(&server.database) {
        return Err(format!(
            "PostgreSQL host {:?} or database {:?} cannot be used by pgBouncer",
            server.host, server.database
        ));
    }
    let mut out = String::from(HEADER);
    out.push_str("[databases]\n");
    let tenants: Vec<&DbTenant> = served(desired).collect();
    for a in &tenants {
        let dbname = if super::own_database(a) { format!("tenant_{}", a.name) } else { server.database.clone() };
        let limit = a.db.connection_limit.max(1);
        let _ = writeln!(
            out,
            "tenant_{} = host={} port={} dbname={dbname} pool_size={} max_db_connections={limit}",
            a.name,
            server.host,
            server.port,
            limit.min(MAX_POOL),
        );
    }
    out.push_str("[users]\n");
    for a in &tenants {
        let _ = writeln!(out, "tenant_{}_user = max_user_connections={}", a.name, a.db.connection_limit.max(1));
    }
    Ok(out)
}

/// `berqenas-users.txt`: `"user" "verifier"` per served tenant.
pub fn render_users(desired: &[DbTenant]) -> String {
    served(desired).fold(String::new(), |mut out, a| {
        let _ = writeln!(out, "\"tenant_{}_user\" \"{}\"", a.name, a.db.password_verifier);
        out
    })
}

/// `berqenas-hba.conf`: each served tenant's user, to its own pool, from where its access mode
/// allows; anything not listed is refused by pgBouncer.
pub fn render_hba(desired: &[DbTenant]) -> String {
    let mut out = String::from(HEADER);
    for a in served(desired) {
        let (db, user) = (format!("tenant_{}", a.name), format!("tenant_{}_user", a.name));
        match (a.db.access_mode, super::pghba::cidr(&a.db.vpn_subnet)) {
            (AccessMode::VpnOnly, Some(subnet)) => {
                let _ = writeln!(out, "host {db} {user} {subnet} scram-sha-256");
            }
            (AccessMode::VpnOnly, None) => {}
            _ => {
                let _ = writeln!(out, "host {db} {user} 0.0.0.0/0 scram-sha-256");
                let _ = writeln!(out, "host {db} {user} ::/0 scram-sha-256");
            }
        }
    }
    out
}

/// Writes `text` to `dir/name` when it differs, atomically, readable by the owner of the
/// directory (pgBouncer's user) and nobody else. Returns whether it changed.
fn sync_file(dir: &Path, name: &str, text: &str) -> Result<bool, String> {
    let meta = std::fs::metadata(dir).map_err(|e| format!("pgBouncer directory {}: {e}", dir.display()))?;
    let owner = Owner { uid: meta.uid(), gid: meta.gid() };
    crate::host::files::write_if_changed(&dir.join(name), text, 0o640, Some(owner)).map_err(|e| e.to_string())
}

/// The files `sync` would rewrite (changing nothing).
pub fn pending(config: &PgBouncerConfig, desired: &[DbTenant], server: &Server) -> Result<Vec<PathBuf>, String> {
    let files = [(USERS, render_users(desired)), (HBA, render_hba(desired)), (POOLS, render_pools(desired, server)?)];
    Ok(files
        .into_iter()
        .map(|(name, text)| (config.dir.join(name), text))
        .filter(|(path, text)| std::fs::read_to_string(path).ok().as_deref() != Some(text.as_str()))
        .map(|(path, _)| path)
        .collect())
}

/// Makes the three files match `desired` and reloads pgBouncer when one changed.
pub fn sync(config: &PgBouncerConfig, desired: &[DbTenant], server: &Server) -> Result<(), String> {
    let pools = render_pools(desired, server)?;
    let mut changed = false;
    // The auth file first: a pool never appears before its user can authenticate.
    changed |= sync_file(&config.dir, USERS, &render_users(desired))?;
    changed |= sync_file(&config.dir, HBA, &render_hba(desired))?;
    changed |= sync_file(&config.dir, POOLS, &pools)?;
    if changed {
        if let Err(e) = reload(&config.pidfile) {
            // Forget what was written so the next pass writes and reloads again.
            let _ = std::fs::remove_file(config.dir.join(POOLS));
            return Err(e);
        }
        tracing::info!(dir = %config.dir.display(), "pgBouncer pools rewritten and reloaded");
    }
    Ok(())
}

/// The nftables table the agent owns on a pooler host.
pub const FIREWALL_TABLE: &str = "berqenas_pooler";

/// Pure: the nftables script that (re)creates the agent's table: new connections to `port`
/// are refused (TCP reset) from a source address that already holds `per_source` of them,
/// IPv4 and IPv6. One `nft -f` transaction: the table is created if missing, deleted and
/// written again, so the ruleset never is half there.
pub fn render_firewall(port: u16, per_source: u32) -> String {
    let t = FIREWALL_TABLE;
    format!(
        "table inet {t}\ndelete table inet {t}\ntable inet {t} {{\n\
         \tcomment \"{}\"\n\
         \tset sources4 {{ type ipv4_addr; size 65536; flags dynamic; }}\n\
         \tset sources6 {{ type ipv6_addr; size 65536; flags dynamic; }}\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority filter; policy accept;\n\
         \t\ttcp dport {port} ct state new add @sources4 {{ ip saddr ct count over {per_source} }} counter reject with tcp reset\n\
         \t\ttcp dport {port} ct state new add @sources6 {{ ip6 saddr ct count over {per_source} }} counter reject with tcp reset\n\
         \t}}\n}}\n",
        firewall_marker(port, per_source)
    )
}

fn firewall_marker(port: u16, per_source: u32) -> String {
    format!("berqenas pooler: port {port}, at most {per_source} connections per source")
}

/// Observes the agent's nftables table and writes it again unless it is there as rendered
/// (nothing when the limit is off).
pub async fn sync_firewall(config: &PgBouncerConfig) -> Result<(), String> {
    let timeout = std::time::Duration::from_secs(10);
    if config.max_per_source == 0 {
        return Ok(());
    }
    let listed = crate::host::exec::run("nft", &["list", "table", "inet", FIREWALL_TABLE], None, timeout)
        .await
        .unwrap_or_default();
    let over = format!("ct count over {}", config.max_per_source);
    let converged =
        listed.contains(&firewall_marker(config.port, config.max_per_source)) && listed.matches(&over).count() == 2;
    if converged {
        return Ok(());
    }
    let script = render_firewall(config.port, config.max_per_source);
    crate::host::exec::run("nft", &["-f", "-"], Some(script.as_bytes()), timeout)
        .await
        .map_err(|e| format!("cannot limit connections per source to pgBouncer (is nftables installed?): {e}"))?;
    tracing::info!(port = config.port, per_source = config.max_per_source, "pgBouncer connection limit per source set");
    Ok(())
}

/// SIGHUP to the pgBouncer whose pid is in `pidfile`.
fn reload(pidfile: &Path) -> Result<(), String> {
    let raw = std::fs::read_to_string(pidfile)
        .map_err(|e| format!("pgBouncer is not running (pidfile {}: {e})", pidfile.display()))?;
    let pid = raw
        .trim()
        .parse::<i32>()
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| format!("pgBouncer pidfile {} holds no pid", pidfile.display()))?;
    // A stale pidfile may name some other process now; SIGHUP would end most of them.
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", pid.as_raw_nonzero())).unwrap_or_default();
    if comm.trim() != "pgbouncer" {
        return Err(format!(
            "pgBouncer is not running (pid {} from {} is {:?})",
            pid.as_raw_nonzero(),
            pidfile.display(),
            comm.trim()
        ));
    }
    rustix::process::kill_process(pid, rustix::process::Signal::HUP)
        .map_err(|e| format!("cannot reload pgBouncer (pid {}): {e}", pid.as_raw_nonzero()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VERIFIER: &str = "SCRAM-SHA-256$4096:AQIDBAUGBwgJCgsMDQ4PEA==$8rrDg00OqaiWXJ7p+sCgHEIaBSHY89ZJl3mfIsf32oY=:05L1f+yZbiN8O0AnO40Og85NNRhvzTS57naKRWCcsIA=";

    fn tenant(name: &str, mode: AccessMode, limit: u32) -> DbTenant {
        let mut t = crate::assignment::fixture(name);
        t.db = crate::assignment::DbSpec {
            connection_limit: limit,
            access_mode: mode,
            password_verifier: VERIFIER.into(),
            ..t.db
        };
        t
    }

    #[test]
    fn firewall_limits_each_source_on_the_pooler_port_only() {
        let script = render_firewall(6433, 32);
        assert!(script.starts_with(
            "table inet berqenas_pooler\ndelete table inet berqenas_pooler\ntable inet berqenas_pooler {\n"
        ));
        for family in ["ip saddr", "ip6 saddr"] {
            let rule = format!(
                "tcp dport 6433 ct state new add @sources{} {{ {family} ct count over 32 }} counter reject with tcp reset",
                if family == "ip saddr" { 4 } else { 6 }
            );
            assert!(script.contains(&rule), "{script}");
        }
        assert!(script.contains("policy accept"), "nothing else on the host is filtered: {script}");
    }

    fn server() -> Server {
        Server { host: "192.0.2.10".into(), port: 5432, database: "postgres".into() }
    }

    #[test]
    fn pools_users_and_rules_per_running_tenant() {
        let mut own = tenant("solo", AccessMode::Public, 50);
        own.db.isolation = crate::assignment::Isolation::Database;
        let mut suspended = tenant("gone", AccessMode::Public, 5);
        suspended.lifecycle = crate::assignment::Lifecycle::Suspended;
        let desired = [tenant("acme", AccessMode::VpnOnly, 5), own, suspended];
        let pools = render_pools(&desired, &server()).expect("pools");
        assert!(pools
            .contains("tenant_acme = host=192.0.2.10 port=5432 dbname=postgres pool_size=5 max_db_connections=5\n"));
        assert!(pools.contains(
            "tenant_solo = host=192.0.2.10 port=5432 dbname=tenant_solo pool_size=20 max_db_connections=50\n"
        ));
        assert!(pools.contains("[users]\ntenant_acme_user = max_user_connections=5\n"));
        assert!(!pools.contains("gone"), "suspended tenants have no pool");
        let users = render_users(&desired);
        assert_eq!(users, format!("\"tenant_acme_user\" \"{VERIFIER}\"\n\"tenant_solo_user\" \"{VERIFIER}\"\n"));
        let hba = render_hba(&desired);
        assert!(hba.contains("host tenant_acme tenant_acme_user 198.18.1.0/24 scram-sha-256\n"));
        assert!(hba.contains("host tenant_solo tenant_solo_user 0.0.0.0/0 scram-sha-256\n"));
        assert!(!hba.contains("gone"));
    }

    #[test]
    fn nothing_unchecked_reaches_the_files() {
        let mut bad = tenant("evil", AccessMode::VpnOnly, 5);
        bad.db.password_verifier = "x\" \"y\"\n\"postgres\" \"trust".into();
        assert_eq!(render_users(&[bad.clone()]), "");
        let mut odd = tenant("odd", AccessMode::VpnOnly, 5);
        odd.db.vpn_subnet = "0.0.0.0/0 trust".into();
        assert!(!render_hba(&[odd]).contains("trust"));
        let evil_server = Server { host: "h dbname=other".into(), port: 1, database: "postgres".into() };
        assert!(render_pools(&[tenant("acme", AccessMode::Public, 1)], &evil_server).is_err());
    }

    #[test]
    fn files_are_rewritten_only_when_they_differ() {
        let dir = tempfile::tempdir().expect("tmp");
        assert!(sync_file(dir.path(), USERS, "a").expect("write"));
        assert!(!sync_file(dir.path(), USERS, "a").expect("same"));
        assert!(sync_file(dir.path(), USERS, "b").expect("changed"));
        let missing = PgBouncerConfig {
            dir: dir.path().into(),
            pidfile: dir.path().join("none.pid"),
            port: 6432,
            max_per_source: 32,
        };
        let err = sync(&missing, &[tenant("acme", AccessMode::Public, 1)], &server()).expect_err("no pgBouncer");
        assert!(err.contains("not running"), "{err}");
        // A pidfile naming another process (here: this test) is not signalled.
        std::fs::write(dir.path().join("stale.pid"), std::process::id().to_string()).expect("pidfile");
        let stale = PgBouncerConfig {
            dir: dir.path().into(),
            pidfile: dir.path().join("stale.pid"),
            port: 6432,
            max_per_source: 32,
        };
        let err = sync(&stale, &[tenant("acme", AccessMode::Public, 2)], &server()).expect_err("not pgBouncer");
        assert!(err.contains("is not running") && err.contains("stale.pid"), "{err}");
    }
}
