//! Simulated workers: tokio tasks that speak the real gRPC protocol (RegisterWorker, LeaseTask
//! long-poll, Heartbeat while holding, ReportResult), as `nat-load` does, plus what a chaos run
//! needs: failover over several coordinator URLs, retries while the coordinator or the database
//! is away, abrupt death (the task is aborted: its lease is neither reported nor extended), and
//! probes that send a duplicate or a stale report on purpose.
//!
//! A `train_eval` result is typed and deterministic: the accuracy comes from the architecture's
//! canonical hash (plus a little noise from the task's seed), params and multiply-adds from the
//! cost model of `nat-arch` for the task's budget and dataset shape, so an optimize job's
//! rewards mean something and the same architecture always scores about the same.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nat_proto::v1;
use serde::{Deserialize, Serialize};
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

type WorkerClient = v1::worker_service_client::WorkerServiceClient<Channel>;

/// Counters of a group of simulated workers (shared by its tasks; serialised by the
/// `sim-workers` subprocess for its parent).
#[derive(Debug, Default)]
pub struct SimStats {
    pub leased: AtomicU64,
    pub reported: AtomicU64,
    /// Reports answered FAILED_PRECONDITION (stale lease: expired and re-leased, or lost).
    pub stale_rejected: AtomicU64,
    /// Reports answered OK with `discarded = true`.
    pub discarded: AtomicU64,
    /// Duplicate reports sent on purpose, and how many were answered `duplicate = true`.
    pub duplicate_probes: AtomicU64,
    pub duplicate_acked: AtomicU64,
    /// Duplicate probes answered `duplicate = false` (counted twice: a violation).
    pub duplicate_accepted: AtomicU64,
    /// Reports with an older token sent on purpose after a success, and how many were refused.
    pub stale_probes: AtomicU64,
    pub stale_probe_refused: AtomicU64,
    /// Stale probes answered OK (a violation).
    pub stale_probe_accepted: AtomicU64,
    /// Reports refused with another code than FAILED_PRECONDITION (NOT_FOUND, …).
    pub report_refused_other: AtomicU64,
    /// Heartbeats that told the worker to stop its task.
    pub told_to_stop: AtomicU64,
    /// Calls that failed with a transport or server error and were retried.
    pub retried_calls: AtomicU64,
    /// Moves to the next coordinator URL.
    pub failovers: AtomicU64,
    /// Reports given up after retrying for `report_give_up`.
    pub reports_given_up: AtomicU64,
    /// Workers (re)registered.
    pub registered: AtomicU64,
    /// Latency samples (for percentiles before/during the flood), bounded.
    pub latencies: Mutex<VecDeque<Latency>>,
    /// Tasks whose report was refused as stale (bounded), to find them in the store later.
    pub stale_tasks: Mutex<Vec<String>>,
}

/// One call's latency.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Latency {
    /// Milliseconds since the Unix epoch when the call started.
    pub at_ms: i64,
    pub micros: u64,
    pub call: CallKind,
    /// Index (in [`SimConfig::urls`]) of the coordinator that answered.
    pub coord: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallKind {
    Lease,
    Report,
}

/// A plain copy of [`SimStats`] (what the subprocess writes and the figures print).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SimCounts {
    pub leased: u64,
    pub reported: u64,
    pub stale_rejected: u64,
    pub discarded: u64,
    pub duplicate_probes: u64,
    pub duplicate_acked: u64,
    pub duplicate_accepted: u64,
    pub stale_probes: u64,
    pub stale_probe_refused: u64,
    pub stale_probe_accepted: u64,
    pub report_refused_other: u64,
    pub told_to_stop: u64,
    pub retried_calls: u64,
    pub failovers: u64,
    pub reports_given_up: u64,
    pub registered: u64,
}

const MAX_LATENCIES: usize = 400_000;

impl SimStats {
    pub fn counts(&self) -> SimCounts {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SimCounts {
            leased: g(&self.leased),
            reported: g(&self.reported),
            stale_rejected: g(&self.stale_rejected),
            discarded: g(&self.discarded),
            duplicate_probes: g(&self.duplicate_probes),
            duplicate_acked: g(&self.duplicate_acked),
            duplicate_accepted: g(&self.duplicate_accepted),
            stale_probes: g(&self.stale_probes),
            stale_probe_refused: g(&self.stale_probe_refused),
            stale_probe_accepted: g(&self.stale_probe_accepted),
            report_refused_other: g(&self.report_refused_other),
            told_to_stop: g(&self.told_to_stop),
            retried_calls: g(&self.retried_calls),
            failovers: g(&self.failovers),
            reports_given_up: g(&self.reports_given_up),
            registered: g(&self.registered),
        }
    }

