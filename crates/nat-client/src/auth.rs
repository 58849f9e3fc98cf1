//! The bearer token on every call, and clients that carry it.

use std::fmt;

use nat_proto::v1::job_service_client::JobServiceClient;
use nat_proto::v1::policy_service_client::PolicyServiceClient;
use nat_proto::v1::token_service_client::TokenServiceClient;
use nat_proto::v1::worker_service_client::WorkerServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use crate::error::ClientError;

/// A channel whose every call carries the token of an [`Auth`].
pub type AuthChannel = InterceptedService<Channel, Auth>;

/// A tonic interceptor that adds `authorization: Bearer <token>` to every request (nothing when
/// it holds no token). The value is marked sensitive, and `Debug` never shows it.
#[derive(Clone, Default)]
pub struct Auth(Option<MetadataValue<Ascii>>);

impl Auth {
    /// No token: requests go out as they are.
    pub fn none() -> Self {
        Auth(None)
    }

    /// `Bearer <token>`. A token that is empty or has a character a gRPC header cannot carry
    /// (whitespace, control or non-ASCII characters) is an error naming `flag`; the message
    /// never repeats the token.
    pub fn bearer(flag: &'static str, token: &str) -> Result<Self, ClientError> {
        let bad = |message: String| ClientError::Flag { flag, message };
        if token.is_empty() {
            return Err(bad("the token is empty".to_owned()));
        }
        if let Some(position) = token.chars().position(|c| !c.is_ascii_graphic()) {
            return Err(bad(format!(
                "the token has a character that cannot be sent in a gRPC header at position {} \
                 (only visible ASCII; give the token alone, without `Bearer `)",
                position + 1
            )));
        }
        let mut value = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| bad("the token cannot be sent in a gRPC header".to_owned()))?;
        value.set_sensitive(true);
        Ok(Auth(Some(value)))
    }

    /// Whether a token is sent.
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(_) => f.write_str("Auth(Bearer <redacted>)"),
            None => f.write_str("Auth(none)"),
        }
    }
}

impl Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A JobService client on `channel` that sends `auth`'s token.
pub fn job_client(channel: Channel, auth: &Auth) -> JobServiceClient<AuthChannel> {
    JobServiceClient::with_interceptor(channel, auth.clone())
}

/// A WorkerService client on `channel` that sends `auth`'s token.
pub fn worker_client(channel: Channel, auth: &Auth) -> WorkerServiceClient<AuthChannel> {
    WorkerServiceClient::with_interceptor(channel, auth.clone())
}

/// A TokenService client on `channel` that sends `auth`'s token.
pub fn token_client(channel: Channel, auth: &Auth) -> TokenServiceClient<AuthChannel> {
    TokenServiceClient::with_interceptor(channel, auth.clone())
}

/// A PolicyService client on `channel` that sends `auth`'s token.
pub fn policy_client(channel: Channel, auth: &Auth) -> PolicyServiceClient<AuthChannel> {
    PolicyServiceClient::with_interceptor(channel, auth.clone())
}

/// What to do about an UNAUTHENTICATED or PERMISSION_DENIED answer, for people; `None` for
/// other codes.
pub fn auth_hint(code: Code) -> Option<&'static str> {
    match code {
        Code::Unauthenticated => Some(
            "pass --token or --token-file, or set NAT_TOKEN; an expired or revoked token needs \
             replacing (an admin makes tokens with `natctl token create`)",
        ),
        Code::PermissionDenied => Some(
            "your token's role may not make this call, or the job or worker belongs to another \
             token (ask an admin for a token of the right role)",
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_interceptor_adds_the_header_only_with_a_token() {
        let mut auth = Auth::bearer("--token", "abc.DEF_1").unwrap();
        let request = auth.call(Request::new(())).unwrap();
        let value = request.metadata().get("authorization").unwrap();
        assert_eq!(value.to_str().unwrap(), "Bearer abc.DEF_1");
        assert!(value.is_sensitive());
        assert_eq!(format!("{auth:?}"), "Auth(Bearer <redacted>)");

        let mut none = Auth::none();
        let request = none.call(Request::new(())).unwrap();
        assert!(request.metadata().get("authorization").is_none());
        assert!(!none.is_set());
    }

    #[test]
    fn bad_tokens_name_the_flag() {
        let e = Auth::bearer("--token", "a b").unwrap_err().to_string();
        assert!(
            e.starts_with("--token: ") && e.contains("position 2"),
            "{e}"
        );
        let e = Auth::bearer("--token-file", "").unwrap_err().to_string();
        assert_eq!(e, "--token-file: the token is empty");
    }

    #[test]
    fn hints_for_the_auth_codes_only() {
        assert!(auth_hint(Code::Unauthenticated)
            .unwrap()
            .contains("--token"));
        assert!(auth_hint(Code::PermissionDenied).unwrap().contains("role"));
        assert_eq!(auth_hint(Code::NotFound), None);
    }
}
