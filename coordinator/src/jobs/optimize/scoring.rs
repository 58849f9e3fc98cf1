//! Measurements of an optimize job: which of its tasks measure what, and what they reported.
//!
//! The driver learns of results in O(1) per report: a [`Tracker`] reads the job's task list
//! once (when the driver run starts), then only the job's event log after the position it has
//! read (`task_succeeded`, `task_failed` of tasks it tracks). A report therefore costs the
//! driver one event, whatever the number of tasks the job already has. Event order is commit
//! order (`seq` is gap-free per job), so reading the log from the position of the initial task
//! read misses nothing: a task that changes after the read has its event after that position.

use std::collections::{BTreeMap, HashMap, HashSet};

use nat_arch::Genotype;
use nat_schema::event::JobEvent;
use nat_schema::{
    Budget, EvalSplit, OptimizeJobSpec, SupernetPayload, SupernetResult, TaskKind,
    TrainEvalOutcome, TrainEvalPayload, TrainEvalResult,
};
use nat_store::{JobId, NewTask, RewardKey, Store, Task, TaskId, TaskState};

use super::{Failure, Run};
use crate::jobs::submission::requirements_of;

/// Events read per store call.
const EVENT_PAGE: u32 = 1000;

/// A supernet shard task: (round, shard index). The warm-up is round [`WARMUP_ROUND`].
pub(super) type ShardKey = (i64, u32);

/// The round number of the warm-up task (and of the version it makes).
pub(super) const WARMUP_ROUND: i64 = -1;
/// The "round" of the derive phase's screening tasks (they make no version).
pub(super) const SCREENING_ROUND: i64 = -2;

/// The (round, shard) a supernet payload is.
pub(super) fn shard_key(p: &SupernetPayload) -> ShardKey {
    let round = if p.is_screening() {
        SCREENING_ROUND
    } else if p.warmup {
        WARMUP_ROUND
    } else {
        i64::from(p.iteration)
    };
    (round, p.shard)
}

/// The measurement of one architecture under one budget.
#[derive(Debug, Clone, Copy)]
pub(super) enum Score {
    /// Measured: accuracy, and the worker's numbers when this job trained it.
    Known(f64, Option<TrainEvalOutcome>),
    /// Its task failed for good.
    Failed,
}

/// Where a tracked task stands.
#[derive(Debug, Clone)]
pub(super) enum Tracked<T> {
    /// Ready or leased.
    Waiting,
    /// Succeeded with this result.
    Done(T),
    /// Failed for good (or cancelled), with its last reason.
    Failed(String),
}

/// What makes two `train_eval` measurements the same: architecture, budget, seed and split.
/// The job has at most one task per key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct ArchKey {
    /// Canonical hash of the architecture.
    pub hash: String,
    /// [`Budget::key`] of the budget.
    pub budget: String,
    /// Training seed.
    pub seed: u64,
    /// Where the accuracy is measured.
    pub split: EvalSplit,
}

impl ArchKey {
    fn of(p: &TrainEvalPayload) -> ArchKey {
        ArchKey {
            hash: p.arch_hash.clone(),
            budget: p.budget.key(),
            seed: p.seed,
            split: p.split,
        }
    }
}

/// How a set of architectures is measured: the budget, the split, and whether the tasks
/// checkpoint (long final trainings). The seed comes with each architecture.
#[derive(Debug, Clone, Copy)]
pub(super) struct Measure<'a> {
    pub budget: &'a Budget,
    pub split: EvalSplit,
    pub checkpointed: bool,
}

impl<'a> Measure<'a> {
    /// The measurement of learning and derive: `budget`, the validation split, no checkpoints.
    pub fn selection(budget: &'a Budget) -> Self {
        Measure {
            budget,
            split: EvalSplit::Validation,
            checkpointed: false,
        }
    }

    /// Whether the reward-estimate cache may answer: only validation-split measurements are
    /// cached (the final evaluation's test-split trainings neither read nor write it).
    fn cached(&self) -> bool {
        self.split == EvalSplit::Validation
    }
}

