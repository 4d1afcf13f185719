//! Prefill tiles in 512-bit registers: two weight rows at once, lanes 0..8
//! for the first and 8..16 for the second, against up to four activation rows
//! (each activation block broadcast to both halves).
//!
//! Each half runs exactly the operations of the 256-bit one-row dot (the same
//! exact i32 per lane, the same FMA chain into eight f32 lanes, the same
//! horizontal sum and scalar corrections), so an element equals its one-row
//! dot bit for bit and batched still equals solo. What changes is the work per
//! element: signed weights go in as unsigned bytes with the offset taken off
//! by a precomputed per-lane activation sum (dpbusd accumulates it: no sign
//! trick), scaled sub-blocks use maddubs + dpwssd instead of dpbusd + mullo,
//! and the K-quant min/offset sums are vectorised across the activation rows.

// Rows and lanes are indexed in step across several arrays.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::{f16_mul_f32, f16_pair, hsum_ps, load, q6k_quants, t_q4_0, t_q4_1, t_q4_k, t_q5_0, t_q6_k, t_q8_0};
use crate::cpu::kernels::{Kernels, TileFn};
use owl_quant::{
    unpack_scales_mins_k4, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ6K, BlockQ8K,
    BlockQ8_0, BlockQ8_1, GgmlType,
};

/// A group of up to four activation rows, with per-block data laid out
/// block-major: `d[4 * i + r]` (and `s` for Q8_1) as f32, `ext` the type's
/// extra (four 32-byte entries per block).
struct Acts<'a, A> {
    rows: [&'a [A]; 4],
    d: &'a [f32],
    s: &'a [f32],
    ext: &'a [__m256i],
}

type Prep<A> = unsafe fn(rows: &[&[A]], d: &mut [f32], s: &mut [f32], ext: &mut [__m256i]);
type Pair<W, A, const R: usize> = unsafe fn(&[W], &[W], &Acts<'_, A>) -> [[f32; 2]; R];
/// One pair kernel per group size 1..=4.
type Pairs<W, A> = (Pair<W, A, 1>, Pair<W, A, 2>, Pair<W, A, 3>, Pair<W, A, 4>);

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
unsafe fn halves(v: __m512) -> [f32; 2] {
    [hsum_ps(_mm512_castps512_ps256(v)), hsum_ps(_mm512_extractf32x8_ps::<1>(v))]
}

/// [a x8 | b x8].
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
unsafe fn pair_ps(a: f32, b: f32) -> __m512 {
    _mm512_insertf32x8::<1>(_mm512_set1_ps(a), _mm256_set1_ps(b))
}

/// A 32-byte activation block in both halves.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
unsafe fn bcast(p: *const i8) -> __m512i {
    _mm512_broadcast_i64x4(_mm256_loadu_si256(p as *const __m256i))
}

/// Two 32-byte weight vectors side by side.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
unsafe fn join(a: __m256i, b: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(a), b)
}

/// The 32 nibbles of two 16-byte runs as bytes: elements 0..32 of the
/// first (low nibbles, then high, as `nibbles32`), then of the second.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
unsafe fn nibbles64(p0: *const u8, p1: *const u8) -> __m512i {
    let t = _mm256_set_m128i(_mm_loadu_si128(p1 as *const __m128i), _mm_loadu_si128(p0 as *const __m128i));
    let h = _mm256_srli_epi16(t, 4);
    let idx = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
    let q = _mm512_permutex2var_epi64(_mm512_castsi256_si512(t), idx, _mm512_castsi256_si512(h));
    _mm512_and_si512(q, _mm512_set1_epi8(0x0F))
}

