//! Printing API answers (the `api::dto` views) as aligned tables or JSON.

use crate::api::dto::{
    ApiKeyView, AuditEntryView, ClusterStatus, CoordinatorToken, DeviceTokenView, DeviceView, ExposureView, NodeView,
    RuleView, TenantView,
};
use clap::ValueEnum;
use serde::Serialize;
use std::fmt::Display;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
    /// Comma-separated rows with a header line (`usage show`); other commands print a table.
    Csv,
}

pub fn print_json<T: Serialize + ?Sized>(v: &T) {
    match serde_json::to_string_pretty(v) {
        Ok(text) => say(format_args!("{text}")),
        Err(e) => eprintln!("cannot print the answer as JSON: {e}"),
    }
}

/// An enum as the API names it (`vpn-only`, `customer`, …).
pub fn wire_name<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".into(),
    }
}

/// An optional cell: `-` when absent.
fn opt<T: Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn time(ms: Option<u64>) -> String {
    ms.map_or_else(|| "-".into(), crate::time::rfc3339)
}

pub(super) fn table(headers: &[&str], rows: Vec<Vec<String>>) {
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

fn placement(t: &TenantView) -> String {
    format!("db={} gw={}", opt(t.placement.db_node), opt(t.placement.gateway_node))
}

pub fn tenant(out: Output, t: &TenantView) {
    if out == Output::Json {
        return print_json(t);
    }
    let rows = [
        ("name", t.name.to_string()),
        ("status", t.status.as_str().to_string()),
        ("reason", opt(t.status_reason.as_deref())),
        ("tier", wire_name(&t.tier)),
        ("db", format!("{} ({} isolation)", wire_name(&t.db_type), wire_name(&t.isolation))),
        ("db quota", t.db_quota.clone()),
        ("connection limit", t.connection_limit.to_string()),
        ("events/min", t.events_per_min.to_string()),
        ("vpn", t.vpn_enabled.to_string()),
        ("public api", t.public_api.to_string()),
        ("access", t.access_mode.as_str().to_string()),
        ("ddl", t.ddl_enabled.to_string()),
        ("vpn subnet", t.network.vpn_subnet.clone()),
        ("interface", format!("{} port {}", t.network.interface, t.network.listen_port)),
        ("placement", placement(t)),
        ("revision", t.revision.to_string()),
        (
            "backups",
            format!(
                "every {}, keep {} for {} days",
                humantime::format_duration(std::time::Duration::from_secs(u64::from(t.backup_policy.interval_s))),
                t.backup_policy.keep_count,
                t.backup_policy.keep_days
            ),
        ),
    ];
    for (k, v) in rows {
        say(format_args!("{k:<17} {v}"));
    }
    // What each node last reported: readiness and the usage samples of the db role.
    for (id, n) in &t.node_status {
        let state = if n.ready { "ready" } else { "not ready" };
        let mut line = format!("{state}, db {}, {} sessions", bytes(n.db_bytes), n.connections);
        if n.quota_exceeded {
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

pub fn tenants(out: Output, v: &[TenantView]) {
    if out == Output::Json {
        return print_json(v);
    }
    let rows = v
        .iter()
        .map(|t| {
            let status = t.status.as_str().to_string();
            vec![
                t.name.to_string(),
                status,
                wire_name(&t.tier),
                t.db_quota.clone(),
                t.network.vpn_subnet.clone(),
                placement(t),
            ]
        })
        .collect();
    table(&["NAME", "STATUS", "TIER", "QUOTA", "SUBNET", "PLACEMENT"], rows);
}

pub fn api_keys(out: Output, v: &[ApiKeyView]) {
    if out == Output::Json {
        return print_json(v);
    }
    let rows = v
        .iter()
        .map(|k| {
            let state = if k.revoked_at_ms.is_none() { "active" } else { "revoked" };
            vec![k.id.clone(), wire_name(&k.role), opt(k.tenant.as_ref()), state.into(), k.description.clone()]
        })
        .collect();
    table(&["ID", "ROLE", "TENANT", "STATE", "DESCRIPTION"], rows);
}

/// Coordinator join tokens: ids and times, never a secret.
pub fn coordinator_tokens(out: Output, v: &[CoordinatorToken]) {
    if out == Output::Json {
        return print_json(v);
    }
    let rows = v
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.coordinator_id.to_string(),
                wire_name(&t.status),
                time(Some(t.created_at_ms)),
                time(Some(t.expires_at_ms)),
                time(t.used_at_ms),
                time(t.revoked_at_ms),
            ]
        })
        .collect();
    table(&["ID", "COORDINATOR", "STATUS", "CREATED", "EXPIRES", "USED", "REVOKED"], rows);
}

pub fn audit(out: Output, v: &[AuditEntryView]) {
    if out == Output::Json {
        return print_json(v);
    }
    let rows = v
        .iter()
        .map(|e| {
            vec![
                e.seq.to_string(),
                crate::time::rfc3339(e.time_ms),
                e.actor.clone(),
                e.action.clone(),
                e.target.clone(),
                wire_name(&e.outcome),
                opt(e.details.get("reason")),
            ]
        })
        .collect();
    table(&["SEQ", "TIME", "ACTOR", "ACTION", "TARGET", "OUTCOME", "REASON"], rows);
}

pub fn nodes(out: Output, v: &[NodeView]) {
    if out == Output::Json {
        return print_json(v);
    }
    let rows = v
        .iter()
        .map(|n| {
            let roles: Vec<String> = n.roles.iter().map(wire_name).collect();
            let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let state = match (n.revoked, n.cordoned) {
                (true, _) => "revoked",
                (false, true) => "cordoned",
                (false, false) => "ready",
            };
            let c = &n.capacity;
            let capacity = format!(
                "{} cpu, {} MB mem, {} GB disk",
                c.cpus,
                c.memory_bytes / 1_000_000,
                c.disk_bytes / 1_000_000_000
            );
            vec![
                n.id.to_string(),
                roles.join(","),
                n.address.clone(),
                state.into(),
                labels.join(","),
                capacity,
                public(n),
                opt(n.realtime_address.as_deref()),
                opt(n.gateway.wireguard_backend.as_ref().map(wire_name)),
                conditions(n),
                time(Some(n.last_seen_ms).filter(|t| *t > 0)),
                n.applied_revision.to_string(),
            ]
        })
        .collect();
    let headers = [
        "ID",
        "ROLES",
        "ADDRESS",
        "STATE",
        "LABELS",
        "CAPACITY",
        "PUBLIC",
        "REALTIME",
        "WIREGUARD",
        "CONDITIONS",
        "LAST SEEN",
        "REVISION",
    ];
    table(&headers, rows);
}

/// A gateway's public address and port range, `-` when it has none.
fn public(n: &NodeView) -> String {
    opt(n
        .gateway
        .settings
        .as_ref()
        .map(|g| format!("{} ports {}-{}", g.public_address, g.public_port_first, g.public_port_last)))
}

fn conditions(n: &NodeView) -> String {
    let kinds: Vec<&str> = n.gateway.conditions.iter().map(|c| c.kind.as_str()).collect();
    if kinds.is_empty() {
        "-".into()
    } else {
        kinds.join(",")
    }
}

/// One node, every field on its own line (conditions with their remedies).
pub fn node(out: Output, n: &NodeView) {
    if out == Output::Json {
        return print_json(n);
    }
    let roles: Vec<String> = n.roles.iter().map(wire_name).collect();
    let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let rows = [
        ("id", n.id.to_string()),
        ("roles", roles.join(",")),
        ("address", n.address.clone()),
        ("labels", labels.join(",")),
        ("cordoned", n.cordoned.to_string()),
        ("revoked", n.revoked.to_string()),
        ("public", public(n)),
        ("wireguard", opt(n.gateway.wireguard_backend.as_ref().map(wire_name))),
        ("last seen", time(Some(n.last_seen_ms).filter(|t| *t > 0))),
        ("revision", n.applied_revision.to_string()),
        ("realtime", opt(n.realtime_address.as_deref())),
    ];
    for (k, v) in rows {
        say(format_args!("{k:<12} {v}"));
    }
    for c in &n.gateway.conditions {
        say(format_args!("{:<12} {}: {}", "condition", c.kind, c.message));
    }
}

pub fn cluster(out: Output, v: &ClusterStatus) {
    if out == Output::Json {
        return print_json(v);
    }
    say(format_args!("answered by   {} ({})", v.node_id, v.state));
    say(format_args!("leader        {}", opt(v.leader_id)));
    say(format_args!("term          {}", v.term));
    say(format_args!("applied       {}", opt(v.last_applied)));
    say(format_args!("cluster id    {}", opt(v.cluster_id.as_deref())));
    say(format_args!("vpn pool      {}", opt(v.vpn_pool.as_deref())));
    say(format_args!("tenants       {}", v.tenants));
    let rows = v
        .members
        .iter()
        .map(|m| {
            let role = if m.voter { "voter" } else { "learner" };
            vec![m.id.to_string(), role.into(), m.raft_addr.clone(), m.api_addr.clone()]
        })
        .collect();
    table(&["ID", "ROLE", "RAFT", "API"], rows);
}

fn handshake(d: &DeviceView) -> String {
    match &d.peer {
        Some(p) => format!("{} (rx {}, tx {})", time(p.last_handshake_ms), bytes(p.rx_bytes), bytes(p.tx_bytes)),
        None => "-".into(),
    }
}

pub fn device(out: Output, d: &DeviceView) {
    if out == Output::Json {
        return print_json(d);
    }
    for (k, v) in [
        ("id", d.id.clone()),
        ("tenant", d.tenant.clone()),
        ("name", d.name.clone()),
        ("address", d.address.clone()),
        ("public key", d.public_key.clone()),
        ("state", wire_name(&d.state)),
        ("labels", labels(&d.labels)),
        ("token", opt(d.token_id.as_deref())),
        ("enabled", d.enabled.to_string()),
        ("handshake", handshake(d)),
        ("last seen", time(d.last_seen_ms)),
        ("ephemeral", opt(d.ephemeral_ms.map(|ms| humantime::format_duration(std::time::Duration::from_millis(ms))))),
        (
            "os",
            d.fingerprint.as_ref().map_or_else(
                || "-".to_string(),
                |f| format!("{} {} {} (client {})", f.os_name, f.os_version, f.arch, f.client_version),
            ),
        ),
        ("endpoint", opt(d.peer.as_ref().and_then(|p| p.endpoint.as_deref()))),
        (
            "connected",
            d.last_connect.as_ref().map_or_else(
                || "-".to_string(),
                |c| format!("{} from {} (gateway node {})", time(Some(c.at_ms)), opt(c.endpoint.as_deref()), c.node_id),
            ),
        ),
    ] {
        say(format_args!("{k:<11} {v}"));
    }
}

pub fn devices(out: Output, v: &[DeviceView]) {
    if out == Output::Json {
        return print_json(v);
    }
    let rows = v
        .iter()
        .map(|d| {
            let endpoint = opt(d.peer.as_ref().and_then(|p| p.endpoint.as_deref()));
            vec![
                d.name.clone(),
                d.address.clone(),
                wire_name(&d.state),
                labels(&d.labels),
                d.public_key.clone(),
                handshake(d),
                endpoint,
            ]
        })
        .collect();
    table(&["NAME", "ADDRESS", "STATE", "LABELS", "PUBLIC KEY", "HANDSHAKE", "ENDPOINT"], rows);
}

/// `k=v,k2=v2`, or `-`.
fn labels(l: &std::collections::BTreeMap<String, String>) -> String {
    if l.is_empty() {
        return "-".into();
    }
    l.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

pub fn device_tokens(out: Output, v: &[DeviceTokenView]) {
    if out == Output::Json {
        return print_json(v);
    }
    let rows = v
        .iter()
        .map(|t| {
            let uses = format!("{}/{}", t.uses, t.max_uses.map_or_else(|| "unlimited".to_string(), |m| m.to_string()));
            vec![
                t.prefix.clone(),
                t.tenant.clone(),
                opt(t.name.as_deref()),
                uses,
                time(Some(t.expires_at_ms)),
                labels(&t.labels),
                wire_name(&t.approve),
                time(t.revoked_at_ms),
            ]
        })
        .collect();
    table(&["TOKEN", "TENANT", "NAME", "USES", "EXPIRES", "LABELS", "APPROVE", "REVOKED"], rows);
}

pub fn exposure(out: Output, x: &ExposureView) {
    if out == Output::Json {
        return print_json(x);
    }
    let allow = if x.allow.is_empty() { "anyone".to_string() } else { x.allow.join(",") };
    let rate = if x.rate_per_second == 0 { "unlimited".to_string() } else { format!("{}/s", x.rate_per_second) };
    for (k, v) in [
        ("id", x.id.clone()),
        ("device", format!("{}:{}", opt(x.device.as_deref()), x.port)),
        (
            "public",
            x.endpoint.clone().unwrap_or_else(|| format!("port {} (the gateway has no public address)", x.public_port)),
        ),
        ("protocol", wire_name(&x.protocol)),
        ("source", wire_name(&x.source)),
        ("allow", allow),
        ("rate", rate),
        ("enabled", x.enabled.to_string()),
    ] {
        say(format_args!("{k:<9} {v}"));
    }
    if let Some(s) = &x.status {
        say(format_args!("{:<9} {} accepted, {} dropped packets", "counters", s.accepted_packets, s.dropped_packets));
        for src in &s.sources {
            say(format_args!(
                "{:<9} {} first {} last {} ({} packets, {})",
                "source",
                src.address,
                time(Some(src.first_seen_ms)),
                time(Some(src.last_seen_ms)),
                src.packets,
                bytes(src.bytes)
            ));
        }
    }
}

pub fn exposures(out: Output, v: &[ExposureView]) {
    if out == Output::Json {
        return print_json(v);
    }
    let rows = v
        .iter()
        .map(|x| {
            vec![
                x.id.clone(),
                format!("{}:{}", opt(x.device.as_deref()), x.port),
                opt(x.endpoint.clone()),
                x.public_port.to_string(),
                wire_name(&x.protocol),
                wire_name(&x.source),
                if x.enabled { "enabled".into() } else { "disabled".into() },
            ]
        })
        .collect();
    table(&["ID", "DEVICE", "ENDPOINT", "PUBLIC PORT", "PROTO", "SOURCE", "STATE"], rows);
}

/// Networks and devices, then a label selector as `labels/k=v,k2=v2`.
fn with_labels(named: &[String], labels: &std::collections::BTreeMap<String, String>) -> Vec<String> {
    let mut out = named.to_vec();
    if !labels.is_empty() {
        let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push(format!("labels/{}", pairs.join(",")));
    }
    out
}

pub fn rules(out: Output, v: &[RuleView]) {
    if out == Output::Json {
        return print_json(v);
    }
    let any = |v: &[String]| if v.is_empty() { "any".to_string() } else { v.join(",") };
    let rows = v
        .iter()
        .map(|r| {
            let verdict = if r.vpn_required { "vpn-required".to_string() } else { wire_name(&r.verdict) };
            vec![
                r.id.clone(),
                r.position.to_string(),
                verdict,
                any(&with_labels(&r.sources, &r.source_labels)),
                any(&with_labels(&r.destinations, &r.destination_labels)),
                r.ports.clone().unwrap_or_else(|| "any".into()),
                wire_name(&r.protocol),
            ]
        })
        .collect();
    table(&["ID", "POSITION", "VERDICT", "SOURCES", "DESTINATIONS", "PORTS", "PROTO"], rows);
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
