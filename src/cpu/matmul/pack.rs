//! The two packed operands of [`super`]: a layer's weights in panels of [`NR`] columns,
//! packed once when the plan is made ([`Packed`]), and the activation rows, packed a tile
//! at a time as the product runs ([`pack_tile`]).

use crate::cpu::memory::Aligned;

/// Columns of a packed panel, and lanes of the micro-kernel's accumulator rows.
pub(crate) const NR: usize = 32;

/// A `k x n` right-hand side in panels of [`NR`] columns: panel `p` holds rows `0..k` of
/// columns `p * NR..(p + 1) * NR`, each row's `NR` values contiguous, columns past `n` zero.
/// The values start on a cache line, so no vector load of a row straddles two.
#[derive(Clone, Debug)]
pub(crate) struct Packed {
    k: usize,
    n: usize,
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
        Self { k, n, values }
    }

    /// Rows (the product's depth).
    pub(crate) fn k(&self) -> usize {
        self.k
    }

    /// Columns (the product's outputs).
    pub(crate) fn n(&self) -> usize {
        self.n
    }

    /// The packed values, panel after panel.
    pub(crate) fn data(&self) -> &[f32] {
        &self.values
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
