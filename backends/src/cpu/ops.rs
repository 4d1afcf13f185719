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

/// A weight as a matmul reads it: its mapped bytes, or its packed copy where
/// there is one (then only that is read).
#[derive(Clone, Copy)]
pub struct MatW<'a> {
    pub w: &'a WeightData,
    pub packed: Option<&'a super::repack::Packed>,
}

/// out [n, m] = x [n, k] · wᵀ, w [m, k] in its GGML type.
pub fn matmul(x: &[f32], n: usize, w: MatW<'_>, out: &mut [f32], qbuf: &mut Vec<u8>) -> Result<()> {
    matmul_many(x, n, &[w], &mut [out], qbuf)
}

/// Several weights against the same x (all with x's width and one activation
/// type): activations quantized once, every weight's row runs in one parallel
/// region. out[i] [n, m_i] = x · w_iᵀ.
pub fn matmul_many(x: &[f32], n: usize, ws: &[MatW<'_>], outs: &mut [&mut [f32]], qbuf: &mut Vec<u8>) -> Result<()> {
    let Some(w0) = ws.first().map(|m| m.w) else { return Ok(()) };
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
        for (wi, mw) in ws.iter().enumerate() {
            let m = mw.w.rows;
            // Prefill: 64 weight rows (32 pairs for the 512-bit tiles) per pass over a
            // row block: the activation set-up of the tiles is paid once per 64 rows
            // (32 -> 64 gave Gemma 3 pp512 ~420 -> ~450 t/s here; 128 was slower).
            let chunk = if n == 1 { 16.max(m / (rayon::current_num_threads() * 64).max(1)).min(256) } else { 64 };
            // Packed weights run whole groups of eight rows.
            let chunk = if mw.packed.is_some() { chunk.next_multiple_of(super::repack::GROUP) } else { chunk };
            tasks.extend((0..m.div_ceil(chunk)).map(|c| (wi, c * chunk, ((c + 1) * chunk).min(m), r0)));
        }
    }
    let optrs: Vec<SendPtr> = outs.iter_mut().map(|o| SendPtr(o.as_mut_ptr())).collect();
    tasks.into_par_iter().for_each(|(wi, j0, j1, r0)| {
        let (w, packed) = (ws[wi].w, ws[wi].packed);
        let w_row = w.row_bytes();
        let r1 = (r0 + ROW_BLOCK).min(n);
        let (a, o) = (&qa[r0 * a_row..r1 * a_row], optrs[wi].0.wrapping_add(r0 * w.rows + j0));
        // SAFETY: this task writes out_wi[r*m + j] for r in r0..r1, j in j0..j1
        // only, all inside that output's n*m elements; tasks own disjoint blocks
        // (packed chunks are multiples of the group, so j0 starts a group).
        unsafe {
            match packed {
                Some(p) => kern.packed_tile(p, j0 / super::repack::GROUP, j1 - j0, a, k, o, w.rows),
                None => kern.dot_tile(w.ty, &w.bytes()[j0 * w_row..j1 * w_row], a, k, o, w.rows),
            }
        }
    });
    Ok(())
}

/// RMS norm over each group of w.len() elements, times w.
pub fn rms_norm_inplace(x: &mut [f32], w: &[f32], eps: f32) {
    for g in x.chunks_exact_mut(w.len()) {
        // Squares in f32, summed in f64 (ggml's order).
        let sum: f64 = g.iter().map(|&v| (v * v) as f64).sum();
        let mean = (sum / g.len() as f64) as f32;
        let s = 1.0 / (mean + eps).sqrt();
        for (v, &wi) in g.iter_mut().zip(w) {
            *v = *v * s * wi;
        }
    }
}

/// Rotary embedding in place, as ggml_rope_ext computes it (no YaRN): theta
/// for pair i is pos * base^(-2i/n_rot) by repeated multiplication, and each
/// rotated value is one fused multiply-add, x0*cos - x1*sin as
/// fma(x0, cos, -(x1*sin)), as GCC contracts ggml's expression.
pub fn rope(x: &mut [f32], cols: usize, pos: &[u32], p: &RopeParams) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has FMA.
        return unsafe { rope_fma(x, cols, pos, p) };
    }
    rope_body(x, cols, pos, p)
}

/// The same body with FMA enabled, so `mul_add` is one instruction.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn rope_fma(x: &mut [f32], cols: usize, pos: &[u32], p: &RopeParams) {
    rope_body(x, cols, pos, p)
}

#[inline(always)]
fn rope_body(x: &mut [f32], cols: usize, pos: &[u32], p: &RopeParams) {
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
                head[a] = x0.mul_add(cos, -(x1 * sin));
                head[b] = x0.mul_add(sin, x1 * cos);
            }
        }
    }
}

/// Rows of one sequence that share an attention task (prefill): each K and V
/// row is read once per group instead of once per query row.
const ATTN_GROUP: usize = 16;

