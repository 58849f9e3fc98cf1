//! Commands that talk to a coordinator over gRPC (`--coordinator URL` / `NAT_COORDINATOR`, and
//! the connection flags of [`nat_client::ConnectArgs`]: TLS and the bearer token).

use std::process::ExitCode;

use anyhow::{anyhow, Context};
use clap::Subcommand;
use nat_client::{Auth, AuthChannel, Channel, ConnectArgs};
use nat_proto::v1;
use nat_proto::v1::job_service_client::JobServiceClient;
use nat_proto::v1::policy_service_client::PolicyServiceClient;
use nat_proto::v1::token_service_client::TokenServiceClient;

use crate::jobfile;
use crate::output::Output;
use crate::result::{result_text, ResultView};
use crate::submit::SubmitArgs;
use crate::view::{jobs_table, workers_table, JobView, WorkerView};

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Submit a job; prints it, its id as the last line (--follow: then watch it).
    ///
    /// `-o json` prints the created job. With --follow natctl then watches the job as `natctl
    /// watch` does and exits 0 when it succeeds, 1 otherwise.
    Submit(Box<SubmitArgs>),
    /// List jobs (newest first).
    Jobs {
        /// Most jobs shown.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Only jobs in this state (queued, running, succeeded, failed, cancelled); repeatable.
        #[arg(long = "state")]
        states: Vec<String>,
    },
    /// Show one job: its state, dataset and shape, budget, task counts, why it waits or failed.
    Status {
        /// Job id.
        job: String,
    },
    /// Follow a job's events until it ends; exit 0 when it succeeds, else 1.
    ///
    /// Progress bars on a terminal (tasks, policy updates, best reward and accuracy), one line
    /// per event otherwise; with `-o json` one JSON object per event per line (JSON Lines), with
    /// `-o yaml` one YAML document per event. Exit 0 when the job succeeds; otherwise 1 and an
    /// error naming the final state.
    Watch {
        /// Job id.
        job: String,
        /// One line per event even on a terminal.
        #[arg(long)]
        plain: bool,
    },
    /// Cancel a job: queued tasks are withdrawn, running ones told to stop; prints the job.
    Cancel {
        /// Job id.
        job: String,
        /// Why (kept in the log).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// List registered workers: devices, slots, and the datasets each has (with their shapes).
    Workers,
    /// Show a job's result: per architecture, or an optimize job's verdict and evaluation.
    ///
    /// A table (for an optimize job the verdict, the recommendation, the
    /// final evaluation per seed and whether the policy learned), or with `-o json` the
    /// document described in docs/CLI.md (`state`, per architecture `genotype` (DARTS),
    /// `params`, `madds`, `accuracy`, …; for an optimize job also `original`, `best`,
    /// `verdict`, `recommended`, `final`, `control`, `learning`, per input under `optimize`).
    Result {
        /// Job id.
        job: String,
        /// Same as `-o json`.
        #[arg(long, hide = true)]
        json: bool,
    },
}

/// Where and how to reach the coordinator: `--coordinator` (one URL or several, comma-separated)
/// and the connection flags.
#[derive(Debug, Clone, Copy)]
pub struct Remote<'a> {
    pub urls: &'a str,
    pub connect: &'a ConnectArgs,
}

/// An open connection to a coordinator, and the token every call on it carries.
pub(crate) struct Connection {
    channel: Channel,
    auth: Auth,
}

impl Connection {
    /// Connects to the first coordinator of `remote` that accepts a connection, tried in order.
    /// The connection flags are checked first (errors name the flag); their warnings (a token
    /// file other users may read) go to stderr.
    pub(crate) async fn open(remote: Remote<'_>) -> anyhow::Result<Connection> {
        let options = remote.connect.resolve()?;
        for warning in options.warnings() {
            eprintln!("warning: {warning}");
        }
        let channel = nat_client::connect(remote.urls, &options).await?;
        Ok(Connection {
            channel,
            auth: options.auth(),
        })
    }

