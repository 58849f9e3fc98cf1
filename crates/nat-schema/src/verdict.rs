//! The statistics of an optimize job's final evaluation and the verdict rule.
//!
//! The original and the best candidate are trained from scratch on the same seeds, so their
//! accuracies are paired by seed. The verdict rests on the per-seed differences
//! d_i = best_i − original_i: their mean and a two-sided 95 % confidence interval from the
//! paired t-test, mean ± t(0.975, n − 1) · s / √n, where s is the sample standard deviation of
//! the differences. With one seed there is no interval (both ends unknown) and so no claim.
//!
//! The rule ([`decide`]):
//! - `improved`: the interval is entirely above 0 and the best costs no more than the original
//!   (params and multiply-adds);
//! - `worse`: the interval is entirely below 0;
//! - `no_difference`: otherwise (the interval holds 0, only one seed, the best is the original
//!   itself, or the best is more accurate but costs more).
//!
//! The recommendation is the best when the verdict is `improved`, otherwise the original.

use serde::{Deserialize, Serialize};

use crate::{RecommendedFrom, Verdict};

/// The method named in [`PairedDifference::method`].
pub const PAIRED_T: &str = "paired_t";

/// t(0.975, df) for df = 1..=31 (two-sided 95 %), the standard table values.
const T_975: [f64; 31] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042, 2.040,
];
/// t(0.975, df) above the table (df > 31): within 0.05 of the exact value up to df = 120.
const T_975_LARGE: f64 = 2.0;

/// The two-sided 95 % t quantile with `df` degrees of freedom (`None` for df = 0).
pub fn t_975(df: usize) -> Option<f64> {
    match df {
        0 => None,
        d if d <= T_975.len() => Some(T_975[d - 1]),
        _ => Some(T_975_LARGE),
    }
}

/// Per-seed accuracies of one architecture, with their mean and sample standard deviation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedAccuracies {
    /// In the order of the evaluation's seeds.
    pub accuracies: Vec<f64>,
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (0 with one seed).
    pub std: f64,
    /// Parameters of the evaluated network.
    pub params: u64,
    /// Multiply-adds of the evaluated network.
    pub madds: u64,
}

impl SeedAccuracies {
    /// From per-seed accuracies and the network's cost.
    pub fn new(accuracies: Vec<f64>, params: u64, madds: u64) -> Self {
        let (mean, std) = mean_std(&accuracies);
        SeedAccuracies {
            accuracies,
            mean,
            std,
            params,
            madds,
        }
    }
}

/// Mean and sample standard deviation (0 for fewer than two values; mean 0 for none).
pub fn mean_std(xs: &[f64]) -> (f64, f64) {
    if xs.is_empty() {
        return (0.0, 0.0);
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return (mean, 0.0);
    }
    let ss: f64 = xs.iter().map(|x| (x - mean) * (x - mean)).sum();
    (mean, (ss / (n - 1.0)).sqrt())
}

/// The paired difference `b − a` by seed with its 95 % interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedDifference {
    /// Mean difference.
    pub mean: f64,
    /// Lower end of the 95 % interval (`None` with one seed).
    pub ci_low: Option<f64>,
    /// Upper end (`None` with one seed).
    pub ci_high: Option<f64>,
    /// How the interval was computed: [`PAIRED_T`].
    pub method: String,
}

impl PairedDifference {
    /// `b − a`, paired by position. `None` when the lengths differ or there is no pair.
    pub fn of(a: &[f64], b: &[f64]) -> Option<PairedDifference> {
        if a.len() != b.len() || a.is_empty() {
            return None;
        }
        let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| y - x).collect();
        let (mean, std) = mean_std(&d);
        let half = t_975(d.len() - 1).map(|t| t * std / (d.len() as f64).sqrt());
        Some(PairedDifference {
            mean,
            ci_low: half.map(|h| mean - h),
            ci_high: half.map(|h| mean + h),
            method: PAIRED_T.to_string(),
        })
    }

    /// The interval is known and entirely above 0.
    pub fn above_zero(&self) -> bool {
        self.ci_low.is_some_and(|l| l > 0.0)
    }

    /// The interval is known and entirely below 0.
    pub fn below_zero(&self) -> bool {
        self.ci_high.is_some_and(|h| h < 0.0)
    }
}

/// What [`decide`] concludes.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The verdict.
    pub verdict: Verdict,
    /// What to use.
    pub recommended: RecommendedFrom,
    /// One sentence saying why.
    pub reason: String,
}

