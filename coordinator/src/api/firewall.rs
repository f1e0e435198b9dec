//! A tenant's firewall over HTTP: ordered rules (`/firewall/rule`) and blocked domains
//! (`/firewall/domains`). An admin key or the tenant's own customer key. The rules' invariants
//! are the domain's (`state/firewall.rs`).

use super::auth::Ctx;
use super::devices::tenant_scope;
use super::dto::{AddRuleBody, BlockDomainBody, ErrorBody, RuleView};
use super::error::ApiError;
use super::extract::{clipped, path, Body, PathOf};
use super::Result;
use crate::state::action::Action;
use crate::state::device::DeviceName;
use crate::state::firewall::{LabelSelector, NewDestination, NewRule, RuleProtocol, Verdict};
use crate::state::gateway::{Ipv4Cidr, PortRange};
use crate::state::names::TenantName;
use crate::state::{Op, Reply};
use axum::http::StatusCode;
use axum::Json;
use berqenas_common::net::DomainName;

fn cidrs(field: &str, raw: Option<Vec<String>>) -> std::result::Result<Vec<Ipv4Cidr>, ApiError> {
    raw.unwrap_or_default()
        .iter()
        .map(|c| {
            Ipv4Cidr::parse_masking(c)
                .map_err(|e| ApiError::invalid(format!("{field} {:?}: {e}", c.chars().take(40).collect::<String>())))
        })
        .collect()
}

impl AddRuleBody {
    fn into_new(self, tenant: TenantName) -> std::result::Result<NewRule, ApiError> {
        let AddRuleBody {
            position,
            verdict,
            sources,
            destinations,
            devices,
            source_labels,
            destination_labels,
            ports,
            protocol,
            vpn_required,
        } = self;
        let selector = |field: &str, raw: Option<std::collections::BTreeMap<String, String>>| {
            LabelSelector::new(raw.unwrap_or_default()).map_err(|e| ApiError::invalid(format!("{field}: {e}")))
        };
        let mut dests: Vec<NewDestination> =
            cidrs("destination", destinations)?.into_iter().map(NewDestination::Cidr).collect();
        for d in devices.unwrap_or_default() {
            dests.push(NewDestination::Device(DeviceName::parse(&d).map_err(|e| ApiError::invalid(e.to_string()))?));
        }
        let ports = ports
            .map(|p| PortRange::parse_unordered(&p).map_err(|e| ApiError::invalid(format!("ports: {e}"))))
            .transpose()?;
        let new = NewRule {
            tenant,
            position,
            verdict: verdict.unwrap_or(Verdict::Deny),
            sources: cidrs("source", sources)?,
            source_labels: selector("source_labels", source_labels)?,
            destinations: dests,
            destination_labels: selector("destination_labels", destination_labels)?,
            ports,
            protocol: protocol.unwrap_or(RuleProtocol::Any),
            vpn_required: vpn_required.unwrap_or(false),
        };
        new.check().map_err(ApiError::invalid)?;
        Ok(new)
    }
}

