//! Request extraction, written once: authenticate (`Ctx::scope`), then parse the body, query or path
//! → validate it into domain types → on failure write the refusal to the audit trail and answer a
//! JSON 4xx. Handlers receive typed, validated input or return an audited refusal; none of them
//! repeats the ladder. Extractor failures arrive here as values (`Body`, `QueryOf`, `PathOf`), so
//! even a malformed query is refused after authentication, audited, and in JSON.

use super::auth::{Caller, Ctx, Need};
use super::error::ApiError;
use super::{Result, MAX_BODY_BYTES};
use crate::state::action::Action;
use crate::state::names::TenantName;
use crate::state::{Command, Op, Reply};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

/// A request body as axum hands it over.
pub type Body = std::result::Result<Bytes, BytesRejection>;
/// A query string as axum parsed it.
pub type QueryOf<T> = std::result::Result<Query<T>, QueryRejection>;
/// Path parameters as axum parsed them.
pub type PathOf<T> = std::result::Result<Path<T>, PathRejection>;

/// A wire type checked into what a handler acts on; the error is the refusal (400 unless said).
pub trait Validate: Sized {
    type Valid;
    fn validate(self) -> std::result::Result<Self::Valid, ApiError>;
}

/// One authenticated request: who acts, and what the audit trail calls the action and its target.
pub struct Scope<'a> {
    pub ctx: &'a Ctx,
    pub caller: Caller,
    pub action: Action,
    pub target: String,
}

/// An audit target for user-typed text: bounded and escaped.
pub fn clipped(kind: &str, raw: &str) -> String {
    let clipped: String = raw.chars().take(64).collect();
    format!("{kind}/{}", clipped.escape_debug())
}

impl Ctx {
    /// Authenticates, rate-limits and authorizes (`Ctx::require`), and opens the request's scope.
    pub async fn scope(&self, need: Need<'_>, action: Action, target: impl Into<String>) -> Result<Scope<'_>> {
        let target = target.into();
        let caller = self.require(need, action, &target).await?;
        Ok(Scope { ctx: self, caller, action, target })
    }
}

impl Scope<'_> {
    pub fn actor(&self) -> &str {
        &self.caller.key_id
    }

    /// Audits `err` as a refusal of this request and returns it.
    pub async fn refuse(&self, err: ApiError) -> ApiError {
        self.ctx.reject(&self.caller.key_id, self.action, &self.target, err).await
    }

    /// `Ok` passes; an error is audited as a refusal.
    pub async fn check<T>(&self, checked: std::result::Result<T, ApiError>) -> Result<T> {
        match checked {
            Ok(v) => Ok(v),
            Err(e) => Err(self.refuse(e).await),
        }
    }

    /// Checks the caller against a further need (e.g. its own tenant); a refusal is audited.
    pub async fn authorize(&self, need: Need<'_>) -> Result<()> {
        self.ctx.authorize(&self.caller, need, self.action, &self.target).await
    }

    /// A JSON body, parsed strictly and validated.
    pub async fn body<T: DeserializeOwned + Validate>(&self, body: Body) -> Result<T::Valid> {
        self.check(parse_body::<T>(body).and_then(T::validate)).await
    }

    /// A JSON body, parsed strictly (its checks need the state; see `check`).
    pub async fn raw_body<T: DeserializeOwned>(&self, body: Body) -> Result<T> {
        self.check(parse_body(body)).await
    }

    /// A query string, parsed.
    pub async fn query<T>(&self, query: QueryOf<T>) -> Result<T> {
        self.check(query.map(|Query(q)| q).map_err(|e| ApiError::invalid(format!("invalid query: {}", e.body_text()))))
            .await
    }

    /// A tenant name from the path or query.
    pub async fn tenant(&self, raw: &str) -> Result<TenantName> {
        self.check(TenantName::parse(raw).map_err(|e| ApiError::invalid(e.to_string()))).await
    }

    /// Runs a command through Raft as the caller and maps the domain result.
    pub async fn run(&self, op: Op) -> Result<Reply> {
        Ok(self.command(op).await??)
    }

    /// Runs a command through Raft as the caller; the domain result is the handler's to map.
    pub async fn command(&self, op: Op) -> Result<crate::state::Response> {
        let mut meta = self.ctx.meta(&self.caller.key_id);
        // The role the caller's key was authenticated with (roles never change); the state machine
        // re-checks the key when the command is applied, on the leader's log position.
        meta.key_role = self.ctx.coordinator.read(|d| d.state.api_keys.get(&self.caller.key_id).map(|k| k.role));
        // A signed-in user: the state machine re-checks the user and its session's generation.
        if let Some(user) = &self.caller.user {
            meta.key_role = None;
            meta.user_generation = Some(user.generation);
        }
        Ok(self.ctx.coordinator.write(Command { meta, op }).await?)
    }
}

/// Path parameters as text, or a JSON 400 (only a path that is not UTF-8 fails here; it is
/// refused before anyone is authenticated and names nothing that exists, so it is not audited).
pub fn path<T>(path: PathOf<T>) -> Result<T> {
    path.map(|Path(p)| p).map_err(|e| ApiError::invalid(format!("invalid path: {}", e.body_text())))
}

pub(super) fn parse_body<T: DeserializeOwned>(body: Body) -> std::result::Result<T, ApiError> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request body is larger than {MAX_BODY_BYTES} bytes"),
            )
        } else {
            ApiError::invalid(format!("unreadable request body: {}", rejection.body_text()))
        }
    })?;
    let invalid = |e: serde_json::Error| ApiError::invalid(format!("invalid JSON body: {e}"));
    let mut value: serde_json::Value = serde_json::from_slice(&bytes).map_err(invalid)?;
    // Every body is an object: serde would also read a struct from an array of its fields.
    if !value.is_object() {
        return Err(ApiError::invalid("invalid JSON body: expected an object"));
    }
    integral_numbers(&mut value);
    serde_json::from_value(value).map_err(invalid)
}

/// JSON Schema counts `274.0` as the integer 274; so do the handlers.
fn integral_numbers(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Number(n) if n.is_f64() => {
            let whole = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15);
            // Below 2^53 every whole f64 converts exactly.
            #[allow(clippy::cast_possible_truncation)]
            if let Some(f) = whole {
                *v = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_numbers),
        Value::Object(map) => map.values_mut().for_each(integral_numbers),
        _ => {}
    }
}
