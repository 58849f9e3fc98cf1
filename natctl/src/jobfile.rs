//! `natctl submit -f JOB.yaml`: the job file format.
//!
//! ```yaml
//! kind: evaluate            # evaluate | optimize
//! name: demo
//! dataset: digits           # a built-in (digits | mnist | fashion-mnist | cifar10) or a folder the workers have
//! dataset_shape:            # only for a dataset that is not built in and no worker has reported
//!   channels: 3
//!   image_size: 32
//!   classes: 10
//! architectures:            # preset names, files (JSON or DARTS), or inline JSON / DARTS
//!   - darts-v2
//!   - ./my-genotype.json
//! budget:
//!   preset: smoke           # smoke | small | paper
//!   epochs: 2               # any TrainingBudget field overrides the preset
//! seed: 1
//! priority: 0
//! requirements:
//!   device: cuda            # any | cpu | cuda
//!   min_device_memory_gib: 16
//! optimize:                 # optimize jobs only
//!   space: nat              # nat | nat++
//!   reward: proxy           # proxy | supernet
//!   iterations: 10
//!   samples_per_iteration: 8
//!   max_staleness: 2        # samples older than this many policy versions are dropped
//!   learning_rate: 3.0e-4
//!   entropy_weight: 0.003
//!   final_budget: {preset: small}   # same keys as `budget:`
//!   policy_profile: default # default | reference
//!   policy_id: my-policy    # start from this stored policy (default: a fresh one)
//!   derive_argmax: false    # derive with the policy's argmax instead of K samples
//!   derive_samples: 10      # K transformations per input when deriving (0 = 10; supernet mode 100)
//!   derive_top_k: 3         # supernet mode: the best K by supernet accuracy trained from scratch
//!   random_inputs: false    # learn on random architectures (then `architectures` may be empty)
//!   final_seeds: 3          # seeds of the final evaluation (original and best from scratch), 1..=32
//!   max_cost_ratio: 1.0     # candidates costing more than this times the original are out, [1, 10]
//!   control: none           # none | random: also derive from K uniform samples, evaluated alike
//!   supernet:               # reward: supernet only; unset/0 = the budget preset's value
//!     init_channels: 16
//!     layers: 8
//!     batch_size: 64
//!     train_steps_between_pairs: 10
//!     learning_rate: 0.025
//!     momentum: 0.9
//!     weight_decay: 3.0e-4
//!     grad_clip: 5.0
//!     max_train_examples: 0
//!     validation_fraction: 0.5
//!     eval_batches: 1
//!     max_wall_seconds: 0
//!     op_set: nat-fully-concat   # empty or the job's space: nat-fully-concat (nat), nat-plus-plus (nat++)
//!     num_nodes: 4               # empty or the inputs' node count
//!     shards: auto               # shard tasks per round: auto (one per live worker slot) or 1..=64
//!     steps_per_shard: 20        # SGD steps each shard trains from the round's weight version
//!     warmup_steps: 200          # steps of the warm-up that makes weight version 1
//!     round_deadline_seconds: 1800  # then the round averages the shards that reported (0 = none)
//!     derive_examples: 2048      # validation examples each derive candidate is scored on (0 = all)
//! ```
//! Unknown keys are errors (a typo must not silently fall back to a default). `examples/` at the
//! repository root has a job file for each use, every key explained (a test submits each).

use std::path::Path;

use anyhow::{bail, Context};
use nat_proto::v1;
use nat_schema::{
    spec::{DEFAULT_FINAL_SEEDS, MAX_FINAL_SEEDS},
    Budget, Control, JobKind, RewardKind, SupernetBudget,
};
use serde::Deserialize;

/// The whole job file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    pub kind: Option<String>,
    pub name: Option<String>,
    pub dataset: Option<String>,
    pub dataset_shape: Option<DatasetShapeFile>,
    #[serde(default)]
    pub architectures: Vec<String>,
    pub budget: Option<BudgetFile>,
    pub seed: Option<u64>,
    pub priority: Option<i32>,
    pub requirements: Option<RequirementsFile>,
    pub optimize: Option<OptimizeFile>,
}