/// Causal grouped-query attention over the f16 cache, computed the way
/// llama.cpp's CPU flash attention computes it (ggml's
/// `flash_attn_ext_f16_one_chunk`, the path for fewer than 64 query rows):
/// q rounded to f16, each score an f16 dot (`dot_f16`) times `scale`
/// (softcap: times scale/cap, then cap*tanh), an online softmax over the
/// visible cells in cell order whose V accumulator is f16, rounded after every
/// step (`scale_f16` when a new maximum appears, then `mad_f16`), and at the end
/// the accumulator over the sum of the weights.
///
/// One task per (group of up to 16 consecutive rows of one sequence, query
/// head). Each row's state is its own and sees the cells in the same order
/// whatever its group, so a batched row equals its solo run bit for bit.
pub fn attention(q: &[f32], kc: &[f16], vc: &[f16], batch: &AttnBatch<'_>, p: &AttnParams, out: &mut [f32]) {
    attention_on(AttnPath::detect(), q, kc, vc, batch, p, out)
}

/// Which body the attention runs (all give the same bits).
#[derive(Clone, Copy, Debug, PartialEq)]
enum AttnPath {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl AttnPath {
    fn detect() -> AttnPath {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c") {
            return if is_x86_feature_detected!("avx512f") { AttnPath::Avx512 } else { AttnPath::Avx2 };
        }
        AttnPath::Scalar
    }
}

fn attention_on(path: AttnPath, q: &[f32], kc: &[f16], vc: &[f16], batch: &AttnBatch<'_>, p: &AttnParams, out: &mut [f32]) {
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
    (0..groups.len() * p.n_head).into_par_iter().for_each_init(AttnScratch::default, |scr, task| {
        let (g, h) = groups[task / p.n_head];
        let head = task % p.n_head;
        // SAFETY: `path` is only ever a body this CPU has the features for
        // (`detect`, or the tests' own checks); the task owns its output slices.
        unsafe {
            match path {
                #[cfg(target_arch = "x86_64")]
                AttnPath::Avx512 => attn_group_avx512(q, kc, vc, batch, p, (g, h), head, optr, scr),
                #[cfg(target_arch = "x86_64")]
                AttnPath::Avx2 => attn_group_avx2(q, kc, vc, batch, p, (g, h), head, optr, scr),
                AttnPath::Scalar => attn_group::<ScalarF16>(q, kc, vc, batch, p, (g, h), head, optr, scr),
            }
        }
    });
}

#[derive(Default)]
struct AttnScratch {
    /// AVX-512 path: per row its query head and V accumulator as f32 holding
    /// f16 values, and the current cell's K and V row in f32.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    qf: Vec<f32>,
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    accf: Vec<f32>,
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    kf: Vec<f32>,
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    vf: Vec<f32>,
    /// Per row: its query head in f16, its f16 V accumulator.
    q16: Vec<f16>,
    acc: Vec<f16>,
    span: Vec<(usize, usize)>,
    /// Per row: the running maximum score and sum of weights.
    max: Vec<f32>,
    sum: Vec<f32>,
}

/// The body with the F16C kernels, compiled for AVX2 + FMA + F16C.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn attn_group_avx2(q: &[f32], kc: &[f16], vc: &[f16], batch: &AttnBatch<'_>, p: &AttnParams, rows: (usize, usize), head: usize, out: SendPtr, scr: &mut AttnScratch) {
    unsafe { attn_group::<F16cF16>(q, kc, vc, batch, p, rows, head, out, scr) }
}

/// What both attention bodies derive from a task (rows `r0..r0 + nr` of one
/// sequence, query head `head`): the sizes, the KV head it reads, the
/// sequence's cells and the range `lo..=hi` of them the group sees.
struct Group<'b> {
    hd: usize,
    q_cols: usize,
    kv_cols: usize,
    kvh: usize,
    r0: usize,
    nr: usize,
    cells: &'b [u32],
    lo: usize,
    hi: usize,
}

/// The task's `Group`, with each row's visible positions start..=pos (causal,
/// within the sliding window) written to `span`.
fn group<'b>(batch: &AttnBatch<'b>, p: &AttnParams, rows: (usize, usize), head: usize, span: &mut Vec<(usize, usize)>) -> Group<'b> {
    let hd = p.head_dim;
    let (r0, r1) = rows;
    span.clear();
    for &(_, pos) in &batch.rows[r0..r1] {
        let pos = pos as usize;
        let start = match p.window {
            Some(w) => (pos + 1).saturating_sub(w),
            None => 0,
        };
        span.push((start, pos));
    }
    Group {
        hd,
        q_cols: p.n_head * hd,
        kv_cols: p.n_head_kv * hd,
        kvh: head / (p.n_head / p.n_head_kv),
        r0,
        nr: r1 - r0,
        cells: batch.seq_cells[batch.rows[r0].0 as usize],
        lo: span.iter().map(|s| s.0).min().unwrap_or(0),
        hi: span.iter().map(|s| s.1).max().unwrap_or(0),
    }
}

