//! The matrix product behind every convolution of the planned CPU path ([`super::plan`]):
//! `C = epilogue(A * B)` with `A` the activations (one row per pixel, channels contiguous:
//! NHWC), `B` a layer's weights packed once into panels of [`NR`] columns, and the bias,
//! activation and residual applied to each `MR x NR` tile right after its sums.
//!
//! The classic blocking (GotoBLAS, and MLAS after it): `k` in cache-sized slices, rows of
//! `A` packed a tile at a time, every panel of `B` run over the packed tiles. The
//! micro-kernel is written in vector intrinsics for AVX-512 (12 rows x 2 registers: 24
//! accumulators, each row value broadcast once for two multiply-adds) and AVX2 + FMA (6 rows
//! x 2 registers, a panel in two halves), and in plain Rust for other CPUs; the build is
//! chosen at run time, once per call.

use rayon::prelude::*;

use super::{AVX2, AVX512, BASELINE, activate_lanes};
use crate::model::activation::Activation;

/// Columns of a packed panel, and lanes of the micro-kernel's accumulator rows.
pub(crate) const NR: usize = 32;

/// A row block is a multiple of this many rows, so that every kernel build's `MR` divides it.
const ROW_QUANTUM: usize = 12;

/// Row blocks per thread the parallel drivers aim for: enough to balance the cores on a
/// machine that other work also uses.
const TASKS_PER_THREAD: usize = 4;

/// A `k x n` right-hand side in panels of [`NR`] columns: panel `p` holds rows `0..k` of
/// columns `p * NR..(p + 1) * NR`, each row's `NR` values contiguous, columns past `n` zero.
/// The values start on a cache line, so no vector load of a row straddles two.
#[derive(Clone, Debug)]
pub(crate) struct Packed {
    k: usize,
    n: usize,
    storage: Vec<f32>,
    /// Where the values start in `storage`: the first 64-byte boundary.
    start: usize,
}

/// Bytes of a cache line.
const LINE: usize = 64;

impl Packed {
    /// Packs `value(row, column)` for `row < k`, `column < n`.
    pub(crate) fn new(k: usize, n: usize, value: impl Fn(usize, usize) -> f32) -> Self {
        let len = n.div_ceil(NR) * k * NR;
        let mut storage = vec![0.0f32; len + LINE / 4];
        let start = storage.as_ptr().align_offset(LINE).min(LINE / 4);
        for (index, slot) in storage[start..start + len].iter_mut().enumerate() {
            let (panel, row, lane) = (index / (k * NR), index / NR % k, index % NR);
            let column = panel * NR + lane;
            if column < n {
                *slot = value(row, column);
            }
        }
        Self {
            k,
            n,
            storage,
            start,
        }
    }

    pub(crate) fn k(&self) -> usize {
        self.k
    }

    pub(crate) fn n(&self) -> usize {
        self.n
    }

    /// The packed values.
    pub(crate) fn data(&self) -> &[f32] {
        let len = self.n.div_ceil(NR) * self.k * NR;
        &self.storage[self.start..self.start + len]
    }
}

/// What happens to each output value after the product: `+ bias[column]`, the activation,
/// then `+ residual[row][column]` (the block's input, in the output's layout).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Epilogue<'a> {
    pub(crate) bias: &'a [f32],
    pub(crate) activation: Option<Activation>,
    pub(crate) residual: Option<&'a [f32]>,
}

impl<'a> Epilogue<'a> {
    /// The same epilogue for the rows from `first_row` on (of `n` columns each).
    pub(crate) fn starting_at_row(self, first_row: usize, n: usize) -> Self {
        Self {
            residual: self.residual.map(|residual| &residual[first_row * n..]),
            ..self
        }
    }
}

/// Where a product's tiles go: `rows` rows of `n` values from `ptr` (row stride `n`), of
/// which a call writes the columns of panels `first_panel..end_panel` only.
#[derive(Clone, Copy, Debug)]
struct Region {
    ptr: *mut f32,
    rows: usize,
    first_panel: usize,
    end_panel: usize,
}

