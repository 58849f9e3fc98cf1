//! DARTS' Python genotype string.
//!
//! # Output
//! [`Genotype::to_darts_string`] prints exactly what Python prints for a DARTS `Genotype`
//! namedtuple whose concat fields are lists, which is also how DARTS' own `cnn/genotypes.py`
//! writes `DARTS_V2`:
//!
//! ```text
//! Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ...], normal_concat=[2, 3, 4, 5], reduce=[...], reduce_concat=[2, 3, 4, 5])
//! ```
//!
//! Concat lists are always printed as lists, never as `range(2, 6)`: a list is what
//! `genotypes.py` spells for `DARTS_V2`, what `train_search.py` prints after `derive`, and what
//! evaluates to the same namedtuple everywhere. [`Genotype::to_nat_string`] prints the NAT
//! variant, whose edges are `(op, from, to)` triples (NAT's `genotypes.py`).
//!
//! # Input
//! [`Genotype::from_darts_str`] accepts
//! - `(op, from)` pairs (DARTS: pair `i` belongs to node `2 + i/2`) or `(op, from, to)` triples
//!   (NAT: two per node, sorted by `to`; `to` is checked), not mixed within one list;
//! - concat as a list or tuple of integers, or `range(a, b)` / `range(b)`;
//! - keyword arguments in any order, all four required; the positional order
//!   `Genotype(normal, normal_concat, reduce, reduce_concat)` too;
//! - an optional leading `NAME =` (pasting a line from `genotypes.py`), single or double quotes,
//!   any whitespace and newlines, trailing commas, `#` comments;
//! - op names as in the official code, DARTS' `'none'` for null, and the short names of the
//!   text form.
//!
//! The result is validated ([`Genotype::validate`]).

use std::fmt::Write as _;

use crate::error::{excerpt, line_col, op_names, ArchError, Format};
use crate::genotype::{Cell, CellKind, Edge, Genotype, Node};
use crate::op::Op;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    Str(String),
    Int(usize),
    LParen,
    RParen,
    LBrack,
    RBrack,
    Comma,
    Eq,
    End,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Str(s) => format!("string '{s}'"),
            Tok::Int(n) => format!("number {n}"),
            Tok::LParen => "`(`".into(),
            Tok::RParen => "`)`".into(),
            Tok::LBrack => "`[`".into(),
            Tok::RBrack => "`]`".into(),
            Tok::Comma => "`,`".into(),
            Tok::Eq => "`=`".into(),
            Tok::End => "end of input".into(),
        }
    }
}

struct Parser<'a> {
    text: &'a str,
    toks: Vec<(Tok, usize)>,
    pos: usize,
}

fn syntax(text: &str, at: usize, message: String) -> ArchError {
    let (line, column) = line_col(text, at);
    ArchError::Syntax {
        format: Format::Darts,
        line,
        column,
        message,
    }
}

fn lex(text: &str) -> Result<Vec<(Tok, usize)>, ArchError> {
    let mut toks = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '#' => {
                while let Some(&(_, c)) = chars.peek() {
                    if c == '\n' {
                        break;
                    }
                    chars.next();
                }
            }
            '(' | ')' | '[' | ']' | ',' | '=' => {
                chars.next();
                let t = match c {
                    '(' => Tok::LParen,
                    ')' => Tok::RParen,
                    '[' => Tok::LBrack,
                    ']' => Tok::RBrack,
                    ',' => Tok::Comma,
                    _ => Tok::Eq,
                };
                toks.push((t, i));
            }
            '\'' | '"' => {
                chars.next();
                let mut s = String::new();
                let mut closed = false;
                for (_, d) in chars.by_ref() {
                    if d == c {
                        closed = true;
                        break;
                    }
                    if d == '\n' {
                        break;
                    }
                    s.push(d);
                }
                if !closed {
                    return Err(syntax(text, i, "unterminated string".into()));
                }
                toks.push((Tok::Str(s), i));
            }
            c if c.is_ascii_digit() => {
                let mut n: usize = 0;
                while let Some(&(_, d)) = chars.peek() {
                    let Some(v) = d.to_digit(10) else { break };
                    n = n
                        .checked_mul(10)
                        .and_then(|n| n.checked_add(v as usize))
                        .ok_or_else(|| syntax(text, i, "number too large".into()))?;
                    chars.next();
                }
                toks.push((Tok::Int(n), i));
            }
            c if c.is_alphabetic() || c == '_' => {
                let mut s = String::new();
                while let Some(&(_, d)) = chars.peek() {
                    if d.is_alphanumeric() || d == '_' || d == '.' {
                        s.push(d);
                        chars.next();
                    } else {
                        break;
                    }
                }
                toks.push((Tok::Ident(s), i));
            }
            '-' => {
                return Err(syntax(
                    text,
                    i,
                    "negative numbers are not node ids (use 0 for c_{k-2}, 1 for c_{k-1})".into(),
                ))
            }
            other => {
                return Err(syntax(text, i, format!("unexpected character `{other}`")));
            }
        }
    }
    toks.push((Tok::End, text.len()));
    Ok(toks)
}

