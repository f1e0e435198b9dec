//! SQL Server db nodes end to end: a coordinator, a node agent with the `mssql` driver, and the
//! SQL Server at `BERQENAS_TEST_MSSQL_URL` (an ADO connection string of a login that may create
//! databases and logins, e.g. `server=tcp:127.0.0.1,1433;user=sa;password=…;TrustServerCertificate=true`).
//! No SQL Server can run on our build machines, so these tests are `#[ignore]`d: `deploy/test.sh`
//! runs them when the variable is set and prints that they did not run otherwise. The driver's
//! statement generation is unit tested in `node-agent/src/mssql.rs`.

use crate::harness::Fleet;
use berqenas_tests::wait_for;
use serde_json::Value;
use std::time::Duration;
use tokio_util::compat::TokioAsyncWriteCompatExt;

type Client = tiberius::Client<tokio_util::compat::Compat<tokio::net::TcpStream>>;

fn url() -> String {
    std::env::var("BERQENAS_TEST_MSSQL_URL").expect("BERQENAS_TEST_MSSQL_URL must name a SQL Server for this test")
}

async fn connect(ado: &str) -> Result<Client, String> {
    let config = tiberius::Config::from_ado_string(ado).map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect(config.get_addr()).await.map_err(|e| e.to_string())?;
    tiberius::Client::connect(config, tcp.compat_write()).await.map_err(|e| e.to_string())
}

/// Runs `sql` as the tenant (login `user`, database `db`); Ok(first column of the first row as
/// text, if any) or Err(the server's message).
fn as_tenant(user: &str, password: &str, db: &str, sql: &str) -> Result<Option<String>, String> {
    let config = tiberius::Config::from_ado_string(&url()).map_err(|e| e.to_string())?;
    let ado = format!(
        "server=tcp:{},{};database={db};user={user};password={password};TrustServerCertificate=true",
        config.get_addr().split(':').next().unwrap_or("127.0.0.1"),
        config.get_addr().rsplit(':').next().unwrap_or("1433"),
    );
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut client = connect(&ado).await?;
        let rows = client
            .simple_query(sql)
            .await
            .map_err(|e| e.to_string())?
            .into_first_result()
            .await
            .map_err(|e| e.to_string())?;
        Ok(rows.first().and_then(|r| r.get::<&str, _>(0).map(str::to_string)))
    })
}

fn as_admin(sql: &str) -> Option<String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut client = connect(&url()).await.expect("admin login");
        let rows = client.simple_query(sql).await.expect("admin query").into_first_result().await.expect("admin rows");
        rows.first().and_then(|r| r.get::<&str, _>(0).map(str::to_string))
    })
}

