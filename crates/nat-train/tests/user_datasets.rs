//! A user's dataset (the digits exported as PNG image folders) loads into the same splits and
//! tensors, up to normalisation, as the built-in digits.
#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use nat_arch::Dataset;
use nat_train::data::{load, load_named, read_raw, TestSource};
use nat_train::NetworkConfig;
use tch::{Device, Tensor};

/// Exports the digits as `root/NAME/train/<label>/<row>.png` (+ `dataset.toml` when given).
fn export_digits(root: &std::path::Path, name: &str, toml: Option<&str>) -> nat_data::RawImages {
    let (raw, _) = read_raw(&common::data_dir(), Dataset::Digits).expect("digits");
    let classes: Vec<String> = (0..10).map(|c| c.to_string()).collect();
    let dir = root.join(name);
    nat_data::folder::export_png(&dir, Dataset::Digits.shape(), &classes, &raw, None).unwrap();
    if let Some(toml) = toml {
        std::fs::write(dir.join("dataset.toml"), toml).unwrap();
    }
    raw
}

#[test]
fn digits_exported_as_pngs_load_as_the_builtin_digits_up_to_normalisation() {
    let _serial = common::serial();
    let root = tempfile::tempdir().unwrap();
    let raw = export_digits(
        root.path(),
        "my-digits",
        Some("mean = [0.3]\nstd = [0.4]\n"),
    );
    let mine = load_named(root.path(), "my-digits", Device::Cpu, 0.2, 5).unwrap();
    let builtin = load(&common::data_dir(), Dataset::Digits, Device::Cpu, 0.2, 5).unwrap();
    assert_eq!((mine.name.as_str(), mine.builtin), ("my-digits", None));
    assert_eq!(mine.shape, builtin.shape);
    assert_eq!(
        (mine.channels, mine.image_size, mine.num_classes),
        (1, 8, 10)
    );
    assert_eq!(
        (mine.train.len(), mine.validation.len(), mine.test.len()),
        (
            builtin.train.len(),
            builtin.validation.len(),
            builtin.test.len()
        )
    );
    assert_eq!(mine.partition.test_source, TestSource::HeldOut);
    assert_eq!(
        (mine.mean.clone(), mine.std.clone()),
        (vec![0.3], vec![0.4])
    );

    // The folder reads back grouped by class: position p of the folder is row order[p] of the
    // CSV. Each split's tensors are the rows its partition names, scaled 0..=16 → 0..=255 by
    // the export, then normalised with dataset.toml's mean and std.
    let mut order: Vec<usize> = (0..raw.count).collect();
    order.sort_by_key(|&i| (raw.labels[i], i));
    for (split, positions) in [
        (&mine.train, &mine.partition.train),
        (&mine.validation, &mine.partition.validation),
        (&mine.test, &mine.partition.test),
    ] {
        let mut pixels = Vec::new();
        let mut labels = Vec::new();
        for &p in positions {
            let row = order[p];
            labels.push(raw.labels[row]);
            pixels.extend(raw.pixels[row * 64..(row + 1) * 64].iter().map(|&v| {
                let png = (f64::from(v) * 255.0 / 16.0).round();
                ((png / 255.0 - 0.3) / 0.4) as f32
            }));
        }
        let n = positions.len() as i64;
        let expected = Tensor::from_slice(&pixels).view([n, 1, 8, 8]);
        assert!(split.images.allclose(&expected, 1e-5, 1e-5, false));
        assert_eq!(Vec::<i64>::try_from(&split.labels).unwrap(), labels);
    }
    // A network for the dataset's shape is the built-in digits' network.
    assert_eq!(
        NetworkConfig::for_shape(mine.shape, 8, 3, false),
        NetworkConfig::for_dataset(Dataset::Digits, 8, 3, false)
    );
}

#[test]
fn a_test_folder_is_the_test_split_and_statistics_come_from_train() {
    let _serial = common::serial();
    let root = tempfile::tempdir().unwrap();
    export_digits(root.path(), "split-digits", None);
    // Move every fifth image of each class to test/.
    let dir = root.path().join("split-digits");
    let mut moved = 0;
    for class in 0..10 {
        let from = dir.join(format!("train/{class}"));
        let to = dir.join(format!("test/{class}"));
        std::fs::create_dir_all(&to).unwrap();
        let mut files: Vec<_> = std::fs::read_dir(&from)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for file in files.iter().step_by(5) {
            std::fs::rename(file, to.join(file.file_name().unwrap())).unwrap();
            moved += 1;
        }
    }
    let data = load_named(root.path(), "split-digits", Device::Cpu, 0.2, 5).unwrap();
    assert_eq!(data.partition.test_source, TestSource::Files);
    assert_eq!(data.test.len(), moved);
    assert_eq!(
        (data.train.len() + data.validation.len()) as usize,
        1797 - moved as usize
    );
    // Statistics of the train split: its normalised images have mean 0 and std 1.
    let mean = data.train.images.mean(tch::Kind::Float).double_value(&[]);
    let std = data.train.images.std(false).double_value(&[]);
    assert!(
        mean.abs() < 1e-4 && (std - 1.0).abs() < 1e-3,
        "{mean} {std}"
    );

    let err = load_named(root.path(), "absent", Device::Cpu, 0.2, 5).unwrap_err();
    assert!(err.to_string().contains("absent"), "{err}");
}
