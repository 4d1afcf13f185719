//! One conformance suite for every backend: each op against a plain scalar
//! reference written here. `conformance!(name, || open_backend())` generates
//! the tests for one backend; the wgpu and CUDA backends add one line each.

use std::sync::Arc;

use half::f16;
mod support;
use support::{rand_vec, read, upload_f32};

use owl_backends::{AttnBatch, AttnParams, Backend, GgmlType, RopeMode, RopeParams, Tensor, WeightData};

fn quantized_weight(ty: GgmlType, rows: usize, cols: usize, values: &[f32]) -> (WeightData, Vec<f32>) {
    let rb = ty.row_bytes(cols).unwrap();
    let mut bytes = vec![0u8; rb * rows];
    if ty == GgmlType::F32 {
        bytes.copy_from_slice(bytemuck::cast_slice(values));
    } else {
        for (r, row) in values.chunks(cols).enumerate() {
            owl_quant::quantize(ty, row, &mut bytes[r * rb..(r + 1) * rb]).unwrap();
        }
    }
    let mut deq = vec![0f32; rows * cols];
    owl_quant::dequantize(ty, &bytes, &mut deq).unwrap();
    let len = bytes.len();
    (WeightData::new("w", ty, rows, cols, Arc::new(bytes), 0, len).unwrap(), deq)
}

/// The CPU backend follows llama.cpp's CPU rounding (f16 steps in attention
/// and GeGLU) exactly; other backends may compute those steps in f32 and are
/// checked within that rounding.
fn is_cpu(be: &dyn Backend) -> bool {
    be.name().starts_with("cpu")
}

fn max_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

pub fn check_matmul(be: &mut dyn Backend) {
    // Weight types the quantizer can write; activations go through the backend's own quantization.
    for (ty, budget) in [(GgmlType::F32, 1e-4), (GgmlType::F16, 2e-2), (GgmlType::Q8_0, 0.02), (GgmlType::Q4_0, 0.02), (GgmlType::Q4_1, 0.02), (GgmlType::Q5_0, 0.02), (GgmlType::Q5_1, 0.02)] {
        let (n, m, k) = (3, 7, 256);
        let (w, wd) = quantized_weight(ty, m, k, &rand_vec(m * k, 1));
        let x = rand_vec(n * k, 2);
        let wt = be.upload_weight(w).unwrap();
        let xt = upload_f32(be, n, k, &x);
        let out = be.alloc(n, m).unwrap();
        be.matmul(&xt, &wt, &out).unwrap();
        let got = read(be, &out);
        let want: Vec<f32> = (0..n * m).map(|i| (0..k).map(|j| x[(i / m) * k + j] * wd[(i % m) * k + j]).sum()).collect();
        // GGML's dot budget is per element of the dot: scale by k.
        let err = max_err(&got, &want) / k as f32;
        assert!(err < budget, "{}: matmul error {err} per element", ty.name());
    }
}

/// `matmul_many` (q/k/v and gate/up in one call) gives each output exactly what
/// its own `matmul` gives, for decode (1 row) and prefill (5 rows), including
/// weights of different types that share an activation type (Q5_0 + Q8_0).
pub fn check_matmul_many(be: &mut dyn Backend) {
    for n in [1, 5] {
        let k = 256;
        let specs = [(GgmlType::Q5_0, 40), (GgmlType::Q5_0, 8), (GgmlType::Q8_0, 8)];
        let ws: Vec<Tensor> = specs
            .iter()
            .enumerate()
            .map(|(i, &(ty, m))| be.upload_weight(quantized_weight(ty, m, k, &rand_vec(m * k, 10 + i as u64)).0).unwrap())
            .collect();
        let xt = upload_f32(be, n, k, &rand_vec(n * k, 3));
        let outs: Vec<Tensor> = specs.iter().map(|&(_, m)| be.alloc(n, m).unwrap()).collect();
        let pairs: Vec<(&Tensor, &Tensor)> = ws.iter().zip(&outs).collect();
        be.matmul_many(&xt, &pairs).unwrap();
        let got: Vec<Vec<f32>> = outs.iter().map(|o| read(be, o)).collect();
        for (i, (w, &(_, m))) in ws.iter().zip(&specs).enumerate() {
            let solo = be.alloc(n, m).unwrap();
            be.matmul(&xt, w, &solo).unwrap();
            assert_eq!(read(be, &solo), got[i], "matmul_many output {i} (n = {n}) differs from its own matmul");
        }
    }
}

