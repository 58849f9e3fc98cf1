//! The supported dtypes and the loops over their little-endian bytes. Every loop walks the byte
//! slice with `chunks_exact` and allocates nothing per element; the compiler vectorises them.

use half::{bf16, f16};
use safetensors::Dtype;

/// A float dtype: its tensors are averaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FloatKind {
    F64,
    F32,
    F16,
    BF16,
}

/// An integer dtype: its tensors take the element-wise maximum (counters such as BatchNorm's
/// `num_batches_tracked`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IntKind {
    I64,
    I32,
}

/// A supported dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Float(FloatKind),
    Int(IntKind),
}

impl Kind {
    /// The supported dtype for `dtype`, `None` for the others.
    pub(crate) fn from_dtype(dtype: Dtype) -> Option<Kind> {
        Some(match dtype {
            Dtype::F64 => Kind::Float(FloatKind::F64),
            Dtype::F32 => Kind::Float(FloatKind::F32),
            Dtype::F16 => Kind::Float(FloatKind::F16),
            Dtype::BF16 => Kind::Float(FloatKind::BF16),
            Dtype::I64 => Kind::Int(IntKind::I64),
            Dtype::I32 => Kind::Int(IntKind::I32),
            _ => return None,
        })
    }

    /// The name in a safetensors header.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Float(FloatKind::F64) => "F64",
            Kind::Float(FloatKind::F32) => "F32",
            Kind::Float(FloatKind::F16) => "F16",
            Kind::Float(FloatKind::BF16) => "BF16",
            Kind::Int(IntKind::I64) => "I64",
            Kind::Int(IntKind::I32) => "I32",
        }
    }

    /// Bytes per element.
    pub(crate) fn size(self) -> usize {
        match self {
            Kind::Float(FloatKind::F64) | Kind::Int(IntKind::I64) => 8,
            Kind::Float(FloatKind::F32) | Kind::Int(IntKind::I32) => 4,
            Kind::Float(FloatKind::F16 | FloatKind::BF16) => 2,
        }
    }
}

#[inline(always)]
fn b2(c: &[u8]) -> [u8; 2] {
    [c[0], c[1]]
}

#[inline(always)]
fn b4(c: &[u8]) -> [u8; 4] {
    [c[0], c[1], c[2], c[3]]
}

#[inline(always)]
fn b8(c: &[u8]) -> [u8; 8] {
    [c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]
}

/// Element `index` of float data as f64 (slow path, for error messages).
fn value_at(kind: FloatKind, data: &[u8], index: usize) -> f64 {
    match kind {
        FloatKind::F64 => f64::from_le_bytes(b8(&data[index * 8..])),
        FloatKind::F32 => f64::from(f32::from_le_bytes(b4(&data[index * 4..]))),
        FloatKind::F16 => f16::from_bits(u16::from_le_bytes(b2(&data[index * 2..]))).to_f64(),
        FloatKind::BF16 => bf16::from_bits(u16::from_le_bytes(b2(&data[index * 2..]))).to_f64(),
    }
}

/// The first non-finite element of float data: its index and value. A branch-free pass over the
/// exponent bits first, so that finite data (the usual case) costs one vectorised read.
pub(crate) fn first_non_finite(kind: FloatKind, data: &[u8]) -> Option<(usize, f64)> {
    let any = match kind {
        FloatKind::F64 => data.chunks_exact(8).fold(false, |bad, c| {
            const EXP: u64 = 0x7ff0_0000_0000_0000;
            bad | (u64::from_le_bytes(b8(c)) & EXP == EXP)
        }),
        FloatKind::F32 => data.chunks_exact(4).fold(false, |bad, c| {
            const EXP: u32 = 0x7f80_0000;
            bad | (u32::from_le_bytes(b4(c)) & EXP == EXP)
        }),
        FloatKind::F16 => data.chunks_exact(2).fold(false, |bad, c| {
            const EXP: u16 = 0x7c00;
            bad | (u16::from_le_bytes(b2(c)) & EXP == EXP)
        }),
        FloatKind::BF16 => data.chunks_exact(2).fold(false, |bad, c| {
            const EXP: u16 = 0x7f80;
            bad | (u16::from_le_bytes(b2(c)) & EXP == EXP)
        }),
    };
    if !any {
        return None;
    }
    let size = Kind::Float(kind).size();
    (0..data.len() / size).find_map(|i| {
        let v = value_at(kind, data, i);
        (!v.is_finite()).then_some((i, v))
    })
}

/// `sum[i] += weight * x[i]` for every element `x[i]` of float data.
pub(crate) fn add_scaled(kind: FloatKind, data: &[u8], sum: &mut [f64], weight: f64) {
    match kind {
        FloatKind::F64 => {
            for (s, c) in sum.iter_mut().zip(data.chunks_exact(8)) {
                *s += weight * f64::from_le_bytes(b8(c));
            }
        }
        FloatKind::F32 => {
            for (s, c) in sum.iter_mut().zip(data.chunks_exact(4)) {
                *s += weight * f64::from(f32::from_le_bytes(b4(c)));
            }
        }
        FloatKind::F16 => {
            for (s, c) in sum.iter_mut().zip(data.chunks_exact(2)) {
                *s += weight * f16::from_bits(u16::from_le_bytes(b2(c))).to_f64();
            }
        }
        FloatKind::BF16 => {
            for (s, c) in sum.iter_mut().zip(data.chunks_exact(2)) {
                *s += weight * bf16::from_bits(u16::from_le_bytes(b2(c))).to_f64();
            }
        }
    }
}

