//! Hand-outs of reservations waiting to be written: which worker got which reserved lease.
//!
//! # Why they wait
//! A reservation is a durable lease without a worker (see [`crate::reserve`]). When LeaseTask
//! hands one out, the store learns the worker later, from whichever comes first:
//! - the worker's report (the report statement records the worker, the lease ends);
//! - a heartbeat carrying the lease's token (it records the worker and extends the lease);
//! - the background write of this module ([`nat_store::Store::assign_leases`]), `delay` after
//!   the hand-out (one second, at most a quarter of the lease), batched with the other hand-outs
//!   that fall due within [`crate::batch::ASSIGN_WINDOW`].
//!
//! A task that ends within the delay (short tasks: exactly the high-rate case, by Little's
//! law) is written once, by its report, instead of twice: [`HandOuts::reported`] drops its
//! pending write. Long tasks get the background write a second after their hand-out.
//!
//! # What waiting risks
//! Nothing is counted twice. If the coordinator dies (`kill -9`) before a hand-out is written,
//! the next start releases the lease like any unassigned reservation (its attempt given back,
//! its token spent): the worker's report is then refused as stale and the task runs again. So
//! a crash costs at most the last `delay` of hand-outs' work (tasks handed out in the last
//! second before the crash and not reported or heartbeaten since). Graceful shutdown and
//! CancelJob first write every pending hand-out ([`HandOuts::flush`]): a cancel tells the
//! holders of running tasks to stop instead of withdrawing those tasks as reservations.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use nat_store::{LeaseAssignment, TaskId, WorkerId};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Longest wait before a hand-out is written (see the module docs).
pub const MAX_DELAY: Duration = Duration::from_secs(1);

/// Hand-outs not written yet, in hand-out order. Cheap to call from every LeaseTask and
/// ReportResult (one short lock).
#[derive(Debug)]
pub struct HandOuts {
    state: Mutex<State>,
    /// Wakes the writer: a first hand-out after an empty spell, a flush, a stop.
    wake: Notify,
    delay: Duration,
    written: AtomicU64,
    skipped: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    /// Pending hand-outs by task; `seq` tells a task's current hand-out from an older one.
    pending: HashMap<TaskId, Pending>,
    /// (due, seq, task) in hand-out order; entries whose hand-out left `pending` (reported,
    /// replaced) are skipped when they reach the front.
    order: VecDeque<(Instant, u64, TaskId)>,
    next_seq: u64,
    /// Hand-outs with a lower seq are written at once, due or not (a flush is waiting).
    flush_to: u64,
    /// Lowest seq of the batch being written now.
    writing: Option<u64>,
    /// The hand-outs of the batch being written now: until the write commits, the store still
    /// has no worker for them, so [`HandOuts::holder`] answers from here.
    in_write: HashMap<TaskId, LeaseAssignment>,
}

#[derive(Debug)]
struct Pending {
    seq: u64,
    assignment: LeaseAssignment,
}

impl State {
    /// Drops entries of `order` that no longer stand for a pending hand-out from its front.
    fn clean_front(&mut self) {
        while let Some(&(_, seq, task)) = self.order.front() {
            if self.pending.get(&task).is_some_and(|p| p.seq == seq) {
                return;
            }
            self.order.pop_front();
        }
    }

    /// True when every hand-out with seq below `upto` is written or no longer needs writing.
    fn flushed(&mut self, upto: u64) -> bool {
        self.clean_front();
        let front_done = self.order.front().is_none_or(|&(_, seq, _)| seq >= upto);
        front_done && self.writing.is_none_or(|seq| seq >= upto)
    }
}

/// What the writer should do next.
#[derive(Debug, PartialEq)]
pub enum Next {
    /// Write these hand-outs now, then call [`HandOuts::written`].
    Write(Vec<LeaseAssignment>),
    /// Nothing is due before this instant.
    At(Instant),
    /// Nothing is pending.
    Idle,
}

/// What the hand-outs did since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HandOutStats {
    /// Hand-outs written by the background writer.
    pub written: u64,
    /// Hand-outs whose report came first: no separate write.
    pub skipped: u64,
}

