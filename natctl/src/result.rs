//! `natctl result JOB`: the stable `-o json` shape of a job's result and its table.

use nat_proto::v1;
use serde::Serialize;
use serde_json::Value;

use crate::client::{genotype_json, kind_name, state_name, task_state_name};
use crate::output::{render, table};
use crate::policy::OptimizeFields;

/// A job's result. An optimize job adds the fields of [`OptimizeFields`] (`original`, `best`,
/// `verdict`, `recommended`, `final`, `optimize`, `policy`, `rewards`, `learning`, …).
#[derive(Debug, Clone, Serialize)]
pub struct ResultView {
    pub job_id: String,
    /// `evaluate` | `optimize`.
    pub kind: &'static str,
    /// The job's state.
    pub state: &'static str,
    /// One per submitted architecture (empty for an optimize job: see `optimize`).
    pub architectures: Vec<ArchitectureView>,
    #[serde(flatten)]
    pub optimize: Option<OptimizeFields>,
}

/// One architecture of a result; the measurements are `null` until its task succeeded.
#[derive(Debug, Clone, Serialize)]
pub struct ArchitectureView {
    pub index: u32,
    /// DARTS string.
    pub genotype: String,
    /// Canonical genotype JSON (`null` when the coordinator sent none).
    pub genotype_json: Value,
    /// Canonical SHA-256 hash.
    pub hash: String,
    /// The task's state: `queued` | `running` | `succeeded` | `failed` | `cancelled`.
    pub state: &'static str,
    pub attempts: u32,
    pub params: Option<u64>,
    pub madds: Option<u64>,
    pub accuracy: Option<f64>,
    pub loss: Option<f64>,
    pub wall_seconds: Option<f64>,
    pub images_per_second: Option<f64>,
    /// Why the task failed (`null` when it did not).
    pub error: Option<String>,
}

impl ResultView {
    /// The view of a wire result; a genotype that is not JSON is an error naming its field.
    pub fn of(r: &v1::GetJobResultResponse) -> anyhow::Result<ResultView> {
        let architectures = r
            .architectures
            .iter()
            .map(|a| {
                let m = a.result.as_ref();
                Ok(ArchitectureView {
                    index: a.index,
                    genotype: a.genotype_darts.clone(),
                    genotype_json: genotype_json(
                        &a.genotype_json,
                        &format!("architectures[{}].genotype_json", a.index),
                    )?,
                    hash: a.canonical_hash.clone(),
                    state: task_state_name(a.state),
                    attempts: a.attempts,
                    params: m.map(|m| m.params),
                    madds: m.map(|m| m.madds),
                    accuracy: m.map(|m| m.accuracy),
                    loss: m.map(|m| m.loss),
                    wall_seconds: m.map(|m| m.wall_seconds),
                    images_per_second: m.map(|m| m.images_per_second),
                    error: (!a.error.is_empty()).then(|| a.error.clone()),
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(ResultView {
            job_id: r.job_id.clone(),
            kind: kind_name(r.kind),
            state: state_name(r.state),
            architectures,
            optimize: crate::policy::optimize_json(r)?,
        })
    }
}

/// `natctl result JOB` as a table: the architectures, then for an optimize job the verdict,
/// the recommendation, the final evaluation and the learning per input.
pub fn result_text(r: &v1::GetJobResultResponse) -> String {
    let mut out = format!(
        "job {} ({}) {}\n",
        r.job_id,
        kind_name(r.kind),
        state_name(r.state)
    );
    if !(r.architectures.is_empty() && r.kind == v1::JobKind::Optimize as i32) {
        let mut t = table(&["#", "STATE", "ACCURACY", "PARAMS", "MADDS", "HASH", "ERROR"]);
        for a in &r.architectures {
            let (acc, params, madds) = match &a.result {
                Some(m) => (
                    format!("{:.4}", m.accuracy),
                    m.params.to_string(),
                    m.madds.to_string(),
                ),
                None => ("-".into(), "-".into(), "-".into()),
            };
            t.add_row(vec![
                a.index.to_string(),
                task_state_name(a.state).to_string(),
                acc,
                params,
                madds,
                a.canonical_hash
                    .get(..12)
                    .unwrap_or(&a.canonical_hash)
                    .to_string(),
                a.error.clone(),
            ]);
        }
        out.push_str(&render(t, &[0, 2, 3, 4]));
    }
    out.push_str(&crate::report::optimize_text(r));
    out
}
