//! The decoder-only transformer forward pass shared by llama, gemma3, qwen2,
//! qwen3 and phi3; `Arch` says where they differ.

use owl_backends::{AttnBatch, AttnParams, Backend, RopeParams, Tensor, WeightData};

use super::moe::Moe;
use super::{gemma3, Arch};
use crate::gguf::{Gguf, TensorInfo};
use crate::EngineError;

/// Hyperparameters, read through the arch-prefixed metadata accessors.
#[derive(Clone, Debug)]
pub struct Config {
    pub arch: Arch,
    pub n_vocab: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub n_ctx_train: usize,
    pub rms_eps: f32,
    pub rope_base: f32,
    pub rope_base_swa: f32,
    pub rope_scale: f32,
    pub n_rot: usize,
    /// Sliding window in tokens, for the layers that have one.
    pub swa_window: Option<usize>,
    pub swa_pattern: usize,
    pub attn_softcap: Option<f32>,
    pub final_softcap: Option<f32>,
    /// Routed experts per layer (0: a dense FFN) and how many each token uses.
    pub n_expert: usize,
    pub n_expert_used: usize,
    /// Each expert's FFN width (`expert_feed_forward_length`, else `n_ff`).
    pub n_ff_expert: usize,
}

impl Config {
    pub fn from_gguf(g: &Gguf) -> Result<Config, EngineError> {
        let md = g.metadata();
        let name = g.arch()?;
        if super::bert::is_encoder(name) {
            return Err(EngineError::Unsupported(format!("`{name}` is an encoder: it makes embeddings, not text (owl generates with {})", super::SUPPORTED)));
        }
        let arch = super::arch(name)
            .ok_or_else(|| EngineError::Unsupported(format!("architecture `{name}` (owl runs {}; embeddings: {})", super::SUPPORTED, super::bert::SUPPORTED)))?;
        let n_embd: usize = md.arch_get("embedding_length")?;
        let n_head: usize = md.arch_get("attention.head_count")?;
        let n_head_kv: usize = md.arch_get_or("attention.head_count_kv", n_head)?;
        let head_dim: usize = md.arch_get_or("attention.key_length", n_embd / n_head.max(1))?;
        let emb = g.tensor("token_embd.weight").ok_or_else(|| EngineError::MissingTensor("token_embd.weight".into()))?;
        let n_vocab = emb.n_rows() as usize;
        let rope_base: f32 = md.arch_get_or("rope.freq_base", 10_000.0)?;
        let rope_scale = match md.arch_get_opt::<f32>("rope.scaling.factor")? {
            Some(f) if f > 0.0 => 1.0 / f,
            _ => 1.0,
        };
        let swa_window: Option<usize> = if arch.swa { md.arch_get_opt("attention.sliding_window")? } else { None };
        let swa_pattern: usize = md.arch_get_or("attention.sliding_window_pattern", arch.swa_pattern)?;
        let cfg = Config {
            arch,
            n_vocab,
            n_embd,
            n_layer: md.arch_get("block_count")?,
            n_head,
            n_head_kv,
            head_dim,
            n_ff: md.arch_get("feed_forward_length")?,
            n_ctx_train: md.arch_get_or("context_length", 2048usize)?,
            rms_eps: md.arch_get_or("attention.layer_norm_rms_epsilon", 1e-5f32)?,
            rope_base,
            rope_base_swa: if arch.swa { gemma3::ROPE_BASE_SWA } else { rope_base },
            rope_scale,
            n_rot: md.arch_get_or("rope.dimension_count", head_dim)?,
            swa_window,
            swa_pattern,
            attn_softcap: md.arch_get_opt::<f32>("attn_logit_softcapping")?.filter(|&c| c > 0.0),
            final_softcap: md.arch_get_opt::<f32>("final_logit_softcapping")?.filter(|&c| c > 0.0),
            n_expert: md.arch_get_or("expert_count", 0usize)?,
            n_expert_used: md.arch_get_or("expert_used_count", 0usize)?,
            n_ff_expert: 0,
        };
        let mut cfg = cfg;
        cfg.n_ff_expert = md.arch_get_or("expert_feed_forward_length", cfg.n_ff)?;
        super::check_limits(arch.name, &[
            ("block_count", cfg.n_layer),
            ("embedding_length", cfg.n_embd),
            ("attention.head_count", cfg.n_head),
            ("attention.head_count_kv", cfg.n_head_kv),
            ("attention.key_length", cfg.head_dim),
            ("rope.dimension_count", cfg.n_rot),
            ("feed_forward_length", cfg.n_ff),
            ("expert_feed_forward_length", cfg.n_ff_expert),
            ("context_length", cfg.n_ctx_train),
            ("expert_count", cfg.n_expert),
            ("expert_used_count", cfg.n_expert_used),
            ("attention.sliding_window", cfg.swa_window.unwrap_or(0)),
            ("attention.sliding_window_pattern", cfg.swa_pattern),
            ("vocab", cfg.n_vocab),
        ])?;
        if arch.moe && cfg.n_expert == 0 {
            return Err(EngineError::BadModel(format!("{} needs {}.expert_count", arch.name, arch.name)));
        }
        if cfg.n_expert > 0 && (cfg.n_expert_used == 0 || cfg.n_expert_used > cfg.n_expert || cfg.n_ff_expert == 0) {
            return Err(EngineError::BadModel(format!("{} experts with {} used each (width {}): the counts are inconsistent", cfg.n_expert, cfg.n_expert_used, cfg.n_ff_expert)));
        }
        if cfg.n_head == 0 || cfg.n_head_kv == 0 || !cfg.n_head.is_multiple_of(cfg.n_head_kv) || cfg.head_dim == 0 || cfg.n_rot > cfg.head_dim {
            return Err(EngineError::BadModel(format!(
                "inconsistent heads: {} heads, {} kv heads, head_dim {}, n_rot {}",
                cfg.n_head, cfg.n_head_kv, cfg.head_dim, cfg.n_rot
            )));
        }
        Ok(cfg)
    }

