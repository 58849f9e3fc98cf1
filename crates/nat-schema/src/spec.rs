//! `jobs.spec` of each job kind: what the coordinator resolved and validated at submission.

use nat_arch::{DatasetShape, OpSet};
use nat_proto::v1;
use serde::{Deserialize, Serialize};

use crate::{Budget, Control, Profile, RewardKind, SupernetBudget};

/// `jobs.spec` of an `evaluate` job, and the part of an `optimize` job's spec they share.
///
/// Read through [`JobSpecDoc`]: a spec stored before shapes were has the built-in dataset's
/// shape; one on a dataset that is not built in must have its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "JobSpecDoc")]
pub struct JobSpec {
    /// Free-text label.
    pub name: String,
    /// Dataset name: built in, or a user dataset's folder name on the workers.
    pub dataset: String,
    /// The dataset's shape, resolved at submission (built in, given, or learned from the
    /// workers that report the dataset).
    pub dataset_shape: DatasetShape,
    /// Seed of every task.
    pub seed: u64,
    /// Preset the budget was resolved from.
    pub budget_preset: String,
    /// Resolved budget.
    pub budget: Budget,
    /// Canonical genotype JSON of each architecture, in submission order.
    pub architectures: Vec<String>,
    /// Device requirement: "" (any) or "cuda".
    #[serde(default)]
    pub device: String,
    /// Minimum GPU memory in bytes (0 = none).
    #[serde(default)]
    pub min_device_memory_bytes: u64,
}

/// The stored form of [`JobSpec`], with the shape optional.
#[derive(Deserialize)]
struct JobSpecDoc {
    name: String,
    dataset: String,
    #[serde(default)]
    dataset_shape: Option<DatasetShape>,
    seed: u64,
    budget_preset: String,
    budget: Budget,
    architectures: Vec<String>,
    #[serde(default)]
    device: String,
    #[serde(default)]
    min_device_memory_bytes: u64,
}

impl TryFrom<JobSpecDoc> for JobSpec {
    type Error = String;

    fn try_from(d: JobSpecDoc) -> Result<Self, String> {
        Ok(JobSpec {
            dataset_shape: crate::dataset::stored_shape(&d.dataset, d.dataset_shape)?,
            name: d.name,
            dataset: d.dataset,
            seed: d.seed,
            budget_preset: d.budget_preset,
            budget: d.budget,
            architectures: d.architectures,
            device: d.device,
            min_device_memory_bytes: d.min_device_memory_bytes,
        })
    }
}

impl JobSpec {
    /// Whether the job's tasks need a GPU.
    pub fn needs_gpu(&self) -> bool {
        self.device == "cuda"
    }

    /// Minimum GPU memory of the job's tasks, in MiB (rounded up).
    pub fn min_gpu_memory_mb(&self) -> u64 {
        self.min_device_memory_bytes.div_ceil(1024 * 1024)
    }
}

/// `jobs.spec` of an `optimize` job: the shared spec plus the optimize settings.
///
/// Read through [`OptimizeJobSpecDoc`] (the shared fields spelled out) rather than through
/// `#[serde(flatten)]`, which would lose the path of a shared field that does not fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "OptimizeJobSpecDoc")]
pub struct OptimizeJobSpec {
    /// Name, dataset, seed, budget, architectures, device, as for `evaluate`.
    #[serde(flatten)]
    pub base: JobSpec,
    /// The optimize settings, defaults resolved.
    pub optimize: OptimizeSettings,
}

/// The stored form of [`OptimizeJobSpec`], flat.
#[derive(Deserialize)]
struct OptimizeJobSpecDoc {
    name: String,
    dataset: String,
    #[serde(default)]
    dataset_shape: Option<DatasetShape>,
    seed: u64,
    budget_preset: String,
    budget: Budget,
    architectures: Vec<String>,
    #[serde(default)]
    device: String,
    #[serde(default)]
    min_device_memory_bytes: u64,
    optimize: OptimizeSettings,
}

