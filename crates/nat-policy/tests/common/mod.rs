//! Helpers shared by the integration tests.
#![allow(dead_code)]

use nat_arch::{Cell, Edge, Genotype, Node, Op, OpSet};
use nat_policy::{ActionSpace, PolicyConfig, Precision, Profile};

/// Small dimensions so the tests run in seconds (the production defaults are E=100, F=1024, G=100).
pub fn small_config(space: ActionSpace, profile: Profile) -> PolicyConfig {
    let mut config = PolicyConfig::new(space, profile);
    config.embed_dim = 8;
    config.feature_dim = 32;
    config.hidden_dim = 16;
    config.precision = Precision::F32;
    config
}

/// A cell from `(op, from)` pairs, two per node.
pub fn cell(edges: &[(Op, usize)]) -> Cell {
    let nodes: Vec<Node> = edges
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
        .collect();
    let concat = (2..nodes.len() + 2).collect();
    Cell { nodes, concat }
}

/// DARTS_V2 (NAT-SPEC §7), valid in every space used here.
pub fn darts_v2() -> Genotype {
    use Op::*;
    Genotype {
        normal: cell(&[
            (SepConv3x3, 0),
            (SepConv3x3, 1),
            (SepConv3x3, 0),
            (SepConv3x3, 1),
            (SepConv3x3, 1),
            (SkipConnect, 0),
            (SkipConnect, 0),
            (DilConv3x3, 2),
        ]),
        reduce: cell(&[
            (MaxPool3x3, 0),
            (MaxPool3x3, 1),
            (SkipConnect, 2),
            (MaxPool3x3, 1),
            (MaxPool3x3, 0),
            (SkipConnect, 2),
            (SkipConnect, 2),
            (MaxPool3x3, 1),
        ]),
    }
}

/// The op list of a space, as `nat_arch` names it.
pub fn arch_space(space: ActionSpace) -> nat_arch::Space {
    match space {
        ActionSpace::Nat(_) => nat_arch::Space::Nat,
        ActionSpace::NatPlusPlus => nat_arch::Space::NatPlusPlus,
    }
}

/// Every space the policy supports.
pub const SPACES: [ActionSpace; 3] = [
    ActionSpace::Nat(OpSet::NatFullyConcat),
    ActionSpace::Nat(OpSet::NatLooseEnd),
    ActionSpace::NatPlusPlus,
];
