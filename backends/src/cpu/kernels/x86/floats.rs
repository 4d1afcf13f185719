//! F16 weight rows (encoders such as nomic-embed ship F16): F16 × F16 dots.

macro_rules! x86_floats {
    ($feat:literal) => {
        /// Eight f16 at `p` widened to f32.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn load_ph(p: *const u8) -> __m256 {
            _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
        }

        /// F16 weights · F16 activations, `x` and `y` `n` elements each: products in
        /// f32 on four 8-lane FMA chains over 32-element steps (GGML's F16 step on
        /// AVX), the leftover elements summed in f64 as GGML's tail loop does.
        #[target_feature(enable = $feat)]
        unsafe fn dot_f16(x: &[u8], y: &[u8], n: usize) -> f32 {
            debug_assert!(x.len() >= 2 * n && y.len() >= 2 * n);
            let (px, py) = (x.as_ptr(), y.as_ptr());
            let mut acc = [_mm256_setzero_ps(); 4];
            let full = n / 32 * 32;
            let mut i = 0;
            while i < full {
                for (j, a) in acc.iter_mut().enumerate() {
                    let o = 2 * (i + 8 * j);
                    *a = _mm256_fmadd_ps(load_ph(px.add(o)), load_ph(py.add(o)), *a);
                }
                i += 32;
            }
            finish_f16(&acc, x, y, full, n)
        }

        /// The end of an F16 dot: the four chains summed, then elements `full..n` in f64.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn finish_f16(acc: &[__m256; 4], x: &[u8], y: &[u8], full: usize, n: usize) -> f32 {
            let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            let mut sum = hsum_ps(s) as f64;
            for k in full..n {
                let w = owl_quant::f16_to_f32([x[2 * k], x[2 * k + 1]]);
                let a = owl_quant::f16_to_f32([y[2 * k], y[2 * k + 1]]);
                sum += (w * a) as f64;
            }
            sum as f32
        }

        /// A block of `WR` F16 weight rows against `AR` activation rows (already widened
        /// to f32, `full` elements each): every (weight, activation) pair gets the four
        /// 8-lane chains of `dot_f16`. The chains are independent, so they run one after
        /// the other over the row, each in its own order: then only `WR * AR` accumulators
        /// live at once (held in registers), each weight vector widened once for all `AR`
        /// rows and each activation vector loaded once for all `WR` rows, and every
        /// element's four chains hold exactly `dot_f16`'s values.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn block_f16<const WR: usize, const AR: usize>(pw: [*const u8; WR], acts: [*const f32; AR], full: usize) -> [[[__m256; 4]; AR]; WR] {
            let mut c = [[[_mm256_setzero_ps(); 4]; AR]; WR];
            for q in 0..4 {
                let mut acc = [[_mm256_setzero_ps(); AR]; WR];
                let mut e = 8 * q;
                while e < full {
                    let mut w = [_mm256_setzero_ps(); WR];
                    for (x, p) in w.iter_mut().zip(pw) {
                        *x = load_ph(p.add(2 * e));
                    }
                    for r in 0..AR {
                        let a = _mm256_loadu_ps(acts[r].add(e));
                        for i in 0..WR {
                            acc[i][r] = _mm256_fmadd_ps(w[i], a, acc[i][r]);
                        }
                    }
                    e += 32;
                }
                for i in 0..WR {
                    for r in 0..AR {
                        c[i][r][q] = acc[i][r];
                    }
                }
            }
            c
        }

        /// Weight rows `j0..j0+WR` against activation rows `i0..i0+AR` of `tile_f16`, finished
        /// into `out` as `dot_f16` finishes one element.
        #[inline]
        #[target_feature(enable = $feat)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn put_f16<const WR: usize, const AR: usize>(w: &[u8], wr: usize, a: &[u8], ar: usize, wide: &[f32], j0: usize, i0: usize, out: *mut f32, ostride: usize) {
            let n = wr / 2;
            let full = n / 32 * 32;
            let pw: [*const u8; WR] = std::array::from_fn(|i| w.as_ptr().add((j0 + i) * wr));
            let acts: [*const f32; AR] = std::array::from_fn(|r| wide.as_ptr().add((i0 + r) * n));
            let c = block_f16::<WR, AR>(pw, acts, full);
            for (i, ci) in c.iter().enumerate() {
                let wrow = &w[(j0 + i) * wr..(j0 + i + 1) * wr];
                for (r, cr) in ci.iter().enumerate() {
                    let arow = &a[(i0 + r) * ar..(i0 + r + 1) * ar];
                    *out.add((i0 + r) * ostride + j0 + i) = finish_f16(cr, wrow, arow, full, n);
                }
            }
        }

        /// The F16 matmul tile: activation rows widened to f32 once per call, then blocks
        /// of 3 weight rows x 4 activation rows (12 accumulators, 3 widened weights and
        /// one activation in the 16 registers), the edges in smaller blocks. Every element
        /// is computed exactly as `dot_f16` computes it (the same chains, sums and tail),
        /// so batched equals solo bit for bit whatever the block.
        #[target_feature(enable = $feat)]
        unsafe fn tile_f16(w: &[u8], wr: usize, a: &[u8], ar: usize, out: *mut f32, ostride: usize) {
            thread_local! {
                static WIDE: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
            }
            const WR: usize = 3;
            const AR: usize = 4;
            let n = wr / 2;
            let rows_a = a.len() / ar;
            let rows_w = w.len() / wr;
            WIDE.with_borrow_mut(|wide| {
                wide.clear();
                wide.resize(rows_a * n, 0.0);
                for (src, dst) in a.chunks_exact(ar).zip(wide.chunks_exact_mut(n)) {
                    let mut e = 0;
                    while e + 8 <= n {
                        _mm256_storeu_ps(dst.as_mut_ptr().add(e), load_ph(src.as_ptr().add(2 * e)));
                        e += 8;
                    }
                    for k in e..n {
                        dst[k] = owl_quant::f16_to_f32([src[2 * k], src[2 * k + 1]]);
                    }
                }
                let wide: &[f32] = wide;
                let mut i = 0;
                while i + AR <= rows_a {
                    let mut j = 0;
                    while j + WR <= rows_w {
                        put_f16::<WR, AR>(w, wr, a, ar, wide, j, i, out, ostride);
                        j += WR;
                    }
                    while j < rows_w {
                        put_f16::<1, AR>(w, wr, a, ar, wide, j, i, out, ostride);
                        j += 1;
                    }
                    i += AR;
                }
                while i < rows_a {
                    let mut j = 0;
                    while j + WR <= rows_w {
                        put_f16::<WR, 1>(w, wr, a, ar, wide, j, i, out, ostride);
                        j += WR;
                    }
                    while j < rows_w {
                        put_f16::<1, 1>(w, wr, a, ar, wide, j, i, out, ostride);
                        j += 1;
                    }
                    i += 1;
                }
            });
        }
    };
}