impl TryFrom<OptimizeJobSpecDoc> for OptimizeJobSpec {
    type Error = String;

    fn try_from(d: OptimizeJobSpecDoc) -> Result<Self, String> {
        // The shared fields go through the evaluate spec's own conversion (one shape rule).
        let base = JobSpec::try_from(JobSpecDoc {
            name: d.name,
            dataset: d.dataset,
            dataset_shape: d.dataset_shape,
            seed: d.seed,
            budget_preset: d.budget_preset,
            budget: d.budget,
            architectures: d.architectures,
            device: d.device,
            min_device_memory_bytes: d.min_device_memory_bytes,
        })?;
        Ok(OptimizeJobSpec {
            base,
            optimize: d.optimize,
        })
    }
}

/// Resolved settings of an optimize job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizeSettings {
    /// Reward mode (absent in specs stored before the supernet mode: proxy).
    #[serde(default)]
    pub reward: RewardKind,
    /// The supernet's settings (`supernet` reward only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supernet: Option<SupernetBudget>,
    /// Op set of the transformation space (`nat-fully-concat` or `nat-plus-plus`).
    pub op_set: OpSet,
    /// Policy profile.
    pub profile: Profile,
    /// Stored policy to start from; empty = a fresh policy `job-<job id>`.
    pub policy_id: String,
    /// Policy updates (learning rounds).
    pub iterations: u32,
    /// Rewards per round (M).
    pub samples_per_iteration: u32,
    /// K of the derive phase.
    pub derive_samples: u32,
    /// Derive with the argmax instead of K samples.
    pub derive_argmax: bool,
    /// Learn on random architectures of the space instead of the inputs.
    pub random_inputs: bool,
    /// Learning-rate override (0 = the profile's).
    pub learning_rate: f64,
    /// Entropy weight override per cell type (0 = the profile's).
    pub entropy_weight: f64,
    /// Staleness override (0 = the profile's).
    pub max_staleness: u32,
    /// Preset name of the final-check budget.
    pub final_budget_preset: String,
    /// The final-check budget.
    pub final_budget: Budget,
    /// Paired seeds of the final evaluation (specs stored before it: 3, the default).
    #[serde(default = "default_final_seeds")]
    pub final_seeds: u32,
    /// A candidate whose params or multiply-adds exceed this times the original's is out of the
    /// running (specs stored before it: 1.0, the default).
    #[serde(default = "default_max_cost_ratio")]
    pub max_cost_ratio: f64,
    /// The derive control.
    #[serde(default)]
    pub control: Control,
    /// Supernet mode: candidates per input and list trained from scratch after the supernet
    /// screened them all (specs stored before it: 3, the default).
    #[serde(default = "default_derive_top_k")]
    pub derive_top_k: u32,
}

/// Default [`OptimizeSettings::derive_top_k`].
pub const DEFAULT_DERIVE_TOP_K: u32 = 3;
/// Most [`OptimizeSettings::derive_top_k`].
pub const MAX_DERIVE_TOP_K: u32 = 100;

fn default_derive_top_k() -> u32 {
    DEFAULT_DERIVE_TOP_K
}

