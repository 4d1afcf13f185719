//! Mixture-of-experts feed-forward (Mixtral-style `llama`, `qwen2moe`, `qwen3moe`),
//! as llama.cpp's `build_moe_ffn` computes it: router logits, softmax over all
//! experts, the top `n_expert_used` per token, their probabilities renormalised
//! where the architecture says (`norm_w`), and each chosen expert's SwiGLU FFN
//! weighted by its probability; Qwen 2 MoE adds a shared expert gated by a sigmoid.
//!
//! A step's tokens are grouped by expert, so each expert's weights are read
//! once per step whatever the batch: the expert runs one matmul over the rows
//! routed to it (gathered with `get_rows`), and its weighted outputs go back to
//! their rows with `add_rows_scaled`. Each expert is a row view of the mapped
//! `ffn_{gate,up,down}_exps` tensors (no copy).

use owl_backends::{Backend, Tensor, WeightData};

use crate::gguf::Gguf;
use crate::EngineError;

/// One expert's SwiGLU FFN. Shapes are [rows, cols] = [out, in].
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
    experts: Vec<Expert>,
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
        let mut experts = Vec::with_capacity(n_expert);
        for x in 0..n_expert {
            experts.push(Expert {
                gate: be.upload_weight(rows_of(g, &n("ffn_gate_exps"), x * n_ff, n_ff, e)?)?,
                up: be.upload_weight(rows_of(g, &n("ffn_up_exps"), x * n_ff, n_ff, e)?)?,
                down: be.upload_weight(rows_of(g, &n("ffn_down_exps"), x * e, e, n_ff)?)?,
            });
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
        Ok(Moe { router, experts, shared, n_used, norm_w, w_scale, n_ff })
    }

    /// out = the mixture's output for the normed rows `h` ([n, n_embd]); `out` is overwritten.
    pub(super) fn forward(&self, be: &mut Box<dyn Backend>, h: &Tensor, out: &Tensor) -> Result<(), EngineError> {
        let (n, e, n_expert) = (h.rows, h.cols, self.experts.len());
        // 1. Router: softmax over the experts, the top n_used per row (ties to the lower index).
        let logits = be.alloc(n, n_expert)?;
        be.matmul(h, &self.router, &logits)?;
        let mut p = vec![0f32; n * n_expert];
        be.read(&logits, &mut p)?;
        // Per expert: the rows routed to it and their weights, in row order; per row, its
        // experts in rank order (llama.cpp sums a row's experts in that order).
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
        be.write(out, &vec![0f32; n * e])?;
        // 2. Each expert once, over every row routed to it (whatever the rank), so its
        //    weights are read once per step; then the weighted outputs rank by rank, so
        //    that each row adds its experts in llama.cpp's order.
        let mut ran = Vec::new();
        for (x, ex) in self.experts.iter().enumerate() {
            let picks: Vec<(u32, usize, f32)> = chosen.iter().enumerate().filter_map(|(r, c)| c.iter().position(|t| t.0 == x).map(|k| (r as u32, k, c[k].1))).collect();
            if !picks.is_empty() {
                let rows: Vec<u32> = picks.iter().map(|p| p.0).collect();
                ran.push((picks, self.expert(be, ex, h, &rows, self.n_ff)?));
            }
        }
        for rank in 0..self.n_used {
            for (picks, y) in &ran {
                let sel: Vec<u32> = (0..picks.len() as u32).filter(|&i| picks[i as usize].1 == rank).collect();
                if sel.is_empty() {
                    continue;
                }
                let (rows, w): (Vec<u32>, Vec<f32>) = sel.iter().map(|&i| (picks[i as usize].0, picks[i as usize].2)).unzip();
                let part = if sel.len() == picks.len() {
                    *y
                } else {
                    let t = be.alloc(sel.len(), e)?;
                    be.get_rows(y, &sel, &t)?;
                    t
                };
                be.add_rows_scaled(out, &part, &rows, &w)?;
            }
        }
        // 3. Qwen 2 MoE: + sigmoid(h · gate_inp_shexp) * shared_ffn(h).
        if let Some(s) = &self.shared {
            let gl = be.alloc(n, 1)?;
            be.matmul(h, &s.gate_inp, &gl)?;
            let mut gate = vec![0f32; n];
            be.read(&gl, &mut gate)?;
            gate.iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-*v).exp()));
            let all: Vec<u32> = (0..n as u32).collect();
            let y = self.expert(be, &s.ffn, h, &all, s.ffn.gate.rows)?;
            be.add_rows_scaled(out, &y, &all, &gate)?;
        }
        Ok(())
    }

    /// One expert's SwiGLU FFN over `rows` of `h`: a [rows.len(), n_embd] scratch tensor.
    fn expert(&self, be: &mut Box<dyn Backend>, ex: &Expert, h: &Tensor, rows: &[u32], ff: usize) -> Result<Tensor, EngineError> {
        let m = rows.len();
        let xs = if m == h.rows && rows.iter().enumerate().all(|(i, &r)| r as usize == i) {
            *h
        } else {
            let xs = be.alloc(m, h.cols)?;
            be.get_rows(h, rows, &xs)?;
            xs
        };
        let (g, u, gu, y) = (be.alloc(m, ff)?, be.alloc(m, ff)?, be.alloc(m, ff)?, be.alloc(m, h.cols)?);
        be.matmul_many(&xs, &[(&ex.gate, &g), (&ex.up, &u)])?;
        be.swiglu(&g, &u, &gu)?;
        be.matmul(&gu, &ex.down, &y)?;
        Ok(y)
    }
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
