//! How a backup meets PostgreSQL: the libpq environment `pg_dump` and `psql` connect with (the
//! agent's superuser URL, passed in the environment, never in arguments), `pg_dump`'s arguments
//! (the tenant's schema, dumped as its owner role), and the SQL a restore wraps around the dump
//! (pure renderers).
//!
//! A restore runs the dump as the tenant's owner role (`SET ROLE`), never as the superuser: the
//! dump is the tenant's content (its functions, defaults, triggers), and definitions run while
//! restoring must have no more rights than the tenant. Only the wrapping statements (renaming
//! schemas, the temporary right to create the schema) run as the superuser, and all of it is one
//! transaction that psql commits only when the last authenticated chunk was fed to it.

use percent_encoding::percent_decode_str;

#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("invalid PostgreSQL URL: {0}")]
    Parse(#[from] url::ParseError),
    #[error("the PostgreSQL URL has no host")]
    NoHost,
}

/// libpq's environment for the agent's superuser URL, connecting to `database`.
pub fn libpq_env(url: &str, database: &str) -> Result<Vec<(&'static str, String)>, UrlError> {
    let u = url::Url::parse(url)?;
    let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    let host = u.host_str().ok_or(UrlError::NoHost)?;
    let mut env = vec![
        ("PGHOST", decode(host.trim_start_matches('[').trim_end_matches(']'))),
        ("PGPORT", u.port().unwrap_or(5432).to_string()),
        ("PGUSER", decode(u.username())),
        ("PGDATABASE", database.to_string()),
        ("PGAPPNAME", "berqenas-backup".to_string()),
        ("PGCONNECT_TIMEOUT", "10".to_string()),
        // No ~/.pgpass or service file of whoever runs the agent takes part.
        ("PGPASSFILE", "/dev/null".to_string()),
    ];
    if let Some(p) = u.password() {
        env.push(("PGPASSWORD", decode(p)));
    }
    for (k, v) in u.query_pairs() {
        if k == "sslmode" {
            env.push(("PGSSLMODE", v.into_owned()));
        }
    }
    Ok(env)
}

/// The database the URL names (`postgres` when it names none).
pub fn main_database(url: &str) -> Result<String, UrlError> {
    let u = url::Url::parse(url)?;
    let db = u.path().trim_start_matches('/');
    Ok(if db.is_empty() { "postgres".into() } else { percent_decode_str(db).decode_utf8_lossy().into_owned() })
}

/// The tenant's schema and owner role. `tenant` is a validated tenant name
/// (`[a-z][a-z0-9_]{1,30}`), so these are plain identifiers.
pub fn schema(tenant: &str) -> String {
    format!("tenant_{tenant}")
}

pub fn owner(tenant: &str) -> String {
    format!("tenant_{tenant}_owner")
}

/// `pg_dump`'s arguments: the tenant's schema alone, in plain SQL, waiting at most 30 s for a
/// lock a tenant session holds. It runs as the agent's superuser: no tenant role can read the
/// whole schema and its catalogs (the node hides `pg_proc` and other catalogs from PUBLIC, and the
/// owner role cannot read tables the tenant made with DDL). Reading is safe as the superuser, where
/// replaying is not: pg_dump pins `search_path` to '' and qualifies every name, deparses
/// definitions without running them, and copies tables out without triggers or row policies, so no
/// tenant code runs during a dump. The restore is what runs the tenant's content, and it runs it
/// as the tenant ([`wrap`]).
pub fn dump_args(tenant: &str) -> Vec<String> {
    vec![
        "--format=plain".into(),
        "--no-password".into(),
        format!("--schema={}", schema(tenant)),
        "--lock-wait-timeout=30000".into(),
        "--no-publications".into(),
        "--no-subscriptions".into(),
    ]
}

