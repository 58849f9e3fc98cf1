//! The async side of the worker: registration, lease long-polls (one loop per slot), heartbeats,
//! progress and result reports, reconnection and draining.
//!
//! Protocol in short: the worker registers and gets a worker id, a lease duration and a heartbeat
//! interval; each free slot long-polls `LeaseTask`; a leased task goes to the slot thread; the
//! heartbeat lists every task in hand (extending their leases) and answers which ones to stop.
//! When the coordinator is unreachable every loop backs off (capped, jittered) and tries again;
//! training goes on, and the result is reported once the coordinator is back (it accepts it only
//! if the lease token is still the current one). NOT_FOUND for our worker id means the coordinator
//! forgot us: we register again. On the first shutdown signal the worker drains: no new leases,
//! tasks in hand finish and are reported; past the drain timeout (or on a second signal) they are
//! cancelled and handed back as retryable failures.
//!
//! Credentials: every call carries the worker's bearer token (when one is configured) over TLS
//! for `https://` coordinators. UNAUTHENTICATED or PERMISSION_DENIED from any call (a wrong,
//! expired or revoked token, a role other than `worker`, a rejected client certificate) is not
//! retried: the worker takes no new task, cancels the tasks in hand (their hand-back is tried
//! once; the coordinator re-leases them when their leases lapse) and [`run`] returns
//! [`DaemonError::Rejected`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nat_client::{AuthChannel, ConnectOptions};
use nat_proto::v1;
use nat_proto::v1::worker_service_client::WorkerServiceClient;
use nat_telemetry::{record, DeviceKind, TaskKind, WorkerRpc, WorkerTaskOutcome};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use tonic::{Code, Status};
use tracing::Instrument;

use crate::backoff::Backoff;
use crate::config::{SlotDevice, WorkerConfig};
use crate::runner::{Outcome, RunnerTask};
use crate::slot::{Progress, Slot, TaskRunner};

/// Timeout of every RPC except the lease long-poll.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// Progress is forwarded at most this often per task.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);
/// After the drain timeout, how long cancelled tasks get to stop and be reported.
const CANCEL_GRACE: Duration = Duration::from_secs(30);
/// How often GPU memory is sampled (nvidia-smi) for `/metrics`.
const GPU_MEMORY_INTERVAL: Duration = Duration::from_secs(10);
/// First reconnection delay.
const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// Longest one supernet weight transfer may take (tens of MB over a slow link).
const WEIGHTS_TIMEOUT: Duration = Duration::from_secs(300);
/// Chunk size of weight uploads (the coordinator accepts up to 4 MiB per message).
const WEIGHTS_CHUNK: usize = 1 << 20;

/// Errors that stop the daemon before it can serve.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("--coordinator: no URL given")]
    NoCoordinator,
    /// A coordinator URL that cannot be used with the connection flags (the message names the
    /// flag).
    #[error(transparent)]
    Coordinator(#[from] nat_client::ClientError),
    /// The coordinator rejected the worker's credentials (UNAUTHENTICATED or PERMISSION_DENIED);
    /// the message says which call, which coordinator and what to check.
    #[error("{0}")]
    Rejected(String),
    #[error("could not start slot {slot} thread: {source}")]
    SlotThread {
        slot: usize,
        #[source]
        source: std::io::Error,
    },
}

/// What the coordinator told us at registration.
#[derive(Debug, Clone)]
struct Registration {
    worker_id: String,
    heartbeat_interval: Duration,
}

/// A task in hand.
struct Held {
    lease_token: u64,
    cancel: Arc<AtomicBool>,
    /// Why the cancel flag was raised (reported with the hand-back).
    stop_reason: Option<String>,
}

/// Supernet weights kept by a worker: ((job id, version), the document).
type CachedWeights = ((String, u64), Arc<Vec<u8>>);

/// State shared by the slot loops and the heartbeat loop.
struct Shared {
    coordinators: Coordinators,
    config: WorkerConfig,
    capabilities: v1::WorkerCapabilities,
    registration: tokio::sync::Mutex<Option<Registration>>,
    held: Mutex<HashMap<String, Held>>,
    /// Set on the first shutdown signal: no new leases.
    draining: watch::Sender<bool>,
    /// Set when the daemon is about to exit: every loop stops at once.
    stopping: watch::Sender<bool>,
    /// Slots running a task (for the `nat_worker_slots` gauge).
    busy_slots: AtomicUsize,
    /// Set when the coordinator rejected the worker's credentials: the worker stops.
    rejected: watch::Sender<bool>,
    /// The supernet weights fetched last ((job id, version) and bytes): the worker's other
    /// slots start their shards of the same round from them without another fetch.
    weights: Mutex<Option<CachedWeights>>,
    /// Why (the first rejection), for [`DaemonError::Rejected`].
    rejection: Mutex<Option<String>>,
}

/// The coordinators of `--coordinator`, in order. Calls go to the current one; a call that fails
/// with UNAVAILABLE (no connection) moves the worker on to the next, round the list. The
/// coordinators share one database, so a registration and a lease are good at every one.
struct Coordinators {
    urls: Vec<String>,
    clients: Vec<WorkerServiceClient<AuthChannel>>,
    /// `clients[0]`, kept apart so that [`Coordinators::client`] needs no fallible lookup.
    first: WorkerServiceClient<AuthChannel>,
    current: AtomicUsize,
}

