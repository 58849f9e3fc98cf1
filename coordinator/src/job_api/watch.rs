//! `WatchJob`'s streamer: a job's stored events mapped to wire [`v1::JobEvent`]s.
//!
//! Events written by the store (`job_created`, `task_succeeded`, …) become state, progress and
//! task events for every job kind. An `evaluate` job also gets a `NewBest` whenever a task
//! beats the most accurate architecture so far. An `optimize` job's driver writes its own events
//! (`crate::optimize::event`): `phase` becomes `PhaseChanged`, `policy_update` becomes
//! `PolicyUpdated`, `new_best` becomes `NewBest` with the derived genotype; its `rewards` event
//! only tells the watcher which learning round the next updates belong to.

use std::sync::Arc;
use std::time::Duration;

use nat_proto::v1;
use nat_store::{event_kind, Event, Job};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};
use tonic::Status;

use super::StoredResult;
use crate::convert::{self, JobSpec};
use crate::error::ApiError;
use crate::optimize::event as optimize_event;
use crate::state::Coordinator;

/// Events fetched per store read while streaming.
const EVENT_PAGE: u32 = 500;
/// A watch stream re-reads the log at least this often even without a signal (events written
/// by another coordinator process, or a missed signal).
const WATCH_POLL: Duration = Duration::from_secs(2);

/// What the watcher needs to know about the job it streams.
#[derive(Debug, Clone, Default)]
pub(crate) struct JobView {
    /// An `optimize` job (else `evaluate`).
    optimize: bool,
    /// Canonical genotype JSON of each submitted architecture.
    architectures: Vec<String>,
    /// Learning rounds of an optimize job (0 when unknown).
    iterations: u32,
}

impl JobView {
    pub(crate) fn of(job: &Job) -> JobView {
        let spec: Option<JobSpec> = serde_json::from_value(job.spec.clone()).ok();
        let iterations = job
            .spec
            .get("optimize")
            .and_then(|o| o.get("iterations"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        JobView {
            optimize: job.kind == crate::optimize::JOB_KIND,
            architectures: spec.map(|s| s.architectures).unwrap_or_default(),
            iterations: u32::try_from(iterations).unwrap_or(u32::MAX),
        }
    }
}

/// Maps stored events to wire events, keeping the little state the mapping needs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Translator {
    job: JobView,
    /// Best accuracy seen (evaluate jobs).
    best: Option<f64>,
    /// Learning round of the latest `rewards` event (optimize jobs).
    iteration: Option<u32>,
    /// Tasks ended (succeeded, failed, cancelled) as of the latest progress sent, so that the
    /// progress of a `tasks_added` event does not drop to zero.
    done: u32,
}

impl Translator {
    pub(crate) fn new(job: JobView) -> Translator {
        Translator {
            job,
            ..Translator::default()
        }
    }

    /// Whether a `task_succeeded` event needs the task's genotype read from the store (an
    /// optimize job's tasks are not the submitted architectures).
    fn needs_task_genotype(&self, e: &Event) -> bool {
        self.job.optimize && e.kind == event_kind::TASK_SUCCEEDED
    }

