//! Pictures of cells and of transformations: self-contained SVG and Graphviz DOT.
//!
//! Nodes are labelled with their ids, as in error messages and diffs: `0: c_{k-2}`,
//! `1: c_{k-1}`, the intermediate nodes `2`..`B+1`, and the output `c_{k}` (fed by the concat
//! list, drawn dashed). In a diff picture the second genotype is drawn; edges whose op changed
//! are red and labelled `old→new`, the others grey with their op.
//!
//! The SVG uses no external assets (no fonts, images, CSS files, or element ids), so several
//! pictures can be inlined into one HTML page.

use std::fmt::Write as _;

use crate::genotype::{Cell, CellKind, Genotype};
use crate::op::Op;
use crate::transition::EdgeChange;

/// Escapes text for XML (SVG) content and attributes.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes text for a double-quoted DOT string.
fn dot_str(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

const COL: f64 = 150.0;
const CELL_H: f64 = 260.0;
const TITLE_H: f64 = 28.0;

fn node_pos(id: usize, top: f64) -> (f64, f64) {
    let mid = top + TITLE_H + (CELL_H - TITLE_H) / 2.0;
    match id {
        0 => (70.0, mid - 70.0),
        1 => (70.0, mid + 70.0),
        t => {
            let zig = if t % 2 == 0 { -30.0 } else { 30.0 };
            (70.0 + (t - 1) as f64 * COL, mid + zig)
        }
    }
}

fn node_label(id: usize) -> String {
    match id {
        0 => "0: c_{k-2}".into(),
        1 => "1: c_{k-1}".into(),
        t => t.to_string(),
    }
}

fn cell_width(cell: &Cell) -> f64 {
    70.0 + (cell.nodes.len() + 1) as f64 * COL + 70.0
}

/// How one edge is drawn.
struct EdgeStyle {
    label: String,
    changed: bool,
}

fn edge_style(
    kind: CellKind,
    node: usize,
    input: usize,
    from: usize,
    op: Op,
    changes: Option<&[EdgeChange]>,
) -> EdgeStyle {
    if let Some(changes) = changes {
        // Changes refer to edges by (cell, node, source, new op); match them on the drawn genotype.
        if let Some(c) = changes
            .iter()
            .find(|c| {
                c.cell == kind
                    && c.node == node
                    && c.from == from
                    && c.new == op
                    && c.input == input
            })
            .or_else(|| {
                changes
                    .iter()
                    .find(|c| c.cell == kind && c.node == node && c.from == from && c.new == op)
            })
        {
            return EdgeStyle {
                label: format!("{}→{}", c.old.name(), c.new.name()),
                changed: true,
            };
        }
    }
    EdgeStyle {
        label: op.name().to_string(),
        changed: false,
    }
}

fn svg_node(out: &mut String, x: f64, y: f64, label: &str, fill: &str) {
    let w = 16.0 + 7.0 * label.chars().count() as f64;
    let _ = write!(
        out,
        r##"<rect x="{:.1}" y="{:.1}" width="{w:.1}" height="26" rx="5" fill="{fill}" stroke="#333"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
        x - w / 2.0,
        y - 13.0,
        y + 4.5,
        xml(label)
    );
}

fn svg_arrow(
    out: &mut String,
    from: (f64, f64),
    ctrl: (f64, f64),
    to: (f64, f64),
    color: &str,
    width: f64,
    dashed: bool,
) {
    // Stop the curve at the node box border (approximately): shorten by 14 px along the tangent.
    let (dx, dy) = (to.0 - ctrl.0, to.1 - ctrl.1);
    let len = (dx * dx + dy * dy).sqrt().max(1e-6);
    let (ux, uy) = (dx / len, dy / len);
    let end = (to.0 - ux * 16.0, to.1 - uy * 16.0);
    let dash = if dashed {
        r#" stroke-dasharray="5,4""#
    } else {
        ""
    };
    let _ = write!(
        out,
        r#"<path d="M{:.1},{:.1} Q{:.1},{:.1} {:.1},{:.1}" fill="none" stroke="{color}" stroke-width="{width}"{dash}/>"#,
        from.0, from.1, ctrl.0, ctrl.1, end.0, end.1
    );
    // Arrowhead.
    let (px, py) = (-uy, ux);
    let base = (end.0 - ux * 9.0, end.1 - uy * 9.0);
    let _ = write!(
        out,
        r#"<polygon points="{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}" fill="{color}"/>"#,
        end.0,
        end.1,
        base.0 + px * 4.5,
        base.1 + py * 4.5,
        base.0 - px * 4.5,
        base.1 - py * 4.5
    );
}

fn svg_cell(
    out: &mut String,
    kind: CellKind,
    cell: &Cell,
    top: f64,
    title: &str,
    changes: Option<&[EdgeChange]>,
) {
    let _ = write!(
        out,
        r#"<text x="10" y="{:.1}" font-weight="bold" font-size="14">{}</text>"#,
        top + 18.0,
        xml(title)
    );
    let out_id = cell.nodes.len() + 2;
    let out_pos = node_pos(out_id, top);
    let out_pos = (out_pos.0, top + TITLE_H + (CELL_H - TITLE_H) / 2.0);
    // Edges first, nodes on top.
    let mut labels = String::new();
    for (i, node) in cell.nodes.iter().enumerate() {
        let t = i + 2;
        for (input, e) in node.inputs.iter().enumerate() {
            let a = node_pos(e.from, top);
            let b = node_pos(t, top);
            let (dx, dy) = (b.0 - a.0, b.1 - a.1);
            let dist = (dx * dx + dy * dy).sqrt().max(1.0);
            let bend = (0.12 * dist + 18.0) * if input == 0 { -1.0 } else { 1.0 };
            let ctrl = (
                (a.0 + b.0) / 2.0 - dy / dist * bend,
                (a.1 + b.1) / 2.0 + dx / dist * bend,
            );
            let style = edge_style(kind, t, input, e.from, e.op, changes);
            let (color, width, text_color) = if style.changed {
                ("#d62728", 2.5, "#d62728")
            } else if changes.is_some() {
                ("#999", 1.2, "#555")
            } else if e.op == Op::Null {
                ("#bbb", 1.2, "#888")
            } else {
                ("#444", 1.4, "#222")
            };
            svg_arrow(
                out,
                a,
                ctrl,
                b,
                color,
                width,
                e.op == Op::Null && !style.changed,
            );
            let lx = 0.25 * a.0 + 0.5 * ctrl.0 + 0.25 * b.0;
            let ly = 0.25 * a.1 + 0.5 * ctrl.1 + 0.25 * b.1;
            let weight = if style.changed {
                r#" font-weight="bold""#
            } else {
                ""
            };
            let _ = write!(
                labels,
                r##"<text x="{lx:.1}" y="{:.1}" text-anchor="middle" font-size="10" fill="{text_color}"{weight} stroke="#fff" stroke-width="3" paint-order="stroke">{}</text>"##,
                ly - 3.0,
                xml(&style.label)
            );
        }
    }
    for &c in &cell.concat {
        let a = node_pos(c, top);
        let ctrl = ((a.0 + out_pos.0) / 2.0, (a.1 + out_pos.1) / 2.0 + 25.0);
        svg_arrow(out, a, ctrl, out_pos, "#777", 1.0, true);
    }
    out.push_str(&labels);
    svg_node(
        out,
        node_pos(0, top).0,
        node_pos(0, top).1,
        &node_label(0),
        "#c1e1c1",
    );
    svg_node(
        out,
        node_pos(1, top).0,
        node_pos(1, top).1,
        &node_label(1),
        "#c1e1c1",
    );
    for i in 0..cell.nodes.len() {
        let (x, y) = node_pos(i + 2, top);
        svg_node(out, x, y, &node_label(i + 2), "#cde4f7");
    }
    svg_node(out, out_pos.0, out_pos.1, "c_{k}", "#f3eaa6");
}

fn svg_document(g: &Genotype, title: &str, changes: Option<&[EdgeChange]>) -> String {
    let width = cell_width(&g.normal).max(cell_width(&g.reduce)).max(360.0);
    let height = 2.0 * CELL_H + 10.0;
    let mut out = String::with_capacity(8192);
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="12"><title>{}</title><rect width="100%" height="100%" fill="#fff"/>"##,
        xml(title)
    );
    for (kind, top) in [(CellKind::Normal, 0.0), (CellKind::Reduce, CELL_H)] {
        let cell = g.cell(kind);
        let n = changes.map(|c| c.iter().filter(|x| x.cell == kind).count());
        let t = match n {
            Some(n) => format!("{kind} cell ({n} changed)"),
            None => format!("{kind} cell"),
        };
        svg_cell(&mut out, kind, cell, top, &t, changes);
    }
    out.push_str("</svg>\n");
    out
}

