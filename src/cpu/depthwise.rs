//! Depthwise convolution on NHWC maps, vectorised across channels: one output row at a
//! time, each pixel's channels in chunks of 64, 16, 8 and 1 lanes, several pixels in
//! flight, with the bias, the activation and the per-channel sums the squeeze-excitation
//! needs taken in the same pass.

use burn::nn::PaddingConfig2d;

use crate::cpu::isa::{Isa, Kernel};
use crate::cpu::padding::Pads;
use crate::model::activation::Activation;

/// A depthwise convolution with its folded bias; `taps` is `[k * k][channels]`.
#[derive(Debug)]
pub(crate) struct Depthwise {
    pub(crate) kernel: usize,
    pub(crate) stride: usize,
    pub(crate) padding: PaddingConfig2d,
    pub(crate) channels: usize,
    pub(crate) taps: Vec<f32>,
    pub(crate) bias: Vec<f32>,
    pub(crate) activation: Option<Activation>,
}

/// What a depthwise output row needs to know of its input.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    /// The input row that the input slice starts at (a band of the map, or 0).
    pub(crate) first_row: usize,
    pub(crate) height: usize,
    pub(crate) width: usize,
    pub(crate) channels: usize,
    pub(crate) kernel: usize,
    pub(crate) stride: usize,
    pub(crate) top: usize,
    pub(crate) left: usize,
    pub(crate) out_width: usize,
}

impl Geometry {
    /// `dw` over a `height x width` input padded by `pads`, whose values start at input row
    /// `first_row`.
    pub(crate) fn new(
        dw: &Depthwise,
        (height, width): (usize, usize),
        pads: &Pads,
        out_width: usize,
        first_row: usize,
    ) -> Self {
        Self {
            first_row,
            height,
            width,
            channels: dw.channels,
            kernel: dw.kernel,
            stride: dw.stride,
            top: pads.top,
            left: pads.left,
            out_width,
        }
    }
}

/// Output rows `first_oy..` of a depthwise convolution (`out`: rows of
/// `[out_width][channels]`), each row's channel sums into `sums` (a row of `channels` per
/// output row): the unit of work handed to [`Detected::run`](crate::cpu::isa::Detected::run).
pub(crate) struct Rows<'a> {
    pub(crate) input: &'a [f32],
    pub(crate) geometry: &'a Geometry,
    pub(crate) dw: &'a Depthwise,
    pub(crate) first_oy: usize,
    pub(crate) out: &'a mut [f32],
    pub(crate) sums: &'a mut [f32],
}

impl Kernel for Rows<'_> {
    type Output = ();

    #[inline(always)]
    fn run<I: Isa>(self, isa: I) {
        let Self {
            input,
            geometry,
            dw,
            first_oy,
            out,
            sums,
        } = self;
        let g = geometry;
        let rows = out
            .chunks_exact_mut(g.out_width * g.channels)
            .zip(sums.chunks_exact_mut(g.channels));
        for (row, (out, sums)) in rows.enumerate() {
            let mut first = 0;
            while first < g.channels {
                let left = g.channels - first;
                let oy = first_oy + row;
                // Chunk widths and pixels per step measured on AVX2 (B0, one thread): 32
                // channels as 32 x 3 rather than two 16 x 4 took its 112x112 layer from 0.90
                // to 0.53 ms; 64 x 2 beats 32 x 3 wherever 64 channels are left.
                first += if left >= 64 {
                    chunk::<64, 2, I>(isa, input, g, dw, oy, first, out, sums)
                } else if left >= 32 {
                    chunk::<32, 3, I>(isa, input, g, dw, oy, first, out, sums)
                } else if left >= 16 {
                    chunk::<16, 4, I>(isa, input, g, dw, oy, first, out, sums)
                } else if left >= 8 {
                    chunk::<8, 4, I>(isa, input, g, dw, oy, first, out, sums)
                } else {
                    chunk::<1, 1, I>(isa, input, g, dw, oy, first, out, sums)
                };
            }
        }
    }
}

