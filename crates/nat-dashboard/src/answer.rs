//! NAT's answer on the job page of an optimize job, rendered on the server (all text escaped):
//! the verdict and the recommendation with its reason, the final evaluation table (per-seed
//! accuracies of the original, NAT's best candidate and the random control, mean ± std, params
//! and multiply-adds), the paired difference with its 95 % interval, and whether the policy
//! learned — its numbers and an SVG plot of the reward (moving average) and the entropy against
//! the policy version.

use std::fmt::Write as _;

use nat_schema::result::{Learning, LearningPoint, OptimizeOutcome, Recommendation};
use nat_schema::verdict::{PairedDifference, SeedAccuracies};
use nat_schema::Verdict;

use crate::diagram::escape;

fn pct(x: f64) -> String {
    if x.is_finite() {
        format!("{:.2}%", 100.0 * x)
    } else {
        "–".to_string()
    }
}

fn points(x: Option<f64>) -> String {
    match x.filter(|x| x.is_finite()) {
        Some(x) => format!("{:+.2}", 100.0 * x),
        None => "?".to_string(),
    }
}

fn prob(x: Option<f64>) -> String {
    // A whole cell's transformation is a product over its edges: often far below 0.001.
    match x.filter(|x| x.is_finite()) {
        Some(x) if x == 0.0 || x >= 1e-3 => format!("{x:.4}"),
        Some(x) => format!("{x:.2e}"),
        None => "?".to_string(),
    }
}

/// Thousands separated by thin spaces.
fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('\u{2009}');
        }
        out.push(c);
    }
    out
}

/// What a verdict means, in words.
fn verdict_words(v: Verdict) -> &'static str {
    match v {
        Verdict::Improved => "improved: NAT's best candidate is more accurate at no extra cost",
        Verdict::NoDifference => "no difference: the evaluation cannot tell the two apart",
        Verdict::Worse => "worse: NAT's best candidate is less accurate than the original",
    }
}

/// The recommendation as one sentence (`recommended: the original, because …`): the
/// coordinator's reason usually is that sentence; a bare reason is completed.
pub fn recommendation_sentence(r: &Recommendation) -> String {
    let reason = r.reason.trim();
    let which = match r.from {
        nat_schema::RecommendedFrom::Best => "the best candidate",
        nat_schema::RecommendedFrom::Original => "the original",
    };
    if reason.starts_with("recommended:") {
        reason.to_string()
    } else if reason.is_empty() {
        format!("recommended: {which}")
    } else {
        format!("recommended: {which}, because {reason}")
    }
}

/// `-1.03 pt, 95 % interval [-1.55, -0.52] pt (paired_t)`.
fn difference(d: &PairedDifference) -> String {
    let interval = match (d.ci_low, d.ci_high) {
        (None, None) => "no 95 % interval (one seed)".to_string(),
        (l, h) => format!("95 % interval [{}, {}] pt", points(l), points(h)),
    };
    format!(
        "{} pt, {interval} ({})",
        points(Some(d.mean)),
        escape(&d.method)
    )
}

fn difference_class(d: &PairedDifference) -> &'static str {
    if d.above_zero() {
        "pos"
    } else if d.below_zero() {
        "neg"
    } else {
        ""
    }
}