/// `matmul_id` (mixture of experts) gives each row exactly what a `matmul` of that row
/// alone gives with its weight: a decode step (one token, several experts), a prefill
/// batch whose rows share experts, experts nobody uses, rows of x used by no id, and the
/// K-quant the CPU repacks; bad ids and shapes are errors. `add_rows_scaled` adds in
/// order, with the host's two roundings.
pub fn check_matmul_id(be: &mut dyn Backend) {
    let k = 256;
    for (ty, m) in [(GgmlType::Q8_0, 40), (GgmlType::Q4_0, 24), (GgmlType::Q4_K, 16)] {
        let ws: Vec<Tensor> = (0..5u64).map(|e| be.upload_weight(quantized_weight(ty, m, k, &rand_vec(m * k, 20 + e)).0).unwrap()).collect();
        let n_x = 7;
        let xt = upload_f32(be, n_x, k, &rand_vec(n_x * k, 4));
        let decode: Vec<(u32, u32)> = vec![(3, 4), (3, 0), (3, 2)];
        let prefill: Vec<(u32, u32)> = (0..6u32).flat_map(|r| [(r, (r * 3) % 4), (r, (r + 1) % 4)]).chain([(0, 0), (5, 0)]).collect();
        for ids in [decode, prefill] {
            let out = be.alloc(ids.len(), m).unwrap();
            be.matmul_id(&xt, &ws, &ids, &out).unwrap();
            let got = read(be, &out);
            let parts = be.alloc(ids.len(), m).unwrap();
            owl_backends::matmul_id_by_parts(be, &xt, &ws, &ids, &parts).unwrap();
            assert_eq!(read(be, &parts), got, "{}: matmul_id differs from its default (matmul_id_by_parts)", ty.name());
            for (i, &(r, e)) in ids.iter().enumerate() {
                let xr = be.alloc(1, k).unwrap();
                be.get_rows(&xt, &[r], &xr).unwrap();
                let solo = be.alloc(1, m).unwrap();
                be.matmul(&xr, &ws[e as usize], &solo).unwrap();
                assert_eq!(read(be, &solo), &got[i * m..(i + 1) * m], "{}: matmul_id row {i} (x row {r}, expert {e}) differs from its own matmul", ty.name());
            }
        }
        let out = be.alloc(1, m).unwrap();
        assert!(be.matmul_id(&xt, &ws, &[(7, 0)], &out).is_err(), "x row past the end");
        assert!(be.matmul_id(&xt, &ws, &[(0, 5)], &out).is_err(), "expert past the end");
        assert!(be.matmul_id(&xt, &ws, &[(0, 0), (1, 1)], &out).is_err(), "out too short");
    }
    let (rows, cols) = (3, 64);
    let base = rand_vec(rows * cols, 5);
    let y = rand_vec(4 * cols, 6);
    let (idx, sc) = ([2u32, 0, 2, 1], [0.5f32, -1.25, 0.75, 3.0]);
    let mut want = base.clone();
    for ((&r, &s), src) in idx.iter().zip(&sc).zip(y.chunks(cols)) {
        for (d, &v) in want[r as usize * cols..][..cols].iter_mut().zip(src) {
            *d += s * v;
        }
    }
    let (ot, yt) = (upload_f32(be, rows, cols, &base), upload_f32(be, 4, cols, &y));
    be.add_rows_scaled(&ot, &yt, &idx, &sc).unwrap();
    assert_eq!(read(be, &ot), want, "add_rows_scaled");
    assert!(be.add_rows_scaled(&ot, &yt, &[0, 1, 2, 3], &sc).is_err(), "row past the end");
}

