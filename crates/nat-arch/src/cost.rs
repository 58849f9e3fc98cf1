//! Cost model: per-op and whole-network parameters and multiply-adds.
//!
//! # Per op ([`op_cost`])
//! Every op maps C channels to C channels. For an input of H×W and stride s the output is
//! ⌈H/s⌉×⌈W/s⌉ (every op is padded to keep the size at stride 1). With k the kernel size:
//!
//! | op | conv weights | conv multiply-adds | BN params | other ops |
//! |---|---|---|---|---|
//! | `conv_kxk` (ReLU, conv k×k stride s, BN) | C²k² | C²k²·Ho·Wo | 2C | |
//! | `conv_1xk_kx1` (ReLU, 1×k stride (1,s), k×1 stride (s,1), BN) | 2C²k | C²k·H·Wo + C²k·Ho·Wo | 2C | |
//! | `sep_conv_kxk` (2 × [ReLU, dw k×k, 1×1, BN]; first dw has stride s) | 2(Ck²+C²) | (Ck²+C²)·Ho·Wo + (Ck²+C²)·Ho·Wo | 4C | |
//! | `dil_conv_kxk` (ReLU, dw k×k dilation 2 stride s, 1×1, BN) | Ck²+C² | (Ck²+C²)·Ho·Wo | 2C | |
//! | pools k×k | 0 | 0 | 0 | C·k²·Ho·Wo window reads |
//! | `skip_connect`, s = 1 (identity) | 0 | 0 | 0 | C·H·W copies |
//! | `skip_connect`, s = 2 (FactorizedReduce: ReLU, two 1×1 stride-2 convs C→C/2, concat, BN) | C² | C²·Ho·Wo | 2C | |
//! | `null` | 0 | 0 | 0 | 0 |
//!
//! BN is affine (γ, β: 2 params per channel), as in the evaluation network; running statistics
//! are buffers, not parameters. Convs have no bias.
//!
//! The NAT++ cost chart (NAT-SPEC §2.2, C = 128, 32×32) counts conv weights as "params" and
//! conv multiply-adds plus pool window reads plus the identity's copies as "MAdds":
//! [`OpCost::chart_params`] and [`OpCost::chart_madds`] reproduce it.
//!
//! # Whole network ([`network_cost`])
//! The DARTS/NAT CIFAR evaluation network (`NetworkCIFAR`, NAT `evaluate_model.py`), auxiliary
//! head excluded. Exactly these modules hold parameters:
//! 1. stem: Conv3×3(in_channels → 3C, stride 1, pad 1, no bias) + BN(3C);
//! 2. L cells; cells `L/3` and `2L/3` (integer division) are reduction cells and double the cell
//!    channels before they are built (C_cell starts at C). Cell i has inputs with C_pp and C_p
//!    channels (both 3C for the first cell; afterwards C_pp = the previous C_p and
//!    C_p = len(concat)·C_cell of the previous cell), and
//!    - preprocess0: FactorizedReduce(C_pp → C_cell) if the previous cell was a reduction cell
//!      (two 1×1 stride-2 convs C_pp → C_cell/2, BN(C_cell)), else ReLU-Conv1×1(C_pp → C_cell)-BN;
//!    - preprocess1: ReLU-Conv1×1(C_p → C_cell)-BN;
//!    - one op per edge (C_cell → C_cell) as in the table above, stride 2 only on edges of a
//!      reduction cell whose source is node 0 or 1;
//!    - output: concat of the nodes in the concat list.
//! 3. global average pooling, then Linear(C_p → num_classes) with bias.
//!
//! Multiply-adds count every conv (as above) plus the classifier's C_p·num_classes; BN, ReLU,
//! pools, sums and identities are free ("other ops" are not included). Null edges cost nothing,
//! but a node fed only by nulls still outputs zeros whose consumers are counted (NAT-SPEC §5.3).
//! Spatial sizes: the stem keeps H×W; a reduction cell outputs ⌈R/2⌉ for input resolution R.
//! C must be even (FactorizedReduce splits C_cell in two halves).

use serde::{Deserialize, Serialize};

use crate::dataset::{Dataset, DatasetShape};
use crate::genotype::{Cell, Genotype};
use crate::op::Op;