impl Coordinators {
    /// Lazy channels to `urls` (each connects on first use), with TLS for `https://` URLs and
    /// the token of `connect` on every call; `None` when `urls` is empty.
    fn new(urls: &[String], connect: &ConnectOptions) -> Result<Option<Self>, DaemonError> {
        let auth = connect.auth();
        let mut clients = Vec::with_capacity(urls.len());
        for url in urls {
            let endpoint = nat_client::endpoint(url, connect)?
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(20))
                .keep_alive_timeout(Duration::from_secs(10));
            clients.push(nat_client::worker_client(endpoint.connect_lazy(), &auth));
        }
        Ok(clients.first().cloned().map(|first| Coordinators {
            urls: urls.to_vec(),
            clients,
            first,
            current: AtomicUsize::new(0),
        }))
    }

    /// The URL of coordinator `index`.
    fn url(&self, index: usize) -> &str {
        self.urls.get(index).map(String::as_str).unwrap_or_default()
    }

    /// The current coordinator's index and a client for it.
    fn client(&self) -> (usize, WorkerServiceClient<AuthChannel>) {
        let index = self.current.load(Ordering::Relaxed);
        match self.clients.get(index) {
            Some(client) => (index, client.clone()),
            None => (0, self.first.clone()),
        }
    }

    /// After a failed call to coordinator `used`: moves on to the next one when `status` says
    /// that `used` could not be reached (once, however many calls failed on it at the same time).
    fn failed(&self, used: usize, status: &Status) {
        if status.code() != Code::Unavailable || self.clients.len() < 2 {
            return;
        }
        let next = (used + 1) % self.clients.len();
        if self
            .current
            .compare_exchange(used, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            tracing::warn!(
                from = self.urls.get(used).map(String::as_str).unwrap_or_default(),
                to = self.urls.get(next).map(String::as_str).unwrap_or_default(),
                error = %status.message(),
                "coordinator unreachable; moving on to the next one"
            );
        }
    }
}

/// Resolves when `flag` becomes true.
async fn raised(flag: &watch::Sender<bool>) {
    let mut receiver = flag.subscribe();
    // An error means the sender is gone, which cannot happen while `flag` is borrowed.
    let _ = receiver.wait_for(|value| *value).await;
}

impl Shared {
    fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// When `status` says the coordinator rejected the worker's credentials (UNAUTHENTICATED,
    /// PERMISSION_DENIED): records why (the first time), stops leasing, cancels the tasks in
    /// hand and returns true. Such a call is never retried.
    fn credentials_rejected(&self, rpc: &str, used: usize, status: &Status) -> bool {
        let what = match status.code() {
            Code::Unauthenticated => {
                "check --token / --token-file (NAT_TOKEN, NAT_TOKEN_FILE): a missing, wrong, \
                 expired or revoked token"
            }
            Code::PermissionDenied => {
                "the token's role must be `worker`, or the worker belongs to another credential"
            }
            _ => return false,
        };
        let message = format!(
            "the coordinator at {} rejected this worker's credentials on {rpc}: {} ({}); {what}",
            self.coordinators.url(used),
            status.message(),
            if status.code() == Code::Unauthenticated {
                "UNAUTHENTICATED"
            } else {
                "PERMISSION_DENIED"
            },
        );
        {
            let mut first = self
                .rejection
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if first.is_some() {
                return true;
            }
            *first = Some(message.clone());
        }
        tracing::error!(rpc, code = ?status.code(), "{message}; stopping");
        self.draining.send_replace(true);
        self.rejected.send_replace(true);
        self.stop_all("worker stopping: the coordinator rejected its credentials");
        true
    }

    /// The current registration, registering (with backoff) when there is none. `None` when
    /// the daemon stops first.
    async fn registration(&self) -> Option<Registration> {
        let mut current = self.registration.lock().await;
        if let Some(registration) = current.as_ref() {
            return Some(registration.clone());
        }
        if *self.rejected.borrow() {
            return None;
        }
        let mut backoff = Backoff::new(BACKOFF_BASE, self.config.max_backoff);
        loop {
            let request = v1::RegisterWorkerRequest {
                name: self.config.name.clone(),
                capabilities: Some(self.capabilities.clone()),
            };
            let (used, mut client) = self.coordinators.client();
            let response = tokio::select! {
                response = tokio::time::timeout(RPC_TIMEOUT, client.register_worker(request)) => response,
                () = raised(&self.stopping) => return None,
            };
            match flatten(response) {
                Ok(response) => {
                    let response = response.into_inner();
                    let heartbeat_ms = if response.heartbeat_interval_ms == 0 {
                        // Heartbeat well within the lease when the coordinator names no interval.
                        (response.lease_duration_ms / 3).max(500)
                    } else {
                        response.heartbeat_interval_ms
                    };
                    let registration = Registration {
                        worker_id: response.worker_id,
                        heartbeat_interval: Duration::from_millis(u64::from(heartbeat_ms)),
                    };
                    tracing::info!(
                        worker_id = %registration.worker_id,
                        lease_duration_ms = response.lease_duration_ms,
                        heartbeat_interval_ms = heartbeat_ms,
                        attempts = backoff.attempts() + 1,
                        "registered with the coordinator"
                    );
                    *current = Some(registration.clone());
                    return Some(registration);
                }
                Err(status) => {
                    record::worker_rpc_error(WorkerRpc::Register);
                    if self.credentials_rejected("register", used, &status) {
                        return None;
                    }
                    self.coordinators.failed(used, &status);
                    let delay = backoff.next_delay();
                    log_unreachable("register", &status, backoff.attempts(), delay);
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = raised(&self.stopping) => return None,
                    }
                }
            }
        }
    }

    /// The coordinator does not know `worker_id` any more: register again on next use.
    async fn forget_registration(&self, worker_id: &str) {
        let mut current = self.registration.lock().await;
        if current.as_ref().map(|r| r.worker_id.as_str()) == Some(worker_id) {
            tracing::warn!(
                worker_id,
                "the coordinator does not know this worker; registering again"
            );
            *current = None;
        }
    }

    fn held_tasks(&self) -> Vec<v1::HeldTask> {
        let held = self
            .held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        held.iter()
            .map(|(task_id, held)| v1::HeldTask {
                task_id: task_id.clone(),
                lease_token: held.lease_token,
            })
            .collect()
    }

    fn stop_task(&self, task_id: &str, reason: &str) {
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(task) = held.get_mut(task_id) {
            if task.stop_reason.is_none() {
                tracing::info!(task_id, reason, "stopping task");
                task.stop_reason = Some(reason.to_owned());
            }
            task.cancel.store(true, Ordering::SeqCst);
        }
    }

    fn stop_all(&self, reason: &str) {
        let ids: Vec<String> = {
            let held = self
                .held
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            held.keys().cloned().collect()
        };
        for task_id in ids {
            self.stop_task(&task_id, reason);
        }
    }

    /// A slot started (`true`) or ended (`false`) a task: updates the slot gauges.
    fn slot_busy(&self, busy: bool) {
        let now = if busy {
            self.busy_slots.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            self.busy_slots.fetch_sub(1, Ordering::SeqCst) - 1
        };
        record_slots(now, self.config.slots.len());
    }

    fn in_hand(&self) -> usize {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }
}

