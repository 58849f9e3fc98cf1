//! `jobs.result` of an optimize job: written by its driver while it runs (the summary and the
//! driver's progress) and when it finishes (original vs best per input). `GetJobResult`,
//! natctl and the dashboard read it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::verdict::{PairedDifference, SeedAccuracies};
use crate::{Phase, RecommendedFrom, SampleId, Verdict};

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
    /// Whether the policy learned (set when the job is done).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning: Option<Learning>,
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
    /// The verdict of the final evaluation (results written before verdicts: absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// What to use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommended: Option<Recommendation>,
    /// The independent final evaluation.
    #[serde(default, rename = "final", skip_serializing_if = "Option::is_none")]
    pub final_evaluation: Option<FinalEvaluation>,
    /// The random control, when the job ran it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<ControlOutcome>,
    /// The best's accuracy in derive (the selection measurement, validation split, job seed):
    /// shown beside the final evaluation, never used for the verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derive_accuracy: Option<f64>,
}

/// What an optimize job recommends for one input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// The best or the original.
    pub from: RecommendedFrom,
    /// The recommended genotype (its JSON object).
    pub genotype: Value,
    /// Its DARTS string.
    pub genotype_darts: String,
    /// One sentence saying why.
    pub reason: String,
}

/// The independent final evaluation of one input: original and best trained from scratch with
/// the final budget on `seeds` (no learning or derive task used them), on the test split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinalEvaluation {
    /// The seeds, in the order of the accuracies.
    pub seeds: Vec<u64>,
    /// The original's accuracies.
    pub original: SeedAccuracies,
    /// The best's accuracies.
    pub best: SeedAccuracies,
    /// best − original, paired by seed.
    pub paired_difference: PairedDifference,
}

/// The random control of one input: derive from K uniform samples of the space (plus the
/// original), its pick evaluated on the final evaluation's seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlOutcome {
    /// The control's pick (its JSON object).
    pub genotype: Value,
    /// Its DARTS string.
    pub genotype_darts: String,
    /// Its accuracies on the final evaluation's seeds.
    #[serde(rename = "final")]
    pub final_accuracies: SeedAccuracies,
    /// control − original.
    pub vs_original: PairedDifference,
    /// The policy's best − the control's pick: what the policy added over selection alone.
    pub policy_vs_control: PairedDifference,
    /// The control's verdict against the original, by the same rule.
    pub verdict: Verdict,
}

/// Whether the policy learned.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Learning {
    /// Rewards the policy learned from in this job.
    pub rewards: u64,
    /// Policy updates this job made.
    pub policy_versions: u64,
    /// Per update: reward and entropy. At most 1,000 points: a job with more updates has
    /// consecutive updates merged in buckets of equal size (a power of two, the last one maybe
    /// partial), each point the bucket's mean reward and mean entropy at its last version, with
    /// the moving average over every update at that version.
    pub curve: Vec<LearningPoint>,
    /// Per input: the policy's probabilities at its first and last version.
    pub inputs: Vec<InputLearning>,
    /// The supernet's progress (supernet mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supernet: Option<SupernetProgress>,
}

/// One policy update of the learning curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearningPoint {
    /// The version the update committed.
    pub version: i64,
    /// The update's mean reward.
    pub mean_reward: f64,
    /// Exponential moving average of the mean rewards (weight 0.1 on the newest).
    pub reward_moving_average: f64,
    /// Mean policy entropy of the update's samples.
    pub entropy: Option<f64>,
}

/// The policy's view of one input at a version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyView {
    /// The version.
    pub version: i64,
    /// p(α = β): the probability of leaving the input as it is.
    pub identity_probability: f64,
    /// The policy's argmax transformation (DARTS string).
    pub argmax_darts: String,
    /// Its probability.
    pub argmax_probability: f64,
}

/// The policy's view of one input at its first and last version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputLearning {
    /// Index into the job's inputs.
    pub input_index: u32,
    /// At the version the job started from (`None` for jobs started before this was recorded).
    pub first: Option<PolicyView>,
    /// At the last version.
    pub last: PolicyView,
}

/// The supernet's progress (supernet reward mode).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SupernetProgress {
    /// Latest weight version.
    pub version: u64,
    /// Rounds done.
    pub rounds: u32,
    /// Shards per round.
    pub shards_per_round: u32,
    /// Workers that trained a shard.
    pub workers_seen: u32,
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
    /// Per input: the policy's view at the version learning started from.
    #[serde(default)]
    pub policy_start: Vec<PolicyView>,
    /// Per input: the control's candidates (canonical JSON), when the job runs the control.
    #[serde(default)]
    pub control_candidates: Vec<Vec<String>>,
    /// The job's supernet (supernet reward mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supernet: Option<SupernetState>,
}

