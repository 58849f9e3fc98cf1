//! `natctl watch JOB`: follow a job's events until it ends.
//!
//! On a terminal: live progress bars (indicatif) for the tasks (done / total), the policy
//! updates of an optimize job (learning rounds done / rounds, policy version, mean reward and
//! baseline) and the best reward and accuracy so far; state changes, phases, failures and new
//! bests are printed above the bars. Off a terminal (a pipe, a file, a test) or with `--plain`:
//! one line per event, `[SEQ] what`, meant for logs and scripts:
//!
//! ```text
//! [1] job queued (created)
//! [2] phase learn
//! [9] progress 4/6 tasks
//! [10] architecture #3 done: accuracy 0.9123, params 1520, madds 20000, 0.1s
//! [14] policy v2 round 1/3: mean reward +0.0123, baseline +0.0012, entropy 3.4210, used 4, stale 0
//! [40] new best (input 0): accuracy 0.9345, reward +0.0211, genotype Genotype(normal=[…], …)
//! [41] job succeeded
//! verdict: worse — recommended: the original, because the best is less accurate on 3 seeds (…)
//! job 6f1e… succeeded
//! ```
//!
//! When an optimize job succeeds, its verdict and recommendation (one line per input, `input N:`
//! in front when there are several) come before the last line, which always names the job's
//! final state. Exit status: 0 when the job succeeded, 1
//! otherwise (the error line on stderr names the state and the reason).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::anyhow;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use nat_client::AuthChannel;
use nat_proto::v1;
use nat_proto::v1::job_service_client::JobServiceClient;

use crate::client::{get_job, state_name, status_error};
use crate::output::{emit, Output};
use crate::view::EventView;

/// What the watch has learned about the job so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Tasks finished and created.
    pub tasks_done: u32,
    pub tasks_total: u32,
    /// Latest policy version, round (1-based, rounds done) and rounds of an optimize job.
    pub policy_version: Option<u64>,
    pub rounds_done: u32,
    pub rounds: u32,
    /// Mean reward and baseline of the latest policy update.
    pub mean_reward: Option<f64>,
    pub baseline: Option<f64>,
    /// Best reward and accuracy so far.
    pub best_reward: Option<f64>,
    pub best_accuracy: Option<f64>,
    /// Current phase of an optimize job.
    pub phase: String,
    /// Latest job state and its reason.
    pub state: i32,
    pub reason: String,
}

impl Summary {
    /// Folds one event in.
    pub fn update(&mut self, ev: &v1::JobEvent) {
        use v1::job_event::Event as E;
        match &ev.event {
            Some(E::StateChanged(s)) => {
                self.state = s.state;
                self.reason = s.reason.clone();
            }
            Some(E::Progress(p)) => {
                self.tasks_total = self.tasks_total.max(p.tasks_total);
                self.tasks_done = self.tasks_done.max(p.tasks_done);
            }
            Some(E::PolicyUpdated(u)) => {
                self.policy_version = Some(u.version);
                self.rounds = u.iterations;
                self.rounds_done = self.rounds_done.max(u.iteration.saturating_add(1));
                self.mean_reward = Some(u.mean_reward);
                self.baseline = Some(u.baseline);
                for r in u.rewards.iter().copied().chain([u.mean_reward]) {
                    self.best_reward = Some(self.best_reward.map_or(r, |b| b.max(r)));
                }
            }
            Some(E::NewBest(b)) => {
                self.best_accuracy =
                    Some(self.best_accuracy.map_or(b.accuracy, |a| a.max(b.accuracy)));
                if b.reward != 0.0 {
                    self.best_reward = Some(self.best_reward.map_or(b.reward, |r| r.max(b.reward)));
                }
            }
            Some(E::TaskCompleted(t)) => {
                if let Some(r) = &t.result {
                    self.best_accuracy =
                        Some(self.best_accuracy.map_or(r.accuracy, |a| a.max(r.accuracy)));
                }
            }
            Some(E::PhaseChanged(p)) => self.phase = p.phase.clone(),
            Some(E::TaskFailed(_) | E::TaskProgress(_)) | None => {}
        }
    }

