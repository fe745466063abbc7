//! The micro-kernel and its blocking: one `MR x NR` tile of sums in registers, and the
//! loops (GotoBLAS's, as MLAS has them) that feed it from cache-sized blocks.

use super::pack::{NR, pack_tile};
use super::{Epilogue, Operands, Region, RegionProduct};
use crate::cpu::isa::Isa;

/// Bytes of packed `a` rows one pass over the panels reuses: a block that stays in L2.
const PACKED_ROWS_BYTES: usize = 96 * 1024;

/// Steps of `k` one pass of the kernel takes: a panel's share of `b` (`KC x NR` values,
/// 32 KiB) stays in L1 while it runs over the block's tiles.
const KC: usize = 256;

/// Rows of the last tiles of a block: a small kernel instance, so a block's leftover rows
/// waste at most `TAIL - 1` rows of work.
const TAIL: usize = 4;

/// `product`'s region set to `epilogue(a * b)` with `MR` rows per tile (the instruction
/// set's [`Isa::TILE_ROWS`]: 12 for AVX-512, 6 for AVX2, 4 for the portable build).
///
/// The classic blocking: `k` in slices of [`KC`]; rows in blocks, each block's slice of `a`
/// packed tile by tile (`KC` steps of `MR` values, so the kernel reads them with one
/// pointer at fixed offsets; rows past the end are zeros); every panel of `b` runs over the
/// block's tiles. Partial sums wait in the output; the last slice applies the epilogue.
///
/// # Safety
///
/// As [`super::RegionProduct::new`].
#[inline(always)]
pub(super) unsafe fn blocked<const MR: usize, I: Isa>(isa: I, product: RegionProduct) {
    let RegionProduct {
        operands:
            Operands {
                a,
                lda,
                a_scale,
                b,
                k,
                n,
            },
        epilogue,
        region,
        scratch,
    } = product;
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
                let tiles = whole.chunks_exact(depth * MR).enumerate();
                for (index, packed) in tiles {
                    let first_row = block_start + index * MR;
                    let at = TileAt {
                        first_row,
                        columns: columns.clone(),
                        n,
                        slice,
                    };
                    // SAFETY: passed on from the caller; `first_row < rows`.
                    unsafe { run_tile::<MR, I>(isa, packed, b, at, epilogue, region) };
                }
                for (index, packed) in rest.chunks_exact(depth * TAIL).enumerate() {
                    let first_row = block_start + full * MR + index * TAIL;
                    let at = TileAt {
                        first_row,
                        columns: columns.clone(),
                        n,
                        slice,
                    };
                    // SAFETY: passed on from the caller; `first_row < rows`.
                    unsafe { run_tile::<TAIL, I>(isa, packed, b, at, epilogue, region) };
                }
            }
        }
    }
}

/// Where a slice of `k` stands: the first starts the sums from zero, the last applies the
/// epilogue; the others add to and store partial sums.
#[derive(Clone, Copy, Debug)]
struct Slice {
    first: bool,
    last: bool,
}

/// Where a tile goes in the output: its first row, the panel's columns (of `n`), and the
/// slice of `k` it sums.
struct TileAt {
    first_row: usize,
    columns: std::ops::Range<usize>,
    n: usize,
    slice: Slice,
}

/// One `M`-row tile against one panel: sums from `packed` and `b`, then partial sums or
/// the epilogue stored into `region`.
///
/// # Safety
///
/// As [`super::RegionProduct::new`]; `at.first_row < region.rows`, `at.columns` inside `n`.
#[inline(always)]
unsafe fn run_tile<const M: usize, I: Isa>(
    isa: I,
    packed: &[f32],
    b: &[f32],
    at: TileAt,
    epilogue: Epilogue,
    region: Region,
) {
    let TileAt {
        first_row,
        columns,
        n,
        slice,
    } = at;
    let tile_rows = M.min(region.rows - first_row);
    let width = columns.len();
    let prior = (!slice.first).then(|| {
        // SAFETY: the tile's first row and column, inside the region (see below).
        unsafe { region.ptr.add(first_row * n + columns.start).cast_const() }
    });
    // A whole panel with a constant width: every column of the sums is then written by the
    // kernel, and the compiler drops their zeroing.
    // SAFETY: the previous slice stored the tile's partial sums at `prior`; its `tile_rows`
    // rows of `width` columns are inside the region, which is ours alone.
    let acc = unsafe {
        if width == NR {
            sums::<M, I>(isa, packed, b, prior, n, tile_rows, NR)
        } else {
            sums::<M, I>(isa, packed, b, prior, n, tile_rows, width)
        }
    };
    for (r, acc) in acc.iter().enumerate().take(tile_rows) {
        let start = (first_row + r) * n + columns.start;
        // SAFETY: row `first_row + r < rows`, the panel's columns: inside the region,
        // which is ours alone.
        let out = unsafe { std::slice::from_raw_parts_mut(region.ptr.add(start), width) };
        if !slice.last {
            out.copy_from_slice(&acc[..width]);
            continue;
        }
        let bias = &epilogue.bias[columns.clone()];
        let residual = epilogue
            .residual
            .map(|residual| &residual[start..start + width]);
        finish(isa, acc, bias, epilogue.activation, residual, out);
    }
}