impl OptimizeSettings {
    /// The wire form of the resolved settings: submitting it again gives the same job settings
    /// (budgets spelled out field by field; `policy_id` empty for a job's own fresh policy).
    pub fn to_proto(&self) -> v1::OptimizeSpec {
        let space = if self.op_set == OpSet::NatPlusPlus {
            v1::SearchSpace::NatPlusPlus
        } else {
            v1::SearchSpace::Nat
        };
        let reward = match self.reward {
            RewardKind::Proxy => v1::RewardMode::Proxy,
            RewardKind::Supernet => v1::RewardMode::Supernet,
        };
        v1::OptimizeSpec {
            space: space as i32,
            reward: reward as i32,
            iterations: self.iterations,
            samples_per_iteration: self.samples_per_iteration,
            max_staleness: self.max_staleness,
            learning_rate: self.learning_rate,
            entropy_weight: self.entropy_weight,
            final_budget: Some(self.final_budget.to_spec_proto(&self.final_budget_preset)),
            supernet: self
                .supernet
                .as_ref()
                .map(|s| s.to_proto(self.op_set.name())),
            policy_profile: self.profile.as_str().to_string(),
            policy_id: self.policy_id.clone(),
            derive_argmax: self.derive_argmax,
            derive_samples: self.derive_samples,
            random_inputs: self.random_inputs,
            final_seeds: self.final_seeds,
            max_cost_ratio: self.max_cost_ratio,
            control: self.control.as_str().to_string(),
            derive_top_k: self.derive_top_k,
        }
    }
}

/// Default [`OptimizeSettings::final_seeds`].
pub const DEFAULT_FINAL_SEEDS: u32 = 3;
/// Most [`OptimizeSettings::final_seeds`].
pub const MAX_FINAL_SEEDS: u32 = 32;
/// Default [`OptimizeSettings::max_cost_ratio`].
pub const DEFAULT_MAX_COST_RATIO: f64 = 1.0;

fn default_final_seeds() -> u32 {
    DEFAULT_FINAL_SEEDS
}

