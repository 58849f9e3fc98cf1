//! Typed errors for parsing and validating architectures.

use std::fmt;

use crate::genotype::CellKind;

/// The input format an error was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// The canonical serde JSON of [`crate::Genotype`].
    Json,
    /// DARTS' Python `Genotype(normal=[...], normal_concat=[...], ...)` string (pairs or NAT triples).
    Darts,
    /// The compact one-line text form of [`crate::text`].
    Text,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Json => "JSON",
            Format::Darts => "DARTS genotype",
            Format::Text => "text genotype",
        })
    }
}

/// An error in an architecture: where it is (cell, node id, input slot) and what is wrong.
///
/// Node ids follow the official code: 0 and 1 are the two cell inputs, intermediate nodes are
/// 2..=B+1. `input` is the position (0 or 1) of the edge among the node's two incoming edges.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchError {
    /// A cell without intermediate nodes.
    #[error("{cell} cell: no intermediate nodes (a cell needs at least one node with two inputs)")]
    NoNodes { cell: CellKind },
    /// An op name that this crate does not know.
    #[error("{cell} cell, node {node}, input {input}: unknown op `{name}` (valid ops: {valid})")]
    UnknownOp {
        cell: CellKind,
        node: usize,
        input: usize,
        name: String,
        valid: String,
    },
    /// An edge whose source is not an earlier node (a forward reference, self-loop or cycle).
    #[error(
        "{cell} cell, node {node}, input {input}: source node {from} is not an earlier node \
         (forward reference or cycle); valid sources for node {node} are 0..={max}"
    )]
    BadSource {
        cell: CellKind,
        node: usize,
        input: usize,
        from: usize,
        max: usize,
    },
    /// A node with other than two incoming edges.
    #[error("{cell} cell, node {node}: {count} incoming edges, expected exactly 2")]
    WrongEdgeCount {
        cell: CellKind,
        node: usize,
        count: usize,
    },
    /// An edge list (NAT triples) whose `to` field breaks the order "two edges per node, sorted by node".
    #[error(
        "{cell} cell, edge #{index} (counting from 0): goes to node {to}, expected node {expected} \
         (edges must be listed two per node, sorted by destination)"
    )]
    EdgeOrder {
        cell: CellKind,
        index: usize,
        to: usize,
        expected: usize,
    },
    /// An empty concat list.
    #[error("{cell} cell: concat list is empty (list at least one intermediate node)")]
    EmptyConcat { cell: CellKind },
    /// A concat entry that is not an intermediate node.
    #[error("{cell} cell: concat entry {node} is not an intermediate node (valid: 2..={max})")]
    ConcatOutOfRange {
        cell: CellKind,
        node: usize,
        max: usize,
    },
    /// A concat entry listed twice.
    #[error("{cell} cell: concat lists node {node} twice")]
    ConcatDuplicate { cell: CellKind, node: usize },
    /// Normal and reduction cells with different numbers of intermediate nodes.
    #[error(
        "normal cell has {normal} intermediate nodes but reduce cell has {reduce} (B must match)"
    )]
    MismatchedNodes { normal: usize, reduce: usize },
    /// An op that exists but is not part of the requested op set.
    #[error("{cell} cell, node {node}, input {input}: op `{op}` is not in op set {set} (valid: {valid})")]
    OpNotInSet {
        cell: CellKind,
        node: usize,
        input: usize,
        op: crate::Op,
        set: crate::OpSet,
        valid: String,
    },
    /// Malformed input text.
    #[error("{format}, line {line}, column {column}: {message}")]
    Syntax {
        format: Format,
        line: usize,
        column: usize,
        message: String,
    },
    /// A structurally wrong document (well-formed syntax, wrong shape), with a path to the spot.
    #[error("{format}, at {path}: {message}")]
    Shape {
        format: Format,
        path: String,
        message: String,
    },
    /// Text that is none of the accepted forms.
    #[error(
        "unrecognised architecture `{input}`: not a preset name (see `natctl arch list`), \
         a JSON object, a DARTS `Genotype(...)` string or the one-line text form"
    )]
    Unrecognised { input: String },
}

/// Comma-separated list of op names, for error messages.
pub(crate) fn op_names(ops: &[crate::Op]) -> String {
    ops.iter().map(|o| o.name()).collect::<Vec<_>>().join(", ")
}

/// 1-based line and column (in characters) of byte offset `pos` in `text`.
pub(crate) fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let mut line = 1;
    let mut col = 1;
    for (i, ch) in text.char_indices() {
        if i >= pos {
            break;
        }
        if ch == '\n' {
            line += 1;
            col = 1;
        } else {
            col += 1;
        }
    }
    (line, col)
}

/// Shortens user input for an error message (char-boundary safe), and puts it on one line.
pub(crate) fn excerpt(text: &str, max_chars: usize) -> String {
    let one_line: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= max_chars {
        one_line
    } else {
        let cut: String = one_line.chars().take(max_chars).collect();
        format!("{cut}…")
    }
}
