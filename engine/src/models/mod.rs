//! Model architectures. Each architecture is a small `Arch` description
//! (`llama.rs`, `gemma3.rs`, `qwen2.rs`, `qwen3.rs`, `phi3.rs`) of how its decoder block
//! differs; `transformer.rs` runs the forward pass they share, step by step.

pub mod bert;
pub mod gemma3;
pub mod llama;
mod moe;
pub mod phi3;
pub mod qwen2;
pub mod qwen3;
pub mod transformer;

pub use transformer::{Batch, BatchRow, Model};

use owl_backends::RopeMode;

/// What sets one decoder-only architecture apart from the others.
#[derive(Clone, Copy, Debug)]
pub struct Arch {
    pub name: &'static str,
    pub rope_mode: RopeMode,
    /// Multiply the token embedding by sqrt(n_embd) (Gemma).
    pub embd_scale_sqrt: bool,
    /// Norms after attention and FFN as well as before (Gemma 3).
    pub post_norms: bool,
    /// Per-head RMS norms of q and k (Gemma 3, Qwen 3).
    pub qk_norm: bool,
    /// Biases on q, k, v (Qwen 2).
    pub qkv_bias: bool,
    /// GeGLU (Gemma) instead of SwiGLU.
    pub gelu: bool,
    /// Q, K and V stacked in one `attn_qkv` weight (Phi 3).
    pub fused_qkv: bool,
    /// Gate and up stacked in one `ffn_up` weight, gate first (Phi 3).
    pub fused_gate_up: bool,
    /// q scaled by 1/sqrt(head_dim) before the scores rather than the scores after (Gemma 3, Phi 3).
    pub q_prescale: bool,
    /// Every block's FFN is routed experts (qwen2moe, qwen3moe); llama has them when
    /// `expert_count` says so (Mixtral).
    pub moe: bool,
    /// A shared expert beside the routed ones, with a sigmoid gate (Qwen 2 MoE).
    pub shared_expert: bool,
    /// Renormalise the chosen experts' weights to sum to 1 (Mixtral, Qwen 3 MoE; not Qwen 2 MoE).
    pub moe_norm_w: bool,
    /// Sliding-window layers alternate with global ones (Gemma 3).
    pub swa: bool,
    /// Default 1 of every `swa_pattern` layers is global.
    pub swa_pattern: usize,
}

/// The architecture for a GGUF `general.architecture`.
pub fn arch(name: &str) -> Option<Arch> {
    match name {
        "llama" | "mistral" => Some(llama::ARCH),
        "gemma3" => Some(gemma3::ARCH),
        "qwen2" => Some(qwen2::ARCH),
        "qwen3" => Some(qwen3::ARCH),
        "qwen2moe" => Some(Arch { name: "qwen2moe", moe: true, shared_expert: true, moe_norm_w: false, ..qwen2::ARCH }),
        "qwen3moe" => Some(Arch { name: "qwen3moe", moe: true, ..qwen3::ARCH }),
        "phi3" => Some(phi3::ARCH),
        _ => None,
    }
}

pub const SUPPORTED: &str = "llama (and Mixtral-style experts), mistral, gemma3, qwen2, qwen3, qwen2moe, qwen3moe, phi3";

/// Upper bounds on hyperparameters, far past every published model, so a file that
/// claims more (a hostile or corrupt header) is refused before anything is sized by
/// it: allocation, the KV cache, products such as `n_head * head_dim`.
pub(crate) const LIMITS: &[(&str, usize)] = &[
    ("block_count", 1 << 12),
    ("embedding_length", 1 << 20),
    ("attention.head_count", 1 << 16),
    ("attention.head_count_kv", 1 << 16),
    ("attention.key_length", 1 << 16),
    ("rope.dimension_count", 1 << 16),
    ("feed_forward_length", 1 << 24),
    ("expert_feed_forward_length", 1 << 24),
    ("context_length", 1 << 26),
    ("expert_count", 1 << 16),
    ("expert_used_count", 1 << 16),
    ("attention.sliding_window", 1 << 26),
    ("attention.sliding_window_pattern", 1 << 12),
    ("vocab", 1 << 24),
];

/// Checks each `(key, value)` against [`LIMITS`]; the error names the key, the value and the limit.
pub(crate) fn check_limits(arch: &str, values: &[(&str, usize)]) -> Result<(), crate::EngineError> {
    for &(key, value) in values {
        let Some(&(_, max)) = LIMITS.iter().find(|(k, _)| *k == key) else {
            continue;
        };
        if value > max {
            let what = if key == "vocab" { "the vocabulary (rows of token_embd.weight)".to_string() } else { format!("{arch}.{key}") };
            return Err(crate::EngineError::BadModel(format!(
                "{what} = {value} is beyond any real model (owl accepts at most {max}): the file is corrupt or hostile"
            )));
        }
    }
    Ok(())
}
