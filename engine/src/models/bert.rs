//! Encoders for embeddings: `nomic-bert` (nomic-embed-text) and plain `bert`
//! (BGE, MiniLM and the like). Bidirectional
//! attention over the whole input, LayerNorm after each sub-block (post-norm),
//! token-type embeddings, then the hidden states pooled into one vector per
//! input (mean or CLS, from `pooling_type`) and L2-normalised, as
//! llama.cpp's `llama-embedding` gives them.
//!
//! The graph follows llama.cpp's `src/models/bert.cpp` for `nomic-bert`: fused
//! `attn_qkv` (taken as three row views of the one mapped tensor, no copy),
//! NEOX RoPE on q and k, SwiGLU feed-forward (`ffn_gate`, `ffn_up`, `ffn_down`).
//! Plain `bert` instead has absolute position embeddings (no RoPE), separate
//! `attn_q`/`attn_k`/`attn_v`, biases on every projection, and a GELU
//! feed-forward (`ffn_up`, `ffn_down` with biases; GELU as the backend's GeGLU
//! with an up of ones, which is exact).
//! Attention without a causal mask is the backend's cached attention with every
//! query placed at the last position, so each sees every key.

use owl_backends::{AttnBatch, AttnParams, Backend, RopeMode, RopeParams, Tensor, WeightData};

use crate::gguf::{Gguf, TensorInfo};
use crate::EngineError;

/// How the hidden states of an input become one vector (`<arch>.pooling_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// The mean over all tokens (1).
    Mean,
    /// The first token's state, `[CLS]` (2).
    Cls,
    /// The last token's state (3).
    Last,
}

/// The encoder architectures owl runs.
pub const SUPPORTED: &str = "nomic-bert, bert";

/// Whether `arch` is an encoder (embeddings) rather than a decoder.
pub fn is_encoder(arch: &str) -> bool {
    matches!(arch, "nomic-bert" | "bert")
}

#[derive(Clone, Debug)]
pub struct EncoderConfig {
    pub arch: String,
    pub n_vocab: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub n_ctx_train: usize,
    pub eps: f32,
    pub rope_base: f32,
    pub pooling: Pooling,
}

impl EncoderConfig {
    pub fn from_gguf(g: &Gguf) -> Result<EncoderConfig, EngineError> {
        let md = g.metadata();
        let arch = g.arch()?.to_string();
        if !is_encoder(&arch) {
            return Err(EngineError::Unsupported(format!("encoder architecture `{arch}` (owl's encoders: {SUPPORTED})")));
        }
        let n_embd: usize = md.arch_get("embedding_length")?;
        let n_head: usize = md.arch_get("attention.head_count")?;
        let emb = g.tensor("token_embd.weight").ok_or_else(|| EngineError::MissingTensor("token_embd.weight".into()))?;
        let pooling = match md.arch_get_or::<u32>("pooling_type", 1)? {
            1 => Pooling::Mean,
            2 => Pooling::Cls,
            3 => Pooling::Last,
            other => return Err(EngineError::Unsupported(format!("pooling_type {other} (owl pools by mean (1), CLS (2) or last token (3))"))),
        };
        let cfg = EncoderConfig {
            arch,
            n_vocab: emb.n_rows() as usize,
            n_embd,
            n_layer: md.arch_get("block_count")?,
            n_head,
            head_dim: n_embd / n_head.max(1),
            n_ff: md.arch_get("feed_forward_length")?,
            n_ctx_train: md.arch_get_or("context_length", 2048usize)?,
            eps: md.arch_get_or("attention.layer_norm_epsilon", 1e-12f32)?,
            rope_base: md.arch_get_or("rope.freq_base", 10_000.0f32)?,
            pooling,
        };
        super::check_limits(&cfg.arch, &[
            ("block_count", cfg.n_layer),
            ("embedding_length", cfg.n_embd),
            ("attention.head_count", cfg.n_head),
            ("feed_forward_length", cfg.n_ff),
            ("context_length", cfg.n_ctx_train),
            ("vocab", cfg.n_vocab),
        ])?;
        if n_head == 0 || n_embd % n_head != 0 || cfg.head_dim % 2 != 0 {
            return Err(EngineError::BadModel(format!("{n_head} heads do not divide n_embd {n_embd} into even head sizes")));
        }
        Ok(cfg)
    }
}

