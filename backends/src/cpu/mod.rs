//! The CPU backend: weights borrowed from the file map, activations quantized
//! per row so weight dots run in int8, work spread over a rayon pool.

mod expf;
pub mod kernels;
mod matmul_id;
mod ops;
pub mod repack;

use std::sync::{Arc, OnceLock};

use half::f16;
use rayon::ThreadPool;

use crate::{check_matmul_id, matmul_id_by_parts, shape_err, AttnBatch, AttnParams, Backend, BackendError, Result, RopeParams, Tensor, TensorKind, WeightData};

enum Slot {
    F32(Vec<f32>),
    F16(Vec<f16>),
    /// A weight and, once a matmul first reads it, its packed copy (`None`
    /// where the kernel table has no packed tile for its type).
    Weight(WeightData, OnceLock<Option<repack::Packed>>),
    Free,
}

pub struct CpuBackend {
    pool: Arc<ThreadPool>,
    slots: Vec<Slot>,
    /// Slots below this index are weights and KV; above are scratch.
    scratch: Vec<u32>,
    /// Spare f32 buffers for reuse by `alloc`.
    spare: Vec<Vec<f32>>,
    /// Scratch for quantized activations.
    qbuf: Vec<u8>,
}

impl CpuBackend {
    pub fn new(threads: Option<usize>) -> Result<Self> {
        let n = threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("owl-cpu-{i}"))
            .build()
            .map_err(|e| BackendError::NotAvailable { device: "cpu".into(), reason: e.to_string() })?;
        Ok(CpuBackend { pool: Arc::new(pool), slots: Vec::new(), scratch: Vec::new(), spare: Vec::new(), qbuf: Vec::new() })
    }

    fn push(&mut self, s: Slot) -> u32 {
        if let Some(i) = self.slots.iter().position(|s| matches!(s, Slot::Free)) {
            self.slots[i] = s;
            i as u32
        } else {
            self.slots.push(s);
            (self.slots.len() - 1) as u32
        }
    }

    fn f32(&self, t: &Tensor) -> Result<&[f32]> {
        match self.slots.get(t.id as usize) {
            Some(Slot::F32(v)) => Ok(&v[..t.rows * t.cols]),
            _ => Err(BackendError::Invalid { op: "tensor", detail: format!("tensor {} is not an f32 tensor", t.id) }),
        }
    }

    fn weight(&self, t: &Tensor) -> Result<&WeightData> {
        match self.slots.get(t.id as usize) {
            Some(Slot::Weight(w, _)) => Ok(w),
            _ => Err(BackendError::Invalid { op: "tensor", detail: format!("tensor {} is not a weight", t.id) }),
        }
    }

    /// A weight as the matmul reads it: packed on first use where the kernel
    /// table has a packed tile for its type (the map's pages of it are then
    /// released: only the packed copy is read from here on).
    fn mat_weight(&self, t: &Tensor) -> Result<ops::MatW<'_>> {
        match self.slots.get(t.id as usize) {
            Some(Slot::Weight(w, packed)) => {
                let packed = packed.get_or_init(|| {
                    if !kernels::kernels().packs(w.ty) {
                        return None;
                    }
                    let p = self.pool.install(|| repack::pack(w.ty, w.bytes(), w.rows, w.cols));
                    if p.is_some() {
                        repack::release(w.bytes());
                    }
                    p
                });
                Ok(ops::MatW { w, packed: packed.as_ref() })
            }
            _ => Err(BackendError::Invalid { op: "tensor", detail: format!("tensor {} is not a weight", t.id) }),
        }
    }

    /// Takes an f32 buffer out of its slot so it can be written while others are read.
    fn take_f32(&mut self, t: &Tensor) -> Result<Vec<f32>> {
        match self.slots.get_mut(t.id as usize) {
            Some(slot @ Slot::F32(_)) => match std::mem::replace(slot, Slot::Free) {
                Slot::F32(v) => Ok(v),
                _ => unreachable!(),
            },
            _ => Err(BackendError::Invalid { op: "tensor", detail: format!("tensor {} is not an f32 tensor", t.id) }),
        }
    }

    fn put_f32(&mut self, t: &Tensor, v: Vec<f32>) {
        self.slots[t.id as usize] = Slot::F32(v);
    }

    fn take_f16(&mut self, t: &Tensor) -> Result<Vec<f16>> {
        match self.slots.get_mut(t.id as usize) {
            Some(slot @ Slot::F16(_)) => match std::mem::replace(slot, Slot::Free) {
                Slot::F16(v) => Ok(v),
                _ => unreachable!(),
            },
            _ => Err(BackendError::Invalid { op: "tensor", detail: format!("tensor {} is not an f16 tensor", t.id) }),
        }
    }

    fn f16(&self, t: &Tensor) -> Result<&[f16]> {
        match self.slots.get(t.id as usize) {
            Some(Slot::F16(v)) => Ok(v),
            _ => Err(BackendError::Invalid { op: "tensor", detail: format!("tensor {} is not an f16 tensor", t.id) }),
        }
    }

    /// Runs `f` with `out` taken out of its slot (so inputs can be borrowed).
    fn with_out<R>(&mut self, out: &Tensor, f: impl FnOnce(&Self, &mut [f32]) -> Result<R>) -> Result<R> {
        let mut o = self.take_f32(out)?;
        let n = out.rows * out.cols;
        let r = f(self, &mut o[..n]);
        self.put_f32(out, o);
        r
    }
}

