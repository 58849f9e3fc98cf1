//! Image folders: `NAME/train/CLASS/*.png|jpg|jpeg` and optionally `NAME/test/CLASS/*`.
//!
//! Classes are the folder names under `train/`, labelled in sorted (byte) order; `test/` may
//! only use those names. Files with other extensions, loose files and deeper folders are
//! ignored (and listed by `check`). Every image is decoded with the `image` crate:
//! - channels: `dataset.toml`'s `channels`, else 1 when every image is grey (no colour type
//!   with colour), else 3; alpha is dropped;
//! - size: `dataset.toml`'s `image_size` (images of another size are resized to it, bilinear),
//!   else the one size every image has, which must be square; images of several sizes without
//!   `image_size` are an error that lists them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{DynamicImage, ImageReader};
use nat_arch::DatasetShape;

use crate::config::DatasetConfig;
use crate::error::DataError;
use crate::raw::RawImages;

/// Extensions (case-insensitive) of the files read as images.
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// One image file found by [`scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderFile {
    pub path: PathBuf,
    /// Size in bytes and modification time (ns since the epoch): the cache fingerprint.
    pub len: u64,
    pub modified_ns: u128,
}

/// One split's folders: class name → its image files (sorted by path).
pub type SplitFiles = BTreeMap<String, Vec<FolderFile>>;

/// What is under an image folder, before anything is decoded.
#[derive(Debug, Clone, Default)]
pub struct FolderScan {
    pub train: SplitFiles,
    /// `None` without a `test/` folder.
    pub test: Option<SplitFiles>,
    /// Files and folders that are not read (other extensions, loose files, deeper folders).
    pub ignored: Vec<PathBuf>,
}

impl FolderScan {
    /// The class names, sorted: label `i` is the `i`-th.
    pub fn classes(&self) -> Vec<String> {
        self.train.keys().cloned().collect()
    }

    /// Test classes with no folder under `train/`.
    pub fn test_only_classes(&self) -> Vec<String> {
        self.test
            .iter()
            .flat_map(|test| test.keys())
            .filter(|class| !self.train.contains_key(*class))
            .cloned()
            .collect()
    }
}

/// The decoded contents of an image folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderData {
    pub classes: Vec<String>,
    pub shape: DatasetShape,
    pub train: RawImages,
    pub test: Option<RawImages>,
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

fn hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

fn sorted_entries(dataset: &str, dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dataset, dir, e))? {
        let entry = entry.map_err(|e| DataError::io(dataset, dir, e))?;
        if !hidden(&entry.path()) {
            entries.push(entry.path());
        }
    }
    entries.sort();
    Ok(entries)
}

fn scan_split(
    dataset: &str,
    split_dir: &Path,
    ignored: &mut Vec<PathBuf>,
) -> Result<SplitFiles, DataError> {
    let mut classes = SplitFiles::new();
    for class_dir in sorted_entries(dataset, split_dir)? {
        if !class_dir.is_dir() {
            ignored.push(class_dir);
            continue;
        }
        let Some(class) = class_dir.file_name().and_then(|n| n.to_str()) else {
            ignored.push(class_dir);
            continue;
        };
        let mut files = Vec::new();
        for path in sorted_entries(dataset, &class_dir)? {
            if !path.is_file() || !is_image(&path) {
                ignored.push(path);
                continue;
            }
            let meta = std::fs::metadata(&path).map_err(|e| DataError::io(dataset, &path, e))?;
            let modified_ns = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            files.push(FolderFile {
                path,
                len: meta.len(),
                modified_ns,
            });
        }
        classes.insert(class.to_owned(), files);
    }
    Ok(classes)
}

/// Lists `dir/train/CLASS/*` and `dir/test/CLASS/*` (nothing is decoded).
pub fn scan(dataset: &str, dir: &Path) -> Result<FolderScan, DataError> {
    let train_dir = dir.join("train");
    if !train_dir.is_dir() {
        return Err(DataError::Missing {
            dataset: dataset.to_owned(),
            path: train_dir,
        });
    }
    let mut ignored = Vec::new();
    let train = scan_split(dataset, &train_dir, &mut ignored)?;
    let test_dir = dir.join("test");
    let test = if test_dir.is_dir() {
        Some(scan_split(dataset, &test_dir, &mut ignored)?)
    } else {
        None
    };
    Ok(FolderScan {
        train,
        test,
        ignored,
    })
}

