//! Structural validation of cells and genotypes.
//!
//! A valid cell has at least one intermediate node; every edge of node `t` comes from a node
//! `< t` (so the graph is a DAG in topological order, and cycles or forward references are
//! impossible); the concat list is non-empty, lists intermediate nodes only (`2..=B+1`) and no node
//! twice. A valid genotype has two valid cells with the same number of intermediate nodes B.
//! Validation does not restrict ops to an op set; use [`Genotype::validate_ops`] for that.

use crate::error::{op_names, ArchError};
use crate::genotype::{Cell, CellKind, Genotype};
use crate::op::OpSet;

impl Cell {
    /// Checks the structure of this cell (see the module docs); `kind` names the cell in errors.
    pub fn validate(&self, kind: CellKind) -> Result<(), ArchError> {
        if self.nodes.is_empty() {
            return Err(ArchError::NoNodes { cell: kind });
        }
        for (i, node) in self.nodes.iter().enumerate() {
            let id = i + 2;
            for (input, edge) in node.inputs.iter().enumerate() {
                if edge.from >= id {
                    return Err(ArchError::BadSource {
                        cell: kind,
                        node: id,
                        input,
                        from: edge.from,
                        max: id - 1,
                    });
                }
            }
        }
        if self.concat.is_empty() {
            return Err(ArchError::EmptyConcat { cell: kind });
        }
        let max = self.nodes.len() + 1;
        let mut seen = vec![false; max + 1];
        for &c in &self.concat {
            if !(2..=max).contains(&c) {
                return Err(ArchError::ConcatOutOfRange {
                    cell: kind,
                    node: c,
                    max,
                });
            }
            if seen[c] {
                return Err(ArchError::ConcatDuplicate {
                    cell: kind,
                    node: c,
                });
            }
            seen[c] = true;
        }
        Ok(())
    }

    /// Checks that every op of this cell belongs to `set`.
    pub fn validate_ops(&self, kind: CellKind, set: OpSet) -> Result<(), ArchError> {
        for (i, node) in self.nodes.iter().enumerate() {
            for (input, edge) in node.inputs.iter().enumerate() {
                if set.index_of(edge.op).is_none() {
                    return Err(ArchError::OpNotInSet {
                        cell: kind,
                        node: i + 2,
                        input,
                        op: edge.op,
                        set,
                        valid: op_names(set.ops()),
                    });
                }
            }
        }
        Ok(())
    }
}

impl Genotype {
    /// Checks both cells and that they have the same number of intermediate nodes.
    pub fn validate(&self) -> Result<(), ArchError> {
        self.normal.validate(CellKind::Normal)?;
        self.reduce.validate(CellKind::Reduce)?;
        if self.normal.nodes.len() != self.reduce.nodes.len() {
            return Err(ArchError::MismatchedNodes {
                normal: self.normal.nodes.len(),
                reduce: self.reduce.nodes.len(),
            });
        }
        Ok(())
    }

    /// Checks that every op of both cells belongs to `set` (the policy can only embed those).
    pub fn validate_ops(&self, set: OpSet) -> Result<(), ArchError> {
        self.normal.validate_ops(CellKind::Normal, set)?;
        self.reduce.validate_ops(CellKind::Reduce, set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Edge, Node, Op};

    fn node(a: (Op, usize), b: (Op, usize)) -> Node {
        Node {
            inputs: [Edge { op: a.0, from: a.1 }, Edge { op: b.0, from: b.1 }],
        }
    }

    fn small() -> Genotype {
        let cell = Cell {
            nodes: vec![
                node((Op::SepConv3x3, 0), (Op::SkipConnect, 1)),
                node((Op::Conv3x3, 2), (Op::Null, 0)),
            ],
            concat: vec![2, 3],
        };
        Genotype {
            normal: cell.clone(),
            reduce: cell,
        }
    }

    #[test]
    fn valid_genotype_passes() {
        assert_eq!(small().validate(), Ok(()));
    }

    #[test]
    fn forward_reference_names_cell_node_and_input() {
        let mut g = small();
        g.reduce.nodes[1].inputs[1].from = 3;
        let err = g.validate().unwrap_err();
        assert_eq!(
            err,
            ArchError::BadSource {
                cell: CellKind::Reduce,
                node: 3,
                input: 1,
                from: 3,
                max: 2
            }
        );
        let msg = err.to_string();
        assert!(msg.contains("reduce cell, node 3, input 1"), "{msg}");
    }

    #[test]
    fn concat_errors() {
        let mut g = small();
        g.normal.concat.clear();
        assert_eq!(
            g.validate(),
            Err(ArchError::EmptyConcat {
                cell: CellKind::Normal
            })
        );
        let mut g = small();
        g.normal.concat = vec![1];
        assert!(matches!(
            g.validate(),
            Err(ArchError::ConcatOutOfRange {
                node: 1,
                max: 3,
                ..
            })
        ));
        let mut g = small();
        g.normal.concat = vec![4];
        assert!(matches!(
            g.validate(),
            Err(ArchError::ConcatOutOfRange { node: 4, .. })
        ));
        let mut g = small();
        g.normal.concat = vec![3, 2, 3];
        assert!(matches!(
            g.validate(),
            Err(ArchError::ConcatDuplicate { node: 3, .. })
        ));
    }

    #[test]
    fn mismatched_and_empty_cells() {
        let mut g = small();
        g.reduce.nodes.pop();
        g.reduce.concat = vec![2];
        assert_eq!(
            g.validate(),
            Err(ArchError::MismatchedNodes {
                normal: 2,
                reduce: 1
            })
        );
        let mut g = small();
        g.normal.nodes.clear();
        assert_eq!(
            g.validate(),
            Err(ArchError::NoNodes {
                cell: CellKind::Normal
            })
        );
    }

    #[test]
    fn op_set_membership() {
        let g = small();
        assert_eq!(g.validate_ops(OpSet::NatFullyConcat), Ok(()));
        // conv_3x3 is not in the NAT loose-end list? It is; sep_conv_3x3 is too. dil ops are not.
        let mut g2 = small();
        g2.normal.nodes[0].inputs[0].op = Op::DilConv3x3;
        let err = g2.validate_ops(OpSet::NatLooseEnd).unwrap_err();
        assert!(matches!(
            err,
            ArchError::OpNotInSet {
                cell: CellKind::Normal,
                node: 2,
                input: 0,
                op: Op::DilConv3x3,
                ..
            }
        ));
        assert_eq!(g2.validate_ops(OpSet::NatPlusPlus), Ok(()));
    }
}
