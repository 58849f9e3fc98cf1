//! The translation of a job's stored events into wire [`v1::JobEvent`]s for `WatchJob`.
//!
//! Events written by the store (`job_created`, `task_succeeded`, …) become state, progress and
//! task events for every job kind ([`Translator`]); what a kind adds — an evaluate job's
//! `NewBest` when a task beats the best so far, an optimize job's phases, policy updates and
//! derived bests — is its [`KindEvents`]. Each stored event is decoded through
//! `nat_schema::event::JobEvent`; one that does not decode ends the stream with an error naming
//! the field.

use nat_proto::v1;
use nat_schema::event::{JobEvent, TaskSucceeded};
use nat_store::Event;

use crate::convert;
use crate::error::ApiError;

/// A job kind's part of the translation.
pub trait KindEvents: Send + Sync {
    /// Whether the wire form of this `task_succeeded` event needs the genotype of its task
    /// (read from the store by the caller).
    fn needs_task_genotype(&self) -> bool {
        false
    }

    /// The wire events of a succeeded task: its `TaskCompleted`, and what the kind adds
    /// (e.g. a new best). `task_genotype` is the task's genotype JSON when the caller read it.
    fn task_succeeded(
        &mut self,
        event: &TaskSucceeded,
        task_genotype: Option<String>,
    ) -> Result<Vec<v1::job_event::Event>, ApiError>;

    /// The wire events of an event the store does not write (the kind's own), empty when it
    /// shows none.
    fn own_event(&mut self, event: &JobEvent) -> Vec<v1::job_event::Event>;
}

/// Maps stored events to wire events, keeping the little state the mapping needs.
pub struct Translator {
    kind: Box<dyn KindEvents>,
    /// Tasks ended (succeeded, failed, cancelled) as of the latest progress sent, so that the
    /// progress of a `tasks_added` event does not drop to zero.
    pub done: u32,
}

impl Translator {
    /// A translator for one job, with its kind's part.
    pub fn new(kind: Box<dyn KindEvents>) -> Translator {
        Translator { kind, done: 0 }
    }

    /// Whether translating `e` needs its task's genotype (see [`KindEvents`]).
    pub fn needs_task_genotype(&self, e: &Event) -> bool {
        e.kind == nat_schema::EventKind::TaskSucceeded.as_str() && self.kind.needs_task_genotype()
    }

    /// The wire events of one stored event, in order (a task's completion before the new best
    /// it caused).
    pub fn translate(
        &mut self,
        e: &Event,
        task_genotype: Option<String>,
    ) -> Result<Vec<v1::JobEvent>, ApiError> {
        use v1::job_event::Event as E;
        let decoded = JobEvent::decode(&e.kind, &e.payload)?;
        let events = match &decoded {
            JobEvent::JobCreated(_) => vec![E::StateChanged(v1::JobStateChanged {
                state: v1::JobState::Queued as i32,
                reason: "created".into(),
            })],
            JobEvent::JobFinished(f) => {
                let state = f
                    .state
                    .parse::<nat_store::JobState>()
                    .map(convert::job_state)
                    .unwrap_or(v1::JobState::Unspecified);
                vec![E::StateChanged(v1::JobStateChanged {
                    state: state as i32,
                    reason: f.error.clone().unwrap_or_default(),
                })]
            }
            JobEvent::TaskSucceeded(s) => self.kind.task_succeeded(s, task_genotype)?,
            JobEvent::TaskRetry(r) => vec![E::TaskFailed(v1::TaskFailed {
                task_id: r.task_id.clone(),
                reason: r.reason.clone().unwrap_or_default(),
                retryable: true,
                will_retry: true,
                attempt: r.attempt,
            })],
            JobEvent::TaskFailed(f) => vec![E::TaskFailed(v1::TaskFailed {
                task_id: f.task_id.clone(),
                reason: f.reasons.join("; "),
                retryable: false,
                will_retry: false,
                attempt: f.attempt,
            })],
            JobEvent::TaskProgress(p) => vec![E::TaskProgress(v1::TaskProgress {
                task_id: p.task_id.clone(),
                fraction: p.progress.fraction,
                message: p.progress.message.clone(),
            })],
            JobEvent::TasksAdded(a) => vec![E::Progress(v1::JobProgress {
                tasks_total: u32::try_from(a.tasks_total).unwrap_or(u32::MAX),
                tasks_done: self.done,
                tasks_running: 0,
            })],
            other => self.kind.own_event(other),
        };
        Ok(events.into_iter().map(|event| wire(e, event)).collect())
    }
}

/// A wire event at the position of stored event `e`.
pub fn wire(e: &Event, event: v1::job_event::Event) -> v1::JobEvent {
    v1::JobEvent {
        sequence: e.seq as u64,
        job_id: e.job_id.to_string(),
        at_unix_ms: convert::unix_ms(e.created_at),
        event: Some(event),
    }
}

/// `v` when finite.
pub fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|x| x.is_finite())
}
