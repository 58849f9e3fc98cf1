//! Every metric of nat-orchestrator: name, kind, help text, labels with their allowed values,
//! histogram buckets, and which binary emits it.
//!
//! This module is the single source of truth. [`record`](crate::record) emits exactly these
//! metrics, [`exporter`](crate::exporter) describes them and configures their buckets, and the
//! Grafana dashboard in `deploy/` is checked against [`ALL`] by a test.

use crate::labels;

/// Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Monotonic counter (name ends in `_total`).
    Counter,
    /// Value that goes up and down.
    Gauge,
    /// Distribution with fixed buckets (`_bucket`, `_sum`, `_count` series).
    Histogram,
}

impl MetricKind {
    /// `counter`, `gauge` or `histogram`.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// Which binary emits a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// `nat-coordinator`.
    Coordinator,
    /// `nat-worker`.
    Worker,
}

/// The values a label may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelValues {
    /// A closed set.
    Enum(&'static [&'static str]),
    /// The index of a local GPU (`0`..[`MAX_GPU_INDEX`]); bounded by the GPUs of one host.
    GpuIndex,
}

/// Largest GPU index recorded as a label value; GPUs beyond it are not exported.
pub const MAX_GPU_INDEX: u32 = 63;

/// One label of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelDef {
    /// Label name.
    pub name: &'static str,
    /// Allowed values.
    pub values: LabelValues,
}

/// One metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricDef {
    /// Full name as exported (`nat_…`).
    pub name: &'static str,
    /// Type.
    pub kind: MetricKind,
    /// Help text (the `# HELP` line).
    pub help: &'static str,
    /// Labels, in the order the recording functions set them.
    pub labels: &'static [LabelDef],
    /// Upper bounds of the histogram buckets (empty for counters and gauges).
    pub buckets: &'static [f64],
    /// Emitting binary.
    pub component: Component,
}

const fn label(name: &'static str, values: &'static [&'static str]) -> LabelDef {
    LabelDef {
        name,
        values: LabelValues::Enum(values),
    }
}

const TASK_KIND: LabelDef = label("task_kind", labels::TaskKind::VALUES);
const JOB_KIND: LabelDef = label("job_kind", labels::JobKind::VALUES);
const DEVICE_KIND: LabelDef = label("device_kind", labels::DeviceKind::VALUES);

/// RPC latencies: 1 ms … 30 s (LeaseTask long-polls up to ~5 s).
const RPC_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Task durations on workers: 1 s … 2 days.
const TASK_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0,
    172800.0,
];
/// Rewards are accuracy differences in [-1, 1]; most fall within a few points of zero.
const REWARD_BUCKETS: &[f64] = &[
    -0.5, -0.2, -0.1, -0.05, -0.02, -0.01, 0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0,
];
/// Accuracies in [0, 1].
const ACCURACY_BUCKETS: &[f64] = &[
    0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.925, 0.95, 0.975, 0.99, 1.0,
];
/// Policy updates: 1 ms … 1 min.
const UPDATE_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Tasks created (queued), by task kind.
pub const TASKS_CREATED: MetricDef = MetricDef {
    name: "nat_tasks_created_total",
    kind: MetricKind::Counter,
    help: "Tasks created (queued for workers), by task kind.",
    labels: &[TASK_KIND],
    buckets: &[],
    component: Component::Coordinator,
};

/// Leases granted.
pub const TASKS_LEASED: MetricDef = MetricDef {
    name: "nat_tasks_leased_total",
    kind: MetricKind::Counter,
    help: "Task leases granted to workers (retries included), by task kind.",
    labels: &[TASK_KIND],
    buckets: &[],
    component: Component::Coordinator,
};

/// Tasks that reached a final state.
pub const TASKS_FINISHED: MetricDef = MetricDef {
    name: "nat_tasks_finished_total",
    kind: MetricKind::Counter,
    help:
        "Tasks that reached a final state, by task kind and outcome (succeeded, failed, cancelled).",
    labels: &[TASK_KIND, label("outcome", labels::TaskOutcome::VALUES)],
    buckets: &[],
    component: Component::Coordinator,
};

