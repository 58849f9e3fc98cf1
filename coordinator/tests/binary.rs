//! Tests of the real `nat-coordinator` binary: start with no flags, health and reflection, and
//! `kill -9` in the middle of a job followed by a restart on the same database.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{evaluate_request, test_config, TestDb, TestServer};
use futures::StreamExt;
use nat_proto::v1;
use nat_proto::v1::job_service_client::JobServiceClient;
use nat_proto::v1::worker_service_client::WorkerServiceClient;
use tonic::transport::Channel;

use common::process::{http_get, sigterm, spawn, wait_exit, Proc, SimWorkers, BIN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_with_no_flags_on_sqlite_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Only the ports come from the environment (port 0, so parallel tests do not collide);
    // the database is the default SQLite file under ./.nat.
    let mut p = spawn(
        &[],
        &[
            ("NAT_LISTEN", "127.0.0.1:0"),
            ("NAT_HTTP_LISTEN", "127.0.0.1:0"),
        ],
        dir.path(),
    );
    assert!(dir.path().join(".nat/coordinator.db").exists());
    let reply = http_get(&p.http, "/healthz").await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("ok\n"));
    let ch = common::connect(&format!("http://{}", p.grpc)).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    let s = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "nat.v1.WorkerService".into(),
        })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(
        s.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    sigterm(&p.child);
    let status = wait_exit(&mut p.child, Duration::from_secs(10));
    assert!(status.success(), "graceful exit, got {status:?}");
}

/// A SQLite database serves one coordinator: a second one on the same file exits at start
/// with one line naming the file; once the first has stopped, a new one starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_coordinator_on_one_sqlite_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("shared.db");
    let url = format!("sqlite:{}", db.display());
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        "--database-url",
        url.as_str(),
    ];
    let mut first = spawn(&args, &[], dir.path());

    let second = Command::new(BIN)
        .args(args)
        .current_dir(dir.path())
        .env_remove("NAT_DATABASE_URL")
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run a second nat-coordinator");
    assert!(!second.status.success(), "the second coordinator started");
    let stderr = String::from_utf8_lossy(&second.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("Error:"))
        .unwrap_or_else(|| panic!("no error line in {stderr:?}"));
    assert!(line.contains(&db.display().to_string()), "{line}");
    assert!(line.contains("held by another coordinator"), "{line}");
    assert!(line.contains("PostgreSQL"), "{line}");
    assert!(
        second.stdout.is_empty(),
        "the second coordinator listened: {:?}",
        String::from_utf8_lossy(&second.stdout)
    );

    // The first still serves (the refusal did not disturb it), then stops.
    let reply = http_get(&first.http, "/healthz").await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    sigterm(&first.child);
    assert!(wait_exit(&mut first.child, Duration::from_secs(20)).success());
    let mut third = spawn(&args, &[], dir.path());
    let reply = http_get(&third.http, "/healthz").await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    sigterm(&third.child);
    assert!(wait_exit(&mut third.child, Duration::from_secs(20)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_serving_and_reflection_lists_both_services() {
    let db = TestDb::new(common::Backend::Sqlite).await;
    let server = TestServer::start(&db, test_config(), false).await;
    let ch = server.channel().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    for service in ["nat.v1.JobService", "nat.v1.WorkerService"] {
        let s = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health")
            .into_inner();
        assert_eq!(
            s.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service}"
        );
    }
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(ch);
    let req = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection
        .server_reflection_info(tokio_stream::once(req))
        .await
        .expect("reflection")
        .into_inner();
    let reply = stream.next().await.expect("a reply").expect("ok");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("list services response expected");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"nat.v1.JobService".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"nat.v1.WorkerService".to_string()),
        "{names:?}"
    );
    // The v1alpha protocol too (Python's grpcio-reflection speaks it).
    {
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        let mut reflection = ServerReflectionClient::new(server.channel().await);
        let req = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = reflection
            .server_reflection_info(tokio_stream::once(req))
            .await
            .expect("v1alpha reflection")
            .into_inner();
        let reply = stream.next().await.expect("a reply").expect("ok");
        let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
            panic!("list services response expected");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(
            names.contains(&"nat.v1.JobService".to_string()),
            "{names:?}"
        );
    }
    server.stop().await;
    db.cleanup().await;
}

