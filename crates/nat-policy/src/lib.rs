//! The NAT / NAT++ policy ("transformer" in the official code) and its learner, in pure Rust on
//! [candle](https://github.com/huggingface/candle) (CPU, autograd; no libtorch).
//!
//! # Layout
//! - [`space`]: the per-edge action spaces: NAT (K = 3: `null`, `same`, `skip_connect`, no mask)
//!   and NAT++ (K = 13, one action per primitive, masked by the NATv2 transition table).
//! - [`config`]: dimensions (E = 100, F = 1024, G = 100 by default), [`Profile`], learning
//!   hyper-parameters (Adam lr 3e-4, betas 0.5/0.999, weight decay 5e-4, λ = 0.003 per cell, γ = 0.99).
//! - [`network`]: the network of NAT-SPEC §3: op/node embeddings → Linear(2E→F) → GCN(F→G), ReLU →
//!   GCN(G→G) over the input cell's adjacency → per-node Linear(G→2K) (first K logits for the
//!   node's first in-edge, next K for the second). One network serves normal and reduction cells.
//! - [`learner`]: [`PolicyLearner`]: seeded sampling, argmax, log π of a given transformation,
//!   and [`PolicyLearner::update`] on batches of asynchronously arriving rewards.
//! - [`checkpoint`]: parameters + Adam state + baseline + version to bytes and back.
//!
//! # Profiles
//!
//! | behaviour | `reference` (official code) | `default` (fixed) |
//! |---|---|---|
//! | adjacency | `A[t][f] += 1` per edge f→t, directed, no self-loops, not normalised: node 2's logits are a learned constant and a node never sees its own in-edges' ops (§3 receptive-field quirk) | `A + I`, each row divided by its sum (mean over the node itself and its inputs), so every node sees its own in-edge ops |
//! | edge probabilities | `q = softmax(allowed logits) + 1e-5`, not renormalised; sampling draws from `q/Σq`; `log π` and the entropy use the shifted `q` | exact masked softmax; `log π` from `log_softmax` |
//! | baseline | `b ← γ·b + (1−γ)·A` with the advantage `A = r − b` (tends to half the mean reward) | `b ← γ·b + (1−γ)·r` (tracks the mean reward) |
//!
//! Shared by both profiles:
//! - **`log π` of an outcome, not of an action.** In NAT two actions can give the same op
//!   (S→S by `same` or `skip`, N→N by `same` or `null`). The official code scores the drawn
//!   action; this crate scores the outcome, `log Σ_{a→op} q_a`, because the store keeps the
//!   transformed genotype α (not the action) and importance ratios need π(α|β) of old samples.
//!   The REINFORCE estimator stays unbiased (the reward depends on α only). NAT++ has no
//!   duplicate actions, so there it is exactly the official quantity.
//! - **Batches, staleness and ratios.** The official loop takes one fresh sample per step. Here
//!   `update` takes M rewarded samples, possibly drawn by older versions, and minimises
//!   `−mean_i min(ρ_i A_i, clip(ρ_i, 1−ε, 1+ε) A_i) − λ_n·mean H_n − λ_r·mean H_r` with
//!   `ρ = π_θ(α|β)/π_old(α|β)` (PPO surrogate, ε = 0.2). For a fresh sample ρ = 1 and the gradient is
//!   exactly the official `−A·∇log π − λ∇H`. Samples older than `max_staleness` versions are
//!   dropped and counted. Advantages use the baseline at the start of the batch; the baseline is
//!   then updated once per reward, in batch order.
//! - **Adam** follows `torch.optim.Adam(weight_decay=5e-4)`: L2 decay added to the gradient.
//!   candle-nn's `AdamW` uses decoupled decay, so it is not used (see [`adam`](crate::adam)).
//! - The official "A = r when b == 0" special case is the same as `A = r − b`, so it needs no code.

pub(crate) mod adam;
pub mod checkpoint;
pub mod config;
pub(crate) mod dist;
pub mod driver;
pub mod error;
pub mod input;
pub mod learner;
pub mod network;
pub mod space;

pub use checkpoint::{read_header, CheckpointHeader};
pub use config::{LearnConfig, PolicyConfig, Precision, Profile};
pub use error::{PolicyError, Result};
pub use learner::{PolicyLearner, Sample, UpdateStats};
pub use network::PolicyNet;
pub use space::ActionSpace;

#[cfg(test)]
mod tests;