/// The tasks of one job and their results, kept current from the event log.
#[derive(Debug, Default)]
pub(super) struct Tracker {
    /// Position in the job's event log read so far.
    cursor: i64,
    /// `train_eval` tasks by key.
    train_eval: HashMap<ArchKey, Tracked<TrainEvalOutcome>>,
    /// Key of each tracked `train_eval` task.
    train_eval_ids: HashMap<TaskId, ArchKey>,
    /// `supernet` shard tasks by (round, shard): the task and its state. The warm-up is
    /// round [`WARMUP_ROUND`].
    supernet: BTreeMap<ShardKey, (TaskId, Tracked<SupernetResult>)>,
    /// (Round, shard) of each `supernet` task.
    supernet_ids: HashMap<TaskId, ShardKey>,
    /// Tasks of the job (the next `train_eval` index).
    tasks: usize,
    /// Keys whose state changed since the caller last asked ([`Tracker::take_changed`]).
    changed: HashSet<ArchKey>,
}

impl Tracker {
    /// Loads the job's tasks: the log position first, then the tasks, so that every change
    /// after the task read is in the log after that position.
    pub(super) async fn load(store: &dyn Store, job: JobId) -> Result<Tracker, Failure> {
        let mut t = Tracker::default();
        loop {
            let events = store.events_after(job, t.cursor, EVENT_PAGE).await?;
            let n = events.len();
            if let Some(last) = events.last() {
                t.cursor = last.seq;
            }
            if n < EVENT_PAGE as usize {
                break;
            }
        }
        let mut offset = 0u64;
        loop {
            let page = store
                .list_tasks(job, None, nat_store::limits::MAX_PAGE, offset)
                .await?;
            let n = page.len();
            for task in &page {
                t.track(task)?;
            }
            offset += n as u64;
            if n < nat_store::limits::MAX_PAGE as usize {
                break;
            }
        }
        Ok(t)
    }

    /// Adds a task of the job with its current state.
    pub(super) fn track(&mut self, task: &Task) -> Result<(), Failure> {
        self.tasks += 1;
        let kind: TaskKind = task
            .kind
            .parse()
            .map_err(|e| Failure::Fatal(format!("task {}: {e}", task.id)))?;
        let last_reason = || {
            task.failures
                .last()
                .map_or_else(|| "no reason recorded".to_string(), |f| f.reason.clone())
        };
        match kind {
            TaskKind::TrainEval => {
                let p: TrainEvalPayload = nat_schema::decode("train_eval payload", &task.payload)?;
                let state = match (task.state, &task.result) {
                    (TaskState::Done, Some(r)) => Tracked::Done(
                        nat_schema::decode::<TrainEvalResult>("train_eval result", r)?.outcome,
                    ),
                    (TaskState::Done, None) => Tracked::Failed("no result recorded".into()),
                    (TaskState::Failed | TaskState::Cancelled, _) => Tracked::Failed(last_reason()),
                    (TaskState::Ready | TaskState::Leased, _) => Tracked::Waiting,
                };
                let key = ArchKey::of(&p);
                self.train_eval_ids.insert(task.id, key.clone());
                self.changed.insert(key.clone());
                self.train_eval.insert(key, state);
            }
            TaskKind::Supernet => {
                let p: SupernetPayload = nat_schema::decode("supernet payload", &task.payload)?;
                let state = match (task.state, &task.result) {
                    (TaskState::Done, Some(r)) => {
                        Tracked::Done(nat_schema::decode("supernet result", r)?)
                    }
                    (TaskState::Done, None) => Tracked::Failed("no result recorded".into()),
                    (TaskState::Failed | TaskState::Cancelled, _) => Tracked::Failed(last_reason()),
                    (TaskState::Ready | TaskState::Leased, _) => Tracked::Waiting,
                };
                self.supernet_ids.insert(task.id, shard_key(&p));
                self.supernet.insert(shard_key(&p), (task.id, state));
            }
        }
        Ok(())
    }

