//! The `db` role driver for SQL Server (seed 000 §4.4), with tiberius: a database per tenant.
//! `observe` reads the catalogs, `plan` (pure, unit tested) lists the T-SQL that makes the server
//! match the desired state — empty when it already does — and `apply` runs it statement by
//! statement (`CREATE/ALTER DATABASE` cannot run inside a transaction).
//!
//! Per tenant `t`: database `tenant_t` carrying the extended property `berqenas = managed` (only
//! such databases are ever dropped); login `tenant_t_user` created `WITH PASSWORD = 0x… HASHED`
//! from the hash the coordinator holds, so no plaintext travels; a user in its database in
//! `db_datareader`, `db_datawriter` and `db_ddladmin`; the seed's `events` table; the data
//! file's `MAXSIZE` at the quota, and over the quota `DENY INSERT, UPDATE` (the tenant is not
//! the database owner, so it cannot lift it) until it is back under. Suspend/delete disable the
//! login and end its sessions; purge drops the login, then the database.
//!
//! The agent is sysadmin and a DDL trigger runs as whoever fires it, so a database-scoped DDL
//! trigger a tenant (a `db_ddladmin`) created would run the agent's statements' events with
//! sysadmin rights. Two rules close that: the tenant's user is denied `ALTER ANY DATABASE DDL
//! TRIGGER` (a DENY beats its `db_ddladmin` membership; observed and kept, and denied before the
//! user joins any role), and every statement the agent runs inside a tenant database is
//! [`guarded`]: the same batch first runs `DISABLE TRIGGER ALL ON DATABASE` (which raises no DDL
//! event), then drops every database-level DDL trigger (this driver creates none, so each is a
//! tenant's; `DROP_TRIGGER` is an event, but nothing is enabled by then), and only then the
//! statement, aborting the batch if any of that fails. Server-level (`ON ALL SERVER`) triggers
//! need `CONTROL SERVER`, which no tenant login has, and the agent runs no DML in tenant
//! databases, so no tenant DML trigger ever runs as the agent.
//!
//! Identifiers come only from validated tenant names (`[a-z][a-z0-9_]{1,30}`) and are bracketed;
//! the hash is checked to be exactly a SQL Server hash before it becomes a binary literal;
//! everything else is an integer.

use crate::assignment::{is_mssql_hash, Assignment, DbType, Role};
use crate::driver::{Driver, Status, Usage};
use std::collections::{BTreeMap, BTreeSet};

/// Extended property marking databases this driver created.
const MARKER: &str = "berqenas";

/// Database roles the tenant's user is a member of (seed 000 §4.4).
pub const ROLES: [&str; 3] = ["db_datareader", "db_datawriter", "db_ddladmin"];

