//! Prefill tiles with FEAT_I8MM `smmla`: a 2x8 by 8x2 signed byte matrix
//! product into a 2x2 block of i32, so one instruction does two weight rows
//! against two activation rows for eight bytes each (four `sdot`s' worth).
//!
//! Only the integer sums change: per 32-element block the four calls give the
//! exact totals [w0·a0, w0·a1, w1·a0, w1·a1], a 4x4 transpose over four blocks
//! turns them into the per-pair vectors (lane k = block k) that the `sdot`
//! body forms with `vpaddq`, and the float steps are the shared ones
//! (`scale_add32`, `finish32`). So every element equals the one-row `sdot` dot
//! bit for bit, whatever the batch. The 32-element formats get these tiles; the
//! K-quants keep the `sdot` ones (the table is the dotprod table otherwise).

// Rows and pairs are indexed in step across several arrays.
#![allow(clippy::needless_range_loop)]

use std::arch::aarch64::*;

use super::{
    build, tile_iq4_nl, tile_q4_0, tile_q4_1, tile_q5_0, tile_q5_1, tile_q8_0, Tile,
};
use crate::cpu::kernels::neon::{finish32, f16x4, for_groups4, h16, scale_add32, Act32, Weight32};
use crate::cpu::kernels::Kernels;
use owl_quant::{BlockIQ4NL, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, GgmlType};

#[inline]
#[target_feature(enable = "neon,dotprod,i8mm")]
unsafe fn mmla(acc: int32x4_t, x: int8x16_t, y: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: register-only; only called on CPUs with i8mm (see `table`).
    unsafe {
        std::arch::asm!(
            "smmla {acc:v}.4s, {x:v}.16b, {y:v}.16b",
            acc = inout(vreg) acc,
            x = in(vreg) x,
            y = in(vreg) y,
            options(pure, nomem, nostack, preserves_flags)
        )
    };
    acc
}

/// Two rows' 16 bytes as `smmla` operands: bytes 0..8 of both, then 8..16 of both.
#[inline(always)]
unsafe fn pair(a: int8x16_t, b: int8x16_t) -> [int8x16_t; 2] {
    let (a, b) = (vreinterpretq_s64_s8(a), vreinterpretq_s64_s8(b));
    [vreinterpretq_s8_s64(vzip1q_s64(a, b)), vreinterpretq_s8_s64(vzip2q_s64(a, b))]
}

/// Four blocks of two weight rows against R (2 or 4) activation rows, pairs
/// (2p, 2p+1): the `group32` step with `smmla` for the integer sums.
#[inline(always)]
unsafe fn group2<W: Weight32, const R: usize>(
    x: [&[W; 4]; 2],
    y: [&[W::Act; 4]; R],
    acc: &mut [[float32x4_t; R]; 2],
    accm: &mut [[float32x4_t; R]; 2],
) {
    // m[p][k] = [w0·a2p, w0·a2p+1, w1·a2p, w1·a2p+1] of block k.
    let mut m = [[vdupq_n_s32(0); 4]; R];
    let mut wd = [0u64; 2];
    let mut wm = [0u64; 2];
    for k in 0..4 {
        let (u0, u1) = x[0][k].unpack();
        let (v0, v1) = x[1][k].unpack();
        let wv = [pair(u0, v0), pair(u1, v1)];
        for w in 0..2 {
            wd[w] |= h16(x[w][k].d()) << (16 * k);
            wm[w] |= h16(x[w][k].m()) << (16 * k);
        }
        for p in 0..R / 2 {
            let (a, b) = (y[2 * p][k].qs(), y[2 * p + 1][k].qs());
            let av = [pair(vld1q_s8(a), vld1q_s8(b)), pair(vld1q_s8(a.add(16)), vld1q_s8(b.add(16)))];
            let mut t = vdupq_n_s32(0);
            for h in 0..2 {
                t = mmla(t, wv[h][0], av[h][0]);
                t = mmla(t, wv[h][1], av[h][1]);
            }
            m[p][k] = t;
        }
    }
    let wd = wd.map(|v| f16x4(v));
    let wm = wm.map(|v| f16x4(v));
    for p in 0..R / 2 {
        let [m0, m1, m2, m3] = m[p];
        let t0 = vreinterpretq_s64_s32(vzip1q_s32(m0, m1));
        let t1 = vreinterpretq_s64_s32(vzip2q_s32(m0, m1));
        let t2 = vreinterpretq_s64_s32(vzip1q_s32(m2, m3));
        let t3 = vreinterpretq_s64_s32(vzip2q_s32(m2, m3));
        // s[w][t]: the four block totals of weight row w against activation row 2p + t.
        let s = [
            [vreinterpretq_s32_s64(vzip1q_s64(t0, t2)), vreinterpretq_s32_s64(vzip2q_s64(t0, t2))],
            [vreinterpretq_s32_s64(vzip1q_s64(t1, t3)), vreinterpretq_s32_s64(vzip2q_s64(t1, t3))],
        ];
        for w in 0..2 {
            for t in 0..2 {
                let r = 2 * p + t;
                scale_add32::<W>(s[w][t], wd[w], wm[w], y[r], &mut acc[w][r], &mut accm[w][r]);
            }
        }
    }
}

