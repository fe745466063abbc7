//! The planned inference path: a folded [`EfficientNet`] read once into packed weights, then
//! run as a whole on its own buffers instead of layer by layer through Burn's tensors.
//!
//! What makes it faster than the per-layer kernels (ONNX Runtime's MLAS does most of the
//! same things):
//! - Activations stay in NHWC (pixel-major, channels contiguous) from the stem to the head:
//!   a 1x1 convolution is then one matrix product with the pixels as rows, and a depthwise
//!   convolution is a multiply-add across channels, vectorised without gathering.
//! - Every convolution is [`matmul::gemm`], with the weights packed at planning time and
//!   the bias, activation and residual applied to each tile right after its sums; a kxk
//!   convolution (the stem, Fused-MBConv) unfolds one row block of pixels at a time into a
//!   scratch that stays in cache.
//! - An expansion whose output is large runs fused with the depthwise convolution after it
//!   ([`Plan::expand_depthwise`]), band by band, so that map never leaves the cache.
//! - The depthwise pass also sums each channel for the squeeze-excitation, whose gate then
//!   scales the projection's input channels as its rows are packed (no pass of its own).
//! - Activation buffers come from a pool kept with the plan and start on cache lines; each
//!   task's small scratch (packed rows, unfolded windows) is its own.
//! - One entry into rayon's pool per forward, and every layer splits its rows (or, for the
//!   classifier, its columns) over the threads, a batch of one included.

use std::fmt;
use std::sync::Mutex;

use burn::nn::PaddingConfig2d;
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

use super::matmul::{self, Epilogue, Packed};
use super::{
    BASELINE, Pads, activate_lanes, applies, resolve_padding, sigmoid_element, silu_element,
};
use crate::model::activation::Activation;
use crate::model::conv_bn_act::ConvBnAct;
use crate::model::efficientnet::EfficientNet;
use crate::model::squeeze_excitation::SqueezeExcitation;

/// A folded model's weights, packed for the CPU kernels, and the buffers its forwards reuse.
pub(crate) struct Plan {
    stem: Conv,
    blocks: Vec<Block>,
    /// How many of `blocks` the stages up to each one hold (Fused-MBConv stages first).
    stage_ends: Vec<usize>,
    head: Conv,
    classifier: Packed,
    classifier_bias: Vec<f32>,
    /// The weights a forward checks the model still has, so that a model whose weights
    /// changed after planning runs Burn's ops, not stale ones (see [`Fingerprint`]).
    fingerprint: Fingerprint,
    buffers: Mutex<Vec<Vec<f32>>>,
}

impl fmt::Debug for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plan")
            .field("blocks", &self.blocks.len())
            .finish_non_exhaustive()
    }
}

/// A model's stem weight, head bias and classifier bias: what changes when other weights are
/// loaded (another checkpoint: every tensor; a fine-tuned head: the classifier), read on
/// every forward for a few thousand values. Changes to the blocks alone go unnoticed:
/// `for_inference` documents that a model changed after planning is planned again.
#[derive(Debug, PartialEq)]
struct Fingerprint {
    stem: Vec<f32>,
    head_bias: Option<Vec<f32>>,
    classifier_bias: Option<Vec<f32>>,
}

impl Fingerprint {
    fn of(model: &EfficientNet) -> Option<Self> {
        Some(Self {
            stem: values(model.stem.conv.weight.val())?,
            head_bias: model.head.conv.bias.as_ref().and_then(|b| values(b.val())),
            classifier_bias: model.classifier.bias.as_ref().and_then(|b| values(b.val())),
        })
    }
}

/// A convolution with its folded bias and activation; `weights` is `k * k * in` rows (tap
/// major, then input channel) by `out` columns.
struct Conv {
    kernel: usize,
    stride: usize,
    padding: PaddingConfig2d,
    weights: Packed,
    bias: Vec<f32>,
    activation: Option<Activation>,
}

/// A depthwise convolution; `taps` is `[k * k][channels]`.
struct Depthwise {
    kernel: usize,
    stride: usize,
    padding: PaddingConfig2d,
    channels: usize,
    taps: Vec<f32>,
    bias: Vec<f32>,
    activation: Option<Activation>,
}

/// Squeeze-excitation's two small layers: `reduce` is `[squeeze][channels]`, `expand`
/// transposed to `[squeeze][channels]` too.
struct Se {
    channels: usize,
    reduce: Vec<f32>,
    reduce_bias: Vec<f32>,
    expand: Vec<f32>,
    expand_bias: Vec<f32>,
    activation: Activation,
}

// A few dozen per model, built once: the size difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
enum Block {
    MBConv {
        expand: Option<Conv>,
        depthwise: Depthwise,
        se: Option<Se>,
        project: Conv,
        residual: bool,
    },
    Fused {
        conv: Conv,
        project: Option<Conv>,
        residual: bool,
    },
}

/// An NHWC activation: its buffer (from the pool, exactly its values) and shape.
struct Map {
    data: Buffer,
    batch: usize,
    height: usize,
    width: usize,
    channels: usize,
}

impl Map {
    fn len(&self) -> usize {
        self.batch * self.height * self.width * self.channels
    }

