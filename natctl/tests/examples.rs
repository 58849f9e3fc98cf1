//! Every `examples/*.yaml` job file is submitted with `natctl submit -f` to a real coordinator
//! (in-process, SQLite) and the stored job checked; together the examples must use, and explain
//! in a comment, every key of the job-file format (the structs of `natctl/src/jobfile.rs`), so a
//! new key without an example fails here.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn example_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(examples_dir())
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// The keys of the job-file format as dotted paths (`optimize.supernet.op_set`), read from
/// the `#[derive(Deserialize)]` structs of jobfile.rs: `JobFile` and the structs its fields
/// name.
fn format_keys() -> BTreeSet<String> {
    let src = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/jobfile.rs"))
        .expect("jobfile.rs");
    let mut structs: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in src.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("pub struct ") {
            current = rest.strip_suffix(" {").map(str::to_string);
            continue;
        }
        if t == "}" {
            current = None;
            continue;
        }
        if let (Some(name), Some(field)) = (&current, t.strip_prefix("pub ")) {
            if let Some((key, ty)) = field.split_once(": ") {
                structs
                    .entry(name.clone())
                    .or_default()
                    .push((key.to_string(), ty.trim_end_matches(',').to_string()));
            }
        }
    }
    fn walk(
        structs: &BTreeMap<String, Vec<(String, String)>>,
        name: &str,
        prefix: &str,
        out: &mut BTreeSet<String>,
    ) {
        for (key, ty) in structs.get(name).unwrap_or_else(|| panic!("struct {name}")) {
            let path = format!("{prefix}{key}");
            let nested = structs
                .keys()
                .find(|s| ty == &format!("Option<{s}>") || ty == *s);
            if let Some(nested) = nested {
                walk(structs, nested, &format!("{path}."), out);
            }
            out.insert(path);
        }
    }
    let mut keys = BTreeSet::new();
    walk(&structs, "JobFile", "", &mut keys);
    keys
}

/// The keys an example uses as dotted paths, each with whether its line has a `#` comment.
fn example_keys(text: &str) -> Vec<(String, bool)> {
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut keys = Vec::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.is_empty() || t.starts_with('#') || t.starts_with('-') {
            continue;
        }
        let indent = line.len() - t.len();
        let Some((key, _)) = t.split_once(':') else {
            continue;
        };
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        let mut path: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).collect();
        path.push(key);
        keys.push((path.join("."), t.contains(" #")));
        stack.push((indent, key.to_string()));
    }
    keys
}

#[test]
fn the_examples_use_and_explain_every_job_file_key() {
    let format = format_keys();
    assert!(
        format.contains("optimize.supernet.num_nodes") && format.contains("dataset_shape.classes"),
        "{format:?}"
    );
    assert!(
        format.contains("optimize.final_budget.max_wall_seconds"),
        "{format:?}"
    );
    let mut used = BTreeSet::new();
    let mut explained = BTreeSet::new();
    for file in example_files() {
        let text = std::fs::read_to_string(&file).expect("read");
        for (key, commented) in example_keys(&text) {
            assert!(
                format.contains(&key),
                "{}: `{key}` is not a job-file key",
                file.display()
            );
            used.insert(key.clone());
            if commented {
                explained.insert(key);
            }
        }
    }
    // `optimize.final_budget.*` shares `budget:`'s keys: explained there.
    let shared = |k: &str| {
        k.strip_prefix("optimize.final_budget.")
            .map(|rest| format!("budget.{rest}"))
    };
    let missing: Vec<&String> = format
        .iter()
        .filter(|k| !used.contains(*k) && !shared(k).is_some_and(|b| used.contains(&b)))
        .collect();
    assert!(
        missing.is_empty(),
        "job-file keys no example uses: {missing:?}"
    );
    let unexplained: Vec<&String> = format
        .iter()
        .filter(|k| !explained.contains(*k) && !shared(k).is_some_and(|b| explained.contains(&b)))
        .collect();
    assert!(
        unexplained.is_empty(),
        "job-file keys no example explains in a comment: {unexplained:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_is_accepted_as_written() {
    let server = common::start().await;
    let files = example_files();
    assert!(files.len() >= 4, "{files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        let want: Value = yaml_serde::from_str(&text).expect("the example is YAML");
        let path = file.to_string_lossy().to_string();
        let out = common::natctl(&server.url, &["submit", "-f", &path, "-o", "json"]).await;
        assert!(out.status.success(), "{path}: {}", common::stderr(&out));
        let job: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let stored = common::json(
            &server.url,
            &["status", job["job_id"].as_str().expect("id"), "-o", "json"],
        )
        .await;
        assert_eq!(stored["kind"], want["kind"], "{path}");
        assert_eq!(stored["name"], want["name"], "{path}");
        assert_eq!(stored["dataset"], want["dataset"], "{path}");
        let archs = want["architectures"].as_array().map_or(0, Vec::len);
        assert_eq!(
            stored["architectures"].as_array().map(Vec::len),
            Some(archs),
            "{path}"
        );
        if let Some(preset) = want["budget"]["preset"].as_str() {
            assert_eq!(stored["budget_preset"], preset, "{path}");
        }
        if let Some(epochs) = want["budget"]["epochs"].as_u64() {
            assert_eq!(stored["budget"]["epochs"].as_u64(), Some(epochs), "{path}");
        }
        if !want["dataset_shape"].is_null() {
            assert_eq!(stored["dataset_shape"], want["dataset_shape"], "{path}");
        }
        if let Some(seed) = want["seed"].as_u64() {
            assert_eq!(stored["seed"].as_u64(), Some(seed), "{path}");
        }
        // An optimize example's settings are the job's (the coordinator reports them resolved).
        if let Some(settings) = want["optimize"].as_object() {
            let got = &stored["optimize"];
            assert!(got.is_object(), "{path}: no optimize settings in {stored}");
            for key in [
                "space",
                "reward",
                "iterations",
                "samples_per_iteration",
                "derive_samples",
                "final_seeds",
                "max_cost_ratio",
                "control",
            ] {
                if let Some(value) = settings.get(key) {
                    let same = match (value.as_f64(), got[key].as_f64()) {
                        (Some(a), Some(b)) => (a - b).abs() < 1e-12,
                        _ => got[key] == *value,
                    };
                    assert!(same, "{path}: optimize.{key} is {} not {value}", got[key]);
                }
            }
        } else {
            assert!(stored["optimize"].is_null(), "{path}");
        }
    }
}
