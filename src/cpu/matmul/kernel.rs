//! The micro-kernel and its blocking: one `MR x NR` tile of sums in registers, and the
//! loops (GotoBLAS's, as MLAS has them) that feed it from cache-sized blocks.

use super::pack::{NR, PanelWords, pack_tile};
use super::{Epilogue, Operands, Origin, Region, RegionProduct};
use crate::cpu::isa::{Isa, RowBases};

/// Bytes of packed `a` rows one pass over the panels reuses: a block that stays in L2.
const PACKED_ROWS_BYTES: usize = 96 * 1024;

/// Steps of `k` one pass of the kernel takes, in products deeper than [`WHOLE_K`]: a panel's
/// share of `b` (`KC x NR` values, 32 KiB) stays in L1 while it runs over the block's tiles.
const KC: usize = 256;

/// Products at most this deep take `k` in one pass. Each further slice stores every tile's
/// partial sums to the output and loads them back, which cost more than a panel's share of
/// `b` kept in L1 saved: per step, two threads, on the AVX2 machine (2026-12-02), V2-S's 3x3
/// convolutions (`k` = 432, 576) 0.94-0.96x in one pass, B0's projections from 480 and 672
/// channels 0.97-0.98x. Deeper products (960, 1152, 1536) were level or slower in one pass
/// or in slices of 512.
const WHOLE_K: usize = 704;

/// Rows of the tiles after a block's whole tiles of `MR`; the rows left after those run one
/// by one ([`split_row_group`]), so no tile computes rows past the end.
const TAIL: usize = 4;

/// Gated products over at most this many panels read whole tiles of `a` where they are and
/// scale the panels of `b` instead (when those are the fewer values): a packed tile would
/// be read only once or twice. Over more panels they pack the rows, gated as they go.
pub(super) const DIRECT_PANELS: usize = 2;

/// `product`'s region set to `epilogue(a * b)` with `MR` rows per tile (the instruction
/// set's [`Isa::TILE_ROWS`]: 12 for AVX-512, 6 for AVX2, 4 for the portable build).
///
/// The classic blocking: `k` in slices of [`KC`] (or whole, up to [`WHOLE_K`]); rows in
/// blocks; every panel of `b` runs over the block's tiles. A block is whole tiles of `MR`
/// rows, then of [`TAIL`], then single rows. Partial sums wait in the output; the last
/// slice applies the epilogue.
///
/// The tiles read the rows of `a` where they are, with a row stride, unless a gate
/// (`a_scale`) scales them. GotoBLAS packs each block's slice of `a` tile by tile (`KC`
/// steps of `MR` values, read with one pointer at fixed offsets); here that copy did not
/// pay for itself. Measured on the AVX2 machine (2026-12-02, per step, two threads, against
/// packing over more than two panels): B0 at batch 1 0.96x (its 14x14 and 7x7 blocks
/// 0.93-0.95x, where panel groups each packed all the rows again), B3 0.975x, V2-S 0.98x,
/// B0 at batch 8 level, one thread 0.99-1.0x. A gated product over at most
/// [`DIRECT_PANELS`] panels scales the region's panels of `b` (`k x NR` values a panel)
/// instead, when those are the fewer values; otherwise it packs the rows, gated, as above.
///
/// A layer's product ([`Origin::Layer`]) whose panels are read by few tiles (a small map)
/// prefetches each next panel while the tiles run ([`PREFETCH_TILES`]).
///
/// # Safety
///
/// As [`super::RegionProduct::new`].
#[inline(always)]
pub(super) unsafe fn blocked<const MR: usize, I: Isa, W: PanelWords>(
    isa: I,
    product: RegionProduct,
) {
    let RegionProduct {
        operands,
        epilogue,
        region,
        scratch,
    } = product;
    let Operands { a_scale, b, k, .. } = operands;
    if region.rows == 0 || k == 0 {
        return;
    }
    if let Some(lanes) = b.bf16_lanes {
        assert_eq!(
            lanes,
            I::LANES,
            "bf16 pairs laid out for another register width"
        );
    }
    let panels = region.end_panel - region.first_panel;
    // Panels of bf16 pairs are not gated: that would take an f32 copy, and a second form of
    // the loops in this function. Their rows are packed, gated, instead.
    let direct = a_scale.is_none()
        || (W::COLUMNS == 1 && panels <= DIRECT_PANELS && region.rows >= panels * NR);
    let blocks = Blocks {
        operands,
        epilogue,
        region,
        direct,
    };
    match a_scale {
        // The region's panels of `b`, gated, since the rows are read directly.
        Some(scale) if direct => {
            let values = &b.words[region.first_panel * k * NR..region.end_panel * k * NR];
            let mut gated = std::mem::take(scratch);
            gated.resize(values.len(), 0.0);
            for ((gated, row), &factor) in gated
                .chunks_exact_mut(NR)
                .zip(values.chunks_exact(NR))
                .zip(scale[..k].iter().cycle())
            {
                for (gated, &value) in gated.iter_mut().zip(row) {
                    *gated = value * factor;
                }
            }
            // Nothing is packed: the rows are read in place, and not gated.
            let blocks = Blocks {
                operands: Operands {
                    a_scale: None,
                    ..operands
                },
                ..blocks
            };
            // SAFETY: passed on from the caller; `gated` holds the region's panels.
            unsafe { blocks.run::<MR, I, W>(isa, &gated, region.first_panel, scratch) };
            *scratch = gated;
        }
        // SAFETY: passed on from the caller.
        _ => unsafe { blocks.run::<MR, I, W>(isa, b.words, 0, scratch) },
    }
}

