//! `WatchJob`'s streamer: a job's stored log after the client's position, then new events as
//! they are committed, translated by `crate::jobs::Translator` (shared events plus the job
//! kind's own).
//!
//! The client's position is a wire sequence number (`crate::jobs::watch::SEQUENCE_STRIDE`
//! times the stored event's number plus the index of the wire event among that stored event's
//! ones). The streamer always translates the log from its start — the translation's state (the
//! best so far, the learning round, the task counts) follows the log — and sends the wire
//! events numbered above the client's position: nothing lost, nothing repeated, also when the
//! position is inside one stored event's wire events.

use std::sync::Arc;
use std::time::Duration;

use nat_proto::v1;
use nat_schema::event::TaskSucceeded;
use nat_schema::{EventKind, TrainEvalPayload};
use nat_store::Event;
use tokio::sync::{broadcast, mpsc};
use tonic::Status;

use crate::convert::decode;
use crate::error::ApiError;
use crate::jobs::watch::{wire_sequence, SEQUENCE_STRIDE};
use crate::jobs::Translator;
use crate::state::Coordinator;

/// Events fetched per store read while streaming.
const EVENT_PAGE: u32 = 500;
/// A watch stream re-reads the log at least this often even without a signal (events written
/// by another coordinator process, or a missed signal).
const WATCH_POLL: Duration = Duration::from_secs(2);

/// Streams one job's events: the wire events numbered above `after`, then new events as they
/// are committed.
pub(crate) struct Watcher {
    c: Arc<Coordinator>,
    job: nat_store::JobId,
    /// The client's position: the wire sequence number of the last event it saw (0: none).
    after: u64,
    /// The number of the last stored event translated.
    read: i64,
    translator: Translator,
    tx: mpsc::Sender<Result<v1::JobEvent, Status>>,
}

impl Watcher {
    pub(crate) fn new(
        c: Arc<Coordinator>,
        job: nat_store::JobId,
        translator: Translator,
        after: i64,
        tx: mpsc::Sender<Result<v1::JobEvent, Status>>,
    ) -> Watcher {
        Watcher {
            c,
            job,
            after: u64::try_from(after).unwrap_or(0),
            read: 0,
            translator,
            tx,
        }
    }

    pub(crate) async fn run(mut self, mut changes: broadcast::Receiver<nat_store::JobId>) {
        let mut shutdown = self.c.shutdown_signal();
        loop {
            match self.drain().await {
                Ok(true) => return, // terminal event sent
                Ok(false) => {}
                Err(status) => {
                    let _ = self.tx.send(Err(status)).await;
                    return;
                }
            }
            // Wait for a change of this job, a poll tick, shutdown or the client leaving.
            let deadline = tokio::time::sleep(WATCH_POLL);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    changed = changes.recv() => match changed {
                        Ok(id) if id == self.job => break,
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    _ = &mut deadline => break,
                    _ = shutdown.changed() => {
                        let _ = self.tx.send(Err(Status::unavailable("coordinator shutting down"))).await;
                        return;
                    }
                    _ = self.tx.closed() => return,
                }
            }
        }
    }

    /// The genotype JSON of the task a `task_succeeded` event names ("" when the task or its
    /// payload has none).
    async fn task_genotype(&self, e: &Event) -> Result<String, Status> {
        let done: TaskSucceeded = decode("task_succeeded event", &e.payload)?;
        let Ok(id) = done.task_id.parse::<nat_store::TaskId>() else {
            return Ok(String::new());
        };
        let task = self.c.store.get_task(id).await.map_err(ApiError::from)?;
        if task.kind != nat_schema::TaskKind::TrainEval.as_str() {
            return Ok(String::new());
        }
        let payload: TrainEvalPayload = decode("train_eval payload", &task.payload)?;
        Ok(payload.genotype_json)
    }

    /// Translates every stored event after `self.read` and sends the wire events numbered
    /// above `self.after`. Returns true once the job's final event was sent.
    async fn drain(&mut self) -> Result<bool, Status> {
        loop {
            let events = self
                .c
                .store
                .events_after(self.job, self.read, EVENT_PAGE)
                .await
                .map_err(ApiError::from)?;
            let n = events.len();
            for event in events {
                self.read = event.seq;
                let terminal = event.kind.parse::<EventKind>().ok() == Some(EventKind::JobFinished);
                // A stored event the client has seen all of is translated for the state only:
                // its task's genotype is not read.
                let last_of_event = wire_sequence(event.seq, 0).saturating_add(SEQUENCE_STRIDE - 1);
                let genotype =
                    if last_of_event > self.after && self.translator.needs_task_genotype(&event) {
                        Some(self.task_genotype(&event).await?)
                    } else {
                        None
                    };
                for out in self.translator.watch_events(&event, genotype)? {
                    if out.sequence <= self.after {
                        continue;
                    }
                    self.after = out.sequence;
                    if self.tx.send(Ok(out)).await.is_err() {
                        return Ok(true);
                    }
                }
                if terminal {
                    return Ok(true);
                }
            }
            if n < EVENT_PAGE as usize {
                return Ok(false);
            }
        }
    }
}