pub fn check_embed_norm_glu_add(be: &mut dyn Backend) {
    let (rows, cols) = (5, 64);
    let table = rand_vec(rows * cols, 3);
    let (w, wd) = quantized_weight(GgmlType::Q8_0, rows, cols, &table);
    let wt = be.upload_weight(w).unwrap();
    let out = be.alloc(3, cols).unwrap();
    be.embed(&wt, &[4, 0, 4], 2.0, &out).unwrap();
    let got = read(be, &out);
    for (i, &t) in [4usize, 0, 4].iter().enumerate() {
        assert_eq!(&got[i * cols..(i + 1) * cols], &wd[t * cols..(t + 1) * cols].iter().map(|v| v * 2.0).collect::<Vec<_>>()[..]);
    }
    let one = be.alloc(1, cols).unwrap();
    assert!(be.embed(&wt, &[5], 1.0, &one).is_err(), "token outside the table");

    // RMS norm over the row and over heads of 16.
    let x = rand_vec(3 * cols, 4);
    for group in [cols, 16] {
        let nw = rand_vec(group, 5);
        let nwt = be.upload_weight(WeightData::from_f32("n", 1, group, &nw).unwrap()).unwrap();
        let xt = upload_f32(be, 3, cols, &x);
        let o = be.alloc(3, cols).unwrap();
        be.rms_norm(&xt, &nwt, 1e-5, &o).unwrap();
        let want: Vec<f32> = x
            .chunks(group)
            .flat_map(|g| {
                let s = 1.0 / (g.iter().map(|v| v * v).sum::<f32>() / group as f32 + 1e-5).sqrt();
                g.iter().zip(&nw).map(move |(v, w)| v * s * w).collect::<Vec<_>>()
            })
            .collect();
        assert!(max_err(&read(be, &o), &want) < 1e-5, "rms_norm group {group}");
    }

    // SwiGLU, GeGLU, add, scale, softcap, bias, get_rows.
    let g = rand_vec(2 * cols, 6).iter().map(|v| v * 4.0).collect::<Vec<_>>();
    let u = rand_vec(2 * cols, 7);
    let gt = upload_f32(be, 2, cols, &g);
    let ut = upload_f32(be, 2, cols, &u);
    let o = be.alloc(2, cols).unwrap();
    be.swiglu(&gt, &ut, &o).unwrap();
    let want: Vec<f32> = g.iter().zip(&u).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect();
    assert!(max_err(&read(be, &o), &want) < 1e-5, "swiglu");
    be.geglu(&gt, &ut, &o).unwrap();
    // GeGLU's definition (ggml's CPU table): gelu_tanh of f16(x), rounded to f16;
    // 0 at x <= -10, x at x >= 10. The CPU follows it to the bit; a backend that
    // computes gelu in f32 (wgpu today) is within the f16 rounding of it.
    let h = |x: f32| f16::from_f32(x).to_f32();
    let gelu = |x: f32| 0.5 * x * (1.0 + (0.797_884_6 * x * (1.0 + 0.044715 * x * x)).tanh());
    let want: Vec<f32> = g.iter().zip(&u).map(|(&g, u)| if g <= -10.0 { 0.0 } else if g >= 10.0 { g * u } else { h(gelu(h(g))) * u }).collect();
    let tol = if is_cpu(be) { 1e-6 } else { 4e-3 };
    assert!(max_err(&read(be, &o), &want) < tol, "geglu");
    be.add(&gt, &ut).unwrap();
    be.scale(&gt, 0.5).unwrap();
    let want: Vec<f32> = g.iter().zip(&u).map(|(g, u)| (g + u) * 0.5).collect();
    assert!(max_err(&read(be, &gt), &want) < 1e-6, "add, scale");
    be.softcap(&gt, 1.5).unwrap();
    let want: Vec<f32> = want.iter().map(|v| 1.5 * (v / 1.5).tanh()).collect();
    assert!(max_err(&read(be, &gt), &want) < 1e-6, "softcap");
    let b = rand_vec(cols, 8);
    let bt = be.upload_weight(WeightData::from_f32("b", 1, cols, &b).unwrap()).unwrap();
    be.add_bias(&ut, &bt).unwrap();
    let want: Vec<f32> = u.iter().enumerate().map(|(i, v)| v + b[i % cols]).collect();
    assert!(max_err(&read(be, &ut), &want) < 1e-6, "add_bias");
    let sel = be.alloc(1, cols).unwrap();
    be.get_rows(&ut, &[1], &sel).unwrap();
    assert_eq!(read(be, &sel), want[cols..].to_vec(), "get_rows");
}

