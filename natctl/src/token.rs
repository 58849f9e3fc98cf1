//! `natctl token create|list|revoke`: API tokens, through the coordinator's TokenService (admin
//! role only).
//!
//! `create` prints the new token's secret once, as the last line of stdout (or in the `secret`
//! field of `-o json`), with a reminder on stderr to store it: the coordinator keeps only its
//! hash.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail};
use clap::{Subcommand, ValueEnum};
use nat_proto::v1;
use serde::Serialize;

use crate::client::{status_error, Connection, Remote};
use crate::output::{render, table, Output};

/// Longest token name the coordinator accepts.
const MAX_NAME_CHARS: usize = 64;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; prints it and, on the last line, its secret (shown only this once).
    ///
    /// `-o json` prints `{id, name, role, expires_at, secret}`. The secret is what clients pass
    /// as --token, --token-file or NAT_TOKEN.
    Create {
        /// What the token may do: admin (everything, tokens included), user (submit; read and
        /// cancel its own jobs), viewer (read only), worker (the worker protocol only).
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Its name (letters, digits, `.`, `_`, `@`, `-`; at most 64): the owner of the jobs it
        /// submits. Default: the role and the current time, e.g. `user-1735689600`.
        #[arg(long)]
        name: Option<String>,
        /// How long it is valid: `30d`, `12h`, `90m`, `3600s` (or combined, `1d12h`; `w` for
        /// weeks). Default: it never expires.
        #[arg(long, value_parser = parse_expiry)]
        expires: Option<Duration>,
    },
    /// List tokens: id, name, role, created, expires, revoked, last used (never the secrets).
    List {
        /// Revoked tokens too.
        #[arg(long)]
        all: bool,
    },
    /// Revoke a token by id: calls with it fail from now on; prints the token.
    Revoke {
        /// Token id (`natctl token list`).
        id: String,
    },
}

/// A token role as typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    Admin,
    User,
    Viewer,
    Worker,
}

impl RoleArg {
    fn to_proto(self) -> v1::Role {
        match self {
            RoleArg::Admin => v1::Role::Admin,
            RoleArg::User => v1::Role::User,
            RoleArg::Viewer => v1::Role::Viewer,
            RoleArg::Worker => v1::Role::Worker,
        }
    }

    fn name(self) -> &'static str {
        role_name(self.to_proto() as i32)
    }
}

/// A role's name as natctl prints it (`user`).
fn role_name(role: i32) -> &'static str {
    match v1::Role::try_from(role) {
        Ok(v1::Role::Admin) => "admin",
        Ok(v1::Role::User) => "user",
        Ok(v1::Role::Viewer) => "viewer",
        Ok(v1::Role::Worker) => "worker",
        _ => "unknown",
    }
}

/// `-o json` of `token create`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CreatedView {
    pub id: String,
    pub name: String,
    pub role: &'static str,
    /// RFC 3339 UTC; `null`: never expires.
    pub expires_at: Option<String>,
    /// The bearer token; shown only here.
    pub secret: String,
}

/// One token of `token list` / `token revoke` (`-o json`). Times are RFC 3339 UTC; `null`
/// for never (not expiring, not revoked, not used).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub role: &'static str,
    pub created_at: Option<String>,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
    /// Name of the token that created it; "" for the bootstrap command.
    pub created_by: String,
}

impl TokenView {
    fn of(t: &v1::ApiToken) -> TokenView {
        TokenView {
            id: t.id.clone(),
            name: t.name.clone(),
            role: role_name(t.role),
            created_at: rfc3339(t.created_at_unix_ms),
            expires_at: rfc3339(t.expires_at_unix_ms),
            revoked_at: rfc3339(t.revoked_at_unix_ms),
            last_used_at: rfc3339(t.last_used_at_unix_ms),
            created_by: t.created_by.clone(),
        }
    }
}

/// Runs a token command against the coordinator of `remote`.
pub fn run(cmd: TokenCommand, remote: Remote<'_>, output: Output) -> anyhow::Result<ExitCode> {
    crate::client::runtime()?.block_on(run_async(cmd, remote, output))
}

