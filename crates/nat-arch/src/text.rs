//! The compact one-line text form, for logs and command lines.
//!
//! ```text
//! normal 2:sep3<-0,sep3<-1 3:sep3<-0,sep3<-1 4:sep3<-1,skip<-0 5:skip<-0,dil3<-2 concat=2,3,4,5 | reduce 2:max3<-0,max3<-1 3:skip<-2,max3<-1 4:max3<-0,skip<-2 5:skip<-2,max3<-1 concat=2,3,4,5
//! ```
//!
//! Each cell is `KIND` followed by one `t:opA<-i,opB<-j` token per intermediate node (in node
//! order, starting at 2) and `concat=…`; the two cells are separated by `|`. Ops are written with
//! [`Op::short_name`]; on input, official names and DARTS' `none` are accepted as well, and any
//! amount of whitespace may separate tokens. The parsed genotype is validated.

use std::fmt::Write as _;

use crate::error::{excerpt, op_names, ArchError, Format};
use crate::genotype::{Cell, CellKind, Edge, Genotype, Node};
use crate::op::Op;

fn shape(path: String, message: String) -> ArchError {
    ArchError::Shape {
        format: Format::Text,
        path,
        message,
    }
}

fn write_cell(out: &mut String, kind: CellKind, cell: &Cell) {
    out.push_str(kind.name());
    for (i, node) in cell.nodes.iter().enumerate() {
        let [a, b] = &node.inputs;
        let _ = write!(
            out,
            " {}:{}<-{},{}<-{}",
            i + 2,
            a.op.short_name(),
            a.from,
            b.op.short_name(),
            b.from
        );
    }
    out.push_str(" concat=");
    for (i, c) in cell.concat.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{c}");
    }
}

fn parse_number(s: &str, path: &str, what: &str) -> Result<usize, ArchError> {
    s.parse::<usize>().map_err(|_| {
        shape(
            path.to_string(),
            format!("expected {what} (a non-negative integer), found `{s}`"),
        )
    })
}

fn parse_cell(kind: CellKind, part: &str) -> Result<Cell, ArchError> {
    let mut tokens = part.split_whitespace();
    match tokens.next() {
        Some(k) if k == kind.name() => {}
        other => {
            return Err(shape(
                format!("{kind} cell"),
                format!(
                    "expected the cell to start with `{}`, found `{}`",
                    kind.name(),
                    other.unwrap_or("")
                ),
            ))
        }
    }
    let mut nodes = Vec::new();
    let mut concat = None;
    for tok in tokens {
        if concat.is_some() {
            return Err(shape(
                format!("{kind} cell"),
                format!("unexpected `{tok}` after the concat list"),
            ));
        }
        if let Some(list) = tok.strip_prefix("concat=") {
            let path = format!("{kind} cell concat");
            concat = Some(
                list.split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| parse_number(s, &path, "a node id"))
                    .collect::<Result<Vec<_>, _>>()?,
            );
            continue;
        }
        let id = nodes.len() + 2;
        let path = format!("{kind} cell, node {id}");
        let (t, rest) = tok.split_once(':').ok_or_else(|| {
            shape(
                path.clone(),
                format!("expected `{id}:op<-src,op<-src` or `concat=…`, found `{tok}`"),
            )
        })?;
        let t = parse_number(t, &path, "the node id")?;
        if t != id {
            return Err(shape(
                path,
                format!("node {t} listed where node {id} was expected (nodes in order from 2)"),
            ));
        }
        let edges: Vec<&str> = rest.split(',').collect();
        if edges.len() != 2 {
            return Err(ArchError::WrongEdgeCount {
                cell: kind,
                node: id,
                count: edges.len(),
            });
        }
        let mut inputs = [Edge::new(Op::Null, 0); 2];
        for (input, (e, slot)) in edges.iter().zip(inputs.iter_mut()).enumerate() {
            let (name, from) = e.split_once("<-").ok_or_else(|| {
                shape(
                    format!("{path}, input {input}"),
                    format!("expected `op<-src`, found `{e}`"),
                )
            })?;
            let op = Op::from_name_lenient(name).ok_or_else(|| ArchError::UnknownOp {
                cell: kind,
                node: id,
                input,
                name: excerpt(name, 40),
                valid: op_names(&Op::ALL),
            })?;
            let from = parse_number(from, &format!("{path}, input {input}"), "a source node id")?;
            *slot = Edge::new(op, from);
        }
        nodes.push(Node { inputs });
    }
    let concat = concat.ok_or_else(|| {
        shape(
            format!("{kind} cell"),
            "missing `concat=…` at the end of the cell".into(),
        )
    })?;
    Ok(Cell { nodes, concat })
}

