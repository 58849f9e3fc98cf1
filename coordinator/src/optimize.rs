//! The `optimize` job kind (NAT, spec §4 and §5.1), `proxy` and `supernet` reward modes.
//!
//! A job runs three phases, each driven by one tokio task per job ([`spawn`]):
//! 1. **learn**: each round samples M transformations α of the inputs β with the job's policy
//!    (`nat_policy::driver::PolicyDriver`), scores them, records reward = acc(α) − acc(β) per
//!    sample, and lets the driver take policy steps (exactly-once reward consumption in the
//!    store) until the round's rewards are used. How a round is scored is the job's reward mode:
//!    - `proxy`: α and β by accuracy after a short training (`train_eval` tasks; an architecture
//!      already measured with the same dataset and budget is answered from the reward-estimate
//!      cache or this job's earlier task, so nothing is trained twice);
//!    - `supernet` (spec §4.3, §4.6): one `supernet` task per round holding the round's M
//!      (β, α) pairs, the job's stable `supernet_key` (`job-<job id>`, so a worker keeps
//!      training the same shared weights across rounds) and the resolved
//!      [`SupernetBudget`]; the worker trains w on random β between pairs and reports
//!      acc(β), acc(α) on the same minibatch per pair;
//! 2. **derive**: K transformations of every input (or the argmax), each trained from scratch
//!    with the job's budget (`train_eval`, in both reward modes); the best is kept;
//! 3. **final check**: original and best measured with the final budget (the job's budget unless
//!    the spec names another) and the job's seed.
//!
//! Crash safety: the driver keeps its progress in the job's `result` document ([`Progress`]
//! under `driver`), the samples and rewards in the store's policy tables, and the measurements
//! in tasks and reward estimates. [`resume_all`] restarts every unfinished optimize job after a
//! coordinator restart; every step is idempotent (a reward recorded twice is ignored, a task is
//! only created for a (hash, budget) key the job has no task for).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nat_arch::{Genotype, NetworkSpec, OpSet};
use nat_policy::driver::{DriverError, PolicyDriver, StepOutcome};
use nat_policy::{ActionSpace, PolicyConfig, PolicyLearner, Profile};
use nat_proto::v1;
use nat_store::{
    Completion, Job, JobFilter, JobId, JobOutcome, NewJob, NewTask, Requirements, RewardKey,
    SampleId, StoreError, TaskState,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::budget::{Budget, SupernetBudget};
use crate::convert::{self, JobSpec, TrainEvalOutcome, TrainEvalPayload};
use crate::error::ApiError;
use crate::job_api::StoredResult;
use crate::state::Coordinator;

/// `jobs.kind` of an optimize job.
pub const JOB_KIND: &str = "optimize";
/// Default K of the derive phase (spec §5.1).
pub const DEFAULT_DERIVE_SAMPLES: u32 = 10;
/// Most policy updates one job may ask for.
pub const MAX_ITERATIONS: u32 = 100_000;
/// Most rewards per update.
pub const MAX_SAMPLES_PER_ITERATION: u32 = 1024;
/// Most derived candidates per input.
pub const MAX_DERIVE_SAMPLES: u32 = 1000;
/// Cells' intermediate nodes of random inputs (β ~ p(β), spec §4.2).
const RANDOM_INPUT_NODES: usize = 4;
/// How often a waiting driver re-reads the store without a change signal.
const POLL: Duration = Duration::from_millis(250);
/// Pause before a driver retries after a store error.
const RETRY: Duration = Duration::from_secs(1);
/// Events appended as the job moves.
pub mod event {
    /// `{"phase": "learn" | "derive" | "final"}`.
    pub const PHASE: &str = "phase";
    /// `{"iteration", "rewards": [f64…]}`: the rewards of one round.
    pub const REWARDS: &str = "rewards";
    /// The dashboard's `policy_update` document.
    pub const POLICY_UPDATE: &str = "policy_update";
    /// The dashboard's `new_best` document.
    pub const NEW_BEST: &str = "new_best";
}

/// `jobs.spec` of an optimize job: the evaluate spec plus the optimize settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizeJobSpec {
    /// Name, dataset, seed, budget, architectures, device, as for `evaluate`.
    #[serde(flatten)]
    pub base: JobSpec,
    /// The optimize settings, defaults resolved.
    pub optimize: OptimizeSettings,
}

/// How the learning phase measures a reward.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RewardKind {
    /// α and β trained from scratch on a short budget (`train_eval` tasks).
    #[default]
    Proxy,
    /// (β, α) pairs scored on the job's weight-sharing supernet (`supernet` tasks).
    Supernet,
}

/// Resolved settings of an optimize job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizeSettings {
    /// Reward mode (absent in specs stored before the supernet mode: proxy).
    #[serde(default)]
    pub reward: RewardKind,
    /// The supernet's settings (`supernet` reward only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supernet: Option<SupernetBudget>,
    /// Op set of the transformation space (`nat-fully-concat` or `nat-plus-plus`).
    pub op_set: OpSet,
    /// Policy profile: `default` or `reference`.
    pub profile: String,
    /// Stored policy to start from; empty = a fresh policy `job-<job id>`.
    pub policy_id: String,
    /// Policy updates (learning rounds).
    pub iterations: u32,
    /// Rewards per round (M).
    pub samples_per_iteration: u32,
    /// K of the derive phase.
    pub derive_samples: u32,
    /// Derive with the argmax instead of K samples.
    pub derive_argmax: bool,
    /// Learn on random architectures of the space instead of the inputs.
    pub random_inputs: bool,
    /// Learning-rate override (0 = the profile's).
    pub learning_rate: f64,
    /// Entropy weight override per cell type (0 = the profile's).
    pub entropy_weight: f64,
    /// Staleness override (0 = the profile's).
    pub max_staleness: u32,
    /// Preset name of the final-check budget.
    pub final_budget_preset: String,
    /// The final-check budget.
    pub final_budget: Budget,
}

impl OptimizeSettings {
    fn space(&self) -> ActionSpace {
        match self.op_set {
            OpSet::NatPlusPlus => ActionSpace::NatPlusPlus,
            set => ActionSpace::Nat(set),
        }
    }

    fn policy_config(&self) -> PolicyConfig {
        let profile = if self.profile == "reference" {
            Profile::Reference
        } else {
            Profile::Default
        };
        let mut config = PolicyConfig::new(self.space(), profile);
        if self.learning_rate > 0.0 {
            config.learn.learning_rate = self.learning_rate;
        }
        if self.entropy_weight > 0.0 {
            config.learn.entropy_normal = self.entropy_weight;
            config.learn.entropy_reduce = self.entropy_weight;
        }
        if self.max_staleness > 0 {
            config.learn.max_staleness = u64::from(self.max_staleness);
        }
        config
    }
}