/// `/readyz` and the gRPC health status follow the database: ready while PostgreSQL answers;
/// once the database is gone, `/readyz` answers 503 with the reason and the API services turn
/// NOT_SERVING, while `/healthz` (liveness) stays 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TestDb::new(common::Backend::Postgres).await;
    let mut p = spawn(
        &[],
        &[
            ("NAT_LISTEN", "127.0.0.1:0"),
            ("NAT_HTTP_LISTEN", "127.0.0.1:0"),
            ("NAT_DATABASE_URL", &db.url),
        ],
        dir.path(),
    );
    let reply = http_get(&p.http, "/readyz").await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        reply.contains("ready: the postgres database answers; leader (epoch 1)"),
        "a coordinator alone on its database leads: {reply}"
    );
    let ch = common::connect(&format!("http://{}", p.grpc)).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch);
    let status = |s: &str| tonic_health::pb::HealthCheckRequest { service: s.into() };
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    let s = health
        .check(status("nat.v1.JobService"))
        .await
        .expect("health")
        .into_inner();
    assert_eq!(s.status, serving);

    // The database goes away (its connections are terminated).
    db.cleanup().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let reply = loop {
        let reply = http_get(&p.http, "/readyz").await;
        if reply.starts_with("HTTP/1.1 503") {
            break reply;
        }
        assert!(Instant::now() < deadline, "still ready: {reply}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        reply.contains("not ready: the postgres database"),
        "{reply}"
    );
    assert!(!reply.contains("FATAL"), "no database text: {reply}");
    loop {
        let s = health
            .check(status("nat.v1.WorkerService"))
            .await
            .expect("health")
            .into_inner();
        if s.status != serving {
            break;
        }
        assert!(Instant::now() < deadline, "gRPC health still SERVING");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reply = http_get(&p.http, "/healthz").await;
    assert!(reply.starts_with("HTTP/1.1 200"), "liveness: {reply}");
    p.child.kill().expect("kill");
    let _ = p.child.wait();
}

/// Flags of a coordinator on `database_url` listening on `listen`, with short leases.
fn short_lease_args(database_url: &str, listen: &str) -> Vec<String> {
    [
        "--listen",
        listen,
        "--http-listen",
        "127.0.0.1:0",
        "--database-url",
        database_url,
        "--lease-seconds",
        "2",
        "--heartbeat-seconds",
        "0.5",
        "--expiry-interval-ms",
        "200",
    ]
    .iter()
    .map(|a| (*a).to_string())
    .collect()
}

/// A coordinator on `database_url` listening on `listen`, with short leases.
fn spawn_short_lease(database_url: &str, listen: &str, cwd: &Path) -> Proc {
    let args = short_lease_args(database_url, listen);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    spawn(&refs, &[], cwd)
}

/// After a `kill -9` of `killed`: a new coordinator on the same database and address (300 ms
/// later), a client of it, and `job_id` once it is final; panics with `what` and the job if it is
/// not final within `limit`.
async fn restart_and_wait_for_end(
    database_url: &str,
    killed: &Proc,
    cwd: &Path,
    job_id: &str,
    limit: Duration,
    what: &str,
) -> (Proc, JobServiceClient<Channel>, v1::Job) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let restarted = spawn_short_lease(database_url, &killed.grpc, cwd);
    let url = format!("http://{}", killed.grpc);
    let mut jobs = JobServiceClient::new(common::connect(&url).await);
    let deadline = Instant::now() + limit;
    let done = common::wait_for_end(&mut jobs, job_id, deadline, what).await;
    (restarted, jobs, done)
}

