//! `tasks.payload` and `tasks.result` of each task kind, and their wire forms.

use nat_arch::DatasetShape;
use nat_proto::v1;
use serde::{Deserialize, Serialize};

use crate::dataset::shape_to_proto;
use crate::{Budget, EvalSplit, FieldError, SampleId};

/// `tasks.payload` of a `train_eval` task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainEvalPayload {
    /// Position of the architecture in the job.
    pub index: u32,
    /// Canonical genotype JSON.
    pub genotype_json: String,
    /// `Genotype::canonical_hash` of it.
    pub arch_hash: String,
    /// Dataset name.
    pub dataset: String,
    /// The job's dataset shape (payloads stored before shapes have none: the built-in's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_shape: Option<DatasetShape>,
    /// Resolved budget.
    pub budget: Budget,
    /// Seed.
    pub seed: u64,
    /// Resume from checkpoints (final evaluations).
    #[serde(default)]
    pub checkpointed: bool,
    /// Checkpoint key, stable across attempts.
    #[serde(default)]
    pub checkpoint_key: String,
    /// The split the accuracy is measured on (payloads stored before splits were named measured
    /// on the validation split).
    #[serde(default)]
    pub split: EvalSplit,
}

impl TrainEvalPayload {
    /// The wire form a worker receives.
    pub fn to_proto(&self) -> v1::TrainEvalTask {
        v1::TrainEvalTask {
            genotype_json: self.genotype_json.clone(),
            dataset: self.dataset.clone(),
            budget: Some(self.budget.to_proto()),
            seed: self.seed,
            checkpointed: self.checkpointed,
            checkpoint_key: self.checkpoint_key.clone(),
            split: match self.split {
                EvalSplit::Validation => v1::EvalSplit::Validation,
                EvalSplit::Test => v1::EvalSplit::Test,
            } as i32,
            dataset_shape: wire_shape(&self.dataset, self.dataset_shape),
        }
    }
}

/// The shape a task carries on the wire: its own, else (stored before shapes) the built-in
/// dataset's, else none.
fn wire_shape(dataset: &str, shape: Option<DatasetShape>) -> Option<v1::DatasetShape> {
    shape
        .or_else(|| nat_arch::Dataset::from_name(dataset).map(nat_arch::Dataset::shape))
        .map(shape_to_proto)
}

/// The measurements of a `train_eval` task (the worker's `TrainEvalResult`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrainEvalOutcome {
    /// Top-1 accuracy, fraction.
    pub accuracy: f64,
    /// Loss.
    pub loss: f64,
    /// Parameters.
    pub params: u64,
    /// Multiply-adds.
    pub madds: u64,
    /// Wall seconds.
    pub wall_seconds: f64,
    /// Images per second.
    pub images_per_second: f64,
}

impl TrainEvalOutcome {
    /// From the wire, validated: every float finite, accuracy in [0, 1], the rest non-negative.
    /// Errors name `train_eval.<field>`.
    pub fn from_proto(r: &v1::TrainEvalResult) -> Result<Self, FieldError> {
        let check = |name: &str, v: f64, hi: f64| {
            if v.is_finite() && (0.0..=hi).contains(&v) {
                Ok(())
            } else {
                Err(FieldError::new(
                    format!("train_eval.{name}"),
                    format!("must be a finite number in [0, {hi}], got {v}"),
                ))
            }
        };
        check("accuracy", r.accuracy, 1.0)?;
        check("loss", r.loss, 1e12)?;
        check("wall_seconds", r.wall_seconds, 1e9)?;
        check("images_per_second", r.images_per_second, 1e12)?;
        Ok(TrainEvalOutcome {
            accuracy: r.accuracy,
            loss: r.loss,
            params: r.params,
            madds: r.madds,
            wall_seconds: r.wall_seconds,
            images_per_second: r.images_per_second,
        })
    }

    /// To the wire.
    pub fn to_proto(self) -> v1::TrainEvalResult {
        v1::TrainEvalResult {
            accuracy: self.accuracy,
            loss: self.loss,
            params: self.params,
            madds: self.madds,
            wall_seconds: self.wall_seconds,
            images_per_second: self.images_per_second,
        }
    }
}

