//! TLS and mutual TLS on the coordinator's listeners, over real loopback connections, with
//! certificates made in the test: who can connect, what the server sees of a client
//! certificate, and certificate reloads (by file change and by `reload()`) without a restart.
//! The SIGHUP trigger is tested in `tls_sighup.rs`, its own binary.

mod common;
mod tls_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use nat_coordinator::tls::{peer_identity, PeerIdentity, Protocols, ServerTls, TlsArgs, TlsPeer};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use tls_support::{
    endpoint, eventually, http_get, list_jobs, list_jobs_on, tls_connect, write, Ca, Files,
    TlsServer,
};

#[test]
fn flags_come_in_pairs() {
    let args = |cert: bool, key: bool, ca: bool| TlsArgs {
        tls_cert: cert.then(|| "c.pem".into()),
        tls_key: key.then(|| "k.pem".into()),
        tls_client_ca: ca.then(|| "ca.pem".into()),
    };
    assert!(args(false, false, false).files().expect("off").is_none());
    assert!(args(true, true, true).files().expect("mTLS").is_some());
    let error = |a: TlsArgs| a.files().expect_err("invalid").to_string();
    assert!(error(args(true, false, false)).starts_with("--tls-cert needs --tls-key"));
    assert!(error(args(false, true, false)).starts_with("--tls-key needs --tls-cert"));
    assert!(error(args(false, false, true)).starts_with("--tls-client-ca needs --tls-cert"));
}

