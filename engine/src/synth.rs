//! Synthetic models: seeded random weights in an architecture's tensor layout,
//! with its metadata and a small SentencePiece vocabulary, written as GGUF.
//! They make parity fixtures that are small enough to commit and that anyone
//! can regenerate byte for byte (`owl synth`).
//!
//! The weights are random but sanely scaled: each matrix's entries have a
//! standard deviation of 1/sqrt(fan_in), so activations keep their size
//! through the blocks and the logits stay within a few units; norm weights are
//! near 1. The random numbers come from SplitMix64 and an Irwin-Hall sum of
//! uniforms (no transcendental functions), so a seed gives the same bytes on
//! every platform.
//!
//! An architecture here is its block layout (`layout`), from which follow its
//! tensor list (`tensors`) and metadata (`metadata`); routed experts
//! (`--experts N --experts-used K`: Mixtral-style llama, qwen2moe with its
//! shared expert, qwen3moe) are one more case of the same functions, and larger
//! shapes one more case of `Shape::named`.
//!
//! `synth_to_file` streams: the header first, then each tensor generated and
//! quantized a block of rows at a time, so an 8B-shaped file never sits whole in
//! memory; `synth` builds the same bytes in memory for tests.

use std::io::Write;
use std::path::Path;

use rayon::prelude::*;

use crate::gguf::{GgmlType, GgufWriter, TensorEntry, TensorInfo};
use crate::quantize::recipe::{self, ModelFacts, RecipeState};
use crate::quantize::FileType;
use crate::EngineError;

mod bert;

/// The vocabulary of llama.cpp-made synthetic models (tiny-llama-F32.gguf): 608
/// SentencePiece tokens, byte fallback. One line a token: type, score, piece.
const VOCAB: &str = include_str!("synth_vocab.tsv");

/// Architectures `synth` can write.
pub const ARCHS: &str = "llama, phi3, qwen2moe, qwen3moe, bert";
/// Shapes `synth` can write.
pub const SHAPES: &str = "tiny, 8b";

/// The sizes of a synthetic model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shape {
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub n_ff: usize,
    pub n_ctx: usize,
    pub rope_base: f32,
}

impl Shape {
    /// A shape by name: `tiny` (2 layers, n_embd 256, 4 heads of 64, 2 kv heads, n_ff 512)
    /// or `8b` (Llama 3 8B's: 32 layers, n_embd 4096, 32 heads of 128, 8 kv heads, n_ff
    /// 14336, rope base 500000; the vocabulary stays synth's 608 tokens).
    pub fn named(name: &str) -> Result<Shape, EngineError> {
        match name {
            "tiny" => Ok(Shape { n_embd: 256, n_layer: 2, n_head: 4, n_head_kv: 2, n_ff: 512, n_ctx: 2048, rope_base: 10_000.0 }),
            "8b" => Ok(Shape { n_embd: 4096, n_layer: 32, n_head: 32, n_head_kv: 8, n_ff: 14336, n_ctx: 8192, rope_base: 500_000.0 }),
            _ => Err(EngineError::Config(format!("unknown shape `{name}` (synth makes {SHAPES})"))),
        }
    }

    fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }
}

/// Routed experts per layer (for MoE architectures; none is a dense model).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Experts {
    pub n_expert: usize,
    pub n_expert_used: usize,
}

/// The types of a synthetic model's matrices (norms, biases and routers stay F32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightTypes {
    /// Every matrix in one type.
    All(GgmlType),
    /// llama-quantize's per-tensor recipe for a file type (`Q4_K_M`: Q4_K with Q6_K for
    /// output, and for attn_v and ffn_down on the layers its mix gives more bits).
    Mix(FileType),
}

impl From<GgmlType> for WeightTypes {
    fn from(t: GgmlType) -> Self {
        WeightTypes::All(t)
    }
}

