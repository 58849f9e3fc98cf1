//! Training budgets: the project's one `Budget` (from `nat-schema`) and the checks a worker applies before training with it.

use crate::error::TrainError;

/// How to train a child network from scratch: the one budget type of the project
/// (`nat_schema::Budget`), defined with its presets, wire conversions and reward-estimate key in
/// `nat-schema`. Zero means "off" or "all" where its docs say so.
pub use nat_schema::Budget;

/// Checks that `budget` can be trained here (bounds a worker enforces whatever the coordinator
/// accepted); the error names the field.
pub fn validate(budget: &Budget) -> Result<(), TrainError> {
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
    positive("epochs", budget.epochs, 100_000)?;
    positive("batch_size", budget.batch_size, 65_536)?;
    if budget.batch_size < 2 {
        return Err(TrainError::budget(
            "batch_size",
            "must be at least 2 (batch-norm needs two examples per batch)",
        ));
    }
    positive("init_channels", budget.init_channels, 1024)?;
    positive("layers", budget.layers, 200)?;
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
    range("learning_rate", budget.learning_rate, 0.0, 100.0)?;
    range("lr_min", budget.lr_min, 0.0, 100.0)?;
    range("momentum", budget.momentum, 0.0, 0.999_999)?;
    range("weight_decay", budget.weight_decay, 0.0, 1.0)?;
    range("grad_clip", budget.grad_clip, 0.0, 1e9)?;
    range("label_smoothing", budget.label_smoothing, 0.0, 0.999)?;
    range("auxiliary_weight", budget.auxiliary_weight, 0.0, 100.0)?;
    range("drop_path_prob", budget.drop_path_prob, 0.0, 0.95)?;
    range("max_wall_seconds", budget.max_wall_seconds, 0.0, 1e9)?;
    if !(0.0..1.0).contains(&budget.validation_fraction) {
        return Err(TrainError::budget(
            "validation_fraction",
            format!("{} is outside [0, 1)", budget.validation_fraction),
        ));
    }
    if budget.lr_min > budget.learning_rate {
        return Err(TrainError::budget(
            "lr_min",
            format!(
                "{} exceeds learning_rate {}",
                budget.lr_min, budget.learning_rate
            ),
        ));
    }
    if budget.cutout > 1024 {
        return Err(TrainError::budget(
            "cutout",
            format!("{} is above 1024", budget.cutout),
        ));
    }
    Ok(())
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
        assert!(validate(&small()).is_ok());
        let mut b = small();
        b.batch_size = 0;
        assert!(validate(&b).unwrap_err().to_string().contains("batch_size"));
        b.batch_size = 1;
        assert!(validate(&b).unwrap_err().to_string().contains("batch_size"));
        let mut b = small();
        b.momentum = f64::NAN;
        assert!(validate(&b).unwrap_err().to_string().contains("momentum"));
        let mut b = small();
        b.validation_fraction = 1.0;
        assert!(validate(&b)
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
