//! The OpenAPI document, the API's contract: every route, status code, constraint and error body
//! the handlers really answer. The derive describes the routes and wire types; `contract` then
//! states what a derive cannot: the patterns the handlers check (single-sourced from `dto`), the
//! cross-field rules as `not` cases, and the refusals every authenticated route can answer.

use super::dto::*;
use super::{
    apikeys, audit, backups, cluster, devices, devicetokens, exposures, firewall, invoices, metrics, nodes, panel,
    session, snapshot, tenants, usage, users,
};
use crate::refusals::{PendingSource, RefusalStats};
use axum::Json;
use serde_json::{json, Value};
use utoipa::OpenApi;

#[utoipa::path(get, path = "/healthz",
    responses((status = 200, description = "the process is up", body = String, content_type = "text/plain")))]
pub(super) async fn healthz() -> &'static str {
    "ok"
}

/// `GET /api/v1/openapi.json`.
pub(super) async fn document() -> Json<Value> {
    Json(contract())
}

struct SecurityAddon;

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("bqk_{id}_{secret}").build(),
            ),
        );
        // Every route that takes an API key also takes the panel's session cookie (with
        // `X-CSRF-Token` on changes).
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Cookie(
                utoipa::openapi::security::ApiKeyValue::new(crate::session::COOKIE),
            )),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Berqenas coordinator API", description = "Tenants, nodes, API keys, devices and device tokens, invoices, audit and cluster membership."),
    paths(healthz, metrics::metrics, panel::branding, tenants::create_tenant, tenants::get_tenant, tenants::list_tenants, tenants::list_tenant_summaries, tenants::update_tenant,
        tenants::delete_tenant, tenants::tenant_lifecycle, audit::tenant_audit, nodes::list_nodes,
        nodes::create_join_token, nodes::node_action, apikeys::create_api_key, apikeys::list_api_keys,
        apikeys::revoke_api_key, audit::list_audit, audit::verify_audit, audit::refusal_stats,
        cluster::cluster_status, cluster::add_learner, cluster::promote, cluster::remove_member,
        cluster::create_coordinator_token, cluster::list_coordinator_tokens, cluster::revoke_coordinator_token,
        snapshot::save_snapshot,
        devices::add_device, devices::list_devices, devices::get_device, devices::remove_device, devices::switch_device,
        devices::device_config, devicetokens::create_device_token, devicetokens::list_device_tokens,
        devicetokens::revoke_device_token, exposures::add_exposure, exposures::list_exposures, exposures::get_exposure,
        exposures::remove_exposure, exposures::switch_exposure, firewall::add_rule, firewall::list_rules,
        firewall::remove_rule, firewall::list_domains, firewall::block_domain, firewall::unblock_domain,
        usage::tenant_usage,

        invoices::list_invoices, invoices::get_invoice, invoices::create_invoice, invoices::invoice_action,
        backups::list_backups, backups::run_backup, backups::restore_backup, backups::rotate_key,
        session::sign_in, session::enrol_totp, session::current_session, session::sign_out,
        session::change_password,
        users::list_users, users::create_user, users::user_action, users::list_tenant_users, users::create_tenant_user),
    components(schemas(ErrorBody, BrandingView, TenantView, TenantSummary, CreatedTenant, CreateTenantBody, UpdateTenantBody, ApiKeyView,
        CreatedApiKey, CreateApiKeyBody, AuditEntryView, AuditVerification, BreakView, ClusterStatus, Member,
        AddLearnerBody, PromoteBody, NodeView, JoinTokenView, CreateJoinTokenBody, CreatedJoinToken,
        CreateCoordinatorTokenBody, CoordinatorToken, TokenStatus, TenantAction, NodeAction, RefusalStats,
        PendingSource, crate::server::Consistency, crate::state::tenant::TenantStatus, AddDeviceBody, DeviceView,
        ConnectView, DeviceConfigView, SwitchAction, DeviceAction, AddExposureBody, CreateDeviceTokenBody,
        CreatedDeviceToken, DeviceTokenView, FingerprintView, Approve, crate::state::device::DeviceState, ExposureView, AddRuleBody, RuleView, BlockDomainBody,
        UsageView, UsageDay, UsageAmounts,

        CreateInvoiceBody, InvoiceAction, InvoiceView, InvoiceLineView, InvoiceUsageView, crate::state::billing::ShownStatus,
        crate::state::billing::compute::LineKind,
        BackupsView, BackupView, BackupPolicyView, BackupFailureView, BackupRequestView, BackupOutcomeView, BackupProgressView,
        RestoreBackupBody, RestoreMode,
        SignInBody, TotpBody, ChangePasswordBody, SessionUserView, SignedInStage, EnrolStage, SessionView, EnrolView, SignInAnswer,
        UserView, CreateUserBody, CreateTenantUserBody, UserWithPassword, UserAction, UserActionAnswer,
        crate::state::user::UserRole, crate::state::user::UserStatus)),
    modifiers(&SecurityAddon)
)]
pub struct ApiDoc;