/// One product of [`blocked`], the gate of a direct product already applied to `b`.
#[derive(Clone, Copy)]
struct Blocks<'a> {
    operands: Operands<'a>,
    epilogue: Epilogue<'a>,
    region: Region,
    /// Whether the tiles read the rows of `a` in place (else they pack them, gated).
    direct: bool,
}

impl Blocks<'_> {
    /// The blocked loops over `b`'s panels as `W` words, panel `b_first_panel` first (the
    /// region's own panels only, when gated); `scratch` holds packed rows of `a`.
    ///
    /// # Safety
    ///
    /// As [`blocked`]; `b` holds the region's panels from `b_first_panel` on.
    #[inline(always)]
    unsafe fn run<const MR: usize, I: Isa, W: PanelWords>(
        self,
        isa: I,
        b: &[f32],
        b_first_panel: usize,
        scratch: &mut Vec<f32>,
    ) {
        let Blocks {
            operands:
                Operands {
                    a,
                    lda,
                    a_scale: pack_scale,
                    k,
                    n,
                    origin,
                    ..
                },
            epilogue,
            region,
            direct,
        } = self;
        let rows = region.rows;
        let row_words = NR / W::COLUMNS;
        let slices = if k <= WHOLE_K { 1 } else { k.div_ceil(KC) };
        let step = k.div_ceil(slices);
        let block_rows = (PACKED_ROWS_BYTES / 4 / step / MR).max(1) * MR;
        for block_start in (0..rows).step_by(block_rows) {
            let block_len = block_rows.min(rows - block_start);
            // Whole tiles of MR rows, then the rest in tiles of TAIL and single rows: 49 rows (a
            // 7x7 map) are four tiles of 12 and one row, not a fifth tile of 12 with 11 rows
            // wasted, nor a tile of 4 with 3.
            let tiles = Tiles {
                start: block_start,
                full: block_len / MR,
                quads: block_len % MR / TAIL,
                singles: block_len % MR % TAIL,
            };
            // Packed: every tile, unless read in place; single rows only to gate them.
            let (packed_full, packed_quads) = if direct {
                (0, 0)
            } else {
                (tiles.full, tiles.quads)
            };
            let packed_singles = if pack_scale.is_some() {
                tiles.singles
            } else {
                0
            };
            for k_start in (0..k).step_by(step) {
                let depth = step.min(k - k_start);
                let slice = Slice {
                    first: k_start == 0,
                    last: k_start + depth == k,
                };
                let packed_len = (packed_full * MR + packed_quads * TAIL + packed_singles) * depth;
                scratch.resize(packed_len, 0.0);
                let (whole, rest) = scratch.split_at_mut(packed_full * MR * depth);
                let (quads, singles) = rest.split_at_mut(packed_quads * TAIL * depth);
                for (index, packed) in whole.chunks_exact_mut(depth * MR).enumerate() {
                    let first = tiles.whole_row::<MR>(index);
                    pack_tile::<MR>(a, lda, first, rows, k_start, pack_scale, packed);
                }
                for (index, packed) in quads.chunks_exact_mut(depth * TAIL).enumerate() {
                    let first = tiles.quad_row::<MR>(index);
                    pack_tile::<TAIL>(a, lda, first, rows, k_start, pack_scale, packed);
                }
                for (index, packed) in singles.chunks_exact_mut(depth).enumerate() {
                    let first = tiles.single_row::<MR>(index);
                    pack_tile::<1>(a, lda, first, rows, k_start, pack_scale, packed);
                }
                let (whole, quads, singles) = (&*whole, &*quads, &*singles);
                for panel in region.first_panel..region.end_panel {
                    let start = ((panel - b_first_panel) * k + k_start) * row_words;
                    // Few tiles read a panel on small maps, so the first of them would wait on
                    // memory for the weights: the tiles ask for the next panel's slice, a share
                    // each, while they run.
                    let tile_count = tiles.full + tiles.quads + tiles.singles;
                    let next = if origin == Origin::Layer
                        && panel + 1 < region.end_panel
                        && tile_count <= PREFETCH_TILES
                    {
                        &b[start + k * row_words..start + (k + depth) * row_words]
                    } else {
                        &[]
                    };
                    let prefetch = Prefetch {
                        next,
                        share: next.len().div_ceil(tile_count.max(1)),
                    };
                    let b = &b[start..start + depth * row_words];
                    let columns = panel * NR..(panel * NR + NR).min(n);
                    let at = |first_row| TileAt {
                        first_row,
                        columns: columns.clone(),
                        n,
                        slice,
                    };
                    let source = Source {
                        a,
                        lda,
                        k_start,
                        depth,
                    };
                    // `Tiles` counts whole tiles, so every tile's rows are below `rows`; a packed
                    // tile holds `depth` steps of its rows.
                    for index in 0..tiles.full {
                        prefetch.share(isa, index);
                        let packed = (!direct).then(|| &whole[index * MR * depth..]);
                        let at = at(tiles.whole_row::<MR>(index));
                        // SAFETY: passed on from the caller; the tile's rows, see above.
                        unsafe {
                            run_rows::<MR, I, W>(isa, source, packed, b, at, epilogue, region)
                        };
                    }
                    for index in 0..tiles.quads {
                        prefetch.share(isa, tiles.full + index);
                        let packed = (!direct).then(|| &quads[index * TAIL * depth..]);
                        let at = at(tiles.quad_row::<MR>(index));
                        // SAFETY: as above.
                        unsafe {
                            run_rows::<TAIL, I, W>(isa, source, packed, b, at, epilogue, region)
                        };
                    }
                    for index in 0..tiles.singles {
                        prefetch.share(isa, tiles.full + tiles.quads + index);
                        let packed = (packed_singles > 0).then(|| &singles[index * depth..]);
                        let at = at(tiles.single_row::<MR>(index));
                        // SAFETY: as above.
                        unsafe {
                            run_rows::<1, I, W>(isa, source, packed, b, at, epilogue, region)
                        };
                    }
                }
            }
        }
    }
}

