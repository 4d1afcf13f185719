//! Decode kernels: four weight rows against one activation row, with prefetch.

macro_rules! x86_rows {
    ($feat:literal) => {
        // ---- Decode: four weight rows against one activation row. ----
        // Same per-element operations as the tiles in tiles.rs (so a row decoded alone
        // equals the same row in a prefill batch); the activation block is loaded
        // once for four weight rows.

        #[inline(always)]
        unsafe fn rows_signed<W>(
            x: [&[W]; 4],
            y: &[BlockQ8_0],
            d: &[f32],
            ex: impl Fn(&W) -> (__m256i, f32),
        ) -> [f32; 4] {
            let mut acc = [_mm256_setzero_ps(); 4];
            for (i, b) in y.iter().enumerate() {
                let yv = load_i8(b.qs.as_ptr());
                let yd = *d.get_unchecked(i);
                for w in 0..4 {
                    // Decode streams weights once: fetch 128 blocks ahead (rows lie back to back,
                    // so this reaches rows further on; 16 gave 56, 128 gave 96 t/s on Gemma 3).
                    _mm_prefetch::<_MM_HINT_T0>(x[w].as_ptr().wrapping_add(i + 128) as *const i8);
                    let (qx, wd) = ex(x[w].get_unchecked(i));
                    let dd = _mm256_set1_ps(wd * yd);
                    let p = mul_u8i8(_mm256_sign_epi8(qx, qx), _mm256_sign_epi8(yv, qx));
                    acc[w] = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(p), acc[w]);
                }
            }
            acc.map(|v| hsum_ps(v))
        }

        #[target_feature(enable = $feat)]
        unsafe fn rows4_q8_0(
            x: [&[BlockQ8_0]; 4],
            y: &[BlockQ8_0],
            d: &[f32],
            _s: &[f32],
        ) -> [f32; 4] {
            rows_signed(x, y, d, |a| (load_i8(a.qs.as_ptr()), f16_pair(a).0))
        }

        #[target_feature(enable = $feat)]
        unsafe fn rows4_q4_0(
            x: [&[BlockQ4_0]; 4],
            y: &[BlockQ8_0],
            d: &[f32],
            _s: &[f32],
        ) -> [f32; 4] {
            let off = _mm256_set1_epi8(8);
            rows_signed(x, y, d, |a| {
                (
                    _mm256_sub_epi8(nibbles32(a.qs.as_ptr()), off),
                    f16_pair(a).0,
                )
            })
        }

        #[target_feature(enable = $feat)]
        unsafe fn rows4_q5_0(
            x: [&[BlockQ5_0]; 4],
            y: &[BlockQ8_0],
            d: &[f32],
            _s: &[f32],
        ) -> [f32; 4] {
            let hi = _mm256_set1_epi8(0xF0u8 as i8);
            rows_signed(x, y, d, |a| {
                let qx = _mm256_or_si256(
                    nibbles32(a.qs.as_ptr()),
                    _mm256_andnot_si256(bits32(a.qh), hi),
                );
                (qx, f16_pair(a).0)
            })
        }

        #[target_feature(enable = $feat)]
        unsafe fn rows4_iq4_nl(
            x: [&[BlockIQ4NL]; 4],
            y: &[BlockQ8_0],
            d: &[f32],
            _s: &[f32],
        ) -> [f32; 4] {
            let t = _mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i);
            let table = _mm256_set_m128i(t, t);
            rows_signed(x, y, d, |a| {
                (
                    _mm256_shuffle_epi8(table, nibbles32(a.qs.as_ptr())),
                    f16_pair(a).0,
                )
            })
        }

        #[target_feature(enable = $feat)]
        unsafe fn rows4_q4_1(
            x: [&[BlockQ4_1]; 4],
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
                    _mm_prefetch::<_MM_HINT_T0>(x[w].as_ptr().wrapping_add(i + 128) as *const i8);
                    let a = x[w].get_unchecked(i);
                    let (wd, wm) = f16_pair(a);
                    summs[w] += wm * ys;
                    let dd = _mm256_set1_ps(wd * yd);
                    let p = mul_u8i8(nibbles32(a.qs.as_ptr()), yv);
                    acc[w] = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(p), acc[w]);
                }
            }
            let mut out = [0f32; 4];
            for w in 0..4 {
                out[w] = hsum_ps(acc[w]) + summs[w];
            }
            out
        }

        /// Prefetches the bytes of weight block `i + ahead` of a row (K-quant
        /// blocks span several cache lines: one hint per line).
        #[inline(always)]
        unsafe fn prefetch_block<W>(x: &[W], i: usize, lines: usize) {
            let p = (x.as_ptr() as *const i8).wrapping_add(i * std::mem::size_of::<W>() + 2048);
            for l in 0..lines {
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64 * l));
            }
        }

        /// Four Q4_K rows: per row exactly the operations of `tile_q4_k::<1>`.
        #[target_feature(enable = $feat)]
        unsafe fn rows4_q4_k(
            x: [&[BlockQ4K]; 4],
            y: &[BlockQ8K],
            d: &[f32],
            _s: &[f32],
        ) -> [f32; 4] {
            let mut acc = [0f32; 4];
            let mut acc_min = [0f32; 4];
            let m4 = _mm256_set1_epi8(0x0F);
            for (i, b) in y.iter().enumerate() {
                let dd = *d.get_unchecked(i);
                let bs = load(b.bsums.as_ptr() as *const u8);
                for w in 0..4 {
                    prefetch_block(x[w], i, 3);
                    let a = x[w].get_unchecked(i);
                    let (sc, mn) = unpack_scales_mins_k4(&a.scales);
                    let m8 = _mm_loadl_epi64(mn.as_ptr() as *const __m128i);
                    let mins = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));
                    let (wd, wmin) = f16_pair(a);
                    let mut summ = [0i32; 8];
                    _mm256_storeu_si256(
                        summ.as_mut_ptr() as *mut __m256i,
                        _mm256_madd_epi16(mins, bs),
                    );
                    for j in 0..4 {
                        let q4 = load(a.qs.as_ptr().add(32 * j));
                        let lo = _mm256_and_si256(q4, m4);
                        let hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), m4);
                        let (s0, s1) = (sc[2 * j] as i32, sc[2 * j + 1] as i32);
                        let ylo = load_i8(b.qs.as_ptr().add(64 * j));
                        let yhi = load_i8(b.qs.as_ptr().add(64 * j + 32));
                        let p = _mm256_add_epi32(
                            mul_u8i8_s(lo, ylo, s0, s0),
                            mul_u8i8_s(hi, yhi, s1, s1),
                        );
                        acc[w] = (hsum_i32(p) as f32).mul_add(wd * dd, acc[w]);
                        let m = summ[2 * j] + summ[2 * j + 1];
                        acc_min[w] = (m as f32).mul_add(wmin * dd, acc_min[w]);
                    }
                }
            }
            let mut out = [0f32; 4];
            for w in 0..4 {
                out[w] = acc[w] - acc_min[w];
            }
            out
        }

        /// Four Q6_K rows: per row exactly the operations of `tile_q6_k::<1>`
        /// (the same i32 lanes, so the same float rounding). The scale pair of
        /// each 32 quants is spread to i16 lanes by one byte shuffle of the
        /// block's scales instead of two scalar broadcasts (GGML's form): the
        /// decode matvec is the output head's cost on Q4_K_M models.
        #[target_feature(enable = $feat)]
        unsafe fn rows4_q6_k(
            x: [&[BlockQ6K]; 4],
            y: &[BlockQ8K],
            d: &[f32],
            _s: &[f32],
        ) -> [f32; 4] {
            // Shuffle p puts scale 2p in bytes 0..8 and scale 2p+1 in bytes 8..16.
            static SHUF: [[u8; 16]; 8] = {
                let mut t = [[0u8; 16]; 8];
                let mut p = 0;
                while p < 8 {
                    let mut b = 0;
                    while b < 16 {
                        t[p][b] = (2 * p + b / 8) as u8;
                        b += 1;
                    }
                    p += 1;
                }
                t
            };
            let mut acc = [_mm256_setzero_ps(); 4];
            let m4 = _mm256_set1_epi8(0x0F);
            for (i, b) in y.iter().enumerate() {
                let yd = *d.get_unchecked(i);
                let bs = load(b.bsums.as_ptr() as *const u8);
                for w in 0..4 {
                    prefetch_block(x[w], i, 4);
                    let a = x[w].get_unchecked(i);
                    let sc8 = _mm_loadu_si128(a.scales.as_ptr() as *const __m128i);
                    let off = _mm256_madd_epi16(_mm256_cvtepi8_epi16(sc8), bs);
                    let mut sumi =
                        _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(off, 5));
                    for n in 0..2 {
                        let v = q6k_quants(a, n, m4);
                        for (k, vk) in v.iter().enumerate() {
                            let sh = _mm_loadu_si128(SHUF[4 * n + k].as_ptr() as *const __m128i);
                            let sv = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8, sh));
                            let yv = load_i8(b.qs.as_ptr().add(128 * n + 32 * k));
                            // mul_u8i8_s with the pair already in lanes (maddubs then
                            // madd, as every x86 table's mul_u8i8_s does).
                            let p = _mm256_madd_epi16(_mm256_maddubs_epi16(*vk, yv), sv);
                            sumi = _mm256_add_epi32(sumi, p);
                        }
                    }
                    let wd = f16_mul_f32(a.d, 1.0);
                    acc[w] =
                        _mm256_fmadd_ps(_mm256_set1_ps(wd * yd), _mm256_cvtepi32_ps(sumi), acc[w]);
                }
            }
            acc.map(|v| hsum_ps(v))
        }

        /// Four Q5_K rows: per row exactly the operations of `dot_q5_k`.
        #[target_feature(enable = $feat)]
        unsafe fn rows4_q5_k(
            x: [&[BlockQ5K]; 4],
            y: &[BlockQ8K],
            _d: &[f32],
            _s: &[f32],
        ) -> [f32; 4] {
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut sum_min = [0f32; 4];
            for (i, b) in y.iter().enumerate() {
                for w in 0..4 {
                    // 176-byte blocks: three lines.
                    prefetch_block(x[w], i, 3);
                    block_q5_k(x[w].get_unchecked(i), b, &mut acc[w], &mut sum_min[w]);
                }
            }
            [0, 1, 2, 3].map(|w| hsum_ps(acc[w]) - sum_min[w])
        }
    };
}