    /// Adds a task this driver just created (waiting for a worker).
    pub(super) fn track_new(&mut self, id: TaskId, task: &NewTask) -> Result<(), Failure> {
        self.tasks += 1;
        let kind: TaskKind = task
            .kind
            .parse()
            .map_err(|e| Failure::Fatal(format!("new task: {e}")))?;
        match kind {
            TaskKind::TrainEval => {
                let p: TrainEvalPayload = nat_schema::decode("train_eval payload", &task.payload)?;
                let key = ArchKey::of(&p);
                self.train_eval_ids.insert(id, key.clone());
                self.train_eval.insert(key, Tracked::Waiting);
            }
            TaskKind::Supernet => {
                let p: SupernetPayload = nat_schema::decode("supernet payload", &task.payload)?;
                self.supernet_ids.insert(id, shard_key(&p));
                self.supernet.insert(shard_key(&p), (id, Tracked::Waiting));
            }
        }
        Ok(())
    }

    /// Reads the job's log after the cursor and applies the task events it holds: O(new
    /// events), never a re-read of the job's tasks.
    pub(super) async fn refresh(&mut self, store: &dyn Store, job: JobId) -> Result<(), Failure> {
        loop {
            let events = store.events_after(job, self.cursor, EVENT_PAGE).await?;
            let n = events.len();
            for e in events {
                self.cursor = e.seq;
                match JobEvent::decode(&e.kind, &e.payload)? {
                    JobEvent::TaskSucceeded(s) => {
                        let id = parse_task(&s.task_id)?;
                        if let Some(key) = self.train_eval_ids.get(&id) {
                            let r: TrainEvalResult =
                                nat_schema::decode("train_eval result", &s.result)?;
                            self.changed.insert(key.clone());
                            self.train_eval
                                .insert(key.clone(), Tracked::Done(r.outcome));
                        } else if let Some(key) = self.supernet_ids.get(&id) {
                            let r: SupernetResult =
                                nat_schema::decode("supernet result", &s.result)?;
                            self.supernet.insert(*key, (id, Tracked::Done(r)));
                        }
                    }
                    JobEvent::TaskFailed(f) => {
                        let id = parse_task(&f.task_id)?;
                        let reason = f
                            .reasons
                            .last()
                            .cloned()
                            .unwrap_or_else(|| "no reason recorded".into());
                        if let Some(key) = self.train_eval_ids.get(&id) {
                            self.changed.insert(key.clone());
                            self.train_eval.insert(key.clone(), Tracked::Failed(reason));
                        } else if let Some(key) = self.supernet_ids.get(&id) {
                            self.supernet.insert(*key, (id, Tracked::Failed(reason)));
                        }
                    }
                    _ => {}
                }
            }
            if n < EVENT_PAGE as usize {
                return Ok(());
            }
        }
    }

    /// The state of the `train_eval` task of `key`, if the job has one.
    pub(super) fn train_eval(&self, key: &ArchKey) -> Option<&Tracked<TrainEvalOutcome>> {
        self.train_eval.get(key)
    }

    /// The keys whose task changed since the last call (drained).
    pub(super) fn take_changed(&mut self) -> HashSet<ArchKey> {
        std::mem::take(&mut self.changed)
    }

    /// The shard tasks of `round` (the warm-up: [`WARMUP_ROUND`]) by shard index.
    pub(super) fn shards(&self, round: i64) -> Vec<(u32, TaskId, Tracked<SupernetResult>)> {
        self.supernet
            .range((round, 0)..=(round, u32::MAX))
            .map(|((_, shard), (id, state))| (*shard, *id, state.clone()))
            .collect()
    }

    /// Forgets the shard tasks of a committed `round` (the warm-up: [`WARMUP_ROUND`]): nothing
    /// reads them again, so the tracker holds the shards of the current round only, whatever
    /// the number of rounds the job ran. A late event of a forgotten task is ignored.
    pub(super) fn forget_round(&mut self, round: i64) {
        let ids: Vec<TaskId> = self
            .supernet
            .range((round, 0)..=(round, u32::MAX))
            .map(|(_, (id, _))| *id)
            .collect();
        for id in ids {
            self.supernet_ids.remove(&id);
        }
        self.supernet.retain(|(r, _), _| *r != round);
    }

    /// Forgets the shard tasks of the learning rounds before `iteration` (all committed: the
    /// driver's progress moves past a round only after its version is committed), and the
    /// warm-up's once a learning round is done. Called after [`Tracker::load`] so that a
    /// restarted driver does not hold the shards of every round the job ran.
    pub(super) fn forget_rounds_before(&mut self, iteration: u32) {
        let first = if iteration > 0 { WARMUP_ROUND } else { 0 };
        let done: Vec<i64> = self
            .supernet
            .keys()
            .map(|(r, _)| *r)
            .filter(|r| (first..i64::from(iteration)).contains(r))
            .collect();
        for round in done {
            self.forget_round(round);
        }
    }

