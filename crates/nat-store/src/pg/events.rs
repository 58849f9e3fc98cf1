//! [`EventStore`] on PostgreSQL: the per-job event log.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;

use super::rows::event_from_row;
use super::PgStore;
use crate::error::{Entity, Result, StoreError};
use crate::logic::*;
use crate::store::EventStore;
use crate::types::*;

#[async_trait]
impl EventStore for PgStore {
    async fn append_event(
        &self,
        job: JobId,
        kind: &str,
        payload: Value,
        now: DateTime<Utc>,
    ) -> Result<Event> {
        validate_text("kind", kind)?;
        let row = sqlx::query(
            "WITH s AS (UPDATE jobs SET event_seq = event_seq + 1 WHERE id = $1 RETURNING id, event_seq) \
             INSERT INTO events (job_id, seq, kind, payload, created_at) \
             SELECT s.id, s.event_seq, $2, $3, $4 FROM s \
             RETURNING job_id, seq, kind, payload, created_at",
        )
        .bind(job)
        .bind(kind)
        .bind(Json(&payload))
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => event_from_row(&row),
            None => Err(StoreError::not_found(Entity::Job, job)),
        }
    }

    async fn events_after(&self, job: JobId, after_seq: i64, limit: u32) -> Result<Vec<Event>> {
        let limit = page_limit(limit)?;
        let rows = sqlx::query(
            "SELECT job_id, seq, kind, payload, created_at FROM events \
             WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(job)
        .bind(after_seq)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM jobs WHERE id = $1")
                .bind(job)
                .fetch_optional(&self.pool)
                .await?;
            if exists.is_none() {
                return Err(StoreError::not_found(Entity::Job, job));
            }
        }
        rows.iter().map(event_from_row).collect()
    }
}
