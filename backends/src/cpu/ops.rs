//! The CPU ops behind `CpuBackend`. Plain loops where the time is small;
//! the matmul quantizes activations once per row and runs the weight dots
//! through the runtime-selected kernels.

use half::f16;
use half::slice::HalfFloatSliceExt;
use owl_quant::GgmlType;
use rayon::prelude::*;

use crate::{AttnBatch, AttnParams, Result, RopeMode, RopeParams, WeightData};

pub fn kernel_name() -> &'static str {
    super::kernels::kernels().name
}

/// Raw pointer that may cross threads; each task writes disjoint elements.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// A whole (small) weight as f32: norm weights and biases.
pub fn weight_f32(w: &WeightData) -> Result<Vec<f32>> {
    let mut v = vec![0f32; w.rows * w.cols];
    owl_quant::dequantize(w.ty, w.bytes(), &mut v)?;
    Ok(v)
}

pub fn embed(w: &WeightData, tokens: &[u32], scale: f32, out: &mut [f32]) -> Result<()> {
    let rb = w.row_bytes();
    for (i, &t) in tokens.iter().enumerate() {
        let t = t as usize;
        if t >= w.rows {
            return Err(crate::shape_err("embed", format!("token {t} outside the table of {}", w.rows)));
        }
        let dst = &mut out[i * w.cols..][..w.cols];
        owl_quant::dequantize(w.ty, &w.bytes()[t * rb..][..rb], dst)?;
        if scale != 1.0 {
            dst.iter_mut().for_each(|v| *v *= scale);
        }
    }
    Ok(())
}

/// out [n, m] = x [n, k] · wᵀ, w [m, k] in its GGML type.
pub fn matmul(x: &[f32], n: usize, w: &WeightData, out: &mut [f32], qbuf: &mut Vec<u8>) -> Result<()> {
    let (m, k) = (w.rows, w.cols);
    let kern = super::kernels::kernels();
    let vdt = w.ty.vec_dot_type();
    let a_row = vdt.row_bytes(k).ok_or_else(|| crate::shape_err("matmul", format!("row of {k} for {}", vdt.name())))?;
    // 1. Quantize each activation row once into the type the weight's dot pairs with.
    qbuf.clear();
    qbuf.resize(a_row * n, 0);
    qbuf.par_chunks_mut(a_row).zip(x.par_chunks(k)).for_each(|(q, xr)| kern.quantize_act(vdt, xr, q));
    let qa: &[u8] = qbuf;
    // 2. Dot every weight row with every activation row; tasks own disjoint weight rows.
    let w_row = w.row_bytes();
    let wb = w.bytes();
    let optr = SendPtr(out.as_mut_ptr());
    // Decode: small runs of weight rows so both threads stay busy. Prefill: runs
    // that stay in L1 while every group of four activation rows passes over them.
    let chunk = if n == 1 { 16.max(m / (rayon::current_num_threads() * 64).max(1)).min(256) } else { 16 };
    (0..m.div_ceil(chunk)).into_par_iter().for_each(|c| {
        let p = optr;
        let j0 = c * chunk;
        let j1 = (j0 + chunk).min(m);
        // SAFETY: this task writes out[r*m + j] for j in j0..j1 only, all inside
        // out's n*m elements; tasks own disjoint column ranges.
        unsafe { kern.dot_tile(w.ty, &wb[j0 * w_row..j1 * w_row], qa, k, p.0.add(j0), m) };
    });
    Ok(())
}

/// RMS norm over each group of w.len() elements, times w.
pub fn rms_norm_inplace(x: &mut [f32], w: &[f32], eps: f32) {
    for g in x.chunks_exact_mut(w.len()) {
        let sum: f64 = g.iter().map(|&v| (v as f64) * (v as f64)).sum();
        let mean = (sum / g.len() as f64) as f32;
        let s = 1.0 / (mean + eps).sqrt();
        for (v, &wi) in g.iter_mut().zip(w) {
            *v = *v * s * wi;
        }
    }
}

