//! The `db` role driver for PostgreSQL: one schema and two roles per tenant, in one database.
//! `observe` reads the catalogs (short-lived superuser connection), `plan` (pure) lists the SQL
//! that makes the host match the desired state — empty when it already does — and `apply` runs
//! it. Identifiers come only from validated tenant names (`[a-z][a-z0-9_]{1,30}`) and are quoted;
//! the password verifier is checked to be exactly a SCRAM verifier before it becomes a literal;
//! everything else is an integer. Nothing user-typed is formatted into SQL.
//!
//! Per tenant `t`: schema `tenant_t` owned by NOLOGIN `tenant_t_owner`; LOGIN NOINHERIT
//! `tenant_t_user` with the SCRAM verifier, CONNECTION LIMIT, search_path, temp_file_limit,
//! statement and idle-in-transaction timeouts; CONNECT on the database, USAGE on its schema, DML
//! on its tables (default privileges of the owner); the seed's `events` table with a trigger that
//! NOTIFYs `tenant_t_events` with the new row's id only (one platform-owned trigger function,
//! `berqenas.notify_event()`, serves every tenant). Node bootstrap revokes PUBLIC's CONNECT/TEMP
//! on the database, everything on schema `public`, and the large-object creators.

use crate::assignment::Assignment;
use crate::driver::{Driver, Status, Usage};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection, Row};
use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Marks roles this driver owns; nothing else is ever dropped.
const MARKER: &str = "berqenas-managed";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedRole {
    pub can_login: bool,
    pub inherit: bool,
    pub conn_limit: i32,
    pub password: Option<String>,
    pub config: BTreeSet<String>,
    pub managed: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedTenant {
    pub owner: Option<ObservedRole>,
    pub user: Option<ObservedRole>,
    pub schema: bool,
    pub events: bool,
    /// The NOTIFY trigger of earlier versions is on its events table (it is removed: see
    /// `schema_steps`).
    pub notify_trigger: bool,
    pub connect: bool,
    pub usage: bool,
    /// SELECT, DELETE and TRUNCATE on every table of its schema.
    pub read: bool,
    /// INSERT and UPDATE on every table of its schema.
    pub write_all: bool,
    /// INSERT or UPDATE on some table of its schema.
    pub write_any: bool,
    /// CREATE on its schema (DDL).
    pub create: bool,
    /// The user owns some object in the database (made while DDL was allowed): any kind, from
    /// `pg_shdepend` — types, domains and text search objects too, not only tables and code.
    pub owns_objects: bool,
    /// How many objects it owns.
    pub owned: i64,
    /// Disk used by the schema's tables (with indexes and TOAST).
    pub bytes: u64,
    /// Open sessions of the tenant's user (server-wide).
    pub connections: u32,
    /// Its own database `tenant_{name}` exists, owned by its owner role (database isolation).
    pub database: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub database: String,
    pub public_connect: bool,
    pub public_temp: bool,
    pub public_schema_create: bool,
    pub public_lo_create: bool,
    pub bookkeeping_schema: bool,
    /// `berqenas.notify_event()` (earlier versions' events trigger function) exists.
    pub notify_function: bool,
    /// Sessions, function sources and view definitions are hidden from PUBLIC.
    pub metadata_hidden: bool,
    /// PUBLIC cannot export snapshots, write WAL messages or connect to `template1`.
    pub powers_revoked: bool,
    pub tenants: BTreeMap<String, ObservedTenant>,
}

/// One SQL statement and the tenant it is for (None: node bootstrap). A tenant's consecutive
/// steps run as one transaction; `commit_before` ends the one before it, so what came first holds
/// even when this part fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub tenant: Option<String>,
    pub sql: String,
    pub commit_before: bool,
}

impl Step {
    fn node(sql: String) -> Self {
        Self { tenant: None, sql, commit_before: false }
    }

    fn tenant(name: &str, sql: String) -> Self {
        Self { tenant: Some(name.to_string()), sql, commit_before: false }
    }
}

/// A tenant's steps: `first` in one transaction, then `then` in a second one.
fn tenant_steps(name: &str, first: Vec<String>, then: Vec<String>) -> impl Iterator<Item = Step> + '_ {
    let first = first.into_iter().map(move |sql| Step::tenant(name, sql));
    let then =
        then.into_iter().enumerate().map(move |(i, sql)| Step { commit_before: i == 0, ..Step::tenant(name, sql) });
    first.chain(then)
}

fn q(ident: &str) -> String {
    format!("\"{ident}\"")
}

fn user_config(a: &Assignment) -> BTreeSet<String> {
    let temp_kb = (a.db_quota_bytes / 1024).clamp(1024, i32::MAX as u64);
    [
        format!("search_path=tenant_{}", a.name),
        format!("temp_file_limit={temp_kb}kB"),
        "statement_timeout=30s".to_string(),
        "idle_in_transaction_session_timeout=60s".to_string(),
        // What the tenant's statements make the server log: nothing below PANIC, or one
        // `RAISE WARNING` of a 20 MB string fills the node's disk outside any quota.
        "log_min_messages=panic".to_string(),
        "log_min_error_statement=panic".to_string(),
    ]
    .into()
}

/// Quoted schema, owner role and user role of a tenant.
fn idents(name: &str) -> (String, String, String) {
    (q(&format!("tenant_{name}")), q(&format!("tenant_{name}_owner")), q(&format!("tenant_{name}_user")))
}

/// The tenant's two roles (cluster-wide objects): created, and the user's login, limits,
/// password and settings kept as desired.
fn role_steps(a: &Assignment, o: &ObservedTenant) -> Vec<String> {
    let (qs, qo, qu) = idents(&a.name);
    let login = a.lifecycle == "run";
    let limit = i64::from(a.connection_limit.min(i32::MAX as u32));
    let mut sql = Vec::new();
    if o.owner.is_none() {
        sql.push(format!("CREATE ROLE {qo} NOLOGIN"));
        sql.push(format!("COMMENT ON ROLE {qo} IS '{MARKER}'"));
    }
    let verifier_ok = crate::assignment::is_verifier(&a.db_password_verifier);
    match &o.user {
        None => {
            let password = if verifier_ok { format!(" PASSWORD '{}'", a.db_password_verifier) } else { String::new() };
            let login_kw = if login { "LOGIN" } else { "NOLOGIN" };
            sql.push(format!("CREATE ROLE {qu} {login_kw} NOINHERIT CONNECTION LIMIT {limit}{password}"));
            sql.push(format!("COMMENT ON ROLE {qu} IS '{MARKER}'"));
        }
        Some(u) => {
            if u.can_login != login {
                sql.push(format!("ALTER ROLE {qu} {}", if login { "LOGIN" } else { "NOLOGIN" }));
            }
            if u.inherit {
                sql.push(format!("ALTER ROLE {qu} NOINHERIT"));
            }
            if i64::from(u.conn_limit) != limit {
                sql.push(format!("ALTER ROLE {qu} CONNECTION LIMIT {limit}"));
            }
            if verifier_ok && u.password.as_deref() != Some(a.db_password_verifier.as_str()) {
                sql.push(format!("ALTER ROLE {qu} PASSWORD '{}'", a.db_password_verifier));
            }
        }
    }
    let want = user_config(a);
    let have = o.user.as_ref().map(|u| u.config.clone()).unwrap_or_default();
    if want != have {
        // Exactly these: the tenant may have added its own (per database, too; `observe` lists
        // those as `database …` lines, so they always differ).
        let temp_kb = (a.db_quota_bytes / 1024).clamp(1024, i32::MAX as u64);
        let user = format!("tenant_{}_user", a.name);
        sql.push(format!("ALTER ROLE {qu} RESET ALL"));
        sql.push(format!(
            "DO $reset$ DECLARE d text; BEGIN \
             FOR d IN SELECT db.datname FROM pg_db_role_setting s JOIN pg_database db ON db.oid = s.setdatabase \
                      WHERE s.setrole = '{user}'::regrole LOOP \
               EXECUTE format('ALTER ROLE %I IN DATABASE %I RESET ALL', '{user}', d); END LOOP; END $reset$"
        ));
        sql.push(format!("ALTER ROLE {qu} SET search_path = {qs}"));
        sql.push(format!("ALTER ROLE {qu} SET temp_file_limit = '{temp_kb}kB'"));
        sql.push(format!("ALTER ROLE {qu} SET statement_timeout = '30s'"));
        sql.push(format!("ALTER ROLE {qu} SET idle_in_transaction_session_timeout = '60s'"));
        sql.push(format!("ALTER ROLE {qu} SET log_min_messages = 'panic'"));
        sql.push(format!("ALTER ROLE {qu} SET log_min_error_statement = 'panic'"));
    }
    sql
}

/// The tenant's database (database isolation), made from the main database's connection.
/// `CREATE DATABASE` runs outside a transaction, so PUBLIC's default CONNECT and TEMP on it are
/// revoked by the very next statement (and re-checked by every pass inside it).
fn database_steps(a: &Assignment, o: &ObservedTenant) -> Vec<String> {
    let (qd, qo, _) = idents(&a.name);
    if o.database {
        return Vec::new();
    }
    vec![format!("CREATE DATABASE {qd} OWNER {qo}"), format!("REVOKE ALL ON DATABASE {qd} FROM PUBLIC")]
}