    fn values(&self) -> &[f32] {
        &self.data
    }
}

/// A tensor's values as f32, if it is an f32 tensor.
fn values<const D: usize>(tensor: Tensor<D>) -> Option<Vec<f32>> {
    tensor.into_data().try_into_vec::<f32>().ok()
}

impl Conv {
    fn read(layer: &ConvBnAct) -> Option<Self> {
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
        let weights = Packed::new(k * k * inputs, out, |row, column| {
            let (tap, channel) = (row / inputs, row % inputs);
            w[(column * inputs + channel) * k * k + tap]
        });
        Some(Self {
            kernel: k,
            stride: conv.stride[0],
            padding: conv.padding.clone(),
            weights,
            bias: bias_of(layer, out)?,
            activation: layer.activation,
        })
    }

    fn in_channels(&self) -> usize {
        self.weights.k() / (self.kernel * self.kernel)
    }
}

/// A folded layer's bias (zeros if it has none).
fn bias_of(layer: &ConvBnAct, channels: usize) -> Option<Vec<f32>> {
    match &layer.conv.bias {
        Some(bias) => values(bias.val()),
        None => Some(vec![0.0; channels]),
    }
}

impl Depthwise {
    fn read(layer: &ConvBnAct) -> Option<Self> {
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
        Some(Self {
            kernel: kh,
            stride: conv.stride[0],
            padding: conv.padding.clone(),
            channels,
            taps,
            bias: bias_of(layer, channels)?,
            activation: layer.activation,
        })
    }
}

impl Se {
    fn read(se: &SqueezeExcitation) -> Option<Self> {
        let [squeeze, channels, _, _] = se.reduce.weight.dims();
        let bias = |conv: &burn::nn::conv::Conv2d, n| match &conv.bias {
            Some(bias) => values(bias.val()),
            None => Some(vec![0.0; n]),
        };
        Some(Self {
            channels,
            reduce: values(se.reduce.weight.val())?,
            reduce_bias: bias(&se.reduce, squeeze)?,
            expand: {
                // [channels][squeeze] -> [squeeze][channels].
                let expand = values(se.expand.weight.val())?;
                (0..expand.len())
                    .map(|i| expand[(i % channels) * squeeze + i / channels])
                    .collect()
            },
            expand_bias: bias(&se.expand, channels)?,
            activation: se.activation,
        })
    }

    /// Per-channel gates in (0, 1) from one sample's channel sums over `pixels` pixels.
    fn gate(&self, sums: &[f32], pixels: f32, gate: &mut [f32]) {
        let means: Vec<f32> = sums.iter().map(|sum| sum / pixels).collect();
        let squeezed: Vec<f32> = self
            .reduce
            .chunks_exact(self.channels)
            .zip(&self.reduce_bias)
            .map(|(row, &bias)| {
                let x = bias + dot(row, &means);
                match self.activation {
                    Activation::SiLU => silu_element(x),
                    Activation::ReLU6 => x.clamp(0.0, 6.0),
                }
            })
            .collect();
        gate.copy_from_slice(&self.expand_bias);
        // `expand` is `[squeeze][channels]` here: each squeezed value scales one row into
        // all the gates, a loop across channels that vectorises.
        for (row, &value) in self.expand.chunks_exact(self.channels).zip(&squeezed) {
            axpy(gate, row, value);
        }
        gate.iter_mut().for_each(|g| *g = sigmoid_element(*g));
    }
}

wide_fn! {
    /// `a . b`, summed in eight lanes so that it vectorises.
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        let mut lanes = [0.0f32; 8];
        let (a_chunks, b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
        let tails = a_chunks.remainder().iter().zip(b_chunks.remainder());
        let tail: f32 = tails.map(|(x, y)| x * y).sum();
        for (a, b) in a_chunks.zip(b_chunks) {
            for ((lane, &x), &y) in lanes.iter_mut().zip(a).zip(b) {
                *lane += x * y;
            }
        }
        lanes.iter().sum::<f32>() + tail
    }
}

wide_fn! {
    /// `y += a * x`.
    fn axpy(y: &mut [f32], x: &[f32], a: f32) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y += a * x;
        }
    }
}

impl Plan {
    /// Reads a folded model on the flex device in f32; `None` for anything else (the model
    /// then runs on Burn's ops).
    pub(crate) fn new(model: &EfficientNet) -> Option<Self> {
        let stem = Conv::read(&model.stem)?;
        let mut blocks = Vec::new();
        let sizes = model.fused_stages.iter().map(Vec::len);
        let sizes = sizes.chain(model.stages.iter().map(Vec::len));
        let stage_ends: Vec<usize> = sizes
            .scan(0, |end, size| {
                *end += size;
                Some(*end)
            })
            .collect();
        for block in model.fused_stages.iter().flatten() {
            blocks.push(Block::Fused {
                conv: Conv::read(&block.conv)?,
                project: match &block.project {
                    Some(project) => Some(Conv::read(project)?),
                    None => None,
                },
                residual: block.residual,
            });
        }
        for block in model.stages.iter().flatten() {
            blocks.push(Block::MBConv {
                expand: match &block.expand {
                    Some(expand) => Some(Conv::read(expand)?),
                    None => None,
                },
                depthwise: Depthwise::read(&block.depthwise)?,
                se: match &block.se {
                    Some(se) => Some(Se::read(se)?),
                    None => None,
                },
                project: Conv::read(&block.project)?,
                residual: block.residual,
            });
        }
        let head = Conv::read(&model.head)?;
        let linear = &model.classifier;
        let [inputs, classes] = linear.weight.dims();
        let weight = values(linear.weight.val())?;
        let classifier = Packed::new(inputs, classes, |row, column| {
            weight[row * classes + column]
        });
        let classifier_bias = match &linear.bias {
            Some(bias) => values(bias.val())?,
            None => vec![0.0; classes],
        };
        Some(Self {
            fingerprint: Fingerprint::of(model)?,
            stem,
            blocks,
            stage_ends,
            head,
            classifier,
            classifier_bias,
            buffers: Mutex::new(Vec::new()),
        })
    }

