//! Task slots: one OS thread per slot that owns its runner (model, tensors, dataset cache) and
//! talks to the async side through channels.
//!
//! The async side sends a job with a cancel flag; the slot thread runs it inside
//! `catch_unwind`, so a panicking task becomes a failed outcome and the runner is rebuilt
//! (dropping whatever tensors the failed task left behind) before the next job.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use tokio::sync::{oneshot, watch};

/// Training progress a runner reports while it works.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Progress {
    /// 0..1 of the task's work.
    pub fraction: f64,
    /// Epochs finished.
    pub epoch: u32,
    /// Epochs in the budget (0 when the task is not epoch-based).
    pub epochs: u32,
    /// Mean training loss over the current epoch so far.
    pub train_loss: f64,
    /// Training accuracy over the current epoch so far (fraction).
    pub train_accuracy: f64,
    /// Optimiser steps (or scored pairs for supernet tasks) so far.
    pub step: u64,
}

/// What a runner sees of the world while it runs one task.
pub struct TaskContext<'a> {
    cancel: &'a AtomicBool,
    progress: &'a watch::Sender<Option<Progress>>,
}

impl TaskContext<'_> {
    /// Set when the task must stop (coordinator asked, drain timeout, lease lost).
    pub fn cancel_flag(&self) -> &AtomicBool {
        self.cancel
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// Publish the latest progress; the async side forwards it (only the latest value is kept).
    pub fn report(&self, progress: Progress) {
        self.progress.send_replace(Some(progress));
    }
}

/// Runs tasks on a slot thread. Created on that thread, so it may own non-`Send` state.
pub trait TaskRunner: 'static {
    type Task: Send + 'static;
    type Outcome: Send + 'static;

    fn run(&mut self, task: Self::Task, context: &TaskContext<'_>) -> Self::Outcome;

    /// The outcome of a task whose run panicked with `message`.
    fn panicked(message: String) -> Self::Outcome;

    /// The outcome of a task that could not run because the runner could not be built.
    fn unavailable(reason: String) -> Self::Outcome;
}

/// The slot thread is gone (it only exits when its handle is dropped).
#[derive(Debug, thiserror::Error)]
#[error("slot {slot} thread has stopped")]
pub struct SlotStopped {
    pub slot: usize,
}

struct SlotJob<R: TaskRunner> {
    task: R::Task,
    cancel: Arc<AtomicBool>,
    progress: watch::Sender<Option<Progress>>,
    reply: oneshot::Sender<R::Outcome>,
    /// The task's span: entered on the slot thread so the runner's logs carry its fields.
    span: tracing::Span,
}

/// A task handed to a slot: its outcome arrives on `outcome`, its progress on `progress`.
pub struct RunningTask<O> {
    pub outcome: oneshot::Receiver<O>,
    pub progress: watch::Receiver<Option<Progress>>,
}

/// Handle to one slot thread.
pub struct Slot<R: TaskRunner> {
    index: usize,
    jobs: Option<mpsc::Sender<SlotJob<R>>>,
    thread: Option<JoinHandle<()>>,
}

impl<R: TaskRunner> Slot<R> {
    /// Start the slot thread. `factory` builds the runner on that thread, again after a panic.
    pub fn spawn<F>(index: usize, mut factory: F) -> std::io::Result<Self>
    where
        F: FnMut() -> Result<R, String> + Send + 'static,
    {
        let (jobs, receiver) = mpsc::channel::<SlotJob<R>>();
        let thread = std::thread::Builder::new()
            .name(format!("slot-{index}"))
            .spawn(move || slot_thread_main(index, &mut factory, receiver))?;
        Ok(Slot {
            index,
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    pub fn index(&self) -> usize {
        self.index
    }

    /// Hand a task to the slot thread, which runs it inside `span` (spans do not follow work to
    /// another thread by themselves).
    pub fn start(
        &self,
        task: R::Task,
        cancel: Arc<AtomicBool>,
        span: tracing::Span,
    ) -> Result<RunningTask<R::Outcome>, SlotStopped> {
        let (reply, outcome) = oneshot::channel();
        let (progress_sender, progress) = watch::channel(None);
        let job = SlotJob {
            task,
            cancel,
            progress: progress_sender,
            reply,
            span,
        };
        let jobs = self.jobs.as_ref().ok_or(SlotStopped { slot: self.index })?;
        jobs.send(job)
            .map_err(|_| SlotStopped { slot: self.index })?;
        Ok(RunningTask { outcome, progress })
    }
}

impl<R: TaskRunner> Drop for Slot<R> {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop once its current task is done. Do not join:
        // a task that ignores its cancel flag must not hold the daemon's exit hostage.
        self.jobs.take();
        self.thread.take();
    }
}

fn slot_thread_main<R, F>(index: usize, factory: &mut F, jobs: mpsc::Receiver<SlotJob<R>>)
where
    R: TaskRunner,
    F: FnMut() -> Result<R, String>,
{
    let mut runner: Option<R> = None;
    while let Ok(job) = jobs.recv() {
        let span = job.span.clone();
        let _entered = span.enter();
        if runner.is_none() {
            runner = match catch_unwind(AssertUnwindSafe(&mut *factory)) {
                Ok(Ok(built)) => Some(built),
                Ok(Err(reason)) => {
                    tracing::error!(slot = index, error = %reason, "slot runner could not be built");
                    let _ = job.reply.send(R::unavailable(reason));
                    continue;
                }
                Err(payload) => {
                    let reason =
                        format!("building the runner panicked: {}", panic_message(&*payload));
                    let _ = job.reply.send(R::unavailable(reason));
                    continue;
                }
            };
        }
        let Some(active) = runner.as_mut() else {
            continue;
        };
        let SlotJob {
            task,
            cancel,
            progress,
            reply,
            span: _,
        } = job;
        let result = catch_unwind(AssertUnwindSafe(|| {
            let context = TaskContext {
                cancel: &cancel,
                progress: &progress,
            };
            active.run(task, &context)
        }));
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(payload) => {
                let message = panic_message(&*payload);
                tracing::error!(slot = index, error = %message, "task panicked; rebuilding the slot runner");
                // The runner may hold half-updated state; drop it (frees its tensors).
                runner = None;
                R::panicked(message)
            }
        };
        // The receiver is gone only when the async side gave up on this task.
        let _ = reply.send(outcome);
    }
}

/// The text of a panic payload.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "panic with a non-text payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[derive(Debug, PartialEq)]
    enum Outcome {
        Done(u64, usize),
        Cancelled,
        Panicked(String),
        Unavailable(String),
    }

