//! Running a [`Plan`]: the network layer by layer on NHWC maps, every parallel loop inside
//! one entry into rayon's pool.

use std::time::{Duration, Instant};

use burn::tensor::{Device, Tensor, TensorData};
use rayon::prelude::*;

use super::Plan;
use super::layers::{Block, Conv, Gate, Gated, Layout};
use super::pool::Nhwc;
use crate::cpu::depthwise::{self, Depthwise, Geometry};
use crate::cpu::matmul::{self, Epilogue};
use crate::cpu::memory::{Aligned, aligned};
use crate::cpu::padding::Pads;

/// Expanded maps from this size up (bytes, f32) run together with their depthwise
/// convolution ([`Plan::expand_depthwise`]): larger than a core's share of L2, they would
/// otherwise be written out and read back from memory.
const EXPAND_DEPTHWISE_MIN_BYTES: usize = 1 << 20;

/// Bytes of expanded rows a task of [`Plan::expand_depthwise`] holds at a time: half of a
/// core's L2 (512 KiB on the CPUs we measure), the rest for the weights and the output.
const EXPANDED_BYTES: usize = 256 * 1024;

/// Runs `work` on a thread of rayon's pool. Called from outside the pool, every parallel
/// loop would hand its tasks over and put the caller to sleep until they end: a wake-up on
/// each side of each of a network's ~80 layers. From inside, the loops start at once.
fn in_pool<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    let mut result = None;
    rayon::scope(|_| result = Some(work()));
    result.expect("the scope ran its body")
}

/// A step of a forward: what [`Plan::step_times`] times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// The stem convolution, reading the NCHW input in place.
    Stem,
    /// Block `index` of stage `stage`, `last` if it ends the stage.
    Block {
        stage: usize,
        index: usize,
        last: bool,
    },
    /// The head convolution.
    Head,
    /// The global pooling and the classifier.
    Classifier,
}

impl Step {
    /// The step's name in torchvision's EfficientNet (`features.0` the stem, `features.1.0`
    /// stage 0's first block), the names `scripts/profile_ort_layers.py` prints, for a
    /// network of `stages` stages.
    fn torchvision_name(self, stages: usize) -> String {
        match self {
            Step::Stem => "features.0".into(),
            Step::Block { stage, index, .. } => format!("features.{}.{index}", stage + 1),
            Step::Head => format!("features.{}", stages + 1),
            Step::Classifier => "pooling + classifier".into(),
        }
    }
}

impl Plan {
    /// Class logits of an input the plan [`applies`](Plan::applies) to.
    pub(crate) fn logits(&self, input: Tensor<4>) -> Tensor<2> {
        self.observed_logits(input, &mut |_| {})
    }

    /// Each step's wall time in one forward to the logits of an input the plan applies
    /// to, in order (the stem, every block, the head, then the pooling with the
    /// classifier), each step named as torchvision names it ([`Step::torchvision_name`]).
    pub(crate) fn step_times(&self, input: Tensor<4>) -> Vec<(String, Duration)> {
        let stages = self.stage_ends.len();
        let mut times = Vec::new();
        let mut last = Instant::now();
        self.observed_logits(input, &mut |step| {
            let now = Instant::now();
            times.push((step.torchvision_name(stages), now - last));
            last = now;
        });
        times
    }

    /// [`logits`](Self::logits), calling `observe` after each [`Step`].
    fn observed_logits(
        &self,
        input: Tensor<4>,
        observe: &mut (dyn FnMut(Step) + Send),
    ) -> Tensor<2> {
        let device = input.device();
        let (batch, classes) = (input.dims()[0], self.classifier.n());
        let mut logits = vec![0.0; batch * classes];
        in_pool(|| {
            let features = self.run(input, None, &mut |step, _| observe(step));
            let channels = features.channels;
            let pixels = features.height * features.width;
            // Global average pooling: the per-sample sums of the pixel rows, divided.
            let mut pooled = self.sample_sums(&features.data, batch, pixels, channels);
            self.pool.recycle(features.data);
            pooled.iter_mut().for_each(|sum| *sum /= pixels as f32);
            let epilogue = Epilogue {
                bias: &self.classifier_bias,
                activation: None,
                residual: None,
            };
            // One row per sample: the product splits the classes over the threads.
            matmul::parallel(
                self.isa,
                &pooled,
                batch,
                None,
                self.classifier.data(),
                channels,
                classes,
                epilogue,
                &mut logits,
            );
            self.pool.recycle(pooled);
            observe(Step::Classifier);
        });
        Tensor::from_data(TensorData::new(logits, [batch, classes]), &device)
    }

