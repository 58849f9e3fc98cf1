//! Reading a safetensors document into checked tensors, and writing one deterministically.

use std::collections::BTreeMap;
use std::ops::Range;

use safetensors::SafeTensors;

use crate::error::WeightsError;
use crate::kind::{first_non_finite, Kind};

/// The header key of the metadata map; no tensor may have this name.
pub(crate) const METADATA_KEY: &str = "__metadata__";

/// One checked tensor of a parsed document, borrowing its data.
#[derive(Debug)]
pub(crate) struct Entry<'a> {
    pub(crate) name: String,
    pub(crate) kind: Kind,
    pub(crate) shape: Vec<usize>,
    pub(crate) data: &'a [u8],
}

/// Parses `bytes` and checks every tensor: supported dtype, every float finite. The entries come
/// sorted by name, and the first failing tensor in that order is the one an error names.
pub(crate) fn parse(bytes: &[u8]) -> Result<Vec<Entry<'_>>, WeightsError> {
    let document = SafeTensors::deserialize(bytes).map_err(WeightsError::Malformed)?;
    let mut views: Vec<_> = document.iter().collect();
    views.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut entries = Vec::with_capacity(views.len());
    for (name, view) in &views {
        let kind =
            Kind::from_dtype(view.dtype()).ok_or_else(|| WeightsError::UnsupportedDtype {
                tensor: (*name).to_owned(),
                dtype: view.dtype().to_string(),
            })?;
        entries.push(Entry {
            name: (*name).to_owned(),
            kind,
            shape: view.shape().to_vec(),
            data: view.data(),
        });
    }
    for entry in &entries {
        if let Kind::Float(kind) = entry.kind {
            if let Some((index, value)) = first_non_finite(kind, entry.data) {
                return Err(WeightsError::NonFinite {
                    tensor: entry.name.clone(),
                    index,
                    value,
                });
            }
        }
    }
    Ok(entries)
}

/// A tensor to be written: name, dtype and shape; its bytes are filled in afterwards.
pub(crate) struct Planned<'a> {
    pub(crate) name: &'a str,
    pub(crate) kind: Kind,
    pub(crate) shape: &'a [usize],
}

/// Number of elements of `shape`, or `TooLarge` naming `tensor`.
pub(crate) fn element_count(tensor: &str, shape: &[usize]) -> Result<usize, WeightsError> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| WeightsError::TooLarge {
            tensor: tensor.to_owned(),
            shape: shape.to_vec(),
        })
}

/// Lays out a document holding `planned` (names must be distinct) and `metadata`: returns the
/// whole buffer, its data section zeroed, and each planned tensor's byte range in it (in the order
/// of `planned`).
///
/// The output is deterministic: metadata keys sorted, tensors ordered by element size (largest
/// first, so that every tensor is aligned to its element size, as safetensors writes them) and
/// then by name; the header lists them in that order and is padded with spaces to 8 bytes.
pub(crate) fn layout(
    planned: &[Planned<'_>],
    metadata: &BTreeMap<String, String>,
) -> Result<(Vec<u8>, Vec<Range<usize>>), WeightsError> {
    let mut order: Vec<usize> = (0..planned.len()).collect();
    order.sort_unstable_by(|&a, &b| {
        let (a, b) = (&planned[a], &planned[b]);
        b.kind.size().cmp(&a.kind.size()).then(a.name.cmp(b.name))
    });

    let mut header = String::from("{");
    if !metadata.is_empty() {
        push_json_string(&mut header, METADATA_KEY);
        header.push_str(":{");
        for (i, (key, value)) in metadata.iter().enumerate() {
            if i > 0 {
                header.push(',');
            }
            push_json_string(&mut header, key);
            header.push(':');
            push_json_string(&mut header, value);
        }
        header.push('}');
    }
    let mut offsets = vec![0..0; planned.len()];
    let mut offset = 0usize;
    for (position, &index) in order.iter().enumerate() {
        let tensor = &planned[index];
        if tensor.name == METADATA_KEY {
            return Err(WeightsError::ReservedName {
                tensor: tensor.name.to_owned(),
            });
        }
        let len = element_count(tensor.name, tensor.shape)?
            .checked_mul(tensor.kind.size())
            .ok_or_else(|| WeightsError::TooLarge {
                tensor: tensor.name.to_owned(),
                shape: tensor.shape.to_vec(),
            })?;
        if position > 0 || !metadata.is_empty() {
            header.push(',');
        }
        push_json_string(&mut header, tensor.name);
        header.push_str(":{\"dtype\":\"");
        header.push_str(tensor.kind.name());
        header.push_str("\",\"shape\":[");
        for (i, d) in tensor.shape.iter().enumerate() {
            if i > 0 {
                header.push(',');
            }
            header.push_str(&d.to_string());
        }
        let end = offset
            .checked_add(len)
            .ok_or_else(|| WeightsError::TooLarge {
                tensor: tensor.name.to_owned(),
                shape: tensor.shape.to_vec(),
            })?;
        header.push_str(&format!("],\"data_offsets\":[{offset},{end}]}}"));
        offsets[index] = offset..end;
        offset = end;
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }

    let start = 8 + header.len();
    let mut buffer = Vec::with_capacity(start + offset);
    buffer.extend_from_slice(&(header.len() as u64).to_le_bytes());
    buffer.extend_from_slice(header.as_bytes());
    buffer.resize(start + offset, 0);
    let ranges = offsets
        .into_iter()
        .map(|r| start + r.start..start + r.end)
        .collect();
    Ok((buffer, ranges))
}

/// Appends `s` as a JSON string literal.
fn push_json_string(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let code = u32::from(c) as usize;
                out.push_str("\\u00");
                out.push(char::from(HEX[code >> 4]));
                out.push(char::from(HEX[code & 0xf]));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_escape_quotes_backslashes_and_control_characters() {
        let mut s = String::new();
        push_json_string(&mut s, "a\"b\\c\n\u{1}é");
        assert_eq!(s, r#""a\"b\\c\u000a\u0001é""#);
    }

    #[test]
    fn layout_puts_wider_dtypes_first_then_names_and_pads_the_header() {
        let planned = [
            Planned {
                name: "b",
                kind: Kind::Float(crate::kind::FloatKind::F16),
                shape: &[3],
            },
            Planned {
                name: "a",
                kind: Kind::Float(crate::kind::FloatKind::F32),
                shape: &[1],
            },
            Planned {
                name: "c",
                kind: Kind::Int(crate::kind::IntKind::I64),
                shape: &[],
            },
        ];
        let (buffer, ranges) = layout(&planned, &BTreeMap::new()).unwrap();
        let header_len = u64::from_le_bytes(buffer[..8].try_into().unwrap()) as usize;
        assert_eq!(header_len % 8, 0);
        let start = 8 + header_len;
        assert_eq!(ranges[2], start..start + 8);
        assert_eq!(ranges[1], start + 8..start + 12);
        assert_eq!(ranges[0], start + 12..start + 18);
        assert_eq!(buffer.len(), start + 18);
        let parsed = SafeTensors::deserialize(&buffer).unwrap();
        assert_eq!(parsed.len(), 3);
    }
}
