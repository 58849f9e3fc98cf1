//! Commands that talk to a coordinator over gRPC (`--coordinator URL` / `NAT_COORDINATOR`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use nat_proto::v1;
use nat_proto::v1::job_service_client::JobServiceClient;
use serde_json::json;
use tonic::transport::Channel;

use crate::jobfile::{self, BudgetFile, JobFile};

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Submit a job; prints the job id as the last line.
    Submit(SubmitArgs),
    /// List jobs (newest first).
    Jobs {
        /// Most jobs shown.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Only jobs in this state (queued, running, succeeded, failed, cancelled); repeatable.
        #[arg(long = "state")]
        states: Vec<String>,
    },
    /// Show one job.
    Status {
        /// Job id.
        job: String,
    },
    /// Follow a job's events until it ends: progress bars on a terminal (tasks, policy
    /// updates, best reward and accuracy), one line per event otherwise. Exit 0 when the job
    /// succeeds; otherwise 1 and an error naming the final state.
    Watch {
        /// Job id.
        job: String,
        /// One line per event even on a terminal.
        #[arg(long)]
        plain: bool,
    },
    /// Cancel a job: queued tasks are withdrawn, running ones told to stop.
    Cancel {
        /// Job id.
        job: String,
        /// Why (kept in the log).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// List registered workers.
    Workers,
    /// Show a job's result: a table (for an optimize job the verdict, the recommendation, the
    /// final evaluation per seed and whether the policy learned), or JSON with --json.
    Result {
        /// Job id.
        job: String,
        /// Print JSON (`state`, and per architecture `genotype` (DARTS), `params`, `madds`,
        /// `accuracy`, …; for an optimize job also `original`, `best`, `verdict`, `recommended`,
        /// `final` (per-seed accuracies, paired difference with its 95 % interval), `control`,
        /// `learning`, per input under `optimize`).
        #[arg(long)]
        json: bool,
    },
}

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
    /// digits | mnist | fashion-mnist | cifar10.
    #[arg(long)]
    dataset: Option<String>,
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
}

pub fn run(cmd: ClientCommand, coordinator: &str) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(run_async(cmd, coordinator))
}

async fn connect(url: &str) -> anyhow::Result<Channel> {
    let endpoint = Channel::from_shared(url.to_string())
        .map_err(|_| anyhow!("--coordinator: {url:?} is not a valid URL"))?
        .connect_timeout(Duration::from_secs(5));
    endpoint
        .connect()
        .await
        .with_context(|| format!("cannot connect to the coordinator at {url}"))
}

/// A gRPC status as one readable line, with the code's canonical name (`NOT_FOUND`).
pub(crate) fn status_error(what: &str, s: tonic::Status) -> anyhow::Error {
    anyhow!("{what}: {} ({})", s.message(), code_name(s.code()))
}

/// The canonical name of a gRPC status code, as the gRPC specification spells it.
pub(crate) fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