/// What `SubmitJob` validated before handing an optimize job over.
#[derive(Debug, Clone)]
pub struct Validated {
    /// The job spec fields shared with `evaluate`.
    pub base: JobSpec,
    /// Parsed inputs (empty with `random_inputs`).
    pub genotypes: Vec<Genotype>,
}

/// Default rounds of a budget preset.
fn default_iterations(preset: &str) -> u32 {
    match preset {
        "smoke" => 3,
        "small" => 20,
        "paper" => 200,
        _ => 10,
    }
}

/// Default M of a budget preset.
fn default_samples(preset: &str) -> u32 {
    if preset == "smoke" {
        4
    } else {
        8
    }
}

/// Validates the optimize part of a submission, creates the job and starts its driver.
pub async fn submit(
    c: &Arc<Coordinator>,
    r: &v1::SubmitJobRequest,
    v: Validated,
) -> Result<v1::Job, ApiError> {
    let o = r.optimize.clone().unwrap_or_default();
    let reward = match v1::RewardMode::try_from(o.reward) {
        Ok(v1::RewardMode::Proxy) | Ok(v1::RewardMode::Unspecified) => RewardKind::Proxy,
        Ok(v1::RewardMode::Supernet) => RewardKind::Supernet,
        Err(_) => {
            return Err(ApiError::invalid(
                "optimize.reward",
                format!("unknown reward mode {}", o.reward),
            ))
        }
    };
    let op_set = match v1::SearchSpace::try_from(o.space) {
        Ok(v1::SearchSpace::Nat) | Ok(v1::SearchSpace::Unspecified) => nat_op_set(&v.genotypes),
        Ok(v1::SearchSpace::NatPlusPlus) => OpSet::NatPlusPlus,
        Err(_) => {
            return Err(ApiError::invalid(
                "optimize.space",
                format!("unknown search space {}", o.space),
            ))
        }
    };
    let profile = match o.policy_profile.trim() {
        "" | "default" => "default",
        "reference" => "reference",
        other => {
            return Err(ApiError::invalid(
                "optimize.policy_profile",
                format!(
                    "unknown profile {:?} (expected default or reference)",
                    crate::state::excerpt(other)
                ),
            ))
        }
    };
    let preset = v.base.budget_preset.clone();
    let iterations = bounded(
        "optimize.iterations",
        o.iterations,
        default_iterations(&preset),
        MAX_ITERATIONS,
    )?;
    let samples_per_iteration = bounded(
        "optimize.samples_per_iteration",
        o.samples_per_iteration,
        default_samples(&preset),
        MAX_SAMPLES_PER_ITERATION,
    )?;
    let derive_samples = bounded(
        "optimize.derive_samples",
        o.derive_samples,
        DEFAULT_DERIVE_SAMPLES,
        MAX_DERIVE_SAMPLES,
    )?;
    if o.final_top_k > 1 {
        return Err(ApiError::invalid(
            "optimize.final_top_k",
            "only the best transformation (1) is retrained in this coordinator",
        ));
    }
    for (name, value, max) in [
        ("optimize.learning_rate", o.learning_rate, 1.0),
        ("optimize.entropy_weight", o.entropy_weight, 10.0),
    ] {
        if !(value.is_finite() && (0.0..=max).contains(&value)) {
            return Err(ApiError::invalid(
                name,
                format!("must be a number in [0, {max}], got {value}"),
            ));
        }
    }
    if o.max_staleness > 1000 {
        return Err(ApiError::invalid(
            "optimize.max_staleness",
            "must be at most 1000",
        ));
    }
    let (final_budget_preset, final_budget) = match o.final_budget.as_ref() {
        Some(b) => Budget::resolve(Some(b), "optimize.final_budget")?,
        None => (v.base.budget_preset.clone(), v.base.budget),
    };
    crate::state::check_len("optimize.policy_id", &o.policy_id, 200)?;
    let policy_id = o.policy_id.trim().to_string();
    if !policy_id.is_empty() {
        match c.store.latest_checkpoint(&policy_id).await {
            Ok(checkpoint) => {
                // A stored policy embeds the ops of one list: the job must use the same one.
                let stored = checkpoint.meta["op_set"].as_str().unwrap_or_default();
                if !stored.is_empty() && stored != op_set_name(op_set) {
                    return Err(ApiError::invalid(
                        "optimize.policy_id",
                        format!(
                            "policy {:?} was learned over the {stored} op list, but this job's \
                             space and inputs use {}",
                            crate::state::excerpt(&policy_id),
                            op_set_name(op_set)
                        ),
                    ));
                }
            }
            Err(StoreError::NotFound { .. }) => {
                return Err(ApiError::invalid(
                    "optimize.policy_id",
                    format!("no stored policy {:?}", crate::state::excerpt(&policy_id)),
                ))
            }
            Err(e) => return Err(e.into()),
        }
    }
    let supernet = match reward {
        RewardKind::Proxy => None,
        RewardKind::Supernet => Some(supernet_settings(
            &o,
            op_set,
            &v.base.budget_preset,
            &v.genotypes,
        )?),
    };
    let settings = OptimizeSettings {
        reward,
        supernet,
        op_set,
        profile: profile.to_string(),
        policy_id,
        iterations,
        samples_per_iteration,
        derive_samples,
        derive_argmax: o.derive_argmax,
        random_inputs: o.random_inputs,
        learning_rate: o.learning_rate,
        entropy_weight: o.entropy_weight,
        max_staleness: o.max_staleness,
        final_budget_preset,
        final_budget,
    };
    let space = settings.space();
    for (i, g) in v.genotypes.iter().enumerate() {
        let field = format!("architectures[{i}]");
        nat_policy::input::validate_input(space, g, &field)
            .map_err(|e| ApiError::invalid(&field, e.to_string()))?;
    }
    if v.genotypes.is_empty() && !settings.random_inputs {
        return Err(ApiError::invalid(
            "architectures",
            "at least one architecture is required (or optimize.random_inputs)",
        ));
    }
    let spec = OptimizeJobSpec {
        base: v.base,
        optimize: settings,
    };
    let spec_json = serde_json::to_value(&spec).map_err(internal)?;
    let job = c
        .store
        .create_job(
            NewJob {
                kind: JOB_KIND.into(),
                spec: spec_json,
                priority: r.priority,
                completion: Completion::Manual,
            },
            Vec::new(),
            c.clock.now(),
        )
        .await?;
    tracing::info!(job = %job.id, iterations, samples_per_iteration, "optimize job submitted");
    nat_telemetry::record::job_submitted(nat_telemetry::JobKind::from_kind(&job.kind));
    c.job_changed(job.id);
    spawn(c.clone(), job.id);
    Ok(convert::job_to_proto(&job, Some(0)))
}