/// Tasks returned to the queue.
pub const TASK_RETRIES: MetricDef = MetricDef {
    name: "nat_task_retries_total",
    kind: MetricKind::Counter,
    help: "Tasks returned to the queue for another attempt, by task kind and reason.",
    labels: &[TASK_KIND, label("reason", labels::RetryReason::VALUES)],
    buckets: &[],
    component: Component::Coordinator,
};

/// Expired leases collected.
pub const LEASE_EXPIRIES: MetricDef = MetricDef {
    name: "nat_lease_expiries_total",
    kind: MetricKind::Counter,
    help: "Expired leases collected, by what happened to the task (requeued, failed, cancelled).",
    labels: &[label("outcome", labels::ExpiryOutcome::VALUES)],
    buckets: &[],
    component: Component::Coordinator,
};

/// Lease reservations.
pub const LEASE_RESERVATIONS: MetricDef = MetricDef {
    name: "nat_lease_reservations_total",
    kind: MetricKind::Counter,
    help: "Lease reservations (tasks claimed ahead of demand under load), by event (claimed, handed_out, returned).",
    labels: &[label("event", labels::ReservationEvent::VALUES)],
    buckets: &[],
    component: Component::Coordinator,
};

/// Tasks in the store by non-final state.
pub const TASKS: MetricDef = MetricDef {
    name: "nat_tasks",
    kind: MetricKind::Gauge,
    help: "Tasks of unfinished jobs by state: ready (queued) or leased.",
    labels: &[label("state", labels::TaskState::VALUES)],
    buckets: &[],
    component: Component::Coordinator,
};

/// Jobs in the store by state.
pub const JOBS: MetricDef = MetricDef {
    name: "nat_jobs",
    kind: MetricKind::Gauge,
    help: "Jobs by state.",
    labels: &[label("state", labels::JobState::VALUES)],
    buckets: &[],
    component: Component::Coordinator,
};

/// Jobs submitted.
pub const JOBS_SUBMITTED: MetricDef = MetricDef {
    name: "nat_jobs_submitted_total",
    kind: MetricKind::Counter,
    help: "Jobs accepted by SubmitJob, by job kind.",
    labels: &[JOB_KIND],
    buckets: &[],
    component: Component::Coordinator,
};

/// Jobs finished.
pub const JOBS_FINISHED: MetricDef = MetricDef {
    name: "nat_jobs_finished_total",
    kind: MetricKind::Counter,
    help: "Jobs that reached a final state, by job kind and state.",
    labels: &[JOB_KIND, label("state", labels::JobState::VALUES)],
    buckets: &[],
    component: Component::Coordinator,
};

/// LeaseTask latency.
pub const LEASE_TASK_DURATION: MetricDef = MetricDef {
    name: "nat_lease_task_duration_seconds",
    kind: MetricKind::Histogram,
    help:
        "Latency of the LeaseTask RPC (long-poll wait included), by result (leased, empty, error).",
    labels: &[label("result", labels::LeaseResult::VALUES)],
    buckets: RPC_BUCKETS,
    component: Component::Coordinator,
};

/// ReportResult latency.
pub const REPORT_RESULT_DURATION: MetricDef = MetricDef {
    name: "nat_report_result_duration_seconds",
    kind: MetricKind::Histogram,
    help: "Latency of the ReportResult RPC, by outcome (accepted, duplicate, rejected, error).",
    labels: &[label("outcome", labels::ReportOutcome::VALUES)],
    buckets: RPC_BUCKETS,
    component: Component::Coordinator,
};

/// Accuracies reported by train_eval tasks.
pub const EVALUATED_ACCURACY: MetricDef = MetricDef {
    name: "nat_evaluated_accuracy_ratio",
    kind: MetricKind::Histogram,
    help: "Top-1 accuracy (fraction) reported by successful train_eval tasks.",
    labels: &[],
    buckets: ACCURACY_BUCKETS,
    component: Component::Coordinator,
};

/// Policy rewards.
pub const POLICY_REWARD: MetricDef = MetricDef {
    name: "nat_policy_reward",
    kind: MetricKind::Histogram,
    help: "Rewards fed to the policy: accuracy of the transformed minus the input architecture.",
    labels: &[],
    buckets: REWARD_BUCKETS,
    component: Component::Coordinator,
};

/// Policy version.
pub const POLICY_VERSION: MetricDef = MetricDef {
    name: "nat_policy_version",
    kind: MetricKind::Gauge,
    help: "Version of the policy most recently updated by this coordinator.",
    labels: &[],
    buckets: &[],
    component: Component::Coordinator,
};