/// Cost of one op instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OpCost {
    /// Convolution weights (no biases: the convs have none).
    pub conv_params: u64,
    /// Affine BatchNorm parameters (2 per channel).
    pub bn_params: u64,
    /// Convolution multiply-adds.
    pub conv_madds: u64,
    /// Non-conv elementwise work that the NAT++ chart counts: pool window reads, identity copies.
    pub other_ops: u64,
}

impl OpCost {
    /// Trainable parameters (conv weights + affine BN), what PyTorch would count.
    pub fn params(&self) -> u64 {
        self.conv_params.saturating_add(self.bn_params)
    }

    /// "Params" as in the NAT++ cost chart (conv weights only).
    pub fn chart_params(&self) -> u64 {
        self.conv_params
    }

    /// "MAdds" as in the NAT++ cost chart (conv multiply-adds + pool reads + identity copies).
    pub fn chart_madds(&self) -> u64 {
        self.conv_madds.saturating_add(self.other_ops)
    }

    fn add(&mut self, o: OpCost) {
        self.conv_params = self.conv_params.saturating_add(o.conv_params);
        self.bn_params = self.bn_params.saturating_add(o.bn_params);
        self.conv_madds = self.conv_madds.saturating_add(o.conv_madds);
        self.other_ops = self.other_ops.saturating_add(o.other_ops);
    }
}

/// Output size of an op with stride `stride` on an input of size `n` (⌈n/stride⌉).
pub fn out_size(n: u64, stride: u64) -> u64 {
    if stride <= 1 {
        n
    } else {
        n.div_ceil(stride)
    }
}

/// Cost of `op` mapping `c` channels to `c` channels on an `h`×`w` input with the given stride
/// (1 or 2). See the module docs for the formulas.
pub fn op_cost(op: Op, c: u64, h: u64, w: u64, stride: u64) -> OpCost {
    let (ho, wo) = (out_size(h, stride), out_size(w, stride));
    let hw = mul(&[ho, wo]);
    let k = op.kernel() as u64;
    let bn = mul(&[2, c]);
    match op {
        Op::Conv1x1 | Op::Conv3x3 | Op::Conv5x5 => OpCost {
            conv_params: mul(&[c, c, k, k]),
            bn_params: bn,
            conv_madds: mul(&[c, c, k, k, hw]),
            other_ops: 0,
        },
        Op::Conv1x3_3x1 | Op::Conv1x7_7x1 => OpCost {
            conv_params: mul(&[2, c, c, k]),
            bn_params: bn,
            conv_madds: mul(&[c, c, k, h, wo]).saturating_add(mul(&[c, c, k, hw])),
            other_ops: 0,
        },
        Op::SepConv3x3 | Op::SepConv5x5 => {
            let block = mul(&[c, k, k]).saturating_add(mul(&[c, c]));
            OpCost {
                conv_params: mul(&[2, block]),
                bn_params: mul(&[2, bn]),
                conv_madds: mul(&[2, block, hw]),
                other_ops: 0,
            }
        }
        Op::DilConv3x3 | Op::DilConv5x5 => {
            let block = mul(&[c, k, k]).saturating_add(mul(&[c, c]));
            OpCost {
                conv_params: block,
                bn_params: bn,
                conv_madds: mul(&[block, hw]),
                other_ops: 0,
            }
        }
        Op::MaxPool3x3
        | Op::MaxPool5x5
        | Op::AvgPool3x3
        | Op::AvgPool5x5
        | Op::AvgPool2x2
        | Op::MaxPool2x2 => OpCost {
            other_ops: mul(&[c, k, k, hw]),
            ..OpCost::default()
        },
        Op::SkipConnect if stride <= 1 => OpCost {
            other_ops: mul(&[c, h, w]),
            ..OpCost::default()
        },
        Op::SkipConnect => factorized_reduce(c, c, h, w),
        Op::Null => OpCost::default(),
    }
}

impl Op {
    /// This op's cost at `c` channels on an `h`×`w` input with the given stride (see [`op_cost`]).
    pub fn cost(self, c: u64, h: u64, w: u64, stride: u64) -> OpCost {
        op_cost(self, c, h, w, stride)
    }
}

/// Saturating product: counts never wrap or panic, absurd inputs give `u64::MAX`.
fn mul(factors: &[u64]) -> u64 {
    factors.iter().fold(1u64, |acc, &f| acc.saturating_mul(f))
}