/// One depthwise output pixel's `L` channels: activation, into the row's channel `totals`,
/// stored at `out[start..]`. (A function, not a closure: a closure is compiled apart from
/// the kernel, without its target features.)
#[inline(always)]
fn finish_pixel<const L: usize, I: Isa>(
    isa: I,
    mut acc: [f32; L],
    activation: Option<Activation>,
    totals: &mut [f32; L],
    out: &mut [f32],
    start: usize,
) {
    isa.activate(&mut acc, activation);
    for (total, &value) in totals.iter_mut().zip(&acc) {
        *total += value;
    }
    let out: &mut [f32; L] = (&mut out[start..start + L]).try_into().expect("L values");
    *out = acc;
}

/// Channels `first..first + L` of output row `oy`; returns `L`. Output pixels whose window
/// lies inside the input go `PX` at a time ([`interior`]), so that `PX` accumulators per
/// register are in flight (one alone waits on its previous multiply-add at every tap).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn chunk<const L: usize, const PX: usize, I: Isa>(
    isa: I,
    input: &[f32],
    g: &Geometry,
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
        let registers = L / I::LANES;
        let left = inside_end.saturating_sub(ox);
        // Eight sums under way, 2 pixels x 4 registers or 4 x 2: fewer would wait on their
        // own multiply-adds (the paths below have all of the chunk's registers in flight).
        let fits = |px: usize, r: usize| left >= px && registers.is_multiple_of(r);
        let window = Window {
            ky_range: ky_range.clone(),
            base_y,
            ox,
            first,
        };
        if L.is_multiple_of(I::LANES) && ox >= inside_start && (fits(2, 4) || fits(4, 2)) {
            let (bias, total) = (&bias, &mut total);
            ox += if fits(2, 4) {
                finished::<L, 2, 4, I>(isa, input, g, dw, bias, window, out, total)
            } else {
                finished::<L, 4, 2, I>(isa, input, g, dw, bias, window, out, total)
            };
            continue;
        }
        if PX > 1 && ox >= inside_start && ox + PX <= inside_end {
            let acc = if L.is_multiple_of(I::LANES) && L / I::LANES <= MAX_REGISTERS {
                interior::<L, PX, I>(isa, input, g, dw, &bias, window)
            } else {
                let mut acc = [bias; PX];
                for ky in ky_range.clone() {
                    let row = (base_y + ky - g.top - g.first_row) * g.width;
                    for kx in 0..k {
                        let tap = (ky * k + kx) * c + first;
                        let w: &[f32; L] = dw.taps[tap..tap + L].try_into().expect("L values");
                        for (p, acc) in acc.iter_mut().enumerate() {
                            let start = (row + (ox + p) * s + kx - g.left) * c + first;
                            let src: &[f32; L] =
                                input[start..start + L].try_into().expect("L values");
                            for lane in 0..L {
                                acc[lane] = isa.mul_add(w[lane], src[lane], acc[lane]);
                            }
                        }
                    }
                }
                acc
            };
            for (p, acc) in acc.into_iter().enumerate() {
                let start = (ox + p) * c + first;
                finish_pixel::<L, I>(isa, acc, dw.activation, &mut total, out, start);
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
                    acc[lane] = isa.mul_add(w[lane], src[lane], acc[lane]);
                }
            }
        }
        finish_pixel::<L, I>(isa, acc, dw.activation, &mut total, out, ox * c + first);
        ox += 1;
    }
    for (sum, total) in sums[first..first + L].iter_mut().zip(total) {
        *sum = total;
    }
    L
}

