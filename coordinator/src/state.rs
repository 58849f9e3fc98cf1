//! State shared by the services: the store, the clock, the settings, and the in-memory signals
//! that make long-polls and watch streams react at once (durable state is only in the store).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use nat_store::{Capabilities, JobId, Store, TaskId, WorkerId};
use tokio::sync::{broadcast, watch, Notify};

use crate::auth::{Authenticator, WorkerBindings};
use crate::clock::Clock;
use crate::config::Config;
use crate::error::ApiError;
use crate::handout::HandOuts;
use crate::leader::Leader;
use crate::reserve::Reservations;
use nat_schema::TrainEvalPayload;

/// Most waiters woken for one batch of new tasks.
const MAX_WAKE: usize = 10_000;
/// Most leased-task payloads kept in memory.
const MAX_REMEMBERED_LEASES: usize = 200_000;

/// Everything a service handler needs.
pub struct Coordinator {
    /// Durable state.
    pub store: Arc<dyn Store>,
    /// Source of "now" for every store call.
    pub clock: Arc<dyn Clock>,
    /// Settings.
    pub config: Config,
    /// Woken when tasks become claimable (submitted, requeued): LeaseTask long-polls wait on it.
    work: Notify,
    /// Set when this process made tasks claimable and the other coordinators of the database
    /// should hear of it (see [`crate::peers`]); `announce` wakes the announcer.
    announce_pending: AtomicBool,
    announce: Notify,
    /// Ids of jobs whose event log grew: WatchJob streams wait on it.
    job_changed: broadcast::Sender<JobId>,
    /// Capabilities of known workers (filled at registration, or lazily from the store after a
    /// restart), so that LeaseTask needs no extra read.
    capabilities: Mutex<HashMap<WorkerId, Capabilities>>,
    /// Payloads of `train_eval` tasks handed out by this process, so that their report needs no
    /// read of the task (a miss, e.g. after a restart, falls back to the store).
    leased: Mutex<HashMap<TaskId, Arc<TrainEvalPayload>>>,
    /// Becomes true when the server shuts down: long-polls and streams end.
    shutdown: watch::Sender<bool>,
    /// Leases claimed ahead of demand (see [`crate::reserve`]).
    pub reservations: Arc<Reservations>,
    /// Hand-outs of reservations not written yet (see [`crate::handout`]).
    pub handouts: Arc<HandOuts>,
    /// Tokens and callers (see [`crate::auth`]).
    pub auth: Arc<Authenticator>,
    /// The credential each worker registered with.
    pub bindings: WorkerBindings,
    /// This coordinator's role in the leader election (see [`crate::leader`]).
    pub leader: Arc<Leader>,
    /// Where supernet weights live (the job database unless `--blob-url` says otherwise).
    pub blobs: Arc<dyn nat_store::BlobStore>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("store", &self.store.backend())
            .field("clock", &self.clock)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Coordinator {
    /// Shared state over `store`, supernet weights in the store's database.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, config: Config) -> Arc<Self> {
        let blobs = store.database_blobs();
        Self::new_with_blobs(store, clock, config, blobs)
    }

    /// Shared state over `store`, supernet weights in `blobs`.
    pub fn new_with_blobs(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        config: Config,
        blobs: Arc<dyn nat_store::BlobStore>,
    ) -> Arc<Self> {
        let (job_changed, _) = broadcast::channel(4096);
        let (shutdown, _) = watch::channel(false);
        let auth = Arc::new(Authenticator::new(
            store.clone(),
            clock.clone(),
            config.auth.clone(),
        ));
        Arc::new(Coordinator {
            store,
            clock,
            work: Notify::new(),
            announce_pending: AtomicBool::new(false),
            announce: Notify::new(),
            job_changed,
            capabilities: Mutex::new(HashMap::new()),
            leased: Mutex::new(HashMap::new()),
            shutdown,
            reservations: Arc::new(Reservations::new(
                config.lease_reserve,
                config.lease_reserve_min_rate,
                config.reservation_max_age(),
            )),
            handouts: Arc::new(HandOuts::new(config.assignment_delay())),
            auth,
            bindings: WorkerBindings::default(),
            leader: Arc::new(Leader::new(config.instance_id.clone())),
            blobs,
            config,
        })
    }

