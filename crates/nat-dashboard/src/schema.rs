//! The documents the dashboard reads, decoded with [`nat_schema`]'s types.
//!
//! The store keeps specs, payloads, results and event payloads as JSON and knows none of their
//! shapes; their shapes are defined once in `nat-schema`, shared with the coordinator that
//! writes them. A document that does not decode is an error naming the document and the field
//! ([`DecodeError`]), never a silent default: the job page answers it as an error, an event line
//! shows `undecodable: <error>`.
//!
//! - `jobs.spec` → [`JobSpec`] (an `evaluate` job) or [`OptimizeJobSpec`] (an `optimize` job),
//!   by [`JobKind`]: [`job_spec`].
//! - `jobs.result` of an optimize job → [`OptimizeResult`]: [`optimize_result`].
//! - `tasks.payload` / `tasks.result` by [`TaskKind`]: [`TrainEvalPayload`],
//!   [`TrainEvalResult`], [`SupernetResult`]; `tasks.progress` → [`Progress`].
//! - Event payloads → [`JobEvent`] (`JobEvent::decode`); the `result` of a `task_succeeded`
//!   event → [`TaskResult`] ([`task_result`]).

use nat_arch::Genotype;
use nat_schema::event::Progress;
use nat_schema::result::OptimizeResult;
use nat_schema::{
    decode, DecodeError, JobKind, JobSpec, OptimizeJobSpec, SupernetResult, TaskKind,
    TrainEvalPayload, TrainEvalResult,
};
use serde_json::Value;

pub use nat_schema::event::JobEvent;

/// `jobs.spec` of a job of `kind` (its wire name): the part every kind shares.
pub fn job_spec(kind: &str, spec: &Value) -> Result<JobSpec, DecodeError> {
    match kind_of::<JobKind>(kind, "job spec")? {
        JobKind::Evaluate => decode("evaluate job spec", spec),
        JobKind::Optimize => decode::<OptimizeJobSpec>("optimize job spec", spec).map(|s| s.base),
    }
}

/// `jobs.result` of a job of `kind`: the optimize result of an optimize job (`None` while the
/// driver has written none); other kinds keep no result the dashboard reads.
pub fn optimize_result(
    kind: &str,
    result: Option<&Value>,
) -> Result<Option<OptimizeResult>, DecodeError> {
    match (kind_of::<JobKind>(kind, "job result")?, result) {
        (JobKind::Optimize, Some(r)) => decode("optimize result", r).map(Some),
        _ => Ok(None),
    }
}

/// The result of a finished task, by task kind.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskResult {
    /// A `train_eval` task's measurements.
    TrainEval(TrainEvalResult),
    /// A `supernet` task's pair scores.
    Supernet(SupernetResult),
}

impl TaskResult {
    /// The accuracy a `train_eval` task measured (`None` for a supernet task).
    pub fn accuracy(&self) -> Option<f64> {
        match self {
            TaskResult::TrainEval(r) => Some(r.outcome.accuracy),
            TaskResult::Supernet(_) => None,
        }
    }

    /// The throughput a `train_eval` task measured (`None` for a supernet task).
    pub fn images_per_second(&self) -> Option<f64> {
        match self {
            TaskResult::TrainEval(r) => Some(r.outcome.images_per_second),
            TaskResult::Supernet(_) => None,
        }
    }
}

/// `tasks.result` of a task of `kind` (its wire name).
pub fn task_result_of(kind: &str, result: &Value) -> Result<TaskResult, DecodeError> {
    Ok(match kind_of::<TaskKind>(kind, "task result")? {
        TaskKind::TrainEval => TaskResult::TrainEval(decode("train_eval result", result)?),
        TaskKind::Supernet => TaskResult::Supernet(decode("supernet result", result)?),
    })
}