/// A LayerNorm's weights, kept on the host (a few KiB each).
struct Norm {
    w: Vec<f32>,
    b: Vec<f32>,
}

/// One encoder block: its weights and its KV cells.
struct Layer {
    w: LayerWeights,
    k_cache: Tensor, // [n_cells, n_embd] f16 (one input at a time)
    v_cache: Tensor, // [n_cells, n_embd] f16
}

/// One encoder block's weights. Shapes are [rows, cols] = [out, in].
struct LayerWeights {
    wq: Tensor,        // [n_embd, n_embd] nomic: rows 0..n_embd of attn_qkv; bert: attn_q
    wk: Tensor,        // [n_embd, n_embd] nomic: the next n_embd rows
    wv: Tensor,        // [n_embd, n_embd] nomic: the last n_embd rows
    wo: Tensor,        // [n_embd, n_embd]
    /// bert: the biases of q, k, v and the output, [1, n_embd] each.
    biases: Option<[Tensor; 4]>,
    attn_out_norm: Norm,
    ffn: Ffn,
    layer_out_norm: Norm,
}

enum Ffn {
    /// nomic-bert: down(silu(gate x) * up x).
    SwiGlu { gate: Tensor, up: Tensor, down: Tensor }, // [n_ff, n_embd] x2, [n_embd, n_ff]
    /// bert: down(gelu(up x + up_b)) + down_b.
    Gelu { up: Tensor, up_b: Tensor, down: Tensor, down_b: Tensor }, // [n_ff, n_embd], [1, n_ff], [n_embd, n_ff], [1, n_embd]
}

pub struct Encoder {
    pub cfg: EncoderConfig,
    /// The longest input, in tokens (the KV cells of one input).
    pub n_cells: usize,
    backend: Box<dyn Backend>,
    tok_embd: Tensor,       // [n_vocab, n_embd]
    type_embd: Option<Tensor>, // [1, n_embd]: token type 0 ("sentence A")
    pos_embd: Option<Tensor>,  // [n_ctx_train, n_embd]: bert's absolute positions
    embd_norm: Norm,
    layers: Vec<Layer>,
}

fn info<'a>(g: &'a Gguf, name: &str) -> Result<&'a TensorInfo, EngineError> {
    g.tensor(name).ok_or_else(|| EngineError::MissingTensor(name.to_string()))
}

/// Rows `r0..r0+rows` of a tensor as a weight of their own (a view of the map).
fn row_view(g: &Gguf, name: &str, r0: usize, rows: usize, cols: usize) -> Result<WeightData, EngineError> {
    let t = info(g, name)?;
    if t.row_len() as usize != cols || (t.n_rows() as usize) < r0 + rows {
        return Err(EngineError::BadModel(format!("{name} is [{} x {}], expected at least [{} x {cols}]", t.n_rows(), t.row_len(), r0 + rows)));
    }
    let row_bytes = t.size / t.n_rows() as usize;
    Ok(WeightData::new(name, t.ty, rows, cols, g.tensor_owner(t), t.offset + r0 * row_bytes, rows * row_bytes)?)
}

fn norm(g: &Gguf, name: &str, n: usize) -> Result<Norm, EngineError> {
    let host = |suffix: &str| -> Result<Vec<f32>, EngineError> {
        let full = format!("{name}.{suffix}");
        let t = info(g, &full)?;
        if t.n_elements() as usize != n {
            return Err(EngineError::BadModel(format!("{full} has {} values, expected {n}", t.n_elements())));
        }
        let mut v = vec![0f32; n];
        owl_quant::dequantize(t.ty, g.tensor_data(t), &mut v).map_err(|e| EngineError::BadModel(format!("{full}: {e}")))?;
        Ok(v)
    };
    Ok(Norm { w: host("weight")?, b: host("bias")? })
}

