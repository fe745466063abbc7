//! Which vector instructions the kernels may use, as types.
//!
//! An instruction set is a zero-sized token ([`Avx512`], [`Avx2Fma`], [`Portable`]) that
//! only [`Detected::new`] can make, after asking the CPU (as the `gemm` crate's `simd`
//! tokens and MLAS's CPUID-filled function table do). Kernels are generic over [`Isa`] and
//! take the token as an argument, so code that executes AVX-512 cannot be instantiated
//! without proof that the CPU has it; the token's methods (and the one `#[target_feature]`
//! function only they call, AVX2's hand-written tile loop) are the only place that proof is
//! turned into an `unsafe` intrinsic call.
//!
//! A kernel also has to be *compiled* for the instructions to be fast: a [`Kernel`]'s
//! `run` is `#[inline(always)]` and [`Detected::run`] calls it from a function compiled
//! with the token's target features, so the whole kernel, the token's methods included,
//! is compiled for them. (A closure would not do: its body is a function of its own,
//! compiled without the features.)

use crate::model::activation::Activation;

/// An instruction set the CPU was found to have; the methods kernels build on.
///
/// `V` is a register of [`LANES`](Self::LANES) f32 values. The tile kernel keeps
/// `2 x MR` of them as accumulators.
pub(crate) trait Isa: Copy + Send + Sync + 'static {
    /// f32 values in one register.
    const LANES: usize;
    /// Rows of a GEMM tile (`matmul`): as many as the registers hold with `2 x TILE_ROWS`
    /// accumulators, two panel registers and a broadcast.
    const TILE_ROWS: usize;
    /// A vector register.
    type V: Copy;

    /// A register of zeros.
    fn zero(self) -> Self::V;

    /// `value` in every lane.
    fn splat(self, value: f32) -> Self::V;

    /// [`LANES`](Self::LANES) values from `src`.
    ///
    /// # Safety
    ///
    /// `src` must be valid for reads of `LANES` f32 values.
    unsafe fn load(self, src: *const f32) -> Self::V;

    /// Stores `value` as [`LANES`](Self::LANES) values at `dst`.
    ///
    /// # Safety
    ///
    /// `dst` must be valid for writes of `LANES` f32 values.
    unsafe fn store(self, dst: *mut f32, value: Self::V);

    /// Two registers from [`LANES`](Self::LANES) words of bf16 pairs at `src`: the first
    /// of the values each word's low halves, the second its high halves, both as f32 (a
    /// bf16 is an f32's top 16 bits, so each is exact).
    ///
    /// # Safety
    ///
    /// `src` must be valid for reads of `LANES` u32 words.
    unsafe fn load_bf16_pairs(self, src: *const u32) -> [Self::V; 2];

    /// `a * b + c`, lane by lane.
    fn fmadd(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;

    /// `a * b + c` on one value: fused where the instruction set has FMA.
    fn mul_add(self, a: f32, b: f32, c: f32) -> f32;

    /// `a + b`, lane by lane (a multiply-add by one: exact, one instruction).
    #[inline(always)]
    fn add(self, a: Self::V, b: Self::V) -> Self::V {
        self.fmadd(self.splat(1.0), a, b)
    }

    /// `activation` on a register's lanes, as [`math::activate`](super::math::activate)
    /// computes it value by value.
    fn activate_register(self, value: Self::V, activation: Option<Activation>) -> Self::V;

    /// Asks for the cache line at `ptr` to be brought in; a hint, never a fault.
    #[inline(always)]
    fn prefetch(self, ptr: *const f32) {
        let _ = ptr;
    }

    /// The tile kernel's steps written out register by register, where the instruction set
    /// has them: for every step `s < steps`, `sums[r][j] += a(s, r) * b[s * b_stride + j *
    /// LANES..]` (a register of columns), row `r`'s values at `rows`. Returns false, with
    /// `sums` untouched, for the tiles it has no such loop for; the caller then runs its own
    /// loop. (AVX2 has one for its 6 x 2 tile: with 12 accumulators, 2 columns and a
    /// broadcast in its 16 registers, LLVM's allocator spilled an accumulator in some of
    /// the loop's copies.)
    ///
    /// # Safety
    ///
    /// `rows` must be valid for reads of `MR` rows of `steps` values, and `b` of `steps`
    /// rows of `R * LANES` values at stride `b_stride`.
    #[inline(always)]
    unsafe fn tile_steps<const MR: usize, const R: usize>(
        self,
        rows: RowBases,
        b: *const f32,
        b_stride: usize,
        steps: usize,
        sums: &mut [[Self::V; R]; MR],
    ) -> bool {
        let _ = (rows, b, b_stride, steps, sums);
        false
    }

    /// [`tile_steps`](Self::tile_steps) for a panel of bf16 pairs: `b` of `steps` rows of
    /// `LANES` words ([`load_bf16_pairs`](Self::load_bf16_pairs)) at stride `b_stride`
    /// words, the group's two registers. Returns false, as `tile_steps` does, where the
    /// instruction set has no such loop.
    ///
    /// # Safety
    ///
    /// As [`tile_steps`](Self::tile_steps), with `b` valid for `steps` rows of `LANES` words.
    #[inline(always)]
    unsafe fn tile_steps_bf16<const MR: usize, const R: usize>(
        self,
        rows: RowBases,
        b: *const u32,
        b_stride: usize,
        steps: usize,
        sums: &mut [[Self::V; R]; MR],
    ) -> bool {
        let _ = (rows, b, b_stride, steps, sums);
        false
    }

    /// `activation` over `L` values: a register at a time
    /// ([`activate_register`](Self::activate_register)) where `L` is a whole number of
    /// registers, else value by value ([`math::activate`](super::math::activate), which
    /// LLVM vectorises with the features the kernel is compiled for). Value by value, LLVM
    /// keeps a tile's values on the stack and divides with a slow division.
    #[inline(always)]
    fn activate<const L: usize>(self, values: &mut [f32; L], activation: Option<Activation>) {
        if activation.is_none() {
            return;
        }
        if !L.is_multiple_of(Self::LANES) {
            return super::math::activate(values, activation);
        }
        for chunk in values.chunks_exact_mut(Self::LANES) {
            // SAFETY: `chunk` holds LANES values.
            unsafe {
                let value = self.activate_register(self.load(chunk.as_ptr()), activation);
                self.store(chunk.as_mut_ptr(), value);
            }
        }
    }
}

