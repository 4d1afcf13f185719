//! Llama (SmolLM2, Llama 2/3, Mistral, TinyLlama): pre-norm blocks, RoPE on
//! adjacent pairs, SwiGLU, tied or separate output head.
use super::Arch;
use owl_backends::RopeMode;

pub const ARCH: Arch = Arch {
    name: "llama",
    rope_mode: RopeMode::Normal,
    embd_scale_sqrt: false,
    post_norms: false,
    qk_norm: false,
    qkv_bias: false,
    fused_qkv: false,
    fused_gate_up: false,
    q_prescale: false,
    gelu: false,
    moe: false,
    shared_expert: false,
    moe_norm_w: true,
    swa: false,
    swa_pattern: 0,
};
