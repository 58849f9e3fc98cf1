//! The running weighted mean of several weights documents.

use std::collections::BTreeMap;

use crate::document::{layout, parse, Entry, Planned};
use crate::error::WeightsError;
use crate::kind::{
    add_scaled, decode_i32, decode_i64, max_i32, max_i64, scaled, write_i32, write_i64, write_mean,
    FloatKind, IntKind, Kind,
};

/// One tensor's accumulator.
#[derive(Debug)]
enum Values {
    /// Weighted sum of a float tensor, in f64 whatever the dtype.
    Sum(FloatKind, Vec<f64>),
    /// Running maximum of an I64 tensor.
    MaxI64(Vec<i64>),
    /// Running maximum of an I32 tensor.
    MaxI32(Vec<i32>),
}

#[derive(Debug)]
struct Accumulator {
    name: String,
    kind: Kind,
    shape: Vec<usize>,
    values: Values,
}

impl Accumulator {
    /// The accumulator of the first accepted input: `weight * x` for floats, `x` for integers.
    fn first(entry: &Entry<'_>, weight: f64) -> Self {
        let values = match entry.kind {
            Kind::Float(kind) => Values::Sum(kind, scaled(kind, entry.data, weight)),
            Kind::Int(IntKind::I64) => Values::MaxI64(decode_i64(entry.data)),
            Kind::Int(IntKind::I32) => Values::MaxI32(decode_i32(entry.data)),
        };
        Accumulator {
            name: entry.name.clone(),
            kind: entry.kind,
            shape: entry.shape.clone(),
            values,
        }
    }

    /// Bytes held by the accumulator's values.
    fn bytes(&self) -> usize {
        match &self.values {
            Values::Sum(_, v) => v.len() * 8,
            Values::MaxI64(v) => v.len() * 8,
            Values::MaxI32(v) => v.len() * 4,
        }
    }
}

/// Weighted running mean of safetensors documents with identical tensor names, shapes and dtypes.
///
/// Inputs are added one at a time ([`Averager::add`]) and may be dropped once added: the averager
/// holds one f64 accumulator per float element (an I64 or I32 one per integer element), i.e.
/// O(one model) whatever the number of inputs. Float tensors (F32, F64, F16, BF16) get
/// `Σ wᵢ·xᵢ / Σ wᵢ`, rounded once to their dtype; integer tensors (I64, I32, e.g. BatchNorm's
/// `num_batches_tracked`) get the element-wise maximum, whatever the weights.
///
/// The first accepted input fixes the tensors; every later input must have the same names, shapes
/// and dtypes. An `add` either takes the whole input or changes nothing: the input is checked
/// completely (format, dtypes, finiteness, layout) before any accumulator is touched, so a
/// refused shard can be skipped and the average goes on with the others.
#[derive(Debug, Default)]
pub struct Averager {
    /// Sorted by name.
    tensors: Vec<Accumulator>,
    /// Accepted inputs.
    inputs: usize,
    /// `add` calls, refused ones included (the next input's position in errors).
    calls: usize,
    /// Sum of the accepted inputs' weights.
    total_weight: f64,
}

impl Averager {
    /// An averager with no input yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one input with weight `weight` (finite, > 0; e.g. the shard's number of training
    /// samples). Errors are [`WeightsError::Input`] carrying the 0-based position of this call
    /// (refused calls count) and, where it is about a tensor, its name: the first one in name
    /// order that is malformed, non-finite, or differs from the first accepted input.
    pub fn add(&mut self, bytes: &[u8], weight: f64) -> Result<(), WeightsError> {
        let input = self.calls;
        self.calls += 1;
        self.check_and_add(bytes, weight)
            .map_err(|error| error.in_input(input))
    }

