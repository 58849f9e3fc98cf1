//! The canonical JSON wire form: the serde JSON of [`Genotype`].
//!
//! ```json
//! {"normal": {"nodes": [{"inputs": [{"op": "sep_conv_3x3", "from": 0},
//!                                   {"op": "sep_conv_3x3", "from": 1}]}, ...],
//!             "concat": [2, 3, 4, 5]},
//!  "reduce": {...}}
//! ```
//!
//! [`Genotype::from_json_str`] reads that layout with errors that name the cell, node and input
//! (serde's own messages do not), rejects unknown fields, and validates the result.
//! [`Genotype::to_json`] writes it exactly as `serde_json` would.

use std::fmt::Write as _;

use serde_json::{Map, Value};

use crate::error::{excerpt, op_names, ArchError, Format};
use crate::genotype::{Cell, CellKind, Edge, Genotype, Node};
use crate::op::Op;

fn shape(path: impl Into<String>, message: impl Into<String>) -> ArchError {
    ArchError::Shape {
        format: Format::Json,
        path: path.into(),
        message: message.into(),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The place in the document, formatted only when an error is reported.
#[derive(Clone, Copy)]
enum At<'a> {
    Top,
    Cell(CellKind, &'a str),
    Node(CellKind, usize, &'a str),
    Edge(CellKind, usize, usize, &'a str),
    Concat(CellKind, usize),
}

impl At<'_> {
    fn path(self) -> String {
        let sep = |f: &str| {
            if f.is_empty() {
                String::new()
            } else {
                format!(".{f}")
            }
        };
        match self {
            At::Top => "top level".into(),
            At::Cell(k, f) => format!("{k}{}", sep(f)),
            At::Node(k, i, f) => format!("{k}.nodes[{i}] (node {}){}", i + 2, sep(f)),
            At::Edge(k, i, e, f) => {
                format!("{k}.nodes[{i}] (node {}).inputs[{e}]{}", i + 2, sep(f))
            }
            At::Concat(k, i) => format!("{k}.concat[{i}]"),
        }
    }
}

fn object<'v>(
    v: &'v Value,
    at: At<'_>,
    fields: &[&str],
) -> Result<&'v Map<String, Value>, ArchError> {
    let obj = v.as_object().ok_or_else(|| {
        shape(
            at.path(),
            format!("expected an object, found {}", type_name(v)),
        )
    })?;
    for key in obj.keys() {
        if !fields.contains(&key.as_str()) {
            return Err(shape(
                at.path(),
                format!(
                    "unknown field `{}` (expected: {})",
                    excerpt(key, 40),
                    fields.join(", ")
                ),
            ));
        }
    }
    Ok(obj)
}

fn field<'v>(obj: &'v Map<String, Value>, at: At<'_>, name: &str) -> Result<&'v Value, ArchError> {
    obj.get(name)
        .ok_or_else(|| shape(at.path(), format!("missing field `{name}`")))
}

fn array<'v>(v: &'v Value, at: At<'_>) -> Result<&'v Vec<Value>, ArchError> {
    v.as_array().ok_or_else(|| {
        shape(
            at.path(),
            format!("expected an array, found {}", type_name(v)),
        )
    })
}

fn index(v: &Value, at: At<'_>) -> Result<usize, ArchError> {
    v.as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| {
            shape(
                at.path(),
                format!(
                    "expected a non-negative integer node id, found {}",
                    excerpt(&v.to_string(), 40)
                ),
            )
        })
}