/// The tenant's schema and what is in it, in database `db` (the main database, or its own).
fn schema_steps(a: &Assignment, o: &ObservedTenant, db: &str) -> Vec<String> {
    let (qs, qo, qu) = idents(&a.name);
    let mut sql = Vec::new();
    if !o.schema {
        sql.push(format!("CREATE SCHEMA {qs} AUTHORIZATION {qo}"));
    }
    if !o.connect {
        sql.push(format!("GRANT CONNECT ON DATABASE {} TO {qu}", q(db)));
    }
    if !o.usage {
        sql.push(format!("GRANT USAGE ON SCHEMA {qs} TO {qu}"));
    }
    if !o.schema || !o.events {
        sql.push(format!(
            "ALTER DEFAULT PRIVILEGES FOR ROLE {qo} IN SCHEMA {qs} GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON TABLES TO {qu}"
        ));
        sql.push(format!(
            "ALTER DEFAULT PRIVILEGES FOR ROLE {qo} IN SCHEMA {qs} GRANT USAGE, SELECT ON SEQUENCES TO {qu}"
        ));
    }
    if !o.events {
        // Created as the owner, so the tenant's tables are never owned by the superuser.
        sql.push(format!(
            "SET ROLE {qo}; \
             CREATE TABLE {qs}.events (id uuid DEFAULT gen_random_uuid() PRIMARY KEY, device_id text, \
             event_type varchar(100), payload jsonb, created_at timestamptz DEFAULT now()); \
             CREATE INDEX events_created_at ON {qs}.events (created_at); RESET ROLE"
        ));
    }
    if o.notify_trigger {
        // Earlier versions NOTIFYed `tenant_x_events` on every insert. LISTEN and NOTIFY take no
        // privileges, so any tenant could read or forge that channel, and a tenant pinning the
        // cluster-wide notification queue made every tenant's inserts fail at commit. Events
        // no longer depend on it.
        sql.push(format!(
            "DROP TRIGGER IF EXISTS events_notify ON {qs}.events; DROP FUNCTION IF EXISTS {qs}.notify_event()"
        ));
    }
    // DDL: CREATE on its schema while the tenant has DDL enabled and is under its quota. While
    // it may not, it owns nothing (see `reassign_steps`), so it cannot grant itself back what
    // the quota revokes. These revokes take no lock a tenant can hold and commit on their own,
    // before anything its objects could make fail.
    let over = over_quota(a, o);
    let ddl = a.ddl_enabled && !over && o.owned <= MAX_OBJECTS;
    if ddl && !o.create {
        sql.push(format!("GRANT CREATE ON SCHEMA {qs} TO {qu}"));
    } else if !ddl && o.create {
        sql.push(format!("REVOKE CREATE ON SCHEMA {qs} FROM {qu}"));
    }
    // Over its quota the tenant keeps reading and deleting but cannot insert or update — also
    // not through PUBLIC, to which it may have granted its own tables while it owned them.
    if over && o.write_any {
        sql.push(format!("REVOKE INSERT, UPDATE ON ALL TABLES IN SCHEMA {qs} FROM {qu}, PUBLIC"));
    }
    if reassigns(a, o) {
        // Fail closed: no login until its objects have changed hands (the second transaction
        // gives it back), and its sessions end, with the locks they hold. A backend busy in a
        // computation that checks no interrupt outlives the signal and may make the second
        // transaction time out; the tenant then stays unable to log in (and so to grant itself
        // anything on the tables it still owns) until a pass completes it.
        sql.push(format!("ALTER ROLE {qu} NOLOGIN"));
        sql.push(format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'tenant_{}_user'",
            a.name
        ));
        return sql;
    }
    if !o.read || !o.events {
        sql.push(format!("GRANT SELECT, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA {qs} TO {qu}"));
    }
    if !over && (!o.write_all || !o.events) {
        sql.push(format!("GRANT INSERT, UPDATE ON ALL TABLES IN SCHEMA {qs} TO {qu}"));
    }
    sql
}

/// Most objects a tenant may own. Each is a lock slot when its objects change hands (DDL switched
/// off, quota exceeded), and the server's lock table — shared by every tenant, 64 slots per
/// connection by default — must hold them all; past this, CREATE is revoked until it drops some.
pub const MAX_OBJECTS: i64 = 2_000;

/// The tenant owns objects while it may not (DDL disabled, or over its quota).
fn reassigns(a: &Assignment, o: &ObservedTenant) -> bool {
    (!a.ddl_enabled || over_quota(a, o)) && o.owns_objects
}

/// The second transaction of a tenant that owns objects while it may not: they go to its owner
/// role, then everything that role now owns that could run code goes (nothing of the
/// platform's is code, so all of it was the tenant's), PUBLIC loses what the tenant granted it,
/// and the tenant gets back exactly its DML. Neutralising after `REASSIGN OWNED`, in the same
/// transaction, leaves no window: what the tenant could create meanwhile stays its own (and it
/// can create nothing once the first transaction revoked CREATE).
fn reassign_steps(a: &Assignment, o: &ObservedTenant) -> Vec<String> {
    if !reassigns(a, o) {
        return Vec::new();
    }
    let (qs, qo, qu) = idents(&a.name);
    let mut sql = vec![
        format!("REASSIGN OWNED BY {qu} TO {qo}"),
        neutralise(&format!("tenant_{}_owner", a.name)),
        format!("REVOKE ALL ON ALL TABLES IN SCHEMA {qs} FROM PUBLIC"),
        format!("REVOKE ALL ON ALL SEQUENCES IN SCHEMA {qs} FROM PUBLIC"),
        format!("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {qs} TO {qu}"),
        format!("GRANT SELECT, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA {qs} TO {qu}"),
    ];
    if !over_quota(a, o) {
        sql.push(format!("GRANT INSERT, UPDATE ON ALL TABLES IN SCHEMA {qs} TO {qu}"));
    }
    if a.lifecycle == "run" {
        sql.push(format!("ALTER ROLE {qu} LOGIN"));
    }
    sql
}

/// Removes everything role `role` (a validated name) owns that could run code with its rights:
/// routines (functions, procedures, aggregates; `CASCADE` takes the triggers, column defaults,
/// constraints, indexes and views built on them — index and default expressions run as the
/// table owner during VACUUM and ANALYZE), operators, rules and triggers on its tables (those a
/// partition inherited go with their parent's); its views are made `security_invoker`. Tables
/// and their data stay. The names come from the catalogs, quoted by
/// `regprocedure`/`regoperator`/`regclass` output and `%I`; the loop reads them before it drops
/// anything.
fn neutralise(role: &str) -> String {
    format!(
        "DO $neutralise$ DECLARE s text; r record; u regrole := '{role}'; BEGIN \
         FOREACH s IN ARRAY ARRAY(SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.proowner = u) LOOP \
           EXECUTE format('DROP ROUTINE IF EXISTS %s CASCADE', s); END LOOP; \
         FOREACH s IN ARRAY ARRAY(SELECT o.oid::regoperator::text FROM pg_operator o WHERE o.oprowner = u) LOOP \
           EXECUTE format('DROP OPERATOR IF EXISTS %s CASCADE', s); END LOOP; \
         FOR r IN SELECT w.rulename, c.oid::regclass::text AS rel FROM pg_rewrite w JOIN pg_class c ON c.oid = w.ev_class \
                  WHERE c.relowner = u AND w.rulename <> '_RETURN' LOOP \
           EXECUTE format('DROP RULE IF EXISTS %I ON %s', r.rulename, r.rel); END LOOP; \
         FOR r IN SELECT t.tgname, c.oid::regclass::text AS rel FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid \
                  WHERE c.relowner = u AND NOT t.tgisinternal AND t.tgparentid = 0 LOOP \
           EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', r.tgname, r.rel); END LOOP; \
         FOR r IN SELECT c.oid::regclass::text AS rel FROM pg_class c WHERE c.relowner = u AND c.relkind = 'v' LOOP \
           EXECUTE format('ALTER VIEW %s SET (security_invoker = true)', r.rel); END LOOP; \
         END $neutralise$"
    )
}

/// The schema uses more than the tenant's quota.
pub fn over_quota(a: &Assignment, o: &ObservedTenant) -> bool {
    o.bytes > a.db_quota_bytes
}

/// Removes PUBLIC's default privileges that break isolation in database `observed.database`.
fn bootstrap_steps(observed: &Observed) -> Vec<Step> {
    let node = Step::node;
    let mut steps = Vec::new();
    if observed.public_connect || observed.public_temp {
        steps.push(node(format!("REVOKE ALL ON DATABASE {} FROM PUBLIC", q(&observed.database))));
    }
    if observed.public_schema_create {
        steps.push(node("REVOKE ALL ON SCHEMA public FROM PUBLIC".into()));
    }
    if observed.public_lo_create {
        steps.push(node(
            "REVOKE EXECUTE ON FUNCTION lo_create(oid), lo_creat(integer), lo_import(text), lo_import(text, oid), \
             lo_from_bytea(oid, bytea) FROM PUBLIC"
                .into(),
        ));
    }
    if !observed.bookkeeping_schema {
        steps.push(node("CREATE SCHEMA IF NOT EXISTS berqenas".into()));
    }
    if observed.notify_function {
        // Earlier versions' events trigger function, with every trigger on it (see
        // `schema_steps`).
        steps.push(node("DROP FUNCTION IF EXISTS berqenas.notify_event() CASCADE".into()));
    }
    if !observed.metadata_hidden {
        steps.push(node(HIDE_METADATA.into()));
    }
    if !observed.powers_revoked {
        steps.push(node(REVOKE_POWERS.into()));
    }
    steps
}

