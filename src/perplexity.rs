//! `owl perplexity -m MODEL -f TEXT`: llama-perplexity's measure of how well a
//! model predicts a text (see owl_engine::perplexity), printed as it prints it:
//! the running estimate after each chunk, then `Final estimate: PPL = x +/- err`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use owl_engine::gguf::Gguf;
use owl_engine::models::transformer::Config;
use owl_engine::models::Model;
use owl_engine::perplexity::{self, PplOptions};
use owl_engine::registry;
use owl_engine::tokenizer::Tokenizer;

#[derive(clap::Args, Debug)]
pub struct PerplexityArgs {
    /// Model name from models.lock or a path to a .gguf file.
    #[arg(long, short)]
    pub model: String,
    /// The text to measure on (UTF-8; one trailing newline is dropped, as llama.cpp's -f does).
    #[arg(long, short = 'f')]
    pub file: PathBuf,
    /// Tokens per chunk; the second half of each chunk is scored.
    #[arg(long, short = 'c', default_value_t = 512)]
    pub ctx: usize,
    /// Tokens per forward step (batch / ctx chunks share a step when it is larger).
    #[arg(long, short = 'b', default_value_t = 2048)]
    pub batch: usize,
    /// Evaluate at most this many chunks (default: the whole text).
    #[arg(long)]
    pub chunks: Option<usize>,
    /// CPU threads (default: all cores).
    #[arg(long, short)]
    pub threads: Option<usize>,
    /// Compute device: cpu, wgpu or wgpu:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn cmd_perplexity(a: PerplexityArgs) -> Result<ExitCode> {
    let bytes = std::fs::read(&a.file)
        .with_context(|| format!("cannot read the text {}", a.file.display()))?;
    let Ok(mut text) = String::from_utf8(bytes) else {
        bail!("{} is not UTF-8 text", a.file.display());
    };
    if text.ends_with('\n') {
        text.pop();
    }
    let path = registry::resolve_model(&a.model, false)?;
    let gguf = Gguf::open(&path).with_context(|| format!("cannot open {}", a.model))?;
    let tok = Tokenizer::from_gguf(&gguf)
        .with_context(|| format!("cannot build the tokenizer of {}", a.model))?;
    let cfg = Config::from_gguf(&gguf).with_context(|| format!("cannot load {}", a.model))?;
    let opts = PplOptions {
        n_ctx: a.ctx,
        n_batch: a.batch,
        n_chunks: a.chunks,
    };
    let tokens = tok
        .encode(&text, true, false)
        .context("cannot tokenize the text")?;
    let n_chunk = opts.check(tokens.len(), cfg.n_ctx_train)?;
    let backend = owl_backends::open(&a.device, a.threads)?;
    let mut model = Model::load(&gguf, backend, opts.n_cells())
        .with_context(|| format!("cannot load {}", a.model))?;
    eprintln!(
        "perplexity: {} tokens; {n_chunk} chunks of {}, batch {}, {} chunk(s) a step, {}",
        tokens.len(),
        opts.n_ctx,
        opts.step(),
        opts.n_seq(),
        model.backend_name()
    );
    let bos = if tok.add_bos() { tok.bos() } else { None };
    let mut out = std::io::stdout().lock();
    let r = perplexity::perplexity(&mut model, &tokens, bos, &opts, |k, ppl| {
        // Printed as it comes, like llama-perplexity's `[1]12.3456,[2]...`.
        let _ = write!(out, "[{k}]{ppl:.4},");
        let _ = out.flush();
    })?;
    writeln!(out)?;
    match r.err {
        Some(e) => writeln!(out, "Final estimate: PPL = {:.4} +/- {:.5}", r.ppl, e)?,
        None => bail!("the standard deviation of log(prob) came out negative (PPL = {:.4}); the model's logits are broken", r.ppl),
    }
    Ok(ExitCode::SUCCESS)
}