    pub(crate) fn jobs(&self) -> JobServiceClient<AuthChannel> {
        nat_client::job_client(self.channel.clone(), &self.auth)
    }

    pub(crate) fn policies(&self) -> PolicyServiceClient<AuthChannel> {
        nat_client::policy_client(self.channel.clone(), &self.auth)
    }

    pub(crate) fn tokens(&self) -> TokenServiceClient<AuthChannel> {
        nat_client::token_client(self.channel.clone(), &self.auth)
    }
}

/// A current-thread runtime for one command.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub fn run(cmd: ClientCommand, remote: Remote<'_>, output: Output) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(run_async(cmd, remote, output))
}

/// A gRPC status as one readable line, with the code's canonical name (`NOT_FOUND`) and, for
/// UNAUTHENTICATED and PERMISSION_DENIED, what to do about it.
pub(crate) fn status_error(what: &str, s: tonic::Status) -> anyhow::Error {
    let hint = nat_client::auth_hint(s.code())
        .map(|hint| format!("; hint: {hint}"))
        .unwrap_or_default();
    anyhow!("{what}: {} ({}){hint}", s.message(), code_name(s.code()))
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

async fn run_async(
    cmd: ClientCommand,
    remote: Remote<'_>,
    output: Output,
) -> anyhow::Result<ExitCode> {
    // Build the request before connecting so that bad input fails without a coordinator.
    if let ClientCommand::Submit(args) = &cmd {
        return crate::submit::submit(args, remote, output).await;
    }
    let mut jobs = Connection::open(remote).await?.jobs();
    match cmd {
        ClientCommand::Submit(_) => Err(anyhow!("internal: submit handled above")),
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
                .jobs
                .iter()
                .map(JobView::of)
                .collect::<anyhow::Result<Vec<_>>>()?;
            output.print(&list, |l| jobs_table(l))?;
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Status { job } => {
            let j = JobView::of(&get_job(&mut jobs, &job).await?)?;
            output.print(&j, JobView::detail_table)?;
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Watch { job, plain } => {
            crate::watch::watch(&mut jobs, &job, plain, output).await
        }
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
            let j = JobView::of(&j)?;
            output.print(&j, |j| format!("{} {}", j.job_id, j.state))?;
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Workers => {
            let list: Vec<WorkerView> = jobs
                .list_workers(v1::ListWorkersRequest {})
                .await
                .map_err(|s| status_error("workers", s))?
                .into_inner()
                .workers
                .iter()
                .map(WorkerView::of)
                .collect();
            output.print(&list, |l| workers_table(l))?;
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Result { job, json } => {
            let r = jobs
                .get_job_result(v1::GetJobResultRequest { job_id: job })
                .await
                .map_err(|s| status_error("result", s))?
                .into_inner();
            let view = ResultView::of(&r)?;
            output.or_json(json).print(&view, |_| result_text(&r))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(crate) async fn get_job(
    jobs: &mut JobServiceClient<AuthChannel>,
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

pub(crate) fn task_state_name(state: i32) -> &'static str {
    match v1::TaskState::try_from(state) {
        Ok(v1::TaskState::Queued) => "queued",
        Ok(v1::TaskState::Leased) => "running",
        Ok(v1::TaskState::Succeeded) => "succeeded",
        Ok(v1::TaskState::Failed) => "failed",
        Ok(v1::TaskState::Cancelled) => "cancelled",
        _ => "unknown",
    }
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
        let e = status_error("jobs", tonic::Status::unauthenticated("no token")).to_string();
        assert!(
            e.starts_with("jobs: no token (UNAUTHENTICATED); hint: ") && e.contains("--token"),
            "{e}"
        );
        let e = status_error("cancel", tonic::Status::permission_denied("viewer")).to_string();
        assert!(
            e.contains("(PERMISSION_DENIED); hint: your token's role"),
            "{e}"
        );
    }
}
