//! F32, F16 and BF16: "blocks" of one element. Their dots accumulate in f64 as
//! GGML's `ggml_vec_dot_{f32,f16,bf16}` scalar paths do (`ggml_float` is double).

use crate::{f32_to_f16, BlockBF16, BlockF16, BlockF32, GgmlBlock, GgmlType, QuantError};

#[inline(always)]
fn bf16_to_f32(b: [u8; 2]) -> f32 {
    f32::from_bits((u16::from_le_bytes(b) as u32) << 16)
}

/// GGML's `ggml_compute_fp32_to_bf16`: round to nearest even, NaN forced quiet.
#[inline(always)]
pub fn f32_to_bf16(x: f32) -> [u8; 2] {
    let u = x.to_bits();
    let h = if (u & 0x7fff_ffff) > 0x7f80_0000 {
        (u >> 16) | 64
    } else {
        (u.wrapping_add(0x7fff + ((u >> 16) & 1))) >> 16
    };
    (h as u16).to_le_bytes()
}

impl GgmlBlock for BlockF32 {
    const TYPE: GgmlType = GgmlType::F32;
    const BLOCK_LEN: usize = 1;
    type Dot = BlockF32;

    fn dequantize(blocks: &[Self], dst: &mut [f32]) {
        for (b, y) in blocks.iter().zip(dst.iter_mut()) {
            *y = f32::from_le_bytes(b.v);
        }
    }

    fn quantize(src: &[f32], dst: &mut [Self]) -> Result<(), QuantError> {
        for (x, b) in src.iter().zip(dst.iter_mut()) {
            b.v = x.to_le_bytes();
        }
        Ok(())
    }

    fn vec_dot_ref(w: &[Self], a: &[Self]) -> f32 {
        let mut sum = 0f64;
        for (x, y) in w.iter().zip(a) {
            sum += (f32::from_le_bytes(x.v) * f32::from_le_bytes(y.v)) as f64;
        }
        sum as f32
    }
}

impl GgmlBlock for BlockF16 {
    const TYPE: GgmlType = GgmlType::F16;
    const BLOCK_LEN: usize = 1;
    type Dot = BlockF16;

    fn dequantize(blocks: &[Self], dst: &mut [f32]) {
        let n = blocks.len().min(dst.len());
        // half's slice conversion is vectorised (F16C) but wants aligned u16s.
        if let Ok(h) = bytemuck::try_cast_slice::<BlockF16, half::f16>(&blocks[..n]) {
            use half::slice::HalfFloatSliceExt;
            h.convert_to_f32_slice(&mut dst[..n]);
        } else {
            for (b, y) in blocks.iter().zip(dst.iter_mut()) {
                *y = crate::f16_to_f32(b.v);
            }
        }
    }

    fn quantize(src: &[f32], dst: &mut [Self]) -> Result<(), QuantError> {
        for (x, b) in src.iter().zip(dst.iter_mut()) {
            b.v = f32_to_f16(*x);
        }
        Ok(())
    }

    fn vec_dot_ref(w: &[Self], a: &[Self]) -> f32 {
        let mut sum = 0f64;
        for (x, y) in w.iter().zip(a) {
            sum += (crate::f16_to_f32(x.v) * crate::f16_to_f32(y.v)) as f64;
        }
        sum as f32
    }
}

impl GgmlBlock for BlockBF16 {
    const TYPE: GgmlType = GgmlType::BF16;
    const BLOCK_LEN: usize = 1;
    type Dot = BlockBF16;

    fn dequantize(blocks: &[Self], dst: &mut [f32]) {
        for (b, y) in blocks.iter().zip(dst.iter_mut()) {
            *y = bf16_to_f32(b.v);
        }
    }

    fn quantize(src: &[f32], dst: &mut [Self]) -> Result<(), QuantError> {
        for (x, b) in src.iter().zip(dst.iter_mut()) {
            b.v = f32_to_bf16(*x);
        }
        Ok(())
    }

    fn vec_dot_ref(w: &[Self], a: &[Self]) -> f32 {
        let mut sum = 0f64;
        for (x, y) in w.iter().zip(a) {
            sum += (bf16_to_f32(x.v) * bf16_to_f32(y.v)) as f64;
        }
        sum as f32
    }
}