    /// Whether the plan applies to `input` on `model`: an f32 flex tensor of the model's
    /// channels, no size zero, and the model still holding the weights planned.
    fn applies(&self, model: &EfficientNet, input: &Tensor<4>) -> bool {
        let [batch, channels, height, width] = input.dims();
        applies(input)
            && channels == self.stem.in_channels()
            && batch * height * width > 0
            && model.is_fused()
            && Fingerprint::of(model).as_ref() == Some(&self.fingerprint)
    }

    /// Class logits, or the input back if the plan does not apply to it.
    pub(crate) fn logits(
        &self,
        model: &EfficientNet,
        input: Tensor<4>,
    ) -> Result<Tensor<2>, Tensor<4>> {
        if !self.applies(model, &input) {
            return Err(input);
        }
        let device = input.device();
        let (batch, classes) = (input.dims()[0], self.classifier.n());
        let mut logits = vec![0.0; batch * classes];
        in_pool(|| {
            let features = self.features_nhwc(input);
            let channels = features.channels;
            let pixels = features.height * features.width;
            // Global average pooling: the per-sample sums of the pixel rows, divided.
            let mut pooled = self.sample_sums(features.values(), batch, pixels, channels);
            self.give(features.data);
            pooled.iter_mut().for_each(|sum| *sum /= pixels as f32);
            let epilogue = Epilogue {
                bias: &self.classifier_bias,
                activation: None,
                residual: None,
            };
            // One row per sample: the product splits the classes over the threads.
            matmul::gemm_parallel(
                &pooled,
                batch,
                None,
                self.classifier.data(),
                channels,
                classes,
                epilogue,
                &mut logits,
            );
            self.give(pooled);
        });
        let data = TensorData::new(logits, [batch, classes]);
        Ok(Tensor::from_data(data, &device))
    }

    /// The head's feature map (NCHW), or the input back if the plan does not apply to it.
    pub(crate) fn features(
        &self,
        model: &EfficientNet,
        input: Tensor<4>,
    ) -> Result<Tensor<4>, Tensor<4>> {
        if !self.applies(model, &input) {
            return Err(input);
        }
        let device = input.device();
        Ok(in_pool(|| {
            let map = self.features_nhwc(input);
            let features = self.to_nchw(&map, &device);
            self.give(map.data);
            features
        }))
    }

    /// The outputs of `stages` (indices into the model's stages, Fused-MBConv ones first; in
    /// the order asked, repeats allowed), or the input back if the plan does not apply.
    /// Runs only as far as the deepest stage asked.
    pub(crate) fn endpoints(
        &self,
        model: &EfficientNet,
        input: Tensor<4>,
        stages: &[usize],
    ) -> Result<Vec<Tensor<4>>, Tensor<4>> {
        let Some(&last) = stages.iter().max() else {
            return Ok(Vec::new());
        };
        if !self.applies(model, &input) || last >= self.stage_ends.len() {
            return Err(input);
        }
        let device = input.device();
        let mut maps = vec![None; stages.len()];
        let x = in_pool(|| {
            self.run_nhwc(input, Some(last), &mut |stage, map| {
                for (slot, _) in maps.iter_mut().zip(stages).filter(|(_, s)| **s == stage) {
                    *slot = Some(self.to_nchw(map, &device));
                }
            })
        });
        self.give(x.data);
        Ok(maps.into_iter().flatten().collect())
    }

    /// An NHWC map as an NCHW tensor on `device`.
    fn to_nchw(&self, map: &Map, device: &burn::tensor::Device) -> Tensor<4> {
        let (batch, height, width, channels) = (map.batch, map.height, map.width, map.channels);
        let pixels = height * width;
        let mut nchw = vec![0.0; map.len()];
        nchw.par_chunks_mut(pixels * channels)
            .zip(map.values().par_chunks(pixels * channels))
            .for_each(|(out, sample)| {
                for (pixel, row) in sample.chunks_exact(channels).enumerate() {
                    for (channel, &value) in row.iter().enumerate() {
                        out[channel * pixels + pixel] = value;
                    }
                }
            });
        let data = TensorData::new(nchw, [batch, channels, height, width]);
        Tensor::from_data(data, device)
    }

