//! Firewall rules that select devices by label, with real packets on the real fleet (the
//! gateway end-to-end lab, `gateway_e2e::env`): a deny rule for `role=camera` is added while no
//! device carries the label (it must then block nothing, never everything); a camera enrolled
//! afterwards with a token labelled `role=camera` (`berqenas-device enroll` + `up`, wireguard-go)
//! is covered at once — another device of the tenant can no longer reach its service, while an
//! unlabelled device's service on the same port still answers; with the rule removed, the
//! camera answers again.

use crate::gateway_e2e::edge::edge;
use crate::gateway_e2e::env::{text, Env, CONVERGE};
use berqenas_tests::wait_for;

/// Waits until the tenant's nodes report the current revision (a change just made is applied).
fn applied(env: &Env, tenant: &str, what: &str) {
    wait_for(what, CONVERGE, || (env.tenant_status(tenant) == "active").then_some(()));
}

#[test]
fn gateway_e2e_a_deny_rule_by_label_blocks_the_labelled_device_enrolled_later_and_not_an_unlabelled_one() {
    let mut env = Env::new();
    let (d1, d2) = (env.device("d1"), env.device("d2"));
    env.serve(&d1.host.clone(), "serve-d1", &["8080"]);
    let d1_service = format!("{}:8080", d1.address);
    env.connects(&d2.host, &d1_service, None, &d2.address, "d2 reaches d1 before any rule");

    // The rule selects no device yet: it matches nothing.
    let added = env.json(&[
        "firewall",
        "add",
        "--tenant",
        "acme",
        "--verdict",
        "deny",
        "--dst-label",
        "role=camera",
        "--ports",
        "8080",
        "--proto",
        "tcp",
    ]);
    // `firewall add` prints the added rule as a one-row list, like `firewall list`.
    let rule = &added[0];
    assert_eq!(rule["destination_labels"], serde_json::json!({"role": "camera"}), "{rule}");
    let id = rule["id"].as_str().expect("rule id").to_string();
    applied(&env, "acme", "the gateway to apply the rule that selects nothing");
    assert_eq!(env.connect(&d2.host, &d1_service, None), d2.address, "a label matching nothing blocks nothing");
    let listed = env.cli(&["firewall", "list", "--tenant", "acme"]);
    assert!(text(&listed).contains("labels/role=camera"), "{}", text(&listed));

    // A camera enrolls with a labelled token and brings its tunnel up.
    let host = env.lab.host("cam");
    env.sh(&host, "ip", &["addr", "add", "198.51.100.31/24", "dev", "eth0"]);
    env.serve(&host, "serve-cam", &["8080"]);
    let (cam_edge, _link) = edge(&env, &host, "cam");
    cam_edge.enroll("cam1", &["--labels", "role=camera"]);
    let cam = env.json(&["device", "show", "cam1", "--tenant", "acme"]);
    assert_eq!(cam["labels"], serde_json::json!({"role": "camera"}), "{cam}");
    let cam_address = cam["address"].as_str().expect("address").to_string();
    wait_for("up with the gateway's key", CONVERGE, || cam_edge.run(&["up"]).status.success().then_some(()));
    let gateway = env.gateway_address("acme");
    wait_for("a ping of the gateway through the camera's tunnel", CONVERGE, || {
        env.pings(&host, &gateway).then_some(())
    });

    // Covered without touching the rule: the camera's service is cut off from d2, d1's is not.
    let cam_service = format!("{cam_address}:8080");
    env.refused(&d2.host, &cam_service, None, "the labelled camera behind the deny rule");
    assert_eq!(env.connect(&d2.host, &d1_service, None), d2.address, "the unlabelled device on the same port");
    assert!(env.pings(&d2.host, &cam_address), "the rule names tcp/8080 only");

    // Without the rule, the camera answers: the rule was what blocked it.
    env.json(&["firewall", "rm", &id, "--tenant", "acme"]);
    env.connects(&d2.host, &cam_service, None, &d2.address, "the camera once the rule is removed");
    let out = cam_edge.run(&["down"]);
    assert!(out.status.success(), "down: {}", text(&out));
}
