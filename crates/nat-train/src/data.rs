//! Datasets: any dataset under a data dir (the built-in layouts, image folders, packed npz /
//! safetensors files; `nat-data` finds and decodes them, see docs/DATASETS.md) turned into a
//! deterministic partition of disjoint train, validation and test splits, per-channel
//! normalisation, tensors kept on the device when they fit.
//!
//! # Splits
//!
//! Every loaded dataset has three disjoint splits ([`load`], [`partition`]):
//! - **test**: the dataset's test files (`t10k-*` of MNIST and Fashion-MNIST, CIFAR-10's
//!   `test_batch.bin`). A dataset without test files — the 8×8 digits always, the others when
//!   those files are absent — has [`HELD_OUT_TEST_FRACTION`] (20 %) of its training files held
//!   out as its test split, chosen by a shuffle seeded with the fixed [`HELD_OUT_TEST_SEED`]
//!   *before* the validation split is taken. That choice depends on neither the caller's
//!   `split_seed` nor `validation_fraction`, so every task on every worker sees the same test
//!   examples.
//! - **validation**: `round(validation_fraction · N)` (at least one) of the N training-file
//!   examples that are not test examples, chosen by a shuffle seeded with `split_seed`.
//!   `validation_fraction == 0` makes the validation split the test split itself (the same
//!   tensors; for the digits, the held-out test part) — then a selection on "validation" does see
//!   the test examples.
//! - **train**: the rest of the training files. The normalisation statistics come from it alone,
//!   unless the dataset's `dataset.toml` gives `mean` and `std`.
//!
//! Learning and derive tasks measure on the validation split, the final evaluation on the test
//! split ([`EvalSplit`]), which no selection saw (with `validation_fraction > 0`). Holding the test
//! part out changes the digits' sizes: of its 1,797 images, 359 are test, and `validation_fraction`
//! 0.2 leaves 288 validation and 1,150 train images (before there was no test split, and 359
//! validation and 1,438 train images). Datasets with test files keep their train and validation
//! splits exactly as before.

use std::path::Path;

use nat_arch::{Dataset, DatasetShape};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

pub use nat_data::builtin::dataset_dir;
pub use nat_data::RawImages;

use crate::error::DataError;

/// Share of the training files held out as the test split of a dataset without test files.
pub const HELD_OUT_TEST_FRACTION: f64 = 0.2;

/// Seed of the shuffle that holds out the test split of a dataset without test files. Fixed (not
/// the caller's `split_seed`) so that the test examples are the same for every task; distinct
/// from the validation split seeds in use (the worker's `SPLIT_SEED`, the tests' small seeds).
pub const HELD_OUT_TEST_SEED: u64 = 0x4E41_545F_5445_5354; // "NAT_TEST"

/// The split a `train_eval` / `final_eval` call reports its accuracy and loss on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EvalSplit {
    /// [`DatasetSplits::validation`]: what learning and derive tasks measure on.
    #[default]
    Validation,
    /// [`DatasetSplits::test`]: what the final evaluation measures on; no selection saw it.
    Test,
}

impl EvalSplit {
    /// `validation` or `test`.
    pub fn name(self) -> &'static str {
        match self {
            EvalSplit::Validation => "validation",
            EvalSplit::Test => "test",
        }
    }
}

impl std::fmt::Display for EvalSplit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a dataset's test split comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestSource {
    /// The dataset's test files.
    Files,
    /// [`HELD_OUT_TEST_FRACTION`] of the training files, held out with [`HELD_OUT_TEST_SEED`].
    HeldOut,
}