/// `budget:` — a preset and per-field overrides: the fields of [`nat_schema::Budget`], each
/// optional (a test checks that every `Budget` field is a key here).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetFile {
    pub preset: Option<String>,
    pub epochs: Option<u32>,
    pub batch_size: Option<u32>,
    pub learning_rate: Option<f64>,
    pub lr_min: Option<f64>,
    pub momentum: Option<f64>,
    pub weight_decay: Option<f64>,
    pub grad_clip: Option<f64>,
    pub init_channels: Option<u32>,
    pub layers: Option<u32>,
    pub max_train_examples: Option<u32>,
    pub max_eval_examples: Option<u32>,
    pub validation_fraction: Option<f64>,
    pub cutout: Option<u32>,
    pub label_smoothing: Option<f64>,
    pub auxiliary_weight: Option<f64>,
    pub drop_path_prob: Option<f64>,
    pub max_wall_seconds: Option<f64>,
}

impl BudgetFile {
    /// The budget the coordinator will resolve from this (`nat_schema::Budget::resolve`):
    /// the preset's name and the validated budget. Errors name `{field}.<key>`, so that a bad
    /// value fails before anything is sent.
    pub fn resolve(
        &self,
        preset_flag: Option<&str>,
        field: &str,
    ) -> anyhow::Result<(String, Budget)> {
        Ok(Budget::resolve(Some(&self.to_proto(preset_flag)), field)?)
    }

    pub fn to_proto(&self, preset_flag: Option<&str>) -> v1::BudgetSpec {
        v1::BudgetSpec {
            preset: preset_flag
                .map(str::to_string)
                .or_else(|| self.preset.clone())
                .unwrap_or_default(),
            overrides: Some(v1::BudgetOverrides {
                epochs: self.epochs,
                batch_size: self.batch_size,
                learning_rate: self.learning_rate,
                lr_min: self.lr_min,
                momentum: self.momentum,
                weight_decay: self.weight_decay,
                grad_clip: self.grad_clip,
                init_channels: self.init_channels,
                layers: self.layers,
                max_train_examples: self.max_train_examples,
                max_eval_examples: self.max_eval_examples,
                validation_fraction: self.validation_fraction,
                cutout: self.cutout,
                label_smoothing: self.label_smoothing,
                auxiliary_weight: self.auxiliary_weight,
                drop_path_prob: self.drop_path_prob,
                max_wall_seconds: self.max_wall_seconds,
            }),
        }
    }
}

/// `dataset_shape:` — the input shape of a dataset that is not built in (`--channels`,
/// `--image-size`, `--classes` override its keys).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetShapeFile {
    pub channels: Option<u32>,
    pub image_size: Option<u32>,
    pub classes: Option<u32>,
}

/// `requirements:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequirementsFile {
    pub device: Option<String>,
    pub min_device_memory_gib: Option<f64>,
}

/// `optimize:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizeFile {
    pub space: Option<String>,
    pub reward: Option<String>,
    pub iterations: Option<u32>,
    pub samples_per_iteration: Option<u32>,
    pub max_staleness: Option<u32>,
    pub learning_rate: Option<f64>,
    pub entropy_weight: Option<f64>,
    pub final_budget: Option<BudgetFile>,
    pub policy_profile: Option<String>,
    pub policy_id: Option<String>,
    pub derive_argmax: Option<bool>,
    pub derive_samples: Option<u32>,
    pub random_inputs: Option<bool>,
    pub final_seeds: Option<u32>,
    pub max_cost_ratio: Option<f64>,
    pub control: Option<String>,
    pub derive_top_k: Option<u32>,
    pub supernet: Option<SupernetFile>,
}

/// `optimize.supernet:` — the supernet of `reward: supernet` (unset fields take the
/// coordinator's defaults).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupernetFile {
    pub init_channels: Option<u32>,
    pub layers: Option<u32>,
    pub batch_size: Option<u32>,
    pub train_steps_between_pairs: Option<u32>,
    pub learning_rate: Option<f64>,
    pub momentum: Option<f64>,
    pub weight_decay: Option<f64>,
    pub grad_clip: Option<f64>,
    pub max_train_examples: Option<u32>,
    pub validation_fraction: Option<f64>,
    pub eval_batches: Option<u32>,
    pub max_wall_seconds: Option<f64>,
    pub op_set: Option<String>,
    pub num_nodes: Option<u32>,
    pub shards: Option<ShardsFile>,
    pub steps_per_shard: Option<u32>,
    pub warmup_steps: Option<u32>,
    pub round_deadline_seconds: Option<f64>,
    pub derive_examples: Option<u32>,
}

