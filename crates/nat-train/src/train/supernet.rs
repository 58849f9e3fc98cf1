//! A supernet session (NAT-SPEC §4.1–4.3): shared weights trained on uniformly sampled input
//! architectures β, and (β, α) pairs scored on the same validation minibatch with the supernet in
//! train-mode BN: reward = acc(α) − acc(β).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use nat_arch::{Cell, Edge, Genotype, Node, OpSet};
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Device, Kind, Reduction, Tensor};

use super::runner::mix;
use super::sgd::Sgd;
use crate::data::{DatasetSplits, Split};
use crate::error::TrainError;
use crate::model::{Supernet, SupernetConcat, SupernetConfig};

/// Settings of a supernet (mirror of the proto's `SupernetSettings`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SupernetSettings {
    pub init_channels: u32,
    pub layers: u32,
    pub batch_size: u32,
    /// Steps of w-training on random β before each scored pair.
    pub train_steps_between_pairs: u32,
    /// Constant SGD learning rate (NAT uses 0.01 with lr_min 0.01).
    pub learning_rate: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// 0 = no clipping.
    pub grad_clip: f64,
    /// Train on the first N examples of the train split; 0 = all.
    pub max_train_examples: u32,
    /// Used by the caller when loading the dataset (the validation split scores pairs).
    pub validation_fraction: f64,
    /// Minibatches used to score one pair; 0 = 1.
    pub eval_batches: u32,
    /// Stop scoring/training after this long (the unscored pairs are an error); 0 = no limit.
    pub max_wall_seconds: f64,
}

impl SupernetSettings {
    pub fn validate(&self) -> Result<(), TrainError> {
        let positive = |field: &'static str, v: u32, max: u32| {
            if v == 0 || v > max {
                Err(TrainError::budget(
                    field,
                    format!("{v} is outside 1..={max}"),
                ))
            } else {
                Ok(())
            }
        };
        positive("init_channels", self.init_channels, 1024)?;
        positive("layers", self.layers, 200)?;
        positive("batch_size", self.batch_size, 65_536)?;
        if self.batch_size < 2 {
            return Err(TrainError::budget(
                "batch_size",
                "must be at least 2 (batch-norm needs two examples per batch)",
            ));
        }
        let range = |field: &'static str, v: f64, lo: f64, hi: f64| {
            if v.is_finite() && v >= lo && v <= hi {
                Ok(())
            } else {
                Err(TrainError::budget(
                    field,
                    format!("{v} is outside [{lo}, {hi}]"),
                ))
            }
        };
        range("learning_rate", self.learning_rate, 0.0, 100.0)?;
        range("momentum", self.momentum, 0.0, 0.999_999)?;
        range("weight_decay", self.weight_decay, 0.0, 1.0)?;
        range("grad_clip", self.grad_clip, 0.0, 1e9)?;
        range("max_wall_seconds", self.max_wall_seconds, 0.0, 1e9)?;
        if !(0.0..1.0).contains(&self.validation_fraction) {
            return Err(TrainError::budget(
                "validation_fraction",
                format!("{} is outside [0, 1)", self.validation_fraction),
            ));
        }
        Ok(())
    }
}

/// Accuracies of one scored pair on the same minibatch(es); reward = `acc_alpha - acc_beta`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairScore {
    pub acc_beta: f64,
    pub acc_alpha: f64,
}

impl PairScore {
    pub fn reward(&self) -> f64 {
        self.acc_alpha - self.acc_beta
    }
}

/// Result of [`SupernetSession::run`].
#[derive(Debug, Clone, PartialEq)]
pub struct SupernetReport {
    /// One per pair, in order.
    pub scores: Vec<PairScore>,
    pub wall_seconds: f64,
    pub train_steps: u64,
    pub mean_train_loss: f64,
}