async fn kill9(db: &TestDb) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = spawn_short_lease(&db.url, "127.0.0.1:0", dir.path());
    let url = format!("http://{}", p.grpc);
    let mut jobs = JobServiceClient::new(common::connect(&url).await);
    let presets = ["darts-v2", "enas", "naonet", "resnet-block"];
    let archs: Vec<&str> = presets.iter().cycle().take(24).copied().collect();
    let job_id = common::submit(&mut jobs, evaluate_request(&archs, "digits"))
        .await
        .job_id;

    let workers = SimWorkers::start(&url, 4, Duration::from_millis(60));

    // Kill -9 once about a third of the tasks are done.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let j = common::job(&mut jobs, &job_id).await;
        if j.tasks_succeeded >= 8 {
            assert!(j.tasks_succeeded < 24, "killed mid-job");
            break;
        }
        assert!(Instant::now() < deadline, "no progress before the kill");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p.child.kill().expect("SIGKILL");
    let status = p.child.wait().expect("wait");
    assert!(!status.success());

    // Restart on the same database and the same port; the workers reconnect by themselves.
    let (mut p2, mut jobs, done) = restart_and_wait_for_end(
        &db.url,
        &p,
        dir.path(),
        &job_id,
        Duration::from_secs(90),
        "job did not finish after restart",
    )
    .await;
    assert_eq!(p2.grpc, p.grpc);
    assert_eq!(done.state, v1::JobState::Succeeded as i32, "{done:?}");
    let reports = workers.stop().await;

    // Every task counted exactly once.
    assert_eq!(done.tasks_total, 24);
    assert_eq!(done.tasks_succeeded, 24);
    assert_eq!(done.tasks_failed, 0);
    assert!(
        reports >= 24,
        "each task reported at least once ({reports})"
    );
    let result = jobs
        .get_job_result(v1::GetJobResultRequest {
            job_id: job_id.clone(),
        })
        .await
        .expect("result")
        .into_inner();
    assert_eq!(result.architectures.len(), 24);
    assert!(result
        .architectures
        .iter()
        .all(|a| a.state == v1::TaskState::Succeeded as i32 && a.result.is_some()));
    // The event log has exactly one success per task.
    let mut stream = jobs
        .watch_job(v1::WatchJobRequest {
            job_id: job_id.clone(),
            after_sequence: 0,
        })
        .await
        .expect("watch")
        .into_inner();
    let mut completed = std::collections::HashSet::new();
    let mut completions = 0;
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("stream")
    {
        if let Some(v1::job_event::Event::TaskCompleted(t)) = ev.expect("event").event {
            completions += 1;
            completed.insert(t.task_id);
        }
    }
    assert_eq!(completions, 24);
    assert_eq!(completed.len(), 24);
    // Reward estimates: 4 architectures x 6 observations, none counted twice.
    let store = nat_store::connect(&db.url).await.expect("store");
    let budget = nat_schema::budget::Budget::preset("smoke")
        .expect("smoke")
        .key();
    for name in presets {
        let key = nat_store::RewardKey {
            arch_hash: nat_arch::parse_any(name).expect("preset").canonical_hash(),
            dataset: "digits".into(),
            budget: budget.clone(),
        };
        let e = store
            .reward_estimate(&key)
            .await
            .expect("read")
            .expect("estimate");
        assert_eq!(e.count, 6, "{name}");
    }
    drop(store);
    sigterm(&p2.child);
    let status = wait_exit(&mut p2.child, Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
}
both_backends!(kill_dash_nine_mid_job_then_restart, kill9);