/// `^…$` of a user name (`UserName::parse`).
const USER_NAME_PATTERN: &str = "^[a-z][a-z0-9_.-]{1,62}$";

/// `^…$` of a 16-hex-digit id (API keys, join tokens).
const HEX_ID_PATTERN: &str = "^[0-9a-fA-F]{16}$";

/// A tenant name: the pattern, and neither a reserved name nor a reserved prefix.
fn tenant_name_schema(nullable: bool) -> Value {
    let reserved: Vec<&str> = RESERVED_NAMES.split_whitespace().collect();
    let kind = if nullable { json!(["string", "null"]) } else { json!("string") };
    json!({
        "type": kind,
        "pattern": TENANT_NAME_PATTERN,
        "not": {"anyOf": [{"enum": reserved}, {"type": "string", "pattern": RESERVED_PREFIX_PATTERN}]},
    })
}

/// The document as served: the derived one, with what the derive cannot state.
pub fn contract() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|e| json!({"error": e.to_string()}));
    let schemas = &mut doc["components"]["schemas"];
    for (schema, field, pattern) in [
        ("CreateTenantBody", "db_quota", QUOTA_PATTERN),
        ("UpdateTenantBody", "db_quota", QUOTA_PATTERN),
        ("CreateJoinTokenBody", "ttl", TTL_PATTERN),
        ("CreateCoordinatorTokenBody", "ttl", TTL_PATTERN),
        ("CreateApiKeyBody", "expires_in", LIFETIME_PATTERN),
        ("CreateApiKeyBody", "description", "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"),
        ("UpdateTenantBody", "bandwidth", BANDWIDTH_PATTERN),
        ("AddDeviceBody", "name", crate::state::device::DEVICE_NAME_PATTERN),
        ("AddDeviceBody", "public_key", WG_KEY_PATTERN),
        ("AddDeviceBody", "address", IPV4_PATTERN),
        ("CreateDeviceTokenBody", "name", crate::state::device::DEVICE_NAME_PATTERN),
        ("CreateDeviceTokenBody", "ttl", TTL_PATTERN),
        ("CreateDeviceTokenBody", "uses", USES_PATTERN),
        ("CreateDeviceTokenBody", "ephemeral", EPHEMERAL_PATTERN),
        ("AddExposureBody", "device", crate::state::device::DEVICE_NAME_PATTERN),
        ("AddRuleBody", "ports", PORTS_PATTERN),
        ("BlockDomainBody", "domain", DOMAIN_PATTERN),
        ("CreateInvoiceBody", "period", PERIOD_PATTERN),
        ("CreateUserBody", "name", USER_NAME_PATTERN),
        ("CreateTenantUserBody", "name", USER_NAME_PATTERN),
    ] {
        schemas[schema]["properties"][field]["pattern"] = json!(pattern);
    }
    schemas["CreateTenantBody"]["properties"]["name"] = tenant_name_schema(false);
    schemas["CreateApiKeyBody"]["properties"]["tenant"] = tenant_name_schema(true);
    schemas["CreateUserBody"]["properties"]["tenant"] = tenant_name_schema(true);
    // A platform admin belongs to no tenant; the other roles name one (`CreateUserBody::validate`);
    // a tenant's owner makes only tenant roles.
    schemas["CreateUserBody"]["allOf"] = json!([
        {"not": {"required": ["role"], "properties": {"role": {"enum": ["owner", "admin", "member"]},
            "tenant": {"type": "null"}}}},
        {"not": {"required": ["role"], "properties": {"role": {"enum": ["owner", "admin", "member"]}},
            "not": {"required": ["tenant"]}}},
        {"not": {"required": ["role", "tenant"],
            "properties": {"role": {"const": "platform_admin"}, "tenant": {"type": "string"}}}},
    ]);
    schemas["CreateTenantUserBody"]["properties"]["role"] =
        json!({"type": "string", "enum": ["owner", "admin", "member"]});
    // Settings that contradict each other, refused with 400 (`TenantSpec::check`).
    schemas["CreateTenantBody"]["allOf"] = json!([
        {"not": {"required": ["db_type", "isolation"],
            "properties": {"db_type": {"const": "mssql"}, "isolation": {"const": "schema"}}}},
        {"not": {"required": ["vpn_enabled", "access_mode"],
            "properties": {"vpn_enabled": {"const": false}, "access_mode": {"enum": ["vpn-only", "hybrid"]}}}},
        {"not": {"required": ["access_mode", "public_api"],
            "properties": {"access_mode": {"const": "vpn-only"}, "public_api": {"const": true}}}},
        {"not": {"required": ["access_mode", "public_api"],
            "properties": {"access_mode": {"enum": ["public", "hybrid"]}, "public_api": {"const": false}}}},
    ]);
    // A PATCH names at least one field to change, and none is null.
    schemas["UpdateTenantBody"]["minProperties"] = json!(1);
    for field in schemas["UpdateTenantBody"]["properties"].as_object_mut().into_iter().flat_map(|p| p.values_mut()) {
        not_null(field);
    }
    // A customer key names its tenant; no other key does (`State::create_api_key`).
    schemas["CreateApiKeyBody"]["allOf"] = json!([
        {"not": {"required": ["role"], "properties": {"role": {"const": "customer"}, "tenant": {"type": "null"}}}},
        {"not": {"required": ["role", "tenant"],
            "properties": {"role": {"enum": ["admin", "auditor"]}, "tenant": {"type": "string"}}}},
    ]);
    // Items of the network and device lists (host bits are cleared: 203.0.113.7/24 is 203.0.113.0/24).
    for (schema, field, pattern) in [
        ("AddExposureBody", "allow", CIDR_PATTERN),
        ("AddRuleBody", "sources", CIDR_PATTERN),
        ("AddRuleBody", "destinations", CIDR_PATTERN),
        ("AddRuleBody", "devices", crate::state::device::DEVICE_NAME_PATTERN),
    ] {
        if let Some(items) = schemas[schema]["properties"][field].get_mut("items") {
            items["pattern"] = json!(pattern);
        }
    }
    // Ports need protocol tcp or udp (`NewRule::check`): refused is a port range with the
    // protocol left out, null or any.
    // A vpn-required rule takes no sources (networks or labels) and names destinations, devices,
    // destination labels or ports.
    schemas["AddRuleBody"]["allOf"] = json!([
        {"not": {
            "required": ["ports"],
            "properties": {"ports": {"type": "string"}},
            "not": {"required": ["protocol"], "properties": {"protocol": {"enum": ["tcp", "udp"]}}}
        }},
        {"not": {
            "required": ["vpn_required", "sources"],
            "properties": {"vpn_required": {"const": true}, "sources": {"type": "array", "minItems": 1}}
        }},
        {"not": {
            "required": ["vpn_required", "source_labels"],
            "properties": {"vpn_required": {"const": true}, "source_labels": {"type": "object", "minProperties": 1}}
        }},
        {"not": {
            "required": ["vpn_required"],
            "properties": {"vpn_required": {"const": true}},
            "not": {"anyOf": [
                {"required": ["ports"], "properties": {"ports": {"type": "string"}}},
                {"required": ["destinations"], "properties": {"destinations": {"type": "array", "minItems": 1}}},
                {"required": ["devices"], "properties": {"devices": {"type": "array", "minItems": 1}}},
                {"required": ["destination_labels"],
                    "properties": {"destination_labels": {"type": "object", "minProperties": 1}}}
            ]}
        }}
    ]);
    unsigned_bounds(&mut doc);
    if let Some(paths) = doc["paths"].as_object_mut() {
        for item in paths.values_mut() {
            for op in item.as_object_mut().into_iter().flat_map(|o| o.values_mut()) {
                describe_operation(op);
            }
        }
    }
    doc
}

