//! Lease reservations: under load the coordinator claims tasks a little ahead of demand, so
//! that a LeaseTask call is answered from memory instead of waiting for a store transaction.
//!
//! # Why
//! A lease claimed on the request path costs one store round trip and one commit (about 1 ms on
//! PostgreSQL with no load); under load the group commit of [`crate::batch`] makes that cheap
//! per lease but each caller still waits for a batch, and with the store, the coordinator and
//! the workers on a few shared cores those waits queue up (tens of ms at p99 with 1,000 workers).
//! A reservation moves the claim off the request path.
//!
//! # What a reservation is
//! A reservation is a lease claimed through the store like any other — attempt incremented, a
//! new fencing token, an expiry, in one statement — with no worker recorded yet
//! ([`nat_store::LeaseRequest::worker`] `None`). Reservations are claimed per *slot profile*
//! (what a slot can run: GPU or not, GPU memory, CPU cores, local datasets), so a reserved task
//! can run on any slot of that profile. LeaseTask pops the oldest reservation of its slot's
//! profile, answers at once, and the worker it went to reaches the store afterwards: by its
//! report, a heartbeat, or a batched [`nat_store::Store::assign_leases`] call a second later
//! ([`crate::handout`]). Until then the store would accept the token from any worker, so the
//! API checks a report, progress or heartbeat of a pending hand-out against the worker it went
//! to ([`crate::handout::HandOuts::holder`]): only that worker's is passed on, and it records
//! the worker. Durability is unchanged:
//! the task was durably leased before it was handed out.
//!
//! # How many
//! Each profile keeps about `horizon` of its recent lease rate reserved (rate measured over
//! 100 ms windows, smoothed), and nothing while the rate is under `min_rate` leases/s: without
//! load a claim on the request path does not queue, and keeping nothing reserved keeps the
//! scheduling order exact. Refills ride on the batched claim statement: a LeaseTask that finds
//! no reservation claims its own task in a batch that also tops up its profile, and taking a
//! reservation nudges a background refill. A refill that comes back short marks the profile
//! *dry* until new work arrives ([`Reservations::work_arrived`]), so an empty queue is not
//! polled.
//!
//! # Returning them
//! Reservations older than `max_age` are released to the queue (their attempt given back), as
//! are all of them at shutdown, and a job's reservations are dropped when it is cancelled (the
//! store cancels them with its ready tasks). After `kill -9`, the next start releases every
//! reservation no worker was recorded for ([`nat_store::Store::release_unassigned_leases`]); a
//! worker that got one in the last second before the crash (and neither reported nor sent a
//! heartbeat since) has its report refused as stale, and the task runs again — never twice
//! counted.
//!
//! # Fairness and counts
//! Reserved tasks were picked in scheduling order (priority, round robin) when claimed, at most
//! `horizon` of demand earlier; a job submitted with a higher priority waits at most that long.
//! A reservation is never handed out once older than `max_age`, so its store-side expiry is
//! always well ahead of the hand-out. Until handed out, a reservation counts as a leased task in
//! job progress and the task gauges (at most `horizon` of demand per profile).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use nat_store::{Capabilities, HeldLease, JobId, Lease};
use nat_telemetry::{record, ReservationEvent};
use tokio::time::Instant;

/// Most reservations kept per profile.
pub const MAX_PER_PROFILE: usize = 1024;
/// Length of the windows the lease rate is measured over.
const RATE_WINDOW: Duration = Duration::from_millis(100);
/// Weight of the newest window in the smoothed rate.
const RATE_WEIGHT: f64 = 0.5;
/// Requests the current window needs before its own rate counts (see [`Pool::demand_rate`]).
const BURST_MIN_COUNT: u32 = 32;
/// Shortest span the current window's rate is measured over.
const BURST_MIN_SPAN: Duration = Duration::from_millis(10);

