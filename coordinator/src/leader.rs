//! Leader election among the coordinators of one database.
//!
//! Every coordinator serves the whole API (jobs, leases, reports, watch). Exactly one, the
//! **leader**, also runs what must not run twice: the optimize job drivers (and with them the
//! policy updates) and the lease-expiry sweep. The leader holds a term in the store's
//! `leadership` row ([`nat_store::LeaderStore`]), timed by the database's clock:
//!
//! - [`election_loop`] runs one round every fifth of the term ([`Config::leader_lease`]): the
//!   leader renews its term, a follower takes a new one once the old has expired. A leader that
//!   could not renew before `lease − lease/5` after its last successful round (measured on its
//!   own monotonic clock, from before that round was sent) steps down on its own, so it stops
//!   driving before the database lets anyone else take over.
//! - A term is an **epoch**; the drivers started in a term carry it, and every policy update is
//!   written only if its epoch is still the current one ([`nat_store::NewCheckpoint::leader_epoch`]):
//!   a leader that was stalled (SIGSTOP, a long pause, a partition) and wakes up after a
//!   takeover cannot move a policy, even before it notices that it was deposed.
//! - Stepping down stops every driver of the term ([`Leader::start_driver`] hands out a
//!   [`DriverTicket`] whose [`DriverTicket::deposed`] resolves). A new leader resumes every
//!   unfinished job from the store, and keeps scanning for jobs without a driver (submitted to
//!   a follower, or whose driver stopped) every [`SCAN_INTERVAL`] ([`housekeeping`], a task of
//!   its own: a hanging database never holds up an election round).
//! - A clean shutdown resigns the term, so another coordinator takes over at its next round.
//!
//! With SQLite there is one coordinator per database file (`nat-coordinator` locks it); it
//! wins the first round, which [`crate::serve_with`] runs before serving.
//!
//! [`Config::leader_lease`]: crate::Config::leader_lease

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nat_store::{JobId, Leadership, COORDINATOR_LEADERSHIP};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::jobs::Registry;

use crate::state::Coordinator;

/// How often the leader looks for unfinished jobs that no driver of its term runs.
pub const SCAN_INTERVAL: Duration = Duration::from_secs(1);
/// How often the leader returns reservations of coordinators that stopped to the queue.
const ORPHAN_INTERVAL: Duration = Duration::from_secs(5);

/// What this coordinator is in the election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Another coordinator leads (the row as last read), or nobody does yet (`None`).
    Follower {
        /// The leadership row as last read.
        leader: Option<Leadership>,
    },
    /// This coordinator leads in the term `epoch`.
    Leader {
        /// The term.
        epoch: i64,
    },
}

impl Role {
    /// The term this coordinator leads in, if it leads.
    pub fn epoch(&self) -> Option<i64> {
        match self {
            Role::Leader { epoch } => Some(*epoch),
            Role::Follower { .. } => None,
        }
    }

    /// One line for `/readyz` and logs: `leader (epoch 3)`, `follower (leader c1, epoch 3)`.
    pub fn describe(&self) -> String {
        match self {
            Role::Leader { epoch } => format!("leader (epoch {epoch})"),
            Role::Follower {
                leader: Some(l), ..
            } if l.live => format!("follower (leader {}, epoch {})", l.holder, l.epoch),
            Role::Follower { leader: Some(l) } => format!(
                "follower (no live leader; last {}, epoch {})",
                l.holder, l.epoch
            ),
            Role::Follower { leader: None } => "follower (no leader yet)".to_string(),
        }
    }
}

/// This coordinator's side of the election: its role, and the drivers it runs in its term.
pub struct Leader {
    instance_id: String,
    role: watch::Sender<Role>,
    /// Until when the term held is valid by this process's monotonic clock (from before the
    /// last successful round was sent, plus the lease minus a fifth): past it this coordinator
    /// no longer considers itself the leader, even if its election task is starved (a flooded
    /// process) and has not stepped down yet.
    valid_until: Mutex<Option<Instant>>,
    /// Jobs with a running driver (of the current term).
    drivers: Mutex<HashSet<JobId>>,
}

impl std::fmt::Debug for Leader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leader")
            .field("instance_id", &self.instance_id)
            .field("role", &*self.role.borrow())
            .finish_non_exhaustive()
    }
}

impl Leader {
    /// A follower named `instance_id` that has not taken part in an election yet.
    pub fn new(instance_id: String) -> Self {
        let (role, _) = watch::channel(Role::Follower { leader: None });
        Leader {
            instance_id,
            role,
            valid_until: Mutex::new(None),
            drivers: Mutex::new(HashSet::new()),
        }
    }

    /// This coordinator's name in the election.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    /// The term this coordinator leads in, if it leads and the term is still valid by its own
    /// clock.
    pub fn epoch(&self) -> Option<i64> {
        let epoch = self.role.borrow().epoch()?;
        let valid = self
            .valid_until()
            .is_some_and(|until| Instant::now() < until);
        valid.then_some(epoch)
    }

