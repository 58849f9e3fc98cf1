//! A job's dataset: its name and shape, resolved at submission, and why a job's tasks wait
//! for a worker that has it.
//!
//! A built-in dataset has its own shape. A user dataset (a folder under the workers' data dir)
//! has the shape the submission gives, else the one the registered workers report for it in
//! their `dataset_infos` (kept with each worker in the store, so it survives a restart).

use std::time::Duration;

use chrono::{DateTime, Utc};
use nat_arch::{Dataset, DatasetShape};
use nat_proto::v1;
use nat_schema::dataset::{check_name, shape_from_proto};
use nat_store::{Worker, WorkerState};

use crate::error::ApiError;
use crate::state::excerpt;

/// Most workers named in an error per shape.
const MAX_NAMED: usize = 5;

/// The dataset name and shape of `r`, validated and resolved against the registered `workers`
/// (only those that are not lost are asked; a built-in dataset needs none).
pub fn resolve(
    r: &v1::SubmitJobRequest,
    workers: &[Worker],
) -> Result<(String, DatasetShape), ApiError> {
    let name = r.dataset.trim();
    if name.is_empty() {
        return Err(ApiError::invalid(
            "dataset",
            "is required (a built-in dataset or the name of one your workers have)",
        ));
    }
    check_name("dataset", name)?;
    let given = shape_from_proto("dataset_shape", r.dataset_shape.as_ref())?;
    if let Some(builtin) = Dataset::from_name(name) {
        if let Some(given) = given {
            check_builtin(builtin, given)?;
        }
        return Ok((name.to_string(), builtin.shape()));
    }
    let reported = reported_shapes(name, workers);
    let shape = match (reported.as_slice(), given) {
        ([], Some(given)) => given,
        ([], None) => {
            return Err(ApiError::FailedPrecondition(format!(
                "dataset_shape is required: no registered worker reports dataset {name:?}; give \
                 dataset_shape (channels, image_size, classes), or start a worker that has the \
                 dataset under its data dir first"
            )))
        }
        ([(shape, _)], None) => *shape,
        ([(shape, reporters)], Some(given)) => {
            if *shape != given {
                return Err(ApiError::FailedPrecondition(format!(
                    "dataset_shape {given} does not match the shape the workers report for \
                     dataset {name:?}: {shape} ({}); give the workers' shape or none",
                    named(reporters)
                )));
            }
            given
        }
        (several, _) => {
            let each: Vec<String> = several
                .iter()
                .map(|(shape, reporters)| format!("{shape} ({})", named(reporters)))
                .collect();
            return Err(ApiError::FailedPrecondition(format!(
                "the workers disagree on the shape of dataset {name:?}: {}; make their copies \
                 agree (or take the odd ones off) and submit again",
                each.join("; ")
            )));
        }
    };
    Ok((name.to_string(), shape))
}

/// A given shape must be the built-in dataset's; the error names the first field that differs.
fn check_builtin(builtin: Dataset, given: DatasetShape) -> Result<(), ApiError> {
    let want = builtin.shape();
    let fields = [
        ("channels", want.channels, given.channels),
        ("image_size", want.image_size, given.image_size),
        ("classes", want.classes, given.classes),
    ];
    match fields.iter().find(|(_, w, g)| w != g) {
        None => Ok(()),
        Some((field, w, g)) => Err(ApiError::invalid(
            format!("dataset_shape.{field}"),
            format!(
                "dataset {} is built in with {field} = {w}, got {g} (leave dataset_shape unset)",
                builtin.name()
            ),
        )),
    }
}

/// The distinct shapes the workers that are not lost report for `name`, each with the
/// workers reporting it ("name (id)"), in registration order.
fn reported_shapes(name: &str, workers: &[Worker]) -> Vec<(DatasetShape, Vec<String>)> {
    let mut shapes: Vec<(DatasetShape, Vec<String>)> = Vec::new();
    let mut sorted: Vec<&Worker> = workers
        .iter()
        .filter(|w| w.state == WorkerState::Active)
        .collect();
    sorted.sort_by_key(|w| w.registered_at);
    for w in sorted {
        for info in w
            .capabilities
            .dataset_infos
            .iter()
            .filter(|i| i.name == name)
        {
            let who = format!("{} ({})", excerpt(&w.name), w.id);
            match shapes.iter_mut().find(|(s, _)| *s == info.shape) {
                Some((_, reporters)) => reporters.push(who),
                None => shapes.push((info.shape, vec![who])),
            }
        }
    }
    shapes
}

