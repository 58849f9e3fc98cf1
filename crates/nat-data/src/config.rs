//! `NAME/dataset.toml`: optional settings of a user dataset. Every key is optional; an unknown
//! key is an error that names it.
//!
//! ```toml
//! channels = 1            # 1 (grey) or 3 (RGB); image folders: converts every image to it
//! image_size = 32         # square side; image folders: resizes every image to it
//! classes = 10            # packed files: classifier outputs (default: largest label + 1)
//! mean = [0.1307]         # per channel, of pixels scaled to 0..1 (default: the train split's)
//! std = [0.3081]          # per channel, > 0 (default: the train split's)
//! ```

use std::path::Path;

use serde::Deserialize;

use crate::error::DataError;

/// The file name under a dataset's folder.
pub const CONFIG_FILE: &str = "dataset.toml";

/// Per-channel mean and standard deviation.
pub type Normalization = (Vec<f64>, Vec<f64>);

/// The parsed `dataset.toml` (all keys optional).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    pub channels: Option<u32>,
    pub image_size: Option<u32>,
    pub classes: Option<u32>,
    pub mean: Option<Vec<f64>>,
    pub std: Option<Vec<f64>>,
}

impl DatasetConfig {
    /// Reads `dir/dataset.toml`; a missing file is the empty config. Returns the file's bytes too
    /// (they are part of the decode cache's fingerprint).
    pub fn read(dataset: &str, dir: &Path) -> Result<(DatasetConfig, Vec<u8>), DataError> {
        let path = dir.join(CONFIG_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok((DatasetConfig::default(), Vec::new()))
            }
            Err(error) => return Err(DataError::io(dataset, path, error)),
        };
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| DataError::malformed(dataset, &path, "not valid UTF-8"))?;
        let config: DatasetConfig = toml::from_str(text)
            .map_err(|error| DataError::malformed(dataset, &path, error.message().to_owned()))?;
        config.validate(dataset, &path)?;
        Ok((config, bytes))
    }

    fn validate(&self, dataset: &str, path: &Path) -> Result<(), DataError> {
        let bad = |reason: String| Err(DataError::malformed(dataset, path, reason));
        if let Some(channels) = self.channels {
            if channels != 1 && channels != 3 {
                return bad(format!("channels: must be 1 or 3, got {channels}"));
            }
        }
        if let Some(size) = self.image_size {
            if !(4..=512).contains(&size) {
                return bad(format!("image_size: must be in 4..=512, got {size}"));
            }
        }
        if let Some(classes) = self.classes {
            if !(2..=10_000).contains(&classes) {
                return bad(format!("classes: must be in 2..=10000, got {classes}"));
            }
        }
        for (key, values) in [("mean", &self.mean), ("std", &self.std)] {
            let Some(values) = values else { continue };
            if values.len() != 1 && values.len() != 3 {
                return bad(format!(
                    "{key}: one value per channel (1 or 3), got {}",
                    values.len()
                ));
            }
            if let Some(channels) = self.channels {
                if values.len() != channels as usize {
                    return bad(format!(
                        "{key}: {} values for {channels} channel(s)",
                        values.len()
                    ));
                }
            }
            if values.iter().any(|v| !v.is_finite()) {
                return bad(format!("{key}: values must be finite"));
            }
        }
        if let Some(std) = &self.std {
            if std.iter().any(|&v| v <= 0.0) {
                return bad("std: values must be > 0".to_owned());
            }
        }
        if self.mean.is_some() != self.std.is_some() {
            return bad("mean and std: give both or neither".to_owned());
        }
        Ok(())
    }

    /// The normalisation statistics for `channels` channels, when the file gives them; an error
    /// when their length does not fit the dataset's channels.
    pub fn stats(
        &self,
        dataset: &str,
        dir: &Path,
        channels: u32,
    ) -> Result<Option<Normalization>, DataError> {
        let (Some(mean), Some(std)) = (&self.mean, &self.std) else {
            return Ok(None);
        };
        if mean.len() != channels as usize || std.len() != channels as usize {
            return Err(DataError::malformed(
                dataset,
                dir.join(CONFIG_FILE),
                format!(
                    "mean/std: {} values for a dataset of {channels} channel(s)",
                    mean.len()
                ),
            ));
        }
        Ok(Some((mean.clone(), std.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DatasetConfig, DataError> {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(CONFIG_FILE), text).expect("write");
        DatasetConfig::read("x", dir.path()).map(|(config, _)| config)
    }

    #[test]
    fn keys_parse_and_bad_ones_are_named() {
        let config =
            parse("channels = 3\nimage_size = 16\nmean = [0.5, 0.5, 0.5]\nstd = [0.2, 0.2, 0.2]\n")
                .expect("valid");
        assert_eq!((config.channels, config.image_size), (Some(3), Some(16)));
        let err = parse("chanels = 3\n").expect_err("typo");
        assert!(err.to_string().contains("chanels"), "{err}");
        let err = parse("channels = 2\n").expect_err("2 channels");
        assert!(
            err.to_string().contains("channels: must be 1 or 3"),
            "{err}"
        );
        let err =
            parse("channels = 1\nmean = [0.5, 0.5, 0.5]\nstd = [1, 1, 1]\n").expect_err("len");
        assert!(
            err.to_string().contains("mean: 3 values for 1 channel"),
            "{err}"
        );
        let err = parse("mean = [0.5]\nstd = [0.0]\n").expect_err("zero std");
        assert!(err.to_string().contains("std: values must be > 0"), "{err}");
        let err = parse("image_size = \"big\"\n").expect_err("type");
        assert!(err.to_string().contains("dataset.toml"), "{err}");
        let empty = tempfile::tempdir().expect("tempdir");
        let (none, bytes) = DatasetConfig::read("x", empty.path()).expect("no file");
        assert_eq!((none, bytes.len()), (DatasetConfig::default(), 0));
    }
}
