//! The overload attack (issue item 4, measured): one client floods ONE coordinator over ONE
//! HTTP/2 connection with far more concurrent calls than a worker makes — LeaseTask (whatever
//! it is handed it reports properly, so nothing it takes is lost), ReportResult for leases it
//! does not hold (each must be refused), ListJobs of up to 1000 jobs — plus oversized messages.
//! It records the status codes it gets (with the first message of each, and the h2 error
//! underneath when there is one); the harness compares the latency of the well-behaved
//! simulated workers before and during the flood.
//!
//! It runs in its own process (the hidden `flood` subcommand), so that its 2,000 call loops do
//! not share a runtime with the simulated workers whose latency is measured. Its client accepts
//! answers up to [`CLIENT_MAX_DECODE`] (tonic's default is 4 MiB: a ListJobs of 1000 jobs can be
//! larger, and the client would refuse it with OUT_OF_RANGE itself), so every code it records is
//! the server's behaviour.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nat_proto::v1;
use serde::{Deserialize, Serialize};
use tonic::transport::Endpoint;

/// The largest answer the flood's client decodes (the coordinator's own limit is 8 MiB).
pub const CLIENT_MAX_DECODE: usize = 64 * 1024 * 1024;

/// What the flood saw.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FloodResult {
    pub concurrency: usize,
    pub seconds: f64,
    /// When the call loops started, were told to stop, and when the last call in flight
    /// ended (ms since the Unix epoch): `[started, ended)` is the window in which the
    /// workers' latency counts as "during".
    pub started_at_ms: i64,
    pub stopped_at_ms: i64,
    pub ended_at_ms: i64,
    /// Calls still in flight when the loops were told to stop were waited for this long
    /// (bounded by 30 s; then they are dropped, i.e. reset).
    pub drain_seconds: f64,
    /// The reset burst after the flood (see [`reset_burst`]).
    pub reset_burst: Option<ResetBurst>,
    pub calls: u64,
    /// "<call> <code>" → count (e.g. "lease Ok", "bogus_report FailedPrecondition").
    pub codes: BTreeMap<String, u64>,
    /// "<call> <code>" → the first error message of that kind, with the h2 reason when the
    /// status came from the transport (e.g. a GOAWAY) rather than from the service.
    pub messages: BTreeMap<String, String>,
    /// The largest ListJobs answer decoded, in bytes.
    pub list_jobs_max_bytes: usize,
    /// Tasks the flood leased and reported (accepted).
    pub leased_and_reported: u64,
    /// Reports for leases it did not hold that were accepted: must be 0.
    pub bogus_reports_accepted: u64,
    /// Oversized messages accepted: must be 0.
    pub oversized_accepted: u64,
    /// The largest oversized message sent, in bytes.
    pub oversized_bytes: usize,
}

#[derive(Default)]
struct Tally {
    calls: AtomicU64,
    leased_and_reported: AtomicU64,
    bogus_accepted: AtomicU64,
    oversized_accepted: AtomicU64,
    list_jobs_max_bytes: AtomicU64,
    codes: Mutex<BTreeMap<String, u64>>,
    messages: Mutex<BTreeMap<String, String>>,
}

impl Tally {
    fn code<T>(&self, call: &str, r: &Result<T, tonic::Status>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let key = match r {
            Ok(_) => format!("{call} Ok"),
            Err(s) => format!("{call} {:?}", s.code()),
        };
        if let Err(s) = r {
            if let Ok(mut m) = self.messages.lock() {
                m.entry(key.clone()).or_insert_with(|| describe(s));
            }
        }
        if let Ok(mut m) = self.codes.lock() {
            *m.entry(key).or_insert(0) += 1;
        }
    }
}