impl HandOuts {
    /// Hand-outs are written `delay` after they happen (zero: at the next write).
    pub fn new(delay: Duration) -> Self {
        HandOuts {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            delay,
            written: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The writer's wake-up.
    pub fn wake(&self) -> &Notify {
        &self.wake
    }

    /// A reserved lease went to a worker: write it `delay` from now unless its report or a
    /// heartbeat records it first.
    pub fn handed_out(&self, assignment: LeaseAssignment) {
        let due = Instant::now() + self.delay;
        let mut s = self.state();
        let seq = s.next_seq;
        s.next_seq += 1;
        let task = assignment.task_id;
        s.pending.insert(task, Pending { seq, assignment });
        s.order.push_back((due, seq, task));
        let first = s.order.len() == 1;
        drop(s);
        if first {
            self.wake.notify_one();
        }
    }

    /// The report of `task` under `token` was recorded (it records the worker itself): its
    /// hand-out needs no write. True if one was pending.
    pub fn reported(&self, task: TaskId, token: i64) -> bool {
        let mut s = self.state();
        let mine = s
            .pending
            .get(&task)
            .is_some_and(|p| p.assignment.token == token);
        if mine {
            s.pending.remove(&task);
            drop(s);
            self.skipped.fetch_add(1, Ordering::Relaxed);
        }
        mine
    }

    /// The worker a reserved lease (`task`, `token`) was handed out to, while the store does not
    /// know it yet (pending or being written); `None` once written, reported, or never handed
    /// out here. The API refuses a report, progress or heartbeat of that lease from any other
    /// worker: the store alone would take it from whoever holds the token.
    pub fn holder(&self, task: TaskId, token: i64) -> Option<WorkerId> {
        let s = self.state();
        s.pending
            .get(&task)
            .map(|p| &p.assignment)
            .or_else(|| s.in_write.get(&task))
            .filter(|a| a.token == token)
            .map(|a| a.worker)
    }

    /// The next batch for the writer at `now`: every hand-out due within `window` (or waited
    /// for by a flush), at most `max`, in hand-out order; else when the next one falls due.
    /// A batch is being written until [`HandOuts::written`].
    pub fn next(&self, now: Instant, window: Duration, max: usize) -> Next {
        let mut s = self.state();
        let horizon = now + window;
        let mut batch = Vec::new();
        let mut lowest = None;
        loop {
            s.clean_front();
            let Some(&(due, seq, task)) = s.order.front() else {
                break;
            };
            if batch.len() >= max || (due > horizon && seq >= s.flush_to) {
                break;
            }
            s.order.pop_front();
            if let Some(p) = s.pending.remove(&task) {
                lowest.get_or_insert(seq);
                batch.push(p.assignment);
            }
        }
        if !batch.is_empty() {
            s.writing = lowest;
            s.in_write = batch.iter().map(|a| (a.task_id, *a)).collect();
            return Next::Write(batch);
        }
        match s.order.front() {
            Some(&(due, _, _)) => Next::At(due),
            None => Next::Idle,
        }
    }

    /// The batch from [`HandOuts::next`] is written (or given up on: its workers' reports and
    /// heartbeats record them, or the leases expire and are re-queued).
    pub fn written(&self, n: usize) {
        let mut s = self.state();
        s.writing = None;
        s.in_write.clear();
        drop(s);
        self.written.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Asks for every hand-out made so far to be written at once, and waits until they are,
    /// at most `limit` (CancelJob, graceful shutdown). True if none is left.
    pub async fn flush(&self, limit: Duration) -> bool {
        let upto = {
            let mut s = self.state();
            let upto = s.next_seq;
            if s.flushed(upto) {
                return true;
            }
            s.flush_to = s.flush_to.max(upto);
            upto
        };
        self.wake.notify_one();
        let deadline = Instant::now() + limit;
        loop {
            tokio::time::sleep(Duration::from_millis(1)).await;
            if self.state().flushed(upto) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
        }
    }

    /// Asks for every pending hand-out to be written now (the writer is stopping).
    pub fn flush_all(&self) {
        let mut s = self.state();
        s.flush_to = s.next_seq;
    }

    /// Hand-outs waiting to be written.
    pub fn len(&self) -> usize {
        self.state().pending.len()
    }

    /// True when no hand-out waits to be written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts since start.
    pub fn stats(&self) -> HandOutStats {
        HandOutStats {
            written: self.written.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use nat_store::WorkerId;

    fn assignment(token: i64) -> LeaseAssignment {
        LeaseAssignment {
            task_id: TaskId::new(),
            token,
            worker: WorkerId::new(),
            expires_at: Utc::now(),
        }
    }

    fn ids(next: Next) -> Vec<TaskId> {
        match next {
            Next::Write(batch) => batch.iter().map(|a| a.task_id).collect(),
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn hand_outs_fall_due_after_the_delay_in_order() {
        let h = HandOuts::new(Duration::from_secs(1));
        assert_eq!(h.next(Instant::now(), Duration::ZERO, 10), Next::Idle);
        let start = Instant::now();
        let a = assignment(1);
        let b = assignment(1);
        h.handed_out(a);
        tokio::time::advance(Duration::from_millis(300)).await;
        h.handed_out(b);
        assert_eq!(
            h.next(Instant::now(), Duration::from_millis(10), 10),
            Next::At(start + Duration::from_secs(1))
        );
        // A window reaching the first due time takes only the first.
        tokio::time::advance(Duration::from_millis(695)).await;
        assert_eq!(
            ids(h.next(Instant::now(), Duration::from_millis(10), 10)),
            vec![a.task_id]
        );
        h.written(1);
        tokio::time::advance(Duration::from_millis(400)).await;
        assert_eq!(
            ids(h.next(Instant::now(), Duration::ZERO, 10)),
            vec![b.task_id]
        );
        h.written(1);
        assert_eq!(h.next(Instant::now(), Duration::ZERO, 10), Next::Idle);
        assert_eq!(
            h.stats(),
            HandOutStats {
                written: 2,
                skipped: 0
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_report_first_drops_the_write_but_only_for_its_own_lease() {
        let h = HandOuts::new(Duration::from_secs(1));
        let a = assignment(3);
        let b = assignment(5);
        h.handed_out(a);
        h.handed_out(b);
        assert!(h.reported(a.task_id, 3));
        assert!(!h.reported(a.task_id, 3), "once");
        assert!(!h.reported(b.task_id, 4), "an older token of the task");
        assert!(!h.reported(TaskId::new(), 5), "unknown task");
        assert_eq!(h.len(), 1);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            ids(h.next(Instant::now(), Duration::ZERO, 10)),
            vec![b.task_id]
        );
        h.written(1);
        assert_eq!(h.stats().skipped, 1);
        assert!(h.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_hand_out_of_the_same_task_replaces_the_old_one() {
        let h = HandOuts::new(Duration::from_secs(1));
        let old = assignment(1);
        let mut new = assignment(2);
        new.task_id = old.task_id;
        h.handed_out(old);
        tokio::time::advance(Duration::from_millis(500)).await;
        h.handed_out(new);
        tokio::time::advance(Duration::from_millis(600)).await;
        // The old entry is due but stands for nothing any more; the new one is not due yet.
        assert_eq!(
            h.next(Instant::now(), Duration::ZERO, 10),
            Next::At(Instant::now() + Duration::from_millis(400))
        );
        tokio::time::advance(Duration::from_millis(400)).await;
        match h.next(Instant::now(), Duration::ZERO, 10) {
            Next::Write(batch) => assert_eq!(batch, vec![new]),
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn batches_are_capped() {
        let h = HandOuts::new(Duration::ZERO);
        for _ in 0..5 {
            h.handed_out(assignment(1));
        }
        assert_eq!(ids(h.next(Instant::now(), Duration::ZERO, 3)).len(), 3);
        h.written(3);
        assert_eq!(ids(h.next(Instant::now(), Duration::ZERO, 3)).len(), 2);
        h.written(2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_flush_writes_what_is_not_due_and_waits_for_the_write() {
        let h = std::sync::Arc::new(HandOuts::new(Duration::from_secs(1)));
        assert!(h.flush(Duration::from_secs(1)).await, "nothing to flush");
        let a = assignment(1);
        h.handed_out(a);
        // A writer that takes 50 ms per batch.
        let writer = {
            let h = h.clone();
            tokio::spawn(async move {
                loop {
                    let wake = h.wake().notified();
                    tokio::pin!(wake);
                    wake.as_mut().enable();
                    match h.next(Instant::now(), Duration::ZERO, 10) {
                        Next::Write(batch) => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            h.written(batch.len());
                            return batch;
                        }
                        Next::At(_) | Next::Idle => wake.await,
                    }
                }
            })
        };
        let t0 = Instant::now();
        assert!(h.flush(Duration::from_secs(5)).await);
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_millis(50) && waited < Duration::from_millis(100),
            "{waited:?}"
        );
        assert_eq!(writer.await.expect("writer"), vec![a]);
        // Hand-outs after the flush are not hurried.
        h.handed_out(assignment(1));
        assert!(matches!(
            h.next(Instant::now(), Duration::ZERO, 10),
            Next::At(_)
        ));
        // With no writer the flush gives up at its limit.
        assert!(!h.flush(Duration::from_millis(20)).await);
    }
}