    /// Stem, blocks and head on an input the plan applies to.
    fn features_nhwc(&self, input: Tensor<4>) -> Map {
        self.run_nhwc(input, None, &mut |_, _| {})
    }

    /// Stem and blocks through stage `last`, calling `observe(stage, output)` after each
    /// stage; then, if `last` is `None`, the head. Returns the last map.
    fn run_nhwc(
        &self,
        input: Tensor<4>,
        last: Option<usize>,
        observe: &mut dyn FnMut(usize, &Map),
    ) -> Map {
        let [batch, channels, height, width] = input.dims();
        let pixels = height * width;
        let mut input_map = self.map(batch, height, width, channels);
        {
            let nchw = input.into_data();
            let nchw = nchw.as_slice::<f32>().expect("checked f32");
            // Blocks of pixels, so that a batch of one splits over the threads too.
            let block = pixels.div_ceil(4 * rayon::current_num_threads()).max(64);
            input_map
                .data
                .par_chunks_mut(pixels * channels)
                .zip(nchw.par_chunks(pixels * channels))
                .flat_map(|(out, planes)| {
                    out.par_chunks_mut(block * channels)
                        .enumerate()
                        .map(move |(index, out)| (planes, index * block, out))
                })
                .for_each(|(planes, first, out)| {
                    for (channel, plane) in planes.chunks_exact(pixels).enumerate() {
                        let plane = &plane[first..];
                        for (pixel, out) in out.chunks_exact_mut(channels).enumerate() {
                            out[channel] = plane[pixel];
                        }
                    }
                });
        }
        let mut x = self.conv(&self.stem, &input_map, None, None);
        self.give(input_map.data);
        let mut start = 0;
        for (stage, &end) in self.stage_ends.iter().enumerate() {
            for block in &self.blocks[start..end] {
                let y = self.block(block, &x);
                self.give(std::mem::replace(&mut x, y).data);
            }
            start = end;
            observe(stage, &x);
            if last == Some(stage) {
                return x;
            }
        }
        let y = self.conv(&self.head, &x, None, None);
        self.give(x.data);
        y
    }

    fn block(&self, block: &Block, x: &Map) -> Map {
        match block {
            Block::MBConv {
                expand,
                depthwise,
                se,
                project,
                residual,
            } => {
                let (y, sums) = match expand {
                    Some(expand) => match self.expand_depthwise(expand, depthwise, x) {
                        Some(fused) => fused,
                        None => {
                            let expanded = self.conv(expand, x, None, None);
                            let out = self.depthwise(depthwise, &expanded);
                            self.give(expanded.data);
                            out
                        }
                    },
                    None => self.depthwise(depthwise, x),
                };
                let residual = residual.then(|| x.values());
                let out = match se {
                    Some(se) => {
                        let pixels = (y.height * y.width) as f32;
                        let channels = se.channels;
                        let mut gates = self.take(y.batch * channels);
                        gates
                            .par_chunks_mut(channels)
                            .zip(sums.par_chunks(channels))
                            .for_each(|(gates, sums)| se.gate(sums, pixels, gates));
                        let out = self.conv(project, &y, residual, Some(&gates));
                        self.give(gates);
                        out
                    }
                    None => self.conv(project, &y, residual, None),
                };
                self.give(sums);
                self.give(y.data);
                out
            }
            Block::Fused {
                conv,
                project,
                residual,
            } => {
                let residual = residual.then(|| x.values());
                match project {
                    Some(project) => {
                        let y = self.conv(conv, x, None, None);
                        let out = self.conv(project, &y, residual, None);
                        self.give(y.data);
                        out
                    }
                    None => self.conv(conv, x, residual, None),
                }
            }
        }
    }

    /// A convolution, plus `residual` (the output's shape) after the activation; `gates`:
    /// per sample, a factor for each input channel (`[batch][channels]`, 1x1 layers only).
    fn conv(&self, conv: &Conv, x: &Map, residual: Option<&[f32]>, gates: Option<&[f32]>) -> Map {
        let (k, stride) = (conv.kernel, conv.stride);
        let pads = resolve_padding(&conv.padding, x.height, x.width, k, stride);
        let (out_height, out_width) = pads.output_size(x.height, x.width, k, stride);
        let n = conv.weights.n();
        let mut out = self.map(x.batch, out_height, out_width, n);
        let epilogue = Epilogue {
            bias: &conv.bias,
            activation: conv.activation,
            residual,
        };
        let weights = conv.weights.data();
        let c = &mut out.data[..];
        if k == 1 && stride == 1 && pads == Pads::default() {
            matmul::gemm_parallel(
                x.values(),
                x.batch,
                gates,
                weights,
                x.channels,
                n,
                epilogue,
                c,
            );
            return out;
        }
        // Gates come with MBConv projections, which are 1x1.
        debug_assert!(gates.is_none(), "channel gates on a {k}x{k} convolution");
        let depth = conv.weights.k();
        let input = x.values();
        let sample_len = x.height * x.width * x.channels;
        let pixels = out_height * out_width;
        matmul::for_row_blocks(
            c,
            x.batch,
            n,
            || (Vec::new(), Vec::new()),
            |(scratch, packed): &mut (Vec<f32>, Vec<f32>), sample, first_row, c| {
                let rows = c.len() / n;
                scratch.clear();
                scratch.resize(rows * depth, 0.0);
                let sample_input = &input[sample * sample_len..(sample + 1) * sample_len];
                for (row, unfolded) in scratch.chunks_exact_mut(depth).enumerate() {
                    let pixel = first_row + row;
                    let (oy, ox) = (pixel / out_width, pixel % out_width);
                    unfold(sample_input, x, &pads, k, stride, oy, ox, unfolded);
                }
                let epilogue = epilogue.starting_at_row(sample * pixels + first_row, n);
                matmul::gemm(scratch, depth, weights, depth, n, epilogue, c, packed);
            },
        );
        out
    }