/// SVG of both cells of a genotype (normal above reduce).
pub fn genotype_svg(g: &Genotype, title: &str) -> String {
    svg_document(g, title, None)
}

/// SVG of one cell.
pub fn cell_svg(cell: &Cell, kind: CellKind, title: &str) -> String {
    let width = cell_width(cell).max(360.0);
    let mut out = String::with_capacity(4096);
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{CELL_H:.0}" viewBox="0 0 {width:.0} {CELL_H:.0}" font-family="sans-serif" font-size="12"><title>{}</title><rect width="100%" height="100%" fill="#fff"/>"##,
        xml(title)
    );
    svg_cell(&mut out, kind, cell, 0.0, &format!("{kind} cell"), None);
    out.push_str("</svg>\n");
    out
}

/// SVG of `b` with the edges changed from `a` (as computed by
/// [`crate::transition::edge_changes`] or [`crate::Space::check_transition`]) highlighted in red
/// and labelled `old→new`.
pub fn diff_svg(b: &Genotype, changes: &[EdgeChange], title: &str) -> String {
    svg_document(b, title, Some(changes))
}

fn dot_cell(
    out: &mut String,
    kind: CellKind,
    cell: &Cell,
    changes: Option<&[EdgeChange]>,
    indent: &str,
) {
    let p = kind.name();
    let _ = writeln!(
        out,
        "{indent}\"{p}_0\" [label=\"{}\", fillcolor=darkseagreen2];",
        dot_str(&node_label(0))
    );
    let _ = writeln!(
        out,
        "{indent}\"{p}_1\" [label=\"{}\", fillcolor=darkseagreen2];",
        dot_str(&node_label(1))
    );
    for i in 0..cell.nodes.len() {
        let _ = writeln!(
            out,
            "{indent}\"{p}_{}\" [label=\"{}\", fillcolor=lightblue];",
            i + 2,
            i + 2
        );
    }
    let _ = writeln!(
        out,
        "{indent}\"{p}_out\" [label=\"c_{{k}}\", fillcolor=palegoldenrod];"
    );
    for (i, node) in cell.nodes.iter().enumerate() {
        let t = i + 2;
        for (input, e) in node.inputs.iter().enumerate() {
            let style = edge_style(kind, t, input, e.from, e.op, changes);
            let attrs = if style.changed {
                ", color=red, fontcolor=red, penwidth=2.5"
            } else if changes.is_some() {
                ", color=gray55, fontcolor=gray35"
            } else if e.op == Op::Null {
                ", color=gray70, fontcolor=gray50, style=dashed"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "{indent}\"{p}_{}\" -> \"{p}_{t}\" [label=\"{}\"{attrs}];",
                e.from,
                dot_str(&style.label)
            );
        }
    }
    for &c in &cell.concat {
        let _ = writeln!(
            out,
            "{indent}\"{p}_{c}\" -> \"{p}_out\" [style=dashed, color=gray50];"
        );
    }
}