/// Where a job's durable supernet stands (supernet reward mode), kept by the driver.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SupernetState {
    /// Latest committed weight version (1 = the warm-up's).
    pub version: u64,
    /// Learning rounds averaged into a version.
    pub rounds: u32,
    /// Shards of the latest round.
    pub shards_per_round: u32,
    /// Workers whose shards went into a version (bounded by the fleet).
    #[serde(default)]
    pub workers_seen: std::collections::BTreeSet<String>,
    /// When the current round's shards were queued (Unix ms), for its deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_queued_ms: Option<i64>,
}

impl SupernetState {
    /// The `learning.supernet` summary.
    pub fn progress(&self) -> SupernetProgress {
        SupernetProgress {
            version: self.version,
            rounds: self.rounds,
            shards_per_round: self.shards_per_round,
            workers_seen: u32::try_from(self.workers_seen.len()).unwrap_or(u32::MAX),
        }
    }
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

/// The wire forms of the verdict's documents (GetJobResult).
mod wire {
    use nat_proto::v1;

    use super::*;

    fn darts(genotype: &Value) -> String {
        nat_arch::Genotype::from_json_value(genotype)
            .map(|g| g.to_darts_string())
            .unwrap_or_default()
    }

    fn json(genotype: &Value) -> String {
        nat_arch::Genotype::from_json_value(genotype)
            .map(|g| g.to_json())
            .unwrap_or_else(|_| genotype.to_string())
    }

    impl SeedAccuracies {
        /// The wire form.
        pub fn to_proto(&self) -> v1::SeedAccuracies {
            v1::SeedAccuracies {
                accuracies: self.accuracies.clone(),
                mean: self.mean,
                std: self.std,
                params: self.params,
                madds: self.madds,
            }
        }
    }

    impl PairedDifference {
        /// The wire form: an unknown end is −∞ / +∞.
        pub fn to_proto(&self) -> v1::PairedDifference {
            v1::PairedDifference {
                mean: self.mean,
                ci_low: self.ci_low.unwrap_or(f64::NEG_INFINITY),
                ci_high: self.ci_high.unwrap_or(f64::INFINITY),
                method: self.method.clone(),
            }
        }
    }

    impl Recommendation {
        /// The wire form.
        pub fn to_proto(&self) -> v1::Recommendation {
            v1::Recommendation {
                from: self.from.as_str().to_string(),
                genotype_json: json(&self.genotype),
                genotype_darts: if self.genotype_darts.is_empty() {
                    darts(&self.genotype)
                } else {
                    self.genotype_darts.clone()
                },
                reason: self.reason.clone(),
            }
        }
    }

    impl FinalEvaluation {
        /// The wire form.
        pub fn to_proto(&self) -> v1::FinalEvaluation {
            v1::FinalEvaluation {
                seeds: self.seeds.clone(),
                original: Some(self.original.to_proto()),
                best: Some(self.best.to_proto()),
                paired_difference: Some(self.paired_difference.to_proto()),
            }
        }
    }

    impl ControlOutcome {
        /// The wire form.
        pub fn to_proto(&self) -> v1::ControlOutcome {
            v1::ControlOutcome {
                genotype_json: json(&self.genotype),
                genotype_darts: if self.genotype_darts.is_empty() {
                    darts(&self.genotype)
                } else {
                    self.genotype_darts.clone()
                },
                r#final: Some(self.final_accuracies.to_proto()),
                vs_original: Some(self.vs_original.to_proto()),
                policy_vs_control: Some(self.policy_vs_control.to_proto()),
                verdict: self.verdict.as_str().to_string(),
            }
        }
    }

    impl Learning {
        /// The wire form.
        pub fn to_proto(&self) -> v1::Learning {
            v1::Learning {
                rewards: self.rewards,
                policy_versions: self.policy_versions,
                curve: self
                    .curve
                    .iter()
                    .map(|p| v1::LearningPoint {
                        version: u64::try_from(p.version).unwrap_or(0),
                        mean_reward: p.mean_reward,
                        reward_moving_average: p.reward_moving_average,
                        entropy: p.entropy.unwrap_or(f64::NAN),
                    })
                    .collect(),
                inputs: self
                    .inputs
                    .iter()
                    .map(|i| v1::InputLearning {
                        input_index: i.input_index,
                        identity_probability_first: i
                            .first
                            .as_ref()
                            .map_or(f64::NAN, |f| f.identity_probability),
                        identity_probability_last: i.last.identity_probability,
                        argmax_probability_first: i
                            .first
                            .as_ref()
                            .map_or(f64::NAN, |f| f.argmax_probability),
                        argmax_probability_last: i.last.argmax_probability,
                        argmax_first_darts: i
                            .first
                            .as_ref()
                            .map(|f| f.argmax_darts.clone())
                            .unwrap_or_default(),
                        argmax_last_darts: i.last.argmax_darts.clone(),
                    })
                    .collect(),
                supernet: self.supernet.as_ref().map(|s| v1::SupernetProgress {
                    version: s.version,
                    rounds: s.rounds,
                    shards_per_round: s.shards_per_round,
                    workers_seen: s.workers_seen,
                }),
            }
        }
    }
}
