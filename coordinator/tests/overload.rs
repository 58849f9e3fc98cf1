//! Overload bounds per client connection: a connection that opens more concurrent calls than
//! `max_streams_per_connection` has the rest wait for a slot (nothing fails), while another
//! connection is served at once; messages over the size limit are refused before decoding.

mod common;

use std::time::{Duration, Instant};

use common::*;
use nat_coordinator::Config;
use nat_proto::v1;
use nat_proto::v1::job_service_client::JobServiceClient;
use nat_proto::v1::worker_service_client::WorkerServiceClient;
use tonic::Code;

const STREAMS: u32 = 4;
const HOLD_MS: u32 = 1500;

async fn list(jobs: &mut JobServiceClient<tonic::transport::Channel>) -> Duration {
    let start = Instant::now();
    jobs.list_jobs(v1::ListJobsRequest {
        states: vec![],
        limit: 10,
    })
    .await
    .expect("ListJobs is answered");
    start.elapsed()
}

async fn bounded(db: &TestDb) {
    let config = Config {
        max_streams_per_connection: STREAMS,
        ..test_config()
    };
    let server = TestServer::start(db, config, false).await;
    // One connection carries a worker's long-polls and a user's calls.
    let flooded = server.channel().await;
    let mut w = WorkerServiceClient::new(flooded.clone());
    let worker = register(&mut w, "flooder").await;
    // Every stream of the connection held by a long-poll that finds no task.
    let polls: Vec<_> = (0..STREAMS)
        .map(|_| {
            let mut w = w.clone();
            let worker = worker.clone();
            tokio::spawn(async move { lease(&mut w, &worker, HOLD_MS).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A call on the same connection waits for a stream; on another connection it does not.
    let other = list(&mut server.jobs().await).await;
    let queued = list(&mut JobServiceClient::new(flooded)).await;
    for p in polls {
        assert!(p.await.expect("poll").is_none(), "no task to lease");
    }
    assert!(
        other < Duration::from_millis(HOLD_MS as u64 / 2),
        "another connection is served at once ({other:?})"
    );
    assert!(
        queued >= Duration::from_millis(HOLD_MS as u64 / 2),
        "the flooded connection's extra call waited for a stream ({queued:?})"
    );

    // A message over the 8 MiB limit is refused before it is decoded, naming the limit.
    let too_big = v1::ReportResultRequest {
        worker_id: worker.clone(),
        task_id: "00000000-0000-4000-8000-000000000000".into(),
        lease_token: 1,
        outcome: Some(v1::report_result_request::Outcome::Failure(
            v1::TaskFailure {
                reason: "x".repeat(nat_coordinator::MAX_MESSAGE_BYTES + 1),
                retryable: false,
            },
        )),
    };
    let err = w.report_result(too_big).await.expect_err("refused");
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    // The connection still serves.
    assert!(lease(&mut w, &worker, 0).await.is_none());
    server.stop().await;
}
both_backends!(a_connection_is_bounded_by_its_stream_limit, bounded);
