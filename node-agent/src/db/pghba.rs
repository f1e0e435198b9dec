//! The managed block of `pg_hba.conf`: per-tenant login rules from each tenant's access mode.
//! The agent owns only the lines between its markers, keeps the block first (pg_hba is
//! first-match), rewrites the file atomically with the original owner and mode, and reloads.
//!
//! - `vpn-only`: the tenant's user may log in only from its VPN subnet; anywhere else is rejected.
//! - `public` / `hybrid`: from anywhere, with its SCRAM password.

use crate::assignment::{AccessMode, DbTenant};
use std::net::{IpAddr, Ipv4Addr};

/// Where a pooler in front of PostgreSQL (pgBouncer) logs in from; its tenants' logins from
/// there are allowed, because the pooler enforces their access modes itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooler {
    Tcp(IpAddr),
    UnixSocket,
}

pub const BEGIN: &str = "# BEGIN berqenas managed block: do not edit, the node agent rewrites it";
pub const END: &str = "# END berqenas managed block";

/// `a.b.c.d/nn` with a valid address and prefix, else None (never written into the file).
pub(crate) fn cidr(raw: &str) -> Option<String> {
    let (addr, prefix) = raw.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
    Some(format!("{addr}/{prefix}"))
}

fn name_ok(n: &str) -> bool {
    n.len() <= 31 && n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The database a tenant's user may log in to: its own (database isolation) or the main one
/// (`all` if the main database's name is not a plain identifier).
fn database_field(a: &DbTenant, main_db: &str) -> String {
    if super::own_database(a) {
        format!("tenant_{}", a.name)
    } else if !main_db.is_empty() && main_db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        main_db.to_string()
    } else {
        "all".to_string()
    }
}

/// The block for `desired` (db-role postgres tenants), markers included. Each tenant's user
/// may log in only to its database, with its SCRAM password, from where its access mode allows;
/// every other login of that user is rejected.
pub fn render(desired: &[DbTenant], main_db: &str, pooler: Option<Pooler>) -> String {
    let mut out = vec![BEGIN.to_string()];
    for a in super::postgres_tenants(desired) {
        if !name_ok(&a.name) {
            continue;
        }
        let user = format!("tenant_{}_user", a.name);
        let db = database_field(a, main_db);
        match pooler {
            Some(Pooler::Tcp(IpAddr::V4(ip))) => out.push(format!("host {db} {user} {ip}/32 scram-sha-256")),
            Some(Pooler::Tcp(IpAddr::V6(ip))) => out.push(format!("host {db} {user} {ip}/128 scram-sha-256")),
            Some(Pooler::UnixSocket) => out.push(format!("local {db} {user} scram-sha-256")),
            None => {}
        }
        match (a.db.access_mode, cidr(&a.db.vpn_subnet)) {
            (AccessMode::VpnOnly, Some(subnet)) => out.push(format!("host {db} {user} {subnet} scram-sha-256")),
            (AccessMode::VpnOnly, None) => {}
            _ => out.push(format!("host {db} {user} all scram-sha-256")),
        }
        out.push(format!("host all {user} all reject"));
    }
    out.push(END.to_string());
    out.join("\n") + "\n"
}

/// `existing` with its managed block replaced by `block` (placed first when there was none).
pub fn splice(existing: &str, block: &str) -> String {
    let lines: Vec<&str> = existing.lines().collect();
    let start = lines.iter().position(|l| l.trim() == BEGIN);
    let end = lines.iter().position(|l| l.trim() == END);
    match (start, end) {
        (Some(s), Some(e)) if e >= s => {
            let mut out = lines[..s].join("\n");
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(block);
            let rest = lines[e + 1..].join("\n");
            if !rest.is_empty() {
                out.push_str(&rest);
                out.push('\n');
            }
            out
        }
        _ => {
            let mut out = block.to_string();
            out.push_str(existing);
            if !existing.is_empty() && !existing.ends_with('\n') {
                out.push('\n');
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(name: &str, mode: AccessMode, subnet: &str) -> DbTenant {
        let mut t = crate::assignment::fixture(name);
        t.db = crate::assignment::DbSpec { vpn_subnet: subnet.into(), connection_limit: 1, access_mode: mode, ..t.db };
        t
    }

    #[test]
    fn renders_rules_per_access_mode() {
        let mut own = tenant("solo", AccessMode::Public, "198.18.3.0/24");
        own.db.isolation = crate::assignment::Isolation::Database;
        let block = render(
            &[
                tenant("acme", AccessMode::VpnOnly, "198.18.1.0/24"),
                tenant("globex", AccessMode::Hybrid, "198.18.2.0/24"),
                own,
            ],
            "postgres",
            None,
        );
        assert_eq!(
            block,
            format!(
                "{BEGIN}\nhost postgres tenant_acme_user 198.18.1.0/24 scram-sha-256\nhost all tenant_acme_user all reject\n\
                 host postgres tenant_globex_user all scram-sha-256\nhost all tenant_globex_user all reject\n\
                 host tenant_solo tenant_solo_user all scram-sha-256\nhost all tenant_solo_user all reject\n{END}\n"
            )
        );
        let pooled = render(
            &[tenant("acme", AccessMode::VpnOnly, "198.18.1.0/24")],
            "postgres",
            Some(Pooler::Tcp([192, 0, 2, 9].into())),
        );
        assert!(pooled.contains(
            "host postgres tenant_acme_user 192.0.2.9/32 scram-sha-256\nhost postgres tenant_acme_user 198.18.1.0/24"
        ));
        assert!(render(&[tenant("acme", AccessMode::Public, "")], "odd db\"name", None)
            .contains("host all tenant_acme_user all scram"));
        let bad = render(
            &[tenant("evil", AccessMode::VpnOnly, "1.2.3.4/24 trust\nhost all all 0.0.0.0/0 trust")],
            "postgres",
            None,
        );
        assert!(!bad.contains("trust"), "{bad}");
    }

    #[test]
    fn splice_puts_the_block_first_once_and_replaces_it_later() {
        let original = "local all all trust\nhost all all 0.0.0.0/0 scram-sha-256\n";
        let first =
            splice(original, &render(&[tenant("acme", AccessMode::VpnOnly, "198.18.1.0/24")], "postgres", None));
        assert!(first.starts_with(BEGIN));
        assert!(first.ends_with(original));
        let again = splice(&first, &render(&[], "postgres", None));
        assert_eq!(again, format!("{BEGIN}\n{END}\n{original}"));
        assert_eq!(splice(&again, &render(&[], "postgres", None)), again, "idempotent");
    }
}
