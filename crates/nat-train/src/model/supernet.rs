//! The weight-sharing supernet of NAT-SPEC §4.3: every edge slot of every cell holds one instance
//! of every op of the op set (BN affine = false, pools followed by an affine-free BN); a forward
//! pass runs only the ops a (normal, reduce) architecture chooses.

use nat_arch::{Cell, CellKind, Dataset, DatasetShape, OpSet};
use tch::nn::Path;
use tch::Tensor;

use super::layers::{halve, BatchNorm, Conv, ConvSpec, Linear};
use super::network::{validate_cell, Preprocess};
use super::ops::{OpModule, OpOptions};
use crate::error::ModelError;

/// Which intermediate nodes a supernet cell outputs (always B·C channels; the others are zeroed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SupernetConcat {
    /// All B intermediate nodes (NAT fully-concat mode).
    All,
    /// Nodes no other node uses as input (NAT loose-end mode).
    LooseEnd,
    /// The nodes in the genotype's concat list.
    Genotype,
}

impl SupernetConcat {
    /// The mode the official code uses for an op set: loose-end for the loose-end list, else all.
    pub fn for_op_set(op_set: OpSet) -> Self {
        match op_set {
            OpSet::NatLooseEnd => SupernetConcat::LooseEnd,
            OpSet::NatFullyConcat | OpSet::NatPlusPlus => SupernetConcat::All,
        }
    }
}

/// Shape of a supernet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SupernetConfig {
    pub init_channels: i64,
    pub layers: i64,
    /// B: intermediate nodes per cell.
    pub num_nodes: usize,
    pub op_set: OpSet,
    pub in_channels: i64,
    pub image_size: i64,
    pub num_classes: i64,
    pub concat: SupernetConcat,
}

impl SupernetConfig {
    /// The input shape of `dataset`, the concat mode of `op_set`.
    pub fn for_dataset(
        dataset: Dataset,
        init_channels: i64,
        layers: i64,
        num_nodes: usize,
        op_set: OpSet,
    ) -> Self {
        Self::for_shape(dataset.shape(), init_channels, layers, num_nodes, op_set)
    }

    /// Inputs of `shape`, the concat mode of `op_set`.
    pub fn for_shape(
        shape: DatasetShape,
        init_channels: i64,
        layers: i64,
        num_nodes: usize,
        op_set: OpSet,
    ) -> Self {
        SupernetConfig {
            init_channels,
            layers,
            num_nodes,
            op_set,
            in_channels: i64::from(shape.channels),
            image_size: i64::from(shape.image_size),
            num_classes: i64::from(shape.classes),
            concat: SupernetConcat::for_op_set(op_set),
        }
    }

    fn validate(&self) -> Result<(), ModelError> {
        let shape = super::network::NetworkConfig {
            init_channels: self.init_channels,
            layers: self.layers,
            in_channels: self.in_channels,
            image_size: self.image_size,
            num_classes: self.num_classes,
            auxiliary: false,
        };
        shape.validate()?;
        if !(1..=8).contains(&self.num_nodes) {
            return Err(ModelError::InvalidConfig {
                field: "num_nodes",
                reason: format!("{} is outside 1..=8", self.num_nodes),
            });
        }
        Ok(())
    }
}

/// Edge slot of the edge `from → to` (to ≥ 2): `(to-2)(to+1)/2 + from`.
pub fn slot_id(from: usize, to: usize) -> usize {
    (to - 2) * (to + 1) / 2 + from
}

struct SuperCell {
    pre0: Preprocess,
    pre1: Preprocess,
    /// `slots[slot][op index in the op set]`.
    slots: Vec<Vec<OpModule>>,
    reduction: bool,
}

/// The weight-sharing supernet.
pub struct Supernet {
    config: SupernetConfig,
    stem_conv: Conv,
    stem_bn: BatchNorm,
    cells: Vec<SuperCell>,
    classifier: Linear,
}

impl std::fmt::Debug for Supernet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supernet")
            .field("config", &self.config)
            .finish()
    }
}

impl Supernet {
    /// Builds the supernet under `path / "supernet"`.
    pub fn new(path: &Path, config: &SupernetConfig) -> Result<Self, ModelError> {
        config.validate()?;
        let root = path / "supernet";
        let c = config.init_channels;
        let stem_c = 3 * c;
        let stem_conv = Conv::new(
            &(&root / "stem"),
            "conv",
            ConvSpec::square(config.in_channels, stem_c, 3, 1, 1),
        )?;
        let stem_bn = BatchNorm::new(&(&root / "stem" / "bn"), stem_c, true)?;
        let options = OpOptions {
            affine: false,
            pool_bn: true,
        };
        let b = config.num_nodes as i64;
        let (mut c_pp, mut c_p, mut c_cur) = (stem_c, stem_c, c);
        let mut reduction_prev = false;
        let mut cells = Vec::with_capacity(config.layers as usize);
        let shape = super::network::NetworkConfig {
            init_channels: c,
            layers: config.layers,
            in_channels: config.in_channels,
            image_size: config.image_size,
            num_classes: config.num_classes,
            auxiliary: false,
        };
        let mut side = config.image_size;
        for index in 0..config.layers {
            let reduction = shape.is_reduction(index);
            if reduction {
                c_cur *= 2;
            }
            let cp = &root / format!("cell{index}");
            let pre0 = Preprocess::new(&(&cp / "pre0"), c_pp, c_cur, reduction_prev, false)?;
            let pre1 = Preprocess::new(&(&cp / "pre1"), c_p, c_cur, false, false)?;
            let mut slots = Vec::new();
            for to in 2..config.num_nodes + 2 {
                for from in 0..to {
                    let stride = if reduction && from < 2 { 2 } else { 1 };
                    let sp = &cp / format!("slot{}", slot_id(from, to));
                    let ops = config
                        .op_set
                        .ops()
                        .iter()
                        .map(|&op| OpModule::new(&(&sp / op.name()), op, c_cur, stride, options))
                        .collect::<Result<Vec<_>, _>>()?;
                    slots.push(ops);
                }
            }
            cells.push(SuperCell {
                pre0,
                pre1,
                slots,
                reduction,
            });
            (c_pp, c_p) = (c_p, b * c_cur);
            reduction_prev = reduction;
            if reduction {
                side = halve(side);
            }
        }
        debug_assert!(side >= 1);
        let classifier = Linear::new(&(&root / "classifier"), c_p, config.num_classes)?;
        Ok(Supernet {
            config: *config,
            stem_conv,
            stem_bn,
            cells,
            classifier,
        })
    }