/// `tasks.result` of a `train_eval` task, as the coordinator writes it.
///
/// Read through [`TrainEvalResultDoc`] (every field spelled out) rather than through
/// `#[serde(flatten)]`, which buffers the flattened fields and so loses the path of a field that
/// does not fit: a decode error names `accuracy`, not the document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "TrainEvalResultDoc")]
pub struct TrainEvalResult {
    /// Position of the architecture in the job.
    pub index: u32,
    /// The worker that reported it.
    #[serde(default)]
    pub worker_id: String,
    /// The measurements.
    #[serde(flatten)]
    pub outcome: TrainEvalOutcome,
}

/// The stored form of [`TrainEvalResult`], flat.
#[derive(Deserialize)]
struct TrainEvalResultDoc {
    index: u32,
    #[serde(default)]
    worker_id: String,
    accuracy: f64,
    loss: f64,
    params: u64,
    madds: u64,
    wall_seconds: f64,
    images_per_second: f64,
}

impl From<TrainEvalResultDoc> for TrainEvalResult {
    fn from(d: TrainEvalResultDoc) -> Self {
        TrainEvalResult {
            index: d.index,
            worker_id: d.worker_id,
            outcome: TrainEvalOutcome {
                accuracy: d.accuracy,
                loss: d.loss,
                params: d.params,
                madds: d.madds,
                wall_seconds: d.wall_seconds,
                images_per_second: d.images_per_second,
            },
        }
    }
}

/// The supernet settings a `supernet` task carries (the JSON form of `nat.v1.SupernetSettings`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SupernetSettings {
    /// Initial channels C.
    pub init_channels: u32,
    /// Cells.
    pub layers: u32,
    /// Minibatch size.
    pub batch_size: u32,
    /// w-steps on random β between scored pairs.
    pub train_steps_between_pairs: u32,
    /// SGD learning rate.
    pub learning_rate: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// Gradient clip norm.
    pub grad_clip: f64,
    /// Training examples used (0 = all).
    pub max_train_examples: u32,
    /// Held-out fraction the pairs are scored on.
    pub validation_fraction: f64,
    /// Minibatches per scored pair.
    pub eval_batches: u32,
    /// Wall-clock limit of the task (0 = none).
    pub max_wall_seconds: f64,
    /// `nat_arch::OpSet` serde name.
    pub op_set: String,
    /// Intermediate nodes per cell.
    pub num_nodes: u32,
    /// Shard tasks per learning round as set (0 = auto: one per live matching worker slot).
    #[serde(default)]
    pub shards: u32,
    /// SGD steps a round's shard trains before scoring its pairs.
    #[serde(default)]
    pub steps_per_shard: u32,
    /// Steps of the warm-up task that makes weight version 1.
    #[serde(default)]
    pub warmup_steps: u32,
    /// Seconds after which a round averages the shards that reported (0 = no deadline).
    #[serde(default)]
    pub round_deadline_seconds: f64,
    /// Validation examples each derive candidate is scored on (0 = all).
    #[serde(default)]
    pub derive_examples: u32,
}

impl SupernetSettings {
    /// The wire form.
    pub fn to_proto(&self) -> v1::SupernetSettings {
        v1::SupernetSettings {
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
            op_set: self.op_set.clone(),
            num_nodes: self.num_nodes,
            shards: self.shards,
            steps_per_shard: self.steps_per_shard,
            warmup_steps: self.warmup_steps,
            round_deadline_seconds: self.round_deadline_seconds,
            derive_examples: self.derive_examples,
        }
    }
}

/// One (β, α) pair of a supernet task: canonical genotype JSON of each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupernetPair {
    /// The input β.
    pub beta_json: String,
    /// Its transformation α.
    pub alpha_json: String,
}

