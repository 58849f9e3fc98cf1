//! `train_eval` and `final_eval`: train a genotype's evaluation network from scratch for a budget
//! on the train split and report top-1 accuracy on the split the spec names ([`EvalSplit`]): the
//! validation split (learning, derive) or the test split (the final evaluation). Training is the
//! same whichever split is evaluated; `max_eval_examples` caps either split the same way (its
//! first examples).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use nat_arch::{Dataset, Genotype};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::nn::VarStore;
use tch::{Device, Kind, Reduction, Tensor};

use super::augment;
use super::budget::Budget;
use super::checkpoint::{self, CheckpointState};
use super::sgd::Sgd;
use crate::data::{DatasetSplits, EvalSplit, Split};
use crate::error::TrainError;
use crate::model::{count_params, Network, NetworkConfig};

/// What to train.
#[derive(Debug, Clone, Copy)]
pub struct TrainSpec<'a> {
    pub genotype: &'a Genotype,
    pub budget: &'a Budget,
    /// Seeds weight init, shuffling, augmentation and drop-path.
    pub seed: u64,
    /// The split the accuracy and loss are measured on.
    pub split: EvalSplit,
}

/// Periodic progress of a training run.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Epochs finished (1-based after the first epoch).
    pub epoch: u32,
    pub epochs: u32,
    /// 0..1 of all training steps.
    pub fraction: f64,
    /// Mean loss / accuracy over the current epoch so far.
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub learning_rate: f64,
}

/// Result of `train_eval` / `final_eval`.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainEvalReport {
    /// Top-1 accuracy on the evaluated split (`split`; fraction 0..1).
    pub accuracy: f64,
    /// Mean cross-entropy on the evaluated split.
    pub loss: f64,
    /// Trainable parameters without the auxiliary head.
    pub params: u64,
    /// Multiply-adds of one forward pass of one image.
    pub madds: u64,
    /// Wall time of the whole call (plus earlier attempts' training time when resumed).
    pub wall_seconds: f64,
    /// Training images per second (training steps only).
    pub images_per_second: f64,
    pub epochs_completed: u32,
    /// Training stopped at `max_wall_seconds` before the last epoch.
    pub time_limited: bool,
    /// Epochs restored from a checkpoint instead of trained in this call.
    pub resumed_epochs: u32,
    pub last_train_loss: f64,
    pub last_train_accuracy: f64,
    /// The split `accuracy` and `loss` were measured on (the spec's).
    pub split: EvalSplit,
    /// How many examples of that split were evaluated (`max_eval_examples` caps it).
    pub eval_examples: i64,
}

/// Where and how often `final_eval` checkpoints.
#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    /// One folder per task (e.g. `<state dir>/checkpoints/<checkpoint_key>`).
    pub dir: PathBuf,
    /// Save after every this many epochs (and after the last one). At least 1.
    pub every_epochs: u32,
}