/// Smallest data-file cap: SQL Server cannot shrink a cap below the file's current size, and a
/// new database's files start at a few MB.
const MIN_MAXSIZE_MB: u64 = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedLogin {
    pub disabled: bool,
    /// `0x0200…` as the server stores it.
    pub password_hash: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedTenant {
    pub database: bool,
    /// The database carries this driver's marker.
    pub managed: bool,
    pub login: Option<ObservedLogin>,
    /// The login is mapped to a user in its database.
    pub user: bool,
    pub roles: BTreeSet<String>,
    pub events: bool,
    /// The data file's cap in MB (None: unlimited).
    pub max_size_mb: Option<u64>,
    /// INSERT and UPDATE are denied to the user at database scope.
    pub writes_denied: bool,
    /// `ALTER ANY DATABASE DDL TRIGGER` is denied to the user.
    pub triggers_denied: bool,
    /// Database-level DDL triggers in the database (`sys.triggers`, `parent_class = 0`): this
    /// driver creates none, so every one was planted by someone else.
    pub ddl_triggers: u32,
    /// Reserved space in the database (`sp_spaceused`).
    pub bytes: u64,
    /// Open sessions of the tenant's login.
    pub connections: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub tenants: BTreeMap<String, ObservedTenant>,
}

fn name_ok(n: &str) -> bool {
    let mut chars = n.chars();
    (2..=31).contains(&n.len())
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn b(ident: &str) -> String {
    format!("[{ident}]")
}

/// `sql` run inside database `db` (no `USE`, so the connection's context never changes).
fn in_db(db: &str, sql: &str) -> String {
    format!("EXEC {}.sys.sp_executesql N'{}'", b(db), sql.replace('\'', "''"))
}

/// Disables, then drops, every database-level DDL trigger of the current database. `DISABLE
/// TRIGGER` is no DDL event, so nothing fires for it; the drops are `DROP_TRIGGER` events, but by
/// then every trigger is disabled. The list is read when the batch runs, not when it was planned.
/// `XACT_ABORT` ends the batch at the first error, so nothing after a failed guard runs.
const TRIGGER_GUARD: &str = "SET XACT_ABORT ON; DISABLE TRIGGER ALL ON DATABASE; DECLARE @drop nvarchar(max) = N''; \
     SELECT @drop = @drop + N'DROP TRIGGER ' + QUOTENAME(name) + N' ON DATABASE; ' FROM sys.triggers \
     WHERE parent_class = 0; EXEC (@drop);";

/// `sql` run inside tenant database `db` after the [`TRIGGER_GUARD`], in one batch: no trigger
/// another principal created can fire, as the agent, on what `sql` does.
fn guarded(db: &str, sql: &str) -> String {
    in_db(db, &format!("{TRIGGER_GUARD} {sql}"))
}

/// The guard alone: removes the database-level DDL triggers of `db`.
fn drop_ddl_triggers(db: &str) -> String {
    in_db(db, TRIGGER_GUARD)
}

fn kill_sessions(login: &str) -> String {
    format!(
        "DECLARE @k nvarchar(max) = N''; SELECT @k = @k + N'KILL ' + CAST(session_id AS nvarchar(10)) + N'; ' \
         FROM sys.dm_exec_sessions WHERE login_name = N'{login}'; EXEC (@k)"
    )
}

/// The data-file cap for `a`, in MB.
pub fn max_size_mb(a: &Assignment) -> u64 {
    (a.db_quota_bytes / (1024 * 1024)).max(MIN_MAXSIZE_MB)
}

/// The database uses more than the tenant's quota.
pub fn over_quota(a: &Assignment, o: &ObservedTenant) -> bool {
    o.bytes > a.db_quota_bytes
}

/// Pure: the T-SQL for one tenant, or why it cannot be provided.
pub fn tenant_steps(a: &Assignment, o: &ObservedTenant) -> Result<Vec<String>, String> {
    if !name_ok(&a.name) {
        return Err("invalid tenant name".into());
    }
    let (db, login) = (format!("tenant_{}", a.name), format!("tenant_{}_user", a.name));
    let (qd, ql) = (b(&db), b(&login));
    let run = a.runs();
    let hash = is_mssql_hash(&a.db_password_verifier).then_some(a.db_password_verifier.as_str());
    let mut sql = Vec::new();
    if !o.database {
        sql.push(format!("CREATE DATABASE {qd}"));
        sql.push(guarded(&db, &format!("EXEC sys.sp_addextendedproperty @name = N'{MARKER}', @value = N'managed'")));
    } else if !o.managed {
        return Err(format!("database {db} exists but was not created by Berqenas; refusing to take it over"));
    } else if o.ddl_triggers > 0 {
        // Every later step is guarded too; this one removes them even when nothing else is due.
        sql.push(drop_ddl_triggers(&db));
    }
    match (&o.login, hash) {
        (None, Some(hash)) => {
            sql.push(format!(
                "CREATE LOGIN {ql} WITH PASSWORD = {hash} HASHED, CHECK_POLICY = OFF, CHECK_EXPIRATION = OFF, \
                 DEFAULT_DATABASE = {qd}"
            ));
            if !run {
                sql.push(format!("ALTER LOGIN {ql} DISABLE"));
            }
        }
        (None, None) => return Err("no SQL Server password hash for this tenant".into()),
        (Some(l), hash) => {
            if let Some(hash) = hash.filter(|h| !h.eq_ignore_ascii_case(&l.password_hash)) {
                sql.push(format!("ALTER LOGIN {ql} WITH PASSWORD = {hash} HASHED"));
            }
            if l.disabled && run {
                sql.push(format!("ALTER LOGIN {ql} ENABLE"));
            } else if !l.disabled && !run {
                sql.push(format!("ALTER LOGIN {ql} DISABLE"));
                sql.push(kill_sessions(&login));
            }
        }
    }
    if !o.user {
        sql.push(guarded(&db, &format!("CREATE USER {ql} FOR LOGIN {ql} WITH DEFAULT_SCHEMA = dbo")));
    }
    // Before any role: the user never holds db_ddladmin's right to create DDL triggers.
    if !o.triggers_denied {
        sql.push(guarded(&db, &format!("DENY ALTER ANY DATABASE DDL TRIGGER TO {ql}")));
    }
    for role in ROLES.iter().filter(|r| !o.roles.contains(**r)) {
        sql.push(guarded(&db, &format!("ALTER ROLE {} ADD MEMBER {ql}", b(role))));
    }
    if !o.events {
        sql.push(guarded(
            &db,
            "CREATE TABLE dbo.events (id uniqueidentifier NOT NULL DEFAULT NEWID() PRIMARY KEY, \
             device_id nvarchar(4000), event_type nvarchar(100), payload nvarchar(max), \
             created_at datetimeoffset NOT NULL DEFAULT SYSDATETIMEOFFSET())",
        ));
        sql.push(guarded(&db, "CREATE INDEX events_created_at ON dbo.events (created_at)"));
    }
    let cap = max_size_mb(a);
    if o.max_size_mb != Some(cap) {
        // ALTER_DATABASE is a server-scoped event, but the guard costs nothing and covers an
        // engine that would raise it in the database too.
        sql.push(guarded(&db, &format!("ALTER DATABASE {qd} MODIFY FILE (NAME = N'{db}', MAXSIZE = {cap}MB)")));
    }
    let over = over_quota(a, o);
    if over && !o.writes_denied {
        sql.push(guarded(&db, &format!("DENY INSERT, UPDATE TO {ql}")));
    } else if !over && o.writes_denied {
        sql.push(guarded(&db, &format!("REVOKE INSERT, UPDATE FROM {ql}")));
    }
    Ok(sql)
}

/// Pure: per tenant (desired or to purge), the T-SQL that makes `observed` match `desired`, or
/// why that tenant cannot be provided.
pub fn plan(desired: &[Assignment], observed: &Observed) -> BTreeMap<String, Result<Vec<String>, String>> {
    let mut out = BTreeMap::new();
    let empty = ObservedTenant::default();
    let mine: Vec<&Assignment> = served(desired).collect();
    for a in &mine {
        let o = observed.tenants.get(&a.name).unwrap_or(&empty);
        out.insert(a.name.clone(), tenant_steps(a, o));
    }
    for (name, o) in &observed.tenants {
        if mine.iter().any(|a| &a.name == name) || !o.managed || !name_ok(name) {
            continue;
        }
        let (db, login) = (format!("tenant_{name}"), format!("tenant_{name}_user"));
        let mut sql = Vec::new();
        if o.login.is_some() {
            sql.push(format!("ALTER LOGIN {} DISABLE", b(&login)));
            sql.push(kill_sessions(&login));
            sql.push(format!("DROP LOGIN {}", b(&login)));
        }
        // The login is gone, so nobody can plant a trigger between this and the ALTER.
        sql.push(drop_ddl_triggers(&db));
        sql.push(format!("ALTER DATABASE {} SET SINGLE_USER WITH ROLLBACK IMMEDIATE", b(&db)));
        sql.push(format!("DROP DATABASE {}", b(&db)));
        out.insert(name.clone(), Ok(sql));
    }
    out
}

/// This driver's assignments: db role, SQL Server.
fn served(desired: &[Assignment]) -> impl Iterator<Item = &Assignment> {
    desired.iter().filter(|a| a.has_role(Role::Db) && a.db_type == DbType::Mssql)
}

/// Statements are logged without password hashes.
fn redact(sql: &str) -> String {
    match sql.find(" PASSWORD = ") {
        Some(i) => format!("{} PASSWORD = … HASHED", &sql[..i]),
        None => sql.to_string(),
    }
}

/// `"2624 KB"` (sp_spaceused) in bytes.
fn parse_kb(raw: &str) -> Option<u64> {
    let n = raw.trim().strip_suffix("KB")?.trim();
    n.parse::<u64>().ok().map(|kb| kb * 1024)
}

type Client = tiberius::Client<tokio_util::compat::Compat<tokio::net::TcpStream>>;

async fn connect(url: &str) -> Result<Client, String> {
    use tokio_util::compat::TokioAsyncWriteCompatExt;
    let config =
        tiberius::Config::from_ado_string(url).map_err(|e| format!("invalid SQL Server connection string: {e}"))?;
    let tcp =
        tokio::net::TcpStream::connect(config.get_addr()).await.map_err(|e| format!("cannot reach SQL Server: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| format!("socket: {e}"))?;
    tiberius::Client::connect(config, tcp.compat_write()).await.map_err(|e| format!("cannot log in to SQL Server: {e}"))
}

async fn rows(client: &mut Client, sql: &str) -> Result<Vec<tiberius::Row>, tiberius::error::Error> {
    client.simple_query(sql).await?.into_first_result().await
}

async fn observe(client: &mut Client) -> Result<Observed, tiberius::error::Error> {
    let mut o = Observed::default();
    for row in rows(client, "SELECT name FROM sys.databases WHERE name LIKE N'tenant[_]%'").await? {
        let Some(name) = row.get::<&str, _>(0).and_then(|d| d.strip_prefix("tenant_")).filter(|n| name_ok(n)) else {
            continue;
        };
        o.tenants.entry(name.to_string()).or_default().database = true;
    }
    let logins = "SELECT name, is_disabled, CONVERT(varchar(300), CAST(LOGINPROPERTY(name, 'PasswordHash') AS varbinary(256)), 1) \
                  FROM sys.sql_logins WHERE name LIKE N'tenant[_]%[_]user'";
    for row in rows(client, logins).await? {
        let name = row.get::<&str, _>(0).unwrap_or_default();
        let Some(t) = name.strip_prefix("tenant_").and_then(|n| n.strip_suffix("_user")).filter(|n| name_ok(n)) else {
            continue;
        };
        let login = ObservedLogin {
            disabled: row.get::<bool, _>(1).unwrap_or(false),
            password_hash: row.get::<&str, _>(2).unwrap_or_default().to_string(),
        };
        o.tenants.entry(t.to_string()).or_default().login = Some(login);
    }
    let sessions = "SELECT login_name, COUNT(*) FROM sys.dm_exec_sessions WHERE login_name LIKE N'tenant[_]%[_]user' \
                    GROUP BY login_name";
    for row in rows(client, sessions).await? {
        let name = row.get::<&str, _>(0).unwrap_or_default();
        let Some(t) = name.strip_prefix("tenant_").and_then(|n| n.strip_suffix("_user")).filter(|n| name_ok(n)) else {
            continue;
        };
        let n = row.get::<i32, _>(1).unwrap_or(0);
        o.tenants.entry(t.to_string()).or_default().connections = u32::try_from(n).unwrap_or(0);
    }
    let names: Vec<String> = o.tenants.iter().filter(|(_, t)| t.database).map(|(n, _)| n.clone()).collect();
    for name in names {
        let (db, login) = (b(&format!("tenant_{name}")), format!("tenant_{name}_user"));
        let sql = format!(
            "SELECT \
             (SELECT CAST(value AS nvarchar(100)) FROM {db}.sys.extended_properties WHERE class = 0 AND name = N'{MARKER}'), \
             (SELECT COUNT(*) FROM {db}.sys.database_principals WHERE name = N'{login}'), \
             (SELECT STRING_AGG(r.name, N',') FROM {db}.sys.database_role_members m \
                JOIN {db}.sys.database_principals r ON r.principal_id = m.role_principal_id \
                JOIN {db}.sys.database_principals u ON u.principal_id = m.member_principal_id WHERE u.name = N'{login}'), \
             (SELECT COUNT(*) FROM {db}.sys.tables t JOIN {db}.sys.schemas s ON s.schema_id = t.schema_id \
                WHERE t.name = N'events' AND s.name = N'dbo'), \
             (SELECT max_size FROM {db}.sys.database_files WHERE file_id = 1), \
             (SELECT COUNT(*) FROM {db}.sys.database_permissions p \
                JOIN {db}.sys.database_principals u ON u.principal_id = p.grantee_principal_id \
                WHERE u.name = N'{login}' AND p.class = 0 AND p.state = 'D' AND p.permission_name IN ('INSERT', 'UPDATE')), \
             (SELECT COUNT(*) FROM {db}.sys.database_permissions p \
                JOIN {db}.sys.database_principals u ON u.principal_id = p.grantee_principal_id \
                WHERE u.name = N'{login}' AND p.class = 0 AND p.state = 'D' \
                AND p.permission_name = 'ALTER ANY DATABASE DDL TRIGGER'), \
             (SELECT COUNT(*) FROM {db}.sys.triggers WHERE parent_class = 0)"
        );
        let Some(row) = rows(client, &sql).await?.into_iter().next() else { continue };
        let t = o.tenants.entry(name.clone()).or_default();
        t.managed = row.get::<&str, _>(0) == Some("managed");
        t.user = row.get::<i32, _>(1).unwrap_or(0) > 0;
        t.roles = row
            .get::<&str, _>(2)
            .unwrap_or_default()
            .split(',')
            .filter(|r| !r.is_empty())
            .map(str::to_string)
            .collect();
        t.events = row.get::<i32, _>(3).unwrap_or(0) > 0;
        t.max_size_mb = row.get::<i32, _>(4).and_then(|pages| u64::try_from(pages).ok()).map(|pages| pages / 128);
        t.writes_denied = row.get::<i32, _>(5).unwrap_or(0) >= 2;
        t.triggers_denied = row.get::<i32, _>(6).unwrap_or(0) > 0;
        t.ddl_triggers = row.get::<i32, _>(7).and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
        let space = rows(client, &format!("EXEC {db}.sys.sp_spaceused @oneresultset = 1")).await?;
        t.bytes = space.first().and_then(|r| r.get::<&str, _>("reserved")).and_then(parse_kb).unwrap_or(0);
    }
    Ok(o)
}

/// Makes a SQL Server match the `db` assignments of this node that ask for SQL Server.
pub struct MssqlDriver {
    /// ADO connection string of a login with `sysadmin` (or dbcreator + securityadmin) on the
    /// node's SQL Server; it stays on the node.
    pub url: String,
}

impl MssqlDriver {
    async fn pass(&self, desired: &[Assignment]) -> crate::driver::PassResult {
        let mut client = connect(&self.url).await?;
        let observed = observe(&mut client).await.map_err(|e| format!("observing SQL Server failed: {e}"))?;
        let usage = served(desired)
            .filter_map(|a| {
                let o = observed.tenants.get(&a.name)?;
                Some((
                    a.name.clone(),
                    Usage { db_bytes: o.bytes, quota_exceeded: over_quota(a, o), connections: o.connections },
                ))
            })
            .collect();
        let mut errors = BTreeMap::new();
        for (tenant, steps) in plan(desired, &observed) {
            let steps = match steps {
                Ok(s) => s,
                Err(e) => {
                    errors.insert(tenant, e);
                    continue;
                }
            };
            for sql in steps {
                tracing::info!(tenant = %tenant, sql = %redact(&sql), "mssql driver applies");
                let result = async { client.simple_query(sql.as_str()).await?.into_results().await }.await;
                if let Err(e) = result {
                    tracing::warn!(tenant = %tenant, error = %e, "statement failed");
                    errors.insert(tenant.clone(), format!("{e}"));
                    break;
                }
            }
        }
        let _ = client.close().await;
        Ok((errors, usage))
    }
}

impl Driver for MssqlDriver {
    fn name(&self) -> &'static str {
        "mssql"
    }

    fn reconcile(&mut self, desired: &[Assignment]) -> Vec<Status> {
        let (served, other): (Vec<Assignment>, Vec<Assignment>) =
            desired.iter().cloned().partition(|a| a.db_type == DbType::Mssql);
        let handle = tokio::runtime::Handle::current();
        let result = handle.block_on(self.pass(&served));
        let refused =
            other.into_iter().map(|a| (a.name, "this node's driver serves SQL Server only".to_string())).collect();
        crate::driver::statuses(&served, &result, refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "0x020001020304EFE8DF30D6F1BAC62F0DC1D5D118928FB3BD18FFEAA614F7EEC41FEC4D9058B06A8A44642527DA0A63DDB7F8E92567DCA8A3808C2EC1D258F12D5DBDE8DE30CA";

    fn a(name: &str) -> Assignment {
        Assignment {
            gateway_address: String::new(),
            db_type: DbType::Mssql,
            isolation: crate::assignment::Isolation::Database,
            db_quota_bytes: 1024 * 1024 * 1024,
            connection_limit: 10,
            events_per_min: 1000,
            access_mode: crate::assignment::AccessMode::Public,
            vpn_enabled: false,
            db_password_verifier: HASH.into(),
            ..crate::assignment::fixture(name)
        }
    }

    fn converged(desired: &Assignment) -> ObservedTenant {
        ObservedTenant {
            database: true,
            managed: true,
            login: Some(ObservedLogin { disabled: false, password_hash: desired.db_password_verifier.clone() }),
            user: true,
            roles: ROLES.iter().map(|r| r.to_string()).collect(),
            events: true,
            max_size_mb: Some(max_size_mb(desired)),
            writes_denied: false,
            triggers_denied: true,
            ddl_triggers: 0,
            bytes: 10 * 1024 * 1024,
            connections: 0,
        }
    }

    fn steps(desired: &[Assignment], observed: &Observed, name: &str) -> Vec<String> {
        plan(desired, observed).remove(name).expect("planned").expect("possible")
    }

    #[test]
    fn fresh_tenant_gets_database_hashed_login_roles_events_and_cap() {
        let sql = steps(&[a("acme")], &Observed::default(), "acme");
        let g = |stmt: &str| guarded("tenant_acme", stmt);
        assert_eq!(
            sql,
            vec![
                "CREATE DATABASE [tenant_acme]".to_string(),
                g("EXEC sys.sp_addextendedproperty @name = N'berqenas', @value = N'managed'"),
                format!(
                    "CREATE LOGIN [tenant_acme_user] WITH PASSWORD = {HASH} HASHED, CHECK_POLICY = OFF, \
                     CHECK_EXPIRATION = OFF, DEFAULT_DATABASE = [tenant_acme]"
                ),
                g("CREATE USER [tenant_acme_user] FOR LOGIN [tenant_acme_user] WITH DEFAULT_SCHEMA = dbo"),
                g("DENY ALTER ANY DATABASE DDL TRIGGER TO [tenant_acme_user]"),
                g("ALTER ROLE [db_datareader] ADD MEMBER [tenant_acme_user]"),
                g("ALTER ROLE [db_datawriter] ADD MEMBER [tenant_acme_user]"),
                g("ALTER ROLE [db_ddladmin] ADD MEMBER [tenant_acme_user]"),
                g("CREATE TABLE dbo.events (id uniqueidentifier NOT NULL DEFAULT NEWID() PRIMARY KEY, device_id nvarchar(4000), event_type nvarchar(100), payload nvarchar(max), created_at datetimeoffset NOT NULL DEFAULT SYSDATETIMEOFFSET())"),
                g("CREATE INDEX events_created_at ON dbo.events (created_at)"),
                g("ALTER DATABASE [tenant_acme] MODIFY FILE (NAME = N'tenant_acme', MAXSIZE = 1024MB)"),
            ]
        );
        assert!(!sql.iter().any(|s| s.contains("PASSWORD = '")), "no plaintext password, ever");
    }

    #[test]
    fn converged_server_yields_empty_plan() {
        let desired = a("acme");
        let mut o = Observed::default();
        o.tenants.insert("acme".into(), converged(&desired));
        assert_eq!(steps(&[desired], &o, "acme"), Vec::<String>::new());
    }

    #[test]
    fn lifecycle_password_and_quota_drift_are_planned() {
        let desired = a("acme");
        let mut o = Observed::default();
        let mut t = converged(&desired);
        t.roles.remove("db_datawriter");
        t.login = Some(ObservedLogin { disabled: false, password_hash: "0x0200FFFFFFFF".into() });
        t.bytes = desired.db_quota_bytes + 1;
        o.tenants.insert("acme".into(), t);
        let mut suspended = desired.clone();
        suspended.lifecycle = crate::assignment::Lifecycle::Suspended;
        let sql = steps(&[suspended], &o, "acme");
        assert_eq!(sql[0], format!("ALTER LOGIN [tenant_acme_user] WITH PASSWORD = {HASH} HASHED"));
        assert_eq!(sql[1], "ALTER LOGIN [tenant_acme_user] DISABLE");
        assert!(sql[2].starts_with("DECLARE @k") && sql[2].contains("login_name = N'tenant_acme_user'"));
        assert_eq!(sql[3], guarded("tenant_acme", "ALTER ROLE [db_datawriter] ADD MEMBER [tenant_acme_user]"));
        assert_eq!(sql[4], guarded("tenant_acme", "DENY INSERT, UPDATE TO [tenant_acme_user]"));
        // Back under the quota, the deny is lifted.
        let mut t = converged(&desired);
        t.writes_denied = true;
        o.tenants.insert("acme".into(), t);
        assert_eq!(
            steps(std::slice::from_ref(&desired), &o, "acme"),
            vec![guarded("tenant_acme", "REVOKE INSERT, UPDATE FROM [tenant_acme_user]")]
        );
    }

    #[test]
    fn purge_drops_only_managed_databases_login_first() {
        let desired = a("acme");
        let mut o = Observed::default();
        o.tenants.insert("acme".into(), converged(&desired));
        let mut foreign = converged(&desired);
        foreign.managed = false;
        o.tenants.insert("legacy".into(), foreign);
        let all = plan(&[], &o);
        assert!(!all.contains_key("legacy"), "never drops what it did not create");
        let sql = all.get("acme").cloned().expect("planned").expect("possible");
        assert_eq!(sql[0], "ALTER LOGIN [tenant_acme_user] DISABLE");
        assert_eq!(sql[2], "DROP LOGIN [tenant_acme_user]");
        assert_eq!(sql[3], drop_ddl_triggers("tenant_acme"), "no trigger fires on the ALTER DATABASE");
        assert_eq!(sql[4], "ALTER DATABASE [tenant_acme] SET SINGLE_USER WITH ROLLBACK IMMEDIATE");
        assert_eq!(sql[5], "DROP DATABASE [tenant_acme]");
        // And refuses to take over a database of the same name it did not create.
        let mut o = Observed::default();
        o.tenants.insert("acme".into(), ObservedTenant { database: true, ..ObservedTenant::default() });
        assert!(plan(&[desired], &o)["acme"].as_ref().is_err_and(|e| e.contains("not created by Berqenas")));
    }

    #[test]
    fn anything_but_a_hash_never_reaches_sql() {
        let mut bad = a("acme");
        bad.db_password_verifier = "0x0200'; DROP LOGIN sa; --".into();
        assert!(plan(&[bad.clone()], &Observed::default())["acme"].is_err());
        bad.db_password_verifier = "SCRAM-SHA-256$4096:AQ==$AQ==:AQ==".into();
        assert!(plan(&[bad], &Observed::default())["acme"].is_err(), "a PostgreSQL verifier is not a login hash");
        assert_eq!(
            redact(&format!("CREATE LOGIN [x] WITH PASSWORD = {HASH} HASHED")),
            "CREATE LOGIN [x] WITH PASSWORD = … HASHED"
        );
        assert_eq!(parse_kb("2624 KB"), Some(2624 * 1024));
        assert_eq!(parse_kb("12 MB"), None);
    }

    /// The prefix every statement run inside `tenant_acme` must start with.
    const GUARD_PREFIX: &str =
        "EXEC [tenant_acme].sys.sp_executesql N'SET XACT_ABORT ON; DISABLE TRIGGER ALL ON DATABASE; ";

    #[test]
    fn tenant_ddl_triggers_are_disabled_before_agent_ddl() {
        // The batch, exactly: disable all, drop all (listed when it runs), then the statement,
        // with the quotes doubled once for sp_executesql.
        assert_eq!(
            guarded("tenant_acme", "DENY INSERT, UPDATE TO [tenant_acme_user]"),
            "EXEC [tenant_acme].sys.sp_executesql N'SET XACT_ABORT ON; DISABLE TRIGGER ALL ON DATABASE; \
             DECLARE @drop nvarchar(max) = N''''; SELECT @drop = @drop + N''DROP TRIGGER '' + QUOTENAME(name) \
             + N'' ON DATABASE; '' FROM sys.triggers WHERE parent_class = 0; EXEC (@drop); \
             DENY INSERT, UPDATE TO [tenant_acme_user]'"
        );
        // A tenant's trigger on an otherwise converged database is removed on the next pass.
        let desired = a("acme");
        let mut o = Observed::default();
        let mut t = converged(&desired);
        t.ddl_triggers = 1;
        o.tenants.insert("acme".into(), t.clone());
        assert_eq!(steps(std::slice::from_ref(&desired), &o, "acme"), vec![drop_ddl_triggers("tenant_acme")]);
        // Over quota with a trigger in place: the triggers go first, and the DENY (a DDL event)
        // runs only behind the guard, in the same batch.
        t.bytes = desired.db_quota_bytes + 1;
        o.tenants.insert("acme".into(), t);
        let sql = steps(std::slice::from_ref(&desired), &o, "acme");
        assert_eq!(
            sql,
            vec![drop_ddl_triggers("tenant_acme"), guarded("tenant_acme", "DENY INSERT, UPDATE TO [tenant_acme_user]")]
        );
        let deny = &sql[1];
        let (disable, drop, stmt) =
            (deny.find("DISABLE TRIGGER ALL"), deny.find("DROP TRIGGER"), deny.find("DENY INSERT"));
        assert!(disable.is_some() && disable < drop && drop < stmt, "{deny}");
    }

    #[test]
    fn tenant_cannot_create_database_ddl_triggers() {
        // A new user is denied the right before it joins db_ddladmin.
        let fresh = steps(&[a("acme")], &Observed::default(), "acme");
        let deny = fresh
            .iter()
            .position(|s| s.ends_with("DENY ALTER ANY DATABASE DDL TRIGGER TO [tenant_acme_user]'"))
            .expect("denied");
        let user = fresh.iter().position(|s| s.contains("CREATE USER")).expect("user");
        let first_role = fresh.iter().position(|s| s.contains("ALTER ROLE")).expect("roles");
        assert!(user < deny && deny < first_role, "{fresh:#?}");
        // A user from before this rule gets the DENY; once observed, it is kept and not repeated.
        let desired = a("acme");
        let mut o = Observed::default();
        let mut t = converged(&desired);
        t.triggers_denied = false;
        o.tenants.insert("acme".into(), t);
        assert_eq!(
            steps(std::slice::from_ref(&desired), &o, "acme"),
            vec![guarded("tenant_acme", "DENY ALTER ANY DATABASE DDL TRIGGER TO [tenant_acme_user]")]
        );
        o.tenants.insert("acme".into(), converged(&desired));
        assert!(steps(&[desired], &o, "acme").is_empty());
    }

    #[test]
    fn every_statement_inside_a_tenant_database_is_guarded() {
        let desired = a("acme");
        let mut drifted = converged(&desired);
        drifted.roles.clear();
        drifted.user = false;
        drifted.events = false;
        drifted.triggers_denied = false;
        drifted.ddl_triggers = 3;
        drifted.max_size_mb = None;
        drifted.bytes = desired.db_quota_bytes + 1;
        let mut denied = converged(&desired);
        denied.writes_denied = true;
        let mut suspended = desired.clone();
        suspended.lifecycle = crate::assignment::Lifecycle::Suspended;
        let mut plans = vec![steps(std::slice::from_ref(&desired), &Observed::default(), "acme")];
        for (d, t) in [(&desired, drifted), (&suspended, denied)] {
            let mut o = Observed::default();
            o.tenants.insert("acme".into(), t);
            plans.push(steps(std::slice::from_ref(d), &o, "acme"));
        }
        let mut o = Observed::default();
        o.tenants.insert("acme".into(), converged(&desired));
        plans.push(plan(&[], &o).remove("acme").expect("purge").expect("possible"));
        // What is not guarded is server-scoped and runs in master, where no tenant trigger is.
        let server = [
            "CREATE DATABASE ",
            "CREATE LOGIN ",
            "ALTER LOGIN ",
            "DROP LOGIN ",
            "DECLARE @k",
            "ALTER DATABASE [tenant_acme] SET SINGLE_USER",
            "DROP DATABASE ",
        ];
        for sql in plans.iter().flatten() {
            assert!(
                sql.starts_with(GUARD_PREFIX) || server.iter().any(|p| sql.starts_with(p)),
                "runs in the tenant database without the trigger guard: {sql}"
            );
        }
    }
}
