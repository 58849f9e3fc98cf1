//! The libtorch task runner of one slot: turns a leased [`v1::Task`] into a `nat-train` call.
//!
//! A runner lives on its slot's thread and owns everything libtorch: the datasets loaded for that
//! slot's device (loaded once, reused by later tasks) and the supernet sessions (one per
//! `supernet_key`). Every problem with the payload becomes an [`Outcome::Failed`] whose reason
//! names the field; nothing here panics on task input.
//!
//! A `train_eval` task's `split` picks what its accuracy is measured on: the validation split
//! (learning, derive) or the test split (the final evaluation), which nat-train keeps disjoint from
//! the train and validation splits (a dataset without test files has a fixed part of its training
//! files held out as its test split; see `nat_train::data`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use nat_arch::{DatasetShape, Genotype, OpSet};
use nat_proto::v1;
use nat_train::{
    Budget, CheckpointConfig, DatasetSplits, EvalSplit, SupernetSession, SupernetSettings,
    TrainError, TrainEvalReport, TrainSpec,
};
use tch::Device;

use crate::config::SlotDevice;
use crate::slot::{Progress, TaskContext, TaskRunner};

/// Seed of the train/validation split. Fixed for every task so that accuracies of different
/// architectures are measured on the same held-out examples. (The test split does not depend on
/// it: nat-train holds out a dataset's test part with its own fixed seed.)
pub const SPLIT_SEED: u64 = 0x4E41_5453;

/// At most this many (dataset name, validation fraction) splits stay loaded per slot.
const MAX_CACHED_DATASETS: usize = 4;
/// At most this many supernet sessions stay in memory per slot.
const MAX_SUPERNETS: usize = 2;

/// How a task ended on the slot thread.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    TrainEval(v1::TrainEvalResult),
    /// A supernet shard's scores and its trained weights (safetensors): the daemon uploads the
    /// weights and fills `weights_bytes`/`weights_sha256` before it reports.
    Supernet(Box<v1::SupernetResult>, Vec<u8>),
    /// The task failed; `retryable` says whether another attempt may succeed.
    Failed {
        reason: String,
        retryable: bool,
    },
    /// The cancel flag was raised (the daemon knows why).
    Cancelled,
}

impl Outcome {
    fn rejected(reason: impl Into<String>) -> Self {
        Outcome::Failed {
            reason: reason.into(),
            retryable: false,
        }
    }

    fn from_train_error(context: &str, error: TrainError) -> Self {
        match error {
            TrainError::Cancelled => Outcome::Cancelled,
            other => Outcome::Failed {
                retryable: other.is_retryable(),
                reason: format!("{context}: {other}"),
            },
        }
    }
}

/// A leased task as a slot runs it: the task, and for a supernet shard the weights of its
/// base version (fetched by the daemon before the slot starts).
#[derive(Debug, Clone)]
pub struct RunnerTask {
    pub task: v1::Task,
    pub base_weights: Option<std::sync::Arc<Vec<u8>>>,
}

impl From<v1::Task> for RunnerTask {
    fn from(task: v1::Task) -> Self {
        RunnerTask {
            task,
            base_weights: None,
        }
    }
}

/// Where a runner finds its inputs and puts its checkpoints.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub device: SlotDevice,
    pub data_dir: PathBuf,
    pub checkpoint_dir: PathBuf,
}

type DatasetKey = (String, u64);

/// Runs `train_eval` and `supernet` tasks with libtorch on one device.
pub struct TorchRunner {
    config: RunnerConfig,
    device: Device,
    datasets: HashMap<DatasetKey, Rc<DatasetSplits>>,
    dataset_order: Vec<DatasetKey>,
    supernets: HashMap<String, SupernetSession>,
    supernet_order: Vec<String>,
}

impl TorchRunner {
    /// A runner for `config.device`. Fails when that CUDA device is not usable.
    pub fn new(config: RunnerConfig) -> Result<Self, String> {
        let device = match config.device {
            SlotDevice::Cpu => Device::Cpu,
            SlotDevice::Cuda(index) => {
                let visible = nat_train::cuda_device_count();
                if index >= visible {
                    return Err(format!(
                        "cuda:{index} is not usable: libtorch sees {visible} CUDA device(s)"
                    ));
                }
                Device::Cuda(index)
            }
        };
        Ok(TorchRunner {
            config,
            device,
            datasets: HashMap::new(),
            dataset_order: Vec::new(),
            supernets: HashMap::new(),
            supernet_order: Vec::new(),
        })
    }

