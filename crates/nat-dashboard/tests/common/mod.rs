//! A real SQLite store populated through the `Store` API with a running optimize job (leases,
//! reports, progress, policy updates, a new best), a queued evaluate job and two workers (one lost), and
//! the dashboard served on 127.0.0.1:0.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use nat_arch::Genotype;
use nat_store::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct Fixture {
    pub store: Arc<dyn Store>,
    pub optimize: JobId,
    pub evaluate: JobId,
    pub gpu_worker: WorkerId,
    pub cpu_worker: WorkerId,
    pub input: Genotype,
    pub best: Genotype,
    pub rewards: Vec<f64>,
    pub _dir: tempfile::TempDir,
}

pub fn darts() -> Genotype {
    nat_arch::parse_any("darts-v2").expect("darts preset")
}

/// The published NAT output of DARTS (NAT-SPEC §7): normal (0->3) sep3=>skip, (1->4)
/// sep3=>skip; reduce (1->2) max3=>skip, (1->3) max3=>skip, (2->4) skip=>null.
pub fn darts_nat() -> Genotype {
    nat_arch::parse_any("darts-v2.nat").expect("darts-v2.nat preset")
}

fn smoke() -> nat_schema::Budget {
    nat_schema::Budget::preset("smoke").expect("smoke preset")
}

/// A `train_eval` task as the coordinator creates it (`nat_schema::TrainEvalPayload`).
pub fn train_eval(index: u32, g: &Genotype) -> NewTask {
    let payload = nat_schema::TrainEvalPayload {
        index,
        genotype_json: g.to_json(),
        arch_hash: g.canonical_hash(),
        dataset: "digits".into(),
        dataset_shape: Some(nat_arch::Dataset::Digits.shape()),
        budget: smoke(),
        seed: 1,
        checkpointed: false,
        checkpoint_key: String::new(),
        split: nat_schema::EvalSplit::Validation,
    };
    NewTask {
        kind: "train_eval".into(),
        payload: serde_json::to_value(payload).expect("payload json"),
        requirements: Requirements::default(),
        max_attempts: 3,
    }
}

/// `jobs.spec` of an evaluate job, as the coordinator writes it.
pub fn evaluate_spec(name: &str, dataset: &str, archs: &[&Genotype]) -> nat_schema::JobSpec {
    nat_schema::JobSpec {
        name: name.into(),
        dataset: dataset.into(),
        // A user dataset gets a shape of its own.
        dataset_shape: nat_arch::Dataset::from_name(dataset)
            .map(nat_arch::Dataset::shape)
            .unwrap_or(nat_arch::DatasetShape {
                channels: 3,
                image_size: 64,
                classes: 2,
            }),
        seed: 1,
        budget_preset: "smoke".into(),
        budget: smoke(),
        architectures: archs.iter().map(|g| g.to_json()).collect(),
        device: String::new(),
        min_device_memory_bytes: 0,
    }
}

/// `jobs.spec` of an optimize job, as the coordinator writes it.
pub fn optimize_spec(name: &str, dataset: &str, archs: &[&Genotype]) -> Value {
    let spec = nat_schema::OptimizeJobSpec {
        base: evaluate_spec(name, dataset, archs),
        optimize: nat_schema::OptimizeSettings {
            reward: nat_schema::RewardKind::Proxy,
            supernet: None,
            op_set: nat_arch::OpSet::NatFullyConcat,
            profile: nat_schema::Profile::Default,
            policy_id: String::new(),
            iterations: 10,
            samples_per_iteration: 3,
            derive_samples: 10,
            derive_argmax: false,
            random_inputs: false,
            learning_rate: 0.0,
            entropy_weight: 0.0,
            max_staleness: 0,
            final_budget_preset: "smoke".into(),
            final_budget: smoke(),
            final_seeds: 3,
            max_cost_ratio: 1.0,
            control: nat_schema::Control::None,
            derive_top_k: 3,
        },
    };
    serde_json::to_value(spec).expect("spec json")
}

/// `tasks.result` of a `train_eval` task, as the coordinator writes it.
pub fn train_eval_result(index: u32, worker: WorkerId, accuracy: f64, ips: f64) -> Value {
    serde_json::to_value(nat_schema::TrainEvalResult {
        index,
        worker_id: worker.to_string(),
        outcome: nat_schema::TrainEvalOutcome {
            accuracy,
            loss: 0.31,
            params: 3_300_000,
            madds: 533_000_000,
            wall_seconds: 95.0,
            images_per_second: ips,
        },
    })
    .expect("result json")
}

pub fn caps(gpus: u32, devices: &[&str], model: Option<&str>, slots: u32) -> Capabilities {
    Capabilities {
        gpus,
        gpu_memory_mb: if gpus > 0 { 81_559 } else { 0 },
        gpu_model: model.map(str::to_string),
        cpu_cores: 16,
        slots,
        devices: devices.iter().map(|d| d.to_string()).collect(),
        version: "0.1.0".into(),
        datasets: Vec::new(),
        dataset_infos: Vec::new(),
    }
}

