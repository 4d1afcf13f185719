//! The packed Q6_K tile in 512-bit registers: two packed groups (16 weight
//! rows, one per lane) against up to four activation rows. Each lane runs
//! exactly the operations of the 256-bit `gemm_q6_kx8` (so of the one-row dot):
//! the same exact lane integers, the same eight FMA chains per row and the same
//! order of adding them at the end. An odd last group goes to the 256-bit
//! kernel, which agrees bit for bit.

// Rows and lanes are indexed in step across several arrays.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::zmm_packed::{join16, join32, store16};
use super::{gemm_q6_kx8, store_lanes, Q6_AHEAD};
use crate::cpu::kernels::Kernels;
use crate::cpu::repack::{BlockQ6Kx8, GROUP};
use owl_quant::{BlockQ8K, GgmlType};

/// Sub-block scales `s0` (group 0's eight rows) and `s1` (group 1's), each
/// widened to an i16 pair (s, s) per lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl")]
unsafe fn scale_pairs(s0: &[u8; 8], s1: &[u8; 8]) -> __m512i {
    let a = _mm_loadl_epi64(s0.as_ptr() as *const __m128i);
    let b = _mm_loadl_epi64(s1.as_ptr() as *const __m128i);
    _mm512_cvtepi8_epi16(_mm256_set_m128i(_mm_unpacklo_epi8(b, b), _mm_unpacklo_epi8(a, a)))
}

/// Groups `x0` (lanes 0..8) and `x1` (lanes 8..16) against R activation rows.
/// `acc[r][l]` is lane l of the one-row dot for the sixteen rows: -32 times
/// the offset of sub-blocks 2l, 2l+1 plus, per 32-quant chunk, its bytes
/// 4l..4l+4 times the chunk's scale, one FMA with wd*yd per block.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
unsafe fn gemm_q6_kx16<const R: usize>(
    x0: &[BlockQ6Kx8],
    x1: &[BlockQ6Kx8],
    y: [&[BlockQ8K]; R],
) -> [__m512; R] {
    let m4 = _mm512_set1_epi8(0x0F);
    let mut acc = [[_mm512_setzero_ps(); 8]; R];
    for i in 0..x0.len() {
        let (a0, a1) = (x0.get_unchecked(i), x1.get_unchecked(i));
        let pf0 = (a0 as *const BlockQ6Kx8 as *const i8).wrapping_add(Q6_AHEAD);
        let pf1 = (a1 as *const BlockQ6Kx8 as *const i8).wrapping_add(Q6_AHEAD);
        let wd = _mm512_cvtph_ps(join16(a0.d.as_ptr() as *const u8, a1.d.as_ptr() as *const u8));
        let mut dd = [_mm512_setzero_ps(); R];
        for r in 0..R {
            dd[r] = _mm512_mul_ps(wd, _mm512_set1_ps(y[r].get_unchecked(i).d()));
        }
        let sv: [__m512i; 16] =
            std::array::from_fn(|j| scale_pairs(a0.scales.get_unchecked(j), a1.scales.get_unchecked(j)));
        for l in 0..8 {
            // Each row's (scale 2l, scale 2l+1) against the activation's bsums
            // 2l, 2l+1: lane l's offset.
            let lo = |g: &BlockQ6Kx8| {
                _mm_unpacklo_epi8(
                    _mm_loadl_epi64(g.scales.get_unchecked(2 * l).as_ptr() as *const __m128i),
                    _mm_loadl_epi64(g.scales.get_unchecked(2 * l + 1).as_ptr() as *const __m128i),
                )
            };
            let pr = _mm512_cvtepi8_epi16(_mm256_set_m128i(lo(a1), lo(a0)));
            let mut sumi = [_mm512_setzero_si512(); R];
            for r in 0..R {
                let b = y[r].get_unchecked(i);
                let bs = _mm512_set1_epi32((b.bsums.as_ptr().add(2 * l) as *const i32).read_unaligned());
                let off = _mm512_madd_epi16(pr, bs);
                sumi[r] = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32::<5>(off));
            }
            for n in 0..2 {
                let (q0, q1) = (a0.qs.get_unchecked(2 * l + n).as_ptr(), a1.qs.get_unchecked(2 * l + n).as_ptr());
                for t in [0, 64] {
                    _mm_prefetch::<_MM_HINT_T0>(pf0.wrapping_add(192 * l + 96 * n + t));
                    _mm_prefetch::<_MM_HINT_T0>(pf1.wrapping_add(192 * l + 96 * n + t));
                }
                let q4a = join32(q0, q1);
                let q4b = join32(q0.add(32), q1.add(32));
                let qh = join32(q0.add(64), q1.add(64));
                // As `q6k_quants`: every operation stays inside its byte.
                let hbits = |mask: u8| _mm512_and_si512(qh, _mm512_set1_epi8(mask as i8));
                let v = [
                    _mm512_or_si512(_mm512_and_si512(q4a, m4), _mm512_slli_epi16::<4>(hbits(0x03))),
                    _mm512_or_si512(_mm512_and_si512(q4b, m4), _mm512_slli_epi16::<2>(hbits(0x0C))),
                    _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16::<4>(q4a), m4), hbits(0x30)),
                    _mm512_or_si512(
                        _mm512_and_si512(_mm512_srli_epi16::<4>(q4b), m4),
                        _mm512_srli_epi16::<2>(hbits(0xC0)),
                    ),
                ];
                for k in 0..4 {
                    // Lanes 0..4 of a chunk take its first scale, 4..8 its second.
                    let s = sv[8 * n + 2 * k + l / 4];
                    for r in 0..R {
                        let yb = y[r].get_unchecked(i).qs.as_ptr().add(128 * n + 32 * k + 4 * l);
                        let y4 = _mm512_set1_epi32((yb as *const i32).read_unaligned());
                        // 2 products of at most 63 * 127 per i16: no saturation;
                        // dpwssd adds the scaled pairs as madd + add does.
                        sumi[r] = _mm512_dpwssd_epi32(sumi[r], _mm512_maddubs_epi16(v[k], y4), s);
                    }
                }
            }
            for r in 0..R {
                acc[r][l] = _mm512_fmadd_ps(dd[r], _mm512_cvtepi32_ps(sumi[r]), acc[r][l]);
            }
        }
    }
    // hsum_ps's order: ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)).
    acc.map(|c| {
        let t = [0, 1, 2, 3].map(|j| _mm512_add_ps(c[j], c[j + 4]));
        _mm512_add_ps(_mm512_add_ps(t[0], t[2]), _mm512_add_ps(t[1], t[3]))
    })
}

