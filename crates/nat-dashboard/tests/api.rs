//! The dashboard's HTTP endpoints over a real SQLite store populated through the Store API.

mod common;

use common::*;
use serde_json::{json, Value};

fn f(v: &Value) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("expected a number, got {v}"))
}

#[tokio::test]
async fn jobs_list_shows_state_progress_best_and_elapsed() {
    let fx = populate().await;
    let addr = serve(fx.store.clone()).await;
    let (status, jobs) = get_json(addr, "/api/jobs").await;
    assert_eq!(status, 200);
    let jobs = jobs.as_array().expect("array");
    assert_eq!(jobs.len(), 2);
    // Newest first.
    assert_eq!(jobs[0]["id"], fx.evaluate.to_string());
    assert_eq!(jobs[0]["state"], "queued");
    assert_eq!(jobs[0]["name"], "enas-eval");
    assert_eq!(f(&jobs[0]["progress"]), 0.0);
    assert!(jobs[0]["best_accuracy"].is_null());

    let opt = &jobs[1];
    assert_eq!(opt["id"], fx.optimize.to_string());
    assert_eq!(opt["kind"], "optimize");
    assert_eq!(opt["state"], "running");
    assert_eq!(opt["dataset"], "digits");
    assert_eq!(opt["tasks"]["total"], 3);
    assert_eq!(opt["tasks"]["done"], 1);
    assert!((f(&opt["progress"]) - 1.0 / 3.0).abs() < 1e-9);
    // Best reward: the largest individual reward of the policy updates (0.021 + 0.005).
    assert!((f(&opt["best_reward"]) - 0.026).abs() < 1e-9, "{opt}");
    // Best accuracy: the new best (0.957) beats the trained task (0.912).
    assert!((f(&opt["best_accuracy"]) - 0.957).abs() < 1e-9);
    assert_eq!(opt["policy_version"], 7);
    // Created ten minutes ago and still running.
    let elapsed = f(&opt["elapsed_seconds"]);
    assert!((590.0..700.0).contains(&elapsed), "{elapsed}");

    let (_, limited) = get_json(addr, "/api/jobs?limit=1").await;
    assert_eq!(limited.as_array().map(Vec::len), Some(1));
    let (status, err) = get_json(addr, "/api/jobs?limit=lots").await;
    assert_eq!(status, 400);
    assert!(
        err["error"].as_str().is_some_and(|e| e.contains("limit")),
        "{err}"
    );
}