/// `tasks.payload` of a `supernet` task: one shard of one learning round of an optimize job
/// (or the job's warm-up). The shard fetches weight version `base_version` from the
/// coordinator, trains `train_steps` steps on random β with `shard_seed`, scores its pairs,
/// and uploads its weights; the coordinator averages the round's shards into the next version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SupernetPayload {
    /// The learning round.
    pub iteration: u32,
    /// Index of this shard in its round.
    #[serde(default)]
    pub shard: u32,
    /// Shards of the round.
    #[serde(default = "one")]
    pub shards: u32,
    /// The weight version the shard starts from (0 = fresh weights: the warm-up).
    #[serde(default)]
    pub base_version: u64,
    /// SGD steps before scoring.
    #[serde(default)]
    pub train_steps: u32,
    /// The warm-up task (no pairs; makes version 1).
    #[serde(default)]
    pub warmup: bool,
    /// Seed of the shard's β samples and data order.
    #[serde(default)]
    pub shard_seed: u64,
    /// Derive screening: architectures (canonical JSON) to score on `base_version` without
    /// training (no pairs, no upload).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<String>,
    /// Validation examples each candidate is scored on (0 = all).
    #[serde(default)]
    pub eval_examples: u32,
    /// The policy sample of each pair (`sample_ids[i]` ↔ `pairs[i]`).
    pub sample_ids: Vec<SampleId>,
    /// The pairs to score.
    pub pairs: Vec<SupernetPair>,
    /// Dataset name.
    pub dataset: String,
    /// The job's dataset shape (payloads stored before shapes have none: the built-in's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_shape: Option<DatasetShape>,
    /// The supernet's settings.
    pub settings: SupernetSettings,
    /// Seed of the job.
    pub seed: u64,
    /// Names the shared weights a worker keeps across rounds (one per job).
    pub supernet_key: String,
}

impl SupernetPayload {
    /// The wire form a worker receives.
    pub fn to_proto(&self) -> v1::SupernetTask {
        v1::SupernetTask {
            pairs: self
                .pairs
                .iter()
                .map(|p| v1::GenotypePair {
                    beta_json: p.beta_json.clone(),
                    alpha_json: p.alpha_json.clone(),
                })
                .collect(),
            dataset: self.dataset.clone(),
            settings: Some(self.settings.to_proto()),
            seed: self.seed,
            supernet_key: self.supernet_key.clone(),
            dataset_shape: wire_shape(&self.dataset, self.dataset_shape),
            round: self.iteration,
            shard: self.shard,
            shards: self.shards,
            base_version: self.base_version,
            train_steps: self.train_steps,
            warmup: self.warmup,
            shard_seed: self.shard_seed,
            candidates: self.candidates.clone(),
            eval_examples: self.eval_examples,
        }
    }

    /// Whether this is a derive screening task (candidates scored, nothing trained).
    pub fn is_screening(&self) -> bool {
        !self.candidates.is_empty()
    }

    /// The blob key of the weights a lease of this task uploads: one per (task, lease), so a
    /// re-leased shard never overwrites what an earlier attempt sent.
    pub fn upload_key(&self, job: &str, task: &str, lease_token: u64) -> String {
        let stage = if self.warmup {
            "w".to_string()
        } else {
            format!("r{}", self.iteration)
        };
        format!(
            "supernet/job-{job}/uploads/{stage}-s{}-t{task}-l{lease_token}.safetensors",
            self.shard
        )
    }
}

fn one() -> u32 {
    1
}

/// The blob key of weight version `version` of job `job`.
pub fn supernet_version_key(job: &str, version: u64) -> String {
    format!("supernet/job-{job}/v{version:08}.safetensors")
}

/// The weights a shard uploaded: where they are and what they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadedWeights {
    /// Blob key.
    pub key: String,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256 (hex).
    pub sha256: String,
}

/// Supernet accuracies of one scored pair (same minibatch for both).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PairScore {
    /// Accuracy of the input β.
    pub acc_beta: f64,
    /// Accuracy of the transformation α.
    pub acc_alpha: f64,
}

impl PairScore {
    /// The reward acc(α) − acc(β), when finite.
    pub fn reward(self) -> Option<f64> {
        let r = self.acc_alpha - self.acc_beta;
        r.is_finite().then_some(r)
    }
}

