//! The matrix product behind every convolution of the plan: `C = epilogue(A * B)` with `A`
//! the activations (one row per pixel, channels contiguous: NHWC), `B` a layer's weights
//! packed once into panels ([`Packed`]), and the bias, activation and residual applied to
//! each `MR x NR` tile right after its sums.
//!
//! - [`pack`]: the packed operands: weights in f32, or in bf16 pairs that the kernel widens
//!   to f32 as it loads them ([`pack::PanelWords`]), with the same steps in the same order.
//! - [`kernel`]: the micro-kernel, one function generic over the instruction set (whose
//!   inner loop an instruction set may write out itself, [`Isa::tile_steps`]: AVX2's is
//!   `asm!`), and its cache blocking.
//! - this file: the drivers, [`serial`] (inside a task of the caller's) and [`parallel`]
//!   (splitting rows, and panels where rows are few, over rayon's pool).
//!
//! `benches/matmul.rs` holds the kernel against the `gemm` crate plus a separate epilogue
//! pass on B0's 1x1 shapes: the number that justifies writing it.

pub(crate) mod kernel;
pub(crate) mod pack;

use std::marker::PhantomData;

use rayon::prelude::*;

use pack::{Bf16Words, F32Words, PanelWords};
pub(crate) use pack::{NR, Packed, Weights};

use crate::cpu::isa::{Detected, Isa, Kernel};
use crate::model::activation::Activation;

/// A row block is a multiple of this many rows, so that every instruction set's tile
/// height divides it.
pub(crate) const ROW_QUANTUM: usize = 12;

/// Row blocks per thread the parallel drivers aim for: enough to balance the cores on a
/// machine that other work also uses.
const TASKS_PER_THREAD: usize = 4;

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
pub(crate) struct Region {
    ptr: *mut f32,
    rows: usize,
    first_panel: usize,
    end_panel: usize,
}

/// One product into a [`Region`]: the unit of work the drivers hand to
/// [`Detected::run`].
pub(crate) struct RegionProduct<'a> {
    operands: Operands<'a>,
    epilogue: Epilogue<'a>,
    region: Region,
    scratch: &'a mut Vec<f32>,
}

/// The operands of a [`RegionProduct`], checked by [`RegionProduct::new`].
#[derive(Clone, Copy)]
struct Operands<'a> {
    /// `rows x k` (row stride `lda`).
    a: &'a [f32],
    lda: usize,
    /// A factor per column of `a`, if any.
    a_scale: Option<&'a [f32]>,
    /// [`Packed::data`] of a `k x n` matrix.
    b: Weights<'a>,
    k: usize,
    n: usize,
    /// Where the operands come from.
    origin: Origin,
}

/// Where a product's operands come from, which decides whether [`kernel::blocked`]
/// prefetches the weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// A layer's product over the pool ([`parallel`]): the weights come from memory, once.
    Layer,
    /// A chunk of a larger product ([`serial`]): `a` was just written (unfolded windows,
    /// expanded rows); the weights are read again from cache, chunk after chunk.
    Chunk,
}

impl<'a> RegionProduct<'a> {
    /// `region = epilogue(a * b)`: row `i` of `a` is `a[i * lda..i * lda + k]`, its column
    /// `j` times `a_scale[j]` if given; `b` is [`Packed::data`] of a `k x n` matrix;
    /// `scratch` holds packed rows of `a`.
    ///
    /// # Safety
    ///
    /// `region` must be valid for writes of its rows and its panels' columns, which no one
    /// else reads or writes until the product has run.
    unsafe fn new(
        operands: Operands<'a>,
        epilogue: Epilogue<'a>,
        region: Region,
        scratch: &'a mut Vec<f32>,
    ) -> Self {
        let Operands {
            a,
            lda,
            a_scale,
            b,
            k,
            n,
            origin: _,
        } = operands;
        let rows = region.rows;
        assert!(
            rows == 0 || a.len() >= (rows - 1) * lda + k,
            "a is too short"
        );
        assert!(
            b.words.len() >= n.div_ceil(NR) * b.row_words() * k,
            "b is too short"
        );
        assert!(
            a_scale.is_none_or(|scale| scale.len() >= k),
            "a_scale is too short"
        );
        Self {
            operands,
            epilogue,
            region,
            scratch,
        }
    }
}