/// `c = epilogue(a * b)`, serially, for the `c.len() / n` rows of `c` (row stride `n`).
/// Row `i` of `a` is `a[i * lda..i * lda + k]`; `b` is [`Packed::data`] of a `k x n` matrix
/// `scratch` holds packed rows of `a`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(
    a: &[f32],
    lda: usize,
    b: &[f32],
    k: usize,
    n: usize,
    epilogue: Epilogue,
    c: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    let rows = c.len() / n.max(1);
    if rows == 0 {
        return;
    }
    assert!(a.len() >= (rows - 1) * lda + k && b.len() >= n.div_ceil(NR) * NR * k);
    let region = Region {
        ptr: c.as_mut_ptr(),
        rows,
        first_panel: 0,
        end_panel: n.div_ceil(NR),
    };
    // SAFETY: the region is all of `c`, borrowed mutably here; `a` and `b` were checked.
    unsafe { gemm_region(a, lda, None, b, k, n, epilogue, region, scratch) };
}

wide_fn! {
    /// [`gemm()`] into a region of an output that other calls may be writing elsewhere, with
    /// the tile height of the build: 12 rows for AVX-512 (2 x 12 registers of sums), 6 for
    /// AVX2, 4 for the baseline.
    ///
    /// # Safety
    ///
    /// `region` must be valid for writes of its rows and panels' columns, which no one else
    /// reads or writes during the call; `a` must hold `region.rows` rows and `b` every panel.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_region(
        a: &[f32],
        lda: usize,
        a_scale: Option<&[f32]>,
        b: &[f32],
        k: usize,
        n: usize,
        epilogue: Epilogue,
        region: Region,
        scratch: &mut Vec<f32>,
    ) {
        // SAFETY: the caller's contract, passed on.
        unsafe {
            let (e, r) = (epilogue, region);
            match ISA {
                AVX512 => gemm_rows::<12, AVX512>(a, lda, a_scale, b, k, n, e, r, scratch),
                AVX2 => gemm_rows::<6, AVX2>(a, lda, a_scale, b, k, n, e, r, scratch),
                _ => gemm_rows::<4, BASELINE>(a, lda, a_scale, b, k, n, e, r, scratch),
            }
        }
    }
}

/// Bytes of packed `a` rows one pass over the panels reuses: a block that stays in L2.
const PACKED_ROWS_BYTES: usize = 96 * 1024;

/// Steps of `k` one pass of the kernel takes: a panel's share of `b` (`KC x NR` values,
/// 32 KiB) stays in L1 while it runs over the block's tiles.
const KC: usize = 256;

/// [`gemm_region`] with `MR` rows per tile, in the `ISA` build ([`super::BASELINE`]...).
///
/// The classic blocking: `k` in slices of [`KC`]; rows in blocks, each block's slice of `a`
/// packed tile by tile (`KC` steps of `MR` values, so the kernel reads them with one
/// pointer at fixed offsets; rows past the end are zeros); every panel of `b` runs over the
/// block's tiles. Partial sums wait in the output; the last slice applies the epilogue.
///
/// # Safety
///
/// As [`gemm_region`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_rows<const MR: usize, const ISA: u8>(
    a: &[f32],
    lda: usize,
    a_scale: Option<&[f32]>,
    b: &[f32],
    k: usize,
    n: usize,
    epilogue: Epilogue,
    region: Region,
    scratch: &mut Vec<f32>,
) {
    let rows = region.rows;
    if rows == 0 || k == 0 {
        return;
    }
    let slices = k.div_ceil(KC);
    let step = k.div_ceil(slices);
    let block_rows = (PACKED_ROWS_BYTES / 4 / step / MR).max(1) * MR;
    for block_start in (0..rows).step_by(block_rows) {
        let block_len = block_rows.min(rows - block_start);
        // Whole tiles of MR rows, then the rest in tiles of TAIL: 49 rows (a 7x7 map) are
        // four tiles of 12 and one of 4, not a fifth tile of 12 with 11 rows wasted.
        let (full, tails) = if MR > TAIL {
            (block_len / MR, (block_len % MR).div_ceil(TAIL))
        } else {
            (block_len.div_ceil(MR), 0)
        };
        for k_start in (0..k).step_by(step) {
            let depth = step.min(k - k_start);
            let slice = Slice {
                first: k_start == 0,
                last: k_start + depth == k,
            };
            scratch.resize((full * MR + tails * TAIL) * depth, 0.0);
            let (whole, rest) = scratch.split_at_mut(full * MR * depth);
            for (tile, packed) in whole.chunks_exact_mut(depth * MR).enumerate() {
                let first = block_start + tile * MR;
                pack_tile::<MR>(a, lda, first, rows, k_start, a_scale, packed);
            }
            for (tile, packed) in rest.chunks_exact_mut(depth * TAIL).enumerate() {
                let first = block_start + full * MR + tile * TAIL;
                pack_tile::<TAIL>(a, lda, first, rows, k_start, a_scale, packed);
            }
            let (whole, rest) = scratch.split_at(full * MR * depth);
            for panel in region.first_panel..region.end_panel {
                let b = &b[(panel * k + k_start) * NR..(panel * k + k_start + depth) * NR];
                let columns = panel * NR..(panel * NR + NR).min(n);
                for (index, packed) in whole.chunks_exact(depth * MR).enumerate() {
                    let first_row = block_start + index * MR;
                    // SAFETY: passed on from the caller.
                    unsafe {
                        run_tile::<MR, ISA>(
                            packed,
                            b,
                            first_row,
                            columns.clone(),
                            n,
                            slice,
                            epilogue,
                            region,
                        )
                    };
                }
                for (index, packed) in rest.chunks_exact(depth * TAIL).enumerate() {
                    let first_row = block_start + full * MR + index * TAIL;
                    // SAFETY: passed on from the caller.
                    unsafe {
                        run_tile::<TAIL, ISA>(
                            packed,
                            b,
                            first_row,
                            columns.clone(),
                            n,
                            slice,
                            epilogue,
                            region,
                        )
                    };
                }
            }
        }
    }
}

