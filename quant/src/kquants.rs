//! The 256-element super-block formats: Q2_K .. Q6_K, Q8_K and IQ4_XS.
//! Dequantizers follow GGML's `dequantize_row_*`, dots `ggml_vec_dot_*_q8_K_generic`
//! (including their 8-lane `aux32`/`sums` accumulation order, which decides the
//! float rounding).

// Index loops mirror GGML's C line by line, which is what makes them checkable.
#![allow(clippy::needless_range_loop)]

use crate::{
    nearest_int, unpack_scales_mins_k4, unpack_scales_q3k, BlockIQ4XS, BlockQ2K, BlockQ3K,
    BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, GgmlBlock, GgmlType, QuantError, KVALUES_IQ4NL, QK_K,
};

/// `sums[l] += d * aux32[l]` then `sumf += sums[l]`: the tail of the Q3_K..Q6_K dots.
#[inline(always)]
fn accumulate8(sums: &mut [f32; 8], d: f32, aux32: &[i32; 8]) {
    for l in 0..8 {
        sums[l] += d * aux32[l] as f32;
    }
}

/// `aux32[l] += scale * q8[l] * a[l]` over 8 lanes, `n8` groups of 8 from `q8`/`a`.
#[inline(always)]
fn madd8(aux32: &mut [i32; 8], scale: i32, q8: &[i8], a: &[i8]) {
    for (q8c, ac) in q8.chunks_exact(8).zip(a.chunks_exact(8)) {
        for l in 0..8 {
            let p = q8c[l] as i16 * ac[l] as i16;
            aux32[l] += scale * p as i32;
        }
    }
}

impl GgmlBlock for BlockQ2K {
    const TYPE: GgmlType = GgmlType::Q2_K;
    const BLOCK_LEN: usize = QK_K;
    type Dot = BlockQ8K;

    fn quantize(src: &[f32], dst: &mut [Self]) -> Result<(), QuantError> {
        crate::kquantize::quantize_q2_k(src, dst);
        Ok(())
    }

    fn dequantize(blocks: &[Self], dst: &mut [f32]) {
        for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(QK_K)) {
            let d = b.d();
            let min = crate::f16_to_f32(b.dmin);
            let mut is = 0;
            let mut yi = 0;
            for n in 0..2 {
                let q = &b.qs[32 * n..32 * n + 32];
                for shift in [0u32, 2, 4, 6] {
                    for half in 0..2 {
                        let sc = b.scales[is];
                        is += 1;
                        let dl = d * (sc & 0xF) as f32;
                        let ml = min * (sc >> 4) as f32;
                        for l in 0..16 {
                            y[yi + l] = dl * ((q[16 * half + l] >> shift) & 3) as f32 - ml;
                        }
                        yi += 16;
                    }
                }
            }
        }
    }

    fn vec_dot_ref(w: &[Self], a: &[BlockQ8K]) -> f32 {
        let mut sumf = 0f32;
        for (x, y) in w.iter().zip(a) {
            let sc = &x.scales;
            let mut summs = 0i32;
            for j in 0..16 {
                summs += y.bsum(j) as i32 * (sc[j] >> 4) as i32;
            }
            let dall = y.d() * x.d();
            let dmin = y.d() * crate::f16_to_f32(x.dmin);
            let mut isum = 0i32;
            let mut is = 0;
            let mut q8 = &y.qs[..];
            for k in 0..2 {
                let q2 = &x.qs[32 * k..32 * k + 32];
                for shift in [0u32, 2, 4, 6] {
                    let d = (sc[is] & 0xF) as i32;
                    is += 1;
                    let mut isuml = 0i32;
                    for l in 0..16 {
                        isuml += q8[l] as i32 * ((q2[l] >> shift) & 3) as i32;
                    }
                    isum += d * isuml;
                    let d = (sc[is] & 0xF) as i32;
                    is += 1;
                    let mut isuml = 0i32;
                    for l in 16..32 {
                        isuml += q8[l] as i32 * ((q2[l] >> shift) & 3) as i32;
                    }
                    isum += d * isuml;
                    q8 = &q8[32..];
                }
            }
            sumf += dall * isum as f32 - dmin * summs as f32;
        }
        sumf
    }
}

/// Q3_K quants as signed values in -4..4, element order.
#[inline(always)]
fn q3k_values(x: &BlockQ3K) -> [i8; QK_K] {
    let mut a = [0i8; QK_K];
    let mut m = 1u8;
    let mut ai = 0;
    for half in 0..2 {
        let q3 = &x.qs[32 * half..32 * half + 32];
        for shift in [0u32, 2, 4, 6] {
            for l in 0..32 {
                let v = ((q3[l] >> shift) & 3) as i8;
                a[ai + l] = v - if x.hmask[l] & m != 0 { 0 } else { 4 };
            }
            ai += 32;
            m = m.wrapping_shl(1);
        }
    }
    a
}

