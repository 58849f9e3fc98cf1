//! The Prometheus exporter with a real recorder: every catalogue metric shows up in the rendered
//! text after its recording function runs, with the values recorded, and `GET /metrics` serves it
//! over real HTTP.

use std::time::Duration;

use metrics_exporter_prometheus::PrometheusRecorder;
use nat_telemetry::catalog::{self, MetricKind};
use nat_telemetry::exporter::{describe_all, CONTENT_TYPE};
use nat_telemetry::record;
use nat_telemetry::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn recorder() -> PrometheusRecorder {
    prometheus_builder()
        .expect("catalogue buckets")
        .build_recorder()
}

/// Calls every recording function once (some twice), inside the local recorder.
fn record_everything() {
    describe_all();
    record::job_submitted(JobKind::Optimize);
    record::tasks_created(TaskKind::TrainEval, 5);
    record::task_leased(TaskKind::TrainEval);
    record::task_leased(TaskKind::TrainEval);
    record::lease_task_rpc(LeaseResult::Leased, Duration::from_millis(3));
    record::lease_task_rpc(LeaseResult::Empty, Duration::from_secs(5));
    record::report_result_rpc(ReportOutcome::Accepted, Duration::from_millis(7));
    record::task_finished(TaskKind::TrainEval, TaskOutcome::Succeeded);
    record::task_retried(TaskKind::Supernet, RetryReason::LeaseExpired);
    record::lease_expired(ExpiryOutcome::Requeued, 2);
    record::lease_reservations(ReservationEvent::Claimed, 40);
    record::lease_reservations(ReservationEvent::HandedOut, 38);
    record::job_finished(JobKind::Optimize, JobState::Succeeded);
    record::evaluated_accuracy(0.93);
    record::evaluated_accuracy(f64::NAN); // ignored
    record::policy_reward(0.015);
    record::policy_reward(-0.03);
    record::policy_updated(7, 0.004, 16, 3, Duration::from_millis(40));
    record::reward_cache_lookup(CacheResult::Hit);
    record::reward_cache_lookup(CacheResult::Miss);
    record::supernet_bytes(record::Direction::Sent, 40 << 20);
    record::supernet_bytes(record::Direction::Received, 80 << 20);
    record::supernet_version_committed(Duration::from_millis(450));
    record::worker_registered();
    record::auth_refused("unauthenticated");
    record::auth_refused("permission_denied");
    record::leadership_changed(true, 3);
    record::leader_seen(3);
    record::set_jobs(JobState::Running, 2);
    record::set_tasks(TaskState::Ready, 11);
    record::set_workers(WorkerState::Active, 3);
    record::worker_task_finished(
        TaskKind::TrainEval,
        DeviceKind::Cuda,
        WorkerTaskOutcome::Succeeded,
        Duration::from_secs(42),
    );
    record::worker_images(DeviceKind::Cuda, 60_000, 1234.5);
    record::worker_slots(1, 3);
    record::worker_gpu_memory(0, 1 << 30, 80 << 30);
    record::worker_gpu_memory(1000, 1, 1); // out of range: not exported
    record::worker_rpc_error(WorkerRpc::Heartbeat);
}

