//! The Backend trait: the short list of ops an LLM forward pass needs, over
//! device-resident tensors behind handles. Implementations: `cpu` (always),
//! `wgpu` and `cuda` (when compiled in; otherwise `open` answers "not available").
//!
//! Ops are enqueued without synchronising; only `read` waits for the device.
//! Activations are f32 matrices `[rows, cols]` (row-major); weights keep their
//! GGML block layout; the KV cache is f16.

pub mod cpu;
#[cfg(feature = "wgpu")]
pub mod wgpu;

use std::fmt;
use std::sync::Arc;

pub use owl_quant::GgmlType;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("device `{device}` is not available: {reason}")]
    NotAvailable { device: String, reason: String },
    #[error("{op}: shape mismatch: {detail}")]
    Shape { op: &'static str, detail: String },
    #[error("{op}: weight type {ty:?} is not supported on {device}")]
    Unsupported { op: &'static str, ty: GgmlType, device: &'static str },
    #[error("{op}: {detail}")]
    Invalid { op: &'static str, detail: String },
    #[error(transparent)]
    Quant(#[from] owl_quant::QuantError),
}

pub type Result<T> = std::result::Result<T, BackendError>;

/// Bytes that outlive the backend's use of them (a memory map, or a Vec in tests).
pub type SharedBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// A weight as it lies in the model file: GGML blocks, `rows` rows of `cols` elements.
#[derive(Clone)]
pub struct WeightData {
    pub name: String,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    /// Who keeps the bytes alive (the CPU backend borrows them without copying).
    pub owner: SharedBytes,
    pub offset: usize,
    pub len: usize,
}

impl WeightData {
    /// Checks that `len` matches the type and shape and that the range lies in `owner`.
    pub fn new(name: impl Into<String>, ty: GgmlType, rows: usize, cols: usize, owner: SharedBytes, offset: usize, len: usize) -> Result<Self> {
        let name = name.into();
        let row_bytes = ty.row_bytes(cols).ok_or_else(|| BackendError::Invalid {
            op: "upload",
            detail: format!("{name}: row of {cols} is not a multiple of {}'s block of {}", ty.name(), ty.block_len()),
        })?;
        let want = row_bytes.checked_mul(rows);
        let avail = (*owner).as_ref().len();
        if want != Some(len) || offset.checked_add(len).is_none_or(|end| end > avail) {
            return Err(BackendError::Invalid {
                op: "upload",
                detail: format!("{name}: {rows}x{cols} {} needs {want:?} bytes, have {len} at {offset} of {avail}", ty.name()),
            });
        }
        Ok(WeightData { name, ty, rows, cols, owner, offset, len })
    }

    /// A weight from f32 values (tests, small tensors).
    pub fn from_f32(name: impl Into<String>, rows: usize, cols: usize, data: &[f32]) -> Result<Self> {
        let bytes: Vec<u8> = bytemuck::cast_slice(data).to_vec();
        let len = bytes.len();
        Self::new(name, GgmlType::F32, rows, cols, Arc::new(bytes), 0, len)
    }

    pub fn bytes(&self) -> &[u8] {
        &(*self.owner).as_ref()[self.offset..self.offset + self.len]
    }

    pub fn row_bytes(&self) -> usize {
        self.len / self.rows.max(1)
    }
}

impl fmt::Debug for WeightData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WeightData({} {} [{} x {}])", self.name, self.ty.name(), self.rows, self.cols)
    }
}

/// What a tensor holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorKind {
    /// f32 activations.
    F32,
    /// f16 (the KV cache).
    F16,
    /// A weight in its GGML type.
    Weight(GgmlType),
}

/// Handle to a device tensor: `[rows, cols]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tensor {
    pub id: u32,
    pub rows: usize,
    pub cols: usize,
    pub kind: TensorKind,
}

/// Which elements RoPE rotates together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeMode {
    /// Adjacent pairs (2i, 2i+1): llama.
    Normal,
    /// Halves (i, i + n_rot/2): gemma, qwen (GPT-NeoX).
    Neox,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RopeParams {
    pub head_dim: usize,
    /// Dimensions rotated from the start of each head (≤ head_dim).
    pub n_rot: usize,
    pub base: f32,
    /// Linear position scaling (1.0: none).
    pub freq_scale: f32,
    pub mode: RopeMode,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnParams {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    /// Multiplies q·k (usually 1/sqrt(head_dim)).
    pub scale: f32,
    /// If set, scores become cap * tanh(score / cap) before softmax.
    pub softcap: Option<f32>,
    /// Sliding window: a query at position p sees keys at positions > p - window.
    pub window: Option<usize>,
}

/// The KV cells of the sequences in a batch, and which sequence and position each row is.
#[derive(Clone, Copy, Debug)]
pub struct AttnBatch<'a> {
    /// For each sequence, the KV cell of position p at index p (pages flattened).
    pub seq_cells: &'a [&'a [u32]],
    /// For each query row: (index into seq_cells, position).
    pub rows: &'a [(u32, u32)],
}