impl WeightTypes {
    /// A GGML type name (`Q8_0`) or a llama-quantize mix with a K-quant (`Q4_K_M`).
    pub fn parse(name: &str) -> Result<WeightTypes, EngineError> {
        if let Some(t) = GgmlType::ALL.iter().find(|t| t.name().eq_ignore_ascii_case(name)) {
            return Ok(WeightTypes::All(*t));
        }
        match FileType::ALL.iter().find(|f| f.name().eq_ignore_ascii_case(name)) {
            Some(f) => Ok(WeightTypes::Mix(*f)),
            None => Err(EngineError::Config(format!("unknown weight type `{name}` (a GGML type such as Q8_0, or a llama-quantize mix such as Q4_K_M)"))),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            WeightTypes::All(t) => t.name(),
            WeightTypes::Mix(f) => f.name(),
        }
    }
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct SynthSpec {
    /// `general.architecture`: one of [`ARCHS`].
    pub arch: String,
    /// The shape's name (one of [`SHAPES`]), for `general.name`.
    pub shape_name: String,
    pub shape: Shape,
    /// Types of the matrices (norms stay F32); ones GGML can quantize without an imatrix.
    pub ty: WeightTypes,
    pub seed: u64,
    pub experts: Experts,
    /// `tokenizer.chat_template`, a Jinja chat template (none: the file has no template).
    pub chat_template: Option<String>,
}

/// How a tensor's values are drawn.
#[derive(Clone, Copy, Debug)]
enum Init {
    /// Near 1: 1 + U(-0.1, 0.1).
    Norm,
    /// Small: U(-0.1, 0.1).
    Bias,
    /// Zero-mean, standard deviation 1/sqrt(fan_in) (the row length), in the model's type.
    Matrix,
    /// As `Matrix`, but kept F32 as llama-quantize keeps it (MoE routers).
    MatrixF32,
}

/// One tensor to write: GGML dims (`[row_len, n_rows]`, `[row_len, n_rows, n_expert]` or `[n]`).
struct TensorSpec {
    name: String,
    dims: Vec<u64>,
    init: Init,
}

fn t(name: String, dims: &[usize], init: Init) -> TensorSpec {
    TensorSpec { name, dims: dims.iter().map(|&d| d as u64).collect(), init }
}

/// How an architecture's blocks are laid out in tensors.
#[derive(Clone, Copy, Debug, Default)]
struct Layout {
    /// One `attn_qkv` (Phi 3) rather than `attn_q`, `attn_k`, `attn_v`.
    fused_qkv: bool,
    /// Biases on q, k, v (Qwen 2 MoE).
    qkv_bias: bool,
    /// Per-head `attn_q_norm`, `attn_k_norm` (Qwen 3 MoE).
    qk_norm: bool,
    /// Gate and up in one `ffn_up` (Phi 3).
    fused_gate_up: bool,
    /// Whether the FFN may be (`Some(false)`) or must be (`Some(true)`) routed experts.
    experts: Option<bool>,
    /// A shared expert beside the routed ones, with its own sigmoid gate (Qwen 2 MoE).
    shared_expert: bool,
}

fn layout(arch: &str) -> Result<Layout, EngineError> {
    Ok(match arch {
        // `--experts N` makes it Mixtral-style.
        "llama" => Layout { experts: Some(false), ..Layout::default() },
        "phi3" => Layout { fused_qkv: true, fused_gate_up: true, ..Layout::default() },
        "qwen2moe" => Layout { qkv_bias: true, experts: Some(true), shared_expert: true, ..Layout::default() },
        "qwen3moe" => Layout { qk_norm: true, experts: Some(true), ..Layout::default() },
        // An encoder: its own tensors and vocabulary (synth/bert.rs).
        "bert" => Layout::default(),
        a => return Err(EngineError::Config(format!("synth cannot write architecture `{a}` (it makes {ARCHS})"))),
    })
}

/// The arch's tensors, in llama.cpp's order.
fn tensors(spec: &SynthSpec, n_vocab: usize) -> Result<Vec<TensorSpec>, EngineError> {
    let s = spec.shape;
    let hd = s.head_dim();
    let (e, q, kv, ff) = (s.n_embd, s.n_head * hd, s.n_head_kv * hd, s.n_ff);
    let l = layout(&spec.arch)?;
    let x = spec.experts;
    if spec.arch == "bert" {
        if x.n_expert > 0 || x.n_expert_used > 0 {
            return Err(EngineError::Config("`bert` has no experts (--experts is for llama, qwen2moe, qwen3moe)".into()));
        }
        return Ok(bert::tensors(spec, n_vocab));
    }
    let moe = x.n_expert > 0;
    match (l.experts, moe) {
        (None, true) => return Err(EngineError::Config(format!("`{}` has no experts (--experts is for llama, qwen2moe, qwen3moe)", spec.arch))),
        (Some(true), false) => return Err(EngineError::Config(format!("`{}` needs --experts N and --experts-used K", spec.arch))),
        _ => {}
    }
    if moe && (x.n_expert_used == 0 || x.n_expert_used > x.n_expert) {
        return Err(EngineError::Config(format!("--experts-used {} must be 1..={}", x.n_expert_used, x.n_expert)));
    }
    if !moe && x.n_expert_used > 0 {
        return Err(EngineError::Config("--experts-used needs --experts".into()));
    }
    use Init::*;
    let mut v = vec![t("token_embd.weight".into(), &[e, n_vocab], Matrix), t("output_norm.weight".into(), &[e], Norm), t("output.weight".into(), &[e, n_vocab], Matrix)];
    for il in 0..s.n_layer {
        let n = |x: &str| format!("blk.{il}.{x}.weight");
        let b = |x: &str| format!("blk.{il}.{x}.bias");
        v.push(t(n("attn_norm"), &[e], Norm));
        if l.fused_qkv {
            v.push(t(n("attn_qkv"), &[e, q + 2 * kv], Matrix));
        } else {
            v.push(t(n("attn_q"), &[e, q], Matrix));
            v.push(t(n("attn_k"), &[e, kv], Matrix));
            v.push(t(n("attn_v"), &[e, kv], Matrix));
        }
        if l.qkv_bias {
            v.push(t(b("attn_q"), &[q], Bias));
            v.push(t(b("attn_k"), &[kv], Bias));
            v.push(t(b("attn_v"), &[kv], Bias));
        }
        if l.qk_norm {
            v.push(t(n("attn_q_norm"), &[hd], Norm));
            v.push(t(n("attn_k_norm"), &[hd], Norm));
        }
        v.push(t(n("attn_output"), &[q, e], Matrix));
        v.push(t(n("ffn_norm"), &[e], Norm));
        if moe {
            v.push(t(n("ffn_gate_inp"), &[e, x.n_expert], MatrixF32));
            v.push(t(n("ffn_gate_exps"), &[e, ff, x.n_expert], Matrix));
            v.push(t(n("ffn_up_exps"), &[e, ff, x.n_expert], Matrix));
            v.push(t(n("ffn_down_exps"), &[ff, e, x.n_expert], Matrix));
            if l.shared_expert {
                v.push(t(n("ffn_gate_inp_shexp"), &[e], MatrixF32));
                v.push(t(n("ffn_gate_shexp"), &[e, ff], Matrix));
                v.push(t(n("ffn_up_shexp"), &[e, ff], Matrix));
                v.push(t(n("ffn_down_shexp"), &[ff, e], Matrix));
            }
        } else if l.fused_gate_up {
            v.push(t(n("ffn_up"), &[e, 2 * ff], Matrix));
            v.push(t(n("ffn_down"), &[ff, e], Matrix));
        } else {
            v.push(t(n("ffn_gate"), &[e, ff], Matrix));
            v.push(t(n("ffn_up"), &[e, ff], Matrix));
            v.push(t(n("ffn_down"), &[ff, e], Matrix));
        }
    }
    Ok(v)
}

/// llama.cpp's `general.file_type` (enum llama_ftype) for the model's types.
fn file_type(ty: WeightTypes) -> Result<u32, EngineError> {
    let ty = match ty {
        WeightTypes::Mix(f) => return Ok(f.id()),
        WeightTypes::All(t) => t,
    };
    Ok(match ty {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::Q4_0 => 2,
        GgmlType::Q4_1 => 3,
        GgmlType::Q8_0 => 7,
        GgmlType::Q5_0 => 8,
        GgmlType::Q5_1 => 9,
        GgmlType::BF16 => 32,
        t => return Err(EngineError::Config(format!("synth cannot write {t} weights (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0)"))),
    })
}

fn metadata(w: &mut GgufWriter<'_>, spec: &SynthSpec) -> Result<usize, EngineError> {
    if spec.arch == "bert" {
        let n_vocab = bert::metadata(w, spec);
        w.set("general.file_type", file_type(spec.ty)?);
        return Ok(n_vocab);
    }
    let s = spec.shape;
    let a = spec.arch.as_str();
    let k = |key: &str| format!("{a}.{key}");
    w.set("general.architecture", a);
    // Not the arch's name: llama.cpp's vocab loader takes a general.name with "phi3" in it
    // for Microsoft's vocabulary and looks up its special tokens (`<|end|>`, ...).
    w.set("general.name", format!("owl-synth-{}", spec.shape_name));
    w.set(k("context_length"), s.n_ctx as u32);
    w.set(k("embedding_length"), s.n_embd as u32);
    w.set(k("block_count"), s.n_layer as u32);
    w.set(k("feed_forward_length"), s.n_ff as u32);
    w.set(k("attention.head_count"), s.n_head as u32);
    w.set(k("attention.head_count_kv"), s.n_head_kv as u32);
    w.set(k("attention.layer_norm_rms_epsilon"), 1e-5f32);
    w.set(k("rope.freq_base"), s.rope_base);
    w.set(k("rope.dimension_count"), s.head_dim() as u32);
    if spec.experts.n_expert > 0 {
        // Each expert's FFN has the shape's n_ff; so has Qwen 2 MoE's shared expert.
        w.set(k("expert_count"), spec.experts.n_expert as u32);
        w.set(k("expert_used_count"), spec.experts.n_expert_used as u32);
        if a != "llama" {
            w.set(k("expert_feed_forward_length"), s.n_ff as u32);
        }
        if a == "qwen2moe" {
            w.set(k("expert_shared_feed_forward_length"), s.n_ff as u32);
        }
    }
    w.set("general.file_type", file_type(spec.ty)?);
    // The vocabulary, as llama.cpp's own synthetic models carry it.
    let (mut tokens, mut scores, mut types) = (Vec::new(), Vec::new(), Vec::new());
    for line in VOCAB.lines() {
        let mut f = line.splitn(3, '\t');
        let (Some(ty), Some(score), Some(piece)) = (f.next(), f.next(), f.next()) else {
            return Err(EngineError::Internal(format!("synth vocabulary line `{line}`")));
        };
        types.push(ty.parse::<i32>().map_err(|e| EngineError::Internal(format!("synth vocabulary: {e}")))?);
        scores.push(score.parse::<f32>().map_err(|e| EngineError::Internal(format!("synth vocabulary: {e}")))?);
        tokens.push(piece.to_string());
    }
    let n_vocab = tokens.len();
    w.set("tokenizer.ggml.model", "llama");
    w.set("tokenizer.ggml.tokens", tokens);
    w.set("tokenizer.ggml.scores", scores);
    w.set("tokenizer.ggml.token_type", types);
    w.set("tokenizer.ggml.bos_token_id", 1u32);
    w.set("tokenizer.ggml.eos_token_id", 2u32);
    w.set("tokenizer.ggml.unknown_token_id", 0u32);
    w.set("tokenizer.ggml.add_bos_token", true);
    w.set("tokenizer.ggml.add_eos_token", false);
    if let Some(t) = &spec.chat_template {
        w.set("tokenizer.chat_template", t.clone());
    }
    Ok(n_vocab)
}

/// SplitMix64 (Steele, Lea, Flood 2014): small, fast, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), 24 bits.
    fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// Zero mean, unit variance, near-Gaussian: the sum of 4 uniforms, centred and scaled
    /// (variance of one uniform is 1/12).
    fn normal(&mut self) -> f32 {
        let s = self.uniform() + self.uniform() + self.uniform() + self.uniform();
        (s - 2.0) * 3f32.sqrt()
    }
}

