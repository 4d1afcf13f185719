//! The x86 int8 kernels, written once and instantiated per instruction set by
//! `x86_int8_kernels!("features")`. The instantiating module defines the two
//! primitives the bodies use (with the same target features):
//!
//! - `mul_u8i8(x, y) -> __m256i`: for unsigned bytes x and signed bytes y, eight
//!   i32 lanes, lane i = sum of x*y over bytes 4i..4i+4 (maddubs+madd, or dpbusd).
//! - `mul_u8i8_s(x, y, lo, hi)`: the same with lanes 0..4 (bytes 0..16) times
//!   `lo` and lanes 4..8 (bytes 16..32) times `hi`.
//! - `madd_add(acc, x, s) -> __m256i`: acc + madd(x, s) (i16 pairs times i16
//!   pairs summed into i32 lanes, wrapping), or VNNI's dpwssd in one instruction.
//! - `HAS_DPBUSD` and `dpbusd(acc, x, y) -> __m256i`: whether the table has
//!   `vpdpbusd`, and acc plus the i32 sums of four u8 x i8 products per lane
//!   (kernels whose maddubs form accumulates i16 pairs branch on the constant).
//!
//! Bodies follow GGML's x86 kernels (ggml-cpu/arch/x86/quants.c): nibbles expanded
//! to bytes, signed x signed via the `sign_epi8` trick (activations never hold
//! -128: the quantizers clamp to ±127), per-block i32 sums converted to f32 and
//! accumulated with FMA. Integer sums equal the reference exactly; only the float
//! accumulation order differs.
//!
//! The bodies live in one macro per concern, each taking the same `$feat`:
//! `common` (helpers), `dots` (32-element blocks, Q2_K, Q3_K), `kquant` (Q4_K,
//! Q5_K, Q6_K, IQ4_XS), `tiles` (prefill), `rows` (decode), `drive` (tile
//! driver and entries), `lowk` (Q2_K, Q3_K and Q5_1 tiles and decode rows), `packed`,
//! `packed_q5`, `packed_q6` (repacked K-quants), `quantize` (activations) and
//! `floats` (F16 rows); this file expands them all into the instantiating module
//! and builds its table.

#[macro_use]
mod common;
#[macro_use]
mod dots;
#[macro_use]
mod kquant;
#[macro_use]
mod tiles;
#[macro_use]
mod rows;
#[macro_use]
mod drive;
#[macro_use]
mod lowk;
#[macro_use]
mod quantize;
#[macro_use]
mod packed;
#[macro_use]
mod packed_q5;
#[macro_use]
mod packed_q6;
#[macro_use]
mod packed_q32;
#[macro_use]
mod floats;

