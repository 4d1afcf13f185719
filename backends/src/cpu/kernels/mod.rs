//! Runtime-selected int8 dot kernels and activation quantizers.
//!
//! One function-pointer table per instruction set, filled once from feature
//! detection (STYLE.md item 3): `scalar` (owl-quant's reference, everywhere),
//! `avx2` (maddubs), `avxvnni` and `avx512vnni` (dpbusd on 256-bit vectors; the
//! AVX-512 path uses the EVEX encoding of the same instruction). AMX is never
//! used (these VMs advertise it and raise SIGILL). On aarch64: `neon`
//! (vmull_s8 + vpadalq_s16, always there), `dotprod` (sdot, FEAT_DotProd) and
//! `i8mm` (dotprod with smmla prefill tiles, FEAT_I8MM).
//!
//! A type without a fast kernel in the chosen table falls back to
//! `owl_quant::vec_dot_ref` / `owl_quant::quantize`, so every type works on
//! every path. `OWL_KERNELS=scalar|avx2|avxvnni|avx512|neon|dotprod|i8mm` forces a
//! path (for benchmarks); an unknown or unsupported value selects the best
//! available one.

#[cfg(target_arch = "x86_64")]
#[macro_use]
mod x86;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "aarch64")]
#[macro_use]
mod neon;
#[cfg(test)]
mod tests;

use std::sync::OnceLock;

use owl_quant::GgmlType;

use crate::cpu::repack::Packed;

/// Dot of a weight row with an activation row of `n` elements. Callers have
/// checked both byte lengths against `n`.
pub(crate) type DotFn = fn(w: &[u8], a: &[u8], n: usize) -> f32;
/// Quantizes an f32 row into activation blocks; `out` has the exact length.
pub(crate) type QuantFn = fn(x: &[f32], out: &mut [u8]);
/// Matmul tile: weight rows of `wr` bytes back to back in `w`, activation rows
/// of `ar` bytes in `a`; writes out[i * ostride + j] = w_j · a_i.
///
/// Unsafe because `out` is a raw pointer: the caller keeps every written
/// element inside its own allocation (tasks write disjoint columns of one matrix).
pub(crate) type TileFn = unsafe fn(w: &[u8], wr: usize, a: &[u8], ar: usize, out: *mut f32, ostride: usize);

/// Matmul tile over repacked weights (`crate::cpu::repack`): `p` holds whole
/// groups of eight rows (`nb` blocks each) covering `nrows` weight rows, `a`
/// activation rows of `ar` bytes; writes out[i * ostride + j], j < nrows.
///
/// Unsafe for the same reason as `TileFn`.
pub(crate) type PackedFn =
    unsafe fn(p: &[u8], nb: usize, nrows: usize, a: &[u8], ar: usize, out: *mut f32, ostride: usize);

const N_IDS: usize = 31;

/// Types with a packed tile that stay in the mapped layout unless
/// `OWL_NO_REPACK` says otherwise: packed Q8_0 and Q5_0 decode faster (kernel
/// bench +30-45%) but their AVX2 prefill tile spills registers, and on
/// Qwen2.5-Coder-0.5B (Q5_0/Q8_0 tensors) pp512 fell from 92 to 77 t/s against
/// llama.cpp's 87 on a 2-core EPYC, so they are off until that tile is fixed.
pub const UNPACKED_BY_DEFAULT: &str = "Q8_0,Q5_0";

/// A kernel table for one instruction set.
pub struct Kernels {
    /// "scalar", "avx2", "avxvnni" or "avx512vnni"; "neon", "dotprod" or "i8mm" on aarch64.
    pub name: &'static str,
    dots: [Option<DotFn>; N_IDS],
    quants: [Option<QuantFn>; N_IDS],
    tiles: [Option<TileFn>; N_IDS],
    packed: [Option<PackedFn>; N_IDS],
}

impl Kernels {
    fn empty(name: &'static str) -> Kernels {
        Kernels {
            name,
            dots: [None; N_IDS],
            quants: [None; N_IDS],
            tiles: [None; N_IDS],
            packed: [None; N_IDS],
        }
    }

