//! Weights repacked at first use into 8-row interleaved blocks for the
//! register-tiled GEMM kernels (the idea of llama.cpp's `ggml-cpu/repack.cpp`,
//! `block_q4_Kx8`): eight weight rows side by side so one 256-bit vector holds
//! four consecutive quants of each row, and every i32 lane of a product is one
//! weight row. The kernels then need no horizontal sums and no scale unpacking.
//!
//! The packed copy replaces the mapped bytes of its tensor for the matmuls
//! (prefill and decode both read it), so the map's pages of that tensor go cold.
//! A tensor is packed only when the kernel table has a packed tile for its type.

use bytemuck::{Pod, Zeroable};
use owl_quant::{unpack_scales_mins_k4, BlockQ4K, GgmlType, QK_K};

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

/// A weight in a packed layout: `groups` groups of GROUP rows, each group `nb`
/// blocks back to back (the last group's missing rows repeat its last row).
pub struct Packed {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    /// Blocks per row (and per group).
    pub nb: usize,
    data: Vec<BlockQ4Kx8>,
}

impl Packed {
    /// The bytes of groups `g0..g1`.
    pub fn groups(&self, g0: usize, g1: usize) -> &[u8] {
        bytemuck::cast_slice(&self.data[g0 * self.nb..g1 * self.nb])
    }

    /// Bytes held (for memory accounting).
    pub fn len_bytes(&self) -> usize {
        std::mem::size_of_val(&self.data[..])
    }
}

/// Packs `rows` rows of `cols` elements of `ty` (`bytes` exactly that long),
/// or `None` for a type without a packed layout. Runs in the current rayon pool.
pub fn pack(ty: GgmlType, bytes: &[u8], rows: usize, cols: usize) -> Option<Packed> {
    use rayon::prelude::*;
    if ty != GgmlType::Q4_K || !cols.is_multiple_of(QK_K) || rows == 0 {
        return None;
    }
    let nb = cols / QK_K;
    let blocks: &[BlockQ4K] = bytemuck::try_cast_slice(bytes).ok()?;
    if blocks.len() != rows * nb {
        return None;
    }
    let groups = rows.div_ceil(GROUP);
    let mut data = vec![BlockQ4Kx8::zeroed(); groups * nb];
    data.par_chunks_mut(nb).enumerate().for_each(|(g, out)| {
        let row = |w: usize| {
            let r = (g * GROUP + w).min(rows - 1);
            &blocks[r * nb..][..nb]
        };
        let src: [&[BlockQ4K]; GROUP] = std::array::from_fn(row);
        for (i, o) in out.iter_mut().enumerate() {
            pack_q4_k(std::array::from_fn(|w| &src[w][i]), o);
        }
    });
    Some(Packed {
        ty,
        rows,
        cols,
        nb,
        data,
    })
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
