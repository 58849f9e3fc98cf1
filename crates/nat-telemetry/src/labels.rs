//! Bounded label values. Every label of every metric takes its values from one of these enums
//! (see [`catalog`](crate::catalog) for which label uses which enum), so the number of series is
//! fixed at compile time. Kinds that come from outside (`TaskKind`, `JobKind`, `DeviceKind`) are
//! parsed leniently: an unknown name becomes `other` instead of a new series.

use std::fmt;

macro_rules! label_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// Every value as the label text.
            pub const VALUES: &'static [&'static str] = &[$($text),+];

            /// The label text.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// The value whose label text is `text`, if any.
            pub fn from_label(text: &str) -> Option<$name> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

label_enum!(
    /// Kind of a task (`tasks.kind` in the store).
    TaskKind {
        /// Train and evaluate one architecture.
        TrainEval => "train_eval",
        /// Score (β, α) pairs on the weight-sharing supernet.
        Supernet => "supernet",
        /// Any kind not listed above.
        Other => "other",
    }
);

impl TaskKind {
    /// Maps a stored task kind to its label; unknown kinds are [`TaskKind::Other`].
    pub fn from_kind(kind: &str) -> TaskKind {
        TaskKind::from_label(kind).unwrap_or(TaskKind::Other)
    }
}

label_enum!(
    /// Kind of a job (`jobs.kind` in the store).
    JobKind {
        /// Train and evaluate given architectures.
        Evaluate => "evaluate",
        /// NAT optimisation (learn a policy, transform architectures).
        Optimize => "optimize",
        /// Any kind not listed above.
        Other => "other",
    }
);

impl JobKind {
    /// Maps a stored job kind to its label; unknown kinds are [`JobKind::Other`].
    pub fn from_kind(kind: &str) -> JobKind {
        JobKind::from_label(kind).unwrap_or(JobKind::Other)
    }
}

label_enum!(
    /// State of a job, as in the store.
    JobState {
        /// No task leased yet.
        Queued => "queued",
        /// At least one task leased.
        Running => "running",
        /// Finished successfully.
        Succeeded => "succeeded",
        /// Finished with an error.
        Failed => "failed",
        /// Cancelled by a user.
        Cancelled => "cancelled",
    }
);

label_enum!(
    /// State of a task, as in the store (only the non-final ones are exported as gauges).
    TaskState {
        /// Waiting for a worker.
        Ready => "ready",
        /// Held by a worker.
        Leased => "leased",
    }
);

label_enum!(
    /// How a task ended, as seen by the coordinator.
    TaskOutcome {
        /// The task succeeded.
        Succeeded => "succeeded",
        /// The task failed for good.
        Failed => "failed",
        /// The task was cancelled with its job.
        Cancelled => "cancelled",
    }
);

label_enum!(
    /// Why a task went back to the queue.
    RetryReason {
        /// The worker reported a retryable failure.
        WorkerFailure => "worker_failure",
        /// The lease expired (worker lost or too slow to heartbeat).
        LeaseExpired => "lease_expired",
    }
);

label_enum!(
    /// What the collection of an expired lease did with its task.
    ExpiryOutcome {
        /// Back to the queue (attempts left).
        Requeued => "requeued",
        /// Failed for good (attempts exhausted).
        Failed => "failed",
        /// Cancelled (its job was cancelled).
        Cancelled => "cancelled",
    }
);

label_enum!(
    /// What happened to lease reservations (tasks the coordinator claims ahead of demand).
    ReservationEvent {
        /// Tasks reserved.
        Claimed => "claimed",
        /// Reservations handed to workers (LeaseTask answered from memory).
        HandedOut => "handed_out",
        /// Reservations given back to the queue unused, or withdrawn with their job.
        Returned => "returned",
    }
);

label_enum!(
    /// Result of one `LeaseTask` RPC.
    LeaseResult {
        /// A task was leased.
        Leased => "leased",
        /// Nothing to do within the wait.
        Empty => "empty",
        /// The RPC failed (bad request, unknown worker, database error).
        Error => "error",
    }
);

label_enum!(
    /// Result of one `ReportResult` RPC.
    ReportOutcome {
        /// Applied.
        Accepted => "accepted",
        /// The same report was already applied.
        Duplicate => "duplicate",
        /// Stale or foreign lease token (FAILED_PRECONDITION).
        Rejected => "rejected",
        /// Bad request or internal error.
        Error => "error",
    }
);

label_enum!(
    /// Liveness of a worker, as in the store.
    WorkerState {
        /// Heartbeating.
        Active => "active",
        /// Marked lost.
        Lost => "lost",
    }
);

label_enum!(
    /// Kind of device a slot trains on.
    DeviceKind {
        /// CPU.
        Cpu => "cpu",
        /// An NVIDIA GPU through CUDA.
        Cuda => "cuda",
        /// Anything else.
        Other => "other",
    }
);

impl DeviceKind {
    /// Maps a device name (`cpu`, `cuda`, `cuda:0`, …) to its kind.
    pub fn from_device(device: &str) -> DeviceKind {
        let kind = device.split(':').next().unwrap_or(device);
        DeviceKind::from_label(kind).unwrap_or(DeviceKind::Other)
    }
}

label_enum!(
    /// How a task ended on the worker.
    WorkerTaskOutcome {
        /// Finished and reported.
        Succeeded => "succeeded",
        /// Failed (reported as a failure).
        Failed => "failed",
        /// Stopped because the job was cancelled or the lease was lost.
        Cancelled => "cancelled",
    }
);

label_enum!(
    /// Whether a worker slot is running a task.
    SlotState {
        /// Running a task.
        Busy => "busy",
        /// Waiting for work.
        Idle => "idle",
    }
);

label_enum!(
    /// Result of a reward-cache lookup.
    CacheResult {
        /// The reward was known; no training needed.
        Hit => "hit",
        /// Not known; a task was scheduled.
        Miss => "miss",
    }
);

label_enum!(
    /// Worker → coordinator RPCs (for the worker's error counter).
    WorkerRpc {
        /// RegisterWorker.
        Register => "register",
        /// Heartbeat.
        Heartbeat => "heartbeat",
        /// LeaseTask.
        LeaseTask => "lease_task",
        /// ReportProgress.
        ReportProgress => "report_progress",
        /// ReportResult.
        ReportResult => "report_result",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_kinds_map_unknown_values_to_other() {
        assert_eq!(TaskKind::from_kind("train_eval"), TaskKind::TrainEval);
        assert_eq!(TaskKind::from_kind("supernet"), TaskKind::Supernet);
        assert_eq!(TaskKind::from_kind("x; DROP"), TaskKind::Other);
        assert_eq!(JobKind::from_kind("optimize"), JobKind::Optimize);
        assert_eq!(JobKind::from_kind(""), JobKind::Other);
        assert_eq!(DeviceKind::from_device("cuda:3"), DeviceKind::Cuda);
        assert_eq!(DeviceKind::from_device("cpu"), DeviceKind::Cpu);
        assert_eq!(DeviceKind::from_device("mps"), DeviceKind::Other);
    }

    #[test]
    fn values_round_trip() {
        for s in JobState::ALL {
            assert_eq!(JobState::from_label(s.as_str()), Some(*s));
        }
        assert_eq!(JobState::VALUES.len(), JobState::ALL.len());
        assert_eq!(ReportOutcome::Rejected.to_string(), "rejected");
    }
}
