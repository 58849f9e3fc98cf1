//! Authentication of the HTTP listener (dashboard, its JSON API, `/metrics`): the same tokens as
//! gRPC, as `Authorization: Bearer <token>` or, for browsers, HTTP Basic with the token as the
//! password (a 401 asks the browser for it). `/healthz` and `/readyz` stay open for probes;
//! `/metrics` too with `--metrics-public`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};

use super::access::{self, Access};
use super::{AuthMode, Authenticator};
use crate::error::ApiError;

/// Middleware: lets a request through when its token's role may see the path.
pub async fn middleware(
    State(auth): State<Arc<Authenticator>>,
    request: Request,
    next: Next,
) -> Response {
    if auth.settings().mode == AuthMode::None {
        return next.run(request).await;
    }
    let settings = auth.settings();
    let roles = match access::http(
        request.uri().path(),
        settings.users_read_all,
        settings.metrics_public,
    ) {
        Access::Open => return next.run(request).await,
        Access::Roles(roles) => roles,
    };
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let path = request.uri().path().to_string();
    match auth.principal(header, None, roles, &path).await {
        Ok(_) => next.run(request).await,
        Err(ApiError::PermissionDenied(msg)) => {
            nat_telemetry::record::auth_refused("permission_denied");
            (StatusCode::FORBIDDEN, format!("{msg}\n")).into_response()
        }
        Err(ApiError::Unauthenticated(msg)) => {
            nat_telemetry::record::auth_refused("unauthenticated");
            let mut response = (StatusCode::UNAUTHORIZED, format!("{msg}\n")).into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(
                    "Basic realm=\"nat-orchestrator (password: your token)\", charset=\"UTF-8\"",
                ),
            );
            response
        }
        Err(err) => {
            tracing::error!(error = %err, "token check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot check the token now\n",
            )
                .into_response()
        }
    }
}
