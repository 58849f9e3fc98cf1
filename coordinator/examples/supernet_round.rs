//! Cost of one sharded supernet round through the coordinator (issue #14, item 5): a
//! 10 M-parameter supernet, 64 shards, the bytes going through gRPC and the blob store.
//!
//! ```text
//! cargo run --release -p nat-coordinator --example supernet_round -- \
//!     [--rounds 2] [--shards 64] [--postgres | --database URL] [--blob-url DIR]
//! ```
//!
//! - **The coordinator** (gRPC, the optimize driver, the store, the blob store) runs in this
//!   process on a tokio runtime of its own (2 worker threads named `coord`), with the same
//!   allocator as the binary (mimalloc). The store is a SQLite file in a temp directory by
//!   default, a fresh PostgreSQL database on 127.0.0.1:5432 with `--postgres` (dropped at the
//!   end), or `--database URL`. Weights go to the database (default) or to `--blob-url` (a
//!   directory: the `object_store` local-filesystem backend).
//! - **The fake workers** run in the same process on a runtime of their own (2 threads named
//!   `fake-workers`, so their CPU is measured apart: coordinator CPU = process CPU minus theirs).
//!   `--shards` workers (64), one gRPC connection each, registered before the job. The job is an
//!   optimize job (`darts-v2` on digits, smoke budget, reward `supernet`, `supernet.shards` =
//!   64, 64 samples per iteration so every shard scores one pair, `iterations` = `--rounds`).
//!   The warm-up shard uploads the **10 M-parameter document** built as
//!   `crates/nat-weights/benches/average.rs` builds it (ResNet-shaped: 68 tensors, 9,963,944
//!   parameters, F32 plus I64 BatchNorm counters, ≈ 39.86 MB). In each round every worker leases
//!   one shard, then all 64 at once: `FetchSupernet` the base version (SHA-256 checked while
//!   streaming, nothing kept), `PutSupernet` its own document (the warm-up document with every
//!   F32 value + (shard + 1)·1e-4 and the counters + shard, generated chunk by chunk while it is
//!   sent, 1 MiB chunks as `nat-worker` sends them; its SHA-256 computed once before round 0),
//!   and `ReportResult`. The phases are separated (every fetch ends before the first upload, and
//!   so on) so that each is timed on its own.
//! - **Printed per round**: wall time, MB/s, coordinator and fake-worker CPU seconds and the
//!   process's peak RSS (`VmHWM`, reset through `/proc/self/clear_refs` at the start of each
//!   phase) of the fetch, upload and report phases; then report → committed version (the
//!   coordinator's averaging, the version's put and the commit: wall, and the
//!   `nat_supernet_average_duration_seconds` it recorded), the version's bytes, the
//!   `nat_supernet_bytes_{sent,received}_total` moved in the round, the database size, and the
//!   load average. The fake workers hold at most a few MiB each (the warm-up document, 40 MB, is
//!   shared by all and is in the RSS before the round), so the peak RSS is the coordinator's
//!   plus those.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use nat_coordinator::{Config, Coordinator, SystemClock};
use nat_proto::v1;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tonic::transport::Channel;
use v1::job_service_client::JobServiceClient;
use v1::worker_service_client::WorkerServiceClient;

#[path = "support/mod.rs"]
mod support;
use support::{capabilities, connect, cpu_seconds, Database, CLIENT_THREAD};

/// The allocator of the `nat-coordinator` binary, so that the RSS is the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Upload chunk size: what `nat-worker` sends (`WEIGHTS_CHUNK`).
const UPLOAD_CHUNK: usize = 1 << 20;
/// Longest any phase may take before the run gives up.
const PHASE_LIMIT: Duration = Duration::from_secs(900);

