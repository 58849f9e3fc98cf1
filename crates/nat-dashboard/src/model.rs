//! The views the JSON endpoints return, built from the store.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use nat_arch::{network_cost, CellKind, Genotype, NetworkSpec};
use nat_schema::event::JobEvent;
use nat_schema::result::{ArchMeasurement, Learning, OptimizeOutcome, OptimizeResult};
use nat_schema::{DecodeError, JobSpec, TaskKind};
use nat_store::{Event, Job, JobFilter, JobId, JobState, Store, TaskState, Worker, WorkerId};
use serde::Serialize;

use crate::cache::{self, EventCache};
use crate::diagram::{self, Change, Role};
use crate::schema::{self, TaskResult};
use crate::DashboardError;

/// Most events read for one job page by one request (the next request continues).
pub const MAX_EVENTS: usize = 50_000;
/// Events read per job for a row of the jobs list when the result has no summary.
const LIST_EVENTS: u32 = 2_000;
/// Events shown in a job page's log.
const RECENT_EVENTS: usize = 25;
/// Most points of the reward chart: a job with more policy updates has consecutive updates
/// merged in buckets of equal size (a power of two), so the digest, its copy per request and
/// the page's first answer stay bounded at any number of rewards.
pub const CHART_POINTS: usize = 1000;
/// Most individual rewards kept per chart point (beyond: evenly spaced order statistics,
/// the lowest and the highest included).
pub const DOTS_PER_POINT: usize = 16;

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// Task counters of a job.
#[derive(Debug, Clone, Serialize)]
pub struct TaskCounts {
    /// Created so far.
    pub total: u64,
    /// Succeeded.
    pub done: u64,
    /// Failed for good.
    pub failed: u64,
    /// Cancelled.
    pub cancelled: u64,
}

/// One row of the jobs list.
#[derive(Debug, Clone, Serialize)]
pub struct JobRow {
    /// Id.
    pub id: String,
    /// `evaluate` or `optimize`.
    pub kind: String,
    /// Label from the spec.
    pub name: String,
    /// Dataset from the spec.
    pub dataset: String,
    /// Its shape, e.g. `3x32x32, 10 classes` (absent when the spec does not decode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset_shape: Option<String>,
    /// State.
    pub state: JobState,
    /// Task counters.
    pub tasks: TaskCounts,
    /// Progress in [0, 1]: policy iterations when known, else finished tasks.
    pub progress: f64,
    /// Best reward so far.
    pub best_reward: Option<f64>,
    /// Best accuracy so far.
    pub best_accuracy: Option<f64>,
    /// Latest policy version.
    pub policy_version: Option<i64>,
    /// Creation time (unix ms).
    pub created_at_ms: i64,
    /// Finish time (unix ms).
    pub finished_at_ms: Option<i64>,
    /// Seconds from creation to finish (or to now).
    pub elapsed_seconds: f64,
    /// Error of a failed job.
    pub error: Option<String>,
    /// The job's spec or result does not decode: the error, naming the field (absent when
    /// both decode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document_error: Option<String>,
}

/// One point of the reward chart (one policy update).
#[derive(Debug, Clone, Serialize)]
pub struct RewardPoint {
    /// Sequence number of the `policy_update` event.
    pub seq: i64,
    /// Event time (unix ms).
    pub t_ms: i64,
    /// Policy version after the update.
    pub policy_version: i64,
    /// Mean reward of the update.
    pub reward: Option<f64>,
    /// Baseline after the update.
    pub baseline: Option<f64>,
    /// Individual rewards (at most [`DOTS_PER_POINT`]: evenly spaced order statistics of
    /// the point's rewards when it has more).
    pub rewards: Vec<f64>,
    /// Policy updates merged into this point (1 until the job has more than
    /// [`CHART_POINTS`] updates): `reward` is their mean, the rest is the last one's.
    pub updates: u64,
    /// Updates of the point that had a mean reward.
    #[serde(skip)]
    reward_updates: u64,
}

impl RewardPoint {
    /// `self` followed by `next`, as one point.
    fn merge(mut self, next: RewardPoint) -> RewardPoint {
        let n = self.reward_updates + next.reward_updates;
        self.reward = match (self.reward, next.reward) {
            (Some(a), Some(b)) => {
                Some((a * self.reward_updates as f64 + b * next.reward_updates as f64) / n as f64)
            }
            (a, b) => a.or(b),
        };
        self.reward_updates = n;
        self.rewards.extend(next.rewards);
        self.rewards = spread(self.rewards, DOTS_PER_POINT);
        self.seq = next.seq;
        self.t_ms = next.t_ms;
        self.policy_version = next.policy_version;
        self.baseline = next.baseline;
        self.updates += next.updates;
        self
    }
}

/// At most `max` of `values`: all of them when they fit, else evenly spaced order statistics
/// (the lowest and the highest included).
fn spread(mut values: Vec<f64>, max: usize) -> Vec<f64> {
    if values.len() <= max {
        return values;
    }
    values.sort_by(f64::total_cmp);
    let last = values.len() - 1;
    (0..max)
        .map(|i| values[i * last / (max - 1).max(1)])
        .collect()
}

