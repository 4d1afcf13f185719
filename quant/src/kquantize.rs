//! GGML's reference K-quant quantizers (`quantize_row_q{2,3,4,5,6}_K_ref` in
//! ggml-quants.c) and their scale searches (`make_qx_quants`, `make_q3_quants`,
//! `make_qkx2_quants`), bit-exact with GGML as llama-quantize runs them without
//! an importance matrix.
//!
//! These live in ggml-base, which llama.cpp compiles without `-march` flags, so
//! GCC has no FMA to contract `a*b + c` into: every product is rounded before it
//! is added. [`mad`] marks each place a fused build would differ (fusing them
//! changes 7 of the 608 Q6_K blocks of the synthetic model's output tensor).

// Index loops mirror GGML's C line by line, which is what makes them checkable.
#![allow(clippy::needless_range_loop)]

use crate::{
    f16_to_f32, f32_to_f16, nearest_int, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, QK_K,
};

/// `GROUP_MAX_EPS`: a group whose largest magnitude is below this is all zero.
const GROUP_MAX_EPS: f32 = 1e-15;

/// `a*b + c` as ggml-base computes it: the product rounded, then the sum.
#[inline(always)]
fn mad(a: f32, b: f32, c: f32) -> f32 {
    a * b + c
}

/// The value of largest magnitude (the first on ties) and that magnitude.
#[inline(always)]
fn signed_absmax(x: &[f32]) -> (f32, f32) {
    let mut max = 0f32;
    let mut amax = 0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    (max, amax)
}

