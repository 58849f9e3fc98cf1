//! The built-in layouts (what `scripts/fetch-data.sh` writes) and their parsers:
//! - `cifar10/data_batch_1.bin` … `data_batch_5.bin` (required), `test_batch.bin` (optional):
//!   CIFAR-10 binary records of 3,073 bytes (label, then 1,024 R, 1,024 G, 1,024 B bytes).
//! - `mnist/`, `fashion-mnist/`: `train-images-idx3-ubyte`, `train-labels-idx1-ubyte` (required),
//!   `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte` (optional), each raw or with `.gz`.
//! - `digits/digits.csv.gz`: scikit-learn's file, 64 values 0..=16 and the label per row (no test
//!   file).

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use nat_arch::Dataset;

use crate::error::DataError;
use crate::raw::RawImages;

/// CIFAR-10 record: 1 label byte + 3×32×32 pixel bytes (R plane, G plane, B plane).
pub const CIFAR10_RECORD_BYTES: usize = 1 + 3 * 32 * 32;

/// The folder of a built-in dataset under `data_dir`.
pub fn dataset_dir(data_dir: &Path, dataset: Dataset) -> PathBuf {
    data_dir.join(dataset.name())
}

/// Reads a built-in dataset's raw training images and, when present, its test images.
pub fn read_builtin(
    data_dir: &Path,
    dataset: Dataset,
) -> Result<(RawImages, Option<RawImages>), DataError> {
    let dir = dataset_dir(data_dir, dataset);
    if !dir.is_dir() {
        return Err(DataError::Missing {
            dataset: dataset.name().to_owned(),
            path: dir,
        });
    }
    match dataset {
        Dataset::Digits => Ok((read_digits_csv(&dir.join("digits.csv.gz"))?, None)),
        Dataset::Cifar10 => {
            let raw_train = read_cifar10_batches(&cifar10_train_files(&dir))?;
            let test_path = dir.join("test_batch.bin");
            let raw_test = if test_path.exists() {
                Some(read_cifar10_batches(&[test_path])?)
            } else {
                None
            };
            Ok((raw_train, raw_test))
        }
        Dataset::Mnist | Dataset::FashionMnist => {
            let side = dataset.image_size();
            let (images, labels) = idx_files(&dir, dataset, "train")?
                .ok_or_else(|| missing_idx(&dir, dataset, "train"))?;
            let train = read_idx_pair(dataset, &images, &labels, side)?;
            let test = match idx_files(&dir, dataset, "t10k")? {
                Some((images, labels)) => Some(read_idx_pair(dataset, &images, &labels, side)?),
                None => None,
            };
            Ok((train, test))
        }
    }
}

/// Training and test example counts of a built-in dataset, read from file sizes and headers
/// (nothing is decoded but the digits' small CSV).
pub fn builtin_counts(data_dir: &Path, dataset: Dataset) -> Result<(u64, u64), DataError> {
    let dir = dataset_dir(data_dir, dataset);
    let name = dataset.name();
    match dataset {
        Dataset::Digits => Ok((read_digits_csv(&dir.join("digits.csv.gz"))?.count as u64, 0)),
        Dataset::Cifar10 => {
            let records = |path: &Path| -> Result<u64, DataError> {
                let len = std::fs::metadata(path)
                    .map_err(|e| DataError::io(name, path, e))?
                    .len();
                if len == 0 || len % CIFAR10_RECORD_BYTES as u64 != 0 {
                    return Err(DataError::malformed(
                        name,
                        path,
                        format!("size {len} bytes is not a positive multiple of the {CIFAR10_RECORD_BYTES}-byte record"),
                    ));
                }
                Ok(len / CIFAR10_RECORD_BYTES as u64)
            };
            let mut train = 0;
            for path in cifar10_train_files(&dir) {
                train += records(&path)?;
            }
            let test_path = dir.join("test_batch.bin");
            let test = if test_path.exists() {
                records(&test_path)?
            } else {
                0
            };
            Ok((train, test))
        }
        Dataset::Mnist | Dataset::FashionMnist => {
            let (_, labels) = idx_files(&dir, dataset, "train")?
                .ok_or_else(|| missing_idx(&dir, dataset, "train"))?;
            let train = idx_label_count(dataset, &labels)?;
            let test = match idx_files(&dir, dataset, "t10k")? {
                Some((_, labels)) => idx_label_count(dataset, &labels)?,
                None => 0,
            };
            Ok((train, test))
        }
    }
}

