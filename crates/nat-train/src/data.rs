//! Datasets: loading the standard on-disk formats under a data dir, a deterministic seeded
//! train/validation split, per-channel normalisation, tensors kept on the device when they fit.
//!
//! Layout under the data dir (what `scripts/fetch-data.sh` writes):
//! - `cifar10/data_batch_1.bin` … `data_batch_5.bin` (required), `test_batch.bin` (optional):
//!   CIFAR-10 binary records of 3,073 bytes (label, then 1,024 R, 1,024 G, 1,024 B bytes).
//! - `mnist/`, `fashion-mnist/`: `train-images-idx3-ubyte`, `train-labels-idx1-ubyte` (required),
//!   `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte` (optional), each raw or with `.gz`.
//! - `digits/digits.csv.gz`: scikit-learn's file, 64 values 0..=16 and the label per row (no test
//!   split).

pub mod formats;

use std::path::{Path, PathBuf};

use nat_arch::Dataset;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

pub use formats::RawImages;

use crate::error::DataError;

/// Images (`N × C × H × W`, float, normalised) and labels (`N`, int64) of one split.
#[derive(Debug)]
pub struct Split {
    pub images: Tensor,
    pub labels: Tensor,
}

impl Split {
    /// Number of examples.
    pub fn len(&self) -> i64 {
        self.labels.size().first().copied().unwrap_or(0)
    }

    /// True when the split has no example.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The examples at `indices` (an int64 tensor on any device), moved to `device`.
    pub fn gather(
        &self,
        indices: &Tensor,
        device: Device,
    ) -> Result<(Tensor, Tensor), tch::TchError> {
        let index = indices.f_to_device(self.images.device())?;
        let images = self.images.f_index_select(0, &index)?.f_to_device(device)?;
        let labels = self.labels.f_index_select(0, &index)?.f_to_device(device)?;
        Ok((images, labels))
    }

    /// The contiguous examples `start .. start + len`, moved to `device`.
    pub fn slice(
        &self,
        start: i64,
        len: i64,
        device: Device,
    ) -> Result<(Tensor, Tensor), tch::TchError> {
        let images = self.images.f_narrow(0, start, len)?.f_to_device(device)?;
        let labels = self.labels.f_narrow(0, start, len)?.f_to_device(device)?;
        Ok((images, labels))
    }
}

/// A loaded dataset: train and validation splits of the dataset's training files, and its test
/// split when the dataset has one.
#[derive(Debug)]
pub struct DatasetSplits {
    pub dataset: Dataset,
    pub train: Split,
    /// Held out from the training files (`validation_fraction`); the test split when the fraction
    /// is 0.
    pub validation: Split,
    pub test: Option<Split>,
    pub channels: i64,
    pub image_size: i64,
    pub num_classes: i64,
    /// Per-channel mean and standard deviation (of pixels scaled to 0..1) of the train split,
    /// used to normalise every split.
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    /// Where the tensors live: the requested device, or the CPU when they did not fit there.
    pub storage_device: Device,
}

/// The files a dataset needs under `data_dir` (train files first).
pub fn dataset_dir(data_dir: &Path, dataset: Dataset) -> PathBuf {
    data_dir.join(dataset.name())
}

