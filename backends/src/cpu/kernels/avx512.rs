//! VNNI kernels: `vpdpbusd` (u8 x i8, four products summed into i32 lanes) on
//! 256-bit vectors, in its AVX-VNNI (VEX) and AVX-512 VNNI (EVEX, with AVX512VL)
//! encodings. One body per encoding, from the same `x86_int8_kernels!` source.

/// AVX-512 VNNI (EVEX `vpdpbusd ymm`).
mod evex {
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn mul_u8i8(x: __m256i, y: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), x, y)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn mul_u8i8_s(x: __m256i, y: __m256i, lo: i32, hi: i32) -> __m256i {
        // maddubs + madd, as on AVX2: the same i32 lanes as dpbusd then mullo by
        // the scale, in two cheap instructions instead of one plus a slow mullo.
        let s = _mm256_set_m128i(_mm_set1_epi16(hi as i16), _mm_set1_epi16(lo as i16));
        _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), s)
    }

    /// acc + madd(x, s) in one EVEX `vpdpwssd ymm` (the same wrapping i32 sums).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn madd_add(acc: __m256i, x: __m256i, s: __m256i) -> __m256i {
        _mm256_dpwssd_epi32(acc, x, s)
    }

    const HAS_DPBUSD: bool = true;

    /// acc + the i32 sums of four u8 x i8 products per lane (EVEX `vpdpbusd ymm`).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn dpbusd(acc: __m256i, x: __m256i, y: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(acc, x, y)
    }

    x86_int8_kernels!("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni");

    mod zmm;
    mod zmm_packed;
    mod zmm_packed_q6;
    mod zmm_rows;

    pub(in crate::cpu::kernels) fn table() -> Option<Kernels> {
        let ok = is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni");
        ok.then(|| {
            let mut k = build("avx512vnni");
            zmm::install(&mut k);
            zmm_packed::install(&mut k);
            zmm_packed_q6::install(&mut k);
            k
        })
    }
}

/// AVX-VNNI (VEX `vpdpbusd ymm`), for CPUs with VNNI but without AVX-512.
mod vex {
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avxvnni")]
    unsafe fn mul_u8i8(x: __m256i, y: __m256i) -> __m256i {
        _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), x, y)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avxvnni")]
    unsafe fn mul_u8i8_s(x: __m256i, y: __m256i, lo: i32, hi: i32) -> __m256i {
        // As the EVEX variant: maddubs + madd beats dpbusd + mullo.
        let s = _mm256_set_m128i(_mm_set1_epi16(hi as i16), _mm_set1_epi16(lo as i16));
        _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), s)
    }

    /// acc + madd(x, s) in one VEX `vpdpwssd ymm` (the same wrapping i32 sums).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avxvnni")]
    unsafe fn madd_add(acc: __m256i, x: __m256i, s: __m256i) -> __m256i {
        _mm256_dpwssd_avx_epi32(acc, x, s)
    }

    const HAS_DPBUSD: bool = true;

    /// acc + the i32 sums of four u8 x i8 products per lane (VEX `vpdpbusd ymm`).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avxvnni")]
    unsafe fn dpbusd(acc: __m256i, x: __m256i, y: __m256i) -> __m256i {
        _mm256_dpbusd_avx_epi32(acc, x, y)
    }

    x86_int8_kernels!("avx2,fma,f16c,avxvnni");

    pub(in crate::cpu::kernels) fn table() -> Option<Kernels> {
        let ok = is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
            && is_x86_feature_detected!("avxvnni");
        ok.then(|| {
            let mut k = build("avxvnni");
            install_packed_q32(&mut k);
            k
        })
    }
}

pub(super) use evex::table as table_avx512vnni;
pub(super) use vex::table as table_avxvnni;
