//! `owl embed`: embeddings of texts from an encoder model (nomic-embed-text),
//! one JSON array per input on stdout, L2-normalised as llama-embedding gives them.

use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::{Context, Result};
use owl_engine::gguf::Gguf;
use owl_engine::models::bert::Encoder;
use owl_engine::registry;
use owl_engine::tokenizer::Tokenizer;

/// The embedding model `owl embed` uses when none is named.
pub const DEFAULT_EMBED_MODEL: &str = "nomic-embed-text-v1.5";

#[derive(clap::Args)]
pub struct EmbedArgs {
    /// Embedding model: a models.lock name or a .gguf path (pulled on first use).
    #[arg(long, short, default_value = DEFAULT_EMBED_MODEL)]
    model: String,
    /// CPU worker threads (default: all cores).
    #[arg(long, short)]
    threads: Option<usize>,
    /// Longest input in tokens.
    #[arg(long, default_value_t = 2048)]
    ctx: usize,
    /// The texts, one embedding each; `-` reads one text a line from stdin.
    #[arg(required = true, allow_hyphen_values = true)]
    texts: Vec<String>,
}

pub fn cmd_embed(a: EmbedArgs) -> Result<ExitCode> {
    let texts: Vec<String> = if a.texts == ["-"] {
        io::stdin().lines().collect::<io::Result<_>>().context("cannot read the texts from stdin")?
    } else {
        a.texts
    };
    let path = registry::resolve_model(&a.model, true)?;
    let gguf = Gguf::open(&path).with_context(|| format!("cannot open {}", a.model))?;
    let tok = Tokenizer::from_gguf(&gguf).with_context(|| format!("cannot build the tokenizer of {}", a.model))?;
    let backend = owl_backends::open("cpu", a.threads)?;
    let mut enc = Encoder::load(&gguf, backend, a.ctx).with_context(|| format!("cannot load {} as an embedding model", a.model))?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    for text in &texts {
        let ids = tok.encode(text, true, false).context("cannot tokenize")?;
        let v = enc.embed(&ids).with_context(|| format!("cannot embed {text:?}"))?;
        serde_json::to_writer(&mut out, &v)?;
        writeln!(out)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