/// The smallest published op set that contains every op of `genotypes` (fully-concat, then
/// loose-end, then NAT++), or `None` when no set does (e.g. NAONet-only ops).
pub fn infer_op_set<'a>(genotypes: impl IntoIterator<Item = &'a Genotype>) -> Option<OpSet> {
    let genotypes: Vec<&Genotype> = genotypes.into_iter().collect();
    [
        OpSet::NatFullyConcat,
        OpSet::NatLooseEnd,
        OpSet::NatPlusPlus,
    ]
    .into_iter()
    .find(|set| {
        genotypes.iter().all(|g| {
            [&g.normal, &g.reduce].iter().all(|cell| {
                cell.nodes
                    .iter()
                    .flat_map(|n| n.inputs.iter())
                    .all(|e| set.index_of(e.op).is_some())
            })
        })
    })
}

/// Shared supernet weights plus their optimiser and RNG; keep one per `supernet_key` on a slot.
pub struct SupernetSession {
    vs: VarStore,
    net: Supernet,
    sgd: Sgd,
    rng: ChaCha8Rng,
    settings: SupernetSettings,
    device: Device,
    steps: u64,
}

impl std::fmt::Debug for SupernetSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupernetSession")
            .field("config", self.net.config())
            .field("steps", &self.steps)
            .finish()
    }
}

impl SupernetSession {
    /// A fresh supernet for `data`'s input shape with B = `num_nodes` and every op of `op_set`.
    pub fn new(
        settings: &SupernetSettings,
        op_set: OpSet,
        num_nodes: usize,
        data: &DatasetSplits,
        device: Device,
        seed: u64,
    ) -> Result<Self, TrainError> {
        settings.validate()?;
        tch::manual_seed(mix(seed, u64::MAX) as i64);
        let vs = VarStore::new(device);
        let config = SupernetConfig {
            init_channels: i64::from(settings.init_channels),
            layers: i64::from(settings.layers),
            num_nodes,
            op_set,
            in_channels: data.channels,
            image_size: data.image_size,
            num_classes: data.num_classes,
            concat: SupernetConcat::for_op_set(op_set),
        };
        let net = Supernet::new(&vs.root(), &config)?;
        let sgd = Sgd::new(&vs, settings.momentum, settings.weight_decay);
        Ok(SupernetSession {
            vs,
            net,
            sgd,
            rng: ChaCha8Rng::seed_from_u64(seed),
            settings: settings.clone(),
            device,
            steps: 0,
        })
    }

    pub fn config(&self) -> &SupernetConfig {
        self.net.config()
    }

    pub fn settings(&self) -> &SupernetSettings {
        &self.settings
    }

    /// Training steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// A uniformly sampled input architecture (§4.2): two sources from the earlier nodes and two
    /// ops from the op set without `null`, per node; normal and reduce drawn independently.
    pub fn sample_input(&mut self) -> Genotype {
        let config = *self.net.config();
        let mut cell = || {
            let ops = config.op_set.ops();
            let usable = &ops[..ops.len() - 1];
            let nodes = (0..config.num_nodes)
                .map(|i| {
                    let to = i + 2;
                    let mut edge = || Edge {
                        from: self.rng.gen_range(0..to),
                        op: usable[self.rng.gen_range(0..usable.len())],
                    };
                    let first = edge();
                    let second = edge();
                    Node {
                        inputs: [first, second],
                    }
                })
                .collect();
            Cell {
                nodes,
                concat: (2..config.num_nodes + 2).collect(),
            }
        };
        let normal = cell();
        let reduce = cell();
        Genotype { normal, reduce }
    }

    fn random_batch(&mut self, split: &Split, limit: i64) -> Result<(Tensor, Tensor), TrainError> {
        let n = if limit > 0 {
            limit.min(split.len())
        } else {
            split.len()
        };
        let batch = i64::from(self.settings.batch_size).min(n);
        if batch < 2 {
            return Err(TrainError::budget(
                "batch_size",
                format!("needs at least 2 examples per batch, the split has {n}"),
            ));
        }
        let index: Vec<i64> = rand::seq::index::sample(&mut self.rng, n as usize, batch as usize)
            .into_iter()
            .map(|i| i as i64)
            .collect();
        Ok(split.gather(&Tensor::f_from_slice(&index)?, self.device)?)
    }

