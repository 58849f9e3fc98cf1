//! Validation of an optimize submission into an [`OptimizeJobSpec`], and the job's creation.

use std::sync::Arc;

use nat_arch::{Genotype, OpSet};
use nat_policy::{ActionSpace, PolicyConfig};
use nat_proto::v1;
use nat_schema::spec::{DEFAULT_FINAL_SEEDS, DEFAULT_MAX_COST_RATIO, MAX_FINAL_SEEDS};
use nat_schema::{
    Budget, Control, JobKind, OptimizeJobSpec, OptimizeSettings, Profile, RewardKind,
    SupernetBudget,
};
use nat_store::{Completion, Job, NewJob, StoreError};

use super::RANDOM_INPUT_NODES;
use crate::convert::encode;
use crate::error::ApiError;
use crate::jobs::Submission;
use crate::state::{check_len, excerpt, Coordinator};

/// K of the derive phase when the job names none (proxy reward: each candidate is trained).
pub const DEFAULT_DERIVE_SAMPLES: u32 = 10;
/// K of the derive phase when the job names none in supernet mode (each candidate is scored on
/// the supernet; only the best `derive_top_k` are trained), as the paper derives.
pub const DEFAULT_SUPERNET_DERIVE_SAMPLES: u32 = 100;
/// Most learning rounds of one job.
pub const MAX_ITERATIONS: u32 = 100_000;
/// Most rewards per round.
pub const MAX_SAMPLES_PER_ITERATION: u32 = 1024;
/// Most derived candidates per input.
pub const MAX_DERIVE_SAMPLES: u32 = 1000;

/// The policy's action space of a job.
pub(super) fn space(s: &OptimizeSettings) -> ActionSpace {
    match s.op_set {
        OpSet::NatPlusPlus => ActionSpace::NatPlusPlus,
        set => ActionSpace::Nat(set),
    }
}

/// The policy configuration of a job: its profile with the job's overrides.
pub(super) fn policy_config(s: &OptimizeSettings) -> PolicyConfig {
    let profile = match s.profile {
        Profile::Reference => nat_policy::Profile::Reference,
        Profile::Default => nat_policy::Profile::Default,
    };
    let mut config = PolicyConfig::new(space(s), profile);
    if s.learning_rate > 0.0 {
        config.learn.learning_rate = s.learning_rate;
    }
    if s.entropy_weight > 0.0 {
        config.learn.entropy_normal = s.entropy_weight;
        config.learn.entropy_reduce = s.entropy_weight;
    }
    if s.max_staleness > 0 {
        config.learn.max_staleness = u64::from(s.max_staleness);
    }
    config
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
pub(super) async fn submit(
    c: &Arc<Coordinator>,
    r: &v1::SubmitJobRequest,
    v: Submission,
) -> Result<Job, ApiError> {
    let o = r.optimize.clone().unwrap_or_default();
    let reward = match v1::RewardMode::try_from(o.reward) {
        Ok(v1::RewardMode::Proxy | v1::RewardMode::Unspecified) => RewardKind::Proxy,
        Ok(v1::RewardMode::Supernet) => RewardKind::Supernet,
        Err(_) => {
            return Err(ApiError::invalid(
                "optimize.reward",
                format!("unknown reward mode {}", o.reward),
            ))
        }
    };
    let op_set = match v1::SearchSpace::try_from(o.space) {
        Ok(v1::SearchSpace::Nat | v1::SearchSpace::Unspecified) => nat_op_set(&v.genotypes),
        Ok(v1::SearchSpace::NatPlusPlus) => OpSet::NatPlusPlus,
        Err(_) => {
            return Err(ApiError::invalid(
                "optimize.space",
                format!("unknown search space {}", o.space),
            ))
        }
    };
    let profile = match o.policy_profile.trim() {
        "" => Profile::Default,
        other => other.parse::<Profile>().map_err(|e| {
            ApiError::invalid(
                "optimize.policy_profile",
                format!(
                    "unknown profile {:?} (expected {})",
                    excerpt(other),
                    e.expected
                ),
            )
        })?,
    };
    let preset = v.spec.budget_preset.clone();
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
        match reward {
            RewardKind::Proxy => DEFAULT_DERIVE_SAMPLES,
            RewardKind::Supernet => DEFAULT_SUPERNET_DERIVE_SAMPLES,
        },
        MAX_DERIVE_SAMPLES,
    )?;
    let derive_top_k = bounded(
        "optimize.derive_top_k",
        o.derive_top_k,
        nat_schema::spec::DEFAULT_DERIVE_TOP_K,
        nat_schema::spec::MAX_DERIVE_TOP_K,
    )?;
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
    let final_seeds = bounded(
        "optimize.final_seeds",
        o.final_seeds,
        DEFAULT_FINAL_SEEDS,
        MAX_FINAL_SEEDS,
    )?;
    let max_cost_ratio = if o.max_cost_ratio == 0.0 {
        DEFAULT_MAX_COST_RATIO
    } else if o.max_cost_ratio.is_finite() && (1.0..=10.0).contains(&o.max_cost_ratio) {
        o.max_cost_ratio
    } else {
        return Err(ApiError::invalid(
            "optimize.max_cost_ratio",
            format!(
                "must be in [1, 10] (0 = 1.0: no extra cost), got {}",
                o.max_cost_ratio
            ),
        ));
    };
    let control = match o.control.trim() {
        "" => Control::None,
        other => other.parse::<Control>().map_err(|e| {
            ApiError::invalid(
                "optimize.control",
                format!(
                    "unknown control {:?} (expected {})",
                    excerpt(other),
                    e.expected
                ),
            )
        })?,
    };
    if control == Control::Random && o.derive_argmax {
        return Err(ApiError::invalid(
            "optimize.control",
            "the random control draws K candidates; it does not go with derive_argmax",
        ));
    }
    let (final_budget_preset, final_budget) = match o.final_budget.as_ref() {
        Some(b) => Budget::resolve(Some(b), "optimize.final_budget")?,
        None => (v.spec.budget_preset.clone(), v.spec.budget),
    };
    check_len("optimize.policy_id", &o.policy_id, 200)?;
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
                            excerpt(&policy_id),
                            op_set_name(op_set)
                        ),
                    ));
                }
            }
            Err(StoreError::NotFound { .. }) => {
                return Err(ApiError::invalid(
                    "optimize.policy_id",
                    format!("no stored policy {:?}", excerpt(&policy_id)),
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
            &v.spec.budget_preset,
            &v.genotypes,
        )?),
    };
    let settings = OptimizeSettings {
        reward,
        supernet,
        op_set,
        profile,
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
        final_seeds,
        max_cost_ratio,
        control,
        derive_top_k,
    };
    let space = space(&settings);
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
        base: v.spec,
        optimize: settings,
    };
    let job = c
        .store
        .create_job(
            NewJob {
                kind: JobKind::Optimize.as_str().into(),
                spec: encode("optimize job spec", &spec)?,
                priority: v.priority,
                completion: Completion::Manual,
                owner: v.owner.clone(),
            },
            Vec::new(),
            c.clock.now(),
        )
        .await?;
    tracing::info!(job = %job.id, iterations, samples_per_iteration, "optimize job submitted");
    Ok(job)
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
                    excerpt(given)
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
pub(super) fn op_set_name(op_set: OpSet) -> &'static str {
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
