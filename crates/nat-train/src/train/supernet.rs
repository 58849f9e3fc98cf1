//! A supernet session (NAT-SPEC §4.1–4.3): shared weights trained on uniformly sampled input
//! architectures β, and (β, α) pairs scored on the same validation minibatch with the supernet in
//! train-mode BN: reward = acc(α) − acc(β).
//!
//! A sharded supernet (local SGD): the coordinator owns the shared weights as versioned
//! safetensors documents; a worker imports version v ([`SupernetSession::import_safetensors`]),
//! runs its shard ([`SupernetSession::run_shard`]) and returns its weights
//! ([`SupernetSession::export_safetensors`]), which the coordinator averages.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use nat_arch::{Cell, Edge, Genotype, Node, OpSet};
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Device, Kind, Reduction, TchError, Tensor};

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

/// Result of [`SupernetSession::run`] and [`SupernetSession::run_shard`].
#[derive(Debug, Clone, PartialEq)]
pub struct SupernetReport {
    /// One per pair, in order.
    pub scores: Vec<PairScore>,
    pub wall_seconds: f64,
    /// SGD steps taken by this call (a shard's own steps plus the steps between pairs).
    pub train_steps: u64,
    /// Mean training loss over those steps; NaN when there were none.
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
        let steps_before = self.steps;
        let mut loss = LossSum::default();
        let scores = self.score_pairs(data, pairs, started, stop, &mut loss, &mut |done| {
            on_pair(done, pairs.len());
        })?;
        Ok(self.report(scores, started, steps_before, &loss))
    }

    /// A shard of a sharded round (local SGD from the coordinator's averaged weights, imported
    /// first with [`SupernetSession::import_safetensors`]): reseeds the session's RNG and
    /// libtorch's with `seed` (so the shard's β, data order and pair minibatches are its own),
    /// starts a fresh optimizer state (momentum buffers zero; every trainable variable with a
    /// zero gradient, so that weight decay reaches all of them whatever the session did before),
    /// takes `train_steps` SGD steps on random β (0 is allowed), then runs the pair loop of
    /// [`SupernetSession::run`] over `pairs` (`train_steps_between_pairs` steps, then the pair on
    /// its own minibatches; an empty list is a warm-up shard).
    ///
    /// Every pair is checked against the supernet before anything is trained. `max_wall_seconds`
    /// and `stop` are checked before every step and pair. `on_progress(done, total)` is called
    /// after each unit, where the units are the `train_steps` shard steps and the pairs (a pair's
    /// steps between pairs count with the pair): `total = train_steps + pairs.len()`.
    pub fn run_shard(
        &mut self,
        data: &DatasetSplits,
        train_steps: u32,
        pairs: &[(Genotype, Genotype)],
        seed: u64,
        stop: &AtomicBool,
        on_progress: &mut dyn FnMut(u64, u64),
    ) -> Result<SupernetReport, TrainError> {
        let started = Instant::now();
        for (beta, alpha) in pairs {
            for g in [beta, alpha] {
                self.net.check_cell(nat_arch::CellKind::Normal, &g.normal)?;
                self.net.check_cell(nat_arch::CellKind::Reduce, &g.reduce)?;
            }
        }
        self.rng = ChaCha8Rng::seed_from_u64(seed);
        tch::manual_seed(mix(seed, u64::MAX) as i64);
        self.sgd = Sgd::new(&self.vs, self.settings.momentum, self.settings.weight_decay);
        self.define_every_gradient()?;
        let steps_before = self.steps;
        let total = u64::from(train_steps) + pairs.len() as u64;
        let mut loss = LossSum::default();
        for step in 0..train_steps {
            self.check_wall(started, || {
                format!("after {step} of {train_steps} shard steps")
            })?;
            loss.add(self.train_steps(data, 1, stop)?, 1);
            on_progress(u64::from(step) + 1, total);
        }
        let base = u64::from(train_steps);
        let scores = self.score_pairs(data, pairs, started, stop, &mut loss, &mut |done| {
            on_progress(base + done as u64, total);
        })?;
        Ok(self.report(scores, started, steps_before, &loss))
    }

    /// Gives every trainable variable a defined, zero gradient. The optimizer updates (weight
    /// decay, momentum) every variable whose gradient is defined, and libtorch keeps a gradient
    /// defined once a variable took part in a backward pass: without this, which variables decay
    /// in a shard would depend on the architectures the session sampled before it. With it every
    /// variable decays at every step, as in a long-running session where every op has been used.
    fn define_every_gradient(&mut self) -> Result<(), TchError> {
        let mut total: Option<Tensor> = None;
        for var in self.vs.trainable_variables() {
            let term = var.f_sum(var.f_kind()?)?.f_mul_scalar(0.0)?;
            total = Some(match total {
                Some(t) => t.f_add(&term)?,
                None => term,
            });
        }
        if let Some(total) = total {
            total.f_backward()?;
        }
        self.sgd.zero_grad()
    }

    /// `Err(max_wall_seconds)` once the session's wall-clock budget since `started` is spent.
    fn check_wall(
        &self,
        started: Instant,
        progress: impl FnOnce() -> String,
    ) -> Result<(), TrainError> {
        let limit = self.settings.max_wall_seconds;
        if limit > 0.0 && started.elapsed().as_secs_f64() >= limit {
            return Err(TrainError::budget(
                "max_wall_seconds",
                format!("{limit} s passed {}", progress()),
            ));
        }
        Ok(())
    }

    /// The pair loop shared by [`SupernetSession::run`] and [`SupernetSession::run_shard`]:
    /// `on_pair(done)` after each scored pair.
    fn score_pairs(
        &mut self,
        data: &DatasetSplits,
        pairs: &[(Genotype, Genotype)],
        started: Instant,
        stop: &AtomicBool,
        loss: &mut LossSum,
        on_pair: &mut dyn FnMut(usize),
    ) -> Result<Vec<PairScore>, TrainError> {
        let mut scores = Vec::with_capacity(pairs.len());
        for (i, (beta, alpha)) in pairs.iter().enumerate() {
            self.check_wall(started, || format!("after {i} of {} pairs", pairs.len()))?;
            let steps = self.settings.train_steps_between_pairs;
            if steps > 0 {
                loss.add(self.train_steps(data, steps, stop)?, steps);
            }
            if stop.load(Ordering::Relaxed) {
                return Err(TrainError::Cancelled);
            }
            scores.push(self.score_pair(data, beta, alpha)?);
            on_pair(i + 1);
        }
        Ok(scores)
    }

    fn report(
        &self,
        scores: Vec<PairScore>,
        started: Instant,
        steps_before: u64,
        loss: &LossSum,
    ) -> SupernetReport {
        SupernetReport {
            scores,
            wall_seconds: started.elapsed().as_secs_f64(),
            train_steps: self.steps - steps_before,
            mean_train_loss: loss.mean(),
        }
    }

    /// Every variable of the VarStore — the trainable weights and the batch-norm running
    /// statistics alike — as one safetensors document: tensor names are the VarStore's names,
    /// each tensor keeps its stored dtype and is copied to the CPU, contiguous. `metadata` goes
    /// into the document's `__metadata__` (omitted when empty). The bytes are a function of the
    /// weights and `metadata` only: exporting the same weights twice gives the same bytes.
    pub fn export_safetensors(
        &self,
        metadata: BTreeMap<String, String>,
    ) -> Result<Vec<u8>, TrainError> {
        let mut variables: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        variables.sort_by(|a, b| a.0.cmp(&b.0));
        let mut owned = Vec::with_capacity(variables.len());
        for (name, var) in variables {
            let kind = var.f_kind()?;
            let dtype = dtype_of(&name, kind)?;
            let cpu = tch::no_grad(|| -> Result<Tensor, TchError> {
                var.f_detach()?.f_to_device(Device::Cpu)?.f_contiguous()
            })?;
            let shape = shape_of(&name, &cpu.size())?;
            let numel = numel(&name, &shape)?;
            let mut bytes = vec![0u8; numel * kind.elt_size_in_bytes()];
            cpu.f_copy_data_u8(&mut bytes, numel)?;
            owned.push((name, dtype, shape, bytes));
        }
        let views = owned
            .iter()
            .map(|(name, dtype, shape, bytes)| {
                TensorView::new(*dtype, shape.clone(), bytes)
                    .map(|view| (name.as_str(), view))
                    .map_err(|e| TrainError::weights(Some(name), e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let document = safetensors::serialize(views, None)
            .map_err(|e| TrainError::weights(None, format!("cannot serialize: {e}")))?;
        with_metadata(document, &metadata)
    }

    /// Overwrites every variable (weights and batch-norm running statistics) from a document
    /// written by [`SupernetSession::export_safetensors`] of a session with the same config. The
    /// names, shapes and dtypes must match exactly: a tensor the session lacks, a variable the
    /// document lacks, or a shape or dtype that differs is a [`TrainError::Weights`] naming the
    /// tensor. Everything is checked (and staged on the CPU) before the first variable is
    /// written, so a refused document leaves the session unchanged. The values are copied onto
    /// each variable's device (CPU or CUDA) without recording gradients. The optimizer's
    /// momentum buffers and the RNG are left as they are ([`SupernetSession::run_shard`] starts
    /// fresh ones).
    pub fn import_safetensors(&mut self, bytes: &[u8]) -> Result<(), TrainError> {
        let document = SafeTensors::deserialize(bytes)
            .map_err(|e| TrainError::weights(None, format!("not a safetensors document: {e}")))?;
        let mut variables: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        variables.sort_by(|a, b| a.0.cmp(&b.0));
        let known: HashSet<&str> = variables.iter().map(|(name, _)| name.as_str()).collect();
        let mut names = document.names();
        names.sort_unstable();
        if let Some(extra) = names.iter().find(|name| !known.contains(**name)) {
            return Err(TrainError::weights(
                Some(extra),
                "is in the document but is not a variable of this supernet",
            ));
        }
        let mut staged = Vec::with_capacity(variables.len());
        for (name, var) in &variables {
            let view = document.tensor(name).map_err(|_| {
                TrainError::weights(
                    Some(name),
                    "is a variable of this supernet but missing from the document",
                )
            })?;
            let kind = var.f_kind()?;
            let dtype = dtype_of(name, kind)?;
            if view.dtype() != dtype {
                return Err(TrainError::weights(
                    Some(name),
                    format!(
                        "dtype {:?} in the document, {dtype:?} in the session",
                        view.dtype()
                    ),
                ));
            }
            let size = var.size();
            let shape = shape_of(name, &size)?;
            if view.shape() != shape.as_slice() {
                return Err(TrainError::weights(
                    Some(name),
                    format!(
                        "shape {:?} in the document, {shape:?} in the session",
                        view.shape()
                    ),
                ));
            }
            let expected = numel(name, &shape)? * kind.elt_size_in_bytes();
            if view.data().len() != expected {
                return Err(TrainError::weights(
                    Some(name),
                    format!("{} bytes of data, {expected} expected", view.data().len()),
                ));
            }
            staged.push(Tensor::f_from_data_size(view.data(), &size, kind)?);
        }
        tch::no_grad(|| -> Result<(), TchError> {
            for ((_, var), source) in variables.iter().zip(&staged) {
                let mut target = var.shallow_clone();
                target.f_copy_(source)?;
            }
            Ok(())
        })?;
        Ok(())
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

/// Sum of per-step losses for a report's mean.
#[derive(Debug, Default)]
struct LossSum {
    sum: f64,
    steps: u32,
}

impl LossSum {
    /// Adds `steps` steps whose mean loss was `mean`.
    fn add(&mut self, mean: f64, steps: u32) {
        self.sum += mean * f64::from(steps);
        self.steps += steps;
    }

    fn mean(&self) -> f64 {
        if self.steps > 0 {
            self.sum / f64::from(self.steps)
        } else {
            f64::NAN
        }
    }
}

/// The safetensors dtype of a libtorch kind (the kinds a VarStore can hold that safetensors names).
fn dtype_of(name: &str, kind: Kind) -> Result<Dtype, TrainError> {
    Ok(match kind {
        Kind::Bool => Dtype::BOOL,
        Kind::Uint8 => Dtype::U8,
        Kind::Int8 => Dtype::I8,
        Kind::Int16 => Dtype::I16,
        Kind::Int => Dtype::I32,
        Kind::Int64 => Dtype::I64,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        other => {
            return Err(TrainError::weights(
                Some(name),
                format!("libtorch kind {other:?} has no safetensors dtype"),
            ))
        }
    })
}

fn shape_of(name: &str, size: &[i64]) -> Result<Vec<usize>, TrainError> {
    size.iter()
        .map(|&d| {
            usize::try_from(d)
                .map_err(|_| TrainError::weights(Some(name), format!("negative dimension {d}")))
        })
        .collect()
}

fn numel(name: &str, shape: &[usize]) -> Result<usize, TrainError> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| TrainError::weights(Some(name), format!("shape {shape:?} overflows")))
}

/// Adds `__metadata__` to a document serialized without it. safetensors 0.8 writes metadata from
/// a `HashMap`, in an order that changes from call to call; writing it here from the sorted map
/// keeps equal weights and metadata byte-identical. The header stays JSON padded with spaces to
/// a multiple of 8 bytes, as the format requires.
fn with_metadata(
    document: Vec<u8>,
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>, TrainError> {
    if metadata.is_empty() {
        return Ok(document);
    }
    let malformed = || TrainError::weights(None, "serialized header is malformed");
    let (len, rest) = document.split_first_chunk::<8>().ok_or_else(malformed)?;
    let len = usize::try_from(u64::from_le_bytes(*len)).map_err(|_| malformed())?;
    if len > rest.len() {
        return Err(malformed());
    }
    let (header, data) = rest.split_at(len);
    let header = std::str::from_utf8(header).map_err(|_| malformed())?;
    let entries = header
        .trim_end_matches(' ')
        .strip_prefix('{')
        .and_then(|h| h.strip_suffix('}'))
        .ok_or_else(malformed)?;
    let metadata = serde_json::to_string(metadata)
        .map_err(|e| TrainError::weights(None, format!("metadata: {e}")))?;
    let mut header = format!("{{\"__metadata__\":{metadata}");
    if !entries.is_empty() {
        header.push(',');
        header.push_str(entries);
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut out = Vec::with_capacity(8 + header.len() + data.len());
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    Ok(out)
}
