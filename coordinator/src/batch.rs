//! Group commit of the worker hot path: concurrent `LeaseTask` store calls are gathered into one
//! [`Store::lease_tasks`] call, concurrent `ReportResult` store calls into one
//! [`Store::report_results`] call, so that one transaction (one WAL flush on PostgreSQL) serves
//! many workers.
//!
//! # How a batch forms
//! Each kind has a dispatcher task and at most [`IN_FLIGHT`] store calls running at once. A
//! caller queues its request and awaits its own answer. The dispatcher takes a free slot, waits
//! for the first queued request, then takes every request already queued behind it (at most
//! [`MAX_BATCH`]) and starts the store call. So an idle coordinator adds no delay (a lone call
//! is a batch of one, started at once), and under load the batches grow by themselves to what
//! arrived while the previous calls were running: no fixed window to tune.
//!
//! # Answers and failures
//! Each caller gets its own answer: element `i` of the store's answer for request `i` (a stale
//! token in one report is that report's `FAILED_PRECONDITION`; the others are unaffected). If
//! the store call fails as a whole (backend error: nothing of the batch was applied, the batch
//! commits or not as a whole), every caller of the batch gets an internal error. A caller that
//! went away (client cancelled the RPC) is simply not answered; a lease claimed for it then
//! expires and its task is re-queued, as with a worker that dies holding it.
//!
//! # Reservations
//! A lease batch also tops up the [`Reservations`] of the slot profiles it serves (and of
//! profiles that asked for a refill): after the callers' requests come reservation requests
//! (no worker) of the same profiles, in the same statement, so reserving costs no extra
//! transaction. Reserved leases handed out are recorded by a background writer (see
//! [`crate::handout`]): a second after the hand-out unless the report came first, the hand-outs
//! falling due together in one [`Store::assign_leases`] call; nobody waits for it.

use std::sync::Arc;
use std::time::Duration;

use nat_store::{Lease, LeaseAssignment, LeaseRequest, ReportAck, ReportItem, Store, StoreError};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::clock::Clock;
use crate::handout::{HandOuts, Next};
use crate::reserve::{Profile, Reservations};

/// Most requests in one store call.
pub const MAX_BATCH: usize = 256;
/// Store calls of one kind running at once (each holds one pooled connection).
pub const IN_FLIGHT: usize = 4;
/// How long a report batch waits for more reports while another report batch is running.
pub const REPORT_GATHER: Duration = Duration::from_millis(5);
/// Hand-outs of reservations falling due within this window are written together.
pub const ASSIGN_WINDOW: Duration = Duration::from_millis(100);
/// Most hand-outs recorded in one statement.
pub const MAX_ASSIGN_BATCH: usize = 2048;

const _: () = assert!(MAX_BATCH <= nat_store::limits::MAX_BATCH);

type LeaseReply = oneshot::Sender<Result<Option<Lease>, StoreError>>;
type ReportReply = oneshot::Sender<Result<ReportAck, StoreError>>;
/// Called with the number of reservations a lease batch brought, to wake long-polling
/// LeaseTask calls that may take them.
pub type OnReserved = Arc<dyn Fn(usize) + Send + Sync>;

/// What the lease dispatcher is asked for.
#[derive(Debug)]
enum LeaseJob {
    /// A slot waiting for its lease.
    Slot(LeaseRequest, LeaseReply),
    /// A profile whose reservations run low.
    Refill(Profile),
}

/// Queues of the batched calls (leases, reports). Cheap to share; the dispatchers stop when it
/// is dropped, and the hand-out writer then writes what is pending and stops.
#[derive(Debug)]
pub struct Batcher {
    leases: mpsc::UnboundedSender<LeaseJob>,
    reports: mpsc::UnboundedSender<(ReportItem, ReportReply)>,
    handouts: Arc<HandOuts>,
    /// Dropped with the batcher: tells the hand-out writer to finish.
    _stop_writer: oneshot::Sender<()>,
}

/// The error every caller of a failed batch gets (the cause is logged once).
fn batch_failed() -> StoreError {
    StoreError::Backend(Box::new(std::io::Error::other("batched store call failed")))
}

