//! The `optimize` job kind with `reward = supernet`: the job's durable, versioned supernet
//! trained by rounds sharded across the fleet. A coordinator on port 0, real gRPC, SQLite and
//! PostgreSQL (fresh database each), and scripted workers that speak the shard protocol for
//! real: they fetch the base version over `FetchSupernet`, "train" it (add a shard-specific
//! amount to every weight of a real safetensors document), upload it with `PutSupernet` and
//! report per-pair accuracies computed from the genotypes. The averaging, versions, rewards,
//! deadlines and garbage collection are the coordinator's own.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{submit, test_config, TestDb, TestServer};
use nat_proto::v1;
use nat_schema::budget::{Budget, SupernetBudget};
use sha2::{Digest, Sha256};
use tonic::transport::Channel;
use v1::worker_service_client::WorkerServiceClient;

/// Weights of the simulated supernet: one tensor of this many values.
const WEIGHTS: usize = 300_000;

/// Synthetic supernet accuracy of an architecture in (0, 1): more skip connections, higher.
fn supernet_accuracy(genotype_json: &str) -> f64 {
    let g = nat_arch::Genotype::from_json_str(genotype_json).expect("canonical genotype");
    let skips = [&g.normal, &g.reduce]
        .iter()
        .flat_map(|c| c.nodes.iter().flat_map(|n| n.inputs.iter()))
        .filter(|e| e.op == nat_arch::Op::SkipConnect)
        .count();
    0.3 + 0.5 * skips as f64 / 16.0
}

/// Synthetic from-scratch accuracy of a `train_eval` task.
fn train_eval_result(te: &v1::TrainEvalTask) -> v1::TrainEvalResult {
    v1::TrainEvalResult {
        accuracy: supernet_accuracy(&te.genotype_json),
        loss: 0.5,
        params: 1000,
        madds: 50_000,
        wall_seconds: 0.01,
        images_per_second: 1000.0,
    }
}

/// One shard a scripted worker answered.
#[derive(Debug, Clone)]
struct ShardSeen {
    task_id: String,
    lease_token: u64,
    worker: String,
    round: u32,
    shard: u32,
    shards: u32,
    warmup: bool,
    base_version: u64,
    /// The first weight of the base version it fetched (0 for fresh weights).
    base_value: f32,
    /// Pairs and the rewards the reported scores imply.
    pairs: Vec<v1::GenotypePair>,
    rewards: Vec<f64>,
    /// A derive screening's candidates.
    candidates: Vec<String>,
}

/// Everything the scripted workers saw.
#[derive(Debug, Default)]
struct Seen {
    shards: Vec<ShardSeen>,
    train_eval: usize,
}

type Shared = Arc<Mutex<Seen>>;

fn record(seen: &Shared, shard: ShardSeen) {
    seen.lock().expect("seen").shards.push(shard);
}

/// Streams the base version of a leased shard.
async fn fetch(w: &mut WorkerServiceClient<Channel>, worker: &str, task: &v1::Task) -> Vec<u8> {
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
    let mut sha = String::new();
    while let Some(chunk) = stream.message().await.expect("chunk") {
        assert_eq!(chunk.offset, data.len() as u64, "chunks in order");
        assert!(chunk.data.len() <= 1 << 20, "chunks of at most 1 MiB");
        sha = chunk.sha256.clone();
        data.extend_from_slice(&chunk.data);
    }
    assert_eq!(hex::encode(Sha256::digest(&data)), sha, "digest matches");
    data
}

/// The messages of an upload of `bytes` for `task` in `chunk`-byte pieces.
fn upload_messages(
    worker: &str,
    task: &v1::Task,
    bytes: &[u8],
    sha256: &str,
    chunk: usize,
) -> Vec<v1::PutSupernetRequest> {
    bytes
        .chunks(chunk)
        .enumerate()
        .map(|(i, data)| v1::PutSupernetRequest {
            worker_id: if i == 0 { worker.into() } else { String::new() },
            task_id: if i == 0 {
                task.task_id.clone()
            } else {
                String::new()
            },
            lease_token: if i == 0 { task.lease_token } else { 0 },
            total_bytes: if i == 0 { bytes.len() as u64 } else { 0 },
            sha256: if i == 0 { sha256.into() } else { String::new() },
            offset: (i * chunk) as u64,
            data: data.to_vec(),
        })
        .collect()
}

async fn upload(
    w: &mut WorkerServiceClient<Channel>,
    worker: &str,
    task: &v1::Task,
    bytes: &[u8],
) -> Result<v1::PutSupernetResponse, tonic::Status> {
    let sha = hex::encode(Sha256::digest(bytes));
    let messages = upload_messages(worker, task, bytes, &sha, 256 * 1024);
    w.put_supernet(tokio_stream::iter(messages))
        .await
        .map(tonic::Response::into_inner)
}

/// A shard's "training": every weight of the base plus `shard + 1`.
fn trained(base: &[f32], shard: u32) -> Vec<u8> {
    let delta = (shard + 1) as f32;
    let values: Vec<f32> = base.iter().map(|x| x + delta).collect();
    nat_weights::from_f32(&[("w", vec![values.len()], &values)], BTreeMap::new())
        .expect("safetensors")
}

