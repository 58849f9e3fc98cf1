//! Observability of the worker: log set-up and the HTTP listener serving Prometheus `/metrics`
//! (nat-telemetry's router) and `/healthz`.
//!
//! The metrics themselves are recorded where things happen (`daemon`), through
//! `nat_telemetry::record`; they are cheap no-ops when no recorder is installed (tests, or
//! `--metrics-listen off`).

use std::net::SocketAddr;

use axum::routing::get;
use axum::Router;
use nat_telemetry::{LogFormat, TelemetryError};

/// Errors starting the metrics listener. Each names the flag at fault.
#[derive(Debug, thiserror::Error)]
pub enum MetricsServerError {
    #[error("--metrics-listen: cannot install the Prometheus recorder")]
    Recorder(#[source] TelemetryError),
    #[error("--metrics-listen: cannot listen on {address}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Installs the global subscriber (nat-telemetry's text or flattened-JSON lines on stderr;
/// `RUST_LOG` overrides the default `info` filter).
pub fn init(format: LogFormat) -> Result<(), TelemetryError> {
    nat_telemetry::init_logging(format, "info")
}

/// `/metrics` (Prometheus text format) and `/healthz` (`ok` while the process serves).
pub fn router(handle: nat_telemetry::MetricsHandle) -> Router {
    nat_telemetry::metrics_router(handle).route("/healthz", get(|| async { "ok\n" }))
}

/// Installs the Prometheus recorder, binds `address` and serves [`router`] on a tokio task.
/// Returns the bound address (useful with port 0). Must run inside a tokio runtime.
pub async fn serve_metrics(address: SocketAddr) -> Result<SocketAddr, MetricsServerError> {
    let handle = nat_telemetry::install_prometheus().map_err(MetricsServerError::Recorder)?;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| MetricsServerError::Bind { address, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| MetricsServerError::Bind { address, source })?;
    let app = router(handle);
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            nat_telemetry::report_error(&error, "metrics listener stopped");
        }
    });
    tracing::info!(address = %bound, "serving /metrics and /healthz");
    Ok(bound)
}
