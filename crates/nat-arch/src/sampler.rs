//! The input-architecture sampler p(β) of NAT-SPEC §4.2.
//!
//! For each intermediate node t = 2..B+1, in order: draw two sources uniformly from {0..t-1}
//! (with replacement), then two ops uniformly from every op of the set except the trailing
//! `null` ([`OpSet::non_null_ops`]). Inputs therefore never contain null edges.
//!
//! The concat list (which the supernet ignores, NAT-SPEC §1.3) is filled so that the genotype is
//! valid and matches the op set's mode: every intermediate node for the fully-concat and NAT++
//! sets, the nodes no other node uses ("loose ends") for the loose-end set.
//!
//! The draw order is fixed, so a seed gives the same genotype on every platform:
//! [`sample_genotype_seeded`] uses `ChaCha8Rng::seed_from_u64(seed)` and samples the normal cell
//! first, then the reduction cell.

use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::genotype::{Cell, Edge, Genotype, Node};
use crate::op::OpSet;

/// Samples one cell with `num_nodes` intermediate nodes (`num_nodes` ≥ 1; 0 gives an empty,
/// invalid cell).
pub fn sample_cell<R: Rng + ?Sized>(set: OpSet, num_nodes: usize, rng: &mut R) -> Cell {
    let ops = set.non_null_ops();
    let mut nodes = Vec::with_capacity(num_nodes);
    for i in 0..num_nodes {
        let t = i + 2;
        let f0 = rng.gen_range(0..t);
        let f1 = rng.gen_range(0..t);
        let o0 = ops[rng.gen_range(0..ops.len())];
        let o1 = ops[rng.gen_range(0..ops.len())];
        nodes.push(Node::new(Edge::new(o0, f0), Edge::new(o1, f1)));
    }
    let concat = match set {
        OpSet::NatLooseEnd => {
            let mut used = vec![false; num_nodes + 2];
            for node in &nodes {
                for e in &node.inputs {
                    if let Some(u) = used.get_mut(e.from) {
                        *u = true;
                    }
                }
            }
            (2..num_nodes + 2).filter(|&n| !used[n]).collect()
        }
        OpSet::NatFullyConcat | OpSet::NatPlusPlus => (2..num_nodes + 2).collect(),
    };
    Cell { nodes, concat }
}

/// Samples a genotype (normal cell, then reduction cell).
pub fn sample_genotype<R: Rng + ?Sized>(set: OpSet, num_nodes: usize, rng: &mut R) -> Genotype {
    let normal = sample_cell(set, num_nodes, rng);
    let reduce = sample_cell(set, num_nodes, rng);
    Genotype { normal, reduce }
}

/// Samples a genotype from a fresh `ChaCha8Rng` seeded with `seed`.
pub fn sample_genotype_seeded(set: OpSet, num_nodes: usize, seed: u64) -> Genotype {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    sample_genotype(set, num_nodes, &mut rng)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::Op;

    #[test]
    fn seeded_and_valid() {
        for set in OpSet::ALL {
            for b in 1..7 {
                for seed in 0..50 {
                    let g = sample_genotype_seeded(set, b, seed);
                    assert_eq!(g.validate(), Ok(()), "{set} B={b} seed={seed}");
                    assert_eq!(g.validate_ops(set), Ok(()));
                    assert_eq!(g, sample_genotype_seeded(set, b, seed));
                    assert!(g
                        .normal
                        .edges()
                        .chain(g.reduce.edges())
                        .all(|e| e.0 != Op::Null));
                }
            }
        }
        assert_ne!(
            sample_genotype_seeded(OpSet::NatPlusPlus, 4, 1),
            sample_genotype_seeded(OpSet::NatPlusPlus, 4, 2)
        );
    }

    #[test]
    fn loose_end_concat_is_the_unused_nodes() {
        for seed in 0..100 {
            let g = sample_genotype_seeded(OpSet::NatLooseEnd, 5, seed);
            for cell in [&g.normal, &g.reduce] {
                for n in 2..7 {
                    let used = cell.edges().any(|e| e.1 == n);
                    assert_eq!(cell.concat.contains(&n), !used);
                }
            }
        }
    }

    /// Uniformity: over many draws, each source of node 4 (0..=3) and each non-null op appear
    /// with frequency close to uniform (5 sigma bounds, so the test is not flaky).
    #[test]
    fn draws_are_uniform() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let set = OpSet::NatPlusPlus;
        let n = 20_000;
        let mut src = [0usize; 4];
        let mut ops = vec![0usize; set.len()];
        for _ in 0..n {
            let c = sample_cell(set, 3, &mut rng);
            src[c.nodes[2].inputs[0].from] += 1;
            for e in c.nodes.iter().flat_map(|x| x.inputs) {
                ops[set.index_of(e.op).unwrap_or(0)] += 1;
            }
        }
        let check = |count: usize, total: usize, k: usize| {
            let p = 1.0 / k as f64;
            let mean = total as f64 * p;
            let sd = (total as f64 * p * (1.0 - p)).sqrt();
            (count as f64 - mean).abs() < 5.0 * sd
        };
        assert!(src.iter().all(|&c| check(c, n, 4)), "{src:?}");
        let total: usize = ops.iter().sum();
        assert_eq!(ops[set.len() - 1], 0, "null never drawn");
        assert!(
            ops[..set.len() - 1].iter().all(|&c| check(c, total, 12)),
            "{ops:?}"
        );
    }
}
