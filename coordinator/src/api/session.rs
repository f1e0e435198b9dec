//! Panel sign-in over HTTP: `POST /api/v1/session` (password, then TOTP; a platform admin's first
//! sign-in enrols TOTP through `POST /api/v1/session/totp`, shown a QR code under the branded
//! product's name), `GET` (who is signed in), `DELETE` (sign out) and `POST
//! /api/v1/session/password` (the user's own new password; its other sessions end). The password is checked here (Argon2id, off the async threads), the code here too;
//! the lockout and a code's freshness are decided at apply so every coordinator agrees. Every
//! sign-in and every failure of an existing user is audited (never the password or code);
//! unknown users and locked ones are counted per source like other anonymous refusals.

use super::auth::{usable, Ctx, Need};
use super::dto::{
    ChangePasswordBody, EnrolStage, EnrolView, ErrorBody, SessionUserView, SessionView, SignInAnswer, SignInBody,
    SignedInStage, TotpBody,
};
use super::error::ApiError;
use super::extract::{clipped, Body};
use super::Result;
use crate::refusals::Refusal;
use crate::session::{Claims, SessionKeys, Stage, COOKIE, ENROL_MS};
use crate::state::action::Action;
use crate::state::user::{SignInFailure, User, UserName, UserOp, UserRole, UserStatus};
use crate::state::{Command, DomainError, Op};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// The one answer for an unknown user and a wrong password.
const WRONG: &str = "wrong user name or password";
/// Default session lifetime.
pub const DEFAULT_TTL: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

fn ttl_ms(ctx: &Ctx) -> u64 {
    let ttl = ctx.coordinator.session_ttl.get().copied().unwrap_or(DEFAULT_TTL);
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)
}

fn totp_required(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "totp_required", message)
}

/// `berqenas_session=…; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=…`.
fn cookie(value: &str, max_age_s: u64) -> Result<HeaderValue> {
    HeaderValue::from_str(&format!("{COOKIE}={value}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={max_age_s}"))
        .map_err(|e| ApiError::internal("session cookie", e))
}

fn with_cookie(status: StatusCode, body: impl IntoResponse, cookie: HeaderValue) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(header::SET_COOKIE, cookie);
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn session_view(keys: &SessionKeys, claims: &Claims, user: &User) -> SessionView {
    SessionView {
        stage: SignedInStage::SignedIn,
        user: SessionUserView {
            name: user.name.to_string(),
            role: user.role,
            tenant: user.tenant.as_ref().map(ToString::to_string),
        },
        csrf_token: keys.csrf(claims),
        expires_at: crate::time::rfc3339(claims.expires_ms),
    }
}

/// A signed-in session for `user` as it is after the sign-in: the answer and its cookie.
fn signed_in(ctx: &Ctx, keys: &SessionKeys, user: &User) -> Result<Response> {
    let ttl = ttl_ms(ctx);
    let claims = SessionKeys::claims(&user.name, user.generation, crate::time::now_ms(), ttl, Stage::SignedIn, None)
        .map_err(|e| ApiError::internal("session", e))?;
    let token = keys.sign(&claims).map_err(|e| ApiError::internal("session", e))?;
    let view = SignInAnswer::SignedIn(session_view(keys, &claims, user));
    Ok(with_cookie(StatusCode::OK, Json(view), cookie(&token, ttl / 1000)?))
}

/// Writes one sign-in command as the user (no key: the password was the credential).
async fn write(ctx: &Ctx, name: &UserName, op: UserOp) -> Result<std::result::Result<User, DomainError>> {
    let cmd = Command { meta: ctx.meta(&User::actor(name)), op: Op::User(op) };
    Ok(match ctx.coordinator.write(cmd).await? {
        Ok(crate::state::Reply::User(u)) => Ok(*u),
        Ok(other) => return Err(ApiError::internal("user command", format!("unexpected reply {other:?}"))),
        Err(e) => Err(e),
    })
}

/// Records a failed sign-in of an existing user (audited; counts towards its lockout) and
/// charges the source; the answer is `err`, or 429 once the source is over its limit.
async fn failed(ctx: &Ctx, name: &UserName, reason: SignInFailure, err: ApiError) -> ApiError {
    if let Err(e) = write(ctx, name, UserOp::SignInFailed { name: name.clone(), reason }).await {
        return e;
    }
    match ctx.coordinator.admission.charge_anonymous(ctx.source_ip()) {
        Ok(()) => err,
        Err(wait) => ApiError::rate_limited(format!("too many failed sign-ins from {}", ctx.source), wait),
    }
}