/// Trains `spec.genotype` from scratch on `data.train` for `spec.budget` and evaluates it on
/// `spec.split` (`data.validation` or `data.test`).
///
/// `stop` is checked between steps: when raised the call returns [`TrainError::Cancelled`].
/// `on_progress` is called every 50 steps and after each epoch. The RNGs are re-seeded from
/// `(seed, epoch)` at each epoch, so on the CPU the same call gives the same result.
pub fn train_eval(
    spec: &TrainSpec<'_>,
    data: &DatasetSplits,
    device: Device,
    stop: &AtomicBool,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<TrainEvalReport, TrainError> {
    run(spec, data, device, stop, on_progress, None)
}

/// Like [`train_eval`], checkpointing to `checkpoint.dir` every `checkpoint.every_epochs` epochs;
/// when the folder already holds a checkpoint of the same task, training resumes from it and
/// the result equals that of an uninterrupted run (on the CPU).
pub fn final_eval(
    spec: &TrainSpec<'_>,
    data: &DatasetSplits,
    device: Device,
    checkpoint: &CheckpointConfig,
    stop: &AtomicBool,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<TrainEvalReport, TrainError> {
    if checkpoint.every_epochs == 0 {
        return Err(TrainError::budget(
            "checkpoint.every_epochs",
            "must be at least 1",
        ));
    }
    run(spec, data, device, stop, on_progress, Some(checkpoint))
}

/// Identifies what a checkpoint trained. The evaluated split is not part of it (training does not
/// depend on it). v2: the digits (and datasets without test files) hold out a test split, so
/// their train split differs from v1's and a v1 checkpoint is not resumed.
fn fingerprint(spec: &TrainSpec<'_>, dataset: &str) -> String {
    let genotype = serde_json::to_string(spec.genotype).unwrap_or_default();
    let budget = serde_json::to_string(spec.budget).unwrap_or_default();
    format!("v2|{dataset}|{}|{genotype}|{budget}", spec.seed)
}

/// splitmix64: decorrelated per-epoch seeds.
pub(crate) fn mix(seed: u64, salt: u64) -> u64 {
    let mut z = seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn check_nonempty(split: &Split, name: &'static str) -> Result<(), TrainError> {
    if split.len() < 2 {
        return Err(TrainError::budget(
            name,
            format!(
                "the {name} split has {} examples, need at least 2",
                split.len()
            ),
        ));
    }
    Ok(())
}

fn run(
    spec: &TrainSpec<'_>,
    data: &DatasetSplits,
    device: Device,
    stop: &AtomicBool,
    on_progress: &mut dyn FnMut(&Progress),
    checkpoint: Option<&CheckpointConfig>,
) -> Result<TrainEvalReport, TrainError> {
    let started = Instant::now();
    let budget = spec.budget;
    super::budget::validate(budget)?;
    check_nonempty(&data.train, "train")?;
    let eval_split = data.eval_split(spec.split);
    check_nonempty(eval_split, spec.split.name())?;
    tch::manual_seed(mix(spec.seed, u64::MAX) as i64);
    let mut vs = VarStore::new(device);
    let config = NetworkConfig {
        init_channels: i64::from(budget.init_channels),
        layers: i64::from(budget.layers),
        in_channels: data.channels,
        image_size: data.image_size,
        num_classes: data.num_classes,
        auxiliary: budget.auxiliary_weight > 0.0,
    };
    let net = Network::new(&vs.root(), spec.genotype, &config)?;
    let params = count_params(&vs, "net");
    let madds = net.madds();
    let mut sgd = Sgd::new(&vs, budget.momentum, budget.weight_decay);

    let n_train = match budget.max_train_examples {
        0 => data.train.len(),
        m => i64::from(m).min(data.train.len()),
    };
    if n_train < 2 {
        return Err(TrainError::budget(
            "max_train_examples",
            format!("{n_train} training examples; at least 2 are needed"),
        ));
    }
    let batch = i64::from(budget.batch_size).min(n_train);
    // A last batch of one example cannot be trained with batch-norm: it is dropped.
    let full = n_train / batch;
    let rest = n_train % batch;
    let steps_per_epoch = (full + i64::from(rest >= 2)) as u64;
    let total_steps = steps_per_epoch * u64::from(budget.epochs);

    let key = fingerprint(spec, &data.name);
    let mut state = CheckpointState {
        fingerprint: key.clone(),
        epochs_done: 0,
        train_seconds: 0.0,
        train_images: 0,
        last_train_loss: f64::NAN,
        last_train_accuracy: f64::NAN,
    };
    let mut resumed_epochs = 0;
    if let Some(cp) = checkpoint {
        if let Some(saved) = checkpoint::load(&cp.dir, &key, &mut vs, &mut sgd)? {
            tracing::info!(dir = %cp.dir.display(), epochs_done = saved.epochs_done, "resuming from checkpoint");
            resumed_epochs = saved.epochs_done;
            state = saved;
        }
    }
    let previous_seconds = state.train_seconds;
    let augment_crop = data.builtin == Some(Dataset::Cifar10);
    let mut time_limited = false;
    let train_started = Instant::now();

    'epochs: for epoch in state.epochs_done..budget.epochs {
        let epoch_seed = mix(spec.seed, u64::from(epoch) + 1);
        tch::manual_seed(epoch_seed as i64);
        let mut rng = ChaCha8Rng::seed_from_u64(epoch_seed);
        let mut order: Vec<i64> = (0..n_train).collect();
        order.shuffle(&mut rng);
        let lr = budget.learning_rate_at(epoch);
        let drop_prob = budget.drop_path_prob * f64::from(epoch) / f64::from(budget.epochs);
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0i64, 0i64);
        for step in 0..steps_per_epoch {
            if stop.load(Ordering::Relaxed) {
                return Err(TrainError::Cancelled);
            }
            let elapsed = previous_seconds + train_started.elapsed().as_secs_f64();
            if budget.max_wall_seconds > 0.0 && elapsed >= budget.max_wall_seconds {
                time_limited = true;
                break 'epochs;
            }
            let start = step as usize * batch as usize;
            let end = (start + batch as usize).min(order.len());
            let index = Tensor::f_from_slice(&order[start..end])?;
            let (mut x, y) = data.train.gather(&index, device)?;
            if augment_crop {
                x = augment::crop_and_flip(&x, &mut rng)?;
            }
            if budget.cutout > 0 {
                x = augment::cutout(&x, i64::from(budget.cutout), &mut rng)?;
            }
            let out = net.forward(&x, true, drop_prob)?;
            let mut loss = out.logits.f_cross_entropy_loss::<Tensor>(
                &y,
                None,
                Reduction::Mean,
                -100,
                budget.label_smoothing,
            )?;
            if let Some(aux) = &out.aux_logits {
                let aux_loss = aux.f_cross_entropy_loss::<Tensor>(
                    &y,
                    None,
                    Reduction::Mean,
                    -100,
                    budget.label_smoothing,
                )?;
                loss = loss.f_add(&aux_loss.f_mul_scalar(budget.auxiliary_weight)?)?;
            }
            let loss_value = loss.f_double_value(&[])?;
            if !loss_value.is_finite() {
                return Err(TrainError::NonFiniteLoss {
                    epoch,
                    step,
                    loss: loss_value,
                });
            }
            sgd.zero_grad()?;
            loss.f_backward()?;
            if budget.grad_clip > 0.0 {
                sgd.clip_grad_norm(budget.grad_clip)?;
            }
            sgd.step(lr)?;

            let n = (end - start) as i64;
            let hits = out
                .logits
                .f_argmax(-1, false)?
                .f_eq_tensor(&y)?
                .f_sum(Kind::Int64)?
                .f_int64_value(&[])?;
            loss_sum += loss_value * n as f64;
            correct += hits;
            seen += n;
            state.train_images += n as u64;
            let done = u64::from(epoch) * steps_per_epoch + step + 1;
            if (step + 1) % 50 == 0 || step + 1 == steps_per_epoch {
                on_progress(&Progress {
                    epoch: if step + 1 == steps_per_epoch {
                        epoch + 1
                    } else {
                        epoch
                    },
                    epochs: budget.epochs,
                    fraction: done as f64 / total_steps.max(1) as f64,
                    train_loss: loss_sum / seen.max(1) as f64,
                    train_accuracy: correct as f64 / seen.max(1) as f64,
                    learning_rate: lr,
                });
            }
        }
        state.epochs_done = epoch + 1;
        state.last_train_loss = loss_sum / seen.max(1) as f64;
        state.last_train_accuracy = correct as f64 / seen.max(1) as f64;
        state.train_seconds = previous_seconds + train_started.elapsed().as_secs_f64();
        if let Some(cp) = checkpoint {
            if state.epochs_done.is_multiple_of(cp.every_epochs)
                || state.epochs_done == budget.epochs
            {
                let saved = checkpoint::save(&cp.dir, &vs, &sgd, &state)?;
                tracing::debug!(path = %saved.display(), epoch = state.epochs_done, "checkpoint saved");
            }
        }
    }
    state.train_seconds = previous_seconds + train_started.elapsed().as_secs_f64();

    let (accuracy, loss, eval_examples) = evaluate(
        &net,
        eval_split,
        budget.max_eval_examples,
        batch.max(256),
        device,
        stop,
    )?;
    Ok(TrainEvalReport {
        accuracy,
        loss,
        params,
        madds,
        wall_seconds: previous_seconds + started.elapsed().as_secs_f64(),
        images_per_second: state.train_images as f64 / state.train_seconds.max(1e-9),
        epochs_completed: state.epochs_done,
        time_limited,
        resumed_epochs,
        last_train_loss: state.last_train_loss,
        last_train_accuracy: state.last_train_accuracy,
        split: spec.split,
        eval_examples,
    })
}

/// Top-1 accuracy and mean loss over the first `max_examples` (0 = all) of `split`, eval mode.
fn evaluate(
    net: &Network,
    split: &Split,
    max_examples: u32,
    batch: i64,
    device: Device,
    stop: &AtomicBool,
) -> Result<(f64, f64, i64), TrainError> {
    let n = match max_examples {
        0 => split.len(),
        m => i64::from(m).min(split.len()),
    };
    tch::no_grad(|| -> Result<(f64, f64, i64), TrainError> {
        let (mut correct, mut loss_sum) = (0i64, 0.0f64);
        let mut start = 0;
        while start < n {
            if stop.load(Ordering::Relaxed) {
                return Err(TrainError::Cancelled);
            }
            let len = batch.min(n - start);
            let (x, y) = split.slice(start, len, device)?;
            let logits = net.forward(&x, false, 0.0)?.logits;
            let loss = logits
                .f_cross_entropy_loss::<Tensor>(&y, None, Reduction::Sum, -100, 0.0)?
                .f_double_value(&[])?;
            correct += logits
                .f_argmax(-1, false)?
                .f_eq_tensor(&y)?
                .f_sum(Kind::Int64)?
                .f_int64_value(&[])?;
            loss_sum += loss;
            start += len;
        }
        Ok((correct as f64 / n as f64, loss_sum / n as f64, n))
    })
}

/// Checks that a path can hold checkpoints (helper for callers that want to fail early).
pub fn checkpoint_dir_usable(dir: &Path) -> Result<(), TrainError> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::Checkpoint {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    })
}
