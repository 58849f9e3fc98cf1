//! [`TokenStore`]: API tokens (coordinator `--auth token`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::Result;
use crate::types::*;

/// API tokens. The conventions of every method are those of [`Store`](super::Store).
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// Stores a new token and returns it. `InvalidArgument` for an empty or over-long name or a
    /// malformed hash; `Conflict` if the hash is already stored (a secret drawn twice).
    async fn create_token(&self, token: NewToken, now: DateTime<Utc>) -> Result<ApiToken>;

    /// The token whose secret hashes to `secret_sha256`, revoked and expired ones included
    /// (the caller decides, with [`ApiToken::is_active_at`]).
    async fn token_by_secret_hash(&self, secret_sha256: &str) -> Result<Option<ApiToken>>;

    /// Tokens, newest first; revoked ones only with `include_revoked`.
    async fn list_tokens(&self, include_revoked: bool) -> Result<Vec<ApiToken>>;

    /// Revokes a token (idempotent: a revoked token keeps its first revocation time) and
    /// returns it. `NotFound` for an unknown id.
    async fn revoke_token(&self, id: Uuid, now: DateTime<Utc>) -> Result<ApiToken>;

    /// Records that a token authenticated a call at `now`.
    async fn touch_token(&self, id: Uuid, now: DateTime<Utc>) -> Result<()>;
}

/// Checks a [`NewToken`]'s fields; the error names the field.
pub(crate) fn validate_new_token(token: &NewToken) -> Result<()> {
    crate::logic::validate_text("name", &token.name)?;
    if token.secret_sha256.len() != 64
        || !token
            .secret_sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(crate::StoreError::invalid(
            "secret_sha256",
            "must be 64 lower-case hex digits",
        ));
    }
    if let Some(by) = &token.created_by {
        crate::logic::validate_text("created_by", by)?;
    }
    Ok(())
}
