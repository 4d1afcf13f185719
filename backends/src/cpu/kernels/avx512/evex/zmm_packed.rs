//! The packed Q4_K tile in 512-bit registers: two packed groups (16 weight
//! rows, one per lane) against up to four activation rows. Each lane runs
//! exactly the operations of the 256-bit `gemm_q4_kx8` (so of the one-row dot):
//! the same exact integers, the same two FMA chains, the same final subtraction.
//! An odd last group goes to the 256-bit kernel, which agrees bit for bit.

// Rows and lanes are indexed in step across several arrays.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::{gemm_q4_kx8, prep_packed_q8_k, store_lanes, Q4_AHEAD};
use crate::cpu::kernels::Kernels;
use crate::cpu::repack::{BlockQ4Kx8, GROUP};
use owl_quant::{BlockQ8K, GgmlType};

/// Two 16-byte runs side by side.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl")]
pub(super) unsafe fn join16(a: *const u8, b: *const u8) -> __m256i {
    _mm256_set_m128i(
        _mm_load_si128(b as *const __m128i),
        _mm_load_si128(a as *const __m128i),
    )
}

/// Two 32-byte runs side by side.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl")]
pub(super) unsafe fn join32(a: *const u8, b: *const u8) -> __m512i {
    let lo = _mm512_castsi256_si512(_mm256_load_si256(a as *const __m256i));
    _mm512_inserti64x4::<1>(lo, _mm256_load_si256(b as *const __m256i))
}

/// Groups `x0` (lanes 0..8) and `x1` (lanes 8..16) against R activation rows.
/// dpbusd sums a sub-block's 32 products per lane in i32, then one multiply by
/// the row's scale: the same exact integers the 256-bit kernel forms with
/// maddubs and madd.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
unsafe fn gemm_q4_kx16<const R: usize>(
    x0: &[BlockQ4Kx8],
    x1: &[BlockQ4Kx8],
    y: [&[BlockQ8K]; R],
    d: [&[f32]; R],
    sp: [&[i32]; R],
) -> [__m512; R] {
    let m4 = _mm512_set1_epi8(0x0F);
    let mut acc = [_mm512_setzero_ps(); R];
    let mut accm = [_mm512_setzero_ps(); R];
    for i in 0..x0.len() {
        let (a0, a1) = (x0.get_unchecked(i), x1.get_unchecked(i));
        // Two packed blocks ahead in each group's stream.
        let pf0 = (a0 as *const BlockQ4Kx8 as *const i8).wrapping_add(Q4_AHEAD);
        let pf1 = (a1 as *const BlockQ4Kx8 as *const i8).wrapping_add(Q4_AHEAD);
        let wd = _mm512_cvtph_ps(join16(
            a0.d.as_ptr() as *const u8,
            a1.d.as_ptr() as *const u8,
        ));
        let wm = _mm512_cvtph_ps(join16(
            a0.dmin.as_ptr() as *const u8,
            a1.dmin.as_ptr() as *const u8,
        ));
        let mut sd = [_mm512_setzero_ps(); R];
        let mut sm = [_mm512_setzero_ps(); R];
        for r in 0..R {
            let dd = _mm512_set1_ps(*d[r].get_unchecked(i));
            sd[r] = _mm512_mul_ps(wd, dd);
            sm[r] = _mm512_mul_ps(wm, dd);
        }
        for j in 0..4 {
            let mut slo = [_mm512_setzero_si512(); R];
            let mut shi = [_mm512_setzero_si512(); R];
            let (q0, q1) = (a0.qs[j].as_ptr(), a1.qs[j].as_ptr());
            for t in 0..5 {
                _mm_prefetch::<_MM_HINT_T0>(pf0.wrapping_add(320 * j + 64 * t));
                _mm_prefetch::<_MM_HINT_T0>(pf1.wrapping_add(320 * j + 64 * t));
            }
            for c in 0..8 {
                let q = join32(q0.add(32 * c), q1.add(32 * c));
                let lo = _mm512_and_si512(q, m4);
                let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(q), m4);
                for r in 0..R {
                    let yb = y[r].get_unchecked(i).qs.as_ptr().add(64 * j + 4 * c);
                    let ylo = _mm512_set1_epi32((yb as *const i32).read_unaligned());
                    let yhi = _mm512_set1_epi32((yb.add(32) as *const i32).read_unaligned());
                    // Exact i32 sums of a sub-block's 32 products per lane.
                    slo[r] = _mm512_dpbusd_epi32(slo[r], lo, ylo);
                    shi[r] = _mm512_dpbusd_epi32(shi[r], hi, yhi);
                }
            }
            let ext = |p0: &[u8; 16], p1: &[u8; 16]| {
                _mm512_cvtepu8_epi16(join16(p0.as_ptr(), p1.as_ptr()))
            };
            // Each row's scale pair (sc, sc) as one i32 sc.
            let sc_lo = _mm512_srli_epi32::<16>(ext(&a0.scales[2 * j], &a1.scales[2 * j]));
            let sc_hi = _mm512_srli_epi32::<16>(ext(&a0.scales[2 * j + 1], &a1.scales[2 * j + 1]));
            let mn = ext(&a0.mins[j], &a1.mins[j]);
            for r in 0..R {
                let p = _mm512_add_epi32(
                    _mm512_mullo_epi32(slo[r], sc_lo),
                    _mm512_mullo_epi32(shi[r], sc_hi),
                );
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), sd[r], acc[r]);
                let s = _mm512_set1_epi32(*sp[r].get_unchecked(4 * i + j));
                let m = _mm512_madd_epi16(mn, s);
                accm[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(m), sm[r], accm[r]);
            }
        }
    }
    let mut out = [_mm512_setzero_ps(); R];
    for r in 0..R {
        out[r] = _mm512_sub_ps(acc[r], accm[r]);
    }
    out
}