fn default_max_cost_ratio() -> f64 {
    DEFAULT_MAX_COST_RATIO
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode;

    #[test]
    fn optimize_specs_round_trip_and_errors_name_the_field() {
        let budget = Budget::preset("smoke").expect("smoke");
        let spec = OptimizeJobSpec {
            base: JobSpec {
                name: "n".into(),
                dataset: "digits".into(),
                dataset_shape: nat_arch::Dataset::Digits.shape(),
                seed: 3,
                budget_preset: "smoke".into(),
                budget,
                architectures: vec!["darts-v2".into()],
                device: String::new(),
                min_device_memory_bytes: 0,
            },
            optimize: OptimizeSettings {
                reward: RewardKind::Supernet,
                supernet: Some(SupernetBudget::preset("smoke")),
                op_set: OpSet::NatFullyConcat,
                profile: Profile::Default,
                policy_id: String::new(),
                iterations: 2,
                samples_per_iteration: 4,
                derive_samples: 5,
                derive_argmax: false,
                random_inputs: false,
                learning_rate: 0.0,
                entropy_weight: 0.0,
                max_staleness: 0,
                final_budget_preset: "smoke".into(),
                final_budget: budget,
                final_seeds: 3,
                max_cost_ratio: 1.0,
                control: Control::Random,
                derive_top_k: 2,
            },
        };
        let v = serde_json::to_value(&spec).expect("encodes");
        assert_eq!(
            v["seed"],
            serde_json::json!(3),
            "the shared fields are at the top"
        );
        assert_eq!(decode::<OptimizeJobSpec>("optimize job spec", &v), Ok(spec));
        // The shared part reads alone, as an evaluate spec.
        assert!(decode::<JobSpec>("job spec", &v).is_ok());
        let mut bad = v.clone();
        bad["budget"]["epochs"] = serde_json::json!(-1);
        let e = decode::<OptimizeJobSpec>("optimize job spec", &bad).expect_err("negative");
        assert_eq!(e.field, "budget.epochs");
        let mut bad = v;
        bad["optimize"]["reward"] = serde_json::json!("exact");
        let e = decode::<OptimizeJobSpec>("optimize job spec", &bad).expect_err("unknown");
        assert_eq!(e.field, "optimize.reward");
    }

    fn evaluate_spec(dataset: &str, shape: DatasetShape) -> JobSpec {
        JobSpec {
            name: "n".into(),
            dataset: dataset.into(),
            dataset_shape: shape,
            seed: 1,
            budget_preset: "smoke".into(),
            budget: Budget::preset("smoke").expect("smoke"),
            architectures: vec!["darts-v2".into()],
            device: String::new(),
            min_device_memory_bytes: 0,
        }
    }

    #[test]
    fn dataset_shapes_round_trip_and_old_specs_read_the_built_in_shape() {
        let cats = DatasetShape {
            channels: 3,
            image_size: 64,
            classes: 2,
        };
        let spec = evaluate_spec("my-cats", cats);
        let v = serde_json::to_value(&spec).expect("encodes");
        assert_eq!(
            v["dataset_shape"],
            serde_json::json!({"channels": 3, "image_size": 64, "classes": 2})
        );
        assert_eq!(decode::<JobSpec>("job spec", &v), Ok(spec));

        // Stored before shapes: a built-in dataset reads its shape.
        for d in nat_arch::Dataset::ALL {
            let mut old = serde_json::to_value(evaluate_spec(d.name(), d.shape())).expect("json");
            if let Some(o) = old.as_object_mut() {
                o.remove("dataset_shape");
            }
            let read: JobSpec = decode("job spec", &old).expect("old spec");
            assert_eq!(read.dataset_shape, d.shape(), "{d}");
        }

        // A user dataset without a shape, or a shape out of bounds: errors that name it.
        let mut no_shape = v.clone();
        if let Some(o) = no_shape.as_object_mut() {
            o.remove("dataset_shape");
        }
        let e = decode::<JobSpec>("job spec", &no_shape).expect_err("no shape");
        assert!(e.reason.contains("dataset_shape"), "{e}");
        assert!(e.reason.contains("my-cats"), "{e}");
        let mut bad = v.clone();
        bad["dataset_shape"]["channels"] = serde_json::json!(4);
        let e = decode::<JobSpec>("job spec", &bad).expect_err("4 channels");
        assert!(e.reason.contains("dataset_shape.channels"), "{e}");
        let mut bad = v;
        bad["dataset_shape"]["classes"] = serde_json::json!("two");
        let e = decode::<JobSpec>("job spec", &bad).expect_err("a string");
        assert_eq!(e.field, "dataset_shape.classes");
    }

    #[test]
    fn optimize_specs_read_the_shape_like_evaluate_specs() {
        let mut v = serde_json::to_value(evaluate_spec(
            "my-cats",
            DatasetShape {
                channels: 1,
                image_size: 16,
                classes: 5,
            },
        ))
        .expect("json");
        let settings = OptimizeSettings {
            reward: RewardKind::Proxy,
            supernet: None,
            op_set: OpSet::NatFullyConcat,
            profile: Profile::Default,
            policy_id: String::new(),
            iterations: 1,
            samples_per_iteration: 1,
            derive_samples: 1,
            derive_argmax: false,
            random_inputs: false,
            learning_rate: 0.0,
            entropy_weight: 0.0,
            max_staleness: 0,
            final_budget_preset: "smoke".into(),
            final_budget: Budget::preset("smoke").expect("smoke"),
            final_seeds: 3,
            max_cost_ratio: 1.0,
            control: Control::None,
            derive_top_k: 3,
        };
        v["optimize"] = serde_json::to_value(&settings).expect("json");
        let spec: OptimizeJobSpec = decode("optimize job spec", &v).expect("decodes");
        assert_eq!(spec.base.dataset_shape.image_size, 16);
        if let Some(o) = v.as_object_mut() {
            o.remove("dataset_shape");
        }
        let e = decode::<OptimizeJobSpec>("optimize job spec", &v).expect_err("no shape");
        assert!(e.reason.contains("dataset_shape"), "{e}");
        v["dataset"] = serde_json::json!("cifar10");
        let spec: OptimizeJobSpec = decode("optimize job spec", &v).expect("old spec");
        assert_eq!(spec.base.dataset_shape, nat_arch::Dataset::Cifar10.shape());
    }
}