/// `attn_group` with the same arithmetic, bit for bit, in 16-lane registers:
/// q is rounded to f16 once per row and K and V are converted once per cell
/// (exact) instead of inside every dot; the f16 accumulator lives in f32 lanes
/// that are rounded through f16 after every step, as `mad_f16` stores it. The
/// dot keeps `F16Vec::dot`'s 64 lanes and pairwise reduction, with the last
/// sums of all the group's rows done together (`hsum16`). The softmax state of
/// the up to 16 rows sits in the lanes of one register: per cell one compare
/// finds the new maxima, one `expf16_avx512` gives every row's weight (glibc's
/// expf bits, as the scalar body's `expf`), and only the accumulator updates
/// run row by row.
///
/// # Safety
/// As `attn_group`; the CPU has AVX-512F, FMA and F16C.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn attn_group_avx512(q: &[f32], kc: &[f16], vc: &[f16], batch: &AttnBatch<'_>, p: &AttnParams, rows: (usize, usize), head: usize, out: SendPtr, scr: &mut AttnScratch) {
    use std::arch::x86_64::*;
    let Group { hd, q_cols, kv_cols, kvh, r0, nr, cells, lo, hi } = group(batch, p, rows, head, &mut scr.span);
    // Rows padded to whole 16-lane vectors (the pad stays zero).
    let hp = hd.div_ceil(16) * 16;
    let (n64, n16) = (hd / 64 * 64, hd / 16 * 16);
    scr.qf.clear();
    scr.qf.resize(nr * hp, 0.0);
    for i in 0..nr {
        let src = q[(r0 + i) * q_cols + head * hd..][..hd].as_ptr();
        let dst = scr.qf[i * hp..][..hd].as_mut_ptr();
        for j in (0..n16).step_by(16) {
            let v = _mm512_loadu_ps(src.add(j));
            _mm512_storeu_ps(dst.add(j), _mm512_cvtph_ps(_mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v)));
        }
        for j in n16..hd {
            *dst.add(j) = f16::from_f32(*src.add(j)).to_f32();
        }
    }
    scr.accf.clear();
    scr.accf.resize(nr * hp, 0.0);
    scr.kf.clear();
    scr.kf.resize(hp, 0.0);
    scr.vf.clear();
    scr.vf.resize(hp, 0.0);
    let scale = p.softcap.map_or(p.scale, |cap| p.scale / cap);
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f")]
    unsafe fn cvt_row(src: &[f16], dst: &mut [f32], n16: usize, hd: usize) {
        for j in (0..n16).step_by(16) {
            let h = _mm256_loadu_si256(src.as_ptr().add(j) as *const __m256i);
            _mm512_storeu_ps(dst.as_mut_ptr().add(j), _mm512_cvtph_ps(h));
        }
        for j in n16..hd {
            dst[j] = src[j].to_f32();
        }
    }
    // f32 -> f16 -> f32, round to nearest even (as the f16 store of mad_f16).
    let round16 = |v: __m512| _mm512_cvtph_ps(_mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v));
    // The group's softmax state in lanes (row i in lane i; lanes past nr idle).
    let mut starts = [i32::MAX; 16];
    let mut ends = [-1i32; 16];
    for (i, &(a, b)) in scr.span.iter().enumerate() {
        (starts[i], ends[i]) = (a as i32, b as i32);
    }
    let (starts, ends) = (_mm512_loadu_si512(starts.as_ptr() as *const _), _mm512_loadu_si512(ends.as_ptr() as *const _));
    let mut vmax = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut vsum = _mm512_setzero_ps();
    let (one, ninf) = (_mm512_set1_ps(1.0), _mm512_set1_ps(f32::NEG_INFINITY));
    let mut zs = [_mm512_setzero_ps(); 16];
    let (mut ms_a, mut vs_a, mut sv) = ([0f32; 16], [0f32; 16], [0f32; 16]);
    for (c, &cell) in cells.iter().enumerate().take(hi + 1).skip(lo) {
        let cv = _mm512_set1_epi32(c as i32);
        // Rows that see cell c (causal, sliding window).
        let vis = _mm512_cmple_epi32_mask(starts, cv) & _mm512_cmpge_epi32_mask(ends, cv);
        if vis == 0 {
            continue;
        }
        let cell = cell as usize;
        cvt_row(&kc[cell * kv_cols + kvh * hd..][..hd], &mut scr.kf, n16, hd);
        cvt_row(&vc[cell * kv_cols + kvh * hd..][..hd], &mut scr.vf, n16, hd);
        let (kf, vf) = (scr.kf.as_ptr(), scr.vf.as_ptr());
        // Σ q·k per row: lane l of 64 takes elements l, l+64, ...; the 64 lanes
        // folded to 16 as (z0 + z2) + (z1 + z3), then the sixteen rows' 16-lane
        // vectors summed pairwise together (`hsum16`), the same pairs as one row.
        for i in 0..nr {
            if vis & (1 << i) == 0 {
                zs[i] = _mm512_setzero_ps();
                continue;
            }
            let qi = scr.qf.as_ptr().add(i * hp);
            let mut z = [_mm512_setzero_ps(); 4];
            for j in (0..n64).step_by(64) {
                for (t, zt) in z.iter_mut().enumerate() {
                    *zt = _mm512_fmadd_ps(_mm512_loadu_ps(qi.add(j + 16 * t)), _mm512_loadu_ps(kf.add(j + 16 * t)), *zt);
                }
            }
            zs[i] = _mm512_add_ps(_mm512_add_ps(z[0], z[2]), _mm512_add_ps(z[1], z[3]));
        }
        let mut s = hsum16(&zs);
        if n64 < hd {
            // The tail past the 64-lane chunks, added in f64.
            _mm512_storeu_ps(sv.as_mut_ptr(), s);
            for i in 0..nr {
                let qi = scr.qf.as_ptr().add(i * hp);
                let mut sd = sv[i] as f64;
                for j in n64..hd {
                    sd += (*qi.add(j) * *kf.add(j)) as f64;
                }
                sv[i] = sd as f32;
            }
            s = _mm512_loadu_ps(sv.as_ptr());
        }
        s = _mm512_mul_ps(s, _mm512_set1_ps(scale));
        if let Some(cap) = p.softcap {
            _mm512_storeu_ps(sv.as_mut_ptr(), s);
            for v in &mut sv[..nr] {
                *v = cap * v.tanh();
            }
            s = _mm512_loadu_ps(sv.as_ptr());
        }
        // Online softmax step of every visible row: a new maximum rescales by
        // e^(old - new) and weighs the cell 1; otherwise the cell weighs e^(s - max).
        let up = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(s, vmax) & vis;
        let arg = _mm512_mask_sub_ps(_mm512_sub_ps(s, vmax), up, vmax, s);
        let e = super::expf::expf16_avx512(arg);
        let ms = _mm512_mask_mov_ps(one, up, e);
        let vs = _mm512_mask_mov_ps(e, up, one);
        // Rows whose accumulator is rescaled: a new maximum after a finite one.
        let rescale = up & _mm512_cmp_ps_mask::<_CMP_NEQ_OQ>(vmax, ninf);
        vsum = _mm512_mask_mov_ps(vsum, vis, _mm512_fmadd_ps(vsum, ms, vs));
        vmax = _mm512_mask_mov_ps(vmax, up, s);
        _mm512_storeu_ps(ms_a.as_mut_ptr(), ms);
        _mm512_storeu_ps(vs_a.as_mut_ptr(), vs);
        for i in 0..nr {
            if vis & (1 << i) == 0 {
                continue;
            }
            let acc = scr.accf.as_mut_ptr().add(i * hp);
            if rescale & (1 << i) != 0 {
                let msv = _mm512_set1_ps(ms_a[i]);
                for j in (0..hp).step_by(16) {
                    _mm512_storeu_ps(acc.add(j), round16(_mm512_mul_ps(_mm512_loadu_ps(acc.add(j)), msv)));
                }
            }
            let vsv = _mm512_set1_ps(vs_a[i]);
            for j in (0..hp).step_by(16) {
                let a = _mm512_fmadd_ps(_mm512_loadu_ps(vf.add(j)), vsv, _mm512_loadu_ps(acc.add(j)));
                _mm512_storeu_ps(acc.add(j), round16(a));
            }
        }
    }
    _mm512_storeu_ps(sv.as_mut_ptr(), vsum);
    for i in 0..nr {
        let inv = if sv[i] == 0.0 { 0.0 } else { 1.0 / sv[i] };
        for (d, a) in scr.accf[i * hp..][..hd].iter().enumerate() {
            // SAFETY: this task alone writes row r0+i's `head` slice.
            unsafe { *out.0.add((r0 + i) * q_cols + head * hd + d) = a * inv };
        }
    }
}