    /// The head's feature map (NCHW) of an input the plan applies to.
    pub(crate) fn features(&self, input: Tensor<4>) -> Tensor<4> {
        let device = input.device();
        in_pool(|| {
            let map = self.run(input, None, &mut |_, _| {});
            let features = to_nchw(&map, &device);
            self.pool.recycle(map.data);
            features
        })
    }

    /// The outputs of `stages` (in the order asked, repeats allowed; each a stage of the
    /// model) for an input the plan applies to. Runs only as far as the
    /// deepest stage asked.
    pub(crate) fn endpoints(&self, input: Tensor<4>, stages: &[usize]) -> Vec<Tensor<4>> {
        let Some(&last) = stages.iter().max() else {
            return Vec::new();
        };
        let device = input.device();
        let mut maps = vec![None; stages.len()];
        let x = in_pool(|| {
            self.run(input, Some(last), &mut |step, map| {
                let Step::Block {
                    stage, last: true, ..
                } = step
                else {
                    return;
                };
                for (slot, _) in maps.iter_mut().zip(stages).filter(|(_, s)| **s == stage) {
                    *slot = Some(to_nchw(map, &device));
                }
            })
        });
        self.pool.recycle(x.data);
        maps.into_iter().flatten().collect()
    }

    /// Stem and blocks through stage `last`, calling `observe(step, output)` after each
    /// [`Step`]; then, if `last` is `None`, the head. Returns the last map.
    fn run(
        &self,
        input: Tensor<4>,
        last: Option<usize>,
        observe: &mut dyn FnMut(Step, &Nhwc),
    ) -> Nhwc {
        let mut x = self.stem(input);
        observe(Step::Stem, &x);
        let mut start = 0;
        for (stage, &end) in self.stage_ends.iter().enumerate() {
            for (index, block) in self.blocks[start..end].iter().enumerate() {
                let y = self.block(block, &x);
                self.pool.recycle(std::mem::replace(&mut x, y).data);
                let last = start + index + 1 == end;
                observe(Step::Block { stage, index, last }, &x);
            }
            start = end;
            if last == Some(stage) {
                return x;
            }
        }
        let y = self.conv(&self.head, &x, None, None);
        self.pool.recycle(x.data);
        observe(Step::Head, &y);
        y
    }

    /// The stem convolution, reading its windows from the NCHW input in place: no pass
    /// that moves the input to NHWC first (on B0 at 224x224, one thread, that copy took a
    /// quarter of the stem's time).
    fn stem(&self, input: Tensor<4>) -> Nhwc {
        let [batch, channels, height, width] = input.dims();
        let nchw = input.into_data();
        let nchw = nchw
            .as_slice::<f32>()
            .expect("the plan applies to f32 tensors only");
        let shape = Shape {
            batch,
            height,
            width,
            channels,
        };
        self.windowed(&self.stem, nchw, shape, None)
    }

