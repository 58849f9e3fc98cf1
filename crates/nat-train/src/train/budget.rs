//! Training budgets (a plain mirror of the proto's `TrainingBudget`; the worker maps between them).

use serde::{Deserialize, Serialize};

use crate::error::TrainError;

/// How to train a child network from scratch. Zero means "off" or "all" where noted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub epochs: u32,
    pub batch_size: u32,
    /// Initial SGD learning rate.
    pub learning_rate: f64,
    /// Floor of the cosine schedule (per epoch, as DARTS' CosineAnnealingLR).
    pub lr_min: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// Maximum global gradient norm; 0 = no clipping.
    pub grad_clip: f64,
    /// C.
    pub init_channels: u32,
    /// L (cells).
    pub layers: u32,
    /// Use only the first N examples of the (shuffled) train split; 0 = all.
    pub max_train_examples: u32,
    /// Evaluate on the first N examples of the validation split; 0 = all.
    pub max_eval_examples: u32,
    /// Fraction of the training files held out for validation (0 = use the test split). Used by
    /// the caller when it loads the dataset ([`crate::data::load`]).
    pub validation_fraction: f64,
    /// Cutout square side in pixels; 0 = off.
    pub cutout: u32,
    pub label_smoothing: f64,
    /// Weight of the auxiliary head's loss; 0 = no auxiliary head.
    pub auxiliary_weight: f64,
    /// Final drop-path probability (rises linearly from 0 over the epochs).
    pub drop_path_prob: f64,
    /// Stop training after this many seconds and evaluate what was trained; 0 = no limit.
    pub max_wall_seconds: f64,
}

impl Budget {
    /// Checks every field; the error names the field.
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
        positive("epochs", self.epochs, 100_000)?;
        positive("batch_size", self.batch_size, 65_536)?;
        if self.batch_size < 2 {
            return Err(TrainError::budget(
                "batch_size",
                "must be at least 2 (batch-norm needs two examples per batch)",
            ));
        }
        positive("init_channels", self.init_channels, 1024)?;
        positive("layers", self.layers, 200)?;
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
        range("lr_min", self.lr_min, 0.0, 100.0)?;
        range("momentum", self.momentum, 0.0, 0.999_999)?;
        range("weight_decay", self.weight_decay, 0.0, 1.0)?;
        range("grad_clip", self.grad_clip, 0.0, 1e9)?;
        range("label_smoothing", self.label_smoothing, 0.0, 0.999)?;
        range("auxiliary_weight", self.auxiliary_weight, 0.0, 100.0)?;
        range("drop_path_prob", self.drop_path_prob, 0.0, 0.95)?;
        range("max_wall_seconds", self.max_wall_seconds, 0.0, 1e9)?;
        if !(0.0..1.0).contains(&self.validation_fraction) {
            return Err(TrainError::budget(
                "validation_fraction",
                format!("{} is outside [0, 1)", self.validation_fraction),
            ));
        }
        if self.lr_min > self.learning_rate {
            return Err(TrainError::budget(
                "lr_min",
                format!(
                    "{} exceeds learning_rate {}",
                    self.lr_min, self.learning_rate
                ),
            ));
        }
        if self.cutout > 1024 {
            return Err(TrainError::budget(
                "cutout",
                format!("{} is above 1024", self.cutout),
            ));
        }
        Ok(())
    }

    /// Learning rate of `epoch` (0-based): cosine from `learning_rate` to `lr_min` over `epochs`.
    pub fn learning_rate_at(&self, epoch: u32) -> f64 {
        let t = f64::from(epoch) / f64::from(self.epochs.max(1));
        self.lr_min
            + 0.5 * (self.learning_rate - self.lr_min) * (1.0 + (std::f64::consts::PI * t).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn small() -> Budget {
        Budget {
            epochs: 2,
            batch_size: 32,
            learning_rate: 0.05,
            lr_min: 0.001,
            momentum: 0.9,
            weight_decay: 3e-4,
            grad_clip: 5.0,
            init_channels: 8,
            layers: 3,
            max_train_examples: 0,
            max_eval_examples: 0,
            validation_fraction: 0.2,
            cutout: 0,
            label_smoothing: 0.0,
            auxiliary_weight: 0.0,
            drop_path_prob: 0.0,
            max_wall_seconds: 0.0,
        }
    }

    #[test]
    fn validation_names_the_field() {
        assert!(small().validate().is_ok());
        let mut b = small();
        b.batch_size = 0;
        assert!(b.validate().unwrap_err().to_string().contains("batch_size"));
        b.batch_size = 1;
        assert!(b.validate().unwrap_err().to_string().contains("batch_size"));
        let mut b = small();
        b.momentum = f64::NAN;
        assert!(b.validate().unwrap_err().to_string().contains("momentum"));
        let mut b = small();
        b.validation_fraction = 1.0;
        assert!(b
            .validate()
            .unwrap_err()
            .to_string()
            .contains("validation_fraction"));
    }

    #[test]
    fn cosine_schedule_runs_from_lr_to_lr_min() {
        let b = small();
        assert!((b.learning_rate_at(0) - 0.05).abs() < 1e-12);
        let mid = Budget {
            epochs: 4,
            ..small()
        };
        assert!((mid.learning_rate_at(2) - (0.001 + 0.5 * 0.049)).abs() < 1e-12);
        assert!(mid.learning_rate_at(3) < mid.learning_rate_at(2));
    }
}
