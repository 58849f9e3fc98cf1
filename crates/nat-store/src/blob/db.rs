//! [`DbBlobs`]: blobs in the store's own database (tables `blobs` and `blob_chunks`).

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use chrono::Utc;
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;

use super::{meta, sha256_hex, BlobStore, CHUNK_SIZE, DATABASE};
use crate::error::{Entity, Result, StoreError};
use crate::logic::{validate_blob_key, validate_blob_prefix};
use crate::types::BlobMeta;

/// Blobs in the database of a [`PgStore`](crate::PgStore) or [`SqliteStore`](crate::SqliteStore),
/// through that store's connections; get one with
/// [`Store::database_blobs`](crate::Store::database_blobs).
///
/// A blob is one `blobs` row (size, SHA-256, chunk count) and its content in `blob_chunks`, cut
/// into chunks of [`CHUNK_SIZE`]. A put is one transaction (upsert the row, delete the old
/// chunks, insert the new ones); a get is one statement (the row joined to its chunks), so
/// both see one committed state. `created_at` is the coordinator's clock at the put
/// (informational: nothing decides on it).
#[derive(Debug, Clone)]
pub struct DbBlobs {
    db: Db,
}

#[derive(Debug, Clone)]
enum Db {
    Postgres(PgPool),
    Sqlite {
        /// SQLite's one writer connection (puts and deletes).
        writer: SqlitePool,
        /// Its readers.
        reader: SqlitePool,
    },
}

impl DbBlobs {
    /// Blobs through a PostgreSQL pool (migrated).
    pub(crate) fn postgres(pool: PgPool) -> Self {
        DbBlobs {
            db: Db::Postgres(pool),
        }
    }

    /// Blobs through SQLite's writer and reader pools (migrated).
    pub(crate) fn sqlite(writer: SqlitePool, reader: SqlitePool) -> Self {
        DbBlobs {
            db: Db::Sqlite { writer, reader },
        }
    }
}

/// The size, digest and chunk count of a blob to put, as the database stores them.
struct Header {
    bytes: i64,
    sha256: String,
    chunks: i32,
}

impl Header {
    fn of(data: &[u8]) -> Result<Self> {
        Ok(Header {
            bytes: i64::try_from(data.len())
                .map_err(|_| StoreError::invalid("data", "too large"))?,
            sha256: sha256_hex(data),
            chunks: i32::try_from(data.len().div_ceil(CHUNK_SIZE))
                .map_err(|_| StoreError::invalid("data", "too large"))?,
        })
    }
}

/// A row of the blob join: the blob's `bytes` and `chunks`, then one chunk's `idx` and `data`.
type ChunkRow = (i64, i32, Option<i32>, Option<Vec<u8>>);

/// Reassembles a blob from the rows of its join (`bytes`, `chunks`, then `idx`, `data` per chunk
/// in order; one row with NULL chunk columns for an empty blob). `None`: no such blob.
fn assemble(key: &str, rows: Vec<ChunkRow>) -> Result<Option<Bytes>> {
    let Some(&(bytes, chunks, _, _)) = rows.first() else {
        return Ok(None);
    };
    let size = usize::try_from(bytes)
        .map_err(|_| StoreError::corrupt(format!("blobs.bytes of {key}: {bytes}")))?;
    let mut out = BytesMut::with_capacity(size);
    let mut seen = 0i32;
    for (_, _, idx, data) in rows {
        let (Some(idx), Some(data)) = (idx, data) else {
            continue;
        };
        if idx != seen {
            return Err(StoreError::corrupt(format!(
                "blob_chunks of {key}: chunk {seen} missing"
            )));
        }
        out.extend_from_slice(&data);
        seen += 1;
    }
    if seen != chunks || out.len() != size {
        return Err(StoreError::corrupt(format!(
            "blob {key}: {seen} chunks of {} bytes stored, {chunks} chunks of {size} bytes expected",
            out.len()
        )));
    }
    Ok(Some(out.freeze()))
}

fn to_meta(key: &str, bytes: i64, sha256: String) -> Result<BlobMeta> {
    let bytes = usize::try_from(bytes)
        .map_err(|_| StoreError::corrupt(format!("blobs.bytes of {key}: {bytes}")))?;
    Ok(meta(key, bytes, sha256))
}

/// The join that reads a blob in one statement (`$1`: the key), on PostgreSQL.
const GET_PG: &str = "SELECT b.bytes, b.chunks, c.idx, c.data FROM blobs b \
     LEFT JOIN blob_chunks c ON c.key = b.key WHERE b.key = $1 ORDER BY c.idx";

/// [`GET_PG`] on SQLite.
const GET_SQLITE: &str = "SELECT b.bytes, b.chunks, c.idx, c.data FROM blobs b \
     LEFT JOIN blob_chunks c ON c.key = b.key WHERE b.key = ?1 ORDER BY c.idx";

