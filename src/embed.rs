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
    let ids = texts.iter().map(|t| tok.encode(t, true, false).with_context(|| format!("cannot tokenize {t:?}"))).collect::<Result<Vec<_>>>()?;
    for (i, t) in ids.iter().enumerate() {
        // The batch fails as one: name the input that cannot be embedded.
        if t.is_empty() || t.len() > enc.n_cells {
            anyhow::bail!("cannot embed {:?}: it is {} tokens; each input must be 1 to {} (--ctx)", texts[i], t.len(), enc.n_cells);
        }
    }
    let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    for v in enc.embed_many(&refs).context("cannot embed")? {
        serde_json::to_writer(&mut out, &v)?;
        writeln!(out)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
