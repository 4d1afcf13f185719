//! wgpu-only checks beyond the shared conformance suite: every weight type the
//! kernels decode (K-quants from random blocks, since the quantizer does not
//! write them), both matmul paths (matvec for decode, tiled for prefill),
//! weights split across buffers, and types converted at load. Runs on Mesa's
//! lavapipe where no GPU is; with no adapter at all it fails, never skips.
#![cfg(feature = "wgpu")]

use std::sync::Arc;

use half::f16;
mod support;
use support::{rand_vec, read, upload_f32 as upload};

use owl_backends::wgpu::WgpuBackend;
use owl_backends::{Backend, GgmlType, WeightData};

fn rand_bytes(n: usize, seed: u64) -> Vec<u8> {
    rand_vec(n, seed).iter().map(|v| ((v + 1.0) * 127.9) as u8).collect()
}

/// Byte offsets of the f16 scale fields in one block, and the range of values to put there.
fn scale_fields(ty: GgmlType) -> &'static [usize] {
    use GgmlType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 => &[0],
        Q4_1 | Q5_1 | Q4_K | Q5_K => &[0, 2],
        Q6_K => &[208],
        Q2_K => &[80, 82],
        Q3_K => &[108],
        _ => &[],
    }
}

/// A weight of `ty` from random blocks (or random values for the float types), and its reference dequantization.
fn random_weight(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> (WeightData, Vec<f32>) {
    let rb = ty.row_bytes(cols).unwrap();
    let mut bytes = vec![0u8; rb * rows];
    if ty == GgmlType::F32 {
        bytes.copy_from_slice(bytemuck::cast_slice(&rand_vec(rows * cols, seed)));
    } else if matches!(ty, GgmlType::F16 | GgmlType::BF16) {
        owl_quant::quantize(ty, &rand_vec(rows * cols, seed), &mut bytes).unwrap();
    } else {
        bytes = rand_bytes(rb * rows, seed);
        let scales = rand_vec(bytes.len() / ty.block_bytes() * 2, seed + 1);
        for (b, block) in bytes.chunks_mut(ty.block_bytes()).enumerate() {
            for (i, &off) in scale_fields(ty).iter().enumerate() {
                let v = 0.002 + 0.01 * scales[2 * b + i].abs();
                block[off..off + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
            }
        }
    }
    let mut deq = vec![0f32; rows * cols];
    owl_quant::dequantize(ty, &bytes, &mut deq).unwrap();
    assert!(deq.iter().all(|v| v.is_finite()));
    let len = bytes.len();
    (WeightData::new(format!("w {}", ty.name()), ty, rows, cols, Arc::new(bytes), 0, len).unwrap(), deq)
}

fn open() -> WgpuBackend {
    WgpuBackend::new(None).unwrap_or_else(|e| panic!("the wgpu tests need an adapter (scripts/test installs lavapipe): {e}"))
}

/// out = x · wᵀ in f64 over the reference dequantization.
fn matmul_ref(x: &[f32], w: &[f32], n: usize, m: usize, k: usize) -> Vec<f32> {
    (0..n * m).map(|i| (0..k).map(|j| x[(i / m) * k + j] as f64 * w[(i % m) * k + j] as f64).sum::<f64>() as f32).collect()
}

/// Largest error relative to the output's scale (the largest |value| of the reference).
fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(1e-6f32, |a, v| a.max(v.abs()));
    got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0.0, f32::max) / scale
}

