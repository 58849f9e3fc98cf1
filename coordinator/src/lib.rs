//! The nat-orchestrator coordinator: jobs, tasks and leases over gRPC, durable in a
//! [`nat_store::Store`] (PostgreSQL or SQLite).
//!
//! # Layout
//! - [`api`]: the gRPC services. They convert wire types and dispatch; no job logic:
//!   [`api::job`] (`nat.v1.JobService`), [`api::watch`] (`WatchJob`'s streamer),
//!   [`api::worker`] (`nat.v1.WorkerService`), [`api::policy`] (`nat.v1.PolicyService`).
//! - [`jobs`]: the job kinds, each a type implementing [`jobs::JobType`] (submit, resume,
//!   result, watch events), registered in [`jobs::Registry`]: [`jobs::evaluate`] and
//!   [`jobs::optimize`] (NAT: submit / learn / derive / final check / scoring / document).
//! - [`batch`]: group commit of concurrent LeaseTask / ReportResult store calls.
//! - [`reserve`]: lease reservations — tasks claimed ahead of demand under load, so that
//!   LeaseTask is answered from memory.
//! - [`handout`]: which worker got a reserved lease, written by its report or a second later.
//! - [`leader`]: leader election among coordinators sharing a database; only the leader runs
//!   the job drivers (policy updates, fenced by its term) and the lease sweep. [`peers`]: they
//!   wake each other's long-polls when tasks become claimable.
//! - [`state`]: what the handlers share; [`clock`]: the injected clock; [`convert`]: row, document
//!   (`nat_schema`) and wire conversions; [`error`]: `Status` mapping; [`config`]: settings.
//! - [`serve`]: the server, in the mini-redis style — it takes bound listeners and a shutdown
//!   future, so tests start it on port 0; [`serve_with`] takes [`ServeOptions`] too (TLS, see
//!   [`tls`]).
//!
//! Module dependencies point one way: `api` → `jobs` → (`state`, `convert`, `error`); `jobs`
//! never imports `api`, and a job kind never imports another.
//!
//! # How a job flows
//! `SubmitJob` validates the shared fields (`jobs::Submission`), and the job's kind validates
//! its own and creates the job with its first tasks in one store transaction (an evaluate job:
//! one `train_eval` task per architecture; an optimize job: none, its driver creates them).
//! `LeaseTask` claims a task in one statement (or, under load, takes one reserved ahead) and
//! returns it with a fencing token; heartbeats extend leases; `ReportResult` records the result,
//! the reward estimate and the event in one transaction (a duplicate is answered OK and counted
//! once; a stale token is `FAILED_PRECONDITION`). An optimize job's driver reads the job's new
//! events (O(1) per report), turns results into rewards and policy steps, and finally writes
//! the result. A background loop collects expired leases. Because all state is in the store,
//! `kill -9` of the coordinator loses nothing: a restart resumes every job. Several coordinators
//! may share one PostgreSQL database: all serve the API, the elected leader drives the jobs,
//! and another takes over when it stops renewing its term ([`leader`]).

pub mod api;
pub mod auth;
pub mod batch;
pub mod clock;
pub mod config;
pub mod convert;
pub mod error;
pub mod handout;
pub mod jobs;
pub mod leader;
pub mod peers;
pub mod reserve;
pub mod state;
pub mod tls;

use std::future::Future;
use std::sync::Arc;

use nat_proto::v1::job_service_server::JobServiceServer;
use nat_proto::v1::worker_service_server::WorkerServiceServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::Config;
pub use error::ApiError;
pub use state::Coordinator;

