//! The error of every nat-data call.

use std::path::PathBuf;

/// A dataset could not be found, read or decoded. Each variant names the dataset and, where one
/// is at fault, the file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A required file or folder is not there.
    #[error("dataset {dataset}: {} is missing (expected under the data dir; see docs/DATASETS.md)", path.display())]
    Missing { dataset: String, path: PathBuf },
    /// A file or folder exists but does not have the dataset's format (this includes a bad
    /// `dataset.toml`, images that cannot be decoded and labels out of range).
    #[error("dataset {dataset}: {} is malformed: {reason}", path.display())]
    Malformed {
        dataset: String,
        path: PathBuf,
        reason: String,
    },
    /// Reading a file failed.
    #[error("dataset {dataset}: cannot read {}: {source}", path.display())]
    Io {
        dataset: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The name is not a usable dataset name (`[a-z0-9][a-z0-9._-]{0,63}`).
    #[error("dataset name `{name}` is not usable: {reason}")]
    InvalidName { name: String, reason: String },
}

impl DataError {
    pub(crate) fn malformed(
        dataset: &str,
        path: impl Into<PathBuf>,
        reason: impl Into<String>,
    ) -> Self {
        DataError::Malformed {
            dataset: dataset.to_owned(),
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// A failed read of `path`: [`DataError::Missing`] when it is not there, else
    /// [`DataError::Io`].
    pub(crate) fn io(dataset: &str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            DataError::Missing {
                dataset: dataset.to_owned(),
                path,
            }
        } else {
            DataError::Io {
                dataset: dataset.to_owned(),
                path,
                source,
            }
        }
    }
}
