//! Paper-scale optimize job (issue #14, item 4): one `supernet` optimize job of `--rewards`
//! rewards (default 50,000) through an in-process coordinator, with `--workers` fake workers
//! (default 2) that speak the real worker protocol over loopback gRPC and answer at once.
//!
//! ```text
//! cargo run --release -p nat-coordinator --example scale_job -- [--rewards 50000]
//!     [--samples 64] [--workers 2] [--window 5000] [--postgres | --database URL]
//! ```
//!
//! - The coordinator (gRPC, the HTTP dashboard, the optimize driver, the store) runs on a tokio
//!   runtime of its own (2 worker threads, threads named `coord`). The store is a SQLite file in
//!   a temp directory by default, a fresh PostgreSQL database on 127.0.0.1:5432 with
//!   `--postgres` (dropped at the end), or `--database URL`.
//! - The fake workers run on one thread of their own (`fake-workers`, a current-thread runtime),
//!   so their CPU is measured separately and taken out of the coordinator's: coordinator CPU =
//!   the process's utime + stime (`/proc/self/stat`) minus that thread's
//!   (`/proc/self/task/TID/stat`). Each worker leases a task (long-poll 200 ms); a supernet
//!   shard fetches the base version, uploads 256 f32 made with `nat_weights`, and reports an
//!   accuracy per genotype derived from an FNV hash of its JSON (deterministic); a derive
//!   screening reports one accuracy per candidate; a `train_eval` task reports at once.
//! - The job: `darts-v2` on digits, smoke budget, reward `supernet` with `shards` = workers,
//!   `samples_per_iteration` = M, `iterations` = rewards / M, `derive_samples` 4,
//!   `derive_top_k` 1, `final_seeds` 1. The policy is the job's default policy (322,750
//!   parameters): its update is a fixed cost per reward (see docs/BENCHMARKS.md).
//! - Printed per window of `--window` rewards: coordinator CPU seconds per 1,000 rewards, the
//!   fake workers' CPU per 1,000 rewards, RSS of the process, the bytes of `jobs.result`, policy
//!   updates per hour, rounds per second, the database size, and the dashboard's job view
//!   (`/api/jobs/{id}` with `after` = 0, a page's first request: latency and bytes; timed
//!   outside the window's CPU). At the end: `WatchJob` (first message
//!   latency, messages and bytes of a full replay from sequence 0, and a resume from the last
//!   sequence), `GetJobResult` (latency, bytes) and the dashboard's pages (latency, bytes).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use nat_coordinator::{Config, Coordinator, SystemClock};
use nat_proto::v1;
use prost::Message;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tonic::transport::Channel;
use v1::job_service_client::JobServiceClient;
use v1::worker_service_client::WorkerServiceClient;

#[path = "support/mod.rs"]
mod support;
use support::{capabilities, connect, cpu_seconds, Database, CLIENT_THREAD};

/// f32 values in a fake shard's weights.
const WEIGHTS: usize = 256;

#[derive(Parser, Debug, Clone)]
#[command(about = "A paper-scale supernet optimize job against an in-process coordinator")]
struct Args {
    /// Rewards of the job (iterations = rewards / samples).
    #[arg(long, default_value_t = 50_000)]
    rewards: u64,
    /// Samples per iteration (M).
    #[arg(long, default_value_t = 64)]
    samples: u32,
    /// Fake workers (one slot each; also the shards per round).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Rewards per printed window.
    #[arg(long, default_value_t = 5_000)]
    window: u64,
    /// A fresh PostgreSQL database on 127.0.0.1:5432 (dropped at the end).
    #[arg(long)]
    postgres: bool,
    /// Store URL (default: a SQLite file in a temp directory).
    #[arg(long)]
    database: Option<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.samples == 0 || args.rewards < u64::from(args.samples) {
        bail!("--rewards must be at least --samples (and --samples at least 1)");
    }
    let coordinator_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("coord")
        .enable_all()
        .build()?;
    coordinator_rt.block_on(run(args))
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

async fn run(args: Args) -> Result<()> {
    let db = Database::open(args.database.as_deref(), args.postgres, "nat_scale").await?;
    let store = nat_store::connect(&db.url).await?;
    let config = Config {
        // Shards are answered at once; a long lease never expires in this run.
        lease_duration: Duration::from_secs(120),
        ..Config::default()
    };
    let coordinator = Coordinator::new(store, Arc::new(SystemClock), config);
    let grpc = TcpListener::bind("127.0.0.1:0").await?;
    let http = TcpListener::bind("127.0.0.1:0").await?;
    let grpc_addr = grpc.local_addr()?;
    let http_addr = http.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(nat_coordinator::serve(
        coordinator.clone(),
        grpc,
        Some(http),
        async move {
            let _ = stop_rx.await;
        },
    ));
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "scale_job: {} rewards, M = {}, {} fake workers, store {} ({}), CPU {cpu}, loadavg {}",
        args.rewards,
        args.samples,
        args.workers,
        coordinator.store.backend(),
        db.url,
        load.trim()
    );

