//! Weights repacked at first use into 8-row interleaved blocks for the
//! register-tiled GEMM kernels (the idea of llama.cpp's `ggml-cpu/repack.cpp`,
//! `block_q4_Kx8`): eight weight rows side by side so one 256-bit vector holds
//! four consecutive quants of each row, and every i32 lane of a product is one
//! weight row. The kernels then need no horizontal sums and no scale unpacking.
//! Q4_K (`BlockQ4Kx8`), Q5_K (`BlockQ5Kx8`) and Q6_K (`BlockQ6Kx8`) have packed
//! layouts; a decode step then streams one contiguous run of eight rows per
//! activation block.
//!
//! The packed copy replaces the mapped bytes of its tensor for the matmuls
//! (prefill and decode both read it), so the map's pages of that tensor go cold.
//! A tensor is packed only when the kernel table has a packed tile for its type.

use bytemuck::{Pod, Zeroable};
use owl_quant::{unpack_scales_mins_k4, BlockQ4K, BlockQ5K, BlockQ6K, GgmlType, QK_K};

mod q32;
pub use q32::{BlockQ4_0x8, BlockQ4_1x8, BlockQ5_0x8, BlockQ8_0x8, UNIT};

/// Rows per packed group.
pub const GROUP: usize = 8;

/// One Q4_K super-block of eight rows (256 elements each), 1248 bytes.
///
/// - `d`, `dmin`: the rows' f16 super-block scales.
/// - `scales[k]`: sub-block k's 6-bit scale of row w at bytes 2w and 2w+1 (an
///   i16 pair after zero extension, as `madd` wants it).
/// - `mins[j]`: row w's mins of sub-blocks 2j and 2j+1 at bytes 2w, 2w+1.
/// - `qs[j]`: the 32 bytes of row w's `qs[32j..32j+32]` in chunks of four:
///   byte 32c + 4w + b is `qs[32j + 4c + b]` of row w. Low nibbles are elements
///   64j + 4c + b (sub-block 2j), high nibbles 64j + 32 + 4c + b (sub-block 2j+1).
#[repr(C, align(32))]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ4Kx8 {
    pub d: [u16; 8],
    pub dmin: [u16; 8],
    pub scales: [[u8; 16]; 8],
    pub mins: [[u8; 16]; 4],
    pub qs: [[u8; 256]; 4],
}
const _: () = assert!(std::mem::size_of::<BlockQ4Kx8>() == 1248);

/// One Q6_K super-block of eight rows (256 elements each), 1696 bytes (the
/// eight mapped blocks' 1680 and 16 bytes of padding, so every load is aligned).
///
/// The one-row Q6_K dot keeps eight i32 lanes per block, lane l summing bytes
/// 4l..4l+4 of each 32-quant chunk; here each 32-byte vector holds exactly one
/// such lane's four bytes for all eight rows, so a kernel forms the same exact
/// lane integers with one row per i32 lane.
///
/// - `qs[2l + n]`: lane l of half n (elements 128n..128n+128): bytes 0..32 are
///   `ql[64n + 4l + b]` of row w at 4w + b, bytes 32..64 `ql[64n + 32 + 4l + b]`,
///   bytes 64..96 `qh[32n + 4l + b]` (the mapped block's bits, unchanged).
/// - `scales[j][w]`: row w's scale of sub-block j (an i8).
/// - `d[w]`: row w's f16 super-block scale.
#[repr(C, align(32))]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ6Kx8 {
    pub qs: [[u8; 96]; 16],
    pub scales: [[u8; 8]; 16],
    pub d: [u16; 8],
    pub pad: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ6Kx8>() == 1696);

