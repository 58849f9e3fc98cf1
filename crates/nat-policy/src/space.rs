//! The action spaces the policy chooses from, per edge.
//!
//! - NAT (K = 3): actions `null`, `same`, `skip_connect` (NAT `TRANSFORM_PRIMITIVES`), no mask.
//!   `same` keeps the input op; N → S is allowed (NAT-SPEC §2.1).
//! - NAT++ (K = 13): one action per primitive of the NAT++ op list; the action is the output op.
//!   Only the moves of the NATv2 transition table (NAT-SPEC §2.2) are allowed; the policy applies
//!   a masked softmax over them.
//!
//! The NAT++ table is kept here until `nat-arch` exports its transition module; both follow the
//! spec table verbatim and the property tests check every sampled move against it.

use nat_arch::{Op, OpSet};
use serde::{Deserialize, Serialize};

use crate::error::{PolicyError, Result};

/// Which transformation space the policy acts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionSpace {
    /// NAT: 3 actions per edge over one of the two 9-op NAT lists.
    Nat(OpSet),
    /// NAT++: 13 masked actions over the NAT++ op list.
    NatPlusPlus,
}

/// NAT action index of `null`.
pub const NAT_NULL: usize = 0;
/// NAT action index of `same`.
pub const NAT_SAME: usize = 1;
/// NAT action index of `skip_connect`.
pub const NAT_SKIP: usize = 2;

impl ActionSpace {
    /// The op list whose indices the policy embeds.
    pub fn op_set(self) -> OpSet {
        match self {
            ActionSpace::Nat(set) => set,
            ActionSpace::NatPlusPlus => OpSet::NatPlusPlus,
        }
    }

    /// Number of logits per edge (K).
    pub fn num_actions(self) -> usize {
        match self {
            ActionSpace::Nat(_) => 3,
            ActionSpace::NatPlusPlus => OpSet::NatPlusPlus.len(),
        }
    }

    /// Checks that the space is usable (NAT must use a 9-op NAT list).
    pub fn validate(self) -> Result<()> {
        match self {
            ActionSpace::Nat(OpSet::NatPlusPlus) => Err(PolicyError::invalid(
                "config.space",
                "NAT (3 actions) is defined over the NAT op lists; use nat-plus-plus for the 13-op list",
            )),
            _ => Ok(()),
        }
    }

    /// The ops an edge carrying `input` may become, in the official candidate order
    /// (NAT++: the spec table; NAT: `same`, `skip_connect`, `null` outcomes, deduplicated).
    pub fn allowed_targets(self, input: Op) -> Vec<Op> {
        match self {
            ActionSpace::Nat(_) => {
                let mut out = vec![input];
                for op in [Op::SkipConnect, Op::Null] {
                    if !out.contains(&op) {
                        out.push(op);
                    }
                }
                out
            }
            ActionSpace::NatPlusPlus => nat_pp_targets(input).to_vec(),
        }
    }

    /// A transformation of `input` drawn uniformly from the space, edge by edge: each edge's op
    /// becomes one of [`ActionSpace::allowed_targets`] with equal probability (uniform over the
    /// distinct outcomes, not over actions: in NAT `same` and `skip` of a skip edge are one
    /// outcome). The derive control of an optimize job draws its candidates this way.
    pub fn uniform_transform<R: rand::Rng + ?Sized>(
        self,
        input: &nat_arch::Genotype,
        rng: &mut R,
    ) -> nat_arch::Genotype {
        let mut alpha = input.clone();
        for cell in [&mut alpha.normal, &mut alpha.reduce] {
            for node in &mut cell.nodes {
                for edge in &mut node.inputs {
                    let targets = self.allowed_targets(edge.op);
                    if !targets.is_empty() {
                        edge.op = targets[rng.gen_range(0..targets.len())];
                    }
                }
            }
        }
        alpha
    }

    /// Which of the K actions are allowed for an edge carrying `input`.
    pub fn mask(self, input: Op) -> Vec<bool> {
        match self {
            ActionSpace::Nat(_) => vec![true; 3],
            ActionSpace::NatPlusPlus => {
                let targets = nat_pp_targets(input);
                OpSet::NatPlusPlus
                    .ops()
                    .iter()
                    .map(|op| targets.contains(op))
                    .collect()
            }
        }
    }