/// FactorizedReduce(c_in → c_out): two 1×1 stride-2 convs c_in → c_out/2, concat, BN(c_out).
fn factorized_reduce(c_in: u64, c_out: u64, h: u64, w: u64) -> OpCost {
    let half = c_out / 2;
    let hw = mul(&[out_size(h, 2), out_size(w, 2)]);
    OpCost {
        conv_params: mul(&[2, c_in, half]),
        bn_params: mul(&[2, c_out]),
        conv_madds: mul(&[2, c_in, half, hw]),
        other_ops: 0,
    }
}

/// ReLU-Conv1×1(c_in → c_out)-BN at h×w.
fn relu_conv_bn(c_in: u64, c_out: u64, h: u64, w: u64) -> OpCost {
    OpCost {
        conv_params: mul(&[c_in, c_out]),
        bn_params: mul(&[2, c_out]),
        conv_madds: mul(&[c_in, c_out, h, w]),
        other_ops: 0,
    }
}

/// The macro skeleton a genotype is costed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    /// Initial cell channels C (the stem has 3C). Must be even and ≥ 2.
    pub channels: u64,
    /// Number of cells L (≥ 1).
    pub layers: u64,
    /// Input image channels (3 for RGB, 1 for grey).
    pub in_channels: u64,
    /// Input image side in pixels (square images).
    pub image_size: u64,
    /// Classifier outputs.
    pub num_classes: u64,
}

impl NetworkSpec {
    /// The DARTS/NAT CIFAR-10 evaluation setting: C = 36, L = 20, 3×32×32, 10 classes.
    pub fn cifar10() -> NetworkSpec {
        NetworkSpec::for_dataset(Dataset::Cifar10, 36, 20)
    }

    /// Input shape and classes taken from a built-in `dataset` ([`NetworkSpec::for_shape`] of
    /// its shape).
    pub fn for_dataset(dataset: Dataset, channels: u64, layers: u64) -> NetworkSpec {
        NetworkSpec::for_shape(dataset.shape(), channels, layers)
    }

    /// Input shape and classes taken from a dataset's `shape` (a built-in's or a user's own).
    pub fn for_shape(shape: DatasetShape, channels: u64, layers: u64) -> NetworkSpec {
        NetworkSpec {
            channels,
            layers,
            in_channels: u64::from(shape.channels),
            image_size: u64::from(shape.image_size),
            num_classes: u64::from(shape.classes),
        }
    }

    /// Whether cell `i` is a reduction cell (`i == L/3 || i == 2L/3`).
    pub fn is_reduction(&self, i: u64) -> bool {
        // ⌊2L/3⌋ written so that it cannot overflow.
        let two_thirds = self.layers / 3 * 2 + (self.layers % 3) * 2 / 3;
        i == self.layers / 3 || i == two_thirds
    }

    /// Checks the spec; the error names the field.
    pub fn validate(&self) -> Result<(), CostError> {
        let bad = |field: &'static str, reason: &'static str, value: u64| CostError::Invalid {
            field,
            reason,
            value,
        };
        if self.channels < 2 || !self.channels.is_multiple_of(2) {
            return Err(bad(
                "channels",
                "must be even and at least 2",
                self.channels,
            ));
        }
        if self.layers == 0 {
            return Err(bad("layers", "must be at least 1", self.layers));
        }
        if self.in_channels == 0 {
            return Err(bad("in_channels", "must be at least 1", self.in_channels));
        }
        if self.image_size == 0 {
            return Err(bad("image_size", "must be at least 1", self.image_size));
        }
        if self.num_classes == 0 {
            return Err(bad("num_classes", "must be at least 1", self.num_classes));
        }
        // Keep every product far from u64 overflow.
        if self.channels > 1 << 16
            || self.layers > 1 << 12
            || self.image_size > 1 << 14
            || self.in_channels > 1 << 12
            || self.num_classes > 1 << 24
        {
            return Err(CostError::TooLarge);
        }
        Ok(())
    }
}

/// Bad cost-model input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CostError {
    /// A spec field out of range.
    #[error("{field} = {value}: {reason}")]
    Invalid {
        field: &'static str,
        reason: &'static str,
        value: u64,
    },
    /// Sizes so large the counts could overflow.
    #[error("network too large to cost (channels ≤ 65536, layers ≤ 4096, image_size ≤ 16384)")]
    TooLarge,
    /// The genotype is structurally invalid.
    #[error(transparent)]
    Arch(#[from] crate::error::ArchError),
}

