//! Training budgets: the named presets, per-field overrides, validation.
//!
//! A job names a preset (`smoke`, `small`, `paper`) and may override any field. The coordinator
//! resolves this to a complete [`Budget`] at submission, so a task carries plain numbers and a
//! worker needs to know no preset. The resolved budget is also part of the reward-estimate key
//! ([`Budget::key`]): two measurements are averaged only if they trained the same way.

use nat_proto::v1;
use serde::{Deserialize, Serialize};

use crate::FieldError;

/// Names of the presets, in the order `natctl` documents them.
pub const PRESETS: &[&str] = &["smoke", "small", "paper"];

/// The preset used when a job names none.
pub const DEFAULT_PRESET: &str = "small";

/// A fully resolved training budget (the fields of `nat.v1.TrainingBudget`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// Training epochs.
    pub epochs: u32,
    /// Minibatch size.
    pub batch_size: u32,
    /// Initial SGD learning rate.
    pub learning_rate: f64,
    /// Floor of the cosine schedule.
    pub lr_min: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Maximum gradient norm (0 = no clipping).
    pub grad_clip: f64,
    /// Initial channels C.
    pub init_channels: u32,
    /// Cells L.
    pub layers: u32,
    /// Training examples used (0 = all).
    pub max_train_examples: u32,
    /// Evaluation examples used (0 = all).
    pub max_eval_examples: u32,
    /// Held-out fraction of the training split (0 = report on the test split).
    pub validation_fraction: f64,
    /// Cutout length in pixels (0 = off).
    pub cutout: u32,
    /// Label smoothing.
    pub label_smoothing: f64,
    /// Weight of the auxiliary head's loss (0 = no auxiliary head).
    pub auxiliary_weight: f64,
    /// Final drop-path probability.
    pub drop_path_prob: f64,
    /// Wall-clock cap of one task in seconds (0 = none).
    pub max_wall_seconds: f64,
}

impl Budget {
    /// The preset called `name`, if there is one.
    ///
    /// - `smoke`: seconds per task on the 8×8 digits on one CPU core (tests, CI): 1 epoch, C = 4,
    ///   L = 3 (reductions after cells 1 and 2), 512 training / 256 evaluation examples.
    /// - `small`: the CPU demo on Fashion-MNIST, a few minutes per task: 2 epochs, C = 8, L = 5,
    ///   6 000 training / 2 000 evaluation examples.
    /// - `paper`: NAT's CIFAR-10 retraining (spec §5.2): 600 epochs, batch 96, lr 0.025 cosine to
    ///   0.001, momentum 0.9, weight decay 3e-4, clip 5, C = 36, L = 20, drop-path 0.2, auxiliary
    ///   weight 0.4, cutout 16, full training set, reported on the test set.
    pub fn preset(name: &str) -> Option<Budget> {
        match name {
            "smoke" => Some(Budget {
                epochs: 1,
                batch_size: 32,
                learning_rate: 0.05,
                lr_min: 0.0,
                momentum: 0.9,
                weight_decay: 3e-4,
                grad_clip: 5.0,
                init_channels: 4,
                layers: 3,
                max_train_examples: 512,
                max_eval_examples: 256,
                validation_fraction: 0.2,
                cutout: 0,
                label_smoothing: 0.0,
                auxiliary_weight: 0.0,
                drop_path_prob: 0.0,
                max_wall_seconds: 120.0,
            }),
            "small" => Some(Budget {
                epochs: 2,
                batch_size: 64,
                learning_rate: 0.025,
                lr_min: 0.001,
                momentum: 0.9,
                weight_decay: 3e-4,
                grad_clip: 5.0,
                init_channels: 8,
                layers: 5,
                max_train_examples: 6000,
                max_eval_examples: 2000,
                validation_fraction: 0.1,
                cutout: 0,
                label_smoothing: 0.0,
                auxiliary_weight: 0.0,
                drop_path_prob: 0.0,
                max_wall_seconds: 900.0,
            }),
            "paper" => Some(Budget {
                epochs: 600,
                batch_size: 96,
                learning_rate: 0.025,
                lr_min: 0.001,
                momentum: 0.9,
                weight_decay: 3e-4,
                grad_clip: 5.0,
                init_channels: 36,
                layers: 20,
                max_train_examples: 0,
                max_eval_examples: 0,
                validation_fraction: 0.0,
                cutout: 16,
                label_smoothing: 0.0,
                auxiliary_weight: 0.4,
                drop_path_prob: 0.2,
                max_wall_seconds: 0.0,
            }),
            _ => None,
        }
    }