/// Which examples of the training files are in which split: positions in the training files, in
/// the order of the split's tensors. The three lists are disjoint and together cover the training
/// files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub train: Vec<usize>,
    /// Empty when `validation_fraction` is 0: the validation split is then the test split.
    pub validation: Vec<usize>,
    /// The held-out test examples; empty when the test split is the dataset's test files.
    pub test: Vec<usize>,
    pub test_source: TestSource,
}

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

    /// The same tensors (shared storage).
    pub fn shallow_clone(&self) -> Split {
        Split {
            images: self.images.shallow_clone(),
            labels: self.labels.shallow_clone(),
        }
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

/// A loaded dataset: its disjoint train, validation and test splits (see the module docs).
#[derive(Debug)]
pub struct DatasetSplits {
    /// The dataset's name (its folder under the data dir).
    pub name: String,
    /// Which built-in dataset this is, if it is one.
    pub builtin: Option<Dataset>,
    /// Channels, side and classes, as the files show them.
    pub shape: DatasetShape,
    pub train: Split,
    /// Held out from the training files (`validation_fraction`); the test split when the fraction
    /// is 0.
    pub validation: Split,
    /// The dataset's test files, or the part of its training files held out for testing when it
    /// has none ([`Partition::test_source`]).
    pub test: Split,
    /// Which training-file examples went to which split.
    pub partition: Partition,
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

impl DatasetSplits {
    /// The split that `which` evaluates on.
    pub fn eval_split(&self, which: EvalSplit) -> &Split {
        match which {
            EvalSplit::Validation => &self.validation,
            EvalSplit::Test => &self.test,
        }
    }
}

/// Reads a built-in dataset's raw training images and, when present, its test images.
pub fn read_raw(
    data_dir: &Path,
    dataset: Dataset,
) -> Result<(RawImages, Option<RawImages>), DataError> {
    Ok(nat_data::builtin::read_builtin(data_dir, dataset)?)
}

/// Splits `count` training-file examples into train, validation and (when `has_test_files` is
/// false) held-out test examples, as the module docs describe: first the held-out test part
/// ([`HELD_OUT_TEST_FRACTION`], seed [`HELD_OUT_TEST_SEED`]), then of the rest a seeded shuffle
/// (`split_seed`) whose last `round(validation_fraction · N)` examples (at least one) are the
/// validation split. `validation_fraction == 0` gives no validation examples (the validation split
/// is then the test split). The same arguments always give the same partition.
pub fn partition(
    count: usize,
    has_test_files: bool,
    validation_fraction: f64,
    split_seed: u64,
) -> Result<Partition, DataError> {
    if !(0.0..1.0).contains(&validation_fraction) {
        return Err(DataError::InvalidRequest {
            field: "validation_fraction",
            reason: format!("{validation_fraction} is outside [0, 1)"),
        });
    }
    let (mut order, test, test_source) = if has_test_files {
        ((0..count).collect(), Vec::new(), TestSource::Files)
    } else {
        let held_out = ((HELD_OUT_TEST_FRACTION * count as f64).round() as usize).max(1);
        // The held-out test split needs at least 2 examples, and so does the train split.
        if held_out < 2 || held_out + 2 > count {
            return Err(DataError::InvalidRequest {
                field: "dataset",
                reason: format!(
                    "{count} training examples and no test files: too few to hold out a test split"
                ),
            });
        }
        let mut all: Vec<usize> = (0..count).collect();
        all.shuffle(&mut ChaCha8Rng::seed_from_u64(HELD_OUT_TEST_SEED));
        let test = all.split_off(count - held_out);
        // Back to file order, so that the validation split below depends only on which examples
        // remain and on `split_seed`.
        all.sort_unstable();
        (all, test, TestSource::HeldOut)
    };
    let remaining = order.len();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(split_seed));
    let validation_count = if validation_fraction > 0.0 {
        ((validation_fraction * remaining as f64).round() as usize).max(1)
    } else {
        0
    };
    if validation_count >= remaining {
        return Err(DataError::InvalidRequest {
            field: "validation_fraction",
            reason: format!(
                "{validation_fraction} of {remaining} examples leaves no training example"
            ),
        });
    }
    let validation = order.split_off(remaining - validation_count);
    Ok(Partition {
        train: order,
        validation,
        test,
        test_source,
    })
}

/// Loads `dataset` from `data_dir` and partitions it into train, validation and test splits
/// ([`partition`]; the module docs give the rules). The same arguments always give the same
/// splits; keep `split_seed` fixed across tasks so accuracies are comparable. The test split does
/// not depend on `validation_fraction` or `split_seed`.
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
    load_named(
        data_dir,
        dataset.name(),
        device,
        validation_fraction,
        split_seed,
    )
}