/// One point of the best-so-far accuracy curve.
#[derive(Debug, Clone, Serialize)]
pub struct AccuracyPoint {
    /// Sequence number of the event that measured it.
    pub seq: i64,
    /// Event time (unix ms).
    pub t_ms: i64,
    /// Best accuracy up to this time.
    pub accuracy: f64,
}

/// A short line of the job's event log.
#[derive(Debug, Clone, Serialize)]
pub struct EventLine {
    /// Sequence number.
    pub seq: i64,
    /// Time (unix ms).
    pub t_ms: i64,
    /// Kind.
    pub kind: String,
    /// One-line summary.
    pub summary: String,
}

/// Input and best picture of one cell kind.
#[derive(Debug, Clone, Serialize)]
pub struct CellPictures {
    /// `normal` or `reduce`.
    pub kind: &'static str,
    /// SVG of the input cell.
    pub input_svg: String,
    /// SVG of the best cell (the input again when there is no best yet).
    pub best_svg: String,
    /// Changed edges.
    pub changes: Vec<Change>,
}

/// One row of the before/after table.
#[derive(Debug, Clone, Serialize)]
pub struct CompareRow {
    /// What is compared.
    pub metric: &'static str,
    /// Input value.
    pub before: Option<f64>,
    /// Best value.
    pub after: Option<f64>,
    /// How to print it (`percent`, `count`, `number`).
    pub format: &'static str,
}

/// NAT's answer for the input shown: the outcome's verdict, recommendation, final evaluation
/// and control as stored, and their server-rendered HTML.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    /// The input's outcome (`verdict`, `recommended`, `final`, `control`, `original`, `best`, …).
    #[serde(flatten)]
    pub outcome: OptimizeOutcome,
    /// The verdict, the recommendation, the final evaluation table and the control as HTML
    /// (escaped; empty for results written before verdicts).
    pub html: String,
}

/// Whether the policy learned.
#[derive(Debug, Clone, Serialize)]
pub struct LearningView {
    /// As stored: `rewards`, `policy_versions`, `curve`, `inputs`, `supernet`.
    #[serde(flatten)]
    pub learning: Learning,
    /// Reward (moving average) and entropy against the policy version, as an SVG.
    pub curve_svg: String,
    /// The numbers for the input shown, as HTML (escaped).
    pub html: String,
}

/// Everything the job page shows.
#[derive(Debug, Clone, Serialize)]
pub struct JobDetail {
    /// The row of the jobs list.
    pub job: JobRow,
    /// Tasks leased right now.
    pub tasks_running: u64,
    /// Why the job's waiting tasks are not leased (no worker connected, or none has the
    /// dataset), as `GetJob` says it; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_reason: Option<String>,
    /// The request's `after`: `rewards`, `accuracy` and `events` hold only what events with a
    /// larger sequence number say (0 = everything).
    pub after: i64,
    /// Sequence number of the last event read: the `after` of the next request.
    pub last_seq: i64,
    /// Reward and baseline per policy update (after `after`).
    pub rewards: Vec<RewardPoint>,
    /// Best accuracy so far, over time (improvements after `after`).
    pub accuracy: Vec<AccuracyPoint>,
    /// Index of the input shown.
    pub input_index: u32,
    /// Number of inputs.
    pub inputs: usize,
    /// Whether a best transformation is known yet.
    pub has_best: bool,
    /// Cell pictures (normal, reduce); empty when the input genotype is unknown.
    pub cells: Vec<CellPictures>,
    /// Before/after table.
    pub table: Vec<CompareRow>,
    /// Latest events (after `after`), newest first.
    pub events: Vec<EventLine>,
    /// Events were left unread (more than [`MAX_EVENTS`] new ones); the next request continues.
    pub events_truncated: bool,
    /// Policy updates per point of `rewards` (1 until the job has more than [`CHART_POINTS`]).
    pub reward_bucket: u64,
    /// NAT's answer for the input shown, once the final evaluation is done (optimize jobs).
    pub answer: Option<Answer>,
    /// Whether the policy learned, once the job is done (optimize jobs).
    pub learning: Option<LearningView>,
}

/// A worker row.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerRow {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Stored liveness.
    pub state: String,
    /// Active and heartbeat recent.
    pub healthy: bool,
    /// Seconds since the last heartbeat.
    pub heartbeat_age_seconds: f64,
    /// Device names.
    pub devices: Vec<String>,
    /// GPU model.
    pub gpu_model: Option<String>,
    /// GPUs.
    pub gpus: u32,
    /// Slots.
    pub slots: u32,
    /// Tasks held now.
    pub current_tasks: Vec<CurrentTask>,
    /// Throughput of the latest finished task with a measurement.
    pub images_per_second: Option<f64>,
    /// Tasks finished among the recent jobs scanned (their latest
    /// [`WORKER_TASKS_SCANNED`] done tasks each).
    pub tasks_finished: u64,
}

/// A task a worker holds.
#[derive(Debug, Clone, Serialize)]
pub struct CurrentTask {
    /// Task id.
    pub task_id: String,
    /// Job id.
    pub job_id: String,
    /// Kind.
    pub kind: String,
    /// Attempt.
    pub attempt: u32,
    /// Progress fraction reported.
    pub fraction: Option<f64>,
    /// The progress document does not decode: the error, naming the field (absent when it
    /// decodes or there is none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress_error: Option<String>,
}