    /// Resolves a preset name (empty = [`DEFAULT_PRESET`]) and overrides into a validated budget.
    /// `field` prefixes the names in errors (e.g. `budget`).
    pub fn resolve(
        spec: Option<&v1::BudgetSpec>,
        field: &str,
    ) -> Result<(String, Budget), FieldError> {
        let preset = spec
            .map(|s| s.preset.trim())
            .filter(|p| !p.is_empty())
            .unwrap_or(DEFAULT_PRESET)
            .to_ascii_lowercase();
        let mut budget = Budget::preset(&preset).ok_or_else(|| {
            FieldError::new(
                format!("{field}.preset"),
                format!(
                    "unknown preset {preset:?} (expected one of {})",
                    PRESETS.join(", ")
                ),
            )
        })?;
        if let Some(o) = spec.and_then(|s| s.overrides.as_ref()) {
            budget.apply(o);
        }
        budget.validate(field)?;
        Ok((preset, budget))
    }

    fn apply(&mut self, o: &v1::BudgetOverrides) {
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = o.$f { self.$f = v; } )* };
        }
        set!(
            epochs,
            batch_size,
            learning_rate,
            lr_min,
            momentum,
            weight_decay,
            grad_clip,
            init_channels,
            layers,
            max_train_examples,
            max_eval_examples,
            validation_fraction,
            cutout,
            label_smoothing,
            auxiliary_weight,
            drop_path_prob,
            max_wall_seconds
        );
    }

    /// Checks every field against its bounds; the error names `{field}.{name}`.
    pub fn validate(&self, field: &str) -> Result<(), FieldError> {
        let int = |name: &str, v: u32, lo: u32, hi: u32| int_in(field, name, v, lo, hi);
        let real = |name: &str, v: f64, lo: f64, hi: f64, hi_open: bool| {
            real_in(field, name, v, lo, hi, hi_open)
        };
        int("epochs", self.epochs, 1, 10_000)?;
        int("batch_size", self.batch_size, 1, 4096)?;
        real("learning_rate", self.learning_rate, 0.0, 10.0, false)?;
        if self.learning_rate <= 0.0 {
            return Err(FieldError::new(
                format!("{field}.learning_rate"),
                "must be positive",
            ));
        }
        real("lr_min", self.lr_min, 0.0, self.learning_rate, false)?;
        real("momentum", self.momentum, 0.0, 1.0, true)?;
        real("weight_decay", self.weight_decay, 0.0, 1.0, false)?;
        real("grad_clip", self.grad_clip, 0.0, 1e6, false)?;
        int("init_channels", self.init_channels, 2, 1024)?;
        if !self.init_channels.is_multiple_of(2) {
            return Err(FieldError::new(
                format!("{field}.init_channels"),
                format!(
                    "must be even (FactorizedReduce splits channels in two), got {}",
                    self.init_channels
                ),
            ));
        }
        int("layers", self.layers, 1, 100)?;
        real(
            "validation_fraction",
            self.validation_fraction,
            0.0,
            0.9,
            false,
        )?;
        int("cutout", self.cutout, 0, 256)?;
        real("label_smoothing", self.label_smoothing, 0.0, 1.0, true)?;
        real("auxiliary_weight", self.auxiliary_weight, 0.0, 10.0, false)?;
        real("drop_path_prob", self.drop_path_prob, 0.0, 1.0, true)?;
        real(
            "max_wall_seconds",
            self.max_wall_seconds,
            0.0,
            30.0 * 24.0 * 3600.0,
            false,
        )?;
        Ok(())
    }

    /// A stable text key of this budget for reward estimates (its JSON, fields in declaration
    /// order, shortest round-trip float formatting).
    pub fn key(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| format!("{self:?}"))
    }

    /// Learning rate of `epoch` (0-based): cosine from `learning_rate` to `lr_min` over
    /// `epochs` (DARTS' per-epoch `CosineAnnealingLR`).
    pub fn learning_rate_at(&self, epoch: u32) -> f64 {
        let t = f64::from(epoch) / f64::from(self.epochs.max(1));
        self.lr_min
            + 0.5 * (self.learning_rate - self.lr_min) * (1.0 + (std::f64::consts::PI * t).cos())
    }

    /// From the wire, as sent to a worker (no validation: the worker checks what it can
    /// train, `nat_train::train::budget::validate`).
    pub fn from_proto(b: &v1::TrainingBudget) -> Budget {
        Budget {
            epochs: b.epochs,
            batch_size: b.batch_size,
            learning_rate: b.learning_rate,
            lr_min: b.lr_min,
            momentum: b.momentum,
            weight_decay: b.weight_decay,
            grad_clip: b.grad_clip,
            init_channels: b.init_channels,
            layers: b.layers,
            max_train_examples: b.max_train_examples,
            max_eval_examples: b.max_eval_examples,
            validation_fraction: b.validation_fraction,
            cutout: b.cutout,
            label_smoothing: b.label_smoothing,
            auxiliary_weight: b.auxiliary_weight,
            drop_path_prob: b.drop_path_prob,
            max_wall_seconds: b.max_wall_seconds,
        }
    }

    /// A `BudgetSpec` that resolves to exactly this budget: `preset` with every field set as
    /// an override.
    pub fn to_spec_proto(&self, preset: &str) -> v1::BudgetSpec {
        v1::BudgetSpec {
            preset: preset.to_string(),
            overrides: Some(v1::BudgetOverrides {
                epochs: Some(self.epochs),
                batch_size: Some(self.batch_size),
                learning_rate: Some(self.learning_rate),
                lr_min: Some(self.lr_min),
                momentum: Some(self.momentum),
                weight_decay: Some(self.weight_decay),
                grad_clip: Some(self.grad_clip),
                init_channels: Some(self.init_channels),
                layers: Some(self.layers),
                max_train_examples: Some(self.max_train_examples),
                max_eval_examples: Some(self.max_eval_examples),
                validation_fraction: Some(self.validation_fraction),
                cutout: Some(self.cutout),
                label_smoothing: Some(self.label_smoothing),
                auxiliary_weight: Some(self.auxiliary_weight),
                drop_path_prob: Some(self.drop_path_prob),
                max_wall_seconds: Some(self.max_wall_seconds),
            }),
        }
    }

    /// The wire form.
    pub fn to_proto(&self) -> v1::TrainingBudget {
        v1::TrainingBudget {
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
        }
    }
}