    fn latency(
        &self,
        started: chrono::DateTime<chrono::Utc>,
        took: Duration,
        call: CallKind,
        coord: usize,
    ) {
        if let Ok(mut l) = self.latencies.lock() {
            if l.len() >= MAX_LATENCIES {
                l.pop_front();
            }
            l.push_back(Latency {
                at_ms: started.timestamp_millis(),
                micros: u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
                call,
                coord,
            });
        }
    }

    /// Latencies (ms) of `call` that started in `[from_ms, to_ms)` (answered by coordinator
    /// `coord` when given), sorted.
    pub fn window(
        &self,
        call: CallKind,
        from_ms: i64,
        to_ms: i64,
        coord: Option<usize>,
    ) -> Vec<f64> {
        let mut v: Vec<f64> = self
            .latencies
            .lock()
            .map(|l| {
                l.iter()
                    .filter(|x| {
                        x.call == call
                            && x.at_ms >= from_ms
                            && x.at_ms < to_ms
                            && coord.is_none_or(|c| c == x.coord)
                    })
                    .map(|x| x.micros as f64 / 1000.0)
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by(f64::total_cmp);
        v
    }
}

impl SimCounts {
    pub fn add(&mut self, o: &SimCounts) {
        self.leased += o.leased;
        self.reported += o.reported;
        self.stale_rejected += o.stale_rejected;
        self.discarded += o.discarded;
        self.duplicate_probes += o.duplicate_probes;
        self.duplicate_acked += o.duplicate_acked;
        self.duplicate_accepted += o.duplicate_accepted;
        self.stale_probes += o.stale_probes;
        self.stale_probe_refused += o.stale_probe_refused;
        self.stale_probe_accepted += o.stale_probe_accepted;
        self.report_refused_other += o.report_refused_other;
        self.told_to_stop += o.told_to_stop;
        self.retried_calls += o.retried_calls;
        self.failovers += o.failovers;
        self.reports_given_up += o.reports_given_up;
        self.registered += o.registered;
    }
}

/// How a simulated worker behaves.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Coordinator URLs in failover order.
    pub urls: Vec<String>,
    /// Mean time a task is held before its report.
    pub hold: Duration,
    /// Fraction of successful reports followed by a duplicate probe.
    pub duplicate_probe_rate: f64,
    /// Fraction of successful reports followed by a stale-token probe.
    pub stale_probe_rate: f64,
    /// How long a report is retried while no coordinator answers.
    pub report_give_up: Duration,
}

/// The connections of one worker: one channel per URL (lazy), the one in use.
struct Conn {
    urls: Vec<String>,
    channels: Vec<Option<Channel>>,
    current: usize,
}

impl Conn {
    fn new(urls: &[String], start: usize) -> Conn {
        Conn {
            urls: urls.to_vec(),
            channels: vec![None; urls.len()],
            current: start % urls.len().max(1),
        }
    }

    fn client(&mut self) -> anyhow::Result<WorkerClient> {
        let i = self.current;
        if self.channels[i].is_none() {
            let ep = Endpoint::from_shared(self.urls[i].clone())?
                .connect_timeout(Duration::from_secs(1))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(2))
                .keep_alive_timeout(Duration::from_secs(2))
                .keep_alive_while_idle(true);
            self.channels[i] = Some(ep.connect_lazy());
        }
        match &self.channels[i] {
            Some(c) => Ok(WorkerClient::new(c.clone())),
            None => anyhow::bail!("no channel for {}", self.urls[i]),
        }
    }