/// `tasks.result` of a `supernet` task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SupernetResult {
    /// One score per pair, in the payload's order.
    pub scores: Vec<PairScore>,
    /// Wall time on the worker.
    #[serde(default)]
    pub wall_seconds: f64,
    /// The worker that reported it.
    #[serde(default)]
    pub worker_id: String,
    /// The weights the shard uploaded (results stored before sharded rounds: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<UploadedWeights>,
    /// SGD steps the shard took.
    #[serde(default)]
    pub train_steps: u64,
    /// Mean training loss of those steps (`None` when it took none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_train_loss: Option<f64>,
    /// Derive screening: the supernet validation accuracy of each candidate, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accuracies: Vec<f64>,
}

impl SupernetResult {
    /// From the wire, checked against the payload: one score per pair, every accuracy a
    /// finite number in [0, 1]. Errors name `supernet.scores[i].<field>`.
    /// `weights` is the upload of the reporting lease (checked by the caller against
    /// `weights_bytes` and `weights_sha256` of the report).
    pub fn from_proto(
        r: &v1::SupernetResult,
        payload: &SupernetPayload,
        worker_id: String,
        weights: Option<UploadedWeights>,
    ) -> Result<Self, FieldError> {
        if r.accuracies.len() != payload.candidates.len() {
            return Err(FieldError::new(
                "supernet.accuracies",
                format!(
                    "expected {} accuracies (one per candidate), got {}",
                    payload.candidates.len(),
                    r.accuracies.len()
                ),
            ));
        }
        for (i, a) in r.accuracies.iter().enumerate() {
            if !(a.is_finite() && (0.0..=1.0).contains(a)) {
                return Err(FieldError::new(
                    format!("supernet.accuracies[{i}]"),
                    format!("must be a finite number in [0, 1], got {a}"),
                ));
            }
        }
        if r.scores.len() != payload.pairs.len() {
            return Err(FieldError::new(
                "supernet.scores",
                format!(
                    "expected {} scores (one per pair), got {}",
                    payload.pairs.len(),
                    r.scores.len()
                ),
            ));
        }
        let mut scores = Vec::with_capacity(r.scores.len());
        for (i, s) in r.scores.iter().enumerate() {
            for (name, v) in [("acc_beta", s.acc_beta), ("acc_alpha", s.acc_alpha)] {
                if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                    return Err(FieldError::new(
                        format!("supernet.scores[{i}].{name}"),
                        format!("must be a finite number in [0, 1], got {v}"),
                    ));
                }
            }
            scores.push(PairScore {
                acc_beta: s.acc_beta,
                acc_alpha: s.acc_alpha,
            });
        }
        Ok(SupernetResult {
            scores,
            wall_seconds: if r.wall_seconds.is_finite() {
                r.wall_seconds.max(0.0)
            } else {
                0.0
            },
            worker_id,
            weights,
            train_steps: r.train_steps,
            mean_train_loss: r.mean_train_loss.is_finite().then_some(r.mean_train_loss),
            accuracies: r.accuracies.clone(),
        })
    }

    /// Reward per sample id: `payload.sample_ids[i]` ↔ `scores[i]`; non-finite ones left out.
    pub fn rewards<'a>(
        &'a self,
        payload: &'a SupernetPayload,
    ) -> impl Iterator<Item = (SampleId, f64)> + 'a {
        payload
            .sample_ids
            .iter()
            .zip(&self.scores)
            .filter_map(|(id, s)| s.reward().map(|r| (*id, r)))
    }
}

/// `tasks.result` of a task of either kind. A `task_succeeded` event does not name its task's
/// kind; [`TaskResult::decode`] tells them apart by shape (a `supernet` result has `scores`),
/// then decodes strictly, naming the field that does not fit.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum TaskResult {
    /// Of a `train_eval` task.
    TrainEval(TrainEvalResult),
    /// Of a `supernet` task.
    Supernet(SupernetResult),
}

