//! GGML block formats: one `#[repr(C)]` struct per block type with GGML's exact
//! byte layout, dequantization for every type, GGML's reference round-to-nearest
//! quantization where it has one, and a scalar reference dot product per weight
//! type against the activation type GGML pairs it with (`vec_dot_type`).
//!
//! The reference dots reproduce ggml-cpu `quants.c` `*_generic` arithmetic
//! operation for operation: they are the truth every SIMD and GPU kernel is
//! tested against.
//!
//! Every block struct has alignment 1 (f16/f32 fields are stored as little-endian
//! byte arrays), so any `&[u8]` of the right length (a memory-mapped tensor, a
//! `Vec<u8>`) can be viewed as blocks without copying or alignment checks.

#[macro_use]
mod macros;
mod blocks;
mod float;
mod iq4quantize;
mod kquantize;
mod kquants;
mod legacy;

pub use blocks::*;

use thiserror::Error;

/// Elements per K-quant super-block.
pub const QK_K: usize = 256;

/// A GGML tensor element type. The discriminants are GGML's numeric ids (as
/// stored in GGUF tensor infos).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
#[repr(u32)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    IQ4_NL = 20,
    IQ4_XS = 23,
    BF16 = 30,
}

impl GgmlType {
    /// Every supported type, in id order.
    pub const ALL: [GgmlType; 17] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q8_K,
        GgmlType::IQ4_NL,
        GgmlType::IQ4_XS,
        GgmlType::BF16,
    ];

    /// The type with GGML id `id`, or `None` for ids this crate does not support.
    pub fn from_id(id: u32) -> Option<Self> {
        Self::ALL.iter().copied().find(|t| t.id() == id)
    }

    /// GGML's numeric id.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// GGML's name for the type (`"Q4_K"`, `"BF16"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q8_1 => "Q8_1",
            GgmlType::Q2_K => "Q2_K",
            GgmlType::Q3_K => "Q3_K",
            GgmlType::Q4_K => "Q4_K",
            GgmlType::Q5_K => "Q5_K",
            GgmlType::Q6_K => "Q6_K",
            GgmlType::Q8_K => "Q8_K",
            GgmlType::IQ4_NL => "IQ4_NL",
            GgmlType::IQ4_XS => "IQ4_XS",
            GgmlType::BF16 => "BF16",
        }
    }

    /// Elements per block (1 for the float types).
    pub fn block_len(self) -> usize {
        with_block!(self, B => B::BLOCK_LEN)
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        with_block!(self, B => B::BLOCK_BYTES)
    }

    /// Bytes of a row of `n` elements; `None` if `n` is not a multiple of
    /// [`block_len`](Self::block_len) (or the size overflows).
    pub fn row_bytes(self, n: usize) -> Option<usize> {
        let bl = self.block_len();
        if !n.is_multiple_of(bl) {
            return None;
        }
        (n / bl).checked_mul(self.block_bytes())
    }

    /// The activation type GGML quantizes the other operand to when it dots a
    /// row of this weight type (ggml-cpu `type_traits_cpu[..].vec_dot_type`).
    pub fn vec_dot_type(self) -> GgmlType {
        with_block!(self, B => <B as GgmlBlock>::Dot::TYPE)
    }

    /// Whether [`quantize`] supports this type.
    pub fn can_quantize(self) -> bool {
        matches!(
            self,
            GgmlType::F32
                | GgmlType::F16
                | GgmlType::BF16
                | GgmlType::Q4_0
                | GgmlType::Q4_1
                | GgmlType::Q5_0
                | GgmlType::Q5_1
                | GgmlType::Q8_0
                | GgmlType::Q8_1
                | GgmlType::Q2_K
                | GgmlType::Q3_K
                | GgmlType::Q4_K
                | GgmlType::Q5_K
                | GgmlType::Q6_K
                | GgmlType::Q8_K
                | GgmlType::IQ4_NL
                | GgmlType::IQ4_XS
        )
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors of the quantization functions. Bad lengths are reported, never panicked on.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QuantError {
    #[error("quantization to {ty} is not supported (only dequantization)")]
    UnsupportedQuantize { ty: GgmlType },
    #[error("{ty} {what}: expected {expected}, got {got}")]
    LengthMismatch {
        ty: GgmlType,
        /// Which buffer had the wrong length, and in what unit.
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{n} elements is not a multiple of the {ty} block length {block_len}")]
    NotBlockMultiple {
        ty: GgmlType,
        n: usize,
        block_len: usize,
    },
}

/// One GGML block format. `Self` is the `#[repr(C)]` block struct.
pub trait GgmlBlock: bytemuck::Pod + Send + Sync + 'static {
    /// The GGML type this block belongs to.
    const TYPE: GgmlType;
    /// Elements per block.
    const BLOCK_LEN: usize;
    /// Bytes per block (GGML's `type_size`).
    const BLOCK_BYTES: usize = std::mem::size_of::<Self>();
    /// The activation block type GGML pairs with this weight type.
    type Dot: GgmlBlock;

    /// Dequantizes `blocks` into `dst`; `dst.len()` must be `blocks.len() * BLOCK_LEN`
    /// (checked by the public wrappers; a shorter `dst` is filled only partly).
    fn dequantize(blocks: &[Self], dst: &mut [f32]);

    /// GGML's reference quantization (`quantize_row_*_ref`); `src.len()` must be
    /// `dst.len() * BLOCK_LEN`.
    fn quantize(src: &[f32], dst: &mut [Self]) -> Result<(), QuantError> {
        let _ = (src, dst);
        Err(QuantError::UnsupportedQuantize { ty: Self::TYPE })
    }

    /// Scalar reference dot product of a weight row with an activation row of the
    /// same number of elements (ggml-cpu `ggml_vec_dot_*_generic`).
    fn vec_dot_ref(w: &[Self], a: &[Self::Dot]) -> f32;
}

/// Views `bytes` as blocks of type `B`; the length must be a whole number of blocks.
pub fn as_blocks<B: GgmlBlock>(bytes: &[u8]) -> Result<&[B], QuantError> {
    bytemuck::try_cast_slice(bytes).map_err(|_| QuantError::LengthMismatch {
        ty: B::TYPE,
        what: "bytes (not a whole number of blocks)",
        expected: bytes.len() / B::BLOCK_BYTES * B::BLOCK_BYTES,
        got: bytes.len(),
    })
}

/// Mutable twin of [`as_blocks`].
pub fn as_blocks_mut<B: GgmlBlock>(bytes: &mut [u8]) -> Result<&mut [B], QuantError> {
    let len = bytes.len();
    bytemuck::try_cast_slice_mut(bytes).map_err(|_| QuantError::LengthMismatch {
        ty: B::TYPE,
        what: "bytes (not a whole number of blocks)",
        expected: len / B::BLOCK_BYTES * B::BLOCK_BYTES,
        got: len,
    })
}

/// Bytes of `n` elements of `ty`, or the error saying why there is no such row.
fn checked_row_bytes(ty: GgmlType, n: usize) -> Result<usize, QuantError> {
    ty.row_bytes(n).ok_or(QuantError::NotBlockMultiple {
        ty,
        n,
        block_len: ty.block_len(),
    })
}

fn check_len(
    ty: GgmlType,
    what: &'static str,
    expected: usize,
    got: usize,
) -> Result<(), QuantError> {
    if expected == got {
        Ok(())
    } else {
        Err(QuantError::LengthMismatch {
            ty,
            what,
            expected,
            got,
        })
    }
}

/// Dequantizes `dst.len()` elements of type `ty` from `src`, which must be exactly
/// `ty.row_bytes(dst.len())` bytes.
pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    let need = checked_row_bytes(ty, dst.len())?;
    check_len(ty, "source bytes", need, src.len())?;
    with_block!(ty, B => B::dequantize(bytemuck::cast_slice::<u8, B>(src), dst));
    Ok(())
}

