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

        /// `R` activation rows (already widened to f32, `n` each) against one F16 weight
        /// row: the same four chains as `dot_f16` per row (f16 -> f32 is exact, so the
        /// values are the same), the weight widened once for all `R`.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn rows_f16<const R: usize>(pw: *const u8, acts: [*const f32; R], full: usize) -> [[__m256; 4]; R] {
            let mut c = [[_mm256_setzero_ps(); 4]; R];
            let mut e = 0;
            while e < full {
                for q in 0..4 {
                    let x = load_ph(pw.add(2 * (e + 8 * q)));
                    for r in 0..R {
                        c[r][q] = _mm256_fmadd_ps(x, _mm256_loadu_ps(acts[r].add(e + 8 * q)), c[r][q]);
                    }
                }
                e += 32;
            }
            c
        }

        /// The F16 matmul tile: activation rows widened to f32 once per call, each
        /// weight row widened once per three activation rows. Every element is computed
        /// exactly as `dot_f16` computes it (the same chains, sums and tail), so batched
        /// equals solo bit for bit.
        #[target_feature(enable = $feat)]
        unsafe fn tile_f16(w: &[u8], wr: usize, a: &[u8], ar: usize, out: *mut f32, ostride: usize) {
            thread_local! {
                static WIDE: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
            }
            let n = wr / 2;
            let full = n / 32 * 32;
            let rows_a = a.len() / ar;
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
                let act = |i: usize| wide.as_ptr().add(i * n);
                let arow = |i: usize| &a[i * ar..(i + 1) * ar];
                for (j, wrow) in w.chunks_exact(wr).enumerate() {
                    let pw = wrow.as_ptr();
                    let mut i = 0;
                    while i + 3 <= rows_a {
                        let c = rows_f16::<3>(pw, [act(i), act(i + 1), act(i + 2)], full);
                        for (r, cr) in c.iter().enumerate() {
                            *out.add((i + r) * ostride + j) = finish_f16(cr, wrow, arow(i + r), full, n);
                        }
                        i += 3;
                    }
                    while i < rows_a {
                        let c = rows_f16::<1>(pw, [act(i)], full);
                        *out.add(i * ostride + j) = finish_f16(&c[0], wrow, arow(i), full, n);
                        i += 1;
                    }
                }
            });
        }
    };
}