/// One parsed edge list entry: op name, source, optional destination, and its offset.
type RawEdge = (String, usize, Option<usize>, usize);

impl<'a> Parser<'a> {
    fn peek(&self) -> &Tok {
        self.toks.get(self.pos).map(|t| &t.0).unwrap_or(&Tok::End)
    }

    fn offset(&self) -> usize {
        self.toks
            .get(self.pos)
            .map(|t| t.1)
            .unwrap_or(self.text.len())
    }

    fn next(&mut self) -> Tok {
        let t = self.peek().clone();
        if self.pos < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn err(&self, message: String) -> ArchError {
        syntax(self.text, self.offset(), message)
    }

    fn expect(&mut self, want: Tok, what: &str) -> Result<(), ArchError> {
        if *self.peek() == want {
            self.next();
            Ok(())
        } else {
            Err(self.err(format!("expected {what}, found {}", self.peek().describe())))
        }
    }

    fn int(&mut self, what: &str) -> Result<usize, ArchError> {
        match self.peek().clone() {
            Tok::Int(n) => {
                self.next();
                Ok(n)
            }
            t => Err(self.err(format!("expected {what}, found {}", t.describe()))),
        }
    }

    /// `[` or `(` item, item, ... `]`/`)` with an optional trailing comma.
    fn sequence<T>(
        &mut self,
        what: &str,
        mut item: impl FnMut(&mut Self) -> Result<T, ArchError>,
    ) -> Result<Vec<T>, ArchError> {
        let close = match self.peek() {
            Tok::LBrack => Tok::RBrack,
            Tok::LParen => Tok::RParen,
            t => {
                return Err(self.err(format!(
                    "expected a list for {what}, found {}",
                    t.describe()
                )))
            }
        };
        self.next();
        let mut out = Vec::new();
        loop {
            if *self.peek() == close {
                self.next();
                return Ok(out);
            }
            out.push(item(self)?);
            match self.peek() {
                Tok::Comma => {
                    self.next();
                }
                t if *t == close => {}
                t => {
                    return Err(self.err(format!(
                        "expected `,` or {} in {what}, found {}",
                        close.describe(),
                        t.describe()
                    )))
                }
            }
        }
    }

    fn edge(&mut self) -> Result<RawEdge, ArchError> {
        let at = self.offset();
        self.expect(Tok::LParen, "`(` starting an (op, from) tuple")?;
        let name = match self.next() {
            Tok::Str(s) => s,
            t => {
                return Err(syntax(
                    self.text,
                    at,
                    format!("expected a quoted op name, found {}", t.describe()),
                ))
            }
        };
        self.expect(Tok::Comma, "`,` after the op name")?;
        let from = self.int("the source node id")?;
        let mut to = None;
        if *self.peek() == Tok::Comma {
            self.next();
            if *self.peek() != Tok::RParen {
                to = Some(self.int("the destination node id")?);
                if *self.peek() == Tok::Comma {
                    self.next();
                }
            }
        }
        self.expect(Tok::RParen, "`)` closing the edge tuple")?;
        Ok((name, from, to, at))
    }

    fn concat(&mut self) -> Result<Vec<usize>, ArchError> {
        self.concat_nested(0)
    }

    fn concat_nested(&mut self, depth: usize) -> Result<Vec<usize>, ArchError> {
        if let Tok::Ident(name) = self.peek().clone() {
            if name != "range" && name != "list" {
                return Err(self.err(format!(
                    "expected a concat list or range(a, b), found `{name}`"
                )));
            }
            self.next();
            if name == "list" {
                if depth >= 2 {
                    return Err(self.err("concat nested too deeply".into()));
                }
                self.expect(Tok::LParen, "`(` after list")?;
                let v = self.concat_nested(depth + 1)?;
                self.expect(Tok::RParen, "`)` closing list(...)")?;
                return Ok(v);
            }
            self.expect(Tok::LParen, "`(` after range")?;
            let a = self.int("a range bound")?;
            let (start, end) = if *self.peek() == Tok::Comma {
                self.next();
                if *self.peek() == Tok::RParen {
                    (0, a)
                } else {
                    (a, self.int("a range bound")?)
                }
            } else {
                (0, a)
            };
            if *self.peek() == Tok::Comma {
                self.next();
            }
            self.expect(Tok::RParen, "`)` closing range(...)")?;
            if end.saturating_sub(start) > 4096 {
                return Err(self.err(format!(
                    "range({start}, {end}) is too long for a concat list"
                )));
            }
            return Ok((start..end).collect());
        }
        self.sequence("the concat list", |p| p.int("a node id"))
    }

    fn cell(
        &mut self,
        kind: CellKind,
        raw: Vec<RawEdge>,
        concat: Vec<usize>,
    ) -> Result<Cell, ArchError> {
        let triples = raw.first().map(|e| e.2.is_some()).unwrap_or(false);
        let mut nodes = Vec::with_capacity(raw.len() / 2);
        for (index, (_, _, to, at)) in raw.iter().enumerate() {
            if to.is_some() != triples {
                return Err(syntax(
                    self.text,
                    *at,
                    format!(
                        "{kind} cell mixes (op, from) pairs and (op, from, to) triples; use one form"
                    ),
                ));
            }
            if let Some(to) = *to {
                let expected = 2 + index / 2;
                if to != expected {
                    return Err(ArchError::EdgeOrder {
                        cell: kind,
                        index,
                        to,
                        expected,
                    });
                }
            }
        }
        if !raw.len().is_multiple_of(2) {
            return Err(ArchError::WrongEdgeCount {
                cell: kind,
                node: 2 + raw.len() / 2,
                count: 1,
            });
        }
        for (i, pair) in raw.chunks_exact(2).enumerate() {
            let id = i + 2;
            let mut edges = [Edge::new(Op::Null, 0); 2];
            for (input, ((name, from, _, _), slot)) in pair.iter().zip(edges.iter_mut()).enumerate()
            {
                let op = Op::from_name_lenient(name).ok_or_else(|| ArchError::UnknownOp {
                    cell: kind,
                    node: id,
                    input,
                    name: excerpt(name, 40),
                    valid: op_names(&Op::ALL),
                })?;
                *slot = Edge::new(op, *from);
            }
            nodes.push(Node { inputs: edges });
        }
        Ok(Cell { nodes, concat })
    }

    fn genotype(&mut self) -> Result<Genotype, ArchError> {
        // Optional `NAME =` prefix.
        if let (Some((Tok::Ident(_), _)), Some((Tok::Eq, _))) =
            (self.toks.first(), self.toks.get(1))
        {
            self.pos = 2;
        }
        match self.next() {
            Tok::Ident(name) if name == "Genotype" || name.ends_with(".Genotype") => {}
            t => {
                return Err(syntax(
                    self.text,
                    self.toks
                        .get(self.pos.saturating_sub(1))
                        .map(|t| t.1)
                        .unwrap_or(0),
                    format!("expected `Genotype(`, found {}", t.describe()),
                ))
            }
        }
        self.expect(Tok::LParen, "`(` after Genotype")?;
        const FIELDS: [&str; 4] = ["normal", "normal_concat", "reduce", "reduce_concat"];
        let mut normal: Option<Vec<RawEdge>> = None;
        let mut reduce: Option<Vec<RawEdge>> = None;
        let mut normal_concat: Option<Vec<usize>> = None;
        let mut reduce_concat: Option<Vec<usize>> = None;
        let mut positional = 0usize;
        loop {
            if *self.peek() == Tok::RParen {
                self.next();
                break;
            }
            let at = self.offset();
            let name = match (
                self.peek().clone(),
                self.toks.get(self.pos + 1).map(|t| &t.0),
            ) {
                (Tok::Ident(name), Some(Tok::Eq)) => {
                    self.pos += 2;
                    if !FIELDS.contains(&name.as_str()) {
                        return Err(syntax(
                            self.text,
                            at,
                            format!("unknown field `{name}` (expected: {})", FIELDS.join(", ")),
                        ));
                    }
                    name
                }
                _ => {
                    let Some(name) = FIELDS.get(positional) else {
                        return Err(self.err("too many arguments to Genotype(...)".into()));
                    };
                    positional += 1;
                    (*name).to_string()
                }
            };
            let dup = match name.as_str() {
                "normal" => normal.replace(self.sequence("the normal edge list", Self::edge)?),
                "reduce" => reduce.replace(self.sequence("the reduce edge list", Self::edge)?),
                "normal_concat" => normal_concat.replace(self.concat()?).map(|_| Vec::new()),
                _ => reduce_concat.replace(self.concat()?).map(|_| Vec::new()),
            }
            .is_some();
            if dup {
                return Err(syntax(self.text, at, format!("field `{name}` given twice")));
            }
            match self.peek() {
                Tok::Comma => {
                    self.next();
                }
                Tok::RParen => {}
                t => {
                    return Err(self.err(format!(
                        "expected `,` or `)` after field `{name}`, found {}",
                        t.describe()
                    )))
                }
            }
        }
        if *self.peek() != Tok::End {
            return Err(self.err(format!(
                "unexpected {} after the closing `)`",
                self.peek().describe()
            )));
        }
        let missing = |f: &str| self.err(format!("missing field `{f}`"));
        let normal = normal.ok_or_else(|| missing("normal"))?;
        let normal_concat = normal_concat.ok_or_else(|| missing("normal_concat"))?;
        let reduce = reduce.ok_or_else(|| missing("reduce"))?;
        let reduce_concat = reduce_concat.ok_or_else(|| missing("reduce_concat"))?;
        let g = Genotype {
            normal: self.cell(CellKind::Normal, normal, normal_concat)?,
            reduce: self.cell(CellKind::Reduce, reduce, reduce_concat)?,
        };
        g.validate()?;
        Ok(g)
    }
}

fn write_list(out: &mut String, items: &[usize]) {
    out.push('[');
    for (i, x) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{x}");
    }
    out.push(']');
}

