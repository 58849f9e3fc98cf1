//! Self-contained SVG pictures of a cell, with the edges changed by a transformation highlighted.
//!
//! Node 0 is `c_{k-2}`, node 1 `c_{k-1}`, nodes 2.. are the intermediate nodes (drawn 0..B-1)
//! and the output `c_{k}` concatenates the nodes of the concat list. Edges are labelled with the
//! op's short name; `null` edges are dotted. In the picture of the transformed cell, a changed
//! edge is drawn thick in the accent colour and labelled `old→new`; in the picture of the input
//! cell it is dashed. No external assets, no scripts: the SVG can be inlined anywhere.

use std::fmt::Write as _;

use nat_arch::{Cell, Op, OpClass};

/// Which side of a transformation a picture shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The input architecture β.
    Input,
    /// The transformed (best) architecture α.
    Best,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Input => "input",
            Role::Best => "best",
        }
    }
}

/// An edge whose op or source differs between the input and the transformed cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    /// Destination node id.
    pub to: usize,
    /// Which of the node's two inputs (0 or 1).
    pub input: usize,
    /// Source in the input cell.
    pub from_before: usize,
    /// Source in the transformed cell.
    pub from_after: usize,
    /// Op in the input cell (official name).
    pub before: &'static str,
    /// Op in the transformed cell.
    pub after: &'static str,
}

/// The edges that differ between `input` and `best`, position by position. Nodes present in
/// only one of them are not compared.
pub fn changes(input: &Cell, best: &Cell) -> Vec<Change> {
    let mut out = Vec::new();
    for (i, (a, b)) in input.nodes.iter().zip(&best.nodes).enumerate() {
        for (k, (ea, eb)) in a.inputs.iter().zip(&b.inputs).enumerate() {
            if ea != eb {
                out.push(Change {
                    to: i + 2,
                    input: k,
                    from_before: ea.from,
                    from_after: eb.from,
                    before: ea.op.name(),
                    after: eb.op.name(),
                });
            }
        }
    }
    out
}

const COL: f64 = 118.0;
const MARGIN: f64 = 46.0;
const HEIGHT: f64 = 250.0;
const MID: f64 = 125.0;
const R: f64 = 19.0;

fn position(node: usize, num_nodes: usize) -> (f64, f64) {
    match node {
        0 => (MARGIN, MID - 88.0),
        1 => (MARGIN, MID + 88.0),
        n if n < num_nodes + 2 => {
            let i = n - 2;
            let dy = if i % 2 == 0 { -42.0 } else { 42.0 };
            (MARGIN + COL * (i as f64 + 1.0), MID + dy)
        }
        // The output node.
        _ => (MARGIN + COL * (num_nodes as f64 + 1.0), MID),
    }
}

fn node_label(node: usize, num_nodes: usize) -> String {
    match node {
        0 => "c-2".to_string(),
        1 => "c-1".to_string(),
        n if n < num_nodes + 2 => (n - 2).to_string(),
        _ => "out".to_string(),
    }
}

fn op_class(op: Op) -> &'static str {
    match op.class() {
        OpClass::Null => "null",
        OpClass::Skip => "skip",
        OpClass::Other => "op",
    }
}

pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Draws `cell` as an SVG. `other` is the cell on the other side of the transformation (the
/// input when drawing the best cell and vice versa); edges that differ from it are highlighted.
/// `id` becomes the SVG element's id.
pub fn cell_svg(cell: &Cell, other: Option<&Cell>, role: Role, kind: &str, id: &str) -> String {
    let b = cell.nodes.len();
    let width = MARGIN * 2.0 + COL * (b as f64 + 1.0);
    let changed = other.map(|o| match role {
        Role::Best => changes(o, cell),
        Role::Input => changes(cell, o),
    });
    let is_changed = |to: usize, input: usize| {
        changed
            .as_ref()
            .is_some_and(|c| c.iter().any(|c| c.to == to && c.input == input))
    };
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" id="{id}" class="cell-diagram" data-cell="{kind}" data-role="{role}" viewBox="0 0 {width:.0} {HEIGHT:.0}" width="{width:.0}" height="{HEIGHT:.0}" role="img" aria-label="{role} {kind} cell">"#,
        id = escape(id),
        kind = escape(kind),
        role = role.as_str(),
    );
    let marker = format!("{}-ah", escape(id));
    for (suffix, colour) in [("", "#7b8794"), ("c", "#e8590c")] {
        let _ = write!(
            svg,
            r##"<defs><marker id="{marker}{suffix}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{colour}"/></marker></defs>"##
        );
    }

    // Concat edges to the output first, so that op edges are drawn above them.
    let out = b + 2;
    let (ox, oy) = position(out, b);
    for &n in &cell.concat {
        if n >= 2 && n < b + 2 {
            let (x, y) = position(n, b);
            let _ = write!(
                svg,
                r##"<line class="concat" x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#c3ccd6" stroke-width="1.2" marker-end="url(#{marker})"/>"##,
                x + R,
                y,
                ox - R,
                oy
            );
        }
    }

    let mut labels = String::new();
    for (i, node) in cell.nodes.iter().enumerate() {
        let to = i + 2;
        let same_source = node.inputs[0].from == node.inputs[1].from;
        for (k, edge) in node.inputs.iter().enumerate() {
            let (x1, y1) = position(edge.from, b);
            let (x2, y2) = position(to, b);
            let (dx, dy) = (x2 - x1, y2 - y1);
            let len = (dx * dx + dy * dy).sqrt().max(1.0);
            let (ux, uy) = (dx / len, dy / len);
            // Bend edges that skip columns, and the two edges of a node from the same source.
            let span = ((x2 - x1) / COL).abs();
            let mut bend = if span > 1.2 { 28.0 * (span - 1.0) } else { 0.0 };
            if same_source {
                bend += if k == 0 { 22.0 } else { -22.0 };
            } else if bend > 0.0 && k == 1 {
                bend = -bend;
            }
            let (sx, sy) = (x1 + ux * R, y1 + uy * R);
            let (ex, ey) = (x2 - ux * R, y2 - uy * R);
            let (cx, cy) = ((sx + ex) / 2.0 - uy * bend, (sy + ey) / 2.0 + ux * bend);
            let hot = is_changed(to, k);
            let class = op_class(edge.op);
            let (stroke, width, dash, marker_suffix) = match (hot, role, class) {
                (true, Role::Best, _) => ("#e8590c", 3.2, "", "c"),
                (true, Role::Input, _) => ("#e8590c", 1.8, "6 4", "c"),
                (false, _, "null") => ("#b8c2cc", 1.4, "2 4", ""),
                (false, _, "skip") => ("#5c7cfa", 1.8, "", ""),
                _ => ("#7b8794", 1.8, "", ""),
            };
            let dash_attr = if dash.is_empty() {
                String::new()
            } else {
                format!(r#" stroke-dasharray="{dash}""#)
            };
            let _ = write!(
                svg,
                r#"<path class="edge {class}{hot}" data-from="{from}" data-to="{to}" data-input="{k}" data-op="{op}" d="M{sx:.1},{sy:.1} Q{cx:.1},{cy:.1} {ex:.1},{ey:.1}" fill="none" stroke="{stroke}" stroke-width="{width}"{dash_attr} marker-end="url(#{marker}{marker_suffix})"/>"#,
                hot = if hot { " changed" } else { "" },
                from = edge.from,
                op = edge.op.name(),
            );
            // Label at the curve's midpoint.
            let (lx, ly) = (
                0.25 * sx + 0.5 * cx + 0.25 * ex,
                0.25 * sy + 0.5 * cy + 0.25 * ey,
            );
            let text = match (hot, role, other) {
                (true, Role::Best, Some(o)) => {
                    let before = o
                        .nodes
                        .get(i)
                        .map(|n| n.inputs[k].op.short_name())
                        .unwrap_or("?");
                    format!("{before}→{}", edge.op.short_name())
                }
                _ => edge.op.short_name().to_string(),
            };
            let w = 7.0 * text.chars().count() as f64 + 8.0;
            let (fill, color, weight) = if hot {
                ("#fff4e6", "#d9480f", "700")
            } else {
                ("#ffffff", "#52606d", "500")
            };
            let _ = write!(
                labels,
                r#"<g class="edge-label{hot}"><rect x="{:.1}" y="{:.1}" width="{w:.1}" height="16" rx="4" fill="{fill}" fill-opacity="0.92"/><text x="{lx:.1}" y="{:.1}" text-anchor="middle" font-size="11" font-weight="{weight}" fill="{color}">{}</text></g>"#,
                lx - w / 2.0,
                ly - 8.0,
                ly + 4.0,
                escape(&text),
                hot = if hot { " changed" } else { "" },
            );
        }
    }
    svg.push_str(&labels);

    for n in 0..=out {
        let (x, y) = position(n, b);
        let (fill, stroke) = match n {
            0 | 1 => ("#e7f5ff", "#4dabf7"),
            n if n == out => ("#ebfbee", "#51cf66"),
            _ => ("#f8f9fa", "#868e96"),
        };
        let _ = write!(
            svg,
            r##"<g class="node" data-node="{n}"><circle cx="{x:.1}" cy="{y:.1}" r="{R}" fill="{fill}" stroke="{stroke}" stroke-width="1.6"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" font-size="12" font-weight="600" fill="#212529">{}</text></g>"##,
            y + 4.0,
            node_label(n, b),
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn darts() -> nat_arch::Genotype {
        nat_arch::parse_any("darts-v2").expect("preset")
    }

    #[test]
    fn changes_list_the_differing_edges() {
        let input = darts();
        let mut best = input.clone();
        best.normal.nodes[1].inputs[0].op = Op::SkipConnect;
        best.normal.nodes[2].inputs[1].op = Op::Null;
        let c = changes(&input.normal, &best.normal);
        assert_eq!(c.len(), 2);
        assert_eq!((c[0].to, c[0].input, c[0].after), (3, 0, "skip_connect"));
        assert_eq!((c[1].to, c[1].input, c[1].after), (4, 1, "null"));
        assert!(changes(&input.reduce, &best.reduce).is_empty());
    }

    #[test]
    fn svg_highlights_exactly_the_changed_edges() {
        let input = darts();
        let mut best = input.clone();
        best.normal.nodes[1].inputs[0].op = Op::SkipConnect;
        let svg = cell_svg(
            &best.normal,
            Some(&input.normal),
            Role::Best,
            "normal",
            "d1",
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches(r#"<path class="edge"#).count(), 8);
        assert_eq!(svg.matches("changed\" data-from").count(), 1);
        assert!(svg.contains("sep3→skip"), "{svg}");
        assert!(svg.contains(r#"data-role="best""#));
        // B = 4: two inputs, four intermediate nodes, one output.
        assert_eq!(svg.matches(r#"<g class="node""#).count(), 7);
        let plain = cell_svg(&input.normal, None, Role::Input, "normal", "d2");
        assert!(!plain.contains("changed"));
        assert!(!plain.contains("http://") || plain.matches("http://").count() == 1);
    }

    #[test]
    fn labels_are_escaped() {
        let svg = cell_svg(&darts().normal, None, Role::Input, "<x>", "a\"b");
        assert!(!svg.contains("<x>"));
        assert!(svg.contains("&lt;x&gt;") && svg.contains("a&quot;b"));
    }
}