    /// The output op of taking `action` on an edge carrying `input`.
    /// `None` when the action index is out of range or masked.
    pub fn apply(self, input: Op, action: usize) -> Option<Op> {
        match self {
            ActionSpace::Nat(_) => match action {
                NAT_NULL => Some(Op::Null),
                NAT_SAME => Some(input),
                NAT_SKIP => Some(Op::SkipConnect),
                _ => None,
            },
            ActionSpace::NatPlusPlus => {
                let op = *OpSet::NatPlusPlus.ops().get(action)?;
                nat_pp_targets(input).contains(&op).then_some(op)
            }
        }
    }

    /// The actions that turn `input` into `output` (several in NAT: S→S by `same` or `skip`,
    /// N→N by `same` or `null`). Empty when the move is not allowed.
    pub fn actions_for(self, input: Op, output: Op) -> Vec<usize> {
        (0..self.num_actions())
            .filter(|&a| self.apply(input, a) == Some(output))
            .collect()
    }
}

/// The NATv2 transition table (NAT-SPEC §2.2, `search_model.py:10-24`), official order. The one
/// copy lives in nat-arch; ops outside the NAT++ list are rejected before it is consulted.
fn nat_pp_targets(input: Op) -> &'static [Op] {
    nat_arch::transition::Space::NatPlusPlus.allowed_targets(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Uniform transformations are valid outputs of the space, keep the wiring, and reach every
    /// allowed outcome of an edge about equally often.
    #[test]
    fn uniform_transforms_are_valid_and_cover_the_outcomes() {
        use rand::SeedableRng;
        let input = nat_arch::presets::get("darts-v2")
            .expect("preset")
            .genotype();
        for space in [
            ActionSpace::Nat(OpSet::NatFullyConcat),
            ActionSpace::NatPlusPlus,
        ] {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
            let first = input.normal.nodes[0].inputs[0].op;
            let targets = space.allowed_targets(first);
            let mut counts = vec![0usize; targets.len()];
            let n = 3000;
            for _ in 0..n {
                let alpha = space.uniform_transform(&input, &mut rng);
                crate::input::validate_output(space, &input, &alpha, "alpha").expect("valid");
                let op = alpha.normal.nodes[0].inputs[0].op;
                let i = targets.iter().position(|t| *t == op).expect("allowed");
                counts[i] += 1;
            }
            let expected = n as f64 / targets.len() as f64;
            for c in counts {
                assert!(
                    (c as f64 - expected).abs() < 0.15 * expected,
                    "{c} vs {expected}"
                );
            }
        }
    }

    #[test]
    fn nat_actions_follow_the_released_code() {
        let space = ActionSpace::Nat(OpSet::NatFullyConcat);
        assert_eq!(space.apply(Op::SepConv3x3, NAT_SAME), Some(Op::SepConv3x3));
        assert_eq!(space.apply(Op::Null, NAT_SKIP), Some(Op::SkipConnect));
        assert_eq!(space.apply(Op::SepConv3x3, 3), None);
        assert_eq!(
            space.actions_for(Op::SkipConnect, Op::SkipConnect),
            vec![1, 2]
        );
        assert_eq!(space.actions_for(Op::Null, Op::Null), vec![0, 1]);
        assert!(space
            .actions_for(Op::SkipConnect, Op::SepConv3x3)
            .is_empty());
    }

    #[test]
    fn nat_pp_mask_matches_the_table() {
        let space = ActionSpace::NatPlusPlus;
        for &op in OpSet::NatPlusPlus.ops() {
            let mask = space.mask(op);
            let allowed: Vec<Op> = OpSet::NatPlusPlus
                .ops()
                .iter()
                .zip(&mask)
                .filter(|(_, &m)| m)
                .map(|(&o, _)| o)
                .collect();
            let mut expected = space.allowed_targets(op);
            expected.sort();
            let mut got = allowed.clone();
            got.sort();
            assert_eq!(got, expected, "mask of {op}");
            assert!(mask[OpSet::NatPlusPlus.index_of(Op::Null).unwrap_or(0)]);
        }
        assert_eq!(space.allowed_targets(Op::Conv3x3).len(), 8);
        assert_eq!(
            space.apply(Op::SkipConnect, 5),
            None,
            "skip cannot become sep_conv_3x3"
        );
    }
}
