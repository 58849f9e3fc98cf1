//! Store-level throughput of the hot path: `lease_task` + `report_result` round trips, driven by
//! many concurrent simulated workers directly against a store (no gRPC). This is the ceiling the
//! coordinator's end-to-end load benchmark can reach on the same database.
//!
//! ```text
//! cargo bench -p nat-store --bench lease_report -- --backend postgres --tasks 20000 --workers 64 --jobs 4
//! cargo bench -p nat-store --bench lease_report -- --backend sqlite --tasks 5000 --workers 16
//! ```
//! PostgreSQL: a fresh database `nat_bench_<random>` is created on `NAT_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and dropped afterwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use clap::{Parser, ValueEnum};
use nat_store::*;
use serde_json::json;
use sqlx::Connection;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Backend {
    Postgres,
    Sqlite,
}

#[derive(Debug, Parser)]
struct Args {
    /// Which backend to measure.
    #[arg(long, value_enum, default_value = "postgres")]
    backend: Backend,
    /// Tasks to run through the store.
    #[arg(long, default_value_t = 20_000)]
    tasks: usize,
    /// Concurrent simulated workers (each: lease, report, repeat).
    #[arg(long, default_value_t = 64)]
    workers: usize,
    /// Slots per `lease_tasks`/`report_results` batch (1 = the single-call API).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Jobs the tasks are spread over (equal priority: round robin).
    #[arg(long, default_value_t = 4)]
    jobs: usize,
    /// Admin URL for PostgreSQL.
    #[arg(
        long,
        env = "NAT_TEST_PG_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pg_url: String,
    /// Ignored (cargo bench passes it).
    #[arg(long, hide = true)]
    bench: bool,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn run(store: Arc<dyn Store>, args: &Args) -> anyhow::Result<()> {
    let per_job = args.tasks.div_ceil(args.jobs.max(1));
    let mut created = 0;
    for j in 0..args.jobs.max(1) {
        let n = per_job.min(args.tasks - created);
        let tasks = (0..n)
            .map(|i| NewTask {
                kind: "train_eval".into(),
                payload: json!({ "arch": format!("a{j}-{i}") }),
                requirements: Requirements::default(),
                max_attempts: 3,
            })
            .collect();
        store
            .create_job(
                NewJob {
                    kind: "evaluate".into(),
                    spec: json!({ "bench": true }),
                    priority: 0,
                    completion: Completion::AllTasks,
                    owner: None,
                },
                tasks,
                Utc::now(),
            )
            .await?;
        created += n;
    }
    let caps = Capabilities {
        cpu_cores: 2,
        slots: 1,
        ..Capabilities::default()
    };
    let mut workers = Vec::new();
    for i in 0..args.workers {
        workers.push(
            store
                .register_worker(&format!("bench-{i}"), caps.clone(), Utc::now())
                .await?
                .id,
        );
    }
    let start = Instant::now();
    let mut handles = Vec::new();
    let batch = args.batch.max(1);
    for w in workers {
        let store = store.clone();
        let caps = caps.clone();
        handles.push(tokio::spawn(async move {
            let mut lease_lat = Vec::new();
            let mut report_lat = Vec::new();
            let requests: Vec<LeaseRequest> = (0..batch)
                .map(|_| LeaseRequest {
                    worker: Some(w),
                    capabilities: caps.clone(),
                    datasets: vec![],
                })
                .collect();
            loop {
                let t = Instant::now();
                let leases: Vec<Lease> = if batch == 1 {
                    store
                        .lease_task(w, &caps, Utc::now(), Duration::from_secs(60))
                        .await?
                        .into_iter()
                        .collect()
                } else {
                    store
                        .lease_tasks(&requests, Utc::now(), Duration::from_secs(60))
                        .await?
                        .into_iter()
                        .flatten()
                        .collect()
                };
                lease_lat.push(t.elapsed());
                if leases.is_empty() {
                    break;
                }
                let outcome = |lease: &Lease| Outcome::Succeeded {
                    result: json!({ "accuracy": 0.5 }),
                    rewards: vec![RewardObservation {
                        key: RewardKey {
                            arch_hash: lease.task.id.to_string(),
                            dataset: "digits".into(),
                            budget: "smoke".into(),
                        },
                        value: 0.5,
                    }],
                    sample_rewards: vec![],
                };
                let t = Instant::now();
                if batch == 1 {
                    for lease in &leases {
                        store
                            .report_result(
                                lease.task.id,
                                lease.token,
                                w,
                                outcome(lease),
                                Utc::now(),
                            )
                            .await?;
                    }
                } else {
                    let items = leases
                        .iter()
                        .map(|lease| ReportItem {
                            task: lease.task.id,
                            token: lease.token,
                            worker: w,
                            outcome: outcome(lease),
                        })
                        .collect();
                    for r in store.report_results(items, Utc::now()).await? {
                        r?;
                    }
                }
                let per_call = t.elapsed();
                report_lat.extend(std::iter::repeat_n(per_call, leases.len()));
            }
            Ok::<_, StoreError>((lease_lat, report_lat))
        }));
    }
    let mut lease_lat = Vec::new();
    let mut report_lat = Vec::new();
    for h in handles {
        let (l, r) = h.await??;
        lease_lat.extend(l);
        report_lat.extend(r);
    }
    let elapsed = start.elapsed();
    let batch = args.batch.max(1);
    lease_lat.sort();
    report_lat.sort();
    let done = report_lat.len();
    anyhow::ensure!(
        done == args.tasks,
        "completed {done} of {} tasks",
        args.tasks
    );
    println!(
        "backend={} tasks={} workers={} jobs={} batch={batch}: {:.0} lease+report round trips/s ({done} in {:.2?})",
        store.backend(),
        args.tasks,
        args.workers,
        args.jobs,
        done as f64 / elapsed.as_secs_f64(),
        elapsed
    );
    println!(
        "  lease call    p50 {:.2?}  p99 {:.2?}  max {:.2?}",
        percentile(&lease_lat, 0.5),
        percentile(&lease_lat, 0.99),
        lease_lat.last().copied().unwrap_or_default()
    );
    println!(
        "  report call   p50 {:.2?}  p99 {:.2?}  max {:.2?}",
        percentile(&report_lat, 0.5),
        percentile(&report_lat, 0.99),
        report_lat.last().copied().unwrap_or_default()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir()?;
            let url = format!("sqlite:{}", dir.path().join("bench.db").display());
            let store = connect(&url).await?;
            run(store, &args).await
        }
        Backend::Postgres => {
            let name = format!("nat_bench_{}", uuid::Uuid::new_v4().simple());
            let mut admin = sqlx::PgConnection::connect(&args.pg_url)
                .await
                .with_context(|| format!("PostgreSQL not reachable at {}", args.pg_url))?;
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut admin)
                .await?;
            let base = args
                .pg_url
                .rsplit_once('/')
                .map(|(b, _)| b)
                .unwrap_or(&args.pg_url);
            let url = format!("{base}/{name}");
            let result = async {
                let store = connect(&url).await?;
                run(store, &args).await
            }
            .await;
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut admin)
                .await?;
            result
        }
    }
}
