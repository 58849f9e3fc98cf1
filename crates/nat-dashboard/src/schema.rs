//! The JSON documents the dashboard reads, beyond what the store itself defines.
//!
//! The store keeps job results and event payloads as free-form JSON; their shapes belong to the
//! job drivers in the coordinator. The shapes below are the contract the dashboard reads (posted
//! in `/work/notes/requests-coordinator.md`). Every field is optional or defaulted, so an older
//! or partial document degrades to "not known yet" instead of an error.
//!
//! # Events appended by the optimize driver (`Store::append_event`)
//! - [`POLICY_UPDATE`] (`"policy_update"`), one per committed policy update:
//!   `{"policy_version": 8, "baseline": 0.0031, "mean_reward": 0.012, "rewards": [0.01, …],
//!     "samples_used": 16, "samples_stale": 0, "entropy": 3.9}` → [`PolicyUpdate`].
//! - [`NEW_BEST`] (`"new_best"`), whenever the best transformed architecture of an input changes:
//!   `{"input_index": 0, "genotype": <canonical genotype JSON, object or string>,
//!     "accuracy": 0.957, "reward": 0.021}` → [`NewBest`].
//!
//! # Events written by the store
//! - `task_succeeded` `{task_id, attempt, result}` where `result` of a `train_eval` task is the
//!   coordinator's `TrainEvalOutcome` `{accuracy, loss, params, madds, wall_seconds,
//!   images_per_second, worker_id?}` → [`TrainEvalResult`]; of a `supernet` task
//!   `{scores: [{acc_beta, acc_alpha}], wall_seconds, worker_id}` → [`SupernetResult`] (each pair
//!   gives the reward `acc_alpha − acc_beta`).
//!
//! # Job documents
//! - `jobs.spec`: `{"name", "dataset", "architectures": [<canonical genotype JSON string>, …]}`
//!   (the coordinator's `JobSpec`) → [`JobSpecView`].
//! - `jobs.result` (optimize jobs, also set while running through `Store::set_job_result`):
//!   `{"summary": {"best_accuracy", "best_reward", "policy_version", "iterations_done",
//!   "iterations_total"}, "optimize": [{"input_index": 0, "original": {"genotype", "accuracy",
//!   "params", "madds"}, "best": {…}}]}` → [`OptimizeResult`].

use nat_arch::Genotype;
use serde::Deserialize;
use serde_json::Value;

/// Event kind of a committed policy update.
pub const POLICY_UPDATE: &str = "policy_update";
/// Event kind of a new best transformed architecture.
pub const NEW_BEST: &str = "new_best";

/// Payload of a [`POLICY_UPDATE`] event.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct PolicyUpdate {
    /// Version committed by the update.
    pub policy_version: i64,
    /// Reward baseline after the update.
    pub baseline: Option<f64>,
    /// Mean of the rewards used.
    pub mean_reward: Option<f64>,
    /// The individual rewards used (optional).
    pub rewards: Vec<f64>,
    /// Samples consumed.
    pub samples_used: u64,
    /// Samples dropped as stale.
    pub samples_stale: u64,
    /// Mean policy entropy of the samples.
    pub entropy: Option<f64>,
}

/// Payload of a [`NEW_BEST`] event.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct NewBest {
    /// Index of the input architecture (into `spec.architectures`).
    pub input_index: u32,
    /// The best transformed genotype so far (JSON object or string).
    pub genotype: Value,
    /// Its accuracy, when measured.
    pub accuracy: Option<f64>,
    /// Its reward.
    pub reward: Option<f64>,
}

/// Result of a `train_eval` task (the fields the dashboard uses).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct TrainEvalResult {
    /// Top-1 accuracy, fraction.
    pub accuracy: Option<f64>,
    /// Parameters of the trained network.
    pub params: Option<u64>,
    /// Multiply-adds.
    pub madds: Option<u64>,
    /// Throughput of the worker on this task.
    pub images_per_second: Option<f64>,
    /// Wall time of the task on the worker.
    pub wall_seconds: Option<f64>,
}

/// One scored pair of a supernet task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct PairScore {
    /// Supernet accuracy of the input β.
    pub acc_beta: f64,
    /// Supernet accuracy of the transformation α.
    pub acc_alpha: f64,
}

/// Result of a `supernet` task.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct SupernetResult {
    /// One score per pair.
    pub scores: Vec<PairScore>,
    /// Wall time.
    pub wall_seconds: Option<f64>,
}

/// The parts of `jobs.spec` the dashboard shows.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct JobSpecView {
    /// Free-text label.
    pub name: String,
    /// Dataset wire name.
    pub dataset: String,
    /// Input architectures (canonical genotype JSON strings, or objects).
    pub architectures: Vec<Value>,
}

/// `result.summary` of an optimize job.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ResultSummary {
    /// Best accuracy measured so far.
    pub best_accuracy: Option<f64>,
    /// Best reward so far.
    pub best_reward: Option<f64>,
    /// Latest policy version.
    pub policy_version: Option<i64>,
    /// Policy updates done.
    pub iterations_done: Option<u64>,
    /// Policy updates planned.
    pub iterations_total: Option<u64>,
}

/// One architecture with its measurements, in a job result.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ArchResult {
    /// Genotype (object or JSON string).
    pub genotype: Value,
    /// Measured accuracy.
    pub accuracy: Option<f64>,
    /// Parameters.
    pub params: Option<u64>,
    /// Multiply-adds.
    pub madds: Option<u64>,
}

/// Original and best architecture of one input.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct OptimizeOutcome {
    /// Index into `spec.architectures`.
    pub input_index: u32,
    /// The input as measured.
    pub original: ArchResult,
    /// The best transformation as measured.
    pub best: ArchResult,
}

/// `jobs.result` of an optimize job.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct OptimizeResult {
    /// Running summary.
    pub summary: ResultSummary,
    /// Per input.
    pub optimize: Vec<OptimizeOutcome>,
}

/// Reads `value` as `T`, `None` when it does not fit (documents are written by other crates).
pub fn read<T: serde::de::DeserializeOwned>(value: &Value) -> Option<T> {
    T::deserialize(value).ok()
}

/// Parses a genotype given as a JSON object, or as a string (canonical JSON, DARTS string, text
/// form or preset name).
pub fn genotype(value: &Value) -> Option<Genotype> {
    match value {
        Value::String(s) => nat_arch::parse_any(s).ok(),
        Value::Object(_) => Genotype::from_json_str(&value.to_string()).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn partial_documents_read_with_defaults() {
        let u: PolicyUpdate = read(&json!({"policy_version": 3, "baseline": 0.5})).expect("fits");
        assert_eq!(u.policy_version, 3);
        assert_eq!(u.baseline, Some(0.5));
        assert!(u.rewards.is_empty());
        assert!(read::<PolicyUpdate>(&json!({"policy_version": "x"})).is_none());
        let r: OptimizeResult = read(&json!({})).expect("empty result");
        assert!(r.optimize.is_empty());
    }

    #[test]
    fn genotypes_parse_from_strings_and_objects() {
        let g = genotype(&json!("darts-v2")).expect("preset name");
        let obj: Value = serde_json::from_str(&g.to_json()).expect("json");
        assert_eq!(genotype(&obj), Some(g.clone()));
        assert_eq!(genotype(&Value::String(g.to_json())), Some(g));
        assert_eq!(genotype(&json!(42)), None);
        assert_eq!(genotype(&json!("not a genotype")), None);
    }
}
