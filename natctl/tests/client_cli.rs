//! natctl against a real coordinator (in-process, port 0, SQLite) over gRPC.

mod common;

use std::time::Duration;

use common::{drain_tasks, natctl, start, stderr, stdout};
use nat_proto::v1;
use nat_proto::v1::worker_service_client::WorkerServiceClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_watch_result_from_a_job_file() {
    let server = start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let genotype = dir.path().join("g.json");
    std::fs::write(
        &genotype,
        nat_arch::parse_any("enas")
            .expect("preset")
            .to_json_pretty(),
    )
    .expect("write");
    let job_file = dir.path().join("job.yaml");
    std::fs::write(
        &job_file,
        format!(
            "kind: evaluate\nname: cli-test\ndataset: digits\narchitectures:\n  - darts-v2\n  - {}\nbudget:\n  preset: smoke\n  epochs: 2\nseed: 5\n",
            genotype.display()
        ),
    )
    .expect("write");
    let out = natctl(&server.url, &["submit", "-f", &job_file.to_string_lossy()]).await;
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    let job_id = text.lines().last().expect("a line").trim().to_string();
    assert_eq!(job_id.len(), 36, "the job id is the last line: {text:?}");

    let status = natctl(&server.url, &["status", &job_id]).await;
    assert!(stdout(&status).contains("state:     queued"), "{status:?}");
    let jobs = natctl(&server.url, &["jobs"]).await;
    assert!(stdout(&jobs).contains(&job_id));
    assert!(stdout(&jobs).contains("cli-test"));

    drain_tasks(&server.url, 2).await;

    // watch replays the log and exits 0 for a succeeded job; one line per event off a terminal.
    let watch = natctl(&server.url, &["watch", &job_id]).await;
    assert!(watch.status.success(), "{watch:?}");
    let w = stdout(&watch);
    assert!(w.contains("architecture #0 done"), "{w}");
    assert!(w.contains("new best"), "{w}");
    assert!(w.trim_end().ends_with("succeeded"), "{w}");

    let result = natctl(&server.url, &["result", &job_id, "--json"]).await;
    assert!(result.status.success(), "{result:?}");
    let v: serde_json::Value = serde_json::from_slice(&result.stdout).expect("JSON");
    assert_eq!(v["state"], "succeeded");
    let archs = v["architectures"].as_array().expect("architectures");
    assert_eq!(archs.len(), 2);
    let darts_v2 = nat_arch::parse_any("darts-v2")
        .expect("preset")
        .to_darts_string();
    assert_eq!(archs[0]["genotype"], darts_v2.as_str());
    for a in archs {
        assert!(a["accuracy"].as_f64().is_some_and(|x| x >= 0.5));
        assert!(a["params"].as_u64().is_some_and(|x| x >= 1000));
        assert!(a["madds"].as_u64().is_some());
    }
    let table = natctl(&server.url, &["result", &job_id]).await;
    assert!(stdout(&table).contains("succeeded"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_one_clear_line() {
    let server = start().await;
    // Rejected by the coordinator, naming the field.
    let out = natctl(
        &server.url,
        &[
            "submit",
            "--arch",
            "darts-v2",
            "--arch",
            "bogus",
            "--dataset",
            "digits",
        ],
    )
    .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("architectures[1]"), "{err}");
    assert!(
        err.contains("(INVALID_ARGUMENT)"),
        "canonical code name: {err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    // Optimize settings are checked before anything is sent, naming the key.
    for (flags, says) in [
        (
            &["--kind", "optimize", "--final-seeds", "40"][..],
            "error: optimize.final_seeds: ",
        ),
        (
            &["--kind", "optimize", "--max-cost-ratio", "0.5"][..],
            "error: optimize.max_cost_ratio: ",
        ),
        (
            &["--kind", "optimize", "--control", "placebo"][..],
            "error: optimize.control: ",
        ),
        (&["--control", "random"][..], "only apply to optimize jobs"),
    ] {
        let mut args = vec!["submit", "--arch", "darts-v2", "--dataset", "digits"];
        args.extend_from_slice(flags);
        let out = natctl("http://127.0.0.1:1", &args).await;
        assert!(!out.status.success(), "{flags:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{flags:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    // Unknown job id.
    let out = natctl(
        &server.url,
        &["status", "00000000-0000-0000-0000-000000000000"],
    )
    .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    // No coordinator there.
    let out = natctl("http://127.0.0.1:1", &["jobs"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
    // Cancel, then cancel again: wrong state.
    let out = natctl(
        &server.url,
        &[
            "submit",
            "--arch",
            "darts-v2",
            "--dataset",
            "digits",
            "--budget",
            "smoke",
        ],
    )
    .await;
    let id = stdout(&out).lines().last().expect("id").trim().to_string();
    let out = natctl(&server.url, &["cancel", &id]).await;
    assert!(stdout(&out).contains("cancelled"), "{out:?}");
    let out = natctl(&server.url, &["cancel", &id]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("(FAILED_PRECONDITION)"));
    // `jobs --state` filters on the server.
    let out = natctl(&server.url, &["jobs", "--state", "cancelled"]).await;
    assert!(stdout(&out).contains(&id), "{out:?}");
    let out = natctl(
        &server.url,
        &["jobs", "--state", "running", "--state", "queued"],
    )
    .await;
    assert!(out.status.success());
    assert!(!stdout(&out).contains(&id), "{out:?}");
    let out = natctl(&server.url, &["jobs", "--state", "done"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: --state: unknown job state"),
        "{err}"
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// Leases and reports tasks of the coordinator until job `job_id` is final: accuracy derived
/// from the trained genotype, so different architectures get different accuracies.
async fn work_until_final(url: &str, job_id: &str) -> usize {
    let channel = tonic::transport::Channel::from_shared(url.to_string())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut w = WorkerServiceClient::new(channel.clone());
    let mut jobs = v1::job_service_client::JobServiceClient::new(channel);
    let id = w
        .register_worker(v1::RegisterWorkerRequest {
            name: "scripted".into(),
            capabilities: Some(v1::WorkerCapabilities {
                devices: vec![],
                cpu_cores: 1,
                slots: 1,
                version: "test".into(),
                hostname: "h".into(),
                datasets: vec![],
                ..Default::default()
            }),
        })
        .await
        .expect("register")
        .into_inner()
        .worker_id;
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let mut answered = 0;
    while std::time::Instant::now() < deadline {
        let task = w
            .lease_task(v1::LeaseTaskRequest {
                worker_id: id.clone(),
                wait_ms: 200,
                device: None,
                slot: 0,
            })
            .await
            .expect("lease")
            .into_inner()
            .task;
        let Some(task) = task else {
            let state = jobs
                .get_job(v1::GetJobRequest {
                    job_id: job_id.to_string(),
                })
                .await
                .expect("job")
                .into_inner()
                .job
                .expect("job")
                .state;
            if state != v1::JobState::Queued as i32 && state != v1::JobState::Running as i32 {
                return answered;
            }
            continue;
        };
        let Some(v1::task::Payload::TrainEval(te)) = &task.payload else {
            panic!("a train_eval task expected");
        };
        let h = te
            .genotype_json
            .bytes()
            .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        w.report_result(v1::ReportResultRequest {
            worker_id: id.clone(),
            task_id: task.task_id.clone(),
            lease_token: task.lease_token,
            outcome: Some(v1::report_result_request::Outcome::TrainEval(
                v1::TrainEvalResult {
                    accuracy: 0.5 + (h % 400) as f64 / 1000.0,
                    loss: 1.0,
                    params: 1000 + h % 1000,
                    madds: 20_000,
                    wall_seconds: 0.1,
                    images_per_second: 100.0,
                },
            )),
        })
        .await
        .expect("report");
        answered += 1;
    }
    panic!("job {job_id} did not finish within 180 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_an_optimize_job_line_by_line() {
    let server = start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let job_file = dir.path().join("optimize.yaml");
    std::fs::write(
        &job_file,
        "kind: optimize\nname: watch-cli\ndataset: digits\narchitectures: [darts-v2]\nbudget: {preset: smoke}\nseed: 2\noptimize:\n  space: nat\n  reward: proxy\n  iterations: 2\n  samples_per_iteration: 2\n  derive_samples: 3\n  derive_argmax: false\n  random_inputs: false\n",
    )
    .expect("write");
    let out = natctl(&server.url, &["submit", "-f", &job_file.to_string_lossy()]).await;
    assert!(out.status.success(), "{out:?}");
    let job_id = stdout(&out).lines().last().expect("id").trim().to_string();

    // Watch live while a scripted worker runs the job; stdout is a pipe: one line per event.
    let watch = tokio::spawn({
        let url = server.url.clone();
        let job_id = job_id.clone();
        async move { natctl(&url, &["watch", &job_id]).await }
    });
    let answered = work_until_final(&server.url, &job_id).await;
    assert!(answered >= 2);
    let watch = tokio::time::timeout(Duration::from_secs(60), watch)
        .await
        .expect("watch ends with the job")
        .expect("join");
    assert!(watch.status.success(), "{watch:?}");
    let text = stdout(&watch);
    let lines: Vec<&str> = text.lines().collect();
    // One `[SEQ] …` line per event, then the verdict lines, then the final state.
    let events_end = lines
        .iter()
        .position(|l| !l.starts_with('['))
        .unwrap_or(lines.len());
    assert!(
        lines[events_end..lines.len() - 1]
            .iter()
            .all(|l| l.starts_with("verdict: ")),
        "one `[SEQ] …` line per event, then the verdict:\n{text}"
    );
    // The verdict watch printed is the result's.
    let result = natctl(&server.url, &["result", &job_id, "--json"]).await;
    assert!(result.status.success(), "{result:?}");
    let v: serde_json::Value = serde_json::from_slice(&result.stdout).expect("JSON");
    let verdict = v["verdict"]
        .as_str()
        .unwrap_or_else(|| panic!("a verdict: {v}"));
    assert!(
        lines[events_end..]
            .iter()
            .any(|l| l.starts_with(&format!("verdict: {verdict} — recommended: "))),
        "{text}"
    );
    assert!(v["recommended"]["reason"].is_string(), "{v}");
    assert_eq!(v["final"]["seeds"].as_array().map(Vec::len), Some(3), "{v}");
    assert_eq!(v["final"]["paired_difference"]["method"], "paired_t", "{v}");
    assert!(v["learning"]["curve"].is_array(), "{v}");
    let table = stdout(&natctl(&server.url, &["result", &job_id]).await);
    assert!(table.contains(&format!("VERDICT: {verdict}")), "{table}");
    assert!(table.contains("mean ± std"), "{table}");
    assert!(
        table.contains("paired difference, best − original: "),
        "{table}"
    );
    for phase in ["learn", "derive", "final"] {
        assert!(
            lines
                .iter()
                .any(|l| l.ends_with(&format!("] phase {phase}"))),
            "{phase}:\n{text}"
        );
    }
    let updates: Vec<u64> = lines
        .iter()
        .filter_map(|l| l.split("] policy v").nth(1))
        .map(|rest| {
            rest.split(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .expect("a version")
        })
        .collect();
    assert!(!updates.is_empty(), "policy updates:\n{text}");
    assert!(updates.windows(2).all(|w| w[1] > w[0]), "{updates:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("] policy v") && l.contains("round 2/2")),
        "the last round of 2:\n{text}"
    );
    let best = lines
        .iter()
        .find(|l| l.contains("] new best (input 0): accuracy "))
        .unwrap_or_else(|| panic!("new best:\n{text}"));
    let darts = best.split(", genotype ").nth(1).expect("genotype");
    nat_arch::parse_any(darts).expect("the best's DARTS string parses");
    assert_eq!(
        lines.last().copied(),
        Some(format!("job {job_id} succeeded").as_str())
    );

    // A cancelled job: non-zero exit, and the error names the state.
    let out = natctl(
        &server.url,
        &["submit", "--arch", "darts-v2", "--dataset", "digits"],
    )
    .await;
    let id = stdout(&out).lines().last().expect("id").trim().to_string();
    let out = natctl(&server.url, &["cancel", &id, "--reason", "test"]).await;
    assert!(out.status.success(), "{out:?}");
    let watch = natctl(&server.url, &["watch", &id]).await;
    assert!(!watch.status.success(), "{watch:?}");
    assert!(
        stdout(&watch).trim_end().ends_with("cancelled"),
        "{watch:?}"
    );
    let err = String::from_utf8_lossy(&watch.stderr);
    assert!(err.contains(&format!("job {id} ended cancelled")), "{err}");
}

/// `--coordinator URL1,URL2` (and `NAT_COORDINATOR`): a URL that does not answer is skipped,
/// each command connects to the first that does; bad lists fail naming the flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_coordinator_urls_fail_over_in_order() {
    let server = start().await;
    // Port 1 on loopback refuses connections: the live coordinator comes second.
    let urls = format!("http://127.0.0.1:1, {}", server.url);
    let out = natctl(
        &urls,
        &["submit", "--arch", "darts-v2", "--dataset", "digits"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let job_id = text.lines().last().expect("a line").trim().to_string();
    assert_eq!(job_id.len(), 36, "the job id is the last line: {text:?}");
    // The flag takes the same list, and overrides the environment.
    let flag = format!("--coordinator=http://127.0.0.1:1,{}", server.url);
    let out = natctl("http://127.0.0.1:2", &[&flag, "status", &job_id]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&job_id), "{}", stdout(&out));

    // None answers: one line naming every URL tried.
    let out = natctl("http://127.0.0.1:1,http://127.0.0.1:2", &["jobs"]).await;
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("cannot connect to any coordinator"), "{err}");
    assert!(
        err.contains("127.0.0.1:1") && err.contains("127.0.0.1:2"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    // A bad URL anywhere in the list is refused before anything is tried.
    for bad in [
        format!("{},not a url", server.url),
        format!("{},", server.url),
    ] {
        let out = natctl(&bad, &["jobs"]).await;
        assert!(!out.status.success(), "{bad}");
        let err = stderr(&out);
        assert!(err.contains("--coordinator"), "{bad}: {err}");
    }
}
