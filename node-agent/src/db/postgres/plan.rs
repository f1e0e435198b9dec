//! The pure half of the PostgreSQL driver: what was observed and what should be, as plain data,
//! and the planners that turn the difference into SQL steps — empty when the host is converged.
//! No IO here; the tests assert on the plans.

use super::step::{tenant_steps, Sql, Step, StepKind, Stmts};
use crate::assignment::{DbTenant, Tenant};
use crate::db::{own_database, postgres_tenants};
use std::collections::{BTreeMap, BTreeSet};

/// Marks roles this driver owns; nothing else is ever dropped.
pub(super) const MARKER: &str = "berqenas-managed";

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

fn q(ident: &str) -> String {
    format!("\"{ident}\"")
}

fn user_config(a: &DbTenant) -> BTreeSet<String> {
    let temp_kb = (a.db.quota_bytes / 1024).clamp(1024, i32::MAX as u64);
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
fn role_steps(a: &DbTenant, o: &ObservedTenant) -> Stmts {
    let (qs, qo, qu) = idents(&a.name);
    let login = a.runs();
    let limit = i64::from(a.db.connection_limit.min(i32::MAX as u32));
    let mut sql = Stmts::default();
    if o.owner.is_none() {
        sql.push(format!("CREATE ROLE {qo} NOLOGIN"));
        sql.push(format!("COMMENT ON ROLE {qo} IS '{MARKER}'"));
    }
    let verifier_ok = crate::assignment::is_verifier(&a.db.password_verifier);
    match &o.user {
        None => {
            let login_kw = if login { "LOGIN" } else { "NOLOGIN" };
            let create = format!("CREATE ROLE {qu} {login_kw} NOINHERIT CONNECTION LIMIT {limit}");
            sql.push(match verifier_ok {
                true => Sql::secret(
                    format!("{create} PASSWORD '{}'", a.db.password_verifier),
                    format!("{create} PASSWORD '…'"),
                ),
                false => Sql::from(create),
            });
            sql.push(format!("COMMENT ON ROLE {qu} IS '{MARKER}'"));
        }
        Some(u) => {
            if u.can_login != login {
                sql.push(match login {
                    true => Sql::from(format!("ALTER ROLE {qu} LOGIN")),
                    false => Sql::kind(format!("ALTER ROLE {qu} NOLOGIN"), StepKind::Offboard),
                });
            }
            if u.inherit {
                sql.push(format!("ALTER ROLE {qu} NOINHERIT"));
            }
            if i64::from(u.conn_limit) != limit {
                sql.push(format!("ALTER ROLE {qu} CONNECTION LIMIT {limit}"));
            }
            if verifier_ok && u.password.as_deref() != Some(a.db.password_verifier.as_str()) {
                sql.push(Sql::secret(
                    format!("ALTER ROLE {qu} PASSWORD '{}'", a.db.password_verifier),
                    format!("ALTER ROLE {qu} PASSWORD '…'"),
                ));
            }
        }
    }
    let want = user_config(a);
    let have = o.user.as_ref().map(|u| u.config.clone()).unwrap_or_default();
    if want != have {
        // Exactly these: the tenant may have added its own (per database, too; `observe` lists
        // those as `database …` lines, so they always differ).
        let temp_kb = (a.db.quota_bytes / 1024).clamp(1024, i32::MAX as u64);
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
fn database_steps(a: &DbTenant, o: &ObservedTenant) -> Stmts {
    let (qd, qo, _) = idents(&a.name);
    if o.database {
        return Stmts::default();
    }
    Stmts(vec![
        Sql::kind(format!("CREATE DATABASE {qd} OWNER {qo}"), StepKind::OutsideTransaction),
        Sql::kind(format!("REVOKE ALL ON DATABASE {qd} FROM PUBLIC"), StepKind::SharedRow),
    ])
}

/// The tenant's schema and what is in it, in database `db` (the main database, or its own).
fn schema_steps(a: &DbTenant, o: &ObservedTenant, db: &str) -> Stmts {
    let (qs, qo, qu) = idents(&a.name);
    let mut sql = Stmts::default();
    if !o.schema {
        sql.push(format!("CREATE SCHEMA {qs} AUTHORIZATION {qo}"));
    }
    if !o.connect {
        sql.push(Sql::kind(format!("GRANT CONNECT ON DATABASE {} TO {qu}", q(db)), StepKind::SharedRow));
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
    let ddl = a.db.ddl_enabled && !over && o.owned <= MAX_OBJECTS;
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
        sql.push(Sql::kind(format!("ALTER ROLE {qu} NOLOGIN"), StepKind::Offboard));
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
fn reassigns(a: &DbTenant, o: &ObservedTenant) -> bool {
    (!a.db.ddl_enabled || over_quota(a, o)) && o.owns_objects
}

/// The second transaction of a tenant that owns objects while it may not: they go to its owner
/// role, then everything that role now owns that could run code goes (nothing of the
/// platform's is code, so all of it was the tenant's), PUBLIC loses what the tenant granted it,
/// and the tenant gets back exactly its DML. Neutralising after `REASSIGN OWNED`, in the same
/// transaction, leaves no window: what the tenant could create meanwhile stays its own (and it
/// can create nothing once the first transaction revoked CREATE).
fn reassign_steps(a: &DbTenant, o: &ObservedTenant) -> Stmts {
    if !reassigns(a, o) {
        return Stmts::default();
    }
    let (qs, qo, qu) = idents(&a.name);
    let mut sql = Stmts::default();
    for s in [
        format!("REASSIGN OWNED BY {qu} TO {qo}"),
        neutralise(&format!("tenant_{}_owner", a.name)),
        format!("REVOKE ALL ON ALL TABLES IN SCHEMA {qs} FROM PUBLIC"),
        format!("REVOKE ALL ON ALL SEQUENCES IN SCHEMA {qs} FROM PUBLIC"),
        format!("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {qs} TO {qu}"),
        format!("GRANT SELECT, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA {qs} TO {qu}"),
    ] {
        sql.push(s);
    }
    if !over_quota(a, o) {
        sql.push(format!("GRANT INSERT, UPDATE ON ALL TABLES IN SCHEMA {qs} TO {qu}"));
    }
    if a.runs() {
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
pub fn over_quota(a: &DbTenant, o: &ObservedTenant) -> bool {
    o.bytes > a.db.quota_bytes
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

/// Pure: the SQL, run in the main database, that makes `observed` match `desired`: roles of
/// every tenant, schemas of schema-isolated tenants, databases of database-isolated ones (whose
/// insides [`plan_own_database`] plans), and purges.
pub fn plan(desired: &[DbTenant], observed: &Observed) -> Vec<Step> {
    let db = observed.database.as_str();
    let mut steps = bootstrap_steps(observed);
    let mine: Vec<&DbTenant> = postgres_tenants(desired).collect();
    let wanted: BTreeSet<&str> = mine.iter().map(|a| a.name.as_str()).collect();
    let empty = ObservedTenant::default();
    for a in &mine {
        let o = observed.tenants.get(&a.name).unwrap_or(&empty);
        let mut sql = role_steps(a, o);
        let mut then = Stmts::default();
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
        let mut sql = Stmts::default();
        if o.user.is_some() {
            sql.push(Sql::kind(format!("ALTER ROLE {qu} NOLOGIN"), StepKind::Offboard));
        }
        if o.database {
            sql.push(Sql::kind(format!("DROP DATABASE IF EXISTS {qs} WITH (FORCE)"), StepKind::OutsideTransaction));
        }
        sql.push(Sql::kind(format!("DROP SCHEMA IF EXISTS {qs} CASCADE"), StepKind::Purge));
        let roles: Vec<String> =
            [(o.user.is_some(), qu), (o.owner.is_some(), qo)].into_iter().filter(|(e, _)| *e).map(|(_, r)| r).collect();
        if !roles.is_empty() {
            sql.push(Sql::kind(format!("DROP OWNED BY {}", roles.join(", ")), StepKind::Purge));
            sql.push(Sql::kind(format!("DROP ROLE {}", roles.join(", ")), StepKind::Purge));
        }
        steps.extend(tenant_steps(name, sql, Stmts::default()));
    }
    steps
}

/// Pure: the SQL, run inside tenant `a`'s own database (observed as `observed`), that makes it
/// match: the same bootstrap as the main database and the same schema as schema isolation.
pub fn plan_own_database(a: &DbTenant, observed: &Observed) -> Vec<Step> {
    let empty = ObservedTenant::default();
    let o = observed.tenants.get(&a.name).unwrap_or(&empty);
    let mut steps = bootstrap_steps(observed);
    steps.extend(tenant_steps(&a.name, schema_steps(a, o, &observed.database), reassign_steps(a, o)));
    steps
}

/// Pure: the tenants a pass between full passes must look at — desired ones whose assignment
/// differs from the one they were converged to (new, changed, or not converged), and converged
/// ones no longer desired (to purge).
pub fn changed(desired: &[DbTenant], converged: &BTreeMap<String, DbTenant>) -> Vec<String> {
    let mut names: BTreeSet<String> =
        postgres_tenants(desired).filter(|a| converged.get(&a.name) != Some(*a)).map(|a| a.name.clone()).collect();
    names.extend(converged.keys().filter(|n| !desired.iter().any(|a| &a.name == *n)).cloned());
    names.into_iter().collect()
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
