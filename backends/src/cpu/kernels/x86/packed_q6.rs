//! Register-tiled Q6_K over repacked weights (`crate::cpu::repack::BlockQ6Kx8`):
//! eight weight rows (one per i32 / f32 lane) against R (1..=4) activation rows,
//! for decode (R = 1, one contiguous stream of eight rows, prefetched) and
//! prefill alike.

macro_rules! x86_packed_q6 {
    ($feat:literal) => {
        use crate::cpu::repack::BlockQ6Kx8;

        /// Bytes ahead of the block being read that decode prefetches (two packed
        /// blocks: the hardware prefetcher alone left the 1.5B Qwen's Q6_K tensors
        /// short of the rate the Q4_K ones stream at).
        const Q6_AHEAD: usize = 2 * std::mem::size_of::<BlockQ6Kx8>();

        /// Eight Q6_K rows (lane w = row w) against R activation rows. The one-row
        /// dot (`dot_q6_k`, `tile_q6_k::<1>`) keeps eight f32 accumulators per row,
        /// lane l fed per block by one exact integer: -32 times the offset of
        /// sub-blocks 2l, 2l+1 plus, for each 32-quant chunk, its bytes 4l..4l+4
        /// times the chunk's scale. Here `acc[r][l]` is that lane for the eight
        /// rows: the same exact integer (`qs[2l + n]` holds those bytes of all
        /// eight rows), the same FMA with wd*yd, and at the end `hsum_ps`'s order
        /// of adding lanes, so each element equals the one-row dot bit for bit.
        #[target_feature(enable = $feat)]
        unsafe fn gemm_q6_kx8<const R: usize>(x: &[BlockQ6Kx8], y: [&[BlockQ8K]; R]) -> [__m256; R] {
            let m4 = _mm256_set1_epi8(0x0F);
            let mut acc = [[_mm256_setzero_ps(); 8]; R];
            for (i, a) in x.iter().enumerate() {
                let pf = (a as *const BlockQ6Kx8 as *const i8).wrapping_add(Q6_AHEAD);
                let wd = _mm256_cvtph_ps(_mm_load_si128(a.d.as_ptr() as *const __m128i));
                let mut dd = [_mm256_setzero_ps(); R];
                for r in 0..R {
                    dd[r] = _mm256_mul_ps(wd, _mm256_set1_ps(y[r].get_unchecked(i).d()));
                }
                // Sub-block j's scale of each row as an i16 pair (s, s).
                let sc = |j: usize| {
                    let s = _mm_loadl_epi64(a.scales.get_unchecked(j).as_ptr() as *const __m128i);
                    _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(s, s))
                };
                let sv: [__m256i; 16] = std::array::from_fn(sc);
                for l in 0..8 {
                    // Each row's (scale 2l, scale 2l+1) against the activation's
                    // bsums 2l, 2l+1: lane l's offset.
                    let pr = _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(
                        _mm_loadl_epi64(a.scales.get_unchecked(2 * l).as_ptr() as *const __m128i),
                        _mm_loadl_epi64(a.scales.get_unchecked(2 * l + 1).as_ptr() as *const __m128i),
                    ));
                    let mut sumi = [_mm256_setzero_si256(); R];
                    for r in 0..R {
                        let b = y[r].get_unchecked(i);
                        let bs = _mm256_set1_epi32(
                            (b.bsums.as_ptr().add(2 * l) as *const i32).read_unaligned(),
                        );
                        let off = _mm256_madd_epi16(pr, bs);
                        sumi[r] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(off, 5));
                    }
                    for n in 0..2 {
                        let q = a.qs.get_unchecked(2 * l + n).as_ptr();
                        _mm_prefetch::<_MM_HINT_T0>(pf.wrapping_add(192 * l + 96 * n));
                        _mm_prefetch::<_MM_HINT_T0>(pf.wrapping_add(192 * l + 96 * n + 64));
                        let q4a = _mm256_load_si256(q as *const __m256i);
                        let q4b = _mm256_load_si256(q.add(32) as *const __m256i);
                        let qh = _mm256_load_si256(q.add(64) as *const __m256i);
                        // As `q6k_quants`: every operation stays inside its byte, so
                        // the interleaving of bytes does not change the quants.
                        let hbits = |mask: u8| _mm256_and_si256(qh, _mm256_set1_epi8(mask as i8));
                        let v = [
                            _mm256_or_si256(_mm256_and_si256(q4a, m4), _mm256_slli_epi16(hbits(0x03), 4)),
                            _mm256_or_si256(_mm256_and_si256(q4b, m4), _mm256_slli_epi16(hbits(0x0C), 2)),
                            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q4a, 4), m4), hbits(0x30)),
                            _mm256_or_si256(
                                _mm256_and_si256(_mm256_srli_epi16(q4b, 4), m4),
                                _mm256_srli_epi16(hbits(0xC0), 2),
                            ),
                        ];
                        for k in 0..4 {
                            // Lanes 0..4 of a chunk take its first scale, 4..8 its second.
                            let s = sv[8 * n + 2 * k + l / 4];
                            for r in 0..R {
                                let yb = y[r].get_unchecked(i).qs.as_ptr().add(128 * n + 32 * k + 4 * l);
                                let y4 = _mm256_set1_epi32((yb as *const i32).read_unaligned());
                                // 2 products of at most 63 * 127 per i16: no saturation.
                                sumi[r] = madd_add(sumi[r], _mm256_maddubs_epi16(v[k], y4), s);
                            }
                        }
                    }
                    for r in 0..R {
                        acc[r][l] = _mm256_fmadd_ps(dd[r], _mm256_cvtepi32_ps(sumi[r]), acc[r][l]);
                    }
                }
            }
            // hsum_ps: ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)).
            acc.map(|c| {
                let t = [0, 1, 2, 3].map(|j| _mm256_add_ps(c[j], c[j + 4]));
                _mm256_add_ps(_mm256_add_ps(t[0], t[2]), _mm256_add_ps(t[1], t[3]))
            })
        }

        /// The packed Q6_K tile, as `drive_q4_kx8` for Q4_K: `p` holds whole groups
        /// covering `nrows` weight rows, `a` activation rows of `ar` bytes; writes
        /// out[i * ostride + j] = w_j · a_i for j < nrows, four activation rows at
        /// a time against every group.
        ///
        /// # Safety
        /// The CPU has `$feat`; `out` is valid for every element written.
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = $feat)]
        unsafe fn drive_q6_kx8(
            p: &[u8],
            nb: usize,
            nrows: usize,
            a: &[u8],
            ar: usize,
            out: *mut f32,
            ostride: usize,
        ) {
            let x: &[BlockQ6Kx8] = bytemuck::cast_slice(p);
            let na = a.len() / ar;
            let arow = |i: usize| -> &[BlockQ8K] { bytemuck::cast_slice(&a[i * ar..][..ar]) };
            let ngroups = nrows.div_ceil(GROUP);
            let mut i0 = 0;
            while i0 < na {
                let g = (na - i0).min(4);
                let ar_ = |t: usize| arow(i0 + t);
                for gi in 0..ngroups {
                    let xg = &x[gi * nb..][..nb];
                    let j0 = gi * GROUP;
                    let valid = (nrows - j0).min(GROUP);
                    match g {
                        4 => store_lanes(
                            &gemm_q6_kx8::<4>(xg, [ar_(0), ar_(1), ar_(2), ar_(3)]),
                            out,
                            ostride,
                            i0,
                            j0,
                            valid,
                        ),
                        3 => store_lanes(
                            &gemm_q6_kx8::<3>(xg, [ar_(0), ar_(1), ar_(2)]),
                            out,
                            ostride,
                            i0,
                            j0,
                            valid,
                        ),
                        2 => store_lanes(&gemm_q6_kx8::<2>(xg, [ar_(0), ar_(1)]), out, ostride, i0, j0, valid),
                        _ => store_lanes(&gemm_q6_kx8::<1>(xg, [ar_(0)]), out, ostride, i0, j0, valid),
                    }
                }
                i0 += g;
            }
        }

        /// # Safety
        /// As `drive_q6_kx8`, whose features the table holding this was built for.
        unsafe fn p_q6_k(
            p: &[u8],
            nb: usize,
            nrows: usize,
            a: &[u8],
            ar: usize,
            out: *mut f32,
            ostride: usize,
        ) {
            // SAFETY: the table holding this function exists only on CPUs with $feat.
            unsafe { drive_q6_kx8(p, nb, nrows, a, ar, out, ostride) }
        }
    };
}
