//! The Prometheus gauges derived from the store (`nat_jobs`, `nat_tasks`, `nat_workers`),
//! refreshed periodically by the coordinator. They count rows, so they are right after a restart
//! and across several coordinators sharing one database.

use std::sync::Arc;
use std::time::Duration;

use nat_store::{JobFilter, JobState, Store, TaskState, WorkerState};
use nat_telemetry::record;

use crate::DashboardError;

/// Largest page read per store call.
const PAGE: u32 = nat_store::limits::MAX_PAGE;

/// Store-derived counts, as exported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreCounts {
    /// Jobs per state, in [`nat_telemetry::JobState::ALL`] order.
    pub jobs: Vec<(nat_telemetry::JobState, u64)>,
    /// Tasks of unfinished jobs waiting for a worker.
    pub tasks_ready: u64,
    /// Tasks of unfinished jobs held by a worker.
    pub tasks_leased: u64,
    /// Active workers.
    pub workers_active: u64,
    /// Lost workers.
    pub workers_lost: u64,
}

fn label(state: JobState) -> nat_telemetry::JobState {
    match state {
        JobState::Queued => nat_telemetry::JobState::Queued,
        JobState::Running => nat_telemetry::JobState::Running,
        JobState::Succeeded => nat_telemetry::JobState::Succeeded,
        JobState::Failed => nat_telemetry::JobState::Failed,
        JobState::Cancelled => nat_telemetry::JobState::Cancelled,
    }
}

/// Counts jobs, tasks and workers in the store.
pub async fn count(store: &dyn Store) -> Result<StoreCounts, DashboardError> {
    let mut counts = StoreCounts::default();
    for state in [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ] {
        let mut n = 0u64;
        let mut offset = 0u64;
        loop {
            let page = store
                .list_jobs(JobFilter {
                    state: Some(state),
                    kind: None,
                    limit: PAGE,
                    offset,
                    owner: None,
                })
                .await?;
            n += page.len() as u64;
            if !state.is_final() {
                for job in &page {
                    let pending = job
                        .tasks_total
                        .saturating_sub(job.tasks_done + job.tasks_failed + job.tasks_cancelled);
                    let leased = store
                        .list_tasks(job.id, Some(TaskState::Leased), PAGE, 0)
                        .await?
                        .len() as u64;
                    counts.tasks_leased += leased;
                    counts.tasks_ready += pending.saturating_sub(leased);
                }
            }
            if page.len() < PAGE as usize {
                break;
            }
            offset += u64::from(PAGE);
        }
        counts.jobs.push((label(state), n));
    }
    for w in store.list_workers().await? {
        match w.state {
            WorkerState::Active => counts.workers_active += 1,
            WorkerState::Lost => counts.workers_lost += 1,
        }
    }
    Ok(counts)
}

/// Counts and sets the gauges once.
pub async fn refresh(store: &dyn Store) -> Result<StoreCounts, DashboardError> {
    let counts = count(store).await?;
    for (state, n) in &counts.jobs {
        record::set_jobs(*state, *n);
    }
    record::set_tasks(nat_telemetry::TaskState::Ready, counts.tasks_ready);
    record::set_tasks(nat_telemetry::TaskState::Leased, counts.tasks_leased);
    record::set_workers(nat_telemetry::WorkerState::Active, counts.workers_active);
    record::set_workers(nat_telemetry::WorkerState::Lost, counts.workers_lost);
    Ok(counts)
}

/// Spawns a task refreshing the gauges every `interval` until aborted. Failures are logged
/// (with their cause chain) and retried at the next tick.
pub fn spawn_refresher(store: Arc<dyn Store>, interval: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if let Err(error) = refresh(store.as_ref()).await {
                nat_telemetry::report_error(&error, "refreshing store gauges failed");
            }
        }
    })
}
