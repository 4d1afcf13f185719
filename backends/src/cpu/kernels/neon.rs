//! The aarch64 int8 kernels: one body, `neon_int8_kernels!("features")`,
//! instantiated per instruction set. The instantiating module defines the one
//! primitive the bodies use (with the same target features):
//!
//! - `dot16(acc, x, y) -> int32x4_t`: `acc` plus the sixteen products x*y of
//!   signed bytes, spread over the four i32 lanes in a way the bodies never
//!   rely on (they only ever use the sum of the lanes).
//!
//! `plain` does it with `vmull_s8` + `vpadalq_s16` (baseline ARMv8 NEON),
//! `dotprod` with one `sdot` (ARMv8.2 FEAT_DotProd, written as inline asm: the
//! intrinsic is unstable). The `i8mm` table is the dotprod one with `smmla`
//! tiles for the 32-element formats (`neon/dotprod/i8mm.rs`). Signed x signed bytes are native here, so there is
//! no sign trick: Q4_0/Q5_0/Q6_K weights are unpacked to their signed values.
//!
//! Numerics. Every integer sum is exact (an i8*i8 product fits an i16 and the
//! lanes hold i32), so only the float steps can differ from the reference, and
//! those are fixed per type, independent of the table and of how many rows
//! share a call:
//!
//! - 32-element formats: four blocks at a time, their exact i32 totals as
//!   one f32x4 (lane k = block 4m + k), FMA'd into a four-lane accumulator with
//!   the per-block scale products f32(w.d) * f32(a.d); a short last group is
//!   padded with zero blocks (which add exactly +0). Q4_1/Q5_1 add the
//!   f32(w.m) * f32(a.s) products in a second accumulator. The result is the
//!   lane sum (`vaddvq_f32`) of the first, plus that of the second.
//! - K-quants: per super-block the exact integer sum of scale * Σ q*y (and,
//!   for Q2_K/Q4_K/Q5_K, of min * bsum), then one scalar product with
//!   d * y.d (and dmin * y.d) added to a scalar accumulator (and a second one
//!   for the mins, subtracted at the end).
//!
//! So the tables give bit-identical results, and a tile (one weight row
//! against up to four activation rows, the weight blocks unpacked once) gives
//! exactly the one-row dot for every element: the one-row dot *is* the tile
//! with one row.

use std::arch::aarch64::*;
use std::arch::asm;

use owl_quant::{
    BlockIQ4NL, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8K, BlockQ8_0, BlockQ8_1,
    KVALUES_IQ4NL, QK_K,
};

use super::Kernels;

/// Four f16 bit patterns (lane k in bits 16k..16k+16) as f32, exactly.
/// `fcvtl` is base ARMv8 AdvSIMD; stable Rust has no f16 vector types, hence asm.
#[inline(always)]
pub(super) unsafe fn f16x4(bits: u64) -> float32x4_t {
    let h = vcreate_s16(bits);
    let out: float32x4_t;
    // SAFETY: a register-only conversion, available on every aarch64 CPU.
    unsafe {
        asm!(
            "fcvtl {o:v}.4s, {h:v}.4h",
            o = lateout(vreg) out,
            h = in(vreg) h,
            options(pure, nomem, nostack, preserves_flags)
        )
    };
    out
}

/// An f16 (little-endian bytes) as the low 16 bits of a u64, for [`f16x4`].
#[inline(always)]
pub(super) fn h16(b: [u8; 2]) -> u64 {
    u16::from_le_bytes(b) as u64
}

/// 16 bytes of nibbles as elements 0..16 (low nibbles) and 16..32 (high).
#[inline(always)]
pub(super) unsafe fn nibbles(p: *const u8) -> (uint8x16_t, uint8x16_t) {
    // SAFETY: the caller points `p` at 16 readable bytes.
    let v = unsafe { vld1q_u8(p) };
    (vandq_u8(v, vdupq_n_u8(0x0F)), vshrq_n_u8::<4>(v))
}

/// The 32 bits of `qh` as 32 bytes, 0xFF where the bit is set: elements 0..16
/// (bits 0..16) and 16..32 (GGML's `bytes_from_bits_32`).
#[inline(always)]
pub(super) unsafe fn bits32(qh: [u8; 4]) -> (uint8x16_t, uint8x16_t) {
    let bit = vreinterpretq_u8_u64(vdupq_n_u64(0x8040_2010_0804_0201));
    let lo = vcombine_u8(vdup_n_u8(qh[0]), vdup_n_u8(qh[1]));
    let hi = vcombine_u8(vdup_n_u8(qh[2]), vdup_n_u8(qh[3]));
    (vtstq_u8(lo, bit), vtstq_u8(hi, bit))
}

/// The activation side of the 32-element formats (Q8_0, and Q8_1 with its sum).
pub(super) trait Act32: bytemuck::Pod {
    fn qs(&self) -> *const i8;
    fn d(&self) -> [u8; 2];
    /// Q8_1's d * Σq as f16 (zero for Q8_0, which is never asked).
    fn s(&self) -> [u8; 2];
}

impl Act32 for BlockQ8_0 {
    #[inline(always)]
    fn qs(&self) -> *const i8 {
        self.qs.as_ptr()
    }
    #[inline(always)]
    fn d(&self) -> [u8; 2] {
        self.d
    }
    #[inline(always)]
    fn s(&self) -> [u8; 2] {
        [0, 0]
    }
}

impl Act32 for BlockQ8_1 {
    #[inline(always)]
    fn qs(&self) -> *const i8 {
        self.qs.as_ptr()
    }
    #[inline(always)]
    fn d(&self) -> [u8; 2] {
        self.d
    }
    #[inline(always)]
    fn s(&self) -> [u8; 2] {
        self.s
    }
}