    /// Wakes up to `n` long-polling LeaseTask calls (n tasks became claimable), here and, through
    /// the database, at the other coordinators.
    pub fn wake_workers(&self, n: usize) {
        self.reservations.work_arrived();
        self.wake_for_reservations(n);
        self.announce_work();
    }

    /// Wakes up to `n` long-polling LeaseTask calls because `n` reservations arrived (no new
    /// work in the store: profiles that ran dry stay dry).
    pub fn wake_for_reservations(&self, n: usize) {
        for _ in 0..n.min(MAX_WAKE) {
            self.work.notify_one();
        }
    }

    /// Wakes every long-polling LeaseTask call, here and at the other coordinators.
    pub fn wake_all_workers(&self) {
        self.wake_local_workers();
        self.announce_work();
    }

    /// Wakes every long-polling LeaseTask call of this process (another coordinator made tasks
    /// claimable).
    pub fn wake_local_workers(&self) {
        self.reservations.work_arrived();
        self.work.notify_waiters();
    }

    /// Asks the announcer to tell the other coordinators (coalesced: one announcement for a
    /// burst of calls).
    fn announce_work(&self) {
        if !self.announce_pending.swap(true, Ordering::AcqRel) {
            self.announce.notify_one();
        }
    }

    /// Waits until work should be announced, and takes the request.
    pub(crate) async fn work_to_announce(&self) {
        loop {
            if self.announce_pending.swap(false, Ordering::AcqRel) {
                return;
            }
            self.announce.notified().await;
        }
    }

    /// The notifier LeaseTask waits on.
    pub fn work(&self) -> &Notify {
        &self.work
    }

    /// Tells watchers of `job` that its event log grew.
    pub fn job_changed(&self, job: JobId) {
        // No receiver is fine: nobody is watching.
        let _ = self.job_changed.send(job);
    }

    /// Subscribes to job changes.
    pub fn subscribe_jobs(&self) -> broadcast::Receiver<JobId> {
        self.job_changed.subscribe()
    }

    /// Signals shutdown to long-polls and streams.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
        self.work.notify_waiters();
    }

    /// A receiver that becomes `true` at shutdown.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Remembers the payload of a leased `train_eval` task until its report.
    pub fn remember_lease(&self, task: TaskId, payload: Arc<TrainEvalPayload>) {
        let mut map = self.leased.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_REMEMBERED_LEASES {
            // Lost leases are never reported; forget them all rather than grow without bound
            // (reports then read the task from the store).
            map.clear();
        }
        map.insert(task, payload);
    }

    /// The remembered payload of a leased task.
    pub fn leased_payload(&self, task: TaskId) -> Option<Arc<TrainEvalPayload>> {
        self.leased
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&task)
            .cloned()
    }

    /// Forgets a task whose report was recorded.
    pub fn forget_lease(&self, task: TaskId) {
        self.leased
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&task);
    }

    /// Remembers a worker's capabilities.
    pub fn remember_worker(&self, id: WorkerId, caps: Capabilities) {
        self.capabilities
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, caps);
    }

    /// Capabilities of a registered worker (`NOT_FOUND` if the store does not know it).
    pub async fn worker_capabilities(&self, id: WorkerId) -> Result<Capabilities, ApiError> {
        if let Some(caps) = self
            .capabilities
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
        {
            return Ok(caps);
        }
        let worker = self.store.get_worker(id).await?;
        self.remember_worker(id, worker.capabilities.clone());
        Ok(worker.capabilities)
    }
}

/// Parses an id field, naming it on error.
pub fn parse_id<T: FromStr>(field: &str, value: &str) -> Result<T, ApiError> {
    if value.is_empty() {
        return Err(ApiError::invalid(field, "is required"));
    }
    T::from_str(value.trim())
        .map_err(|_| ApiError::invalid(field, format!("{:?} is not a valid id", excerpt(value))))
}

/// At most 64 characters of `s`, for error messages.
pub fn excerpt(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// Checks a free-text field's length.
pub fn check_len(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.len() > max {
        return Err(ApiError::invalid(
            field,
            format!("longer than {max} bytes ({} bytes)", value.len()),
        ));
    }
    Ok(())
}