fn dot_document(g: &Genotype, title: &str, changes: Option<&[EdgeChange]>) -> String {
    let mut out = String::with_capacity(4096);
    let _ = writeln!(out, "digraph genotype {{");
    let _ = writeln!(out, "  label=\"{}\";", dot_str(title));
    out.push_str("  labelloc=t;\n  rankdir=LR;\n  node [shape=box, style=\"rounded,filled\", fontname=\"helvetica\"];\n  edge [fontname=\"helvetica\", fontsize=10];\n");
    for kind in CellKind::ALL {
        let _ = writeln!(out, "  subgraph cluster_{} {{", kind.name());
        let _ = writeln!(out, "    label=\"{} cell\";", kind.name());
        dot_cell(&mut out, kind, g.cell(kind), changes, "    ");
        out.push_str("  }\n");
    }
    out.push_str("}\n");
    out
}

/// Graphviz DOT of both cells of a genotype (one cluster per cell).
pub fn genotype_dot(g: &Genotype, title: &str) -> String {
    dot_document(g, title, None)
}

/// Graphviz DOT of one cell.
pub fn cell_dot(cell: &Cell, kind: CellKind) -> String {
    let mut out = String::with_capacity(2048);
    let _ = writeln!(out, "digraph {} {{", kind.name());
    out.push_str("  rankdir=LR;\n  node [shape=box, style=\"rounded,filled\", fontname=\"helvetica\"];\n  edge [fontname=\"helvetica\", fontsize=10];\n");
    dot_cell(&mut out, kind, cell, None, "  ");
    out.push_str("}\n");
    out
}