fn parse_cell(v: &Value, kind: CellKind) -> Result<Cell, ArchError> {
    let obj = object(v, At::Cell(kind, ""), &["nodes", "concat"])?;
    let nodes_arr = array(
        field(obj, At::Cell(kind, ""), "nodes")?,
        At::Cell(kind, "nodes"),
    )?;
    let mut nodes = Vec::with_capacity(nodes_arr.len());
    for (i, node_v) in nodes_arr.iter().enumerate() {
        let id = i + 2;
        let nobj = object(node_v, At::Node(kind, i, ""), &["inputs"])?;
        let inputs = array(
            field(nobj, At::Node(kind, i, ""), "inputs")?,
            At::Node(kind, i, "inputs"),
        )?;
        if inputs.len() != 2 {
            return Err(ArchError::WrongEdgeCount {
                cell: kind,
                node: id,
                count: inputs.len(),
            });
        }
        let mut edges = [Edge::new(Op::Null, 0); 2];
        for (input, (edge_v, slot)) in inputs.iter().zip(edges.iter_mut()).enumerate() {
            let at = At::Edge(kind, i, input, "");
            let eobj = object(edge_v, at, &["op", "from"])?;
            let op_v = field(eobj, at, "op")?;
            let name = op_v.as_str().ok_or_else(|| {
                shape(
                    At::Edge(kind, i, input, "op").path(),
                    format!("expected an op name string, found {}", type_name(op_v)),
                )
            })?;
            let op = Op::from_name(name).ok_or_else(|| ArchError::UnknownOp {
                cell: kind,
                node: id,
                input,
                name: excerpt(name, 40),
                valid: op_names(&Op::ALL),
            })?;
            let from = index(field(eobj, at, "from")?, At::Edge(kind, i, input, "from"))?;
            *slot = Edge::new(op, from);
        }
        nodes.push(Node { inputs: edges });
    }
    let concat_arr = array(
        field(obj, At::Cell(kind, ""), "concat")?,
        At::Cell(kind, "concat"),
    )?;
    let concat = concat_arr
        .iter()
        .enumerate()
        .map(|(i, c)| index(c, At::Concat(kind, i)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Cell { nodes, concat })
}

fn edge_value(e: &Edge) -> Value {
    let mut m = Map::new();
    m.insert("op".into(), Value::String(e.op.name().into()));
    m.insert("from".into(), Value::from(e.from));
    Value::Object(m)
}

fn cell_value(c: &Cell) -> Value {
    let nodes = c
        .nodes
        .iter()
        .map(|n| {
            let mut m = Map::new();
            m.insert(
                "inputs".into(),
                Value::Array(n.inputs.iter().map(edge_value).collect()),
            );
            Value::Object(m)
        })
        .collect();
    let mut m = Map::new();
    m.insert("nodes".into(), Value::Array(nodes));
    m.insert(
        "concat".into(),
        Value::Array(c.concat.iter().map(|&x| Value::from(x)).collect()),
    );
    Value::Object(m)
}

/// Compact JSON of a cell, exactly as `serde_json::to_string` writes the derived layout (op names
/// are fixed ASCII identifiers, so no escaping is needed).
fn write_cell(out: &mut String, c: &Cell) {
    out.push_str("{\"nodes\":[");
    for (i, n) in c.nodes.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let [a, b] = &n.inputs;
        let _ = write!(
            out,
            "{{\"inputs\":[{{\"op\":\"{}\",\"from\":{}}},{{\"op\":\"{}\",\"from\":{}}}]}}",
            a.op.name(),
            a.from,
            b.op.name(),
            b.from
        );
    }
    out.push_str("],\"concat\":[");
    for (i, x) in c.concat.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{x}");
    }
    out.push_str("]}");
}