fn same_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.rows != b.rows || a.cols != b.cols {
        return Err(shape_err(op, format!("[{} x {}] vs [{} x {}]", a.rows, a.cols, b.rows, b.cols)));
    }
    Ok(())
}

impl Backend for CpuBackend {
    fn name(&self) -> String {
        format!("cpu ({}, {} threads)", ops::kernel_name(), self.pool.current_num_threads())
    }

    fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    fn thread_pool(&self) -> Option<Arc<ThreadPool>> {
        Some(self.pool.clone())
    }

    fn upload_weight(&mut self, w: WeightData) -> Result<Tensor> {
        let (rows, cols, ty) = (w.rows, w.cols, w.ty);
        let id = self.push(Slot::Weight(w, OnceLock::new()));
        Ok(Tensor { id, rows, cols, kind: TensorKind::Weight(ty) })
    }

    fn alloc_kv(&mut self, rows: usize, cols: usize) -> Result<Tensor> {
        let n = rows.checked_mul(cols).ok_or_else(|| shape_err("alloc_kv", format!("{rows} x {cols} overflows")))?;
        // Zeroed by the allocator (fresh pages from the OS), so the cache only
        // becomes resident as sequences fill it: `vec![f16::ZERO; n]` would write
        // every element and make the whole context resident up front.
        let id = self.push(Slot::F16(bytemuck::allocation::zeroed_vec(n)));
        Ok(Tensor { id, rows, cols, kind: TensorKind::F16 })
    }

    fn alloc(&mut self, rows: usize, cols: usize) -> Result<Tensor> {
        let n = rows.checked_mul(cols).ok_or_else(|| shape_err("alloc", format!("{rows} x {cols} overflows")))?;
        // Reuse the smallest spare buffer that fits.
        let best = self.spare.iter().enumerate().filter(|(_, v)| v.capacity() >= n).min_by_key(|(_, v)| v.capacity()).map(|(i, _)| i);
        let mut buf = match best {
            Some(i) => self.spare.swap_remove(i),
            None => Vec::with_capacity(n),
        };
        buf.resize(n, 0.0);
        let id = self.push(Slot::F32(buf));
        self.scratch.push(id);
        Ok(Tensor { id, rows, cols, kind: TensorKind::F32 })
    }

    fn reset_scratch(&mut self) {
        for id in std::mem::take(&mut self.scratch) {
            if let Slot::F32(v) = std::mem::replace(&mut self.slots[id as usize], Slot::Free) {
                self.spare.push(v);
            }
        }
    }

    fn write(&mut self, t: &Tensor, data: &[f32]) -> Result<()> {
        if data.len() != t.rows * t.cols {
            return Err(shape_err("write", format!("{} values for [{} x {}]", data.len(), t.rows, t.cols)));
        }
        self.with_out(t, |_, o| {
            o.copy_from_slice(data);
            Ok(())
        })
    }

