//! nat-weights: checks and averages supernet weights stored as safetensors, in pure Rust (no
//! libtorch), for the coordinator's sharded supernet rounds (issue #14): every shard starts from
//! version v of the job's weights, trains, and returns a safetensors document; [`Averager`] folds
//! the shards into version v+1 one at a time, in O(one model) memory.
//!
//! - [`inspect`]: parse and check one document (supported dtypes, finite floats).
//! - [`Averager`] / [`average`]: weighted mean of float tensors, maximum of integer tensors.
//! - [`from_f32`], [`read_f32`], [`read_metadata`]: build and read documents (tests, simulated
//!   workers, the coordinator's bookkeeping).
//!
//! Supported dtypes: F32, F64, F16 and BF16 (averaged in f64, rounded once to the tensor's
//! dtype; f16/bf16 through the `half` crate) and I64, I32 (maximum). Any other dtype is refused
//! naming the tensor. Data is read as little-endian straight from the byte slice.

mod averager;
mod document;
mod error;
mod kind;

use std::collections::{BTreeMap, BTreeSet};

use safetensors::SafeTensors;

pub use averager::Averager;
pub use error::WeightsError;

use document::{element_count, layout, parse, Planned, METADATA_KEY};
use kind::{decode_f32, write_f32, FloatKind, Kind};

/// What [`inspect`] found in a valid document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Number of tensors.
    pub tensors: usize,
    /// Number of elements over all tensors.
    pub parameters: u64,
    /// Bytes of tensor data (the document adds an 8-byte length and the JSON header).
    pub bytes: u64,
}

/// Parses and checks a safetensors document: every tensor of a supported dtype (F32, F64, F16,
/// BF16, I64, I32), every float value finite. Errors name the tensor (the first failing one in
/// name order).
pub fn inspect(bytes: &[u8]) -> Result<Summary, WeightsError> {
    let entries = parse(bytes)?;
    let mut summary = Summary {
        tensors: entries.len(),
        parameters: 0,
        bytes: 0,
    };
    for entry in &entries {
        summary.parameters += (entry.data.len() / entry.kind.size()) as u64;
        summary.bytes += entry.data.len() as u64;
    }
    Ok(summary)
}

/// Averages equal-weight inputs (see [`Averager`]); an error names the input by its index in
/// `inputs`.
pub fn average(
    inputs: &[&[u8]],
    metadata: BTreeMap<String, String>,
) -> Result<Vec<u8>, WeightsError> {
    let mut averager = Averager::new();
    for input in inputs {
        averager.add(input, 1.0)?;
    }
    averager.finish(metadata)
}

/// Builds a safetensors document from named F32 tensors `(name, shape, values)` and `metadata`
/// (written as `__metadata__`, left out when empty), laid out as [`Averager::finish`] lays out
/// its output. Values are not checked for finiteness (tests build bad inputs with it). Errors:
/// a repeated or reserved name, values that do not fill their shape.
pub fn from_f32(
    tensors: &[(&str, Vec<usize>, &[f32])],
    metadata: BTreeMap<String, String>,
) -> Result<Vec<u8>, WeightsError> {
    let mut seen = BTreeSet::new();
    for (name, shape, values) in tensors {
        if !seen.insert(*name) {
            return Err(WeightsError::DuplicateTensor {
                tensor: (*name).to_owned(),
            });
        }
        if *name == METADATA_KEY {
            return Err(WeightsError::ReservedName {
                tensor: (*name).to_owned(),
            });
        }
        let expected = element_count(name, shape)?;
        if expected != values.len() {
            return Err(WeightsError::LengthMismatch {
                tensor: (*name).to_owned(),
                shape: shape.clone(),
                expected,
                found: values.len(),
            });
        }
    }
    let planned: Vec<Planned<'_>> = tensors
        .iter()
        .map(|(name, shape, _)| Planned {
            name,
            kind: Kind::Float(FloatKind::F32),
            shape,
        })
        .collect();
    let (mut buffer, ranges) = layout(&planned, &metadata)?;
    for ((_, _, values), range) in tensors.iter().zip(ranges) {
        write_f32(values, &mut buffer[range]);
    }
    Ok(buffer)
}

/// Reads the F32 tensor `name` back: its shape and values. Errors: a malformed document,
/// [`WeightsError::NotFound`] or [`WeightsError::NotF32`] naming the tensor. Values are not
/// checked for finiteness.
pub fn read_f32(bytes: &[u8], name: &str) -> Result<(Vec<usize>, Vec<f32>), WeightsError> {
    let document = SafeTensors::deserialize(bytes).map_err(WeightsError::Malformed)?;
    let view = document.tensor(name).map_err(|_| WeightsError::NotFound {
        tensor: name.to_owned(),
    })?;
    if view.dtype() != safetensors::Dtype::F32 {
        return Err(WeightsError::NotF32 {
            tensor: name.to_owned(),
            dtype: view.dtype().to_string(),
        });
    }
    Ok((view.shape().to_vec(), decode_f32(view.data())))
}

/// Reads a document's `__metadata__` map (empty when the document has none).
pub fn read_metadata(bytes: &[u8]) -> Result<BTreeMap<String, String>, WeightsError> {
    let (_, metadata) = SafeTensors::read_metadata(bytes).map_err(WeightsError::Malformed)?;
    Ok(metadata
        .metadata()
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect())
}