/// The final-evaluation table: a row per seed, mean ± std, params, multiply-adds.
fn final_table(out: &mut String, seeds: &[u64], columns: &[(&str, &str, &SeedAccuracies)]) {
    out.push_str(r#"<table id="final-table" class="grid final"><thead><tr><th>Seed</th>"#);
    for (name, class, _) in columns {
        let _ = write!(out, r#"<th class="num {class}">{}</th>"#, escape(name));
    }
    out.push_str("</tr></thead><tbody>");
    for (k, seed) in seeds.iter().enumerate() {
        let _ = write!(
            out,
            r#"<tr class="seed" data-seed="{seed}"><td>{seed}</td>"#
        );
        for (_, class, s) in columns {
            let a = s.accuracies.get(k).copied().map_or("–".to_string(), pct);
            let _ = write!(out, r#"<td class="num {class}">{a}</td>"#);
        }
        out.push_str("</tr>");
    }
    out.push_str(r#"<tr class="summary"><td>mean ± std</td>"#);
    for (_, class, s) in columns {
        let std = if s.std.is_finite() {
            format!("{:.2}", 100.0 * s.std)
        } else {
            "–".to_string()
        };
        let _ = write!(
            out,
            r#"<td class="num {class}">{} ± {std}</td>"#,
            pct(s.mean)
        );
    }
    out.push_str("</tr><tr><td>params</td>");
    for (_, class, s) in columns {
        let _ = write!(out, r#"<td class="num {class}">{}</td>"#, count(s.params));
    }
    out.push_str("</tr><tr><td>multiply-adds</td>");
    for (_, class, s) in columns {
        let _ = write!(out, r#"<td class="num {class}">{}</td>"#, count(s.madds));
    }
    out.push_str("</tr></tbody></table>");
}

/// NAT's answer for one input: verdict, recommendation, final evaluation, control. Empty when
/// the outcome has none of them (a result written before verdicts).
pub fn answer_html(o: &OptimizeOutcome) -> String {
    let mut out = String::new();
    if o.verdict.is_none() && o.recommended.is_none() && o.final_evaluation.is_none() {
        return out;
    }
    let verdict = o.verdict.map_or("unknown", Verdict::as_str);
    let _ = write!(
        out,
        r#"<div id="verdict" class="verdict verdict-{verdict}" data-verdict="{verdict}"><div class="verdict-head"><span class="label">Verdict</span> <strong class="verdict-value">{}</strong></div>"#,
        escape(&verdict.replace('_', " "))
    );
    if let Some(v) = o.verdict {
        let _ = write!(
            out,
            r#"<div class="muted small">{}</div>"#,
            verdict_words(v)
        );
    }
    if let Some(r) = &o.recommended {
        let _ = write!(
            out,
            r#"<p id="recommendation" class="recommendation" data-from="{}">{}</p>"#,
            r.from.as_str(),
            escape(&recommendation_sentence(r))
        );
        if !r.genotype_darts.is_empty() {
            let _ = write!(
                out,
                r#"<div class="recommended-genotype"><span class="muted small">recommended architecture</span> <code>{}</code></div>"#,
                escape(&r.genotype_darts)
            );
        }
    }
    out.push_str("</div>");
    if let Some(f) = &o.final_evaluation {
        let n = f.seeds.len();
        let _ = write!(
            out,
            r#"<h3>Final evaluation <span class="muted small">original and best trained from scratch on {n} fresh seed{}, measured on the test split</span></h3>"#,
            if n == 1 { "" } else { "s" }
        );
        let mut columns: Vec<(&str, &str, &SeedAccuracies)> = vec![
            ("original", "original", &f.original),
            ("NAT's best candidate", "best", &f.best),
        ];
        if let Some(c) = &o.control {
            columns.push(("random control", "control", &c.final_accuracies));
        }
        final_table(&mut out, &f.seeds, &columns);
        let d = &f.paired_difference;
        let _ = write!(
            out,
            r#"<p id="paired-difference" class="difference {}">Paired difference, best − original: <strong>{}</strong></p>"#,
            difference_class(d),
            difference(d)
        );
    }
    if let Some(a) = o.derive_accuracy.filter(|a| a.is_finite()) {
        let _ = write!(
            out,
            r#"<p class="muted small">Derive ranked the best at {} on the validation split (the selection; not used for the verdict).</p>"#,
            pct(a)
        );
    }
    if let Some(c) = &o.control {
        let _ = write!(
            out,
            r#"<div id="control" class="control" data-verdict="{v}"><h3>Random control <span class="muted small">derive from K uniform samples of the space, evaluated on the same seeds</span></h3><p>Verdict against the original: <strong>{}</strong></p><p class="{}">Control − original: {}</p><p class="{}">Best − control (what the policy added over selection alone): {}</p>"#,
            escape(&c.verdict.as_str().replace('_', " ")),
            difference_class(&c.vs_original),
            difference(&c.vs_original),
            difference_class(&c.policy_vs_control),
            difference(&c.policy_vs_control),
            v = c.verdict.as_str(),
        );
        if !c.genotype_darts.is_empty() {
            let _ = write!(
                out,
                r#"<div><span class="muted small">control's pick</span> <code>{}</code></div>"#,
                escape(&c.genotype_darts)
            );
        }
        out.push_str("</div>");
    }
    out
}

/// The numbers of whether the policy learned, for input `input_index`.
pub fn learning_html(l: &Learning, input_index: u32) -> String {
    let mut out = String::from(r#"<dl id="learning-facts" class="facts">"#);
    let mut fact = |name: &str, value: String| {
        let _ = write!(
            out,
            "<div><dt>{}</dt><dd>{}</dd></div>",
            escape(name),
            escape(&value)
        );
    };
    fact("rewards", l.rewards.to_string());
    fact("policy versions", l.policy_versions.to_string());
    if let (Some(a), Some(b)) = (l.curve.first(), l.curve.last()) {
        let signed = |x: f64| {
            if x.is_finite() {
                format!("{x:+.4}")
            } else {
                "?".to_string()
            }
        };
        fact(
            "reward (moving average)",
            format!(
                "v{} {} → v{} {}",
                a.version,
                signed(a.reward_moving_average),
                b.version,
                signed(b.reward_moving_average)
            ),
        );
        fact(
            "entropy",
            format!(
                "v{} {} → v{} {}",
                a.version,
                prob(a.entropy),
                b.version,
                prob(b.entropy)
            ),
        );
    }
    let input = l.inputs.iter().find(|i| i.input_index == input_index);
    if let Some(i) = input {
        let first = i.first.as_ref();
        fact(
            "p(identity)",
            format!(
                "{} → {}",
                prob(first.map(|f| f.identity_probability)),
                prob(Some(i.last.identity_probability))
            ),
        );
        fact(
            "p(argmax)",
            format!(
                "{} → {}",
                prob(first.map(|f| f.argmax_probability)),
                prob(Some(i.last.argmax_probability))
            ),
        );
    }
    if let Some(s) = &l.supernet {
        fact(
            "supernet",
            format!(
                "v{} · {} rounds × {} shards · {} workers",
                s.version, s.rounds, s.shards_per_round, s.workers_seen
            ),
        );
    }
    out.push_str("</dl>");
    if let Some(i) = input.filter(|i| !i.last.argmax_darts.is_empty()) {
        let _ = write!(
            out,
            r#"<div class="small"><span class="muted">the last version's argmax</span> <code>{}</code></div>"#,
            escape(&i.last.argmax_darts)
        );
    }
    out
}

const W: f64 = 640.0;
const H: f64 = 260.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 56.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 34.0;

/// A value range with a little padding (never empty).
fn range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return None;
    }
    let pad = match (hi - lo) * 0.08 {
        p if p > 0.0 => p,
        _ => (hi.abs() * 0.1).max(0.01),
    };
    Some((lo - pad, hi + pad))
}

/// An SVG path through `points` (`None` breaks the line).
fn path(points: impl Iterator<Item = (f64, Option<f64>)>) -> String {
    let mut d = String::new();
    let mut pen_down = false;
    for (x, y) in points {
        match y {
            Some(y) => {
                let _ = write!(d, "{}{x:.1},{y:.1} ", if pen_down { "L" } else { "M" });
                pen_down = true;
            }
            None => pen_down = false,
        }
    }
    d.trim_end().to_string()
}

/// The learning curve as an SVG: the reward's moving average (line) and each update's mean
/// reward (dots) on the left axis, the policy entropy (dashed) on the right axis, against the
/// policy version.
pub fn learning_svg(curve: &[LearningPoint]) -> String {
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" id="learning-chart" class="chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="reward (moving average) and entropy per policy version">"#
    );
    let rewards = range(
        curve
            .iter()
            .flat_map(|p| [p.reward_moving_average, p.mean_reward]),
    );
    let Some((r0, r1)) = rewards else {
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" class=\"empty-text\" fill=\"#7b8794\">no policy update recorded</text></svg>",
            W / 2.0,
            H / 2.0
        );
        return svg;
    };
    let versions: Vec<f64> = curve.iter().map(|p| p.version as f64).collect();
    let (mut v0, mut v1) = versions
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        });
    if v1 <= v0 {
        v0 -= 1.0;
        v1 += 1.0;
    }
    let entropy = range(curve.iter().filter_map(|p| p.entropy));
    let sx = |v: f64| LEFT + (v - v0) / (v1 - v0) * (W - LEFT - RIGHT);
    let sy = |y: f64, (lo, hi): (f64, f64)| TOP + (1.0 - (y - lo) / (hi - lo)) * (H - TOP - BOTTOM);

    svg.push_str(r#"<g class="axis">"#);
    for i in 0..=4 {
        let f = f64::from(i) / 4.0;
        let y = TOP + (1.0 - f) * (H - TOP - BOTTOM);
        let _ = write!(
            svg,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" class=\"grid-line\" stroke=\"#eef1f4\"/>",
            W - RIGHT
        );
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#7b8794\" font-size=\"11\">{:+.3}</text>",
            LEFT - 6.0,
            y + 4.0,
            r0 + (r1 - r0) * f
        );
        if let Some((e0, e1)) = entropy {
            let _ = write!(
                svg,
                "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"start\" fill=\"#7950f2\" font-size=\"11\">{:.2}</text>",
                W - RIGHT + 6.0,
                y + 4.0,
                e0 + (e1 - e0) * f
            );
        }
    }
    let ticks = ((v1 - v0).round() as u32).clamp(1, 6);
    for j in 0..=ticks {
        let v = v0 + (v1 - v0) * f64::from(j) / f64::from(ticks);
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\" fill=\"#7b8794\" font-size=\"11\">v{}</text>",
            sx(v),
            H - BOTTOM + 16.0,
            v.round()
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#7b8794\" font-size=\"11\">policy version</text></g>",
        (LEFT + W - RIGHT) / 2.0,
        H - 4.0
    );
    if r0 < 0.0 && r1 > 0.0 {
        let y = sy(0.0, (r0, r1));
        let _ = write!(
            svg,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" class=\"zero-line\" stroke=\"#adb5bd\"/>",
            W - RIGHT
        );
    }
    for p in curve.iter().filter(|p| p.mean_reward.is_finite()) {
        let _ = write!(
            svg,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.6\" class=\"dot reward\" fill=\"#e8590c\" fill-opacity=\".25\"/>",
            sx(p.version as f64),
            sy(p.mean_reward, (r0, r1))
        );
    }
    let moving = path(curve.iter().map(|p| {
        (
            sx(p.version as f64),
            Some(p.reward_moving_average)
                .filter(|y| y.is_finite())
                .map(|y| sy(y, (r0, r1))),
        )
    }));
    let _ = write!(
        svg,
        "<path d=\"{moving}\" class=\"series reward-ma\" fill=\"none\" stroke=\"#e8590c\" stroke-width=\"2.2\"/>"
    );
    if let Some(er) = entropy {
        let d = path(curve.iter().map(|p| {
            (
                sx(p.version as f64),
                p.entropy.filter(|y| y.is_finite()).map(|y| sy(y, er)),
            )
        }));
        let _ = write!(
            svg,
            "<path d=\"{d}\" class=\"series entropy\" fill=\"none\" stroke=\"#7950f2\" stroke-width=\"2\" stroke-dasharray=\"6 4\"/>"
        );
        // A point between two unknown ones would draw no line: every point gets a dot.
        for p in curve {
            if let Some(y) = p.entropy.filter(|y| y.is_finite()) {
                let _ = write!(
                    svg,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.2\" class=\"dot entropy\" fill=\"#7950f2\"/>",
                    sx(p.version as f64),
                    sy(y, er)
                );
            }
        }
    }
    // Legend.
    let _ = write!(
        svg,
        "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"14\" y2=\"14\" stroke=\"#e8590c\" stroke-width=\"2.2\"/><text x=\"{}\" y=\"18\" class=\"legend-text\" font-size=\"12\">reward (moving average) · dots: mean reward</text>",
        LEFT + 22.0,
        LEFT + 28.0
    );
    if entropy.is_some() {
        let _ = write!(
            svg,
            "<line x1=\"{}\" x2=\"{}\" y1=\"14\" y2=\"14\" stroke=\"#7950f2\" stroke-width=\"2\" stroke-dasharray=\"6 4\"/><text x=\"{}\" y=\"18\" class=\"legend-text\" font-size=\"12\">entropy (right axis)</text>",
            LEFT + 330.0,
            LEFT + 352.0,
            LEFT + 358.0
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use nat_schema::result::{
        ArchMeasurement, ControlOutcome, FinalEvaluation, InputLearning, PolicyView,
        SupernetProgress,
    };
    use nat_schema::verdict::decide;

    fn measurement(accuracy: f64) -> ArchMeasurement {
        ArchMeasurement {
            genotype: serde_json::json!({}),
            genotype_darts: String::new(),
            canonical_hash: String::new(),
            accuracy,
            params: 1,
            madds: 1,
        }
    }

    fn outcome(seeds: &[u64], control: bool) -> OptimizeOutcome {
        let n = seeds.len();
        let o = SeedAccuracies::new([0.912, 0.905, 0.918][..n].to_vec(), 3_349_342, 532_665_460);
        let b = SeedAccuracies::new([0.901, 0.897, 0.906][..n].to_vec(), 3_160_000, 498_000_000);
        let d = PairedDifference::of(&o.accuracies, &b.accuracies).expect("pairs");
        let decision = decide(&o, &b, &d, false);
        OptimizeOutcome {
            input_index: 0,
            original: measurement(o.mean),
            best: measurement(b.mean),
            changed_edges: vec![],
            verdict: Some(decision.verdict),
            recommended: Some(Recommendation {
                from: decision.recommended,
                genotype: serde_json::json!({}),
                genotype_darts: "Genotype(normal=[<&>])".into(),
                reason: decision.reason,
            }),
            final_evaluation: Some(FinalEvaluation {
                seeds: seeds.to_vec(),
                original: o.clone(),
                best: b.clone(),
                paired_difference: d,
            }),
            control: control.then(|| {
                let c = SeedAccuracies::new(vec![0.910, 0.907, 0.915], 3_200_000, 510_000_000);
                let vs = PairedDifference::of(&o.accuracies, &c.accuracies).expect("d");
                ControlOutcome {
                    genotype: serde_json::json!({}),
                    genotype_darts: "Genotype(control)".into(),
                    final_accuracies: c.clone(),
                    policy_vs_control: PairedDifference::of(&c.accuracies, &b.accuracies)
                        .expect("d"),
                    verdict: decide(&o, &c, &vs, false).verdict,
                    vs_original: vs,
                }
            }),
            derive_accuracy: Some(0.921),
        }
    }

    #[test]
    fn the_answer_shows_verdict_recommendation_table_and_interval() {
        let html = answer_html(&outcome(&[101, 102, 103], true));
        for expected in [
            r#"<div id="verdict" class="verdict verdict-worse" data-verdict="worse">"#,
            r#"<strong class="verdict-value">worse</strong>"#,
            r#"<p id="recommendation" class="recommendation" data-from="original">recommended: the original, because the best is less accurate on 3 seeds (-1.03 points, 95 % interval [-1.55, -0.52] points)</p>"#,
            // Escaped.
            "<code>Genotype(normal=[&lt;&amp;&gt;])</code>",
            r#"<th class="num original">original</th><th class="num best">NAT's best candidate</th><th class="num control">random control</th>"#,
            r#"<tr class="seed" data-seed="101"><td>101</td><td class="num original">91.20%</td><td class="num best">90.10%</td><td class="num control">91.00%</td></tr>"#,
            r#"<td class="num original">91.17% ± 0.65</td>"#,
            "<td>params</td><td class=\"num original\">3\u{2009}349\u{2009}342</td>",
            "<td>multiply-adds</td><td class=\"num original\">532\u{2009}665\u{2009}460</td>",
            r#"<p id="paired-difference" class="difference neg">Paired difference, best − original: <strong>-1.03 pt, 95 % interval [-1.55, -0.52] pt (paired_t)</strong></p>"#,
            "Derive ranked the best at 92.10% on the validation split",
            r#"<div id="control" class="control" data-verdict="no_difference">"#,
            "Control − original: -0.10 pt, 95 % interval [-0.76, +0.56] pt (paired_t)",
        ] {
            assert!(html.contains(expected), "{expected}\nmissing from\n{html}");
        }
        assert!(!html.contains("<&>"), "unescaped text");
    }

    #[test]
    fn one_seed_has_no_interval_and_old_results_no_answer() {
        let html = answer_html(&outcome(&[7], false));
        assert!(
            html.contains("<strong>-1.10 pt, no 95 % interval (one seed) (paired_t)</strong>"),
            "{html}"
        );
        assert!(html.contains(r#"class="difference ""#), "{html}");
        assert!(!html.contains(r#"id="control""#));
        let mut old = outcome(&[1, 2, 3], false);
        old.verdict = None;
        old.recommended = None;
        old.final_evaluation = None;
        assert_eq!(answer_html(&old), "");
    }

    fn learning() -> Learning {
        let view = |version, p: f64| PolicyView {
            version,
            identity_probability: p,
            argmax_darts: "Genotype(<argmax>)".into(),
            argmax_probability: 2.0 * p,
        };
        Learning {
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
                first: None,
                last: view(6, 0.0087),
            }],
            supernet: Some(SupernetProgress {
                version: 12,
                rounds: 3,
                shards_per_round: 4,
                workers_seen: 2,
            }),
        }
    }

    #[test]
    fn the_learning_plot_draws_both_series_and_breaks_at_unknown_entropy() {
        let l = learning();
        let svg = learning_svg(&l.curve);
        assert!(svg.starts_with(r#"<svg xmlns="http://www.w3.org/2000/svg" id="learning-chart""#));
        assert!(svg.ends_with("</svg>"));
        assert_eq!(svg.matches(r#"class="dot reward""#).count(), 6);
        assert_eq!(svg.matches(r#"class="dot entropy""#).count(), 5);
        let moving = svg
            .split(r#"class="series reward-ma""#)
            .next()
            .and_then(|s| s.rsplit("d=\"").next())
            .expect("moving average path");
        assert_eq!(moving.matches('M').count(), 1, "{moving}");
        assert_eq!(moving.matches('L').count(), 5, "{moving}");
        let entropy = svg
            .split(r#"class="series entropy""#)
            .next()
            .and_then(|s| s.rsplit("d=\"").next())
            .expect("entropy path");
        // Version 3 has no entropy: the line breaks there (v1–v2, v4–v6).
        assert_eq!(entropy.matches('M').count(), 2, "{entropy}");
        assert_eq!(entropy.matches('L').count(), 3, "{entropy}");
        assert!(svg.contains(">v1</text>") && svg.contains(">v6</text>"));
        assert!(svg.contains("entropy (right axis)"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        let empty = learning_svg(&[]);
        assert!(empty.contains("no policy update recorded"), "{empty}");
    }

    #[test]
    fn the_learning_numbers_are_escaped_and_unknowns_marked() {
        let html = learning_html(&learning(), 0);
        for expected in [
            "<div><dt>rewards</dt><dd>24</dd></div>",
            "<div><dt>policy versions</dt><dd>6</dd></div>",
            "<dd>v1 -0.0008 → v6 +0.0012</dd>",
            "<dd>v1 3.4500 → v6 3.2000</dd>",
            "<div><dt>p(identity)</dt><dd>? → 0.0087</dd></div>",
            "<div><dt>p(argmax)</dt><dd>? → 0.0174</dd></div>",
            "<dd>v12 · 3 rounds × 4 shards · 2 workers</dd>",
            "<code>Genotype(&lt;argmax&gt;)</code>",
        ] {
            assert!(html.contains(expected), "{expected}\nmissing from\n{html}");
        }
        // Another input has no probabilities of its own.
        assert!(!learning_html(&learning(), 1).contains("p(identity)"));
    }

    #[test]
    fn small_probabilities_keep_their_digits() {
        assert_eq!(prob(Some(0.0087)), "0.0087");
        assert_eq!(prob(Some(2.5e-8)), "2.50e-8");
        assert_eq!(prob(None), "?");
    }
}
