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

use std::sync::Arc;
use std::time::Duration;

use nat_store::{Lease, LeaseRequest, ReportAck, ReportItem, Store, StoreError};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::clock::Clock;

/// Most requests in one store call.
pub const MAX_BATCH: usize = 256;
/// Store calls of one kind running at once (each holds one pooled connection).
pub const IN_FLIGHT: usize = 4;

const _: () = assert!(MAX_BATCH <= nat_store::limits::MAX_BATCH);

type LeaseReply = oneshot::Sender<Result<Option<Lease>, StoreError>>;
type ReportReply = oneshot::Sender<Result<ReportAck, StoreError>>;

/// Queues of the two batched calls. Cheap to share; the dispatchers stop when it is dropped.
#[derive(Debug)]
pub struct Batcher {
    leases: mpsc::UnboundedSender<(LeaseRequest, LeaseReply)>,
    reports: mpsc::UnboundedSender<(ReportItem, ReportReply)>,
}

/// The error every caller of a failed batch gets (the cause is logged once).
fn batch_failed() -> StoreError {
    StoreError::Backend(Box::new(std::io::Error::other("batched store call failed")))
}

impl Batcher {
    /// Starts the two dispatchers on the current Tokio runtime.
    pub fn start(store: Arc<dyn Store>, clock: Arc<dyn Clock>, lease_duration: Duration) -> Self {
        let (leases, lease_rx) = mpsc::unbounded_channel();
        let (reports, report_rx) = mpsc::unbounded_channel();
        tokio::spawn(dispatch(lease_rx, {
            let store = store.clone();
            let clock = clock.clone();
            move |batch: Vec<(LeaseRequest, LeaseReply)>| {
                let store = store.clone();
                let clock = clock.clone();
                async move {
                    let (requests, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
                    tracing::trace!(size = requests.len(), "lease batch");
                    match store
                        .lease_tasks(&requests, clock.now(), lease_duration)
                        .await
                    {
                        Ok(leases) if leases.len() == replies.len() => {
                            for (reply, lease) in replies.into_iter().zip(leases) {
                                let _ = reply.send(Ok(lease));
                            }
                        }
                        Ok(leases) => {
                            tracing::error!(
                                asked = replies.len(),
                                got = leases.len(),
                                "lease batch answered the wrong number of requests"
                            );
                            for reply in replies {
                                let _ = reply.send(Err(batch_failed()));
                            }
                        }
                        Err(err) => {
                            nat_telemetry::report_error(&err, "lease batch failed");
                            for reply in replies {
                                let _ = reply.send(Err(batch_failed()));
                            }
                        }
                    }
                }
            }
        }));
        tokio::spawn(dispatch(
            report_rx,
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
        Batcher { leases, reports }
    }

    /// Claims a task for one slot (what [`Store::lease_task`] does, batched with concurrent
    /// callers).
    pub async fn lease(&self, request: LeaseRequest) -> Result<Option<Lease>, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.leases
            .send((request, tx))
            .map_err(|_| stopped("lease"))?;
        rx.await.map_err(|_| stopped("lease"))?
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

fn stopped(what: &str) -> StoreError {
    StoreError::Backend(Box::new(std::io::Error::other(format!(
        "the {what} batcher stopped"
    ))))
}

/// Forms batches from `rx` and runs `call` on each, at most [`IN_FLIGHT`] at once, until every
/// sender is gone.
async fn dispatch<T, F, Fut>(mut rx: mpsc::UnboundedReceiver<T>, call: F)
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
