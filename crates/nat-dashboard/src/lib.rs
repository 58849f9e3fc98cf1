//! The nat-orchestrator dashboard, served by the coordinator on its HTTP listener.
//!
//! [`router`] returns an axum router with:
//! - `GET /` — jobs (state, progress, best reward and accuracy, elapsed) and workers (health,
//!   device, current task, throughput);
//! - `GET /jobs/{id}` — a job: for a finished optimize job NAT's answer first (the verdict, the
//!   recommendation with its reason, the final evaluation per seed with mean ± std, the paired
//!   difference and its 95 % interval, params and multiply-adds, the random control) and whether
//!   the policy learned (reward moving average and entropy per policy version); reward and
//!   baseline per policy version, best-so-far accuracy over time, the input and best cells as SVG
//!   diagrams with the changed edges highlighted, the before/after table, the latest events;
//! - `GET /api/jobs`, `GET /api/jobs/{id}?input=N&after=SEQ`, `GET /api/workers` — the same data
//!   as JSON; with `after` the job's chart points and events are only those of events after
//!   sequence number `SEQ` (the response's `last_seq` is the next request's `after`), so the page
//!   appends instead of re-reading the whole log;
//! - `GET /api/jobs/{id}/diagram.svg` and `.dot` — the whole transformation (both cells) drawn
//!   by `nat_arch::render`, to download;
//! - `GET /assets/dashboard.{css,js}` — the stylesheet and the hand-written script.
//!
//! The pages are static HTML embedded with `include_str!`; a small vanilla-JS script polls the
//! JSON endpoints every few seconds and draws the charts. No build toolchain, no internet assets.
//!
//! # Layout
//! - [`cache`]: per-job digests of the event logs read so far, so that each request reads only
//!   the events appended since.
//! - [`schema`]: decoding the stored documents (specs, results, payloads, events) with
//!   `nat-schema`'s types; a document that does not fit is an error naming the field.
//! - [`model`]: the views, built from the store.
//! - [`answer`]: NAT's answer and the learning curve of an optimize job, rendered on the server
//!   (HTML and SVG, text escaped).
//! - [`diagram`]: the job page's per-cell SVG pictures (input and best side by side, changed
//!   edges highlighted on both, ids and data attributes for the script and tests). The
//!   downloadable whole-genotype pictures use `nat_arch::render`.
//! - [`gauges`]: the store-derived Prometheus gauges (`nat_jobs`, `nat_tasks`, `nat_workers`).

pub mod answer;
pub mod cache;
pub mod diagram;
pub mod gauges;
pub mod model;
pub mod schema;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use nat_store::{JobId, Store, StoreError};
use serde_json::json;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const JOB_HTML: &str = include_str!("../assets/job.html");
const DASHBOARD_CSS: &str = include_str!("../assets/dashboard.css");
const DASHBOARD_JS: &str = include_str!("../assets/dashboard.js");

/// Errors of the dashboard's endpoints.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// A request parameter is malformed.
    #[error("invalid {field}: {reason}")]
    BadRequest {
        /// The parameter.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The store failed or refused.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A stored document (a job's spec or result, a task's payload or result) does not have
    /// the shape `nat-schema` defines: the message names the document and the field.
    #[error("{what}: {error}")]
    Document {
        /// Whose document (`job <id>`, `task <id>`).
        what: String,
        /// What does not fit.
        error: nat_schema::DecodeError,
    },
}

impl IntoResponse for DashboardError {
    fn into_response(self) -> Response {
        let (status, message) = match &self {
            DashboardError::BadRequest { .. } => (StatusCode::BAD_REQUEST, self.to_string()),
            DashboardError::Store(StoreError::NotFound { .. }) => {
                (StatusCode::NOT_FOUND, self.to_string())
            }
            DashboardError::Store(StoreError::InvalidArgument { .. }) => {
                (StatusCode::BAD_REQUEST, self.to_string())
            }
            DashboardError::Document { .. } => {
                nat_telemetry::report_error(&self, "dashboard: undecodable document");
                (StatusCode::INTERNAL_SERVER_ERROR, self.to_string())
            }
            DashboardError::Store(_) => {
                nat_telemetry::report_error(&self, "dashboard request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error reading the store".to_string(),
                )
            }
        };
        (status, Json(json!({ "error": message }))).into_response()
    }
}

/// Settings of the dashboard.
#[derive(Debug, Clone)]
pub struct DashboardConfig {
    /// A worker whose last heartbeat is older than this is shown unhealthy.
    pub heartbeat_stale_after: Duration,
    /// Jobs listed on the front page.
    pub jobs_listed: u32,
    /// Most recent jobs scanned for workers' current tasks and throughput.
    pub jobs_scanned_for_workers: u32,
    /// Jobs whose event-log digest is kept between requests ([`cache::EventCache`]).
    pub event_cache_jobs: usize,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            heartbeat_stale_after: Duration::from_secs(30),
            jobs_listed: 50,
            jobs_scanned_for_workers: 20,
            event_cache_jobs: cache::DEFAULT_CAPACITY,
        }
    }
}

