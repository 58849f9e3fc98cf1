//! Adam with L2-style weight decay, as `torch.optim.Adam(weight_decay=wd)` (the official code).
//!
//! candle-nn's `AdamW` applies *decoupled* decay (θ ← θ·(1 − lr·λ)) and keeps its moments private,
//! so it neither matches the official optimizer nor can be checkpointed. This one follows the
//! torch update exactly: g ← g + wd·θ; m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²;
//! θ ← θ − lr/(1−β1ᵗ) · m / (√v/√(1−β2ᵗ) + ε). Parameters without a gradient are left alone.

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::config::LearnConfig;
use crate::error::{PolicyError, Result};

/// Optimizer state: first and second moments per parameter and the step count.
#[derive(Debug)]
pub(crate) struct Adam {
    pub(crate) first: Vec<Tensor>,
    pub(crate) second: Vec<Tensor>,
    pub(crate) step: u64,
}

impl Adam {
    /// Zero moments for `params`.
    pub(crate) fn new(params: &[Var]) -> Result<Self> {
        let first = params
            .iter()
            .map(|p| p.as_tensor().zeros_like())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let second = first.clone();
        Ok(Adam {
            first,
            second,
            step: 0,
        })
    }

    /// Restores saved moments, checking their shapes against `params`.
    pub(crate) fn restore(
        params: &[Var],
        first: Vec<Tensor>,
        second: Vec<Tensor>,
        step: u64,
    ) -> Result<Self> {
        for (i, p) in params.iter().enumerate() {
            let ok = first.get(i).is_some_and(|m| m.dims() == p.dims())
                && second.get(i).is_some_and(|v| v.dims() == p.dims());
            if !ok {
                return Err(PolicyError::Corrupt(format!(
                    "optimizer moments of parameter {i} are missing or mis-shaped"
                )));
            }
        }
        let dtype = params
            .first()
            .map(|p| p.dtype())
            .unwrap_or(candle_core::DType::F32);
        let cast = |v: Vec<Tensor>| -> Result<Vec<Tensor>> {
            Ok(v.into_iter()
                .map(|t| t.to_dtype(dtype))
                .collect::<candle_core::Result<Vec<_>>>()?)
        };
        Ok(Adam {
            first: cast(first)?,
            second: cast(second)?,
            step,
        })
    }

    /// One optimizer step (a fused loop per parameter, computed in f64).
    pub(crate) fn step(
        &mut self,
        params: &[Var],
        grads: &GradStore,
        cfg: &LearnConfig,
    ) -> Result<()> {
        self.step += 1;
        let t = i32::try_from(self.step).unwrap_or(i32::MAX);
        let bias1 = 1.0 - cfg.beta1.powi(t);
        let bias2_sqrt = (1.0 - cfg.beta2.powi(t)).sqrt();
        let step_size = cfg.learning_rate / bias1;
        for ((param, m), v) in params.iter().zip(&mut self.first).zip(&mut self.second) {
            let Some(grad) = grads.get(param.as_tensor()) else {
                continue;
            };
            let dtype = param.dtype();
            let dims = param.dims().to_vec();
            let mut theta = to_f64(param.as_tensor())?;
            let grad = to_f64(grad)?;
            let mut first = to_f64(m)?;
            let mut second = to_f64(v)?;
            for (((p, g), m), v) in theta.iter_mut().zip(&grad).zip(&mut first).zip(&mut second) {
                let g = g + cfg.weight_decay * *p;
                *m = cfg.beta1 * *m + (1.0 - cfg.beta1) * g;
                *v = cfg.beta2 * *v + (1.0 - cfg.beta2) * g * g;
                *p -= step_size * *m / (v.sqrt() / bias2_sqrt + cfg.eps);
            }
            let device = param.device().clone();
            param.set(&Tensor::from_vec(theta, dims.as_slice(), &device)?.to_dtype(dtype)?)?;
            *m = Tensor::from_vec(first, dims.as_slice(), &device)?.to_dtype(dtype)?;
            *v = Tensor::from_vec(second, dims.as_slice(), &device)?.to_dtype(dtype)?;
        }
        Ok(())
    }
}

fn to_f64(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.flatten_all()?
        .to_dtype(candle_core::DType::F64)?
        .to_vec1::<f64>()?)
}
