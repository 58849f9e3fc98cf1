//! Support of the TLS tests: certificates made with rcgen, certificate files, a TLS coordinator
//! on port 0, and TLS clients (tonic, and a raw tokio-rustls HTTP/1.1 client).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nat_coordinator::tls::{ServerTls, TlsFiles};
use nat_coordinator::{Coordinator, ServeOptions, SystemClock};
use nat_proto::v1;
use nat_proto::v1::job_service_client::JobServiceClient;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::common::{test_config, Backend, TestDb};

/// A certificate authority.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// Its certificate, PEM.
    pub pem: String,
}

/// A certificate with its key.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        let pem = issuer.pem();
        Ca { issuer, pem }
    }

    fn leaf(&self, names: &[&str], common_name: &str) -> Leaf {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    pub fn server(&self) -> Leaf {
        self.leaf(&["localhost", "127.0.0.1"], "nat-coordinator")
    }

    /// A client certificate with subject CN `common_name`.
    pub fn client(&self, common_name: &str) -> Leaf {
        self.leaf(&[], common_name)
    }
}

/// Certificate files in a temporary directory.
pub struct Files {
    _dir: tempfile::TempDir,
    pub files: TlsFiles,
}

impl Files {
    pub fn write(server: &Leaf, client_ca: Option<&Ca>) -> Files {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = TlsFiles {
            cert: dir.path().join("server.crt"),
            key: dir.path().join("server.key"),
            client_ca: client_ca.map(|_| dir.path().join("client-ca.crt")),
        };
        let out = Files { _dir: dir, files };
        out.replace(server, client_ca);
        out
    }

    /// Overwrites the files in place (certificate first, then key, then client CA), as an
    /// operator copying files does.
    pub fn replace(&self, server: &Leaf, client_ca: Option<&Ca>) {
        write(&self.files.cert, &server.cert_pem);
        write(&self.files.key, &server.key_pem);
        if let (Some(path), Some(ca)) = (&self.files.client_ca, client_ca) {
            write(path, &ca.pem);
        }
    }
}

pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write a certificate file");
}

/// A coordinator on port 0 serving gRPC and HTTP with TLS.
pub struct TlsServer {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub tls: Arc<ServerTls>,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), nat_coordinator::ServeError>>>,
    db: Option<TestDb>,
}

impl TlsServer {
    pub async fn start(tls: ServerTls) -> TlsServer {
        TlsServer::start_with(tls, test_config()).await
    }

    /// [`TlsServer::start`] with other settings (authentication, for instance).
    pub async fn start_with(tls: ServerTls, config: nat_coordinator::Config) -> TlsServer {
        let db = TestDb::new(Backend::Sqlite).await;
        let store = nat_store::connect(&db.url).await.expect("store opens");
        let coordinator = Coordinator::new(store, Arc::new(SystemClock), config);
        let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let (grpc_addr, http_addr) = (
            grpc.local_addr().expect("addr"),
            http.local_addr().expect("addr"),
        );
        let tls = Arc::new(tls);
        let options = ServeOptions {
            tls: Some(tls.clone()),
        };
        let (tx, rx) = oneshot::channel();
        let handle = tokio::spawn(nat_coordinator::serve_with(
            coordinator,
            grpc,
            Some(http),
            options,
            async move {
                let _ = rx.await;
            },
        ));
        TlsServer {
            grpc: grpc_addr,
            http: http_addr,
            tls,
            stop: Some(tx),
            handle: Some(handle),
            db: Some(db),
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(10), handle)
                .await
                .expect("graceful shutdown within 10 s")
                .expect("server task")
                .expect("server ok");
        }
        if let Some(db) = self.db.take() {
            db.cleanup().await;
        }
    }
}

/// A gRPC endpoint for `addr`: `https://` trusting `ca` (presenting `identity` when given),
/// or plaintext `http://` without a CA.
pub fn endpoint(addr: SocketAddr, ca: Option<&Ca>, identity: Option<&Leaf>) -> Endpoint {
    let scheme = if ca.is_some() { "https" } else { "http" };
    let mut endpoint = Channel::from_shared(format!("{scheme}://{addr}"))
        .expect("url")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10));
    if let Some(ca) = ca {
        let mut config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&ca.pem))
            .domain_name("localhost");
        if let Some(leaf) = identity {
            config = config.identity(Identity::from_pem(&leaf.cert_pem, &leaf.key_pem));
        }
        endpoint = endpoint.tls_config(config).expect("client TLS config");
    }
    endpoint
}

/// Connects and calls JobService.ListJobs; the number of jobs, or why it failed.
pub async fn list_jobs(
    addr: SocketAddr,
    ca: Option<&Ca>,
    identity: Option<&Leaf>,
) -> Result<usize, String> {
    let channel = endpoint(addr, ca, identity)
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    list_jobs_on(channel).await
}

/// JobService.ListJobs on an open channel.
pub async fn list_jobs_on(channel: Channel) -> Result<usize, String> {
    JobServiceClient::new(channel)
        .list_jobs(v1::ListJobsRequest::default())
        .await
        .map(|r| r.into_inner().jobs.len())
        .map_err(|e| format!("ListJobs: {e:?}"))
}

/// Retries `attempt` every 50 ms for up to 10 s until it returns `Ok`.
pub async fn eventually<T, F, Fut>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match attempt().await {
            Ok(v) => return v,
            Err(e) if tokio::time::Instant::now() >= deadline => panic!("{what}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A raw TLS connection to `addr` trusting `ca`, offering `alpn`, presenting `client` when
/// given.
pub async fn tls_connect(
    addr: SocketAddr,
    ca: &Ca,
    client: Option<&Leaf>,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).expect("CA PEM"))
        .expect("CA root");
    let builder =
        rustls::ClientConfig::builder_with_provider(nat_coordinator::tls::crypto_provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots);
    let mut config = match client {
        Some(leaf) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(leaf.der.clone())],
                PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key PEM"),
            )
            .expect("client certificate"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("server name");
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// `GET path` over HTTP/1.1 on `stream`: the status code and body.
pub async fn http_get<S>(mut stream: S, path: &str) -> std::io::Result<(u16, String)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    match stream.read_to_end(&mut response).await {
        Ok(_) => {}
        // A peer that closes without close_notify: the response is complete anyway.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
        Err(e) => return Err(e),
    }
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}