fn record_slots(busy: usize, total: usize) {
    let busy = busy.min(total);
    let as_u32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    record::worker_slots(as_u32(busy), as_u32(total - busy));
}

fn flatten<T>(
    response: Result<Result<tonic::Response<T>, Status>, tokio::time::error::Elapsed>,
) -> Result<tonic::Response<T>, Status> {
    response.unwrap_or_else(|_| Err(Status::deadline_exceeded("no answer in time")))
}

fn log_unreachable(what: &str, status: &Status, attempts: u32, delay: Duration) {
    // Loud on the first failure, then quiet until it recovers (and every 10th attempt).
    if attempts <= 1 || attempts.is_multiple_of(10) {
        tracing::warn!(
            rpc = what,
            code = ?status.code(),
            error = %status.message(),
            attempts,
            retry_in_ms = delay.as_millis() as u64,
            "coordinator unreachable; retrying"
        );
    } else {
        tracing::debug!(rpc = what, code = ?status.code(), attempts, "coordinator still unreachable");
    }
}

/// Capabilities sent at registration: devices, cores, slots and the datasets found under the
/// data dir (names and, in `dataset_infos`, shapes and sizes).
pub fn capabilities(
    config: &WorkerConfig,
    datasets: &[nat_data::DatasetInfo],
) -> v1::WorkerCapabilities {
    let gpus = crate::system::gpu_info();
    let devices = config
        .slots
        .iter()
        .map(|slot| match slot {
            SlotDevice::Cpu => v1::Device {
                kind: v1::DeviceKind::Cpu as i32,
                index: 0,
                model: crate::system::cpu_model().unwrap_or_default(),
                memory_bytes: 0,
                name: slot.name(),
            },
            SlotDevice::Cuda(index) => {
                let info = gpus.iter().find(|gpu| gpu.index == *index);
                v1::Device {
                    kind: v1::DeviceKind::Cuda as i32,
                    index: u32::try_from(*index).unwrap_or(u32::MAX),
                    model: info.map(|gpu| gpu.name.clone()).unwrap_or_default(),
                    memory_bytes: info.map(|gpu| gpu.memory_bytes).unwrap_or(0),
                    name: slot.name(),
                }
            }
        })
        .collect();
    v1::WorkerCapabilities {
        devices,
        cpu_cores: u32::try_from(config.cpu_cores).unwrap_or(u32::MAX),
        slots: u32::try_from(config.slots.len()).unwrap_or(u32::MAX),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        hostname: crate::system::hostname().unwrap_or_default(),
        datasets: datasets.iter().map(|d| d.name.clone()).collect(),
        dataset_infos: datasets
            .iter()
            .map(crate::runner::dataset_info_to_proto)
            .collect(),
    }
}

fn lease_device(slot: SlotDevice) -> v1::Device {
    let (kind, index) = match slot {
        SlotDevice::Cpu => (v1::DeviceKind::Cpu, 0),
        SlotDevice::Cuda(index) => (v1::DeviceKind::Cuda, index),
    };
    v1::Device {
        kind: kind as i32,
        index: u32::try_from(index).unwrap_or(u32::MAX),
        name: slot.name(),
        ..v1::Device::default()
    }
}