    /// The expansion and the depthwise convolution after it, fused: each task computes the
    /// expanded rows its band of depthwise output rows reads (its own rows plus the kernel's
    /// overlap) into a scratch that stays in cache, then convolves them, so the expanded map,
    /// the largest tensor of the block, never goes through memory. Taken for maps over
    /// [`FUSE_MIN_BYTES`] where the overlap recomputes at most a quarter more rows; `None`
    /// otherwise (the two run as separate layers).
    fn expand_depthwise(&self, expand: &Conv, dw: &Depthwise, x: &Map) -> Option<(Map, Buffer)> {
        let (k, stride, channels) = (dw.kernel, dw.stride, dw.channels);
        let pointwise = expand.kernel == 1 && expand.stride == 1;
        let pads = resolve_padding(&dw.padding, x.height, x.width, k, stride);
        let plain = resolve_padding(&expand.padding, x.height, x.width, 1, 1) == Pads::default();
        let bytes = x.height * x.width * channels * 4;
        if !pointwise || !plain || expand.weights.n() != channels || bytes < FUSE_MIN_BYTES {
            return None;
        }
        let (out_height, out_width) = pads.output_size(x.height, x.width, k, stride);
        let bands = (2 * rayon::current_num_threads())
            .div_ceil(x.batch)
            .clamp(1, out_height);
        let band = out_height.div_ceil(bands);
        if 4 * k.saturating_sub(stride) > band * stride {
            return None;
        }
        let mut out = self.map(x.batch, out_height, out_width, channels);
        let rows = x.batch * out_height;
        let mut partial = self.take(rows * channels);
        let input = x.values();
        let in_channels = x.channels;
        let sample_len = x.height * x.width * in_channels;
        let epilogue = Epilogue {
            bias: &expand.bias,
            activation: expand.activation,
            residual: None,
        };
        out.data
            .par_chunks_mut(out_height * out_width * channels)
            .zip(partial.par_chunks_mut(out_height * channels))
            .enumerate()
            .flat_map(|(sample, (out, sums))| {
                out.par_chunks_mut(band * out_width * channels)
                    .zip(sums.par_chunks_mut(band * channels))
                    .enumerate()
                    .map(move |(index, (out, sums))| (sample, index * band, out, sums))
            })
            .for_each_init(
                || (Vec::new(), Vec::new()),
                |(expanded, scratch): &mut (Vec<f32>, Vec<f32>), (sample, first, out, sums)| {
                    let last = first + sums.len() / channels - 1;
                    // Input rows the band reads: padded rows first * stride..last * stride + k.
                    let top = (first * stride).saturating_sub(pads.top);
                    let end = (last * stride + k).saturating_sub(pads.top).min(x.height);
                    let pixels = (end - top) * x.width;
                    let expanded = aligned(expanded, pixels * channels);
                    let a = &input[sample * sample_len + top * x.width * in_channels..];
                    matmul::gemm(
                        &a[..pixels * in_channels],
                        in_channels,
                        expand.weights.data(),
                        in_channels,
                        channels,
                        epilogue,
                        expanded,
                        scratch,
                    );
                    let geometry = DwGeometry::new(x, dw, &pads, out_width, top);
                    let rows = out
                        .chunks_exact_mut(out_width * channels)
                        .zip(sums.chunks_exact_mut(channels));
                    for (row, (out, sums)) in rows.enumerate() {
                        depthwise_row(expanded, &geometry, dw, first + row, out, sums);
                    }
                },
            );
        let sums = self.sample_sums(&partial, x.batch, out_height, channels);
        self.give(partial);
        Some((out, sums))
    }

    /// A depthwise convolution with its bias and activation, and the per-sample channel sums
    /// of its output (`[batch][channels]`, for the squeeze-excitation).
    fn depthwise(&self, dw: &Depthwise, x: &Map) -> (Map, Buffer) {
        let (k, stride, channels) = (dw.kernel, dw.stride, dw.channels);
        let pads = resolve_padding(&dw.padding, x.height, x.width, k, stride);
        let (out_height, out_width) = pads.output_size(x.height, x.width, k, stride);
        let mut out = self.map(x.batch, out_height, out_width, channels);
        let rows = x.batch * out_height;
        let mut partial = self.take(rows * channels);
        let geometry = DwGeometry::new(x, dw, &pads, out_width, 0);
        let sample_len = x.height * x.width * channels;
        let input = x.values();
        out.data
            .par_chunks_mut(out_width * channels)
            .zip(partial.par_chunks_mut(channels))
            .enumerate()
            .for_each(|(row, (out, sums))| {
                let (sample, oy) = (row / out_height, row % out_height);
                let input = &input[sample * sample_len..(sample + 1) * sample_len];
                depthwise_row(input, &geometry, dw, oy, out, sums);
            });
        let sums = self.sample_sums(&partial, x.batch, out_height, channels);
        self.give(partial);
        (out, sums)
    }

