//! SGD with momentum and weight decay (PyTorch semantics, dampening 0, no Nesterov), global
//! gradient-norm clipping, and momentum buffers that can be saved and restored so that a resumed
//! run continues exactly.

use std::path::Path;

use tch::nn::VarStore;
use tch::{TchError, Tensor};

pub(crate) struct Sgd {
    /// Trainable variables sorted by name (a fixed order keeps runs reproducible).
    params: Vec<(String, Tensor)>,
    buffers: Vec<Option<Tensor>>,
    momentum: f64,
    weight_decay: f64,
}

impl Sgd {
    /// Optimises every trainable variable of `vs`.
    pub fn new(vs: &VarStore, momentum: f64, weight_decay: f64) -> Self {
        let mut params: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let buffers = params.iter().map(|_| None).collect();
        Sgd {
            params,
            buffers,
            momentum,
            weight_decay,
        }
    }

    pub fn zero_grad(&mut self) -> Result<(), TchError> {
        for (_, p) in &self.params {
            let mut grad = p.f_grad()?;
            if grad.defined() {
                let _ = grad.f_detach_()?;
                let _ = grad.f_zero_()?;
            }
        }
        Ok(())
    }

    /// Scales gradients so that their global L2 norm is at most `max_norm`; returns the norm
    /// before clipping.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> Result<f64, TchError> {
        let grads: Vec<Tensor> = self
            .params
            .iter()
            .map(|(_, p)| p.f_grad())
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .filter(Tensor::defined)
            .collect();
        if grads.is_empty() {
            return Ok(0.0);
        }
        let norms = grads
            .iter()
            .map(|g| g.f_norm())
            .collect::<Result<Vec<_>, _>>()?;
        let total = Tensor::f_stack(&norms, 0)?.f_norm()?.f_double_value(&[])?;
        if max_norm > 0.0 && total > max_norm {
            let scale = max_norm / (total + 1e-6);
            for mut g in grads {
                let _ = g.f_mul_scalar_(scale)?;
            }
        }
        Ok(total)
    }

    pub fn step(&mut self, lr: f64) -> Result<(), TchError> {
        let (momentum, weight_decay) = (self.momentum, self.weight_decay);
        tch::no_grad(|| -> Result<(), TchError> {
            for ((_, p), buffer) in self.params.iter().zip(self.buffers.iter_mut()) {
                let grad = p.f_grad()?;
                if !grad.defined() {
                    continue;
                }
                let mut d_p = if weight_decay != 0.0 {
                    grad.f_add(&p.f_mul_scalar(weight_decay)?)?
                } else {
                    grad.f_detach()?
                };
                if momentum != 0.0 {
                    d_p = match buffer.take() {
                        Some(b) => b.f_mul_scalar(momentum)?.f_add(&d_p)?,
                        None => d_p.f_detach_copy()?,
                    };
                    *buffer = Some(d_p.shallow_clone());
                }
                let mut param = p.shallow_clone();
                let _ = param.f_sub_(&d_p.f_mul_scalar(lr)?)?;
            }
            Ok(())
        })
    }

    /// Saves the momentum buffers (named like the variables).
    pub fn save(&self, path: &Path) -> Result<(), TchError> {
        let named: Vec<(&str, &Tensor)> = self
            .params
            .iter()
            .zip(&self.buffers)
            .filter_map(|((name, _), b)| b.as_ref().map(|b| (name.as_str(), b)))
            .collect();
        Tensor::save_multi(&named, path)
    }

    /// Restores momentum buffers saved by [`Sgd::save`].
    pub fn load(&mut self, path: &Path) -> Result<(), TchError> {
        let device = self.params.first().map(|(_, p)| p.device());
        let loaded = Tensor::load_multi(path)?;
        for buffer in &mut self.buffers {
            *buffer = None;
        }
        for (name, tensor) in loaded {
            let Some(index) = self.params.iter().position(|(n, _)| *n == name) else {
                return Err(TchError::FileFormat(format!(
                    "momentum buffer for unknown variable {name}"
                )));
            };
            let tensor = match device {
                Some(d) => tensor.f_to_device(d)?,
                None => tensor,
            };
            self.buffers[index] = Some(tensor);
        }
        Ok(())
    }
}