impl RegionProduct<'_> {
    /// Runs the product with `isa`, compiled once for each kind of panel words: a kernel
    /// with both kinds' loops in one function had LLVM inline less of them, and the f32
    /// forwards were 4-5% slower.
    fn run(self, isa: Detected) {
        match self.operands.b.bf16_lanes {
            None => isa.run(ProductOf::<F32Words>(self, PhantomData)),
            Some(_) => isa.run(ProductOf::<Bf16Words>(self, PhantomData)),
        }
    }
}

/// A [`RegionProduct`] whose panels are `W` words: the unit [`Detected::run`] compiles.
struct ProductOf<'a, W>(RegionProduct<'a>, PhantomData<W>);

impl<W: PanelWords> Kernel for ProductOf<'_, W> {
    type Output = ();

    #[inline(always)]
    fn run<I: Isa>(self, isa: I) {
        // SAFETY: `new`'s caller vouched for the region; `new` checked `a` and `b`.
        unsafe {
            match I::TILE_ROWS {
                12 => kernel::blocked::<12, I, W>(isa, self.0),
                6 => kernel::blocked::<6, I, W>(isa, self.0),
                _ => kernel::blocked::<4, I, W>(isa, self.0),
            }
        }
    }
}

/// `c = epilogue(a * b)`, on the calling thread, for the `c.len() / n` rows of `c` (row
/// stride `n`). Row `i` of `a` is `a[i * lda..i * lda + k]`; `b` is [`Packed::data`] of a
/// `k x n` matrix; `scratch` holds packed rows of `a`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn serial(
    isa: Detected,
    a: &[f32],
    lda: usize,
    b: Weights,
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
    let region = Region {
        ptr: c.as_mut_ptr(),
        rows,
        first_panel: 0,
        end_panel: n.div_ceil(NR),
    };
    let operands = Operands {
        a,
        lda,
        a_scale: None,
        b,
        k,
        n,
        origin: Origin::Chunk,
    };
    // SAFETY: the region is all of `c`, borrowed mutably for the call.
    let product = unsafe { RegionProduct::new(operands, epilogue, region, scratch) };
    product.run(isa);
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

/// Bytes of weights that row blocks may each read again: a quarter of a core's L2 on the
/// CPUs we measure, where the reads after the first hit.
const SHARED_WEIGHTS_BYTES: usize = 256 * 1024;

/// How [`parallel`] splits one sample's product into tasks: `row_blocks` blocks of rows
/// ([`rows_of`](Self::rows_of)) times `panel_groups` groups of panels
/// ([`panels_of`](Self::panels_of)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Partition {
    rows: usize,
    row_blocks: usize,
    panels: usize,
    panel_groups: usize,
}

impl Partition {
    /// How [`parallel`] splits a product of `samples` samples of `rows` rows, `k` deep and
    /// `n` wide, over the threads of the current pool.
    fn of_layer(samples: usize, rows: usize, k: usize, n: usize) -> Self {
        let wanted = TASKS_PER_THREAD * rayon::current_num_threads();
        Self::new(wanted.div_ceil(samples.max(1)), rows, n.div_ceil(NR), k)
    }

