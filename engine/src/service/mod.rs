//! The Engine service: a thread that owns the model and the scheduler, fed by a
//! bounded request queue. Each request carries its own response channel and a
//! cancellation token, so a closed client frees its KV pages at once.
//!
//! Front ends (`owl run`, the TUI, the server, `owl bench`) use only this API.

mod busy;
mod embed;
mod masks;
mod types;
mod worker;

pub use embed::{EmbedInput, Embedder, EmbedderInfo, Embeddings};
pub use types::*;

use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::chat::ChatTemplate;
use crate::constrain::{ConstraintEnv, SeqConstraint};
use crate::tokenizer::Tokenizer;
use crate::EngineError;

use worker::{Command, Shared};

/// A running engine. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct Engine {
    tx: mpsc::SyncSender<Command>,
    info: ModelInfo,
    tokenizer: Arc<Tokenizer>,
    template: Arc<ChatTemplate>,
    shared: Arc<Shared>,
    queue_capacity: usize,
    /// The vocabulary trie for constrained decoding, built on the first constrained request.
    constrain_env: std::sync::OnceLock<Result<Arc<ConstraintEnv>, String>>,
    thread: Option<JoinHandle<()>>,
}

impl Engine {
    /// Resolves (and if allowed pulls) the model, loads it onto the device and
    /// starts the engine thread. Blocks until the model is loaded.
    pub fn start(cfg: EngineConfig) -> Result<Engine, EngineError> {
        worker::start(cfg)
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Tokenizes like llama.cpp (`add_special`: BOS/EOS per metadata; `parse_special`: control tokens in text).
    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<u32>, EngineError> {
        Ok(self.tokenizer.encode(text, add_special, parse_special)?)
    }

    pub fn detokenize(&self, ids: &[u32]) -> String {
        self.tokenizer.decode(ids)
    }

    /// Renders a conversation with the model's chat template.
    pub fn apply_chat_template(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String, EngineError> {
        Ok(self.template.render(messages, add_generation_prompt)?)
    }

    /// Renders OpenAI-shaped JSON messages with `tools` (see [`ChatTemplate::render_with_tools`]).
    pub fn apply_chat_template_tools(&self, messages: &[serde_json::Value], tools: &[serde_json::Value]) -> Result<String, EngineError> {
        Ok(self.template.render_with_tools(messages, tools, true)?)
    }

    /// The chat template's source (the GGUF's, a file's, or the built-in fallback).
    pub fn chat_template(&self) -> &str {
        self.template.source()
    }

    /// How the model's template writes tool calls.
    pub fn tool_family(&self) -> crate::tools::Family {
        self.template.tool_family()
    }

    /// Tokens of a prompt as a request would see them.
    pub fn prompt_tokens(&self, prompt: &Prompt) -> Result<Vec<u32>, EngineError> {
        match prompt {
            Prompt::Text(t) => self.tokenize(t, true, true),
            Prompt::Tokens(t) => Ok(t.clone()),
            Prompt::Chat(m) => {
                let text = self.apply_chat_template(m, true)?;
                self.tokenize(&text, true, true)
            }
        }
    }

    /// Queues a request. Refuses at once (nothing queued) when the queue is
    /// full, the prompt is empty, or it cannot fit the context.
    pub fn submit(&self, req: Request) -> Result<RequestHandle, SubmitError> {
        let tokens = self.prompt_tokens(&req.prompt).map_err(|e| SubmitError::Invalid(e.to_string()))?;
        if tokens.is_empty() {
            return Err(SubmitError::EmptyPrompt);
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.info.n_vocab) {
            return Err(SubmitError::Invalid(format!("token id {bad} is outside the vocabulary of {}", self.info.n_vocab)));
        }
        if let Some(&(bad, _)) = req.sampling.logit_bias.iter().find(|&&(t, _)| t as usize >= self.info.n_vocab) {
            return Err(SubmitError::Invalid(format!(
                "`logit_bias` names token id {bad}, outside the vocabulary of {} tokens",
                self.info.n_vocab
            )));
        }
        // One token of room is needed to generate anything.
        let limit = self.info.n_ctx.min(self.shared.max_seq_len);
        if tokens.len() >= limit {
            return Err(SubmitError::PromptTooLong { n_prompt: tokens.len(), n_ctx: limit, over: tokens.len() + 1 - limit });
        }
        // The grammar compiles here, on the caller's thread, before any token is generated.
        let constraint = match &req.constraint {
            Some(c) => Some(self.compile(c)?),
            None => None,
        };
        let (etx, erx) = tokio::sync::mpsc::channel(EVENT_BACKLOG);
        let cancel = CancelToken::default();
        let n = tokens.len();
        let cmd = Command::Generate(Box::new(worker::Job::new(req, tokens, constraint, etx, cancel.clone())));
        match self.tx.try_send(cmd) {
            Ok(()) => {
                self.shared.queued.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(RequestHandle { events: erx, cancel, prompt_tokens: n })
            }
            Err(mpsc::TrySendError::Full(_)) => Err(SubmitError::QueueFull { capacity: self.queue_capacity }),
            Err(mpsc::TrySendError::Disconnected(_)) => Err(SubmitError::Stopped),
        }
    }

    /// A matcher for one sequence; Err carries llguidance's message.
    pub fn compile(&self, c: &crate::constrain::Constraint) -> Result<SeqConstraint, SubmitError> {
        let env = self.constrain_env.get_or_init(|| ConstraintEnv::new(&self.tokenizer).map(Arc::new));
        let env = env.as_ref().map_err(|e| SubmitError::Constraint(e.clone()))?;
        env.matcher(c).map_err(SubmitError::Constraint)
    }

    /// Whether grammar masks are computed on a helper thread while the forward pass runs
    /// (the default; `OWL_MASK_OVERLAP=0` starts an engine with it off), or after it.
    /// The tokens are the same either way; only the timing differs.
    pub fn set_mask_overlap(&self, on: bool) {
        self.shared.mask_overlap.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many grammar masks were computed during a forward pass so far.
    pub fn masks_overlapped(&self) -> u64 {
        self.shared.masks_overlapped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counters for /metrics and /stats.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared.snapshot()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