    /// `steps` SGD steps on random β (one fresh β per minibatch); returns the mean loss.
    pub fn train_steps(
        &mut self,
        data: &DatasetSplits,
        steps: u32,
        stop: &AtomicBool,
    ) -> Result<f64, TrainError> {
        let mut total = 0.0;
        for _ in 0..steps {
            if stop.load(Ordering::Relaxed) {
                return Err(TrainError::Cancelled);
            }
            let beta = self.sample_input();
            let (x, y) =
                self.random_batch(&data.train, i64::from(self.settings.max_train_examples))?;
            let logits = self.net.forward(&x, &beta.normal, &beta.reduce, true)?;
            let loss =
                logits.f_cross_entropy_loss::<Tensor>(&y, None, Reduction::Mean, -100, 0.0)?;
            let value = loss.f_double_value(&[])?;
            if !value.is_finite() {
                return Err(TrainError::NonFiniteLoss {
                    epoch: 0,
                    step: self.steps,
                    loss: value,
                });
            }
            self.sgd.zero_grad()?;
            loss.f_backward()?;
            if self.settings.grad_clip > 0.0 {
                self.sgd.clip_grad_norm(self.settings.grad_clip)?;
            }
            self.sgd.step(self.settings.learning_rate)?;
            self.steps += 1;
            total += value;
        }
        Ok(if steps > 0 {
            total / f64::from(steps)
        } else {
            0.0
        })
    }

    /// Top-1 accuracy of an architecture on a batch (train-mode BN, no gradient).
    pub fn accuracy(&self, genotype: &Genotype, x: &Tensor, y: &Tensor) -> Result<f64, TrainError> {
        tch::no_grad(|| -> Result<f64, TrainError> {
            let logits = self
                .net
                .forward(x, &genotype.normal, &genotype.reduce, true)?;
            let hits = logits
                .f_argmax(-1, false)?
                .f_eq_tensor(y)?
                .f_sum(Kind::Int64)?
                .f_int64_value(&[])?;
            let n = y.size().first().copied().unwrap_or(1).max(1);
            Ok(hits as f64 / n as f64)
        })
    }

    /// Scores (β, α) on one given batch: both architectures see exactly the same images.
    pub fn score_pair_on(
        &self,
        beta: &Genotype,
        alpha: &Genotype,
        x: &Tensor,
        y: &Tensor,
    ) -> Result<PairScore, TrainError> {
        Ok(PairScore {
            acc_beta: self.accuracy(beta, x, y)?,
            acc_alpha: self.accuracy(alpha, x, y)?,
        })
    }

    /// Top-1 accuracy of an architecture over the first `max_examples` (0 = all) of the
    /// validation split, in minibatches of `batch_size` with train-mode BN (as NAT's derivation
    /// step measures candidates, §5.1).
    pub fn validation_accuracy(
        &self,
        data: &DatasetSplits,
        genotype: &Genotype,
        max_examples: u32,
    ) -> Result<f64, TrainError> {
        let split = &data.validation;
        let n = match max_examples {
            0 => split.len(),
            m => i64::from(m).min(split.len()),
        };
        let batch = i64::from(self.settings.batch_size);
        let (mut weighted, mut seen, mut start) = (0.0, 0i64, 0i64);
        while start < n {
            // A trailing batch of one example cannot use batch statistics: fold it into the last.
            let len = if n - start < 2 * batch && n - start > batch {
                n - start
            } else {
                batch.min(n - start)
            };
            if len < 2 {
                break;
            }
            let (x, y) = split.slice(start, len, self.device)?;
            weighted += self.accuracy(genotype, &x, &y)? * len as f64;
            seen += len;
            start += len;
        }
        if seen == 0 {
            return Err(TrainError::budget(
                "max_examples",
                "needs at least 2 validation examples",
            ));
        }
        Ok(weighted / seen as f64)
    }

