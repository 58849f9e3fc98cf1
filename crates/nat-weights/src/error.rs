//! The one error type of this crate.

use safetensors::SafeTensorError;

/// Why a weights document was refused or could not be produced. Every variant about one tensor
/// names it; every error of [`crate::Averager::add`] is an [`WeightsError::Input`] that says which
/// input (the 0-based position of the `add` call, refused calls included).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WeightsError {
    /// The bytes are not a valid safetensors document (header, offsets, lengths).
    #[error("not a valid safetensors document: {0}")]
    Malformed(#[source] SafeTensorError),
    /// A tensor's dtype is not one of F32, F64, F16, BF16, I64, I32.
    #[error(
        "tensor `{tensor}`: dtype {dtype} is not supported (F32, F64, F16, BF16, I64, I32 are)"
    )]
    UnsupportedDtype {
        /// The tensor's name.
        tensor: String,
        /// The dtype as safetensors names it.
        dtype: String,
    },
    /// A float tensor holds NaN or an infinity.
    #[error("tensor `{tensor}`: element {index} is {value}; weights must be finite")]
    NonFinite {
        /// The tensor's name.
        tensor: String,
        /// Index of the first non-finite element (row-major).
        index: usize,
        /// The value found there.
        value: f64,
    },
    /// An error about one input of an average; `error` says what.
    #[error("input {input}: {error}")]
    Input {
        /// 0-based position of the `add` call (or of the slice given to [`crate::average`]).
        input: usize,
        /// What is wrong with that input.
        error: Box<WeightsError>,
    },
    /// The reference (first accepted input) has this tensor, the input does not.
    #[error("tensor `{tensor}` is missing (the first accepted input has it)")]
    MissingTensor {
        /// The tensor's name.
        tensor: String,
    },
    /// The input has a tensor that the reference (first accepted input) does not.
    #[error("tensor `{tensor}` is not in the first accepted input")]
    UnexpectedTensor {
        /// The tensor's name.
        tensor: String,
    },
    /// Same name, different shape.
    #[error("tensor `{tensor}` has shape {found:?}, the first accepted input has {expected:?}")]
    ShapeMismatch {
        /// The tensor's name.
        tensor: String,
        /// Shape in the first accepted input.
        expected: Vec<usize>,
        /// Shape in this input.
        found: Vec<usize>,
    },
    /// Same name, different dtype.
    #[error("tensor `{tensor}` is {found}, the first accepted input has {expected}")]
    DtypeMismatch {
        /// The tensor's name.
        tensor: String,
        /// Dtype in the first accepted input.
        expected: &'static str,
        /// Dtype in this input.
        found: &'static str,
    },
    /// An input's weight is not a finite positive number (or the sum of weights overflows).
    #[error("weight {weight} must be finite and greater than 0")]
    InvalidWeight {
        /// The weight given.
        weight: f64,
    },
    /// [`crate::Averager::finish`] or [`crate::average`] with no accepted input.
    #[error("nothing to average: no input was accepted")]
    NoInputs,
    /// The mean of a float tensor does not fit its dtype (only possible when F64 sums overflow).
    #[error("tensor `{tensor}`: the mean at element {index} is not finite in {dtype}")]
    NonFiniteResult {
        /// The tensor's name.
        tensor: String,
        /// Index of the first such element.
        index: usize,
        /// The tensor's dtype.
        dtype: &'static str,
    },
    /// [`crate::read_f32`]: no tensor of that name.
    #[error("tensor `{tensor}` not found")]
    NotFound {
        /// The name asked for.
        tensor: String,
    },
    /// [`crate::read_f32`]: the tensor exists but is not F32.
    #[error("tensor `{tensor}` is {dtype}, not F32")]
    NotF32 {
        /// The tensor's name.
        tensor: String,
        /// Its dtype as safetensors names it.
        dtype: String,
    },
    /// [`crate::from_f32`]: the values do not fill the shape.
    #[error("tensor `{tensor}`: shape {shape:?} holds {expected} values, {found} given")]
    LengthMismatch {
        /// The tensor's name.
        tensor: String,
        /// The shape given.
        shape: Vec<usize>,
        /// Product of the shape.
        expected: usize,
        /// Number of values given.
        found: usize,
    },
    /// [`crate::from_f32`]: two tensors share a name.
    #[error("tensor `{tensor}` is given twice")]
    DuplicateTensor {
        /// The repeated name.
        tensor: String,
    },
    /// A tensor may not be named `__metadata__` (the header key of the metadata map).
    #[error("tensor name `{tensor}` is reserved by the safetensors format")]
    ReservedName {
        /// The name given.
        tensor: String,
    },
    /// A shape whose element or byte count overflows `usize`.
    #[error("tensor `{tensor}`: shape {shape:?} is too large")]
    TooLarge {
        /// The tensor's name.
        tensor: String,
        /// The shape given.
        shape: Vec<usize>,
    },
}

impl WeightsError {
    /// The input an [`crate::Averager::add`] error is about, if any.
    pub fn input(&self) -> Option<usize> {
        match self {
            WeightsError::Input { input, .. } => Some(*input),
            _ => None,
        }
    }

    /// The tensor the error names, if any (looking through [`WeightsError::Input`]).
    pub fn tensor(&self) -> Option<&str> {
        match self {
            WeightsError::Input { error, .. } => error.tensor(),
            WeightsError::UnsupportedDtype { tensor, .. }
            | WeightsError::NonFinite { tensor, .. }
            | WeightsError::MissingTensor { tensor }
            | WeightsError::UnexpectedTensor { tensor }
            | WeightsError::ShapeMismatch { tensor, .. }
            | WeightsError::DtypeMismatch { tensor, .. }
            | WeightsError::NonFiniteResult { tensor, .. }
            | WeightsError::NotFound { tensor }
            | WeightsError::NotF32 { tensor, .. }
            | WeightsError::LengthMismatch { tensor, .. }
            | WeightsError::DuplicateTensor { tensor }
            | WeightsError::ReservedName { tensor }
            | WeightsError::TooLarge { tensor, .. } => Some(tensor),
            WeightsError::Malformed(_)
            | WeightsError::InvalidWeight { .. }
            | WeightsError::NoInputs => None,
        }
    }

    /// Wraps `self` as an error about input `input`.
    pub(crate) fn in_input(self, input: usize) -> WeightsError {
        WeightsError::Input {
            input,
            error: Box::new(self),
        }
    }
}
