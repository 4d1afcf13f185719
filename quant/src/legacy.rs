//! The 32-element formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1 and IQ4_NL.
//! Quantizers are GGML's `quantize_row_*_ref`, dots `ggml_vec_dot_*_generic`.

use crate::{
    f16_to_f32, f32_to_f16, BlockIQ4NL, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0,
    BlockQ8_1, GgmlBlock, GgmlType, QuantError, KVALUES_IQ4NL, QK32,
};

/// The value of largest magnitude (first one on ties), GGML's `amax`/`max` loop.
#[inline(always)]
fn signed_absmax(x: &[f32]) -> f32 {
    let mut amax = 0f32;
    let mut max = 0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

#[inline(always)]
fn min_max(x: &[f32]) -> (f32, f32) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

#[inline(always)]
fn recip_or_zero(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

impl GgmlBlock for BlockQ4_0 {
    const TYPE: GgmlType = GgmlType::Q4_0;
    const BLOCK_LEN: usize = QK32;
    type Dot = BlockQ8_0;

    fn dequantize(blocks: &[Self], dst: &mut [f32]) {
        for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(QK32)) {
            let d = b.d();
            let (lo, hi) = y.split_at_mut(16);
            for j in 0..16 {
                lo[j] = ((b.qs[j] & 0x0F) as i32 - 8) as f32 * d;
                hi[j] = ((b.qs[j] >> 4) as i32 - 8) as f32 * d;
            }
        }
    }

    fn quantize(src: &[f32], dst: &mut [Self]) -> Result<(), QuantError> {
        for (x, b) in src.chunks_exact(QK32).zip(dst.iter_mut()) {
            let max = signed_absmax(x);
            let d = max / -8.0;
            let id = recip_or_zero(d);
            b.d = f32_to_f16(d);
            for j in 0..16 {
                let x0 = x[j] * id;
                let x1 = x[16 + j] * id;
                let xi0 = ((x0 + 8.5) as i8).min(15) as u8;
                let xi1 = ((x1 + 8.5) as i8).min(15) as u8;
                b.qs[j] = xi0 | (xi1 << 4);
            }
        }
        Ok(())
    }

    fn vec_dot_ref(w: &[Self], a: &[BlockQ8_0]) -> f32 {
        let mut sumf = 0f32;
        for (x, y) in w.iter().zip(a) {
            let mut sumi0 = 0i32;
            let mut sumi1 = 0i32;
            for j in 0..16 {
                let v0 = (x.qs[j] & 0x0F) as i32 - 8;
                let v1 = (x.qs[j] >> 4) as i32 - 8;
                sumi0 += v0 * y.qs[j] as i32;
                sumi1 += v1 * y.qs[j + 16] as i32;
            }
            let sumi = sumi0 + sumi1;
            sumf += sumi as f32 * x.d() * y.d();
        }
        sumf
    }
}

impl GgmlBlock for BlockQ4_1 {
    const TYPE: GgmlType = GgmlType::Q4_1;
    const BLOCK_LEN: usize = QK32;
    type Dot = BlockQ8_1;

    fn dequantize(blocks: &[Self], dst: &mut [f32]) {
        for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(QK32)) {
            let d = b.d();
            let m = f16_to_f32(b.m);
            let (lo, hi) = y.split_at_mut(16);
            for j in 0..16 {
                lo[j] = (b.qs[j] & 0x0F) as f32 * d + m;
                hi[j] = (b.qs[j] >> 4) as f32 * d + m;
            }
        }
    }

    fn quantize(src: &[f32], dst: &mut [Self]) -> Result<(), QuantError> {
        for (x, b) in src.chunks_exact(QK32).zip(dst.iter_mut()) {
            let (min, max) = min_max(x);
            let d = (max - min) / 15.0;
            let id = recip_or_zero(d);
            b.d = f32_to_f16(d);
            b.m = f32_to_f16(min);
            for j in 0..16 {
                let x0 = (x[j] - min) * id;
                let x1 = (x[16 + j] - min) * id;
                let xi0 = ((x0 + 0.5) as i8).min(15) as u8;
                let xi1 = ((x1 + 0.5) as i8).min(15) as u8;
                b.qs[j] = xi0 | (xi1 << 4);
            }
        }
        Ok(())
    }

    fn vec_dot_ref(w: &[Self], a: &[BlockQ8_1]) -> f32 {
        let mut sumf = 0f32;
        for (x, y) in w.iter().zip(a) {
            let mut sumi0 = 0i32;
            let mut sumi1 = 0i32;
            for j in 0..16 {
                let v0 = (x.qs[j] & 0x0F) as i32;
                let v1 = (x.qs[j] >> 4) as i32;
                sumi0 += v0 * y.qs[j] as i32;
                sumi1 += v1 * y.qs[j + 16] as i32;
            }
            let sumi = sumi0 + sumi1;
            sumf += (x.d() * y.d()) * sumi as f32 + f16_to_f32(x.m) * f16_to_f32(y.s);
        }
        sumf
    }
}