const KERNEL_TYPES: [GgmlType; 11] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// Every kernel type, through the matvec (1 and 5 rows) and the tiled matmul (40 rows, edges not
/// multiples of the tile), and through embed. The weights are decoded exactly, so the only error is
/// f32 accumulation order.
#[test]
fn matmul_and_embed_every_type() {
    let mut be = open();
    let (m, k) = (70, 512);
    for (s, ty) in KERNEL_TYPES.into_iter().enumerate() {
        let (w, wd) = random_weight(ty, m, k, 100 + s as u64);
        let wt = be.upload_weight(w).unwrap();
        for n in [1, 5, 40] {
            let x = rand_vec(n * k, 7 + n as u64);
            let xt = upload(&mut be, n, k, &x);
            let out = be.alloc(n, m).unwrap();
            be.matmul(&xt, &wt, &out).unwrap();
            let e = rel_err(&read(&mut be, &out), &matmul_ref(&x, &wd, n, m, k));
            assert!(e < 1e-5, "{} matmul n={n}: relative error {e}", ty.name());
        }
        let toks = [3u32, 69, 0, 3];
        let out = be.alloc(toks.len(), k).unwrap();
        be.embed(&wt, &toks, 0.5, &out).unwrap();
        let want: Vec<f32> = toks.iter().flat_map(|&t| wd[t as usize * k..][..k].iter().map(|v| v * 0.5)).collect();
        assert_eq!(read(&mut be, &out), want, "{} embed", ty.name());
        be.reset_scratch();
    }
}

/// A weight over the binding limit is split by rows; results equal the unsplit weight's.
#[test]
fn weights_split_across_buffers() {
    let (m, k) = (300, 256);
    for ty in [GgmlType::Q4_K, GgmlType::Q4_1, GgmlType::F16] {
        let (w, wd) = random_weight(ty, m, k, 42);
        // A limit of 16 rows and a bit forces 19 chunks, none a multiple of the 32-row tile.
        let limit = (ty.row_bytes(k).unwrap() * 16 + 64) as u64;
        let mut be = WgpuBackend::with_binding_limit(None, limit).unwrap();
        let wt = be.upload_weight(w).unwrap();
        assert!(be.chunks(&wt) > 1, "{}: weight was not split", ty.name());
        for n in [1, 33] {
            let x = rand_vec(n * k, 5);
            let xt = upload(&mut be, n, k, &x);
            let out = be.alloc(n, m).unwrap();
            be.matmul(&xt, &wt, &out).unwrap();
            let e = rel_err(&read(&mut be, &out), &matmul_ref(&x, &wd, n, m, k));
            assert!(e < 1e-5, "{} split matmul n={n}: {e}", ty.name());
        }
        let toks = [0u32, 17, 299, 150, 16];
        let out = be.alloc(toks.len(), k).unwrap();
        be.embed(&wt, &toks, 1.0, &out).unwrap();
        let want: Vec<f32> = toks.iter().flat_map(|&t| wd[t as usize * k..][..k].to_vec()).collect();
        assert_eq!(read(&mut be, &out), want, "{} split embed", ty.name());
    }
}

/// Types without kernels are converted to F16 at load and still compute.
#[test]
fn other_types_are_converted() {
    let mut be = open();
    let (m, k) = (8, 256);
    for ty in [GgmlType::Q2_K, GgmlType::Q3_K] {
        let (w, wd) = random_weight(ty, m, k, 9);
        let wt = be.upload_weight(w).unwrap();
        let x = rand_vec(k, 3);
        let xt = upload(&mut be, 1, k, &x);
        let out = be.alloc(1, m).unwrap();
        be.matmul(&xt, &wt, &out).unwrap();
        let e = rel_err(&read(&mut be, &out), &matmul_ref(&x, &wd, 1, m, k));
        assert!(e < 2e-3, "{} converted matmul: {e}", ty.name());
    }
}

#[test]
fn adapters_are_listed() {
    let list = owl_backends::wgpu::adapters();
    assert!(!list.is_empty(), "no wgpu adapter (scripts/test installs lavapipe)");
    assert!(list.iter().all(|a| !a.name.is_empty() && a.max_storage_binding > 0));
    let be = open();
    assert!(be.name().starts_with("wgpu ("), "{}", be.name());
}

/// Activations over the binding limit are an error, not a panic or a device fault.
#[test]
fn oversized_scratch_is_an_error() {
    let mut be = open();
    let e = be.alloc(1 << 16, 1 << 14).unwrap_err();
    assert!(e.to_string().contains("binding limit"), "{e}");
}