pub async fn populate() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite:{}", dir.path().join("nat.db").display());
    let store = connect(&url).await.expect("sqlite store");
    // Timestamps close to the real clock so that heartbeat ages and elapsed times look real.
    let t0: DateTime<Utc> = Utc
        .timestamp_millis_opt(Utc::now().timestamp_millis() - 600_000)
        .single()
        .expect("time");
    let at = |s: i64| t0 + chrono::Duration::seconds(s);
    let lease = Duration::from_secs(3600);

    let input = darts();
    let best = darts_nat();
    let optimize = store
        .create_job(
            NewJob {
                kind: "optimize".into(),
                spec: optimize_spec("darts-nat", "digits", &[&input]),
                // Above the evaluate job, so that the leases below all go to this job.
                priority: 10,
                completion: Completion::Manual,
                owner: None,
            },
            vec![
                train_eval(0, &input),
                train_eval(1, &best),
                train_eval(2, &best),
            ],
            at(0),
        )
        .await
        .expect("optimize job");
    let evaluate = store
        .create_job(
            NewJob {
                kind: "evaluate".into(),
                spec: serde_json::to_value(evaluate_spec(
                    "enas-eval",
                    "fashion-mnist",
                    &[&nat_arch::parse_any("enas").expect("enas")],
                ))
                .expect("spec json"),
                priority: 0,
                completion: Completion::AllTasks,
                owner: None,
            },
            vec![train_eval(0, &input)],
            at(1),
        )
        .await
        .expect("evaluate job");

    let gpu = store
        .register_worker(
            "gpu-node-1",
            caps(1, &["cuda:0"], Some("NVIDIA H100"), 2),
            at(2),
        )
        .await
        .expect("register");
    let cpu = store
        .register_worker("cpu-node-7", caps(0, &["cpu"], None, 1), at(2))
        .await
        .expect("register");

    // Task 1 of the optimize job: leased by the GPU worker and finished.
    let l1 = store
        .lease_task(gpu.id, &gpu.capabilities, at(10), lease)
        .await
        .expect("lease")
        .expect("a task");
    assert_eq!(l1.task.job_id, optimize.id);
    let ack = store
        .report_result(
            l1.task.id,
            l1.token,
            gpu.id,
            Outcome::Succeeded {
                result: train_eval_result(0, gpu.id, 0.912, 1523.5),
                rewards: vec![],
                sample_rewards: vec![],
            },
            at(105),
        )
        .await
        .expect("report");
    assert!(matches!(ack, ReportAck::Accepted { .. }));

    // Task 2: leased by the CPU worker, which fails it (retryable) — it goes back to the queue.
    let l2 = store
        .lease_task(cpu.id, &cpu.capabilities, at(106), lease)
        .await
        .expect("lease")
        .expect("a task");
    store
        .report_result(
            l2.task.id,
            l2.token,
            cpu.id,
            Outcome::Failed {
                reason: "CUDA out of memory".into(),
                retryable: true,
            },
            at(120),
        )
        .await
        .expect("report failure");

    // The GPU worker now holds a task and reports progress.
    let l3 = store
        .lease_task(gpu.id, &gpu.capabilities, at(130), lease)
        .await
        .expect("lease")
        .expect("a task");
    store
        .report_progress(
            l3.task.id,
            l3.token,
            gpu.id,
            json!({"fraction": 0.4, "epoch": 2, "train_loss": 0.5, "train_accuracy": 0.8, "message": ""}),
            at(200),
        )
        .await
        .expect("progress");

    // Policy updates with rising rewards, and a new best.
    let rewards = vec![-0.012, -0.004, 0.003, 0.009, 0.017, 0.021];
    let mut baseline = 0.0;
    for (i, r) in rewards.iter().enumerate() {
        baseline = 0.98 * baseline + 0.01 * r;
        store
            .append_event(
                optimize.id,
                "policy_update",
                json!({"policy_version": i as i64 + 2, "baseline": baseline, "mean_reward": r,
                       "rewards": [r - 0.004, r, r + 0.005], "samples_used": 3, "samples_stale": 0}),
                at(210 + 20 * i as i64),
            )
            .await
            .expect("event");
    }
    store
        .append_event(
            optimize.id,
            "new_best",
            json!({"input_index": 0, "genotype": serde_json::from_str::<Value>(&best.to_json()).expect("json"),
                   "accuracy": 0.957, "reward": 0.021}),
            at(340),
        )
        .await
        .expect("new best");

    // Heartbeats: the GPU worker is fresh; the CPU worker went silent long ago.
    let now = Utc::now();
    store
        .heartbeat(
            gpu.id,
            &[HeldLease {
                task_id: l3.task.id,
                token: l3.token,
            }],
            now,
            lease,
        )
        .await
        .expect("heartbeat");
    let lost = store
        .mark_lost_workers(now - chrono::Duration::seconds(60))
        .await
        .expect("mark lost");
    assert_eq!(lost, vec![cpu.id]);

    Fixture {
        store,
        optimize: optimize.id,
        evaluate: evaluate.id,
        gpu_worker: gpu.id,
        cpu_worker: cpu.id,
        input,
        best,
        rewards,
        _dir: dir,
    }
}

