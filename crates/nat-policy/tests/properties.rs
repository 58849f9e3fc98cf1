//! Property tests: sampled and argmax transformations never leave the space (both spaces, the
//! NAT++ mask included), keep the wiring, and their recorded log π matches a re-scoring.
#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use common::{arch_space, small_config, SPACES};
use nat_arch::{Cell, Edge, Genotype, Node, OpSet};
use nat_policy::{ActionSpace, PolicyError, PolicyLearner, Profile};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A random cell over `set` with `nodes` intermediate nodes; null edges included.
fn arb_cell(set: OpSet, nodes: usize) -> impl Strategy<Value = Cell> {
    let ops = set.ops();
    let edges: Vec<_> = (0..2 * nodes)
        .map(|e| (0..ops.len(), 0..(e / 2 + 2)))
        .collect();
    edges.prop_map(move |picks| {
        let nodes = picks
            .chunks(2)
            .map(|p| Node {
                inputs: [
                    Edge {
                        op: ops[p[0].0],
                        from: p[0].1,
                    },
                    Edge {
                        op: ops[p[1].0],
                        from: p[1].1,
                    },
                ],
            })
            .collect::<Vec<_>>();
        let concat = (2..nodes.len() + 2).collect();
        Cell { nodes, concat }
    })
}

fn arb_case() -> impl Strategy<Value = (ActionSpace, Profile, Genotype, u64)> {
    (
        0..SPACES.len(),
        any::<bool>(),
        1usize..=6,
        1usize..=6,
        any::<u64>(),
    )
        .prop_flat_map(|(s, reference, bn, br, seed)| {
            let space = SPACES[s];
            let profile = if reference {
                Profile::Reference
            } else {
                Profile::Default
            };
            let set = space.op_set();
            (arb_cell(set, bn), arb_cell(set, br)).prop_map(move |(normal, reduce)| {
                (space, profile, Genotype { normal, reduce }, seed)
            })
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn transformations_stay_in_the_space((space, profile, input, seed) in arb_case()) {
        let learner = PolicyLearner::new(small_config(space, profile), seed).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
        let mut samples = learner.sample(std::slice::from_ref(&input), 6, &mut rng).unwrap();
        samples.extend(learner.argmax(std::slice::from_ref(&input)).unwrap());
        let arch = arch_space(space);
        for sample in &samples {
            prop_assert_eq!(&sample.input, &input);
            prop_assert_eq!(&sample.alpha.normal.concat, &input.normal.concat);
            if let Err(e) = arch.check_transition(&input, &sample.alpha) {
                prop_assert!(false, "{:?} left the space: {}", space, e);
            }
            for (cell_in, cell_out) in [(&input.normal, &sample.alpha.normal), (&input.reduce, &sample.alpha.reduce)] {
                for ((op_in, f_in, t_in), (op_out, f_out, t_out)) in cell_in.edges().zip(cell_out.edges()) {
                    prop_assert_eq!((f_in, t_in), (f_out, t_out));
                    prop_assert!(space.allowed_targets(op_in).contains(&op_out));
                    prop_assert!(arch.allows(op_in, op_out), "{} -> {} in {:?}", op_in, op_out, space);
                }
            }
            // Log-probabilities: finite, at most 0 (+ the reference profile's 1e-5 shifts),
            // and equal to a re-scoring of (β, α) under the same parameters.
            prop_assert!(sample.log_prob.is_finite());
            prop_assert!(sample.log_prob <= 1e-3, "log π = {}", sample.log_prob);
            prop_assert!(sample.entropy() >= -1e-3);
            let rescored = learner.log_prob(&input, &sample.alpha).unwrap();
            prop_assert!((rescored - sample.log_prob).abs() < 1e-4, "{} vs {}", rescored, sample.log_prob);
        }
    }
}

#[test]
fn outcome_distributions_sum_to_one_in_the_default_profile() {
    for space in SPACES {
        let learner = PolicyLearner::new(small_config(space, Profile::Default), 3).unwrap();
        let input = nat_arch::sampler::sample_genotype_seeded(space.op_set(), 4, 17);
        for dist in learner.outcome_distribution(&input.normal).unwrap() {
            let total: f64 = dist.iter().map(|(_, p)| p).sum();
            assert!((total - 1.0).abs() < 1e-5, "{space:?}: {total}");
        }
    }
}

#[test]
fn bad_inputs_name_the_field() {
    let learner =
        PolicyLearner::new(small_config(ActionSpace::NatPlusPlus, Profile::Default), 1).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut input = common::darts_v2();
    input.reduce.nodes[1].inputs[0].op = nat_arch::Op::Conv1x7_7x1;
    let err = learner.sample(&[input], 1, &mut rng).unwrap_err();
    assert!(
        matches!(&err, PolicyError::InvalidInput { field, .. } if field == "inputs[0].reduce.nodes[1].inputs[0].op"),
        "{err}"
    );
    let mut input = common::darts_v2();
    input.normal.nodes[0].inputs[1].from = 2;
    let err = learner.sample(&[input], 1, &mut rng).unwrap_err();
    assert!(
        err.to_string()
            .contains("inputs[0].normal.nodes[0].inputs[1].from"),
        "{err}"
    );

    // A transformation outside the space cannot be scored or learned from.
    let input = common::darts_v2();
    let mut alpha = input.clone();
    alpha.normal.nodes[3].inputs[0].op = nat_arch::Op::SepConv3x3; // skip -> sep: not allowed
    let err = learner.log_prob(&input, &alpha).unwrap_err();
    assert!(
        err.to_string()
            .contains("alpha.normal.nodes[3].inputs[0].op"),
        "{err}"
    );
    let sample = learner.argmax(&[input]).unwrap().remove(0);
    let bad = nat_policy::Sample {
        alpha,
        ..sample.clone()
    };
    let mut learner = learner;
    let err = learner
        .update(&[(sample.clone(), 0.1), (bad, 0.2)])
        .unwrap_err();
    assert!(err.to_string().contains("batch[1].alpha"), "{err}");
    let err = learner.update(&[(sample.clone(), f64::NAN)]).unwrap_err();
    assert!(err.to_string().contains("batch[0].reward"), "{err}");
    let future = nat_policy::Sample {
        version: 5,
        ..sample
    };
    let err = learner.update(&[(future, 0.1)]).unwrap_err();
    assert!(err.to_string().contains("batch[0].version"), "{err}");
    assert_eq!(
        learner.version(),
        0,
        "rejected batches must not move the policy"
    );
}
