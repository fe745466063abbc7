//! The plan's layers, read once from a folded [`EfficientNet`]: weights packed for the
//! kernels, biases and activations beside them.
//!
//! This is the one place the engine reads the model: the public fields of the building
//! blocks (each convolution's weight, bias, stride, padding, activation), copied out, so
//! that nothing the model does later can reach the plan. It is also where the packed
//! weights go back into the model's layout ([`Conv::weight_values`]), for an
//! [`InferenceModel`](crate::InferenceModel)'s network, whose weights the plan then holds
//! alone ([`lazy_weight`]).

use burn::module::Param;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::{Tensor, TensorData};

use super::super::applies;
use crate::cpu::depthwise::Depthwise;
use crate::cpu::isa::{Isa, Kernel};
use crate::cpu::math;
use crate::cpu::matmul::Packed;
use crate::inference::Precision;
use crate::model::activation::Activation;
use crate::model::block::Block as ModelBlock;
use crate::model::conv_bn_act::ConvBnAct;
use crate::model::efficientnet::EfficientNet;
use crate::model::squeeze_excitation::SqueezeExcitation;

/// How a map's values are laid out in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// `[sample][row][column][channel]`: every map the plan makes.
    Nhwc,
    /// `[sample][channel][row][column]`: the model's input, which the stem reads in place.
    Nchw,
}

/// How the plan packs its products' weights: in f32, or in bf16 pairs for registers of
/// `lanes` values ([`Precision::Bf16Weights`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Packing {
    bf16_lanes: Option<usize>,
}

impl Packing {
    /// `precision`'s packing for an instruction set of `lanes` f32 values a register.
    pub(crate) fn new(precision: Precision, lanes: usize) -> Self {
        Self {
            bf16_lanes: match precision {
                Precision::F32 => None,
                Precision::Bf16Weights => Some(lanes),
            },
        }
    }

    /// `value(row, column)` for `row < k`, `column < n`, packed.
    fn pack(self, k: usize, n: usize, value: impl Fn(usize, usize) -> f32) -> Packed {
        match self.bf16_lanes {
            None => Packed::new(k, n, value),
            Some(lanes) => Packed::bf16(k, n, lanes, value),
        }
    }
}

/// A convolution with its folded bias and activation; `weights` is `k * k * in` rows by
/// `out` columns, the rows in the order in which a window of the `input` layout is
/// contiguous: for NHWC tap major (`[ky][kx][channel]`), for NCHW channel major
/// (`[channel][ky][kx]`, PyTorch's own order).
#[derive(Debug)]
pub(crate) struct Conv {
    pub(crate) input: Layout,
    pub(crate) kernel: usize,
    pub(crate) stride: usize,
    pub(crate) padding: PaddingConfig2d,
    pub(crate) weights: Packed,
    pub(crate) bias: Vec<f32>,
    pub(crate) activation: Option<Activation>,
}

/// Squeeze-excitation's two small layers: `reduce` is `[squeeze][channels]`, `expand`
/// transposed to `[squeeze][channels]` too.
#[derive(Debug)]
pub(crate) struct Se {
    pub(crate) channels: usize,
    reduce: Vec<f32>,
    reduce_bias: Vec<f32>,
    expand: Vec<f32>,
    expand_bias: Vec<f32>,
    activation: Activation,
}

/// One block of the network.
// A few dozen per model, built once: the size difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Block {
    MBConv {
        expand: Option<Conv>,
        depthwise: Depthwise,
        se: Option<Se>,
        project: Conv,
        residual: bool,
    },
    FusedMBConv {
        conv: Conv,
        project: Option<Conv>,
        residual: bool,
    },
}

/// A tensor's values as f32, if it is an f32 tensor.
fn values<const D: usize>(tensor: Tensor<D>) -> Option<Vec<f32>> {
    tensor.into_data().try_into_vec::<f32>().ok()
}

/// A convolution's bias (zeros if it has none).
fn bias_of(conv: &Conv2d, channels: usize) -> Option<Vec<f32>> {
    match &conv.bias {
        Some(bias) => values(bias.val()),
        None => Some(vec![0.0; channels]),
    }
}

impl Conv {
    /// A folded, ungrouped layer with a square kernel and stride, on the flex device in f32,
    /// for maps laid out as `input`.
    pub(crate) fn read(layer: &ConvBnAct, input: Layout, packing: Packing) -> Option<Self> {
        let conv = &layer.conv;
        let weight = conv.weight.val();
        let [out, inputs, kh, kw] = weight.dims();
        let plain = layer.bn.is_none()
            && conv.groups == 1
            && kh == kw
            && conv.stride[0] == conv.stride[1]
            && conv.dilation == [1, 1];
        if !plain || !applies(&weight) {
            return None;
        }
        let w = values(weight)?;
        let k = kh;
        let weights = packing.pack(k * k * inputs, out, |row, column| match input {
            Layout::Nhwc => {
                let (tap, channel) = (row / inputs, row % inputs);
                w[(column * inputs + channel) * k * k + tap]
            }
            Layout::Nchw => w[column * inputs * k * k + row],
        });
        Some(Self {
            input,
            kernel: k,
            stride: conv.stride[0],
            padding: conv.padding.clone(),
            weights,
            bias: bias_of(conv, out)?,
            activation: layer.activation,
        })
    }