/// What a slot can run: the part of its capabilities a claim filters on. Slots with equal
/// profiles can run the same tasks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Profile {
    gpu: bool,
    gpu_memory_mb: u64,
    cpu_cores: u32,
    /// Sorted, without repeats; empty = any dataset.
    datasets: Vec<String>,
}

impl Profile {
    /// The profile of a slot offering `caps` with `datasets` on disk (empty = unknown).
    pub fn of(caps: &Capabilities, datasets: &[String]) -> Self {
        let mut datasets = datasets.to_vec();
        datasets.sort();
        datasets.dedup();
        Profile {
            gpu: caps.gpus > 0,
            gpu_memory_mb: if caps.gpus > 0 { caps.gpu_memory_mb } else { 0 },
            cpu_cores: caps.cpu_cores,
            datasets,
        }
    }

    /// Capabilities that claim exactly what this profile can run.
    pub fn capabilities(&self) -> Capabilities {
        Capabilities {
            gpus: u32::from(self.gpu),
            gpu_memory_mb: self.gpu_memory_mb,
            cpu_cores: self.cpu_cores,
            datasets: self.datasets.clone(),
            ..Default::default()
        }
    }

    /// The datasets of this profile (empty = any).
    pub fn datasets(&self) -> &[String] {
        &self.datasets
    }
}

/// A reserved lease and when it was claimed.
#[derive(Debug)]
struct Entry {
    lease: Lease,
    claimed: Instant,
}

/// The reservations of one profile.
#[derive(Debug)]
struct Pool {
    entries: VecDeque<Entry>,
    /// Reservations asked for in batches not answered yet.
    in_flight: usize,
    /// Smoothed lease rate, per second.
    rate: f64,
    window_start: Instant,
    window_count: u32,
    /// The last refill came back short: no refill until new work arrives.
    dry: bool,
    /// Reservations found too old to hand out, waiting for [`Reservations::take_stale`].
    aged: Vec<HeldLease>,
}

impl Pool {
    fn new(now: Instant) -> Self {
        Pool {
            entries: VecDeque::new(),
            in_flight: 0,
            rate: 0.0,
            window_start: now,
            window_count: 0,
            dry: false,
            aged: Vec::new(),
        }
    }

    /// The rate reservations are sized by: the smoothed rate, or the current window's own rate
    /// once that window has seen [`BURST_MIN_COUNT`] requests and the rate is higher. So demand
    /// that jumps (a fleet starting, a backlog released) is met from reservations within a few
    /// milliseconds instead of after a whole window, and falls back as smoothly as before.
    fn demand_rate(&self, now: Instant) -> f64 {
        if self.window_count < BURST_MIN_COUNT {
            return self.rate;
        }
        let span = now
            .saturating_duration_since(self.window_start)
            .max(BURST_MIN_SPAN);
        self.rate
            .max(f64::from(self.window_count) / span.as_secs_f64())
    }

    /// Closes finished rate windows up to `now`.
    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed < RATE_WINDOW {
            return;
        }
        let measured = f64::from(self.window_count) / elapsed.as_secs_f64();
        // Idle windows beyond the first count as zero-rate windows.
        let idle_windows = (elapsed.as_secs_f64() / RATE_WINDOW.as_secs_f64()).floor() - 1.0;
        self.rate = self.rate * (1.0 - RATE_WEIGHT) + measured * RATE_WEIGHT;
        if idle_windows > 0.0 {
            self.rate *= (1.0 - RATE_WEIGHT).powf(idle_windows.min(64.0));
        }
        self.window_start = now;
        self.window_count = 0;
    }
}

/// Reservations of every profile. Cheap to call from every LeaseTask (one short lock).
#[derive(Debug)]
pub struct Reservations {
    pools: Mutex<HashMap<Profile, Pool>>,
    horizon: Duration,
    min_rate: f64,
    max_age: Duration,
    stats: Counters,
    /// Set at shutdown: no new claims start (claims already in flight still land, and are taken
    /// back by [`Reservations::take_all`] once [`Reservations::in_flight`] reaches zero).
    closed: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Default)]