/// The `result` of a `task_succeeded` event, whose task kind the event does not carry: a
/// document with `scores` is a supernet task's result, any other a `train_eval` task's. The
/// error names the field under `result`.
pub fn task_result(result: &Value) -> Result<TaskResult, DecodeError> {
    let in_event = |e: DecodeError| DecodeError {
        document: "task_succeeded event",
        field: if e.field == "." {
            "result".into()
        } else {
            format!("result.{}", e.field)
        },
        reason: e.reason,
    };
    let is_supernet = result.as_object().is_some_and(|o| o.contains_key("scores"));
    let kind = if is_supernet {
        TaskKind::Supernet
    } else {
        TaskKind::TrainEval
    };
    task_result_of(kind.as_str(), result).map_err(in_event)
}

/// `tasks.payload` of a `train_eval` task.
pub fn train_eval_payload(payload: &Value) -> Result<TrainEvalPayload, DecodeError> {
    decode("train_eval payload", payload)
}

/// `tasks.progress` of a task.
pub fn progress(progress: &Value) -> Result<Progress, DecodeError> {
    decode("task progress", progress)
}

/// A kind name that is not one of the enum's wire names, as a decode error of `document`.
fn kind_of<K: std::str::FromStr<Err = nat_schema::UnknownName>>(
    name: &str,
    document: &'static str,
) -> Result<K, DecodeError> {
    name.parse::<K>().map_err(|e| DecodeError {
        document,
        field: "kind".into(),
        reason: e.to_string(),
    })
}

/// Parses a genotype given as a JSON object, or as a string (canonical JSON, DARTS string, text
/// form or preset name). The error says why it is not a genotype.
pub fn genotype(value: &Value) -> Result<Genotype, String> {
    match value {
        Value::String(s) => nat_arch::parse_any(s).map_err(|e| e.to_string()),
        Value::Object(_) => Genotype::from_json_value(value).map_err(|e| e.to_string()),
        other => Err(format!(
            "expected a genotype (a JSON object or a string), got {other}"
        )),
    }
}

/// [`genotype`] of field `field` of `document`, as a decode error naming it.
pub fn genotype_field(
    value: &Value,
    document: &'static str,
    field: impl Into<String>,
) -> Result<Genotype, DecodeError> {
    genotype(value).map_err(|reason| DecodeError {
        document,
        field: field.into(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documents_that_do_not_fit_name_the_field() {
        let e = job_spec("evaluate", &json!({"name": "x", "dataset": "digits"}))
            .expect_err("no seed, budget, architectures");
        assert_eq!(e.document, "evaluate job spec");
        assert!(e.to_string().contains("seed"), "{e}");
        let e = job_spec("bogus", &json!({})).expect_err("unknown kind");
        assert_eq!(e.field, "kind");
        let e = task_result(&json!({"index": 0, "accuracy": "high"})).expect_err("a string");
        assert_eq!(e.document, "task_succeeded event");
        assert_eq!(e.field, "result.accuracy");
        let e = task_result(&json!({"scores": [{"acc_beta": 0.5}]})).expect_err("no acc_alpha");
        assert!(e.field.starts_with("result.scores[0]"), "{e}");
        assert!(optimize_result("evaluate", Some(&json!(42)))
            .expect("not read")
            .is_none());
        let e = optimize_result(
            "optimize",
            Some(&json!({"summary": {"policy_version": "x"}})),
        )
        .expect_err("a string");
        assert_eq!(e.field, "summary.policy_version");
    }

    #[test]
    fn genotypes_parse_from_strings_and_objects() {
        let g = genotype(&json!("darts-v2")).expect("preset name");
        let obj = g.to_json_value();
        assert_eq!(genotype(&obj), Ok(g.clone()));
        assert_eq!(genotype(&Value::String(g.to_json())), Ok(g));
        assert!(genotype(&json!(42)).is_err());
        assert!(genotype(&json!("not a genotype")).is_err());
        let e = genotype_field(&json!(42), "new_best event", "genotype").expect_err("number");
        assert_eq!(e.field, "genotype");
    }
}