/// Quantizes `src` to type `ty` into `dst`, which must be exactly
/// `ty.row_bytes(src.len())` bytes. Uses GGML's reference (round-to-nearest)
/// quantizers; see [`GgmlType::can_quantize`].
pub fn quantize(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    if !ty.can_quantize() {
        return Err(QuantError::UnsupportedQuantize { ty });
    }
    let need = checked_row_bytes(ty, src.len())?;
    check_len(ty, "destination bytes", need, dst.len())?;
    with_block!(ty, B => B::quantize(src, bytemuck::cast_slice_mut::<u8, B>(dst)))
}

/// Quantizes a matmul activation row as GGML's x86 CPU backend does
/// (`quantize_row_q8_0` / `quantize_row_q8_1` in ggml-cpu/arch/x86/quants.c),
/// which differs from the reference `quantize` (ggml's `_ref`, used for
/// weights) for Q8_0 and Q8_1: the multiplier is 127/amax rather than 1/d and
/// values round half to even rather than away from zero, so a value on a
/// rounding boundary can land one quant apart. Every other type is `quantize`.
pub fn quantize_act(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    match ty {
        GgmlType::Q8_0 | GgmlType::Q8_1 => {
            let need = checked_row_bytes(ty, src.len())?;
            check_len(ty, "destination bytes", need, dst.len())?;
            let bb = ty.block_bytes();
            for (x, b) in src.chunks_exact(32).zip(dst.chunks_exact_mut(bb)) {
                let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
                let d = amax / 127.0;
                let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
                b[..2].copy_from_slice(&f32_to_f16(d));
                let qs = &mut b[bb - 32..];
                let mut sum = 0i32;
                for (q, &v) in qs.iter_mut().zip(x) {
                    let i = (v * id).round_ties_even() as i8;
                    sum += i as i32;
                    *q = i as u8;
                }
                if ty == GgmlType::Q8_1 {
                    b[2..4].copy_from_slice(&f32_to_f16(d * sum as f32));
                }
            }
            Ok(())
        }
        _ => quantize(ty, src, dst),
    }
}

/// Scalar reference dot product of `n` elements: `w` holds them as `ty`, `a` as
/// `ty.vec_dot_type()`.
pub fn vec_dot_ref(ty: GgmlType, w: &[u8], a: &[u8], n: usize) -> Result<f32, QuantError> {
    let aty = ty.vec_dot_type();
    let need_w = checked_row_bytes(ty, n)?;
    let need_a = checked_row_bytes(aty, n)?;
    check_len(ty, "weight row bytes", need_w, w.len())?;
    check_len(aty, "activation row bytes", need_a, a.len())?;
    Ok(with_block!(ty, B => B::vec_dot_ref(
        bytemuck::cast_slice::<u8, B>(w),
        bytemuck::cast_slice::<u8, <B as GgmlBlock>::Dot>(a),
    )))
}

/// GGML's `GGML_FP16_TO_FP32` on little-endian bytes (exact).
#[inline(always)]
pub fn f16_to_f32(b: [u8; 2]) -> f32 {
    half::f16::from_bits(u16::from_le_bytes(b)).to_f32()
}

/// GGML's `GGML_FP32_TO_FP16` (round to nearest even) as little-endian bytes.
#[inline(always)]
pub fn f32_to_f16(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_bits().to_le_bytes()
}

/// GGML's `nearest_int`: round half to even via the 1.5*2^23 trick (valid for
/// |x| <= 4194303, which every caller guarantees).
#[inline(always)]
pub fn nearest_int(fval: f32) -> i32 {
    let val = fval + 12582912.0;
    (val.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}
