//! The maths every kernel shares: one `exp`, and SiLU, sigmoid and ReLU6 on top of it.
//!
//! `exp` is written once, over [`Lanes`]: one f32 (which LLVM vectorises in loops, for
//! whatever features the kernel is compiled with) or a whole AVX-512 register
//! (`isa::Avx512`'s SiLU, whose division by a reciprocal estimate LLVM would not find).

use crate::model::activation::Activation;

/// What [`exp`] and [`silu`] need of a value or a register of values.
pub(crate) trait Lanes: Copy {
    /// `value` in every lane (of a register like `self`).
    fn splat(self, value: f32) -> Self;
    /// `self + other`.
    fn add(self, other: Self) -> Self;
    /// `self - other`.
    fn sub(self, other: Self) -> Self;
    /// `self * other`.
    fn mul(self, other: Self) -> Self;
    /// `self * factor + addend` (fused where the lanes are a register with FMA).
    fn mul_add(self, factor: Self, addend: Self) -> Self;
    /// `self / divisor` (within 2 ulp).
    fn div(self, divisor: Self) -> Self;
    /// `self` clamped to `low..=high` (NaN stays NaN).
    fn clamp(self, low: f32, high: f32) -> Self;
    /// The float whose exponent field is `bits(self) - bits(minus) + plus` (the rest zero):
    /// `2^n` when `self` is `n + minus` with `minus` the rounding constant.
    fn exponent_bits_add(self, minus: f32, plus: i32) -> Self;
}

impl Lanes for f32 {
    #[inline(always)]
    fn splat(self, value: f32) -> Self {
        value
    }
    #[inline(always)]
    fn add(self, other: Self) -> Self {
        self + other
    }
    #[inline(always)]
    fn sub(self, other: Self) -> Self {
        self - other
    }
    #[inline(always)]
    fn mul(self, other: Self) -> Self {
        self * other
    }
    #[inline(always)]
    fn mul_add(self, factor: Self, addend: Self) -> Self {
        // Two roundings: `f32::mul_add` is a library call on CPUs without FMA.
        self * factor + addend
    }
    #[inline(always)]
    fn div(self, divisor: Self) -> Self {
        self / divisor
    }
    #[inline(always)]
    fn clamp(self, low: f32, high: f32) -> Self {
        f32::clamp(self, low, high)
    }
    #[inline(always)]
    fn exponent_bits_add(self, minus: f32, plus: i32) -> Self {
        let n = self.to_bits().wrapping_sub(minus.to_bits());
        f32::from_bits(n.wrapping_add(plus as u32) << 23)
    }
}

/// `e^x` without branches, so loops over it vectorise (Cody-Waite reduction and a degree-6
/// polynomial, the coefficients of Cephes' `expf`). Inputs are clamped to the range where
/// `2^n` is a normal float: below -87.33 the result is ~1.2e-38 instead of a subnormal or 0,
/// above 88.37 it is ~2.4e38 instead of infinity; NaN stays NaN. SiLU and sigmoid only use
/// it as `1 + e^-x`, where both clamps are exact to f32.
#[inline(always)]
pub(crate) fn exp<V: Lanes>(x: V) -> V {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that `n * LN2_HI` is exact for |n| < 2^9.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding it rounds to an integer, which lands in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    const POLYNOMIAL: [f32; 6] = [
        1.987_569_1e-4,
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ];

    let x = x.clamp(-87.33, 88.37);
    let shifted = x.mul_add(x.splat(LOG2_E), x.splat(ROUND));
    let n = shifted.sub(x.splat(ROUND));
    let r = n.mul_add(x.splat(-LN2_HI), x).sub(n.mul(x.splat(LN2_LO)));
    let mut p = x.splat(POLYNOMIAL[0]);
    for c in &POLYNOMIAL[1..] {
        p = p.mul_add(r, x.splat(*c));
    }
    let e_r = p.mul(r).mul_add(r, r).add(x.splat(1.0));
    // 2^n: n + 127 in the exponent field. `shifted`'s bits are ROUND's plus n.
    e_r.mul(shifted.exponent_bits_add(ROUND, 127))
}

/// SiLU, `x * sigmoid(x)`, as `x / (1 + e^-x)`: one pass less, and for x -> -inf the
/// quotient goes to -0, the right limit.
#[inline(always)]
pub(crate) fn silu<V: Lanes>(x: V) -> V {
    x.div(x.splat(1.0).add(exp(x.splat(0.0).sub(x))))
}

/// The logistic sigmoid, `1 / (1 + e^-x)`.
#[inline(always)]
pub(crate) fn sigmoid<V: Lanes>(x: V) -> V {
    x.splat(1.0).div(x.splat(1.0).add(exp(x.splat(0.0).sub(x))))
}

/// `activation` on one value or one register of values ([`Lanes`]).
#[inline(always)]
pub(crate) fn activate_lanes<V: Lanes>(x: V, activation: Option<Activation>) -> V {
    match activation {
        Some(Activation::SiLU) => silu(x),
        Some(Activation::ReLU6) => x.clamp(0.0, 6.0),
        None => x,
    }
}

/// `activation` over `L` values, value by value.
#[inline(always)]
pub(crate) fn activate<const L: usize>(values: &mut [f32; L], activation: Option<Activation>) {
    activate_slice(values, activation);
}

