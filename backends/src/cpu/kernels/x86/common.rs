//! Shared helpers of the x86 kernels: f16 scales, horizontal sums, loads, nibble
//! and bit expansion, signed x signed products from the `mul_u8i8` primitive, and
//! `f16_pair` (a block's two leading f16 scales, for the tiles and decode rows).

macro_rules! x86_common {
    ($feat:literal) => {
        /// f16(a) * f16(b). Both halves go through one vmovd + vcvtph2ps, which
        /// also keeps LLVM from merging a lone f16 into a live register (vpinsrw),
        /// a false dependency that serialised whole loops on their accumulators.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn f16_mul(a: [u8; 2], b: [u8; 2]) -> f32 {
            let bits = u16::from_le_bytes(a) as u32 | (u16::from_le_bytes(b) as u32) << 16;
            let v = _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32));
            _mm_cvtss_f32(_mm_mul_ss(v, _mm_movehdup_ps(v)))
        }

        /// f16(a) * y with y an f32 (the K-quant super-block scales).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn f16_mul_f32(a: [u8; 2], y: f32) -> f32 {
            let v = _mm_cvtph_ps(_mm_cvtsi32_si128(
                u16::from_le_bytes(a) as i32 | 0x3c00 << 16,
            ));
            // Lane 1 holds 1.0 so the whole register is live (no merge into a stale one).
            _mm_cvtss_f32(_mm_mul_ss(v, _mm_set_ss(y))) * _mm_cvtss_f32(_mm_movehdup_ps(v))
        }

        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn hsum_ps(v: __m256) -> f32 {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        }

        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn load(p: *const u8) -> __m256i {
            _mm256_loadu_si256(p as *const __m256i)
        }

        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn load_i8(p: *const i8) -> __m256i {
            _mm256_loadu_si256(p as *const __m256i)
        }

        /// 16 bytes of nibbles -> 32 bytes: low nibbles (elements 0..16), then high.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn nibbles32(p: *const u8) -> __m256i {
            let t = _mm_loadu_si128(p as *const __m128i);
            let b = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
            _mm256_and_si256(b, _mm256_set1_epi8(0x0F))
        }

        /// 32 bits -> 32 bytes, 0xFF where the bit is set (GGML's bytes_from_bits_32).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn bits32(qh: [u8; 4]) -> __m256i {
            let x32 = u32::from_le_bytes(qh) as i32;
            let shuf = _mm256_set_epi64x(
                0x0303030303030303,
                0x0202020202020202,
                0x0101010101010101,
                0x0000000000000000,
            );
            let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x32), shuf);
            let bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
            _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1))
        }

        /// Signed x signed bytes via |x| and sign(y, x).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn mul_i8i8(x: __m256i, y: __m256i) -> __m256i {
            mul_u8i8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
        }

        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn mul_i8i8_s(x: __m256i, y: __m256i, lo: i32, hi: i32) -> __m256i {
            mul_u8i8_s(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x), lo, hi)
        }

        /// The first two f16 of a block (at its start) as exact f32s. One 64-bit
        /// load straight into vcvtph2ps: written in Rust, LLVM narrows a lone f16
        /// to a vpinsrw merged into a live register, chaining the whole loop on
        /// an accumulator. Every block type passed here is at least 8 bytes long
        /// with its f16 scales first.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn f16_pair<B>(b: &B) -> (f32, f32) {
            const { assert!(std::mem::size_of::<B>() >= 8) };
            let v: __m128;
            std::arch::asm!(
                "vcvtph2ps {v}, qword ptr [{p}]",
                v = out(xmm_reg) v,
                p = in(reg) b as *const B as *const u8,
                options(pure, readonly, nostack, preserves_flags)
            );
            (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
        }
    };
}