/// `optimize.supernet.shards`: `auto` or a count.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ShardsFile {
    /// A fixed number of shard tasks per round.
    Count(u32),
    /// `auto`: one per live worker slot that can run the job.
    Named(String),
}

impl ShardsFile {
    /// The wire value (0 = auto); an unknown name is an error naming the key.
    fn to_wire(&self) -> anyhow::Result<u32> {
        match self {
            ShardsFile::Count(0) => anyhow::bail!(
                "optimize.supernet.shards: 0 is not a shard count (write `auto` for one per worker slot)"
            ),
            ShardsFile::Count(n) => Ok(*n),
            ShardsFile::Named(name) if name == "auto" => Ok(0),
            ShardsFile::Named(name) => anyhow::bail!(
                "optimize.supernet.shards: `{name}` is neither `auto` nor a number"
            ),
        }
    }
}

impl SupernetFile {
    /// The supernet settings the coordinator will resolve from this with the job's budget
    /// `preset` (`nat_schema::SupernetBudget::resolve`); errors name
    /// `optimize.supernet.<key>`.
    pub fn resolve(&self, preset: &str) -> anyhow::Result<SupernetBudget> {
        Ok(SupernetBudget::resolve(
            preset,
            Some(&self.to_proto()?),
            "optimize.supernet",
        )?)
    }

    /// The wire form; errors name `optimize.supernet.<key>`.
    pub fn to_proto(&self) -> anyhow::Result<v1::SupernetSettings> {
        Ok(v1::SupernetSettings {
            init_channels: self.init_channels.unwrap_or(0),
            layers: self.layers.unwrap_or(0),
            batch_size: self.batch_size.unwrap_or(0),
            train_steps_between_pairs: self.train_steps_between_pairs.unwrap_or(0),
            learning_rate: self.learning_rate.unwrap_or(0.0),
            momentum: self.momentum.unwrap_or(0.0),
            weight_decay: self.weight_decay.unwrap_or(0.0),
            grad_clip: self.grad_clip.unwrap_or(0.0),
            max_train_examples: self.max_train_examples.unwrap_or(0),
            validation_fraction: self.validation_fraction.unwrap_or(0.0),
            eval_batches: self.eval_batches.unwrap_or(0),
            max_wall_seconds: self.max_wall_seconds.unwrap_or(0.0),
            op_set: self.op_set.clone().unwrap_or_default(),
            num_nodes: self.num_nodes.unwrap_or(0),
            shards: self
                .shards
                .as_ref()
                .map(ShardsFile::to_wire)
                .transpose()?
                .unwrap_or(0),
            steps_per_shard: self.steps_per_shard.unwrap_or(0),
            warmup_steps: self.warmup_steps.unwrap_or(0),
            round_deadline_seconds: self.round_deadline_seconds.unwrap_or(0.0),
            derive_examples: self.derive_examples.unwrap_or(0),
        })
    }
}

impl JobFile {
    pub fn load(path: &Path) -> anyhow::Result<JobFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read job file {}", path.display()))?;
        yaml_serde::from_str(&text)
            .with_context(|| format!("job file {} is not a valid job", path.display()))
    }
}

pub fn parse_kind(s: &str) -> anyhow::Result<v1::JobKind> {
    let kind = s
        .trim()
        .to_ascii_lowercase()
        .parse::<JobKind>()
        .map_err(|e| anyhow::anyhow!("kind: {e}"))?;
    Ok(job_kind_to_proto(kind))
}

/// The wire form of a job kind.
pub fn job_kind_to_proto(kind: JobKind) -> v1::JobKind {
    match kind {
        JobKind::Evaluate => v1::JobKind::Evaluate,
        JobKind::Optimize => v1::JobKind::Optimize,
    }
}

/// The job kind of a wire value (`None` for unspecified or unknown values).
pub fn job_kind_from_proto(kind: i32) -> Option<JobKind> {
    match v1::JobKind::try_from(kind) {
        Ok(v1::JobKind::Evaluate) => Some(JobKind::Evaluate),
        Ok(v1::JobKind::Optimize) => Some(JobKind::Optimize),
        _ => None,
    }
}

pub fn parse_space(s: &str) -> anyhow::Result<v1::SearchSpace> {
    match s.trim().to_ascii_lowercase().as_str() {
        "nat" => Ok(v1::SearchSpace::Nat),
        "nat++" | "nat-plus-plus" | "natpp" => Ok(v1::SearchSpace::NatPlusPlus),
        other => bail!("optimize.space: unknown space {other:?} (expected nat or nat++)"),
    }
}