/// How often the store-derived gauges (jobs, tasks, workers by state) are refreshed.
const GAUGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Largest accepted gRPC message, in bytes (a larger one is refused with OUT_OF_RANGE before it
/// is decoded).
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;
/// Largest accepted header block of one call (metadata), in bytes.
const MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;
/// HTTP/2 pings on idle connections: a peer that does not answer within the timeout (a crashed
/// or partitioned host) has its connection closed, and its long-polls end.
const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The settings are inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The store could not be opened.
    #[error("cannot open the database")]
    Store(#[source] nat_store::StoreError),
    /// The reflection service could not be built.
    #[error("cannot build the reflection service")]
    Reflection(#[source] tonic_reflection::server::Error),
    /// The gRPC server failed.
    #[error("gRPC server failed")]
    Grpc(#[source] tonic::transport::Error),
    /// The HTTP server failed.
    #[error("HTTP server failed")]
    Http(#[source] std::io::Error),
    /// The Prometheus recorder could not be installed.
    #[error("cannot install the metrics recorder")]
    Metrics(#[source] nat_telemetry::TelemetryError),
    /// A server task panicked or was cancelled.
    #[error("server task failed")]
    Join(#[source] tokio::task::JoinError),
}

/// `database_url` with the PostgreSQL pool size set to `max_connections` (the
/// `--database-max-connections` flag): a `max_connections=N` query parameter, replacing one
/// already there. SQLite URLs are returned unchanged (its writers are serialized; the pool size
/// does not matter).
pub fn with_max_connections(database_url: &str, max_connections: u32) -> String {
    if !(database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")) {
        return database_url.to_string();
    }
    let (base, query) = database_url.split_once('?').unwrap_or((database_url, ""));
    let mut pairs: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("max_connections="))
        .map(str::to_string)
        .collect();
    pairs.push(format!("max_connections={max_connections}"));
    format!("{base}?{}", pairs.join("&"))
}

/// What [`serve_with`] adds to [`serve`].
#[derive(Default)]
pub struct ServeOptions {
    /// TLS on both listeners (plaintext when `None`), reloaded on SIGHUP and file changes.
    pub tls: Option<Arc<tls::ServerTls>>,
}

/// Serves gRPC (JobService, WorkerService, health, reflection) on `grpc` and, when given, HTTP
/// (`/healthz` liveness, `/readyz` readiness: the database answers; metrics; the dashboard) on
/// `http`, and runs the lease-expiry loop, until `shutdown` resolves. Then it
/// stops accepting, ends long-polls and watch streams, and waits for in-flight calls.
/// Plaintext: [`serve_with`] with the default [`ServeOptions`].
pub async fn serve(
    c: Arc<Coordinator>,
    grpc: TcpListener,
    http: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    serve_with(c, grpc, http, ServeOptions::default(), shutdown).await
}

/// [`serve`] with options. With `options.tls` both listeners serve TLS only, and a watcher
/// reloads the certificates (SIGHUP, file changes) until shutdown; HTTP handlers see the
/// connection as `ConnectInfo<`[`tls::TlsPeer`]`>`.
pub async fn serve_with(
    c: Arc<Coordinator>,
    grpc: TcpListener,
    http: Option<TcpListener>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    c.config.validate().map_err(ServeError::Config)?;
    // Process-wide and idempotent: several servers in one process share the recorder.
    let metrics = nat_telemetry::install_prometheus().map_err(ServeError::Metrics)?;
    let (health, health_service) = tonic_health::server::health_reporter();
    set_api_health(&health, true).await;
    // Reflection in both versions: grpcurl speaks v1, Python's grpcio-reflection v1alpha.
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(nat_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(ServeError::Reflection)?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(nat_proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(ServeError::Reflection)?;
    let kinds = Arc::new(jobs::Registry::standard());
    let jobs = JobServiceServer::new(api::job::JobApi::new(c.clone(), kinds.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let workers = WorkerServiceServer::new(api::worker::WorkerApi::new(c.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let policies = nat_proto::v1::policy_service_server::PolicyServiceServer::new(
        api::policy::PolicyApi::new(c.clone()),
    )
    .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let tokens = nat_proto::v1::token_service_server::TokenServiceServer::new(
        api::token::TokenApi::new(c.clone()),
    )
    .max_decoding_message_size(MAX_MESSAGE_BYTES);
    // Reservations of an earlier process that died were never handed out (or only just):
    // back to the queue before serving. With SQLite this process is the only coordinator of the
    // database, so all of them; coordinators sharing PostgreSQL leave those of live peers alone
    // (the leader returns the orphaned ones, see `leader`).
    if c.store.backend() == "sqlite" {
        let now = c.clock.now();
        match c.store.release_unassigned_leases(now, now).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                tasks = n,
                "reservations of an earlier run returned to the queue"
            ),
            Err(err) => nat_telemetry::report_error(&err, "cannot release earlier reservations"),
        }
    }
    // The first election round before serving: a coordinator alone on its database leads (and
    // resumes its jobs) from its first request on.
    let term = leader::round(&c, None).await;
    tracing::info!(
        instance = %c.leader.instance_id(),
        role = %c.leader.describe(),
        "leader election"
    );
    let election_task = tokio::spawn(leader::election_loop(c.clone(), term));
    let housekeeping_task = tokio::spawn(leader::housekeeping(c.clone(), kinds.clone()));
    let peer_tasks = (c.store.backend() != "sqlite").then(|| {
        (
            tokio::spawn(peers::announcer(c.clone())),
            tokio::spawn(peers::listener(c.clone())),
        )
    });

    let stopped = |c: &Arc<Coordinator>| {
        let mut rx = c.shutdown_signal();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let tls = options.tls;
    // Before the listeners serve: SIGHUP reloads from the first connection on.
    let tls_watcher = tls.as_ref().map(|tls| tls.spawn_watcher(stopped(&c)));
    if let Ok(addr) = grpc.local_addr() {
        tracing::info!(%addr, tls = tls.is_some(), "gRPC listening");
    }
    let grpc_router = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        // Overload bounds per client connection (see `Config::max_streams_per_connection`):
        // the HTTP/2 stream limit is enforced by the protocol, so a flood on one connection
        // cannot grow past it; messages and headers are bounded too.
        .max_concurrent_streams(c.config.max_streams_per_connection)
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        // Authentication before any service (a refused call never reaches one): see `auth`.
        .layer(auth::layer::AuthLayer::new(c.auth.clone()))
        // One span per RPC; handlers fill in the ids they learn (see `api::worker::span_ids`), so
        // every log line inside a request carries its method and worker/task/job ids.
        .trace_fn(|req| {
            tracing::info_span!(
                "rpc",
                method = %req.uri().path(),
                worker_id = tracing::field::Empty,
                task_id = tracing::field::Empty,
                job_id = tracing::field::Empty,
            )
        })
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(jobs)
        .add_service(workers)
        .add_service(policies)
        .add_service(tokens);
    let mut grpc_task = match &tls {
        Some(tls) => {
            tokio::spawn(grpc_router.serve_with_incoming_shutdown(
                tls.incoming(grpc, tls::Protocols::Grpc),
                stopped(&c),
            ))
        }
        None => tokio::spawn(grpc_router.serve_with_incoming_shutdown(nodelay(grpc), stopped(&c))),
    };

    let http_task = match http {
        Some(listener) => {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, tls = tls.is_some(), "HTTP listening");
            }
            let app = axum::Router::new()
                .route("/healthz", axum::routing::get(healthz))
                .route(
                    "/readyz",
                    axum::routing::get({
                        let c = c.clone();
                        move || readyz(c.clone())
                    }),
                )
                .merge(nat_telemetry::metrics_router(metrics.clone()))
                .merge(nat_dashboard::router_with(
                    c.store.clone(),
                    nat_dashboard::DashboardConfig {
                        heartbeat_stale_after: c.config.heartbeat_interval * 3,
                        ..Default::default()
                    },
                ))
                // Every route but /healthz and /readyz needs a token (see `auth::http`).
                .layer(axum::middleware::from_fn_with_state(
                    c.auth.clone(),
                    auth::http::middleware,
                ));
            Some(match &tls {
                Some(tls) => {
                    let listener = tls.incoming(listener, tls::Protocols::Http);
                    let app = app.into_make_service_with_connect_info::<tls::TlsPeer>();
                    let server = axum::serve(listener, app).with_graceful_shutdown(stopped(&c));
                    tokio::spawn(async move { server.await })
                }
                None => {
                    let server = axum::serve(listener, app).with_graceful_shutdown(stopped(&c));
                    tokio::spawn(async move { server.await })
                }
            })
        }
        None => None,
    };
    let expiry_task = tokio::spawn(expiry_loop(c.clone()));
    let readiness_task = tokio::spawn(readiness_loop(c.clone(), health.clone()));
    let gauges = nat_dashboard::gauges::spawn_refresher(c.store.clone(), GAUGE_INTERVAL);

    tokio::pin!(shutdown);
    let early = tokio::select! {
        _ = &mut shutdown => None,
        r = &mut grpc_task => Some(r),
    };
    tracing::info!("shutting down");
    health
        .set_not_serving::<JobServiceServer<api::job::JobApi>>()
        .await;
    c.begin_shutdown();
    let grpc_result = match early {
        Some(r) => r,
        None => grpc_task.await,
    };
    let _ = expiry_task.await;
    let _ = readiness_task.await;
    let _ = election_task.await;
    // Its store calls may hang on a database that went away: not waited for.
    housekeeping_task.abort();
    if let Some((announcer, listener)) = peer_tasks {
        let _ = announcer.await;
        let _ = listener.await;
    }
    if let Some(task) = tls_watcher {
        let _ = task.await;
    }
    // Hand-outs of reservations are written in the background: write the pending ones now,
    // then give back the reservations nobody took — including those of a claim that was in
    // flight when the shutdown began (no new claim starts once the pool is closed).
    c.reservations.close();
    if !c.handouts.flush(std::time::Duration::from_secs(5)).await {
        tracing::warn!("some reserved leases were handed out but not recorded before shutdown");
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while c.reservations.in_flight() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    if c.reservations.in_flight() > 0 {
        tracing::warn!(
            "a reservation claim did not finish before shutdown; the next start returns its tasks"
        );
    }
    release_reservations(&c, c.reservations.take_all()).await;
    gauges.abort();
    if let Some(task) = http_task {
        task.await
            .map_err(ServeError::Join)?
            .map_err(ServeError::Http)?;
    }
    grpc_result
        .map_err(ServeError::Join)?
        .map_err(ServeError::Grpc)?;
    tracing::info!("stopped");
    Ok(())
}

/// The accepted connections of `listener` with Nagle's algorithm off. A custom incoming stream
/// does not get the builder's `tcp_nodelay`, and without it a response larger than one segment
/// (a leased task) waits for the client's delayed ACK: about 40 ms per LeaseTask.
fn nodelay(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt;
    TcpListenerStream::new(listener).map(|conn| {
        if let Ok(stream) = &conn {
            if let Err(err) = stream.set_nodelay(true) {
                tracing::debug!(error = %err, "cannot set TCP_NODELAY");
            }
        }
        conn
    })
}

/// Liveness: the process serves HTTP.
async fn healthz() -> &'static str {
    "ok\n"
}

/// How long a readiness check waits for the database.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// How often the gRPC health status follows the database.
const READY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether the database answers within [`READY_TIMEOUT`]; the reason when not (no database
/// text: [`nat_store::StoreError`] never carries it).
async fn database_ready(store: &dyn nat_store::Store) -> Result<(), String> {
    match tokio::time::timeout(READY_TIMEOUT, store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!(
            "the {} database does not answer: {e}",
            store.backend()
        )),
        Err(_) => Err(format!(
            "the {} database did not answer within {} s",
            store.backend(),
            READY_TIMEOUT.as_secs()
        )),
    }
}

/// Readiness: 200 when the database answers, 503 with the reason otherwise; either way the
/// body says whether this coordinator leads (`leader (epoch N)`, `follower (leader ID, epoch
/// N)`). Followers are ready: they serve the whole API.
async fn readyz(c: Arc<Coordinator>) -> (http::StatusCode, String) {
    let role = c.leader.describe();
    match database_ready(&*c.store).await {
        Ok(()) => (
            http::StatusCode::OK,
            format!(
                "ready: the {} database answers; {role}\n",
                c.store.backend()
            ),
        ),
        Err(reason) => (
            http::StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}; {role}\n"),
        ),
    }
}

/// Keeps the gRPC health status of the API services in step with the database: NOT_SERVING
/// while it does not answer, SERVING again once it does. Ends at shutdown (which sets
/// NOT_SERVING itself).
async fn readiness_loop(c: Arc<Coordinator>, health: tonic_health::server::HealthReporter) {
    let mut shutdown = c.shutdown_signal();
    let mut tick = tokio::time::interval(READY_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut serving = true;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let ready = database_ready(&*c.store).await;
        if ready.is_ok() == serving {
            continue;
        }
        serving = ready.is_ok();
        match ready {
            Ok(()) => tracing::info!("the database answers again: gRPC health SERVING"),
            Err(reason) => tracing::warn!(%reason, "gRPC health NOT_SERVING"),
        }
        set_api_health(&health, serving).await;
    }
}

/// Sets the gRPC health status of the API services (JobService, WorkerService).
async fn set_api_health(health: &tonic_health::server::HealthReporter, serving: bool) {
    if serving {
        health
            .set_serving::<JobServiceServer<api::job::JobApi>>()
            .await;
        health
            .set_serving::<WorkerServiceServer<api::worker::WorkerApi>>()
            .await;
    } else {
        health
            .set_not_serving::<JobServiceServer<api::job::JobApi>>()
            .await;
        health
            .set_not_serving::<WorkerServiceServer<api::worker::WorkerApi>>()
            .await;
    }
}

/// Every `expiry_interval` until shutdown: returns this process's stale reservations and, on
/// the leader only, collects expired leases and lost workers ([`collect_expired`]).
async fn expiry_loop(c: Arc<Coordinator>) {
    let mut shutdown = c.shutdown_signal();
    let mut tick = tokio::time::interval(c.config.expiry_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        if c.leader.is_leader() {
            collect_expired(&c).await;
        } else {
            release_reservations(&c, c.reservations.take_stale()).await;
        }
    }
}

/// Returns reservations to the queue and wakes waiting workers.
async fn release_reservations(c: &Coordinator, held: Vec<nat_store::HeldLease>) {
    if held.is_empty() {
        return;
    }
    match c.store.release_leases(&held, c.clock.now()).await {
        Ok(n) => {
            tracing::debug!(released = n, "unused reservations returned to the queue");
            if n > 0 {
                c.wake_workers(n as usize);
            }
        }
        // They expire and are re-queued by the sweep.
        Err(err) => nat_telemetry::report_error(&err, "cannot release reservations"),
    }
}

/// One pass of lease expiry (also called by tests that drive a manual clock): unused
/// reservations that got old go back to the queue, expired leases are collected, silent workers
/// marked lost.
pub async fn collect_expired(c: &Coordinator) {
    release_reservations(c, c.reservations.take_stale()).await;
    let now = c.clock.now();
    match c.store.expire_leases(now).await {
        Ok(report) => {
            if !report.requeued.is_empty() || !report.failed.is_empty() {
                tracing::info!(
                    requeued = report.requeued.len(),
                    failed = report.failed.len(),
                    cancelled = report.cancelled.len(),
                    "expired leases collected"
                );
            }
            use nat_telemetry::{record, ExpiryOutcome, RetryReason, TaskKind};
            for (outcome, n) in [
                (ExpiryOutcome::Requeued, report.requeued.len()),
                (ExpiryOutcome::Failed, report.failed.len()),
                (ExpiryOutcome::Cancelled, report.cancelled.len()),
            ] {
                if n > 0 {
                    record::lease_expired(outcome, n as u64);
                }
            }
            for _ in &report.requeued {
                record::task_retried(TaskKind::Other, RetryReason::LeaseExpired);
            }
            if !report.requeued.is_empty() {
                c.wake_workers(report.requeued.len());
            }
            for job in report.finished_jobs {
                c.job_changed(job);
            }
            if !report.failed.is_empty() || !report.requeued.is_empty() {
                // Watchers poll their job; a broadcast of every affected job would need a read.
                c.wake_all_workers();
            }
        }
        Err(err) => nat_telemetry::report_error(&err, "lease expiry sweep failed"),
    }
    let lost_after =
        chrono::Duration::from_std(c.config.lease_duration).unwrap_or(chrono::Duration::MAX);
    if let Some(cutoff) = now.checked_sub_signed(lost_after) {
        match c.store.mark_lost_workers(cutoff).await {
            Ok(lost) if !lost.is_empty() => tracing::info!(count = lost.len(), "workers lost"),
            Ok(_) => {}
            Err(err) => nat_telemetry::report_error(&err, "marking lost workers failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::with_max_connections;

    #[test]
    fn pool_size_goes_into_postgres_urls_only() {
        assert_eq!(
            with_max_connections("postgres://u@h/db", 64),
            "postgres://u@h/db?max_connections=64"
        );
        assert_eq!(
            with_max_connections("postgresql://u@h/db?sslmode=disable&max_connections=8", 16),
            "postgresql://u@h/db?sslmode=disable&max_connections=16"
        );
        assert_eq!(
            with_max_connections("sqlite:/tmp/a.db", 64),
            "sqlite:/tmp/a.db"
        );
    }
}
