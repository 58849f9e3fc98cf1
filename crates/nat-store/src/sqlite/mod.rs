//! SQLite backend: [`SqliteStore`]. One file per concern: [`rows`] (row decoders and
//! encodings), `jobs`, `leases`, `reports`, `events`, `policy` (the trait implementations and
//! their helpers).

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::error::{Result, StoreError};
use crate::store::Store;

mod events;
mod jobs;
mod leader;
mod leases;
mod policy;
mod reports;
mod rows;
mod supernet;
mod tokens;

const NAME: &str = "sqlite";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

/// The SQLite store: one writer connection, a small pool of readers.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    /// `BEGIN` on the writer in a task of its own, as `PgStore::begin` does: a `begin()` future
    /// dropped mid-way (a cancelled call, a timeout) must not return the writer to its pool
    /// inside a transaction nobody owns (launchbadge/sqlx#2805).
    pub(crate) async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        let writer = self.writer.clone();
        Ok(tokio::spawn(async move { writer.begin().await })
            .await
            .map_err(StoreError::backend)??)
    }

    /// Opens (creating if missing, with its parent directory) the database file at `path` and
    /// runs the migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(StoreError::backend)?;
            }
        }
        let base = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(base.clone())
            .await?;
        MIGRATOR.run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(base)
            .await?;
        Ok(Self { writer, reader })
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        NAME
    }

    fn database_blobs(&self) -> std::sync::Arc<dyn crate::blob::BlobStore> {
        std::sync::Arc::new(crate::blob::DbBlobs::sqlite(
            self.writer.clone(),
            self.reader.clone(),
        ))
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }
}
