//! The CIFAR-style evaluation network built from a genotype (NAT-SPEC §1.3–1.4, DARTS
//! `NetworkCIFAR`).

use nat_arch::{Cell, CellKind, Dataset, DatasetShape, Genotype};
use tch::nn::Path;
use tch::{Kind, TchError, Tensor};

use super::layers::{
    halve, relu_conv_bn, BatchNorm, Conv, ConvSpec, FactorizedReduce, Linear, Sequential,
};
use super::ops::{OpModule, OpOptions};
use crate::error::ModelError;

/// Shape of an evaluation network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkConfig {
    /// C: channels of the first cells (the stem outputs 3·C).
    pub init_channels: i64,
    /// L: number of cells; cells L/3 and 2L/3 are reduction cells.
    pub layers: i64,
    /// Input channels (1 grey, 3 RGB).
    pub in_channels: i64,
    /// Input side in pixels (8, 28, 32).
    pub image_size: i64,
    pub num_classes: i64,
    /// Build the auxiliary head after cell 2L/3 (its parameters are not counted in
    /// [`Network::params`]).
    pub auxiliary: bool,
}

impl NetworkConfig {
    /// The input shape of `dataset` with the given width and depth.
    pub fn for_dataset(dataset: Dataset, init_channels: i64, layers: i64, auxiliary: bool) -> Self {
        Self::for_shape(dataset.shape(), init_channels, layers, auxiliary)
    }

    /// A network for inputs of `shape` with the given width and depth.
    pub fn for_shape(
        shape: DatasetShape,
        init_channels: i64,
        layers: i64,
        auxiliary: bool,
    ) -> Self {
        NetworkConfig {
            init_channels,
            layers,
            in_channels: i64::from(shape.channels),
            image_size: i64::from(shape.image_size),
            num_classes: i64::from(shape.classes),
            auxiliary,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ModelError> {
        let check = |field: &'static str, value: i64, lo: i64, hi: i64| {
            if (lo..=hi).contains(&value) {
                Ok(())
            } else {
                Err(ModelError::InvalidConfig {
                    field,
                    reason: format!("{value} is outside {lo}..={hi}"),
                })
            }
        };
        check("init_channels", self.init_channels, 1, 1024)?;
        check("layers", self.layers, 1, 200)?;
        check("in_channels", self.in_channels, 1, 16)?;
        check("image_size", self.image_size, 1, 1024)?;
        check("num_classes", self.num_classes, 2, 100_000)
    }

    /// Whether cell `index` is a reduction cell.
    pub fn is_reduction(&self, index: i64) -> bool {
        index == self.layers / 3 || index == 2 * self.layers / 3
    }
}

/// Output of a forward pass.
#[derive(Debug)]
pub struct NetworkOutput {
    pub logits: Tensor,
    /// Auxiliary logits (training only, when the network has an auxiliary head).
    pub aux_logits: Option<Tensor>,
}

/// Checks that a cell can be built: node inputs come from earlier nodes, concat lists nodes.
pub(crate) fn validate_cell(kind: CellKind, cell: &Cell) -> Result<(), ModelError> {
    if cell.nodes.is_empty() {
        return Err(ModelError::InvalidGenotype(format!(
            "{kind:?} cell has no node"
        )));
    }
    for (i, node) in cell.nodes.iter().enumerate() {
        let id = i + 2;
        for edge in &node.inputs {
            if edge.from >= id {
                return Err(ModelError::InvalidGenotype(format!(
                    "{kind:?} cell: node {id} takes input from node {} (must be < {id})",
                    edge.from
                )));
            }
        }
    }
    if cell.concat.is_empty() {
        return Err(ModelError::InvalidGenotype(format!(
            "{kind:?} cell: empty concat list"
        )));
    }
    let last = cell.nodes.len() + 1;
    if let Some(bad) = cell.concat.iter().find(|&&n| n < 2 || n > last) {
        return Err(ModelError::InvalidGenotype(format!(
            "{kind:?} cell: concat lists node {bad}, expected 2..={last}"
        )));
    }
    Ok(())
}

/// Cell preprocessing of input 0.
#[derive(Debug)]
pub(crate) enum Preprocess {
    Reduce(Box<FactorizedReduce>),
    Conv(Sequential),
}

impl Preprocess {
    pub fn new(
        path: &Path,
        cin: i64,
        cout: i64,
        reduce: bool,
        affine: bool,
    ) -> Result<Self, TchError> {
        Ok(if reduce {
            Preprocess::Reduce(Box::new(FactorizedReduce::new(path, cin, cout, affine)?))
        } else {
            Preprocess::Conv(relu_conv_bn(path, cin, cout, 1, 1, 0, affine)?)
        })
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        match self {
            Preprocess::Reduce(fr) => fr.forward(x, train),
            Preprocess::Conv(seq) => seq.forward(x, train),
        }
    }

