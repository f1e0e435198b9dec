//! Bearer API key authentication and role checks. Every refusal is written to the audit chain
//! before the caller hears about it.

use super::error::ApiError;
use crate::server::Coordinator;
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
    token: Option<String>,
}

impl FromRequestParts<Arc<Coordinator>> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<Coordinator>) -> Result<Self, Self::Rejection> {
        let source = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ci| ci.0.ip().to_string())
            .unwrap_or_else(|| "unknown".into());
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim().to_string());
        Ok(Ctx { coordinator: state.clone(), source, token })
    }
}

impl Ctx {
    pub fn meta(&self, actor: &str) -> Meta {
        Meta { time_ms: crate::time::now_ms(), actor: actor.to_string(), source: self.source.clone(), key_role: None }
    }

    /// Writes an audit entry for a refused request and returns the refusal.
    pub async fn reject(&self, actor: &str, action: &str, target: &str, err: ApiError) -> ApiError {
        let op = Op::Rejected { action: action.into(), target: target.into(), reason: err.message.clone() };
        let cmd = Command { meta: self.meta(actor), op };
        if let Err(e) = self.coordinator.write(cmd).await {
            tracing::warn!(error = %e, action, "could not audit a refused request");
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

    /// Authenticates and authorizes; refusals are audited under `action` on `target`.
    pub async fn require(&self, need: Need<'_>, action: &str, target: &str) -> Result<Caller, ApiError> {
        let caller = match self.authenticate() {
            Ok(c) => c,
            Err(e) => return Err(self.reject("anonymous", action, target, e).await),
        };
        self.authorize(&caller, need, action, target).await?;
        Ok(caller)
    }

    /// Checks an authenticated caller against `need`; a refusal is audited.
    pub async fn authorize(&self, caller: &Caller, need: Need<'_>, action: &str, target: &str) -> Result<(), ApiError> {
        let allowed = match (need, caller.role) {
            (_, Role::Admin) => true,
            (Need::AuditRead, Role::Auditor) => true,
            (Need::Tenant(t), Role::Customer) => caller.tenant.as_ref() == Some(t),
            (Need::AnyKey, _) => true,
            _ => false,
        };
        if allowed {
            return Ok(());
        }
        let role = format!("{:?}", caller.role).to_lowercase();
        let err = ApiError::forbidden(format!("a {role} key may not {action} {target}"));
        Err(self.reject(&caller.key_id, action, target, err).await)
    }
}