/// Each tensor's type: llama-quantize's recipe for a mix, else the one type; norms,
/// biases and routers F32.
fn tensor_types(spec: &SynthSpec, list: &[TensorSpec]) -> Result<Vec<GgmlType>, EngineError> {
    let s = spec.shape;
    let facts = ModelFacts {
        arch: spec.arch.clone(),
        n_layer: s.n_layer,
        n_head: s.n_head as u32,
        n_head_kv: s.n_head_kv as u32,
        n_expert: spec.experts.n_expert as u32,
        has_output: true,
        n_attention_wv: s.n_layer,
    };
    let mut st = RecipeState::default();
    list.iter()
        .map(|t| match (t.init, spec.ty) {
            (Init::Norm | Init::Bias | Init::MatrixF32, _) => Ok(GgmlType::F32),
            (Init::Matrix, WeightTypes::All(ty)) => Ok(ty),
            (Init::Matrix, WeightTypes::Mix(f)) => {
                let info = TensorInfo { name: t.name.clone(), dims: t.dims.clone(), ty: GgmlType::F32, offset: 0, size: 0, file: 0 };
                if !recipe::is_quantizable(&info) {
                    return Ok(GgmlType::F32);
                }
                recipe::tensor_type(&facts, &mut st, f, &info).map_err(|e| EngineError::Config(format!("{}: {e}", t.name)))
            }
        })
        .collect()
}

