//! The CPU's indexed matmul (`Backend::matmul_id`, mixture of experts): x's rows
//! quantized once, gathered per weight, and every weight's tiles over its own rows
//! in one parallel region, so each expert's bytes are read once per call and the
//! threads stay busy however few rows each expert gets.

use rayon::prelude::*;

use super::ops::MatW;
use super::repack::GROUP;
use crate::Result;

/// Raw pointer that may cross threads; each task writes disjoint elements.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer (a method, so a closure captures the whole Send wrapper, not its field).
    fn at(self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}

/// Whether `OWL_MATMUL_ID=parts` asks for the trait's default (per weight used, `get_rows`
/// and one `matmul`) instead of this room's one region, for A/B timing.
pub fn by_parts() -> bool {
    static PARTS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PARTS.get_or_init(|| std::env::var("OWL_MATMUL_ID").is_ok_and(|v| v == "parts"))
}

/// out [ids.len(), m] with out[i] = x[ids[i].0] · ws[ids[i].1]ᵀ; x is [n_x, k] and every
/// weight [m, k] with one activation type (the caller checks shapes and types).
pub fn matmul_id(x: &[f32], n_x: usize, ws: &[MatW<'_>], ids: &[(u32, u32)], out: &mut [f32], qbuf: &mut Vec<u8>) -> Result<()> {
    let Some(w0) = ws.first().map(|m| m.w) else { return Ok(()) };
    let (k, m) = (w0.cols, w0.rows);
    let kern = super::kernels::kernels();
    let vdt = w0.ty.vec_dot_type();
    let a_row = vdt.row_bytes(k).ok_or_else(|| crate::shape_err("matmul_id", format!("row of {k} for {}", vdt.name())))?;
    // 1. Each row of x quantized once, whatever the number of weights it meets.
    qbuf.clear();
    qbuf.resize(a_row * n_x, 0);
    qbuf.par_chunks_mut(a_row).zip(x.par_chunks(k)).for_each(|(q, xr)| kern.quantize_act(vdt, xr, q));
    // 2. The ids grouped by weight (counting sort, stable: a weight's rows keep their
    //    order), and their quantized rows gathered in that order.
    let mut start = vec![0usize; ws.len() + 1];
    for &(_, e) in ids {
        start[e as usize + 1] += 1;
    }
    for e in 0..ws.len() {
        start[e + 1] += start[e];
    }
    let mut fill = start.clone();
    let mut order = vec![0usize; ids.len()];
    for (i, &(_, e)) in ids.iter().enumerate() {
        order[fill[e as usize]] = i;
        fill[e as usize] += 1;
    }
    let mut ga = vec![0u8; a_row * ids.len()];
    ga.par_chunks_mut(a_row).zip(order.par_iter()).for_each(|(dst, &i)| {
        let r = ids[i].0 as usize;
        dst.copy_from_slice(&qbuf[r * a_row..][..a_row]);
    });
    // 3. Tasks: (weight, its weight rows j0..j1, its gathered rows p0..p1), as `matmul`
    //    cuts one weight (blocks of 64 activation rows, runs of 64 weight rows; small runs
    //    where a weight has one row, so that a decode step's experts share the threads).
    const ROW_BLOCK: usize = 64;
    let threads = rayon::current_num_threads();
    let mut tasks: Vec<(usize, usize, usize, usize, usize)> = Vec::new();
    for (e, mw) in ws.iter().enumerate() {
        let (s0, s1) = (start[e], start[e + 1]);
        if s0 == s1 {
            continue;
        }
        let chunk = if s1 - s0 == 1 { 16.max(m / (threads * 64).max(1)).min(256) } else { 64 };
        let chunk = if mw.packed.is_some() { chunk.next_multiple_of(GROUP) } else { chunk };
        for p0 in (s0..s1).step_by(ROW_BLOCK) {
            let p1 = (p0 + ROW_BLOCK).min(s1);
            tasks.extend((0..m.div_ceil(chunk)).map(|c| (e, c * chunk, ((c + 1) * chunk).min(m), p0, p1)));
        }
    }
    let mut tmp = vec![0f32; ids.len() * m];
    let tp = SendPtr(tmp.as_mut_ptr());
    let ga: &[u8] = &ga;
    tasks.into_par_iter().for_each(|(e, j0, j1, p0, p1)| {
        let (w, packed) = (ws[e].w, ws[e].packed);
        let w_row = w.row_bytes();
        let a = &ga[p0 * a_row..p1 * a_row];
        let o = tp.at(p0 * m + j0);
        // SAFETY: this task writes tmp[p * m + j] for p in p0..p1, j in j0..j1 only, all
        // inside tmp's ids.len() * m elements; tasks own disjoint blocks (packed runs are
        // multiples of the group, so j0 starts a group).
        unsafe {
            match packed {
                Some(p) => kern.packed_tile(p, j0 / GROUP, j1 - j0, a, k, o, m),
                None => kern.dot_tile(w.ty, &w.bytes()[j0 * w_row..j1 * w_row], a, k, o, m),
            }
        }
    });
    // 4. Back to the ids' order.
    let tmp: &[f32] = &tmp;
    for (p, &i) in order.iter().enumerate() {
        out[i * m..][..m].copy_from_slice(&tmp[p * m..][..m]);
    }
    Ok(())
}

/// out[rows[i]] += scales[i] * y[i], in the order of i (`Backend::add_rows_scaled`; the
/// caller checks shapes). The same two roundings per element as the host fallback.
pub fn add_rows_scaled(out: &mut [f32], cols: usize, y: &[f32], rows: &[u32], scales: &[f32]) {
    for ((&r, &s), src) in rows.iter().zip(scales).zip(y.chunks_exact(cols)) {
        for (d, &v) in out[r as usize * cols..][..cols].iter_mut().zip(src) {
            *d += s * v;
        }
    }
}