/// Rows of the last tiles of a block: a small kernel instance, so a block's leftover rows
/// waste at most `TAIL - 1` rows of work.
const TAIL: usize = 4;

/// Where a slice of `k` stands: the first starts the sums from zero, the last applies the
/// epilogue; the others add to and store partial sums.
#[derive(Clone, Copy, Debug)]
struct Slice {
    first: bool,
    last: bool,
}

/// One `M`-row tile at `first_row` against one panel (`columns` of the output): sums from
/// `packed` and `b`, then partial sums or the epilogue stored into `region`.
///
/// # Safety
///
/// As [`gemm_region`]; `first_row < region.rows`, `columns` inside `n`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn run_tile<const M: usize, const ISA: u8>(
    packed: &[f32],
    b: &[f32],
    first_row: usize,
    columns: std::ops::Range<usize>,
    n: usize,
    slice: Slice,
    epilogue: Epilogue,
    region: Region,
) {
    let tile_rows = M.min(region.rows - first_row);
    let width = columns.len();
    let mut acc = [[0.0f32; NR]; M];
    if !slice.first {
        for (r, acc) in acc.iter_mut().enumerate().take(tile_rows) {
            let start = (first_row + r) * n + columns.start;
            // SAFETY: inside the region (see below); the previous slice stored these
            // partial sums.
            let sums = unsafe { std::slice::from_raw_parts(region.ptr.add(start), width) };
            for (acc, &sum) in acc.iter_mut().zip(sums) {
                *acc = sum;
            }
        }
    }
    tile::<M, ISA>(packed, b, &mut acc, !slice.first);
    for (r, acc) in acc.iter().enumerate().take(tile_rows) {
        let start = (first_row + r) * n + columns.start;
        // SAFETY: row `first_row + r < rows`, the panel's columns: inside the region,
        // which is ours alone.
        let out = unsafe { std::slice::from_raw_parts_mut(region.ptr.add(start), width) };
        if !slice.last {
            for (out, &sum) in out.iter_mut().zip(acc) {
                *out = sum;
            }
            continue;
        }
        let bias = &epilogue.bias[columns.clone()];
        let residual = epilogue
            .residual
            .map(|residual| &residual[start..start + width]);
        finish::<ISA>(acc, bias, epilogue.activation, residual, out);
    }
}