    fn read(&mut self, t: &Tensor, out: &mut [f32]) -> Result<()> {
        let src = self.f32(t)?;
        if out.len() != src.len() {
            return Err(shape_err("read", format!("{} values for [{} x {}]", out.len(), t.rows, t.cols)));
        }
        out.copy_from_slice(src);
        Ok(())
    }

    fn embed(&mut self, table: &Tensor, tokens: &[u32], scale: f32, out: &Tensor) -> Result<()> {
        if out.rows != tokens.len() || out.cols != table.cols {
            return Err(shape_err("embed", format!("{} tokens of {} into [{} x {}]", tokens.len(), table.cols, out.rows, out.cols)));
        }
        self.with_out(out, |s, o| {
            let w = s.weight(table)?;
            ops::embed(w, tokens, scale, o)
        })
    }

    fn matmul(&mut self, x: &Tensor, w: &Tensor, out: &Tensor) -> Result<()> {
        if x.cols != w.cols || out.rows != x.rows || out.cols != w.rows {
            return Err(shape_err(
                "matmul",
                format!("x [{} x {}] · wᵀ [{} x {}] -> out [{} x {}]", x.rows, x.cols, w.rows, w.cols, out.rows, out.cols),
            ));
        }
        let mut qbuf = std::mem::take(&mut self.qbuf);
        let r = self.with_out(out, |s, o| {
            let xw = s.f32(x)?;
            let ww = s.mat_weight(w)?;
            s.pool.install(|| ops::matmul(xw, x.rows, ww, o, &mut qbuf))
        });
        self.qbuf = qbuf;
        r
    }

    fn matmul_many(&mut self, x: &Tensor, pairs: &[(&Tensor, &Tensor)]) -> Result<()> {
        let shared = pairs.iter().all(|(w, _)| w.cols == x.cols)
            && pairs.windows(2).all(|p| {
                let ty = |t: &Tensor| self.weight(t).map(|w| w.ty.vec_dot_type()).ok();
                ty(p[0].0).is_some() && ty(p[0].0) == ty(p[1].0)
            });
        if !shared || pairs.len() < 2 {
            for (w, out) in pairs {
                self.matmul(x, w, out)?;
            }
            return Ok(());
        }
        for (w, out) in pairs {
            if out.rows != x.rows || out.cols != w.rows {
                return Err(shape_err("matmul", format!("x [{} x {}] · wᵀ [{} x {}] -> out [{} x {}]", x.rows, x.cols, w.rows, w.cols, out.rows, out.cols)));
            }
        }
        let mut outs = Vec::with_capacity(pairs.len());
        for (_, out) in pairs {
            match self.take_f32(out) {
                Ok(v) => outs.push(v),
                Err(e) => {
                    for ((_, o), v) in pairs.iter().zip(outs) {
                        self.put_f32(o, v);
                    }
                    return Err(e);
                }
            }
        }
        let mut qbuf = std::mem::take(&mut self.qbuf);
        let r = (|| {
            let xw = self.f32(x)?;
            let ws = pairs.iter().map(|(w, _)| self.mat_weight(w)).collect::<Result<Vec<_>>>()?;
            let mut os: Vec<&mut [f32]> = outs.iter_mut().zip(pairs).map(|(v, (_, o))| &mut v[..o.rows * o.cols]).collect();
            self.pool.install(|| ops::matmul_many(xw, x.rows, &ws, &mut os, &mut qbuf))
        })();
        self.qbuf = qbuf;
        for ((_, o), v) in pairs.iter().zip(outs) {
            self.put_f32(o, v);
        }
        r
    }

    fn matmul_id(&mut self, x: &Tensor, ws: &[Tensor], ids: &[(u32, u32)], out: &Tensor) -> Result<()> {
        let m = check_matmul_id(x, ws, ids, out)?;
        let vdt = |t: &Tensor| self.weight(t).map(|w| w.ty.vec_dot_type()).ok();
        if ws.iter().any(|w| vdt(w).is_none() || vdt(w) != vdt(&ws[0])) || matmul_id::by_parts() {
            // Weights of different activation types (or `OWL_MATMUL_ID=parts`): one matmul per weight.
            return matmul_id_by_parts(self, x, ws, ids, out);
        }
        let mut qbuf = std::mem::take(&mut self.qbuf);
        let r = self.with_out(out, |s, o| {
            let xw = s.f32(x)?;
            let mws = ws.iter().map(|w| s.mat_weight(w)).collect::<Result<Vec<_>>>()?;
            debug_assert!(mws.iter().all(|w| w.w.rows == m));
            s.pool.install(|| matmul_id::matmul_id(xw, x.rows, &mws, ids, o, &mut qbuf))
        });
        self.qbuf = qbuf;
        r
    }

