//! Opens the job page of a running job in a real headless Chromium (Debian's `chromium`,
//! installed by `scripts/ensure-chromium.sh`), checks that the reward chart and both cell
//! diagrams are in the DOM after the script ran, and saves a screenshot under the test's output
//! directory (`$CARGO_TARGET_TMPDIR/nat-dashboard/job.png`, `index.png` of the front page, and
//! `answer.png` of the job page once the job has its verdict, final evaluation and learning curve).
//!
//! If Chromium cannot be installed or started, the test fails with the reason.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn chromium() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/ensure-chromium.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "Chromium is required for this test and could not be installed by {}:\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!path.is_empty(), "ensure-chromium.sh printed no path");
    PathBuf::from(path)
}

/// Runs headless Chromium on `url` with `extra` arguments (with a hard timeout) and returns stdout.
fn run_chromium(binary: &Path, profile: &Path, url: &str, extra: &[String]) -> String {
    let mut cmd = Command::new("timeout");
    cmd.arg("120")
        .arg(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--virtual-time-budget=8000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
    assert!(
        out.status.success(),
        "chromium exited with {}:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn in_blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

fn job_url(addr: SocketAddr, job: nat_store::JobId) -> String {
    format!("http://{addr}/jobs/{job}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_page_renders_chart_and_cell_diagrams_in_chromium() {
    let binary = in_blocking(chromium).await;
    let fx = populate().await;
    let addr = serve(fx.store.clone()).await;
    let url = job_url(addr, fx.optimize);
    let profile = tempfile::tempdir().expect("profile dir");

    let dom = {
        let (binary, profile, url) = (binary.clone(), profile.path().to_path_buf(), url.clone());
        in_blocking(move || run_chromium(&binary, &profile, &url, &["--dump-dom".into()])).await
    };

    // The script ran: the title, tiles and tables are filled from /api/jobs/{id}.
    assert!(dom.contains("darts-nat"), "job name missing:\n{dom}");
    assert!(
        !dom.contains("refresh failed"),
        "the page reported an error:\n{dom}"
    );
    // The reward chart, drawn by dashboard.js, with the mean-reward and baseline lines.
    assert!(
        dom.contains(r#"id="reward-chart""#),
        "reward chart missing:\n{dom}"
    );
    let chart = &dom[dom.find(r#"id="reward-chart""#).unwrap_or(0)..];
    assert!(
        chart.contains(r#"class="series reward""#),
        "reward line missing"
    );
    assert!(
        chart.contains(r#"class="series baseline""#),
        "baseline line missing"
    );
    assert!(
        chart.contains(r#"class="dot reward""#),
        "reward dots missing"
    );
    assert!(dom.contains(r#"id="accuracy-chart""#));
    // Both cells, input and best, with the changed edges highlighted.
    for id in [
        "diagram-input-normal",
        "diagram-best-normal",
        "diagram-input-reduce",
        "diagram-best-reduce",
    ] {
        assert!(dom.contains(&format!(r#"id="{id}""#)), "{id} missing");
    }
    assert_eq!(
        dom.matches(r#"class="edge-label changed""#).count(),
        10,
        "5 changed edges, labelled in the input and in the best cells"
    );
    // The before/after table and the event log.
    assert!(dom.contains("95.70%"));
    assert!(dom.contains("CUDA out of memory"));
    // The page refreshed with `?after=<cursor>` (only new events) and kept what it had: the
    // charts and the event log above were drawn after the last of these refreshes.
    let attr = |name: &str| -> Option<i64> {
        let at = dom.find(&format!("{name}=\""))? + name.len() + 2;
        dom[at..].split('"').next()?.parse().ok()
    };
    let last_seq = fx
        .store
        .events_after(fx.optimize, 0, 1000)
        .await
        .expect("events")
        .last()
        .map(|e| e.seq);
    assert_eq!(
        attr("data-cursor"),
        last_seq,
        "the page's cursor is the last event"
    );
    assert!(
        attr("data-refreshes").is_some_and(|n| n >= 2),
        "the page refreshed incrementally at least once: {:?}",
        attr("data-refreshes")
    );

    // A screenshot for people (and for the review of this test).
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("nat-dashboard");
    std::fs::create_dir_all(&out_dir).expect("output dir");
    let png = out_dir.join("job.png");
    let _ = std::fs::remove_file(&png);
    {
        let (binary, profile, url, png) = (
            binary.clone(),
            profile.path().to_path_buf(),
            url.clone(),
            png.clone(),
        );
        in_blocking(move || {
            run_chromium(
                &binary,
                &profile,
                &url,
                &[
                    format!("--screenshot={}", png.display()),
                    "--window-size=1440,1900".into(),
                ],
            )
        })
        .await;
    }
    let bytes =
        std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", png.display()));
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        bytes.len() > 20_000,
        "screenshot suspiciously small: {} bytes",
        bytes.len()
    );
    eprintln!("screenshot: {}", png.display());

    // The front page lists the job and the workers.
    let index = {
        let (binary, profile) = (binary.clone(), profile.path().to_path_buf());
        let url = format!("http://{addr}/");
        in_blocking(move || run_chromium(&binary, &profile, &url, &["--dump-dom".into()])).await
    };
    assert!(
        index.contains(&format!(r#"data-job="{}""#, fx.optimize)),
        "{index}"
    );
    assert!(index.contains("gpu-node-1") && index.contains("NVIDIA H100"));
    let index_png = out_dir.join("index.png");
    let _ = std::fs::remove_file(&index_png);
    {
        let (binary, profile, png) = (
            binary.clone(),
            profile.path().to_path_buf(),
            index_png.clone(),
        );
        let url = format!("http://{addr}/");
        in_blocking(move || {
            run_chromium(
                &binary,
                &profile,
                &url,
                &[
                    format!("--screenshot={}", png.display()),
                    "--window-size=1440,900".into(),
                ],
            )
        })
        .await;
    }
    let bytes = std::fs::read(&index_png).expect("index screenshot");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    eprintln!("screenshot: {}", index_png.display());

    // Once the job is done: NAT's answer (verdict, recommendation, final evaluation, control)
    // and the learning curve, above the charts.
    fx.store
        .set_job_result(
            fx.optimize,
            finished_result(&fx.input, &fx.best),
            chrono::Utc::now(),
        )
        .await
        .expect("result");
    let dom = {
        let (binary, profile, url) = (binary.clone(), profile.path().to_path_buf(), url.clone());
        in_blocking(move || run_chromium(&binary, &profile, &url, &["--dump-dom".into()])).await
    };
    assert!(!dom.contains("refresh failed"), "{dom}");
    assert!(
        dom.contains(r#"<section class="card answer" id="answer-card">"#),
        "the answer card is shown:\n{dom}"
    );
    for needle in [
        r#"data-verdict="worse""#,
        "recommended: the original, because the best is less accurate on 3 seeds",
        r#"id="final-table""#,
        "91.17% ± 0.65",
        "Paired difference, best − original",
        r#"id="control""#,
        r#"id="learning-chart""#,
        r#"class="series entropy""#,
        r#"id="learning-facts""#,
    ] {
        assert!(dom.contains(needle), "{needle} missing:\n{dom}");
    }
    let answer_png = out_dir.join("answer.png");
    let _ = std::fs::remove_file(&answer_png);
    {
        let (binary, profile, png) = (
            binary.clone(),
            profile.path().to_path_buf(),
            answer_png.clone(),
        );
        in_blocking(move || {
            run_chromium(
                &binary,
                &profile,
                &url,
                &[
                    format!("--screenshot={}", png.display()),
                    "--window-size=1440,1500".into(),
                ],
            )
        })
        .await;
    }
    let bytes = std::fs::read(&answer_png).expect("answer screenshot");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    eprintln!("screenshot: {}", answer_png.display());
}
