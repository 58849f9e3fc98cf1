//! nat-client against a real TLS gRPC server over loopback: tonic's own `ServerTlsConfig` with
//! certificates made here by rcgen, serving gRPC health behind an interceptor that records what
//! each call carried (its `authorization` header, whether a client certificate came with it).
#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nat_client::{connect, endpoint, ConnectArgs, ConnectOptions};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::InterceptorLayer;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// A certificate authority that signs server and client certificates.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// (certificate PEM, key PEM) for `names`, for a server or a client.
    fn leaf(&self, names: &[&str], purpose: ExtendedKeyUsagePurpose) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![purpose];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// What the server saw of one call.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    authorization: Option<String>,
    client_certificates: usize,
}

struct TestServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    _stop: oneshot::Sender<()>,
}

/// A TLS health server with `ca`'s "localhost" certificate; `client_ca` requires client
/// certificates signed by it.
async fn server(ca: &Ca, client_ca: Option<&Ca>) -> TestServer {
    let (cert, key) = ca.leaf(&["localhost"], ExtendedKeyUsagePurpose::ServerAuth);
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    if let Some(client_ca) = client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(&client_ca.pem));
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = {
        let seen = seen.clone();
        move |request: Request<()>| -> Result<Request<()>, Status> {
            let authorization = request
                .metadata()
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned());
            let client_certificates = request.peer_certs().map_or(0, |certs| certs.len());
            seen.lock().unwrap().push(Seen {
                authorization,
                client_certificates,
            });
            Ok(request)
        }
    };
    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let router = Server::builder()
        .tls_config(tls)
        .unwrap()
        .layer(InterceptorLayer::new(record))
        .add_service(health);
    tokio::spawn(router.serve_with_incoming_shutdown(
        TcpListenerStream::new(listener),
        async move {
            let _ = stopped.await;
        },
    ));
    TestServer {
        addr,
        seen,
        _stop: stop,
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// One health check through nat-client's connect + Auth.
async fn check(url: &str, options: &ConnectOptions) -> Result<ServingStatus, String> {
    let channel = connect(url, options).await.map_err(|e| e.to_string())?;
    let mut client = HealthClient::with_interceptor(channel, options.auth());
    let status = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner()
        .status();
    Ok(status)
}

#[tokio::test]
async fn https_with_the_ca_connects_and_sends_the_bearer_token() {
    let ca = Ca::new("test CA");
    let server = server(&ca, None).await;
    let dir = tempfile::tempdir().unwrap();
    let args = ConnectArgs {
        ca_cert: Some(write(dir.path(), "ca.pem", &ca.pem)),
        token: Some("nat_tok.en-123".into()),
        ..ConnectArgs::default()
    };
    let options = args.resolve().unwrap();
    let url = format!("https://localhost:{}", server.addr.port());
    assert_eq!(check(&url, &options).await, Ok(ServingStatus::Serving));

    // Without a token, no header.
    let no_token = ConnectArgs {
        token: None,
        ..args.clone()
    }
    .resolve()
    .unwrap();
    assert_eq!(check(&url, &no_token).await, Ok(ServingStatus::Serving));

    // By IP address, with the certificate's name given.
    let by_ip = format!("https://127.0.0.1:{}", server.addr.port());
    let named = ConnectArgs {
        tls_server_name: Some("localhost".into()),
        ..args.clone()
    }
    .resolve()
    .unwrap();
    assert_eq!(check(&by_ip, &named).await, Ok(ServingStatus::Serving));

    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            Seen {
                authorization: Some("Bearer nat_tok.en-123".into()),
                client_certificates: 0
            },
            Seen {
                authorization: None,
                client_certificates: 0
            },
            Seen {
                authorization: Some("Bearer nat_tok.en-123".into()),
                client_certificates: 0
            },
        ]
    );
}

#[tokio::test]
async fn a_server_the_ca_did_not_sign_fails_with_a_readable_error() {
    let ca = Ca::new("test CA");
    let other = Ca::new("another CA");
    let server = server(&ca, None).await;
    let dir = tempfile::tempdir().unwrap();
    let options = ConnectArgs {
        ca_cert: Some(write(dir.path(), "other.pem", &other.pem)),
        ..ConnectArgs::default()
    }
    .resolve()
    .unwrap();
    let url = format!("https://localhost:{}", server.addr.port());
    let e = check(&url, &options).await.unwrap_err();
    assert!(
        e.starts_with(&format!("cannot connect to the coordinator at {url}: ")),
        "{e}"
    );
    assert!(e.contains("invalid peer certificate: UnknownIssuer"), "{e}");

    // The right CA but the wrong name: also refused, saying so.
    let right = ConnectArgs {
        ca_cert: Some(write(dir.path(), "ca.pem", &ca.pem)),
        ..ConnectArgs::default()
    }
    .resolve()
    .unwrap();
    let by_ip = format!("https://127.0.0.1:{}", server.addr.port());
    let e = check(&by_ip, &right).await.unwrap_err();
    assert!(e.contains("certificate not valid for name"), "{e}");

    // A plaintext client gets nowhere either.
    let e = check(
        &format!("http://127.0.0.1:{}", server.addr.port()),
        &ConnectOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(!e.is_empty());
    assert!(server.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn mutual_tls_sends_the_client_certificate() {
    let ca = Ca::new("test CA");
    let clients = Ca::new("client CA");
    let server = server(&ca, Some(&clients)).await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = clients.leaf(&["worker-1"], ExtendedKeyUsagePurpose::ClientAuth);
    let base = ConnectArgs {
        ca_cert: Some(write(dir.path(), "ca.pem", &ca.pem)),
        ..ConnectArgs::default()
    };
    let url = format!("https://localhost:{}", server.addr.port());

    // Without a client certificate the server refuses the call.
    assert!(check(&url, &base.resolve().unwrap()).await.is_err());

    let with_cert = ConnectArgs {
        cert: Some(write(dir.path(), "client.pem", &cert)),
        key: Some(write(dir.path(), "client.key", &key)),
        ..base
    }
    .resolve()
    .unwrap();
    assert_eq!(check(&url, &with_cert).await, Ok(ServingStatus::Serving));
    assert_eq!(
        server.seen.lock().unwrap().as_slice(),
        [Seen {
            authorization: None,
            client_certificates: 1
        }]
    );
    // The endpoint alone (lazy) is just as good.
    let lazy = endpoint(&url, &with_cert).unwrap().connect_lazy();
    let mut client = HealthClient::new(lazy);
    client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
}
