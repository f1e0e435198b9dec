//! Plan tests of the SQL Server driver: the statements it generates for each desired/observed pair.

use super::*;

const HASH: &str = "0x020001020304EFE8DF30D6F1BAC62F0DC1D5D118928FB3BD18FFEAA614F7EEC41FEC4D9058B06A8A44642527DA0A63DDB7F8E92567DCA8A3808C2EC1D258F12D5DBDE8DE30CA";

fn a(name: &str) -> DbTenant {
    let mut t = crate::assignment::fixture(name);
    t.db = crate::assignment::DbSpec {
        db_type: DbType::Mssql,
        isolation: crate::assignment::Isolation::Database,
        quota_bytes: 1024 * 1024 * 1024,
        connection_limit: 10,
        events_per_min: 1000,
        access_mode: crate::assignment::AccessMode::Public,
        vpn_enabled: false,
        password_verifier: HASH.into(),
        ..t.db
    };
    t
}

fn converged(desired: &DbTenant) -> ObservedTenant {
    ObservedTenant {
        database: true,
        managed: true,
        login: Some(ObservedLogin { disabled: false, password_hash: desired.db.password_verifier.clone() }),
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

fn steps(desired: &[DbTenant], observed: &Observed, name: &str) -> Vec<String> {
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
    t.bytes = desired.db.quota_bytes + 1;
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
    bad.db.password_verifier = "0x0200'; DROP LOGIN sa; --".into();
    assert!(plan(&[bad.clone()], &Observed::default())["acme"].is_err());
    bad.db.password_verifier = "SCRAM-SHA-256$4096:AQ==$AQ==:AQ==".into();
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
    t.bytes = desired.db.quota_bytes + 1;
    o.tenants.insert("acme".into(), t);
    let sql = steps(std::slice::from_ref(&desired), &o, "acme");
    assert_eq!(
        sql,
        vec![drop_ddl_triggers("tenant_acme"), guarded("tenant_acme", "DENY INSERT, UPDATE TO [tenant_acme_user]")]
    );
    let deny = &sql[1];
    let (disable, drop, stmt) = (deny.find("DISABLE TRIGGER ALL"), deny.find("DROP TRIGGER"), deny.find("DENY INSERT"));
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
    drifted.bytes = desired.db.quota_bytes + 1;
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
