//! Supernet sessions on real digits: training on random β improves shared weights, and the reward
//! of a pair is acc(α) − acc(β) on the same minibatch. A sharded supernet: weights travel as
//! safetensors documents (export / import) and a shard is reproducible from (weights, seed).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::AtomicBool;

use nat_arch::{Dataset, Genotype, Op, OpSet};
use nat_train::data::load;
use nat_train::train::infer_op_set;
use nat_train::{DatasetSplits, SupernetSession, SupernetSettings, TrainError};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use tch::{Device, Tensor};

fn settings() -> SupernetSettings {
    SupernetSettings {
        init_channels: 8,
        layers: 3,
        batch_size: 64,
        train_steps_between_pairs: 2,
        learning_rate: 0.05,
        momentum: 0.9,
        weight_decay: 3e-4,
        grad_clip: 5.0,
        max_train_examples: 0,
        validation_fraction: 0.4,
        eval_batches: 2,
        max_wall_seconds: 0.0,
    }
}

fn all_null(genotype: &Genotype) -> Genotype {
    let mut out = genotype.clone();
    for cell in [&mut out.normal, &mut out.reduce] {
        for node in &mut cell.nodes {
            for edge in &mut node.inputs {
                edge.op = Op::Null;
            }
        }
    }
    out
}

#[test]
fn rewards_compare_alpha_and_beta_on_the_same_batch() {
    let _serial = common::serial();
    let data = load(&common::data_dir(), Dataset::Digits, Device::Cpu, 0.4, 0)
        .expect("digits (run scripts/fetch-data.sh --only digits)");
    let darts = common::preset("darts-v2");
    assert_eq!(infer_op_set([&darts]), Some(OpSet::NatFullyConcat));
    let mut session = SupernetSession::new(
        &settings(),
        OpSet::NatFullyConcat,
        4,
        &data,
        Device::Cpu,
        11,
    )
    .expect("session");
    let stop = AtomicBool::new(false);

    // Same architecture on the same batches: reward exactly 0.
    let same = session.score_pair(&data, &darts, &darts).expect("score");
    assert_eq!(same.reward(), 0.0);

    // Training on random β improves the shared weights for an architecture never trained as such.
    let before = session
        .validation_accuracy(&data, &darts, 0)
        .expect("accuracy");
    let loss = session.train_steps(&data, 200, &stop).expect("train");
    assert!(loss.is_finite());
    assert_eq!(session.steps(), 200);
    let after = session
        .validation_accuracy(&data, &darts, 0)
        .expect("accuracy");
    println!("darts-v2 on the supernet: accuracy {before:.3} -> {after:.3}, last loss {loss:.3}");
    assert!(after > before + 0.15 && after > 0.3, "{before} -> {after}");

    // The reward is acc(α) − acc(β) on one and the same batch.
    let null = all_null(&darts);
    let (x, y) = data.validation.slice(0, 64, Device::Cpu).expect("batch");
    let on_batch = session.score_pair_on(&darts, &null, &x, &y).expect("score");
    let acc_darts = session.accuracy(&darts, &x, &y).expect("acc");
    let acc_null = session.accuracy(&null, &x, &y).expect("acc");
    assert_eq!(on_batch.acc_beta, acc_darts);
    assert_eq!(on_batch.acc_alpha, acc_null);
    assert_eq!(on_batch.reward(), acc_null - acc_darts);

    // α = every edge null: the cells output zeros, so α is near chance and the reward is clearly
    // negative; the reversed pair gives the opposite reward.
    let pairs = vec![(darts.clone(), null.clone()), (null.clone(), darts.clone())];
    let mut seen = Vec::new();
    let report = session
        .run(&data, &pairs, &stop, &mut |done, total| {
            seen.push((done, total));
        })
        .expect("run");
    assert_eq!(seen, vec![(1, 2), (2, 2)]);
    assert_eq!(report.scores.len(), 2);
    assert_eq!(report.train_steps, 4);
    let first = report.scores[0];
    assert!(first.reward() < -0.1, "{first:?}");
    assert!(report.scores[1].reward() > 0.1, "{:?}", report.scores[1]);
    for score in &report.scores {
        for acc in [score.acc_alpha, score.acc_beta] {
            assert!((0.0..=1.0).contains(&acc));
            // Mean of two batches of 64: a multiple of 1/128.
            assert!((acc * 128.0 - (acc * 128.0).round()).abs() < 1e-9, "{acc}");
        }
    }

    // Save, restore into a fresh session: identical scores on identical RNG state.
    let dir = tempfile::tempdir().expect("tempdir");
    session.save(dir.path()).expect("save");
    let mut restored = SupernetSession::new(
        &settings(),
        OpSet::NatFullyConcat,
        4,
        &data,
        Device::Cpu,
        77,
    )
    .expect("session");
    restored.restore(dir.path()).expect("restore");
    let mut reference = SupernetSession::new(
        &settings(),
        OpSet::NatFullyConcat,
        4,
        &data,
        Device::Cpu,
        77,
    )
    .expect("session");
    reference.restore(dir.path()).expect("restore");
    let a = restored.score_pair(&data, &darts, &null).expect("a");
    let b = reference.score_pair(&data, &darts, &null).expect("b");
    assert_eq!(a, b);
}