/// Reads a dataset's raw training images and, when present, its test images.
pub fn read_raw(
    data_dir: &Path,
    dataset: Dataset,
) -> Result<(RawImages, Option<RawImages>), DataError> {
    let dir = dataset_dir(data_dir, dataset);
    if !dir.is_dir() {
        return Err(DataError::Missing { dataset, path: dir });
    }
    match dataset {
        Dataset::Digits => Ok((formats::read_digits_csv(&dir.join("digits.csv.gz"))?, None)),
        Dataset::Cifar10 => {
            let train: Vec<PathBuf> = (1..=5)
                .map(|i| dir.join(format!("data_batch_{i}.bin")))
                .collect();
            let raw_train = formats::read_cifar10_batches(&train)?;
            let test_path = dir.join("test_batch.bin");
            let raw_test = if test_path.exists() {
                Some(formats::read_cifar10_batches(&[test_path])?)
            } else {
                None
            };
            Ok((raw_train, raw_test))
        }
        Dataset::Mnist | Dataset::FashionMnist => {
            let side = dataset.image_size();
            let find = |stem: &str| -> Option<PathBuf> {
                [dir.join(stem), dir.join(format!("{stem}.gz"))]
                    .into_iter()
                    .find(|p| p.exists())
            };
            let required = |stem: &str| -> Result<PathBuf, DataError> {
                find(stem).ok_or_else(|| DataError::Missing {
                    dataset,
                    path: dir.join(format!("{stem}[.gz]")),
                })
            };
            let train = formats::read_idx_pair(
                dataset,
                &required("train-images-idx3-ubyte")?,
                &required("train-labels-idx1-ubyte")?,
                side,
            )?;
            let test = match (
                find("t10k-images-idx3-ubyte"),
                find("t10k-labels-idx1-ubyte"),
            ) {
                (Some(images), Some(labels)) => {
                    Some(formats::read_idx_pair(dataset, &images, &labels, side)?)
                }
                _ => None,
            };
            Ok((train, test))
        }
    }
}

/// Loads `dataset` from `data_dir` and splits its training files into train and validation:
/// a seeded shuffle (`split_seed`), then the last `round(validation_fraction · N)` examples (at
/// least one) are the validation split. `validation_fraction == 0` uses the test split for
/// validation (an error when the dataset has none). The same arguments always give the same split;
/// keep `split_seed` fixed across tasks so accuracies are comparable.
///
/// Tensors are moved to `device`; if that fails (out of memory) they stay on the CPU and batches
/// are moved one at a time ([`DatasetSplits::storage_device`]).
pub fn load(
    data_dir: &Path,
    dataset: Dataset,
    device: Device,
    validation_fraction: f64,
    split_seed: u64,
) -> Result<DatasetSplits, DataError> {
    if !(0.0..1.0).contains(&validation_fraction) {
        return Err(DataError::InvalidRequest {
            field: "validation_fraction",
            reason: format!("{validation_fraction} is outside [0, 1)"),
        });
    }
    let (raw_train, raw_test) = read_raw(data_dir, dataset)?;
    let channels = dataset.channels();
    let side = dataset.image_size();
    let per_image = channels * side * side;
    for raw in std::iter::once(&raw_train).chain(raw_test.as_ref()) {
        if raw.pixels.len() != raw.count * per_image || raw.labels.len() != raw.count {
            return Err(DataError::Malformed {
                dataset,
                path: dataset_dir(data_dir, dataset),
                reason: format!(
                    "{} pixels and {} labels for {} images of {per_image} values",
                    raw.pixels.len(),
                    raw.labels.len(),
                    raw.count
                ),
            });
        }
    }

    let mut order: Vec<usize> = (0..raw_train.count).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(split_seed));
    let validation_count = if validation_fraction > 0.0 {
        ((validation_fraction * raw_train.count as f64).round() as usize).max(1)
    } else {
        0
    };
    if validation_count >= raw_train.count {
        return Err(DataError::InvalidRequest {
            field: "validation_fraction",
            reason: format!(
                "{validation_fraction} of {} examples leaves no training example",
                raw_train.count
            ),
        });
    }
    let (train_order, validation_order) = order.split_at(raw_train.count - validation_count);
    if validation_count == 0 && raw_test.is_none() {
        return Err(DataError::InvalidRequest {
            field: "validation_fraction",
            reason: format!("0 needs a test split and {dataset} has none"),
        });
    }

    let (mean, std) = channel_stats(&raw_train, train_order, channels, side * side);
    let torch_err = |source| DataError::Torch { dataset, source };
    let all_train = to_tensors(&raw_train, channels, side, &mean, &std).map_err(torch_err)?;
    let pick = |order: &[usize]| -> Result<Split, tch::TchError> {
        let index: Vec<i64> = order.iter().map(|&i| i as i64).collect();
        let index = Tensor::f_from_slice(&index)?;
        Ok(Split {
            images: all_train.images.f_index_select(0, &index)?,
            labels: all_train.labels.f_index_select(0, &index)?,
        })
    };
    let train = pick(train_order).map_err(torch_err)?;
    let test = raw_test
        .as_ref()
        .map(|raw| to_tensors(raw, channels, side, &mean, &std))
        .transpose()
        .map_err(torch_err)?;
    let validation = if validation_count > 0 {
        pick(validation_order).map_err(torch_err)?
    } else {
        match &test {
            Some(test) => Split {
                images: test.images.shallow_clone(),
                labels: test.labels.shallow_clone(),
            },
            None => unreachable_split(),
        }
    };
    drop(all_train);

    let mut splits = DatasetSplits {
        dataset,
        train,
        validation,
        test,
        channels: channels as i64,
        image_size: side as i64,
        num_classes: dataset.num_classes() as i64,
        mean,
        std,
        storage_device: Device::Cpu,
    };
    if device != Device::Cpu {
        match move_splits(&splits, device) {
            Ok(moved) => {
                splits.train = moved.0;
                splits.validation = moved.1;
                splits.test = moved.2;
                splits.storage_device = device;
            }
            Err(error) => tracing::warn!(
                dataset = %dataset,
                ?device,
                %error,
                "dataset does not fit on the device, keeping it in host memory"
            ),
        }
    }
    tracing::debug!(
        dataset = %dataset,
        train = splits.train.len(),
        validation = splits.validation.len(),
        test = splits.test.as_ref().map(Split::len),
        "dataset loaded"
    );
    Ok(splits)
}

