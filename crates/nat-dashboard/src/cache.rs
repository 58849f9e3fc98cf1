//! What the dashboard has already read of each job's event log.
//!
//! A job's events are append-only and numbered 1, 2, 3, … without gaps in commit order, so
//! everything derived from the events up to `seq` never changes. [`EventCache`] keeps, per job,
//! that digest and the `seq` it reaches; a request reads only the events after it
//! (`Store::events_after`) and folds them in. Without the cache every refresh of a job page
//! re-read the whole log. The cache holds at most `capacity` jobs and forgets the least recently
//! used one first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use nat_store::{JobId, Store};

use crate::model::Digest;
use crate::DashboardError;

/// Jobs kept by [`EventCache::default`].
pub const DEFAULT_CAPACITY: usize = 256;
/// Events read per store call.
const EVENT_PAGE: u32 = 5_000;

/// The digest of a job's events up to `seq`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cursor {
    /// What the events say.
    pub(crate) digest: Digest,
    /// The last event folded in (0 = none).
    pub(crate) seq: i64,
}

/// Best accuracy per canonical hash among a job's done tasks.
pub(crate) type Trained = Arc<HashMap<String, f64>>;

#[derive(Debug)]
struct Entry {
    cursor: Arc<tokio::sync::Mutex<Cursor>>,
    used: u64,
    /// The job's trained accuracies when it had this many done tasks (a done task stays done,
    /// so the same count means the same tasks).
    trained: Option<(u64, Trained)>,
}

/// Per-job digests of the event log, shared by the dashboard's requests.
#[derive(Debug)]
pub struct EventCache {
    jobs: Mutex<(HashMap<JobId, Entry>, u64)>,
    capacity: usize,
}

impl Default for EventCache {
    fn default() -> Self {
        EventCache::new(DEFAULT_CAPACITY)
    }
}

impl EventCache {
    /// A cache of at most `capacity` jobs (at least 1).
    pub fn new(capacity: usize) -> EventCache {
        EventCache {
            jobs: Mutex::new((HashMap::new(), 0)),
            capacity: capacity.max(1),
        }
    }

    /// Jobs held now.
    pub fn len(&self) -> usize {
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .len()
    }

    /// Whether no job is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The trained accuracies remembered for `job` if it still has `tasks_done` done tasks.
    pub(crate) fn trained(&self, job: JobId, tasks_done: u64) -> Option<Trained> {
        let guard = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        match guard.0.get(&job)?.trained.as_ref()? {
            (n, t) if *n == tasks_done => Some(t.clone()),
            _ => None,
        }
    }

    /// Remembers `job`'s trained accuracies at `tasks_done` done tasks (if the job is held).
    pub(crate) fn set_trained(&self, job: JobId, tasks_done: u64, trained: Trained) {
        let mut guard = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = guard.0.get_mut(&job) {
            e.trained = Some((tasks_done, trained));
        }
    }

    fn entry(&self, job: JobId) -> Arc<tokio::sync::Mutex<Cursor>> {
        let mut guard = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        let (map, clock) = &mut *guard;
        *clock += 1;
        let now = *clock;
        if let Some(e) = map.get_mut(&job) {
            e.used = now;
            return e.cursor.clone();
        }
        if map.len() >= self.capacity {
            let oldest = map.iter().min_by_key(|(_, e)| e.used).map(|(id, _)| *id);
            if let Some(id) = oldest {
                map.remove(&id);
            }
        }
        let cursor = Arc::new(tokio::sync::Mutex::new(Cursor::default()));
        map.insert(
            job,
            Entry {
                cursor: cursor.clone(),
                used: now,
                trained: None,
            },
        );
        cursor
    }
}

/// The digest of job `job`'s events: the cached one brought up to date (at most `cap` new
/// events read by this call), or, without a cache, the first `cap` events read afresh. Returns
/// the digest, the last `seq` folded in, and whether events were left unread.
pub(crate) async fn digest(
    store: &dyn Store,
    cache: Option<&EventCache>,
    job: JobId,
    cap: usize,
) -> Result<(Cursor, bool), DashboardError> {
    match cache {
        None => {
            let mut cursor = Cursor::default();
            let more = catch_up(store, job, &mut cursor, cap).await?;
            Ok((cursor, more))
        }
        Some(cache) => {
            let entry = cache.entry(job);
            // One reader per job at a time; others wait and then find the log read.
            let mut cursor = entry.lock().await;
            let more = catch_up(store, job, &mut cursor, cap).await?;
            Ok((cursor.clone(), more))
        }
    }
}

/// Folds the events after `cursor.seq` into the cursor, at most `cap` of them. Returns whether
/// events were left unread.
async fn catch_up(
    store: &dyn Store,
    job: JobId,
    cursor: &mut Cursor,
    cap: usize,
) -> Result<bool, DashboardError> {
    let mut read = 0usize;
    loop {
        let want = (cap - read).min(EVENT_PAGE as usize) as u32;
        if want == 0 {
            // Only a read can tell whether more events exist.
            return Ok(!store.events_after(job, cursor.seq, 1).await?.is_empty());
        }
        let page = store.events_after(job, cursor.seq, want).await?;
        let n = page.len();
        for e in &page {
            cursor.digest.add(e);
            cursor.seq = e.seq;
        }
        read += n;
        if n < want as usize {
            return Ok(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_job_is_forgotten_first() {
        let cache = EventCache::new(2);
        let (a, b, c) = (JobId::new(), JobId::new(), JobId::new());
        cache.entry(a);
        cache.entry(b);
        cache.entry(a); // a is now more recent than b
        cache.entry(c);
        assert_eq!(cache.len(), 2);
        let held = cache.jobs.lock().expect("lock");
        assert!(held.0.contains_key(&a) && held.0.contains_key(&c));
    }

    #[test]
    fn trained_accuracies_are_reused_only_while_the_done_count_is_the_same() {
        let cache = EventCache::new(2);
        let job = JobId::new();
        let trained: Trained = Arc::new(HashMap::from([("h".to_string(), 0.5)]));
        // Not held yet: nothing is remembered.
        cache.set_trained(job, 3, trained.clone());
        assert!(cache.trained(job, 3).is_none());
        cache.entry(job);
        cache.set_trained(job, 3, trained);
        assert_eq!(cache.trained(job, 3).map(|t| t["h"]), Some(0.5));
        assert!(cache.trained(job, 4).is_none(), "a task finished since");
    }
}