/// A 32-element weight block: its values as two vectors of 16 signed bytes
/// (elements 0..16, 16..32; for the formats with a min, the unsigned quants,
/// all below 32), its f16 d and, where it has one, its f16 min m.
pub(super) trait Weight32: bytemuck::Pod {
    type Act: Act32;
    /// Whether the dot adds Σ m * a.s (Q4_1, Q5_1 against Q8_1).
    const MIN: bool;
    unsafe fn unpack(&self) -> (int8x16_t, int8x16_t);
    fn d(&self) -> [u8; 2];
    fn m(&self) -> [u8; 2] {
        [0, 0]
    }
}

impl Weight32 for BlockQ8_0 {
    type Act = BlockQ8_0;
    const MIN: bool = false;
    #[inline(always)]
    unsafe fn unpack(&self) -> (int8x16_t, int8x16_t) {
        // SAFETY: qs is 32 bytes.
        unsafe { (vld1q_s8(self.qs.as_ptr()), vld1q_s8(self.qs.as_ptr().add(16))) }
    }
    #[inline(always)]
    fn d(&self) -> [u8; 2] {
        self.d
    }
}

impl Weight32 for BlockQ4_0 {
    type Act = BlockQ8_0;
    const MIN: bool = false;
    #[inline(always)]
    unsafe fn unpack(&self) -> (int8x16_t, int8x16_t) {
        // SAFETY: qs is 16 bytes.
        let (lo, hi) = unsafe { nibbles(self.qs.as_ptr()) };
        let off = vdupq_n_s8(8);
        (vsubq_s8(vreinterpretq_s8_u8(lo), off), vsubq_s8(vreinterpretq_s8_u8(hi), off))
    }
    #[inline(always)]
    fn d(&self) -> [u8; 2] {
        self.d
    }
}

impl Weight32 for BlockQ4_1 {
    type Act = BlockQ8_1;
    const MIN: bool = true;
    #[inline(always)]
    unsafe fn unpack(&self) -> (int8x16_t, int8x16_t) {
        // SAFETY: qs is 16 bytes.
        let (lo, hi) = unsafe { nibbles(self.qs.as_ptr()) };
        (vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi))
    }
    #[inline(always)]
    fn d(&self) -> [u8; 2] {
        self.d
    }
    #[inline(always)]
    fn m(&self) -> [u8; 2] {
        self.m
    }
}

impl Weight32 for BlockQ5_0 {
    type Act = BlockQ8_0;
    const MIN: bool = false;
    #[inline(always)]
    unsafe fn unpack(&self) -> (int8x16_t, int8x16_t) {
        // SAFETY: qs is 16 bytes.
        let (lo, hi) = unsafe { nibbles(self.qs.as_ptr()) };
        let (blo, bhi) = bits32(self.qh);
        // q - 16 as a signed byte: the nibble | 0xF0 where the fifth bit is clear.
        let f0 = vdupq_n_u8(0xF0);
        (vreinterpretq_s8_u8(vorrq_u8(lo, vbicq_u8(f0, blo))), vreinterpretq_s8_u8(vorrq_u8(hi, vbicq_u8(f0, bhi))))
    }
    #[inline(always)]
    fn d(&self) -> [u8; 2] {
        self.d
    }
}

impl Weight32 for BlockQ5_1 {
    type Act = BlockQ8_1;
    const MIN: bool = true;
    #[inline(always)]
    unsafe fn unpack(&self) -> (int8x16_t, int8x16_t) {
        // SAFETY: qs is 16 bytes.
        let (lo, hi) = unsafe { nibbles(self.qs.as_ptr()) };
        let (blo, bhi) = bits32(self.qh);
        let b4 = vdupq_n_u8(0x10);
        (vreinterpretq_s8_u8(vorrq_u8(lo, vandq_u8(blo, b4))), vreinterpretq_s8_u8(vorrq_u8(hi, vandq_u8(bhi, b4))))
    }
    #[inline(always)]
    fn d(&self) -> [u8; 2] {
        self.d
    }
    #[inline(always)]
    fn m(&self) -> [u8; 2] {
        self.m
    }
}

impl Weight32 for BlockIQ4NL {
    type Act = BlockQ8_0;
    const MIN: bool = false;
    #[inline(always)]
    unsafe fn unpack(&self) -> (int8x16_t, int8x16_t) {
        // SAFETY: the code book and qs are 16 bytes each.
        let (table, (lo, hi)) = unsafe { (vld1q_s8(KVALUES_IQ4NL.as_ptr()), nibbles(self.qs.as_ptr())) };
        (vqtbl1q_s8(table, lo), vqtbl1q_s8(table, hi))
    }
    #[inline(always)]
    fn d(&self) -> [u8; 2] {
        self.d
    }
}

/// Runs `f` on every group of four blocks of the weight rows `x` and the
/// matching blocks of each activation row `y[r]`; a short last group is padded
/// with zero blocks, whose zero quants and zero scales add exactly +0.
///
/// # Safety
/// Every `x[w]` and `y[r]` has `x[0].len()` blocks.
#[inline(always)]
pub(super) unsafe fn for_groups4<W: bytemuck::Pod, A: bytemuck::Pod, const X: usize, const R: usize>(
    x: [&[W]; X],
    y: [&[A]; R],
    mut f: impl FnMut([&[W; 4]; X], [&[A; 4]; R]),
) {
    let nb = x[0].len();
    let full = nb / 4 * 4;
    let mut i = 0;
    while i < full {
        // SAFETY: i + 4 <= nb, the length of every row.
        let (xg, yg) = unsafe {
            (
                x.map(|xw| &*(xw.as_ptr().add(i) as *const [W; 4])),
                y.map(|yr| &*(yr.as_ptr().add(i) as *const [A; 4])),
            )
        };
        f(xg, yg);
        i += 4;
    }
    if full < nb {
        let t = nb - full;
        let mut xt = [[W::zeroed(); 4]; X];
        for (xt, xw) in xt.iter_mut().zip(x) {
            xt[..t].copy_from_slice(&xw[full..]);
        }
        let mut yt = [[A::zeroed(); 4]; R];
        for (yt, yr) in yt.iter_mut().zip(y) {
            yt[..t].copy_from_slice(&yr[full..]);
        }
        f(std::array::from_fn(|w| &xt[w]), std::array::from_fn(|r| &yt[r]));
    }
}