/// Rows `first..first + MR` of `a` (those below `rows`; zeros past it), columns
/// `k_start..k_start + depth` (`depth = packed.len() / MR`), each column times its `a_scale`
/// if given, into `packed` step by step: `packed[step * MR + r] = a[first + r][k_start + step]`.
#[inline(always)]
fn pack_tile<const MR: usize>(
    a: &[f32],
    lda: usize,
    first: usize,
    rows: usize,
    k_start: usize,
    a_scale: Option<&[f32]>,
    packed: &mut [f32],
) {
    let depth = packed.len() / MR;
    let present = MR.min(rows - first);
    // Eight steps at a time: one short contiguous read per row (scaled as a vector), eight
    // strided writes. (The plain strided loop compiles to scatters, which are slower.)
    const STEPS: usize = 8;
    let ones = [1.0f32; STEPS];
    let mut step = 0;
    while step + STEPS <= depth {
        let scale: &[f32; STEPS] = match a_scale {
            Some(scale) => scale[k_start + step..k_start + step + STEPS]
                .try_into()
                .expect("8"),
            None => &ones,
        };
        let out = &mut packed[step * MR..(step + STEPS) * MR];
        for r in 0..MR {
            let mut values = [0.0f32; STEPS];
            if r < present {
                let start = (first + r) * lda + k_start + step;
                let source: &[f32; STEPS] = a[start..start + STEPS].try_into().expect("8");
                for ((value, &source), &factor) in values.iter_mut().zip(source).zip(scale) {
                    *value = source * factor;
                }
            }
            for (j, value) in values.into_iter().enumerate() {
                out[j * MR + r] = value;
            }
        }
        step += STEPS;
    }
    for step in step..depth {
        let factor = a_scale.map_or(1.0, |scale| scale[k_start + step]);
        for r in 0..MR {
            packed[step * MR + r] = if r < present {
                a[(first + r) * lda + k_start + step] * factor
            } else {
                0.0
            };
        }
    }
}

/// One `MR x NR` tile of the product, into `acc` (added to it if `add`): `packed` holds
/// `depth` steps of `MR` row values, `b` `depth` rows of `NR` values.
#[inline(always)]
fn tile<const MR: usize, const ISA: u8>(
    packed: &[f32],
    b: &[f32],
    acc: &mut [[f32; NR]; MR],
    add: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if ISA != BASELINE {
        // SAFETY: `ISA` says which features the caller was compiled for and the CPU has.
        unsafe {
            if ISA == AVX512 {
                x86::tile_avx512::<MR>(packed, b, acc, add)
            } else {
                x86::tile_avx2::<MR>(packed, b, acc, add)
            }
        };
        return;
    }
    if !add {
        *acc = [[0.0; NR]; MR];
    }
    for (a_step, b_row) in packed.chunks_exact(MR).zip(b.chunks_exact(NR)) {
        for (acc, &a) in acc.iter_mut().zip(a_step) {
            for (acc, &b) in acc.iter_mut().zip(b_row) {
                *acc += a * b;
            }
        }
    }
}