/// Where a tile's row values are: row `r`'s value at step `s` is at
/// `base + r * stride + s * step` (packed rows: stride 1, step the tile's rows; rows read
/// in place: the row stride, step 1).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RowBases {
    pub(crate) base: *const f32,
    pub(crate) stride: usize,
    pub(crate) step: usize,
}

/// A kernel to run with the instruction set the CPU has: [`Detected::run`] compiles
/// [`run`](Self::run) once per [`Isa`] with that set's target features.
pub(crate) trait Kernel {
    /// What the kernel returns.
    type Output;

    /// Runs the kernel with `isa`. Implementations must be `#[inline(always)]`, so that
    /// they are compiled into the caller that has the target features.
    fn run<I: Isa>(self, isa: I) -> Self::Output;
}

/// The widest instruction set this CPU has, detected once ([`Detected::new`]) and kept by
/// whoever runs kernels (the inference plan).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Detected {
    /// AVX-512F (with AVX2 and FMA).
    Avx512(Avx512),
    /// AVX2 and FMA.
    Avx2Fma(Avx2Fma),
    /// Whatever the build's baseline is (SSE2 on x86-64; NEON on aarch64).
    Portable(Portable),
}

impl Detected {
    /// Asks the CPU.
    pub(crate) fn new() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if let Some(isa) = Avx512::detect() {
                return Detected::Avx512(isa);
            }
            if let Some(isa) = Avx2Fma::detect() {
                return Detected::Avx2Fma(isa);
            }
        }
        Detected::Portable(Portable)
    }

    /// Every instruction set this CPU has, widest first: for tests that hold the builds to
    /// each other.
    #[cfg(test)]
    pub(crate) fn all() -> Vec<Self> {
        let mut all = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            all.extend(Avx512::detect().map(Detected::Avx512));
            all.extend(Avx2Fma::detect().map(Detected::Avx2Fma));
        }
        all.push(Detected::Portable(Portable));
        all
    }

    /// f32 values in one of its registers ([`Isa::LANES`]).
    pub(crate) fn lanes(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Detected::Avx512(_) => Avx512::LANES,
            #[cfg(target_arch = "x86_64")]
            Detected::Avx2Fma(_) => Avx2Fma::LANES,
            #[cfg(not(target_arch = "x86_64"))]
            Detected::Avx512(isa) => match isa.0 {},
            #[cfg(not(target_arch = "x86_64"))]
            Detected::Avx2Fma(isa) => match isa.0 {},
            Detected::Portable(_) => Portable::LANES,
        }
    }

    /// Runs `kernel` compiled for this instruction set.
    #[inline]
    pub(crate) fn run<K: Kernel>(self, kernel: K) -> K::Output {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: an `Avx512` token exists only if the CPU has AVX-512F, AVX2 and FMA
            // (`Avx512::detect`), the features `with_avx512` is compiled for.
            Detected::Avx512(isa) => unsafe { x86::with_avx512(isa, kernel) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: an `Avx2Fma` token exists only if the CPU has AVX2 and FMA.
            Detected::Avx2Fma(isa) => unsafe { x86::with_avx2_fma(isa, kernel) },
            #[cfg(not(target_arch = "x86_64"))]
            Detected::Avx512(isa) => match isa.0 {},
            #[cfg(not(target_arch = "x86_64"))]
            Detected::Avx2Fma(isa) => match isa.0 {},
            Detected::Portable(isa) => kernel.run(isa),
        }
    }
}