/// Decodes one image file (its format is guessed from its bytes, not its name).
pub fn decode(path: &Path) -> Result<DynamicImage, String> {
    ImageReader::open(path)
        .map_err(|e| e.to_string())?
        .with_guessed_format()
        .map_err(|e| e.to_string())?
        .decode()
        .map_err(|e| e.to_string())
}

/// Decodes `paths` on all cores, in order.
pub fn decode_all(paths: &[&Path]) -> Vec<Result<DynamicImage, String>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = paths.len().div_ceil(threads).max(16);
    std::thread::scope(|scope| {
        let handles: Vec<_> = paths
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(|p| decode(p)).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| vec![Err("decoder panicked".to_owned())])
            })
            .collect()
    })
}

/// `count × channels × side × side` bytes of `image`, resized when its size differs.
fn to_chw(image: &DynamicImage, channels: u32, side: u32) -> Vec<u8> {
    let resized;
    let image = if image.width() == side && image.height() == side {
        image
    } else {
        resized = image.resize_exact(side, side, FilterType::Triangle);
        &resized
    };
    if channels == 1 {
        return image.to_luma8().into_raw();
    }
    let rgb = image.to_rgb8().into_raw();
    let plane = (side * side) as usize;
    let mut chw = vec![0u8; rgb.len()];
    for (p, pixel) in rgb.chunks_exact(3).enumerate() {
        for (c, &value) in pixel.iter().enumerate() {
            chw[c * plane + p] = value;
        }
    }
    chw
}

/// The files of a scan in decoding order (train classes, then test classes): split is test,
/// label, path.
pub fn labelled_files(scan: &FolderScan) -> Vec<(bool, i64, &Path)> {
    let classes = scan.classes();
    let mut labelled = Vec::new();
    let splits = std::iter::once((false, &scan.train)).chain(scan.test.iter().map(|t| (true, t)));
    for (is_test, split) in splits {
        for (class, files) in split {
            // A test-only class has no label; decode_folder refuses the folder before using it.
            let label = classes
                .iter()
                .position(|c| c == class)
                .map_or(-1, |l| l as i64);
            labelled.extend(files.iter().map(|f| (is_test, label, f.path.as_path())));
        }
    }
    labelled
}

/// Decodes a scanned folder into training (and test) images, as the module docs describe.
pub fn decode_folder(
    dataset: &str,
    dir: &Path,
    config: &DatasetConfig,
    scan: &FolderScan,
) -> Result<FolderData, DataError> {
    let paths: Vec<&Path> = labelled_files(scan).iter().map(|(_, _, p)| *p).collect();
    assemble(dataset, dir, config, scan, decode_all(&paths))
}

/// Builds the dataset from the images of [`labelled_files`] as decoded (one result per file, in
/// that order): checks classes, unreadable files, sizes and `dataset.toml`, then converts.
pub fn assemble(
    dataset: &str,
    dir: &Path,
    config: &DatasetConfig,
    scan: &FolderScan,
    decoded: Vec<Result<DynamicImage, String>>,
) -> Result<FolderData, DataError> {
    let classes = scan.classes();
    let test_only = scan.test_only_classes();
    if !test_only.is_empty() {
        return Err(DataError::malformed(
            dataset,
            dir.join("test"),
            format!(
                "class(es) {} have no folder under train/",
                test_only.join(", ")
            ),
        ));
    }
    if let Some(declared) = config.classes {
        if declared as usize != classes.len() {
            return Err(DataError::malformed(
                dataset,
                dir.join(crate::config::CONFIG_FILE),
                format!(
                    "classes: {declared}, but train/ has {} class folders",
                    classes.len()
                ),
            ));
        }
    }
    let labelled = labelled_files(scan);
    let paths: Vec<&Path> = labelled.iter().map(|(_, _, p)| *p).collect();
    let mut images = Vec::with_capacity(decoded.len());
    let mut unreadable = Vec::new();
    for (result, path) in decoded.into_iter().zip(&paths) {
        match result {
            Ok(image) => images.push(image),
            Err(error) => unreadable.push(format!("{}: {error}", path.display())),
        }
    }
    if !unreadable.is_empty() {
        let shown: Vec<&str> = unreadable.iter().take(5).map(String::as_str).collect();
        return Err(DataError::malformed(
            dataset,
            dir,
            format!(
                "{} unreadable image(s): {}{}",
                unreadable.len(),
                shown.join("; "),
                if unreadable.len() > 5 { "; …" } else { "" }
            ),
        ));
    }
    if scan.train.values().all(Vec::is_empty) {
        return Err(DataError::malformed(dataset, dir.join("train"), "no image"));
    }
    let channels = config
        .channels
        .unwrap_or(if images.iter().any(|i| i.color().has_color()) {
            3
        } else {
            1
        });
    let side = match config.image_size {
        Some(side) => side,
        None => single_square_size(dataset, dir, &images)?,
    };
    let shape = DatasetShape {
        channels,
        image_size: side,
        classes: u32::try_from(classes.len()).unwrap_or(u32::MAX),
    };
    shape
        .validate()
        .map_err(|reason| DataError::malformed(dataset, dir, reason))?;
    let mut train = RawImages::empty();
    let mut test = scan.test.as_ref().map(|_| RawImages::empty());
    for (image, (is_test, label, _)) in images.iter().zip(&labelled) {
        let target = match (is_test, test.as_mut()) {
            (true, Some(test)) => test,
            _ => &mut train,
        };
        target.pixels.extend(to_chw(image, channels, side));
        target.labels.push(*label);
        target.count += 1;
    }
    Ok(FolderData {
        classes,
        shape,
        train,
        // An empty test/ is no test split (a part of train is held out instead).
        test: test.filter(|t| t.count > 0),
    })
}

