//! A long `supernet` optimize job keeps its state bounded (issue #14, item 4; the full
//! 50,000-reward run is `cargo run --release -p nat-coordinator --example scale_job`, see
//! docs/BENCHMARKS.md). A coordinator on port 0, real gRPC, SQLite and PostgreSQL, and two
//! fake workers that answer every task at once (tiny weights, accuracies from a hash of the
//! genotype). While the job learns, the test samples its result document; at the end it checks
//! that the document did not grow with the rewards, that the driver's progress holds no
//! per-reward list, that the driver's tracker held one round's shards after every round, and
//! that `GetJobResult`, a resumed `WatchJob` and the dashboard's job view answer with bounded
//! bytes. No timing is asserted.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{submit, test_config, TestDb, TestServer};
use nat_proto::v1;
use nat_schema::result::OptimizeResult;
use prost::Message;
use sha2::{Digest, Sha256};
use tonic::transport::Channel;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;
use v1::worker_service_client::WorkerServiceClient;

/// Rounds and rewards per round of the job (M > the dashboard's dots per point).
const ROUNDS: u32 = 60;
const M: u32 = 48;
const WORKERS: u32 = 2;

/// What the driver logged of its tracker after each round: (job, train_eval keys, shards).
type Probed = Mutex<Vec<(String, u64, u64)>>;

fn probed() -> &'static Probed {
    static SEEN: OnceLock<Probed> = OnceLock::new();
    SEEN.get_or_init(Probed::default)
}

/// Records the driver's "tracker after the round" events.
struct TrackerProbe;

#[derive(Default)]
struct Fields {
    message: String,
    job: String,
    train_eval: u64,
    shards: u64,
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "job" => self.job = format!("{value:?}"),
            _ => {}
        }
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        match field.name() {
            "train_eval" => self.train_eval = value,
            "shards" => self.shards = value,
            _ => {}
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for TrackerProbe {
    fn enabled(&self, metadata: &tracing::Metadata<'_>, _: Context<'_, S>) -> bool {
        metadata
            .target()
            .starts_with("nat_coordinator::jobs::optimize")
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut f = Fields::default();
        event.record(&mut f);
        if f.message == "tracker after the round" {
            probed()
                .lock()
                .expect("probe")
                .push((f.job, f.train_eval, f.shards));
        }
    }
}

fn install_probe() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let subscriber = tracing_subscriber::registry().with(TrackerProbe);
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
    });
}

/// A deterministic accuracy in [0.3, 0.9) from a genotype's JSON (FNV-1a).
fn accuracy(json: &str) -> f64 {
    let h = json.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    0.3 + (h % 600) as f64 / 1000.0
}

/// Answers one supernet task: fetch the base, upload 16 f32, score pairs or candidates.
async fn shard(
    w: &mut WorkerServiceClient<Channel>,
    worker: &str,
    task: &v1::Task,
    sn: &v1::SupernetTask,
) -> v1::report_result_request::Outcome {
    let mut base = vec![0.0f32; 16];
    if sn.base_version > 0 {
        let mut stream = w
            .fetch_supernet(v1::FetchSupernetRequest {
                worker_id: worker.into(),
                task_id: task.task_id.clone(),
                lease_token: task.lease_token,
            })
            .await
            .expect("fetch")
            .into_inner();
        let mut data = Vec::new();
        while let Some(chunk) = stream.message().await.expect("chunk") {
            data.extend_from_slice(&chunk.data);
        }
        base = nat_weights::read_f32(&data, "w").expect("tensor w").1;
    }
    if !sn.candidates.is_empty() {
        return v1::report_result_request::Outcome::Supernet(v1::SupernetResult {
            accuracies: sn.candidates.iter().map(|c| accuracy(c)).collect(),
            wall_seconds: 0.01,
            ..Default::default()
        });
    }
    let values: Vec<f32> = base.iter().map(|x| x + 1.0).collect();
    let bytes = nat_weights::from_f32(&[("w", vec![values.len()], &values)], BTreeMap::new())
        .expect("safetensors");
    let message = v1::PutSupernetRequest {
        worker_id: worker.into(),
        task_id: task.task_id.clone(),
        lease_token: task.lease_token,
        total_bytes: bytes.len() as u64,
        sha256: hex::encode(Sha256::digest(&bytes)),
        offset: 0,
        data: bytes,
    };
    let stored = w
        .put_supernet(tokio_stream::iter(vec![message]))
        .await
        .expect("upload")
        .into_inner();
    v1::report_result_request::Outcome::Supernet(v1::SupernetResult {
        scores: sn
            .pairs
            .iter()
            .map(|p| v1::PairScore {
                acc_beta: accuracy(&p.beta_json),
                acc_alpha: accuracy(&p.alpha_json),
            })
            .collect(),
        wall_seconds: 0.01,
        weights_bytes: stored.bytes,
        weights_sha256: stored.sha256,
        train_steps: u64::from(sn.train_steps),
        mean_train_loss: 1.0,
        accuracies: Vec::new(),
    })
}

