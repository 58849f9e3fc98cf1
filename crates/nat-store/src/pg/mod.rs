//! PostgreSQL backend: [`PgStore`]. One file per concern: [`rows`] (row decoders), [`sql`]
//! (the shared and hot-path statements), `jobs`, `leases`, `reports`, `events`, `policy` (the
//! trait implementations and their helpers).

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::error::{Result, StoreError};
use crate::store::Store;

mod events;
mod jobs;
mod leases;
mod policy;
mod reports;
mod rows;
mod sql;

const NAME: &str = "postgres";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// The PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url` (`postgres://…`) and runs the migrations. The pool size defaults to
    /// [`PgStore::DEFAULT_MAX_CONNECTIONS`] and can be set with a `max_connections=N` URL query
    /// parameter (removed before the URL reaches the driver).
    pub async fn connect(url: &str) -> Result<Self> {
        let (url, max) = split_max_connections(url)?;
        Self::connect_with_pool_size(&url, max.unwrap_or(Self::DEFAULT_MAX_CONNECTIONS)).await
    }

    /// Default pool size.
    pub const DEFAULT_MAX_CONNECTIONS: u32 = 32;

    /// Connects with a pool of at most `max_connections` connections (1..=1000).
    pub async fn connect_with_pool_size(url: &str, max_connections: u32) -> Result<Self> {
        if !(1..=1000).contains(&max_connections) {
            return Err(StoreError::invalid(
                "max_connections",
                "must be in 1..=1000",
            ));
        }
        let options: PgConnectOptions = url
            .parse()
            .map_err(|_| StoreError::invalid("database_url", "not a valid PostgreSQL URL"))?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        Self::from_pool(pool).await
    }

    /// Uses an existing pool and runs the migrations.
    pub async fn from_pool(pool: PgPool) -> Result<Self> {
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }

    /// The underlying pool (for tests and benchmarks).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Removes a `max_connections=N` query parameter from a PostgreSQL URL.
fn split_max_connections(url: &str) -> Result<(String, Option<u32>)> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), None));
    };
    let mut max = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("max_connections", v)) => {
                max = Some(v.parse::<u32>().map_err(|_| {
                    StoreError::invalid("max_connections", "must be a positive integer")
                })?);
            }
            _ => rest.push(pair),
        }
    }
    let url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((url, max))
}

#[async_trait::async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        NAME
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_connections_is_taken_out_of_the_url() {
        let (url, max) = split_max_connections("postgres://h/db?max_connections=8&sslmode=disable")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (url.as_str(), max),
            ("postgres://h/db?sslmode=disable", Some(8))
        );
        let (url, max) = split_max_connections("postgres://h/db").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((url.as_str(), max), ("postgres://h/db", None));
    }
}
