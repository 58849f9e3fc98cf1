//! train_eval / final_eval on real data: accuracy clearly above chance, reproducibility,
//! checkpoint resume, cancellation and divergence handling, disjoint train / validation / test
//! splits and evaluation on the split the spec names.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use nat_arch::Dataset;
use nat_train::data::{load, read_raw, Split, HELD_OUT_TEST_FRACTION};
use nat_train::{
    final_eval, train_eval, CheckpointConfig, DatasetSplits, EvalSplit, TestSource, TrainError,
    TrainSpec,
};
use tch::{Device, Kind, Tensor};

fn digits() -> DatasetSplits {
    let dir = common::data_dir();
    load(&dir, Dataset::Digits, Device::Cpu, 0.2, 0).unwrap_or_else(|e| {
        panic!("{e}\n(the digits dataset is required: run scripts/fetch-data.sh --only digits)")
    })
}

#[test]
fn digits_split_is_deterministic_and_normalised() {
    let _serial = common::serial();
    let a = digits();
    let b = digits();
    // 1,797 images: 359 held out as the test split, then 20 % of the 1,438 left for validation.
    assert_eq!(
        (a.train.len(), a.validation.len(), a.test.len()),
        (1150, 288, 359)
    );
    assert_eq!(a.partition.test_source, TestSource::HeldOut);
    assert!(a.test.images.equal(&b.test.images));
    assert!(a.train.labels.equal(&b.train.labels));
    assert!(a.validation.images.equal(&b.validation.images));
    let mean = a.train.images.mean(Kind::Float).double_value(&[]);
    let std = a.train.images.std(true).double_value(&[]);
    assert!(
        mean.abs() < 1e-3 && (std - 1.0).abs() < 1e-2,
        "{mean} {std}"
    );
    let c = load(&common::data_dir(), Dataset::Digits, Device::Cpu, 0.2, 1).expect("load");
    assert!(
        !a.validation.labels.equal(&c.validation.labels),
        "another seed, another split"
    );
    assert_eq!(
        c.partition.test, a.partition.test,
        "the test split is fixed"
    );
}

#[test]
fn digits_child_network_learns_well_above_chance() {
    let _serial = common::serial();
    let data = digits();
    let genotype = common::preset("darts-v2");
    let budget = common::budget(4, 8, 3);
    let stop = AtomicBool::new(false);
    let mut progress = Vec::new();
    let started = Instant::now();
    let report = train_eval(
        &TrainSpec {
            genotype: &genotype,
            budget: &budget,
            seed: 1,
            split: EvalSplit::Validation,
        },
        &data,
        Device::Cpu,
        &stop,
        &mut |p| progress.push(p.clone()),
    )
    .expect("train");
    println!("digits report: {report:?} in {:?}", started.elapsed());
    assert!(
        report.accuracy > 0.5,
        "accuracy {} (chance is 0.1)",
        report.accuracy
    );
    assert_eq!(report.epochs_completed, 4);
    assert_eq!(
        (report.split, report.eval_examples),
        (EvalSplit::Validation, 288)
    );
    assert!(report.params > 0 && report.madds > 0 && report.images_per_second > 0.0);
    let spec = nat_arch::NetworkSpec::for_dataset(Dataset::Digits, 8, 3);
    let cost = nat_arch::network_cost(&genotype, &spec).expect("cost");
    assert_eq!((report.params, report.madds), (cost.params(), cost.madds()));
    assert_eq!(
        progress.last().map(|p| (p.epoch, p.fraction)),
        Some((4, 1.0))
    );
    assert!(started.elapsed().as_secs() < 60);
}

