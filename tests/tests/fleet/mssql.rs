//! SQL Server db nodes end to end: a coordinator, a node agent with the `mssql` driver, and the
//! SQL Server at `BERQENAS_TEST_MSSQL_URL` (an ADO connection string of a login that may create
//! databases and logins, e.g. `server=tcp:127.0.0.1,1433;user=sa;password=…;TrustServerCertificate=true`).
//! No SQL Server can run on our build machines, so this test is `#[ignore]`d: `deploy/test.sh`
//! runs it when the variable is set and prints that it did not run otherwise. The driver's
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