impl GgmlBlock for BlockQ5_0 {
    const TYPE: GgmlType = GgmlType::Q5_0;
    const BLOCK_LEN: usize = QK32;
    type Dot = BlockQ8_0;

    fn dequantize(blocks: &[Self], dst: &mut [f32]) {
        for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(QK32)) {
            let d = b.d();
            let qh = u32::from_le_bytes(b.qh);
            let (lo, hi) = y.split_at_mut(16);
            for j in 0..16 {
                let xh0 = (((qh >> j) << 4) & 0x10) as u8;
                let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
                lo[j] = (((b.qs[j] & 0x0F) | xh0) as i32 - 16) as f32 * d;
                hi[j] = (((b.qs[j] >> 4) | xh1) as i32 - 16) as f32 * d;
            }
        }
    }

    fn quantize(src: &[f32], dst: &mut [Self]) -> Result<(), QuantError> {
        for (x, b) in src.chunks_exact(QK32).zip(dst.iter_mut()) {
            let max = signed_absmax(x);
            let d = max / -16.0;
            let id = recip_or_zero(d);
            b.d = f32_to_f16(d);
            let mut qh = 0u32;
            for j in 0..16 {
                let x0 = x[j] * id;
                let x1 = x[16 + j] * id;
                let xi0 = ((x0 + 16.5) as i8).min(31) as u8;
                let xi1 = ((x1 + 16.5) as i8).min(31) as u8;
                b.qs[j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
                qh |= (((xi0 & 0x10) >> 4) as u32) << j;
                qh |= (((xi1 & 0x10) >> 4) as u32) << (j + 16);
            }
            b.qh = qh.to_le_bytes();
        }
        Ok(())
    }

    fn vec_dot_ref(w: &[Self], a: &[BlockQ8_0]) -> f32 {
        let mut sumf = 0f32;
        for (x, y) in w.iter().zip(a) {
            let qh = u32::from_le_bytes(x.qh);
            let mut sumi0 = 0i32;
            let mut sumi1 = 0i32;
            for j in 0..16 {
                let xh0 = (((qh >> j) & 1) << 4) as u8;
                let xh1 = ((qh & (1 << (j + 16))) >> (j + 12)) as u8;
                let x0 = ((x.qs[j] & 0x0F) | xh0) as i32 - 16;
                let x1 = ((x.qs[j] >> 4) | xh1) as i32 - 16;
                sumi0 += x0 * y.qs[j] as i32;
                sumi1 += x1 * y.qs[j + 16] as i32;
            }
            let sumi = sumi0 + sumi1;
            sumf += (x.d() * y.d()) * sumi as f32;
        }
        sumf
    }
}

impl GgmlBlock for BlockQ5_1 {
    const TYPE: GgmlType = GgmlType::Q5_1;
    const BLOCK_LEN: usize = QK32;
    type Dot = BlockQ8_1;

    fn dequantize(blocks: &[Self], dst: &mut [f32]) {
        for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(QK32)) {
            let d = b.d();
            let m = f16_to_f32(b.m);
            let qh = u32::from_le_bytes(b.qh);
            let (lo, hi) = y.split_at_mut(16);
            for j in 0..16 {
                let xh0 = (((qh >> j) << 4) & 0x10) as u8;
                let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
                lo[j] = ((b.qs[j] & 0x0F) | xh0) as f32 * d + m;
                hi[j] = ((b.qs[j] >> 4) | xh1) as f32 * d + m;
            }
        }
    }

    fn quantize(src: &[f32], dst: &mut [Self]) -> Result<(), QuantError> {
        for (x, b) in src.chunks_exact(QK32).zip(dst.iter_mut()) {
            let (min, max) = min_max(x);
            let d = (max - min) / 31.0;
            let id = recip_or_zero(d);
            b.d = f32_to_f16(d);
            b.m = f32_to_f16(min);
            let mut qh = 0u32;
            for j in 0..16 {
                let x0 = (x[j] - min) * id;
                let x1 = (x[16 + j] - min) * id;
                // GGML casts without a clamp; gguf-py clamps to 31. They agree on
                // every finite input (x0 + 0.5 < 32); the clamp keeps odd inputs sane.
                let xi0 = ((x0 + 0.5) as u8).min(31);
                let xi1 = ((x1 + 0.5) as u8).min(31);
                b.qs[j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
                qh |= (((xi0 & 0x10) >> 4) as u32) << j;
                qh |= (((xi1 & 0x10) >> 4) as u32) << (j + 16);
            }
            b.qh = qh.to_le_bytes();
        }
        Ok(())
    }

    fn vec_dot_ref(w: &[Self], a: &[BlockQ8_1]) -> f32 {
        let mut sumf = 0f32;
        for (x, y) in w.iter().zip(a) {
            let qh = u32::from_le_bytes(x.qh);
            let mut sumi0 = 0i32;
            let mut sumi1 = 0i32;
            for j in 0..16 {
                let xh0 = (((qh >> j) << 4) & 0x10) as u8;
                let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
                let x0 = ((x.qs[j] & 0x0F) | xh0) as i32;
                let x1 = ((x.qs[j] >> 4) | xh1) as i32;
                sumi0 += x0 * y.qs[j] as i32;
                sumi1 += x1 * y.qs[j + 16] as i32;
            }
            let sumi = sumi0 + sumi1;
            sumf += (x.d() * y.d()) * sumi as f32 + f16_to_f32(x.m) * f16_to_f32(y.s);
        }
        sumf
    }
}

