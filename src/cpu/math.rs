//! The maths every kernel shares: one `1 + e^-x`, and SiLU, sigmoid and ReLU6 on top of it.
//!
//! It is written once, over [`Lanes`]: one f32 (which LLVM vectorises in loops, for
//! whatever features the kernel is compiled with) or a whole AVX2 or AVX-512 register
//! (`isa`'s `activate_register`, which the kernels apply to values still in registers).

use crate::model::activation::Activation;

/// What [`one_plus_exp_minus`] and [`silu`] need of a value or a register of values.
pub(crate) trait Lanes: Copy {
    /// `value` in every lane (of a register like `self`).
    fn splat(self, value: f32) -> Self;
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
    /// `2^n`, where `self` is `n + 1.5 * 2^23` (`n` in -126..=127), which holds `n` in its
    /// low mantissa bits: those bits shifted into the exponent field (everything above
    /// them falls off the top), plus the exponent bias.
    fn exponent_of_rounded(self) -> Self;
}

impl Lanes for f32 {
    #[inline(always)]
    fn splat(self, value: f32) -> Self {
        value
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
    fn exponent_of_rounded(self) -> Self {
        f32::from_bits((self.to_bits() << 23).wrapping_add(127 << 23))
    }
}

/// `1 + e^-x` without branches, so loops over it vectorise: Cody-Waite reduction and a
/// degree-7 polynomial (the coefficients of Cephes' `expf`), evaluated in Estrin's order
/// rather than Horner's, so that its multiply-adds do not each wait on the one before.
/// `x` is clamped to the range where `2^n` is a normal float: above 87.33, `e^-x` is
/// ~1.2e-38 instead of a subnormal or 0, and below -88.37 it is ~2.4e38 instead of
/// infinity (both exact to f32 for SiLU and sigmoid); NaN stays NaN.
///
/// The reduction works on `x` itself, `x = -(n ln 2) + r'` with `e^-x = 2^n e^-r'`, so that
/// no negation comes first: the polynomial's odd coefficients carry the sign instead.
#[inline(always)]
pub(crate) fn one_plus_exp_minus<V: Lanes>(x: V) -> V {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that `n * LN2_HI` is exact for |n| < 2^9.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding it rounds to an integer, which lands in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    // `e^r = 1 + r + r^2 (P[5] + P[4] r + ... + P[0] r^5)`.
    const P: [f32; 6] = [
        1.987_569_1e-4,
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ];

    let one = x.splat(1.0);
    let x = x.clamp(-88.37, 87.33);
    // `n + ROUND`, `n` the integer nearest `-x log2 e`.
    let shifted = x.mul_add(x.splat(-LOG2_E), x.splat(ROUND));
    let n = shifted.sub(x.splat(ROUND));
    // `r = x + n ln 2`, so that `e^-x = 2^n e^-r`.
    let r = n.mul_add(x.splat(LN2_LO), n.mul_add(x.splat(LN2_HI), x));
    let r2 = r.mul(r);
    // The polynomial in `-r`, two coefficients at a time.
    let high = r.mul_add(x.splat(-P[0]), x.splat(P[1]));
    let middle = r.mul_add(x.splat(-P[2]), x.splat(P[3]));
    let low = r.mul_add(x.splat(-P[4]), x.splat(P[5]));
    let q = high.mul_add(r2, middle).mul_add(r2, low);
    let e_minus_r = q.mul_add(r2, one.sub(r));
    e_minus_r.mul_add(shifted.exponent_of_rounded(), one)
}

/// SiLU, `x * sigmoid(x)`, as `x / (1 + e^-x)`: one pass less, and for x -> -inf the
/// quotient goes to -0, the right limit.
#[inline(always)]
pub(crate) fn silu<V: Lanes>(x: V) -> V {
    x.div(one_plus_exp_minus(x))
}

/// The logistic sigmoid, `1 / (1 + e^-x)`.
#[inline(always)]
pub(crate) fn sigmoid<V: Lanes>(x: V) -> V {
    x.splat(1.0).div(one_plus_exp_minus(x))
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
    fn one_plus_exp_minus_is_within_two_ulp_over_the_normal_range() {
        // 200k points over [-87, 87], against f64's 1 + e^-x rounded to f32, in the scalar
        // form (two roundings per multiply-add; the registers' fused form is checked
        // through SiLU below).
        let xs: Vec<f32> = (0..200_000)
            .map(|i| -87.0 + 174.0 * i as f32 / 200_000.0)
            .collect();
        let mut worst = 0;
        for &x in &xs {
            let expected = (1.0 + (-(x as f64)).exp()) as f32;
            worst = worst.max(ulp_distance(one_plus_exp_minus(x), expected));
        }
        assert!(worst <= 2, "scalar: worst error {worst} ulp");
    }

    #[test]
    fn one_plus_exp_minus_clamps_and_keeps_nan() {
        // e^-x clamped to ~1.2e-38 above 87.33, and to ~2.4e38 below -88.37.
        assert_eq!(one_plus_exp_minus(1000.0f32), 1.0);
        let huge = one_plus_exp_minus(-1000.0f32);
        assert!(huge.is_finite() && huge > 2.0e38, "{huge}");
        assert!(one_plus_exp_minus(f32::NAN).is_nan());
        assert_eq!(one_plus_exp_minus(0.0f32), 2.0);
        // Every n the clamped range reaches builds its 2^n in range (no wrap to 0 or inf).
        for i in -88..=88 {
            let x = i as f32;
            let expected = (1.0 + (-(x as f64)).exp()) as f32;
            assert!(
                ulp_distance(one_plus_exp_minus(x), expected) <= 2,
                "1 + e^-({x}) = {}",
                one_plus_exp_minus(x)
            );
        }
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
                    // e^-x clamped: tiny and not positive instead of subnormal.
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
