//! The stable `-o json|yaml` shapes of jobs, workers and job events (docs/CLI.md documents
//! every field), built from the wire types, and their tables.
//!
//! Unknown or absent values are `null`, never a made-up default: an empty error is `null`, a
//! dataset shape of all zeros (not resolved yet) is `null`.

use nat_arch::DatasetShape;
use nat_proto::v1;
use nat_schema::Budget;
use serde::Serialize;
use serde_json::Value;

use crate::client::{genotype_json, kind_name, state_name};
use crate::output::{render, table};

/// One job (`status`, `submit`, `cancel`, each item of `jobs`).
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub job_id: String,
    /// Free-text label (`""` when none).
    pub name: String,
    /// `evaluate` | `optimize`.
    pub kind: &'static str,
    /// `queued` | `running` | `succeeded` | `failed` | `cancelled`.
    pub state: &'static str,
    pub dataset: String,
    /// The resolved input shape (`null` while unknown).
    pub dataset_shape: Option<DatasetShape>,
    /// Why a queued job's tasks are not being leased (`null` when nothing holds it back).
    pub waiting_reason: Option<String>,
    /// Name of the token that submitted the job (`null` when submitted without authentication).
    pub owner: Option<String>,
    pub seed: u64,
    pub priority: i32,
    pub budget_preset: String,
    /// The resolved training budget (`null` when the coordinator sent none).
    pub budget: Option<Budget>,
    /// Canonical genotype JSON of each architecture, in submission order.
    pub architectures: Vec<Value>,
    pub tasks: TaskCounts,
    pub created_at_unix_ms: i64,
    pub updated_at_unix_ms: i64,
    /// `null` while the job runs.
    pub finished_at_unix_ms: Option<i64>,
    /// Why the job failed (`null` when it did not).
    pub error: Option<String>,
    pub requirements: Option<RequirementsView>,
    /// An optimize job's resolved settings (`null` for other kinds).
    pub optimize: Option<OptimizeView>,
}

/// A job's task counters.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TaskCounts {
    pub total: u32,
    /// Not finished yet (waiting or leased).
    pub pending: u32,
    /// Leased now (0 in `jobs`, which does not count them).
    pub running: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub cancelled: u32,
}

/// What a job's tasks need from a slot.
#[derive(Debug, Clone, Serialize)]
pub struct RequirementsView {
    /// `any` | `cpu` | `cuda`.
    pub device: &'static str,
    pub min_device_memory_bytes: u64,
}

/// An optimize job's settings as the coordinator stored them (0 / `""` = its default).
#[derive(Debug, Clone, Serialize)]
pub struct OptimizeView {
    /// `nat` | `nat++` (`null` = the default).
    pub space: Option<&'static str>,
    /// `proxy` | `supernet` (`null` = the default).
    pub reward: Option<&'static str>,
    pub iterations: u32,
    pub samples_per_iteration: u32,
    pub max_staleness: u32,
    pub learning_rate: f64,
    pub entropy_weight: f64,
    pub final_budget_preset: Option<String>,
    pub policy_profile: String,
    pub policy_id: String,
    pub derive_argmax: bool,
    pub derive_samples: u32,
    pub random_inputs: bool,
    pub final_seeds: u32,
    pub max_cost_ratio: f64,
    pub control: String,
    pub derive_top_k: u32,
}

/// A registered worker (each item of `workers`).
#[derive(Debug, Clone, Serialize)]
pub struct WorkerView {
    pub worker_id: String,
    pub name: String,
    /// A heartbeat was seen within the lease duration.
    pub alive: bool,
    pub slots: u32,
    pub cpu_cores: u32,
    pub tasks_in_hand: u32,
    pub version: String,
    pub hostname: String,
    pub registered_at_unix_ms: i64,
    pub last_seen_unix_ms: i64,
    pub devices: Vec<DeviceView>,
    /// Datasets present on the worker (empty = unknown: the coordinator does not filter).
    pub datasets: Vec<String>,
    /// Shapes and sizes of (some of) `datasets`.
    pub dataset_infos: Vec<DatasetInfoView>,
}

/// One device of a worker.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceView {
    /// `cpu` | `cuda`.
    pub kind: &'static str,
    pub index: u32,
    pub name: String,
    pub model: String,
    /// 0 when unknown.
    pub memory_bytes: u64,
}

/// A dataset a worker has, as it decoded it.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetInfoView {
    pub name: String,
    pub shape: Option<DatasetShape>,
    pub train_examples: u64,
    /// 0 = no test files (a fixed part of train is held out as test).
    pub test_examples: u64,
    /// `builtin` | `image-folder` | `npz` | `safetensors`.
    pub format: String,
}

/// A training measurement.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct MetricsView {
    pub accuracy: f64,
    pub loss: f64,
    pub params: u64,
    pub madds: u64,
    pub wall_seconds: f64,
    pub images_per_second: f64,
}

