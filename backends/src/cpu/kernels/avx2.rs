//! AVX2 kernels: `maddubs` (u8 x i8 -> i16 pairs) then `madd` to i32.

use std::arch::x86_64::*;

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn mul_u8i8(x: __m256i, y: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), _mm256_set1_epi16(1))
}

/// Products of bytes 0..16 times `lo`, 16..32 times `hi` (|scale| < 2^15; the
/// i16 pair sums never saturate for the ranges the kernels use: |x| <= 127,
/// |y| <= 127).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn mul_u8i8_s(x: __m256i, y: __m256i, lo: i32, hi: i32) -> __m256i {
    let s = _mm256_set_m128i(_mm_set1_epi16(hi as i16), _mm_set1_epi16(lo as i16));
    _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), s)
}

/// acc + madd(x, s).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn madd_add(acc: __m256i, x: __m256i, s: __m256i) -> __m256i {
    _mm256_add_epi32(acc, _mm256_madd_epi16(x, s))
}

/// No `vpdpbusd` here: kernels that can use it take their maddubs form.
const HAS_DPBUSD: bool = false;

/// acc + the i32 sums of four u8 x i8 products per lane (only reached where
/// `HAS_DPBUSD` is false by mistake: the same sums, slower).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dpbusd(acc: __m256i, x: __m256i, y: __m256i) -> __m256i {
    _mm256_add_epi32(acc, mul_u8i8(x, y))
}

x86_int8_kernels!("avx2,fma,f16c");

pub(super) fn table() -> Option<Kernels> {
    let ok = is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c");
    ok.then(|| {
        let mut k = build("avx2");
        install_packed_q32(&mut k);
        k
    })
}