/// Policy baseline.
pub const POLICY_BASELINE: MetricDef = MetricDef {
    name: "nat_policy_baseline",
    kind: MetricKind::Gauge,
    help: "Reward baseline of the policy most recently updated by this coordinator.",
    labels: &[],
    buckets: &[],
    component: Component::Coordinator,
};

/// Policy update latency.
pub const POLICY_UPDATE_DURATION: MetricDef = MetricDef {
    name: "nat_policy_update_duration_seconds",
    kind: MetricKind::Histogram,
    help: "Time to compute and commit one policy update (gradient step and checkpoint).",
    labels: &[],
    buckets: UPDATE_BUCKETS,
    component: Component::Coordinator,
};

/// Samples used by policy updates.
pub const POLICY_SAMPLES_USED: MetricDef = MetricDef {
    name: "nat_policy_samples_used_total",
    kind: MetricKind::Counter,
    help: "Rewarded samples consumed by policy updates.",
    labels: &[],
    buckets: &[],
    component: Component::Coordinator,
};

/// Samples dropped as stale.
pub const POLICY_SAMPLES_STALE: MetricDef = MetricDef {
    name: "nat_policy_samples_stale_total",
    kind: MetricKind::Counter,
    help: "Rewarded samples dropped because they were drawn too many policy versions ago.",
    labels: &[],
    buckets: &[],
    component: Component::Coordinator,
};

/// Supernet weight bytes streamed to workers (`FetchSupernet`).
pub const SUPERNET_BYTES_SENT: MetricDef = MetricDef {
    name: "nat_supernet_bytes_sent_total",
    kind: MetricKind::Counter,
    help: "Supernet weight bytes streamed to workers (FetchSupernet).",
    labels: &[],
    buckets: &[],
    component: Component::Coordinator,
};

/// Supernet weight bytes received from workers (`PutSupernet`).
pub const SUPERNET_BYTES_RECEIVED: MetricDef = MetricDef {
    name: "nat_supernet_bytes_received_total",
    kind: MetricKind::Counter,
    help: "Supernet weight bytes uploaded by workers (PutSupernet).",
    labels: &[],
    buckets: &[],
    component: Component::Coordinator,
};

/// Supernet weight versions committed (one per round, plus the warm-up).
pub const SUPERNET_VERSIONS: MetricDef = MetricDef {
    name: "nat_supernet_versions_total",
    kind: MetricKind::Counter,
    help: "Supernet weight versions committed (one per learning round, plus each job's warm-up).",
    labels: &[],
    buckets: &[],
    component: Component::Coordinator,
};

/// Time to average a round's shards into the next version and store it.
pub const SUPERNET_AVERAGE_DURATION: MetricDef = MetricDef {
    name: "nat_supernet_average_duration_seconds",
    kind: MetricKind::Histogram,
    help: "Time to read a round's shard weights, average them and store the new version.",
    labels: &[],
    buckets: UPDATE_BUCKETS,
    component: Component::Coordinator,
};

/// Reward-cache lookups.
pub const REWARD_CACHE_LOOKUPS: MetricDef = MetricDef {
    name: "nat_reward_cache_lookups_total",
    kind: MetricKind::Counter,
    help: "Reward-cache lookups before scheduling training, by result (hit, miss).",
    labels: &[label("result", labels::CacheResult::VALUES)],
    buckets: &[],
    component: Component::Coordinator,
};

/// Workers by state.
pub const WORKERS: MetricDef = MetricDef {
    name: "nat_workers",
    kind: MetricKind::Gauge,
    help: "Registered workers by state (active, lost).",
    labels: &[label("state", labels::WorkerState::VALUES)],
    buckets: &[],
    component: Component::Coordinator,
};

/// Worker registrations.
pub const WORKERS_REGISTERED: MetricDef = MetricDef {
    name: "nat_workers_registered_total",
    kind: MetricKind::Counter,
    help: "RegisterWorker calls accepted.",
    labels: &[],
    buckets: &[],
    component: Component::Coordinator,
};