    fn add_rows_scaled(&mut self, out: &Tensor, y: &Tensor, rows: &[u32], scales: &[f32]) -> Result<()> {
        if y.cols != out.cols || rows.len() != y.rows || scales.len() != y.rows || rows.iter().any(|&r| r as usize >= out.rows) {
            return Err(shape_err("add_rows_scaled", format!("[{} x {}] into [{} x {}] at {} rows with {} scales", y.rows, y.cols, out.rows, out.cols, rows.len(), scales.len())));
        }
        if out.id == y.id {
            return Err(shape_err("add_rows_scaled", "out and y are one tensor".into()));
        }
        self.with_out(out, |s, o| {
            matmul_id::add_rows_scaled(o, out.cols, s.f32(y)?, rows, scales);
            Ok(())
        })
    }

    fn add_bias(&mut self, x: &Tensor, b: &Tensor) -> Result<()> {
        if b.cols != x.cols || b.rows != 1 {
            return Err(shape_err("add_bias", format!("bias [{} x {}] for rows of {}", b.rows, b.cols, x.cols)));
        }
        self.with_out(x, |s, o| {
            let bias = ops::weight_f32(s.weight(b)?)?;
            for row in o.chunks_exact_mut(x.cols) {
                for (v, b) in row.iter_mut().zip(&bias) {
                    *v += b;
                }
            }
            Ok(())
        })
    }

    fn rms_norm(&mut self, x: &Tensor, w: &Tensor, eps: f32, out: &Tensor) -> Result<()> {
        same_shape("rms_norm", x, out)?;
        if w.cols == 0 || !x.cols.is_multiple_of(w.cols) {
            return Err(shape_err("rms_norm", format!("weight of {} for rows of {}", w.cols, x.cols)));
        }
        let wv = ops::weight_f32(self.weight(w)?)?;
        if x.id == out.id {
            return self.with_out(out, |_, o| {
                ops::rms_norm_inplace(o, &wv, eps);
                Ok(())
            });
        }
        self.with_out(out, |s, o| {
            o.copy_from_slice(s.f32(x)?);
            ops::rms_norm_inplace(o, &wv, eps);
            Ok(())
        })
    }

    fn rope(&mut self, x: &Tensor, pos: &[u32], p: &RopeParams) -> Result<()> {
        if pos.len() != x.rows || p.head_dim == 0 || !x.cols.is_multiple_of(p.head_dim) || p.n_rot > p.head_dim || !p.n_rot.is_multiple_of(2) {
            return Err(shape_err("rope", format!("[{} x {}] with {} positions, head_dim {}, n_rot {}", x.rows, x.cols, pos.len(), p.head_dim, p.n_rot)));
        }
        self.with_out(x, |_, o| {
            ops::rope(o, x.cols, pos, p);
            Ok(())
        })
    }

    fn kv_store(&mut self, k_cache: &Tensor, v_cache: &Tensor, k: &Tensor, v: &Tensor, cells: &[u32]) -> Result<()> {
        same_shape("kv_store", k, v)?;
        if k.cols != k_cache.cols || v.cols != v_cache.cols || cells.len() != k.rows {
            return Err(shape_err("kv_store", format!("{} rows of {} into cache rows of {}", k.rows, k.cols, k_cache.cols)));
        }
        if let Some(&c) = cells.iter().find(|&&c| c as usize >= k_cache.rows) {
            return Err(shape_err("kv_store", format!("cell {c} outside the cache of {}", k_cache.rows)));
        }
        for (cache, src) in [(k_cache, k), (v_cache, v)] {
            let mut c = self.take_f16(cache)?;
            let s = self.f32(src)?;
            for (r, &cell) in cells.iter().enumerate() {
                let dst = &mut c[cell as usize * cache.cols..][..cache.cols];
                for (d, &x) in dst.iter_mut().zip(&s[r * src.cols..][..src.cols]) {
                    *d = f16::from_f32(x);
                }
            }
            self.slots[cache.id as usize] = Slot::F16(c);
        }
        Ok(())
    }

