//! The typed documents nat-orchestrator's components exchange.
//!
//! The store keeps specs, payloads, results and event payloads as JSON, and knows none of their
//! shapes. Their shapes live here, once, for every component that writes or reads them: the
//! coordinator (which writes them), `natctl` and the dashboard (which read them), and the worker
//! side (through the proto).
//!
//! # Layout
//! - [`kinds`]: job kinds, task kinds, optimize phases, policy profiles, reward modes and event
//!   kinds as enums (their wire names in one place).
//! - [`budget`]: the training budget ([`Budget`]) and the supernet's ([`SupernetBudget`]): the
//!   presets, overrides from the wire, validation, the reward-estimate key.
//! - [`dataset`]: dataset names, the wire form of a [`DatasetShape`], what a worker reports
//!   of a dataset it has ([`DatasetInfo`]).
//! - [`spec`]: `jobs.spec` of each job kind ([`JobSpec`], [`OptimizeJobSpec`]).
//! - [`task`]: `tasks.payload` and `tasks.result` of each task kind.
//! - [`event`]: the payload of every event kind, and [`event::JobEvent`] to read one.
//! - [`result`]: `jobs.result` of an optimize job, including the driver's progress.
//! - [`verdict`]: the final evaluation's statistics (paired difference, 95 % interval) and the
//!   verdict rule.
//!
//! # Decoding
//! A document that does not decode is an error naming the field ([`DecodeError`], through
//! [`decode`]): never a silent default. Fields added after a document was first stored are
//! `#[serde(default)]` so that stored documents stay readable; that is the only use of
//! defaults.

pub mod budget;
pub mod dataset;
pub mod event;
pub mod ids;
pub mod kinds;
pub mod result;
pub mod spec;
pub mod task;
pub mod verdict;

pub use budget::{Budget, SupernetBudget, MAX_SUPERNET_SHARDS};
pub use dataset::DatasetInfo;
pub use ids::{JobId, ParseIdError, SampleId, TaskId, WorkerId};
pub use kinds::{
    Control, EvalSplit, EventKind, JobKind, Phase, Profile, RecommendedFrom, RewardKind, TaskKind,
    UnknownName, Verdict,
};
pub use nat_arch::DatasetShape;
pub use spec::{JobSpec, OptimizeJobSpec, OptimizeSettings};
pub use task::{
    supernet_version_key, PairScore, SupernetPair, SupernetPayload, SupernetResult,
    SupernetSettings, TaskResult, TrainEvalOutcome, TrainEvalPayload, TrainEvalResult,
    UploadedWeights,
};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// A value outside its bounds, or a document field that does not fit: `field` names it
/// (e.g. `budget.epochs`), `reason` says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct FieldError {
    /// The offending field, as a path (`optimize.supernet.batch_size`).
    pub field: String,
    /// Why it is invalid.
    pub reason: String,
}

impl FieldError {
    /// Builds a [`FieldError`].
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A stored document that does not have the shape its kind promises.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{document}: field `{field}`: {reason}")]
pub struct DecodeError {
    /// Which document (e.g. `train_eval payload`, `optimize result`).
    pub document: &'static str,
    /// The path of the field that did not fit (`.` for the document itself).
    pub field: String,
    /// Why.
    pub reason: String,
}

/// Reads `value` as a `T`; the error names the document and the field that did not fit.
pub fn decode<T: DeserializeOwned>(
    document: &'static str,
    value: &Value,
) -> Result<T, DecodeError> {
    serde_path_to_error::deserialize(value).map_err(|e| DecodeError {
        document,
        field: e.path().to_string(),
        reason: e.inner().to_string(),
    })
}

/// [`decode`] of an owned value (no copy).
pub fn decode_owned<T: DeserializeOwned>(
    document: &'static str,
    value: Value,
) -> Result<T, DecodeError> {
    serde_path_to_error::deserialize(value).map_err(|e| DecodeError {
        document,
        field: e.path().to_string(),
        reason: e.inner().to_string(),
    })
}

/// The JSON form of a document. Every document here serializes infallibly (no maps with
/// non-string keys); a failure is reported as a [`DecodeError`] on the document rather than a
/// panic.
pub fn encode<T: Serialize>(document: &'static str, value: &T) -> Result<Value, DecodeError> {
    serde_json::to_value(value).map_err(|e| DecodeError {
        document,
        field: ".".into(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Outer {
        #[allow(dead_code)]
        inner: Inner,
    }

    #[derive(Debug, serde::Deserialize)]
    struct Inner {
        #[allow(dead_code)]
        count: u32,
    }

    #[test]
    fn decode_errors_name_the_field() {
        let err = decode::<Outer>(
            "test document",
            &serde_json::json!({"inner": {"count": "x"}}),
        )
        .expect_err("a string is no count");
        assert_eq!(err.document, "test document");
        assert_eq!(err.field, "inner.count");
        let missing = decode::<Outer>("test document", &serde_json::json!({"inner": {}}))
            .expect_err("count is required");
        assert!(missing.reason.contains("count"), "{missing}");
    }
}
