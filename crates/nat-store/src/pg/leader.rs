//! [`LeaderStore`] for PostgreSQL: one row per leadership, timed by `clock_timestamp()`.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgListener, PgRow};
use sqlx::Row;

use super::PgStore;
use crate::error::Result;
use crate::store::{validate_claim, LeaderStore, WorkListener, WORK_CHANNEL};
use crate::types::*;

const COLS: &str = "name, holder, epoch, acquired_at, renewed_at, expires_at, \
    expires_at > clock_timestamp() AS live";

fn leadership_from_row(row: &PgRow) -> Result<Leadership> {
    Ok(Leadership {
        name: row.try_get("name")?,
        holder: row.try_get("holder")?,
        epoch: row.try_get("epoch")?,
        acquired_at: row.try_get("acquired_at")?,
        renewed_at: row.try_get("renewed_at")?,
        expires_at: row.try_get("expires_at")?,
        live: row.try_get("live")?,
    })
}

fn millis(ttl: Duration) -> f64 {
    ttl.as_secs_f64() * 1000.0
}

#[async_trait]
impl LeaderStore for PgStore {
    async fn claim_leadership(
        &self,
        name: &str,
        holder: &str,
        held: Option<i64>,
        ttl: Duration,
    ) -> Result<Leadership> {
        validate_claim(name, holder, ttl)?;
        match held {
            Some(epoch) => {
                sqlx::query(
                    "UPDATE leadership SET renewed_at = clock_timestamp(), \
                       expires_at = clock_timestamp() + $4 * interval '1 millisecond' \
                     WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > clock_timestamp()",
                )
                .bind(name)
                .bind(holder)
                .bind(epoch)
                .bind(millis(ttl))
                .execute(&self.control)
                .await?;
            }
            None => {
                // A takeover waits for a policy update of the old term that holds the row
                // `FOR SHARE` (see `commit_policy_update`), so that update commits in its term.
                sqlx::query(
                    "INSERT INTO leadership AS l (name, holder, epoch, acquired_at, renewed_at, expires_at) \
                     VALUES ($1, $2, 1, clock_timestamp(), clock_timestamp(), \
                       clock_timestamp() + $3 * interval '1 millisecond') \
                     ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, epoch = l.epoch + 1, \
                       acquired_at = EXCLUDED.acquired_at, renewed_at = EXCLUDED.renewed_at, \
                       expires_at = EXCLUDED.expires_at \
                     WHERE l.expires_at <= clock_timestamp() OR l.holder = EXCLUDED.holder",
                )
                .bind(name)
                .bind(holder)
                .bind(millis(ttl))
                .execute(&self.control)
                .await?;
            }
        }
        let row = sqlx::query(&format!("SELECT {COLS} FROM leadership WHERE name = $1"))
            .bind(name)
            .fetch_one(&self.control)
            .await?;
        leadership_from_row(&row)
    }

    async fn leadership(&self, name: &str) -> Result<Option<Leadership>> {
        let row = sqlx::query(&format!("SELECT {COLS} FROM leadership WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.control)
            .await?;
        row.as_ref().map(leadership_from_row).transpose()
    }

    async fn resign_leadership(&self, name: &str, holder: &str, epoch: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE leadership SET expires_at = clock_timestamp() \
             WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > clock_timestamp()",
        )
        .bind(name)
        .bind(holder)
        .bind(epoch)
        .execute(&self.control)
        .await?
        .rows_affected();
        Ok(done == 1)
    }

    async fn announce_work(&self, from: &str) -> Result<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(WORK_CHANNEL)
            .bind(from)
            .execute(&self.control)
            .await?;
        Ok(())
    }

    async fn work_announcements(&self) -> Result<Option<Box<dyn WorkListener>>> {
        let mut listener = PgListener::connect_with(&self.control).await?;
        listener.listen(WORK_CHANNEL).await?;
        Ok(Some(Box::new(PgWorkListener(listener))))
    }
}

/// A `LISTEN` connection of its own (taken from the control pool for good).
struct PgWorkListener(PgListener);

#[async_trait]
impl WorkListener for PgWorkListener {
    async fn next(&mut self) -> Result<Option<String>> {
        Ok(self.0.try_recv().await?.map(|n| n.payload().to_string()))
    }
}
