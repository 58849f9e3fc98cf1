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

impl CellKind {
    /// Both kinds, normal first (the order used in every format).
    pub const ALL: [CellKind; 2] = [CellKind::Normal, CellKind::Reduce];

    /// `"normal"` or `"reduce"` (the field names of every format).
    pub fn name(self) -> &'static str {
        match self {
            CellKind::Normal => "normal",
            CellKind::Reduce => "reduce",
        }
    }
}

impl std::fmt::Display for CellKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Edge {
    /// An edge carrying `op` from node `from`.
    pub fn new(op: Op, from: usize) -> Edge {
        Edge { op, from }
    }
}

impl Node {
    /// A node with inputs `a` (first in the edge list) and `b`.
    pub fn new(a: Edge, b: Edge) -> Node {
        Node { inputs: [a, b] }
    }
}

impl Cell {
    /// Builds a cell from DARTS-style `(op, from)` pairs (pair `i` belongs to node `2 + i/2`) and
    /// a concat list. Returns `None` when the number of pairs is odd. The result is not validated.
    pub fn from_pairs(pairs: &[(Op, usize)], concat: &[usize]) -> Option<Cell> {
        if !pairs.len().is_multiple_of(2) {
            return None;
        }
        let nodes = pairs
            .chunks_exact(2)
            .map(|p| Node::new(Edge::new(p[0].0, p[0].1), Edge::new(p[1].0, p[1].1)))
            .collect();
        Some(Cell {
            nodes,
            concat: concat.to_vec(),
        })
    }

    /// Number of intermediate nodes (B).
    pub fn num_nodes(&self) -> usize {
        self.nodes.len()
    }

    /// The flat NAT edge list `(op, from, to)`, sorted by `to`, two edges per node.
    pub fn edges(&self) -> impl Iterator<Item = (Op, usize, usize)> + '_ {
        self.nodes
            .iter()
            .enumerate()
            .flat_map(|(i, node)| node.inputs.iter().map(move |e| (e.op, e.from, i + 2)))
    }
}

impl Genotype {
    /// Number of intermediate nodes of the normal cell (equal to the reduce cell's when valid).
    pub fn num_nodes(&self) -> usize {
        self.normal.num_nodes()
    }

    /// The cell of the given kind, mutably.
    pub fn cell_mut(&mut self, kind: CellKind) -> &mut Cell {
        match kind {
            CellKind::Normal => &mut self.normal,
            CellKind::Reduce => &mut self.reduce,
        }
    }

    /// The cell of the given kind.
    pub fn cell(&self, kind: CellKind) -> &Cell {
        match kind {
            CellKind::Normal => &self.normal,
            CellKind::Reduce => &self.reduce,
        }
    }
}