/// Resolves and validates `optimize.supernet` for a supernet-reward job: the preset's settings
/// with the non-zero overrides; `op_set` and `num_nodes`, when given, must agree with the job's
/// space and inputs (the supernet holds every op of the space, B nodes per cell).
fn supernet_settings(
    o: &v1::OptimizeSpec,
    op_set: OpSet,
    preset: &str,
    inputs: &[Genotype],
) -> Result<SupernetBudget, ApiError> {
    let overrides = o.supernet.as_ref();
    let resolved = SupernetBudget::resolve(preset, overrides, "optimize.supernet")?;
    let wanted_set = op_set_name(op_set);
    if let Some(given) = overrides.map(|s| s.op_set.trim()).filter(|s| !s.is_empty()) {
        if given != wanted_set {
            return Err(ApiError::invalid(
                "optimize.supernet.op_set",
                format!(
                    "the supernet must hold the job's space ({wanted_set}), got {:?}; choose the space with optimize.space",
                    crate::state::excerpt(given)
                ),
            ));
        }
    }
    let nodes = if o.random_inputs || inputs.is_empty() {
        RANDOM_INPUT_NODES
    } else {
        inputs[0].num_nodes()
    };
    if !o.random_inputs {
        if let Some(i) = inputs
            .iter()
            .position(|g| g.num_nodes() != nodes || g.reduce.num_nodes() != nodes)
        {
            return Err(ApiError::invalid(
                format!("architectures[{i}]"),
                format!(
                    "the supernet reward scores every input on one supernet of {nodes} nodes per cell; this one has {}",
                    inputs[i].num_nodes()
                ),
            ));
        }
    }
    let given_nodes = overrides.map_or(0, |s| s.num_nodes);
    if given_nodes != 0 && given_nodes as usize != nodes {
        return Err(ApiError::invalid(
            "optimize.supernet.num_nodes",
            format!("the inputs have {nodes} intermediate nodes per cell, got {given_nodes}"),
        ));
    }
    Ok(resolved)
}

/// The serde (wire) name of an op set, as `SupernetSettings.op_set` carries it.
fn op_set_name(op_set: OpSet) -> &'static str {
    match op_set {
        OpSet::NatFullyConcat => "nat-fully-concat",
        OpSet::NatLooseEnd => "nat-loose-end",
        OpSet::NatPlusPlus => "nat-plus-plus",
    }
}

/// The NAT op list a job's inputs use. The official code keeps two (spec §1.2): one for fully
/// concatenated cells (DARTS) and one for loose-end cells (ENAS, and the hand-crafted blocks
/// that output one node), chosen by the network's kind. Inputs whose cells all concatenate
/// every intermediate node take the fully-concat list, the others the loose-end list; inputs
/// whose ops only the other list has take that one; ops in neither keep the first choice, whose
/// validation then names the offending edge. Random inputs (none given) are fully concatenated.
fn nat_op_set(inputs: &[Genotype]) -> OpSet {
    let fits = |set: OpSet| {
        inputs.iter().all(|g| {
            nat_policy::input::validate_input(ActionSpace::Nat(set), g, "architecture").is_ok()
        })
    };
    let fully_concatenated = |cell: &nat_arch::Cell| {
        let mut concat = cell.concat.clone();
        concat.sort_unstable();
        concat == (2..2 + cell.nodes.len()).collect::<Vec<_>>()
    };
    let (first, second) = if inputs
        .iter()
        .all(|g| fully_concatenated(&g.normal) && fully_concatenated(&g.reduce))
    {
        (OpSet::NatFullyConcat, OpSet::NatLooseEnd)
    } else {
        (OpSet::NatLooseEnd, OpSet::NatFullyConcat)
    };
    if !fits(first) && fits(second) {
        second
    } else {
        first
    }
}

fn bounded(field: &str, value: u32, default: u32, max: u32) -> Result<u32, ApiError> {
    if value > max {
        return Err(ApiError::invalid(
            field,
            format!("must be at most {max}, got {value}"),
        ));
    }
    Ok(if value == 0 { default } else { value })
}

fn internal(e: impl std::error::Error + Send + Sync + 'static) -> ApiError {
    ApiError::Internal(StoreError::backend(e))
}

/// Restarts the driver of every unfinished optimize job (after a coordinator restart).
pub async fn resume_all(c: &Arc<Coordinator>) -> Result<usize, StoreError> {
    let mut ids = Vec::new();
    for state in [nat_store::JobState::Queued, nat_store::JobState::Running] {
        let mut offset = 0u64;
        loop {
            let page = c
                .store
                .list_jobs(JobFilter {
                    state: Some(state),
                    kind: Some(JOB_KIND.into()),
                    limit: nat_store::limits::MAX_PAGE,
                    offset,
                })
                .await?;
            let n = page.len();
            ids.extend(page.into_iter().map(|j| j.id));
            if n < nat_store::limits::MAX_PAGE as usize {
                break;
            }
            offset += n as u64;
        }
    }
    for id in &ids {
        tracing::info!(job = %id, "resuming optimize job");
        spawn(c.clone(), *id);
    }
    Ok(ids.len())
}

/// Starts the driver task of one job. It ends when the job is final or the coordinator stops.
pub fn spawn(c: Arc<Coordinator>, job: JobId) {
    tokio::spawn(async move {
        let mut shutdown = c.shutdown_signal();
        loop {
            if *shutdown.borrow() {
                return;
            }
            let run = Run::new(c.clone(), job);
            let result = tokio::select! {
                r = run.drive() => r,
                _ = shutdown.changed() => return,
            };
            match result {
                Ok(()) => return,
                Err(Failure::Stopped) => return,
                Err(Failure::Fatal(error)) => {
                    tracing::warn!(job = %job, %error, "optimize job failed");
                    let outcome = JobOutcome::Failed {
                        error: error.chars().take(1000).collect(),
                        result: None,
                    };
                    match c.store.finish_job(job, outcome, c.clock.now()).await {
                        Ok(_) => {
                            c.reservations.drop_job(job);
                            nat_telemetry::record::job_finished(
                                nat_telemetry::JobKind::Optimize,
                                nat_telemetry::JobState::Failed,
                            );
                            c.job_changed(job);
                            return;
                        }
                        Err(StoreError::FailedPrecondition(_)) => return,
                        Err(e) => nat_telemetry::report_error(&e, "cannot fail optimize job"),
                    }
                }
                Err(Failure::Transient(error)) => {
                    tracing::warn!(job = %job, %error, "optimize driver retries after an error");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(RETRY) => {}
                _ = shutdown.changed() => return,
            }
        }
    });
}

/// Why a driver run stopped early.
#[derive(Debug)]
enum Failure {
    /// The job is final (cancelled, or finished by another process) or the coordinator stops.
    Stopped,
    /// The job cannot succeed; it is failed with this error.
    Fatal(String),
    /// A store or thread error; the driver restarts from the stored state.
    Transient(String),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::FailedPrecondition(_) => Failure::Stopped,
            StoreError::Backend(_) => Failure::Transient(format!("store: {e}")),
            other => Failure::Fatal(format!("store: {other}")),
        }
    }
}

