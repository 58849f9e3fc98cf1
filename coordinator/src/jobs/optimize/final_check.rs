//! The final check: each original and its best measured with the final budget.

use nat_arch::{Genotype, NetworkSpec};
use nat_schema::result::{ArchMeasurement, OptimizeOutcome};
use nat_schema::OptimizeJobSpec;

use super::scoring::Score;
use super::{Failure, Outcomes, Run};
use crate::convert::changed_edges;

impl Run {
    /// Measures originals and bests with the final budget.
    pub(super) async fn final_check(
        &mut self,
        spec: &OptimizeJobSpec,
        inputs: &[Genotype],
        best: &[Genotype],
    ) -> Result<Outcomes, Failure> {
        let budget = spec.optimize.final_budget;
        let wanted: Vec<Genotype> = inputs.iter().chain(best).cloned().collect();
        let scores = self.scores(spec, &wanted, &budget, true).await?;
        let dataset = nat_arch::Dataset::from_name(&spec.base.dataset)
            .ok_or_else(|| Failure::Fatal(format!("unknown dataset {}", spec.base.dataset)))?;
        let net = NetworkSpec {
            channels: u64::from(budget.init_channels),
            layers: u64::from(budget.layers),
            in_channels: dataset.channels() as u64,
            image_size: dataset.image_size() as u64,
            num_classes: dataset.num_classes() as u64,
        };
        let describe = |g: &Genotype| -> Result<ArchMeasurement, Failure> {
            let (accuracy, measured) = match scores.get(&g.canonical_hash()) {
                Some(Score::Known(a, m)) => (*a, *m),
                _ => {
                    return Err(Failure::Fatal(format!(
                        "final check of {} failed to train",
                        g.canonical_hash()
                    )))
                }
            };
            let (params, madds) = match measured {
                Some(m) if m.params > 0 => (m.params, m.madds),
                _ => nat_arch::network_cost(g, &net)
                    .map(|c| (c.params(), c.madds()))
                    .unwrap_or((0, 0)),
            };
            Ok(ArchMeasurement {
                genotype: g.to_json_value(),
                genotype_darts: g.to_darts_string(),
                canonical_hash: g.canonical_hash(),
                accuracy,
                params,
                madds,
            })
        };
        let mut out = Vec::new();
        for (i, (orig, b)) in inputs.iter().zip(best).enumerate() {
            out.push(OptimizeOutcome {
                input_index: u32::try_from(i).unwrap_or(u32::MAX),
                original: describe(orig)?,
                best: describe(b)?,
                changed_edges: changed_edges(orig, b),
                verdict: None,
                recommended: None,
                final_evaluation: None,
                control: None,
                derive_accuracy: None,
            });
        }
        Ok(out)
    }
}