    /// Whether layer `il` attends through a sliding window (Gemma 3: all but every `swa_pattern`-th).
    pub fn is_swa(&self, il: usize) -> bool {
        self.swa_window.is_some() && self.swa_pattern > 0 && !(il + 1).is_multiple_of(self.swa_pattern)
    }
}

/// One decoder block's weights. Shapes are [rows, cols] = [out, in].
struct Layer {
    attn_norm: Tensor,             // [1, n_embd]
    wq: Tensor,                    // [n_head*head_dim, n_embd] (phi3: rows of attn_qkv)
    wk: Tensor,                    // [n_head_kv*head_dim, n_embd]
    wv: Tensor,                    // [n_head_kv*head_dim, n_embd]
    bq: Option<Tensor>,            // [1, n_head*head_dim] (qwen2)
    bk: Option<Tensor>,            // [1, n_head_kv*head_dim]
    bv: Option<Tensor>,            // [1, n_head_kv*head_dim]
    q_norm: Option<Tensor>,        // [1, head_dim] (gemma3, qwen3)
    k_norm: Option<Tensor>,        // [1, head_dim]
    wo: Tensor,                    // [n_embd, n_head*head_dim]
    attn_post_norm: Option<Tensor>, // [1, n_embd] (gemma3)
    ffn_norm: Tensor,              // [1, n_embd]
    ffn: Ffn,
    ffn_post_norm: Option<Tensor>, // [1, n_embd] (gemma3)
    k_cache: Tensor,               // [n_cells, n_head_kv*head_dim] f16
    v_cache: Tensor,               // [n_cells, n_head_kv*head_dim] f16
}

/// A block's feed-forward: one SwiGLU/GeGLU, or routed experts.
enum Ffn {
    Dense {
        gate: Tensor, // [n_ff, n_embd] (phi3: first half of ffn_up)
        up: Tensor,   // [n_ff, n_embd] (phi3: second half of ffn_up)
        down: Tensor, // [n_embd, n_ff]
    },
    Moe(Moe),
}

/// One token of a forward step.
#[derive(Clone, Copy, Debug)]
pub struct BatchRow {
    pub token: u32,
    /// Index into `Batch::seq_cells`.
    pub seq: u32,
    pub pos: u32,
    /// Whether this row's logits are wanted.
    pub logits: bool,
}

/// A forward step over several sequences at different positions.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub rows: Vec<BatchRow>,
    /// Per sequence: the KV cell of each position 0..=its last position in this batch.
    pub seq_cells: Vec<Vec<u32>>,
}

pub struct Model {
    pub cfg: Config,
    pub n_cells: usize,
    backend: Box<dyn Backend>,
    tok_embd: Tensor,    // [n_vocab, n_embd]
    output_norm: Tensor, // [1, n_embd]
    output: Tensor,      // [n_vocab, n_embd] (tok_embd when tied)
    layers: Vec<Layer>,
}

