//! Cells and genotypes.

use serde::{Deserialize, Serialize};

use crate::op::Op;

/// One incoming edge of an intermediate node: the op it carries and the node it comes from.
/// The destination is implicit (the node that owns the edge).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Edge {
    pub op: Op,
    /// Source node id: 0 = c_{k-2}, 1 = c_{k-1}, 2.. = earlier intermediate nodes.
    pub from: usize,
}

/// An intermediate node: exactly two incoming edges, in the order of the official edge list
/// (the policy head gives the first K logits to `inputs[0]`, the next K to `inputs[1]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Node {
    pub inputs: [Edge; 2],
}

/// A cell: `nodes[i]` is node id `i + 2`; the output concatenates the node ids in `concat`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cell {
    pub nodes: Vec<Node>,
    pub concat: Vec<usize>,
}

/// Which of the two cells of a genotype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CellKind {
    Normal,
    Reduce,
}

/// A normal cell plus a reduction cell.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Genotype {
    pub normal: Cell,
    pub reduce: Cell,
}

impl Cell {
    /// Number of intermediate nodes (B).
    pub fn num_nodes(&self) -> usize {
        self.nodes.len()
    }

    /// The flat NAT edge list `(op, from, to)`, sorted by `to`, two edges per node.
    pub fn edges(&self) -> impl Iterator<Item = (Op, usize, usize)> + '_ {
        self.nodes.iter().enumerate().flat_map(|(i, node)| {
            node.inputs.iter().map(move |e| (e.op, e.from, i + 2))
        })
    }
}

impl Genotype {
    /// The cell of the given kind.
    pub fn cell(&self, kind: CellKind) -> &Cell {
        match kind {
            CellKind::Normal => &self.normal,
            CellKind::Reduce => &self.reduce,
        }
    }
}