/// `activation` over a slice, value by value. (Plain loops, no closures: a closure is a
/// function of its own, and one left out of line would lose the kernel's target features.)
#[inline(always)]
pub(crate) fn activate_slice(values: &mut [f32], activation: Option<Activation>) {
    match activation {
        Some(Activation::SiLU) => {
            for value in values {
                *value = silu(*value);
            }
        }
        Some(Activation::ReLU6) => {
            for value in values {
                *value = value.clamp(0.0, 6.0);
            }
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::isa::{Detected, Isa, Kernel};

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
        assert!(exp(-1000.0f32) > 0.0 && exp(-1000.0f32) < 1.2e-38);
        assert!(exp(1000.0f32).is_finite() && exp(1000.0f32) > 2.0e38);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(0.0f32), 1.0);
    }

    #[test]
    fn scalar_silu_and_sigmoid_match_the_definitions() {
        for i in 0..1000 {
            let x = (i as f32 - 500.0) / 25.0;
            let exact = 1.0 / (1.0 + (-(x as f64)).exp());
            assert!((sigmoid(x) as f64 - exact).abs() < 1e-7, "sigmoid({x})");
            assert!(
                (silu(x) as f64 - x as f64 * exact).abs() < 2e-6,
                "silu({x})"
            );
        }
        assert!(silu(-1e4f32).abs() < 1e-30);
        assert_eq!(silu(1e4f32), 1e4);
        assert!(silu(f32::NAN).is_nan());
    }

    /// Each instruction set's 32-lane SiLU (AVX-512's in registers, the others value by
    /// value) over `values`.
    struct SiluLanes<'a>(&'a mut [[f32; 32]]);

    impl Kernel for SiluLanes<'_> {
        type Output = ();
        #[inline(always)]
        fn run<I: Isa>(self, isa: I) {
            for values in self.0 {
                isa.activate(values, Some(Activation::SiLU));
            }
        }
    }

    #[test]
    fn every_instruction_sets_silu_is_within_two_ulp() {
        let xs: Vec<f32> = (0..4000).map(|i| (i as f32 - 2000.0) / 20.0).collect();
        for isa in Detected::all() {
            let mut values: Vec<[f32; 32]> = xs
                .chunks_exact(32)
                .map(|chunk| chunk.try_into().unwrap())
                .collect();
            isa.run(SiluLanes(&mut values));
            for (&x, &got) in xs.iter().zip(values.iter().flatten()) {
                if x < -87.0 {
                    // Clamped like `exp`: tiny and not positive instead of subnormal.
                    assert!(got <= 0.0 && got > -1e-30, "{isa:?}: silu({x}) = {got}");
                    continue;
                }
                let exact = x as f64 / (1.0 + (-(x as f64)).exp());
                let tolerance = 2.0 * f32::EPSILON as f64 * exact.abs().max(1e-30);
                assert!(
                    (got as f64 - exact).abs() <= tolerance,
                    "{isa:?}: silu({x}) = {got}"
                );
            }
            let mut special = [[0.0f32; 32]];
            special[0][..4].copy_from_slice(&[f32::NAN, -1e4, 1e4, -0.0]);
            isa.run(SiluLanes(&mut special));
            let special = special[0];
            assert!(special[0].is_nan(), "{isa:?}");
            assert!(
                special[1] <= 0.0 && special[1] > -1e-30,
                "{isa:?}: {}",
                special[1]
            );
            assert_eq!(special[2], 1e4, "{isa:?}");
            assert_eq!(special[3], 0.0, "{isa:?}");
        }
    }

    /// `activation` on each instruction set's registers ([`Isa::activate_register`]) over
    /// `values` (a multiple of 16 long).
    struct RegisterActivation<'a>(&'a mut [f32], Option<Activation>);

    impl Kernel for RegisterActivation<'_> {
        type Output = ();
        #[inline(always)]
        fn run<I: Isa>(self, isa: I) {
            for chunk in self.0.chunks_exact_mut(I::LANES) {
                // SAFETY: `chunk` holds LANES values.
                unsafe {
                    let value = isa.activate_register(isa.load(chunk.as_ptr()), self.1);
                    isa.store(chunk.as_mut_ptr(), value);
                }
            }
        }
    }

    #[test]
    fn register_activations_match_the_scalar_ones_and_keep_nan() {
        let mut xs: Vec<f32> = (0..64).map(|i| (i as f32 - 32.0) / 4.0).collect();
        xs[5] = f32::NAN;
        xs[40] = f32::NAN;
        for activation in [None, Some(Activation::ReLU6), Some(Activation::SiLU)] {
            let mut expected = xs.clone();
            activate_slice(&mut expected, activation);
            for isa in Detected::all() {
                let mut got = xs.clone();
                isa.run(RegisterActivation(&mut got, activation));
                for ((&x, &got), &want) in xs.iter().zip(&got).zip(&expected) {
                    let close = (got - want).abs() <= 2.0 * f32::EPSILON * want.abs();
                    assert!(
                        close || (got.is_nan() && want.is_nan()),
                        "{isa:?} {activation:?}({x}) = {got}, not {want}"
                    );
                }
            }
        }
    }
}
