//! Kernels for inference on Burn's `flex` CPU backend, on two paths.
//!
//! **Planned** ([`plan`], what `EfficientNet::for_inference` sets up): the whole folded
//! network read once into packed weights and run on its own channels-last buffers, every
//! convolution a [`matmul`] with its bias, activation and residual fused in. This is the
//! fast path; its module documentation says why.
//!
//! **Per layer**, for a model that is only folded (`fuse_batch_norm`) or a method the plan
//! does not cover (`endpoints`): each model file makes one call here, which runs the layer's
//! kernel or gives the tensor back (`Err`) for Burn's ops. [`conv_bn_act`] holds every rule
//! of which convolutions the kernels take; [`silu`], [`sigmoid`] and [`squeeze_excite`] take
//! any f32 flex tensor outside autodiff ([`applies`]).
//! - Burn 0.22's flex backend runs `exp` (and so `sigmoid`) as a scalar loop on one thread;
//!   in a B0 forward that made SiLU 40% of the time. Here the activation runs in place on the
//!   tensor's own buffer: Burn hands the buffer out and takes it back without copying
//!   (`into_data` / `from_data` on a uniquely owned contiguous flex tensor), the work is split
//!   over rayon's pool (the one flex itself uses), and `exp` is a branch-free polynomial the
//!   compiler vectorises, with AVX-512 and AVX2+FMA builds selected at run time.
//! - Flex's depthwise convolution vectorises only at stride 1 and makes a pass of its own
//!   for the bias. The per-layer depthwise kernel copies each channel into a zero-padded
//!   scratch plane split into `stride` column phases, so every kernel tap is a contiguous
//!   multiply-add over an output row at any stride, then adds the bias and applies the
//!   activation while the plane is in cache.
//!
//! Both paths give Burn's results to rounding (`exp` here is within 2 ulp of the correctly
//! rounded value; see the tests); other backends, autodiff and other float types never come
//! here.

// The kernels hand a caller's tensor back (`Err(tensor)`) when they do not apply: a move of
// Burn's 256-byte handle, not worth a box per call.
#![allow(clippy::result_large_err)]

use burn::nn::PaddingConfig2d;
use burn::tensor::{DType, Device, Tensor, TensorData};
use rayon::prelude::*;

use crate::model::activation::Activation;
use crate::model::conv_bn_act::ConvBnAct;

/// Elements per rayon task: big enough to amortise scheduling, small enough to split the
/// larger B0 activations (`[1, 96, 112, 112]` ~ 1.2M) over the cores.
const CHUNK: usize = 16 * 1024;

/// Whether the kernels here apply to `tensor`: f32, on the flex device, no autodiff.
pub(crate) fn applies<const D: usize>(tensor: &Tensor<D>) -> bool {
    let device = tensor.device();
    !device.is_autodiff() && device == Device::flex() && tensor.dtype() == DType::F32
}