/// The float step for four blocks: `acc += f32(s) * (wd * f32(a.d))` lane by
/// lane (`s` the exact block totals), and `accm += wm * f32(a.s)` for the
/// formats with a min.
#[inline(always)]
pub(super) unsafe fn scale_add32<W: Weight32>(
    s: int32x4_t,
    wd: float32x4_t,
    wm: float32x4_t,
    y: &[W::Act; 4],
    acc: &mut float32x4_t,
    accm: &mut float32x4_t,
) {
    let (mut ad, mut asum) = (0u64, 0u64);
    for (k, b) in y.iter().enumerate() {
        ad |= h16(b.d()) << (16 * k);
        if W::MIN {
            asum |= h16(b.s()) << (16 * k);
        }
    }
    *acc = vfmaq_f32(*acc, vcvtq_f32_s32(s), vmulq_f32(wd, f16x4(ad)));
    if W::MIN {
        *accm = vfmaq_f32(*accm, wm, f16x4(asum));
    }
}

/// The dot from the accumulators of [`scale_add32`].
#[inline(always)]
pub(super) unsafe fn finish32<W: Weight32>(acc: float32x4_t, accm: float32x4_t) -> f32 {
    let mut v = vaddvq_f32(acc);
    if W::MIN {
        v += vaddvq_f32(accm);
    }
    v
}

// ---- Activation quantizers (baseline NEON; shared by every table). ----

/// The largest |x| of 32 floats. `vmaxnm` ignores a NaN as `f32::max` does.
#[inline(always)]
unsafe fn absmax32(x: *const f32) -> f32 {
    let mut m = vdupq_n_f32(0.0);
    for i in 0..8 {
        // SAFETY: the caller points `x` at 32 readable floats.
        m = vmaxnmq_f32(m, vabsq_f32(unsafe { vld1q_f32(x.add(4 * i)) }));
    }
    vmaxnmvq_f32(m)
}

/// 32 floats times `id` rounded half to even (`vcvtnq`, as the scalar
/// `round_ties_even`), clamped to at most `hi`, stored as bytes; returns the
/// eight i32x4 of quants (element order) for the sums.
#[inline(always)]
unsafe fn round32(x: *const f32, id: f32, hi: i32, out: *mut i8) -> [int32x4_t; 8] {
    let mut q = [vdupq_n_s32(0); 8];
    for (i, qi) in q.iter_mut().enumerate() {
        // SAFETY: the caller points `x` at 32 readable floats.
        let v = vmulq_n_f32(unsafe { vld1q_f32(x.add(4 * i)) }, id);
        *qi = vminq_s32(vcvtnq_s32_f32(v), vdupq_n_s32(hi));
    }
    for j in 0..2 {
        let a = vcombine_s16(vqmovn_s32(q[4 * j]), vqmovn_s32(q[4 * j + 1]));
        let b = vcombine_s16(vqmovn_s32(q[4 * j + 2]), vqmovn_s32(q[4 * j + 3]));
        // SAFETY: the caller points `out` at 32 writable bytes.
        unsafe { vst1q_s8(out.add(16 * j), vcombine_s8(vqmovn_s16(a), vqmovn_s16(b))) };
    }
    q
}

/// Sum of the quants in `q` (exact i32).
#[inline(always)]
unsafe fn qsum(q: &[int32x4_t]) -> i32 {
    let mut s = vdupq_n_s32(0);
    for v in q {
        s = vaddq_s32(s, *v);
    }
    vaddvq_s32(s)
}

/// `owl_quant::quantize_act` for Q8_0 and Q8_1: d = amax / 127, quants
/// round(x * (127 / amax)) half to even, Q8_1's s = f16(d * Σq).
fn quantize_q8_01(x: &[f32], out: &mut [u8], bb: usize) {
    for (xb, b) in x.chunks_exact(32).zip(out.chunks_exact_mut(bb)) {
        // SAFETY: xb holds 32 floats; b ends in its 32 quant bytes.
        let (amax, q) = unsafe {
            let amax = absmax32(xb.as_ptr());
            let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
            (amax, round32(xb.as_ptr(), id, 127, b[bb - 32..].as_mut_ptr() as *mut i8))
        };
        let d = amax / 127.0;
        b[..2].copy_from_slice(&owl_quant::f32_to_f16(d));
        if bb == std::mem::size_of::<BlockQ8_1>() {
            // SAFETY: NEON is baseline on aarch64.
            let sum = unsafe { qsum(&q) };
            b[2..4].copy_from_slice(&owl_quant::f32_to_f16(d * sum as f32));
        }
    }
}

pub(super) fn q_q8_0(x: &[f32], out: &mut [u8]) {
    quantize_q8_01(x, out, std::mem::size_of::<BlockQ8_0>())
}

pub(super) fn q_q8_1(x: &[f32], out: &mut [u8]) {
    quantize_q8_01(x, out, std::mem::size_of::<BlockQ8_1>())
}