// Only reached when validation_count == 0 and there is no test split, which returns an error above.
fn unreachable_split() -> Split {
    Split {
        images: Tensor::new(),
        labels: Tensor::new(),
    }
}

type MovedSplits = (Split, Split, Option<Split>);

fn move_splits(splits: &DatasetSplits, device: Device) -> Result<MovedSplits, tch::TchError> {
    let move_one = |s: &Split| -> Result<Split, tch::TchError> {
        Ok(Split {
            images: s.images.f_to_device(device)?,
            labels: s.labels.f_to_device(device)?,
        })
    };
    let test = splits.test.as_ref().map(move_one).transpose()?;
    Ok((
        move_one(&splits.train)?,
        move_one(&splits.validation)?,
        test,
    ))
}

/// Mean and standard deviation per channel of the selected images, pixels scaled to 0..1.
fn channel_stats(
    raw: &RawImages,
    selected: &[usize],
    channels: usize,
    plane: usize,
) -> (Vec<f64>, Vec<f64>) {
    let scale = f64::from(raw.max_value.max(1));
    let mut mean = Vec::with_capacity(channels);
    let mut std = Vec::with_capacity(channels);
    for c in 0..channels {
        let (mut sum, mut sum_sq) = (0.0f64, 0.0f64);
        for &i in selected {
            let start = (i * channels + c) * plane;
            for &p in &raw.pixels[start..start + plane] {
                let v = f64::from(p) / scale;
                sum += v;
                sum_sq += v * v;
            }
        }
        let n = (selected.len() * plane).max(1) as f64;
        let m = sum / n;
        let variance = (sum_sq / n - m * m).max(0.0);
        mean.push(m);
        std.push(variance.sqrt().max(1e-6));
    }
    (mean, std)
}