fn rope_ref(x: &mut [f32], cols: usize, pos: &[u32], p: &RopeParams) {
    for (row, &ps) in x.chunks_mut(cols).zip(pos) {
        for head in row.chunks_mut(p.head_dim) {
            for i in 0..p.n_rot / 2 {
                let theta = ps as f64 * (p.base as f64).powf(-2.0 * i as f64 / p.n_rot as f64) * p.freq_scale as f64;
                let (a, b) = match p.mode {
                    RopeMode::Normal => (2 * i, 2 * i + 1),
                    RopeMode::Neox => (i, i + p.n_rot / 2),
                };
                let (x0, x1) = (head[a] as f64, head[b] as f64);
                head[a] = (x0 * theta.cos() - x1 * theta.sin()) as f32;
                head[b] = (x0 * theta.sin() + x1 * theta.cos()) as f32;
            }
        }
    }
}

pub fn check_rope(be: &mut dyn Backend) {
    for mode in [RopeMode::Normal, RopeMode::Neox] {
        for n_rot in [32, 16] {
            let p = RopeParams { head_dim: 32, n_rot, base: 10000.0, freq_scale: 1.0, mode };
            let x = rand_vec(3 * 64, 9);
            let pos = [0u32, 7, 300];
            let xt = upload_f32(be, 3, 64, &x);
            be.rope(&xt, &pos, &p).unwrap();
            let mut want = x.clone();
            rope_ref(&mut want, 64, &pos, &p);
            let e = max_err(&read(be, &xt), &want);
            assert!(e < 2e-3, "rope {mode:?} n_rot {n_rot}: {e}");
        }
    }
}