    /// The best-so-far line of the terminal view.
    fn best_line(&self) -> String {
        let mut parts = vec![format!("best reward {}", signed(self.best_reward))];
        parts.push(format!(
            "accuracy {}",
            self.best_accuracy
                .map_or("–".to_string(), |a| format!("{:.2}%", a * 100.0))
        ));
        if !self.phase.is_empty() {
            parts.push(format!("phase {}", self.phase));
        }
        parts.join(" · ")
    }

    /// The policy bar's message.
    fn policy_line(&self) -> String {
        match self.policy_version {
            None => "no update yet".to_string(),
            Some(v) => format!(
                "v{v} · mean reward {} · baseline {}",
                signed(self.mean_reward),
                signed(self.baseline)
            ),
        }
    }
}

fn signed(x: Option<f64>) -> String {
    x.map_or("–".to_string(), |v| format!("{v:+.4}"))
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// The plain line of one event (`None` for events the plain view leaves out).
pub fn line(ev: &v1::JobEvent) -> Option<String> {
    use v1::job_event::Event as E;
    let seq = ev.sequence;
    let text = match ev.event.as_ref()? {
        E::StateChanged(s) => {
            let reason = if s.reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", s.reason)
            };
            format!("job {}{reason}", state_name(s.state))
        }
        E::Progress(p) => format!("progress {}/{} tasks", p.tasks_done, p.tasks_total),
        E::TaskCompleted(t) => match &t.result {
            Some(r) => format!(
                "architecture #{} done: accuracy {:.4}, params {}, madds {}, {:.1}s",
                t.architecture_index, r.accuracy, r.params, r.madds, r.wall_seconds
            ),
            None => format!("task {} done", short(&t.task_id)),
        },
        E::TaskFailed(t) => format!(
            "task {} attempt {} failed{}: {}",
            t.task_id,
            t.attempt,
            if t.will_retry { " (will retry)" } else { "" },
            t.reason
        ),
        E::TaskProgress(p) => format!(
            "task {} {:.0}% {}",
            short(&p.task_id),
            p.fraction * 100.0,
            p.message
        )
        .trim_end()
        .to_string(),
        E::NewBest(b) => {
            let mut s = "new best".to_string();
            if !b.genotype_darts.is_empty() {
                s.push_str(&format!(" (input {})", b.input_index));
            }
            s.push_str(&format!(": accuracy {:.4}", b.accuracy));
            // An evaluate job's reward is the accuracy; an optimize job's is 0 when unknown.
            if b.reward != 0.0 && b.reward != b.accuracy {
                s.push_str(&format!(", reward {:+.4}", b.reward));
            }
            if !b.genotype_darts.is_empty() {
                s.push_str(&format!(", genotype {}", b.genotype_darts));
            }
            s
        }
        E::PolicyUpdated(u) => {
            let mut s = format!("policy v{} round {}", u.version, u.iteration + 1);
            if u.iterations > 0 {
                s.push_str(&format!("/{}", u.iterations));
            }
            s.push_str(&format!(
                ": mean reward {:+.4}, baseline {:+.4}, entropy {:.4}",
                u.mean_reward, u.baseline, u.entropy
            ));
            if let Some(loss) = u.loss {
                s.push_str(&format!(", loss {loss:.4}"));
            }
            s.push_str(&format!(
                ", used {}, stale {}",
                u.rewards_used, u.stale_dropped
            ));
            s
        }
        E::PhaseChanged(p) => format!("phase {}", p.phase),
    };
    Some(format!("[{seq}] {text}"))
}

