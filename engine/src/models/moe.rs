//! Mixture-of-experts feed-forward (Mixtral-style `llama`, `qwen2moe`, `qwen3moe`),
//! as llama.cpp's `build_moe_ffn` computes it: router logits, softmax over all
//! experts, the top `n_expert_used` per token, their probabilities renormalised
//! where the architecture says (`norm_w`), and each chosen expert's SwiGLU FFN
//! weighted by its probability; Qwen 2 MoE adds a shared expert gated by a sigmoid.
//!
//! A step's tokens are grouped by expert, so each expert's weights are read
//! once per step whatever the batch: `Backend::matmul_id` runs each expert once
//! over the rows routed to it, and the weighted outputs go back to their rows
//! with `add_rows_scaled`. Each expert is a row view of the mapped
//! `ffn_{gate,up,down}_exps` tensors (no copy).

use owl_backends::{Backend, Tensor, WeightData};

use crate::gguf::Gguf;
use crate::EngineError;

/// A SwiGLU FFN (Qwen 2 MoE's shared expert). Shapes are [rows, cols] = [out, in].
struct Expert {
    gate: Tensor, // [n_ff, n_embd]
    up: Tensor,   // [n_ff, n_embd]
    down: Tensor, // [n_embd, n_ff]
}

/// Qwen 2 MoE's shared expert and its gate.
struct Shared {
    gate_inp: Tensor, // [1, n_embd]
    ffn: Expert,
}

pub(super) struct Moe {
    router: Tensor, // [n_expert, n_embd]
    /// Expert x's FFN is gate[x], up[x] ([n_ff, n_embd] each) and down[x] ([n_embd, n_ff]).
    gate: Vec<Tensor>,
    up: Vec<Tensor>,
    down: Vec<Tensor>,
    shared: Option<Shared>,
    n_used: usize,
    /// Renormalise the chosen experts' probabilities to sum to 1.
    norm_w: bool,
    /// Scales the weights (`expert_weights_scale`; 1 when absent).
    w_scale: f32,
    n_ff: usize,
}

/// Rows `r0..r0 + rows` of `name` (a 2-D or 3-D tensor seen as rows of `cols`) as a weight.
fn rows_of(g: &Gguf, name: &str, r0: usize, rows: usize, cols: usize) -> Result<WeightData, EngineError> {
    let t = g.tensor(name).ok_or_else(|| EngineError::MissingTensor(name.to_string()))?;
    let total = t.n_rows() as usize;
    if t.row_len() as usize != cols || total < r0 + rows || total == 0 {
        return Err(EngineError::BadModel(format!("{name} has {total} rows of {}, expected {} rows of {cols}", t.row_len(), r0 + rows)));
    }
    let row_bytes = t.size / total;
    Ok(WeightData::new(format!("{name}[{r0}..{}]", r0 + rows), t.ty, rows, cols, g.tensor_owner(t), t.offset + r0 * row_bytes, rows * row_bytes)?)
}

impl Moe {
    /// Layer `il`'s experts: `n_expert` of width `n_ff` (each a view of the stacked tensors).
    pub(super) fn load(g: &Gguf, be: &mut Box<dyn Backend>, il: usize, n_embd: usize, n_expert: usize, n_used: usize, n_ff: usize, shared_ff: Option<usize>, norm_w: bool, w_scale: f32) -> Result<Moe, EngineError> {
        let n = |s: &str| format!("blk.{il}.{s}.weight");
        let e = n_embd;
        let router = be.upload_weight(rows_of(g, &n("ffn_gate_inp"), 0, n_expert, e)?)?;
        let (mut gate, mut up, mut down) = (Vec::with_capacity(n_expert), Vec::with_capacity(n_expert), Vec::with_capacity(n_expert));
        for x in 0..n_expert {
            gate.push(be.upload_weight(rows_of(g, &n("ffn_gate_exps"), x * n_ff, n_ff, e)?)?);
            up.push(be.upload_weight(rows_of(g, &n("ffn_up_exps"), x * n_ff, n_ff, e)?)?);
            down.push(be.upload_weight(rows_of(g, &n("ffn_down_exps"), x * e, e, n_ff)?)?);
        }
        let shared = match shared_ff {
            Some(sf) => Some(Shared {
                gate_inp: be.upload_weight(rows_of(g, &n("ffn_gate_inp_shexp"), 0, 1, e)?)?,
                ffn: Expert {
                    gate: be.upload_weight(rows_of(g, &n("ffn_gate_shexp"), 0, sf, e)?)?,
                    up: be.upload_weight(rows_of(g, &n("ffn_up_shexp"), 0, sf, e)?)?,
                    down: be.upload_weight(rows_of(g, &n("ffn_down_shexp"), 0, e, sf)?)?,
                },
            }),
            None => None,
        };
        Ok(Moe { router, gate, up, down, shared, n_used, norm_w, w_scale, n_ff })
    }