    fn valid_until(&self) -> Option<Instant> {
        *self
            .valid_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn set_valid_until(&self, until: Option<Instant>) {
        *self
            .valid_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = until;
    }

    /// Whether this coordinator leads.
    pub fn is_leader(&self) -> bool {
        self.epoch().is_some()
    }

    /// [`Role::describe`] of the current role, saying so when a term is held but no longer valid
    /// by this process's clock (its renewal is late: it is about to step down).
    pub fn describe(&self) -> String {
        let role = self.role();
        match role.epoch() {
            Some(epoch) if self.epoch().is_none() => {
                format!("leader term {epoch} lapsing (not renewed in time)")
            }
            _ => role.describe(),
        }
    }

    /// A receiver of role changes.
    pub fn subscribe(&self) -> watch::Receiver<Role> {
        self.role.subscribe()
    }

    fn set(&self, role: Role) {
        self.role.send_if_modified(|current| {
            if *current == role {
                false
            } else {
                *current = role;
                true
            }
        });
    }

    /// Registers a driver of `job` in the current term: `None` when this coordinator does not
    /// lead or already drives the job. The driver must end when the ticket says it was
    /// deposed; dropping the ticket unregisters it.
    pub fn start_driver(self: &Arc<Self>, job: JobId) -> Option<DriverTicket> {
        let epoch = self.epoch()?;
        if !self
            .drivers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(job)
        {
            return None;
        }
        Some(DriverTicket {
            leader: Arc::clone(self),
            job,
            epoch,
            role: self.subscribe(),
        })
    }
}

/// A driver's registration in a term (see [`Leader::start_driver`]).
pub struct DriverTicket {
    leader: Arc<Leader>,
    job: JobId,
    epoch: i64,
    role: watch::Receiver<Role>,
}

impl DriverTicket {
    /// The term the driver runs in: what its policy updates carry.
    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// Whether this coordinator still leads in the ticket's term.
    pub fn holds(&self) -> bool {
        self.leader.epoch() == Some(self.epoch)
    }