impl Encoder {
    /// Takes the weights onto the backend (borrowed on CPU); inputs may be up to `n_cells` tokens.
    pub fn load(g: &Gguf, mut backend: Box<dyn Backend>, n_cells: usize) -> Result<Encoder, EngineError> {
        let cfg = EncoderConfig::from_gguf(g)?;
        let n_cells = n_cells.min(cfg.n_ctx_train).max(1);
        let (e, ff) = (cfg.n_embd, cfg.n_ff);
        let be = &mut backend;
        let mut up = |w: WeightData| -> Result<Tensor, EngineError> { Ok(be.upload_weight(w)?) };
        let tok_embd = up(row_view(g, "token_embd.weight", 0, cfg.n_vocab, e)?)?;
        let type_embd = match g.tensor("token_types.weight") {
            Some(_) => Some(up(row_view(g, "token_types.weight", 0, 1, e)?)?),
            None => None,
        };
        let bert = cfg.arch == "bert";
        let pos_embd = if bert { Some(up(row_view(g, "position_embd.weight", 0, cfg.n_ctx_train, e)?)?) } else { None };
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for il in 0..cfg.n_layer {
            let n = |s: &str| format!("blk.{il}.{s}.weight");
            let b = |s: &str| format!("blk.{il}.{s}.bias");
            let (wq, wk, wv) = if bert {
                (up(row_view(g, &n("attn_q"), 0, e, e)?)?, up(row_view(g, &n("attn_k"), 0, e, e)?)?, up(row_view(g, &n("attn_v"), 0, e, e)?)?)
            } else {
                let qkv = n("attn_qkv");
                (up(row_view(g, &qkv, 0, e, e)?)?, up(row_view(g, &qkv, e, e, e)?)?, up(row_view(g, &qkv, 2 * e, e, e)?)?)
            };
            let biases = if bert {
                let mut bias = |s: &str| up(row_view(g, &b(s), 0, 1, e)?);
                Some([bias("attn_q")?, bias("attn_k")?, bias("attn_v")?, bias("attn_output")?])
            } else {
                None
            };
            let ffn = if bert {
                Ffn::Gelu {
                    up: up(row_view(g, &n("ffn_up"), 0, ff, e)?)?,
                    up_b: up(row_view(g, &b("ffn_up"), 0, 1, ff)?)?,
                    down: up(row_view(g, &n("ffn_down"), 0, e, ff)?)?,
                    down_b: up(row_view(g, &b("ffn_down"), 0, 1, e)?)?,
                }
            } else {
                Ffn::SwiGlu { gate: up(row_view(g, &n("ffn_gate"), 0, ff, e)?)?, up: up(row_view(g, &n("ffn_up"), 0, ff, e)?)?, down: up(row_view(g, &n("ffn_down"), 0, e, ff)?)? }
            };
            layers.push(LayerWeights {
                wq,
                wk,
                wv,
                wo: up(row_view(g, &n("attn_output"), 0, e, e)?)?,
                biases,
                attn_out_norm: norm(g, &format!("blk.{il}.attn_output_norm"), e)?,
                ffn,
                layer_out_norm: norm(g, &format!("blk.{il}.layer_output_norm"), e)?,
            });
        }
        let caches = (0..cfg.n_layer).map(|_| Ok((backend.alloc_kv(n_cells, e)?, backend.alloc_kv(n_cells, e)?))).collect::<Result<Vec<_>, EngineError>>()?;
        let layers = layers.into_iter().zip(caches).map(|(w, (k_cache, v_cache))| Layer { w, k_cache, v_cache }).collect();
        let embd_norm = norm(g, "token_embd_norm", e)?;
        Ok(Encoder { cfg, n_cells, backend, tok_embd, type_embd, pos_embd, embd_norm, layers })
    }

    pub fn backend_name(&self) -> String {
        self.backend.name()
    }

