//! Jobs on a user's own dataset: a coordinator on port 0, real gRPC, SQLite and PostgreSQL
//! (fresh database each), and scripted workers that register the datasets they have, with
//! their shapes. A job's shape is given, or learned from the workers; tasks wait, with a
//! reason, until a worker that has the dataset connects, and carry the shape.

mod common;

use std::time::{Duration, Instant};

use common::{evaluate_request, job, lease, report_ok, submit, test_config, TestDb, TestServer};
use nat_proto::v1;
use tonic::transport::Channel;
use tonic::Code;
use v1::job_service_client::JobServiceClient;
use v1::worker_service_client::WorkerServiceClient;

fn shape(channels: u32, image_size: u32, classes: u32) -> v1::DatasetShape {
    v1::DatasetShape {
        channels,
        image_size,
        classes,
    }
}

fn info(name: &str, s: v1::DatasetShape) -> v1::DatasetInfo {
    v1::DatasetInfo {
        name: name.into(),
        shape: Some(s),
        train_examples: 200,
        test_examples: 40,
        format: "image-folder".into(),
    }
}

/// A registration of `name` with `datasets` and `infos`.
fn registration(
    name: &str,
    datasets: &[&str],
    infos: Vec<v1::DatasetInfo>,
) -> v1::RegisterWorkerRequest {
    v1::RegisterWorkerRequest {
        name: name.into(),
        capabilities: Some(v1::WorkerCapabilities {
            datasets: datasets.iter().map(|d| d.to_string()).collect(),
            dataset_infos: infos,
            ..common::cpu_capabilities()
        }),
    }
}

async fn register(w: &mut WorkerServiceClient<Channel>, r: v1::RegisterWorkerRequest) -> String {
    w.register_worker(r)
        .await
        .expect("register")
        .into_inner()
        .worker_id
}

fn on(dataset: &str, given: Option<v1::DatasetShape>) -> v1::SubmitJobRequest {
    let mut r = evaluate_request(&["darts-v2"], dataset);
    r.dataset_shape = given;
    r
}

/// The status of a rejected call, which must have `code` and name `what` in its message.
fn rejected<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code, what: &[&str]) -> String {
    let s = r.expect_err("must be rejected");
    assert_eq!(s.code(), code, "{what:?}: {s:?}");
    for w in what {
        assert!(s.message().contains(w), "{w:?} not in {:?}", s.message());
    }
    s.message().to_string()
}

async fn list_jobs(jobs: &mut JobServiceClient<Channel>) -> Vec<v1::Job> {
    jobs.list_jobs(v1::ListJobsRequest::default())
        .await
        .expect("list jobs")
        .into_inner()
        .jobs
}

