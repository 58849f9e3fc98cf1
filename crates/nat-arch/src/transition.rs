//! Transition spaces: which op an edge may become in one transformation.
//!
//! # NAT ([`Space::Nat`])
//! The official code gives every edge one of three actions, with no mask
//! ([`NatAction::ALL`] = `null, same, skip_connect`, NAT `genotypes.py` `TRANSFORM_PRIMITIVES`).
//! Effectively O→{O, S, N}, S→{S, N}, N→{N, S}: null may become skip (NAT-SPEC §2.1: the released
//! results use N→S). An O op never becomes a different O op.
//!
//! # NAT++ ([`Space::NatPlusPlus`])
//! The exact table of NATv2 `search_model.py` (NAT-SPEC §2.2); the order of each row is the
//! order of the logits the official code gathers, and the first entry is "same". The policy applies
//! a masked softmax over the 13-op list ([`Space::mask`]).
//!
//! Extension (not in the released table, documented here): the NAONet-only ops have no row in
//! the official table. We give them rows built from the figure's type and kernel rules, so that
//! NAONet genotypes can be checked: `conv_1x3_3x1` acts as a 3×3 conv
//! (→ itself, conv_1x1, sep/dil 3×3, pools 3×3, skip, null), `conv_1x7_7x1` as a 7×7 conv
//! (→ itself, conv_1x1, every sep/dil/pool of kernel 5 and 3, skip, null), and the 2×2 pools
//! may swap max↔avg at 2×2 or become skip or null. With these rows, exactly the two NAONet
//! NAT++ moves that NAT-SPEC §7 marks (!) are rejected.
//!
//! # Checking a transformation
//! [`Space::check_transition`] checks that B keeps every edge's (from, to) and every concat list
//! of A (a transformation only replaces ops) and that each op change is allowed, and returns the
//! changed edges. A node whose two inputs appear swapped in B (same sources, other order) is
//! matched by source.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::op_names;
use crate::genotype::{CellKind, Genotype};
use crate::op::{Op, OpClass, OpSet};

use Op::*;

/// A transition space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Space {
    /// NAT (NeurIPS 2019): {null, same, skip} per edge.
    #[serde(rename = "nat")]
    Nat,
    /// NAT++ (TPAMI, NATv2 code): the per-op table with a binary-masked softmax.
    #[serde(rename = "nat++")]
    NatPlusPlus,
}

/// One of NAT's three per-edge actions, in the official logit order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NatAction {
    /// Replace the op by `null`.
    Null,
    /// Keep the op.
    Same,
    /// Replace the op by `skip_connect`.
    Skip,
}

impl NatAction {
    /// The actions in the order of the policy's K = 3 logits (NAT `TRANSFORM_PRIMITIVES`).
    pub const ALL: [NatAction; 3] = [NatAction::Null, NatAction::Same, NatAction::Skip];

    /// The op an edge carrying `op` has after this action.
    pub fn apply(self, op: Op) -> Op {
        match self {
            NatAction::Null => Null,
            NatAction::Same => op,
            NatAction::Skip => SkipConnect,
        }
    }

    /// The first action (in logit order) that turns `old` into `new`, if any.
    pub fn between(old: Op, new: Op) -> Option<NatAction> {
        NatAction::ALL.into_iter().find(|a| a.apply(old) == new)
    }
}

/// An edge whose op differs between two genotypes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EdgeChange {
    /// Which cell.
    pub cell: CellKind,
    /// Destination node id (2..).
    pub node: usize,
    /// Position of the edge among the node's inputs in the *first* genotype (0 or 1).
    pub input: usize,
    /// Source node id.
    pub from: usize,
    /// Op in the first genotype.
    pub old: Op,
    /// Op in the second genotype.
    pub new: Op,
}

impl fmt::Display for EdgeChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} cell, edge {}->{} (node {}, input {}): {} => {}",
            self.cell, self.from, self.node, self.node, self.input, self.old, self.new
        )
    }
}

