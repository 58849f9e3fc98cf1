//! Lease reservations (coordinator/src/reserve.rs) over real gRPC, on SQLite and PostgreSQL:
//! leases answered from reservations, the hand-out recorded in the store, every task counted
//! once, reservations returned at shutdown and at start (after a crash), and withdrawn with a
//! cancelled job.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use nat_coordinator::Config;
use nat_proto::v1;
use nat_store::{LeaseRequest, TaskState};

/// `n` architectures: the input presets of nat-arch in turn.
fn architectures(n: usize) -> Vec<&'static str> {
    nat_arch::presets::all()
        .iter()
        .filter(|p| p.kind == nat_arch::presets::PresetKind::Input)
        .map(|p| p.name)
        .cycle()
        .take(n)
        .collect()
}

/// Reservations at any rate: 200 ms of demand kept reserved.
fn reserving() -> Config {
    Config {
        lease_reserve: Duration::from_millis(200),
        lease_reserve_min_rate: 0.0,
        ..test_config()
    }
}

/// A job, task or worker id from its wire text.
fn uuid<T: std::str::FromStr<Err = nat_store::ParseIdError>>(s: &str) -> T {
    s.parse().expect("uuid")
}

/// Leases and reports with one worker, a task every 10 ms, until the server's reservations
/// hand out a lease; returns the ids of the tasks done.
async fn work_until_reserved(
    server: &TestServer,
    w: &mut v1::worker_service_client::WorkerServiceClient<tonic::transport::Channel>,
    worker: &str,
) -> Vec<String> {
    let mut done = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.coordinator.reservations.stats().handed_out == 0 {
        assert!(
            Instant::now() < deadline,
            "no lease came from a reservation"
        );
        let t = lease(w, worker, 1000).await.expect("a task");
        w.report_result(report_ok(worker, &t))
            .await
            .expect("report");
        done.push(t.task_id);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done
}

/// Waits until the store records `worker` as the holder of `t` (same lease token).
async fn wait_assigned(server: &TestServer, t: &v1::Task, worker: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stored = server
            .coordinator
            .store
            .get_task(uuid(&t.task_id))
            .await
            .expect("task");
        assert_eq!(stored.state, TaskState::Leased);
        assert_eq!(stored.lease_token, t.lease_token as i64);
        if stored.leased_by == Some(uuid(worker)) {
            return;
        }
        assert!(Instant::now() < deadline, "the hand-out is never recorded");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn reserved_leases_flow(db: &TestDb) {
    let server = TestServer::start(db, reserving(), false).await;
    let mut jobs = server.jobs().await;
    let (mut w, worker) = registered(&server, "w").await;
    let job = submit(&mut jobs, evaluate_request(&architectures(60), "digits")).await;
    let mut done = work_until_reserved(&server, &mut w, &worker).await;
    assert!(
        !server.coordinator.reservations.is_empty(),
        "tasks are reserved ahead"
    );

    // A lease from a reservation: its worker is recorded in the store shortly after.
    let before = server.coordinator.reservations.stats().handed_out;
    let t = lease(&mut w, &worker, 1000).await.expect("a task");
    assert_eq!(
        server.coordinator.reservations.stats().handed_out,
        before + 1,
        "answered from a reservation"
    );
    // Before the store has the worker (the hand-out is written a second later), another
    // worker holding the task id and token can neither report, send progress for nor
    // heartbeat the lease: the coordinator knows whom it handed it to.
    let (mut other, other_id) = registered(&server, "other").await;
    let task_id = uuid(&t.task_id);
    assert_eq!(
        server
            .coordinator
            .handouts
            .holder(task_id, t.lease_token as i64),
        Some(uuid(&worker)),
        "the hand-out is still pending"
    );
    let s = other
        .report_result(report_ok(&other_id, &t))
        .await
        .expect_err("foreign report of a pending hand-out");
    assert_eq!(s.code(), tonic::Code::FailedPrecondition, "{s:?}");
    let s = other
        .report_progress(v1::ReportProgressRequest {
            worker_id: other_id.clone(),
            task_id: t.task_id.clone(),
            lease_token: t.lease_token,
            ..Default::default()
        })
        .await
        .expect_err("foreign progress of a pending hand-out");
    assert_eq!(s.code(), tonic::Code::FailedPrecondition, "{s:?}");
    let beat = other
        .heartbeat(v1::HeartbeatRequest {
            worker_id: other_id.clone(),
            tasks: vec![v1::HeldTask {
                task_id: t.task_id.clone(),
                lease_token: t.lease_token,
            }],
        })
        .await
        .expect("heartbeat")
        .into_inner();
    assert!(beat.extended.is_empty(), "{beat:?}");
    let stored = server
        .coordinator
        .store
        .get_task(task_id)
        .await
        .expect("task");
    assert_ne!(stored.leased_by, Some(uuid(&other_id)));
    wait_assigned(&server, &t, &worker).await;
    // Once recorded, the store refuses the other worker too; the holder reports, once.
    let s = other
        .report_result(report_ok(&other_id, &t))
        .await
        .expect_err("foreign report");
    assert_eq!(s.code(), tonic::Code::FailedPrecondition);
    w.report_result(report_ok(&worker, &t))
        .await
        .expect("report");
    let dup = w
        .report_result(report_ok(&worker, &t))
        .await
        .expect("duplicate");
    assert!(dup.into_inner().duplicate);
    done.push(t.task_id);

    // A task reported before its hand-out falls due is written once, by its report: the
    // background write of its hand-out is dropped.
    let before = server.coordinator.handouts.stats();
    let quick = lease(&mut w, &worker, 1000).await.expect("a task");
    w.report_result(report_ok(&worker, &quick))
        .await
        .expect("report");
    let after = server.coordinator.handouts.stats();
    assert_eq!(after.skipped, before.skipped + 1, "{before:?} -> {after:?}");
    let stored = server
        .coordinator
        .store
        .get_task(uuid(&quick.task_id))
        .await
        .expect("task");
    assert_eq!(stored.state, TaskState::Done);
    assert_eq!(stored.leased_by, Some(uuid(&worker)));
    done.push(quick.task_id);

    // A lease handed out right before a graceful shutdown: the shutdown waits for its hand-out
    // to be written, and returns the unused reservations: no lease without a worker is left.
    let before = server.coordinator.reservations.stats().handed_out;
    let last = lease(&mut w, &worker, 1000).await.expect("a task");
    assert_eq!(
        server.coordinator.reservations.stats().handed_out,
        before + 1
    );
    server.stop().await;
    let store = nat_store::connect(&db.url).await.expect("store");
    let leased = store
        .list_tasks(uuid(&job.job_id), Some(TaskState::Leased), 0, 0)
        .await
        .expect("tasks");
    assert_eq!(
        leased
            .iter()
            .map(|t| (t.id, t.leased_by))
            .collect::<Vec<_>>(),
        vec![(uuid(&last.task_id), Some(uuid(&worker)))],
        "only the handed-out lease is left, recorded as the worker's"
    );
    drop(store);

    // Restart and finish: every task done exactly once, attempts given back.
    let server = TestServer::start(db, reserving(), false).await;
    let mut jobs = server.jobs().await;
    let mut w = server.workers().await;
    // The lease survived the restart: its report is accepted.
    w.report_result(report_ok(&worker, &last))
        .await
        .expect("report after restart");
    done.push(last.task_id);
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Some(t) = lease(&mut w, &worker, 200).await {
        w.report_result(report_ok(&worker, &t))
            .await
            .expect("report");
        done.push(t.task_id);
        assert!(Instant::now() < deadline, "job does not finish");
    }
    let finished = wait_for_end(&mut jobs, &job.job_id, deadline, "reserved job").await;
    assert_eq!(finished.state, v1::JobState::Succeeded as i32);
    assert_eq!(finished.tasks_succeeded, 60);
    let distinct: HashSet<&String> = done.iter().collect();
    assert_eq!(
        (done.len(), distinct.len()),
        (60, 60),
        "each task done once"
    );
    let store = server.coordinator.store.clone();
    let tasks = store
        .list_tasks(uuid(&job.job_id), None, 0, 0)
        .await
        .expect("tasks");
    assert!(
        tasks
            .iter()
            .all(|t| t.attempt == 1 && t.failures.is_empty()),
        "released reservations gave their attempt back"
    );
    server.stop().await;
}
both_backends!(reserved_leases, reserved_leases_flow);

/// Reservations of a process that died (never handed out) go back to the queue at the next
/// start, with their attempt; the job then runs to the end. They were claimed a minute before
/// the restart: coordinators sharing PostgreSQL only take back reservations older than any a
/// live coordinator keeps (`leader::orphaned_reservation_age`); SQLite takes back all.
async fn crash_left_reservations_flow(db: &TestDb) {
    let server = TestServer::start(db, reserving(), false).await;
    let mut jobs = server.jobs().await;
    let job = submit(&mut jobs, evaluate_request(&architectures(11), "digits")).await;
    let (_, worker) = registered(&server, "w").await;
    let store = server.coordinator.store.clone();
    // What a crashed coordinator leaves behind: tasks reserved, nobody recorded.
    let slot = LeaseRequest {
        worker: None,
        capabilities: nat_store::Capabilities {
            cpu_cores: 2,
            ..Default::default()
        },
        datasets: vec![],
    };
    let reserved = store
        .lease_tasks(&vec![slot; 4], chrono::Utc::now(), Duration::from_secs(120))
        .await
        .expect("reserve");
    assert!(reserved.iter().all(Option::is_some));
    server.stop().await;
    // The crash was a minute ago.
    use sqlx::Connection;
    if db.url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(&db.url).await.expect("connect");
        sqlx::query("UPDATE tasks SET updated_at = updated_at - interval '60 seconds' WHERE state = 'leased'")
            .execute(&mut conn)
            .await
            .expect("age");
    } else {
        let mut conn = sqlx::SqliteConnection::connect(&db.url)
            .await
            .expect("connect");
        sqlx::query("UPDATE tasks SET updated_at = updated_at - 60000000 WHERE state = 'leased'")
            .execute(&mut conn)
            .await
            .expect("age");
    }

    let server = TestServer::start(db, reserving(), false).await;
    let mut jobs = server.jobs().await;
    let mut w = server.workers().await;
    // Answered only once the server runs, i.e. after its start-up sweep.
    common::job(&mut jobs, &job.job_id).await;
    for r in reserved.iter().flatten() {
        let t = server
            .coordinator
            .store
            .get_task(r.task.id)
            .await
            .expect("task");
        assert_eq!((t.state, t.attempt), (TaskState::Ready, 0));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Some(t) = lease(&mut w, &worker, 200).await {
        assert_eq!(t.attempt, 1);
        w.report_result(report_ok(&worker, &t))
            .await
            .expect("report");
    }
    let finished = wait_for_end(&mut jobs, &job.job_id, deadline, "job after crash").await;
    assert_eq!(
        (finished.state, finished.tasks_succeeded),
        (v1::JobState::Succeeded as i32, 11)
    );
    server.stop().await;
}
both_backends!(crash_left_reservations, crash_left_reservations_flow);

/// Cancelling a job withdraws its reservations with its queued tasks.
async fn cancel_withdraws_reservations_flow(db: &TestDb) {
    let server = TestServer::start(db, reserving(), false).await;
    let mut jobs = server.jobs().await;
    let (mut w, worker) = registered(&server, "w").await;
    let job = submit(&mut jobs, evaluate_request(&architectures(60), "digits")).await;
    let done = work_until_reserved(&server, &mut w, &worker).await;
    let held = lease(&mut w, &worker, 1000).await.expect("a task");
    assert!(!server.coordinator.reservations.is_empty());
    // Its hand-out is not written yet (that waits a second): the cancel writes it first, so
    // the task stays the worker's instead of being withdrawn with the reservations.
    assert!(!server.coordinator.handouts.is_empty(), "hand-out pending");
    let cancelled = cancel(&mut jobs, &job.job_id).await;
    assert!(
        server.coordinator.handouts.is_empty(),
        "written by the cancel"
    );
    assert!(server.coordinator.reservations.is_empty(), "dropped");
    // Everything not done and not in the worker's hand is cancelled, reservations included.
    assert_eq!(cancelled.tasks_succeeded as usize, done.len());
    assert_eq!(cancelled.tasks_cancelled as usize, 60 - done.len() - 1);
    assert!(lease(&mut w, &worker, 0).await.is_none());
    // The task in hand is told to stop and its report cancels it.
    w.report_result(report_ok(&worker, &held))
        .await
        .expect("report");
    let end = common::job(&mut jobs, &job.job_id).await;
    assert_eq!(end.tasks_cancelled as usize, 60 - done.len());
    server.stop().await;
}
both_backends!(
    cancel_withdraws_reservations,
    cancel_withdraws_reservations_flow
);