impl Batcher {
    /// Starts the dispatchers on the current Tokio runtime.
    pub fn start(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        lease_duration: Duration,
        reservations: Arc<Reservations>,
        handouts: Arc<HandOuts>,
        on_reserved: OnReserved,
    ) -> Self {
        let (leases, lease_rx) = mpsc::unbounded_channel();
        let (reports, report_rx) = mpsc::unbounded_channel();
        let (stop_writer, writer_stop) = oneshot::channel();
        tokio::spawn(record_assignments(
            handouts.clone(),
            store.clone(),
            clock.clone(),
            writer_stop,
        ));
        tokio::spawn(dispatch(lease_rx, Duration::ZERO, {
            let store = store.clone();
            let clock = clock.clone();
            move |batch: Vec<LeaseJob>| {
                lease_batch(
                    store.clone(),
                    clock.clone(),
                    lease_duration,
                    reservations.clone(),
                    on_reserved.clone(),
                    batch,
                )
            }
        }));
        tokio::spawn(dispatch(
            report_rx,
            REPORT_GATHER,
            move |batch: Vec<(ReportItem, ReportReply)>| {
                let store = store.clone();
                let clock = clock.clone();
                async move {
                    let (items, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
                    let n = items.len();
                    tracing::trace!(size = n, "report batch");
                    match store.report_results(items, clock.now()).await {
                        Ok(acks) if acks.len() == n => {
                            for (reply, ack) in replies.into_iter().zip(acks) {
                                let _ = reply.send(ack);
                            }
                        }
                        Ok(acks) => {
                            tracing::error!(
                                asked = n,
                                got = acks.len(),
                                "report batch answered the wrong number of items"
                            );
                            for reply in replies {
                                let _ = reply.send(Err(batch_failed()));
                            }
                        }
                        Err(err) => {
                            nat_telemetry::report_error(&err, "report batch failed");
                            for reply in replies {
                                let _ = reply.send(Err(batch_failed()));
                            }
                        }
                    }
                }
            },
        ));
        Batcher {
            leases,
            reports,
            handouts,
            _stop_writer: stop_writer,
        }
    }

    /// Claims a task for one slot (what [`Store::lease_task`] does, batched with concurrent
    /// callers).
    pub async fn lease(&self, request: LeaseRequest) -> Result<Option<Lease>, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.leases
            .send(LeaseJob::Slot(request, tx))
            .map_err(|_| stopped("lease"))?;
        rx.await.map_err(|_| stopped("lease"))?
    }

    /// Asks for a refill of `profile`'s reservations in the next lease batch (fire and forget).
    pub fn refill(&self, profile: Profile) {
        let _ = self.leases.send(LeaseJob::Refill(profile));
    }

    /// Records that a reserved lease was handed to a worker (fire and forget: written by the
    /// hand-out writer unless the report comes first, see [`crate::handout`]).
    pub fn assign(&self, assignment: LeaseAssignment) {
        self.handouts.handed_out(assignment);
    }

    /// Applies one report (what [`Store::report_result`] does, batched with concurrent
    /// callers).
    pub async fn report(&self, item: ReportItem) -> Result<ReportAck, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.reports
            .send((item, tx))
            .map_err(|_| stopped("report"))?;
        rx.await.map_err(|_| stopped("report"))?
    }
}

