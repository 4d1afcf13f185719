//! The request/response types of the Engine service: what every front end
//! (`owl run`, the TUI, the HTTP server, `owl bench`) sends and receives.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use crate::chat::ChatMessage;

/// How to start an engine.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// A models.lock name or a path to a `.gguf` file.
    pub model: String,
    /// `cpu` (others answer "not available" until their backends land).
    pub device: String,
    /// Total KV budget in tokens, shared by all sequences (pages), never split per slot.
    pub n_ctx: usize,
    /// Most sequences decoded at once.
    pub n_parallel: usize,
    /// Worker threads for the CPU backend (None: all cores).
    pub threads: Option<usize>,
    /// A Jinja chat template that overrides the model's.
    pub chat_template: Option<String>,
    /// Requests waiting beyond the running ones before `submit` answers `QueueFull`.
    pub queue_capacity: usize,
    /// Pull a models.lock entry when it is not in the cache yet.
    pub pull_if_missing: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            model: crate::registry::default_model().to_string(),
            device: "cpu".into(),
            n_ctx: 4096,
            n_parallel: 4,
            threads: None,
            chat_template: None,
            queue_capacity: 64,
            pull_if_missing: true,
        }
    }
}

/// What the loaded model is.
#[derive(Clone, Debug, Serialize)]
pub struct ModelInfo {
    /// models.lock name if it came from there, else the file stem.
    pub name: String,
    pub path: PathBuf,
    pub arch: String,
    /// Most common weight type, e.g. "Q4_1".
    pub quant: String,
    pub n_params: u64,
    pub file_size: u64,
    pub n_vocab: usize,
    /// Context the model was trained for.
    pub n_ctx_train: usize,
    /// KV budget of this engine (EngineConfig::n_ctx).
    pub n_ctx: usize,
    pub n_parallel: usize,
    pub device: String,
    pub threads: usize,
}

/// Sampling settings of one request. Temperature 0 is greedy.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct SamplingParams {
    pub temperature: f32,
    /// 0 disables.
    pub top_k: usize,
    /// 1.0 disables.
    pub top_p: f32,
    /// 0.0 disables.
    pub min_p: f32,
    /// 1.0 disables.
    pub repeat_penalty: f32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// Window of recent tokens the penalties look at.
    pub penalty_last_n: usize,
    /// Same seed, same request: same output. None: a random seed.
    pub seed: Option<u64>,
    /// Added to a token's logit before sampling (OpenAI's `logit_bias`); -100 bans
    /// a token, +100 all but forces it. Ids are checked against the vocabulary at submit.
    pub logit_bias: Vec<(u32, f32)>,
    /// Logprobs (when asked for) are those of the distribution the token was drawn from,
    /// after the sampler chain (llama-server's `post_sampling_probs`), not the model's.
    pub post_sampling_probs: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_last_n: 64,
            seed: None,
            logit_bias: Vec::new(),
            post_sampling_probs: false,
        }
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        SamplingParams { temperature: 0.0, ..Default::default() }
    }
}

/// The prompt of a request.
#[derive(Clone, Debug)]
pub enum Prompt {
    /// Tokenized as llama.cpp does: BOS per metadata, special tokens parsed.
    Text(String),
    /// Already tokenized.
    Tokens(Vec<u32>),
    /// Rendered with the model's chat template (generation prompt added).
    Chat(Vec<ChatMessage>),
}

/// One generation request.
#[derive(Clone, Debug)]
pub struct Request {
    pub prompt: Prompt,
    pub sampling: SamplingParams,
    /// None: until an end-of-generation token or the context is full.
    pub max_tokens: Option<usize>,
    /// Generation stops before any of these strings; they are not returned.
    pub stop: Vec<String>,
    /// Some(n): report the chosen token's logprob and the n most likely alternatives.
    pub logprobs: Option<usize>,
    /// Some(n): logprobs (when asked for) only for the first n generated tokens; the
    /// rest come without, at no cost (the router's confidence probe reads n tokens).
    pub logprobs_for: Option<usize>,
    /// Stop at the model's end-of-generation tokens (true for chat; `owl bench` turns it off).
    pub stop_at_eog: bool,
    /// Limits the output to a grammar (JSON Schema, regex, Lark); checked at submit.
    pub constraint: Option<crate::constrain::Constraint>,
}

impl Request {
    pub fn new(prompt: Prompt) -> Self {
        Request {
            prompt,
            sampling: SamplingParams::default(),
            max_tokens: None,
            stop: Vec::new(),
            logprobs: None,
            logprobs_for: None,
            stop_at_eog: true,
            constraint: None,
        }
    }
}