    // The fake workers and every client call run on their own thread.
    let client_args = args.clone();
    let url = format!("http://{grpc_addr}");
    let (job_tx, job_rx) = tokio::sync::oneshot::channel::<Result<String>>();
    let done = Arc::new(AtomicBool::new(false));
    let (end_tx, end_rx) = tokio::sync::oneshot::channel::<()>();
    let client_done = done.clone();
    let client = std::thread::Builder::new()
        .name(CLIENT_THREAD.into())
        .spawn(move || -> Result<EndReport> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(client_side(
                client_args,
                url,
                http_addr,
                job_tx,
                client_done,
                end_rx,
            ))
        })?;
    let job_id = job_rx.await.map_err(|_| anyhow!("client thread ended"))??;
    let job: nat_store::JobId = job_id.parse().context("job id")?;
    println!("job {job_id}; dashboard http://{http_addr}/jobs/{job_id}");
    println!(
        "| rewards | elapsed s | coordinator CPU s / 1k rewards | fake workers CPU s / 1k | RSS MiB | jobs.result bytes | policy updates / h | rounds / s | database MiB | /api/jobs/ID ms | /api/jobs/ID bytes |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");

    let start = Instant::now();
    let (mut last_cpu, mut last_client) = cpu_seconds()?;
    let mut last_t = start;
    let mut last_rewards = 0u64;
    let mut last_version = 0i64;
    let mut last_rounds = 0u32;
    let mut next = args.window;
    let mut first_cpu_per_k = None;
    let mut last_cpu_per_k = None;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let row = coordinator.store.get_job(job).await?;
        let result_bytes = row
            .result
            .as_ref()
            .map_or(0, |r| serde_json::to_vec(r).map_or(0, |v| v.len()));
        let doc: Option<nat_schema::result::OptimizeResult> = row
            .result
            .as_ref()
            .map(|r| serde_json::from_value(r.clone()))
            .transpose()
            .context("result document")?;
        let rewards = doc.as_ref().map_or(0, |d| d.driver.rewards);
        let version = doc.as_ref().map_or(0, |d| d.summary.policy_version);
        let rounds = doc.as_ref().map_or(0, |d| d.summary.iterations_done);
        let finished = row.state.is_final();
        if rewards >= next || (finished && rewards > last_rewards) {
            let now = Instant::now();
            let (cpu, client_cpu) = cpu_seconds()?;
            let dr = (rewards - last_rewards) as f64;
            let coord = (cpu - client_cpu) - (last_cpu - last_client);
            let per_k = coord / dr * 1000.0;
            let dt = now.duration_since(last_t).as_secs_f64();
            let (dash_ms, dash_bytes) =
                match http_get(http_addr, &format!("/api/jobs/{job_id}")).await {
                    Ok((ms, bytes, _)) => (ms, bytes),
                    Err(_) => (f64::NAN, 0),
                };
            let db_size = db.size().await.map_or(f64::NAN, |b| b as f64 / 1048576.0);
            println!(
                "| {rewards} | {:.0} | {per_k:.2} | {:.2} | {:.0} | {result_bytes} | {:.0} | {:.2} | {db_size:.0} | {dash_ms:.1} | {dash_bytes} |",
                now.duration_since(start).as_secs_f64(),
                (client_cpu - last_client) / dr * 1000.0,
                rss_mib(),
                (version - last_version) as f64 / dt * 3600.0,
                f64::from(rounds - last_rounds) / dt,
            );
            let _ = std::io::stdout().flush();
            first_cpu_per_k.get_or_insert(per_k);
            last_cpu_per_k = Some(per_k);
            // The dashboard call is measured outside the window's CPU.
            let (cpu, client_cpu) = cpu_seconds()?;
            (last_cpu, last_client) = (cpu, client_cpu);
            last_t = Instant::now();
            last_rewards = rewards;
            last_version = version;
            last_rounds = rounds;
            while next <= rewards {
                next += args.window;
            }
        }
        if finished {
            println!(
                "job {:?} after {:.0} s: {rewards} rewards, policy version {version}, {rounds} rounds{}",
                row.state,
                start.elapsed().as_secs_f64(),
                row.error.map(|e| format!(": {e}")).unwrap_or_default()
            );
            break;
        }
    }
    if let (Some(a), Some(b)) = (first_cpu_per_k, last_cpu_per_k) {
        println!(
            "coordinator CPU per reward, last window / first window: {:.2}",
            b / a
        );
    }
    done.store(true, Ordering::SeqCst);
    let _ = end_tx.send(());
    let report = client
        .join()
        .map_err(|_| anyhow!("client thread panicked"))??;
    report.print();
    if let Some(size) = db.size().await {
        println!("database at the end: {:.0} MiB", size as f64 / 1048576.0);
    }
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    db.drop_it().await;
    Ok(())
}