/// One event of `watch -o json` (one JSON object a line).
#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    /// Strictly increasing per job; pass the last one seen to resume.
    pub sequence: u64,
    pub job_id: String,
    pub at_unix_ms: i64,
    #[serde(flatten)]
    pub event: EventKind,
}

/// What happened, tagged by `type`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    StateChanged {
        state: &'static str,
        reason: Option<String>,
    },
    Progress {
        tasks_total: u32,
        tasks_done: u32,
        tasks_running: u32,
    },
    TaskCompleted {
        task_id: String,
        architecture_index: u32,
        worker_id: String,
        attempt: u32,
        result: Option<MetricsView>,
    },
    TaskFailed {
        task_id: String,
        reason: String,
        retryable: bool,
        will_retry: bool,
        attempt: u32,
    },
    TaskProgress {
        task_id: String,
        fraction: f64,
        message: String,
    },
    NewBest {
        input_index: u32,
        accuracy: f64,
        reward: f64,
        /// DARTS string (`null` when the event carries none).
        genotype: Option<String>,
    },
    PolicyUpdated {
        version: u64,
        iteration: u32,
        iterations: u32,
        mean_reward: f64,
        baseline: f64,
        entropy: f64,
        loss: Option<f64>,
        rewards_used: u32,
        stale_dropped: u32,
        rewards: Vec<f64>,
    },
    PhaseChanged {
        phase: String,
    },
}

fn nonempty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// A wire shape, `None` when unset or all zeros.
pub fn shape(s: Option<&v1::DatasetShape>) -> Option<DatasetShape> {
    let s = s?;
    (s.channels != 0 || s.image_size != 0 || s.classes != 0).then_some(DatasetShape {
        channels: s.channels,
        image_size: s.image_size,
        classes: s.classes,
    })
}

fn device_name(kind: i32) -> &'static str {
    match v1::DeviceKind::try_from(kind) {
        Ok(v1::DeviceKind::Cpu) => "cpu",
        Ok(v1::DeviceKind::Cuda) => "cuda",
        _ => "any",
    }
}

// === impl JobView ===

impl JobView {
    /// The view of a wire job; a genotype that is not JSON is an error naming it.
    pub fn of(j: &v1::Job) -> anyhow::Result<JobView> {
        let architectures = j
            .architectures
            .iter()
            .enumerate()
            .map(|(i, a)| genotype_json(a, &format!("architectures[{i}]")))
            .collect::<anyhow::Result<_>>()?;
        Ok(JobView {
            job_id: j.job_id.clone(),
            name: j.name.clone(),
            kind: kind_name(j.kind),
            state: state_name(j.state),
            dataset: j.dataset.clone(),
            dataset_shape: shape(j.dataset_shape.as_ref()),
            waiting_reason: nonempty(&j.waiting_reason),
            owner: nonempty(&j.owner),
            seed: j.seed,
            priority: j.priority,
            budget_preset: j.budget_preset.clone(),
            budget: j.budget.as_ref().map(Budget::from_proto),
            architectures,
            tasks: TaskCounts {
                total: j.tasks_total,
                pending: j.tasks_pending,
                running: j.tasks_running,
                succeeded: j.tasks_succeeded,
                failed: j.tasks_failed,
                cancelled: j.tasks_cancelled,
            },
            created_at_unix_ms: j.created_at_unix_ms,
            updated_at_unix_ms: j.updated_at_unix_ms,
            finished_at_unix_ms: (j.finished_at_unix_ms != 0).then_some(j.finished_at_unix_ms),
            error: nonempty(&j.error),
            requirements: j.requirements.as_ref().map(|r| RequirementsView {
                device: device_name(r.device),
                min_device_memory_bytes: r.min_device_memory_bytes,
            }),
            optimize: j.optimize.as_ref().map(optimize_view),
        })
    }

    /// Tasks finished (succeeded, failed or cancelled).
    pub fn done(&self) -> u32 {
        self.tasks.succeeded + self.tasks.failed + self.tasks.cancelled
    }

    /// `natctl status`: one field a line.
    pub fn detail_table(&self) -> String {
        let mut t = table(&[]);
        let mut row = |k: &str, v: String| {
            t.add_row(vec![format!("{k}:"), v]);
        };
        row("job", self.job_id.clone());
        if !self.name.is_empty() {
            row("name", self.name.clone());
        }
        row("kind", self.kind.to_string());
        row("state", self.state.to_string());
        row("dataset", self.dataset.clone());
        if let Some(s) = &self.dataset_shape {
            row(
                "shape",
                format!(
                    "{} channel(s), {}x{} pixels, {} classes",
                    s.channels, s.image_size, s.image_size, s.classes
                ),
            );
        }
        row("budget", self.budget_preset.clone());
        row("priority", self.priority.to_string());
        if let Some(o) = &self.owner {
            row("owner", o.clone());
        }
        let c = &self.tasks;
        row(
            "tasks",
            format!(
                "{} total, {} succeeded, {} failed, {} cancelled, {} running, {} pending",
                c.total, c.succeeded, c.failed, c.cancelled, c.running, c.pending
            ),
        );
        if let Some(w) = &self.waiting_reason {
            row("waiting", w.clone());
        }
        if let Some(e) = &self.error {
            row("error", e.clone());
        }
        render(t, &[])
    }
}