    /// Per-sample channel sums (`[batch][channels]`) of per-row ones (`[batch * rows][channels]`).
    fn sample_sums(&self, partial: &[f32], batch: usize, rows: usize, channels: usize) -> Buffer {
        let mut sums = self.take(batch * channels);
        for (sample, sums) in sums.chunks_exact_mut(channels).enumerate() {
            sums.fill(0.0);
            let rows = partial[sample * rows * channels..]
                .chunks_exact(channels)
                .take(rows);
            for row in rows {
                for (sum, &value) in sums.iter_mut().zip(row) {
                    *sum += value;
                }
            }
        }
        sums
    }

    /// An NHWC map of this shape on a buffer from the pool (its old values left in place).
    fn map(&self, batch: usize, height: usize, width: usize, channels: usize) -> Map {
        Map {
            data: self.take(batch * height * width * channels),
            batch,
            height,
            width,
            channels,
        }
    }

    /// A buffer of `len` values starting on a cache line, from the pool if it has one long
    /// enough (its old values left in place: every user writes what it reads).
    fn take(&self, len: usize) -> Buffer {
        let needed = len + LINE_FLOATS;
        let mut pool = self.buffers.lock().unwrap_or_else(|e| e.into_inner());
        let best = pool
            .iter()
            .enumerate()
            .filter(|(_, storage)| storage.len() >= needed)
            .min_by_key(|(_, storage)| storage.len())
            .map(|(index, _)| index)
            .or_else(|| {
                // None long enough: grow the longest.
                (0..pool.len()).max_by_key(|&index| pool[index].len())
            });
        let mut storage = match best {
            Some(index) => pool.swap_remove(index),
            None => Vec::new(),
        };
        drop(pool);
        if storage.len() < needed {
            storage.resize(needed, 0.0);
        }
        Buffer::new(storage, len)
    }

    fn give(&self, buffer: Buffer) {
        let mut pool = self.buffers.lock().unwrap_or_else(|e| e.into_inner());
        pool.push(buffer.storage);
    }
}

/// f32 values in a cache line.
const LINE_FLOATS: usize = 16;

/// `len` values of `storage` from its first cache-line boundary on: a vector load or store of
/// a row never straddles two lines (a Vec's own start is only 16-byte aligned).
struct Buffer {
    storage: Vec<f32>,
    start: usize,
    len: usize,
}

impl Buffer {
    /// `storage` must hold `len + LINE_FLOATS` values.
    fn new(storage: Vec<f32>, len: usize) -> Self {
        let start = storage
            .as_ptr()
            .align_offset(4 * LINE_FLOATS)
            .min(LINE_FLOATS);
        assert!(storage.len() >= start + len, "buffer too short");
        Self {
            storage,
            start,
            len,
        }
    }
}

impl std::ops::Deref for Buffer {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        &self.storage[self.start..self.start + self.len]
    }
}

impl std::ops::DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

/// `len` values of `scratch` (grown as needed) from a cache-line boundary.
fn aligned(scratch: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if scratch.len() < len + LINE_FLOATS {
        scratch.resize(len + LINE_FLOATS, 0.0);
    }
    let start = scratch
        .as_ptr()
        .align_offset(4 * LINE_FLOATS)
        .min(LINE_FLOATS);
    &mut scratch[start..start + len]
}

/// Expanded maps from this size up (bytes, f32) are fused with their depthwise convolution
/// ([`Plan::expand_depthwise`]): larger than a core's share of L2, they would otherwise be
/// written out and read back from memory.
const FUSE_MIN_BYTES: usize = 1 << 20;

/// Runs `work` on a thread of rayon's pool. Called from outside the pool, every parallel
/// loop would hand its tasks over and put the caller to sleep until they end: a wake-up on
/// each side of each of a network's ~80 layers. From inside, the loops start at once.
fn in_pool<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    let mut result = None;
    rayon::scope(|_| result = Some(work()));
    result.expect("the scope ran its body")
}

