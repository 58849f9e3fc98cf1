//! The files in `deploy/` only reference metrics that exist: every `nat_…` series in the Grafana
//! dashboard's queries and in the Prometheus alert rules maps to a metric of the catalogue (with
//! the `_bucket`/`_sum`/`_count` suffixes only on histograms), every label value they select is
//! allowed, and together they cover every metric of the catalogue.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use nat_telemetry::catalog::{self, LabelValues};
use serde_json::Value;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn read(rel: &str) -> String {
    let path = deploy_dir().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `nat_[a-z0-9_]+` token of a PromQL expression, with the `{…}` selector after it.
fn series_in(expr: &str) -> Vec<(String, String)> {
    let bytes = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("nat_") {
        let start = i + pos;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if boundary {
            let selector = if expr[end..].starts_with('{') {
                expr[end + 1..].split('}').next().unwrap_or("").to_string()
            } else {
                String::new()
            };
            out.push((expr[start..end].to_string(), selector));
        }
        i = end.max(start + 4);
    }
    out
}

/// Checks one expression; returns the metrics it uses.
fn check(expr: &str, origin: &str) -> Vec<&'static str> {
    let mut used = Vec::new();
    for (series, selector) in series_in(expr) {
        let metric = catalog::for_series(&series)
            .unwrap_or_else(|| panic!("{origin}: `{series}` is not in nat-telemetry's catalogue"));
        used.push(metric.name);
        for matcher in selector.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            let (key, value) = matcher
                .split_once("=~")
                .or_else(|| matcher.split_once("!="))
                .or_else(|| matcher.split_once('='))
                .unwrap_or_else(|| panic!("{origin}: bad matcher {matcher}"));
            let (key, value) = (key.trim(), value.trim().trim_matches('"'));
            if key == "le" || key == "instance" || key == "job" {
                continue;
            }
            let label = metric
                .labels
                .iter()
                .find(|l| l.name == key)
                .unwrap_or_else(|| panic!("{origin}: {} has no label `{key}`", metric.name));
            if let LabelValues::Enum(values) = label.values {
                assert!(
                    values.contains(&value),
                    "{origin}: {}{{{key}}} never takes the value {value:?}",
                    metric.name
                );
            }
        }
    }
    used
}

fn exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", Value::String(s)) => out.push(s.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[test]
fn deploy_files_use_only_catalogued_metrics() {
    let mut used = BTreeSet::new();

    let dashboard: Value =
        serde_json::from_str(&read("grafana/nat-orchestrator.json")).expect("dashboard is JSON");
    assert_eq!(dashboard["uid"], "nat-orchestrator");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() > 10);
    let mut queries = Vec::new();
    exprs(&dashboard, &mut queries);
    assert!(queries.len() >= 20, "{} queries", queries.len());
    for q in &queries {
        let names = check(q, "grafana/nat-orchestrator.json");
        assert!(!names.is_empty(), "query without a nat metric: {q}");
        used.extend(names);
    }

    let rules: yaml_serde::Value =
        yaml_serde::from_str(&read("prometheus/alerts.yml")).expect("alerts are YAML");
    let groups = rules["groups"].as_sequence().expect("groups");
    let mut alerts = 0;
    for group in groups {
        for rule in group["rules"].as_sequence().expect("rules") {
            let expr = rule["expr"].as_str().expect("expr");
            used.extend(check(expr, "prometheus/alerts.yml"));
            alerts += 1;
        }
    }
    assert!(alerts >= 5);

    let missing: Vec<&str> = catalog::ALL
        .iter()
        .map(|m| m.name)
        .filter(|n| !used.contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics on no panel and in no alert: {missing:?}"
    );
}

#[test]
fn scrape_config_names_both_binaries() {
    let config: yaml_serde::Value =
        yaml_serde::from_str(&read("prometheus/prometheus.yml")).expect("prometheus.yml is YAML");
    let jobs: Vec<&str> = config["scrape_configs"]
        .as_sequence()
        .expect("scrape_configs")
        .iter()
        .filter_map(|j| j["job_name"].as_str())
        .collect();
    assert_eq!(jobs, ["nat-coordinator", "nat-worker"]);
    assert_eq!(config["rule_files"][0], "alerts.yml");
    let workers: yaml_serde::Value =
        yaml_serde::from_str(&read("prometheus/file_sd/workers.yml")).expect("file_sd YAML");
    assert!(workers[0]["targets"]
        .as_sequence()
        .is_some_and(|t| !t.is_empty()));
}

#[test]
fn the_checker_rejects_unknown_metrics_and_labels() {
    assert!(std::panic::catch_unwind(|| check("rate(nat_bogus_total[5m])", "t")).is_err());
    assert!(std::panic::catch_unwind(|| check(r#"nat_tasks{state="done"}"#, "t")).is_err());
    assert!(std::panic::catch_unwind(|| check(r#"nat_tasks{job_id="x"}"#, "t")).is_err());
    assert!(std::panic::catch_unwind(|| check("nat_tasks_created_total_count", "t")).is_err());
    assert_eq!(
        check(r#"sum(nat_tasks{state="ready"}) / nat_jobs"#, "t"),
        ["nat_tasks", "nat_jobs"]
    );
}
