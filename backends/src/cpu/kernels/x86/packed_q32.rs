//! Register-tiled Q8_0, Q4_0, Q4_1 and Q5_0 over repacked weights
//! (`crate::cpu::repack::{BlockQ8_0x8, ..}`, two 32-element blocks of eight
//! rows each): eight weight rows (one per i32 / f32 lane) against R (1..=4)
//! activation rows, for decode (R = 1, one contiguous prefetched stream of
//! eight rows) and prefill alike.
//!
//! The one-row dots (dots.rs) keep one 8-lane f32 accumulator per row, lane l
//! fed per block by one exact integer (the products of elements 4l..4l+4) times
//! wd*yd with one FMA, and end with `hsum_ps`. Here `acc[r][l]` is lane l for
//! eight rows: the same exact integers (whether formed by the sign trick or
//! unsigned, the sums are exact), the same wd*yd product, the same FMA chain
//! over the blocks in order, and `hsum_ps`'s order of adding lanes at the end,
//! so every element equals the one-row dot bit for bit.

macro_rules! x86_packed_q32 {
    ($feat:literal) => {
        use crate::cpu::repack::{BlockQ4_0x8, BlockQ4_1x8, BlockQ5_0x8, BlockQ8_0x8};

        /// Eight lane accumulators of eight rows summed as `hsum_ps` sums the
        /// lanes of one: ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)).
        #[inline(always)]
        unsafe fn hsum_lanes(c: [__m256; 8]) -> __m256 {
            let t = [0, 1, 2, 3].map(|j| _mm256_add_ps(c[j], c[j + 4]));
            _mm256_add_ps(_mm256_add_ps(t[0], t[2]), _mm256_add_ps(t[1], t[3]))
        }

        /// Prefetches the packed block two ahead of `a` (decode streams each
        /// group once; `lines` cache lines a block).
        #[inline(always)]
        unsafe fn prefetch_ahead<P>(a: &P) {
            let pf = (a as *const P as *const i8).wrapping_add(2 * std::mem::size_of::<P>());
            for t in 0..std::mem::size_of::<P>().div_ceil(64) {
                _mm_prefetch::<_MM_HINT_T0>(pf.wrapping_add(64 * t));
            }
        }

        /// Lane l (0..8) of a nibble vector: low nibbles for lanes 0..4, high for 4..8.
        #[inline(always)]
        unsafe fn nibble_lane(q: &[[u8; 32]; 8], h: usize, l: usize) -> __m256i {
            let v = _mm256_load_si256(q.get_unchecked(4 * h + l % 4).as_ptr() as *const __m256i);
            let v = if l < 4 { v } else { _mm256_srli_epi16(v, 4) };
            _mm256_and_si256(v, _mm256_set1_epi8(0x0F))
        }

        /// The signed types: `ex(block, h, l)` gives lane l of half h as signed
        /// bytes (eight rows), `wd(block, h)` the rows' scales of half h.
        #[inline(always)]
        unsafe fn gemm_signed_x8<P, const R: usize>(
            x: &[P],
            y: [&[BlockQ8_0]; R],
            d: [&[f32]; R],
            ex: impl Fn(&P, usize, usize) -> __m256i,
            wd: impl Fn(&P, usize) -> __m256,
        ) -> [__m256; R] {
            let mut acc = [[_mm256_setzero_ps(); 8]; R];
            for (i, a) in x.iter().enumerate() {
                prefetch_ahead(a);
                for h in 0..2 {
                    let k = 2 * i + h;
                    let w = wd(a, h);
                    let mut dd = [_mm256_setzero_ps(); R];
                    for r in 0..R {
                        dd[r] = _mm256_mul_ps(w, _mm256_set1_ps(*d[r].get_unchecked(k)));
                    }
                    for l in [0, 4, 1, 5, 2, 6, 3, 7] {
                        let qx = ex(a, h, l);
                        let ax = _mm256_sign_epi8(qx, qx);
                        for r in 0..R {
                            let yb = y[r].get_unchecked(k).qs.as_ptr().add(4 * l);
                            let y4 = _mm256_set1_epi32((yb as *const i32).read_unaligned());
                            let p = mul_u8i8(ax, _mm256_sign_epi8(y4, qx));
                            acc[r][l] = _mm256_fmadd_ps(dd[r], _mm256_cvtepi32_ps(p), acc[r][l]);
                        }
                    }
                }
            }
            acc.map(|c| hsum_lanes(c))
        }

        /// Eight rows' f16 scales `d[8h..8h + 8]` as f32.
        #[inline(always)]
        unsafe fn scales8(d: &[u16; 16], h: usize) -> __m256 {
            _mm256_cvtph_ps(_mm_load_si128(d.as_ptr().add(8 * h) as *const __m128i))
        }

        #[target_feature(enable = $feat)]
        unsafe fn gemm_q8_0x8<const R: usize>(
            x: &[BlockQ8_0x8],
            y: [&[BlockQ8_0]; R],
            d: [&[f32]; R],
            _s: [&[f32]; R],
        ) -> [__m256; R] {
            gemm_signed_x8(
                x,
                y,
                d,
                |a: &BlockQ8_0x8, h, l| {
                    _mm256_load_si256(a.qs.get_unchecked(8 * h + l).as_ptr() as *const __m256i)
                },
                |a: &BlockQ8_0x8, h| scales8(&a.d, h),
            )
        }

        #[target_feature(enable = $feat)]
        unsafe fn gemm_q4_0x8<const R: usize>(
            x: &[BlockQ4_0x8],
            y: [&[BlockQ8_0]; R],
            d: [&[f32]; R],
            _s: [&[f32]; R],
        ) -> [__m256; R] {
            gemm_signed_x8(
                x,
                y,
                d,
                |a: &BlockQ4_0x8, h, l| {
                    _mm256_sub_epi8(nibble_lane(&a.qs, h, l), _mm256_set1_epi8(8))
                },
                |a: &BlockQ4_0x8, h| scales8(&a.d, h),
            )
        }

        #[target_feature(enable = $feat)]
        unsafe fn gemm_q5_0x8<const R: usize>(
            x: &[BlockQ5_0x8],
            y: [&[BlockQ8_0]; R],
            d: [&[f32]; R],
            _s: [&[f32]; R],
        ) -> [__m256; R] {
            gemm_signed_x8(
                x,
                y,
                d,
                |a: &BlockQ5_0x8, h, l| {
                    // Bit l of each byte to bit 4 (every shift stays inside its
                    // byte once masked), then q - 16 as a signed byte.
                    let hb = _mm256_load_si256(a.qh.get_unchecked(h).as_ptr() as *const __m256i);
                    let hb = if l <= 4 {
                        _mm256_sll_epi16(hb, _mm_cvtsi32_si128(4 - l as i32))
                    } else {
                        _mm256_srl_epi16(hb, _mm_cvtsi32_si128(l as i32 - 4))
                    };
                    let q = _mm256_or_si256(
                        nibble_lane(&a.qs, h, l),
                        _mm256_and_si256(hb, _mm256_set1_epi8(0x10)),
                    );
                    _mm256_sub_epi8(q, _mm256_set1_epi8(16))
                },
                |a: &BlockQ5_0x8, h| scales8(&a.d, h),
            )
        }

        /// Q4_1: unsigned nibbles against the activation bytes, plus the scalar
        /// chain of offsets (`summs += m * s` per block, as `dot_q4_1`) added
        /// after the horizontal sum.
        #[target_feature(enable = $feat)]
        unsafe fn gemm_q4_1x8<const R: usize>(
            x: &[BlockQ4_1x8],
            y: [&[BlockQ8_1]; R],
            d: [&[f32]; R],
            s: [&[f32]; R],
        ) -> [__m256; R] {
            let mut acc = [[_mm256_setzero_ps(); 8]; R];
            let mut summs = [_mm256_setzero_ps(); R];
            for (i, a) in x.iter().enumerate() {
                prefetch_ahead(a);
                for h in 0..2 {
                    let k = 2 * i + h;
                    let w = scales8(&a.d, h);
                    let m = scales8(&a.m, h);
                    let mut dd = [_mm256_setzero_ps(); R];
                    for r in 0..R {
                        dd[r] = _mm256_mul_ps(w, _mm256_set1_ps(*d[r].get_unchecked(k)));
                        let sm = _mm256_mul_ps(m, _mm256_set1_ps(*s[r].get_unchecked(k)));
                        summs[r] = _mm256_add_ps(summs[r], sm);
                    }
                    for l in [0, 4, 1, 5, 2, 6, 3, 7] {
                        let qx = nibble_lane(&a.qs, h, l);
                        for r in 0..R {
                            let yb = y[r].get_unchecked(k).qs.as_ptr().add(4 * l);
                            let y4 = _mm256_set1_epi32((yb as *const i32).read_unaligned());
                            let p = mul_u8i8(qx, y4);
                            acc[r][l] = _mm256_fmadd_ps(dd[r], _mm256_cvtepi32_ps(p), acc[r][l]);
                        }
                    }
                }
            }
            let mut out = [_mm256_setzero_ps(); R];
            for r in 0..R {
                out[r] = _mm256_add_ps(hsum_lanes(acc[r]), summs[r]);
            }
            out
        }

        type GemmX8<P, A, const R: usize> =
            unsafe fn(&[P], [&[A]; R], [&[f32]; R], [&[f32]; R]) -> [__m256; R];

        /// The packed tile of a 32-element type: `p` holds whole groups covering
        /// `nrows` weight rows (`nb` packed blocks each), `a` activation rows of
        /// `ar` bytes; writes out[i * ostride + j] = w_j · a_i for j < nrows,
        /// four activation rows (their scales converted to f32 once) at a time
        /// against every group.
        ///
        /// # Safety
        /// The CPU has `$feat`; `out` is valid for every element written.
        #[allow(clippy::too_many_arguments)]
        #[inline(always)]
        unsafe fn drive_q32x8<P: bytemuck::Pod, A: bytemuck::Pod>(
            p: &[u8],
            nb: usize,
            nrows: usize,
            a: &[u8],
            ar: usize,
            out: *mut f32,
            ostride: usize,
            scales: unsafe fn(&[A], &mut [f32], &mut [f32]),
            k: (
                GemmX8<P, A, 1>,
                GemmX8<P, A, 2>,
                GemmX8<P, A, 3>,
                GemmX8<P, A, 4>,
            ),
        ) {
            let x: &[P] = bytemuck::cast_slice(p);
            let na = a.len() / ar;
            // Mapped blocks per activation row.
            let nk = 2 * nb;
            let mut stack = [0f32; 8 * 256];
            let mut heap = Vec::new();
            let sc: &mut [f32] = if 8 * nk <= stack.len() {
                &mut stack[..8 * nk]
            } else {
                heap.resize(8 * nk, 0f32);
                &mut heap
            };
            let (dsc, ssc) = sc.split_at_mut(4 * nk);
            let arow = |i: usize| -> &[A] { bytemuck::cast_slice(&a[i * ar..][..ar]) };
            let ngroups = nrows.div_ceil(GROUP);
            let mut i0 = 0;
            while i0 < na {
                let g = (na - i0).min(4);
                for t in 0..g {
                    scales(
                        arow(i0 + t),
                        &mut dsc[t * nk..][..nk],
                        &mut ssc[t * nk..][..nk],
                    );
                }
                let (dsc, ssc) = (&*dsc, &*ssc);
                let dv = |t: usize| &dsc[t * nk..][..nk];
                let sv = |t: usize| &ssc[t * nk..][..nk];
                let ar_ = |t: usize| arow(i0 + t);
                for gi in 0..ngroups {
                    let xg = &x[gi * nb..][..nb];
                    let j0 = gi * GROUP;
                    let valid = (nrows - j0).min(GROUP);
                    let mut v = [_mm256_setzero_ps(); 4];
                    match g {
                        4 => {
                            v = (k.3)(
                                xg,
                                [ar_(0), ar_(1), ar_(2), ar_(3)],
                                [dv(0), dv(1), dv(2), dv(3)],
                                [sv(0), sv(1), sv(2), sv(3)],
                            )
                        }
                        3 => v[..3].copy_from_slice(&(k.2)(
                            xg,
                            [ar_(0), ar_(1), ar_(2)],
                            [dv(0), dv(1), dv(2)],
                            [sv(0), sv(1), sv(2)],
                        )),
                        2 => v[..2].copy_from_slice(&(k.1)(
                            xg,
                            [ar_(0), ar_(1)],
                            [dv(0), dv(1)],
                            [sv(0), sv(1)],
                        )),
                        _ => v[..1].copy_from_slice(&(k.0)(xg, [ar_(0)], [dv(0)], [sv(0)])),
                    }
                    store_lanes(&v[..g], out, ostride, i0, j0, valid);
                }
                i0 += g;
            }
        }

        macro_rules! packed_q32_entry {
            ($name:ident, $imp:ident, $P:ty, $A:ty, $sc:ident) => {
                /// # Safety
                /// As `drive_q32x8`, whose features the table holding this was built for.
                unsafe fn $name(
                    p: &[u8],
                    nb: usize,
                    nrows: usize,
                    a: &[u8],
                    ar: usize,
                    out: *mut f32,
                    ostride: usize,
                ) {
                    // SAFETY: the table holding this function exists only on CPUs
                    // with $feat; the caller vouches for `out`.
                    unsafe {
                        drive_q32x8::<$P, $A>(
                            p,
                            nb,
                            nrows,
                            a,
                            ar,
                            out,
                            ostride,
                            $sc,
                            ($imp::<1>, $imp::<2>, $imp::<3>, $imp::<4>),
                        )
                    }
                }
            };
        }
        packed_q32_entry!(p_q8_0, gemm_q8_0x8, BlockQ8_0x8, BlockQ8_0, scales_q8_0);
        packed_q32_entry!(p_q4_0, gemm_q4_0x8, BlockQ4_0x8, BlockQ8_0, scales_q8_0);
        packed_q32_entry!(p_q4_1, gemm_q4_1x8, BlockQ4_1x8, BlockQ8_1, scales_q8_1);
        packed_q32_entry!(p_q5_0, gemm_q5_0x8, BlockQ5_0x8, BlockQ8_0, scales_q8_0);

        /// Installs the packed tiles of the 32-element types. The 256-bit
        /// tables call it; the AVX-512 table keeps its 512-bit unpacked tiles
        /// for these types (not measured against these on such a CPU yet).
        #[allow(dead_code)]
        fn install_packed_q32(k: &mut Kernels) {
            k.set_packed(GgmlType::Q8_0, p_q8_0);
            k.set_packed(GgmlType::Q4_0, p_q4_0);
            k.set_packed(GgmlType::Q4_1, p_q4_1);
            k.set_packed(GgmlType::Q5_0, p_q5_0);
        }
    };
}
