//! The connection flags ([`ConnectArgs`]) and what they resolve to ([`ConnectOptions`]).

use std::fmt;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::transport::{Certificate, Identity};

use crate::auth::Auth;
use crate::error::ClientError;

/// A token file larger than this is certainly not a token file.
const MAX_TOKEN_FILE_BYTES: u64 = 64 * 1024;

/// How a client reaches a coordinator securely: the CA to trust, the client certificate for
/// mutual TLS, and the bearer token. Every flag is also an environment variable; all are global
/// (they may follow a subcommand).
///
/// `Debug` never shows the token.
#[derive(clap::Args, Clone, Default)]
pub struct ConnectArgs {
    /// PEM file of the CA certificate(s) to trust for https:// coordinators. Default: the web PKI
    /// roots built into the binary (a coordinator with a publicly trusted certificate).
    #[arg(long, global = true, env = "NAT_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

    /// Client certificate (PEM, leaf first, then any intermediates) for mutual TLS; needs --key.
    #[arg(
        long,
        global = true,
        env = "NAT_CLIENT_CERT",
        value_name = "FILE",
        requires = "key"
    )]
    pub cert: Option<PathBuf>,

    /// Private key (PEM) of --cert.
    #[arg(
        long,
        global = true,
        env = "NAT_CLIENT_KEY",
        value_name = "FILE",
        requires = "cert"
    )]
    pub key: Option<PathBuf>,

    /// Bearer token sent with every call (`authorization: Bearer …`). Prefer NAT_TOKEN or
    /// --token-file: other users can read a command line.
    #[arg(
        long,
        global = true,
        env = "NAT_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,

    /// File holding the bearer token (surrounding whitespace is ignored). It should be readable
    /// by its owner only (a warning otherwise).
    #[arg(long, global = true, env = "NAT_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Name to check the coordinator's certificate against when it is not the URL's host (e.g.
    /// connecting by IP address to a certificate issued for a DNS name).
    #[arg(long, global = true, env = "NAT_TLS_SERVER_NAME", value_name = "NAME")]
    pub tls_server_name: Option<String>,
}

impl fmt::Debug for ConnectArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectArgs")
            .field("ca_cert", &self.ca_cert)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("tls_server_name", &self.tls_server_name)
            .finish()
    }
}

/// Where the bearer token came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// `--token` or `NAT_TOKEN`.
    Flag,
    /// `--token-file` or `NAT_TOKEN_FILE`.
    File(PathBuf),
}

impl fmt::Display for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::Flag => f.write_str("--token / NAT_TOKEN"),
            TokenSource::File(path) => write!(f, "--token-file {}", path.display()),
        }
    }
}

/// The connection flags, checked and with their files read: what [`crate::endpoint`] and
/// [`crate::connect`] use. `Debug` never shows the token.
#[derive(Clone, Default)]
pub struct ConnectOptions {
    ca: Option<(PathBuf, Certificate)>,
    identity: Option<(PathBuf, Identity)>,
    tls_server_name: Option<String>,
    token_source: Option<TokenSource>,
    auth: Auth,
    warnings: Vec<String>,
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("ca", &self.ca.as_ref().map(|(path, _)| path))
            .field("identity", &self.identity.as_ref().map(|(path, _)| path))
            .field("tls_server_name", &self.tls_server_name)
            .field("token_source", &self.token_source)
            .field("warnings", &self.warnings)
            .finish_non_exhaustive()
    }
}

