//! Reading the PEM files and building the rustls server configurations from them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use super::identity::CertificateInfo;
use super::{TlsError, TlsFiles};

/// ALPN protocol ids.
const ALPN_H2: &[u8] = b"h2";
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// One loaded generation of the TLS material: what a reload swaps as a whole.
#[derive(Debug)]
pub(super) struct Loaded {
    /// For the gRPC listener: ALPN `h2` only (gRPC is HTTP/2).
    pub grpc: Arc<ServerConfig>,
    /// For the HTTP listener: ALPN `h2` and `http/1.1`.
    pub http: Arc<ServerConfig>,
    /// The served leaf certificate.
    pub leaf: CertificateInfo,
}

/// Reads `files` and builds both server configurations (ring provider, TLS 1.2 and 1.3).
pub(super) fn load(files: &TlsFiles) -> Result<Loaded, TlsError> {
    let chain = read_certificates(files.cert.as_path(), "--tls-cert")?;
    let key = read_private_key(files.key.as_path())?;
    let leaf = CertificateInfo::of(chain[0].as_ref());
    let provider = super::crypto_provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::ServerConfig)?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certificates(path, "--tls-client-ca")? {
                roots.add(cert).map_err(|source| TlsError::Invalid {
                    flag: "--tls-client-ca",
                    path: path.clone(),
                    source,
                })?;
            }
            // Clients without a certificate (natctl users with a token) complete the
            // handshake; a certificate that is presented must chain to these roots.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|source| TlsError::Verifier {
                    path: path.clone(),
                    source,
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut http = builder
        .with_single_cert(chain, key)
        .map_err(TlsError::ServerConfig)?;
    http.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    let mut grpc = http.clone();
    grpc.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Loaded {
        grpc: Arc::new(grpc),
        http: Arc::new(http),
        leaf,
    })
}

/// Reads a file whole; the error names `flag` and the path.
fn read(path: &Path, flag: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        flag,
        path: path.to_path_buf(),
        source,
    })
}

/// All `CERTIFICATE` sections of a PEM file, in order; at least one.
fn read_certificates(
    path: &Path,
    flag: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path, flag)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| pem_error(flag, path, source))?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            flag,
            path: path.to_path_buf(),
            what: "PEM CERTIFICATE section",
        });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    const FLAG: &str = "--tls-key";
    let pem = read(path, FLAG)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|source| match source {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            flag: FLAG,
            path: path.to_path_buf(),
            what: "PEM private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY section)",
        },
        other => pem_error(FLAG, path, other),
    })
}

fn pem_error(flag: &'static str, path: &Path, source: rustls::pki_types::pem::Error) -> TlsError {
    TlsError::Pem {
        flag,
        path: PathBuf::from(path),
        source,
    }
}
