//! The one decision of a report, shared by every report path (PostgreSQL's one-statement path,
//! its in-transaction path and its batch path, and SQLite): the backend reads the task's lease
//! state ([`LeaseRow`]), [`decide_report`] checks the lease and decides the transition, and the
//! backend writes what it decided.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::account::task_event_payload;
use crate::error::{Result, StoreError};
use crate::types::*;

/// The lease state of a task as a report reads it: the task row joined to its job's state.
#[derive(Debug, Clone)]
pub(crate) struct LeaseRow {
    pub job_id: JobId,
    pub state: TaskState,
    pub attempt: u32,
    pub max_attempts: u32,
    pub lease_token: i64,
    pub leased_by: Option<WorkerId>,
    /// The token of the last accepted report of the task.
    pub reported_token: Option<i64>,
    pub failures: Vec<FailureRecord>,
    pub job_state: JobState,
}

/// What a report does, decided by [`decide_report`]. A stale or foreign lease is its error.
#[derive(Debug, Clone)]
pub(crate) enum ReportVerdict {
    /// The same report (token and worker) was already applied: answer
    /// [`ReportAck::Duplicate`] and change nothing.
    Duplicate,
    /// Apply this transition.
    Apply(Transition),
}

/// The transition of an accepted report: `done`, `failed`, `ready` (a retryable failure with
/// attempts left: requeued) or `cancelled` (the job is final).
#[derive(Debug, Clone)]
pub(crate) struct Transition {
    pub job_id: JobId,
    pub new_state: TaskState,
    /// The failure to append to the task's `failures` (a failed attempt).
    pub failure: Option<FailureRecord>,
    /// The task's `failures` after the report (the stored ones plus `failure`).
    pub failures: Vec<FailureRecord>,
    /// The task's new `result`.
    pub result: Option<Value>,
    /// The task's event (kind, payload), its `seq` still to allocate.
    pub event: Option<(&'static str, Value)>,
}

impl Transition {
    /// True when the task goes back to the queue (claimable at once).
    pub fn requeue(&self) -> bool {
        self.new_state == TaskState::Ready
    }

    /// The changes of the job's (done, failed, cancelled) counters.
    pub fn counts(&self) -> (i64, i64, i64) {
        final_counts(self.new_state)
    }

    /// The reward observations the report folds into the estimates: those of a success, when
    /// the task is done (a report that cancels its task counts none).
    pub fn rewards<'a>(&self, outcome: &'a Outcome) -> &'a [RewardObservation] {
        match (self.new_state, outcome) {
            (TaskState::Done, Outcome::Succeeded { rewards, .. }) => rewards,
            _ => &[],
        }
    }

    /// The sample rewards the report sets, when the task is done.
    pub fn sample_rewards<'a>(&self, outcome: &'a Outcome) -> &'a [SampleReward] {
        match (self.new_state, outcome) {
            (TaskState::Done, Outcome::Succeeded { sample_rewards, .. }) => sample_rewards,
            _ => &[],
        }
    }

    /// The answer once the job part is applied and the job is in `job_state`.
    pub fn ack(&self, job_state: JobState) -> ReportAck {
        ReportAck::Accepted {
            job_id: self.job_id,
            task_state: self.new_state,
            job_state,
        }
    }
}

/// The change of a job's (done, failed, cancelled) counters when one of its tasks reaches
/// `state`.
pub(crate) fn final_counts(state: TaskState) -> (i64, i64, i64) {
    match state {
        TaskState::Done => (1, 0, 0),
        TaskState::Failed => (0, 1, 0),
        TaskState::Cancelled => (0, 0, 1),
        TaskState::Ready | TaskState::Leased => (0, 0, 0),
    }
}

/// Decides the report of (`token`, `worker`) on `task`, whose lease state is `row`:
/// - a token that is not the task's current one, a foreign worker, or a task that is no longer
///   leased (and whose last accepted report was not this one) is stale: `FailedPrecondition`;
/// - the report that was already accepted (same token, from its worker) is a duplicate;
/// - otherwise the task ends `cancelled` if its job is final (the report's outcome is
///   discarded: no result, no failure, no reward, no event), else `done` for a success,
///   `ready` (requeued) for a retryable failure with attempts left, `failed` otherwise.
///
/// An unassigned reservation (no worker yet) accepts the report of any worker holding its
/// token (the writes record that worker).
pub(crate) fn decide_report(
    task: TaskId,
    row: LeaseRow,
    token: i64,
    worker: WorkerId,
    outcome: &Outcome,
    now: DateTime<Utc>,
) -> Result<ReportVerdict> {
    check_lease(
        task,
        row.state,
        row.lease_token,
        row.leased_by,
        row.reported_token,
        token,
        worker,
    )?;
    if row.reported_token == Some(token) && row.leased_by == Some(worker) {
        return Ok(ReportVerdict::Duplicate);
    }
    let (new_state, failure, result) = transition(
        row.job_state,
        row.attempt,
        row.max_attempts,
        worker,
        outcome,
        now,
    );
    let mut failures = row.failures;
    if let Some(f) = &failure {
        failures.push(f.clone());
    }
    let event = task_event_payload(task, row.attempt, new_state, result.as_ref(), &failures);
    Ok(ReportVerdict::Apply(Transition {
        job_id: row.job_id,
        new_state,
        failure,
        failures,
        result,
        event,
    }))
}

