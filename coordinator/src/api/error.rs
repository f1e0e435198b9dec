//! The one mapping from domain, write and read errors to HTTP statuses and JSON error bodies.
//! Internal error text is logged, never sent.

use super::dto::ErrorBody;
use crate::server::{ReadError, WriteError};
use crate::state::DomainError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub leader: Option<String>,
    /// Seconds to wait before retrying (429 answers carry it as `Retry-After`).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), leader: None, retry_after: None }
    }

    /// 429 with `Retry-After` (whole seconds, at least 1).
    pub fn rate_limited(message: impl Into<String>, wait: std::time::Duration) -> Self {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Self { retry_after: Some(secs.max(1)), ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message) }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_input", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn not_leader(leader_api: Option<String>) -> Self {
        Self {
            status: StatusCode::MISDIRECTED_REQUEST,
            code: "not_leader",
            message: "this coordinator is not the leader; send the request to the leader".into(),
            leader: leader_api,
            retry_after: None,
        }
    }

    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "{context}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("{context} failed; see the coordinator log"))
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        let message = e.to_string();
        match e {
            DomainError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "not_found", message),
            DomainError::Conflict(_) => Self::new(StatusCode::CONFLICT, "conflict", message),
            DomainError::Forbidden(_) | DomainError::UserForbidden(_) => Self::forbidden(message),
            DomainError::Invalid(_) | DomainError::InvalidTenant(_) | DomainError::Rejected(_) => {
                Self::invalid(message)
            }
            DomainError::Exhausted(_) => Self::new(StatusCode::TOO_MANY_REQUESTS, "quota_exhausted", message),
            DomainError::Uninitialized => Self::new(StatusCode::SERVICE_UNAVAILABLE, "uninitialized", message),
        }
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::NoLeader => Self::new(StatusCode::SERVICE_UNAVAILABLE, "no_leader", e.to_string()),
            WriteError::Unsettled => Self::new(StatusCode::SERVICE_UNAVAILABLE, "unsettled", e.to_string()),
            WriteError::OlderRelease { .. } => Self::new(StatusCode::CONFLICT, "older_release", e.to_string()),
            WriteError::Raft(inner) => Self::internal("raft write", inner),
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "no_leader", e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: self.code.to_string(), message: self.message, leader: self.leader };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
        }
        response
    }
}
