//! `natctl dataset check PATH`: what a dataset folder holds and what is wrong with it, before
//! anyone trains on it. Nothing is written (an image folder is decoded without its cache).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nat_arch::DatasetShape;
use serde::Serialize;

use crate::config::DatasetConfig;
use crate::folder::{self, FolderScan};
use crate::{detect, load_dir, validate_name, Format, RawImages};

/// Classes with fewer training examples than this get a warning.
pub const TINY_CLASS: u64 = 5;

/// The report of [`check`] (also its JSON form).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CheckReport {
    pub path: PathBuf,
    /// The folder's name: the dataset's name once it is under a data dir.
    pub name: String,
    pub format: Option<Format>,
    /// The shape a job trains on (when the folder can be loaded).
    pub shape: Option<DatasetShape>,
    /// Label `i`'s name.
    pub classes: Vec<String>,
    /// `train`, then `test` when there is one.
    pub splits: Vec<SplitReport>,
    /// Files and folders that are not read.
    pub ignored: Vec<PathBuf>,
    pub warnings: Vec<String>,
    /// Anything that keeps the dataset from being used; empty when it can be.
    pub errors: Vec<String>,
}

impl CheckReport {
    /// True when the dataset can be used.
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// One split of a [`CheckReport`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SplitReport {
    pub split: String,
    pub examples: u64,
    pub classes: Vec<ClassCount>,
    /// Image sizes and colour types as stored, with their counts.
    pub sizes: Vec<SizeCount>,
    pub unreadable: Vec<Unreadable>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClassCount {
    pub class: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SizeCount {
    pub width: u32,
    pub height: u32,
    /// The colour type as stored (`L8`, `Rgb8`, `Rgba8`, … for image files; `grey` or `rgb`
    /// for the other formats).
    pub mode: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unreadable {
    pub path: PathBuf,
    pub error: String,
}

/// Checks the dataset folder at `path` (its name must be a usable dataset name too).
pub fn check(path: &Path) -> CheckReport {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    let mut report = CheckReport {
        path: path.to_path_buf(),
        name: name.clone(),
        ..CheckReport::default()
    };
    if let Err(error) = validate_name(&name) {
        report.errors.push(format!(
            "{error}: rename the folder before putting it under a worker's data dir"
        ));
    }
    if !path.is_dir() {
        report
            .errors
            .push(format!("{} is not a folder", path.display()));
        return report;
    }
    let format = match detect(&name, path) {
        Ok(format) => format,
        Err(error) => {
            report.errors.push(error.to_string());
            return report;
        }
    };
    report.format = Some(format);
    if format == Format::ImageFolder {
        check_folder(&name, path, &mut report);
    } else {
        match load_dir(&name, path) {
            Ok(loaded) => {
                report.shape = Some(loaded.shape);
                report.classes = loaded.class_names.clone();
                let splits = std::iter::once(("train", &loaded.train))
                    .chain(loaded.test.iter().map(|t| ("test", t)));
                for (split, raw) in splits {
                    report
                        .splits
                        .push(raw_split(split, raw, loaded.shape, &loaded.class_names));
                }
            }
            Err(error) => report.errors.push(error.to_string()),
        }
    }
    add_warnings(&mut report);
    report
}

fn raw_split(split: &str, raw: &RawImages, shape: DatasetShape, names: &[String]) -> SplitReport {
    let counts = raw.class_counts(names.len());
    SplitReport {
        split: split.to_owned(),
        examples: raw.count as u64,
        classes: names
            .iter()
            .zip(counts)
            .map(|(class, count)| ClassCount {
                class: class.clone(),
                count,
            })
            .collect(),
        sizes: vec![SizeCount {
            width: shape.image_size,
            height: shape.image_size,
            mode: if shape.channels == 1 { "grey" } else { "rgb" }.to_owned(),
            count: raw.count as u64,
        }],
        unreadable: Vec::new(),
    }
}

fn check_folder(name: &str, dir: &Path, report: &mut CheckReport) {
    let (config, _) = match DatasetConfig::read(name, dir) {
        Ok(config) => config,
        Err(error) => {
            report.errors.push(error.to_string());
            (DatasetConfig::default(), Vec::new())
        }
    };
    let scan: FolderScan = match folder::scan(name, dir) {
        Ok(scan) => scan,
        Err(error) => {
            report.errors.push(error.to_string());
            return;
        }
    };
    report.ignored = scan.ignored.clone();
    let labelled = folder::labelled_files(&scan);
    let paths: Vec<&Path> = labelled.iter().map(|(_, _, p)| *p).collect();
    let decoded = folder::decode_all(&paths);
    let mut results = decoded.iter().zip(&paths);
    let splits =
        std::iter::once(("train", &scan.train)).chain(scan.test.iter().map(|t| ("test", t)));
    for (split, classes) in splits {
        let mut out = SplitReport {
            split: split.to_owned(),
            ..SplitReport::default()
        };
        let mut sizes: BTreeMap<(u32, u32, String), u64> = BTreeMap::new();
        for (class, files) in classes {
            let mut readable = 0;
            for (result, path) in results.by_ref().take(files.len()) {
                match result {
                    Ok(image) => {
                        readable += 1;
                        let mode = format!("{:?}", image.color());
                        *sizes
                            .entry((image.width(), image.height(), mode))
                            .or_default() += 1;
                    }
                    Err(error) => out.unreadable.push(Unreadable {
                        path: path.to_path_buf(),
                        error: error.clone(),
                    }),
                }
            }
            out.examples += readable;
            out.classes.push(ClassCount {
                class: class.clone(),
                count: readable,
            });
        }
        out.sizes = sizes
            .into_iter()
            .map(|((width, height, mode), count)| SizeCount {
                width,
                height,
                mode,
                count,
            })
            .collect();
        report.splits.push(out);
    }
    report.classes = scan.classes();
    match folder::assemble(name, dir, &config, &scan, decoded) {
        Ok(data) => report.shape = Some(data.shape),
        Err(error) => report.errors.push(error.to_string()),
    }
    if scan
        .test
        .as_ref()
        .is_some_and(|t| t.values().all(Vec::is_empty))
    {
        report.warnings.push(
            "test/ holds no image: a fixed 20 % of train is held out as the test split".into(),
        );
    }
}

fn add_warnings(report: &mut CheckReport) {
    let mut warnings = Vec::new();
    if let Some(train) = report.splits.iter().find(|s| s.split == "train") {
        for class in &train.classes {
            if class.count == 0 {
                warnings.push(format!("class {}: no training image", class.class));
            } else if class.count < TINY_CLASS {
                warnings.push(format!(
                    "class {}: only {} training image(s)",
                    class.class, class.count
                ));
            }
        }
    }
    match report.splits.iter().find(|s| s.split == "test") {
        Some(test) => {
            for class in &test.classes {
                if !report.classes.contains(&class.class) {
                    // Reported as an error by the loader; name it here too.
                    warnings.push(format!("class {}: only in test/", class.class));
                } else if class.count == 0 {
                    warnings.push(format!("class {}: no test image", class.class));
                }
            }
            for class in &report.classes {
                if !test.classes.iter().any(|c| &c.class == class) {
                    warnings.push(format!("class {class}: no test image"));
                }
            }
        }
        None if report.format.is_some() && report.format != Some(Format::Builtin) => {
            warnings.push(
                "no test files: a fixed 20 % of the training images is held out as the test split"
                    .to_owned(),
            );
        }
        None => {}
    }
    if !report.ignored.is_empty() {
        warnings.push(format!(
            "{} file(s) or folder(s) ignored (not .png/.jpg/.jpeg under CLASS/)",
            report.ignored.len()
        ));
    }
    report.warnings.splice(0..0, warnings);
}
