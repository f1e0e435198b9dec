//! The one mapping from domain, write and read errors to gRPC statuses, as `api/error.rs` is for
//! HTTP. Exhaustive: a new `DomainError` variant is a compile error until it has its code.
//! Internal error text (Raft, signing, the CA) is logged, never sent to the caller.

use crate::server::{ReadError, WriteError};
use crate::state::DomainError;
use tonic::Status;

/// An internal failure: logged with its cause; the caller learns only what failed.
pub fn internal(context: &str, err: impl std::fmt::Display) -> Status {
    tracing::error!(error = %err, "{context}");
    Status::internal(format!("{context} failed; see the coordinator log"))
}

impl From<DomainError> for Status {
    fn from(e: DomainError) -> Self {
        let message = e.to_string();
        match e {
            DomainError::NotFound(_) => Status::not_found(message),
            DomainError::Conflict(_) => Status::failed_precondition(message),
            DomainError::Invalid(_) | DomainError::InvalidTenant(_) => Status::invalid_argument(message),
            DomainError::Forbidden(_) | DomainError::UserForbidden(_) | DomainError::Rejected(_) => {
                Status::permission_denied(message)
            }
            DomainError::Exhausted(_) => Status::resource_exhausted(message),
            DomainError::Uninitialized => Status::unavailable(message),
        }
    }
}

impl From<WriteError> for Status {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::NoLeader | WriteError::Unsettled => Status::unavailable(e.to_string()),
            WriteError::OlderRelease { .. } => Status::failed_precondition(e.to_string()),
            WriteError::Raft(inner) => internal("raft write", inner),
        }
    }
}

impl From<ReadError> for Status {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::NoLeader => Status::unavailable(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::apikey::KeyRefused;
    use tonic::Code;

    #[test]
    fn domain_errors_map_to_their_codes() {
        let cases = [
            (DomainError::NotFound("x".into()), Code::NotFound),
            (DomainError::Conflict("x".into()), Code::FailedPrecondition),
            (DomainError::Invalid("x".into()), Code::InvalidArgument),
            (DomainError::Forbidden(KeyRefused::Missing("x".into())), Code::PermissionDenied),
            (DomainError::Rejected("x".into()), Code::PermissionDenied),
            (DomainError::Exhausted("x".into()), Code::ResourceExhausted),
            (DomainError::Uninitialized, Code::Unavailable),
        ];
        for (e, code) in cases {
            assert_eq!(Status::from(e).code(), code);
        }
    }

    #[test]
    fn internal_text_is_never_sent() {
        let status = Status::from(WriteError::Raft("storage at /var/lib/secret failed".into()));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("/var/lib/secret"), "{}", status.message());
    }
}