/// Task durations on a worker.
pub const WORKER_TASK_DURATION: MetricDef = MetricDef {
    name: "nat_worker_task_duration_seconds",
    kind: MetricKind::Histogram,
    help: "Wall time of tasks run by this worker, by task kind, device kind and outcome.",
    labels: &[
        TASK_KIND,
        DEVICE_KIND,
        label("outcome", labels::WorkerTaskOutcome::VALUES),
    ],
    buckets: TASK_BUCKETS,
    component: Component::Worker,
};

/// Images processed by a worker.
pub const WORKER_IMAGES: MetricDef = MetricDef {
    name: "nat_worker_images_total",
    kind: MetricKind::Counter,
    help: "Training and evaluation images processed by this worker, by device kind (rate() = images/s).",
    labels: &[DEVICE_KIND],
    buckets: &[],
    component: Component::Worker,
};

/// Last measured throughput.
pub const WORKER_THROUGHPUT: MetricDef = MetricDef {
    name: "nat_worker_throughput_images_per_second",
    kind: MetricKind::Gauge,
    help: "Throughput of the most recent finished task on this worker, by device kind.",
    labels: &[DEVICE_KIND],
    buckets: &[],
    component: Component::Worker,
};

/// GPU memory in use.
pub const WORKER_GPU_MEMORY_USED: MetricDef = MetricDef {
    name: "nat_worker_gpu_memory_used_bytes",
    kind: MetricKind::Gauge,
    help: "GPU memory in use on this worker, by GPU index.",
    labels: &[LabelDef {
        name: "gpu",
        values: LabelValues::GpuIndex,
    }],
    buckets: &[],
    component: Component::Worker,
};

/// GPU memory total.
pub const WORKER_GPU_MEMORY_TOTAL: MetricDef = MetricDef {
    name: "nat_worker_gpu_memory_total_bytes",
    kind: MetricKind::Gauge,
    help: "GPU memory capacity on this worker, by GPU index.",
    labels: &[LabelDef {
        name: "gpu",
        values: LabelValues::GpuIndex,
    }],
    buckets: &[],
    component: Component::Worker,
};

/// Worker slots by state.
pub const WORKER_SLOTS: MetricDef = MetricDef {
    name: "nat_worker_slots",
    kind: MetricKind::Gauge,
    help: "Task slots of this worker by state (busy, idle).",
    labels: &[label("state", labels::SlotState::VALUES)],
    buckets: &[],
    component: Component::Worker,
};

/// Failed RPCs from a worker.
pub const WORKER_RPC_ERRORS: MetricDef = MetricDef {
    name: "nat_worker_rpc_errors_total",
    kind: MetricKind::Counter,
    help: "Failed RPCs from this worker to the coordinator, by RPC.",
    labels: &[label("rpc", labels::WorkerRpc::VALUES)],
    buckets: &[],
    component: Component::Worker,
};

/// Calls refused by authentication (`--auth token`, mTLS).
pub const AUTH_REFUSED: MetricDef = MetricDef {
    name: "nat_auth_refused_total",
    kind: MetricKind::Counter,
    help: "gRPC calls and HTTP requests refused: no or an invalid, expired or revoked credential \
           (unauthenticated), or a role or worker that may not make the call (permission_denied).",
    labels: &[label("reason", &["unauthenticated", "permission_denied"])],
    buckets: &[],
    component: Component::Coordinator,
};

/// Whether this coordinator is the leader (see coordinator/src/leader.rs).
pub const LEADER: MetricDef = MetricDef {
    name: "nat_coordinator_leader",
    kind: MetricKind::Gauge,
    help:
        "1 while this coordinator is the leader (runs the job drivers, the policy updates and the \
           lease sweep), 0 while it is a follower. Exactly one coordinator of a database should \
           report 1.",
    labels: &[],
    buckets: &[],
    component: Component::Coordinator,
};

/// The leadership term this coordinator holds.
pub const LEADER_EPOCH: MetricDef = MetricDef {
    name: "nat_coordinator_leader_epoch",
    kind: MetricKind::Gauge,
    help:
        "The leadership term (epoch) this coordinator last held or saw held; it grows by one with \
           every takeover.",
    labels: &[],
    buckets: &[],
    component: Component::Coordinator,
};