    pub fn madds(&self, side: i64) -> u64 {
        match self {
            Preprocess::Reduce(fr) => fr.madds(side),
            Preprocess::Conv(seq) => seq.madds(side).0,
        }
    }
}

struct EvalEdge {
    op: OpModule,
    from: usize,
}

struct EvalCell {
    pre0: Preprocess,
    pre1: Preprocess,
    nodes: Vec<[EvalEdge; 2]>,
    concat: Vec<usize>,
}

/// Drop-path: zero whole examples with probability `p`, scale the rest by 1/(1-p).
fn drop_path(x: &Tensor, p: f64) -> Result<Tensor, TchError> {
    let n = x.size().first().copied().unwrap_or(0);
    let mask =
        Tensor::f_empty([n, 1, 1, 1], (Kind::Float, x.device()))?.f_bernoulli_float_(1.0 - p)?;
    x.f_div_scalar(1.0 - p)?.f_mul(&mask)
}

impl EvalCell {
    fn forward(
        &self,
        s0: &Tensor,
        s1: &Tensor,
        train: bool,
        drop_prob: f64,
    ) -> Result<Tensor, TchError> {
        let mut states = vec![self.pre0.forward(s0, train)?, self.pre1.forward(s1, train)?];
        for node in &self.nodes {
            let mut sum: Option<Tensor> = None;
            for edge in node {
                let mut h = edge.op.forward(&states[edge.from], train)?;
                if train && drop_prob > 0.0 && !edge.op.is_identity() {
                    h = drop_path(&h, drop_prob)?;
                }
                sum = Some(match sum {
                    Some(acc) => acc.f_add(&h)?,
                    None => h,
                });
            }
            states.push(sum.unwrap_or_default());
        }
        let outs: Vec<&Tensor> = self.concat.iter().map(|&i| &states[i]).collect();
        Tensor::f_cat(&outs, 1)
    }
}

/// DARTS' CIFAR auxiliary head: ReLU, AvgPool(5, stride 3) (adaptive 2×2 pool when the input is
/// not 8×8), 1×1 conv → 128, BN, ReLU, 2×2 conv → 768, BN, ReLU, Linear.
struct AuxHead {
    side: i64,
    conv1: Conv,
    bn1: BatchNorm,
    conv2: Conv,
    bn2: BatchNorm,
    classifier: Linear,
}

impl AuxHead {
    fn new(path: &Path, c: i64, side: i64, classes: i64) -> Result<Self, TchError> {
        Ok(AuxHead {
            side,
            conv1: Conv::new(path, "conv1", ConvSpec::square(c, 128, 1, 1, 0))?,
            bn1: BatchNorm::new(&(path / "bn1"), 128, true)?,
            conv2: Conv::new(path, "conv2", ConvSpec::square(128, 768, 2, 1, 0))?,
            bn2: BatchNorm::new(&(path / "bn2"), 768, true)?,
            classifier: Linear::new(&(path / "classifier"), 768, classes)?,
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        let x = x.f_relu()?;
        let x = if self.side == 8 {
            x.f_avg_pool2d([5, 5], [3, 3], [0, 0], false, false, None)?
        } else {
            x.f_adaptive_avg_pool2d([2, 2])?
        };
        let x = self
            .bn1
            .forward(&self.conv1.forward(&x)?, train)?
            .f_relu()?;
        let x = self
            .bn2
            .forward(&self.conv2.forward(&x)?, train)?
            .f_relu()?;
        self.classifier.forward(&x.f_flatten(1, -1)?)
    }
}

/// The evaluation network of a genotype.
pub struct Network {
    stem_conv: Conv,
    stem_bn: BatchNorm,
    cells: Vec<EvalCell>,
    aux: Option<(usize, AuxHead)>,
    classifier: Linear,
    madds: u64,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("cells", &self.cells.len())
            .field("auxiliary", &self.aux.is_some())
            .field("madds", &self.madds)
            .finish()
    }
}

impl Network {
    /// Builds the network under `path`: the main network under `path / "net"`, the auxiliary
    /// head under `path / "aux"`.
    pub fn new(
        path: &Path,
        genotype: &Genotype,
        config: &NetworkConfig,
    ) -> Result<Self, ModelError> {
        config.validate()?;
        validate_cell(CellKind::Normal, &genotype.normal)?;
        validate_cell(CellKind::Reduce, &genotype.reduce)?;
        let net = path / "net";
        let c = config.init_channels;
        let stem_c = 3 * c;
        let stem_conv = Conv::new(
            &(&net / "stem"),
            "conv",
            ConvSpec::square(config.in_channels, stem_c, 3, 1, 1),
        )?;
        let stem_bn = BatchNorm::new(&(&net / "stem" / "bn"), stem_c, true)?;
        let mut madds = stem_conv.madds(config.image_size, config.image_size);

        let options = OpOptions {
            affine: true,
            pool_bn: false,
        };
        let (mut c_pp, mut c_p, mut c_cur) = (stem_c, stem_c, c);
        let (mut side_pp, mut side_p) = (config.image_size, config.image_size);
        let mut reduction_prev = false;
        let mut cells = Vec::with_capacity(config.layers as usize);
        let mut aux = None;
        for index in 0..config.layers {
            let reduction = config.is_reduction(index);
            if reduction {
                c_cur *= 2;
            }
            let kind = if reduction {
                CellKind::Reduce
            } else {
                CellKind::Normal
            };
            let cell = genotype.cell(kind);
            let cp = &net / format!("cell{index}");
            let pre0 = Preprocess::new(&(&cp / "pre0"), c_pp, c_cur, reduction_prev, true)?;
            let pre1 = Preprocess::new(&(&cp / "pre1"), c_p, c_cur, false, true)?;
            madds += pre0.madds(side_pp) + pre1.madds(side_p);
            let side_in = side_p;
            let mut nodes = Vec::with_capacity(cell.nodes.len());
            for (i, node) in cell.nodes.iter().enumerate() {
                let mut build = |slot: usize| -> Result<EvalEdge, TchError> {
                    let edge = node.inputs[slot];
                    let stride = if reduction && edge.from < 2 { 2 } else { 1 };
                    let side = if edge.from < 2 || !reduction {
                        side_in
                    } else {
                        halve(side_in)
                    };
                    let op = OpModule::new(
                        &(&cp / format!("node{}_{slot}", i + 2)),
                        edge.op,
                        c_cur,
                        stride,
                        options,
                    )?;
                    madds += op.madds(side);
                    Ok(EvalEdge {
                        op,
                        from: edge.from,
                    })
                };
                let first = build(0)?;
                let second = build(1)?;
                nodes.push([first, second]);
            }
            cells.push(EvalCell {
                pre0,
                pre1,
                nodes,
                concat: cell.concat.clone(),
            });
            let side_out = if reduction { halve(side_in) } else { side_in };
            (c_pp, c_p) = (c_p, cell.concat.len() as i64 * c_cur);
            (side_pp, side_p) = (side_p, side_out);
            reduction_prev = reduction;
            if config.auxiliary && index == 2 * config.layers / 3 {
                aux = Some((
                    index as usize,
                    AuxHead::new(&(path / "aux"), c_p, side_p, config.num_classes)?,
                ));
            }
        }
        let classifier = Linear::new(&(&net / "classifier"), c_p, config.num_classes)?;
        madds += classifier.madds();
        Ok(Network {
            stem_conv,
            stem_bn,
            cells,
            aux,
            classifier,
            madds,
        })
    }