/// Settings of the weight-sharing supernet of an optimize job with `reward = supernet`
/// (the fields of `nat.v1.SupernetSettings` the coordinator resolves; `op_set` and `num_nodes`
/// follow from the job's space and inputs). Stored in the job spec; sent in every task.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SupernetBudget {
    /// Initial channels C of the supernet.
    pub init_channels: u32,
    /// Cells of the supernet.
    pub layers: u32,
    /// Minibatch size of w-training and of scoring a pair.
    pub batch_size: u32,
    /// SGD steps on random β before each scored pair.
    pub train_steps_between_pairs: u32,
    /// Constant SGD learning rate of w.
    pub learning_rate: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Maximum gradient norm.
    pub grad_clip: f64,
    /// Training examples used for w (0 = all).
    pub max_train_examples: u32,
    /// Held-out fraction of the training split on which pairs are scored (D_θ).
    pub validation_fraction: f64,
    /// Validation minibatches per scored pair.
    pub eval_batches: u32,
    /// Wall-clock cap of one supernet task in seconds (0 = none).
    pub max_wall_seconds: f64,
    /// Shard tasks per learning round (0 = auto: one per live worker slot that matches the
    /// job, at most the round's pairs and [`MAX_SUPERNET_SHARDS`]).
    #[serde(default)]
    pub shards: u32,
    /// SGD steps on random β each shard trains from the round's base version before it scores
    /// its pairs (local SGD; the coordinator averages the shards).
    #[serde(default)]
    pub steps_per_shard: u32,
    /// Steps of the warm-up task that trains fresh weights into version 1 before the first
    /// scored round.
    #[serde(default)]
    pub warmup_steps: u32,
    /// Seconds after a round's shards were queued at which the round averages the shards that
    /// reported and cancels the others (0 = wait for every shard).
    #[serde(default)]
    pub round_deadline_seconds: f64,
    /// Validation examples each derive candidate is scored on by the supernet (0 = the whole
    /// validation split); the same examples for every candidate.
    #[serde(default)]
    pub derive_examples: u32,
}

