// Weight decoding, shared by every op that reads a weight (matmul, embed, norm).
//
// A weight is bound as raw u32 words in its GGML block layout, bit for bit as
// it lies in the GGUF file. `deq4_<type>(row, i)` returns elements i..i+4 of
// the row that starts at byte `row` (i a multiple of 4); the Rust side appends
// `fn deq4(row: u32, i: u32) -> vec4<f32>` naming the weight's type, so op
// shaders call `deq4` and one pipeline exists per (op, type).

@group(0) @binding(0) var<storage, read> w: array<u32>;

fn ld_u8(off: u32) -> u32 {
    return (w[off >> 2u] >> ((off & 3u) * 8u)) & 0xffu;
}

// A 16-bit field at an even byte offset.
fn ld_u16(off: u32) -> u32 {
    return (w[off >> 2u] >> ((off & 2u) * 8u)) & 0xffffu;
}

fn ld_f16(off: u32) -> f32 {
    return unpack2x16float(ld_u16(off)).x;
}

// Four bytes at any byte offset (GGML blocks are 2-byte aligned at best).
fn ld_u32(off: u32) -> u32 {
    let a = off >> 2u;
    let s = (off & 3u) * 8u;
    if (s == 0u) {
        return w[a];
    }
    return (w[a] >> s) | (w[a + 1u] << (32u - s));
}

fn bytes4(q: u32) -> vec4<f32> {
    return vec4<f32>(f32(q & 0xffu), f32((q >> 8u) & 0xffu), f32((q >> 16u) & 0xffu), f32(q >> 24u));
}

fn sbytes4(q: u32) -> vec4<f32> {
    let v = vec4<i32>(i32(q << 24u), i32(q << 16u), i32(q << 8u), i32(q)) >> vec4<u32>(24u);
    return vec4<f32>(v);
}

fn lo4(q: u32) -> vec4<f32> {
    return bytes4(q & 0x0f0f0f0fu);
}

fn hi4(q: u32) -> vec4<f32> {
    return bytes4((q >> 4u) & 0x0f0f0f0fu);
}

// Bits `b`, `b+8`, `b+16`, `b+24` of q (one bit per byte) as 0/1.
fn bit_per_byte(q: u32, b: u32) -> vec4<f32> {
    return bytes4((q >> b) & 0x01010101u);
}

// Four consecutive bits of q from bit b.
fn bits4(q: u32, b: u32) -> vec4<f32> {
    let h = q >> b;
    return vec4<f32>(f32(h & 1u), f32((h >> 1u) & 1u), f32((h >> 2u) & 1u), f32((h >> 3u) & 1u));
}

fn deq4_f32(row: u32, i: u32) -> vec4<f32> {
    let a = (row >> 2u) + i;
    return vec4<f32>(bitcast<f32>(w[a]), bitcast<f32>(w[a + 1u]), bitcast<f32>(w[a + 2u]), bitcast<f32>(w[a + 3u]));
}

fn deq4_f16(row: u32, i: u32) -> vec4<f32> {
    let a = (row >> 2u) + (i >> 1u);
    return vec4<f32>(unpack2x16float(w[a]), unpack2x16float(w[a + 1u]));
}

fn deq4_bf16(row: u32, i: u32) -> vec4<f32> {
    let a = (row >> 2u) + (i >> 1u);
    let p = w[a];
    let q = w[a + 1u];
    return vec4<f32>(bitcast<f32>(p << 16u), bitcast<f32>(p & 0xffff0000u), bitcast<f32>(q << 16u), bitcast<f32>(q & 0xffff0000u));
}

// Q4_0: 18 bytes per 32: d f16, qs[16]; element j is qs[j%16]'s low (j<16) or high nibble, minus 8.
fn deq4_q4_0(row: u32, i: u32) -> vec4<f32> {
    let b = row + (i >> 5u) * 18u;
    let j = i & 31u;
    let q = ld_u32(b + 2u + (j & 15u));
    let v = select(lo4(q), hi4(q), j >= 16u);
    return (v - 8.0) * ld_f16(b);
}

// Q4_1: 20 bytes per 32: d, m (f16), qs[16]; x = q*d + m.
fn deq4_q4_1(row: u32, i: u32) -> vec4<f32> {
    let b = row + (i >> 5u) * 20u;
    let j = i & 31u;
    let q = ld_u32(b + 4u + (j & 15u));
    let v = select(lo4(q), hi4(q), j >= 16u);
    return v * ld_f16(b) + ld_f16(b + 2u);
}

