//! Packed layouts of the 32-element block types (Q8_0, Q4_0, Q4_1, Q5_0) for
//! the register-tiled kernels in `kernels/x86/packed_q32.rs`.
//!
//! The one-row dots of these types keep eight i32 / f32 lanes per row, lane l
//! summing the products of elements 4l..4l+4 of each 32-element block. A packed
//! block holds, for eight rows side by side, those four elements of one lane in
//! one 32-byte vector (byte 4w + b is element 4l + b of row w), so a kernel forms
//! the same exact lane integers with one weight row per i32 lane and needs no
//! horizontal sums until the end.
//!
//! One packed block covers 64 elements (two consecutive mapped blocks, `h` = 0,
//! 1) of eight rows, so every packed block is a whole number of 32-byte lines
//! and every load is aligned; a weight is packed only when its rows hold a
//! whole number of 64-element units (every real model's widths do).

use bytemuck::{Pod, Zeroable};
use owl_quant::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ8_0, GgmlType};

use super::{pack_with, Packed, GROUP};

/// Elements per packed block (two mapped blocks).
pub const UNIT: usize = 64;

/// Two Q8_0 blocks of eight rows, 544 bytes.
///
/// - `qs[8h + l]`: lane l of block h: byte 4w + b is `qs[4l + b]` of row w.
/// - `d[8h + w]`: row w's f16 scale of block h.
#[repr(C, align(32))]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ8_0x8 {
    pub qs: [[u8; 32]; 16],
    pub d: [u16; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0x8>() == 544);

/// Two Q4_0 blocks of eight rows, 288 bytes.
///
/// - `qs[4h + c]`: byte 4w + b is `qs[4c + b]` of row w's block h: its low
///   nibbles are elements 4c + b (lane c), its high nibbles 16 + 4c + b (lane c + 4).
/// - `d[8h + w]`: row w's f16 scale of block h.
#[repr(C, align(32))]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ4_0x8 {
    pub qs: [[u8; 32]; 8],
    pub d: [u16; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_0x8>() == 288);

/// Two Q4_1 blocks of eight rows, 320 bytes: `qs` and `d` as `BlockQ4_0x8`,
/// `m[8h + w]` row w's f16 offset of block h.
#[repr(C, align(32))]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ4_1x8 {
    pub qs: [[u8; 32]; 8],
    pub d: [u16; 16],
    pub m: [u16; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_1x8>() == 320);

/// Two Q5_0 blocks of eight rows, 352 bytes: `qs` and `d` as `BlockQ4_0x8`;
/// `qh[h]` byte 4w + b holds in bit l the fifth bit of element 4l + b of row w's
/// block h (bit 4l + b of its `qh`), so lane l's fifth bits are one shift away.
#[repr(C, align(32))]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ5_0x8 {
    pub qs: [[u8; 32]; 8],
    pub qh: [[u8; 32]; 2],
    pub d: [u16; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_0x8>() == 352);

/// Whether `ty` is one of this room's types.
pub fn is_q32(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0
    )
}

/// Packs `rows` rows of `cols` elements of a 32-element type, or `None` when
/// the rows are not whole 64-element units (or the bytes do not fit).
pub fn pack(ty: GgmlType, bytes: &[u8], rows: usize, cols: usize) -> Option<Packed> {
    if !cols.is_multiple_of(UNIT) || rows == 0 {
        return None;
    }
    let nb = cols / UNIT;
    let (block, data) = match ty {
        GgmlType::Q8_0 => (
            std::mem::size_of::<BlockQ8_0x8>(),
            pack_with::<[BlockQ8_0; 2], BlockQ8_0x8>(bytes, rows, nb, pack_q8_0)?,
        ),
        GgmlType::Q4_0 => (
            std::mem::size_of::<BlockQ4_0x8>(),
            pack_with::<[BlockQ4_0; 2], BlockQ4_0x8>(bytes, rows, nb, pack_q4_0)?,
        ),
        GgmlType::Q4_1 => (
            std::mem::size_of::<BlockQ4_1x8>(),
            pack_with::<[BlockQ4_1; 2], BlockQ4_1x8>(bytes, rows, nb, pack_q4_1)?,
        ),
        GgmlType::Q5_0 => (
            std::mem::size_of::<BlockQ5_0x8>(),
            pack_with::<[BlockQ5_0; 2], BlockQ5_0x8>(bytes, rows, nb, pack_q5_0)?,
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

/// Nibble bytes `qs` (16 of them) of row w into `out[c]`, chunks of four.
fn put_nibbles(qs: &[u8; 16], w: usize, out: &mut [[u8; 32]]) {
    for (c, o) in out.iter_mut().enumerate().take(4) {
        o[4 * w..4 * w + 4].copy_from_slice(&qs[4 * c..4 * c + 4]);
    }
}

fn pack_q8_0(x: [&[BlockQ8_0; 2]; GROUP], o: &mut BlockQ8_0x8) {
    for (w, bs) in x.iter().enumerate() {
        for (h, b) in bs.iter().enumerate() {
            o.d[8 * h + w] = u16::from_le_bytes(b.d);
            for l in 0..8 {
                for t in 0..4 {
                    o.qs[8 * h + l][4 * w + t] = b.qs[4 * l + t] as u8;
                }
            }
        }
    }
}

fn pack_q4_0(x: [&[BlockQ4_0; 2]; GROUP], o: &mut BlockQ4_0x8) {
    for (w, bs) in x.iter().enumerate() {
        for (h, b) in bs.iter().enumerate() {
            o.d[8 * h + w] = u16::from_le_bytes(b.d);
            put_nibbles(&b.qs, w, &mut o.qs[4 * h..]);
        }
    }
}

fn pack_q4_1(x: [&[BlockQ4_1; 2]; GROUP], o: &mut BlockQ4_1x8) {
    for (w, bs) in x.iter().enumerate() {
        for (h, b) in bs.iter().enumerate() {
            o.d[8 * h + w] = u16::from_le_bytes(b.d);
            o.m[8 * h + w] = u16::from_le_bytes(b.m);
            put_nibbles(&b.qs, w, &mut o.qs[4 * h..]);
        }
    }
}

fn pack_q5_0(x: [&[BlockQ5_0; 2]; GROUP], o: &mut BlockQ5_0x8) {
    for (w, bs) in x.iter().enumerate() {
        for (h, b) in bs.iter().enumerate() {
            o.d[8 * h + w] = u16::from_le_bytes(b.d);
            put_nibbles(&b.qs, w, &mut o.qs[4 * h..]);
            let qh = u32::from_le_bytes(b.qh);
            for t in 0..4 {
                let mut v = 0u8;
                for l in 0..8 {
                    v |= (((qh >> (4 * l + t)) & 1) as u8) << l;
                }
                o.qh[h][4 * w + t] = v;
            }
        }
    }
}