#[test]
fn same_seed_same_result_and_all_regularisers_run() {
    let _serial = common::serial();
    let data = digits();
    let genotype = common::preset("resnet-block");
    let mut budget = common::budget(2, 4, 3);
    budget.max_train_examples = 512;
    budget.cutout = 4;
    budget.label_smoothing = 0.1;
    budget.auxiliary_weight = 0.4;
    budget.drop_path_prob = 0.2;
    let spec = TrainSpec {
        genotype: &genotype,
        budget: &budget,
        seed: 9,
        split: EvalSplit::Validation,
    };
    let stop = AtomicBool::new(false);
    let a = train_eval(&spec, &data, Device::Cpu, &stop, &mut |_| {}).expect("a");
    let b = train_eval(&spec, &data, Device::Cpu, &stop, &mut |_| {}).expect("b");
    assert_eq!(
        (a.accuracy, a.loss, a.last_train_loss),
        (b.accuracy, b.loss, b.last_train_loss)
    );
    let other = TrainSpec { seed: 10, ..spec };
    let c = train_eval(&other, &data, Device::Cpu, &stop, &mut |_| {}).expect("c");
    assert_ne!(a.loss, c.loss, "a different seed trains differently");
}

#[test]
fn final_eval_resumes_from_its_checkpoint_with_the_same_result() {
    let _serial = common::serial();
    let data = digits();
    let genotype = common::preset("darts-v2");
    let mut budget = common::budget(3, 4, 3);
    budget.max_train_examples = 640;
    budget.drop_path_prob = 0.1;
    let spec = TrainSpec {
        genotype: &genotype,
        budget: &budget,
        seed: 5,
        split: EvalSplit::Test,
    };
    let never = AtomicBool::new(false);

    let straight_dir = tempfile::tempdir().expect("tempdir");
    let straight = final_eval(
        &spec,
        &data,
        Device::Cpu,
        &CheckpointConfig {
            dir: straight_dir.path().to_path_buf(),
            every_epochs: 1,
        },
        &never,
        &mut |_| {},
    )
    .expect("uninterrupted");
    // A final evaluation measures on the whole test split.
    assert_eq!(
        (straight.split, straight.eval_examples),
        (EvalSplit::Test, 359)
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let checkpoint = CheckpointConfig {
        dir: dir.path().to_path_buf(),
        every_epochs: 1,
    };
    let stop = AtomicBool::new(false);
    let err = final_eval(&spec, &data, Device::Cpu, &checkpoint, &stop, &mut |p| {
        if p.epoch == 2 {
            stop.store(true, Ordering::Relaxed);
        }
    })
    .expect_err("interrupted after epoch 2");
    assert!(matches!(err, TrainError::Cancelled), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("latest"))
            .expect("latest")
            .trim(),
        "epoch-00002"
    );

    let resumed =
        final_eval(&spec, &data, Device::Cpu, &checkpoint, &never, &mut |_| {}).expect("resumed");
    assert_eq!(resumed.resumed_epochs, 2);
    assert_eq!(resumed.epochs_completed, 3);
    assert_eq!(resumed.accuracy, straight.accuracy);
    assert_eq!(resumed.loss, straight.loss);
    assert_eq!(resumed.last_train_loss, straight.last_train_loss);

    // Running it again finds the final checkpoint and only evaluates.
    let again =
        final_eval(&spec, &data, Device::Cpu, &checkpoint, &never, &mut |_| {}).expect("again");
    assert_eq!((again.resumed_epochs, again.loss), (3, straight.loss));
}

#[test]
fn cancellation_bad_budgets_and_nan_data_are_typed_errors() {
    let _serial = common::serial();
    let data = digits();
    let genotype = common::preset("darts-v2");
    let budget = common::budget(1, 4, 3);
    let spec = TrainSpec {
        genotype: &genotype,
        budget: &budget,
        seed: 0,
        split: EvalSplit::Validation,
    };
    let stopped = AtomicBool::new(true);
    let err = train_eval(&spec, &data, Device::Cpu, &stopped, &mut |_| {}).expect_err("stop");
    assert!(matches!(err, TrainError::Cancelled));

    let never = AtomicBool::new(false);
    let mut bad = budget;
    bad.learning_rate = -1.0;
    let err = train_eval(
        &TrainSpec {
            budget: &bad,
            ..spec
        },
        &data,
        Device::Cpu,
        &never,
        &mut |_| {},
    )
    .expect_err("negative lr");
    assert!(
        err.to_string().contains("learning_rate") && !err.is_retryable(),
        "{err}"
    );

    let nan = DatasetSplits {
        train: Split {
            images: Tensor::full([64, 1, 8, 8], f64::NAN, (Kind::Float, Device::Cpu)),
            labels: Tensor::zeros([64], (Kind::Int64, Device::Cpu)),
        },
        ..digits()
    };
    let err = train_eval(&spec, &nan, Device::Cpu, &never, &mut |_| {}).expect_err("nan");
    assert!(matches!(err, TrainError::NonFiniteLoss { .. }), "{err}");
    assert!(!err.is_retryable());
}