impl ConnectArgs {
    /// Checks the flags and reads their files. Errors name the flag: `--cert` without `--key`
    /// (or the reverse), `--token` with `--token-file`, a file that cannot be read or holds no
    /// PEM certificate / key, an empty token file, a token with characters a gRPC header cannot
    /// carry. A token file that other users may read is a warning ([`ConnectOptions::warnings`]).
    pub fn resolve(&self) -> Result<ConnectOptions, ClientError> {
        let mut warnings = Vec::new();
        let ca = match &self.ca_cert {
            Some(path) => Some((path.clone(), read_certificates("--ca-cert", path)?)),
            None => None,
        };
        let identity = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let cert_pem = read_certificates("--cert", cert)?;
                let key_pem = read_private_key("--key", key)?;
                Some((cert.clone(), Identity::from_pem(cert_pem, key_pem)))
            }
            (Some(_), None) => {
                return Err(flag(
                    "--cert",
                    "needs --key (NAT_CLIENT_KEY) too: the client certificate's private key",
                ))
            }
            (None, Some(_)) => {
                return Err(flag(
                    "--key",
                    "needs --cert (NAT_CLIENT_CERT) too: the client certificate it belongs to",
                ))
            }
            (None, None) => None,
        };
        let tls_server_name = match &self.tls_server_name {
            Some(name) => {
                let name = name.trim();
                ServerName::try_from(name).map_err(|_| {
                    flag(
                        "--tls-server-name",
                        format!("{name:?} is not a DNS name or an IP address"),
                    )
                })?;
                Some(name.to_owned())
            }
            None => None,
        };
        let (auth, token_source) = match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => return Err(flag(
                "--token-file",
                "give --token or --token-file, not both (NAT_TOKEN and NAT_TOKEN_FILE count too)",
            )),
            (Some(token), None) => (
                Auth::bearer("--token (NAT_TOKEN)", token.trim())?,
                Some(TokenSource::Flag),
            ),
            (None, Some(path)) => {
                let (token, warning) = read_token_file(path)?;
                warnings.extend(warning);
                (
                    Auth::bearer("--token-file", &token)?,
                    Some(TokenSource::File(path.clone())),
                )
            }
            (None, None) => (Auth::default(), None),
        };
        for warning in &warnings {
            tracing::warn!("{warning}");
        }
        Ok(ConnectOptions {
            ca,
            identity,
            tls_server_name,
            token_source,
            auth,
            warnings,
        })
    }
}

impl ConnectOptions {
    /// The interceptor that sends the token (none when no token was given).
    pub fn auth(&self) -> Auth {
        self.auth.clone()
    }

    /// Where the token came from; `None` without a token.
    pub fn token_source(&self) -> Option<&TokenSource> {
        self.token_source.as_ref()
    }

    /// Warnings about the flags (a token file other users may read), for the caller to show.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The CA file to trust, when `--ca-cert` was given.
    pub fn ca_cert_path(&self) -> Option<&Path> {
        self.ca.as_ref().map(|(path, _)| path.as_path())
    }

    /// The client certificate file, when `--cert` was given.
    pub fn client_cert_path(&self) -> Option<&Path> {
        self.identity.as_ref().map(|(path, _)| path.as_path())
    }

    /// The flags that only make sense with TLS (`--ca-cert`, `--cert`, `--tls-server-name`) that
    /// were given; an `http://` URL with any of them is an error.
    pub fn tls_flags(&self) -> Vec<&'static str> {
        let mut flags = Vec::new();
        if self.ca.is_some() {
            flags.push("--ca-cert");
        }
        if self.identity.is_some() {
            flags.push("--cert");
        }
        if self.tls_server_name.is_some() {
            flags.push("--tls-server-name");
        }
        flags
    }

    pub(crate) fn ca(&self) -> Option<&Certificate> {
        self.ca.as_ref().map(|(_, ca)| ca)
    }

    pub(crate) fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref().map(|(_, identity)| identity)
    }

    pub(crate) fn tls_server_name(&self) -> Option<&str> {
        self.tls_server_name.as_deref()
    }

    /// One line on how https:// coordinators are verified and whether a client certificate is
    /// sent (for `nat-worker doctor` and logs).
    pub fn tls_summary(&self) -> String {
        let trust = match self.ca_cert_path() {
            Some(path) => format!("https:// trusts the CA in {}", path.display()),
            None => "https:// trusts the built-in web PKI roots".to_owned(),
        };
        let client = match self.client_cert_path() {
            Some(path) => format!("client certificate {}", path.display()),
            None => "no client certificate".to_owned(),
        };
        match self.tls_server_name() {
            Some(name) => format!("{trust}; {client}; server name {name}"),
            None => format!("{trust}; {client}"),
        }
    }

    /// One line on the token: where it comes from, never its value.
    pub fn token_summary(&self) -> String {
        match &self.token_source {
            Some(source) => format!("set (from {source})"),
            None => "none (calls are sent without a token)".to_owned(),
        }
    }
}

fn flag(flag: &'static str, message: impl Into<String>) -> ClientError {
    ClientError::Flag {
        flag,
        message: message.into(),
    }
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::Read {
        flag,
        path: path.to_path_buf(),
        source,
    })
}