macro_rules! x86_int8_kernels {
    ($feat:literal) => {
        use crate::cpu::kernels::Kernels;
        #[allow(unused_imports)]
        use owl_quant::{
            as_blocks, unpack_scales_mins_k4, unpack_scales_q3k, BlockIQ4NL, BlockIQ4XS, BlockQ2K,
            BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K,
            BlockQ8K, BlockQ8_0, BlockQ8_1, GgmlType, KVALUES_IQ4NL, QK_K,
        };

        x86_common!($feat);
        x86_dots!($feat);
        x86_kquant!($feat);
        x86_tiles!($feat);
        x86_rows!($feat);
        x86_drive!($feat);
        x86_lowk!($feat);
        x86_quantize!($feat);
        x86_packed!($feat);
        x86_packed_q5!($feat);
        x86_packed_q6!($feat);
        x86_packed_q32!($feat);
        x86_floats!($feat);

        /// Safe entry points for the table: only reachable through `table`, which
        /// is built after the CPU was checked for `$feat`.
        macro_rules! entry {
            ($name:ident, $imp:ident, $W:ty, $A:ty) => {
                fn $name(w: &[u8], a: &[u8], _n: usize) -> f32 {
                    let w: &[$W] = bytemuck::cast_slice(w);
                    let a: &[$A] = bytemuck::cast_slice(a);
                    // SAFETY: the table holding this function exists only on CPUs with $feat.
                    unsafe { $imp(w, a) }
                }
            };
        }
        entry!(e_q8_0, dot_q8_0, BlockQ8_0, BlockQ8_0);
        entry!(e_q4_0, dot_q4_0, BlockQ4_0, BlockQ8_0);
        entry!(e_q4_1, dot_q4_1, BlockQ4_1, BlockQ8_1);
        entry!(e_q5_0, dot_q5_0, BlockQ5_0, BlockQ8_0);
        entry!(e_q5_1, dot_q5_1, BlockQ5_1, BlockQ8_1);
        entry!(e_iq4_nl, dot_iq4_nl, BlockIQ4NL, BlockQ8_0);
        entry!(e_q2_k, dot_q2_k, BlockQ2K, BlockQ8K);
        entry!(e_q3_k, dot_q3_k, BlockQ3K, BlockQ8K);
        entry!(e_q4_k, dot_q4_k, BlockQ4K, BlockQ8K);
        entry!(e_q5_k, dot_q5_k, BlockQ5K, BlockQ8K);
        entry!(e_q6_k, dot_q6_k, BlockQ6K, BlockQ8K);
        entry!(e_iq4_xs, dot_iq4_xs, BlockIQ4XS, BlockQ8K);

        fn e_f16(w: &[u8], a: &[u8], n: usize) -> f32 {
            // SAFETY: as for `entry!`; the table checked both lengths (2 bytes an element).
            unsafe { dot_f16(w, a, n) }
        }

        /// # Safety
        /// As `TileFn`: `out` valid at every out[i * ostride + j].
        unsafe fn t_f16(w: &[u8], wr: usize, a: &[u8], ar: usize, out: *mut f32, ostride: usize) {
            // SAFETY: the table exists only on CPUs with $feat; `out` is the caller's promise.
            unsafe { tile_f16(w, wr, a, ar, out, ostride) }
        }

        fn q_q8_0(x: &[f32], out: &mut [u8]) {
            // SAFETY: as for `entry!`.
            unsafe { quantize_q8_0(x, bytemuck::cast_slice_mut(out)) }
        }
        fn q_q8_1(x: &[f32], out: &mut [u8]) {
            // SAFETY: as for `entry!`.
            unsafe { quantize_q8_1(x, bytemuck::cast_slice_mut(out)) }
        }
        fn q_q8_k(x: &[f32], out: &mut [u8]) {
            // SAFETY: as for `entry!`.
            unsafe { quantize_q8_k(x, bytemuck::cast_slice_mut(out)) }
        }

        /// The table; the caller has checked the CPU features.
        fn build(name: &'static str) -> Kernels {
            let mut k = Kernels::empty(name);
            k.set_dot(GgmlType::Q8_0, e_q8_0);
            k.set_dot(GgmlType::Q4_0, e_q4_0);
            k.set_dot(GgmlType::Q4_1, e_q4_1);
            k.set_dot(GgmlType::Q5_0, e_q5_0);
            k.set_dot(GgmlType::Q5_1, e_q5_1);
            k.set_dot(GgmlType::IQ4_NL, e_iq4_nl);
            k.set_dot(GgmlType::Q2_K, e_q2_k);
            k.set_dot(GgmlType::Q3_K, e_q3_k);
            k.set_dot(GgmlType::Q4_K, e_q4_k);
            k.set_dot(GgmlType::Q5_K, e_q5_k);
            k.set_dot(GgmlType::Q6_K, e_q6_k);
            k.set_dot(GgmlType::IQ4_XS, e_iq4_xs);
            k.set_dot(GgmlType::F16, e_f16);
            k.set_tile(GgmlType::F16, t_f16);
            k.set_tile(GgmlType::Q8_0, t_q8_0);
            k.set_tile(GgmlType::Q4_0, t_q4_0);
            k.set_tile(GgmlType::Q4_1, t_q4_1);
            k.set_tile(GgmlType::Q5_0, t_q5_0);
            k.set_tile(GgmlType::IQ4_NL, t_iq4_nl);
            k.set_tile(GgmlType::Q5_1, t_q5_1);
            k.set_tile(GgmlType::Q2_K, t_q2_k);
            k.set_tile(GgmlType::Q3_K, t_q3_k);
            k.set_tile(GgmlType::Q5_K, t_q5_k);
            k.set_tile(GgmlType::IQ4_XS, t_iq4_xs);
            k.set_tile(GgmlType::Q4_K, t_q4_k);
            k.set_tile(GgmlType::Q6_K, t_q6_k);
            k.set_packed(GgmlType::Q4_K, p_q4_k);
            k.set_packed(GgmlType::Q5_K, p_q5_k);
            k.set_packed(GgmlType::Q6_K, p_q6_k);
            k.set_quant(GgmlType::Q8_0, q_q8_0);
            k.set_quant(GgmlType::Q8_1, q_q8_1);
            k.set_quant(GgmlType::Q8_K, q_q8_k);
            k
        }
    };
}
