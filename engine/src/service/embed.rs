//! The embedding service: an encoder model (nomic-bert) and its tokenizer,
//! shared by the front ends (`/v1/embeddings`). One input runs at a time; the
//! encoder's weights are mapped once.

use std::sync::Mutex;

use crate::gguf::Gguf;
use crate::models::bert::Encoder;
use crate::tokenizer::Tokenizer;
use crate::EngineError;

/// One input to embed: text (tokenized with the model's special tokens) or token ids.
#[derive(Clone, Debug, PartialEq)]
pub enum EmbedInput {
    Text(String),
    Tokens(Vec<u32>),
}

/// The vectors of a request, in input order, and the tokens they took.
#[derive(Clone, Debug, PartialEq)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    pub prompt_tokens: usize,
}

/// What the embedding model is.
#[derive(Clone, Debug)]
pub struct EmbedderInfo {
    pub name: String,
    pub n_embd: usize,
    /// The longest input in tokens.
    pub n_ctx: usize,
}

pub struct Embedder {
    info: EmbedderInfo,
    tokenizer: Tokenizer,
    encoder: Mutex<Encoder>,
}

impl Embedder {
    /// Resolves (pulling if allowed) and loads an encoder model on the CPU.
    pub fn start(model: &str, threads: Option<usize>, n_ctx: usize, pull_if_missing: bool) -> Result<Embedder, EngineError> {
        let path = crate::registry::resolve_model(model, pull_if_missing)?;
        let gguf = Gguf::open(&path)?;
        let tokenizer = Tokenizer::from_gguf(&gguf)?;
        let backend = owl_backends::open("cpu", threads)?;
        let encoder = Encoder::load(&gguf, backend, n_ctx)?;
        let info = EmbedderInfo { name: model.to_string(), n_embd: encoder.cfg.n_embd, n_ctx: encoder.n_cells };
        Ok(Embedder { info, tokenizer, encoder: Mutex::new(encoder) })
    }

    pub fn info(&self) -> &EmbedderInfo {
        &self.info
    }

    /// Embeds every input, or fails on the first bad one (nothing partial).
    pub fn embed(&self, inputs: &[EmbedInput]) -> Result<Embeddings, EngineError> {
        let mut token_lists = Vec::with_capacity(inputs.len());
        for (i, input) in inputs.iter().enumerate() {
            let ids = match input {
                EmbedInput::Text(t) => self.tokenizer.encode(t, true, false)?,
                EmbedInput::Tokens(ids) => ids.clone(),
            };
            if ids.is_empty() || ids.len() > self.info.n_ctx {
                return Err(EngineError::Config(format!("input {i} is {} tokens; each input must be 1 to {} tokens", ids.len(), self.info.n_ctx)));
            }
            token_lists.push(ids);
        }
        let mut enc = self.encoder.lock().map_err(|_| EngineError::Internal("the encoder failed in an earlier request".into()))?;
        let refs: Vec<&[u32]> = token_lists.iter().map(Vec::as_slice).collect();
        let vectors = enc.embed_many(&refs)?;
        Ok(Embeddings { vectors, prompt_tokens: token_lists.iter().map(Vec::len).sum() })
    }
}