fn to_tensors(
    raw: &RawImages,
    channels: usize,
    side: usize,
    mean: &[f64],
    std: &[f64],
) -> Result<Split, tch::TchError> {
    let n = raw.count as i64;
    let (c, s) = (channels as i64, side as i64);
    let mean_t = Tensor::f_from_slice(mean)?
        .f_to_kind(Kind::Float)?
        .f_view([1, c, 1, 1])?;
    let std_t = Tensor::f_from_slice(std)?
        .f_to_kind(Kind::Float)?
        .f_view([1, c, 1, 1])?;
    // In place after the one float conversion: CIFAR-10's train set is 614 MB as floats.
    let mut images = Tensor::f_from_slice(&raw.pixels)?
        .f_view([n, c, s, s])?
        .f_to_kind(Kind::Float)?;
    let _ = images.f_div_scalar_(f64::from(raw.max_value.max(1)))?;
    let _ = images.f_sub_(&mean_t)?;
    let _ = images.f_div_(&std_t)?;
    let labels = Tensor::f_from_slice(&raw.labels)?.f_to_kind(Kind::Int64)?;
    Ok(Split { images, labels })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_cifar(dir: &Path, name: &str, labels: &[u8]) {
        let mut bytes = Vec::new();
        for (i, &label) in labels.iter().enumerate() {
            bytes.push(label);
            // R plane constant i, G plane 100, B plane a ramp: checks the CHW order.
            bytes.extend(std::iter::repeat_n(i as u8, 1024));
            bytes.extend(std::iter::repeat_n(100u8, 1024));
            bytes.extend((0..1024).map(|p| (p % 256) as u8));
        }
        std::fs::write(dir.join(name), bytes).expect("write cifar batch");
    }

    #[test]
    fn cifar10_binary_batches_load_in_record_order() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("cifar10");
        std::fs::create_dir_all(&dir).expect("mkdir");
        for b in 1..=5u8 {
            write_cifar(&dir, &format!("data_batch_{b}.bin"), &[b, (b + 1) % 10]);
        }
        write_cifar(&dir, "test_batch.bin", &[3, 8, 8, 0]);
        let (train, test) = read_raw(root.path(), Dataset::Cifar10).expect("valid batches");
        assert_eq!(train.count, 10);
        assert_eq!(train.labels, vec![1, 2, 2, 3, 3, 4, 4, 5, 5, 6]);
        let test = test.expect("test batch present");
        assert_eq!(test.labels, vec![3, 8, 8, 0]);
        // Image 1 of the test batch: R = 1, G = 100, B[p] = p % 256.
        let img = &test.pixels[3072..6144];
        assert_eq!(
            (img[0], img[1023], img[1024], img[2048 + 300]),
            (1, 1, 100, 44)
        );

        let splits = load(root.path(), Dataset::Cifar10, Device::Cpu, 0.2, 7).expect("load");
        assert_eq!((splits.train.len(), splits.validation.len()), (8, 2));
        assert_eq!(splits.train.images.size(), vec![8, 3, 32, 32]);
        assert_eq!(splits.test.as_ref().map(Split::len), Some(4));

        // A truncated batch is a clear error naming the file.
        std::fs::write(dir.join("data_batch_3.bin"), vec![0u8; 3000]).expect("write");
        let err = load(root.path(), Dataset::Cifar10, Device::Cpu, 0.2, 7).expect_err("bad");
        let text = err.to_string();
        assert!(
            text.contains("data_batch_3.bin") && text.contains("3073"),
            "{text}"
        );
        write_cifar(&dir, "data_batch_3.bin", &[1, 2]);
        std::fs::remove_file(dir.join("data_batch_5.bin")).expect("rm");
        let err = read_raw(root.path(), Dataset::Cifar10).expect_err("missing");
        assert!(matches!(err, DataError::Missing { .. }), "{err}");
    }

    #[test]
    fn missing_dataset_and_bad_fraction_are_typed_errors() {
        let root = tempfile::tempdir().expect("tempdir");
        let err = load(root.path(), Dataset::Mnist, Device::Cpu, 0.1, 0).expect_err("missing");
        assert!(matches!(err, DataError::Missing { .. }));
        assert!(err.to_string().contains("mnist"), "{err}");
        let err = load(root.path(), Dataset::Mnist, Device::Cpu, 1.5, 0).expect_err("fraction");
        assert!(err.to_string().contains("validation_fraction"), "{err}");
    }
}
