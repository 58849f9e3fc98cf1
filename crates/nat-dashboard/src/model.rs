//! The views the JSON endpoints return, built from the store.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use nat_arch::{network_cost, CellKind, Genotype, NetworkSpec};
use nat_store::{event_kind, Event, Job, JobFilter, JobState, Store, TaskState, Worker, WorkerId};
use serde::Serialize;
use serde_json::Value;

use crate::cache::{self, EventCache};
use crate::diagram::{self, Change, Role};
use crate::schema::{self, JobSpecView, NewBest, OptimizeResult, PolicyUpdate};
use crate::DashboardError;

/// Most events read for one job page by one request (the next request continues).
pub const MAX_EVENTS: usize = 50_000;
/// Events read per job for a row of the jobs list when the result has no summary.
const LIST_EVENTS: u32 = 2_000;
/// Events shown in a job page's log.
const RECENT_EVENTS: usize = 25;

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
    /// Individual rewards.
    pub rewards: Vec<f64>,
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

/// Everything the job page shows.
#[derive(Debug, Clone, Serialize)]
pub struct JobDetail {
    /// The row of the jobs list.
    pub job: JobRow,
    /// Tasks leased right now.
    pub tasks_running: u64,
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
    /// Tasks finished among the recent jobs scanned.
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
}

/// What the events of a job say.
#[derive(Debug, Default, Clone)]
pub(crate) struct Digest {
    rewards: Vec<RewardPoint>,
    accuracy: Vec<AccuracyPoint>,
    best_accuracy: Option<f64>,
    best_reward: Option<f64>,
    policy_version: Option<i64>,
    /// Latest `new_best` genotype per input index.
    best: HashMap<u32, (Genotype, Option<f64>)>,
    /// The latest events (a bounded tail, oldest first), summarised on output.
    last: Vec<Event>,
}

