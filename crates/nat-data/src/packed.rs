//! Packed datasets: `train.npz` / `test.npz` (NumPy) or `train.safetensors` /
//! `test.safetensors`, each holding `images` (uint8, `N×H×W×C` or `N×H×W` for grey, square) and
//! `labels` (`N` integers: int64, int32 or uint8 in npz; I64, I32 or U8 in safetensors).

use std::path::Path;

use npyz::npz::{NpzArchive, NpzWriter};
use npyz::{DType, NpyFile, TypeChar, WriterBuilder};
use safetensors::{Dtype, SafeTensors};

use crate::error::DataError;
use crate::raw::RawImages;

/// One packed file as read: images NHWC, and what they contain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    /// `count × side × side × channels` bytes.
    pub images_nhwc: Vec<u8>,
    pub labels: Vec<i64>,
    pub count: usize,
    pub side: usize,
    pub channels: usize,
}

impl Packed {
    /// The images in CHW order per image (what training reads).
    pub fn into_raw(self) -> RawImages {
        let (side, channels) = (self.side, self.channels);
        let plane = side * side;
        let pixels = if channels == 1 {
            self.images_nhwc
        } else {
            let mut chw = vec![0u8; self.images_nhwc.len()];
            for (image, out) in self
                .images_nhwc
                .chunks_exact(plane * channels)
                .zip(chw.chunks_exact_mut(plane * channels))
            {
                for (p, pixel) in image.chunks_exact(channels).enumerate() {
                    for (c, &value) in pixel.iter().enumerate() {
                        out[c * plane + p] = value;
                    }
                }
            }
            chw
        };
        RawImages {
            pixels,
            labels: self.labels,
            count: self.count,
            max_value: 255,
        }
    }
}

/// The `N, side, channels` of an `images` shape, checked.
fn image_dims(
    dataset: &str,
    path: &Path,
    shape: &[usize],
) -> Result<(usize, usize, usize), DataError> {
    let (count, height, width, channels) = match *shape {
        [n, h, w] => (n, h, w, 1),
        [n, h, w, c] => (n, h, w, c),
        _ => {
            return Err(DataError::malformed(
                dataset,
                path,
                format!("images: shape {shape:?}, expected N×H×W×C or N×H×W"),
            ))
        }
    };
    if height != width {
        return Err(DataError::malformed(
            dataset,
            path,
            format!("images: {height}x{width} images, square ones are needed"),
        ));
    }
    if channels != 1 && channels != 3 {
        return Err(DataError::malformed(
            dataset,
            path,
            format!("images: {channels} channels, expected 1 or 3"),
        ));
    }
    Ok((count, height, channels))
}

fn finish(
    dataset: &str,
    path: &Path,
    shape: &[usize],
    images: Vec<u8>,
    labels: Vec<i64>,
) -> Result<Packed, DataError> {
    let (count, side, channels) = image_dims(dataset, path, shape)?;
    if labels.len() != count {
        return Err(DataError::malformed(
            dataset,
            path,
            format!("labels: {} labels for {count} images", labels.len()),
        ));
    }
    if count == 0 {
        return Err(DataError::malformed(dataset, path, "images: no image"));
    }
    if let Some((index, label)) = labels.iter().enumerate().find(|(_, &l)| l < 0) {
        return Err(DataError::malformed(
            dataset,
            path,
            format!("labels: label {index} is {label}, labels must be >= 0"),
        ));
    }
    Ok(Packed {
        images_nhwc: images,
        labels,
        count,
        side,
        channels,
    })
}

/// Reads a `.npz` file with `images` and `labels`.
pub fn read_npz(dataset: &str, path: &Path) -> Result<Packed, DataError> {
    let io_err = |source: std::io::Error| DataError::io(dataset, path, source);
    let bad = |reason: String| DataError::malformed(dataset, path, reason);
    let mut archive = NpzArchive::open(path).map_err(io_err)?;
    let images = archive
        .by_name("images")
        .map_err(|e| bad(format!("images: {e}")))?
        .ok_or_else(|| bad("no `images` array".to_owned()))?;
    let shape = npy_shape(&images);
    match plain_type(&images) {
        Some((TypeChar::Uint, 1)) => {}
        _ => {
            return Err(bad(format!(
                "images: dtype {}, expected uint8",
                images.dtype().descr()
            )))
        }
    }
    let pixels: Vec<u8> = images.into_vec().map_err(|e| bad(format!("images: {e}")))?;
    let labels_file = archive
        .by_name("labels")
        .map_err(|e| bad(format!("labels: {e}")))?
        .ok_or_else(|| bad("no `labels` array".to_owned()))?;
    let labels = npy_labels(labels_file).map_err(|reason| bad(format!("labels: {reason}")))?;
    finish(dataset, path, &shape, pixels, labels)
}

