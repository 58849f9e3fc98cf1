//! Authentication and authorization (`--auth token`).
//!
//! - [`Authenticator`]: turns the `authorization` header of a call (`Bearer <token>`, or for HTTP
//!   also `Basic` with the token as the password, so that a browser can open the dashboard) into
//!   the stored [`ApiToken`]. Tokens are stored as SHA-256 hashes; a found token is cached for at
//!   most [`CACHE_TTL`], and a revocation through this coordinator drops it from the cache at
//!   once, so revocation and expiry take effect on the next call.
//! - [`access`]: which roles may call each RPC and HTTP route.
//! - [`layer`]: the tower layer in front of every gRPC service: it authenticates, checks the
//!   role, and puts the caller's [`Principal`] in the request's extensions for the handlers,
//!   which check ownership (a `user` reads and cancels only its own jobs) and worker identity.
//! - [`http`]: the same for the HTTP listener (dashboard, metrics).
//! - [`tokens`]: creating tokens (the secret, its hash), shared by the TokenService and the
//!   `nat-coordinator token create` bootstrap command.
//! - [`WorkerBindings`]: which credential registered each worker, so that a worker speaks only
//!   for itself.
//!
//! With `--auth none` every call is anonymous and allowed (the coordinator then listens on
//! loopback only, unless `--insecure`); a client certificate verified by `--tls-client-ca` still
//! binds the workers that present one.

pub mod access;
pub mod http;
pub mod layer;
pub mod tokens;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nat_store::{ApiToken, Role, Store, WorkerId};
use uuid::Uuid;

use crate::clock::Clock;
use crate::error::ApiError;

/// How long a token read from the store is trusted without reading it again. A revocation
/// through another coordinator on the same database takes effect within this time; through this
/// one, at once.
pub const CACHE_TTL: Duration = Duration::from_secs(1);
/// How often a token's `last_used_at` is written, at most.
const TOUCH_EVERY: chrono::TimeDelta = chrono::TimeDelta::seconds(60);
/// Most tokens cached (the cache is cleared when full).
const MAX_CACHED: usize = 10_000;

/// How callers are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AuthMode {
    /// No authentication: every call is allowed. The coordinator listens on loopback only
    /// unless `--insecure` is given.
    #[default]
    None,
    /// Bearer tokens with roles (admin, user, viewer, worker).
    Token,
}

/// Authentication settings of a running coordinator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthSettings {
    /// How callers are authenticated.
    pub mode: AuthMode,
    /// Whether a `user` token may read (not cancel) other users' jobs.
    pub users_read_all: bool,
    /// Whether `/metrics` is served without a token (for Prometheus scrapes).
    pub metrics_public: bool,
    /// Whether WorkerService calls must present a verified client certificate (mTLS:
    /// `--tls-client-ca` is set).
    pub worker_certs_required: bool,
}

/// The token part of a caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenCaller {
    /// The token's id.
    pub id: Uuid,
    /// The identity behind it (owner of the jobs it submits).
    pub name: String,
    /// What it may do.
    pub role: Role,
}

/// Who makes a call: put in each request's extensions by [`layer::AuthLayer`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Principal {
    /// The token that authenticated the call (`None` with `--auth none`).
    pub token: Option<TokenCaller>,
    /// SHA-256 (hex) of the verified client certificate, under mTLS.
    pub cert_fingerprint: Option<String>,
}

impl Principal {
    /// The caller of `request` (anonymous when no layer set one, e.g. `--auth none` in tests
    /// that call handlers directly).
    pub fn of<T>(request: &tonic::Request<T>) -> Principal {
        request
            .extensions()
            .get::<Principal>()
            .cloned()
            .unwrap_or_default()
    }

    /// The token's role; `None` when unauthenticated (`--auth none`).
    pub fn role(&self) -> Option<Role> {
        self.token.as_ref().map(|t| t.role)
    }

    /// The owner recorded on jobs this caller submits: its token's name.
    pub fn owner(&self) -> Option<&str> {
        self.token.as_ref().map(|t| t.name.as_str())
    }

    /// The credential a worker registered by this caller is bound to: `token:<id>`, else
    /// `cert:<fingerprint>`; `None` for an anonymous caller (no binding).
    pub fn worker_binding(&self) -> Option<String> {
        match (&self.token, &self.cert_fingerprint) {
            (Some(t), _) => Some(format!("token:{}", t.id)),
            (None, Some(fp)) => Some(format!("cert:{fp}")),
            (None, None) => None,
        }
    }