/// Fetches, trains, uploads and scores one shard; returns the report to send.
async fn answer_shard(
    w: &mut WorkerServiceClient<Channel>,
    worker: &str,
    task: &v1::Task,
    sn: &v1::SupernetTask,
    seen: &Shared,
) -> v1::ReportResultRequest {
    let base: Vec<f32> = if sn.base_version == 0 {
        vec![0.0; WEIGHTS]
    } else {
        let bytes = fetch(w, worker, task).await;
        nat_weights::read_f32(&bytes, "w").expect("tensor w").1
    };
    if !sn.candidates.is_empty() {
        // A derive screening: score the candidates on the fetched version, upload nothing.
        assert!(sn.pairs.is_empty() && sn.train_steps == 0 && !sn.warmup);
        record(
            seen,
            ShardSeen {
                task_id: task.task_id.clone(),
                lease_token: task.lease_token,
                worker: worker.into(),
                round: sn.round,
                shard: sn.shard,
                shards: sn.shards,
                warmup: false,
                base_version: sn.base_version,
                base_value: base[0],
                pairs: Vec::new(),
                rewards: Vec::new(),
                candidates: sn.candidates.clone(),
            },
        );
        return common::report(
            worker,
            task,
            v1::report_result_request::Outcome::Supernet(v1::SupernetResult {
                accuracies: sn.candidates.iter().map(|c| supernet_accuracy(c)).collect(),
                wall_seconds: 0.01,
                ..Default::default()
            }),
        );
    }
    let bytes = trained(&base, sn.shard);
    let stored = upload(w, worker, task, &bytes).await.expect("upload");
    assert_eq!(stored.bytes, bytes.len() as u64);
    let scores: Vec<v1::PairScore> = sn
        .pairs
        .iter()
        .map(|p| v1::PairScore {
            acc_beta: supernet_accuracy(&p.beta_json),
            acc_alpha: supernet_accuracy(&p.alpha_json),
        })
        .collect();
    record(
        seen,
        ShardSeen {
            task_id: task.task_id.clone(),
            lease_token: task.lease_token,
            worker: worker.into(),
            round: sn.round,
            shard: sn.shard,
            shards: sn.shards,
            warmup: sn.warmup,
            base_version: sn.base_version,
            base_value: base[0],
            pairs: sn.pairs.clone(),
            rewards: scores.iter().map(|s| s.acc_alpha - s.acc_beta).collect(),
            candidates: Vec::new(),
        },
    );
    common::report(
        worker,
        task,
        v1::report_result_request::Outcome::Supernet(v1::SupernetResult {
            scores,
            wall_seconds: 0.01,
            weights_bytes: stored.bytes,
            weights_sha256: stored.sha256,
            train_steps: u64::from(sn.train_steps),
            mean_train_loss: 1.0,
            accuracies: Vec::new(),
        }),
    )
}

/// How a scripted worker behaves.
#[derive(Clone, Default)]
struct Script {
    /// Waited on after leasing a shard of a learning round (before answering it): with one
    /// party per worker, every worker holds one shard of every round.
    barrier: Option<Arc<tokio::sync::Barrier>>,
    /// Stop after answering this many shards (the job goes on).
    stop_after_shards: Option<usize>,
}

/// Leases and answers tasks until the job is final (or the script says stop).
async fn work(
    server: &TestServer,
    mut w: WorkerServiceClient<Channel>,
    worker: String,
    job_id: String,
    script: Script,
    seen: Shared,
) {
    let mut jobs = server.jobs().await;
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut answered = 0usize;
    while script.stop_after_shards.is_none_or(|n| answered < n) {
        let Some(task) = common::next_task(&mut w, &worker, &mut jobs, &job_id, deadline).await
        else {
            return;
        };
        let report = match &task.payload {
            Some(v1::task::Payload::Supernet(sn)) => {
                if let (Some(b), false) = (&script.barrier, sn.warmup || !sn.candidates.is_empty())
                {
                    tokio::time::timeout(Duration::from_secs(60), b.wait())
                        .await
                        .expect("every worker leases a shard of the round");
                }
                answered += 1;
                answer_shard(&mut w, &worker, &task, sn, &seen).await
            }
            Some(v1::task::Payload::TrainEval(te)) => {
                seen.lock().expect("seen").train_eval += 1;
                common::report(
                    &worker,
                    &task,
                    v1::report_result_request::Outcome::TrainEval(train_eval_result(te)),
                )
            }
            None => panic!("a task without payload"),
        };
        let r = w.report_result(report).await.expect("report").into_inner();
        assert!(!r.duplicate);
    }
}

fn supernet_request(iterations: u32, samples: u32, shards: u32) -> v1::SubmitJobRequest {
    let mut r = common::optimize_request("supernet test", iterations, samples, 3);
    let o = r.optimize.as_mut().expect("spec");
    o.reward = v1::RewardMode::Supernet as i32;
    o.supernet = Some(v1::SupernetSettings {
        batch_size: 16,
        train_steps_between_pairs: 3,
        shards,
        steps_per_shard: 7,
        warmup_steps: 11,
        ..Default::default()
    });
    r
}