#[derive(Parser, Debug, Clone)]
#[command(
    about = "One sharded supernet round (10 M parameters, 64 shards) through an in-process coordinator"
)]
struct Args {
    /// Learning rounds to measure (each one a job iteration).
    #[arg(long, default_value_t = 2)]
    rounds: u32,
    /// Shards per round, one fake worker each (the issue asks for 64, the most a round takes).
    #[arg(long, default_value_t = 64)]
    shards: u32,
    /// A fresh PostgreSQL database on 127.0.0.1:5432 (dropped at the end).
    #[arg(long)]
    postgres: bool,
    /// Store URL (default: a SQLite file in a temp directory).
    #[arg(long)]
    database: Option<String>,
    /// Where weights go: a directory (or any `--blob-url` the coordinator takes); default the
    /// job database.
    #[arg(long)]
    blob_url: Option<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.rounds == 0 || args.shards == 0 || args.shards > nat_schema::MAX_SUPERNET_SHARDS {
        bail!(
            "--rounds must be at least 1 and --shards in 1..={}",
            nat_schema::MAX_SUPERNET_SHARDS
        );
    }
    nat_telemetry::init_logging(nat_telemetry::LogFormat::Text, "warn")
        .map_err(|e| anyhow!("logging: {e}"))?;
    let coordinator_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("coord")
        .enable_all()
        .build()?;
    // The fake workers and every client call run on runtime threads of their own.
    let workers_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(CLIENT_THREAD)
        .enable_all()
        .build()?;
    let result = coordinator_rt.block_on(run(args, workers_rt.handle().clone()));
    workers_rt.shutdown_timeout(Duration::from_secs(5));
    result
}

// ----- the 10 M-parameter document (as crates/nat-weights/benches/average.rs builds it) -----

struct TensorSpec {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
}

/// A stem and ten 3×3 convolutions (64 → 512 channels), each with BatchNorm, and a 512 → 1000
/// classifier: 68 tensors, 9,963,944 parameters.
fn model_spec() -> Vec<TensorSpec> {
    let convs = [
        (64, 3),
        (64, 64),
        (64, 64),
        (128, 64),
        (128, 128),
        (256, 128),
        (256, 256),
        (512, 256),
        (512, 512),
        (512, 512),
        (512, 512),
    ];
    let mut spec = Vec::new();
    for (i, (out, inp)) in convs.into_iter().enumerate() {
        let f32_tensor = |suffix: &str, shape: Vec<usize>| TensorSpec {
            name: format!("cells.{i:02}.{suffix}"),
            dtype: Dtype::F32,
            shape,
        };
        spec.push(f32_tensor("conv.weight", vec![out, inp, 3, 3]));
        for bn in ["bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"] {
            spec.push(f32_tensor(bn, vec![out]));
        }
        spec.push(TensorSpec {
            name: format!("cells.{i:02}.bn.num_batches_tracked"),
            dtype: Dtype::I64,
            shape: vec![],
        });
    }
    spec.push(TensorSpec {
        name: "classifier.weight".into(),
        dtype: Dtype::F32,
        shape: vec![1000, 512],
    });
    spec.push(TensorSpec {
        name: "classifier.bias".into(),
        dtype: Dtype::F32,
        shape: vec![1000],
    });
    spec
}

/// The warm-up document and where its tensors' bytes are.
struct Model {
    doc: Vec<u8>,
    /// Byte ranges (in `doc`) of the F32 tensors' data.
    f32_ranges: Vec<(usize, usize)>,
    /// Byte ranges of the I64 counters.
    i64_ranges: Vec<(usize, usize)>,
    parameters: u64,
}

