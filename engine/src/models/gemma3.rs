//! Gemma 3: embedding scaled by sqrt(n_embd); norms before and after attention
//! and FFN; per-head q/k RMS norms; q scaled by 1/sqrt(head_dim) before the
//! scores; sliding-window layers (window from metadata) with one global layer
//! in every 6 (`sliding_window_pattern` if the file has it), each layer type
//! with its own RoPE base (global: rope.freq_base, local: 10000); GeGLU;
//! NeoX RoPE; output head tied to the embedding. (llama.cpp src/models/gemma3.cpp.)
use super::Arch;
use owl_backends::RopeMode;

pub const ARCH: Arch = Arch {
    name: "gemma3",
    rope_mode: RopeMode::Neox,
    embd_scale_sqrt: true,
    post_norms: true,
    qk_norm: true,
    qkv_bias: false,
    fused_qkv: false,
    fused_gate_up: false,
    q_prescale: true,
    gelu: true,
    moe: false,
    shared_expert: false,
    moe_norm_w: true,
    swa: true,
    swa_pattern: 6,
};

/// RoPE base of the sliding-window layers when the file does not say.
pub const ROPE_BASE_SWA: f32 = 10_000.0;
