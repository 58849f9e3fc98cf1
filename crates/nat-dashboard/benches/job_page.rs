//! Latency of the dashboard's JSON views on a real SQLite store holding a large optimize job:
//! `TASKS` train_eval tasks (all leased and reported) and `UPDATES` policy_update events.
//! Plain `Instant` timing: `cargo bench -p nat-dashboard --bench job_page`.

use std::time::{Duration, Instant};

use chrono::Utc;
use nat_store::*;
use serde_json::json;

const TASKS: usize = 2_000;
const UPDATES: usize = 5_000;

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = connect(&format!("sqlite:{}", dir.path().join("b.db").display()))
        .await
        .expect("store");
    let input = nat_arch::parse_any("darts-v2").expect("preset");
    let best = nat_arch::parse_any("darts-v2.nat").expect("preset");
    let now = Utc::now();
    let budget = nat_schema::Budget::preset("smoke").expect("smoke");
    let tasks = (0..TASKS)
        .map(|i| {
            let g = if i % 2 == 0 { &input } else { &best };
            let payload = nat_schema::TrainEvalPayload {
                index: i as u32,
                genotype_json: g.to_json(),
                arch_hash: g.canonical_hash(),
                dataset: "cifar10".into(),
                dataset_shape: Some(nat_arch::Dataset::Cifar10.shape()),
                budget,
                seed: 0,
                checkpointed: false,
                checkpoint_key: String::new(),
                split: nat_schema::EvalSplit::Validation,
            };
            NewTask {
                kind: "train_eval".into(),
                payload: serde_json::to_value(payload).expect("payload"),
                requirements: Requirements::default(),
                max_attempts: 3,
            }
        })
        .collect();
    let spec = nat_schema::OptimizeJobSpec {
        base: nat_schema::JobSpec {
            name: "bench".into(),
            dataset: "cifar10".into(),
            dataset_shape: nat_arch::Dataset::Cifar10.shape(),
            seed: 0,
            budget_preset: "smoke".into(),
            budget,
            architectures: vec![input.to_json()],
            device: String::new(),
            min_device_memory_bytes: 0,
        },
        optimize: nat_schema::OptimizeSettings {
            reward: nat_schema::RewardKind::Proxy,
            supernet: None,
            op_set: nat_arch::OpSet::NatFullyConcat,
            profile: nat_schema::Profile::Default,
            policy_id: String::new(),
            iterations: UPDATES as u32,
            samples_per_iteration: 3,
            derive_samples: 10,
            derive_argmax: false,
            random_inputs: false,
            learning_rate: 0.0,
            entropy_weight: 0.0,
            max_staleness: 0,
            final_budget_preset: "smoke".into(),
            final_budget: budget,
            final_seeds: 3,
            max_cost_ratio: 1.0,
            control: nat_schema::Control::None,
            derive_top_k: 3,
        },
    };
    let job = store
        .create_job(
            NewJob {
                kind: "optimize".into(),
                spec: serde_json::to_value(spec).expect("spec"),
                priority: 0,
                completion: Completion::Manual,
                owner: None,
            },
            tasks,
            now,
        )
        .await
        .expect("job");
    let caps = Capabilities {
        gpus: 1,
        slots: 1,
        devices: vec!["cuda:0".into()],
        ..Capabilities::default()
    };
    let worker = store
        .register_worker("w", caps.clone(), now)
        .await
        .expect("worker");
    let setup = Instant::now();
    for i in 0..TASKS {
        let lease = store
            .lease_task(worker.id, &caps, now, Duration::from_secs(600))
            .await
            .expect("lease")
            .expect("task");
        store
            .report_result(
                lease.task.id,
                lease.token,
                worker.id,
                Outcome::Succeeded {
                    result: serde_json::to_value(nat_schema::TrainEvalResult {
                        index: nat_schema::decode::<nat_schema::TrainEvalPayload>(
                            "train_eval payload",
                            &lease.task.payload,
                        )
                        .expect("payload")
                        .index,
                        worker_id: worker.id.to_string(),
                        outcome: nat_schema::TrainEvalOutcome {
                            accuracy: 0.9 + (i % 50) as f64 / 1000.0,
                            loss: 0.3,
                            params: 3_300_000,
                            madds: 533_000_000,
                            wall_seconds: 10.0,
                            images_per_second: 1000.0,
                        },
                    })
                    .expect("result"),
                    rewards: vec![],
                    sample_rewards: vec![],
                },
                now,
            )
            .await
            .expect("report");
    }
    for v in 0..UPDATES {
        store
            .append_event(
                job.id,
                "policy_update",
                json!({"policy_version": v + 2, "baseline": 0.001, "mean_reward": 0.01,
                       "rewards": [0.0, 0.01, 0.02], "samples_used": 3, "samples_stale": 0}),
                now,
            )
            .await
            .expect("event");
    }
    println!(
        "setup: {TASKS} tasks reported + {UPDATES} events in {:.1} s",
        setup.elapsed().as_secs_f64()
    );

    let time = |name: &str, runs: u32, elapsed: Duration| {
        println!(
            "{name:<52} {:>8.1} ms/request",
            elapsed.as_secs_f64() * 1e3 / f64::from(runs)
        );
    };
    let runs = 20;
    let t = Instant::now();
    for _ in 0..runs {
        let d = nat_dashboard::model::job_detail(store.as_ref(), job.id, 0)
            .await
            .expect("detail");
        assert_eq!(d.rewards.len(), UPDATES);
    }
    time("job_detail (GET /api/jobs/{id})", runs, t.elapsed());
    let full = nat_dashboard::model::job_detail(store.as_ref(), job.id, 0)
        .await
        .expect("detail");
    let full_bytes = serde_json::to_vec(&full).expect("json").len();

    // What the job page does after its first request: `?after=<last_seq>`, with the event
    // digest kept by the server's cache (the first call reads the whole log and fills it).
    let cache = nat_dashboard::cache::EventCache::default();
    let t = Instant::now();
    let first = nat_dashboard::model::job_detail_with(store.as_ref(), Some(&cache), job.id, 0, 0)
        .await
        .expect("detail");
    time(
        "job_detail_with, cold cache (first page load)",
        1,
        t.elapsed(),
    );
    let mut after = first.last_seq;
    let t = Instant::now();
    let mut bytes = 0;
    for _ in 0..runs {
        let d =
            nat_dashboard::model::job_detail_with(store.as_ref(), Some(&cache), job.id, 0, after)
                .await
                .expect("detail");
        assert!(d.rewards.is_empty());
        bytes = serde_json::to_vec(&d).expect("json").len();
    }
    time(
        "job_detail_with ?after=last_seq, nothing new",
        runs,
        t.elapsed(),
    );
    let mut elapsed = Duration::ZERO;
    let mut new_bytes = 0;
    for r in 0..runs {
        for k in 0..10 {
            store
                .append_event(
                    job.id,
                    "policy_update",
                    json!({"policy_version": UPDATES + 2 + (r * 10 + k) as usize,
                           "baseline": 0.001, "mean_reward": 0.01,
                           "rewards": [0.0, 0.01, 0.02], "samples_used": 3,
                           "samples_stale": 0}),
                    now,
                )
                .await
                .expect("event");
        }
        let t = Instant::now();
        let d =
            nat_dashboard::model::job_detail_with(store.as_ref(), Some(&cache), job.id, 0, after)
                .await
                .expect("detail");
        elapsed += t.elapsed();
        assert_eq!(d.rewards.len(), 10);
        after = d.last_seq;
        new_bytes = serde_json::to_vec(&d).expect("json").len();
    }
    time(
        "job_detail_with ?after=last_seq, 10 new events",
        runs,
        elapsed,
    );
    println!(
        "response size: full {full_bytes} B, ?after with nothing new {bytes} B, with 10 new events {new_bytes} B"
    );
    let t = Instant::now();
    for _ in 0..runs {
        nat_dashboard::model::jobs(store.as_ref(), 50)
            .await
            .expect("jobs");
    }
    time("jobs (GET /api/jobs), no result summary", runs, t.elapsed());
    let t = Instant::now();
    for _ in 0..runs {
        nat_dashboard::model::workers(&store, chrono::Duration::seconds(30), 20)
            .await
            .expect("workers");
    }
    time("workers (GET /api/workers)", runs, t.elapsed());
    let t = Instant::now();
    for _ in 0..runs {
        nat_dashboard::gauges::count(store.as_ref())
            .await
            .expect("count");
    }
    time("gauges::count (store-derived gauges)", runs, t.elapsed());
}
