//! [`EventStore`] on SQLite: the per-job event log.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::rows::*;
use super::SqliteStore;
use crate::error::{Entity, Result, StoreError};
use crate::logic::*;
use crate::store::EventStore;
use crate::types::*;

#[async_trait]
impl EventStore for SqliteStore {
    async fn append_event(
        &self,
        job: JobId,
        kind: &str,
        payload: Value,
        now: DateTime<Utc>,
    ) -> Result<Event> {
        validate_text("kind", kind)?;
        let text = json_text("payload", &payload)?;
        let mut tx = self.begin().await?;
        let seq: Option<i64> = sqlx::query_scalar(
            "UPDATE jobs SET event_seq = event_seq + 1 WHERE id = ?1 RETURNING event_seq",
        )
        .bind(job.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(seq) = seq else {
            return Err(StoreError::not_found(Entity::Job, job));
        };
        sqlx::query(
            "INSERT INTO events (job_id, seq, kind, payload, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(job.to_string())
        .bind(seq)
        .bind(kind)
        .bind(text)
        .bind(ts(now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Event {
            job_id: job,
            seq,
            kind: kind.to_string(),
            payload,
            created_at: from_ts("created_at", ts(now))?,
        })
    }

    async fn events_after(&self, job: JobId, after_seq: i64, limit: u32) -> Result<Vec<Event>> {
        let limit = page_limit(limit)?;
        let mut conn = self.reader.acquire().await?;
        let rows = sqlx::query(
            "SELECT job_id, seq, kind, payload, created_at FROM events \
             WHERE job_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )
        .bind(job.to_string())
        .bind(after_seq)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
        if rows.is_empty() {
            let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM jobs WHERE id = ?1")
                .bind(job.to_string())
                .fetch_optional(&mut *conn)
                .await?;
            if exists.is_none() {
                return Err(StoreError::not_found(Entity::Job, job));
            }
        }
        rows.iter().map(event_from_row).collect()
    }
}