fn optimize_view(o: &v1::OptimizeSpec) -> OptimizeView {
    OptimizeView {
        space: match v1::SearchSpace::try_from(o.space) {
            Ok(v1::SearchSpace::Nat) => Some("nat"),
            Ok(v1::SearchSpace::NatPlusPlus) => Some("nat++"),
            _ => None,
        },
        reward: match v1::RewardMode::try_from(o.reward) {
            Ok(v1::RewardMode::Proxy) => Some("proxy"),
            Ok(v1::RewardMode::Supernet) => Some("supernet"),
            _ => None,
        },
        iterations: o.iterations,
        samples_per_iteration: o.samples_per_iteration,
        max_staleness: o.max_staleness,
        learning_rate: o.learning_rate,
        entropy_weight: o.entropy_weight,
        final_budget_preset: o.final_budget.as_ref().and_then(|b| nonempty(&b.preset)),
        policy_profile: o.policy_profile.clone(),
        policy_id: o.policy_id.clone(),
        derive_argmax: o.derive_argmax,
        derive_samples: o.derive_samples,
        random_inputs: o.random_inputs,
        final_seeds: o.final_seeds,
        max_cost_ratio: o.max_cost_ratio,
        control: o.control.clone(),
        derive_top_k: o.derive_top_k,
    }
}

/// `natctl jobs`.
pub fn jobs_table(jobs: &[JobView]) -> String {
    let mut t = table(&["JOB", "KIND", "STATE", "PROGRESS", "DATASET", "NAME"]);
    for j in jobs {
        t.add_row(vec![
            j.job_id.clone(),
            j.kind.to_string(),
            j.state.to_string(),
            format!("{}/{}", j.done(), j.tasks.total),
            j.dataset.clone(),
            j.name.clone(),
        ]);
    }
    render(t, &[3])
}

// === impl WorkerView ===

impl WorkerView {
    /// The view of a wire worker.
    pub fn of(w: &v1::WorkerInfo) -> WorkerView {
        let caps = w.capabilities.clone().unwrap_or_default();
        WorkerView {
            worker_id: w.worker_id.clone(),
            name: w.name.clone(),
            alive: w.alive,
            slots: caps.slots,
            cpu_cores: caps.cpu_cores,
            tasks_in_hand: w.tasks_in_hand,
            version: caps.version,
            hostname: caps.hostname,
            registered_at_unix_ms: w.registered_at_unix_ms,
            last_seen_unix_ms: w.last_seen_unix_ms,
            devices: caps
                .devices
                .iter()
                .map(|d| DeviceView {
                    kind: device_name(d.kind),
                    index: d.index,
                    name: d.name.clone(),
                    model: d.model.clone(),
                    memory_bytes: d.memory_bytes,
                })
                .collect(),
            datasets: caps.datasets,
            dataset_infos: caps
                .dataset_infos
                .iter()
                .map(|i| DatasetInfoView {
                    name: i.name.clone(),
                    shape: shape(i.shape.as_ref()),
                    train_examples: i.train_examples,
                    test_examples: i.test_examples,
                    format: i.format.clone(),
                })
                .collect(),
        }
    }
}

/// `natctl workers`.
pub fn workers_table(workers: &[WorkerView]) -> String {
    let mut t = table(&[
        "WORKER", "NAME", "ALIVE", "SLOTS", "CORES", "DEVICES", "DATASETS",
    ]);
    for w in workers {
        let devices: Vec<String> = w
            .devices
            .iter()
            .map(|d| {
                if d.model.is_empty() {
                    d.name.clone()
                } else {
                    format!("{} ({})", d.name, d.model)
                }
            })
            .collect();
        let datasets: Vec<String> = w
            .datasets
            .iter()
            .map(|name| {
                let info = w.dataset_infos.iter().find(|i| &i.name == name);
                match info.and_then(|i| i.shape) {
                    Some(s) => format!(
                        "{name} ({}x{}x{}, {} classes)",
                        s.channels, s.image_size, s.image_size, s.classes
                    ),
                    None => name.clone(),
                }
            })
            .collect();
        t.add_row(vec![
            w.worker_id.clone(),
            w.name.clone(),
            if w.alive { "yes" } else { "no" }.to_string(),
            w.slots.to_string(),
            w.cpu_cores.to_string(),
            devices.join(", "),
            if datasets.is_empty() {
                "(any)".to_string()
            } else {
                datasets.join(", ")
            },
        ]);
    }
    render(t, &[3, 4])
}

