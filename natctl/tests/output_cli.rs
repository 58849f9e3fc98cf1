//! `-o json|yaml` on every data command, `submit --follow` exit codes and shell completions,
//! against a real coordinator (in-process, SQLite) over gRPC.

mod common;

use std::time::Duration;

use common::{json, natctl, natctl_env, start, stderr, stdout, yaml};
use nat_proto::v1;
use serde_json::Value;

fn ok_lines(out: &std::process::Output) -> Vec<Value> {
    assert!(out.status.success(), "{}", stderr(out));
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_data_command_prints_json_and_yaml() {
    let server = start().await;
    let url = server.url.as_str();
    // A worker that has a dataset of its own, with its shape.
    let leaves = v1::DatasetShape {
        channels: 3,
        image_size: 16,
        classes: 5,
    };
    let (_worker, worker_id) = common::register(
        url,
        v1::WorkerCapabilities {
            datasets: vec!["digits".into(), "leaves".into()],
            dataset_infos: vec![v1::DatasetInfo {
                name: "leaves".into(),
                shape: Some(leaves),
                train_examples: 40,
                test_examples: 10,
                format: "image-folder".into(),
            }],
            ..common::cpu_worker()
        },
    )
    .await;
    let workers = json(url, &["workers", "-o", "json"]).await;
    let w = &workers.as_array().expect("an array")[0];
    assert_eq!(w["worker_id"], worker_id.as_str());
    assert_eq!(w["datasets"], serde_json::json!(["digits", "leaves"]));
    assert_eq!(w["dataset_infos"][0]["shape"]["image_size"], 16);
    assert_eq!(w["dataset_infos"][0]["format"], "image-folder");
    assert_eq!(yaml(url, &["workers", "-o", "yaml"]).await, workers);
    let table = stdout(&natctl(url, &["workers"]).await);
    assert!(table.contains("leaves (3x16x16, 5 classes)"), "{table}");

    // submit: the created job; its id is still the last line of the table.
    let job = json(
        url,
        &[
            "submit",
            "--arch",
            "darts-v2",
            "--arch",
            "enas",
            "--dataset",
            "digits",
            "--budget",
            "smoke",
            "--name",
            "json-test",
            "-o",
            "json",
        ],
    )
    .await;
    let id = job["job_id"].as_str().expect("job_id").to_string();
    assert_eq!(
        (
            job["kind"].as_str(),
            job["state"].as_str(),
            job["name"].as_str()
        ),
        (Some("evaluate"), Some("queued"), Some("json-test"))
    );
    assert_eq!(job["tasks"]["total"], 2);
    assert_eq!(job["architectures"].as_array().map(Vec::len), Some(2));
    assert_eq!(job["budget_preset"], "smoke");
    assert!(job["budget"]["epochs"].is_u64(), "{job}");
    assert_eq!(
        job["dataset_shape"],
        serde_json::json!({"channels": 1, "image_size": 8, "classes": 10})
    );
    let y = yaml(
        url,
        &[
            "submit",
            "--arch",
            "darts-v2",
            "--dataset",
            "digits",
            "-o",
            "yaml",
        ],
    )
    .await;
    assert_eq!(y["kind"], "evaluate");
    let cancel_id = y["job_id"].as_str().expect("job_id").to_string();

    // status, with the format from NAT_OUTPUT too.
    let status = json(url, &["status", &id, "-o", "json"]).await;
    assert_eq!(status["job_id"], id.as_str());
    assert_eq!(status["tasks"]["pending"], 2);
    let out = natctl_env(url, &["status", &id], &[("NAT_OUTPUT", "yaml")]).await;
    let from_env: Value = yaml_serde::from_slice(&out.stdout).expect("YAML from NAT_OUTPUT");
    assert_eq!(from_env["job_id"], id.as_str());
    let table = stdout(&natctl(url, &["status", &id]).await);
    assert!(table.contains("state:     queued"), "{table}");

    // jobs: an array of the same objects.
    let jobs = json(url, &["jobs", "-o", "json", "--state", "queued"]).await;
    let listed: Vec<&str> = jobs
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|j| j["job_id"].as_str())
        .collect();
    assert!(
        listed.contains(&id.as_str()) && listed.contains(&cancel_id.as_str()),
        "{jobs}"
    );
    assert_eq!(
        yaml(url, &["jobs", "-o", "yaml", "--limit", "1"])
            .await
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    // cancel: the job after cancelling.
    let cancelled = json(url, &["cancel", &cancel_id, "-o", "json"]).await;
    assert_eq!(cancelled["state"], "cancelled");
    assert!(cancelled["finished_at_unix_ms"].is_i64(), "{cancelled}");

    // result: -o json, the hidden --json alias and -o yaml agree.
    common::drain_tasks(url, 2).await;
    let result = json(url, &["result", &id, "-o", "json"]).await;
    assert_eq!(result["state"], "succeeded");
    assert_eq!(result["architectures"].as_array().map(Vec::len), Some(2));
    assert!(result["architectures"][1]["accuracy"]
        .as_f64()
        .is_some_and(|a| a >= 0.5));
    assert_eq!(json(url, &["result", &id, "--json"]).await, result);
    assert_eq!(yaml(url, &["result", &id, "-o", "yaml"]).await, result);

    // watch -o json: JSON Lines, one event a line, ending with the final state.
    let events = ok_lines(&natctl(url, &["watch", &id, "-o", "json"]).await);
    assert!(events
        .iter()
        .all(|e| e["job_id"] == id.as_str() && e["sequence"].is_u64()));
    assert!(
        events.iter().any(|e| e["type"] == "task_completed"),
        "{events:?}"
    );
    let last = events.last().expect("events");
    assert_eq!(
        (last["type"].as_str(), last["state"].as_str()),
        (Some("state_changed"), Some("succeeded"))
    );
    let docs = stdout(&natctl(url, &["watch", &id, "-o", "yaml"]).await);
    assert_eq!(docs.matches("---\n").count(), events.len(), "{docs}");

    // policies: an array (none stored yet), with the hidden --json alias too.
    assert_eq!(
        json(url, &["policies", "-o", "json"]).await,
        serde_json::json!([])
    );
    assert_eq!(
        json(url, &["policies", "--json"]).await,
        serde_json::json!([])
    );
    assert_eq!(
        yaml(url, &["policies", "-o", "yaml"]).await,
        serde_json::json!([])
    );

    // A dataset of the workers' with its shape from flags; a partial shape names the field.
    let own = json(
        url,
        &[
            "submit",
            "--arch",
            "resnet-block",
            "--dataset",
            "leaves",
            "--channels",
            "3",
            "--image-size",
            "16",
            "--classes",
            "5",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(own["dataset"], "leaves");
    assert_eq!(
        own["dataset_shape"],
        serde_json::json!({"channels": 3, "image_size": 16, "classes": 5})
    );
    let out = natctl(
        url,
        &[
            "submit",
            "--arch",
            "enas",
            "--dataset",
            "leaves",
            "--channels",
            "3",
        ],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).starts_with("error: dataset_shape.image_size: missing"),
        "{}",
        stderr(&out)
    );
    let out = natctl(
        url,
        &[
            "submit",
            "--arch",
            "enas",
            "--dataset",
            "leaves",
            "--channels",
            "2",
            "--image-size",
            "16",
            "--classes",
            "5",
        ],
    )
    .await;
    assert!(
        stderr(&out).starts_with("error: dataset_shape.channels: must be 1 or 3"),
        "{}",
        stderr(&out)
    );
    // An unknown format is refused by clap, naming the values.
    let out = natctl(url, &["jobs", "-o", "xml"]).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("json"), "{}", stderr(&out));
}

#[test]
fn arch_commands_print_json_and_yaml() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(common::NATCTL)
            .args(args)
            .env_remove("NAT_OUTPUT")
            .output()
            .expect("run natctl");
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        out
    };
    let as_json = |args: &[&str]| -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let v: Value = serde_json::from_slice(&run(&all).stdout).expect("JSON");
        all.truncate(args.len());
        all.extend(["-o", "yaml"]);
        let y: Value = yaml_serde::from_slice(&run(&all).stdout).expect("YAML");
        assert_eq!(v, y, "{args:?}: JSON and YAML agree");
        v
    };
    let list = as_json(&["arch", "list"]);
    let darts = list
        .as_array()
        .expect("array")
        .iter()
        .find(|p| p["name"] == "darts-v2.nat")
        .expect("darts-v2.nat");
    assert_eq!(
        (darts["kind"].as_str(), darts["space"].as_str()),
        (Some("output"), Some("NAT"))
    );
    let g = nat_arch::parse_any("darts-v2").expect("preset");
    let show = as_json(&["arch", "show", "darts-v2"]);
    assert_eq!(show["hash"], g.canonical_hash().as_str());
    assert_eq!(show["darts"], g.to_darts_string().as_str());
    assert_eq!(show["genotype"], g.to_json_value());
    let valid = as_json(&["arch", "validate", "darts-v2"]);
    assert_eq!(
        (valid["valid"].as_bool(), valid["num_nodes"].as_u64()),
        (Some(true), Some(4))
    );
    let diff = as_json(&["arch", "diff", "darts-v2", "darts-v2.nat", "--space", "nat"]);
    assert!(
        !diff["changes"].as_array().expect("changes").is_empty(),
        "{diff}"
    );
    let cost = as_json(&["arch", "cost", "darts-v2"]);
    assert_eq!(
        cost["params"].as_u64(),
        Some(
            nat_arch::network_cost(&g, &nat_arch::NetworkSpec::cifar10())
                .expect("cost")
                .params()
        )
    );
    assert_eq!(as_json(&["arch", "cost", "darts-v2"]), cost);
    let ops = as_json(&["arch", "ops", "--space", "nat"]);
    assert_eq!(ops["ops"].as_array().map(Vec::len), Some(9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_follow_exits_with_the_jobs_end_state() {
    let server = start().await;
    let url = server.url.clone();
    // Succeeds: a scripted worker answers the job's two tasks while natctl follows it.
    let follow = tokio::spawn({
        let url = url.clone();
        async move {
            natctl(
                &url,
                &[
                    "submit",
                    "--arch",
                    "darts-v2",
                    "--arch",
                    "enas",
                    "--dataset",
                    "digits",
                    "--follow",
                ],
            )
            .await
        }
    });
    common::drain_tasks(&url, 2).await;
    let out = tokio::time::timeout(Duration::from_secs(60), follow)
        .await
        .expect("follow ends with the job")
        .expect("join");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("submitted evaluate job with 2 task(s)"),
        "{text}"
    );
    assert_eq!(
        lines.last().copied(),
        Some(format!("job {} succeeded", lines[1]).as_str()),
        "{text}"
    );

    // Fails: the worker reports a failure that is not retryable. With -o json: JSON Lines,
    // the job first, then its events.
    let follow = tokio::spawn({
        let url = url.clone();
        async move {
            natctl(
                &url,
                &[
                    "submit",
                    "--arch",
                    "enas",
                    "--dataset",
                    "digits",
                    "--follow",
                    "-o",
                    "json",
                ],
            )
            .await
        }
    });
    common::answer_tasks(&url, 1, |_| {
        v1::report_result_request::Outcome::Failure(v1::TaskFailure {
            reason: "out of memory".into(),
            retryable: false,
        })
    })
    .await;
    let out = tokio::time::timeout(Duration::from_secs(60), follow)
        .await
        .expect("follow ends with the job")
        .expect("join");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let lines: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let id = lines[0]["job_id"]
        .as_str()
        .expect("the job first")
        .to_string();
    assert_eq!(lines[0]["state"], "queued");
    assert!(
        lines[1..].iter().all(|e| e["type"].is_string()),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|e| e["type"] == "task_failed"
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("out of memory"))),
        "{lines:?}"
    );
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!("error: job {id} ended failed")),
        "{err}"
    );

    // Cancelled while followed: exit 1, the error names the state.
    let follow = tokio::spawn({
        let url = url.clone();
        async move {
            natctl(
                &url,
                &[
                    "submit",
                    "--arch",
                    "enas",
                    "--dataset",
                    "digits",
                    "--follow",
                ],
            )
            .await
        }
    });
    let id = loop {
        let queued = json(&url, &["jobs", "--state", "queued", "-o", "json"]).await;
        if let Some(id) = queued[0]["job_id"].as_str() {
            break id.to_string();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let out = natctl(&url, &["cancel", &id, "--reason", "test"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = tokio::time::timeout(Duration::from_secs(60), follow)
        .await
        .expect("follow ends with the job")
        .expect("join");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stdout(&out)
            .trim_end()
            .ends_with(&format!("job {id} cancelled")),
        "{}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains(&format!("job {id} ended cancelled")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn completions_generate_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let out = std::process::Command::new(common::NATCTL)
            .args(["completions", shell])
            .output()
            .expect("run natctl");
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        for word in [
            "submit",
            "watch",
            "workers",
            "policies",
            "arch",
            "completions",
            "output",
        ] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
    }
    let out = std::process::Command::new(common::NATCTL)
        .args(["completions", "tcsh"])
        .output()
        .expect("run natctl");
    assert!(!out.status.success());
}

/// A job on a dataset no worker has stays queued, and `natctl status` says why, in the table and
/// in JSON; the shape given with `--channels/--image-size/--classes` is the job's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_says_why_a_job_waits_for_its_dataset() {
    let server = start().await;
    let url = server.url.as_str();
    // A worker that has only the digits (an empty list would mean "any dataset").
    let (_worker, _id) = common::register(
        url,
        v1::WorkerCapabilities {
            datasets: vec!["digits".into()],
            ..common::cpu_worker()
        },
    )
    .await;
    let job = json(
        url,
        &[
            "submit",
            "--arch",
            "darts-v2",
            "--dataset",
            "my-cats",
            "--channels",
            "3",
            "--image-size",
            "32",
            "--classes",
            "2",
            "--budget",
            "smoke",
            "-o",
            "json",
        ],
    )
    .await;
    let id = job["job_id"].as_str().expect("job_id").to_string();
    let status = json(url, &["status", &id, "-o", "json"]).await;
    assert_eq!(status["state"], "queued");
    assert_eq!(
        status["dataset_shape"],
        serde_json::json!({"channels": 3, "image_size": 32, "classes": 2})
    );
    let reason = status["waiting_reason"].as_str().expect("a waiting reason");
    assert!(
        reason.contains("no registered worker has dataset \"my-cats\""),
        "{reason}"
    );
    let table = stdout(&natctl(url, &["status", &id]).await);
    assert!(
        table.contains("waiting") && table.contains("my-cats"),
        "{table}"
    );
    // A partial shape names the missing field.
    let out = natctl(
        url,
        &[
            "submit",
            "--arch",
            "darts-v2",
            "--dataset",
            "my-cats",
            "--channels",
            "3",
        ],
    )
    .await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("image_size"), "{}", stderr(&out));
}