/// Lane i: the sum of the sixteen lanes of `z[i]`, added in the pairs of the
/// one-row reduction (lane l with l+8, then l+4, l+2, l+1), all sixteen rows
/// at once: each stage adds two registers' halves after a shuffle that puts
/// two rows' partial sums side by side.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn hsum16(z: &[std::arch::x86_64::__m512; 16]) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    // l + l+8: row 2k in lanes 0..8 of a[k], row 2k+1 in lanes 8..16.
    let a: [__m512; 8] = std::array::from_fn(|k| {
        let (x, y) = (z[2 * k], z[2 * k + 1]);
        _mm512_add_ps(_mm512_shuffle_f32x4::<0x44>(x, y), _mm512_shuffle_f32x4::<0xEE>(x, y))
    });
    // l + l+4: 128-bit chunk j of b[m] holds row 4m + j.
    let b: [__m512; 4] = std::array::from_fn(|m| {
        let (x, y) = (a[2 * m], a[2 * m + 1]);
        _mm512_add_ps(_mm512_shuffle_f32x4::<0x88>(x, y), _mm512_shuffle_f32x4::<0xDD>(x, y))
    });
    // l + l+2: chunk j of c[n] holds row 8n + j in lanes 0, 1 and 8n + 4 + j in 2, 3.
    let c: [__m512; 2] = std::array::from_fn(|n| {
        let (x, y) = (b[2 * n], b[2 * n + 1]);
        _mm512_add_ps(_mm512_shuffle_ps::<0x44>(x, y), _mm512_shuffle_ps::<0xEE>(x, y))
    });
    // l + l+1: lane 4j + t holds row 4t + j.
    let d = _mm512_add_ps(_mm512_shuffle_ps::<0x88>(c[0], c[1]), _mm512_shuffle_ps::<0xDD>(c[0], c[1]));
    _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), d)
}