/// What PUBLIC may otherwise do to every tenant at once: chain exported snapshots across
/// transactions (`pg_export_snapshot`), holding back every tenant's vacuum while each
/// transaction stays young; write unbounded WAL without any write privilege
/// (`pg_logical_emit_message`); connect to `template1`, the template of database-isolated
/// tenants' databases; take advisory locks, whose entries share the one lock table of the
/// server: a tenant holding ten thousand of them fails every connection, superusers' too
/// (migration tools that lock this way must be told not to: see README).
const REVOKE_POWERS: &str = "REVOKE EXECUTE ON FUNCTION pg_catalog.pg_export_snapshot(), \
       pg_catalog.pg_logical_emit_message(boolean, text, text), \
       pg_catalog.pg_logical_emit_message(boolean, text, bytea) FROM PUBLIC; \
     REVOKE CONNECT, TEMP ON DATABASE template1 FROM PUBLIC; \
     DO $advisory$ DECLARE f text; BEGIN \
       FOREACH f IN ARRAY ARRAY(SELECT p.oid::regprocedure::text FROM pg_proc p \
                                WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.proname LIKE 'pg\\_%advisory\\_%') LOOP \
         EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f); END LOOP; END $advisory$";

/// What one tenant could otherwise read about the others in a shared database: their
/// sessions (user, database, client address, query — `pg_stat_activity`, every
/// `pg_stat_get_*` function under it and the statistics views, `pg_locks`, `pg_blocking_pids`),
/// their settings and quotas (`pg_db_role_setting`), their function sources (`pg_proc.prosrc`, `prosqlbody`,
/// `probin`, `proconfig`, `pg_get_functiondef`) and view definitions (`pg_get_viewdef`,
/// `pg_rewrite`'s action and qualification). PUBLIC keeps every other column of `pg_proc`
/// and `pg_rewrite` (the column list is read from the catalog, so it fits any version). What
/// PostgreSQL cannot hide this way — names of schemas, roles, databases, tables and columns —
/// is listed in ARCHITECTURE.md; database isolation hides all but role and database names.
const HIDE_METADATA: &str = "REVOKE SELECT ON pg_catalog.pg_stat_activity, pg_catalog.pg_locks, \
       pg_catalog.pg_db_role_setting FROM PUBLIC; \
     REVOKE EXECUTE ON FUNCTION pg_catalog.pg_stat_get_activity(integer), pg_catalog.pg_stat_get_backend_idset(), \
       pg_catalog.pg_lock_status(), pg_catalog.pg_blocking_pids(integer), \
       pg_catalog.pg_safe_snapshot_blocking_pids(integer), pg_catalog.pg_get_functiondef(oid), pg_catalog.pg_get_function_sqlbody(oid), \
       pg_catalog.pg_get_viewdef(oid), pg_catalog.pg_get_viewdef(oid, boolean), pg_catalog.pg_get_viewdef(oid, integer), \
       pg_catalog.pg_get_viewdef(text), pg_catalog.pg_get_viewdef(text, boolean) FROM PUBLIC; \
     DO $stats$ DECLARE f text; BEGIN \
       FOREACH f IN ARRAY ARRAY(SELECT p.oid::regprocedure::text FROM pg_proc p \
                                WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.proname LIKE 'pg\\_stat\\_get\\_%') LOOP \
         EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f); END LOOP; END $stats$; \
     DO $hide$ DECLARE r record; BEGIN \
       FOR r IN SELECT * FROM (VALUES ('pg_catalog.pg_proc'::regclass, ARRAY['prosrc', 'prosqlbody', 'probin', 'proconfig']), \
                                      ('pg_catalog.pg_rewrite'::regclass, ARRAY['ev_action', 'ev_qual'])) AS v(rel, hidden) LOOP \
         EXECUTE format('REVOKE SELECT ON %s FROM PUBLIC', r.rel); \
         EXECUTE format('GRANT SELECT (%s) ON %s TO PUBLIC', \
           (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) FROM pg_attribute a \
            WHERE a.attrelid = r.rel AND a.attnum > 0 AND NOT a.attisdropped AND a.attname <> ALL (r.hidden)), r.rel); \
       END LOOP; END $hide$";

/// This driver's assignments: db role, PostgreSQL.
fn postgres_tenants(desired: &[Assignment]) -> impl Iterator<Item = &Assignment> {
    desired.iter().filter(|a| a.roles.iter().any(|r| r == "db") && a.db_type == "postgres")
}

/// The tenant has its own database rather than a schema in the main one.
pub fn own_database(a: &Assignment) -> bool {
    a.isolation == "database"
}

/// Statements PostgreSQL refuses inside a transaction block; each runs on its own.
fn outside_transaction(sql: &str) -> bool {
    sql.starts_with("CREATE DATABASE") || sql.starts_with("DROP DATABASE")
}

/// Pure: the SQL, run in the main database, that makes `observed` match `desired`: roles of
/// every tenant, schemas of schema-isolated tenants, databases of database-isolated ones (whose
/// insides [`plan_own_database`] plans), and purges.
pub fn plan(desired: &[Assignment], observed: &Observed) -> Vec<Step> {
    let db = observed.database.as_str();
    let mut steps = bootstrap_steps(observed);
    let mine: Vec<&Assignment> = postgres_tenants(desired).collect();
    let wanted: BTreeSet<&str> = mine.iter().map(|a| a.name.as_str()).collect();
    let empty = ObservedTenant::default();
    for a in &mine {
        let o = observed.tenants.get(&a.name).unwrap_or(&empty);
        let mut sql = role_steps(a, o);
        let mut then = Vec::new();
        if own_database(a) {
            sql.extend(database_steps(a, o));
        } else {
            sql.extend(schema_steps(a, o, db));
            then = reassign_steps(a, o);
        }
        steps.extend(tenant_steps(&a.name, sql, then));
    }
    // Purged: managed here, no longer desired.
    for (name, o) in &observed.tenants {
        let managed = o.owner.as_ref().is_some_and(|r| r.managed) || o.user.as_ref().is_some_and(|r| r.managed);
        if wanted.contains(name.as_str()) || !managed {
            continue;
        }
        let (qs, qo, qu) = idents(name);
        let t = Some(name.clone());
        if o.user.is_some() {
            steps.push(Step { tenant: t.clone(), sql: format!("ALTER ROLE {qu} NOLOGIN"), commit_before: false });
        }
        if o.database {
            steps.push(Step {
                tenant: t.clone(),
                sql: format!("DROP DATABASE IF EXISTS {qs} WITH (FORCE)"),
                commit_before: false,
            });
        }
        steps.push(Step {
            tenant: t.clone(),
            sql: format!("DROP SCHEMA IF EXISTS {qs} CASCADE"),
            commit_before: false,
        });
        let roles: Vec<String> =
            [(o.user.is_some(), qu), (o.owner.is_some(), qo)].into_iter().filter(|(e, _)| *e).map(|(_, r)| r).collect();
        if !roles.is_empty() {
            steps.push(Step {
                tenant: t.clone(),
                sql: format!("DROP OWNED BY {}", roles.join(", ")),
                commit_before: false,
            });
            steps.push(Step {
                tenant: t.clone(),
                sql: format!("DROP ROLE {}", roles.join(", ")),
                commit_before: false,
            });
        }
    }
    steps
}

/// Pure: the SQL, run inside tenant `a`'s own database (observed as `observed`), that makes it
/// match: the same bootstrap as the main database and the same schema as schema isolation.
pub fn plan_own_database(a: &Assignment, observed: &Observed) -> Vec<Step> {
    let empty = ObservedTenant::default();
    let o = observed.tenants.get(&a.name).unwrap_or(&empty);
    let mut steps = bootstrap_steps(observed);
    steps.extend(tenant_steps(&a.name, schema_steps(a, o, &observed.database), reassign_steps(a, o)));
    steps
}

