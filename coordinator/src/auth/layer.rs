//! The tower layer in front of the gRPC services: authenticates each call, checks its role
//! against [`super::access::grpc`], and puts the caller's [`Principal`] in the request's
//! extensions (tonic hands them to the handler). A refused call never reaches a service.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::Status;

use super::access::{self, Access};
use super::{AuthMode, Authenticator, Principal};
use crate::error::ApiError;

/// Adds [`AuthService`] in front of a service.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
}

impl AuthLayer {
    /// A layer over `auth`.
    pub fn new(auth: Arc<Authenticator>) -> Self {
        AuthLayer { auth }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            auth: self.auth.clone(),
        }
    }
}

/// See [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

impl<S> tower::Service<http::Request<Body>> for AuthService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // The ready service goes with this call; the clone waits for the next poll_ready.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        // What the check needs, taken out of the request (its body is not `Sync`).
        let call = Call::of(&request);
        Box::pin(async move {
            match authorize(&auth, &call).await {
                Ok(principal) => {
                    request.extensions_mut().insert(principal);
                    inner.call(request).await
                }
                Err(err) => {
                    tracing::info!(method = %call.path, error = %err, "call refused");
                    nat_telemetry::record::auth_refused(match err {
                        ApiError::Unauthenticated(_) => "unauthenticated",
                        _ => "permission_denied",
                    });
                    Ok(Status::from(err).into_http())
                }
            }
        })
    }
}

/// The parts of a gRPC request that authentication reads.
struct Call {
    path: String,
    /// The `authorization` header; `Err` when it is not ASCII.
    authorization: Result<Option<String>, ()>,
    /// The verified client certificate's fingerprint.
    cert: Option<String>,
}

impl Call {
    fn of(request: &http::Request<Body>) -> Call {
        let authorization = match request.headers().get(http::header::AUTHORIZATION) {
            Some(v) => v.to_str().map(|v| Some(v.to_string())).map_err(|_| ()),
            None => Ok(None),
        };
        Call {
            path: request.uri().path().to_string(),
            authorization,
            cert: crate::tls::peer_identity(request.extensions()).map(|p| p.fingerprint),
        }
    }
}

/// The principal of a gRPC call, or why it is refused.
async fn authorize(auth: &Authenticator, call: &Call) -> Result<Principal, ApiError> {
    let path = call.path.as_str();
    let cert = call.cert.clone();
    if access::is_worker_service(path) && auth.settings().worker_certs_required && cert.is_none() {
        return Err(ApiError::Unauthenticated(
            "the WorkerService needs a client certificate from the coordinator's client CA \
             (mTLS: nat-worker --cert/--key)"
                .into(),
        ));
    }
    let roles = match access::grpc(path) {
        Access::Open => return Ok(Principal::default()),
        Access::Roles(roles) => roles,
    };
    if auth.settings().mode == AuthMode::None {
        return Ok(Principal {
            token: None,
            cert_fingerprint: cert,
        });
    }
    let header = call
        .authorization
        .as_ref()
        .map_err(|()| ApiError::Unauthenticated("the authorization header is not ASCII".into()))?;
    auth.principal(header.as_deref(), cert, roles, path).await
}