/// The `PX` output pixels at `window`, whose windows lie inside the input (in width; rows
/// outside are left out of `ky_range`), finished: summed, activated, added to the row's
/// channel `total` and stored into `out`, from registers. `R` registers of channels at a
/// time (`L` a multiple of them), so that the `PX x R` sums, the tap's `R` weights and one
/// input value are all that is live (13 registers at 2 x 4 or 4 x 2), each weight loaded
/// once for the `PX` pixels; the sums then go through the activation into the output and
/// the total without passing through memory. Returns `PX`.
///
/// Each output value takes its taps in the same order as [`interior`]'s and [`chunk`]'s
/// lane loop, and each total its pixels in the same order, so the results are the same to
/// the bit. [`interior`] (all `L` channels of 2 to 4 pixels at once) spilled at 64 channels
/// on AVX2 and put every sum through an array before the activation. On one thread, with
/// SiLU, old and new interleaved in one process: B0's 14x14x480 layer 0.88x, 7x7x1152 0.91x
/// (3x3 and 5x5); V2-S's 24x24x960 0.88x, 12x12x1536 0.92x, 24x24x512 0.95x. One register
/// for 8 pixels first (28x28x240 5x5 0.75x, 56x56x144 0.91-0.95x) was 15% slower at pixel
/// strides of 2 KiB multiples (12x12x1536, 24x24x512), whose 8 pixels' rows fell into the
/// same L1 sets.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn finished<const L: usize, const PX: usize, const R: usize, I: Isa>(
    isa: I,
    input: &[f32],
    g: &Geometry,
    dw: &Depthwise,
    bias: &[f32; L],
    window: Window,
    out: &mut [f32],
    total: &mut [f32; L],
) -> usize {
    // Every value read or written, checked once: the reads, then the writes.
    window.check::<L, PX>(input, g, dw);
    let Window {
        ky_range,
        base_y,
        ox,
        first,
    } = window;
    let (c, k, s, lanes) = (g.channels, g.kernel, g.stride, I::LANES);
    assert!(
        (ox + PX - 1) * c + first + L <= out.len(),
        "depthwise pixels past their row"
    );
    let (input, taps, out) = (input.as_ptr(), dw.taps.as_ptr(), out.as_mut_ptr());
    assert!((L / lanes).is_multiple_of(R), "whole groups of registers");
    for group in (0..L / lanes).step_by(R) {
        let lane = group * lanes;
        let channel = first + lane;
        let mut sums = [[isa.zero(); R]; PX];
        for sums in sums.iter_mut() {
            for (r, sum) in sums.iter_mut().enumerate() {
                // SAFETY: `bias` holds L values, `lane + R * lanes <= L`.
                *sum = unsafe { isa.load(bias.as_ptr().add(lane + r * lanes)) };
            }
        }
        for ky in ky_range.clone() {
            let row = (base_y + ky - g.top - g.first_row) * g.width;
            for kx in 0..k {
                // SAFETY: tap `ky * k + kx` of the group's channels, and input column
                // `(ox + p) * s + kx - left` of the row: inside `taps` and `input`, both
                // asserted above for the largest `ky`, `kx` and pixel.
                unsafe {
                    let tap = taps.add((ky * k + kx) * c + channel);
                    let mut weights = [isa.zero(); R];
                    for (r, weight) in weights.iter_mut().enumerate() {
                        *weight = isa.load(tap.add(r * lanes));
                    }
                    let start = (row + ox * s + kx - g.left) * c + channel;
                    for (p, sums) in sums.iter_mut().enumerate() {
                        for (r, sum) in sums.iter_mut().enumerate() {
                            let x = isa.load(input.add(start + p * s * c + r * lanes));
                            *sum = isa.fmadd(weights[r], x, *sum);
                        }
                    }
                }
            }
        }
        let mut totals = [isa.zero(); R];
        for (r, row_total) in totals.iter_mut().enumerate() {
            // SAFETY: as for the bias.
            *row_total = unsafe { isa.load(total.as_ptr().add(lane + r * lanes)) };
        }
        for (p, sums) in sums.into_iter().enumerate() {
            for (r, sum) in sums.into_iter().enumerate() {
                let value = isa.activate_register(sum, dw.activation);
                // SAFETY: pixel `ox + p`'s channels `channel + r * lanes..` (one register),
                // inside `out` (asserted above).
                unsafe { isa.store(out.add((ox + p) * c + channel + r * lanes), value) };
                totals[r] = isa.add(totals[r], value);
            }
        }
        for (r, row_total) in totals.into_iter().enumerate() {
            // SAFETY: as for the bias.
            unsafe { isa.store(total.as_mut_ptr().add(lane + r * lanes), row_total) };
        }
    }
    PX
}