/// The settings every shard must carry: smoke's supernet preset with the request's overrides.
fn expected_settings(shards: u32) -> v1::SupernetSettings {
    let s = SupernetBudget::preset("smoke");
    v1::SupernetSettings {
        init_channels: s.init_channels,
        layers: s.layers,
        batch_size: 16,
        train_steps_between_pairs: 3,
        learning_rate: s.learning_rate,
        momentum: s.momentum,
        weight_decay: s.weight_decay,
        grad_clip: s.grad_clip,
        max_train_examples: s.max_train_examples,
        validation_fraction: s.validation_fraction,
        eval_batches: s.eval_batches,
        max_wall_seconds: s.max_wall_seconds,
        op_set: "nat-fully-concat".into(),
        num_nodes: 4,
        shards,
        steps_per_shard: 7,
        warmup_steps: 11,
        round_deadline_seconds: s.round_deadline_seconds,
        derive_examples: s.derive_examples,
    }
}

/// The job's committed supernet versions, 1..=n, with their rows.
async fn versions(server: &TestServer, job_id: &str) -> Vec<nat_store::SupernetVersion> {
    let store = &server.coordinator.store;
    let job: nat_store::JobId = job_id.parse().expect("uuid");
    let n = store.count_supernet_versions(job).await.expect("count");
    let mut out = Vec::new();
    for v in 1..=n {
        out.push(
            store
                .supernet_version(job, i64::try_from(v).expect("small"))
                .await
                .expect("versions 1..=n, no gap"),
        );
    }
    out
}

/// The job succeeded; its versions are the warm-up plus one per round, in order; every reward
/// the workers' scores imply reached its sample exactly once and was consumed exactly once;
/// `learning.supernet` says so; the shard uploads and all but the two latest versions are gone.
async fn check_job(server: &TestServer, job_id: &str, seen: &Seen, rounds: u32, m: usize) {
    let result = common::check_optimize_result(server, job_id, rounds as u64 * m as u64).await;
    let rows = versions(server, job_id).await;
    assert_eq!(
        rows.len() as u32,
        rounds + 1,
        "warm-up + one version per round"
    );
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.version, i as i64 + 1);
        assert_eq!(row.round, i as i64 - 1, "version v+1 comes from round v-1");
    }
    // Every shard of a round started from the version before it.
    for s in &seen.shards {
        if s.warmup {
            assert_eq!(s.base_version, 0);
        } else if !s.candidates.is_empty() {
            assert_eq!(
                s.base_version,
                u64::from(rounds) + 1,
                "screening on the last version"
            );
        } else {
            assert_eq!(s.base_version, u64::from(s.round) + 1, "{s:?}");
        }
    }
    // Each sample holds the reward its shard's scores imply, consumed once.
    let store = &server.coordinator.store;
    let mut rewarded = BTreeSet::new();
    for s in seen
        .shards
        .iter()
        .filter(|s| !s.warmup && s.candidates.is_empty())
    {
        let task = store
            .get_task(s.task_id.parse().expect("task id"))
            .await
            .expect("task");
        let ids = task.payload["sample_ids"].as_array().expect("sample ids");
        assert_eq!(ids.len(), s.pairs.len());
        for ((id, pair), reward) in ids.iter().zip(&s.pairs).zip(&s.rewards) {
            let id = id.as_i64().expect("sample id");
            let sample = store.get_sample(id.into()).await.expect("sample");
            let alpha =
                nat_arch::Genotype::from_json_str(&sample.output.to_string()).expect("stored α");
            let sent = nat_arch::Genotype::from_json_str(&pair.alpha_json).expect("sent α");
            assert_eq!(alpha.canonical_hash(), sent.canonical_hash());
            let stored = sample.reward.expect("reward recorded");
            assert!((stored - reward).abs() < 1e-12, "{stored} vs {reward}");
            assert!(sample.consumed_in_version.is_some() && !sample.dropped);
            rewarded.insert(id);
        }
    }
    assert_eq!(rewarded.len(), rounds as usize * m, "every sample rewarded");
    // The result's learning section.
    let learning = result.learning.as_ref().expect("learning");
    let sn = learning.supernet.as_ref().expect("learning.supernet");
    assert_eq!(sn.version, u64::from(rounds) + 1);
    assert_eq!(sn.rounds, rounds);
    let workers: BTreeSet<&String> = seen.shards.iter().map(|s| &s.worker).collect();
    assert_eq!(sn.workers_seen as usize, workers.len());
    // Garbage: no upload left, the two latest versions kept.
    let blobs = &server.coordinator.blobs;
    for s in &seen.shards {
        let stage = if s.warmup {
            "w".to_string()
        } else {
            format!("r{}", s.round)
        };
        let key = format!(
            "supernet/job-{job_id}/uploads/{stage}-s{}-t{}-l{}.safetensors",
            s.shard, s.task_id, s.lease_token
        );
        assert!(
            blobs.head(&key).await.expect("head").is_none(),
            "{key} deleted"
        );
    }
    for row in &rows {
        let kept = blobs.head(&row.blob_key).await.expect("head").is_some();
        assert_eq!(
            kept,
            row.version + 2 > rows.len() as i64,
            "{}",
            row.blob_key
        );
    }
}

