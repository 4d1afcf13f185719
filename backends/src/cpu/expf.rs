//! The softmax's e^x with the bits of the `expf` llama.cpp's CPU flash
//! attention calls: glibc's `expf` as x86-64 runs it on a CPU with FMA
//! (`__expf_fma`, the algorithm of Arm's optimized-routines). Computing it
//! here instead of calling libm gives every attention body, and every
//! platform, the same bits, and lets the AVX-512 body take sixteen at once.
//!
//! The algorithm: x·32/ln2 = k + r with k an integer (rounded by adding
//! 1.5·2^52) and |r| ≤ 1/2; e^x = 2^(k/32) · 2^(r/32), the first from a
//! 32-entry table with k/32's integer part added to the exponent bits, the
//! second a cubic in r; everything in f64 with the fused multiply-adds the
//! FMA build contracts, rounded to f32 once at the end. Below -103.97 the
//! result is 0, above 88.72 it is infinity.
//!
//! Checked against glibc 2.36's `expf` (x86-64, FMA) on every f32 from -inf
//! to 88.72: equal bits for all of them, including the subnormal results.
//! `matches_libm_expf` re-checks a sample in the suite.

/// 2^(i/32) as f64 bits, minus i << 47 (the exponent bits that k adds back).
const TAB: [u64; 32] = [
    0x3ff0000000000000, 0x3fefd9b0d3158574, 0x3fefb5586cf9890f, 0x3fef9301d0125b51,
    0x3fef72b83c7d517b, 0x3fef54873168b9aa, 0x3fef387a6e756238, 0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715, 0x3feef1a7373aa9cb, 0x3feedea64c123422, 0x3feece086061892d,
    0x3feebfdad5362a27, 0x3feeb42b569d4f82, 0x3feeab07dd485429, 0x3feea47eb03a5585,
    0x3feea09e667f3bcd, 0x3fee9f75e8ec5f74, 0x3feea11473eb0187, 0x3feea589994cce13,
    0x3feeace5422aa0db, 0x3feeb737b0cdc5e5, 0x3feec49182a3f090, 0x3feed503b23e255d,
    0x3feee89f995ad3ad, 0x3feeff76f2fb5e47, 0x3fef199bdd85529c, 0x3fef3720dcef9069,
    0x3fef5818dcfba487, 0x3fef7c97337b9b5f, 0x3fefa4afa2a490da, 0x3fefd0765b6e4540,
];
/// 32/ln2 (0x1.71547652b82fep0 · 32).
const INV_LN2_N: f64 = std::f64::consts::LOG2_E * 32.0;
/// 1.5 · 2^52: adding it rounds to an integer held in the low mantissa bits.
const SHIFT: f64 = 6755399441055744.0;
/// The cubic's coefficients for r scaled by 1/32 (0x1.c6af84b912394p-5 / 32³,
/// 0x1.ebfce50fac4f3p-3 / 32², 0x1.62e42ff0c52d6p-1 / 32).
const C0: f64 = f64::from_bits(0x3fac6af84b912394) / 32768.0;
const C1: f64 = f64::from_bits(0x3fcebfce50fac4f3) / 1024.0;
const C2: f64 = f64::from_bits(0x3fe62e42ff0c52d6) / 32.0;
/// Below this (-0x1.9fe368p6) the result is 0; above `HI` (0x1.62e42ep6) infinity.
const LO: f32 = f32::from_bits(0xc2cf_f1b4);
const HI: f32 = f32::from_bits(0x42b1_7217);

/// e^x with the bits of glibc's x86-64 FMA `expf` (NaN gives NaN).
#[inline]
pub fn expf(x: f32) -> f32 {
    if x < LO {
        return 0.0;
    }
    if x > HI {
        return f32::INFINITY;
    }
    let xd = x as f64;
    let k = INV_LN2_N.mul_add(xd, SHIFT);
    let ki = k.to_bits();
    let kd = k - SHIFT;
    let r = INV_LN2_N.mul_add(xd, -kd);
    let s = f64::from_bits(TAB[(ki & 31) as usize].wrapping_add(ki << 47));
    let z = C0.mul_add(r, C1);
    let r2 = r * r;
    let y = C2.mul_add(r, 1.0);
    (z.mul_add(r2, y) * s) as f32
}