/// "a, b, c and 2 more workers".
fn named(reporters: &[String]) -> String {
    let shown = reporters
        .iter()
        .take(MAX_NAMED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    match reporters.len().saturating_sub(MAX_NAMED) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

/// Why a job on `dataset` whose tasks wait is not being served: no live worker (registered,
/// not lost, heard from within `lease`), or none of them has the dataset. `None` otherwise.
pub fn waiting_reason(
    dataset: &str,
    workers: &[Worker],
    now: DateTime<Utc>,
    lease: Duration,
) -> Option<String> {
    let lease = chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
    let live: Vec<&[String]> = workers
        .iter()
        .filter(|w| {
            w.state == WorkerState::Active
                && now.signed_duration_since(w.last_heartbeat_at) <= lease
        })
        .map(|w| w.capabilities.datasets.as_slice())
        .collect();
    nat_schema::dataset::waiting_reason(dataset, &live)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nat_schema::DatasetInfo;
    use nat_store::{Capabilities, WorkerId};

    fn worker(name: &str, datasets: &[&str], infos: &[(&str, DatasetShape)]) -> Worker {
        let now = Utc::now();
        Worker {
            id: WorkerId::new(),
            name: name.into(),
            capabilities: Capabilities {
                datasets: datasets.iter().map(|d| d.to_string()).collect(),
                dataset_infos: infos
                    .iter()
                    .map(|(n, shape)| DatasetInfo {
                        name: n.to_string(),
                        shape: *shape,
                        train_examples: 10,
                        test_examples: 0,
                        format: "npz".into(),
                    })
                    .collect(),
                ..Default::default()
            },
            state: WorkerState::Active,
            last_heartbeat_at: now,
            registered_at: now,
            tasks_in_hand: 0,
        }
    }

    fn request(dataset: &str, shape: Option<(u32, u32, u32)>) -> v1::SubmitJobRequest {
        v1::SubmitJobRequest {
            dataset: dataset.into(),
            dataset_shape: shape.map(|(channels, image_size, classes)| v1::DatasetShape {
                channels,
                image_size,
                classes,
            }),
            ..Default::default()
        }
    }

    const CATS: DatasetShape = DatasetShape {
        channels: 3,
        image_size: 32,
        classes: 2,
    };

    #[test]
    fn lost_workers_teach_no_shape() {
        let mut lost = worker(
            "old",
            &["cats"],
            &[("cats", DatasetShape { classes: 5, ..CATS })],
        );
        lost.state = WorkerState::Lost;
        let live = worker("new", &["cats"], &[("cats", CATS)]);
        let (name, shape) = resolve(&request(" cats ", None), &[lost.clone(), live]).expect("ok");
        assert_eq!((name.as_str(), shape), ("cats", CATS));
        let e = resolve(&request("cats", None), &[lost]).expect_err("nobody live reports it");
        assert!(matches!(e, ApiError::FailedPrecondition(ref m) if m.contains("dataset_shape")));
        // A built-in needs no worker, and a user dataset with a given shape neither.
        let (_, shape) = resolve(&request("cifar10", None), &[]).expect("built in");
        assert_eq!(shape, Dataset::Cifar10.shape());
        let (_, shape) = resolve(&request("cats", Some((1, 8, 3))), &[]).expect("given");
        assert_eq!(shape.classes, 3);
    }

    #[test]
    fn waiting_counts_only_live_workers() {
        let lease = Duration::from_secs(30);
        let now = Utc::now();
        let mut stale = worker("stale", &["cats"], &[]);
        stale.last_heartbeat_at = now - chrono::Duration::seconds(31);
        let mut lost = worker("lost", &[], &[]);
        lost.state = WorkerState::Lost;
        assert_eq!(
            waiting_reason("cats", &[stale.clone(), lost.clone()], now, lease).as_deref(),
            Some("no worker is connected")
        );
        let digits = worker("d", &["digits"], &[]);
        let reason = waiting_reason("cats", &[stale, lost, digits], now, lease).expect("reason");
        assert!(
            reason.contains("\"cats\" (1 worker connected: digits)"),
            "{reason}"
        );
        let anything = worker("a", &[], &[]);
        assert_eq!(waiting_reason("cats", &[anything], now, lease), None);
    }
}