/// Leases and answers tasks until the job is final.
async fn work(
    server: &TestServer,
    mut w: WorkerServiceClient<Channel>,
    worker: String,
    job: String,
) {
    let mut jobs = server.jobs().await;
    let deadline = Instant::now() + Duration::from_secs(600);
    while let Some(task) = common::next_task(&mut w, &worker, &mut jobs, &job, deadline).await {
        let outcome = match &task.payload {
            Some(v1::task::Payload::Supernet(sn)) => shard(&mut w, &worker, &task, sn).await,
            Some(v1::task::Payload::TrainEval(_)) => {
                v1::report_result_request::Outcome::TrainEval(common::fake_result(&task))
            }
            None => panic!("a task without payload"),
        };
        w.report_result(common::report(&worker, &task, outcome))
            .await
            .expect("report");
    }
}

/// One sample of the running job: its learning rounds done and its result document.
#[derive(Debug, Clone)]
struct Sample {
    iteration: u32,
    bytes: usize,
    doc: OptimizeResult,
}

/// The longest JSON array anywhere in `v`.
fn longest_array(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => a.iter().map(longest_array).max().unwrap_or(0).max(a.len()),
        serde_json::Value::Object(o) => o.values().map(longest_array).max().unwrap_or(0),
        _ => 0,
    }
}