/// `expf` on sixteen lanes, each with the scalar function's bits.
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma,avx512f")]
pub unsafe fn expf16_avx512(x: __m512) -> __m512 {
    let lo = exp8(_mm512_castps512_ps256(x));
    let hi = exp8(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(x))));
    _mm512_castpd_ps(_mm512_insertf64x4::<1>(_mm512_castps_pd(_mm512_castps256_ps512(lo)), _mm256_castps_pd(hi)))
}

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Eight lanes of `expf`, in f64 lanes: the same operations in the same order.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma,avx512f")]
unsafe fn exp8(x: __m256) -> __m256 {
    let tab = |i: usize| _mm512_loadu_si512(TAB.as_ptr().add(i) as *const _);
    let shift = _mm512_set1_pd(SHIFT);
    let inv = _mm512_set1_pd(INV_LN2_N);
    let xd = _mm512_cvtps_pd(x);
    let k = _mm512_fmadd_pd(inv, xd, shift);
    let ki = _mm512_castpd_si512(k);
    let kd = _mm512_sub_pd(k, shift);
    let r = _mm512_fmsub_pd(inv, xd, kd);
    // TAB[ki & 31]: two 16-entry lookups, picked by bit 4.
    let t_lo = _mm512_permutex2var_epi64(tab(0), ki, tab(8));
    let t_hi = _mm512_permutex2var_epi64(tab(16), ki, tab(24));
    let t = _mm512_mask_blend_epi64(_mm512_test_epi64_mask(ki, _mm512_set1_epi64(16)), t_lo, t_hi);
    let s = _mm512_castsi512_pd(_mm512_add_epi64(t, _mm512_slli_epi64::<47>(ki)));
    let z = _mm512_fmadd_pd(_mm512_set1_pd(C0), r, _mm512_set1_pd(C1));
    let r2 = _mm512_mul_pd(r, r);
    let y = _mm512_fmadd_pd(_mm512_set1_pd(C2), r, _mm512_set1_pd(1.0));
    let f = _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_fmadd_pd(z, r2, y), s));
    let under = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(LO));
    let over = _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_set1_ps(HI));
    let f = _mm256_blendv_ps(f, _mm256_setzero_ps(), under);
    _mm256_blendv_ps(f, _mm256_set1_ps(f32::INFINITY), over)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs across the whole range: every 97th f32 bit pattern from -inf up
    /// to 88.72, the cut-offs' neighbours, zeros and infinities.
    fn inputs() -> Vec<f32> {
        let mut v: Vec<f32> = (0x8000_0000u32..=0xff80_0000).step_by(97).map(f32::from_bits).collect();
        v.extend((0..=HI.to_bits()).step_by(97).map(f32::from_bits));
        for c in [LO, HI] {
            let b = c.to_bits();
            v.extend([b - 2, b - 1, b, b + 1, b + 2].map(f32::from_bits));
        }
        v.extend([0.0, -0.0, f32::NEG_INFINITY, f32::INFINITY, 100.0, -1e-30, f32::MIN_POSITIVE]);
        v
    }

    /// On glibc with FMA this is the libm `expf` llama.cpp calls, bit for bit
    /// (aarch64's glibc builds the same algorithm, always with FMA).
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn matches_libm_expf() {
        #[cfg(target_arch = "x86_64")]
        assert!(is_x86_feature_detected!("fma"), "glibc takes its non-FMA expf here: a different rounding");
        for x in inputs() {
            assert_eq!(expf(x).to_bits(), x.exp().to_bits(), "expf({x:e}) = {:e}, libm {:e}", expf(x), x.exp());
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn sixteen_lanes_equal_the_scalar() {
        if !is_x86_feature_detected!("avx512f") {
            return;
        }
        let mut v = inputs();
        v.push(f32::NAN);
        v.resize(v.len().div_ceil(16) * 16, 0.0);
        for x in v.chunks_exact(16) {
            let mut got = [0f32; 16];
            // SAFETY: AVX-512F checked above.
            unsafe { _mm512_storeu_ps(got.as_mut_ptr(), expf16_avx512(_mm512_loadu_ps(x.as_ptr()))) };
            for (g, &xi) in got.iter().zip(x) {
                let want = expf(xi);
                assert!(g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()), "expf16({xi:e}) = {g:e}, scalar {want:e}");
            }
        }
    }
}