/// `quantize_row_q8_K_ref`: iscale = -127 / (the first element of largest
/// magnitude), quants min(127, round(iscale * x)) half to even (GGML's
/// `nearest_int`), sums per 16, d = 1 / iscale; an all-zero block is all zero.
pub(super) fn q_q8_k(x: &[f32], out: &mut [u8]) {
    let out: &mut [BlockQ8K] = bytemuck::cast_slice_mut(out);
    for (xb, b) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        let mut amax = 0f32;
        for c in xb.chunks_exact(32) {
            // SAFETY: c holds 32 floats.
            amax = amax.max(unsafe { absmax32(c.as_ptr()) });
        }
        if amax == 0.0 {
            *b = bytemuck::Zeroable::zeroed();
            continue;
        }
        let max = *xb.iter().find(|v| v.abs() == amax).unwrap_or(&amax);
        let iscale = -127.0 / max;
        for (g, c) in xb.chunks_exact(32).enumerate() {
            // SAFETY: c holds 32 floats, qs[32g..32g+32] is in the block.
            let (s0, s1) = unsafe {
                let q = round32(c.as_ptr(), iscale, 127, b.qs.as_mut_ptr().add(32 * g));
                (qsum(&q[..4]), qsum(&q[4..]))
            };
            b.bsums[2 * g] = (s0 as i16).to_le_bytes();
            b.bsums[2 * g + 1] = (s1 as i16).to_le_bytes();
        }
        b.d = (1.0 / iscale).to_le_bytes();
    }
}