    /// The splits of the dataset `name` (any dataset under the data dir), loaded once per slot.
    /// `field` names the task's dataset field in errors.
    fn dataset(
        &mut self,
        field: &str,
        name: &str,
        validation_fraction: f64,
    ) -> Result<Rc<DatasetSplits>, Outcome> {
        if let Err(error) = nat_data::validate_name(name) {
            return Err(Outcome::rejected(format!("{field}: {error}")));
        }
        let key = (name.to_owned(), validation_fraction.to_bits());
        if let Some(splits) = self.datasets.get(&key) {
            return Ok(splits.clone());
        }
        let started = std::time::Instant::now();
        let splits = nat_train::load_named_dataset(
            &self.config.data_dir,
            name,
            self.device,
            validation_fraction,
            SPLIT_SEED,
        )
        .map_err(|error| Outcome::from_train_error(field, TrainError::from(error)))?;
        tracing::info!(
            dataset = name,
            device = %self.config.device,
            train = splits.train.len(),
            validation = splits.validation.len(),
            test = splits.test.len(),
            seconds = started.elapsed().as_secs_f64(),
            "dataset loaded"
        );
        let splits = Rc::new(splits);
        if self.dataset_order.len() >= MAX_CACHED_DATASETS {
            let oldest = self.dataset_order.remove(0);
            self.datasets.remove(&oldest);
        }
        self.dataset_order.push(key.clone());
        self.datasets.insert(key, splits.clone());
        Ok(splits)
    }

    fn run_train_eval(
        &mut self,
        task_id: &str,
        payload: v1::TrainEvalTask,
        context: &TaskContext<'_>,
    ) -> Outcome {
        let genotype = match Genotype::from_json_str(&payload.genotype_json) {
            Ok(genotype) => genotype,
            Err(error) => {
                return Outcome::rejected(format!("train_eval.genotype_json: {error}"));
            }
        };
        let Some(budget) = payload.budget.as_ref().map(Budget::from_proto) else {
            return Outcome::rejected("train_eval.budget: missing");
        };
        if let Err(error) = nat_train::train::validate_budget(&budget) {
            return Outcome::rejected(format!("train_eval.budget: {error}"));
        }
        let split = match eval_split_from_proto(payload.split) {
            Ok(split) => split,
            Err(reason) => return Outcome::rejected(reason),
        };
        let data = match self.dataset(
            "train_eval.dataset",
            &payload.dataset,
            budget.validation_fraction,
        ) {
            Ok(data) => data,
            Err(outcome) => return outcome,
        };
        if let Err(reason) = check_shape(
            "train_eval.dataset_shape",
            payload.dataset_shape.as_ref(),
            &data,
        ) {
            return Outcome::rejected(reason);
        }
        let spec = TrainSpec {
            genotype: &genotype,
            budget: &budget,
            seed: payload.seed,
            split,
        };
        let mut on_progress = |progress: &nat_train::Progress| {
            context.report(Progress {
                fraction: progress.fraction,
                epoch: progress.epoch,
                epochs: progress.epochs,
                train_loss: progress.train_loss,
                train_accuracy: progress.train_accuracy,
                step: 0,
            });
        };
        let result = if payload.checkpointed {
            let key = if payload.checkpoint_key.is_empty() {
                task_id
            } else {
                payload.checkpoint_key.as_str()
            };
            let dir = match checkpoint_path(&self.config.checkpoint_dir, key) {
                Ok(dir) => dir,
                Err(reason) => {
                    return Outcome::rejected(format!("train_eval.checkpoint_key: {reason}"))
                }
            };
            let checkpoint = CheckpointConfig {
                dir,
                every_epochs: 1,
            };
            nat_train::final_eval(
                &spec,
                &data,
                self.device,
                &checkpoint,
                context.cancel_flag(),
                &mut on_progress,
            )
        } else {
            nat_train::train_eval(
                &spec,
                &data,
                self.device,
                context.cancel_flag(),
                &mut on_progress,
            )
        };
        match result {
            Ok(report) => {
                let images = trained_images(&budget, data.train.len(), &report);
                nat_telemetry::record::worker_images(
                    nat_telemetry::DeviceKind::from_device(&self.config.device.name()),
                    images,
                    report.images_per_second,
                );
                Outcome::TrainEval(result_to_proto(&report))
            }
            Err(error) => Outcome::from_train_error("train_eval", error),
        }
    }