/// As the 256-bit `drive_q6_kx8`, two groups at a time.
///
/// # Safety
/// The CPU has the features above; `out` is valid for every element written.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
unsafe fn drive_q6_kx16(
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
        let mut gi = 0;
        while gi + 2 <= ngroups {
            let (x0, x1) = (&x[gi * nb..][..nb], &x[(gi + 1) * nb..][..nb]);
            let j0 = gi * GROUP;
            let valid = (nrows - j0 - GROUP).min(GROUP);
            match g {
                4 => store16(
                    &gemm_q6_kx16::<4>(x0, x1, [ar_(0), ar_(1), ar_(2), ar_(3)]),
                    out,
                    ostride,
                    i0,
                    j0,
                    valid,
                ),
                3 => store16(&gemm_q6_kx16::<3>(x0, x1, [ar_(0), ar_(1), ar_(2)]), out, ostride, i0, j0, valid),
                2 => store16(&gemm_q6_kx16::<2>(x0, x1, [ar_(0), ar_(1)]), out, ostride, i0, j0, valid),
                _ => store16(&gemm_q6_kx16::<1>(x0, x1, [ar_(0)]), out, ostride, i0, j0, valid),
            }
            gi += 2;
        }
        if gi < ngroups {
            let xg = &x[gi * nb..][..nb];
            let j0 = gi * GROUP;
            let valid = (nrows - j0).min(GROUP);
            for t in 0..g {
                store_lanes(&gemm_q6_kx8::<1>(xg, [ar_(t)]), out, ostride, i0 + t, j0, valid);
            }
        }
        i0 += g;
    }
}

/// # Safety
/// `out` is valid for every element written (see `PackedFn`).
unsafe fn z_q6_k(
    p: &[u8],
    nb: usize,
    nrows: usize,
    a: &[u8],
    ar: usize,
    out: *mut f32,
    ostride: usize,
) {
    // SAFETY: installed only into the AVX-512 VNNI table after checking AVX512DQ;
    // the caller vouches for `out`.
    unsafe { drive_q6_kx16(p, nb, nrows, a, ar, out, ostride) }
}

/// Installs the 512-bit packed Q6_K tile (`OWL_NO_ZMM` keeps the 256-bit one).
pub(super) fn install(k: &mut Kernels) {
    if std::env::var_os("OWL_NO_ZMM").is_some() || !is_x86_feature_detected!("avx512dq") {
        return;
    }
    k.set_packed(GgmlType::Q6_K, z_q6_k);
}
