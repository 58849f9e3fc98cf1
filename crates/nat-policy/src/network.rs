//! The policy network of NAT-SPEC §3: embeddings → Linear(2E→F) → two GCN layers over the input
//! cell's adjacency → per-node head Linear(G→2K).

use candle_core::{DType, Device, Tensor, Var};
use nat_arch::Cell;
use rand::Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::config::PolicyConfig;
use crate::error::{PolicyError, Result};

/// Names of the parameters, in a fixed order (used for serialization and the optimizer).
pub const PARAM_NAMES: [&str; 10] = [
    "op_emb", "node_emb", "emb_w", "emb_b", "gc1_w", "gc1_b", "gc2_w", "gc2_b", "head_w", "head_b",
];

/// The trainable parameters.
#[derive(Debug)]
pub struct PolicyNet {
    config: PolicyConfig,
    device: Device,
    /// In [`PARAM_NAMES`] order.
    params: Vec<Var>,
}

/// Validated integer form of a batch of cells with the same number of intermediate nodes.
pub(crate) struct CellBatch {
    /// Number of cells.
    pub n: usize,
    /// Intermediate nodes per cell (B).
    pub nodes: usize,
    /// Op index (in the space's op set) of every edge, `n × 2B`, edge-list order.
    pub op_ids: Vec<u32>,
    /// Row-major `n × (B+2) × (B+2)` adjacency, already in the profile's form.
    pub adjacency: Vec<f64>,
}

impl PolicyNet {
    /// A freshly initialised network (torch default inits, seeded).
    pub fn new(config: PolicyConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (e, f, g) = (config.embed_dim, config.feature_dim, config.hidden_dim);
        let n_ops = config.space.op_set().len();
        let k2 = 2 * config.space.num_actions();
        let linear_bound = |fan_in: usize| 1.0 / (fan_in as f64).sqrt();
        // nn.Embedding: N(0, 1); nn.Linear: U(±1/sqrt(in)) for weight and bias;
        // pygcn GraphConvolution: U(±1/sqrt(out)) for weight and bias.
        let shapes: [(Vec<usize>, Init); 10] = [
            (vec![n_ops, e], Init::Normal),
            (vec![2, 2 * e], Init::Normal),
            (vec![2 * e, f], Init::Uniform(linear_bound(2 * e))),
            (vec![f], Init::Uniform(linear_bound(2 * e))),
            (vec![f, g], Init::Uniform(linear_bound(g))),
            (vec![g], Init::Uniform(linear_bound(g))),
            (vec![g, g], Init::Uniform(linear_bound(g))),
            (vec![g], Init::Uniform(linear_bound(g))),
            (vec![g, k2], Init::Uniform(linear_bound(g))),
            (vec![k2], Init::Uniform(linear_bound(g))),
        ];
        let device = Device::Cpu;
        let dtype = config.precision.dtype();
        let mut params = Vec::with_capacity(shapes.len());
        for (shape, init) in shapes {
            let count: usize = shape.iter().product();
            let values: Vec<f64> = (0..count).map(|_| init.draw(&mut rng)).collect();
            let tensor = Tensor::from_vec(values, shape, &device)?.to_dtype(dtype)?;
            params.push(Var::from_tensor(&tensor)?);
        }
        Ok(PolicyNet {
            config,
            device,
            params,
        })
    }

    /// Rebuilds a network from named tensors (checkpoint loading); shapes are checked.
    pub(crate) fn from_tensors(config: PolicyConfig, tensors: Vec<Tensor>) -> Result<Self> {
        config.validate()?;
        let reference = PolicyNet::new(config, 0)?;
        if tensors.len() != PARAM_NAMES.len() {
            return Err(PolicyError::Corrupt(format!(
                "expected {} parameter tensors, got {}",
                PARAM_NAMES.len(),
                tensors.len()
            )));
        }
        let mut params = Vec::with_capacity(tensors.len());
        for ((name, expected), tensor) in PARAM_NAMES.iter().zip(&reference.params).zip(tensors) {
            if tensor.dims() != expected.dims() {
                return Err(PolicyError::Corrupt(format!(
                    "parameter {name} has shape {:?}, the config implies {:?}",
                    tensor.dims(),
                    expected.dims()
                )));
            }
            let tensor = tensor.to_dtype(config.precision.dtype())?;
            params.push(Var::from_tensor(&tensor)?);
        }
        Ok(PolicyNet {
            config,
            device: reference.device,
            params,
        })
    }

    /// The configuration the network was built with.
    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// The parameters in [`PARAM_NAMES`] order.
    pub fn params(&self) -> &[Var] {
        &self.params
    }

    /// Total number of scalar parameters.
    pub fn num_parameters(&self) -> usize {
        self.params.iter().map(|p| p.elem_count()).sum()
    }

