//! Reward estimates, policy checkpoints and policy samples (re-exported by [`types`](super)).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{JobId, SampleId, TaskId};

/// Key of a reward estimate: the same architecture trained the same way on the same data.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RewardKey {
    /// Canonical architecture hash (from the architecture crate).
    pub arch_hash: String,
    /// Dataset name.
    pub dataset: String,
    /// Training budget key (budget preset and overrides, canonicalised by the caller).
    pub budget: String,
}

/// One measured value for a [`RewardKey`] (e.g. a top-1 accuracy).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardObservation {
    /// The key.
    pub key: RewardKey,
    /// The value; must be finite.
    pub value: f64,
}

/// Running statistics for a [`RewardKey`] (Welford's online algorithm).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RewardEstimate {
    /// The key.
    pub key: RewardKey,
    /// Number of observations.
    pub count: u64,
    /// Mean of the observations.
    pub mean: f64,
    /// Sum of squared deviations from the mean.
    pub m2: f64,
    /// Last update.
    pub updated_at: DateTime<Utc>,
}

impl RewardEstimate {
    /// Unbiased sample variance (`None` with fewer than two observations).
    pub fn sample_variance(&self) -> Option<f64> {
        (self.count >= 2).then(|| self.m2 / (self.count - 1) as f64)
    }

    /// Population variance (`None` with no observation).
    pub fn population_variance(&self) -> Option<f64> {
        (self.count >= 1).then(|| self.m2 / self.count as f64)
    }
}

/// A policy checkpoint to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCheckpoint {
    /// Policy id (non-empty), stable across versions.
    pub policy_id: String,
    /// Version; must be the latest stored version + 1 (1 for a new policy).
    pub version: i64,
    /// Search space, e.g. `nat` or `nat++`.
    pub space: String,
    /// Serialized parameters.
    pub params: Vec<u8>,
    /// Serialized optimizer state.
    pub optimizer_state: Vec<u8>,
    /// Reward baseline.
    pub baseline: f64,
    /// The job that produced this version, if any.
    pub source_job: Option<JobId>,
    /// Free-form metadata (profile, hyper-parameters, counters such as rewards learned from).
    pub meta: Value,
    /// The coordinator leadership term ([`crate::Leadership::epoch`]) this update is written in.
    /// When set, the update is refused with `FailedPrecondition` unless that term is still the
    /// current one: a deposed leader cannot move a policy. `None` for writes outside any term
    /// (a policy's first version, a manual save).
    pub leader_epoch: Option<i64>,
}

/// A stored policy checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyCheckpoint {
    /// Policy id.
    pub policy_id: String,
    /// Version.
    pub version: i64,
    /// Search space.
    pub space: String,
    /// Serialized parameters.
    pub params: Vec<u8>,
    /// Serialized optimizer state.
    pub optimizer_state: Vec<u8>,
    /// Reward baseline.
    pub baseline: f64,
    /// The job that produced this version.
    pub source_job: Option<JobId>,
    /// Metadata.
    pub meta: Value,
    /// The leadership term the version was written in (see [`NewCheckpoint::leader_epoch`]).
    pub leader_epoch: Option<i64>,
    /// When this version was stored.
    pub created_at: DateTime<Utc>,
}

/// Summary of a policy (its latest version), for listings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicySummary {
    /// Policy id.
    pub policy_id: String,
    /// Latest version.
    pub version: i64,
    /// Search space.
    pub space: String,
    /// Job that produced the latest version.
    pub source_job: Option<JobId>,
    /// Samples consumed by updates of this policy (all versions).
    pub rewards_consumed: u64,
    /// When the latest version was stored.
    pub updated_at: DateTime<Utc>,
}

/// A transformation sampled from a policy, to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPolicySample {
    /// The job it belongs to.
    pub job_id: JobId,
    /// The policy it was drawn from.
    pub policy_id: String,
    /// The policy version it was drawn with.
    pub policy_version: i64,
    /// Log-probability of the sample under that version (finite).
    pub log_prob: f64,
    /// Entropy of the distribution it was drawn from (finite).
    pub entropy: f64,
    /// Input genotype (canonical JSON).
    pub input: Value,
    /// Output genotype (canonical JSON).
    pub output: Value,
    /// The task that scores it, if already known.
    pub task_id: Option<TaskId>,
}

/// A stored policy sample.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicySample {
    /// Id (increasing in insertion order).
    pub id: SampleId,
    /// The job.
    pub job_id: JobId,
    /// The policy.
    pub policy_id: String,
    /// Version drawn with.
    pub policy_version: i64,
    /// Log-probability under that version.
    pub log_prob: f64,
    /// Entropy.
    pub entropy: f64,
    /// Input genotype.
    pub input: Value,
    /// Output genotype.
    pub output: Value,
    /// The scoring task.
    pub task_id: Option<TaskId>,
    /// Reward, once known.
    pub reward: Option<f64>,
    /// The policy version whose update consumed this sample.
    pub consumed_in_version: Option<i64>,
    /// True when the sample was consumed without being used (too stale).
    pub dropped: bool,
    /// Insertion time.
    pub created_at: DateTime<Utc>,
}

/// A reward for a stored policy sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SampleReward {
    /// The sample.
    pub sample_id: SampleId,
    /// The reward (finite).
    pub reward: f64,
}