    fn block(&self, block: &Block, x: &Nhwc) -> Nhwc {
        match block {
            Block::MBConv {
                expand,
                depthwise,
                se,
                project,
                residual,
            } => {
                let (mut y, sums) = match expand {
                    Some(expand) => match self.expand_depthwise(expand, depthwise, x) {
                        Some(both) => both,
                        None => {
                            let expanded = self.conv(expand, x, None, None);
                            let out = self.depthwise(depthwise, &expanded);
                            self.pool.recycle(expanded.data);
                            out
                        }
                    },
                    None => self.depthwise(depthwise, x),
                };
                let residual = residual.then_some(&x.data[..]);
                let out = match se {
                    Some(se) => {
                        let pixels = (y.height * y.width) as f32;
                        let channels = se.channels;
                        let mut gates = self.pool.lend(y.batch * channels);
                        gates
                            .par_chunks_mut(channels)
                            .zip(sums.par_chunks(channels))
                            .for_each(|(gate, sums)| {
                                self.isa.run(Gate {
                                    se,
                                    sums,
                                    pixels,
                                    gate,
                                })
                            });
                        let rows = y.height * y.width;
                        let out = if matmul::packs_gated_rows(project.weights.n()) {
                            // The product would copy the rows to gate them (once per
                            // panel group on small maps): they are gated once, where they
                            // are, and read there. B0 and V2-S, per step, 0.96-0.98x on
                            // the 14x14 and 24x24 blocks.
                            y.data
                                .par_chunks_mut(rows * channels)
                                .zip(gates.par_chunks(channels))
                                .flat_map(|(sample, gates)| {
                                    sample
                                        .par_chunks_mut(GATED_ROWS * channels)
                                        .map(move |rows| (rows, gates))
                                })
                                .for_each(|(rows, gates)| self.isa.run(Gated { rows, gates }));
                            self.conv(project, &y, residual, None)
                        } else {
                            self.conv(project, &y, residual, Some(&gates))
                        };
                        self.pool.recycle(gates);
                        out
                    }
                    None => self.conv(project, &y, residual, None),
                };
                self.pool.recycle(sums);
                self.pool.recycle(y.data);
                out
            }
            Block::FusedMBConv {
                conv,
                project,
                residual,
            } => {
                let residual = residual.then_some(&x.data[..]);
                match project {
                    Some(project) => {
                        let y = self.conv(conv, x, None, None);
                        let out = self.conv(project, &y, residual, None);
                        self.pool.recycle(y.data);
                        out
                    }
                    None => self.conv(conv, x, residual, None),
                }
            }
        }
    }

    /// A convolution, plus `residual` (the output's shape) after the activation; `gates`:
    /// per sample, a factor for each input channel (`[batch][channels]`, 1x1 layers only).
    fn conv(&self, conv: &Conv, x: &Nhwc, residual: Option<&[f32]>, gates: Option<&[f32]>) -> Nhwc {
        let (k, stride) = (conv.kernel, conv.stride);
        let pads = Pads::resolve(&conv.padding, x.height, x.width, k, stride);
        if k == 1 && stride == 1 && pads == Pads::default() {
            let n = conv.weights.n();
            let mut out = self.pool.map(x.batch, x.height, x.width, n);
            let epilogue = Epilogue {
                bias: &conv.bias,
                activation: conv.activation,
                residual,
            };
            let (a, c) = (&x.data, &mut out.data);
            let weights = conv.weights.data();
            matmul::parallel(
                self.isa, a, x.batch, gates, weights, x.channels, n, epilogue, c,
            );
            return out;
        }
        // Gates come with MBConv projections, which are 1x1.
        debug_assert!(gates.is_none(), "channel gates on a {k}x{k} convolution");
        self.windowed(conv, &x.data, x.shape(), residual)
    }

    /// A kxk convolution over `input` (`shape`, laid out as the convolution's input): each
    /// task unfolds its output pixels' windows into rows of `k * k * channels` values, then
    /// multiplies them by the weights.
    fn windowed(&self, conv: &Conv, input: &[f32], shape: Shape, residual: Option<&[f32]>) -> Nhwc {
        let (k, stride) = (conv.kernel, conv.stride);
        let pads = Pads::resolve(&conv.padding, shape.height, shape.width, k, stride);
        let (out_height, out_width) = pads.output_size(shape.height, shape.width, k, stride);
        let n = conv.weights.n();
        let mut out = self.pool.map(shape.batch, out_height, out_width, n);
        let epilogue = Epilogue {
            bias: &conv.bias,
            activation: conv.activation,
            residual,
        };
        let weights = conv.weights.data();
        let depth = conv.weights.k();
        let sample_len = shape.height * shape.width * shape.channels;
        let pixels = out_height * out_width;
        matmul::for_row_blocks(
            &mut out.data,
            shape.batch,
            n,
            || (Vec::new(), Vec::new()),
            |(unfolded, packed): &mut (Vec<f32>, Vec<f32>), sample, first_row, c| {
                let sample_input = &input[sample * sample_len..(sample + 1) * sample_len];
                // A few hundred rows at a time, so that the product reads the windows from
                // L1 rather than after they have gone out to L2 or L3.
                let chunk_rows = (UNFOLDED_BYTES / (depth * size_of::<f32>()))
                    .next_multiple_of(matmul::ROW_QUANTUM);
                for (index, c) in c.chunks_mut(chunk_rows * n).enumerate() {
                    let first_row = first_row + index * chunk_rows;
                    let unfolded = aligned(unfolded, c.len() / n * depth);
                    match (conv.input, k) {
                        // EfficientNet's stems: runs of 3 taps as fixed-size copies rather
                        // than calls to `memcpy`.
                        (Layout::Nchw, 3) => unfold_nchw_runs::<3>(
                            sample_input,
                            shape,
                            &pads,
                            stride,
                            out_width,
                            first_row,
                            unfolded,
                        ),
                        (layout, _) => {
                            for (row, window) in unfolded.chunks_exact_mut(depth).enumerate() {
                                let pixel = first_row + row;
                                let at = (pixel / out_width * stride, pixel % out_width * stride);
                                match layout {
                                    Layout::Nhwc => {
                                        unfold(sample_input, shape, &pads, k, at, window)
                                    }
                                    Layout::Nchw => unfold_nchw_window(
                                        sample_input,
                                        shape,
                                        &pads,
                                        k,
                                        at,
                                        window,
                                    ),
                                }
                            }
                        }
                    }
                    let epilogue = epilogue.starting_at_row(sample * pixels + first_row, n);
                    matmul::serial(
                        self.isa, unfolded, depth, weights, depth, n, epilogue, c, packed,
                    );
                }
            },
        );
        out
    }