async fn run_async(cmd: ClientCommand, url: &str) -> anyhow::Result<ExitCode> {
    // Build the request before connecting so that bad input fails without a coordinator.
    if let ClientCommand::Submit(args) = &cmd {
        let req = submit_request(args)?;
        let mut jobs = JobServiceClient::new(connect(url).await?);
        let job = jobs
            .submit_job(req)
            .await
            .map_err(|s| status_error("submit", s))?
            .into_inner()
            .job
            .ok_or_else(|| anyhow!("the coordinator answered without a job"))?;
        println!(
            "submitted {} job with {} task(s)",
            kind_name(job.kind),
            job.tasks_total
        );
        println!("{}", job.job_id);
        return Ok(ExitCode::SUCCESS);
    }
    let mut jobs = JobServiceClient::new(connect(url).await?);
    match cmd {
        ClientCommand::Submit(_) => unreachable_submit(),
        ClientCommand::Jobs { limit, states } => {
            let states = states
                .iter()
                .map(|s| parse_state(s).map(|st| st as i32))
                .collect::<anyhow::Result<Vec<i32>>>()?;
            let list = jobs
                .list_jobs(v1::ListJobsRequest { states, limit })
                .await
                .map_err(|s| status_error("jobs", s))?
                .into_inner()
                .jobs;
            println!(
                "{:<36}  {:<8}  {:<9}  {:>9}  NAME",
                "JOB", "KIND", "STATE", "PROGRESS"
            );
            for j in list {
                let done = j.tasks_succeeded + j.tasks_failed + j.tasks_cancelled;
                println!(
                    "{:<36}  {:<8}  {:<9}  {:>9}  {}",
                    j.job_id,
                    kind_name(j.kind),
                    state_name(j.state),
                    format!("{done}/{}", j.tasks_total),
                    j.name
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Status { job } => {
            let j = get_job(&mut jobs, &job).await?;
            print_status(&j);
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Watch { job, plain } => crate::watch::watch(&mut jobs, &job, plain).await,
        ClientCommand::Cancel { job, reason } => {
            let j = jobs
                .cancel_job(v1::CancelJobRequest {
                    job_id: job.clone(),
                    reason,
                })
                .await
                .map_err(|s| status_error("cancel", s))?
                .into_inner()
                .job
                .ok_or_else(|| anyhow!("the coordinator answered without a job"))?;
            println!("{} {}", j.job_id, state_name(j.state));
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Workers => {
            let list = jobs
                .list_workers(v1::ListWorkersRequest {})
                .await
                .map_err(|s| status_error("workers", s))?
                .into_inner()
                .workers;
            println!(
                "{:<36}  {:<20}  {:<5}  {:>5}  {:>5}  DEVICES",
                "WORKER", "NAME", "ALIVE", "SLOTS", "CORES"
            );
            for w in list {
                let caps = w.capabilities.unwrap_or_default();
                let devices: Vec<String> = caps
                    .devices
                    .iter()
                    .map(|d| {
                        if d.model.is_empty() {
                            d.name.clone()
                        } else {
                            format!("{} ({})", d.name, d.model)
                        }
                    })
                    .collect();
                println!(
                    "{:<36}  {:<20}  {:<5}  {:>5}  {:>5}  {}",
                    w.worker_id,
                    w.name,
                    if w.alive { "yes" } else { "no" },
                    caps.slots,
                    caps.cpu_cores,
                    devices.join(", ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Result { job, json } => {
            let r = jobs
                .get_job_result(v1::GetJobResultRequest { job_id: job })
                .await
                .map_err(|s| status_error("result", s))?
                .into_inner();
            if json {
                println!("{}", serde_json::to_string_pretty(&result_json(&r)?)?);
            } else {
                print!("{}", result_text(&r));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn unreachable_submit() -> anyhow::Result<ExitCode> {
    bail!("internal: submit handled above")
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
    })
}

pub(crate) async fn get_job(
    jobs: &mut JobServiceClient<Channel>,
    id: &str,
) -> anyhow::Result<v1::Job> {
    jobs.get_job(v1::GetJobRequest {
        job_id: id.to_string(),
    })
    .await
    .map_err(|s| status_error("status", s))?
    .into_inner()
    .job
    .ok_or_else(|| anyhow!("the coordinator answered without a job"))
}

pub(crate) fn kind_name(kind: i32) -> &'static str {
    jobfile::job_kind_from_proto(kind).map_or("unknown", nat_schema::JobKind::as_str)
}

/// A genotype JSON text from the coordinator as a JSON value (`null` when empty); text that is
/// not JSON is an error naming `field`.
pub(crate) fn genotype_json(text: &str, field: &str) -> anyhow::Result<serde_json::Value> {
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_str(text).with_context(|| format!("{field}: not JSON: {text:.80}"))
}

/// A job state by its name as natctl prints it (`running`), for `jobs --state`.
fn parse_state(name: &str) -> anyhow::Result<v1::JobState> {
    const NAMES: [&str; 5] = ["queued", "running", "succeeded", "failed", "cancelled"];
    let lower = name.trim().to_ascii_lowercase();
    if !NAMES.contains(&lower.as_str()) {
        return Err(anyhow!(
            "--state: unknown job state {name:?} (expected one of {})",
            NAMES.join(", ")
        ));
    }
    v1::JobState::from_str_name(&format!("JOB_STATE_{}", lower.to_ascii_uppercase()))
        .ok_or_else(|| anyhow!("--state: unknown job state {name:?}"))
}

pub(crate) fn state_name(state: i32) -> &'static str {
    match v1::JobState::try_from(state) {
        Ok(v1::JobState::Queued) => "queued",
        Ok(v1::JobState::Running) => "running",
        Ok(v1::JobState::Succeeded) => "succeeded",
        Ok(v1::JobState::Failed) => "failed",
        Ok(v1::JobState::Cancelled) => "cancelled",
        _ => "unknown",
    }
}

fn task_state_name(state: i32) -> &'static str {
    match v1::TaskState::try_from(state) {
        Ok(v1::TaskState::Queued) => "queued",
        Ok(v1::TaskState::Leased) => "running",
        Ok(v1::TaskState::Succeeded) => "succeeded",
        Ok(v1::TaskState::Failed) => "failed",
        Ok(v1::TaskState::Cancelled) => "cancelled",
        _ => "unknown",
    }
}

fn print_status(j: &v1::Job) {
    println!("job:       {}", j.job_id);
    if !j.name.is_empty() {
        println!("name:      {}", j.name);
    }
    println!("kind:      {}", kind_name(j.kind));
    println!("state:     {}", state_name(j.state));
    println!("dataset:   {}", j.dataset);
    println!("budget:    {}", j.budget_preset);
    println!("priority:  {}", j.priority);
    println!(
        "tasks:     {} total, {} succeeded, {} failed, {} cancelled, {} running, {} pending",
        j.tasks_total,
        j.tasks_succeeded,
        j.tasks_failed,
        j.tasks_cancelled,
        j.tasks_running,
        j.tasks_pending
    );
    if !j.error.is_empty() {
        println!("error:     {}", j.error);
    }
}

fn result_json(r: &v1::GetJobResultResponse) -> anyhow::Result<serde_json::Value> {
    let architectures: Vec<_> = r
        .architectures
        .iter()
        .map(|a| {
            let m = a.result;
            Ok(json!({
                "index": a.index,
                "genotype": a.genotype_darts,
                "genotype_json": genotype_json(
                    &a.genotype_json,
                    &format!("architectures[{}].genotype_json", a.index),
                )?,
                "hash": a.canonical_hash,
                "state": task_state_name(a.state),
                "attempts": a.attempts,
                "params": m.as_ref().map(|m| m.params),
                "madds": m.as_ref().map(|m| m.madds),
                "accuracy": m.as_ref().map(|m| m.accuracy),
                "loss": m.as_ref().map(|m| m.loss),
                "wall_seconds": m.as_ref().map(|m| m.wall_seconds),
                "images_per_second": m.as_ref().map(|m| m.images_per_second),
                "error": (!a.error.is_empty()).then(|| a.error.clone()),
            }))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut out = json!({
        "job_id": r.job_id,
        "kind": kind_name(r.kind),
        "state": state_name(r.state),
        "architectures": architectures,
    });
    // optimize (h8): original, best, policy {id, version}, rewards.
    if let Some(map) = out.as_object_mut() {
        for (k, v) in crate::policy::optimize_json(r)? {
            map.insert(k.to_string(), v);
        }
    }
    Ok(out)
}

/// `natctl result JOB` without `--json`: the architectures table, then for an optimize job
/// the verdict, the recommendation, the final evaluation and the learning per input.
pub(crate) fn result_text(r: &v1::GetJobResultResponse) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "job {} ({}) {}",
        r.job_id,
        kind_name(r.kind),
        state_name(r.state)
    );
    if !(r.architectures.is_empty() && r.kind == v1::JobKind::Optimize as i32) {
        let _ = writeln!(
            out,
            "{:>3}  {:<9}  {:>8}  {:>10}  {:>12}  HASH",
            "#", "STATE", "ACCURACY", "PARAMS", "MADDS"
        );
    }
    for a in &r.architectures {
        let (acc, params, madds) = match &a.result {
            Some(m) => (
                format!("{:.4}", m.accuracy),
                m.params.to_string(),
                m.madds.to_string(),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let _ = writeln!(
            out,
            "{:>3}  {:<9}  {:>8}  {:>10}  {:>12}  {}",
            a.index,
            task_state_name(a.state),
            acc,
            params,
            madds,
            a.canonical_hash.get(..12).unwrap_or(&a.canonical_hash)
        );
        if !a.error.is_empty() {
            let _ = writeln!(out, "     error: {}", a.error);
        }
    }
    out.push_str(&crate::report::optimize_text(r));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_states_parse_by_their_printed_names() {
        for st in [
            v1::JobState::Queued,
            v1::JobState::Running,
            v1::JobState::Succeeded,
            v1::JobState::Failed,
            v1::JobState::Cancelled,
        ] {
            assert_eq!(parse_state(state_name(st as i32)).expect("parses"), st);
        }
        assert_eq!(
            parse_state("RUNNING").expect("any case"),
            v1::JobState::Running
        );
        let e = parse_state("unspecified")
            .expect_err("not a state")
            .to_string();
        assert!(e.starts_with("--state: unknown job state"), "{e}");
    }

    #[test]
    fn codes_have_their_canonical_names() {
        assert_eq!(code_name(tonic::Code::NotFound), "NOT_FOUND");
        assert_eq!(
            code_name(tonic::Code::FailedPrecondition),
            "FAILED_PRECONDITION"
        );
        let e = status_error("cancel", tonic::Status::not_found("no job x"));
        assert_eq!(e.to_string(), "cancel: no job x (NOT_FOUND)");
    }
}