#[async_trait]
impl BlobStore for DbBlobs {
    fn describe(&self) -> String {
        DATABASE.to_string()
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<BlobMeta> {
        validate_blob_key("key", key)?;
        let header = Header::of(&data)?;
        let now = Utc::now();
        match &self.db {
            Db::Postgres(pool) => {
                // BEGIN in a task of its own (see `PgStore::begin`, launchbadge/sqlx#2805).
                let pool = pool.clone();
                let mut tx = tokio::spawn(async move { pool.begin().await })
                    .await
                    .map_err(StoreError::backend)??;
                sqlx::query(
                    "INSERT INTO blobs (key, bytes, sha256, chunks, created_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key) DO UPDATE SET \
                       bytes = EXCLUDED.bytes, sha256 = EXCLUDED.sha256, chunks = EXCLUDED.chunks, \
                       created_at = EXCLUDED.created_at",
                )
                .bind(key)
                .bind(header.bytes)
                .bind(&header.sha256)
                .bind(header.chunks)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                sqlx::query("DELETE FROM blob_chunks WHERE key = $1")
                    .bind(key)
                    .execute(&mut *tx)
                    .await?;
                for (idx, chunk) in (0i32..).zip(data.chunks(CHUNK_SIZE)) {
                    sqlx::query("INSERT INTO blob_chunks (key, idx, data) VALUES ($1, $2, $3)")
                        .bind(key)
                        .bind(idx)
                        .bind(chunk)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }
            Db::Sqlite { writer, .. } => {
                let pool = writer.clone();
                let mut tx = tokio::spawn(async move { pool.begin().await })
                    .await
                    .map_err(StoreError::backend)??;
                sqlx::query(
                    "INSERT INTO blobs (key, bytes, sha256, chunks, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (key) DO UPDATE SET \
                       bytes = excluded.bytes, sha256 = excluded.sha256, chunks = excluded.chunks, \
                       created_at = excluded.created_at",
                )
                .bind(key)
                .bind(header.bytes)
                .bind(&header.sha256)
                .bind(header.chunks)
                .bind(now.timestamp_micros())
                .execute(&mut *tx)
                .await?;
                sqlx::query("DELETE FROM blob_chunks WHERE key = ?1")
                    .bind(key)
                    .execute(&mut *tx)
                    .await?;
                for (idx, chunk) in (0i32..).zip(data.chunks(CHUNK_SIZE)) {
                    sqlx::query("INSERT INTO blob_chunks (key, idx, data) VALUES (?1, ?2, ?3)")
                        .bind(key)
                        .bind(idx)
                        .bind(chunk)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }
        }
        to_meta(key, header.bytes, header.sha256)
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        validate_blob_key("key", key)?;
        let rows: Vec<ChunkRow> = match &self.db {
            Db::Postgres(pool) => sqlx::query_as(GET_PG).bind(key).fetch_all(pool).await?,
            Db::Sqlite { reader, .. } => {
                sqlx::query_as(GET_SQLITE)
                    .bind(key)
                    .fetch_all(reader)
                    .await?
            }
        };
        assemble(key, rows)?.ok_or_else(|| StoreError::not_found(Entity::Blob, key))
    }

    async fn head(&self, key: &str) -> Result<Option<BlobMeta>> {
        validate_blob_key("key", key)?;
        let row: Option<(i64, String)> = match &self.db {
            Db::Postgres(pool) => {
                sqlx::query_as("SELECT bytes, sha256 FROM blobs WHERE key = $1")
                    .bind(key)
                    .fetch_optional(pool)
                    .await?
            }
            Db::Sqlite { reader, .. } => {
                sqlx::query_as("SELECT bytes, sha256 FROM blobs WHERE key = ?1")
                    .bind(key)
                    .fetch_optional(reader)
                    .await?
            }
        };
        row.map(|(bytes, sha256)| to_meta(key, bytes, sha256))
            .transpose()
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_blob_key("key", key)?;
        // The chunks go with the row (ON DELETE CASCADE).
        match &self.db {
            Db::Postgres(pool) => {
                sqlx::query("DELETE FROM blobs WHERE key = $1")
                    .bind(key)
                    .execute(pool)
                    .await?;
            }
            Db::Sqlite { writer, .. } => {
                sqlx::query("DELETE FROM blobs WHERE key = ?1")
                    .bind(key)
                    .execute(writer)
                    .await?;
            }
        }
        Ok(())
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64> {
        validate_blob_prefix("prefix", prefix)?;
        // Only the `blobs` rows are counted: the cascaded chunk deletions are not (in either
        // database's count).
        let deleted = match &self.db {
            Db::Postgres(pool) => sqlx::query("DELETE FROM blobs WHERE starts_with(key, $1)")
                .bind(prefix)
                .execute(pool)
                .await?
                .rows_affected(),
            Db::Sqlite { writer, .. } => {
                sqlx::query("DELETE FROM blobs WHERE substr(key, 1, length(?1)) = ?1")
                    .bind(prefix)
                    .execute(writer)
                    .await?
                    .rows_affected()
            }
        };
        Ok(deleted)
    }
}