macro_rules! neon_int8_kernels {
    ($feat:literal) => {
        use std::arch::aarch64::*;

        use crate::cpu::kernels::neon::{f16x4, finish32, for_groups4, h16, nibbles, scale_add32, Act32, Weight32};
        use crate::cpu::kernels::Kernels;
        use owl_quant::{
            unpack_scales_mins_k4, unpack_scales_q3k, BlockIQ4NL, BlockIQ4XS, BlockQ2K, BlockQ3K,
            BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K,
            BlockQ8_0, BlockQ8_1, GgmlType, KVALUES_IQ4NL,
        };

        #[inline(always)]
        unsafe fn s8(v: uint8x16_t) -> int8x16_t {
            vreinterpretq_s8_u8(v)
        }

        /// Σ x*y over 32 bytes (two vectors each) as four i32 lanes.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn dot32(x0: int8x16_t, x1: int8x16_t, y: *const i8) -> int32x4_t {
            let p = dot16(vdupq_n_s32(0), x0, vld1q_s8(y));
            dot16(p, x1, vld1q_s8(y.add(16)))
        }

        // ---- The 32-element formats. ----

        /// Four consecutive weight blocks against R activation rows (the
        /// matching four blocks of each): the step of `tile32` the module doc
        /// describes.
        #[inline(always)]
        unsafe fn group32<W: Weight32, const R: usize>(
            x: &[W; 4],
            y: [&[W::Act; 4]; R],
            acc: &mut [float32x4_t; R],
            accm: &mut [float32x4_t; R],
        ) {
            let mut p = [[vdupq_n_s32(0); 4]; R];
            let (mut wd, mut wm) = (0u64, 0u64);
            for k in 0..4 {
                let (q0, q1) = x[k].unpack();
                wd |= h16(x[k].d()) << (16 * k);
                wm |= h16(x[k].m()) << (16 * k);
                for r in 0..R {
                    p[r][k] = dot32(q0, q1, y[r][k].qs());
                }
            }
            let (wd, wm) = (f16x4(wd), f16x4(wm));
            for r in 0..R {
                let s = vpaddq_s32(vpaddq_s32(p[r][0], p[r][1]), vpaddq_s32(p[r][2], p[r][3]));
                scale_add32::<W>(s, wd, wm, y[r], &mut acc[r], &mut accm[r]);
            }
        }

        /// One weight row of 32-element blocks against R activation rows, as the
        /// module doc describes. Every `y[r]` has `x.len()` blocks.
        #[inline(always)]
        unsafe fn tile32<W: Weight32, const R: usize>(x: &[W], y: [&[W::Act]; R]) -> [f32; R] {
            let mut acc = [vdupq_n_f32(0.0); R];
            let mut accm = [vdupq_n_f32(0.0); R];
            for_groups4([x], y, |[xg], yg| group32::<W, R>(xg, yg, &mut acc, &mut accm));
            std::array::from_fn(|r| finish32::<W>(acc[r], accm[r]))
        }

        #[target_feature(enable = $feat)]
        unsafe fn tile_q8_0<const R: usize>(x: &[BlockQ8_0], y: [&[BlockQ8_0]; R]) -> [f32; R] {
            tile32::<_, R>(x, y)
        }
        #[target_feature(enable = $feat)]
        unsafe fn tile_q4_0<const R: usize>(x: &[BlockQ4_0], y: [&[BlockQ8_0]; R]) -> [f32; R] {
            tile32::<_, R>(x, y)
        }
        #[target_feature(enable = $feat)]
        unsafe fn tile_q4_1<const R: usize>(x: &[BlockQ4_1], y: [&[BlockQ8_1]; R]) -> [f32; R] {
            tile32::<_, R>(x, y)
        }
        #[target_feature(enable = $feat)]
        unsafe fn tile_q5_0<const R: usize>(x: &[BlockQ5_0], y: [&[BlockQ8_0]; R]) -> [f32; R] {
            tile32::<_, R>(x, y)
        }
        #[target_feature(enable = $feat)]
        unsafe fn tile_q5_1<const R: usize>(x: &[BlockQ5_1], y: [&[BlockQ8_1]; R]) -> [f32; R] {
            tile32::<_, R>(x, y)
        }
        #[target_feature(enable = $feat)]
        unsafe fn tile_iq4_nl<const R: usize>(x: &[BlockIQ4NL], y: [&[BlockQ8_0]; R]) -> [f32; R] {
            tile32::<_, R>(x, y)
        }

        // ---- K-quants (256-element super-blocks against Q8_K). ----

        /// Σ mins[j] * (bsum[2j] + bsum[2j+1]) over the eight 32-element sub-blocks.
        #[inline(always)]
        unsafe fn min_sum8(mins: &[u8; 8], b: &BlockQ8K) -> i32 {
            let p = b.bsums.as_ptr() as *const u8;
            let bs0 = vreinterpretq_s16_u8(vld1q_u8(p));
            let bs1 = vreinterpretq_s16_u8(vld1q_u8(p.add(16)));
            let bs = vpaddq_s16(bs0, bs1);
            let m = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(mins.as_ptr())));
            let s = vmull_s16(vget_low_s16(bs), vget_low_s16(m));
            vaddvq_s32(vmlal_high_s16(s, bs, m))
        }

        #[target_feature(enable = $feat)]
        unsafe fn tile_q2_k<const R: usize>(x: &[BlockQ2K], y: [&[BlockQ8K]; R]) -> [f32; R] {
            let mut acc = [0f32; R];
            let mut accm = [0f32; R];
            let m3 = vdupq_n_u8(3);
            for (i, a) in x.iter().enumerate() {
                let mut isum = [vdupq_n_s32(0); R];
                let mut summ = [0i32; R];
                // Σ bsum[j] * min[j] over the 16 sub-blocks (mins in the high nibbles).
                let mn = vshrq_n_u8::<4>(vld1q_u8(a.scales.as_ptr()));
                let m0 = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(mn)));
                let m1 = vreinterpretq_s16_u16(vmovl_high_u8(mn));
                for r in 0..R {
                    let p = y[r].get_unchecked(i).bsums.as_ptr() as *const u8;
                    let bs0 = vreinterpretq_s16_u8(vld1q_u8(p));
                    let bs1 = vreinterpretq_s16_u8(vld1q_u8(p.add(16)));
                    let s = vmull_s16(vget_low_s16(bs0), vget_low_s16(m0));
                    let s = vmlal_high_s16(s, bs0, m0);
                    let s = vmlal_s16(s, vget_low_s16(bs1), vget_low_s16(m1));
                    summ[r] = vaddvq_s32(vmlal_high_s16(s, bs1, m1));
                }
                for k in 0..2 {
                    let q0 = vld1q_u8(a.qs.as_ptr().add(32 * k));
                    let q1 = vld1q_u8(a.qs.as_ptr().add(32 * k + 16));
                    let v = [
                        (vandq_u8(q0, m3), vandq_u8(q1, m3)),
                        (vandq_u8(vshrq_n_u8::<2>(q0), m3), vandq_u8(vshrq_n_u8::<2>(q1), m3)),
                        (vandq_u8(vshrq_n_u8::<4>(q0), m3), vandq_u8(vshrq_n_u8::<4>(q1), m3)),
                        (vshrq_n_u8::<6>(q0), vshrq_n_u8::<6>(q1)),
                    ];
                    for (s, (v0, v1)) in v.iter().enumerate() {
                        let is = 8 * k + 2 * s;
                        let (s0, s1) = ((a.scales[is] & 0xF) as i32, (a.scales[is + 1] & 0xF) as i32);
                        for r in 0..R {
                            let yq = y[r].get_unchecked(i).qs.as_ptr().add(128 * k + 32 * s);
                            let p0 = dot16(vdupq_n_s32(0), s8(*v0), vld1q_s8(yq));
                            let p1 = dot16(vdupq_n_s32(0), s8(*v1), vld1q_s8(yq.add(16)));
                            isum[r] = vmlaq_n_s32(vmlaq_n_s32(isum[r], p0, s0), p1, s1);
                        }
                    }
                }
                let dm = f16x4(h16(a.d) | h16(a.dmin) << 16);
                let (wd, wmin) = (vgetq_lane_f32::<0>(dm), vgetq_lane_f32::<1>(dm));
                for r in 0..R {
                    let yd = y[r].get_unchecked(i).d();
                    acc[r] += wd * yd * vaddvq_s32(isum[r]) as f32;
                    accm[r] += wmin * yd * summ[r] as f32;
                }
            }
            std::array::from_fn(|r| acc[r] - accm[r])
        }

        #[target_feature(enable = $feat)]
        unsafe fn tile_q3_k<const R: usize>(x: &[BlockQ3K], y: [&[BlockQ8K]; R]) -> [f32; R] {
            let mut acc = [0f32; R];
            let m3 = vdupq_n_u8(3);
            let four = vdupq_n_u8(4);
            for (i, a) in x.iter().enumerate() {
                let sc = unpack_scales_q3k(&a.scales);
                let hm0 = vld1q_u8(a.hmask.as_ptr());
                let hm1 = vld1q_u8(a.hmask.as_ptr().add(16));
                let mut isum = [vdupq_n_s32(0); R];
                for k in 0..2 {
                    let q0 = vld1q_u8(a.qs.as_ptr().add(32 * k));
                    let q1 = vld1q_u8(a.qs.as_ptr().add(32 * k + 16));
                    let v = [
                        (vandq_u8(q0, m3), vandq_u8(q1, m3)),
                        (vandq_u8(vshrq_n_u8::<2>(q0), m3), vandq_u8(vshrq_n_u8::<2>(q1), m3)),
                        (vandq_u8(vshrq_n_u8::<4>(q0), m3), vandq_u8(vshrq_n_u8::<4>(q1), m3)),
                        (vshrq_n_u8::<6>(q0), vshrq_n_u8::<6>(q1)),
                    ];
                    for (s, (v0, v1)) in v.iter().enumerate() {
                        // q - 4 where the high bit (bit 4k + s of hmask) is clear.
                        let bit = vdupq_n_u8(1 << (4 * k + s));
                        let w0 = vsubq_s8(s8(*v0), s8(vbicq_u8(four, vtstq_u8(hm0, bit))));
                        let w1 = vsubq_s8(s8(*v1), s8(vbicq_u8(four, vtstq_u8(hm1, bit))));
                        let is = 8 * k + 2 * s;
                        let (s0, s1) = (sc[is] as i32, sc[is + 1] as i32);
                        for r in 0..R {
                            let yq = y[r].get_unchecked(i).qs.as_ptr().add(128 * k + 32 * s);
                            let p0 = dot16(vdupq_n_s32(0), w0, vld1q_s8(yq));
                            let p1 = dot16(vdupq_n_s32(0), w1, vld1q_s8(yq.add(16)));
                            isum[r] = vmlaq_n_s32(vmlaq_n_s32(isum[r], p0, s0), p1, s1);
                        }
                    }
                }
                let wd = owl_quant::f16_to_f32(a.d);
                for r in 0..R {
                    acc[r] += wd * y[r].get_unchecked(i).d() * vaddvq_s32(isum[r]) as f32;
                }
            }
            acc
        }

        /// Q4_K and Q5_K: `ex(a, j)` gives the 64 unsigned quants of sub-blocks
        /// 2j and 2j+1 (elements 64j..64j+64) as four vectors of 16.
        #[inline(always)]
        unsafe fn tile_k4<W, const R: usize>(
            x: &[W],
            y: [&[BlockQ8K]; R],
            parts: impl Fn(&W) -> ([u8; 2], [u8; 2], [u8; 12]),
            ex: impl Fn(&W, usize) -> [uint8x16_t; 4],
        ) -> [f32; R] {
            let mut acc = [0f32; R];
            let mut accm = [0f32; R];
            for (i, a) in x.iter().enumerate() {
                let (d, dmin, scales) = parts(a);
                let (sc, mn) = unpack_scales_mins_k4(&scales);
                let mut isum = [vdupq_n_s32(0); R];
                for j in 0..4 {
                    let v = ex(a, j);
                    let (s0, s1) = (sc[2 * j] as i32, sc[2 * j + 1] as i32);
                    for r in 0..R {
                        let yq = y[r].get_unchecked(i).qs.as_ptr().add(64 * j);
                        let p0 = dot32(s8(v[0]), s8(v[1]), yq);
                        let p1 = dot32(s8(v[2]), s8(v[3]), yq.add(32));
                        isum[r] = vmlaq_n_s32(vmlaq_n_s32(isum[r], p0, s0), p1, s1);
                    }
                }
                let dm = f16x4(h16(d) | h16(dmin) << 16);
                let (wd, wmin) = (vgetq_lane_f32::<0>(dm), vgetq_lane_f32::<1>(dm));
                for r in 0..R {
                    let b = y[r].get_unchecked(i);
                    acc[r] += wd * b.d() * vaddvq_s32(isum[r]) as f32;
                    accm[r] += wmin * b.d() * min_sum8(&mn, b) as f32;
                }
            }
            std::array::from_fn(|r| acc[r] - accm[r])
        }

        #[target_feature(enable = $feat)]
        unsafe fn tile_q4_k<const R: usize>(x: &[BlockQ4K], y: [&[BlockQ8K]; R]) -> [f32; R] {
            tile_k4(x, y, |a: &BlockQ4K| (a.d, a.dmin, a.scales), |a: &BlockQ4K, j| {
                let (l0, h0) = nibbles(a.qs.as_ptr().add(32 * j));
                let (l1, h1) = nibbles(a.qs.as_ptr().add(32 * j + 16));
                [l0, l1, h0, h1]
            })
        }

        #[target_feature(enable = $feat)]
        unsafe fn tile_q5_k<const R: usize>(x: &[BlockQ5K], y: [&[BlockQ8K]; R]) -> [f32; R] {
            let b4 = vdupq_n_u8(0x10);
            tile_k4(x, y, |a: &BlockQ5K| (a.d, a.dmin, a.scales), |a: &BlockQ5K, j| {
                let (l0, h0) = nibbles(a.qs.as_ptr().add(32 * j));
                let (l1, h1) = nibbles(a.qs.as_ptr().add(32 * j + 16));
                // Bit 2j of qh[l] is the fifth bit of element 64j + l, bit 2j+1 of 64j + 32 + l.
                let lo = vdupq_n_u8(1 << (2 * j));
                let hi = vdupq_n_u8(2 << (2 * j));
                let qh0 = vld1q_u8(a.qh.as_ptr());
                let qh1 = vld1q_u8(a.qh.as_ptr().add(16));
                let five = |q: uint8x16_t, h: uint8x16_t, m: uint8x16_t| vorrq_u8(q, vandq_u8(vtstq_u8(h, m), b4));
                [five(l0, qh0, lo), five(l1, qh1, lo), five(h0, qh0, hi), five(h1, qh1, hi)]
            })
        }

        #[target_feature(enable = $feat)]
        unsafe fn tile_q6_k<const R: usize>(x: &[BlockQ6K], y: [&[BlockQ8K]; R]) -> [f32; R] {
            let mut acc = [0f32; R];
            let m4 = vdupq_n_u8(0x0F);
            let m2 = vdupq_n_u8(0x03);
            let off = vdupq_n_s8(32);
            for (i, a) in x.iter().enumerate() {
                let mut isum = [vdupq_n_s32(0); R];
                for n in 0..2 {
                    for h in 0..2 {
                        // Elements 128n + 32g + 16h + (0..16) for g in 0..4.
                        let q4a = vld1q_u8(a.ql.as_ptr().add(64 * n + 16 * h));
                        let q4b = vld1q_u8(a.ql.as_ptr().add(64 * n + 32 + 16 * h));
                        let qh = vld1q_u8(a.qh.as_ptr().add(32 * n + 16 * h));
                        let v = [
                            vorrq_u8(vandq_u8(q4a, m4), vshlq_n_u8::<4>(vandq_u8(qh, m2))),
                            vorrq_u8(vandq_u8(q4b, m4), vshlq_n_u8::<2>(vandq_u8(qh, vdupq_n_u8(0x0C)))),
                            vorrq_u8(vshrq_n_u8::<4>(q4a), vandq_u8(qh, vdupq_n_u8(0x30))),
                            vorrq_u8(vshrq_n_u8::<4>(q4b), vshrq_n_u8::<2>(vandq_u8(qh, vdupq_n_u8(0xC0)))),
                        ];
                        for (g, vg) in v.iter().enumerate() {
                            let w = vsubq_s8(s8(*vg), off);
                            let sc = a.scales[8 * n + 2 * g + h] as i32;
                            for r in 0..R {
                                let yq = y[r].get_unchecked(i).qs.as_ptr().add(128 * n + 32 * g + 16 * h);
                                isum[r] = vmlaq_n_s32(isum[r], dot16(vdupq_n_s32(0), w, vld1q_s8(yq)), sc);
                            }
                        }
                    }
                }
                let wd = owl_quant::f16_to_f32(a.d);
                for r in 0..R {
                    acc[r] += wd * y[r].get_unchecked(i).d() * vaddvq_s32(isum[r]) as f32;
                }
            }
            acc
        }

        #[target_feature(enable = $feat)]
        unsafe fn tile_iq4_xs<const R: usize>(x: &[BlockIQ4XS], y: [&[BlockQ8K]; R]) -> [f32; R] {
            let table = vld1q_s8(KVALUES_IQ4NL.as_ptr());
            let mut acc = [0f32; R];
            for (i, a) in x.iter().enumerate() {
                let mut isum = [vdupq_n_s32(0); R];
                for ib in 0..8 {
                    let (lo, hi) = nibbles(a.qs.as_ptr().add(16 * ib));
                    let (w0, w1) = (vqtbl1q_s8(table, lo), vqtbl1q_s8(table, hi));
                    let ls = a.scale(ib);
                    for r in 0..R {
                        let yq = y[r].get_unchecked(i).qs.as_ptr().add(32 * ib);
                        isum[r] = vmlaq_n_s32(isum[r], dot32(w0, w1, yq), ls);
                    }
                }
                let wd = owl_quant::f16_to_f32(a.d);
                for r in 0..R {
                    acc[r] += wd * y[r].get_unchecked(i).d() * vaddvq_s32(isum[r]) as f32;
                }
            }
            acc
        }

        // ---- Entry points. ----

        type Tile<W, A, const R: usize> = unsafe fn(&[W], [&[A]; R]) -> [f32; R];

        /// Runs a tile kernel over `w` (weight rows of `wr` bytes back to back)
        /// and `a` (activation rows of `ar` bytes): out[i * ostride + j] = w_j · a_i,
        /// activation rows four at a time against every weight row.
        ///
        /// # Safety
        /// The CPU has `$feat`; `out` is valid for every element written; `wr`
        /// and `ar` are the byte lengths of rows of the same `n`.
        #[allow(clippy::too_many_arguments)]
        #[inline(always)]
        unsafe fn drive<W: bytemuck::Pod, A: bytemuck::Pod>(
            w: &[u8],
            wr: usize,
            a: &[u8],
            ar: usize,
            out: *mut f32,
            ostride: usize,
            k: (Tile<W, A, 1>, Tile<W, A, 2>, Tile<W, A, 3>, Tile<W, A, 4>),
        ) {
            let (nw, na) = (w.len() / wr, a.len() / ar);
            let arow = |i: usize| -> &[A] { bytemuck::cast_slice(&a[i * ar..][..ar]) };
            let mut i0 = 0;
            while i0 < na {
                let g = (na - i0).min(4);
                for j in 0..nw {
                    let wrow: &[W] = bytemuck::cast_slice(&w[j * wr..][..wr]);
                    let o = out.add(i0 * ostride + j);
                    let put = |v: &[f32]| {
                        for (t, x) in v.iter().enumerate() {
                            *o.add(t * ostride) = *x;
                        }
                    };
                    let r = |t: usize| arow(i0 + t);
                    match g {
                        4 => put(&(k.3)(wrow, [r(0), r(1), r(2), r(3)])),
                        3 => put(&(k.2)(wrow, [r(0), r(1), r(2)])),
                        2 => put(&(k.1)(wrow, [r(0), r(1)])),
                        _ => put(&(k.0)(wrow, [r(0)])),
                    }
                }
                i0 += g;
            }
        }

        /// Safe entry points for the table (one-row dot and tile): only reachable
        /// through `build`'s table, which exists only on CPUs with `$feat`.
        macro_rules! entries {
            ($dot:ident, $tile:ident, $imp:ident, $W:ty, $A:ty) => {
                fn $dot(w: &[u8], a: &[u8], _n: usize) -> f32 {
                    let w: &[$W] = bytemuck::cast_slice(w);
                    let a: &[$A] = bytemuck::cast_slice(a);
                    // SAFETY: the CPU has $feat (see above); the Kernels wrapper
                    // checked both lengths against the same n.
                    unsafe { $imp::<1>(w, [a])[0] }
                }
                /// # Safety
                /// `out` is valid for out[i * ostride + j], i < rows of `a`, j < rows of `w`.
                unsafe fn $tile(w: &[u8], wr: usize, a: &[u8], ar: usize, out: *mut f32, ostride: usize) {
                    // SAFETY: as for the dot; the caller vouches for `out`.
                    unsafe {
                        drive::<$W, $A>(w, wr, a, ar, out, ostride, ($imp::<1>, $imp::<2>, $imp::<3>, $imp::<4>))
                    }
                }
            };
        }
        entries!(e_q8_0, t_q8_0, tile_q8_0, BlockQ8_0, BlockQ8_0);
        entries!(e_q4_0, t_q4_0, tile_q4_0, BlockQ4_0, BlockQ8_0);
        entries!(e_q4_1, t_q4_1, tile_q4_1, BlockQ4_1, BlockQ8_1);
        entries!(e_q5_0, t_q5_0, tile_q5_0, BlockQ5_0, BlockQ8_0);
        entries!(e_q5_1, t_q5_1, tile_q5_1, BlockQ5_1, BlockQ8_1);
        entries!(e_iq4_nl, t_iq4_nl, tile_iq4_nl, BlockIQ4NL, BlockQ8_0);
        entries!(e_q2_k, t_q2_k, tile_q2_k, BlockQ2K, BlockQ8K);
        entries!(e_q3_k, t_q3_k, tile_q3_k, BlockQ3K, BlockQ8K);
        entries!(e_q4_k, t_q4_k, tile_q4_k, BlockQ4K, BlockQ8K);
        entries!(e_q5_k, t_q5_k, tile_q5_k, BlockQ5K, BlockQ8K);
        entries!(e_q6_k, t_q6_k, tile_q6_k, BlockQ6K, BlockQ8K);
        entries!(e_iq4_xs, t_iq4_xs, tile_iq4_xs, BlockIQ4XS, BlockQ8K);

        /// The table; the caller has checked the CPU features.
        fn build(name: &'static str) -> Kernels {
            let mut k = Kernels::empty(name);
            let all: [(GgmlType, crate::cpu::kernels::DotFn, crate::cpu::kernels::TileFn); 12] = [
                (GgmlType::Q8_0, e_q8_0, t_q8_0),
                (GgmlType::Q4_0, e_q4_0, t_q4_0),
                (GgmlType::Q4_1, e_q4_1, t_q4_1),
                (GgmlType::Q5_0, e_q5_0, t_q5_0),
                (GgmlType::Q5_1, e_q5_1, t_q5_1),
                (GgmlType::IQ4_NL, e_iq4_nl, t_iq4_nl),
                (GgmlType::Q2_K, e_q2_k, t_q2_k),
                (GgmlType::Q3_K, e_q3_k, t_q3_k),
                (GgmlType::Q4_K, e_q4_k, t_q4_k),
                (GgmlType::Q5_K, e_q5_k, t_q5_k),
                (GgmlType::Q6_K, e_q6_k, t_q6_k),
                (GgmlType::IQ4_XS, e_iq4_xs, t_iq4_xs),
            ];
            for (ty, dot, tile) in all {
                k.set_dot(ty, dot);
                k.set_tile(ty, tile);
            }
            k.set_quant(GgmlType::Q8_0, crate::cpu::kernels::neon::q_q8_0);
            k.set_quant(GgmlType::Q8_1, crate::cpu::kernels::neon::q_q8_1);
            k.set_quant(GgmlType::Q8_K, crate::cpu::kernels::neon::q_q8_k);
            k
        }
    };
}