    /// The wire events of one stored event (a success may also be a new best). `task_genotype`
    /// is the genotype JSON of the event's task when the caller looked it up.
    pub(crate) fn translate(
        &mut self,
        e: &Event,
        task_genotype: Option<String>,
    ) -> Vec<v1::JobEvent> {
        use v1::job_event::Event as E;
        let p = &e.payload;
        let attempt = p.get("attempt").and_then(Value::as_u64).unwrap_or(0) as u32;
        let task_id = convert::str_field(p, "task_id").to_string();
        let mut out = Vec::new();
        let event = match e.kind.as_str() {
            event_kind::JOB_CREATED => Some(E::StateChanged(v1::JobStateChanged {
                state: v1::JobState::Queued as i32,
                reason: "created".into(),
            })),
            event_kind::JOB_FINISHED => {
                let state = convert::str_field(p, "state")
                    .parse::<nat_store::JobState>()
                    .map(convert::job_state)
                    .unwrap_or(v1::JobState::Unspecified);
                Some(E::StateChanged(v1::JobStateChanged {
                    state: state as i32,
                    reason: convert::str_field(p, "error").to_string(),
                }))
            }
            event_kind::TASK_SUCCEEDED => {
                let result: Option<StoredResult> = p
                    .get("result")
                    .and_then(|r| serde_json::from_value(r.clone()).ok());
                match result {
                    Some(r) => {
                        let genotype = match task_genotype {
                            Some(g) => g,
                            None if self.job.optimize => String::new(),
                            None => self
                                .job
                                .architectures
                                .get(r.index as usize)
                                .cloned()
                                .unwrap_or_default(),
                        };
                        // An optimize job's best comes from its driver's `new_best` events.
                        if !self.job.optimize && self.best.is_none_or(|b| r.outcome.accuracy > b) {
                            self.best = Some(r.outcome.accuracy);
                            out.push(wire(
                                e,
                                E::NewBest(v1::NewBest {
                                    genotype_darts: convert::darts_of(&genotype),
                                    genotype_json: genotype.clone(),
                                    accuracy: r.outcome.accuracy,
                                    reward: r.outcome.accuracy,
                                    input_index: r.index,
                                }),
                            ));
                        }
                        Some(E::TaskCompleted(v1::TaskCompleted {
                            task_id: task_id.clone(),
                            architecture_index: r.index,
                            genotype_json: genotype,
                            result: Some(r.outcome.to_proto()),
                            worker_id: r.worker_id,
                            attempt,
                        }))
                    }
                    // Another task kind (a supernet batch): completed, without a measurement.
                    None => Some(E::TaskCompleted(v1::TaskCompleted {
                        task_id: task_id.clone(),
                        architecture_index: 0,
                        genotype_json: task_genotype.unwrap_or_default(),
                        result: None,
                        worker_id: p
                            .get("result")
                            .map(|r| convert::str_field(r, "worker_id").to_string())
                            .unwrap_or_default(),
                        attempt,
                    })),
                }
            }
            event_kind::TASK_RETRY => Some(E::TaskFailed(v1::TaskFailed {
                task_id: task_id.clone(),
                reason: convert::str_field(p, "reason").to_string(),
                retryable: true,
                will_retry: true,
                attempt,
            })),
            event_kind::TASK_FAILED => {
                let reasons: Vec<String> = p
                    .get("reasons")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                Some(E::TaskFailed(v1::TaskFailed {
                    task_id: task_id.clone(),
                    reason: reasons.join("; "),
                    retryable: false,
                    will_retry: false,
                    attempt,
                }))
            }
            event_kind::TASK_PROGRESS => {
                let progress = p.get("progress").cloned().unwrap_or(Value::Null);
                Some(E::TaskProgress(v1::TaskProgress {
                    task_id: task_id.clone(),
                    fraction: progress
                        .get("fraction")
                        .and_then(Value::as_f64)
                        .unwrap_or(0.0),
                    message: convert::str_field(&progress, "message").to_string(),
                }))
            }
            event_kind::TASKS_ADDED => Some(E::Progress(v1::JobProgress {
                tasks_total: p.get("tasks_total").and_then(Value::as_u64).unwrap_or(0) as u32,
                tasks_done: self.done,
                tasks_running: 0,
            })),
            optimize_event::PHASE => Some(E::PhaseChanged(v1::PhaseChanged {
                phase: convert::str_field(p, "phase").to_string(),
            })),
            optimize_event::REWARDS => {
                self.iteration = u32_field(p, "iteration").or(self.iteration);
                None
            }
            optimize_event::POLICY_UPDATE => Some(E::PolicyUpdated(self.policy_updated(p))),
            optimize_event::NEW_BEST => Some(E::NewBest(new_best(p))),
            _ => None,
        };
        if let Some(event) = event {
            // The task event first, then the new-best it caused.
            out.insert(0, wire(e, event));
        }
        out
    }

