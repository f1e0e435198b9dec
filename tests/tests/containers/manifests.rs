//! deploy/k8s through `kubernetes-validate` (the Kubernetes OpenAPI schemas, strict: unknown
//! fields are errors; deploy/test.sh installs it in target/k8s-validate-venv), and the properties
//! the manifests promise read from them: coordinators as a StatefulSet with PVCs behind a
//! headless Service with /healthz readiness, one disruption at a time, agents as DaemonSets
//! (gateways on the host network with CAP_NET_ADMIN only), every container on a read-only root
//! with all capabilities dropped, secrets only by reference. deploy/compose.yaml is read the
//! same way (the venv's PyYAML turns YAML into JSON).

use berqenas_tests::workspace_root;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The oldest Kubernetes the manifests need: StatefulSet `ordinals` (1.31) and the
/// `apps.kubernetes.io/pod-index` label (1.32).
const KUBERNETES: &str = "1.32.0";

fn venv_bin(name: &str) -> PathBuf {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"));
    let path = target.join("k8s-validate-venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: deploy/test.sh installs kubernetes-validate into target/k8s-validate-venv",
        path.display()
    );
    path
}

fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(workspace_root().join("deploy/k8s"))
        .expect("deploy/k8s")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "deploy/k8s has too few manifests: {files:?}");
    files
}

fn validate(files: &[PathBuf]) -> std::process::Output {
    Command::new(venv_bin("kubernetes-validate"))
        .args(["--strict", "--kubernetes-version", KUBERNETES])
        .args(files)
        .stdin(Stdio::null())
        .output()
        .expect("run kubernetes-validate")
}

/// Every YAML document in `files`, as JSON.
fn documents(files: &[PathBuf]) -> Vec<Value> {
    let script = "import json, sys, yaml\nprint(json.dumps([d for f in sys.argv[1:] for d in yaml.safe_load_all(open(f)) if d]))";
    let out = Command::new(venv_bin("python3")).arg("-c").arg(script).args(files).output().expect("python3 yaml");
    assert!(out.status.success(), "yaml: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Value>(&out.stdout).expect("json").as_array().expect("list").clone()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in deploy/k8s"))
}

fn pod_spec(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]
}

#[test]
fn kubernetes_manifests_pass_the_schema_validator_and_keep_their_promises() {
    let files = manifests();
    let out = validate(&files);
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "kubernetes-validate refused deploy/k8s:\n{report}");
    let docs = documents(&files);
    assert_eq!(report.matches(" passed for resource ").count(), docs.len(), "every resource validated:\n{report}");

    // The validator is strict: a misspelled field in a copy of the StatefulSet is refused.
    let dir = tempfile::tempdir().expect("tempdir");
    let coordinator = std::fs::read_to_string(workspace_root().join("deploy/k8s/coordinator.yaml")).expect("read");
    assert!(coordinator.contains("readinessProbe:"));
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, coordinator.replace("readinessProbe:", "readinesProbe:")).expect("write");
    assert!(!validate(&[broken]).status.success(), "kubernetes-validate took an unknown field");

    // Coordinators: stable identities, a PVC each, found through a headless Service, ready on /healthz.
    let sts = find(&docs, "StatefulSet", "berqenas-coordinator");
    assert_eq!(sts["spec"]["replicas"], 3);
    assert_eq!(sts["spec"]["serviceName"], "berqenas-coordinator");
    assert_eq!(sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"], "data");
    let headless = find(&docs, "Service", "berqenas-coordinator");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    let container = &pod_spec(sts)["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["scheme"], "HTTPS");
    assert_eq!(pod_spec(sts)["securityContext"]["runAsNonRoot"], true);
    let pdb = find(&docs, "PodDisruptionBudget", "berqenas-coordinator");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);

    // Only the API and agent ports are open to all; Raft only between coordinators.
    let policy = find(&docs, "NetworkPolicy", "berqenas-coordinator");
    let rules = policy["spec"]["ingress"].as_array().expect("ingress rules");
    let open: Vec<&Value> =
        rules.iter().filter(|r| r.get("from").is_none()).flat_map(|r| r["ports"].as_array().unwrap()).collect();
    let open_ports: Vec<i64> = open.iter().map(|p| p["port"].as_i64().unwrap()).collect();
    assert_eq!(open_ports, [7201, 7301], "ports open to everyone");
    let raft = rules.iter().find(|r| r.get("from").is_some()).expect("a rule with a source");
    assert_eq!(raft["ports"][0]["port"], 7101);
    assert_eq!(raft["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"], "berqenas-coordinator");

    // Agents: DaemonSets on their hosts' networks; a gateway's one capability is CAP_NET_ADMIN, a
    // db host's agent has the file capabilities for PostgreSQL's files, mounted at their paths.
    let gateway = find(&docs, "DaemonSet", "berqenas-gateway");
    assert_eq!(pod_spec(gateway)["hostNetwork"], true);
    let db = find(&docs, "DaemonSet", "berqenas-db-agent");
    let mounts: Vec<&str> = pod_spec(db)["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    assert!(mounts.contains(&"/etc/postgresql") && mounts.contains(&"/var/lib/postgresql"), "{mounts:?}");
    let allowed_caps = |workload: &str| -> Vec<&str> {
        match workload {
            "berqenas-gateway" => vec!["NET_ADMIN"],
            "berqenas-db-agent" => vec!["CHOWN", "FOWNER", "DAC_OVERRIDE", "DAC_READ_SEARCH"],
            _ => vec![],
        }
    };
    assert_eq!(
        pod_spec(gateway)["containers"][0]["securityContext"]["capabilities"]["add"],
        serde_json::json!(["NET_ADMIN"])
    );

    // Every container, everywhere: read-only root, all capabilities dropped, no privilege
    // escalation, only the capabilities named above added, root only on a host-network agent;
    // secrets only as references.
    for doc in &docs {
        let spec = &doc["spec"]["template"]["spec"];
        if !spec.is_object() {
            continue;
        }
        let name = doc["metadata"]["name"].as_str().unwrap_or("?");
        for c in spec["containers"].as_array().expect("containers") {
            let sc = &c["securityContext"];
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}: read-only root");
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}: no privilege escalation");
            assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]), "{name}: drop ALL");
            let added: Vec<&str> = sc["capabilities"]["add"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            assert_eq!(added, allowed_caps(name), "{name}: capabilities added");
            let non_root = sc["runAsNonRoot"].as_bool().or(spec["securityContext"]["runAsNonRoot"].as_bool());
            if non_root != Some(true) {
                assert_eq!(spec["hostNetwork"], true, "{name}: root only for an agent on its host's network");
            }
            assert_ne!(sc["privileged"], true, "{name}: privileged");
            for env in c["env"].as_array().into_iter().flatten() {
                let var = env["name"].as_str().unwrap_or("");
                if var.contains("TOKEN") || var.contains("PASSWORD") || var.contains("KEY") {
                    assert!(
                        env.get("value").is_none(),
                        "{name}: {var} is written in the manifest, not a Secret reference"
                    );
                    assert!(env["valueFrom"]["secretKeyRef"].is_object(), "{name}: {var} from a Secret");
                }
            }
            let args = c["args"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "));
            assert!(!args.unwrap_or_default().contains("--token"), "{name}: a token on the command line");
        }
    }
}