/// The first weight of a stored version.
async fn first_weight(server: &TestServer, row: &nat_store::SupernetVersion) -> f32 {
    let bytes = server
        .coordinator
        .blobs
        .get(&row.blob_key)
        .await
        .expect("version blob");
    let (shape, values) = nat_weights::read_f32(&bytes, "w").expect("tensor w");
    assert_eq!(shape, vec![WEIGHTS]);
    assert!(values.iter().all(|v| *v == values[0]));
    values[0]
}

async fn fleet_flow(db: &TestDb) {
    let server = TestServer::start(db, test_config(), false).await;
    // Both workers are registered before the job: `shards: auto` gives one per slot.
    let (w1, worker1) = common::registered(&server, "sim-1").await;
    let (w2, worker2) = common::registered(&server, "sim-2").await;
    let mut jobs = server.jobs().await;
    let mut request = supernet_request(3, 4, 0);
    if let Some(o) = request.optimize.as_mut() {
        o.derive_samples = 8;
        o.derive_top_k = 2;
    }
    let submitted = submit(&mut jobs, request).await;
    let job_id = submitted.job_id.clone();
    let seen: Shared = Arc::default();
    let script = Script {
        barrier: Some(Arc::new(tokio::sync::Barrier::new(2))),
        ..Script::default()
    };
    tokio::join!(
        work(
            &server,
            w1,
            worker1.clone(),
            job_id.clone(),
            script.clone(),
            seen.clone()
        ),
        work(
            &server,
            w2,
            worker2.clone(),
            job_id.clone(),
            script,
            seen.clone()
        ),
    );
    let seen = Arc::try_unwrap(seen)
        .expect("workers done")
        .into_inner()
        .expect("seen");
    check_job(&server, &job_id, &seen, 3, 4).await;

    // Both workers trained a shard of every round, from the same version.
    for round in 0..3u32 {
        let shards: Vec<&ShardSeen> = seen
            .shards
            .iter()
            .filter(|s| !s.warmup && s.candidates.is_empty() && s.round == round)
            .collect();
        assert_eq!(shards.len(), 2, "round {round}: two shards");
        let workers: BTreeSet<&String> = shards.iter().map(|s| &s.worker).collect();
        assert_eq!(workers.len(), 2, "round {round}: both workers");
        assert!(shards.iter().all(|s| s.shards == 2));
        assert_eq!(shards[0].base_value, shards[1].base_value);
        let pairs: usize = shards.iter().map(|s| s.pairs.len()).sum();
        assert_eq!(pairs, 4, "the round's pairs split between its shards");
    }
    // Federated averaging: warm-up +1, then each round adds the mean of +1 and +2.
    let rows = versions(&server, &job_id).await;
    let expected = [1.0f32, 2.5, 4.0, 5.5];
    for (row, want) in rows.iter().zip(expected) {
        if row.version + 2 > rows.len() as i64 {
            assert_eq!(
                first_weight(&server, row).await,
                want,
                "version {}",
                row.version
            );
        }
    }
    for round_row in &rows[1..] {
        assert_eq!(round_row.shards, 2);
        let workers: BTreeSet<&str> = round_row.workers.iter().map(String::as_str).collect();
        assert_eq!(
            workers,
            BTreeSet::from([worker1.as_str(), worker2.as_str()])
        );
    }
    // Each shard fetched exactly the version the previous round committed.
    for s in seen
        .shards
        .iter()
        .filter(|s| !s.warmup && s.candidates.is_empty())
    {
        assert_eq!(s.base_value, expected[s.round as usize]);
    }
    let result = common::job_result(&mut jobs, &job_id).await;
    let sn = result
        .learning
        .and_then(|l| l.supernet)
        .expect("learning.supernet");
    assert_eq!(
        (sn.version, sn.rounds, sn.shards_per_round, sn.workers_seen),
        (4, 3, 2, 2)
    );

    // Derive on the supernet: every candidate was scored on the last version, sharded across
    // both workers; only the best two (by supernet accuracy) were trained from scratch.
    let screening: Vec<&ShardSeen> = seen
        .shards
        .iter()
        .filter(|s| !s.candidates.is_empty())
        .collect();
    assert_eq!(
        screening.len(),
        2,
        "the screening has one shard per worker slot"
    );
    assert!(screening.iter().all(|s| s.base_version == 4));
    let original = nat_arch::parse_any("darts-v2")
        .expect("preset")
        .canonical_hash();
    let hash = |json: &str| {
        nat_arch::Genotype::from_json_str(json)
            .expect("candidate")
            .canonical_hash()
    };
    let screened: Vec<(String, f64)> = screening
        .iter()
        .flat_map(|s| s.candidates.iter())
        .map(|c| (hash(c), supernet_accuracy(c)))
        .collect();
    assert!(
        screened.iter().any(|(h, _)| *h == original),
        "the original is screened too"
    );
    let job: nat_store::JobId = job_id.parse().expect("uuid");
    let tasks = server
        .coordinator
        .store
        .list_tasks(job, None, 1000, 0)
        .await
        .expect("tasks");
    let trained: BTreeSet<String> = tasks
        .iter()
        .filter(|t| t.kind == "train_eval")
        .filter_map(|t| {
            let p: nat_schema::TrainEvalPayload =
                serde_json::from_value(t.payload.clone()).expect("payload");
            (p.split == nat_schema::EvalSplit::Validation).then_some(p.arch_hash)
        })
        .filter(|h| *h != original)
        .collect();
    assert!(
        !trained.is_empty() && trained.len() <= 2,
        "top 2 trained: {trained:?}"
    );
    let lowest_trained = screened
        .iter()
        .filter(|(h, _)| trained.contains(h))
        .map(|(_, a)| *a)
        .fold(f64::INFINITY, f64::min);
    let best_untrained = screened
        .iter()
        .filter(|(h, _)| *h != original && !trained.contains(h))
        .map(|(_, a)| *a)
        .fold(f64::NEG_INFINITY, f64::max);
    assert!(
        lowest_trained >= best_untrained,
        "the trained candidates are the supernet's best: {lowest_trained} vs {best_untrained}"
    );
    let settings = expected_settings(0);
    let store = &server.coordinator.store;
    for s in &seen.shards {
        let task = store
            .get_task(s.task_id.parse().expect("id"))
            .await
            .expect("task");
        let p: nat_schema::SupernetPayload =
            serde_json::from_value(task.payload.clone()).expect("payload");
        assert_eq!(p.settings.to_proto(), settings);
        assert_eq!(p.supernet_key, format!("job-{job_id}"));
        let steps = match (s.warmup, s.candidates.is_empty()) {
            (true, _) => 11,
            (false, true) => 7,
            (false, false) => 0,
        };
        assert_eq!(p.train_steps, steps);
    }
    server.stop().await;
}
both_backends!(two_workers_share_every_round_of_one_supernet, fleet_flow);

