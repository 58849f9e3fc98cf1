//! `--auth token`: every RPC and every HTTP route × {no token, each role, another user, an
//! expired token, a revoked token}, with the expected code; on both backends. Also: a worker
//! speaks only for itself (a report for another worker's lease, reserved or written, is refused),
//! job ownership (a user lists and reads only its own jobs), revocation at once, and the
//! `nat-coordinator` loopback-only default.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::*;
use nat_coordinator::auth::{tokens, AuthMode, AuthSettings};
use nat_coordinator::{Clock, Config, Coordinator, ManualClock};
use nat_proto::v1;
use nat_proto::v1::job_service_client::JobServiceClient;
use nat_proto::v1::policy_service_client::PolicyServiceClient;
use nat_proto::v1::token_service_client::TokenServiceClient;
use nat_proto::v1::worker_service_client::WorkerServiceClient;
use nat_store::Role;
use tokio::net::TcpListener;
use tonic::transport::Channel;
use tonic::{Code, Request};

/// One credential of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Nobody,
    Expired,
    Revoked,
    Viewer,
    /// The user who owns the fixtures' jobs ("alice").
    User,
    /// Another user ("bob").
    OtherUser,
    Admin,
    Worker,
}

/// Denied callers first, so that an allowed call that changes state (cancel, report) comes last.
const EVERYONE: [Who; 8] = [
    Who::Nobody,
    Who::Expired,
    Who::Revoked,
    Who::Viewer,
    Who::OtherUser,
    Who::User,
    Who::Admin,
    Who::Worker,
];

/// What a call must answer for each credential: `ok` for those listed, PERMISSION_DENIED for
/// the other valid tokens, UNAUTHENTICATED without a valid token.
fn expected(who: Who, allowed: &[Who], ok: Code) -> Code {
    match who {
        Who::Nobody | Who::Expired | Who::Revoked => Code::Unauthenticated,
        w if allowed.contains(&w) => ok,
        _ => Code::PermissionDenied,
    }
}

struct Fixture {
    server: AuthServer,
    secrets: Vec<(Who, String)>,
    /// A job of "alice" (the User).
    alice_job: String,
    /// The worker registered with the worker token, and a task it holds.
    worker_id: String,
    held: v1::Task,
}

impl Fixture {
    fn secret(&self, who: Who) -> Option<&str> {
        self.secrets
            .iter()
            .find(|(w, _)| *w == who)
            .map(|(_, s)| s.as_str())
    }

    fn req<T>(&self, who: Who, message: T) -> Request<T> {
        with_token(self.secret(who), message)
    }
}

fn with_token<T>(secret: Option<&str>, message: T) -> Request<T> {
    let mut r = Request::new(message);
    if let Some(s) = secret {
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {s}").parse().expect("ascii"),
        );
    }
    r
}

/// A coordinator with `--auth token`, gRPC and HTTP on port 0, and a manual clock.
struct AuthServer {
    grpc: SocketAddr,
    http: SocketAddr,
    coordinator: Arc<Coordinator>,
    clock: ManualClock,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<Result<(), nat_coordinator::ServeError>>,
}

impl AuthServer {
    async fn start(db: &TestDb, settings: AuthSettings) -> AuthServer {
        let store = nat_store::connect(&db.url).await.expect("store opens");
        let clock = ManualClock::new(Utc::now());
        let config = Config {
            auth: settings,
            ..test_config()
        };
        let clock_dyn: Arc<dyn Clock> = Arc::new(clock.clone());
        let coordinator = Coordinator::new(store, clock_dyn, config);
        let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let (grpc_addr, http_addr) = (
            grpc.local_addr().expect("addr"),
            http.local_addr().expect("addr"),
        );
        let (tx, rx) = tokio::sync::oneshot::channel();
        let handle = tokio::spawn(nat_coordinator::serve(
            coordinator.clone(),
            grpc,
            Some(http),
            async move {
                let _ = rx.await;
            },
        ));
        AuthServer {
            grpc: grpc_addr,
            http: http_addr,
            coordinator,
            clock,
            stop: Some(tx),
            handle,
        }
    }

    async fn channel(&self) -> Channel {
        connect(&format!("http://{}", self.grpc)).await
    }