/// Baseline ARMv8 NEON: products by `vmull_s8`, pairs summed into i32 by `vpadalq_s16`.
mod plain {
    #[inline(always)]
    unsafe fn dot16(acc: int32x4_t, x: int8x16_t, y: int8x16_t) -> int32x4_t {
        // |x*y| <= 128 * 128 fits an i16; vpadal sums pairs into the i32 lanes.
        let lo = vmull_s8(vget_low_s8(x), vget_low_s8(y));
        let hi = vmull_high_s8(x, y);
        vpadalq_s16(vpadalq_s16(acc, lo), hi)
    }

    neon_int8_kernels!("neon");

    pub(in crate::cpu::kernels) fn table() -> Kernels {
        build("neon")
    }
}

/// ARMv8.2 dot product: `sdot`, four byte products summed into each i32 lane.
mod dotprod {
    #[inline]
    #[target_feature(enable = "neon,dotprod")]
    unsafe fn dot16(acc: int32x4_t, x: int8x16_t, y: int8x16_t) -> int32x4_t {
        let mut acc = acc;
        // SAFETY: register-only; this function is only called on CPUs with dotprod.
        unsafe {
            std::arch::asm!(
                "sdot {acc:v}.4s, {x:v}.16b, {y:v}.16b",
                acc = inout(vreg) acc,
                x = in(vreg) x,
                y = in(vreg) y,
                options(pure, nomem, nostack, preserves_flags)
            )
        };
        acc
    }

    neon_int8_kernels!("neon,dotprod");

    pub(in crate::cpu::kernels) fn table() -> Option<Kernels> {
        std::arch::is_aarch64_feature_detected!("dotprod").then(|| build("dotprod"))
    }

    mod i8mm;
    pub(in crate::cpu::kernels) use i8mm::table as table_i8mm;
}

/// Baseline NEON: always there on aarch64.
pub(super) fn table_neon() -> Kernels {
    plain::table()
}

/// The `sdot` table, if this CPU has FEAT_DotProd.
pub(super) fn table_dotprod() -> Option<Kernels> {
    dotprod::table()
}

/// The `sdot` table with `smmla` prefill tiles, if this CPU has FEAT_DotProd
/// and FEAT_I8MM.
pub(super) fn table_i8mm() -> Option<Kernels> {
    dotprod::table_i8mm()
}
