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

use crate::assignment::{is_mssql_hash, DbTenant, DbType, Tenant};
use crate::driver::{Change, Driver, Status, Usage};
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
pub fn max_size_mb(a: &DbTenant) -> u64 {
    (a.db.quota_bytes / (1024 * 1024)).max(MIN_MAXSIZE_MB)
}

/// The database uses more than the tenant's quota.
pub fn over_quota(a: &DbTenant, o: &ObservedTenant) -> bool {
    o.bytes > a.db.quota_bytes
}

/// Pure: the T-SQL for one tenant, or why it cannot be provided.
pub fn tenant_steps(a: &DbTenant, o: &ObservedTenant) -> Result<Vec<String>, String> {
    if !name_ok(&a.name) {
        return Err("invalid tenant name".into());
    }
    let (db, login) = (format!("tenant_{}", a.name), format!("tenant_{}_user", a.name));
    let (qd, ql) = (b(&db), b(&login));
    let run = a.runs();
    let hash = is_mssql_hash(&a.db.password_verifier).then_some(a.db.password_verifier.as_str());
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
pub fn plan(desired: &[DbTenant], observed: &Observed) -> BTreeMap<String, Result<Vec<String>, String>> {
    let mut out = BTreeMap::new();
    let empty = ObservedTenant::default();
    let mine: Vec<&DbTenant> = served(desired).collect();
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
fn served(desired: &[DbTenant]) -> impl Iterator<Item = &DbTenant> {
    desired.iter().filter(|a| a.db.db_type == DbType::Mssql)
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
    async fn pass(&self, desired: &[DbTenant]) -> crate::driver::PassResult {
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

#[async_trait::async_trait]
impl Driver<DbTenant> for MssqlDriver {
    fn name(&self) -> &'static str {
        "mssql"
    }

    async fn preview(&mut self, desired: &[DbTenant]) -> Result<Vec<Change>, String> {
        let mut client = connect(&self.url).await?;
        let observed = observe(&mut client).await.map_err(|e| format!("observing SQL Server failed: {e}"));
        let _ = client.close().await;
        let mut changes: Vec<Change> = desired
            .iter()
            .filter(|a| a.db.db_type != DbType::Mssql)
            .map(|a| Change::Refused {
                tenant: a.name.clone(),
                reason: "this node's driver serves SQL Server only".into(),
            })
            .collect();
        for (tenant, steps) in plan(desired, &observed?) {
            match steps {
                Ok(steps) => changes
                    .extend(steps.iter().map(|sql| Change::Sql { tenant: Some(tenant.clone()), sql: redact(sql) })),
                Err(reason) => changes.push(Change::Refused { tenant, reason }),
            }
        }
        Ok(changes)
    }

    async fn reconcile(&mut self, desired: &[DbTenant]) -> Vec<Status> {
        let (served, other): (Vec<DbTenant>, Vec<DbTenant>) =
            desired.iter().cloned().partition(|a| a.db.db_type == DbType::Mssql);
        let result = self.pass(&served).await;
        let refused =
            other.into_iter().map(|a| (a.name, "this node's driver serves SQL Server only".to_string())).collect();
        crate::driver::statuses(&served, &result, refused)
    }
}

#[cfg(test)]
#[path = "mssql_tests.rs"]
mod tests;