/// Never constructed: the private field of the x86 tokens on other architectures.
#[cfg(not(target_arch = "x86_64"))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Never {}

/// Proof that the CPU has AVX-512F, AVX2 and FMA. Made only by detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Avx512(
    #[cfg(target_arch = "x86_64")] (),
    #[cfg(not(target_arch = "x86_64"))] Never,
);

/// Proof that the CPU has AVX2 and FMA. Made only by detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Avx2Fma(
    #[cfg(target_arch = "x86_64")] (),
    #[cfg(not(target_arch = "x86_64"))] Never,
);

/// No wide instructions assumed: plain Rust that LLVM vectorises for the build's baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Portable;

/// Lanes of the portable "register": an array that LLVM keeps in baseline registers.
const PORTABLE_LANES: usize = 8;

impl Isa for Portable {
    const LANES: usize = PORTABLE_LANES;
    const TILE_ROWS: usize = 4;
    type V = [f32; PORTABLE_LANES];

    #[inline(always)]
    fn zero(self) -> Self::V {
        [0.0; PORTABLE_LANES]
    }

    #[inline(always)]
    fn splat(self, value: f32) -> Self::V {
        [value; PORTABLE_LANES]
    }

    #[inline(always)]
    unsafe fn load(self, src: *const f32) -> Self::V {
        // SAFETY: the caller vouches for LANES readable values at `src`; `read_unaligned`
        // takes any alignment.
        unsafe { src.cast::<Self::V>().read_unaligned() }
    }

    #[inline(always)]
    unsafe fn store(self, dst: *mut f32, value: Self::V) {
        // SAFETY: the caller vouches for LANES writable values at `dst`.
        unsafe { dst.cast::<Self::V>().write_unaligned(value) }
    }

    #[inline(always)]
    unsafe fn load_bf16_pairs(self, src: *const u32) -> [Self::V; 2] {
        // SAFETY: the caller vouches for LANES readable words at `src`.
        let words = unsafe { src.cast::<[u32; PORTABLE_LANES]>().read_unaligned() };
        [
            words.map(|word| f32::from_bits(word << 16)),
            words.map(|word| f32::from_bits(word & 0xffff_0000)),
        ]
    }

    #[inline(always)]
    fn fmadd(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        core::array::from_fn(|lane| a[lane] * b[lane] + c[lane])
    }

    #[inline(always)]
    fn mul_add(self, a: f32, b: f32, c: f32) -> f32 {
        // Not `f32::mul_add`: without FMA instructions that is a slow library call.
        a * b + c
    }

    #[inline(always)]
    fn activate_register(self, value: Self::V, activation: Option<Activation>) -> Self::V {
        let mut value = value;
        super::math::activate(&mut value, activation);
        value
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Avx2Fma, Avx512, Isa, Kernel, RowBases};
    use crate::cpu::math;
    use crate::model::activation::Activation;

    impl Avx512 {
        pub(super) fn detect() -> Option<Self> {
            let has = is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma");
            has.then_some(Avx512(()))
        }
    }

    impl Avx2Fma {
        pub(super) fn detect() -> Option<Self> {
            let has = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            has.then_some(Avx2Fma(()))
        }
    }

