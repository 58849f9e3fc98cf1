//! The NAT search space as a library.
//!
//! # Layout
//! - [`op`]: the operations ([`Op`]), their classes and the published operation sets ([`OpSet`]).
//! - [`genotype`]: cells ([`Cell`]), intermediate nodes ([`Node`]), edges ([`Edge`]) and
//!   [`Genotype`] (a normal cell plus a reduction cell).
//!
//! Node ids follow the official NAT code: node 0 is the output of cell k-2 ("-2"), node 1 the
//! output of cell k-1 ("-1"), nodes 2..B+1 are intermediate nodes. Every intermediate node has
//! exactly two incoming edges, each carrying one operation.

pub mod dataset;
pub mod genotype;
pub mod op;

pub use dataset::Dataset;
pub use genotype::{Cell, CellKind, Edge, Genotype, Node};
pub use op::{Op, OpClass, OpSet};
