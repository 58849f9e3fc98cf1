//! Unit tests that need crate internals: the finite-difference gradient check of the loss.

use candle_core::Tensor;
use nat_arch::{Cell, Edge, Genotype, Node, Op, OpSet};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::{ActionSpace, PolicyConfig, PolicyLearner, Precision, Profile, Sample};

fn small_config(space: ActionSpace, profile: Profile) -> PolicyConfig {
    let mut config = PolicyConfig::new(space, profile);
    config.embed_dim = 4;
    config.feature_dim = 6;
    config.hidden_dim = 5;
    config.precision = Precision::F64;
    config
}

fn cell(edges: &[(Op, usize)], concat: Vec<usize>) -> Cell {
    Cell {
        nodes: edges
            .chunks(2)
            .map(|pair| Node {
                inputs: [
                    Edge {
                        op: pair[0].0,
                        from: pair[0].1,
                    },
                    Edge {
                        op: pair[1].0,
                        from: pair[1].1,
                    },
                ],
            })
            .collect(),
        concat,
    }
}

fn inputs() -> Vec<Genotype> {
    use Op::*;
    let a = cell(
        &[
            (SepConv3x3, 0),
            (Conv3x3, 1),
            (SkipConnect, 0),
            (MaxPool3x3, 2),
            (DilConv3x3, 1),
            (Null, 3),
        ],
        vec![2, 3, 4],
    );
    let b = cell(
        &[
            (AvgPool3x3, 1),
            (SepConv5x5, 0),
            (Conv3x3, 2),
            (SkipConnect, 1),
            (DilConv5x5, 3),
            (SepConv3x3, 2),
            (MaxPool3x3, 0),
            (Null, 4),
        ],
        vec![5],
    );
    vec![
        Genotype {
            normal: a.clone(),
            reduce: b.clone(),
        },
        Genotype {
            normal: b,
            reduce: a,
        },
    ]
}

/// Sets scalar `j` of parameter `p` to `value` and returns the previous value.
fn set_scalar(learner: &PolicyLearner, p: usize, j: usize, value: f64) -> f64 {
    let var = &learner.net.params()[p];
    let mut values = var
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let old = values[j];
    values[j] = value;
    let t = Tensor::from_vec(values, var.dims(), var.device()).unwrap();
    var.set(&t).unwrap();
    old
}

fn loss_value(learner: &PolicyLearner, samples: &[&Sample], adv: &[f64]) -> f64 {
    learner
        .loss(samples, adv)
        .unwrap()
        .0
        .to_scalar::<f64>()
        .unwrap()
}

fn gradient_check(space: ActionSpace, profile: Profile) {
    let learner = PolicyLearner::new(small_config(space, profile), 7).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut samples = learner.sample(&inputs(), 2, &mut rng).unwrap();
    // Move the recorded log π away from the current one so the ratios cover the inside of the
    // clip range and both clipped sides (away from the kinks at 1 ± ε).
    let shifts = [0.05, -0.6, 0.6, -0.1];
    for (s, shift) in samples.iter_mut().zip(shifts) {
        s.log_prob += shift;
    }
    let adv = [0.7, 0.4, -0.3, -0.9];
    let refs: Vec<&Sample> = samples.iter().collect();
    let (loss, _) = learner.loss(&refs, &adv).unwrap();
    let grads = loss.backward().unwrap();
    let h = 1e-6;
    let mut checked = 0;
    let mut nonzero = 0;
    for (p, var) in learner.net.params().iter().enumerate() {
        let analytic = grads
            .get(var.as_tensor())
            .map(|g| g.flatten_all().unwrap().to_vec1::<f64>().unwrap())
            .unwrap_or_else(|| vec![0.0; var.elem_count()]);
        for (j, &ad) in analytic.iter().enumerate() {
            let old = set_scalar(&learner, p, j, f64::NAN);
            set_scalar(&learner, p, j, old + h);
            let plus = loss_value(&learner, &refs, &adv);
            set_scalar(&learner, p, j, old - h);
            let minus = loss_value(&learner, &refs, &adv);
            set_scalar(&learner, p, j, old);
            let fd = (plus - minus) / (2.0 * h);
            let tol = 1e-6 + 1e-4 * ad.abs().max(fd.abs());
            assert!(
                (fd - ad).abs() <= tol,
                "{space:?}/{profile:?} param {p} elem {j}: autograd {ad} vs finite difference {fd}"
            );
            checked += 1;
            if ad.abs() > 1e-8 {
                nonzero += 1;
            }
        }
    }
    assert!(checked > 150, "checked {checked} scalars");
    assert!(
        nonzero > checked / 4,
        "only {nonzero} of {checked} gradients are non-zero"
    );
}

#[test]
fn loss_gradient_matches_finite_differences_nat_pp_reference() {
    gradient_check(ActionSpace::NatPlusPlus, Profile::Reference);
}

#[test]
fn loss_gradient_matches_finite_differences_nat_pp_default() {
    gradient_check(ActionSpace::NatPlusPlus, Profile::Default);
}

#[test]
fn loss_gradient_matches_finite_differences_nat() {
    gradient_check(ActionSpace::Nat(OpSet::NatFullyConcat), Profile::Reference);
    gradient_check(ActionSpace::Nat(OpSet::NatFullyConcat), Profile::Default);
}

#[test]
fn reference_profile_reproduces_the_receptive_field_quirk() {
    use Op::*;
    let space = ActionSpace::NatPlusPlus;
    let reference = PolicyLearner::new(small_config(space, Profile::Reference), 1).unwrap();
    let fixed = PolicyLearner::new(small_config(space, Profile::Default), 1).unwrap();
    // Same wiring, different ops everywhere.
    let a = cell(
        &[
            (SepConv3x3, 0),
            (Conv3x3, 1),
            (SkipConnect, 0),
            (MaxPool3x3, 2),
        ],
        vec![2, 3],
    );
    let b = cell(
        &[(Conv5x5, 0), (AvgPool3x3, 1), (DilConv5x5, 0), (Conv1x1, 2)],
        vec![2, 3],
    );
    let (ra, rb) = (reference.logits(&a).unwrap(), reference.logits(&b).unwrap());
    // Node 2 (edges 0, 1): a learned constant. Node 3 (edges 2, 3) depends on wiring only,
    // since its two-hop receptive field is nodes 0/1 whose features are op-independent.
    assert_eq!(
        ra, rb,
        "reference logits must ignore the ops of this 2-node cell"
    );
    let (fa, fb) = (fixed.logits(&a).unwrap(), fixed.logits(&b).unwrap());
    assert_ne!(
        fa[0], fb[0],
        "default profile: node 2 sees its own in-edge ops"
    );
}
