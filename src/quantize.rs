//! `owl quantize IN.gguf OUT.gguf TYPE`: llama-quantize's file types and recipe.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use owl_engine::gguf::GgmlType;
use owl_engine::gguf::Gguf;
use owl_engine::quantize::{self, PlanOptions, Target};
use owl_engine::registry::{self, format_size};

#[derive(clap::Args)]
pub struct QuantizeArgs {
    /// Input: a .gguf path or a pulled models.lock name (F32, F16 or BF16 weights;
    /// already quantized ones need --allow-requantize).
    input: String,
    /// Output .gguf (written to a temporary file beside it, then renamed).
    output: PathBuf,
    /// File type: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q2_K_S, Q3_K_S, Q3_K_M, Q3_K_L,
    /// Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K, F16, BF16, F32 or COPY.
    #[arg(value_name = "TYPE")]
    ty: String,
    /// Print the recipe (tensor, shape, from, to, bytes) and write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Dequantize already quantized tensors and quantize them again (loses quality).
    #[arg(long)]
    allow_requantize: bool,
    /// Write parts of at most this much tensor data (500M, 2G), named as
    /// llama-gguf-split names them: OUT-00001-of-0000N.gguf.
    #[arg(long, value_name = "SIZE")]
    split_max_size: Option<String>,
    /// Every quantized tensor in TYPE's default type: no mixes, no output or
    /// embedding rule, no fallbacks.
    #[arg(long)]
    pure: bool,
    /// Leave output.weight as it is.
    #[arg(long)]
    leave_output_tensor: bool,
    /// Type for output.weight (a GGML type name: Q8_0, Q6_K, F16, ...).
    #[arg(long, value_name = "GGML_TYPE")]
    output_tensor_type: Option<String>,
    /// Type for token_embd.weight.
    #[arg(long, value_name = "GGML_TYPE")]
    token_embedding_type: Option<String>,
    /// CPU threads quantizing rows (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

pub fn cmd_quantize(a: QuantizeArgs) -> Result<ExitCode> {
    let target = Target::parse(&a.ty)?;
    let split_max = a
        .split_max_size
        .as_deref()
        .map(quantize::parse_split_size)
        .transpose()?;
    let input = registry::resolve_model(&a.input, false)?;
    let g = Gguf::open(&input)?;
    let ggml_type = |flag: &str, v: &Option<String>| -> Result<Option<GgmlType>> {
        v.as_deref()
            .map(|name| {
                GgmlType::ALL
                    .iter()
                    .copied()
                    .find(|t| t.name().eq_ignore_ascii_case(name) && t.can_quantize())
                    .with_context(|| {
                        let names: Vec<&str> = GgmlType::ALL
                            .iter()
                            .filter(|t| t.can_quantize())
                            .map(|t| t.name())
                            .collect();
                        format!(
                            "{flag} `{name}`: not a GGML type owl writes; use one of {}",
                            names.join(", ")
                        )
                    })
            })
            .transpose()
    };
    let opts = PlanOptions {
        allow_requantize: a.allow_requantize,
        pure: a.pure,
        leave_output: a.leave_output_tensor,
        output_type: ggml_type("--output-tensor-type", &a.output_tensor_type)?,
        token_embd_type: ggml_type("--token-embedding-type", &a.token_embedding_type)?,
    };
    let plan = quantize::plan_with(&g, target, &opts)
        .with_context(|| format!("cannot quantize {}", input.display()))?;
    let out = std::io::stdout();
    let mut out = out.lock();
    if a.dry_run {
        writeln!(
            out,
            "{:<32} {:<20} {:<7} {:<7} {:>12}",
            "TENSOR", "SHAPE", "FROM", "TO", "BYTES"
        )?;
        for e in &plan.tensors {
            let shape = e
                .dims
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(" x ");
            writeln!(
                out,
                "{:<32} {:<20} {:<7} {:<7} {:>12}",
                e.name,
                shape,
                e.from.name(),
                e.to.name(),
                e.bytes
            )?;
        }
        writeln!(
            out,
            "{} tensors: {} -> {} (general.file_type = {})",
            plan.tensors.len(),
            format_size(plan.bytes_in(&g)),
            format_size(plan.bytes_out()),
            plan.file_type
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    if !plan.requantized.is_empty() {
        eprintln!(
            "warning: requantizing {} already quantized tensors (first: {}); the result is worse than quantizing the original weights",
            plan.requantized.len(),
            plan.requantized[0]
        );
    }
    let bar = ProgressBar::with_draw_target(Some(plan.bytes_in(&g)), ProgressDrawTarget::stderr());
    if std::io::stderr().is_terminal() {
        bar.set_style(
            ProgressStyle::with_template("quantizing {bar:40} {bytes}/{total_bytes} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads.unwrap_or(0))
        .build()
        .context("cannot start the quantizing threads")?;
    let (paths, n) = pool
        .install(|| quantize::write(&g, &plan, &a.output, split_max, |b| bar.inc(b)))
        .with_context(|| {
            format!(
                "cannot quantize {} to {}",
                input.display(),
                a.output.display()
            )
        })?;
    bar.finish_and_clear();
    writeln!(
        out,
        "wrote {} ({}, {} tensors, {} -> {})",
        paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        a.ty.to_uppercase(),
        plan.tensors.len(),
        format_size(plan.bytes_in(&g)),
        format_size(n)
    )?;
    Ok(ExitCode::SUCCESS)
}