/// Where a restore puts the backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Into a new schema beside the live one (the live schema untouched).
    Clone { schema: String },
    /// In place of the live schema, swapped in one transaction; the live schema is kept
    /// under `keep` (renamed) until it is dropped after the swap committed.
    Overwrite { keep: String },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a schema name a restore may make (tenant_<tenant>_<suffix>, [a-z0-9_], at most 63 bytes)")]
pub struct InvalidTarget(pub String);

/// A restore target must be a fresh name in the tenant's own namespace.
pub fn check_target(tenant: &str, name: &str) -> Result<(), InvalidTarget> {
    let prefix = format!("{}_", schema(tenant));
    let ok = name.len() <= 63
        && name.len() > prefix.len()
        && name.starts_with(&prefix)
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(InvalidTarget(name.into()))
    }
}

/// Renders the statements before and after the dump. `grant_create`: the owner role lacks CREATE
/// on the database, so it is granted for the transaction (the dump creates its schema) and
/// revoked before the commit. `parked` is the live schema's name while the dump recreates the
/// tenant's. Every name is a validated identifier (see [`check_target`]), quoted anyway.
///
/// Objects the tenant made with DDL belong to its login role, and the dump gives them back to
/// it (`ALTER … OWNER TO tenant_x_user`). PostgreSQL allows that only to a member of the new
/// owner, and only when the new owner may CREATE in the schema, so for the transaction the owner
/// role is a member of the login role, and schemas the owner creates grant the login role
/// USAGE and CREATE. All three are taken back before the commit, and CREATE on the restored
/// schema too: a clone is for reading, and on the live schema the driver's next pass grants it
/// again if the tenant has DDL.
pub fn wrap(tenant: &str, database: &str, mode: &Mode, parked: &str, grant_create: bool) -> (String, String) {
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let (live, own, user) = (q(&schema(tenant)), q(&owner(tenant)), q(&format!("tenant_{tenant}_user")));
    let mut before = String::from("BEGIN;\nSET LOCAL lock_timeout = '10s';\n");
    before.push_str(&format!("ALTER SCHEMA {live} RENAME TO {};\n", q(parked)));
    if grant_create {
        before.push_str(&format!("GRANT CREATE ON DATABASE {} TO {own};\n", q(database)));
    }
    before.push_str(&format!(
        "GRANT {user} TO {own};\nALTER DEFAULT PRIVILEGES FOR ROLE {own} GRANT USAGE, CREATE ON SCHEMAS TO {user};\n\
         SET ROLE {own};\n"
    ));
    let mut after = format!(
        "\nRESET ROLE;\nALTER DEFAULT PRIVILEGES FOR ROLE {own} REVOKE USAGE, CREATE ON SCHEMAS FROM {user};\n\
         REVOKE CREATE ON SCHEMA {live} FROM {user};\nREVOKE {user} FROM {own};\n"
    );
    if grant_create {
        after.push_str(&format!("REVOKE CREATE ON DATABASE {} FROM {own};\n", q(database)));
    }
    match mode {
        Mode::Clone { schema } => {
            after.push_str(&format!("ALTER SCHEMA {live} RENAME TO {};\n", q(schema)));
            after.push_str(&format!("ALTER SCHEMA {} RENAME TO {live};\n", q(parked)));
        }
        Mode::Overwrite { keep } => {
            after.push_str(&format!("ALTER SCHEMA {} RENAME TO {};\n", q(parked), q(keep)));
            // The realtime feed's publication names the events table by identity: it moves to
            // the restored table, or subscribers would follow the kept one.
            let publication = format!("berqenas_rt_{tenant}");
            after.push_str(&format!(
                "DO $bq$ BEGIN IF EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = '{publication}') \
                 AND pg_catalog.to_regclass('{live}.events') IS NOT NULL THEN \
                 ALTER PUBLICATION {} SET TABLE {live}.events; END IF; END $bq$;\n",
                q(&publication)
            ));
        }
    }
    after.push_str("COMMIT;\n");
    (before, after)
}

/// A statement in a dump that would leave the tenant's role during a restore.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the dump changes its session's identity at line {line} ({statement}): refusing to restore it")]
pub struct IdentityChange {
    pub line: u64,
    pub statement: &'static str,
}