#[test]
fn sampled_inputs_follow_the_spec_and_invalid_pairs_fail() {
    let _serial = common::serial();
    let data = load(&common::data_dir(), Dataset::Digits, Device::Cpu, 0.4, 0).expect("digits");
    let mut session =
        SupernetSession::new(&settings(), OpSet::NatPlusPlus, 4, &data, Device::Cpu, 3)
            .expect("session");
    for _ in 0..50 {
        let beta = session.sample_input();
        for cell in [&beta.normal, &beta.reduce] {
            assert_eq!(cell.nodes.len(), 4);
            for (i, node) in cell.nodes.iter().enumerate() {
                for edge in &node.inputs {
                    assert!(edge.from < i + 2);
                    assert_ne!(edge.op, Op::Null, "inputs never contain null");
                    assert!(OpSet::NatPlusPlus.index_of(edge.op).is_some());
                }
            }
        }
    }
    let enas = common::preset("enas");
    let err = session
        .score_pair(&data, &enas, &enas)
        .expect_err("5 nodes");
    assert!(!err.is_retryable(), "{err}");
    let bad = SupernetSettings {
        batch_size: 0,
        ..settings()
    };
    let err = SupernetSession::new(&bad, OpSet::NatPlusPlus, 4, &data, Device::Cpu, 3)
        .expect_err("batch 0");
    assert!(err.to_string().contains("batch_size"), "{err}");
}

fn digits() -> DatasetSplits {
    load(&common::data_dir(), Dataset::Digits, Device::Cpu, 0.4, 0)
        .expect("digits (run scripts/fetch-data.sh --only digits)")
}

fn fully_concat(data: &DatasetSplits, seed: u64) -> SupernetSession {
    SupernetSession::new(
        &settings(),
        OpSet::NatFullyConcat,
        4,
        data,
        Device::Cpu,
        seed,
    )
    .expect("session")
}

fn no_metadata() -> BTreeMap<String, String> {
    BTreeMap::new()
}

/// The tensors of a document, by name: (dtype, shape, bytes).
fn tensors(document: &[u8]) -> BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)> {
    SafeTensors::deserialize(document)
        .expect("a safetensors document")
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            (
                name,
                (view.dtype(), view.shape().to_vec(), view.data().to_vec()),
            )
        })
        .collect()
}

/// A document holding `tensors` (no metadata).
fn document(tensors: &BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>) -> Vec<u8> {
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, (dtype, shape, data))| {
            (
                name.as_str(),
                TensorView::new(*dtype, shape.clone(), data).expect("view"),
            )
        })
        .collect();
    safetensors::serialize(views, None).expect("serialize")
}