fn write_edges(out: &mut String, cell: &Cell, triples: bool) {
    out.push('[');
    for (i, (op, from, to)) in cell.edges().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        if triples {
            let _ = write!(out, "('{}', {from}, {to})", op.name());
        } else {
            let _ = write!(out, "('{}', {from})", op.name());
        }
    }
    out.push(']');
}

fn write_genotype(g: &Genotype, triples: bool) -> String {
    let mut out = String::with_capacity(512);
    out.push_str("Genotype(normal=");
    write_edges(&mut out, &g.normal, triples);
    out.push_str(", normal_concat=");
    write_list(&mut out, &g.normal.concat);
    out.push_str(", reduce=");
    write_edges(&mut out, &g.reduce, triples);
    out.push_str(", reduce_concat=");
    write_list(&mut out, &g.reduce.concat);
    out.push(')');
    out
}

impl Genotype {
    /// Parses a DARTS (pairs) or NAT (triples) Python genotype string and validates it.
    pub fn from_darts_str(text: &str) -> Result<Genotype, ArchError> {
        let toks = lex(text)?;
        Parser { text, toks, pos: 0 }.genotype()
    }

    /// The genotype as DARTS prints it (`(op, from)` pairs, concat as lists).
    pub fn to_darts_string(&self) -> String {
        write_genotype(self, false)
    }