    pub(crate) fn set_dot(&mut self, ty: GgmlType, f: DotFn) {
        self.dots[ty.id() as usize] = Some(f);
    }

    pub(crate) fn set_tile(&mut self, ty: GgmlType, f: TileFn) {
        self.tiles[ty.id() as usize] = Some(f);
    }

    pub(crate) fn set_packed(&mut self, ty: GgmlType, f: PackedFn) {
        self.packed[ty.id() as usize] = Some(f);
    }

    pub(crate) fn set_quant(&mut self, ty: GgmlType, f: QuantFn) {
        self.quants[ty.id() as usize] = Some(f);
    }

    /// owl-quant's scalar reference for everything.
    pub fn scalar() -> Kernels {
        Kernels::empty("scalar")
    }

    /// The AVX2 (+FMA, F16C) table, if this CPU has those.
    pub fn avx2() -> Option<Kernels> {
        #[cfg(target_arch = "x86_64")]
        {
            avx2::table()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            None
        }
    }

    /// The AVX-VNNI (VEX dpbusd) table, if this CPU has it.
    pub fn avxvnni() -> Option<Kernels> {
        #[cfg(target_arch = "x86_64")]
        {
            avx512::table_avxvnni()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            None
        }
    }

    /// The AVX-512 VNNI (EVEX dpbusd, AVX512VL) table, if this CPU has it.
    pub fn avx512() -> Option<Kernels> {
        #[cfg(target_arch = "x86_64")]
        {
            avx512::table_avx512vnni()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            None
        }
    }

    /// The baseline aarch64 NEON table (every aarch64 CPU has NEON).
    pub fn neon() -> Option<Kernels> {
        #[cfg(target_arch = "aarch64")]
        {
            Some(neon::table_neon())
        }
        #[cfg(not(target_arch = "aarch64"))]
        {
            None
        }
    }

    /// The aarch64 `sdot` (FEAT_DotProd) table, if this CPU has it.
    pub fn dotprod() -> Option<Kernels> {
        #[cfg(target_arch = "aarch64")]
        {
            neon::table_dotprod()
        }
        #[cfg(not(target_arch = "aarch64"))]
        {
            None
        }
    }

    /// The aarch64 `sdot` table with `smmla` (FEAT_I8MM) prefill tiles, if this
    /// CPU has both.
    pub fn i8mm() -> Option<Kernels> {
        #[cfg(target_arch = "aarch64")]
        {
            neon::table_i8mm()
        }
        #[cfg(not(target_arch = "aarch64"))]
        {
            None
        }
    }

    /// Every table this CPU can run, best last (tests run them all).
    pub fn available() -> Vec<Kernels> {
        let mut v = vec![Kernels::scalar()];
        v.extend(Kernels::avx2());
        v.extend(Kernels::avxvnni());
        v.extend(Kernels::avx512());
        v.extend(Kernels::neon());
        v.extend(Kernels::dotprod());
        v.extend(Kernels::i8mm());
        v
    }

    /// The best table for this CPU, or the one `OWL_KERNELS` names.
    pub fn detect() -> Kernels {
        let forced = std::env::var("OWL_KERNELS").ok();
        let pick = match forced.as_deref() {
            Some("scalar") => Some(Kernels::scalar()),
            Some("avx2") => Kernels::avx2(),
            Some("avxvnni") => Kernels::avxvnni(),
            Some("avx512") | Some("avx512vnni") => Kernels::avx512(),
            Some("neon") => Kernels::neon(),
            Some("dotprod") => Kernels::dotprod(),
            Some("i8mm") => Kernels::i8mm(),
            _ => None,
        };
        pick.or_else(Kernels::avx512)
            .or_else(Kernels::avxvnni)
            .or_else(Kernels::avx2)
            .or_else(Kernels::i8mm)
            .or_else(Kernels::dotprod)
            .or_else(Kernels::neon)
            .unwrap_or_else(Kernels::scalar)
    }

