//! One-row dots for the 32-element block types (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
//! IQ4_NL) and for Q2_K and Q3_K.

macro_rules! x86_dots {
    ($feat:literal) => {
        #[target_feature(enable = $feat)]
        unsafe fn dot_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
            let mut acc = _mm256_setzero_ps();
            for (a, b) in x.iter().zip(y) {
                let d = _mm256_set1_ps(f16_mul(a.d, b.d));
                let p = mul_i8i8(load_i8(a.qs.as_ptr()), load_i8(b.qs.as_ptr()));
                acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
            }
            hsum_ps(acc)
        }

        #[target_feature(enable = $feat)]
        unsafe fn dot_q4_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
            let mut acc = _mm256_setzero_ps();
            let off = _mm256_set1_epi8(8);
            for (a, b) in x.iter().zip(y) {
                let d = _mm256_set1_ps(f16_mul(a.d, b.d));
                let qx = _mm256_sub_epi8(nibbles32(a.qs.as_ptr()), off);
                let p = mul_i8i8(qx, load_i8(b.qs.as_ptr()));
                acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
            }
            hsum_ps(acc)
        }

        #[target_feature(enable = $feat)]
        unsafe fn dot_q4_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
            let mut acc = _mm256_setzero_ps();
            let mut summs = 0f32;
            for (a, b) in x.iter().zip(y) {
                summs += f16_mul(a.m, b.s);
                let d = _mm256_set1_ps(f16_mul(a.d, b.d));
                let p = mul_u8i8(nibbles32(a.qs.as_ptr()), load_i8(b.qs.as_ptr()));
                acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
            }
            hsum_ps(acc) + summs
        }

        #[target_feature(enable = $feat)]
        unsafe fn dot_q5_0(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
            let mut acc = _mm256_setzero_ps();
            let hi = _mm256_set1_epi8(0xF0u8 as i8);
            for (a, b) in x.iter().zip(y) {
                let d = _mm256_set1_ps(f16_mul(a.d, b.d));
                // q - 16 as a signed byte: nibble | 0xF0 where the fifth bit is clear.
                let qx = _mm256_or_si256(
                    nibbles32(a.qs.as_ptr()),
                    _mm256_andnot_si256(bits32(a.qh), hi),
                );
                let p = mul_i8i8(qx, load_i8(b.qs.as_ptr()));
                acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
            }
            hsum_ps(acc)
        }

        #[target_feature(enable = $feat)]
        unsafe fn dot_q5_1(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
            let mut acc = _mm256_setzero_ps();
            let mut summs = 0f32;
            let b4 = _mm256_set1_epi8(0x10);
            for (a, b) in x.iter().zip(y) {
                summs += f16_mul(a.m, b.s);
                let d = _mm256_set1_ps(f16_mul(a.d, b.d));
                let qx =
                    _mm256_or_si256(nibbles32(a.qs.as_ptr()), _mm256_and_si256(bits32(a.qh), b4));
                let p = mul_u8i8(qx, load_i8(b.qs.as_ptr()));
                acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
            }
            hsum_ps(acc) + summs
        }

        #[target_feature(enable = $feat)]
        unsafe fn dot_iq4_nl(x: &[BlockIQ4NL], y: &[BlockQ8_0]) -> f32 {
            let t = _mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i);
            let table = _mm256_set_m128i(t, t);
            let mut acc = _mm256_setzero_ps();
            for (a, b) in x.iter().zip(y) {
                let d = _mm256_set1_ps(f16_mul(a.d, b.d));
                let qx = _mm256_shuffle_epi8(table, nibbles32(a.qs.as_ptr()));
                let p = mul_i8i8(qx, load_i8(b.qs.as_ptr()));
                acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
            }
            hsum_ps(acc)
        }

        /// One Q2_K weight block against one activation block: the integer sum
        /// into `acc` (one FMA) and the min correction into `sum_min`. The dot,
        /// the tile and the decode rows all run this, so they agree bit for bit.
        #[inline(always)]
        unsafe fn block_q2_k(a: &BlockQ2K, b: &BlockQ8K, acc: &mut __m256, sum_min: &mut f32) {
            let m3 = _mm256_set1_epi8(3);
            let yd = b.d();
            let mut summs = 0i32;
            for j in 0..16 {
                summs += b.bsum(j) as i32 * (a.scales[j] >> 4) as i32;
            }
            *sum_min += f16_mul_f32(a.dmin, yd) * summs as f32;
            let mut sumi = _mm256_setzero_si256();
            for k in 0..2 {
                let q2 = load(a.qs.as_ptr().add(32 * k));
                for s in 0..4 {
                    let v =
                        _mm256_and_si256(_mm256_srl_epi16(q2, _mm_cvtsi32_si128(2 * s as i32)), m3);
                    let yv = load_i8(b.qs.as_ptr().add(128 * k + 32 * s));
                    let is = 8 * k + 2 * s;
                    let (lo, hi) = ((a.scales[is] & 0xF) as i32, (a.scales[is + 1] & 0xF) as i32);
                    sumi = _mm256_add_epi32(sumi, mul_u8i8_s(v, yv, lo, hi));
                }
            }
            *acc = _mm256_fmadd_ps(
                _mm256_set1_ps(f16_mul_f32(a.d, yd)),
                _mm256_cvtepi32_ps(sumi),
                *acc,
            );
        }

        #[target_feature(enable = $feat)]
        unsafe fn dot_q2_k(x: &[BlockQ2K], y: &[BlockQ8K]) -> f32 {
            let mut acc = _mm256_setzero_ps();
            let mut sum_min = 0f32;
            for (a, b) in x.iter().zip(y) {
                block_q2_k(a, b, &mut acc, &mut sum_min);
            }
            hsum_ps(acc) - sum_min
        }

        /// One Q3_K weight block against one activation block into `acc`
        /// (shared by the dot, the tile and the decode rows).
        #[inline(always)]
        unsafe fn block_q3_k(a: &BlockQ3K, b: &BlockQ8K, acc: &mut __m256) {
            let m3 = _mm256_set1_epi8(3);
            let one = _mm256_set1_epi8(1);
            let four = _mm256_set1_epi8(4);
            let sc = unpack_scales_q3k(&a.scales);
            let hm = load(a.hmask.as_ptr());
            let mut sumi = _mm256_setzero_si256();
            for k in 0..2 {
                let q3 = load(a.qs.as_ptr().add(32 * k));
                for s in 0..4 {
                    let v =
                        _mm256_and_si256(_mm256_srl_epi16(q3, _mm_cvtsi32_si128(2 * s as i32)), m3);
                    let h = _mm256_and_si256(
                        _mm256_srl_epi16(hm, _mm_cvtsi32_si128((4 * k + s) as i32)),
                        one,
                    );
                    // q - 4 * !hbit = (q | 4*hbit) - 4, in -4..4.
                    let q = _mm256_sub_epi8(_mm256_or_si256(v, _mm256_slli_epi16(h, 2)), four);
                    let yv = load_i8(b.qs.as_ptr().add(128 * k + 32 * s));
                    let is = 8 * k + 2 * s;
                    sumi =
                        _mm256_add_epi32(sumi, mul_i8i8_s(q, yv, sc[is] as i32, sc[is + 1] as i32));
                }
            }
            *acc = _mm256_fmadd_ps(
                _mm256_set1_ps(f16_mul_f32(a.d, b.d())),
                _mm256_cvtepi32_ps(sumi),
                *acc,
            );
        }

        #[target_feature(enable = $feat)]
        unsafe fn dot_q3_k(x: &[BlockQ3K], y: &[BlockQ8K]) -> f32 {
            let mut acc = _mm256_setzero_ps();
            for (a, b) in x.iter().zip(y) {
                block_q3_k(a, b, &mut acc);
            }
            hsum_ps(acc)
        }
    };
}
