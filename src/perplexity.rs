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
use owl_engine::perplexity::kld::BaseWriter;
use owl_engine::perplexity::{self, PplAccumulator, PplOptions};
use owl_engine::registry;
use owl_engine::tokenizer::Tokenizer;
use owl_engine::EngineError;

#[derive(clap::Args, Debug)]
pub struct PerplexityArgs {
    /// Model name from models.lock or a path to a .gguf file.
    #[arg(long, short)]
    pub model: String,
    /// The text to measure on (UTF-8; one trailing newline is dropped, as llama.cpp's -f does).
    /// Not needed with --kl-divergence: the base file holds the tokens.
    #[arg(long, short = 'f', required_unless_present = "kl_divergence")]
    pub file: Option<PathBuf>,
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
    /// Save the model's log-probabilities of every scored token to FILE (llama-perplexity's
    /// format); with --kl-divergence, the file to compare against.
    #[arg(long, value_name = "FILE")]
    pub kl_divergence_base: Option<PathBuf>,
    /// Compare this model against the --kl-divergence-base file of another quant of it:
    /// KL divergence, Δp and top-token agreement, as llama-perplexity reports them.
    #[arg(long, requires = "kl_divergence_base")]
    pub kl_divergence: bool,
}

pub fn cmd_perplexity(a: PerplexityArgs) -> Result<ExitCode> {
    if a.kl_divergence {
        return crate::kld::cmd_kl_divergence(a);
    }
    let file = a.file.as_deref().context("give the text with -f FILE")?;
    let bytes =
        std::fs::read(file).with_context(|| format!("cannot read the text {}", file.display()))?;
    let Ok(mut text) = String::from_utf8(bytes) else {
        bail!("{} is not UTF-8 text", file.display());
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
    // The base file is written beside its name and renamed when complete, so a cut
    // run leaves nothing under FILE.
    let partial = a.kl_divergence_base.as_ref().map(|p| {
        let mut name = p.file_name().unwrap_or_default().to_os_string();
        name.push(".partial");
        p.with_file_name(name)
    });
    let mut base = match &partial {
        Some(p) => {
            let f = std::fs::File::create(p)
                .with_context(|| format!("cannot create {}", p.display()))?;
            let w = BaseWriter::new(
                std::io::BufWriter::new(f),
                opts.n_ctx,
                cfg.n_vocab,
                n_chunk,
                &tokens,
            );
            Some(w.with_context(|| format!("cannot write {}", p.display()))?)
        }
        None => None,
    };
    let (n_vocab, pool) = (cfg.n_vocab, model.thread_pool());
    let mut out = std::io::stdout().lock();
    let mut acc = PplAccumulator::default();
    let mut write_err = None;
    let run = perplexity::eval_chunks(&mut model, &tokens, bos, &opts, |c| {
        let ppl = acc.add(&c, n_vocab, pool.as_deref());
        if let Some(w) = base.as_mut() {
            if let Err(e) = w.chunk(&c, pool.as_deref()) {
                write_err = Some(e);
                return Err(EngineError::Config(
                    "cannot write the KL-divergence base file".into(),
                ));
            }
        }
        // Printed as it comes, like llama-perplexity's `[1]12.3456,[2]...`.
        let _ = write!(out, "[{}]{ppl:.4},", c.index + 1);
        let _ = out.flush();
        Ok(())
    })
    .map_err(|e| match write_err.take() {
        Some(w) => anyhow::anyhow!(
            "cannot write {}: {w}",
            partial.as_deref().unwrap_or(file).display()
        ),
        None => e.into(),
    })
    .and_then(|()| match (base, &partial, &a.kl_divergence_base) {
        (Some(w), Some(tmp), Some(p)) => {
            w.finish()
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            std::fs::rename(tmp, p)
                .with_context(|| format!("cannot rename {} to {}", tmp.display(), p.display()))
        }
        _ => Ok(()),
    });
    if let Err(e) = run {
        if let Some(tmp) = &partial {
            let _ = std::fs::remove_file(tmp);
        }
        return Err(e);
    }
    let r = acc.finish();
    writeln!(out)?;
    match r.err {
        Some(e) => writeln!(out, "Final estimate: PPL = {:.4} +/- {:.5}", r.ppl, e)?,
        None => bail!("the standard deviation of log(prob) came out negative (PPL = {:.4}); the model's logits are broken", r.ppl),
    }
    Ok(ExitCode::SUCCESS)
}