/// What the end of the run measured.
#[derive(Debug, Default)]
struct EndReport {
    lines: Vec<String>,
}

impl EndReport {
    fn add(&mut self, line: String) {
        self.lines.push(line);
    }

    fn print(&self) {
        println!("| end measurement | value |");
        println!("|---|---|");
        for l in &self.lines {
            println!("{l}");
        }
    }
}

fn request(args: &Args) -> v1::SubmitJobRequest {
    let iterations = u32::try_from(args.rewards / u64::from(args.samples)).unwrap_or(u32::MAX);
    v1::SubmitJobRequest {
        kind: v1::JobKind::Optimize as i32,
        architectures: vec!["darts-v2".into()],
        dataset: "digits".into(),
        budget: Some(v1::BudgetSpec {
            preset: "smoke".into(),
            overrides: None,
        }),
        seed: 1,
        priority: 0,
        name: "scale_job".into(),
        optimize: Some(v1::OptimizeSpec {
            reward: v1::RewardMode::Supernet as i32,
            iterations,
            samples_per_iteration: args.samples,
            derive_samples: 4,
            derive_top_k: 1,
            final_seeds: 1,
            supernet: Some(v1::SupernetSettings {
                shards: u32::try_from(args.workers).unwrap_or(1),
                steps_per_shard: 1,
                warmup_steps: 1,
                ..Default::default()
            }),
            ..Default::default()
        }),
        requirements: None,
        dataset_shape: None,
    }
}

/// A deterministic accuracy in [0.3, 0.9) from a genotype's JSON (FNV-1a).
fn accuracy(json: &str) -> f64 {
    let h = json.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    0.3 + (h % 600) as f64 / 1000.0
}