/// Runs the worker until `signals` delivers a shutdown request and the drain is over.
///
/// `make_runner(slot_index, device)` builds a slot's runner on that slot's thread. Each message on
/// `signals` is one SIGTERM/SIGINT: the first starts the drain, the second hands back at once.
pub async fn run<R, F>(
    config: WorkerConfig,
    capabilities: v1::WorkerCapabilities,
    make_runner: F,
    mut signals: mpsc::Receiver<()>,
) -> Result<(), DaemonError>
where
    R: TaskRunner<Task = RunnerTask, Outcome = Outcome>,
    F: Fn(usize, SlotDevice) -> Result<R, String> + Clone + Send + 'static,
{
    let coordinators = Coordinators::new(&config.coordinators, &config.connect)?
        .ok_or(DaemonError::NoCoordinator)?;
    let (draining, _) = watch::channel(false);
    let (stopping, _) = watch::channel(false);
    let (rejected, _) = watch::channel(false);
    let shared = Arc::new(Shared {
        coordinators,
        config: config.clone(),
        capabilities,
        registration: tokio::sync::Mutex::new(None),
        held: Mutex::new(HashMap::new()),
        draining,
        stopping,
        busy_slots: AtomicUsize::new(0),
        rejected,
        rejection: Mutex::new(None),
        weights: Mutex::new(None),
    });
    record_slots(0, config.slots.len());

    let mut slot_loops = tokio::task::JoinSet::new();
    for (index, device) in config.slots.iter().copied().enumerate() {
        let factory = make_runner.clone();
        let slot = Slot::<R>::spawn(index, move || factory(index, device)).map_err(|source| {
            DaemonError::SlotThread {
                slot: index,
                source,
            }
        })?;
        slot_loops.spawn(slot_loop(shared.clone(), slot, device));
    }
    let heartbeat = tokio::spawn(heartbeat_loop(shared.clone()));
    let gpu_indexes: Vec<u32> = config
        .slots
        .iter()
        .filter_map(|slot| match slot {
            SlotDevice::Cuda(index) => u32::try_from(*index).ok(),
            SlotDevice::Cpu => None,
        })
        .collect();
    let gpu_memory = (!gpu_indexes.is_empty())
        .then(|| tokio::spawn(gpu_memory_loop(shared.clone(), gpu_indexes)));
    tracing::info!(
        coordinator = %config.coordinators.join(","),
        slots = config.slots.len(),
        devices = %config.slots.iter().map(|s| s.name()).collect::<Vec<_>>().join(","),
        threads = config.threads,
        data_dir = %config.data_dir.display(),
        "nat-worker started"
    );

    // Serve until the first signal (or until every slot loop ended on its own, or the
    // coordinator rejected the worker's credentials).
    tokio::select! {
        _ = signals.recv() => {}
        () = join_all(&mut slot_loops) => {}
        () = raised(&shared.rejected) => {}
    }
    shared.draining.send_replace(true);
    if !*shared.rejected.borrow() {
        tracing::info!(
            tasks_in_hand = shared.in_hand(),
            drain_timeout_s = config.drain_timeout.as_secs_f64(),
            "draining: no new leases, finishing tasks in hand"
        );
    }
    // A rejected worker has cancelled its tasks already: it only waits for them to stop.
    let drained = tokio::select! {
        () = join_all(&mut slot_loops) => true,
        () = tokio::time::sleep(config.drain_timeout) => false,
        _ = signals.recv() => false,
    };
    if !drained {
        tracing::warn!(
            tasks_in_hand = shared.in_hand(),
            "drain cut short; cancelling tasks in hand and handing them back"
        );
        shared.stop_all("worker shutting down: task handed back before it finished");
        if tokio::time::timeout(CANCEL_GRACE, join_all(&mut slot_loops))
            .await
            .is_err()
        {
            tracing::error!("tasks did not stop within the grace period; exiting anyway");
        }
    }
    shared.stopping.send_replace(true);
    slot_loops.abort_all();
    heartbeat.abort();
    if let Some(gpu_memory) = gpu_memory {
        gpu_memory.abort();
    }
    let rejection = shared
        .rejection
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take();
    if let Some(message) = rejection {
        return Err(DaemonError::Rejected(message));
    }
    tracing::info!("nat-worker stopped");
    Ok(())
}

async fn join_all(set: &mut tokio::task::JoinSet<()>) {
    while let Some(result) = set.join_next().await {
        if let Err(error) = result {
            if error.is_panic() {
                tracing::error!(error = %error, "slot loop panicked");
            }
        }
    }
}

/// Leases tasks for one slot until the drain starts.
async fn slot_loop<R>(shared: Arc<Shared>, slot: Slot<R>, device: SlotDevice)
where
    R: TaskRunner<Task = RunnerTask, Outcome = Outcome>,
{
    let mut backoff = Backoff::new(BACKOFF_BASE, shared.config.max_backoff);
    let wait_ms = u32::try_from(shared.config.lease_wait.as_millis()).unwrap_or(u32::MAX);
    loop {
        if shared.is_draining() || shared.is_stopping() {
            return;
        }
        // A worker that cannot reach the coordinator stops trying to register once it drains.
        let registration = tokio::select! {
            registration = shared.registration() => registration,
            () = raised(&shared.draining) => None,
        };
        let Some(registration) = registration else {
            return;
        };
        let request = v1::LeaseTaskRequest {
            worker_id: registration.worker_id.clone(),
            wait_ms,
            device: Some(lease_device(device)),
            slot: u32::try_from(slot.index()).unwrap_or(u32::MAX),
        };
        let (used, mut client) = shared.coordinators.client();
        // A long-poll in flight is not abandoned when the drain starts: a task it returns is
        // handed back at once rather than left leased until its lease expires.
        let response = tokio::select! {
            response = tokio::time::timeout(
                shared.config.lease_wait + RPC_TIMEOUT,
                client.lease_task(request),
            ) => flatten(response),
            () = raised(&shared.stopping) => return,
        };
        match response {
            Ok(response) => {
                backoff.reset();
                if let Some(task) = response.into_inner().task {
                    handle_task(&shared, &slot, device, &registration, task).await;
                }
            }
            Err(status) if status.code() == Code::NotFound => {
                record::worker_rpc_error(WorkerRpc::LeaseTask);
                shared.forget_registration(&registration.worker_id).await;
            }
            Err(status) if shared.credentials_rejected("lease_task", used, &status) => {
                record::worker_rpc_error(WorkerRpc::LeaseTask);
                return;
            }
            Err(status) => {
                record::worker_rpc_error(WorkerRpc::LeaseTask);
                shared.coordinators.failed(used, &status);
                let delay = backoff.next_delay();
                log_unreachable("lease_task", &status, backoff.attempts(), delay);
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = raised(&shared.draining) => {}
                }
            }
        }
    }
}

