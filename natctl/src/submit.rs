//! `natctl submit`: a job from flags and/or a job file (`-f`, see jobfile.rs), printed as the
//! created job; `--follow` then watches it and exits with its end state.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use nat_proto::v1;

use crate::client::{status_error, Connection, Remote};
use crate::jobfile::{self, BudgetFile, DatasetShapeFile, JobFile};
use crate::output::Output;
use crate::view::JobView;

/// `natctl submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Job file (YAML); flags given as well override its fields.
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// evaluate | optimize.
    #[arg(long)]
    kind: Option<String>,
    /// Architecture: a preset name, a file (JSON or DARTS), or inline JSON / DARTS. Repeatable.
    #[arg(long = "arch")]
    archs: Vec<String>,
    /// Dataset: a built-in (digits, mnist, fashion-mnist, cifar10) or a dataset folder name
    /// the workers have (see `natctl workers`).
    #[arg(long)]
    dataset: Option<String>,
    /// Input channels of a dataset that is not built in (1 grey, 3 RGB); with --image-size and
    /// --classes. Needed only when no registered worker reports the dataset's shape.
    #[arg(long)]
    channels: Option<u32>,
    /// Square image side in pixels of a dataset that is not built in (4..=512).
    #[arg(long)]
    image_size: Option<u32>,
    /// Classes of a dataset that is not built in (2..=10000).
    #[arg(long)]
    classes: Option<u32>,
    /// Reward of optimize jobs: proxy | supernet.
    #[arg(long)]
    reward: Option<String>,
    /// Optimize jobs: seeds of the final evaluation (original and best trained from scratch on
    /// each), 1..=32; default 3.
    #[arg(long)]
    final_seeds: Option<u32>,
    /// Optimize jobs: candidates costing more params or multiply-adds than this times the
    /// original's are out of the running, [1, 10]; default 1 (no extra cost).
    #[arg(long)]
    max_cost_ratio: Option<f64>,
    /// Optimize jobs: none | random (also derive from K uniform samples and evaluate that pick
    /// on the same seeds).
    #[arg(long)]
    control: Option<String>,
    /// Budget preset: smoke | small | paper.
    #[arg(long)]
    budget: Option<String>,
    /// Seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Priority (higher first), -1000..=1000.
    #[arg(long, allow_hyphen_values = true)]
    priority: Option<i32>,
    /// Label.
    #[arg(long)]
    name: Option<String>,
    /// Then watch the job until it ends (as `natctl watch`; `-o json`: the job, then one JSON
    /// object per event per line); exit 0 when it succeeds, 1 otherwise.
    #[arg(long)]
    pub follow: bool,
    /// With --follow: one line per event even on a terminal.
    #[arg(long, requires = "follow")]
    pub plain: bool,
}

/// Submits the job `a` describes to the coordinator of `remote` and prints it; with `--follow`,
/// watches it and returns its end state's exit code.
pub async fn submit(
    a: &SubmitArgs,
    remote: Remote<'_>,
    output: Output,
) -> anyhow::Result<ExitCode> {
    // Built before connecting so that bad input fails without a coordinator.
    let req = submit_request(a)?;
    let mut jobs = Connection::open(remote).await?.jobs();
    let job = jobs
        .submit_job(req)
        .await
        .map_err(|s| status_error("submit", s))?
        .into_inner()
        .job
        .ok_or_else(|| anyhow!("the coordinator answered without a job"))?;
    let view = JobView::of(&job)?;
    let table = |j: &JobView| {
        format!(
            "submitted {} job with {} task(s)\n{}",
            j.kind, j.tasks.total, j.job_id
        )
    };
    if !a.follow {
        output.print(&view, table)?;
        return Ok(ExitCode::SUCCESS);
    }
    // A stream: the job is its first item (one JSON line), the events follow.
    output.print_item(&view, |j| Some(table(j)))?;
    crate::watch::watch(&mut jobs, &job.job_id, a.plain, output).await
}

/// Resolves `--arch` values: an existing file is read, anything else is sent as given (the
/// coordinator accepts preset names, JSON and DARTS strings and validates them).
fn resolve_arch(value: &str) -> anyhow::Result<String> {
    let path = std::path::Path::new(value);
    if path.is_file() {
        return std::fs::read_to_string(path)
            .with_context(|| format!("cannot read architecture file {value}"));
    }
    Ok(value.to_string())
}