/// What the events of a job say. Bounded whatever the length of the log: at most
/// [`CHART_POINTS`] reward points of at most [`DOTS_PER_POINT`] rewards, the improvements of
/// the best accuracy, the latest events, and the `train_eval` successes not looked up yet.
#[derive(Debug, Default, Clone)]
pub(crate) struct Digest {
    rewards: Vec<RewardPoint>,
    /// Policy updates per full point of `rewards` (0 before the first).
    reward_bucket: u64,
    /// `train_eval` successes folded in and not looked up yet: (task, accuracy).
    trained_pending: Vec<(nat_store::TaskId, f64)>,
    accuracy: Vec<AccuracyPoint>,
    best_accuracy: Option<f64>,
    best_reward: Option<f64>,
    policy_version: Option<i64>,
    /// Latest `new_best` genotype per input index.
    best: HashMap<u32, (Genotype, Option<f64>)>,
    /// The latest events (a bounded tail, oldest first), summarised on output.
    last: Vec<Logged>,
}

/// An event of the log tail, decoded (or why it is not).
#[derive(Debug, Clone)]
struct Logged {
    seq: i64,
    t_ms: i64,
    kind: String,
    event: Result<Decoded, DecodeError>,
}

/// A decoded event, with the result of a `task_succeeded` one.
#[derive(Debug, Clone)]
struct Decoded {
    event: JobEvent,
    task_result: Option<TaskResult>,
}

/// Decodes a stored event: its payload by kind, the task result of a `task_succeeded` event,
/// the genotype of a `new_best` one.
fn decode_event(e: &Event) -> Result<(Decoded, Option<Genotype>), DecodeError> {
    let event = JobEvent::decode(&e.kind, &e.payload)?;
    let (task_result, genotype) = match &event {
        JobEvent::TaskSucceeded(s) => (Some(schema::task_result(&s.result)?), None),
        JobEvent::NewBest(b) => (
            None,
            Some(schema::genotype_field(
                &b.genotype,
                "new_best event",
                "genotype",
            )?),
        ),
        _ => (None, None),
    };
    Ok((Decoded { event, task_result }, genotype))
}

impl Digest {
    pub(crate) fn add(&mut self, e: &Event) {
        let t_ms = ms(e.created_at);
        let decoded = match decode_event(e) {
            Ok((d, genotype)) => {
                self.fold(e.seq, t_ms, &d, genotype);
                Ok(d)
            }
            Err(err) => {
                tracing::warn!(job_id = %e.job_id, seq = e.seq, kind = %e.kind, error = %err,
                    "undecodable event");
                Err(err)
            }
        };
        self.last.push(Logged {
            seq: e.seq,
            t_ms,
            kind: e.kind.clone(),
            event: decoded,
        });
        if self.last.len() > 4 * RECENT_EVENTS {
            self.last.drain(..self.last.len() - RECENT_EVENTS);
        }
    }

    fn fold(&mut self, seq: i64, t_ms: i64, d: &Decoded, genotype: Option<Genotype>) {
        match &d.event {
            JobEvent::PolicyUpdate(u) => {
                self.policy_version = Some(u.policy_version);
                let reward = u.mean_reward.or_else(|| mean(&u.rewards));
                for r in u.rewards.iter().copied().chain(reward) {
                    self.best_reward = Some(self.best_reward.map_or(r, |b| b.max(r)));
                }
                self.reward_point(RewardPoint {
                    seq,
                    t_ms,
                    policy_version: u.policy_version,
                    reward,
                    baseline: u.baseline,
                    rewards: u.rewards.clone(),
                    updates: 1,
                    reward_updates: u64::from(reward.is_some()),
                });
            }
            JobEvent::NewBest(b) => {
                if let Some(r) = b.reward {
                    self.best_reward = Some(self.best_reward.map_or(r, |x| x.max(r)));
                }
                self.accuracy_seen(seq, t_ms, b.accuracy);
                if let Some(g) = genotype {
                    self.best.insert(b.input_index, (g, Some(b.accuracy)));
                }
            }
            JobEvent::TaskSucceeded(s) => {
                if let Some(a) = d.task_result.as_ref().and_then(TaskResult::accuracy) {
                    self.accuracy_seen(seq, t_ms, a);
                    if let Ok(id) = s.task_id.parse() {
                        self.trained_pending.push((id, a));
                    }
                }
            }
            _ => {}
        }
    }

    /// Adds one update's point: into the last point while it holds fewer than
    /// `reward_bucket` updates; past [`CHART_POINTS`] points, neighbours are merged in pairs
    /// and the bucket doubles.
    fn reward_point(&mut self, mut point: RewardPoint) {
        point.rewards = spread(point.rewards, DOTS_PER_POINT);
        self.reward_bucket = self.reward_bucket.max(1);
        match self.rewards.last_mut() {
            Some(last) if last.updates < self.reward_bucket => {
                let merged = last.clone().merge(point);
                *last = merged;
            }
            _ => self.rewards.push(point),
        }
        if self.rewards.len() > CHART_POINTS {
            let points = std::mem::take(&mut self.rewards);
            let mut merged = Vec::with_capacity(points.len() / 2 + 1);
            let mut it = points.into_iter();
            while let Some(a) = it.next() {
                merged.push(match it.next() {
                    Some(b) => a.merge(b),
                    None => a,
                });
            }
            self.rewards = merged;
            self.reward_bucket *= 2;
        }
    }