/// Panels read by at most this many tiles (a block of rows of a small map: 49 rows are 9
/// tiles on AVX2) have the next panel's slice prefetched while they run.
const PREFETCH_TILES: usize = 16;

/// The next panel's slice of `b`, asked for a `share` of values per tile.
#[derive(Clone, Copy)]
struct Prefetch<'a> {
    next: &'a [f32],
    share: usize,
}

impl Prefetch<'_> {
    /// Tile `index`'s share: a prefetch per cache line (16 values).
    #[inline(always)]
    fn share<I: Isa>(self, isa: I, index: usize) {
        let start = (index * self.share).min(self.next.len());
        let end = (start + self.share).min(self.next.len());
        for at in (start..end).step_by(16) {
            isa.prefetch(self.next[at..].as_ptr());
        }
    }
}

/// The rows a block's tiles read in place: `a` (row stride `lda`), steps
/// `k_start..k_start + depth`.
#[derive(Clone, Copy)]
struct Source<'a> {
    a: &'a [f32],
    lda: usize,
    k_start: usize,
    depth: usize,
}

/// [`run_tile`] on the `M` rows from `at.first_row`: packed in `packed` if given, else read
/// in place from `source`. (A function, not a closure in [`blocked`]: a closure is compiled
/// without the kernel's target features.)
///
/// # Safety
///
/// As [`run_tile`]; the rows `at.first_row..at.first_row + M` inside `source.a` (with their
/// steps), and `packed`, if given, holding `source.depth` steps of `M` values.
#[inline(always)]
unsafe fn run_rows<const M: usize, I: Isa, W: PanelWords>(
    isa: I,
    source: Source,
    packed: Option<&[f32]>,
    b: &[f32],
    at: TileAt,
    epilogue: Epilogue,
    region: Region,
) {
    let depth = source.depth;
    // SAFETY: passed on from the caller.
    unsafe {
        match packed {
            Some(packed) => {
                let rows = PackedRows(packed.as_ptr());
                run_tile::<M, I, W, _>(isa, rows, depth, b, at, epilogue, region);
            }
            None => {
                let offset = at.first_row * source.lda + source.k_start;
                let rows = InPlaceRows {
                    base: source.a.as_ptr().add(offset),
                    stride: source.lda,
                };
                run_tile::<M, I, W, _>(isa, rows, depth, b, at, epilogue, region);
            }
        }
    }
}

