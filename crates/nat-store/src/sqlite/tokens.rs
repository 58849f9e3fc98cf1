//! [`TokenStore`] for SQLite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use uuid::Uuid;

use super::rows::{get_opt_ts, get_ts, ts};
use super::SqliteStore;
use crate::error::{Entity, Result, StoreError};
use crate::store::{validate_new_token, TokenStore};
use crate::types::*;

const TOKEN_COLS: &str =
    "id, name, role, created_by, created_at, expires_at, revoked_at, last_used_at";

fn token_from_row(row: &SqliteRow) -> Result<ApiToken> {
    let role: String = row.try_get("role")?;
    let id: String = row.try_get("id")?;
    Ok(ApiToken {
        id: Uuid::parse_str(&id)
            .map_err(|_| StoreError::corrupt(format!("api_tokens.id: bad uuid {id:?}")))?,
        name: row.try_get("name")?,
        role: role
            .parse()
            .map_err(|_| StoreError::corrupt(format!("api_tokens.role: {role:?}")))?,
        created_by: row.try_get("created_by")?,
        created_at: get_ts(row, "created_at")?,
        expires_at: get_opt_ts(row, "expires_at")?,
        revoked_at: get_opt_ts(row, "revoked_at")?,
        last_used_at: get_opt_ts(row, "last_used_at")?,
    })
}

#[async_trait]
impl TokenStore for SqliteStore {
    async fn create_token(&self, token: NewToken, now: DateTime<Utc>) -> Result<ApiToken> {
        validate_new_token(&token)?;
        let row = sqlx::query(&format!(
            "INSERT INTO api_tokens (id, name, role, secret_sha256, created_by, created_at, expires_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (secret_sha256) DO NOTHING \
             RETURNING {TOKEN_COLS}"
        ))
        .bind(Uuid::new_v4().to_string())
        .bind(&token.name)
        .bind(token.role.as_str())
        .bind(&token.secret_sha256)
        .bind(token.created_by.as_deref())
        .bind(ts(now))
        .bind(token.expires_at.map(ts))
        .fetch_optional(&self.writer)
        .await?;
        match row {
            Some(row) => token_from_row(&row),
            None => Err(StoreError::Conflict(
                "a token with this secret already exists".into(),
            )),
        }
    }

    async fn token_by_secret_hash(&self, secret_sha256: &str) -> Result<Option<ApiToken>> {
        let row = sqlx::query(&format!(
            "SELECT {TOKEN_COLS} FROM api_tokens WHERE secret_sha256 = ?1"
        ))
        .bind(secret_sha256)
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn list_tokens(&self, include_revoked: bool) -> Result<Vec<ApiToken>> {
        let rows = sqlx::query(&format!(
            "SELECT {TOKEN_COLS} FROM api_tokens WHERE ?1 OR revoked_at IS NULL \
             ORDER BY created_at DESC, id"
        ))
        .bind(include_revoked)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(token_from_row).collect()
    }

    async fn revoke_token(&self, id: Uuid, now: DateTime<Utc>) -> Result<ApiToken> {
        let row = sqlx::query(&format!(
            "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1 \
             RETURNING {TOKEN_COLS}"
        ))
        .bind(id.to_string())
        .bind(ts(now))
        .fetch_optional(&self.writer)
        .await?;
        match row {
            Some(row) => token_from_row(&row),
            None => Err(StoreError::NotFound {
                what: Entity::Token,
                id: id.to_string(),
            }),
        }
    }

    async fn touch_token(&self, id: Uuid, now: DateTime<Utc>) -> Result<()> {
        sqlx::query("UPDATE api_tokens SET last_used_at = ?2 WHERE id = ?1")
            .bind(id.to_string())
            .bind(ts(now))
            .execute(&self.writer)
            .await?;
        Ok(())
    }
}
