//! The figures of a run: printed as a table, written as JSON with `--json`.

use serde::{Deserialize, Serialize};

use crate::flood::FloodResult;
use crate::invariants::Check;
use crate::sim::SimCounts;

/// What a `sim-workers` subprocess writes for its parent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SideStats {
    pub counts: SimCounts,
    pub stale_task_ids: Vec<String>,
}

/// One timeline entry: what was done, when.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Seconds since the work was submitted.
    pub t: f64,
    /// Wall time (UTC, RFC 3339).
    pub wall: String,
    pub what: String,
}

/// Latency percentiles of the well-behaved simulated workers (ms).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    pub n: usize,
    pub p50: f64,
    pub p99: f64,
}

impl Percentiles {
    pub fn of(sorted: &[f64]) -> Percentiles {
        let at = |p: f64| {
            if sorted.is_empty() {
                f64::NAN
            } else {
                let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
                sorted[i.min(sorted.len() - 1)]
            }
        };
        Percentiles {
            n: sorted.len(),
            p50: at(0.5),
            p99: at(0.99),
        }
    }
}

/// The flood with the latency it caused.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FloodFigures {
    pub result: FloodResult,
    /// The flooded coordinator and its role when the flood started (`leader (epoch N)` …).
    pub target: String,
    pub target_role: String,
    /// Every simulated worker of the harness (both coordinators) …
    pub lease_before: Percentiles,
    pub lease_during: Percentiles,
    pub report_before: Percentiles,
    pub report_during: Percentiles,
    /// … and only the calls the flooded coordinator answered.
    pub target_lease_before: Percentiles,
    pub target_lease_during: Percentiles,
    pub target_report_before: Percentiles,
    pub target_report_during: Percentiles,
}

/// Every figure of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    pub command: String,
    pub quick: bool,
    pub leader_election: bool,
    pub coordinators: usize,
    /// The coordinators' --leader-lease-seconds (None: no leader election in the binary).
    pub leader_lease_seconds: Option<f64>,
    /// The coordinators' --max-streams-per-connection (None: not in the binary).
    pub max_streams_per_connection: Option<u32>,
    pub sim_workers: usize,
    pub side_sim_workers: usize,
    pub real_workers: usize,
    pub real_workers_note: String,
    pub jobs: i64,
    pub tasks: i64,
    pub tasks_done: i64,
    pub tasks_failed: i64,
    pub tasks_cancelled: i64,
    /// Tasks that needed more than one lease.
    pub tasks_rerun: i64,
    pub policy_versions: i64,
    pub rewards_consumed: i64,
    pub sim_workers_killed: usize,
    pub real_workers_killed: usize,
    pub workers_restarted: usize,
    /// kill -9 of the leader: seconds from the kill to a new epoch held by a live coordinator
    /// (without leader election: to the restarted coordinator answering /readyz).
    pub leader_kill_takeover_s: Vec<f64>,
    /// SIGSTOP of the leader: seconds from the stop to a new epoch.
    pub sigstop_takeover_s: Vec<f64>,
    /// SIGSTOP of the leader: seconds from the SIGCONT until its `/readyz` said `follower`
    /// of the new term.
    pub sigstop_step_down_s: Vec<f64>,
    /// The resumed leader's `/readyz` body once it stepped down (or the last one seen).
    pub sigstop_readyz: Vec<String>,
    pub takeover_max_s: f64,
    /// Whether the live holder of the `leadership` row knew it leads (sampled every 500 ms).
    pub leader_awareness: Option<crate::fleet::Awareness>,
    pub pg_restarts: usize,
    pub pg_restart_downtime_s: Vec<f64>,
    pub partitions: usize,
    pub partition_seconds: f64,
    /// Tasks the partitioned workers lost (lease expired) that another worker then finished.
    pub partition_tasks_rerun_elsewhere: i64,
    pub partition_stale_reports_refused: u64,
    pub clock_jumps: Vec<String>,
    pub clock_jumped_worker_tasks_done: i64,
    /// Counters of every simulated worker (in-process and subprocesses).
    pub sim: SimCounts,
    /// Lines of the PostgreSQL log that show a pooled connection handed out inside another
    /// caller's transaction: (text, count).
    pub pg_log_leaked_transaction: Vec<(String, usize)>,
    /// Real workers' log lines "result rejected by the coordinator".
    pub real_reports_rejected: usize,
    pub flood: Option<FloodFigures>,
    pub time_to_completion_s: f64,
    pub timeline: Vec<Event>,
    pub checks: Vec<Check>,
    /// Violations found by the harness itself (not SQL): takeover too slow, a probe accepted…
    pub harness_violations: Vec<String>,
}