#[test]
#[ignore = "needs a SQL Server: set BERQENAS_TEST_MSSQL_URL (deploy/test.sh then runs it)"]
fn mssql_tenants_get_their_own_database_and_hashed_login() {
    let ado = url();
    let mut f = Fleet::new(1);
    f.add_agent_with_driver("mssql", "db", "engines=mssql", &["--driver", "mssql", "--driver-url", &ado]);
    let create = |name: &str| -> Value {
        f.json(
            0,
            &[
                "tenant",
                "create",
                "--name",
                name,
                "--db",
                "mssql",
                "--vpn",
                "disabled",
                "--wait",
                "--wait-timeout",
                "60s",
            ],
        )
    };
    let acme = create("msacme");
    assert_eq!(acme["status"], "active", "{acme}");
    let globex = create("msglobex");
    let (a_user, a_pw) = (acme["db_user"].as_str().expect("user"), acme["db_password"].as_str().expect("password"));
    let (b_user, b_pw) = (globex["db_user"].as_str().expect("user"), globex["db_password"].as_str().expect("password"));

    // The server holds the hash the coordinator made: PWDCOMPARE accepts the printed password.
    let same = as_admin(&format!(
        "SELECT CAST(PWDCOMPARE(N'{a_pw}', CAST(LOGINPROPERTY(N'{a_user}', 'PasswordHash') AS varbinary(256))) AS varchar(1))"
    ));
    assert_eq!(same.as_deref(), Some("1"));

    // DML and DDL in its own database; nothing in the other tenant's.
    as_tenant(
        a_user,
        a_pw,
        "tenant_msacme",
        "INSERT INTO dbo.events (event_type) VALUES (N'boot'); SELECT CAST(COUNT(*) AS varchar(10)) FROM dbo.events",
    )
    .expect("acme works in its database");
    as_tenant(a_user, a_pw, "tenant_msacme", "CREATE TABLE dbo.t (i int); DROP TABLE dbo.t").expect("db_ddladmin");
    let err = as_tenant(a_user, a_pw, "tenant_msglobex", "SELECT 1").expect_err("another tenant's database");
    assert!(err.contains("tenant_msglobex") || err.to_lowercase().contains("cannot open"), "{err}");
    assert!(as_tenant(b_user, b_pw, "tenant_msglobex", "SELECT 1").is_ok());
    assert!(as_tenant(a_user, "wrong-password", "tenant_msacme", "SELECT 1").is_err());

    // Suspend disables the login; resume enables it with the data intact.
    f.json(0, &["tenant", "suspend", "msacme"]);
    wait_for("the login to be disabled", Duration::from_secs(30), || {
        as_tenant(a_user, a_pw, "tenant_msacme", "SELECT 1").err()
    });
    f.json(0, &["tenant", "resume", "msacme"]);
    let count = wait_for("the login to be enabled", Duration::from_secs(30), || {
        as_tenant(a_user, a_pw, "tenant_msacme", "SELECT CAST(COUNT(*) AS varchar(10)) FROM dbo.events").ok().flatten()
    });
    assert_eq!(count, "1");

    // Purge drops the login and the database; the other tenant stays.
    for name in ["msacme", "msglobex"] {
        f.json(0, &["tenant", "delete", name]);
        f.json(0, &["tenant", "purge", name, "--force"]);
    }
    wait_for("purge to reach SQL Server", Duration::from_secs(30), || {
        let left = as_admin(
            "SELECT CAST((SELECT COUNT(*) FROM sys.databases WHERE name IN (N'tenant_msacme', N'tenant_msglobex')) \
             + (SELECT COUNT(*) FROM sys.sql_logins WHERE name IN (N'tenant_msacme_user', N'tenant_msglobex_user')) AS varchar(10))",
        );
        (left.as_deref() == Some("0")).then_some(())
    });
}

