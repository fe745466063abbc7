//! The CPU engine's 1x1 convolution (a matrix product with its bias, SiLU and residual
//! applied to each tile as it is finished) against the `gemm` crate (the kernels Burn's flex
//! backend uses) followed by the same epilogue as a separate pass: the number that justifies
//! a hand-written kernel. Shapes are B0's 1x1 layers at batch 1, 224x224 input:
//!
//! | map | layer | rows (pixels) x k -> n |
//! |---|---|---|
//! | 112x112 | stem (its 3x3x3 windows unfolded) | 12544 x 27 -> 32 |
//! | 112x112 | stage 1 projection | 12544 x 32 -> 16 |
//! | 112x112 | stage 2 expansion | 12544 x 16 -> 96 |
//! | 56x56 | stage 3 expansion | 3136 x 24 -> 144 |
//! | 56x56 | stage 3 projection (+ residual) | 3136 x 144 -> 24 |
//! | 28x28 | stage 3 projection (+ residual) | 784 x 240 -> 40 |
//! | 14x14 | stage 5 expansion | 196 x 80 -> 480 |
//! | 14x14 | stage 5 projection (+ residual) | 196 x 480 -> 80 |
//! | 14x14 | stage 5 projection to 112 (+ residual) | 196 x 672 -> 112 |
//! | 7x7 | stage 7 expansion | 49 x 192 -> 1152 |
//! | 7x7 | head | 49 x 320 -> 1280 |
//! | 1x1 | classifier (no activation) | 1 x 1280 -> 1000 |
//!
//! and EfficientNetV2-S's deep 1x1 layers at 384x384, where it trails ONNX Runtime most
//! (`v2s` in the names):
//!
//! | map | layer | rows (pixels) x k -> n |
//! |---|---|---|
//! | 24x24 | stage 5 expansion | 576 x 160 -> 960 |
//! | 24x24 | stage 5 projection (+ residual) | 576 x 960 -> 160 |
//! | 12x12 | stage 6 expansion | 144 x 256 -> 1536 |
//! | 12x12 | stage 6 projection (+ residual) | 144 x 1536 -> 256 |
//!
//! Each shape runs three ways: `engine` (f32 weights), `engine-bf16` (the same weights
//! rounded to bf16, as `Precision::Bf16Weights` packs them) and `gemm+pass`.
//!
//! The `activation` group times the epilogue pass alone over B0's largest SiLU map
//! (56x56x144, stage 3's expansion), with and without SiLU: the difference is SiLU's cost
//! per value, which criterion prints as throughput.
//!
//! ```text
//! cargo bench --bench matmul
//! ```

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use efficientnet_burn::__bench::{PackedWeights, epilogue_pass, pseudo_random as values};

/// `c = a * b` with the `gemm` crate over rayon's pool (all row-major).
fn gemm_crate(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    assert!(a.len() == m * k && b.len() == k * n && c.len() == m * n);
    // SAFETY: `c` is m x n with row stride n, `a` m x k with row stride k, `b` k x n with
    // row stride n, all inside their slices (asserted).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(rayon::current_num_threads()),
        );
    }
}

/// Runs `timed` (criterion's loop) on a thread of rayon's pool, as a planned forward runs
/// its layers: called from criterion's own thread, every product would hand its tasks over
/// to the pool and wake a worker, a cost the model does not pay.
fn in_pool(timed: impl FnOnce() + Send) {
    rayon::scope(|_| timed());
}

fn pointwise(c: &mut Criterion) {
    let mut group = c.benchmark_group("pointwise");
    // (name, rows, k, n, SiLU, residual)
    let shapes = [
        ("112x112 stem", 12544, 27, 32, true, false),
        ("112x112 project", 12544, 32, 16, false, false),
        ("112x112 expand", 12544, 16, 96, true, false),
        ("56x56 expand", 3136, 24, 144, true, false),
        ("56x56 project", 3136, 144, 24, false, true),
        ("28x28 project", 784, 240, 40, false, true),
        ("14x14 expand", 196, 80, 480, true, false),
        ("14x14 project", 196, 480, 80, false, true),
        ("14x14 project 112", 196, 672, 112, false, true),
        ("7x7 expand", 49, 192, 1152, true, false),
        ("7x7 head", 49, 320, 1280, true, false),
        ("classifier", 1, 1280, 1000, false, false),
        ("v2s 24x24 expand", 576, 160, 960, true, false),
        ("v2s 24x24 project", 576, 960, 160, false, true),
        ("v2s 12x12 expand", 144, 256, 1536, true, false),
        ("v2s 12x12 project", 144, 1536, 256, false, true),
    ];
    for (name, m, k, n, silu, has_residual) in shapes {
        let a = values(m * k, 1);
        let weights = values(k * n, 2);
        let bias = values(n, 3);
        let residual = has_residual.then(|| values(m * n, 4));
        let residual = residual.as_deref();
        let packed = PackedWeights::new(k, n, &weights);
        let bf16 = PackedWeights::bf16(k, n, &weights);
        let mut ours = vec![0.0; m * n];
        let mut theirs = vec![0.0; m * n];
        // The two agree (to float rounding) before either is timed, and bf16 weights move
        // the values by their rounding only.
        packed.product(&a, &bias, silu, residual, &mut ours);
        gemm_crate(m, k, n, &a, &weights, &mut theirs);
        epilogue_pass(&mut theirs, &bias, silu, residual);
        let worst = |x: &[f32], y: &[f32]| {
            x.iter()
                .zip(y)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max)
        };
        let differ = worst(&ours, &theirs);
        assert!(differ < 1e-3, "{name}: the two products differ by {differ}");
        let mut rounded = vec![0.0; m * n];
        bf16.product(&a, &bias, silu, residual, &mut rounded);
        let largest = theirs.iter().fold(0.0f32, |most, x| most.max(x.abs()));
        let moved = worst(&ours, &rounded);
        assert!(
            moved > 0.0 && moved < 0.02 * largest,
            "{name}: bf16 weights moved the values by {moved} (largest {largest})"
        );

        let id = format!("{m}x{k}x{n}");
        group.bench_function(BenchmarkId::new(format!("{name}/engine"), &id), |b| {
            in_pool(|| b.iter(|| packed.product(&a, &bias, silu, residual, &mut ours)))
        });
        group.bench_function(BenchmarkId::new(format!("{name}/engine-bf16"), &id), |b| {
            in_pool(|| b.iter(|| bf16.product(&a, &bias, silu, residual, &mut rounded)))
        });
        group.bench_function(BenchmarkId::new(format!("{name}/gemm+pass"), &id), |b| {
            in_pool(|| {
                b.iter(|| {
                    gemm_crate(m, k, n, &a, &weights, &mut theirs);
                    epilogue_pass(&mut theirs, &bias, silu, residual);
                })
            })
        });
    }
    group.finish();
}

fn activation(c: &mut Criterion) {
    let mut group = c.benchmark_group("activation");
    let (pixels, channels) = (56 * 56, 144);
    group.throughput(Throughput::Elements((pixels * channels) as u64));
    let bias = values(channels, 3);
    let input = values(pixels * channels, 5);
    let mut map = input.clone();
    for (name, silu) in [("bias", false), ("bias+silu", true)] {
        group.bench_function(BenchmarkId::new(name, "56x56x144"), |b| {
            in_pool(|| {
                b.iter(|| {
                    // From the same values each time: repeated bias adds would drift.
                    map.copy_from_slice(&input);
                    epilogue_pass(&mut map, &bias, silu, None);
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, pointwise, activation);
criterion_main!(benches);