/// The verdict on `best` against `original` from their paired accuracies; `same` when derive
/// ranked the original itself first (the two are one architecture).
pub fn decide(
    original: &SeedAccuracies,
    best: &SeedAccuracies,
    diff: &PairedDifference,
    same: bool,
) -> Decision {
    let pts = |x: f64| format!("{:+.2}", 100.0 * x);
    let interval = match (diff.ci_low, diff.ci_high) {
        (Some(l), Some(h)) => format!("95 % interval [{}, {}] points", pts(l), pts(h)),
        _ => "no interval with one seed".to_string(),
    };
    let n = best.accuracies.len();
    let seeds = if n == 1 {
        "1 seed".to_string()
    } else {
        format!("{n} seeds")
    };
    let costlier = best.params > original.params || best.madds > original.madds;
    let (verdict, reason) = if same {
        (
            Verdict::NoDifference,
            "derive ranked the original itself first: no transformation beat it".to_string(),
        )
    } else if diff.above_zero() && !costlier {
        (
            Verdict::Improved,
            format!(
                "the best is more accurate on {seeds} ({} points, {interval}) at no extra cost",
                pts(diff.mean)
            ),
        )
    } else if diff.above_zero() {
        (
            Verdict::NoDifference,
            format!(
                "the best is more accurate on {seeds} ({} points, {interval}) but costs more \
                 ({} params, {} multiply-adds against {}, {})",
                pts(diff.mean),
                best.params,
                best.madds,
                original.params,
                original.madds
            ),
        )
    } else if diff.below_zero() {
        (
            Verdict::Worse,
            format!(
                "the best is less accurate on {seeds} ({} points, {interval})",
                pts(diff.mean)
            ),
        )
    } else {
        (
            Verdict::NoDifference,
            format!(
                "the difference on {seeds} is not distinguishable from 0 ({} points, {interval})",
                pts(diff.mean)
            ),
        )
    };
    let recommended = if verdict == Verdict::Improved {
        RecommendedFrom::Best
    } else {
        RecommendedFrom::Original
    };
    let reason = match recommended {
        RecommendedFrom::Best => format!("recommended: the best, because {reason}"),
        RecommendedFrom::Original => format!("recommended: the original, because {reason}"),
    };
    Decision {
        verdict,
        recommended,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc(xs: &[f64], params: u64) -> SeedAccuracies {
        SeedAccuracies::new(xs.to_vec(), params, params * 10)
    }

    #[test]
    fn mean_and_sample_std() {
        let (m, s) = mean_std(&[0.80, 0.82, 0.84]);
        assert!((m - 0.82).abs() < 1e-12);
        assert!((s - 0.02).abs() < 1e-12);
        assert_eq!(mean_std(&[0.5]), (0.5, 0.0));
    }

    /// The interval against a hand computation: d = (0.01, 0.02, 0.03), mean 0.02, s = 0.01,
    /// half-width 4.303 · 0.01 / √3 = 0.0248: the interval holds 0 with three seeds.
    #[test]
    fn paired_t_interval() {
        let d = PairedDifference::of(&[0.80, 0.80, 0.80], &[0.81, 0.82, 0.83]).expect("pairs");
        let half = 4.303 * 0.01 / 3f64.sqrt();
        assert!((d.mean - 0.02).abs() < 1e-12);
        assert!((d.ci_low.expect("low") - (0.02 - half)).abs() < 1e-12);
        assert!((d.ci_high.expect("high") - (0.02 + half)).abs() < 1e-12);
        assert_eq!(d.method, PAIRED_T);
        assert!(!d.above_zero() && !d.below_zero());
        // d = (0.02, 0.03, 0.025): s = 0.005, half-width 0.0124, the interval is above 0.
        let d = PairedDifference::of(&[0.80, 0.80, 0.80], &[0.82, 0.83, 0.825]).expect("pairs");
        assert!(d.above_zero() && !d.below_zero());
        let one = PairedDifference::of(&[0.8], &[0.9]).expect("one pair");
        assert_eq!((one.ci_low, one.ci_high), (None, None));
        assert!(!one.above_zero() && !one.below_zero());
        assert!(PairedDifference::of(&[0.8], &[0.9, 0.7]).is_none());
        assert!(PairedDifference::of(&[], &[]).is_none());
    }

    #[test]
    fn t_table_ends() {
        assert_eq!(t_975(0), None);
        assert_eq!(t_975(1), Some(12.706));
        assert_eq!(t_975(2), Some(4.303));
        assert_eq!(t_975(31), Some(2.040));
        assert_eq!(t_975(200), Some(2.0));
    }

    #[test]
    fn every_verdict() {
        let o = acc(&[0.80, 0.81, 0.82], 100);
        let better = acc(&[0.85, 0.87, 0.86], 90);
        let d = PairedDifference::of(&o.accuracies, &better.accuracies).expect("d");
        let v = decide(&o, &better, &d, false);
        assert_eq!(
            (v.verdict, v.recommended),
            (Verdict::Improved, RecommendedFrom::Best)
        );
        assert!(v.reason.contains("no extra cost"), "{}", v.reason);

        let costlier = acc(&[0.85, 0.87, 0.86], 120);
        let v = decide(&o, &costlier, &d, false);
        assert_eq!(
            (v.verdict, v.recommended),
            (Verdict::NoDifference, RecommendedFrom::Original)
        );
        assert!(v.reason.contains("costs more"), "{}", v.reason);

        let worse = acc(&[0.70, 0.72, 0.71], 90);
        let d = PairedDifference::of(&o.accuracies, &worse.accuracies).expect("d");
        let v = decide(&o, &worse, &d, false);
        assert_eq!(
            (v.verdict, v.recommended),
            (Verdict::Worse, RecommendedFrom::Original)
        );

        let noisy = acc(&[0.83, 0.79, 0.82], 90);
        let d = PairedDifference::of(&o.accuracies, &noisy.accuracies).expect("d");
        let v = decide(&o, &noisy, &d, false);
        assert_eq!(v.verdict, Verdict::NoDifference);

        let d = PairedDifference::of(&o.accuracies, &o.accuracies).expect("d");
        let v = decide(&o, &o, &d, true);
        assert_eq!(
            (v.verdict, v.recommended),
            (Verdict::NoDifference, RecommendedFrom::Original)
        );
        assert!(v.reason.contains("original itself"), "{}", v.reason);
    }
}
