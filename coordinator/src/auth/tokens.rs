//! Token secrets: generation, hashing, and reading them from an `authorization` header; and
//! creating a token (the TokenService and the `nat-coordinator token create` bootstrap).

use base64::Engine;
use chrono::{DateTime, Utc};
use nat_store::{ApiToken, NewToken, Role, Store};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// Prefix of every secret (so that a leaked one is recognisable, e.g. by secret scanners).
pub const SECRET_PREFIX: &str = "nat_";
/// Longest token name.
pub const MAX_NAME_LEN: usize = 64;
/// Longest lifetime of a token: ten years.
pub const MAX_LIFETIME_SECONDS: u64 = 10 * 365 * 24 * 3600;

/// A new secret: the prefix and 256 random bits from the operating system, base64url.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// Lower-case hex SHA-256 of a secret: what the store keeps.
pub fn secret_sha256(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The secret of an `authorization` header value: `Bearer <token>`, or `Basic` with the token
/// as the password (any user name), which browsers send for the dashboard.
pub fn secret_from_header(header: &str) -> Result<String, ApiError> {
    let bad =
        |why: &str| ApiError::Unauthenticated(format!("malformed authorization header: {why}"));
    let (scheme, rest) = header
        .trim()
        .split_once(' ')
        .ok_or_else(|| bad("expected `Bearer <token>`"))?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        if rest.is_empty() {
            return Err(bad("empty token"));
        }
        return Ok(rest.to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| bad("Basic credentials are not base64"))?;
        let text =
            String::from_utf8(decoded).map_err(|_| bad("Basic credentials are not UTF-8"))?;
        let (_, password) = text
            .split_once(':')
            .ok_or_else(|| bad("Basic credentials have no password"))?;
        if password.is_empty() {
            return Err(bad("the password (the token) is empty"));
        }
        return Ok(password.to_string());
    }
    Err(bad("unknown scheme (use Bearer)"))
}

/// Checks a token name: 1..=64 characters of `[A-Za-z0-9._@-]`.
pub fn validate_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(ApiError::invalid(
            "name",
            format!("must be 1 to {MAX_NAME_LEN} characters"),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-')))
    {
        return Err(ApiError::invalid(
            "name",
            format!("{c:?} is not allowed (letters, digits, '.', '_', '@', '-')"),
        ));
    }
    Ok(())
}

/// Creates a token: draws its secret, stores its hash, and returns the token with the secret
/// (which is never stored and cannot be shown again). `expires_in_seconds` 0 = never.
pub async fn create(
    store: &dyn Store,
    role: Role,
    name: &str,
    expires_in_seconds: u64,
    created_by: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(ApiToken, String), ApiError> {
    validate_name(name)?;
    if expires_in_seconds > MAX_LIFETIME_SECONDS {
        return Err(ApiError::invalid(
            "expires_in_seconds",
            format!("must be at most {MAX_LIFETIME_SECONDS} (ten years); 0 = never"),
        ));
    }
    let expires_at = match expires_in_seconds {
        0 => None,
        s => Some(now + chrono::TimeDelta::seconds(s as i64)),
    };
    let secret = new_secret();
    let token = store
        .create_token(
            NewToken {
                name: name.to_string(),
                role,
                secret_sha256: secret_sha256(&secret),
                created_by: created_by.map(str::to_string),
                expires_at,
            },
            now,
        )
        .await?;
    Ok((token, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_and_hashed() {
        let a = new_secret();
        let b = new_secret();
        assert_ne!(a, b);
        assert!(a.starts_with(SECRET_PREFIX));
        assert_eq!(a.len(), SECRET_PREFIX.len() + 43);
        assert_eq!(secret_sha256(&a).len(), 64);
        assert_ne!(secret_sha256(&a), secret_sha256(&b));
    }

    #[test]
    fn headers_are_read() {
        assert_eq!(secret_from_header("Bearer abc").unwrap(), "abc");
        assert_eq!(secret_from_header("bearer  abc ").unwrap(), "abc");
        let basic = base64::engine::general_purpose::STANDARD.encode("me:tok");
        assert_eq!(
            secret_from_header(&format!("Basic {basic}")).unwrap(),
            "tok"
        );
        assert!(secret_from_header("Bearer").is_err());
        assert!(secret_from_header("Token abc").is_err());
        assert!(secret_from_header("Basic !!").is_err());
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("alice@lab-1.x_y").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("a b").is_err());
        assert!(validate_name(&"a".repeat(65)).is_err());
    }
}