#[tokio::test]
async fn job_page_data_has_charts_cells_and_the_comparison() {
    let fx = populate().await;
    let addr = serve(fx.store.clone()).await;
    let (status, d) = get_json(addr, &format!("/api/jobs/{}", fx.optimize)).await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["tasks_running"], 1);

    let rewards = d["rewards"].as_array().expect("rewards");
    assert_eq!(rewards.len(), fx.rewards.len());
    for (point, r) in rewards.iter().zip(&fx.rewards) {
        assert!((f(&point["reward"]) - r).abs() < 1e-12);
        assert_eq!(point["rewards"].as_array().map(Vec::len), Some(3));
        assert!(point["baseline"].is_number());
    }
    assert_eq!(rewards[0]["policy_version"], 2);

    // Best-so-far accuracy is monotone: the trained task, then the new best.
    let acc: Vec<f64> = d["accuracy"]
        .as_array()
        .expect("accuracy")
        .iter()
        .map(|p| f(&p["accuracy"]))
        .collect();
    assert_eq!(acc, vec![0.912, 0.957]);

    assert_eq!(d["has_best"], true);
    assert_eq!(d["inputs"], 1);
    let cells = d["cells"].as_array().expect("cells");
    assert_eq!(cells.len(), 2);
    assert_eq!(cells[0]["kind"], "normal");
    assert_eq!(cells[1]["kind"], "reduce");
    // The NAT output of DARTS changes 2 normal and 3 reduce edges.
    assert_eq!(cells[0]["changes"].as_array().map(Vec::len), Some(2));
    assert_eq!(cells[1]["changes"].as_array().map(Vec::len), Some(3));
    let best_svg = cells[0]["best_svg"].as_str().expect("svg");
    assert!(best_svg.contains(r#"id="diagram-best-normal""#));
    assert_eq!(best_svg.matches(" changed\" data-from").count(), 2);
    assert!(best_svg.contains("sep3→skip"));
    let input_svg = cells[1]["input_svg"].as_str().expect("svg");
    assert!(input_svg.contains(r#"id="diagram-input-reduce""#));
    assert_eq!(input_svg.matches(" changed\" data-from").count(), 3);

    let table = d["table"].as_array().expect("table");
    let row = |m: &str| {
        table
            .iter()
            .find(|r| r["metric"].as_str().is_some_and(|x| x.starts_with(m)))
            .unwrap_or_else(|| panic!("row {m}"))
            .clone()
    };
    assert!((f(&row("accuracy")["after"]) - 0.957).abs() < 1e-12);
    // The input's accuracy comes from the train_eval task that trained it.
    assert!((f(&row("accuracy")["before"]) - 0.912).abs() < 1e-12);
    // Params and MAdds from nat-arch's cost model: the transformation removes convolutions.
    let params = row("params");
    let (before, after) = (f(&params["before"]), f(&params["after"]));
    let expected = nat_arch::network_cost(&fx.input, &nat_arch::NetworkSpec::cifar10())
        .expect("cost")
        .params() as f64;
    assert_eq!(before, expected);
    assert!(after < before, "{after} < {before}");
    assert_eq!(f(&row("edges changed")["after"]), 5.0);

    let events = d["events"].as_array().expect("events");
    assert_eq!(events[0]["kind"], "new_best", "newest first");
    assert!(events[0]["summary"]
        .as_str()
        .is_some_and(|s| s.contains("95.70%")));
    assert!(events.iter().any(|e| e["kind"] == "task_retry"
        && e["summary"]
            .as_str()
            .is_some_and(|s| s.contains("CUDA out of memory"))));
}

#[tokio::test]
async fn job_without_a_best_shows_the_input_twice_and_no_changes() {
    let fx = populate().await;
    let addr = serve(fx.store.clone()).await;
    let (status, d) = get_json(addr, &format!("/api/jobs/{}", fx.evaluate)).await;
    assert_eq!(status, 200);
    assert_eq!(d["has_best"], false);
    assert!(d["rewards"].as_array().is_some_and(Vec::is_empty));
    for cell in d["cells"].as_array().expect("cells") {
        assert!(cell["changes"].as_array().is_some_and(Vec::is_empty));
        assert!(!cell["best_svg"].as_str().expect("svg").contains("changed"));
    }
}

/// A job on a user dataset shows its shape, and why its tasks wait: no worker, then no worker
/// with the dataset, then nothing once one has it.
#[tokio::test]
async fn job_page_shows_the_dataset_shape_and_why_tasks_wait() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite:{}", dir.path().join("nat.db").display());
    let store = nat_store::connect(&url).await.expect("sqlite store");
    let g = darts();
    let job = store
        .create_job(
            nat_store::NewJob {
                kind: "evaluate".into(),
                spec: serde_json::to_value(evaluate_spec("cats", "my-cats", &[&g]))
                    .expect("spec json"),
                priority: 0,
                completion: nat_store::Completion::AllTasks,
                owner: None,
            },
            vec![train_eval(0, &g)],
            chrono::Utc::now(),
        )
        .await
        .expect("job");
    let addr = serve(store.clone()).await;
    let page = format!("/api/jobs/{}", job.id);
    let (status, d) = get_json(addr, &page).await;
    assert_eq!(status, 200);
    assert_eq!(d["job"]["dataset_shape"], "3x64x64, 2 classes");
    assert_eq!(d["waiting_reason"], "no worker is connected");
    let mut digits = caps(0, &["cpu"], None, 1);
    digits.datasets = vec!["digits".into()];
    store
        .register_worker("digits-box", digits.clone(), chrono::Utc::now())
        .await
        .expect("worker");
    let (_, d) = get_json(addr, &page).await;
    assert_eq!(
        d["waiting_reason"],
        "no registered worker has dataset \"my-cats\" (1 worker connected: digits)"
    );
    digits.datasets.push("my-cats".into());
    store
        .register_worker("cats-box", digits, chrono::Utc::now())
        .await
        .expect("worker");
    let (_, d) = get_json(addr, &page).await;
    assert!(d.get("waiting_reason").is_none(), "{}", d["waiting_reason"]);
}

#[tokio::test]
async fn bad_job_requests_name_the_field() {
    let fx = populate().await;
    let addr = serve(fx.store.clone()).await;
    let (status, err) = get_json(addr, "/api/jobs/not-a-uuid").await;
    assert_eq!(status, 400);
    assert!(
        err["error"].as_str().is_some_and(|e| e.contains("job_id")),
        "{err}"
    );
    let (status, _) = get_json(addr, &format!("/api/jobs/{}", uuid::Uuid::new_v4())).await;
    assert_eq!(status, 404);
    let (status, err) = get_json(addr, &format!("/api/jobs/{}?input=-1", fx.optimize)).await;
    assert_eq!(status, 400);
    assert!(
        err["error"].as_str().is_some_and(|e| e.contains("input")),
        "{err}"
    );
}

#[tokio::test]
async fn workers_show_health_device_current_task_and_throughput() {
    let fx = populate().await;
    let addr = serve(fx.store.clone()).await;
    let (status, workers) = get_json(addr, "/api/workers").await;
    assert_eq!(status, 200);
    let workers = workers.as_array().expect("array");
    assert_eq!(workers.len(), 2);
    let by_id = |id: nat_store::WorkerId| {
        workers
            .iter()
            .find(|w| w["id"] == id.to_string())
            .expect("worker")
            .clone()
    };
    let gpu = by_id(fx.gpu_worker);
    assert_eq!(gpu["name"], "gpu-node-1");
    assert_eq!(gpu["healthy"], true);
    assert_eq!(gpu["gpu_model"], "NVIDIA H100");
    assert_eq!(gpu["devices"][0], "cuda:0");
    let current = gpu["current_tasks"].as_array().expect("tasks");
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["job_id"], fx.optimize.to_string());
    assert!(current[0]["attempt"].as_u64().is_some_and(|a| a >= 1));
    assert_eq!(current[0]["kind"], "train_eval");
    assert_eq!(f(&current[0]["fraction"]), 0.4);
    assert_eq!(f(&gpu["images_per_second"]), 1523.5);
    assert_eq!(gpu["tasks_finished"], 1);

    let cpu = by_id(fx.cpu_worker);
    assert_eq!(cpu["state"], "lost");
    assert_eq!(cpu["healthy"], false);
    assert!(cpu["current_tasks"].as_array().is_some_and(Vec::is_empty));
    assert!(cpu["images_per_second"].is_null());
}

#[tokio::test]
async fn pages_and_assets_are_served_without_external_references() {
    let fx = populate().await;
    let addr = serve(fx.store.clone()).await;
    for (path, kind) in [
        ("/", "text/html"),
        (&*format!("/jobs/{}", fx.optimize), "text/html"),
        ("/assets/dashboard.css", "text/css"),
        ("/assets/dashboard.js", "text/javascript"),
    ] {
        let (status, head, body) = get(addr, path).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            head.contains(&format!("content-type: {kind}")),
            "{path}: {head}"
        );
        // Offline: nothing is loaded from another host.
        for line in body.lines() {
            let external = ["src=\"http", "href=\"http", "url(http", "@import"]
                .iter()
                .any(|p| line.contains(p));
            assert!(!external, "{path} references an external asset: {line}");
        }
    }
    let (status, _, _) = get(addr, "/nope").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn store_gauges_count_jobs_tasks_and_workers() {
    let fx = populate().await;
    let counts = nat_dashboard::gauges::count(fx.store.as_ref())
        .await
        .expect("count");
    let jobs: std::collections::HashMap<&str, u64> =
        counts.jobs.iter().map(|(s, n)| (s.as_str(), *n)).collect();
    assert_eq!(jobs["queued"], 1);
    assert_eq!(jobs["running"], 1);
    assert_eq!(jobs["succeeded"], 0);
    // Optimize: 1 leased + 1 ready (3 tasks, 1 done); evaluate: 1 ready.
    assert_eq!(counts.tasks_leased, 1);
    assert_eq!(counts.tasks_ready, 2);
    assert_eq!(counts.workers_active, 1);
    assert_eq!(counts.workers_lost, 1);

    // The same numbers reach the Prometheus text.
    let recorder = nat_telemetry::prometheus_builder()
        .expect("builder")
        .build_recorder();
    let handle = recorder.handle();
    let set = counts.clone();
    metrics::with_local_recorder(&recorder, move || {
        for (state, n) in &set.jobs {
            nat_telemetry::record::set_jobs(*state, *n);
        }
        nat_telemetry::record::set_tasks(nat_telemetry::TaskState::Ready, set.tasks_ready);
    });
    let text = handle.render();
    assert!(text.contains(r#"nat_jobs{state="running"} 1"#), "{text}");
    assert!(text.contains(r#"nat_tasks{state="ready"} 2"#), "{text}");
}

#[tokio::test]
async fn whole_transformation_downloads_use_nat_arch_render() {
    let fx = populate().await;
    let addr = serve(fx.store.clone()).await;
    let (status, head, svg) = get(addr, &format!("/api/jobs/{}/diagram.svg", fx.optimize)).await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: image/svg+xml"), "{head}");
    let changes = nat_arch::edge_changes(&fx.input, &fx.best).expect("same structure");
    let expected =
        nat_arch::render::diff_svg(&fx.best, &changes, &format!("job {} input 0", fx.optimize));
    assert_eq!(svg, expected);
    let (status, head, dot) = get(addr, &format!("/api/jobs/{}/diagram.dot", fx.optimize)).await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/vnd.graphviz"), "{head}");
    assert!(dot.contains("digraph"), "{dot}");
    // No best yet: the input alone.
    let (status, _, svg) = get(addr, &format!("/api/jobs/{}/diagram.svg", fx.evaluate)).await;
    assert_eq!(status, 200);
    assert!(svg.starts_with("<svg"));
    let (status, _, _) = get(
        addr,
        &format!("/api/jobs/{}/diagram.svg?input=5", fx.optimize),
    )
    .await;
    assert_eq!(status, 404);
}

async fn append(fx: &Fixture, kind: &str, payload: Value) {
    fx.store
        .append_event(fx.optimize, kind, payload, chrono::Utc::now())
        .await
        .expect("event");
}

#[tokio::test]
async fn job_api_after_a_cursor_returns_only_what_is_new() {
    let fx = populate().await;
    let addr = serve(fx.store.clone()).await;
    let path = format!("/api/jobs/{}", fx.optimize);
    let (status, full) = get_json(addr, &path).await;
    assert_eq!(status, 200, "{full}");
    assert_eq!(full["after"], 0);
    let last = full["last_seq"].as_i64().expect("last_seq");
    assert!(last > 0);
    assert_eq!(
        full["rewards"].as_array().map(Vec::len),
        Some(fx.rewards.len())
    );

    // Nothing new: empty chart increments, the same cursor, and the rest of the page complete.
    let (status, d) = get_json(addr, &format!("{path}?after={last}")).await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["after"], last);
    assert_eq!(d["last_seq"], last);
    for key in ["rewards", "accuracy", "events"] {
        assert!(d[key].as_array().is_some_and(Vec::is_empty), "{key}: {d}");
    }
    assert_eq!(d["job"]["policy_version"], 7);
    assert!((f(&d["job"]["best_accuracy"]) - 0.957).abs() < 1e-12);
    assert_eq!(d["has_best"], true);
    assert_eq!(d["cells"].as_array().map(Vec::len), Some(2));
    assert_eq!(d["table"], full["table"]);

    // Two new events: one more policy update and a better transformation.
    append(
        &fx,
        "policy_update",
        json!({"policy_version": 8, "baseline": 0.002, "mean_reward": 0.03,
               "rewards": [0.03], "samples_used": 1, "samples_stale": 0}),
    )
    .await;
    append(
        &fx,
        "new_best",
        json!({"input_index": 0, "genotype": fx.best.to_json_value(), "accuracy": 0.97,
               "reward": 0.035}),
    )
    .await;
    let (_, d) = get_json(addr, &format!("{path}?after={last}")).await;
    assert_eq!(d["last_seq"], last + 2);
    let rewards = d["rewards"].as_array().expect("rewards");
    assert_eq!(rewards.len(), 1, "{d}");
    assert_eq!(rewards[0]["policy_version"], 8);
    assert_eq!(rewards[0]["seq"], last + 1);
    let acc: Vec<f64> = d["accuracy"]
        .as_array()
        .expect("accuracy")
        .iter()
        .map(|p| f(&p["accuracy"]))
        .collect();
    assert_eq!(acc, vec![0.97]);
    let events = d["events"].as_array().expect("events");
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["kind"], "new_best", "newest first");
    assert_eq!(events[0]["seq"], last + 2);
    // The job row folds in everything, old and new.
    assert_eq!(d["job"]["policy_version"], 8);
    assert!((f(&d["job"]["best_reward"]) - 0.035).abs() < 1e-12);
    assert!((f(&d["job"]["best_accuracy"]) - 0.97).abs() < 1e-12);

    // Another page (no cursor) gets the whole history; a cursor in the middle gets the rest.
    let (_, all) = get_json(addr, &path).await;
    assert_eq!(
        all["rewards"].as_array().map(Vec::len),
        Some(fx.rewards.len() + 1)
    );
    let acc: Vec<f64> = all["accuracy"]
        .as_array()
        .expect("accuracy")
        .iter()
        .map(|p| f(&p["accuracy"]))
        .collect();
    assert_eq!(acc, vec![0.912, 0.957, 0.97]);
    let mid = all["rewards"][2]["seq"].as_i64().expect("seq");
    let (_, rest) = get_json(addr, &format!("{path}?after={mid}")).await;
    let versions: Vec<i64> = rest["rewards"]
        .as_array()
        .expect("rewards")
        .iter()
        .filter_map(|p| p["policy_version"].as_i64())
        .collect();
    assert_eq!(versions, vec![5, 6, 7, 8]);

    // A bad cursor names the parameter.
    for bad in ["-1", "soon"] {
        let (status, err) = get_json(addr, &format!("{path}?after={bad}")).await;
        assert_eq!(status, 400);
        assert!(
            err["error"].as_str().is_some_and(|e| e.contains("after")),
            "{err}"
        );
    }
}

/// The digest kept between requests, brought up to date with only the new events, says what a
/// fresh read of the whole log says.
#[tokio::test]
async fn cached_digest_matches_a_fresh_read() {
    let fx = populate().await;
    let cache = nat_dashboard::cache::EventCache::new(4);
    let store = fx.store.as_ref();
    let first = nat_dashboard::model::job_detail_with(store, Some(&cache), fx.optimize, 0, 0)
        .await
        .expect("detail");
    assert_eq!(cache.len(), 1);
    for v in 8..20 {
        append(
            &fx,
            "policy_update",
            json!({"policy_version": v, "baseline": 0.001 * v as f64, "mean_reward": 0.01,
                   "rewards": [0.01, 0.05 + v as f64 / 1000.0], "samples_used": 2,
                   "samples_stale": 0}),
        )
        .await;
    }
    let cached = nat_dashboard::model::job_detail_with(store, Some(&cache), fx.optimize, 0, 0)
        .await
        .expect("cached");
    let fresh = nat_dashboard::model::job_detail(store, fx.optimize, 0)
        .await
        .expect("fresh");
    assert!(cached.last_seq > first.last_seq);
    assert_eq!(cached.last_seq, fresh.last_seq);
    let json = |d: &nat_dashboard::model::JobDetail| {
        let mut v = serde_json::to_value(d).expect("json");
        // Elapsed time moves between the two reads.
        v["job"]["elapsed_seconds"] = Value::Null;
        v
    };
    assert_eq!(json(&cached), json(&fresh));
    assert_eq!(cached.rewards.len(), fx.rewards.len() + 12);

    // A task finishes: the table's trained accuracies are read again, not served stale.
    let caps = caps(1, &["cuda:1"], Some("test"), 1);
    let now = chrono::Utc::now();
    let w = fx
        .store
        .register_worker("late", caps.clone(), now)
        .await
        .expect("worker");
    let mut reported = false;
    while let Some(lease) = fx
        .store
        .lease_task(w.id, &caps, now, std::time::Duration::from_secs(600))
        .await
        .expect("lease")
    {
        if lease.task.job_id != fx.optimize {
            continue;
        }
        fx.store
            .report_result(
                lease.task.id,
                lease.token,
                w.id,
                nat_store::Outcome::Succeeded {
                    result: train_eval_result(2, w.id, 0.999, 1000.0),
                    rewards: vec![],
                    sample_rewards: vec![],
                },
                now,
            )
            .await
            .expect("report");
        reported = true;
        break;
    }
    assert!(reported, "the optimize job had a ready task");
    let cached = nat_dashboard::model::job_detail_with(store, Some(&cache), fx.optimize, 0, 0)
        .await
        .expect("cached");
    let fresh = nat_dashboard::model::job_detail(store, fx.optimize, 0)
        .await
        .expect("fresh");
    assert_eq!(json(&cached), json(&fresh));
    let after = cached
        .table
        .iter()
        .find(|r| r.metric == "accuracy")
        .and_then(|r| r.after);
    assert_eq!(
        after,
        Some(0.957),
        "the new best's accuracy still leads the table"
    );
}

/// A stored document that does not have nat-schema's shape is an error naming the field: the
/// event's line says so, the job page answers the error, the jobs list shows it on the row.
#[tokio::test]
async fn undecodable_documents_are_errors_naming_the_field() {
    let fx = populate().await;
    let addr = serve(fx.store.clone()).await;
    let path = format!("/api/jobs/{}", fx.optimize);

    // An event whose payload does not fit: shown as undecodable, left out of the charts.
    append(
        &fx,
        "policy_update",
        json!({"policy_version": "nine", "mean_reward": 0.5}),
    )
    .await;
    append(
        &fx,
        "new_best",
        json!({"input_index": 0, "genotype": "not a genotype", "accuracy": 0.99}),
    )
    .await;
    let (status, d) = get_json(addr, &path).await;
    assert_eq!(status, 200, "{d}");
    let events = d["events"].as_array().expect("events");
    let summary = |i: usize| {
        events[i]["summary"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(events[0]["kind"], "new_best");
    assert!(
        summary(0).starts_with("undecodable: new_best event: field `genotype`"),
        "{}",
        summary(0)
    );
    assert_eq!(events[1]["kind"], "policy_update");
    assert!(
        summary(1).starts_with("undecodable: policy_update event: field `policy_version`"),
        "{}",
        summary(1)
    );
    assert_eq!(
        d["rewards"].as_array().map(Vec::len),
        Some(fx.rewards.len())
    );
    assert_eq!(d["job"]["policy_version"], 7);
    assert!((f(&d["job"]["best_accuracy"]) - 0.957).abs() < 1e-12);
    assert!(d["job"].get("document_error").is_none(), "{d}");

    // A job whose spec does not fit: the job page is an error naming the field; the list
    // shows the row with the error.
    let bad = fx
        .store
        .create_job(
            nat_store::NewJob {
                kind: "evaluate".into(),
                spec: json!({"name": "broken", "dataset": "digits", "seed": "one"}),
                priority: 0,
                completion: nat_store::Completion::Manual,
                owner: None,
            },
            vec![],
            chrono::Utc::now(),
        )
        .await
        .expect("job");
    let (status, err) = get_json(addr, &format!("/api/jobs/{}", bad.id)).await;
    assert_eq!(status, 500, "{err}");
    let message = err["error"].as_str().expect("message");
    assert!(
        message.contains(&bad.id.to_string()) && message.contains("field `seed`"),
        "{message}"
    );
    let (status, jobs) = get_json(addr, "/api/jobs").await;
    assert_eq!(status, 200);
    let row = jobs
        .as_array()
        .expect("array")
        .iter()
        .find(|j| j["id"] == bad.id.to_string())
        .expect("row")
        .clone();
    assert!(
        row["document_error"]
            .as_str()
            .is_some_and(|e| e.contains("evaluate job spec") && e.contains("seed")),
        "{row}"
    );
    assert_eq!(row["name"], "");
    // The other rows are unaffected.
    assert!(jobs
        .as_array()
        .expect("array")
        .iter()
        .filter(|j| j["id"] != bad.id.to_string())
        .all(|j| j.get("document_error").is_none()));
}

#[tokio::test]
async fn a_finished_optimize_job_shows_the_verdict_final_evaluation_and_learning() {
    let fx = populate().await;
    let addr = serve(fx.store.clone()).await;
    let path = format!("/api/jobs/{}", fx.optimize);
    // While the job runs there is no answer yet.
    let (status, d) = get_json(addr, &path).await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["answer"], Value::Null);
    assert_eq!(d["learning"], Value::Null);

    fx.store
        .set_job_result(
            fx.optimize,
            finished_result(&fx.input, &fx.best),
            chrono::Utc::now(),
        )
        .await
        .expect("result");
    let (status, d) = get_json(addr, &path).await;
    assert_eq!(status, 200, "{d}");
    let a = &d["answer"];
    assert_eq!(a["verdict"], "worse");
    assert_eq!(a["recommended"]["from"], "original");
    assert_eq!(a["final"]["seeds"], json!([101, 102, 103]));
    assert_eq!(
        a["final"]["best"]["accuracies"],
        json!([0.901, 0.897, 0.906])
    );
    assert!(a["final"]["paired_difference"]["ci_high"]
        .as_f64()
        .is_some_and(|h| h < 0.0));
    assert_eq!(a["control"]["verdict"], "no_difference");
    let html = a["html"].as_str().expect("html");
    for expected in [
        r#"data-verdict="worse""#,
        r#"<p id="recommendation" class="recommendation" data-from="original">recommended: the original, because the best is less accurate on 3 seeds"#,
        r#"<table id="final-table""#,
        r#"<td class="num best">90.10%</td>"#,
        r#"<td class="num original">91.17% ± 0.65</td>"#,
        "Paired difference, best − original: <strong>-1.03 pt, 95 % interval [-1.55, -0.52] pt (paired_t)</strong>",
        r#"<div id="control" class="control" data-verdict="no_difference">"#,
    ] {
        assert!(html.contains(expected), "{expected}\nmissing from\n{html}");
    }
    let l = &d["learning"];
    assert_eq!(l["policy_versions"], 6);
    assert_eq!(l["curve"].as_array().map(Vec::len), Some(6));
    assert_eq!(l["curve"][1]["entropy"], Value::Null);
    let svg = l["curve_svg"].as_str().expect("svg");
    assert!(svg.contains(r#"id="learning-chart""#), "{svg}");
    assert!(
        svg.contains(r#"class="series reward-ma""#) && svg.contains(r#"class="series entropy""#)
    );
    let facts = l["html"].as_str().expect("html");
    assert!(
        facts.contains("<div><dt>p(identity)</dt><dd>0.0123 → 0.0087</dd></div>"),
        "{facts}"
    );
    // The before/after table takes the final evaluation's means.
    let table = d["table"].as_array().expect("table");
    assert!(
        (f(&table[0]["before"]) - 0.911_666_666).abs() < 1e-6,
        "{}",
        table[0]
    );
    assert!(
        (f(&table[0]["after"]) - 0.901_333_333).abs() < 1e-6,
        "{}",
        table[0]
    );
    // Another input of the job has no answer.
    let (status, d) = get_json(addr, &format!("{path}?input=1")).await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["answer"], Value::Null);
}