fn cifar10_train_files(dir: &Path) -> Vec<PathBuf> {
    (1..=5)
        .map(|i| dir.join(format!("data_batch_{i}.bin")))
        .collect()
}

/// The image and label IDX files of `prefix` (`train` or `t10k`), raw or gzipped; `None` when
/// neither is there, an error when only one is.
fn idx_files(
    dir: &Path,
    dataset: Dataset,
    prefix: &str,
) -> Result<Option<(PathBuf, PathBuf)>, DataError> {
    let find = |stem: &str| -> Option<PathBuf> {
        [dir.join(stem), dir.join(format!("{stem}.gz"))]
            .into_iter()
            .find(|p| p.exists())
    };
    match (
        find(&format!("{prefix}-images-idx3-ubyte")),
        find(&format!("{prefix}-labels-idx1-ubyte")),
    ) {
        (Some(images), Some(labels)) => Ok(Some((images, labels))),
        (None, None) => Ok(None),
        (None, Some(_)) => Err(missing_idx_file(dir, dataset, prefix, "images-idx3")),
        (Some(_), None) => Err(missing_idx_file(dir, dataset, prefix, "labels-idx1")),
    }
}

fn missing_idx(dir: &Path, dataset: Dataset, prefix: &str) -> DataError {
    missing_idx_file(dir, dataset, prefix, "images-idx3")
}

fn missing_idx_file(dir: &Path, dataset: Dataset, prefix: &str, what: &str) -> DataError {
    DataError::Missing {
        dataset: dataset.name().to_owned(),
        path: dir.join(format!("{prefix}-{what}-ubyte[.gz]")),
    }
}

fn read_file(dataset: Dataset, path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|source| DataError::io(dataset.name(), path, source))
}

fn malformed(dataset: Dataset, path: &Path, reason: impl Into<String>) -> DataError {
    DataError::malformed(dataset.name(), path, reason)
}

fn gunzip(dataset: Dataset, path: &Path, bytes: &[u8]) -> Result<Vec<u8>, DataError> {
    let mut out = Vec::new();
    GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .map_err(|e| malformed(dataset, path, format!("not a valid gzip stream: {e}")))?;
    Ok(out)
}

/// Parses CIFAR-10 binary batch files (each a sequence of 3,073-byte records) and concatenates them.
pub fn read_cifar10_batches(paths: &[PathBuf]) -> Result<RawImages, DataError> {
    let dataset = Dataset::Cifar10;
    let mut raw = RawImages::empty();
    for path in paths {
        let bytes = read_file(dataset, path)?;
        if bytes.is_empty() || bytes.len() % CIFAR10_RECORD_BYTES != 0 {
            return Err(malformed(
                dataset,
                path,
                format!(
                    "size {} bytes is not a positive multiple of the {CIFAR10_RECORD_BYTES}-byte record",
                    bytes.len()
                ),
            ));
        }
        for (index, record) in bytes.chunks_exact(CIFAR10_RECORD_BYTES).enumerate() {
            let label = record[0];
            if label >= 10 {
                return Err(malformed(
                    dataset,
                    path,
                    format!("record {index} has label {label} (expected 0..=9)"),
                ));
            }
            raw.labels.push(i64::from(label));
            raw.pixels.extend_from_slice(&record[1..]);
            raw.count += 1;
        }
    }
    Ok(raw)
}

