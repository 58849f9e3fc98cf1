//! Observability building blocks shared by `nat-coordinator`, `nat-worker` and their tests.
//!
//! # Layout
//! - [`logging`]: [`init_logging`] (human-readable text or one JSON object per line, span fields
//!   such as `job_id`/`task_id`/`worker_id` flattened into every line), [`LogFormat`] (a clap
//!   `ValueEnum` for a `--log-format` flag) and [`report_error`], which logs an error once with
//!   its whole cause chain.
//! - [`catalog`]: every metric the system emits — name, kind, help text, labels and their
//!   allowed values, histogram buckets. The single source of truth for dashboards and alerts.
//! - [`labels`]: the bounded label values as enums (job state, task kind, device kind, outcome).
//!   No label ever carries an id.
//! - [`record`]: one typed function per observation, so instrumentation is one line
//!   (`record::task_leased(TaskKind::TrainEval, elapsed)`).
//! - [`exporter`]: installs the Prometheus recorder ([`install_prometheus`]) and serves
//!   `GET /metrics` ([`metrics_router`]).
//!
//! # Decisions
//! - Names follow `nat_<thing>_<unit>[_total]`; counters end in `_total`, durations are
//!   histograms in seconds, and no separate counter duplicates a histogram's `_count`.
//! - Label values are closed enums; anything unknown is reported as `other`, so a bug or a
//!   hostile client cannot create unbounded series.
//! - Recording functions are cheap (an atomic add behind the `metrics` facade) and do nothing when
//!   no recorder is installed, so libraries and tests may call them freely.

pub mod catalog;
pub mod exporter;
pub mod labels;
pub mod logging;
pub mod record;

pub use exporter::{install_prometheus, metrics_router, prometheus_builder, MetricsHandle};
pub use labels::*;
pub use logging::{init_logging, report_error, ErrorChain, LogFormat};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A log filter directive could not be parsed.
    #[error("invalid log filter in {field}: {reason}")]
    InvalidFilter {
        /// Where the filter came from (`RUST_LOG` or `default_filter`).
        field: &'static str,
        /// The parser's message.
        reason: String,
    },
    /// A global `tracing` subscriber was already installed by someone else.
    #[error("a global tracing subscriber is already installed")]
    LoggingAlreadyInitialised,
    /// A global `metrics` recorder other than ours was already installed.
    #[error("a global metrics recorder is already installed")]
    RecorderAlreadyInstalled,
    /// The Prometheus exporter rejected its configuration (a catalogue bug).
    #[error("invalid Prometheus exporter configuration for {metric}: {reason}")]
    ExporterConfig {
        /// The metric whose buckets were rejected.
        metric: &'static str,
        /// The exporter's message.
        reason: String,
    },
}
