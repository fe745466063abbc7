//! The CPU engine's 1x1 product, reachable from `benches/matmul.rs`, and the time of each
//! step of a planned forward, for `examples/bench_infer.rs --steps` (not API: hidden from
//! the docs, free to change).

use std::time::Duration;

use burn::tensor::Tensor;

use super::isa::{Detected, Isa, Kernel};
use super::matmul::{self, Epilogue, Packed};
use crate::InferenceModel;
use crate::model::activation::Activation;

/// Each step's wall time in one planned forward of `model` on `input`, named as
/// torchvision names its modules (`features.0` the stem, `features.1.0` the first block, ...,
/// then `pooling + classifier`): the names `scripts/profile_ort_layers.py` gives ONNX
/// Runtime's. `None` if the engine does not run `input`.
pub fn step_times(model: &InferenceModel, input: Tensor<4>) -> Option<Vec<(String, Duration)>> {
    Some(model.plan_for(&input)?.step_times(input))
}

/// A deterministic pseudo-random vector in [-0.5, 0.5): test and benchmark data.
pub fn pseudo_random(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let x = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed);
            (x >> 8) as f32 / (1 << 24) as f32 - 0.5
        })
        .collect()
}

/// A 1x1 convolution's weights packed as the plan packs them: `k` inputs, `n` outputs,
/// `weights` row-major `[k][n]`.
pub struct PackedWeights {
    packed: Packed,
    isa: Detected,
}

impl PackedWeights {
    /// Packs `weights` (`[k][n]`, row-major).
    pub fn new(k: usize, n: usize, weights: &[f32]) -> Self {
        assert_eq!(weights.len(), k * n, "weights are k x n");
        Self {
            packed: Packed::new(k, n, |row, column| weights[row * n + column]),
            isa: Detected::new(),
        }
    }

    /// Packs `weights` (`[k][n]`, row-major) rounded to bf16, as
    /// [`Precision::Bf16Weights`](crate::Precision::Bf16Weights) packs them.
    pub fn bf16(k: usize, n: usize, weights: &[f32]) -> Self {
        assert_eq!(weights.len(), k * n, "weights are k x n");
        let isa = Detected::new();
        Self {
            packed: Packed::bf16(k, n, isa.lanes(), |row, column| weights[row * n + column]),
            isa,
        }
    }

    /// `c = silu(a * w + bias) + residual`, as the plan runs an expansion (without
    /// `residual`) or a projection (with it, and no activation when `silu` is false), over
    /// rayon's pool: `a` is `[rows][k]`, `c` and `residual` `[rows][n]`.
    pub fn product(
        &self,
        a: &[f32],
        bias: &[f32],
        silu: bool,
        residual: Option<&[f32]>,
        c: &mut [f32],
    ) {
        let epilogue = Epilogue {
            bias,
            activation: silu.then_some(Activation::SiLU),
            residual,
        };
        let (k, n) = (self.packed.k(), self.packed.n());
        matmul::parallel(self.isa, a, 1, None, self.packed.data(), k, n, epilogue, c);
    }
}

/// The epilogue as a pass of its own over a finished product `c` (`[rows][n]`):
/// `silu(c + bias)` (or `c + bias`), plus `residual`, with the engine's vector SiLU, over
/// rayon's pool: what a plain GEMM needs after it to do what [`PackedWeights::product`]
/// does.
pub fn epilogue_pass(c: &mut [f32], bias: &[f32], silu: bool, residual: Option<&[f32]>) {
    use rayon::prelude::*;
    let n = bias.len();
    let isa = Detected::new();
    let rows_per_task = (16 * 1024 / n).max(1);
    c.par_chunks_mut(rows_per_task * n)
        .enumerate()
        .for_each(|(task, c)| {
            let residual = residual.map(|r| &r[task * rows_per_task * n..][..c.len()]);
            isa.run(Pass {
                c,
                bias,
                silu,
                residual,
            })
        });
}

struct Pass<'a> {
    c: &'a mut [f32],
    bias: &'a [f32],
    silu: bool,
    residual: Option<&'a [f32]>,
}

impl Kernel for Pass<'_> {
    type Output = ();

    #[inline(always)]
    fn run<I: Isa>(self, isa: I) {
        let n = self.bias.len();
        let activation = self.silu.then_some(Activation::SiLU);
        for (r, row) in self.c.chunks_exact_mut(n).enumerate() {
            for (start, chunk) in (0..n).step_by(32).zip(row.chunks_mut(32)) {
                let mut values = [0.0f32; 32];
                values[..chunk.len()].copy_from_slice(chunk);
                for (value, &bias) in values.iter_mut().zip(&self.bias[start..]) {
                    *value += bias;
                }
                isa.activate(&mut values, activation);
                chunk.copy_from_slice(&values[..chunk.len()]);
                if let Some(residual) = self.residual {
                    let residual = &residual[r * n + start..][..chunk.len()];
                    for (value, &residual) in chunk.iter_mut().zip(residual) {
                        *value += residual;
                    }
                }
            }
        }
    }
}
