//! `natctl policies` and `natctl transform`: stored NAT policies (`nat.v1.PolicyService`), and
//! the optimize part of `natctl result --json`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::Args;
use nat_proto::v1;
use nat_proto::v1::policy_service_client::PolicyServiceClient;
use nat_schema::result::PolicyRef;
use serde::Serialize;
use serde_json::{json, Value};
use tonic::transport::Channel;

use crate::client::genotype_json;

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
    /// Print JSON (`genotype` DARTS string, `genotype_json`, `policy`, `changed_edges`).
    #[arg(long)]
    json: bool,
}

/// The commands of this module.
#[derive(Debug)]
pub enum PolicyCommand {
    /// List stored policies.
    List {
        /// Print JSON.
        json: bool,
    },
    /// Transform an architecture with a stored policy.
    Transform(TransformArgs),
}

impl PolicyCommand {
    /// `natctl policies`.
    pub fn list(json: bool) -> Self {
        PolicyCommand::List { json }
    }
}

/// Runs a policy command against the coordinator at `url`.
pub fn run(cmd: PolicyCommand, url: &str) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(run_async(cmd, url))
}

async fn connect(url: &str) -> anyhow::Result<Channel> {
    let endpoint = Channel::from_shared(url.to_string())
        .map_err(|_| anyhow!("--coordinator: {url:?} is not a valid URL"))?
        .connect_timeout(Duration::from_secs(5));
    endpoint
        .connect()
        .await
        .with_context(|| format!("cannot connect to the coordinator at {url}"))
}

async fn run_async(cmd: PolicyCommand, url: &str) -> anyhow::Result<ExitCode> {
    let mut client = PolicyServiceClient::new(connect(url).await?);
    match cmd {
        PolicyCommand::List { json } => {
            let policies = client
                .list_policies(v1::ListPoliciesRequest {})
                .await
                .map_err(|s| anyhow!("list policies: {} ({:?})", s.message(), s.code()))?
                .into_inner()
                .policies;
            if json {
                let list: Vec<Value> = policies.iter().map(policy_json).collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{:<44} {:<6} {:>8} {:>9}  SOURCE JOB",
                    "ID", "SPACE", "VERSION", "REWARDS"
                );
                for p in &policies {
                    println!(
                        "{:<44} {:<6} {:>8} {:>9}  {}",
                        p.id,
                        p.space,
                        p.version,
                        p.rewards_consumed,
                        if p.source_job.is_empty() {
                            "-"
                        } else {
                            &p.source_job
                        }
                    );
                }
            }
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
                .map_err(|s| anyhow!("transform: {} ({:?})", s.message(), s.code()))?
                .into_inner();
            if a.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "genotype": r.genotype_darts,
                        "genotype_json": genotype_json(&r.genotype_json, "genotype_json")?,
                        "policy": r.policy.as_ref().map(policy_ref).transpose()?,
                        "changed_edges": r.changed_edges,
                    }))?
                );
            } else {
                println!("{}", r.genotype_darts);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn policy_json(p: &v1::PolicyInfo) -> Value {
    json!({
        "id": p.id,
        "space": p.space,
        "version": p.version,
        "source_job": (!p.source_job.is_empty()).then(|| p.source_job.clone()),
        "rewards": p.rewards_consumed,
        "updated_at_unix_ms": p.updated_at_unix_ms,
    })
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

/// The optimize fields of `natctl result JOB --json`: `original` and `best` (each `genotype`
/// DARTS string, `genotype_json`, `accuracy`, `params`, `madds`) and `changed_edges` of the
/// first input, all inputs under `optimize`, `policy` {`id`, `version`} and `rewards`. A
/// genotype JSON text that is not JSON is an error naming the field.
pub fn optimize_json(r: &v1::GetJobResultResponse) -> anyhow::Result<Vec<(&'static str, Value)>> {
    if r.kind != v1::JobKind::Optimize as i32 {
        return Ok(Vec::new());
    }
    let outcomes = r
        .optimize
        .iter()
        .enumerate()
        .map(|(i, o)| {
            Ok(OutcomeJson {
                original: arch_json(o.original.as_ref(), &format!("optimize[{i}].original"))?,
                best: arch_json(o.best.as_ref(), &format!("optimize[{i}].best"))?,
                changed_edges: o.changed_edges.clone(),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let first = outcomes.first();
    Ok(vec![
        (
            "original",
            serde_json::to_value(first.and_then(|o| o.original.as_ref()))?,
        ),
        (
            "best",
            serde_json::to_value(first.and_then(|o| o.best.as_ref()))?,
        ),
        (
            "changed_edges",
            serde_json::to_value(first.map(|o| &o.changed_edges))?,
        ),
        ("optimize", serde_json::to_value(&outcomes)?),
        (
            "policy",
            serde_json::to_value(r.policy.as_ref().map(policy_ref).transpose()?)?,
        ),
        ("rewards", json!(r.rewards)),
    ])
}

#[cfg(test)]
mod tests {
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
            }],
            policy: Some(v1::PolicyRef {
                id: "job-1".into(),
                version: 3,
            }),
            rewards: 12,
            ..Default::default()
        };
        let fields: serde_json::Map<String, Value> = optimize_json(&r)
            .expect("valid")
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
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
        assert!(optimize_json(&evaluate).expect("valid").is_empty());
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
}