    pub(crate) fn device(&self) -> &Device {
        &self.device
    }

    pub(crate) fn dtype(&self) -> DType {
        self.config.precision.dtype()
    }

    /// Builds the integer batch for `cells` (all with the same node count, validated by caller).
    pub(crate) fn batch(&self, cells: &[&Cell]) -> Result<CellBatch> {
        let nodes = cells.first().map(|c| c.nodes.len()).unwrap_or(0);
        let side = nodes + 2;
        let op_set = self.config.space.op_set();
        let self_loops = self.config.profile.self_loops();
        let mut op_ids = Vec::with_capacity(cells.len() * 2 * nodes);
        let mut adjacency = vec![0.0; cells.len() * side * side];
        for (c, cell) in cells.iter().enumerate() {
            if cell.nodes.len() != nodes {
                return Err(PolicyError::invalid(
                    "cells",
                    "a batch must hold cells with the same number of nodes",
                ));
            }
            let block = &mut adjacency[c * side * side..(c + 1) * side * side];
            for (op, from, to) in cell.edges() {
                let id = op_set.index_of(op).ok_or_else(|| {
                    PolicyError::invalid("cell.op", format!("{op} is not in {op_set:?}"))
                })?;
                op_ids.push(id as u32);
                block[to * side + from] += 1.0;
            }
            if self_loops {
                for row in 0..side {
                    block[row * side + row] += 1.0;
                    let sum: f64 = block[row * side..(row + 1) * side].iter().sum();
                    for v in &mut block[row * side..(row + 1) * side] {
                        *v /= sum;
                    }
                }
            }
        }
        Ok(CellBatch {
            n: cells.len(),
            nodes,
            op_ids,
            adjacency,
        })
    }

    /// Logits of shape `(n, 2B, K)`: for node t (row t-2 of the head), the first K logits belong
    /// to its first in-edge, the next K to its second.
    pub(crate) fn logits(&self, batch: &CellBatch) -> Result<Tensor> {
        let (n, b) = (batch.n, batch.nodes);
        let side = b + 2;
        let e = self.config.embed_dim;
        let k = self.config.space.num_actions();
        let [op_emb, node_emb, emb_w, emb_b, gc1_w, gc1_b, gc2_w, gc2_b, head_w, head_b] =
            self.param_tensors();
        let ids = Tensor::from_vec(batch.op_ids.clone(), n * 2 * b, &self.device)?;
        let edge_features = op_emb.index_select(&ids, 0)?.reshape((n, b, 2 * e))?;
        let node_features = node_emb
            .unsqueeze(0)?
            .broadcast_as((n, 2, 2 * e))?
            .contiguous()?;
        let h0 = Tensor::cat(&[&node_features, &edge_features], 1)?;
        let x = matmul3(&h0, emb_w)?.broadcast_add(emb_b)?;
        let adjacency = Tensor::from_vec(batch.adjacency.clone(), (n, side, side), &self.device)?
            .to_dtype(self.dtype())?;
        let h1 = adjacency
            .matmul(&matmul3(&x, gc1_w)?)?
            .broadcast_add(gc1_b)?
            .relu()?;
        let h2 = adjacency
            .matmul(&matmul3(&h1, gc2_w)?)?
            .broadcast_add(gc2_b)?;
        let heads = matmul3(&h2.narrow(1, 2, b)?.contiguous()?, head_w)?.broadcast_add(head_b)?;
        Ok(heads.reshape((n, 2 * b, k))?)
    }

    fn param_tensors(&self) -> [&Tensor; 10] {
        let p = &self.params;
        [
            p[0].as_tensor(),
            p[1].as_tensor(),
            p[2].as_tensor(),
            p[3].as_tensor(),
            p[4].as_tensor(),
            p[5].as_tensor(),
            p[6].as_tensor(),
            p[7].as_tensor(),
            p[8].as_tensor(),
            p[9].as_tensor(),
        ]
    }
}

/// `(n, r, d) × (d, o) → (n, r, o)` as one 2-D matrix product (cheaper than a broadcast batch,
/// forward and backward).
fn matmul3(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (n, r, d) = x.dims3()?;
    let o = w.dim(1)?;
    Ok(x.reshape((n * r, d))?.matmul(w)?.reshape((n, r, o))?)
}

#[derive(Clone, Copy)]
enum Init {
    Normal,
    Uniform(f64),
}

impl Init {
    fn draw(self, rng: &mut ChaCha8Rng) -> f64 {
        match self {
            Init::Uniform(bound) => rng.gen_range(-bound..bound),
            Init::Normal => {
                // Box–Muller; 1 - u keeps the logarithm finite.
                let u1: f64 = 1.0 - rng.gen::<f64>();
                let u2: f64 = rng.gen();
                (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
            }
        }
    }
}