/// Attention of batch rows `rows.0..rows.1` (one sequence) for query head `head`.
///
/// # Safety
/// `out` points at the [rows, n_head * head_dim] output; only this task writes
/// these rows' `head` slices. `V`'s kernels must be supported by the CPU.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn attn_group<V: F16Vec>(q: &[f32], kc: &[f16], vc: &[f16], batch: &AttnBatch<'_>, p: &AttnParams, rows: (usize, usize), head: usize, out: SendPtr, scr: &mut AttnScratch) {
    let Group { hd, q_cols, kv_cols, kvh, r0, nr, cells, lo, hi } = group(batch, p, rows, head, &mut scr.span);
    scr.q16.resize(nr * hd, f16::ZERO);
    for i in 0..nr {
        scr.q16[i * hd..][..hd].convert_from_f32_slice(&q[(r0 + i) * q_cols + head * hd..][..hd]);
    }
    scr.acc.clear();
    scr.acc.resize(nr * hd, f16::ZERO);
    scr.max.clear();
    scr.max.resize(nr, f32::NEG_INFINITY);
    scr.sum.clear();
    scr.sum.resize(nr, 0.0);
    // With a softcap the score is cap * tanh(q·k * scale/cap), as ggml folds it.
    let scale = p.softcap.map_or(p.scale, |cap| p.scale / cap);
    // Online softmax, cell by cell: every row that sees cell c takes its step.
    for (c, &cell) in cells.iter().enumerate().take(hi + 1).skip(lo) {
        let cell = cell as usize;
        let kr = &kc[cell * kv_cols + kvh * hd..][..hd];
        let vr = &vc[cell * kv_cols + kvh * hd..][..hd];
        for (i, &(start, pos)) in scr.span.iter().enumerate() {
            if c < start || c > pos {
                continue;
            }
            // SAFETY: the caller guarantees V's CPU features.
            let mut s = unsafe { V::dot(&scr.q16[i * hd..][..hd], kr) } * scale;
            if let Some(cap) = p.softcap {
                s = cap * s.tanh();
            }
            let acc = &mut scr.acc[i * hd..][..hd];
            let m_old = scr.max[i];
            let (ms, vs) = if s > m_old {
                // A new maximum: the accumulator so far is rescaled, this cell weighs 1.
                scr.max[i] = s;
                let ms = super::expf::expf(m_old - s);
                if m_old != f32::NEG_INFINITY {
                    unsafe { V::scale(acc, ms) };
                }
                (ms, 1.0)
            } else {
                (1.0, super::expf::expf(s - m_old))
            };
            unsafe { V::mad(acc, vr, vs) };
            scr.sum[i] = scr.sum[i].mul_add(ms, vs);
        }
    }
    for i in 0..nr {
        let inv = if scr.sum[i] == 0.0 { 0.0 } else { 1.0 / scr.sum[i] };
        for (d, a) in scr.acc[i * hd..][..hd].iter().enumerate() {
            // SAFETY: this task alone writes row r0+i's `head` slice.
            unsafe { *out.0.add((r0 + i) * q_cols + head * hd + d) = a.to_f32() * inv };
        }
    }
}

/// The f16 vector kernels of the attention, with the arithmetic of ggml's x86
/// AVX-512 `ggml_vec_dot_f16`, `ggml_vec_mad_f16` and `ggml_vec_scale_f16`.
/// Every implementation gives the same bits.
trait F16Vec {
    /// Σ a[i]·b[i] in f32: lane l of 64 accumulates elements l, l+64, ...;
    /// the lanes are summed pairwise (l with l+32, +16, +8, +4, +2, +1); a tail
    /// of fewer than 64 elements is added one by one in f64. (f16 products are
    /// exact in f32, so fused or not makes no difference.)
    unsafe fn dot(a: &[f16], b: &[f16]) -> f32;
    /// acc[i] = f16(fma(v[i], s, acc[i])).
    unsafe fn mad(acc: &mut [f16], v: &[f16], s: f32);
    /// acc[i] = f16(acc[i] * s).
    unsafe fn scale(acc: &mut [f16], s: f32);
}