/// Q8_0 activations for weights stored with an offset `OFF` (value = byte - OFF):
/// f32 scales and, per block and lane, -OFF * (sum of the lane's four bytes).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
unsafe fn prep_q8_0<const OFF: i32>(rows: &[&[BlockQ8_0]], d: &mut [f32], _s: &mut [f32], ext: &mut [__m256i]) {
    let ones = _mm256_set1_epi8(1);
    let m = _mm256_set1_epi32(-OFF);
    for (r, row) in rows.iter().enumerate() {
        for (i, b) in row.iter().enumerate() {
            *d.get_unchecked_mut(4 * i + r) = f16_pair(b).0;
            let ls = _mm256_dpbusd_epi32(_mm256_setzero_si256(), ones, load(b.qs.as_ptr() as *const u8));
            *ext.get_unchecked_mut(4 * i + r) = _mm256_mullo_epi32(ls, m);
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
unsafe fn prep_q8_1(rows: &[&[BlockQ8_1]], d: &mut [f32], s: &mut [f32], _ext: &mut [__m256i]) {
    for (r, row) in rows.iter().enumerate() {
        for (i, b) in row.iter().enumerate() {
            (*d.get_unchecked_mut(4 * i + r), *s.get_unchecked_mut(4 * i + r)) = f16_pair(b);
        }
    }
}

/// Q8_K activations: f32 scales, and for Q4_K the sums of each 32-element
/// sub-block (pairs of bsums) as i16, row r at bytes 16r..16r+16 of the block's 64.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
unsafe fn prep_q8_k(rows: &[&[BlockQ8K]], d: &mut [f32], _s: &mut [f32], ext: &mut [__m256i]) {
    for (r, row) in rows.iter().enumerate() {
        for (i, b) in row.iter().enumerate() {
            *d.get_unchecked_mut(4 * i + r) = b.d();
            let dst = (ext.as_mut_ptr().add(4 * i) as *mut i16).add(8 * r);
            for k in 0..8 {
                *dst.add(k) = b.bsum(2 * k) + b.bsum(2 * k + 1);
            }
        }
    }
}

/// Weights whose bytes (after `ex`) are value + offset, against Q8_0
/// activations whose `ext` holds -offset * lane sums: one dpbusd per block
/// gives the exact i32 lanes of the sign-trick dot.
#[inline(always)]
unsafe fn pair_offset<W, const R: usize>(
    x0: &[W],
    x1: &[W],
    g: &Acts<'_, BlockQ8_0>,
    ex: impl Fn(&W, &W) -> (__m512i, __m512),
) -> [[f32; 2]; R] {
    let mut acc = [_mm512_setzero_ps(); R];
    for i in 0..x0.len() {
        let (wq, wdv) = ex(x0.get_unchecked(i), x1.get_unchecked(i));
        for r in 0..R {
            let b = g.rows[r].get_unchecked(i);
            let cv = _mm512_broadcast_i64x4(*g.ext.get_unchecked(4 * i + r));
            let p = _mm512_dpbusd_epi32(cv, wq, bcast(b.qs.as_ptr()));
            let dd = _mm512_mul_ps(wdv, _mm512_set1_ps(*g.d.get_unchecked(4 * i + r)));
            acc[r] = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(p), acc[r]);
        }
    }
    acc.map(|v| halves(v))
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
unsafe fn pair_q8_0<const R: usize>(x0: &[BlockQ8_0], x1: &[BlockQ8_0], g: &Acts<'_, BlockQ8_0>) -> [[f32; 2]; R] {
    let flip = _mm512_set1_epi8(0x80u8 as i8);
    pair_offset(x0, x1, g, |a0, a1| {
        let q = join(load(a0.qs.as_ptr() as *const u8), load(a1.qs.as_ptr() as *const u8));
        (_mm512_xor_si512(q, flip), pair_ps(f16_pair(a0).0, f16_pair(a1).0))
    })
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
unsafe fn pair_q4_0<const R: usize>(x0: &[BlockQ4_0], x1: &[BlockQ4_0], g: &Acts<'_, BlockQ8_0>) -> [[f32; 2]; R] {
    pair_offset(x0, x1, g, |a0, a1| (nibbles64(a0.qs.as_ptr(), a1.qs.as_ptr()), pair_ps(f16_pair(a0).0, f16_pair(a1).0)))
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
unsafe fn pair_q5_0<const R: usize>(x0: &[BlockQ5_0], x1: &[BlockQ5_0], g: &Acts<'_, BlockQ8_0>) -> [[f32; 2]; R] {
    let b4 = _mm512_set1_epi8(0x10);
    pair_offset(x0, x1, g, |a0, a1| {
        let q = nibbles64(a0.qs.as_ptr(), a1.qs.as_ptr());
        // Byte e holds element e of each row, so bit e of qh is its fifth bit.
        let k = u32::from_le_bytes(a0.qh) as u64 | (u32::from_le_bytes(a1.qh) as u64) << 32;
        let q = _mm512_mask_add_epi8(q, k, q, b4);
        (q, pair_ps(f16_pair(a0).0, f16_pair(a1).0))
    })
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
unsafe fn pair_q4_1<const R: usize>(x0: &[BlockQ4_1], x1: &[BlockQ4_1], g: &Acts<'_, BlockQ8_1>) -> [[f32; 2]; R] {
    let mut acc = [_mm512_setzero_ps(); R];
    // Lane r: the running min term of activation row r, one per weight row.
    let (mut summs0, mut summs1) = (_mm_setzero_ps(), _mm_setzero_ps());
    for i in 0..x0.len() {
        let (a0, a1) = (x0.get_unchecked(i), x1.get_unchecked(i));
        let ((wd0, wm0), (wd1, wm1)) = (f16_pair(a0), f16_pair(a1));
        let sv = _mm_loadu_ps(g.s.as_ptr().add(4 * i));
        summs0 = _mm_add_ps(summs0, _mm_mul_ps(_mm_set1_ps(wm0), sv));
        summs1 = _mm_add_ps(summs1, _mm_mul_ps(_mm_set1_ps(wm1), sv));
        let wq = nibbles64(a0.qs.as_ptr(), a1.qs.as_ptr());
        let wdv = pair_ps(wd0, wd1);
        for r in 0..R {
            let b = g.rows[r].get_unchecked(i);
            let p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wq, bcast(b.qs.as_ptr()));
            let dd = _mm512_mul_ps(wdv, _mm512_set1_ps(*g.d.get_unchecked(4 * i + r)));
            acc[r] = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(p), acc[r]);
        }
    }
    let (mut m0, mut m1) = ([0f32; 4], [0f32; 4]);
    _mm_storeu_ps(m0.as_mut_ptr(), summs0);
    _mm_storeu_ps(m1.as_mut_ptr(), summs1);
    let mut out = [[0f32; 2]; R];
    for r in 0..R {
        let h = halves(acc[r]);
        out[r] = [h[0] + m0[r], h[1] + m1[r]];
    }
    out
}

/// The exact i32 totals of each 256-bit half of four vectors (activation rows
/// 0..4): `.0` lane r = half 0 of `p[r]`, `.1` lane r = half 1 of `p[r]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
unsafe fn half_sums4(p: [__m512i; 4]) -> (__m128i, __m128i) {
    let u = _mm512_add_epi32(_mm512_unpacklo_epi32(p[0], p[1]), _mm512_unpackhi_epi32(p[0], p[1]));
    let v = _mm512_add_epi32(_mm512_unpacklo_epi32(p[2], p[3]), _mm512_unpackhi_epi32(p[2], p[3]));
    // Each 128-bit lane: the sums of its four elements for rows 0, 1, 2, 3.
    let t = _mm512_add_epi32(_mm512_unpacklo_epi64(u, v), _mm512_unpackhi_epi64(u, v));
    let t = _mm512_add_epi32(t, _mm512_shuffle_i64x2::<0b10_11_00_01>(t, t));
    (_mm512_castsi512_si128(t), _mm512_extracti32x4_epi32::<2>(t))
}

/// Q4_K as the one-row dot: per 64 elements one exact integer for the scales
/// and one for the mins, each added to its row's f32 chain with one FMA. The
/// chains of the four activation rows run side by side in the lanes of one
/// 128-bit register per weight row (the same operations, lane by lane).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
unsafe fn pair_q4_k<const R: usize>(x0: &[BlockQ4K], x1: &[BlockQ4K], g: &Acts<'_, BlockQ8K>) -> [[f32; 2]; R] {
    let m4 = _mm512_set1_epi8(0x0F);
    // Lane r: the chains of weight row 0 and 1 against activation row r.
    let (mut acc0, mut acc1) = (_mm_setzero_ps(), _mm_setzero_ps());
    let (mut min0, mut min1) = (_mm_setzero_ps(), _mm_setzero_ps());
    // Gathers element j of each 128-bit lane: lane j of the result holds it for rows 0..4.
    let tr = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    for i in 0..x0.len() {
        let (a0, a1) = (x0.get_unchecked(i), x1.get_unchecked(i));
        let (sc0, mn0) = unpack_scales_mins_k4(&a0.scales);
        let (sc1, mn1) = unpack_scales_mins_k4(&a1.scales);
        let ((wd0, wmin0), (wd1, wmin1)) = (f16_pair(a0), f16_pair(a1));
        let ddv = _mm_loadu_ps(g.d.as_ptr().add(4 * i));
        let (sd0, sd1) = (_mm_mul_ps(_mm_set1_ps(wd0), ddv), _mm_mul_ps(_mm_set1_ps(wd1), ddv));
        let (sm0, sm1) = (_mm_mul_ps(_mm_set1_ps(wmin0), ddv), _mm_mul_ps(_mm_set1_ps(wmin1), ddv));
        // Min sums per 64 elements: mins[2j]*sum(sub-block 2j) + mins[2j+1]*sum(2j+1),
        // exact in i32; after the transpose, 128-bit lane j holds them for rows 0..4.
        let bs8 = _mm512_loadu_si512(g.ext.as_ptr().add(4 * i) as *const _);
        let mins = |mn: &[u8; 8]| _mm512_broadcast_i32x4(_mm_cvtepu8_epi16(_mm_loadl_epi64(mn.as_ptr() as *const __m128i)));
        let mt0 = _mm512_permutexvar_epi32(tr, _mm512_madd_epi16(bs8, mins(&mn0)));
        let mt1 = _mm512_permutexvar_epi32(tr, _mm512_madd_epi16(bs8, mins(&mn1)));
        let mut mj0 = [_mm_setzero_si128(); 4];
        let mut mj1 = [_mm_setzero_si128(); 4];
        _mm512_storeu_si512(mj0.as_mut_ptr() as *mut _, mt0);
        _mm512_storeu_si512(mj1.as_mut_ptr() as *mut _, mt1);
        // Sub-block scales as i16: [sc0[0..8], sc1[0..8]].
        let mut scb = [0u8; 16];
        scb[..8].copy_from_slice(&sc0);
        scb[8..].copy_from_slice(&sc1);
        let sc512 = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(_mm_loadu_si128(scb.as_ptr() as *const __m128i)));
        for j in 0..4 {
            let q4 = join(load(a0.qs.as_ptr().add(32 * j)), load(a1.qs.as_ptr().add(32 * j)));
            let lo = _mm512_and_si512(q4, m4);
            let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(q4), m4);
            let sidx = |k: i16| join(_mm256_set1_epi16(k), _mm256_set1_epi16(8 + k));
            let s_lo = _mm512_permutexvar_epi16(sidx(2 * j as i16), sc512);
            let s_hi = _mm512_permutexvar_epi16(sidx(2 * j as i16 + 1), sc512);
            let mut p = [_mm512_setzero_si512(); 4];
            for r in 0..R {
                let b = g.rows[r].get_unchecked(i);
                let ylo = bcast(b.qs.as_ptr().add(64 * j));
                let yhi = bcast(b.qs.as_ptr().add(64 * j + 32));
                let t = _mm512_dpwssd_epi32(_mm512_setzero_si512(), _mm512_maddubs_epi16(lo, ylo), s_lo);
                p[r] = _mm512_dpwssd_epi32(t, _mm512_maddubs_epi16(hi, yhi), s_hi);
            }
            let (h0, h1) = half_sums4(p);
            acc0 = _mm_fmadd_ps(_mm_cvtepi32_ps(h0), sd0, acc0);
            acc1 = _mm_fmadd_ps(_mm_cvtepi32_ps(h1), sd1, acc1);
            min0 = _mm_fmadd_ps(_mm_cvtepi32_ps(mj0[j]), sm0, min0);
            min1 = _mm_fmadd_ps(_mm_cvtepi32_ps(mj1[j]), sm1, min1);
        }
    }
    let (mut o0, mut o1) = ([0f32; 4], [0f32; 4]);
    _mm_storeu_ps(o0.as_mut_ptr(), _mm_sub_ps(acc0, min0));
    _mm_storeu_ps(o1.as_mut_ptr(), _mm_sub_ps(acc1, min1));
    let mut out = [[0f32; 2]; R];
    for r in 0..R {
        out[r] = [o0[r], o1[r]];
    }
    out
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
unsafe fn pair_q6_k<const R: usize>(x0: &[BlockQ6K], x1: &[BlockQ6K], g: &Acts<'_, BlockQ8K>) -> [[f32; 2]; R] {
    let m4 = _mm256_set1_epi8(0x0F);
    let mut acc = [_mm512_setzero_ps(); R];
    for i in 0..x0.len() {
        let (a0, a1) = (x0.get_unchecked(i), x1.get_unchecked(i));
        let sc = |a: &BlockQ6K| _mm256_cvtepi8_epi16(_mm_loadu_si128(a.scales.as_ptr() as *const __m128i));
        let sc512 = join(sc(a0), sc(a1));
        // Lane l starts at -32 * (the offset of sub-blocks 2l and 2l+1), in
        // both halves, as the one-row dot starts its sums.
        let mut sumi = [_mm512_setzero_si512(); R];
        for r in 0..R {
            let b = g.rows[r].get_unchecked(i);
            let bs = _mm512_broadcast_i64x4(_mm256_loadu_si256(b.bsums.as_ptr() as *const __m256i));
            let off = _mm512_madd_epi16(sc512, bs);
            sumi[r] = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32::<5>(off));
        }
        for n in 0..2 {
            let v0 = q6k_quants(a0, n, m4);
            let v1 = q6k_quants(a1, n, m4);
            for k in 0..4 {
                let wq = join(v0[k], v1[k]);
                let is = (8 * n + 2 * k) as i16;
                let sidx = _mm512_inserti64x4::<1>(
                    _mm512_castsi256_si512(_mm256_set_m128i(_mm_set1_epi16(is + 1), _mm_set1_epi16(is))),
                    _mm256_set_m128i(_mm_set1_epi16(17 + is), _mm_set1_epi16(16 + is)),
                );
                let sv = _mm512_permutexvar_epi16(sidx, sc512);
                for r in 0..R {
                    let b = g.rows[r].get_unchecked(i);
                    let yv = bcast(b.qs.as_ptr().add(128 * n + 32 * k));
                    sumi[r] = _mm512_dpwssd_epi32(sumi[r], _mm512_maddubs_epi16(wq, yv), sv);
                }
            }
        }
        let wdv = pair_ps(f16_mul_f32(a0.d, 1.0), f16_mul_f32(a1.d, 1.0));
        for r in 0..R {
            let dd = _mm512_mul_ps(wdv, _mm512_set1_ps(*g.d.get_unchecked(4 * i + r)));
            acc[r] = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(sumi[r]), acc[r]);
        }
    }
    acc.map(|v| halves(v))
}

/// Runs pair kernels over `w` (weight rows of `wr` bytes) and `a` (activation
/// rows of `ar` bytes): out[i * ostride + j] = w_j · a_i. A single activation
/// row (decode) and an odd last weight row go to the 256-bit `one` tile.
///
/// # Safety
/// The CPU has the features above; `out` is valid for every element written.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn drive2<W: bytemuck::Pod, A: bytemuck::Pod>(
    w: &[u8],
    wr: usize,
    a: &[u8],
    ar: usize,
    out: *mut f32,
    ostride: usize,
    prep: Prep<A>,
    k: Pairs<W, A>,
    one: TileFn,
) {
    let (nw, na) = (w.len() / wr, a.len() / ar);
    let npair = nw / 2;
    if na < 2 || npair == 0 {
        return one(w, wr, a, ar, out, ostride);
    }
    let nb = ar / std::mem::size_of::<A>();
    let mut d = vec![0f32; 4 * nb];
    let mut s = vec![0f32; 4 * nb];
    let mut ext = vec![_mm256_setzero_si256(); 4 * nb];
    let arow = |i: usize| -> &[A] { bytemuck::cast_slice(&a[i * ar..][..ar]) };
    let wrow = |j: usize| -> &[W] { bytemuck::cast_slice(&w[j * wr..][..wr]) };
    let mut i0 = 0;
    while i0 < na {
        let g = (na - i0).min(4);
        let rows = [0, 1, 2, 3].map(|t| arow(i0 + t.min(g - 1)));
        prep(&rows[..g], &mut d, &mut s, &mut ext);
        let acts = Acts { rows, d: &d, s: &s, ext: &ext };
        for p in 0..npair {
            let (x0, x1) = (wrow(2 * p), wrow(2 * p + 1));
            let put = |v: &[[f32; 2]]| {
                for (t, pair) in v.iter().enumerate() {
                    let o = out.add((i0 + t) * ostride + 2 * p);
                    *o = pair[0];
                    *o.add(1) = pair[1];
                }
            };
            match g {
                4 => put(&(k.3)(x0, x1, &acts)),
                3 => put(&(k.2)(x0, x1, &acts)),
                2 => put(&(k.1)(x0, x1, &acts)),
                _ => put(&(k.0)(x0, x1, &acts)),
            }
        }
        i0 += g;
    }
    if nw % 2 == 1 {
        one(&w[(nw - 1) * wr..], wr, a, ar, out.add(nw - 1), ostride);
    }
}