/// Runs one leased task on `slot` inside a `task` span (job, task and worker ids, slot and
/// device: every log line about the task carries them) and reports its outcome.
async fn handle_task<R>(
    shared: &Arc<Shared>,
    slot: &Slot<R>,
    device: SlotDevice,
    registration: &Registration,
    task: v1::Task,
) where
    R: TaskRunner<Task = RunnerTask, Outcome = Outcome>,
{
    let span = tracing::info_span!(
        "task",
        job_id = %task.job_id,
        task_id = %task.task_id,
        worker_id = %registration.worker_id,
        attempt = task.attempt,
        slot = slot.index(),
        device = %device.name(),
    );
    shared.slot_busy(true);
    run_task(shared, slot, device, registration, task, span.clone())
        .instrument(span)
        .await;
    shared.slot_busy(false);
}

async fn run_task<R>(
    shared: &Arc<Shared>,
    slot: &Slot<R>,
    device: SlotDevice,
    registration: &Registration,
    task: v1::Task,
    span: tracing::Span,
) where
    R: TaskRunner<Task = RunnerTask, Outcome = Outcome>,
{
    let kind = match &task.payload {
        Some(v1::task::Payload::Supernet(_)) => TaskKind::Supernet,
        Some(v1::task::Payload::TrainEval(_)) => TaskKind::TrainEval,
        None => TaskKind::Other,
    };
    let device_kind = DeviceKind::from_device(&device.name());
    let task_id = task.task_id.clone();
    let checkpoint = match &task.payload {
        Some(v1::task::Payload::TrainEval(payload)) if payload.checkpointed => {
            let key = if payload.checkpoint_key.is_empty() {
                &task.task_id
            } else {
                &payload.checkpoint_key
            };
            crate::runner::checkpoint_path(&shared.config.checkpoint_dir, key).ok()
        }
        _ => None,
    };
    let lease_token = task.lease_token;
    let cancel = Arc::new(AtomicBool::new(false));
    shared
        .held
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .insert(
            task_id.clone(),
            Held {
                lease_token,
                cancel: cancel.clone(),
                stop_reason: None,
            },
        );
    tracing::info!("task leased");
    let started = Instant::now();

    // A supernet shard starts from its base version: fetched before the slot starts (an
    // attempt whose lease is gone is dropped: the coordinator re-leased it).
    let base_weights = match &task.payload {
        Some(v1::task::Payload::Supernet(p)) if p.base_version > 0 && !shared.is_draining() => {
            match fetch_weights(shared, registration, &task, p.base_version).await {
                Ok(bytes) => Some(bytes),
                Err(TransferError::LeaseLost(reason)) => {
                    tracing::warn!(%reason, "supernet weights not fetched: the lease is gone; dropping the task");
                    forget_task(shared, &task_id);
                    return;
                }
                Err(TransferError::Failed(reason)) => {
                    let outcome = Outcome::Failed {
                        reason: format!(
                            "supernet: fetching weight version {}: {reason}",
                            p.base_version
                        ),
                        retryable: true,
                    };
                    report_result(shared, &task_id, lease_token, outcome).await;
                    forget_task(shared, &task_id);
                    return;
                }
            }
        }
        _ => None,
    };
    let task = RunnerTask { task, base_weights };
    let outcome = if shared.is_draining() {
        Outcome::Cancelled
    } else {
        match slot.start(task, cancel.clone(), span) {
            Ok(running) => {
                follow_task(
                    shared,
                    registration,
                    &task_id,
                    lease_token,
                    &cancel,
                    running,
                )
                .await
            }
            Err(error) => Outcome::Failed {
                reason: error.to_string(),
                retryable: true,
            },
        }
    };
    let stop_reason = shared
        .held
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get(&task_id)
        .and_then(|held| held.stop_reason.clone());
    let elapsed = started.elapsed();
    let label = match &outcome {
        Outcome::TrainEval(_) | Outcome::Supernet(..) => WorkerTaskOutcome::Succeeded,
        Outcome::Cancelled => WorkerTaskOutcome::Cancelled,
        Outcome::Failed { .. } if stop_reason.is_some() => WorkerTaskOutcome::Cancelled,
        Outcome::Failed { .. } => WorkerTaskOutcome::Failed,
    };
    record::worker_task_finished(kind, device_kind, label, elapsed);
    let outcome = match outcome {
        Outcome::Cancelled => Outcome::Failed {
            reason: stop_reason.unwrap_or_else(|| {
                "worker shutting down: task handed back before it started".to_owned()
            }),
            retryable: true,
        },
        other => other,
    };
    match &outcome {
        Outcome::TrainEval(result) => tracing::info!(
            accuracy = result.accuracy,
            params = result.params,
            seconds = started.elapsed().as_secs_f64(),
            "task finished"
        ),
        Outcome::Supernet(result, _) => tracing::info!(
            pairs = result.scores.len(),
            candidates = result.accuracies.len(),
            steps = result.train_steps,
            seconds = started.elapsed().as_secs_f64(),
            "task finished"
        ),
        Outcome::Failed { reason, retryable } => {
            tracing::warn!(reason = %reason, retryable, "task failed");
        }
        Outcome::Cancelled => {}
    }
    // A shard's weights go up before its report names them.
    let outcome = match outcome {
        // A derive screening trains nothing: no weights to upload.
        Outcome::Supernet(result, weights) if weights.is_empty() => {
            Outcome::Supernet(result, weights)
        }
        Outcome::Supernet(mut result, weights) => {
            match upload_weights(shared, registration, &task_id, lease_token, &weights).await {
                Ok((bytes, sha256)) => {
                    result.weights_bytes = bytes;
                    result.weights_sha256 = sha256;
                    Outcome::Supernet(result, Vec::new())
                }
                Err(TransferError::LeaseLost(reason)) => {
                    tracing::warn!(%reason, "supernet weights not uploaded: the lease is gone; dropping the result");
                    forget_task(shared, &task_id);
                    return;
                }
                Err(TransferError::Failed(reason)) => Outcome::Failed {
                    reason: format!("supernet: uploading the weights: {reason}"),
                    retryable: true,
                },
            }
        }
        other => other,
    };
    let succeeded = matches!(outcome, Outcome::TrainEval(_) | Outcome::Supernet(..));
    let accepted = report_result(shared, &task_id, lease_token, outcome).await;
    if let (true, true, Some(dir)) = (succeeded, accepted, checkpoint) {
        // The task is done for good: its checkpoints are no longer needed.
        if let Err(error) = std::fs::remove_dir_all(&dir) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), error = %error, "could not remove checkpoints");
            }
        }
    }
    shared
        .held
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .remove(&task_id);
}

