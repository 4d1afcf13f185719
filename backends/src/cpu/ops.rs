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
    matmul_many(x, n, &[w], &mut [out], qbuf)
}

/// Several weights against the same x (all with x's width and one activation
/// type): activations quantized once, every weight's row runs in one parallel
/// region. out[i] [n, m_i] = x · w_iᵀ.
pub fn matmul_many(x: &[f32], n: usize, ws: &[&WeightData], outs: &mut [&mut [f32]], qbuf: &mut Vec<u8>) -> Result<()> {
    let Some(w0) = ws.first() else { return Ok(()) };
    let k = w0.cols;
    let kern = super::kernels::kernels();
    let vdt = w0.ty.vec_dot_type();
    let a_row = vdt.row_bytes(k).ok_or_else(|| crate::shape_err("matmul", format!("row of {k} for {}", vdt.name())))?;
    // 1. Quantize each activation row once into the type the weights' dots pair with.
    qbuf.clear();
    qbuf.resize(a_row * n, 0);
    if n <= 4 {
        // Decode: a parallel region would cost more than the work.
        qbuf.chunks_mut(a_row).zip(x.chunks(k)).for_each(|(q, xr)| kern.quantize_act(vdt, xr, q));
    } else {
        qbuf.par_chunks_mut(a_row).zip(x.par_chunks(k)).for_each(|(q, xr)| kern.quantize_act(vdt, xr, q));
    }
    let qa: &[u8] = qbuf;
    // 2. Tasks own disjoint runs of one weight's rows (columns of its output).
    // Decode: small runs so both threads stay busy. Prefill: runs that stay in
    // L1 while every group of four activation rows passes over them.
    // Long prompts also split the activation rows into blocks of 64 (a block's
    // quantized rows stay in L2 while all the weight runs pass over it).
    const ROW_BLOCK: usize = 64;
    let mut tasks: Vec<(usize, usize, usize, usize)> = Vec::new();
    for r0 in (0..n).step_by(ROW_BLOCK) {
        for (wi, w) in ws.iter().enumerate() {
            let m = w.rows;
            // Prefill: 32 rows (16 pairs for the 512-bit tiles) per pass over a row block.
            let chunk = if n == 1 { 16.max(m / (rayon::current_num_threads() * 64).max(1)).min(256) } else { 32 };
            tasks.extend((0..m.div_ceil(chunk)).map(|c| (wi, c * chunk, ((c + 1) * chunk).min(m), r0)));
        }
    }
    let optrs: Vec<SendPtr> = outs.iter_mut().map(|o| SendPtr(o.as_mut_ptr())).collect();
    tasks.into_par_iter().for_each(|(wi, j0, j1, r0)| {
        let w = ws[wi];
        let w_row = w.row_bytes();
        let r1 = (r0 + ROW_BLOCK).min(n);
        // SAFETY: this task writes out_wi[r*m + j] for r in r0..r1, j in j0..j1
        // only, all inside that output's n*m elements; tasks own disjoint blocks.
        unsafe { kern.dot_tile(w.ty, &w.bytes()[j0 * w_row..j1 * w_row], &qa[r0 * a_row..r1 * a_row], k, optrs[wi].0.add(r0 * w.rows + j0), w.rows) };
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

/// Rows of one sequence that share an attention task (prefill): each K and V
/// row is converted from f16 once per group instead of once per query row.
const ATTN_GROUP: usize = 16;

/// Causal grouped-query attention over the f16 cache. One task per (group of
/// up to 16 consecutive rows of one sequence, query head). Every row's result
/// is computed by the same operations in the same order whatever its group
/// (scores in cell order, max, exp and sum in cell order, V accumulated in cell
/// order), so a batched row equals its solo run bit for bit.
pub fn attention(q: &[f32], kc: &[f16], vc: &[f16], batch: &AttnBatch<'_>, p: &AttnParams, out: &mut [f32]) {
    let mut groups: Vec<(usize, usize)> = Vec::new();
    let mut r0 = 0;
    while r0 < batch.rows.len() {
        let s = batch.rows[r0].0;
        let mut r1 = r0 + 1;
        while r1 < batch.rows.len() && r1 - r0 < ATTN_GROUP && batch.rows[r1].0 == s {
            r1 += 1;
        }
        groups.push((r0, r1));
        r0 = r1;
    }
    let optr = SendPtr(out.as_mut_ptr());
    #[cfg(target_arch = "x86_64")]
    let fast = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
    (0..groups.len() * p.n_head).into_par_iter().for_each_init(AttnScratch::default, |scr, task| {
        let (g, h) = groups[task / p.n_head];
        let head = task % p.n_head;
        #[cfg(target_arch = "x86_64")]
        if fast {
            // SAFETY: the CPU has AVX2 and FMA (checked above); the task owns its output.
            return unsafe { attn_group_avx2(q, kc, vc, batch, p, (g, h), head, optr, scr) };
        }
        // SAFETY: the task owns its output slices.
        unsafe { attn_group(q, kc, vc, batch, p, (g, h), head, optr, scr) }
    });
}

#[derive(Default)]
struct AttnScratch {
    scores: Vec<f32>,
    acc: Vec<f32>,
    tmp: Vec<f32>,
    span: Vec<(usize, usize)>,
    max: Vec<f32>,
    sum: Vec<f32>,
}

/// The same body compiled for AVX2 + FMA so its f32 loops vectorise 8 wide
/// (the arithmetic is unchanged: no contraction into FMA, same order).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn attn_group_avx2(q: &[f32], kc: &[f16], vc: &[f16], batch: &AttnBatch<'_>, p: &AttnParams, rows: (usize, usize), head: usize, out: SendPtr, scr: &mut AttnScratch) {
    unsafe { attn_group(q, kc, vc, batch, p, rows, head, out, scr) }
}

/// Attention of batch rows `rows.0..rows.1` (one sequence) for query head `head`.
///
/// # Safety
/// `out` points at the [rows, n_head * head_dim] output; only this task writes
/// these rows' `head` slices.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn attn_group(q: &[f32], kc: &[f16], vc: &[f16], batch: &AttnBatch<'_>, p: &AttnParams, rows: (usize, usize), head: usize, out: SendPtr, scr: &mut AttnScratch) {
    let hd = p.head_dim;
    let q_cols = p.n_head * hd;
    let kv_cols = p.n_head_kv * hd;
    let kvh = head / (p.n_head / p.n_head_kv);
    let (r0, r1) = rows;
    let nr = r1 - r0;
    let cells = batch.seq_cells[batch.rows[r0].0 as usize];
    // Each row's visible positions start..=pos; the group covers lo..=hi.
    scr.span.clear();
    for &(_, pos) in &batch.rows[r0..r1] {
        let pos = pos as usize;
        let start = match p.window {
            Some(w) => (pos + 1).saturating_sub(w),
            None => 0,
        };
        scr.span.push((start, pos));
    }
    let lo = scr.span.iter().map(|s| s.0).min().unwrap_or(0);
    let hi = scr.span.iter().map(|s| s.1).max().unwrap_or(0);
    let width = hi + 1 - lo;
    scr.scores.clear();
    scr.scores.resize(nr * width, 0.0);
    scr.acc.clear();
    scr.acc.resize(nr * hd, 0.0);
    scr.tmp.resize(hd, 0.0);
    scr.max.clear();
    scr.max.resize(nr, f32::NEG_INFINITY);
    scr.sum.clear();
    scr.sum.resize(nr, 0.0);
    let (max, sum) = (&mut scr.max, &mut scr.sum);
    // 1. Scores q·k * scale (optionally soft-capped), in cell order.
    for c in lo..=hi {
        let cell = cells[c] as usize;
        kc[cell * kv_cols + kvh * hd..][..hd].convert_to_f32_slice(&mut scr.tmp);
        for (i, &(start, pos)) in scr.span.iter().enumerate() {
            if c < start || c > pos {
                continue;
            }
            let qh = &q[(r0 + i) * q_cols + head * hd..][..hd];
            let mut sc = dot_f32(qh, &scr.tmp) * p.scale;
            if let Some(cap) = p.softcap {
                sc = cap * (sc / cap).tanh();
            }
            max[i] = max[i].max(sc);
            scr.scores[i * width + c - lo] = sc;
        }
    }
    // 2. Softmax weights, summed in cell order.
    for (i, &(start, pos)) in scr.span.iter().enumerate() {
        for sc in &mut scr.scores[i * width + start - lo..=i * width + pos - lo] {
            *sc = (*sc - max[i]).exp();
            sum[i] += *sc;
        }
    }
    // 3. V weighted by the scores, accumulated in cell order.
    for c in lo..=hi {
        let cell = cells[c] as usize;
        vc[cell * kv_cols + kvh * hd..][..hd].convert_to_f32_slice(&mut scr.tmp);
        for (i, &(start, pos)) in scr.span.iter().enumerate() {
            if c < start || c > pos {
                continue;
            }
            let w = scr.scores[i * width + c - lo];
            for (a, b) in scr.acc[i * hd..][..hd].iter_mut().zip(scr.tmp.iter()) {
                *a += w * b;
            }
        }
    }
    for i in 0..nr {
        let inv = 1.0 / sum[i];
        for (d, a) in scr.acc[i * hd..][..hd].iter().enumerate() {
            // SAFETY: this task alone writes row r0+i's `head` slice.
            unsafe { *out.0.add((r0 + i) * q_cols + head * hd + d) = a * inv };
        }
    }
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

/// out = act(gate) * up, element by element; prefill-sized inputs are split
/// across the pool (elementwise, so the result does not depend on the split).
pub fn glu(gate: &[f32], up: &[f32], out: &mut [f32], act: impl Fn(f32) -> f32 + Sync) {
    const CHUNK: usize = 16 * 1024;
    let run = |o: &mut [f32], g: &[f32], u: &[f32]| {
        for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
            *o = act(g) * u;
        }
    };
    if out.len() <= CHUNK {
        return run(out, gate, up);
    }
    out.par_chunks_mut(CHUNK).zip(gate.par_chunks(CHUNK)).zip(up.par_chunks(CHUNK)).for_each(|((o, g), u)| run(o, g, u));
}

#[allow(dead_code)]
pub(crate) fn is_float(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
}