/// Attention over cached cells, with GQA, a sliding window and a softcap, two sequences.
pub fn check_attention(be: &mut dyn Backend) {
    let (n_head, n_head_kv, hd) = (4, 2, 16);
    let n_cells = 64;
    let kc = be.alloc_kv(n_cells, n_head_kv * hd).unwrap();
    let vc = be.alloc_kv(n_cells, n_head_kv * hd).unwrap();
    // Sequence 0: 10 positions in cells 20..30; sequence 1: 4 positions in cells 50..54.
    let seq0: Vec<u32> = (20..30).collect();
    let seq1: Vec<u32> = (50..54).collect();
    let all: Vec<u32> = seq0.iter().chain(&seq1).copied().collect();
    let k = rand_vec(all.len() * n_head_kv * hd, 10);
    let v = rand_vec(all.len() * n_head_kv * hd, 11);
    let kt = upload_f32(be, all.len(), n_head_kv * hd, &k);
    let vt = upload_f32(be, all.len(), n_head_kv * hd, &v);
    be.kv_store(&kc, &vc, &kt, &vt, &all).unwrap();
    let rows = [(0u32, 9u32), (0, 4), (1, 3)];
    let q = rand_vec(rows.len() * n_head * hd, 12);
    let qt = upload_f32(be, rows.len(), n_head * hd, &q);
    let cells: [&[u32]; 2] = [&seq0, &seq1];
    let kv_row = |s: u32, p: u32| if s == 0 { p as usize } else { seq0.len() + p as usize };
    for (window, softcap) in [(None, None), (Some(3), None), (None, Some(0.5))] {
        let p = AttnParams { n_head, n_head_kv, head_dim: hd, scale: 0.25, softcap, window };
        let out = be.alloc(rows.len(), n_head * hd).unwrap();
        be.attention(&qt, &kc, &vc, &AttnBatch { seq_cells: &cells, rows: &rows }, &p, &out).unwrap();
        let got = read(be, &out);
        let f = |x: f32| f16::from_f32(x).to_f32();
        // The definition (llama.cpp's CPU flash attention): q rounded to f16, f16
        // dot, scale (softcap: cap*tanh(s*scale/cap)), online softmax in cell
        // order with an f16 accumulator rounded after every step.
        let tol = if is_cpu(be) { 1e-3 } else { 5e-3 };
        for (r, &(s, pos)) in rows.iter().enumerate() {
            for h in 0..n_head {
                let g = h / (n_head / n_head_kv);
                let start = window.map_or(0, |w: usize| (pos as usize + 1).saturating_sub(w));
                let qh: Vec<f32> = q[r * n_head * hd + h * hd..][..hd].iter().map(|&x| f(x)).collect();
                let (mut m, mut sum) = (f32::NEG_INFINITY, 0f32);
                let mut acc = vec![0f32; hd];
                for j in start..=pos as usize {
                    let kr = kv_row(s, j as u32) * n_head_kv * hd + g * hd;
                    let d = (0..hd).map(|i| qh[i] as f64 * f(k[kr + i]) as f64).sum::<f64>() as f32;
                    let sc = softcap.map_or(d * 0.25, |c: f32| c * (d * (0.25 / c)).tanh());
                    let (ms, vs) = if sc > m { let ms = (m - sc).exp(); m = sc; (ms, 1.0) } else { (1.0, (sc - m).exp()) };
                    for (i, a) in acc.iter_mut().enumerate() {
                        *a = f(*a * ms);
                        *a = f(f(v[kr + i]).mul_add(vs, *a));
                    }
                    sum = sum.mul_add(ms, vs);
                }
                for i in 0..hd {
                    let want = acc[i] / sum;
                    let gotv = got[r * n_head * hd + h * hd + i];
                    assert!((gotv - want).abs() < tol, "attention window {window:?} softcap {softcap:?} row {r} head {h}: {gotv} vs {want}");
                }
            }
        }
    }
    // A position beyond the sequence's cells is an error, not a panic.
    let out = be.alloc(1, n_head * hd).unwrap();
    let q1 = upload_f32(be, 1, n_head * hd, &q[..n_head * hd]);
    let p = AttnParams { n_head, n_head_kv, head_dim: hd, scale: 0.25, softcap: None, window: None };
    assert!(be.attention(&q1, &kc, &vc, &AttnBatch { seq_cells: &cells, rows: &[(1, 9)] }, &p, &out).is_err());
}

pub fn check_shape_errors(be: &mut dyn Backend) {
    let a = be.alloc(2, 8).unwrap();
    let b = be.alloc(2, 16).unwrap();
    assert!(be.add(&a, &b).is_err());
    assert!(be.swiglu(&a, &b, &a).is_err());
    assert!(be.write(&a, &[1.0; 3]).is_err());
    let (w, _) = quantized_weight(GgmlType::Q8_0, 4, 64, &rand_vec(256, 1));
    let wt = be.upload_weight(w).unwrap();
    assert!(be.matmul(&a, &wt, &b).is_err());
    assert!(WeightData::new("bad", GgmlType::Q4_0, 2, 33, Arc::new(vec![0u8; 100]), 0, 100).is_err(), "row not a block multiple");
    assert!(WeightData::new("bad", GgmlType::Q4_0, 2, 32, Arc::new(vec![0u8; 30]), 0, 36).is_err(), "range past the bytes");
}