// === impl EventView ===

impl EventView {
    /// The view of a wire event (`None` for an event with no payload).
    pub fn of(ev: &v1::JobEvent) -> Option<EventView> {
        use v1::job_event::Event as E;
        let event = match ev.event.as_ref()? {
            E::StateChanged(s) => EventKind::StateChanged {
                state: state_name(s.state),
                reason: nonempty(&s.reason),
            },
            E::Progress(p) => EventKind::Progress {
                tasks_total: p.tasks_total,
                tasks_done: p.tasks_done,
                tasks_running: p.tasks_running,
            },
            E::TaskCompleted(t) => EventKind::TaskCompleted {
                task_id: t.task_id.clone(),
                architecture_index: t.architecture_index,
                worker_id: t.worker_id.clone(),
                attempt: t.attempt,
                result: t.result.as_ref().map(MetricsView::of),
            },
            E::TaskFailed(t) => EventKind::TaskFailed {
                task_id: t.task_id.clone(),
                reason: t.reason.clone(),
                retryable: t.retryable,
                will_retry: t.will_retry,
                attempt: t.attempt,
            },
            E::TaskProgress(p) => EventKind::TaskProgress {
                task_id: p.task_id.clone(),
                fraction: p.fraction,
                message: p.message.clone(),
            },
            E::NewBest(b) => EventKind::NewBest {
                input_index: b.input_index,
                accuracy: b.accuracy,
                reward: b.reward,
                genotype: nonempty(&b.genotype_darts),
            },
            E::PolicyUpdated(u) => EventKind::PolicyUpdated {
                version: u.version,
                iteration: u.iteration,
                iterations: u.iterations,
                mean_reward: u.mean_reward,
                baseline: u.baseline,
                entropy: u.entropy,
                loss: u.loss,
                rewards_used: u.rewards_used,
                stale_dropped: u.stale_dropped,
                rewards: u.rewards.clone(),
            },
            E::PhaseChanged(p) => EventKind::PhaseChanged {
                phase: p.phase.clone(),
            },
        };
        Some(EventView {
            sequence: ev.sequence,
            job_id: ev.job_id.clone(),
            at_unix_ms: ev.at_unix_ms,
            event,
        })
    }
}

impl MetricsView {
    /// The view of a wire measurement.
    pub fn of(m: &v1::TrainEvalResult) -> MetricsView {
        MetricsView {
            accuracy: m.accuracy,
            loss: m.loss,
            params: m.params,
            madds: m.madds,
            wall_seconds: m.wall_seconds,
            images_per_second: m.images_per_second,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use v1::job_event::Event as E;

    #[test]
    fn events_are_tagged_by_type_and_flat() {
        let ev = v1::JobEvent {
            sequence: 257,
            job_id: "j".into(),
            at_unix_ms: 5,
            event: Some(E::StateChanged(v1::JobStateChanged {
                state: v1::JobState::Cancelled as i32,
                reason: String::new(),
            })),
        };
        let v = serde_json::to_value(EventView::of(&ev).expect("an event")).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"sequence": 257, "job_id": "j", "at_unix_ms": 5,
                "type": "state_changed", "state": "cancelled", "reason": null})
        );
        let none = v1::JobEvent { event: None, ..ev };
        assert!(EventView::of(&none).is_none());
    }

    #[test]
    fn an_unresolved_shape_and_empty_texts_are_null() {
        let j = v1::Job {
            job_id: "j".into(),
            dataset_shape: Some(v1::DatasetShape::default()),
            ..Default::default()
        };
        let v = serde_json::to_value(JobView::of(&j).expect("view")).expect("json");
        assert!(v["dataset_shape"].is_null() && v["error"].is_null(), "{v}");
        assert!(v["waiting_reason"].is_null() && v["finished_at_unix_ms"].is_null());
        let j = v1::Job {
            dataset_shape: Some(v1::DatasetShape {
                channels: 1,
                image_size: 8,
                classes: 10,
            }),
            waiting_reason: "no worker has dataset leaves".into(),
            ..j
        };
        let view = JobView::of(&j).expect("view");
        let v = serde_json::to_value(&view).expect("json");
        assert_eq!(v["dataset_shape"]["image_size"], 8);
        assert_eq!(v["waiting_reason"], "no worker has dataset leaves");
        let text = view.detail_table();
        assert!(
            text.contains("waiting:   no worker has dataset leaves"),
            "{text}"
        );
        assert!(
            text.contains("1 channel(s), 8x8 pixels, 10 classes"),
            "{text}"
        );
    }
}