/// Why B is not one transformation of A.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The cells have different numbers of intermediate nodes.
    #[error("{cell} cell: {a} intermediate nodes in the first genotype but {b} in the second")]
    NodeCount { cell: CellKind, a: usize, b: usize },
    /// A node's inputs come from other nodes (the wiring changed).
    #[error(
        "{cell} cell, node {node}: inputs come from nodes {a:?} in the first genotype but {b:?} \
         in the second (rule: a transformation only replaces ops, it never rewires edges)"
    )]
    Rewired {
        cell: CellKind,
        node: usize,
        a: [usize; 2],
        b: [usize; 2],
    },
    /// The concat list changed.
    #[error(
        "{cell} cell: concat {a:?} became {b:?} (rule: a transformation keeps the concat list)"
    )]
    ConcatChanged {
        cell: CellKind,
        a: Vec<usize>,
        b: Vec<usize>,
    },
    /// One or more op changes the space does not allow.
    #[error("{} move(s) not allowed under {space}: {}", violations.len(), join(violations))]
    Disallowed {
        space: Space,
        violations: Vec<Violation>,
    },
}

fn join(v: &[Violation]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// One disallowed op change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The edge and its old and new op.
    pub change: EdgeChange,
    /// The space's rule that forbids it.
    pub rule: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is not allowed ({})", self.change, self.rule)
    }
}

/// NAT++ table rows (NATv2 `search_model.py` `Transition_Dict`), plus the documented NAONet rows.
fn nat_pp_targets(op: Op) -> &'static [Op] {
    match op {
        Conv5x5 => &[
            Conv5x5,
            Conv3x3,
            Conv1x1,
            SepConv5x5,
            SepConv3x3,
            DilConv5x5,
            DilConv3x3,
            MaxPool5x5,
            MaxPool3x3,
            AvgPool5x5,
            AvgPool3x3,
            SkipConnect,
            Null,
        ],
        Conv3x3 => &[
            Conv3x3,
            Conv1x1,
            SepConv3x3,
            DilConv3x3,
            MaxPool3x3,
            AvgPool3x3,
            SkipConnect,
            Null,
        ],
        Conv1x1 => &[Conv1x1, SkipConnect, Null],
        SepConv5x5 => &[
            SepConv5x5,
            SepConv3x3,
            DilConv5x5,
            DilConv3x3,
            MaxPool5x5,
            MaxPool3x3,
            AvgPool5x5,
            AvgPool3x3,
            SkipConnect,
            Null,
        ],
        SepConv3x3 => &[
            SepConv3x3,
            DilConv3x3,
            MaxPool3x3,
            AvgPool3x3,
            SkipConnect,
            Null,
        ],
        DilConv5x5 => &[
            DilConv5x5,
            DilConv3x3,
            MaxPool5x5,
            MaxPool3x3,
            AvgPool5x5,
            AvgPool3x3,
            SkipConnect,
            Null,
        ],
        DilConv3x3 => &[DilConv3x3, MaxPool3x3, AvgPool3x3, SkipConnect, Null],
        AvgPool5x5 => &[
            AvgPool5x5,
            AvgPool3x3,
            MaxPool5x5,
            MaxPool3x3,
            SkipConnect,
            Null,
        ],
        AvgPool3x3 => &[AvgPool3x3, MaxPool3x3, SkipConnect, Null],
        MaxPool5x5 => &[
            MaxPool5x5,
            MaxPool3x3,
            AvgPool5x5,
            AvgPool3x3,
            SkipConnect,
            Null,
        ],
        MaxPool3x3 => &[MaxPool3x3, AvgPool3x3, SkipConnect, Null],
        SkipConnect => &[SkipConnect, Null],
        Null => &[SkipConnect, Null],
        // Extension for the NAONet-only ops (see the module docs).
        Conv1x3_3x1 => &[
            Conv1x3_3x1,
            Conv1x1,
            SepConv3x3,
            DilConv3x3,
            MaxPool3x3,
            AvgPool3x3,
            SkipConnect,
            Null,
        ],
        Conv1x7_7x1 => &[
            Conv1x7_7x1,
            Conv1x1,
            SepConv5x5,
            SepConv3x3,
            DilConv5x5,
            DilConv3x3,
            MaxPool5x5,
            MaxPool3x3,
            AvgPool5x5,
            AvgPool3x3,
            SkipConnect,
            Null,
        ],
        AvgPool2x2 => &[AvgPool2x2, MaxPool2x2, SkipConnect, Null],
        MaxPool2x2 => &[MaxPool2x2, AvgPool2x2, SkipConnect, Null],
    }
}