    /// A stored `policy_update` document on the wire. The round comes from the document when
    /// the driver wrote it, else from the latest `rewards` event; the rounds from the document,
    /// else from the job's spec.
    fn policy_updated(&self, p: &Value) -> v1::PolicyUpdated {
        let f = |key: &str| finite(p.get(key).and_then(Value::as_f64));
        let rewards: Vec<f64> = p
            .get("rewards")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_f64)
                    .filter(|r| r.is_finite())
                    .collect()
            })
            .unwrap_or_default();
        v1::PolicyUpdated {
            version: p.get("policy_version").and_then(Value::as_u64).unwrap_or(0),
            iteration: u32_field(p, "iteration").or(self.iteration).unwrap_or(0),
            iterations: u32_field(p, "iterations").unwrap_or(self.job.iterations),
            mean_reward: f("mean_reward").unwrap_or(0.0),
            baseline: f("baseline").unwrap_or(0.0),
            entropy: f("entropy").unwrap_or(0.0),
            loss: f("loss"),
            rewards_used: u32_field(p, "samples_used").unwrap_or(rewards.len() as u32),
            stale_dropped: u32_field(p, "samples_stale").unwrap_or(0),
            rewards,
        }
    }
}

/// A stored `new_best` document on the wire: the genotype as canonical JSON and DARTS string.
fn new_best(p: &Value) -> v1::NewBest {
    let genotype = match p.get("genotype") {
        Some(Value::String(text)) => nat_arch::parse_any(text).ok(),
        Some(v @ Value::Object(_)) => nat_arch::Genotype::from_json_value(v).ok(),
        _ => None,
    };
    v1::NewBest {
        genotype_json: genotype.as_ref().map(|g| g.to_json()).unwrap_or_default(),
        genotype_darts: genotype
            .as_ref()
            .map(|g| g.to_darts_string())
            .unwrap_or_default(),
        accuracy: finite(p.get("accuracy").and_then(Value::as_f64)).unwrap_or(0.0),
        reward: finite(p.get("reward").and_then(Value::as_f64)).unwrap_or(0.0),
        input_index: u32_field(p, "input_index").unwrap_or(0),
    }
}

fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|x| x.is_finite())
}

fn u32_field(p: &Value, key: &str) -> Option<u32> {
    p.get(key)
        .and_then(Value::as_u64)
        .map(|v| u32::try_from(v).unwrap_or(u32::MAX))
}

fn wire(e: &Event, event: v1::job_event::Event) -> v1::JobEvent {
    v1::JobEvent {
        sequence: e.seq as u64,
        job_id: e.job_id.to_string(),
        at_unix_ms: convert::unix_ms(e.created_at),
        event: Some(event),
    }
}

/// Streams one job's events: the log after `after`, then new events as they are committed.
pub(crate) struct Watcher {
    c: Arc<Coordinator>,
    job: nat_store::JobId,
    after: i64,
    translator: Translator,
    tx: mpsc::Sender<Result<v1::JobEvent, Status>>,
}

impl Watcher {
    pub(crate) fn new(
        c: Arc<Coordinator>,
        job: &Job,
        after: i64,
        tx: mpsc::Sender<Result<v1::JobEvent, Status>>,
    ) -> Watcher {
        Watcher {
            c,
            job: job.id,
            after,
            translator: Translator::new(JobView::of(job)),
            tx,
        }
    }