/// A property schema without its `null` alternative (`Option<T>` fields that refuse null).
fn not_null(field: &mut Value) {
    if let Some(kinds) = field.get("type").and_then(Value::as_array) {
        let kinds: Vec<Value> = kinds.iter().filter(|k| *k != "null").cloned().collect();
        field["type"] = if kinds.len() == 1 { kinds[0].clone() } else { Value::Array(kinds) };
    }
    if let Some(variants) = field.get("oneOf").and_then(Value::as_array) {
        let variants: Vec<Value> = variants.iter().filter(|v| v.get("type") != Some(&json!("null"))).cloned().collect();
        match <[Value; 1]>::try_from(variants) {
            Ok([only]) => *field = only,
            Err(rest) => field["oneOf"] = Value::Array(rest),
        }
    }
}

/// Unsigned integers as the handlers parse them: `u32`/`u64` up to their own maximum, where the
/// derive says `int32`/`int64` (whose maxima are half as large).
fn unsigned_bounds(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let unsigned = map.get("minimum").and_then(Value::as_u64).is_some();
            let max = match map.get("format").and_then(Value::as_str) {
                Some("int32") if unsigned => Some(u64::from(u32::MAX)),
                Some("int64") if unsigned => Some(u64::MAX),
                _ => None,
            };
            if let Some(max) = max {
                map.remove("format");
                map.entry("maximum").or_insert(json!(max));
            }
            map.values_mut().for_each(unsigned_bounds);
        }
        Value::Array(items) => items.iter_mut().for_each(unsigned_bounds),
        _ => {}
    }
}