/// `jobs.result` of a finished optimize job, as the coordinator writes it: DARTS_V2 (`input`)
/// against its NAT transformation (`best`) trained from scratch on seeds 101..=103, the best
/// worse on every seed, a random control, and the learning curve (version 3 without entropy).
pub fn finished_result(input: &Genotype, best: &Genotype) -> Value {
    use nat_schema::result::*;
    use nat_schema::verdict::{decide, PairedDifference, SeedAccuracies};
    let original = SeedAccuracies::new(vec![0.912, 0.905, 0.918], 3_349_342, 532_665_460);
    let best_acc = SeedAccuracies::new(vec![0.901, 0.897, 0.906], 3_160_000, 498_000_000);
    let control = SeedAccuracies::new(vec![0.910, 0.907, 0.915], 3_200_000, 510_000_000);
    let diff = PairedDifference::of(&original.accuracies, &best_acc.accuracies).expect("pairs");
    let decision = decide(&original, &best_acc, &diff, false);
    let vs_original = PairedDifference::of(&original.accuracies, &control.accuracies).expect("d");
    let measured = |g: &Genotype, a: &SeedAccuracies| ArchMeasurement {
        genotype: g.to_json_value(),
        genotype_darts: g.to_darts_string(),
        canonical_hash: g.canonical_hash(),
        accuracy: a.mean,
        params: a.params,
        madds: a.madds,
    };
    let view = |version, g: &Genotype, identity, argmax| PolicyView {
        version,
        identity_probability: identity,
        argmax_darts: g.to_darts_string(),
        argmax_probability: argmax,
    };
    let doc = OptimizeResult {
        summary: Summary {
            best_accuracy: Some(best_acc.mean),
            best_reward: Some(0.021),
            policy_version: 7,
            iterations_done: 6,
            iterations_total: 6,
        },
        optimize: vec![OptimizeOutcome {
            input_index: 0,
            original: measured(input, &original),
            best: measured(best, &best_acc),
            changed_edges: vec![
                "normal node 2 input 0 (from 0): sep_conv_3x3 -> skip_connect".into(),
            ],
            verdict: Some(decision.verdict),
            recommended: Some(Recommendation {
                from: decision.recommended,
                genotype: input.to_json_value(),
                genotype_darts: input.to_darts_string(),
                reason: decision.reason,
            }),
            final_evaluation: Some(FinalEvaluation {
                seeds: vec![101, 102, 103],
                original: original.clone(),
                best: best_acc.clone(),
                paired_difference: diff,
            }),
            control: Some(ControlOutcome {
                genotype: best.to_json_value(),
                genotype_darts: best.to_darts_string(),
                final_accuracies: control.clone(),
                policy_vs_control: PairedDifference::of(&control.accuracies, &best_acc.accuracies)
                    .expect("d"),
                verdict: decide(&original, &control, &vs_original, false).verdict,
                vs_original,
            }),
            derive_accuracy: Some(0.957),
        }],
        policy: Some(PolicyRef {
            id: "job-policy".into(),
            version: 7,
        }),
        rewards: 18,
        driver: DriverProgress::default(),
        learning: Some(Learning {
            rewards: 18,
            policy_versions: 6,
            curve: (2..=7)
                .map(|v| LearningPoint {
                    version: v,
                    mean_reward: -0.02 + 0.006 * v as f64,
                    reward_moving_average: -0.002 + 0.0006 * v as f64,
                    entropy: (v != 3).then_some(3.5 - 0.05 * v as f64),
                })
                .collect(),
            inputs: vec![InputLearning {
                input_index: 0,
                first: Some(view(1, input, 0.0123, 0.0123)),
                last: view(7, best, 0.0087, 0.0412),
            }],
            supernet: None,
        }),
    };
    serde_json::to_value(doc).expect("result json")
}

/// Serves the dashboard on a loopback port.
pub async fn serve(store: Arc<dyn Store>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, nat_dashboard::router(store))
            .await
            .expect("serve");
    });
    addr
}

/// A minimal HTTP/1.1 GET: returns the status code, the headers (lowercase) and the body.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8(raw).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("http response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, head.to_ascii_lowercase(), body.to_string())
}

pub async fn get_json(addr: SocketAddr, path: &str) -> (u16, Value) {
    let (status, head, body) = get(addr, path).await;
    assert!(head.contains("content-type: application/json"), "{head}");
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")),
    )
}
