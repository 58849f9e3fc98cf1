//! TLS, and optionally mutual TLS, on the coordinator's gRPC and HTTP listeners.
//!
//! [`TlsArgs`] are the command-line flags; [`ServerTls`] holds the loaded certificate, key and
//! client CA as rustls server configurations (ring provider, TLS 1.2 and 1.3; ALPN `h2` on the
//! gRPC listener, `h2` and `http/1.1` on the HTTP one) behind an [`ArcSwap`], so that
//! [`ServerTls::reload`] (on SIGHUP or a change of the files, see [`ServerTls::spawn_watcher`])
//! applies to new handshakes without a restart. [`ServerTls::incoming`] accepts connections,
//! each handshake in its own task with a timeout ([`HANDSHAKE_TIMEOUT`]).
//!
//! With a client CA (`--tls-client-ca`), the handshake accepts clients without a certificate,
//! but a certificate that is presented must chain to the CA; [`peer_identity`] returns the
//! verified certificate's identity from a request's extensions, for the authorization layer.
//!
//! # Limits
//! - A reload applies to new connections; established ones keep the certificate, client CA
//!   and verified identity of their handshake (gRPC connections are long-lived HTTP/2).
//! - No revocation checking (CRL, OCSP) of client certificates: to shut one out, reload a
//!   client CA bundle without its issuer, or refuse its fingerprint in the authorization layer.
//! - One certificate for all names (no SNI selection); the key types are ring's (ECDSA P-256 /
//!   P-384, Ed25519, RSA ≥ 2048 bits).
//! - SIGHUP exists on Unix only; elsewhere the file poll is the one trigger.

mod identity;
mod incoming;
mod load;
mod watch;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use identity::{peer_identity, CertificateInfo, PeerIdentity, TlsPeer};
pub use incoming::{Protocols, TlsIncoming, HANDSHAKE_TIMEOUT};

/// The rustls crypto provider of the coordinator's TLS: *ring*, passed to each configuration
/// explicitly (never the process default, so that no second provider in the build can make
/// it ambiguous). *ring* is the one provider in the build (tonic's and sqlx's TLS use it too)
/// and needs no C toolchain; rustls 0.23.48 deprecated it because it has no post-quantum key
/// exchange (X25519MLKEM768), which therefore is not offered.
#[allow(deprecated)]
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// How often the certificate files are checked for changes by default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// TLS flags of the coordinator.
///
/// With `--tls-cert` and `--tls-key` both listeners (gRPC and HTTP) serve TLS only. The files
/// are re-read on SIGHUP and when one of them changes (checked every 2 s); new connections get
/// the new certificate, established ones keep theirs. A reload that fails (a missing file, a key
/// that does not match the certificate) is logged and the previous certificate stays in use.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "TLS")]
pub struct TlsArgs {
    /// PEM certificate chain, leaf first, served on the gRPC and HTTP listeners. With
    /// --tls-key, both listeners speak TLS only (plaintext clients cannot connect). Reloaded on
    /// SIGHUP and when the file changes.
    #[arg(long, env = "NAT_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "NAT_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// PEM bundle of CA certificates for client certificates (mutual TLS). Clients without a
    /// certificate still connect (token users); a certificate that is presented must chain to
    /// one of these CAs, or the handshake fails. Needs --tls-cert and --tls-key.
    #[arg(long, env = "NAT_TLS_CLIENT_CA", value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
}

impl TlsArgs {
    /// The files named by the flags; `None` when TLS is off. An error names the missing flag:
    /// the certificate and key come together, and a client CA needs both.
    pub fn files(&self) -> anyhow::Result<Option<TlsFiles>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            })),
            (Some(_), None) => anyhow::bail!("--tls-cert needs --tls-key (NAT_TLS_KEY)"),
            (None, Some(_)) => anyhow::bail!("--tls-key needs --tls-cert (NAT_TLS_CERT)"),
            (None, None) if self.tls_client_ca.is_some() => anyhow::bail!(
                "--tls-client-ca needs --tls-cert and --tls-key (mutual TLS runs over TLS)"
            ),
            (None, None) => Ok(None),
        }
    }

    /// Loads the TLS material the flags name; `None` when TLS is off.
    pub fn server_tls(&self) -> anyhow::Result<Option<ServerTls>> {
        match self.files()? {
            Some(files) => Ok(Some(ServerTls::load(files)?)),
            None => Ok(None),
        }
    }
}

/// The files of the server's TLS material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first (`--tls-cert`).
    pub cert: PathBuf,
    /// PEM private key (`--tls-key`).
    pub key: PathBuf,
    /// PEM CA bundle for client certificates (`--tls-client-ca`); `None`: no client
    /// certificates are asked for.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    fn paths(&self) -> impl Iterator<Item = &Path> {
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .map(PathBuf::as_path)
    }
}

