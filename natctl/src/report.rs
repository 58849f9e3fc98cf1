//! The human form of an optimize job's answer (`natctl result JOB`, the end of `natctl watch`):
//! per input the verdict, the recommendation with its reason, the final evaluation (per-seed
//! accuracies of the original, NAT's best candidate and the control, mean ± std, the paired
//! difference with its 95 % interval, params and multiply-adds) and whether the policy learned.

use std::fmt::Write as _;

use nat_proto::v1;

use crate::output::{render, table};
use crate::policy::finite;

/// An accuracy in [0, 1] as percent with two decimals (`–` when unknown).
fn pct(x: f64) -> String {
    finite(x).map_or("–".to_string(), |x| format!("{:.2}", 100.0 * x))
}

/// A difference of accuracies in points, signed (`?` when unknown).
fn points(x: f64) -> String {
    finite(x).map_or("?".to_string(), |x| format!("{:+.2}", 100.0 * x))
}

/// A probability (`?` when unknown).
fn prob(x: f64) -> String {
    // A whole cell's transformation is a product over its edges: often far below 0.001.
    finite(x).map_or("?".to_string(), |x| {
        if x == 0.0 || x >= 1e-3 {
            format!("{x:.4}")
        } else {
            format!("{x:.2e}")
        }
    })
}

/// `-1.10 points, 95 % interval [-2.05, -0.15] (paired_t)`; an unknown end is `?` and with both
/// unknown the interval is said to be missing.
pub fn difference(d: &v1::PairedDifference) -> String {
    let interval = match (finite(d.ci_low), finite(d.ci_high)) {
        (None, None) => "no 95 % interval (one seed)".to_string(),
        _ => format!(
            "95 % interval [{}, {}]",
            points(d.ci_low),
            points(d.ci_high)
        ),
    };
    let method = if d.method.is_empty() {
        String::new()
    } else {
        format!(" ({})", d.method)
    };
    format!("{} points, {interval}{method}", points(d.mean))
}

/// `the original` / `the best candidate`.
fn which(from: &str) -> String {
    match from {
        "best" => "the best candidate".to_string(),
        "" => "–".to_string(),
        other => format!("the {other}"),
    }
}

/// The recommendation as one sentence: `recommended: the original, because …`. The
/// coordinator's reason usually is that sentence already; a bare reason is completed.
pub fn recommendation(r: &v1::Recommendation) -> String {
    let reason = r.reason.trim();
    if reason.starts_with("recommended:") {
        reason.to_string()
    } else if reason.is_empty() {
        format!("recommended: {}", which(&r.from))
    } else {
        format!("recommended: {}, because {reason}", which(&r.from))
    }
}

/// `verdict: worse — recommended: the original, because …` of one input (`None` before the
/// final evaluation gave a verdict).
pub fn verdict_line(o: &v1::OptimizeOutcome) -> Option<String> {
    if o.verdict.is_empty() {
        return None;
    }
    let mut s = format!("verdict: {}", o.verdict);
    if let Some(r) = &o.recommended {
        s.push_str(" — ");
        s.push_str(&recommendation(r));
    }
    Some(s)
}

/// The verdict lines of a job, one per input (`input N: ` in front when there are several).
pub fn verdict_lines(r: &v1::GetJobResultResponse) -> Vec<String> {
    let many = r.optimize.len() > 1;
    r.optimize
        .iter()
        .enumerate()
        .filter_map(|(i, o)| {
            let line = verdict_line(o)?;
            Some(if many {
                format!("input {i}: {line}")
            } else {
                line
            })
        })
        .collect()
}