/// Graphviz DOT of `b` with the changed edges red and labelled `old→new`.
pub fn diff_dot(b: &Genotype, changes: &[EdgeChange], title: &str) -> String {
    dot_document(b, title, Some(changes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presets;
    use crate::transition::edge_changes;

    fn count(hay: &str, needle: &str) -> usize {
        hay.matches(needle).count()
    }

    #[test]
    fn svg_has_every_edge_and_node_and_no_external_assets() {
        let g = presets::get("enas").expect("p").genotype();
        let svg = genotype_svg(&g, "enas <test> & co");
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("enas &lt;test&gt; &amp; co"));
        // 2 cells × 5 nodes × 2 edges + concat edges (5 + 3).
        assert_eq!(count(&svg, "<path "), 20 + 5 + 3);
        assert_eq!(count(&svg, "<polygon "), 20 + 5 + 3);
        assert_eq!(count(&svg, "<rect "), 1 + 2 * (2 + 5 + 1));
        assert_eq!(count(&svg, ">sep_conv_5x5<"), 5);
        for forbidden in ["href", "url(", "@import", "<image", "<script", " id="] {
            assert!(!svg.contains(forbidden), "{forbidden}");
        }
    }

    #[test]
    fn diff_highlights_exactly_the_changed_edges() {
        let a = presets::get("darts-v2").expect("p").genotype();
        let b = presets::get("darts-v2.nat++").expect("p").genotype();
        let changes = edge_changes(&a, &b).expect("same wiring");
        assert_eq!(changes.len(), 6);
        let svg = diff_svg(&b, &changes, "darts-v2 → darts-v2.nat++");
        assert_eq!(count(&svg, "stroke=\"#d62728\""), 6);
        assert!(svg.contains(">sep_conv_3x3→dil_conv_3x3<"));
        assert!(svg.contains(">max_pool_3x3→avg_pool_3x3<"));
        assert!(svg.contains("normal cell (3 changed)"));
        let dot = diff_dot(&b, &changes, "diff");
        assert_eq!(count(&dot, ", color=red, fontcolor=red"), 6);
        assert!(dot.contains(
            "\"normal_1\" -> \"normal_4\" [label=\"sep_conv_3x3→dil_conv_3x3\", color=red"
        ));
    }

    #[test]
    fn dot_lists_every_edge() {
        let g = presets::get("vgg-block").expect("p").genotype();
        let dot = genotype_dot(&g, "vgg");
        assert_eq!(count(&dot, " -> "), 16 + 2);
        assert!(dot.contains("subgraph cluster_normal"));
        assert!(dot.contains("\"reduce_4\" -> \"reduce_5\" [label=\"max_pool_3x3\"];"));
        let one = cell_dot(&g.normal, CellKind::Normal);
        assert_eq!(count(&one, " -> "), 8 + 1);
        let svg = cell_svg(&g.reduce, CellKind::Reduce, "vgg reduce");
        assert_eq!(count(&svg, "<path "), 8 + 1);
    }
}