/// Output pixel `(oy, ox)`'s kxk window of `input` (one sample, NHWC, the shape of `x`) into
/// `unfolded` (`[tap][channel]`), zeros where the window lies in the padding.
#[allow(clippy::too_many_arguments)]
fn unfold(
    input: &[f32],
    x: &Map,
    pads: &Pads,
    k: usize,
    stride: usize,
    oy: usize,
    ox: usize,
    unfolded: &mut [f32],
) {
    // One kernel row at a time: its taps inside the input are one contiguous run of NHWC.
    let channels = x.channels;
    let base_x = ox * stride;
    let kx_range =
        pads.left.saturating_sub(base_x)..k.min((x.width + pads.left).saturating_sub(base_x));
    for (ky, out) in unfolded.chunks_exact_mut(k * channels).enumerate() {
        let iy = (oy * stride + ky)
            .checked_sub(pads.top)
            .filter(|&y| y < x.height);
        match iy {
            Some(iy) if !kx_range.is_empty() => {
                let ix = base_x + kx_range.start - pads.left;
                let start = (iy * x.width + ix) * channels;
                let (before, rest) = out.split_at_mut(kx_range.start * channels);
                let (inside, after) = rest.split_at_mut(kx_range.len() * channels);
                before.fill(0.0);
                inside.copy_from_slice(&input[start..start + inside.len()]);
                after.fill(0.0);
            }
            _ => out.fill(0.0),
        }
    }
}

/// What a depthwise output row needs to know of the input.
struct DwGeometry {
    /// The input row that `input` starts at (a band of the map, or 0).
    first_row: usize,
    height: usize,
    width: usize,
    channels: usize,
    kernel: usize,
    stride: usize,
    top: usize,
    left: usize,
    out_width: usize,
}

impl DwGeometry {
    /// `dw` over `x` (whose values start at input row `first_row`).
    fn new(x: &Map, dw: &Depthwise, pads: &Pads, out_width: usize, first_row: usize) -> Self {
        Self {
            first_row,
            height: x.height,
            width: x.width,
            channels: dw.channels,
            kernel: dw.kernel,
            stride: dw.stride,
            top: pads.top,
            left: pads.left,
            out_width,
        }
    }
}

wide_fn! {
    /// One output row of a depthwise convolution (`out`: `[out_width][channels]`), adding
    /// each channel's outputs to `sums`.
    fn depthwise_row(
        input: &[f32],
        geometry: &DwGeometry,
        dw: &Depthwise,
        oy: usize,
        out: &mut [f32],
        sums: &mut [f32],
    ) {
        depthwise_row_channels::<ISA>(input, geometry, dw, oy, out, sums);
    }
}

/// [`depthwise_row`] in channel chunks of 64, then 16, 8 and 1 (64 lanes give four
/// independent accumulator registers per tap).
#[inline(always)]
fn depthwise_row_channels<const ISA: u8>(
    input: &[f32],
    geometry: &DwGeometry,
    dw: &Depthwise,
    oy: usize,
    out: &mut [f32],
    sums: &mut [f32],
) {
    let mut first = 0;
    while first < geometry.channels {
        let left = geometry.channels - first;
        first += if left >= 64 {
            depthwise_chunk::<64, 2, ISA>(input, geometry, dw, oy, first, out, sums)
        } else if left >= 16 {
            depthwise_chunk::<16, 4, ISA>(input, geometry, dw, oy, first, out, sums)
        } else if left >= 8 {
            depthwise_chunk::<8, 4, ISA>(input, geometry, dw, oy, first, out, sums)
        } else {
            depthwise_chunk::<1, 1, ISA>(input, geometry, dw, oy, first, out, sums)
        };
    }
}

/// One depthwise output pixel's `L` channels: activation, into the row's channel `totals`,
/// stored at `out[start..]`. (A function, not a closure: closures do not inherit the
/// caller's target features, and this one ran without AVX.)
#[inline(always)]
fn finish_pixel<const ISA: u8, const L: usize>(
    mut acc: [f32; L],
    activation: Option<Activation>,
    totals: &mut [f32; L],
    out: &mut [f32],
    start: usize,
) {
    activate_lanes::<ISA, L>(&mut acc, activation);
    for (total, &value) in totals.iter_mut().zip(&acc) {
        *total += value;
    }
    let out: &mut [f32; L] = (&mut out[start..start + L]).try_into().expect("L values");
    *out = acc;
}