    pub(crate) async fn run(mut self, mut changes: broadcast::Receiver<nat_store::JobId>) {
        let mut shutdown = self.c.shutdown_signal();
        loop {
            match self.drain().await {
                Ok(true) => return, // terminal event sent
                Ok(false) => {}
                Err(status) => {
                    let _ = self.tx.send(Err(status)).await;
                    return;
                }
            }
            // Wait for a change of this job, a poll tick, shutdown or the client leaving.
            let deadline = tokio::time::sleep(WATCH_POLL);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    changed = changes.recv() => match changed {
                        Ok(id) if id == self.job => break,
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    _ = &mut deadline => break,
                    _ = shutdown.changed() => {
                        let _ = self.tx.send(Err(Status::unavailable("coordinator shutting down"))).await;
                        return;
                    }
                    _ = self.tx.closed() => return,
                }
            }
        }
    }

    /// The genotype JSON of the task a `task_succeeded` event names ("" when the task or its
    /// payload has none).
    async fn task_genotype(&self, e: &Event) -> Result<String, Status> {
        let Ok(id) = convert::str_field(&e.payload, "task_id").parse::<nat_store::TaskId>() else {
            return Ok(String::new());
        };
        let task = self.c.store.get_task(id).await.map_err(ApiError::from)?;
        Ok(convert::str_field(&task.payload, "genotype_json").to_string())
    }

    /// Sends every stored event after `self.after`. Returns true once the job's final event was
    /// sent.
    async fn drain(&mut self) -> Result<bool, Status> {
        loop {
            let events = self
                .c
                .store
                .events_after(self.job, self.after, EVENT_PAGE)
                .await
                .map_err(ApiError::from)?;
            let n = events.len();
            let mut task_ended = false;
            for event in events {
                self.after = event.seq;
                let terminal = event.kind == event_kind::JOB_FINISHED;
                task_ended |= matches!(
                    event.kind.as_str(),
                    event_kind::TASK_SUCCEEDED | event_kind::TASK_FAILED | event_kind::TASK_RETRY
                );
                let genotype = if self.translator.needs_task_genotype(&event) {
                    Some(self.task_genotype(&event).await?)
                } else {
                    None
                };
                for out in self.translator.translate(&event, genotype) {
                    if self.tx.send(Ok(out)).await.is_err() {
                        return Ok(true);
                    }
                }
                if terminal {
                    return Ok(true);
                }
            }
            if task_ended {
                let job = self
                    .c
                    .store
                    .get_job(self.job)
                    .await
                    .map_err(ApiError::from)?;
                let done = job.tasks_done + job.tasks_failed + job.tasks_cancelled;
                self.translator.done = u32::try_from(done).unwrap_or(u32::MAX);
                let progress = v1::JobEvent {
                    sequence: self.after as u64,
                    job_id: self.job.to_string(),
                    at_unix_ms: convert::unix_ms(job.updated_at),
                    event: Some(v1::job_event::Event::Progress(v1::JobProgress {
                        tasks_total: job.tasks_total as u32,
                        tasks_done: done as u32,
                        tasks_running: 0,
                    })),
                };
                if self.tx.send(Ok(progress)).await.is_err() {
                    return Ok(true);
                }
            }
            if n < EVENT_PAGE as usize {
                return Ok(false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use serde_json::json;
    use v1::job_event::Event as E;

    fn stored(seq: i64, kind: &str, payload: Value) -> Event {
        Event {
            job_id: uuid::Uuid::nil(),
            seq,
            kind: kind.into(),
            payload,
            created_at: Utc::now(),
        }
    }

    fn optimize_job() -> Translator {
        Translator::new(JobView {
            optimize: true,
            architectures: vec![],
            iterations: 5,
        })
    }

    #[test]
    fn tasks_added_keeps_the_done_count_of_the_latest_progress() {
        let mut t = optimize_job();
        t.done = 27;
        let out = t.translate(
            &stored(9, "tasks_added", json!({"added": 2, "tasks_total": 29})),
            None,
        );
        let Some(E::Progress(p)) = &out[0].event else {
            panic!("{out:?}");
        };
        assert_eq!((p.tasks_done, p.tasks_total), (27, 29));
    }

    #[test]
    fn policy_updates_carry_the_round_from_the_rewards_event_and_the_rounds_from_the_spec() {
        let mut t = optimize_job();
        assert!(t
            .translate(
                &stored(1, "rewards", json!({"iteration": 2, "rewards": [0.1]})),
                None
            )
            .is_empty());
        let out = t.translate(
            &stored(
                2,
                "policy_update",
                json!({"policy_version": 4, "baseline": 0.05, "mean_reward": 0.1,
                       "rewards": [0.1, f64::NAN], "samples_used": 1, "samples_stale": 2,
                       "entropy": 3.5}),
            ),
            None,
        );
        let Some(E::PolicyUpdated(u)) = &out[0].event else {
            panic!("{out:?}");
        };
        assert_eq!((u.version, u.iteration, u.iterations), (4, 2, 5));
        assert_eq!((u.rewards_used, u.stale_dropped), (1, 2));
        assert_eq!((u.mean_reward, u.baseline, u.entropy), (0.1, 0.05, 3.5));
        assert_eq!(u.loss, None);
        // json! turns NaN into null, which is skipped.
        assert_eq!(u.rewards, vec![0.1]);
        // The document's own fields win when the driver writes them.
        let out = t.translate(
            &stored(
                3,
                "policy_update",
                json!({"policy_version": 5, "iteration": 3, "iterations": 9, "loss": -0.25}),
            ),
            None,
        );
        let Some(E::PolicyUpdated(u)) = &out[0].event else {
            panic!("{out:?}");
        };
        assert_eq!((u.iteration, u.iterations, u.loss), (3, 9, Some(-0.25)));
    }

    #[test]
    fn an_optimize_new_best_carries_the_genotype_and_tasks_make_none() {
        let mut t = optimize_job();
        let g = nat_arch::parse_any("darts-v2").expect("preset");
        let out = t.translate(
            &stored(
                1,
                "new_best",
                json!({"input_index": 0, "genotype": g.to_json_value(), "accuracy": 0.9}),
            ),
            None,
        );
        let Some(E::NewBest(b)) = &out[0].event else {
            panic!("{out:?}");
        };
        assert_eq!(b.genotype_json, g.to_json());
        assert_eq!(b.genotype_darts, g.to_darts_string());
        assert_eq!((b.accuracy, b.reward), (0.9, 0.0));
        let done = stored(
            2,
            event_kind::TASK_SUCCEEDED,
            json!({"task_id": "t", "attempt": 1, "result": {"index": 3, "worker_id": "w",
                   "accuracy": 0.95, "loss": 0.1, "params": 1, "madds": 2,
                   "wall_seconds": 0.1, "images_per_second": 1.0}}),
        );
        let out = t.translate(&done, Some(g.to_json()));
        assert_eq!(
            out.len(),
            1,
            "no per-task new best in an optimize job: {out:?}"
        );
        let Some(E::TaskCompleted(c)) = &out[0].event else {
            panic!("{out:?}");
        };
        assert_eq!(c.genotype_json, g.to_json());
        let out = t.translate(&stored(3, "phase", json!({"phase": "derive"})), None);
        assert!(matches!(&out[0].event, Some(E::PhaseChanged(p)) if p.phase == "derive"));
    }

    #[test]
    fn an_evaluate_task_that_beats_the_best_is_a_new_best_with_its_genotype() {
        let g = nat_arch::parse_any("darts-v2").expect("preset");
        let mut t = Translator::new(JobView {
            optimize: false,
            architectures: vec![g.to_json()],
            iterations: 0,
        });
        let done = stored(
            1,
            event_kind::TASK_SUCCEEDED,
            json!({"task_id": "t", "attempt": 1, "result": {"index": 0, "accuracy": 0.5,
                   "loss": 0.1, "params": 1, "madds": 2, "wall_seconds": 0.1,
                   "images_per_second": 1.0}}),
        );
        let out = t.translate(&done, None);
        assert_eq!(out.len(), 2);
        let Some(E::NewBest(b)) = &out[1].event else {
            panic!("{out:?}");
        };
        assert_eq!(b.genotype_json, g.to_json());
        assert_eq!(b.genotype_darts, g.to_darts_string());
        assert_eq!(
            t.translate(&done, None).len(),
            1,
            "not better the second time"
        );
    }
}
