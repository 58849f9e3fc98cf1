//! `nat.v1.TokenService`: API tokens (the admin role only; the auth layer checks the role).

use std::sync::Arc;

use nat_proto::v1;
use nat_store::{ApiToken, Role};
use tonic::{Request, Response, Status};

use crate::auth::{tokens, AuthMode, Principal};
use crate::convert;
use crate::error::ApiError;
use crate::state::{parse_id, Coordinator};

/// The TokenService implementation.
#[derive(Debug, Clone)]
pub struct TokenApi {
    c: Arc<Coordinator>,
}

impl TokenApi {
    /// The service over shared state.
    pub fn new(c: Arc<Coordinator>) -> Self {
        TokenApi { c }
    }

    /// Token management needs `--auth token`: without authentication every caller is
    /// anonymous, and a token minted by anyone who reaches the port would stay valid once
    /// authentication is switched on. (The bootstrap command writes to the database directly.)
    fn check_enabled(&self) -> Result<(), ApiError> {
        if self.c.config.auth.mode == AuthMode::None {
            return Err(ApiError::FailedPrecondition(
                "token management needs a coordinator running with --auth token; to create the \
                 first admin token use `nat-coordinator token create --role admin`"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// The wire form of a role.
pub fn role_to_proto(role: Role) -> v1::Role {
    match role {
        Role::Admin => v1::Role::Admin,
        Role::User => v1::Role::User,
        Role::Viewer => v1::Role::Viewer,
        Role::Worker => v1::Role::Worker,
    }
}

/// A role from the wire; the error names `field`.
pub fn role_from_proto(field: &str, role: i32) -> Result<Role, ApiError> {
    match v1::Role::try_from(role) {
        Ok(v1::Role::Admin) => Ok(Role::Admin),
        Ok(v1::Role::User) => Ok(Role::User),
        Ok(v1::Role::Viewer) => Ok(Role::Viewer),
        Ok(v1::Role::Worker) => Ok(Role::Worker),
        Ok(v1::Role::Unspecified) => Err(ApiError::invalid(
            field,
            "is required (admin, user, viewer or worker)",
        )),
        Err(_) => Err(ApiError::invalid(field, format!("unknown role {role}"))),
    }
}

/// The wire form of a stored token.
pub fn token_to_proto(t: &ApiToken) -> v1::ApiToken {
    let ms = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(convert::unix_ms).unwrap_or(0);
    v1::ApiToken {
        id: t.id.to_string(),
        name: t.name.clone(),
        role: role_to_proto(t.role) as i32,
        created_at_unix_ms: convert::unix_ms(t.created_at),
        expires_at_unix_ms: ms(t.expires_at),
        revoked_at_unix_ms: ms(t.revoked_at),
        created_by: t.created_by.clone().unwrap_or_default(),
        last_used_at_unix_ms: ms(t.last_used_at),
    }
}

#[tonic::async_trait]
impl v1::token_service_server::TokenService for TokenApi {
    async fn create_token(
        &self,
        request: Request<v1::CreateTokenRequest>,
    ) -> Result<Response<v1::CreateTokenResponse>, Status> {
        self.check_enabled()?;
        let principal = Principal::of(&request);
        let r = request.into_inner();
        let role = role_from_proto("role", r.role)?;
        let (token, secret) = tokens::create(
            &*self.c.store,
            role,
            r.name.trim(),
            r.expires_in_seconds,
            principal.owner(),
            self.c.clock.now(),
        )
        .await?;
        tracing::info!(token = %token.id, name = %token.name, role = %token.role, by = principal.owner().unwrap_or("-"), "token created");
        Ok(Response::new(v1::CreateTokenResponse {
            token: Some(token_to_proto(&token)),
            secret,
        }))
    }

    async fn list_tokens(
        &self,
        request: Request<v1::ListTokensRequest>,
    ) -> Result<Response<v1::ListTokensResponse>, Status> {
        self.check_enabled()?;
        let r = request.into_inner();
        let tokens = self
            .c
            .store
            .list_tokens(r.include_revoked)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(v1::ListTokensResponse {
            tokens: tokens.iter().map(token_to_proto).collect(),
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<v1::RevokeTokenRequest>,
    ) -> Result<Response<v1::RevokeTokenResponse>, Status> {
        self.check_enabled()?;
        let principal = Principal::of(&request);
        let r = request.into_inner();
        let id: uuid::Uuid = parse_id("id", &r.id)?;
        let token = self
            .c
            .store
            .revoke_token(id, self.c.clock.now())
            .await
            .map_err(ApiError::from)?;
        // Effective at once on this coordinator (others re-read within the cache TTL).
        self.c.auth.forget(token.id);
        tracing::info!(token = %token.id, name = %token.name, by = principal.owner().unwrap_or("-"), "token revoked");
        Ok(Response::new(v1::RevokeTokenResponse {
            token: Some(token_to_proto(&token)),
        }))
    }
}