/// Checks `password` against `hash` off the async threads (Argon2id takes tens of milliseconds).
async fn password_matches(hash: String, password: String) -> Result<bool> {
    tokio::task::spawn_blocking(move || crate::password::verify(&hash, &password))
        .await
        .map_err(|e| ApiError::internal("password check", e))
}

#[utoipa::path(post, path = "/api/v1/session", request_body = SignInBody,
    responses(
        (status = 200, description = "signed in (cookie set), or a platform admin's first sign-in: enrol TOTP \
            (a cookie that only allows `POST /api/v1/session/totp`)", body = SignInAnswer),
        (status = 400, body = ErrorBody),
        (status = 401, description = "wrong user or password (`unauthorized`), or the TOTP code is missing or \
            wrong (`totp_required`)", body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 429, description = "the user is locked after failed sign-ins, or the source is over its limit; \
            `Retry-After` says when to retry", body = ErrorBody),
        (status = 503, description = "no cluster key to sign sessions with", body = ErrorBody)))]
pub(super) async fn sign_in(ctx: Ctx, body: Body) -> Result<Response> {
    let b: SignInBody = match super::extract::parse_body(body) {
        Ok(b) => b,
        Err(e) => return Err(ctx.refuse_anonymous(Action::UserSignIn, "session", e).await),
    };
    let keys = ctx.session_keys()?;
    let target = clipped("user", &b.username);
    let user = UserName::parse(&b.username)
        .ok()
        .and_then(|n| ctx.coordinator.read(|d| d.state.users.get(n.as_str()).cloned()));
    let Some(user) = user else {
        // As slow as a known user's check, and the same answer.
        password_matches(crate::password::dummy_hash().to_string(), b.password).await?;
        return Err(ctx.refuse_anonymous(Action::UserSignInFailed, &target, ApiError::unauthorized(WRONG)).await);
    };
    let now = crate::time::now_ms();
    if let Some(until) = user.locked_until_ms.filter(|_| user.is_locked(now)) {
        let reason = format!("user {} is locked after failed sign-ins", user.name);
        let refusal = Refusal {
            source: ctx.source_ip(),
            action: Action::UserSignInFailed,
            target: &target,
            reason: &reason,
            sample: true,
        };
        ctx.coordinator.refuse(refusal).await;
        let _ = ctx.coordinator.admission.charge_anonymous(ctx.source_ip());
        return Err(ApiError::rate_limited(
            format!("{reason}; try again later"),
            std::time::Duration::from_millis(until.saturating_sub(now)),
        ));
    }
    let matches = password_matches(user.password_hash.clone(), b.password).await?;
    if !matches {
        return Err(failed(&ctx, &user.name, SignInFailure::WrongPassword, ApiError::unauthorized(WRONG)).await);
    }
    if user.status != UserStatus::Active {
        return Err(failed(&ctx, &user.name, SignInFailure::Disabled, ApiError::unauthorized(WRONG)).await);
    }
    let step = match (&user.totp, b.totp.as_deref()) {
        (Some(_), None) => return Err(totp_required("this user signs in with a TOTP code: send `totp`")),
        (Some(sealed), Some(code)) => {
            let secret = keys.open_totp_secret(&user.name, sealed).ok_or_else(|| {
                ApiError::internal("totp secret", "the stored secret does not open under this cluster key")
            })?;
            match crate::totp::verify(&secret, code, now) {
                None => {
                    let err = totp_required("wrong TOTP code");
                    return Err(failed(&ctx, &user.name, SignInFailure::WrongTotp, err).await);
                }
                Some(step) if user.last_totp_step.is_some_and(|last| step <= last) => {
                    let err = totp_required("this TOTP code was already used; wait for the next one");
                    return Err(failed(&ctx, &user.name, SignInFailure::ReplayedTotp, err).await);
                }
                Some(step) => Some(step),
            }
        }
        (None, _) if user.role == UserRole::PlatformAdmin => return enrol(&ctx, &keys, &user),
        (None, _) => None,
    };
    let op = UserOp::SignIn { name: user.name.clone(), generation: user.generation, totp_step: step };
    match write(&ctx, &user.name, op).await? {
        Ok(u) => signed_in(&ctx, &keys, &u),
        Err(DomainError::Exhausted(m)) => Err(ApiError::rate_limited(m, std::time::Duration::from_secs(60))),
        Err(DomainError::Conflict(m)) if m.contains("TOTP") => Err(totp_required(&m)),
        Err(_) => Err(ApiError::unauthorized(WRONG)),
    }
}