#[derive(Clone)]
struct AppState {
    store: Arc<dyn Store>,
    config: Arc<DashboardConfig>,
    events: Arc<cache::EventCache>,
}

/// The dashboard with default settings. Merge it into the coordinator's HTTP router
/// (`Router::new().merge(nat_dashboard::router(store))`); it uses absolute paths, so mount it at
/// the root rather than under a prefix.
pub fn router(store: Arc<dyn Store>) -> Router {
    router_with(store, DashboardConfig::default())
}

/// The dashboard with explicit settings.
pub fn router_with(store: Arc<dyn Store>, config: DashboardConfig) -> Router {
    Router::new()
        .route("/", get(|| async { html(INDEX_HTML) }))
        .route("/jobs/{id}", get(|| async { html(JOB_HTML) }))
        .route(
            "/assets/dashboard.css",
            get(|| async { asset("text/css; charset=utf-8", DASHBOARD_CSS) }),
        )
        .route(
            "/assets/dashboard.js",
            get(|| async { asset("text/javascript; charset=utf-8", DASHBOARD_JS) }),
        )
        .route("/api/jobs", get(api_jobs))
        .route("/api/jobs/{id}", get(api_job))
        .route("/api/jobs/{id}/diagram.svg", get(api_diagram_svg))
        .route("/api/jobs/{id}/diagram.dot", get(api_diagram_dot))
        .route("/api/workers", get(api_workers))
        .with_state(AppState {
            store,
            events: Arc::new(cache::EventCache::new(config.event_cache_jobs)),
            config: Arc::new(config),
        })
}

fn html(body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn param_u32(
    query: &HashMap<String, String>,
    name: &'static str,
    default: u32,
    max: u32,
) -> Result<u32, DashboardError> {
    match query.get(name) {
        None => Ok(default),
        Some(v) => match v.trim().parse::<u32>() {
            Ok(n) if n <= max => Ok(n),
            _ => Err(DashboardError::BadRequest {
                field: name,
                reason: format!("expected an integer in 0..={max}, got {v:?}"),
            }),
        },
    }
}

/// An event sequence number parameter (`after`): a non-negative integer, 0 when absent.
fn param_seq(query: &HashMap<String, String>, name: &'static str) -> Result<i64, DashboardError> {
    match query.get(name) {
        None => Ok(0),
        Some(v) => v
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| DashboardError::BadRequest {
                field: name,
                reason: format!("expected an event sequence number (0 or more), got {v:?}"),
            }),
    }
}

async fn api_jobs(
    State(app): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Vec<model::JobRow>>, DashboardError> {
    let limit = param_u32(&query, "limit", app.config.jobs_listed, 1000)?.max(1);
    Ok(Json(
        model::jobs_with(app.store.as_ref(), Some(&app.events), limit).await?,
    ))
}

fn job_id(id: &str) -> Result<JobId, DashboardError> {
    uuid::Uuid::parse_str(id.trim())
        .map(JobId::from)
        .map_err(|e| DashboardError::BadRequest {
            field: "job_id",
            reason: e.to_string(),
        })
}

async fn api_job(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<model::JobDetail>, DashboardError> {
    let id = job_id(&id)?;
    let input = param_u32(&query, "input", 0, 1023)?;
    let after = param_seq(&query, "after")?;
    Ok(Json(
        model::job_detail_with(app.store.as_ref(), Some(&app.events), id, input, after).await?,
    ))
}

async fn api_diagram(
    app: AppState,
    id: String,
    query: HashMap<String, String>,
    dot: bool,
) -> Result<Response, DashboardError> {
    let id = job_id(&id)?;
    let input = param_u32(&query, "input", 0, 1023)?;
    let content_type = if dot {
        "text/vnd.graphviz; charset=utf-8"
    } else {
        "image/svg+xml"
    };
    Ok(
        match model::job_diagram(app.store.as_ref(), Some(&app.events), id, input, dot).await? {
            Some(body) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
            None => (
                StatusCode::NOT_FOUND,
                Json(json!({"error": format!("job {id} has no input architecture {input}")})),
            )
                .into_response(),
        },
    )
}

/// `GET /api/jobs/{id}/diagram.svg?input=N`: the transformation drawn by `nat_arch::render`.
async fn api_diagram_svg(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, DashboardError> {
    api_diagram(app, id, query, false).await
}

/// `GET /api/jobs/{id}/diagram.dot?input=N`: the same as Graphviz DOT.
async fn api_diagram_dot(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, DashboardError> {
    api_diagram(app, id, query, true).await
}

async fn api_workers(
    State(app): State<AppState>,
) -> Result<Json<Vec<model::WorkerRow>>, DashboardError> {
    let stale = chrono::Duration::from_std(app.config.heartbeat_stale_after)
        .unwrap_or(chrono::Duration::MAX);
    Ok(Json(
        model::workers(&app.store, stale, app.config.jobs_scanned_for_workers).await?,
    ))
}