/// Registers of one pixel's channels an explicit-register [`interior`] holds at most.
const MAX_REGISTERS: usize = 8;

/// Where [`interior`]'s and [`finished`]'s `PX` output pixels are: output columns
/// `ox..ox + PX` of the output row at padded input row `base_y`, whose taps inside the
/// input are rows `ky_range`; channels `first..first + L`.
struct Window {
    ky_range: std::ops::Range<usize>,
    base_y: usize,
    ox: usize,
    first: usize,
}

impl Window {
    /// Asserts that the `PX` pixels' taps inside the input, `L` channels each, and the
    /// taps' `L` weights are inside `input` and `dw.taps`: the windows are inside the input
    /// by the caller's choice of `ox` and `ky_range`, so the last value is the only one to
    /// check.
    #[inline(always)]
    fn check<const L: usize, const PX: usize>(&self, input: &[f32], g: &Geometry, dw: &Depthwise) {
        let (c, k, s) = (g.channels, g.kernel, g.stride);
        if let Some(last_ky) = self.ky_range.clone().last() {
            let last_row = (self.base_y + last_ky - g.top - g.first_row) * g.width;
            let last = (last_row + (self.ox + PX - 1) * s + k - 1 - g.left) * c + self.first + L;
            assert!(last <= input.len(), "a depthwise window past its input");
        }
        assert!(
            (k * k - 1) * c + self.first + L <= dw.taps.len(),
            "taps too short"
        );
    }
}