/// The terminal view: three bars under the printed lines.
struct Bars {
    multi: MultiProgress,
    tasks: ProgressBar,
    policy: Option<ProgressBar>,
    best: ProgressBar,
}

impl Bars {
    fn new(job: &v1::Job) -> Bars {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let style = |template: &str| {
            ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
        };
        let tasks = multi.add(ProgressBar::new(u64::from(job.tasks_total)));
        tasks.set_style(
            style("{spinner} tasks   [{elapsed_precise}] {bar:40.cyan/blue} {pos}/{len} {msg}")
                .progress_chars("=> "),
        );
        tasks.enable_steady_tick(Duration::from_millis(200));
        let policy = (v1::JobKind::try_from(job.kind) == Ok(v1::JobKind::Optimize)).then(|| {
            let bar = multi.add(ProgressBar::new(0));
            bar.set_style(
                style("  policy  {bar:51.green/white} {pos}/{len} rounds · {msg}")
                    .progress_chars("=> "),
            );
            bar.set_message("no update yet");
            bar
        });
        let best = multi.add(ProgressBar::new(0));
        best.set_style(style("  {msg}"));
        Bars {
            multi,
            tasks,
            policy,
            best,
        }
    }

    fn show(&self, ev: &v1::JobEvent, s: &Summary) {
        use v1::job_event::Event as E;
        self.tasks.set_length(u64::from(s.tasks_total));
        self.tasks.set_position(u64::from(s.tasks_done));
        if let Some(p) = &self.policy {
            p.set_length(u64::from(s.rounds));
            p.set_position(u64::from(s.rounds_done));
            p.set_message(s.policy_line());
        }
        self.best.set_message(s.best_line());
        // Lines worth keeping on screen; the rest only moves the bars.
        let keep = matches!(
            ev.event,
            Some(E::StateChanged(_) | E::TaskFailed(_) | E::NewBest(_) | E::PhaseChanged(_))
        );
        if keep {
            if let Some(text) = line(ev) {
                let _ = self.multi.println(text);
            }
        }
    }

    fn finish(&self) {
        self.tasks.finish();
        if let Some(p) = &self.policy {
            p.finish();
        }
        self.best.finish();
    }
}

/// Follows job `id` until it ends. `plain` forces the one-line-per-event view on a terminal;
/// `-o json` prints each event as one JSON object a line (JSON Lines, `crate::view::EventView`),
/// `-o yaml` as one YAML document, and nothing else on stdout.
pub async fn watch(
    jobs: &mut JobServiceClient<AuthChannel>,
    id: &str,
    plain: bool,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let data = output != Output::Table;
    let job = get_job(jobs, id).await?;
    let mut stream = jobs
        .watch_job(v1::WatchJobRequest {
            job_id: id.to_string(),
            after_sequence: 0,
        })
        .await
        .map_err(|s| status_error("watch", s))?
        .into_inner();
    let bars = (!plain && !data && std::io::stdout().is_terminal()).then(|| Bars::new(&job));
    let mut summary = Summary {
        tasks_total: job.tasks_total,
        state: job.state,
        ..Summary::default()
    };
    let mut saw_final = false;
    while let Some(ev) = stream
        .message()
        .await
        .map_err(|s| status_error("watch", s))?
    {
        summary.update(&ev);
        if matches!(&ev.event, Some(v1::job_event::Event::StateChanged(s)) if is_final(s.state)) {
            saw_final = true;
        }
        match &bars {
            Some(b) => b.show(&ev, &summary),
            None if data => {
                if let Some(view) = EventView::of(&ev) {
                    output.print_item(&view, |_| None)?;
                }
            }
            None => {
                if let Some(text) = line(&ev) {
                    emit(&format!("{text}\n"))?;
                }
            }
        }
    }
    if let Some(b) = &bars {
        b.finish();
        // The finished bars stay on screen; the cursor is at the end of the last one.
        println!();
    }
    if !saw_final {
        // The stream ended without a final event (coordinator shutting down).
        let j = get_job(jobs, id).await?;
        summary.state = j.state;
        summary.reason = j.error;
    }
    let succeeded = v1::JobState::try_from(summary.state) == Ok(v1::JobState::Succeeded);
    // With -o json|yaml only events go to stdout: the end state is in the last one and in the
    // exit code.
    if !data && succeeded && v1::JobKind::try_from(job.kind) == Ok(v1::JobKind::Optimize) {
        let result = jobs
            .get_job_result(v1::GetJobResultRequest {
                job_id: id.to_string(),
            })
            .await
            .map_err(|s| status_error("result", s))?
            .into_inner();
        for l in crate::report::verdict_lines(&result) {
            emit(&format!("{l}\n"))?;
        }
    }
    if !data {
        emit(&format!("job {} {}\n", id, state_name(summary.state)))?;
    }
    if succeeded {
        return Ok(ExitCode::SUCCESS);
    }
    let reason = if summary.reason.is_empty() {
        String::new()
    } else {
        format!(": {}", summary.reason)
    };
    Err(anyhow!(
        "job {id} ended {}{reason}",
        state_name(summary.state)
    ))
}

