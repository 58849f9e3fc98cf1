//! `-o/--output json|yaml|table`: how a natctl command prints the data it shows.
//!
//! Every command that prints data builds one serializable value (its stable, documented JSON form,
//! see docs/CLI.md) and a human table from the same value; this picks which one goes to stdout.
//! Tables are built with comfy-table, borderless, columns two spaces apart.

use std::io::Write;

use anyhow::Context;
use comfy_table::{presets, CellAlignment, Table};
use serde::Serialize;

/// The output format chosen with `-o/--output` (env `NAT_OUTPUT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Output {
    /// Human-readable tables and lines (the default).
    #[default]
    Table,
    /// One JSON document (pretty-printed), field names as documented in docs/CLI.md.
    Json,
    /// The same document as YAML.
    Yaml,
}

impl Output {
    /// `Json` when a command's hidden `--json` alias is given, else `self`.
    pub fn or_json(self, json_alias: bool) -> Output {
        if json_alias {
            Output::Json
        } else {
            self
        }
    }

    /// Prints `value` as JSON or YAML, or the text `table` builds from it for `Table`.
    pub fn print<T: Serialize>(
        self,
        value: &T,
        table: impl FnOnce(&T) -> String,
    ) -> anyhow::Result<()> {
        let text = match self {
            Output::Table => table(value),
            Output::Json => serde_json::to_string_pretty(value)?,
            Output::Yaml => yaml_serde::to_string(value)?,
        };
        emit(&with_newline(text))
    }

    /// Prints one item of a stream (`watch`, `submit --follow`): for `Json` one compact JSON
    /// object on its own line (JSON Lines), for `Yaml` one document starting with `---`, for
    /// `Table` the line `table` makes (nothing when it makes none).
    pub fn print_item<T: Serialize>(
        self,
        value: &T,
        table: impl FnOnce(&T) -> Option<String>,
    ) -> anyhow::Result<()> {
        let text = match self {
            Output::Table => match table(value) {
                Some(line) => line,
                None => return Ok(()),
            },
            Output::Json => serde_json::to_string(value)?,
            Output::Yaml => format!("---\n{}", yaml_serde::to_string(value)?),
        };
        emit(&with_newline(text))
    }
}

/// Writes to stdout; a closed pipe (`natctl jobs | head -1`) is not an error.
pub fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e).context("writing to standard output"),
    }
}

/// `s` ending with exactly the newlines it had, or one when it had none.
pub fn with_newline(mut s: String) -> String {
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// A borderless table with `header` (no header row when empty).
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    if !header.is_empty() {
        t.set_header(header.to_vec());
    }
    t
}

/// The text of `t`: columns two spaces apart, the columns in `right` right-aligned, no
/// trailing spaces, one row a line.
pub fn render(mut t: Table, right: &[usize]) -> String {
    let last = t.column_count().saturating_sub(1);
    for (i, c) in t.column_iter_mut().enumerate() {
        c.set_padding((0, if i == last { 0 } else { 2 }));
        if right.contains(&i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    let mut out = String::new();
    // The preset draws its borders and the header rule as blanks: leave those lines out.
    for line in t.lines().filter(|l| !l.trim().is_empty()) {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_borderless_and_aligned() {
        let mut t = table(&["NAME", "N"]);
        t.add_row(vec!["a", "10"]);
        t.add_row(vec!["long-name", "2"]);
        assert_eq!(
            render(t, &[1]),
            "NAME        N\na          10\nlong-name   2\n"
        );
    }
}