/// Why a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// max_tokens reached, or the KV budget ran out.
    Length,
    /// The client cancelled (or dropped its handle).
    Cancelled,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens whose KV was reused from the prefix cache.
    pub cached_tokens: usize,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Timings {
    /// From submit to the first generated token.
    pub ttft_ms: f64,
    pub prompt_ms: f64,
    pub gen_ms: f64,
    /// Prompt tokens evaluated (not cached) per second.
    pub prompt_tps: f64,
    /// Generated tokens per second after the first.
    pub gen_tps: f64,
    /// This request's share of the engine's busy time spent on its prompt, seconds:
    /// each step's wall time is split among its sequences by the tokens each processed.
    pub prefill_s: f64,
    /// Its share of busy time spent generating, seconds (same split).
    pub decode_s: f64,
    /// Time its grammar took, ms: token masks and advancing the matcher (0 unconstrained).
    pub constrain_ms: f64,
}

impl Timings {
    /// The request's whole share of the engine's busy time (prefill + decode), seconds:
    /// what its local cost is charged on. Idle time is never in it.
    pub fn busy_s(&self) -> f64 {
        self.prefill_s + self.decode_s
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TopLogprob {
    pub id: u32,
    pub text: String,
    pub logprob: f32,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TokenLogprob {
    pub logprob: f32,
    pub top: Vec<TopLogprob>,
}

/// What the engine sends back for a request, in order:
/// `Started`, zero or more `Token`, then exactly one `Done` or `Error`.
#[derive(Clone, Debug)]
pub enum Event {
    Started { prompt_tokens: usize, cached_tokens: usize },
    /// `text` is the newly completed UTF-8 text (may be empty while a
    /// multi-byte character or a possible stop string is held back).
    /// A final `Token` with `id == TEXT_ONLY` may carry text held back until the end.
    Token { id: u32, text: String, logprob: Option<TokenLogprob> },
    /// `stop_word`: the stop string that ended the generation (finish `Stop`), if one did.
    Done { finish_reason: FinishReason, usage: Usage, timings: Timings, stop_word: Option<String> },
    Error(String),
}

/// The `id` of a closing `Token` event that carries only held-back text, no new token.
pub const TEXT_ONLY: u32 = u32::MAX;

/// Events a request's channel holds before its reader is "far behind": the engine
/// never waits for a reader (that would stall every other sequence), so a request
/// whose reader lets this many pile up is cancelled, its last slot used for an
/// [`Event::Error`] that says why. The memory a stalled client holds is bounded by it.
pub const EVENT_BACKLOG: usize = 1024;

/// Shared flag that cancels a request; the engine frees its KV pages within a step.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed)
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The caller's side of a running request. Dropping it cancels the request.
#[derive(Debug)]
pub struct RequestHandle {
    pub events: tokio::sync::mpsc::Receiver<Event>,
    pub cancel: CancelToken,
    /// Prompt length in tokens (known at submit).
    pub prompt_tokens: usize,
}

impl RequestHandle {
    /// Blocking wait for the next event (not for use inside an async runtime).
    pub fn next_blocking(&mut self) -> Option<Event> {
        self.events.blocking_recv()
    }
}

impl Drop for RequestHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Why `submit` refused a request. Nothing was queued.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the request queue is full ({capacity} waiting); retry later")]
    QueueFull { capacity: usize },
    #[error("the prompt is {n_prompt} tokens, over the context of {n_ctx} by {over}; shorten it or raise --ctx")]
    PromptTooLong { n_prompt: usize, n_ctx: usize, over: usize },
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The constraint's grammar does not compile; the text is llguidance's message.
    #[error("invalid grammar or schema: {0}")]
    Constraint(String),
    #[error("the engine has stopped")]
    Stopped,
}

/// A point-in-time view of the engine's counters (for /metrics and /stats).
#[derive(Clone, Debug, Default, Serialize)]
pub struct MetricsSnapshot {
    pub requests_total: u64,
    pub requests_cancelled: u64,
    pub prompt_tokens_total: u64,
    /// Of those, tokens whose KV came from the prefix cache (not evaluated again).
    pub prompt_tokens_cached_total: u64,
    pub generated_tokens_total: u64,
    pub queue_depth: usize,
    pub active_sequences: usize,
    pub kv_pages_used: usize,
    /// Of those, pages only the prefix cache holds (given up when a sequence needs them).
    pub kv_pages_cache_only: usize,
    pub kv_pages_total: usize,
    pub kv_page_size: usize,
    /// Histogram of time to first token, seconds: (upper bound, cumulative count).
    pub ttft_buckets: Vec<(f64, u64)>,
    pub ttft_sum: f64,
    pub ttft_count: u64,
    /// Histogram of inter-token latency, seconds.
    pub itl_buckets: Vec<(f64, u64)>,
    pub itl_sum: f64,
    pub itl_count: u64,
    /// Wall time of forward steps, seconds: the sum of every request's prefill_s + decode_s.
    pub busy_seconds_total: f64,
    /// Time the engine waited with nothing to run, seconds (capacity not used; charged to no one).
    pub idle_seconds_total: f64,
}
