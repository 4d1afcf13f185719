//! llama-quantize's per-tensor recipe without an importance matrix: which
//! tensors are quantized at all (`llama_model_quantize_impl`) and the type each
//! one gets (`llama_tensor_get_type`): output and token embedding, the _S/_M/_L
//! mixes' higher types for attn_v / ffn_down / attn_output by layer, and the
//! fallbacks for rows that do not divide into the type's blocks.

use owl_quant::GgmlType;

use super::FileType;
use crate::gguf::{Gguf, TensorInfo};

/// What the recipe needs of the model: llama_model's hparams as the quantizer reads them.
#[derive(Debug, Clone)]
pub struct ModelFacts {
    pub arch: String,
    pub n_layer: usize,
    pub n_head: u32,
    pub n_head_kv: u32,
    pub n_expert: u32,
    /// Whether the model has its own `output.weight` (otherwise the token
    /// embedding doubles as the output and is quantized as one).
    pub has_output: bool,
    /// Tensors named like attn_v / attn_qkv / attn_kv_b (`n_attention_wv`).
    pub n_attention_wv: usize,
}

impl ModelFacts {
    pub fn of(g: &Gguf) -> ModelFacts {
        let md = g.metadata();
        let arch = g.arch().unwrap_or("").to_string();
        let first = |suffix: &str| -> u32 {
            let key = format!("{arch}.{suffix}");
            match md.value(&key) {
                Some(v) => match v.as_array() {
                    Some(items) => items.first().and_then(|i| i.as_i128()).unwrap_or(0) as u32,
                    None => v.as_i128().unwrap_or(0) as u32,
                },
                None => 0,
            }
        };
        let n_head = first("attention.head_count");
        let n_head_kv = match md.value(&format!("{arch}.attention.head_count_kv")) {
            Some(_) => first("attention.head_count_kv"),
            None => n_head,
        };
        let n_attention_wv = g
            .tensors()
            .iter()
            .filter(|t| {
                t.name.contains("attn_v.weight")
                    || t.name.contains("attn_qkv.weight")
                    || t.name.contains("attn_kv_b.weight")
            })
            .count();
        ModelFacts {
            n_layer: first("block_count") as usize,
            n_head,
            n_head_kv,
            n_expert: first("expert_count"),
            has_output: g.tensor("output.weight").is_some(),
            n_attention_wv,
            arch,
        }
    }

    /// `hparams.n_gqa()`.
    fn n_gqa(&self) -> u32 {
        self.n_head.checked_div(self.n_head_kv).unwrap_or(0)
    }

    fn is_falcon(&self) -> bool {
        self.arch == "falcon"
    }

    /// `model.type == LLM_TYPE_70B` (llama's 80-layer GQA model).
    fn is_70b(&self) -> bool {
        self.arch == "llama" && self.n_layer == 80 && self.n_head != self.n_head_kv
    }
}

/// Number of dimensions as `ggml_n_dims` counts them (trailing 1s dropped).
pub fn n_dims(dims: &[u64]) -> usize {
    dims.iter().rposition(|&d| d > 1).map_or(1, |i| i + 1)
}

/// Whether llama-quantize quantizes this tensor at all, before the per-tensor
/// type is chosen: 2-D+ weights other than norms, gating and the small special
/// tensors of some architectures.
pub fn is_quantizable(t: &TensorInfo) -> bool {
    let name = t.name.as_str();
    const SKIP: &[&str] = &[
        "_norm.weight",
        "ffn_gate_inp.weight",
        "altup",
        "laurel",
        "per_layer_model_proj",
        "ssm_conv1d.weight",
        "shortconv.conv.weight",
        "time_mix_first.weight",
        "time_mix_w0.weight",
        "time_mix_w1.weight",
        "time_mix_w2.weight",
        "time_mix_v0.weight",
        "time_mix_v1.weight",
        "time_mix_v2.weight",
        "time_mix_a0.weight",
        "time_mix_a1.weight",
        "time_mix_a2.weight",
        "time_mix_g1.weight",
        "time_mix_g2.weight",
        "time_mix_decay_w1.weight",
        "time_mix_decay_w2.weight",
        "time_mix_lerp_fused.weight",
        "attn_rel_b.weight",
        ".position_embd.",
    ];
    name.ends_with("weight")
        && n_dims(&t.dims) >= 2
        && !SKIP.iter().any(|s| name.contains(s))
        && name != "position_embd.weight"
        && name != "token_types.weight"
}

