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
        init_channels: 4,
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
    common::init_threads();
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

    let before = session.score_pair(&data, &darts, &darts).expect("score");
    // Same architecture on the same batches: reward exactly 0.
    assert_eq!(before.reward(), 0.0);

    let loss = session.train_steps(&data, 80, &stop).expect("train");
    assert!(loss.is_finite());
    assert_eq!(session.steps(), 80);
    let trained = session.score_pair(&data, &darts, &darts).expect("score");
    assert!(
        trained.acc_beta > 0.4,
        "supernet accuracy after 80 steps: {}",
        trained.acc_beta
    );

    // α = every edge null: the cells output zeros, so α is near chance and the reward is clearly
    // negative; the reversed pair gives the opposite reward.
    let null = all_null(&darts);
    let pairs = vec![(darts.clone(), null.clone()), (null.clone(), darts.clone())];
    let mut seen = Vec::new();
    let report = session
        .run(&data, &pairs, &stop, &mut |done, total| {
            seen.push((done, total))
        })
        .expect("run");
    assert_eq!(seen, vec![(1, 2), (2, 2)]);
    assert_eq!(report.scores.len(), 2);
    assert_eq!(report.train_steps, 4);
    let first = report.scores[0];
    assert!(first.reward() < -0.2, "{first:?}");
    assert!(report.scores[1].reward() > 0.2, "{:?}", report.scores[1]);
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
