//! Primitive layers with fallible forward passes (libtorch errors become `Err`, never panics).

use tch::nn::{Init, Path};
use tch::{TchError, Tensor};

/// `ceil(h / 2)`: the side after a stride-2 op (odd inputs are padded, as in NATv2).
pub(crate) fn halve(side: i64) -> i64 {
    (side + 1) / 2
}

/// A 2-D convolution without bias.
#[derive(Debug)]
pub(crate) struct Conv {
    weight: Tensor,
    stride: [i64; 2],
    padding: [i64; 2],
    dilation: [i64; 2],
    groups: i64,
    cin: i64,
    cout: i64,
    kernel: [i64; 2],
}

/// Shape of a convolution.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvSpec {
    pub cin: i64,
    pub cout: i64,
    pub kernel: [i64; 2],
    pub stride: [i64; 2],
    pub padding: [i64; 2],
    pub dilation: i64,
    pub groups: i64,
}

impl ConvSpec {
    /// Square kernel `k`, stride `s`, padding `p`, no dilation, dense.
    pub fn square(cin: i64, cout: i64, k: i64, s: i64, p: i64) -> Self {
        ConvSpec {
            cin,
            cout,
            kernel: [k, k],
            stride: [s, s],
            padding: [p, p],
            dilation: 1,
            groups: 1,
        }
    }
}

