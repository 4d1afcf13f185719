//! Prefill matmul tiles: one weight row against R (1..=4) activation rows.

macro_rules! x86_tiles {
    ($feat:literal) => {
        // ---- Matmul tiles: one weight row against R (1..=4) activation rows. ----
        //
        // Each output is computed by exactly the operations of the one-row dot
        // (dots.rs, kquant.rs): same block order, same FMA chain into one 8-lane
        // accumulator, same horizontal sum, same scalar corrections, so an element's
        // value never depends on how many rows share its tile: batched equals solo.
        // The weight block is expanded once and reused for every activation row;
        // activation scales arrive as f32 (`d`, and `s` for Q8_1), converted once
        // per group of rows instead of once per weight row. f16 -> f32 is exact,
        // so f32(wd) * d[r] is the same product as the one-row f16_mul.

        /// Horizontal sum of eight i32 lanes.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn hsum_i32(v: __m256i) -> i32 {
            let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
            _mm_cvtsi128_si32(s)
        }

        /// Activation block scales as f32: `d` per block, and `s` for Q8_1.
        #[target_feature(enable = $feat)]
        unsafe fn scales_q8_0(a: &[BlockQ8_0], d: &mut [f32], _s: &mut [f32]) {
            for (b, d) in a.iter().zip(d) {
                *d = f16_pair(b).0;
            }
        }
        #[target_feature(enable = $feat)]
        unsafe fn scales_q8_1(a: &[BlockQ8_1], d: &mut [f32], s: &mut [f32]) {
            for ((b, d), s) in a.iter().zip(d).zip(s) {
                (*d, *s) = f16_pair(b);
            }
        }
        #[target_feature(enable = $feat)]
        unsafe fn scales_q8_k(a: &[BlockQ8K], d: &mut [f32], _s: &mut [f32]) {
            for (b, d) in a.iter().zip(d) {
                *d = b.d();
            }
        }

        /// Signed weight bytes `qx` against R activation rows (Q8_0 activations).
        #[inline(always)]
        unsafe fn tile_signed<const R: usize>(
            qx: __m256i,
            wd: f32,
            i: usize,
            y: &[&[BlockQ8_0]; R],
            d: &[&[f32]; R],
            acc: &mut [__m256; R],
        ) {
            let ax = _mm256_sign_epi8(qx, qx);
            for r in 0..R {
                let b = y[r].get_unchecked(i);
                let dd = _mm256_set1_ps(wd * *d[r].get_unchecked(i));
                let p = mul_u8i8(ax, _mm256_sign_epi8(load_i8(b.qs.as_ptr()), qx));
                acc[r] = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(p), acc[r]);
            }
        }

        #[target_feature(enable = $feat)]
        unsafe fn tile_q8_0<const R: usize>(
            x: &[BlockQ8_0],
            y: [&[BlockQ8_0]; R],
            d: [&[f32]; R],
            _s: [&[f32]; R],
        ) -> [f32; R] {
            let mut acc = [_mm256_setzero_ps(); R];
            for (i, a) in x.iter().enumerate() {
                tile_signed(load_i8(a.qs.as_ptr()), f16_pair(a).0, i, &y, &d, &mut acc);
            }
            acc.map(|v| hsum_ps(v))
        }

        #[target_feature(enable = $feat)]
        unsafe fn tile_q4_0<const R: usize>(
            x: &[BlockQ4_0],
            y: [&[BlockQ8_0]; R],
            d: [&[f32]; R],
            _s: [&[f32]; R],
        ) -> [f32; R] {
            let mut acc = [_mm256_setzero_ps(); R];
            let off = _mm256_set1_epi8(8);
            for (i, a) in x.iter().enumerate() {
                let qx = _mm256_sub_epi8(nibbles32(a.qs.as_ptr()), off);
                tile_signed(qx, f16_pair(a).0, i, &y, &d, &mut acc);
            }
            acc.map(|v| hsum_ps(v))
        }

        #[target_feature(enable = $feat)]
        unsafe fn tile_q5_0<const R: usize>(
            x: &[BlockQ5_0],
            y: [&[BlockQ8_0]; R],
            d: [&[f32]; R],
            _s: [&[f32]; R],
        ) -> [f32; R] {
            let mut acc = [_mm256_setzero_ps(); R];
            let hi = _mm256_set1_epi8(0xF0u8 as i8);
            for (i, a) in x.iter().enumerate() {
                let qx = _mm256_or_si256(
                    nibbles32(a.qs.as_ptr()),
                    _mm256_andnot_si256(bits32(a.qh), hi),
                );
                tile_signed(qx, f16_pair(a).0, i, &y, &d, &mut acc);
            }
            acc.map(|v| hsum_ps(v))
        }

        #[target_feature(enable = $feat)]
        unsafe fn tile_iq4_nl<const R: usize>(
            x: &[BlockIQ4NL],
            y: [&[BlockQ8_0]; R],
            d: [&[f32]; R],
            _s: [&[f32]; R],
        ) -> [f32; R] {
            let t = _mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i);
            let table = _mm256_set_m128i(t, t);
            let mut acc = [_mm256_setzero_ps(); R];
            for (i, a) in x.iter().enumerate() {
                let qx = _mm256_shuffle_epi8(table, nibbles32(a.qs.as_ptr()));
                tile_signed(qx, f16_pair(a).0, i, &y, &d, &mut acc);
            }
            acc.map(|v| hsum_ps(v))
        }

        #[target_feature(enable = $feat)]
        unsafe fn tile_q5_k<const R: usize>(
            x: &[BlockQ5K],
            y: [&[BlockQ8K]; R],
            _d: [&[f32]; R],
            _s: [&[f32]; R],
        ) -> [f32; R] {
            let mut acc = [_mm256_setzero_ps(); R];
            let mut sum_min = [0f32; R];
            for (i, a) in x.iter().enumerate() {
                for r in 0..R {
                    block_q5_k(a, y[r].get_unchecked(i), &mut acc[r], &mut sum_min[r]);
                }
            }
            let mut out = [0f32; R];
            for r in 0..R {
                out[r] = hsum_ps(acc[r]) - sum_min[r];
            }
            out
        }

        #[target_feature(enable = $feat)]
        unsafe fn tile_q4_1<const R: usize>(
            x: &[BlockQ4_1],
            y: [&[BlockQ8_1]; R],
            d: [&[f32]; R],
            s: [&[f32]; R],
        ) -> [f32; R] {
            let mut acc = [_mm256_setzero_ps(); R];
            let mut summs = [0f32; R];
            for (i, a) in x.iter().enumerate() {
                let qx = nibbles32(a.qs.as_ptr());
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

        /// Q4_K rows as `dot_q4_k` describes. `d` holds the activation scales,
        /// or is empty to read them from the blocks.
        #[target_feature(enable = $feat)]
        unsafe fn tile_q4_k<const R: usize>(
            x: &[BlockQ4K],
            y: [&[BlockQ8K]; R],
            d: [&[f32]; R],
            _s: [&[f32]; R],
        ) -> [f32; R] {
            let mut acc = [0f32; R];
            let mut acc_min = [0f32; R];
            let m4 = _mm256_set1_epi8(0x0F);
            for (i, a) in x.iter().enumerate() {
                let (sc, mn) = unpack_scales_mins_k4(&a.scales);
                // mins[j / 2] for j in 0..16 as i16 lanes, against the 16 bsums:
                // lane l of the product is min l times the sum of sub-block l.
                let m8 = _mm_loadl_epi64(mn.as_ptr() as *const __m128i);
                let mins = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));
                let (wd, wmin) = f16_pair(a);
                let mut dd = [0f32; R];
                let mut summ = [[0i32; 8]; R];
                for r in 0..R {
                    let b = y[r].get_unchecked(i);
                    dd[r] = if d[r].is_empty() {
                        b.d()
                    } else {
                        *d[r].get_unchecked(i)
                    };
                    let bs = load(b.bsums.as_ptr() as *const u8);
                    _mm256_storeu_si256(
                        summ[r].as_mut_ptr() as *mut __m256i,
                        _mm256_madd_epi16(mins, bs),
                    );
                }
                for j in 0..4 {
                    let q4 = load(a.qs.as_ptr().add(32 * j));
                    let lo = _mm256_and_si256(q4, m4);
                    let hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), m4);
                    let (s0, s1) = (sc[2 * j] as i32, sc[2 * j + 1] as i32);
                    for r in 0..R {
                        let b = y[r].get_unchecked(i);
                        let ylo = load_i8(b.qs.as_ptr().add(64 * j));
                        let yhi = load_i8(b.qs.as_ptr().add(64 * j + 32));
                        let p = _mm256_add_epi32(
                            mul_u8i8_s(lo, ylo, s0, s0),
                            mul_u8i8_s(hi, yhi, s1, s1),
                        );
                        acc[r] = (hsum_i32(p) as f32).mul_add(wd * dd[r], acc[r]);
                        let m = summ[r][2 * j] + summ[r][2 * j + 1];
                        acc_min[r] = (m as f32).mul_add(wmin * dd[r], acc_min[r]);
                    }
                }
            }
            let mut out = [0f32; R];
            for r in 0..R {
                out[r] = acc[r] - acc_min[r];
            }
            out
        }

        #[target_feature(enable = $feat)]
        unsafe fn tile_q6_k<const R: usize>(
            x: &[BlockQ6K],
            y: [&[BlockQ8K]; R],
            d: [&[f32]; R],
            _s: [&[f32]; R],
        ) -> [f32; R] {
            let mut acc = [_mm256_setzero_ps(); R];
            let m4 = _mm256_set1_epi8(0x0F);
            for (i, a) in x.iter().enumerate() {
                let scales =
                    _mm256_cvtepi8_epi16(_mm_loadu_si128(a.scales.as_ptr() as *const __m128i));
                let mut sumi = [_mm256_setzero_si256(); R];
                for r in 0..R {
                    let b = y[r].get_unchecked(i);
                    // Lane l takes the offset of sub-blocks 2l and 2l+1 (GGML's lane sums).
                    let off = _mm256_madd_epi16(scales, load(b.bsums.as_ptr() as *const u8));
                    sumi[r] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(off, 5));
                }
                for n in 0..2 {
                    let v = q6k_quants(a, n, m4);
                    for (k, vk) in v.iter().enumerate() {
                        let is = 8 * n + 2 * k;
                        let (s0, s1) = (a.scales[is] as i32, a.scales[is + 1] as i32);
                        for r in 0..R {
                            let b = y[r].get_unchecked(i);
                            let yv = load_i8(b.qs.as_ptr().add(128 * n + 32 * k));
                            sumi[r] = _mm256_add_epi32(sumi[r], mul_u8i8_s(*vk, yv, s0, s1));
                        }
                    }
                }
                let wd = f16_mul_f32(a.d, 1.0);
                for r in 0..R {
                    acc[r] = _mm256_fmadd_ps(
                        _mm256_set1_ps(wd * *d[r].get_unchecked(i)),
                        _mm256_cvtepi32_ps(sumi[r]),
                        acc[r],
                    );
                }
            }
            acc.map(|v| hsum_ps(v))
        }
    };
}
