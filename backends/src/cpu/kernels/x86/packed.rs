//! Register-tiled GEMM over repacked weights (`crate::cpu::repack`): eight
//! weight rows (one per i32 / f32 lane) against R (1..=4) activation rows.

macro_rules! x86_packed {
    ($feat:literal) => {
        use crate::cpu::repack::{BlockQ4Kx8, GROUP};

        /// Bytes ahead of the block being read that the packed Q4_K kernels
        /// prefetch (two packed blocks of the same group's stream).
        const Q4_AHEAD: usize = 2 * std::mem::size_of::<BlockQ4Kx8>();

        /// Eight Q4_K rows (lane w = row w) against R activation rows. Each lane
        /// runs exactly the float operations of `tile_q4_k::<1>` for its row: per
        /// 64 elements the same exact integer (scales) times wd*yd with one FMA,
        /// the same exact min integer times wmin*yd with one FMA, and scales
        /// minus mins at the end, so its element equals the one-row dot bit for bit.
        /// `sp[r][4 * i + j]` holds row r's sub-block sums S(2j), S(2j+1) of block
        /// i as an i16 pair; `d[r][i]` its scale.
        #[target_feature(enable = $feat)]
        unsafe fn gemm_q4_kx8<const R: usize>(
            x: &[BlockQ4Kx8],
            y: [&[BlockQ8K]; R],
            d: [&[f32]; R],
            sp: [&[i32]; R],
        ) -> [__m256; R] {
            let m4 = _mm256_set1_epi8(0x0F);
            let mut acc = [_mm256_setzero_ps(); R];
            let mut accm = [_mm256_setzero_ps(); R];
            for (i, a) in x.iter().enumerate() {
                let pf = (a as *const BlockQ4Kx8 as *const i8).wrapping_add(Q4_AHEAD);
                let wd = _mm256_cvtph_ps(_mm_load_si128(a.d.as_ptr() as *const __m128i));
                let wm = _mm256_cvtph_ps(_mm_load_si128(a.dmin.as_ptr() as *const __m128i));
                let mut sd = [_mm256_setzero_ps(); R];
                let mut sm = [_mm256_setzero_ps(); R];
                for r in 0..R {
                    let dd = _mm256_set1_ps(*d[r].get_unchecked(i));
                    sd[r] = _mm256_mul_ps(wd, dd);
                    sm[r] = _mm256_mul_ps(wm, dd);
                }
                for j in 0..4 {
                    let mut slo = [_mm256_setzero_si256(); R];
                    let mut shi = [_mm256_setzero_si256(); R];
                    let qj = a.qs[j].as_ptr();
                    for t in 0..5 {
                        _mm_prefetch::<_MM_HINT_T0>(pf.wrapping_add(320 * j + 64 * t));
                    }
                    for c in 0..8 {
                        let q = _mm256_load_si256(qj.add(32 * c) as *const __m256i);
                        let lo = _mm256_and_si256(q, m4);
                        let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                        for r in 0..R {
                            let yb = y[r].get_unchecked(i).qs.as_ptr().add(64 * j + 4 * c);
                            let ylo = _mm256_set1_epi32((yb as *const i32).read_unaligned());
                            let yhi =
                                _mm256_set1_epi32((yb.add(32) as *const i32).read_unaligned());
                            if HAS_DPBUSD {
                                // Exact i32 sums of the sub-block's products per lane.
                                slo[r] = dpbusd(slo[r], lo, ylo);
                                shi[r] = dpbusd(shi[r], hi, yhi);
                            } else {
                                // 16 products of at most 15 * 127 per i16 lane: no overflow.
                                slo[r] = _mm256_add_epi16(slo[r], _mm256_maddubs_epi16(lo, ylo));
                                shi[r] = _mm256_add_epi16(shi[r], _mm256_maddubs_epi16(hi, yhi));
                            }
                        }
                    }
                    let sc_lo = _mm256_cvtepu8_epi16(_mm_load_si128(
                        a.scales[2 * j].as_ptr() as *const __m128i
                    ));
                    let sc_hi = _mm256_cvtepu8_epi16(_mm_load_si128(
                        a.scales[2 * j + 1].as_ptr() as *const __m128i
                    ));
                    let mn =
                        _mm256_cvtepu8_epi16(_mm_load_si128(a.mins[j].as_ptr() as *const __m128i));
                    for r in 0..R {
                        // Either way the sub-block's 32 products times its scale:
                        // i32 sums times the scale (the pair (s, s) as one i32 s),
                        // or i16 pair sums madd-ed with (s, s). The same integers.
                        let p = if HAS_DPBUSD {
                            _mm256_add_epi32(
                                _mm256_mullo_epi32(slo[r], _mm256_srli_epi32(sc_lo, 16)),
                                _mm256_mullo_epi32(shi[r], _mm256_srli_epi32(sc_hi, 16)),
                            )
                        } else {
                            _mm256_add_epi32(
                                _mm256_madd_epi16(slo[r], sc_lo),
                                _mm256_madd_epi16(shi[r], sc_hi),
                            )
                        };
                        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), sd[r], acc[r]);
                        let s = _mm256_set1_epi32(*sp[r].get_unchecked(4 * i + j));
                        let m = _mm256_madd_epi16(mn, s);
                        accm[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(m), sm[r], accm[r]);
                    }
                }
            }
            let mut out = [_mm256_setzero_ps(); R];
            for r in 0..R {
                out[r] = _mm256_sub_ps(acc[r], accm[r]);
            }
            out
        }

        /// Activation scales and sub-block sum pairs for `gemm_q4_kx8`.
        #[target_feature(enable = $feat)]
        unsafe fn prep_packed_q8_k(row: &[BlockQ8K], d: &mut [f32], sp: &mut [i32]) {
            for (i, b) in row.iter().enumerate() {
                *d.get_unchecked_mut(i) = b.d();
                for j in 0..4 {
                    let s =
                        |k: usize| (b.bsum(2 * k) as i32 + b.bsum(2 * k + 1) as i32) as u16 as u32;
                    *sp.get_unchecked_mut(4 * i + j) = (s(2 * j) | s(2 * j + 1) << 16) as i32;
                }
            }
        }

        /// Stores the eight lanes of each `v[t]` at out[(i0 + t) * ostride + j0..],
        /// only the first `valid` of them for a group's partial tail.
        #[inline(always)]
        unsafe fn store_lanes(
            v: &[__m256],
            out: *mut f32,
            ostride: usize,
            i0: usize,
            j0: usize,
            valid: usize,
        ) {
            for (t, vt) in v.iter().enumerate() {
                let o = out.add((i0 + t) * ostride + j0);
                if valid == GROUP {
                    _mm256_storeu_ps(o, *vt);
                } else {
                    let mut tmp = [0f32; GROUP];
                    _mm256_storeu_ps(tmp.as_mut_ptr(), *vt);
                    std::ptr::copy_nonoverlapping(tmp.as_ptr(), o, valid);
                }
            }
        }

        /// The packed Q4_K tile: `p` holds whole groups covering `nrows` weight
        /// rows (each group `nb` blocks), `a` activation rows of `ar` bytes;
        /// writes out[i * ostride + j] = w_j · a_i for j < nrows. Activation rows
        /// go four at a time; each group of four meets every weight group.
        ///
        /// # Safety
        /// The CPU has `$feat`; `out` is valid for every element written.
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = $feat)]
        unsafe fn drive_q4_kx8(
            p: &[u8],
            nb: usize,
            nrows: usize,
            a: &[u8],
            ar: usize,
            out: *mut f32,
            ostride: usize,
        ) {
            let x: &[BlockQ4Kx8] = bytemuck::cast_slice(p);
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
                let (dsc, ssc) = (&*dsc, &*ssc);
                let dv = |t: usize| &dsc[t * nb..][..nb];
                let sv = |t: usize| &ssc[4 * t * nb..][..4 * nb];
                let ar_ = |t: usize| arow(i0 + t);
                for gi in 0..ngroups {
                    let xg = &x[gi * nb..][..nb];
                    let j0 = gi * GROUP;
                    let valid = (nrows - j0).min(GROUP);
                    match g {
                        4 => store_lanes(
                            &gemm_q4_kx8::<4>(
                                xg,
                                [ar_(0), ar_(1), ar_(2), ar_(3)],
                                [dv(0), dv(1), dv(2), dv(3)],
                                [sv(0), sv(1), sv(2), sv(3)],
                            ),
                            out,
                            ostride,
                            i0,
                            j0,
                            valid,
                        ),
                        3 => store_lanes(
                            &gemm_q4_kx8::<3>(
                                xg,
                                [ar_(0), ar_(1), ar_(2)],
                                [dv(0), dv(1), dv(2)],
                                [sv(0), sv(1), sv(2)],
                            ),
                            out,
                            ostride,
                            i0,
                            j0,
                            valid,
                        ),
                        2 => store_lanes(
                            &gemm_q4_kx8::<2>(xg, [ar_(0), ar_(1)], [dv(0), dv(1)], [sv(0), sv(1)]),
                            out,
                            ostride,
                            i0,
                            j0,
                            valid,
                        ),
                        _ => store_lanes(
                            &gemm_q4_kx8::<1>(xg, [ar_(0)], [dv(0)], [sv(0)]),
                            out,
                            ostride,
                            i0,
                            j0,
                            valid,
                        ),
                    }
                }
                i0 += g;
            }
        }

        /// # Safety
        /// As `drive_q4_kx8`, whose features the table holding this was built for.
        unsafe fn p_q4_k(
            p: &[u8],
            nb: usize,
            nrows: usize,
            a: &[u8],
            ar: usize,
            out: *mut f32,
            ostride: usize,
        ) {
            // SAFETY: the table holding this function exists only on CPUs with $feat.
            unsafe { drive_q4_kx8(p, nb, nrows, a, ar, out, ostride) }
        }
    };
}