/// A block of rows as tiles: `full` whole tiles of `MR` rows from row `start`, then `quads`
/// of [`TAIL`] rows, then `singles` rows of one.
#[derive(Clone, Copy)]
struct Tiles {
    start: usize,
    full: usize,
    quads: usize,
    singles: usize,
}

impl Tiles {
    /// The first row of whole tile `index`.
    fn whole_row<const MR: usize>(self, index: usize) -> usize {
        self.start + index * MR
    }

    /// The first row of tail tile `index`.
    fn quad_row<const MR: usize>(self, index: usize) -> usize {
        self.start + self.full * MR + index * TAIL
    }

    /// Single row `index`.
    fn single_row<const MR: usize>(self, index: usize) -> usize {
        self.start + self.full * MR + self.quads * TAIL + index
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

/// One `M`-row tile against one panel: sums of `steps` steps from `a` and `b`, then partial
/// sums or the epilogue stored into `region`.
///
/// # Safety
///
/// As [`super::RegionProduct::new`]; `at.first_row < region.rows`, `at.columns` inside `n`;
/// `a` valid for `M` rows of `steps` values.
#[inline(always)]
unsafe fn run_tile<const M: usize, I: Isa, W: PanelWords, A: Rows>(
    isa: I,
    a: A,
    steps: usize,
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
    if M > 1 && width % I::LANES == 0 {
        // A panel of several rows whose live columns are whole registers (every panel on
        // AVX2, and the whole ones on AVX-512): its sums stay in registers from the stored
        // partial sums (after the first slice) to the output, each group's rows stored as
        // they are finished: raw before the last slice, through the epilogue on it.
        let start = first_row * n + columns.start;
        let last = start + (tile_rows - 1) * n + width;
        let epilogue = slice.last.then(|| {
            let residual = epilogue.residual.map(|residual| {
                assert!(residual.len() >= last, "residual is too short");
                residual[start..].as_ptr()
            });
            TileEpilogue {
                bias: &epilogue.bias[columns],
                activation: epilogue.activation,
                residual,
            }
        });
        let out = OutputTile {
            // SAFETY: the tile's first row and column, inside the region.
            out: unsafe { region.ptr.add(start) },
            n,
            rows: tile_rows,
            width,
            epilogue,
        };
        // SAFETY: `out`'s `tile_rows` rows of `width` values at stride `n` are inside the
        // region, which is ours alone, and hold the previous slice's partial sums unless this
        // is the first; `residual` was checked above, the bias has `width` values.
        unsafe { output_tile::<M, I, W, A>(isa, a, steps, b, out, !slice.first) };
        return;
    }
    // A whole panel with a constant width: every column of the sums is then written by the
    // kernel, and the compiler drops their zeroing.
    // SAFETY: the previous slice stored the tile's partial sums at `prior`; its `tile_rows`
    // rows of `width` columns are inside the region, which is ours alone.
    let acc = unsafe {
        if width == NR {
            sums::<M, I, W, A>(isa, a, steps, b, prior, n, tile_rows, NR)
        } else {
            sums::<M, I, W, A>(isa, a, steps, b, prior, n, tile_rows, width)
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
        finish_row(isa, acc, bias, epilogue.activation, residual, out);
    }
}

/// A tile's sums over `width` columns: the partial sums at `prior` (`tile_rows` rows of
/// stride `n`), if any, plus the tile's product.
///
/// # Safety
///
/// `prior`, if given, must be valid for reads of `width` values at each of its
/// `tile_rows` rows, which no one writes meanwhile; `a` as [`tile`] says.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn sums<const M: usize, I: Isa, W: PanelWords, A: Rows>(
    isa: I,
    a: A,
    steps: usize,
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
    // SAFETY: passed on from the caller.
    unsafe { tile::<M, I, W, A>(isa, a, steps, b, &mut acc, prior.is_some(), width) };
    acc
}

/// Where a tile's `MR` row values at each step come from.
pub(crate) trait Rows: Copy {
    /// Row `r`'s value at `step`.
    ///
    /// # Safety
    ///
    /// `r < MR` and `step` below the steps the source was made for.
    unsafe fn value<const MR: usize>(self, step: usize, r: usize) -> f32;

    /// Where the values are, for [`Isa::tile_steps`].
    fn bases<const MR: usize>(self) -> RowBases;
}

/// Rows packed step by step ([`pack_tile`]): `MR` values per step, one pointer at fixed
/// offsets.
#[derive(Clone, Copy)]
pub(crate) struct PackedRows(pub(crate) *const f32);

impl Rows for PackedRows {
    #[inline(always)]
    unsafe fn value<const MR: usize>(self, step: usize, r: usize) -> f32 {
        // SAFETY: the source holds MR values a step; the caller vouches for `r` and `step`.
        unsafe { *self.0.add(step * MR + r) }
    }

    #[inline(always)]
    fn bases<const MR: usize>(self) -> RowBases {
        RowBases {
            base: self.0,
            stride: 1,
            step: MR,
        }
    }
}

/// Rows read where they are: row `r`'s values from `base + r * stride` on.
#[derive(Clone, Copy)]
pub(crate) struct InPlaceRows {
    pub(crate) base: *const f32,
    pub(crate) stride: usize,
}

impl Rows for InPlaceRows {
    #[inline(always)]
    unsafe fn value<const MR: usize>(self, step: usize, r: usize) -> f32 {
        // SAFETY: the source holds MR rows of the steps; the caller vouches for `r`, `step`.
        unsafe { *self.base.add(r * self.stride + step) }
    }

    #[inline(always)]
    fn bases<const MR: usize>(self) -> RowBases {
        RowBases {
            base: self.base,
            stride: self.stride,
            step: 1,
        }
    }
}

/// One `MR x NR` tile of the product, into `acc` (added to it if `add`): `a` gives `steps`
/// steps of `MR` row values, `b` holds `steps` rows of `NR` values, of which the first
/// `width` columns are live (the rest of a layer's last panel is zero padding). The live
/// columns go in groups of two registers (one group for AVX-512's 16 lanes, two for 8
/// lanes), so a group's `2 x MR` sums stay in registers and each row value is broadcast once
/// for two multiply-adds; a last group of one register's columns or fewer takes one
/// register. Columns past the live groups are left as they are in `acc`.
///
/// # Safety
///
/// `a` must be valid for `MR` rows of `steps` values, which no one writes meanwhile.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn tile<const MR: usize, I: Isa, W: PanelWords, A: Rows>(
    isa: I,
    a: A,
    steps: usize,
    b: &[f32],
    acc: &mut [[f32; NR]; MR],
    add: bool,
    width: usize,
) {
    assert!(b.len() >= steps * NR / W::COLUMNS, "b is too short");
    let lanes = I::LANES;
    let b = b.as_ptr();
    if MR == 1 {
        for group in (0..width.min(NR)).step_by(2 * lanes) {
            if group + lanes >= width {
                split_row_group::<1, I, W, A>(isa, a, b, steps, group, &mut acc[0], add);
            } else {
                split_row_group::<2, I, W, A>(isa, a, b, steps, group, &mut acc[0], add);
            }
        }
        return;
    }
    // Tiles of several rows come here only for panels whose live columns are not whole
    // registers (AVX-512's last 8 or 24 columns of a layer); the others go from registers
    // to the output ([`output_tile`]).
    let width = width.min(NR);
    for group in (0..width).step_by(2 * lanes) {
        if group + lanes >= width {
            // SAFETY: passed on from the caller.
            unsafe { register_group::<MR, 1, I, W, A>(isa, a, b, steps, group, acc, add) };
        } else {
            // SAFETY: as above.
            unsafe { register_group::<MR, 2, I, W, A>(isa, a, b, steps, group, acc, add) };
        }
    }
}

/// [`tile`] for a panel of a tile of several rows whose live columns are whole registers,
/// stored from registers into `out`'s rows: added to the partial sums there if `add`, and
/// stored raw, or through `out`'s epilogue if it has one. No array of sums passes between
/// slices or to the epilogue.
///
/// # Safety
///
/// `a` as [`tile`] says; as [`OutputTile`] says for `out`.
#[inline(always)]
pub(crate) unsafe fn output_tile<const MR: usize, I: Isa, W: PanelWords, A: Rows>(
    isa: I,
    a: A,
    steps: usize,
    b: &[f32],
    out: OutputTile,
    add: bool,
) {
    let lanes = I::LANES;
    assert!(b.len() >= steps * NR / W::COLUMNS, "b is too short");
    assert!(out.rows <= MR, "a tile's rows");
    assert!(
        out.width <= NR && out.width.is_multiple_of(lanes),
        "whole registers of a panel"
    );
    let b = b.as_ptr();
    if out.width == NR {
        // A whole panel: a loop of constant trip count, unrolled.
        for group in (0..NR).step_by(2 * lanes) {
            // SAFETY: passed on from the caller; the group is inside the panel.
            unsafe { output_group::<MR, 2, I, W, A>(isa, a, b, steps, group, out, add) };
        }
        return;
    }
    for group in (0..out.width).step_by(2 * lanes) {
        // SAFETY: as above; a group of one register where only one is live.
        unsafe {
            if group + lanes == out.width {
                output_group::<MR, 1, I, W, A>(isa, a, b, steps, group, out, add);
            } else {
                output_group::<MR, 2, I, W, A>(isa, a, b, steps, group, out, add);
            }
        }
    }
}

/// Independent sums a register group keeps busy: a core finishing two multiply-adds a
/// cycle, each four cycles long, needs eight under way.
const SUMS_UNDER_WAY: usize = 8;

/// The sums of columns `group..group + R * lanes` of a panel over `steps` steps, from
/// `sums` on, in `R x MR` registers: each row value broadcast once for `R` multiply-adds.
/// A group with fewer than [`SUMS_UNDER_WAY`] sums (AVX2's 8-column remainder of a panel:
/// 6 rows x 1 register) deals its steps out to two sets of sums, added at the end, so that
/// it does not wait on its own multiply-adds.
///
/// # Safety
///
/// `a` valid for `MR` rows of `steps` values, `b` for `steps` rows of [`NR`] values;
/// `group + R * lanes <= NR`.
#[inline(always)]
unsafe fn group_sums<const MR: usize, const R: usize, I: Isa, W: PanelWords, A: Rows>(
    isa: I,
    a: A,
    b: *const f32,
    steps: usize,
    group: usize,
    mut sums: [[I::V; R]; MR],
) -> [[I::V; R]; MR] {
    // SAFETY: the caller's word, for all `steps`.
    let stride = NR / W::COLUMNS;
    // SAFETY: the caller's word, for all `steps`; the group's first word is in the panel.
    if unsafe {
        let at = b.add(group / W::COLUMNS);
        W::tile_steps::<I, MR, R>(isa, a.bases::<MR>(), at, stride, steps, &mut sums)
    } {
        return sums;
    }
    if MR * R >= SUMS_UNDER_WAY {
        for step in 0..steps {
            // SAFETY: `step < steps`; the rest is the caller's word.
            unsafe { group_step::<MR, R, I, W, A>(isa, a, b, step, group, &mut sums) };
        }
        return sums;
    }
    let mut odd = [[isa.zero(); R]; MR];
    for pair in 0..steps / 2 {
        // SAFETY: `2 * pair + 1 < steps`; the rest is the caller's word.
        unsafe {
            group_step::<MR, R, I, W, A>(isa, a, b, 2 * pair, group, &mut sums);
            group_step::<MR, R, I, W, A>(isa, a, b, 2 * pair + 1, group, &mut odd);
        }
    }
    if steps % 2 == 1 {
        // SAFETY: as above.
        unsafe { group_step::<MR, R, I, W, A>(isa, a, b, steps - 1, group, &mut sums) };
    }
    for (sums, odd) in sums.iter_mut().zip(odd) {
        for (sum, odd) in sums.iter_mut().zip(odd) {
            *sum = isa.add(*sum, odd);
        }
    }
    sums
}

/// One step of [`group_sums`] into `sums`.
///
/// # Safety
///
/// As [`group_sums`], with `step < steps`.
#[inline(always)]
unsafe fn group_step<const MR: usize, const R: usize, I: Isa, W: PanelWords, A: Rows>(
    isa: I,
    a: A,
    b: *const f32,
    step: usize,
    group: usize,
    sums: &mut [[I::V; R]; MR],
) {
    // SAFETY: `b` has NR values at `step * NR` and `a` a value for each of its MR rows at
    // `step` (the caller's word); `group + R * lanes <= NR`.
    unsafe {
        let columns = W::registers::<I, R>(isa, b.add((step * NR + group) / W::COLUMNS));
        for (r, sums) in sums.iter_mut().enumerate() {
            let value = isa.splat(a.value::<MR>(step, r));
            for (sum, column) in sums.iter_mut().zip(columns) {
                *sum = isa.fmadd(value, column, *sum);
            }
        }
    }
}

/// [`tile`]'s group of `R` registers (1 or 2): columns `group..group + R * lanes` of the
/// panel, started from `acc`'s if `add`, and stored to `acc`.
///
/// # Safety
///
/// As [`tile`].
#[inline(always)]
unsafe fn register_group<const MR: usize, const R: usize, I: Isa, W: PanelWords, A: Rows>(
    isa: I,
    a: A,
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
    // SAFETY: passed on from the caller; the group is inside the panel (above).
    let sums = unsafe { group_sums::<MR, R, I, W, A>(isa, a, b, steps, group, sums) };
    for (row, sums) in acc.iter_mut().zip(sums) {
        for (j, sum) in sums.into_iter().enumerate() {
            // SAFETY: as for the loads.
            unsafe { isa.store(row.as_mut_ptr().add(group + j * lanes), sum) };
        }
    }
}

/// [`output_tile`]'s group of `R` registers (1 or 2): columns `group..group + R * lanes`
/// of the panel, started from `out`'s rows if `add`, and stored to them, raw or finished.
///
/// # Safety
///
/// As [`output_tile`]; `group + R * lanes <= out.width`.
#[inline(always)]
unsafe fn output_group<const MR: usize, const R: usize, I: Isa, W: PanelWords, A: Rows>(
    isa: I,
    a: A,
    b: *const f32,
    steps: usize,
    group: usize,
    out: OutputTile,
    add: bool,
) {
    let lanes = I::LANES;
    let mut sums = [[isa.zero(); R]; MR];
    if add {
        for (r, sums) in sums.iter_mut().enumerate().take(out.rows) {
            for (j, sum) in sums.iter_mut().enumerate() {
                // SAFETY: row `r < rows` of `out`, inside its live columns (the group's).
                *sum = unsafe { isa.load(out.out.add(r * out.n + group + j * lanes)) };
            }
        }
    }
    // SAFETY: passed on from the caller.
    let sums = unsafe { group_sums::<MR, R, I, W, A>(isa, a, b, steps, group, sums) };
    for (r, sums) in sums.into_iter().enumerate().take(out.rows) {
        for (j, sum) in sums.into_iter().enumerate() {
            let at = r * out.n + group + j * lanes;
            // SAFETY: row `r < rows` of `out` (and of the residual, at the same offset),
            // inside its live columns; the bias holds a value for each of them.
            unsafe {
                let value = match out.epilogue {
                    None => sum,
                    Some(epilogue) => {
                        let bias = isa.load(epilogue.bias.as_ptr().add(group + j * lanes));
                        let value = isa.activate_register(isa.add(sum, bias), epilogue.activation);
                        match epilogue.residual {
                            Some(residual) => isa.add(value, isa.load(residual.add(at))),
                            None => value,
                        }
                    }
                };
                isa.store(out.out.add(at), value);
            }
        }
    }
}

/// Where a panel of a tile of several rows goes straight from [`output_group`]'s
/// registers: `rows` rows of `width` values (the panel's live columns, whole registers)
/// from `out` (row stride `n`), which hold the previous slices' partial sums when the sums
/// are added to them; raw sums, or finished by `epilogue` on the last slice.
///
/// Its maker vouches that `out` is valid for reads and writes, and the epilogue's
/// `residual` for reads, of those rows, which no one else accesses meanwhile, and that the
/// epilogue's `bias` holds `width` values.
#[derive(Clone, Copy)]
pub(crate) struct OutputTile<'a> {
    out: *mut f32,
    n: usize,
    rows: usize,
    width: usize,
    epilogue: Option<TileEpilogue<'a>>,
}