/// NAT targets in action order (null, same, skip) with duplicates removed.
fn nat_targets(op: Op) -> &'static [Op] {
    match op {
        Null | SkipConnect => &[Null, SkipConnect],
        MaxPool3x3 => &[Null, MaxPool3x3, SkipConnect],
        MaxPool5x5 => &[Null, MaxPool5x5, SkipConnect],
        AvgPool3x3 => &[Null, AvgPool3x3, SkipConnect],
        AvgPool5x5 => &[Null, AvgPool5x5, SkipConnect],
        SepConv3x3 => &[Null, SepConv3x3, SkipConnect],
        SepConv5x5 => &[Null, SepConv5x5, SkipConnect],
        DilConv3x3 => &[Null, DilConv3x3, SkipConnect],
        DilConv5x5 => &[Null, DilConv5x5, SkipConnect],
        Conv1x1 => &[Null, Conv1x1, SkipConnect],
        Conv3x3 => &[Null, Conv3x3, SkipConnect],
        Conv5x5 => &[Null, Conv5x5, SkipConnect],
        Conv1x3_3x1 => &[Null, Conv1x3_3x1, SkipConnect],
        Conv1x7_7x1 => &[Null, Conv1x7_7x1, SkipConnect],
        AvgPool2x2 => &[Null, AvgPool2x2, SkipConnect],
        MaxPool2x2 => &[Null, MaxPool2x2, SkipConnect],
    }
}

impl Space {
    /// Both spaces.
    pub const ALL: [Space; 2] = [Space::Nat, Space::NatPlusPlus];