/// A job on a user dataset with a given shape stays queued with a reason until a worker that
/// has the dataset registers; only that worker leases its tasks, which carry the shape; later
/// jobs learn the shape from it, also after a coordinator restart.
async fn user_dataset_flow(db: &TestDb) {
    let server = TestServer::start(db, test_config(), false).await;
    let mut jobs = server.jobs().await;
    let mut w = server.workers().await;
    let digits = register(
        &mut w,
        registration("digits-box", &["digits", "mnist"], vec![]),
    )
    .await;

    let cats = shape(3, 32, 2);
    let first = submit(&mut jobs, on("my-cats", Some(cats))).await;
    assert_eq!(first.dataset, "my-cats");
    assert_eq!(first.dataset_shape, Some(cats));
    let queued = job(&mut jobs, &first.job_id).await;
    assert_eq!(queued.state, v1::JobState::Queued as i32);
    assert_eq!(
        queued.waiting_reason,
        "no registered worker has dataset \"my-cats\" (1 worker connected: digits, mnist)"
    );
    let listed = list_jobs(&mut jobs).await;
    let row = listed
        .iter()
        .find(|j| j.job_id == first.job_id)
        .expect("listed");
    assert_eq!(row.waiting_reason, queued.waiting_reason);
    assert_eq!(row.dataset_shape, Some(cats));
    assert!(
        lease(&mut w, &digits, 0).await.is_none(),
        "a worker without the dataset never leases its tasks"
    );

    // A worker with the dataset clears the reason and gets the task, shape included.
    let cats_box = register(
        &mut w,
        registration(
            "cats-box",
            &["digits", "my-cats"],
            vec![info("my-cats", cats)],
        ),
    )
    .await;
    assert_eq!(job(&mut jobs, &first.job_id).await.waiting_reason, "");
    let task = lease(&mut w, &cats_box, 0)
        .await
        .expect("the cats worker gets it");
    match &task.payload {
        Some(v1::task::Payload::TrainEval(t)) => {
            assert_eq!(t.dataset, "my-cats");
            assert_eq!(t.dataset_shape, Some(cats));
        }
        other => panic!("{other:?}"),
    }
    w.report_result(report_ok(&cats_box, &task))
        .await
        .expect("report");
    let done = job(&mut jobs, &first.job_id).await;
    assert_eq!(done.state, v1::JobState::Succeeded as i32, "{done:?}");
    assert_eq!(done.waiting_reason, "", "a finished job waits for nothing");

    // No shape given: learned from the worker that reports the dataset.
    let learned = submit(&mut jobs, on("my-cats", None)).await;
    assert_eq!(learned.dataset_shape, Some(cats));
    // A given shape that differs from the workers' is refused, naming the worker.
    rejected(
        jobs.submit_job(on("my-cats", Some(shape(3, 64, 2)))).await,
        Code::FailedPrecondition,
        &["dataset_shape", "my-cats", "cats-box", "3x32x32, 2 classes"],
    );
    assert!(
        lease(&mut w, &digits, 0).await.is_none(),
        "still nothing for the worker without the dataset"
    );
    server.stop().await;

    // The workers' shapes are stored with them: a new coordinator on the same database learns
    // the shape without any worker registering again, and the jobs keep theirs.
    let server = TestServer::start(db, test_config(), false).await;
    let mut jobs = server.jobs().await;
    let mut w = server.workers().await;
    let again = submit(&mut jobs, on("my-cats", None)).await;
    assert_eq!(again.dataset_shape, Some(cats));
    assert_eq!(
        job(&mut jobs, &first.job_id).await.dataset_shape,
        Some(cats)
    );
    let workers = jobs
        .list_workers(v1::ListWorkersRequest::default())
        .await
        .expect("list workers")
        .into_inner()
        .workers;
    let infos = workers
        .iter()
        .find(|x| x.worker_id == cats_box)
        .and_then(|x| x.capabilities.as_ref())
        .map(|c| c.dataset_infos.clone());
    assert_eq!(infos, Some(vec![info("my-cats", cats)]));
    assert!(lease(&mut w, &digits, 0).await.is_none());
    for _ in 0..2 {
        let t = lease(&mut w, &cats_box, 0).await.expect("a my-cats task");
        match &t.payload {
            Some(v1::task::Payload::TrainEval(te)) => assert_eq!(te.dataset_shape, Some(cats)),
            other => panic!("{other:?}"),
        }
    }
    server.stop().await;
}
both_backends!(user_dataset_jobs, user_dataset_flow);

/// Bad names and shapes are INVALID_ARGUMENT naming the field; a user dataset nobody reports
/// and no shape, or workers that disagree, are FAILED_PRECONDITION saying why; with no worker
/// at all a job waits with "no worker is connected".
async fn dataset_errors(db: &TestDb) {
    let server = TestServer::start(db, test_config(), false).await;
    let mut jobs = server.jobs().await;
    let mut w = server.workers().await;

    let nobody = submit(&mut jobs, on("digits", None)).await;
    assert_eq!(
        nobody.dataset_shape,
        Some(shape(1, 8, 10)),
        "the built-in shape"
    );
    assert_eq!(
        job(&mut jobs, &nobody.job_id).await.waiting_reason,
        "no worker is connected"
    );

    rejected(
        jobs.submit_job(on("my-dogs", None)).await,
        Code::FailedPrecondition,
        &["dataset_shape is required", "my-dogs"],
    );
    for bad in ["My Dogs", "-dogs", "dogs/2", ""] {
        rejected(
            jobs.submit_job(on(bad, Some(shape(3, 32, 2)))).await,
            Code::InvalidArgument,
            &["dataset"],
        );
    }
    for (given, field) in [
        (shape(2, 32, 2), "dataset_shape.channels"),
        (shape(3, 1024, 2), "dataset_shape.image_size"),
        (shape(3, 32, 1), "dataset_shape.classes"),
    ] {
        rejected(
            jobs.submit_job(on("my-dogs", Some(given))).await,
            Code::InvalidArgument,
            &[field],
        );
    }
    // A built-in dataset has its shape: the same is fine, another names the field.
    submit(&mut jobs, on("mnist", Some(shape(1, 28, 10)))).await;
    rejected(
        jobs.submit_job(on("mnist", Some(shape(1, 32, 10)))).await,
        Code::InvalidArgument,
        &["dataset_shape.image_size", "mnist"],
    );
    rejected(
        jobs.submit_job(on("cifar10", Some(shape(3, 32, 100))))
            .await,
        Code::InvalidArgument,
        &["dataset_shape.classes"],
    );

    // Registrations: every info names a listed dataset once, with a valid shape.
    let bad_regs = [
        (
            registration("w", &["digits"], vec![info("my-dogs", shape(3, 32, 2))]),
            "capabilities.dataset_infos[0].name",
        ),
        (
            registration("w", &["My Dogs"], vec![info("My Dogs", shape(3, 32, 2))]),
            "capabilities.dataset_infos[0].name",
        ),
        (
            registration("w", &["my-dogs"], vec![info("my-dogs", shape(4, 32, 2))]),
            "capabilities.dataset_infos[0].shape.channels",
        ),
        (
            registration(
                "w",
                &["my-dogs"],
                vec![v1::DatasetInfo {
                    shape: None,
                    ..info("my-dogs", shape(3, 32, 2))
                }],
            ),
            "capabilities.dataset_infos[0].shape",
        ),
        (
            registration(
                "w",
                &["my-dogs"],
                vec![
                    info("my-dogs", shape(3, 32, 2)),
                    info("my-dogs", shape(3, 32, 2)),
                ],
            ),
            "capabilities.dataset_infos[1].name",
        ),
    ];
    for (r, field) in bad_regs {
        rejected(w.register_worker(r).await, Code::InvalidArgument, &[field]);
    }

    // Two workers that disagree on the shape: a job without one cannot learn it.
    let a = register(
        &mut w,
        registration(
            "dogs-a",
            &["my-dogs"],
            vec![info("my-dogs", shape(3, 32, 2))],
        ),
    )
    .await;
    register(
        &mut w,
        registration(
            "dogs-b",
            &["my-dogs"],
            vec![info("my-dogs", shape(3, 64, 2))],
        ),
    )
    .await;
    let msg = rejected(
        jobs.submit_job(on("my-dogs", None)).await,
        Code::FailedPrecondition,
        &[
            "disagree", "my-dogs", "dogs-a", "dogs-b", "3x32x32", "3x64x64",
        ],
    );
    assert!(msg.contains(&a), "the worker ids are named: {msg}");
    rejected(
        jobs.submit_job(on("my-dogs", Some(shape(3, 32, 2)))).await,
        Code::FailedPrecondition,
        &["disagree"],
    );
    server.stop().await;
}
both_backends!(dataset_shape_errors, dataset_errors);