/// Stores both halves of each `v[t]`: group `j0` (full) and the next one
/// (`valid` of its rows).
#[inline(always)]
pub(super) unsafe fn store16(v: &[__m512], out: *mut f32, ostride: usize, i0: usize, j0: usize, valid: usize) {
    for (t, vt) in v.iter().enumerate() {
        let o = out.add((i0 + t) * ostride + j0);
        if valid == GROUP {
            _mm512_storeu_ps(o, *vt);
        } else {
            _mm256_storeu_ps(o, _mm512_castps512_ps256(*vt));
            let mut tmp = [0f32; GROUP];
            _mm256_storeu_ps(tmp.as_mut_ptr(), _mm512_extractf32x8_ps::<1>(*vt));
            std::ptr::copy_nonoverlapping(tmp.as_ptr(), o.add(GROUP), valid);
        }
    }
}

/// As the 256-bit `drive_q4_kx8`, two groups at a time.
///
/// # Safety
/// The CPU has the features above; `out` is valid for every element written.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
unsafe fn drive_q4_kx16(
    p: &[u8],
    nb: usize,
    nrows: usize,
    a: &[u8],
    ar: usize,
    out: *mut f32,
    ostride: usize,
) {
    let x: &[BlockQ4Kx8] = bytemuck::cast_slice(p);
    let na = a.len() / ar;
    // Scratch on the stack up to 64 blocks a row (K = 16384), as the 256-bit
    // driver keeps it: two allocations per call cost decode a measurable share.
    let mut stack_d = [0f32; 4 * 64];
    let mut stack_s = [0i32; 4 * 4 * 64];
    let (mut heap_d, mut heap_s) = (Vec::new(), Vec::new());
    let (dsc, ssc): (&mut [f32], &mut [i32]) = if nb <= 64 {
        (&mut stack_d[..4 * nb], &mut stack_s[..16 * nb])
    } else {
        heap_d.resize(4 * nb, 0f32);
        heap_s.resize(16 * nb, 0i32);
        (&mut heap_d, &mut heap_s)
    };
    let arow = |i: usize| -> &[BlockQ8K] { bytemuck::cast_slice(&a[i * ar..][..ar]) };
    let ngroups = nrows.div_ceil(GROUP);
    let mut i0 = 0;
    while i0 < na {
        let g = (na - i0).min(4);
        for t in 0..g {
            prep_packed_q8_k(
                arow(i0 + t),
                &mut dsc[t * nb..][..nb],
                &mut ssc[4 * t * nb..][..4 * nb],
            );
        }
        let (dsc, ssc) = (&*dsc, &*ssc);
        let dv = |t: usize| &dsc[t * nb..][..nb];
        let sv = |t: usize| &ssc[4 * t * nb..][..4 * nb];
        // Rows past the group repeat its last one (only the first g are used).
        let ar_ = |t: usize| arow(i0 + t.min(g - 1));
        let mut gi = 0;
        while gi + 2 <= ngroups {
            let (x0, x1) = (&x[gi * nb..][..nb], &x[(gi + 1) * nb..][..nb]);
            let j0 = gi * GROUP;
            let valid = (nrows - j0 - GROUP).min(GROUP);
            let (a4, d4, s4) = (
                [ar_(0), ar_(1), ar_(2), ar_(3)],
                [dv(0), dv(1), dv(2), dv(3)],
                [sv(0), sv(1), sv(2), sv(3)],
            );
            match g {
                4 => store16(
                    &gemm_q4_kx16::<4>(x0, x1, a4, d4, s4),
                    out,
                    ostride,
                    i0,
                    j0,
                    valid,
                ),
                3 => store16(
                    &gemm_q4_kx16::<3>(
                        x0,
                        x1,
                        [a4[0], a4[1], a4[2]],
                        [d4[0], d4[1], d4[2]],
                        [s4[0], s4[1], s4[2]],
                    ),
                    out,
                    ostride,
                    i0,
                    j0,
                    valid,
                ),
                2 => store16(
                    &gemm_q4_kx16::<2>(x0, x1, [a4[0], a4[1]], [d4[0], d4[1]], [s4[0], s4[1]]),
                    out,
                    ostride,
                    i0,
                    j0,
                    valid,
                ),
                _ => store16(
                    &gemm_q4_kx16::<1>(x0, x1, [a4[0]], [d4[0]], [s4[0]]),
                    out,
                    ostride,
                    i0,
                    j0,
                    valid,
                ),
            }
            gi += 2;
        }
        if gi < ngroups {
            let xg = &x[gi * nb..][..nb];
            let j0 = gi * GROUP;
            let valid = (nrows - j0).min(GROUP);
            for t in 0..g {
                let v = gemm_q4_kx8::<1>(xg, [ar_(t)], [dv(t)], [sv(t)]);
                store_lanes(&v, out, ostride, i0 + t, j0, valid);
            }
        }
        i0 += g;
    }
}

