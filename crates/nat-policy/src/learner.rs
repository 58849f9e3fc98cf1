//! [`PolicyLearner`]: sampling transformations, scoring given ones, and learning from
//! asynchronously arriving rewards (NAT-SPEC §4.4–4.6 with batches and importance ratios).

use std::collections::BTreeMap;

use candle_core::Tensor;
use nat_arch::{Cell, Genotype, Op};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::adam::Adam;
use crate::config::PolicyConfig;
use crate::dist::{cell_entropy, cell_log_prob, edge_log_probs};
use crate::error::{PolicyError, Result};
use crate::input::{allowed_mask, selected_mask, validate_input, validate_output};
use crate::network::PolicyNet;

/// One transformation drawn by the policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// The input architecture β.
    pub input: Genotype,
    /// The transformed architecture α (same wiring and concat lists, ops replaced).
    pub alpha: Genotype,
    /// log π(α | β) under the parameters of `version` (normal + reduction cell).
    pub log_prob: f64,
    /// Entropy of the normal cell's distribution when sampled.
    pub entropy_normal: f64,
    /// Entropy of the reduction cell's distribution when sampled.
    pub entropy_reduce: f64,
    /// Policy version that drew the sample.
    pub version: u64,
}

impl Sample {
    /// Total entropy (normal + reduction cell).
    pub fn entropy(&self) -> f64 {
        self.entropy_normal + self.entropy_reduce
    }
}

/// What one [`PolicyLearner::update`] did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateStats {
    /// Policy version after the update (unchanged when no step was taken).
    pub version: u64,
    /// Whether an optimizer step was taken (false when every sample was stale).
    pub step_taken: bool,
    /// Rewards that moved the policy.
    pub used: usize,
    /// Indices (into the batch) of samples dropped for being too stale.
    pub dropped_stale: Vec<usize>,
    /// Loss value before the step.
    pub loss: f64,
    /// Mean reward of the used samples.
    pub mean_reward: f64,
    /// Mean advantage (reward − baseline) of the used samples.
    pub mean_advantage: f64,
    /// Mean entropy (normal + reduce) of the used samples under the pre-step parameters.
    pub mean_entropy: f64,
    /// Fraction of used samples whose importance ratio fell outside the clip range.
    pub clipped_fraction: f64,
    /// Baseline after the update.
    pub baseline: f64,
}

/// The policy network plus everything needed to keep learning it: optimizer state, baseline,
/// version and counters. Not `Sync`-shared: wrap in a mutex to share between tasks.
#[derive(Debug)]
pub struct PolicyLearner {
    pub(crate) net: PolicyNet,
    pub(crate) adam: Adam,
    pub(crate) baseline: f64,
    pub(crate) version: u64,
    pub(crate) rewards_applied: u64,
    pub(crate) stale_dropped: u64,
}

/// Differentiable per-sample terms of a batch.
pub(crate) struct BatchTerms {
    /// log π(α|β) per sample, `(m,)`.
    pub log_prob: Tensor,
    /// Normal-cell entropy per sample, `(m,)`.
    pub entropy_normal: Tensor,
    /// Reduction-cell entropy per sample, `(m,)`.
    pub entropy_reduce: Tensor,
}