fn weight<'a>(g: &'a Gguf, name: &str) -> Result<(WeightData, &'a TensorInfo), EngineError> {
    let t = g.tensor(name).ok_or_else(|| EngineError::MissingTensor(name.to_string()))?;
    let cols = t.row_len() as usize;
    let rows = t.n_rows() as usize;
    let w = WeightData::new(name, t.ty, rows, cols, g.tensor_owner(t), t.offset, t.size)?;
    Ok((w, t))
}

impl Model {
    /// Takes every weight onto the backend (borrowed on CPU) and allocates a KV cache of `n_cells` cells.
    pub fn load(g: &Gguf, mut backend: Box<dyn Backend>, n_cells: usize) -> Result<Model, EngineError> {
        let cfg = Config::from_gguf(g)?;
        let a = cfg.arch;
        let up = |backend: &mut Box<dyn Backend>, name: &str, rows: usize, cols: usize| -> Result<Tensor, EngineError> {
            let (w, _) = weight(g, name)?;
            if w.rows != rows || w.cols != cols {
                return Err(EngineError::BadModel(format!("{name} is [{} x {}], expected [{rows} x {cols}]", w.rows, w.cols)));
            }
            Ok(backend.upload_weight(w)?)
        };
        // Rows `row0..row0 + rows` of a fused weight (Phi 3's attn_qkv, ffn_up), as its own
        // weight: a view of the same bytes, since each output row's dot is its own.
        let up_part = |backend: &mut Box<dyn Backend>, name: &str, part: &str, row0: usize, rows: usize, total: usize, cols: usize| -> Result<Tensor, EngineError> {
            let (w, t) = weight(g, name)?;
            if w.rows != total || w.cols != cols {
                return Err(EngineError::BadModel(format!("{name} is [{} x {}], expected [{total} x {cols}]", w.rows, w.cols)));
            }
            let row_bytes = t.size / total;
            let part = WeightData::new(format!("{name}[{part}]"), t.ty, rows, cols, g.tensor_owner(t), t.offset + row0 * row_bytes, rows * row_bytes)?;
            Ok(backend.upload_weight(part)?)
        };
        if g.tensor("rope_factors_long.weight").is_some() || g.tensor("rope_factors_short.weight").is_some() {
            return Err(EngineError::Unsupported(format!("{}: LongRoPE (rope_factors_long/short, the 128k-context variants)", a.name)));
        }
        let (e, q, kv, ff) = (cfg.n_embd, cfg.n_head * cfg.head_dim, cfg.n_head_kv * cfg.head_dim, cfg.n_ff);
        let tok_embd = up(&mut backend, "token_embd.weight", cfg.n_vocab, e)?;
        let output_norm = up(&mut backend, "output_norm.weight", 1, e)?;
        let output = if g.tensor("output.weight").is_some() { up(&mut backend, "output.weight", cfg.n_vocab, e)? } else { tok_embd };
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for il in 0..cfg.n_layer {
            let n = |s: &str| format!("blk.{il}.{s}.weight");
            let b = |s: &str| format!("blk.{il}.{s}.bias");
            let (wq, wk, wv) = if a.fused_qkv {
                let (qkv, tot) = (n("attn_qkv"), q + 2 * kv);
                (
                    up_part(&mut backend, &qkv, "q", 0, q, tot, e)?,
                    up_part(&mut backend, &qkv, "k", q, kv, tot, e)?,
                    up_part(&mut backend, &qkv, "v", q + kv, kv, tot, e)?,
                )
            } else {
                (up(&mut backend, &n("attn_q"), q, e)?, up(&mut backend, &n("attn_k"), kv, e)?, up(&mut backend, &n("attn_v"), kv, e)?)
            };
            let ffn = if cfg.n_expert > 0 {
                let shared = if a.shared_expert { Some(md_shared_ff(g, &cfg)?) } else { None };
                Ffn::Moe(Moe::load(g, &mut backend, il, e, cfg.n_expert, cfg.n_expert_used, cfg.n_ff_expert, shared, a.moe_norm_w, g.metadata().arch_get_or("expert_weights_scale", 0f32)?)?)
            } else if a.fused_gate_up {
                let fu = n("ffn_up");
                Ffn::Dense { gate: up_part(&mut backend, &fu, "gate", 0, ff, 2 * ff, e)?, up: up_part(&mut backend, &fu, "up", ff, ff, 2 * ff, e)?, down: up(&mut backend, &n("ffn_down"), e, ff)? }
            } else {
                Ffn::Dense { gate: up(&mut backend, &n("ffn_gate"), ff, e)?, up: up(&mut backend, &n("ffn_up"), ff, e)?, down: up(&mut backend, &n("ffn_down"), e, ff)? }
            };
            layers.push(Layer {
                attn_norm: up(&mut backend, &n("attn_norm"), 1, e)?,
                wq,
                wk,
                wv,
                bq: if a.qkv_bias { Some(up(&mut backend, &b("attn_q"), 1, q)?) } else { None },
                bk: if a.qkv_bias { Some(up(&mut backend, &b("attn_k"), 1, kv)?) } else { None },
                bv: if a.qkv_bias { Some(up(&mut backend, &b("attn_v"), 1, kv)?) } else { None },
                q_norm: if a.qk_norm { Some(up(&mut backend, &n("attn_q_norm"), 1, cfg.head_dim)?) } else { None },
                k_norm: if a.qk_norm { Some(up(&mut backend, &n("attn_k_norm"), 1, cfg.head_dim)?) } else { None },
                wo: up(&mut backend, &n("attn_output"), e, q)?,
                attn_post_norm: if a.post_norms { Some(up(&mut backend, &n("post_attention_norm"), 1, e)?) } else { None },
                ffn_norm: up(&mut backend, &n("ffn_norm"), 1, e)?,
                ffn,
                ffn_post_norm: if a.post_norms { Some(up(&mut backend, &n("post_ffw_norm"), 1, e)?) } else { None },
                k_cache: backend.alloc_kv(n_cells, kv)?,
                v_cache: backend.alloc_kv(n_cells, kv)?,
            });
        }
        Ok(Model { cfg, n_cells, backend, tok_embd, output_norm, output, layers })
    }