/// # Safety
/// `out` is valid for every element written (see `PackedFn`).
unsafe fn z_q4_k(
    p: &[u8],
    nb: usize,
    nrows: usize,
    a: &[u8],
    ar: usize,
    out: *mut f32,
    ostride: usize,
) {
    // Decode (one activation row) runs here too. It once lost to the 256-bit
    // kernel (tg64 4.8 / 6.7 t/s against 6.8 / 10.0 with OWL_NO_ZMM) while this
    // driver allocated its scratch per call and prefetched nothing; with both
    // fixed it wins on the 1.5B Qwen: tg16 medians 3.89 against 3.45 t/s through
    // `drive_q4_kx8` (2 threads, load ~19, alternating runs).
    // SAFETY: installed only into the AVX-512 VNNI table after checking AVX512DQ;
    // the caller vouches for `out`.
    unsafe { drive_q4_kx16(p, nb, nrows, a, ar, out, ostride) }
}

/// Installs the 512-bit packed tiles (`OWL_NO_ZMM` keeps the 256-bit ones).
pub(super) fn install(k: &mut Kernels) {
    if std::env::var_os("OWL_NO_ZMM").is_some() || !is_x86_feature_detected!("avx512dq") {
        return;
    }
    k.set_packed(GgmlType::Q4_K, z_q4_k);
}