pub fn parse_reward(s: &str) -> anyhow::Result<v1::RewardMode> {
    let reward = s
        .trim()
        .to_ascii_lowercase()
        .parse::<RewardKind>()
        .map_err(|e| anyhow::anyhow!("reward: {e}"))?;
    Ok(match reward {
        RewardKind::Proxy => v1::RewardMode::Proxy,
        RewardKind::Supernet => v1::RewardMode::Supernet,
    })
}

pub fn requirements(r: &RequirementsFile) -> anyhow::Result<v1::TaskRequirements> {
    let device = match r.device.as_deref().map(|d| d.trim().to_ascii_lowercase()) {
        None => v1::DeviceKind::Unspecified,
        Some(d) if d == "any" => v1::DeviceKind::Unspecified,
        Some(d) if d == "cpu" => v1::DeviceKind::Cpu,
        Some(d) if d == "cuda" || d == "gpu" => v1::DeviceKind::Cuda,
        Some(d) => bail!("requirements.device: unknown device {d:?} (expected any, cpu or cuda)"),
    };
    let gib = r.min_device_memory_gib.unwrap_or(0.0);
    if !(gib.is_finite() && (0.0..=1e6).contains(&gib)) {
        bail!("requirements.min_device_memory_gib: must be a number in [0, 1e6], got {gib}");
    }
    Ok(v1::TaskRequirements {
        device: device as i32,
        min_device_memory_bytes: (gib * 1024.0 * 1024.0 * 1024.0) as u64,
    })
}

/// Largest `optimize.max_cost_ratio` (the coordinator's bound).
pub const MAX_COST_RATIO: f64 = 10.0;

/// `optimize.final_seeds`: 1..=32 (unset: the coordinator's default, 3).
pub fn check_final_seeds(n: u32) -> anyhow::Result<u32> {
    if !(1..=MAX_FINAL_SEEDS).contains(&n) {
        bail!(
            "optimize.final_seeds: must be in 1..={MAX_FINAL_SEEDS} (default {DEFAULT_FINAL_SEEDS}), got {n}"
        );
    }
    Ok(n)
}

/// `optimize.max_cost_ratio`: a number in [1, 10] (unset: 1.0, no extra cost).
pub fn check_max_cost_ratio(x: f64) -> anyhow::Result<f64> {
    if !(x.is_finite() && (1.0..=MAX_COST_RATIO).contains(&x)) {
        bail!("optimize.max_cost_ratio: must be a number in [1, {MAX_COST_RATIO}] (1 = no extra cost), got {x}");
    }
    Ok(x)
}

/// `optimize.control`: `none` or `random`, as the wire name.
pub fn parse_control(s: &str) -> anyhow::Result<Control> {
    s.trim()
        .to_ascii_lowercase()
        .parse::<Control>()
        .map_err(|e| anyhow::anyhow!("optimize.control: {e}"))
}

/// Flags of `natctl submit` that override keys of `optimize:`.
#[derive(Debug, Default, Clone, Copy)]
pub struct OptimizeFlags<'a> {
    /// `--reward`.
    pub reward: Option<&'a str>,
    /// `--final-seeds`.
    pub final_seeds: Option<u32>,
    /// `--max-cost-ratio`.
    pub max_cost_ratio: Option<f64>,
    /// `--control`.
    pub control: Option<&'a str>,
}

impl OptimizeFlags<'_> {
    /// Whether any flag is given.
    pub fn any(&self) -> bool {
        self.reward.is_some()
            || self.final_seeds.is_some()
            || self.max_cost_ratio.is_some()
            || self.control.is_some()
    }
}

