//! Batch norm with batch statistics, fused with the activation after it, on Burn's NCHW
//! tensors, for training: the forward pass and the gradients of the input, `gamma` and
//! `beta`, in two sweeps each (planes in parallel), where Burn's composed batch norm
//! transposes and walks the tensor some fifteen times and the activation adds its own.
//!
//! Forward: per-plane sums give each channel's mean and biased variance, then
//! `y = act(a * x + b)` with `a = gamma / sqrt(var + eps)`, `b = beta - mean * a`.
//! Backward, from `x` and the saved statistics: `dz = dy * act'(a * x + b)` with per-plane
//! sums of `dz` and `dz * x_hat`, then
//! `dx = a * (dz - mean(dz) - x_hat * mean(dz * x_hat))`, `dgamma = sum(dz * x_hat)` and
//! `dbeta = sum(dz)`.

use rayon::prelude::*;

use crate::cpu::isa::{Detected, Isa, Kernel};
use crate::cpu::math;
use crate::model::activation::Activation;

/// Lanes of the per-plane partial sums (two AVX-512 registers, four AVX2 ones).
const LANES: usize = 32;

/// Two registers' worth of lane sums, each added up in f64.
#[inline(always)]
fn lane_totals(a: &[f32; LANES], b: &[f32; LANES]) -> (f64, f64) {
    a.iter().zip(b).fold((0.0, 0.0), |(ta, tb), (a, b)| {
        (ta + f64::from(*a), tb + f64::from(*b))
    })
}

/// Channel `c`'s two sums over the batch, from per-plane sums (`[batch][channels]`), image
/// by image.
fn channel_totals(sums: &[(f64, f64)], channels: usize, c: usize) -> (f64, f64) {
    sums.iter()
        .skip(c)
        .step_by(channels)
        .fold((0.0, 0.0), |(ta, tb), (a, b)| (ta + a, tb + b))
}

/// Per-channel statistics of a batch: the mean and the biased variance.
#[derive(Clone, Debug)]
pub(crate) struct Statistics {
    pub(crate) mean: Vec<f32>,
    pub(crate) variance: Vec<f32>,
}

/// Sums of `values - shift` and of its square, lane by lane, then added up in f64.
struct PlaneSums<'a> {
    values: &'a [f32],
    shift: f32,
}

impl Kernel for PlaneSums<'_> {
    type Output = (f64, f64);

    #[inline(always)]
    fn run<I: Isa>(self, isa: I) -> (f64, f64) {
        let (mut sum, mut squares) = ([0.0f32; LANES], [0.0f32; LANES]);
        let chunks = self.values.chunks_exact(LANES);
        let tail = chunks.remainder();
        for chunk in chunks {
            for ((s, q), v) in sum.iter_mut().zip(squares.iter_mut()).zip(chunk) {
                let d = v - self.shift;
                *s += d;
                *q = isa.mul_add(d, d, *q);
            }
        }
        let mut total = lane_totals(&sum, &squares);
        for v in tail {
            let d = f64::from(v - self.shift);
            total.0 += d;
            total.1 += d * d;
        }
        total
    }
}

/// The mean and biased variance of each channel of `x` (`[batch, channels, plane]`).
pub(crate) fn statistics(isa: Detected, x: &[f32], channels: usize, plane: usize) -> Statistics {
    let batch = x.len() / (channels * plane).max(1);
    // Each channel's sums are taken around its first value, so that a large mean does not
    // cost the variance its precision.
    let shifts: Vec<f32> = (0..channels).map(|c| x[c * plane]).collect();
    let sums: Vec<(f64, f64)> = x
        .par_chunks(plane)
        .enumerate()
        .map(|(p, values)| {
            isa.run(PlaneSums {
                values,
                shift: shifts[p % channels],
            })
        })
        .collect();
    let count = (batch * plane) as f64;
    let (mut mean, mut variance) = (vec![0.0; channels], vec![0.0; channels]);
    for c in 0..channels {
        let (sum, squares) = channel_totals(&sums, channels, c);
        let shifted_mean = sum / count;
        mean[c] = (f64::from(shifts[c]) + shifted_mean) as f32;
        variance[c] = (squares / count - shifted_mean * shifted_mean).max(0.0) as f32;
    }
    Statistics { mean, variance }
}

