//! Activation quantizers: f32 rows to Q8_0, Q8_1 and Q8_K blocks.

macro_rules! x86_quantize {
    ($feat:literal) => {
        /// Four vectors of 8 i32 -> 32 i8 in element order.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn pack32(i0: __m256i, i1: __m256i, i2: __m256i, i3: __m256i) -> __m256i {
            let p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
            _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
        }

        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn absmax32(x: *const f32) -> f32 {
            let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
            let mut m = _mm256_setzero_ps();
            for i in 0..4 {
                m = _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(x.add(8 * i)), abs_mask));
            }
            let s = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
            let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_max_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        }

        /// 32 floats times `id`, rounded half to even, packed to bytes; also returns their sum.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn round_pack32(x: *const f32, id: f32, out: *mut i8) -> i32 {
            let idv = _mm256_set1_ps(id);
            let mut q = [_mm256_setzero_si256(); 4];
            for (i, qi) in q.iter_mut().enumerate() {
                let v = _mm256_mul_ps(_mm256_loadu_ps(x.add(8 * i)), idv);
                // cvtps rounds half to even under the default MXCSR, as ggml's x86 path.
                *qi = _mm256_cvtps_epi32(v);
            }
            let packed = pack32(q[0], q[1], q[2], q[3]);
            _mm256_storeu_si256(out as *mut __m256i, packed);
            let s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
            let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
            _mm_cvtsi128_si32(s)
        }

        #[target_feature(enable = $feat)]
        unsafe fn quantize_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
            for (xb, b) in x.chunks_exact(32).zip(out.iter_mut()) {
                let amax = absmax32(xb.as_ptr());
                let d = amax / 127.0;
                let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
                b.d = owl_quant::f32_to_f16(d);
                round_pack32(xb.as_ptr(), id, b.qs.as_mut_ptr());
            }
        }

        #[target_feature(enable = $feat)]
        unsafe fn quantize_q8_1(x: &[f32], out: &mut [BlockQ8_1]) {
            for (xb, b) in x.chunks_exact(32).zip(out.iter_mut()) {
                let amax = absmax32(xb.as_ptr());
                let d = amax / 127.0;
                let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
                b.d = owl_quant::f32_to_f16(d);
                let sum = round_pack32(xb.as_ptr(), id, b.qs.as_mut_ptr());
                b.s = owl_quant::f32_to_f16(sum as f32 * d);
            }
        }

        #[target_feature(enable = $feat)]
        unsafe fn quantize_q8_k(x: &[f32], out: &mut [BlockQ8K]) {
            for (xb, b) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
                let mut amax = 0f32;
                for i in 0..8 {
                    amax = amax.max(absmax32(xb.as_ptr().add(32 * i)));
                }
                if amax == 0.0 {
                    *b = bytemuck::Zeroable::zeroed();
                    continue;
                }
                // The first element of largest magnitude carries the sign (GGML's loop).
                let max = *xb.iter().find(|v| v.abs() == amax).unwrap_or(&amax);
                let iscale = -127.0 / max;
                let isv = _mm256_set1_ps(iscale);
                let lim = _mm256_set1_epi32(127);
                for g in 0..8 {
                    let mut q = [_mm256_setzero_si256(); 4];
                    for (i, qi) in q.iter_mut().enumerate() {
                        let v =
                            _mm256_mul_ps(_mm256_loadu_ps(xb.as_ptr().add(32 * g + 8 * i)), isv);
                        // cvtps rounds half to even under the default MXCSR, as nearest_int.
                        *qi = _mm256_min_epi32(_mm256_cvtps_epi32(v), lim);
                    }
                    let packed = pack32(q[0], q[1], q[2], q[3]);
                    _mm256_storeu_si256(b.qs.as_mut_ptr().add(32 * g) as *mut __m256i, packed);
                }
                for j in 0..16 {
                    let s: i32 = b.qs[16 * j..16 * j + 16].iter().map(|&q| q as i32).sum();
                    b.bsums[j] = (s as i16).to_le_bytes();
                }
                b.d = (1.0 / iscale).to_le_bytes();
            }
        }
    };
}