macro_rules! conformance {
    ($name:ident, $open:expr) => {
        mod $name {
            use super::*;
            fn be() -> Box<dyn Backend> {
                $open
            }
            #[test]
            fn matmul() {
                check_matmul(&mut *be())
            }
            #[test]
            fn matmul_many() {
                check_matmul_many(&mut *be())
            }
            #[test]
            fn matmul_id() {
                check_matmul_id(&mut *be())
            }
            #[test]
            fn embed_norm_glu_add() {
                check_embed_norm_glu_add(&mut *be())
            }
            #[test]
            fn rope() {
                check_rope(&mut *be())
            }
            #[test]
            fn attention() {
                check_attention(&mut *be())
            }
            #[test]
            fn shape_errors() {
                check_shape_errors(&mut *be())
            }
        }
    };
}

conformance!(cpu, owl_backends::open("cpu", Some(2)).unwrap());
// No adapter is a failure, not a skip: scripts/test installs lavapipe so this runs everywhere.
#[cfg(feature = "wgpu")]
conformance!(wgpu, owl_backends::open("wgpu", None).unwrap_or_else(|e| panic!("the wgpu conformance tests need an adapter: {e}")));

/// The CPU backend repacks K-quant weights at their first matmul (where its
/// kernel table has a packed tile): every output row equals the same row run
/// alone (decode) bit for bit, and stays within the dot budget of the
/// dequantized reference. 13 rows leave a partial packed group; 150 rows make
/// the matmul split a weight into tasks that start mid-weight.
#[test]
fn cpu_kquant_rows_do_not_depend_on_the_batch() {
    let mut be = owl_backends::open("cpu", Some(2)).unwrap();
    let be = &mut *be;
    for (m, k) in [(13, 256), (150, 512)] {
        // owl-quant does not write Q4_K: random blocks with small finite scales.
        let mut bytes = vec![0u8; GgmlType::Q4_K.row_bytes(k).unwrap() * m];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for (i, b) in bytes.iter_mut().enumerate() {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            *b = (state >> 33) as u8;
            if i % 144 < 4 {
                // d, dmin: f16 in [2^-10, 2^-6).
                *b = if i % 2 == 0 { *b } else { 0x14 | (*b & 0x07) };
            }
        }
        let mut wd = vec![0f32; m * k];
        owl_quant::dequantize(GgmlType::Q4_K, &bytes, &mut wd).unwrap();
        let len = bytes.len();
        let w = WeightData::new("w", GgmlType::Q4_K, m, k, Arc::new(bytes), 0, len).unwrap();
        let wt = be.upload_weight(w).unwrap();
        let n = 9;
        let x = rand_vec(n * k, 8);
        let xt = upload_f32(be, n, k, &x);
        let out = be.alloc(n, m).unwrap();
        be.matmul(&xt, &wt, &out).unwrap();
        let all = read(be, &out);
        let want: Vec<f32> = (0..n * m).map(|i| (0..k).map(|j| x[(i / m) * k + j] * wd[(i % m) * k + j]).sum()).collect();
        let err = max_err(&all, &want) / k as f32;
        assert!(want.iter().any(|v| v.abs() > 1.0), "Q4_K {m}x{k}: a reference of near zeros checks nothing");
        assert!(err < 0.02, "Q4_K {m}x{k}: matmul error {err} per element");
        for i in 0..n {
            let xi = upload_f32(be, 1, k, &x[i * k..][..k]);
            let oi = be.alloc(1, m).unwrap();
            be.matmul(&xi, &wt, &oi).unwrap();
            let solo = read(be, &oi);
            for (j, (s, b)) in solo.iter().zip(&all[i * m..][..m]).enumerate() {
                assert_eq!(s.to_bits(), b.to_bits(), "Q4_K {m}x{k} row {i} col {j}: solo {s} vs batched {b}");
            }
        }
    }
}