    /// Scores (β, α) on the same `eval_batches` random validation minibatches.
    pub fn score_pair(
        &mut self,
        data: &DatasetSplits,
        beta: &Genotype,
        alpha: &Genotype,
    ) -> Result<PairScore, TrainError> {
        for g in [beta, alpha] {
            self.net.check_cell(nat_arch::CellKind::Normal, &g.normal)?;
            self.net.check_cell(nat_arch::CellKind::Reduce, &g.reduce)?;
        }
        let batches = self.settings.eval_batches.max(1);
        let (mut acc_beta, mut acc_alpha) = (0.0, 0.0);
        for _ in 0..batches {
            let (x, y) = self.random_batch(&data.validation, 0)?;
            let score = self.score_pair_on(beta, alpha, &x, &y)?;
            acc_beta += score.acc_beta;
            acc_alpha += score.acc_alpha;
        }
        Ok(PairScore {
            acc_beta: acc_beta / f64::from(batches),
            acc_alpha: acc_alpha / f64::from(batches),
        })
    }

    /// A supernet task: for each pair, `train_steps_between_pairs` steps on random β, then score
    /// the pair. `on_pair(done, total)` is called after each pair.
    pub fn run(
        &mut self,
        data: &DatasetSplits,
        pairs: &[(Genotype, Genotype)],
        stop: &AtomicBool,
        on_pair: &mut dyn FnMut(usize, usize),
    ) -> Result<SupernetReport, TrainError> {
        let started = Instant::now();
        let (mut loss_sum, mut loss_n, steps_before) = (0.0, 0u32, self.steps);
        let mut scores = Vec::with_capacity(pairs.len());
        for (i, (beta, alpha)) in pairs.iter().enumerate() {
            if self.settings.max_wall_seconds > 0.0
                && started.elapsed().as_secs_f64() >= self.settings.max_wall_seconds
            {
                return Err(TrainError::budget(
                    "max_wall_seconds",
                    format!(
                        "{} s passed after {i} of {} pairs",
                        self.settings.max_wall_seconds,
                        pairs.len()
                    ),
                ));
            }
            let steps = self.settings.train_steps_between_pairs;
            if steps > 0 {
                loss_sum += self.train_steps(data, steps, stop)? * f64::from(steps);
                loss_n += steps;
            }
            if stop.load(Ordering::Relaxed) {
                return Err(TrainError::Cancelled);
            }
            scores.push(self.score_pair(data, beta, alpha)?);
            on_pair(i + 1, pairs.len());
        }
        Ok(SupernetReport {
            scores,
            wall_seconds: started.elapsed().as_secs_f64(),
            train_steps: self.steps - steps_before,
            mean_train_loss: if loss_n > 0 {
                loss_sum / f64::from(loss_n)
            } else {
                f64::NAN
            },
        })
    }

    /// Saves the shared weights and momentum buffers into `dir` (`supernet.ot`, `optimizer.ot`).
    pub fn save(&self, dir: &Path) -> Result<(), TrainError> {
        let fail = |path: &Path, e: &dyn std::fmt::Display| TrainError::Checkpoint {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| fail(dir, &e))?;
        let weights = dir.join("supernet.ot");
        self.vs.save(&weights).map_err(|e| fail(&weights, &e))?;
        let optimizer = dir.join("optimizer.ot");
        self.sgd.save(&optimizer).map_err(|e| fail(&optimizer, &e))
    }

    /// Restores what [`SupernetSession::save`] wrote (same settings and op set required).
    pub fn restore(&mut self, dir: &Path) -> Result<(), TrainError> {
        let fail = |path: &Path, e: &dyn std::fmt::Display| TrainError::Checkpoint {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let weights = dir.join("supernet.ot");
        self.vs.load(&weights).map_err(|e| fail(&weights, &e))?;
        let optimizer = dir.join("optimizer.ot");
        self.sgd.load(&optimizer).map_err(|e| fail(&optimizer, &e))
    }
}
