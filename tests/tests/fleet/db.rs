//! The db role end to end: a coordinator, a db node agent with the PostgreSQL driver and a real
//! PostgreSQL, each in its own lab host. Tenants get isolated schemas and roles; drift is
//! repaired; offboarding is enforced and purge leaves nothing behind.

use crate::harness::{agent_bin, coordinator_bin};
use berqenas_tests::coordinator;
use berqenas_tests::lab::{Host, Lab};
use berqenas_tests::pgbouncer::PgBouncer;
use berqenas_tests::postgres::Postgres;
use berqenas_tests::{wait_for, Proc};
use serde_json::Value;
use std::time::Duration;

pub(crate) struct Env {
    pub(crate) procs: Vec<Proc>,
    pub(crate) pgb: PgBouncer,
    pub(crate) pg: Postgres,
    pub(crate) c1: Host,
    pub(crate) app: Host,
    pub(crate) outsider: Host,
    pub(crate) db: Host,
    pub(crate) agent_config: std::path::PathBuf,
    key: String,
    pub(crate) lab: Lab,
    pub(crate) tmp: tempfile::TempDir,
}

impl Env {
    pub(crate) fn cli(&self, args: &[&str]) -> std::process::Output {
        let endpoint = format!("https://{}:7201", self.c1.addr);
        let ca = self.tmp.path().join("c1").join("ca.pem");
        let env = [
            ("BERQENAS_ENDPOINT", endpoint.as_str()),
            ("BERQENAS_API_KEY", self.key.as_str()),
            ("BERQENAS_CA_CERT", ca.to_str().expect("utf-8")),
        ];
        self.lab.run(&self.c1, &coordinator_bin(), args, &env)
    }

    /// The CLI with another API key (a customer's).
    pub(crate) fn cli_as(&self, key: &str, args: &[&str]) -> std::process::Output {
        let endpoint = format!("https://{}:7201", self.c1.addr);
        let ca = self.tmp.path().join("c1").join("ca.pem");
        let env = [
            ("BERQENAS_ENDPOINT", endpoint.as_str()),
            ("BERQENAS_API_KEY", key),
            ("BERQENAS_CA_CERT", ca.to_str().expect("utf-8")),
        ];
        self.lab.run(&self.c1, &coordinator_bin(), args, &env)
    }

    pub(crate) fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.cli(&all);
        assert!(out.status.success(), "`{}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("json")
    }

    /// psql as a tenant's user from the app host; Ok(stdout) or Err(stderr).
    pub(crate) fn as_tenant(&self, user: &str, password: &str, commands: &[&str]) -> Result<String, String> {
        self.as_tenant_via(&self.app, &self.pg.host.addr.to_string(), user, password, commands)
    }

    /// psql as a tenant's user from lab host `from` to PostgreSQL at `addr`.
    pub(crate) fn as_tenant_via(
        &self,
        from: &Host,
        addr: &str,
        user: &str,
        password: &str,
        commands: &[&str],
    ) -> Result<String, String> {
        self.as_tenant_in(from, addr, 5432, "postgres", user, password, commands)
    }

    /// psql as a tenant's user from the app host through pgBouncer, to pool `pool`.
    pub(crate) fn pooled(&self, pool: &str, user: &str, password: &str, commands: &[&str]) -> Result<String, String> {
        let addr = self.pgb.host.addr.to_string();
        self.as_tenant_in(&self.app, &addr, self.pgb.port, pool, user, password, commands)
    }