/// Reads the catalogs — about every tenant, or with `only` about those tenants alone. Sizes are
/// measured apart ([`crate::pgsize`]) and left at 0 here. Nothing here waits for a lock a
/// tenant can hold.
async fn observe(conn: &mut PgConnection, only: Option<&[String]>) -> Result<Observed, sqlx::Error> {
    let only: Option<Vec<String>> = only.map(<[String]>::to_vec);
    let mut o = Observed::default();
    let row = sqlx::query(
        "SELECT current_database() AS db, \
         has_database_privilege('public', current_database(), 'CONNECT') AS c, \
         has_database_privilege('public', current_database(), 'TEMP') AS t, \
         has_schema_privilege('public', 'public', 'CREATE') AS s, \
         has_function_privilege('public', 'lo_create(oid)', 'EXECUTE') AS lo, \
         EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'berqenas') AS b, \
         to_regprocedure('berqenas.notify_event()') IS NOT NULL AS f, \
         NOT (has_table_privilege('public', 'pg_stat_activity', 'SELECT') \
              OR has_table_privilege('public', 'pg_locks', 'SELECT') \
              OR has_column_privilege('public', 'pg_proc', 'prosrc', 'SELECT') \
              OR has_column_privilege('public', 'pg_rewrite', 'ev_action', 'SELECT') \
              OR has_function_privilege('public', 'pg_stat_get_activity(integer)', 'EXECUTE') \
              OR has_function_privilege('public', 'pg_get_functiondef(oid)', 'EXECUTE') \
              OR has_function_privilege('public', 'pg_get_viewdef(oid)', 'EXECUTE') \
              OR has_function_privilege('public', 'pg_stat_get_backend_pid(integer)', 'EXECUTE') \
              OR has_function_privilege('public', 'pg_blocking_pids(integer)', 'EXECUTE') \
              OR has_table_privilege('public', 'pg_db_role_setting', 'SELECT')) AS m, \
         NOT (has_function_privilege('public', 'pg_export_snapshot()', 'EXECUTE') \
              OR has_function_privilege('public', 'pg_logical_emit_message(boolean, text, text)', 'EXECUTE') \
              OR has_function_privilege('public', 'pg_advisory_lock(bigint)', 'EXECUTE') \
              OR has_function_privilege('public', 'pg_try_advisory_xact_lock(integer, integer)', 'EXECUTE') \
              OR has_database_privilege('public', 'template1', 'CONNECT') \
              OR has_database_privilege('public', 'template1', 'TEMP')) AS p",
    )
    .fetch_one(&mut *conn)
    .await?;
    o.database = row.try_get("db")?;
    o.public_connect = row.try_get("c")?;
    o.public_temp = row.try_get("t")?;
    o.public_schema_create = row.try_get("s")?;
    o.public_lo_create = row.try_get("lo")?;
    o.bookkeeping_schema = row.try_get("b")?;
    o.notify_function = row.try_get("f")?;
    o.metadata_hidden = row.try_get("m")?;
    o.powers_revoked = row.try_get("p")?;
    let roles = sqlx::query(
        "SELECT a.rolname, a.rolcanlogin, a.rolinherit, a.rolconnlimit, a.rolpassword, \
         COALESCE((SELECT string_agg(CASE WHEN s.setdatabase = 0 THEN array_to_string(s.setconfig, E'\\n') \
                                     ELSE 'database ' || s.setdatabase || ': ' || array_to_string(s.setconfig, ' ') END, E'\\n') \
                   FROM pg_db_role_setting s WHERE s.setrole = a.oid), '') AS config, \
         COALESCE(shobj_description(a.oid, 'pg_authid'), '') AS comment \
         FROM pg_authid a WHERE a.rolname ~ '^tenant_[a-z][a-z0-9_]{1,30}_(owner|user)$' \
         AND ($1::text[] IS NULL OR substring(a.rolname FROM '^tenant_(.*)_(owner|user)$') = ANY($1))",
    )
    .bind(&only)
    .fetch_all(&mut *conn)
    .await?;
    for r in roles {
        let name: String = r.try_get("rolname")?;
        let config: String = r.try_get("config")?;
        let role = ObservedRole {
            can_login: r.try_get("rolcanlogin")?,
            inherit: r.try_get("rolinherit")?,
            conn_limit: r.try_get("rolconnlimit")?,
            password: r.try_get("rolpassword")?,
            config: config.lines().map(str::to_string).filter(|l| !l.is_empty()).collect(),
            managed: r.try_get::<String, _>("comment")? == MARKER,
        };
        if let Some(t) = name.strip_prefix("tenant_").and_then(|n| n.strip_suffix("_owner")) {
            o.tenants.entry(t.to_string()).or_default().owner = Some(role);
        } else if let Some(t) = name.strip_prefix("tenant_").and_then(|n| n.strip_suffix("_user")) {
            o.tenants.entry(t.to_string()).or_default().user = Some(role);
        }
    }
    // Sessions per tenant user, server-wide (cheap: the activity view, no catalog scan).
    let sessions = sqlx::query(
        "SELECT usename::text AS u, count(*) AS n FROM pg_stat_activity \
         WHERE usename ~ '^tenant_[a-z][a-z0-9_]{1,30}_user$' \
         AND ($1::text[] IS NULL OR substring(usename FROM '^tenant_(.*)_user$') = ANY($1)) GROUP BY usename",
    )
    .bind(&only)
    .fetch_all(&mut *conn)
    .await?;
    for row in sessions {
        let user: String = row.try_get("u")?;
        let n: i64 = row.try_get("n")?;
        if let Some(t) = user.strip_prefix("tenant_").and_then(|n| n.strip_suffix("_user")) {
            o.tenants.entry(t.to_string()).or_default().connections = u32::try_from(n).unwrap_or(u32::MAX);
        }
    }
    // Databases of database-isolated tenants: named after the tenant, owned by its owner role.
    let databases: Vec<String> = sqlx::query_scalar(
        "SELECT d.datname::text FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba \
         WHERE d.datname ~ '^tenant_[a-z][a-z0-9_]{1,30}$' AND r.rolname = d.datname || '_owner' \
         AND ($1::text[] IS NULL OR substring(d.datname FROM '^tenant_(.*)$') = ANY($1))",
    )
    .bind(&only)
    .fetch_all(&mut *conn)
    .await?;
    for datname in databases {
        if let Some(name) = datname.strip_prefix("tenant_") {
            o.tenants.entry(name.to_string()).or_default().database = true;
        }
    }
    // Schemas, the events table and its trigger, and every tenant user's privileges: one
    // set-based query each, so a pass costs the same few round trips for 10 or 10,000 tenants.
    let schemas = sqlx::query(
        "SELECT n.nspname, \
         to_regclass(quote_ident(n.nspname) || '.events') IS NOT NULL AS events, \
         EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgname = 'events_notify' \
                 AND t.tgrelid = to_regclass(quote_ident(n.nspname) || '.events')) AS trig \
         FROM pg_namespace n WHERE n.nspname ~ '^tenant_[a-z][a-z0-9_]{1,30}$' \
         AND ($1::text[] IS NULL OR substring(n.nspname FROM '^tenant_(.*)$') = ANY($1))",
    )
    .bind(&only)
    .fetch_all(&mut *conn)
    .await?;
    for row in schemas {
        let schema: String = row.try_get("nspname")?;
        let Some(name) = schema.strip_prefix("tenant_") else { continue };
        let t = o.tenants.entry(name.to_string()).or_default();
        t.schema = true;
        t.events = row.try_get("events")?;
        t.notify_trigger = row.try_get("trig")?;
    }
    // One privilege per call: has_table_privilege('A,B') is true when ANY is held.
    let privileges = sqlx::query(
        // Ownership of any kind comes from pg_shdepend, indexed by the role: no catalog scan.
        "WITH t AS (SELECT r.oid AS roid, r.rolname, n.oid AS noid FROM pg_roles r \
                    LEFT JOIN pg_namespace n ON n.nspname = substring(r.rolname FROM '^(tenant_.*)_user$') \
                    WHERE r.rolname ~ '^tenant_[a-z][a-z0-9_]{1,30}_user$' \
                    AND ($1::text[] IS NULL OR substring(r.rolname FROM '^tenant_(.*)_user$') = ANY($1))), \
              p AS (SELECT t.roid, \
                    bool_and(has_table_privilege(t.roid, c.oid, 'SELECT') AND has_table_privilege(t.roid, c.oid, 'DELETE') \
                             AND has_table_privilege(t.roid, c.oid, 'TRUNCATE')) AS r, \
                    bool_and(has_table_privilege(t.roid, c.oid, 'INSERT') AND has_table_privilege(t.roid, c.oid, 'UPDATE')) AS w_all, \
                    bool_or(has_table_privilege(t.roid, c.oid, 'INSERT') OR has_table_privilege(t.roid, c.oid, 'UPDATE')) AS w_any \
                    FROM t JOIN pg_class c ON c.relnamespace = t.noid AND c.relkind IN ('r', 'p') GROUP BY t.roid) \
         SELECT t.rolname, has_database_privilege(t.roid, current_database(), 'CONNECT') AS c, \
                (t.noid IS NOT NULL AND has_schema_privilege(t.roid, t.noid, 'USAGE')) AS u, \
                (t.noid IS NOT NULL AND has_schema_privilege(t.roid, t.noid, 'CREATE')) AS cr, \
                (SELECT count(*) FROM pg_shdepend d WHERE d.refclassid = 'pg_authid'::regclass \
                        AND d.refobjid = t.roid AND d.deptype = 'o' AND d.classid <> 'pg_default_acl'::regclass \
                        AND d.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())) AS owned, \
                COALESCE(p.r, true) AS r, COALESCE(p.w_all, true) AS w_all, COALESCE(p.w_any, false) AS w_any \
         FROM t LEFT JOIN p ON p.roid = t.roid",
    )
    .bind(&only)
    .fetch_all(&mut *conn)
    .await?;
    for row in privileges {
        let role: String = row.try_get("rolname")?;
        let Some(name) = role.strip_prefix("tenant_").and_then(|n| n.strip_suffix("_user")) else { continue };
        let t = o.tenants.entry(name.to_string()).or_default();
        t.connect = row.try_get("c")?;
        t.usage = row.try_get("u")?;
        t.create = row.try_get("cr")?;
        t.owned = row.try_get("owned")?;
        t.owns_objects = t.owned > 0;
        t.read = row.try_get("r")?;
        t.write_all = row.try_get("w_all")?;
        t.write_any = row.try_get("w_any")?;
    }

    Ok(o)
}

/// Pure: the tenants a pass between full passes must look at — desired ones whose assignment
/// differs from the one they were converged to (new, changed, or not converged), and converged
/// ones no longer desired (to purge).
pub fn changed(desired: &[Assignment], converged: &BTreeMap<String, Assignment>) -> Vec<String> {
    let mut names: BTreeSet<String> =
        postgres_tenants(desired).filter(|a| converged.get(&a.name) != Some(*a)).map(|a| a.name.clone()).collect();
    names.extend(converged.keys().filter(|n| !desired.iter().any(|a| &a.name == *n)).cloned());
    names.into_iter().collect()
}

/// Makes a PostgreSQL database match the `db` assignments of this node.
pub struct PostgresDriver {
    /// Superuser connection URL of the node's PostgreSQL (stays on the node).
    url: String,
    /// pgBouncer in front of it, when tenants connect through one.
    pgbouncer: Option<crate::config::PgBouncerConfig>,
    /// A full pass (every tenant observed, disk use measured) runs at least this often; the
    /// passes in between — a burst of creates, one changed tenant — observe and converge only
    /// the tenants whose assignment changed or that were not converged yet.
    full_interval: Duration,
    full_at: Option<Instant>,
    /// Shared with the session guard ([`crate::pgguard`]): the tenants it watches, the latest
    /// sizes (measured by it or by a full pass), tenants it found over quota, and the wake-up.
    guard: Arc<crate::pgguard::Shared>,
    limits: crate::pgguard::Limits,
    guard_started: Option<Instant>,
    /// The pooler's per-source connection limit was in place at the last look (checked on
    /// full passes).
    pooler_firewall: bool,
    /// Usage per tenant as last observed.
    usage: BTreeMap<String, Usage>,
    /// Whether each tenant's last plan held it over its quota (its writes revoked).
    planned_over: BTreeMap<String, bool>,
    /// Tenants the last passes left converged, with the assignment they were converged to.
    converged: BTreeMap<String, Assignment>,
}

