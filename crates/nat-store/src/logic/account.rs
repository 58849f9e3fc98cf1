//! The accounting of a job when its tasks end or change: counters, `all_tasks` completion and
//! the events to append with their sequence numbers. Both backends lock/read the job row
//! ([`JobAccount`]), call into this module, and write back what it decided, inside their
//! transaction. (The PostgreSQL report statements do the same accounting in SQL; see
//! `pg::sql::job_accounting_sql`, which follows [`JobAccount::maybe_complete`].)

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::types::*;

/// The mutable accounting part of a job row, read under lock.
#[derive(Debug, Clone)]
pub(crate) struct JobAccount {
    pub state: JobState,
    pub completion: Completion,
    pub total: i64,
    pub done: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub event_seq: i64,
    pub error: Option<String>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// An event to append, its `seq` already allocated.
#[derive(Debug, Clone)]
pub(crate) struct PendingEvent {
    pub seq: i64,
    pub kind: &'static str,
    pub payload: Value,
}

impl JobAccount {
    /// Allocates the next event seq.
    pub fn event(&mut self, kind: &'static str, payload: Value) -> PendingEvent {
        self.event_seq += 1;
        PendingEvent {
            seq: self.event_seq,
            kind,
            payload,
        }
    }

    /// Counts a task that reached `state` (a final state).
    pub fn count_final(&mut self, state: TaskState) {
        let (done, failed, cancelled) = super::report::final_counts(state);
        self.done += done;
        self.failed += failed;
        self.cancelled += cancelled;
    }

    /// For `all_tasks` jobs that are not final: when every task ended, finishes the job and
    /// returns its `job_finished` event.
    pub fn maybe_complete(&mut self, now: DateTime<Utc>) -> Option<PendingEvent> {
        if self.completion != Completion::AllTasks
            || self.state.is_final()
            || self.done + self.failed + self.cancelled < self.total
        {
            return None;
        }
        if self.done > 0 {
            self.state = JobState::Succeeded;
        } else {
            self.state = JobState::Failed;
            self.error = Some(format!("all {} tasks failed", self.total));
        }
        self.finished_at = Some(now);
        let payload = json!({
            "state": self.state.as_str(),
            "error": self.error,
            "tasks_done": self.done,
            "tasks_failed": self.failed,
        });
        Some(self.event(event_kind::JOB_FINISHED, payload))
    }

    /// A job that is not final ends in `final_state` (cancelled, or finished by its caller):
    /// `withdrawn` ready tasks and unassigned reservations were cancelled with it. Returns its
    /// `job_finished` event.
    pub fn end(
        &mut self,
        final_state: JobState,
        error: Option<String>,
        withdrawn: u64,
        now: DateTime<Utc>,
    ) -> PendingEvent {
        self.cancelled += withdrawn as i64;
        self.state = final_state;
        self.error = error;
        self.finished_at = Some(now);
        let payload = json!({
            "state": final_state.as_str(),
            "error": self.error,
            "tasks_withdrawn": withdrawn,
        });
        self.event(event_kind::JOB_FINISHED, payload)
    }

    /// `cancelled` of the job's open tasks were cancelled one by one (`cancel_tasks`): counts
    /// them and, when that ended an `all_tasks` job, returns its `job_finished` event.
    pub fn tasks_cancelled(&mut self, cancelled: u64, now: DateTime<Utc>) -> Vec<PendingEvent> {
        self.cancelled += cancelled as i64;
        self.maybe_complete(now).into_iter().collect()
    }

    /// `added` tasks were added to the job; returns the `tasks_added` event.
    pub fn add_tasks(&mut self, added: usize) -> PendingEvent {
        self.total += added as i64;
        let payload = json!({ "added": added, "tasks_total": self.total });
        self.event(event_kind::TASKS_ADDED, payload)
    }

    /// The `task_progress` event of a progress report.
    pub fn progress(&mut self, task: TaskId, attempt: i64, progress: &Value) -> PendingEvent {
        let payload = json!({ "task_id": task, "attempt": attempt, "progress": progress });
        self.event(event_kind::TASK_PROGRESS, payload)
    }

    /// Counts the tasks of this job that `expire_leases` moved (each to `ready`, `failed` or
    /// `cancelled`), and returns their events and, when that ended an `all_tasks` job, its
    /// `job_finished` event (last). `finished` tells whether the job finished.
    pub fn expired(
        &mut self,
        tasks: &[ExpiredTask],
        now: DateTime<Utc>,
    ) -> (Vec<PendingEvent>, bool) {
        let mut events = Vec::new();
        for t in tasks {
            self.count_final(t.state);
            if let Some(ev) = task_event(self, t.id, t.attempt, t.state, None, &t.failures) {
                events.push(ev);
            }
        }
        let finished = match self.maybe_complete(now) {
            Some(ev) => {
                events.push(ev);
                true
            }
            None => false,
        };
        (events, finished)
    }
}

/// A task that `expire_leases` moved, as its statement returned it.
#[derive(Debug, Clone)]
pub(crate) struct ExpiredTask {
    pub id: TaskId,
    pub state: TaskState,
    pub attempt: u32,
    pub failures: Vec<FailureRecord>,
}

/// Builds the answer of `expire_leases` from the tasks its statement moved, grouped by job in
/// job id order (the order in which the job rows are then locked).
pub(crate) fn group_expired(
    tasks: Vec<(JobId, ExpiredTask)>,
) -> (
    ExpiryReport,
    std::collections::BTreeMap<JobId, Vec<ExpiredTask>>,
) {
    let mut report = ExpiryReport::default();
    let mut by_job: std::collections::BTreeMap<JobId, Vec<ExpiredTask>> = Default::default();
    for (job, t) in tasks {
        match t.state {
            TaskState::Ready => report.requeued.push(t.id),
            TaskState::Failed => report.failed.push(t.id),
            _ => report.cancelled.push(t.id),
        }
        by_job.entry(job).or_default().push(t);
    }
    (report, by_job)
}

/// The `job_created` event (always `seq` 1).
pub(crate) fn job_created_event(job: &NewJob, tasks: usize) -> PendingEvent {
    PendingEvent {
        seq: 1,
        kind: event_kind::JOB_CREATED,
        payload: json!({ "kind": job.kind, "priority": job.priority, "tasks": tasks }),
    }
}

/// How `finish_job` ends a job: its final state, the result to store (`None`: keep the stored
/// one) and its error.
pub(crate) struct JobEnd {
    pub state: JobState,
    pub result: Option<Option<Value>>,
    pub error: Option<String>,
}

impl JobEnd {
    /// `cancel_job`.
    pub fn cancel() -> Self {
        JobEnd {
            state: JobState::Cancelled,
            result: None,
            error: None,
        }
    }