#[test]
fn compose_runs_three_coordinators_two_agents_and_postgres_with_secrets_in_files() {
    let compose = workspace_root().join("deploy/compose.yaml");
    let doc = documents(&[compose]).pop().expect("compose document");
    let services = doc["services"].as_object().expect("services");
    for s in ["coordinator-1", "coordinator-2", "coordinator-3", "agent-gateway", "agent-db", "postgres"] {
        assert!(services.contains_key(s), "compose.yaml has no service {s}");
    }
    let command = |s: &str| -> Vec<String> {
        services[s]["command"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
            .unwrap_or_default()
    };
    assert_eq!(command("coordinator-1-init").first().map(String::as_str), Some("init"));
    for s in ["coordinator-2", "coordinator-3"] {
        let c = command(s);
        assert!(c.contains(&"--join".to_string()) && c.contains(&"--ca-pin".to_string()), "{s} joins: {c:?}");
        assert!(!c.iter().any(|a| a == "--token"), "{s}: a token on the command line");
        assert!(services[s]["env_file"].is_array(), "{s}: its token comes from an env file");
    }
    let gateway = &services["agent-gateway"];
    assert_eq!(gateway["network_mode"], "host");
    assert_eq!(gateway["cap_drop"], serde_json::json!(["ALL"]));
    assert_eq!(gateway["cap_add"], serde_json::json!(["NET_ADMIN"]));
    // The db agent sees PostgreSQL's files where PostgreSQL says they are.
    let volumes = |s: &str| -> Vec<String> {
        services[s]["volumes"].as_array().unwrap().iter().filter_map(|v| v.as_str().map(String::from)).collect()
    };
    let pgdata =
        volumes("postgres").into_iter().find(|v| v.ends_with(":/var/lib/postgresql/data")).expect("postgres volume");
    assert!(volumes("agent-db").contains(&pgdata), "agent-db mounts {pgdata}");
    assert_eq!(
        services["agent-db"]["cap_add"],
        serde_json::json!(["CHOWN", "FOWNER", "DAC_OVERRIDE", "DAC_READ_SEARCH"])
    );
    for (name, s) in services {
        if let Some(env) = s["environment"].as_object() {
            for (var, value) in env {
                assert!(
                    !(var.contains("PASSWORD") || var.contains("TOKEN") || var.contains("KEY"))
                        || var.ends_with("_FILE"),
                    "{name}: {var}={value} in compose.yaml; secrets go in files"
                );
            }
        }
        if s["image"].as_str().is_some_and(|i| i.starts_with("localhost/berqenas-")) {
            assert_eq!(s["read_only"], true, "{name}: read-only root");
        }
    }
    assert!(doc["secrets"]["pgpass"]["file"].is_string() && doc["secrets"]["postgres_password"]["file"].is_string());
}