impl Genotype {
    /// Parses the canonical JSON form and validates the result.
    pub fn from_json_str(text: &str) -> Result<Genotype, ArchError> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            // serde_json appends " at line L column C"; we report them separately.
            let full = e.to_string();
            let plain = match full.rfind(" at line ") {
                Some(pos) => &full[..pos],
                None => full.as_str(),
            };
            let message = if e.is_eof() {
                format!("truncated JSON ({plain})")
            } else {
                plain.to_string()
            };
            ArchError::Syntax {
                format: Format::Json,
                line: e.line(),
                column: e.column(),
                message,
            }
        })?;
        Genotype::from_json_value(&value)
    }

    /// Reads a parsed JSON value in the canonical layout and validates the result.
    pub fn from_json_value(value: &Value) -> Result<Genotype, ArchError> {
        let obj = object(value, At::Top, &["normal", "reduce"])?;
        let normal = parse_cell(field(obj, At::Top, "normal")?, CellKind::Normal)?;
        let reduce = parse_cell(field(obj, At::Top, "reduce")?, CellKind::Reduce)?;
        let g = Genotype { normal, reduce };
        g.validate()?;
        Ok(g)
    }

    /// The canonical JSON value (identical to `serde_json::to_value(self)`).
    pub fn to_json_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("normal".into(), cell_value(&self.normal));
        m.insert("reduce".into(), cell_value(&self.reduce));
        Value::Object(m)
    }

    /// Compact canonical JSON (one line), the wire form; byte-identical to
    /// `serde_json::to_string(self)`.
    pub fn to_json(&self) -> String {
        let mut out =
            String::with_capacity(64 + 80 * (self.normal.nodes.len() + self.reduce.nodes.len()));
        out.push_str("{\"normal\":");
        write_cell(&mut out, &self.normal);
        out.push_str(",\"reduce\":");
        write_cell(&mut out, &self.reduce);
        out.push('}');
        out
    }

    /// Pretty-printed canonical JSON (for files and `natctl arch show`).
    pub fn to_json_pretty(&self) -> String {
        // `{:#}` on a Value pretty-prints with two-space indentation and cannot fail.
        format!("{:#}", self.to_json_value())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presets;

    #[test]
    fn matches_serde_layout_for_every_preset() {
        for p in presets::all() {
            let g = p.genotype();
            let ours = g.to_json_value();
            let serde = serde_json::to_value(&g).expect("serialize");
            assert_eq!(ours, serde, "{}", p.name);
            assert_eq!(g.to_json(), serde_json::to_string(&g).expect("serialize"));
            let back: Genotype = serde_json::from_str(&g.to_json()).expect("serde reads ours");
            assert_eq!(back, g);
            assert_eq!(Genotype::from_json_str(&g.to_json_pretty()), Ok(g));
        }
    }

    #[test]
    fn unknown_op_names_cell_node_input() {
        let g = presets::get("darts-v2").expect("preset").genotype();
        let text = g.to_json().replacen("dil_conv_3x3", "dil_conv_9x9", 1);
        let err = Genotype::from_json_str(&text).unwrap_err();
        assert!(
            matches!(&err, ArchError::UnknownOp { cell: CellKind::Normal, node: 5, input: 1, name, .. } if name == "dil_conv_9x9"),
            "{err}"
        );
        assert!(
            err.to_string().contains("sep_conv_3x3"),
            "lists valid ops: {err}"
        );
    }

    #[test]
    fn truncated_and_garbage() {
        let g = presets::get("enas").expect("preset").genotype();
        let text = g.to_json();
        let err = Genotype::from_json_str(&text[..text.len() / 2]).unwrap_err();
        assert!(err.to_string().contains("truncated JSON"), "{err}");
        let err = Genotype::from_json_str("not json at all").unwrap_err();
        assert!(matches!(err, ArchError::Syntax { line: 1, .. }), "{err}");
        let err = Genotype::from_json_str("[1, 2]").unwrap_err();
        assert!(err.to_string().contains("expected an object"), "{err}");
    }

    #[test]
    fn wrong_edge_count_and_unknown_field() {
        let t = r#"{"normal":{"nodes":[{"inputs":[{"op":"null","from":0}]}],"concat":[2]},
                    "reduce":{"nodes":[{"inputs":[{"op":"null","from":0},{"op":"null","from":1}]}],"concat":[2]}}"#;
        assert_eq!(
            Genotype::from_json_str(t),
            Err(ArchError::WrongEdgeCount {
                cell: CellKind::Normal,
                node: 2,
                count: 1
            })
        );
        let t = r#"{"normal":{"nodes":[],"concat":[2],"extra":1},"reduce":{}}"#;
        let err = Genotype::from_json_str(t).unwrap_err();
        assert!(err.to_string().contains("unknown field `extra`"), "{err}");
    }

    #[test]
    fn cycle_is_rejected() {
        let t = r#"{"normal":{"nodes":[{"inputs":[{"op":"null","from":0},{"op":"skip_connect","from":3}]},
                                       {"inputs":[{"op":"null","from":2},{"op":"null","from":1}]}],"concat":[2,3]},
                    "reduce":{"nodes":[{"inputs":[{"op":"null","from":0},{"op":"null","from":1}]},
                                       {"inputs":[{"op":"null","from":2},{"op":"null","from":1}]}],"concat":[3]}}"#;
        let err = Genotype::from_json_str(t).unwrap_err();
        assert!(
            matches!(
                err,
                ArchError::BadSource {
                    cell: CellKind::Normal,
                    node: 2,
                    input: 1,
                    from: 3,
                    ..
                }
            ),
            "{err}"
        );
    }
}
