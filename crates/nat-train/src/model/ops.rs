//! The operations an edge can carry (NAT-SPEC §1.2), built in tch.

use nat_arch::Op;
use tch::nn::Path;
use tch::{TchError, Tensor};

use super::layers::{relu_conv_bn, BatchNorm, Conv, ConvSpec, FactorizedReduce, Layer, Sequential};

/// Kind of pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PoolKind {
    Max,
    Avg,
}

/// One built operation, channel-preserving C → C.
#[derive(Debug)]
pub(crate) enum OpModule {
    /// `skip_connect` at stride 1.
    Identity,
    /// `null`: zeros (subsampled by the stride).
    Zero { stride: i64 },
    /// Pools; `bn` is the affine-free BN the supernet puts after pools.
    Pool {
        kind: PoolKind,
        kernel: i64,
        stride: i64,
        bn: Option<BatchNorm>,
    },
    /// `skip_connect` at stride 2.
    Reduce(FactorizedReduce),
    /// Every conv-based op.
    Seq(Sequential),
}

/// Options shared by the ops of one network.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpOptions {
    /// BN affine (true in evaluation networks, false in the supernet).
    pub affine: bool,
    /// Follow pools with BN(affine = false) (supernet only).
    pub pool_bn: bool,
}

fn sep_conv(
    path: &Path,
    c: i64,
    k: i64,
    stride: i64,
    affine: bool,
) -> Result<Sequential, TchError> {
    let pad = k / 2;
    let depthwise = |name: &str, s: i64| -> Result<Conv, TchError> {
        Conv::new(
            path,
            name,
            ConvSpec {
                groups: c,
                ..ConvSpec::square(c, c, k, s, pad)
            },
        )
    };
    Ok(Sequential {
        layers: vec![
            Layer::Relu,
            Layer::Conv(depthwise("dw1", stride)?),
            Layer::Conv(Conv::new(path, "pw1", ConvSpec::square(c, c, 1, 1, 0))?),
            Layer::Bn(BatchNorm::new(&(path / "bn1"), c, affine)?),
            Layer::Relu,
            Layer::Conv(depthwise("dw2", 1)?),
            Layer::Conv(Conv::new(path, "pw2", ConvSpec::square(c, c, 1, 1, 0))?),
            Layer::Bn(BatchNorm::new(&(path / "bn2"), c, affine)?),
        ],
    })
}

fn dil_conv(
    path: &Path,
    c: i64,
    k: i64,
    stride: i64,
    affine: bool,
) -> Result<Sequential, TchError> {
    let dilation = 2;
    let pad = dilation * (k - 1) / 2;
    Ok(Sequential {
        layers: vec![
            Layer::Relu,
            Layer::Conv(Conv::new(
                path,
                "dw",
                ConvSpec {
                    dilation,
                    groups: c,
                    ..ConvSpec::square(c, c, k, stride, pad)
                },
            )?),
            Layer::Conv(Conv::new(path, "pw", ConvSpec::square(c, c, 1, 1, 0))?),
            Layer::Bn(BatchNorm::new(&(path / "bn"), c, affine)?),
        ],
    })
}

/// ReLU, 1×k conv (stride (1, s)), k×1 conv (stride (s, 1)), BN — NAONet's conv_1xk_kx1.
fn conv_1k_k1(
    path: &Path,
    c: i64,
    k: i64,
    stride: i64,
    affine: bool,
) -> Result<Sequential, TchError> {
    let pad = k / 2;
    let spec = |kernel: [i64; 2], stride: [i64; 2], padding: [i64; 2]| ConvSpec {
        cin: c,
        cout: c,
        kernel,
        stride,
        padding,
        dilation: 1,
        groups: 1,
    };
    Ok(Sequential {
        layers: vec![
            Layer::Relu,
            Layer::Conv(Conv::new(
                path,
                "conv_1xk",
                spec([1, k], [1, stride], [0, pad]),
            )?),
            Layer::Conv(Conv::new(
                path,
                "conv_kx1",
                spec([k, 1], [stride, 1], [pad, 0]),
            )?),
            Layer::Bn(BatchNorm::new(&(path / "bn"), c, affine)?),
        ],
    })
}

