//! `natctl dataset …`: offline dataset commands. `check PATH` validates a dataset folder (an
//! image folder, a packed npz / safetensors dataset or a built-in layout) before anyone trains on
//! it: counts per class and split, image sizes and colour types, unreadable files, the shape a
//! job gets, warnings and errors. Exit 1 when the folder has errors. See docs/DATASETS.md.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use nat_data::check::{CheckReport, SplitReport};

use crate::output::{render, table, Output};

#[derive(Debug, Subcommand)]
pub enum DatasetCommand {
    /// Check a dataset folder (its name is the dataset's name); exit 1 when it has errors.
    Check {
        /// The dataset's folder, e.g. ./my-digits (holding train/ or train.npz or
        /// train.safetensors).
        path: PathBuf,
    },
}

pub fn run(cmd: DatasetCommand, output: Output) -> anyhow::Result<ExitCode> {
    match cmd {
        DatasetCommand::Check { path } => {
            let report = nat_data::check(&path);
            output.print(&report, check_table)?;
            Ok(if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

/// The human form of a check report.
fn check_table(report: &CheckReport) -> String {
    let mut out = String::new();
    let format = report
        .format
        .map_or("unknown format".to_owned(), |f| f.to_string());
    out.push_str(&format!("dataset  {} ({format})\n", report.name));
    if let Some(shape) = report.shape {
        out.push_str(&format!("shape    {shape}\n"));
    }
    if !report.splits.is_empty() {
        out.push('\n');
        out.push_str(&class_table(report));
        out.push('\n');
        for split in &report.splits {
            let sizes: Vec<String> = split
                .sizes
                .iter()
                .map(|s| format!("{}x{} {} ({})", s.width, s.height, s.mode, s.count))
                .collect();
            let sizes = if sizes.is_empty() {
                "none readable".to_owned()
            } else {
                sizes.join(", ")
            };
            out.push_str(&format!("{} sizes: {sizes}\n", split.split));
        }
    }
    let unreadable: Vec<_> = report.splits.iter().flat_map(|s| &s.unreadable).collect();
    if !unreadable.is_empty() {
        out.push_str(&format!("\nunreadable files ({}):\n", unreadable.len()));
        for file in unreadable {
            out.push_str(&format!("  {}: {}\n", file.path.display(), file.error));
        }
    }
    for (title, lines) in [("warnings", &report.warnings), ("errors", &report.errors)] {
        if !lines.is_empty() {
            out.push_str(&format!("\n{title}:\n"));
            for line in lines {
                out.push_str(&format!("  - {line}\n"));
            }
        }
    }
    out.push_str(if report.ok() {
        "\nok: the dataset can be used\n"
    } else {
        "\nnot usable: fix the errors above\n"
    });
    out
}

/// CLASS / TRAIN / TEST counts, one row a class (classes only in test too), and the totals.
fn class_table(report: &CheckReport) -> String {
    let splits: Vec<&SplitReport> = report.splits.iter().collect();
    let mut header = vec!["CLASS"];
    let upper: Vec<String> = splits.iter().map(|s| s.split.to_uppercase()).collect();
    header.extend(upper.iter().map(String::as_str));
    let mut classes: Vec<String> = report.classes.clone();
    for split in &splits {
        for class in &split.classes {
            if !classes.contains(&class.class) {
                classes.push(class.class.clone());
            }
        }
    }
    let mut t = table(&header);
    for class in &classes {
        let mut row = vec![class.clone()];
        for split in &splits {
            let count = split.classes.iter().find(|c| &c.class == class);
            row.push(count.map_or("-".to_owned(), |c| c.count.to_string()));
        }
        t.add_row(row);
    }
    let mut total = vec!["total".to_owned()];
    total.extend(splits.iter().map(|s| s.examples.to_string()));
    t.add_row(total);
    let right: Vec<usize> = (1..=splits.len()).collect();
    render(t, &right)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_counts_unreadable_files_and_the_verdict() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("tiny");
        for (class, value) in [("cat", 10u8), ("dog", 200)] {
            std::fs::create_dir_all(dir.join("train").join(class)).expect("mkdir");
            for i in 0..3 {
                let image = image_bytes(value + i);
                std::fs::write(dir.join(format!("train/{class}/{i}.png")), image).expect("png");
            }
        }
        let good = nat_data::check(&dir);
        assert!(good.ok(), "{:?}", good.errors);
        let text = check_table(&good);
        assert!(text.contains("tiny (image-folder)"), "{text}");
        assert!(text.contains("1x4x4, 2 classes"), "{text}");
        assert!(text.contains("cat") && text.contains("total"), "{text}");
        assert!(text.contains("ok: the dataset can be used"), "{text}");

        std::fs::write(dir.join("train/dog/broken.png"), b"not a png").expect("write");
        let bad = nat_data::check(&dir);
        assert!(!bad.ok());
        let text = check_table(&bad);
        assert!(
            text.contains("unreadable files (1)") && text.contains("broken.png"),
            "{text}"
        );
        assert!(text.contains("not usable"), "{text}");
        let json = serde_json::to_value(&bad).expect("json");
        assert_eq!(json["splits"][0]["classes"][1]["count"], 3);
        assert_eq!(json["format"], "image-folder");
    }

    /// A 4×4 grey PNG of one value (written by nat-data's exporter).
    fn image_bytes(value: u8) -> Vec<u8> {
        let dir = tempfile::tempdir().expect("tempdir");
        let raw = nat_data::RawImages {
            pixels: vec![value; 16],
            labels: vec![0],
            count: 1,
            max_value: 255,
        };
        let shape = nat_arch::DatasetShape {
            channels: 1,
            image_size: 4,
            classes: 2,
        };
        nat_data::folder::export_png(dir.path(), shape, &["a".to_owned()], &raw, None)
            .expect("export");
        std::fs::read(dir.path().join("train/a/000000.png")).expect("read")
    }
}
