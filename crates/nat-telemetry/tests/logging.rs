//! Logging through the real subscriber, captured into a buffer: JSON lines parse and carry the
//! span fields, text lines are readable, errors are logged once with their cause chain, and bad
//! filters are reported naming their source.

use std::io;
use std::sync::{Arc, Mutex};

use nat_telemetry::logging::{filter_from, subscriber};
use nat_telemetry::{report_error, ErrorChain, LogFormat, TelemetryError};
use serde_json::Value;
use tracing_subscriber::fmt::MakeWriter;

/// A `MakeWriter` appending to a shared buffer.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Buffer {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().expect("lock").clone()).expect("utf-8 logs")
    }
}

impl io::Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("database unreachable")]
struct Root;

#[derive(Debug, thiserror::Error)]
#[error("could not collect expired leases")]
struct Middle(#[source] Root);

#[derive(Debug, thiserror::Error)]
#[error("expiry sweep failed")]
struct Outer(#[source] Middle);

fn capture(format: LogFormat, filter: &str, body: impl FnOnce()) -> String {
    let buffer = Buffer::default();
    let filter = filter_from(None, filter).expect("filter");
    let sub = subscriber(format, filter, buffer.clone(), false);
    tracing::subscriber::with_default(sub, body);
    buffer.text()
}

const JOB: &str = "6f1d2c1e-0000-4000-8000-000000000001";
const TASK: &str = "6f1d2c1e-0000-4000-8000-000000000002";
const WORKER: &str = "6f1d2c1e-0000-4000-8000-000000000003";

fn instrumented_work() {
    let job = tracing::info_span!("job", job_id = JOB, kind = "optimize");
    let _job = job.enter();
    tracing::info!("job started");
    let task = tracing::info_span!(
        "lease_task",
        task_id = TASK,
        worker_id = tracing::field::Empty
    );
    let _task = task.enter();
    task.record("worker_id", WORKER);
    tracing::info!(
        attempt = 2_u64,
        accuracy = 0.93_f64,
        ok = true,
        "task leased"
    );
    tracing::debug!("filtered out at info");
    report_error(&Outer(Middle(Root)), "lease expiry failed");
}

#[test]
fn json_lines_parse_and_carry_span_fields() {
    let text = capture(LogFormat::Json, "info", instrumented_work);
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 3, "{text}");

    let started = &lines[0];
    assert_eq!(started["message"], "job started");
    assert_eq!(started["job_id"], JOB);
    assert_eq!(started["kind"], "optimize");
    assert_eq!(started["level"], "INFO");
    assert!(started.get("task_id").is_none());
    assert_eq!(started["span"], "job");

    let leased = &lines[1];
    assert_eq!(leased["message"], "task leased");
    assert_eq!(leased["job_id"], JOB);
    assert_eq!(leased["task_id"], TASK);
    assert_eq!(leased["worker_id"], WORKER, "field recorded after creation");
    assert_eq!(leased["attempt"], 2);
    assert_eq!(leased["accuracy"], 0.93);
    assert_eq!(leased["ok"], true);
    assert_eq!(leased["spans"], serde_json::json!(["job", "lease_task"]));
    assert!(leased["timestamp"]
        .as_str()
        .is_some_and(|t| t.contains('T')));
    assert!(leased["target"]
        .as_str()
        .is_some_and(|t| t.starts_with("logging")));

    let error = &lines[2];
    assert_eq!(error["level"], "ERROR");
    assert_eq!(error["message"], "lease expiry failed");
    assert_eq!(error["error.message"], "expiry sweep failed");
    assert_eq!(
        error["error.cause_chain"],
        "expiry sweep failed: could not collect expired leases: database unreachable"
    );
    assert_eq!(error["job_id"], JOB);
    assert_eq!(error["task_id"], TASK);
}

#[test]
fn text_lines_are_human_readable_with_span_context() {
    let text = capture(LogFormat::Text, "info", instrumented_work);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[1].contains("INFO"), "{}", lines[1]);
    assert!(lines[1].contains(&format!("job_id=\"{JOB}\"")) || lines[1].contains(JOB));
    assert!(lines[1].contains(TASK), "{}", lines[1]);
    assert!(lines[1].contains("task leased"), "{}", lines[1]);
    assert!(!text.contains('\u{1b}'), "no ANSI escapes when disabled");
    assert!(
        lines[2].contains("database unreachable") && lines[2].contains("ERROR"),
        "{}",
        lines[2]
    );
    assert_eq!(
        text.matches("expiry sweep failed").count(),
        2,
        "message + chain, once"
    );
}

#[test]
fn error_chain_does_not_repeat_embedded_causes() {
    #[derive(Debug, thiserror::Error)]
    #[error("open config: {0}")]
    struct Wrapping(#[source] Root);
    assert_eq!(
        ErrorChain(&Wrapping(Root)).to_string(),
        "open config: database unreachable"
    );
    assert_eq!(ErrorChain(&Root).to_string(), "database unreachable");
}

#[test]
fn bad_filters_name_their_source() {
    let err = filter_from(Some("info,[[["), "info").expect_err("bad RUST_LOG");
    assert!(
        matches!(
            err,
            TelemetryError::InvalidFilter {
                field: "RUST_LOG",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("RUST_LOG"));
    let err = filter_from(None, "info,[[[").expect_err("bad default");
    assert!(matches!(
        err,
        TelemetryError::InvalidFilter {
            field: "default_filter",
            ..
        }
    ));
    // An empty RUST_LOG falls back to the default.
    assert!(filter_from(Some("  "), "warn").is_ok());
}

#[test]
fn log_format_parses_as_a_clap_value() {
    use clap::ValueEnum;
    assert_eq!(LogFormat::from_str("json", true), Ok(LogFormat::Json));
    assert_eq!(LogFormat::from_str("text", true), Ok(LogFormat::Text));
    assert!(LogFormat::from_str("xml", true).is_err());
    assert_eq!(LogFormat::default(), LogFormat::Text);
}