    /// `"nat"` or `"nat++"`.
    pub fn name(self) -> &'static str {
        match self {
            Space::Nat => "nat",
            Space::NatPlusPlus => "nat++",
        }
    }

    /// Parses `nat`, `nat++` (also `natpp`, `nat-plus-plus`, `natv2`), case-insensitive.
    pub fn from_name(name: &str) -> Option<Space> {
        match name.trim().to_ascii_lowercase().as_str() {
            "nat" | "natv1" => Some(Space::Nat),
            "nat++" | "natpp" | "nat-plus-plus" | "natv2" => Some(Space::NatPlusPlus),
            _ => None,
        }
    }

    /// The op list the policy embeds for this space: NAT's fully-concat list (the DARTS space;
    /// use [`OpSet::NatLooseEnd`] with [`Space::mask_in`] for ENAS-style cells) or the 13-op
    /// NAT++ list.
    pub fn op_set(self) -> OpSet {
        match self {
            Space::Nat => OpSet::NatFullyConcat,
            Space::NatPlusPlus => OpSet::NatPlusPlus,
        }
    }

    /// Number of logits per edge of the official policy head: 3 for NAT, 13 for NAT++.
    pub fn num_logits(self) -> usize {
        match self {
            Space::Nat => NatAction::ALL.len(),
            Space::NatPlusPlus => OpSet::NatPlusPlus.len(),
        }
    }

    /// The ops an edge carrying `op` may carry after one transformation, in the official
    /// candidate order (NAT: action order null, same, skip without duplicates; NAT++: the table
    /// row, "same" first). Never empty; always contains `op`'s `null` and `skip_connect` targets.
    pub fn allowed_targets(self, op: Op) -> &'static [Op] {
        match self {
            Space::Nat => nat_targets(op),
            Space::NatPlusPlus => nat_pp_targets(op),
        }
    }

    /// Whether `old` may become `new` in one transformation.
    pub fn allows(self, old: Op, new: Op) -> bool {
        self.allowed_targets(old).contains(&new)
    }

    /// Mask over `self.op_set().ops()`: `true` where the op is an allowed target of `op`.
    pub fn mask(self, op: Op) -> Vec<bool> {
        self.mask_in(op, self.op_set())
    }

    /// Mask over `set.ops()`: `true` where the op is an allowed target of `op`.
    pub fn mask_in(self, op: Op, set: OpSet) -> Vec<bool> {
        set.ops().iter().map(|&t| self.allows(op, t)).collect()
    }

    /// The rule text used in error messages for a disallowed `old => new`.
    fn rule(self, old: Op) -> String {
        match self {
            Space::Nat => {
                let class = match old.class() {
                    OpClass::Other => "an op may only stay itself or become skip_connect or null",
                    OpClass::Skip => "skip_connect may only become null or stay skip_connect",
                    OpClass::Null => "null may only become skip_connect or stay null",
                };
                format!("NAT rule: {class}")
            }
            Space::NatPlusPlus => format!(
                "NAT++ table: {old} may become only {}",
                op_names(self.allowed_targets(old))
            ),
        }
    }

    /// Checks that `b` is one transformation of `a` under this space and returns the changed
    /// edges (normal cell first, nodes and inputs in order). See the module docs.
    pub fn check_transition(
        self,
        a: &Genotype,
        b: &Genotype,
    ) -> Result<Vec<EdgeChange>, TransitionError> {
        let changes = edge_changes(a, b)?;
        let violations: Vec<Violation> = changes
            .iter()
            .filter(|c| !self.allows(c.old, c.new))
            .map(|&change| Violation {
                change,
                rule: self.rule(change.old),
            })
            .collect();
        if violations.is_empty() {
            Ok(changes)
        } else {
            Err(TransitionError::Disallowed {
                space: self,
                violations,
            })
        }
    }
}

/// The edges whose op differs between `a` and `b`, which must have the same wiring and concat
/// lists (whatever the space). Normal cell first, nodes and inputs in order; a node whose two
/// inputs appear swapped in `b` is matched by source.
pub fn edge_changes(a: &Genotype, b: &Genotype) -> Result<Vec<EdgeChange>, TransitionError> {
    let mut changes = Vec::new();
    for kind in CellKind::ALL {
        let (ca, cb) = (a.cell(kind), b.cell(kind));
        if ca.nodes.len() != cb.nodes.len() {
            return Err(TransitionError::NodeCount {
                cell: kind,
                a: ca.nodes.len(),
                b: cb.nodes.len(),
            });
        }
        for (i, (na, nb)) in ca.nodes.iter().zip(&cb.nodes).enumerate() {
            let node = i + 2;
            let [a0, a1] = na.inputs;
            let [b0, b1] = nb.inputs;
            let pairs = if a0.from == b0.from && a1.from == b1.from {
                [(a0, b0), (a1, b1)]
            } else if a0.from == b1.from && a1.from == b0.from {
                [(a0, b1), (a1, b0)]
            } else {
                return Err(TransitionError::Rewired {
                    cell: kind,
                    node,
                    a: [a0.from, a1.from],
                    b: [b0.from, b1.from],
                });
            };
            for (input, (ea, eb)) in pairs.into_iter().enumerate() {
                if ea.op != eb.op {
                    changes.push(EdgeChange {
                        cell: kind,
                        node,
                        input,
                        from: ea.from,
                        old: ea.op,
                        new: eb.op,
                    });
                }
            }
        }
        let (mut sa, mut sb) = (ca.concat.clone(), cb.concat.clone());
        sa.sort_unstable();
        sb.sort_unstable();
        if sa != sb {
            return Err(TransitionError::ConcatChanged {
                cell: kind,
                a: ca.concat.clone(),
                b: cb.concat.clone(),
            });
        }
    }
    Ok(changes)
}