    /// Input channels.
    pub(crate) fn in_channels(&self) -> usize {
        self.weights.k() / (self.kernel * self.kernel)
    }

    /// The weights in the model's layout, `[out][in][k][k]` (as [`read`](Self::read) found
    /// them; rounded, if packed in bf16).
    pub(crate) fn weight_values(&self) -> Vec<f32> {
        let (taps, inputs, out) = (
            self.kernel * self.kernel,
            self.in_channels(),
            self.weights.n(),
        );
        let mut values = Vec::with_capacity(out * inputs * taps);
        for column in 0..out {
            for channel in 0..inputs {
                for tap in 0..taps {
                    let row = match self.input {
                        Layout::Nhwc => tap * inputs + channel,
                        Layout::Nchw => channel * taps + tap,
                    };
                    values.push(self.weights.value(row, column));
                }
            }
        }
        values
    }
}

/// Replaces `param`'s tensor with a lazy parameter of the same id, shape and device whose
/// values `values` gives when it is first read: the plan keeps the weights, packed, and the
/// model unpacks them only if it runs or is saved.
pub(crate) fn lazy_weight<const D: usize>(
    param: &mut Param<Tensor<D>>,
    values: impl FnOnce() -> Vec<f32> + Send + Sync + 'static,
) {
    let (shape, device) = (param.lazy_shape(), param.lazy_device());
    let id = param.id;
    let values_shape = shape.clone();
    *param = Param::uninitialized(
        id,
        move |device, _| Tensor::from_data(TensorData::new(values(), values_shape), device),
        device,
        false,
        shape,
    );
}

/// A folded depthwise layer (one input channel per group, square kernel and stride) on the
/// flex device in f32, its taps transposed to `[k * k][channels]`.
fn read_depthwise(layer: &ConvBnAct) -> Option<Depthwise> {
    let conv = &layer.conv;
    let weight = conv.weight.val();
    let [channels, per_group, kh, kw] = weight.dims();
    let depthwise = layer.bn.is_none()
        && per_group == 1
        && conv.groups == channels
        && kh == kw
        && conv.stride[0] == conv.stride[1]
        && conv.dilation == [1, 1];
    if !depthwise || !applies(&weight) {
        return None;
    }
    let w = values(weight)?;
    let taps_per_channel = kh * kw;
    let taps = (0..taps_per_channel * channels)
        .map(|i| w[(i % channels) * taps_per_channel + i / channels])
        .collect();
    Some(Depthwise {
        kernel: kh,
        stride: conv.stride[0],
        padding: conv.padding.clone(),
        channels,
        taps,
        bias: bias_of(conv, channels)?,
        activation: layer.activation,
    })
}

impl Se {
    fn read(se: &SqueezeExcitation) -> Option<Self> {
        let [squeeze, channels, _, _] = se.reduce.weight.dims();
        let expand = values(se.expand.weight.val())?;
        Some(Self {
            channels,
            reduce: values(se.reduce.weight.val())?,
            reduce_bias: bias_of(&se.reduce, squeeze)?,
            // [channels][squeeze] -> [squeeze][channels].
            expand: (0..expand.len())
                .map(|i| expand[(i % channels) * squeeze + i / channels])
                .collect(),
            expand_bias: bias_of(&se.expand, channels)?,
            activation: se.activation,
        })
    }
}

/// One sample's squeeze-excitation gates: the unit of work handed to
/// [`Detected::run`](crate::cpu::isa::Detected::run).
pub(crate) struct Gate<'a> {
    pub(crate) se: &'a Se,
    /// The sample's channel sums over `pixels` pixels.
    pub(crate) sums: &'a [f32],
    pub(crate) pixels: f32,
    /// Per-channel gates in (0, 1), written.
    pub(crate) gate: &'a mut [f32],
}