/// Most shard tasks in one learning round.
pub const MAX_SUPERNET_SHARDS: u32 = 64;

impl SupernetBudget {
    /// The supernet settings that go with a budget preset (an unknown name gets `small`'s).
    ///
    /// - `smoke`: C = 4, 3 cells, batch 32, 2 w-steps per pair on 512 examples, 20 % held out:
    ///   a task of a few pairs takes seconds on one CPU core (tests, CI).
    /// - `small`: C = 8, 5 cells, batch 64, 5 w-steps per pair on 6 000 examples, 2 scoring
    ///   batches per pair.
    /// - `paper`: NAT's supernet (spec §4.3, §4.7): C = 20, 8 cells, batch 64, SGD lr 0.01
    ///   constant, momentum 0.9, weight decay 3e-4, pairs scored on the 60 % θ split. One w-step
    ///   per pair approximates the release's alternation (≈313 w-steps per ≈469 policy steps).
    pub fn preset(name: &str) -> SupernetBudget {
        match name {
            "smoke" => SupernetBudget {
                init_channels: 4,
                layers: 3,
                batch_size: 32,
                train_steps_between_pairs: 2,
                learning_rate: 0.05,
                momentum: 0.9,
                weight_decay: 3e-4,
                grad_clip: 5.0,
                max_train_examples: 512,
                validation_fraction: 0.2,
                eval_batches: 1,
                max_wall_seconds: 120.0,
                shards: 0,
                steps_per_shard: 4,
                warmup_steps: 16,
                round_deadline_seconds: 300.0,
                derive_examples: 256,
            },
            "paper" => SupernetBudget {
                init_channels: 20,
                layers: 8,
                batch_size: 64,
                train_steps_between_pairs: 1,
                learning_rate: 0.01,
                momentum: 0.9,
                weight_decay: 3e-4,
                grad_clip: 5.0,
                max_train_examples: 0,
                validation_fraction: 0.6,
                eval_batches: 1,
                max_wall_seconds: 0.0,
                shards: 0,
                steps_per_shard: 10,
                warmup_steps: 2000,
                round_deadline_seconds: 3600.0,
                derive_examples: 10_000,
            },
            _ => SupernetBudget {
                init_channels: 8,
                layers: 5,
                batch_size: 64,
                train_steps_between_pairs: 5,
                learning_rate: 0.025,
                momentum: 0.9,
                weight_decay: 3e-4,
                grad_clip: 5.0,
                max_train_examples: 6000,
                validation_fraction: 0.1,
                eval_batches: 2,
                max_wall_seconds: 900.0,
                shards: 0,
                steps_per_shard: 20,
                warmup_steps: 200,
                round_deadline_seconds: 1800.0,
                derive_examples: 2048,
            },
        }
    }

    /// The preset's settings with every non-zero field of `overrides` taken instead (proto3
    /// cannot tell an unset number from 0, so 0 keeps the preset's value), validated.
    /// `field` prefixes the names in errors (e.g. `optimize.supernet`).
    pub fn resolve(
        preset: &str,
        overrides: Option<&v1::SupernetSettings>,
        field: &str,
    ) -> Result<SupernetBudget, FieldError> {
        let mut s = SupernetBudget::preset(preset);
        if let Some(o) = overrides {
            macro_rules! set {
                ($zero:expr; $($f:ident),*) => { $( if o.$f != $zero { s.$f = o.$f; } )* };
            }
            set!(0u32; init_channels, layers, batch_size, train_steps_between_pairs);
            set!(0u32; max_train_examples, eval_batches);
            set!(0u32; shards, steps_per_shard, warmup_steps, derive_examples);
            set!(0.0f64; learning_rate, momentum, weight_decay, grad_clip);
            set!(0.0f64; validation_fraction, max_wall_seconds, round_deadline_seconds);
        }
        s.validate(field)?;
        Ok(s)
    }