impl OpModule {
    /// Builds `op` for `c` channels at `stride` (1 or 2) under `path`.
    pub fn new(
        path: &Path,
        op: Op,
        c: i64,
        stride: i64,
        options: OpOptions,
    ) -> Result<OpModule, TchError> {
        let affine = options.affine;
        let pool = |kind: PoolKind, kernel: i64| -> Result<OpModule, TchError> {
            let bn = if options.pool_bn {
                Some(BatchNorm::new(&(path / "pool_bn"), c, false)?)
            } else {
                None
            };
            Ok(OpModule::Pool {
                kind,
                kernel,
                stride,
                bn,
            })
        };
        Ok(match op {
            Op::Null => OpModule::Zero { stride },
            Op::SkipConnect if stride == 1 => OpModule::Identity,
            Op::SkipConnect => OpModule::Reduce(FactorizedReduce::new(path, c, c, affine)?),
            Op::MaxPool2x2 => pool(PoolKind::Max, 2)?,
            Op::MaxPool3x3 => pool(PoolKind::Max, 3)?,
            Op::MaxPool5x5 => pool(PoolKind::Max, 5)?,
            Op::AvgPool2x2 => pool(PoolKind::Avg, 2)?,
            Op::AvgPool3x3 => pool(PoolKind::Avg, 3)?,
            Op::AvgPool5x5 => pool(PoolKind::Avg, 5)?,
            Op::Conv1x1 => OpModule::Seq(relu_conv_bn(path, c, c, 1, stride, 0, affine)?),
            Op::Conv3x3 => OpModule::Seq(relu_conv_bn(path, c, c, 3, stride, 1, affine)?),
            Op::Conv5x5 => OpModule::Seq(relu_conv_bn(path, c, c, 5, stride, 2, affine)?),
            Op::SepConv3x3 => OpModule::Seq(sep_conv(path, c, 3, stride, affine)?),
            Op::SepConv5x5 => OpModule::Seq(sep_conv(path, c, 5, stride, affine)?),
            Op::DilConv3x3 => OpModule::Seq(dil_conv(path, c, 3, stride, affine)?),
            Op::DilConv5x5 => OpModule::Seq(dil_conv(path, c, 5, stride, affine)?),
            Op::Conv1x3_3x1 => OpModule::Seq(conv_1k_k1(path, c, 3, stride, affine)?),
            Op::Conv1x7_7x1 => OpModule::Seq(conv_1k_k1(path, c, 7, stride, affine)?),
        })
    }

    /// True for the parameter-free identity (drop-path skips it, as DARTS does).
    pub fn is_identity(&self) -> bool {
        matches!(self, OpModule::Identity)
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        match self {
            OpModule::Identity => Ok(x.shallow_clone()),
            OpModule::Zero { stride } => {
                if *stride == 1 {
                    x.f_mul_scalar(0.0)
                } else {
                    x.f_slice(2, 0, None, *stride)?
                        .f_slice(3, 0, None, *stride)?
                        .f_mul_scalar(0.0)
                }
            }
            OpModule::Pool {
                kind,
                kernel,
                stride,
                bn,
            } => {
                let out = pool_forward(x, *kind, *kernel, *stride)?;
                match bn {
                    Some(bn) => bn.forward(&out, train),
                    None => Ok(out),
                }
            }
            OpModule::Reduce(fr) => fr.forward(x, train),
            OpModule::Seq(seq) => seq.forward(x, train),
        }
    }

    /// Multiply-adds for a `side × side` input (pools, identity and null cost 0).
    pub fn madds(&self, side: i64) -> u64 {
        match self {
            OpModule::Identity | OpModule::Zero { .. } | OpModule::Pool { .. } => 0,
            OpModule::Reduce(fr) => fr.madds(side),
            OpModule::Seq(seq) => seq.madds(side).0,
        }
    }
}

/// Pools with padding k/2 (count_include_pad = false for average pools). 2×2 pools (NAONet) have no
/// padding: at stride 2 they use ceil mode so odd inputs give ceil(h/2) like every other op; at
/// stride 1 the input is first replicate-padded by one pixel right and bottom to keep its size.
fn pool_forward(x: &Tensor, kind: PoolKind, kernel: i64, stride: i64) -> Result<Tensor, TchError> {
    let (input, pad, ceil_mode) = if kernel == 2 {
        if stride == 1 {
            (x.f_replication_pad2d([0, 1, 0, 1])?, 0, false)
        } else {
            (x.shallow_clone(), 0, true)
        }
    } else {
        (x.shallow_clone(), kernel / 2, false)
    };
    match kind {
        PoolKind::Max => input.f_max_pool2d(
            [kernel, kernel],
            [stride, stride],
            [pad, pad],
            [1, 1],
            ceil_mode,
        ),
        PoolKind::Avg => input.f_avg_pool2d(
            [kernel, kernel],
            [stride, stride],
            [pad, pad],
            ceil_mode,
            false,
            None,
        ),
    }
}