/// One Q5_K super-block of eight rows (256 elements each), 1440 bytes (the
/// eight mapped blocks' 1408 plus the 6-bit scales and mins unpacked to bytes).
///
/// As for Q6_K, the one-row Q5_K dot (`block_q5_k`) keeps eight i32 lanes per
/// block, lane l summing bytes 4l..4l+4 of each 32-quant chunk times its scale;
/// here each 32-byte vector holds one such lane's four bytes for all eight rows.
///
/// - `qs[4l + j]`: byte 4w + b is row w's `qs[32j + 4l + b]` (low nibble element
///   64j + 4l + b, sub-block 2j; high nibble 64j + 32 + 4l + b, sub-block 2j+1).
/// - `qh[l]`: byte 4w + b is row w's `qh[4l + b]` (bit 2j: the fifth bit of
///   element 64j + 4l + b, bit 2j+1: of element 64j + 32 + 4l + b).
/// - `scales[k][w]`, `mins[k][w]`: row w's 6-bit scale and min of sub-block k
///   (32 elements).
/// - `d[w]`, `dmin[w]`: row w's f16 super-block scales.
#[repr(C, align(32))]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ5Kx8 {
    pub qs: [[u8; 32]; 32],
    pub qh: [[u8; 32]; 8],
    pub scales: [[u8; 8]; 8],
    pub mins: [[u8; 8]; 8],
    pub d: [u16; 8],
    pub dmin: [u16; 8],
}
const _: () = assert!(std::mem::size_of::<BlockQ5Kx8>() == 1440);

/// 32 aligned bytes: the unit packed blocks are stored in (each packed block
/// is a whole number of them, with alignment 32).
#[repr(C, align(32))]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Line([u8; 32]);

/// A weight in a packed layout: `groups` groups of GROUP rows, each group `nb`
/// blocks back to back (the last group's missing rows repeat its last row).
pub struct Packed {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    /// Blocks per row (and per group).
    pub nb: usize,
    /// Bytes per packed block (eight rows' blocks).
    block: usize,
    data: Vec<Line>,
}

impl Packed {
    /// The bytes of groups `g0..g1`.
    pub fn groups(&self, g0: usize, g1: usize) -> &[u8] {
        let gb = self.nb * self.block;
        &bytemuck::cast_slice(&self.data)[g0 * gb..g1 * gb]
    }

    /// Bytes held (for memory accounting).
    pub fn len_bytes(&self) -> usize {
        std::mem::size_of_val(&self.data[..])
    }
}

/// Packs `rows` rows of `cols` elements of `ty` (`bytes` exactly that long),
/// or `None` for a type without a packed layout. Runs in the current rayon pool.
pub fn pack(ty: GgmlType, bytes: &[u8], rows: usize, cols: usize) -> Option<Packed> {
    if q32::is_q32(ty) {
        return q32::pack(ty, bytes, rows, cols);
    }
    if !cols.is_multiple_of(QK_K) || rows == 0 {
        return None;
    }
    let nb = cols / QK_K;
    let (block, data) = match ty {
        GgmlType::Q4_K => (
            std::mem::size_of::<BlockQ4Kx8>(),
            pack_with::<BlockQ4K, BlockQ4Kx8>(bytes, rows, nb, pack_q4_k)?,
        ),
        GgmlType::Q5_K => (
            std::mem::size_of::<BlockQ5Kx8>(),
            pack_with::<BlockQ5K, BlockQ5Kx8>(bytes, rows, nb, pack_q5_k)?,
        ),
        GgmlType::Q6_K => (
            std::mem::size_of::<BlockQ6Kx8>(),
            pack_with::<BlockQ6K, BlockQ6Kx8>(bytes, rows, nb, pack_q6_k)?,
        ),
        _ => return None,
    };
    Some(Packed {
        ty,
        rows,
        cols,
        nb,
        block,
        data,
    })
}