impl From<DriverError> for Failure {
    fn from(e: DriverError) -> Self {
        match e {
            DriverError::Store(s) => s.into(),
            DriverError::Join(_) | DriverError::Poisoned => Failure::Transient(e.to_string()),
            other => Failure::Fatal(other.to_string()),
        }
    }
}

/// The driver's progress, stored under `driver` in the job's result document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Progress {
    /// `learn`, `derive`, `final`.
    pub phase: String,
    /// Learning rounds completed.
    pub iteration: u32,
    /// Rewards recorded (and consumed by policy steps).
    pub rewards: u64,
    /// Samples of the current round, waiting for their accuracies.
    pub pending: Vec<PendingSample>,
    /// Per input: the derived candidates (canonical JSON).
    pub candidates: Vec<Vec<String>>,
    /// Best reward seen so far.
    pub best_reward: Option<f64>,
    /// Latest committed policy version.
    pub policy_version: i64,
}

/// One sampled (β, α) pair waiting for its reward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingSample {
    /// The store's sample id.
    pub sample_id: SampleId,
    /// β (canonical JSON).
    pub beta: String,
    /// α (canonical JSON).
    pub alpha: String,
}

/// The measurement of one architecture under one budget.
#[derive(Debug, Clone, Copy)]
enum Score {
    /// Measured: accuracy, and the worker's numbers when this job trained it.
    Known(f64, Option<TrainEvalOutcome>),
    /// Its task failed for good.
    Failed,
}

/// One driver run over one job.
struct Run {
    c: Arc<Coordinator>,
    job: JobId,
    changes: broadcast::Receiver<JobId>,
}

impl Run {
    fn new(c: Arc<Coordinator>, job: JobId) -> Self {
        let changes = c.subscribe_jobs();
        Run { c, job, changes }
    }

