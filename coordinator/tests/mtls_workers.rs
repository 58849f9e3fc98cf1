//! mTLS (`--tls-client-ca`) with and without tokens: every WorkerService call needs a verified
//! client certificate, a worker is bound to the certificate that registered it (no token) or to
//! its token, and JobService stays open to clients without a certificate.

mod common;
mod tls_support;

use nat_coordinator::auth::{AuthMode, AuthSettings};
use nat_coordinator::tls::{ServerTls, TlsFiles};
use nat_coordinator::Config;
use nat_proto::v1;
use nat_proto::v1::worker_service_client::WorkerServiceClient;
use tls_support::{endpoint, list_jobs_on, Ca, Files, TlsServer};
use tonic::Code;

async fn server(ca: &Ca, clients: &Ca, mode: AuthMode) -> (TlsServer, Files) {
    let files = Files::write(&ca.server(), Some(clients));
    let tls = ServerTls::load(TlsFiles {
        cert: files.files.cert.clone(),
        key: files.files.key.clone(),
        client_ca: files.files.client_ca.clone(),
    })
    .expect("load");
    let config = Config {
        auth: AuthSettings {
            mode,
            worker_certs_required: true,
            ..AuthSettings::default()
        },
        ..common::test_config()
    };
    (TlsServer::start_with(tls, config).await, files)
}

fn register() -> v1::RegisterWorkerRequest {
    v1::RegisterWorkerRequest {
        name: "w".into(),
        capabilities: Some(common::cpu_capabilities()),
    }
}

fn heartbeat(worker: &str) -> v1::HeartbeatRequest {
    v1::HeartbeatRequest {
        worker_id: worker.into(),
        tasks: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_are_bound_to_their_client_certificates() {
    let ca = Ca::new("server-ca");
    let clients = Ca::new("client-ca");
    let (server, _files) = server(&ca, &clients, AuthMode::None).await;
    let (a, b) = (clients.client("gpu-a"), clients.client("gpu-b"));
    let (grpc, server_ca) = (server.grpc, &ca);
    let connect = move |identity| {
        let ep = endpoint(grpc, Some(server_ca), identity);
        async move { ep.connect().await.expect("handshake") }
    };
    // No certificate: JobService answers, WorkerService does not.
    let anonymous = connect(None).await;
    assert!(list_jobs_on(anonymous.clone()).await.is_ok());
    let err = WorkerServiceClient::new(anonymous)
        .register_worker(register())
        .await
        .expect_err("needs a certificate");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(
        err.message().contains("client certificate"),
        "{}",
        err.message()
    );
    // Certificate A registers a worker; A may speak for it, B may not.
    let mut wa = WorkerServiceClient::new(connect(Some(&a)).await);
    let mut wb = WorkerServiceClient::new(connect(Some(&b)).await);
    let id = wa
        .register_worker(register())
        .await
        .expect("registers")
        .into_inner()
        .worker_id;
    wa.heartbeat(heartbeat(&id)).await.expect("its own worker");
    let err = wb
        .heartbeat(heartbeat(&id))
        .await
        .expect_err("another certificate");
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = wb
        .lease_task(v1::LeaseTaskRequest {
            worker_id: id.clone(),
            wait_ms: 0,
            device: None,
            slot: 0,
        })
        .await
        .expect_err("another certificate");
    assert_eq!(err.code(), Code::PermissionDenied);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_a_worker_needs_both_and_is_bound_to_its_token() {
    let ca = Ca::new("server-ca");
    let clients = Ca::new("client-ca");
    let (server, _files) = server(&ca, &clients, AuthMode::Token).await;
    let a = clients.client("gpu-a");
    let channel = endpoint(server.grpc, Some(&ca), Some(&a))
        .connect()
        .await
        .expect("handshake");
    // A certificate without a token is not enough.
    let err = WorkerServiceClient::new(channel)
        .register_worker(register())
        .await
        .expect_err("needs a token too");
    assert_eq!(err.code(), Code::Unauthenticated);
    // A token without a certificate is not enough either.
    let no_cert = endpoint(server.grpc, Some(&ca), None)
        .connect()
        .await
        .expect("handshake");
    let err = WorkerServiceClient::new(no_cert)
        .register_worker(register())
        .await
        .expect_err("needs a certificate");
    assert_eq!(err.code(), Code::Unauthenticated);
    server.stop().await;
}