    /// Entries the tracker holds: (`train_eval` keys, `supernet` shard tasks).
    pub(super) fn held(&self) -> (usize, usize) {
        (self.train_eval.len(), self.supernet.len())
    }

    /// Marks a shard task as ended by the driver (cancelled at the round's deadline).
    pub(super) fn cancelled(&mut self, id: TaskId) {
        if let Some(key) = self.supernet_ids.get(&id) {
            self.supernet.insert(
                *key,
                (
                    id,
                    Tracked::Failed("cancelled at the round's deadline".into()),
                ),
            );
        }
    }

    /// Tasks of the job known to the tracker.
    pub(super) fn task_count(&self) -> usize {
        self.tasks
    }
}

fn parse_task(id: &str) -> Result<TaskId, Failure> {
    id.parse()
        .map_err(|e| Failure::Fatal(format!("event names task {id:?}: {e}")))
}

impl Run {
    /// Scores every (genotype, seed) as `measure` says: from this job's tasks, the
    /// reward-estimate cache (validation split only), or new `train_eval` tasks (one per
    /// distinct key), waiting until all are known. Each wake-up costs the new events and the
    /// keys that changed, not the job's size. Keyed by (canonical hash, seed).
    pub(super) async fn scores(
        &mut self,
        spec: &OptimizeJobSpec,
        wanted: &[(Genotype, u64)],
        measure: Measure<'_>,
    ) -> Result<HashMap<(String, u64), Score>, Failure> {
        let budget_key = measure.budget.key();
        let mut distinct: BTreeMap<(String, u64), &Genotype> = BTreeMap::new();
        for (g, seed) in wanted {
            distinct.entry((g.canonical_hash(), *seed)).or_insert(g);
        }
        let key_of = |hash: &str, seed: u64| ArchKey {
            hash: hash.to_string(),
            budget: budget_key.clone(),
            seed,
            split: measure.split,
        };
        let mut known: HashMap<(String, u64), Score> = HashMap::new();
        let mut missing = Vec::new();
        let mut waiting: HashSet<ArchKey> = HashSet::new();
        for ((hash, seed), g) in &distinct {
            let key = key_of(hash, *seed);
            if self.tracker.train_eval(&key).is_some() {
                waiting.insert(key);
                continue;
            }
            if measure.cached() {
                let cached = RewardKey {
                    arch_hash: hash.clone(),
                    dataset: spec.base.dataset.clone(),
                    budget: budget_key.clone(),
                };
                if let Some(e) = self.c.store.reward_estimate(&cached).await? {
                    if e.count > 0 && e.mean.is_finite() {
                        nat_telemetry::record::reward_cache_lookup(nat_telemetry::CacheResult::Hit);
                        known.insert((hash.clone(), *seed), Score::Known(e.mean, None));
                        continue;
                    }
                }
                nat_telemetry::record::reward_cache_lookup(nat_telemetry::CacheResult::Miss);
            }
            missing.push((*g, *seed));
            waiting.insert(key);
        }
        if !missing.is_empty() {
            self.create_tasks(spec, &missing, measure).await?;
        }
        // The first pass looks at every key; later passes only at those that changed.
        let mut check: Vec<ArchKey> = waiting.iter().cloned().collect();
        loop {
            for key in check.drain(..) {
                if !waiting.contains(&key) {
                    continue;
                }
                let score = match self.tracker.train_eval(&key) {
                    Some(Tracked::Done(o)) if o.accuracy.is_finite() => {
                        Score::Known(o.accuracy, Some(*o))
                    }
                    Some(Tracked::Done(_) | Tracked::Failed(_)) => Score::Failed,
                    Some(Tracked::Waiting) | None => continue,
                };
                known.insert((key.hash.clone(), key.seed), score);
                waiting.remove(&key);
            }
            if waiting.is_empty() {
                return Ok(known);
            }
            self.wait().await?;
            self.tracker.refresh(&*self.c.store, self.job).await?;
            check.extend(self.tracker.take_changed());
        }
    }