/// Reads an IDX file, gunzipping when its name ends in `.gz`.
fn read_idx(dataset: Dataset, path: &Path) -> Result<Vec<u8>, DataError> {
    let bytes = read_file(dataset, path)?;
    if path.extension().is_some_and(|e| e == "gz") {
        gunzip(dataset, path, &bytes)
    } else {
        Ok(bytes)
    }
}

/// The label count in an IDX1 label file's header (only the first 8 bytes are decoded).
fn idx_label_count(dataset: Dataset, path: &Path) -> Result<u64, DataError> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(dataset.name(), path, e))?;
    let mut header = [0u8; 8];
    let read = if path.extension().is_some_and(|e| e == "gz") {
        GzDecoder::new(file).read_exact(&mut header)
    } else {
        std::io::BufReader::new(file).read_exact(&mut header)
    };
    if read.is_err() || be_u32(&header, 0) != 0x0000_0801 {
        return Err(malformed(
            dataset,
            path,
            "not an IDX1 u8 label file (magic 0x00000801)",
        ));
    }
    Ok(u64::from(be_u32(&header, 4)))
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Parses an IDX image file (magic 0x00000803, u8, dims n × rows × cols) and its IDX label file
/// (magic 0x00000801, u8, dim n). Requires square `side × side` images and labels below 10.
pub fn read_idx_pair(
    dataset: Dataset,
    images_path: &Path,
    labels_path: &Path,
    side: usize,
) -> Result<RawImages, DataError> {
    let images = read_idx(dataset, images_path)?;
    let labels = read_idx(dataset, labels_path)?;
    if images.len() < 16 || be_u32(&images, 0) != 0x0000_0803 {
        return Err(malformed(
            dataset,
            images_path,
            "not an IDX3 u8 image file (magic 0x00000803)",
        ));
    }
    if labels.len() < 8 || be_u32(&labels, 0) != 0x0000_0801 {
        return Err(malformed(
            dataset,
            labels_path,
            "not an IDX1 u8 label file (magic 0x00000801)",
        ));
    }
    let count = be_u32(&images, 4) as usize;
    let (rows, cols) = (be_u32(&images, 8) as usize, be_u32(&images, 12) as usize);
    if rows != side || cols != side {
        return Err(malformed(
            dataset,
            images_path,
            format!("images are {rows}x{cols}, expected {side}x{side}"),
        ));
    }
    let expected = count
        .checked_mul(rows * cols)
        .and_then(|n| n.checked_add(16));
    if expected != Some(images.len()) {
        return Err(malformed(
            dataset,
            images_path,
            format!(
                "header says {count} images of {rows}x{cols} but the file has {} bytes",
                images.len()
            ),
        ));
    }
    let label_count = be_u32(&labels, 4) as usize;
    if label_count != count || labels.len() != 8 + count {
        return Err(malformed(
            dataset,
            labels_path,
            format!(
                "{label_count} labels in the header, {} bytes of labels, for {count} images",
                labels.len().saturating_sub(8)
            ),
        ));
    }
    if let Some((index, bad)) = labels[8..].iter().enumerate().find(|(_, &l)| l >= 10) {
        return Err(malformed(
            dataset,
            labels_path,
            format!("label {index} is {bad} (expected 0..=9)"),
        ));
    }
    Ok(RawImages {
        pixels: images[16..].to_vec(),
        labels: labels[8..].iter().map(|&l| i64::from(l)).collect(),
        count,
        max_value: 255,
    })
}