/// The wire `OptimizeSpec` of `optimize:` with `flags` overriding its keys. A bad value is an
/// error naming the key.
pub fn optimize(o: &OptimizeFile, flags: OptimizeFlags<'_>) -> anyhow::Result<v1::OptimizeSpec> {
    let reward = match flags.reward.or(o.reward.as_deref()) {
        Some(r) => parse_reward(r)? as i32,
        None => 0,
    };
    let final_seeds = flags
        .final_seeds
        .or(o.final_seeds)
        .map(check_final_seeds)
        .transpose()?
        .unwrap_or(0);
    let max_cost_ratio = flags
        .max_cost_ratio
        .or(o.max_cost_ratio)
        .map(check_max_cost_ratio)
        .transpose()?
        .unwrap_or(0.0);
    let control = flags
        .control
        .or(o.control.as_deref())
        .map(parse_control)
        .transpose()?;
    let derive_argmax = o.derive_argmax.unwrap_or(false);
    if control == Some(Control::Random) && derive_argmax {
        bail!(
            "optimize.control: the random control draws K candidates; it does not go with derive_argmax"
        );
    }
    Ok(v1::OptimizeSpec {
        space: match &o.space {
            Some(s) => parse_space(s)? as i32,
            None => 0,
        },
        reward,
        iterations: o.iterations.unwrap_or(0),
        samples_per_iteration: o.samples_per_iteration.unwrap_or(0),
        max_staleness: o.max_staleness.unwrap_or(0),
        learning_rate: o.learning_rate.unwrap_or(0.0),
        entropy_weight: o.entropy_weight.unwrap_or(0.0),
        final_budget: o.final_budget.as_ref().map(|b| b.to_proto(None)),
        supernet: o
            .supernet
            .as_ref()
            .map(SupernetFile::to_proto)
            .transpose()?,
        policy_profile: o.policy_profile.clone().unwrap_or_default(),
        policy_id: o.policy_id.clone().unwrap_or_default(),
        derive_argmax,
        derive_samples: o.derive_samples.unwrap_or(0),
        random_inputs: o.random_inputs.unwrap_or(false),
        final_seeds,
        max_cost_ratio,
        control: control.map(|c| c.as_str().to_string()).unwrap_or_default(),
        derive_top_k: o.derive_top_k.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_file_and_rejects_typos() {
        let f: JobFile = yaml_serde::from_str(
            "kind: evaluate\ndataset: digits\narchitectures: [darts-v2]\nbudget:\n  preset: smoke\n  epochs: 2\nseed: 3\n",
        )
        .expect("valid");
        assert_eq!(f.architectures, vec!["darts-v2"]);
        let b = f.budget.expect("budget").to_proto(None);
        assert_eq!(b.preset, "smoke");
        assert_eq!(b.overrides.and_then(|o| o.epochs), Some(2));
        let err = yaml_serde::from_str::<JobFile>("kind: evaluate\nbudget:\n  epoch: 2\n")
            .expect_err("typo");
        assert!(err.to_string().contains("epoch"), "{err}");
    }

    #[test]
    fn supernet_shards_are_auto_or_a_count() {
        let read = |shards: &str| {
            let f: JobFile = yaml_serde::from_str(&format!(
                "kind: optimize\ndataset: digits\noptimize:\n  supernet:\n    shards: {shards}\n"
            ))
            .expect("parses");
            f.optimize
                .and_then(|o| o.supernet)
                .expect("supernet")
                .to_proto()
                .map(|s| s.shards)
        };
        assert_eq!(read("auto").expect("auto"), 0);
        assert_eq!(read("12").expect("count"), 12);
        for bad in ["many", "0"] {
            let err = read(bad).expect_err(bad).to_string();
            assert!(err.contains("optimize.supernet.shards"), "{err}");
        }
    }

    #[test]
    fn every_optimize_key_reaches_the_request() {
        let f: JobFile = yaml_serde::from_str(
            "kind: optimize\ndataset: digits\noptimize:\n  space: nat++\n  reward: supernet\n  iterations: 7\n  samples_per_iteration: 5\n  max_staleness: 2\n  learning_rate: 0.001\n  entropy_weight: 0.01\n  final_budget: {preset: small, epochs: 3}\n  policy_profile: reference\n  policy_id: shared\n  derive_argmax: true\n  derive_samples: 12\n  random_inputs: true\n  final_seeds: 5\n  max_cost_ratio: 1.5\n  control: none\n  derive_top_k: 4\n  supernet:\n    init_channels: 8\n    layers: 5\n    batch_size: 32\n    train_steps_between_pairs: 3\n    learning_rate: 0.05\n    momentum: 0.8\n    weight_decay: 0.0001\n    grad_clip: 4.0\n    max_train_examples: 512\n    validation_fraction: 0.25\n    eval_batches: 2\n    max_wall_seconds: 60\n    op_set: nat-plus-plus\n    num_nodes: 3\n    shards: 6\n    steps_per_shard: 9\n    warmup_steps: 33\n    round_deadline_seconds: 90\n    derive_examples: 77\n",
        )
        .expect("valid");
        let o = optimize(
            f.optimize.as_ref().expect("optimize"),
            OptimizeFlags::default(),
        )
        .expect("converts");
        assert_eq!(o.space, v1::SearchSpace::NatPlusPlus as i32);
        assert_eq!(o.reward, v1::RewardMode::Supernet as i32);
        assert_eq!(
            (o.iterations, o.samples_per_iteration, o.max_staleness),
            (7, 5, 2)
        );
        assert_eq!((o.learning_rate, o.entropy_weight), (0.001, 0.01));
        let fb = o.final_budget.as_ref().expect("final budget");
        assert_eq!(fb.preset, "small");
        assert_eq!(fb.overrides.and_then(|b| b.epochs), Some(3));
        assert_eq!(o.policy_profile, "reference");
        assert_eq!(o.policy_id, "shared");
        assert!(o.derive_argmax && o.random_inputs);
        assert_eq!(o.derive_samples, 12);
        assert_eq!((o.final_seeds, o.max_cost_ratio), (5, 1.5));
        assert_eq!(o.control, "none");
        let sn = o.supernet.as_ref().expect("supernet");
        assert_eq!(
            *sn,
            v1::SupernetSettings {
                init_channels: 8,
                layers: 5,
                batch_size: 32,
                train_steps_between_pairs: 3,
                learning_rate: 0.05,
                momentum: 0.8,
                weight_decay: 0.0001,
                grad_clip: 4.0,
                max_train_examples: 512,
                validation_fraction: 0.25,
                eval_batches: 2,
                max_wall_seconds: 60.0,
                op_set: "nat-plus-plus".into(),
                num_nodes: 3,
                shards: 6,
                steps_per_shard: 9,
                warmup_steps: 33,
                round_deadline_seconds: 90.0,
                derive_examples: 77,
            }
        );
        assert_eq!(o.derive_top_k, 4);
        // The --reward flag wins over the file.
        let flags = OptimizeFlags {
            reward: Some("proxy"),
            ..OptimizeFlags::default()
        };
        let o = optimize(f.optimize.as_ref().expect("optimize"), flags).expect("ok");
        assert_eq!(o.reward, v1::RewardMode::Proxy as i32);
        // Unset keys take the coordinator's defaults.
        let d = optimize(&OptimizeFile::default(), OptimizeFlags::default()).expect("defaults");
        assert_eq!(d, v1::OptimizeSpec::default());
    }

    /// `budget:` has a key for every field of `nat_schema::Budget` (a field added there and
    /// not here fails this), and resolves through it to the same budget.
    #[test]
    fn budget_keys_are_the_schema_budgets_fields() {
        let paper = Budget::preset("paper").expect("paper");
        let mut keys = match serde_json::to_value(paper).expect("json") {
            serde_json::Value::Object(m) => m,
            other => panic!("a budget is an object, got {other}"),
        };
        keys.insert("preset".into(), serde_json::json!("smoke"));
        let file: BudgetFile =
            serde_json::from_value(serde_json::Value::Object(keys)).expect("every field a key");
        let (preset, budget) = file.resolve(None, "budget").expect("valid");
        assert_eq!(preset, "smoke");
        assert_eq!(budget, paper);
        // The --budget flag names the preset; overrides still apply.
        let (preset, budget) = file.resolve(Some("small"), "budget").expect("valid");
        assert_eq!((preset.as_str(), budget), ("small", paper));
    }

    #[test]
    fn bad_budgets_and_kinds_name_the_field() {
        let bad = BudgetFile {
            epochs: Some(0),
            ..Default::default()
        };
        let err = bad.resolve(None, "budget").expect_err("zero epochs");
        assert!(err.to_string().contains("budget.epochs"), "{err}");
        let err = BudgetFile::default()
            .resolve(Some("huge"), "optimize.final_budget")
            .expect_err("unknown preset");
        assert!(
            err.to_string().contains("optimize.final_budget.preset"),
            "{err}"
        );
        let bad = SupernetFile {
            batch_size: Some(1),
            ..Default::default()
        };
        let err = bad.resolve("smoke").expect_err("batch of one");
        assert!(
            err.to_string().contains("optimize.supernet.batch_size"),
            "{err}"
        );
        assert_eq!(
            parse_kind(" Optimize ").expect("kind"),
            v1::JobKind::Optimize
        );
        let err = parse_kind("train").expect_err("not a kind");
        assert!(
            err.to_string().contains("kind: unknown job kind \"train\""),
            "{err}"
        );
        assert_eq!(
            parse_reward("SUPERNET").expect("reward"),
            v1::RewardMode::Supernet
        );
        assert!(parse_reward("exact").is_err());
        for k in JobKind::ALL {
            assert_eq!(job_kind_from_proto(job_kind_to_proto(*k) as i32), Some(*k));
        }
        assert_eq!(job_kind_from_proto(0), None);
    }

    #[test]
    fn unknown_keys_are_rejected_naming_the_key() {
        for (yaml, key) in [
            ("optimize:\n  iteration: 3\n", "iteration"),
            ("optimize:\n  derive_sample: 3\n", "derive_sample"),
            ("optimize:\n  supernet:\n    channels: 8\n", "channels"),
            ("optimize:\n  final_budget:\n    epoch: 1\n", "epoch"),
            ("requirements:\n  gpu: true\n", "gpu"),
            ("architecture: [darts-v2]\n", "architecture"),
        ] {
            let err = yaml_serde::from_str::<JobFile>(yaml).expect_err(yaml);
            assert!(
                err.to_string().contains(&format!("unknown field `{key}`")),
                "{yaml}: {err}"
            );
        }
        // A wrong type names the key too.
        let err = yaml_serde::from_str::<JobFile>("optimize:\n  derive_argmax: maybe\n")
            .expect_err("not a bool");
        assert!(err.to_string().contains("derive_argmax"), "{err}");
    }

    #[test]
    fn verdict_settings_reach_the_request_and_bad_values_name_the_key() {
        let f: JobFile = yaml_serde::from_str(
            "optimize:\n  final_seeds: 4\n  max_cost_ratio: 1.25\n  control: Random\n",
        )
        .expect("valid");
        let o = f.optimize.as_ref().expect("optimize");
        let spec = optimize(o, OptimizeFlags::default()).expect("converts");
        assert_eq!(
            (spec.final_seeds, spec.max_cost_ratio, spec.control.as_str()),
            (4, 1.25, "random")
        );
        // Flags win over the file.
        let flags = OptimizeFlags {
            final_seeds: Some(7),
            max_cost_ratio: Some(2.0),
            control: Some("none"),
            ..OptimizeFlags::default()
        };
        let spec = optimize(o, flags).expect("converts");
        assert_eq!(
            (spec.final_seeds, spec.max_cost_ratio, spec.control.as_str()),
            (7, 2.0, "none")
        );
        // Unset: the coordinator's defaults (3 seeds, ratio 1, no control).
        let spec = optimize(&OptimizeFile::default(), OptimizeFlags::default()).expect("ok");
        assert_eq!(
            (spec.final_seeds, spec.max_cost_ratio, spec.control.as_str()),
            (0, 0.0, "")
        );
        for (yaml, field, says) in [
            ("final_seeds: 0", "optimize.final_seeds", "1..=32"),
            ("final_seeds: 33", "optimize.final_seeds", "got 33"),
            ("max_cost_ratio: 0.5", "optimize.max_cost_ratio", "[1, 10]"),
            ("max_cost_ratio: .nan", "optimize.max_cost_ratio", "got NaN"),
            ("max_cost_ratio: 11", "optimize.max_cost_ratio", "got 11"),
            ("control: placebo", "optimize.control", "\"placebo\""),
            (
                "control: random\n  derive_argmax: true",
                "optimize.control",
                "derive_argmax",
            ),
        ] {
            let f: JobFile =
                yaml_serde::from_str(&format!("optimize:\n  {yaml}\n")).expect("parses");
            let err = optimize(
                f.optimize.as_ref().expect("optimize"),
                OptimizeFlags::default(),
            )
            .expect_err(yaml);
            let msg = format!("{err:#}");
            assert!(
                msg.starts_with(&format!("{field}: ")) && msg.contains(says),
                "{yaml}: {msg}"
            );
            assert_eq!(msg.lines().count(), 1, "{msg}");
        }
        let err = yaml_serde::from_str::<JobFile>("optimize:\n  final_seeds: three\n")
            .expect_err("not a number");
        assert!(err.to_string().contains("final_seeds"), "{err}");
    }
}
