//! Register-tiled Q5_K over repacked weights (`crate::cpu::repack::BlockQ5Kx8`):
//! eight weight rows (one per i32 / f32 lane) against R (1..=4) activation rows,
//! for decode (R = 1, one contiguous prefetched stream of eight rows) and
//! prefill alike.

macro_rules! x86_packed_q5 {
    ($feat:literal) => {
        use crate::cpu::repack::BlockQ5Kx8;

        /// Bytes ahead of the block being read that the kernel prefetches (two
        /// packed blocks of the same group's stream).
        const Q5_AHEAD: usize = 2 * std::mem::size_of::<BlockQ5Kx8>();

        /// Eight Q5_K rows (lane w = row w) against R activation rows. The one-row
        /// dot (`block_q5_k`) keeps eight f32 accumulators per row, lane l fed per
        /// block by one exact integer: for each 64 elements j, bytes 4l..4l+4 of
        /// its low and high 32-quant chunks times their scales. Here `acc[r][l]` is
        /// that lane for the eight rows (`qs[4l + j]` and `qh[l]` hold those bytes
        /// of all eight rows), added with the same FMA times wd*yd; the min term
        /// is the same exact integer times dmin*yd, added per block as the scalar
        /// `sum_min` is; at the end `hsum_ps`'s order of lanes, minus the mins. So
        /// each element equals the one-row dot bit for bit. `sp[r][4 * i + k]`
        /// holds row r's sums of sub-blocks 2k, 2k+1 of block i as an i16 pair.
        #[target_feature(enable = $feat)]
        unsafe fn gemm_q5_kx8<const R: usize>(
            x: &[BlockQ5Kx8],
            y: [&[BlockQ8K]; R],
            sp: [&[i32]; R],
        ) -> [__m256; R] {
            let m4 = _mm256_set1_epi8(0x0F);
            let b4 = _mm256_set1_epi8(0x10);
            let mut acc = [[_mm256_setzero_ps(); 8]; R];
            let mut accm = [_mm256_setzero_ps(); R];
            for (i, a) in x.iter().enumerate() {
                let pf = (a as *const BlockQ5Kx8 as *const i8).wrapping_add(Q5_AHEAD);
                let wd = _mm256_cvtph_ps(_mm_load_si128(a.d.as_ptr() as *const __m128i));
                let wm = _mm256_cvtph_ps(_mm_load_si128(a.dmin.as_ptr() as *const __m128i));
                // Sub-block k's scale of each row as an i16 pair (s, s).
                let sv: [__m256i; 8] = std::array::from_fn(|k| {
                    let s = _mm_loadl_epi64(a.scales.get_unchecked(k).as_ptr() as *const __m128i);
                    _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(s, s))
                });
                let mut dd = [_mm256_setzero_ps(); R];
                for r in 0..R {
                    let yd = _mm256_set1_ps(y[r].get_unchecked(i).d());
                    dd[r] = _mm256_mul_ps(wd, yd);
                    // Σ_k min_k * (bsum 2k + bsum 2k+1): exact, any order.
                    let mut summ = _mm256_setzero_si256();
                    for k in 0..4 {
                        let mn = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(
                            _mm_loadl_epi64(a.mins.get_unchecked(2 * k).as_ptr() as *const __m128i),
                            _mm_loadl_epi64(
                                a.mins.get_unchecked(2 * k + 1).as_ptr() as *const __m128i
                            ),
                        ));
                        let s = _mm256_set1_epi32(*sp[r].get_unchecked(4 * i + k));
                        summ = _mm256_add_epi32(summ, _mm256_madd_epi16(mn, s));
                    }
                    // sum_min += (dmin * yd) * summ, as the scalar does (no FMA).
                    let t = _mm256_mul_ps(_mm256_mul_ps(wm, yd), _mm256_cvtepi32_ps(summ));
                    accm[r] = _mm256_add_ps(accm[r], t);
                }
                for l in 0..8 {
                    let hb = _mm256_load_si256(a.qh.get_unchecked(l).as_ptr() as *const __m256i);
                    _mm_prefetch::<_MM_HINT_T0>(pf.wrapping_add(128 * l));
                    _mm_prefetch::<_MM_HINT_T0>(pf.wrapping_add(128 * l + 64));
                    if l < 2 {
                        _mm_prefetch::<_MM_HINT_T0>(pf.wrapping_add(1024 + 128 * l));
                        _mm_prefetch::<_MM_HINT_T0>(pf.wrapping_add(1024 + 128 * l + 64));
                    }
                    let mut sumi = [_mm256_setzero_si256(); R];
                    for j in 0..4 {
                        let q = _mm256_load_si256(
                            a.qs.get_unchecked(4 * l + j).as_ptr() as *const __m256i
                        );
                        // The fifth bits: bit 2j (low chunk) and 2j+1 (high) of each
                        // qh byte moved to bit 4. The 16-bit shifts move bits across
                        // a byte edge only into bits the mask drops.
                        let (h0, h1) = match j {
                            0 => (_mm256_slli_epi16(hb, 4), _mm256_slli_epi16(hb, 3)),
                            1 => (_mm256_slli_epi16(hb, 2), _mm256_slli_epi16(hb, 1)),
                            2 => (hb, _mm256_srli_epi16(hb, 1)),
                            _ => (_mm256_srli_epi16(hb, 2), _mm256_srli_epi16(hb, 3)),
                        };
                        let lo = _mm256_or_si256(_mm256_and_si256(q, m4), _mm256_and_si256(h0, b4));
                        let hi = _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16(q, 4), m4),
                            _mm256_and_si256(h1, b4),
                        );
                        for r in 0..R {
                            let yb = y[r].get_unchecked(i).qs.as_ptr().add(64 * j + 4 * l);
                            let ylo = _mm256_set1_epi32((yb as *const i32).read_unaligned());
                            let yhi =
                                _mm256_set1_epi32((yb.add(32) as *const i32).read_unaligned());
                            // 2 products of at most 31 * 127 per i16: no saturation.
                            sumi[r] = madd_add(sumi[r], _mm256_maddubs_epi16(lo, ylo), sv[2 * j]);
                            sumi[r] =
                                madd_add(sumi[r], _mm256_maddubs_epi16(hi, yhi), sv[2 * j + 1]);
                        }
                    }
                    for r in 0..R {
                        acc[r][l] = _mm256_fmadd_ps(dd[r], _mm256_cvtepi32_ps(sumi[r]), acc[r][l]);
                    }
                }
            }
            // hsum_ps: ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)), minus the mins.
            let mut out = [_mm256_setzero_ps(); R];
            for r in 0..R {
                let c = &acc[r];
                let t = [0, 1, 2, 3].map(|j| _mm256_add_ps(c[j], c[j + 4]));
                let s = _mm256_add_ps(_mm256_add_ps(t[0], t[2]), _mm256_add_ps(t[1], t[3]));
                out[r] = _mm256_sub_ps(s, accm[r]);
            }
            out
        }

        /// The packed Q5_K tile, as `drive_q4_kx8` for Q4_K: `p` holds whole groups
        /// covering `nrows` weight rows, `a` activation rows of `ar` bytes; writes
        /// out[i * ostride + j] = w_j · a_i for j < nrows, four activation rows at
        /// a time against every group.
        ///
        /// # Safety
        /// The CPU has `$feat`; `out` is valid for every element written.
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = $feat)]
        unsafe fn drive_q5_kx8(
            p: &[u8],
            nb: usize,
            nrows: usize,
            a: &[u8],
            ar: usize,
            out: *mut f32,
            ostride: usize,
        ) {
            let x: &[BlockQ5Kx8] = bytemuck::cast_slice(p);
            let na = a.len() / ar;
            let mut stack_d = [0f32; 4 * 64];
            let mut stack_s = [0i32; 4 * 4 * 64];
            let (mut heap_d, mut heap_s) = (Vec::new(), Vec::new());
            let (dsc, ssc): (&mut [f32], &mut [i32]) = if nb <= 64 {
                (&mut stack_d[..4 * nb], &mut stack_s[..16 * nb])
            } else {
                heap_d.resize(4 * nb, 0f32);
                heap_s.resize(16 * nb, 0i32);
                (&mut heap_d, &mut heap_s)
            };
            let arow = |i: usize| -> &[BlockQ8K] { bytemuck::cast_slice(&a[i * ar..][..ar]) };
            let ngroups = nrows.div_ceil(GROUP);
            let mut i0 = 0;
            while i0 < na {
                let g = (na - i0).min(4);
                for t in 0..g {
                    prep_packed_q8_k(
                        arow(i0 + t),
                        &mut dsc[t * nb..][..nb],
                        &mut ssc[4 * t * nb..][..4 * nb],
                    );
                }
                let ssc = &*ssc;
                let sv = |t: usize| &ssc[4 * t * nb..][..4 * nb];
                let ar_ = |t: usize| arow(i0 + t);
                for gi in 0..ngroups {
                    let xg = &x[gi * nb..][..nb];
                    let j0 = gi * GROUP;
                    let valid = (nrows - j0).min(GROUP);
                    let v = match g {
                        4 => gemm_q5_kx8::<4>(
                            xg,
                            [ar_(0), ar_(1), ar_(2), ar_(3)],
                            [sv(0), sv(1), sv(2), sv(3)],
                        ),
                        3 => {
                            let v = gemm_q5_kx8::<3>(
                                xg,
                                [ar_(0), ar_(1), ar_(2)],
                                [sv(0), sv(1), sv(2)],
                            );
                            [v[0], v[1], v[2], _mm256_setzero_ps()]
                        }
                        2 => {
                            let v = gemm_q5_kx8::<2>(xg, [ar_(0), ar_(1)], [sv(0), sv(1)]);
                            [v[0], v[1], _mm256_setzero_ps(), _mm256_setzero_ps()]
                        }
                        _ => {
                            let v = gemm_q5_kx8::<1>(xg, [ar_(0)], [sv(0)]);
                            [
                                v[0],
                                _mm256_setzero_ps(),
                                _mm256_setzero_ps(),
                                _mm256_setzero_ps(),
                            ]
                        }
                    };
                    store_lanes(&v[..g], out, ostride, i0, j0, valid);
                }
                i0 += g;
            }
        }

        /// # Safety
        /// As `drive_q5_kx8`, whose features the table holding this was built for.
        unsafe fn p_q5_k(
            p: &[u8],
            nb: usize,
            nrows: usize,
            a: &[u8],
            ar: usize,
            out: *mut f32,
            ostride: usize,
        ) {
            // SAFETY: the table holding this function exists only on CPUs with $feat.
            unsafe { drive_q5_kx8(p, nb, nrows, a, ar, out, ostride) }
        }
    };
}