    /// Checks every field against its bounds; the error names `{field}.{name}`.
    pub fn validate(&self, field: &str) -> Result<(), FieldError> {
        let int = |name: &str, v: u32, lo: u32, hi: u32| int_in(field, name, v, lo, hi);
        let real = |name: &str, v: f64, lo: f64, hi: f64, hi_open: bool| {
            real_in(field, name, v, lo, hi, hi_open)
        };
        int("init_channels", self.init_channels, 2, 1024)?;
        if !self.init_channels.is_multiple_of(2) {
            return Err(FieldError::new(
                format!("{field}.init_channels"),
                format!(
                    "must be even (FactorizedReduce splits channels in two), got {}",
                    self.init_channels
                ),
            ));
        }
        int("layers", self.layers, 1, 100)?;
        // Batch-norm in train mode needs two examples per batch.
        int("batch_size", self.batch_size, 2, 4096)?;
        int(
            "train_steps_between_pairs",
            self.train_steps_between_pairs,
            0,
            100_000,
        )?;
        real("learning_rate", self.learning_rate, 0.0, 10.0, false)?;
        if self.learning_rate <= 0.0 {
            return Err(FieldError::new(
                format!("{field}.learning_rate"),
                "must be positive",
            ));
        }
        real("momentum", self.momentum, 0.0, 1.0, true)?;
        real("weight_decay", self.weight_decay, 0.0, 1.0, false)?;
        real("grad_clip", self.grad_clip, 0.0, 1e6, false)?;
        real(
            "validation_fraction",
            self.validation_fraction,
            0.0,
            0.9,
            false,
        )?;
        if self.validation_fraction <= 0.0 {
            return Err(FieldError::new(
                format!("{field}.validation_fraction"),
                "must be positive: pairs are scored on the held-out part of the training split",
            ));
        }
        int("eval_batches", self.eval_batches, 1, 1000)?;
        real(
            "max_wall_seconds",
            self.max_wall_seconds,
            0.0,
            30.0 * 24.0 * 3600.0,
            false,
        )?;
        int("shards", self.shards, 0, MAX_SUPERNET_SHARDS)?;
        int("steps_per_shard", self.steps_per_shard, 0, 1_000_000)?;
        int("warmup_steps", self.warmup_steps, 0, 10_000_000)?;
        int("derive_examples", self.derive_examples, 0, 10_000_000)?;
        real(
            "round_deadline_seconds",
            self.round_deadline_seconds,
            0.0,
            30.0 * 24.0 * 3600.0,
            false,
        )?;
        Ok(())
    }

    /// The wire form (`op_set` named, `num_nodes` 0: the job's cells decide it).
    pub fn to_proto(&self, op_set: &str) -> v1::SupernetSettings {
        self.task_settings(op_set, 0).to_proto()
    }

    /// The settings a `supernet` task carries: these, for the supernet of `op_set` (serde
    /// name) with `num_nodes` intermediate nodes per cell.
    pub fn task_settings(&self, op_set: &str, num_nodes: u32) -> crate::SupernetSettings {
        crate::SupernetSettings {
            init_channels: self.init_channels,
            layers: self.layers,
            batch_size: self.batch_size,
            train_steps_between_pairs: self.train_steps_between_pairs,
            learning_rate: self.learning_rate,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            grad_clip: self.grad_clip,
            max_train_examples: self.max_train_examples,
            validation_fraction: self.validation_fraction,
            eval_batches: self.eval_batches,
            max_wall_seconds: self.max_wall_seconds,
            op_set: op_set.to_string(),
            num_nodes,
            shards: self.shards,
            steps_per_shard: self.steps_per_shard,
            warmup_steps: self.warmup_steps,
            round_deadline_seconds: self.round_deadline_seconds,
            derive_examples: self.derive_examples,
        }
    }
}

/// `{field}.{name}` must be an integer in `lo..=hi`.
fn int_in(field: &str, name: &str, v: u32, lo: u32, hi: u32) -> Result<(), FieldError> {
    if v < lo || v > hi {
        return Err(FieldError::new(
            format!("{field}.{name}"),
            format!("must be in {lo}..={hi}, got {v}"),
        ));
    }
    Ok(())
}

