//! The crate's error type.

/// Everything that can go wrong in the policy crate. Input errors name the offending field.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// An input value is out of range or inconsistent; `field` names it
    /// (for example `input.normal.nodes[1].inputs[0].op`).
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// Dotted path of the offending field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A serialized policy could not be decoded.
    #[error("corrupt policy checkpoint: {0}")]
    Corrupt(String),
    /// The tensor library failed (shape bugs, allocation failure).
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
    /// The checkpoint header could not be encoded or decoded.
    #[error("checkpoint header: {0}")]
    Header(#[from] serde_json::Error),
}

impl PolicyError {
    /// Shorthand for [`PolicyError::InvalidInput`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        PolicyError::InvalidInput {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Result alias of the crate.
pub type Result<T, E = PolicyError> = std::result::Result<T, E>;