/// Changes of this coordinator's role.
pub const LEADER_CHANGES: MetricDef = MetricDef {
    name: "nat_coordinator_leader_changes_total",
    kind: MetricKind::Counter,
    help: "Terms this coordinator began (elected) or ended (stepped_down: lost, not renewed in \
           time, or resigned at shutdown).",
    labels: &[label("change", &["elected", "stepped_down"])],
    buckets: &[],
    component: Component::Coordinator,
};

/// Every metric, coordinator first.
pub const ALL: &[MetricDef] = &[
    TASKS_CREATED,
    TASKS_LEASED,
    TASKS_FINISHED,
    TASK_RETRIES,
    LEASE_EXPIRIES,
    LEASE_RESERVATIONS,
    TASKS,
    JOBS,
    JOBS_SUBMITTED,
    JOBS_FINISHED,
    LEASE_TASK_DURATION,
    REPORT_RESULT_DURATION,
    EVALUATED_ACCURACY,
    POLICY_REWARD,
    POLICY_VERSION,
    POLICY_BASELINE,
    POLICY_UPDATE_DURATION,
    POLICY_SAMPLES_USED,
    POLICY_SAMPLES_STALE,
    SUPERNET_BYTES_SENT,
    SUPERNET_BYTES_RECEIVED,
    SUPERNET_VERSIONS,
    SUPERNET_AVERAGE_DURATION,
    REWARD_CACHE_LOOKUPS,
    WORKERS,
    WORKERS_REGISTERED,
    AUTH_REFUSED,
    LEADER,
    LEADER_EPOCH,
    LEADER_CHANGES,
    WORKER_TASK_DURATION,
    WORKER_IMAGES,
    WORKER_THROUGHPUT,
    WORKER_GPU_MEMORY_USED,
    WORKER_GPU_MEMORY_TOTAL,
    WORKER_SLOTS,
    WORKER_RPC_ERRORS,
];

/// The metric named `name`, if it is in the catalogue.
pub fn get(name: &str) -> Option<&'static MetricDef> {
    ALL.iter().find(|m| m.name == name)
}

/// The catalogue metric that exports the Prometheus series `series` (a metric name, or a
/// histogram's `_bucket`/`_sum`/`_count` series).
pub fn for_series(series: &str) -> Option<&'static MetricDef> {
    if let Some(m) = get(series) {
        return Some(m);
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        series
            .strip_suffix(suffix)
            .and_then(get)
            .filter(|m| m.kind == MetricKind::Histogram)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_convention() {
        let mut seen = std::collections::HashSet::new();
        for m in ALL {
            assert!(seen.insert(m.name), "{} listed twice", m.name);
            assert!(m.name.starts_with("nat_"), "{}", m.name);
            assert!(
                m.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}",
                m.name
            );
            assert_eq!(
                m.kind == MetricKind::Counter,
                m.name.ends_with("_total"),
                "{}: only counters end in _total",
                m.name
            );
            assert_eq!(
                m.kind == MetricKind::Histogram,
                !m.buckets.is_empty(),
                "{}: histograms and only histograms have buckets",
                m.name
            );
            assert!(
                m.buckets.windows(2).all(|w| w[0] < w[1]),
                "{}: buckets must increase",
                m.name
            );
            if m.name.contains("duration") {
                assert!(m.name.ends_with("_seconds"), "{}", m.name);
            }
            assert!(!m.help.is_empty() && m.help.ends_with('.'), "{}", m.name);
        }
    }

    #[test]
    fn labels_are_bounded_and_never_ids() {
        for m in ALL {
            for l in m.labels {
                assert!(
                    !l.name.ends_with("id") && !l.name.contains("_id"),
                    "{}: label {} looks like an id",
                    m.name,
                    l.name
                );
                if let LabelValues::Enum(values) = l.values {
                    assert!(!values.is_empty() && values.len() <= 16, "{}", m.name);
                }
            }
        }
    }

    #[test]
    fn series_map_back_to_metrics() {
        assert_eq!(
            for_series("nat_lease_task_duration_seconds_bucket").map(|m| m.name),
            Some("nat_lease_task_duration_seconds")
        );
        assert_eq!(
            for_series("nat_tasks_created_total").map(|m| m.name),
            Some("nat_tasks_created_total")
        );
        // A counter has no _count series.
        assert!(for_series("nat_tasks_created_total_count").is_none());
        assert!(for_series("nat_nonexistent").is_none());
    }
}