fn is_final(state: i32) -> bool {
    matches!(
        v1::JobState::try_from(state),
        Ok(v1::JobState::Succeeded | v1::JobState::Failed | v1::JobState::Cancelled)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use v1::job_event::Event as E;

    fn ev(seq: u64, event: E) -> v1::JobEvent {
        v1::JobEvent {
            sequence: seq,
            job_id: "j".into(),
            at_unix_ms: 0,
            event: Some(event),
        }
    }

    #[test]
    fn plain_lines_of_optimize_events() {
        let u = ev(
            7,
            E::PolicyUpdated(v1::PolicyUpdated {
                version: 3,
                iteration: 1,
                iterations: 4,
                mean_reward: 0.0125,
                baseline: -0.5,
                entropy: 3.25,
                loss: None,
                rewards_used: 4,
                stale_dropped: 1,
                rewards: vec![0.1, -0.2],
            }),
        );
        assert_eq!(
            line(&u).as_deref(),
            Some("[7] policy v3 round 2/4: mean reward +0.0125, baseline -0.5000, entropy 3.2500, used 4, stale 1")
        );
        let b = ev(
            9,
            E::NewBest(v1::NewBest {
                genotype_json: "{}".into(),
                accuracy: 0.9,
                reward: 0.02,
                input_index: 1,
                genotype_darts: "Genotype(normal=[])".into(),
            }),
        );
        assert_eq!(
            line(&b).as_deref(),
            Some("[9] new best (input 1): accuracy 0.9000, reward +0.0200, genotype Genotype(normal=[])")
        );
        let p = ev(
            2,
            E::PhaseChanged(v1::PhaseChanged {
                phase: "learn".into(),
            }),
        );
        assert_eq!(line(&p).as_deref(), Some("[2] phase learn"));

        let mut s = Summary::default();
        for e in [&p, &u, &b] {
            s.update(e);
        }
        assert_eq!(s.policy_version, Some(3));
        assert_eq!((s.rounds_done, s.rounds), (2, 4));
        assert_eq!(s.best_reward, Some(0.1));
        assert_eq!(s.best_accuracy, Some(0.9));
        assert_eq!(s.phase, "learn");
        assert_eq!(
            s.best_line(),
            "best reward +0.1000 · accuracy 90.00% · phase learn"
        );
    }

    #[test]
    fn an_evaluate_best_is_its_accuracy() {
        let b = ev(
            4,
            E::NewBest(v1::NewBest {
                genotype_json: String::new(),
                accuracy: 0.5,
                reward: 0.5,
                input_index: 0,
                genotype_darts: String::new(),
            }),
        );
        assert_eq!(line(&b).as_deref(), Some("[4] new best: accuracy 0.5000"));
    }
}