/// Why TLS material could not be loaded. Each error names the flag and file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{flag} {}: cannot read the file", .path.display())]
    Read {
        /// The flag that names the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not valid PEM.
    #[error("{flag} {}: invalid PEM", .path.display())]
    Pem {
        /// The flag that names the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// A file has nothing of what it should hold.
    #[error("{flag} {}: no {what} found", .path.display())]
    Empty {
        /// The flag that names the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What was looked for.
        what: &'static str,
    },
    /// A certificate was rejected (e.g. a client CA that is not a valid trust anchor).
    #[error("{flag} {}: unusable certificate", .path.display())]
    Invalid {
        /// The flag that names the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::Error,
    },
    /// The certificate and key do not make a server configuration (a key that does not match
    /// the certificate, an unsupported key type).
    #[error("--tls-cert and --tls-key do not form a usable server certificate")]
    ServerConfig(#[source] rustls::Error),
    /// The client certificate verifier could not be built from the client CA bundle.
    #[error("--tls-client-ca {}: cannot build the client certificate verifier", .path.display())]
    Verifier {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
}

/// The server's TLS material, reloadable: see the [module documentation](self).
pub struct ServerTls {
    files: TlsFiles,
    current: ArcSwap<load::Loaded>,
    /// The file stamps of the last load attempt (the poller reloads when they change), held
    /// during a reload so that reloads do not interleave.
    stamps: Mutex<watch::FileStamps>,
    poll_interval: Duration,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .field("certificate", &self.current.load().leaf)
            .field("poll_interval", &self.poll_interval)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads the certificate chain, key and client CA of `files`.
    pub fn load(files: TlsFiles) -> Result<ServerTls, TlsError> {
        let stamps = watch::stamps(files.paths());
        let loaded = load::load(&files)?;
        log_certificate(&loaded.leaf, &files, "TLS enabled");
        Ok(ServerTls {
            files,
            current: ArcSwap::from_pointee(loaded),
            stamps: Mutex::new(stamps),
            poll_interval: DEFAULT_POLL_INTERVAL,
        })
    }

    /// Sets how often the watcher checks the files for changes (default
    /// [`DEFAULT_POLL_INTERVAL`]); zero turns the polling off (SIGHUP still reloads).
    pub fn with_poll_interval(mut self, interval: Duration) -> ServerTls {
        self.poll_interval = interval;
        self
    }

    /// The files this material is loaded from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The certificate served now.
    pub fn certificate(&self) -> CertificateInfo {
        self.current.load().leaf.clone()
    }

    /// The server configuration that new connections of a listener get now.
    pub fn config(&self, protocols: Protocols) -> Arc<rustls::ServerConfig> {
        let current = self.current.load();
        match protocols {
            Protocols::Grpc => current.grpc.clone(),
            Protocols::Http => current.http.clone(),
        }
    }

    /// Re-reads the files. On success new handshakes use the new material (established
    /// connections keep theirs); on error the previous material stays, and the error is logged
    /// and returned.
    pub fn reload(&self) -> Result<(), TlsError> {
        self.reload_because("request")
    }

    /// [`Self::reload`], logging `trigger` as the reason.
    fn reload_because(&self, trigger: &'static str) -> Result<(), TlsError> {
        let mut stamps = self.stamps.lock().unwrap_or_else(|e| e.into_inner());
        // Stamped before reading: a change during the read is seen by the next poll.
        *stamps = watch::stamps(self.files.paths());
        match load::load(&self.files) {
            Ok(loaded) => {
                log_certificate(&loaded.leaf, &self.files, "TLS certificates reloaded");
                self.current.store(Arc::new(loaded));
                Ok(())
            }
            Err(err) => {
                nat_telemetry::report_error(
                    &err,
                    &format!(
                        "TLS reload ({trigger}) failed; the previous certificate stays in use"
                    ),
                );
                Err(err)
            }
        }
    }

    /// Reloads when the files' stamps differ from the last load attempt's; `None` when they do
    /// not.
    fn reload_if_changed(&self) -> Option<Result<(), TlsError>> {
        let now = watch::stamps(self.files.paths());
        let changed = *self.stamps.lock().unwrap_or_else(|e| e.into_inner()) != now;
        changed.then(|| self.reload_because("file change"))
    }

    /// Spawns the reload watcher: SIGHUP (on Unix) and, unless the poll interval is zero, a
    /// check of the files' modification time and size every poll interval. It ends when
    /// `shutdown` resolves.
    pub fn spawn_watcher(
        self: &Arc<Self>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<()> {
        watch::spawn(self.clone(), shutdown)
    }

    /// The TLS connections of `listener`, offering `protocols`.
    pub fn incoming(self: &Arc<Self>, listener: TcpListener, protocols: Protocols) -> TlsIncoming {
        TlsIncoming::new(listener, self.clone(), protocols)
    }
}

fn log_certificate(leaf: &CertificateInfo, files: &TlsFiles, message: &str) {
    tracing::info!(
        fingerprint = %leaf.identity.fingerprint,
        subject_cn = leaf.identity.common_name.as_deref().unwrap_or(""),
        not_after = %leaf.not_after.map(|t| t.to_rfc3339()).unwrap_or_default(),
        client_ca = files.client_ca.is_some(),
        "{message}"
    );
    if leaf.not_after.is_some_and(|t| t < chrono::Utc::now()) {
        tracing::warn!(
            fingerprint = %leaf.identity.fingerprint,
            "the TLS certificate has expired; clients will refuse it"
        );
    }
}
