//! Helpers shared by the backend test binaries (conformance.rs, wgpu.rs).
#![allow(dead_code)]

use owl_backends::{Backend, Tensor};

/// Deterministic pseudo-random values in [-1, 1).
pub fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A fresh [rows, cols] activation holding `data`.
pub fn upload_f32(be: &mut dyn Backend, rows: usize, cols: usize, data: &[f32]) -> Tensor {
    let t = be.alloc(rows, cols).unwrap();
    be.write(&t, data).unwrap();
    t
}

/// All of a tensor's values.
pub fn read(be: &mut dyn Backend, t: &Tensor) -> Vec<f32> {
    let mut v = vec![0f32; t.rows * t.cols];
    be.read(t, &mut v).unwrap();
    v
}
