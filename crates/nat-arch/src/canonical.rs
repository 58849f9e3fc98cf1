//! Canonical form and a stable content hash, for the reward-estimate cache.
//!
//! # What is treated as equal
//! Two genotypes have the same canonical form (and hash) when they differ only in
//! - the order of a node's two incoming edges (a node sums its inputs, so the network is the
//!   same; the supernet's weights are keyed by the (from, to) slot, which does not change either);
//! - the order of the concat lists (a concat list is a set of nodes);
//! - the format they were written in (JSON, DARTS pairs, NAT triples, text, whitespace, `none`
//!   vs `null`, short vs official op names).
//!
//! # What is NOT treated as equal
//! - renumbering intermediate nodes (isomorphic DAGs with another topological numbering): the
//!   supernet's weights and the policy's edge slots are keyed by node ids;
//! - swapping the normal and reduction cells;
//! - dead code: edges or nodes that cannot reach the output, and null edges, are kept as written
//!   (in the supernet every edge slot still occupies a position, and null edges keep the
//!   adjacency the policy sees);
//! - algebraic identities (two skips into one node vs one skip, a node fed only by nulls);
//! - anything outside the genotype: channels, layers, dataset, training budget. Callers that
//!   cache rewards must key on those too.
//!
//! # The hash
//! `canonical_hash()` is the lowercase hex SHA-256 of `"nat-arch/genotype/v1\n"` followed by
//! the canonical form written by [`Genotype::canonical_string`]: for each cell (normal, then
//! reduce) a line `KIND` + for each node ` t:OP_A<-i,OP_B<-j` with official op names, then
//! ` concat=…` sorted ascending. In the canonical form a node's two edges are ordered by
//! (source id, op name). The hash therefore does not depend on Rust enum order or serde
//! details; changing this text is a breaking change and must bump `v1`.

use sha2::{Digest, Sha256};
use std::fmt::Write as _;

use crate::genotype::{Cell, CellKind, Genotype};

/// Prefix of the hashed text; bump when the canonical form changes.
pub const HASH_DOMAIN: &str = "nat-arch/genotype/v1\n";

impl Cell {
    /// This cell with each node's inputs ordered by (source, op name) and concat sorted.
    pub fn canonical(&self) -> Cell {
        let mut c = self.clone();
        for node in &mut c.nodes {
            node.inputs
                .sort_by(|a, b| (a.from, a.op.name()).cmp(&(b.from, b.op.name())));
        }
        c.concat.sort_unstable();
        c.concat.dedup();
        c
    }
}

impl Genotype {
    /// The canonical representative of this genotype (see the module docs).
    pub fn canonical(&self) -> Genotype {
        Genotype {
            normal: self.normal.canonical(),
            reduce: self.reduce.canonical(),
        }
    }

    /// True when both genotypes have the same canonical form.
    pub fn equivalent(&self, other: &Genotype) -> bool {
        self.canonical() == other.canonical()
    }

    /// The text that [`Genotype::canonical_hash`] hashes (after [`HASH_DOMAIN`]).
    pub fn canonical_string(&self) -> String {
        let c = self.canonical();
        let mut out = String::new();
        for kind in CellKind::ALL {
            let cell = c.cell(kind);
            out.push_str(kind.name());
            for (i, node) in cell.nodes.iter().enumerate() {
                let [a, b] = &node.inputs;
                let _ = write!(
                    out,
                    " {}:{}<-{},{}<-{}",
                    i + 2,
                    a.op.name(),
                    a.from,
                    b.op.name(),
                    b.from
                );
            }
            out.push_str(" concat=");
            let concat: Vec<String> = cell.concat.iter().map(|x| x.to_string()).collect();
            out.push_str(&concat.join(","));
            out.push('\n');
        }
        out
    }

    /// Stable content hash (64 lowercase hex chars) of the canonical form.
    pub fn canonical_hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(HASH_DOMAIN.as_bytes());
        h.update(self.canonical_string().as_bytes());
        hex::encode(h.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presets;

    #[test]
    fn hash_is_pinned() {
        // Pinned so that an accidental change of the canonical form (which would silently
        // invalidate every stored cache key) fails this test.
        let g = presets::get("darts-v2").expect("preset").genotype();
        assert_eq!(
            g.canonical_string(),
            "normal 2:sep_conv_3x3<-0,sep_conv_3x3<-1 3:sep_conv_3x3<-0,sep_conv_3x3<-1 4:skip_connect<-0,sep_conv_3x3<-1 5:skip_connect<-0,dil_conv_3x3<-2 concat=2,3,4,5\n\
             reduce 2:max_pool_3x3<-0,max_pool_3x3<-1 3:max_pool_3x3<-1,skip_connect<-2 4:max_pool_3x3<-0,skip_connect<-2 5:max_pool_3x3<-1,skip_connect<-2 concat=2,3,4,5\n"
        );
        let mut h = Sha256::new();
        h.update(HASH_DOMAIN.as_bytes());
        h.update(g.canonical_string().as_bytes());
        assert_eq!(g.canonical_hash(), hex::encode(h.finalize()));
        assert_eq!(g.canonical_hash().len(), 64);
    }

    #[test]
    fn presets_hash_differently() {
        let mut seen = std::collections::HashMap::new();
        for p in presets::all() {
            let h = p.genotype().canonical_hash();
            if let Some(other) = seen.insert(h, p.name) {
                // NAT and NAT++ outputs for MobileNetV2 are identical in the official files.
                assert!(
                    p.name.starts_with("mobilenetv2-block")
                        && other.starts_with("mobilenetv2-block"),
                    "{} and {other} collide",
                    p.name
                );
            }
        }
    }

    #[test]
    fn swap_and_concat_order_are_equal_but_ops_are_not() {
        let g = presets::get("enas").expect("preset").genotype();
        let mut h = g.clone();
        h.normal.nodes[1].inputs.swap(0, 1);
        h.reduce.concat.reverse();
        assert_ne!(g, h);
        assert!(g.equivalent(&h));
        assert_eq!(g.canonical_hash(), h.canonical_hash());
        let mut k = g.clone();
        k.normal.nodes[1].inputs[0].op = crate::Op::Null;
        assert_ne!(g.canonical_hash(), k.canonical_hash());
        let swapped = Genotype {
            normal: g.reduce.clone(),
            reduce: g.normal.clone(),
        };
        assert_ne!(g.canonical_hash(), swapped.canonical_hash());
    }
}
