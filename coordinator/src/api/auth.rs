//! Bearer API key and session cookie authentication, per-key rate limits and role checks. A
//! refusal of a valid key or session is written to the audit chain before the caller hears about
//! it; a request without a valid key is counted per source address (`refusals`) and costs no Raft
//! write beyond its source's one entry per window, and past the source's limit it is answered 429.
//! A signed-in user is a caller like a key: a platform admin acts as an admin key, a tenant user
//! as its tenant's customer key narrowed by its role (`user_allows`); a cookie request that
//! changes something must carry the session's CSRF token.

use super::error::ApiError;
use crate::refusals::Refusal;
use crate::server::Coordinator;
use crate::state::action::Action;
use crate::state::apikey::{split_token, Role};
use crate::state::names::TenantName;
use crate::state::tenant::TenantStatus;
use crate::state::user::{User, UserName, UserRole, UserStatus};
use crate::state::{Command, Meta, Op};
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use std::net::SocketAddr;
use std::sync::Arc;

/// An authenticated caller: an API key, or a signed-in user (`key_id` is then `user/{name}`,
/// `role` admin for a platform admin and customer for a tenant user).
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: String,
    pub role: Role,
    pub tenant: Option<TenantName>,
    pub user: Option<SessionUser>,
}

/// The user behind a session cookie, as checked against the state for this request.
#[derive(Debug, Clone)]
pub struct SessionUser {
    pub name: UserName,
    pub role: UserRole,
    pub generation: u64,
    pub claims: crate::session::Claims,
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
    /// The session cookie's value, if any.
    cookie: Option<String>,
    /// The `X-CSRF-Token` header, if any.
    csrf: Option<String>,
    /// Whether the request may change something (not GET or HEAD).
    changes: bool,
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
        let cookie = session_cookie(&parts.headers);
        let csrf =
            parts.headers.get(crate::session::CSRF_HEADER).and_then(|v| v.to_str().ok()).map(|v| v.trim().to_string());
        let changes = !matches!(parts.method, axum::http::Method::GET | axum::http::Method::HEAD);
        Ok(Ctx {
            coordinator: state.clone(),
            source,
            source_ip,
            token,
            cookie,
            csrf,
            changes,
            metered: Default::default(),
        })
    }
}

impl Ctx {
    pub fn source_ip(&self) -> Option<std::net::IpAddr> {
        self.source_ip
    }