/// Lines that would change who a restore runs as: the dump replays as the tenant's owner role
/// inside a superuser session, and any of these would give the rest of it the session's identity
/// or another one. pg_dump writes them only for grants whose grantor is not the object's owner,
/// which a tenant with one login role cannot make; they are refused all the same. Another psql
/// meta-command than `\restrict`/`\unrestrict` is refused too (pg_dump writes none).
const FORBIDDEN: [&str; 7] = [
    "SET SESSION AUTHORIZATION",
    "RESET SESSION AUTHORIZATION",
    "SET ROLE",
    "SET SESSION ROLE",
    "SET LOCAL ROLE",
    "RESET ROLE",
    "\\",
];

/// Reads a plain dump line by line (fed in pieces of any size) and finds lines that would change
/// the restore's identity, outside `COPY … FROM stdin;` data (which is escaped and never runs).
/// A tenant function whose body has a line starting so makes the restore refuse (loudly).
#[derive(Debug, Default)]
pub struct DumpScan {
    partial: Vec<u8>,
    line: u64,
    in_copy: bool,
}

impl DumpScan {
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), IdentityChange> {
        let mut rest = bytes;
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            if self.partial.is_empty() {
                self.check(&rest[..end])?;
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&rest[..end]);
                self.check(&line)?;
            }
            rest = &rest[end + 1..];
        }
        // Only a line's start matters: keep at most enough of an unfinished line to judge it.
        let room = 64usize.saturating_sub(self.partial.len());
        self.partial.extend_from_slice(&rest[..rest.len().min(room)]);
        Ok(())
    }

    pub fn finish(&mut self) -> Result<(), IdentityChange> {
        let line = std::mem::take(&mut self.partial);
        self.check(&line)
    }

    fn check(&mut self, line: &[u8]) -> Result<(), IdentityChange> {
        self.line += 1;
        if self.in_copy {
            self.in_copy = line != b"\\.";
            return Ok(());
        }
        if line.starts_with(b"COPY ") && line.ends_with(b" FROM stdin;") {
            self.in_copy = true;
            return Ok(());
        }
        if line.starts_with(b"\\restrict ") || line.starts_with(b"\\unrestrict ") {
            return Ok(());
        }
        let upper: Vec<u8> = line.iter().take(64).map(u8::to_ascii_uppercase).collect();
        let trimmed = upper.trim_ascii_start();
        match FORBIDDEN.iter().find(|f| trimmed.starts_with(f.as_bytes())) {
            Some(statement) => Err(IdentityChange { line: self.line, statement }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_travels_in_the_environment_decoded() {
        let env =
            libpq_env("postgres://postgres:p%40ss@127.0.0.1:5433/postgres?sslmode=require", "tenant_acme").unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        assert_eq!(get("PGPASSWORD").as_deref(), Some("p@ss"));
        assert_eq!(get("PGPORT").as_deref(), Some("5433"));
        assert_eq!(get("PGDATABASE").as_deref(), Some("tenant_acme"));
        assert_eq!(get("PGSSLMODE").as_deref(), Some("require"));
        assert!(dump_args("acme").iter().all(|a| !a.contains("p@ss")));
        assert_eq!(main_database("postgres://u@h/").unwrap(), "postgres");
    }

    #[test]
    fn restore_targets_stay_in_the_tenants_namespace() {
        assert!(check_target("acme", "tenant_acme_r20261202").is_ok());
        for bad in ["tenant_acme", "tenant_acme_", "tenant_globex_x", "public", "tenant_acme_X", "tenant_acme_a\"b"] {
            assert!(check_target("acme", bad).is_err(), "{bad}");
        }
        assert!(check_target("acme", &format!("tenant_acme_{}", "a".repeat(60))).is_err());
    }

    #[test]
    fn the_dump_runs_as_the_owner_between_superuser_renames() {
        let mode = Mode::Clone { schema: "tenant_acme_r1".into() };
        let (before, after) = wrap("acme", "postgres", &mode, "tenant_acme_bq_live", true);
        let expected_before = [
            "BEGIN;",
            "SET LOCAL lock_timeout = '10s';",
            "ALTER SCHEMA \"tenant_acme\" RENAME TO \"tenant_acme_bq_live\";",
            "GRANT CREATE ON DATABASE \"postgres\" TO \"tenant_acme_owner\";",
            "GRANT \"tenant_acme_user\" TO \"tenant_acme_owner\";",
            "ALTER DEFAULT PRIVILEGES FOR ROLE \"tenant_acme_owner\" GRANT USAGE, CREATE ON SCHEMAS TO \"tenant_acme_user\";",
            "SET ROLE \"tenant_acme_owner\";",
        ];
        assert_eq!(before.lines().collect::<Vec<_>>(), expected_before);
        let expected_after = [
            "",
            "RESET ROLE;",
            "ALTER DEFAULT PRIVILEGES FOR ROLE \"tenant_acme_owner\" REVOKE USAGE, CREATE ON SCHEMAS FROM \"tenant_acme_user\";",
            "REVOKE CREATE ON SCHEMA \"tenant_acme\" FROM \"tenant_acme_user\";",
            "REVOKE \"tenant_acme_user\" FROM \"tenant_acme_owner\";",
            "REVOKE CREATE ON DATABASE \"postgres\" FROM \"tenant_acme_owner\";",
            "ALTER SCHEMA \"tenant_acme\" RENAME TO \"tenant_acme_r1\";",
            "ALTER SCHEMA \"tenant_acme_bq_live\" RENAME TO \"tenant_acme\";",
            "COMMIT;",
        ];
        assert_eq!(after.lines().collect::<Vec<_>>(), expected_after);
        let (_, after) = wrap(
            "acme",
            "postgres",
            &Mode::Overwrite { keep: "tenant_acme_old1".into() },
            "tenant_acme_bq_live",
            false,
        );
        assert!(after.contains("ALTER SCHEMA \"tenant_acme_bq_live\" RENAME TO \"tenant_acme_old1\";\nDO $bq$"));
        assert!(after.contains("ALTER PUBLICATION \"berqenas_rt_acme\" SET TABLE \"tenant_acme\".events;"));
        assert!(after.ends_with("END $bq$;\nCOMMIT;\n"));
        assert!(!after.contains("REVOKE CREATE ON DATABASE"));
    }

    fn scan(text: &str, piece: usize) -> Result<(), IdentityChange> {
        let mut s = DumpScan::default();
        for p in text.as_bytes().chunks(piece) {
            s.feed(p)?;
        }
        s.finish()
    }

    #[test]
    fn identity_changes_outside_copy_data_are_refused_wherever_the_pieces_split() {
        let ok = "\\restrict abc\nSET statement_timeout = 0;\nCOPY tenant_acme.t (a) FROM stdin;\n\
                  SET ROLE postgres;\nRESET SESSION AUTHORIZATION\n\\.\nCREATE TABLE x (a int);\n\\unrestrict abc\n";
        let bad_role = "SET statement_timeout = 0;\nRESET ROLE;\nCREATE TABLE y (a int);\n";
        let bad_session = "COPY t (a) FROM stdin;\n1\n\\.\n  set session authorization postgres;\n";
        let bad_meta = "SET x = 1;\n\\connect - postgres\n";
        for piece in [1, 2, 7, 1000] {
            assert_eq!(scan(ok, piece), Ok(()), "COPY data and \\restrict are data, not statements");
            assert_eq!(scan(bad_role, piece), Err(IdentityChange { line: 2, statement: "RESET ROLE" }));
            assert_eq!(scan(bad_session, piece).map_err(|e| e.line), Err(4));
            assert_eq!(scan(bad_meta, piece).map_err(|e| e.statement), Err("\\"));
        }
    }
}
