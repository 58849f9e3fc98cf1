//! The real `nat-worker` binary against a scripted WorkerService that checks the bearer token,
//! served over TLS (certificates made here by rcgen): the worker connects with --ca-cert and
//! sends its token on every call; a rejected token (at registration, or revoked later) stops it
//! with exit status 77 and a message saying which call was refused, instead of retrying.
#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nat_proto::v1;
use nat_proto::v1::worker_service_server::{WorkerService, WorkerServiceServer};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

use common::{wait_until, WorkerProcess};

const TOKEN: &str = "nat_worker.token-1";

#[derive(Default)]
struct State {
    /// The token the service accepts; `None` once revoked.
    valid: Option<String>,
    /// (rpc, authorization header) of every call.
    calls: Vec<(&'static str, Option<String>)>,
}

#[derive(Clone, Default)]
struct Guarded {
    state: Arc<Mutex<State>>,
}

impl Guarded {
    fn admit<T>(&self, rpc: &'static str, request: &Request<T>) -> Result<(), Status> {
        let auth = request
            .metadata()
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned());
        let mut state = self.state.lock().unwrap();
        state.calls.push((rpc, auth.clone()));
        let valid = state.valid.as_ref().map(|t| format!("Bearer {t}"));
        if auth.is_some() && auth == valid {
            Ok(())
        } else {
            Err(Status::unauthenticated("token revoked"))
        }
    }

    fn calls(&self) -> Vec<(&'static str, Option<String>)> {
        self.state.lock().unwrap().calls.clone()
    }
}

#[tonic::async_trait]
impl WorkerService for Guarded {
    type FetchSupernetStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<v1::SupernetChunk, Status>> + Send>,
    >;

    async fn fetch_supernet(
        &self,
        request: Request<v1::FetchSupernetRequest>,
    ) -> Result<Response<Self::FetchSupernetStream>, Status> {
        self.admit("fetch_supernet", &request)?;
        Err(Status::unimplemented("no supernet here"))
    }

    async fn put_supernet(
        &self,
        request: Request<tonic::Streaming<v1::PutSupernetRequest>>,
    ) -> Result<Response<v1::PutSupernetResponse>, Status> {
        self.admit("put_supernet", &request)?;
        Err(Status::unimplemented("no supernet here"))
    }