async fn run_async(
    cmd: TokenCommand,
    remote: Remote<'_>,
    output: Output,
) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::Create {
            role,
            name,
            expires,
        } => {
            // Checked before connecting, so that bad input fails without a coordinator.
            let name = match name {
                Some(name) => check_name(&name)?,
                None => default_name(role, SystemTime::now()),
            };
            let request = v1::CreateTokenRequest {
                role: role.to_proto() as i32,
                name,
                expires_in_seconds: expires.map_or(0, |d| d.as_secs()),
            };
            let response = Connection::open(remote)
                .await?
                .tokens()
                .create_token(request)
                .await
                .map_err(|s| status_error("token create", s))?
                .into_inner();
            let token = response
                .token
                .ok_or_else(|| anyhow!("the coordinator answered without a token"))?;
            if response.secret.is_empty() {
                bail!("the coordinator answered without the token's secret");
            }
            let view = CreatedView {
                id: token.id.clone(),
                name: token.name.clone(),
                role: role_name(token.role),
                expires_at: rfc3339(token.expires_at_unix_ms),
                secret: response.secret,
            };
            eprintln!(
                "natctl: store this token's secret now: it is shown only once (the coordinator \
                 keeps only its hash)"
            );
            output.print(&view, created_text)?;
        }
        TokenCommand::List { all } => {
            let tokens: Vec<TokenView> = Connection::open(remote)
                .await?
                .tokens()
                .list_tokens(v1::ListTokensRequest {
                    include_revoked: all,
                })
                .await
                .map_err(|s| status_error("token list", s))?
                .into_inner()
                .tokens
                .iter()
                .map(TokenView::of)
                .collect();
            output.print(&tokens, |t| tokens_table(t))?;
        }
        TokenCommand::Revoke { id } => {
            if id.trim().is_empty() {
                bail!("token revoke: the token id is empty");
            }
            let token = Connection::open(remote)
                .await?
                .tokens()
                .revoke_token(v1::RevokeTokenRequest { id })
                .await
                .map_err(|s| status_error("token revoke", s))?
                .into_inner()
                .token
                .ok_or_else(|| anyhow!("the coordinator answered without a token"))?;
            let view = TokenView::of(&token);
            output.print(&view, |t| {
                format!("revoked token {} ({}, {})", t.id, t.name, t.role)
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `token create`'s text: a line about the token, then the secret alone on the last line.
fn created_text(v: &CreatedView) -> String {
    let expires = match &v.expires_at {
        Some(at) => format!("expires {}", human_time(at)),
        None => "never expires".to_owned(),
    };
    format!(
        "created {} token {} (id {}), {expires}\n{}",
        v.role, v.name, v.id, v.secret
    )
}

fn tokens_table(tokens: &[TokenView]) -> String {
    let mut t = table(&[
        "ID",
        "NAME",
        "ROLE",
        "CREATED",
        "EXPIRES",
        "REVOKED",
        "LAST USED",
    ]);
    let when =
        |at: &Option<String>, none: &str| at.as_deref().map_or_else(|| none.to_owned(), human_time);
    for token in tokens {
        t.add_row(vec![
            token.id.clone(),
            token.name.clone(),
            token.role.to_owned(),
            when(&token.created_at, "-"),
            when(&token.expires_at, "never"),
            when(&token.revoked_at, "-"),
            when(&token.last_used_at, "never"),
        ]);
    }
    render(t, &[])
}

/// A token name as the coordinator accepts it: `[A-Za-z0-9._@-]`, 1..=64 characters.
fn check_name(name: &str) -> anyhow::Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        bail!("--name: must be 1 to {MAX_NAME_CHARS} characters");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-')))
    {
        bail!("--name: {c:?} is not allowed (letters, digits, `.`, `_`, `@`, `-`)");
    }
    Ok(name.to_owned())
}

/// `<role>-<unix seconds>`, e.g. `user-1735689600`.
fn default_name(role: RoleArg, now: SystemTime) -> String {
    let seconds = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("{}-{seconds}", role.name())
}

/// `--expires`: one or more `<number><unit>` groups (`s`, `m`, `h`, `d`, `w`), e.g. `30d`,
/// `12h`, `1d12h`; a bare number is seconds. Must be more than zero.
pub fn parse_expiry(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let bad = || format!("`{text}` is not a duration (e.g. 30d, 12h, 90m, 3600s)");
    if text.is_empty() {
        return Err(bad());
    }
    if text.chars().all(|c| c.is_ascii_digit()) {
        let seconds: u64 = text.parse().map_err(|_| bad())?;
        return positive(seconds, text);
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(bad()),
        };
        let value: u64 = number.parse().map_err(|_| bad())?;
        number.clear();
        total = value
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("`{text}` is too long"))?;
    }
    if !number.is_empty() {
        return Err(bad());
    }
    positive(total, text)
}