    /// About `tasks` tasks over `rows` rows and `panels` panels of `k` rows. Every row
    /// block reads all the weights of its panels and every panel group all the rows: a
    /// product whose weights are the wider operand (more columns than rows) and too large
    /// to be read again from L2 ([`SHARED_WEIGHTS_BYTES`]: the 7x7 layers, the head, the
    /// classifier) splits its panels first, so that each task reads only its share of them;
    /// the others split rows first.
    fn new(tasks: usize, rows: usize, panels: usize, k: usize) -> Self {
        let tasks = tasks.max(1);
        let row_tiles = (rows / ROW_QUANTUM).max(1);
        let weights_bytes = panels * NR * k * 4;
        let (row_blocks, panel_groups) =
            if panels * NR > rows && weights_bytes > SHARED_WEIGHTS_BYTES {
                let panel_groups = tasks.min(panels);
                ((tasks / panel_groups).clamp(1, row_tiles), panel_groups)
            } else {
                let row_blocks = tasks.min(row_tiles);
                (row_blocks, tasks.div_ceil(row_blocks).clamp(1, panels))
            };
        Self {
            rows,
            row_blocks,
            panels,
            panel_groups,
        }
    }

    /// The panels of group `index`: dealt out evenly, so that groups differ by one panel at
    /// most (10 panels in 8 groups are 1 or 2 each, not 2 each in 5 groups, which two
    /// threads would share 6 to 4).
    fn panels_of(self, index: usize) -> std::ops::Range<usize> {
        let start = |index: usize| index.min(self.panel_groups) * self.panels / self.panel_groups;
        start(index)..start(index + 1)
    }

    /// The rows of block `index`: the whole multiples of [`ROW_QUANTUM`] dealt out evenly,
    /// the last block taking the rest. 49 rows in four blocks are 12, 12, 12 and 13 rows,
    /// not 24, 24 and a block of one.
    fn rows_of(self, index: usize) -> std::ops::Range<usize> {
        let tiles = self.rows / ROW_QUANTUM;
        let start = |index: usize| {
            if index >= self.row_blocks {
                self.rows
            } else {
                index * tiles / self.row_blocks * ROW_QUANTUM
            }
        };
        start(index)..start(index + 1)
    }
}

/// Whether a gated product `n` wide copies its rows to gate them (over more than
/// [`kernel::DIRECT_PANELS`] panels), where an ungated one reads them in place. A caller that
/// owns the rows scales them in place once instead and runs the product ungated: MBConv
/// projections, whose panel groups on small maps also each gated all the rows again.
pub(crate) fn packs_gated_rows(n: usize) -> bool {
    n.div_ceil(NR) > kernel::DIRECT_PANELS
}

/// A pointer that tasks writing disjoint parts of one buffer share.
#[derive(Clone, Copy)]
struct SharedOutput(*mut f32);

// SAFETY: the tasks that share it write disjoint regions (see `parallel`).
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
/// rows as `c`, in `samples` samples of equal row counts. With `a_scale` (`[samples][k]`),
/// column `j` of a sample's rows is first multiplied by its `a_scale[sample][j]`: a
/// squeeze-excitation gate on the input channels, applied while the rows are packed, at no
/// extra pass. Tasks split the rows and, when the rows are too few to feed every thread
/// (small maps), the panels of `b` too, so that each task reads only its share of the
/// weights.
#[allow(clippy::too_many_arguments)]
pub(crate) fn parallel(
    isa: Detected,
    a: &[f32],
    samples: usize,
    a_scale: Option<&[f32]>,
    b: Weights,
    k: usize,
    n: usize,
    epilogue: Epilogue,
    c: &mut [f32],
) {
    // Samples of less than a row block (the classifier's one row) are one product unless
    // gated (gates differ from sample to sample): at batch 8, B0's classifier read all its
    // weights once per sample, and took 2.0 ms instead of 0.9. Larger samples stay apart,
    // so that a task packs only its own sample's rows (merged, B0's 7x7 layers at batch 8
    // were 4% slower).
    let samples = samples.max(1);
    let sample_rows = c.len() / n.max(1) / samples;
    let (samples, rows) = if a_scale.is_none() && sample_rows < ROW_QUANTUM {
        (1, samples * sample_rows)
    } else {
        (samples, sample_rows)
    };
    let panels = n.div_ceil(NR);
    if rows == 0 || panels == 0 {
        return;
    }
    assert!(a.len() >= samples * rows * k && c.len() == samples * rows * n);
    assert!(a_scale.is_none_or(|s| s.len() >= samples * k));
    let partition = Partition::of_layer(samples, rows, k, n);
    let (row_blocks, panel_groups) = (partition.row_blocks, partition.panel_groups);
    let output = SharedOutput(c.as_mut_ptr());
    (0..samples * row_blocks * panel_groups)
        .into_par_iter()
        .for_each_init(Vec::new, |scratch, task| {
            let (sample, rest) = (
                task / (row_blocks * panel_groups),
                task % (row_blocks * panel_groups),
            );
            let (row_block, panel_group) = (rest / panel_groups, rest % panel_groups);
            let block = partition.rows_of(row_block);
            let group_panels = partition.panels_of(panel_group);
            let first_row = sample * rows + block.start;
            let region = Region {
                // SAFETY: `first_row * n` is inside `c` (first_row < samples * rows).
                ptr: unsafe { output.get().add(first_row * n) },
                rows: block.len(),
                first_panel: group_panels.start,
                end_panel: group_panels.end,
            };
            let operands = Operands {
                a: &a[first_row * k..],
                lda: k,
                a_scale: a_scale.map(|scale| &scale[sample * k..(sample + 1) * k]),
                b,
                k,
                n,
                origin: Origin::Layer,
            };
            let epilogue = epilogue.starting_at_row(first_row, n);
            // SAFETY: tasks write disjoint (row block, panel group) regions of `c`, which
            // this function borrows mutably until they all end.
            let product = unsafe { RegionProduct::new(operands, epilogue, region, scratch) };
            product.run(isa);
        });
}