    /// The expansion and the depthwise convolution after it, together: each task computes
    /// the expanded rows its band of depthwise output rows reads (its own rows plus the
    /// kernel's overlap) into a scratch that stays in cache, then convolves them, so the
    /// expanded map, the largest tensor of the block, never goes through memory. A band
    /// goes in sub-bands of at most [`EXPANDED_BYTES`] of expanded rows; the rows two
    /// sub-bands share are moved, not recomputed. Taken for maps over
    /// [`EXPAND_DEPTHWISE_MIN_BYTES`] where the overlap between bands recomputes at most a
    /// quarter more rows; `None` otherwise (the two then run one after the other).
    pub(super) fn expand_depthwise(
        &self,
        expand: &Conv,
        dw: &Depthwise,
        x: &Nhwc,
    ) -> Option<(Nhwc, Aligned)> {
        let (k, stride, channels) = (dw.kernel, dw.stride, dw.channels);
        let pointwise = expand.kernel == 1 && expand.stride == 1;
        let pads = Pads::resolve(&dw.padding, x.height, x.width, k, stride);
        let unpadded = Pads::resolve(&expand.padding, x.height, x.width, 1, 1) == Pads::default();
        let bytes = x.height * x.width * channels * 4;
        if !pointwise
            || !unpadded
            || expand.weights.n() != channels
            || bytes < EXPAND_DEPTHWISE_MIN_BYTES
        {
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
        let mut out = self.pool.map(x.batch, out_height, out_width, channels);
        let mut partial = self.pool.lend(x.batch * out_height * channels);
        let in_channels = x.channels;
        let sample_len = x.sample_len();
        // Each band runs in sub-bands whose expanded rows fit EXPANDED_BYTES, keeping the
        // rows the next sub-band reads again.
        let row_len = x.width * channels;
        let fitting_rows = EXPANDED_BYTES / (row_len * 4);
        let sub_band = (fitting_rows.saturating_sub(k) / stride + 1).min(band);
        let held_rows = (sub_band - 1) * stride + k;
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
                |(expanded, packed): &mut (Vec<f32>, Vec<f32>), (sample, first, out, sums)| {
                    let expanded = aligned(expanded, held_rows * row_len);
                    // Input rows held in `expanded`, from its start.
                    let mut held = 0..0;
                    let chunks = out
                        .chunks_mut(sub_band * out_width * channels)
                        .zip(sums.chunks_mut(sub_band * channels));
                    for (index, (out, sums)) in chunks.enumerate() {
                        let first = first + index * sub_band;
                        let last = first + sums.len() / channels - 1;
                        // Input rows these output rows read: padded rows
                        // first * stride..last * stride + k.
                        let top = (first * stride).saturating_sub(pads.top);
                        let end = (last * stride + k).saturating_sub(pads.top).min(x.height);
                        // The rows the previous sub-band expanded and this one reads again
                        // move to the front; only the rest is expanded.
                        let kept = top.max(held.start)..held.end.max(top);
                        if !kept.is_empty() {
                            let from = kept.start - held.start..kept.end - held.start;
                            expanded.copy_within(from.start * row_len..from.end * row_len, 0);
                        }
                        let new = kept.end..end;
                        let a = &x.data[sample * sample_len + new.start * x.width * in_channels..];
                        let a = &a[..new.len() * x.width * in_channels];
                        let c = &mut expanded[kept.len() * row_len..(end - top) * row_len];
                        matmul::serial(
                            self.isa,
                            a,
                            in_channels,
                            expand.weights.data(),
                            in_channels,
                            channels,
                            epilogue,
                            c,
                            packed,
                        );
                        held = top..end;
                        let geometry =
                            Geometry::new(dw, (x.height, x.width), &pads, out_width, top);
                        self.isa.run(depthwise::Rows {
                            input: &expanded[..(end - top) * row_len],
                            geometry: &geometry,
                            dw,
                            first_oy: first,
                            out,
                            sums,
                        });
                    }
                },
            );
        let sums = self.sample_sums(&partial, x.batch, out_height, channels);
        self.pool.recycle(partial);
        Some((out, sums))
    }

