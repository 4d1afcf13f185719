//! Q4_K, Q5_K, Q6_K and IQ4_XS: the one-row dots and the per-block bodies the
//! tiles and decode kernels share (so all three agree bit for bit); IQ4_XS also
//! has its tile and four-row decode kernel here.

macro_rules! x86_kquant {
    ($feat:literal) => {
        /// Q4_K as GGML's repacked Q4_K GEMM (`ggml_gemm_q4_K_8x8_q8_K`, what
        /// llama.cpp runs on x86 for prompt rows) accumulates: per 64 elements
        /// (two sub-blocks) one exact integer for the scales and one for the mins,
        /// each added with one FMA (times d*yd and dmin*yd), scales minus mins at
        /// the end.
        #[target_feature(enable = $feat)]
        unsafe fn dot_q4_k(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
            tile_q4_k::<1>(x, [y], [&[]], [&[]])[0]
        }

        /// One Q5_K weight block against one activation block: the integer sum
        /// into `acc` (one FMA) and the min correction into `sum_min`. The dot,
        /// the tile and the decode kernel all run this, so they agree bit for bit.
        #[inline(always)]
        unsafe fn block_q5_k(a: &BlockQ5K, b: &BlockQ8K, acc: &mut __m256, sum_min: &mut f32) {
            let m4 = _mm256_set1_epi8(0x0F);
            let b4 = _mm256_set1_epi8(0x10);
            let (sc, mn) = unpack_scales_mins_k4(&a.scales);
            let mut summ = 0i32;
            for j in 0..16 {
                summ += mn[j / 2] as i32 * b.bsum(j) as i32;
            }
            *sum_min += f16_mul_f32(a.dmin, b.d()) * summ as f32;
            let mut hb = load(a.qh.as_ptr());
            let mut sumi = _mm256_setzero_si256();
            for j in 0..4 {
                let q4 = load(a.qs.as_ptr().add(32 * j));
                let lo = _mm256_or_si256(
                    _mm256_and_si256(q4, m4),
                    _mm256_and_si256(_mm256_slli_epi16(hb, 4), b4),
                );
                hb = _mm256_srli_epi16(hb, 1);
                let hi = _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(q4, 4), m4),
                    _mm256_and_si256(_mm256_slli_epi16(hb, 4), b4),
                );
                hb = _mm256_srli_epi16(hb, 1);
                let ylo = load_i8(b.qs.as_ptr().add(64 * j));
                let yhi = load_i8(b.qs.as_ptr().add(64 * j + 32));
                let (s0, s1) = (sc[2 * j] as i32, sc[2 * j + 1] as i32);
                sumi = _mm256_add_epi32(sumi, mul_u8i8_s(lo, ylo, s0, s0));
                sumi = _mm256_add_epi32(sumi, mul_u8i8_s(hi, yhi, s1, s1));
            }
            *acc = _mm256_fmadd_ps(
                _mm256_set1_ps(f16_mul_f32(a.d, b.d())),
                _mm256_cvtepi32_ps(sumi),
                *acc,
            );
        }

        #[target_feature(enable = $feat)]
        unsafe fn dot_q5_k(x: &[BlockQ5K], y: &[BlockQ8K]) -> f32 {
            let mut acc = _mm256_setzero_ps();
            let mut sum_min = 0f32;
            for (a, b) in x.iter().zip(y) {
                block_q5_k(a, b, &mut acc, &mut sum_min);
            }
            hsum_ps(acc) - sum_min
        }

        /// Q6_K: the 128 six-bit quants of half `n` of a block as four vectors of 32 bytes.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn q6k_quants(a: &BlockQ6K, n: usize, m4: __m256i) -> [__m256i; 4] {
            let q4a = load(a.ql.as_ptr().add(64 * n));
            let q4b = load(a.ql.as_ptr().add(64 * n + 32));
            let qh = load(a.qh.as_ptr().add(32 * n));
            let hbits = |mask: u8| _mm256_and_si256(qh, _mm256_set1_epi8(mask as i8));
            [
                _mm256_or_si256(_mm256_and_si256(q4a, m4), _mm256_slli_epi16(hbits(0x03), 4)),
                _mm256_or_si256(_mm256_and_si256(q4b, m4), _mm256_slli_epi16(hbits(0x0C), 2)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q4a, 4), m4), hbits(0x30)),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(q4b, 4), m4),
                    _mm256_srli_epi16(hbits(0xC0), 2),
                ),
            ]
        }

        #[target_feature(enable = $feat)]
        unsafe fn dot_q6_k(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
            let mut acc = _mm256_setzero_ps();
            let m4 = _mm256_set1_epi8(0x0F);
            for (a, b) in x.iter().zip(y) {
                // Σ sc*(q-32)*y = Σ sc*q*y - 32 Σ sc*bsum, all in exact integers; lane l
                // takes the offset of sub-blocks 2l and 2l+1, as GGML's lanes do (same
                // lane sums, so the same float rounding).
                let scales =
                    _mm256_cvtepi8_epi16(_mm_loadu_si128(a.scales.as_ptr() as *const __m128i));
                let off = _mm256_madd_epi16(scales, load(b.bsums.as_ptr() as *const u8));
                let mut sumi = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(off, 5));
                for n in 0..2 {
                    let v = q6k_quants(a, n, m4);
                    for (i, vi) in v.iter().enumerate() {
                        let yv = load_i8(b.qs.as_ptr().add(128 * n + 32 * i));
                        let is = 8 * n + 2 * i;
                        let p = mul_u8i8_s(*vi, yv, a.scales[is] as i32, a.scales[is + 1] as i32);
                        sumi = _mm256_add_epi32(sumi, p);
                    }
                }
                acc = _mm256_fmadd_ps(
                    _mm256_set1_ps(f16_mul_f32(a.d, b.d())),
                    _mm256_cvtepi32_ps(sumi),
                    acc,
                );
            }
            hsum_ps(acc)
        }

        /// One IQ4_XS weight block against one activation block into `acc`
        /// (shared by the dot, the tile and the decode kernel).
        #[inline(always)]
        unsafe fn block_iq4_xs(a: &BlockIQ4XS, b: &BlockQ8K, table: __m256i, acc: &mut __m256) {
            let mut sumi = _mm256_setzero_si256();
            for ib in 0..8 {
                let qx = _mm256_shuffle_epi8(table, nibbles32(a.qs.as_ptr().add(16 * ib)));
                let yv = load_i8(b.qs.as_ptr().add(32 * ib));
                let ls = a.scale(ib);
                sumi = _mm256_add_epi32(sumi, mul_i8i8_s(qx, yv, ls, ls));
            }
            *acc = _mm256_fmadd_ps(
                _mm256_set1_ps(f16_mul_f32(a.d, b.d())),
                _mm256_cvtepi32_ps(sumi),
                *acc,
            );
        }

        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn iq4_table() -> __m256i {
            let t = _mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i);
            _mm256_set_m128i(t, t)
        }

        #[target_feature(enable = $feat)]
        unsafe fn dot_iq4_xs(x: &[BlockIQ4XS], y: &[BlockQ8K]) -> f32 {
            let table = iq4_table();
            let mut acc = _mm256_setzero_ps();
            for (a, b) in x.iter().zip(y) {
                block_iq4_xs(a, b, table, &mut acc);
            }
            hsum_ps(acc)
        }

        #[target_feature(enable = $feat)]
        unsafe fn tile_iq4_xs<const R: usize>(
            x: &[BlockIQ4XS],
            y: [&[BlockQ8K]; R],
            _d: [&[f32]; R],
            _s: [&[f32]; R],
        ) -> [f32; R] {
            let table = iq4_table();
            let mut acc = [_mm256_setzero_ps(); R];
            for (i, a) in x.iter().enumerate() {
                for r in 0..R {
                    block_iq4_xs(a, y[r].get_unchecked(i), table, &mut acc[r]);
                }
            }
            acc.map(|v| hsum_ps(v))
        }

        /// Four IQ4_XS rows: per row exactly the operations of `dot_iq4_xs`.
        #[target_feature(enable = $feat)]
        unsafe fn rows4_iq4_xs(
            x: [&[BlockIQ4XS]; 4],
            y: &[BlockQ8K],
            _d: &[f32],
            _s: &[f32],
        ) -> [f32; 4] {
            let table = iq4_table();
            let mut acc = [_mm256_setzero_ps(); 4];
            for (i, b) in y.iter().enumerate() {
                for w in 0..4 {
                    // 136-byte blocks: three lines.
                    prefetch_block(x[w], i, 3);
                    block_iq4_xs(x[w].get_unchecked(i), b, table, &mut acc[w]);
                }
            }
            acc.map(|v| hsum_ps(v))
        }
    };
}