impl PostgresDriver {
    pub fn new(
        url: String,
        pgbouncer: Option<crate::config::PgBouncerConfig>,
        full_interval: Duration,
        limits: crate::pgguard::Limits,
    ) -> Self {
        Self {
            url,
            pgbouncer,
            full_interval,
            full_at: None,
            guard: Arc::default(),
            limits,
            guard_started: None,
            pooler_firewall: false,
            usage: BTreeMap::new(),
            planned_over: BTreeMap::new(),
            converged: BTreeMap::new(),
        }
    }

    /// Fills in each observed tenant's bytes from the latest measurement.
    fn sizes(&self, observed: &mut Observed) {
        let sizes = self.guard.sizes.lock().map(|s| s.clone()).unwrap_or_default();
        for (name, t) in &mut observed.tenants {
            t.bytes = sizes.get(name).copied().unwrap_or(0);
        }
    }

    /// Connection options for the main database, or `database` on the same server, as
    /// `application`. Statement logging is off: statements carry password verifiers. Every
    /// session of the agent pins `search_path` to `pg_catalog` alone — an unqualified function,
    /// operator or type can then only be the system's, never one a tenant planted in a schema
    /// it owns (`public` of its own database, say) — and waits at most 5 s for a lock a tenant
    /// holds, so that tenant alone fails.
    fn options(&self, database: Option<&str>, application: &str) -> Result<PgConnectOptions, String> {
        let options = PgConnectOptions::from_str(&self.url)
            .map_err(|e| format!("invalid PostgreSQL URL: {e}"))?
            .disable_statement_logging()
            .application_name(application)
            .options([("search_path", "pg_catalog"), ("lock_timeout", "5s"), ("statement_timeout", "120s")]);
        Ok(match database {
            Some(d) => options.database(d),
            None => options,
        })
    }

    async fn pass(&mut self, desired: &[Assignment]) -> crate::driver::PassResult {
        if self.guard_started.is_none() {
            let options = self.options(None, "berqenas-guard")?;
            tokio::spawn(crate::pgguard::run(options, self.guard.clone(), self.limits));
            self.guard_started = Some(Instant::now());
        }
        let watched = postgres_tenants(desired)
            .map(|a| {
                let w = crate::pgguard::Watched {
                    quota: a.db_quota_bytes,
                    own_database: own_database(a),
                    ddl: a.ddl_enabled,
                };
                (a.name.clone(), w)
            })
            .collect();
        if let Ok(mut t) = self.guard.tenants.lock() {
            *t = watched;
        }
        // Tenants the guard caught over quota are converged again now, with its measurement.
        let pending: Vec<String> = self.guard.pending.lock().map(|p| p.iter().cloned().collect()).unwrap_or_default();
        for name in &pending {
            self.converged.remove(name);
        }
        let (started, full) = (Instant::now(), self.full_at.is_none_or(|t| t.elapsed() >= self.full_interval));
        let result = match tokio::time::timeout(PASS_DEADLINE, self.converge(desired, full)).await {
            Ok(r) => r,
            Err(_) => Err(format!("the pass did not finish within {}", humantime::format_duration(PASS_DEADLINE))),
        };
        if let Ok(mut p) = self.guard.pending.lock() {
            p.retain(|name| !self.converged.contains_key(name) && desired.iter().any(|a| &a.name == name));
        }
        self.planned_over.retain(|name, _| desired.iter().any(|a| &a.name == name));
        let enforced = self
            .planned_over
            .iter()
            .filter(|(name, over)| **over && self.converged.contains_key(*name))
            .map(|(name, _)| name.clone())
            .collect();
        if let Ok(mut e) = self.guard.enforced.lock() {
            *e = enforced;
        }
        if result.is_err() {
            // Whatever happened, the next pass looks at everything again.
            self.full_at = None;
            self.converged.clear();
        } else if full {
            self.full_at = Some(started);
        }
        result
    }

    async fn converge(&mut self, desired: &[Assignment], full: bool) -> crate::driver::PassResult {
        // Between full passes: only what changed, what is not converged yet, and what went away.
        let only: Option<Vec<String>> = (!full).then(|| changed(desired, &self.converged));
        if only.as_ref().is_some_and(Vec::is_empty) {
            return Ok((BTreeMap::new(), self.cached_usage(desired)));
        }
        let work: Vec<Assignment> = match &only {
            None => desired.to_vec(),
            Some(names) => desired.iter().filter(|a| names.contains(&a.name)).cloned().collect(),
        };
        let mut conn = self
            .options(None, "berqenas-agent")?
            .connect()
            .await
            .map_err(|e| format!("cannot connect to PostgreSQL: {e}"))?;
        let mut observed =
            observe(&mut conn, only.as_deref()).await.map_err(|e| format!("observing PostgreSQL failed: {e}"))?;
        if full {
            self.usage.clear();
            self.converged.clear();
            let (mut databases, mut schemas) = (BTreeSet::new(), BTreeSet::new());
            for a in postgres_tenants(desired) {
                match own_database(a) {
                    true => databases.insert(a.name.clone()),
                    false => schemas.insert(a.name.clone()),
                };
            }
            let sizes = crate::pgsize::measure(&mut conn, &schemas, &databases).await?;
            if let Ok(mut known) = self.guard.sizes.lock() {
                *known = sizes;
            }
        }
        self.sizes(&mut observed);
        for a in work.iter().filter(|a| !own_database(a)) {
            if let Some(o) = observed.tenants.get(&a.name) {
                let u = Usage { db_bytes: o.bytes, quota_exceeded: over_quota(a, o), connections: o.connections };
                self.usage.insert(a.name.clone(), u);
                self.planned_over.insert(a.name.clone(), over_quota(a, o));
            }
        }
        let mut errors = BTreeMap::new();
        let options = self.options(None, "berqenas-agent")?;
        apply(&mut conn, Some(&options), plan(&work, &observed), &mut errors).await?;
        for a in postgres_tenants(&work).filter(|a| own_database(a)) {
            if errors.contains_key(&a.name) {
                continue;
            }
            match self.own_database_pass(a).await {
                Ok(Some(u)) => {
                    self.usage.insert(a.name.clone(), u);
                }
                Ok(None) => {}
                Err(e) => {
                    errors.insert(a.name.clone(), e);
                }
            }
        }
        // The files follow the whole desired state (cheap: compared, written only on change).
        let pooler = match &self.pgbouncer {
            Some(_) => Some(pooler_source(&mut conn).await?),
            None => None,
        };
        let mut node_failure = false;
        let mut failed = |what: &str, e: String| {
            tracing::warn!(error = %e, "{what} not in sync");
            node_failure = true;
            for a in postgres_tenants(desired) {
                errors.entry(a.name.clone()).or_insert_with(|| e.clone());
            }
        };
        if let Err(e) = sync_hba(&mut conn, desired, &observed.database, pooler).await {
            failed("pg_hba.conf", e);
        }
        // Limits nobody enforces are not limits: a guard that stopped working is a node failure.
        if let Some(e) =
            self.guard_started.filter(|t| t.elapsed() > GUARD_GRACE).and_then(|_| self.guard.failure(GUARD_GRACE))
        {
            failed("the session guard", e);
        }
        if let Some(config) = &self.pgbouncer {
            let options = self.options(None, "berqenas-agent")?;
            let server = crate::pgbouncer::Server {
                host: options.get_host().to_string(),
                port: options.get_port(),
                database: observed.database.clone(),
            };
            if let Err(e) = crate::pgbouncer::sync(config, desired, &server) {
                failed("pgBouncer", e);
            }
            if full || !self.pooler_firewall {
                self.pooler_firewall = false;
                match crate::pgbouncer::sync_firewall(config) {
                    Ok(()) => self.pooler_firewall = true,
                    Err(e) => failed("pgBouncer's connection limit per source", e),
                }
            }
        }
        let _ = conn.close().await;
        if node_failure {
            // Files or pgBouncer out of sync: no tenant is converged until a pass fixes them.
            self.converged.clear();
            return Ok((errors, self.cached_usage(desired)));
        }
        for a in postgres_tenants(&work) {
            if errors.contains_key(&a.name) {
                self.converged.remove(&a.name);
            } else {
                self.converged.insert(a.name.clone(), a.clone());
            }
        }
        self.converged.retain(|n, _| desired.iter().any(|a| &a.name == n));
        Ok((errors, self.cached_usage(desired)))
    }

    /// The last usage figures of the desired tenants.
    fn cached_usage(&mut self, desired: &[Assignment]) -> BTreeMap<String, Usage> {
        self.usage.retain(|n, _| desired.iter().any(|a| &a.name == n));
        desired.iter().filter_map(|a| Some((a.name.clone(), *self.usage.get(&a.name)?))).collect()
    }