#[test]
fn exported_weights_import_exactly_into_a_fresh_session() {
    let _serial = common::serial();
    let data = digits();
    let stop = AtomicBool::new(false);
    let mut trained = fully_concat(&data, 5);
    // Trained weights and running statistics, far from any session's initial values.
    trained.train_steps(&data, 5, &stop).expect("train");
    let metadata: BTreeMap<String, String> = [
        ("job", "j-7"),
        ("version", "3"),
        ("shard", "1"),
        ("steps", "5"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let exported = trained
        .export_safetensors(metadata.clone())
        .expect("export");
    // The same weights and metadata give the same bytes (metadata order included).
    for _ in 0..3 {
        assert_eq!(
            trained
                .export_safetensors(metadata.clone())
                .expect("export"),
            exported
        );
    }
    let (_, header) = SafeTensors::read_metadata(&exported).expect("header");
    let read: HashMap<String, String> = metadata.clone().into_iter().collect();
    assert_eq!(header.metadata().as_ref(), Some(&read));

    let mut fresh = fully_concat(&data, 99);
    assert_ne!(
        tensors(&fresh.export_safetensors(no_metadata()).expect("export")),
        tensors(&exported),
        "another seed starts from other weights"
    );
    fresh.import_safetensors(&exported).expect("import");
    assert_eq!(
        fresh
            .export_safetensors(metadata.clone())
            .expect("re-export"),
        exported,
        "a re-export is byte-identical"
    );

    // Bit-identical accuracies on a fixed batch, for a preset and for sampled inputs.
    let (x, y) = data.validation.slice(0, 64, Device::Cpu).expect("batch");
    let darts = common::preset("darts-v2");
    let mut architectures = vec![darts.clone(), all_null(&darts)];
    for _ in 0..3 {
        architectures.push(trained.sample_input());
    }
    let mut distinct = BTreeSet::new();
    for genotype in &architectures {
        let a = trained.accuracy(genotype, &x, &y).expect("accuracy");
        let b = fresh.accuracy(genotype, &x, &y).expect("accuracy");
        assert_eq!(a.to_bits(), b.to_bits(), "{a} != {b}");
        distinct.insert(a.to_bits());
    }
    assert!(
        distinct.len() > 1,
        "the accuracies tell architectures apart"
    );
    // Train-mode BN updated both sessions' running statistics identically.
    assert_eq!(
        trained.export_safetensors(no_metadata()).expect("export"),
        fresh.export_safetensors(no_metadata()).expect("export")
    );
}

#[test]
fn the_export_holds_every_variable_with_the_batch_norm_statistics() {
    let _serial = common::serial();
    let data = digits();
    let session = fully_concat(&data, 2);
    let exported = tensors(&session.export_safetensors(no_metadata()).expect("export"));

    // Exactly what the VarStore itself saves: same names, shapes and values.
    let dir = tempfile::tempdir().expect("tempdir");
    session.save(dir.path()).expect("save");
    let saved = Tensor::load_multi(dir.path().join("supernet.ot")).expect("load");
    assert_eq!(saved.len(), exported.len());
    for (name, tensor) in &saved {
        let (dtype, shape, bytes) = exported
            .get(name)
            .unwrap_or_else(|| panic!("{name} is missing from the export"));
        assert_eq!(*dtype, Dtype::F32, "{name}");
        let size: Vec<usize> = tensor.size().iter().map(|&d| d as usize).collect();
        assert_eq!(shape, &size, "{name}");
        let floats: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let expected = Vec::<f32>::try_from(tensor.flatten(0, -1)).expect("floats");
        assert_eq!(floats, expected, "{name}");
    }

    // The stem, and in every cell every slot's conv weights and BN running statistics (the
    // supernet's ops use affine-free BN: running statistics only).
    let rank = |name: &str| -> usize {
        exported
            .get(name)
            .unwrap_or_else(|| panic!("{name} is missing from the export"))
            .1
            .len()
    };
    assert_eq!(rank("supernet.stem.conv"), 4);
    for stat in ["weight", "bias", "running_mean", "running_var"] {
        assert_eq!(rank(&format!("supernet.stem.bn.{stat}")), 1);
    }
    let slots = 2 + 3 + 4 + 5;
    for cell in 0..3 {
        for slot in 0..slots {
            let op = |op: &str, var: &str| format!("supernet.cell{cell}.slot{slot}.{op}.{var}");
            for sep in ["sep_conv_3x3", "sep_conv_5x5"] {
                for conv in ["dw1", "pw1", "dw2", "pw2"] {
                    assert_eq!(rank(&op(sep, conv)), 4);
                }
                for bn in ["bn1", "bn2"] {
                    assert_eq!(rank(&op(sep, &format!("{bn}.running_mean"))), 1);
                    assert_eq!(rank(&op(sep, &format!("{bn}.running_var"))), 1);
                    assert!(!exported.contains_key(&op(sep, &format!("{bn}.weight"))));
                }
            }
            for dil in ["dil_conv_3x3", "dil_conv_5x5"] {
                assert_eq!(rank(&op(dil, "dw")), 4);
                assert_eq!(rank(&op(dil, "pw")), 4);
                assert_eq!(rank(&op(dil, "bn.running_var")), 1);
            }
            assert_eq!(rank(&op("conv_3x3", "conv")), 4);
            assert_eq!(rank(&op("conv_3x3", "bn.running_mean")), 1);
            for pool in ["max_pool_3x3", "avg_pool_3x3"] {
                assert_eq!(rank(&op(pool, "pool_bn.running_mean")), 1);
                assert_eq!(rank(&op(pool, "pool_bn.running_var")), 1);
            }
        }
    }
    // Every running mean comes with its running variance.
    let means: Vec<&String> = exported
        .keys()
        .filter(|n| n.ends_with(".running_mean"))
        .collect();
    assert!(means.len() > 3 * slots * 5, "{}", means.len());
    for mean in means {
        let var = mean.replace(".running_mean", ".running_var");
        assert_eq!(exported[mean].1, exported[&var].1, "{var}");
    }
}

#[test]
fn documents_that_do_not_fit_are_refused_naming_the_tensor_and_change_nothing() {
    let _serial = common::serial();
    let data = digits();
    let stop = AtomicBool::new(false);
    let mut source = fully_concat(&data, 4);
    source.train_steps(&data, 2, &stop).expect("train");
    let good = tensors(&source.export_safetensors(no_metadata()).expect("export"));
    let mut session = fully_concat(&data, 8);
    let before = session.export_safetensors(no_metadata()).expect("export");
    assert_ne!(tensors(&before), good);

    // The stem conv sorts after every cell, so a copy-as-you-go import would already have
    // overwritten most of the session.
    let stem = "supernet.stem.conv".to_string();
    let mut reshaped = good.clone();
    if let Some((_, shape, _)) = reshaped.get_mut(&stem) {
        let n: usize = shape.iter().product();
        *shape = vec![n];
    }
    let mut missing = good.clone();
    let running_var = "supernet.stem.bn.running_var".to_string();
    missing.remove(&running_var);
    let mut extra = good.clone();
    let bogus = "supernet.zz_bogus".to_string();
    extra.insert(bogus.clone(), (Dtype::F32, vec![2], vec![0; 8]));
    let mut retyped = good.clone();
    if let Some((dtype, shape, bytes)) = retyped.get_mut(&stem) {
        *dtype = Dtype::F64;
        let n: usize = shape.iter().product();
        *bytes = vec![0; 8 * n];
    }
    let cases = [
        (document(&reshaped), Some(&stem), "shape"),
        (document(&missing), Some(&running_var), "missing"),
        (document(&extra), Some(&bogus), "not a variable"),
        (document(&retyped), Some(&stem), "dtype"),
        (
            b"not a document".to_vec(),
            None,
            "not a safetensors document",
        ),
    ];
    for (bytes, name, why) in cases {
        let err = session.import_safetensors(&bytes).expect_err(why);
        match &err {
            TrainError::Weights { tensor, reason } => {
                assert_eq!(tensor.as_ref(), name, "{err}");
                assert!(reason.contains(why), "{err}");
            }
            other => panic!("{why}: {other}"),
        }
        if let Some(name) = name {
            assert!(err.to_string().contains(name.as_str()), "{err}");
        }
        assert!(!err.is_retryable());
        assert_eq!(
            session.export_safetensors(no_metadata()).expect("export"),
            before,
            "{why}: the session is unchanged"
        );
    }
    // The unmodified document is accepted (the cases above differ from it in one tensor only).
    session
        .import_safetensors(&document(&good))
        .expect("import");
    assert_eq!(
        tensors(&session.export_safetensors(no_metadata()).expect("export")),
        good
    );
}

#[test]
fn a_shard_depends_only_on_the_imported_weights_and_its_seed() {
    let _serial = common::serial();
    let data = digits();
    let stop = AtomicBool::new(false);
    let mut session = fully_concat(&data, 21);
    session.train_steps(&data, 3, &stop).expect("train");
    let version = session.export_safetensors(no_metadata()).expect("export");
    let darts = common::preset("darts-v2");
    let pairs = vec![
        (darts.clone(), all_null(&darts)),
        (session.sample_input(), darts.clone()),
    ];

    let shard = |session: &mut SupernetSession, seed: u64| {
        session.import_safetensors(&version).expect("import");
        let mut progress = Vec::new();
        let report = session
            .run_shard(&data, 6, &pairs, seed, &stop, &mut |done, total| {
                progress.push((done, total));
            })
            .expect("shard");
        let weights = session.export_safetensors(no_metadata()).expect("export");
        (report, progress, weights)
    };

    let (first, progress, weights) = shard(&mut session, 7);
    assert_eq!(progress, (1..=8).map(|d| (d, 8)).collect::<Vec<_>>());
    assert_eq!(first.scores.len(), 2);
    assert_eq!(first.train_steps, 6 + 2 * 2);
    assert!(first.mean_train_loss.is_finite());
    assert_ne!(weights, version, "the shard trained");

    // Momentum and RNG state left by other training do not leak into the next shard.
    session.train_steps(&data, 3, &stop).expect("train");
    let (again, _, weights_again) = shard(&mut session, 7);
    assert_eq!(again.scores, first.scores);
    assert_eq!(
        again.mean_train_loss.to_bits(),
        first.mean_train_loss.to_bits()
    );
    assert_eq!(
        weights_again, weights,
        "same weights and seed: identical weights"
    );

    // Another session built with another seed, same version and shard seed: identical.
    let mut other = fully_concat(&data, 1234);
    let (elsewhere, _, weights_elsewhere) = shard(&mut other, 7);
    assert_eq!(elsewhere.scores, first.scores);
    assert_eq!(weights_elsewhere, weights);

    // Another shard seed: another data order and other β, so other weights.
    let (_, _, weights_other_seed) = shard(&mut session, 8);
    assert_ne!(weights_other_seed, weights);
    assert_ne!(weights_other_seed, version);
}

#[test]
fn warm_up_shards_train_without_pairs_and_bad_shards_change_nothing() {
    let _serial = common::serial();
    let data = digits();
    let stop = AtomicBool::new(false);
    let mut session = fully_concat(&data, 9);
    let darts = common::preset("darts-v2");
    let (x, y) = data.validation.slice(0, 128, Device::Cpu).expect("batch");
    let start = session.export_safetensors(no_metadata()).expect("export");

    // Nothing to do: no step, no pair, the weights stay as they are.
    let mut calls = 0;
    let idle = session
        .run_shard(&data, 0, &[], 1, &stop, &mut |_, _| calls += 1)
        .expect("empty shard");
    assert_eq!((idle.train_steps, idle.scores.len(), calls), (0, 0, 0));
    assert!(idle.mean_train_loss.is_nan());
    assert_eq!(
        session.export_safetensors(no_metadata()).expect("export"),
        start
    );

    // A pair that does not fit the supernet is refused before any training.
    let enas = common::preset("enas");
    let err = session
        .run_shard(&data, 5, &[(enas.clone(), enas)], 1, &stop, &mut |_, _| {})
        .expect_err("5 nodes");
    assert!(!err.is_retryable(), "{err}");
    assert_eq!(session.steps(), 0);
    assert_eq!(
        session.export_safetensors(no_metadata()).expect("export"),
        start
    );

    // A warm-up shard: steps only, no scores.
    let before = session.accuracy(&darts, &x, &y).expect("accuracy");
    let mut progress = Vec::new();
    let warm = session
        .run_shard(&data, 150, &[], 3, &stop, &mut |done, total| {
            progress.push((done, total));
        })
        .expect("warm-up");
    assert!(warm.scores.is_empty());
    assert_eq!(warm.train_steps, 150);
    assert_eq!(session.steps(), 150);
    assert!(warm.mean_train_loss.is_finite());
    assert_eq!(progress.len(), 150);
    assert_eq!(progress.last(), Some(&(150, 150)));
    let after = session.accuracy(&darts, &x, &y).expect("accuracy");
    println!("warm-up shard: darts-v2 accuracy {before:.3} -> {after:.3}");
    assert!(after > before + 0.1, "{before} -> {after}");

    // Pairs only (no shard steps): units are the pairs.
    let mut units = Vec::new();
    let scored = session
        .run_shard(
            &data,
            0,
            &[(darts.clone(), all_null(&darts))],
            4,
            &stop,
            &mut |done, total| units.push((done, total)),
        )
        .expect("pairs only");
    assert_eq!(units, vec![(1, 1)]);
    assert_eq!(scored.train_steps, 2);
    assert!(scored.scores[0].reward() < 0.0, "{:?}", scored.scores[0]);

    // A raised stop flag cancels the shard.
    let raised = AtomicBool::new(true);
    let err = session
        .run_shard(&data, 5, &[], 5, &raised, &mut |_, _| {})
        .expect_err("stopped");
    assert!(matches!(err, TrainError::Cancelled), "{err}");
}