/// Two weight rows against R (2 or 4) activation rows: out[w][r] = x[w] · y[r].
#[target_feature(enable = "neon,dotprod,i8mm")]
unsafe fn tile2<W: Weight32, const R: usize>(x: [&[W]; 2], y: [&[W::Act]; R]) -> [[f32; R]; 2] {
    const { assert!(R == 2 || R == 4) };
    let mut acc = [[vdupq_n_f32(0.0); R]; 2];
    let mut accm = [[vdupq_n_f32(0.0); R]; 2];
    for_groups4(x, y, |xg, yg| group2::<W, R>(xg, yg, &mut acc, &mut accm));
    std::array::from_fn(|w| std::array::from_fn(|r| finish32::<W>(acc[w][r], accm[w][r])))
}

type Tile2<W, A, const R: usize> = unsafe fn([&[W]; 2], [&[A]; R]) -> [[f32; R]; 2];
/// The `sdot` tile per activation group size 1..=4.
type Tiles<W, A> = (Tile<W, A, 1>, Tile<W, A, 2>, Tile<W, A, 3>, Tile<W, A, 4>);

/// out[i * ostride + j] = w_j · a_i: activation rows four at a time; within a
/// group, weight rows in pairs through `smmla` for the even part of the group
/// (its odd last row and an odd last weight row through the `sdot` tile).
///
/// # Safety
/// The CPU has i8mm and dotprod; `out` is valid for every element written;
/// `wr` and `ar` are the byte lengths of rows of the same `n`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn drive<W: Weight32>(
    w: &[u8],
    wr: usize,
    a: &[u8],
    ar: usize,
    out: *mut f32,
    ostride: usize,
    one: Tiles<W, W::Act>,
    two: (Tile2<W, W::Act, 2>, Tile2<W, W::Act, 4>),
) {
    let (nw, na) = (w.len() / wr, a.len() / ar);
    let arow = |i: usize| -> &[W::Act] { bytemuck::cast_slice(&a[i * ar..][..ar]) };
    let wrow = |j: usize| -> &[W] { bytemuck::cast_slice(&w[j * wr..][..wr]) };
    let put = |i: usize, j: usize, v: f32| *out.add(i * ostride + j) = v;
    let mut i0 = 0;
    while i0 < na {
        let g = (na - i0).min(4);
        let r = |t: usize| arow(i0 + t);
        let mut j = 0;
        if g >= 2 {
            while j + 2 <= nw {
                let x = [wrow(j), wrow(j + 1)];
                if g == 4 {
                    let v = (two.1)(x, [r(0), r(1), r(2), r(3)]);
                    for (dw, vw) in v.iter().enumerate() {
                        for (t, e) in vw.iter().enumerate() {
                            put(i0 + t, j + dw, *e);
                        }
                    }
                } else {
                    let v = (two.0)(x, [r(0), r(1)]);
                    for (dw, vw) in v.iter().enumerate() {
                        for (t, e) in vw.iter().enumerate() {
                            put(i0 + t, j + dw, *e);
                        }
                    }
                    if g == 3 {
                        for dw in 0..2 {
                            put(i0 + 2, j + dw, (one.0)(x[dw], [r(2)])[0]);
                        }
                    }
                }
                j += 2;
            }
        }
        for j in j..nw {
            let x = wrow(j);
            let v: &[f32] = match g {
                4 => &(one.3)(x, [r(0), r(1), r(2), r(3)]),
                3 => &(one.2)(x, [r(0), r(1), r(2)]),
                2 => &(one.1)(x, [r(0), r(1)]),
                _ => &(one.0)(x, [r(0)]),
            };
            for (t, e) in v.iter().enumerate() {
                put(i0 + t, j, *e);
            }
        }
        i0 += g;
    }
}

macro_rules! mm_entry {
    ($name:ident, $one:ident, $W:ty) => {
        /// # Safety
        /// `out` is valid for out[i * ostride + j], i < rows of `a`, j < rows of `w`.
        unsafe fn $name(w: &[u8], wr: usize, a: &[u8], ar: usize, out: *mut f32, ostride: usize) {
            // SAFETY: the table holding this function exists only on CPUs with
            // dotprod and i8mm; `Kernels::dot_tile` checked the row lengths; the
            // caller vouches for `out`.
            unsafe {
                drive::<$W>(
                    w,
                    wr,
                    a,
                    ar,
                    out,
                    ostride,
                    ($one::<1>, $one::<2>, $one::<3>, $one::<4>),
                    (tile2::<$W, 2>, tile2::<$W, 4>),
                )
            }
        }
    };
}
mm_entry!(t_q8_0, tile_q8_0, BlockQ8_0);
mm_entry!(t_q4_0, tile_q4_0, BlockQ4_0);
mm_entry!(t_q4_1, tile_q4_1, BlockQ4_1);
mm_entry!(t_q5_0, tile_q5_0, BlockQ5_0);
mm_entry!(t_q5_1, tile_q5_1, BlockQ5_1);
mm_entry!(t_iq4_nl, tile_iq4_nl, BlockIQ4NL);

/// The dotprod table with the `smmla` tiles, if this CPU has both features.
pub(in crate::cpu::kernels) fn table() -> Option<Kernels> {
    let ok = std::arch::is_aarch64_feature_detected!("dotprod")
        && std::arch::is_aarch64_feature_detected!("i8mm");
    ok.then(|| {
        let mut k = build("i8mm");
        k.set_tile(GgmlType::Q8_0, t_q8_0);
        k.set_tile(GgmlType::Q4_0, t_q4_0);
        k.set_tile(GgmlType::Q4_1, t_q4_1);
        k.set_tile(GgmlType::Q5_0, t_q5_0);
        k.set_tile(GgmlType::Q5_1, t_q5_1);
        k.set_tile(GgmlType::IQ4_NL, t_iq4_nl);
        k
    })
}