fn positive(seconds: u64, text: &str) -> Result<Duration, String> {
    if seconds == 0 {
        return Err(format!(
            "`{text}` is zero (leave --expires out for a token that never expires)"
        ));
    }
    Ok(Duration::from_secs(seconds))
}

/// A Unix time in ms as RFC 3339 UTC (`2025-01-01T12:00:00Z`); `None` for 0 (never).
fn rfc3339(unix_ms: i64) -> Option<String> {
    if unix_ms == 0 {
        return None;
    }
    chrono::DateTime::from_timestamp_millis(unix_ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// An RFC 3339 time of [`rfc3339`] as a table shows it: `2025-01-01 12:00 UTC`.
fn human_time(at: &str) -> String {
    match (at.get(..10), at.get(11..16)) {
        (Some(day), Some(minute)) => format!("{day} {minute} UTC"),
        _ => at.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn expiries_take_units() {
        for (text, seconds) in [
            ("30d", 30 * 86_400),
            ("12h", 12 * 3600),
            ("90m", 90 * 60),
            ("3600s", 3600),
            ("3600", 3600),
            ("1d12h", 86_400 + 12 * 3600),
            ("2w", 14 * 86_400),
        ] {
            assert_eq!(
                parse_expiry(text),
                Ok(Duration::from_secs(seconds)),
                "{text}"
            );
        }
        for bad in ["", "d", "1.5h", "12x", "h12", "0h", "0", "12h3"] {
            assert!(parse_expiry(bad).is_err(), "{bad}");
        }
        assert!(parse_expiry("99999999999999999999w").is_err());
    }

    #[test]
    fn names_are_checked_before_connecting() {
        assert_eq!(check_name(" ci-bot@host.1_x ").unwrap(), "ci-bot@host.1_x");
        for bad in ["", "a b", "é", &"x".repeat(65)] {
            let e = check_name(bad).unwrap_err().to_string();
            assert!(e.starts_with("--name: "), "{bad:?}: {e}");
        }
        let at = UNIX_EPOCH + Duration::from_secs(1_735_689_600);
        assert_eq!(default_name(RoleArg::User, at), "user-1735689600");
        assert!(check_name(&default_name(RoleArg::Admin, at)).is_ok());
    }

    #[test]
    fn views_print_times_as_rfc3339_and_never_as_null() {
        let t = v1::ApiToken {
            id: "t1".into(),
            name: "ci".into(),
            role: v1::Role::Viewer as i32,
            created_at_unix_ms: 1_735_689_600_000,
            expires_at_unix_ms: 0,
            revoked_at_unix_ms: 0,
            created_by: "root".into(),
            last_used_at_unix_ms: 1_735_693_200_500,
        };
        let v = serde_json::to_value(TokenView::of(&t)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "id": "t1", "name": "ci", "role": "viewer",
                "created_at": "2025-01-01T00:00:00Z", "expires_at": null, "revoked_at": null,
                "last_used_at": "2025-01-01T01:00:00Z", "created_by": "root"
            })
        );
        let table = tokens_table(&[TokenView::of(&t)]);
        assert!(
            table.contains("2025-01-01 00:00 UTC") && table.contains("never"),
            "{table}"
        );
    }

    #[test]
    fn the_secret_is_the_last_line() {
        let v = CreatedView {
            id: "t2".into(),
            name: "w1".into(),
            role: "worker",
            expires_at: Some("2025-01-31T00:00:00Z".into()),
            secret: "nat_s3cret".into(),
        };
        let text = created_text(&v);
        assert_eq!(text.lines().last(), Some("nat_s3cret"));
        assert!(text.contains("expires 2025-01-31 00:00 UTC"), "{text}");
    }
}