/// The final-evaluation table of one input: a row per seed, mean ± std, params and
/// multiply-adds; columns original, NAT's best candidate and, when the job ran it, the control.
fn final_table(out: &mut String, f: &v1::FinalEvaluation, control: Option<&v1::SeedAccuracies>) {
    let empty = v1::SeedAccuracies::default();
    let mut columns: Vec<(&str, &v1::SeedAccuracies)> = vec![
        ("original", f.original.as_ref().unwrap_or(&empty)),
        ("NAT's best candidate", f.best.as_ref().unwrap_or(&empty)),
    ];
    if let Some(c) = control {
        columns.push(("random control", c));
    }
    let n = f.seeds.len();
    let _ = writeln!(
        out,
        "  final evaluation: each trained from scratch on {n} seed{}, measured on the test split (accuracy in %)",
        if n == 1 { "" } else { "s" }
    );
    let mut header = vec!["seed"];
    header.extend(columns.iter().map(|c| c.0));
    let mut t = table(&header);
    let mut row = |label: String, cell: &dyn Fn(&v1::SeedAccuracies) -> String| {
        let mut cells = vec![label];
        cells.extend(columns.iter().map(|c| cell(c.1)));
        t.add_row(cells);
    };
    for (k, seed) in f.seeds.iter().enumerate() {
        row(seed.to_string(), &|s| {
            s.accuracies.get(k).map_or("–".to_string(), |a| pct(*a))
        });
    }
    row("mean ± std".to_string(), &|s| {
        format!("{} ± {}", pct(s.mean), pct(s.std))
    });
    row("params".to_string(), &|s| s.params.to_string());
    row("multiply-adds".to_string(), &|s| s.madds.to_string());
    let right: Vec<usize> = (1..=columns.len()).collect();
    for line in render(t, &right).lines() {
        let _ = writeln!(out, "    {line}");
    }
    if let Some(d) = &f.paired_difference {
        let _ = writeln!(
            out,
            "  paired difference, best − original: {}",
            difference(d)
        );
    }
}

