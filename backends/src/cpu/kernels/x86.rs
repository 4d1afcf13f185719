//! The x86 int8 kernels, written once and instantiated per instruction set by
//! `x86_int8_kernels!("features")`. The instantiating module defines the two
//! primitives the bodies use (with the same target features):
//!
//! - `mul_u8i8(x, y) -> __m256i`: for unsigned bytes x and signed bytes y, eight
//!   i32 lanes, lane i = sum of x*y over bytes 4i..4i+4 (maddubs+madd, or dpbusd).
//! - `mul_u8i8_s(x, y, lo, hi)`: the same with lanes 0..4 (bytes 0..16) times
//!   `lo` and lanes 4..8 (bytes 16..32) times `hi`.
//!
//! Bodies follow GGML's x86 kernels (ggml-cpu/arch/x86/quants.c): nibbles expanded
//! to bytes, signed x signed via the `sign_epi8` trick (activations never hold
//! -128: the quantizers clamp to ±127), per-block i32 sums converted to f32 and
//! accumulated with FMA. Integer sums equal the reference exactly; only the float
//! accumulation order differs.

macro_rules! x86_int8_kernels {
    ($feat:literal) => {
        use crate::cpu::kernels::Kernels;
        #[allow(unused_imports)]
        use owl_quant::{
            as_blocks, unpack_scales_mins_k4, unpack_scales_q3k, BlockIQ4NL, BlockIQ4XS, BlockQ2K,
            BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K,
            BlockQ8K, BlockQ8_0, BlockQ8_1, GgmlType, KVALUES_IQ4NL, QK_K,
        };

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

        #[target_feature(enable = $feat)]
        unsafe fn dot_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
            let mut acc = _mm256_setzero_ps();
            for (a, b) in x.iter().zip(y) {
                let d = _mm256_set1_ps(f16_mul(a.d, b.d));
                let p = mul_i8i8(load_i8(a.qs.as_ptr()), load_i8(b.qs.as_ptr()));
                acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
            }
            hsum_ps(acc)
        }

        #[target_feature(enable = $feat)]
        unsafe fn dot_q4_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
            let mut acc = _mm256_setzero_ps();
            let off = _mm256_set1_epi8(8);
            for (a, b) in x.iter().zip(y) {
                let d = _mm256_set1_ps(f16_mul(a.d, b.d));
                let qx = _mm256_sub_epi8(nibbles32(a.qs.as_ptr()), off);
                let p = mul_i8i8(qx, load_i8(b.qs.as_ptr()));
                acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
            }
            hsum_ps(acc)
        }

        #[target_feature(enable = $feat)]
        unsafe fn dot_q4_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
            let mut acc = _mm256_setzero_ps();
            let mut summs = 0f32;
            for (a, b) in x.iter().zip(y) {
                summs += f16_mul(a.m, b.s);
                let d = _mm256_set1_ps(f16_mul(a.d, b.d));
                let p = mul_u8i8(nibbles32(a.qs.as_ptr()), load_i8(b.qs.as_ptr()));
                acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
            }
            hsum_ps(acc) + summs
        }

        #[target_feature(enable = $feat)]
        unsafe fn dot_q5_0(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
            let mut acc = _mm256_setzero_ps();
            let hi = _mm256_set1_epi8(0xF0u8 as i8);
            for (a, b) in x.iter().zip(y) {
                let d = _mm256_set1_ps(f16_mul(a.d, b.d));
                // q - 16 as a signed byte: nibble | 0xF0 where the fifth bit is clear.
                let qx = _mm256_or_si256(
                    nibbles32(a.qs.as_ptr()),
                    _mm256_andnot_si256(bits32(a.qh), hi),
                );
                let p = mul_i8i8(qx, load_i8(b.qs.as_ptr()));
                acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
            }
            hsum_ps(acc)
        }

        #[target_feature(enable = $feat)]
        unsafe fn dot_q5_1(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
            let mut acc = _mm256_setzero_ps();
            let mut summs = 0f32;
            let b4 = _mm256_set1_epi8(0x10);
            for (a, b) in x.iter().zip(y) {
                summs += f16_mul(a.m, b.s);
                let d = _mm256_set1_ps(f16_mul(a.d, b.d));
                let qx =
                    _mm256_or_si256(nibbles32(a.qs.as_ptr()), _mm256_and_si256(bits32(a.qh), b4));
                let p = mul_u8i8(qx, load_i8(b.qs.as_ptr()));
                acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
            }
            hsum_ps(acc) + summs
        }

        #[target_feature(enable = $feat)]
        unsafe fn dot_iq4_nl(x: &[BlockIQ4NL], y: &[BlockQ8_0]) -> f32 {
            let t = _mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i);
            let table = _mm256_set_m128i(t, t);
            let mut acc = _mm256_setzero_ps();
            for (a, b) in x.iter().zip(y) {
                let d = _mm256_set1_ps(f16_mul(a.d, b.d));
                let qx = _mm256_shuffle_epi8(table, nibbles32(a.qs.as_ptr()));
                let p = mul_i8i8(qx, load_i8(b.qs.as_ptr()));
                acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
            }
            hsum_ps(acc)
        }

        #[target_feature(enable = $feat)]
        unsafe fn dot_q2_k(x: &[BlockQ2K], y: &[BlockQ8K]) -> f32 {
            let mut acc = _mm256_setzero_ps();
            let mut sum_min = 0f32;
            let m3 = _mm256_set1_epi8(3);
            for (a, b) in x.iter().zip(y) {
                let yd = b.d();
                let mut summs = 0i32;
                for j in 0..16 {
                    summs += b.bsum(j) as i32 * (a.scales[j] >> 4) as i32;
                }
                sum_min += f16_mul_f32(a.dmin, yd) * summs as f32;
                let mut sumi = _mm256_setzero_si256();
                for k in 0..2 {
                    let q2 = load(a.qs.as_ptr().add(32 * k));
                    for s in 0..4 {
                        let v = _mm256_and_si256(
                            _mm256_srl_epi16(q2, _mm_cvtsi32_si128(2 * s as i32)),
                            m3,
                        );
                        let yv = load_i8(b.qs.as_ptr().add(128 * k + 32 * s));
                        let is = 8 * k + 2 * s;
                        let (lo, hi) =
                            ((a.scales[is] & 0xF) as i32, (a.scales[is + 1] & 0xF) as i32);
                        sumi = _mm256_add_epi32(sumi, mul_u8i8_s(v, yv, lo, hi));
                    }
                }
                acc = _mm256_fmadd_ps(
                    _mm256_set1_ps(f16_mul_f32(a.d, yd)),
                    _mm256_cvtepi32_ps(sumi),
                    acc,
                );
            }
            hsum_ps(acc) - sum_min
        }

        #[target_feature(enable = $feat)]
        unsafe fn dot_q3_k(x: &[BlockQ3K], y: &[BlockQ8K]) -> f32 {
            let mut acc = _mm256_setzero_ps();
            let m3 = _mm256_set1_epi8(3);
            let one = _mm256_set1_epi8(1);
            let four = _mm256_set1_epi8(4);
            for (a, b) in x.iter().zip(y) {
                let sc = unpack_scales_q3k(&a.scales);
                let hm = load(a.hmask.as_ptr());
                let mut sumi = _mm256_setzero_si256();
                for k in 0..2 {
                    let q3 = load(a.qs.as_ptr().add(32 * k));
                    for s in 0..4 {
                        let v = _mm256_and_si256(
                            _mm256_srl_epi16(q3, _mm_cvtsi32_si128(2 * s as i32)),
                            m3,
                        );
                        let h = _mm256_and_si256(
                            _mm256_srl_epi16(hm, _mm_cvtsi32_si128((4 * k + s) as i32)),
                            one,
                        );
                        // q - 4 * !hbit = (q | 4*hbit) - 4, in -4..4.
                        let q = _mm256_sub_epi8(_mm256_or_si256(v, _mm256_slli_epi16(h, 2)), four);
                        let yv = load_i8(b.qs.as_ptr().add(128 * k + 32 * s));
                        let is = 8 * k + 2 * s;
                        sumi = _mm256_add_epi32(
                            sumi,
                            mul_i8i8_s(q, yv, sc[is] as i32, sc[is + 1] as i32),
                        );
                    }
                }
                acc = _mm256_fmadd_ps(
                    _mm256_set1_ps(f16_mul_f32(a.d, b.d())),
                    _mm256_cvtepi32_ps(sumi),
                    acc,
                );
            }
            hsum_ps(acc)
        }

        /// Q4_K as GGML's repacked Q4_K GEMM (`ggml_gemm_q4_K_8x8_q8_K`, what
        /// llama.cpp runs on x86 for prompt rows) accumulates: per 64 elements
        /// (two sub-blocks) one exact integer for the scales and one for the mins,
        /// each added with one FMA (times d*yd and dmin*yd), scales minus mins at
        /// the end.
        #[target_feature(enable = $feat)]
        unsafe fn dot_q4_k(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
            tile_q4_k::<1>(x, [y], [&[]], [&[]])[0]
        }

        /// One Q5_K weight block against one activation block: the integer sum
        /// into `acc` (one FMA) and the min correction into `sum_min`. The dot,
        /// the tile and the decode kernel all run this, so they agree bit for bit.
        #[inline(always)]
        unsafe fn block_q5_k(a: &BlockQ5K, b: &BlockQ8K, acc: &mut __m256, sum_min: &mut f32) {
            let m4 = _mm256_set1_epi8(0x0F);
            let b4 = _mm256_set1_epi8(0x10);
            let (sc, mn) = unpack_scales_mins_k4(&a.scales);
            let mut summ = 0i32;
            for j in 0..16 {
                summ += mn[j / 2] as i32 * b.bsum(j) as i32;
            }
            *sum_min += f16_mul_f32(a.dmin, b.d()) * summ as f32;
            let mut hb = load(a.qh.as_ptr());
            let mut sumi = _mm256_setzero_si256();
            for j in 0..4 {
                let q4 = load(a.qs.as_ptr().add(32 * j));
                let lo = _mm256_or_si256(
                    _mm256_and_si256(q4, m4),
                    _mm256_and_si256(_mm256_slli_epi16(hb, 4), b4),
                );
                hb = _mm256_srli_epi16(hb, 1);
                let hi = _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(q4, 4), m4),
                    _mm256_and_si256(_mm256_slli_epi16(hb, 4), b4),
                );
                hb = _mm256_srli_epi16(hb, 1);
                let ylo = load_i8(b.qs.as_ptr().add(64 * j));
                let yhi = load_i8(b.qs.as_ptr().add(64 * j + 32));
                let (s0, s1) = (sc[2 * j] as i32, sc[2 * j + 1] as i32);
                sumi = _mm256_add_epi32(sumi, mul_u8i8_s(lo, ylo, s0, s0));
                sumi = _mm256_add_epi32(sumi, mul_u8i8_s(hi, yhi, s1, s1));
            }
            *acc = _mm256_fmadd_ps(
                _mm256_set1_ps(f16_mul_f32(a.d, b.d())),
                _mm256_cvtepi32_ps(sumi),
                *acc,
            );
        }

        #[target_feature(enable = $feat)]
        unsafe fn dot_q5_k(x: &[BlockQ5K], y: &[BlockQ8K]) -> f32 {
            let mut acc = _mm256_setzero_ps();
            let mut sum_min = 0f32;
            for (a, b) in x.iter().zip(y) {
                block_q5_k(a, b, &mut acc, &mut sum_min);
            }
            hsum_ps(acc) - sum_min
        }

        /// Q6_K: the 128 six-bit quants of half `n` of a block as four vectors of 32 bytes.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn q6k_quants(a: &BlockQ6K, n: usize, m4: __m256i) -> [__m256i; 4] {
            let q4a = load(a.ql.as_ptr().add(64 * n));
            let q4b = load(a.ql.as_ptr().add(64 * n + 32));
            let qh = load(a.qh.as_ptr().add(32 * n));
            let hbits = |mask: u8| _mm256_and_si256(qh, _mm256_set1_epi8(mask as i8));
            [
                _mm256_or_si256(_mm256_and_si256(q4a, m4), _mm256_slli_epi16(hbits(0x03), 4)),
                _mm256_or_si256(_mm256_and_si256(q4b, m4), _mm256_slli_epi16(hbits(0x0C), 2)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q4a, 4), m4), hbits(0x30)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q4b, 4), m4), _mm256_srli_epi16(hbits(0xC0), 2)),
            ]
        }

        #[target_feature(enable = $feat)]
        unsafe fn dot_q6_k(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
            let mut acc = _mm256_setzero_ps();
            let m4 = _mm256_set1_epi8(0x0F);
            for (a, b) in x.iter().zip(y) {
                // Σ sc*(q-32)*y = Σ sc*q*y - 32 Σ sc*bsum, all in exact integers; lane l
                // takes the offset of sub-blocks 2l and 2l+1, as GGML's lanes do (same
                // lane sums, so the same float rounding).
                let scales = _mm256_cvtepi8_epi16(_mm_loadu_si128(a.scales.as_ptr() as *const __m128i));
                let off = _mm256_madd_epi16(scales, load(b.bsums.as_ptr() as *const u8));
                let mut sumi = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(off, 5));
                for n in 0..2 {
                    let v = q6k_quants(a, n, m4);
                    for (i, vi) in v.iter().enumerate() {
                        let yv = load_i8(b.qs.as_ptr().add(128 * n + 32 * i));
                        let is = 8 * n + 2 * i;
                        let p = mul_u8i8_s(*vi, yv, a.scales[is] as i32, a.scales[is + 1] as i32);
                        sumi = _mm256_add_epi32(sumi, p);
                    }
                }
                acc = _mm256_fmadd_ps(
                    _mm256_set1_ps(f16_mul_f32(a.d, b.d())),
                    _mm256_cvtepi32_ps(sumi),
                    acc,
                );
            }
            hsum_ps(acc)
        }

        /// One IQ4_XS weight block against one activation block into `acc`
        /// (shared by the dot, the tile and the decode kernel).
        #[inline(always)]
        unsafe fn block_iq4_xs(a: &BlockIQ4XS, b: &BlockQ8K, table: __m256i, acc: &mut __m256) {
            let mut sumi = _mm256_setzero_si256();
            for ib in 0..8 {
                let qx = _mm256_shuffle_epi8(table, nibbles32(a.qs.as_ptr().add(16 * ib)));
                let yv = load_i8(b.qs.as_ptr().add(32 * ib));
                let ls = a.scale(ib);
                sumi = _mm256_add_epi32(sumi, mul_i8i8_s(qx, yv, ls, ls));
            }
            *acc = _mm256_fmadd_ps(
                _mm256_set1_ps(f16_mul_f32(a.d, b.d())),
                _mm256_cvtepi32_ps(sumi),
                *acc,
            );
        }

        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn iq4_table() -> __m256i {
            let t = _mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i);
            _mm256_set_m128i(t, t)
        }

        #[target_feature(enable = $feat)]
        unsafe fn dot_iq4_xs(x: &[BlockIQ4XS], y: &[BlockQ8K]) -> f32 {
            let table = iq4_table();
            let mut acc = _mm256_setzero_ps();
            for (a, b) in x.iter().zip(y) {
                block_iq4_xs(a, b, table, &mut acc);
            }
            hsum_ps(acc)
        }

        #[target_feature(enable = $feat)]
        unsafe fn tile_iq4_xs<const R: usize>(x: &[BlockIQ4XS], y: [&[BlockQ8K]; R], _d: [&[f32]; R], _s: [&[f32]; R]) -> [f32; R] {
            let table = iq4_table();
            let mut acc = [_mm256_setzero_ps(); R];
            for (i, a) in x.iter().enumerate() {
                for r in 0..R {
                    block_iq4_xs(a, y[r].get_unchecked(i), table, &mut acc[r]);
                }
            }
            acc.map(|v| hsum_ps(v))
        }

        /// Four IQ4_XS rows: per row exactly the operations of `dot_iq4_xs`.
        #[target_feature(enable = $feat)]
        unsafe fn rows4_iq4_xs(x: [&[BlockIQ4XS]; 4], y: &[BlockQ8K], _d: &[f32], _s: &[f32]) -> [f32; 4] {
            let table = iq4_table();
            let mut acc = [_mm256_setzero_ps(); 4];
            for (i, b) in y.iter().enumerate() {
                for w in 0..4 {
                    // 136-byte blocks: three lines.
                    prefetch_block(x[w], i, 3);
                    block_iq4_xs(x[w].get_unchecked(i), b, table, &mut acc[w]);
                }
            }
            acc.map(|v| hsum_ps(v))
        }

        // ---- Matmul tiles: one weight row against R (1..=4) activation rows. ----
        //
        // Each output is computed by exactly the operations of the one-row dot
        // above (same block order, same FMA chain into one 8-lane accumulator,
        // same horizontal sum, same scalar corrections), so an element's value
        // never depends on how many rows share its tile: batched equals solo.
        // The weight block is expanded once and reused for every activation row;
        // activation scales arrive as f32 (`d`, and `s` for Q8_1), converted once
        // per group of rows instead of once per weight row. f16 -> f32 is exact,
        // so f32(wd) * d[r] is the same product as the one-row f16_mul.

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

        /// Horizontal sum of eight i32 lanes.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn hsum_i32(v: __m256i) -> i32 {
            let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
            _mm_cvtsi128_si32(s)
        }

        /// Activation block scales as f32: `d` per block, and `s` for Q8_1.
        #[target_feature(enable = $feat)]
        unsafe fn scales_q8_0(a: &[BlockQ8_0], d: &mut [f32], _s: &mut [f32]) {
            for (b, d) in a.iter().zip(d) {
                *d = f16_pair(b).0;
            }
        }
        #[target_feature(enable = $feat)]
        unsafe fn scales_q8_1(a: &[BlockQ8_1], d: &mut [f32], s: &mut [f32]) {
            for ((b, d), s) in a.iter().zip(d).zip(s) {
                (*d, *s) = f16_pair(b);
            }
        }
        #[target_feature(enable = $feat)]
        unsafe fn scales_q8_k(a: &[BlockQ8K], d: &mut [f32], _s: &mut [f32]) {
            for (b, d) in a.iter().zip(d) {
                *d = b.d();
            }
        }

        /// Signed weight bytes `qx` against R activation rows (Q8_0 activations).
        #[inline(always)]
        unsafe fn tile_signed<const R: usize>(
            qx: __m256i,
            wd: f32,
            i: usize,
            y: &[&[BlockQ8_0]; R],
            d: &[&[f32]; R],
            acc: &mut [__m256; R],
        ) {
            let ax = _mm256_sign_epi8(qx, qx);
            for r in 0..R {
                let b = y[r].get_unchecked(i);
                let dd = _mm256_set1_ps(wd * *d[r].get_unchecked(i));
                let p = mul_u8i8(ax, _mm256_sign_epi8(load_i8(b.qs.as_ptr()), qx));
                acc[r] = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(p), acc[r]);
            }
        }

        #[target_feature(enable = $feat)]
        unsafe fn tile_q8_0<const R: usize>(x: &[BlockQ8_0], y: [&[BlockQ8_0]; R], d: [&[f32]; R], _s: [&[f32]; R]) -> [f32; R] {
            let mut acc = [_mm256_setzero_ps(); R];
            for (i, a) in x.iter().enumerate() {
                tile_signed(load_i8(a.qs.as_ptr()), f16_pair(a).0, i, &y, &d, &mut acc);
            }
            acc.map(|v| hsum_ps(v))
        }

        #[target_feature(enable = $feat)]
        unsafe fn tile_q4_0<const R: usize>(x: &[BlockQ4_0], y: [&[BlockQ8_0]; R], d: [&[f32]; R], _s: [&[f32]; R]) -> [f32; R] {
            let mut acc = [_mm256_setzero_ps(); R];
            let off = _mm256_set1_epi8(8);
            for (i, a) in x.iter().enumerate() {
                let qx = _mm256_sub_epi8(nibbles32(a.qs.as_ptr()), off);
                tile_signed(qx, f16_pair(a).0, i, &y, &d, &mut acc);
            }
            acc.map(|v| hsum_ps(v))
        }

        #[target_feature(enable = $feat)]
        unsafe fn tile_q5_0<const R: usize>(x: &[BlockQ5_0], y: [&[BlockQ8_0]; R], d: [&[f32]; R], _s: [&[f32]; R]) -> [f32; R] {
            let mut acc = [_mm256_setzero_ps(); R];
            let hi = _mm256_set1_epi8(0xF0u8 as i8);
            for (i, a) in x.iter().enumerate() {
                let qx = _mm256_or_si256(
                    nibbles32(a.qs.as_ptr()),
                    _mm256_andnot_si256(bits32(a.qh), hi),
                );
                tile_signed(qx, f16_pair(a).0, i, &y, &d, &mut acc);
            }
            acc.map(|v| hsum_ps(v))
        }

        #[target_feature(enable = $feat)]
        unsafe fn tile_iq4_nl<const R: usize>(x: &[BlockIQ4NL], y: [&[BlockQ8_0]; R], d: [&[f32]; R], _s: [&[f32]; R]) -> [f32; R] {
            let t = _mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i);
            let table = _mm256_set_m128i(t, t);
            let mut acc = [_mm256_setzero_ps(); R];
            for (i, a) in x.iter().enumerate() {
                let qx = _mm256_shuffle_epi8(table, nibbles32(a.qs.as_ptr()));
                tile_signed(qx, f16_pair(a).0, i, &y, &d, &mut acc);
            }
            acc.map(|v| hsum_ps(v))
        }

        #[target_feature(enable = $feat)]
        unsafe fn tile_q5_k<const R: usize>(x: &[BlockQ5K], y: [&[BlockQ8K]; R], _d: [&[f32]; R], _s: [&[f32]; R]) -> [f32; R] {
            let mut acc = [_mm256_setzero_ps(); R];
            let mut sum_min = [0f32; R];
            for (i, a) in x.iter().enumerate() {
                for r in 0..R {
                    block_q5_k(a, y[r].get_unchecked(i), &mut acc[r], &mut sum_min[r]);
                }
            }
            let mut out = [0f32; R];
            for r in 0..R {
                out[r] = hsum_ps(acc[r]) - sum_min[r];
            }
            out
        }

        #[target_feature(enable = $feat)]
        unsafe fn tile_q4_1<const R: usize>(x: &[BlockQ4_1], y: [&[BlockQ8_1]; R], d: [&[f32]; R], s: [&[f32]; R]) -> [f32; R] {
            let mut acc = [_mm256_setzero_ps(); R];
            let mut summs = [0f32; R];
            for (i, a) in x.iter().enumerate() {
                let qx = nibbles32(a.qs.as_ptr());
                let (wd, wm) = f16_pair(a);
                for r in 0..R {
                    let b = y[r].get_unchecked(i);
                    summs[r] += wm * *s[r].get_unchecked(i);
                    let dd = _mm256_set1_ps(wd * *d[r].get_unchecked(i));
                    let p = mul_u8i8(qx, load_i8(b.qs.as_ptr()));
                    acc[r] = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(p), acc[r]);
                }
            }
            let mut out = [0f32; R];
            for r in 0..R {
                out[r] = hsum_ps(acc[r]) + summs[r];
            }
            out
        }

        /// Q4_K rows as `dot_q4_k` describes. `d` holds the activation scales,
        /// or is empty to read them from the blocks.
        #[target_feature(enable = $feat)]
        unsafe fn tile_q4_k<const R: usize>(x: &[BlockQ4K], y: [&[BlockQ8K]; R], d: [&[f32]; R], _s: [&[f32]; R]) -> [f32; R] {
            let mut acc = [0f32; R];
            let mut acc_min = [0f32; R];
            let m4 = _mm256_set1_epi8(0x0F);
            for (i, a) in x.iter().enumerate() {
                let (sc, mn) = unpack_scales_mins_k4(&a.scales);
                // mins[j / 2] for j in 0..16 as i16 lanes, against the 16 bsums:
                // lane l of the product is min l times the sum of sub-block l.
                let m8 = _mm_loadl_epi64(mn.as_ptr() as *const __m128i);
                let mins = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));
                let (wd, wmin) = f16_pair(a);
                let mut dd = [0f32; R];
                let mut summ = [[0i32; 8]; R];
                for r in 0..R {
                    let b = y[r].get_unchecked(i);
                    dd[r] = if d[r].is_empty() { b.d() } else { *d[r].get_unchecked(i) };
                    let bs = load(b.bsums.as_ptr() as *const u8);
                    _mm256_storeu_si256(summ[r].as_mut_ptr() as *mut __m256i, _mm256_madd_epi16(mins, bs));
                }
                for j in 0..4 {
                    let q4 = load(a.qs.as_ptr().add(32 * j));
                    let lo = _mm256_and_si256(q4, m4);
                    let hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), m4);
                    let (s0, s1) = (sc[2 * j] as i32, sc[2 * j + 1] as i32);
                    for r in 0..R {
                        let b = y[r].get_unchecked(i);
                        let ylo = load_i8(b.qs.as_ptr().add(64 * j));
                        let yhi = load_i8(b.qs.as_ptr().add(64 * j + 32));
                        let p = _mm256_add_epi32(mul_u8i8_s(lo, ylo, s0, s0), mul_u8i8_s(hi, yhi, s1, s1));
                        acc[r] = (hsum_i32(p) as f32).mul_add(wd * dd[r], acc[r]);
                        let m = summ[r][2 * j] + summ[r][2 * j + 1];
                        acc_min[r] = (m as f32).mul_add(wmin * dd[r], acc_min[r]);
                    }
                }
            }
            let mut out = [0f32; R];
            for r in 0..R {
                out[r] = acc[r] - acc_min[r];
            }
            out
        }

        #[target_feature(enable = $feat)]
        unsafe fn tile_q6_k<const R: usize>(x: &[BlockQ6K], y: [&[BlockQ8K]; R], d: [&[f32]; R], _s: [&[f32]; R]) -> [f32; R] {
            let mut acc = [_mm256_setzero_ps(); R];
            let m4 = _mm256_set1_epi8(0x0F);
            for (i, a) in x.iter().enumerate() {
                let scales = _mm256_cvtepi8_epi16(_mm_loadu_si128(a.scales.as_ptr() as *const __m128i));
                let mut sumi = [_mm256_setzero_si256(); R];
                for r in 0..R {
                    let b = y[r].get_unchecked(i);
                    // Lane l takes the offset of sub-blocks 2l and 2l+1 (GGML's lane sums).
                    let off = _mm256_madd_epi16(scales, load(b.bsums.as_ptr() as *const u8));
                    sumi[r] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(off, 5));
                }
                for n in 0..2 {
                    let v = q6k_quants(a, n, m4);
                    for (k, vk) in v.iter().enumerate() {
                        let is = 8 * n + 2 * k;
                        let (s0, s1) = (a.scales[is] as i32, a.scales[is + 1] as i32);
                        for r in 0..R {
                            let b = y[r].get_unchecked(i);
                            let yv = load_i8(b.qs.as_ptr().add(128 * n + 32 * k));
                            sumi[r] = _mm256_add_epi32(sumi[r], mul_u8i8_s(*vk, yv, s0, s1));
                        }
                    }
                }
                let wd = f16_mul_f32(a.d, 1.0);
                for r in 0..R {
                    acc[r] = _mm256_fmadd_ps(
                        _mm256_set1_ps(wd * *d[r].get_unchecked(i)),
                        _mm256_cvtepi32_ps(sumi[r]),
                        acc[r],
                    );
                }
            }
            acc.map(|v| hsum_ps(v))
        }

        // ---- Decode: four weight rows against one activation row. ----
        // Same per-element operations as the tiles above (so a row decoded alone
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
        unsafe fn rows4_q8_0(x: [&[BlockQ8_0]; 4], y: &[BlockQ8_0], d: &[f32], _s: &[f32]) -> [f32; 4] {
            rows_signed(x, y, d, |a| (load_i8(a.qs.as_ptr()), f16_pair(a).0))
        }

        #[target_feature(enable = $feat)]
        unsafe fn rows4_q4_0(x: [&[BlockQ4_0]; 4], y: &[BlockQ8_0], d: &[f32], _s: &[f32]) -> [f32; 4] {
            let off = _mm256_set1_epi8(8);
            rows_signed(x, y, d, |a| (_mm256_sub_epi8(nibbles32(a.qs.as_ptr()), off), f16_pair(a).0))
        }

        #[target_feature(enable = $feat)]
        unsafe fn rows4_q5_0(x: [&[BlockQ5_0]; 4], y: &[BlockQ8_0], d: &[f32], _s: &[f32]) -> [f32; 4] {
            let hi = _mm256_set1_epi8(0xF0u8 as i8);
            rows_signed(x, y, d, |a| {
                let qx = _mm256_or_si256(nibbles32(a.qs.as_ptr()), _mm256_andnot_si256(bits32(a.qh), hi));
                (qx, f16_pair(a).0)
            })
        }

        #[target_feature(enable = $feat)]
        unsafe fn rows4_iq4_nl(x: [&[BlockIQ4NL]; 4], y: &[BlockQ8_0], d: &[f32], _s: &[f32]) -> [f32; 4] {
            let t = _mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i);
            let table = _mm256_set_m128i(t, t);
            rows_signed(x, y, d, |a| (_mm256_shuffle_epi8(table, nibbles32(a.qs.as_ptr())), f16_pair(a).0))
        }

        #[target_feature(enable = $feat)]
        unsafe fn rows4_q4_1(x: [&[BlockQ4_1]; 4], y: &[BlockQ8_1], d: &[f32], s: &[f32]) -> [f32; 4] {
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
        unsafe fn rows4_q4_k(x: [&[BlockQ4K]; 4], y: &[BlockQ8K], d: &[f32], _s: &[f32]) -> [f32; 4] {
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
                    _mm256_storeu_si256(summ.as_mut_ptr() as *mut __m256i, _mm256_madd_epi16(mins, bs));
                    for j in 0..4 {
                        let q4 = load(a.qs.as_ptr().add(32 * j));
                        let lo = _mm256_and_si256(q4, m4);
                        let hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), m4);
                        let (s0, s1) = (sc[2 * j] as i32, sc[2 * j + 1] as i32);
                        let ylo = load_i8(b.qs.as_ptr().add(64 * j));
                        let yhi = load_i8(b.qs.as_ptr().add(64 * j + 32));
                        let p = _mm256_add_epi32(mul_u8i8_s(lo, ylo, s0, s0), mul_u8i8_s(hi, yhi, s1, s1));
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

        /// Four Q6_K rows: per row exactly the operations of `tile_q6_k::<1>`.
        #[target_feature(enable = $feat)]
        unsafe fn rows4_q6_k(x: [&[BlockQ6K]; 4], y: &[BlockQ8K], d: &[f32], _s: &[f32]) -> [f32; 4] {
            let mut acc = [_mm256_setzero_ps(); 4];
            let m4 = _mm256_set1_epi8(0x0F);
            for (i, b) in y.iter().enumerate() {
                let yd = *d.get_unchecked(i);
                let bs = load(b.bsums.as_ptr() as *const u8);
                for w in 0..4 {
                    prefetch_block(x[w], i, 4);
                    let a = x[w].get_unchecked(i);
                    let scales = _mm256_cvtepi8_epi16(_mm_loadu_si128(a.scales.as_ptr() as *const __m128i));
                    let off = _mm256_madd_epi16(scales, bs);
                    let mut sumi = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(off, 5));
                    for n in 0..2 {
                        let v = q6k_quants(a, n, m4);
                        for (k, vk) in v.iter().enumerate() {
                            let is = 8 * n + 2 * k;
                            let (s0, s1) = (a.scales[is] as i32, a.scales[is + 1] as i32);
                            let yv = load_i8(b.qs.as_ptr().add(128 * n + 32 * k));
                            sumi = _mm256_add_epi32(sumi, mul_u8i8_s(*vk, yv, s0, s1));
                        }
                    }
                    let wd = f16_mul_f32(a.d, 1.0);
                    acc[w] = _mm256_fmadd_ps(_mm256_set1_ps(wd * yd), _mm256_cvtepi32_ps(sumi), acc[w]);
                }
            }
            acc.map(|v| hsum_ps(v))
        }

        /// Four Q5_K rows: per row exactly the operations of `dot_q5_k`.
        #[target_feature(enable = $feat)]
        unsafe fn rows4_q5_k(x: [&[BlockQ5K]; 4], y: &[BlockQ8K], _d: &[f32], _s: &[f32]) -> [f32; 4] {
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

        type Rows4<W, A> = unsafe fn([&[W]; 4], &[A], &[f32], &[f32]) -> [f32; 4];

        type Tile<W, A, const R: usize> = unsafe fn(&[W], [&[A]; R], [&[f32]; R], [&[f32]; R]) -> [f32; R];

        /// Runs a tile kernel over `w` (weight rows of `wr` bytes back to back)
        /// and `a` (activation rows of `ar` bytes): out[i * ostride + j] = w_j · a_i.
        /// Activation rows go four at a time (their scales converted to f32 once);
        /// each group meets every weight row.
        ///
        /// # Safety
        /// The CPU has `$feat`; `out` is valid for every element written.
        #[allow(clippy::too_many_arguments)]
        #[inline(always)]
        unsafe fn drive<W: bytemuck::Pod, A: bytemuck::Pod>(
            w: &[u8],
            wr: usize,
            a: &[u8],
            ar: usize,
            out: *mut f32,
            ostride: usize,
            scales: unsafe fn(&[A], &mut [f32], &mut [f32]),
            k: (Tile<W, A, 1>, Tile<W, A, 2>, Tile<W, A, 3>, Tile<W, A, 4>),
            rows4: Option<Rows4<W, A>>,
        ) {
            let (nw, na) = (w.len() / wr, a.len() / ar);
            let nb = ar / std::mem::size_of::<A>();
            let mut stack = [0f32; 8 * 128];
            let mut heap = Vec::new();
            let sc: &mut [f32] = if 8 * nb <= stack.len() {
                &mut stack[..8 * nb]
            } else {
                heap.resize(8 * nb, 0f32);
                &mut heap
            };
            let (dsc, ssc) = sc.split_at_mut(4 * nb);
            let arow = |i: usize| -> &[A] { bytemuck::cast_slice(&a[i * ar..][..ar]) };
            let mut i0 = 0;
            while i0 < na {
                let g = (na - i0).min(4);
                for t in 0..g {
                    scales(arow(i0 + t), &mut dsc[t * nb..][..nb], &mut ssc[t * nb..][..nb]);
                }
                let (dsc, ssc) = (&*dsc, &*ssc);
                let dv = |t: usize| &dsc[t * nb..][..nb];
                let sv = |t: usize| &ssc[t * nb..][..nb];
                let wrow_at = |j: usize| -> &[W] { bytemuck::cast_slice(&w[j * wr..][..wr]) };
                let mut j0 = 0;
                if let (1, Some(r4)) = (g, rows4) {
                    while j0 + 4 <= nw {
                        let v = r4([wrow_at(j0), wrow_at(j0 + 1), wrow_at(j0 + 2), wrow_at(j0 + 3)], arow(i0), dv(0), sv(0));
                        for (t, x) in v.iter().enumerate() {
                            *out.add(i0 * ostride + j0 + t) = *x;
                        }
                        j0 += 4;
                    }
                }
                for j in j0..nw {
                    let wrow = wrow_at(j);
                    let o = out.add(i0 * ostride + j);
                    let put = |v: &[f32]| {
                        for (t, x) in v.iter().enumerate() {
                            *o.add(t * ostride) = *x;
                        }
                    };
                    let ar4 = |t: usize| arow(i0 + t);
                    match g {
                        4 => put(&(k.3)(wrow, [ar4(0), ar4(1), ar4(2), ar4(3)], [dv(0), dv(1), dv(2), dv(3)], [sv(0), sv(1), sv(2), sv(3)])),
                        3 => put(&(k.2)(wrow, [ar4(0), ar4(1), ar4(2)], [dv(0), dv(1), dv(2)], [sv(0), sv(1), sv(2)])),
                        2 => put(&(k.1)(wrow, [ar4(0), ar4(1)], [dv(0), dv(1)], [sv(0), sv(1)])),
                        _ => put(&(k.0)(wrow, [ar4(0)], [dv(0)], [sv(0)])),
                    }
                }
                i0 += g;
            }
        }

        macro_rules! tile_entry {
            ($name:ident, $imp:ident, $W:ty, $A:ty, $sc:ident, $r4:expr) => {
                /// # Safety
                /// `out` is valid for out[i * ostride + j], i < rows of `a`, j < rows of `w`.
                unsafe fn $name(w: &[u8], wr: usize, a: &[u8], ar: usize, out: *mut f32, ostride: usize) {
                    // SAFETY: the table holding this function exists only on CPUs with
                    // $feat; the caller vouches for `out`.
                    unsafe {
                        drive::<$W, $A>(w, wr, a, ar, out, ostride, $sc, ($imp::<1>, $imp::<2>, $imp::<3>, $imp::<4>), $r4)
                    }
                }
            };
        }
        tile_entry!(t_q8_0, tile_q8_0, BlockQ8_0, BlockQ8_0, scales_q8_0, Some(rows4_q8_0));
        tile_entry!(t_q4_0, tile_q4_0, BlockQ4_0, BlockQ8_0, scales_q8_0, Some(rows4_q4_0));
        tile_entry!(t_q4_1, tile_q4_1, BlockQ4_1, BlockQ8_1, scales_q8_1, Some(rows4_q4_1));
        tile_entry!(t_q5_0, tile_q5_0, BlockQ5_0, BlockQ8_0, scales_q8_0, Some(rows4_q5_0));
        tile_entry!(t_iq4_nl, tile_iq4_nl, BlockIQ4NL, BlockQ8_0, scales_q8_0, Some(rows4_iq4_nl));
        tile_entry!(t_q5_k, tile_q5_k, BlockQ5K, BlockQ8K, scales_q8_k, Some(rows4_q5_k));
        tile_entry!(t_iq4_xs, tile_iq4_xs, BlockIQ4XS, BlockQ8K, scales_q8_k, Some(rows4_iq4_xs));
        tile_entry!(t_q4_k, tile_q4_k, BlockQ4K, BlockQ8K, scales_q8_k, Some(rows4_q4_k));
        tile_entry!(t_q6_k, tile_q6_k, BlockQ6K, BlockQ8K, scales_q8_k, Some(rows4_q6_k));

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

        /// Safe entry points for the table: only reachable through `table`, which
        /// is built after the CPU was checked for `$feat`.
        macro_rules! entry {
            ($name:ident, $imp:ident, $W:ty, $A:ty) => {
                fn $name(w: &[u8], a: &[u8], _n: usize) -> f32 {
                    let w: &[$W] = bytemuck::cast_slice(w);
                    let a: &[$A] = bytemuck::cast_slice(a);
                    // SAFETY: the table holding this function exists only on CPUs with $feat.
                    unsafe { $imp(w, a) }
                }
            };
        }
        entry!(e_q8_0, dot_q8_0, BlockQ8_0, BlockQ8_0);
        entry!(e_q4_0, dot_q4_0, BlockQ4_0, BlockQ8_0);
        entry!(e_q4_1, dot_q4_1, BlockQ4_1, BlockQ8_1);
        entry!(e_q5_0, dot_q5_0, BlockQ5_0, BlockQ8_0);
        entry!(e_q5_1, dot_q5_1, BlockQ5_1, BlockQ8_1);
        entry!(e_iq4_nl, dot_iq4_nl, BlockIQ4NL, BlockQ8_0);
        entry!(e_q2_k, dot_q2_k, BlockQ2K, BlockQ8K);
        entry!(e_q3_k, dot_q3_k, BlockQ3K, BlockQ8K);
        entry!(e_q4_k, dot_q4_k, BlockQ4K, BlockQ8K);
        entry!(e_q5_k, dot_q5_k, BlockQ5K, BlockQ8K);
        entry!(e_q6_k, dot_q6_k, BlockQ6K, BlockQ8K);
        entry!(e_iq4_xs, dot_iq4_xs, BlockIQ4XS, BlockQ8K);

        fn q_q8_0(x: &[f32], out: &mut [u8]) {
            // SAFETY: as for `entry!`.
            unsafe { quantize_q8_0(x, bytemuck::cast_slice_mut(out)) }
        }
        fn q_q8_1(x: &[f32], out: &mut [u8]) {
            // SAFETY: as for `entry!`.
            unsafe { quantize_q8_1(x, bytemuck::cast_slice_mut(out)) }
        }
        fn q_q8_k(x: &[f32], out: &mut [u8]) {
            // SAFETY: as for `entry!`.
            unsafe { quantize_q8_k(x, bytemuck::cast_slice_mut(out)) }
        }

        /// The table; the caller has checked the CPU features.
        fn build(name: &'static str) -> Kernels {
            let mut k = Kernels::empty(name);
            k.set_dot(GgmlType::Q8_0, e_q8_0);
            k.set_dot(GgmlType::Q4_0, e_q4_0);
            k.set_dot(GgmlType::Q4_1, e_q4_1);
            k.set_dot(GgmlType::Q5_0, e_q5_0);
            k.set_dot(GgmlType::Q5_1, e_q5_1);
            k.set_dot(GgmlType::IQ4_NL, e_iq4_nl);
            k.set_dot(GgmlType::Q2_K, e_q2_k);
            k.set_dot(GgmlType::Q3_K, e_q3_k);
            k.set_dot(GgmlType::Q4_K, e_q4_k);
            k.set_dot(GgmlType::Q5_K, e_q5_k);
            k.set_dot(GgmlType::Q6_K, e_q6_k);
            k.set_dot(GgmlType::IQ4_XS, e_iq4_xs);
            k.set_tile(GgmlType::Q8_0, t_q8_0);
            k.set_tile(GgmlType::Q4_0, t_q4_0);
            k.set_tile(GgmlType::Q4_1, t_q4_1);
            k.set_tile(GgmlType::Q5_0, t_q5_0);
            k.set_tile(GgmlType::IQ4_NL, t_iq4_nl);
            k.set_tile(GgmlType::Q5_K, t_q5_k);
            k.set_tile(GgmlType::IQ4_XS, t_iq4_xs);
            k.set_tile(GgmlType::Q4_K, t_q4_k);
            k.set_tile(GgmlType::Q6_K, t_q6_k);
            k.set_quant(GgmlType::Q8_0, q_q8_0);
            k.set_quant(GgmlType::Q8_1, q_q8_1);
            k.set_quant(GgmlType::Q8_K, q_q8_k);
            k
        }
    };
}