    async fn drive(mut self) -> Result<(), Failure> {
        let job = self.c.store.get_job(self.job).await?;
        if job.state.is_final() {
            return Err(Failure::Stopped);
        }
        let spec: OptimizeJobSpec = serde_json::from_value(job.spec.clone())
            .map_err(|e| Failure::Fatal(format!("job spec is not an optimize spec: {e}")))?;
        let mut progress: Progress = job
            .result
            .as_ref()
            .and_then(|r| r.get("driver"))
            .and_then(|d| serde_json::from_value(d.clone()).ok())
            .unwrap_or_default();
        let inputs = spec
            .base
            .architectures
            .iter()
            .map(|s| Genotype::from_json_str(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Failure::Fatal(format!("stored architecture: {e}")))?;
        let s = &spec.optimize;
        let policy_id = if s.policy_id.is_empty() {
            format!("job-{}", self.job)
        } else {
            s.policy_id.clone()
        };
        let driver = Arc::new(
            PolicyDriver::open(
                self.c.store.clone(),
                &policy_id,
                s.policy_config(),
                spec.base.seed,
                Some(self.job),
                self.c.clock.now(),
            )
            .await?,
        );
        if progress.phase.is_empty() {
            progress.phase = "learn".into();
            progress.policy_version = driver.version()?;
            self.event(event::PHASE, json!({"phase": "learn"})).await?;
            self.save(&spec, &progress, &driver, None).await?;
        }
        if progress.phase == "learn" {
            self.learn(&spec, &inputs, &driver, &mut progress).await?;
            progress.phase = "derive".into();
            self.event(event::PHASE, json!({"phase": "derive"})).await?;
            self.save(&spec, &progress, &driver, None).await?;
        }
        if inputs.is_empty() {
            // A general policy learned on random architectures: nothing to derive.
            let result = self.document(&spec, &progress, &driver, Vec::new())?;
            return self.finish(result).await;
        }
        let best = self.derive(&spec, &inputs, &driver, &mut progress).await?;
        if progress.phase != "final" {
            progress.phase = "final".into();
            self.event(event::PHASE, json!({"phase": "final"})).await?;
            self.save(&spec, &progress, &driver, None).await?;
        }
        let outcomes = self.final_check(&spec, &inputs, &best).await?;
        let result = self.document(&spec, &progress, &driver, outcomes)?;
        self.finish(result).await
    }

    async fn learn(
        &mut self,
        spec: &OptimizeJobSpec,
        inputs: &[Genotype],
        driver: &Arc<PolicyDriver>,
        progress: &mut Progress,
    ) -> Result<(), Failure> {
        let s = &spec.optimize;
        let m = s.samples_per_iteration as usize;
        while progress.iteration < s.iterations {
            if progress.pending.is_empty() {
                let round_seed = spec
                    .base
                    .seed
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    .wrapping_add(u64::from(progress.iteration));
                let (betas, per_input) = if s.random_inputs || inputs.is_empty() {
                    let mut rng = ChaCha8Rng::seed_from_u64(round_seed ^ 0xB5);
                    let betas: Vec<Genotype> = (0..m)
                        .map(|_| {
                            nat_arch::sampler::sample_genotype(
                                s.op_set,
                                RANDOM_INPUT_NODES,
                                &mut rng,
                            )
                        })
                        .collect();
                    (betas, 1)
                } else {
                    (inputs.to_vec(), m.div_ceil(inputs.len()).max(1))
                };
                let samples = driver
                    .sample(self.job, betas, per_input, round_seed, self.c.clock.now())
                    .await?;
                progress.pending = samples
                    .into_iter()
                    .take(m)
                    .map(|(id, sample)| PendingSample {
                        sample_id: id,
                        beta: sample.input.to_json(),
                        alpha: sample.alpha.to_json(),
                    })
                    .collect();
                self.save(spec, progress, driver, None).await?;
            }
            let measured = match s.reward {
                RewardKind::Proxy => self.proxy_rewards(spec, &progress.pending).await?,
                RewardKind::Supernet => {
                    self.supernet_rewards(spec, inputs, progress.iteration, &progress.pending)
                        .await?
                }
            };
            let mut rewards = Vec::new();
            for (p, reward) in progress.pending.iter().zip(measured) {
                let Some(reward) = reward else {
                    tracing::warn!(job = %self.job, sample = p.sample_id, "sample without a reward: its task failed");
                    continue;
                };
                driver.record_reward(p.sample_id, reward).await?;
                nat_telemetry::record::policy_reward(reward);
                rewards.push(reward);
                if progress.best_reward.is_none_or(|r| reward > r) {
                    progress.best_reward = Some(reward);
                }
            }
            self.event(
                event::REWARDS,
                json!({"iteration": progress.iteration, "rewards": rewards}),
            )
            .await?;
            loop {
                let t0 = Instant::now();
                match driver
                    .step(s.samples_per_iteration, self.c.clock.now())
                    .await?
                {
                    StepOutcome::Idle => break,
                    StepOutcome::DroppedOnly { version, dropped } => {
                        tracing::info!(job = %self.job, version, dropped, "stale samples dropped");
                    }
                    StepOutcome::Committed { version, stats } => {
                        progress.policy_version = version;
                        nat_telemetry::record::policy_updated(
                            version,
                            stats.baseline,
                            stats.used as u64,
                            stats.dropped_stale.len() as u64,
                            t0.elapsed(),
                        );
                        self.event(
                            event::POLICY_UPDATE,
                            json!({
                                "policy_version": version,
                                "iteration": progress.iteration,
                                "iterations": s.iterations,
                                "loss": stats.loss,
                                "baseline": stats.baseline,
                                "mean_reward": stats.mean_reward,
                                "rewards": rewards,
                                "samples_used": stats.used as u64,
                                "samples_stale": stats.dropped_stale.len() as u64,
                                "entropy": stats.mean_entropy,
                            }),
                        )
                        .await?;
                    }
                }
            }
            progress.rewards += rewards.len() as u64;
            progress.iteration += 1;
            progress.pending.clear();
            self.save(spec, progress, driver, None).await?;
        }
        Ok(())
    }

    /// Proxy reward of each pending sample: acc(α) − acc(β) after a short training from
    /// scratch (`None` where a training task failed for good).
    async fn proxy_rewards(
        &mut self,
        spec: &OptimizeJobSpec,
        pending: &[PendingSample],
    ) -> Result<Vec<Option<f64>>, Failure> {
        let mut wanted: Vec<Genotype> = Vec::new();
        for p in pending {
            for json in [&p.beta, &p.alpha] {
                wanted.push(
                    Genotype::from_json_str(json)
                        .map_err(|e| Failure::Fatal(format!("stored sample: {e}")))?,
                );
            }
        }
        let scores = self.scores(spec, &wanted, &spec.base.budget, false).await?;
        pending
            .iter()
            .map(|p| {
                Ok(
                    match (
                        scores.get(&hash_of(&p.beta)?),
                        scores.get(&hash_of(&p.alpha)?),
                    ) {
                        (Some(Score::Known(b, _)), Some(Score::Known(a, _))) => Some(a - b),
                        _ => None,
                    },
                )
            })
            .collect()
    }

    /// Supernet reward of each pending sample: the round's `supernet` task (created once per
    /// round; found again after a restart by its `iteration`) reports acc(β) and acc(α) per pair
    /// (`None` where it did not score the sample). A round whose task failed for good fails the
    /// job with the task's last reason: every later round would meet the same supernet.
    async fn supernet_rewards(
        &mut self,
        spec: &OptimizeJobSpec,
        inputs: &[Genotype],
        iteration: u32,
        pending: &[PendingSample],
    ) -> Result<Vec<Option<f64>>, Failure> {
        loop {
            let Some(task) = self.supernet_task(iteration).await? else {
                self.create_supernet_task(spec, inputs, iteration, pending)
                    .await?;
                continue;
            };
            match task.state {
                TaskState::Done => {
                    let by_sample = supernet_scores(&task.payload, task.result.as_ref());
                    return Ok(pending
                        .iter()
                        .map(|p| by_sample.get(&p.sample_id).copied())
                        .collect());
                }
                TaskState::Failed => {
                    let reason = task
                        .failures
                        .last()
                        .map_or_else(|| "no reason recorded".to_string(), |f| f.reason.clone());
                    return Err(Failure::Fatal(format!(
                        "learning round {iteration}: the supernet task {} failed: {reason}",
                        task.id
                    )));
                }
                // Tasks are cancelled with their job.
                TaskState::Cancelled => return Err(Failure::Stopped),
                TaskState::Ready | TaskState::Leased => self.wait().await?,
            }
        }
    }

    /// This job's `supernet` task of learning round `iteration`.
    async fn supernet_task(&self, iteration: u32) -> Result<Option<nat_store::Task>, Failure> {
        Ok(self.all_tasks().await?.into_iter().find(|t| {
            t.kind == SUPERNET_TASK
                && t.payload.get("iteration").and_then(Value::as_u64) == Some(u64::from(iteration))
        }))
    }

    /// Every task of this job, page by page from the store.
    async fn all_tasks(&self) -> Result<Vec<nat_store::Task>, Failure> {
        let mut out = Vec::new();
        loop {
            let page = self
                .c
                .store
                .list_tasks(
                    self.job,
                    None,
                    nat_store::limits::MAX_PAGE,
                    out.len() as u64,
                )
                .await?;
            let n = page.len();
            out.extend(page);
            if n < nat_store::limits::MAX_PAGE as usize {
                return Ok(out);
            }
        }
    }

    /// Queues the `supernet` task of one learning round: the round's (β, α) pairs in sample
    /// order, with the sample ids, the job's supernet key, dataset, seed and settings.
    async fn create_supernet_task(
        &self,
        spec: &OptimizeJobSpec,
        inputs: &[Genotype],
        iteration: u32,
        pending: &[PendingSample],
    ) -> Result<(), Failure> {
        let s = &spec.optimize;
        let settings = s.supernet.ok_or_else(|| {
            Failure::Fatal("a supernet-reward job without supernet settings".into())
        })?;
        let num_nodes = if s.random_inputs || inputs.is_empty() {
            RANDOM_INPUT_NODES
        } else {
            inputs[0].num_nodes()
        };
        let pairs: Vec<Value> = pending
            .iter()
            .map(|p| json!({"beta_json": p.beta, "alpha_json": p.alpha}))
            .collect();
        let sample_ids: Vec<SampleId> = pending.iter().map(|p| p.sample_id).collect();
        let payload = json!({
            "iteration": iteration,
            "sample_ids": sample_ids,
            "pairs": pairs,
            "dataset": spec.base.dataset,
            "settings": settings.payload_settings(op_set_name(s.op_set), num_nodes as u32),
            "seed": spec.base.seed,
            "supernet_key": supernet_key(self.job),
        });
        let task = NewTask {
            kind: SUPERNET_TASK.into(),
            payload,
            requirements: Requirements {
                needs_gpu: spec.base.device == "cuda",
                min_gpu_memory_mb: spec.base.min_device_memory_bytes.div_ceil(1024 * 1024),
                min_cpu_cores: 0,
            },
            max_attempts: self.c.config.max_attempts,
        };
        self.c
            .store
            .add_tasks(self.job, vec![task], self.c.clock.now())
            .await?;
        nat_telemetry::record::tasks_created(nat_telemetry::TaskKind::Supernet, 1);
        self.c.wake_workers(1);
        self.c.job_changed(self.job);
        Ok(())
    }

    /// Derives candidates per input and returns the best of each (genotype, accuracy).
    async fn derive(
        &mut self,
        spec: &OptimizeJobSpec,
        inputs: &[Genotype],
        driver: &Arc<PolicyDriver>,
        progress: &mut Progress,
    ) -> Result<Vec<Genotype>, Failure> {
        let s = &spec.optimize;
        if progress.candidates.len() != inputs.len() {
            let d = Arc::clone(driver);
            let inputs_owned = inputs.to_vec();
            let (k, argmax, seed) = (s.derive_samples as usize, s.derive_argmax, spec.base.seed);
            let samples = tokio::task::spawn_blocking(move || {
                d.with_learner(|l: &PolicyLearner| {
                    if argmax {
                        l.argmax(&inputs_owned)
                    } else {
                        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x00DE_517E);
                        l.sample(&inputs_owned, k, &mut rng)
                    }
                })
            })
            .await
            .map_err(|e| Failure::Transient(format!("derive thread: {e}")))??
            .map_err(|e| Failure::Fatal(format!("derive: {e}")))?;
            let per_input = if argmax { 1 } else { k };
            progress.candidates = samples
                .chunks(per_input)
                .map(|c| c.iter().map(|s| s.alpha.to_json()).collect())
                .collect();
            self.save(spec, progress, driver, None).await?;
        }
        let mut wanted = Vec::new();
        let mut per_input = Vec::new();
        for list in &progress.candidates {
            let gs = list
                .iter()
                .map(|j| Genotype::from_json_str(j))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Failure::Fatal(format!("stored candidate: {e}")))?;
            wanted.extend(gs.iter().cloned());
            per_input.push(gs);
        }
        let scores = self.scores(spec, &wanted, &spec.base.budget, false).await?;
        let mut best = Vec::new();
        for (i, gs) in per_input.into_iter().enumerate() {
            let mut top: Option<(Genotype, f64)> = None;
            for g in gs {
                if let Some(Score::Known(acc, _)) = scores.get(&g.canonical_hash()) {
                    if top.as_ref().is_none_or(|(_, a)| acc > a) {
                        top = Some((g, *acc));
                    }
                }
            }
            let Some((g, acc)) = top else {
                return Err(Failure::Fatal(format!(
                    "input {i}: every derived candidate failed to train"
                )));
            };
            let mut document =
                json!({"input_index": i, "genotype": g.to_json_value(), "accuracy": acc});
            // The reward of the best: its accuracy over the input's on the same (learn) budget,
            // when the input's accuracy is known (always in proxy mode; in supernet mode only
            // if some job trained the input from scratch on that budget).
            if let Some(input) = inputs.get(i) {
                let key = RewardKey {
                    arch_hash: input.canonical_hash(),
                    dataset: spec.base.dataset.clone(),
                    budget: spec.base.budget.key(),
                };
                if let Some(estimate) = self.c.store.reward_estimate(&key).await? {
                    if estimate.count > 0 && estimate.mean.is_finite() {
                        document["reward"] = json!(acc - estimate.mean);
                        document["input_accuracy"] = json!(estimate.mean);
                    }
                }
            }
            self.event(event::NEW_BEST, document).await?;
            best.push(g);
        }
        Ok(best)
    }

    /// Measures originals and bests with the final budget.
    async fn final_check(
        &mut self,
        spec: &OptimizeJobSpec,
        inputs: &[Genotype],
        best: &[Genotype],
    ) -> Result<Vec<Value>, Failure> {
        let budget = spec.optimize.final_budget;
        let wanted: Vec<Genotype> = inputs.iter().chain(best).cloned().collect();
        let scores = self.scores(spec, &wanted, &budget, true).await?;
        let dataset = nat_arch::Dataset::from_name(&spec.base.dataset)
            .ok_or_else(|| Failure::Fatal(format!("unknown dataset {}", spec.base.dataset)))?;
        let net = NetworkSpec {
            channels: u64::from(budget.init_channels),
            layers: u64::from(budget.layers),
            in_channels: dataset.channels() as u64,
            image_size: dataset.image_size() as u64,
            num_classes: dataset.num_classes() as u64,
        };
        let describe = |g: &Genotype| -> Result<Value, Failure> {
            let (accuracy, measured) = match scores.get(&g.canonical_hash()) {
                Some(Score::Known(a, m)) => (*a, *m),
                _ => {
                    return Err(Failure::Fatal(format!(
                        "final check of {} failed to train",
                        g.canonical_hash()
                    )))
                }
            };
            let (params, madds) = match measured {
                Some(m) if m.params > 0 => (m.params, m.madds),
                _ => nat_arch::network_cost(g, &net)
                    .map(|c| (c.params(), c.madds()))
                    .unwrap_or((0, 0)),
            };
            Ok(json!({
                "genotype": g.to_json_value(),
                "genotype_darts": g.to_darts_string(),
                "canonical_hash": g.canonical_hash(),
                "accuracy": accuracy,
                "params": params,
                "madds": madds,
            }))
        };
        let mut out = Vec::new();
        for (i, (orig, b)) in inputs.iter().zip(best).enumerate() {
            out.push(json!({
                "input_index": i,
                "original": describe(orig)?,
                "best": describe(b)?,
                "changed_edges": changed_edges(orig, b),
            }));
        }
        Ok(out)
    }

    /// Scores every genotype under `budget`: from this job's tasks, the reward-estimate cache,
    /// or new `train_eval` tasks (one per distinct architecture), waiting until all are known.
    async fn scores(
        &mut self,
        spec: &OptimizeJobSpec,
        genotypes: &[Genotype],
        budget: &Budget,
        checkpointed: bool,
    ) -> Result<HashMap<String, Score>, Failure> {
        let budget_key = budget.key();
        let mut distinct: BTreeMap<String, &Genotype> = BTreeMap::new();
        for g in genotypes {
            distinct.entry(g.canonical_hash()).or_insert(g);
        }
        let mut known: HashMap<String, Score> = HashMap::new();
        let mut first = true;
        loop {
            let tasks = self.job_tasks().await?;
            let mut missing = Vec::new();
            let mut waiting = 0usize;
            for (hash, g) in &distinct {
                if known.contains_key(hash) {
                    continue;
                }
                match tasks.get(&(hash.clone(), budget_key.clone())) {
                    Some((TaskState::Done, outcome)) => {
                        let acc = outcome.map(|o| o.accuracy).unwrap_or(f64::NAN);
                        if acc.is_finite() {
                            known.insert(hash.clone(), Score::Known(acc, *outcome));
                        } else {
                            known.insert(hash.clone(), Score::Failed);
                        }
                    }
                    Some((TaskState::Failed | TaskState::Cancelled, _)) => {
                        known.insert(hash.clone(), Score::Failed);
                    }
                    Some(_) => waiting += 1,
                    None => {
                        let key = RewardKey {
                            arch_hash: hash.clone(),
                            dataset: spec.base.dataset.clone(),
                            budget: budget_key.clone(),
                        };
                        match self.c.store.reward_estimate(&key).await? {
                            Some(e) if e.count > 0 && e.mean.is_finite() => {
                                if first {
                                    nat_telemetry::record::reward_cache_lookup(
                                        nat_telemetry::CacheResult::Hit,
                                    );
                                }
                                known.insert(hash.clone(), Score::Known(e.mean, None));
                            }
                            _ => missing.push(*g),
                        }
                    }
                }
            }
            first = false;
            if !missing.is_empty() {
                let n = missing.len();
                self.create_tasks(spec, &missing, budget, checkpointed, tasks.len())
                    .await?;
                for _ in 0..n {
                    nat_telemetry::record::reward_cache_lookup(nat_telemetry::CacheResult::Miss);
                }
                continue;
            }
            if waiting == 0 {
                return Ok(known);
            }
            self.wait().await?;
        }
    }

    /// This job's `train_eval` tasks by (canonical hash, budget key).
    async fn job_tasks(
        &self,
    ) -> Result<HashMap<(String, String), (TaskState, Option<TrainEvalOutcome>)>, Failure> {
        let mut out = HashMap::new();
        for t in self.all_tasks().await? {
            if t.kind != "train_eval" {
                continue;
            }
            let Ok(p) = serde_json::from_value::<TrainEvalPayload>(t.payload) else {
                continue;
            };
            let outcome = t
                .result
                .and_then(|r| serde_json::from_value::<StoredResult>(r).ok())
                .map(|r| r.outcome);
            out.insert((p.arch_hash, p.budget.key()), (t.state, outcome));
        }
        Ok(out)
    }

    async fn create_tasks(
        &self,
        spec: &OptimizeJobSpec,
        genotypes: &[&Genotype],
        budget: &Budget,
        checkpointed: bool,
        existing: usize,
    ) -> Result<(), Failure> {
        let requirements = Requirements {
            needs_gpu: spec.base.device == "cuda",
            min_gpu_memory_mb: spec.base.min_device_memory_bytes.div_ceil(1024 * 1024),
            min_cpu_cores: 0,
        };
        let tasks = genotypes
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let hash = g.canonical_hash();
                let payload = TrainEvalPayload {
                    index: (existing + i) as u32,
                    genotype_json: g.to_json(),
                    arch_hash: hash.clone(),
                    dataset: spec.base.dataset.clone(),
                    budget: *budget,
                    seed: spec.base.seed,
                    checkpointed,
                    checkpoint_key: if checkpointed {
                        format!("{}-{}", self.job, hash)
                    } else {
                        String::new()
                    },
                };
                Ok(NewTask {
                    kind: "train_eval".into(),
                    payload: serde_json::to_value(&payload).map_err(|e| {
                        Failure::Fatal(format!("cannot encode a task payload: {e}"))
                    })?,
                    requirements: requirements.clone(),
                    max_attempts: self.c.config.max_attempts,
                })
            })
            .collect::<Result<Vec<_>, Failure>>()?;
        let n = tasks.len();
        self.c
            .store
            .add_tasks(self.job, tasks, self.c.clock.now())
            .await?;
        nat_telemetry::record::tasks_created(nat_telemetry::TaskKind::TrainEval, n as u64);
        self.c.wake_workers(n);
        self.c.job_changed(self.job);
        Ok(())
    }

    /// Waits for a change of this job (a report), a poll tick, or a stop.
    async fn wait(&mut self) -> Result<(), Failure> {
        let deadline = tokio::time::sleep(POLL);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                changed = self.changes.recv() => match changed {
                    Ok(id) if id == self.job => break,
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => return Err(Failure::Stopped),
                },
                _ = &mut deadline => break,
            }
        }
        let job = self.c.store.get_job(self.job).await?;
        if job.state.is_final() {
            return Err(Failure::Stopped);
        }
        Ok(())
    }

    async fn event(&self, kind: &str, payload: Value) -> Result<(), Failure> {
        self.c
            .store
            .append_event(self.job, kind, payload, self.c.clock.now())
            .await?;
        self.c.job_changed(self.job);
        Ok(())
    }

    /// Writes the running result document (summary for the dashboard, progress for a restart).
    async fn save(
        &self,
        spec: &OptimizeJobSpec,
        progress: &Progress,
        driver: &PolicyDriver,
        outcomes: Option<Vec<Value>>,
    ) -> Result<(), Failure> {
        let doc = self.document_with(spec, progress, driver, outcomes.unwrap_or_default())?;
        self.c
            .store
            .set_job_result(self.job, doc, self.c.clock.now())
            .await?;
        Ok(())
    }

    fn document(
        &self,
        spec: &OptimizeJobSpec,
        progress: &Progress,
        driver: &PolicyDriver,
        outcomes: Vec<Value>,
    ) -> Result<Value, Failure> {
        self.document_with(spec, progress, driver, outcomes)
    }

    fn document_with(
        &self,
        spec: &OptimizeJobSpec,
        progress: &Progress,
        driver: &PolicyDriver,
        outcomes: Vec<Value>,
    ) -> Result<Value, Failure> {
        let version = driver.version()?;
        let best_accuracy = outcomes
            .iter()
            .filter_map(|o| o.pointer("/best/accuracy").and_then(Value::as_f64))
            .fold(None, |m: Option<f64>, a| Some(m.map_or(a, |m| m.max(a))));
        Ok(json!({
            "summary": {
                "best_accuracy": best_accuracy,
                "best_reward": progress.best_reward,
                "policy_version": version,
                "iterations_done": progress.iteration,
                "iterations_total": spec.optimize.iterations,
            },
            "optimize": outcomes,
            "policy": {"id": driver.policy_id(), "version": version},
            "rewards": progress.rewards,
            "driver": progress,
        }))
    }

    async fn finish(&self, result: Value) -> Result<(), Failure> {
        self.c
            .store
            .finish_job(
                self.job,
                JobOutcome::Succeeded { result },
                self.c.clock.now(),
            )
            .await?;
        self.c.reservations.drop_job(self.job);
        nat_telemetry::record::job_finished(
            nat_telemetry::JobKind::Optimize,
            nat_telemetry::JobState::Succeeded,
        );
        tracing::info!(job = %self.job, "optimize job finished");
        self.c.job_changed(self.job);
        Ok(())
    }
}