/// Waits for the slot's outcome, forwarding progress (throttled) meanwhile.
async fn follow_task(
    shared: &Arc<Shared>,
    registration: &Registration,
    task_id: &str,
    lease_token: u64,
    cancel: &AtomicBool,
    running: crate::slot::RunningTask<Outcome>,
) -> Outcome {
    let crate::slot::RunningTask {
        mut outcome,
        mut progress,
    } = running;
    let mut last_sent: Option<Instant> = None;
    let mut progress_open = true;
    loop {
        tokio::select! {
            result = &mut outcome => {
                return result.unwrap_or_else(|_| Outcome::Failed {
                    reason: "the slot thread dropped the task".to_owned(),
                    retryable: true,
                });
            }
            changed = progress.changed(), if progress_open => {
                if changed.is_err() {
                    progress_open = false;
                    continue;
                }
                if last_sent.is_some_and(|at| at.elapsed() < PROGRESS_INTERVAL) {
                    continue;
                }
                let latest = *progress.borrow_and_update();
                if let Some(latest) = latest {
                    last_sent = Some(Instant::now());
                    if send_progress(shared, registration, task_id, lease_token, latest).await {
                        cancel.store(true, Ordering::SeqCst);
                        shared.stop_task(task_id, "stopped at the coordinator's request (cancelled or lease lost)");
                    }
                }
            }
        }
    }
}

/// Sends one progress report; true when the coordinator says to stop.
async fn send_progress(
    shared: &Shared,
    registration: &Registration,
    task_id: &str,
    lease_token: u64,
    progress: Progress,
) -> bool {
    let message = if progress.epochs > 0 {
        format!(
            "epoch {}/{} loss {:.4} acc {:.3}",
            progress.epoch, progress.epochs, progress.train_loss, progress.train_accuracy
        )
    } else {
        format!("{:.0}%", progress.fraction * 100.0)
    };
    let finite = |value: f64| if value.is_finite() { value } else { 0.0 };
    let request = v1::ReportProgressRequest {
        worker_id: registration.worker_id.clone(),
        task_id: task_id.to_owned(),
        lease_token,
        fraction: finite(progress.fraction).clamp(0.0, 1.0),
        epoch: progress.epoch,
        train_loss: finite(progress.train_loss),
        train_accuracy: finite(progress.train_accuracy).clamp(0.0, 1.0),
        message,
        epochs: progress.epochs,
        step: progress.step,
    };
    let (used, mut client) = shared.coordinators.client();
    match flatten(
        tokio::time::timeout(Duration::from_secs(3), client.report_progress(request)).await,
    ) {
        Ok(response) => response.into_inner().stop,
        Err(status) if shared.credentials_rejected("report_progress", used, &status) => {
            record::worker_rpc_error(WorkerRpc::ReportProgress);
            true
        }
        Err(status) if status.code() == Code::FailedPrecondition => {
            record::worker_rpc_error(WorkerRpc::ReportProgress);
            true
        }
        Err(status) => {
            record::worker_rpc_error(WorkerRpc::ReportProgress);
            tracing::debug!(task_id, code = ?status.code(), "progress not delivered");
            false
        }
    }
}

/// Reports an outcome, retrying while the coordinator is unreachable (up to `report_give_up`).
/// True when the coordinator accepted it.
async fn report_result(shared: &Shared, task_id: &str, lease_token: u64, outcome: Outcome) -> bool {
    let body = match outcome {
        Outcome::TrainEval(result) => v1::report_result_request::Outcome::TrainEval(result),
        Outcome::Supernet(result, _) => v1::report_result_request::Outcome::Supernet(*result),
        Outcome::Failed { reason, retryable } => {
            v1::report_result_request::Outcome::Failure(v1::TaskFailure {
                reason: truncate(reason, 4000),
                retryable,
            })
        }
        Outcome::Cancelled => v1::report_result_request::Outcome::Failure(v1::TaskFailure {
            reason: "cancelled".to_owned(),
            retryable: true,
        }),
    };
    let started = Instant::now();
    let mut backoff = Backoff::new(BACKOFF_BASE, shared.config.max_backoff);
    loop {
        let Some(registration) = shared.registration().await else {
            tracing::warn!(task_id, "exiting before the result could be reported");
            return false;
        };
        let request = v1::ReportResultRequest {
            worker_id: registration.worker_id.clone(),
            task_id: task_id.to_owned(),
            lease_token,
            outcome: Some(body.clone()),
        };
        let (used, mut client) = shared.coordinators.client();
        let response = tokio::select! {
            response = tokio::time::timeout(RPC_TIMEOUT, client.report_result(request)) => flatten(response),
            () = raised(&shared.stopping) => {
                tracing::warn!(task_id, "exiting before the result could be reported");
                return false;
            }
        };
        if let Err(status) = &response {
            record::worker_rpc_error(WorkerRpc::ReportResult);
            shared.coordinators.failed(used, status);
        }
        match response {
            Ok(response) => {
                let r = response.get_ref();
                if r.discarded {
                    tracing::warn!(
                        task_id,
                        duplicate = r.duplicate,
                        "result discarded: the task's job had already ended"
                    );
                } else {
                    tracing::info!(task_id, duplicate = r.duplicate, "result reported");
                }
                return true;
            }
            Err(status) if shared.credentials_rejected("report_result", used, &status) => {
                tracing::warn!(
                    task_id,
                    "result not reported: the coordinator rejected the worker's credentials"
                );
                return false;
            }
            Err(status) if status.code() == Code::NotFound && mentions_worker(&status) => {
                shared.forget_registration(&registration.worker_id).await;
            }
            Err(status)
                if matches!(
                    status.code(),
                    Code::FailedPrecondition | Code::NotFound | Code::InvalidArgument
                ) =>
            {
                tracing::warn!(
                    task_id,
                    code = ?status.code(),
                    error = %status.message(),
                    "result rejected by the coordinator; dropping it"
                );
                return false;
            }
            Err(status) => {
                if started.elapsed() >= shared.config.report_give_up {
                    tracing::error!(
                        task_id,
                        error = %status.message(),
                        "giving up reporting the result; the coordinator will re-lease the task"
                    );
                    return false;
                }
                let delay = backoff.next_delay();
                log_unreachable("report_result", &status, backoff.attempts(), delay);
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = raised(&shared.stopping) => {}
                }
            }
        }
    }
}

