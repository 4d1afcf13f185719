//! A synthetic plain `bert` encoder (BGE-style): WordPiece vocabulary, absolute
//! position embeddings, two token types, LayerNorm with biases, q/k/v and FFN
//! biases, a GELU feed-forward and CLS pooling, in llama.cpp's tensor names.

use super::{t, Init, SynthSpec, TensorSpec};
use crate::gguf::GgufWriter;

/// Positions the model has embeddings for (`bert.context_length`).
const N_CTX: usize = 512;

/// Common English words, whole (the rest of a text falls back to single letters and
/// continuations, which cover every lowercase ASCII word).
const WORDS: &str = "the of and to in is was for on that with as by it at from his an were are which this be or has had not first one their its new after but who they have her she two been other when there all during into school time may years more most only over city some world would where later up such used many can state about national out known university united then made year part well called both under while since";
/// Continuations that WordPiece prefers to letters.
const PIECES: &str = "ed ing er ly es al ion on an en re ent ity";

/// The vocabulary, with BERT's special ids (what llama.cpp and owl assume for a
/// WordPiece vocabulary): `[PAD]` 0, `[unused0..98]`, `[UNK]` 100, `[CLS]` 101, `[SEP]`
/// 102, `[MASK]` 103; then printable ASCII, continuation letters and digits, some pieces
/// and words. As llama.cpp's converter writes a WordPiece vocabulary, a piece that starts
/// a word carries `▁` (U+2581) and a continuation has no `##`.
/// (token, llama.cpp token type: 1 normal, 3 control.)
pub(super) fn vocab() -> Vec<(String, i32)> {
    let mut v: Vec<(String, i32)> = vec![("[PAD]".into(), 3)];
    v.extend((0..99).map(|i| (format!("[unused{i}]"), 1)));
    v.extend(["[UNK]", "[CLS]", "[SEP]", "[MASK]"].iter().map(|s| (s.to_string(), 3)));
    v.extend((b'!'..=b'~').filter(|c| !c.is_ascii_uppercase()).map(|c| (format!("\u{2581}{}", c as char), 1)));
    v.extend((b'a'..=b'z').chain(b'0'..=b'9').map(|c| ((c as char).to_string(), 1)));
    v.extend(PIECES.split(' ').map(|p| (p.to_string(), 1)));
    v.extend(WORDS.split(' ').map(|w| (format!("\u{2581}{w}"), 1)));
    v
}

pub(super) fn metadata(w: &mut GgufWriter<'_>, spec: &SynthSpec) -> usize {
    let s = spec.shape;
    let k = |key: &str| format!("bert.{key}");
    w.set("general.architecture", "bert");
    w.set("general.name", format!("owl-synth-{}", spec.shape_name));
    w.set(k("context_length"), N_CTX as u32);
    w.set(k("embedding_length"), s.n_embd as u32);
    w.set(k("block_count"), s.n_layer as u32);
    w.set(k("feed_forward_length"), s.n_ff as u32);
    w.set(k("attention.head_count"), s.n_head as u32);
    w.set(k("attention.layer_norm_epsilon"), 1e-12f32);
    w.set(k("attention.causal"), false);
    // CLS, as BGE pools.
    w.set(k("pooling_type"), 2u32);
    let (tokens, types): (Vec<String>, Vec<i32>) = vocab().into_iter().unzip();
    let n_vocab = tokens.len();
    w.set("tokenizer.ggml.token_type_count", 2u32);
    w.set("tokenizer.ggml.model", "bert");
    w.set("tokenizer.ggml.pre", "bert-bge");
    w.set("tokenizer.ggml.tokens", tokens);
    w.set("tokenizer.ggml.token_type", types);
    w.set("tokenizer.ggml.unknown_token_id", 100u32);
    w.set("tokenizer.ggml.seperator_token_id", 102u32);
    w.set("tokenizer.ggml.padding_token_id", 0u32);
    w.set("tokenizer.ggml.cls_token_id", 101u32);
    w.set("tokenizer.ggml.mask_token_id", 103u32);
    n_vocab
}

/// The tensors, in llama.cpp's order (its `convert_hf_to_gguf.py` writes BERT's so).
pub(super) fn tensors(spec: &SynthSpec, n_vocab: usize) -> Vec<TensorSpec> {
    use Init::*;
    let s = spec.shape;
    let (e, ff) = (s.n_embd, s.n_ff);
    let mut v = vec![
        t("token_embd.weight".into(), &[e, n_vocab], Matrix),
        t("token_types.weight".into(), &[e, 2], MatrixF32),
        t("position_embd.weight".into(), &[e, N_CTX], MatrixF32),
        t("token_embd_norm.weight".into(), &[e], Norm),
        t("token_embd_norm.bias".into(), &[e], Bias),
    ];
    for il in 0..s.n_layer {
        let n = |x: &str| format!("blk.{il}.{x}");
        for (name, dims) in [("attn_q", [e, e]), ("attn_k", [e, e]), ("attn_v", [e, e]), ("attn_output", [e, e])] {
            v.push(t(n(&format!("{name}.weight")), &dims, Matrix));
            v.push(t(n(&format!("{name}.bias")), &[dims[1]], Bias));
        }
        v.push(t(n("attn_output_norm.weight"), &[e], Norm));
        v.push(t(n("attn_output_norm.bias"), &[e], Bias));
        v.push(t(n("ffn_up.weight"), &[e, ff], Matrix));
        v.push(t(n("ffn_up.bias"), &[ff], Bias));
        v.push(t(n("ffn_down.weight"), &[ff, e], Matrix));
        v.push(t(n("ffn_down.bias"), &[e], Bias));
        v.push(t(n("layer_output_norm.weight"), &[e], Norm));
        v.push(t(n("layer_output_norm.bias"), &[e], Bias));
    }
    v
}

#[cfg(test)]
mod tests {
    /// llama.cpp refuses a vocabulary with a token twice.
    #[test]
    fn vocab_has_each_token_once_and_berts_special_ids() {
        let v = super::vocab();
        let set: std::collections::HashSet<&str> = v.iter().map(|t| t.0.as_str()).collect();
        assert_eq!(set.len(), v.len());
        assert_eq!((v[0].0.as_str(), v[100].0.as_str(), v[101].0.as_str(), v[102].0.as_str(), v[103].0.as_str()), ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"));
    }
}
