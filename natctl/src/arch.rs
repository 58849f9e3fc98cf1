//! `natctl arch …`: offline architecture commands (owned by the nat-arch work).
//!
//! Every command takes architectures as a preset name (`natctl arch list`), a file holding JSON,
//! a DARTS/NAT `Genotype(...)` string or the one-line text form, `-` for standard input, or such
//! a string inline. Errors are one line on stderr and a non-zero exit (see `main.rs`).

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Subcommand, ValueEnum};
use nat_arch::{
    cost::{network_cost, op_cost, NetworkCost, NetworkSpec},
    edge_changes, parse_any, presets, render, Dataset, EdgeChange, Genotype, OpSet, Space,
};
use serde::Serialize;

use crate::output::{emit, render as render_table, table, with_newline, Output};

#[derive(Debug, Subcommand)]
pub enum ArchCommand {
    /// List the preset architectures, one a line (name, kind, description).
    List {
        /// Print only the names (table output).
        #[arg(long)]
        names: bool,
    },
    /// Print an architecture in another format (`-o json|yaml`: every format at once, see
    /// docs/CLI.md).
    Show {
        /// Preset name, file (JSON, DARTS string or text form), `-` for stdin, or an inline string.
        arch: String,
        /// Output format (with the default table output).
        #[arg(long, value_enum, default_value_t = ShowFormat::Json)]
        format: ShowFormat,
    },
    /// Check an architecture; exit 0 when valid, else print the error and exit non-zero.
    Validate {
        /// Preset name, file, `-` or inline string.
        arch: String,
        /// Also require every op to be in this op list (nat-fully-concat, nat-loose-end, nat-plus-plus).
        #[arg(long)]
        op_set: Option<String>,
    },
    /// Show the edges whose op differs from A to B; with --space, fail (naming the edge and the
    /// rule) when B is not one transformation of A in that space.
    Diff {
        /// The input architecture.
        a: String,
        /// The transformed architecture.
        b: String,
        /// Transition space to check the moves against (nat or nat++).
        #[arg(long, value_parser = parse_space)]
        space: Option<Space>,
        /// Output: the changed edges as text, or a picture of B with them highlighted
        /// (`-o json|yaml` prints the changes as a document instead).
        #[arg(long, value_enum, default_value_t = DiffFormat::Text)]
        format: DiffFormat,
    },
    /// Parameters and multiply-adds of the whole evaluation network (auxiliary head excluded).
    Cost {
        /// Preset name, file, `-` or inline string.
        arch: String,
        /// Initial channels C (even).
        #[arg(long, default_value_t = 36)]
        channels: u64,
        /// Number of cells L (reductions at L/3 and 2L/3).
        #[arg(long, default_value_t = 20)]
        layers: u64,
        /// Input image side in pixels [default: 32, or the dataset's].
        #[arg(long)]
        image: Option<u64>,
        /// Input image channels [default: 3, or the dataset's].
        #[arg(long)]
        in_channels: Option<u64>,
        /// Number of classes [default: 10, or the dataset's].
        #[arg(long)]
        classes: Option<u64>,
        /// Take image size, input channels and classes from a dataset (digits, mnist, fashion-mnist, cifar10).
        #[arg(long)]
        dataset: Option<String>,
        /// Same as `-o json`.
        #[arg(long, hide = true)]
        json: bool,
    },
    /// Each op's parameters and multiply-adds at stride 1, and the moves the space allows from it.
    Ops {
        /// Transition space (nat or nat++); its op list is shown.
        #[arg(long, value_parser = parse_space, default_value = "nat++")]
        space: Space,
        /// Channels C (input = output).
        #[arg(long, default_value_t = 128)]
        channels: u64,
        /// Input image side in pixels.
        #[arg(long, default_value_t = 32)]
        image: u64,
        /// Same as `-o json`.
        #[arg(long, hide = true)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShowFormat {
    /// Canonical JSON (the wire form), pretty-printed.
    Json,
    /// DARTS' Python string, `(op, from)` pairs.
    Darts,
    /// NAT's Python string, `(op, from, to)` triples.
    Nat,
    /// The compact one-line text form.
    Text,
    /// Self-contained SVG picture of both cells.
    Svg,
    /// Graphviz DOT of both cells.
    Dot,
    /// The canonical SHA-256 hash.
    Hash,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiffFormat {
    /// One changed edge a line.
    Text,
    /// SVG of B with the changed edges highlighted.
    Svg,
    /// Graphviz DOT of B with the changed edges highlighted.
    Dot,
    /// JSON list of changes (the `changes` of `-o json`).
    Json,
}

fn parse_space(s: &str) -> Result<Space, String> {
    s.parse()
}

/// Resolves a preset name, file, `-` or inline string to a validated genotype.
fn load(arg: &str) -> anyhow::Result<Genotype> {
    if let Some(p) = presets::get(arg) {
        return Ok(p.genotype());
    }
    if arg == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading standard input")?;
        return parse_any(&text).context("standard input");
    }
    let path = Path::new(arg);
    if path.is_file() {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {arg}"))?;
        return parse_any(&text).with_context(|| arg.to_string());
    }
    let t = arg.trim_start();
    if t.starts_with('{') || t.contains("Genotype") || (t.starts_with("normal") && t.contains('|'))
    {
        return Ok(parse_any(arg)?);
    }
    if path.exists() {
        bail!("{arg}: not a regular file");
    }
    bail!("`{arg}` is neither a preset name (see `natctl arch list`) nor an existing file")
}

/// One preset (each item of `arch list -o json`).
#[derive(Debug, Serialize)]
struct PresetView {
    name: &'static str,
    /// `input` | `output`.
    kind: &'static str,
    /// The transition space of an output (`null` for an input).
    space: Option<String>,
    description: &'static str,
}

/// `arch show -o json`: one architecture in every format.
#[derive(Debug, Serialize)]
struct ShowView {
    arch: String,
    hash: String,
    num_nodes: usize,
    darts: String,
    nat: String,
    text: String,
    /// Canonical JSON.
    genotype: serde_json::Value,
}

/// `arch validate -o json` (an invalid architecture is an error, exit 1).
#[derive(Debug, Serialize)]
struct ValidateView {
    arch: String,
    valid: bool,
    num_nodes: usize,
    normal_concat: Vec<usize>,
    reduce_concat: Vec<usize>,
    hash: String,
    /// The op list checked with --op-set (`null` when none).
    op_set: Option<String>,
}

/// `arch diff -o json`.
#[derive(Debug, Serialize)]
struct DiffView {
    a: String,
    b: String,
    /// The space the moves were checked against (`null` without --space).
    space: Option<String>,
    changes: Vec<EdgeChange>,
}

/// `arch cost -o json`.
#[derive(Debug, Serialize)]
struct CostView {
    arch: String,
    spec: NetworkSpec,
    params: u64,
    madds: u64,
    /// Per cell and part.
    breakdown: NetworkCost,
}

/// `arch ops -o json`.
#[derive(Debug, Serialize)]
struct OpsView {
    space: &'static str,
    op_set: &'static str,
    channels: u64,
    image: u64,
    ops: Vec<OpView>,
}

/// One op of `arch ops -o json`.
#[derive(Debug, Serialize)]
struct OpView {
    op: &'static str,
    /// Conv weights, BN excluded (the chart's figure).
    params: u64,
    /// Conv multiply-adds + pool window reads + identity copies (the chart's figure).
    madds: u64,
    params_with_bn: u64,
    conv_madds: u64,
    /// Ops this one may become, in the official order.
    allowed: Vec<&'static str>,
}

pub fn run(cmd: ArchCommand, output: Output) -> anyhow::Result<ExitCode> {
    match cmd {
        ArchCommand::List { names } => list(names, output)?,
        ArchCommand::Show { arch, format } => show(&arch, format, output)?,
        ArchCommand::Validate { arch, op_set } => validate(&arch, op_set.as_deref(), output)?,
        ArchCommand::Diff {
            a,
            b,
            space,
            format,
        } => diff(&a, &b, space, format, output)?,
        ArchCommand::Cost {
            arch,
            channels,
            layers,
            image,
            in_channels,
            classes,
            dataset,
            json,
        } => {
            let base = match dataset.as_deref() {
                Some(name) => {
                    let d = Dataset::from_name(name).with_context(|| {
                        let all: Vec<_> = Dataset::ALL.iter().map(|d| d.name()).collect();
                        format!(
                            "--dataset {name}: unknown dataset (valid: {})",
                            all.join(", ")
                        )
                    })?;
                    NetworkSpec::for_dataset(d, channels, layers)
                }
                None => NetworkSpec::for_dataset(Dataset::Cifar10, channels, layers),
            };
            let spec = NetworkSpec {
                image_size: image.unwrap_or(base.image_size),
                in_channels: in_channels.unwrap_or(base.in_channels),
                num_classes: classes.unwrap_or(base.num_classes),
                ..base
            };
            cost(&arch, &spec, output.or_json(json))?;
        }
        ArchCommand::Ops {
            space,
            channels,
            image,
            json,
        } => ops(space, channels, image, output.or_json(json))?,
    }
    Ok(ExitCode::SUCCESS)
}

fn list(names: bool, output: Output) -> anyhow::Result<()> {
    let views: Vec<PresetView> = presets::all()
        .iter()
        .map(|p| {
            let (kind, space) = match p.kind {
                presets::PresetKind::Input => ("input", None),
                presets::PresetKind::Output { space, .. } => ("output", Some(space.to_string())),
            };
            PresetView {
                name: p.name,
                kind,
                space,
                description: p.description,
            }
        })
        .collect();
    output.print(&views, |views| {
        if names {
            return views.iter().map(|p| format!("{}\n", p.name)).collect();
        }
        let mut t = table(&[]);
        for p in views {
            let kind = match &p.space {
                Some(space) => format!("{space} output"),
                None => p.kind.to_string(),
            };
            t.add_row(vec![p.name.to_string(), kind, p.description.to_string()]);
        }
        render_table(t, &[])
    })
}

fn show(arch: &str, format: ShowFormat, output: Output) -> anyhow::Result<()> {
    let g = load(arch)?;
    if output != Output::Table {
        let view = ShowView {
            arch: arch.to_string(),
            hash: g.canonical_hash(),
            num_nodes: g.num_nodes(),
            darts: g.to_darts_string(),
            nat: g.to_nat_string(),
            text: g.to_text(),
            genotype: g.to_json_value(),
        };
        return output.print(&view, |_| String::new());
    }
    let text = match format {
        ShowFormat::Json => g.to_json_pretty(),
        ShowFormat::Darts => g.to_darts_string(),
        ShowFormat::Nat => g.to_nat_string(),
        ShowFormat::Text => g.to_text(),
        ShowFormat::Svg => render::genotype_svg(&g, arch),
        ShowFormat::Dot => render::genotype_dot(&g, arch),
        ShowFormat::Hash => g.canonical_hash(),
    };
    emit(&with_newline(text))
}

fn validate(arch: &str, op_set: Option<&str>, output: Output) -> anyhow::Result<()> {
    let g = load(arch)?;
    if let Some(name) = op_set {
        let set = OpSet::from_name(name).with_context(|| {
            let all: Vec<_> = OpSet::ALL.iter().map(|s| s.name()).collect();
            format!(
                "--op-set {name}: unknown op set (valid: {})",
                all.join(", ")
            )
        })?;
        g.validate_ops(set).with_context(|| arch.to_string())?;
    }
    let view = ValidateView {
        arch: arch.to_string(),
        valid: true,
        num_nodes: g.num_nodes(),
        normal_concat: g.normal.concat.clone(),
        reduce_concat: g.reduce.concat.clone(),
        hash: g.canonical_hash(),
        op_set: op_set.map(str::to_string),
    };
    output.print(&view, |v| {
        format!(
            "valid: B={} nodes, concat normal {:?} reduce {:?}, hash {}",
            v.num_nodes, v.normal_concat, v.reduce_concat, v.hash
        )
    })
}

fn diff(
    a: &str,
    b: &str,
    space: Option<Space>,
    format: DiffFormat,
    output: Output,
) -> anyhow::Result<()> {
    let ga = load(a)?;
    let gb = load(b)?;
    let changes = match space {
        Some(space) => space.check_transition(&ga, &gb),
        None => edge_changes(&ga, &gb),
    }
    .with_context(|| format!("{a} -> {b}"))?;
    if output != Output::Table {
        let view = DiffView {
            a: a.to_string(),
            b: b.to_string(),
            space: space.map(|s| s.to_string()),
            changes,
        };
        return output.print(&view, |_| String::new());
    }
    let text = match format {
        DiffFormat::Text => {
            let mut out = String::new();
            for c in &changes {
                out.push_str(&c.to_string());
                out.push('\n');
            }
            match space {
                Some(space) => out.push_str(&format!(
                    "{} edge(s) changed; every move is allowed under {space}\n",
                    changes.len()
                )),
                None => out.push_str(&format!("{} edge(s) changed\n", changes.len())),
            }
            out
        }
        DiffFormat::Json => with_newline(serde_json::to_string_pretty(&changes)?),
        DiffFormat::Svg => render::diff_svg(&gb, &changes, &format!("{a} → {b}")),
        DiffFormat::Dot => render::diff_dot(&gb, &changes, &format!("{a} → {b}")),
    };
    emit(&text)
}

fn cost(arch: &str, spec: &NetworkSpec, output: Output) -> anyhow::Result<()> {
    let g = load(arch)?;
    let c = network_cost(&g, spec).with_context(|| arch.to_string())?;
    let view = CostView {
        arch: arch.to_string(),
        spec: *spec,
        params: c.params(),
        madds: c.madds(),
        breakdown: c,
    };
    output.print(&view, |v| {
        let s = &v.spec;
        let mut t = table(&[]);
        t.add_row(vec![
            "params".to_string(),
            v.params.to_string(),
            format!("{:.3} M", v.params as f64 / 1e6),
        ]);
        t.add_row(vec![
            "multiply-adds".to_string(),
            v.madds.to_string(),
            format!("{:.1} M", v.madds as f64 / 1e6),
        ]);
        format!(
            "{}: C={} L={} input {}x{}x{} classes {} (auxiliary head excluded)\n{}",
            v.arch,
            s.channels,
            s.layers,
            s.in_channels,
            s.image_size,
            s.image_size,
            s.num_classes,
            render_table(t, &[1, 2])
        )
    })
}

fn ops(space: Space, channels: u64, image: u64, output: Output) -> anyhow::Result<()> {
    if channels == 0 || channels > 1 << 16 {
        bail!("--channels {channels}: must be between 1 and 65536");
    }
    if image == 0 || image > 1 << 14 {
        bail!("--image {image}: must be between 1 and 16384");
    }
    let set = space.op_set();
    let view = OpsView {
        space: space.name(),
        op_set: set.name(),
        channels,
        image,
        ops: set
            .ops()
            .iter()
            .map(|&op| {
                let c = op_cost(op, channels, image, image, 1);
                OpView {
                    op: op.name(),
                    params: c.chart_params(),
                    madds: c.chart_madds(),
                    params_with_bn: c.params(),
                    conv_madds: c.conv_madds,
                    allowed: space.allowed_targets(op).iter().map(|o| o.name()).collect(),
                }
            })
            .collect(),
    };
    output.print(&view, |v| {
        let mut t = table(&["op", "params", "MAdds", "allowed moves (in the official order)"]);
        for o in &v.ops {
            t.add_row(vec![
                o.op.to_string(),
                format!("{:.1}K", o.params as f64 / 1e3),
                format!("{:.1}M", o.madds as f64 / 1e6),
                o.allowed.join(", "),
            ]);
        }
        format!(
            "{space} ({} ops, list {set}); C={channels} in and out, {image}x{image} input, stride 1\n\
             params = conv weights (BN excluded), MAdds = conv multiply-adds + pool window reads + identity copies\n{}",
            v.ops.len(),
            render_table(t, &[1, 2])
        )
    })
}
