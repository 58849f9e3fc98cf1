//! Save → load gives identical logits, identical optimizer behaviour, and clear errors on
//! corrupt bytes.
#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use common::{darts_v2, small_config};
use nat_policy::{read_header, ActionSpace, PolicyConfig, PolicyError, PolicyLearner, Profile};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn train_a_little(learner: &mut PolicyLearner, rng: &mut ChaCha8Rng, steps: usize) {
    for step in 0..steps {
        let samples = learner.sample(&[darts_v2()], 4, rng).unwrap();
        let batch: Vec<_> = samples
            .into_iter()
            .enumerate()
            .map(|(i, s)| (s, (i as f64 - 1.5) * 0.1 + step as f64 * 0.01))
            .collect();
        learner.update(&batch).unwrap();
    }
}

#[test]
fn reload_gives_identical_logits_and_identical_further_training() {
    for profile in [Profile::Reference, Profile::Default] {
        let config = small_config(ActionSpace::NatPlusPlus, profile);
        let mut original = PolicyLearner::new(config, 11).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        train_a_little(&mut original, &mut rng, 3);
        let bytes = original.to_bytes().unwrap();
        let mut restored = PolicyLearner::from_bytes(&bytes).unwrap();
        assert_eq!(restored.version(), 3);
        assert_eq!(restored.baseline(), original.baseline());
        assert_eq!(restored.rewards_applied(), 12);
        let g = darts_v2();
        for cell in [&g.normal, &g.reduce] {
            assert_eq!(
                original.logits(cell).unwrap(),
                restored.logits(cell).unwrap()
            );
        }
        // The Adam moments came back too: the same batch moves both copies identically.
        let batch: Vec<_> = original
            .sample(
                std::slice::from_ref(&g),
                4,
                &mut ChaCha8Rng::seed_from_u64(9),
            )
            .unwrap()
            .into_iter()
            .map(|s| (s, 0.25))
            .collect();
        original.update(&batch).unwrap();
        restored.update(&batch).unwrap();
        assert_eq!(
            original.logits(&g.normal).unwrap(),
            restored.logits(&g.normal).unwrap()
        );
        assert_eq!(original.to_bytes().unwrap(), restored.to_bytes().unwrap());
    }
}

#[test]
fn header_is_readable_without_the_tensors() {
    let learner = PolicyLearner::new(
        PolicyConfig::new(ActionSpace::NatPlusPlus, Profile::Default),
        1,
    )
    .unwrap();
    let bytes = learner.to_bytes().unwrap();
    let header = read_header(&bytes).unwrap();
    assert_eq!(header.version, 0);
    assert_eq!(header.config.feature_dim, 1024);
    // Parameters and both Adam moments in f32: 3 × 4 bytes per parameter, plus headers.
    assert!(bytes.len() > 12 * learner.num_parameters());
}

#[test]
fn corrupt_checkpoints_are_rejected_with_a_reason() {
    let learner =
        PolicyLearner::new(small_config(ActionSpace::NatPlusPlus, Profile::Default), 1).unwrap();
    let bytes = learner.to_bytes().unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("bad magic", [b"XXXXXXXX".as_slice(), &bytes[8..]].concat()),
        ("truncated header", bytes[..20].to_vec()),
        ("truncated tensors", bytes[..bytes.len() - 10].to_vec()),
    ];
    for (what, data) in cases {
        match PolicyLearner::from_bytes(&data) {
            Err(PolicyError::Corrupt(_) | PolicyError::Header(_)) => {}
            other => panic!("{what}: expected a corrupt-checkpoint error, got {other:?}"),
        }
    }
}

#[test]
fn parts_round_trip_and_params_alone_suffice_to_transform() {
    let config = small_config(
        ActionSpace::Nat(nat_arch::OpSet::NatFullyConcat),
        Profile::Default,
    );
    let mut original = PolicyLearner::new(config, 3).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    train_a_little(&mut original, &mut rng, 2);
    let (params, optimizer) = original.to_parts().unwrap();
    let full = PolicyLearner::from_parts(&params, &optimizer).unwrap();
    assert_eq!(full.to_bytes().unwrap(), original.to_bytes().unwrap());
    let params_only = PolicyLearner::from_parts(&params, &[]).unwrap();
    let g = darts_v2();
    assert_eq!(
        params_only.argmax(std::slice::from_ref(&g)).unwrap(),
        original.argmax(std::slice::from_ref(&g)).unwrap()
    );
    assert!(PolicyLearner::from_parts(&params, &optimizer[..optimizer.len() / 2]).is_err());
}
