//! `natctl arch …`: offline architecture commands (owned by the nat-arch work).
//!
//! Every command takes architectures as a preset name (`natctl arch list`), a file holding JSON,
//! a DARTS/NAT `Genotype(...)` string or the one-line text form, `-` for standard input, or such
//! a string inline. Errors are one line on stderr and a non-zero exit (see `main.rs`).

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Subcommand, ValueEnum};
use nat_arch::{
    cost::{network_cost, op_cost, NetworkSpec},
    edge_changes, parse_any, presets, render, Dataset, Genotype, OpSet, Space,
};
use serde_json::json;

#[derive(Debug, Subcommand)]
pub enum ArchCommand {
    /// List the preset architectures, one a line (name, kind, description).
    List {
        /// Print only the names.
        #[arg(long)]
        names: bool,
    },
    /// Print an architecture in another format.
    Show {
        /// Preset name, file (JSON, DARTS string or text form), `-` for stdin, or an inline string.
        arch: String,
        /// Output format.
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
        /// Output: the changed edges as text, or a picture of B with them highlighted.
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
        /// Print JSON (with a per-cell breakdown).
        #[arg(long)]
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
        /// Print JSON.
        #[arg(long)]
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
    /// JSON list of changes.
    Json,
}

fn parse_space(s: &str) -> Result<Space, String> {
    s.parse()
}

/// Writes to stdout; a closed pipe (`natctl arch list | head -1`) is not an error.
fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e).context("writing to standard output"),
    }
}

fn with_newline(mut s: String) -> String {
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
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

pub fn run(cmd: ArchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ArchCommand::List { names } => list(names)?,
        ArchCommand::Show { arch, format } => show(&arch, format)?,
        ArchCommand::Validate { arch, op_set } => validate(&arch, op_set.as_deref())?,
        ArchCommand::Diff {
            a,
            b,
            space,
            format,
        } => diff(&a, &b, space, format)?,
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
            cost(&arch, &spec, json)?;
        }
        ArchCommand::Ops {
            space,
            channels,
            image,
            json,
        } => ops(space, channels, image, json)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn list(names: bool) -> anyhow::Result<()> {
    let mut out = String::new();
    for p in presets::all() {
        if names {
            out.push_str(p.name);
            out.push('\n');
            continue;
        }
        let kind = match p.kind {
            presets::PresetKind::Input => "input".to_string(),
            presets::PresetKind::Output { space, .. } => format!("{space} output"),
        };
        out.push_str(&format!("{:<24} {:<12} {}\n", p.name, kind, p.description));
    }
    emit(&out)
}

fn show(arch: &str, format: ShowFormat) -> anyhow::Result<()> {
    let g = load(arch)?;
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

fn validate(arch: &str, op_set: Option<&str>) -> anyhow::Result<()> {
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
    emit(&format!(
        "valid: B={} nodes, concat normal {:?} reduce {:?}, hash {}\n",
        g.num_nodes(),
        g.normal.concat,
        g.reduce.concat,
        g.canonical_hash()
    ))
}

fn diff(a: &str, b: &str, space: Option<Space>, format: DiffFormat) -> anyhow::Result<()> {
    let ga = load(a)?;
    let gb = load(b)?;
    let changes = match space {
        Some(space) => space.check_transition(&ga, &gb),
        None => edge_changes(&ga, &gb),
    }
    .with_context(|| format!("{a} -> {b}"))?;
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

fn cost(arch: &str, spec: &NetworkSpec, as_json: bool) -> anyhow::Result<()> {
    let g = load(arch)?;
    let c = network_cost(&g, spec).with_context(|| arch.to_string())?;
    if as_json {
        let v = json!({
            "arch": arch,
            "spec": spec,
            "params": c.params(),
            "madds": c.madds(),
            "breakdown": c,
        });
        return emit(&with_newline(serde_json::to_string_pretty(&v)?));
    }
    emit(&format!(
        "{arch}: C={} L={} input {}x{}x{} classes {} (auxiliary head excluded)\n\
         params {} ({:.3} M)\n\
         multiply-adds {} ({:.1} M)\n",
        spec.channels,
        spec.layers,
        spec.in_channels,
        spec.image_size,
        spec.image_size,
        spec.num_classes,
        c.params(),
        c.params() as f64 / 1e6,
        c.madds(),
        c.madds() as f64 / 1e6
    ))
}

fn ops(space: Space, channels: u64, image: u64, as_json: bool) -> anyhow::Result<()> {
    if channels == 0 || channels > 1 << 16 {
        bail!("--channels {channels}: must be between 1 and 65536");
    }
    if image == 0 || image > 1 << 14 {
        bail!("--image {image}: must be between 1 and 16384");
    }
    let set = space.op_set();
    let rows: Vec<_> = set
        .ops()
        .iter()
        .map(|&op| {
            (
                op,
                op_cost(op, channels, image, image, 1),
                space.allowed_targets(op),
            )
        })
        .collect();
    if as_json {
        let v: Vec<_> = rows
            .iter()
            .map(|(op, c, allowed)| {
                json!({
                    "op": op.name(),
                    "params": c.chart_params(),
                    "madds": c.chart_madds(),
                    "params_with_bn": c.params(),
                    "conv_madds": c.conv_madds,
                    "allowed": allowed.iter().map(|o| o.name()).collect::<Vec<_>>(),
                })
            })
            .collect();
        return emit(&with_newline(serde_json::to_string_pretty(&json!({
            "space": space.name(),
            "op_set": set.name(),
            "channels": channels,
            "image": image,
            "ops": v,
        }))?));
    }
    let mut out = format!(
        "{space} ({} ops, list {set}); C={channels} in and out, {image}x{image} input, stride 1\n\
         params = conv weights (BN excluded), MAdds = conv multiply-adds + pool window reads + identity copies\n\
         {:<14} {:>10} {:>10}  allowed moves (in the official order)\n",
        set.len(),
        "op",
        "params",
        "MAdds"
    );
    for (op, c, allowed) in rows {
        let names: Vec<_> = allowed.iter().map(|o| o.name()).collect();
        out.push_str(&format!(
            "{:<14} {:>9.1}K {:>9.1}M  {}\n",
            op.name(),
            c.chart_params() as f64 / 1e3,
            c.chart_madds() as f64 / 1e6,
            names.join(", ")
        ));
    }
    emit(&out)
}