macro_rules! pair_entry {
    ($name:ident, $imp:ident, $W:ty, $A:ty, $prep:expr, $one:ident) => {
        /// # Safety
        /// `out` is valid for out[i * ostride + j], i < rows of `a`, j < rows of `w`.
        unsafe fn $name(w: &[u8], wr: usize, a: &[u8], ar: usize, out: *mut f32, ostride: usize) {
            // SAFETY: installed only into the AVX-512 VNNI table (features checked);
            // the caller vouches for `out`.
            unsafe { drive2::<$W, $A>(w, wr, a, ar, out, ostride, $prep, ($imp::<1>, $imp::<2>, $imp::<3>, $imp::<4>), $one) }
        }
    };
}
pair_entry!(z_q8_0, pair_q8_0, BlockQ8_0, BlockQ8_0, prep_q8_0::<128>, t_q8_0);
pair_entry!(z_q4_0, pair_q4_0, BlockQ4_0, BlockQ8_0, prep_q8_0::<8>, t_q4_0);
pair_entry!(z_q5_0, pair_q5_0, BlockQ5_0, BlockQ8_0, prep_q8_0::<16>, t_q5_0);
pair_entry!(z_q4_1, pair_q4_1, BlockQ4_1, BlockQ8_1, prep_q8_1, t_q4_1);
pair_entry!(z_q4_k, pair_q4_k, BlockQ4K, BlockQ8K, prep_q8_k, t_q4_k);
pair_entry!(z_q6_k, pair_q6_k, BlockQ6K, BlockQ8K, prep_q8_k, t_q6_k);

/// Q6_K: decode in 512-bit registers (`zmm_rows`), prompts through the pairs.
///
/// # Safety
/// As the pair entries.
unsafe fn zd_q6_k(w: &[u8], wr: usize, a: &[u8], ar: usize, out: *mut f32, ostride: usize) {
    // SAFETY: as the pair entries.
    unsafe { super::zmm_rows::z_rows_q6_k(w, wr, a, ar, out, ostride, z_q6_k) }
}

/// Installs the 512-bit tiles into the AVX-512 VNNI table (needs AVX512DQ too).
/// `OWL_NO_ZMM` (any value) keeps the table's 256-bit tiles, for A/B timing.
pub(super) fn install(k: &mut Kernels) {
    if std::env::var_os("OWL_NO_ZMM").is_some() || !is_x86_feature_detected!("avx512dq") {
        return;
    }
    k.set_tile(GgmlType::Q8_0, z_q8_0);
    k.set_tile(GgmlType::Q4_0, z_q4_0);
    k.set_tile(GgmlType::Q5_0, z_q5_0);
    k.set_tile(GgmlType::Q4_1, z_q4_1);
    k.set_tile(GgmlType::Q4_K, z_q4_k);
    k.set_tile(GgmlType::Q6_K, zd_q6_k);
}