/// Plain Rust (any CPU).
struct ScalarF16;

impl F16Vec for ScalarF16 {
    unsafe fn dot(a: &[f16], b: &[f16]) -> f32 {
        let n = a.len().min(b.len());
        let np = n & !63;
        let mut lane = [0f32; 64];
        for (ca, cb) in a[..np].chunks_exact(64).zip(b[..np].chunks_exact(64)) {
            for l in 0..64 {
                lane[l] += ca[l].to_f32() * cb[l].to_f32();
            }
        }
        let mut w = 32;
        while w > 0 {
            for l in 0..w {
                lane[l] += lane[l + w];
            }
            w /= 2;
        }
        let mut s = lane[0] as f64;
        for i in np..n {
            s += (a[i].to_f32() * b[i].to_f32()) as f64;
        }
        s as f32
    }

    unsafe fn mad(acc: &mut [f16], v: &[f16], s: f32) {
        for (a, &x) in acc.iter_mut().zip(v) {
            *a = f16::from_f32(x.to_f32().mul_add(s, a.to_f32()));
        }
    }

    unsafe fn scale(acc: &mut [f16], s: f32) {
        for a in acc.iter_mut() {
            *a = f16::from_f32(a.to_f32() * s);
        }
    }
}

/// AVX2 + FMA + F16C, 8 lanes a register (the callers check the features).
#[cfg(target_arch = "x86_64")]
struct F16cF16;

#[cfg(target_arch = "x86_64")]
impl F16Vec for F16cF16 {
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot(a: &[f16], b: &[f16]) -> f32 {
        use std::arch::x86_64::*;
        let n = a.len().min(b.len());
        let np = n & !63;
        let (pa, pb) = (a.as_ptr() as *const __m128i, b.as_ptr() as *const __m128i);
        // Register j holds lanes 8j..8j+8 of the 64.
        let mut r = [_mm256_setzero_ps(); 8];
        for c in (0..np / 8).step_by(8) {
            for (j, rj) in r.iter_mut().enumerate() {
                let x = _mm256_cvtph_ps(_mm_loadu_si128(pa.add(c + j)));
                let y = _mm256_cvtph_ps(_mm_loadu_si128(pb.add(c + j)));
                *rj = _mm256_fmadd_ps(x, y, *rj);
            }
        }
        for j in 0..4 {
            r[j] = _mm256_add_ps(r[j], r[j + 4]);
        }
        r[0] = _mm256_add_ps(r[0], r[2]);
        r[1] = _mm256_add_ps(r[1], r[3]);
        let t = _mm256_add_ps(r[0], r[1]);
        let t = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
        let t = _mm_add_ps(t, _mm_movehl_ps(t, t));
        let t = _mm_add_ss(t, _mm_movehdup_ps(t));
        let mut s = _mm_cvtss_f32(t) as f64;
        for i in np..n {
            s += (a[i].to_f32() * b[i].to_f32()) as f64;
        }
        s as f32
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn mad(acc: &mut [f16], v: &[f16], s: f32) {
        use std::arch::x86_64::*;
        let n = acc.len().min(v.len());
        let n8 = n & !7;
        let (pa, pv) = (acc.as_mut_ptr() as *mut __m128i, v.as_ptr() as *const __m128i);
        let sv = _mm256_set1_ps(s);
        for j in 0..n8 / 8 {
            let x = _mm256_cvtph_ps(_mm_loadu_si128(pv.add(j)));
            let y = _mm256_cvtph_ps(_mm_loadu_si128(pa.add(j)));
            _mm_storeu_si128(pa.add(j), _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_fmadd_ps(x, sv, y)));
        }
        for i in n8..n {
            acc[i] = f16::from_f32(v[i].to_f32().mul_add(s, acc[i].to_f32()));
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn scale(acc: &mut [f16], s: f32) {
        use std::arch::x86_64::*;
        let n8 = acc.len() & !7;
        let pa = acc.as_mut_ptr() as *mut __m128i;
        let sv = _mm256_set1_ps(s);
        for j in 0..n8 / 8 {
            let y = _mm256_cvtph_ps(_mm_loadu_si128(pa.add(j)));
            _mm_storeu_si128(pa.add(j), _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_mul_ps(y, sv)));
        }
        for a in acc[n8..].iter_mut() {
            *a = f16::from_f32(a.to_f32() * s);
        }
    }
}

/// e^x as ggml's AVX-512 `ggml_v_expf` computes it (ARM's optimized-routines
/// approximation, within 1.5 ulp): x = n ln2 + b with n = round(x log2 e), e^b
/// by a degree-5 polynomial, times 2^n; |n| > 192 gives 0 or infinity. Every
/// step is the fused or plain operation the vector code uses.
#[inline(always)]
pub fn expf_ggml(x: f32) -> f32 {
    let c = f32::from_bits;
    let r = c(0x4b40_0000); // 0x1.8p23: adding it rounds to an integer
    let z = x.mul_add(c(0x3fb8_aa3b), r);
    let n = z - r;
    let b = (-n).mul_add(c(0x35bf_be8e), (-n).mul_add(c(0x3f31_7200), x));
    if n.abs() > 192.0 {
        return if n <= 0.0 { 0.0 } else { f32::INFINITY };
    }
    let u = b * b;
    let p = c(0x3c07_2010).mul_add(b, c(0x3d2b_9f17)).mul_add(u, c(0x3e2a_af33).mul_add(b, c(0x3eff_fedb)));
    let j = p.mul_add(u, c(0x3f7f_fff6).mul_add(b, 1.0));
    // j * 2^n (n is an integer in [-192, 192]), in two exact power-of-two steps.
    let n = n as i32;
    let (n1, n2) = (n / 2, n - n / 2);
    j * f32::from_bits(((n1 + 127) as u32) << 23) * f32::from_bits(((n2 + 127) as u32) << 23)
}

/// SiLU as ggml's CPU SwiGLU computes it: x / (1 + e^-x) with `expf_ggml`.
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + expf_ggml(0.0 - x))
}