async fn bounded_flow(db: &TestDb) {
    install_probe();
    let server = TestServer::start(db, test_config(), false).await;
    let mut jobs = server.jobs().await;
    let mut request = common::optimize_request("scale test", ROUNDS, M, 4);
    if let Some(o) = request.optimize.as_mut() {
        o.reward = v1::RewardMode::Supernet as i32;
        o.derive_top_k = 1;
        o.final_seeds = 1;
        o.supernet = Some(v1::SupernetSettings {
            shards: WORKERS,
            steps_per_shard: 1,
            warmup_steps: 1,
            ..Default::default()
        });
    }
    let job_id = submit(&mut jobs, request).await.job_id;
    let job: nat_store::JobId = job_id.parse().expect("uuid");

    // Sample the result document while the job learns.
    let store = server.coordinator.store.clone();
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let sampler = {
        let samples = samples.clone();
        tokio::spawn(async move {
            loop {
                let row = store.get_job(job).await.expect("job");
                if let Some(r) = &row.result {
                    let doc: OptimizeResult =
                        serde_json::from_value(r.clone()).expect("result document");
                    // Without the round's pending samples (bounded by M, checked below).
                    let mut bare = doc.clone();
                    bare.driver.pending.clear();
                    let bytes = serde_json::to_vec(&bare).expect("json").len();
                    samples.lock().expect("samples").push(Sample {
                        iteration: doc.driver.iteration,
                        bytes,
                        doc,
                    });
                }
                if row.state.is_final() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let mut fleet = Vec::new();
    for i in 0..WORKERS {
        fleet.push(common::registered(&server, &format!("fake-{i}")).await);
    }
    let runs: Vec<_> = fleet
        .into_iter()
        .map(|(w, id)| work(&server, w, id, job_id.clone()))
        .collect();
    futures::future::join_all(runs).await;
    sampler.await.expect("sampler");
    let rewards = u64::from(ROUNDS) * u64::from(M);
    let result = common::check_optimize_result(&server, &job_id, rewards).await;

    // The running document (its round's pending samples aside): the same size after round 5
    // as late in learning (numbers get a few digits longer); no list longer than a round's
    // samples anywhere in the driver's progress.
    let samples = samples.lock().expect("samples").clone();
    let learning: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.doc.driver.phase == Some(nat_schema::Phase::Learn))
        .filter(|s| (5..ROUNDS).contains(&s.iteration))
        .collect();
    let early = learning
        .iter()
        .find(|s| s.iteration < ROUNDS / 3)
        .expect("a sample early in learning");
    let late = learning
        .iter()
        .rev()
        .find(|s| s.iteration > 2 * ROUNDS / 3)
        .expect("a sample late in learning");
    assert!(
        late.bytes <= early.bytes + 200,
        "the result document grew with the rewards: {} bytes at round {}, {} at round {}",
        early.bytes,
        early.iteration,
        late.bytes,
        late.iteration
    );
    for s in &samples {
        assert!(s.doc.driver.pending.len() <= M as usize);
        let v = serde_json::to_value(&s.doc.driver).expect("json");
        assert!(
            longest_array(&v) <= M as usize,
            "a list in the driver's progress at round {}: {v}",
            s.iteration
        );
    }

    // The tracker held one round's shards after every round (the derive's screening is not a
    // round), however many rounds came before.
    let probe: Vec<(String, u64, u64)> = probed()
        .lock()
        .expect("probe")
        .iter()
        .filter(|(j, _, _)| *j == job_id)
        .cloned()
        .collect();
    assert_eq!(probe.len(), ROUNDS as usize + 1, "warm-up and every round");
    assert!(
        probe.iter().all(|(_, te, shards)| *te == 0 && *shards == 0),
        "{probe:?}"
    );

    // GetJobResult: one curve point per update (under the cap), bounded bytes per point.
    let learning = result.learning.as_ref().expect("learning");
    assert_eq!(learning.policy_versions, u64::from(ROUNDS));
    assert_eq!(learning.curve.len(), ROUNDS as usize);
    assert!(
        result.encoded_len() < 16 * 1024 + 64 * ROUNDS as usize,
        "GetJobResult: {} bytes",
        result.encoded_len()
    );

    // WatchJob: a full replay is a few messages per round; a resume at the end is one message.
    let mut stream = jobs
        .watch_job(v1::WatchJobRequest {
            job_id: job_id.clone(),
            after_sequence: 0,
        })
        .await
        .expect("watch")
        .into_inner();
    let (mut n, mut last) = (0u64, 0u64);
    while let Some(e) = stream.message().await.expect("event") {
        n += 1;
        last = e.sequence;
    }
    assert!(n <= 12 * u64::from(ROUNDS) + 100, "{n} messages");
    let mut stream = jobs
        .watch_job(v1::WatchJobRequest {
            job_id: job_id.clone(),
            after_sequence: last - 1,
        })
        .await
        .expect("watch")
        .into_inner();
    let mut resumed = Vec::new();
    while let Some(e) = stream.message().await.expect("event") {
        resumed.push(e);
    }
    assert_eq!(resumed.len(), 1, "{resumed:?}");

    // The dashboard's job view: at most CHART_POINTS points of at most DOTS_PER_POINT rewards,
    // and a page's poll after the last event is small.
    let cache = nat_dashboard::cache::EventCache::new(4);
    let store = server.coordinator.store.as_ref();
    let page = nat_dashboard::model::job_detail_with(store, Some(&cache), job, 0, 0)
        .await
        .expect("job view");
    assert_eq!(page.rewards.len(), ROUNDS as usize);
    assert!(page.rewards.len() <= nat_dashboard::model::CHART_POINTS);
    assert!(page
        .rewards
        .iter()
        .all(|p| p.rewards.len() == nat_dashboard::model::DOTS_PER_POINT));
    let poll = nat_dashboard::model::job_detail_with(store, Some(&cache), job, 0, page.last_seq)
        .await
        .expect("poll");
    assert!(poll.rewards.is_empty() && poll.events.is_empty());
    let poll_bytes = serde_json::to_vec(&poll).expect("json").len();
    let page_bytes = serde_json::to_vec(&page).expect("json").len();
    assert!(poll_bytes < 64 * 1024, "a poll: {poll_bytes} bytes");
    assert!(
        page_bytes < 64 * 1024 + 1024 * ROUNDS as usize,
        "the page: {page_bytes} bytes"
    );
    server.stop().await;
}
both_backends!(a_long_supernet_job_keeps_its_state_bounded, bounded_flow);
