//! Qwen 2: llama blocks with biases on q, k and v, NeoX RoPE.
use super::Arch;
use owl_backends::RopeMode;

pub const ARCH: Arch = Arch {
    name: "qwen2",
    rope_mode: RopeMode::Neox,
    embd_scale_sqrt: false,
    post_norms: false,
    qk_norm: false,
    qkv_bias: true,
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