/// gelu_tanh in f32, with the one contraction GCC makes in ggml's
/// `ggml_gelu_f32` (1 + a*x*x as fma(a*x, x, 1)).
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    const GELU_COEF_A: f32 = 0.044715;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (GELU_COEF_A * x).mul_add(x, 1.0)).tanh())
}

/// gelu_tanh of every f16 value, as f32 (exact: the table is of halves).
fn gelu_table() -> &'static [f32] {
    static TABLE: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| (0..=u16::MAX).map(|b| f16::from_f32(gelu_tanh(f16::from_bits(b).to_f32())).to_f32()).collect())
}

/// GeGLU's activation as ggml's CPU backend computes it (`GGML_GELU_FP16`):
/// gelu_tanh of the input rounded to f16, the result rounded to f16 (a table
/// of all 65536 halves), except that x <= -10 gives 0 and x >= 10 gives x.
#[inline(always)]
pub fn gelu_f16(x: f32) -> f32 {
    if x <= -10.0 {
        return 0.0;
    }
    if x >= 10.0 {
        return x;
    }
    gelu_table()[f16::from_f32(x).to_bits() as usize]
}

/// out = gelu_f16(gate) * up: eight lanes at a time where the CPU has AVX2
/// and F16C (the input rounded to f16 by vcvtps2ph, the table gathered), the
/// same values as the scalar `gelu_f16`.
pub fn geglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("f16c") {
        const CHUNK: usize = 16 * 1024;
        let table = gelu_table();
        // SAFETY: the CPU has AVX2 and F16C (checked above).
        let run = |o: &mut [f32], g: &[f32], u: &[f32]| unsafe { geglu_avx2(o, g, u, table) };
        if out.len() <= CHUNK {
            return run(out, gate, up);
        }
        return out.par_chunks_mut(CHUNK).zip(gate.par_chunks(CHUNK)).zip(up.par_chunks(CHUNK)).for_each(|((o, g), u)| run(o, g, u));
    }
    glu(gate, up, out, gelu_f16)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
unsafe fn geglu_avx2(o: &mut [f32], g: &[f32], u: &[f32], table: &[f32]) {
    use std::arch::x86_64::*;
    let n = o.len().min(g.len()).min(u.len());
    let n8 = n / 8 * 8;
    let (lo, hi) = (_mm256_set1_ps(-10.0), _mm256_set1_ps(10.0));
    for i in (0..n8).step_by(8) {
        let x = _mm256_loadu_ps(g.as_ptr().add(i));
        let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x);
        let y = _mm256_i32gather_ps::<4>(table.as_ptr(), _mm256_cvtepu16_epi32(h));
        // x >= 10: x; x <= -10: 0 (NaN takes the table, as the scalar path).
        let y = _mm256_blendv_ps(y, x, _mm256_cmp_ps::<_CMP_GE_OQ>(x, hi));
        let y = _mm256_andnot_ps(_mm256_cmp_ps::<_CMP_LE_OQ>(x, lo), y);
        _mm256_storeu_ps(o.as_mut_ptr().add(i), _mm256_mul_ps(y, _mm256_loadu_ps(u.as_ptr().add(i))));
    }
    for i in n8..n {
        o[i] = gelu_f16(g[i]) * u[i];
    }
}