    /// Whether `ty` has a SIMD dot in this table (otherwise the scalar reference runs).
    pub fn has_fast_dot(&self, ty: GgmlType) -> bool {
        self.dots[ty.id() as usize].is_some()
    }

    /// Dot of a weight row (`n` elements of `ty`) with an activation row quantized
    /// as `ty.vec_dot_type()`. Wrong lengths give NaN (and a debug assertion).
    #[inline]
    pub fn vec_dot(&self, ty: GgmlType, w: &[u8], a: &[u8], n: usize) -> f32 {
        if let Some(f) = self.dots[ty.id() as usize] {
            let ok =
                ty.row_bytes(n) == Some(w.len()) && ty.vec_dot_type().row_bytes(n) == Some(a.len());
            debug_assert!(
                ok,
                "vec_dot {}: {} / {} bytes for n = {n}",
                ty.name(),
                w.len(),
                a.len()
            );
            if ok {
                return f(w, a, n);
            }
            return f32::NAN;
        }
        owl_quant::vec_dot_ref(ty, w, a, n).unwrap_or(f32::NAN)
    }

    /// Dots one activation row with `rows` consecutive weight rows of `n`
    /// elements each (`w` holds them back to back), writing `out[0..rows]`.
    /// This is the matvec inner loop; the row length is checked once.
    pub fn vec_dot_rows(&self, ty: GgmlType, w: &[u8], a: &[u8], n: usize, out: &mut [f32]) {
        let (Some(wr), Some(ar)) = (ty.row_bytes(n), ty.vec_dot_type().row_bytes(n)) else {
            out.fill(f32::NAN);
            return;
        };
        if a.len() != ar || wr == 0 || w.len() != wr * out.len() {
            debug_assert!(false, "vec_dot_rows {}: bad lengths", ty.name());
            out.fill(f32::NAN);
            return;
        }
        match self.dots[ty.id() as usize] {
            Some(f) => {
                for (o, row) in out.iter_mut().zip(w.chunks_exact(wr)) {
                    *o = f(row, a, n);
                }
            }
            None => {
                for (o, row) in out.iter_mut().zip(w.chunks_exact(wr)) {
                    *o = owl_quant::vec_dot_ref(ty, row, a, n).unwrap_or(f32::NAN);
                }
            }
        }
    }

    /// The matmul inner block: every weight row in `w` (`n` elements of `ty`
    /// each, back to back) dotted with every activation row in `a` (quantized as
    /// `ty.vec_dot_type()`), written to out[i * ostride + j] for activation row
    /// i and weight row j. An element's value is the same whatever the number
    /// of rows in the call (batched equals solo, bit for bit).
    ///
    /// # Safety
    /// `out` must be valid for writes at every out[i * ostride + j], and no other
    /// thread may touch those elements during the call.
    pub unsafe fn dot_tile(&self, ty: GgmlType, w: &[u8], a: &[u8], n: usize, out: *mut f32, ostride: usize) {
        let (Some(wr), Some(ar)) = (ty.row_bytes(n), ty.vec_dot_type().row_bytes(n)) else {
            return;
        };
        if wr == 0 || ar == 0 || !w.len().is_multiple_of(wr) || !a.len().is_multiple_of(ar) {
            debug_assert!(false, "dot_tile {}: bad lengths", ty.name());
            return;
        }
        if let Some(f) = self.tiles[ty.id() as usize] {
            // SAFETY: lengths checked above; `out` is the caller's promise.
            return unsafe { f(w, wr, a, ar, out, ostride) };
        }
        for (i, arow) in a.chunks_exact(ar).enumerate() {
            for (j, wrow) in w.chunks_exact(wr).enumerate() {
                // SAFETY: the caller's promise.
                unsafe { *out.add(i * ostride + j) = self.vec_dot(ty, wrow, arow, n) };
            }
        }
    }

