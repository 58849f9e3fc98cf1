//! nat-data on dataset folders the tests write: image folders (PNG and JPEG, grey and RGB), an
//! unreadable file, a class only in test, packed npz / safetensors files, the decode cache.
#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::io::Write;
use std::path::Path;

use image::{GrayImage, RgbImage};
use nat_arch::DatasetShape;
use nat_data::{cache, check, list, load, packed, DataError, Format};

/// A grey image whose pixels are `seed + i`.
fn grey(side: u32, seed: u8) -> GrayImage {
    GrayImage::from_fn(side, side, |x, y| {
        image::Luma([seed.wrapping_add((y * side + x) as u8)])
    })
}

fn write_grey(path: &Path, side: u32, seed: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    grey(side, seed).save(path).unwrap();
}

/// `root/NAME/{train,test}/{a,b}/*.png`: 3 train and 1 test image per class, 4×4 grey.
fn grey_folder(root: &Path, name: &str) -> std::path::PathBuf {
    let dir = root.join(name);
    for (class, seed) in [("a", 0u8), ("b", 100)] {
        for i in 0..3u8 {
            write_grey(&dir.join(format!("train/{class}/{i}.png")), 4, seed + i);
        }
        write_grey(&dir.join(format!("test/{class}/t.png")), 4, seed + 50);
    }
    dir
}

#[test]
fn grey_png_folder_loads_with_sorted_class_labels() {
    let root = tempfile::tempdir().unwrap();
    grey_folder(root.path(), "shapes");
    let loaded = load(root.path(), "shapes").unwrap();
    assert_eq!(loaded.format, Format::ImageFolder);
    assert_eq!(
        loaded.shape,
        DatasetShape {
            channels: 1,
            image_size: 4,
            classes: 2
        }
    );
    assert_eq!(loaded.class_names, vec!["a", "b"]);
    assert_eq!(loaded.train.labels, vec![0, 0, 0, 1, 1, 1]);
    let test = loaded.test.as_ref().unwrap();
    assert_eq!(test.labels, vec![0, 1]);
    // Image 4 of train is b/1.png: pixels 101, 102, …
    assert_eq!(&loaded.train.pixels[4 * 16..4 * 16 + 3], &[101, 102, 103]);
    assert_eq!(test.pixels[16], 150);
    let info = loaded.info();
    assert_eq!((info.train_examples, info.test_examples), (6, 2));
}

#[test]
fn rgb_and_jpeg_images_make_a_three_channel_dataset() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("colours");
    std::fs::create_dir_all(dir.join("train/red")).unwrap();
    std::fs::create_dir_all(dir.join("train/blue")).unwrap();
    let red = RgbImage::from_pixel(6, 6, image::Rgb([250, 10, 20]));
    red.save(dir.join("train/red/1.png")).unwrap();
    red.save(dir.join("train/red/2.jpg")).unwrap();
    let blue = RgbImage::from_pixel(6, 6, image::Rgb([5, 20, 240]));
    blue.save(dir.join("train/blue/1.jpeg")).unwrap();
    // A grey image among colour ones is converted to RGB.
    write_grey(&dir.join("train/blue/2.png"), 6, 7);
    std::fs::write(dir.join("train/blue/notes.txt"), "not an image").unwrap();

    let loaded = load(root.path(), "colours").unwrap();
    assert_eq!((loaded.shape.channels, loaded.shape.image_size), (3, 6));
    assert_eq!(loaded.class_names, vec!["blue", "red"]);
    assert_eq!(loaded.train.count, 4);
    // CHW: image 2 (red/1.png) has its R plane at 250 and its B plane at 20.
    let plane = 36;
    let red_png = &loaded.train.pixels[2 * 3 * plane..3 * 3 * plane];
    assert_eq!(
        (red_png[0], red_png[plane], red_png[2 * plane]),
        (250, 10, 20)
    );
    // JPEG is lossy: close, not equal.
    let red_jpg = &loaded.train.pixels[3 * 3 * plane..4 * 3 * plane];
    assert!(
        red_jpg[0] > 230 && red_jpg[2 * plane] < 45,
        "{:?}",
        &red_jpg[..3]
    );
    assert!(loaded.test.is_none());

    let report = check(&dir);
    assert!(report.ok(), "{:?}", report.errors);
    assert_eq!(report.ignored, vec![dir.join("train/blue/notes.txt")]);
    let modes: Vec<&str> = report.splits[0]
        .sizes
        .iter()
        .map(|s| s.mode.as_str())
        .collect();
    assert!(
        modes.contains(&"L8") && modes.contains(&"Rgb8"),
        "{modes:?}"
    );
    assert!(
        report.warnings.iter().any(|w| w.contains("no test files")),
        "{:?}",
        report.warnings
    );
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("only 2 training image")),
        "{:?}",
        report.warnings
    );
}