/// Issue 8 item 7: a database-scoped DDL trigger runs as whoever fires it, and the agent is
/// sysadmin. The tenant (a `db_ddladmin`) may not create one, and one that exists anyway (made
/// before the DENY, or by anyone else) is disabled and dropped before the agent's next DDL there,
/// so pushing the tenant over its quota (a `DENY`, an `ALTER DATABASE`) makes it neither sysadmin
/// nor lets it take its writes back.
#[test]
#[ignore = "needs a SQL Server: set BERQENAS_TEST_MSSQL_URL (deploy/test.sh then runs it)"]
fn mssql_tenant_ddl_trigger_never_runs_as_the_agent() {
    let ado = url();
    let mut f = Fleet::new(1);
    f.add_agent_with_driver("mssql", "db", "engines=mssql", &["--driver", "mssql", "--driver-url", &ado]);
    let t = f.json(
        0,
        &[
            "tenant",
            "create",
            "--name",
            "mstrig",
            "--db",
            "mssql",
            "--db-quota",
            "1GB",
            "--vpn",
            "disabled",
            "--wait",
            "--wait-timeout",
            "60s",
        ],
    );
    assert_eq!(t["status"], "active", "{t}");
    let (user, pw) = (t["db_user"].as_str().expect("user"), t["db_password"].as_str().expect("password"));
    let db = "tenant_mstrig";
    // Fires on every database-level DDL event; as sysadmin it would promote the tenant and lift
    // the quota DENY the agent has just issued.
    let trigger = format!(
        "CREATE TRIGGER grab ON DATABASE FOR DDL_DATABASE_LEVEL_EVENTS AS BEGIN \
         IF TRIGGER_NESTLEVEL() > 1 RETURN; \
         IF IS_SRVROLEMEMBER('sysadmin') = 1 BEGIN \
         EXEC (N'ALTER SERVER ROLE sysadmin ADD MEMBER [{user}]'); \
         EXEC (N'REVOKE INSERT, UPDATE FROM [{user}]'); END END"
    );
    let count_triggers =
        || as_admin(&format!("SELECT CAST(COUNT(*) AS varchar(10)) FROM [{db}].sys.triggers WHERE parent_class = 0"));

    // 1. The tenant, a db_ddladmin, is denied the right to create the trigger.
    let err = as_tenant(user, pw, db, &trigger).expect_err("a tenant cannot create a database DDL trigger");
    assert!(err.to_lowercase().contains("permission"), "{err}");
    assert_eq!(count_triggers().as_deref(), Some("0"));
    as_tenant(user, pw, db, "CREATE TABLE dbo.t (i int); DROP TABLE dbo.t").expect("other DDL still works");

    // 2. One that exists anyway (planted here as an administrator, as a tenant could before the
    // DENY existed) is removed before the agent runs DDL in the database.
    as_admin(&format!("EXEC [{db}].sys.sp_executesql N'{}'", trigger.replace('\'', "''")));
    assert_eq!(count_triggers().as_deref(), Some("1"));
    as_tenant(
        user,
        pw,
        db,
        "INSERT INTO dbo.events (payload) SELECT TOP (3000) REPLICATE(N'x', 500) \
         FROM sys.all_objects a CROSS JOIN sys.all_objects b",
    )
    .expect("fill past 1MB");
    // The quota change makes the agent run ALTER DATABASE … MAXSIZE and DENY INSERT, UPDATE there.
    f.json(0, &["tenant", "update", "mstrig", "--db-quota", "1MB"]);
    let err = wait_for("the quota DENY to reach SQL Server", Duration::from_secs(60), || {
        as_tenant(user, pw, db, "INSERT INTO dbo.events (event_type) VALUES (N'more')").err()
    });
    assert!(err.to_lowercase().contains("permission"), "{err}");
    assert_eq!(count_triggers().as_deref(), Some("0"), "the planted trigger was dropped");
    let sysadmin = as_admin(&format!("SELECT CAST(IS_SRVROLEMEMBER('sysadmin', N'{user}') AS varchar(2))"));
    assert_eq!(sysadmin.as_deref(), Some("0"), "the tenant did not become sysadmin");
    // Passes keep coming; the writes stay denied (the trigger never lifted them).
    let denied = wait_for("the tenant to show quota-exceeded", Duration::from_secs(120), || {
        let t = f.json(0, &["tenant", "get", "mstrig"]);
        (t["status"] == "quota-exceeded").then_some(t)
    });
    assert_eq!(denied["status"], "quota-exceeded");
    assert!(as_tenant(user, pw, db, "INSERT INTO dbo.events (event_type) VALUES (N'more')").is_err());

    f.json(0, &["tenant", "delete", "mstrig"]);
    f.json(0, &["tenant", "purge", "mstrig", "--force"]);
    wait_for("purge to reach SQL Server", Duration::from_secs(30), || {
        let left = as_admin(&format!(
            "SELECT CAST((SELECT COUNT(*) FROM sys.databases WHERE name = N'{db}') \
             + (SELECT COUNT(*) FROM sys.sql_logins WHERE name = N'{user}') AS varchar(10))"
        ));
        (left.as_deref() == Some("0")).then_some(())
    });
}