/// A PEM file with at least one certificate, as read (tonic parses it again when connecting).
fn read_certificates(name: &'static str, path: &Path) -> Result<Certificate, ClientError> {
    let pem = read(name, path)?;
    let mut count = 0;
    for item in CertificateDer::pem_slice_iter(&pem) {
        item.map_err(|e| flag(name, format!("{}: bad PEM: {e}", path.display())))?;
        count += 1;
    }
    if count == 0 {
        return Err(flag(
            name,
            format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            ),
        ));
    }
    Ok(Certificate::from_pem(pem))
}

/// A PEM file with a private key (PKCS#8, PKCS#1 or SEC1), as read.
fn read_private_key(name: &'static str, path: &Path) -> Result<Vec<u8>, ClientError> {
    let pem = read(name, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        flag(
            name,
            format!("{} holds no usable PEM private key ({e})", path.display()),
        )
    })?;
    Ok(pem)
}

/// The token in `path` (surrounding whitespace removed) and, when other users may read the file,
/// a warning saying so.
pub(crate) fn read_token_file(path: &Path) -> Result<(String, Option<String>), ClientError> {
    const FLAG: &str = "--token-file";
    let metadata = std::fs::metadata(path).map_err(|source| ClientError::Read {
        flag: FLAG,
        path: path.to_path_buf(),
        source,
    })?;
    if !metadata.is_file() {
        return Err(flag(FLAG, format!("{} is not a file", path.display())));
    }
    if metadata.len() > MAX_TOKEN_FILE_BYTES {
        return Err(flag(
            FLAG,
            format!(
                "{} is {} bytes: too large to hold a token",
                path.display(),
                metadata.len()
            ),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|source| ClientError::Read {
        flag: FLAG,
        path: path.to_path_buf(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(flag(FLAG, format!("{} is empty", path.display())));
    }
    Ok((token.to_owned(), loose_permissions(path, &metadata)))
}

#[cfg(unix)]
fn loose_permissions(path: &Path, metadata: &std::fs::Metadata) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "--token-file: {} is open to other users (mode {mode:03o}); `chmod 600` it",
            path.display()
        )
    })
}

