//! `WatchJob`'s streamer: a job's stored log after the client's position, then new events as
//! they are committed, translated by `crate::jobs::Translator` (shared events plus the job
//! kind's own).

use std::sync::Arc;
use std::time::Duration;

use nat_proto::v1;
use nat_schema::event::TaskSucceeded;
use nat_schema::{EventKind, TrainEvalPayload};
use nat_store::Event;
use tokio::sync::{broadcast, mpsc};
use tonic::Status;

use crate::convert::{self, decode};
use crate::error::ApiError;
use crate::jobs::Translator;
use crate::state::Coordinator;

/// Events fetched per store read while streaming.
const EVENT_PAGE: u32 = 500;
/// A watch stream re-reads the log at least this often even without a signal (events written
/// by another coordinator process, or a missed signal).
const WATCH_POLL: Duration = Duration::from_secs(2);

/// Streams one job's events: the log after `after`, then new events as they are committed.
pub(crate) struct Watcher {
    c: Arc<Coordinator>,
    job: nat_store::JobId,
    after: i64,
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
            after,
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

    /// Sends every stored event after `self.after`. Returns true once the job's final event was
    /// sent.
    async fn drain(&mut self) -> Result<bool, Status> {
        loop {
            let events = self
                .c
                .store
                .events_after(self.job, self.after, EVENT_PAGE)
                .await
                .map_err(ApiError::from)?;
            let n = events.len();
            let mut task_ended = false;
            for event in events {
                self.after = event.seq;
                let kind = event.kind.parse::<EventKind>().ok();
                let terminal = kind == Some(EventKind::JobFinished);
                task_ended |= matches!(
                    kind,
                    Some(EventKind::TaskSucceeded | EventKind::TaskFailed | EventKind::TaskRetry)
                );
                let genotype = if self.translator.needs_task_genotype(&event) {
                    Some(self.task_genotype(&event).await?)
                } else {
                    None
                };
                for out in self.translator.translate(&event, genotype)? {
                    if self.tx.send(Ok(out)).await.is_err() {
                        return Ok(true);
                    }
                }
                if terminal {
                    return Ok(true);
                }
            }
            if task_ended {
                let job = self
                    .c
                    .store
                    .get_job(self.job)
                    .await
                    .map_err(ApiError::from)?;
                let done = job.tasks_done + job.tasks_failed + job.tasks_cancelled;
                self.translator.done = u32::try_from(done).unwrap_or(u32::MAX);
                let progress = v1::JobEvent {
                    sequence: self.after as u64,
                    job_id: self.job.to_string(),
                    at_unix_ms: convert::unix_ms(job.updated_at),
                    event: Some(v1::job_event::Event::Progress(v1::JobProgress {
                        tasks_total: job.tasks_total as u32,
                        tasks_done: done as u32,
                        tasks_running: 0,
                    })),
                };
                if self.tx.send(Ok(progress)).await.is_err() {
                    return Ok(true);
                }
            }
            if n < EVENT_PAGE as usize {
                return Ok(false);
            }
        }
    }
}
