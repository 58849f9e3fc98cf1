//! Connecting to a nat-orchestrator coordinator, as natctl, nat-worker and the benchmarks do.
//!
//! - [`ConnectArgs`]: the command-line flags (and `NAT_…` environment variables) of a client:
//!   `--ca-cert`, `--cert`/`--key` (mTLS), `--token`/`--token-file`, `--tls-server-name`.
//!   [`ConnectArgs::resolve`] reads and checks the files once, into [`ConnectOptions`].
//! - [`endpoint`]: one coordinator URL as a tonic [`Endpoint`]: `https://` gets TLS (the given CA,
//!   else the built-in web PKI roots; the client certificate when one is given), `http://` is
//!   plaintext.
//! - [`connect`]: the first of several comma-separated URLs that accepts a connection.
//! - [`Auth`]: the interceptor that puts `authorization: Bearer <token>` on every call, and
//!   [`job_client`], [`worker_client`], [`token_client`], [`policy_client`] that wrap a channel
//!   with it.
//!
//! Errors name the flag at fault (`--cert: …`) or the URL that failed.

mod args;
mod auth;
mod endpoint;
mod error;

pub use args::{ConnectArgs, ConnectOptions, TokenSource};
pub use auth::{
    auth_hint, job_client, policy_client, token_client, worker_client, Auth, AuthChannel,
};
pub use endpoint::{connect, endpoint, parse_urls, DEFAULT_CONNECT_TIMEOUT};
pub use error::{error_chain, ClientError};

/// Re-exported so that callers can name the channel type without depending on tonic's features.
pub use tonic::transport::{Channel, Endpoint};
