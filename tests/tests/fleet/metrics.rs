//! `/metrics` of a real coordinator and a real agent (issue 12): both parse as OpenMetrics text
//! (a strict reader here, and promtool's parser), carry the values a user would read off them,
//! keep tenant names out of the API's labels, refuse scrapes without an admin or auditor key,
//! and export every `berqenas_*` metric that `deploy/prometheus/rules.yml` and the Grafana
//! dashboards use.

use crate::harness::Fleet;
use berqenas_tests::{free_port, wait_for, workspace_root};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Per-tenant samples only the PostgreSQL (with backups), gateway and realtime drivers measure; this test's
/// agent runs the dir driver, and a family with no sample is not written at all (the agent's
/// unit test `per_tenant_samples_name_the_tenant_and_nothing_else` covers their encoding).
const MEASURED_BY_OTHER_DRIVERS: &[&str] = &[
    "berqenas_backup_last_success_timestamp_seconds",
    "berqenas_tenant_db_bytes",
    "berqenas_tenant_db_sessions",
    "berqenas_tenant_events_total",
    "berqenas_tenant_quota_exceeded",
    "berqenas_tenant_vpn_rx_bytes_total",
    "berqenas_tenant_vpn_sessions",
    "berqenas_tenant_vpn_tx_bytes_total",
];

struct Reply {
    status: u16,
    content_type: String,
    body: String,
}

/// `curl` as Prometheus would scrape (a bearer key, or none).
fn scrape(url: &str, key: Option<&str>) -> Reply {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "-w", "\n%{http_code} %{content_type}", url]);
    let header;
    if let Some(k) = key {
        header = format!("Authorization: Bearer {k}");
        cmd.args(["-H", &header]);
    }
    let out = cmd.output().expect("curl is installed (deploy/test.sh)");
    assert!(out.status.success(), "curl {url}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let (body, last) = text.rsplit_once('\n').expect("curl's trailer");
    let (status, content_type) = last.split_once(' ').expect("status and type");
    Reply { status: status.parse().expect("status"), content_type: content_type.into(), body: body.into() }
}

/// One sample line: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// An OpenMetrics exposition, read strictly: every line is `# HELP`, `# TYPE`, `# UNIT`, a
/// sample of the family declared last (its name the family's or a suffix its type allows), and
/// `# EOF` ends it. Returns the families (name → type) and the samples.
fn parse(text: &str) -> (BTreeMap<String, String>, Vec<Sample>) {
    let mut families = BTreeMap::new();
    let mut samples = Vec::new();
    let mut current: Option<(String, String)> = None;
    let mut ended = false;
    for line in text.lines() {
        assert!(!ended, "nothing may follow # EOF: {line:?}");
        if line == "# EOF" {
            ended = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("TYPE line {line:?}"));
            assert!(
                ["counter", "gauge", "histogram", "summary", "info", "stateset", "unknown", "gaugehistogram"]
                    .contains(&kind),
                "type {kind:?}"
            );
            assert!(families.insert(name.to_string(), kind.to_string()).is_none(), "family {name} declared twice");
            current = Some((name.into(), kind.into()));
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with("# UNIT ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment line {line:?}");
        let (family, kind) = current.as_ref().unwrap_or_else(|| panic!("sample before any TYPE: {line:?}"));
        let name_end = line.find(['{', ' ']).unwrap_or_else(|| panic!("sample line {line:?}"));
        let name = &line[..name_end];
        let suffix = name.strip_prefix(family.as_str()).unwrap_or_else(|| panic!("{name} outside family {family}"));
        let allowed: &[&str] = match kind.as_str() {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_sum", "_count", "_created"],
            _ => &[""],
        };
        assert!(allowed.contains(&suffix), "{name} is not a sample name of {kind} {family}");
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(inner) = rest.strip_prefix('{') {
            let close = inner.find("} ").unwrap_or_else(|| panic!("labels of {line:?}"));
            for pair in inner[..close].split("\",").filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("label {pair:?} in {line:?}"));
                assert!(k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "label name {k:?}");
                labels.insert(k.to_string(), v.trim_end_matches('"').to_string());
            }
            rest = &inner[close + 1..];
        }
        let value = rest.trim().split(' ').next().unwrap_or_default();
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line:?}"));
        samples.push(Sample { name: name.into(), labels, value });
    }
    assert!(ended, "an exposition ends with # EOF");
    (families, samples)
}

/// promtool's own parser must read it (its linter's complaints about OpenMetrics counter names,
/// `x_total` under `# TYPE x counter`, are a difference of the two formats, not an error).
fn promtool_parses(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package, installed by deploy/test.sh)");
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("promtool");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.code() == Some(0) || out.status.code() == Some(3), "promtool failed: {report}");
    for line in report.lines().filter(|l| !l.trim().is_empty()) {
        assert!(line.contains("_total no help text"), "promtool: {line}");
    }
}

/// Every `berqenas_*` name in the rules and dashboards.
fn names_used() -> BTreeSet<String> {
    let dir = workspace_root().join("deploy/prometheus");
    let mut files = vec![dir.join("rules.yml")];
    for e in std::fs::read_dir(dir.join("dashboards")).expect("dashboards") {
        files.push(e.expect("entry").path());
    }
    let mut names = BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read");
        let mut rest = text.as_str();
        while let Some(at) = rest.find("berqenas_") {
            let tail = &rest[at..];
            let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
            if end > "berqenas_".len() {
                names.insert(tail[..end].to_string());
            }
            rest = &tail[end..];
        }
    }
    names
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v)))
        .map(|s| s.value)
}