async fn client_side(
    args: Args,
    url: String,
    http: std::net::SocketAddr,
    job_tx: tokio::sync::oneshot::Sender<Result<String>>,
    done: Arc<AtomicBool>,
    end: tokio::sync::oneshot::Receiver<()>,
) -> Result<EndReport> {
    let channel = connect(&url).await?;
    let mut jobs = JobServiceClient::new(channel);
    let mut fleet = Vec::new();
    for i in 0..args.workers {
        let mut w = WorkerServiceClient::new(connect(&url).await?);
        let id = w
            .register_worker(v1::RegisterWorkerRequest {
                name: format!("fake-{i}"),
                capabilities: Some(capabilities("scale_job")),
            })
            .await?
            .into_inner()
            .worker_id;
        fleet.push((w, id));
    }
    let submitted = jobs.submit_job(request(&args)).await;
    let job_id = match submitted {
        Ok(r) => r
            .into_inner()
            .job
            .map(|j| j.job_id)
            .ok_or_else(|| anyhow!("no job")),
        Err(s) => Err(anyhow!("submit: {s}")),
    };
    let job_id = match job_id {
        Ok(id) => {
            let _ = job_tx.send(Ok(id.clone()));
            id
        }
        Err(e) => {
            let _ = job_tx.send(Err(anyhow!("{e}")));
            return Err(e);
        }
    };
    let workers: Vec<_> = fleet
        .into_iter()
        .map(|(w, id)| tokio::spawn(work(w, id, done.clone())))
        .collect();
    let _ = end.await;
    for w in workers {
        w.await??;
    }
    end_measurements(&mut jobs, http, &job_id).await
}

/// Leases and answers tasks until the job is over.
async fn work(
    mut w: WorkerServiceClient<Channel>,
    worker: String,
    done: Arc<AtomicBool>,
) -> Result<()> {
    while !done.load(Ordering::SeqCst) {
        let task = w
            .lease_task(v1::LeaseTaskRequest {
                worker_id: worker.clone(),
                wait_ms: 200,
                device: None,
                slot: 0,
            })
            .await?
            .into_inner()
            .task;
        let Some(task) = task else { continue };
        let outcome = match &task.payload {
            Some(v1::task::Payload::Supernet(sn)) => shard(&mut w, &worker, &task, sn).await?,
            Some(v1::task::Payload::TrainEval(te)) => {
                v1::report_result_request::Outcome::TrainEval(v1::TrainEvalResult {
                    accuracy: accuracy(&te.genotype_json),
                    loss: 0.5,
                    params: 1000,
                    madds: 50_000,
                    wall_seconds: 0.01,
                    images_per_second: 1000.0,
                })
            }
            None => bail!("a task without payload"),
        };
        w.report_result(v1::ReportResultRequest {
            worker_id: worker.clone(),
            task_id: task.task_id.clone(),
            lease_token: task.lease_token,
            outcome: Some(outcome),
        })
        .await?;
    }
    Ok(())
}

/// Fetches the base version, uploads tiny weights, scores the pairs (or the candidates).
async fn shard(
    w: &mut WorkerServiceClient<Channel>,
    worker: &str,
    task: &v1::Task,
    sn: &v1::SupernetTask,
) -> Result<v1::report_result_request::Outcome> {
    let mut base = vec![0.0f32; WEIGHTS];
    if sn.base_version > 0 {
        let mut stream = w
            .fetch_supernet(v1::FetchSupernetRequest {
                worker_id: worker.into(),
                task_id: task.task_id.clone(),
                lease_token: task.lease_token,
            })
            .await?
            .into_inner();
        let mut data = Vec::new();
        while let Some(chunk) = stream.message().await? {
            data.extend_from_slice(&chunk.data);
        }
        base = nat_weights::read_f32(&data, "w")?.1;
    }
    if !sn.candidates.is_empty() {
        return Ok(v1::report_result_request::Outcome::Supernet(
            v1::SupernetResult {
                accuracies: sn.candidates.iter().map(|c| accuracy(c)).collect(),
                wall_seconds: 0.01,
                ..Default::default()
            },
        ));
    }
    let delta = 0.001 * (sn.shard + 1) as f32;
    let values: Vec<f32> = base.iter().map(|x| x + delta).collect();
    let bytes = nat_weights::from_f32(&[("w", vec![WEIGHTS], &values)], BTreeMap::new())?;
    let sha = hex::encode(Sha256::digest(&bytes));
    let message = v1::PutSupernetRequest {
        worker_id: worker.into(),
        task_id: task.task_id.clone(),
        lease_token: task.lease_token,
        total_bytes: bytes.len() as u64,
        sha256: sha,
        offset: 0,
        data: bytes,
    };
    let stored = w
        .put_supernet(tokio_stream::iter(vec![message]))
        .await?
        .into_inner();
    Ok(v1::report_result_request::Outcome::Supernet(
        v1::SupernetResult {
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
        },
    ))
}