    fn run_supernet(
        &mut self,
        payload: v1::SupernetTask,
        base_weights: Option<&[u8]>,
        context: &TaskContext<'_>,
    ) -> Outcome {
        let Some(settings_proto) = payload.settings.as_ref() else {
            return Outcome::rejected("supernet.settings: missing");
        };
        let settings = supernet_settings_from_proto(settings_proto);
        if let Err(error) = settings.validate() {
            return Outcome::rejected(format!("supernet.settings: {error}"));
        }
        if payload.pairs.is_empty() && !payload.warmup && payload.candidates.is_empty() {
            return Outcome::rejected(
                "supernet.pairs: empty (only the warm-up and a derive screening score no pairs)",
            );
        }
        let mut candidates = Vec::with_capacity(payload.candidates.len());
        for (index, json) in payload.candidates.iter().enumerate() {
            match Genotype::from_json_str(json) {
                Ok(g) => candidates.push(g),
                Err(error) => {
                    return Outcome::rejected(format!("supernet.candidates[{index}]: {error}"))
                }
            }
        }
        let mut pairs = Vec::with_capacity(payload.pairs.len());
        for (index, pair) in payload.pairs.iter().enumerate() {
            let beta = Genotype::from_json_str(&pair.beta_json).map_err(|error| {
                Outcome::rejected(format!("supernet.pairs[{index}].beta_json: {error}"))
            });
            let alpha = Genotype::from_json_str(&pair.alpha_json).map_err(|error| {
                Outcome::rejected(format!("supernet.pairs[{index}].alpha_json: {error}"))
            });
            match (beta, alpha) {
                (Ok(beta), Ok(alpha)) => pairs.push((beta, alpha)),
                (Err(outcome), _) | (_, Err(outcome)) => return outcome,
            }
        }
        let op_set = if settings_proto.op_set.is_empty() {
            nat_train::train::infer_op_set(
                pairs.iter().flat_map(|(b, a)| [b, a]).chain(&candidates),
            )
            .filter(|_| !pairs.is_empty() || !candidates.is_empty())
        } else {
            let name = serde_json::Value::String(settings_proto.op_set.clone());
            match serde_json::from_value::<OpSet>(name) {
                Ok(op_set) => Some(op_set),
                Err(_) => {
                    return Outcome::rejected(format!(
                        "supernet.settings.op_set: unknown operation set `{}`",
                        settings_proto.op_set
                    ))
                }
            }
        };
        let Some(op_set) = op_set else {
            return Outcome::rejected(
                "supernet.settings.op_set: unset, and the genotypes use ops of no single set",
            );
        };
        let first = pairs.first().map(|(beta, _)| beta).or(candidates.first());
        let num_nodes = match (usize::try_from(settings_proto.num_nodes), first) {
            (Ok(n), _) if n > 0 => n,
            (_, Some(g)) => g.num_nodes(),
            (_, None) => {
                return Outcome::rejected(
                    "supernet.settings.num_nodes: unset, and there is no pair to take it from",
                )
            }
        };
        if let Some(index) = candidates.iter().position(|g| g.num_nodes() != num_nodes) {
            return Outcome::rejected(format!(
                "supernet.candidates[{index}]: every genotype must have {num_nodes} intermediate nodes"
            ));
        }
        if let Some(index) = pairs
            .iter()
            .position(|(b, a)| b.num_nodes() != num_nodes || a.num_nodes() != num_nodes)
        {
            return Outcome::rejected(format!(
                "supernet.pairs[{index}]: every genotype must have {num_nodes} intermediate nodes"
            ));
        }
        let base_weights = match (payload.base_version, base_weights) {
            (0, _) => None,
            (_, Some(bytes)) => Some(bytes),
            (version, None) => {
                return Outcome::Failed {
                    reason: format!("supernet: the weights of version {version} were not fetched"),
                    retryable: true,
                }
            }
        };
        let data = match self.dataset(
            "supernet.dataset",
            &payload.dataset,
            settings.validation_fraction,
        ) {
            Ok(data) => data,
            Err(outcome) => return outcome,
        };
        if let Err(reason) = check_shape(
            "supernet.dataset_shape",
            payload.dataset_shape.as_ref(),
            &data,
        ) {
            return Outcome::rejected(reason);
        }
        let key = format!(
            "{}|{}|{:?}|{num_nodes}|{}",
            payload.supernet_key,
            payload.dataset,
            op_set,
            serde_json::to_string(&settings).unwrap_or_default()
        );
        // Fresh weights (the warm-up) come from a new session seeded by the job's seed; a
        // shard of a round overwrites a kept session's weights with its base version.
        if payload.base_version == 0 {
            self.supernets.remove(&key);
            self.supernet_order.retain(|k| k != &key);
        }
        if !self.supernets.contains_key(&key) {
            let session = match SupernetSession::new(
                &settings,
                op_set,
                num_nodes,
                &data,
                self.device,
                payload.seed,
            ) {
                Ok(session) => session,
                Err(error) => return Outcome::from_train_error("supernet", error),
            };
            if self.supernet_order.len() >= MAX_SUPERNETS {
                let oldest = self.supernet_order.remove(0);
                self.supernets.remove(&oldest);
            }
            self.supernet_order.push(key.clone());
            self.supernets.insert(key.clone(), session);
        }
        let Some(session) = self.supernets.get_mut(&key) else {
            return Outcome::Failed {
                reason: "supernet: session vanished from the slot cache".into(),
                retryable: true,
            };
        };
        if let Some(bytes) = base_weights {
            if let Err(error) = session.import_safetensors(bytes) {
                self.supernets.remove(&key);
                self.supernet_order.retain(|k| k != &key);
                return Outcome::from_train_error(
                    &format!("supernet: weights of version {}", payload.base_version),
                    error,
                );
            }
        }
        if !candidates.is_empty() {
            return screen(session, &data, &candidates, payload.eval_examples, context);
        }
        let mut on_progress = |done: u64, total: u64| {
            context.report(Progress {
                fraction: done as f64 / total.max(1) as f64,
                step: done,
                ..Progress::default()
            });
        };
        let ran = session
            .run_shard(
                &data,
                payload.train_steps,
                &pairs,
                payload.shard_seed,
                context.cancel_flag(),
                &mut on_progress,
            )
            .and_then(|report| {
                let metadata = [
                    ("supernet_key", payload.supernet_key.clone()),
                    ("base_version", payload.base_version.to_string()),
                    ("round", payload.round.to_string()),
                    ("shard", payload.shard.to_string()),
                    ("warmup", payload.warmup.to_string()),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
                Ok((report, session.export_safetensors(metadata)?))
            });
        match ran {
            Ok((report, weights)) => Outcome::Supernet(
                Box::new(v1::SupernetResult {
                    scores: report
                        .scores
                        .iter()
                        .map(|score| v1::PairScore {
                            acc_beta: score.acc_beta,
                            acc_alpha: score.acc_alpha,
                        })
                        .collect(),
                    wall_seconds: report.wall_seconds,
                    weights_bytes: 0,
                    weights_sha256: String::new(),
                    train_steps: report.train_steps,
                    mean_train_loss: report.mean_train_loss,
                    accuracies: Vec::new(),
                }),
                weights,
            ),
            Err(error) => {
                // The shared weights may be half-updated; the next shard imports its base anyway,
                // but a failed session is not worth keeping.
                self.supernets.remove(&key);
                self.supernet_order.retain(|k| k != &key);
                Outcome::from_train_error("supernet", error)
            }
        }
    }
}

/// A derive screening: the validation accuracy of each candidate on the imported weights (the
/// same first `eval_examples` validation examples for each; nothing is trained or uploaded).
fn screen(
    session: &SupernetSession,
    data: &DatasetSplits,
    candidates: &[Genotype],
    eval_examples: u32,
    context: &TaskContext<'_>,
) -> Outcome {
    let started = std::time::Instant::now();
    let mut accuracies = Vec::with_capacity(candidates.len());
    for (i, g) in candidates.iter().enumerate() {
        if context.is_cancelled() {
            return Outcome::Cancelled;
        }
        match session.validation_accuracy(data, g, eval_examples) {
            Ok(a) => accuracies.push(a),
            Err(error) => {
                return Outcome::from_train_error(&format!("supernet.candidates[{i}]"), error)
            }
        }
        context.report(Progress {
            fraction: (i + 1) as f64 / candidates.len() as f64,
            step: (i + 1) as u64,
            ..Progress::default()
        });
    }
    Outcome::Supernet(
        Box::new(v1::SupernetResult {
            scores: Vec::new(),
            wall_seconds: started.elapsed().as_secs_f64(),
            weights_bytes: 0,
            weights_sha256: String::new(),
            train_steps: 0,
            mean_train_loss: f64::NAN,
            accuracies,
        }),
        Vec::new(),
    )
}

impl TaskRunner for TorchRunner {
    type Task = RunnerTask;
    type Outcome = Outcome;