    async fn token(&self, role: Role, name: &str, expires_in: u64) -> (uuid::Uuid, String) {
        let (t, secret) = tokens::create(
            &*self.coordinator.store,
            role,
            name,
            expires_in,
            None,
            self.clock.now(),
        )
        .await
        .expect("token");
        (t.id, secret)
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), self.handle)
            .await
            .expect("stops")
            .expect("task")
            .expect("server ok");
    }
}

fn settings() -> AuthSettings {
    AuthSettings {
        mode: AuthMode::Token,
        ..AuthSettings::default()
    }
}

async fn fixture(db: &TestDb) -> Fixture {
    let server = AuthServer::start(db, settings()).await;
    let mut secrets = Vec::new();
    for (who, role, name) in [
        (Who::Admin, Role::Admin, "root"),
        (Who::User, Role::User, "alice"),
        (Who::OtherUser, Role::User, "bob"),
        (Who::Viewer, Role::Viewer, "grafana"),
        (Who::Worker, Role::Worker, "gpu-01"),
    ] {
        secrets.push((who, server.token(role, name, 0).await.1));
    }
    // Expires in a minute; the clock then moves two.
    secrets.push((Who::Expired, server.token(Role::Admin, "old", 60).await.1));
    let (revoked, secret) = server.token(Role::Admin, "gone", 0).await;
    secrets.push((Who::Revoked, secret));
    let ch = server.channel().await;
    let mut tokens = TokenServiceClient::new(ch.clone());
    let admin = secrets[0].1.clone();
    tokens
        .revoke_token(with_token(
            Some(&admin),
            v1::RevokeTokenRequest {
                id: revoked.to_string(),
            },
        ))
        .await
        .expect("revoke");
    server.clock.advance(Duration::from_secs(120));
    let mut f = Fixture {
        server,
        secrets,
        alice_job: String::new(),
        worker_id: String::new(),
        held: v1::Task::default(),
    };
    let mut jobs = JobServiceClient::new(ch.clone());
    f.alice_job = jobs
        .submit_job(f.req(Who::User, evaluate_request(&["darts-v2"], "digits")))
        .await
        .expect("alice submits")
        .into_inner()
        .job
        .expect("job")
        .job_id;
    let mut w = WorkerServiceClient::new(ch);
    f.worker_id = w
        .register_worker(f.req(
            Who::Worker,
            v1::RegisterWorkerRequest {
                name: "gpu-01".into(),
                capabilities: Some(cpu_capabilities()),
            },
        ))
        .await
        .expect("worker registers")
        .into_inner()
        .worker_id;
    f.held = w
        .lease_task(f.req(
            Who::Worker,
            v1::LeaseTaskRequest {
                worker_id: f.worker_id.clone(),
                wait_ms: 1000,
                device: None,
                slot: 0,
            },
        ))
        .await
        .expect("lease")
        .into_inner()
        .task
        .expect("a task of alice's job");
    f
}

/// Runs `call` for every credential and checks the code; returns the failures as text.
macro_rules! matrix {
    ($f:expr, $failures:expr, $name:expr, $allowed:expr, $ok:expr, |$who:ident| $call:expr) => {
        for $who in EVERYONE {
            let want = expected($who, $allowed, $ok);
            let got = match $call.await {
                Ok(_) => Code::Ok,
                Err(status) => status.code(),
            };
            if got != want {
                $failures.push(format!(
                    "{} as {:?}: got {got:?}, want {want:?}",
                    $name, $who
                ));
            }
        }
    };
}