    /// Observes and converges the inside of a database-isolated tenant's own database.
    async fn own_database_pass(&mut self, a: &Assignment) -> Result<Option<Usage>, String> {
        let database = format!("tenant_{}", a.name);
        let mut conn = self
            .options(Some(&database), "berqenas-agent")?
            .connect()
            .await
            .map_err(|e| format!("cannot connect to database {database}: {e}"))?;
        let mut observed = observe(&mut conn, Some(std::slice::from_ref(&a.name)))
            .await
            .map_err(|e| format!("observing database {database} failed: {e}"))?;
        // Only this tenant's schema counts in its database (the roles of all tenants are visible).
        observed.tenants.retain(|name, _| *name == a.name);
        self.sizes(&mut observed);
        let usage = observed.tenants.get(&a.name).map(|o| Usage {
            db_bytes: o.bytes,
            quota_exceeded: over_quota(a, o),
            connections: o.connections,
        });
        self.planned_over.insert(a.name.clone(), usage.is_some_and(|u| u.quota_exceeded));
        let mut errors = BTreeMap::new();
        apply(&mut conn, None, plan_own_database(a, &observed), &mut errors).await?;
        let _ = conn.close().await;
        match errors.remove(&a.name) {
            Some(e) => Err(e),
            None => Ok(usage),
        }
    }
}

/// The session guard not completing a tick for this long fails every tenant of the node.
const GUARD_GRACE: Duration = Duration::from_secs(10);

/// A pass that takes longer than this fails (every statement also has a 120 s timeout and a 5 s
/// lock timeout).
const PASS_DEADLINE: Duration = Duration::from_secs(600);

/// A pass with many tenants to change (a burst of creates) applies them on three extra
/// connections.
/// Fewer tenant groups than this run on the pass's own connection.
const PARALLEL_MIN: usize = 8;

/// A statement that updates a row shared by all tenants (the database's ACL or the database
/// itself): concurrent transactions doing so fail with "tuple concurrently updated", so these
/// run only on the pass's own connection, one at a time.
fn shared_row(sql: &str) -> bool {
    outside_transaction(sql) || sql.contains(" ON DATABASE ") || sql.starts_with("DROP OWNED")
}

/// Runs one group: each transaction in it (split where a step has `commit_before`) as one
/// multi-statement query — one round trip, one implicit transaction; a failed one stops the
/// group, and those before it stay committed.
async fn run_group(conn: &mut PgConnection, tenant: Option<&str>, steps: &[Step]) -> Result<(), String> {
    let label = tenant.unwrap_or("-");
    let mut start = 0;
    while start < steps.len() {
        let end = steps[start + 1..].iter().position(|s| s.commit_before).map_or(steps.len(), |i| start + 1 + i);
        let transaction = &steps[start..end];
        for step in transaction {
            tracing::info!(tenant = label, sql = %redact(&step.sql), "postgres driver applies");
        }
        let sql: Vec<&str> = transaction.iter().map(|s| s.sql.as_str()).collect();
        sqlx::raw_sql(&sql.join(";\n")).execute(&mut *conn).await.map_err(|e| {
            let msg = format!("{e}");
            tracing::warn!(tenant = label, error = %msg, "statements failed");
            msg
        })?;
        start = end;
    }
    Ok(())
}

type Queue = std::sync::Mutex<std::collections::VecDeque<(String, Vec<Step>)>>;

/// Takes groups from `queue` until it is empty, on its own connection; returns the failures.
/// A worker that cannot connect leaves its share to the others and to the pass's connection.
async fn worker(queue: &Queue, options: &PgConnectOptions) -> Vec<(String, String)> {
    let mut failed = Vec::new();
    let Ok(mut conn) = options.connect().await else { return failed };
    while let Some((tenant, group)) = queue.lock().ok().and_then(|mut q| q.pop_front()) {
        if let Err(e) = run_group(&mut conn, Some(&tenant), &group).await {
            failed.push((tenant, e));
        }
    }
    let _ = conn.close().await;
    failed
}

/// Runs `steps` on `conn`. A tenant's consecutive statements run as one multi-statement query:
/// one round trip and one implicit transaction, so a failure leaves the tenant as it was and is
/// recorded in `errors`. A failed node bootstrap fails the whole pass.
///
/// With `parallel` (the options of the same database) and many tenants to change, the groups
/// that touch only the tenant's own objects run on three extra connections; what
/// touches shared rows (`GRANT CONNECT ON DATABASE`, databases, `DROP OWNED`) follows on `conn`.
async fn apply(
    conn: &mut PgConnection,
    parallel: Option<&PgConnectOptions>,
    steps: Vec<Step>,
    errors: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    let mut groups: Vec<(Option<String>, Vec<Step>)> = Vec::new();
    for step in steps {
        match groups.last_mut() {
            Some((t, group))
                if step.tenant.is_some()
                    && *t == step.tenant
                    && !outside_transaction(&step.sql)
                    && !group.iter().any(|s| outside_transaction(&s.sql)) =>
            {
                group.push(step)
            }
            _ => groups.push((step.tenant.clone(), vec![step])),
        }
    }
    let (bootstrap, tenants): (Vec<_>, Vec<_>) = groups.into_iter().partition(|(t, _)| t.is_none());
    for (_, group) in bootstrap {
        run_group(conn, None, &group).await.map_err(|e| format!("node bootstrap failed: {e}"))?;
    }
    // Split: own-objects part (parallel when worth it), shared-row statements after it.
    let mut own: Vec<(String, Vec<Step>)> = Vec::new();
    let mut shared: Vec<(String, Vec<Step>)> = Vec::new();
    for (tenant, group) in tenants {
        let Some(tenant) = tenant else { continue };
        if group.iter().any(|s| outside_transaction(&s.sql) || s.sql.starts_with("DROP OWNED")) {
            shared.push((tenant, group));
            continue;
        }
        let (late, early): (Vec<Step>, Vec<Step>) = group.into_iter().partition(|s| shared_row(&s.sql));
        if !early.is_empty() {
            own.push((tenant.clone(), early));
        }
        if !late.is_empty() {
            shared.push((tenant, late));
        }
    }
    let offboarded: Vec<String> = own
        .iter()
        .chain(shared.iter())
        .filter(|(_, group)| group.iter().any(|s| s.sql.ends_with("NOLOGIN")))
        .map(|(t, _)| t.clone())
        .collect();
    let queue = std::sync::Mutex::new(std::collections::VecDeque::from(own));
    if let Some(options) = parallel.filter(|_| queue.lock().map(|q| q.len() >= PARALLEL_MIN).unwrap_or(false)) {
        let n = queue.lock().map(|q| q.len()).unwrap_or(0);
        tracing::info!(tenants = n, "applying on parallel connections");
        // Concurrent in this task (the work happens in PostgreSQL's backends), not spawned.
        let (a, b, c) = tokio::join!(worker(&queue, options), worker(&queue, options), worker(&queue, options));
        for (tenant, e) in a.into_iter().chain(b).chain(c) {
            errors.insert(tenant, e);
        }
    }
    let rest: Vec<(String, Vec<Step>)> = queue.lock().map(|mut q| q.drain(..).collect()).unwrap_or_default();
    for (tenant, group) in rest.into_iter().chain(shared) {
        if errors.contains_key(&tenant) {
            continue;
        }
        if let Err(e) = run_group(conn, Some(&tenant), &group).await {
            errors.insert(tenant, e);
        }
    }
    // Offboarded tenants' open sessions end once their login is refused.
    for t in offboarded.iter().filter(|t| !errors.contains_key(*t)) {
        let _ = sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1")
            .bind(format!("tenant_{t}_user"))
            .execute(&mut *conn)
            .await;
    }
    Ok(())
}

/// The address pgBouncer (on this host, reaching PostgreSQL the way the agent does) logs in
/// from, as PostgreSQL sees it.
async fn pooler_source(conn: &mut PgConnection) -> Result<crate::pghba::Pooler, String> {
    let addr: Option<String> = sqlx::query_scalar("SELECT host(inet_client_addr())")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| format!("cannot read the agent's client address: {e}"))?;
    match addr {
        None => Ok(crate::pghba::Pooler::UnixSocket),
        Some(a) => a.parse().map(crate::pghba::Pooler::Tcp).map_err(|e| format!("client address {a:?}: {e}")),
    }
}