/// A platform admin without TOTP: a new secret, sealed into an enrolment-only session. The
/// authenticator lists it under the panel's product name (white label: the brand, not ours).
fn enrol(ctx: &Ctx, keys: &SessionKeys, user: &User) -> Result<Response> {
    let (secret, sealed) = keys.new_totp_secret(&user.name).map_err(|e| ApiError::internal("totp secret", e))?;
    let issuer = ctx
        .coordinator
        .branding
        .get()
        .map_or(crate::branding::DEFAULT_PRODUCT, |b| b.product_name.as_str())
        .to_string();
    let otpauth_uri = crate::totp::otpauth_uri(&issuer, user.name.as_str(), &secret);
    let otpauth_qr_svg = crate::qr::svg(&otpauth_uri).map_err(|e| ApiError::internal("totp qr code", e))?;
    let now = crate::time::now_ms();
    let claims = SessionKeys::claims(&user.name, user.generation, now, ENROL_MS, Stage::EnrolTotp, Some(sealed))
        .map_err(|e| ApiError::internal("session", e))?;
    let token = keys.sign(&claims).map_err(|e| ApiError::internal("session", e))?;
    let view = SignInAnswer::EnrolTotp(EnrolView {
        stage: EnrolStage::EnrolTotp,
        totp_secret: crate::totp::base32(&secret),
        otpauth_uri,
        otpauth_qr_svg,
    });
    Ok(with_cookie(StatusCode::OK, Json(view), cookie(&token, ENROL_MS / 1000)?))
}