    /// `kernel` compiled for AVX-512.
    ///
    /// # Safety
    ///
    /// The CPU must have AVX-512F, AVX2 and FMA (which `isa` proves).
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn with_avx512<K: Kernel>(isa: Avx512, kernel: K) -> K::Output {
        kernel.run(isa)
    }

    /// `kernel` compiled for AVX2 and FMA.
    ///
    /// # Safety
    ///
    /// The CPU must have AVX2 and FMA (which `isa` proves).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn with_avx2_fma<K: Kernel>(isa: Avx2Fma, kernel: K) -> K::Output {
        kernel.run(isa)
    }

    impl Isa for Avx512 {
        const LANES: usize = 16;
        const TILE_ROWS: usize = 12;
        type V = __m512;

        #[inline(always)]
        fn prefetch(self, ptr: *const f32) {
            // SAFETY: a prefetch is a hint: it never faults, whatever the address.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(ptr.cast()) }
        }

        #[inline(always)]
        fn zero(self) -> __m512 {
            // SAFETY: `self` proves AVX-512F.
            unsafe { _mm512_setzero_ps() }
        }

        #[inline(always)]
        fn splat(self, value: f32) -> __m512 {
            // SAFETY: `self` proves AVX-512F.
            unsafe { _mm512_set1_ps(value) }
        }

        #[inline(always)]
        unsafe fn load(self, src: *const f32) -> __m512 {
            // SAFETY: `self` proves AVX-512F; the caller vouches for 16 values at `src`.
            unsafe { _mm512_loadu_ps(src) }
        }

        #[inline(always)]
        unsafe fn store(self, dst: *mut f32, value: __m512) {
            // SAFETY: `self` proves AVX-512F; the caller vouches for 16 values at `dst`.
            unsafe { _mm512_storeu_ps(dst, value) }
        }

        #[inline(always)]
        unsafe fn load_bf16_pairs(self, src: *const u32) -> [__m512; 2] {
            // SAFETY: `self` proves AVX-512F; the caller vouches for 16 words at `src`.
            unsafe {
                let words = _mm512_loadu_si512(src.cast());
                let high = _mm512_and_si512(words, _mm512_set1_epi32(0xffff_0000_u32 as i32));
                [
                    _mm512_castsi512_ps(_mm512_slli_epi32::<16>(words)),
                    _mm512_castsi512_ps(high),
                ]
            }
        }

        #[inline(always)]
        fn fmadd(self, a: __m512, b: __m512, c: __m512) -> __m512 {
            // SAFETY: `self` proves AVX-512F.
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }

        #[inline(always)]
        fn mul_add(self, a: f32, b: f32, c: f32) -> f32 {
            // Compiled with FMA (the kernel runs under `with_avx512`): one instruction.
            a.mul_add(b, c)
        }

        #[inline(always)]
        fn activate_register(self, value: __m512, activation: Option<Activation>) -> __m512 {
            math::activate_lanes(Zmm(self, value), activation).1
        }
    }

    impl Isa for Avx2Fma {
        const LANES: usize = 8;
        const TILE_ROWS: usize = 6;
        type V = __m256;

        #[inline(always)]
        fn prefetch(self, ptr: *const f32) {
            // SAFETY: a prefetch is a hint: it never faults, whatever the address.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(ptr.cast()) }
        }

        #[inline(always)]
        fn zero(self) -> __m256 {
            // SAFETY: `self` proves AVX2.
            unsafe { _mm256_setzero_ps() }
        }

        #[inline(always)]
        fn splat(self, value: f32) -> __m256 {
            // SAFETY: `self` proves AVX2.
            unsafe { _mm256_set1_ps(value) }
        }

        #[inline(always)]
        unsafe fn load(self, src: *const f32) -> __m256 {
            // SAFETY: `self` proves AVX2; the caller vouches for 8 values at `src`.
            unsafe { _mm256_loadu_ps(src) }
        }

        #[inline(always)]
        unsafe fn store(self, dst: *mut f32, value: __m256) {
            // SAFETY: `self` proves AVX2; the caller vouches for 8 values at `dst`.
            unsafe { _mm256_storeu_ps(dst, value) }
        }

        #[inline(always)]
        unsafe fn load_bf16_pairs(self, src: *const u32) -> [__m256; 2] {
            // SAFETY: `self` proves AVX2; the caller vouches for 8 words at `src`.
            unsafe {
                let words = _mm256_loadu_si256(src.cast());
                let high = _mm256_and_si256(words, _mm256_set1_epi32(0xffff_0000_u32 as i32));
                [
                    _mm256_castsi256_ps(_mm256_slli_epi32::<16>(words)),
                    _mm256_castsi256_ps(high),
                ]
            }
        }

        #[inline(always)]
        fn fmadd(self, a: __m256, b: __m256, c: __m256) -> __m256 {
            // SAFETY: `self` proves FMA.
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }

        #[inline(always)]
        fn mul_add(self, a: f32, b: f32, c: f32) -> f32 {
            // Compiled with FMA (the kernel runs under `with_avx2_fma`): one instruction.
            a.mul_add(b, c)
        }

        #[inline(always)]
        fn activate_register(self, value: __m256, activation: Option<Activation>) -> __m256 {
            math::activate_lanes(Ymm(self, value), activation).1
        }

        #[inline(always)]
        unsafe fn tile_steps<const MR: usize, const R: usize>(
            self,
            rows: RowBases,
            b: *const f32,
            b_stride: usize,
            steps: usize,
            sums: &mut [[__m256; R]; MR],
        ) -> bool {
            // SAFETY: `self` proves AVX2 and FMA; the rest is the caller's word.
            unsafe {
                six_by_two_tile::<MR, false>(rows, b, b_stride, steps, sums.as_flattened_mut())
            }
        }

        #[inline(always)]
        unsafe fn tile_steps_bf16<const MR: usize, const R: usize>(
            self,
            rows: RowBases,
            b: *const u32,
            b_stride: usize,
            steps: usize,
            sums: &mut [[__m256; R]; MR],
        ) -> bool {
            let (b, sums) = (b.cast::<f32>(), sums.as_flattened_mut());
            // SAFETY: `self` proves AVX2 and FMA; the rest is the caller's word.
            unsafe { six_by_two_tile::<MR, true>(rows, b, b_stride, steps, sums) }
        }
    }

    /// [`avx2_tile_steps`] for an `MR`-row tile's sums if they are the 6 x 2 tile's 12
    /// registers (row by row); false, untouched, otherwise. Both of [`Avx2Fma`]'s tile loops go through it.
    ///
    /// # Safety
    ///
    /// As [`avx2_tile_steps`].
    #[inline(always)]
    unsafe fn six_by_two_tile<const MR: usize, const BF16: bool>(
        rows: RowBases,
        b: *const f32,
        b_stride: usize,
        steps: usize,
        sums: &mut [__m256],
    ) -> bool {
        // The 6 x 2 tile only (not 12 x 1, which has as many registers).
        if MR != 6 {
            return false;
        }
        let Ok(registers) = <&mut [__m256; 12]>::try_from(sums) else {
            return false;
        };
        // SAFETY: passed on from the caller.
        unsafe { avx2_tile_steps::<BF16>(rows, b, b_stride, steps, registers.each_mut()) };
        true
    }

    /// [`Avx2Fma`]'s [`Isa::tile_steps`] and [`Isa::tile_steps_bf16`] for its 6 x 2 tile,
    /// in registers allocated by hand: 12 accumulators, 2 registers of columns and a
    /// broadcast, of the 16 (the bf16 loop's 16th holds the mask of the high halves). A
    /// function of its own because `asm!` takes vector registers only in a function
    /// compiled for them; it is inlined into the kernels, which are.
    ///
    /// # Safety
    ///
    /// The CPU must have AVX2 and FMA; `rows` valid for reads of 6 rows of `steps` values,
    /// `b` of `steps` rows of 16 values (8 words of bf16 pairs if `BF16`) at stride
    /// `b_stride` (in values or words). (A constant, not an argument: each form is then a
    /// function of one loop, which LLVM inlines as it did the f32 one alone.)
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn avx2_tile_steps<const BF16: bool>(
        rows: RowBases,
        b: *const f32,
        b_stride: usize,
        steps: usize,
        [s00, s01, s10, s11, s20, s21, s30, s31, s40, s41, s50, s51]: [&mut __m256; 12],
    ) {
        if steps == 0 {
            return;
        }
        let f32s = size_of::<f32>();
        // The loop after its column loads, and its operands after theirs: one text for both
        // panels.
        macro_rules! six_by_two {
            ($b:expr, [$($load:literal),+] $(, $name:ident = $operand:expr)*) => {
                std::arch::asm!(
                    "2:",
                    $($load,)+
                    "vbroadcastss {v}, [{a0}]",
                    "vfmadd231ps {s00}, {c0}, {v}",
                    "vfmadd231ps {s01}, {c1}, {v}",
                    "vbroadcastss {v}, [{a0} + {stride}]",
                    "vfmadd231ps {s10}, {c0}, {v}",
                    "vfmadd231ps {s11}, {c1}, {v}",
                    "vbroadcastss {v}, [{a0} + {stride} * 2]",
                    "vfmadd231ps {s20}, {c0}, {v}",
                    "vfmadd231ps {s21}, {c1}, {v}",
                    "vbroadcastss {v}, [{a3}]",
                    "vfmadd231ps {s30}, {c0}, {v}",
                    "vfmadd231ps {s31}, {c1}, {v}",
                    "vbroadcastss {v}, [{a3} + {stride}]",
                    "vfmadd231ps {s40}, {c0}, {v}",
                    "vfmadd231ps {s41}, {c1}, {v}",
                    "vbroadcastss {v}, [{a3} + {stride} * 2]",
                    "vfmadd231ps {s50}, {c0}, {v}",
                    "vfmadd231ps {s51}, {c1}, {v}",
                    "add {a0}, {step}",
                    "add {a3}, {step}",
                    "add {b}, {b_stride}",
                    "dec {n}",
                    "jnz 2b",
                    a0 = inout(reg) rows.base => _,
                    a3 = inout(reg) rows.base.add(3 * rows.stride) => _,
                    stride = in(reg) rows.stride * f32s,
                    step = in(reg) rows.step * f32s,
                    b = inout(reg) $b => _,
                    b_stride = in(reg) b_stride * f32s,
                    n = inout(reg) steps => _,
                    c0 = out(ymm_reg) _,
                    c1 = out(ymm_reg) _,
                    v = out(ymm_reg) _,
                    s00 = inout(ymm_reg) *s00,
                    s01 = inout(ymm_reg) *s01,
                    s10 = inout(ymm_reg) *s10,
                    s11 = inout(ymm_reg) *s11,
                    s20 = inout(ymm_reg) *s20,
                    s21 = inout(ymm_reg) *s21,
                    s30 = inout(ymm_reg) *s30,
                    s31 = inout(ymm_reg) *s31,
                    s40 = inout(ymm_reg) *s40,
                    s41 = inout(ymm_reg) *s41,
                    s50 = inout(ymm_reg) *s50,
                    s51 = inout(ymm_reg) *s51,
                    $($name = in(ymm_reg) $operand,)*
                    options(nostack, readonly),
                )
            };
        }
        // SAFETY: the CPU has AVX2 and FMA (the caller's word). Step `s` reads row `r`'s
        // value at `base + r * stride + s * step` (rows 3-5 from `base + 3 * stride`) and
        // two registers of `b` (one of pairs) at `b + s * b_stride`, which the caller
        // vouches for; the loop runs `steps > 0` times and writes only registers. f32 and
        // u32 are both four bytes, so the strides scale alike.
        unsafe {
            if BF16 {
                six_by_two!(
                    b,
                    [
                        "vmovdqu {c0}, [{b}]",
                        "vpand {c1}, {c0}, {high}",
                        "vpslld {c0}, {c0}, 16"
                    ],
                    high = _mm256_set1_epi32(0xffff_0000_u32 as i32)
                )
            } else {
                six_by_two!(b, ["vmovups {c0}, [{b}]", "vmovups {c1}, [{b} + 32]"])
            }
        }
    }

    /// 16 lanes of AVX-512 as [`math::Lanes`], so that SiLU's `exp` is the one polynomial.
    /// It carries its token: every value proves the CPU has AVX-512F.
    #[derive(Clone, Copy)]
    struct Zmm(Avx512, __m512);

    // SAFETY (every `unsafe` block below): `self.0` proves the CPU has AVX-512F.
    impl math::Lanes for Zmm {
        #[inline(always)]
        fn splat(self, value: f32) -> Self {
            // SAFETY: see the impl's comment.
            Zmm(self.0, unsafe { _mm512_set1_ps(value) })
        }
        #[inline(always)]
        fn sub(self, other: Self) -> Self {
            // SAFETY: see the impl's comment.
            Zmm(self.0, unsafe { _mm512_sub_ps(self.1, other.1) })
        }
        #[inline(always)]
        fn mul(self, other: Self) -> Self {
            // SAFETY: see the impl's comment.
            Zmm(self.0, unsafe { _mm512_mul_ps(self.1, other.1) })
        }
        #[inline(always)]
        fn mul_add(self, factor: Self, addend: Self) -> Self {
            // SAFETY: see the impl's comment.
            Zmm(self.0, unsafe {
                _mm512_fmadd_ps(self.1, factor.1, addend.1)
            })
        }
        #[inline(always)]
        fn clamp(self, low: f32, high: f32) -> Self {
            // SAFETY: see the impl's comment.
            Zmm(self.0, unsafe {
                // The value second: `max` and `min` return their second operand when
                // either is NaN, so NaN stays NaN.
                _mm512_min_ps(
                    _mm512_set1_ps(high),
                    _mm512_max_ps(_mm512_set1_ps(low), self.1),
                )
            })
        }
        #[inline(always)]
        fn exponent_of_rounded(self) -> Self {
            // SAFETY: see the impl's comment.
            Zmm(self.0, unsafe {
                let bits = _mm512_slli_epi32::<23>(_mm512_castps_si512(self.1));
                _mm512_castsi512_ps(_mm512_add_epi32(bits, _mm512_set1_epi32(127 << 23)))
            })
        }
        #[inline(always)]
        fn div(self, divisor: Self) -> Self {
            // `self * (1 / divisor)`, the reciprocal a 14-bit estimate refined by one Newton
            // step: within 2 ulp of the division, at a fraction of its cost.
            // SAFETY: see the impl's comment.
            Zmm(self.0, unsafe {
                let estimate = _mm512_rcp14_ps(divisor.1);
                let reciprocal = _mm512_mul_ps(
                    estimate,
                    _mm512_fnmadd_ps(divisor.1, estimate, _mm512_set1_ps(2.0)),
                );
                _mm512_mul_ps(self.1, reciprocal)
            })
        }
    }

    /// 8 lanes of AVX2 as [`math::Lanes`], like [`Zmm`]. Every value proves the CPU has
    /// AVX2 and FMA.
    #[derive(Clone, Copy)]
    struct Ymm(Avx2Fma, __m256);

    // SAFETY (every `unsafe` block below): `self.0` proves the CPU has AVX2 and FMA.
    impl math::Lanes for Ymm {
        #[inline(always)]
        fn splat(self, value: f32) -> Self {
            // SAFETY: see the impl's comment.
            Ymm(self.0, unsafe { _mm256_set1_ps(value) })
        }
        #[inline(always)]
        fn sub(self, other: Self) -> Self {
            // SAFETY: see the impl's comment.
            Ymm(self.0, unsafe { _mm256_sub_ps(self.1, other.1) })
        }
        #[inline(always)]
        fn mul(self, other: Self) -> Self {
            // SAFETY: see the impl's comment.
            Ymm(self.0, unsafe { _mm256_mul_ps(self.1, other.1) })
        }
        #[inline(always)]
        fn mul_add(self, factor: Self, addend: Self) -> Self {
            // SAFETY: see the impl's comment.
            Ymm(self.0, unsafe {
                _mm256_fmadd_ps(self.1, factor.1, addend.1)
            })
        }
        #[inline(always)]
        fn clamp(self, low: f32, high: f32) -> Self {
            // SAFETY: see the impl's comment.
            Ymm(self.0, unsafe {
                // The value second: `max` and `min` return their second operand when
                // either is NaN, so NaN stays NaN.
                _mm256_min_ps(
                    _mm256_set1_ps(high),
                    _mm256_max_ps(_mm256_set1_ps(low), self.1),
                )
            })
        }
        #[inline(always)]
        fn exponent_of_rounded(self) -> Self {
            // SAFETY: see the impl's comment.
            Ymm(self.0, unsafe {
                let bits = _mm256_slli_epi32::<23>(_mm256_castps_si256(self.1));
                _mm256_castsi256_ps(_mm256_add_epi32(bits, _mm256_set1_epi32(127 << 23)))
            })
        }
        #[inline(always)]
        fn div(self, divisor: Self) -> Self {
            // The division itself: exact, and on Zen 3 faster in SiLU than the 12-bit
            // reciprocal estimate with a Newton step and a correction (0.76 against 0.90 ns
            // a value, one thread), which is 5 more instructions on SiLU's critical path.
            // SAFETY: see the impl's comment.
            Ymm(self.0, unsafe { _mm256_div_ps(self.1, divisor.1) })
        }
    }
}