/// Cost of a whole network, with a breakdown.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NetworkCost {
    /// Stem conv + BN.
    pub stem: OpCost,
    /// Each cell (preprocessing + edges), in order.
    pub cells: Vec<CellCost>,
    /// Classifier weights + biases.
    pub classifier_params: u64,
    /// Classifier multiply-adds.
    pub classifier_madds: u64,
}

/// Cost of one cell of the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CellCost {
    /// Reduction cell?
    pub reduction: bool,
    /// Cell channels C_cell.
    pub channels: u64,
    /// Input resolution (of c_{k-1}).
    pub input_size: u64,
    /// preprocess0 + preprocess1.
    pub preprocess: OpCost,
    /// All edges.
    pub edges: OpCost,
}

impl NetworkCost {
    /// Trainable parameters (what `sum(p.numel() for p in model.parameters())` gives without the
    /// auxiliary head).
    pub fn params(&self) -> u64 {
        self.cells
            .iter()
            .map(|c| c.preprocess.params().saturating_add(c.edges.params()))
            .fold(self.stem.params(), u64::saturating_add)
            .saturating_add(self.classifier_params)
    }

    /// Multiply-adds of one forward pass of one image (convs + classifier).
    pub fn madds(&self) -> u64 {
        self.cells
            .iter()
            .map(|c| c.preprocess.conv_madds.saturating_add(c.edges.conv_madds))
            .fold(self.stem.conv_madds, u64::saturating_add)
            .saturating_add(self.classifier_madds)
    }
}

/// Cost of the edges of `cell` at `c` channels and input resolution `size`.
fn cell_edges(cell: &Cell, c: u64, size: u64, reduction: bool) -> OpCost {
    let mut total = OpCost::default();
    for (op, from, _) in cell.edges() {
        let (stride, s) = if reduction && from < 2 {
            (2, size)
        } else if reduction {
            (1, out_size(size, 2))
        } else {
            (1, size)
        };
        total.add(op_cost(op, c, s, s, stride));
    }
    total
}