impl GgmlBlock for BlockQ3K {
    const TYPE: GgmlType = GgmlType::Q3_K;
    const BLOCK_LEN: usize = QK_K;
    type Dot = BlockQ8K;

    fn quantize(src: &[f32], dst: &mut [Self]) -> Result<(), QuantError> {
        crate::kquantize::quantize_q3_k(src, dst);
        Ok(())
    }

    fn dequantize(blocks: &[Self], dst: &mut [f32]) {
        for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(QK_K)) {
            let d_all = b.d();
            let scales = unpack_scales_q3k(&b.scales);
            let a = q3k_values(b);
            for (j, (yc, ac)) in y.chunks_exact_mut(16).zip(a.chunks_exact(16)).enumerate() {
                let dl = d_all * scales[j] as f32;
                for l in 0..16 {
                    yc[l] = dl * ac[l] as f32;
                }
            }
        }
    }

    fn vec_dot_ref(w: &[Self], a: &[BlockQ8K]) -> f32 {
        let mut sums = [0f32; 8];
        for (x, y) in w.iter().zip(a) {
            let aux8 = q3k_values(x);
            let scales = unpack_scales_q3k(&x.scales);
            let mut aux32 = [0i32; 8];
            for j in 0..QK_K / 16 {
                let r = 16 * j..16 * j + 16;
                madd8(&mut aux32, scales[j] as i32, &y.qs[r.clone()], &aux8[r]);
            }
            let d = x.d() * y.d();
            accumulate8(&mut sums, d, &aux32);
        }
        sums.iter().fold(0f32, |s, v| s + v)
    }
}

impl GgmlBlock for BlockQ4K {
    const TYPE: GgmlType = GgmlType::Q4_K;
    const BLOCK_LEN: usize = QK_K;
    type Dot = BlockQ8K;

    fn quantize(src: &[f32], dst: &mut [Self]) -> Result<(), QuantError> {
        crate::kquantize::quantize_q4_k(src, dst);
        Ok(())
    }

    fn dequantize(blocks: &[Self], dst: &mut [f32]) {
        for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(QK_K)) {
            let d = b.d();
            let min = crate::f16_to_f32(b.dmin);
            let (sc, m) = unpack_scales_mins_k4(&b.scales);
            for (j, yc) in y.chunks_exact_mut(64).enumerate() {
                let q = &b.qs[32 * j..32 * j + 32];
                let d1 = d * sc[2 * j] as f32;
                let m1 = min * m[2 * j] as f32;
                let d2 = d * sc[2 * j + 1] as f32;
                let m2 = min * m[2 * j + 1] as f32;
                let (lo, hi) = yc.split_at_mut(32);
                for l in 0..32 {
                    lo[l] = d1 * (q[l] & 0xF) as f32 - m1;
                    hi[l] = d2 * (q[l] >> 4) as f32 - m2;
                }
            }
        }
    }

    fn vec_dot_ref(w: &[Self], a: &[BlockQ8K]) -> f32 {
        let mut sums = [0f32; 8];
        let mut sumf = 0f32;
        for (x, y) in w.iter().zip(a) {
            let mut aux8 = [0i8; QK_K];
            for j in 0..QK_K / 64 {
                let q4 = &x.qs[32 * j..32 * j + 32];
                for l in 0..32 {
                    aux8[64 * j + l] = (q4[l] & 0xF) as i8;
                    aux8[64 * j + 32 + l] = (q4[l] >> 4) as i8;
                }
            }
            k4_dot_tail(
                x.d(),
                crate::f16_to_f32(x.dmin),
                &x.scales,
                &aux8,
                y,
                &mut sums,
                &mut sumf,
            );
        }
        sums.iter().fold(sumf, |s, v| s + v)
    }
}

/// Shared tail of the Q4_K and Q5_K dots (GGML's utmp/scales/mins loop).
#[inline(always)]
fn k4_dot_tail(
    xd: f32,
    xdmin: f32,
    packed: &[u8; 12],
    aux8: &[i8; QK_K],
    y: &BlockQ8K,
    sums: &mut [f32; 8],
    sumf: &mut f32,
) {
    let (scales, mins) = unpack_scales_mins_k4(packed);
    let mut sumi = 0i32;
    for j in 0..QK_K / 16 {
        sumi += y.bsum(j) as i32 * mins[j / 2] as i32;
    }
    let mut aux32 = [0i32; 8];
    for j in 0..QK_K / 32 {
        let r = 32 * j..32 * j + 32;
        madd8(&mut aux32, scales[j] as i32, &y.qs[r.clone()], &aux8[r]);
    }
    let d = xd * y.d();
    accumulate8(sums, d, &aux32);
    let dmin = xdmin * y.d();
    *sumf -= dmin * sumi as f32;
}

