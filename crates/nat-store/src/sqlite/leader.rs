//! [`LeaderStore`] for SQLite. One coordinator serves a database file (it holds an OS lock on
//! it), so the terms are timed by this process's clock; the statements are those of PostgreSQL.

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use super::rows::{get_ts, ts};
use super::SqliteStore;
use crate::error::{Result, StoreError};
use crate::store::{validate_claim, LeaderStore, WorkListener};
use crate::types::*;

const COLS: &str = "name, holder, epoch, acquired_at, renewed_at, expires_at";

fn leadership_from_row(row: &SqliteRow, now: i64) -> Result<Leadership> {
    let expires: i64 = row.try_get("expires_at")?;
    Ok(Leadership {
        name: row.try_get("name")?,
        holder: row.try_get("holder")?,
        epoch: row.try_get("epoch")?,
        acquired_at: get_ts(row, "acquired_at")?,
        renewed_at: get_ts(row, "renewed_at")?,
        expires_at: get_ts(row, "expires_at")?,
        live: expires > now,
    })
}

fn micros(ttl: Duration) -> Result<i64> {
    i64::try_from(ttl.as_micros()).map_err(|_| StoreError::invalid("ttl", "too long"))
}

#[async_trait]
impl LeaderStore for SqliteStore {
    async fn claim_leadership(
        &self,
        name: &str,
        holder: &str,
        held: Option<i64>,
        ttl: Duration,
    ) -> Result<Leadership> {
        validate_claim(name, holder, ttl)?;
        let now = ts(Utc::now());
        let until = now.saturating_add(micros(ttl)?);
        match held {
            Some(epoch) => {
                sqlx::query(
                    "UPDATE leadership SET renewed_at = ?4, expires_at = ?5 \
                     WHERE name = ?1 AND holder = ?2 AND epoch = ?3 AND expires_at > ?4",
                )
                .bind(name)
                .bind(holder)
                .bind(epoch)
                .bind(now)
                .bind(until)
                .execute(&self.writer)
                .await?;
            }
            None => {
                sqlx::query(
                    "INSERT INTO leadership AS l (name, holder, epoch, acquired_at, renewed_at, expires_at) \
                     VALUES (?1, ?2, 1, ?3, ?3, ?4) \
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, epoch = l.epoch + 1, \
                       acquired_at = excluded.acquired_at, renewed_at = excluded.renewed_at, \
                       expires_at = excluded.expires_at \
                     WHERE l.expires_at <= ?3 OR l.holder = excluded.holder",
                )
                .bind(name)
                .bind(holder)
                .bind(now)
                .bind(until)
                .execute(&self.writer)
                .await?;
            }
        }
        // The writer: a reader could lag behind the statement above.
        let row = sqlx::query(&format!("SELECT {COLS} FROM leadership WHERE name = ?1"))
            .bind(name)
            .fetch_one(&self.writer)
            .await?;
        leadership_from_row(&row, now)
    }

    async fn leadership(&self, name: &str) -> Result<Option<Leadership>> {
        let now = ts(Utc::now());
        let row = sqlx::query(&format!("SELECT {COLS} FROM leadership WHERE name = ?1"))
            .bind(name)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref()
            .map(|r| leadership_from_row(r, now))
            .transpose()
    }

    async fn resign_leadership(&self, name: &str, holder: &str, epoch: i64) -> Result<bool> {
        let now = ts(Utc::now());
        let done = sqlx::query(
            "UPDATE leadership SET expires_at = ?4 \
             WHERE name = ?1 AND holder = ?2 AND epoch = ?3 AND expires_at > ?4",
        )
        .bind(name)
        .bind(holder)
        .bind(epoch)
        .bind(now)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(done == 1)
    }

    async fn announce_work(&self, _from: &str) -> Result<()> {
        Ok(())
    }

    async fn work_announcements(&self) -> Result<Option<Box<dyn WorkListener>>> {
        Ok(None)
    }
}