#[test]
fn metrics_of_a_real_coordinator_and_agent_parse_and_cover_the_rules_and_dashboards() {
    let mut f = Fleet::new(1);
    let db = f.add_agent("db", "db", "");
    // The agent again, on a metrics port of its own (the default 9464 may be another test's).
    let metrics_port = free_port();
    f.agents[db].proc.take().expect("agent runs").stop(Duration::from_secs(10));
    f.start_agent_with(db, &["--metrics-listen", &format!("127.0.0.1:{metrics_port}")]);
    f.json(0, &["tenant", "create", "--name", "acme", "--vpn", "disabled", "--wait", "--wait-timeout", "60s"]);
    f.json(0, &["tenant", "get", "acme"]);
    let coordinator = format!("{}/metrics", f.coords[0].endpoint());
    let agent = format!("http://127.0.0.1:{metrics_port}/metrics");

    // Scrapes need an admin or auditor key; a customer key is refused.
    assert_eq!(scrape(&coordinator, None).status, 401);
    let customer = f.json(0, &["apikey", "create", "--role", "customer", "--tenant", "acme"]);
    assert_eq!(scrape(&coordinator, customer["token"].as_str()).status, 403);
    let auditor = f.json(0, &["apikey", "create", "--role", "auditor"]);
    let auditor = auditor["token"].as_str().expect("token").to_string();

    // The tenant turns active once the agent's report is applied.
    let c = wait_for("the coordinator's metrics with the active tenant", Duration::from_secs(30), || {
        let c = scrape(&coordinator, Some(&auditor));
        (c.status != 200 || c.body.contains("berqenas_tenants{status=\"active\"} 1")).then_some(c)
    });
    assert_eq!(c.status, 200, "{}", c.body);
    assert!(c.content_type.starts_with("application/openmetrics-text"), "{}", c.content_type);
    let (c_families, c_samples) = parse(&c.body);
    promtool_parses(&c.body);
    assert_eq!(value(&c_samples, "berqenas_raft_is_leader", &[]), Some(1.0));
    assert_eq!(value(&c_samples, "berqenas_raft_leader_id", &[]), Some(1.0));
    assert_eq!(value(&c_samples, "berqenas_tenants", &[("status", "active")]), Some(1.0));
    assert_eq!(value(&c_samples, "berqenas_nodes", &[("state", "active")]), Some(1.0));
    let applied = value(&c_samples, "berqenas_raft_applied_index", &[]).expect("applied index");
    assert!(applied > 0.0 && value(&c_samples, "berqenas_raft_commit_index", &[]) >= Some(applied));
    // The anonymous scrape above was refused and counted by what it attempted.
    assert!(value(&c_samples, "berqenas_refused_total", &[("action", "metrics.read")]) >= Some(1.0), "{}", c.body);
    // Requests are labelled by route template: the tenant's name never becomes a label value.
    let get_tenant = [("route", "/api/v1/tenant/{name}"), ("method", "GET"), ("status", "200")];
    assert!(value(&c_samples, "berqenas_api_request_duration_seconds_count", &get_tenant) >= Some(1.0), "{}", c.body);
    assert!(
        c_samples.iter().all(|s| s.labels.values().all(|v| !v.contains("acme"))),
        "no tenant name in the coordinator's labels: {}",
        c.body
    );

    // The agent: loopback, no key; its pass applied what it was sent.
    let a = wait_for("the agent's metrics with the tenant", Duration::from_secs(30), || {
        let a = scrape(&agent, None);
        (a.status == 200 && a.body.contains("berqenas_tenant_ready{tenant=\"acme\"} 1")).then_some(a)
    });
    assert!(a.content_type.starts_with("application/openmetrics-text"), "{}", a.content_type);
    let (a_families, a_samples) = parse(&a.body);
    promtool_parses(&a.body);
    assert_eq!(value(&a_samples, "berqenas_agent_revision_lag", &[]), Some(0.0), "{}", a.body);
    assert_eq!(value(&a_samples, "berqenas_agent_coordinator_connected", &[]), Some(1.0), "{}", a.body);
    assert!(value(&a_samples, "berqenas_agent_applied_revision", &[]) > Some(0.0), "{}", a.body);
    assert!(
        value(&a_samples, "berqenas_agent_reconcile_duration_seconds_count", &[("driver", "dir")]) >= Some(1.0),
        "{}",
        a.body
    );
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64();
    let expiry = value(&a_samples, "berqenas_certificate_expiry_timestamp_seconds", &[("certificate", "node")]);
    assert!(expiry.is_some_and(|t| t > now && t < now + 2.0 * 86400.0), "a 24 h node certificate: {}", a.body);
    assert!(value(&a_samples, "berqenas_node_memory_total_bytes", &[]) > Some(0.0), "{}", a.body);
    assert!(value(&a_samples, "berqenas_node_disk_total_bytes", &[]) > Some(0.0), "{}", a.body);

    // Every name the rules and dashboards use is exported by one of them.
    // A declared family counts with its sample names (a per-tenant family of a driver this node
    // does not run, say VPN bytes on a database node, is declared with no samples).
    let mut exported: BTreeSet<String> = BTreeSet::new();
    for (family, kind) in c_families.iter().chain(a_families.iter()) {
        let suffixes: &[&str] = match kind.as_str() {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        exported.extend(suffixes.iter().map(|s| format!("{family}{s}")));
    }
    exported.extend(c_samples.iter().chain(a_samples.iter()).map(|s| s.name.clone()));
    let used = names_used();
    assert!(used.len() > 30, "the rules and dashboards use the metrics: {used:?}");
    let excused = |n: &str| MEASURED_BY_OTHER_DRIVERS.contains(&n);
    let missing: Vec<&String> = used.iter().filter(|n| !exported.contains(*n) && !excused(n)).collect();
    assert!(missing.is_empty(), "used by deploy/prometheus but not exported: {missing:?}");
}
