//! The error type of every [`Store`](crate::Store) method.
//!
//! Variants carry only text written by this crate (field names, ids, states), never database
//! messages: the database error is kept as the `source` of [`StoreError::Backend`], whose
//! `Display` is generic, so it can be logged with `{:#}`/`?err` but never leaks into a gRPC status.

use std::fmt;

/// What kind of record a [`StoreError::NotFound`] refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Entity {
    /// A row of `jobs`.
    Job,
    /// A row of `tasks`.
    Task,
    /// A row of `workers`.
    Worker,
    /// A policy (no checkpoint stored under that id).
    Policy,
    /// A row of `policy_samples`.
    PolicySample,
    /// A row of `api_tokens`.
    Token,
    /// A version of a job's supernet (`supernet_versions`).
    SupernetVersion,
    /// A blob of a [`BlobStore`](crate::BlobStore).
    Blob,
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Entity::Job => "job",
            Entity::Task => "task",
            Entity::Worker => "worker",
            Entity::Policy => "policy",
            Entity::PolicySample => "policy sample",
            Entity::Token => "token",
            Entity::SupernetVersion => "supernet version",
            Entity::Blob => "blob",
        })
    }
}

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The record does not exist (maps to gRPC `NOT_FOUND`).
    #[error("{what} {id} not found")]
    NotFound {
        /// Kind of record.
        what: Entity,
        /// Its id, as given by the caller.
        id: String,
    },
    /// The record exists but is in the wrong state for the operation, or a lease token is stale
    /// or foreign (maps to gRPC `FAILED_PRECONDITION`). Nothing was changed.
    #[error("{0}")]
    FailedPrecondition(String),
    /// An argument is invalid (maps to gRPC `INVALID_ARGUMENT`). Nothing was changed.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The offending field, e.g. `priority` or `tasks[3].max_attempts`.
        field: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A concurrent writer won (optimistic concurrency, e.g. a policy checkpoint version that is
    /// not latest + 1, or samples already consumed). Maps to gRPC `ABORTED`. Nothing was changed.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database failed (connection, I/O, constraint we did not expect, corrupt row). The
    /// message is deliberately generic; the cause is in `source()` for logs.
    #[error("internal storage error")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}

/// Result alias of this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    /// Builds [`StoreError::InvalidArgument`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        StoreError::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Builds [`StoreError::NotFound`].
    pub fn not_found(what: Entity, id: impl fmt::Display) -> Self {
        StoreError::NotFound {
            what,
            id: id.to_string(),
        }
    }

    /// Wraps any error as [`StoreError::Backend`].
    pub fn backend(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Backend(Box::new(err))
    }

    /// Whether this is the database being out of reach or overloaded rather than a fault: no
    /// connection free within the pool's timeout, a connection that could not be opened or
    /// broke, a closed pool. Worth retrying later or on another coordinator.
    pub fn is_unavailable(&self) -> bool {
        let StoreError::Backend(source) = self else {
            return false;
        };
        matches!(
            source.downcast_ref::<sqlx::Error>(),
            Some(
                sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::WorkerCrashed
            )
        )
    }

    /// A [`StoreError::Backend`] for a row whose content this crate cannot decode.
    pub(crate) fn corrupt(what: impl Into<String>) -> Self {
        StoreError::Backend(Box::new(CorruptRow(what.into())))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        StoreError::Backend(Box::new(err))
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        StoreError::Backend(Box::new(err))
    }
}

/// A stored value that does not decode (unknown enum text, malformed JSON, bad uuid).
#[derive(Debug, thiserror::Error)]
#[error("corrupt row: {0}")]
pub(crate) struct CorruptRow(pub(crate) String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exhausted_pool_is_unavailable_a_corrupt_row_is_not() {
        assert!(StoreError::from(sqlx::Error::PoolTimedOut).is_unavailable());
        assert!(StoreError::from(sqlx::Error::Io(std::io::Error::other("reset"))).is_unavailable());
        assert!(!StoreError::corrupt("jobs.state").is_unavailable());
        assert!(!StoreError::Conflict("v2".into()).is_unavailable());
    }

    #[test]
    fn backend_display_hides_database_text() {
        let err = StoreError::from(sqlx::Error::Protocol(
            "relation \"jobs\" does not exist".into(),
        ));
        assert_eq!(err.to_string(), "internal storage error");
        let source = std::error::Error::source(&err).map(|s| s.to_string());
        assert!(source.is_some_and(|s| s.contains("jobs")));
    }

    #[test]
    fn not_found_and_invalid_name_the_subject() {
        assert_eq!(
            StoreError::not_found(Entity::Job, "abc").to_string(),
            "job abc not found"
        );
        assert_eq!(
            StoreError::invalid("priority", "must be in -1000..=1000").to_string(),
            "invalid priority: must be in -1000..=1000"
        );
    }
}
