//! From logits to per-edge distributions, log-probabilities and entropies (NAT-SPEC §3.5).
//!
//! All functions work on `(n, 2B, K)` tensors and are differentiable (candle autograd).
//! `allowed` and `selected` are 0/1 tensors of the same shape: `allowed` is the space's mask for
//! each edge's input op, `selected` marks the actions that produce the sampled output op
//! (several in NAT when two actions give the same op).

use candle_core::Tensor;

use crate::config::Profile;
use crate::error::Result;

/// Large finite negative used instead of -inf for masked entries (keeps gradients finite).
const MASKED: f64 = 1e9;

/// Per-edge log-probabilities `log q` and probabilities `q` under the profile:
/// - default: `q = softmax` over the allowed actions, exact `log_softmax`;
/// - reference: `q = softmax + 1e-5` on every entry, not renormalised (`log q` of masked entries
///   is finite and never used because the mask zeroes them in every sum).
pub(crate) fn edge_log_probs(
    logits: &Tensor,
    allowed: &Tensor,
    profile: Profile,
) -> Result<(Tensor, Tensor)> {
    let masked = logits
        .mul(allowed)?
        .add(&allowed.affine(MASKED, -MASKED)?)?;
    let max = masked.max_keepdim(2)?.detach();
    let shifted = masked.broadcast_sub(&max)?;
    let log_norm = shifted.exp()?.sum_keepdim(2)?.log()?;
    let log_softmax = shifted.broadcast_sub(&log_norm)?;
    let shift = profile.probability_shift();
    if shift == 0.0 {
        let q = log_softmax.exp()?;
        Ok((log_softmax, q))
    } else {
        let q = log_softmax.exp()?.affine(1.0, shift)?;
        Ok((q.log()?, q))
    }
}

/// Entropy of every cell, `−Σ_edges Σ_allowed q log q`, shape `(n,)`.
pub(crate) fn cell_entropy(log_q: &Tensor, q: &Tensor, allowed: &Tensor) -> Result<Tensor> {
    Ok(q.mul(log_q)?.mul(allowed)?.sum((1, 2))?.neg()?)
}

/// Log-probability of every cell's outcome, `Σ_edges log Σ_{a selected} q_a`, shape `(n,)`.
pub(crate) fn cell_log_prob(log_q: &Tensor, selected: &Tensor) -> Result<Tensor> {
    let picked = log_q
        .mul(selected)?
        .add(&selected.affine(MASKED, -MASKED)?)?;
    let max = picked.max_keepdim(2)?.detach();
    let log_sum = picked
        .broadcast_sub(&max)?
        .exp()?
        .sum_keepdim(2)?
        .log()?
        .add(&max)?;
    Ok(log_sum.sum((1, 2))?)
}