/// A status's message and, when it came from the transport, the error chain under it (the h2
/// reason of a GOAWAY or a reset, a connection error).
fn describe(s: &tonic::Status) -> String {
    let mut out = s.message().to_string();
    let mut source = std::error::Error::source(s);
    while let Some(e) = source {
        out.push_str(" <- ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    if out.len() > 300 {
        let mut cut = 300;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

/// Floods `url` for `duration` with `concurrency` call loops on one connection.
pub async fn flood(
    url: &str,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<FloodResult> {
    let channel = Endpoint::from_shared(url.to_string())?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let mut workers = v1::worker_service_client::WorkerServiceClient::new(channel.clone())
        .max_decoding_message_size(CLIENT_MAX_DECODE)
        .max_encoding_message_size(CLIENT_MAX_DECODE);
    let worker_id = workers
        .register_worker(v1::RegisterWorkerRequest {
            name: "chaos-flood".into(),
            capabilities: Some(v1::WorkerCapabilities {
                devices: vec![],
                cpu_cores: 1,
                slots: 64,
                version: "nat-chaos-flood".into(),
                hostname: "nat-chaos".into(),
                datasets: vec![],
                dataset_infos: vec![],
            }),
        })
        .await?
        .into_inner()
        .worker_id;
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let started_at_ms = chrono::Utc::now().timestamp_millis();
    let mut loops = tokio::task::JoinSet::new();
    for i in 0..concurrency {
        let mut w = v1::worker_service_client::WorkerServiceClient::new(channel.clone())
            .max_decoding_message_size(CLIENT_MAX_DECODE);
        let mut j = v1::job_service_client::JobServiceClient::new(channel.clone())
            .max_decoding_message_size(CLIENT_MAX_DECODE);
        let tally = tally.clone();
        let stop = stop.clone();
        let worker_id = worker_id.clone();
        loops.spawn(async move {
            let mut n = i as u64;
            while !stop.load(Ordering::Relaxed) {
                n = n.wrapping_add(1);
                match n % 3 {
                    0 => {
                        let r = w
                            .lease_task(v1::LeaseTaskRequest {
                                worker_id: worker_id.clone(),
                                wait_ms: 0,
                                device: None,
                                slot: (n % 64) as u32,
                            })
                            .await;
                        tally.code("lease", &r);
                        if let Ok(Some(task)) = r.map(|r| r.into_inner().task) {
                            let report = report_own(&mut w, &worker_id, &task).await;
                            tally.code("own_report", &report);
                            if report.is_ok() {
                                tally.leased_and_reported.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    1 => {
                        // A lease it does not hold: a random task id and token.
                        let r = w
                            .report_result(v1::ReportResultRequest {
                                worker_id: worker_id.clone(),
                                task_id: random_uuid(n),
                                lease_token: n.wrapping_mul(0x9E37_79B9) | 1,
                                outcome: Some(v1::report_result_request::Outcome::TrainEval(
                                    v1::TrainEvalResult {
                                        accuracy: 0.99,
                                        loss: 0.01,
                                        params: 1,
                                        madds: 1,
                                        wall_seconds: 0.0,
                                        images_per_second: 0.0,
                                    },
                                )),
                            })
                            .await;
                        tally.code("bogus_report", &r);
                        if r.is_ok() {
                            tally.bogus_accepted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ => {
                        let r = j
                            .list_jobs(v1::ListJobsRequest {
                                states: vec![],
                                limit: 1000,
                            })
                            .await;
                        tally.code("list_jobs", &r);
                        if let Ok(resp) = &r {
                            let bytes = prost::Message::encoded_len(resp.get_ref()) as u64;
                            tally
                                .list_jobs_max_bytes
                                .fetch_max(bytes, Ordering::Relaxed);
                        }
                    }
                }
            }
        });
    }
    // Oversized messages while the flood runs (beside the loops, so that they do not hold
    // the loops past `duration`): a report whose failure reason is 9 MiB (over the
    // coordinator's 8 MiB message limit) and one of 64 KiB (over the 4000-byte field limit),
    // a few times each.
    let big = 9 * 1024 * 1024;
    let oversized = {
        let tally = tally.clone();
        let worker_id = worker_id.clone();
        tokio::spawn(async move {
            for size in [big, 64 * 1024] {
                for _ in 0..3 {
                    let r = workers
                        .report_result(v1::ReportResultRequest {
                            worker_id: worker_id.clone(),
                            task_id: random_uuid(size as u64),
                            lease_token: 1,
                            outcome: Some(v1::report_result_request::Outcome::Failure(
                                v1::TaskFailure {
                                    reason: "x".repeat(size),
                                    retryable: false,
                                },
                            )),
                        })
                        .await;
                    tally.code(&format!("oversized_{}KiB", size / 1024), &r);
                    if r.is_ok() {
                        tally.oversized_accepted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    tokio::time::sleep(duration.saturating_sub(started.elapsed())).await;
    stop.store(true, Ordering::Relaxed);
    let stopped_at_ms = chrono::Utc::now().timestamp_millis();
    let stopped = Instant::now();
    // Calls in flight finish (bounded).
    let drain = async {
        while loops.join_next().await.is_some() {}
        let _ = oversized.await;
    };
    if tokio::time::timeout(Duration::from_secs(30), drain)
        .await
        .is_err()
    {
        loops.abort_all();
    }
    let drain_seconds = stopped.elapsed().as_secs_f64();
    let ended_at_ms = chrono::Utc::now().timestamp_millis();
    let reset_burst = match reset_burst(url, concurrency, &worker_id).await {
        Ok(b) => Some(b),
        Err(e) => {
            eprintln!("nat-chaos flood: the reset burst could not run: {e:#}");
            None
        }
    };
    let codes = tally.codes.lock().map(|m| m.clone()).unwrap_or_default();
    let messages = tally.messages.lock().map(|m| m.clone()).unwrap_or_default();
    Ok(FloodResult {
        concurrency,
        seconds: started.elapsed().as_secs_f64(),
        started_at_ms,
        stopped_at_ms,
        ended_at_ms,
        drain_seconds,
        reset_burst,
        calls: tally.calls.load(Ordering::Relaxed),
        codes,
        messages,
        list_jobs_max_bytes: usize::try_from(tally.list_jobs_max_bytes.load(Ordering::Relaxed))
            .unwrap_or(usize::MAX),
        leased_and_reported: tally.leased_and_reported.load(Ordering::Relaxed),
        bogus_reports_accepted: tally.bogus_accepted.load(Ordering::Relaxed),
        oversized_accepted: tally.oversized_accepted.load(Ordering::Relaxed),
        oversized_bytes: big,
    })
}

/// Reports a task the flood leased itself, properly (so nothing it takes is lost).
async fn report_own(
    w: &mut v1::worker_service_client::WorkerServiceClient<tonic::transport::Channel>,
    worker_id: &str,
    task: &v1::Task,
) -> Result<tonic::Response<v1::ReportResultResponse>, tonic::Status> {
    w.report_result(v1::ReportResultRequest {
        worker_id: worker_id.to_string(),
        task_id: task.task_id.clone(),
        lease_token: task.lease_token,
        outcome: Some(crate::sim::outcome_of(task)),
    })
    .await
}

/// A well-formed UUID no task has (version nibble 4, from a counter and the clock).
fn random_uuid(n: u64) -> String {
    let a: u64 = rand::random::<u64>() ^ n;
    let b: u64 = rand::random();
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (a >> 32) as u32,
        (a >> 16) as u16,
        a as u16 & 0x0fff,
        b as u16 & 0x0fff,
        b >> 16
    )
}

/// What the reset burst saw.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ResetBurst {
    /// Calls started and then dropped by the client after [`RESET_AFTER`] (each one a
    /// RST_STREAM(CANCEL) once its HEADERS went out).
    pub reset_calls: usize,
    /// The codes of plain LeaseTask calls (wait 0) made on the same connection during the
    /// burst, and of ListJobs calls made on it right after (did it recover?).
    pub codes: BTreeMap<String, u64>,
    pub messages: BTreeMap<String, String>,
}

/// How long a call of the reset burst lives before the client drops it.
pub const RESET_AFTER: Duration = Duration::from_millis(3);

/// A burst of client stream resets on one fresh connection: `n` ListJobs calls, each dropped
/// after [`RESET_AFTER`], while 50 LeaseTask calls run beside them; then 20 ListJobs calls on
/// the same channel. An h2 server that sees too many streams reset before it accepted them
/// answers with GOAWAY ENHANCE_YOUR_CALM (the "rapid reset" defence), which a tonic client
/// reports as RESOURCE_EXHAUSTED for the calls the GOAWAY cut; the codes say whether that
/// happened here.
async fn reset_burst(url: &str, n: usize, worker_id: &str) -> anyhow::Result<ResetBurst> {
    let channel = Endpoint::from_shared(url.to_string())?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let tally = Arc::new(Tally::default());
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let mut j = v1::job_service_client::JobServiceClient::new(channel.clone())
            .max_decoding_message_size(CLIENT_MAX_DECODE);
        set.spawn(async move {
            // Dropped by the timeout: the stream is reset.
            let _ = tokio::time::timeout(
                RESET_AFTER + Duration::from_micros(i as u64 % 1000),
                j.list_jobs(v1::ListJobsRequest {
                    states: vec![],
                    limit: 1000,
                }),
            )
            .await;
        });
    }
    for _ in 0..50 {
        let mut w = v1::worker_service_client::WorkerServiceClient::new(channel.clone());
        let tally = tally.clone();
        let worker_id = worker_id.to_string();
        set.spawn(async move {
            let r = tokio::time::timeout(
                Duration::from_secs(20),
                w.lease_task(v1::LeaseTaskRequest {
                    worker_id: worker_id.clone(),
                    wait_ms: 0,
                    device: None,
                    slot: 0,
                }),
            )
            .await
            .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("no answer in 20 s")));
            tally.code("burst_lease", &r);
            if let Ok(Some(task)) = r.map(|r| r.into_inner().task) {
                let report = report_own(&mut w, &worker_id, &task).await;
                tally.code("burst_own_report", &report);
            }
        });
    }
    while set.join_next().await.is_some() {}
    for _ in 0..20 {
        let mut j = v1::job_service_client::JobServiceClient::new(channel.clone())
            .max_decoding_message_size(CLIENT_MAX_DECODE);
        let r = tokio::time::timeout(
            Duration::from_secs(20),
            j.list_jobs(v1::ListJobsRequest {
                states: vec![],
                limit: 10,
            }),
        )
        .await
        .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("no answer in 20 s")));
        tally.code("after_burst_list_jobs", &r);
    }
    let codes = tally.codes.lock().map(|m| m.clone()).unwrap_or_default();
    let messages = tally.messages.lock().map(|m| m.clone()).unwrap_or_default();
    Ok(ResetBurst {
        reset_calls: n,
        codes,
        messages,
    })
}