/// Per channel, `a = gamma / sqrt(var + eps)` and `b = beta - mean * a`.
pub(crate) fn affine(
    stats: &Statistics,
    gamma: &[f32],
    beta: &[f32],
    epsilon: f64,
) -> (Vec<f32>, Vec<f32>) {
    let scale: Vec<f32> = stats
        .variance
        .iter()
        .zip(gamma)
        .map(|(v, g)| (f64::from(*g) / (f64::from(*v) + epsilon).sqrt()) as f32)
        .collect();
    let shift = stats
        .mean
        .iter()
        .zip(beta)
        .zip(&scale)
        .map(|((m, b), a)| b - m * a)
        .collect();
    (scale, shift)
}

struct NormalizePlane<'a> {
    x: &'a [f32],
    out: &'a mut [f32],
    scale: f32,
    shift: f32,
    activation: Option<Activation>,
}

impl Kernel for NormalizePlane<'_> {
    type Output = ();

    #[inline(always)]
    fn run<I: Isa>(self, isa: I) {
        for (y, x) in self.out.iter_mut().zip(self.x) {
            *y = isa.mul_add(self.scale, *x, self.shift);
        }
        math::activate_slice(self.out, self.activation);
    }
}

/// `out = act(a * x + b)` per channel; `x` and `out` are `[batch, channels, plane]`.
pub(crate) fn normalize(
    isa: Detected,
    x: &[f32],
    (scale, shift): (&[f32], &[f32]),
    activation: Option<Activation>,
    plane: usize,
    out: &mut [f32],
) {
    let channels = scale.len();
    out.par_chunks_mut(plane)
        .zip(x.par_chunks(plane))
        .enumerate()
        .for_each(|(p, (out, x))| {
            let c = p % channels;
            isa.run(NormalizePlane {
                x,
                out,
                scale: scale[c],
                shift: shift[c],
                activation,
            });
        });
}

/// First backward sweep over one plane: `dz` into `grad`'s place, and the plane's sums of
/// `dz` and `dz * x`.
struct ActivationGradPlane<'a> {
    x: &'a [f32],
    grad: &'a mut [f32],
    scale: f32,
    shift: f32,
    activation: Option<Activation>,
}

impl Kernel for ActivationGradPlane<'_> {
    type Output = (f64, f64);

    #[inline(always)]
    fn run<I: Isa>(self, isa: I) -> (f64, f64) {
        let (scale, shift) = (self.scale, self.shift);
        match self.activation {
            Some(Activation::SiLU) => {
                for (g, x) in self.grad.iter_mut().zip(self.x) {
                    let z = isa.mul_add(scale, *x, shift);
                    let s = math::sigmoid(z);
                    // d/dz z * s(z) = s * (1 + z * (1 - s)).
                    *g *= s * isa.mul_add(z, 1.0 - s, 1.0);
                }
            }
            Some(Activation::ReLU6) => {
                for (g, x) in self.grad.iter_mut().zip(self.x) {
                    let z = isa.mul_add(scale, *x, shift);
                    if !(z > 0.0 && z < 6.0) {
                        *g = 0.0;
                    }
                }
            }
            None => {}
        }
        let (mut sum, mut dot) = ([0.0f32; LANES], [0.0f32; LANES]);
        let pairs = self
            .grad
            .chunks_exact(LANES)
            .zip(self.x.chunks_exact(LANES));
        for (g, x) in pairs {
            for ((s, d), (g, x)) in sum.iter_mut().zip(dot.iter_mut()).zip(g.iter().zip(x)) {
                *s += g;
                *d = isa.mul_add(*g, *x, *d);
            }
        }
        let mut total = lane_totals(&sum, &dot);
        let done = self.grad.len() / LANES * LANES;
        for (g, x) in self.grad[done..].iter().zip(&self.x[done..]) {
            total.0 += f64::from(*g);
            total.1 += f64::from(*g) * f64::from(*x);
        }
        total
    }
}

/// Second backward sweep: `dx = a * dz - (c0 + c1 * x)` over one plane, in place.
struct InputGradPlane<'a> {
    x: &'a [f32],
    grad: &'a mut [f32],
    scale: f32,
    c0: f32,
    c1: f32,
}