/// The new state of a task, the failure to record and its new result, for `outcome`.
fn transition(
    job_state: JobState,
    attempt: u32,
    max_attempts: u32,
    worker: WorkerId,
    outcome: &Outcome,
    now: DateTime<Utc>,
) -> (TaskState, Option<FailureRecord>, Option<Value>) {
    if job_state.is_final() {
        // The job ended without this task: the report is discarded. The task ends cancelled
        // (counted once, by this report) with neither a result nor a failure, and folds no
        // reward ([`Transition::rewards`]).
        return (TaskState::Cancelled, None, None);
    }
    match outcome {
        Outcome::Succeeded { result, .. } => (TaskState::Done, None, Some(result.clone())),
        Outcome::Failed { reason, retryable } => {
            let state = if *retryable && attempt < max_attempts {
                TaskState::Ready
            } else {
                TaskState::Failed
            };
            let failure = FailureRecord {
                attempt,
                worker: Some(worker),
                reason: if reason.trim().is_empty() {
                    "failed without a reason".to_string()
                } else {
                    reason.clone()
                },
                at: now,
            };
            (state, Some(failure), None)
        }
    }
}

/// Checks that (`token`, `worker`) is the current lease of a task (or, when `reported` equals
/// `token`, an already applied report of that lease, which the caller answers as duplicate).
pub(crate) fn check_lease(
    task: TaskId,
    state: TaskState,
    lease_token: i64,
    leased_by: Option<WorkerId>,
    reported: Option<i64>,
    token: i64,
    worker: WorkerId,
) -> Result<()> {
    // An unassigned reservation (no worker yet) belongs to whoever holds its token.
    let holder_ok = match leased_by {
        Some(w) => w == worker,
        None => state == TaskState::Leased,
    };
    if !holder_ok || lease_token != token {
        return Err(StoreError::FailedPrecondition(format!(
            "lease token {token} of task {task} is stale or held by another worker"
        )));
    }
    if reported == Some(token) {
        return Ok(());
    }
    if state != TaskState::Leased {
        return Err(StoreError::FailedPrecondition(format!(
            "task {task} is {state}, its lease {token} is no longer valid"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(state: TaskState, leased_by: Option<WorkerId>, reported: Option<i64>) -> LeaseRow {
        LeaseRow {
            job_id: JobId::new(),
            state,
            attempt: 1,
            max_attempts: 2,
            lease_token: 7,
            leased_by,
            reported_token: reported,
            failures: vec![],
            job_state: JobState::Running,
        }
    }

    fn failed(retryable: bool) -> Outcome {
        Outcome::Failed {
            reason: String::new(),
            retryable,
        }
    }

    fn ok() -> Outcome {
        Outcome::Succeeded {
            result: json!({"ok": true}),
            rewards: vec![],
            sample_rewards: vec![],
        }
    }

    fn apply(v: Result<ReportVerdict>) -> Transition {
        match v {
            Ok(ReportVerdict::Apply(t)) => t,
            other => panic!("expected a transition, got {other:?}"),
        }
    }

    #[test]
    fn decides_every_transition() {
        let (task, w, now) = (TaskId::new(), WorkerId::new(), Utc::now());
        let leased = row(TaskState::Leased, Some(w), None);
        let t = apply(decide_report(task, leased.clone(), 7, w, &ok(), now));
        assert_eq!((t.new_state, t.counts()), (TaskState::Done, (1, 0, 0)));
        assert_eq!(t.event.map(|e| e.0), Some(event_kind::TASK_SUCCEEDED));
        let t = apply(decide_report(
            task,
            leased.clone(),
            7,
            w,
            &failed(true),
            now,
        ));
        assert!(t.requeue());
        assert_eq!(t.failures.len(), 1);
        assert_eq!(t.failures[0].reason, "failed without a reason");
        let t = apply(decide_report(
            task,
            leased.clone(),
            7,
            w,
            &failed(false),
            now,
        ));
        assert_eq!((t.new_state, t.counts()), (TaskState::Failed, (0, 1, 0)));
        let last = LeaseRow {
            attempt: 2,
            ..leased.clone()
        };
        let t = apply(decide_report(task, last, 7, w, &failed(true), now));
        assert_eq!(t.new_state, TaskState::Failed);
        let cancelled = LeaseRow {
            job_state: JobState::Cancelled,
            ..leased.clone()
        };
        let t = apply(decide_report(task, cancelled.clone(), 7, w, &ok(), now));
        assert_eq!(
            (t.new_state, t.event.is_none()),
            (TaskState::Cancelled, true)
        );
        assert_eq!(t.counts(), (0, 0, 1));
        assert!(t.rewards(&ok()).is_empty());
        assert!(t.result.is_none(), "a discarded report keeps no result");
        let t = apply(decide_report(task, cancelled, 7, w, &failed(false), now));
        assert_eq!(t.new_state, TaskState::Cancelled);
        assert!(t.failure.is_none() && t.failures.is_empty() && t.result.is_none());
        // A reservation takes the report of whoever holds its token.
        let reserved = row(TaskState::Leased, None, None);
        let t = apply(decide_report(task, reserved, 7, w, &ok(), now));
        assert_eq!(t.new_state, TaskState::Done);
    }

    #[test]
    fn refuses_stale_and_answers_duplicates() {
        let (task, w, now) = (TaskId::new(), WorkerId::new(), Utc::now());
        let leased = row(TaskState::Leased, Some(w), None);
        for (r, token, worker) in [
            (leased.clone(), 6, w),
            (leased.clone(), 7, WorkerId::new()),
            (row(TaskState::Ready, None, None), 7, w),
            (row(TaskState::Done, Some(w), Some(6)), 7, w),
        ] {
            assert!(matches!(
                decide_report(task, r, token, worker, &ok(), now),
                Err(StoreError::FailedPrecondition(_))
            ));
        }
        let done = row(TaskState::Done, Some(w), Some(7));
        assert!(matches!(
            decide_report(task, done, 7, w, &failed(true), now),
            Ok(ReportVerdict::Duplicate)
        ));
    }

    /// Welford update of (count, mean, m2) with `x`, as the SQLite upsert computes it.
    fn welford(count: u64, mean: f64, m2: f64, x: f64) -> (u64, f64, f64) {
        let n = count + 1;
        let delta = x - mean;
        let mean2 = mean + delta / n as f64;
        (n, mean2, m2 + delta * (x - mean2))
    }

    /// The merge of two estimates as the PostgreSQL upsert fragment computes it (Chan's
    /// parallel update, in the form `m2_a + m2_b + d * n_b * (mean_b - mean')`).
    fn merge(a: (u64, f64, f64), b: (u64, f64, f64)) -> (u64, f64, f64) {
        let n = a.0 + b.0;
        let d = b.1 - a.1;
        let mean = a.1 + d * b.0 as f64 / n as f64;
        (n, mean, a.2 + b.2 + d * b.0 as f64 * (b.1 - mean))
    }

    #[test]
    fn welford_matches_two_pass() {
        let xs = [0.5, 0.75, 0.25, 0.9, 0.6];
        let (mut n, mut mean, mut m2) = (0, 0.0, 0.0);
        for x in xs {
            (n, mean, m2) = welford(n, mean, m2, x);
        }
        let m: f64 = xs.iter().sum::<f64>() / xs.len() as f64;
        let ss: f64 = xs.iter().map(|x| (x - m) * (x - m)).sum();
        assert_eq!(n, 5);
        assert!((mean - m).abs() < 1e-12);
        assert!((m2 - ss).abs() < 1e-12);
    }

    /// Merging one observation is bit for bit the sequential update, so the one PostgreSQL
    /// fragment serves the single, the one-statement and the batch report paths unchanged.
    #[test]
    fn merging_one_observation_is_the_sequential_update() {
        let mut state = (0u64, 0.0f64, 0.0f64);
        let mut x = 0.37f64;
        for _ in 0..10_000 {
            x = (x * 7.13 + 0.291).fract() * 3.0 - 1.0;
            let seq = if state.0 == 0 {
                (1, x, 0.0)
            } else {
                welford(state.0, state.1, state.2, x)
            };
            let merged = if state.0 == 0 {
                (1, x, 0.0)
            } else {
                merge(state, (1, x, 0.0))
            };
            assert_eq!(seq.0, merged.0);
            assert_eq!(seq.1.to_bits(), merged.1.to_bits());
            assert_eq!(seq.2.to_bits(), merged.2.to_bits());
            state = seq;
        }
        // Merging a folded batch equals the sequential updates (up to rounding).
        let xs = [0.1, 0.9, 0.35, 0.35, 0.7];
        let folded = xs
            .iter()
            .fold((0u64, 0.0, 0.0), |s, &x| welford(s.0, s.1, s.2, x));
        let merged = merge(state, folded);
        let sequential = xs.iter().fold(state, |s, &x| welford(s.0, s.1, s.2, x));
        assert_eq!(merged.0, sequential.0);
        assert!((merged.1 - sequential.1).abs() < 1e-12);
        assert!((merged.2 - sequential.2).abs() < 1e-9 * sequential.2.max(1.0));
    }
}
