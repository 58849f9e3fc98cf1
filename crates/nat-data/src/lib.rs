//! nat-data: finds, checks and decodes the datasets under a worker's data dir, without
//! libtorch (natctl uses it too). See docs/DATASETS.md for the user's side.
//!
//! # Layout
//! - [`builtin`]: the four built-in layouts (`digits/`, `mnist/`, `fashion-mnist/`, `cifar10/`)
//!   and their parsers; these names are reserved for them.
//! - [`folder`]: image folders, `NAME/train/CLASS/*.png|jpg` and `NAME/test/CLASS/*`, decoded
//!   with the `image` crate; [`cache`]: their decode cache under `NAME/.nat-cache/`.
//! - [`packed`]: `train.npz`/`test.npz` and `train.safetensors`/`test.safetensors`.
//! - [`config`]: the optional `NAME/dataset.toml` (`channels`, `image_size`, `classes`, `mean`,
//!   `std`).
//! - [`check`]: the report of `natctl dataset check PATH`.
//! - this module: [`load`] one dataset by name, [`list`] every dataset of a data dir with its
//!   [`DatasetInfo`].
//!
//! Every image comes out as [`RawImages`]: bytes in CHW order per image, labels `0..classes`;
//! normalising them is the trainer's job (nat-train).

pub mod builtin;
pub mod cache;
pub mod check;
pub mod config;
pub mod error;
pub mod folder;
pub mod packed;
pub mod raw;

use std::path::{Path, PathBuf};

use nat_arch::{Dataset, DatasetShape};
use serde::Serialize;

pub use check::{check, CheckReport};
pub use config::DatasetConfig;
pub use error::DataError;
pub use raw::RawImages;

/// How a dataset is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// One of the four built-in layouts.
    Builtin,
    /// `train/CLASS/*` (+ `test/CLASS/*`) image files.
    ImageFolder,
    /// `train.npz` (+ `test.npz`).
    Npz,
    /// `train.safetensors` (+ `test.safetensors`).
    Safetensors,
}