    /// A depthwise convolution with its bias and activation, and the per-sample channel sums
    /// of its output (`[batch][channels]`, for the squeeze-excitation).
    pub(super) fn depthwise(&self, dw: &Depthwise, x: &Nhwc) -> (Nhwc, Aligned) {
        let (k, stride, channels) = (dw.kernel, dw.stride, dw.channels);
        let pads = Pads::resolve(&dw.padding, x.height, x.width, k, stride);
        let (out_height, out_width) = pads.output_size(x.height, x.width, k, stride);
        let mut out = self.pool.map(x.batch, out_height, out_width, channels);
        let mut partial = self.pool.lend(x.batch * out_height * channels);
        let geometry = Geometry::new(dw, (x.height, x.width), &pads, out_width, 0);
        let sample_len = x.sample_len();
        out.data
            .par_chunks_mut(out_width * channels)
            .zip(partial.par_chunks_mut(channels))
            .enumerate()
            .for_each(|(row, (out, sums))| {
                let (sample, oy) = (row / out_height, row % out_height);
                self.isa.run(depthwise::Rows {
                    input: &x.data[sample * sample_len..(sample + 1) * sample_len],
                    geometry: &geometry,
                    dw,
                    first_oy: oy,
                    out,
                    sums,
                });
            });
        let sums = self.sample_sums(&partial, x.batch, out_height, channels);
        self.pool.recycle(partial);
        (out, sums)
    }

    /// Per-sample channel sums (`[batch][channels]`) of per-row ones (`[batch * rows][channels]`).
    fn sample_sums(&self, partial: &[f32], batch: usize, rows: usize, channels: usize) -> Aligned {
        let mut sums = self.pool.lend(batch * channels);
        // A sample a task: the global pooling of a batch of 8 sums 8 maps.
        sums.par_chunks_exact_mut(channels)
            .enumerate()
            .for_each(|(sample, sums)| {
                sums.fill(0.0);
                let rows = partial[sample * rows * channels..]
                    .chunks_exact(channels)
                    .take(rows);
                for row in rows {
                    for (sum, &value) in sums.iter_mut().zip(row) {
                        *sum += value;
                    }
                }
            });
        sums
    }
}