/// Parameters and multiply-adds of the evaluation network built from `genotype` (see the module
/// docs for exactly what is counted).
pub fn network_cost(genotype: &Genotype, spec: &NetworkSpec) -> Result<NetworkCost, CostError> {
    spec.validate()?;
    genotype.validate()?;
    let c = spec.channels;
    let size = spec.image_size;
    let c_stem = 3 * c;
    let stem = OpCost {
        conv_params: mul(&[spec.in_channels, c_stem, 9]),
        bn_params: mul(&[2, c_stem]),
        conv_madds: mul(&[spec.in_channels, c_stem, 9, size, size]),
        other_ops: 0,
    };
    let (mut c_pp, mut c_p, mut c_cur) = (c_stem, c_stem, c);
    // Resolutions of c_{k-2} and c_{k-1}.
    let (mut r_pp, mut r_p) = (size, size);
    let mut reduction_prev = false;
    let mut cells = Vec::with_capacity(spec.layers as usize);
    for i in 0..spec.layers {
        let reduction = spec.is_reduction(i);
        if reduction {
            c_cur *= 2;
        }
        let cell = if reduction {
            &genotype.reduce
        } else {
            &genotype.normal
        };
        let mut pre = if reduction_prev {
            factorized_reduce(c_pp, c_cur, r_pp, r_pp)
        } else {
            relu_conv_bn(c_pp, c_cur, r_pp, r_pp)
        };
        pre.add(relu_conv_bn(c_p, c_cur, r_p, r_p));
        let edges = cell_edges(cell, c_cur, r_p, reduction);
        cells.push(CellCost {
            reduction,
            channels: c_cur,
            input_size: r_p,
            preprocess: pre,
            edges,
        });
        let r_out = if reduction { out_size(r_p, 2) } else { r_p };
        reduction_prev = reduction;
        c_pp = c_p;
        c_p = mul(&[cell.concat.len() as u64, c_cur]);
        r_pp = r_p;
        r_p = r_out;
    }
    Ok(NetworkCost {
        stem,
        cells,
        classifier_params: mul(&[c_p, spec.num_classes]).saturating_add(spec.num_classes),
        classifier_madds: mul(&[c_p, spec.num_classes]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presets;

    /// NAT-SPEC §2.2 cost chart: (op, MAdds in M, params in K) at C = 128, 32×32.
    const CHART: &[(Op, f64, f64)] = &[
        (Op::Conv5x5, 419.4, 409.6),
        (Op::Conv3x3, 151.0, 147.5),
        (Op::SepConv5x5, 40.1, 39.2),
        (Op::SepConv3x3, 35.9, 35.1),
        (Op::DilConv5x5, 20.1, 19.6),
        (Op::DilConv3x3, 18.0, 17.5),
        (Op::Conv1x1, 16.8, 16.4),
        (Op::MaxPool5x5, 3.3, 0.0),
        (Op::AvgPool5x5, 3.3, 0.0),
        (Op::MaxPool3x3, 1.2, 0.0),
        (Op::AvgPool3x3, 1.2, 0.0),
        (Op::SkipConnect, 0.1, 0.0),
        (Op::Null, 0.0, 0.0),
    ];

    #[test]
    fn reproduces_nat_pp_chart() {
        for &(op, madds_m, params_k) in CHART {
            let cost = op_cost(op, 128, 32, 32, 1);
            let m = cost.chart_madds() as f64 / 1e6;
            let k = cost.chart_params() as f64 / 1e3;
            // Within 1 %, or equal at the chart's printed precision (one decimal) for the tiny
            // entries (skip: 0.131 M prints as 0.1).
            let close = |ours: f64, chart: f64| {
                (ours - chart).abs() <= 0.01 * chart
                    || format!("{ours:.1}") == format!("{chart:.1}")
            };
            assert!(close(m, madds_m), "{op}: {m} M vs chart {madds_m}");
            assert!(close(k, params_k), "{op}: {k} K vs chart {params_k}");
        }
    }

    #[test]
    fn stride_two_costs() {
        // FactorizedReduce at C=16, 8x8 -> 4x4: 16*16 weights, 2*16 BN, 16*16*16 madds.
        let fr = Op::SkipConnect.cost(16, 8, 8, 2);
        assert_eq!(
            fr,
            OpCost {
                conv_params: 256,
                bn_params: 32,
                conv_madds: 256 * 16,
                other_ops: 0
            }
        );
        // Odd input: 7x7 -> 4x4.
        assert_eq!(op_cost(Op::Conv3x3, 4, 7, 7, 2).conv_madds, 4 * 4 * 9 * 16);
        // conv_1x3_3x1 with stride 2 on 8x8: first conv 8x4, second 4x4.
        assert_eq!(
            op_cost(Op::Conv1x3_3x1, 2, 8, 8, 2).conv_madds,
            4 * 3 * 32 + 4 * 3 * 16
        );
    }

    /// A hand count of a tiny network: VGG block genotype, C=2, L=1 (cell 0 is a reduction).
    #[test]
    fn hand_counted_tiny_network() {
        let g = presets::get("vgg-block").expect("preset").genotype();
        let spec = NetworkSpec {
            channels: 2,
            layers: 1,
            in_channels: 1,
            image_size: 4,
            num_classes: 3,
        };
        let cost = network_cost(&g, &spec).expect("cost");
        // stem: conv 1->6 3x3 = 54, BN 12.
        // cell 0 (reduction, C_cell = 4): pre0 conv 6->4 = 24 + BN 8; pre1 same = 32.
        // edges: null; skip from 1 at stride 2 = FR(4): 16 + 8; null; conv3 from 2: 144 + 8;
        //        null; conv3: 152; null; max_pool from 4: 0.
        // classifier: concat [5] -> 4 channels: 4*3 + 3 = 15.
        let expected = 54 + 12 + 32 + 32 + (16 + 8) + 152 + 152 + 15;
        assert_eq!(cost.params(), expected);
        // madds: stem 54*16; pre 24*16*2; FR 16*4; conv3 144*4 twice; classifier 12.
        assert_eq!(
            cost.madds(),
            54 * 16 + 2 * 24 * 16 + 16 * 4 + 2 * 144 * 4 + 12
        );
    }

    #[test]
    fn darts_v2_cifar_is_about_3_3_m_params() {
        // DARTS reports 3.3 M params for DARTS_V2 at C=36, L=20 (aux head excluded).
        let g = presets::get("darts-v2").expect("preset").genotype();
        let cost = network_cost(&g, &NetworkSpec::cifar10()).expect("cost");
        let p = cost.params() as f64 / 1e6;
        assert!((3.2..3.4).contains(&p), "{p} M");
        // DARTS-V2 at C=36, L=20 is ~530 M multiply-adds (paper tables quote 528 M / 533 M).
        let m = cost.madds() as f64 / 1e6;
        assert!((500.0..560.0).contains(&m), "{m} M MAdds");
    }

    #[test]
    fn reduction_positions() {
        for layers in 1..50u64 {
            let spec = NetworkSpec {
                layers,
                ..NetworkSpec::cifar10()
            };
            let red: Vec<u64> = (0..layers).filter(|&i| spec.is_reduction(i)).collect();
            let mut want = vec![layers / 3, 2 * layers / 3];
            want.dedup();
            assert_eq!(red, want, "L={layers}");
        }
        let spec = NetworkSpec {
            layers: u64::MAX,
            ..NetworkSpec::cifar10()
        };
        assert!(spec.is_reduction(u64::MAX / 3 * 2));
    }

    #[test]
    fn huge_inputs_saturate_instead_of_overflowing() {
        let c = op_cost(Op::Conv5x5, u64::MAX / 3, u64::MAX, 7, 1);
        assert_eq!(c.conv_madds, u64::MAX);
        assert_eq!(c.chart_madds(), u64::MAX);
        let g = presets::get("naonet").expect("preset").genotype();
        let spec = NetworkSpec {
            channels: 1 << 16,
            layers: 1 << 12,
            in_channels: 1 << 12,
            image_size: 1 << 14,
            num_classes: 1 << 24,
        };
        let cost = network_cost(&g, &spec).expect("within limits");
        assert_eq!(cost.madds(), u64::MAX);
    }

    #[test]
    fn bad_specs_name_the_field() {
        let g = presets::get("darts-v2").expect("preset").genotype();
        let mut spec = NetworkSpec::cifar10();
        spec.channels = 7;
        let err = network_cost(&g, &spec).unwrap_err();
        assert!(err.to_string().starts_with("channels = 7"), "{err}");
        let mut spec = NetworkSpec::cifar10();
        spec.layers = 0;
        assert!(network_cost(&g, &spec)
            .unwrap_err()
            .to_string()
            .starts_with("layers"));
    }

    #[test]
    fn small_images_work() {
        let g = presets::get("enas").expect("preset").genotype();
        for d in Dataset::ALL {
            let spec = NetworkSpec::for_dataset(d, 8, 5);
            let cost = network_cost(&g, &spec).expect("cost");
            assert_eq!(cost.cells.len(), 5);
            assert!(cost.params() > 0);
        }
        // digits, L=5: reductions at cells 1 and 3 (input resolution of c_{k-1}: 8, 8, 4, 4, 2).
        let cost =
            network_cost(&g, &NetworkSpec::for_dataset(Dataset::Digits, 8, 5)).expect("cost");
        let sizes: Vec<u64> = cost.cells.iter().map(|c| c.input_size).collect();
        assert_eq!(sizes, vec![8, 8, 4, 4, 2]);
    }

    #[test]
    fn a_user_shape_sets_input_and_classifier() {
        let g = presets::get("darts-v2").expect("preset").genotype();
        let shape = DatasetShape {
            channels: 3,
            image_size: 64,
            classes: 37,
        };
        let spec = NetworkSpec::for_shape(shape, 8, 5);
        assert_eq!(
            (spec.in_channels, spec.image_size, spec.num_classes),
            (3, 64, 37)
        );
        // A built-in's spec is the spec of its shape.
        for d in Dataset::ALL {
            assert_eq!(
                NetworkSpec::for_dataset(d, 8, 5),
                NetworkSpec::for_shape(d.shape(), 8, 5)
            );
        }
        // More classes: a bigger classifier; bigger images: more multiply-adds, same params.
        let base =
            network_cost(&g, &NetworkSpec::for_dataset(Dataset::Cifar10, 8, 5)).expect("cost");
        let user = network_cost(&g, &spec).expect("cost");
        assert!(
            user.params() > base.params(),
            "{} vs {}",
            user.params(),
            base.params()
        );
        assert!(user.madds() > base.madds());
        let wide = DatasetShape {
            classes: 10,
            ..shape
        };
        let wide = network_cost(&g, &NetworkSpec::for_shape(wide, 8, 5)).expect("cost");
        assert_eq!(wide.params(), base.params());
        assert!(wide.madds() > base.madds());
    }
}