/// The micro-kernels in explicit vector instructions: written as plain loops, LLVM
/// vectorises the `MR` loop (with gathers) instead of the lanes.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::NR;
    use std::arch::x86_64::*;

    /// AVX-512: two registers per tile row; each row value is broadcast once for both.
    ///
    /// # Safety
    ///
    /// The CPU must have AVX-512F.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile_avx512<const MR: usize>(
        packed: &[f32],
        b: &[f32],
        out: &mut [[f32; NR]; MR],
        add: bool,
    ) {
        let steps = (packed.len() / MR).min(b.len() / NR);
        // SAFETY: each row of `out` holds NR = 2 x 16 values.
        let mut acc: [[__m512; 2]; MR] = core::array::from_fn(|r| unsafe {
            if add {
                [
                    _mm512_loadu_ps(out[r].as_ptr()),
                    _mm512_loadu_ps(out[r].as_ptr().add(16)),
                ]
            } else {
                [_mm512_setzero_ps(); 2]
            }
        });
        let (a, b) = (packed.as_ptr(), b.as_ptr());
        for step in 0..steps {
            // SAFETY: `step < steps`, so `b` has NR values at `step * NR` and `packed` MR
            // values at `step * MR`.
            unsafe {
                let low = _mm512_loadu_ps(b.add(step * NR));
                let high = _mm512_loadu_ps(b.add(step * NR + 16));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let a_value = _mm512_set1_ps(*a.add(step * MR + r));
                    acc[0] = _mm512_fmadd_ps(a_value, low, acc[0]);
                    acc[1] = _mm512_fmadd_ps(a_value, high, acc[1]);
                }
            }
        }
        for (out, acc) in out.iter_mut().zip(acc) {
            // SAFETY: `out` has room for 2 x 16 values.
            unsafe {
                _mm512_storeu_ps(out.as_mut_ptr(), acc[0]);
                _mm512_storeu_ps(out.as_mut_ptr().add(16), acc[1]);
            }
        }
    }

    /// AVX2 + FMA: the panel in two halves of 16 columns, two registers per tile row each
    /// (sixteen registers hold no more).
    ///
    /// # Safety
    ///
    /// The CPU must have AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile_avx2<const MR: usize>(
        packed: &[f32],
        b: &[f32],
        out: &mut [[f32; NR]; MR],
        add: bool,
    ) {
        let steps = (packed.len() / MR).min(b.len() / NR);
        for half in [0, 16] {
            // SAFETY: each row of `out` holds NR = 32 values; `half + 8 + 8 <= 32`.
            let mut acc: [[__m256; 2]; MR] = core::array::from_fn(|r| unsafe {
                if add {
                    [
                        _mm256_loadu_ps(out[r].as_ptr().add(half)),
                        _mm256_loadu_ps(out[r].as_ptr().add(half + 8)),
                    ]
                } else {
                    [_mm256_setzero_ps(); 2]
                }
            });
            let (a, b) = (packed.as_ptr(), b.as_ptr());
            for step in 0..steps {
                // SAFETY: as in `tile_avx512`.
                unsafe {
                    let low = _mm256_loadu_ps(b.add(step * NR + half));
                    let high = _mm256_loadu_ps(b.add(step * NR + half + 8));
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let a_value = _mm256_set1_ps(*a.add(step * MR + r));
                        acc[0] = _mm256_fmadd_ps(a_value, low, acc[0]);
                        acc[1] = _mm256_fmadd_ps(a_value, high, acc[1]);
                    }
                }
            }
            for (out, acc) in out.iter_mut().zip(acc) {
                // SAFETY: as above.
                unsafe {
                    _mm256_storeu_ps(out.as_mut_ptr().add(half), acc[0]);
                    _mm256_storeu_ps(out.as_mut_ptr().add(half + 8), acc[1]);
                }
            }
        }
    }
}

/// One tile row's epilogue: bias, activation, residual, store.
#[inline(always)]
fn finish<const ISA: u8>(
    acc: &[f32; NR],
    bias: &[f32],
    activation: Option<Activation>,
    residual: Option<&[f32]>,
    out: &mut [f32],
) {
    // A whole panel as fixed-size arrays (vector registers, no library copy); the last,
    // partial panel of a layer through slices.
    if let (Ok(bias), Ok(out)) = (
        <&[f32; NR]>::try_from(bias),
        <&mut [f32; NR]>::try_from(&mut *out),
    ) {
        let mut values = *acc;
        for (value, &bias) in values.iter_mut().zip(bias) {
            *value += bias;
        }
        activate_lanes::<ISA, NR>(&mut values, activation);
        match residual.map(<&[f32; NR]>::try_from) {
            Some(Ok(residual)) => {
                for ((out, value), &residual) in out.iter_mut().zip(values).zip(residual) {
                    *out = value + residual;
                }
            }
            _ => *out = values,
        }
        return;
    }
    let mut values = *acc;
    for (value, &bias) in values.iter_mut().zip(bias) {
        *value += bias;
    }
    activate_lanes::<BASELINE, NR>(&mut values, activation);
    match residual {
        Some(residual) => {
            for ((out, value), &residual) in out.iter_mut().zip(values).zip(residual) {
                *out = value + residual;
            }
        }
        None => {
            for (out, value) in out.iter_mut().zip(values) {
                *out = value;
            }
        }
    }
}

/// Splits `c` (`samples` samples of equal row counts, `n` columns a row) into row blocks
/// that do not cross samples, and calls `task(sample, first_row_in_sample, block)` on each,
/// over rayon's pool, `init` giving each worker its scratch state.
pub(crate) fn for_row_blocks<S>(
    c: &mut [f32],
    samples: usize,
    n: usize,
    init: impl Fn() -> S + Sync + Send,
    task: impl Fn(&mut S, usize, usize, &mut [f32]) + Sync + Send,
) {
    let rows = c.len() / n.max(1) / samples.max(1);
    if rows == 0 {
        return;
    }
    let wanted = TASKS_PER_THREAD * rayon::current_num_threads();
    let blocks = wanted.div_ceil(samples).clamp(1, rows);
    let block = rows
        .div_ceil(blocks)
        .next_multiple_of(ROW_QUANTUM)
        .min(rows);
    c.par_chunks_mut(rows * n)
        .enumerate()
        .flat_map(|(sample, c)| {
            c.par_chunks_mut(block * n)
                .enumerate()
                .map(move |(index, c)| (sample, index * block, c))
        })
        .for_each_init(init, |state, (sample, first_row, c)| {
            task(state, sample, first_row, c)
        });
}