impl TaskResult {
    /// Reads a task result of either kind.
    pub fn decode(value: &serde_json::Value) -> Result<TaskResult, crate::DecodeError> {
        if value.get("scores").is_some() {
            crate::decode("supernet result", value).map(TaskResult::Supernet)
        } else {
            crate::decode("train_eval result", value).map(TaskResult::TrainEval)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode;
    use serde_json::json;

    #[test]
    fn train_eval_results_round_trip_and_errors_name_the_field() {
        let r = TrainEvalResult {
            index: 2,
            worker_id: "w".into(),
            outcome: TrainEvalOutcome {
                accuracy: 0.9,
                loss: 0.3,
                params: 10,
                madds: 20,
                wall_seconds: 1.5,
                images_per_second: 100.0,
            },
        };
        let v = serde_json::to_value(&r).expect("encodes");
        assert_eq!(v["accuracy"], json!(0.9));
        assert_eq!(decode::<TrainEvalResult>("train_eval result", &v), Ok(r));
        let mut bad = v.clone();
        bad["accuracy"] = json!("high");
        let e = decode::<TrainEvalResult>("train_eval result", &bad).expect_err("a string");
        assert_eq!(e.field, "accuracy");
        let mut missing = v;
        if let Some(o) = missing.as_object_mut() {
            o.remove("madds");
        }
        let e = decode::<TrainEvalResult>("train_eval result", &missing).expect_err("no madds");
        assert!(e.reason.contains("madds"), "{e}");
    }

    #[test]
    fn payloads_carry_the_dataset_shape_to_the_wire() {
        let cats = DatasetShape {
            channels: 3,
            image_size: 48,
            classes: 2,
        };
        let wire_cats = Some(v1::DatasetShape {
            channels: 3,
            image_size: 48,
            classes: 2,
        });
        let p = TrainEvalPayload {
            index: 0,
            genotype_json: "{}".into(),
            arch_hash: "h".into(),
            dataset: "my-cats".into(),
            dataset_shape: Some(cats),
            budget: Budget::preset("smoke").expect("smoke"),
            seed: 1,
            checkpointed: false,
            checkpoint_key: String::new(),
            split: EvalSplit::Validation,
        };
        let v = serde_json::to_value(&p).expect("encodes");
        let read: TrainEvalPayload = decode("train_eval payload", &v).expect("decodes");
        assert_eq!(read, p);
        assert_eq!(read.to_proto().dataset_shape, wire_cats);
        let mut bad = v.clone();
        bad["dataset_shape"]["image_size"] = json!(-1);
        let e = decode::<TrainEvalPayload>("train_eval payload", &bad).expect_err("negative");
        assert_eq!(e.field, "dataset_shape.image_size");
        // Stored before shapes: a built-in dataset's payload sends the built-in's shape.
        let mut old = v;
        old["dataset"] = json!("mnist");
        if let Some(o) = old.as_object_mut() {
            o.remove("dataset_shape");
        }
        let read: TrainEvalPayload = decode("train_eval payload", &old).expect("old payload");
        assert_eq!(read.dataset_shape, None);
        assert_eq!(
            read.to_proto().dataset_shape,
            Some(shape_to_proto(nat_arch::Dataset::Mnist.shape()))
        );

        let s = SupernetPayload {
            iteration: 0,
            shard: 1,
            shards: 2,
            base_version: 3,
            train_steps: 4,
            warmup: false,
            shard_seed: 5,
            candidates: Vec::new(),
            eval_examples: 0,
            sample_ids: Vec::new(),
            pairs: Vec::new(),
            dataset: "my-cats".into(),
            dataset_shape: Some(cats),
            settings: SupernetSettings {
                init_channels: 4,
                layers: 2,
                batch_size: 8,
                train_steps_between_pairs: 1,
                learning_rate: 0.1,
                momentum: 0.9,
                weight_decay: 0.0,
                grad_clip: 5.0,
                max_train_examples: 0,
                validation_fraction: 0.2,
                eval_batches: 1,
                max_wall_seconds: 0.0,
                op_set: "nat-fully-concat".into(),
                num_nodes: 4,
                shards: 0,
                steps_per_shard: 4,
                warmup_steps: 8,
                round_deadline_seconds: 60.0,
                derive_examples: 0,
            },
            seed: 2,
            supernet_key: "job-x".into(),
        };
        let v = serde_json::to_value(&s).expect("encodes");
        let read: SupernetPayload = decode("supernet payload", &v).expect("decodes");
        assert_eq!(read.to_proto().dataset_shape, wire_cats);
        assert_eq!(read, s);
        let wire = read.to_proto();
        assert_eq!(
            (wire.round, wire.shard, wire.shards, wire.base_version),
            (0, 1, 2, 3)
        );
        assert_eq!((wire.train_steps, wire.shard_seed), (4, 5));

        // A payload stored before sharded rounds reads as one shard from fresh weights.
        let mut old = v.clone();
        if let Some(o) = old.as_object_mut() {
            for f in [
                "shard",
                "shards",
                "base_version",
                "train_steps",
                "warmup",
                "shard_seed",
            ] {
                o.remove(f);
            }
        }
        let read: SupernetPayload = decode("supernet payload", &old).expect("old payload");
        assert_eq!((read.shard, read.shards, read.base_version), (0, 1, 0));
    }

    #[test]
    fn a_screening_result_has_one_accuracy_per_candidate() {
        let p: SupernetPayload = serde_json::from_value(serde_json::json!({
            "iteration": 3, "sample_ids": [], "pairs": [], "dataset": "mnist",
            "candidates": ["a", "b"], "eval_examples": 64,
            "settings": {"init_channels": 4, "layers": 2, "batch_size": 8,
                "train_steps_between_pairs": 1, "learning_rate": 0.1, "momentum": 0.9,
                "weight_decay": 0.0, "grad_clip": 5.0, "max_train_examples": 0,
                "validation_fraction": 0.2, "eval_batches": 1, "max_wall_seconds": 0.0,
                "op_set": "nat-fully-concat", "num_nodes": 4},
            "seed": 1, "supernet_key": "job-9"
        }))
        .expect("payload");
        assert!(p.is_screening());
        let wire = |accuracies: Vec<f64>| v1::SupernetResult {
            accuracies,
            ..Default::default()
        };
        let ok = SupernetResult::from_proto(&wire(vec![0.5, 0.75]), &p, "w".into(), None)
            .expect("valid");
        assert_eq!(ok.accuracies, vec![0.5, 0.75]);
        let short = SupernetResult::from_proto(&wire(vec![0.5]), &p, "w".into(), None)
            .expect_err("one missing");
        assert_eq!(short.field, "supernet.accuracies");
        let bad = SupernetResult::from_proto(&wire(vec![0.5, 1.5]), &p, "w".into(), None)
            .expect_err("out of range");
        assert_eq!(bad.field, "supernet.accuracies[1]");
    }

    #[test]
    fn upload_keys_are_per_lease_and_stage() {
        let mut p: SupernetPayload = serde_json::from_value(serde_json::json!({
            "iteration": 3, "shard": 2, "sample_ids": [], "pairs": [], "dataset": "mnist",
            "settings": {"init_channels": 4, "layers": 2, "batch_size": 8,
                "train_steps_between_pairs": 1, "learning_rate": 0.1, "momentum": 0.9,
                "weight_decay": 0.0, "grad_clip": 5.0, "max_train_examples": 0,
                "validation_fraction": 0.2, "eval_batches": 1, "max_wall_seconds": 0.0,
                "op_set": "nat-fully-concat", "num_nodes": 4},
            "seed": 1, "supernet_key": "job-9"
        }))
        .expect("payload");
        let a = p.upload_key("9", "77", 5);
        assert_eq!(a, "supernet/job-9/uploads/r3-s2-t77-l5.safetensors");
        assert_ne!(a, p.upload_key("9", "77", 6));
        p.warmup = true;
        assert!(p
            .upload_key("9", "77", 5)
            .starts_with("supernet/job-9/uploads/w-"));
        assert_eq!(
            supernet_version_key("9", 12),
            "supernet/job-9/v00000012.safetensors"
        );
    }
}
