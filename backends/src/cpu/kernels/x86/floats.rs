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
            let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            let mut sum = hsum_ps(s) as f64;
            for k in i..n {
                let w = owl_quant::f16_to_f32([x[2 * k], x[2 * k + 1]]);
                let a = owl_quant::f16_to_f32([y[2 * k], y[2 * k + 1]]);
                sum += (w * a) as f64;
            }
            sum as f32
        }
    };
}