/// A pointer that tasks writing disjoint parts of one buffer share.
#[derive(Clone, Copy)]
struct SharedOutput(*mut f32);

// SAFETY: the tasks that share it write disjoint regions (see `gemm_parallel`).
unsafe impl Send for SharedOutput {}
// SAFETY: as above.
unsafe impl Sync for SharedOutput {}

impl SharedOutput {
    /// The pointer (a method, so that closures capture the `Sync` wrapper, not the field).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// `c = epilogue(a * b)` over rayon's pool; `a` has `k` columns (row stride `k`) and as many
/// rows as `c`. With `a_scale` (`[samples][k]`), column `j` of a sample's rows is first
/// multiplied by its `a_scale[sample][j]`: a squeeze-excitation gate on the input channels,
/// applied while the rows are packed, at no extra pass. Tasks split the rows and, when the
/// rows are too few to feed every thread (small maps), the panels of `b` too, so that each
/// task reads only its share of the weights.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_parallel(
    a: &[f32],
    samples: usize,
    a_scale: Option<&[f32]>,
    b: &[f32],
    k: usize,
    n: usize,
    epilogue: Epilogue,
    c: &mut [f32],
) {
    let samples = samples.max(1);
    let rows = c.len() / n.max(1) / samples;
    let panels = n.div_ceil(NR);
    if rows == 0 || panels == 0 {
        return;
    }
    assert!(a.len() >= samples * rows * k && c.len() == samples * rows * n);
    assert!(b.len() >= panels * NR * k && a_scale.is_none_or(|s| s.len() >= samples * k));
    let wanted = TASKS_PER_THREAD * rayon::current_num_threads();
    let row_blocks = wanted
        .div_ceil(samples)
        .clamp(1, rows.div_ceil(ROW_QUANTUM));
    let block = rows
        .div_ceil(row_blocks)
        .next_multiple_of(ROW_QUANTUM)
        .min(rows);
    let row_blocks = rows.div_ceil(block);
    let panel_groups = wanted.div_ceil(samples * row_blocks).clamp(1, panels);
    let group = panels.div_ceil(panel_groups);
    let panel_groups = panels.div_ceil(group);
    let output = SharedOutput(c.as_mut_ptr());
    (0..samples * row_blocks * panel_groups)
        .into_par_iter()
        .for_each_init(Vec::new, |scratch, task| {
            let (sample, rest) = (
                task / (row_blocks * panel_groups),
                task % (row_blocks * panel_groups),
            );
            let (row_block, panel_group) = (rest / panel_groups, rest % panel_groups);
            let first_row = sample * rows + row_block * block;
            let region = Region {
                // SAFETY: `first_row * n` is inside `c` (first_row < samples * rows).
                ptr: unsafe { output.get().add(first_row * n) },
                rows: block.min(rows - row_block * block),
                first_panel: panel_group * group,
                end_panel: ((panel_group + 1) * group).min(panels),
            };
            // SAFETY: tasks write disjoint (row block, panel group) regions of `c`, which
            // this function borrows mutably until they all end; the asserts above bound `a`
            // and `b`.
            unsafe {
                gemm_region(
                    &a[first_row * k..],
                    k,
                    a_scale.map(|scale| &scale[sample * k..(sample + 1) * k]),
                    b,
                    k,
                    n,
                    epilogue.starting_at_row(first_row, n),
                    region,
                    scratch,
                );
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random matrix.
    fn matrix(rows: usize, columns: usize, seed: u32) -> Vec<f32> {
        (0..rows * columns)
            .map(|i| {
                let x = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed);
                (x >> 8) as f32 / (1 << 24) as f32 - 0.5
            })
            .collect()
    }

    #[test]
    fn gemm_matches_the_definition_with_every_epilogue() {
        // Rows and columns around the tile sizes: partial tiles and panels, one row, k = 1.
        for (m, k, n) in [
            (1, 1, 1),
            (13, 27, 24),
            (49, 96, 40),
            (7, 5, 17),
            (25, 64, 16),
        ] {
            let a = matrix(m, k, 1);
            let weights = matrix(k, n, 2);
            let bias = matrix(1, n, 3);
            let residual = matrix(m, n, 4);
            let packed = Packed::new(k, n, |r, c| weights[r * n + c]);
            for activation in [None, Some(Activation::SiLU), Some(Activation::ReLU6)] {
                let epilogue = Epilogue {
                    bias: &bias,
                    activation,
                    residual: Some(&residual),
                };
                let mut c = vec![f32::NAN; m * n];
                gemm_parallel(&a, 1, None, packed.data(), k, n, epilogue, &mut c);
                for i in 0..m {
                    for j in 0..n {
                        let dot: f32 = (0..k).map(|t| a[i * k + t] * weights[t * n + j]).sum();
                        let x = dot + bias[j];
                        let x = match activation {
                            Some(Activation::SiLU) => x / (1.0 + (-x).exp()),
                            Some(Activation::ReLU6) => x.clamp(0.0, 6.0),
                            None => x,
                        } + residual[i * n + j];
                        let got = c[i * n + j];
                        assert!(
                            (got - x).abs() < 1e-5,
                            "{m}x{k}x{n} [{i}, {j}]: {got} vs {x}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn every_kernel_this_cpu_has_matches_the_portable_one() {
        // The run-time choice takes the widest build; call the others directly.
        let (k, n) = (37, 2 * NR);
        let a = matrix(12, k, 7);
        let weights = matrix(k, n, 8);
        let packed = Packed::new(k, n, |r, c| weights[r * n + c]);
        let mut tile_a = vec![0.0; 12 * k];
        for (step, values) in tile_a.chunks_exact_mut(12).enumerate() {
            for (r, value) in values.iter_mut().enumerate() {
                *value = a[r * k + step];
            }
        }
        let panel = &packed.data()[k * NR..2 * k * NR];
        let mut expected = [[0.5f32; NR]; 12];
        tile::<12, BASELINE>(&tile_a, panel, &mut expected, true);
        #[cfg(target_arch = "x86_64")]
        {
            let close = |got: &[[f32; NR]], want: &[[f32; NR]]| {
                for (got, want) in got.iter().flatten().zip(want.iter().flatten()) {
                    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
                }
            };
            if is_x86_feature_detected!("avx512f") {
                let mut got = [[0.5f32; NR]; 12];
                // SAFETY: the CPU has AVX-512F.
                unsafe { x86::tile_avx512::<12>(&tile_a, panel, &mut got, true) };
                close(&got, &expected);
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                let mut tile_6 = vec![0.0; 6 * k];
                for (step, values) in tile_6.chunks_exact_mut(6).enumerate() {
                    values.copy_from_slice(&tile_a[step * 12..step * 12 + 6]);
                }
                let mut got = [[0.5f32; NR]; 6];
                // SAFETY: the CPU has AVX2 and FMA.
                unsafe { x86::tile_avx2::<6>(&tile_6, panel, &mut got, true) };
                close(&got, &expected[..6]);
            }
        }
    }

    #[test]
    fn input_scaling_gates_each_samples_channels() {
        // Two samples of 5 rows, k = 3: sample 1's channels scaled by (1, 2, 0.5), sample 0's
        // by 0 except channel 0.
        let (k, n, rows) = (3, 20, 5);
        let weights = matrix(k, n, 5);
        let packed = Packed::new(k, n, |r, c| weights[r * n + c]);
        let a = matrix(2 * rows, k, 6);
        let scale = [1.0, 0.0, 0.0, 1.0, 2.0, 0.5];
        let bias = [0.0; 20];
        let epilogue = Epilogue {
            bias: &bias,
            activation: None,
            residual: None,
        };
        let mut c = vec![0.0; 2 * rows * n];
        gemm_parallel(&a, 2, Some(&scale), packed.data(), k, n, epilogue, &mut c);
        for i in 0..2 * rows {
            let factors = &scale[(i / rows) * k..(i / rows + 1) * k];
            for j in 0..n {
                let expected: f32 = (0..k)
                    .map(|t| a[i * k + t] * factors[t] * weights[t * n + j])
                    .sum();
                assert!((c[i * n + j] - expected).abs() < 1e-6, "[{i}, {j}]");
            }
        }
    }
}
