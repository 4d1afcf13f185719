//! Phi 3 (Phi-3-mini, Phi-3.5-mini): llama blocks with q, k and v in one
//! fused `attn_qkv` weight (rows: q, then k, then v), gate and up in one
//! `ffn_up` weight (rows: gate, then up), NeoX RoPE, and q scaled by
//! 1/sqrt(head_dim) before the scores. (llama.cpp src/models/phi3.cpp.)
//! Files with `rope_factors_long/short` (the 128k-context variants) are not
//! read: their LongRoPE scaling is not implemented, so they are refused.
use super::Arch;
use owl_backends::RopeMode;

pub const ARCH: Arch = Arch {
    name: "phi3",
    rope_mode: RopeMode::Neox,
    embd_scale_sqrt: false,
    post_norms: false,
    qk_norm: false,
    qkv_bias: false,
    fused_qkv: true,
    fused_gate_up: true,
    q_prescale: true,
    gelu: false,
    moe: false,
    shared_expert: false,
    moe_norm_w: true,
    swa: false,
    swa_pattern: 0,
};