fn build_model() -> Result<Model> {
    let spec = model_spec();
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    let data: Vec<Vec<u8>> = spec
        .iter()
        .map(|t| {
            let n: usize = t.shape.iter().product();
            let positive = t.name.ends_with("running_var") || t.name.ends_with("bn.weight");
            match t.dtype {
                Dtype::I64 => 1000i64.to_le_bytes().to_vec(),
                _ => (0..n)
                    .flat_map(|_| {
                        if positive {
                            rng.gen_range(0.5f32..1.5)
                        } else {
                            rng.gen_range(-0.05f32..0.05)
                        }
                        .to_le_bytes()
                    })
                    .collect(),
            }
        })
        .collect();
    let views = spec
        .iter()
        .zip(&data)
        .map(|(t, d)| {
            Ok((
                t.name.as_str(),
                TensorView::new(t.dtype, t.shape.clone(), d)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let doc = safetensors::serialize(views, None)?;
    let parsed = safetensors::SafeTensors::deserialize(&doc)?;
    let base = doc.as_ptr() as usize;
    let (mut f32_ranges, mut i64_ranges) = (Vec::new(), Vec::new());
    for (_, view) in parsed.tensors() {
        let start = view.data().as_ptr() as usize - base;
        let range = (start, start + view.data().len());
        if !start.is_multiple_of(8) {
            bail!("tensor data at offset {start} is not 8-byte aligned");
        }
        match view.dtype() {
            Dtype::F32 => f32_ranges.push(range),
            Dtype::I64 => i64_ranges.push(range),
            other => bail!("unexpected dtype {other}"),
        }
    }
    let parameters = nat_weights::inspect(&doc)?.parameters;
    Ok(Model {
        doc,
        f32_ranges,
        i64_ranges,
        parameters,
    })
}

impl Model {
    /// Bytes `start..end` of shard `shard`'s document: the warm-up document with every F32
    /// value + (shard + 1)·1e-4 and every counter + shard. `start` is a multiple of 8.
    fn shard_bytes(&self, shard: u32, start: usize, end: usize) -> Vec<u8> {
        let mut out = self.doc[start..end].to_vec();
        let delta = (shard as f32 + 1.0) * 1e-4;
        for &(a, b) in &self.f32_ranges {
            let (lo, hi) = (a.max(start), b.min(end));
            if lo >= hi {
                continue;
            }
            for word in out[lo - start..hi - start].chunks_exact_mut(4) {
                let x = f32::from_le_bytes([word[0], word[1], word[2], word[3]]) + delta;
                word.copy_from_slice(&x.to_le_bytes());
            }
        }
        for &(a, b) in &self.i64_ranges {
            if a >= start && b <= end {
                let slot = &mut out[a - start..b - start];
                let mut v = [0u8; 8];
                v.copy_from_slice(slot);
                slot.copy_from_slice(&(i64::from_le_bytes(v) + i64::from(shard)).to_le_bytes());
            }
        }
        out
    }

    /// SHA-256 of shard `shard`'s document, generated chunk by chunk.
    fn shard_sha256(&self, shard: u32) -> String {
        let mut h = Sha256::new();
        for start in (0..self.doc.len()).step_by(UPLOAD_CHUNK) {
            let end = (start + UPLOAD_CHUNK).min(self.doc.len());
            h.update(self.shard_bytes(shard, start, end));
        }
        hex::encode(h.finalize())
    }
}

// ----- process measurements ---------------------------------------------------------------

/// A field of /proc/self/status in MB (10^6 bytes).
fn status_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb * 1024.0 / 1e6)
}

/// Resets the peak RSS (`VmHWM`) to the current RSS; false where the kernel refuses.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The value of a counter (or a histogram's `_sum` / `_count`) in the Prometheus text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The coordinator's supernet counters.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    sent: f64,
    received: f64,
    average_sum: f64,
    average_count: f64,
}

fn counters(handle: &nat_telemetry::MetricsHandle) -> Counters {
    handle.run_upkeep();
    let text = handle.render();
    Counters {
        sent: metric(&text, "nat_supernet_bytes_sent_total"),
        received: metric(&text, "nat_supernet_bytes_received_total"),
        average_sum: metric(&text, "nat_supernet_average_duration_seconds_sum"),
        average_count: metric(&text, "nat_supernet_average_duration_seconds_count"),
    }
}

/// A phase's cost: wall, CPU (coordinator = process minus fake workers), peak RSS.
#[derive(Debug, Clone, Copy)]
struct Phase {
    wall: f64,
    coordinator_cpu: f64,
    workers_cpu: f64,
    peak_mb: f64,
    start_rss_mb: f64,
}

struct PhaseClock {
    t0: Instant,
    cpu0: (f64, f64),
    rss0: f64,
}

impl PhaseClock {
    fn start() -> Result<PhaseClock> {
        reset_peak();
        Ok(PhaseClock {
            t0: Instant::now(),
            cpu0: cpu_seconds()?,
            rss0: status_mb("VmRSS:"),
        })
    }

    fn stop(self) -> Result<Phase> {
        let wall = self.t0.elapsed().as_secs_f64();
        let (p, w) = cpu_seconds()?;
        Ok(Phase {
            wall,
            coordinator_cpu: (p - w) - (self.cpu0.0 - self.cpu0.1),
            workers_cpu: w - self.cpu0.1,
            peak_mb: status_mb("VmHWM:"),
            start_rss_mb: self.rss0,
        })
    }
}

fn dir_bytes(path: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

// ----- the run ----------------------------------------------------------------------------

fn mb(bytes: f64) -> f64 {
    bytes / 1e6
}

async fn run(args: Args, workers_rt: tokio::runtime::Handle) -> Result<()> {
    println!(
        "supernet_round: {} shards, {} rounds; CPU {} ({} logical CPUs); load average {}",
        args.shards,
        args.rounds,
        cpu_model(),
        std::thread::available_parallelism().map_or(0, usize::from),
        load_average()
    );
    let t = Instant::now();
    let model = Arc::new(build_model()?);
    println!(
        "document: {} parameters, {} bytes ({:.2} MB), built in {:.1} s",
        model.parameters,
        model.doc.len(),
        mb(model.doc.len() as f64),
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let mut digests = Vec::with_capacity(args.shards as usize);
    for shard in 0..args.shards {
        digests.push(model.shard_sha256(shard));
    }
    println!(
        "shard documents: {} distinct, generated and hashed in {:.2} s ({:.0} ms each; outside the timed phases)",
        args.shards,
        t.elapsed().as_secs_f64(),
        t.elapsed().as_secs_f64() * 1e3 / f64::from(args.shards)
    );
    let warmup_sha = hex::encode(Sha256::digest(&model.doc));

    let db = Database::open(args.database.as_deref(), args.postgres, "nat_round").await?;
    let store = nat_store::connect(&db.url).await?;
    let blobs = nat_store::connect_blobs(&*store, args.blob_url.as_deref())?;
    println!(
        "store {} ({}), blobs {}",
        store.backend(),
        db.url,
        blobs.describe()
    );
    let config = Config {
        // The fake workers send no heartbeats: a lease outlives the slowest round.
        lease_duration: Duration::from_secs(1800),
        heartbeat_interval: Duration::from_secs(60),
        ..Config::default()
    };
    let coordinator = Coordinator::new_with_blobs(store, Arc::new(SystemClock), config, blobs);
    let grpc = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", grpc.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(nat_coordinator::serve(
        coordinator.clone(),
        grpc,
        None,
        async move {
            let _ = stop_rx.await;
        },
    ));
    let metrics = nat_telemetry::install_prometheus().map_err(|e| anyhow!("metrics: {e}"))?;

    let fleet = Fleet {
        model: model.clone(),
        digests: Arc::new(digests),
        warmup_sha,
    };
    let c2 = coordinator.clone();
    let shards = args.shards;
    let rounds = args.rounds;
    let outcome = workers_rt
        .spawn(async move { fleet.drive(url, c2, metrics, shards, rounds).await })
        .await
        .map_err(|e| anyhow!("fake workers: {e}"))?;
    let measured = match outcome {
        Ok(m) => m,
        Err(e) => {
            let _ = stop_tx.send(());
            db.drop_it().await;
            return Err(e);
        }
    };

    let blob_dir = args
        .blob_url
        .as_deref()
        .filter(|u| !u.contains("://") || u.starts_with("file:"))
        .map(|u| std::path::PathBuf::from(u.trim_start_matches("file://")));
    print_report(&measured, &db, blob_dir.as_deref(), &args).await;

    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    db.drop_it().await;
    Ok(())
}

/// What one round (or the warm-up) measured.
#[derive(Debug, Clone)]
struct RoundReport {
    label: String,
    shards: usize,
    lease_wall: f64,
    fetch: Option<Phase>,
    fetch_bytes: u64,
    upload: Phase,
    upload_bytes: u64,
    report: Phase,
    commit: Phase,
    average_seconds: f64,
    version: i64,
    version_bytes: i64,
    sent: f64,
    received: f64,
    rss_before_mb: f64,
    /// From the committed version to the round's uploads deleted (the driver's garbage
    /// collection, before it starts the next round).
    collected_s: f64,
    load: String,
}

struct Fleet {
    model: Arc<Model>,
    digests: Arc<Vec<String>>,
    warmup_sha: String,
}

/// One fake worker: its connection and its id.
#[derive(Clone)]
struct Worker {
    client: WorkerServiceClient<Channel>,
    id: String,
}

fn request(shards: u32, rounds: u32) -> v1::SubmitJobRequest {
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
        name: "supernet_round".into(),
        optimize: Some(v1::OptimizeSpec {
            reward: v1::RewardMode::Supernet as i32,
            iterations: rounds,
            // One pair per shard: a round has at most one shard per pair.
            samples_per_iteration: shards,
            derive_samples: 4,
            derive_top_k: 1,
            final_seeds: 1,
            supernet: Some(v1::SupernetSettings {
                shards,
                steps_per_shard: 1,
                warmup_steps: 1,
                // Far past any round here: no shard is cancelled by the deadline.
                round_deadline_seconds: 3600.0,
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

/// Leases until a supernet task comes (long-poll 1 s at a time).
async fn lease_shard(w: &mut Worker) -> Result<(v1::Task, v1::SupernetTask)> {
    let deadline = Instant::now() + PHASE_LIMIT;
    loop {
        if Instant::now() > deadline {
            bail!("worker {}: no shard within {PHASE_LIMIT:?}", w.id);
        }
        let task = w
            .client
            .lease_task(v1::LeaseTaskRequest {
                worker_id: w.id.clone(),
                wait_ms: 1000,
                device: None,
                slot: 0,
            })
            .await?
            .into_inner()
            .task;
        let Some(task) = task else { continue };
        match &task.payload {
            Some(v1::task::Payload::Supernet(sn)) => {
                let sn = sn.clone();
                return Ok((task, sn));
            }
            other => bail!("worker {}: a task that is no shard: {other:?}", w.id),
        }
    }
}

/// Streams the base version; checks offsets, size and SHA-256; keeps nothing. Returns bytes.
async fn fetch(mut w: Worker, task: v1::Task) -> Result<u64> {
    let mut stream = w
        .client
        .fetch_supernet(v1::FetchSupernetRequest {
            worker_id: w.id.clone(),
            task_id: task.task_id.clone(),
            lease_token: task.lease_token,
        })
        .await?
        .into_inner();
    let mut h = Sha256::new();
    let (mut got, mut total, mut sha) = (0u64, 0u64, String::new());
    while let Some(chunk) = stream.message().await? {
        if chunk.offset != got {
            bail!("chunk at {} after {got} bytes", chunk.offset);
        }
        got += chunk.data.len() as u64;
        total = chunk.total_bytes;
        sha = chunk.sha256;
        h.update(&chunk.data);
    }
    let digest = hex::encode(h.finalize());
    if got != total || digest != sha {
        bail!("fetched {got} of {total} bytes hashing to {digest}, the coordinator said {sha}");
    }
    Ok(got)
}

/// Uploads shard `shard`'s document (or the warm-up document) in 1 MiB chunks made while sent.
async fn upload(
    mut w: Worker,
    task: v1::Task,
    model: Arc<Model>,
    shard: Option<u32>,
    sha256: String,
) -> Result<v1::PutSupernetResponse> {
    let total = model.doc.len();
    let worker = w.id.clone();
    let messages = (0..total.div_ceil(UPLOAD_CHUNK)).map(move |i| {
        let start = i * UPLOAD_CHUNK;
        let end = (start + UPLOAD_CHUNK).min(total);
        let data = match shard {
            Some(s) => model.shard_bytes(s, start, end),
            None => model.doc[start..end].to_vec(),
        };
        let first = i == 0;
        v1::PutSupernetRequest {
            worker_id: if first { worker.clone() } else { String::new() },
            task_id: if first {
                task.task_id.clone()
            } else {
                String::new()
            },
            lease_token: if first { task.lease_token } else { 0 },
            total_bytes: if first { total as u64 } else { 0 },
            sha256: if first { sha256.clone() } else { String::new() },
            offset: start as u64,
            data,
        }
    });
    Ok(w.client
        .put_supernet(tokio_stream::iter(messages))
        .await?
        .into_inner())
}

async fn report(
    mut w: Worker,
    task: v1::Task,
    sn: v1::SupernetTask,
    stored: v1::PutSupernetResponse,
) -> Result<()> {
    let scores = sn
        .pairs
        .iter()
        .map(|p| v1::PairScore {
            acc_beta: accuracy(&p.beta_json),
            acc_alpha: accuracy(&p.alpha_json),
        })
        .collect();
    let r = w
        .client
        .report_result(v1::ReportResultRequest {
            worker_id: w.id.clone(),
            task_id: task.task_id.clone(),
            lease_token: task.lease_token,
            outcome: Some(v1::report_result_request::Outcome::Supernet(
                v1::SupernetResult {
                    scores,
                    wall_seconds: 1.0,
                    weights_bytes: stored.bytes,
                    weights_sha256: stored.sha256,
                    train_steps: u64::from(sn.train_steps),
                    mean_train_loss: 1.0,
                    accuracies: Vec::new(),
                },
            )),
        })
        .await?
        .into_inner();
    if r.discarded {
        bail!("report of task {} discarded", task.task_id);
    }
    Ok(())
}

/// Runs `f` on every worker at once (one tokio task each) and waits for all.
async fn all<T, F, Fut>(items: Vec<T>, f: F) -> Result<Vec<Fut::Output>>
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    let handles: Vec<_> = items.into_iter().map(|i| tokio::spawn(f(i))).collect();
    let joined = tokio::time::timeout(PHASE_LIMIT, futures::future::join_all(handles))
        .await
        .map_err(|_| anyhow!("a phase took more than {PHASE_LIMIT:?}"))?;
    joined
        .into_iter()
        .map(|r| r.map_err(|e| anyhow!("worker task: {e}")))
        .collect()
}

impl Fleet {
    async fn drive(
        self,
        url: String,
        coordinator: Arc<Coordinator>,
        metrics: nat_telemetry::MetricsHandle,
        shards: u32,
        rounds: u32,
    ) -> Result<(Vec<RoundReport>, String)> {
        let mut jobs = JobServiceClient::new(connect(&url).await?);
        let mut fleet = Vec::new();
        for i in 0..shards {
            // One connection per worker.
            let mut client = WorkerServiceClient::new(connect(&url).await?);
            let id = client
                .register_worker(v1::RegisterWorkerRequest {
                    name: format!("fake-{i}"),
                    capabilities: Some(capabilities("supernet_round")),
                })
                .await?
                .into_inner()
                .worker_id;
            fleet.push(Worker { client, id });
        }
        let job_id = jobs
            .submit_job(request(shards, rounds))
            .await?
            .into_inner()
            .job
            .map(|j| j.job_id)
            .ok_or_else(|| anyhow!("SubmitJob returned no job"))?;
        let job: nat_store::JobId = job_id.parse().context("job id")?;
        println!("job {job_id}");
        let mut reports = Vec::new();

        // The warm-up: one shard from fresh weights uploads the 10 M document: version 1.
        let before = counters(&metrics);
        let rss_before = status_mb("VmRSS:");
        let t = Instant::now();
        let mut first = fleet[0].clone();
        let (task, sn) = lease_shard(&mut first).await?;
        if !sn.warmup || sn.base_version != 0 {
            bail!("the first task is not the warm-up: {sn:?}");
        }
        let lease_wall = t.elapsed().as_secs_f64();
        let clock = PhaseClock::start()?;
        let stored = upload(
            first.clone(),
            task.clone(),
            self.model.clone(),
            None,
            self.warmup_sha.clone(),
        )
        .await?;
        let upload_phase = clock.stop()?;
        let clock = PhaseClock::start()?;
        report(first, task.clone(), sn, stored).await?;
        let report_phase = clock.stop()?;
        let (commit_phase, row) = wait_for_version(&coordinator, job, 1).await?;
        let after = counters(&metrics);
        let collected_s =
            wait_for_collection(&coordinator, &job_id, std::slice::from_ref(&task)).await?;
        reports.push(RoundReport {
            label: "warm-up".into(),
            shards: 1,
            lease_wall,
            fetch: None,
            fetch_bytes: 0,
            upload: upload_phase,
            upload_bytes: self.model.doc.len() as u64,
            report: report_phase,
            commit: commit_phase,
            average_seconds: after.average_sum - before.average_sum,
            version: row.version,
            version_bytes: row.bytes,
            sent: after.sent - before.sent,
            received: after.received - before.received,
            rss_before_mb: rss_before,
            collected_s,
            load: load_average(),
        });
        print_round(&reports[reports.len() - 1]);

        for round in 0..rounds {
            let before = counters(&metrics);
            let rss_before = status_mb("VmRSS:");
            // Every worker leases one shard of the round.
            let t = Instant::now();
            let leased = all(fleet.clone(), |mut w| async move {
                lease_shard(&mut w).await.map(|(t, sn)| (w, t, sn))
            })
            .await?
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
            let lease_wall = t.elapsed().as_secs_f64();
            for (_, _, sn) in &leased {
                if sn.warmup || sn.round != round || sn.shards != shards {
                    bail!("round {round}: unexpected shard {sn:?}");
                }
            }
            let base = leased[0].2.base_version;

            let clock = PhaseClock::start()?;
            let fetched: Vec<u64> = all(leased.clone(), |(w, t, _)| fetch(w, t))
                .await?
                .into_iter()
                .collect::<Result<Vec<_>>>()?;
            let fetch_phase = clock.stop()?;

            let clock = PhaseClock::start()?;
            let model = self.model.clone();
            let digests = self.digests.clone();
            let uploaded = all(leased.clone(), move |(w, t, sn)| {
                let (model, sha) = (model.clone(), digests[sn.shard as usize].clone());
                async move {
                    upload(w.clone(), t.clone(), model, Some(sn.shard), sha)
                        .await
                        .map(|r| (w, t, sn, r))
                }
            })
            .await?
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
            let upload_phase = clock.stop()?;

            let clock = PhaseClock::start()?;
            all(uploaded, |(w, t, sn, r)| report(w, t, sn, r))
                .await?
                .into_iter()
                .collect::<Result<Vec<_>>>()?;
            let report_phase = clock.stop()?;

            let version = i64::try_from(base).unwrap_or(i64::MAX) + 1;
            let (commit_phase, row) = wait_for_version(&coordinator, job, version).await?;
            let after = counters(&metrics);
            let tasks: Vec<v1::Task> = leased.iter().map(|(_, t, _)| t.clone()).collect();
            let collected_s = wait_for_collection(&coordinator, &job_id, &tasks).await?;
            if after.average_count - before.average_count != 1.0 {
                bail!("round {round}: the coordinator recorded no (or several) averages");
            }
            reports.push(RoundReport {
                label: format!("round {round}"),
                shards: leased.len(),
                lease_wall,
                fetch: Some(fetch_phase),
                fetch_bytes: fetched.iter().sum(),
                upload: upload_phase,
                upload_bytes: self.model.doc.len() as u64 * leased.len() as u64,
                report: report_phase,
                commit: commit_phase,
                average_seconds: after.average_sum - before.average_sum,
                version: row.version,
                version_bytes: row.bytes,
                sent: after.sent - before.sent,
                received: after.received - before.received,
                rss_before_mb: rss_before,
                collected_s,
                load: load_average(),
            });
            print_round(&reports[reports.len() - 1]);
        }
        // Done measuring: the derive phase would come next.
        jobs.cancel_job(v1::CancelJobRequest {
            job_id: job_id.clone(),
            reason: "supernet_round: measured".into(),
        })
        .await?;
        Ok((reports, job_id))
    }
}

/// Waits (polling every 10 ms) until the uploads of `tasks` are deleted; returns the seconds
/// it took.
async fn wait_for_collection(c: &Coordinator, job_id: &str, tasks: &[v1::Task]) -> Result<f64> {
    let t = Instant::now();
    let mut keys = Vec::with_capacity(tasks.len());
    for task in tasks {
        let row = c.store.get_task(task.task_id.parse()?).await?;
        let payload: nat_schema::SupernetPayload =
            serde_json::from_value(row.payload).context("supernet payload")?;
        keys.push(payload.upload_key(job_id, &task.task_id, task.lease_token));
    }
    for key in keys {
        while c.blobs.head(&key).await?.is_some() {
            if t.elapsed() > PHASE_LIMIT {
                bail!("upload {key} not deleted within {PHASE_LIMIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Waits (polling every 10 ms) until version `version` is committed; the phase from the last
/// report to the committed row.
async fn wait_for_version(
    c: &Coordinator,
    job: nat_store::JobId,
    version: i64,
) -> Result<(Phase, nat_store::SupernetVersion)> {
    let clock = PhaseClock::start()?;
    let deadline = Instant::now() + PHASE_LIMIT;
    loop {
        if let Some(row) = c.store.latest_supernet_version(job).await? {
            if row.version >= version {
                if row.version != version {
                    bail!("version {} committed, {version} expected", row.version);
                }
                return Ok((clock.stop()?, row));
            }
        }
        if Instant::now() > deadline {
            bail!("version {version} not committed within {PHASE_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn print_round(r: &RoundReport) {
    let f = r.fetch.map_or_else(
        || "-".to_string(),
        |p| {
            format!(
                "{:.2} s, {:.0} MB/s",
                p.wall,
                mb(r.fetch_bytes as f64) / p.wall
            )
        },
    );
    println!(
        "{}: {} shards; lease {:.2} s; fetch {f}; upload {:.2} s ({:.0} MB/s); report {:.2} s; report → version {} committed {:.2} s (averaging + commit {:.2} s); load {}",
        r.label,
        r.shards,
        r.lease_wall,
        r.upload.wall,
        mb(r.upload_bytes as f64) / r.upload.wall,
        r.report.wall,
        r.version,
        r.commit.wall,
        r.average_seconds,
        r.load
    );
}

async fn print_report(
    (reports, job_id): &(Vec<RoundReport>, String),
    db: &Database,
    blob_dir: Option<&std::path::Path>,
    args: &Args,
) {
    println!();
    println!(
        "job {job_id}; {} shards per round; fake workers in this process (loopback gRPC)",
        args.shards
    );
    let phase = |p: &Phase| {
        format!(
            "{:.2} s · coord CPU {:.2} s · workers CPU {:.2} s · peak RSS {:.0} MB (+{:.0})",
            p.wall,
            p.coordinator_cpu,
            p.workers_cpu,
            p.peak_mb,
            p.peak_mb - p.start_rss_mb
        )
    };
    let mut rows: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let labels = [
        "lease (all shards leased; from the previous round's uploads deleted)",
        "fetch: wall · CPU · peak RSS (+ over the phase start)",
        "fetch: MB, MB/s",
        "upload: wall · CPU · peak RSS",
        "upload: MB, MB/s",
        "report: wall · CPU · peak RSS",
        "report → version committed: wall · CPU · peak RSS",
        "averaging + commit (nat_supernet_average_duration_seconds)",
        "version: number, bytes",
        "commit → the round's uploads deleted",
        "nat_supernet_bytes_sent_total (MB, this round)",
        "nat_supernet_bytes_received_total (MB, this round)",
        "total moved (MB)",
        "RSS before the round (MB)",
        "load average after (1, 5, 15 min)",
    ];
    for r in reports {
        let cells = [
            format!("{:.2} s", r.lease_wall),
            r.fetch.as_ref().map_or_else(|| "-".into(), phase),
            r.fetch.map_or_else(
                || "-".into(),
                |p| {
                    format!(
                        "{:.1} MB, {:.0} MB/s",
                        mb(r.fetch_bytes as f64),
                        mb(r.fetch_bytes as f64) / p.wall
                    )
                },
            ),
            phase(&r.upload),
            format!(
                "{:.1} MB, {:.0} MB/s",
                mb(r.upload_bytes as f64),
                mb(r.upload_bytes as f64) / r.upload.wall
            ),
            phase(&r.report),
            phase(&r.commit),
            format!("{:.2} s", r.average_seconds),
            format!("v{}, {} bytes", r.version, r.version_bytes),
            format!("{:.2} s", r.collected_s),
            format!("{:.1}", mb(r.sent)),
            format!("{:.1}", mb(r.received)),
            format!("{:.1}", mb(r.sent + r.received)),
            format!("{:.0}", r.rss_before_mb),
            r.load.clone(),
        ];
        for (i, c) in cells.into_iter().enumerate() {
            rows.entry(i).or_default().push(c);
        }
    }
    println!(
        "| | {} |",
        reports
            .iter()
            .map(|r| r.label.as_str())
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|{}", "---|".repeat(reports.len()));
    for (i, label) in labels.iter().enumerate() {
        println!(
            "| {label} | {} |",
            rows.get(&i).map(|c| c.join(" | ")).unwrap_or_default()
        );
    }
    if let Some(size) = db.size().await {
        println!("database at the end: {:.0} MB", mb(size as f64));
    }
    if let Some(dir) = blob_dir {
        println!(
            "blob directory at the end: {:.0} MB",
            mb(dir_bytes(dir) as f64)
        );
    }
    println!("load average at the end: {}", load_average());
}
