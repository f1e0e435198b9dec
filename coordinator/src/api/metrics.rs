//! `GET /metrics`: this coordinator's Prometheus metrics as OpenMetrics text, for an admin or
//! auditor key (Prometheus sends it with `authorization.credentials_file`), and `track`, the
//! middleware that times every API request by route template, method and status. Label values
//! are bounded sets: route templates (never a request's path, so no tenant or device name from a
//! URL), method names, statuses, tenant statuses, node ids and audit action names.

use super::auth::{Ctx, Need};
use super::error::ApiError;
use super::Result;
use crate::server::Coordinator;
use crate::state::action::Action;
use crate::state::tenant::TenantStatus;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::{Instant, SystemTime};

/// What `/metrics` answers with (Prometheus negotiates OpenMetrics).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    /// The route template (`/api/v1/tenant/{name}`), or `unmatched`.
    route: String,
    status: u16,
}

type RequestHistogram = Family<RequestLabels, Histogram, fn() -> Histogram>;

/// 0.5 ms to ~16 s.
fn request_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The API's request timings since this coordinator started.
#[derive(Clone)]
pub struct HttpMetrics {
    requests: RequestHistogram,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self { requests: Family::new_with_constructor(request_histogram) }
    }
}

/// A request's method as a label: the methods the API serves, anything else `other` (a client
/// may send any token as a method; it must not make a new series).
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Times one request and counts it under its route template and status.
pub(super) async fn track(State(http): State<HttpMetrics>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |p| p.as_str().into());
    let method = method_label(req.method());
    let started = Instant::now();
    let response = next.run(req).await;
    let labels = RequestLabels { method, route, status: response.status().as_u16() };
    http.requests.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    response
}

/// `GET /metrics` (admin or auditor key; an allowed scrape is not audited, a refused one is).
#[utoipa::path(get, path = "/metrics",
    responses((status = 200, description = "Prometheus metrics of this coordinator (OpenMetrics text)",
        body = String, content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8")),
    security(("api_key" = [])))]
pub(super) async fn metrics(ctx: Ctx, Extension(http): Extension<HttpMetrics>) -> Result<Response> {
    ctx.scope(Need::AuditRead, Action::MetricsRead, "metrics").await?;
    let text = render(&ctx.coordinator, &http).map_err(|e| ApiError::internal("encode metrics", e))?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabel {
    node: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabel {
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabel {
    certificate: &'static str,
}

const TENANT_STATUSES: [TenantStatus; 6] = [
    TenantStatus::Provisioning,
    TenantStatus::Active,
    TenantStatus::Suspended,
    TenantStatus::Deleting,
    TenantStatus::DeletedPendingPurge,
    TenantStatus::QuotaExceeded,
];

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let g: Gauge = Gauge::default();
    g.set(int(value));
    registry.register(name, help, g);
}

fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| int(d.as_secs()))
}

/// The expiry of the first certificate in a PEM file, if it can be read.
fn not_after(path: &std::path::Path) -> Option<SystemTime> {
    let pem = std::fs::read_to_string(path).ok()?;
    let der = berqenas_pki::first_cert_der(&pem).ok()?;
    berqenas_pki::validity(&der).ok().map(|(_, not_after)| not_after)
}