/// Why a weight transfer did not happen.
enum TransferError {
    /// The lease is stale or the task ended (FAILED_PRECONDITION): drop the task.
    LeaseLost(String),
    /// Anything else, after retries.
    Failed(String),
}

/// Removes a task from the tasks in hand (it ends without a report).
fn forget_task(shared: &Shared, task_id: &str) {
    shared
        .held
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .remove(task_id);
}

/// Retries `call` while the coordinator is unreachable (up to `report_give_up`); a refusal
/// that another try cannot change ends it at once.
async fn with_retries<T, F, Fut>(
    shared: &Shared,
    what: &'static str,
    mut call: F,
) -> Result<T, TransferError>
where
    F: FnMut(WorkerServiceClient<AuthChannel>) -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    let started = Instant::now();
    let mut backoff = Backoff::new(BACKOFF_BASE, shared.config.max_backoff);
    loop {
        let (used, client) = shared.coordinators.client();
        let result = tokio::select! {
            r = tokio::time::timeout(WEIGHTS_TIMEOUT, call(client)) => match r {
                Ok(r) => r,
                Err(_) => Err(Status::deadline_exceeded(format!("{what} took over {WEIGHTS_TIMEOUT:?}"))),
            },
            () = raised(&shared.stopping) => return Err(TransferError::Failed("the worker is stopping".into())),
        };
        match result {
            Ok(value) => return Ok(value),
            Err(status) => {
                shared.coordinators.failed(used, &status);
                match status.code() {
                    Code::FailedPrecondition | Code::NotFound => {
                        return Err(TransferError::LeaseLost(status.message().to_string()))
                    }
                    Code::InvalidArgument | Code::PermissionDenied | Code::Unauthenticated => {
                        return Err(TransferError::Failed(format!(
                            "{what} refused ({:?}): {}",
                            status.code(),
                            status.message()
                        )))
                    }
                    _ if started.elapsed() >= shared.config.report_give_up => {
                        return Err(TransferError::Failed(format!(
                            "{what}: {}",
                            status.message()
                        )))
                    }
                    _ => {
                        let delay = backoff.next_delay();
                        log_unreachable(what, &status, backoff.attempts(), delay);
                        tokio::select! {
                            () = tokio::time::sleep(delay) => {}
                            () = raised(&shared.stopping) => {}
                        }
                    }
                }
            }
        }
    }
}

/// The weights of `version` for a leased shard: from the worker's cache (another slot of this
/// worker fetched them) or streamed from the coordinator, checked against size and SHA-256.
async fn fetch_weights(
    shared: &Shared,
    registration: &Registration,
    task: &v1::Task,
    version: u64,
) -> Result<Arc<Vec<u8>>, TransferError> {
    let cache_key = (task.job_id.clone(), version);
    if let Some((key, bytes)) = shared
        .weights
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .as_ref()
    {
        if *key == cache_key {
            return Ok(bytes.clone());
        }
    }
    let request = v1::FetchSupernetRequest {
        worker_id: registration.worker_id.clone(),
        task_id: task.task_id.clone(),
        lease_token: task.lease_token,
    };
    let bytes = with_retries(shared, "fetch_supernet", |mut client| {
        let request = request.clone();
        async move {
            let mut stream = client.fetch_supernet(request).await?.into_inner();
            let mut data: Vec<u8> = Vec::new();
            let mut expected: Option<(u64, String)> = None;
            while let Some(chunk) = stream.message().await? {
                if chunk.offset != data.len() as u64 {
                    return Err(Status::data_loss(format!(
                        "chunk at offset {} after {} bytes",
                        chunk.offset,
                        data.len()
                    )));
                }
                if expected.is_none() {
                    let total = usize::try_from(chunk.total_bytes).unwrap_or(usize::MAX);
                    data.reserve_exact(total.min(1 << 32));
                    expected = Some((chunk.total_bytes, chunk.sha256.clone()));
                }
                data.extend_from_slice(&chunk.data);
            }
            let Some((total, sha256)) = expected else {
                return Err(Status::data_loss("the coordinator sent no weights"));
            };
            let got = hex::encode(Sha256::digest(&data));
            if data.len() as u64 != total || !got.eq_ignore_ascii_case(&sha256) {
                return Err(Status::data_loss(format!(
                    "received {} bytes hashing to {got}, expected {total} bytes with {sha256}",
                    data.len()
                )));
            }
            Ok(data)
        }
    })
    .await?;
    let bytes = Arc::new(bytes);
    tracing::info!(version, bytes = bytes.len(), "supernet weights fetched");
    *shared
        .weights
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((cache_key, bytes.clone()));
    Ok(bytes)
}

