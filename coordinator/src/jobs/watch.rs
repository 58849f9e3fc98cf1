//! The translation of a job's stored events into wire [`v1::JobEvent`]s for `WatchJob`.
//!
//! Events written by the store (`job_created`, `task_succeeded`, …) become state, progress and
//! task events for every job kind ([`Translator`]); what a kind adds — an evaluate job's
//! `NewBest` when a task beats the best so far, an optimize job's phases, policy updates and
//! derived bests — is its [`KindEvents`]. Each stored event is decoded through
//! `nat_schema::event::JobEvent`; one that does not decode ends the stream with an error naming
//! the field.
//!
//! **Sequence numbers.** One stored event may become several wire events (a task's completion,
//! the new best it made, the job's progress). The `i`-th wire event (from 0) of the stored event
//! numbered `seq` carries the sequence `seq * SEQUENCE_STRIDE + i` ([`SEQUENCE_STRIDE`] = 256),
//! so the numbers a watcher sees strictly increase, and `after_sequence = N` (the last number
//! a client saw) resumes exactly after that wire event, also inside one stored event's wire
//! events. The wire events of a stored event depend only on the log up to it (the translation
//! keeps its state from the log, never from the store's current rows), so a resumed stream is
//! exactly the rest of the full one.

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

/// The stride of wire sequence numbers: the `i`-th wire event of the stored event `seq` is
/// numbered `seq * SEQUENCE_STRIDE + i` (see the module documentation). A stored event may
/// become at most this many wire events.
pub const SEQUENCE_STRIDE: u64 = 256;

/// The wire sequence number of the `index`-th wire event of stored event `seq`.
pub fn wire_sequence(seq: i64, index: usize) -> u64 {
    u64::try_from(seq)
        .unwrap_or(0)
        .saturating_mul(SEQUENCE_STRIDE)
        .saturating_add(index as u64)
}

/// Maps stored events to wire events, keeping the little state the mapping needs. The state
/// follows the log only (never the store's current rows), so the wire events of a stored
/// event are the same whenever the log is translated from its start.
pub struct Translator {
    kind: Box<dyn KindEvents>,
    /// Tasks ended (succeeded or failed) in the log so far: the progress of a `tasks_added`
    /// event does not drop to zero.
    pub done: u32,
    /// Tasks of the job in the log so far (`job_created`, then `tasks_added`).
    total: u32,
}

impl Translator {
    /// A translator for one job, with its kind's part.
    pub fn new(kind: Box<dyn KindEvents>) -> Translator {
        Translator {
            kind,
            done: 0,
            total: 0,
        }
    }

    /// Whether translating `e` needs its task's genotype (see [`KindEvents`]).
    pub fn needs_task_genotype(&self, e: &Event) -> bool {
        e.kind == nat_schema::EventKind::TaskSucceeded.as_str() && self.kind.needs_task_genotype()
    }

    /// Every wire event `WatchJob` sends for stored event `e`, in order and numbered
    /// ([`wire_sequence`]): those of [`Translator::translate`], then the job's progress when
    /// `e` ended a task (succeeded or failed for good).
    pub fn watch_events(
        &mut self,
        e: &Event,
        task_genotype: Option<String>,
    ) -> Result<Vec<v1::JobEvent>, ApiError> {
        let mut out = self.translate(e, task_genotype)?;
        let ended = e.kind == nat_schema::EventKind::TaskSucceeded.as_str()
            || e.kind == nat_schema::EventKind::TaskFailed.as_str();
        if ended {
            out.push(wire(
                e,
                out.len(),
                v1::job_event::Event::Progress(v1::JobProgress {
                    tasks_total: self.total.max(self.done),
                    tasks_done: self.done,
                    tasks_running: 0,
                }),
            ));
        }
        check_stride(e, out.len())?;
        Ok(out)
    }

    /// The wire events of one stored event, in order (a task's completion before the new best
    /// it caused), numbered from `e.seq * SEQUENCE_STRIDE`; without the progress
    /// [`Translator::watch_events`] adds.
    pub fn translate(
        &mut self,
        e: &Event,
        task_genotype: Option<String>,
    ) -> Result<Vec<v1::JobEvent>, ApiError> {
        use v1::job_event::Event as E;
        let decoded = JobEvent::decode(&e.kind, &e.payload)?;
        let events = match &decoded {
            JobEvent::JobCreated(c) => {
                self.total = u32::try_from(c.tasks).unwrap_or(u32::MAX);
                vec![E::StateChanged(v1::JobStateChanged {
                    state: v1::JobState::Queued as i32,
                    reason: "created".into(),
                })]
            }
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
            JobEvent::TaskSucceeded(s) => {
                self.done = self.done.saturating_add(1);
                self.kind.task_succeeded(s, task_genotype)?
            }
            JobEvent::TaskRetry(r) => vec![E::TaskFailed(v1::TaskFailed {
                task_id: r.task_id.clone(),
                reason: r.reason.clone().unwrap_or_default(),
                retryable: true,
                will_retry: true,
                attempt: r.attempt,
            })],
            JobEvent::TaskFailed(f) => {
                self.done = self.done.saturating_add(1);
                vec![E::TaskFailed(v1::TaskFailed {
                    task_id: f.task_id.clone(),
                    reason: f.reasons.join("; "),
                    retryable: false,
                    will_retry: false,
                    attempt: f.attempt,
                })]
            }
            JobEvent::TaskProgress(p) => vec![E::TaskProgress(v1::TaskProgress {
                task_id: p.task_id.clone(),
                fraction: p.progress.fraction,
                message: p.progress.message.clone(),
            })],
            JobEvent::TasksAdded(a) => {
                self.total = u32::try_from(a.tasks_total).unwrap_or(u32::MAX);
                vec![E::Progress(v1::JobProgress {
                    tasks_total: self.total,
                    tasks_done: self.done,
                    tasks_running: 0,
                })]
            }
            other => self.kind.own_event(other),
        };
        check_stride(e, events.len())?;
        Ok(events
            .into_iter()
            .enumerate()
            .map(|(i, event)| wire(e, i, event))
            .collect())
    }
}

/// An error when stored event `e` became more wire events than its sequence numbers allow.
fn check_stride(e: &Event, n: usize) -> Result<(), ApiError> {
    if n as u64 > SEQUENCE_STRIDE {
        return Err(ApiError::Internal(nat_store::StoreError::backend(
            std::io::Error::other(format!(
                "event {} of job {} becomes {n} wire events, more than the {SEQUENCE_STRIDE} \
                 its sequence numbers allow",
                e.seq, e.job_id
            )),
        )));
    }
    Ok(())
}

/// The `index`-th wire event (from 0) of stored event `e`, numbered [`wire_sequence`].
pub fn wire(e: &Event, index: usize, event: v1::job_event::Event) -> v1::JobEvent {
    v1::JobEvent {
        sequence: wire_sequence(e.seq, index),
        job_id: e.job_id.to_string(),
        at_unix_ms: convert::unix_ms(e.created_at),
        event: Some(event),
    }
}

/// `v` when finite.
pub fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|x| x.is_finite())
}