/// Like [`load`], for any dataset under `data_dir` by name: a built-in one, an image folder or a
/// packed file (`nat_data::load` finds and decodes it). The splits follow the same rules; the
/// normalisation uses `dataset.toml`'s `mean` and `std` when it gives them.
pub fn load_named(
    data_dir: &Path,
    name: &str,
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
    let loaded = nat_data::load(data_dir, name)?;
    let shape = loaded.shape;
    let channels = shape.channels as usize;
    let side = shape.image_size as usize;
    let (raw_train, raw_test) = (loaded.train, loaded.test);

    let parts = partition(
        raw_train.count,
        raw_test.is_some(),
        validation_fraction,
        split_seed,
    )?;
    let (mean, std) = match loaded.normalization {
        Some(given) => given,
        None => channel_stats(&raw_train, &parts.train, channels, side * side),
    };
    let torch_err = |source| DataError::Torch {
        dataset: name.to_owned(),
        source,
    };
    let all_train = to_tensors(&raw_train, channels, side, &mean, &std).map_err(torch_err)?;
    let pick = |order: &[usize]| -> Result<Split, tch::TchError> {
        let index: Vec<i64> = order.iter().map(|&i| i as i64).collect();
        let index = Tensor::f_from_slice(&index)?;
        Ok(Split {
            images: all_train.images.f_index_select(0, &index)?,
            labels: all_train.labels.f_index_select(0, &index)?,
        })
    };
    let train = pick(&parts.train).map_err(torch_err)?;
    let test = match &raw_test {
        Some(raw) => to_tensors(raw, channels, side, &mean, &std),
        None => pick(&parts.test),
    }
    .map_err(torch_err)?;
    let validation = if parts.validation.is_empty() {
        test.shallow_clone()
    } else {
        pick(&parts.validation).map_err(torch_err)?
    };
    drop(all_train);

    let mut splits = DatasetSplits {
        name: name.to_owned(),
        builtin: loaded.builtin,
        shape,
        train,
        validation,
        test,
        partition: parts,
        channels: channels as i64,
        image_size: side as i64,
        num_classes: i64::from(shape.classes),
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
                dataset = name,
                ?device,
                %error,
                "dataset does not fit on the device, keeping it in host memory"
            ),
        }
    }
    tracing::debug!(
        dataset = name,
        train = splits.train.len(),
        validation = splits.validation.len(),
        test = splits.test.len(),
        test_source = ?splits.partition.test_source,
        "dataset loaded"
    );
    Ok(splits)
}

type MovedSplits = (Split, Split, Split);

