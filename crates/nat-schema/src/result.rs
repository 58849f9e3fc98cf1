//! `jobs.result` of an optimize job: written by its driver while it runs (the summary and the
//! driver's progress) and when it finishes (original vs best per input). `GetJobResult`,
//! natctl and the dashboard read it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Phase, SampleId};

/// `jobs.result` of an optimize job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OptimizeResult {
    /// The running summary.
    pub summary: Summary,
    /// Original vs best per input (empty until the final check is done).
    #[serde(default)]
    pub optimize: Vec<OptimizeOutcome>,
    /// The policy the job trained or used.
    #[serde(default)]
    pub policy: Option<PolicyRef>,
    /// Rewards the policy learned from.
    #[serde(default)]
    pub rewards: u64,
    /// The driver's progress (what a restarted coordinator resumes from).
    #[serde(default)]
    pub driver: DriverProgress,
}

/// `result.summary` of an optimize job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Best accuracy of the final check, once known.
    #[serde(default)]
    pub best_accuracy: Option<f64>,
    /// Best reward seen while learning.
    #[serde(default)]
    pub best_reward: Option<f64>,
    /// Latest policy version.
    #[serde(default)]
    pub policy_version: i64,
    /// Learning rounds done.
    #[serde(default)]
    pub iterations_done: u32,
    /// Learning rounds planned.
    #[serde(default)]
    pub iterations_total: u32,
}

/// A policy and one of its versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRef {
    /// The policy's id.
    pub id: String,
    /// The version.
    pub version: i64,
}

/// One architecture as measured by the final check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchMeasurement {
    /// The genotype (its JSON object).
    pub genotype: Value,
    /// Its DARTS string.
    #[serde(default)]
    pub genotype_darts: String,
    /// Its canonical hash.
    #[serde(default)]
    pub canonical_hash: String,
    /// Top-1 accuracy.
    pub accuracy: f64,
    /// Parameters.
    pub params: u64,
    /// Multiply-adds.
    pub madds: u64,
}

/// Original and best architecture of one input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizeOutcome {
    /// Index into `spec.architectures`.
    pub input_index: u32,
    /// The input as measured.
    pub original: ArchMeasurement,
    /// The best transformation as measured.
    pub best: ArchMeasurement,
    /// The edges whose operation changed, as text.
    #[serde(default)]
    pub changed_edges: Vec<String>,
}

/// The driver's progress, stored under `driver`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DriverProgress {
    /// The phase; `None` before the driver first ran.
    #[serde(default)]
    pub phase: Option<Phase>,
    /// Learning rounds completed.
    #[serde(default)]
    pub iteration: u32,
    /// Rewards recorded (and consumed by policy steps).
    #[serde(default)]
    pub rewards: u64,
    /// Samples of the current round, waiting for their rewards.
    #[serde(default)]
    pub pending: Vec<PendingSample>,
    /// Per input: the derived candidates (canonical JSON).
    #[serde(default)]
    pub candidates: Vec<Vec<String>>,
    /// Best reward seen so far.
    #[serde(default)]
    pub best_reward: Option<f64>,
    /// Latest committed policy version.
    #[serde(default)]
    pub policy_version: i64,
}

/// One sampled (β, α) pair waiting for its reward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingSample {
    /// The store's sample id.
    pub sample_id: SampleId,
    /// β (canonical JSON).
    pub beta: String,
    /// α (canonical JSON).
    pub alpha: String,
}
