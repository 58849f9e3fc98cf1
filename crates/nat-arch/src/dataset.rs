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

    /// The input shape of this built-in dataset.
    pub fn shape(self) -> DatasetShape {
        DatasetShape {
            channels: self.channels() as u32,
            image_size: self.image_size() as u32,
            classes: self.num_classes() as u32,
        }
    }
}

/// What a network built for a dataset needs to know about it: input channels, square image side
/// and classes. Built-in datasets have theirs ([`Dataset::shape`]); a user's own dataset (an image
/// folder or a packed file under the worker's data dir) has the one its files show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DatasetShape {
    /// Input channels: 1 (grey) or 3 (RGB).
    pub channels: u32,
    /// Square image side in pixels, 4..=512.
    pub image_size: u32,
    /// Classes, 2..=10_000.
    pub classes: u32,
}

impl DatasetShape {
    /// Checks the shape; the error names the field (`channels`, `image_size`, `classes`).
    pub fn validate(&self) -> Result<(), String> {
        if self.channels != 1 && self.channels != 3 {
            return Err(format!("channels: must be 1 or 3, got {}", self.channels));
        }
        if !(4..=512).contains(&self.image_size) {
            return Err(format!(
                "image_size: must be in 4..=512, got {}",
                self.image_size
            ));
        }
        if !(2..=10_000).contains(&self.classes) {
            return Err(format!(
                "classes: must be in 2..=10000, got {}",
                self.classes
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for DatasetShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}x{}x{}, {} classes",
            self.channels, self.image_size, self.image_size, self.classes
        )
    }
}

impl std::fmt::Display for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
