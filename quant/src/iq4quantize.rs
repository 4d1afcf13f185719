//! GGML's IQ4_NL / IQ4_XS quantizer (`quantize_row_iq4_nl_impl` as
//! `quantize_iq4_nl` / `quantize_iq4_xs` call it without an importance matrix:
//! weights `x^2`, 7 trial scales either side of the first guess).

// Index loops mirror GGML's C line by line, which is what makes them checkable.
#![allow(clippy::needless_range_loop)]

use crate::{f32_to_f16, nearest_int, BlockIQ4NL, BlockIQ4XS, KVALUES_IQ4NL, QK_K};

const GROUP_MAX_EPS: f32 = 1e-15;
const NTRY: i32 = 7;

/// The index of the code book value nearest `x` (the lower one on ties),
/// GGML's `best_index_int8`.
#[inline(always)]
fn best_index(x: f32) -> u8 {
    let val = &KVALUES_IQ4NL;
    if x <= val[0] as f32 {
        return 0;
    }
    if x >= val[15] as f32 {
        return 15;
    }
    let (mut ml, mut mu) = (0usize, 15usize);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < val[mav] as f32 {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - (val[mu - 1] as f32) < val[mu] as f32 - x {
        (mu - 1) as u8
    } else {
        mu as u8
    }
}

/// The best scale of one 32-group (`l_out` gets its code book indices), or 0
/// for a group of zeros.
fn group_scale(xb: &[f32], l_out: &mut [u8]) -> f32 {
    let v0 = KVALUES_IQ4NL[0] as f32;
    let mut amax = 0f32;
    let mut max = 0f32;
    for &v in xb {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        return 0.0;
    }
    let sums = |id: f32, l_out: Option<&mut [u8]>| {
        let mut sumqx = 0f32;
        let mut sumq2 = 0f32;
        let mut l_out = l_out;
        for (j, &x) in xb.iter().enumerate() {
            let l = best_index(id * x);
            if let Some(lo) = l_out.as_deref_mut() {
                lo[j] = l;
            }
            let q = KVALUES_IQ4NL[l as usize] as f32;
            let w = x * x;
            sumqx += w * q * x;
            sumq2 += w * q * q;
        }
        (sumqx, sumq2)
    };
    let d = -max / v0;
    let (sumqx, sumq2) = sums(1.0 / d, Some(l_out));
    let mut d = sumqx / sumq2;
    let mut best = d * sumqx;
    for itry in -NTRY..=NTRY {
        let id = (itry + KVALUES_IQ4NL[0] as i32) as f32 / max;
        let (sumqx, sumq2) = sums(id, None);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    d
}

/// Packs 32 indices: element j in the low nibble of byte j, j + 16 in the high.
fn pack(l: &[u8], qs: &mut [u8]) {
    for j in 0..16 {
        qs[j] = l[j] | (l[16 + j] << 4);
    }
}

/// `quantize_iq4_nl` without an importance matrix.
pub(crate) fn quantize_iq4_nl(src: &[f32], dst: &mut [BlockIQ4NL]) {
    for (x, y) in src.chunks_exact(32).zip(dst.iter_mut()) {
        let mut l = [0u8; 32];
        let scale = group_scale(x, &mut l);
        y.d = f32_to_f16(scale);
        let id = if scale != 0.0 { 1.0 / scale } else { 0.0 };
        for (lj, &xj) in l.iter_mut().zip(x) {
            *lj = best_index(id * xj);
        }
        pack(&l, &mut y.qs);
    }
}

/// `quantize_iq4_xs` without an importance matrix.
pub(crate) fn quantize_iq4_xs(src: &[f32], dst: &mut [BlockIQ4XS]) {
    for (x, y) in src.chunks_exact(QK_K).zip(dst.iter_mut()) {
        let mut l = [0u8; QK_K];
        let mut scales = [0f32; QK_K / 32];
        let mut max_scale = 0f32;
        let mut amax_scale = 0f32;
        for ib in 0..QK_K / 32 {
            let r = 32 * ib..32 * ib + 32;
            scales[ib] = group_scale(&x[r.clone()], &mut l[r]);
            if scales[ib].abs() > amax_scale {
                amax_scale = scales[ib].abs();
                max_scale = scales[ib];
            }
        }
        let d = -max_scale / 32.0;
        y.d = f32_to_f16(d);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut scales_h = 0u16;
        y.scales_l = [0; QK_K / 64];
        for ib in 0..QK_K / 32 {
            let ls = nearest_int(id * scales[ib]).clamp(-32, 31);
            let dl = d * ls as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            for j in 32 * ib..32 * ib + 32 {
                l[j] = best_index(idl * x[j]);
            }
            let ls = (ls + 32) as u8;
            if ib % 2 == 0 {
                y.scales_l[ib / 2] = ls & 0xf;
            } else {
                y.scales_l[ib / 2] |= (ls & 0xf) << 4;
            }
            scales_h |= ((ls >> 4) as u16) << (2 * (ib % 8));
        }
        y.scales_h = scales_h.to_le_bytes();
        for (i, qs) in y.qs.chunks_exact_mut(16).enumerate() {
            pack(&l[32 * i..32 * i + 32], qs);
        }
    }
}