/// out = act(gate) * up, element by element; prefill-sized inputs are split
/// across the pool (elementwise, so the result does not depend on the split).
pub fn glu<F: Fn(f32) -> f32 + Sync>(gate: &[f32], up: &[f32], out: &mut [f32], act: F) {
    const CHUNK: usize = 16 * 1024;
    #[cfg(target_arch = "x86_64")]
    let fma = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
    let run = |o: &mut [f32], g: &[f32], u: &[f32]| {
        #[cfg(target_arch = "x86_64")]
        if fma {
            // SAFETY: the CPU has AVX2 and FMA (checked above).
            return unsafe { glu_avx2(o, g, u, &act) };
        }
        glu_body(o, g, u, &act)
    };
    if out.len() <= CHUNK {
        return run(out, gate, up);
    }
    out.par_chunks_mut(CHUNK).zip(gate.par_chunks(CHUNK)).zip(up.par_chunks(CHUNK)).for_each(|((o, g), u)| run(o, g, u));
}

/// The same loop with AVX2 + FMA enabled, so `mul_add` is one instruction.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn glu_avx2<F: Fn(f32) -> f32>(o: &mut [f32], g: &[f32], u: &[f32], act: &F) {
    glu_body(o, g, u, act)
}

#[inline(always)]
fn glu_body<F: Fn(f32) -> f32>(o: &mut [f32], g: &[f32], u: &[f32], act: &F) {
    for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
        *o = act(g) * u;
    }
}

#[allow(dead_code)]
pub(crate) fn is_float(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every attention body gives the same bits: batches of two sequences,
    /// GQA, head dims with and without a tail past the 64-lane chunks,
    /// sliding window and softcap.
    #[test]
    fn attention_bodies_agree_bit_for_bit() {
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut, clippy::useless_vec))]
        let mut paths = vec![AttnPath::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            let base = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c");
            if base {
                paths.push(AttnPath::Avx2);
            }
            if base && is_x86_feature_detected!("avx512f") {
                paths.push(AttnPath::Avx512);
            }
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        };
        for (hd, n_head, n_head_kv, window, softcap) in [(64, 4, 2, None, None), (256, 4, 1, Some(5), None), (80, 2, 2, None, Some(30.0)), (16, 3, 1, None, None)] {
            let p = AttnParams { n_head, n_head_kv, head_dim: hd, scale: 1.0 / (hd as f32).sqrt(), softcap, window };
            let n_cells = 40;
            let kv_cols = n_head_kv * hd;
            let kc: Vec<f16> = (0..n_cells * kv_cols).map(|_| f16::from_f32(rnd() * 3.0)).collect();
            let vc: Vec<f16> = (0..n_cells * kv_cols).map(|_| f16::from_f32(rnd() * 5.0)).collect();
            // Sequence 0: 20 rows at positions 0..20 (two groups); sequence 1: 3 rows at 9..12.
            let rows: Vec<(u32, u32)> = (0..20).map(|i| (0, i)).chain((9..12).map(|i| (1, i))).collect();
            let cells0: Vec<u32> = (0..20).collect();
            let cells1: Vec<u32> = (20..32).collect();
            let seq_cells: Vec<&[u32]> = vec![&cells0, &cells1];
            let batch = AttnBatch { rows: &rows, seq_cells: &seq_cells };
            let q: Vec<f32> = (0..rows.len() * n_head * hd).map(|_| rnd() * 4.0).collect();
            let mut want = vec![0f32; q.len()];
            attention_on(AttnPath::Scalar, &q, &kc, &vc, &batch, &p, &mut want);
            for &path in &paths[1..] {
                let mut got = vec![0f32; q.len()];
                attention_on(path, &q, &kc, &vc, &batch, &p, &mut got);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(g.to_bits(), w.to_bits(), "{path:?} hd={hd} element {i}: {g} vs {w}");
                }
            }
        }
    }

    /// The vector GeGLU gives the scalar definition's bits for every f16
    /// input, values between them, both sides of the +-10 cut-offs, and NaN.
    #[test]
    fn geglu_vector_equals_scalar() {
        let mut gate: Vec<f32> = (0..=u16::MAX).map(|b| f16::from_bits(b).to_f32()).collect();
        gate.extend((0..20_000).map(|i| (i as f32 - 10_000.0) * 0.001_37));
        gate.extend([-10.0, -10.000001, -9.999999, 10.0, 9.999999, 10.000001, f32::NAN, f32::INFINITY, f32::NEG_INFINITY]);
        let up: Vec<f32> = (0..gate.len()).map(|i| 1.0 + (i % 7) as f32 * 0.25).collect();
        let mut want = vec![0f32; gate.len()];
        glu(&gate, &up, &mut want, gelu_f16);
        let mut got = vec![0f32; gate.len()];
        geglu(&gate, &up, &mut got);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()), "x = {}: {g} vs {w}", gate[i]);
        }
    }
}
