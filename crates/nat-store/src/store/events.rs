//! [`EventStore`]: the per-job event log.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::error::Result;
use crate::types::*;

/// The per-job event log. The conventions of every method are those of [`Store`](super::Store).
#[async_trait]
pub trait EventStore: Send + Sync {
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
}