    async fn register_worker(
        &self,
        request: Request<v1::RegisterWorkerRequest>,
    ) -> Result<Response<v1::RegisterWorkerResponse>, Status> {
        self.admit("register", &request)?;
        Ok(Response::new(v1::RegisterWorkerResponse {
            worker_id: "w-1".to_owned(),
            lease_duration_ms: 5_000,
            heartbeat_interval_ms: 200,
            max_lease_wait_ms: 300,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<v1::HeartbeatRequest>,
    ) -> Result<Response<v1::HeartbeatResponse>, Status> {
        self.admit("heartbeat", &request)?;
        Ok(Response::new(v1::HeartbeatResponse::default()))
    }

    async fn lease_task(
        &self,
        request: Request<v1::LeaseTaskRequest>,
    ) -> Result<Response<v1::LeaseTaskResponse>, Status> {
        self.admit("lease", &request)?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok(Response::new(v1::LeaseTaskResponse { task: None }))
    }

    async fn report_progress(
        &self,
        request: Request<v1::ReportProgressRequest>,
    ) -> Result<Response<v1::ReportProgressResponse>, Status> {
        self.admit("progress", &request)?;
        Ok(Response::new(v1::ReportProgressResponse::default()))
    }

    async fn report_result(
        &self,
        request: Request<v1::ReportResultRequest>,
    ) -> Result<Response<v1::ReportResultResponse>, Status> {
        self.admit("result", &request)?;
        Ok(Response::new(v1::ReportResultResponse::default()))
    }
}

/// Serves `guarded` over TLS with a "localhost" certificate; returns the address and the CA's PEM.
async fn serve(guarded: Guarded) -> (SocketAddr, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let tls = ServerTlsConfig::new().identity(Identity::from_pem(cert.pem(), key.serialize_pem()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(WorkerServiceServer::new(guarded))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (address, ca_pem)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.to_string_lossy().into_owned()
}

/// A worker on the CPU with an empty data dir (it needs none to register and lease).
fn spawn(url: &str, scratch: &Path, name: &str, extra: &[&str]) -> WorkerProcess {
    let data = scratch.join(format!("{name}-data"));
    std::fs::create_dir_all(&data).unwrap();
    let mut args = vec!["--data-dir", data.to_str().unwrap()];
    args.extend_from_slice(extra);
    WorkerProcess::spawn(url, name, scratch, &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_a_valid_token_stops_at_registration_with_77() {
    let guarded = Guarded::default();
    guarded.state.lock().unwrap().valid = Some(TOKEN.to_owned());
    let (address, ca) = serve(guarded.clone()).await;
    let scratch = tempfile::tempdir().unwrap();
    let ca_file = write(scratch.path(), "ca.pem", &ca);
    let url = format!("https://localhost:{}", address.port());

    let mut worker = spawn(
        &url,
        scratch.path(),
        "no-token",
        &["--ca-cert", &ca_file, "--token", "nat_wrong"],
    );
    let status = tokio::task::spawn_blocking(move || {
        let status = worker.wait_exit(Duration::from_secs(30));
        (status, worker)
    })
    .await
    .unwrap();
    let (status, worker) = status;
    let log = worker.log_text();
    assert_eq!(status.and_then(|s| s.code()), Some(77), "{log}");
    assert!(
        log.contains(&format!(
            "the coordinator at {url} rejected this worker's credentials on register: token revoked (UNAUTHENTICATED)"
        )),
        "{log}"
    );
    // Refused once, not retried.
    assert_eq!(
        guarded.calls(),
        [("register", Some("Bearer nat_wrong".to_owned()))]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_sends_its_token_over_tls_and_stops_when_it_is_revoked() {
    let guarded = Guarded::default();
    guarded.state.lock().unwrap().valid = Some(TOKEN.to_owned());
    let (address, ca) = serve(guarded.clone()).await;
    let scratch = tempfile::tempdir().unwrap();
    let ca_file = write(scratch.path(), "ca.pem", &ca);
    let token_file = write(scratch.path(), "worker.token", &format!("{TOKEN}\n"));
    let url = format!("https://localhost:{}", address.port());
    let worker = spawn(
        &url,
        scratch.path(),
        "tls-token",
        &["--ca-cert", &ca_file, "--token-file", &token_file],
    );

    // It registers, heartbeats and long-polls, every call with the token.
    let probe = guarded.clone();
    wait_until(
        Duration::from_secs(30),
        "a heartbeat and a lease",
        move || {
            let calls = probe.calls();
            calls.iter().any(|(rpc, _)| *rpc == "heartbeat")
                && calls.iter().any(|(rpc, _)| *rpc == "lease")
        },
    )
    .await;
    let expected = Some(format!("Bearer {TOKEN}"));
    assert!(
        guarded.calls().iter().all(|(_, auth)| *auth == expected),
        "{:?}",
        guarded.calls()
    );

    // Revoked: the next call is refused and the worker stops with 77.
    guarded.state.lock().unwrap().valid = None;
    let (status, worker) = tokio::task::spawn_blocking(move || {
        let mut worker = worker;
        let status = worker.wait_exit(Duration::from_secs(30));
        (status, worker)
    })
    .await
    .unwrap();
    let log = worker.log_text();
    assert_eq!(status.and_then(|s| s.code()), Some(77), "{log}");
    assert!(
        log.contains("rejected this worker's credentials on")
            && log.contains("(UNAUTHENTICATED); check --token / --token-file"),
        "{log}"
    );
}