    /// Whether this caller may read (`write = false`) or cancel (`write = true`) a job owned by
    /// `owner`: admins always; users their own jobs (and others' for reading when
    /// `users_read_all`); viewers read only; anonymous callers (`--auth none`) everything.
    pub fn check_job(
        &self,
        job: &str,
        owner: Option<&str>,
        write: bool,
        users_read_all: bool,
    ) -> Result<(), ApiError> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let own = owner == Some(token.name.as_str());
        let allowed = match token.role {
            Role::Admin => true,
            Role::User => own || (!write && users_read_all),
            Role::Viewer => !write,
            Role::Worker => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(ApiError::PermissionDenied(format!(
                "job {job} belongs to {}; a {} token may not {} it",
                owner.unwrap_or("nobody (submitted without authentication)"),
                token.role,
                if write { "cancel" } else { "read" }
            )))
        }
    }

    /// The owner a job listing is limited to: a user's own name unless `users_read_all`.
    pub fn list_owner(&self, users_read_all: bool) -> Option<String> {
        match &self.token {
            Some(t) if t.role == Role::User && !users_read_all => Some(t.name.clone()),
            _ => None,
        }
    }
}

/// Turns credentials into tokens (see the module documentation).
pub struct Authenticator {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    settings: AuthSettings,
    /// Found tokens by the SHA-256 of their secret, with when they were read.
    cache: Mutex<HashMap<String, (ApiToken, Instant)>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An authenticator over the tokens of `store`.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, settings: AuthSettings) -> Self {
        Authenticator {
            store,
            clock,
            settings,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    /// The active token whose secret is `secret`: `Unauthenticated` for an unknown, expired or
    /// revoked one.
    pub async fn token(&self, secret: &str) -> Result<ApiToken, ApiError> {
        let hash = tokens::secret_sha256(secret);
        let cached = {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            cache
                .get(&hash)
                .filter(|(_, at)| at.elapsed() < CACHE_TTL)
                .map(|(t, _)| t.clone())
        };
        let token = match cached {
            Some(t) => t,
            None => {
                let Some(t) = self.store.token_by_secret_hash(&hash).await? else {
                    return Err(ApiError::Unauthenticated("unknown token".into()));
                };
                let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
                if cache.len() >= MAX_CACHED {
                    cache.clear();
                }
                cache.insert(hash, (t.clone(), Instant::now()));
                t
            }
        };
        let now = self.clock.now();
        if token.revoked_at.is_some() {
            return Err(ApiError::Unauthenticated(format!(
                "token {} ({}) was revoked",
                token.id, token.name
            )));
        }
        if !token.is_active_at(now) {
            return Err(ApiError::Unauthenticated(format!(
                "token {} ({}) expired",
                token.id, token.name
            )));
        }
        if token
            .last_used_at
            .is_none_or(|used| now.signed_duration_since(used) > TOUCH_EVERY)
        {
            self.touch(&token, now);
        }
        Ok(token)
    }

    /// Writes `last_used_at` in the background (and in the cached copy, so that it is written
    /// about once a minute, not on every call).
    fn touch(&self, token: &ApiToken, now: chrono::DateTime<chrono::Utc>) {
        {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            for (t, _) in cache.values_mut().filter(|(t, _)| t.id == token.id) {
                t.last_used_at = Some(now);
            }
        }
        let store = self.store.clone();
        let id = token.id;
        tokio::spawn(async move {
            if let Err(err) = store.touch_token(id, now).await {
                nat_telemetry::report_error(&err, "cannot record a token's last use");
            }
        });
    }

    /// Drops a token from the cache (after its revocation), so that the next call reads it.
    pub fn forget(&self, id: Uuid) {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache.retain(|_, (t, _)| t.id != id);
    }

    /// The principal of a call with this `authorization` header value (`None`: no header) and
    /// verified client certificate, when the call needs one of `roles`.
    pub async fn principal(
        &self,
        authorization: Option<&str>,
        cert_fingerprint: Option<String>,
        roles: &[Role],
        what: &str,
    ) -> Result<Principal, ApiError> {
        let token = match self.settings.mode {
            AuthMode::None => None,
            AuthMode::Token => {
                let header = authorization.ok_or_else(|| {
                    ApiError::Unauthenticated(format!(
                        "{what} needs a token: send `authorization: Bearer <token>` \
                         (natctl/nat-worker: --token or NAT_TOKEN)"
                    ))
                })?;
                let secret = tokens::secret_from_header(header)?;
                let token = self.token(&secret).await?;
                if !roles.contains(&token.role) {
                    return Err(ApiError::PermissionDenied(format!(
                        "a {} token may not call {what} (allowed: {})",
                        token.role,
                        roles
                            .iter()
                            .map(|r| r.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                Some(TokenCaller {
                    id: token.id,
                    name: token.name,
                    role: token.role,
                })
            }
        };
        Ok(Principal {
            token,
            cert_fingerprint,
        })
    }
}

/// Which credential registered each worker, cached from the store (`workers.principal`).
#[derive(Debug, Default)]
pub struct WorkerBindings {
    known: Mutex<HashMap<WorkerId, Option<String>>>,
}

/// Most worker bindings cached.
const MAX_BINDINGS: usize = 100_000;

impl WorkerBindings {
    /// Records the binding of a worker that just registered.
    pub fn remember(&self, worker: WorkerId, binding: Option<String>) {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if known.len() >= MAX_BINDINGS {
            known.clear();
        }
        known.insert(worker, binding);
    }

    /// Checks that `principal` may act for `worker`: the credential that registered it. An
    /// anonymous caller (`--auth none`, no client certificate) may act only for workers
    /// registered anonymously; a worker registered anonymously cannot be taken over by a
    /// credential either (it must register again). `NotFound` for an unknown worker.
    pub async fn check(
        &self,
        store: &dyn Store,
        worker: WorkerId,
        principal: &Principal,
    ) -> Result<(), ApiError> {
        let cached = {
            let known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
            known.get(&worker).cloned()
        };
        let bound = match cached {
            Some(b) => b,
            None => {
                let b = store.worker_principal(worker).await?;
                self.remember(worker, b.clone());
                b
            }
        };
        if bound == principal.worker_binding() {
            return Ok(());
        }
        Err(ApiError::PermissionDenied(format!(
            "worker {worker} was registered by another credential; a worker speaks only for \
             itself (register again with this credential)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role, name: &str) -> Principal {
        Principal {
            token: Some(TokenCaller {
                id: Uuid::nil(),
                name: name.into(),
                role,
            }),
            cert_fingerprint: None,
        }
    }

    #[test]
    fn job_access_follows_role_and_owner() {
        let alice = caller(Role::User, "alice");
        assert!(alice.check_job("j", Some("alice"), true, false).is_ok());
        assert!(alice.check_job("j", Some("bob"), false, false).is_err());
        assert!(alice.check_job("j", Some("bob"), false, true).is_ok());
        assert!(alice.check_job("j", Some("bob"), true, true).is_err());
        assert!(alice.check_job("j", None, false, false).is_err());
        let viewer = caller(Role::Viewer, "v");
        assert!(viewer.check_job("j", Some("bob"), false, false).is_ok());
        assert!(viewer.check_job("j", Some("bob"), true, false).is_err());
        assert!(caller(Role::Admin, "a")
            .check_job("j", Some("bob"), true, false)
            .is_ok());
        assert!(caller(Role::Worker, "w")
            .check_job("j", Some("w"), false, true)
            .is_err());
        assert!(Principal::default()
            .check_job("j", Some("bob"), true, false)
            .is_ok());
        assert_eq!(alice.list_owner(false).as_deref(), Some("alice"));
        assert_eq!(alice.list_owner(true), None);
        assert_eq!(caller(Role::Viewer, "v").list_owner(false), None);
    }

    #[test]
    fn worker_binding_prefers_the_token() {
        let mut p = caller(Role::Worker, "w");
        p.cert_fingerprint = Some("ab".into());
        assert_eq!(
            p.worker_binding().as_deref(),
            Some("token:00000000-0000-0000-0000-000000000000")
        );
        p.token = None;
        assert_eq!(p.worker_binding().as_deref(), Some("cert:ab"));
        assert_eq!(Principal::default().worker_binding(), None);
    }
}
