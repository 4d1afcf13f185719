//! Decode (one activation row) in 512-bit registers, for Q6_K: the output head
//! of Q4_K_M models, the largest matvec of a token.
//!
//! A 256-bit Q6_K dot handles a block as two halves of 128 quants, each adding
//! into the same eight i32 lanes. Here one zmm holds both halves side by side
//! (half 0 in lanes 0..8, half 1 in lanes 8..16), and the two halves' lanes are
//! added at the end of the block: the same exact integer per lane as the
//! 256-bit kernels form, so the same f32 FMA chain and horizontal sum, and an
//! element equals the one-row dot bit for bit. The work per block is about half.

// Rows and lanes are indexed in step across several arrays.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::{f16_mul_f32, hsum_ps, prefetch_block, t_q6_k};
use owl_quant::{BlockQ6K, BlockQ8K};

/// [a | b].
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn join(a: *const u8, b: *const u8) -> __m512i {
    let lo = _mm512_castsi256_si512(_mm256_loadu_si256(a as *const __m256i));
    _mm512_inserti64x4::<1>(lo, _mm256_loadu_si256(b as *const __m256i))
}

/// Shuffle k of the block's 16 scales (present in both 128-bit lanes): bytes
/// 0..8 scale 2k, 8..16 scale 2k+1 (half 0's sub-blocks), then 16..24 scale
/// 8+2k and 24..32 scale 9+2k (half 1's).
static SHUF: [[u8; 32]; 4] = {
    let mut t = [[0u8; 32]; 4];
    let mut k = 0;
    while k < 4 {
        let mut b = 0;
        while b < 32 {
            t[k][b] = (2 * k + 8 * (b / 16) + (b % 16) / 8) as u8;
            b += 1;
        }
        k += 1;
    }
    t
};

/// Four Q6_K rows against one activation row.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn rows4_q6_k_zmm(x: [&[BlockQ6K]; 4], y: &[BlockQ8K]) -> [f32; 4] {
    let m4 = _mm512_set1_epi8(0x0F);
    let mut acc = [_mm256_setzero_ps(); 4];
    let sh = SHUF.map(|s| _mm256_loadu_si256(s.as_ptr() as *const __m256i));
    for (i, b) in y.iter().enumerate() {
        let yd = b.d();
        let bs = _mm256_loadu_si256(b.bsums.as_ptr() as *const __m256i);
        let q = b.qs.as_ptr() as *const u8;
        let yv: [__m512i; 4] = std::array::from_fn(|k| join(q.add(32 * k), q.add(128 + 32 * k)));
        for w in 0..4 {
            prefetch_block(x[w], i, 4);
            let a = x[w].get_unchecked(i);
            let sc8 = _mm_loadu_si128(a.scales.as_ptr() as *const __m128i);
            // Lane l starts at -32 * (the offset of sub-blocks 2l and 2l+1).
            let off = _mm256_madd_epi16(_mm256_cvtepi8_epi16(sc8), bs);
            let start = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(off, 5));
            let sc2 = _mm256_broadcastsi128_si256(sc8);
            let q4a = join(a.ql.as_ptr(), a.ql.as_ptr().add(64));
            let q4b = join(a.ql.as_ptr().add(32), a.ql.as_ptr().add(96));
            let qh = join(a.qh.as_ptr(), a.qh.as_ptr().add(32));
            let hb = |mask: u8| _mm512_and_si512(qh, _mm512_set1_epi8(mask as i8));
            let v = [
                _mm512_or_si512(_mm512_and_si512(q4a, m4), _mm512_slli_epi16::<4>(hb(0x03))),
                _mm512_or_si512(_mm512_and_si512(q4b, m4), _mm512_slli_epi16::<2>(hb(0x0C))),
                _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16::<4>(q4a), m4), hb(0x30)),
                _mm512_or_si512(
                    _mm512_and_si512(_mm512_srli_epi16::<4>(q4b), m4),
                    _mm512_srli_epi16::<2>(hb(0xC0)),
                ),
            ];
            let mut s = _mm512_setzero_si512();
            for k in 0..4 {
                let sv = _mm512_cvtepi8_epi16(_mm256_shuffle_epi8(sc2, sh[k]));
                s = _mm512_dpwssd_epi32(s, _mm512_maddubs_epi16(v[k], yv[k]), sv);
            }
            let sumi = _mm256_add_epi32(
                start,
                _mm256_add_epi32(_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64::<1>(s)),
            );
            let wd = f16_mul_f32(a.d, 1.0);
            acc[w] = _mm256_fmadd_ps(_mm256_set1_ps(wd * yd), _mm256_cvtepi32_ps(sumi), acc[w]);
        }
    }
    acc.map(|v| hsum_ps(v))
}

/// The Q6_K decode tile: one activation row, four weight rows at a time in
/// 512-bit registers, the last `nw % 4` rows (and any batch of more than one
/// activation row) through `prefill`.
///
/// # Safety
/// The CPU has the features above; `out` is valid for every element written.
pub(super) unsafe fn z_rows_q6_k(
    w: &[u8],
    wr: usize,
    a: &[u8],
    ar: usize,
    out: *mut f32,
    ostride: usize,
    prefill: crate::cpu::kernels::TileFn,
) {
    if a.len() != ar {
        return prefill(w, wr, a, ar, out, ostride);
    }
    let nw = w.len() / wr;
    let y: &[BlockQ8K] = bytemuck::cast_slice(a);
    let row = |j: usize| -> &[BlockQ6K] { bytemuck::cast_slice(&w[j * wr..][..wr]) };
    let mut j0 = 0;
    while j0 + 4 <= nw {
        let v = rows4_q6_k_zmm([row(j0), row(j0 + 1), row(j0 + 2), row(j0 + 3)], y);
        std::ptr::copy_nonoverlapping(v.as_ptr(), out.add(j0), 4);
        j0 += 4;
    }
    if j0 < nw {
        t_q6_k(&w[j0 * wr..], wr, a, ar, out.add(j0), ostride);
    }
}