    /// The genotype as NAT's `genotypes.py` writes it (`(op, from, to)` triples).
    pub fn to_nat_string(&self) -> String {
        write_genotype(self, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presets;

    /// DARTS_V2 exactly as in quark0/darts `cnn/genotypes.py` (the text after `DARTS_V2 = `).
    const DARTS_V2: &str = "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])";

    #[test]
    fn darts_v2_prints_byte_for_byte() {
        let g = presets::get("darts-v2").expect("preset").genotype();
        assert_eq!(g.to_darts_string(), DARTS_V2);
        assert_eq!(Genotype::from_darts_str(DARTS_V2), Ok(g));
    }

    #[test]
    fn nat_triples_with_range_and_assignment() {
        // NAT genotypes.py, NAT_DARTS (multi-line, range concat, triples).
        let text = "NAT_DARTS = Genotype(\n    normal=[('sep_conv_3x3', 0, 2), ('sep_conv_3x3', 1, 2), ('skip_connect', 0, 3), ('sep_conv_3x3', 1, 3), ('skip_connect', 1, 4), ('skip_connect', 0, 4), ('skip_connect', 0, 5), ('dil_conv_3x3', 2, 5)], normal_concat=range(2, 6),\n    reduce=[('max_pool_3x3', 0, 2), ('skip_connect', 1, 2), ('skip_connect', 2, 3), ('skip_connect', 1, 3), ('max_pool_3x3', 0, 4), ('null', 2, 4), ('skip_connect', 2, 5), ('max_pool_3x3', 1, 5)], reduce_concat=range(2, 6))\n";
        let g = Genotype::from_darts_str(text).expect("parses");
        assert_eq!(g, presets::get("darts-v2.nat").expect("preset").genotype());
        assert_eq!(Genotype::from_darts_str(&g.to_nat_string()), Ok(g));
    }

    #[test]
    fn keyword_order_quotes_comments_and_none() {
        let text = "# pasted\nGenotype(reduce_concat=[2], reduce=[(\"max_pool_3x3\", 0), ('none', 1),],\n normal_concat=(2,), normal=[('sep3', 0), ('skip_connect', 1)],)";
        let g = Genotype::from_darts_str(text).expect("parses");
        assert_eq!(g.normal.nodes[0].inputs[0].op, Op::SepConv3x3);
        assert_eq!(g.reduce.nodes[0].inputs[1].op, Op::Null);
        assert_eq!(g.reduce.concat, vec![2]);
    }

    #[test]
    fn errors_name_the_place() {
        let bad_op = DARTS_V2.replacen("('skip_connect', 2)", "('skip_conect', 2)", 1);
        let err = Genotype::from_darts_str(&bad_op).unwrap_err();
        assert!(
            matches!(
                &err,
                ArchError::UnknownOp {
                    cell: CellKind::Reduce,
                    node: 3,
                    input: 0,
                    ..
                }
            ),
            "{err}"
        );
        let fwd = DARTS_V2.replacen("('dil_conv_3x3', 2)", "('dil_conv_3x3', 7)", 1);
        let err = Genotype::from_darts_str(&fwd).unwrap_err();
        assert!(
            matches!(
                err,
                ArchError::BadSource {
                    cell: CellKind::Normal,
                    node: 5,
                    input: 1,
                    from: 7,
                    ..
                }
            ),
            "{err}"
        );
        let err = Genotype::from_darts_str(&DARTS_V2[..100]).unwrap_err();
        assert!(err.to_string().contains("end of input"), "{err}");
        let err = Genotype::from_darts_str("Genotype(normal=[('null', 0, 3), ('null', 1, 2)], normal_concat=[2], reduce=[], reduce_concat=[2])").unwrap_err();
        assert!(
            matches!(
                err,
                ArchError::EdgeOrder {
                    index: 0,
                    to: 3,
                    expected: 2,
                    ..
                }
            ),
            "{err}"
        );
        let err = Genotype::from_darts_str("Genotype(normal=[('null', 0)], normal_concat=[2], reduce=[('null', 0)], reduce_concat=[2])").unwrap_err();
        assert!(
            matches!(
                err,
                ArchError::WrongEdgeCount {
                    cell: CellKind::Normal,
                    node: 2,
                    count: 1
                }
            ),
            "{err}"
        );
        let err = Genotype::from_darts_str("Genotype(normal=[], normal_concat=[2], reduce=[])")
            .unwrap_err();
        assert!(
            err.to_string().contains("missing field `reduce_concat`"),
            "{err}"
        );
        let deep = format!(
            "Genotype(normal=[], normal_concat={}[2]{}, reduce=[], reduce_concat=[2])",
            "list(".repeat(100_000),
            ")".repeat(100_000)
        );
        let err = Genotype::from_darts_str(&deep).unwrap_err();
        assert!(err.to_string().contains("nested too deeply"), "{err}");
        let err = Genotype::from_darts_str("\u{0}\u{1}garbage").unwrap_err();
        assert!(
            matches!(
                err,
                ArchError::Syntax {
                    format: Format::Darts,
                    line: 1,
                    column: 1,
                    ..
                }
            ),
            "{err}"
        );
    }
}
