//! The NAT search space as a library.
//!
//! Everything in nat-orchestrator that talks about architectures uses this crate: the policy
//! (ops by [`OpSet`] index, transition masks), the coordinator (genotypes as the serde JSON of
//! [`Genotype`], the canonical hash for the reward cache), the worker (the cost model its
//! networks must match), `natctl arch` and the dashboard (pictures). It needs no database, no
//! network and no libtorch.
//!
//! # Layout
//! - [`op`]: the operations ([`Op`]), their classes and the published operation sets ([`OpSet`]).
//! - [`genotype`]: cells ([`Cell`]), intermediate nodes ([`Node`]), edges ([`Edge`]) and
//!   [`Genotype`] (a normal cell plus a reduction cell).
//! - [`validate`]: structural checks with typed errors ([`ArchError`]) naming cell, node and edge.
//! - [`json`], [`darts`], [`text`]: the formats (canonical JSON wire form; DARTS/NAT Python
//!   strings, byte-for-byte; a one-line text form), and [`parse_any`] which accepts any of them
//!   or a preset name.
//! - [`canonical`]: canonical form and a stable SHA-256 hash.
//! - [`transition`]: the NAT and NAT++ transition spaces ([`Space`]), masks for the policy and
//!   [`Space::check_transition`].
//! - [`cost`]: per-op and whole-network parameters and multiply-adds.
//! - [`presets`]: the input architectures of NAT-SPEC §7 and their published NAT/NAT++ outputs.
//! - [`sampler`]: the seeded input sampler p(β).
//! - [`render`]: SVG and Graphviz DOT pictures of cells and of diffs.
//!
//! Node ids follow the official NAT code: node 0 is the output of cell k-2 ("-2"), node 1 the
//! output of cell k-1 ("-1"), nodes 2..B+1 are intermediate nodes. Every intermediate node has
//! exactly two incoming edges, each carrying one operation.

pub mod canonical;
pub mod cost;
pub mod darts;
pub mod dataset;
pub mod error;
pub mod genotype;
pub mod json;
pub mod op;
pub mod presets;
pub mod render;
pub mod sampler;
pub mod text;
pub mod transition;
pub mod validate;

pub use cost::{network_cost, op_cost, CostError, NetworkCost, NetworkSpec, OpCost};
pub use dataset::{Dataset, DatasetShape};
pub use error::{ArchError, Format};
pub use genotype::{Cell, CellKind, Edge, Genotype, Node};
pub use op::{Op, OpClass, OpSet};
pub use presets::Preset;
pub use transition::{edge_changes, EdgeChange, NatAction, Space, TransitionError, Violation};

/// Parses `input` as a preset name, JSON, a DARTS/NAT `Genotype(...)` string or the one-line
/// text form (decided by its first non-blank character/word), and validates it. Leading and
/// trailing whitespace is ignored.
pub fn parse_any(input: &str) -> Result<Genotype, ArchError> {
    let t = input.trim();
    if let Some(p) = presets::get(t) {
        return Ok(p.genotype());
    }
    if t.starts_with('{') {
        return Genotype::from_json_str(t);
    }
    if t.starts_with("normal ") || t.starts_with("normal\t") {
        return Genotype::from_text(t);
    }
    let code = t.trim_start_matches(|c: char| c == '#' || c.is_whitespace());
    if t.contains("Genotype")
        && (code.starts_with(|c: char| c.is_alphabetic() || c == '_') || t.starts_with('#'))
    {
        return Genotype::from_darts_str(t);
    }
    Err(ArchError::Unrecognised {
        input: error::excerpt(t, 60),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_any_accepts_every_form() {
        let g = presets::get("enas").expect("preset").genotype();
        assert_eq!(parse_any(" enas \n").as_ref(), Ok(&g));
        assert_eq!(parse_any(&g.to_json_pretty()).as_ref(), Ok(&g));
        assert_eq!(parse_any(&g.to_darts_string()).as_ref(), Ok(&g));
        assert_eq!(
            parse_any(&format!("ENAS = {}\n", g.to_nat_string())).as_ref(),
            Ok(&g)
        );
        assert_eq!(parse_any(&g.to_text()).as_ref(), Ok(&g));
        let err = parse_any("hello world").unwrap_err();
        assert!(matches!(err, ArchError::Unrecognised { .. }));
        assert!(err.to_string().contains("hello world"));
        assert!(parse_any("").is_err());
        // Text form without the reduce cell: the text parser explains what is missing.
        let err = parse_any("normal 2:sep3<-0,sep3<-1 concat=2").unwrap_err();
        assert!(
            err.to_string().contains("two cells separated by `|`"),
            "{err}"
        );
    }
}