/// One input's part of `natctl result`.
fn outcome_text(out: &mut String, i: usize, o: &v1::OptimizeOutcome) {
    let input = if o.input_darts.is_empty() {
        o.original
            .as_ref()
            .map(|a| a.genotype_darts.as_str())
            .unwrap_or("")
    } else {
        o.input_darts.as_str()
    };
    let _ = writeln!(out, "input {i}: {input}");
    if o.verdict.is_empty() {
        let _ = writeln!(out, "  verdict: – (no final evaluation recorded)");
    } else {
        let _ = writeln!(out, "  VERDICT: {}", o.verdict);
    }
    if let Some(r) = &o.recommended {
        let _ = writeln!(out, "  {}", recommendation(r));
        if !r.genotype_darts.is_empty() {
            let _ = writeln!(out, "  recommended architecture: {}", r.genotype_darts);
        }
    }
    if let Some(b) = &o.best {
        let _ = writeln!(out, "  NAT's best candidate: {}", b.genotype_darts);
    }
    if o.changed_edges.is_empty() {
        let _ = writeln!(out, "  changed edges: none");
    } else {
        let _ = writeln!(out, "  changed edges:");
        for e in &o.changed_edges {
            let _ = writeln!(out, "    {e}");
        }
    }
    let control = o.control.as_ref();
    match &o.r#final {
        Some(f) => final_table(out, f, control.and_then(|c| c.r#final.as_ref())),
        None => {
            // Results written before the final evaluation had seeds: one accuracy each.
            let acc = |a: Option<&v1::ArchitectureResult>| {
                a.and_then(|a| a.result.as_ref())
                    .map_or("–".to_string(), |m| format!("{} %", pct(m.accuracy)))
            };
            let _ = writeln!(
                out,
                "  accuracy: original {}, best {}",
                acc(o.original.as_ref()),
                acc(o.best.as_ref())
            );
        }
    }
    if let Some(c) = control {
        let _ = writeln!(
            out,
            "  random control (derive from K uniform samples): verdict {}",
            if c.verdict.is_empty() {
                "–"
            } else {
                &c.verdict
            }
        );
        if !c.genotype_darts.is_empty() {
            let _ = writeln!(out, "    pick: {}", c.genotype_darts);
        }
        if let Some(d) = &c.vs_original {
            let _ = writeln!(out, "    control − original: {}", difference(d));
        }
        if let Some(d) = &c.policy_vs_control {
            let _ = writeln!(out, "    best − control: {}", difference(d));
        }
    }
}

/// The learning part of `natctl result`: did the policy learn?
fn learning_text(out: &mut String, l: &v1::Learning) {
    let _ = writeln!(
        out,
        "learning: {} rewards, {} policy versions",
        l.rewards, l.policy_versions
    );
    if let (Some(first), Some(last)) = (l.curve.first(), l.curve.last()) {
        let signed = |x: f64| finite(x).map_or("?".to_string(), |x| format!("{x:+.4}"));
        let _ = writeln!(
            out,
            "  reward (moving average): v{} {} → v{} {}",
            first.version,
            signed(first.reward_moving_average),
            last.version,
            signed(last.reward_moving_average)
        );
        let _ = writeln!(
            out,
            "  entropy:                 v{} {} → v{} {}",
            first.version,
            prob(first.entropy),
            last.version,
            prob(last.entropy)
        );
    }
    for i in &l.inputs {
        let _ = writeln!(
            out,
            "  input {}: p(identity) {} → {}, p(argmax) {} → {}",
            i.input_index,
            prob(i.identity_probability_first),
            prob(i.identity_probability_last),
            prob(i.argmax_probability_first),
            prob(i.argmax_probability_last)
        );
        if !i.argmax_last_darts.is_empty() {
            let _ = writeln!(out, "    argmax (last): {}", i.argmax_last_darts);
        }
    }
    if let Some(s) = &l.supernet {
        let _ = writeln!(
            out,
            "  supernet: version {}, {} rounds of {} shards, {} workers",
            s.version, s.rounds, s.shards_per_round, s.workers_seen
        );
    }
}

/// The optimize part of `natctl result JOB` (empty for other kinds).
pub fn optimize_text(r: &v1::GetJobResultResponse) -> String {
    let mut out = String::new();
    if r.kind != v1::JobKind::Optimize as i32 {
        return out;
    }
    if r.optimize.is_empty() {
        out.push_str("no outcome yet (the final evaluation has not finished)\n");
    }
    for (i, o) in r.optimize.iter().enumerate() {
        out.push('\n');
        outcome_text(&mut out, i, o);
    }
    if let Some(l) = &r.learning {
        out.push('\n');
        learning_text(&mut out, l);
    }
    if let Some(p) = &r.policy {
        let _ = writeln!(
            out,
            "policy {} version {}, learned from {} rewards",
            p.id, p.version, r.rewards
        );
    }
    out
}

/// A finished optimize job's answer as the coordinator sends it (tests of this module, of
/// `natctl result --json` and of `natctl result`).
#[cfg(test)]
pub(crate) mod example {
    use nat_proto::v1;
    use nat_schema::result::{ControlOutcome, FinalEvaluation, Learning, Recommendation};
    use nat_schema::result::{InputLearning, LearningPoint, PolicyView, SupernetProgress};
    use nat_schema::verdict::{decide, PairedDifference, SeedAccuracies};
    use nat_schema::Verdict;

    fn arch(
        g: &nat_arch::Genotype,
        accuracy: f64,
        params: u64,
        madds: u64,
    ) -> v1::ArchitectureResult {
        v1::ArchitectureResult {
            genotype_json: g.to_json(),
            genotype_darts: g.to_darts_string(),
            canonical_hash: g.canonical_hash(),
            state: v1::TaskState::Succeeded as i32,
            result: Some(v1::TrainEvalResult {
                accuracy,
                params,
                madds,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// DARTS_V2 against its NAT transformation on `seeds`: the best is worse on every seed.
    /// With `control`, a random control that is no different from the original.
    pub(crate) fn result(seeds: &[u64], control: bool) -> v1::GetJobResultResponse {
        let input = nat_arch::parse_any("darts-v2").expect("preset");
        let best = nat_arch::parse_any("darts-v2.nat").expect("preset");
        let n = seeds.len();
        let original =
            SeedAccuracies::new([0.912, 0.905, 0.918][..n].to_vec(), 3_349_342, 532_665_460);
        let best_acc =
            SeedAccuracies::new([0.901, 0.897, 0.906][..n].to_vec(), 3_160_000, 498_000_000);
        let diff = PairedDifference::of(&original.accuracies, &best_acc.accuracies).expect("pairs");
        let decision = decide(&original, &best_acc, &diff, false);
        let recommended = Recommendation {
            from: decision.recommended,
            genotype: input.to_json_value(),
            genotype_darts: input.to_darts_string(),
            reason: decision.reason.clone(),
        };
        let final_evaluation = FinalEvaluation {
            seeds: seeds.to_vec(),
            original: original.clone(),
            best: best_acc.clone(),
            paired_difference: diff.clone(),
        };
        let control = control.then(|| {
            let c =
                SeedAccuracies::new([0.910, 0.907, 0.915][..n].to_vec(), 3_200_000, 510_000_000);
            let vs_original = PairedDifference::of(&original.accuracies, &c.accuracies).expect("d");
            ControlOutcome {
                genotype: best.to_json_value(),
                genotype_darts: best.to_darts_string(),
                final_accuracies: c.clone(),
                policy_vs_control: PairedDifference::of(&c.accuracies, &best_acc.accuracies)
                    .expect("d"),
                verdict: decide(&original, &c, &vs_original, false).verdict,
                vs_original,
            }
            .to_proto()
        });
        let view = |version, identity, argmax: &nat_arch::Genotype, p| PolicyView {
            version,
            identity_probability: identity,
            argmax_darts: argmax.to_darts_string(),
            argmax_probability: p,
        };
        let learning = Learning {
            rewards: 24,
            policy_versions: 6,
            curve: (1..=6)
                .map(|v| LearningPoint {
                    version: v,
                    mean_reward: -0.012 + 0.005 * v as f64,
                    reward_moving_average: -0.0012 + 0.0004 * v as f64,
                    entropy: (v != 3).then_some(3.5 - 0.05 * v as f64),
                })
                .collect(),
            inputs: vec![InputLearning {
                input_index: 0,
                first: Some(view(0, 0.0123, &input, 0.0123)),
                last: view(6, 0.0087, &best, 0.0412),
            }],
            supernet: Some(SupernetProgress {
                version: 12,
                rounds: 3,
                shards_per_round: 4,
                workers_seen: 2,
            }),
        };
        v1::GetJobResultResponse {
            job_id: "6f1e0000-0000-0000-0000-000000000001".into(),
            kind: v1::JobKind::Optimize as i32,
            state: v1::JobState::Succeeded as i32,
            architectures: vec![],
            optimize: vec![v1::OptimizeOutcome {
                original: Some(arch(&input, original.mean, original.params, original.madds)),
                best: Some(arch(&best, best_acc.mean, best_acc.params, best_acc.madds)),
                changed_edges: vec![
                    "normal node 2 input 0 (from 0): sep_conv_3x3 -> skip_connect".into(),
                ],
                verdict: Verdict::Worse.as_str().into(),
                recommended: Some(recommended.to_proto()),
                r#final: Some(final_evaluation.to_proto()),
                control,
                input_darts: input.to_darts_string(),
            }],
            policy: Some(v1::PolicyRef {
                id: "job-6f1e".into(),
                version: 6,
            }),
            rewards: 24,
            learning: Some(learning.to_proto()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_shows_verdict_recommendation_seeds_and_learning() {
        let r = example::result(&[101, 102, 103], true);
        let text = crate::result::result_text(&r);
        println!("{text}");
        for expected in [
            "job 6f1e0000-0000-0000-0000-000000000001 (optimize) succeeded",
            "  VERDICT: worse\n",
            "  recommended: the original, because the best is less accurate on 3 seeds (-1.03 points, 95 % interval [-1.55, -0.52] points)\n",
            "  recommended architecture: Genotype(",
            "  final evaluation: each trained from scratch on 3 seeds, measured on the test split (accuracy in %)",
            "    seed               original  NAT's best candidate  random control\n",
            "    101                   91.20                 90.10           91.00\n",
            "    mean ± std     91.17 ± 0.65          90.13 ± 0.45    91.07 ± 0.40\n",
            "    params              3349342               3160000         3200000\n",
            "    multiply-adds     532665460             498000000       510000000\n",
            "  paired difference, best − original: -1.03 points, 95 % interval [-1.55, -0.52] (paired_t)\n",
            "  random control (derive from K uniform samples): verdict no_difference\n",
            "    control − original: -0.10 points, 95 % interval [",
            "learning: 24 rewards, 6 policy versions\n",
            "  reward (moving average): v1 -0.0008 → v6 +0.0012\n",
            "  entropy:                 v1 3.4500 → v6 3.2000\n",
            "  input 0: p(identity) 0.0123 → 0.0087, p(argmax) 0.0123 → 0.0412\n",
            "  supernet: version 12, 3 rounds of 4 shards, 2 workers\n",
            "policy job-6f1e version 6, learned from 24 rewards\n",
        ] {
            assert!(text.contains(expected), "{expected:?} missing from:\n{text}");
        }
        // No architectures table for an optimize job without task rows.
        assert!(!text.contains("HASH"), "{text}");
    }

    #[test]
    fn one_seed_has_no_interval_and_unknowns_are_marked() {
        let mut r = example::result(&[7], false);
        if let Some(l) = r.learning.as_mut() {
            l.inputs[0].identity_probability_first = f64::NAN;
        }
        let text = crate::result::result_text(&r);
        assert!(
            text.contains(
                "  paired difference, best − original: -1.10 points, no 95 % interval (one seed) (paired_t)"
            ),
            "{text}"
        );
        assert!(text.contains("no interval with one seed"), "{text}");
        assert!(text.contains("p(identity) ? → 0.0087"), "{text}");
        assert!(!text.contains("random control"), "{text}");
        assert_eq!(
            verdict_lines(&r),
            vec![format!(
                "verdict: worse — {}",
                r.optimize[0]
                    .recommended
                    .as_ref()
                    .map(|x| x.reason.clone())
                    .unwrap_or_default()
            )]
        );
    }

    #[test]
    fn watch_lines_name_the_input_when_there_are_several() {
        let mut r = example::result(&[1, 2, 3], false);
        r.optimize.push(r.optimize[0].clone());
        r.optimize[1].verdict = "improved".into();
        r.optimize[1].recommended = Some(v1::Recommendation {
            from: "best".into(),
            reason: "it is more accurate at no extra cost".into(),
            ..Default::default()
        });
        let lines = verdict_lines(&r);
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with("input 0: verdict: worse — recommended: the original, because "),
            "{lines:?}"
        );
        assert_eq!(
            lines[1],
            "input 1: verdict: improved — recommended: the best candidate, because it is more accurate at no extra cost"
        );
        // A result written before verdicts: no line, and the table says so.
        r.optimize[0].verdict.clear();
        r.optimize[0].recommended = None;
        r.optimize[0].r#final = None;
        assert_eq!(verdict_lines(&r).len(), 1);
        let text = optimize_text(&r);
        assert!(
            text.contains("  verdict: – (no final evaluation recorded)\n  NAT's best candidate: "),
            "{text}"
        );
        assert!(
            text.contains("  accuracy: original 91.17 %, best 90.13 %"),
            "{text}"
        );
    }

    #[test]
    fn small_probabilities_keep_their_digits() {
        assert_eq!(prob(0.0123), "0.0123");
        assert_eq!(prob(2.5e-8), "2.50e-8");
        assert_eq!(prob(f64::NAN), "?");
    }
}