impl Format {
    /// The wire name (`DatasetInfo.format`): `builtin`, `image-folder`, `npz`, `safetensors`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Builtin => "builtin",
            Format::ImageFolder => "image-folder",
            Format::Npz => "npz",
            Format::Safetensors => "safetensors",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a worker reports about one of its datasets (`nat.v1.DatasetInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatasetInfo {
    pub name: String,
    pub shape: DatasetShape,
    pub train_examples: u64,
    /// 0 when the dataset has no test files (a fixed part of train is held out as test).
    pub test_examples: u64,
    pub format: Format,
}

/// A dataset decoded into bytes.
#[derive(Debug, Clone)]
pub struct LoadedDataset {
    pub name: String,
    pub format: Format,
    /// Which built-in dataset, for [`Format::Builtin`].
    pub builtin: Option<Dataset>,
    pub shape: DatasetShape,
    /// Label `i`'s name (the class folder's name; `"0"`, `"1"`, … otherwise).
    pub class_names: Vec<String>,
    pub train: RawImages,
    /// The test files' images; `None` without test files.
    pub test: Option<RawImages>,
    /// `dataset.toml`'s per-channel mean and std, when it gives them.
    pub normalization: Option<config::Normalization>,
}

impl LoadedDataset {
    /// Its [`DatasetInfo`].
    pub fn info(&self) -> DatasetInfo {
        DatasetInfo {
            name: self.name.clone(),
            shape: self.shape,
            train_examples: self.train.count as u64,
            test_examples: self.test.as_ref().map_or(0, |t| t.count as u64),
            format: self.format,
        }
    }
}

/// Checks a dataset name: `[a-z0-9][a-z0-9._-]{0,63}`.
pub fn validate_name(name: &str) -> Result<(), DataError> {
    let invalid = |reason: &str| DataError::InvalidName {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    let mut chars = name.chars();
    match chars.next() {
        None => return Err(invalid("empty")),
        Some(c) if !(c.is_ascii_lowercase() || c.is_ascii_digit()) => {
            return Err(invalid("must start with a-z or 0-9"))
        }
        Some(_) => {}
    }
    if name.len() > 64 {
        return Err(invalid("longer than 64 characters"));
    }
    if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
    {
        return Err(invalid("only a-z 0-9 . _ - are allowed"));
    }
    Ok(())
}

/// How the dataset folder `dir` (named `name`) is stored: a built-in name is always
/// [`Format::Builtin`]; otherwise exactly one of `train.npz`, `train.safetensors` and `train/`
/// must be there.
pub fn detect(name: &str, dir: &Path) -> Result<Format, DataError> {
    if Dataset::from_name(name).is_some() {
        return Ok(Format::Builtin);
    }
    let found: Vec<Format> = [
        (dir.join("train.npz").is_file(), Format::Npz),
        (dir.join("train.safetensors").is_file(), Format::Safetensors),
        (dir.join("train").is_dir(), Format::ImageFolder),
    ]
    .into_iter()
    .filter_map(|(present, format)| present.then_some(format))
    .collect();
    match found[..] {
        [format] => Ok(format),
        [] => Err(DataError::Missing {
            dataset: name.to_owned(),
            path: dir.join("train[/ | .npz | .safetensors]"),
        }),
        _ => Err(DataError::malformed(
            name,
            dir,
            "more than one of train/, train.npz and train.safetensors; keep one",
        )),
    }
}

/// Loads the dataset `name` from `data_dir/name`.
pub fn load(data_dir: &Path, name: &str) -> Result<LoadedDataset, DataError> {
    validate_name(name)?;
    load_dir(name, &data_dir.join(name))
}

/// Loads the dataset in `dir` under the name `name` (for a built-in name, `dir`'s parent is the
/// data dir).
pub fn load_dir(name: &str, dir: &Path) -> Result<LoadedDataset, DataError> {
    if !dir.is_dir() {
        return Err(DataError::Missing {
            dataset: name.to_owned(),
            path: dir.to_path_buf(),
        });
    }
    let format = detect(name, dir)?;
    if let Some(dataset) = Dataset::from_name(name) {
        let data_dir = dir.parent().unwrap_or(Path::new("."));
        let (train, test) = builtin::read_builtin(data_dir, dataset)?;
        let shape = dataset.shape();
        let per_image = (shape.channels * shape.image_size * shape.image_size) as usize;
        for raw in std::iter::once(&train).chain(&test) {
            raw.check(name, dir, per_image, shape.classes as usize)?;
        }
        return Ok(LoadedDataset {
            name: name.to_owned(),
            format,
            builtin: Some(dataset),
            shape,
            class_names: (0..shape.classes).map(|c| c.to_string()).collect(),
            train,
            test,
            normalization: None,
        });
    }
    let (config, config_bytes) = DatasetConfig::read(name, dir)?;
    let (class_names, shape, train, test) = match format {
        Format::ImageFolder => {
            let data = load_folder(name, dir, &config, &config_bytes)?;
            (data.classes, data.shape, data.train, data.test)
        }
        Format::Npz | Format::Safetensors => load_packed(name, dir, format, &config)?,
        Format::Builtin => return Err(DataError::malformed(name, dir, "not a built-in dataset")),
    };
    let normalization = config.stats(name, dir, shape.channels)?;
    Ok(LoadedDataset {
        name: name.to_owned(),
        format,
        builtin: None,
        shape,
        class_names,
        train,
        test,
        normalization,
    })
}

/// An image folder, from its cache when the cache is fresh.
fn load_folder(
    name: &str,
    dir: &Path,
    config: &DatasetConfig,
    config_bytes: &[u8],
) -> Result<folder::FolderData, DataError> {
    let scan = folder::scan(name, dir)?;
    let fingerprint = cache::fingerprint(dir, &scan, config_bytes);
    match cache::read(dir, &fingerprint) {
        Ok(data) => {
            tracing::debug!(dataset = name, "image folder read from its decode cache");
            return Ok(data);
        }
        Err(cache::CacheMiss::Absent) => {}
        Err(cache::CacheMiss::Stale) => {
            tracing::info!(dataset = name, "image folder changed, decoding it again");
        }
        Err(cache::CacheMiss::Corrupt(reason)) => {
            tracing::warn!(dataset = name, %reason, "ignoring an unreadable decode cache");
        }
    }
    let started = std::time::Instant::now();
    let data = folder::decode_folder(name, dir, config, &scan)?;
    tracing::info!(
        dataset = name,
        images = data.train.count + data.test.as_ref().map_or(0, |t| t.count),
        seconds = started.elapsed().as_secs_f64(),
        "image folder decoded"
    );
    if let Err(error) = cache::write(dir, &fingerprint, &data) {
        tracing::warn!(dataset = name, %error, "cannot write the decode cache");
    }
    Ok(data)
}

type PackedSplits = (Vec<String>, DatasetShape, RawImages, Option<RawImages>);

fn load_packed(
    name: &str,
    dir: &Path,
    format: Format,
    config: &DatasetConfig,
) -> Result<PackedSplits, DataError> {
    type Reader = fn(&str, &Path) -> Result<packed::Packed, DataError>;
    let (extension, read): (&str, Reader) = match format {
        Format::Npz => ("npz", packed::read_npz),
        _ => ("safetensors", packed::read_safetensors),
    };
    let train_path = dir.join(format!("train.{extension}"));
    let test_path = dir.join(format!("test.{extension}"));
    let train = read(name, &train_path)?;
    let test = if test_path.is_file() {
        Some(read(name, &test_path)?)
    } else {
        None
    };
    let (channels, side) = (train.channels, train.side);
    if let Some(test) = &test {
        if (test.channels, test.side) != (channels, side) {
            return Err(DataError::malformed(
                name,
                &test_path,
                format!(
                    "images are {}x{}x{}, train's are {channels}x{side}x{side}",
                    test.channels, test.side, test.side
                ),
            ));
        }
    }
    let config_path = dir.join(config::CONFIG_FILE);
    let mismatch = |key: &str, declared: u32, actual: usize| {
        DataError::malformed(
            name,
            &config_path,
            format!("{key}: {declared}, but the {extension} images have {actual}"),
        )
    };
    if let Some(declared) = config.channels.filter(|&c| c as usize != channels) {
        return Err(mismatch("channels", declared, channels));
    }
    if let Some(declared) = config.image_size.filter(|&s| s as usize != side) {
        return Err(mismatch("image_size", declared, side));
    }
    let largest = train
        .labels
        .iter()
        .chain(test.iter().flat_map(|t| &t.labels))
        .copied()
        .max()
        .unwrap_or(0);
    let classes = match config.classes {
        Some(classes) => classes,
        None => u32::try_from(largest + 1).unwrap_or(u32::MAX),
    };
    let shape = DatasetShape {
        channels: u32::try_from(channels).unwrap_or(u32::MAX),
        image_size: u32::try_from(side).unwrap_or(u32::MAX),
        classes,
    };
    shape
        .validate()
        .map_err(|reason| DataError::malformed(name, dir, reason))?;
    let train = train.into_raw();
    let test = test.map(packed::Packed::into_raw);
    let per_image = channels * side * side;
    train.check(name, &train_path, per_image, classes as usize)?;
    if let Some(test) = &test {
        test.check(name, &test_path, per_image, classes as usize)?;
    }
    let class_names = (0..classes).map(|c| c.to_string()).collect();
    Ok((class_names, shape, train, test))
}

/// The [`DatasetInfo`] of the dataset `name` under `data_dir`: a built-in one from its file
/// sizes and headers, any other by loading it (an image folder once, then from its cache).
pub fn info(data_dir: &Path, name: &str) -> Result<DatasetInfo, DataError> {
    validate_name(name)?;
    if let Some(dataset) = Dataset::from_name(name) {
        let (train_examples, test_examples) = builtin::builtin_counts(data_dir, dataset)?;
        return Ok(DatasetInfo {
            name: name.to_owned(),
            shape: dataset.shape(),
            train_examples,
            test_examples,
            format: Format::Builtin,
        });
    }
    load(data_dir, name).map(|loaded| loaded.info())
}

/// A folder of the data dir that is not a usable dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unusable {
    pub path: PathBuf,
    pub reason: String,
}

/// Every dataset of a data dir.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Listing {
    /// Sorted by name.
    pub datasets: Vec<DatasetInfo>,
    /// Folders skipped: a name that is not `[a-z0-9][a-z0-9._-]{0,63}`, or a dataset that
    /// cannot be read (the reason).
    pub unusable: Vec<Unusable>,
}

/// Lists the datasets under `data_dir` (every sub-folder; hidden ones are skipped silently, the
/// others that are not usable are in [`Listing::unusable`] and logged).
pub fn list(data_dir: &Path) -> Listing {
    let mut listing = Listing::default();
    let entries = match std::fs::read_dir(data_dir) {
        Ok(entries) => entries,
        Err(error) => {
            tracing::warn!(data_dir = %data_dir.display(), %error, "cannot list the data dir");
            return listing;
        }
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if name.starts_with('.') {
            continue;
        }
        match info(data_dir, &name) {
            Ok(found) => listing.datasets.push(found),
            Err(error) => {
                tracing::warn!(path = %dir.display(), %error, "skipping a folder of the data dir");
                listing.unusable.push(Unusable {
                    path: dir,
                    reason: error.to_string(),
                });
            }
        }
    }
    listing
}