/// An optimize job on a user dataset runs to the end on a worker that has it: every task, in
/// every phase, carries the job's shape (derive and the final check cost candidates on it).
async fn optimize_on_a_user_dataset(db: &TestDb) {
    let server = TestServer::start(db, test_config(), false).await;
    let mut jobs = server.jobs().await;
    let mut w = server.workers().await;
    let birds = shape(3, 16, 5);
    let worker = register(
        &mut w,
        registration("birds-box", &["my-birds"], vec![info("my-birds", birds)]),
    )
    .await;
    let mut r = common::optimize_request("birds", 1, 2, 2);
    r.dataset = "my-birds".into();
    let created = submit(&mut jobs, r).await;
    assert_eq!(
        created.dataset_shape,
        Some(birds),
        "learned from the worker"
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut answered = 0;
    while let Some(task) =
        common::next_task(&mut w, &worker, &mut jobs, &created.job_id, deadline).await
    {
        match &task.payload {
            Some(v1::task::Payload::TrainEval(t)) => {
                assert_eq!(
                    (t.dataset.as_str(), t.dataset_shape),
                    ("my-birds", Some(birds))
                );
            }
            other => panic!("{other:?}"),
        }
        w.report_result(report_ok(&worker, &task))
            .await
            .expect("report");
        answered += 1;
    }
    let done = job(&mut jobs, &created.job_id).await;
    assert_eq!(done.state, v1::JobState::Succeeded as i32, "{done:?}");
    assert!(
        answered >= 3,
        "learning, derive and final tasks: {answered}"
    );
    server.stop().await;
}
both_backends!(optimize_user_dataset, optimize_on_a_user_dataset);

/// A supernet round on a user dataset carries the shape too.
async fn supernet_task_shape(db: &TestDb) {
    let server = TestServer::start(db, test_config(), false).await;
    let mut jobs = server.jobs().await;
    let mut w = server.workers().await;
    let worker = register(&mut w, registration("any", &[], vec![])).await;
    let fish = shape(1, 24, 7);
    let mut r = common::optimize_request("fish", 1, 2, 2);
    r.dataset = "my-fish".into();
    r.dataset_shape = Some(fish);
    if let Some(o) = r.optimize.as_mut() {
        o.reward = v1::RewardMode::Supernet as i32;
    }
    let created = submit(&mut jobs, r).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let task = common::next_task(&mut w, &worker, &mut jobs, &created.job_id, deadline)
        .await
        .expect("a supernet task for a worker that lists no datasets");
    match &task.payload {
        Some(v1::task::Payload::Supernet(s)) => {
            assert_eq!(
                (s.dataset.as_str(), s.dataset_shape),
                ("my-fish", Some(fish))
            );
        }
        other => panic!("{other:?}"),
    }
    common::cancel(&mut jobs, &created.job_id).await;
    server.stop().await;
}
both_backends!(supernet_user_dataset, supernet_task_shape);