    /// Whether weights of `ty` are repacked for this table. `OWL_NO_REPACK` keeps
    /// the mapped layout, for A/B timing: a comma-separated list of type names
    /// (`Q6_K`) for those types only, `none` to pack every type the table has a
    /// packed tile for, any other value for no type. Unset, it is
    /// [`UNPACKED_BY_DEFAULT`].
    pub fn packs(&self, ty: GgmlType) -> bool {
        static OFF: OnceLock<String> = OnceLock::new();
        let off = OFF.get_or_init(|| {
            std::env::var("OWL_NO_REPACK").unwrap_or_else(|_| UNPACKED_BY_DEFAULT.to_string())
        });
        let kept = {
            let names: Vec<&str> = off.split(',').map(str::trim).collect();
            let listed = |n: &str| names.iter().any(|m| m.eq_ignore_ascii_case(n));
            // Quantized type names all hold an underscore; "1" does not.
            let typed = names.iter().any(|m| m.contains('_'));
            if off.eq_ignore_ascii_case("none") {
                false
            } else {
                !typed || listed(ty.name())
            }
        };
        self.has_packed(ty) && !kept
    }

    /// Whether this table has a matmul tile of its own for `ty` (without one,
    /// `dot_tile` runs the one-row dot per element).
    pub fn has_tile(&self, ty: GgmlType) -> bool {
        self.tiles[ty.id() as usize].is_some()
    }

    /// Whether this table has a tile over repacked `ty` weights.
    pub fn has_packed(&self, ty: GgmlType) -> bool {
        self.packed[ty.id() as usize].is_some()
    }

    /// `dot_tile` over a packed weight: rows `8 * g0 .. 8 * g0 + nrows` of `p`
    /// against every activation row in `a`, written to out[i * ostride + j] for
    /// activation row i and weight row j (counted from `8 * g0`). Each element
    /// equals `vec_dot` of its mapped row bit for bit.
    ///
    /// # Safety
    /// As `dot_tile`.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn packed_tile(&self, p: &Packed, g0: usize, nrows: usize, a: &[u8], n: usize, out: *mut f32, ostride: usize) {
        let Some(ar) = p.ty.vec_dot_type().row_bytes(n) else { return };
        let g1 = g0 + nrows.div_ceil(crate::cpu::repack::GROUP);
        if ar == 0 || !a.len().is_multiple_of(ar) || p.cols != n || 8 * g0 + nrows > p.rows {
            debug_assert!(false, "packed_tile {}: bad lengths", p.ty.name());
            return;
        }
        let Some(f) = self.packed[p.ty.id() as usize] else {
            debug_assert!(false, "packed_tile {}: no packed kernel", p.ty.name());
            return;
        };
        // SAFETY: lengths checked above; `out` is the caller's promise.
        unsafe { f(p.groups(g0, g1), p.nb, nrows, a, ar, out, ostride) }
    }

    /// Quantizes an f32 activation row into `ty` (Q8_0, Q8_1, Q8_K, F16, BF16 or
    /// F32), bit-identical to `owl_quant::quantize_act` (GGML's x86 activation
    /// quantizers, which llama.cpp's CPU matmuls use). `out` must be exactly
    /// `ty.row_bytes(x.len())` bytes.
    ///
    /// # Panics
    /// On a wrong `out` length or a type that cannot be quantized: both are
    /// caller bugs (the matmul sizes `out` from the same type).
    pub fn quantize_act(&self, ty: GgmlType, x: &[f32], out: &mut [u8]) {
        if let Some(f) = self.quants[ty.id() as usize] {
            assert_eq!(
                ty.row_bytes(x.len()),
                Some(out.len()),
                "quantize_act {}: output length",
                ty.name()
            );
            return f(x, out);
        }
        if let Err(e) = owl_quant::quantize_act(ty, x, out) {
            panic!("activation quantization into {} failed: {e}", ty.name());
        }
    }
}

/// The kernels for this process: detected once (honouring `OWL_KERNELS`).
pub fn kernels() -> &'static Kernels {
    static K: OnceLock<Kernels> = OnceLock::new();
    K.get_or_init(Kernels::detect)
}