    /// Forward pass. `drop_path_prob` applies in training mode only; auxiliary logits are returned
    /// in training mode only.
    pub fn forward(
        &self,
        x: &Tensor,
        train: bool,
        drop_path_prob: f64,
    ) -> Result<NetworkOutput, ModelError> {
        let stem = self.stem_bn.forward(&self.stem_conv.forward(x)?, train)?;
        let (mut s0, mut s1) = (stem.shallow_clone(), stem);
        let mut aux_logits = None;
        for (index, cell) in self.cells.iter().enumerate() {
            let out = cell.forward(&s0, &s1, train, drop_path_prob)?;
            (s0, s1) = (s1, out);
            if let Some((aux_index, head)) = &self.aux {
                if train && *aux_index == index {
                    aux_logits = Some(head.forward(&s1, train)?);
                }
            }
        }
        let pooled = s1.f_adaptive_avg_pool2d([1, 1])?.f_flatten(1, -1)?;
        Ok(NetworkOutput {
            logits: self.classifier.forward(&pooled)?,
            aux_logits,
        })
    }

    /// Multiply-adds of one forward pass of one image (auxiliary head excluded), NAT-SPEC §5.3.
    pub fn madds(&self) -> u64 {
        self.madds
    }
}

/// Trainable parameters under `prefix` (e.g. `"net"`) in a var store: what NAT counts as the
/// network's size (the auxiliary head lives under `"aux"` and is excluded that way).
pub fn count_params(vs: &tch::nn::VarStore, prefix: &str) -> u64 {
    let dotted = format!("{prefix}.");
    vs.variables()
        .iter()
        .filter(|(name, t)| t.requires_grad() && (name.starts_with(&dotted) || *name == prefix))
        .map(|(_, t)| t.numel() as u64)
        .sum()
}
