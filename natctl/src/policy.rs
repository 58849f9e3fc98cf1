//! `natctl policies` and `natctl transform`: stored NAT policies (`nat.v1.PolicyService`), and
//! the optimize part of `natctl result --json`.

use std::process::ExitCode;

use anyhow::{anyhow, Context};
use clap::Args;
use nat_proto::v1;
use nat_schema::result::PolicyRef;
use serde::Serialize;
use serde_json::Value;

use crate::client::genotype_json;
use crate::output::{render, table, Output};

/// `natctl transform --policy ID ARCH`.
#[derive(Debug, Args)]
pub struct TransformArgs {
    /// Stored policy id (see `natctl policies`).
    #[arg(long)]
    policy: String,
    /// Architecture: a preset name, a file (JSON or DARTS), or inline JSON / DARTS.
    arch: String,
    /// Sample one transformation with --seed instead of taking the most likely one.
    #[arg(long)]
    sample: bool,
    /// Seed of --sample.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Same as `-o json`.
    #[arg(long, hide = true)]
    json: bool,
}

/// The commands of this module.
#[derive(Debug)]
pub enum PolicyCommand {
    /// List stored policies.
    List,
    /// Transform an architecture with a stored policy.
    Transform(TransformArgs),
}

/// One stored policy (each item of `natctl policies -o json`).
#[derive(Debug, Clone, Serialize)]
pub struct PolicyView {
    id: String,
    /// `nat` | `nat++`.
    space: String,
    version: u64,
    /// The job that created it (`null` when none did).
    source_job: Option<String>,
    /// Rewards that moved it.
    rewards: u64,
    updated_at_unix_ms: i64,
}

/// `natctl transform -o json`.
#[derive(Debug, Clone, Serialize)]
pub struct TransformView {
    /// DARTS string of the transformed architecture.
    genotype: String,
    genotype_json: Value,
    policy: Option<PolicyRef>,
    changed_edges: Vec<String>,
}

/// Runs a policy command against the coordinator of `remote`.
pub fn run(
    cmd: PolicyCommand,
    remote: crate::client::Remote<'_>,
    output: Output,
) -> anyhow::Result<ExitCode> {
    crate::client::runtime()?.block_on(run_async(cmd, remote, output))
}