impl Kernel for InputGradPlane<'_> {
    type Output = ();

    #[inline(always)]
    fn run<I: Isa>(self, isa: I) {
        for (g, x) in self.grad.iter_mut().zip(self.x) {
            *g = self.scale * *g - isa.mul_add(self.c1, *x, self.c0);
        }
    }
}

/// The gradients of `y = act(batch_norm(x))`: `grad` holds `dy` on entry and `dx` on
/// return; returns `(dgamma, dbeta)`. `stats` are the forward's, `x` and `grad`
/// `[batch, channels, plane]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    isa: Detected,
    x: &[f32],
    stats: &Statistics,
    gamma: &[f32],
    beta: &[f32],
    epsilon: f64,
    activation: Option<Activation>,
    plane: usize,
    grad: &mut [f32],
) -> (Vec<f32>, Vec<f32>) {
    let channels = gamma.len();
    let batch = x.len() / (channels * plane).max(1);
    let (scale, shift) = affine(stats, gamma, beta, epsilon);
    let sums: Vec<(f64, f64)> = grad
        .par_chunks_mut(plane)
        .zip(x.par_chunks(plane))
        .enumerate()
        .map(|(p, (grad, x))| {
            let c = p % channels;
            isa.run(ActivationGradPlane {
                x,
                grad,
                scale: scale[c],
                shift: shift[c],
                activation,
            })
        })
        .collect();
    let count = (batch * plane) as f64;
    let (mut gamma_grad, mut beta_grad) = (vec![0.0; channels], vec![0.0; channels]);
    let mut coefficients = vec![(0.0f32, 0.0f32); channels];
    for c in 0..channels {
        let (sum_dz, sum_dz_x) = channel_totals(&sums, channels, c);
        let mean = f64::from(stats.mean[c]);
        let inv_std = 1.0 / (f64::from(stats.variance[c]) + epsilon).sqrt();
        // sum(dz * x_hat) = inv_std * (sum(dz * x) - mean * sum(dz)).
        let sum_dz_xhat = inv_std * (sum_dz_x - mean * sum_dz);
        gamma_grad[c] = sum_dz_xhat as f32;
        beta_grad[c] = sum_dz as f32;
        // dx = a * dz - a * (mean(dz) + x_hat * mean(dz * x_hat)), x_hat = (x - mean) * inv_std:
        // dx = a * dz - (c0 + c1 * x).
        let a = f64::from(scale[c]);
        let k = sum_dz_xhat / count * inv_std;
        coefficients[c] = ((a * (sum_dz / count - mean * k)) as f32, (a * k) as f32);
    }
    grad.par_chunks_mut(plane)
        .zip(x.par_chunks(plane))
        .enumerate()
        .for_each(|(p, (grad, x))| {
            let c = p % channels;
            let (c0, c1) = coefficients[c];
            isa.run(InputGradPlane {
                x,
                grad,
                scale: scale[c],
                c0,
                c1,
            });
        });
    (gamma_grad, beta_grad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_keep_precision_far_from_zero() {
        // A channel around 1000 with spread 1: sums of squares around zero would lose it.
        let (channels, plane) = (2, 50);
        let x: Vec<f32> = (0..2 * channels * plane)
            .map(|i| {
                let c = (i / plane) % channels;
                let wiggle = ((i * 37) % 11) as f32 / 5.0 - 1.0;
                if c == 0 { 1000.0 + wiggle } else { wiggle }
            })
            .collect();
        for isa in Detected::all() {
            let stats = statistics(isa, &x, channels, plane);
            for c in 0..channels {
                let values: Vec<f64> = x
                    .chunks(plane)
                    .enumerate()
                    .filter(|(p, _)| p % channels == c)
                    .flat_map(|(_, v)| v.iter().map(|v| f64::from(*v)))
                    .collect();
                let mean = values.iter().sum::<f64>() / values.len() as f64;
                let var =
                    values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
                assert!((f64::from(stats.mean[c]) - mean).abs() < 1e-4 * mean.abs().max(1.0));
                assert!((f64::from(stats.variance[c]) - var).abs() < 1e-5, "{c}");
            }
        }
    }
}