    /// The `train_eval` successes not looked up yet (drained).
    pub(crate) fn take_trained_pending(&mut self) -> Vec<(nat_store::TaskId, f64)> {
        std::mem::take(&mut self.trained_pending)
    }

    /// Puts back successes a failed look-up did not get to (before any folded in since).
    pub(crate) fn restore_trained_pending(&mut self, mut rest: Vec<(nat_store::TaskId, f64)>) {
        rest.append(&mut self.trained_pending);
        self.trained_pending = rest;
    }

    fn accuracy_seen(&mut self, seq: i64, t_ms: i64, a: f64) {
        if !a.is_finite() || self.best_accuracy.is_some_and(|b| b >= a) {
            return;
        }
        self.best_accuracy = Some(a);
        self.accuracy.push(AccuracyPoint {
            seq,
            t_ms,
            accuracy: a,
        });
    }
}

/// Longest event summary shown, in characters.
const SUMMARY_CHARS: usize = 160;

fn truncate(text: String, max: usize) -> String {
    if text.chars().count() <= max {
        return text;
    }
    let mut cut: String = text.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

fn short_id(id: &str) -> String {
    id.chars().take(8).collect()
}

fn summarize(e: &Logged) -> String {
    let d = match &e.event {
        Ok(d) => d,
        Err(err) => return format!("undecodable: {err}"),
    };
    match &d.event {
        JobEvent::JobCreated(c) => format!("job created with {} tasks", c.tasks),
        JobEvent::TasksAdded(a) => {
            format!("{} tasks added ({} in total)", a.added, a.tasks_total)
        }
        JobEvent::TaskSucceeded(s) => {
            let acc = d
                .task_result
                .as_ref()
                .and_then(TaskResult::accuracy)
                .map(|a| format!(", accuracy {:.2}%", a * 100.0))
                .unwrap_or_default();
            format!("task {} succeeded{acc}", short_id(&s.task_id))
        }
        JobEvent::TaskRetry(r) => format!(
            "task {} attempt {} failed, retrying: {}",
            short_id(&r.task_id),
            r.attempt,
            r.reason.as_deref().unwrap_or("")
        ),
        JobEvent::TaskFailed(f) => format!("task {} failed", short_id(&f.task_id)),
        JobEvent::TaskProgress(p) => format!(
            "task {} at {:.0}%",
            short_id(&p.task_id),
            p.progress.fraction * 100.0
        ),
        JobEvent::JobFinished(f) => format!(
            "job {}{}",
            f.state,
            f.error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ),
        JobEvent::PolicyUpdate(u) => format!(
            "policy v{} · mean reward {} · baseline {}",
            u.policy_version,
            u.mean_reward.map_or("–".into(), |r| format!("{r:+.4}")),
            u.baseline.map_or("–".into(), |r| format!("{r:+.4}")),
        ),
        JobEvent::NewBest(b) => format!(
            "new best · accuracy {:.2}%{}",
            b.accuracy * 100.0,
            b.reward
                .map(|r| format!(" · reward {r:+.4}"))
                .unwrap_or_default(),
        ),
        JobEvent::Phase(_) | JobEvent::Rewards(_) | JobEvent::Other(_) => e.kind.replace('_', " "),
    }
}

/// The spec and result of `job`, decoded.
struct JobDocs {
    spec: JobSpec,
    result: Option<OptimizeResult>,
}

fn job_docs(job: &Job) -> Result<JobDocs, DecodeError> {
    Ok(JobDocs {
        spec: schema::job_spec(&job.kind, &job.spec)?,
        result: schema::optimize_result(&job.kind, job.result.as_ref())?,
    })
}

/// [`job_docs`], or the job page's error naming the job and the field.
fn job_docs_or_error(job: &Job) -> Result<JobDocs, DashboardError> {
    job_docs(job).map_err(|error| DashboardError::Document {
        what: format!("job {}", job.id),
        error,
    })
}

fn row(
    job: &Job,
    docs: Result<&JobDocs, &DecodeError>,
    digest: Option<&Digest>,
    now: DateTime<Utc>,
) -> JobRow {
    let (spec, summary) = match docs {
        Ok(d) => (Some(&d.spec), d.result.as_ref().map(|r| &r.summary)),
        Err(_) => (None, None),
    };
    let finished = job.tasks_done + job.tasks_failed + job.tasks_cancelled;
    let progress = match summary {
        Some(s) if s.iterations_total > 0 => {
            f64::from(s.iterations_done) / f64::from(s.iterations_total)
        }
        _ if job.state.is_final() && job.state == JobState::Succeeded => 1.0,
        _ if job.tasks_total > 0 => finished as f64 / job.tasks_total as f64,
        _ => 0.0,
    }
    .clamp(0.0, 1.0);
    let end = job.finished_at.unwrap_or(now);
    JobRow {
        id: job.id.to_string(),
        kind: job.kind.clone(),
        name: spec.map(|s| s.name.clone()).unwrap_or_default(),
        dataset: spec.map(|s| s.dataset.clone()).unwrap_or_default(),
        dataset_shape: spec.map(|s| s.dataset_shape.to_string()),
        state: job.state,
        tasks: TaskCounts {
            total: job.tasks_total,
            done: job.tasks_done,
            failed: job.tasks_failed,
            cancelled: job.tasks_cancelled,
        },
        progress,
        best_reward: summary
            .and_then(|s| s.best_reward)
            .or(digest.and_then(|d| d.best_reward)),
        best_accuracy: summary
            .and_then(|s| s.best_accuracy)
            .or(digest.and_then(|d| d.best_accuracy)),
        policy_version: summary
            .map(|s| s.policy_version)
            .or(digest.and_then(|d| d.policy_version)),
        created_at_ms: ms(job.created_at),
        finished_at_ms: job.finished_at.map(ms),
        elapsed_seconds: (end - job.created_at).num_milliseconds().max(0) as f64 / 1000.0,
        error: job.error.clone(),
        document_error: docs.err().map(|e| format!("undecodable: {e}")),
    }
}

/// The jobs list, newest first, reading every event log afresh.
pub async fn jobs(store: &dyn Store, limit: u32) -> Result<Vec<JobRow>, DashboardError> {
    jobs_with(store, None, limit).await
}

/// The jobs list, newest first; event logs are read from where `cache` left them.
pub async fn jobs_with(
    store: &dyn Store,
    cache: Option<&EventCache>,
    limit: u32,
) -> Result<Vec<JobRow>, DashboardError> {
    let now = Utc::now();
    let jobs = store
        .list_jobs(JobFilter {
            limit,
            ..JobFilter::default()
        })
        .await?;
    let mut rows = Vec::with_capacity(jobs.len());
    for job in &jobs {
        let docs = job_docs(job);
        if let Err(e) = &docs {
            tracing::warn!(job_id = %job.id, error = %e, "undecodable job document");
        }
        let has_summary = docs.as_ref().is_ok_and(|d| d.result.is_some());
        let digest = if has_summary {
            None
        } else {
            Some(
                cache::digest(store, cache, job.id, LIST_EVENTS as usize, false)
                    .await?
                    .0
                    .digest,
            )
        };
        rows.push(row(job, docs.as_ref(), digest.as_ref(), now));
    }
    Ok(rows)
}

fn measured(
    result: Option<&OptimizeResult>,
    index: u32,
) -> (Option<&ArchMeasurement>, Option<&ArchMeasurement>) {
    result
        .and_then(|r| r.optimize.iter().find(|o| o.input_index == index))
        .map_or((None, None), |o| (Some(&o.original), Some(&o.best)))
}

/// The input genotype `input_index` of a job (from its spec, else the measured original) and
/// its best transformation (measured, else the latest `new_best` event). A genotype in the
/// spec or result that does not parse is an error naming the field.
fn genotypes(
    docs: &JobDocs,
    digest: &Digest,
    input_index: u32,
) -> Result<(Option<Genotype>, Option<Genotype>), DecodeError> {
    let (orig_doc, best_doc) = measured(docs.result.as_ref(), input_index);
    let arch = |d: &ArchMeasurement, which: &str| {
        schema::genotype_field(
            &d.genotype,
            "optimize result",
            format!("optimize[input_index={input_index}].{which}.genotype"),
        )
    };
    let input = match docs.spec.architectures.get(input_index as usize) {
        Some(text) => Some(nat_arch::parse_any(text).map_err(|e| DecodeError {
            document: "job spec",
            field: format!("architectures[{input_index}]"),
            reason: e.to_string(),
        })?),
        None => orig_doc.map(|d| arch(d, "original")).transpose()?,
    };
    let best = match best_doc {
        Some(d) => Some(arch(d, "best")?),
        None => digest.best.get(&input_index).map(|b| b.0.clone()),
    };
    Ok((input, best))
}

/// A params/MAdds row: the job's measured values (its own network) when both are known, else
/// both computed by the cost model in the DARTS CIFAR-10 setting, labelled as such.
fn cost_row(
    what: &'static str,
    measured_before: Option<u64>,
    measured_after: Option<u64>,
    model_before: Option<f64>,
    model_after: Option<f64>,
) -> CompareRow {
    match (
        measured_before.filter(|v| *v > 0),
        measured_after.filter(|v| *v > 0),
    ) {
        (Some(b), Some(a)) => CompareRow {
            metric: what,
            before: Some(b as f64),
            after: Some(a as f64),
            format: "count",
        },
        _ => CompareRow {
            metric: if what == "params" {
                "params (C=36, L=20, CIFAR-10)"
            } else {
                "multiply-adds (C=36, L=20, CIFAR-10)"
            },
            before: model_before,
            after: model_after,
            format: "count",
        },
    }
}

fn cost(g: &Genotype) -> Option<(f64, f64)> {
    let c = network_cost(g, &NetworkSpec::cifar10()).ok()?;
    Some((c.params() as f64, c.madds() as f64))
}

/// The canonical hash of the architecture a succeeded task trained, when it is a
/// validation-split `train_eval` task (selection's measurements only: a final evaluation's
/// test-split accuracy is reported with the verdict, not mixed into the accuracies of sampled
/// architectures). A task that is gone counts for nothing; a payload that does not decode is
/// an error naming the task and the field.
pub(crate) async fn trained_hash(
    store: &dyn Store,
    id: nat_store::TaskId,
) -> Result<Option<String>, DashboardError> {
    let task = match store.get_task(id).await {
        Ok(t) => t,
        Err(nat_store::StoreError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let document = |error| DashboardError::Document {
        what: format!("task {}", task.id),
        error,
    };
    let kind = task.kind.parse::<TaskKind>().map_err(|e| {
        document(DecodeError {
            document: "task",
            field: "kind".into(),
            reason: e.to_string(),
        })
    })?;
    if kind != TaskKind::TrainEval {
        return Ok(None);
    }
    let payload = schema::train_eval_payload(&task.payload).map_err(document)?;
    Ok((payload.split == nat_schema::EvalSplit::Validation).then_some(payload.arch_hash))
}

/// The input genotype `input_index` of job `id` and its best transformation so far (from the
/// job result, else the latest `new_best` event).
pub async fn job_genotypes(
    store: &dyn Store,
    cache: Option<&EventCache>,
    id: JobId,
    input_index: u32,
) -> Result<(Option<Genotype>, Option<Genotype>), DashboardError> {
    let job = store.get_job(id).await?;
    let docs = job_docs_or_error(&job)?;
    let digest = cache::digest(store, cache, job.id, MAX_EVENTS, false)
        .await?
        .0
        .digest;
    genotypes(&docs, &digest, input_index).map_err(|error| DashboardError::Document {
        what: format!("job {}", job.id),
        error,
    })
}

/// A standalone picture of a job's transformation drawn by `nat_arch::render`: the best
/// genotype with the edges changed from the input highlighted (both cells), or the input alone
/// while there is no best. `dot` selects Graphviz DOT instead of SVG. `None` when the input is
/// unknown.
pub async fn job_diagram(
    store: &dyn Store,
    cache: Option<&EventCache>,
    id: JobId,
    input_index: u32,
    dot: bool,
) -> Result<Option<String>, DashboardError> {
    let (input, best) = job_genotypes(store, cache, id, input_index).await?;
    let Some(input) = input else {
        return Ok(None);
    };
    let title = format!("job {id} input {input_index}");
    let changes = best
        .as_ref()
        .and_then(|b| nat_arch::edge_changes(&input, b).ok().map(|c| (b, c)));
    Ok(Some(match (changes, dot) {
        (Some((b, c)), false) => nat_arch::render::diff_svg(b, &c, &title),
        (Some((b, c)), true) => nat_arch::render::diff_dot(b, &c, &title),
        (None, false) => nat_arch::render::genotype_svg(best.as_ref().unwrap_or(&input), &title),
        (None, true) => nat_arch::render::genotype_dot(best.as_ref().unwrap_or(&input), &title),
    }))
}

/// The job page of `id`, for input `input_index`, reading the whole event log afresh.
pub async fn job_detail(
    store: &dyn Store,
    id: JobId,
    input_index: u32,
) -> Result<JobDetail, DashboardError> {
    job_detail_with(store, None, id, input_index, 0).await
}

/// The job page of `id`, for input `input_index`. The event log is read from where `cache`
/// left it; the chart points and events returned are those after sequence number `after`
/// (the page passes the `last_seq` of its previous request and appends).
pub async fn job_detail_with(
    store: &dyn Store,
    cache: Option<&EventCache>,
    id: JobId,
    input_index: u32,
    after: i64,
) -> Result<JobDetail, DashboardError> {
    let job = store.get_job(id).await?;
    let (cursor, truncated) = cache::digest(store, cache, job.id, MAX_EVENTS, true).await?;
    let last_seq = cursor.seq;
    let trained = cursor.trained;
    let digest = cursor.digest;
    let running = store
        .list_tasks(job.id, Some(TaskState::Leased), 10_000, 0)
        .await?
        .len() as u64;
    let docs = job_docs_or_error(&job)?;
    let (input, best) =
        genotypes(&docs, &digest, input_index).map_err(|error| DashboardError::Document {
            what: format!("job {}", job.id),
            error,
        })?;
    let (orig_doc, best_doc) = measured(docs.result.as_ref(), input_index);
    let best_event = digest.best.get(&input_index);

    let mut cells = Vec::new();
    if let Some(input) = &input {
        for kind in CellKind::ALL {
            let a = input.cell(kind);
            let b = best.as_ref().map(|g| g.cell(kind));
            cells.push(CellPictures {
                kind: kind.name(),
                input_svg: diagram::cell_svg(
                    a,
                    b,
                    Role::Input,
                    kind.name(),
                    &format!("diagram-input-{}", kind.name()),
                ),
                best_svg: diagram::cell_svg(
                    b.unwrap_or(a),
                    Some(a),
                    Role::Best,
                    kind.name(),
                    &format!("diagram-best-{}", kind.name()),
                ),
                changes: b.map(|b| diagram::changes(a, b)).unwrap_or_default(),
            });
        }
    }

    let trained_of = |g: &Option<Genotype>| {
        g.as_ref()
            .and_then(|g| trained.get(&g.canonical_hash()).copied())
    };
    let input_cost = input.as_ref().and_then(cost);
    let best_cost = best.as_ref().and_then(cost);
    let table = vec![
        CompareRow {
            metric: "accuracy",
            before: orig_doc.map(|d| d.accuracy).or_else(|| trained_of(&input)),
            after: best_doc
                .map(|d| d.accuracy)
                .or_else(|| best_event.and_then(|b| b.1))
                .or_else(|| trained_of(&best)),
            format: "percent",
        },
        cost_row(
            "params",
            orig_doc.map(|d| d.params),
            best_doc.map(|d| d.params),
            input_cost.map(|c| c.0),
            best_cost.map(|c| c.0),
        ),
        cost_row(
            "multiply-adds",
            orig_doc.map(|d| d.madds),
            best_doc.map(|d| d.madds),
            input_cost.map(|c| c.1),
            best_cost.map(|c| c.1),
        ),
        CompareRow {
            metric: "edges changed",
            before: Some(0.0),
            after: Some(cells.iter().map(|c| c.changes.len() as f64).sum()),
            format: "number",
        },
    ];

    let answer = docs
        .result
        .as_ref()
        .and_then(|r| r.optimize.iter().find(|o| o.input_index == input_index))
        .map(|o| Answer {
            outcome: o.clone(),
            html: crate::answer::answer_html(o),
        });
    let learning = docs
        .result
        .as_ref()
        .and_then(|r| r.learning.as_ref())
        .map(|l| LearningView {
            learning: l.clone(),
            curve_svg: crate::answer::learning_svg(&l.curve),
            html: crate::answer::learning_html(l, input_index),
        });
    let job_row = row(&job, Ok(&docs), Some(&digest), Utc::now());
    let finished = job.tasks_done + job.tasks_failed + job.tasks_cancelled;
    let waiting_reason = if !job.state.is_final() && job.tasks_total > finished + running {
        waiting_reason(&docs.spec.dataset, &store.list_workers().await?)
    } else {
        None
    };
    let events: Vec<EventLine> = digest
        .last
        .iter()
        .rev()
        .take(RECENT_EVENTS)
        .filter(|e| e.seq > after)
        .map(|e| EventLine {
            seq: e.seq,
            t_ms: e.t_ms,
            kind: e.kind.clone(),
            summary: truncate(summarize(e), SUMMARY_CHARS),
        })
        .collect();
    Ok(JobDetail {
        job: job_row,
        tasks_running: running,
        waiting_reason,
        after,
        last_seq,
        rewards: digest
            .rewards
            .into_iter()
            .filter(|p| p.seq > after)
            .collect(),
        accuracy: digest
            .accuracy
            .into_iter()
            .filter(|p| p.seq > after)
            .collect(),
        input_index,
        inputs: docs.spec.architectures.len(),
        has_best: best.is_some(),
        cells,
        table,
        events,
        events_truncated: truncated,
        reward_bucket: digest.reward_bucket.max(1),
        answer,
        learning,
    })
}

/// A worker heard from within this long counts as connected for [`waiting_reason`] (the
/// coordinator's default lease duration).
const CONNECTED_WITHIN: chrono::Duration = chrono::Duration::seconds(60);

/// [`nat_schema::dataset::waiting_reason`] over the workers heard from lately.
fn waiting_reason(dataset: &str, workers: &[Worker]) -> Option<String> {
    let now = Utc::now();
    let live: Vec<&[String]> = workers
        .iter()
        .filter(|w| {
            w.state == nat_store::WorkerState::Active
                && now.signed_duration_since(w.last_heartbeat_at) <= CONNECTED_WITHIN
        })
        .map(|w| w.capabilities.datasets.as_slice())
        .collect();
    nat_schema::dataset::waiting_reason(dataset, &live)
}

/// Done tasks of each recent job read for the workers' throughput and finished counts: the
/// latest ones (creation order).
pub const WORKER_TASKS_SCANNED: u32 = 200;

/// Workers with their current tasks and latest throughput. Tasks are found among the
/// `recent_jobs` most recent jobs (their latest [`WORKER_TASKS_SCANNED`] done tasks each).
pub async fn workers(
    store: &Arc<dyn Store>,
    stale_after: chrono::Duration,
    recent_jobs: u32,
) -> Result<Vec<WorkerRow>, DashboardError> {
    let now = Utc::now();
    let workers: Vec<Worker> = store.list_workers().await?;
    let mut current: HashMap<WorkerId, Vec<CurrentTask>> = HashMap::new();
    let mut throughput: HashMap<WorkerId, (DateTime<Utc>, f64)> = HashMap::new();
    let mut finished: HashMap<WorkerId, u64> = HashMap::new();
    let jobs = store
        .list_jobs(JobFilter {
            limit: recent_jobs,
            ..JobFilter::default()
        })
        .await?;
    for job in &jobs {
        if !job.state.is_final() {
            for t in store
                .list_tasks(job.id, Some(TaskState::Leased), 10_000, 0)
                .await?
            {
                if let Some(w) = t.leased_by {
                    let progress = t.progress.as_ref().map(schema::progress).transpose();
                    if let Err(e) = &progress {
                        tracing::warn!(task_id = %t.id, error = %e, "undecodable task progress");
                    }
                    current.entry(w).or_default().push(CurrentTask {
                        task_id: t.id.to_string(),
                        job_id: job.id.to_string(),
                        kind: t.kind.clone(),
                        attempt: t.attempt,
                        fraction: progress
                            .as_ref()
                            .ok()
                            .and_then(Option::as_ref)
                            .map(|p| p.fraction),
                        progress_error: progress.err().map(|e| format!("undecodable: {e}")),
                    });
                }
            }
        }
        // The latest done tasks only: a request costs the same at any size of the jobs.
        let offset = job
            .tasks_done
            .saturating_sub(u64::from(WORKER_TASKS_SCANNED));
        for t in store
            .list_tasks(job.id, Some(TaskState::Done), WORKER_TASKS_SCANNED, offset)
            .await?
        {
            let (Some(w), Some(at)) = (t.leased_by, t.finished_at) else {
                continue;
            };
            *finished.entry(w).or_default() += 1;
            let result = t
                .result
                .as_ref()
                .map(|r| schema::task_result_of(&t.kind, r))
                .transpose();
            let ips = match result {
                Ok(r) => r.as_ref().and_then(TaskResult::images_per_second),
                Err(e) => {
                    // One task's bad result must not hide every worker: it is logged, naming
                    // the task and the field, and counts for no throughput.
                    tracing::warn!(task_id = %t.id, error = %e, "undecodable task result");
                    None
                }
            }
            .filter(|v| v.is_finite() && *v > 0.0);
            if let Some(ips) = ips {
                let newer = throughput.get(&w).is_none_or(|(t0, _)| at > *t0);
                if newer {
                    throughput.insert(w, (at, ips));
                }
            }
        }
    }
    Ok(workers
        .into_iter()
        .map(|w| {
            let age = (now - w.last_heartbeat_at).num_milliseconds().max(0);
            WorkerRow {
                id: w.id.to_string(),
                name: w.name.clone(),
                state: w.state.to_string(),
                healthy: w.state == nat_store::WorkerState::Active
                    && age <= stale_after.num_milliseconds(),
                heartbeat_age_seconds: age as f64 / 1000.0,
                devices: w.capabilities.devices.clone(),
                gpu_model: w.capabilities.gpu_model.clone(),
                gpus: w.capabilities.gpus,
                slots: w.capabilities.slots,
                current_tasks: current.remove(&w.id).unwrap_or_default(),
                images_per_second: throughput.get(&w.id).map(|t| t.1),
                tasks_finished: finished.get(&w.id).copied().unwrap_or(0),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_rows_prefer_the_jobs_measurements_and_label_the_fallback() {
        let measured = cost_row("params", Some(100), Some(80), Some(1.0), Some(2.0));
        assert_eq!(measured.metric, "params");
        assert_eq!((measured.before, measured.after), (Some(100.0), Some(80.0)));
        let modelled = cost_row("multiply-adds", Some(100), None, Some(1.0), Some(2.0));
        assert_eq!(modelled.metric, "multiply-adds (C=36, L=20, CIFAR-10)");
        assert_eq!((modelled.before, modelled.after), (Some(1.0), Some(2.0)));
        // A zero means "not measured" in the coordinator's documents.
        assert_eq!(
            cost_row("params", Some(0), Some(5), None, None).metric,
            "params (C=36, L=20, CIFAR-10)"
        );
    }

    fn update(seq: i64, rewards: Vec<f64>) -> RewardPoint {
        RewardPoint {
            seq,
            t_ms: seq,
            policy_version: seq,
            reward: Some(seq as f64),
            baseline: Some(0.0),
            rewards,
            updates: 1,
            reward_updates: 1,
        }
    }

    #[test]
    fn reward_points_stay_bounded_at_any_number_of_updates() {
        let mut d = Digest::default();
        for seq in 1..=CHART_POINTS as i64 {
            d.reward_point(update(seq, vec![0.0; 64]));
        }
        assert_eq!((d.rewards.len(), d.reward_bucket), (CHART_POINTS, 1));
        assert!(d.rewards.iter().all(|p| p.rewards.len() == DOTS_PER_POINT));
        let n = 50_000i64;
        for seq in CHART_POINTS as i64 + 1..=n {
            d.reward_point(update(seq, (0..64).map(f64::from).collect()));
            assert!(d.rewards.len() <= CHART_POINTS);
        }
        let bucket = d.reward_bucket;
        assert!(bucket.is_power_of_two() && bucket >= 64, "{bucket}");
        assert_eq!(d.rewards.iter().map(|p| p.updates).sum::<u64>(), n as u64);
        assert!(d.rewards.iter().all(|p| p.rewards.len() <= DOTS_PER_POINT));
        let last = d.rewards.last().expect("points");
        assert_eq!((last.seq, last.policy_version), (n, n));
        // A full point's reward is the mean of its updates' (here their versions).
        let first = &d.rewards[0];
        assert_eq!(first.updates, bucket);
        assert!((first.reward.unwrap_or(0.0) - (bucket as f64 + 1.0) / 2.0).abs() < 1e-6);
        // The dots keep the lowest and the highest reward.
        let dots = &d.rewards[d.rewards.len() - 2].rewards;
        assert_eq!((dots[0], dots[dots.len() - 1]), (0.0, 63.0));
    }

    #[test]
    fn long_summaries_are_truncated() {
        assert_eq!(truncate("abc".into(), 5), "abc");
        assert_eq!(truncate("abcdef".into(), 4), "abc…");
    }
}