impl PolicyLearner {
    /// A fresh policy (version 0, baseline 0), parameters initialised from `seed`.
    pub fn new(config: PolicyConfig, seed: u64) -> Result<Self> {
        let net = PolicyNet::new(config, seed)?;
        let adam = Adam::new(net.params())?;
        Ok(PolicyLearner {
            net,
            adam,
            baseline: 0.0,
            version: 0,
            rewards_applied: 0,
            stale_dropped: 0,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PolicyConfig {
        self.net.config()
    }

    /// Current version (number of optimizer steps taken).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Current reward baseline.
    pub fn baseline(&self) -> f64 {
        self.baseline
    }

    /// Rewards that have moved the policy so far.
    pub fn rewards_applied(&self) -> u64 {
        self.rewards_applied
    }

    /// Samples dropped as stale so far.
    pub fn stale_dropped(&self) -> u64 {
        self.stale_dropped
    }

    /// Number of scalar parameters of the network.
    pub fn num_parameters(&self) -> usize {
        self.net.num_parameters()
    }

    /// Draws `n` transformations of every input (input-major order), seeded by `rng`.
    pub fn sample<R: Rng + ?Sized>(
        &self,
        inputs: &[Genotype],
        n: usize,
        rng: &mut R,
    ) -> Result<Vec<Sample>> {
        self.transform(inputs, n, Choice::Sample(rng))
    }

    /// The most likely transformation of every input: per edge, the output op of highest
    /// probability (ties: the space's candidate order).
    pub fn argmax(&self, inputs: &[Genotype]) -> Result<Vec<Sample>> {
        self.transform(inputs, 1, Choice::<rand::rngs::ThreadRng>::Argmax)
    }

    /// log π(α | β) under the current parameters (for importance ratios of old samples).
    pub fn log_prob(&self, input: &Genotype, alpha: &Genotype) -> Result<f64> {
        let space = self.config().space;
        validate_input(space, input, "input")?;
        validate_output(space, input, alpha, "alpha")?;
        let tables = self.edge_tables(&[&input.normal, &input.reduce])?;
        let mut total = 0.0;
        for ((cell_in, cell_out), table) in [
            (&input.normal, &alpha.normal),
            (&input.reduce, &alpha.reduce),
        ]
        .into_iter()
        .zip(&tables)
        {
            total += outcome_log_prob(self, cell_in, cell_out, table);
        }
        Ok(total)
    }

    /// Raw logits of `cell`, one row of K per edge (edge-list order).
    pub fn logits(&self, cell: &Cell) -> Result<Vec<Vec<f64>>> {
        let genotype = Genotype {
            normal: cell.clone(),
            reduce: cell.clone(),
        };
        validate_input(self.config().space, &genotype, "cell")?;
        let batch = self.net.batch(&[cell])?;
        let logits = self.net.logits(&batch)?.to_dtype(candle_core::DType::F64)?;
        Ok(logits.squeeze(0)?.to_vec2::<f64>()?)
    }

    /// Per edge, the probability of each reachable output op (the policy's marginal over
    /// actions; under the reference profile these include the unnormalised 1e-5 shift).
    pub fn outcome_distribution(&self, cell: &Cell) -> Result<Vec<Vec<(Op, f64)>>> {
        let genotype = Genotype {
            normal: cell.clone(),
            reduce: cell.clone(),
        };
        let space = self.config().space;
        validate_input(space, &genotype, "cell")?;
        let tables = self.edge_tables(&[cell])?;
        let k = space.num_actions();
        let mut out = Vec::new();
        for (e, (op, _, _)) in cell.edges().enumerate() {
            let row = &tables[0][e * k..(e + 1) * k];
            let dist = space
                .allowed_targets(op)
                .into_iter()
                .map(|target| {
                    let p: f64 = space
                        .actions_for(op, target)
                        .iter()
                        .map(|&a| row[a].exp())
                        .sum();
                    (target, p)
                })
                .collect();
            out.push(dist);
        }
        Ok(out)
    }

    /// Learns from a batch of rewarded samples: one Adam step on
    /// `−mean(min(ρA, clip(ρ)A)) − λ_n·mean(H_n) − λ_r·mean(H_r)` with ρ = π/π_old, then the
    /// baseline update. Samples older than `max_staleness` versions are dropped and reported.
    pub fn update(&mut self, batch: &[(Sample, f64)]) -> Result<UpdateStats> {
        let cfg = *self.config();
        let mut used = Vec::new();
        let mut dropped_stale = Vec::new();
        for (i, (sample, reward)) in batch.iter().enumerate() {
            if !reward.is_finite() {
                return Err(PolicyError::invalid(
                    format!("batch[{i}].reward"),
                    format!("must be finite, got {reward}"),
                ));
            }
            if !sample.log_prob.is_finite() {
                return Err(PolicyError::invalid(
                    format!("batch[{i}].log_prob"),
                    "must be finite",
                ));
            }
            if sample.version > self.version {
                return Err(PolicyError::invalid(
                    format!("batch[{i}].version"),
                    format!(
                        "sample from version {} but the policy is at {}",
                        sample.version, self.version
                    ),
                ));
            }
            validate_input(cfg.space, &sample.input, &format!("batch[{i}].input"))?;
            validate_output(
                cfg.space,
                &sample.input,
                &sample.alpha,
                &format!("batch[{i}].alpha"),
            )?;
            if self.version - sample.version > cfg.learn.max_staleness {
                dropped_stale.push(i);
            } else {
                used.push(i);
            }
        }
        self.stale_dropped += dropped_stale.len() as u64;
        if used.is_empty() {
            return Ok(UpdateStats {
                version: self.version,
                step_taken: false,
                used: 0,
                dropped_stale,
                loss: 0.0,
                mean_reward: 0.0,
                mean_advantage: 0.0,
                mean_entropy: 0.0,
                clipped_fraction: 0.0,
                baseline: self.baseline,
            });
        }
        let samples: Vec<&Sample> = used.iter().map(|&i| &batch[i].0).collect();
        let rewards: Vec<f64> = used.iter().map(|&i| batch[i].1).collect();
        let advantages: Vec<f64> = rewards.iter().map(|r| r - self.baseline).collect();
        let (loss, diagnostics) = self.loss(&samples, &advantages)?;
        let grads = loss.backward()?;
        self.adam.step(self.net.params(), &grads, &cfg.learn)?;
        self.version += 1;
        self.rewards_applied += used.len() as u64;
        let gamma = cfg.learn.baseline_decay;
        for (reward, advantage) in rewards.iter().zip(&advantages) {
            let x = if cfg.profile.baseline_tracks_advantage() {
                *advantage
            } else {
                *reward
            };
            self.baseline = gamma * self.baseline + (1.0 - gamma) * x;
        }
        let m = used.len() as f64;
        Ok(UpdateStats {
            version: self.version,
            step_taken: true,
            used: used.len(),
            dropped_stale,
            loss: diagnostics.loss,
            mean_reward: rewards.iter().sum::<f64>() / m,
            mean_advantage: advantages.iter().sum::<f64>() / m,
            mean_entropy: diagnostics.mean_entropy,
            clipped_fraction: diagnostics.clipped as f64 / m,
            baseline: self.baseline,
        })
    }

    /// The scalar loss (differentiable) for validated samples and their advantages.
    pub(crate) fn loss(
        &self,
        samples: &[&Sample],
        advantages: &[f64],
    ) -> Result<(Tensor, LossDiagnostics)> {
        let cfg = self.config();
        let terms = self.batch_terms(samples)?;
        let device = self.net.device();
        let dtype = self.net.dtype();
        let m = samples.len();
        let old: Vec<f64> = samples.iter().map(|s| s.log_prob).collect();
        let old = Tensor::from_vec(old, m, device)?.to_dtype(dtype)?;
        let adv = Tensor::from_vec(advantages.to_vec(), m, device)?.to_dtype(dtype)?;
        let eps = cfg.learn.clip_epsilon;
        let ratio = terms.log_prob.sub(&old)?.exp()?;
        let clipped = ratio.clamp(1.0 - eps, 1.0 + eps)?;
        let surrogate = ratio.mul(&adv)?.minimum(&clipped.mul(&adv)?)?;
        let loss = surrogate
            .mean_all()?
            .neg()?
            .sub(
                &terms
                    .entropy_normal
                    .mean_all()?
                    .affine(cfg.learn.entropy_normal, 0.0)?,
            )?
            .sub(
                &terms
                    .entropy_reduce
                    .mean_all()?
                    .affine(cfg.learn.entropy_reduce, 0.0)?,
            )?;
        let ratios = ratio.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?;
        let clipped_count = ratios.iter().filter(|r| (**r - 1.0).abs() > eps).count();
        let entropy = terms
            .entropy_normal
            .add(&terms.entropy_reduce)?
            .to_dtype(candle_core::DType::F64)?
            .mean_all()?
            .to_scalar::<f64>()?;
        let value = loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        Ok((
            loss,
            LossDiagnostics {
                loss: value,
                mean_entropy: entropy,
                clipped: clipped_count,
            },
        ))
    }

    /// Per-sample differentiable log π and entropies, cells grouped by node count.
    pub(crate) fn batch_terms(&self, samples: &[&Sample]) -> Result<BatchTerms> {
        let m = samples.len();
        let mut inputs: Vec<&Cell> = samples.iter().map(|s| &s.input.normal).collect();
        inputs.extend(samples.iter().map(|s| &s.input.reduce));
        let mut outputs: Vec<&Cell> = samples.iter().map(|s| &s.alpha.normal).collect();
        outputs.extend(samples.iter().map(|s| &s.alpha.reduce));
        let space = self.config().space;
        let k = space.num_actions();
        let device = self.net.device();
        let dtype = self.net.dtype();
        let mut log_probs = Vec::new();
        let mut entropies = Vec::new();
        let mut order = Vec::with_capacity(2 * m);
        for (nodes, members) in group_by_nodes(&inputs) {
            let cells: Vec<&Cell> = members.iter().map(|&i| inputs[i]).collect();
            let batch = self.net.batch(&cells)?;
            let logits = self.net.logits(&batch)?;
            let (mut allowed, mut selected) = (Vec::new(), Vec::new());
            for &i in &members {
                allowed_mask(space, inputs[i], &mut allowed);
                selected_mask(space, inputs[i], outputs[i], &mut selected);
            }
            let shape = (members.len(), 2 * nodes, k);
            let allowed = Tensor::from_vec(allowed, shape, device)?.to_dtype(dtype)?;
            let selected = Tensor::from_vec(selected, shape, device)?.to_dtype(dtype)?;
            let (log_q, q) = edge_log_probs(&logits, &allowed, self.config().profile)?;
            log_probs.push(cell_log_prob(&log_q, &selected)?);
            entropies.push(cell_entropy(&log_q, &q, &allowed)?);
            order.extend(members);
        }
        // `order[j]` is the original cell index of row j; invert it to restore input order.
        let mut position = vec![0u32; order.len()];
        for (row, &cell) in order.iter().enumerate() {
            position[cell] = row as u32;
        }
        let position = Tensor::from_vec(position, 2 * m, device)?;
        let log_prob = Tensor::cat(&log_probs, 0)?.index_select(&position, 0)?;
        let entropy = Tensor::cat(&entropies, 0)?.index_select(&position, 0)?;
        Ok(BatchTerms {
            log_prob: log_prob.narrow(0, 0, m)?.add(&log_prob.narrow(0, m, m)?)?,
            entropy_normal: entropy.narrow(0, 0, m)?,
            entropy_reduce: entropy.narrow(0, m, m)?,
        })
    }

    /// Row-major `(2B × K)` tables of `log q` (f64), one per cell, in input order.
    fn edge_tables(&self, cells: &[&Cell]) -> Result<Vec<Vec<f64>>> {
        let space = self.config().space;
        let k = space.num_actions();
        let mut tables = vec![Vec::new(); cells.len()];
        for (nodes, members) in group_by_nodes(cells) {
            let group: Vec<&Cell> = members.iter().map(|&i| cells[i]).collect();
            let batch = self.net.batch(&group)?;
            let logits = self.net.logits(&batch)?.detach();
            let mut allowed = Vec::new();
            for cell in &group {
                allowed_mask(space, cell, &mut allowed);
            }
            let allowed =
                Tensor::from_vec(allowed, (group.len(), 2 * nodes, k), self.net.device())?
                    .to_dtype(self.net.dtype())?;
            let (log_q, _) = edge_log_probs(&logits, &allowed, self.config().profile)?;
            let flat = log_q
                .to_dtype(candle_core::DType::F64)?
                .flatten_all()?
                .to_vec1::<f64>()?;
            let per_cell = 2 * nodes * k;
            for (j, &i) in members.iter().enumerate() {
                tables[i] = flat[j * per_cell..(j + 1) * per_cell].to_vec();
            }
        }
        Ok(tables)
    }

    fn transform<R: Rng + ?Sized>(
        &self,
        inputs: &[Genotype],
        n: usize,
        mut choice: Choice<'_, R>,
    ) -> Result<Vec<Sample>> {
        let space = self.config().space;
        for (i, input) in inputs.iter().enumerate() {
            validate_input(space, input, &format!("inputs[{i}]"))?;
        }
        let mut cells: Vec<&Cell> = inputs.iter().map(|g| &g.normal).collect();
        cells.extend(inputs.iter().map(|g| &g.reduce));
        let tables = self.edge_tables(&cells)?;
        let m = inputs.len();
        let mut out = Vec::with_capacity(m * n);
        for (i, input) in inputs.iter().enumerate() {
            for _ in 0..n {
                let (normal, lp_n, h_n) =
                    self.transform_cell(&input.normal, &tables[i], &mut choice)?;
                let (reduce, lp_r, h_r) =
                    self.transform_cell(&input.reduce, &tables[m + i], &mut choice)?;
                out.push(Sample {
                    input: input.clone(),
                    alpha: Genotype { normal, reduce },
                    log_prob: lp_n + lp_r,
                    entropy_normal: h_n,
                    entropy_reduce: h_r,
                    version: self.version,
                });
            }
        }
        Ok(out)
    }

    fn transform_cell<R: Rng + ?Sized>(
        &self,
        cell: &Cell,
        table: &[f64],
        choice: &mut Choice<'_, R>,
    ) -> Result<(Cell, f64, f64)> {
        let space = self.config().space;
        let k = space.num_actions();
        let mut output = cell.clone();
        let mut entropy = 0.0;
        for (e, (op, _, _)) in cell.edges().enumerate() {
            let row = &table[e * k..(e + 1) * k];
            let mask = space.mask(op);
            let q: Vec<f64> = row
                .iter()
                .zip(&mask)
                .map(|(lq, &allowed)| if allowed { lq.exp() } else { 0.0 })
                .collect();
            entropy -= q
                .iter()
                .zip(row)
                .filter(|(p, _)| **p > 0.0)
                .map(|(p, lq)| p * lq)
                .sum::<f64>();
            let target = match choice {
                Choice::Sample(rng) => {
                    let total: f64 = q.iter().sum();
                    let mut u = rng.gen::<f64>() * total;
                    let mut action = mask.iter().rposition(|&a| a).unwrap_or(0);
                    for (a, p) in q.iter().enumerate() {
                        if *p > 0.0 && u < *p {
                            action = a;
                            break;
                        }
                        u -= p;
                    }
                    space.apply(op, action)
                }
                Choice::Argmax => {
                    let mut best: Option<(Op, f64)> = None;
                    for target in space.allowed_targets(op) {
                        let p: f64 = space.actions_for(op, target).iter().map(|&a| q[a]).sum();
                        if best.is_none_or(|(_, bp)| p > bp) {
                            best = Some((target, p));
                        }
                    }
                    best.map(|(t, _)| t)
                }
            };
            let target = target.ok_or_else(|| {
                PolicyError::invalid("cell.op", format!("{op} has no allowed transformation"))
            })?;
            let node = output.nodes.get_mut(e / 2).ok_or_else(|| {
                PolicyError::invalid("cell.nodes", "edge list and nodes disagree")
            })?;
            node.inputs[e % 2].op = target;
        }
        let log_prob = outcome_log_prob(self, cell, &output, table);
        Ok((output, log_prob, entropy))
    }
}

/// Loss diagnostics reported by [`PolicyLearner::update`].
pub(crate) struct LossDiagnostics {
    pub loss: f64,
    pub mean_entropy: f64,
    pub clipped: usize,
}

enum Choice<'a, R: Rng + ?Sized> {
    Sample(&'a mut R),
    Argmax,
}

/// `Σ_edges log Σ_{a: apply(a) = out} q_a` from a `log q` table (f64, same formula as the loss).
fn outcome_log_prob(learner: &PolicyLearner, input: &Cell, output: &Cell, table: &[f64]) -> f64 {
    let space = learner.config().space;
    let k = space.num_actions();
    input
        .edges()
        .zip(output.edges())
        .enumerate()
        .map(|(e, ((op_in, _, _), (op_out, _, _)))| {
            let row = &table[e * k..(e + 1) * k];
            let p: f64 = space
                .actions_for(op_in, op_out)
                .iter()
                .map(|&a| row[a].exp())
                .sum();
            p.ln()
        })
        .sum()
}

/// Indices of `cells` grouped by node count (ascending), each group in input order.
fn group_by_nodes(cells: &[&Cell]) -> BTreeMap<usize, Vec<usize>> {
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, cell) in cells.iter().enumerate() {
        groups.entry(cell.nodes.len()).or_default().push(i);
    }
    groups
}