impl Genotype {
    /// The one-line text form (see the module docs).
    pub fn to_text(&self) -> String {
        let mut out = String::with_capacity(256);
        write_cell(&mut out, CellKind::Normal, &self.normal);
        out.push_str(" | ");
        write_cell(&mut out, CellKind::Reduce, &self.reduce);
        out
    }

    /// Parses the one-line text form and validates the result.
    pub fn from_text(text: &str) -> Result<Genotype, ArchError> {
        let (normal, reduce) = text.split_once('|').ok_or_else(|| {
            shape(
                "top level".into(),
                "expected `normal … | reduce …` (two cells separated by `|`)".into(),
            )
        })?;
        if reduce.contains('|') {
            return Err(shape(
                "top level".into(),
                "more than one `|`: expected exactly two cells".into(),
            ));
        }
        let g = Genotype {
            normal: parse_cell(CellKind::Normal, normal)?,
            reduce: parse_cell(CellKind::Reduce, reduce)?,
        };
        g.validate()?;
        Ok(g)
    }
}

impl std::fmt::Display for Genotype {
    /// The one-line text form.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presets;

    #[test]
    fn darts_v2_text() {
        let g = presets::get("darts-v2").expect("preset").genotype();
        let t = g.to_text();
        assert_eq!(
            t,
            "normal 2:sep3<-0,sep3<-1 3:sep3<-0,sep3<-1 4:sep3<-1,skip<-0 5:skip<-0,dil3<-2 concat=2,3,4,5 | \
             reduce 2:max3<-0,max3<-1 3:skip<-2,max3<-1 4:max3<-0,skip<-2 5:skip<-2,max3<-1 concat=2,3,4,5"
        );
        assert_eq!(Genotype::from_text(&t), Ok(g));
    }

    #[test]
    fn every_preset_round_trips() {
        for p in presets::all() {
            let g = p.genotype();
            assert_eq!(
                Genotype::from_text(&g.to_text()).as_ref(),
                Ok(&g),
                "{}",
                p.name
            );
        }
    }

    #[test]
    fn errors() {
        let err = Genotype::from_text(
            "normal 2:sep3<-0,bogus<-1 concat=2 | reduce 2:null<-0,null<-1 concat=2",
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                ArchError::UnknownOp {
                    cell: CellKind::Normal,
                    node: 2,
                    input: 1,
                    ..
                }
            ),
            "{err}"
        );
        let err =
            Genotype::from_text("normal 2:sep3<-0 concat=2 | reduce 2:null<-0,null<-1 concat=2")
                .unwrap_err();
        assert!(
            matches!(
                err,
                ArchError::WrongEdgeCount {
                    node: 2,
                    count: 1,
                    ..
                }
            ),
            "{err}"
        );
        let err = Genotype::from_text(
            "normal 2:sep3<-0,sep3<-2 concat=2 | reduce 2:null<-0,null<-1 concat=2",
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                ArchError::BadSource {
                    node: 2,
                    input: 1,
                    from: 2,
                    ..
                }
            ),
            "{err}"
        );
        assert!(Genotype::from_text("garbage").is_err());
    }
}