/// Uploads a shard's trained weights in 1 MiB chunks; returns their size and SHA-256.
async fn upload_weights(
    shared: &Shared,
    registration: &Registration,
    task_id: &str,
    lease_token: u64,
    weights: &[u8],
) -> Result<(u64, String), TransferError> {
    let sha256 = hex::encode(Sha256::digest(weights));
    let total = weights.len() as u64;
    let worker_id = registration.worker_id.clone();
    let answer = with_retries(shared, "put_supernet", |mut client| {
        let messages: Vec<v1::PutSupernetRequest> = weights
            .chunks(WEIGHTS_CHUNK)
            .enumerate()
            .map(|(i, data)| {
                let first = i == 0;
                v1::PutSupernetRequest {
                    worker_id: if first {
                        worker_id.clone()
                    } else {
                        String::new()
                    },
                    task_id: if first {
                        task_id.to_owned()
                    } else {
                        String::new()
                    },
                    lease_token: if first { lease_token } else { 0 },
                    total_bytes: if first { total } else { 0 },
                    sha256: if first { sha256.clone() } else { String::new() },
                    offset: (i * WEIGHTS_CHUNK) as u64,
                    data: data.to_vec(),
                }
            })
            .collect();
        async move {
            let response = client
                .put_supernet(tokio_stream::iter(messages))
                .await?
                .into_inner();
            Ok(response)
        }
    })
    .await?;
    if answer.bytes != total || !answer.sha256.eq_ignore_ascii_case(&sha256) {
        return Err(TransferError::Failed(format!(
            "the coordinator stored {} bytes with SHA-256 {}, sent {total} with {sha256}",
            answer.bytes, answer.sha256
        )));
    }
    tracing::info!(bytes = total, "supernet weights uploaded");
    Ok((total, sha256))
}

fn mentions_worker(status: &Status) -> bool {
    status.message().to_ascii_lowercase().contains("worker")
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Heartbeats the tasks in hand; stops those the coordinator names.
async fn heartbeat_loop(shared: Arc<Shared>) {
    let mut backoff = Backoff::new(BACKOFF_BASE, shared.config.max_backoff);
    let mut interval = Duration::from_secs(1);
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = raised(&shared.stopping) => return,
        }
        let Some(registration) = shared.registration().await else {
            return;
        };
        interval = registration.heartbeat_interval;
        let request = v1::HeartbeatRequest {
            worker_id: registration.worker_id.clone(),
            tasks: shared.held_tasks(),
        };
        let (used, mut client) = shared.coordinators.client();
        match flatten(tokio::time::timeout(RPC_TIMEOUT, client.heartbeat(request)).await) {
            Ok(response) => {
                backoff.reset();
                for task_id in &response.get_ref().stop_task_ids {
                    shared.stop_task(
                        task_id,
                        "stopped at the coordinator's request (cancelled or lease lost)",
                    );
                }
            }
            Err(status) if status.code() == Code::NotFound => {
                record::worker_rpc_error(WorkerRpc::Heartbeat);
                shared.forget_registration(&registration.worker_id).await;
                interval = Duration::ZERO;
            }
            Err(status) if shared.credentials_rejected("heartbeat", used, &status) => {
                record::worker_rpc_error(WorkerRpc::Heartbeat);
                return;
            }
            Err(status) => {
                record::worker_rpc_error(WorkerRpc::Heartbeat);
                shared.coordinators.failed(used, &status);
                let delay = backoff.next_delay();
                log_unreachable("heartbeat", &status, backoff.attempts(), delay);
                // Keep heartbeating at the normal pace: it is what keeps our leases alive.
            }
        }
    }
}

/// Samples the memory of the GPUs this worker trains on into the GPU memory gauges.
async fn gpu_memory_loop(shared: Arc<Shared>, indexes: Vec<u32>) {
    let mut warned = false;
    loop {
        let sampled = tokio::task::spawn_blocking(crate::system::gpu_memory)
            .await
            .unwrap_or_default();
        let mut seen = 0;
        for gpu in sampled.iter().filter(|gpu| indexes.contains(&gpu.index)) {
            record::worker_gpu_memory(gpu.index, gpu.used_bytes, gpu.total_bytes);
            seen += 1;
        }
        if seen == 0 && !warned {
            warned = true;
            tracing::warn!("nvidia-smi gave no memory figures for this worker's GPUs; GPU memory is not exported");
        }
        tokio::select! {
            () = tokio::time::sleep(GPU_MEMORY_INTERVAL) => {}
            () = raised(&shared.stopping) => return,
        }
    }
}

/// Forwards SIGTERM and SIGINT as messages (one per signal) for [`run`].
pub fn shutdown_signals() -> std::io::Result<mpsc::Receiver<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let (sender, receiver) = mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                Some(()) = terminate.recv() => "SIGTERM",
                Some(()) = interrupt.recv() => "SIGINT",
                else => return,
            };
            tracing::info!(signal = name, "shutdown signal received");
            if sender.send(()).await.is_err() {
                return;
            }
        }
    });
    Ok(receiver)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate("héllo".into(), 2), "h");
        assert_eq!(truncate("abc".into(), 10), "abc");
    }
}