/// `make_qx_quants(n, nmax, x, L, rmse_type = 1, qw = NULL)`: symmetric quants
/// in `0..2*nmax` (stored offset by `nmax`) with the scale that maximises
/// `sumlx^2 / suml2` over 19 trial scales, weights `x^2`.
fn make_qx_quants_rmse1(nmax: i32, x: &[f32], l_out: &mut [i8]) -> f32 {
    let (max, amax) = signed_absmax(x);
    if amax < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let nmaxf = nmax as f32;
    let mut iscale = -nmaxf / max;
    let mut sumlx = 0f32;
    let mut suml2 = 0f32;
    for (i, &xi) in x.iter().enumerate() {
        let l = nearest_int(iscale * xi).clamp(-nmax, nmax - 1);
        l_out[i] = (l + nmax) as i8;
        let w = xi * xi;
        let lf = l as f32;
        sumlx = mad(w * xi, lf, sumlx);
        suml2 = mad(w * lf, lf, suml2);
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -mad(0.1, is as f32, nmaxf) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &xi in x {
            let l = nearest_int(iscale * xi).clamp(-nmax, nmax - 1) as f32;
            let w = xi * xi;
            sumlx = mad(w * xi, l, sumlx);
            suml2 = mad(w * l, l, suml2);
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (i, &xi) in x.iter().enumerate() {
                let l = nearest_int(iscale * xi).clamp(-nmax, nmax - 1);
                l_out[i] = (nmax + l) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// `make_q3_quants(n, nmax, x, L, do_rmse = true)`: Q3_K's per-group search,
/// coordinate descent on each quant for up to 5 rounds.
fn make_q3_quants(nmax: i32, x: &[f32], l_out: &mut [i8]) -> f32 {
    let (max, amax) = signed_absmax(x);
    if amax < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let mut sumlx = 0f32;
    let mut suml2 = 0f32;
    for (i, &xi) in x.iter().enumerate() {
        let l = nearest_int(iscale * xi).clamp(-nmax, nmax - 1);
        l_out[i] = l as i8;
        let w = xi * xi;
        let lf = l as f32;
        sumlx = mad(w * xi, lf, sumlx);
        suml2 = mad(w * lf, lf, suml2);
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for (i, &xi) in x.iter().enumerate() {
            let w = xi * xi;
            let li = l_out[i] as f32;
            let mut slx = mad(-(w * xi), li, sumlx);
            if slx > 0.0 {
                let mut sl2 = mad(-(w * li), li, suml2);
                let new_l = nearest_int(xi * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != l_out[i] as i32 {
                    let nl = new_l as f32;
                    slx = mad(w * xi, nl, slx);
                    sl2 = mad(w * nl, nl, sl2);
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l_out[i] = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    for l in l_out.iter_mut() {
        *l += nmax as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// `make_qkx2_quants`: asymmetric quants in `0..=nmax` with a min, searching
/// `nstep + 1` trial scales for the least weighted error (absolute if `use_mad`).
/// Returns `(scale, -min)`.
#[allow(clippy::too_many_arguments)]
fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    laux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x = mad(w, x[i], sum_x);
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out[..n].fill(0);
        return (0.0, -min);
    }
    let nmaxf = nmax as f32;
    let mut iscale = nmaxf / (max - min);
    let mut scale = 1.0 / iscale;
    let err = |d: f32| if use_mad { d.abs() } else { d * d };
    let mut best_error = 0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l_out[i] = l as u8;
        let diff = mad(scale, l as f32, min) - x[i];
        best_error = mad(weights[i], err(diff), best_error);
    }
    if nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=nstep {
        iscale = (mad(rdelta, is as f32, rmin) + nmaxf) / (max - min);
        let mut sum_l = 0f32;
        let mut sum_l2 = 0f32;
        let mut sum_xl = 0f32;
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = l as u8;
            let w = weights[i];
            let lf = l as f32;
            let wl = w * lf;
            sum_l += wl;
            sum_l2 = mad(wl, lf, sum_l2);
            sum_xl = mad(wl, x[i], sum_xl);
        }
        let d = mad(sum_w, sum_l2, -(sum_l * sum_l));
        if d > 0.0 {
            let mut this_scale = mad(sum_w, sum_xl, -(sum_x * sum_l)) / d;
            let mut this_min = mad(sum_l2, sum_x, -(sum_l * sum_xl)) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for i in 0..n {
                let diff = mad(this_scale, laux[i] as f32, this_min) - x[i];
                cur_error = mad(weights[i], err(diff), cur_error);
            }
            if cur_error < best_error {
                l_out[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Packs 2-bit quants `l[0..256]` four to a byte, GGML's Q2_K/Q3_K `qs` order.
fn pack_2bit(l: &[u8; QK_K], qs: &mut [u8; QK_K / 4]) {
    for j in (0..QK_K).step_by(128) {
        for k in 0..32 {
            qs[j / 4 + k] =
                l[j + k] | (l[j + k + 32] << 2) | (l[j + k + 64] << 4) | (l[j + k + 96] << 6);
        }
    }
}

/// `quantize_row_q2_K_ref`.
pub(crate) fn quantize_q2_k(src: &[f32], dst: &mut [BlockQ2K]) {
    const Q4SCALE: f32 = 15.0;
    for (x, y) in src.chunks_exact(QK_K).zip(dst.iter_mut()) {
        let mut l = [0u8; QK_K];
        let mut laux = [0u8; 16];
        let mut weights = [0f32; 16];
        let mut mins = [0f32; QK_K / 16];
        let mut scales = [0f32; QK_K / 16];
        let mut max_scale = 0f32;
        let mut max_min = 0f32;
        for j in 0..QK_K / 16 {
            let xs = &x[16 * j..16 * j + 16];
            for k in 0..16 {
                weights[k] = xs[k].abs();
            }
            let (s, m) = make_qkx2_quants(
                3,
                xs,
                &weights,
                &mut l[16 * j..16 * j + 16],
                &mut laux,
                -0.5,
                0.1,
                15,
                true,
            );
            scales[j] = s;
            mins[j] = m;
            if s > max_scale {
                max_scale = s;
            }
            if m > max_min {
                max_min = m;
            }
        }
        if max_scale > 0.0 {
            let iscale = Q4SCALE / max_scale;
            for j in 0..QK_K / 16 {
                y.scales[j] = nearest_int(iscale * scales[j]) as u8;
            }
            y.d = f32_to_f16(max_scale / Q4SCALE);
        } else {
            y.scales = [0; QK_K / 16];
            y.d = f32_to_f16(0.0);
        }
        if max_min > 0.0 {
            let iscale = Q4SCALE / max_min;
            for j in 0..QK_K / 16 {
                let lm = nearest_int(iscale * mins[j]);
                y.scales[j] |= (lm << 4) as u8;
            }
            y.dmin = f32_to_f16(max_min / Q4SCALE);
        } else {
            y.dmin = f32_to_f16(0.0);
        }
        let dall = f16_to_f32(y.d);
        let dmin = f16_to_f32(y.dmin);
        for j in 0..QK_K / 16 {
            let d = dall * (y.scales[j] & 0xF) as f32;
            if d == 0.0 {
                continue;
            }
            let dm = dmin * (y.scales[j] >> 4) as f32;
            for k in 0..16 {
                let q = nearest_int((x[16 * j + k] + dm) / d).clamp(0, 3);
                l[16 * j + k] = q as u8;
            }
        }
        pack_2bit(&l, &mut y.qs);
    }
}

/// `quantize_row_q3_K_ref`.
pub(crate) fn quantize_q3_k(src: &[f32], dst: &mut [BlockQ3K]) {
    for (x, y) in src.chunks_exact(QK_K).zip(dst.iter_mut()) {
        let mut l = [0i8; QK_K];
        let mut scales = [0f32; QK_K / 16];
        let mut max_scale = 0f32;
        let mut amax = 0f32;
        for j in 0..QK_K / 16 {
            scales[j] = make_q3_quants(4, &x[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16]);
            let scale = scales[j].abs();
            if scale > amax {
                amax = scale;
                max_scale = scales[j];
            }
        }
        y.scales = [0; 12];
        if max_scale != 0.0 {
            let iscale = -32.0 / max_scale;
            for j in 0..QK_K / 16 {
                // GGML stores nearest_int into an int8_t before clamping.
                let q = (nearest_int(iscale * scales[j]) as i8).clamp(-32, 31) + 32;
                let q = q as u8;
                if j < 8 {
                    y.scales[j] = q & 0xF;
                } else {
                    y.scales[j - 8] |= (q & 0xF) << 4;
                }
                y.scales[j % 4 + 8] |= (q >> 4) << (2 * (j / 4));
            }
            y.d = f32_to_f16(1.0 / iscale);
        } else {
            y.d = f32_to_f16(0.0);
        }
        let dall = f16_to_f32(y.d);
        for j in 0..QK_K / 16 {
            let lo = if j < 8 {
                y.scales[j] & 0xF
            } else {
                y.scales[j - 8] >> 4
            };
            let sc = (lo | (((y.scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) as i32 - 32;
            let d = dall * sc as f32;
            if d == 0.0 {
                continue;
            }
            for k in 0..16 {
                let q = nearest_int(x[16 * j + k] / d).clamp(-4, 3);
                l[16 * j + k] = (q + 4) as i8;
            }
        }
        y.hmask = [0; QK_K / 8];
        let mut m = 0;
        let mut hm = 1u8;
        let mut lu = [0u8; QK_K];
        for j in 0..QK_K {
            let mut v = l[j] as u8;
            if v > 3 {
                y.hmask[m] |= hm;
                v -= 4;
            }
            lu[j] = v;
            m += 1;
            if m == QK_K / 8 {
                m = 0;
                hm = hm.wrapping_shl(1);
            }
        }
        pack_2bit(&lu, &mut y.qs);
    }
}

/// The Q4_K/Q5_K sub-block search: per 32-group `make_qkx2_quants` with weights
/// `rms + |x|`, then 6-bit scales and mins packed GGML's way. Returns the quants
/// requantized against the stored scales, in `0..=nmax`.
fn k4_scales(
    x: &[f32],
    nmax: i32,
    rmin: f32,
    nstep: i32,
    packed: &mut [u8; 12],
    d_out: &mut [u8; 2],
    dmin_out: &mut [u8; 2],
) -> [u8; QK_K] {
    let mut l = [0u8; QK_K];
    let mut laux = [0u8; 32];
    let mut weights = [0f32; 32];
    let mut mins = [0f32; QK_K / 32];
    let mut scales = [0f32; QK_K / 32];
    let mut max_scale = 0f32;
    let mut max_min = 0f32;
    for j in 0..QK_K / 32 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0f32;
        for &v in xs {
            sum_x2 = mad(v, v, sum_x2);
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for k in 0..32 {
            weights[k] = av_x + xs[k].abs();
        }
        let (s, m) = make_qkx2_quants(
            nmax,
            xs,
            &weights,
            &mut l[32 * j..32 * j + 32],
            &mut laux,
            rmin,
            0.1,
            nstep,
            false,
        );
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    *packed = [0; 12];
    for j in 0..QK_K / 32 {
        // GGML stores nearest_int into a uint8_t before taking the min with 63.
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            packed[j] = ls;
            packed[j + 4] = lm;
        } else {
            packed[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            packed[j - 4] |= (ls >> 4) << 6;
            packed[j] |= (lm >> 4) << 6;
        }
    }
    *d_out = f32_to_f16(max_scale / 63.0);
    *dmin_out = f32_to_f16(max_min / 63.0);
    let dall = f16_to_f32(*d_out);
    let dmin = f16_to_f32(*dmin_out);
    for j in 0..QK_K / 32 {
        let (sc, m) = crate::get_scale_min_k4(j, packed);
        let d = dall * sc as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin * m as f32;
        for k in 0..32 {
            l[32 * j + k] = nearest_int((x[32 * j + k] + dm) / d).clamp(0, nmax) as u8;
        }
    }
    l
}

/// `quantize_row_q4_K_ref`.
pub(crate) fn quantize_q4_k(src: &[f32], dst: &mut [BlockQ4K]) {
    for (x, y) in src.chunks_exact(QK_K).zip(dst.iter_mut()) {
        let l = k4_scales(x, 15, -1.0, 20, &mut y.scales, &mut y.d, &mut y.dmin);
        for (j, q) in y.qs.chunks_exact_mut(32).enumerate() {
            for k in 0..32 {
                q[k] = l[64 * j + k] | (l[64 * j + k + 32] << 4);
            }
        }
    }
}

/// `quantize_row_q5_K_ref`.
pub(crate) fn quantize_q5_k(src: &[f32], dst: &mut [BlockQ5K]) {
    for (x, y) in src.chunks_exact(QK_K).zip(dst.iter_mut()) {
        let l = k4_scales(x, 31, -0.5, 15, &mut y.scales, &mut y.d, &mut y.dmin);
        y.qh = [0; QK_K / 8];
        let mut m1 = 1u8;
        let mut m2 = 2u8;
        for (n, ql) in y.qs.chunks_exact_mut(32).enumerate() {
            for j in 0..32 {
                let mut l1 = l[64 * n + j];
                if l1 > 15 {
                    l1 -= 16;
                    y.qh[j] |= m1;
                }
                let mut l2 = l[64 * n + j + 32];
                if l2 > 15 {
                    l2 -= 16;
                    y.qh[j] |= m2;
                }
                ql[j] = l1 | (l2 << 4);
            }
            m1 = m1.wrapping_shl(2);
            m2 = m2.wrapping_shl(2);
        }
    }
}

/// `quantize_row_q6_K_ref`.
pub(crate) fn quantize_q6_k(src: &[f32], dst: &mut [BlockQ6K]) {
    for (x, y) in src.chunks_exact(QK_K).zip(dst.iter_mut()) {
        let mut l = [0i8; QK_K];
        let mut scales = [0f32; QK_K / 16];
        let mut max_scale = 0f32;
        let mut max_abs_scale = 0f32;
        for ib in 0..QK_K / 16 {
            let scale =
                make_qx_quants_rmse1(32, &x[16 * ib..16 * ib + 16], &mut l[16 * ib..16 * ib + 16]);
            scales[ib] = scale;
            if scale.abs() > max_abs_scale {
                max_abs_scale = scale.abs();
                max_scale = scale;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            *y = bytemuck::Zeroable::zeroed();
            continue;
        }
        let iscale = -128.0 / max_scale;
        y.d = f32_to_f16(1.0 / iscale);
        for ib in 0..QK_K / 16 {
            y.scales[ib] = nearest_int(iscale * scales[ib]).min(127) as i8;
        }
        let dall = f16_to_f32(y.d);
        for j in 0..QK_K / 16 {
            let d = dall * y.scales[j] as f32;
            if d == 0.0 {
                continue;
            }
            for k in 0..16 {
                let q = nearest_int(x[16 * j + k] / d).clamp(-32, 31);
                l[16 * j + k] = (q + 32) as i8;
            }
        }
        let l: [u8; QK_K] = bytemuck::cast(l);
        for half in 0..2 {
            let lj = &l[128 * half..128 * half + 128];
            let ql = &mut y.ql[64 * half..64 * half + 64];
            let qh = &mut y.qh[32 * half..32 * half + 32];
            for k in 0..32 {
                let q1 = lj[k] & 0xF;
                let q2 = lj[k + 32] & 0xF;
                let q3 = lj[k + 64] & 0xF;
                let q4 = lj[k + 96] & 0xF;
                ql[k] = q1 | (q3 << 4);
                ql[k + 32] = q2 | (q4 << 4);
                qh[k] = (lj[k] >> 4)
                    | ((lj[k + 32] >> 4) << 2)
                    | ((lj[k + 64] >> 4) << 4)
                    | ((lj[k + 96] >> 4) << 6);
            }
        }
    }
}