/// Everything, read now: Raft's view from openraft, the domain counts from the state machine,
/// the refusal counts and the request timings kept since start.
fn render(c: &Coordinator, http: &HttpMetrics) -> std::result::Result<String, std::fmt::Error> {
    let mut reg = Registry::with_prefix("berqenas");
    let m = c.raft.metrics().borrow().clone();
    let applied = m.last_applied.map_or(0, |l| l.index);
    gauge(&mut reg, "raft_term", "Current Raft term of this coordinator", m.current_term);
    let leader = u64::from(m.state == openraft::ServerState::Leader);
    gauge(&mut reg, "raft_is_leader", "1 when this coordinator is the Raft leader", leader);
    gauge(
        &mut reg,
        "raft_leader_id",
        "Id of the leader this coordinator knows (0: none known)",
        m.current_leader.unwrap_or(0),
    );
    gauge(
        &mut reg,
        "raft_last_log_index",
        "Index of the last entry in this coordinator's log",
        m.last_log_index.unwrap_or(0),
    );
    gauge(
        &mut reg,
        "raft_commit_index",
        "Newest committed log index this coordinator knows",
        c.commit_index.get().unwrap_or(applied).max(applied),
    );
    gauge(&mut reg, "raft_applied_index", "Last log index applied to this coordinator's state machine", applied);
    let voters = m.membership_config.membership().voter_ids().count();
    gauge(&mut reg, "raft_voters", "Voters in the membership this coordinator has applied", voters as u64);

    let tenants: Family<StatusLabel, Gauge> = Family::default();
    let nodes: Family<StateLabel, Gauge> = Family::default();
    let last_report: Family<NodeLabel, Gauge> = Family::default();
    let node_revision: Family<NodeLabel, Gauge> = Family::default();
    let (audit_entries, devices) = c.read(|d| {
        for s in TENANT_STATUSES {
            let _ = tenants.get_or_create(&StatusLabel { status: s.as_str() });
        }
        for t in d.state.tenants.values() {
            tenants.get_or_create(&StatusLabel { status: t.status.as_str() }).inc();
        }
        for s in ["active", "cordoned", "revoked"] {
            let _ = nodes.get_or_create(&StateLabel { state: s });
        }
        for n in d.state.nodes.values() {
            let state = if n.revoked {
                "revoked"
            } else if n.cordoned {
                "cordoned"
            } else {
                "active"
            };
            nodes.get_or_create(&StateLabel { state }).inc();
            if !n.revoked {
                last_report.get_or_create(&NodeLabel { node: n.id }).set(int(n.last_seen_ms / 1000));
                node_revision.get_or_create(&NodeLabel { node: n.id }).set(int(n.applied_revision));
            }
        }
        (d.state.audit.head().seq, d.state.devices.len())
    });
    reg.register("tenants", "Tenants by status", tenants);
    reg.register("nodes", "Node agents by state", nodes);
    reg.register(
        "node_last_report_timestamp_seconds",
        "When each node last reported or joined (Unix seconds, as replicated; refreshed every 60 s)",
        last_report,
    );
    reg.register("node_applied_revision", "The desired-state revision each node last reported applied", node_revision);
    gauge(&mut reg, "audit_entries", "Entries in the audit chain", audit_entries);
    gauge(&mut reg, "devices", "Devices registered (every state)", devices as u64);

    let refused: Family<ActionLabel, Counter> = Family::default();
    for (action, n) in c.admission.refusals.by_action() {
        refused.get_or_create(&ActionLabel { action: action.as_str() }).inc_by(n);
    }
    reg.register(
        "refused",
        "Unauthenticated or throttled attempts refused since start, by what was attempted",
        refused,
    );

    if let Some((delivered, errors)) = crate::siem::STATS.get() {
        gauge(
            &mut reg,
            "siem_last_delivered_seq",
            "Sequence number of the last audit entry this coordinator delivered to the SIEM (present when one is configured)",
            delivered,
        );
        let failed: Counter = Counter::default();
        failed.inc_by(errors);
        reg.register("siem_errors", "Failed SIEM deliveries (connect, TLS, write or HTTP status) since start", failed);
    }

    let identity = crate::transport::Identity { dir: c.data_dir.clone() };
    let expiry: Family<CertificateLabel, Gauge> = Family::default();
    for (certificate, path) in [("coordinator", identity.cert_path()), ("ca", identity.ca_path())] {
        if let Some(t) = not_after(&path) {
            expiry.get_or_create(&CertificateLabel { certificate }).set(unix_seconds(t));
        }
    }
    reg.register(
        "certificate_expiry_timestamp_seconds",
        "When this coordinator's certificates expire (Unix seconds)",
        expiry,
    );

    reg.register(
        "api_request_duration_seconds",
        "REST API requests by route template, method and status, and how long they took",
        http.requests.clone(),
    );
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &reg)?;
    Ok(out)
}