fn npy_shape<R: std::io::Read>(file: &NpyFile<R>) -> Vec<usize> {
    file.shape()
        .iter()
        .map(|&d| usize::try_from(d).unwrap_or(usize::MAX))
        .collect()
}

fn plain_type<R: std::io::Read>(file: &NpyFile<R>) -> Option<(TypeChar, u64)> {
    match file.dtype() {
        DType::Plain(ts) => Some((ts.type_char(), ts.size_field())),
        _ => None,
    }
}

fn npy_labels<R: std::io::Read>(file: NpyFile<R>) -> Result<Vec<i64>, String> {
    if file.shape().len() != 1 {
        return Err(format!("shape {:?}, expected N", file.shape()));
    }
    let widen = |e: std::io::Error| e.to_string();
    match plain_type(&file) {
        Some((TypeChar::Int, 8)) => file.into_vec::<i64>().map_err(widen),
        Some((TypeChar::Int, 4)) => Ok(file
            .into_vec::<i32>()
            .map_err(widen)?
            .into_iter()
            .map(i64::from)
            .collect()),
        Some((TypeChar::Uint, 1)) => Ok(file
            .into_vec::<u8>()
            .map_err(widen)?
            .into_iter()
            .map(i64::from)
            .collect()),
        _ => Err(format!(
            "dtype {}, expected int64, int32 or uint8",
            file.dtype().descr()
        )),
    }
}

/// Reads a `.safetensors` file with `images` and `labels`.
pub fn read_safetensors(dataset: &str, path: &Path) -> Result<Packed, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(dataset, path, e))?;
    let bad = |reason: String| DataError::malformed(dataset, path, reason);
    let tensors = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let images = tensors
        .tensor("images")
        .map_err(|_| bad("no `images` tensor".to_owned()))?;
    if images.dtype() != Dtype::U8 {
        return Err(bad(format!(
            "images: dtype {:?}, expected U8",
            images.dtype()
        )));
    }
    let labels = tensors
        .tensor("labels")
        .map_err(|_| bad("no `labels` tensor".to_owned()))?;
    if labels.shape().len() != 1 {
        return Err(bad(format!(
            "labels: shape {:?}, expected N",
            labels.shape()
        )));
    }
    let data = labels.data();
    let labels: Vec<i64> = match labels.dtype() {
        Dtype::I64 => data
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .collect(),
        Dtype::I32 => data
            .chunks_exact(4)
            .map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect(),
        Dtype::U8 => data.iter().map(|&b| i64::from(b)).collect(),
        other => {
            return Err(bad(format!(
                "labels: dtype {other:?}, expected I64, I32 or U8"
            )))
        }
    };
    finish(
        dataset,
        path,
        images.shape(),
        images.data().to_vec(),
        labels,
    )
}

/// Writes `images` (NHWC bytes of `shape` = `[N, H, W, C]`) and `labels` (int64) as a `.npz`.
pub fn write_npz(
    path: &Path,
    images_nhwc: &[u8],
    shape: [usize; 4],
    labels: &[i64],
) -> std::io::Result<()> {
    let mut npz = NpzWriter::create(path)?;
    let dims: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut writer = npz
        .array::<u8>("images", Default::default())?
        .default_dtype()
        .shape(&dims)
        .begin_nd()?;
    writer.extend(images_nhwc.iter().copied())?;
    writer.finish()?;
    let mut writer = npz
        .array::<i64>("labels", Default::default())?
        .default_dtype()
        .shape(&[labels.len() as u64])
        .begin_nd()?;
    writer.extend(labels.iter().copied())?;
    writer.finish()?;
    Ok(())
}

/// Writes `images` (NHWC bytes of `shape` = `[N, H, W, C]`) and `labels` (I64) as a
/// `.safetensors` file.
pub fn write_safetensors(
    path: &Path,
    images_nhwc: &[u8],
    shape: [usize; 4],
    labels: &[i64],
) -> Result<(), String> {
    let label_bytes: Vec<u8> = labels.iter().flat_map(|l| l.to_le_bytes()).collect();
    let images = safetensors::tensor::TensorView::new(Dtype::U8, shape.to_vec(), images_nhwc)
        .map_err(|e| e.to_string())?;
    let labels = safetensors::tensor::TensorView::new(Dtype::I64, vec![labels.len()], &label_bytes)
        .map_err(|e| e.to_string())?;
    let bytes = safetensors::serialize([("images", images), ("labels", labels)], None)
        .map_err(|e| e.to_string())?;
    std::fs::write(path, bytes).map_err(|e| e.to_string())
}