#[utoipa::path(post, path = "/api/v1/session/totp", request_body = TotpBody,
    responses(
        (status = 200, description = "TOTP enrolled and signed in (cookie set)", body = SessionView),
        (status = 400, body = ErrorBody),
        (status = 401, description = "no enrolment session, or a wrong code (nothing changes)", body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub(super) async fn enrol_totp(ctx: Ctx, body: Body) -> Result<Response> {
    let claims = match ctx.session_claims() {
        Ok(c) if c.stage == Stage::EnrolTotp => c,
        Ok(_) => return Err(ApiError::unauthorized("no TOTP enrolment in progress for this session")),
        Err(e) => return Err(ctx.refuse_anonymous(Action::UserTotpEnrol, "session/totp", e).await),
    };
    let target = format!("user/{}", claims.user);
    let b: TotpBody = match super::extract::parse_body(body) {
        Ok(b) => b,
        Err(e) => return Err(ctx.refuse_anonymous(Action::UserTotpEnrol, &target, e).await),
    };
    let keys = ctx.session_keys()?;
    let user = ctx.coordinator.read(|d| d.state.users.get(claims.user.as_str()).cloned());
    let (Some(user), Some(sealed)) = (user.filter(|u| usable(u, claims.generation) && u.totp.is_none()), &claims.enrol)
    else {
        return Err(ApiError::unauthorized("this enrolment ended (user changed); sign in again"));
    };
    let secret = keys
        .open_totp_secret(&user.name, sealed)
        .ok_or_else(|| ApiError::unauthorized("this enrolment session does not belong to this user"))?;
    let Some(step) = crate::totp::verify(&secret, &b.code, crate::time::now_ms()) else {
        let err = ApiError::unauthorized("wrong TOTP code; nothing was enrolled");
        return Err(ctx.refuse_anonymous(Action::UserTotpEnrol, &target, err).await);
    };
    let op = UserOp::EnrolTotp { name: user.name.clone(), generation: user.generation, secret: sealed.clone(), step };
    match write(&ctx, &user.name, op).await? {
        Ok(u) => signed_in(&ctx, &keys, &u),
        Err(DomainError::Exhausted(m)) => Err(ApiError::rate_limited(m, std::time::Duration::from_secs(60))),
        Err(e) => Err(ApiError::unauthorized(format!("enrolment refused: {e}"))),
    }
}

#[utoipa::path(get, path = "/api/v1/session",
    responses((status = 200, body = SessionView), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn current_session(ctx: Ctx) -> Result<Json<SessionView>> {
    let claims = ctx.session_claims()?;
    if claims.stage != Stage::SignedIn {
        return Err(ApiError::unauthorized("finish TOTP enrolment first"));
    }
    let keys = ctx.session_keys()?;
    let user = ctx.coordinator.read(|d| d.state.users.get(claims.user.as_str()).cloned());
    match user.filter(|u| usable(u, claims.generation)) {
        Some(u) => Ok(Json(session_view(&keys, &claims, &u))),
        None => Err(ApiError::unauthorized("session ended (user disabled or reset); sign in again")),
    }
}

#[utoipa::path(delete, path = "/api/v1/session",
    responses(
        (status = 204, description = "signed out: every session of this user ends, the cookie is cleared"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "missing or wrong `X-CSRF-Token`, or an API key (no session to end)", body = ErrorBody),
        (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("session" = [])))]
pub(super) async fn sign_out(ctx: Ctx) -> Result<Response> {
    let scope = ctx.scope(Need::AnyKey, Action::UserSignOut, "session").await?;
    let Some(user) = &scope.caller.user else {
        return Err(scope
            .refuse(ApiError::forbidden("sign-out is for session cookies; an API key has no session"))
            .await);
    };
    write(&ctx, &user.name, UserOp::SignOut { name: user.name.clone() }).await??;
    Ok(with_cookie(StatusCode::NO_CONTENT, (), cookie("", 0)?))
}

/// The answer to a wrong current password: nothing changed (403, not 401: the session is fine).
const WRONG_CURRENT: &str = "the current password is wrong; nothing changed";

#[utoipa::path(post, path = "/api/v1/session/password", request_body = ChangePasswordBody,
    responses(
        (status = 200, description = "password changed: every other session of this user ends; this one goes on \
            under a new cookie and CSRF token (answered here)", body = SessionView),
        (status = 400, description = "the body is malformed, or the new password does not meet the policy or is \
            the current one (nothing changes)", body = ErrorBody),
        (status = 401, description = "not signed in, or the session ended", body = ErrorBody),
        (status = 403, description = "missing or wrong `X-CSRF-Token`, an API key (no user to change), or a \
            wrong current password (`wrong_password`; nothing changes; it counts as a failed sign-in \
            towards the lockout)", body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 429, description = "the user is locked after failed sign-ins (also wrong current passwords), \
            or the source is over its limit", body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("session" = [])))]
pub(super) async fn change_password(ctx: Ctx, body: Body) -> Result<Response> {
    let scope = ctx.scope(Need::AnyKey, Action::UserChangePassword, "session/password").await?;
    let b = scope.raw_body::<ChangePasswordBody>(body).await?;
    let Some(caller) = &scope.caller.user else {
        return Err(scope
            .refuse(ApiError::forbidden("a password change is for signed-in users; an API key has no password"))
            .await);
    };
    let user = ctx.coordinator.read(|d| d.state.users.get(caller.name.as_str()).cloned());
    let Some(user) = user.filter(|u| usable(u, caller.generation)) else {
        return Err(ApiError::unauthorized("session ended (user disabled or reset); sign in again"));
    };
    // A stolen cookie must not be a way around the lockout: a locked user changes nothing, and a
    // wrong current password counts as a failed sign-in (audited as one, towards the lockout).
    let now = crate::time::now_ms();
    if let Some(until) = user.locked_until_ms.filter(|_| user.is_locked(now)) {
        let err = ApiError::rate_limited(
            format!("user {} is locked after failed sign-ins; try again later", user.name),
            std::time::Duration::from_millis(until.saturating_sub(now)),
        );
        return Err(scope.refuse(err).await);
    }
    if !password_matches(user.password_hash.clone(), b.current_password.clone()).await? {
        let err = ApiError::new(StatusCode::FORBIDDEN, "wrong_password", WRONG_CURRENT);
        return Err(failed(&ctx, &user.name, SignInFailure::WrongPassword, err).await);
    }
    let weak = crate::password::policy(&b.new_password, user.name.as_str());
    scope.check(weak.map_err(|e| ApiError::invalid(format!("{e}; nothing changed")))).await?;
    if b.new_password == b.current_password {
        return Err(scope.refuse(ApiError::invalid("the new password is the current one; nothing changed")).await);
    }
    let password = b.new_password;
    let password_hash = tokio::task::spawn_blocking(move || crate::password::hash(&password))
        .await
        .map_err(|e| ApiError::internal("password", e))?
        .map_err(|e| ApiError::internal("password", e))?;
    let keys = ctx.session_keys()?;
    let op = UserOp::ChangePassword { name: user.name.clone(), password_hash };
    match scope.run(Op::User(op)).await? {
        crate::state::Reply::User(u) => signed_in(&ctx, &keys, &u),
        other => Err(ApiError::internal("user command", format!("unexpected reply {other:?}"))),
    }
}
