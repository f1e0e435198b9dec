//! Bearer API key authentication, per-key rate limits and role checks. A refusal of a valid key
//! is written to the audit chain before the caller hears about it; a request without a valid key
//! is counted per source address (`refusals`) and costs no Raft write beyond its source's one
//! entry per window, and past the source's limit it is answered 429.

use super::error::ApiError;
use crate::refusals::Refusal;
use crate::server::Coordinator;
use crate::state::action::Action;
use crate::state::apikey::{split_token, Role};
use crate::state::names::TenantName;
use crate::state::tenant::TenantStatus;
use crate::state::{Command, Meta, Op};
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use std::net::SocketAddr;
use std::sync::Arc;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: String,
    pub role: Role,
    pub tenant: Option<TenantName>,
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need<'a> {
    Admin,
    /// Admin or auditor.
    AuditRead,
    /// Admin, or a customer of this tenant.
    Tenant(&'a TenantName),
    /// Any valid key (the handler narrows what is shown).
    AnyKey,
}

/// The request context: who (maybe), from where.
pub struct Ctx {
    pub coordinator: Arc<Coordinator>,
    pub source: String,
    source_ip: Option<std::net::IpAddr>,
    token: Option<String>,
    /// Whether this request was counted as an API call of a tenant (once per request).
    metered: std::sync::atomic::AtomicBool,
}

impl FromRequestParts<Arc<Coordinator>> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<Coordinator>) -> Result<Self, Self::Rejection> {
        let source_ip = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ci| ci.0.ip());
        let source = source_ip.map(|ip| ip.to_string()).unwrap_or_else(|| "unknown".into());
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim().to_string());
        Ok(Ctx { coordinator: state.clone(), source, source_ip, token, metered: Default::default() })
    }
}

impl Ctx {
    pub fn meta(&self, actor: &str) -> Meta {
        Meta { time_ms: crate::time::now_ms(), actor: actor.to_string(), source: self.source.clone(), key_role: None }
    }

    /// Writes an audit entry for a refused request and returns the refusal.
    pub async fn reject(&self, actor: &str, action: Action, target: &str, err: ApiError) -> ApiError {
        let op = Op::Rejected { action, target: target.into(), reason: err.message.clone() };
        let cmd = Command { meta: self.meta(actor), op };
        if let Err(e) = self.coordinator.write(cmd).await {
            tracing::warn!(error = %e, %action, "could not audit a refused request");
        }
        err
    }

    fn authenticate(&self) -> Result<Caller, ApiError> {
        let Some(token) = &self.token else {
            return Err(ApiError::unauthorized("missing API key; send Authorization: Bearer <key>"));
        };
        let Some((id, secret)) = split_token(token) else {
            return Err(ApiError::unauthorized("malformed API key"));
        };
        let now = crate::time::now_ms();
        self.coordinator.read(|d| {
            let key = d.state.api_keys.get(id).filter(|k| k.matches(secret));
            match key {
                None => Err(ApiError::unauthorized("invalid API key")),
                Some(k) if k.revoked_at_ms.is_some() => Err(ApiError::unauthorized("API key is revoked")),
                Some(k) if !k.is_usable(now) => Err(ApiError::unauthorized("API key has expired")),
                Some(k) => {
                    if let Some(t) = k.tenant.as_ref().and_then(|t| d.state.tenants.get(t)) {
                        if matches!(t.status, TenantStatus::Suspended | TenantStatus::DeletedPendingPurge) {
                            return Err(ApiError::forbidden(format!("tenant {} is {}", t.name, t.status.as_str())));
                        }
                    }
                    Ok(Caller { key_id: k.id.clone(), role: k.role, tenant: k.tenant.clone() })
                }
            }
        })
    }

    /// Authenticates, charges the key's rate limit, and authorizes. A request without a valid
    /// key is counted, not written (see `refuse_anonymous`); a key over its rate gets 429 with
    /// `Retry-After` (counted too: a flood from one key must not become a flood of audit
    /// entries); a valid key's other refusals are audited under `action` on `target`.
    pub async fn require(&self, need: Need<'_>, action: Action, target: &str) -> Result<Caller, ApiError> {
        let caller = match self.authenticate() {
            Ok(c) => c,
            Err(e) => return Err(self.refuse_anonymous(action, target, e).await),
        };
        let admission = &self.coordinator.admission;
        let buckets = if caller.role == Role::Admin { &admission.admin_keys } else { &admission.keys };
        if let Err(wait) = buckets.take(&caller.key_id, std::time::Instant::now()) {
            let reason = format!("API key {} is over its rate limit", caller.key_id);
            let refusal = Refusal {
                source: self.source_ip,
                action: Action::ApiKeyThrottled,
                target,
                reason: &reason,
                sample: false,
            };
            self.coordinator.refuse(refusal).await;
            return Err(ApiError::rate_limited(format!("too many requests with this API key; {reason}"), wait));
        }
        self.authorize(&caller, need, action, target).await?;
        if let Some(t) = &caller.tenant {
            self.meter(t);
        }
        Ok(caller)
    }

    /// Counts this request as one API call of `tenant` (the usage ledger's `api_calls`), once:
    /// a customer key's requests count for its tenant, an admin's for the tenant it acts on.
    fn meter(&self, tenant: &TenantName) {
        if !self.metered.swap(true, std::sync::atomic::Ordering::Relaxed) {
            self.coordinator.api_calls.count(tenant);
        }
    }

    /// A request without a usable key: counted for its source (one audit entry per source per
    /// window at most), answered 401/403, or 429 once the source is over its limit.
    async fn refuse_anonymous(&self, action: Action, target: &str, err: ApiError) -> ApiError {
        let refusal = Refusal { source: self.source_ip, action, target, reason: &err.message, sample: true };
        self.coordinator.refuse(refusal).await;
        match self.coordinator.admission.charge_anonymous(self.source_ip) {
            Ok(()) => err,
            Err(wait) => ApiError::rate_limited(
                format!("too many unauthenticated requests from {}; {}", self.source, err.message),
                wait,
            ),
        }
    }

    /// Checks an authenticated caller against `need`; a refusal is audited.
    pub async fn authorize(
        &self,
        caller: &Caller,
        need: Need<'_>,
        action: Action,
        target: &str,
    ) -> Result<(), ApiError> {
        let allowed = match (need, caller.role) {
            (_, Role::Admin) => true,
            (Need::AuditRead, Role::Auditor) => true,
            (Need::Tenant(t), Role::Customer) => caller.tenant.as_ref() == Some(t),
            (Need::AnyKey, _) => true,
            _ => false,
        };
        if allowed {
            if let Need::Tenant(t) = need {
                self.meter(t);
            }
            return Ok(());
        }
        let role = format!("{:?}", caller.role).to_lowercase();
        let err = ApiError::forbidden(format!("a {role} key may not {action} {target}"));
        Err(self.reject(&caller.key_id, action, target, err).await)
    }
}