    enum Job {
        Square(u64),
        Panic,
        SpinUntilCancelled,
    }

    struct Runner {
        generation: usize,
        seen: usize,
    }

    impl TaskRunner for Runner {
        type Task = Job;
        type Outcome = Outcome;

        fn run(&mut self, task: Job, context: &TaskContext<'_>) -> Outcome {
            self.seen += 1;
            match task {
                Job::Square(n) => {
                    context.report(Progress {
                        epoch: n as u32,
                        ..Progress::default()
                    });
                    Outcome::Done(n * n, self.generation)
                }
                Job::Panic => panic!("boom {}", self.seen),
                Job::SpinUntilCancelled => {
                    while !context.is_cancelled() {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Outcome::Cancelled
                }
            }
        }

        fn panicked(message: String) -> Outcome {
            Outcome::Panicked(message)
        }

        fn unavailable(reason: String) -> Outcome {
            Outcome::Unavailable(reason)
        }
    }

    fn slot() -> (Slot<Runner>, Arc<AtomicUsize>) {
        let builds = Arc::new(AtomicUsize::new(0));
        let counter = builds.clone();
        let slot = Slot::spawn(0, move || {
            let generation = counter.fetch_add(1, Ordering::SeqCst);
            Ok(Runner {
                generation,
                seen: 0,
            })
        })
        .unwrap();
        (slot, builds)
    }

    #[tokio::test]
    async fn runs_tasks_on_its_thread_and_reports_progress() {
        let (slot, builds) = slot();
        let running = slot
            .start(
                Job::Square(7),
                Arc::new(AtomicBool::new(false)),
                tracing::Span::none(),
            )
            .unwrap();
        assert_eq!(running.outcome.await.unwrap(), Outcome::Done(49, 0));
        assert_eq!(running.progress.borrow().map(|p| p.epoch), Some(7));
        let again = slot
            .start(
                Job::Square(3),
                Arc::new(AtomicBool::new(false)),
                tracing::Span::none(),
            )
            .unwrap();
        assert_eq!(again.outcome.await.unwrap(), Outcome::Done(9, 0));
        assert_eq!(builds.load(Ordering::SeqCst), 1, "runner is built once");
    }

    #[tokio::test]
    async fn a_panic_fails_the_task_and_the_slot_recovers_with_a_fresh_runner() {
        let (slot, builds) = slot();
        let panicked = slot
            .start(
                Job::Panic,
                Arc::new(AtomicBool::new(false)),
                tracing::Span::none(),
            )
            .unwrap();
        assert_eq!(
            panicked.outcome.await.unwrap(),
            Outcome::Panicked("boom 1".into())
        );
        let next = slot
            .start(
                Job::Square(5),
                Arc::new(AtomicBool::new(false)),
                tracing::Span::none(),
            )
            .unwrap();
        assert_eq!(next.outcome.await.unwrap(), Outcome::Done(25, 1));
        assert_eq!(builds.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn the_cancel_flag_reaches_the_running_task() {
        let (slot, _) = slot();
        let cancel = Arc::new(AtomicBool::new(false));
        let running = slot
            .start(
                Job::SpinUntilCancelled,
                cancel.clone(),
                tracing::Span::none(),
            )
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        cancel.store(true, Ordering::SeqCst);
        let outcome = tokio::time::timeout(Duration::from_secs(5), running.outcome)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(outcome, Outcome::Cancelled);
    }

    #[tokio::test]
    async fn a_factory_error_fails_tasks_without_killing_the_slot() {
        let attempts = Arc::new(AtomicUsize::new(0));
        let counter = attempts.clone();
        let slot: Slot<Runner> = Slot::spawn(1, move || {
            if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                Err("device cuda:9 is not usable".to_owned())
            } else {
                Ok(Runner {
                    generation: 9,
                    seen: 0,
                })
            }
        })
        .unwrap();
        let failed = slot
            .start(
                Job::Square(2),
                Arc::new(AtomicBool::new(false)),
                tracing::Span::none(),
            )
            .unwrap();
        assert_eq!(
            failed.outcome.await.unwrap(),
            Outcome::Unavailable("device cuda:9 is not usable".into())
        );
        let next = slot
            .start(
                Job::Square(2),
                Arc::new(AtomicBool::new(false)),
                tracing::Span::none(),
            )
            .unwrap();
        assert_eq!(next.outcome.await.unwrap(), Outcome::Done(4, 9));
    }
}
