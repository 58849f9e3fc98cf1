//! Supernet sessions on real digits: training on random β improves shared weights, and the reward
//! of a pair is acc(α) − acc(β) on the same minibatch.

mod common;

use std::sync::atomic::AtomicBool;

use nat_arch::{Dataset, Genotype, Op, OpSet};
use nat_train::data::load;
use nat_train::train::infer_op_set;
use nat_train::{SupernetSession, SupernetSettings};
use tch::Device;

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