async fn restart_flow(db: &TestDb) {
    let server = TestServer::start(db, test_config(), true).await;
    let mut jobs = server.jobs().await;
    let submitted = submit(&mut jobs, supernet_request(3, 2, 2)).await;
    let job_id = submitted.job_id.clone();
    let (mut w, worker) = common::registered(&server, "sim").await;
    let seen: Shared = Arc::default();
    let deadline = Instant::now() + Duration::from_secs(120);

    // The warm-up.
    let warm = common::next_task(&mut w, &worker, &mut jobs, &job_id, deadline)
        .await
        .expect("warm-up");
    let Some(v1::task::Payload::Supernet(sn)) = &warm.payload else {
        panic!("the warm-up comes first: {warm:?}")
    };
    assert!(sn.warmup && sn.pairs.is_empty() && sn.base_version == 0);
    let report = answer_shard(&mut w, &worker, &warm, sn, &seen).await;
    w.report_result(report).await.expect("report");

    // Round 0: the worker dies holding a shard; its lease runs out and the shard is leased
    // again from the same version.
    let dead = common::next_task(&mut w, &worker, &mut jobs, &job_id, deadline)
        .await
        .expect("a shard of round 0");
    let Some(v1::task::Payload::Supernet(first)) = &dead.payload else {
        panic!("a shard: {dead:?}")
    };
    assert_eq!((first.round, first.base_version), (0, 1));
    let _ = fetch(&mut w, &worker, &dead).await;
    server.advance(test_config().lease_duration * 2);
    nat_coordinator::collect_expired(&server.coordinator).await;
    // The dead lease can neither upload nor report.
    let stale = upload(&mut w, &worker, &dead, &trained(&[0.0; 4], 0))
        .await
        .expect_err("stale");
    assert_eq!(stale.code(), tonic::Code::FailedPrecondition, "{stale:?}");
    let mut answered = BTreeSet::new();
    while answered.len() < 2 {
        let t = common::next_task(&mut w, &worker, &mut jobs, &job_id, deadline)
            .await
            .expect("round 0's shards");
        let Some(v1::task::Payload::Supernet(sn)) = &t.payload else {
            panic!("a shard: {t:?}")
        };
        assert_eq!((sn.round, sn.base_version), (0, 1));
        if t.task_id == dead.task_id {
            assert_eq!(t.attempt, 2, "the dead worker's shard, leased again");
            assert_eq!(t.payload, dead.payload, "same pairs, seed, base");
        }
        let report = answer_shard(&mut w, &worker, &t, sn, &seen).await;
        w.report_result(report).await.expect("report");
        answered.insert(sn.shard);
    }

    // Round 1: one shard answered, then the coordinator stops mid-round.
    let t = common::next_task(&mut w, &worker, &mut jobs, &job_id, deadline)
        .await
        .expect("a shard of round 1");
    let Some(v1::task::Payload::Supernet(sn)) = &t.payload else {
        panic!("a shard: {t:?}")
    };
    assert_eq!((sn.round, sn.base_version), (1, 2));
    let report = answer_shard(&mut w, &worker, &t, sn, &seen).await;
    w.report_result(report).await.expect("report");
    // The coordinator stops mid-round; the next one's clock goes on from where this one's was
    // (it was moved a lease ahead to expire the dead worker's shard).
    let was = nat_coordinator::Clock::now(server.clock.as_ref().expect("manual clock"));
    let mid = common::job(&mut jobs, &job_id).await;
    assert!(common::in_progress(mid.state), "stopped mid-job: {mid:?}");
    server.stop().await;
    let server = TestServer::start(db, test_config(), true).await;
    // A minute on: what the stopped coordinator had reserved ahead of demand is released as
    // a dead coordinator's would be.
    server
        .advance((was - chrono::Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(61));
    assert_eq!(
        versions(&server, &job_id).await.len(),
        2,
        "round 1 not committed yet"
    );
    let w = server.workers().await;
    work(
        &server,
        w,
        worker,
        job_id.clone(),
        Script::default(),
        seen.clone(),
    )
    .await;
    let seen = Arc::try_unwrap(seen)
        .expect("done")
        .into_inner()
        .expect("seen");
    check_job(&server, &job_id, &seen, 3, 2).await;
    // Exactly two shards answered per round (the dead one's second attempt counted once).
    for round in 0..3 {
        let n = seen
            .shards
            .iter()
            .filter(|s| !s.warmup && s.candidates.is_empty() && s.round == round)
            .count();
        assert_eq!(n, 2, "round {round}");
    }
    server.stop().await;
}
both_backends!(
    supernet_survives_a_dead_worker_and_a_coordinator_restart_mid_round,
    restart_flow
);

async fn deadline_flow(db: &TestDb) {
    let server = TestServer::start(db, test_config(), true).await;
    let mut jobs = server.jobs().await;
    let mut request = supernet_request(1, 2, 2);
    if let Some(s) = request.optimize.as_mut().and_then(|o| o.supernet.as_mut()) {
        s.round_deadline_seconds = 20.0;
    }
    let submitted = submit(&mut jobs, request).await;
    let job_id = submitted.job_id.clone();
    let (mut w, worker) = common::registered(&server, "sim").await;
    let seen: Shared = Arc::default();
    let deadline = Instant::now() + Duration::from_secs(120);
    let warm = common::next_task(&mut w, &worker, &mut jobs, &job_id, deadline)
        .await
        .expect("warm-up");
    let Some(v1::task::Payload::Supernet(sn)) = &warm.payload else {
        panic!("warm-up")
    };
    let report = answer_shard(&mut w, &worker, &warm, sn, &seen).await;
    w.report_result(report).await.expect("report");
    let a = common::next_task(&mut w, &worker, &mut jobs, &job_id, deadline)
        .await
        .expect("shard");
    let b = common::next_task(&mut w, &worker, &mut jobs, &job_id, deadline)
        .await
        .expect("shard");
    let Some(v1::task::Payload::Supernet(sa)) = &a.payload else {
        panic!("shard")
    };
    let report = answer_shard(&mut w, &worker, &a, sa, &seen).await;
    w.report_result(report).await.expect("report");
    // The other shard is slow: past the deadline the round averages without it.
    server.advance(Duration::from_secs(21));
    let late = Instant::now() + Duration::from_secs(30);
    while versions(&server, &job_id).await.len() < 2 {
        assert!(Instant::now() < late, "the round commits at its deadline");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let row = &versions(&server, &job_id).await[1];
    assert_eq!((row.round, row.shards), (0, 1));
    let cancelled = server
        .coordinator
        .store
        .get_task(b.task_id.parse().expect("id"))
        .await
        .expect("task");
    assert_eq!(cancelled.state, nat_store::TaskState::Cancelled);
    let Some(v1::task::Payload::Supernet(sb)) = &b.payload else {
        panic!("shard")
    };
    let refused = upload(&mut w, &worker, &b, &trained(&[0.0; 4], sb.shard))
        .await
        .expect_err("a cancelled shard cannot upload");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    // The job goes on with the one reward it got.
    work(
        &server,
        w,
        worker,
        job_id.clone(),
        Script::default(),
        seen.clone(),
    )
    .await;
    common::check_optimize_result(&server, &job_id, 1).await;
    let result = common::job_result(&mut jobs, &job_id).await;
    let sn = result
        .learning
        .and_then(|l| l.supernet)
        .expect("learning.supernet");
    assert_eq!((sn.version, sn.rounds, sn.shards_per_round), (2, 1, 1));
    server.stop().await;
}
both_backends!(
    a_round_past_its_deadline_averages_the_shards_that_reported,
    deadline_flow
);

async fn failed_round(db: &TestDb) {
    let server = TestServer::start(db, test_config(), false).await;
    let mut jobs = server.jobs().await;
    let submitted = submit(&mut jobs, supernet_request(2, 2, 1)).await;
    let (mut w, worker) = common::registered(&server, "sim").await;
    let seen: Shared = Arc::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    let warm = common::next_task(&mut w, &worker, &mut jobs, &submitted.job_id, deadline)
        .await
        .expect("warm-up");
    let Some(v1::task::Payload::Supernet(sn)) = &warm.payload else {
        panic!("warm-up")
    };
    let report = answer_shard(&mut w, &worker, &warm, sn, &seen).await;
    w.report_result(report).await.expect("report");
    let task = common::next_task(&mut w, &worker, &mut jobs, &submitted.job_id, deadline)
        .await
        .expect("round 0");
    assert!(matches!(task.payload, Some(v1::task::Payload::Supernet(_))));
    let failure = v1::report_result_request::Outcome::Failure(v1::TaskFailure {
        reason: "supernet.settings: batch_size too large for this device".into(),
        retryable: false,
    });
    w.report_result(common::report(&worker, &task, failure))
        .await
        .expect("report");
    let failed = common::wait_for_end(
        &mut jobs,
        &submitted.job_id,
        deadline,
        "the job fails in time",
    )
    .await;
    assert_eq!(failed.state, v1::JobState::Failed as i32, "{failed:?}");
    assert!(
        failed.error.contains("learning round 0") && failed.error.contains("batch_size too large"),
        "the job's error names the round and the worker's reason: {}",
        failed.error
    );
    server.stop().await;
}
both_backends!(a_round_whose_every_shard_failed_fails_the_job, failed_round);

/// What the weight transfer refuses, each with the code and the field.
async fn transfer_checks(db: &TestDb) {
    let server = TestServer::start(db, test_config(), false).await;
    let mut jobs = server.jobs().await;
    let submitted = submit(&mut jobs, supernet_request(1, 1, 1)).await;
    let (mut w, worker) = common::registered(&server, "sim").await;
    let (mut other, intruder) = common::registered(&server, "intruder").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let warm = common::next_task(&mut w, &worker, &mut jobs, &submitted.job_id, deadline)
        .await
        .expect("warm-up");
    let bytes = trained(&[0.0; 1000], 0);
    let sha = hex::encode(Sha256::digest(&bytes));
    let code = |s: tonic::Status| (s.code(), s.message().to_string());

    // Nothing to fetch for fresh weights.
    let err = w
        .fetch_supernet(v1::FetchSupernetRequest {
            worker_id: worker.clone(),
            task_id: warm.task_id.clone(),
            lease_token: warm.lease_token,
        })
        .await
        .expect_err("base 0");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    // A wrong digest, a bad document, a stale token, another worker, a gap.
    let (c, m) = code(
        other_upload(&mut w, &worker, &warm, &bytes, &"0".repeat(64), 4096)
            .await
            .expect_err("digest"),
    );
    assert!(
        c == tonic::Code::InvalidArgument && m.contains("sha256"),
        "{m}"
    );
    let junk = vec![7u8; 100];
    let (c, m) = code(
        other_upload(
            &mut w,
            &worker,
            &warm,
            &junk,
            &hex::encode(Sha256::digest(&junk)),
            64,
        )
        .await
        .expect_err("junk"),
    );
    assert!(
        c == tonic::Code::InvalidArgument && m.contains("data"),
        "{m}"
    );
    let mut stale = warm.clone();
    stale.lease_token += 1;
    let (c, _) = code(
        other_upload(&mut w, &worker, &stale, &bytes, &sha, 4096)
            .await
            .expect_err("stale"),
    );
    assert_eq!(c, tonic::Code::FailedPrecondition);
    let (c, _) = code(
        other_upload(&mut other, &intruder, &warm, &bytes, &sha, 4096)
            .await
            .expect_err("foreign"),
    );
    assert_eq!(c, tonic::Code::FailedPrecondition);
    let mut gap = upload_messages(&worker, &warm, &bytes, &sha, 1024);
    gap.remove(1);
    let (c, m) = code(
        w.put_supernet(tokio_stream::iter(gap))
            .await
            .expect_err("gap"),
    );
    assert!(
        c == tonic::Code::InvalidArgument && m.contains("offset"),
        "{m}"
    );
    // A report before the upload, or naming other bytes, is refused.
    let report = |bytes: u64, sha: &str| {
        common::report(
            &worker,
            &warm,
            v1::report_result_request::Outcome::Supernet(v1::SupernetResult {
                scores: vec![],
                wall_seconds: 0.1,
                weights_bytes: bytes,
                weights_sha256: sha.into(),
                train_steps: 11,
                mean_train_loss: 1.0,
                accuracies: Vec::new(),
            }),
        )
    };
    let (c, m) = code(
        w.report_result(report(bytes.len() as u64, &sha))
            .await
            .expect_err("no upload"),
    );
    assert!(
        c == tonic::Code::FailedPrecondition && m.contains("PutSupernet"),
        "{m}"
    );
    let (c, m) = code(
        w.report_result(report(0, ""))
            .await
            .expect_err("no weights"),
    );
    assert!(
        c == tonic::Code::InvalidArgument && m.contains("weights"),
        "{m}"
    );
    // The real upload, in odd-sized chunks, then a report naming other bytes, then the right one.
    let ok = other_upload(&mut w, &worker, &warm, &bytes, &sha, 999)
        .await
        .expect("upload");
    assert_eq!(
        (ok.bytes, ok.sha256.as_str()),
        (bytes.len() as u64, sha.as_str())
    );
    let (c, m) = code(
        w.report_result(report(bytes.len() as u64, &"a".repeat(64)))
            .await
            .expect_err("other digest"),
    );
    assert!(
        c == tonic::Code::InvalidArgument && m.contains("weights_sha256"),
        "{m}"
    );
    w.report_result(report(bytes.len() as u64, &sha))
        .await
        .expect("accepted");
    jobs.cancel_job(v1::CancelJobRequest {
        job_id: submitted.job_id.clone(),
        reason: String::new(),
    })
    .await
    .expect("cancel");
    server.stop().await;
}
both_backends!(
    weight_transfers_check_lease_size_and_digest,
    transfer_checks
);

async fn other_upload(
    w: &mut WorkerServiceClient<Channel>,
    worker: &str,
    task: &v1::Task,
    bytes: &[u8],
    sha: &str,
    chunk: usize,
) -> Result<v1::PutSupernetResponse, tonic::Status> {
    let messages = upload_messages(worker, task, bytes, sha, chunk);
    w.put_supernet(tokio_stream::iter(messages))
        .await
        .map(tonic::Response::into_inner)
}

async fn submit_err(
    jobs: &mut v1::job_service_client::JobServiceClient<Channel>,
    r: v1::SubmitJobRequest,
) -> String {
    let err = jobs.submit_job(r).await.expect_err("invalid");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    err.message().to_string()
}

async fn bad_settings(db: &TestDb) {
    let server = TestServer::start(db, test_config(), false).await;
    let mut jobs = server.jobs().await;
    let with = |f: &dyn Fn(&mut v1::SupernetSettings)| {
        let mut r = supernet_request(1, 1, 0);
        let o = r.optimize.as_mut().expect("spec");
        let mut s = v1::SupernetSettings::default();
        f(&mut s);
        o.supernet = Some(s);
        r
    };
    let cases: Vec<(v1::SubmitJobRequest, &str)> = vec![
        (with(&|s| s.batch_size = 1), "optimize.supernet.batch_size"),
        (
            with(&|s| s.init_channels = 3),
            "optimize.supernet.init_channels",
        ),
        (with(&|s| s.layers = 1000), "optimize.supernet.layers"),
        (
            with(&|s| s.learning_rate = -1.0),
            "optimize.supernet.learning_rate",
        ),
        (with(&|s| s.momentum = 1.0), "optimize.supernet.momentum"),
        (
            with(&|s| s.weight_decay = 2.0),
            "optimize.supernet.weight_decay",
        ),
        (
            with(&|s| s.grad_clip = f64::NAN),
            "optimize.supernet.grad_clip",
        ),
        (
            with(&|s| s.validation_fraction = 0.99),
            "optimize.supernet.validation_fraction",
        ),
        (
            with(&|s| s.eval_batches = 5000),
            "optimize.supernet.eval_batches",
        ),
        (
            with(&|s| s.max_wall_seconds = -3.0),
            "optimize.supernet.max_wall_seconds",
        ),
        (
            with(&|s| s.train_steps_between_pairs = 1_000_000),
            "optimize.supernet.train_steps_between_pairs",
        ),
        (with(&|s| s.shards = 65), "optimize.supernet.shards"),
        (
            with(&|s| s.steps_per_shard = 2_000_000),
            "optimize.supernet.steps_per_shard",
        ),
        (
            with(&|s| s.round_deadline_seconds = f64::INFINITY),
            "optimize.supernet.round_deadline_seconds",
        ),
        (
            with(&|s| s.op_set = "nat-plus-plus".into()),
            "optimize.supernet.op_set",
        ),
        (with(&|s| s.num_nodes = 5), "optimize.supernet.num_nodes"),
    ];
    for (r, field) in cases {
        let message = submit_err(&mut jobs, r).await;
        assert!(message.contains(field), "{field}: {message}");
    }
    // Inputs of different sizes cannot share one supernet.
    let five = nat_arch::sampler::sample_genotype_seeded(nat_arch::OpSet::NatFullyConcat, 5, 3);
    let mut r = supernet_request(1, 1, 0);
    r.architectures.push(five.to_json());
    let message = submit_err(&mut jobs, r).await;
    assert!(message.contains("architectures[1]"), "{message}");
    // Valid overrides (and the matching op set and node count) are accepted.
    let ok = with(&|s| {
        s.op_set = "nat-fully-concat".into();
        s.num_nodes = 4;
        s.eval_batches = 2;
        s.shards = 64;
    });
    let submitted = jobs
        .submit_job(ok)
        .await
        .expect("valid")
        .into_inner()
        .job
        .expect("job");
    jobs.cancel_job(v1::CancelJobRequest {
        job_id: submitted.job_id,
        reason: String::new(),
    })
    .await
    .expect("cancel");
    server.stop().await;
}
both_backends!(supernet_settings_are_validated_at_submit, bad_settings);

/// The resolved settings are the budget preset's supernet defaults (no overrides).
#[test]
fn presets_give_supernet_defaults() {
    for preset in nat_schema::budget::PRESETS {
        assert!(Budget::preset(preset).is_some());
        let s = SupernetBudget::resolve(preset, None, "optimize.supernet").expect("valid");
        assert_eq!(s, SupernetBudget::preset(preset));
    }
}