impl Figures {
    pub fn violations(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .checks
            .iter()
            .filter(|c| !c.holds())
            .map(|c| format!("{} ({} violations)", c.name, c.violations))
            .collect();
        v.extend(self.harness_violations.iter().cloned());
        v
    }

    pub fn print(&self) {
        let row = |k: &str, v: String| println!("  {k:<44} {v}");
        let secs = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!("\n== figures");
        row("command", self.command.clone());
        row(
            "coordinators",
            format!(
                "{} (leader election: {}; leader lease {}; max streams per connection {})",
                self.coordinators,
                if self.leader_election { "yes" } else { "no" },
                self.leader_lease_seconds
                    .map_or("-".to_string(), |s| format!("{s} s")),
                self.max_streams_per_connection
                    .map_or("-".to_string(), |n| n.to_string())
            ),
        );
        row(
            "workers",
            format!(
                "{} simulated + {} simulated in partition/clock groups + {} real{}",
                self.sim_workers,
                self.side_sim_workers,
                self.real_workers,
                if self.real_workers_note.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", self.real_workers_note)
                }
            ),
        );
        row(
            "jobs / tasks",
            format!(
                "{} jobs, {} tasks: {} succeeded, {} failed, {} cancelled; {} needed more than one lease",
                self.jobs,
                self.tasks,
                self.tasks_done,
                self.tasks_failed,
                self.tasks_cancelled,
                self.tasks_rerun
            ),
        );
        row(
            "policy",
            format!(
                "{} versions, {} rewards consumed",
                self.policy_versions, self.rewards_consumed
            ),
        );
        row(
            "worker kills (kill -9)",
            format!(
                "{} simulated + {} real, {} restarted",
                self.sim_workers_killed, self.real_workers_killed, self.workers_restarted
            ),
        );
        row(
            "leader kills: takeover s",
            format!(
                "{} [{}]",
                self.leader_kill_takeover_s.len(),
                secs(&self.leader_kill_takeover_s)
            ),
        );
        row(
            "leader SIGSTOP: takeover s",
            format!(
                "{} [{}]",
                self.sigstop_takeover_s.len(),
                secs(&self.sigstop_takeover_s)
            ),
        );
        row(
            "leader SIGSTOP: SIGCONT to follower s",
            format!(
                "{} [{}]",
                self.sigstop_step_down_s.len(),
                secs(&self.sigstop_step_down_s)
            ),
        );
        for r in &self.sigstop_readyz {
            row("  its /readyz", r.clone());
        }
        row("takeover max s", format!("{:.2}", self.takeover_max_s));
        if let Some(a) = &self.leader_awareness {
            row(
                "row's holder knows it leads",
                format!(
                    "{} of {} samples did not; longest {:.1} s",
                    a.unaware_samples, a.samples, a.longest_unaware_s
                ),
            );
            row(
                "others say they lead (stale leader)",
                format!(
                    "{} samples; longest {:.1} s",
                    a.stale_leader_samples, a.longest_stale_leader_s
                ),
            );
            for e in &a.examples {
                row("  e.g.", e.clone());
            }
        }
        row(
            "PostgreSQL restarts: downtime s",
            format!(
                "{} [{}]",
                self.pg_restarts,
                secs(&self.pg_restart_downtime_s)
            ),
        );
        row(
            "partitions",
            format!(
                "{} of {:.1} s; {} lost tasks re-run elsewhere; {} stale reports refused to the partitioned side",
                self.partitions,
                self.partition_seconds,
                self.partition_tasks_rerun_elsewhere,
                self.partition_stale_reports_refused
            ),
        );
        row(
            "clock jumps",
            format!(
                "[{}]; the jumped worker(s) finished {} tasks",
                self.clock_jumps.join(", "),
                self.clock_jumped_worker_tasks_done
            ),
        );
        let s = &self.sim;
        row(
            "simulated workers saw",
            format!(
                "{} leased, {} reported, {} stale refused, {} refused otherwise, {} discarded, {} told to stop, {} retried calls, {} failovers, {} reports given up",
                s.leased,
                s.reported,
                s.stale_rejected,
                s.report_refused_other,
                s.discarded,
                s.told_to_stop,
                s.retried_calls,
                s.failovers,
                s.reports_given_up
            ),
        );
        row(
            "duplicate reports (probes)",
            format!(
                "{} sent, {} answered duplicate, {} accepted as new",
                s.duplicate_probes, s.duplicate_acked, s.duplicate_accepted
            ),
        );
        row(
            "stale-token reports (probes)",
            format!(
                "{} sent, {} refused, {} accepted",
                s.stale_probes, s.stale_probe_refused, s.stale_probe_accepted
            ),
        );
        row(
            "real workers: reports refused",
            self.real_reports_rejected.to_string(),
        );
        if let Some(f) = &self.flood {
            row(
                "flood",
                format!(
                    "to {} ({}): {} concurrent calls on one connection for {:.1} s: {} calls; {} leased+reported; bogus reports accepted {}; oversized ({} B) accepted {}; largest ListJobs answer {} B",
                    f.target,
                    f.target_role,
                    f.result.concurrency,
                    f.result.seconds,
                    f.result.calls,
                    f.result.leased_and_reported,
                    f.result.bogus_reports_accepted,
                    f.result.oversized_bytes,
                    f.result.oversized_accepted,
                    f.result.list_jobs_max_bytes
                ),
            );
            let codes: Vec<String> = f
                .result
                .codes
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            row("flood status codes", codes.join(", "));
            for (k, m) in &f.result.messages {
                row(&format!("  {k}"), m.clone());
            }
            row(
                "flood timing",
                format!(
                    "loops ran {:.1} s, then {:.1} s for the calls in flight",
                    (f.result.stopped_at_ms - f.result.started_at_ms) as f64 / 1000.0,
                    f.result.drain_seconds
                ),
            );
            if let Some(b) = &f.result.reset_burst {
                let codes: Vec<String> = b.codes.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                row(
                    "reset burst",
                    format!(
                        "{} ListJobs calls dropped after {} ms on a fresh connection: {}",
                        b.reset_calls,
                        crate::flood::RESET_AFTER.as_millis(),
                        codes.join(", ")
                    ),
                );
                for (k, m) in &b.messages {
                    row(&format!("  {k}"), m.clone());
                }
            }
            let pct = |b: &Percentiles, d: &Percentiles| {
                format!(
                    "p50 {:.1} / {:.1}, p99 {:.1} / {:.1} (n {} / {})",
                    b.p50, d.p50, b.p99, d.p99, b.n, d.n
                )
            };
            row(
                "workers' LeaseTask ms before / during",
                pct(&f.lease_before, &f.lease_during),
            );
            row(
                "workers' ReportResult ms before / during",
                pct(&f.report_before, &f.report_during),
            );
            row(
                "  answered by the flooded one: LeaseTask",
                pct(&f.target_lease_before, &f.target_lease_during),
            );
            row(
                "  answered by the flooded one: ReportResult",
                pct(&f.target_report_before, &f.target_report_during),
            );
        }
        row(
            "PostgreSQL log: leaked transactions",
            self.pg_log_leaked_transaction
                .iter()
                .map(|(k, n)| format!("\"{k}\": {n}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        row(
            "time to completion",
            format!("{:.1} s", self.time_to_completion_s),
        );
    }
}