    /// After a transport/availability error: the next URL (and a fresh channel for this one).
    fn fail_over(&mut self, stats: &SimStats) {
        self.channels[self.current] = None;
        if self.urls.len() > 1 {
            self.current = (self.current + 1) % self.urls.len();
            stats.failovers.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Errors worth retrying elsewhere: the coordinator is away, shutting down, or its database is.
fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::Unknown
            | Code::Internal
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::ResourceExhausted
    )
}

/// Runs one simulated worker until `stop` says so (or the task is aborted: a kill -9).
pub async fn run_worker(
    name: String,
    index: usize,
    config: Arc<SimConfig>,
    stats: Arc<SimStats>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut conn = Conn::new(&config.urls, index);
    let mut backoff = Duration::from_millis(100);
    // Register (retrying while no coordinator answers).
    let (worker_id, heartbeat_every) = loop {
        if *stop.borrow() {
            return;
        }
        match register(&mut conn, &name).await {
            Ok(r) => break r,
            Err(_) => {
                stats.retried_calls.fetch_add(1, Ordering::Relaxed);
                conn.fail_over(&stats);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    };
    stats.registered.fetch_add(1, Ordering::Relaxed);
    let mut rng_state = (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    // Workers start spread over one hold, as real trainings are not synchronised.
    tokio::time::sleep(config.hold.mul_f64(unit(&mut rng_state))).await;
    while !*stop.borrow() {
        let Ok(mut client) = conn.client() else {
            conn.fail_over(&stats);
            tokio::time::sleep(backoff).await;
            continue;
        };
        let started = chrono::Utc::now();
        let t0 = Instant::now();
        let leased = tokio::time::timeout(
            Duration::from_secs(8),
            client.lease_task(v1::LeaseTaskRequest {
                worker_id: worker_id.clone(),
                wait_ms: 1000,
                device: None,
                slot: 0,
            }),
        )
        .await;
        let task = match leased {
            Ok(Ok(r)) => {
                backoff = Duration::from_millis(100);
                r.into_inner().task
            }
            Ok(Err(status)) if retryable(status.code()) => {
                stats.retried_calls.fetch_add(1, Ordering::Relaxed);
                conn.fail_over(&stats);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
            Ok(Err(status)) => {
                // NOT_FOUND of the worker etc.: wait and try again (counted).
                stats.retried_calls.fetch_add(1, Ordering::Relaxed);
                tracing_like("lease refused", &status);
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(_) => {
                stats.retried_calls.fetch_add(1, Ordering::Relaxed);
                conn.fail_over(&stats);
                continue;
            }
        };
        let Some(task) = task else { continue };
        stats.latency(started, t0.elapsed(), CallKind::Lease, conn.current);
        stats.leased.fetch_add(1, Ordering::Relaxed);
        let hold = config
            .hold
            .mul_f64(0.5 + unit(&mut rng_state))
            .max(Duration::from_millis(1));
        if !hold_task(&mut conn, &worker_id, &task, hold, heartbeat_every, &stats).await {
            continue;
        }
        let outcome = outcome_of(&task);
        report(
            &mut conn,
            &worker_id,
            &task,
            outcome,
            &config,
            &stats,
            &mut rng_state,
        )
        .await;
    }
}

/// A uniform number in [0, 1) from a xorshift state (no shared RNG across tasks).
fn unit(state: &mut u64) -> f64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

fn tracing_like(what: &str, status: &tonic::Status) {
    if std::env::var_os("NAT_CHAOS_VERBOSE").is_some() {
        eprintln!("sim: {what}: {:?} {}", status.code(), status.message());
    }
}

async fn register(conn: &mut Conn, name: &str) -> anyhow::Result<(String, Duration)> {
    let mut client = conn.client()?;
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        client.register_worker(v1::RegisterWorkerRequest {
            name: name.to_string(),
            capabilities: Some(v1::WorkerCapabilities {
                devices: vec![],
                cpu_cores: 1,
                slots: 1,
                version: "nat-chaos".into(),
                hostname: "nat-chaos".into(),
                datasets: vec![],
                dataset_infos: vec![],
            }),
        }),
    )
    .await??
    .into_inner();
    let every = Duration::from_millis(u64::from(r.heartbeat_interval_ms.max(200)));
    Ok((r.worker_id, every))
}

/// Holds `task` for `hold`, heartbeating its lease. False when the coordinator said to stop.
async fn hold_task(
    conn: &mut Conn,
    worker_id: &str,
    task: &v1::Task,
    hold: Duration,
    every: Duration,
    stats: &SimStats,
) -> bool {
    let until = Instant::now() + hold;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        tokio::time::sleep(left.min(every)).await;
        if Instant::now() >= until {
            return true;
        }
        let Ok(mut client) = conn.client() else {
            continue;
        };
        let hb = tokio::time::timeout(
            Duration::from_secs(2),
            client.heartbeat(v1::HeartbeatRequest {
                worker_id: worker_id.to_string(),
                tasks: vec![v1::HeldTask {
                    task_id: task.task_id.clone(),
                    lease_token: task.lease_token,
                }],
            }),
        )
        .await;
        match hb {
            Ok(Ok(r)) => {
                if r.into_inner().stop_task_ids.contains(&task.task_id) {
                    stats.told_to_stop.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
            }
            Ok(Err(s)) if retryable(s.code()) => {
                stats.retried_calls.fetch_add(1, Ordering::Relaxed);
                conn.fail_over(stats);
            }
            Ok(Err(s)) => tracing_like("heartbeat refused", &s),
            Err(_) => {
                stats.retried_calls.fetch_add(1, Ordering::Relaxed);
                conn.fail_over(stats);
            }
        }
    }
}

/// Reports `outcome`, retrying while no coordinator answers; then maybe probes.
async fn report(
    conn: &mut Conn,
    worker_id: &str,
    task: &v1::Task,
    outcome: v1::report_result_request::Outcome,
    config: &SimConfig,
    stats: &SimStats,
    rng: &mut u64,
) {
    let request = v1::ReportResultRequest {
        worker_id: worker_id.to_string(),
        task_id: task.task_id.clone(),
        lease_token: task.lease_token,
        outcome: Some(outcome),
    };
    let started_at = Instant::now();
    let mut backoff = Duration::from_millis(100);
    loop {
        let Ok(mut client) = conn.client() else {
            conn.fail_over(stats);
            tokio::time::sleep(backoff).await;
            continue;
        };
        let started = chrono::Utc::now();
        let t0 = Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(8),
            client.report_result(request.clone()),
        )
        .await;
        match r {
            Ok(Ok(resp)) => {
                stats.latency(started, t0.elapsed(), CallKind::Report, conn.current);
                let resp = resp.into_inner();
                if resp.discarded {
                    stats.discarded.fetch_add(1, Ordering::Relaxed);
                } else {
                    stats.reported.fetch_add(1, Ordering::Relaxed);
                }
                if !resp.duplicate && !resp.discarded {
                    probe(&mut client, &request, config, stats, rng).await;
                }
                return;
            }
            Ok(Err(s)) if s.code() == Code::FailedPrecondition => {
                stats.stale_rejected.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut v) = stats.stale_tasks.lock() {
                    if v.len() < 10_000 {
                        v.push(task.task_id.clone());
                    }
                }
                return;
            }
            Ok(Err(s)) if retryable(s.code()) => {
                tracing_like("report retried", &s);
            }
            Ok(Err(s)) => {
                tracing_like("report refused", &s);
                stats.report_refused_other.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(_) => {}
        }
        stats.retried_calls.fetch_add(1, Ordering::Relaxed);
        if started_at.elapsed() >= config.report_give_up {
            stats.reports_given_up.fetch_add(1, Ordering::Relaxed);
            return;
        }
        conn.fail_over(stats);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// After an accepted report: sometimes the same report again (must be `duplicate = true`), and
/// sometimes one with an older token (must be refused).
async fn probe(
    client: &mut WorkerClient,
    request: &v1::ReportResultRequest,
    config: &SimConfig,
    stats: &SimStats,
    rng: &mut u64,
) {
    if unit(rng) < config.duplicate_probe_rate {
        stats.duplicate_probes.fetch_add(1, Ordering::Relaxed);
        if let Ok(Ok(r)) = tokio::time::timeout(
            Duration::from_secs(8),
            client.report_result(request.clone()),
        )
        .await
        {
            if r.into_inner().duplicate {
                stats.duplicate_acked.fetch_add(1, Ordering::Relaxed);
            } else {
                stats.duplicate_accepted.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    if unit(rng) < config.stale_probe_rate && request.lease_token > 1 {
        stats.stale_probes.fetch_add(1, Ordering::Relaxed);
        let mut stale = request.clone();
        stale.lease_token -= 1;
        match tokio::time::timeout(Duration::from_secs(8), client.report_result(stale)).await {
            Ok(Ok(_)) => {
                stats.stale_probe_accepted.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(s)) if !retryable(s.code()) => {
                stats.stale_probe_refused.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

/// The simulated result of a task.
pub fn outcome_of(task: &v1::Task) -> v1::report_result_request::Outcome {
    use v1::report_result_request::Outcome;
    match &task.payload {
        Some(v1::task::Payload::TrainEval(t)) => match simulated_result(t) {
            Ok(r) => Outcome::TrainEval(r),
            Err(e) => Outcome::Failure(v1::TaskFailure {
                reason: format!("simulated worker cannot cost the architecture: {e:#}"),
                retryable: false,
            }),
        },
        Some(v1::task::Payload::Supernet(_)) | None => Outcome::Failure(v1::TaskFailure {
            reason: "simulated worker runs train_eval tasks only".into(),
            retryable: false,
        }),
    }
}

/// Accuracy from the canonical hash (in [0.55, 0.90]) plus noise from the seed (±0.01);
/// params and multiply-adds from the cost model.
pub fn simulated_result(t: &v1::TrainEvalTask) -> anyhow::Result<v1::TrainEvalResult> {
    let genotype = nat_arch::Genotype::from_json_str(&t.genotype_json)?;
    let hash = genotype.canonical_hash();
    let prefix = hash.get(..12).unwrap_or("0");
    let h = u64::from_str_radix(prefix, 16).unwrap_or(0);
    let quality = (h % 1_000_000) as f64 / 1_000_000.0;
    let mut s = (t.seed ^ h ^ 0xA5A5_5A5A_1234_5678) | 1;
    let noise = (unit(&mut s) - 0.5) * 0.02;
    let accuracy = (0.55 + 0.35 * quality + noise).clamp(0.0, 1.0);
    let (params, madds) = match (&t.dataset_shape, &t.budget) {
        (Some(shape), Some(budget)) => {
            let spec = nat_arch::NetworkSpec::for_shape(
                nat_arch::DatasetShape {
                    channels: shape.channels,
                    image_size: shape.image_size,
                    classes: shape.classes,
                },
                u64::from(budget.init_channels),
                u64::from(budget.layers),
            );
            let cost = nat_arch::network_cost(&genotype, &spec)?;
            (cost.params(), cost.madds())
        }
        _ => (0, 0),
    };
    Ok(v1::TrainEvalResult {
        accuracy,
        loss: (1.0 - accuracy) * 2.0,
        params,
        madds,
        wall_seconds: 0.1,
        images_per_second: 1000.0,
    })
}

/// A group of simulated workers inside this process, each killable on its own.
pub struct SimFleet {
    pub config: Arc<SimConfig>,
    pub stats: Arc<SimStats>,
    workers: Vec<Option<tokio::task::JoinHandle<()>>>,
    names: Vec<String>,
    stop_tx: tokio::sync::watch::Sender<bool>,
    restarts: usize,
}

impl SimFleet {
    pub fn new(config: SimConfig) -> SimFleet {
        let (stop_tx, _) = tokio::sync::watch::channel(false);
        SimFleet {
            config: Arc::new(config),
            stats: Arc::new(SimStats::default()),
            workers: Vec::new(),
            names: Vec::new(),
            stop_tx,
            restarts: 0,
        }
    }

    /// Starts `n` more workers named `PREFIX-i`.
    pub fn spawn(&mut self, prefix: &str, n: usize) {
        for _ in 0..n {
            let i = self.workers.len();
            let name = format!("{prefix}-{i}");
            self.names.push(name.clone());
            self.workers.push(Some(self.start(name, i)));
        }
    }

    fn start(&self, name: String, i: usize) -> tokio::task::JoinHandle<()> {
        tokio::spawn(run_worker(
            name,
            i,
            self.config.clone(),
            self.stats.clone(),
            self.stop_tx.subscribe(),
        ))
    }

    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// kill -9 of worker `i`: its task is aborted where it stands (a lease in hand is neither
    /// reported nor extended; its connection is dropped).
    pub fn kill(&mut self, i: usize) -> bool {
        match self.workers.get_mut(i).and_then(Option::take) {
            Some(h) => {
                h.abort();
                true
            }
            None => false,
        }
    }

    /// Restarts a killed worker as a new registration (as a restarted process would).
    pub fn restart(&mut self, i: usize) -> bool {
        if self.workers.get(i).is_some_and(Option::is_none) {
            self.restarts += 1;
            let name = format!("{}-r{}", self.names[i], self.restarts);
            self.workers[i] = Some(self.start(name, i + 7919 * self.restarts));
            true
        } else {
            false
        }
    }

    /// Asks every worker to stop after its current task and waits (bounded) for them.
    pub async fn stop(&mut self) {
        let _ = self.stop_tx.send(true);
        for h in self.workers.iter_mut().filter_map(Option::take) {
            let abort = h.abort_handle();
            if tokio::time::timeout(Duration::from_secs(10), h)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}