    /// Resolves once this coordinator no longer leads in the ticket's term: a step-down, or the
    /// term's local validity running out without a renewal.
    pub async fn deposed(&mut self) {
        let epoch = self.epoch;
        loop {
            if !self.holds() {
                return;
            }
            let until = self.leader.valid_until();
            tokio::select! {
                // An error means the sender is gone, i.e. the coordinator too: deposed as well.
                changed = self.role.wait_for(|r| r.epoch() != Some(epoch)) => {
                    let _ = changed;
                    return;
                }
                _ = async {
                    match until {
                        Some(until) => tokio::time::sleep_until(until).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
        }
    }
}

impl Drop for DriverTicket {
    fn drop(&mut self) {
        self.leader
            .drivers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.job);
    }
}

/// The term held by this coordinator, as the election loop tracks it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Term {
    epoch: i64,
    /// When this coordinator stops considering itself the leader unless a renewal succeeds.
    valid_until: Instant,
}

/// The age past which a reservation no worker holds belongs to a coordinator that died: no
/// live coordinator keeps one longer than its maximum age plus the delay of writing its
/// hand-out (see [`crate::reserve`], [`crate::handout`]).
pub fn orphaned_reservation_age(c: &Coordinator) -> Duration {
    c.config.reservation_max_age() + c.config.assignment_delay() + Duration::from_secs(2)
}

/// Runs one election round; returns the term held afterwards. Public for [`crate::serve_with`],
/// which runs the first round before serving.
pub(crate) async fn round(c: &Arc<Coordinator>, term: Option<Term>) -> Option<Term> {
    let lease = c.config.leader_lease;
    // Long enough for a loaded database: a claim that commits after its caller gave up would
    // leave a live term that nobody acts on until it expires.
    let timeout = lease / 2;
    let sent = Instant::now();
    let id = c.leader.instance_id().to_string();
    let claim = tokio::time::timeout(
        timeout,
        c.store
            .claim_leadership(COORDINATOR_LEADERSHIP, &id, term.map(|t| t.epoch), lease),
    )
    .await;
    let valid_until = sent + lease - lease / 5;
    match (term, claim) {
        (Some(t), Ok(Ok(row))) if row.held_by(&id) && row.epoch == t.epoch => {
            c.leader.set_valid_until(Some(valid_until));
            Some(Term {
                epoch: t.epoch,
                valid_until,
            })
        }
        (Some(t), Ok(Ok(row))) => {
            let why = format!("term taken by {} (epoch {})", row.holder, row.epoch);
            step_down(c, t.epoch, &why, Some(row));
            None
        }
        (Some(t), failed) => {
            let error = match failed {
                Ok(Err(e)) => e.to_string(),
                _ => format!("no answer within {} ms", timeout.as_millis()),
            };
            if Instant::now() >= t.valid_until {
                step_down(
                    c,
                    t.epoch,
                    &format!("term not renewed in time: {error}"),
                    None,
                );
                None
            } else {
                tracing::warn!(epoch = t.epoch, %error, "leadership renewal failed; retrying");
                Some(t)
            }
        }
        (None, Ok(Ok(row))) if row.held_by(&id) => {
            let epoch = row.epoch;
            tracing::info!(epoch, instance = %id, "elected leader: resuming job drivers");
            nat_telemetry::record::leadership_changed(true, epoch);
            c.leader.set_valid_until(Some(valid_until));
            c.leader.set(Role::Leader { epoch });
            Some(Term { epoch, valid_until })
        }
        (None, Ok(Ok(row))) => {
            let role = Role::Follower { leader: Some(row) };
            if c.leader.role() != role {
                tracing::debug!(role = %role.describe(), "follower");
            }
            if let Role::Follower { leader: Some(l) } = &role {
                nat_telemetry::record::leader_seen(l.epoch);
            }
            c.leader.set(role);
            None
        }
        (None, Ok(Err(e))) => {
            tracing::warn!(error = %e, "leader election round failed");
            None
        }
        (None, Err(_)) => {
            tracing::warn!(
                timeout_ms = timeout.as_millis() as u64,
                "leader election round got no answer in time"
            );
            None
        }
    }
}

/// Ends this coordinator's term `epoch`: the drivers of the term stop.
fn step_down(c: &Coordinator, epoch: i64, why: &str, seen: Option<Leadership>) {
    tracing::warn!(
        epoch,
        reason = why,
        "stepping down as leader: job drivers stop"
    );
    nat_telemetry::record::leadership_changed(false, seen.as_ref().map_or(epoch, |l| l.epoch));
    c.leader.set_valid_until(None);
    c.leader.set(Role::Follower { leader: seen });
}

/// Starts a driver for every unfinished job that has none in this term.
async fn scan(c: &Arc<Coordinator>, kinds: &Registry) {
    match kinds.resume_all(c).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(jobs = n, "job drivers started"),
        Err(err) => nat_telemetry::report_error(&err, "cannot list unfinished jobs"),
    }
}

async fn release_orphaned_reservations(c: &Coordinator) {
    let now = c.clock.now();
    let age =
        chrono::Duration::from_std(orphaned_reservation_age(c)).unwrap_or(chrono::Duration::MAX);
    let Some(cutoff) = now.checked_sub_signed(age) else {
        return;
    };
    match c.store.release_unassigned_leases(cutoff, now).await {
        Ok(0) => {}
        Ok(n) => {
            tracing::info!(
                tasks = n,
                "reservations of a coordinator that stopped returned to the queue"
            );
            c.wake_workers(n as usize);
        }
        Err(err) => nat_telemetry::report_error(&err, "cannot release orphaned reservations"),
    }
}

/// Runs election rounds until shutdown (the first round already ran: `term` is its outcome),
/// then resigns a term held. A round waits for nothing but its own bounded statement, so a
/// database that stops answering makes the leader step down in time; the leader's work on the
/// database runs in [`housekeeping`].
pub(crate) async fn election_loop(c: Arc<Coordinator>, mut term: Option<Term>) {
    let mut shutdown = c.shutdown_signal();
    let every = c.config.leader_lease / 5;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
        term = round(&c, term).await;
    }
    if let Some(t) = term {
        c.leader.set(Role::Follower { leader: None });
        nat_telemetry::record::leadership_changed(false, t.epoch);
        let resign =
            c.store
                .resign_leadership(COORDINATOR_LEADERSHIP, c.leader.instance_id(), t.epoch);
        match tokio::time::timeout(c.config.leader_lease, resign).await {
            Ok(Ok(_)) => tracing::info!(epoch = t.epoch, "leadership resigned"),
            Ok(Err(err)) => nat_telemetry::report_error(&err, "cannot resign leadership"),
            Err(_) => tracing::warn!(epoch = t.epoch, "resigning got no answer; the term expires"),
        }
    }
}

/// The leader's periodic work, until shutdown: at the start of each term and then every
/// [`ORPHAN_INTERVAL`], reservations of coordinators that stopped back to the queue; every
/// [`SCAN_INTERVAL`], a driver for each unfinished job without one. Apart from the election
/// rounds, so a database that hangs delays this work, never a step-down.
pub(crate) async fn housekeeping(c: Arc<Coordinator>, kinds: Arc<Registry>) {
    let mut role = c.leader.subscribe();
    let mut shutdown = c.shutdown_signal();
    let mut released: Option<(i64, Instant)> = None;
    loop {
        let epoch = role.borrow_and_update().epoch();
        if let Some(epoch) = epoch {
            let due = released.is_none_or(|(e, at)| e != epoch || at.elapsed() >= ORPHAN_INTERVAL);
            if due {
                released = Some((epoch, Instant::now()));
                release_orphaned_reservations(&c).await;
            }
            scan(&c, &kinds).await;
        }
        let wait = if epoch.is_some() {
            SCAN_INTERVAL
        } else {
            // A follower waits for a term (the role change wakes it).
            Duration::from_secs(3600)
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            changed = role.changed() => if changed.is_err() { return },
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}