impl GgmlBlock for BlockQ5K {
    const TYPE: GgmlType = GgmlType::Q5_K;
    const BLOCK_LEN: usize = QK_K;
    type Dot = BlockQ8K;

    fn quantize(src: &[f32], dst: &mut [Self]) -> Result<(), QuantError> {
        crate::kquantize::quantize_q5_k(src, dst);
        Ok(())
    }

    fn dequantize(blocks: &[Self], dst: &mut [f32]) {
        for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(QK_K)) {
            let d = b.d();
            let min = crate::f16_to_f32(b.dmin);
            let (sc, m) = unpack_scales_mins_k4(&b.scales);
            let mut u1 = 1u8;
            let mut u2 = 2u8;
            for (j, yc) in y.chunks_exact_mut(64).enumerate() {
                let ql = &b.qs[32 * j..32 * j + 32];
                let d1 = d * sc[2 * j] as f32;
                let m1 = min * m[2 * j] as f32;
                let d2 = d * sc[2 * j + 1] as f32;
                let m2 = min * m[2 * j + 1] as f32;
                let (lo, hi) = yc.split_at_mut(32);
                for l in 0..32 {
                    let h1 = if b.qh[l] & u1 != 0 { 16 } else { 0 };
                    let h2 = if b.qh[l] & u2 != 0 { 16 } else { 0 };
                    lo[l] = d1 * ((ql[l] & 0xF) + h1) as f32 - m1;
                    hi[l] = d2 * ((ql[l] >> 4) + h2) as f32 - m2;
                }
                u1 = u1.wrapping_shl(2);
                u2 = u2.wrapping_shl(2);
            }
        }
    }

    fn vec_dot_ref(w: &[Self], a: &[BlockQ8K]) -> f32 {
        let mut sums = [0f32; 8];
        let mut sumf = 0f32;
        for (x, y) in w.iter().zip(a) {
            let mut aux8 = [0i8; QK_K];
            let mut m = 1u8;
            for j in 0..QK_K / 64 {
                let q4 = &x.qs[32 * j..32 * j + 32];
                for l in 0..32 {
                    let h = if x.qh[l] & m != 0 { 16 } else { 0 };
                    aux8[64 * j + l] = (q4[l] & 0xF) as i8 + h;
                }
                m = m.wrapping_shl(1);
                for l in 0..32 {
                    let h = if x.qh[l] & m != 0 { 16 } else { 0 };
                    aux8[64 * j + 32 + l] = (q4[l] >> 4) as i8 + h;
                }
                m = m.wrapping_shl(1);
            }
            k4_dot_tail(
                x.d(),
                crate::f16_to_f32(x.dmin),
                &x.scales,
                &aux8,
                y,
                &mut sums,
                &mut sumf,
            );
        }
        sums.iter().fold(sumf, |s, v| s + v)
    }
}