/// Parameter patterns, and the refusals any authenticated operation can answer.
fn describe_operation(op: &mut Value) {
    for param in op.get_mut("parameters").and_then(Value::as_array_mut).into_iter().flatten() {
        let name = param["name"].as_str().unwrap_or_default().to_string();
        match (param["in"].as_str(), name.as_str()) {
            (Some("path"), "name") | (Some("query"), "tenant") => {
                param["schema"] = tenant_name_schema(param["in"] == "query");
            }
            (Some("path"), "id") if param["schema"]["type"] == "string" => {
                param["schema"]["pattern"] = json!(HEX_ID_PATTERN);
            }
            (Some("path"), "user") => {
                param["schema"]["pattern"] = json!(USER_NAME_PATTERN);
            }
            (Some("path"), "invoice") => {
                param["schema"]["pattern"] = json!(INVOICE_ID_PATTERN);
            }
            (Some("path"), "device") => {
                param["schema"]["pattern"] = json!(crate::state::device::DEVICE_NAME_PATTERN);
            }
            (Some("path"), "domain") => {
                param["schema"]["pattern"] = json!(DOMAIN_PATTERN);
                param["schema"]["maxLength"] = json!(MAX_DOMAIN_LEN);
            }
            (Some("query"), "since") => {
                param["schema"]["pattern"] = json!(SINCE_PATTERN);
            }
            (Some("query"), "period") => {
                param["schema"]["pattern"] = json!(PERIOD_PATTERN);
            }
            _ => {}
        }
    }
    if op.get("security").is_none() {
        return;
    }
    let error = |description: &str| {
        json!({"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}})
    };
    let mut common = vec![
        ("400", "malformed input: body, query or path"),
        ("401", "no API key, or one that is malformed, unknown, revoked or expired"),
        ("403", "the key's role or tenant may not do this, or its tenant is suspended or deleted"),
        ("429", "too many requests with this key or from this address; see Retry-After"),
        ("503", "no leader (an election is under way), or the cluster is not initialized"),
    ];
    if op.get("requestBody").is_some() {
        common.push(("413", "the body is larger than 64 KiB"));
    }
    let responses = &mut op["responses"];
    for (status, description) in common {
        if responses.get(status).is_none() {
            responses[status] = error(description);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_authenticated_operation_documents_its_refusals() {
        let doc = contract();
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for (method, op) in item.as_object().into_iter().flatten() {
                if op.get("security").is_none() {
                    continue;
                }
                for status in ["400", "401", "403", "429", "503"] {
                    assert!(op["responses"].get(status).is_some(), "{method} {path} documents {status}");
                }
            }
        }
        assert_eq!(
            doc["components"]["schemas"]["CreateTenantBody"]["properties"]["db_quota"]["pattern"],
            QUOTA_PATTERN
        );
    }

    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                if let Some(r) = map.get("$ref").and_then(Value::as_str) {
                    out.push(r.to_string());
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_resolves() {
        let doc = contract();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        for r in found {
            let name = r.trim_start_matches("#/components/schemas/");
            assert!(doc["components"]["schemas"].get(name).is_some(), "{r} is defined");
        }
    }

    #[test]
    fn a_patch_field_is_never_null() {
        let doc = contract();
        for (name, field) in
            doc["components"]["schemas"]["UpdateTenantBody"]["properties"].as_object().into_iter().flatten()
        {
            assert!(!field.to_string().contains("\"null\""), "{name}: {field}");
        }
        assert!(serde_json::from_str::<UpdateTenantBody>(r#"{"tier": null}"#).is_err());
    }
}