// Q5_0: 22 bytes per 32: d, qh u32 (bit j is element j's fifth bit), qs[16]; minus 16.
fn deq4_q5_0(row: u32, i: u32) -> vec4<f32> {
    let b = row + (i >> 5u) * 22u;
    let j = i & 31u;
    let qh = ld_u32(b + 2u);
    let q = ld_u32(b + 6u + (j & 15u));
    let v = select(lo4(q), hi4(q), j >= 16u) + 16.0 * bits4(qh, j);
    return (v - 16.0) * ld_f16(b);
}

// Q5_1: 24 bytes per 32: d, m, qh u32, qs[16]; x = q*d + m.
fn deq4_q5_1(row: u32, i: u32) -> vec4<f32> {
    let b = row + (i >> 5u) * 24u;
    let j = i & 31u;
    let qh = ld_u32(b + 4u);
    let q = ld_u32(b + 8u + (j & 15u));
    let v = select(lo4(q), hi4(q), j >= 16u) + 16.0 * bits4(qh, j);
    return v * ld_f16(b) + ld_f16(b + 2u);
}

// Q8_0: 34 bytes per 32: d, qs[32] (i8).
fn deq4_q8_0(row: u32, i: u32) -> vec4<f32> {
    let b = row + (i >> 5u) * 34u;
    return sbytes4(ld_u32(b + 2u + (i & 31u))) * ld_f16(b);
}

// K-quant 6-bit scale and min number `j` of the 12 packed bytes at `s` (GGML get_scale_min_k4).
fn scale_min_k4(s: u32, j: u32) -> vec2<f32> {
    if (j < 4u) {
        return vec2<f32>(f32(ld_u8(s + j) & 63u), f32(ld_u8(s + j + 4u) & 63u));
    }
    let sc = (ld_u8(s + j + 4u) & 0xfu) | ((ld_u8(s + j - 4u) >> 6u) << 4u);
    let m = (ld_u8(s + j + 4u) >> 4u) | ((ld_u8(s + j) >> 6u) << 4u);
    return vec2<f32>(f32(sc), f32(m));
}

// Q4_K: 144 bytes per 256: d, dmin, scales[12], qs[128]. Four runs of 64: the
// low nibbles of 32 bytes, then their high nibbles, each run of 32 with its own scale and min.
fn deq4_q4_k(row: u32, i: u32) -> vec4<f32> {
    let b = row + (i >> 8u) * 144u;
    let j = i & 255u;
    let c = j >> 6u;
    let hi = (j & 32u) != 0u;
    let l = j & 31u;
    let q = ld_u32(b + 16u + 32u * c + l);
    let sm = scale_min_k4(b + 4u, 2u * c + select(0u, 1u, hi));
    let v = select(lo4(q), hi4(q), hi);
    return v * (ld_f16(b) * sm.x) - ld_f16(b + 2u) * sm.y;
}

// Q5_K: 176 bytes per 256: d, dmin, scales[12], qh[32], qs[128]; Q4_K plus a
// fifth bit from qh[l], bit 2*run (+1 for the high nibbles).
fn deq4_q5_k(row: u32, i: u32) -> vec4<f32> {
    let b = row + (i >> 8u) * 176u;
    let j = i & 255u;
    let c = j >> 6u;
    let hi = (j & 32u) != 0u;
    let l = j & 31u;
    let q = ld_u32(b + 48u + 32u * c + l);
    let h = bit_per_byte(ld_u32(b + 16u + l), 2u * c + select(0u, 1u, hi));
    let sm = scale_min_k4(b + 4u, 2u * c + select(0u, 1u, hi));
    let v = select(lo4(q), hi4(q), hi) + 16.0 * h;
    return v * (ld_f16(b) * sm.x) - ld_f16(b + 2u) * sm.y;
}

// Q6_K: 210 bytes per 256: ql[128], qh[64], scales[16] (i8), d. Two halves of
// 128, each four runs of 32: low nibbles of ql[l], ql[l+32], then high
// nibbles; two high bits from qh[l] at 2*run; a scale per 16.
fn deq4_q6_k(row: u32, i: u32) -> vec4<f32> {
    let b = row + (i >> 8u) * 210u;
    let j = i & 255u;
    let n = j >> 7u;
    let quarter = (j >> 5u) & 3u;
    let l = j & 31u;
    let q = ld_u32(b + 64u * n + l + (quarter & 1u) * 32u);
    let v = select(lo4(q), hi4(q), quarter >= 2u);
    let qh = (ld_u32(b + 128u + 32u * n + l) >> (2u * quarter)) & 0x03030303u;
    let sc = f32(i32(ld_u8(b + 192u + 8u * n + (l >> 4u) + 2u * quarter) << 24u) >> 24u);
    return (v + 16.0 * bytes4(qh) - 32.0) * (ld_f16(b + 208u) * sc);
}