/// Parses scikit-learn's `digits.csv.gz`: one row per image, 64 integers 0..=16 then the label.
pub fn read_digits_csv(path: &Path) -> Result<RawImages, DataError> {
    let dataset = Dataset::Digits;
    let bytes = read_file(dataset, path)?;
    let text = gunzip(dataset, path, &bytes)?;
    let text =
        String::from_utf8(text).map_err(|_| malformed(dataset, path, "CSV is not valid UTF-8"))?;
    let mut raw = RawImages {
        max_value: 16,
        ..RawImages::empty()
    };
    for (line_index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let row = line_index + 1;
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != 65 {
            return Err(malformed(
                dataset,
                path,
                format!("row {row} has {} fields, expected 65", fields.len()),
            ));
        }
        for (col, field) in fields.iter().enumerate() {
            let value = parse_small_int(field).ok_or_else(|| {
                malformed(
                    dataset,
                    path,
                    format!("row {row}, column {}: '{field}' is not an integer", col + 1),
                )
            })?;
            let limit = if col == 64 { 9 } else { 16 };
            if value > limit {
                return Err(malformed(
                    dataset,
                    path,
                    format!(
                        "row {row}, column {}: {value} is out of range 0..={limit}",
                        col + 1
                    ),
                ));
            }
            if col == 64 {
                raw.labels.push(i64::from(value));
            } else {
                raw.pixels.push(value);
            }
        }
        raw.count += 1;
    }
    if raw.count == 0 {
        return Err(malformed(dataset, path, "no rows"));
    }
    Ok(raw)
}

/// Accepts `7` and `7.0` (some copies of the file are written as floats).
fn parse_small_int(field: &str) -> Option<u8> {
    let field = field.trim();
    let integral = field
        .strip_suffix(".0")
        .or_else(|| field.strip_suffix('.'))
        .unwrap_or(field);
    integral.parse::<u8>().ok()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).expect("gzip in memory");
        encoder.finish().expect("gzip in memory")
    }

    #[test]
    fn idx_pair_raw_and_gzipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut images = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2];
        images.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let labels = vec![0, 0, 8, 1, 0, 0, 0, 2, 7, 3];
        std::fs::write(dir.path().join("i"), &images).expect("write");
        std::fs::write(dir.path().join("l.gz"), gz(&labels)).expect("write");
        let raw = read_idx_pair(
            Dataset::Mnist,
            &dir.path().join("i"),
            &dir.path().join("l.gz"),
            2,
        )
        .expect("valid idx");
        assert_eq!(raw.count, 2);
        assert_eq!(raw.labels, vec![7, 3]);
        assert_eq!(raw.pixels, vec![1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            idx_label_count(Dataset::Mnist, &dir.path().join("l.gz")).expect("header"),
            2
        );

        let err = read_idx_pair(
            Dataset::Mnist,
            &dir.path().join("i"),
            &dir.path().join("l.gz"),
            28,
        )
        .expect_err("wrong side");
        assert!(err.to_string().contains("expected 28x28"), "{err}");

        images.truncate(20);
        std::fs::write(dir.path().join("i"), &images).expect("write");
        let err = read_idx_pair(
            Dataset::Mnist,
            &dir.path().join("i"),
            &dir.path().join("l.gz"),
            2,
        )
        .expect_err("truncated");
        assert!(err.to_string().contains("header says 2 images"), "{err}");
    }

    #[test]
    fn digits_csv_rejects_bad_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("digits.csv.gz");
        let good: Vec<String> = (0..64).map(|i| (i % 17).to_string()).collect();
        let row = format!("{},5\n", good.join(","));
        std::fs::write(&path, gz(row.as_bytes())).expect("write");
        let raw = read_digits_csv(&path).expect("valid");
        assert_eq!((raw.count, raw.labels[0], raw.pixels[16]), (1, 5, 16));

        let bad = format!("{},11\n", good.join(","));
        std::fs::write(&path, gz(bad.as_bytes())).expect("write");
        let err = read_digits_csv(&path).expect_err("label 11");
        assert!(err.to_string().contains("column 65"), "{err}");

        std::fs::write(&path, b"not gzip").expect("write");
        let err = read_digits_csv(&path).expect_err("garbage");
        assert!(err.to_string().contains("gzip"), "{err}");
    }
}