struct Counters {
    refills: AtomicU64,
    claimed: AtomicU64,
    handed_out: AtomicU64,
    returned: AtomicU64,
}

/// What the reservations did since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReservationStats {
    /// Claims that reserved tasks.
    pub refills: u64,
    /// Tasks reserved.
    pub claimed: u64,
    /// Reservations handed to workers.
    pub handed_out: u64,
    /// Reservations given back (too old, idle profile, shutdown) or dropped (job ended).
    pub returned: u64,
}

impl Reservations {
    /// Keeps about `horizon` of demand reserved per profile once its rate reaches `min_rate`
    /// leases/s (`horizon` zero: never), releasing reservations older than `max_age`.
    pub fn new(horizon: Duration, min_rate: f64, max_age: Duration) -> Self {
        Reservations {
            pools: Mutex::new(HashMap::new()),
            horizon,
            min_rate,
            max_age,
            stats: Counters::default(),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Stops new claims (graceful shutdown). Claims in flight still land; wait for
    /// [`Reservations::in_flight`] to reach zero before [`Reservations::take_all`].
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Reservations being claimed right now, over every profile.
    pub fn in_flight(&self) -> usize {
        self.pools().values().map(|p| p.in_flight).sum()
    }

    /// Counts since start.
    pub fn stats(&self) -> ReservationStats {
        ReservationStats {
            refills: self.stats.refills.load(Ordering::Relaxed),
            claimed: self.stats.claimed.load(Ordering::Relaxed),
            handed_out: self.stats.handed_out.load(Ordering::Relaxed),
            returned: self.stats.returned.load(Ordering::Relaxed),
        }
    }

    /// True when reservations are switched off.
    pub fn disabled(&self) -> bool {
        self.horizon.is_zero()
    }

    fn pools(&self) -> std::sync::MutexGuard<'_, HashMap<Profile, Pool>> {
        self.pools.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one lease request of `profile` and hands it the oldest reservation, if any.
    /// The second value is true when the profile wants a refill and none is on its way.
    pub fn take(&self, profile: &Profile) -> (Option<Lease>, bool) {
        if self.disabled() {
            return (None, false);
        }
        let now = Instant::now();
        let mut pools = self.pools();
        if !pools.contains_key(profile) {
            pools.insert(profile.clone(), Pool::new(now));
        }
        let Some(pool) = pools.get_mut(profile) else {
            return (None, false);
        };
        pool.roll(now);
        pool.window_count = pool.window_count.saturating_add(1);
        // Never hand out a reservation older than `max_age`: its store-side expiry (set when it
        // was claimed) must stay well ahead of the hand-out.
        while pool
            .entries
            .front()
            .is_some_and(|e| now.saturating_duration_since(e.claimed) >= self.max_age)
        {
            if let Some(e) = pool.entries.pop_front() {
                pool.aged.push(held(&e.lease));
            }
        }
        let lease = pool.entries.pop_front().map(|e| e.lease);
        if lease.is_some() {
            self.stats.handed_out.fetch_add(1, Ordering::Relaxed);
            record::lease_reservations(ReservationEvent::HandedOut, 1);
        }
        let nudge =
            lease.is_some() && pool.in_flight == 0 && self.deficit(pool, now) > 0 && !pool.dry;
        (lease, nudge)
    }

    /// How many reservations `pool` lacks: none while it holds more than half its target (so
    /// that refills come in batches of at least half the target), else up to the target.
    fn deficit(&self, pool: &Pool, now: Instant) -> usize {
        let rate = pool.demand_rate(now);
        if rate < self.min_rate || rate <= 0.0 {
            return 0;
        }
        let target = (rate * self.horizon.as_secs_f64()).ceil();
        let target = if target.is_finite() {
            (target as usize).clamp(1, MAX_PER_PROFILE)
        } else {
            MAX_PER_PROFILE
        };
        let have = pool.entries.len() + pool.in_flight;
        if have * 2 > target {
            return 0;
        }
        target - have
    }

    /// How many reservations to claim for `profile` now, at most `room`; they are counted as in
    /// flight until [`Reservations::fill`] is called with the answer.
    pub fn want(&self, profile: &Profile, room: usize) -> usize {
        if self.disabled() || room == 0 || self.closed.load(Ordering::SeqCst) {
            return 0;
        }
        let now = Instant::now();
        let mut pools = self.pools();
        let Some(pool) = pools.get_mut(profile) else {
            return 0;
        };
        pool.roll(now);
        if pool.dry {
            return 0;
        }
        let n = self.deficit(pool, now).min(room);
        pool.in_flight += n;
        n
    }

    /// Stores the answer to `asked` reservations of `profile` (`claimed` may be shorter: the
    /// queue ran dry; `None`: the claim failed).
    pub fn fill(&self, profile: &Profile, asked: usize, claimed: Option<Vec<Lease>>) {
        let now = Instant::now();
        let mut pools = self.pools();
        let pool = pools
            .entry(profile.clone())
            .or_insert_with(|| Pool::new(now));
        pool.in_flight = pool.in_flight.saturating_sub(asked);
        if let Some(claimed) = claimed {
            if claimed.len() < asked {
                pool.dry = true;
            }
            self.stats.refills.fetch_add(1, Ordering::Relaxed);
            self.stats
                .claimed
                .fetch_add(claimed.len() as u64, Ordering::Relaxed);
            record::lease_reservations(ReservationEvent::Claimed, claimed.len() as u64);
            pool.entries.extend(claimed.into_iter().map(|lease| Entry {
                lease,
                claimed: now,
            }));
        }
    }

    /// New tasks became claimable: profiles that ran dry may refill again.
    pub fn work_arrived(&self) {
        if self.disabled() {
            return;
        }
        for pool in self.pools().values_mut() {
            pool.dry = false;
        }
    }

    /// Removes the reservations of `job` (cancelled or finished: the store withdrew them).
    pub fn drop_job(&self, job: JobId) -> usize {
        let mut n = 0;
        for pool in self.pools().values_mut() {
            let before = pool.entries.len();
            pool.entries.retain(|e| e.lease.task.job_id != job);
            n += before - pool.entries.len();
        }
        self.returned(n);
        n
    }

    /// Removes the reservations claimed more than `max_age` ago, and those of profiles no slot
    /// asked for lately, and returns them for release.
    pub fn take_stale(&self) -> Vec<HeldLease> {
        let now = Instant::now();
        let mut out = Vec::new();
        let mut pools = self.pools();
        for pool in pools.values_mut() {
            pool.roll(now);
            out.append(&mut pool.aged);
            let idle = pool.rate < self.min_rate;
            while let Some(e) = pool.entries.front() {
                if !idle && now.saturating_duration_since(e.claimed) < self.max_age {
                    break;
                }
                if let Some(e) = pool.entries.pop_front() {
                    out.push(held(&e.lease));
                }
            }
        }
        pools.retain(|_, p| {
            !p.entries.is_empty() || !p.aged.is_empty() || p.in_flight > 0 || p.rate > 0.0
        });
        self.returned(out.len());
        out
    }

    /// Removes every reservation (shutdown) and returns them for release.
    pub fn take_all(&self) -> Vec<HeldLease> {
        let mut pools = self.pools();
        let mut out = Vec::new();
        for pool in pools.values_mut() {
            out.append(&mut pool.aged);
            out.extend(pool.entries.drain(..).map(|e| held(&e.lease)));
        }
        pools.clear();
        self.returned(out.len());
        out
    }

    fn returned(&self, n: usize) {
        self.stats.returned.fetch_add(n as u64, Ordering::Relaxed);
        record::lease_reservations(ReservationEvent::Returned, n as u64);
    }

    /// Reservations held now (all profiles).
    pub fn len(&self) -> usize {
        self.pools().values().map(|p| p.entries.len()).sum()
    }

    /// True when none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn held(lease: &Lease) -> HeldLease {
    HeldLease {
        task_id: lease.task.id,
        token: lease.token,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(job: JobId, token: i64) -> Lease {
        let now = chrono::Utc::now();
        Lease {
            task: nat_store::Task {
                id: nat_store::TaskId::new(),
                job_id: job,
                kind: "train_eval".into(),
                payload: serde_json::json!({}),
                requirements: Default::default(),
                state: nat_store::TaskState::Leased,
                attempt: 1,
                max_attempts: 3,
                lease_token: token,
                leased_by: None,
                lease_expires_at: Some(now),
                result: None,
                progress: None,
                failures: Vec::new(),
                created_at: now,
                updated_at: now,
                finished_at: None,
            },
            token,
            attempt: 1,
            expires_at: now,
        }
    }

    fn cpu() -> Profile {
        Profile::of(
            &Capabilities {
                cpu_cores: 4,
                slots: 1,
                ..Default::default()
            },
            &[],
        )
    }

    /// Answers `n` asked reservations of `p` with `n` leases of a new job, tokens 1..=n.
    fn fill_new_job(r: &Reservations, p: &Profile, n: usize) {
        let job = JobId::new();
        r.fill(p, n, Some((1..=n as i64).map(|t| lease(job, t)).collect()));
    }

    /// Drives `n` lease requests over `span` of paused time.
    async fn demand(r: &Reservations, p: &Profile, n: u32, span: Duration) {
        for _ in 0..n {
            let _ = r.take(p);
            tokio::time::advance(span / n).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_reserved_for_before_its_window_closes() {
        let r = Reservations::new(Duration::from_millis(50), 100.0, Duration::from_secs(5));
        let p = cpu();
        // 31 requests in 5 ms: too few to count on their own, and no window closed yet.
        demand(&r, &p, 31, Duration::from_millis(5)).await;
        assert_eq!(r.want(&p, 256), 0);
        // The 32nd: the window's own rate counts, measured over at least 10 ms (3,200/s),
        // so about 50 ms of it (160) is wanted at once.
        let _ = r.take(&p);
        assert_eq!(r.want(&p, 256), 160);
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_reserved_below_the_minimum_rate() {
        let r = Reservations::new(Duration::from_millis(20), 100.0, Duration::from_secs(5));
        let p = cpu();
        // 50 leases/s for a second.
        demand(&r, &p, 50, Duration::from_secs(1)).await;
        assert_eq!(r.want(&p, 256), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_reserve_follows_the_rate() {
        let r = Reservations::new(Duration::from_millis(20), 100.0, Duration::from_secs(5));
        let p = cpu();
        // 5,000 leases/s for a second: about 100 reserved.
        demand(&r, &p, 5000, Duration::from_secs(1)).await;
        let n = r.want(&p, 256);
        assert!((80..=120).contains(&n), "wanted {n}");
        // In flight: not asked twice.
        assert_eq!(r.want(&p, 256), 0);
        fill_new_job(&r, &p, n);
        assert_eq!(r.len(), n);
        // Oldest first.
        let (first, _) = r.take(&p);
        assert_eq!(first.map(|l| l.token), Some(1));
        // Room caps the ask.
        assert!(r.want(&p, 0) == 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_refill_waits_for_new_work() {
        let r = Reservations::new(Duration::from_millis(20), 100.0, Duration::from_secs(5));
        let p = cpu();
        demand(&r, &p, 5000, Duration::from_secs(1)).await;
        let n = r.want(&p, 256);
        assert!(n > 2);
        let job = JobId::new();
        r.fill(&p, n, Some(vec![lease(job, 1)]));
        assert_eq!(r.want(&p, 256), 0, "dry: no refill");
        r.work_arrived();
        assert!(r.want(&p, 256) > 0, "refills after new work");
    }

    #[tokio::test(start_paused = true)]
    async fn stale_and_idle_reservations_are_returned() {
        let r = Reservations::new(Duration::from_millis(20), 100.0, Duration::from_secs(5));
        let p = cpu();
        demand(&r, &p, 5000, Duration::from_secs(1)).await;
        let n = r.want(&p, 256);
        fill_new_job(&r, &p, n);
        // Young and in demand: kept.
        assert!(r.take_stale().is_empty());
        // Demand stops: the rate decays under the minimum and they go back.
        tokio::time::advance(Duration::from_secs(1)).await;
        let back = r.take_stale();
        assert_eq!(back.len(), n);
        assert!(r.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn old_reservations_are_returned_even_under_demand() {
        let r = Reservations::new(
            Duration::from_millis(200),
            100.0,
            Duration::from_millis(300),
        );
        let p = cpu();
        // 1,000 leases/s: about 200 wanted; the batch has room for 100.
        demand(&r, &p, 500, Duration::from_millis(500)).await;
        let n = r.want(&p, 100);
        assert_eq!(n, 100);
        fill_new_job(&r, &p, n);
        // Demand goes on at 125/s (above the minimum) for 400 ms: the requests of the first
        // 300 ms get reservations (one every 8 ms), the later ones none (too old), and the rest
        // go back.
        demand(&r, &p, 50, Duration::from_millis(400)).await;
        let handed = r.stats().handed_out as usize;
        assert_eq!(handed, 38);
        let stale = r.take_stale();
        assert_eq!(stale.len(), n - handed);
        assert_eq!(stale.first().map(|h| h.token), Some(handed as i64 + 1));
        assert!(r.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn reservations_past_their_age_are_not_handed_out() {
        let r = Reservations::new(
            Duration::from_millis(200),
            100.0,
            Duration::from_millis(300),
        );
        let p = cpu();
        demand(&r, &p, 500, Duration::from_millis(500)).await;
        let n = r.want(&p, 256);
        fill_new_job(&r, &p, n);
        tokio::time::advance(Duration::from_millis(300)).await;
        // All of them are too old now: the request gets none, and they go back.
        let (got, _) = r.take(&p);
        assert!(got.is_none());
        assert!(r.is_empty());
        let back = r.take_stale();
        assert_eq!(back.len(), n);
        assert_eq!(r.stats().returned, n as u64);
    }

    #[test]
    fn cancelled_jobs_lose_their_reservations() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        rt.block_on(async {
            let r = Reservations::new(Duration::from_millis(20), 0.0, Duration::from_secs(5));
            let p = cpu();
            demand(&r, &p, 100, Duration::from_millis(200)).await;
            let (a, b) = (JobId::new(), JobId::new());
            r.fill(
                &p,
                4,
                Some(vec![lease(a, 1), lease(b, 2), lease(a, 3), lease(b, 4)]),
            );
            assert_eq!(r.drop_job(a), 2);
            let left: Vec<i64> = r.take_all().iter().map(|h| h.token).collect();
            assert_eq!(left, vec![2, 4]);
        });
    }

    #[test]
    fn profiles_ignore_what_claims_do_not_filter_on() {
        let a = Capabilities {
            cpu_cores: 8,
            slots: 2,
            version: "1".into(),
            datasets: vec!["mnist".into(), "digits".into(), "mnist".into()],
            ..Default::default()
        };
        let b = Capabilities {
            cpu_cores: 8,
            slots: 4,
            version: "2".into(),
            datasets: vec!["digits".into(), "mnist".into()],
            gpu_memory_mb: 1000, // no GPU: memory does not matter
            ..Default::default()
        };
        assert_eq!(Profile::of(&a, &a.datasets), Profile::of(&b, &b.datasets));
        let c = Capabilities {
            gpus: 1,
            ..b.clone()
        };
        assert_ne!(Profile::of(&c, &c.datasets), Profile::of(&b, &b.datasets));
        assert_eq!(Profile::of(&c, &[]).capabilities().gpus, 1);
    }
}