#[cfg(not(unix))]
fn loose_permissions(_path: &Path, _metadata: &std::fs::Metadata) -> Option<String> {
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        connect: ConnectArgs,
    }

    fn parse(argv: &[&str]) -> Result<ConnectArgs, clap::Error> {
        let mut all = vec!["test"];
        all.extend_from_slice(argv);
        Cli::try_parse_from(all).map(|cli| cli.connect)
    }

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        #[cfg(not(unix))]
        let _ = mode;
        path
    }

    fn error(args: &ConnectArgs) -> String {
        args.resolve().unwrap_err().to_string()
    }

    #[test]
    fn token_files_are_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "t", "  nat_abc.DEF-123\n\n", 0o600);
        let (token, warning) = read_token_file(&path).unwrap();
        assert_eq!(token, "nat_abc.DEF-123");
        assert_eq!(warning, None);
        let args = ConnectArgs {
            token_file: Some(path.clone()),
            ..ConnectArgs::default()
        };
        let options = args.resolve().unwrap();
        assert_eq!(options.token_source(), Some(&TokenSource::File(path)));
        assert!(options.auth().is_set());
        assert!(options.warnings().is_empty());
    }

    #[test]
    fn empty_missing_and_odd_token_files_are_errors_naming_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text, expected) in [
            ("empty", "", "is empty"),
            ("blank", " \n\t\n", "is empty"),
            ("spaced", "abc def\n", "cannot be sent"),
        ] {
            let path = write(dir.path(), name, text, 0o600);
            let e = error(&ConnectArgs {
                token_file: Some(path),
                ..ConnectArgs::default()
            });
            assert!(e.starts_with("--token-file: "), "{e}");
            assert!(e.contains(expected), "{name}: {e}");
        }
        let missing = error(&ConnectArgs {
            token_file: Some(dir.path().join("nope")),
            ..ConnectArgs::default()
        });
        assert!(
            missing.starts_with("--token-file: cannot read "),
            "{missing}"
        );
        let folder = error(&ConnectArgs {
            token_file: Some(dir.path().to_path_buf()),
            ..ConnectArgs::default()
        });
        assert!(folder.ends_with("is not a file"), "{folder}");
    }

    #[cfg(unix)]
    #[test]
    fn a_token_file_others_can_read_is_a_warning_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "t", "secret\n", 0o644);
        let options = ConnectArgs {
            token_file: Some(path),
            ..ConnectArgs::default()
        }
        .resolve()
        .unwrap();
        assert!(options.auth().is_set());
        let [warning] = options.warnings() else {
            panic!("one warning expected: {:?}", options.warnings());
        };
        assert!(
            warning.starts_with("--token-file: ") && warning.contains("mode 644"),
            "{warning}"
        );
    }

    #[test]
    fn tokens_with_header_breaking_characters_are_errors() {
        for bad in ["", "   ", "Bearer abc", "tök", "a\u{7f}b"] {
            let e = error(&ConnectArgs {
                token: Some(bad.into()),
                ..ConnectArgs::default()
            });
            assert!(e.starts_with("--token (NAT_TOKEN): "), "{bad:?}: {e}");
            assert!(!e.contains("abc"), "the token is not echoed: {e}");
        }
        let options = ConnectArgs {
            token: Some(" tok.en_1-2+3/4=\n".into()),
            ..ConnectArgs::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(options.token_source(), Some(&TokenSource::Flag));
    }

    #[test]
    fn cert_and_key_go_together() {
        let dir = tempfile::tempdir().unwrap();
        let some = Some(dir.path().join("x.pem"));
        let e = error(&ConnectArgs {
            cert: some.clone(),
            ..ConnectArgs::default()
        });
        assert!(e.starts_with("--cert: needs --key"), "{e}");
        let e = error(&ConnectArgs {
            key: some,
            ..ConnectArgs::default()
        });
        assert!(e.starts_with("--key: needs --cert"), "{e}");
        // clap says so too, before anything is read.
        let e = parse(&["--cert", "c.pem"]).unwrap_err().to_string();
        assert!(e.contains("--key"), "{e}");
    }

    #[test]
    fn token_and_token_file_conflict() {
        let e = parse(&["--token", "a", "--token-file", "f"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--token-file") && e.contains("--token"), "{e}");
        let e = error(&ConnectArgs {
            token: Some("a".into()),
            token_file: Some("f".into()),
            ..ConnectArgs::default()
        });
        assert!(e.starts_with("--token-file: give --token or"), "{e}");
    }

    #[test]
    fn pem_files_are_checked_naming_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let junk = write(dir.path(), "junk.pem", "not a certificate\n", 0o600);
        let e = error(&ConnectArgs {
            ca_cert: Some(junk.clone()),
            ..ConnectArgs::default()
        });
        assert!(
            e.starts_with("--ca-cert: ") && e.contains("holds no PEM certificate"),
            "{e}"
        );
        let e = error(&ConnectArgs {
            ca_cert: Some(dir.path().join("missing.pem")),
            ..ConnectArgs::default()
        });
        assert!(e.starts_with("--ca-cert: cannot read "), "{e}");

        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["client".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let cert_file = write(dir.path(), "c.pem", &cert.pem(), 0o600);
        let key_file = write(dir.path(), "k.pem", &key.serialize_pem(), 0o600);
        let e = error(&ConnectArgs {
            cert: Some(cert_file.clone()),
            key: Some(junk),
            ..ConnectArgs::default()
        });
        assert!(
            e.starts_with("--key: ") && e.contains("no usable PEM private key"),
            "{e}"
        );
        let e = error(&ConnectArgs {
            cert: Some(key_file.clone()),
            key: Some(key_file.clone()),
            ..ConnectArgs::default()
        });
        assert!(e.starts_with("--cert: "), "{e}");
        let options = ConnectArgs {
            cert: Some(cert_file.clone()),
            key: Some(key_file),
            ca_cert: Some(cert_file.clone()),
            ..ConnectArgs::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(options.client_cert_path(), Some(cert_file.as_path()));
        assert_eq!(options.tls_flags(), ["--ca-cert", "--cert"]);
        assert!(options.tls_summary().contains("client certificate"));
    }

    #[test]
    fn server_names_are_checked() {
        let e = error(&ConnectArgs {
            tls_server_name: Some("not a name".into()),
            ..ConnectArgs::default()
        });
        assert!(e.starts_with("--tls-server-name: "), "{e}");
        for good in ["coordinator.example", "10.0.0.1", "::1"] {
            ConnectArgs {
                tls_server_name: Some(good.into()),
                ..ConnectArgs::default()
            }
            .resolve()
            .unwrap();
        }
    }

    #[test]
    fn debug_never_shows_the_token() {
        let args = parse(&["--token", "s3cret"]).unwrap();
        assert!(!format!("{args:?}").contains("s3cret"));
        let options = args.resolve().unwrap();
        assert!(!format!("{options:?}").contains("s3cret"));
        assert!(!options.token_summary().contains("s3cret"));
    }
}