    pub fn backend_name(&self) -> String {
        self.backend.name()
    }

    /// The backend's thread pool, if it has one (see `Backend::thread_pool`).
    pub fn thread_pool(&self) -> Option<std::sync::Arc<rayon::ThreadPool>> {
        self.backend.thread_pool()
    }

    pub fn threads(&self) -> usize {
        self.backend.threads()
    }

    /// Runs one step and returns the logits of the rows that asked for them,
    /// `[n_logit_rows * n_vocab]`, in row order.
    pub fn forward(&mut self, batch: &Batch) -> Result<Vec<f32>, EngineError> {
        let mut out = Vec::new();
        self.forward_into(batch, &mut out)?;
        Ok(out)
    }

    /// `forward` into the caller's buffer, which it keeps between steps: its
    /// allocation is reused (no fresh zeroed logits rows every step).
    pub fn forward_into(&mut self, batch: &Batch, out: &mut Vec<f32>) -> Result<(), EngineError> {
        out.clear();
        let c = &self.cfg;
        let n = batch.rows.len();
        if n == 0 {
            return Ok(());
        }
        for r in &batch.rows {
            let cells = batch.seq_cells.get(r.seq as usize).ok_or_else(|| EngineError::Internal(format!("row names sequence {}", r.seq)))?;
            if cells.len() <= r.pos as usize || r.token as usize >= c.n_vocab {
                return Err(EngineError::Internal(format!("bad batch row {r:?}")));
            }
        }
        let be = &mut self.backend;
        be.reset_scratch();
        let (e, qd, kvd) = (c.n_embd, c.n_head * c.head_dim, c.n_head_kv * c.head_dim);
        let tokens: Vec<u32> = batch.rows.iter().map(|r| r.token).collect();
        let pos: Vec<u32> = batch.rows.iter().map(|r| r.pos).collect();
        let cells: Vec<u32> = batch.rows.iter().map(|r| batch.seq_cells[r.seq as usize][r.pos as usize]).collect();
        let seq_cells: Vec<&[u32]> = batch.seq_cells.iter().map(|v| v.as_slice()).collect();
        let attn_rows: Vec<(u32, u32)> = batch.rows.iter().map(|r| (r.seq, r.pos)).collect();
        let ab = AttnBatch { seq_cells: &seq_cells, rows: &attn_rows };

        // 1. Token embeddings (Gemma scales them by sqrt(n_embd)).
        let x = be.alloc(n, e)?;
        let scale = if c.arch.embd_scale_sqrt { (e as f32).sqrt() } else { 1.0 };
        be.embed(&self.tok_embd, &tokens, scale, &x)?;

        let h = be.alloc(n, e)?;
        let q = be.alloc(n, qd)?;
        let k = be.alloc(n, kvd)?;
        let v = be.alloc(n, kvd)?;
        let att = be.alloc(n, qd)?;
        let o = be.alloc(n, e)?;
        let g = be.alloc(n, c.n_ff)?;
        let u = be.alloc(n, c.n_ff)?;
        let gu = be.alloc(n, c.n_ff)?;
        // Gemma 3 and Phi 3 scale q by 1/sqrt(head_dim) before the scores; the others scale the scores.
        let (q_scale, kq_scale) = if c.arch.q_prescale { (1.0 / (c.head_dim as f32).sqrt(), 1.0) } else { (1.0, 1.0 / (c.head_dim as f32).sqrt()) };

        for (il, l) in self.layers.iter().enumerate() {
            // 2. Attention: norm, q/k/v projections (+bias), per-head norms, RoPE.
            be.rms_norm(&x, &l.attn_norm, c.rms_eps, &h)?;
            be.matmul_many(&h, &[(&l.wq, &q), (&l.wk, &k), (&l.wv, &v)])?;
            if let (Some(bq), Some(bk), Some(bv)) = (&l.bq, &l.bk, &l.bv) {
                be.add_bias(&q, bq)?;
                be.add_bias(&k, bk)?;
                be.add_bias(&v, bv)?;
            }
            if let (Some(qn), Some(kn)) = (&l.q_norm, &l.k_norm) {
                be.rms_norm(&q, qn, c.rms_eps, &q)?;
                be.rms_norm(&k, kn, c.rms_eps, &k)?;
            }
            let swa = c.is_swa(il);
            let rp = RopeParams {
                head_dim: c.head_dim,
                n_rot: c.n_rot,
                base: if swa { c.rope_base_swa } else { c.rope_base },
                freq_scale: if swa { 1.0 } else { c.rope_scale },
                mode: c.arch.rope_mode,
            };
            be.rope(&q, &pos, &rp)?;
            be.rope(&k, &pos, &rp)?;
            if q_scale != 1.0 {
                be.scale(&q, q_scale)?;
            }
            // 3. Store this step's k and v, then attend over the cache.
            be.kv_store(&l.k_cache, &l.v_cache, &k, &v, &cells)?;
            let ap = AttnParams {
                n_head: c.n_head,
                n_head_kv: c.n_head_kv,
                head_dim: c.head_dim,
                scale: kq_scale,
                softcap: c.attn_softcap,
                window: if swa { c.swa_window } else { None },
            };
            be.attention(&q, &l.k_cache, &l.v_cache, &ab, &ap, &att)?;
            be.matmul(&att, &l.wo, &o)?;
            if let Some(pn) = &l.attn_post_norm {
                be.rms_norm(&o, pn, c.rms_eps, &o)?;
            }
            be.add(&x, &o)?;

            // 4. Feed-forward: norm, gate and up, SwiGLU or GeGLU, down.
            be.rms_norm(&x, &l.ffn_norm, c.rms_eps, &h)?;
            match &l.ffn {
                Ffn::Dense { gate, up, down } => {
                    be.matmul_many(&h, &[(gate, &g), (up, &u)])?;
                    if c.arch.gelu {
                        be.geglu(&g, &u, &gu)?;
                    } else {
                        be.swiglu(&g, &u, &gu)?;
                    }
                    be.matmul(&gu, down, &o)?;
                }
                Ffn::Moe(m) => m.forward(be, &h, &o)?,
            }
            if let Some(pn) = &l.ffn_post_norm {
                be.rms_norm(&o, pn, c.rms_eps, &o)?;
            }
            be.add(&x, &o)?;
        }

        // 5. Final norm and the output head, only for rows that want logits.
        let want: Vec<u32> = batch.rows.iter().enumerate().filter(|(_, r)| r.logits).map(|(i, _)| i as u32).collect();
        if want.is_empty() {
            return Ok(());
        }
        let xs = be.alloc(want.len(), e)?;
        be.get_rows(&x, &want, &xs)?;
        be.rms_norm(&xs, &self.output_norm, c.rms_eps, &xs)?;
        let logits = be.alloc(want.len(), c.n_vocab)?;
        be.matmul(&xs, &self.output, &logits)?;
        if let Some(cap) = c.final_softcap {
            be.softcap(&logits, cap)?;
        }
        // Every element is overwritten by the read; only new capacity is zeroed.
        out.resize(want.len() * c.n_vocab, 0.0);
        be.read(&logits, out)?;
        Ok(())
    }
}

/// Qwen 2 MoE's shared expert width (`expert_shared_feed_forward_length`, else n_ff).
fn md_shared_ff(g: &Gguf, cfg: &Config) -> Result<usize, EngineError> {
    Ok(g.metadata().arch_get_or("expert_shared_feed_forward_length", cfg.n_ff)?)
}
