//! `ListWorkers` over real gRPC (SQLite and PostgreSQL): a worker's `tasks_in_hand` follows its
//! leases.

mod common;

use common::{test_config, TestDb, TestServer};
use nat_proto::v1;

async fn in_hand(server: &TestServer, worker: &str) -> u32 {
    let mut jobs = server.jobs().await;
    jobs.list_workers(v1::ListWorkersRequest {})
        .await
        .expect("list workers")
        .into_inner()
        .workers
        .into_iter()
        .find(|w| w.worker_id == worker)
        .expect("the worker is listed")
        .tasks_in_hand
}

async fn tasks_in_hand_flow(db: &TestDb) {
    let server = TestServer::start(db, test_config(), false).await;
    let mut jobs = server.jobs().await;
    jobs.submit_job(common::evaluate_request(&["darts-v2", "enas"], "digits"))
        .await
        .expect("submit");
    let (mut w, worker) = common::registered(&server, "holder").await;
    assert_eq!(in_hand(&server, &worker).await, 0);
    let first = common::lease(&mut w, &worker, 2000).await.expect("a task");
    let second = common::lease(&mut w, &worker, 2000).await.expect("a task");
    assert_eq!(in_hand(&server, &worker).await, 2);
    for task in [first, second] {
        w.report_result(common::report_ok(&worker, &task))
            .await
            .expect("report");
    }
    assert_eq!(in_hand(&server, &worker).await, 0);
    server.stop().await;
}
both_backends!(list_workers_counts_the_tasks_in_hand, tasks_in_hand_flow);