/// Defines `fn $name` (or `unsafe fn $name`) three times over one body: compiled for
/// AVX-512 and for AVX2+FMA, chosen at run time when the CPU has them, and for the build's
/// baseline (x86-64 assumes only SSE2). The body sees which build it is in as the const
/// `ISA` ([`AVX512`], [`AVX2`], [`BASELINE`]), for the kernels that take it. What the body
/// calls must be `#[inline(always)]` for the wide copies to reach it.
macro_rules! wide_fn {
    ($(#[$doc:meta])* unsafe fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?
        $body:block) => {
        wide_fn!(@build [unsafe] $(#[$doc])* $name($($arg: $ty),*) [$($ret)?] $body);
    };
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        wide_fn!(@build [] $(#[$doc])* $name($($arg: $ty),*) [$($ret)?] $body);
    };
    (@build [$($unsafety:tt)?] $(#[$doc:meta])* $name:ident($($arg:ident: $ty:ty),*)
        [$($ret:ty)?] $body:block) => {
        $(#[$doc])*
        $($unsafety)? fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            $($unsafety)? fn body<const ISA: u8>($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                $($unsafety)? fn avx512($($arg: $ty),*) $(-> $ret)? {
                    // SAFETY (for an unsafe fn): the caller's contract, passed on.
                    #[allow(unused_unsafe)]
                    let out = unsafe { body::<{ $crate::model::cpu::AVX512 }>($($arg),*) };
                    out
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                $($unsafety)? fn avx2_fma($($arg: $ty),*) $(-> $ret)? {
                    // SAFETY (for an unsafe fn): the caller's contract, passed on.
                    #[allow(unused_unsafe)]
                    let out = unsafe { body::<{ $crate::model::cpu::AVX2 }>($($arg),*) };
                    out
                }
                if is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU supports the features `avx512` was compiled for (and
                    // for an unsafe fn, the caller's contract is passed on).
                    return unsafe { avx512($($arg),*) };
                }
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU supports the features `avx2_fma` was compiled for.
                    return unsafe { avx2_fma($($arg),*) };
                }
            }
            // SAFETY (for an unsafe fn): the caller's contract, passed on.
            #[allow(unused_unsafe)]
            let out = unsafe { body::<{ $crate::model::cpu::BASELINE }>($($arg),*) };
            out
        }
    };
}

pub(crate) mod matmul;
pub(crate) mod plan;

/// Which build of a kernel body is running, as a const parameter of the bodies the builds
/// share: the baseline, AVX2 + FMA, or AVX-512F (+ AVX2 + FMA). A body sees `ISA` only if
/// the function that instantiated it was compiled for those features and chosen because
/// the CPU has them.
pub(crate) const BASELINE: u8 = 0;
/// See [`BASELINE`].
pub(crate) const AVX2: u8 = 1;
/// See [`BASELINE`].
pub(crate) const AVX512: u8 = 2;

/// The activation over `L` lanes, in the `ISA` build's vector instructions where that pays:
/// SiLU on AVX-512 divides with a reciprocal estimate and one Newton step (the division is
/// most of its cost otherwise).
#[inline(always)]
pub(crate) fn activate_lanes<const ISA: u8, const L: usize>(
    values: &mut [f32; L],
    activation: Option<Activation>,
) {
    match activation {
        #[cfg(target_arch = "x86_64")]
        Some(Activation::SiLU) if ISA == AVX512 && L.is_multiple_of(16) => {
            for chunk in values.chunks_exact_mut(16) {
                let chunk: &mut [f32; 16] = chunk.try_into().expect("16 values");
                // SAFETY: `ISA == AVX512` only in code compiled for AVX-512F and run on a CPU
                // that has it.
                unsafe { x86::silu16(chunk) };
            }
        }
        Some(Activation::SiLU) => values.iter_mut().for_each(|v| *v = silu_element(*v)),
        Some(Activation::ReLU6) => values.iter_mut().for_each(|v| *v = v.clamp(0.0, 6.0)),
        None => {}
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// SiLU of 16 values: [`exp`](super::exp)'s polynomial in AVX-512, then `x / (1 + e^-x)`
    /// as `x * r` with `r` the 14-bit reciprocal estimate refined by one Newton step (within
    /// 2 ulp of the division). NaN stays NaN (the product with `x`); below -87 the result
    /// is tiny (under 1e-30) instead of subnormal, as with `exp`.
    ///
    /// # Safety
    ///
    /// The CPU must have AVX-512F.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn silu16(values: &mut [f32; 16]) {
        // SAFETY: `values` holds 16 f32; the caller vouches for AVX-512F.
        unsafe {
            let x = _mm512_loadu_ps(values.as_ptr());
            _mm512_storeu_ps(values.as_mut_ptr(), silu_zmm(x));
        }
    }

    /// [`silu16`] on a register.
    ///
    /// # Safety
    ///
    /// The CPU must have AVX-512F.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn silu_zmm(x: __m512) -> __m512 {
        const LOG2_E: f32 = std::f32::consts::LOG2_E;
        const LN2_HI: f32 = 0.693_359_4;
        const LN2_LO: f32 = -2.121_944_4e-4;
        const ROUND: f32 = 12_582_912.0;
        let set = _mm512_set1_ps;
        // e^-x, as `exp` computes it.
        let t = _mm512_min_ps(
            _mm512_max_ps(_mm512_sub_ps(set(0.0), x), set(-87.33)),
            set(88.37),
        );
        let shifted = _mm512_fmadd_ps(t, set(LOG2_E), set(ROUND));
        let n = _mm512_sub_ps(shifted, set(ROUND));
        let r = _mm512_fnmadd_ps(n, set(LN2_LO), _mm512_fnmadd_ps(n, set(LN2_HI), t));
        let mut p = set(1.987_569_1e-4);
        for c in [
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            0.5,
        ] {
            p = _mm512_fmadd_ps(p, r, set(c));
        }
        let e_r = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, set(1.0)));
        let bits = _mm512_sub_epi32(
            _mm512_castps_si512(shifted),
            _mm512_set1_epi32(ROUND.to_bits() as i32),
        );
        let scale = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(
            bits,
            _mm512_set1_epi32(127),
        )));
        let d = _mm512_fmadd_ps(e_r, scale, set(1.0));
        let estimate = _mm512_rcp14_ps(d);
        let reciprocal = _mm512_mul_ps(estimate, _mm512_fnmadd_ps(d, estimate, set(2.0)));
        _mm512_mul_ps(x, reciprocal)
    }
}

pub(crate) use plan::Plan;

/// Applies `kernel` to every element of `tensor` in place. The tensor must pass
/// [`applies`].
fn map_in_place<const D: usize>(tensor: Tensor<D>, kernel: fn(&mut [f32])) -> Tensor<D> {
    let device = tensor.device();
    let mut data = tensor.into_data();
    let values = data
        .as_mut_slice::<f32>()
        .expect("an f32 tensor's data is an f32 slice");
    if values.len() <= CHUNK {
        kernel(values);
    } else {
        values.par_chunks_mut(CHUNK).for_each(kernel);
    }
    Tensor::from_data(data, &device)
}