/// Device choice for `open`: `cpu`, `wgpu` (the best adapter) or `wgpu:N`
/// (adapter N as `owl devices` lists them).
pub fn open(device: &str, threads: Option<usize>) -> Result<Box<dyn Backend>> {
    match device {
        "cpu" => Ok(Box::new(cpu::CpuBackend::new(threads)?)),
        d if d == "wgpu" || d.starts_with("wgpu:") => open_wgpu(d),
        "cuda" | "metal" => Err(BackendError::NotAvailable {
            device: device.to_string(),
            reason: format!("this build of owl has no {device} backend yet; use --device cpu or wgpu"),
        }),
        other => Err(BackendError::NotAvailable {
            device: other.to_string(),
            reason: "unknown device; choose one of: cpu, wgpu, wgpu:N".into(),
        }),
    }
}

#[cfg(feature = "wgpu")]
fn open_wgpu(device: &str) -> Result<Box<dyn Backend>> {
    let index = match device.strip_prefix("wgpu:") {
        None => None,
        Some(i) => Some(i.parse::<usize>().map_err(|_| BackendError::NotAvailable {
            device: device.to_string(),
            reason: "expected wgpu:N with N an adapter index from `owl devices`".into(),
        })?),
    };
    Ok(Box::new(crate::wgpu::WgpuBackend::new(index)?))
}

#[cfg(not(feature = "wgpu"))]
fn open_wgpu(device: &str) -> Result<Box<dyn Backend>> {
    Err(BackendError::NotAvailable {
        device: device.to_string(),
        reason: "this build of owl was compiled without the wgpu backend (feature `wgpu` of owl-backends)".into(),
    })
}

/// A compute device. Small and object-safe; chosen at run time by `--device`.
///
/// Scratch tensors from `alloc` live until `reset_scratch`; weights and KV
/// tensors live as long as the backend.
pub trait Backend: Send {
    /// e.g. "cpu (avx512-vnni, 2 threads)".
    fn name(&self) -> String;
    /// Worker threads (CPU) or 0.
    fn threads(&self) -> usize {
        0
    }

    /// (optional) The thread pool the backend's ops run on. A caller that runs
    /// its whole step loop inside it (`pool.install`) saves a cross-thread
    /// hand-off per op. Defaults to None: no pool, nothing to enter.
    fn thread_pool(&self) -> Option<Arc<rayon::ThreadPool>> {
        None
    }

    /// Takes a weight: the CPU backend borrows the mapped bytes; GPU backends upload once.
    fn upload_weight(&mut self, w: WeightData) -> Result<Tensor>;
    /// A zeroed f16 tensor that lives as long as the backend (KV cache).
    fn alloc_kv(&mut self, rows: usize, cols: usize) -> Result<Tensor>;
    /// An f32 scratch tensor (contents unspecified) valid until `reset_scratch`.
    fn alloc(&mut self, rows: usize, cols: usize) -> Result<Tensor>;
    /// Frees every scratch tensor.
    fn reset_scratch(&mut self);

    /// Writes host f32 data into a scratch tensor.
    fn write(&mut self, t: &Tensor, data: &[f32]) -> Result<()>;
    /// Reads an f32 tensor back (waits for queued work). The only host round trip of a step.
    fn read(&mut self, t: &Tensor, out: &mut [f32]) -> Result<()>;