/// Q6_K quants as signed values in -32..32, element order.
#[inline(always)]
fn q6k_values(x: &BlockQ6K) -> [i8; QK_K] {
    let mut a = [0i8; QK_K];
    for n in 0..2 {
        let ql = &x.ql[64 * n..64 * n + 64];
        let qh = &x.qh[32 * n..32 * n + 32];
        let a = &mut a[128 * n..128 * n + 128];
        for l in 0..32 {
            a[l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
            a[l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            a[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            a[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
        }
    }
    a
}

impl GgmlBlock for BlockQ6K {
    const TYPE: GgmlType = GgmlType::Q6_K;
    const BLOCK_LEN: usize = QK_K;
    type Dot = BlockQ8K;

    fn quantize(src: &[f32], dst: &mut [Self]) -> Result<(), QuantError> {
        crate::kquantize::quantize_q6_k(src, dst);
        Ok(())
    }

    fn dequantize(blocks: &[Self], dst: &mut [f32]) {
        for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(QK_K)) {
            let d = b.d();
            let a = q6k_values(b);
            for (j, (yc, ac)) in y.chunks_exact_mut(16).zip(a.chunks_exact(16)).enumerate() {
                let ds = d * b.scales[j] as f32;
                for l in 0..16 {
                    yc[l] = ds * ac[l] as f32;
                }
            }
        }
    }

    fn vec_dot_ref(w: &[Self], a: &[BlockQ8K]) -> f32 {
        let mut sums = [0f32; 8];
        for (x, y) in w.iter().zip(a) {
            let aux8 = q6k_values(x);
            let mut aux32 = [0i32; 8];
            for j in 0..QK_K / 16 {
                let r = 16 * j..16 * j + 16;
                madd8(&mut aux32, x.scales[j] as i32, &y.qs[r.clone()], &aux8[r]);
            }
            let d = x.d() * y.d();
            accumulate8(&mut sums, d, &aux32);
        }
        sums.iter().fold(0f32, |s, v| s + v)
    }
}

impl GgmlBlock for BlockQ8K {
    const TYPE: GgmlType = GgmlType::Q8_K;
    const BLOCK_LEN: usize = QK_K;
    type Dot = BlockQ8K;

    fn dequantize(blocks: &[Self], dst: &mut [f32]) {
        for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(QK_K)) {
            let d = b.d();
            for (yj, &q) in y.iter_mut().zip(b.qs.iter()) {
                *yj = d * q as f32;
            }
        }
    }

    /// `quantize_row_q8_K_ref`. An all-zero block gets d = 0 and zero quants and
    /// sums (GGML leaves its bsums unwritten there).
    fn quantize(src: &[f32], dst: &mut [Self]) -> Result<(), QuantError> {
        for (x, b) in src.chunks_exact(QK_K).zip(dst.iter_mut()) {
            let mut max = 0f32;
            let mut amax = 0f32;
            for &v in x {
                let ax = v.abs();
                if ax > amax {
                    amax = ax;
                    max = v;
                }
            }
            if amax == 0.0 {
                *b = bytemuck::Zeroable::zeroed();
                continue;
            }
            let iscale = -127.0 / max;
            for (q, &v) in b.qs.iter_mut().zip(x) {
                *q = nearest_int(iscale * v).min(127) as i8;
            }
            for j in 0..QK_K / 16 {
                let s: i32 = b.qs[16 * j..16 * j + 16].iter().map(|&q| q as i32).sum();
                b.bsums[j] = (s as i16).to_le_bytes();
            }
            b.d = (1.0 / iscale).to_le_bytes();
        }
        Ok(())
    }

    /// GGML has no Q8_K x Q8_K dot; this one is the plain integer dot, scaled.
    fn vec_dot_ref(w: &[Self], a: &[BlockQ8K]) -> f32 {
        let mut sumf = 0f32;
        for (x, y) in w.iter().zip(a) {
            let mut sumi = 0i32;
            for j in 0..QK_K {
                sumi += x.qs[j] as i32 * y.qs[j] as i32;
            }
            sumf += sumi as f32 * (x.d() * y.d());
        }
        sumf
    }
}

impl BlockIQ4XS {
    /// The 6-bit scale of sub-block `ib` (0..8), unbiased (-32..32).
    #[inline(always)]
    pub fn scale(&self, ib: usize) -> i32 {
        let h = u16::from_le_bytes(self.scales_h);
        let ls = ((self.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xf) as i32
            | ((((h >> (2 * ib)) & 3) as i32) << 4);
        ls - 32
    }
}

impl GgmlBlock for BlockIQ4XS {
    const TYPE: GgmlType = GgmlType::IQ4_XS;
    const BLOCK_LEN: usize = QK_K;
    type Dot = BlockQ8K;

    fn quantize(src: &[f32], dst: &mut [Self]) -> Result<(), QuantError> {
        crate::iq4quantize::quantize_iq4_xs(src, dst);
        Ok(())
    }

    fn dequantize(blocks: &[Self], dst: &mut [f32]) {
        for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(QK_K)) {
            let d = b.d();
            for (ib, yc) in y.chunks_exact_mut(32).enumerate() {
                let dl = d * b.scale(ib) as f32;
                let qs = &b.qs[16 * ib..16 * ib + 16];
                let (lo, hi) = yc.split_at_mut(16);
                for j in 0..16 {
                    lo[j] = dl * KVALUES_IQ4NL[(qs[j] & 0xf) as usize] as f32;
                    hi[j] = dl * KVALUES_IQ4NL[(qs[j] >> 4) as usize] as f32;
                }
            }
        }
    }

    fn vec_dot_ref(w: &[Self], a: &[BlockQ8K]) -> f32 {
        let mut sumf = 0f32;
        for (x, y) in w.iter().zip(a) {
            let d4d8 = x.d() * y.d();
            for ib in 0..QK_K / 32 {
                let dl = d4d8 * x.scale(ib) as f32;
                let qs = &x.qs[16 * ib..16 * ib + 16];
                let q8 = &y.qs[32 * ib..32 * ib + 32];
                let mut sumi1 = 0i32;
                let mut sumi2 = 0i32;
                for j in 0..16 {
                    sumi1 += q8[j] as i32 * KVALUES_IQ4NL[(qs[j] & 0xf) as usize] as i32;
                    sumi2 += q8[j + 16] as i32 * KVALUES_IQ4NL[(qs[j] >> 4) as usize] as i32;
                }
                sumf += dl * (sumi1 + sumi2) as f32;
            }
        }
        sumf
    }
}
