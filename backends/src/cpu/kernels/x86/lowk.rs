//! Q2_K, Q3_K and Q5_1 beyond the one-row dot: the prefill tile (one weight
//! row against R activation rows) and the four-row decode kernel. The Q3_K
//! paths and Q2_K's decode rows run the dot's per-block bodies (`block_q2_k`,
//! `block_q3_k` in dots.rs); the Q2_K tile expands a block once for its R rows
//! and Q5_1 repeats `dot_q5_1`'s operations per row, as `tile_q4_1` does for
//! Q4_1. So every path agrees with the dot bit for bit.

macro_rules! x86_lowk {
    ($feat:literal) => {
        /// Q2_K rows: each weight block's quants and scales expanded once for all
        /// R activation rows; per row the same exact integer lanes, FMA and
        /// `sum_min` steps as `block_q2_k`.
        #[target_feature(enable = $feat)]
        unsafe fn tile_q2_k<const R: usize>(
            x: &[BlockQ2K],
            y: [&[BlockQ8K]; R],
            d: [&[f32]; R],
            _s: [&[f32]; R],
        ) -> [f32; R] {
            let m3 = _mm256_set1_epi8(3);
            let mut acc = [_mm256_setzero_ps(); R];
            let mut sum_min = [0f32; R];
            for (i, a) in x.iter().enumerate() {
                let mut v = [_mm256_setzero_si256(); 8];
                let mut sc = [_mm256_setzero_si256(); 8];
                for k in 0..2 {
                    let q2 = load(a.qs.as_ptr().add(32 * k));
                    for s in 0..4 {
                        v[4 * k + s] = _mm256_and_si256(
                            _mm256_srl_epi16(q2, _mm_cvtsi32_si128(2 * s as i32)),
                            m3,
                        );
                        let is = 8 * k + 2 * s;
                        sc[4 * k + s] = _mm256_set_m128i(
                            _mm_set1_epi16((a.scales[is + 1] & 0xF) as i16),
                            _mm_set1_epi16((a.scales[is] & 0xF) as i16),
                        );
                    }
                }
                for r in 0..R {
                    let b = y[r].get_unchecked(i);
                    let yd = *d[r].get_unchecked(i);
                    let mut summs = 0i32;
                    for j in 0..16 {
                        summs += b.bsum(j) as i32 * (a.scales[j] >> 4) as i32;
                    }
                    sum_min[r] += f16_mul_f32(a.dmin, yd) * summs as f32;
                    let mut sumi = _mm256_setzero_si256();
                    for t in 0..8 {
                        let yv = load_i8(b.qs.as_ptr().add(32 * t));
                        // maddubs then madd with the (lo, hi) pair, as mul_u8i8_s.
                        sumi = madd_add(sumi, _mm256_maddubs_epi16(v[t], yv), sc[t]);
                    }
                    acc[r] = _mm256_fmadd_ps(
                        _mm256_set1_ps(f16_mul_f32(a.d, yd)),
                        _mm256_cvtepi32_ps(sumi),
                        acc[r],
                    );
                }
            }
            let mut out = [0f32; R];
            for r in 0..R {
                out[r] = hsum_ps(acc[r]) - sum_min[r];
            }
            out
        }

        /// Four Q2_K rows: per row exactly the operations of `dot_q2_k`.
        #[target_feature(enable = $feat)]
        unsafe fn rows4_q2_k(
            x: [&[BlockQ2K]; 4],
            y: &[BlockQ8K],
            _d: &[f32],
            _s: &[f32],
        ) -> [f32; 4] {
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut sum_min = [0f32; 4];
            for (i, b) in y.iter().enumerate() {
                for w in 0..4 {
                    // 84-byte blocks: two lines.
                    prefetch_block(x[w], i, 2);
                    block_q2_k(x[w].get_unchecked(i), b, &mut acc[w], &mut sum_min[w]);
                }
            }
            [0, 1, 2, 3].map(|w| hsum_ps(acc[w]) - sum_min[w])
        }

        #[target_feature(enable = $feat)]
        unsafe fn tile_q3_k<const R: usize>(
            x: &[BlockQ3K],
            y: [&[BlockQ8K]; R],
            _d: [&[f32]; R],
            _s: [&[f32]; R],
        ) -> [f32; R] {
            let mut acc = [_mm256_setzero_ps(); R];
            for (i, a) in x.iter().enumerate() {
                for r in 0..R {
                    block_q3_k(a, y[r].get_unchecked(i), &mut acc[r]);
                }
            }
            acc.map(|v| hsum_ps(v))
        }

        /// Four Q3_K rows: per row exactly the operations of `dot_q3_k`.
        #[target_feature(enable = $feat)]
        unsafe fn rows4_q3_k(
            x: [&[BlockQ3K]; 4],
            y: &[BlockQ8K],
            _d: &[f32],
            _s: &[f32],
        ) -> [f32; 4] {
            let mut acc = [_mm256_setzero_ps(); 4];
            for (i, b) in y.iter().enumerate() {
                for w in 0..4 {
                    // 110-byte blocks: two lines.
                    prefetch_block(x[w], i, 2);
                    block_q3_k(x[w].get_unchecked(i), b, &mut acc[w]);
                }
            }
            acc.map(|v| hsum_ps(v))
        }

        /// Q5_1's 32 unsigned 5-bit quants.
        #[inline(always)]
        unsafe fn q5_1_quants(a: &BlockQ5_1) -> __m256i {
            let b4 = _mm256_set1_epi8(0x10);
            _mm256_or_si256(nibbles32(a.qs.as_ptr()), _mm256_and_si256(bits32(a.qh), b4))
        }

        #[target_feature(enable = $feat)]
        unsafe fn tile_q5_1<const R: usize>(
            x: &[BlockQ5_1],
            y: [&[BlockQ8_1]; R],
            d: [&[f32]; R],
            s: [&[f32]; R],
        ) -> [f32; R] {
            let mut acc = [_mm256_setzero_ps(); R];
            let mut summs = [0f32; R];
            for (i, a) in x.iter().enumerate() {
                let qx = q5_1_quants(a);
                let (wd, wm) = f16_pair(a);
                for r in 0..R {
                    let b = y[r].get_unchecked(i);
                    summs[r] += wm * *s[r].get_unchecked(i);
                    let dd = _mm256_set1_ps(wd * *d[r].get_unchecked(i));
                    let p = mul_u8i8(qx, load_i8(b.qs.as_ptr()));
                    acc[r] = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(p), acc[r]);
                }
            }
            let mut out = [0f32; R];
            for r in 0..R {
                out[r] = hsum_ps(acc[r]) + summs[r];
            }
            out
        }

        /// Four Q5_1 rows: per row exactly the operations of `dot_q5_1`.
        #[target_feature(enable = $feat)]
        unsafe fn rows4_q5_1(
            x: [&[BlockQ5_1]; 4],
            y: &[BlockQ8_1],
            d: &[f32],
            s: &[f32],
        ) -> [f32; 4] {
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut summs = [0f32; 4];
            for (i, b) in y.iter().enumerate() {
                let yv = load_i8(b.qs.as_ptr());
                let (yd, ys) = (*d.get_unchecked(i), *s.get_unchecked(i));
                for w in 0..4 {
                    // 24-byte blocks: a line holds 2.7 of them.
                    _mm_prefetch::<_MM_HINT_T0>(x[w].as_ptr().wrapping_add(i + 96) as *const i8);
                    let a = x[w].get_unchecked(i);
                    let (wd, wm) = f16_pair(a);
                    summs[w] += wm * ys;
                    let dd = _mm256_set1_ps(wd * yd);
                    let p = mul_u8i8(q5_1_quants(a), yv);
                    acc[w] = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(p), acc[w]);
                }
            }
            let mut out = [0f32; 4];
            for w in 0..4 {
                out[w] = hsum_ps(acc[w]) + summs[w];
            }
            out
        }

        tile_entry!(
            t_q5_1,
            tile_q5_1,
            BlockQ5_1,
            BlockQ8_1,
            scales_q8_1,
            Some(rows4_q5_1)
        );
        tile_entry!(
            t_q2_k,
            tile_q2_k,
            BlockQ2K,
            BlockQ8K,
            scales_q8_k,
            Some(rows4_q2_k)
        );
        tile_entry!(
            t_q3_k,
            tile_q3_k,
            BlockQ3K,
            BlockQ8K,
            scales_q8_k,
            Some(rows4_q3_k)
        );
    };
}
