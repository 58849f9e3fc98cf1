//! Who is on the other end of a TLS connection: the verified client certificate's identity, as
//! the gRPC and HTTP servers put it in each request's extensions.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use chrono::{DateTime, Utc};
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use super::incoming::TlsIncoming;

/// The identity of a client certificate that the handshake verified against
/// `--tls-client-ca`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// SHA-256 of the leaf certificate's DER encoding, lowercase hex (64 characters): what a
    /// worker registry pins.
    pub fingerprint: String,
    /// The first subject common name of the leaf certificate, when it has one that is text.
    pub common_name: Option<String>,
}

impl PeerIdentity {
    /// The identity of a DER-encoded certificate. The fingerprint is always there; the common
    /// name is `None` when the certificate has none (or cannot be parsed, which a verified
    /// certificate always can).
    pub fn of(der: &[u8]) -> PeerIdentity {
        CertificateInfo::of(der).identity
    }
}

/// What the logs say about a certificate: its identity and expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// Fingerprint and common name.
    pub identity: PeerIdentity,
    /// The end of the validity period (`None` if the certificate cannot be parsed).
    pub not_after: Option<DateTime<Utc>>,
}

impl CertificateInfo {
    /// Describes a DER-encoded certificate.
    pub fn of(der: &[u8]) -> CertificateInfo {
        let fingerprint = hex::encode(Sha256::digest(der));
        let (common_name, not_after) = match x509_parser::parse_x509_certificate(der) {
            Ok((_, cert)) => (
                cert.subject()
                    .iter_common_name()
                    .find_map(|cn| cn.as_str().ok())
                    .map(str::to_string),
                DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0),
            ),
            Err(_) => (None, None),
        };
        CertificateInfo {
            identity: PeerIdentity {
                fingerprint,
                common_name,
            },
            not_after,
        }
    }
}

/// The connection information of the HTTP listener under TLS, available to axum handlers and
/// middleware as `axum::extract::ConnectInfo<TlsPeer>` (the server is run with
/// `into_make_service_with_connect_info::<TlsPeer>()`).
#[derive(Debug, Clone)]
pub struct TlsPeer {
    /// The client's address.
    pub remote_addr: SocketAddr,
    /// The certificate chain the client presented and the handshake verified (leaf first);
    /// `None` without one.
    pub certificates: Option<Arc<Vec<CertificateDer<'static>>>>,
}

impl Connected<IncomingStream<'_, TlsIncoming>> for TlsPeer {
    fn connect_info(stream: IncomingStream<'_, TlsIncoming>) -> Self {
        let (_, session) = stream.io().get_ref();
        TlsPeer {
            remote_addr: *stream.remote_addr(),
            certificates: session
                .peer_certificates()
                .map(|chain| Arc::new(chain.to_vec())),
        }
    }
}

/// The verified client certificate's identity of the connection a request came on, from the
/// request's extensions: tonic's [`TlsConnectInfo`] (gRPC listener) or axum's
/// `ConnectInfo<`[`TlsPeer`]`>` (HTTP listener). `None` on a plaintext connection, or when the
/// client presented no certificate (with `--tls-client-ca` a client may connect without one; a
/// certificate it presents has been verified against that CA during the handshake — without
/// `--tls-client-ca` the server asks for none).
///
/// The identity is the connection's: a reload that changes the client CA applies to new
/// connections only.
pub fn peer_identity(ext: &tonic::Extensions) -> Option<PeerIdentity> {
    let chain = match ext.get::<TlsConnectInfo<TcpConnectInfo>>() {
        Some(info) => info.peer_certs(),
        None => ext
            .get::<axum::extract::ConnectInfo<TlsPeer>>()
            .and_then(|info| info.0.certificates.clone()),
    }?;
    chain.first().map(|leaf| PeerIdentity::of(leaf.as_ref()))
}
