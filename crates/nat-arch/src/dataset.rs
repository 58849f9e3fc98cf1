//! The datasets the system trains on, and their shapes.

use serde::{Deserialize, Serialize};

/// A dataset known to the system. Names are the wire form (`"fashion-mnist"`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dataset {
    /// scikit-learn's 8×8 digits (UCI optdigits test set), 1,797 grey images, 10 classes.
    Digits,
    /// MNIST, 28×28 grey, 60k train + 10k test.
    Mnist,
    /// Fashion-MNIST, 28×28 grey, 60k train + 10k test.
    FashionMnist,
    /// CIFAR-10, 32×32 RGB, 50k train + 10k test.
    Cifar10,
}

impl Dataset {
    pub const ALL: [Dataset; 4] = [
        Dataset::Digits,
        Dataset::Mnist,
        Dataset::FashionMnist,
        Dataset::Cifar10,
    ];

    /// Wire name, also the folder name under the worker's `--data-dir`.
    pub fn name(self) -> &'static str {
        match self {
            Dataset::Digits => "digits",
            Dataset::Mnist => "mnist",
            Dataset::FashionMnist => "fashion-mnist",
            Dataset::Cifar10 => "cifar10",
        }
    }

    pub fn from_name(name: &str) -> Option<Dataset> {
        Dataset::ALL.iter().copied().find(|d| d.name() == name)
    }

    /// Input channels (1 grey, 3 RGB).
    pub fn channels(self) -> usize {
        match self {
            Dataset::Cifar10 => 3,
            _ => 1,
        }
    }

    /// Square image side in pixels.
    pub fn image_size(self) -> usize {
        match self {
            Dataset::Digits => 8,
            Dataset::Mnist | Dataset::FashionMnist => 28,
            Dataset::Cifar10 => 32,
        }
    }

    pub fn num_classes(self) -> usize {
        10
    }
}

impl std::fmt::Display for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
