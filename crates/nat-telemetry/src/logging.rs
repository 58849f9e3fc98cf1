//! Logging: one `tracing` subscriber for every binary, human-readable text by default or one JSON
//! object per line (`--log-format json`), filtered by `RUST_LOG` or a default filter.
//!
//! In JSON, the fields of every enclosing span (root first, inner spans overriding outer ones,
//! event fields overriding both) are flattened into the line, so a log line inside
//! `info_span!("task", task_id = %t)` nested in `info_span!("job", job_id = %j)` carries both
//! `job_id` and `task_id` at the top level:
//!
//! ```json
//! {"timestamp":"2026-11-28T09:00:00.123456Z","level":"INFO","target":"nat_coordinator::api::worker",
//!  "message":"task leased","job_id":"…","task_id":"…","worker_id":"…","span":"lease_task",
//!  "spans":["job","lease_task"]}
//! ```

use std::error::Error as StdError;
use std::fmt;
use std::io::IsTerminal;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::TelemetryError;

/// Output format of the logs, for a `--log-format` flag:
///
/// ```
/// #[derive(clap::Parser)]
/// struct Args {
///     /// Log format.
///     #[arg(long, env = "NAT_LOG_FORMAT", value_enum, default_value_t)]
///     log_format: nat_telemetry::LogFormat,
/// }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (ANSI colours when stderr is a terminal).
    #[default]
    Text,
    /// One JSON object per line, span fields flattened in.
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// Installs the global subscriber writing to stderr. The filter is `RUST_LOG` when set and not
/// empty, else `default_filter` (e.g. `"info"` or `"info,nat_coordinator=debug"`).
///
/// # Errors
/// [`TelemetryError::InvalidFilter`] naming `RUST_LOG` or `default_filter`;
/// [`TelemetryError::LoggingAlreadyInitialised`] when a global subscriber exists.
pub fn init_logging(format: LogFormat, default_filter: &str) -> Result<(), TelemetryError> {
    let env = std::env::var("RUST_LOG").ok();
    let filter = filter_from(env.as_deref(), default_filter)?;
    let ansi = std::io::stderr().is_terminal();
    subscriber(format, filter, std::io::stderr, ansi)
        .try_init()
        .map_err(|_| TelemetryError::LoggingAlreadyInitialised)
}

/// The filter for `env` (the value of `RUST_LOG`, if set) or else `default_filter`.
///
/// # Errors
/// [`TelemetryError::InvalidFilter`] naming the source of the bad directive.
pub fn filter_from(env: Option<&str>, default_filter: &str) -> Result<EnvFilter, TelemetryError> {
    match env.map(str::trim).filter(|v| !v.is_empty()) {
        Some(directives) => {
            EnvFilter::try_new(directives).map_err(|e| TelemetryError::InvalidFilter {
                field: "RUST_LOG",
                reason: e.to_string(),
            })
        }
        None => EnvFilter::try_new(default_filter).map_err(|e| TelemetryError::InvalidFilter {
            field: "default_filter",
            reason: e.to_string(),
        }),
    }
}

/// The subscriber [`init_logging`] installs, writing to any `writer` (tests capture into a
/// buffer and install it with `tracing::subscriber::with_default`).
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    ansi: bool,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => Box::new(
            registry.with(
                tracing_subscriber::fmt::layer()
                    .with_writer(writer)
                    .with_ansi(ansi)
                    .with_target(true),
            ),
        ),
        LogFormat::Json => Box::new(
            registry.with(
                tracing_subscriber::fmt::layer()
                    .with_writer(writer)
                    .with_ansi(false)
                    .fmt_fields(JsonFields::new())
                    .event_format(FlatJson),
            ),
        ),
    }
}

/// JSON event format with the fields of all enclosing spans flattened into the object.
#[derive(Debug, Clone, Copy, Default)]
pub struct FlatJson;

impl<S> FormatEvent<S, JsonFields> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = Map::new();
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        line.insert("timestamp".into(), Value::String(timestamp));
        let meta = event.metadata();
        line.insert("level".into(), Value::String(meta.level().to_string()));
        line.insert("target".into(), Value::String(meta.target().to_string()));

        let mut span_names = Vec::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                span_names.push(Value::String(span.name().to_string()));
                let extensions = span.extensions();
                let Some(fields) = extensions.get::<FormattedFields<JsonFields>>() else {
                    continue;
                };
                if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&fields.fields) {
                    line.extend(map);
                }
            }
        }
        event.record(&mut JsonVisitor(&mut line));
        if let Some(Value::String(innermost)) = span_names.last() {
            line.insert("span".into(), Value::String(innermost.clone()));
        }
        if !span_names.is_empty() {
            line.insert("spans".into(), Value::Array(span_names));
        }
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// Records event fields into a JSON map.
struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let v = serde_json::Number::from_f64(value)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(value.to_string()));
        self.0.insert(field.name().into(), v);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::Bool(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().into(), Value::String(value.into()));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn StdError + 'static)) {
        self.0.insert(
            field.name().into(),
            Value::String(ErrorChain(value).to_string()),
        );
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::String(format!("{value:?}")));
    }
}

/// Displays an error followed by each of its causes: `outer: middle: root`. A cause whose text
/// the previous message already ends with (`#[error("…: {0}")]`) is not repeated.
#[derive(Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn StdError + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut previous = self.0.to_string();
        f.write_str(&previous)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            let text = error.to_string();
            if !previous.ends_with(&text) {
                write!(f, ": {text}")?;
            }
            previous = text;
            cause = error.source();
        }
        Ok(())
    }
}

impl fmt::Debug for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Logs `error` once at ERROR level with its whole cause chain, in the fields
/// `error.message` (the outermost message) and `error.cause_chain` (see [`ErrorChain`]), inside
/// the current span (so job/task/worker ids come along). `message` says what failed, lowercase
/// and without a trailing period ("lease expiry sweep failed").
///
/// Works with `anyhow::Error` too: `report_error(err.as_ref(), "…")`.
pub fn report_error(error: &(dyn StdError + 'static), message: &str) {
    tracing::error!(
        error.message = %error,
        error.cause_chain = %ErrorChain(error),
        "{message}"
    );
}