/// A tile's sums over `width` columns: the partial sums at `prior` (`tile_rows` rows of
/// stride `n`), if any, plus the tile's product.
///
/// # Safety
///
/// `prior`, if given, must be valid for reads of `width` values at each of its
/// `tile_rows` rows, which no one writes meanwhile.
#[inline(always)]
unsafe fn sums<const M: usize, I: Isa>(
    isa: I,
    packed: &[f32],
    b: &[f32],
    prior: Option<*const f32>,
    n: usize,
    tile_rows: usize,
    width: usize,
) -> [[f32; NR]; M] {
    let mut acc = [[0.0f32; NR]; M];
    if let Some(prior) = prior {
        for (r, acc) in acc.iter_mut().enumerate().take(tile_rows) {
            // SAFETY: the caller vouches for row `r`'s `width` values. One row at a time:
            // the columns between rows may be another task's.
            let row = unsafe { std::slice::from_raw_parts(prior.add(r * n), width) };
            acc[..width].copy_from_slice(row);
        }
    }
    tile::<M, I>(isa, packed, b, &mut acc, prior.is_some(), width);
    acc
}

/// One `MR x NR` tile of the product, into `acc` (added to it if `add`): `packed` holds
/// `depth` steps of `MR` row values, `b` `depth` rows of `NR` values, of which the first
/// `width` columns are live (the rest of a layer's last panel is zero padding). The live
/// columns go in groups of two registers (one group for AVX-512's 16 lanes, two for 8
/// lanes), so a group's `2 x MR` sums stay in registers and each row value is broadcast once
/// for two multiply-adds; a last group of one register's columns or fewer takes one
/// register. Columns past the live groups are left as they are in `acc`.
#[inline(always)]
pub(crate) fn tile<const MR: usize, I: Isa>(
    isa: I,
    packed: &[f32],
    b: &[f32],
    acc: &mut [[f32; NR]; MR],
    add: bool,
    width: usize,
) {
    let lanes = I::LANES;
    let steps = (packed.len() / MR).min(b.len() / NR);
    let (a, b) = (packed.as_ptr(), b.as_ptr());
    if width >= NR {
        // A whole panel: a loop of constant trip count, unrolled.
        for group in (0..NR).step_by(2 * lanes) {
            register_group::<MR, 2, I>(isa, a, b, steps, group, acc, add);
        }
        return;
    }
    for group in (0..width).step_by(2 * lanes) {
        if group + lanes >= width {
            register_group::<MR, 1, I>(isa, a, b, steps, group, acc, add);
        } else {
            register_group::<MR, 2, I>(isa, a, b, steps, group, acc, add);
        }
    }
}

/// [`tile`]'s group of `R` registers (1 or 2): columns `group..group + R * lanes` of the
/// panel, their `R x MR` sums in registers, each row value broadcast once for `R`
/// multiply-adds.
#[inline(always)]
fn register_group<const MR: usize, const R: usize, I: Isa>(
    isa: I,
    a: *const f32,
    b: *const f32,
    steps: usize,
    group: usize,
    acc: &mut [[f32; NR]; MR],
    add: bool,
) {
    let lanes = I::LANES;
    // Loops, not `array::from_fn`: its closure would be compiled without the kernel's
    // target features.
    let mut sums = [[isa.zero(); R]; MR];
    if add {
        for (sums, row) in sums.iter_mut().zip(acc.iter()) {
            for (j, sum) in sums.iter_mut().enumerate() {
                // SAFETY: a row of `acc` holds NR values; `group + R * lanes <= NR` (groups
                // start on multiples of `2 * lanes`, which divides NR).
                *sum = unsafe { isa.load(row.as_ptr().add(group + j * lanes)) };
            }
        }
    }
    for step in 0..steps {
        // SAFETY: `step < steps`, so `b` has NR values at `step * NR` and `packed` MR
        // values at `step * MR`; `group + R * lanes <= NR`.
        unsafe {
            let mut columns = [isa.zero(); R];
            for (j, column) in columns.iter_mut().enumerate() {
                *column = isa.load(b.add(step * NR + group + j * lanes));
            }
            for (r, sums) in sums.iter_mut().enumerate() {
                let value = isa.splat(*a.add(step * MR + r));
                for (sum, column) in sums.iter_mut().zip(columns) {
                    *sum = isa.fmadd(value, column, *sum);
                }
            }
        }
    }
    for (row, sums) in acc.iter_mut().zip(sums) {
        for (j, sum) in sums.into_iter().enumerate() {
            // SAFETY: as for the loads.
            unsafe { isa.store(row.as_mut_ptr().add(group + j * lanes), sum) };
        }
    }
}

/// One tile row's epilogue: bias, activation, residual, store (the first `out.len()`
/// columns of the panel).
#[inline(always)]
fn finish<I: Isa>(
    isa: I,
    acc: &[f32; NR],
    bias: &[f32],
    activation: Option<crate::model::activation::Activation>,
    residual: Option<&[f32]>,
    out: &mut [f32],
) {
    let mut values = *acc;
    for (value, &bias) in values.iter_mut().zip(bias) {
        *value += bias;
    }
    if out.len() == NR {
        isa.activate(&mut values, activation);
    } else {
        // A layer's last panel, maybe half padding: the live chunks of 16 (one AVX-512
        // register, two AVX2 ones) only.
        let (chunks, _) = values.as_chunks_mut::<16>();
        for chunk in chunks.iter_mut().take(out.len().div_ceil(16)) {
            isa.activate(chunk, activation);
        }
    }
    // A whole panel as fixed-size arrays (vector registers, no library copy); the last,
    // partial panel of a layer through slices.
    if let Ok(out) = <&mut [f32; NR]>::try_from(&mut *out) {
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
    let width = out.len();
    out.copy_from_slice(&values[..width]);
    if let Some(residual) = residual {
        for (out, &residual) in out.iter_mut().zip(residual) {
            *out += residual;
        }
    }
}