/// `kill -9` of the coordinator binary while an optimize job's rewards wait for the next policy
/// update (spec §4: each reward moves the policy exactly once), then a restart on the same
/// database: the waiting rewards are applied after the restart, once, and the job finishes with
/// exactly one policy version per learning round.
async fn kill9_optimize(db: &TestDb) {
    const ITERATIONS: u32 = 6;
    const SAMPLES: u32 = 4;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = spawn_short_lease(&db.url, "127.0.0.1:0", dir.path());
    let url = format!("http://{}", p.grpc);
    let mut jobs = JobServiceClient::new(common::connect(&url).await);
    let request = common::optimize_request("optimize, kill -9", ITERATIONS, SAMPLES, 3);
    let job_id = common::submit(&mut jobs, request).await.job_id;
    // Each task is held 100 ms, so a round's rewards arrive over a few hundred ms before the
    // update that consumes them: the window the kill aims at.
    let workers = SimWorkers::start(&url, 2, Duration::from_millis(100));

    // Wait until at least one update is committed and rewards of the next round are waiting.
    let store = nat_store::connect(&db.url).await.expect("store");
    let deadline = Instant::now() + Duration::from_secs(90);
    let (policy_id, version_at_kill, waiting) = loop {
        assert!(
            Instant::now() < deadline,
            "no moment with rewards waiting for an update was seen"
        );
        let policy = store
            .list_policies()
            .await
            .expect("policies")
            .into_iter()
            .find(|p| p.source_job.is_some_and(|j| j.to_string() == job_id));
        if let Some(policy) = policy.filter(|p| p.version >= 2) {
            let waiting = store
                .take_unconsumed_rewards(&policy.policy_id, 1000)
                .await
                .expect("unconsumed rewards");
            let version = store
                .latest_checkpoint(&policy.policy_id)
                .await
                .expect("checkpoint")
                .version;
            if !waiting.is_empty() && version == policy.version {
                let j = common::job(&mut jobs, &job_id).await;
                assert_eq!(
                    j.state,
                    v1::JobState::Running as i32,
                    "still learning: {j:?}"
                );
                p.child.kill().expect("SIGKILL");
                break (policy.policy_id, version, waiting);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let status = p.child.wait().expect("wait");
    assert!(!status.success());
    eprintln!(
        "killed at policy version {version_at_kill} with {} reward(s) waiting for the update",
        waiting.len()
    );
    // What the dead coordinator left: each of those rewards still unconsumed, or consumed by an
    // update it committed between our look and the kill (a later version, already stored).
    let left = store
        .take_unconsumed_rewards(&policy_id, 1000)
        .await
        .expect("unconsumed rewards");
    let version_left = store
        .latest_checkpoint(&policy_id)
        .await
        .expect("checkpoint")
        .version;
    assert!(version_left >= version_at_kill);
    for sample in &waiting {
        if left.iter().any(|l| l.id == sample.id) {
            continue;
        }
        let consumed = store
            .get_sample(sample.id)
            .await
            .expect("sample")
            .consumed_in_version;
        assert!(
            consumed.is_some_and(|v| v > version_at_kill && v <= version_left),
            "no waiting reward was lost: sample {:?} neither waits nor was consumed before the kill ({consumed:?})",
            sample.id
        );
    }

    let (mut p2, _jobs, done) = restart_and_wait_for_end(
        &db.url,
        &p,
        dir.path(),
        &job_id,
        Duration::from_secs(120),
        "optimize job did not finish after the restart",
    )
    .await;
    workers.stop().await;
    assert_eq!(done.state, v1::JobState::Succeeded as i32, "{done:?}");

    // Exactly one update per learning round: none lost to the crash, none applied twice.
    let latest = store
        .latest_checkpoint(&policy_id)
        .await
        .expect("checkpoint");
    assert_eq!(
        latest.version,
        1 + i64::from(ITERATIONS),
        "{:?}",
        latest.meta
    );
    // Every reward that waited at the kill moved the policy once, in an update after the kill.
    for sample in &waiting {
        let now = store.get_sample(sample.id).await.expect("sample");
        let consumed = now
            .consumed_in_version
            .expect("a reward waiting at the kill is consumed after the restart");
        assert!(
            consumed > version_at_kill,
            "sample {:?} consumed in version {consumed}, at or before the killed version {version_at_kill}",
            sample.id
        );
    }
    let summary = common::policy_summary(&*store, &policy_id).await;
    assert_eq!(
        summary.rewards_consumed,
        u64::from(ITERATIONS * SAMPLES),
        "every learning reward consumed exactly once"
    );
    let applied = latest.meta["rewards_applied"]
        .as_u64()
        .expect("rewards_applied")
        + latest.meta["stale_dropped"]
            .as_u64()
            .expect("stale_dropped");
    assert_eq!(
        applied, summary.rewards_consumed,
        "the learner counted each consumed reward once: {:?}",
        latest.meta
    );
    drop(store);
    sigterm(&p2.child);
    let status = wait_exit(&mut p2.child, Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
}
both_backends!(
    kill_dash_nine_between_reward_and_policy_update,
    kill9_optimize
);

/// /metrics is served on the HTTP listener and its counters move with real traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_during_a_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite:{}", dir.path().join("m.db").display());
    let mut p = spawn(
        &[
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--database-url",
            &db,
        ],
        &[],
        dir.path(),
    );
    let counter = |text: &str, name: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next())
            .filter_map(|v| v.parse::<f64>().ok())
            .sum()
    };
    let before = http_get(&p.http, "/metrics").await;
    assert!(before.starts_with("HTTP/1.1 200"), "{before}");
    let url = format!("http://{}", p.grpc);
    let ch = common::connect(&url).await;
    let mut jobs = JobServiceClient::new(ch.clone());
    let mut w = WorkerServiceClient::new(ch);
    jobs.submit_job(evaluate_request(&["darts-v2"], "digits"))
        .await
        .expect("submit");
    let worker = common::register(&mut w, "m").await;
    let task = common::lease(&mut w, &worker, 1000).await.expect("task");
    w.report_result(common::report_ok(&worker, &task))
        .await
        .expect("report");
    let after = http_get(&p.http, "/metrics").await;
    let leased = "nat_tasks_leased_total{task_kind=\"train_eval\"}";
    assert_eq!(counter(&before, leased), 0.0);
    assert_eq!(counter(&after, leased), 1.0, "{after}");
    assert!(counter(&after, "nat_report_result_duration_seconds_count") >= 1.0);
    // The dashboard is mounted at the root.
    let page = http_get(&p.http, "/").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    sigterm(&p.child);
    assert!(wait_exit(&mut p.child, Duration::from_secs(10)).success());
}
