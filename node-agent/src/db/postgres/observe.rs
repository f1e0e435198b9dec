//! Observation for the PostgreSQL driver: a handful of set-based catalog queries, whatever the
//! number of tenants, on the pass's own short-lived superuser connection. None of them waits for
//! a lock a tenant can hold (sizes are measured apart, by `size`).

use super::plan::{Observed, ObservedRole, MARKER};
use sqlx::{PgConnection, Row};

/// Reads the catalogs — about every tenant, or with `only` about those tenants alone. Sizes are
/// measured apart ([`super::size`]) and left at 0 here. Nothing here waits for a lock a
/// tenant can hold.
pub(super) async fn observe(conn: &mut PgConnection, only: Option<&[String]>) -> Result<Observed, sqlx::Error> {
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