    /// out = the mixture's output for the normed rows `h` ([n, n_embd]); `out` is overwritten.
    pub(super) fn forward(&self, be: &mut Box<dyn Backend>, h: &Tensor, out: &Tensor) -> Result<(), EngineError> {
        let (n, e, n_expert) = (h.rows, h.cols, self.gate.len());
        // 1. Router: softmax over the experts, the top n_used per row (ties to the lower index).
        let logits = be.alloc(n, n_expert)?;
        be.matmul(h, &self.router, &logits)?;
        let mut p = vec![0f32; n * n_expert];
        be.read(&logits, &mut p)?;
        // Per row, its experts in rank order with their weights (llama.cpp sums a row's
        // experts in that order).
        let mut chosen: Vec<Vec<(usize, f32)>> = Vec::with_capacity(n);
        for row in p.chunks_exact_mut(n_expert) {
            softmax(row);
            let mut idx: Vec<usize> = (0..n_expert).collect();
            idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            let mut top: Vec<(usize, f32)> = idx[..self.n_used].iter().map(|&x| (x, row[x])).collect();
            if self.norm_w {
                let sum: f32 = top.iter().map(|t| t.1).sum();
                top.iter_mut().for_each(|t| t.1 /= sum);
            }
            if self.w_scale != 0.0 && self.w_scale != 1.0 {
                top.iter_mut().for_each(|t| t.1 *= self.w_scale);
            }
            chosen.push(top);
        }
        // 2. Every (row, rank) pair through its expert with `matmul_id`, so each expert's
        //    weights are read once per step over all the rows routed to it; pair i is row
        //    i / n_used at rank i % n_used.
        let k = self.n_used;
        let ids: Vec<(u32, u32)> = chosen.iter().enumerate().flat_map(|(r, c)| c.iter().map(move |t| (r as u32, t.0 as u32))).collect();
        let (g, u, gu) = (be.alloc(n * k, self.n_ff)?, be.alloc(n * k, self.n_ff)?, be.alloc(n * k, self.n_ff)?);
        be.matmul_id(h, &self.gate, &ids, &g)?;
        be.matmul_id(h, &self.up, &ids, &u)?;
        be.swiglu(&g, &u, &gu)?;
        let down_ids: Vec<(u32, u32)> = ids.iter().enumerate().map(|(i, &(_, x))| (i as u32, x)).collect();
        let y = be.alloc(n * k, e)?;
        be.matmul_id(&gu, &self.down, &down_ids, &y)?;
        // 3. The weighted outputs summed into each row in rank order, as llama.cpp sums
        //    a row's experts.
        be.write(out, &vec![0f32; n * e])?;
        let rows: Vec<u32> = (0..(n * k) as u32).map(|i| i / k as u32).collect();
        let w: Vec<f32> = chosen.iter().flat_map(|c| c.iter().map(|t| t.1)).collect();
        be.add_rows_scaled(out, &y, &rows, &w)?;
        // 4. Qwen 2 MoE: + sigmoid(h · gate_inp_shexp) * shared_ffn(h).
        if let Some(s) = &self.shared {
            let gl = be.alloc(n, 1)?;
            be.matmul(h, &s.gate_inp, &gl)?;
            let mut gate = vec![0f32; n];
            be.read(&gl, &mut gate)?;
            gate.iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-*v).exp()));
            let all: Vec<u32> = (0..n as u32).collect();
            let y = shared_ffn(be, &s.ffn, h)?;
            be.add_rows_scaled(out, &y, &all, &gate)?;
        }
        Ok(())
    }
}

/// The shared expert's SwiGLU FFN over every row of `h`: a [h.rows, n_embd] scratch tensor.
fn shared_ffn(be: &mut Box<dyn Backend>, ex: &Expert, h: &Tensor) -> Result<Tensor, EngineError> {
    let (m, ff) = (h.rows, ex.gate.rows);
    let (g, u, gu, y) = (be.alloc(m, ff)?, be.alloc(m, ff)?, be.alloc(m, ff)?, be.alloc(m, h.cols)?);
    be.matmul_many(h, &[(&ex.gate, &g), (&ex.up, &u)])?;
    be.swiglu(&g, &u, &gu)?;
    be.matmul(&gu, &ex.down, &y)?;
    Ok(y)
}

/// In place, as ggml's soft_max: max subtracted, e^x summed in f64, divided.
fn softmax(v: &mut [f32]) {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f64;
    for x in v.iter_mut() {
        *x = (*x - max).exp();
        sum += *x as f64;
    }
    let inv = (1.0 / sum) as f32;
    v.iter_mut().for_each(|x| *x *= inv);
}