impl GgmlBlock for BlockQ8_0 {
    const TYPE: GgmlType = GgmlType::Q8_0;
    const BLOCK_LEN: usize = QK32;
    type Dot = BlockQ8_0;

    fn dequantize(blocks: &[Self], dst: &mut [f32]) {
        for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(QK32)) {
            let d = b.d();
            for (yj, &q) in y.iter_mut().zip(b.qs.iter()) {
                *yj = q as f32 * d;
            }
        }
    }

    fn quantize(src: &[f32], dst: &mut [Self]) -> Result<(), QuantError> {
        for (x, b) in src.chunks_exact(QK32).zip(dst.iter_mut()) {
            let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let id = recip_or_zero(d);
            b.d = f32_to_f16(d);
            for (q, &v) in b.qs.iter_mut().zip(x) {
                *q = (v * id).round() as i8;
            }
        }
        Ok(())
    }

    fn vec_dot_ref(w: &[Self], a: &[BlockQ8_0]) -> f32 {
        let mut sumf = 0f32;
        for (x, y) in w.iter().zip(a) {
            let mut sumi = 0i32;
            for j in 0..QK32 {
                sumi += x.qs[j] as i32 * y.qs[j] as i32;
            }
            sumf += sumi as f32 * (x.d() * y.d());
        }
        sumf
    }
}

impl GgmlBlock for BlockQ8_1 {
    const TYPE: GgmlType = GgmlType::Q8_1;
    const BLOCK_LEN: usize = QK32;
    type Dot = BlockQ8_1;

    fn dequantize(blocks: &[Self], dst: &mut [f32]) {
        for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(QK32)) {
            let d = b.d();
            for (yj, &q) in y.iter_mut().zip(b.qs.iter()) {
                *yj = q as f32 * d;
            }
        }
    }

    fn quantize(src: &[f32], dst: &mut [Self]) -> Result<(), QuantError> {
        for (x, b) in src.chunks_exact(QK32).zip(dst.iter_mut()) {
            let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let id = recip_or_zero(d);
            b.d = f32_to_f16(d);
            let mut sum = 0i32;
            for j in 0..16 {
                let v0 = x[j] * id;
                let v1 = x[16 + j] * id;
                b.qs[j] = v0.round() as i8;
                b.qs[16 + j] = v1.round() as i8;
                sum += b.qs[j] as i32 + b.qs[16 + j] as i32;
            }
            b.s = f32_to_f16(sum as f32 * d);
        }
        Ok(())
    }

    /// GGML has no Q8_1 x Q8_1 dot; this one is the plain integer dot, scaled.
    fn vec_dot_ref(w: &[Self], a: &[BlockQ8_1]) -> f32 {
        let mut sumf = 0f32;
        for (x, y) in w.iter().zip(a) {
            let mut sumi = 0i32;
            for j in 0..QK32 {
                sumi += x.qs[j] as i32 * y.qs[j] as i32;
            }
            sumf += sumi as f32 * (x.d() * y.d());
        }
        sumf
    }
}

impl GgmlBlock for BlockIQ4NL {
    const TYPE: GgmlType = GgmlType::IQ4_NL;
    const BLOCK_LEN: usize = QK32;
    type Dot = BlockQ8_0;

    /// `quantize_iq4_nl` (what llama-quantize runs), not `quantize_row_iq4_nl_ref`,
    /// which skips the scale search.
    fn quantize(src: &[f32], dst: &mut [Self]) -> Result<(), QuantError> {
        crate::iq4quantize::quantize_iq4_nl(src, dst);
        Ok(())
    }

    fn dequantize(blocks: &[Self], dst: &mut [f32]) {
        for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(QK32)) {
            let d = b.d();
            let (lo, hi) = y.split_at_mut(16);
            for j in 0..16 {
                lo[j] = d * KVALUES_IQ4NL[(b.qs[j] & 0xF) as usize] as f32;
                hi[j] = d * KVALUES_IQ4NL[(b.qs[j] >> 4) as usize] as f32;
            }
        }
    }

    fn vec_dot_ref(w: &[Self], a: &[BlockQ8_0]) -> f32 {
        let mut sumf = 0f32;
        for (x, y) in w.iter().zip(a) {
            let d = y.d() * x.d();
            let mut sumi1 = 0i32;
            let mut sumi2 = 0i32;
            for j in 0..16 {
                sumi1 += y.qs[j] as i32 * KVALUES_IQ4NL[(x.qs[j] & 0xF) as usize] as i32;
                sumi2 += y.qs[j + 16] as i32 * KVALUES_IQ4NL[(x.qs[j] >> 4) as usize] as i32;
            }
            sumf += d * (sumi1 + sumi2) as f32;
        }
        sumf
    }
}
