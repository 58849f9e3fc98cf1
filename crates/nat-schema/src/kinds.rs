//! The names that components agree on: job kinds, task kinds, optimize phases, policy
//! profiles, reward modes and event kinds. Each is an enum with its wire name (`as_str`,
//! `FromStr`, serde) defined once.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A name that is not one of an enum's wire names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {name:?} (expected one of {expected})")]
pub struct UnknownName {
    /// What was named (`job kind`, `task kind`, …).
    pub what: &'static str,
    /// The name given (at most 64 characters of it).
    pub name: String,
    /// The accepted names, comma-separated.
    pub expected: String,
}

macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($(#[$vmeta:meta])* $variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $wire)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire name.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;

            fn from_str(s: &str) -> Result<Self, UnknownName> {
                match s {
                    $($wire => Ok($name::$variant),)+
                    other => Err(UnknownName {
                        what: $what,
                        name: other.chars().take(64).collect(),
                        expected: [$($wire),+].join(", "),
                    }),
                }
            }
        }
    };
}

named_enum!(
    /// What a job does (`jobs.kind`).
    JobKind, "job kind" {
        /// Train and evaluate the given architectures, one `train_eval` task each.
        Evaluate = "evaluate",
        /// NAT: learn a policy that transforms the given architectures, derive, evaluate.
        Optimize = "optimize",
    }
);

named_enum!(
    /// Where a `train_eval` task measures its accuracy.
    #[derive(Default)]
    EvalSplit, "evaluation split" {
        /// Held out from the training files (`validation_fraction`): what learning and derive
        /// measure on (stored payloads without a split meant this).
        #[default]
        Validation = "validation",
        /// The test split, which no selection saw: the final evaluation.
        Test = "test",
    }
);

named_enum!(
    /// The derive control of an optimize job.
    #[derive(Default)]
    Control, "control" {
        /// No control.
        #[default]
        None = "none",
        /// The same derive from K uniform samples of the space, evaluated on the same seeds.
        Random = "random",
    }
);

named_enum!(
    /// The verdict of an optimize job's final evaluation, per input.
    Verdict, "verdict" {
        /// The paired 95 % interval of best − original is above 0 and the best costs no more.
        Improved = "improved",
        /// Neither improved nor worse (the interval holds 0, or the best costs more).
        NoDifference = "no_difference",
        /// The interval is below 0.
        Worse = "worse",
    }
);

named_enum!(
    /// Which architecture an optimize job recommends.
    RecommendedFrom, "recommendation" {
        /// The best transformation (the verdict is `improved`).
        Best = "best",
        /// The input as it was.
        Original = "original",
    }
);

named_enum!(
    /// What a task asks a worker to do (`tasks.kind`).
    TaskKind, "task kind" {
        /// Train one architecture from scratch and evaluate it.
        TrainEval = "train_eval",
        /// Train a job's weight-sharing supernet and score (β, α) pairs on it.
        Supernet = "supernet",
    }
);

named_enum!(
    /// The phase of an optimize job.
    Phase, "phase" {
        /// Sample transformations, measure rewards, update the policy.
        Learn = "learn",
        /// Sample candidates from the learned policy and rank them.
        Derive = "derive",
        /// Measure the original and the best with the final budget.
        Final = "final",
    }
);

named_enum!(
    /// Hyper-parameter profile of the NAT policy.
    #[derive(Default)]
    Profile, "policy profile" {
        /// The defaults tuned for small budgets.
        #[default]
        Default = "default",
        /// The official code's settings.
        Reference = "reference",
    }
);

named_enum!(
    /// How an optimize job measures a reward during learning (default: proxy).
    #[derive(Default)]
    RewardKind, "reward mode" {
        /// α and β trained from scratch on a short budget (`train_eval` tasks).
        #[default]
        Proxy = "proxy",
        /// (β, α) pairs scored on the job's weight-sharing supernet (`supernet` tasks).
        Supernet = "supernet",
    }
);

named_enum!(
    /// Kinds of the events in a job's log. The first seven are written by the store, the
    /// others by the optimize driver. The payload of each is a type in [`crate::event`].
    EventKind, "event kind" {
        /// A job was created: [`crate::event::JobCreated`].
        JobCreated = "job_created",
        /// Tasks were added: [`crate::event::TasksAdded`].
        TasksAdded = "tasks_added",
        /// A task succeeded: [`crate::event::TaskSucceeded`].
        TaskSucceeded = "task_succeeded",
        /// A task attempt failed and the task was requeued: [`crate::event::TaskRetry`].
        TaskRetry = "task_retry",
        /// A task failed for good: [`crate::event::TaskFailed`].
        TaskFailed = "task_failed",
        /// Progress of a long task: [`crate::event::TaskProgress`].
        TaskProgress = "task_progress",
        /// The job reached a final state: [`crate::event::JobFinished`].
        JobFinished = "job_finished",
        /// An optimize job entered a phase: [`crate::event::PhaseChanged`].
        Phase = "phase",
        /// The rewards of one learning round: [`crate::event::Rewards`].
        Rewards = "rewards",
        /// A committed policy update: [`crate::event::PolicyUpdate`].
        PolicyUpdate = "policy_update",
        /// The best transformation of an input: [`crate::event::NewBest`].
        NewBest = "new_best",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in TaskKind::ALL {
            assert_eq!(k.as_str().parse::<TaskKind>(), Ok(*k));
            assert_eq!(
                serde_json::to_value(k).expect("encodes"),
                serde_json::json!(k.as_str())
            );
        }
        for k in EventKind::ALL {
            assert_eq!(k.as_str().parse::<EventKind>(), Ok(*k));
        }
        assert_eq!(JobKind::Optimize.to_string(), "optimize");
        let err = "bogus".parse::<Phase>().expect_err("not a phase");
        assert_eq!(err.what, "phase");
        assert_eq!(err.expected, "learn, derive, final");
        assert_eq!(RewardKind::default(), RewardKind::Proxy);
        assert_eq!(Profile::default(), Profile::Default);
    }
}
