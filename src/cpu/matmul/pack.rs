//! The two packed operands of [`super`]: a layer's weights in panels of [`NR`] columns,
//! packed once when the plan is made ([`Packed`]), and the activation rows, packed a tile
//! at a time as the product runs ([`pack_tile`]).

use crate::cpu::isa::{Isa, RowBases};
use crate::cpu::memory::Aligned;

/// Columns of a packed panel, and lanes of the micro-kernel's accumulator rows.
pub(crate) const NR: usize = 32;

/// A `k x n` right-hand side in panels of [`NR`] columns: panel `p` holds rows `0..k` of
/// columns `p * NR..(p + 1) * NR`, each row's `NR` values contiguous, columns past `n` zero.
/// The values start on a cache line, so no vector load of a row straddles two.
///
/// In bf16 ([`Packed::bf16`]) a row of a panel is `NR / 2` words of two values each, laid
/// out for registers of `lanes` values: in each group of `2 * lanes` columns, word `i`
/// holds column `i` in its low half and column `lanes + i` in its high half, so that one
/// load and two bit operations give the group's two registers ([`Bf16Words`]).
#[derive(Clone, Debug)]
pub(crate) struct Packed {
    k: usize,
    n: usize,
    /// The register width the bf16 pairs are laid out for; `None` in f32.
    bf16_lanes: Option<usize>,
    /// f32 values, or bf16 pairs (as the bits of f32 words).
    values: Aligned,
}

impl Packed {
    /// Packs `value(row, column)` for `row < k`, `column < n`.
    pub(crate) fn new(k: usize, n: usize, value: impl Fn(usize, usize) -> f32) -> Self {
        let mut values = Aligned::zeroed(n.div_ceil(NR) * k * NR);
        for (index, slot) in values.iter_mut().enumerate() {
            let (panel, row, lane) = (index / (k * NR), index / NR % k, index % NR);
            let column = panel * NR + lane;
            if column < n {
                *slot = value(row, column);
            }
        }
        Self {
            k,
            n,
            bf16_lanes: None,
            values,
        }
    }

    /// Packs `value(row, column)` rounded to bf16 (to nearest, ties to even), in pairs for
    /// registers of `lanes` values (a power of two up to `NR / 2`).
    pub(crate) fn bf16(
        k: usize,
        n: usize,
        lanes: usize,
        value: impl Fn(usize, usize) -> f32,
    ) -> Self {
        assert!(
            lanes.is_power_of_two() && 2 * lanes <= NR,
            "{lanes} lanes a register"
        );
        let bits = |row: usize, column: usize| {
            let value = if column < n { value(row, column) } else { 0.0 };
            u32::from(half::bf16::from_f32(value).to_bits())
        };
        let words_per_row = NR / 2;
        let mut values = Aligned::zeroed(n.div_ceil(NR) * k * words_per_row);
        for (index, slot) in values.iter_mut().enumerate() {
            let (panel, row, word) = (
                index / (k * words_per_row),
                index / words_per_row % k,
                index % words_per_row,
            );
            let (group, lane) = (word / lanes, word % lanes);
            let column = panel * NR + group * 2 * lanes + lane;
            *slot = f32::from_bits(bits(row, column) | bits(row, column + lanes) << 16);
        }
        Self {
            k,
            n,
            bf16_lanes: Some(lanes),
            values,
        }
    }

    /// Rows (the product's depth).
    pub(crate) fn k(&self) -> usize {
        self.k
    }

    /// Columns (the product's outputs).
    pub(crate) fn n(&self) -> usize {
        self.n
    }

    /// The value packed for `row < k`, `column < n` (in bf16, the rounded value).
    pub(crate) fn value(&self, row: usize, column: usize) -> f32 {
        assert!(
            row < self.k && column < self.n,
            "({row}, {column}) outside {}x{}",
            self.k,
            self.n
        );
        let (panel, lane) = (column / NR, column % NR);
        match self.bf16_lanes {
            None => self.values[(panel * self.k + row) * NR + lane],
            Some(lanes) => {
                let (group, within) = (lane / (2 * lanes), lane % (2 * lanes));
                let word = group * lanes + within % lanes;
                let bits = self.values[(panel * self.k + row) * (NR / 2) + word].to_bits();
                let half = if within < lanes {
                    bits & 0xffff
                } else {
                    bits >> 16
                };
                f32::from_bits(half << 16)
            }
        }
    }