fn move_splits(splits: &DatasetSplits, device: Device) -> Result<MovedSplits, tch::TchError> {
    let move_one = |s: &Split| -> Result<Split, tch::TchError> {
        Ok(Split {
            images: s.images.f_to_device(device)?,
            labels: s.labels.f_to_device(device)?,
        })
    };
    let test = move_one(&splits.test)?;
    // The validation split that is the test split stays one copy on the device too.
    let validation = if splits.partition.validation.is_empty() {
        test.shallow_clone()
    } else {
        move_one(&splits.validation)?
    };
    Ok((move_one(&splits.train)?, validation, test))
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
    let labels = Tensor::f_from_slice(&raw.labels)?;
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
        assert_eq!(splits.test.len(), 4);
        assert_eq!(splits.partition.test_source, TestSource::Files);
        assert!(splits.partition.test.is_empty());

        // Without test_batch.bin, 20 % of the training files are held out as the test split
        // before the validation split is taken: 10 = 2 test + 2 validation + 6 train.
        std::fs::rename(dir.join("test_batch.bin"), dir.join("test_batch.bin.off")).expect("mv");
        let held = load(root.path(), Dataset::Cifar10, Device::Cpu, 0.2, 7).expect("load");
        assert_eq!(
            (held.train.len(), held.validation.len(), held.test.len()),
            (6, 2, 2)
        );
        assert_eq!(held.partition.test_source, TestSource::HeldOut);
        // The test tensors are the records the partition names (data_batch_b's labels are
        // [b, b + 1], so record i has label i / 2 + 1 + i % 2).
        let labels: Vec<i64> = Vec::<i64>::try_from(&held.test.labels).expect("labels");
        let expected: Vec<i64> = held
            .partition
            .test
            .iter()
            .map(|&i| (i / 2 + 1 + i % 2) as i64 % 10)
            .collect();
        assert_eq!(labels, expected);
        std::fs::rename(dir.join("test_batch.bin.off"), dir.join("test_batch.bin")).expect("mv");

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
        assert!(
            matches!(err, DataError::Files(nat_data::DataError::Missing { .. })),
            "{err}"
        );
    }

    fn assert_disjoint_cover(p: &Partition, count: usize) {
        let mut all: Vec<usize> = p
            .train
            .iter()
            .chain(&p.validation)
            .chain(&p.test)
            .copied()
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..count).collect::<Vec<_>>(), "disjoint and covering");
    }

    #[test]
    fn partition_holds_out_a_fixed_test_split_before_the_validation_split() {
        // Without test files: 20 % test (fixed seed), then validation from the rest.
        let a = partition(1797, false, 0.2, 1).expect("digits-sized");
        assert_eq!(a.test_source, TestSource::HeldOut);
        assert_eq!(
            (a.train.len(), a.validation.len(), a.test.len()),
            (1150, 288, 359)
        );
        assert_disjoint_cover(&a, 1797);
        // The test split depends on neither the validation seed nor the fraction.
        let b = partition(1797, false, 0.1, 2).expect("other seed");
        assert_disjoint_cover(&b, 1797);
        assert_eq!(a.test, b.test);
        assert_ne!(a.validation, b.validation);
        assert_eq!(partition(1797, false, 0.2, 1).expect("again"), a);
        // Fraction 0: no validation examples (the validation split is the test split).
        let c = partition(1797, false, 0.0, 1).expect("fraction 0");
        assert!(c.validation.is_empty());
        assert_eq!((c.train.len(), &c.test), (1438, &a.test));
        assert_disjoint_cover(&c, 1797);

        // With test files nothing is held out, and the split is the one of before (a seeded
        // shuffle of all training examples, the last 20 % validation).
        let d = partition(100, true, 0.2, 3).expect("with test files");
        assert_eq!(d.test_source, TestSource::Files);
        assert!(d.test.is_empty());
        let mut order: Vec<usize> = (0..100).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(3));
        assert_eq!((&d.train[..], &d.validation[..]), order.split_at(80));

        for (count, files, fraction) in [(3, false, 0.2), (10, false, 0.95), (10, true, 0.95)] {
            let err = partition(count, files, fraction, 0).expect_err("too few");
            assert!(matches!(err, DataError::InvalidRequest { .. }), "{err}");
        }
    }

    #[test]
    fn missing_dataset_and_bad_fraction_are_typed_errors() {
        let root = tempfile::tempdir().expect("tempdir");
        let err = load(root.path(), Dataset::Mnist, Device::Cpu, 0.1, 0).expect_err("missing");
        assert!(matches!(
            err,
            DataError::Files(nat_data::DataError::Missing { .. })
        ));
        assert!(err.to_string().contains("mnist"), "{err}");
        let err = load(root.path(), Dataset::Mnist, Device::Cpu, 1.5, 0).expect_err("fraction");
        assert!(err.to_string().contains("validation_fraction"), "{err}");
    }
}