#[cfg(test)]
mod tests {
    use super::kernel::{InPlaceRows, PackedRows, tile};
    use super::pack::F32Words;
    use super::*;
    use crate::cpu::isa::Portable;

    /// A deterministic pseudo-random `rows x columns` matrix.
    fn matrix(rows: usize, columns: usize, seed: u32) -> Vec<f32> {
        crate::cpu::bench::pseudo_random(rows * columns, seed)
    }

    #[test]
    fn products_match_the_definition_with_every_epilogue_and_instruction_set() {
        // Rows and columns around the tile sizes: partial tiles and panels, one row, k = 1,
        // and k past WHOLE_K (800: four slices of 200, the middle ones neither starting nor
        // finishing the sums).
        for isa in Detected::all() {
            for (m, k, n) in [
                (1, 1, 1),
                (13, 27, 24),
                (49, 96, 40),
                (7, 5, 17),
                (25, 64, 16),
                (30, 300, 33),
                (19, 32, 16),
                (14, 40, 40),
                (9, 24, 8),
                (8, 270, 112),
                (10, 33, 24),
                (11, 300, 40),
                (13, 800, 64),
            ] {
                let a = matrix(m, k, 1);
                let weights = matrix(k, n, 2);
                let bias = matrix(1, n, 3);
                let residual = matrix(m, n, 4);
                let packed = Packed::new(k, n, |r, c| weights[r * n + c]);
                let activations = [None, Some(Activation::SiLU), Some(Activation::ReLU6)];
                for (activation, residual) in activations
                    .into_iter()
                    .flat_map(|act| [(act, Some(&residual[..])), (act, None)])
                {
                    let epilogue = Epilogue {
                        bias: &bias,
                        activation,
                        residual,
                    };
                    let mut c = vec![f32::NAN; m * n];
                    parallel(isa, &a, 1, None, packed.data(), k, n, epilogue, &mut c);
                    let mut serial_c = vec![f32::NAN; m * n];
                    let mut scratch = Vec::new();
                    serial(
                        isa,
                        &a,
                        k,
                        packed.data(),
                        k,
                        n,
                        epilogue,
                        &mut serial_c,
                        &mut scratch,
                    );
                    for i in 0..m {
                        for j in 0..n {
                            let dot: f32 = (0..k).map(|t| a[i * k + t] * weights[t * n + j]).sum();
                            let x = dot + bias[j];
                            let x = match activation {
                                Some(Activation::SiLU) => x / (1.0 + (-x).exp()),
                                Some(Activation::ReLU6) => x.clamp(0.0, 6.0),
                                None => x,
                            } + residual.map_or(0.0, |r| r[i * n + j]);
                            for (form, got) in
                                [("parallel", c[i * n + j]), ("serial", serial_c[i * n + j])]
                            {
                                assert!(
                                    (got - x).abs() < 1e-4,
                                    "{isa:?} {form} {m}x{k}x{n} [{i}, {j}]: {got} vs {x}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// One 12-row tile with `isa`, adding to `acc`, `width` columns live: the rows from
    /// `rows` (row-major, `steps` values a row) read in place, or packed from `packed`.
    struct Tile<'a> {
        rows: &'a [f32],
        packed: &'a [f32],
        in_place: bool,
        panel: &'a [f32],
        acc: &'a mut [[f32; NR]; 12],
        width: usize,
    }

    impl Kernel for Tile<'_> {
        type Output = ();
        #[inline(always)]
        fn run<I: Isa>(self, isa: I) {
            let steps = self.rows.len() / 12;
            assert!(self.packed.len() == 12 * steps && self.panel.len() >= steps * NR);
            let (acc, width) = (self.acc, self.width);
            // SAFETY: both sources hold 12 rows of `steps` values (asserted).
            unsafe {
                if self.in_place {
                    let rows = InPlaceRows {
                        base: self.rows.as_ptr(),
                        stride: steps,
                    };
                    tile::<12, I, F32Words, _>(isa, rows, steps, self.panel, acc, true, width);
                } else {
                    let rows = PackedRows(self.packed.as_ptr());
                    tile::<12, I, F32Words, _>(isa, rows, steps, self.panel, acc, true, width);
                }
            }
        }
    }

    #[test]
    fn every_instruction_sets_tile_matches_the_portable_one_on_the_live_columns() {
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
        let panel = &packed.data().words[k * NR..2 * k * NR];
        let mut expected = [[0.5f32; NR]; 12];
        Tile {
            rows: &a,
            packed: &tile_a,
            in_place: false,
            panel,
            acc: &mut expected,
            width: NR,
        }
        .run(Portable);
        // Whole panels, and the live widths of a last panel: over, at and under one and two
        // registers of every instruction set; the rows packed and in place.
        for width in [NR, 24, 20, 17, 16, 9, 8, 5, 1] {
            for (isa, in_place) in Detected::all()
                .into_iter()
                .flat_map(|isa| [(isa, false), (isa, true)])
            {
                let mut got = [[0.5f32; NR]; 12];
                isa.run(Tile {
                    rows: &a,
                    packed: &tile_a,
                    in_place,
                    panel,
                    acc: &mut got,
                    width,
                });
                for (got, want) in got.iter().zip(&expected) {
                    for (column, (got, want)) in got.iter().zip(want).enumerate().take(width) {
                        assert!(
                            (got - want).abs() < 1e-5,
                            "{isa:?} in place {in_place} width {width} column {column}: \
                             {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn bf16_weights_give_the_products_of_the_rounded_weights_exactly() {
        // Widening a bf16 weight gives the rounded f32 exactly, and the kernels take the same
        // steps in the same order whatever they load, so the products must be equal to the
        // bit; gated, to rounding (bf16 panels are never gated themselves: their rows
        // are). Plain, gated with rows packed (many panels) and where f32 gates panels (few
        // panels, many rows), in one slice of k and in several; one row (the classifier at
        // batch 1); last panels of one and of two registers' live columns.
        let round = |value: f32| half::bf16::from_f32(value).to_f32();
        for isa in Detected::all() {
            for (rows, k, n) in [
                (1, 1, 1),
                (13, 27, 24),
                (49, 96, 40),
                (1, 1280, 100),
                (200, 37, 20),
                (23, 750, 100),
                (301, 750, 40),
                (7, 5, 17),
            ] {
                let a = matrix(2 * rows, k, 1);
                let weights = matrix(k, n, 2);
                let bias = matrix(1, n, 3);
                let scale = matrix(2, k, 4);
                let bf16 = Packed::bf16(k, n, isa.lanes(), |r, c| weights[r * n + c]);
                let rounded = Packed::new(k, n, |r, c| round(weights[r * n + c]));
                let changed = (0..k * n).filter(|&i| round(weights[i]) != weights[i]);
                assert!(
                    k * n < 8 || changed.count() > 0,
                    "the weights must lose bits"
                );
                let epilogue = Epilogue {
                    bias: &bias,
                    activation: Some(Activation::SiLU),
                    residual: None,
                };
                for gates in [None, Some(&scale[..])] {
                    let product = |packed: &Packed| {
                        let mut c = vec![f32::NAN; 2 * rows * n];
                        let data = packed.data();
                        parallel(isa, &a, 2, gates, data, k, n, epilogue, &mut c);
                        c
                    };
                    let (got, want) = (product(&bf16), product(&rounded));
                    for (index, (got, want)) in got.iter().zip(&want).enumerate() {
                        // Gated, f32 panels over few panels are scaled where bf16 ones
                        // scale the rows: the same values, rounded once elsewhere.
                        let exact = got.to_bits() == want.to_bits();
                        assert!(
                            exact || (gates.is_some() && (got - want).abs() <= 1e-5),
                            "{isa:?} {rows}x{k}x{n} gated {} value {index}: {got} vs {want}",
                            gates.is_some()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn packed_weights_read_back_as_packed() {
        // Every layout: f32 panels, and bf16 pairs for each instruction set's registers;
        // last panels part-filled, and one column.
        let round = |value: f32| half::bf16::from_f32(value).to_f32();
        for isa in Detected::all() {
            for (k, n) in [(1, 1), (3, 17), (5, 40), (2, 100)] {
                let weights = matrix(k, n, 5);
                let f32_panels = Packed::new(k, n, |r, c| weights[r * n + c]);
                let bf16 = Packed::bf16(k, n, isa.lanes(), |r, c| weights[r * n + c]);
                for (r, c) in (0..k).flat_map(|r| (0..n).map(move |c| (r, c))) {
                    let value = weights[r * n + c];
                    assert_eq!(f32_panels.value(r, c).to_bits(), value.to_bits());
                    assert_eq!(
                        bf16.value(r, c).to_bits(),
                        round(value).to_bits(),
                        "{isa:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn input_scaling_gates_each_samples_channels() {
        // Two samples; sample 0's channels gated to 0 but for the first three, sample 1's
        // by factors around 1. The shapes take every way of applying a gate: packed rows (few
        // rows, or many panels; in tiles of 6, 4 and 1 rows, and over three slices of k), rows
        // in place with gated panels of `b` (many rows over one or two panels, in one slice
        // of k or three), and each with partial tiles.
        for (rows, k, n) in [
            (5, 3, 20),
            (200, 37, 20),
            (301, 750, 40),
            (13, 19, 100),
            (23, 750, 100),
        ] {
            let weights = matrix(k, n, 5);
            let packed = Packed::new(k, n, |r, c| weights[r * n + c]);
            let a = matrix(2 * rows, k, 6);
            let scale: Vec<f32> = (0..2 * k)
                .map(|i| match i {
                    0..3 => 1.0,
                    i if i < k => 0.0,
                    i => 0.5 + (i % 7) as f32 * 0.25,
                })
                .collect();
            let bias = vec![0.0; n];
            let epilogue = Epilogue {
                bias: &bias,
                activation: None,
                residual: None,
            };
            for isa in Detected::all() {
                let mut c = vec![0.0; 2 * rows * n];
                parallel(
                    isa,
                    &a,
                    2,
                    Some(&scale),
                    packed.data(),
                    k,
                    n,
                    epilogue,
                    &mut c,
                );
                for i in 0..2 * rows {
                    let factors = &scale[(i / rows) * k..(i / rows + 1) * k];
                    for j in 0..n {
                        let expected: f32 = (0..k)
                            .map(|t| a[i * k + t] * factors[t] * weights[t * n + j])
                            .sum();
                        assert!(
                            (c[i * n + j] - expected).abs() < 1e-4,
                            "{isa:?} {rows}x{k}x{n} [{i}, {j}]: {} vs {expected}",
                            c[i * n + j]
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn partitions_cover_rows_and_panels_and_split_the_wider_operand() {
        for tasks in [1, 2, 4, 8, 32] {
            for rows in [1, 5, 12, 13, 49, 95, 196, 785, 12544] {
                for panels in [1, 2, 6, 40] {
                    let p = Partition::new(tasks, rows, panels, 300);
                    let case = format!("{tasks} tasks, {rows} rows, {panels} panels: {p:?}");
                    assert!(p.row_blocks * p.panel_groups < 2 * tasks, "{case}");
                    // Blocks in order, none empty, covering the rows; all but the last whole
                    // multiples of the quantum, within one quantum of each other.
                    let blocks: Vec<_> = (0..p.row_blocks).map(|i| p.rows_of(i)).collect();
                    assert_eq!(blocks[0].start, 0, "{case}");
                    assert_eq!(blocks[p.row_blocks - 1].end, rows, "{case}");
                    for pair in blocks.windows(2) {
                        assert_eq!(pair[0].end, pair[1].start, "{case}");
                        assert_eq!(pair[0].len() % ROW_QUANTUM, 0, "{case}");
                    }
                    let shortest = blocks.iter().map(|b| b.len()).min().unwrap();
                    let longest = blocks[..p.row_blocks - 1].iter().map(|b| b.len()).max();
                    assert!(shortest > 0, "{case}");
                    assert!(
                        longest.is_none_or(|l| l <= shortest + ROW_QUANTUM),
                        "{case}"
                    );
                    // Groups in order covering the panels, none empty, within one panel of
                    // each other.
                    let groups: Vec<_> = (0..p.panel_groups).map(|i| p.panels_of(i)).collect();
                    assert_eq!(groups[0].start, 0, "{case}");
                    assert_eq!(groups[p.panel_groups - 1].end, panels, "{case}");
                    for pair in groups.windows(2) {
                        assert_eq!(pair[0].end, pair[1].start, "{case}");
                    }
                    let fewest = groups.iter().map(|g| g.len()).min().unwrap();
                    let most = groups.iter().map(|g| g.len()).max().unwrap();
                    assert!(fewest > 0 && most <= fewest + 1, "{case}");
                }
            }
        }
        // A 7x7 map against a wide layer (1.6 MB, the head): every task has all 49 rows and
        // its own panels. A 14x14 expansion's weights (150 KiB) stay shared.
        let shared = Partition::new(4, 196, 15, 80);
        assert_eq!((shared.row_blocks, shared.panel_groups), (4, 1));
        let wide = Partition::new(4, 49, 40, 320);
        assert_eq!((wide.row_blocks, wide.panel_groups), (1, 4));
        assert_eq!(wide.panels_of(3), 30..40);
        // B0's 7x7 projection to 320 channels (10 panels) in 8 tasks: 8 groups of 1 or 2.
        let project = Partition::new(8, 49, 10, 1152);
        let sizes: Vec<_> = (0..8).map(|i| project.panels_of(i).len()).collect();
        assert_eq!(
            (project.panel_groups, sizes),
            (8, vec![1, 1, 1, 2, 1, 1, 1, 2])
        );
        // A 7x7 map against a narrow layer: rows only, the last block taking the rest.
        let narrow = Partition::new(4, 49, 1, 320);
        let blocks: Vec<_> = (0..4).map(|i| narrow.rows_of(i).len()).collect();
        assert_eq!((blocks, narrow.panel_groups), (vec![12, 12, 12, 13], 1));
    }
}