impl Digest {
    pub(crate) fn add(&mut self, e: &Event) {
        let t_ms = ms(e.created_at);
        match e.kind.as_str() {
            schema::POLICY_UPDATE => {
                if let Some(u) = schema::read::<PolicyUpdate>(&e.payload) {
                    self.policy_version = Some(u.policy_version);
                    let reward = u.mean_reward.or_else(|| mean(&u.rewards));
                    for r in u.rewards.iter().copied().chain(reward) {
                        self.best_reward = Some(self.best_reward.map_or(r, |b| b.max(r)));
                    }
                    self.rewards.push(RewardPoint {
                        seq: e.seq,
                        t_ms,
                        policy_version: u.policy_version,
                        reward,
                        baseline: u.baseline,
                        rewards: u.rewards,
                    });
                }
            }
            schema::NEW_BEST => {
                if let Some(b) = schema::read::<NewBest>(&e.payload) {
                    if let Some(r) = b.reward {
                        self.best_reward = Some(self.best_reward.map_or(r, |x| x.max(r)));
                    }
                    if let Some(a) = b.accuracy {
                        self.accuracy_seen(e.seq, t_ms, a);
                    }
                    if let Some(g) = schema::genotype(&b.genotype) {
                        self.best.insert(b.input_index, (g, b.accuracy));
                    }
                }
            }
            event_kind::TASK_SUCCEEDED => {
                let result = e.payload.get("result").unwrap_or(&Value::Null);
                if let Some(a) = result.get("accuracy").and_then(Value::as_f64) {
                    self.accuracy_seen(e.seq, t_ms, a);
                }
            }
            _ => {}
        }
        self.last.push(e.clone());
        if self.last.len() > 4 * RECENT_EVENTS {
            self.last.drain(..self.last.len() - RECENT_EVENTS);
        }
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

fn short_id(v: Option<&Value>) -> String {
    v.and_then(Value::as_str)
        .map(|s| s.chars().take(8).collect())
        .unwrap_or_default()
}

fn summarize(e: &Event) -> String {
    let p = &e.payload;
    let num = |k: &str| p.get(k).and_then(Value::as_f64);
    match e.kind.as_str() {
        event_kind::JOB_CREATED => format!(
            "job created with {} tasks",
            p.get("tasks").and_then(Value::as_u64).unwrap_or(0)
        ),
        event_kind::TASKS_ADDED => format!(
            "{} tasks added ({} in total)",
            p.get("added").and_then(Value::as_u64).unwrap_or(0),
            p.get("tasks_total").and_then(Value::as_u64).unwrap_or(0)
        ),
        event_kind::TASK_SUCCEEDED => {
            let acc = p
                .get("result")
                .and_then(|r| r.get("accuracy"))
                .and_then(Value::as_f64)
                .map(|a| format!(", accuracy {:.2}%", a * 100.0))
                .unwrap_or_default();
            format!("task {} succeeded{acc}", short_id(p.get("task_id")))
        }
        event_kind::TASK_RETRY => format!(
            "task {} attempt {} failed, retrying: {}",
            short_id(p.get("task_id")),
            p.get("attempt").and_then(Value::as_u64).unwrap_or(0),
            p.get("reason").and_then(Value::as_str).unwrap_or("")
        ),
        event_kind::TASK_FAILED => format!("task {} failed", short_id(p.get("task_id"))),
        event_kind::TASK_PROGRESS => {
            let f = p
                .get("progress")
                .and_then(|x| x.get("fraction"))
                .and_then(Value::as_f64)
                .unwrap_or(0.0);
            format!("task {} at {:.0}%", short_id(p.get("task_id")), f * 100.0)
        }
        event_kind::JOB_FINISHED => format!(
            "job {}{}",
            p.get("state").and_then(Value::as_str).unwrap_or("finished"),
            p.get("error")
                .and_then(Value::as_str)
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ),
        schema::POLICY_UPDATE => format!(
            "policy v{} · mean reward {} · baseline {}",
            p.get("policy_version").and_then(Value::as_i64).unwrap_or(0),
            num("mean_reward").map_or("–".into(), |r| format!("{r:+.4}")),
            num("baseline").map_or("–".into(), |r| format!("{r:+.4}")),
        ),
        schema::NEW_BEST => format!(
            "new best{}{}",
            num("accuracy")
                .map(|a| format!(" · accuracy {:.2}%", a * 100.0))
                .unwrap_or_default(),
            num("reward")
                .map(|r| format!(" · reward {r:+.4}"))
                .unwrap_or_default(),
        ),
        other => other.replace('_', " "),
    }
}

fn row(job: &Job, digest: Option<&Digest>, now: DateTime<Utc>) -> JobRow {
    let spec: JobSpecView = schema::read(&job.spec).unwrap_or_default();
    let result: OptimizeResult = job
        .result
        .as_ref()
        .and_then(schema::read)
        .unwrap_or_default();
    let s = &result.summary;
    let finished = job.tasks_done + job.tasks_failed + job.tasks_cancelled;
    let progress = match (s.iterations_done, s.iterations_total) {
        (Some(d), Some(t)) if t > 0 => d as f64 / t as f64,
        _ if job.state.is_final() && job.state == JobState::Succeeded => 1.0,
        _ if job.tasks_total > 0 => finished as f64 / job.tasks_total as f64,
        _ => 0.0,
    }
    .clamp(0.0, 1.0);
    let end = job.finished_at.unwrap_or(now);
    JobRow {
        id: job.id.to_string(),
        kind: job.kind.clone(),
        name: spec.name,
        dataset: spec.dataset,
        state: job.state,
        tasks: TaskCounts {
            total: job.tasks_total,
            done: job.tasks_done,
            failed: job.tasks_failed,
            cancelled: job.tasks_cancelled,
        },
        progress,
        best_reward: s.best_reward.or(digest.and_then(|d| d.best_reward)),
        best_accuracy: s.best_accuracy.or(digest.and_then(|d| d.best_accuracy)),
        policy_version: s.policy_version.or(digest.and_then(|d| d.policy_version)),
        created_at_ms: ms(job.created_at),
        finished_at_ms: job.finished_at.map(ms),
        elapsed_seconds: (end - job.created_at).num_milliseconds().max(0) as f64 / 1000.0,
        error: job.error.clone(),
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
        let has_summary = job.result.as_ref().and_then(|r| r.get("summary")).is_some();
        let digest = if has_summary {
            None
        } else {
            Some(
                cache::digest(store, cache, job.id, LIST_EVENTS as usize)
                    .await?
                    .0
                    .digest,
            )
        };
        rows.push(row(job, digest.as_ref(), now));
    }
    Ok(rows)
}

fn measured(
    result: &OptimizeResult,
    index: u32,
) -> (Option<&schema::ArchResult>, Option<&schema::ArchResult>) {
    result
        .optimize
        .iter()
        .find(|o| o.input_index == index)
        .map_or((None, None), |o| (Some(&o.original), Some(&o.best)))
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

/// Best accuracy measured by the job's successful `train_eval` tasks, per canonical hash of the
/// trained genotype (`payload.genotype_json`).
async fn trained_accuracies(
    store: &dyn Store,
    job: uuid::Uuid,
) -> Result<HashMap<String, f64>, DashboardError> {
    let mut out: HashMap<String, f64> = HashMap::new();
    let mut hashes: HashMap<String, Option<String>> = HashMap::new();
    for task in store
        .list_tasks(job, Some(TaskState::Done), 10_000, 0)
        .await?
    {
        let accuracy = task
            .result
            .as_ref()
            .and_then(schema::read::<schema::TrainEvalResult>)
            .and_then(|r| r.accuracy);
        let (Some(a), Some(json)) = (accuracy, task.payload.get("genotype_json")) else {
            continue;
        };
        // Many tasks train the same few genotypes: parse and hash each text once.
        let key = json.to_string();
        let hash = match hashes.get(&key) {
            Some(h) => h.clone(),
            None => {
                let h = schema::genotype(json).map(|g| g.canonical_hash());
                hashes.insert(key, h.clone());
                h
            }
        };
        if let Some(hash) = hash {
            let best = out.entry(hash).or_insert(a);
            *best = best.max(a);
        }
    }
    Ok(out)
}

/// The input genotype `input_index` of job `id` and its best transformation so far (from the
/// job result, else the latest `new_best` event).
pub async fn job_genotypes(
    store: &dyn Store,
    cache: Option<&EventCache>,
    id: uuid::Uuid,
    input_index: u32,
) -> Result<(Option<Genotype>, Option<Genotype>), DashboardError> {
    let job = store.get_job(id).await?;
    let digest = cache::digest(store, cache, job.id, MAX_EVENTS)
        .await?
        .0
        .digest;
    let spec: JobSpecView = schema::read(&job.spec).unwrap_or_default();
    let result: OptimizeResult = job
        .result
        .as_ref()
        .and_then(schema::read)
        .unwrap_or_default();
    let (orig_doc, best_doc) = measured(&result, input_index);
    let input = spec
        .architectures
        .get(input_index as usize)
        .and_then(schema::genotype)
        .or_else(|| orig_doc.and_then(|d| schema::genotype(&d.genotype)));
    let best = best_doc
        .and_then(|d| schema::genotype(&d.genotype))
        .or_else(|| digest.best.get(&input_index).map(|b| b.0.clone()));
    Ok((input, best))
}

/// A standalone picture of a job's transformation drawn by `nat_arch::render`: the best
/// genotype with the edges changed from the input highlighted (both cells), or the input alone
/// while there is no best. `dot` selects Graphviz DOT instead of SVG. `None` when the input is
/// unknown.
pub async fn job_diagram(
    store: &dyn Store,
    cache: Option<&EventCache>,
    id: uuid::Uuid,
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
    id: uuid::Uuid,
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
    id: uuid::Uuid,
    input_index: u32,
    after: i64,
) -> Result<JobDetail, DashboardError> {
    let job = store.get_job(id).await?;
    let (cursor, truncated) = cache::digest(store, cache, job.id, MAX_EVENTS).await?;
    let last_seq = cursor.seq;
    let digest = cursor.digest;
    let running = store
        .list_tasks(job.id, Some(TaskState::Leased), 10_000, 0)
        .await?
        .len() as u64;
    let spec: JobSpecView = schema::read(&job.spec).unwrap_or_default();
    let result: OptimizeResult = job
        .result
        .as_ref()
        .and_then(schema::read)
        .unwrap_or_default();
    let (orig_doc, best_doc) = measured(&result, input_index);
    let input = spec
        .architectures
        .get(input_index as usize)
        .and_then(schema::genotype)
        .or_else(|| orig_doc.and_then(|d| schema::genotype(&d.genotype)));
    let best_event = digest.best.get(&input_index);
    let best = best_doc
        .and_then(|d| schema::genotype(&d.genotype))
        .or_else(|| best_event.map(|b| b.0.clone()));

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

    let trained = match cache.and_then(|c| c.trained(job.id, job.tasks_done)) {
        Some(t) => t,
        None => {
            let t = Arc::new(trained_accuracies(store, job.id).await?);
            if let Some(c) = cache {
                c.set_trained(job.id, job.tasks_done, t.clone());
            }
            t
        }
    };
    let trained_of = |g: &Option<Genotype>| {
        g.as_ref()
            .and_then(|g| trained.get(&g.canonical_hash()).copied())
    };
    let input_cost = input.as_ref().and_then(cost);
    let best_cost = best.as_ref().and_then(cost);
    let table = vec![
        CompareRow {
            metric: "accuracy",
            before: orig_doc
                .and_then(|d| d.accuracy)
                .or_else(|| trained_of(&input)),
            after: best_doc
                .and_then(|d| d.accuracy)
                .or_else(|| best_event.and_then(|b| b.1))
                .or_else(|| trained_of(&best)),
            format: "percent",
        },
        cost_row(
            "params",
            orig_doc.and_then(|d| d.params),
            best_doc.and_then(|d| d.params),
            input_cost.map(|c| c.0),
            best_cost.map(|c| c.0),
        ),
        cost_row(
            "multiply-adds",
            orig_doc.and_then(|d| d.madds),
            best_doc.and_then(|d| d.madds),
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

    let job_row = row(&job, Some(&digest), Utc::now());
    let events: Vec<EventLine> = digest
        .last
        .iter()
        .rev()
        .take(RECENT_EVENTS)
        .filter(|e| e.seq > after)
        .map(|e| EventLine {
            seq: e.seq,
            t_ms: ms(e.created_at),
            kind: e.kind.clone(),
            summary: truncate(summarize(e), SUMMARY_CHARS),
        })
        .collect();
    Ok(JobDetail {
        job: job_row,
        tasks_running: running,
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
        inputs: spec.architectures.len(),
        has_best: best.is_some(),
        cells,
        table,
        events,
        events_truncated: truncated,
    })
}

/// Workers with their current tasks and latest throughput. Tasks are found among the
/// `recent_jobs` most recent jobs.
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
                    current.entry(w).or_default().push(CurrentTask {
                        task_id: t.id.to_string(),
                        job_id: job.id.to_string(),
                        kind: t.kind.clone(),
                        attempt: t.attempt,
                        fraction: t
                            .progress
                            .as_ref()
                            .and_then(|p| p.get("fraction"))
                            .and_then(Value::as_f64),
                    });
                }
            }
        }
        for t in store
            .list_tasks(job.id, Some(TaskState::Done), 10_000, 0)
            .await?
        {
            let (Some(w), Some(at)) = (t.leased_by, t.finished_at) else {
                continue;
            };
            *finished.entry(w).or_default() += 1;
            let ips = t
                .result
                .as_ref()
                .and_then(|r| r.get("images_per_second"))
                .and_then(Value::as_f64)
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

    #[test]
    fn long_summaries_are_truncated() {
        assert_eq!(truncate("abc".into(), 5), "abc");
        assert_eq!(truncate("abcdef".into(), 4), "abc…");
    }
}