#[utoipa::path(post, path = "/api/v1/tenant/{name}/firewall/rule", params(("name" = String, Path)), request_body = AddRuleBody,
    responses((status = 201, body = RuleView),
        (status = 400, description = "a malformed network, port range, device name or label (host bits of a network are cleared; a range's ends may come in either order), ports without protocol tcp or udp, or a vpn-required rule with sources (or source labels) or without destinations, destination labels and ports", body = ErrorBody),
        (status = 404, description = "no such tenant", body = ErrorBody),
        (status = 409, description = "a named device does not exist, the position is taken, or the tenant is deleted", body = ErrorBody),
        (status = 429, description = "the tenant has 1000 rules, or too many requests", body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn add_rule(ctx: Ctx, raw: PathOf<String>, body: Body) -> Result<(StatusCode, Json<RuleView>)> {
    let raw = path(raw)?;
    let (scope, tenant) = tenant_scope(&ctx, Action::FirewallAdd, &raw, clipped("tenant", &raw)).await?;
    let body: AddRuleBody = scope.raw_body(body).await?;
    let new = scope.check(body.into_new(tenant)).await?;
    match scope.run(Op::AddFirewallRule(new)).await? {
        Reply::FirewallRule(r) => Ok((StatusCode::CREATED, Json(RuleView::from(&*r)))),
        other => Err(ApiError::internal("firewall command", format!("unexpected reply {other:?}"))),
    }
}

#[utoipa::path(get, path = "/api/v1/tenant/{name}/firewall/rule", params(("name" = String, Path)),
    responses((status = 200, description = "the rules in evaluation order", body = Vec<RuleView>), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn list_rules(ctx: Ctx, raw: PathOf<String>) -> Result<Json<Vec<RuleView>>> {
    let raw = path(raw)?;
    let (_scope, tenant) = tenant_scope(&ctx, Action::FirewallList, &raw, clipped("tenant", &raw)).await?;
    super::barrier(&ctx, None).await?;
    ctx.coordinator.read(|d| {
        d.state.tenants.get(&tenant).ok_or_else(|| ApiError::not_found(format!("tenant {tenant} not found")))?;
        Ok(Json(d.state.rules_of(&tenant).into_iter().map(RuleView::from).collect()))
    })
}

#[utoipa::path(delete, path = "/api/v1/tenant/{name}/firewall/rule/{id}", params(("name" = String, Path), ("id" = String, Path)),
    responses((status = 200, description = "the removed rule", body = RuleView), (status = 404, body = ErrorBody),
        (status = 409, description = "the tenant is deleted", body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn remove_rule(ctx: Ctx, raw: PathOf<(String, String)>) -> Result<Json<RuleView>> {
    let (raw, id) = path(raw)?;
    let id: String = id.chars().take(64).collect();
    let target = format!("{}/firewall/rule/{}", clipped("tenant", &raw), id.escape_debug());
    let (scope, tenant) = tenant_scope(&ctx, Action::FirewallRemove, &raw, target).await?;
    match scope.run(Op::RemoveFirewallRule { tenant, id }).await? {
        Reply::FirewallRule(r) => Ok(Json(RuleView::from(&*r))),
        other => Err(ApiError::internal("firewall command", format!("unexpected reply {other:?}"))),
    }
}

#[utoipa::path(get, path = "/api/v1/tenant/{name}/firewall/domains", params(("name" = String, Path)),
    responses((status = 200, description = "the tenant's blocked domains", body = Vec<String>), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn list_domains(ctx: Ctx, raw: PathOf<String>) -> Result<Json<Vec<String>>> {
    let raw = path(raw)?;
    let (_scope, tenant) = tenant_scope(&ctx, Action::FirewallList, &raw, clipped("tenant", &raw)).await?;
    super::barrier(&ctx, None).await?;
    ctx.coordinator
        .read(|d| d.state.tenants.get(&tenant).map(|t| t.blocked_domains.iter().map(ToString::to_string).collect()))
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("tenant {tenant} not found")))
}

async fn domain_change(ctx: Ctx, raw: String, domain: String, blocked: bool) -> Result<Json<Vec<String>>> {
    let action = if blocked { Action::FirewallBlockDomain } else { Action::FirewallUnblockDomain };
    let (scope, tenant) = tenant_scope(&ctx, action, &raw, clipped("tenant", &raw)).await?;
    let parsed = match domain.len() <= super::dto::MAX_DOMAIN_LEN {
        true => domain.parse::<DomainName>().map_err(|e| ApiError::invalid(format!("domain: {e}"))),
        false => Err(ApiError::invalid("domain: at most 253 characters")),
    };
    let domain = scope.check(parsed).await?;
    match scope.run(Op::BlockDomain { tenant, domain, blocked }).await? {
        Reply::Tenant(t) => Ok(Json(t.blocked_domains.iter().map(ToString::to_string).collect())),
        other => Err(ApiError::internal("firewall command", format!("unexpected reply {other:?}"))),
    }
}

#[utoipa::path(post, path = "/api/v1/tenant/{name}/firewall/domains", params(("name" = String, Path)), request_body = BlockDomainBody,
    responses((status = 200, description = "the tenant's blocked domains", body = Vec<String>),
        (status = 400, description = "not a domain name", body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "already blocked, or the tenant is deleted", body = ErrorBody),
        (status = 429, description = "the tenant blocks 1000 domains, or too many requests", body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn block_domain(ctx: Ctx, raw: PathOf<String>, body: Body) -> Result<Json<Vec<String>>> {
    let raw = path(raw)?;
    let scope = tenant_scope(&ctx, Action::FirewallBlockDomain, &raw, clipped("tenant", &raw)).await?.0;
    let body: BlockDomainBody = scope.raw_body(body).await?;
    drop(scope);
    domain_change(ctx, raw, body.domain, true).await
}

#[utoipa::path(delete, path = "/api/v1/tenant/{name}/firewall/domains/{domain}", params(("name" = String, Path), ("domain" = String, Path)),
    responses((status = 200, description = "the tenant's blocked domains", body = Vec<String>),
        (status = 404, description = "no such tenant, or the domain is not blocked", body = ErrorBody),
        (status = 409, description = "the tenant is deleted", body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn unblock_domain(ctx: Ctx, raw: PathOf<(String, String)>) -> Result<Json<Vec<String>>> {
    let (raw, domain) = path(raw)?;
    domain_change(ctx, raw, domain, false).await
}