    pub fn config(&self) -> &SupernetConfig {
        &self.config
    }

    /// Checks that a cell fits this supernet: B nodes, every op in the op set, valid inputs.
    pub fn check_cell(&self, kind: CellKind, cell: &Cell) -> Result<(), ModelError> {
        validate_cell(kind, cell)?;
        if cell.nodes.len() != self.config.num_nodes {
            return Err(ModelError::InvalidGenotype(format!(
                "{kind:?} cell has {} nodes, the supernet has {}",
                cell.nodes.len(),
                self.config.num_nodes
            )));
        }
        for (i, node) in cell.nodes.iter().enumerate() {
            for edge in &node.inputs {
                if self.config.op_set.index_of(edge.op).is_none() {
                    return Err(ModelError::InvalidGenotype(format!(
                        "{kind:?} cell: node {} uses {}, which is not in the op set {:?}",
                        i + 2,
                        edge.op,
                        self.config.op_set
                    )));
                }
            }
        }
        Ok(())
    }

    /// Logits of the architecture (`normal`, `reduce`). Validate the cells with
    /// [`Supernet::check_cell`] first (done here too; an invalid cell is an error, never a panic).
    pub fn forward(
        &self,
        x: &Tensor,
        normal: &Cell,
        reduce: &Cell,
        train: bool,
    ) -> Result<Tensor, ModelError> {
        self.check_cell(CellKind::Normal, normal)?;
        self.check_cell(CellKind::Reduce, reduce)?;
        let stem = self.stem_bn.forward(&self.stem_conv.forward(x)?, train)?;
        let (mut s0, mut s1) = (stem.shallow_clone(), stem);
        for cell in &self.cells {
            let arch = if cell.reduction { reduce } else { normal };
            let out = self.cell_forward(cell, arch, &s0, &s1, train)?;
            (s0, s1) = (s1, out);
        }
        let pooled = s1.f_adaptive_avg_pool2d([1, 1])?.f_flatten(1, -1)?;
        Ok(self.classifier.forward(&pooled)?)
    }

    fn cell_forward(
        &self,
        cell: &SuperCell,
        arch: &Cell,
        s0: &Tensor,
        s1: &Tensor,
        train: bool,
    ) -> Result<Tensor, ModelError> {
        let mut states = vec![cell.pre0.forward(s0, train)?, cell.pre1.forward(s1, train)?];
        for (i, node) in arch.nodes.iter().enumerate() {
            let to = i + 2;
            let mut sum: Option<Tensor> = None;
            for edge in &node.inputs {
                let op_index = self.config.op_set.index_of(edge.op).ok_or_else(|| {
                    ModelError::InvalidGenotype(format!("{} is not in the op set", edge.op))
                })?;
                let module = cell
                    .slots
                    .get(slot_id(edge.from, to))
                    .and_then(|ops| ops.get(op_index))
                    .ok_or_else(|| {
                        ModelError::InvalidGenotype(format!("no edge slot {} -> {to}", edge.from))
                    })?;
                let h = module.forward(&states[edge.from], train)?;
                sum = Some(match sum {
                    Some(acc) => acc.f_add(&h)?,
                    None => h,
                });
            }
            states.push(sum.unwrap_or_default());
        }
        let keep = self.kept_nodes(arch);
        let mut outs = Vec::with_capacity(arch.nodes.len());
        for (i, state) in states.iter().enumerate().skip(2) {
            outs.push(if keep[i - 2] {
                state.shallow_clone()
            } else {
                state.f_mul_scalar(0.0)?
            });
        }
        Ok(Tensor::f_cat(&outs, 1)?)
    }

    fn kept_nodes(&self, arch: &Cell) -> Vec<bool> {
        let b = arch.nodes.len();
        match self.config.concat {
            SupernetConcat::All => vec![true; b],
            SupernetConcat::Genotype => (0..b).map(|i| arch.concat.contains(&(i + 2))).collect(),
            SupernetConcat::LooseEnd => {
                let mut used = vec![false; b];
                for node in &arch.nodes {
                    for edge in &node.inputs {
                        if edge.from >= 2 {
                            used[edge.from - 2] = true;
                        }
                    }
                }
                used.iter().map(|u| !u).collect()
            }
        }
    }
}
