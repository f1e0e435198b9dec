//! Printing API responses as aligned tables or JSON.

use clap::ValueEnum;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

pub fn print_json(v: &Value) {
    say(format_args!("{}", serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())));
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{:<w$}", c, w = widths[i])).collect();
        say(format_args!("{}", parts.join("  ").trim_end()));
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}

fn placement(t: &Value) -> String {
    format!("db={} gw={}", s(&t["placement"]["db_node"]), s(&t["placement"]["gateway_node"]))
}

pub fn tenant(out: Output, t: &Value) {
    if out == Output::Json {
        return print_json(t);
    }
    let rows = [
        ("name", s(&t["name"])),
        ("status", s(&t["status"])),
        ("reason", s(&t["status_reason"])),
        ("tier", s(&t["tier"])),
        ("db", format!("{} ({} isolation)", s(&t["db_type"]), s(&t["isolation"]))),
        ("db quota", s(&t["db_quota"])),
        ("connection limit", s(&t["connection_limit"])),
        ("events/min", s(&t["events_per_min"])),
        ("vpn", s(&t["vpn_enabled"])),
        ("public api", s(&t["public_api"])),
        ("access", s(&t["access_mode"])),
        ("ddl", s(&t["ddl_enabled"])),
        ("vpn subnet", s(&t["network"]["vpn_subnet"])),
        ("interface", format!("{} port {}", s(&t["network"]["interface"]), s(&t["network"]["listen_port"]))),
        ("placement", placement(t)),
        ("revision", s(&t["revision"])),
    ];
    for (k, v) in rows {
        say(format_args!("{k:<17} {v}"));
    }
    // What each node last reported: readiness and the usage samples of the db role.
    for (id, n) in t["node_status"].as_object().into_iter().flatten() {
        let state = if n["ready"].as_bool() == Some(true) { "ready" } else { "not ready" };
        let mut line =
            format!("{state}, db {}, {} sessions", bytes(n["db_bytes"].as_u64().unwrap_or(0)), s(&n["connections"]));
        if n["quota_exceeded"].as_bool() == Some(true) {
            line.push_str(", over quota");
        }
        say(format_args!("{:<17} {line}", format!("node {id}")));
    }
}

/// `1234567` → `1.2 MB` (powers of 1000, as quotas are written).
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

pub fn tenants(out: Output, v: &Value) {
    if out == Output::Json {
        return print_json(v);
    }
    let rows = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            vec![
                s(&t["name"]),
                s(&t["status"]),
                s(&t["tier"]),
                s(&t["db_quota"]),
                s(&t["network"]["vpn_subnet"]),
                placement(t),
            ]
        })
        .collect();
    table(&["NAME", "STATUS", "TIER", "QUOTA", "SUBNET", "PLACEMENT"], rows);
}

pub fn api_keys(out: Output, v: &Value) {
    if out == Output::Json {
        return print_json(v);
    }
    let rows = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|k| {
            let state = if k["revoked_at_ms"].is_null() { "active" } else { "revoked" };
            vec![s(&k["id"]), s(&k["role"]), s(&k["tenant"]), state.into(), s(&k["description"])]
        })
        .collect();
    table(&["ID", "ROLE", "TENANT", "STATE", "DESCRIPTION"], rows);
}

/// Coordinator join tokens: ids and times, never a secret.
pub fn coordinator_tokens(out: Output, v: &Value) {
    if out == Output::Json {
        return print_json(v);
    }
    let time = |t: &Value| t.as_u64().map(crate::time::rfc3339).unwrap_or_else(|| "-".into());
    let rows = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            vec![
                s(&t["id"]),
                s(&t["coordinator_id"]),
                s(&t["status"]),
                time(&t["created_at_ms"]),
                time(&t["expires_at_ms"]),
                time(&t["used_at_ms"]),
                time(&t["revoked_at_ms"]),
            ]
        })
        .collect();
    table(&["ID", "COORDINATOR", "STATUS", "CREATED", "EXPIRES", "USED", "REVOKED"], rows);
}

pub fn audit(out: Output, v: &Value) {
    if out == Output::Json {
        return print_json(v);
    }
    let rows = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let time = e["time_ms"].as_u64().map(crate::time::rfc3339).unwrap_or_default();
            vec![
                s(&e["seq"]),
                time,
                s(&e["actor"]),
                s(&e["action"]),
                s(&e["target"]),
                s(&e["outcome"]),
                s(&e["details"]["reason"]),
            ]
        })
        .collect();
    table(&["SEQ", "TIME", "ACTOR", "ACTION", "TARGET", "OUTCOME", "REASON"], rows);
}

pub fn nodes(out: Output, v: &Value) {
    if out == Output::Json {
        return print_json(v);
    }
    let rows = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            let roles: Vec<String> = n["roles"].as_array().into_iter().flatten().map(s).collect();
            let labels: Vec<String> =
                n["labels"].as_object().into_iter().flatten().map(|(k, v)| format!("{k}={}", s(v))).collect();
            let state = if n["revoked"] == true {
                "revoked"
            } else if n["cordoned"] == true {
                "cordoned"
            } else {
                "ready"
            };
            let c = &n["capacity"];
            let capacity = format!(
                "{} cpu, {} MB mem, {} GB disk",
                s(&c["cpus"]),
                c["memory_bytes"].as_u64().unwrap_or(0) / 1_000_000,
                c["disk_bytes"].as_u64().unwrap_or(0) / 1_000_000_000
            );
            let seen = n["last_seen_ms"].as_u64().filter(|t| *t > 0).map(crate::time::rfc3339).unwrap_or("-".into());
            vec![
                s(&n["id"]),
                roles.join(","),
                s(&n["address"]),
                state.into(),
                labels.join(","),
                capacity,
                seen,
                s(&n["applied_revision"]),
            ]
        })
        .collect();
    table(&["ID", "ROLES", "ADDRESS", "STATE", "LABELS", "CAPACITY", "LAST SEEN", "REVISION"], rows);
}

pub fn cluster(out: Output, v: &Value) {
    if out == Output::Json {
        return print_json(v);
    }
    say(format_args!("answered by   {} ({})", s(&v["node_id"]), s(&v["state"])));
    say(format_args!("leader        {}", s(&v["leader_id"])));
    say(format_args!("term          {}", s(&v["term"])));
    say(format_args!("applied       {}", s(&v["last_applied"])));
    say(format_args!("cluster id    {}", s(&v["cluster_id"])));
    say(format_args!("vpn pool      {}", s(&v["vpn_pool"])));
    say(format_args!("tenants       {}", s(&v["tenants"])));
    let rows = v["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let role = if m["voter"].as_bool() == Some(true) { "voter" } else { "learner" };
            vec![s(&m["id"]), role.into(), s(&m["raft_addr"]), s(&m["api_addr"])]
        })
        .collect();
    table(&["ID", "ROLE", "RAFT", "API"], rows);
}

/// Writes one line to stdout; a closed pipe (`| head`) ends output quietly instead of panicking.
pub fn say(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{args}");
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_are_shown_in_quota_units() {
        assert_eq!(super::bytes(999), "999 B");
        assert_eq!(super::bytes(1_234_567), "1.2 MB");
        assert_eq!(super::bytes(5_000_000_000), "5.0 GB");
    }
}