/// Channels `first..first + L` of one depthwise output row; returns `L`. Output pixels whose
/// window lies inside the input go `PX` at a time, so that `PX` accumulators per lane group
/// are in flight (one alone waits on its previous multiply-add at every tap).
#[inline(always)]
fn depthwise_chunk<const L: usize, const PX: usize, const ISA: u8>(
    input: &[f32],
    g: &DwGeometry,
    dw: &Depthwise,
    oy: usize,
    first: usize,
    out: &mut [f32],
    sums: &mut [f32],
) -> usize {
    let (c, k, s) = (g.channels, g.kernel, g.stride);
    let bias: [f32; L] = dw.bias[first..first + L].try_into().expect("L values");
    let mut total = [0.0f32; L];
    // Taps inside the input: padded row `oy * stride + ky` is input row that minus `top`.
    let base_y = oy * s;
    let ky_range = g.top.saturating_sub(base_y)..k.min((g.height + g.top).saturating_sub(base_y));
    // Output columns whose whole window is inside the input: `ox * s >= left` and
    // `ox * s + k <= width + left`.
    let inside_start = g.left.div_ceil(s);
    let inside_end = match (g.width + g.left).checked_sub(k) {
        Some(last) => (last / s + 1).min(g.out_width),
        None => 0,
    };
    let mut ox = 0;
    while ox < g.out_width {
        if PX > 1 && ox >= inside_start && ox + PX <= inside_end {
            let mut acc = [bias; PX];
            for ky in ky_range.clone() {
                let row = (base_y + ky - g.top - g.first_row) * g.width;
                for kx in 0..k {
                    let tap = (ky * k + kx) * c + first;
                    let w: &[f32; L] = dw.taps[tap..tap + L].try_into().expect("L values");
                    for (p, acc) in acc.iter_mut().enumerate() {
                        let start = (row + (ox + p) * s + kx - g.left) * c + first;
                        let src: &[f32; L] = input[start..start + L].try_into().expect("L values");
                        for lane in 0..L {
                            acc[lane] = if ISA != BASELINE {
                                w[lane].mul_add(src[lane], acc[lane])
                            } else {
                                acc[lane] + w[lane] * src[lane]
                            };
                        }
                    }
                }
            }
            for (p, acc) in acc.into_iter().enumerate() {
                finish_pixel::<ISA, L>(acc, dw.activation, &mut total, out, (ox + p) * c + first);
            }
            ox += PX;
            continue;
        }
        let base_x = ox * s;
        let kx_range =
            g.left.saturating_sub(base_x)..k.min((g.width + g.left).saturating_sub(base_x));
        let mut acc = bias;
        for ky in ky_range.clone() {
            let iy = base_y + ky - g.top - g.first_row;
            for kx in kx_range.clone() {
                let ix = base_x + kx - g.left;
                let start = (iy * g.width + ix) * c + first;
                let src: &[f32; L] = input[start..start + L].try_into().expect("L values");
                let tap = (ky * k + kx) * c + first;
                let w: &[f32; L] = dw.taps[tap..tap + L].try_into().expect("L values");
                for lane in 0..L {
                    acc[lane] = if ISA != BASELINE {
                        w[lane].mul_add(src[lane], acc[lane])
                    } else {
                        acc[lane] + w[lane] * src[lane]
                    };
                }
            }
        }
        finish_pixel::<ISA, L>(acc, dw.activation, &mut total, out, ox * c + first);
        ox += 1;
    }
    for (sum, total) in sums[first..first + L].iter_mut().zip(total) {
        *sum = total;
    }
    L
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    /// A deterministic pseudo-random vector in [-0.5, 0.5).
    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let x = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed);
                (x >> 8) as f32 / (1 << 24) as f32 - 0.5
            })
            .collect()
    }

    #[test]
    fn fused_expansion_and_depthwise_match_the_separate_layers() {
        // Any plan lends its buffer pool; the layers are made here. 96 expanded channels at
        // 64x64 and more are over FUSE_MIN_BYTES; bands of a batch of one overlap by the
        // kernel's extent, larger batches run a whole map per task.
        let model = crate::EfficientNetConfig::b0()
            .with_width(0.1)
            .with_depth(0.1)
            .init(&Device::flex())
            .fuse_batch_norm();
        let plan = Plan::new(&model).expect("a folded flex model plans");
        let (inputs, channels) = (16, 96);
        let cases = [
            // (kernel, stride, padding, height, width, batch)
            (3, 2, PaddingConfig2d::Explicit(1, 1, 1, 1), 64, 64, 1),
            (5, 1, PaddingConfig2d::Same, 80, 52, 1),
            (3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), 64, 66, 3),
            (5, 2, PaddingConfig2d::Same, 61, 67, 2),
        ];
        for (k, stride, padding, height, width, batch) in cases {
            let weights = values(inputs * channels, 1);
            let expand = Conv {
                kernel: 1,
                stride: 1,
                padding: PaddingConfig2d::Explicit(0, 0, 0, 0),
                weights: Packed::new(inputs, channels, |r, c| weights[r * channels + c]),
                bias: values(channels, 2),
                activation: Some(Activation::SiLU),
            };
            let dw = Depthwise {
                kernel: k,
                stride,
                padding,
                channels,
                taps: values(k * k * channels, 3),
                bias: values(channels, 4),
                activation: Some(Activation::SiLU),
            };
            let len = batch * height * width * inputs;
            let mut data = values(len, 5);
            data.extend([0.0; LINE_FLOATS]);
            let x = Map {
                data: Buffer::new(data, len),
                batch,
                height,
                width,
                channels: inputs,
            };
            let case = format!("k{k} s{stride} {height}x{width} batch {batch}");
            let (fused, fused_sums) = plan
                .expand_depthwise(&expand, &dw, &x)
                .unwrap_or_else(|| panic!("{case}: not fused"));
            let expanded = plan.conv(&expand, &x, None, None);
            let (separate, separate_sums) = plan.depthwise(&dw, &expanded);
            assert_eq!(
                (fused.height, fused.width),
                (separate.height, separate.width)
            );
            let worst = |a: &[f32], b: &[f32]| {
                a.iter()
                    .zip(b)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max)
            };
            let diff = worst(fused.values(), separate.values());
            assert!(diff < 1e-5, "{case}: outputs differ by {diff}");
            let n = batch * channels;
            let diff = worst(&fused_sums[..n], &separate_sums[..n]);
            assert!(diff < 1e-3, "{case}: channel sums differ by {diff}");
        }
    }
}