/// Writes hand-outs of reservations as they fall due (see [`crate::handout`]): those due within
/// [`ASSIGN_WINDOW`] in one statement, one call at a time. When `stop` fires (the batcher is
/// gone) it writes everything pending and returns.
async fn record_assignments(
    handouts: Arc<HandOuts>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut stopping = false;
    loop {
        let wake = handouts.wake().notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        let next = handouts.next(tokio::time::Instant::now(), ASSIGN_WINDOW, MAX_ASSIGN_BATCH);
        let wait_until = match next {
            Next::Write(batch) => {
                tracing::trace!(size = batch.len(), "assignment batch");
                if let Err(err) = store.assign_leases(&batch, clock.now()).await {
                    // The reservations stay unassigned: their workers' heartbeats or reports
                    // record them, or they expire and are re-queued.
                    nat_telemetry::report_error(&err, "recording reserved leases failed");
                }
                handouts.written(batch.len());
                continue;
            }
            _ if stopping => return,
            Next::At(at) => Some(at),
            Next::Idle => None,
        };
        let due = async {
            match wait_until {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = due => {}
            _ = &mut wake => {}
            _ = &mut stop => {
                handouts.flush_all();
                stopping = true;
            }
        }
    }
}

/// One lease batch: the slots' requests, then reservation requests topping up the profiles
/// of the batch, in one [`Store::lease_tasks`] call.
async fn lease_batch(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    lease_duration: Duration,
    reservations: Arc<Reservations>,
    on_reserved: OnReserved,
    batch: Vec<LeaseJob>,
) {
    let mut requests = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    let mut profiles: Vec<Profile> = Vec::new();
    for job in batch {
        let profile = match job {
            LeaseJob::Slot(request, reply) => {
                let profile = Profile::of(&request.capabilities, &request.datasets);
                requests.push(request);
                replies.push(reply);
                profile
            }
            LeaseJob::Refill(profile) => profile,
        };
        if !profiles.contains(&profile) {
            profiles.push(profile);
        }
    }
    // Reservations fill the room the slots leave in the batch.
    let mut reserved: Vec<(Profile, usize)> = Vec::new();
    for profile in profiles {
        let n = reservations.want(&profile, MAX_BATCH.saturating_sub(requests.len()));
        if n == 0 {
            continue;
        }
        for _ in 0..n {
            requests.push(LeaseRequest {
                worker: None,
                capabilities: profile.capabilities(),
                datasets: profile.datasets().to_vec(),
            });
        }
        reserved.push((profile, n));
    }
    if requests.is_empty() {
        return;
    }
    let slots = replies.len();
    tracing::trace!(slots, reservations = requests.len() - slots, "lease batch");
    match store
        .lease_tasks(&requests, clock.now(), lease_duration)
        .await
    {
        Ok(leases) if leases.len() == requests.len() => {
            let mut leases = leases.into_iter();
            let slot_leases: Vec<Option<Lease>> = leases.by_ref().take(slots).collect();
            // Reservations first, so that a slot of this batch that got nothing finds them;
            // then wake the long-polls that looked before they arrived.
            let mut arrived = 0;
            for (profile, n) in reserved {
                let claimed: Vec<Lease> = leases.by_ref().take(n).flatten().collect();
                arrived += claimed.len();
                reservations.fill(&profile, n, Some(claimed));
            }
            for (reply, lease) in replies.into_iter().zip(slot_leases) {
                let _ = reply.send(Ok(lease));
            }
            if arrived > 0 {
                on_reserved(arrived);
            }
        }
        Ok(leases) => {
            tracing::error!(
                asked = requests.len(),
                got = leases.len(),
                "lease batch answered the wrong number of requests"
            );
            fail_lease_batch(replies, &reservations, reserved);
        }
        Err(err) => {
            nat_telemetry::report_error(&err, "lease batch failed");
            fail_lease_batch(replies, &reservations, reserved);
        }
    }
}

fn fail_lease_batch(
    replies: Vec<LeaseReply>,
    reservations: &Reservations,
    reserved: Vec<(Profile, usize)>,
) {
    for reply in replies {
        let _ = reply.send(Err(batch_failed()));
    }
    for (profile, n) in reserved {
        reservations.fill(&profile, n, None);
    }
}

fn stopped(what: &str) -> StoreError {
    StoreError::Backend(Box::new(std::io::Error::other(format!(
        "the {what} batcher stopped"
    ))))
}

/// Forms batches from `rx` and runs `call` on each, at most [`IN_FLIGHT`] at once, until every
/// sender is gone. When another call is still running (the store is busy), a batch waits
/// `gather` for more requests before it starts (what PostgreSQL's `commit_delay` does with
/// `commit_siblings`): under load fewer, larger transactions; an idle store adds no delay.
async fn dispatch<T, F, Fut>(mut rx: mpsc::UnboundedReceiver<T>, gather: Duration, call: F)
where
    T: Send + 'static,
    F: Fn(Vec<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut batch = Vec::with_capacity(16);
        batch.push(first);
        if !gather.is_zero() && slots.available_permits() + 1 < IN_FLIGHT {
            tokio::time::sleep(gather).await;
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let fut = call(batch);
        tokio::spawn(async move {
            fut.await;
            drop(permit);
        });
    }
}
