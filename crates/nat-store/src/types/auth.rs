//! API tokens (coordinator `--auth token`): roles, and the stored form of a token.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::error::StoreError;

/// What a token may do (the coordinator's `auth` module maps each RPC and route to the roles
/// allowed to call it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including token management.
    Admin,
    /// Submit jobs; read and cancel its own.
    User,
    /// Read-only: jobs, results, workers, policies, dashboard, metrics.
    Viewer,
    /// The WorkerService only.
    Worker,
}

impl Role {
    /// Every role, most privileged first.
    pub const ALL: [Role; 4] = [Role::Admin, Role::User, Role::Viewer, Role::Worker];

    /// The stored and displayed name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
            Role::Viewer => "viewer",
            Role::Worker => "worker",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                StoreError::invalid(
                    "role",
                    format!("unknown role {s:?} (admin, user, viewer, worker)"),
                )
            })
    }
}

/// A token to create. The secret itself never reaches the store: only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    /// The identity behind the token (owner of the jobs it submits); several tokens may share a
    /// name (rotation).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Lower-case hex SHA-256 of the secret (64 characters).
    pub secret_sha256: String,
    /// Name of the token that created it; `None` for the bootstrap command.
    pub created_by: Option<String>,
    /// When it stops working; `None` = never.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A stored token (without its secret, which is not stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiToken {
    /// Id (what revocation takes).
    pub id: Uuid,
    /// The identity behind the token.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Name of the token that created it; `None` for the bootstrap command.
    pub created_by: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// When it stops working; `None` = never.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked; `None` = not revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Last time it authenticated a call (updated at most about once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
}

impl ApiToken {
    /// Whether the token authenticates calls at `now`: not revoked, not expired.
    pub fn is_active_at(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }
}