/// Packs rows of `nb` blocks `B` into groups of packed blocks `P` (a whole
/// number of `Line`s each), in parallel over groups.
fn pack_with<B: Pod + Sync, P: Pod + Send>(
    bytes: &[u8],
    rows: usize,
    nb: usize,
    one: fn([&B; GROUP], &mut P),
) -> Option<Vec<Line>> {
    use rayon::prelude::*;
    const { assert!(std::mem::size_of::<P>().is_multiple_of(32)) };
    let blocks: &[B] = bytemuck::try_cast_slice(bytes).ok()?;
    if blocks.len() != rows * nb {
        return None;
    }
    let per = std::mem::size_of::<P>() / 32;
    let groups = rows.div_ceil(GROUP);
    let mut data = vec![Line::zeroed(); groups * nb * per];
    data.par_chunks_mut(nb * per).enumerate().for_each(|(g, out)| {
        let out: &mut [P] = bytemuck::cast_slice_mut(out);
        let row = |w: usize| {
            let r = (g * GROUP + w).min(rows - 1);
            &blocks[r * nb..][..nb]
        };
        let src: [&[B]; GROUP] = std::array::from_fn(row);
        for (i, o) in out.iter_mut().enumerate() {
            one(std::array::from_fn(|w| &src[w][i]), o);
        }
    });
    Some(data)
}

fn pack_q6_k(x: [&BlockQ6K; GROUP], o: &mut BlockQ6Kx8) {
    for (w, b) in x.iter().enumerate() {
        o.d[w] = u16::from_le_bytes(b.d);
        for (j, &s) in b.scales.iter().enumerate() {
            o.scales[j][w] = s as u8;
        }
        for l in 0..8 {
            for n in 0..2 {
                let q = &mut o.qs[2 * l + n];
                for t in 0..4 {
                    q[4 * w + t] = b.ql[64 * n + 4 * l + t];
                    q[32 + 4 * w + t] = b.ql[64 * n + 32 + 4 * l + t];
                    q[64 + 4 * w + t] = b.qh[32 * n + 4 * l + t];
                }
            }
        }
    }
}

fn pack_q5_k(x: [&BlockQ5K; GROUP], o: &mut BlockQ5Kx8) {
    for (w, b) in x.iter().enumerate() {
        o.d[w] = u16::from_le_bytes(b.d);
        o.dmin[w] = u16::from_le_bytes(b.dmin);
        let (sc, mn) = unpack_scales_mins_k4(&b.scales);
        for k in 0..8 {
            o.scales[k][w] = sc[k];
            o.mins[k][w] = mn[k];
        }
        for l in 0..8 {
            for t in 0..4 {
                o.qh[l][4 * w + t] = b.qh[4 * l + t];
                for j in 0..4 {
                    o.qs[4 * l + j][4 * w + t] = b.qs[32 * j + 4 * l + t];
                }
            }
        }
    }
}

fn pack_q4_k(x: [&BlockQ4K; GROUP], o: &mut BlockQ4Kx8) {
    for (w, b) in x.iter().enumerate() {
        o.d[w] = u16::from_le_bytes(b.d);
        o.dmin[w] = u16::from_le_bytes(b.dmin);
        let (sc, mn) = unpack_scales_mins_k4(&b.scales);
        for (dst, &s) in o.scales.iter_mut().zip(&sc) {
            dst[2 * w] = s;
            dst[2 * w + 1] = s;
        }
        for j in 0..4 {
            o.mins[j][2 * w] = mn[2 * j];
            o.mins[j][2 * w + 1] = mn[2 * j + 1];
            for c in 0..8 {
                for t in 0..4 {
                    o.qs[j][32 * c + 4 * w + t] = b.qs[32 * j + 4 * c + t];
                }
            }
        }
    }
}

/// Hands the pages wholly inside `bytes` back to the kernel (`MADV_PAGEOUT`:
/// file pages are dropped and read again if touched, anonymous memory is kept
/// or swapped, so no data can be lost). Only a hint: errors are ignored.
pub fn release(bytes: &[u8]) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let start = (bytes.as_ptr() as usize).next_multiple_of(PAGE);
        let end = (bytes.as_ptr() as usize + bytes.len()) / PAGE * PAGE;
        if end > start {
            // SAFETY: a hint on pages inside a live borrowed range; PAGEOUT never
            // changes their contents.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_PAGEOUT) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = bytes;
}
