//! Error types of nat-train.

use std::path::PathBuf;

use tch::TchError;

/// A dataset could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Its files are missing, unreadable or malformed (nat-data names the dataset and file).
    #[error(transparent)]
    Files(#[from] nat_data::DataError),
    /// A parameter of the load request is out of range.
    #[error("invalid data request: {field}: {reason}")]
    InvalidRequest { field: &'static str, reason: String },
    /// libtorch failed while building the tensors.
    #[error("dataset {dataset}: libtorch error while preparing tensors: {source}")]
    Torch {
        dataset: String,
        #[source]
        source: TchError,
    },
}

/// A network could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A configuration value is out of range.
    #[error("invalid network config: {field}: {reason}")]
    InvalidConfig { field: &'static str, reason: String },
    /// The genotype cannot be built into a network (bad node ids, empty concat, op not supported).
    #[error("invalid genotype: {0}")]
    InvalidGenotype(String),
    /// libtorch reported an error (shape mismatch, allocation failure, ...).
    #[error("libtorch error: {0}")]
    Torch(#[from] TchError),
}

/// A training task failed. [`TrainError::is_retryable`] tells whether another attempt (on this or
/// another worker) can succeed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A budget or settings field is out of range.
    #[error("invalid budget: {field}: {reason}")]
    InvalidBudget { field: &'static str, reason: String },
    /// The dataset is missing or malformed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The network could not be built.
    #[error(transparent)]
    Model(ModelError),
    /// Training diverged.
    #[error("non-finite training loss {loss} at epoch {epoch}, step {step}")]
    NonFiniteLoss { epoch: u32, step: u64, loss: f64 },
    /// The stop flag was raised.
    #[error("cancelled")]
    Cancelled,
    /// libtorch could not allocate memory.
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    /// Any other libtorch runtime error.
    #[error("libtorch error: {0}")]
    Torch(String),
    /// Reading or writing a checkpoint failed.
    #[error("checkpoint {}: {reason}", path.display())]
    Checkpoint { path: PathBuf, reason: String },
    /// A supernet weights document (safetensors) does not fit the session: it cannot be parsed, or
    /// a tensor is missing, extra, or of another shape or dtype. `tensor` names the tensor (`None`
    /// when the document as a whole is unreadable).
    #[error("supernet weights: {}{reason}", describe_tensor(tensor.as_deref()))]
    Weights {
        tensor: Option<String>,
        reason: String,
    },
}

fn describe_tensor(tensor: Option<&str>) -> String {
    tensor.map(|t| format!("tensor {t}: ")).unwrap_or_default()
}

impl TrainError {
    /// Whether retrying the same task can help: true for resource and runtime failures (out of
    /// memory, libtorch runtime errors, checkpoint I/O), false for bad input (budget, genotype,
    /// dataset, a weights document that does not fit), divergence and cancellation.
    pub fn is_retryable(&self) -> bool {
        match self {
            TrainError::OutOfMemory(_) | TrainError::Torch(_) | TrainError::Checkpoint { .. } => {
                true
            }
            TrainError::Model(ModelError::Torch(_)) => true,
            TrainError::Data(DataError::Files(nat_data::DataError::Io { .. })) => true,
            TrainError::InvalidBudget { .. }
            | TrainError::Data(_)
            | TrainError::Model(_)
            | TrainError::NonFiniteLoss { .. }
            | TrainError::Weights { .. }
            | TrainError::Cancelled => false,
        }
    }

    pub(crate) fn weights(tensor: Option<&str>, reason: impl Into<String>) -> Self {
        TrainError::Weights {
            tensor: tensor.map(str::to_string),
            reason: reason.into(),
        }
    }

    pub(crate) fn budget(field: &'static str, reason: impl Into<String>) -> Self {
        TrainError::InvalidBudget {
            field,
            reason: reason.into(),
        }
    }
}

fn is_oom_message(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    lower.contains("out of memory") || lower.contains("can't allocate memory")
}

impl From<TchError> for TrainError {
    fn from(error: TchError) -> Self {
        let message = error.to_string();
        if is_oom_message(&message) {
            TrainError::OutOfMemory(message)
        } else {
            TrainError::Torch(message)
        }
    }
}

impl From<ModelError> for TrainError {
    fn from(error: ModelError) -> Self {
        match error {
            ModelError::Torch(torch) => TrainError::from(torch),
            other => TrainError::Model(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_messages_become_retryable_out_of_memory() {
        let error = TrainError::from(TchError::Torch(
            "CUDA out of memory. Tried to allocate 2.00 GiB".to_string(),
        ));
        assert!(matches!(error, TrainError::OutOfMemory(_)));
        assert!(error.is_retryable());
        let cpu = TrainError::from(TchError::Torch(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"
                .to_string(),
        ));
        assert!(matches!(cpu, TrainError::OutOfMemory(_)));
    }

    #[test]
    fn bad_input_is_not_retryable() {
        assert!(!TrainError::budget("epochs", "must be > 0").is_retryable());
        assert!(!TrainError::Cancelled.is_retryable());
        assert!(!TrainError::NonFiniteLoss {
            epoch: 0,
            step: 3,
            loss: f64::NAN
        }
        .is_retryable());
        let genotype = TrainError::from(ModelError::InvalidGenotype("node 2".into()));
        assert!(!genotype.is_retryable());
        let weights = TrainError::weights(Some("supernet.stem.conv"), "shape [3] in the document");
        assert!(!weights.is_retryable());
        assert_eq!(
            weights.to_string(),
            "supernet weights: tensor supernet.stem.conv: shape [3] in the document"
        );
        let document = TrainError::weights(None, "not a safetensors document");
        assert_eq!(
            document.to_string(),
            "supernet weights: not a safetensors document"
        );
        let shape = TrainError::from(ModelError::Torch(TchError::Torch("shape".into())));
        assert!(matches!(shape, TrainError::Torch(_)));
    }
}