fn single_square_size(
    dataset: &str,
    dir: &Path,
    images: &[DynamicImage],
) -> Result<u32, DataError> {
    let mut sizes: BTreeMap<(u32, u32), usize> = BTreeMap::new();
    for image in images {
        *sizes.entry((image.width(), image.height())).or_default() += 1;
    }
    match sizes.keys().collect::<Vec<_>>()[..] {
        [&(w, h)] if w == h => Ok(w),
        _ => {
            let seen: Vec<String> = sizes
                .iter()
                .map(|((w, h), n)| format!("{w}x{h} ({n})"))
                .collect();
            Err(DataError::malformed(
                dataset,
                dir,
                format!(
                    "images are not all one square size: {}; set image_size in dataset.toml to resize them",
                    seen.join(", ")
                ),
            ))
        }
    }
}

/// Writes images as an image folder under `dir`: `train/CLASS/NNNNNN.png` (and `test/…`), where
/// `NNNNNN` is the image's position in its split, so that the folder reads back in the same
/// order within each class. Values are scaled from `0..=max_value` to `0..=255` (rounded).
pub fn export_png(
    dir: &Path,
    shape: DatasetShape,
    class_names: &[String],
    train: &RawImages,
    test: Option<&RawImages>,
) -> Result<(), String> {
    let (channels, side) = (shape.channels as usize, shape.image_size);
    let plane = (side * side) as usize;
    let per_image = channels * plane;
    for (split, raw) in std::iter::once(("train", train)).chain(test.map(|t| ("test", t))) {
        let scale = 255.0 / f64::from(raw.max_value.max(1));
        for (index, (pixels, &label)) in raw
            .pixels
            .chunks_exact(per_image)
            .zip(&raw.labels)
            .enumerate()
        {
            let class = usize::try_from(label)
                .ok()
                .and_then(|l| class_names.get(l))
                .ok_or_else(|| format!("{split} image {index}: label {label} has no class name"))?;
            let folder = dir.join(split).join(class);
            std::fs::create_dir_all(&folder).map_err(|e| format!("{}: {e}", folder.display()))?;
            let scaled = |v: u8| (f64::from(v) * scale).round().min(255.0) as u8;
            let path = folder.join(format!("{index:06}.png"));
            let saved = if channels == 1 {
                let bytes: Vec<u8> = pixels.iter().map(|&v| scaled(v)).collect();
                image::GrayImage::from_raw(side, side, bytes).map(|image| image.save(&path))
            } else {
                let mut bytes = Vec::with_capacity(per_image);
                for p in 0..plane {
                    bytes.extend((0..3).map(|c| scaled(pixels[c * plane + p])));
                }
                image::RgbImage::from_raw(side, side, bytes).map(|image| image.save(&path))
            };
            saved
                .ok_or_else(|| format!("{}: wrong buffer size", path.display()))?
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    Ok(())
}