    /// psql as a tenant's user from lab host `from` to database `db` of PostgreSQL at `addr`.
    #[allow(clippy::too_many_arguments, reason = "a psql command line, spelled out at each call")]
    pub(crate) fn as_tenant_in(
        &self,
        from: &Host,
        addr: &str,
        port: u16,
        db: &str,
        user: &str,
        password: &str,
        commands: &[&str],
    ) -> Result<String, String> {
        let (host, port) = (addr.to_string(), port.to_string());
        let mut args =
            vec!["-h", host.as_str(), "-p", port.as_str(), "-U", user, "-d", db, "-tA", "-v", "ON_ERROR_STOP=1"];
        for c in commands {
            args.extend(["-c", c]);
        }
        let out = self.lab.run(
            from,
            &self.pg.bin.join("psql"),
            &args,
            &[("PGPASSWORD", password), ("PGCONNECT_TIMEOUT", "5")],
        );
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// `tenant create --name NAME ARGS… --wait`: the created tenant, asserted active.
    pub(crate) fn create(&self, name: &str, args: &[&str]) -> Value {
        let mut all = vec!["tenant", "create", "--name", name];
        all.extend_from_slice(args);
        all.extend(["--wait", "--wait-timeout", "30s"]);
        let t = self.json(&all);
        assert_eq!(t["status"], "active", "{t}");
        t
    }

    /// `GET path` of the REST API with `key`, from the coordinator's host: (status, JSON body).
    pub(crate) fn get_as(&self, key: &str, path: &str) -> (u16, Value) {
        let ca = self.tmp.path().join("c1").join("ca.pem");
        let url = format!("https://{}:7201{path}", self.c1.addr);
        let auth = format!("Authorization: Bearer {key}");
        let out = self.lab.run(
            &self.c1,
            std::path::Path::new("curl"),
            &["-sS", "--cacert", ca.to_str().expect("utf-8"), "-H", &auth, "-w", "\n%{http_code}", &url],
            &[],
        );
        assert!(out.status.success(), "curl {url}: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').expect("curl's status line");
        (status.trim().parse().expect("status"), serde_json::from_str(body).unwrap_or(Value::Null))
    }

    pub(crate) fn superuser(&self, sql: &str) -> String {
        self.pg.psql(&self.lab, &self.app, sql).expect("superuser query")
    }
}

pub(crate) fn setup() -> Env {
    setup_with(|_| {})
}

/// A lab fleet whose agent runs with `limits` for its tenants' sessions.
pub(crate) fn setup_with(limits: impl FnOnce(&mut berqenas_node_agent::config::SessionLimits)) -> Env {
    setup_configured(|_, _, _, cfg| {
        if let berqenas_node_agent::config::DriverConfig::Postgres { limits: l, .. } = &mut cfg.driver {
            limits(l);
        }
    })
    .0
}

/// A lab fleet whose agent.toml `edit` changes before the agent starts (given the lab, the db
/// host and the temp dir); returns what `edit` returns.
pub(crate) fn setup_configured<T>(
    edit: impl FnOnce(&Lab, &Host, &std::path::Path, &mut berqenas_node_agent::config::AgentConfig) -> T,
) -> (Env, T) {
    setup_full(Options::default(), edit)
}

/// How `setup_full` differs from the standard lab fleet.
#[derive(Default)]
pub(crate) struct Options {
    /// Appended to the server's `postgresql.conf` (e.g. `postgres::LOGIN_LOG`).
    pub(crate) pg_conf: &'static str,
    /// More `serve` arguments for the coordinator, made once its host exists (before it starts).
    #[allow(clippy::type_complexity, reason = "a one-off hook")]
    pub(crate) serve_args: Option<Box<dyn FnOnce(&Host) -> Vec<String>>>,
}

/// `setup_configured` with `options`.
pub(crate) fn setup_full<T>(
    options: Options,
    edit: impl FnOnce(&Lab, &Host, &std::path::Path, &mut berqenas_node_agent::config::AgentConfig) -> T,
) -> (Env, T) {
    let mut lab = Lab::new();
    let c1 = lab.host("c1");
    let pg_host = lab.host("pg");
    let db = lab.host("db");
    let app = lab.host("app");
    let outsider = lab.host("outsider");
    let tmp = tempfile::tempdir().expect("tmp");
    let pg = Postgres::start_with(&lab, &pg_host, tmp.path(), options.pg_conf);
    let pgb = PgBouncer::start(&lab, &db, tmp.path());
    let listen = coordinator::Listen::standard(&c1.addr.to_string());
    let data = tmp.path().join("c1");
    let init_args = coordinator::init_args(&data, &listen, "198.18.0.0/15");
    let init_args: Vec<&str> = init_args.iter().map(String::as_str).collect();
    let key = coordinator::admin_key(&lab.run(&c1, &coordinator_bin(), &init_args, &[]));
    let (data, node) = (data.to_str().expect("utf-8"), listen.node.clone());
    let more = options.serve_args.map(|f| f(&c1)).unwrap_or_default();
    let mut serve = vec!["serve", "--data-dir", data];
    serve.extend(more.iter().map(String::as_str));
    let coordinator = lab.spawn(&c1, "coordinator-c1", &coordinator_bin(), &serve, tmp.path());
    wait_for("the coordinator", Duration::from_secs(20), || {
        coordinator.log_text().contains("node listener serving").then_some(())
    });
    let agent_config = tmp.path().join("db").join("agent.toml");
    let mut env =
        Env { procs: vec![coordinator], pgb, pg, c1, app, outsider, db: db.clone(), agent_config, key, lab, tmp };
    let tok = env.json(&["node", "token", "create", "--roles", "gateway,db"]);
    let gateway_dir = env.tmp.path().join("gateway-records");
    let agent_dir = env.tmp.path().join("db");
    let url = env.pg.url();
    let out = env.lab.run(
        &db,
        &agent_bin(),
        &[
            "join",
            "--coordinator",
            &format!("https://{node}"),
            "--token",
            tok["token"].as_str().expect("token"),
            "--ca-pin",
            tok["ca_fingerprint"].as_str().expect("pin"),
            "--roles",
            "gateway,db",
            "--data-dir",
            agent_dir.to_str().expect("utf-8"),
            "--driver",
            "postgres",
            "--driver-url",
            &url,
            "--driver-path",
            gateway_dir.to_str().expect("utf-8"),
            "--pgbouncer-dir",
            env.pgb.dir.to_str().expect("utf-8"),
            "--pgbouncer-pidfile",
            env.pgb.pidfile.to_str().expect("utf-8"),
            "--resync-interval",
            "2s",
        ],
        &[],
    );
    assert!(out.status.success(), "join: {}", String::from_utf8_lossy(&out.stderr));
    let config = agent_dir.join("agent.toml");
    let mut cfg = berqenas_node_agent::config::AgentConfig::load(&config).expect("agent.toml");
    let joined = cfg.clone();
    let made = edit(&env.lab, &db, env.tmp.path(), &mut cfg);
    if cfg != joined {
        cfg.save(&config).expect("agent.toml");
    }
    let agent = env.lab.spawn(
        &db,
        "agent-db",
        &agent_bin(),
        &["run", "--config", config.to_str().expect("utf-8")],
        env.tmp.path(),
    );
    env.procs.push(agent);
    (env, made)
}

#[test]
fn lab_tenants_get_isolated_postgres_schemas_and_roles() {
    let mut env = setup();
    let acme = env.create("acme", &["--db-quota", "5GB", "--vpn", "disabled"]);
    let globex = env.create("globex", &["--vpn", "disabled"]);
    let (a_user, a_pw) = (acme["db_user"].as_str().expect("user"), acme["db_password"].as_str().expect("password"));
    let (b_user, b_pw) = (globex["db_user"].as_str().expect("user"), globex["db_password"].as_str().expect("password"));

    // DML in its own schema (search_path is pinned).
    let out = env
        .as_tenant(
            a_user,
            a_pw,
            &[
                "INSERT INTO events (device_id, event_type, payload) VALUES ('dev-1', 'boot', '{\"v\":1}')",
                "SELECT count(*) FROM events",
            ],
        )
        .expect("acme works in its schema");
    assert!(out.ends_with('1'), "{out}");
    env.as_tenant(b_user, b_pw, &["INSERT INTO events (event_type) VALUES ('x')"]).expect("globex works");

    // Isolation: nothing of B, nothing in public, no temp tables, no large objects, no DDL, no
    // changing its own limits.
    let refused: &[(&str, &str)] = &[
        ("SELECT * FROM tenant_globex.events", "permission denied for schema tenant_globex"),
        ("INSERT INTO tenant_globex.events (event_type) VALUES ('x')", "permission denied for schema tenant_globex"),
        ("CREATE TABLE public.x (i int)", "permission denied for schema public"),
        ("CREATE TABLE tenant_acme.x (i int)", "permission denied for schema tenant_acme"),
        ("CREATE TEMP TABLE t (i int)", "permission denied to create temporary tables"),
        ("SELECT lo_create(0)", "permission denied for function lo_create"),
        ("ALTER ROLE tenant_acme_user CONNECTION LIMIT 100", "permission denied"),
        ("SET temp_file_limit = '100GB'", "permission denied to set parameter"),
    ];
    for (sql, expected) in refused {
        let err = env.as_tenant(a_user, a_pw, &[sql]).expect_err(sql);
        assert!(err.contains(expected), "{sql}: {err}");
    }
    assert!(env.as_tenant(a_user, "wrong-password", &["SELECT 1"]).is_err());
    // This lab's server writes no jsonlog: the node says its logins are not seen, not nothing.
    wait_for("the db node to report db-logins-unobserved", Duration::from_secs(20), || {
        env.json(&["node", "list"]).to_string().contains("db-logins-unobserved").then_some(())
    });

    // pgBouncer: each tenant has its own pool, authenticated with the same SCRAM verifier (no
    // plaintext anywhere); nobody uses another tenant's pool.
    let pooled = wait_for("acme's pool", Duration::from_secs(20), || {
        env.pooled("tenant_acme", a_user, a_pw, &["SELECT current_user || ' ' || count(*) FROM events"]).ok()
    });
    assert_eq!(pooled, "tenant_acme_user 1");
    assert!(env.pooled("tenant_acme", a_user, "wrong-password", &["SELECT 1"]).is_err());
    assert!(env.pooled("tenant_globex", a_user, a_pw, &["SELECT 1"]).is_err(), "not globex's pool");
    assert!(env.pooled("tenant_acme", b_user, b_pw, &["SELECT 1"]).is_err(), "not acme's pool");
    let users = std::fs::read_to_string(env.pgb.dir.join("berqenas-users.txt")).expect("auth file");
    assert!(users.contains("\"tenant_acme_user\" \"SCRAM-SHA-256$4096:") && !users.contains(a_pw), "{users}");

    // Drift: a grant revoked by hand comes back on the next resync.
    env.superuser("REVOKE USAGE ON SCHEMA tenant_acme FROM tenant_acme_user");
    assert!(env.as_tenant(a_user, a_pw, &["SELECT count(*) FROM events"]).is_err());
    wait_for("the agent to restore the grant", Duration::from_secs(20), || {
        env.as_tenant(a_user, a_pw, &["SELECT count(*) FROM events"]).ok()
    });

    // Offboarding: suspended logins are refused, data stays; resume restores them.
    env.json(&["tenant", "suspend", "acme"]);
    wait_for("suspension to reach PostgreSQL", Duration::from_secs(20), || {
        env.as_tenant(a_user, a_pw, &["SELECT 1"]).err().filter(|e| e.contains("not permitted to log in"))
    });
    assert!(env.as_tenant(b_user, b_pw, &["SELECT 1"]).is_ok(), "the other tenant is untouched");
    wait_for("suspension to reach pgBouncer", Duration::from_secs(20), || {
        env.pooled("tenant_acme", a_user, a_pw, &["SELECT 1"]).err()
    });
    env.json(&["tenant", "resume", "acme"]);
    let count = wait_for("resume to reach PostgreSQL", Duration::from_secs(20), || {
        env.as_tenant(a_user, a_pw, &["SELECT count(*) FROM events"]).ok()
    });
    assert_eq!(count, "1", "data intact");

    // Quota: past 1 MB the tenant can read and delete but not write, whatever it SETs.
    let tiny = env.create("tiny", &["--db-quota", "1MB", "--vpn", "disabled"]);
    let (t_user, t_pw) = (tiny["db_user"].as_str().expect("user"), tiny["db_password"].as_str().expect("password"));
    env.as_tenant(
        t_user,
        t_pw,
        &["INSERT INTO events (payload) SELECT jsonb_build_object('x', \
         (SELECT string_agg(md5(random()::text || g || i), '') FROM generate_series(1, 40) i)) \
         FROM generate_series(1, 3000) g"],
    )
    // The session guard may end it once it is past the quota: the space stays used.
    .or_else(|e| e.contains("terminating connection due to administrator command").then_some(String::new()).ok_or(e))
    .expect("fill the schema");
    let status = wait_for("the tenant to show quota-exceeded", Duration::from_secs(20), || {
        let t = env.json(&["tenant", "get", "tiny"]);
        (t["status"] == "quota-exceeded").then_some(t)
    });
    assert!(status["status_reason"].as_str().is_some_and(|r| r.contains("1MB")), "{status}");
    let err = env
        .as_tenant(
            t_user,
            t_pw,
            &["SET default_transaction_read_only = off", "INSERT INTO events (event_type) VALUES ('more')"],
        )
        .expect_err("writes are blocked");
    assert!(err.contains("permission denied for table events"), "{err}");
    assert!(env.as_tenant(t_user, t_pw, &["SELECT count(*) FROM events"]).is_ok(), "reads still work");
    env.as_tenant(t_user, t_pw, &["TRUNCATE events"]).expect("freeing space is allowed");
    wait_for("writes to come back under the quota", Duration::from_secs(20), || {
        env.as_tenant(t_user, t_pw, &["INSERT INTO events (event_type) VALUES ('ok')"]).ok()
    });
    wait_for("the tenant to be active again", Duration::from_secs(20), || {
        (env.json(&["tenant", "get", "tiny"])["status"] == "active").then_some(())
    });
    let audit = env.json(&["audit", "list", "--limit", "100000"]);
    let transitions: Vec<&str> = audit
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["action"] == "node.report")
        .filter_map(|e| e["details"]["tenant/tiny"].as_str())
        .collect();
    assert!(
        transitions.windows(2).any(|w| w == ["quota-exceeded", "active"]),
        "both quota transitions are audited: {transitions:?}"
    );

    // Connection limit: a second session over the tenant's limit of one is refused.
    let lim = env.create("limco", &["--vpn", "disabled", "--connection-limit", "1"]);
    let (l_user, l_pw) = (lim["db_user"].as_str().expect("user"), lim["db_password"].as_str().expect("password"));
    let uri = format!("postgresql://{l_user}:{l_pw}@{}:5432/postgres", env.pg.host.addr);
    let holder = env.lab.spawn(
        &env.app,
        "psql-holder",
        &env.pg.bin.join("psql"),
        &[&uri, "-c", "SELECT pg_sleep(30)"],
        env.tmp.path(),
    );
    wait_for("the first session", Duration::from_secs(10), || {
        (env.superuser("SELECT count(*) FROM pg_stat_activity WHERE usename = 'tenant_limco_user'") == "1")
            .then_some(())
    });
    let err = env.as_tenant(l_user, l_pw, &["SELECT 1"]).expect_err("over the connection limit");
    assert!(err.contains("too many connections for role"), "{err}");
    drop(holder);

    // DDL: only when enabled; when disabled again the tenant keeps DML on what it made but no
    // longer owns it.
    let ddl = env.create("ddlco", &["--vpn", "disabled", "--ddl", "enabled"]);
    let (d_user, d_pw) = (ddl["db_user"].as_str().expect("user"), ddl["db_password"].as_str().expect("password"));
    env.as_tenant(
        d_user,
        d_pw,
        &["CREATE TABLE notes (id serial PRIMARY KEY, body text)", "INSERT INTO notes (body) VALUES ('a')"],
    )
    .expect("DDL enabled");
    env.json(&["tenant", "update", "ddlco", "--ddl", "disabled"]);
    // While its objects change hands its sessions end and it cannot log in for a moment: wait
    // past that for the answer a user keeps getting.
    let err = wait_for("DDL to be revoked", Duration::from_secs(20), || {
        env.as_tenant(d_user, d_pw, &["CREATE TABLE more (i int)"]).err().filter(|e| e.contains("permission denied"))
    });
    assert!(err.contains("permission denied for schema tenant_ddlco"), "{err}");
    let err = wait_for("its tables to be handed to the owner role", Duration::from_secs(20), || {
        env.as_tenant(d_user, d_pw, &["ALTER TABLE notes ADD COLUMN x int"])
            .err()
            .filter(|e| e.contains("must be owner"))
    });
    assert!(err.contains("must be owner of table notes"), "{err}");
    let rows = env
        .as_tenant(d_user, d_pw, &["INSERT INTO notes (body) VALUES ('b')", "SELECT count(*) FROM notes"])
        .expect("DML on its tables stays");
    assert_eq!(rows.lines().last(), Some("2"), "{rows}");

    // A role dropped by hand is recreated, with its password, by the next pass.
    env.superuser("DROP OWNED BY tenant_globex_user; DROP ROLE tenant_globex_user");
    wait_for("the dropped role to come back", Duration::from_secs(20), || {
        env.as_tenant(b_user, b_pw, &["SELECT count(*) FROM events"]).ok()
    });

    // Delete keeps the data; restore brings the logins back.
    env.json(&["tenant", "delete", "globex"]);
    wait_for("delete to refuse logins", Duration::from_secs(20), || {
        env.as_tenant(b_user, b_pw, &["SELECT 1"]).err().filter(|e| e.contains("not permitted to log in"))
    });
    env.json(&["tenant", "restore", "globex"]);
    let rows = wait_for("restore to allow logins", Duration::from_secs(20), || {
        env.as_tenant(b_user, b_pw, &["SELECT count(*) FROM events"]).ok()
    });
    assert_eq!(rows, "1", "data intact after delete and restore");

    // The agent killed while provisioning: the restarted agent converges.
    let out = env.cli(&["tenant", "create", "--name", "lateco", "--vpn", "disabled", "--output", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let late: Value = serde_json::from_slice(&out.stdout).expect("json");
    std::thread::sleep(Duration::from_millis(30));
    env.procs[1].kill();
    // More arrive while it is down: the restarted agent's first pass has a burst to apply (on
    // parallel connections).
    let burst: Vec<String> = (0..9).map(|i| format!("burst{i}")).collect();
    for name in &burst {
        let out = env.cli(&["tenant", "create", "--name", name, "--vpn", "disabled", "--connection-limit", "2"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let config = env.agent_config.to_str().expect("utf-8").to_string();
    let restarted =
        env.lab.spawn(&env.db, "agent-db-restarted", &agent_bin(), &["run", "--config", &config], env.tmp.path());
    env.procs.push(restarted);
    wait_for("the restarted agent to converge", Duration::from_secs(30), || {
        let list = env.json(&["tenant", "list"]);
        let active = |n: &str| list.as_array().into_iter().flatten().any(|t| t["name"] == n && t["status"] == "active");
        (active("lateco") && burst.iter().all(|n| active(n))).then_some(())
    });
    assert_eq!(
        env.superuser(
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'tenant_burst%_user' \
             AND has_database_privilege(rolname, 'postgres', 'CONNECT') AND rolconnlimit = 2"
        ),
        "9"
    );
    let restarted_log = env.procs.last().map(|p| p.log_text()).unwrap_or_default();
    assert!(restarted_log.contains("applying on parallel connections"), "the burst took the parallel path");
    let (late_user, late_pw) =
        (late["db_user"].as_str().expect("user"), late["db_password"].as_str().expect("password"));
    assert!(env.as_tenant(late_user, late_pw, &["SELECT count(*) FROM events"]).is_ok());

    // Access mode: a vpn-only tenant logs in only from its VPN subnet.
    let vpn = env.create("vpnco", &["--vpn", "enabled", "--access", "vpn-only"]);
    let (v_user, v_pw) = (vpn["db_user"].as_str().expect("user"), vpn["db_password"].as_str().expect("password"));
    let subnet = vpn["network"]["vpn_subnet"].as_str().expect("subnet").to_string();
    let base = subnet.trim_end_matches("0/24");
    let (pg_vpn, app_vpn) = (format!("{base}1"), format!("{base}2"));
    berqenas_tests::lab::ip(&["-n", &env.pg.host.netns, "addr", "add", &format!("{pg_vpn}/24"), "dev", "eth0"]);
    berqenas_tests::lab::ip(&["-n", &env.app.netns, "addr", "add", &format!("{app_vpn}/24"), "dev", "eth0"]);
    berqenas_tests::lab::ip(&["-n", &env.outsider.netns, "route", "add", &subnet, "dev", "eth0"]);
    let inside = wait_for("the vpn-only tenant to log in from its subnet", Duration::from_secs(20), || {
        env.as_tenant_via(&env.app, &pg_vpn, v_user, v_pw, &["SELECT current_user"]).ok()
    });
    assert_eq!(inside, "tenant_vpnco_user");
    let outside =
        env.as_tenant_via(&env.outsider, &pg_vpn, v_user, v_pw, &["SELECT 1"]).expect_err("outside its subnet");
    assert!(outside.contains("rejects connection"), "{outside}");
    let lan = env.as_tenant(v_user, v_pw, &["SELECT 1"]).expect_err("from the lab LAN address");
    assert!(lan.contains("rejects connection"), "{lan}");
    assert!(env.as_tenant(b_user, b_pw, &["SELECT 1"]).is_ok(), "a public tenant still logs in from anywhere");
    // Through pgBouncer the same: PostgreSQL sees pgBouncer's address, so pgBouncer checks it.
    let pgb_vpn = format!("{base}3");
    berqenas_tests::lab::ip(&["-n", &env.pgb.host.netns, "addr", "add", &format!("{pgb_vpn}/24"), "dev", "eth0"]);
    let inside = env
        .as_tenant_in(&env.app, &pgb_vpn, env.pgb.port, "tenant_vpnco", v_user, v_pw, &["SELECT current_user"])
        .expect("pooled from inside its subnet");
    assert_eq!(inside, "tenant_vpnco_user");
    assert!(env.pooled("tenant_vpnco", v_user, v_pw, &["SELECT 1"]).is_err(), "pooled from the LAN");

    // Database isolation: its own database with the same role model inside; nobody else gets
    // in, and it gets into nothing else.
    let own = env.create("ownco", &["--vpn", "disabled", "--isolation", "database"]);
    let (o_user, o_pw) = (own["db_user"].as_str().expect("user"), own["db_password"].as_str().expect("password"));
    let pg = env.pg.host.addr.to_string();
    let out = env
        .as_tenant_in(
            &env.app,
            &pg,
            5432,
            "tenant_ownco",
            o_user,
            o_pw,
            &["INSERT INTO events (event_type) VALUES ('boot')", "SELECT count(*) FROM events"],
        )
        .expect("ownco works in its own database");
    assert!(out.ends_with('1'), "{out}");
    let pooled = env.pooled("tenant_ownco", o_user, o_pw, &["SELECT current_database()"]).expect("ownco's pool");
    assert_eq!(pooled, "tenant_ownco");
    let refused: &[(&str, &str)] = &[
        ("CREATE TABLE public.x (i int)", "permission denied for schema public"),
        ("CREATE TABLE tenant_ownco.x (i int)", "permission denied for schema tenant_ownco"),
        ("CREATE TEMP TABLE t (i int)", "permission denied to create temporary tables"),
        ("SELECT lo_create(0)", "permission denied for function lo_create"),
    ];
    for (sql, expected) in refused {
        let err = env.as_tenant_in(&env.app, &pg, 5432, "tenant_ownco", o_user, o_pw, &[sql]).expect_err(sql);
        assert!(err.contains(expected), "{sql}: {err}");
    }
    let err = env.as_tenant_in(&env.app, &pg, 5432, "tenant_ownco", b_user, b_pw, &["SELECT 1"]).expect_err("globex");
    assert!(err.contains("rejects connection"), "{err}");
    let err =
        env.as_tenant_in(&env.app, &pg, 5432, "postgres", o_user, o_pw, &["SELECT 1"]).expect_err("main database");
    assert!(err.contains("rejects connection"), "{err}");
    assert_eq!(
        env.superuser(
            "SELECT has_database_privilege('tenant_globex_user', 'tenant_ownco', 'CONNECT'), \
             has_database_privilege('tenant_ownco_user', 'postgres', 'CONNECT'), \
             has_database_privilege('public', 'tenant_ownco', 'CONNECT'), \
             has_database_privilege('public', 'tenant_ownco', 'TEMP')"
        ),
        "f|f|f|f",
        "privileges deny it too, not only pg_hba.conf"
    );
    assert_eq!(env.superuser("SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant_ownco'"), "0");
    env.json(&["tenant", "delete", "ownco"]);
    env.json(&["tenant", "purge", "ownco", "--force"]);
    wait_for("purge to drop the tenant's database", Duration::from_secs(20), || {
        let left = env.superuser(
            "SELECT count(*) FROM pg_database WHERE datname = 'tenant_ownco' \
             UNION ALL SELECT count(*) FROM pg_roles WHERE rolname LIKE 'tenant_ownco_%'",
        );
        (left == "0\n0").then_some(())
    });

    // Purge: schema and roles are gone.
    env.json(&["tenant", "delete", "acme"]);
    env.json(&["tenant", "purge", "acme", "--force"]);
    wait_for("purge to reach PostgreSQL", Duration::from_secs(20), || {
        let left = env.superuser(
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant_acme' \
             UNION ALL SELECT count(*) FROM pg_roles WHERE rolname LIKE 'tenant_acme_%'",
        );
        (left == "0\n0").then_some(())
    });
    assert!(env.as_tenant(b_user, b_pw, &["SELECT count(*) FROM events"]).is_ok(), "globex survives acme's purge");
    // Converged hosts get empty plans: tiny's settings were written once, across many resyncs.
    let agent_log = env.procs[1].log_text();
    let writes = agent_log.matches("ALTER ROLE \"tenant_tiny_user\" SET search_path").count();
    assert_eq!(writes, 1, "settings re-applied on every pass:\n{agent_log}");
}