impl fmt::Display for Space {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Space::Nat => "NAT",
            Space::NatPlusPlus => "NAT++",
        })
    }
}

impl std::str::FromStr for Space {
    type Err = String;
    fn from_str(s: &str) -> Result<Space, String> {
        Space::from_name(s).ok_or_else(|| format!("unknown space `{s}` (expected nat or nat++)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presets::{self, PresetKind};

    /// NAT-SPEC §2.2, transcribed with the spec's short names.
    const SPEC_TABLE: &[(&str, &str)] = &[
        (
            "conv_5x5",
            "c5 c3 c1 sep5 sep3 dil5 dil3 max5 max3 avg5 avg3 skip null",
        ),
        ("conv_3x3", "c3 c1 sep3 dil3 max3 avg3 skip null"),
        ("conv_1x1", "c1 skip null"),
        (
            "sep_conv_5x5",
            "sep5 sep3 dil5 dil3 max5 max3 avg5 avg3 skip null",
        ),
        ("sep_conv_3x3", "sep3 dil3 max3 avg3 skip null"),
        ("dil_conv_5x5", "dil5 dil3 max5 max3 avg5 avg3 skip null"),
        ("dil_conv_3x3", "dil3 max3 avg3 skip null"),
        ("avg_pool_5x5", "avg5 avg3 max5 max3 skip null"),
        ("avg_pool_3x3", "avg3 max3 skip null"),
        ("max_pool_5x5", "max5 max3 avg5 avg3 skip null"),
        ("max_pool_3x3", "max3 avg3 skip null"),
        ("skip_connect", "skip null"),
        ("null", "skip null"),
    ];

    #[test]
    fn nat_pp_table_matches_spec() {
        assert_eq!(SPEC_TABLE.len(), OpSet::NatPlusPlus.len());
        for (name, row) in SPEC_TABLE {
            let op = Op::from_name(name).expect("op");
            let want: Vec<Op> = row
                .split(' ')
                .map(|s| Op::from_name_lenient(s).expect("short name"))
                .collect();
            assert_eq!(
                Space::NatPlusPlus.allowed_targets(op),
                want.as_slice(),
                "{name}"
            );
        }
    }

    #[test]
    fn nat_classes() {
        for op in Op::ALL {
            let t = Space::Nat.allowed_targets(op);
            assert!(t.contains(&Null) && t.contains(&SkipConnect) && t.contains(&op));
            // O never becomes another O.
            assert!(t.iter().all(|&x| x == op || x.class() != OpClass::Other));
            for a in NatAction::ALL {
                assert!(Space::Nat.allows(op, a.apply(op)));
            }
        }
        assert!(Space::Nat.allows(Null, SkipConnect));
        assert!(!Space::Nat.allows(SkipConnect, Conv3x3));
        assert_eq!(NatAction::between(Null, SkipConnect), Some(NatAction::Skip));
        assert_eq!(NatAction::between(Conv3x3, Conv3x3), Some(NatAction::Same));
        assert_eq!(NatAction::between(Conv3x3, SepConv3x3), None);
    }

    #[test]
    fn masks_match_targets() {
        for space in Space::ALL {
            for &op in space.op_set().ops() {
                let mask = space.mask(op);
                assert_eq!(mask.len(), space.op_set().len());
                let masked: Vec<Op> = space
                    .op_set()
                    .ops()
                    .iter()
                    .zip(&mask)
                    .filter(|(_, &m)| m)
                    .map(|(&o, _)| o)
                    .collect();
                let mut want: Vec<Op> = space.allowed_targets(op).to_vec();
                want.sort();
                let mut got = masked.clone();
                got.sort();
                assert_eq!(got, want, "{space} {op}");
            }
        }
    }

    /// NAT-SPEC §7: every published output is reachable from its input under its own space,
    /// except the NAONet moves marked (!).
    #[test]
    fn published_outputs() {
        for p in presets::all() {
            let PresetKind::Output { input, space } = p.kind else {
                continue;
            };
            let a = presets::get(input).expect("input").genotype();
            let b = p.genotype();
            let res = space.check_transition(&a, &b);
            match p.name {
                "naonet.nat" => {
                    let Err(TransitionError::Disallowed { violations, .. }) = res else {
                        panic!("naonet.nat should fail: {res:?}");
                    };
                    let edges: Vec<_> = violations
                        .iter()
                        .map(|v| {
                            (
                                v.change.cell,
                                v.change.from,
                                v.change.node,
                                v.change.old,
                                v.change.new,
                            )
                        })
                        .collect();
                    assert_eq!(
                        edges,
                        vec![(CellKind::Reduce, 1, 2, AvgPool2x2, AvgPool3x3)]
                    );
                }
                "naonet.nat++" => {
                    let Err(TransitionError::Disallowed { violations, .. }) = res else {
                        panic!("naonet.nat++ should fail: {res:?}");
                    };
                    let edges: Vec<_> = violations
                        .iter()
                        .map(|v| {
                            (
                                v.change.cell,
                                v.change.from,
                                v.change.node,
                                v.change.old,
                                v.change.new,
                            )
                        })
                        .collect();
                    assert_eq!(
                        edges,
                        vec![
                            (CellKind::Normal, 0, 4, Conv1x1, MaxPool3x3),
                            (CellKind::Reduce, 0, 3, Conv1x1, AvgPool3x3)
                        ]
                    );
                }
                _ => {
                    assert!(res.is_ok(), "{}: {res:?}", p.name);
                }
            }
        }
    }

    #[test]
    fn darts_nat_changes_match_spec() {
        let a = presets::get("darts-v2").expect("p").genotype();
        let b = presets::get("darts-v2.nat").expect("p").genotype();
        let ch: Vec<String> = Space::Nat
            .check_transition(&a, &b)
            .expect("allowed")
            .iter()
            .map(|c| {
                format!(
                    "{} ({}->{}) {}=>{}",
                    c.cell,
                    c.from,
                    c.node,
                    c.old.short_name(),
                    c.new.short_name()
                )
            })
            .collect();
        assert_eq!(
            ch,
            [
                "normal (0->3) sep3=>skip",
                "normal (1->4) sep3=>skip",
                "reduce (1->2) max3=>skip",
                "reduce (1->3) max3=>skip",
                "reduce (2->4) skip=>null"
            ]
        );
        // NAT++ output under plain NAT is not reachable (sep3 => dil3 is O => other O).
        let c = presets::get("darts-v2.nat++").expect("p").genotype();
        let err = Space::Nat.check_transition(&a, &c).unwrap_err();
        assert!(err.to_string().contains("normal cell, edge 1->4"), "{err}");
    }

    #[test]
    fn rewiring_and_concat_changes_are_rejected() {
        let a = presets::get("darts-v2").expect("p").genotype();
        let mut b = a.clone();
        b.normal.nodes[2].inputs[0].from = 3;
        assert!(matches!(
            Space::Nat.check_transition(&a, &b),
            Err(TransitionError::Rewired {
                cell: CellKind::Normal,
                node: 4,
                ..
            })
        ));
        let mut b = a.clone();
        b.reduce.concat = vec![2, 3];
        assert!(matches!(
            Space::NatPlusPlus.check_transition(&a, &b),
            Err(TransitionError::ConcatChanged {
                cell: CellKind::Reduce,
                ..
            })
        ));
        // Swapped inputs are matched by source.
        let mut b = a.clone();
        b.normal.nodes[2].inputs.swap(0, 1);
        assert_eq!(Space::Nat.check_transition(&a, &b), Ok(vec![]));
    }
}