fn submit_request(a: &SubmitArgs) -> anyhow::Result<v1::SubmitJobRequest> {
    let file = match &a.file {
        Some(path) => JobFile::load(path)?,
        None => JobFile::default(),
    };
    let kind = match a.kind.as_deref().or(file.kind.as_deref()) {
        Some(k) => jobfile::parse_kind(k)?,
        None => v1::JobKind::Evaluate,
    };
    let arch_values: Vec<String> = if a.archs.is_empty() {
        file.architectures.clone()
    } else {
        a.archs.clone()
    };
    // An optimize job that learns on random architectures may have no input.
    let random_inputs = file
        .optimize
        .as_ref()
        .is_some_and(|o| o.random_inputs == Some(true));
    if arch_values.is_empty() && !(kind == v1::JobKind::Optimize && random_inputs) {
        bail!("architectures: give at least one with --arch or in the job file");
    }
    let architectures = arch_values
        .iter()
        .map(|v| resolve_arch(v))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let dataset = a
        .dataset
        .clone()
        .or(file.dataset.clone())
        .ok_or_else(|| anyhow!("dataset: give --dataset or `dataset:` in the job file"))?;
    let dataset_shape = dataset_shape(a, file.dataset_shape.as_ref())?;
    let budget_file = file.budget.clone().unwrap_or_else(BudgetFile::default);
    // Resolved here as the coordinator will (nat_schema::Budget), so that a bad value fails
    // before anything is sent, naming the field.
    let (preset, _) = budget_file.resolve(a.budget.as_deref(), "budget")?;
    let budget = budget_file.to_proto(a.budget.as_deref());
    let requirements = file
        .requirements
        .as_ref()
        .map(jobfile::requirements)
        .transpose()?;
    if let Some(o) = &file.optimize {
        if let Some(b) = &o.final_budget {
            b.resolve(None, "optimize.final_budget")?;
        }
        let reward = a.reward.as_deref().or(o.reward.as_deref());
        let supernet = reward
            .map(jobfile::parse_reward)
            .transpose()?
            .is_some_and(|r| r == v1::RewardMode::Supernet);
        if let (true, Some(sn)) = (supernet, &o.supernet) {
            sn.resolve(&preset)?;
        }
    }
    let flags = jobfile::OptimizeFlags {
        reward: a.reward.as_deref(),
        final_seeds: a.final_seeds,
        max_cost_ratio: a.max_cost_ratio,
        control: a.control.as_deref(),
    };
    let optimize = match (&file.optimize, kind) {
        (Some(o), _) => Some(jobfile::optimize(o, flags)?),
        (None, v1::JobKind::Optimize) => Some(jobfile::optimize(&Default::default(), flags)?),
        (None, _) if flags.any() => bail!(
            "--reward, --final-seeds, --max-cost-ratio and --control only apply to optimize jobs"
        ),
        (None, _) => None,
    };
    Ok(v1::SubmitJobRequest {
        kind: kind as i32,
        architectures,
        dataset,
        budget: Some(budget),
        seed: a.seed.or(file.seed).unwrap_or(0),
        priority: a.priority.or(file.priority).unwrap_or(0),
        name: a.name.clone().or(file.name.clone()).unwrap_or_default(),
        optimize,
        requirements,
        dataset_shape,
    })
}

/// `dataset_shape:` of the job file with `--channels`, `--image-size` and `--classes`
/// overriding its keys: none given is `None`; some given must be all three, and valid.
fn dataset_shape(
    a: &SubmitArgs,
    file: Option<&DatasetShapeFile>,
) -> anyhow::Result<Option<v1::DatasetShape>> {
    let from_file = file.cloned().unwrap_or_default();
    let channels = a.channels.or(from_file.channels);
    let image_size = a.image_size.or(from_file.image_size);
    let classes = a.classes.or(from_file.classes);
    if channels.is_none() && image_size.is_none() && classes.is_none() {
        return Ok(None);
    }
    let need = |v: Option<u32>, key: &str, flag: &str| {
        v.ok_or_else(|| {
            anyhow!("dataset_shape.{key}: missing (give {flag} or `dataset_shape.{key}:` with the other two)")
        })
    };
    let shape = nat_arch::DatasetShape {
        channels: need(channels, "channels", "--channels")?,
        image_size: need(image_size, "image_size", "--image-size")?,
        classes: need(classes, "classes", "--classes")?,
    };
    shape.validate().map_err(|e| anyhow!("dataset_shape.{e}"))?;
    Ok(Some(v1::DatasetShape {
        channels: shape.channels,
        image_size: shape.image_size,
        classes: shape.classes,
    }))
}