/// The sums (bias included) of `PX` output pixels whose windows lie inside the input (in
/// width; rows outside are left out of `ky_range`), in explicit registers, `L / LANES` of
/// them per pixel, with one bounds check per call instead of one per load. The lane loop it
/// replaces (still used for chunks narrower than a register) left vectorising to LLVM:
/// at 32 lanes on AVX2 that ran 3x slower than at 64, and B0's depthwise layers on one
/// thread took 10-40% longer.
#[inline(always)]
fn interior<const L: usize, const PX: usize, I: Isa>(
    isa: I,
    input: &[f32],
    g: &Geometry,
    dw: &Depthwise,
    bias: &[f32; L],
    window: Window,
) -> [[f32; L]; PX] {
    if window.ky_range.is_empty() {
        return [*bias; PX];
    }
    // The last value any tap reads, checked once.
    window.check::<L, PX>(input, g, dw);
    let Window {
        ky_range,
        base_y,
        ox,
        first,
    } = window;
    let (c, k, s, lanes) = (g.channels, g.kernel, g.stride, I::LANES);
    let registers = L / lanes;
    let mut acc = [[isa.zero(); MAX_REGISTERS]; PX];
    for acc in acc.iter_mut() {
        for (r, acc) in acc.iter_mut().enumerate().take(registers) {
            // SAFETY: `bias` holds L = registers * lanes values.
            *acc = unsafe { isa.load(bias.as_ptr().add(r * lanes)) };
        }
    }
    let (input, taps) = (input.as_ptr(), dw.taps.as_ptr());
    for ky in ky_range {
        let row = (base_y + ky - g.top - g.first_row) * g.width;
        for kx in 0..k {
            let tap = taps.wrapping_add((ky * k + kx) * c + first);
            for (p, acc) in acc.iter_mut().enumerate() {
                let start = (row + (ox + p) * s + kx - g.left) * c + first;
                let src = input.wrapping_add(start);
                for (r, acc) in acc.iter_mut().enumerate().take(registers) {
                    // SAFETY: the tap's L weights are inside `taps` and the pixel's L
                    // inputs inside `input`: both bounds are asserted above for the largest
                    // `ky`, `kx` and pixel; `r * lanes + lanes <= L`.
                    let (w, x) = unsafe {
                        (
                            isa.load(tap.wrapping_add(r * lanes)),
                            isa.load(src.wrapping_add(r * lanes)),
                        )
                    };
                    *acc = isa.fmadd(w, x, *acc);
                }
            }
        }
    }
    let mut out = [[0.0f32; L]; PX];
    for (out, acc) in out.iter_mut().zip(acc) {
        for (r, acc) in acc.into_iter().enumerate().take(registers) {
            // SAFETY: `out` holds L = registers * lanes values.
            unsafe { isa.store(out.as_mut_ptr().add(r * lanes), acc) };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::{Device, Distribution, Tensor};

    use super::*;
    use crate::cpu::isa::Detected;

    #[test]
    fn every_instruction_set_matches_burns_convolution() {
        let device = Device::flex();
        // 123 channels run the 64-, 32-, 16-, 8- and 1-lane chunks; sizes from 1x1 up, every
        // padding, both strides and kernels.
        let channels = 123;
        let cases = [
            // (kernel, stride, padding, height, width)
            (3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), 9, 9),
            (3, 2, PaddingConfig2d::Explicit(1, 1, 1, 1), 12, 11),
            (5, 2, PaddingConfig2d::Explicit(2, 2, 2, 2), 7, 8),
            (5, 1, PaddingConfig2d::Same, 6, 5),
            (3, 2, PaddingConfig2d::Same, 8, 8),
            (5, 2, PaddingConfig2d::Same, 10, 13),
            (3, 1, PaddingConfig2d::Valid, 4, 4),
            (3, 2, PaddingConfig2d::Same, 1, 1),
        ];
        for (kernel, stride, padding, height, width) in cases {
            let conv = Conv2dConfig::new([channels, channels], [kernel, kernel])
                .with_groups(channels)
                .with_stride([stride, stride])
                .with_padding(padding.clone())
                .init(&device);
            let input =
                Tensor::<4>::random([1, channels, height, width], Distribution::Default, &device);
            let expected = burn::tensor::activation::silu(conv.forward(input.clone()));
            let [_, _, out_height, out_width] = expected.dims();
            let expected = expected.permute([0, 2, 3, 1]).into_data();
            let expected = expected.as_slice::<f32>().unwrap();

            let weight = conv.weight.val().into_data().try_to_vec::<f32>().unwrap();
            let taps_per_channel = kernel * kernel;
            let dw = Depthwise {
                kernel,
                stride,
                padding: padding.clone(),
                channels,
                taps: (0..taps_per_channel * channels)
                    .map(|i| weight[(i % channels) * taps_per_channel + i / channels])
                    .collect(),
                bias: conv
                    .bias
                    .as_ref()
                    .unwrap()
                    .val()
                    .into_data()
                    .try_to_vec()
                    .unwrap(),
                activation: Some(Activation::SiLU),
            };
            let nhwc = input
                .permute([0, 2, 3, 1])
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            let pads = Pads::resolve(&padding, height, width, kernel, stride);
            assert_eq!(
                pads.output_size(height, width, kernel, stride),
                (out_height, out_width)
            );
            let geometry = Geometry::new(&dw, (height, width), &pads, out_width, 0);
            for isa in Detected::all() {
                let mut out = vec![f32::NAN; out_height * out_width * channels];
                let mut sums = vec![f32::NAN; out_height * channels];
                isa.run(Rows {
                    input: &nhwc,
                    geometry: &geometry,
                    dw: &dw,
                    first_oy: 0,
                    out: &mut out,
                    sums: &mut sums,
                });
                let case = format!("{isa:?} k{kernel} s{stride} {padding:?} {height}x{width}");
                for (got, want) in out.iter().zip(expected) {
                    assert!((got - want).abs() < 1e-5, "{case}: {got} vs {want}");
                }
                // Each row's channel sums.
                for (row, sums) in sums.chunks_exact(channels).enumerate() {
                    for (channel, &sum) in sums.iter().enumerate() {
                        let want: f32 = (0..out_width)
                            .map(|x| out[(row * out_width + x) * channels + channel])
                            .sum();
                        assert!((sum - want).abs() < 1e-4, "{case}: sum {sum} vs {want}");
                    }
                }
            }
        }
    }
}