impl Conv {
    pub fn new(path: &Path, name: &str, spec: ConvSpec) -> Result<Self, TchError> {
        let fan_in = spec.cin / spec.groups * spec.kernel[0] * spec.kernel[1];
        let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
        // PyTorch's default: kaiming_uniform(a = sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        let weight = path.f_var(
            name,
            &[
                spec.cout,
                spec.cin / spec.groups,
                spec.kernel[0],
                spec.kernel[1],
            ],
            Init::Uniform {
                lo: -bound,
                up: bound,
            },
        )?;
        Ok(Conv {
            weight,
            stride: spec.stride,
            padding: spec.padding,
            dilation: [spec.dilation, spec.dilation],
            groups: spec.groups,
            cin: spec.cin,
            cout: spec.cout,
            kernel: spec.kernel,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor, TchError> {
        x.f_conv2d(
            &self.weight,
            None::<&Tensor>,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
        )
    }

    /// Output side for an input side (height and width are handled the same way).
    pub fn out_side(&self, side: i64, axis: usize) -> i64 {
        let k = self.kernel[axis];
        (side + 2 * self.padding[axis] - self.dilation[axis] * (k - 1) - 1) / self.stride[axis] + 1
    }

    /// Multiply-adds for an `h × w` input: Cin·Cout·kh·kw·Hout·Wout / groups.
    pub fn madds(&self, h: i64, w: i64) -> u64 {
        let (ho, wo) = (self.out_side(h, 0), self.out_side(w, 1));
        (self.cin * self.cout * self.kernel[0] * self.kernel[1] * ho * wo / self.groups) as u64
    }
}

/// Batch normalisation over channels (eps 1e-5, momentum 0.1 as in PyTorch).
#[derive(Debug)]
pub(crate) struct BatchNorm {
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    running_mean: Tensor,
    running_var: Tensor,
}

impl BatchNorm {
    pub fn new(path: &Path, channels: i64, affine: bool) -> Result<Self, TchError> {
        let (weight, bias) = if affine {
            (
                Some(path.f_var("weight", &[channels], Init::Const(1.0))?),
                Some(path.f_var("bias", &[channels], Init::Const(0.0))?),
            )
        } else {
            (None, None)
        };
        Ok(BatchNorm {
            weight,
            bias,
            running_mean: path.f_zeros_no_train("running_mean", &[channels])?,
            running_var: path.f_ones_no_train("running_var", &[channels])?,
        })
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        x.f_batch_norm(
            self.weight.as_ref(),
            self.bias.as_ref(),
            Some(&self.running_mean),
            Some(&self.running_var),
            train,
            0.1,
            1e-5,
            true,
        )
    }
}

/// A fully connected layer with bias.
#[derive(Debug)]
pub(crate) struct Linear {
    weight: Tensor,
    bias: Tensor,
    cin: i64,
    cout: i64,
}

impl Linear {
    pub fn new(path: &Path, cin: i64, cout: i64) -> Result<Self, TchError> {
        let bound = 1.0 / (cin.max(1) as f64).sqrt();
        let init = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        Ok(Linear {
            weight: path.f_var("weight", &[cout, cin], init)?,
            bias: path.f_var("bias", &[cout], init)?,
            cin,
            cout,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor, TchError> {
        x.f_linear(&self.weight, Some(&self.bias))
    }

    pub fn madds(&self) -> u64 {
        (self.cin * self.cout) as u64
    }
}

/// One step of a sequential op.
#[derive(Debug)]
pub(crate) enum Layer {
    Relu,
    Conv(Conv),
    Bn(BatchNorm),
}

/// A sequence of ReLU / conv / BN layers (ReLUConvBN, SepConv, DilConv, 1×k-k×1 convs).
#[derive(Debug)]
pub(crate) struct Sequential {
    pub layers: Vec<Layer>,
}

impl Sequential {
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        let mut out = x.shallow_clone();
        for layer in &self.layers {
            out = match layer {
                Layer::Relu => out.f_relu()?,
                Layer::Conv(conv) => conv.forward(&out)?,
                Layer::Bn(bn) => bn.forward(&out, train)?,
            };
        }
        Ok(out)
    }

    /// Multiply-adds for a square `side × side` input, and the output side.
    pub fn madds(&self, side: i64) -> (u64, i64) {
        let (mut h, mut w, mut total) = (side, side, 0u64);
        for layer in &self.layers {
            if let Layer::Conv(conv) = layer {
                total += conv.madds(h, w);
                (h, w) = (conv.out_side(h, 0), conv.out_side(w, 1));
            }
        }
        debug_assert_eq!(h, w, "ops keep images square");
        (total, h)
    }
}

/// ReLU → Conv(k×k, stride s, pad p) → BN.
pub(crate) fn relu_conv_bn(
    path: &Path,
    cin: i64,
    cout: i64,
    k: i64,
    stride: i64,
    padding: i64,
    affine: bool,
) -> Result<Sequential, TchError> {
    Ok(Sequential {
        layers: vec![
            Layer::Relu,
            Layer::Conv(Conv::new(
                path,
                "conv",
                ConvSpec::square(cin, cout, k, stride, padding),
            )?),
            Layer::Bn(BatchNorm::new(&(path / "bn"), cout, affine)?),
        ],
    })
}

/// ReLU, two 1×1 stride-2 convs (the second on the input shifted by one pixel), concat, BN.
/// Odd inputs are padded by one pixel on the top/left first (NATv2's FactorizedReduce).
#[derive(Debug)]
pub(crate) struct FactorizedReduce {
    conv1: Conv,
    conv2: Conv,
    bn: BatchNorm,
}

impl FactorizedReduce {
    pub fn new(path: &Path, cin: i64, cout: i64, affine: bool) -> Result<Self, TchError> {
        let half = cout / 2;
        Ok(FactorizedReduce {
            conv1: Conv::new(path, "conv_1", ConvSpec::square(cin, half, 1, 2, 0))?,
            conv2: Conv::new(path, "conv_2", ConvSpec::square(cin, cout - half, 1, 2, 0))?,
            bn: BatchNorm::new(&(path / "bn"), cout, affine)?,
        })
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        let mut x = x.f_relu()?;
        let side = x.size().get(2).copied().unwrap_or(0);
        if side % 2 != 0 {
            x = x.f_constant_pad_nd([1, 0, 1, 0])?;
        }
        let shifted = x.f_slice(2, 1, None, 1)?.f_slice(3, 1, None, 1)?;
        let out = Tensor::f_cat(&[self.conv1.forward(&x)?, self.conv2.forward(&shifted)?], 1)?;
        self.bn.forward(&out, train)
    }

    pub fn madds(&self, side: i64) -> u64 {
        let padded = side + side % 2;
        self.conv1.madds(padded, padded) + self.conv2.madds(padded - 1, padded - 1)
    }
}