    fn run(&mut self, task: RunnerTask, context: &TaskContext<'_>) -> Outcome {
        let RunnerTask { task, base_weights } = task;
        match task.payload {
            Some(v1::task::Payload::TrainEval(payload)) => {
                self.run_train_eval(&task.task_id, payload, context)
            }
            Some(v1::task::Payload::Supernet(payload)) => {
                self.run_supernet(payload, base_weights.as_deref().map(Vec::as_slice), context)
            }
            None => Outcome::rejected("payload: missing (neither train_eval nor supernet)"),
        }
    }

    fn panicked(message: String) -> Outcome {
        let lower = message.to_ascii_lowercase();
        let out_of_memory =
            lower.contains("out of memory") || lower.contains("can't allocate memory");
        Outcome::Failed {
            reason: format!("task panicked: {message}"),
            // Out of memory may pass on a bigger device; any other panic is a bug that a retry
            // would only repeat.
            retryable: out_of_memory,
        }
    }

    fn unavailable(reason: String) -> Outcome {
        Outcome::Failed {
            reason: format!("slot unavailable: {reason}"),
            retryable: true,
        }
    }
}

/// The nat-train split of a `TrainEvalTask.split`; an unknown value is an error naming the field.
pub fn eval_split_from_proto(value: i32) -> Result<EvalSplit, String> {
    match v1::EvalSplit::try_from(value) {
        Ok(v1::EvalSplit::Validation) => Ok(EvalSplit::Validation),
        Ok(v1::EvalSplit::Test) => Ok(EvalSplit::Test),
        Err(_) => Err(format!(
            "train_eval.split: unknown evaluation split {value} (expected {} = validation or {} = test)",
            v1::EvalSplit::Validation as i32,
            v1::EvalSplit::Test as i32
        )),
    }
}

/// The plain supernet settings of proto settings.
pub fn supernet_settings_from_proto(settings: &v1::SupernetSettings) -> SupernetSettings {
    SupernetSettings {
        init_channels: settings.init_channels,
        layers: settings.layers,
        batch_size: settings.batch_size,
        train_steps_between_pairs: settings.train_steps_between_pairs,
        learning_rate: settings.learning_rate,
        momentum: settings.momentum,
        weight_decay: settings.weight_decay,
        grad_clip: settings.grad_clip,
        max_train_examples: settings.max_train_examples,
        validation_fraction: settings.validation_fraction,
        eval_batches: settings.eval_batches,
        max_wall_seconds: settings.max_wall_seconds,
    }
}

fn result_to_proto(report: &TrainEvalReport) -> v1::TrainEvalResult {
    v1::TrainEvalResult {
        accuracy: report.accuracy,
        loss: report.loss,
        params: report.params,
        madds: report.madds,
        wall_seconds: report.wall_seconds,
        images_per_second: report.images_per_second,
    }
}

/// Training images processed by a finished `train_eval` call: the epochs it trained itself (not
/// those restored from a checkpoint) times the images of one epoch. Mirrors nat-train's epoch
/// (`max_train_examples` caps the training split; a last batch of one image is dropped).
pub fn trained_images(budget: &Budget, available: i64, report: &TrainEvalReport) -> u64 {
    let examples = match budget.max_train_examples {
        0 => available,
        cap => i64::from(cap).min(available),
    };
    let batch = i64::from(budget.batch_size).min(examples);
    if examples < 2 || batch < 1 {
        return 0;
    }
    let per_epoch = if examples % batch == 1 {
        examples - 1
    } else {
        examples
    };
    let epochs = report
        .epochs_completed
        .saturating_sub(report.resumed_epochs);
    u64::try_from(per_epoch)
        .unwrap_or(0)
        .saturating_mul(u64::from(epochs))
}

/// `<checkpoint_dir>/<key>`, with `key` restricted to a safe file name.
pub fn checkpoint_path(checkpoint_dir: &Path, key: &str) -> Result<PathBuf, String> {
    let safe = !key.is_empty()
        && key.len() <= 200
        && key != "."
        && key != ".."
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if safe {
        Ok(checkpoint_dir.join(key))
    } else {
        Err(format!(
            "`{key}` is not a usable folder name (1 to 200 of A-Z a-z 0-9 - _ .)"
        ))
    }
}

/// Checks a task's `dataset_shape` against the dataset as this worker's files show it. An unset
/// (or all-zero) shape means "the dataset's own"; the network is built from the files' shape.
pub fn check_shape(
    field: &str,
    task_shape: Option<&v1::DatasetShape>,
    data: &DatasetSplits,
) -> Result<(), String> {
    let Some(wanted) = task_shape.filter(|s| **s != v1::DatasetShape::default()) else {
        return Ok(());
    };
    let wanted = DatasetShape {
        channels: wanted.channels,
        image_size: wanted.image_size,
        classes: wanted.classes,
    };
    if wanted == data.shape {
        Ok(())
    } else {
        Err(format!(
            "{field}: the task expects {wanted}, but dataset {} on this worker is {}",
            data.name, data.shape
        ))
    }
}

/// The datasets under `data_dir` with their shapes and sizes (reported to the coordinator at
/// registration). Folders that are not usable datasets are logged and left out.
pub fn datasets_present(data_dir: &Path) -> Vec<nat_data::DatasetInfo> {
    let listing = nat_data::list(data_dir);
    for unusable in &listing.unusable {
        tracing::warn!(
            path = %unusable.path.display(),
            reason = %unusable.reason,
            "not reporting a folder of the data dir as a dataset"
        );
    }
    listing.datasets
}

/// The wire form of a dataset's info.
pub fn dataset_info_to_proto(info: &nat_data::DatasetInfo) -> v1::DatasetInfo {
    v1::DatasetInfo {
        name: info.name.clone(),
        shape: Some(v1::DatasetShape {
            channels: info.shape.channels,
            image_size: info.shape.image_size,
            classes: info.shape.classes,
        }),
        train_examples: info.train_examples,
        test_examples: info.test_examples,
        format: info.format.name().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_keys_are_confined_to_the_checkpoint_dir() {
        let root = Path::new("/ck");
        assert_eq!(
            checkpoint_path(root, "job-1_task.2").unwrap(),
            PathBuf::from("/ck/job-1_task.2")
        );
        for bad in ["", "..", "a/b", "../x", "a b", "é"] {
            assert!(checkpoint_path(root, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn panics_fail_the_task_and_only_out_of_memory_is_retryable() {
        assert_eq!(
            TorchRunner::panicked("index out of bounds".into()),
            Outcome::Failed {
                reason: "task panicked: index out of bounds".into(),
                retryable: false
            }
        );
        assert!(matches!(
            TorchRunner::panicked("CUDA out of memory. Tried to allocate".into()),
            Outcome::Failed {
                retryable: true,
                ..
            }
        ));
    }

    #[test]
    fn eval_splits_map_and_unknown_values_are_rejected() {
        assert_eq!(
            eval_split_from_proto(v1::EvalSplit::Validation as i32),
            Ok(EvalSplit::Validation)
        );
        assert_eq!(
            eval_split_from_proto(v1::EvalSplit::Test as i32),
            Ok(EvalSplit::Test)
        );
        for bad in [2, -1, i32::MAX] {
            let reason = eval_split_from_proto(bad).unwrap_err();
            assert!(
                reason.contains("train_eval.split") && reason.contains(&bad.to_string()),
                "{reason}"
            );
        }
    }

    #[test]
    fn budgets_map_field_by_field() {
        let proto = v1::TrainingBudget {
            epochs: 2,
            batch_size: 32,
            learning_rate: 0.05,
            lr_min: 0.001,
            momentum: 0.9,
            weight_decay: 3e-4,
            grad_clip: 5.0,
            init_channels: 4,
            layers: 3,
            max_train_examples: 100,
            max_eval_examples: 50,
            validation_fraction: 0.2,
            cutout: 2,
            label_smoothing: 0.1,
            auxiliary_weight: 0.4,
            drop_path_prob: 0.2,
            max_wall_seconds: 60.0,
        };
        let budget = Budget::from_proto(&proto);
        let back = serde_json::to_value(budget).unwrap();
        let expected = serde_json::json!({
            "epochs": 2, "batch_size": 32, "learning_rate": 0.05, "lr_min": 0.001,
            "momentum": 0.9, "weight_decay": 3e-4, "grad_clip": 5.0, "init_channels": 4,
            "layers": 3, "max_train_examples": 100, "max_eval_examples": 50,
            "validation_fraction": 0.2, "cutout": 2, "label_smoothing": 0.1,
            "auxiliary_weight": 0.4, "drop_path_prob": 0.2, "max_wall_seconds": 60.0
        });
        assert_eq!(back, expected);
    }
}