    /// The embedding of one tokenized input (special tokens included, as the
    /// tokenizer adds them): pooled and L2-normalised, `n_embd` values.
    pub fn embed(&mut self, tokens: &[u32]) -> Result<Vec<f32>, EngineError> {
        Ok(self.embed_many(&[tokens])?.remove(0))
    }

    /// The embeddings of several inputs, as `embed` gives each: inputs are packed
    /// into batches of up to the encoder's context (each attends only to itself), so
    /// the weights are read once a batch rather than once an input.
    pub fn embed_many(&mut self, inputs: &[&[u32]]) -> Result<Vec<Vec<f32>>, EngineError> {
        let c = &self.cfg;
        for tokens in inputs {
            let n = tokens.len();
            if n == 0 {
                return Err(EngineError::Config("an empty input has no embedding".into()));
            }
            if n > self.n_cells {
                return Err(EngineError::Config(format!("the input is {n} tokens, over the encoder's {} (its context)", self.n_cells)));
            }
            if let Some(&t) = tokens.iter().find(|&&t| t as usize >= c.n_vocab) {
                return Err(EngineError::Config(format!("token {t} is outside the vocabulary of {}", c.n_vocab)));
            }
        }
        let mut out = Vec::with_capacity(inputs.len());
        let mut start = 0;
        while start < inputs.len() {
            let (mut end, mut used) = (start, 0);
            while end < inputs.len() && used + inputs[end].len() <= self.n_cells {
                used += inputs[end].len();
                end += 1;
            }
            out.extend(self.forward(&inputs[start..end])?);
            start = end;
        }
        Ok(out)
    }