#[test]
fn unreadable_files_and_test_only_classes_are_errors_that_name_them() {
    let root = tempfile::tempdir().unwrap();
    let dir = grey_folder(root.path(), "broken");
    std::fs::write(dir.join("train/a/bad.png"), b"\x89PNG\r\n\x1a\n not really").unwrap();
    let err = load(root.path(), "broken").unwrap_err();
    assert!(matches!(err, DataError::Malformed { .. }));
    assert!(err.to_string().contains("bad.png"), "{err}");
    let report = check(&dir);
    assert!(!report.ok());
    let unreadable = &report.splits[0].unreadable;
    assert_eq!(unreadable.len(), 1);
    assert!(unreadable[0].path.ends_with("train/a/bad.png"));
    assert!(!unreadable[0].error.is_empty());
    assert_eq!(
        report.splits[0].classes[0].count, 3,
        "the bad file is not counted"
    );

    std::fs::remove_file(dir.join("train/a/bad.png")).unwrap();
    write_grey(&dir.join("test/c/x.png"), 4, 1);
    let err = load(root.path(), "broken").unwrap_err();
    assert!(
        err.to_string().contains("c have no folder under train/"),
        "{err}"
    );
    let report = check(&dir);
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.contains("no folder under train/")),
        "{:?}",
        report.errors
    );
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("class c: only in test/")),
        "{:?}",
        report.warnings
    );
}

#[test]
fn sizes_must_agree_unless_dataset_toml_sets_image_size() {
    let root = tempfile::tempdir().unwrap();
    let dir = grey_folder(root.path(), "mixed");
    write_grey(&dir.join("train/b/big.png"), 8, 3);
    let err = load(root.path(), "mixed").unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("4x4 (8)") && text.contains("8x8 (1)") && text.contains("image_size"),
        "{text}"
    );

    std::fs::write(
        dir.join("dataset.toml"),
        "image_size = 8\nchannels = 3\nmean = [0.5, 0.5, 0.5]\nstd = [0.25, 0.25, 0.25]\n",
    )
    .unwrap();
    let loaded = load(root.path(), "mixed").unwrap();
    assert_eq!((loaded.shape.channels, loaded.shape.image_size), (3, 8));
    assert_eq!(loaded.train.pixels.len(), 7 * 3 * 64);
    assert_eq!(loaded.normalization, Some((vec![0.5; 3], vec![0.25; 3])));

    std::fs::write(dir.join("dataset.toml"), "image_size = 8\nmeans = [0.5]\n").unwrap();
    let err = load(root.path(), "mixed").unwrap_err();
    assert!(err.to_string().contains("unknown field `means`"), "{err}");
}

fn cached_pixel(dir: &Path) -> Option<u8> {
    let bytes = std::fs::read(cache::cache_path(dir)).ok()?;
    let tensors = safetensors::SafeTensors::deserialize(&bytes).ok()?;
    Some(tensors.tensor("train_images").ok()?.data()[0])
}

#[test]
fn decode_cache_is_used_rebuilt_when_stale_and_ignored_when_corrupt() {
    let root = tempfile::tempdir().unwrap();
    let dir = grey_folder(root.path(), "cached");
    let first = load(root.path(), "cached").unwrap();
    assert_eq!(cached_pixel(&dir), Some(0));

    // A hit: the cache's contents are what load returns (rewrite it with a marked pixel under
    // the same fingerprint, and the mark comes back).
    let (config, config_bytes) = nat_data::DatasetConfig::read("cached", &dir).unwrap();
    let _ = config;
    let scan = nat_data::folder::scan("cached", &dir).unwrap();
    let fingerprint = cache::fingerprint(&dir, &scan, &config_bytes);
    let mut marked = cache::read(&dir, &fingerprint).unwrap();
    assert_eq!(marked.train, first.train);
    marked.train.pixels[0] = 77;
    cache::write(&dir, &fingerprint, &marked).unwrap();
    assert_eq!(load(root.path(), "cached").unwrap().train.pixels[0], 77);

    // Stale: a new image changes the fingerprint; the folder is decoded again.
    write_grey(&dir.join("train/a/3.png"), 4, 9);
    let again = load(root.path(), "cached").unwrap();
    assert_eq!((again.train.count, again.train.pixels[0]), (7, 0));
    assert_eq!(cached_pixel(&dir), Some(0));
    // So does a changed dataset.toml.
    std::fs::write(dir.join("dataset.toml"), "image_size = 5\n").unwrap();
    assert_eq!(load(root.path(), "cached").unwrap().shape.image_size, 5);
    std::fs::remove_file(dir.join("dataset.toml")).unwrap();

    // Corrupt: ignored and rewritten.
    std::fs::write(cache::cache_path(&dir), b"garbage").unwrap();
    let rebuilt = load(root.path(), "cached").unwrap();
    assert_eq!(rebuilt.train, again.train);
    assert_eq!(cached_pixel(&dir), Some(0));
    // A read-only cache folder only costs the cache.
    std::fs::remove_dir_all(dir.join(cache::CACHE_DIR)).unwrap();
    std::fs::write(dir.join(cache::CACHE_DIR), b"a file where the folder goes").unwrap();
    assert_eq!(load(root.path(), "cached").unwrap().train, again.train);
}