async fn rpc_matrix(db: &TestDb) {
    use Who::*;
    let f = fixture(db).await;
    let ch = f.server.channel().await;
    let mut jobs = JobServiceClient::new(ch.clone());
    let mut workers = WorkerServiceClient::new(ch.clone());
    let mut policies = PolicyServiceClient::new(ch.clone());
    let mut tokens = TokenServiceClient::new(ch.clone());
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    let mut failures = Vec::new();
    let readers: &[Who] = &[Viewer, User, Admin];

    // JobService.
    matrix!(
        f,
        failures,
        "SubmitJob",
        &[User, OtherUser, Admin],
        Code::Ok,
        |who| jobs.submit_job(f.req(who, evaluate_request(&["darts-v2"], "digits")))
    );
    let job = || v1::GetJobRequest {
        job_id: f.alice_job.clone(),
    };
    matrix!(f, failures, "GetJob", readers, Code::Ok, |who| jobs
        .get_job(f.req(who, job())));
    matrix!(
        f,
        failures,
        "ListJobs",
        &[Viewer, User, OtherUser, Admin],
        Code::Ok,
        |who| jobs.list_jobs(f.req(who, v1::ListJobsRequest::default()))
    );
    matrix!(f, failures, "WatchJob", readers, Code::Ok, |who| jobs
        .watch_job(f.req(
            who,
            v1::WatchJobRequest {
                job_id: f.alice_job.clone(),
                after_sequence: 0,
            }
        )));
    matrix!(f, failures, "GetJobResult", readers, Code::Ok, |who| jobs
        .get_job_result(f.req(
            who,
            v1::GetJobResultRequest {
                job_id: f.alice_job.clone(),
            }
        )));
    matrix!(
        f,
        failures,
        "ListWorkers",
        &[Viewer, User, OtherUser, Admin],
        Code::Ok,
        |who| jobs.list_workers(f.req(who, v1::ListWorkersRequest {}))
    );
    // Cancel: each allowed attempt gets its own job of alice's.
    for who in EVERYONE {
        let id = jobs
            .submit_job(f.req(User, evaluate_request(&["darts-v2"], "digits")))
            .await
            .expect("submit")
            .into_inner()
            .job
            .expect("job")
            .job_id;
        let got = match jobs
            .cancel_job(f.req(
                who,
                v1::CancelJobRequest {
                    job_id: id,
                    reason: "matrix".into(),
                },
            ))
            .await
        {
            Ok(_) => Code::Ok,
            Err(s) => s.code(),
        };
        let want = expected(who, &[User, Admin], Code::Ok);
        if got != want {
            failures.push(format!("CancelJob as {who:?}: got {got:?}, want {want:?}"));
        }
    }

    // PolicyService (no policy stored: an allowed transform is NOT_FOUND, past authentication).
    matrix!(
        f,
        failures,
        "ListPolicies",
        &[Viewer, User, OtherUser, Admin],
        Code::Ok,
        |who| { policies.list_policies(f.req(who, v1::ListPoliciesRequest {})) }
    );
    matrix!(
        f,
        failures,
        "TransformArchitecture",
        &[Viewer, User, OtherUser, Admin],
        Code::NotFound,
        |who| policies.transform_architecture(f.req(
            who,
            v1::TransformArchitectureRequest {
                policy_id: "none".into(),
                architecture: "darts-v2".into(),
                sample: false,
                seed: 0,
            }
        ))
    );

    // WorkerService: the worker token registered `worker_id`; an admin may register workers of
    // its own but not speak for that one.
    matrix!(
        f,
        failures,
        "RegisterWorker",
        &[Admin, Worker],
        Code::Ok,
        |who| workers.register_worker(f.req(
            who,
            v1::RegisterWorkerRequest {
                name: "w".into(),
                capabilities: Some(cpu_capabilities()),
            }
        ))
    );
    let heartbeat = || v1::HeartbeatRequest {
        worker_id: f.worker_id.clone(),
        tasks: vec![v1::HeldTask {
            task_id: f.held.task_id.clone(),
            lease_token: f.held.lease_token,
        }],
    };
    matrix!(f, failures, "Heartbeat", &[Worker], Code::Ok, |who| workers
        .heartbeat(f.req(who, heartbeat())));
    matrix!(f, failures, "LeaseTask", &[Worker], Code::Ok, |who| workers
        .lease_task(f.req(
            who,
            v1::LeaseTaskRequest {
                worker_id: f.worker_id.clone(),
                wait_ms: 0,
                device: None,
                slot: 0,
            }
        )));
    matrix!(f, failures, "ReportProgress", &[Worker], Code::Ok, |who| {
        workers.report_progress(f.req(
            who,
            v1::ReportProgressRequest {
                worker_id: f.worker_id.clone(),
                task_id: f.held.task_id.clone(),
                lease_token: f.held.lease_token,
                epoch: 1,
                epochs: 2,
                fraction: 0.5,
                ..Default::default()
            },
        ))
    });
    matrix!(f, failures, "ReportResult", &[Worker], Code::Ok, |who| {
        workers.report_result(f.req(who, report_ok(&f.worker_id, &f.held)))
    });

    // TokenService: admin only.
    matrix!(f, failures, "CreateToken", &[Admin], Code::Ok, |who| tokens
        .create_token(f.req(
            who,
            v1::CreateTokenRequest {
                role: v1::Role::Viewer as i32,
                name: "made".into(),
                expires_in_seconds: 0,
            }
        )));
    matrix!(f, failures, "ListTokens", &[Admin], Code::Ok, |who| tokens
        .list_tokens(f.req(who, v1::ListTokensRequest::default())));
    let (victim, _) = f.server.token(Role::Viewer, "victim", 0).await;
    matrix!(f, failures, "RevokeToken", &[Admin], Code::Ok, |who| tokens
        .revoke_token(f.req(
            who,
            v1::RevokeTokenRequest {
                id: victim.to_string(),
            }
        )));

    // Health needs no token (probes).
    for who in EVERYONE {
        let got = health
            .check(f.req(
                who,
                tonic_health::pb::HealthCheckRequest {
                    service: nat_proto::JOB_SERVICE_NAME.into(),
                },
            ))
            .await;
        if let Err(s) = got {
            failures.push(format!("Health as {who:?}: {s}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    f.server.stop().await;
}
both_backends!(every_rpc_by_role, rpc_matrix);

/// An HTTP GET with an optional `Authorization` header: (status, the whole response).
async fn http_get(addr: SocketAddr, path: &str, auth: Option<String>) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    (status, out)
}

async fn http_matrix(db: &TestDb) {
    use Who::*;
    let f = fixture(db).await;
    let job = &f.alice_job;
    let mut failures = Vec::new();
    let dashboard: &[Who] = &[Viewer, Admin];
    let routes: Vec<(String, &[Who], u16)> = vec![
        ("/healthz".into(), &EVERYONE, 200),
        ("/readyz".into(), &EVERYONE, 200),
        ("/metrics".into(), dashboard, 200),
        ("/".into(), dashboard, 200),
        (format!("/jobs/{job}"), dashboard, 200),
        ("/assets/dashboard.css".into(), dashboard, 200),
        ("/assets/dashboard.js".into(), dashboard, 200),
        ("/api/jobs".into(), dashboard, 200),
        (format!("/api/jobs/{job}"), dashboard, 200),
        (format!("/api/jobs/{job}/diagram.svg"), dashboard, 200),
        (format!("/api/jobs/{job}/diagram.dot"), dashboard, 200),
        ("/api/workers".into(), dashboard, 200),
    ];
    for (path, allowed, ok) in &routes {
        for who in EVERYONE {
            let open = allowed.len() == EVERYONE.len();
            let want = if open {
                *ok
            } else {
                match expected(who, allowed, Code::Ok) {
                    Code::Ok => *ok,
                    Code::Unauthenticated => 401,
                    _ => 403,
                }
            };
            let (got, response) = http_get(
                f.server.http,
                path,
                f.secret(who).map(|s| format!("Bearer {s}")),
            )
            .await;
            if got != want {
                failures.push(format!("GET {path} as {who:?}: got {got}, want {want}"));
            }
            if got == 401
                && !response
                    .to_ascii_lowercase()
                    .contains("www-authenticate: basic")
            {
                failures.push(format!(
                    "GET {path} as {who:?}: 401 without a Basic challenge"
                ));
            }
        }
    }
    // Browsers: Basic with the token as the password.
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("me:{}", f.secret(Viewer).expect("viewer")));
    let (code, _) = http_get(f.server.http, "/api/jobs", Some(format!("Basic {basic}"))).await;
    assert_eq!(code, 200, "Basic auth with the token as password");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    f.server.stop().await;
}
both_backends!(every_http_route_by_role, http_matrix);

async fn metrics_public_and_users_read_all(db: &TestDb) {
    let server = AuthServer::start(
        db,
        AuthSettings {
            mode: AuthMode::Token,
            users_read_all: true,
            metrics_public: true,
            worker_certs_required: false,
        },
    )
    .await;
    let (_, alice) = server.token(Role::User, "alice", 0).await;
    let (_, bob) = server.token(Role::User, "bob", 0).await;
    assert_eq!(http_get(server.http, "/metrics", None).await.0, 200);
    assert_eq!(http_get(server.http, "/api/jobs", None).await.0, 401);
    assert_eq!(
        http_get(server.http, "/api/jobs", Some(format!("Bearer {bob}")))
            .await
            .0,
        200
    );
    let mut jobs = JobServiceClient::new(server.channel().await);
    let job = jobs
        .submit_job(with_token(
            Some(&alice),
            evaluate_request(&["darts-v2"], "digits"),
        ))
        .await
        .expect("submit")
        .into_inner()
        .job
        .expect("job");
    assert_eq!(job.owner, "alice");
    // Bob reads alice's job and sees it listed, but may not cancel it.
    let read = jobs
        .get_job(with_token(
            Some(&bob),
            v1::GetJobRequest {
                job_id: job.job_id.clone(),
            },
        ))
        .await
        .expect("bob reads");
    assert_eq!(read.into_inner().job.expect("job").owner, "alice");
    let listed = jobs
        .list_jobs(with_token(Some(&bob), v1::ListJobsRequest::default()))
        .await
        .expect("list")
        .into_inner()
        .jobs;
    assert_eq!(listed.len(), 1);
    let cancel = jobs
        .cancel_job(with_token(
            Some(&bob),
            v1::CancelJobRequest {
                job_id: job.job_id.clone(),
                reason: String::new(),
            },
        ))
        .await
        .expect_err("bob may not cancel");
    assert_eq!(cancel.code(), Code::PermissionDenied);
    assert!(cancel.message().contains("alice"), "{}", cancel.message());
    server.stop().await;
}
both_backends!(
    metrics_public_users_read_all,
    metrics_public_and_users_read_all
);

async fn ownership_and_revocation(db: &TestDb) {
    let server = AuthServer::start(db, settings()).await;
    let (_, admin) = server.token(Role::Admin, "root", 0).await;
    let (alice_id, alice) = server.token(Role::User, "alice", 0).await;
    let (_, bob) = server.token(Role::User, "bob", 0).await;
    let mut jobs = JobServiceClient::new(server.channel().await);
    let reader = jobs.clone();
    let submit = |secret: String| {
        let mut jobs = reader.clone();
        async move {
            jobs.submit_job(with_token(
                Some(&secret),
                evaluate_request(&["darts-v2"], "digits"),
            ))
            .await
            .expect("submit")
            .into_inner()
            .job
            .expect("job")
        }
    };
    let a1 = submit(alice.clone()).await;
    let a2 = submit(alice.clone()).await;
    let b1 = submit(bob.clone()).await;
    assert_eq!((a1.owner.as_str(), b1.owner.as_str()), ("alice", "bob"));
    let list = |secret: String| {
        let mut jobs = reader.clone();
        async move {
            let mut ids: Vec<String> = jobs
                .list_jobs(with_token(Some(&secret), v1::ListJobsRequest::default()))
                .await
                .expect("list")
                .into_inner()
                .jobs
                .into_iter()
                .map(|j| j.job_id)
                .collect();
            ids.sort();
            ids
        }
    };
    let mut mine = vec![a1.job_id.clone(), a2.job_id.clone()];
    mine.sort();
    assert_eq!(list(alice.clone()).await, mine, "alice lists only hers");
    assert_eq!(list(bob.clone()).await, vec![b1.job_id.clone()]);
    assert_eq!(list(admin.clone()).await.len(), 3, "admin lists all");
    // Bob cannot read alice's job, nor watch it.
    let err = jobs
        .get_job(with_token(
            Some(&bob),
            v1::GetJobRequest {
                job_id: a1.job_id.clone(),
            },
        ))
        .await
        .expect_err("not his");
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = jobs
        .watch_job(with_token(
            Some(&bob),
            v1::WatchJobRequest {
                job_id: a1.job_id.clone(),
                after_sequence: 0,
            },
        ))
        .await
        .expect_err("not his");
    assert_eq!(err.code(), Code::PermissionDenied);
    // A new token of the same name (rotation) owns the same jobs.
    let (_, alice2) = server.token(Role::User, "alice", 0).await;
    assert_eq!(list(alice2.clone()).await, mine);
    // Revocation through the API takes effect on the very next call, cache or not.
    assert_eq!(list(alice.clone()).await, mine, "cached now");
    let mut tokens = TokenServiceClient::new(server.channel().await);
    tokens
        .revoke_token(with_token(
            Some(&admin),
            v1::RevokeTokenRequest {
                id: alice_id.to_string(),
            },
        ))
        .await
        .expect("revoke");
    let err = jobs
        .list_jobs(with_token(Some(&alice), v1::ListJobsRequest::default()))
        .await
        .expect_err("revoked");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("revoked"), "{}", err.message());
    // Expiry: at once, too (the cache holds the token, the clock decides).
    let (_, short) = server.token(Role::Viewer, "short", 30).await;
    assert!(list(short.clone()).await.len() == 3);
    server.clock.advance(Duration::from_secs(31));
    let err = jobs
        .list_jobs(with_token(Some(&short), v1::ListJobsRequest::default()))
        .await
        .expect_err("expired");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("expired"), "{}", err.message());
    // Listed tokens never carry secrets; revoked ones only on request.
    let listed = tokens
        .list_tokens(with_token(Some(&admin), v1::ListTokensRequest::default()))
        .await
        .expect("list tokens")
        .into_inner()
        .tokens;
    assert!(listed.iter().all(|t| t.id != alice_id.to_string()));
    let all = tokens
        .list_tokens(with_token(
            Some(&admin),
            v1::ListTokensRequest {
                include_revoked: true,
            },
        ))
        .await
        .expect("list tokens")
        .into_inner()
        .tokens;
    let revoked = all
        .iter()
        .find(|t| t.id == alice_id.to_string())
        .expect("listed with --all");
    assert!(revoked.revoked_at_unix_ms > 0);
    // Only hashes are stored.
    let found = server
        .coordinator
        .store
        .token_by_secret_hash(&tokens::secret_sha256(&admin))
        .await
        .expect("read");
    assert!(found.is_some());
    let created = tokens
        .create_token(with_token(
            Some(&admin),
            v1::CreateTokenRequest {
                role: v1::Role::User as i32,
                name: "carol".into(),
                expires_in_seconds: 3600,
            },
        ))
        .await
        .expect("create")
        .into_inner();
    let t = created.token.expect("token");
    assert_eq!(t.created_by, "root");
    assert!(t.expires_at_unix_ms > 0);
    assert!(created.secret.starts_with(tokens::SECRET_PREFIX));
    for (name, role) in [("bad name", v1::Role::User), ("ok", v1::Role::Unspecified)] {
        let err = tokens
            .create_token(with_token(
                Some(&admin),
                v1::CreateTokenRequest {
                    role: role as i32,
                    name: name.into(),
                    expires_in_seconds: 0,
                },
            ))
            .await
            .expect_err("invalid");
        assert_eq!(err.code(), Code::InvalidArgument);
    }
    server.stop().await;
}
both_backends!(ownership_revocation_expiry, ownership_and_revocation);