/// Observes `pg_hba.conf`, rewrites its managed block when it differs (atomically, keeping the
/// file's owner and mode), and reloads PostgreSQL. The agent runs on the database host.
async fn sync_hba(
    conn: &mut PgConnection,
    desired: &[Assignment],
    main_db: &str,
    pooler: Option<crate::pghba::Pooler>,
) -> Result<(), String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let path: String = sqlx::query_scalar("SELECT setting FROM pg_settings WHERE name = 'hba_file'")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| format!("cannot find pg_hba.conf: {e}"))?;
    let path = std::path::PathBuf::from(path);
    let existing = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {} (the agent must run on the database host): {e}", path.display()))?;
    let wanted = crate::pghba::splice(&existing, &crate::pghba::render(desired, main_db, pooler));
    if wanted == existing {
        return Ok(());
    }
    let meta = std::fs::metadata(&path).map_err(|e| format!("stat {}: {e}", path.display()))?;
    let tmp = path.with_extension("berqenas-tmp");
    std::fs::write(&tmp, wanted.as_bytes()).map_err(|e| format!("write {}: {e}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(|e| format!("chmod {}: {e}", tmp.display()))?;
    std::os::unix::fs::chown(&tmp, Some(meta.uid()), Some(meta.gid()))
        .map_err(|e| format!("chown {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("replace {}: {e}", path.display()))?;
    sqlx::query("SELECT pg_reload_conf()").execute(&mut *conn).await.map_err(|e| format!("reload: {e}"))?;
    let broken: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_hba_file_rules WHERE error IS NOT NULL")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| format!("check pg_hba.conf: {e}"))?;
    if broken > 0 {
        return Err(format!("{} has {broken} invalid line(s)", path.display()));
    }
    tracing::info!(path = %path.display(), "rewrote the managed block of pg_hba.conf");
    Ok(())
}

/// Statements are logged without the password verifier.
fn redact(sql: &str) -> String {
    match sql.find(" PASSWORD '") {
        Some(i) => format!("{} PASSWORD '…'", &sql[..i]),
        None => sql.to_string(),
    }
}

impl Driver for PostgresDriver {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn wake(&self) -> Option<Arc<tokio::sync::Notify>> {
        Some(self.guard.wake.clone())
    }

    fn reconcile(&mut self, desired: &[Assignment]) -> Vec<Status> {
        // What this driver cannot provide is reported, never silently provided differently.
        let (supported, refused_here): (Vec<Assignment>, Vec<Assignment>) =
            desired.iter().cloned().partition(|a| unsupported(a).is_none());
        let handle = tokio::runtime::Handle::current();
        let result = handle.block_on(self.pass(&supported));
        let refused = refused_here.iter().filter_map(|a| Some((a.name.clone(), unsupported(a)?.to_string()))).collect();
        crate::driver::statuses(&supported, &result, refused)
    }
}

/// Why this driver cannot provide an assignment, if it cannot.
pub fn unsupported(a: &Assignment) -> Option<&'static str> {
    if !a.roles.iter().any(|r| r == "db") {
        return None;
    }
    match (a.db_type.as_str(), a.isolation.as_str()) {
        ("postgres", "schema" | "database") => None,
        ("postgres", _) => Some("unknown isolation for PostgreSQL"),
        _ => Some("this node's driver serves PostgreSQL only"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(name: &str) -> Assignment {
        const VERIFIER: &str = "SCRAM-SHA-256$4096:AQIDBAUGBwgJCgsMDQ4PEA==$8rrDg00OqaiWXJ7p+sCgHEIaBSHY89ZJl3mfIsf32oY=:05L1f+yZbiN8O0AnO40Og85NNRhvzTS57naKRWCcsIA=";
        Assignment {
            revision: 3,
            db_quota_bytes: 5_000_000_000,
            events_per_min: 1000,
            db_password_verifier: VERIFIER.into(),
            ..crate::assignment::fixture(name)
        }
    }

    fn converged(desired: &Assignment) -> ObservedTenant {
        let role = |login| ObservedRole {
            can_login: login,
            inherit: false,
            conn_limit: 5,
            password: Some(desired.db_password_verifier.clone()),
            config: user_config(desired),
            managed: true,
        };
        ObservedTenant {
            owner: Some(ObservedRole { conn_limit: -1, password: None, config: BTreeSet::new(), ..role(false) }),
            user: Some(role(true)),
            schema: true,
            events: true,
            notify_trigger: false,
            connect: true,
            usage: true,
            read: true,
            write_all: true,
            write_any: true,
            create: false,
            owns_objects: false,
            owned: 0,
            connections: 0,
            bytes: 1000,
            database: false,
        }
    }

    fn bootstrapped() -> Observed {
        Observed {
            database: "postgres".into(),
            bookkeeping_schema: true,
            metadata_hidden: true,
            powers_revoked: true,
            ..Observed::default()
        }
    }

    #[test]
    fn fresh_node_and_tenant_get_everything_quoted() {
        let mut o = bootstrapped();
        o.public_connect = true;
        o.public_lo_create = true;
        o.metadata_hidden = false;
        let steps = plan(&[a("acme")], &o);
        let sql: Vec<&str> = steps.iter().map(|s| s.sql.as_str()).collect();
        assert_eq!(sql[0], "REVOKE ALL ON DATABASE \"postgres\" FROM PUBLIC");
        assert!(sql.iter().any(|s| s.starts_with("REVOKE EXECUTE ON FUNCTION lo_create(oid)")));
        assert!(sql.contains(&"CREATE ROLE \"tenant_acme_owner\" NOLOGIN"));
        assert!(sql.contains(&"CREATE SCHEMA \"tenant_acme\" AUTHORIZATION \"tenant_acme_owner\""));
        assert!(sql.iter().any(|s| s.starts_with(
            "CREATE ROLE \"tenant_acme_user\" LOGIN NOINHERIT CONNECTION LIMIT 5 PASSWORD 'SCRAM-SHA-256$4096:"
        )));
        assert!(sql.iter().any(|s| s.contains("CREATE TABLE \"tenant_acme\".events")));
        assert!(!sql.iter().any(|s| s.contains("NOTIFY") || s.contains("TRIGGER")), "no notification channel: {sql:?}");
        assert!(!sql.iter().any(|s| s.contains("CREATE ON SCHEMA")), "no DDL for the tenant by default");
        let hide = sql.iter().position(|s| s.starts_with("REVOKE SELECT ON pg_catalog.pg_stat_activity"));
        let first_tenant = steps.iter().position(|s| s.tenant.is_some());
        assert!(hide.is_some() && hide < first_tenant, "other tenants' sessions and sources are hidden first: {sql:?}");
    }

    #[test]
    fn earlier_versions_notify_channel_is_removed() {
        let desired = a("acme");
        let mut o = bootstrapped();
        o.notify_function = true;
        let mut t = converged(&desired);
        t.notify_trigger = true;
        o.tenants.insert("acme".into(), t);
        let sql: Vec<String> = plan(&[desired], &o).into_iter().map(|s| s.sql).collect();
        assert_eq!(
            sql,
            [
                "DROP FUNCTION IF EXISTS berqenas.notify_event() CASCADE",
                "DROP TRIGGER IF EXISTS events_notify ON \"tenant_acme\".events; DROP FUNCTION IF EXISTS \"tenant_acme\".notify_event()"
            ]
        );
    }

    #[test]
    fn tenant_code_is_removed_before_its_tables_change_hands() {
        // DDL switched off (or over quota) while the tenant owns objects. First, alone: no more
        // CREATE, its sessions (and their locks) end. Then, in a second transaction: ownership
        // moves to the owner role and everything code-like the owner role now owns goes, so no
        // object committed in between escapes; PUBLIC loses what the tenant granted it.
        let mut desired = a("acme");
        desired.ddl_enabled = false;
        let mut o = bootstrapped();
        let mut t = converged(&desired);
        t.owns_objects = true;
        t.create = true;
        o.tenants.insert("acme".into(), t);
        let steps = plan(&[desired.clone()], &o);
        let sql: Vec<&str> = steps.iter().map(|s| s.sql.as_str()).collect();
        assert_eq!(sql[0], "REVOKE CREATE ON SCHEMA \"tenant_acme\" FROM \"tenant_acme_user\"");
        assert_eq!(sql[1], "ALTER ROLE \"tenant_acme_user\" NOLOGIN", "fail closed until it owns nothing");
        assert!(sql[2].starts_with("SELECT pg_terminate_backend(pid)"), "{sql:?}");
        assert_eq!(sql[3], "REASSIGN OWNED BY \"tenant_acme_user\" TO \"tenant_acme_owner\"");
        assert_eq!(sql.last(), Some(&"ALTER ROLE \"tenant_acme_user\" LOGIN"), "login back only when done");
        let commits: Vec<usize> = steps.iter().enumerate().filter(|(_, s)| s.commit_before).map(|(i, _)| i).collect();
        assert_eq!(commits, [3], "the revokes commit before the reassignment starts");
        assert!(sql[4].starts_with("DO $neutralise$"), "{sql:?}");
        assert!(sql[4].contains("u regrole := 'tenant_acme_owner'"), "{}", sql[4]);
        for kind in ["DROP ROUTINE", "DROP OPERATOR", "DROP RULE", "DROP TRIGGER", "tgparentid = 0", "security_invoker"]
        {
            assert!(sql[4].contains(kind), "{kind}: {}", sql[4]);
        }
        assert!(sql.contains(&"REVOKE ALL ON ALL TABLES IN SCHEMA \"tenant_acme\" FROM PUBLIC"), "{sql:?}");
        // Owning nothing, nothing to neutralise.
        let mut t = converged(&desired);
        t.owns_objects = false;
        o.tenants.insert("acme".into(), t);
        assert!(plan(&[desired], &o).is_empty());
    }

    #[test]
    fn a_ddl_tenant_owning_too_many_objects_loses_create_and_keeps_them() {
        let mut desired = a("acme");
        desired.ddl_enabled = true;
        let mut o = bootstrapped();
        let mut t = converged(&desired);
        t.create = true;
        t.owns_objects = true;
        t.owned = MAX_OBJECTS + 1;
        o.tenants.insert("acme".into(), t.clone());
        let sql: Vec<String> = plan(std::slice::from_ref(&desired), &o).into_iter().map(|s| s.sql).collect();
        assert_eq!(sql, ["REVOKE CREATE ON SCHEMA \"tenant_acme\" FROM \"tenant_acme_user\""], "no reassignment");
        // Back under the cap (it dropped some): CREATE returns.
        t.create = false;
        t.owned = MAX_OBJECTS;
        o.tenants.insert("acme".into(), t);
        let sql: Vec<String> = plan(&[desired], &o).into_iter().map(|s| s.sql).collect();
        assert_eq!(sql, ["GRANT CREATE ON SCHEMA \"tenant_acme\" TO \"tenant_acme_user\""]);
    }

    #[test]
    fn converged_host_yields_empty_plan() {
        let desired = a("acme");
        let mut o = bootstrapped();
        o.tenants.insert("acme".into(), converged(&desired));
        assert_eq!(plan(&[desired], &o), vec![]);
    }

    #[test]
    fn drift_and_lifecycle_are_planned() {
        let desired = a("acme");
        let mut o = bootstrapped();
        let mut t = converged(&desired);
        t.usage = false;
        o.tenants.insert("acme".into(), t);
        assert_eq!(
            plan(std::slice::from_ref(&desired), &o).iter().map(|s| s.sql.clone()).collect::<Vec<_>>(),
            vec!["GRANT USAGE ON SCHEMA \"tenant_acme\" TO \"tenant_acme_user\"".to_string()]
        );
        let mut suspended = desired.clone();
        suspended.lifecycle = "suspended".into();
        o.tenants.insert("acme".into(), converged(&desired));
        assert_eq!(plan(&[suspended], &o)[0].sql, "ALTER ROLE \"tenant_acme_user\" NOLOGIN");
    }

    #[test]
    fn over_quota_revokes_writes_and_under_quota_restores_them() {
        let desired = a("acme");
        let mut o = bootstrapped();
        let mut t = converged(&desired);
        t.bytes = desired.db_quota_bytes + 1;
        o.tenants.insert("acme".into(), t.clone());
        let sql: Vec<String> = plan(std::slice::from_ref(&desired), &o).into_iter().map(|s| s.sql).collect();
        assert_eq!(
            sql,
            vec!["REVOKE INSERT, UPDATE ON ALL TABLES IN SCHEMA \"tenant_acme\" FROM \"tenant_acme_user\", PUBLIC"
                .to_string()],
            "also what it granted PUBLIC while it owned its tables"
        );
        t.write_any = false;
        t.write_all = false;
        o.tenants.insert("acme".into(), t.clone());
        assert!(plan(std::slice::from_ref(&desired), &o).is_empty(), "blocked and over quota: converged");
        t.bytes = 10;
        o.tenants.insert("acme".into(), t);
        let sql: Vec<String> = plan(std::slice::from_ref(&desired), &o).into_iter().map(|s| s.sql).collect();
        assert_eq!(
            sql,
            vec!["GRANT INSERT, UPDATE ON ALL TABLES IN SCHEMA \"tenant_acme\" TO \"tenant_acme_user\"".to_string()]
        );
    }

    #[test]
    fn ddl_is_granted_only_while_enabled_and_under_quota() {
        let mut desired = a("acme");
        desired.ddl_enabled = true;
        let mut o = bootstrapped();
        o.tenants.insert("acme".into(), converged(&desired));
        let sql = |d: &Assignment, o: &Observed| -> Vec<String> {
            plan(std::slice::from_ref(d), o).into_iter().map(|s| s.sql).collect()
        };
        assert_eq!(
            sql(&desired, &o),
            vec!["GRANT CREATE ON SCHEMA \"tenant_acme\" TO \"tenant_acme_user\"".to_string()]
        );
        let mut t = converged(&desired);
        t.create = true;
        t.owns_objects = true;
        o.tenants.insert("acme".into(), t.clone());
        assert!(sql(&desired, &o).is_empty(), "enabled, granted, owning its tables: converged");
        // Disabled (or over quota): no CREATE, and what it made goes to the owner role.
        desired.ddl_enabled = false;
        let steps = sql(&desired, &o);
        assert_eq!(steps[0], "REVOKE CREATE ON SCHEMA \"tenant_acme\" FROM \"tenant_acme_user\"");
        assert_eq!(steps[3], "REASSIGN OWNED BY \"tenant_acme_user\" TO \"tenant_acme_owner\"");
        assert!(steps[4].starts_with("DO $neutralise$"), "the owner role's new code goes: {steps:?}");
        assert!(steps.iter().any(|s| s.starts_with("GRANT INSERT, UPDATE ON ALL TABLES")), "{steps:?}");
        desired.ddl_enabled = true;
        t.bytes = desired.db_quota_bytes + 1;
        o.tenants.insert("acme".into(), t);
        let steps = sql(&desired, &o);
        assert_eq!(
            steps[1], "REVOKE INSERT, UPDATE ON ALL TABLES IN SCHEMA \"tenant_acme\" FROM \"tenant_acme_user\", PUBLIC",
            "writes go first, in the transaction no tenant object can make fail: {steps:?}"
        );
        assert_eq!(steps[4], "REASSIGN OWNED BY \"tenant_acme_user\" TO \"tenant_acme_owner\"");
        assert!(!steps.iter().any(|s| s.starts_with("GRANT INSERT")), "{steps:?}");
    }

    #[test]
    fn between_full_passes_only_changed_tenants_are_looked_at() {
        let (acme, globex, gone) = (a("acme"), a("globex"), a("gone"));
        let converged: BTreeMap<String, Assignment> =
            [&acme, &globex, &gone].into_iter().map(|t| (t.name.clone(), t.clone())).collect();
        let mut suspended = globex.clone();
        suspended.lifecycle = "suspended".into();
        let desired = [acme.clone(), suspended, a("newco")];
        assert_eq!(changed(&desired, &converged), ["globex", "gone", "newco"], "changed, purged, new");
        assert!(changed(&[acme, globex, gone], &converged).is_empty(), "nothing changed: nothing to look at");
    }

    #[test]
    fn unsupported_assignments_are_named_not_served_differently() {
        let mut mssql = a("acme");
        mssql.db_type = "mssql".into();
        assert_eq!(unsupported(&mssql), Some("this node's driver serves PostgreSQL only"));
        let mut per_db = a("acme");
        per_db.isolation = "database".into();
        assert_eq!(unsupported(&per_db), None);
        per_db.isolation = "cluster".into();
        assert!(unsupported(&per_db).is_some());
        assert_eq!(unsupported(&a("acme")), None);
    }

    #[test]
    fn database_isolation_gets_its_own_database_and_the_same_schema_inside() {
        let mut desired = a("solo");
        desired.isolation = "database".into();
        let main: Vec<String> =
            plan(std::slice::from_ref(&desired), &bootstrapped()).into_iter().map(|s| s.sql).collect();
        assert!(main.contains(&"CREATE DATABASE \"tenant_solo\" OWNER \"tenant_solo_owner\"".to_string()));
        assert!(main.contains(&"REVOKE ALL ON DATABASE \"tenant_solo\" FROM PUBLIC".to_string()));
        assert!(!main.iter().any(|s| s.contains("CREATE SCHEMA \"tenant_solo\"")), "no schema in the main database");
        assert!(!main.iter().any(|s| s.contains("GRANT CONNECT ON DATABASE \"postgres\"")), "{main:?}");
        assert!(outside_transaction(
            &main[main.iter().position(|s| s.starts_with("CREATE DATABASE")).expect("created")]
        ));

        // Inside its database: bootstrap, then the same schema as schema isolation.
        let inside = Observed {
            database: "tenant_solo".into(),
            public_connect: true,
            public_schema_create: true,
            public_lo_create: true,
            ..Observed::default()
        };
        let sql: Vec<String> = plan_own_database(&desired, &inside).into_iter().map(|s| s.sql).collect();
        assert_eq!(sql[0], "REVOKE ALL ON DATABASE \"tenant_solo\" FROM PUBLIC");
        assert!(sql.contains(&"CREATE SCHEMA \"tenant_solo\" AUTHORIZATION \"tenant_solo_owner\"".to_string()));
        assert!(sql.contains(&"GRANT CONNECT ON DATABASE \"tenant_solo\" TO \"tenant_solo_user\"".to_string()));
        assert!(!sql.iter().any(|s| s.contains("CREATE ROLE")), "roles are made from the main database: {sql:?}");
        assert!(sql.iter().any(|s| s.starts_with("REVOKE SELECT ON pg_catalog.pg_stat_activity")), "{sql:?}");

        // Purge drops the database first (outside a transaction), then the roles.
        let mut o = bootstrapped();
        let mut t = converged(&desired);
        t.database = true;
        t.schema = false;
        o.tenants.insert("solo".into(), t);
        let sql: Vec<String> = plan(&[], &o).into_iter().map(|s| s.sql).collect();
        assert_eq!(sql[1], "DROP DATABASE IF EXISTS \"tenant_solo\" WITH (FORCE)");
        assert!(sql.last().is_some_and(|s| s.starts_with("DROP ROLE")), "{sql:?}");
    }

    #[test]
    fn purge_drops_only_managed_tenants() {
        let desired = a("acme");
        let mut o = bootstrapped();
        o.tenants.insert("acme".into(), converged(&desired));
        let mut foreign = converged(&desired);
        for role in [foreign.owner.as_mut(), foreign.user.as_mut()].into_iter().flatten() {
            role.managed = false;
        }
        o.tenants.insert("legacy".into(), foreign);
        let steps = plan(&[], &o);
        let sql: Vec<&str> = steps.iter().map(|s| s.sql.as_str()).collect();
        assert!(sql.contains(&"DROP SCHEMA IF EXISTS \"tenant_acme\" CASCADE"));
        assert!(sql.contains(&"DROP ROLE \"tenant_acme_user\", \"tenant_acme_owner\""));
        assert!(!sql.iter().any(|s| s.contains("legacy")), "never touches roles it did not create");
    }

    #[test]
    fn invalid_verifier_never_reaches_sql() {
        let mut bad = a("acme");
        bad.db_password_verifier = "x'; DROP ROLE postgres; --".into();
        let steps = plan(&[bad], &bootstrapped());
        assert!(steps.iter().all(|s| !s.sql.contains("DROP ROLE postgres")));
        assert!(steps.iter().all(|s| !s.sql.contains("PASSWORD")));
    }

    #[test]
    fn redacts_passwords_in_logs() {
        assert_eq!(
            redact("CREATE ROLE \"x\" LOGIN PASSWORD 'SCRAM-SHA-256$...'"),
            "CREATE ROLE \"x\" LOGIN PASSWORD '…'"
        );
    }
}