/// A plain HTTP/1.1 GET: (milliseconds, body bytes, body).
async fn http_get(addr: std::net::SocketAddr, path: &str) -> Result<(f64, usize, Vec<u8>)> {
    let t0 = Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut response = Vec::new();
    s.read_to_end(&mut response).await?;
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP header end"))?;
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or(""));
    }
    let body = response[split + 4..].to_vec();
    // Chunked bodies count their framing too: a few bytes per chunk.
    Ok((ms, body.len(), body))
}

/// `WatchJob` from `after`: (first message ms, total ms, messages, encoded bytes, last seq).
async fn watch(
    jobs: &mut JobServiceClient<Channel>,
    job_id: &str,
    after: u64,
) -> Result<(f64, f64, u64, u64, u64)> {
    let t0 = Instant::now();
    let mut stream = jobs
        .watch_job(v1::WatchJobRequest {
            job_id: job_id.into(),
            after_sequence: after,
        })
        .await?
        .into_inner();
    let (mut first, mut n, mut bytes, mut last) = (f64::NAN, 0u64, 0u64, 0u64);
    while let Some(e) = stream.message().await? {
        if n == 0 {
            first = t0.elapsed().as_secs_f64() * 1000.0;
        }
        n += 1;
        bytes += e.encoded_len() as u64;
        last = e.sequence;
    }
    Ok((first, t0.elapsed().as_secs_f64() * 1000.0, n, bytes, last))
}

async fn end_measurements(
    jobs: &mut JobServiceClient<Channel>,
    http: std::net::SocketAddr,
    job_id: &str,
) -> Result<EndReport> {
    let mut r = EndReport::default();
    let (first, total, n, bytes, last) = watch(jobs, job_id, 0).await?;
    r.add(format!(
        "| WatchJob from 0: first message | {first:.1} ms |\n| WatchJob from 0: full replay | {total:.0} ms, {n} messages, {bytes} bytes |"
    ));
    let (first, total, n, bytes, _) = watch(jobs, job_id, last.saturating_sub(1)).await?;
    r.add(format!(
        "| WatchJob resumed at the last sequence − 1: first message | {first:.1} ms ({total:.0} ms in all, {n} messages, {bytes} bytes) |"
    ));
    let t0 = Instant::now();
    let result = jobs
        .get_job_result(v1::GetJobResultRequest {
            job_id: job_id.into(),
        })
        .await?
        .into_inner();
    r.add(format!(
        "| GetJobResult | {:.1} ms, {} bytes, {} learning-curve points, {} policy versions |",
        t0.elapsed().as_secs_f64() * 1000.0,
        result.encoded_len(),
        result.learning.as_ref().map_or(0, |l| l.curve.len()),
        result.learning.as_ref().map_or(0, |l| l.policy_versions),
    ));
    let pages = [
        format!("/jobs/{job_id}"),
        format!("/api/jobs/{job_id}"),
        format!("/api/jobs/{job_id}"),
        "/api/jobs".to_string(),
        "/api/workers".to_string(),
        format!("/api/jobs/{job_id}/diagram.svg"),
    ];
    let mut last_seq = None;
    for (i, path) in pages.iter().enumerate() {
        let (ms, bytes, body) = http_get(http, path).await?;
        let note = if i == 2 { " (again, cached)" } else { "" };
        r.add(format!("| GET {path}{note} | {ms:.1} ms, {bytes} bytes |"));
        if i == 1 {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            last_seq = v["last_seq"].as_i64();
            r.add(format!(
                "| … its reward points / events | {} / {} |",
                v["rewards"].as_array().map_or(0, Vec::len),
                v["events"].as_array().map_or(0, Vec::len)
            ));
        }
    }
    if let Some(seq) = last_seq {
        let path = format!("/api/jobs/{job_id}?after={seq}");
        let (ms, bytes, _) = http_get(http, &path).await?;
        r.add(format!(
            "| GET {path} (a page's poll) | {ms:.1} ms, {bytes} bytes |"
        ));
    }
    Ok(r)
}