/// Under reservation load (hand-outs answered from memory, written a second later), a report,
/// progress or heartbeat for another worker's lease is refused, and the holder's report is
/// accepted — whether the other worker names itself or impersonates the holder.
async fn workers_speak_only_for_themselves(db: &TestDb) {
    let store = nat_store::connect(&db.url).await.expect("store");
    let clock = ManualClock::new(Utc::now());
    let config = Config {
        auth: settings(),
        lease_reserve: Duration::from_millis(1000),
        lease_reserve_min_rate: 0.0,
        ..test_config()
    };
    let c = Coordinator::new(store, Arc::new(clock.clone()), config);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(nat_coordinator::serve(
        c.clone(),
        listener,
        None,
        async move {
            let _ = rx.await;
        },
    ));
    let mk = |role, name: &'static str| {
        let c = c.clone();
        let now = clock.now();
        async move {
            tokens::create(&*c.store, role, name, 0, None, now)
                .await
                .expect("token")
                .1
        }
    };
    let user = mk(Role::User, "alice").await;
    let honest = mk(Role::Worker, "honest").await;
    let rogue = mk(Role::Worker, "rogue").await;
    let ch = connect(&format!("http://{addr}")).await;
    let mut jobs = JobServiceClient::new(ch.clone());
    let mut w = WorkerServiceClient::new(ch);
    let archs = vec!["darts-v2"; 40];
    jobs.submit_job(with_token(Some(&user), evaluate_request(&archs, "digits")))
        .await
        .expect("submit");
    let register = |secret: String, name: &'static str| {
        let mut w = w.clone();
        async move {
            w.register_worker(with_token(
                Some(&secret),
                v1::RegisterWorkerRequest {
                    name: name.into(),
                    capabilities: Some(cpu_capabilities()),
                },
            ))
            .await
            .expect("register")
            .into_inner()
            .worker_id
        }
    };
    let honest_id = register(honest.clone(), "honest").await;
    let rogue_id = register(rogue.clone(), "rogue").await;
    let mut refused = 0;
    for _ in 0..10 {
        let task = w
            .lease_task(with_token(
                Some(&honest),
                v1::LeaseTaskRequest {
                    worker_id: honest_id.clone(),
                    wait_ms: 1000,
                    device: None,
                    slot: 0,
                },
            ))
            .await
            .expect("lease")
            .into_inner()
            .task
            .expect("a task");
        // The rogue names itself: the lease is not its own.
        for code in [
            w.report_result(with_token(Some(&rogue), report_ok(&rogue_id, &task)))
                .await
                .map(|_| ())
                .err()
                .map(|s| s.code()),
            w.report_progress(with_token(
                Some(&rogue),
                v1::ReportProgressRequest {
                    worker_id: rogue_id.clone(),
                    task_id: task.task_id.clone(),
                    lease_token: task.lease_token,
                    ..Default::default()
                },
            ))
            .await
            .map(|_| ())
            .err()
            .map(|s| s.code()),
            // The rogue impersonates the holder: its credential is not the holder's.
            w.report_result(with_token(Some(&rogue), report_ok(&honest_id, &task)))
                .await
                .map(|_| ())
                .err()
                .map(|s| s.code()),
        ] {
            assert!(
                matches!(
                    code,
                    Some(Code::FailedPrecondition | Code::PermissionDenied)
                ),
                "refused, got {code:?}"
            );
            refused += 1;
        }
        // A heartbeat of the rogue does not extend the honest worker's lease.
        let hb = w
            .heartbeat(with_token(
                Some(&rogue),
                v1::HeartbeatRequest {
                    worker_id: rogue_id.clone(),
                    tasks: vec![v1::HeldTask {
                        task_id: task.task_id.clone(),
                        lease_token: task.lease_token,
                    }],
                },
            ))
            .await
            .expect("heartbeat")
            .into_inner();
        assert!(hb.extended.is_empty());
        let ack = w
            .report_result(with_token(Some(&honest), report_ok(&honest_id, &task)))
            .await
            .expect("the holder's report is accepted")
            .into_inner();
        assert!(!ack.duplicate);
    }
    assert_eq!(refused, 30);
    let _ = tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;
}
both_backends!(
    cross_worker_reports_refused,
    workers_speak_only_for_themselves
);

/// Without `--auth token` nobody may mint tokens over the API (they would stay valid once
/// authentication is switched on); the bootstrap command is the way in.
async fn no_token_management_without_auth(db: &TestDb) {
    let server = AuthServer::start(db, AuthSettings::default()).await;
    let mut tokens = TokenServiceClient::new(server.channel().await);
    let err = tokens
        .create_token(v1::CreateTokenRequest {
            role: v1::Role::Admin as i32,
            name: "sneaky".into(),
            expires_in_seconds: 0,
        })
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("--auth token"), "{}", err.message());
    let err = tokens
        .list_tokens(v1::ListTokensRequest::default())
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(server
        .coordinator
        .store
        .list_tokens(true)
        .await
        .expect("list")
        .is_empty());
    server.stop().await;
}
both_backends!(tokens_need_auth, no_token_management_without_auth);