/// An NHWC map as an NCHW tensor on `device`.
fn to_nchw(map: &Nhwc, device: &Device) -> Tensor<4> {
    let (batch, height, width, channels) = (map.batch, map.height, map.width, map.channels);
    let pixels = height * width;
    let mut nchw = vec![0.0; map.data.len()];
    nchw.par_chunks_mut(pixels * channels)
        .zip(map.data.par_chunks(pixels * channels))
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

/// Bytes of unfolded windows a task makes before multiplying them ([`Plan::windowed`]).
const UNFOLDED_BYTES: usize = 32 * 1024;

/// Rows a task gates in place before a projection ([`Gated`]).
const GATED_ROWS: usize = 16;

/// A map's dimensions, whatever its [`Layout`].
#[derive(Clone, Copy, Debug)]
struct Shape {
    batch: usize,
    height: usize,
    width: usize,
    channels: usize,
}

impl Nhwc {
    fn shape(&self) -> Shape {
        Shape {
            batch: self.batch,
            height: self.height,
            width: self.width,
            channels: self.channels,
        }
    }
}

/// The input columns a kxk window starting at input column `x0` (padding included) covers
/// inside the input: as the window's taps `kx`, the first at input column
/// `x0 + kx - pads.left`.
fn taps_inside(pads: &Pads, k: usize, width: usize, x0: usize) -> std::ops::Range<usize> {
    pads.left.saturating_sub(x0)..k.min((width + pads.left).saturating_sub(x0))
}

/// The input row of padded row `y`, if it is not in the padding: [`taps_inside`]'s twin
/// for rows.
fn row_inside(pads: &Pads, height: usize, y: usize) -> Option<usize> {
    y.checked_sub(pads.top).filter(|&row| row < height)
}

/// The kxk window whose top left corner is `(y0, x0)` (in padded coordinates) of `input`,
/// one NHWC sample of `shape`, into `window` (`[ky][kx][channel]`), zeros where it lies in
/// the padding.
fn unfold(
    input: &[f32],
    shape: Shape,
    pads: &Pads,
    k: usize,
    (y0, x0): (usize, usize),
    window: &mut [f32],
) {
    // One kernel row at a time: its taps inside the input are one contiguous run of NHWC.
    let channels = shape.channels;
    let kx_range = taps_inside(pads, k, shape.width, x0);
    for (ky, out) in window.chunks_exact_mut(k * channels).enumerate() {
        match row_inside(pads, shape.height, y0 + ky) {
            Some(iy) if !kx_range.is_empty() => {
                let ix = x0 + kx_range.start - pads.left;
                let start = (iy * shape.width + ix) * channels;
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

/// The windows of output pixels `first..` (as many as `unfolded` holds, `K * K * channels`
/// values each) of a KxK convolution at `stride` over one NCHW sample of `shape`, in
/// channel-major order (`[channel][ky][kx]`), zeros where they lie in the padding. In that
/// order a window's row of taps is a contiguous run of the input row: windows inside the
/// input copy them as `K`-value runs, the ones at its edges go through
/// [`unfold_nchw_window`].
fn unfold_nchw_runs<const K: usize>(
    input: &[f32],
    shape: Shape,
    pads: &Pads,
    stride: usize,
    out_width: usize,
    first: usize,
    unfolded: &mut [f32],
) {
    let (channels, width) = (shape.channels, shape.width);
    let depth = K * K * channels;
    let plane = shape.height * width;
    // The output columns whose window lies inside the row: from the first with
    // `ox * stride >= left`, to before the first with `ox * stride + K > width + left`.
    let inside =
        pads.left.div_ceil(stride)..(width + pads.left + 1).saturating_sub(K).div_ceil(stride);
    for (row, window) in unfolded.chunks_exact_mut(depth).enumerate() {
        let pixel = first + row;
        let (oy, ox) = (pixel / out_width, pixel % out_width);
        let y0 = oy * stride;
        let rows_inside = y0 >= pads.top && y0 + K <= shape.height + pads.top;
        if !(inside.contains(&ox) && rows_inside) {
            unfold_nchw_window(input, shape, pads, K, (y0, ox * stride), window);
            continue;
        }
        let x = ox * stride - pads.left;
        let (taps, _) = window.as_chunks_mut::<K>();
        for (run, tap_row) in taps.iter_mut().enumerate() {
            let (channel, ky) = (run / K, run % K);
            let start = channel * plane + (y0 + ky - pads.top) * width + x;
            *tap_row = input[start..start + K].try_into().expect("K values");
        }
    }
}

/// [`unfold`] from one NCHW sample: the window whose top left corner is `(y0, x0)` (in
/// padded coordinates), in channel-major order (`[channel][ky][kx]`), checking every row
/// and column against the padding.
fn unfold_nchw_window(
    input: &[f32],
    shape: Shape,
    pads: &Pads,
    k: usize,
    (y0, x0): (usize, usize),
    window: &mut [f32],
) {
    let plane = shape.height * shape.width;
    let kx_range = taps_inside(pads, k, shape.width, x0);
    window.fill(0.0);
    if kx_range.is_empty() {
        return;
    }
    for (run, taps) in window.chunks_exact_mut(k).enumerate() {
        let (channel, ky) = (run / k, run % k);
        let Some(iy) = row_inside(pads, shape.height, y0 + ky) else {
            continue;
        };
        let start = channel * plane + iy * shape.width + x0 + kx_range.start - pads.left;
        taps[kx_range.clone()].copy_from_slice(&input[start..start + kx_range.len()]);
    }
}

#[cfg(test)]
mod tests {
    use burn::nn::PaddingConfig2d;
    use burn::tensor::Device;

    use super::*;
    use crate::cpu::bench::pseudo_random as values;
    use crate::cpu::matmul::Packed;
    use crate::inference::Precision;
    use crate::model::activation::Activation;

    fn worst(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max)
    }

    /// B0 at a tenth of its width and depth, folded, and its plan.
    fn tiny_b0() -> (crate::EfficientNet, Plan) {
        let model = crate::EfficientNetConfig::b0()
            .with_width(0.1)
            .with_depth(0.1)
            .init(&Device::flex())
            .fold_batch_norms();
        let plan = Plan::new(&model, Precision::F32).expect("a folded flex model plans");
        (model, plan)
    }

    #[test]
    fn expansion_with_depthwise_matches_the_two_layers() {
        // Any plan lends its buffer pool; the layers are made here. 96 expanded channels at
        // 64x64 and more are over EXPAND_DEPTHWISE_MIN_BYTES; bands of a batch of one overlap
        // by the kernel's extent, larger batches run a whole map per task. Every band runs
        // in several sub-bands of EXPANDED_BYTES (3 to 8 output rows here) that share rows,
        // a partial one last; at width 700 a sub-band is one output row.
        let (_, plan) = tiny_b0();
        let (inputs, channels) = (16, 96);
        let cases = [
            // (kernel, stride, padding, height, width, batch)
            (3, 2, PaddingConfig2d::Explicit(1, 1, 1, 1), 64, 64, 1),
            (3, 2, PaddingConfig2d::Explicit(1, 1, 1, 1), 17, 700, 1),
            (5, 1, PaddingConfig2d::Same, 80, 52, 1),
            (3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), 64, 66, 3),
            (5, 2, PaddingConfig2d::Same, 61, 67, 2),
        ];
        for (k, stride, padding, height, width, batch) in cases {
            let weights = values(inputs * channels, 1);
            let expand = Conv {
                input: Layout::Nhwc,
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
            let mut x = plan.pool.map(batch, height, width, inputs);
            let len = x.data.len();
            x.data.copy_from_slice(&values(len, 5));
            let case = format!("k{k} s{stride} {height}x{width} batch {batch}");
            let (both, both_sums) = plan
                .expand_depthwise(&expand, &dw, &x)
                .unwrap_or_else(|| panic!("{case}: not run together"));
            let expanded = plan.conv(&expand, &x, None, None);
            let (apart, apart_sums) = plan.depthwise(&dw, &expanded);
            assert_eq!((both.height, both.width), (apart.height, apart.width));
            let diff = worst(&both.data, &apart.data);
            assert!(diff < 1e-5, "{case}: outputs differ by {diff}");
            let diff = worst(&both_sums, &apart_sums);
            assert!(diff < 1e-3, "{case}: channel sums differ by {diff}");
        }
    }

    /// A kxk convolution with SiLU by its definition: `weights` `[out][channel][ky][kx]`,
    /// `input` NCHW, the output NHWC.
    #[allow(clippy::too_many_arguments)]
    fn direct_conv(
        input: &[f32],
        shape: Shape,
        weights: &[f32],
        bias: &[f32],
        k: usize,
        stride: usize,
        pads: &Pads,
        (out_height, out_width): (usize, usize),
    ) -> Vec<f32> {
        let (channels, n) = (shape.channels, bias.len());
        let mut out = Vec::new();
        for sample in 0..shape.batch {
            for oy in 0..out_height {
                for ox in 0..out_width {
                    for o in 0..n {
                        let mut sum = bias[o] as f64;
                        for c in 0..channels {
                            for ky in 0..k {
                                for kx in 0..k {
                                    let iy = (oy * stride + ky) as isize - pads.top as isize;
                                    let ix = (ox * stride + kx) as isize - pads.left as isize;
                                    if iy < 0 || ix < 0 {
                                        continue;
                                    }
                                    let (iy, ix) = (iy as usize, ix as usize);
                                    if iy >= shape.height || ix >= shape.width {
                                        continue;
                                    }
                                    let at = ((sample * channels + c) * shape.height + iy)
                                        * shape.width
                                        + ix;
                                    let w = weights[((o * channels + c) * k + ky) * k + kx];
                                    sum += input[at] as f64 * w as f64;
                                }
                            }
                        }
                        out.push((sum / (1.0 + (-sum).exp())) as f32);
                    }
                }
            }
        }
        out
    }

    #[test]
    fn convolutions_read_nchw_and_nhwc_inputs_as_the_definition() {
        // The stem reads the NCHW input in place, 3x3 windows inside the input as runs of 3
        // and the rest checked tap by tap; other kernels go tap by tap throughout. Each case
        // also runs on the same input moved to NHWC, as Fused-MBConv's convolutions do.
        let (_, plan) = tiny_b0();
        let cases = [
            // (kernel, stride, padding, height, width, channels, batch)
            (3, 2, PaddingConfig2d::Same, 224, 224, 3, 1),
            (3, 2, PaddingConfig2d::Explicit(1, 1, 1, 1), 33, 20, 3, 2),
            (3, 1, PaddingConfig2d::Same, 9, 14, 1, 1),
            (3, 2, PaddingConfig2d::Valid, 12, 7, 4, 1),
            (3, 3, PaddingConfig2d::Explicit(0, 2, 1, 0), 10, 11, 3, 1),
            (5, 2, PaddingConfig2d::Same, 19, 23, 3, 2),
            (1, 2, PaddingConfig2d::Valid, 8, 9, 3, 1),
            (3, 2, PaddingConfig2d::Same, 2, 3, 3, 1),
        ];
        for (k, stride, padding, height, width, channels, batch) in cases {
            let n = 24;
            let shape = Shape {
                batch,
                height,
                width,
                channels,
            };
            let weights = values(n * channels * k * k, 1);
            let bias = values(n, 2);
            let input = values(batch * channels * height * width, 3);
            let pads = Pads::resolve(&padding, height, width, k, stride);
            let out_size = pads.output_size(height, width, k, stride);
            let expected = direct_conv(&input, shape, &weights, &bias, k, stride, &pads, out_size);
            let conv = |layout| Conv {
                input: layout,
                kernel: k,
                stride,
                padding: padding.clone(),
                weights: Packed::new(k * k * channels, n, |row, column| {
                    let (channel, tap) = match layout {
                        Layout::Nchw => (row / (k * k), row % (k * k)),
                        Layout::Nhwc => (row % channels, row / channels),
                    };
                    weights[(column * channels + channel) * k * k + tap]
                }),
                bias: bias.clone(),
                activation: Some(Activation::SiLU),
            };
            let mut nhwc = vec![0.0; input.len()];
            for (at, &value) in input.iter().enumerate() {
                let (x, rest) = (at % width, at / width);
                let (y, rest) = (rest % height, rest / height);
                let (c, sample) = (rest % channels, rest / channels);
                nhwc[((sample * height + y) * width + x) * channels + c] = value;
            }
            let case =
                format!("k{k} s{stride} {padding:?} {height}x{width}x{channels} batch {batch}");
            for (layout, input) in [(Layout::Nchw, &input), (Layout::Nhwc, &nhwc)] {
                let out = plan.windowed(&conv(layout), input, shape, None);
                assert_eq!((out.height, out.width), out_size, "{case}");
                assert_eq!(out.data.len(), expected.len(), "{case}");
                let diff = worst(&out.data, &expected);
                assert!(diff < 1e-5, "{case}, {layout:?}: differs by {diff}");
            }
        }
    }

    #[test]
    fn step_times_name_every_step_of_the_forward_as_torchvision_does() {
        // B0's layout at a tenth of its depth: one block a stage (torchvision's
        // `features.1.0` .. `features.7.0`), between the stem `features.0` and the head
        // `features.8`.
        let (model, plan) = tiny_b0();
        let blocks: Vec<usize> = model.stages.iter().map(Vec::len).collect();
        let input = Tensor::<4>::ones([2, 3, 32, 32], &Device::flex());
        let times = plan.step_times(input);
        let mut expected = vec!["features.0".to_string()];
        for (stage, &count) in blocks.iter().enumerate() {
            expected.extend((0..count).map(|index| format!("features.{}.{index}", stage + 1)));
        }
        expected.push(format!("features.{}", blocks.len() + 1));
        expected.push("pooling + classifier".into());
        let names: Vec<&str> = times.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, expected);
        assert_eq!(blocks.len(), 7, "B0 has 7 stages");
    }
}