/// 5 RGB images of 4×4 NHWC, pixel value = 10·image + channel, labels 0..=2.
fn rgb_nhwc() -> (Vec<u8>, [usize; 4], Vec<i64>) {
    let mut images = Vec::new();
    for n in 0..5u8 {
        for _ in 0..16 {
            images.extend([10 * n, 10 * n + 1, 10 * n + 2]);
        }
    }
    (images, [5, 4, 4, 3], vec![0, 1, 2, 1, 0])
}

#[test]
fn npz_and_safetensors_round_trip_to_chw() {
    let root = tempfile::tempdir().unwrap();
    let (images, shape, labels) = rgb_nhwc();
    for (name, format) in [
        ("packed-npz", Format::Npz),
        ("packed-st", Format::Safetensors),
    ] {
        let dir = root.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        match format {
            Format::Npz => {
                packed::write_npz(&dir.join("train.npz"), &images, shape, &labels).unwrap();
                packed::write_npz(&dir.join("test.npz"), &images[..48], [1, 4, 4, 3], &[2])
                    .unwrap();
            }
            _ => {
                packed::write_safetensors(&dir.join("train.safetensors"), &images, shape, &labels)
                    .unwrap();
                packed::write_safetensors(
                    &dir.join("test.safetensors"),
                    &images[..48],
                    [1, 4, 4, 3],
                    &[2],
                )
                .unwrap();
            }
        }
        let loaded = load(root.path(), name).unwrap();
        assert_eq!(loaded.format, format);
        assert_eq!(
            loaded.shape,
            DatasetShape {
                channels: 3,
                image_size: 4,
                classes: 3
            }
        );
        assert_eq!(loaded.train.labels, labels);
        // Image 1 in CHW: 16 × 10, 16 × 11, 16 × 12.
        let image1 = &loaded.train.pixels[48..96];
        assert_eq!(
            (image1[0], image1[15], image1[16], image1[47]),
            (10, 10, 11, 12)
        );
        assert_eq!(loaded.test.as_ref().unwrap().labels, vec![2]);
        let report = check(&dir);
        assert!(report.ok(), "{:?}", report.errors);
        assert_eq!(report.splits[0].classes[1].count, 2);
    }

    // dataset.toml may declare more classes than the labels use, not fewer or another shape.
    let dir = root.path().join("packed-npz");
    std::fs::write(dir.join("dataset.toml"), "classes = 4\n").unwrap();
    assert_eq!(load(root.path(), "packed-npz").unwrap().shape.classes, 4);
    std::fs::write(dir.join("dataset.toml"), "classes = 2\n").unwrap();
    let err = load(root.path(), "packed-npz").unwrap_err();
    assert!(
        err.to_string().contains("label 2 is 2 (expected 0..2)"),
        "{err}"
    );
    std::fs::write(dir.join("dataset.toml"), "channels = 1\n").unwrap();
    let err = load(root.path(), "packed-npz").unwrap_err();
    assert!(
        err.to_string()
            .contains("channels: 1, but the npz images have 3"),
        "{err}"
    );
    std::fs::remove_file(dir.join("dataset.toml")).unwrap();

    // Wrong array types and missing arrays name the array.
    packed::write_npz(
        &dir.join("train.npz"),
        &images[..5 * 36],
        [5, 4, 9, 1],
        &labels,
    )
    .unwrap();
    let err = load(root.path(), "packed-npz").unwrap_err();
    assert!(err.to_string().contains("4x9 images"), "{err}");
    std::fs::write(dir.join("train.npz"), b"PK not a zip").unwrap();
    assert!(load(root.path(), "packed-npz").is_err());
    // Two formats in one folder is ambiguous.
    std::fs::create_dir_all(dir.join("train")).unwrap();
    let err = load(root.path(), "packed-npz").unwrap_err();
    assert!(err.to_string().contains("more than one of"), "{err}");
}