/// `use_more_bits`: the first and last eighth of the layers and every third between.
fn use_more_bits(i_layer: usize, n_layers: usize) -> bool {
    let (i, n) = (i_layer as i64, n_layers as i64);
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// The running counters `llama_tensor_get_type` keeps across tensors (they
/// count in the order tensors are quantized, which is the output file's order).
#[derive(Debug, Default)]
pub struct RecipeState {
    i_attention_wv: usize,
    i_ffn_down: usize,
    /// Tensors that needed a fallback type.
    pub n_fallback: usize,
}

/// The layer of `name` (`blk.N.`), for mixture-of-experts models whose FFN
/// tensors do not come one per layer in order.
fn layer_of(name: &str) -> Option<usize> {
    let rest = name.strip_prefix("blk.")?;
    rest[..rest.find('.')?].parse().ok()
}

/// The type llama-quantize gives tensor `t` in a file of type `ftype`: the file
/// type's default type, raised or lowered by the recipe. `Err` when no type fits
/// the row length.
pub fn tensor_type(
    facts: &ModelFacts,
    st: &mut RecipeState,
    ftype: FileType,
    t: &TensorInfo,
) -> Result<GgmlType, String> {
    use FileType as F;
    use GgmlType as G;
    let default = ftype.default_type();
    if !super::is_quantized(default) {
        return Ok(default);
    }
    let name = t.name.as_str();
    let nx = t.row_len();
    let mut new_type = default;
    let layer = |counter: usize| -> Result<(usize, usize), String> {
        if facts.n_expert > 1 {
            let i = layer_of(name)
                .ok_or_else(|| format!("cannot tell the layer of tensor '{name}'"))?;
            if i >= facts.n_layer {
                return Err(format!(
                    "tensor '{name}' names layer {i}, the model has {}",
                    facts.n_layer
                ));
            }
            Ok((i, facts.n_layer))
        } else {
            Ok((counter, facts.n_layer))
        }
    };
    let k_mixes = [
        F::Q2K,
        F::Q3KS,
        F::Q3KM,
        F::IQ4NL,
        F::Q4KS,
        F::Q4KM,
        F::IQ4XS,
    ];
    if name == "output.weight" || (!facts.has_output && name == "token_embd.weight") {
        if facts.is_falcon() || !nx.is_multiple_of(new_type.block_len() as u64) {
            new_type = G::Q8_0;
        } else if new_type != G::Q8_0 {
            new_type = G::Q6_K;
        }
    } else if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
        // Only the IQ1/IQ2/IQ3 and ternary types change it; owl offers none of them.
    } else if name.contains("attn_v.weight") {
        let i = st.i_attention_wv;
        match ftype {
            F::Q2K => new_type = if facts.n_gqa() >= 4 { G::Q4_K } else { G::Q3_K },
            F::Q2KS if facts.n_gqa() >= 4 => new_type = G::Q4_K,
            F::Q3KM => new_type = if i < 2 { G::Q5_K } else { G::Q4_K },
            F::Q3KL => new_type = G::Q5_K,
            F::IQ4NL | F::IQ4XS if facts.n_gqa() >= 4 => new_type = G::Q5_K,
            F::Q4KM | F::Q5KM if use_more_bits(i, facts.n_attention_wv) => new_type = G::Q6_K,
            F::Q4KS if i < 4 => new_type = G::Q5_K,
            _ => {}
        }
        if facts.is_70b() && matches!(new_type, G::Q3_K | G::Q4_K) {
            new_type = G::Q5_K;
        }
        if facts.n_expert == 8 {
            new_type = G::Q8_0;
        }
        st.i_attention_wv += 1;
    } else if name.contains("attn_k.weight") {
        if facts.n_expert == 8 {
            new_type = G::Q8_0;
        }
    } else if name.contains("ffn_down") {
        let (i, n) = layer(st.i_ffn_down)?;
        match ftype {
            F::Q2K => new_type = G::Q3_K,
            F::Q2KS if i < n / 8 => new_type = G::Q4_K,
            F::Q3KM => {
                new_type = if i < n / 16 {
                    G::Q5_K
                } else if !facts.is_falcon() || use_more_bits(i, n) {
                    G::Q4_K
                } else {
                    G::Q3_K
                }
            }
            F::Q3KL => new_type = if facts.is_falcon() { G::Q4_K } else { G::Q5_K },
            F::Q4KM => {
                if facts.is_falcon() {
                    new_type = if i < n / 16 {
                        G::Q6_K
                    } else if use_more_bits(i, n) {
                        G::Q5_K
                    } else {
                        G::Q4_K
                    };
                } else if use_more_bits(i, n) {
                    new_type = G::Q6_K;
                }
            }
            F::IQ4NL | F::IQ4XS if i < n / 8 => new_type = G::Q5_K,
            F::Q5KM if use_more_bits(i, n) => new_type = G::Q6_K,
            F::Q4KS if !facts.is_falcon() && i < n / 8 => new_type = G::Q5_K,
            _ => {}
        }
        st.i_ffn_down += 1;
    } else if name.contains("attn_output.weight") {
        if !facts.is_falcon() {
            if facts.n_expert == 8 {
                if k_mixes.contains(&ftype) {
                    new_type = G::Q5_K;
                }
            } else {
                match ftype {
                    F::Q2K => new_type = G::Q3_K,
                    F::Q3KM => new_type = G::Q4_K,
                    F::Q3KL => new_type = G::Q5_K,
                    _ => {}
                }
            }
        } else if ftype == F::Q3KL {
            new_type = G::Q4_K;
        }
    } else if name.contains("attn_qkv.weight") {
        match ftype {
            F::Q3KM | F::Q3KL => new_type = G::Q4_K,
            F::Q4KM => new_type = G::Q5_K,
            F::Q5KM => new_type = G::Q6_K,
            _ => {}
        }
    }

    if !nx.is_multiple_of(new_type.block_len() as u64) {
        new_type = match new_type {
            G::Q2_K | G::Q3_K | G::IQ4_XS => G::IQ4_NL,
            G::Q4_K => G::Q5_0,
            G::Q5_K => G::Q5_1,
            G::Q6_K => G::Q8_0,
            other => {
                return Err(format!(
                    "tensor '{name}': rows of {nx} do not divide into {other} blocks of {}",
                    other.block_len()
                ))
            }
        };
        if !nx.is_multiple_of(new_type.block_len() as u64) {
            new_type = G::F16;
        }
        st.n_fallback += 1;
    }
    Ok(new_type)
}
