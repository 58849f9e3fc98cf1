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
    /// Best validation-split accuracy per canonical hash among the job's succeeded
    /// `train_eval` tasks looked up so far ([`digest`] with `trained`): each task is read once,
    /// when its `task_succeeded` event is folded in, never the job's whole task list again.
    pub(crate) trained: Trained,
}

/// Best accuracy per canonical hash among a job's done tasks.
pub(crate) type Trained = Arc<HashMap<String, f64>>;

#[derive(Debug)]
struct Entry {
    cursor: Arc<tokio::sync::Mutex<Cursor>>,
    used: u64,
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
            },
        );
        cursor
    }
}

/// The digest of job `job`'s events: the cached one brought up to date (at most `cap` new
/// events read by this call), or, without a cache, the first `cap` events read afresh. With
/// `trained`, the tasks of the `train_eval` successes folded in since are looked up too
/// ([`Cursor::trained`]). Returns the digest, the last `seq` folded in, and whether events
/// were left unread. What the cursor holds is bounded (see [`Digest`]), so the copy returned
/// costs the same at any length of the log.
pub(crate) async fn digest(
    store: &dyn Store,
    cache: Option<&EventCache>,
    job: JobId,
    cap: usize,
    trained: bool,
) -> Result<(Cursor, bool), DashboardError> {
    match cache {
        None => {
            let mut cursor = Cursor::default();
            let more = catch_up(store, job, &mut cursor, cap).await?;
            if trained {
                look_up_trained(store, &mut cursor).await?;
            }
            Ok((cursor, more))
        }
        Some(cache) => {
            let entry = cache.entry(job);
            // One reader per job at a time; others wait and then find the log read.
            let mut cursor = entry.lock().await;
            let more = catch_up(store, job, &mut cursor, cap).await?;
            if trained {
                look_up_trained(store, &mut cursor).await?;
            }
            Ok((cursor.clone(), more))
        }
    }
}

/// Reads the tasks of the `train_eval` successes folded in since the last call and keeps the
/// best validation-split accuracy per canonical hash. On an error the tasks not read yet stay
/// waiting for the next request.
async fn look_up_trained(store: &dyn Store, cursor: &mut Cursor) -> Result<(), DashboardError> {
    let pending = cursor.digest.take_trained_pending();
    for (i, (id, accuracy)) in pending.iter().enumerate() {
        match crate::model::trained_hash(store, *id).await {
            Ok(Some(hash)) => {
                let map = Arc::make_mut(&mut cursor.trained);
                let best = map.entry(hash).or_insert(*accuracy);
                *best = best.max(*accuracy);
            }
            Ok(None) => {}
            Err(e) => {
                cursor.digest.restore_trained_pending(pending[i..].to_vec());
                return Err(e);
            }
        }
    }
    Ok(())
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
}