/// A model's metadata (in the writer) and its tensor table (name, GGML dims, type),
/// without any tensor data.
pub fn plan(spec: &SynthSpec) -> Result<(GgufWriter<'static>, Vec<(String, Vec<u64>, GgmlType)>), EngineError> {
    let (w, list, types) = plan_inits(spec)?;
    Ok((w, list.into_iter().zip(types).map(|(t, ty)| (t.name, t.dims, ty)).collect()))
}

/// `plan`, with each tensor's init.
fn plan_inits(spec: &SynthSpec) -> Result<(GgufWriter<'static>, Vec<TensorSpec>, Vec<GgmlType>), EngineError> {
    let mut w = GgufWriter::new();
    let n_vocab = metadata(&mut w, spec)?;
    let list = tensors(spec, n_vocab)?;
    let types = tensor_types(spec, &list)?;
    Ok((w, list, types))
}

/// Values a block of rows at a time (about 4M: a few MB), quantized rows in parallel;
/// `f` gets each block's bytes in order. Tensor `i` draws from its own stream, so
/// adding a tensor does not change the others' values.
fn each_block(spec: &SynthSpec, i: usize, name: &str, dims: &[u64], ty: GgmlType, init: Init, mut f: impl FnMut(&[u8]) -> Result<(), EngineError>) -> Result<(), EngineError> {
    let mut rng = Rng(spec.seed ^ (i as u64 + 1).wrapping_mul(0xd1b5_4a32_d192_ed03));
    let row = dims[0] as usize;
    let n_rows = (dims.iter().product::<u64>() / dims[0].max(1)) as usize;
    let row_bytes = ty.row_bytes(row).ok_or_else(|| EngineError::Config(format!("{name}: rows of {row} do not fill {ty} blocks")))?;
    let per = (4usize << 20).div_ceil(row.max(1)).max(1);
    let sd = 1.0 / (row as f32).sqrt();
    let (mut vals, mut bytes) = (Vec::new(), Vec::new());
    let mut r0 = 0;
    while r0 < n_rows {
        let rows = per.min(n_rows - r0);
        vals.clear();
        vals.extend((0..rows * row).map(|_| match init {
            Init::Norm => 1.0 + 0.2 * (rng.uniform() - 0.5),
            Init::Bias => 0.2 * (rng.uniform() - 0.5),
            Init::Matrix | Init::MatrixF32 => sd * rng.normal(),
        }));
        bytes.clear();
        bytes.resize(rows * row_bytes, 0);
        vals.par_chunks(row).zip(bytes.par_chunks_mut(row_bytes)).try_for_each(|(src, dst)| owl_quant::quantize(ty, src, dst)).map_err(|e| EngineError::Config(format!("{name}: {e}")))?;
        f(&bytes)?;
        r0 += rows;
    }
    Ok(())
}