/// Rotary embedding in place, as ggml_rope_ext computes it (no YaRN).
pub fn rope(x: &mut [f32], cols: usize, pos: &[u32], p: &RopeParams) {
    let theta_scale = p.base.powf(-2.0 / p.n_rot as f32);
    let half = p.n_rot / 2;
    let mut cs = vec![(0f32, 0f32); half];
    for (row, &ps) in x.chunks_exact_mut(cols).zip(pos) {
        let mut theta = ps as f32;
        for c in cs.iter_mut() {
            let t = theta * p.freq_scale;
            *c = (t.cos(), t.sin());
            theta *= theta_scale;
        }
        for head in row.chunks_exact_mut(p.head_dim) {
            for (i, &(cos, sin)) in cs.iter().enumerate() {
                let (a, b) = match p.mode {
                    RopeMode::Normal => (2 * i, 2 * i + 1),
                    RopeMode::Neox => (i, i + half),
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * cos - x1 * sin;
                head[b] = x0 * sin + x1 * cos;
            }
        }
    }
}

/// Causal grouped-query attention over the f16 cache; one task per (row, head).
pub fn attention(q: &[f32], kc: &[f16], vc: &[f16], batch: &AttnBatch<'_>, p: &AttnParams, out: &mut [f32]) {
    let hd = p.head_dim;
    let q_cols = p.n_head * hd;
    let kv_cols = p.n_head_kv * hd;
    let group = p.n_head / p.n_head_kv;
    let optr = SendPtr(out.as_mut_ptr());
    (0..batch.rows.len() * p.n_head).into_par_iter().for_each_init(
        || (Vec::<f32>::new(), vec![0f32; hd], vec![0f32; hd], vec![0f32; hd]),
        |(scores, qh, acc, tmp), task| {
            let o = optr;
            let (r, h) = (task / p.n_head, task % p.n_head);
            let (s, pos) = batch.rows[r];
            let cells = batch.seq_cells[s as usize];
            let pos = pos as usize;
            let start = match p.window {
                Some(w) => (pos + 1).saturating_sub(w),
                None => 0,
            };
            let kvh = h / group;
            qh.copy_from_slice(&q[r * q_cols + h * hd..][..hd]);
            scores.clear();
            let mut max = f32::NEG_INFINITY;
            for &cell in &cells[start..=pos] {
                // Bulk f16 -> f32 (F16C where the CPU has it), then an f32 dot.
                kc[cell as usize * kv_cols + kvh * hd..][..hd].convert_to_f32_slice(tmp);
                let d = dot_f32(qh, tmp);
                let mut sc = d * p.scale;
                if let Some(cap) = p.softcap {
                    sc = cap * (sc / cap).tanh();
                }
                max = max.max(sc);
                scores.push(sc);
            }
            let mut sum = 0f32;
            for sc in scores.iter_mut() {
                *sc = (*sc - max).exp();
                sum += *sc;
            }
            acc.iter_mut().for_each(|a| *a = 0.0);
            for (&cell, &w) in cells[start..=pos].iter().zip(scores.iter()) {
                vc[cell as usize * kv_cols + kvh * hd..][..hd].convert_to_f32_slice(tmp);
                for (a, b) in acc.iter_mut().zip(tmp.iter()) {
                    *a += w * b;
                }
            }
            let inv = 1.0 / sum;
            for (i, a) in acc.iter().enumerate() {
                // SAFETY: each (row, head) task writes its own head_dim slice.
                unsafe { *o.0.add(r * q_cols + h * hd + i) = a * inv };
            }
        },
    );
}

/// f32 dot with 8 independent accumulators (so the compiler can vectorise it).
#[inline]
fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + 0.044715 * x * x)).tanh())
}

pub fn glu(gate: &[f32], up: &[f32], out: &mut [f32], act: fn(f32) -> f32) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = act(g) * u;
    }
}

#[allow(dead_code)]
pub(crate) fn is_float(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
}
