//! Plan tests: each asserts on the SQL a situation yields, named by the behaviour it shows.

use super::*;

fn a(name: &str) -> DbTenant {
    const VERIFIER: &str = "SCRAM-SHA-256$4096:AQIDBAUGBwgJCgsMDQ4PEA==$8rrDg00OqaiWXJ7p+sCgHEIaBSHY89ZJl3mfIsf32oY=:05L1f+yZbiN8O0AnO40Og85NNRhvzTS57naKRWCcsIA=";
    let mut t = DbTenant { revision: 3, ..crate::assignment::fixture(name) };
    t.db = crate::assignment::DbSpec {
        quota_bytes: 5_000_000_000,
        events_per_min: 1000,
        password_verifier: VERIFIER.into(),
        ..t.db
    };
    t
}

fn converged(desired: &DbTenant) -> ObservedTenant {
    let role = |login| ObservedRole {
        can_login: login,
        inherit: false,
        conn_limit: 5,
        password: Some(desired.db.password_verifier.clone()),
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
    let create_user = steps.iter().find(|s| s.sql.starts_with("CREATE ROLE \"tenant_acme_user\"")).expect("user");
    assert!(create_user.carries_secret(), "the verifier is a secret");
    assert_eq!(create_user.shown(), "CREATE ROLE \"tenant_acme_user\" LOGIN NOINHERIT CONNECTION LIMIT 5 PASSWORD '…'");
    assert!(!format!("{steps:?}").contains("SCRAM-SHA-256$"), "not even in Debug");
    assert_eq!(steps.iter().filter(|s| s.carries_secret()).count(), 1, "{steps:?}");
    let connect = steps.iter().find(|s| s.sql.starts_with("GRANT CONNECT ON DATABASE")).expect("connect");
    assert_eq!(connect.kind, StepKind::SharedRow, "the database's ACL row is shared by every tenant");
    assert!(steps.iter().filter(|s| s.tenant.is_none()).all(|s| s.kind == StepKind::Bootstrap));
    assert!(steps.iter().filter(|s| s.sql.starts_with("CREATE SCHEMA \"tenant")).all(|s| s.kind == StepKind::Tenant));
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
    desired.db.ddl_enabled = false;
    let mut o = bootstrapped();
    let mut t = converged(&desired);
    t.owns_objects = true;
    t.create = true;
    o.tenants.insert("acme".into(), t);
    let steps = plan(&[desired.clone()], &o);
    let sql: Vec<&str> = steps.iter().map(|s| s.sql.as_str()).collect();
    assert_eq!(sql[0], "REVOKE CREATE ON SCHEMA \"tenant_acme\" FROM \"tenant_acme_user\"");
    assert_eq!(sql[1], "ALTER ROLE \"tenant_acme_user\" NOLOGIN", "fail closed until it owns nothing");
    assert_eq!(steps[1].kind, StepKind::Offboard, "its sessions end once the pass ran it");
    assert!(steps.iter().all(|s| !s.carries_secret()));
    assert!(sql[2].starts_with("SELECT pg_terminate_backend(pid)"), "{sql:?}");
    assert_eq!(sql[3], "REASSIGN OWNED BY \"tenant_acme_user\" TO \"tenant_acme_owner\"");
    assert_eq!(sql.last(), Some(&"ALTER ROLE \"tenant_acme_user\" LOGIN"), "login back only when done");
    let commits: Vec<usize> = steps.iter().enumerate().filter(|(_, s)| s.commit_before).map(|(i, _)| i).collect();
    assert_eq!(commits, [3], "the revokes commit before the reassignment starts");
    assert!(sql[4].starts_with("DO $neutralise$"), "{sql:?}");
    assert!(sql[4].contains("u regrole := 'tenant_acme_owner'"), "{}", sql[4]);
    for kind in ["DROP ROUTINE", "DROP OPERATOR", "DROP RULE", "DROP TRIGGER", "tgparentid = 0", "security_invoker"] {
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
    desired.db.ddl_enabled = true;
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
    suspended.lifecycle = crate::assignment::Lifecycle::Suspended;
    o.tenants.insert("acme".into(), converged(&desired));
    let steps = plan(&[suspended], &o);
    assert_eq!(steps[0].sql, "ALTER ROLE \"tenant_acme_user\" NOLOGIN");
    assert_eq!(steps[0].kind, StepKind::Offboard);
}

#[test]
fn over_quota_revokes_writes_and_under_quota_restores_them() {
    let desired = a("acme");
    let mut o = bootstrapped();
    let mut t = converged(&desired);
    t.bytes = desired.db.quota_bytes + 1;
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
    desired.db.ddl_enabled = true;
    let mut o = bootstrapped();
    o.tenants.insert("acme".into(), converged(&desired));
    let sql = |d: &DbTenant, o: &Observed| -> Vec<String> {
        plan(std::slice::from_ref(d), o).into_iter().map(|s| s.sql).collect()
    };
    assert_eq!(sql(&desired, &o), vec!["GRANT CREATE ON SCHEMA \"tenant_acme\" TO \"tenant_acme_user\"".to_string()]);
    let mut t = converged(&desired);
    t.create = true;
    t.owns_objects = true;
    o.tenants.insert("acme".into(), t.clone());
    assert!(sql(&desired, &o).is_empty(), "enabled, granted, owning its tables: converged");
    // Disabled (or over quota): no CREATE, and what it made goes to the owner role.
    desired.db.ddl_enabled = false;
    let steps = sql(&desired, &o);
    assert_eq!(steps[0], "REVOKE CREATE ON SCHEMA \"tenant_acme\" FROM \"tenant_acme_user\"");
    assert_eq!(steps[3], "REASSIGN OWNED BY \"tenant_acme_user\" TO \"tenant_acme_owner\"");
    assert!(steps[4].starts_with("DO $neutralise$"), "the owner role's new code goes: {steps:?}");
    assert!(steps.iter().any(|s| s.starts_with("GRANT INSERT, UPDATE ON ALL TABLES")), "{steps:?}");
    desired.db.ddl_enabled = true;
    t.bytes = desired.db.quota_bytes + 1;
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
    let converged: BTreeMap<String, DbTenant> =
        [&acme, &globex, &gone].into_iter().map(|t| (t.name.clone(), t.clone())).collect();
    let mut suspended = globex.clone();
    suspended.lifecycle = crate::assignment::Lifecycle::Suspended;
    let desired = [acme.clone(), suspended, a("newco")];
    assert_eq!(changed(&desired, &converged), ["globex", "gone", "newco"], "changed, purged, new");
    assert!(changed(&[acme, globex, gone], &converged).is_empty(), "nothing changed: nothing to look at");
}

#[test]
fn database_isolation_gets_its_own_database_and_the_same_schema_inside() {
    let mut desired = a("solo");
    desired.db.isolation = crate::assignment::Isolation::Database;
    let main: Vec<String> = plan(std::slice::from_ref(&desired), &bootstrapped()).into_iter().map(|s| s.sql).collect();
    assert!(main.contains(&"CREATE DATABASE \"tenant_solo\" OWNER \"tenant_solo_owner\"".to_string()));
    assert!(main.contains(&"REVOKE ALL ON DATABASE \"tenant_solo\" FROM PUBLIC".to_string()));
    assert!(!main.iter().any(|s| s.contains("CREATE SCHEMA \"tenant_solo\"")), "no schema in the main database");
    assert!(!main.iter().any(|s| s.contains("GRANT CONNECT ON DATABASE \"postgres\"")), "{main:?}");
    let steps = plan(std::slice::from_ref(&desired), &bootstrapped());
    let kind = |prefix: &str| steps.iter().find(|s| s.sql.starts_with(prefix)).map(|s| s.kind);
    assert_eq!(kind("CREATE DATABASE"), Some(StepKind::OutsideTransaction), "runs alone, outside a transaction");
    assert_eq!(kind("REVOKE ALL ON DATABASE \"tenant_solo\""), Some(StepKind::SharedRow));

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
    let kinds: Vec<StepKind> = plan(&[], &o).into_iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        [StepKind::Offboard, StepKind::OutsideTransaction, StepKind::Purge, StepKind::Purge, StepKind::Purge],
        "login taken first, the database alone, then the rest together"
    );
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
    bad.db.password_verifier = "x'; DROP ROLE postgres; --".into();
    let steps = plan(&[bad], &bootstrapped());
    assert!(steps.iter().all(|s| !s.sql.contains("DROP ROLE postgres")));
    assert!(steps.iter().all(|s| !s.sql.contains("PASSWORD")));
}

#[test]
fn a_changed_password_is_a_secret_step_shown_redacted() {
    let desired = a("acme");
    let mut o = bootstrapped();
    let mut t = converged(&desired);
    if let Some(u) = t.user.as_mut() {
        u.password = Some("SCRAM-SHA-256$4096:b2xk$b2xk:b2xk".into());
    }
    o.tenants.insert("acme".into(), t);
    let steps = plan(std::slice::from_ref(&desired), &o);
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert!(steps[0].carries_secret());
    assert_eq!(steps[0].kind, StepKind::Tenant);
    assert_eq!(steps[0].sql, format!("ALTER ROLE \"tenant_acme_user\" PASSWORD '{}'", desired.db.password_verifier));
    assert_eq!(steps[0].shown(), "ALTER ROLE \"tenant_acme_user\" PASSWORD '…'");
}