#[test]
fn wall_clock_budget_stops_training_and_still_evaluates() {
    let _serial = common::serial();
    let data = digits();
    let genotype = common::preset("darts-v2");
    let mut budget = common::budget(1000, 4, 3);
    budget.max_wall_seconds = 1.0;
    budget.max_eval_examples = 100;
    let stop = AtomicBool::new(false);
    let report = train_eval(
        &TrainSpec {
            genotype: &genotype,
            budget: &budget,
            seed: 0,
            split: EvalSplit::Validation,
        },
        &data,
        Device::Cpu,
        &stop,
        &mut |_| {},
    )
    .expect("time-limited run");
    assert!(report.time_limited && report.epochs_completed < 1000);
    assert_eq!(report.eval_examples, 100);
    assert!(report.wall_seconds < 30.0, "{}", report.wall_seconds);
}

#[test]
fn grey_28x28_dataset_learns_well_above_chance() {
    let _serial = common::serial();
    let dir = common::data_dir();
    let mut chosen = None;
    for dataset in [Dataset::FashionMnist, Dataset::Mnist] {
        match load(&dir, dataset, Device::Cpu, 0.0, 0) {
            Ok(data) => {
                chosen = Some(data);
                break;
            }
            Err(e) => println!("skipping {dataset}: {e}"),
        }
    }
    let Some(data) = chosen else {
        println!(
            "SKIPPED: neither fashion-mnist nor mnist is under {}",
            dir.display()
        );
        return;
    };
    assert_eq!(data.train.images.size(), vec![60_000, 1, 28, 28]);
    assert_eq!(
        data.validation.len(),
        10_000,
        "fraction 0 validates on the test split"
    );
    assert_eq!(data.partition.test_source, TestSource::Files);
    assert_eq!(data.train.len() as usize, data.partition.train.len());
    let genotype = common::preset("darts-v2");
    let mut budget = common::budget(3, 4, 3);
    budget.learning_rate = 0.1;
    budget.max_train_examples = 2_000;
    budget.max_eval_examples = 1_000;
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let report = train_eval(
        &TrainSpec {
            genotype: &genotype,
            budget: &budget,
            seed: 3,
            split: EvalSplit::Validation,
        },
        &data,
        Device::Cpu,
        &stop,
        &mut |_| {},
    )
    .expect("train");
    println!(
        "{} report: {report:?} in {:?}",
        data.name,
        started.elapsed()
    );
    assert!(
        report.accuracy > 0.5,
        "accuracy {} (chance is 0.1)",
        report.accuracy
    );
}

/// The images (normalised as `data` normalises) and labels of the digits' training-file examples
/// at `positions`, built from the raw file independently of the loader's tensors.
fn raw_examples(data: &DatasetSplits, positions: &[usize]) -> (Tensor, Tensor) {
    let (raw, test) = read_raw(&common::data_dir(), Dataset::Digits).expect("digits");
    assert!(test.is_none(), "the digits have no test file");
    let scale = f64::from(raw.max_value);
    let mut pixels = Vec::with_capacity(positions.len() * 64);
    let mut labels = Vec::with_capacity(positions.len());
    for &i in positions {
        pixels.extend(
            raw.pixels[i * 64..(i + 1) * 64]
                .iter()
                .map(|&p| ((f64::from(p) / scale - data.mean[0]) / data.std[0]) as f32),
        );
        labels.push(raw.labels[i]);
    }
    let n = positions.len() as i64;
    (
        Tensor::from_slice(&pixels).view([n, 1, 8, 8]),
        Tensor::from_slice(&labels),
    )
}