    /// One forward pass over `seqs` (checked, together at most `n_cells` tokens).
    fn forward(&mut self, seqs: &[&[u32]]) -> Result<Vec<Vec<f32>>, EngineError> {
        let c = &self.cfg;
        let tokens: Vec<u32> = seqs.iter().flat_map(|s| s.iter().copied()).collect();
        let n = tokens.len();
        let tokens = &tokens[..];
        let be = &mut self.backend;
        be.reset_scratch();
        let e = c.n_embd;
        // Each input its own sequence: positions from 0, cells back to back.
        let pos: Vec<u32> = seqs.iter().flat_map(|s| 0..s.len() as u32).collect();
        let cells: Vec<u32> = (0..n as u32).collect();
        let mut seq_cells: Vec<&[u32]> = Vec::with_capacity(seqs.len());
        let mut attn_rows: Vec<(u32, u32)> = Vec::with_capacity(n);
        let mut at = 0;
        for (i, s) in seqs.iter().enumerate() {
            seq_cells.push(&cells[at..at + s.len()]);
            // Every query at its input's last position: no causal mask.
            attn_rows.extend(std::iter::repeat_n((i as u32, s.len() as u32 - 1), s.len()));
            at += s.len();
        }
        let ab = AttnBatch { seq_cells: &seq_cells, rows: &attn_rows };
        let rp = RopeParams { head_dim: c.head_dim, n_rot: c.head_dim, base: c.rope_base, freq_scale: 1.0, mode: RopeMode::Neox };
        let ap = AttnParams { n_head: c.n_head, n_head_kv: c.n_head, head_dim: c.head_dim, scale: 1.0 / (c.head_dim as f32).sqrt(), softcap: None, window: None };

        // 1. Token embeddings + the type-0 embedding (+ bert's position embeddings), LayerNorm.
        let x = be.alloc(n, e)?;
        be.embed(&self.tok_embd, tokens, 1.0, &x)?;
        if let Some(t) = &self.type_embd {
            be.add_bias(&x, t)?;
        }
        if let Some(p) = &self.pos_embd {
            let pe = be.alloc(n, e)?;
            be.embed(p, &pos, 1.0, &pe)?;
            be.add(&x, &pe)?;
        }
        be.layer_norm(&x, &self.embd_norm.w, &self.embd_norm.b, c.eps, &x)?;

        let q = be.alloc(n, e)?;
        let k = be.alloc(n, e)?;
        let v = be.alloc(n, e)?;
        let att = be.alloc(n, e)?;
        let o = be.alloc(n, e)?;
        let g = be.alloc(n, c.n_ff)?;
        let u = be.alloc(n, c.n_ff)?;
        let gu = be.alloc(n, c.n_ff)?;
        // GELU as GeGLU with an up of ones (x * 1 is exact).
        let ones = match self.layers.iter().any(|l| matches!(l.w.ffn, Ffn::Gelu { .. })) {
            true => {
                let t = be.alloc(n, c.n_ff)?;
                be.write(&t, &vec![1.0; n * c.n_ff])?;
                Some(t)
            }
            false => None,
        };
        for layer in &self.layers {
            let l = &layer.w;
            // 2. Self-attention over the whole input (nomic: RoPE; bert: biases); residual; LayerNorm.
            be.matmul_many(&x, &[(&l.wq, &q), (&l.wk, &k), (&l.wv, &v)])?;
            match &l.biases {
                Some([bq, bk, bv, _]) => {
                    be.add_bias(&q, bq)?;
                    be.add_bias(&k, bk)?;
                    be.add_bias(&v, bv)?;
                }
                None => {
                    be.rope(&q, &pos, &rp)?;
                    be.rope(&k, &pos, &rp)?;
                }
            }
            be.kv_store(&layer.k_cache, &layer.v_cache, &k, &v, &cells)?;
            be.attention(&q, &layer.k_cache, &layer.v_cache, &ab, &ap, &att)?;
            be.matmul(&att, &l.wo, &o)?;
            if let Some([_, _, _, bo]) = &l.biases {
                be.add_bias(&o, bo)?;
            }
            be.add(&x, &o)?;
            be.layer_norm(&x, &l.attn_out_norm.w, &l.attn_out_norm.b, c.eps, &x)?;
            // 3. Feed-forward (nomic: SwiGLU; bert: GELU); residual; LayerNorm.
            match (&l.ffn, &ones) {
                (Ffn::SwiGlu { gate, up, down }, _) => {
                    be.matmul_many(&x, &[(gate, &g), (up, &u)])?;
                    be.swiglu(&g, &u, &gu)?;
                    be.matmul(&gu, down, &o)?;
                }
                (Ffn::Gelu { up, up_b, down, down_b }, Some(ones)) => {
                    be.matmul(&x, up, &u)?;
                    be.add_bias(&u, up_b)?;
                    be.geglu(&u, ones, &gu)?;
                    be.matmul(&gu, down, &o)?;
                    be.add_bias(&o, down_b)?;
                }
                (Ffn::Gelu { .. }, None) => return Err(EngineError::Internal("a GELU block without its ones".into())),
            }
            be.add(&x, &o)?;
            be.layer_norm(&x, &l.layer_out_norm.w, &l.layer_out_norm.b, c.eps, &x)?;
        }

        // 4. Pool each input, then normalise to unit length.
        let mut h = vec![0f32; n * e];
        be.read(&x, &mut h)?;
        let mut out = Vec::with_capacity(seqs.len());
        let mut at = 0;
        for s in seqs {
            let h = &h[at * e..(at + s.len()) * e];
            at += s.len();
            let mut v = match c.pooling {
                Pooling::Mean => {
                    let mut m = vec![0f32; e];
                    for row in h.chunks_exact(e) {
                        for (a, b) in m.iter_mut().zip(row) {
                            *a += b;
                        }
                    }
                    m.iter_mut().for_each(|a| *a /= s.len() as f32);
                    m
                }
                Pooling::Cls => h[..e].to_vec(),
                Pooling::Last => h[h.len() - e..].to_vec(),
            };
            normalize(&mut v);
            out.push(v);
        }
        Ok(out)
    }
}

/// Scales `v` to unit Euclidean length (left as is when it is all zeros).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x = (*x as f64 / norm) as f32);
    }
}

/// Cosine similarity of two vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let na: f64 = a.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    (dot / (na * nb).max(f64::MIN_POSITIVE)) as f32
}