/// Builds the whole model in memory; `GgufWriter::write_file` or `to_bytes` writes it.
/// Its bytes equal `synth_to_file`'s.
pub fn synth(spec: &SynthSpec) -> Result<GgufWriter<'static>, EngineError> {
    let (mut w, list, types) = plan_inits(spec)?;
    for (i, (t, ty)) in list.iter().zip(types).enumerate() {
        let mut data = Vec::new();
        each_block(spec, i, &t.name, &t.dims, ty, t.init, |b| {
            data.extend_from_slice(b);
            Ok(())
        })?;
        w.add_tensor(t.name.clone(), &t.dims, ty, data)?;
    }
    Ok(w)
}

/// Writes the model to `path` streamed: header and tensor table, then each tensor a
/// block of rows at a time (memory stays a few MB whatever the shape). The file is
/// written under a temporary name beside `path` and renamed when complete. Returns
/// its size in bytes.
pub fn synth_to_file(spec: &SynthSpec, path: &Path) -> Result<u64, EngineError> {
    let (w, list, types) = plan_inits(spec)?;
    let align = w.alignment()? as u64;
    let io = |e: std::io::Error| EngineError::Config(format!("writing {}: {e}", path.display()));
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".part");
    let tmp = std::path::PathBuf::from(tmp_name);
    let result = (|| {
        let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp).map_err(io)?);
        let entries: Vec<TensorEntry> = list.iter().zip(&types).map(|(t, &ty)| TensorEntry { name: &t.name, dims: &t.dims, ty }).collect();
        let mut n = w.write_header(&mut out, &entries)?;
        for (i, (t, &ty)) in list.iter().zip(&types).enumerate() {
            each_block(spec, i, &t.name, &t.dims, ty, t.init, |b| {
                out.write_all(b).map_err(io)?;
                n += b.len() as u64;
                Ok(())
            })?;
            let pad = n.next_multiple_of(align) - n;
            out.write_all(&vec![0u8; pad as usize]).map_err(io)?;
            n += pad;
        }
        out.flush().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        Ok(n)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(arch: &str, seed: u64) -> SynthSpec {
        SynthSpec { arch: arch.into(), shape_name: "tiny".into(), shape: Shape::named("tiny").unwrap(), ty: GgmlType::Q8_0.into(), seed, experts: Experts::default(), chat_template: None }
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        for arch in ["llama", "phi3"] {
            let a = synth(&spec(arch, 7)).unwrap().to_bytes().unwrap();
            let b = synth(&spec(arch, 7)).unwrap().to_bytes().unwrap();
            let c = synth(&spec(arch, 8)).unwrap().to_bytes().unwrap();
            assert_eq!(a, b);
            assert_ne!(a, c);
        }
    }

    #[test]
    fn experts_are_checked_and_laid_out() {
        let mut s = spec("qwen3moe", 1);
        assert!(synth(&s).unwrap_err().to_string().contains("--experts"));
        s.experts = Experts { n_expert: 4, n_expert_used: 2 };
        let g = crate::gguf::Gguf::from_bytes(std::sync::Arc::new(synth(&s).unwrap().to_bytes().unwrap())).unwrap();
        let up = g.tensor("blk.1.ffn_up_exps.weight").unwrap();
        assert_eq!(up.dims, vec![256, 512, 4]);
        assert_eq!(g.metadata().get::<u32>("qwen3moe.expert_used_count").unwrap(), 2);
        let mut p = spec("phi3", 1);
        p.experts = Experts { n_expert: 4, n_expert_used: 2 };
        assert!(synth(&p).is_err());
    }

    #[test]
    fn streamed_file_equals_the_in_memory_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut moe = spec("qwen3moe", 3);
        moe.experts = Experts { n_expert: 4, n_expert_used: 2 };
        moe.ty = WeightTypes::parse("Q4_K_M").unwrap();
        for s in [spec("llama", 5), moe] {
            let path = dir.path().join(format!("{}.gguf", s.arch));
            let n = synth_to_file(&s, &path).unwrap();
            let file = std::fs::read(&path).unwrap();
            assert_eq!(file.len() as u64, n);
            assert_eq!(file, synth(&s).unwrap().to_bytes().unwrap(), "{}", s.arch);
            assert!(!dir.path().join(format!("{}.gguf.part", s.arch)).exists());
        }
    }

    /// The 8b shape's metadata and tensor table (its 4 GB of data is never written here):
    /// Llama 3 8B's hyperparameters, and llama-quantize's Q4_K_M types.
    #[test]
    fn shape_8b_is_llama_3_8b_in_q4_k_m() {
        let s = SynthSpec { arch: "llama".into(), shape_name: "8b".into(), shape: Shape::named("8b").unwrap(), ty: WeightTypes::parse("q4_k_m").unwrap(), seed: 1, experts: Experts::default(), chat_template: None };
        let (w, table) = plan(&s).unwrap();
        let md = w.metadata();
        for (key, want) in [("block_count", 32u32), ("embedding_length", 4096), ("attention.head_count", 32), ("attention.head_count_kv", 8), ("feed_forward_length", 14336), ("rope.dimension_count", 128)] {
            assert_eq!(md.get::<u32>(&format!("llama.{key}")).unwrap(), want, "{key}");
        }
        assert_eq!(md.get::<f32>("llama.rope.freq_base").unwrap(), 500_000.0);
        assert_eq!(md.get::<u32>("general.file_type").unwrap(), 15, "LLAMA_FTYPE_MOSTLY_Q4_K_M");
        assert_eq!(table.len(), 3 + 32 * 9);
        let ty = |name: &str| table.iter().find(|t| t.0 == name).unwrap_or_else(|| panic!("{name}")).2;
        let dims = |name: &str| table.iter().find(|t| t.0 == name).unwrap().1.clone();
        assert_eq!(dims("blk.31.ffn_gate.weight"), vec![4096, 14336]);
        assert_eq!(dims("blk.0.attn_k.weight"), vec![4096, 1024]);
        assert_eq!(dims("blk.0.ffn_down.weight"), vec![14336, 4096]);
        assert_eq!((ty("token_embd.weight"), ty("output.weight"), ty("output_norm.weight")), (GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::F32));
        // use_more_bits: the first and last 4 of 32 layers and every third between get Q6_K.
        let more: Vec<usize> = (0..32).filter(|&i| ty(&format!("blk.{i}.ffn_down.weight")) == GgmlType::Q6_K).collect();
        assert_eq!(more, vec![0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]);
        assert_eq!(more, (0..32).filter(|&i| ty(&format!("blk.{i}.attn_v.weight")) == GgmlType::Q6_K).collect::<Vec<_>>());
        assert_eq!(ty("blk.5.attn_q.weight"), GgmlType::Q4_K);
        let bytes: u64 = table.iter().map(|(_, d, t)| t.row_bytes(d[0] as usize).unwrap() as u64 * d.iter().skip(1).product::<u64>()).sum();
        assert!((4_000_000_000..4_500_000_000).contains(&bytes), "{bytes} bytes of tensors");
    }

    #[test]
    fn unknown_arch_names_what_is_supported() {
        let e = synth(&spec("gpt2", 1)).unwrap_err().to_string();
        assert!(e.contains("gpt2") && e.contains(ARCHS), "{e}");
    }

    #[test]
    fn normal_has_unit_variance() {
        let mut r = Rng(1);
        let v: Vec<f32> = (0..100_000).map(|_| r.normal()).collect();
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / v.len() as f32;
        assert!(mean.abs() < 0.02 && (var - 1.0).abs() < 0.02, "mean {mean}, var {var}");
    }
}
