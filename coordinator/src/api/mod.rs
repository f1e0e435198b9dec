//! The REST API (axum). Only this module knows about HTTP. The router below is the table of
//! contents; each resource has its room (`tenants`, `nodes`, `apikeys`, `audit`, `cluster`, `invoices`, …; `panel`: the web UI's files), over
//! `extract` (parse → validate → reject, written once), `auth` (keys, rate limits, roles), `error`
//! (the one mapping to statuses) and `dto` (the wire types, shared with the CLI). `openapi` is the
//! contract: every status, constraint and error body the handlers really answer.

pub mod apikeys;
pub mod audit;
pub mod auth;
pub mod backups;
pub mod cluster;
pub mod devices;
pub mod devicetokens;
pub mod dto;
pub mod error;
pub mod exposures;
pub mod extract;
pub mod firewall;
pub mod invoices;
pub mod metrics;
pub mod nodes;
pub mod openapi;
pub mod panel;
pub mod session;
pub mod snapshot;
pub mod tenants;
pub mod usage;
pub mod users;

use crate::server::{Consistency, Coordinator};
use auth::Ctx;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use axum::Router;
use error::ApiError;
use std::sync::Arc;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

type Result<T> = std::result::Result<T, ApiError>;

pub fn router(c: Arc<Coordinator>) -> Router {
    let http = metrics::HttpMetrics::default();
    let panel = panel::panel(&c);
    Router::new()
        .route("/", get(panel::index))
        .route("/assets/{version}/{file}", get(panel::asset))
        .route("/api/v1/branding", get(panel::branding))
        .route("/healthz", get(openapi::healthz))
        .route("/metrics", get(metrics::metrics))
        .route("/api/v1/openapi.json", get(openapi::document))
        .route("/api/v1/tenant", post(tenants::create_tenant))
        .route(
            "/api/v1/tenant/{name}",
            get(tenants::get_tenant).patch(tenants::update_tenant).delete(tenants::delete_tenant),
        )
        .route("/api/v1/tenant/{name}/{action}", post(tenants::tenant_lifecycle))
        .route("/api/v1/tenant/{name}/audit", get(audit::tenant_audit))
        .route("/api/v1/tenant/{name}/usage", get(usage::tenant_usage))
        .route("/api/v1/tenant/{name}/backups", get(backups::list_backups).post(backups::run_backup))
        .route("/api/v1/tenant/{name}/backups/restore", post(backups::restore_backup))
        .route("/api/v1/tenant/{name}/backups/rotate-key", post(backups::rotate_key))
        .route("/api/v1/tenant/{name}/devices", get(devices::list_devices).post(devices::add_device))
        .route("/api/v1/tenant/{name}/devices/{device}", get(devices::get_device).delete(devices::remove_device))
        .route("/api/v1/tenant/{name}/devices/{device}/config", get(devices::device_config))
        .route("/api/v1/tenant/{name}/devices/{device}/{action}", post(devices::switch_device))
        .route(
            "/api/v1/tenant/{name}/device-tokens",
            get(devicetokens::list_device_tokens).post(devicetokens::create_device_token),
        )
        .route("/api/v1/tenant/{name}/device-tokens/{id}", delete(devicetokens::revoke_device_token))
        .route("/api/v1/tenant/{name}/exposures", get(exposures::list_exposures).post(exposures::add_exposure))
        .route("/api/v1/tenant/{name}/exposures/{id}", get(exposures::get_exposure).delete(exposures::remove_exposure))
        .route("/api/v1/tenant/{name}/exposures/{id}/{action}", post(exposures::switch_exposure))
        .route("/api/v1/tenant/{name}/firewall/rule", get(firewall::list_rules).post(firewall::add_rule))
        .route("/api/v1/tenant/{name}/firewall/rule/{id}", delete(firewall::remove_rule))
        .route("/api/v1/tenant/{name}/firewall/domains", get(firewall::list_domains).post(firewall::block_domain))
        .route("/api/v1/tenant/{name}/firewall/domains/{domain}", delete(firewall::unblock_domain))
        .route("/api/v1/tenant/{name}/invoices", get(invoices::list_invoices).post(invoices::create_invoice))
        .route("/api/v1/tenant/{name}/invoices/{invoice}", get(invoices::get_invoice))
        .route("/api/v1/tenant/{name}/invoices/{invoice}/{action}", post(invoices::invoice_action))
        .route("/api/v1/tenant/{name}/users", get(users::list_tenant_users).post(users::create_tenant_user))
        .route("/api/v1/session", get(session::current_session).post(session::sign_in).delete(session::sign_out))
        .route("/api/v1/session/totp", post(session::enrol_totp))
        .route("/api/v1/session/password", post(session::change_password))
        .route("/api/v1/users", get(users::list_users).post(users::create_user))
        .route("/api/v1/users/{user}/{action}", post(users::user_action))
        .route("/api/v1/tenants", get(tenants::list_tenants))
        .route("/api/v1/tenants/summary", get(tenants::list_tenant_summaries))
        .route("/api/v1/nodes", get(nodes::list_nodes))
        .route("/api/v1/nodes/tokens", post(nodes::create_join_token))
        .route("/api/v1/nodes/{id}/{action}", post(nodes::node_action))
        .route("/api/v1/apikeys", get(apikeys::list_api_keys).post(apikeys::create_api_key))
        .route("/api/v1/apikeys/{id}", delete(apikeys::revoke_api_key))
        .route("/api/v1/audit", get(audit::list_audit))
        .route("/api/v1/audit/verify", get(audit::verify_audit))
        .route("/api/v1/refusals", get(audit::refusal_stats))
        .route("/api/v1/cluster", get(cluster::cluster_status))
        .route("/api/v1/cluster/learners", post(cluster::add_learner))
        .route("/api/v1/cluster/voters", post(cluster::promote))
        .route("/api/v1/cluster/members/{id}", delete(cluster::remove_member))
        .route("/api/v1/cluster/snapshot", get(snapshot::save_snapshot))
        .route("/api/v1/cluster/tokens", get(cluster::list_coordinator_tokens).post(cluster::create_coordinator_token))
        .route("/api/v1/cluster/tokens/{id}", delete(cluster::revoke_coordinator_token))
        .layer(axum::Extension(panel))
        .layer(axum::middleware::from_fn(panel::headers))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(http.clone(), metrics::track))
        .layer(axum::Extension(http))
        .with_state(c)
}

/// Waits until this coordinator's state is fresh enough for a read (linearizable unless `stale`).
async fn barrier(ctx: &Ctx, consistency: Option<Consistency>) -> Result<()> {
    Ok(ctx.coordinator.read_barrier(consistency.unwrap_or_default()).await?)
}