/// SiLU in place, or the tensor back if the kernels do not apply to it.
pub(crate) fn silu<const D: usize>(tensor: Tensor<D>) -> Result<Tensor<D>, Tensor<D>> {
    if !applies(&tensor) {
        return Err(tensor);
    }
    Ok(map_in_place(tensor, silu_slice))
}

/// Sigmoid in place, or the tensor back if the kernels do not apply to it.
pub(crate) fn sigmoid<const D: usize>(tensor: Tensor<D>) -> Result<Tensor<D>, Tensor<D>> {
    if !applies(&tensor) {
        return Err(tensor);
    }
    Ok(map_in_place(tensor, sigmoid_slice))
}

wide_fn! {
    fn silu_slice(values: &mut [f32]) {
        values.iter_mut().for_each(|x| *x = silu_element(*x));
    }
}

wide_fn! {
    fn sigmoid_slice(values: &mut [f32]) {
        values.iter_mut().for_each(|x| *x = sigmoid_element(*x));
    }
}

#[inline(always)]
fn silu_element(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

#[inline(always)]
fn sigmoid_element(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// `e^x` without branches, so loops over it vectorise (Cody-Waite reduction and a degree-6
/// polynomial, the coefficients of Cephes' `expf`). Inputs are clamped to the range where
/// `2^n` is a normal float: below -87.33 the result is ~1.2e-38 instead of a subnormal or 0,
/// above 88.37 it is ~2.4e38 instead of infinity; NaN stays NaN. SiLU and sigmoid only use
/// it as `1 + e^-x`, where both clamps are exact to f32.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that `n * LN2_HI` is exact for |n| < 2^9.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding it rounds to an integer, which lands in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;

    let x = x.clamp(-87.33, 88.37);
    let shifted = x * LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    // 2^n: n + 127 in the exponent field. `shifted`'s bits are ROUND's plus n.
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(n_bits.wrapping_add(127) << 23);
    e_r * scale
}

/// Squeeze-and-excitation on the tensor's own buffer: channel means in one parallel pass,
/// `gate` (the two small convolutions and the sigmoid, Burn ops on `[batch, channels, 1, 1]`)
/// on them, then every channel scaled in place; or the input back if the kernels do not
/// apply to it. `gate` must return `[batch, channels, 1, 1]` on the same device.
pub(crate) fn squeeze_excite(
    input: Tensor<4>,
    gate: impl FnOnce(Tensor<4>) -> Tensor<4>,
) -> Result<Tensor<4>, Tensor<4>> {
    if !applies(&input) {
        return Err(input);
    }
    let device = input.device();
    let [batch, channels, height, width] = input.dims();
    let plane = (height * width).max(1);
    let mut data = input.into_data();
    let values = data
        .as_mut_slice::<f32>()
        .expect("an f32 tensor's data is an f32 slice");
    let means: Vec<f32> = values.par_chunks(plane).map(mean).collect();
    let scale = gate(Tensor::from_data(
        TensorData::new(means, [batch, channels, 1, 1]),
        &device,
    ))
    .into_data();
    let scale = scale.as_slice::<f32>().expect("the gate is f32");
    values
        .par_chunks_mut(plane)
        .zip(scale.par_iter())
        .for_each(|(plane, &factor)| scale_slice(plane, factor));
    Ok(Tensor::from_data(data, &device))
}

wide_fn! {
    /// The mean, summed in eight lanes so that it vectorises.
    fn mean(values: &[f32]) -> f32 {
        let mut lanes = [0.0f32; 8];
        let mut chunks = values.chunks_exact(8);
        for chunk in &mut chunks {
            for (lane, &value) in lanes.iter_mut().zip(chunk) {
                *lane += value;
            }
        }
        let tail: f32 = chunks.remainder().iter().sum();
        (lanes.iter().sum::<f32>() + tail) / values.len() as f32
    }
}

wide_fn! {
    fn scale_slice(values: &mut [f32], factor: f32) {
        values.iter_mut().for_each(|x| *x *= factor);
    }
}

/// The per-layer kernels' one entry for a [`ConvBnAct`]: a folded (no batch norm) layer in
/// f32 on the flex device runs as one fused kernel when it is
/// - a depthwise convolution (one input channel per group, square kernel, equal strides, no
///   dilation) whose padded input holds a window: [`Depthwise`], any stride and padding;
/// - a 1x1 convolution without groups, stride, dilation or padding over a map of at least
///   [`POINTWISE_MIN_PIXELS`]: [`pointwise`].
///
/// Anything else comes back as `Err(input)` for Burn's ops. (A model planned by
/// `EfficientNet::for_inference` does not come here at all: see [`plan`].)
pub(crate) fn conv_bn_act(layer: &ConvBnAct, input: Tensor<4>) -> Result<Tensor<4>, Tensor<4>> {
    let conv = &layer.conv;
    let weight = conv.weight.val();
    let eligible =
        layer.bn.is_none() && conv.dilation == [1, 1] && applies(&input) && applies(&weight);
    if !eligible {
        return Err(input);
    }
    let bias = conv.bias.as_ref().map(|bias| bias.val());
    let [out_channels, in_per_group, kh, kw] = weight.dims();
    let [_, channels, height, width] = input.dims();
    let square = kh == kw && conv.stride[0] == conv.stride[1];
    let depthwise = in_per_group == 1 && conv.groups == channels && out_channels == channels;
    if depthwise && square {
        return match Depthwise::plan(&input, &weight, kh, conv.stride[0], &conv.padding) {
            Some(plan) => Ok(plan.run(input, &weight, bias.as_ref(), layer.activation)),
            None => Err(input),
        };
    }
    let pointwise_layer = [kh, kw] == [1, 1]
        && conv.groups == 1
        && conv.stride == [1, 1]
        && in_per_group == channels
        && resolve_padding(&conv.padding, height, width, 1, 1) == Pads::default();
    if pointwise_layer && height * width >= POINTWISE_MIN_PIXELS {
        return Ok(pointwise(input, &weight, bias.as_ref(), layer.activation));
    }
    Err(input)
}

/// A convolution's operands read out of Burn: the input without a copy when Burn holds it
/// alone; the weight and bias copied (they stay shared with the module).
struct Operands {
    input: TensorData,
    weight: TensorData,
    bias: Option<TensorData>,
}

impl Operands {
    fn read(input: Tensor<4>, weight: &Tensor<4>, bias: Option<&Tensor<1>>) -> Self {
        Self {
            input: input.into_data(),
            weight: weight.clone().into_data(),
            bias: bias.map(|bias| bias.clone().into_data()),
        }
    }

    /// Input, weight and bias as f32 slices (the callers checked [`applies`]).
    fn slices(&self) -> (&[f32], &[f32], Option<&[f32]>) {
        fn f32s(data: &TensorData) -> &[f32] {
            data.as_slice::<f32>().expect("f32 data")
        }
        (
            f32s(&self.input),
            f32s(&self.weight),
            self.bias.as_ref().map(f32s),
        )
    }
}

/// Tasks per thread [`pointwise`] aims for, splitting output rows, so that a batch of one
/// still spreads over the cores.
const POINTWISE_TASKS_PER_THREAD: usize = 4;

/// [`pointwise`] pays off from 28 x 28 maps up. On smaller ones (B0's last two stages) flex's
/// own 1x1 path, one `gemm` parallel inside, was faster at batch 1: each of our row blocks
/// packs the whole input again, and the weights are copied out of the shared parameter.
const POINTWISE_MIN_PIXELS: usize = 28 * 28;

/// Bytes of output one `gemm` call writes before its epilogue runs over them: a tile that
/// stays in L2.
const POINTWISE_TILE_BYTES: usize = 256 * 1024;

/// A 1x1 convolution (`weight`: `[out, in, 1, 1]`) plus `bias`, then `activation`, with the
/// bias and activation applied to each tile of the product while it is in cache instead of
/// in two more passes over memory. `input` and `weight` must pass [`applies`].
fn pointwise(
    input: Tensor<4>,
    weight: &Tensor<4>,
    bias: Option<&Tensor<1>>,
    activation: Option<Activation>,
) -> Tensor<4> {
    let device = input.device();
    let [batch, inputs, height, width] = input.dims();
    let outputs = weight.dims()[0];
    let n = height * width;
    let operands = Operands::read(input, weight, bias);
    let (input, weight, bias) = operands.slices();

    // Tasks: every sample's output rows in blocks, enough blocks to feed every thread.
    let wanted = POINTWISE_TASKS_PER_THREAD * rayon::current_num_threads();
    let blocks = wanted.div_ceil(batch).clamp(1, outputs.div_ceil(8));
    let rows = outputs.div_ceil(blocks);
    let columns = (POINTWISE_TILE_BYTES / 4 / rows).max(64).min(n.max(1));

    let mut output = vec![0.0f32; batch * outputs * n];
    output
        .par_chunks_mut(outputs * n)
        .enumerate()
        .flat_map(|(sample, out)| {
            out.par_chunks_mut(rows * n)
                .enumerate()
                .map(move |(block, out)| (sample, block * rows, out))
        })
        .for_each(|(sample, first_row, out)| {
            let rows = out.len() / n.max(1);
            let x = &input[sample * inputs * n..(sample + 1) * inputs * n];
            let w = &weight[first_row * inputs..(first_row + rows) * inputs];
            for start in (0..n).step_by(columns) {
                let cols = columns.min(n - start);
                // SAFETY: dst is `rows x cols` at `out[start..]` with row stride n, inside
                // `out` (rows * n elements); lhs is `rows x inputs` row-major, all of `w`;
                // rhs is `inputs x cols` at `x[start..]` with row stride n, inside `x`.
                unsafe {
                    gemm::gemm(
                        rows,
                        cols,
                        inputs,
                        out.as_mut_ptr().add(start),
                        1,
                        n as isize,
                        false,
                        w.as_ptr(),
                        1,
                        inputs as isize,
                        x.as_ptr().add(start),
                        1,
                        n as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
                for row in 0..rows {
                    let shift = bias.map_or(0.0, |bias| bias[first_row + row]);
                    let tile = &mut out[row * n + start..row * n + start + cols];
                    bias_activation(tile, shift, activation);
                }
            }
        });
    let data = TensorData::new(output, [batch, outputs, height, width]);
    Tensor::from_data(data, &device)
}

wide_fn! {
    fn bias_activation(values: &mut [f32], bias: f32, activation: Option<Activation>) {
        match activation {
            Some(Activation::SiLU) => values.iter_mut().for_each(|x| *x = silu_element(*x + bias)),
            Some(Activation::ReLU6) => {
                values.iter_mut().for_each(|x| *x = (*x + bias).clamp(0.0, 6.0))
            }
            None => values.iter_mut().for_each(|x| *x += bias),
        }
    }
}

/// A depthwise convolution planned for one input size: square kernel, one stride, padding
/// resolved to pixels.
#[derive(Clone, Copy, Debug)]
struct Depthwise {
    plane: Plane,
}

impl Depthwise {
    /// Plans a `kernel x kernel` depthwise convolution over `input`, if the kernels here
    /// apply to `input` and `weight` and the padded input holds at least one kernel window.
    fn plan(
        input: &Tensor<4>,
        weight: &Tensor<4>,
        kernel: usize,
        stride: usize,
        padding: &PaddingConfig2d,
    ) -> Option<Self> {
        if !applies(input) || !applies(weight) {
            return None;
        }
        let [_, _, height, width] = input.dims();
        let Pads {
            top,
            bottom,
            left,
            right,
        } = resolve_padding(padding, height, width, kernel, stride);
        let plane = Plane {
            width,
            top,
            left,
            padded_height: height + top + bottom,
            padded_width: width + left + right,
            kernel,
            stride,
        };
        (plane.padded_height >= kernel && plane.padded_width >= kernel).then_some(Self { plane })
    }

    /// `[batch, channels, h, w]` -> each channel convolved with its own filter (`weight`:
    /// `[channels, 1, k, k]`), plus `bias`, then `activation`.
    fn run(
        self,
        input: Tensor<4>,
        weight: &Tensor<4>,
        bias: Option<&Tensor<1>>,
        activation: Option<Activation>,
    ) -> Tensor<4> {
        let Self { plane } = self;
        let kernel = plane.kernel;
        let [batch, channels, height, width] = input.dims();
        let (out_height, out_width) = plane.output_size();

        let device = input.device();
        let operands = Operands::read(input, weight, bias);
        let (input, weight, bias) = operands.slices();

        let mut output = vec![0.0f32; batch * channels * out_height * out_width];
        output
            .par_chunks_mut(out_height * out_width)
            .enumerate()
            .for_each_init(Scratch::default, |scratch, (index, out)| {
                let channel = index % channels;
                let taps = &weight[channel * kernel * kernel..(channel + 1) * kernel * kernel];
                let input = &input[index * height * width..(index + 1) * height * width];
                let bias = bias.map_or(0.0, |bias| bias[channel]);
                convolve_plane(&plane, input, taps, bias, activation, scratch, out);
            });
        let data = TensorData::new(output, [batch, channels, out_height, out_width]);
        Tensor::from_data(data, &device)
    }
}

/// Pixels of padding on each side of a convolution's input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Pads {
    pub(crate) top: usize,
    pub(crate) bottom: usize,
    pub(crate) left: usize,
    pub(crate) right: usize,
}

impl Pads {
    /// Output height and width of a `kernel x kernel` convolution at `stride` over a padded
    /// `height x width` input (at least 1 when the padded input holds a window).
    pub(crate) fn output_size(
        &self,
        height: usize,
        width: usize,
        kernel: usize,
        stride: usize,
    ) -> (usize, usize) {
        let size = |padded: usize| padded.saturating_sub(kernel) / stride + 1;
        (
            size(height + self.top + self.bottom),
            size(width + self.left + self.right),
        )
    }
}

/// `padding` resolved to pixels for a `kernel x kernel` convolution at `stride` over a
/// `height x width` input.
pub(crate) fn resolve_padding(
    padding: &PaddingConfig2d,
    height: usize,
    width: usize,
    kernel: usize,
    stride: usize,
) -> Pads {
    match *padding {
        PaddingConfig2d::Valid => Pads::default(),
        PaddingConfig2d::Explicit(top, left, bottom, right) => Pads {
            top,
            bottom,
            left,
            right,
        },
        PaddingConfig2d::Same => {
            let (top, bottom) = same_padding(height, kernel, stride);
            let (left, right) = same_padding(width, kernel, stride);
            Pads {
                top,
                bottom,
                left,
                right,
            }
        }
    }
}

/// TF/Burn "same" padding: `ceil(size / stride)` outputs, the odd pixel after.
fn same_padding(size: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let total = ((size.div_ceil(stride).max(1) - 1) * stride + kernel).saturating_sub(size);
    (total / 2, total - total / 2)
}

/// `sums[i] += sum over taps t of weights[t] * phases[starts[t] + i]`, for `N` taps at once.
#[inline(always)]
fn accumulate<const N: usize>(
    sums: &mut [f32],
    phases: &[f32],
    starts: [usize; N],
    weights: &[f32],
) {
    let len = sums.len();
    let sources: [&[f32]; N] = starts.map(|start| &phases[start..start + len]);
    let weights: &[f32; N] = weights.try_into().expect("one weight per tap");
    for (i, sum) in sums.iter_mut().enumerate() {
        let mut acc = *sum;
        for tap in 0..N {
            acc += weights[tap] * sources[tap][i];
        }
        *sum = acc;
    }
}

/// Per-thread buffers of [`convolve_plane`].
#[derive(Default)]
struct Scratch {
    phases: Vec<f32>,
    sums: Vec<f32>,
}

/// One channel plane's geometry.
#[derive(Clone, Copy, Debug)]
struct Plane {
    width: usize,
    top: usize,
    left: usize,
    padded_height: usize,
    padded_width: usize,
    kernel: usize,
    stride: usize,
}

impl Plane {
    #[inline(always)]
    fn output_size(&self) -> (usize, usize) {
        (
            (self.padded_height - self.kernel) / self.stride + 1,
            (self.padded_width - self.kernel) / self.stride + 1,
        )
    }

    /// Width and length of one of the `stride x stride` phases of the padded plane (phase
    /// `(i, j)` holds padded rows `i, i + stride, ...` and columns `j, j + stride, ...`). The
    /// length has `kernel` elements of slack past the last row for the over-wide reads.
    #[inline(always)]
    fn phase_size(&self) -> (usize, usize) {
        let width = self.padded_width.div_ceil(self.stride);
        let height = self.padded_height.div_ceil(self.stride);
        (width, height * width + self.kernel)
    }
}

wide_fn! {
    /// One channel: scatter the input into the scratch phases, run each tap as one
    /// multiply-add over the whole (over-wide) output plane, then add the bias, apply the
    /// activation and drop the over-wide columns.
    fn convolve_plane(
        plane: &Plane,
        input: &[f32],
        taps: &[f32],
        bias: f32,
        activation: Option<Activation>,
        scratch: &mut Scratch,
        out: &mut [f32],
    ) {
        let (k, s) = (plane.kernel, plane.stride);
        let (out_height, out_width) = plane.output_size();
        let (phase_width, phase_len) = plane.phase_size();
        let Scratch { phases, sums } = scratch;
        phases.clear();
        phases.resize(s * s * phase_len, 0.0);
        for (y, row) in input.chunks_exact(plane.width).enumerate() {
            let py = y + plane.top;
            let row_start = (py % s) * s * phase_len + (py / s) * phase_width;
            if s == 1 {
                let start = row_start + plane.left;
                phases[start..start + row.len()].copy_from_slice(row);
                continue;
            }
            for column_phase in 0..s {
                // First input column whose padded column `x + left` falls in this phase.
                let first = (column_phase + s - plane.left % s) % s;
                let start = row_start + column_phase * phase_len + (first + plane.left) / s;
                let source = row.iter().skip(first).step_by(s);
                for (slot, &value) in phases[start..].iter_mut().zip(source) {
                    *slot = value;
                }
            }
        }
        // sums[oy * phase_width + ox] for ox < phase_width: columns past out_width are junk
        // that lets every tap be one contiguous run. Output (oy, ox) reads padded
        // (oy * s + ky, ox * s + kx): phase (ky % s, kx % s), element (oy + ky / s, ox + kx / s)
        // of that phase.
        let len = out_height * phase_width;
        let start = |tap: usize| {
            let (ky, kx) = (tap / k, tap % k);
            ((ky % s) * s + kx % s) * phase_len + (ky / s) * phase_width + kx / s
        };
        sums.clear();
        sums.resize(len, 0.0);
        match k {
            // EfficientNet's kernels: every tap in one pass, `sums` read and written once.
            3 => accumulate::<9>(sums, phases, core::array::from_fn(start), taps),
            5 => accumulate::<25>(sums, phases, core::array::from_fn(start), taps),
            _ => {
                for (tap, &weight) in taps.iter().enumerate() {
                    let source = &phases[start(tap)..start(tap) + len];
                    for (sum, &value) in sums.iter_mut().zip(source) {
                        *sum += weight * value;
                    }
                }
            }
        }
        // Bias and activation over all of `sums`, junk included: one long vectorised run
        // beats rows as short as 7 columns.
        bias_activation(sums, bias, activation);
        for (out_row, sum_row) in out.chunks_exact_mut(out_width).zip(sums.chunks(phase_width)) {
            out_row.copy_from_slice(&sum_row[..out_width]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    fn ulp_distance(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_two_ulp_over_the_normal_range() {
        // 200k points over [-87, 88], against f64's exp rounded to f32.
        let mut worst = 0;
        for i in 0..200_000 {
            let x = -87.0 + 175.0 * i as f32 / 200_000.0;
            let expected = (x as f64).exp() as f32;
            worst = worst.max(ulp_distance(exp(x), expected));
        }
        assert!(worst <= 2, "worst error {worst} ulp");
    }

    #[test]
    fn exp_clamps_and_keeps_nan() {
        assert!(exp(-1000.0) > 0.0 && exp(-1000.0) < 1.2e-38);
        assert!(exp(1000.0).is_finite() && exp(1000.0) > 2.0e38);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn vector_silu_matches_the_definition() {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512f") {
            let xs: Vec<f32> = (0..4000).map(|i| (i as f32 - 2000.0) / 20.0).collect();
            for chunk in xs.chunks_exact(16) {
                let mut values: [f32; 16] = chunk.try_into().unwrap();
                // SAFETY: the CPU has AVX-512F.
                unsafe { x86::silu16(&mut values) };
                for (&x, &got) in chunk.iter().zip(&values) {
                    if x < -87.0 {
                        // Clamped like `exp`: tiny and not positive instead of subnormal.
                        assert!(got <= 0.0 && got > -1e-30, "silu({x}) = {got}");
                        continue;
                    }
                    let exact = x as f64 / (1.0 + (-(x as f64)).exp());
                    let tolerance = 2.0 * f32::EPSILON as f64 * exact.abs().max(1e-30);
                    assert!((got as f64 - exact).abs() <= tolerance, "silu({x}) = {got}");
                }
            }
            let mut special = [0.0f32; 16];
            special[..4].copy_from_slice(&[f32::NAN, -1e4, 1e4, -0.0]);
            // SAFETY: the CPU has AVX-512F.
            unsafe { x86::silu16(&mut special) };
            assert!(special[0].is_nan());
            assert!(special[1] <= 0.0 && special[1] > -1e-30, "{}", special[1]);
            assert_eq!(special[2], 1e4);
            assert_eq!(special[3], 0.0);
        }
    }

    #[test]
    fn slice_kernels_match_the_definitions() {
        let xs: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) / 25.0).collect();
        let mut silu = xs.clone();
        silu_slice(&mut silu);
        let mut sigmoid = xs.clone();
        sigmoid_slice(&mut sigmoid);
        for ((&x, &s), &g) in xs.iter().zip(&silu).zip(&sigmoid) {
            let exact = 1.0 / (1.0 + (-(x as f64)).exp());
            assert!((g as f64 - exact).abs() < 1e-7, "sigmoid({x})");
            assert!((s as f64 - x as f64 * exact).abs() < 2e-6, "silu({x})");
        }
        let mut extremes = [-1e4f32, 1e4, f32::NAN];
        silu_slice(&mut extremes);
        assert!(extremes[0].abs() < 1e-30, "{}", extremes[0]);
        assert_eq!(extremes[1], 1e4);
        assert!(extremes[2].is_nan());
    }

    #[test]
    fn in_place_path_runs_on_flex_and_matches_burn() {
        let device = Device::flex();
        // Over one chunk, so the parallel split runs too.
        let x = Tensor::<2>::random([3, CHUNK], Distribution::Uniform(-10.0, 10.0), &device);
        let expected = burn::tensor::activation::silu(x.clone());
        assert!(applies(&x));
        let fast = silu(x).expect("the kernels apply");
        fast.into_data().assert_approx_eq::<f32>(
            &expected.into_data(),
            burn::tensor::Tolerance::absolute(1e-5),
        );
    }

    /// Burn's own activation ops, the reference for the fused kernels.
    fn reference_activation(x: Tensor<4>, activation: Option<Activation>) -> Tensor<4> {
        match activation {
            Some(Activation::SiLU) => burn::tensor::activation::silu(x),
            Some(Activation::ReLU6) => x.clamp(0.0, 6.0),
            None => x,
        }
    }

    #[test]
    fn depthwise_matches_burn_conv_bias_and_activation() {
        use burn::nn::conv::Conv2dConfig;
        let device = Device::flex();
        let cases = [
            // (kernel, stride, padding, height, width, activation)
            (
                3,
                1,
                PaddingConfig2d::Explicit(1, 1, 1, 1),
                9,
                9,
                Some(Activation::SiLU),
            ),
            (3, 2, PaddingConfig2d::Explicit(1, 1, 1, 1), 12, 11, None),
            (
                5,
                2,
                PaddingConfig2d::Explicit(2, 2, 2, 2),
                7,
                8,
                Some(Activation::ReLU6),
            ),
            (5, 1, PaddingConfig2d::Same, 6, 5, Some(Activation::SiLU)),
            // TF SAME at stride 2 on an even size: 0 before, 1 after (k = 3), 1/2 (k = 5).
            (3, 2, PaddingConfig2d::Same, 8, 8, Some(Activation::SiLU)),
            (5, 2, PaddingConfig2d::Same, 10, 13, None),
            (3, 1, PaddingConfig2d::Valid, 4, 4, None),
            // A 1x1 plane, as at the end of a tiny input.
            (3, 2, PaddingConfig2d::Same, 1, 1, Some(Activation::SiLU)),
        ];
        for (kernel, stride, padding, height, width, activation) in cases {
            let channels = 6;
            let conv = Conv2dConfig::new([channels, channels], [kernel, kernel])
                .with_groups(channels)
                .with_stride([stride, stride])
                .with_padding(padding.clone())
                .with_bias(false)
                .init(&device);
            let bias = Tensor::<1>::random([channels], Distribution::Uniform(-1.0, 1.0), &device);
            let input =
                Tensor::<4>::random([2, channels, height, width], Distribution::Default, &device);
            let expected = reference_activation(
                conv.forward(input.clone()) + bias.clone().reshape([1, channels, 1, 1]),
                activation,
            );
            let weight = conv.weight.val();
            let output = Depthwise::plan(&input, &weight, kernel, stride, &padding)
                .expect("flex f32 tensors take the fused path")
                .run(input, &weight, Some(&bias), activation);
            assert_eq!(
                output.dims(),
                expected.dims(),
                "k{kernel} s{stride} {padding:?}"
            );
            output.into_data().assert_approx_eq::<f32>(
                &expected.into_data(),
                burn::tensor::Tolerance::absolute(1e-5),
            );
        }
    }

    #[test]
    fn squeeze_excite_gates_channels_by_their_means() {
        let device = Device::flex();
        // Channel c of sample b holds b + c + (0, 1, ..., 8) / 9: mean b + c + 4 / 9.
        let values: Vec<f32> = (0..2 * 3 * 9)
            .map(|i| ((i / 27) + (i / 9) % 3) as f32 + (i % 9) as f32 / 9.0)
            .collect();
        let input = Tensor::<4>::from_data(TensorData::new(values, [2, 3, 3, 3]), &device);
        let means: Vec<f32> = (0..6)
            .map(|i| ((i / 3) + i % 3) as f32 + 4.0 / 9.0)
            .collect();
        let expected_means = Tensor::<4>::from_data(TensorData::new(means, [2, 3, 1, 1]), &device);
        let expected = input.clone() * expected_means.clone().mul_scalar(0.5);
        let mut seen = None;
        let output = squeeze_excite(input, |means| {
            seen = Some(means.clone());
            means.mul_scalar(0.5)
        })
        .expect("the kernels apply");
        seen.unwrap().into_data().assert_approx_eq::<f32>(
            &expected_means.into_data(),
            burn::tensor::Tolerance::absolute(1e-6),
        );
        output.into_data().assert_approx_eq::<f32>(
            &expected.into_data(),
            burn::tensor::Tolerance::absolute(1e-6),
        );
    }

    #[test]
    fn mean_covers_the_tail() {
        let values: Vec<f32> = (1..=13).map(|v| v as f32).collect();
        assert_eq!(mean(&values), 7.0);
        assert_eq!(mean(&values[..1]), 1.0);
    }

    #[test]
    fn pointwise_matches_burn_conv_bias_and_activation() {
        use burn::nn::conv::Conv2dConfig;
        let device = Device::flex();
        // (batch, in, out, height, width): B0-like shapes, odd row counts, 1x1 and 7x7 maps.
        let cases = [
            (1, 16, 96, 20, 20, Some(Activation::SiLU)),
            (3, 24, 13, 7, 7, None),
            (2, 40, 240, 1, 1, Some(Activation::ReLU6)),
            (1, 320, 1280, 3, 5, Some(Activation::SiLU)),
        ];
        for (batch, inputs, outputs, height, width, activation) in cases {
            let conv = Conv2dConfig::new([inputs, outputs], [1, 1])
                .with_bias(false)
                .init(&device);
            let bias = Tensor::<1>::random([outputs], Distribution::Uniform(-1.0, 1.0), &device);
            let input = Tensor::<4>::random(
                [batch, inputs, height, width],
                Distribution::Default,
                &device,
            );
            let expected = reference_activation(
                conv.forward(input.clone()) + bias.clone().reshape([1, outputs, 1, 1]),
                activation,
            );
            let output = pointwise(input, &conv.weight.val(), Some(&bias), activation);
            output.into_data().assert_approx_eq::<f32>(
                &expected.into_data(),
                burn::tensor::Tolerance::absolute(1e-4),
            );
        }
    }

    #[test]
    fn autodiff_tensors_are_left_to_burn() {
        let device = Device::flex().autodiff();
        let x = Tensor::<1>::ones([4], &device).require_grad();
        assert!(!applies(&x));
    }
}