impl Kernel for Gate<'_> {
    type Output = ();

    #[inline(always)]
    fn run<I: Isa>(self, isa: I) {
        let Self {
            se,
            sums,
            pixels,
            gate,
        } = self;
        // Plain loops throughout: a closure would be compiled without the kernel's features.
        let mut means = Vec::with_capacity(sums.len());
        for &sum in sums {
            means.push(sum / pixels);
        }
        let mut squeezed = Vec::with_capacity(se.reduce_bias.len());
        for (row, &bias) in se.reduce.chunks_exact(se.channels).zip(&se.reduce_bias) {
            squeezed.push(bias + dot(isa, row, &means));
        }
        math::activate_slice(&mut squeezed, Some(se.activation));
        gate.copy_from_slice(&se.expand_bias);
        // `expand` is `[squeeze][channels]` here: each squeezed value scales one row into
        // all the gates, a loop across channels that vectorises.
        for (row, &value) in se.expand.chunks_exact(se.channels).zip(&squeezed) {
            for (gate, &weight) in gate.iter_mut().zip(row) {
                *gate = isa.mul_add(value, weight, *gate);
            }
        }
        for value in gate.iter_mut() {
            *value = math::sigmoid(*value);
        }
    }
}

/// One sample's rows (`[pixels][channels]`), each channel scaled in place by its gate:
/// the unit of work handed to [`Detected::run`](crate::cpu::isa::Detected::run).
pub(crate) struct Gated<'a> {
    pub(crate) rows: &'a mut [f32],
    pub(crate) gates: &'a [f32],
}

impl Kernel for Gated<'_> {
    type Output = ();

    #[inline(always)]
    fn run<I: Isa>(self, _isa: I) {
        for row in self.rows.chunks_exact_mut(self.gates.len()) {
            for (value, &gate) in row.iter_mut().zip(self.gates) {
                *value *= gate;
            }
        }
    }
}

/// `a . b`, summed in eight lanes so that it vectorises.
#[inline(always)]
fn dot<I: Isa>(isa: I, a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (a_chunks, b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
    let mut tail = 0.0;
    for (&x, &y) in a_chunks.remainder().iter().zip(b_chunks.remainder()) {
        tail += x * y;
    }
    for (a, b) in a_chunks.zip(b_chunks) {
        for ((lane, &x), &y) in lanes.iter_mut().zip(a).zip(b) {
            *lane = isa.mul_add(x, y, *lane);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

impl Block {
    /// A folded block of the model.
    pub(crate) fn read(block: &ModelBlock, packing: Packing) -> Option<Self> {
        Some(match block {
            ModelBlock::MBConv(block) => Block::MBConv {
                expand: match &block.expand {
                    Some(expand) => Some(Conv::read(expand, Layout::Nhwc, packing)?),
                    None => None,
                },
                depthwise: read_depthwise(&block.depthwise)?,
                se: match &block.se {
                    Some(se) => Some(Se::read(se)?),
                    None => None,
                },
                project: Conv::read(&block.project, Layout::Nhwc, packing)?,
                residual: block.residual,
            },
            ModelBlock::FusedMBConv(block) => Block::FusedMBConv {
                conv: Conv::read(&block.conv, Layout::Nhwc, packing)?,
                project: match &block.project {
                    Some(project) => Some(Conv::read(project, Layout::Nhwc, packing)?),
                    None => None,
                },
                residual: block.residual,
            },
        })
    }

    /// The block's products in the order [`model_convs`] gives the model's layers.
    pub(crate) fn convs(&self) -> Vec<&Conv> {
        match self {
            Block::MBConv {
                expand, project, ..
            } => expand.iter().chain([project]).collect(),
            Block::FusedMBConv { conv, project, .. } => [conv].into_iter().chain(project).collect(),
        }
    }
}

/// A model block's layers that [`Block::read`] packs as products, in [`Block::convs`]'s
/// order.
pub(crate) fn model_convs(block: &mut ModelBlock) -> Vec<&mut ConvBnAct> {
    match block {
        ModelBlock::MBConv(block) => block
            .expand
            .iter_mut()
            .chain([&mut block.project])
            .collect(),
        ModelBlock::FusedMBConv(block) => [&mut block.conv]
            .into_iter()
            .chain(block.project.as_mut())
            .collect(),
    }
}

/// The classifier (`[inputs, classes]` in Burn) packed as a `inputs x classes` product, and
/// its bias.
pub(crate) fn read_classifier(
    model: &EfficientNet,
    packing: Packing,
) -> Option<(Packed, Vec<f32>)> {
    let linear = &model.classifier;
    let [inputs, classes] = linear.weight.dims();
    let weight = values(linear.weight.val())?;
    let packed = packing.pack(inputs, classes, |row, column| {
        weight[row * classes + column]
    });
    let bias = match &linear.bias {
        Some(bias) => values(bias.val())?,
        None => vec![0.0; classes],
    };
    Some((packed, bias))
}

/// The classifier's weights in Burn's layout, `[inputs][classes]` (rounded, if packed in
/// bf16).
pub(crate) fn classifier_values(packed: &Packed) -> Vec<f32> {
    let (inputs, classes) = (packed.k(), packed.n());
    let mut values = Vec::with_capacity(inputs * classes);
    for row in 0..inputs {
        for column in 0..classes {
            values.push(packed.value(row, column));
        }
    }
    values
}