/// `{field}.{name}` must be a finite number in `[lo, hi]` (`[lo, hi)` when `hi_open`).
fn real_in(
    field: &str,
    name: &str,
    v: f64,
    lo: f64,
    hi: f64,
    hi_open: bool,
) -> Result<(), FieldError> {
    let ok = v.is_finite() && v >= lo && if hi_open { v < hi } else { v <= hi };
    if !ok {
        let close = if hi_open { ")" } else { "]" };
        return Err(FieldError::new(
            format!("{field}.{name}"),
            format!("must be a finite number in [{lo}, {hi}{close}, got {v}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_is_valid() {
        for name in PRESETS {
            let b = Budget::preset(name).expect("preset exists");
            b.validate("budget").expect("preset validates");
        }
    }

    #[test]
    fn overrides_replace_only_their_fields() {
        let spec = v1::BudgetSpec {
            preset: "smoke".into(),
            overrides: Some(v1::BudgetOverrides {
                epochs: Some(3),
                learning_rate: Some(0.1),
                ..Default::default()
            }),
        };
        let (name, b) = Budget::resolve(Some(&spec), "budget").expect("valid");
        let smoke = Budget::preset("smoke").expect("smoke");
        assert_eq!(name, "smoke");
        assert_eq!(b.epochs, 3);
        assert_eq!(b.learning_rate, 0.1);
        assert_eq!(b.batch_size, smoke.batch_size);
        assert_ne!(b.key(), smoke.key());
    }

    #[test]
    fn bad_values_name_the_field() {
        let cases: Vec<(v1::BudgetOverrides, &str)> = vec![
            (
                v1::BudgetOverrides {
                    epochs: Some(0),
                    ..Default::default()
                },
                "budget.epochs",
            ),
            (
                v1::BudgetOverrides {
                    learning_rate: Some(f64::NAN),
                    ..Default::default()
                },
                "budget.learning_rate",
            ),
            (
                v1::BudgetOverrides {
                    init_channels: Some(5),
                    ..Default::default()
                },
                "budget.init_channels",
            ),
            (
                v1::BudgetOverrides {
                    momentum: Some(1.0),
                    ..Default::default()
                },
                "budget.momentum",
            ),
        ];
        for (overrides, field) in cases {
            let spec = v1::BudgetSpec {
                preset: "small".into(),
                overrides: Some(overrides),
            };
            match Budget::resolve(Some(&spec), "budget") {
                Err(FieldError { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected invalid {field}, got {other:?}"),
            }
        }
        let unknown = v1::BudgetSpec {
            preset: "huge".into(),
            overrides: None,
        };
        assert!(matches!(
            Budget::resolve(Some(&unknown), "budget"),
            Err(FieldError { field, .. }) if field == "budget.preset"
        ));
    }

    #[test]
    fn every_supernet_preset_is_valid() {
        for name in PRESETS {
            SupernetBudget::preset(name)
                .validate("optimize.supernet")
                .expect("supernet preset validates");
        }
    }

    #[test]
    fn supernet_overrides_replace_non_zero_fields_and_name_bad_ones() {
        let o = v1::SupernetSettings {
            batch_size: 16,
            learning_rate: 0.2,
            ..Default::default()
        };
        let s = SupernetBudget::resolve("smoke", Some(&o), "optimize.supernet").expect("valid");
        let smoke = SupernetBudget::preset("smoke");
        assert_eq!(s.batch_size, 16);
        assert_eq!(s.learning_rate, 0.2);
        assert_eq!(s.layers, smoke.layers);
        let cases: Vec<(v1::SupernetSettings, &str)> = vec![
            (
                v1::SupernetSettings {
                    batch_size: 1,
                    ..Default::default()
                },
                "optimize.supernet.batch_size",
            ),
            (
                v1::SupernetSettings {
                    init_channels: 7,
                    ..Default::default()
                },
                "optimize.supernet.init_channels",
            ),
            (
                v1::SupernetSettings {
                    momentum: 1.5,
                    ..Default::default()
                },
                "optimize.supernet.momentum",
            ),
            (
                v1::SupernetSettings {
                    validation_fraction: 0.95,
                    ..Default::default()
                },
                "optimize.supernet.validation_fraction",
            ),
            (
                v1::SupernetSettings {
                    learning_rate: f64::INFINITY,
                    ..Default::default()
                },
                "optimize.supernet.learning_rate",
            ),
        ];
        for (o, field) in cases {
            match SupernetBudget::resolve("small", Some(&o), "optimize.supernet") {
                Err(FieldError { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected invalid {field}, got {other:?}"),
            }
        }
    }
}