    fn attention(&mut self, q: &Tensor, k_cache: &Tensor, v_cache: &Tensor, batch: &AttnBatch<'_>, p: &AttnParams, out: &Tensor) -> Result<()> {
        same_shape("attention", q, out)?;
        if q.cols != p.n_head * p.head_dim || k_cache.cols != p.n_head_kv * p.head_dim || p.n_head_kv == 0 || !p.n_head.is_multiple_of(p.n_head_kv) {
            return Err(shape_err("attention", format!("q cols {} for {} heads of {}, cache cols {} for {} kv heads", q.cols, p.n_head, p.head_dim, k_cache.cols, p.n_head_kv)));
        }
        if batch.rows.len() != q.rows {
            return Err(shape_err("attention", format!("{} batch rows for {} query rows", batch.rows.len(), q.rows)));
        }
        for &(s, pos) in batch.rows {
            let cells = batch.seq_cells.get(s as usize).ok_or_else(|| shape_err("attention", format!("sequence {s} not in batch")))?;
            if cells.len() <= pos as usize {
                return Err(shape_err("attention", format!("position {pos} but sequence {s} holds {} cells", cells.len())));
            }
            if let Some(&c) = cells[..=pos as usize].iter().find(|&&c| c as usize >= k_cache.rows) {
                return Err(shape_err("attention", format!("cell {c} outside the cache of {}", k_cache.rows)));
            }
        }
        self.with_out(out, |s, o| {
            let qv = s.f32(q)?;
            let kc = s.f16(k_cache)?;
            let vc = s.f16(v_cache)?;
            s.pool.install(|| ops::attention(qv, kc, vc, batch, p, o));
            Ok(())
        })
    }

    fn swiglu(&mut self, gate: &Tensor, up: &Tensor, out: &Tensor) -> Result<()> {
        same_shape("swiglu", gate, up)?;
        same_shape("swiglu", gate, out)?;
        self.with_out(out, |s, o| {
            let (g, u) = (s.f32(gate)?, s.f32(up)?);
            s.pool.install(|| ops::glu(g, u, o, ops::silu));
            Ok(())
        })
    }

    fn geglu(&mut self, gate: &Tensor, up: &Tensor, out: &Tensor) -> Result<()> {
        same_shape("geglu", gate, up)?;
        same_shape("geglu", gate, out)?;
        self.with_out(out, |s, o| {
            let (g, u) = (s.f32(gate)?, s.f32(up)?);
            s.pool.install(|| ops::geglu(g, u, o));
            Ok(())
        })
    }

    fn add(&mut self, a: &Tensor, b: &Tensor) -> Result<()> {
        same_shape("add", a, b)?;
        self.with_out(a, |s, o| {
            for (x, y) in o.iter_mut().zip(s.f32(b)?) {
                *x += y;
            }
            Ok(())
        })
    }

    fn scale(&mut self, x: &Tensor, sc: f32) -> Result<()> {
        self.with_out(x, |_, o| {
            o.iter_mut().for_each(|v| *v *= sc);
            Ok(())
        })
    }

    fn softcap(&mut self, x: &Tensor, cap: f32) -> Result<()> {
        self.with_out(x, |_, o| {
            o.iter_mut().for_each(|v| *v = cap * (*v / cap).tanh());
            Ok(())
        })
    }

    fn get_rows(&mut self, x: &Tensor, rows: &[u32], out: &Tensor) -> Result<()> {
        if out.rows != rows.len() || out.cols != x.cols || rows.iter().any(|&r| r as usize >= x.rows) {
            return Err(shape_err("get_rows", format!("rows {rows:?} of [{} x {}] into [{} x {}]", x.rows, x.cols, out.rows, out.cols)));
        }
        self.with_out(out, |s, o| {
            let src = s.f32(x)?;
            for (i, &r) in rows.iter().enumerate() {
                o[i * x.cols..][..x.cols].copy_from_slice(&src[r as usize * x.cols..][..x.cols]);
            }
            Ok(())
        })
    }
}
