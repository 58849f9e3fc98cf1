//! The [`Store`] trait: every durable operation of the coordinator.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::error::{Result, StoreError};
use crate::types::*;

/// Durable state of the orchestrator. Object safe: the coordinator holds `Arc<dyn Store>`.
///
/// Conventions shared by every method:
/// - Time is never read from the clock: methods that depend on it take `now`, so tests drive a
///   paused clock.
/// - Every state transition is one database transaction: either all its effects (task and job
///   state, counters, reward estimates, sample rewards, events) are durable or none is.
/// - Errors: [`StoreError::NotFound`] for unknown ids,
///   [`StoreError::FailedPrecondition`] for wrong states
///   and stale/foreign lease tokens, [`StoreError::InvalidArgument`]
///   naming the field, [`StoreError::Conflict`] for lost optimistic
///   races. In all these cases nothing was changed.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which backend this is: `"postgres"` or `"sqlite"`.
    fn backend(&self) -> &'static str;

    // ----- jobs -------------------------------------------------------------------------------

    /// Creates a job (state `queued`) with its initial tasks (state `ready`) and a
    /// `job_created` event, in one transaction. A job with no task is allowed only with
    /// [`Completion::Manual`] (an `all_tasks` job with zero tasks could never finish).
    async fn create_job(&self, job: NewJob, tasks: Vec<NewTask>, now: DateTime<Utc>)
        -> Result<Job>;

    /// Reads a job.
    async fn get_job(&self, id: JobId) -> Result<Job>;

    /// Lists jobs, newest first.
    async fn list_jobs(&self, filter: JobFilter) -> Result<Vec<Job>>;

    /// Adds tasks to a job that is not final (phased jobs such as `optimize`), with a
    /// `tasks_added` event. Returns the new task ids in order.
    async fn add_tasks(
        &self,
        job: JobId,
        tasks: Vec<NewTask>,
        now: DateTime<Utc>,
    ) -> Result<Vec<TaskId>>;

    /// Cancels a job: its `ready` tasks and unassigned reservations become `cancelled`, its
    /// `leased` tasks stay leased (the heartbeat tells their workers to stop; their reports or
    /// expiry cancel them), the job
    /// becomes `cancelled` with a `job_finished` event. Cancelling a final job is
    /// `FailedPrecondition`.
    async fn cancel_job(&self, id: JobId, now: DateTime<Utc>) -> Result<Job>;

    /// Finishes a [`Completion::Manual`] job (or any non-final job) with an outcome and a
    /// `job_finished` event; its `ready` tasks and unassigned reservations are cancelled. A final job is `FailedPrecondition`.
    async fn finish_job(&self, id: JobId, outcome: JobOutcome, now: DateTime<Utc>) -> Result<Job>;

    /// Replaces the result document of a non-final job (intermediate results of phased jobs).
    async fn set_job_result(&self, id: JobId, result: Value, now: DateTime<Utc>) -> Result<()>;

    // ----- tasks ------------------------------------------------------------------------------

    /// Reads a task.
    async fn get_task(&self, id: TaskId) -> Result<Task>;

    /// Lists the tasks of a job in creation order, optionally only those in `state`.
    async fn list_tasks(
        &self,
        job: JobId,
        state: Option<TaskState>,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<Task>>;

    // ----- workers and leases -----------------------------------------------------------------

    /// Registers a worker (state `active`, heartbeat = `now`) and returns it with its new id.
    async fn register_worker(
        &self,
        name: &str,
        capabilities: Capabilities,
        now: DateTime<Utc>,
    ) -> Result<Worker>;

    /// Reads a worker.
    async fn get_worker(&self, id: WorkerId) -> Result<Worker>;

    /// Lists workers, most recently registered first.
    async fn list_workers(&self) -> Result<Vec<Worker>>;

    /// Marks `active` workers whose last heartbeat is older than `cutoff` as `lost`; returns them.
    async fn mark_lost_workers(&self, cutoff: DateTime<Utc>) -> Result<Vec<WorkerId>>;

    /// Records a heartbeat: sets the worker `active`, extends the leases of `held` that it still
    /// holds (same task and token) on tasks of non-cancelled jobs to `now + lease_duration`, and
    /// returns the tasks it must stop: those of `held` it no longer holds (token superseded, task
    /// final or re-leased) and those whose job was cancelled. An unassigned reservation listed
    /// with its token is extended and recorded as this worker's. A lease the worker does not list
    /// (its LeaseTask response was lost) is not extended, so it expires and the task is re-queued.
    async fn heartbeat(
        &self,
        worker: WorkerId,
        held: &[HeldLease],
        now: DateTime<Utc>,
        lease_duration: Duration,
    ) -> Result<HeartbeatAck>;

    /// Claims one task for `worker` in a single statement: a `ready` task, or a `leased` task
    /// whose lease expired before `now` and that has attempts left (its expired attempt is
    /// recorded in `failures`). Only tasks of non-final jobs whose requirements `capabilities`
    /// satisfy. Order: higher job priority first, then the least recently served job (round
    /// robin), then task creation order. Increments `attempt`, issues a new fencing token,
    /// sets the expiry to `now + lease_duration`, updates the job's `last_served_at` and moves it
    /// from `queued` to `running`. `None` when nothing matches.
    async fn lease_task(
        &self,
        worker: WorkerId,
        capabilities: &Capabilities,
        now: DateTime<Utc>,
        lease_duration: Duration,
    ) -> Result<Option<Lease>>;

    /// Collects leases that expired before `now`: the task returns to `ready` (failure
    /// "lease expired on worker W at T" recorded) or, when its attempts are exhausted, becomes
    /// `failed` with all recorded reasons; leased tasks of cancelled jobs become `cancelled`.
    /// Job counters, events and `all_tasks` completion are updated in the same transaction.
    async fn expire_leases(&self, now: DateTime<Utc>) -> Result<ExpiryReport>;

    /// Applies a worker's report for the lease (`task`, `token`, `worker`). A token that is not
    /// the task's current one, a foreign worker, or a task not leased is `FailedPrecondition`
    /// and changes nothing; the same report again is [`ReportAck::Duplicate`] and changes
    /// nothing. In one transaction: the task state (a retryable failure with attempts left
    /// requeues it), the job counters, reward-estimate upserts, sample rewards, an event, and
    /// for [`Completion::AllTasks`] jobs the job's completion when its last task ends. A report
    /// on a task of a cancelled job is accepted and cancels the task.
    async fn report_result(
        &self,
        task: TaskId,
        token: i64,
        worker: WorkerId,
        outcome: Outcome,
        now: DateTime<Utc>,
    ) -> Result<ReportAck>;

    /// Claims tasks for several worker slots at once, in ONE transaction (one commit for the
    /// batch): element `i` of the answer is the lease of `requests[i]` (`None`: nothing it can
    /// run is claimable). Slots are served as [`Store::lease_task`] serves them (priority,
    /// round robin, creation order, requirements), slots with equal capabilities in request
    /// order; PostgreSQL claims all slots of equal capabilities in one statement, and the job
    /// marked served once per batch (round robin between batches). Concurrent batches never
    /// hand a task out twice and never come back short while claimable tasks they can run are
    /// unclaimed. At most `limits::MAX_BATCH` requests.
    ///
    /// A request without a worker is a *reservation*: the task is leased (attempt, new token,
    /// expiry) with no worker recorded; [`Store::assign_leases`] records the worker it is
    /// handed to, [`Store::release_leases`] returns it unused. Until assigned, a report or a
    /// heartbeat carrying its token is accepted from any worker and records that worker.
    async fn lease_tasks(
        &self,
        requests: &[LeaseRequest],
        now: DateTime<Utc>,
        lease_duration: Duration,
    ) -> Result<Vec<Option<Lease>>>;

    /// Records the workers that reserved leases were handed to, in one statement: each
    /// reservation still current (leased, same token, no worker yet) gets its worker and the
    /// expiry told to that worker. Returns how many were recorded; the others (already
    /// reported, or claimed by the worker's heartbeat or report first, or released) are left
    /// alone. Never waits for a row lock: a reservation being reported or heartbeaten right
    /// now is skipped (that report or heartbeat records the worker).
    async fn assign_leases(
        &self,
        assignments: &[LeaseAssignment],
        now: DateTime<Utc>,
    ) -> Result<u64>;

    /// Returns unused reservations to the queue, in one statement: each one still current
    /// (leased, same token, no worker) becomes `ready` again with its attempt given back (its
    /// token stays spent, so a copy handed out meanwhile can never report). Returns how many.
    async fn release_leases(&self, leases: &[HeldLease], now: DateTime<Utc>) -> Result<u64>;

    /// Returns every reservation that no worker holds yet to the queue (what
    /// [`Store::release_leases`] does, for all of them). Run at coordinator start: reservations
    /// of a process that died were never handed out, or only just (their workers' reports are
    /// then refused as stale and the task runs again).
    async fn release_unassigned_leases(&self, now: DateTime<Utc>) -> Result<u64>;

    /// Applies several reports, in ONE transaction where the backend allows it (one commit for
    /// the batch). Element `i` of the answer is what [`Store::report_result`] would have
    /// answered for `items[i]`: a rejected item (stale token, duplicate, bad input) does not
    /// affect the others; the same report twice in one batch is applied once (the second is
    /// `Duplicate`). An accepted item's `job_state` is the job's state after the batch. The
    /// outer error means the batch failed (backend failure). At most `limits::MAX_BATCH` items.
    async fn report_results(
        &self,
        items: Vec<ReportItem>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<ReportAck>>> {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            match self
                .report_result(item.task, item.token, item.worker, item.outcome, now)
                .await
            {
                Err(StoreError::Backend(e)) => return Err(StoreError::Backend(e)),
                other => out.push(other),
            }
        }
        Ok(out)
    }

    /// Stores the progress document of a long task and appends a `task_progress` event.
    /// The lease (`task`, `token`, `worker`) must be current, else `FailedPrecondition`.
    async fn report_progress(
        &self,
        task: TaskId,
        token: i64,
        worker: WorkerId,
        progress: Value,
        now: DateTime<Utc>,
    ) -> Result<()>;

    // ----- events -----------------------------------------------------------------------------

    /// Appends an event to a job's log; returns it with its `seq`.
    async fn append_event(
        &self,
        job: JobId,
        kind: &str,
        payload: Value,
        now: DateTime<Utc>,
    ) -> Result<Event>;

    /// Events of `job` with `seq > after_seq`, in order, at most `limit` (1..=10 000).
    /// `NotFound` if the job does not exist.
    async fn events_after(&self, job: JobId, after_seq: i64, limit: u32) -> Result<Vec<Event>>;

    // ----- reward estimates -------------------------------------------------------------------

    /// Folds one observation into the estimate of its key (Welford update, upsert) and returns
    /// the updated estimate.
    async fn record_reward(
        &self,
        observation: RewardObservation,
        now: DateTime<Utc>,
    ) -> Result<RewardEstimate>;

    /// Reads the estimate of a key.
    async fn reward_estimate(&self, key: &RewardKey) -> Result<Option<RewardEstimate>>;

    // ----- policies ---------------------------------------------------------------------------

    /// Stores a checkpoint without consuming samples (a new policy's version 1, or a manual
    /// save). The version must be latest + 1, else `Conflict`.
    async fn save_checkpoint(&self, checkpoint: NewCheckpoint, now: DateTime<Utc>) -> Result<()>;

    /// The latest checkpoint of a policy, `NotFound` if none.
    async fn latest_checkpoint(&self, policy_id: &str) -> Result<PolicyCheckpoint>;

    /// A given version of a policy, `NotFound` if absent.
    async fn checkpoint(&self, policy_id: &str, version: i64) -> Result<PolicyCheckpoint>;

    /// Every policy, latest version each, by id.
    async fn list_policies(&self) -> Result<Vec<PolicySummary>>;

    /// Stores sampled transformations; returns their ids in order.
    async fn insert_samples(
        &self,
        samples: Vec<NewPolicySample>,
        now: DateTime<Utc>,
    ) -> Result<Vec<SampleId>>;

    /// Sets the reward of a sample if it has none; returns false (and changes nothing) if it
    /// already had one. Idempotent.
    async fn set_sample_reward(&self, sample: SampleId, reward: f64) -> Result<bool>;

    /// Reads a sample.
    async fn get_sample(&self, sample: SampleId) -> Result<PolicySample>;

    /// Samples of `policy_id` that have a reward and were not consumed yet, oldest first, at
    /// most `limit`. Reads only: consumption happens in [`Store::commit_policy_update`].
    async fn take_unconsumed_rewards(
        &self,
        policy_id: &str,
        limit: u32,
    ) -> Result<Vec<PolicySample>>;

    /// In one transaction: stores `checkpoint` (its version must be latest + 1, else
    /// `Conflict`) and marks `consumed` (used by the update) and `dropped` (too stale, discarded)
    /// samples as consumed in that version. Every listed sample must belong to the policy, have
    /// a reward and be unconsumed, else `Conflict` and nothing changes. Hence each reward moves
    /// the policy exactly once, across crashes and concurrent updaters.
    async fn commit_policy_update(
        &self,
        checkpoint: NewCheckpoint,
        consumed: &[SampleId],
        dropped: &[SampleId],
        now: DateTime<Utc>,
    ) -> Result<()>;
}