fn digits_csv(dir: &Path, rows: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut text = String::new();
    for r in 0..rows {
        let pixels: Vec<String> = (0..64).map(|i| ((i + r) % 17).to_string()).collect();
        text.push_str(&format!("{},{}\n", pixels.join(","), r % 10));
    }
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(text.as_bytes()).unwrap();
    std::fs::write(dir.join("digits.csv.gz"), encoder.finish().unwrap()).unwrap();
}

#[test]
fn list_reports_builtins_and_user_datasets_and_skips_bad_folders() {
    let root = tempfile::tempdir().unwrap();
    digits_csv(&root.path().join("digits"), 12);
    grey_folder(root.path(), "my-shapes");
    grey_folder(root.path(), "Bad Name");
    std::fs::create_dir_all(root.path().join("empty")).unwrap();
    std::fs::create_dir_all(root.path().join(".hidden")).unwrap();

    let listing = list(root.path());
    let names: Vec<&str> = listing.datasets.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, vec!["digits", "my-shapes"]);
    let digits = &listing.datasets[0];
    assert_eq!(
        (
            digits.format,
            digits.shape,
            digits.train_examples,
            digits.test_examples
        ),
        (Format::Builtin, nat_arch::Dataset::Digits.shape(), 12, 0)
    );
    let mine = &listing.datasets[1];
    assert_eq!(
        (
            mine.format,
            mine.shape.classes,
            mine.train_examples,
            mine.test_examples
        ),
        (Format::ImageFolder, 2, 6, 2)
    );
    let skipped: Vec<String> = listing
        .unusable
        .iter()
        .map(|u| u.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(skipped, vec!["Bad Name", "empty"]);
    assert!(
        listing.unusable[0].reason.contains("not usable"),
        "{:?}",
        listing.unusable
    );

    // The built-in digits load through the same entry point.
    let loaded = load(root.path(), "digits").unwrap();
    assert_eq!(
        (loaded.format, loaded.train.count, loaded.train.max_value),
        (Format::Builtin, 12, 16)
    );
    let report = check(&root.path().join("Bad Name"));
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.contains("rename the folder")),
        "{:?}",
        report.errors
    );
}

#[test]
fn names_follow_the_pattern() {
    for good in ["a", "my-digits", "x9.v2_b", &"a".repeat(64)] {
        assert!(nat_data::validate_name(good).is_ok(), "{good}");
    }
    for bad in ["", "-a", "My", "a/b", "..", ".x", "a b", &"a".repeat(65)] {
        assert!(nat_data::validate_name(bad).is_err(), "{bad}");
    }
    let root = tempfile::tempdir().unwrap();
    let err = load(root.path(), "../etc").unwrap_err();
    assert!(matches!(err, DataError::InvalidName { .. }), "{err}");
}

#[test]
fn exported_png_folders_read_back_in_order() {
    let root = tempfile::tempdir().unwrap();
    digits_csv(&root.path().join("digits"), 30);
    let digits = load(root.path(), "digits").unwrap();
    let names: Vec<String> = (0..10).map(|c| c.to_string()).collect();
    let out = root.path().join("digits-png");
    nat_data::folder::export_png(&out, digits.shape, &names, &digits.train, None).unwrap();
    let back = load(root.path(), "digits-png").unwrap();
    assert_eq!(back.shape, digits.shape);
    // Grouped by class, in file order within a class; values scaled 0..=16 → 0..=255.
    let mut order: Vec<usize> = (0..30).collect();
    order.sort_by_key(|&i| (digits.train.labels[i], i));
    for (position, &row) in order.iter().enumerate() {
        assert_eq!(back.train.labels[position], digits.train.labels[row]);
        let expected: Vec<u8> = digits.train.pixels[row * 64..(row + 1) * 64]
            .iter()
            .map(|&v| (f64::from(v) * 255.0 / 16.0).round() as u8)
            .collect();
        assert_eq!(
            &back.train.pixels[position * 64..(position + 1) * 64],
            &expected[..]
        );
    }
}