    /// `finish_job` with `outcome` (a failure needs a valid error text).
    pub fn finish(outcome: JobOutcome) -> crate::error::Result<Self> {
        Ok(match outcome {
            JobOutcome::Succeeded { result } => JobEnd {
                state: JobState::Succeeded,
                result: Some(Some(result)),
                error: None,
            },
            JobOutcome::Failed { error, result } => {
                super::validate_text("error", &error)?;
                JobEnd {
                    state: JobState::Failed,
                    result: result.map(Some),
                    error: Some(error),
                }
            }
        })
    }
}

/// The answer of `set_job_result` once the statement returned the job's state (`None`: no
/// such job): a final job's result is not replaced.
pub(crate) fn set_result_answer(id: JobId, state: Option<JobState>) -> crate::error::Result<()> {
    use crate::error::StoreError;
    match state {
        None => Err(StoreError::not_found(crate::error::Entity::Job, id)),
        Some(s) if s.is_final() => Err(StoreError::FailedPrecondition(format!("job {id} is {s}"))),
        Some(_) => Ok(()),
    }
}

/// The `add_tasks` precondition on the job's locked account (`None`: no such job): the job
/// exists and is not final.
pub(crate) fn job_open_for_tasks(
    job: JobId,
    acc: Option<JobAccount>,
) -> crate::error::Result<JobAccount> {
    use crate::error::StoreError;
    match acc {
        None => Err(StoreError::not_found(crate::error::Entity::Job, job)),
        Some(acc) if acc.state.is_final() => Err(StoreError::FailedPrecondition(format!(
            "job {job} is {}, tasks cannot be added",
            acc.state
        ))),
        Some(acc) => Ok(acc),
    }
}

/// The `cancel_job` / `finish_job` precondition on the job's locked account (`None`: no such
/// job): the job exists and is not final.
pub(crate) fn job_open_to_end(
    id: JobId,
    acc: Option<JobAccount>,
) -> crate::error::Result<JobAccount> {
    use crate::error::StoreError;
    match acc {
        None => Err(StoreError::not_found(crate::error::Entity::Job, id)),
        Some(acc) if acc.state.is_final() => Err(StoreError::FailedPrecondition(format!(
            "job {id} is already {}",
            acc.state
        ))),
        Some(acc) => Ok(acc),
    }
}

/// The kind and payload of the event for a task that reached `state` through a report or an
/// expiry (`None` for states that log no event).
pub(crate) fn task_event_payload(
    task: TaskId,
    attempt: u32,
    state: TaskState,
    result: Option<&Value>,
    failures: &[FailureRecord],
) -> Option<(&'static str, Value)> {
    match state {
        TaskState::Done => Some((
            event_kind::TASK_SUCCEEDED,
            json!({ "task_id": task, "attempt": attempt, "result": result }),
        )),
        TaskState::Ready => Some((
            event_kind::TASK_RETRY,
            json!({
                "task_id": task,
                "attempt": attempt,
                "reason": failures.last().map(|f| f.to_string()),
            }),
        )),
        TaskState::Failed => Some((
            event_kind::TASK_FAILED,
            json!({
                "task_id": task,
                "attempt": attempt,
                "reasons": failures.iter().map(|f| f.to_string()).collect::<Vec<_>>(),
            }),
        )),
        TaskState::Cancelled | TaskState::Leased => None,
    }
}

/// [`task_event_payload`] with its `seq` allocated from `account`.
pub(crate) fn task_event(
    account: &mut JobAccount,
    task: TaskId,
    attempt: u32,
    state: TaskState,
    result: Option<&Value>,
    failures: &[FailureRecord],
) -> Option<PendingEvent> {
    task_event_payload(task, attempt, state, result, failures)
        .map(|(kind, payload)| account.event(kind, payload))
}

/// Builds the heartbeat answer: the worker must stop every task it reported holding that is not
/// among the extended leases (same token), and every leased task of a cancelled job.
pub(crate) fn heartbeat_ack(
    held: &[HeldLease],
    extended: Vec<(TaskId, i64)>,
    cancelled: Vec<TaskId>,
    expires: DateTime<Utc>,
) -> HeartbeatAck {
    let mut stop: Vec<TaskId> = held
        .iter()
        .filter(|h| !extended.contains(&(h.task_id, h.token)))
        .map(|h| h.task_id)
        .collect();
    for id in cancelled {
        if !stop.contains(&id) {
            stop.push(id);
        }
    }
    HeartbeatAck {
        extended: extended.into_iter().map(|(id, _)| id).collect(),
        stop,
        lease_expires_at: expires,
    }
}
