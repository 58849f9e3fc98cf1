//! Errors of the gRPC services and their mapping to `tonic::Status`.
//!
//! Statuses carry only text written by the coordinator or the store's own messages (field names,
//! ids, states). Database errors become `INTERNAL` with a generic message; the cause is logged.

use nat_store::StoreError;
use tonic::{Code, Status};

/// An error answered to a client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Bad input (`INVALID_ARGUMENT`); `field` names it, e.g. `architectures[2]`.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The offending field.
        field: String,
        /// Why it is invalid.
        reason: String,
    },
    /// Unknown id (`NOT_FOUND`).
    #[error("{0}")]
    NotFound(String),
    /// Wrong state or stale lease (`FAILED_PRECONDITION`).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A concurrent change won (`ABORTED`); retry.
    #[error("{0}")]
    Aborted(String),
    /// A feature this coordinator does not offer (`UNIMPLEMENTED`).
    #[error("{0}")]
    Unimplemented(String),
    /// The coordinator is shutting down (`UNAVAILABLE`).
    #[error("{0}")]
    Unavailable(String),
    /// No valid credential (`UNAUTHENTICATED`).
    #[error("{0}")]
    Unauthenticated(String),
    /// The credential may not do this (`PERMISSION_DENIED`).
    #[error("{0}")]
    PermissionDenied(String),
    /// Storage failed (`INTERNAL`); the cause is logged, never sent.
    #[error("internal error")]
    Internal(#[source] StoreError),
}

impl ApiError {
    /// Builds [`ApiError::InvalidArgument`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ApiError::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound { .. } => ApiError::NotFound(err.to_string()),
            StoreError::FailedPrecondition(msg) => ApiError::FailedPrecondition(msg),
            StoreError::InvalidArgument { field, reason } => {
                ApiError::InvalidArgument { field, reason }
            }
            StoreError::Conflict(msg) => ApiError::Aborted(msg),
            // Overload or a lost database: the client should retry (or fail over), not give up.
            other @ StoreError::Backend(_) if other.is_unavailable() => {
                tracing::debug!(error = ?other, "the database is unavailable");
                ApiError::Unavailable(
                    "the database is overloaded or unreachable; retry later or on another coordinator"
                        .into(),
                )
            }
            other @ StoreError::Backend(_) => ApiError::Internal(other),
        }
    }
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
        match err {
            ApiError::InvalidArgument { .. } => Status::invalid_argument(err.to_string()),
            ApiError::NotFound(msg) => Status::not_found(msg),
            ApiError::FailedPrecondition(msg) => Status::failed_precondition(msg),
            ApiError::Aborted(msg) => Status::new(Code::Aborted, msg),
            ApiError::Unimplemented(msg) => Status::unimplemented(msg),
            ApiError::Unavailable(msg) => Status::unavailable(msg),
            ApiError::Unauthenticated(msg) => Status::unauthenticated(msg),
            ApiError::PermissionDenied(msg) => Status::permission_denied(msg),
            ApiError::Internal(cause) => {
                tracing::error!(error = ?cause, "storage error");
                Status::internal("internal storage error")
            }
        }
    }
}

impl From<nat_schema::FieldError> for ApiError {
    fn from(e: nat_schema::FieldError) -> Self {
        ApiError::InvalidArgument {
            field: e.field,
            reason: e.reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_codes_without_database_text() {
        let status: Status = ApiError::from(StoreError::backend(std::io::Error::other(
            "relation \"tasks\" does not exist",
        )))
        .into();
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("tasks"));

        let status: Status =
            ApiError::from(StoreError::not_found(nat_store::Entity::Job, "abc")).into();
        assert_eq!(status.code(), Code::NotFound);
        assert!(status.message().contains("abc"));

        let status: Status = ApiError::from(StoreError::invalid("priority", "too high")).into();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("priority"));

        let status: Status =
            ApiError::from(StoreError::FailedPrecondition("stale token".into())).into();
        assert_eq!(status.code(), Code::FailedPrecondition);
    }
}