    /// The packed words, panel after panel, and how to read them.
    pub(crate) fn data(&self) -> Weights<'_> {
        Weights {
            words: &self.values,
            bf16_lanes: self.bf16_lanes,
        }
    }
}

/// A packed right-hand side as the products read it ([`Packed::data`]): its words, and,
/// for bf16 pairs, the register width they are laid out for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Weights<'a> {
    pub(crate) words: &'a [f32],
    pub(crate) bf16_lanes: Option<usize>,
}

impl Weights<'_> {
    /// Words a panel row of `NR` columns takes.
    pub(crate) fn row_words(self) -> usize {
        match self.bf16_lanes {
            None => NR,
            Some(_) => NR / 2,
        }
    }
}

/// How the kernel reads the words of a packed panel: [`F32Words`] or [`Bf16Words`].
pub(crate) trait PanelWords: Copy {
    /// Columns a word holds.
    const COLUMNS: usize;

    /// The `R` registers (1 or 2) of a group's columns in one panel row, from the group's
    /// first word `at`.
    ///
    /// # Safety
    ///
    /// `at` must be valid for reads of the group's words (`2 * LANES / COLUMNS`).
    unsafe fn registers<I: Isa, const R: usize>(isa: I, at: *const f32) -> [I::V; R];

    /// [`Isa::tile_steps`] (or its bf16 form) for these words; `b_stride` in words.
    ///
    /// # Safety
    ///
    /// As [`Isa::tile_steps`].
    unsafe fn tile_steps<I: Isa, const MR: usize, const R: usize>(
        isa: I,
        rows: RowBases,
        b: *const f32,
        b_stride: usize,
        steps: usize,
        sums: &mut [[I::V; R]; MR],
    ) -> bool;
}

/// Panels of f32 values.
#[derive(Clone, Copy, Debug)]
pub(crate) struct F32Words;

impl PanelWords for F32Words {
    const COLUMNS: usize = 1;

    #[inline(always)]
    unsafe fn registers<I: Isa, const R: usize>(isa: I, at: *const f32) -> [I::V; R] {
        let mut registers = [isa.zero(); R];
        for (j, register) in registers.iter_mut().enumerate() {
            // SAFETY: the group's `R * LANES` values, the caller's word.
            *register = unsafe { isa.load(at.add(j * I::LANES)) };
        }
        registers
    }

    #[inline(always)]
    unsafe fn tile_steps<I: Isa, const MR: usize, const R: usize>(
        isa: I,
        rows: RowBases,
        b: *const f32,
        b_stride: usize,
        steps: usize,
        sums: &mut [[I::V; R]; MR],
    ) -> bool {
        // SAFETY: passed on from the caller.
        unsafe { isa.tile_steps(rows, b, b_stride, steps, sums) }
    }
}

/// Panels of bf16 pairs ([`Packed::bf16`]), laid out for the instruction set's registers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bf16Words;

impl PanelWords for Bf16Words {
    const COLUMNS: usize = 2;

    #[inline(always)]
    unsafe fn registers<I: Isa, const R: usize>(isa: I, at: *const f32) -> [I::V; R] {
        // SAFETY: the group's `LANES` words, the caller's word.
        let pair = unsafe { isa.load_bf16_pairs(at.cast()) };
        let mut registers = [isa.zero(); R];
        for (register, value) in registers.iter_mut().zip(pair) {
            *register = value;
        }
        registers
    }

    #[inline(always)]
    unsafe fn tile_steps<I: Isa, const MR: usize, const R: usize>(
        isa: I,
        rows: RowBases,
        b: *const f32,
        b_stride: usize,
        steps: usize,
        sums: &mut [[I::V; R]; MR],
    ) -> bool {
        // A group of one register still has its pair's words (the panel is whole), but the
        // hand-written loops are for two.
        // SAFETY: passed on from the caller.
        R == 2 && unsafe { isa.tile_steps_bf16(rows, b.cast(), b_stride, steps, sums) }
    }
}

/// Rows `first..first + MR` of `a` (those below `rows`; zeros past it), columns
/// `k_start..k_start + depth` (`depth = packed.len() / MR`), each column times its `a_scale`
/// if given, into `packed` step by step: `packed[step * MR + r] = a[first + r][k_start + step]`.
#[inline(always)]
pub(crate) fn pack_tile<const MR: usize>(
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