#[test]
fn digits_train_validation_and_test_splits_are_disjoint_and_cover_the_training_files() {
    let _serial = common::serial();
    let data = digits();
    let (raw, _) = read_raw(&common::data_dir(), Dataset::Digits).expect("digits");
    let parts = &data.partition;
    assert_eq!(raw.count, 1797);
    assert_eq!(
        parts.test.len(),
        (HELD_OUT_TEST_FRACTION * 1797.0).round() as usize
    );
    // Sizes add up, and every training-file example is in exactly one split.
    assert_eq!(
        (data.train.len() + data.validation.len() + data.test.len()) as usize,
        raw.count
    );
    let mut seen = vec![0u8; raw.count];
    for &i in parts
        .train
        .iter()
        .chain(&parts.validation)
        .chain(&parts.test)
    {
        seen[i] += 1;
    }
    assert!(seen.iter().all(|&n| n == 1), "disjoint and covering");
    // The tensors hold exactly the examples the partition names: in particular no test example
    // is in the train or validation tensors.
    for (split, positions) in [
        (&data.train, &parts.train),
        (&data.validation, &parts.validation),
        (&data.test, &parts.test),
    ] {
        assert_eq!(split.len() as usize, positions.len());
        let (images, labels) = raw_examples(&data, positions);
        assert!(split.labels.equal(&labels));
        assert!(split.images.allclose(&images, 1e-5, 1e-5, false));
    }

    // validation_fraction 0: the validation split is the (same, held-out) test split, and the
    // train split is everything else.
    let zero = load(&common::data_dir(), Dataset::Digits, Device::Cpu, 0.0, 0).expect("fraction 0");
    assert_eq!(zero.partition.test, parts.test);
    assert!(zero.partition.validation.is_empty());
    assert_eq!(
        (zero.train.len(), zero.validation.len(), zero.test.len()),
        (1438, 359, 359)
    );
    assert!(zero.validation.labels.equal(&zero.test.labels));
    assert!(zero.validation.images.equal(&zero.test.images));
}

#[test]
fn a_test_split_task_is_evaluated_on_the_test_split_only() {
    let _serial = common::serial();
    let data = digits();
    let genotype = common::preset("resnet-block");
    let mut budget = common::budget(1, 4, 3);
    budget.max_train_examples = 256;
    let never = AtomicBool::new(false);
    let run = |split: EvalSplit, budget: &nat_train::Budget, data: &DatasetSplits| {
        let spec = TrainSpec {
            genotype: &genotype,
            budget,
            seed: 4,
            split,
        };
        train_eval(&spec, data, Device::Cpu, &never, &mut |_| {}).expect("train_eval")
    };

    let validation = run(EvalSplit::Validation, &budget, &data);
    let test = run(EvalSplit::Test, &budget, &data);
    assert_eq!(
        (validation.split, validation.eval_examples),
        (EvalSplit::Validation, 288)
    );
    assert_eq!((test.split, test.eval_examples), (EvalSplit::Test, 359));
    // The same training (the split only changes what is evaluated), other examples measured.
    assert_eq!(test.last_train_loss, validation.last_train_loss);
    assert_ne!(test.loss, validation.loss);

    // A direct evaluation of the same network on data.test (given as the validation split)
    // reports exactly the test-split task's accuracy and loss.
    let on_test = DatasetSplits {
        validation: data.test.shallow_clone(),
        ..digits()
    };
    let direct = run(EvalSplit::Validation, &budget, &on_test);
    assert_eq!((direct.accuracy, direct.loss), (test.accuracy, test.loss));
    assert_eq!(direct.eval_examples, 359);

    // max_eval_examples caps the test split as it caps the validation split: its first examples.
    let mut capped_budget = budget;
    capped_budget.max_eval_examples = 100;
    let capped = run(EvalSplit::Test, &capped_budget, &data);
    assert_eq!((capped.split, capped.eval_examples), (EvalSplit::Test, 100));
    let first_100 = DatasetSplits {
        validation: Split {
            images: data.test.images.narrow(0, 0, 100),
            labels: data.test.labels.narrow(0, 0, 100),
        },
        ..digits()
    };
    let direct = run(EvalSplit::Validation, &budget, &first_100);
    assert_eq!(
        (direct.accuracy, direct.loss),
        (capped.accuracy, capped.loss)
    );
}