/// The value of the sample line `series` (name with labels, exactly as rendered).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[test]
fn every_catalogue_metric_is_rendered_after_recording() {
    let recorder = recorder();
    let handle = MetricsHandle::new(recorder.handle());
    metrics::with_local_recorder(&recorder, record_everything);
    handle.run_upkeep();
    let text = handle.render();

    for metric in catalog::ALL {
        assert!(
            text.contains(&format!("# TYPE {} {}", metric.name, metric.kind.as_str())),
            "{} missing its TYPE line in:\n{text}",
            metric.name
        );
        assert!(
            text.contains(&format!("# HELP {} {}", metric.name, metric.help)),
            "{} missing its HELP line",
            metric.name
        );
    }

    assert_eq!(
        sample(&text, r#"nat_tasks_leased_total{task_kind="train_eval"}"#),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, r#"nat_tasks_created_total{task_kind="train_eval"}"#),
        Some(5.0)
    );
    assert_eq!(
        sample(&text, r#"nat_lease_reservations_total{event="handed_out"}"#),
        Some(38.0)
    );
    assert_eq!(
        sample(&text, r#"nat_lease_expiries_total{outcome="requeued"}"#),
        Some(2.0)
    );
    assert_eq!(sample(&text, "nat_policy_version"), Some(7.0));
    assert_eq!(sample(&text, "nat_policy_samples_stale_total"), Some(3.0));
    assert_eq!(sample(&text, r#"nat_tasks{state="ready"}"#), Some(11.0));
    assert_eq!(
        sample(&text, r#"nat_worker_gpu_memory_used_bytes{gpu="0"}"#),
        Some(f64::from(1u32 << 30))
    );
    assert!(!text.contains(r#"gpu="1000""#));
    // Histograms are real Prometheus histograms with the catalogue's buckets.
    assert_eq!(
        sample(
            &text,
            r#"nat_lease_task_duration_seconds_bucket{result="leased",le="0.005"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"nat_lease_task_duration_seconds_bucket{result="empty",le="2.5"}"#
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "nat_evaluated_accuracy_ratio_count"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, r#"nat_policy_reward_bucket{le="0"}"#),
        Some(1.0)
    );
    assert_eq!(sample(&text, "nat_policy_reward_count"), Some(2.0));
}

#[test]
fn rendered_series_are_all_in_the_catalogue_and_use_allowed_labels() {
    let recorder = recorder();
    let handle = MetricsHandle::new(recorder.handle());
    metrics::with_local_recorder(&recorder, record_everything);
    let text = handle.render();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let series = &line[..name_end];
        let metric = catalog::for_series(series)
            .unwrap_or_else(|| panic!("series {series} is not in the catalogue"));
        if let Some(labels) = line[name_end..]
            .strip_prefix('{')
            .and_then(|l| l.split('}').next())
        {
            for pair in labels.split(',') {
                let (key, value) = pair.split_once('=').expect("label pair");
                let value = value.trim_matches('"');
                if key == "le" && metric.kind == MetricKind::Histogram {
                    continue;
                }
                let def = metric
                    .labels
                    .iter()
                    .find(|l| l.name == key)
                    .unwrap_or_else(|| panic!("{series}: label {key} not declared"));
                match def.values {
                    catalog::LabelValues::Enum(values) => {
                        assert!(values.contains(&value), "{series}: {key}={value}");
                    }
                    catalog::LabelValues::GpuIndex => {
                        let index: u32 = value.parse().expect("gpu index");
                        assert!(index <= catalog::MAX_GPU_INDEX);
                    }
                }
            }
        }
    }
}

#[tokio::test]
async fn metrics_route_serves_the_text_over_http() {
    let recorder = recorder();
    let handle = MetricsHandle::new(recorder.handle());
    metrics::with_local_recorder(&recorder, || {
        describe_all();
        record::task_leased(TaskKind::Supernet);
        record::set_workers(WorkerState::Lost, 1);
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move { axum::serve(listener, metrics_router(handle)).await });

    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    server.abort();

    let (head, body) = response.split_once("\r\n\r\n").expect("http response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-type: {CONTENT_TYPE}")),
        "{head}"
    );
    assert!(
        body.contains(r#"nat_tasks_leased_total{task_kind="supernet"} 1"#),
        "{body}"
    );
    assert!(body.contains(r#"nat_workers{state="lost"} 1"#), "{body}");
}

#[test]
fn global_install_is_idempotent() {
    let first = install_prometheus().expect("install");
    let second = install_prometheus().expect("second install returns the same handle");
    record::worker_registered();
    let text = second.render();
    assert!(text.contains("nat_workers_registered_total"), "{text}");
    assert_eq!(first.render(), second.render());
}
