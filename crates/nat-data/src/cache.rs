//! The decode cache of an image folder: `NAME/.nat-cache/image-folder.safetensors` holds the
//! decoded images (`train_images` U8 `N×C×S×S`, `train_labels` I64, the same for `test_`) and,
//! in its metadata, the class names and a fingerprint of what they were decoded from (every
//! image's path, size and modification time, and `dataset.toml`'s bytes). A cache whose
//! fingerprint differs is stale and rebuilt; one that cannot be read is ignored and rebuilt; one
//! that cannot be written (a read-only data dir) is skipped with a warning.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use nat_arch::DatasetShape;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};

use crate::folder::{FolderData, FolderScan};
use crate::raw::RawImages;

/// The cache folder under a dataset's folder.
pub const CACHE_DIR: &str = ".nat-cache";
/// The cache file in [`CACHE_DIR`].
pub const CACHE_FILE: &str = "image-folder.safetensors";
/// Changes when the decoding rules change, so that older caches are rebuilt.
const CACHE_VERSION: &str = "nat-data image-folder v1";

/// The cache file of the dataset in `dir`.
pub fn cache_path(dir: &Path) -> PathBuf {
    dir.join(CACHE_DIR).join(CACHE_FILE)
}

/// Hex SHA-256 of the scanned files (relative path, size, modification time) and the config.
pub fn fingerprint(dir: &Path, scan: &FolderScan, config_bytes: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(CACHE_VERSION.as_bytes());
    hash.update(b"\0");
    hash.update(config_bytes);
    let splits =
        std::iter::once(("train", &scan.train)).chain(scan.test.iter().map(|t| ("test", t)));
    for (split, classes) in splits {
        for (class, files) in classes {
            hash.update(format!("\0{split}\0{class}\0").as_bytes());
            for file in files {
                let relative = file.path.strip_prefix(dir).unwrap_or(&file.path);
                hash.update(
                    format!(
                        "{}\0{}\0{}\n",
                        relative.display(),
                        file.len,
                        file.modified_ns
                    )
                    .as_bytes(),
                );
            }
        }
    }
    hex::encode(hash.finalize())
}

/// Why a cache was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheMiss {
    /// No cache file.
    Absent,
    /// Written from other files or settings.
    Stale,
    /// Not a readable cache (the reason).
    Corrupt(String),
}

/// The cached data of `dir` when its fingerprint is `fingerprint`.
pub fn read(dir: &Path, fingerprint: &str) -> Result<FolderData, CacheMiss> {
    let bytes = match std::fs::read(cache_path(dir)) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(CacheMiss::Absent)
        }
        Err(error) => return Err(CacheMiss::Corrupt(error.to_string())),
    };
    let corrupt = |reason: &str| CacheMiss::Corrupt(reason.to_owned());
    let (_, metadata) =
        SafeTensors::read_metadata(&bytes).map_err(|e| CacheMiss::Corrupt(e.to_string()))?;
    let info = metadata.metadata().clone().unwrap_or_default();
    if info.get("fingerprint").map(String::as_str) != Some(fingerprint) {
        return Err(CacheMiss::Stale);
    }
    let tensors =
        SafeTensors::deserialize(&bytes).map_err(|e| CacheMiss::Corrupt(e.to_string()))?;
    let classes: Vec<String> = info
        .get("classes")
        .and_then(|c| serde_json::from_str(c).ok())
        .ok_or_else(|| corrupt("no class list"))?;
    let split = |prefix: &str| -> Result<Option<(RawImages, [usize; 2])>, CacheMiss> {
        let Ok(images) = tensors.tensor(&format!("{prefix}_images")) else {
            return Ok(None);
        };
        let labels = tensors
            .tensor(&format!("{prefix}_labels"))
            .map_err(|_| corrupt("images without labels"))?;
        let (&[count, channels, side, side2], Dtype::U8, Dtype::I64) =
            (images.shape(), images.dtype(), labels.dtype())
        else {
            return Err(corrupt("unexpected tensor shapes or types"));
        };
        if side != side2 || labels.shape() != [count] {
            return Err(corrupt("unexpected tensor shapes"));
        }
        let raw = RawImages {
            pixels: images.data().to_vec(),
            labels: labels
                .data()
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                .collect(),
            count,
            max_value: 255,
        };
        Ok(Some((raw, [channels, side])))
    };
    let (train, [channels, side]) = split("train")?.ok_or_else(|| corrupt("no train images"))?;
    let test = split("test")?;
    if test
        .as_ref()
        .is_some_and(|(_, dims)| *dims != [channels, side])
    {
        return Err(corrupt("train and test shapes differ"));
    }
    let shape = DatasetShape {
        channels: u32::try_from(channels).map_err(|_| corrupt("channels"))?,
        image_size: u32::try_from(side).map_err(|_| corrupt("side"))?,
        classes: u32::try_from(classes.len()).map_err(|_| corrupt("classes"))?,
    };
    let per_image = channels * side * side;
    for raw in std::iter::once(&train).chain(test.as_ref().map(|(t, _)| t)) {
        raw.check("cache", &cache_path(dir), per_image, classes.len())
            .map_err(|e| CacheMiss::Corrupt(e.to_string()))?;
    }
    Ok(FolderData {
        classes,
        shape,
        train,
        test: test.map(|(t, _)| t),
    })
}

/// Writes the cache of `dir` (atomically: a temporary file renamed over the old one).
pub fn write(dir: &Path, fingerprint: &str, data: &FolderData) -> Result<(), String> {
    let (c, s) = (data.shape.channels as usize, data.shape.image_size as usize);
    let mut label_bytes = Vec::new();
    for raw in std::iter::once(&data.train).chain(&data.test) {
        label_bytes.push(
            raw.labels
                .iter()
                .flat_map(|l| l.to_le_bytes())
                .collect::<Vec<u8>>(),
        );
    }
    let mut views = Vec::new();
    for ((prefix, raw), labels) in std::iter::once(("train", &data.train))
        .chain(data.test.iter().map(|t| ("test", t)))
        .zip(&label_bytes)
    {
        let images = TensorView::new(Dtype::U8, vec![raw.count, c, s, s], &raw.pixels)
            .map_err(|e| e.to_string())?;
        let labels =
            TensorView::new(Dtype::I64, vec![raw.count], labels).map_err(|e| e.to_string())?;
        views.push((format!("{prefix}_images"), images));
        views.push((format!("{prefix}_labels"), labels));
    }
    let metadata = HashMap::from([
        ("fingerprint".to_owned(), fingerprint.to_owned()),
        (
            "classes".to_owned(),
            serde_json::to_string(&data.classes).map_err(|e| e.to_string())?,
        ),
    ]);
    let bytes = safetensors::serialize(views, Some(metadata)).map_err(|e| e.to_string())?;
    let path = cache_path(dir);
    let folder = dir.join(CACHE_DIR);
    std::fs::create_dir_all(&folder).map_err(|e| format!("{}: {e}", folder.display()))?;
    let temporary = folder.join(format!("{CACHE_FILE}.tmp-{}", std::process::id()));
    std::fs::write(&temporary, bytes).map_err(|e| format!("{}: {e}", temporary.display()))?;
    std::fs::rename(&temporary, &path).map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        format!("{}: {e}", path.display())
    })
}
