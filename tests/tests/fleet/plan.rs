//! `berqenas-node-agent plan` end to end: on a converged db node it says so and exits 0; after a
//! grant revoked by hand it shows the GRANT the next pass would run, exits 2, and changes nothing.

use crate::db::setup;
use crate::harness::agent_bin;

fn plan(env: &crate::db::Env) -> (i32, String, String) {
    let config = env.agent_config.to_str().expect("utf-8");
    let out = env.lab.run(&env.db, &agent_bin(), &["plan", "--config", config], &[]);
    let code = out.status.code().unwrap_or(-1);
    (code, String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn has_usage(env: &crate::db::Env) -> String {
    env.superuser("SELECT has_schema_privilege('tenant_acme_user', 'tenant_acme', 'USAGE')")
}

#[test]
fn plan_shows_a_revoked_grant_and_changes_nothing() {
    let mut env = setup();
    let acme = env.create("acme", &["--vpn", "disabled"]);
    let password = acme["db_password"].as_str().expect("password").to_string();
    // The running agent would repair the drift below on its next pass: stop it (SIGKILL on drop),
    // so what the host looks like afterwards is what `plan` left.
    let agent = env.procs.pop().expect("the agent is the last process started");
    drop(agent);

    let (code, stdout, stderr) = plan(&env);
    assert_eq!(code, 0, "converged host: exit 0\n{stdout}\n{stderr}");
    assert!(stdout.contains("converged: the next pass changes nothing"), "{stdout}");

    env.superuser("REVOKE USAGE ON SCHEMA tenant_acme FROM tenant_acme_user");
    assert_eq!(has_usage(&env), "f");
    let (code, stdout, stderr) = plan(&env);
    assert_eq!(code, 2, "drift: exit 2\n{stdout}\n{stderr}");
    assert!(stdout.contains("[acme] GRANT USAGE ON SCHEMA \"tenant_acme\" TO \"tenant_acme_user\""), "{stdout}");
    assert!(stdout.contains("nothing was changed"), "{stdout}");
    assert!(!stdout.contains("SCRAM-SHA-256$") && !stdout.contains(&password), "no secret printed: {stdout}");
    assert_eq!(has_usage(&env), "f", "plan changed nothing");
    // Asked twice, the same answer: still nothing applied.
    assert_eq!(plan(&env).0, 2);
    assert_eq!(has_usage(&env), "f");
}

#[test]
fn plan_redacts_the_password_it_would_set() {
    let mut env = setup();
    env.create("acme", &["--vpn", "disabled"]);
    let agent = env.procs.pop().expect("the agent is the last process started");
    drop(agent);
    // A password changed by hand: the next pass sets the coordinator's verifier again.
    env.superuser("ALTER ROLE tenant_acme_user PASSWORD 'changed-by-hand'");
    let (code, stdout, stderr) = plan(&env);
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(stdout.contains("[acme] ALTER ROLE \"tenant_acme_user\" PASSWORD '…'"), "{stdout}");
    assert!(!stdout.contains("SCRAM-SHA-256$"), "the verifier is not printed: {stdout}");
}