    pub fn meta(&self, actor: &str) -> Meta {
        Meta {
            time_ms: crate::time::now_ms(),
            actor: actor.to_string(),
            source: self.source.clone(),
            key_role: None,
            user_generation: None,
        }
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
            return match &self.cookie {
                Some(cookie) => self.session_caller(cookie),
                None => Err(ApiError::unauthorized("missing API key; send Authorization: Bearer <key>")),
            };
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
                    Ok(Caller { key_id: k.id.clone(), role: k.role, tenant: k.tenant.clone(), user: None })
                }
            }
        })
    }

    /// The session keys of this cluster (derived from the cluster key; none without one).
    pub fn session_keys(&self) -> Result<crate::session::SessionKeys, ApiError> {
        let Some(cluster) = &self.coordinator.backup_key else {
            return Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "no_cluster_key",
                "this coordinator has no cluster key (backup.key), so it cannot sign or check sessions",
            ));
        };
        crate::session::SessionKeys::new(cluster).map_err(|e| ApiError::internal("session keys", e))
    }

    /// The claims of this request's session cookie, whatever its stage (none: 401).
    pub fn session_claims(&self) -> Result<crate::session::Claims, ApiError> {
        let Some(cookie) = &self.cookie else { return Err(ApiError::unauthorized("not signed in")) };
        self.session_keys()?
            .verify(cookie, crate::time::now_ms())
            .ok_or_else(|| ApiError::unauthorized("invalid or expired session; sign in again"))
    }

    /// The caller a session cookie stands for: a signed-in session of an active user whose
    /// generation is the session's (a disable or reset since ends it), in a usable tenant.
    fn session_caller(&self, _cookie: &str) -> Result<Caller, ApiError> {
        let claims = self.session_claims()?;
        if claims.stage != crate::session::Stage::SignedIn {
            return Err(ApiError::unauthorized("finish TOTP enrolment first (POST /api/v1/session/totp)"));
        }
        self.coordinator.read(|d| {
            let user = d.state.users.get(claims.user.as_str()).filter(|u| usable(u, claims.generation));
            let Some(u) = user else {
                return Err(ApiError::unauthorized("session ended (user disabled or reset); sign in again"));
            };
            if let Some(t) = u.tenant.as_ref().and_then(|t| d.state.tenants.get(t)) {
                if matches!(t.status, TenantStatus::Suspended | TenantStatus::DeletedPendingPurge) {
                    return Err(ApiError::forbidden(format!("tenant {} is {}", t.name, t.status.as_str())));
                }
            }
            let role = if u.role == UserRole::PlatformAdmin { Role::Admin } else { Role::Customer };
            Ok(Caller {
                key_id: User::actor(&u.name),
                role,
                tenant: u.tenant.clone(),
                user: Some(SessionUser {
                    name: u.name.clone(),
                    role: u.role,
                    generation: u.generation,
                    claims: claims.clone(),
                }),
            })
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
        if let Some(user) = &caller.user {
            self.check_csrf(&caller, user, target).await?;
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
    pub(super) async fn refuse_anonymous(&self, action: Action, target: &str, err: ApiError) -> ApiError {
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

    /// A cookie request that changes something must carry its session's CSRF token (a page of
    /// another site can make the browser send the cookie, never read the token); refused 403,
    /// audited.
    async fn check_csrf(&self, caller: &Caller, user: &SessionUser, target: &str) -> Result<(), ApiError> {
        if !self.changes {
            return Ok(());
        }
        let keys = self.session_keys()?;
        if self.csrf.as_deref().is_some_and(|presented| keys.csrf_matches(&user.claims, presented)) {
            return Ok(());
        }
        let err = ApiError::forbidden("missing or wrong X-CSRF-Token header for this session");
        Err(self.reject(&caller.key_id, Action::SessionCsrfRefused, target, err).await)
    }

    /// Checks an authenticated caller against `need`; a refusal is audited.
    pub async fn authorize(
        &self,
        caller: &Caller,
        need: Need<'_>,
        action: Action,
        target: &str,
    ) -> Result<(), ApiError> {
        let allowed = match (need, caller.role, &caller.user) {
            (_, _, Some(user)) => user_allows(user.role, caller.tenant.as_ref(), need, action, self.changes),
            (_, Role::Admin, None) => true,
            (Need::AuditRead, Role::Auditor, None) => true,
            (Need::Tenant(t), Role::Customer, None) => caller.tenant.as_ref() == Some(t),
            (Need::AnyKey, _, None) => true,
            _ => false,
        };
        if allowed {
            if let Need::Tenant(t) = need {
                self.meter(t);
            }
            return Ok(());
        }
        let err = match &caller.user {
            Some(u) => ApiError::forbidden(format!("a {} user may not {action} {target}", u.role.as_str())),
            None => {
                let role = format!("{:?}", caller.role).to_lowercase();
                ApiError::forbidden(format!("a {role} key may not {action} {target}"))
            }
        };
        Err(self.reject(&caller.key_id, action, target, err).await)
    }
}

/// Whether a user of `role` (in `tenant`, unless a platform admin) may do `action` under `need`:
/// a platform admin anything; a tenant user only its own tenant's routes, a member reading, an
/// admin also changing devices, device tokens, exposures and firewall rules, an owner also its
/// users, backups and invoices. Cluster-wide routes (`Need::Admin`, `AuditRead`) are platform only.
pub fn user_allows(role: UserRole, tenant: Option<&TenantName>, need: Need<'_>, action: Action, changes: bool) -> bool {
    if role == UserRole::PlatformAdmin {
        return true;
    }
    match need {
        Need::Admin | Need::AuditRead => false,
        Need::AnyKey => true,
        Need::Tenant(t) => tenant == Some(t) && role >= least_role(action, changes),
    }
}

/// The least tenant role for `action` on a tenant's route.
fn least_role(action: Action, changes: bool) -> UserRole {
    match action {
        Action::BackupRun
        | Action::BackupRestore
        | Action::InvoiceList
        | Action::InvoiceGet
        | Action::UserCreate
        | Action::UserList => UserRole::Owner,
        _ if changes => UserRole::Admin,
        _ => UserRole::Member,
    }
}

/// Whether `u` may act with a session made at `generation`.
pub fn usable(u: &User, generation: u64) -> bool {
    u.status == UserStatus::Active && u.generation == generation
}

/// The value of the `berqenas_session` cookie, if the request has one.
fn session_cookie(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == crate::session::COOKIE)
        .map(|(_, value)| value.trim().to_string())
        .filter(|v| !v.is_empty())
}
