//! Decoded images as bytes, before any normalisation.

use std::path::Path;

use crate::error::DataError;

/// Images as stored: `count` images of `channels × side × side` bytes (CHW, row-major), labels
/// `0..classes`, and the value that maps to 1.0 (255 for 8-bit images, 16 for the digits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawImages {
    pub pixels: Vec<u8>,
    pub labels: Vec<i64>,
    pub count: usize,
    pub max_value: u8,
}

impl RawImages {
    /// No image yet, 8-bit values.
    pub fn empty() -> Self {
        RawImages {
            pixels: Vec::new(),
            labels: Vec::new(),
            count: 0,
            max_value: 255,
        }
    }

    /// Checks that pixels and labels fit `count` images of `per_image` bytes and that every label
    /// is below `classes`; `path` and `dataset` only name the source in the error.
    pub fn check(
        &self,
        dataset: &str,
        path: &Path,
        per_image: usize,
        classes: usize,
    ) -> Result<(), DataError> {
        if Some(self.pixels.len()) != self.count.checked_mul(per_image)
            || self.labels.len() != self.count
        {
            return Err(DataError::malformed(
                dataset,
                path,
                format!(
                    "{} pixel bytes and {} labels for {} images of {per_image} bytes",
                    self.pixels.len(),
                    self.labels.len(),
                    self.count
                ),
            ));
        }
        let bad = self
            .labels
            .iter()
            .enumerate()
            .find(|(_, &label)| usize::try_from(label).map_or(true, |l| l >= classes));
        if let Some((index, label)) = bad {
            return Err(DataError::malformed(
                dataset,
                path,
                format!("label {index} is {label} (expected 0..{classes})"),
            ));
        }
        Ok(())
    }

    /// Examples per label, `classes` long (labels must have passed [`RawImages::check`]).
    pub fn class_counts(&self, classes: usize) -> Vec<u64> {
        let mut counts = vec![0u64; classes];
        for &label in &self.labels {
            if let Some(slot) = usize::try_from(label).ok().and_then(|l| counts.get_mut(l)) {
                *slot += 1;
            }
        }
        counts
    }
}