    /// Queues one `train_eval` task per (genotype, seed) as `measure` says and tracks them.
    async fn create_tasks(
        &mut self,
        spec: &OptimizeJobSpec,
        wanted: &[(&Genotype, u64)],
        measure: Measure<'_>,
    ) -> Result<(), Failure> {
        let existing = self.tracker.task_count();
        let tasks = wanted
            .iter()
            .enumerate()
            .map(|(i, (g, seed))| {
                let hash = g.canonical_hash();
                let payload = TrainEvalPayload {
                    index: u32::try_from(existing + i).unwrap_or(u32::MAX),
                    genotype_json: g.to_json(),
                    arch_hash: hash.clone(),
                    dataset: spec.base.dataset.clone(),
                    dataset_shape: Some(spec.base.dataset_shape),
                    budget: *measure.budget,
                    seed: *seed,
                    checkpointed: measure.checkpointed,
                    checkpoint_key: if measure.checkpointed {
                        format!("{}-{}-{}-{}", self.job, hash, seed, measure.split)
                    } else {
                        String::new()
                    },
                    split: measure.split,
                };
                Ok(NewTask {
                    kind: TaskKind::TrainEval.as_str().into(),
                    payload: nat_schema::encode("train_eval payload", &payload)?,
                    requirements: requirements_of(&spec.base),
                    max_attempts: self.c.config.max_attempts,
                })
            })
            .collect::<Result<Vec<_>, Failure>>()?;
        self.add_tasks(tasks, nat_telemetry::TaskKind::TrainEval)
            .await
    }

    /// Adds tasks to the job and tracks them (as waiting: they were just created).
    pub(super) async fn add_tasks(
        &mut self,
        tasks: Vec<NewTask>,
        kind: nat_telemetry::TaskKind,
    ) -> Result<(), Failure> {
        let n = tasks.len();
        let now = self.c.clock.now();
        let ids = self.c.store.add_tasks(self.job, tasks.clone(), now).await?;
        for (id, t) in ids.into_iter().zip(&tasks) {
            self.tracker.track_new(id, t)?;
        }
        nat_telemetry::record::tasks_created(kind, n as u64);
        self.c.wake_workers(n);
        self.c.job_changed(self.job);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add_shard(t: &mut Tracker, round: i64, shard: u32) -> TaskId {
        let id = TaskId::new();
        t.tasks += 1;
        t.supernet_ids.insert(id, (round, shard));
        t.supernet.insert((round, shard), (id, Tracked::Waiting));
        id
    }

    #[test]
    fn committed_rounds_leave_the_tracker() {
        let mut t = Tracker::default();
        add_shard(&mut t, WARMUP_ROUND, 0);
        t.forget_round(WARMUP_ROUND);
        let screening = add_shard(&mut t, SCREENING_ROUND, 0);
        for round in 0..500i64 {
            let ids: Vec<TaskId> = (0..4).map(|s| add_shard(&mut t, round, s)).collect();
            assert_eq!(t.shards(round).len(), 4);
            t.forget_round(round);
            assert!(t.shards(round).is_empty());
            assert!(ids.iter().all(|id| !t.supernet_ids.contains_key(id)));
            // The screening's shard and nothing else: one round's worth at most.
            assert_eq!(t.held(), (0, 1));
        }
        assert_eq!(t.task_count(), 2 + 500 * 4, "the task index keeps counting");
        assert!(t.supernet_ids.contains_key(&screening));
    }

    #[test]
    fn a_restarted_tracker_keeps_only_the_current_round_and_an_uncommitted_warmup() {
        let mut t = Tracker::default();
        add_shard(&mut t, WARMUP_ROUND, 0);
        // Round 0 not done yet: the warm-up may be uncommitted, it stays.
        add_shard(&mut t, 0, 0);
        t.forget_rounds_before(0);
        assert_eq!(t.held(), (0, 2));
        for round in 1..10 {
            add_shard(&mut t, round, 0);
            add_shard(&mut t, round, 1);
        }
        t.forget_rounds_before(9);
        assert_eq!(t.held(), (0, 2), "round 9's two shards");
        assert_eq!(t.shards(9).len(), 2);
        assert!(t.shards(WARMUP_ROUND).is_empty());
    }
}
