//! [`JobStore`]: jobs and their tasks (creation, reads, cancel/finish, results).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::error::Result;
use crate::types::*;

/// Jobs and their tasks. The conventions of every method are those of [`Store`](super::Store).
#[async_trait]
pub trait JobStore: Send + Sync {
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
}