/// `tasks.kind` of a supernet task.
pub const SUPERNET_TASK: &str = "supernet";

/// The `supernet_key` of a job's supernet tasks: one set of shared weights per job.
pub fn supernet_key(job: JobId) -> String {
    format!("job-{job}")
}

/// Reward per sample id of a finished supernet task: `sample_ids[i]` ↔ `scores[i]`, reward =
/// acc_alpha − acc_beta. Entries that are missing or not finite are left out.
fn supernet_scores(payload: &Value, result: Option<&Value>) -> HashMap<SampleId, f64> {
    let ids = payload
        .get("sample_ids")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let scores = result
        .and_then(|r| r.get("scores"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    ids.iter()
        .zip(&scores)
        .filter_map(|(id, score)| {
            let id: SampleId = serde_json::from_value(id.clone()).ok()?;
            let beta = score.get("acc_beta")?.as_f64()?;
            let alpha = score.get("acc_alpha")?.as_f64()?;
            let reward = alpha - beta;
            reward.is_finite().then_some((id, reward))
        })
        .collect()
}

fn hash_of(json: &str) -> Result<String, Failure> {
    Genotype::from_json_str(json)
        .map(|g| g.canonical_hash())
        .map_err(|e| Failure::Fatal(format!("stored sample: {e}")))
}

/// The edges whose op differs between `a` and `b`, as text.
pub fn changed_edges(a: &Genotype, b: &Genotype) -> Vec<String> {
    nat_arch::edge_changes(a, b)
        .map(|changes| changes.iter().map(ToString::to_string).collect())
        .unwrap_or_default()
}

/// The `optimize` and `policy` parts of `GetJobResult` for an optimize job, from its result
/// document (empty while nothing is known yet).
pub fn result_parts(job: &Job) -> (Vec<v1::OptimizeOutcome>, Option<v1::PolicyRef>, u64) {
    let Some(doc) = job.result.as_ref() else {
        return (Vec::new(), None, 0);
    };
    let arch = |v: &Value, index: u32| -> Option<v1::ArchitectureResult> {
        let g = Genotype::from_json_str(&v.get("genotype")?.to_string()).ok()?;
        Some(v1::ArchitectureResult {
            index,
            genotype_json: g.to_json(),
            genotype_darts: g.to_darts_string(),
            canonical_hash: g.canonical_hash(),
            state: v1::TaskState::Succeeded as i32,
            result: Some(v1::TrainEvalResult {
                accuracy: v.get("accuracy").and_then(Value::as_f64).unwrap_or(0.0),
                loss: 0.0,
                params: v.get("params").and_then(Value::as_u64).unwrap_or(0),
                madds: v.get("madds").and_then(Value::as_u64).unwrap_or(0),
                wall_seconds: 0.0,
                images_per_second: 0.0,
            }),
            error: String::new(),
            attempts: 0,
        })
    };
    let outcomes = doc
        .get("optimize")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|o| {
                    let index = o.get("input_index").and_then(Value::as_u64).unwrap_or(0) as u32;
                    Some(v1::OptimizeOutcome {
                        original: Some(arch(o.get("original")?, index)?),
                        best: Some(arch(o.get("best")?, index)?),
                        changed_edges: o
                            .get("changed_edges")
                            .and_then(Value::as_array)
                            .map(|a| {
                                a.iter()
                                    .filter_map(Value::as_str)
                                    .map(str::to_string)
                                    .collect()
                            })
                            .unwrap_or_default(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let policy = doc.get("policy").and_then(|p| {
        Some(v1::PolicyRef {
            id: p.get("id")?.as_str()?.to_string(),
            version: p.get("version")?.as_u64()?,
        })
    });
    let rewards = doc.get("rewards").and_then(Value::as_u64).unwrap_or(0);
    (outcomes, policy, rewards)
}

/// `nat.v1.PolicyService`: stored policies, and applying one without training.
#[derive(Debug, Clone)]
pub struct PolicyApi {
    c: Arc<Coordinator>,
}

impl PolicyApi {
    /// The service over shared state.
    pub fn new(c: Arc<Coordinator>) -> Self {
        PolicyApi { c }
    }

    async fn transform(
        &self,
        r: v1::TransformArchitectureRequest,
    ) -> Result<v1::TransformArchitectureResponse, ApiError> {
        crate::state::check_len("policy_id", &r.policy_id, 200)?;
        crate::state::check_len(
            "architecture",
            &r.architecture,
            crate::job_api::MAX_ARCHITECTURE_LEN,
        )?;
        if r.policy_id.trim().is_empty() {
            return Err(ApiError::invalid("policy_id", "is required"));
        }
        let g = nat_arch::parse_any(&r.architecture)
            .map_err(|e| ApiError::invalid("architecture", e.to_string()))?;
        let cp = match self.c.store.latest_checkpoint(r.policy_id.trim()).await {
            Ok(cp) => cp,
            Err(StoreError::NotFound { .. }) => {
                return Err(ApiError::NotFound(format!(
                    "policy {:?}",
                    crate::state::excerpt(&r.policy_id)
                )))
            }
            Err(e) => return Err(e.into()),
        };
        let (sample, seed) = (r.sample, r.seed);
        let input = g.clone();
        let params = cp.params.clone();
        let alpha = tokio::task::spawn_blocking(move || {
            let learner = PolicyLearner::from_parts(&params, &[])
                .map_err(|e| format!("stored policy cannot be loaded: {e}"))?;
            nat_policy::input::validate_input(learner.config().space, &input, "architecture")
                .map_err(|e| format!("!{e}"))?;
            let out = if sample {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                learner.sample(std::slice::from_ref(&input), 1, &mut rng)
            } else {
                learner.argmax(std::slice::from_ref(&input))
            };
            out.map_err(|e| format!("!{e}"))?
                .into_iter()
                .next()
                .map(|s| s.alpha)
                .ok_or_else(|| "the policy returned no transformation".to_string())
        })
        .await
        .map_err(internal)?
        .map_err(|e| match e.strip_prefix('!') {
            Some(reason) => ApiError::invalid("architecture", reason),
            None => ApiError::FailedPrecondition(e),
        })?;
        Ok(v1::TransformArchitectureResponse {
            genotype_json: alpha.to_json(),
            genotype_darts: alpha.to_darts_string(),
            policy: Some(v1::PolicyRef {
                id: cp.policy_id.clone(),
                version: u64::try_from(cp.version).unwrap_or(0),
            }),
            changed_edges: changed_edges(&g, &alpha),
        })
    }
}

#[tonic::async_trait]
impl v1::policy_service_server::PolicyService for PolicyApi {
    async fn list_policies(
        &self,
        _request: tonic::Request<v1::ListPoliciesRequest>,
    ) -> Result<tonic::Response<v1::ListPoliciesResponse>, tonic::Status> {
        let policies = self
            .c
            .store
            .list_policies()
            .await
            .map_err(ApiError::from)?
            .into_iter()
            .map(|p| v1::PolicyInfo {
                id: p.policy_id,
                space: p.space,
                version: u64::try_from(p.version).unwrap_or(0),
                source_job: p.source_job.map(|j| j.to_string()).unwrap_or_default(),
                rewards_consumed: p.rewards_consumed,
                updated_at_unix_ms: convert::unix_ms(p.updated_at),
            })
            .collect();
        Ok(tonic::Response::new(v1::ListPoliciesResponse { policies }))
    }

    async fn transform_architecture(
        &self,
        request: tonic::Request<v1::TransformArchitectureRequest>,
    ) -> Result<tonic::Response<v1::TransformArchitectureResponse>, tonic::Status> {
        Ok(tonic::Response::new(
            self.transform(request.into_inner()).await?,
        ))
    }
}
