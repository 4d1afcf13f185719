//! `owl synth`: a seeded random-weight model of an architecture, for tests.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use owl_engine::synth::{self, Experts, Shape, SynthSpec, WeightTypes};

#[derive(clap::Args)]
pub struct SynthArgs {
    /// Architecture (general.architecture): llama, phi3, qwen2moe or qwen3moe.
    #[arg(long)]
    arch: String,
    /// Model size: tiny (2 layers, n_embd 256) or 8b (Llama 3 8B's shape, about 4.2 GB in Q4_K_M).
    #[arg(long, default_value = "tiny")]
    shape: String,
    /// Weight type: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1 or Q8_0 (norms stay F32), or a
    /// llama-quantize mix such as Q4_K_M (its per-tensor types).
    #[arg(long = "type", default_value = "Q8_0")]
    ty: String,
    /// Random seed: the same seed gives the same file, byte for byte.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Routed experts per layer (llama: Mixtral-style; qwen2moe and qwen3moe need them).
    #[arg(long, default_value_t = 0)]
    experts: usize,
    /// Experts each token is routed to.
    #[arg(long, default_value_t = 0)]
    experts_used: usize,
    /// A Jinja chat template file to write as `tokenizer.chat_template` (e.g. one that renders tools).
    #[arg(long = "chat-template", value_name = "FILE")]
    chat_template: Option<PathBuf>,
    /// Output .gguf path.
    out: PathBuf,
}

pub fn cmd_synth(a: SynthArgs) -> Result<ExitCode> {
    let ty = WeightTypes::parse(&a.ty)?;
    let chat_template = match &a.chat_template {
        Some(p) => Some(std::fs::read_to_string(p).with_context(|| format!("cannot read chat template {}", p.display()))?),
        None => None,
    };
    let spec = SynthSpec { arch: a.arch, shape: Shape::named(&a.shape)?, shape_name: a.shape.clone(), ty, seed: a.seed, experts: Experts { n_expert: a.experts, n_expert_used: a.experts_used }, chat_template };
    // Streamed: an 8b-shaped file never sits whole in memory.
    let n = synth::synth_to_file(&spec, &a.out).with_context(|| format!("writing {}", a.out.display()))?;
    println!("wrote {} ({} {} {}, seed {}, {n} bytes)", a.out.display(), spec.arch, a.shape, ty.name(), spec.seed);
    Ok(ExitCode::SUCCESS)
}