/// `weight * x[i]` for every element of float data: the first input's accumulator. (Starting
/// from the first input rather than from zeros keeps the sign of -0.0, since `0.0 + -0.0` is
/// `+0.0`, and saves a pass.)
pub(crate) fn scaled(kind: FloatKind, data: &[u8], weight: f64) -> Vec<f64> {
    match kind {
        FloatKind::F64 => data
            .chunks_exact(8)
            .map(|c| weight * f64::from_le_bytes(b8(c)))
            .collect(),
        FloatKind::F32 => data
            .chunks_exact(4)
            .map(|c| weight * f64::from(f32::from_le_bytes(b4(c))))
            .collect(),
        FloatKind::F16 => data
            .chunks_exact(2)
            .map(|c| weight * f16::from_bits(u16::from_le_bytes(b2(c))).to_f64())
            .collect(),
        FloatKind::BF16 => data
            .chunks_exact(2)
            .map(|c| weight * bf16::from_bits(u16::from_le_bytes(b2(c))).to_f64())
            .collect(),
    }
}

/// Decodes I64 data.
pub(crate) fn decode_i64(data: &[u8]) -> Vec<i64> {
    data.chunks_exact(8)
        .map(|c| i64::from_le_bytes(b8(c)))
        .collect()
}

/// Decodes I32 data.
pub(crate) fn decode_i32(data: &[u8]) -> Vec<i32> {
    data.chunks_exact(4)
        .map(|c| i32::from_le_bytes(b4(c)))
        .collect()
}

/// `acc[i] = max(acc[i], x[i])` over I64 data.
pub(crate) fn max_i64(data: &[u8], acc: &mut [i64]) {
    for (a, c) in acc.iter_mut().zip(data.chunks_exact(8)) {
        *a = (*a).max(i64::from_le_bytes(b8(c)));
    }
}

/// `acc[i] = max(acc[i], x[i])` over I32 data.
pub(crate) fn max_i32(data: &[u8], acc: &mut [i32]) {
    for (a, c) in acc.iter_mut().zip(data.chunks_exact(4)) {
        *a = (*a).max(i32::from_le_bytes(b4(c)));
    }
}

/// Writes `sum[i] / total` in `kind` into `out`; returns the index of the first element whose
/// result is not finite in `kind`, if any.
pub(crate) fn write_mean(
    kind: FloatKind,
    sum: &[f64],
    total: f64,
    out: &mut [u8],
) -> Option<usize> {
    let bad = match kind {
        FloatKind::F64 => out.chunks_exact_mut(8).zip(sum).fold(false, |bad, (o, s)| {
            let v = s / total;
            o.copy_from_slice(&v.to_le_bytes());
            bad | !v.is_finite()
        }),
        FloatKind::F32 => out.chunks_exact_mut(4).zip(sum).fold(false, |bad, (o, s)| {
            // `as` rounds to nearest, ties to even.
            let v = (s / total) as f32;
            o.copy_from_slice(&v.to_le_bytes());
            bad | !v.is_finite()
        }),
        FloatKind::F16 => out.chunks_exact_mut(2).zip(sum).fold(false, |bad, (o, s)| {
            let v = f16::from_f64(s / total);
            o.copy_from_slice(&v.to_bits().to_le_bytes());
            bad | !v.is_finite()
        }),
        FloatKind::BF16 => out.chunks_exact_mut(2).zip(sum).fold(false, |bad, (o, s)| {
            let v = bf16::from_f64(s / total);
            o.copy_from_slice(&v.to_bits().to_le_bytes());
            bad | !v.is_finite()
        }),
    };
    if !bad {
        return None;
    }
    (0..sum.len()).find(|&i| !value_at(kind, out, i).is_finite())
}

/// Writes I64 values into `out`.
pub(crate) fn write_i64(values: &[i64], out: &mut [u8]) {
    for (o, v) in out.chunks_exact_mut(8).zip(values) {
        o.copy_from_slice(&v.to_le_bytes());
    }
}

/// Writes I32 values into `out`.
pub(crate) fn write_i32(values: &[i32], out: &mut [u8]) {
    for (o, v) in out.chunks_exact_mut(4).zip(values) {
        o.copy_from_slice(&v.to_le_bytes());
    }
}

/// Decodes F32 data.
pub(crate) fn decode_f32(data: &[u8]) -> Vec<f32> {
    data.chunks_exact(4)
        .map(|c| f32::from_le_bytes(b4(c)))
        .collect()
}

/// Encodes F32 values into `out`.
pub(crate) fn write_f32(values: &[f32], out: &mut [u8]) {
    for (o, v) in out.chunks_exact_mut(4).zip(values) {
        o.copy_from_slice(&v.to_le_bytes());
    }
}