async fn run_async(
    cmd: PolicyCommand,
    remote: crate::client::Remote<'_>,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let mut client = crate::client::Connection::open(remote).await?.policies();
    match cmd {
        PolicyCommand::List => {
            let policies: Vec<PolicyView> = client
                .list_policies(v1::ListPoliciesRequest {})
                .await
                .map_err(|s| crate::client::status_error("list policies", s))?
                .into_inner()
                .policies
                .iter()
                .map(policy_view)
                .collect();
            output.print(&policies, |p| policies_table(p))?;
        }
        PolicyCommand::Transform(a) => {
            let architecture = resolve_arch(&a.arch)?;
            let r = client
                .transform_architecture(v1::TransformArchitectureRequest {
                    policy_id: a.policy.clone(),
                    architecture,
                    sample: a.sample,
                    seed: a.seed,
                })
                .await
                .map_err(|s| crate::client::status_error("transform", s))?
                .into_inner();
            let view = TransformView {
                genotype: r.genotype_darts.clone(),
                genotype_json: genotype_json(&r.genotype_json, "genotype_json")?,
                policy: r.policy.as_ref().map(policy_ref).transpose()?,
                changed_edges: r.changed_edges.clone(),
            };
            output
                .or_json(a.json)
                .print(&view, |v| v.genotype.clone())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn policy_view(p: &v1::PolicyInfo) -> PolicyView {
    PolicyView {
        id: p.id.clone(),
        space: p.space.clone(),
        version: p.version,
        source_job: nonempty(&p.source_job),
        rewards: p.rewards_consumed,
        updated_at_unix_ms: p.updated_at_unix_ms,
    }
}

/// `natctl policies`.
fn policies_table(policies: &[PolicyView]) -> String {
    let mut t = table(&["ID", "SPACE", "VERSION", "REWARDS", "SOURCE JOB"]);
    for p in policies {
        t.add_row(vec![
            p.id.clone(),
            p.space.clone(),
            p.version.to_string(),
            p.rewards.to_string(),
            p.source_job.clone().unwrap_or_else(|| "-".to_string()),
        ]);
    }
    render(t, &[2, 3])
}

/// An existing file is read; anything else is sent as given (the coordinator parses it).
fn resolve_arch(value: &str) -> anyhow::Result<String> {
    let path = std::path::Path::new(value);
    if path.is_file() {
        return std::fs::read_to_string(path)
            .with_context(|| format!("cannot read architecture file {value}"));
    }
    Ok(value.to_string())
}

/// A policy reference from the wire, as the shared document type.
fn policy_ref(p: &v1::PolicyRef) -> anyhow::Result<PolicyRef> {
    Ok(PolicyRef {
        id: p.id.clone(),
        version: i64::try_from(p.version)
            .map_err(|_| anyhow!("policy.version: {} is out of range", p.version))?,
    })
}

/// One architecture of an optimize outcome in `natctl result --json`.
#[derive(Debug, Clone, Serialize)]
struct ArchJson {
    /// DARTS string.
    genotype: String,
    /// The genotype's JSON.
    genotype_json: Value,
    /// Canonical hash.
    hash: String,
    accuracy: Option<f64>,
    params: Option<u64>,
    madds: Option<u64>,
}

/// One input of an optimize job in `natctl result --json`.
#[derive(Debug, Clone, Serialize)]
struct OutcomeJson {
    original: Option<ArchJson>,
    best: Option<ArchJson>,
    changed_edges: Vec<String>,
    /// `improved` | `no_difference` | `worse` (`null` for results written before verdicts).
    verdict: Option<String>,
    recommended: Option<RecommendedJson>,
    #[serde(rename = "final")]
    final_evaluation: Option<FinalJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    control: Option<ControlJson>,
}

/// What an optimize job recommends for one input.
#[derive(Debug, Clone, Serialize)]
struct RecommendedJson {
    /// DARTS string.
    genotype: String,
    genotype_json: Value,
    /// `best` | `original`.
    from: String,
    /// One sentence saying why.
    reason: String,
}

/// Per-seed accuracies of one architecture.
#[derive(Debug, Clone, Serialize)]
struct SeedsJson {
    accuracies: Vec<Option<f64>>,
    mean: Option<f64>,
    std: Option<f64>,
    params: u64,
    madds: u64,
}

/// A paired difference with its 95 % interval (an unknown end is `null`).
#[derive(Debug, Clone, Serialize)]
struct DifferenceJson {
    mean: Option<f64>,
    ci_low: Option<f64>,
    ci_high: Option<f64>,
    method: String,
}

/// The final evaluation of one input.
#[derive(Debug, Clone, Serialize)]
struct FinalJson {
    seeds: Vec<u64>,
    original: Option<SeedsJson>,
    best: Option<SeedsJson>,
    paired_difference: Option<DifferenceJson>,
}

/// The random control of one input.
#[derive(Debug, Clone, Serialize)]
struct ControlJson {
    /// DARTS string.
    genotype: String,
    genotype_json: Value,
    #[serde(rename = "final")]
    final_accuracies: Option<SeedsJson>,
    vs_original: Option<DifferenceJson>,
    policy_vs_control: Option<DifferenceJson>,
    verdict: Option<String>,
}

/// Whether the policy learned.
#[derive(Debug, Clone, Serialize)]
struct LearningJson {
    rewards: u64,
    policy_versions: u64,
    curve: Vec<PointJson>,
    inputs: Vec<InputLearningJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    supernet: Option<SupernetJson>,
}

#[derive(Debug, Clone, Serialize)]
struct PointJson {
    version: u64,
    mean_reward: Option<f64>,
    reward_moving_average: Option<f64>,
    entropy: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
struct InputLearningJson {
    input_index: u32,
    identity_probability_first: Option<f64>,
    identity_probability_last: Option<f64>,
    argmax_probability_first: Option<f64>,
    argmax_probability_last: Option<f64>,
    /// DARTS strings (`null` when unknown).
    argmax_first: Option<String>,
    argmax_last: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct SupernetJson {
    version: u64,
    rounds: u32,
    shards_per_round: u32,
    workers_seen: u32,
}

/// A wire number as JSON: NaN and ±∞ (unknown) become `null`.
pub(crate) fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

fn nonempty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn seeds_json(s: &v1::SeedAccuracies) -> SeedsJson {
    SeedsJson {
        accuracies: s.accuracies.iter().copied().map(finite).collect(),
        mean: finite(s.mean),
        std: finite(s.std),
        params: s.params,
        madds: s.madds,
    }
}

fn difference_json(d: &v1::PairedDifference) -> DifferenceJson {
    DifferenceJson {
        mean: finite(d.mean),
        ci_low: finite(d.ci_low),
        ci_high: finite(d.ci_high),
        method: d.method.clone(),
    }
}

fn outcome_json(i: usize, o: &v1::OptimizeOutcome) -> anyhow::Result<OutcomeJson> {
    let recommended = o
        .recommended
        .as_ref()
        .map(|r| {
            Ok::<_, anyhow::Error>(RecommendedJson {
                genotype: r.genotype_darts.clone(),
                genotype_json: genotype_json(
                    &r.genotype_json,
                    &format!("optimize[{i}].recommended.genotype_json"),
                )?,
                from: r.from.clone(),
                reason: r.reason.clone(),
            })
        })
        .transpose()?;
    let control = o
        .control
        .as_ref()
        .map(|c| {
            Ok::<_, anyhow::Error>(ControlJson {
                genotype: c.genotype_darts.clone(),
                genotype_json: genotype_json(
                    &c.genotype_json,
                    &format!("optimize[{i}].control.genotype_json"),
                )?,
                final_accuracies: c.r#final.as_ref().map(seeds_json),
                vs_original: c.vs_original.as_ref().map(difference_json),
                policy_vs_control: c.policy_vs_control.as_ref().map(difference_json),
                verdict: nonempty(&c.verdict),
            })
        })
        .transpose()?;
    Ok(OutcomeJson {
        original: arch_json(o.original.as_ref(), &format!("optimize[{i}].original"))?,
        best: arch_json(o.best.as_ref(), &format!("optimize[{i}].best"))?,
        changed_edges: o.changed_edges.clone(),
        verdict: nonempty(&o.verdict),
        recommended,
        final_evaluation: o.r#final.as_ref().map(|f| FinalJson {
            seeds: f.seeds.clone(),
            original: f.original.as_ref().map(seeds_json),
            best: f.best.as_ref().map(seeds_json),
            paired_difference: f.paired_difference.as_ref().map(difference_json),
        }),
        control,
    })
}

fn learning_json(l: &v1::Learning) -> LearningJson {
    LearningJson {
        rewards: l.rewards,
        policy_versions: l.policy_versions,
        curve: l
            .curve
            .iter()
            .map(|p| PointJson {
                version: p.version,
                mean_reward: finite(p.mean_reward),
                reward_moving_average: finite(p.reward_moving_average),
                entropy: finite(p.entropy),
            })
            .collect(),
        inputs: l
            .inputs
            .iter()
            .map(|i| InputLearningJson {
                input_index: i.input_index,
                identity_probability_first: finite(i.identity_probability_first),
                identity_probability_last: finite(i.identity_probability_last),
                argmax_probability_first: finite(i.argmax_probability_first),
                argmax_probability_last: finite(i.argmax_probability_last),
                argmax_first: nonempty(&i.argmax_first_darts),
                argmax_last: nonempty(&i.argmax_last_darts),
            })
            .collect(),
        supernet: l.supernet.as_ref().map(|s| SupernetJson {
            version: s.version,
            rounds: s.rounds,
            shards_per_round: s.shards_per_round,
            workers_seen: s.workers_seen,
        }),
    }
}

fn arch_json(a: Option<&v1::ArchitectureResult>, field: &str) -> anyhow::Result<Option<ArchJson>> {
    let Some(a) = a else {
        return Ok(None);
    };
    let m = a.result.as_ref();
    Ok(Some(ArchJson {
        genotype: a.genotype_darts.clone(),
        genotype_json: genotype_json(&a.genotype_json, &format!("{field}.genotype_json"))?,
        hash: a.canonical_hash.clone(),
        accuracy: m.map(|m| m.accuracy),
        params: m.map(|m| m.params),
        madds: m.map(|m| m.madds),
    }))
}

/// The optimize fields of `natctl result JOB --json`. Of the first input: `original` and `best`
/// (each `genotype` DARTS string, `genotype_json`, `accuracy` (the mean over the final seeds),
/// `params`, `madds`), `changed_edges`, `verdict` (`improved` | `no_difference` | `worse`),
/// `recommended` {`genotype`, `genotype_json`, `from` (`best` | `original`), `reason`},
/// `final` {`seeds`, `original` and `best` {`accuracies`, `mean`, `std`, `params`, `madds`},
/// `paired_difference` {`mean`, `ci_low`, `ci_high`, `method`}} and, when the job ran it,
/// `control`. Every input under `optimize` with the same fields; `policy` {`id`, `version`},
/// `rewards` and `learning` {`rewards`, `policy_versions`, `curve`, `inputs`, `supernet`}. An
/// unknown number (an interval end with one seed, a probability not recorded) is `null`. A
/// genotype JSON text that is not JSON is an error naming the field.
pub fn optimize_json(r: &v1::GetJobResultResponse) -> anyhow::Result<Option<OptimizeFields>> {
    if r.kind != v1::JobKind::Optimize as i32 {
        return Ok(None);
    }
    let outcomes = r
        .optimize
        .iter()
        .enumerate()
        .map(|(i, o)| outcome_json(i, o))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let first = outcomes.first();
    Ok(Some(OptimizeFields {
        original: first.and_then(|o| o.original.clone()),
        best: first.and_then(|o| o.best.clone()),
        changed_edges: first.map(|o| o.changed_edges.clone()),
        verdict: first.and_then(|o| o.verdict.clone()),
        recommended: first.and_then(|o| o.recommended.clone()),
        final_evaluation: first.and_then(|o| o.final_evaluation.clone()),
        control: first.and_then(|o| o.control.clone()),
        policy: r.policy.as_ref().map(policy_ref).transpose()?,
        rewards: r.rewards,
        learning: r.learning.as_ref().map(learning_json),
        optimize: outcomes,
    }))
}

/// The optimize fields of `natctl result JOB -o json`, next to `job_id`, `kind`, `state` and
/// `architectures` (see [`optimize_json`]).
#[derive(Debug, Clone, Serialize)]
pub struct OptimizeFields {
    original: Option<ArchJson>,
    best: Option<ArchJson>,
    changed_edges: Option<Vec<String>>,
    verdict: Option<String>,
    recommended: Option<RecommendedJson>,
    #[serde(rename = "final")]
    final_evaluation: Option<FinalJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    control: Option<ControlJson>,
    optimize: Vec<OutcomeJson>,
    policy: Option<PolicyRef>,
    rewards: u64,
    learning: Option<LearningJson>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn measured(hash: &str, accuracy: f64) -> v1::ArchitectureResult {
        v1::ArchitectureResult {
            genotype_darts: format!("darts-{hash}"),
            genotype_json: "{}".into(),
            canonical_hash: hash.into(),
            result: Some(v1::TrainEvalResult {
                accuracy,
                params: 10,
                madds: 20,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn optimize_fields_carry_original_best_policy_and_rewards() {
        let r = v1::GetJobResultResponse {
            kind: v1::JobKind::Optimize as i32,
            optimize: vec![v1::OptimizeOutcome {
                original: Some(measured("a", 0.5)),
                best: Some(measured("b", 0.75)),
                changed_edges: vec!["normal node 2".into()],
                ..Default::default()
            }],
            policy: Some(v1::PolicyRef {
                id: "job-1".into(),
                version: 3,
            }),
            rewards: 12,
            ..Default::default()
        };
        let fields = fields(&r);
        assert_eq!(fields["original"]["accuracy"], json!(0.5));
        assert_eq!(fields["best"]["genotype"], json!("darts-b"));
        assert_eq!(fields["best"]["params"], json!(10));
        assert_eq!(fields["best"]["madds"], json!(20));
        assert_eq!(fields["policy"], json!({"id": "job-1", "version": 3}));
        assert_eq!(fields["rewards"], json!(12));
        let evaluate = v1::GetJobResultResponse {
            kind: v1::JobKind::Evaluate as i32,
            ..Default::default()
        };
        assert!(optimize_json(&evaluate).expect("valid").is_none());
        // A genotype text that is not JSON is an error naming the field, not a null.
        let mut broken = r.clone();
        if let Some(b) = broken.optimize[0].best.as_mut() {
            b.genotype_json = "{not json".into();
        }
        let err = optimize_json(&broken).expect_err("not JSON");
        assert!(
            err.to_string().contains("optimize[0].best.genotype_json"),
            "{err}"
        );
    }

    fn fields(r: &v1::GetJobResultResponse) -> serde_json::Map<String, Value> {
        match serde_json::to_value(optimize_json(r).expect("valid").expect("optimize")) {
            Ok(Value::Object(m)) => m,
            other => panic!("an object: {other:?}"),
        }
    }

    #[test]
    fn verdict_recommendation_final_and_learning_are_in_the_json() {
        let r = crate::report::example::result(&[101, 102, 103], true);
        let f = fields(&r);
        // The fields of existing clients are still there, as they were.
        for key in [
            "original",
            "best",
            "changed_edges",
            "optimize",
            "policy",
            "rewards",
        ] {
            assert!(f.contains_key(key), "{key}");
        }
        assert!((f["original"]["accuracy"].as_f64().expect("mean") - 0.911_666).abs() < 1e-5);
        assert_eq!(f["best"]["params"], json!(3_160_000));
        assert_eq!(f["rewards"], json!(24));
        // The verdict and what to use.
        assert_eq!(f["verdict"], json!("worse"));
        assert_eq!(f["recommended"]["from"], json!("original"));
        assert_eq!(f["recommended"]["genotype"], f["original"]["genotype"]);
        assert!(f["recommended"]["genotype_json"].is_object());
        let reason = f["recommended"]["reason"].as_str().expect("reason");
        assert!(
            reason.starts_with("recommended: the original, because the best is less accurate"),
            "{reason}"
        );
        // The final evaluation, per seed.
        let fin = &f["final"];
        assert_eq!(fin["seeds"], json!([101, 102, 103]));
        assert_eq!(fin["original"]["accuracies"], json!([0.912, 0.905, 0.918]));
        assert_eq!(fin["best"]["accuracies"], json!([0.901, 0.897, 0.906]));
        assert_eq!(fin["original"]["params"], json!(3_349_342));
        assert_eq!(fin["best"]["madds"], json!(498_000_000));
        assert!(fin["best"]["std"].as_f64().is_some_and(|s| s > 0.0));
        let d = &fin["paired_difference"];
        assert_eq!(d["method"], json!("paired_t"));
        let (mean, low, high) = (
            d["mean"].as_f64().expect("mean"),
            d["ci_low"].as_f64().expect("low"),
            d["ci_high"].as_f64().expect("high"),
        );
        assert!(low < mean && mean < high && high < 0.0, "{d}");
        // The control, when the job ran it.
        assert_eq!(f["control"]["verdict"], json!("no_difference"));
        assert_eq!(
            f["control"]["final"]["accuracies"],
            json!([0.910, 0.907, 0.915])
        );
        assert!(f["control"]["vs_original"]["ci_low"].is_number());
        assert!(f["control"]["policy_vs_control"]["mean"].is_number());
        // The same per input under `optimize`.
        assert_eq!(f["optimize"][0]["verdict"], f["verdict"]);
        assert_eq!(f["optimize"][0]["final"], f["final"]);
        assert_eq!(f["optimize"][0]["control"], f["control"]);
        // Whether the policy learned.
        let l = &f["learning"];
        assert_eq!(
            (l["rewards"].clone(), l["policy_versions"].clone()),
            (json!(24), json!(6))
        );
        assert_eq!(l["curve"].as_array().map(Vec::len), Some(6));
        assert_eq!(l["curve"][0]["version"], json!(1));
        assert!(l["curve"][0]["reward_moving_average"].is_number());
        assert_eq!(l["curve"][2]["entropy"], Value::Null, "NaN entropy is null");
        assert_eq!(l["inputs"][0]["identity_probability_first"], json!(0.0123));
        assert_eq!(l["inputs"][0]["argmax_probability_last"], json!(0.0412));
        assert!(l["inputs"][0]["argmax_last"]
            .as_str()
            .is_some_and(|s| s.starts_with("Genotype(")));
        assert_eq!(l["supernet"]["shards_per_round"], json!(4));
        // The whole document is JSON (no NaN or infinity anywhere).
        let text = serde_json::to_string(&Value::Object(f)).expect("serialises");
        assert!(!text.contains("NaN") && !text.contains("inf"), "{text}");
    }

    #[test]
    fn unknown_interval_ends_and_absent_parts_are_null() {
        let mut r = crate::report::example::result(&[7], false);
        if let Some(l) = r.learning.as_mut() {
            l.inputs[0].argmax_probability_first = f64::NAN;
            l.inputs[0].argmax_first_darts.clear();
            l.supernet = None;
        }
        let f = fields(&r);
        let d = &f["final"]["paired_difference"];
        assert_eq!(d["ci_low"], Value::Null, "-inf is null");
        assert_eq!(d["ci_high"], Value::Null, "+inf is null");
        assert!(d["mean"].is_number());
        assert_eq!(f["final"]["original"]["std"], json!(0.0));
        assert!(!f.contains_key("control"), "no control without one");
        assert!(f["optimize"][0].get("control").is_none());
        assert_eq!(
            f["learning"]["inputs"][0]["argmax_probability_first"],
            Value::Null
        );
        assert_eq!(f["learning"]["inputs"][0]["argmax_first"], Value::Null);
        assert!(f["learning"].get("supernet").is_none());
        // A result written before verdicts: the new fields are null, the old ones unchanged.
        let mut old = r.clone();
        old.learning = None;
        if let Some(o) = old.optimize.first_mut() {
            o.verdict.clear();
            o.recommended = None;
            o.r#final = None;
        }
        let f = fields(&old);
        for key in ["verdict", "recommended", "final", "learning"] {
            assert_eq!(f[key], Value::Null, "{key}");
        }
        assert!(f["original"]["accuracy"].is_number());
        // A recommended genotype that is not JSON names the field.
        if let Some(rec) = r.optimize[0].recommended.as_mut() {
            rec.genotype_json = "{oops".into();
        }
        let err = optimize_json(&r).expect_err("not JSON");
        assert!(
            err.to_string()
                .contains("optimize[0].recommended.genotype_json"),
            "{err}"
        );
    }
}
