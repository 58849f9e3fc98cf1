//! The Prometheus exporter: a recorder for the `metrics` facade configured from the
//! [`catalog`](crate::catalog), and the `GET /metrics` route.
//!
//! ```no_run
//! # fn main() -> Result<(), nat_telemetry::TelemetryError> {
//! let handle = nat_telemetry::install_prometheus()?;
//! let app: axum::Router = axum::Router::new().merge(nat_telemetry::metrics_router(handle));
//! # Ok(()) }
//! ```

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::catalog::{self, MetricKind};
use crate::TelemetryError;

/// Content type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How often the background thread folds recent histogram samples into the exported state.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The handle installed by [`install_prometheus`], shared by every later call.
static INSTALLED: Mutex<Option<MetricsHandle>> = Mutex::new(None);

/// A cheap, cloneable handle on the installed recorder.
#[derive(Clone)]
pub struct MetricsHandle {
    inner: PrometheusHandle,
}

impl std::fmt::Debug for MetricsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsHandle").finish_non_exhaustive()
    }
}

impl MetricsHandle {
    /// Wraps a handle of a recorder built with [`prometheus_builder`] (tests use this with a
    /// local recorder).
    pub fn new(inner: PrometheusHandle) -> MetricsHandle {
        MetricsHandle { inner }
    }

    /// The `/metrics` text: every metric recorded so far, with `# HELP` and `# TYPE` lines.
    pub fn render(&self) -> String {
        self.inner.render()
    }

    /// Folds recent histogram samples into the exported state (done every few seconds by the
    /// thread [`install_prometheus`] starts; call it yourself for local recorders).
    pub fn run_upkeep(&self) {
        self.inner.run_upkeep();
    }
}

/// A [`PrometheusBuilder`] with true histogram buckets for every histogram of the catalogue.
pub fn prometheus_builder() -> Result<PrometheusBuilder, TelemetryError> {
    let mut builder = PrometheusBuilder::new();
    for metric in catalog::ALL
        .iter()
        .filter(|m| m.kind == MetricKind::Histogram)
    {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(metric.name.to_string()), metric.buckets)
            .map_err(|e| TelemetryError::ExporterConfig {
                metric: metric.name,
                reason: e.to_string(),
            })?;
    }
    Ok(builder)
}

/// Registers the help text of every catalogue metric with the current recorder (global, or the
/// local one inside `metrics::with_local_recorder`).
pub fn describe_all() {
    for metric in catalog::ALL {
        match metric.kind {
            MetricKind::Counter => metrics::describe_counter!(metric.name, metric.help),
            MetricKind::Gauge => metrics::describe_gauge!(metric.name, metric.help),
            MetricKind::Histogram => metrics::describe_histogram!(metric.name, metric.help),
        }
    }
}

/// Installs the Prometheus recorder as the global `metrics` recorder, describes every metric
/// and starts a background upkeep thread. Idempotent: later calls return the same handle.
///
/// # Errors
/// [`TelemetryError::RecorderAlreadyInstalled`] when a different global recorder exists.
pub fn install_prometheus() -> Result<MetricsHandle, TelemetryError> {
    let mut installed = INSTALLED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(handle) = installed.as_ref() {
        return Ok(handle.clone());
    }
    let handle = prometheus_builder()?
        .install_recorder()
        .map_err(|_| TelemetryError::RecorderAlreadyInstalled)?;
    let handle = MetricsHandle::new(handle);
    describe_all();
    let upkeep = handle.clone();
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_INTERVAL);
            upkeep.run_upkeep();
        });
    if let Err(error) = spawned {
        // Rendering still works without upkeep (render drains histograms too); only memory use
        // between scrapes grows.
        tracing::warn!(%error, "could not start the metrics upkeep thread");
    }
    *installed = Some(handle.clone());
    Ok(handle)
}

/// `GET /metrics` serving `handle.render()`. Merge it into the HTTP listener's router.
pub fn metrics_router(handle: MetricsHandle) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .with_state(handle)
}

/// The `/metrics` handler (for routers that manage their own state).
pub async fn metrics_handler(State(handle): State<MetricsHandle>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], handle.render())
}