    /// out[r] = table[tokens[r]] (any weight type, dequantized), times `scale`.
    fn embed(&mut self, table: &Tensor, tokens: &[u32], scale: f32, out: &Tensor) -> Result<()>;
    /// out = x · wᵀ: x [n, k] f32, w [m, k] weight, out [n, m].
    fn matmul(&mut self, x: &Tensor, w: &Tensor, out: &Tensor) -> Result<()>;
    /// (optional) Several matmuls of the same x, e.g. q/k/v or gate/up: each
    /// out = x · wᵀ. A backend may share the activation quantization and run
    /// them as one dispatch; every output equals its own `matmul`. Defaults to
    /// one `matmul` per pair.
    fn matmul_many(&mut self, x: &Tensor, pairs: &[(&Tensor, &Tensor)]) -> Result<()> {
        for (w, out) in pairs {
            self.matmul(x, w, out)?;
        }
        Ok(())
    }
    /// (optional) Indexed matmul (mixture of experts; ggml's `mul_mat_id`): out row i =
    /// x[ids[i].0] · ws[ids[i].1]ᵀ. Every weight of `ws` is [m, x.cols]; out is
    /// [ids.len(), m]. Each weight runs once over all the rows routed to it, so its bytes
    /// are read once per call whatever the batch, and every row equals its own `matmul`
    /// bit for bit. Defaults to `matmul_id_by_parts`: per weight used, `get_rows` of its
    /// rows, a `matmul`, one read back, and one `write` of out at the end.
    fn matmul_id(&mut self, x: &Tensor, ws: &[Tensor], ids: &[(u32, u32)], out: &Tensor) -> Result<()> {
        matmul_id_by_parts(self, x, ws, ids, out)
    }
    /// x[r] += b for every row (b is a [1, cols] weight).
    fn add_bias(&mut self, x: &Tensor, b: &Tensor) -> Result<()>;
    /// RMS norm over each group of `w.cols` consecutive elements of each row, times w.
    /// A group of `cols` is the usual norm; `head_dim` gives per-head q/k norms.
    /// (CPU: squares in f32 summed in f64, x * (1/sqrt(mean + eps)) * w, as ggml.)
    fn rms_norm(&mut self, x: &Tensor, w: &Tensor, eps: f32, out: &Tensor) -> Result<()>;
    /// Rotates each head of each row in place; row r is at position `pos[r]`.
    /// (CPU: ggml's theta recurrence and one FMA per rotated value.)
    fn rope(&mut self, x: &Tensor, pos: &[u32], p: &RopeParams) -> Result<()>;
    /// Stores rows of k and v (f32, [n, n_head_kv*head_dim]) into the cache cells `cells[r]`.
    fn kv_store(&mut self, k_cache: &Tensor, v_cache: &Tensor, k: &Tensor, v: &Tensor, cells: &[u32]) -> Result<()>;
    /// Causal grouped-query attention of q [n, n_head*head_dim] over the cached keys and values.
    /// Defined as llama.cpp's CPU flash attention computes it: q rounded to f16;
    /// score = f16 dot of q and k, times `scale` (with a softcap:
    /// cap * tanh(dot * scale / cap)); an online softmax over the visible cells
    /// in cell order whose V accumulator is f16, rounded after every step (times
    /// e^(m_old - m) when a new maximum m appears, then + v * e^(s - m)); the
    /// accumulator over the sum of the weights at the end. A GPU backend may keep
    /// the accumulator in f32 (within that rounding).
    fn attention(&mut self, q: &Tensor, k_cache: &Tensor, v_cache: &Tensor, batch: &AttnBatch<'_>, p: &AttnParams, out: &Tensor) -> Result<()>;
    /// out = silu(gate) * up. (CPU: e^x by ggml's vector approximation, `ops::expf_ggml`.)
    fn swiglu(&mut self, gate: &Tensor, up: &Tensor, out: &Tensor) -> Result<()>;
    /// out = gelu(gate) * up, with gelu as ggml's CPU table: gelu_tanh(f16(x))
    /// rounded to f16, 0 for x <= -10, x for x >= 10. A GPU backend may compute
    /// gelu_tanh in f32 (within that rounding).
    fn geglu(&mut self, gate: &Tensor, up: &Tensor, out: &Tensor) -> Result<()>;
    /// a += b.
    fn add(&mut self, a: &Tensor, b: &Tensor) -> Result<()>;
    /// x *= s.
    fn scale(&mut self, x: &Tensor, s: f32) -> Result<()>;
    /// x = cap * tanh(x / cap).
    fn softcap(&mut self, x: &Tensor, cap: f32) -> Result<()>;
    /// out[i] = x[rows[i]].
    fn get_rows(&mut self, x: &Tensor, rows: &[u32], out: &Tensor) -> Result<()>;
    /// (optional) out[rows[i]] += scales[i] * y[i] for each row i of `y`, in order (mixture of
    /// experts: an expert's outputs, weighted, into the rows of the tokens routed to it).
    /// Defaults to reading both back, adding on the host and writing `out`.
    fn add_rows_scaled(&mut self, out: &Tensor, y: &Tensor, rows: &[u32], scales: &[f32]) -> Result<()> {
        if y.cols != out.cols || rows.len() != y.rows || scales.len() != y.rows || rows.iter().any(|&r| r as usize >= out.rows) {
            return Err(shape_err("add_rows_scaled", format!("[{} x {}] into [{} x {}] at {} rows with {} scales", y.rows, y.cols, out.rows, out.cols, rows.len(), scales.len())));
        }
        let (mut o, mut v) = (vec![0f32; out.rows * out.cols], vec![0f32; y.rows * y.cols]);
        self.read(out, &mut o)?;
        self.read(y, &mut v)?;
        for ((&r, &s), src) in rows.iter().zip(scales).zip(v.chunks_exact(y.cols)) {
            for (d, &x) in o[r as usize * out.cols..][..out.cols].iter_mut().zip(src) {
                *d += s * x;
            }
        }
        self.write(out, &o)
    }
    /// (optional) LayerNorm of each row (BERT encoders): (x - mean) / sqrt(var + eps) * w + b,
    /// mean and variance in f32 as ggml's `ggml_norm`; `w` and `b` are host copies of the
    /// `[cols]` weights (small F32 tensors in every encoder file). Defaults to reading `x`
    /// back, normalizing on the host and writing `out`: one round trip, correct everywhere.
    fn layer_norm(&mut self, x: &Tensor, w: &[f32], b: &[f32], eps: f32, out: &Tensor) -> Result<()> {
        if x.rows != out.rows || x.cols != out.cols || w.len() != x.cols || b.len() != x.cols {
            return Err(shape_err("layer_norm", format!("[{} x {}] -> [{} x {}] with weights of {} and {}", x.rows, x.cols, out.rows, out.cols, w.len(), b.len())));
        }
        let mut v = vec![0f32; x.rows * x.cols];
        self.read(x, &mut v)?;
        for row in v.chunks_exact_mut(x.cols) {
            layer_norm_row(row, w, b, eps);
        }
        self.write(out, &v)
    }
}

/// Checks `Backend::matmul_id`'s shapes: the weights share x's width and one row count,
/// and every id names a row of x and a weight. Returns m, the weights' row count.
pub fn check_matmul_id(x: &Tensor, ws: &[Tensor], ids: &[(u32, u32)], out: &Tensor) -> Result<usize> {
    let m = ws.first().map_or(0, |w| w.rows);
    let bad = ws.iter().any(|w| w.cols != x.cols || w.rows != m) || out.rows != ids.len() || out.cols != m || ids.iter().any(|&(r, e)| r as usize >= x.rows || e as usize >= ws.len());
    if bad || ws.is_empty() {
        return Err(shape_err("matmul_id", format!("x [{} x {}] over {} weights of [{m} x {}] at {} ids -> out [{} x {}]", x.rows, x.cols, ws.len(), ws.first().map_or(0, |w| w.cols), ids.len(), out.rows, out.cols)));
    }
    Ok(m)
}

/// `Backend::matmul_id` from the required ops, correct on every backend: per weight
/// used (in weight order), its rows of x gathered with `get_rows`, one `matmul`, the
/// result read back into its rows of a host copy of out, then one `write`.
pub fn matmul_id_by_parts<B: Backend + ?Sized>(be: &mut B, x: &Tensor, ws: &[Tensor], ids: &[(u32, u32)], out: &Tensor) -> Result<()> {
    let m = check_matmul_id(x, ws, ids, out)?;
    let mut host = vec![0f32; ids.len() * m];
    for (e, w) in ws.iter().enumerate() {
        let mine: Vec<usize> = (0..ids.len()).filter(|&i| ids[i].1 as usize == e).collect();
        if mine.is_empty() {
            continue;
        }
        let rows: Vec<u32> = mine.iter().map(|&i| ids[i].0).collect();
        let xs = be.alloc(rows.len(), x.cols)?;
        be.get_rows(x, &rows, &xs)?;
        let y = be.alloc(rows.len(), m)?;
        be.matmul(&xs, w, &y)?;
        let mut v = vec![0f32; rows.len() * m];
        be.read(&y, &mut v)?;
        for (&i, src) in mine.iter().zip(v.chunks_exact(m)) {
            host[i * m..][..m].copy_from_slice(src);
        }
    }
    be.write(out, &host)
}

/// One row of `Backend::layer_norm`, in ggml's order (`ggml_compute_forward_norm_f32`:
/// the mean, then the variance of the centred values, both summed in f64 as ggml's
/// `ggml_float`), then the affine weights.
pub fn layer_norm_row(row: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    let n = row.len() as f64;
    let mean = (row.iter().map(|&x| x as f64).sum::<f64>() / n) as f32;
    let mut sum2 = 0f64;
    for x in row.iter_mut() {
        *x -= mean;
        sum2 += (*x as f64) * (*x as f64);
    }
    let scale = 1.0 / ((sum2 / n) as f32 + eps).sqrt();
    for ((x, w), b) in row.iter_mut().zip(w).zip(b) {
        *x = *x * scale * w + b;
    }
}

pub(crate) fn shape_err(op: &'static str, detail: String) -> BackendError {
    BackendError::Shape { op, detail }
}