#[test]
fn load_errors_name_the_flag_and_the_file() {
    let ca = Ca::new("ca");
    let files = Files::write(&ca.server(), Some(&ca));
    let f = &files.files;
    ServerTls::load(f.clone()).expect("valid files load");
    let error = |f: &nat_coordinator::tls::TlsFiles| {
        let err = ServerTls::load(f.clone()).expect_err("invalid files");
        format!("{:#}", anyhow::Error::from(err))
    };

    let mut missing = f.clone();
    missing.cert = f.cert.with_file_name("absent.crt");
    let msg = error(&missing);
    assert!(
        msg.starts_with("--tls-cert ") && msg.contains("absent.crt"),
        "{msg}"
    );

    write(&f.key, "not a key");
    let msg = error(f);
    assert!(
        msg.starts_with("--tls-key ") && msg.contains("no PEM private key"),
        "{msg}"
    );

    write(&f.key, &ca.server().key_pem);
    let msg = error(f);
    assert!(msg.starts_with("--tls-cert and --tls-key"), "{msg}");

    files.replace(&ca.server(), None);
    write(f.client_ca.as_ref().expect("client CA path"), "");
    let msg = error(f);
    assert!(
        msg.starts_with("--tls-client-ca ") && msg.contains("no PEM CERTIFICATE"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listeners_answer_tls_clients_only() {
    let ca = Ca::new("nat test CA");
    let files = Files::write(&ca.server(), None);
    let server = TlsServer::start(ServerTls::load(files.files.clone()).expect("load")).await;

    // gRPC: JobService and health over TLS, while clients that never complete a handshake
    // hold connections open (each handshake runs on its own: they block nobody).
    let mut stalled = Vec::new();
    for addr in [server.grpc, server.http] {
        stalled.push(tokio::net::TcpStream::connect(addr).await.expect("tcp"));
    }
    let jobs = eventually("ListJobs over TLS", || {
        list_jobs(server.grpc, Some(&ca), None)
    })
    .await;
    assert_eq!(jobs, 0);
    let channel = endpoint(server.grpc, Some(&ca), None)
        .connect()
        .await
        .expect("connect");
    let health = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health Check over TLS");
    assert_eq!(health.into_inner().status, ServingStatus::Serving as i32);

    // A plaintext client, and a client trusting another CA, cannot talk to it.
    list_jobs(server.grpc, None, None)
        .await
        .expect_err("plaintext client against the TLS listener");
    let other = Ca::new("another CA");
    list_jobs(server.grpc, Some(&other), None)
        .await
        .expect_err("a client trusting another CA");

    // HTTPS: /healthz answers over HTTP/1.1; h2 is offered too; plaintext HTTP is refused.
    let stream = tls_connect(server.http, &ca, None, &[b"http/1.1"])
        .await
        .expect("HTTPS handshake");
    let (status, body) = http_get(stream, "/healthz").await.expect("GET /healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let stream = tls_connect(server.http, &ca, None, &[b"h2", b"http/1.1"])
        .await
        .expect("HTTPS handshake offering h2");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let tcp = tokio::net::TcpStream::connect(server.http)
        .await
        .expect("tcp");
    assert!(
        http_get(tcp, "/healthz").await.is_err(),
        "plaintext HTTP against the TLS listener"
    );

    // The gRPC listener offers h2 only: a client that speaks HTTP/1.1 only is refused.
    tls_connect(server.grpc, &ca, None, &[b"http/1.1"])
        .await
        .expect_err("ALPN http/1.1 on the gRPC listener");
    let stream = tls_connect(server.http, &ca, None, &[b"http/1.1"])
        .await
        .expect("HTTPS handshake beside the stalled connections");
    assert_eq!(http_get(stream, "/healthz").await.expect("GET").0, 200);
    drop(stalled);

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_accepts_ca_clients_and_refuses_foreign_certificates() {
    let ca = Ca::new("server CA");
    let clients = Ca::new("worker CA");
    let files = Files::write(&ca.server(), Some(&clients));
    let server = TlsServer::start(ServerTls::load(files.files.clone()).expect("load")).await;

    // Without a certificate (a natctl user): the handshake succeeds.
    eventually("ListJobs without a client certificate", || {
        list_jobs(server.grpc, Some(&ca), None)
    })
    .await;
    // With a certificate of the client CA (a worker): it registers.
    let worker = clients.client("worker-1");
    let channel = endpoint(server.grpc, Some(&ca), Some(&worker))
        .connect()
        .await
        .expect("connect with a client certificate");
    let mut workers =
        nat_proto::v1::worker_service_client::WorkerServiceClient::new(channel.clone());
    let worker_id = common::register(&mut workers, "worker-1").await;
    assert!(!worker_id.is_empty());
    list_jobs_on(channel).await.expect("ListJobs with mTLS");

    // A certificate of another CA is refused in the handshake (TLS 1.3: the client learns of
    // it with its first request).
    let foreign = Ca::new("foreign CA").client("intruder");
    list_jobs(server.grpc, Some(&ca), Some(&foreign))
        .await
        .expect_err("gRPC with a foreign client certificate");
    for addr in [server.grpc, server.http] {
        assert_refused_by_alert(addr, &ca, &foreign, "UnknownCA").await;
    }
    // The HTTP listener takes certificates of the client CA.
    let stream = tls_connect(server.http, &ca, Some(&worker), &[b"http/1.1"])
        .await
        .expect("HTTPS with a client certificate");
    assert_eq!(http_get(stream, "/healthz").await.expect("GET").0, 200);

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_identity_is_the_verified_client_certificate() {
    let ca = Ca::new("server CA");
    let clients = Ca::new("worker CA");
    let files = Files::write(&ca.server(), Some(&clients));
    let tls = Arc::new(ServerTls::load(files.files.clone()).expect("load"));
    let worker = clients.client("worker-7");
    let expected = PeerIdentity {
        fingerprint: hex::encode(Sha256::digest(&worker.der)),
        common_name: Some("worker-7".into()),
    };

    // gRPC: an interceptor (as the authorization layer will be) reads the identity.
    let seen: Arc<Mutex<Vec<Option<PeerIdentity>>>> = Arc::default();
    let record = seen.clone();
    let interceptor = tonic::service::InterceptorLayer::new(move |req: tonic::Request<()>| {
        record
            .lock()
            .expect("lock")
            .push(peer_identity(req.extensions()));
        Ok(req)
    });
    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let grpc = listener.local_addr().expect("addr");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let grpc_server = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(interceptor)
            .add_service(health)
            .serve_with_incoming_shutdown(tls.incoming(listener, Protocols::Grpc), async {
                let _ = stop_rx.await;
            }),
    );
    for identity in [Some(&worker), None] {
        let channel = endpoint(grpc, Some(&ca), identity)
            .connect()
            .await
            .expect("connect");
        HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("health Check");
    }
    assert_eq!(
        *seen.lock().expect("lock"),
        vec![Some(expected.clone()), None]
    );
    let _ = stop_tx.send(());
    grpc_server.await.expect("join").expect("gRPC server");

    // HTTP: the same function reads axum's ConnectInfo<TlsPeer>.
    let app = axum::Router::new().route(
        "/whoami",
        axum::routing::get(|req: axum::extract::Request| async move {
            match peer_identity(req.extensions()) {
                Some(id) => format!("{} {}", id.common_name.unwrap_or_default(), id.fingerprint),
                None => "anonymous".to_string(),
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let http = listener.local_addr().expect("addr");
    let http_server = axum::serve(
        tls.incoming(listener, Protocols::Http),
        app.into_make_service_with_connect_info::<TlsPeer>(),
    );
    let http_server = tokio::spawn(async move { http_server.await });
    let stream = tls_connect(http, &ca, Some(&worker), &[b"http/1.1"])
        .await
        .expect("handshake");
    let (status, body) = http_get(stream, "/whoami").await.expect("GET");
    assert_eq!(
        (status, body),
        (200, format!("worker-7 {}", expected.fingerprint))
    );
    let stream = tls_connect(http, &ca, None, &[b"http/1.1"])
        .await
        .expect("handshake");
    assert_eq!(
        http_get(stream, "/whoami").await.expect("GET").1,
        "anonymous"
    );
    http_server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_change_reloads_the_certificate_without_a_restart() {
    let (ca_a, ca_b) = (Ca::new("CA A"), Ca::new("CA B"));
    let files = Files::write(&ca_a.server(), None);
    let tls = ServerTls::load(files.files.clone())
        .expect("load")
        .with_poll_interval(Duration::from_millis(100));
    let server = TlsServer::start(tls).await;
    eventually("ListJobs with CA A", || {
        list_jobs(server.grpc, Some(&ca_a), None)
    })
    .await;
    let established = endpoint(server.grpc, Some(&ca_a), None)
        .connect()
        .await
        .expect("connect");
    let before = server.tls.certificate();

    let cert_b = ca_b.server();
    files.replace(&cert_b, None);
    eventually("ListJobs with CA B after the file change", || {
        list_jobs(server.grpc, Some(&ca_b), None)
    })
    .await;
    assert_eq!(
        server.tls.certificate().identity.fingerprint,
        hex::encode(Sha256::digest(&cert_b.der))
    );
    assert_ne!(server.tls.certificate(), before);
    // New connections trusting only A fail; HTTPS serves B too.
    list_jobs(server.grpc, Some(&ca_a), None)
        .await
        .expect_err("a new connection trusting only CA A");
    let stream = tls_connect(server.http, &ca_b, None, &[b"http/1.1"])
        .await
        .expect("HTTPS with CA B");
    assert_eq!(http_get(stream, "/healthz").await.expect("GET").0, 200);
    // The connection made before the reload goes on: the server did not restart.
    list_jobs_on(established)
        .await
        .expect("the established connection still works");

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_the_certificate_and_keeps_the_old_one_on_error() {
    let (ca_a, ca_b) = (Ca::new("CA A"), Ca::new("CA B"));
    let clients_a = Ca::new("clients A");
    let files = Files::write(&ca_a.server(), Some(&clients_a));
    let tls = ServerTls::load(files.files.clone())
        .expect("load")
        .with_poll_interval(Duration::ZERO);
    let server = TlsServer::start(tls).await;
    eventually("ListJobs with CA A", || {
        list_jobs(server.grpc, Some(&ca_a), None)
    })
    .await;

    // A broken key: the reload fails, naming the flag, and A stays.
    write(&files.files.key, "garbage");
    let err = server.tls.reload().expect_err("a broken key");
    assert!(err.to_string().starts_with("--tls-key "), "{err}");
    list_jobs(server.grpc, Some(&ca_a), None)
        .await
        .expect("the old certificate stays after a failed reload");

    // Certificate B and a new client CA: new connections see both.
    let clients_b = Ca::new("clients B");
    files.replace(&ca_b.server(), Some(&clients_b));
    server.tls.reload().expect("reload");
    list_jobs(server.grpc, Some(&ca_b), None)
        .await
        .expect("a client trusting CA B after reload()");
    list_jobs(server.grpc, Some(&ca_a), None)
        .await
        .expect_err("a client trusting only CA A after reload()");
    list_jobs(server.grpc, Some(&ca_b), Some(&clients_b.client("w")))
        .await
        .expect("a certificate of the new client CA");
    list_jobs(server.grpc, Some(&ca_b), Some(&clients_a.client("w")))
        .await
        .expect_err("a certificate of the old client CA");

    server.stop().await;
}

/// A raw TLS client presenting `client` to `addr`: under TLS 1.3 its side of the handshake
/// completes, and its first read gets the server's fatal alert `alert`.
async fn assert_refused_by_alert(
    addr: std::net::SocketAddr,
    ca: &Ca,
    client: &tls_support::Leaf,
    alert: &str,
) {
    use tokio::io::AsyncReadExt;
    let outcome = match tls_connect(addr, ca, Some(client), &[b"h2", b"http/1.1"]).await {
        Err(e) => Err(e),
        Ok(mut stream) => stream.read(&mut [0u8; 64]).await,
    };
    let err = outcome.expect_err("the server refuses the certificate");
    assert!(
        err.to_string().contains(alert),
        "{addr}: expected the alert {alert}, got {err}"
    );
}