/// A panel's epilogue for [`OutputTile`]: each value `activation(sum + bias)`, plus the
/// residual's value at the same offset from `residual` (its row stride is the output's),
/// if given.
#[derive(Clone, Copy)]
pub(crate) struct TileEpilogue<'a> {
    bias: &'a [f32],
    activation: Option<crate::model::activation::Activation>,
    residual: Option<*const f32>,
}

/// Steps a one-row tile's group of registers takes at once, each into sums of its own: a
/// row's `R` multiply-adds a step would otherwise wait on the previous step's (four cycles
/// each on the CPUs we measure), where a tile of several rows has independent sums to fill
/// that time.
const ROW_SPLIT: usize = 4;

/// [`register_group`] for a tile of one row: columns `group..group + R * lanes` of `acc`,
/// the steps dealt round-robin over [`ROW_SPLIT`] sets of sums, which are added at the end.
#[inline(always)]
fn split_row_group<const R: usize, I: Isa, W: PanelWords, A: Rows>(
    isa: I,
    a: A,
    b: *const f32,
    steps: usize,
    group: usize,
    acc: &mut [f32; NR],
    add: bool,
) {
    let lanes = I::LANES;
    let mut sums = [[isa.zero(); R]; ROW_SPLIT];
    if add {
        for (j, sum) in sums[0].iter_mut().enumerate() {
            // SAFETY: `group + R * lanes <= NR`, as in `register_group`.
            *sum = unsafe { isa.load(acc.as_ptr().add(group + j * lanes)) };
        }
    }
    let mut step = 0;
    while step + ROW_SPLIT <= steps {
        for (offset, sums) in sums.iter_mut().enumerate() {
            // SAFETY: `step + offset < steps`, so `a` has a value there and `b` NR values at
            // `(step + offset) * NR`; `group + R * lanes <= NR`.
            unsafe {
                let value = isa.splat(a.value::<1>(step + offset, 0));
                let at = b.add(((step + offset) * NR + group) / W::COLUMNS);
                for (sum, column) in sums.iter_mut().zip(W::registers::<I, R>(isa, at)) {
                    *sum = isa.fmadd(value, column, *sum);
                }
            }
        }
        step += ROW_SPLIT;
    }
    for step in step..steps {
        // SAFETY: as above, with `step < steps`.
        unsafe {
            let value = isa.splat(a.value::<1>(step, 0));
            let at = b.add((step * NR + group) / W::COLUMNS);
            for (sum, column) in sums[0].iter_mut().zip(W::registers::<I, R>(isa, at)) {
                *sum = isa.fmadd(value, column, *sum);
            }
        }
    }
    for (j, total) in sums[0].into_iter().enumerate() {
        let mut total = total;
        for set in &sums[1..] {
            total = isa.add(set[j], total);
        }
        // SAFETY: as for the loads.
        unsafe { isa.store(acc.as_mut_ptr().add(group + j * lanes), total) };
    }
}

/// One tile row's epilogue: bias, activation, residual, store (the first `out.len()`
/// columns of the panel).
#[inline(always)]
fn finish_row<I: Isa>(
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