    fn check_and_add(&mut self, bytes: &[u8], weight: f64) -> Result<(), WeightsError> {
        let total_weight = self.total_weight + weight;
        if !(weight.is_finite() && weight > 0.0 && total_weight.is_finite()) {
            return Err(WeightsError::InvalidWeight { weight });
        }
        let entries = parse(bytes)?;
        if self.inputs == 0 {
            self.tensors = entries
                .iter()
                .map(|entry| Accumulator::first(entry, weight))
                .collect();
        } else {
            self.check_layout(&entries)?;
            // `check_layout` matched the entries one to one, in the same (name) order.
            for (acc, entry) in self.tensors.iter_mut().zip(&entries) {
                match &mut acc.values {
                    Values::Sum(kind, sum) => add_scaled(*kind, entry.data, sum, weight),
                    Values::MaxI64(max) => max_i64(entry.data, max),
                    Values::MaxI32(max) => max_i32(entry.data, max),
                }
            }
        }
        self.inputs += 1;
        self.total_weight = total_weight;
        Ok(())
    }

    /// Checks that `entries` (sorted by name) match the accumulators tensor for tensor; the error
    /// names the first difference in name order.
    fn check_layout(&self, entries: &[Entry<'_>]) -> Result<(), WeightsError> {
        let mut ours = self.tensors.iter().peekable();
        let mut theirs = entries.iter().peekable();
        loop {
            match (ours.peek(), theirs.peek()) {
                (None, None) => return Ok(()),
                (Some(acc), None) => {
                    return Err(WeightsError::MissingTensor {
                        tensor: acc.name.clone(),
                    })
                }
                (None, Some(entry)) => {
                    return Err(WeightsError::UnexpectedTensor {
                        tensor: entry.name.clone(),
                    })
                }
                (Some(acc), Some(entry)) => match acc.name.cmp(&entry.name) {
                    std::cmp::Ordering::Less => {
                        return Err(WeightsError::MissingTensor {
                            tensor: acc.name.clone(),
                        })
                    }
                    std::cmp::Ordering::Greater => {
                        return Err(WeightsError::UnexpectedTensor {
                            tensor: entry.name.clone(),
                        })
                    }
                    std::cmp::Ordering::Equal => {
                        if acc.shape != entry.shape {
                            return Err(WeightsError::ShapeMismatch {
                                tensor: acc.name.clone(),
                                expected: acc.shape.clone(),
                                found: entry.shape.clone(),
                            });
                        }
                        if acc.kind != entry.kind {
                            return Err(WeightsError::DtypeMismatch {
                                tensor: acc.name.clone(),
                                expected: acc.kind.name(),
                                found: entry.kind.name(),
                            });
                        }
                        ours.next();
                        theirs.next();
                    }
                },
            }
        }
    }

    /// Number of accepted inputs.
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// Sum of the accepted inputs' weights.
    pub fn total_weight(&self) -> f64 {
        self.total_weight
    }

    /// Bytes held by the accumulators (8 per float or I64 element, 4 per I32 element): the
    /// averager's memory apart from the output that [`Averager::finish`] builds.
    pub fn accumulator_bytes(&self) -> usize {
        self.tensors.iter().map(Accumulator::bytes).sum()
    }

    /// The average as a safetensors document: every tensor with its name, dtype and shape, and
    /// `metadata` as `__metadata__` (left out when empty). The bytes are deterministic: metadata
    /// keys sorted, tensors ordered by element size (largest first, keeping each aligned) and then
    /// by name. Errors: [`WeightsError::NoInputs`] if no input was accepted,
    /// [`WeightsError::NonFiniteResult`] if a mean overflows its dtype (F64 sums only).
    pub fn finish(self, metadata: BTreeMap<String, String>) -> Result<Vec<u8>, WeightsError> {
        if self.inputs == 0 {
            return Err(WeightsError::NoInputs);
        }
        let planned: Vec<Planned<'_>> = self
            .tensors
            .iter()
            .map(|acc| Planned {
                name: &acc.name,
                kind: acc.kind,
                shape: &acc.shape,
            })
            .collect();
        let (mut buffer, ranges) = layout(&planned, &metadata)?;
        for (acc, range) in self.tensors.iter().zip(ranges) {
            let out = &mut buffer[range];
            match &acc.values {
                Values::Sum(kind, sum) => {
                    if let Some(index) = write_mean(*kind, sum, self.total_weight, out) {
                        return Err(WeightsError::NonFiniteResult {
                            tensor: acc.name.clone(),
                            index,
                            dtype: acc.kind.name(),
                        });
                    }
                }
                Values::MaxI64(max) => write_i64(max, out),
                Values::MaxI32(max) => write_i32(max, out),
            }
        }
        Ok(buffer)
    }
}
