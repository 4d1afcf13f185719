//! The chat's backend on the owl Engine service: `impl ChatBackend for ChatEngine`
//! (an engine and what prices its answers) and the [`Loader`] that pulls and starts engines.

use std::sync::Arc;

use owl_engine::registry::{self, PullOptions, Registry};
use owl_engine::service::{
    ChatMessage, Engine, EngineConfig, Event, FinishReason, Prompt, Request, SamplingParams,
    SubmitError,
};

use crate::app::{Finish, LastRun, ModelStatus, Refusal, Settings, Turn};
use crate::runtime::{answer_room, ChatBackend, Loader, Reply, ReplyStream};

/// How to start engines for `owl chat`.
#[derive(Clone, Debug)]
pub struct EngineLoader {
    pub device: String,
    /// KV budget in tokens.
    pub n_ctx: usize,
    pub threads: Option<usize>,
    /// Prices each answer and records it in the cost ledger (None: answers are not priced).
    pub charger: Option<Arc<owl_ledger::Charger>>,
}

/// An engine, and what prices its answers.
pub struct ChatEngine {
    pub engine: Engine,
    pub charger: Option<Arc<owl_ledger::Charger>>,
}

impl Loader for EngineLoader {
    fn prepare(&self, model: &str, progress: bool) -> Result<(), String> {
        ensure_pulled(model, progress)
    }

    fn load(&self, model: &str) -> Result<Box<dyn ChatBackend>, String> {
        let cfg = EngineConfig {
            model: model.to_string(),
            device: self.device.clone(),
            n_ctx: self.n_ctx,
            // One conversation: one sequence.
            n_parallel: 1,
            threads: self.threads,
            pull_if_missing: true,
            ..EngineConfig::default()
        };
        let engine = Engine::start(cfg).map_err(|e| e.to_string())?;
        Ok(Box::new(ChatEngine { engine, charger: self.charger.clone() }))
    }

    fn models(&self, current: Option<&str>) -> Result<String, String> {
        models_text(current)
    }
}

/// Pulls a models.lock entry that is not in the cache yet. With `progress` the
/// registry draws its bars on stderr (only before the full-screen chat starts).
fn ensure_pulled(model: &str, progress: bool) -> Result<(), String> {
    if std::path::Path::new(model).is_file() {
        return Ok(());
    }
    let reg = Registry::load().map_err(|e| e.to_string())?;
    // Unknown names fall through: Engine::start reports them with the known names.
    let Some(entry) = reg.lock().find(model) else {
        return Ok(());
    };
    if reg.is_pulled(entry) {
        return Ok(());
    }
    if progress {
        eprintln!("pulling {model} ({})…", registry::format_size(entry.size));
    }
    let opts = PullOptions {
        progress,
        ..PullOptions::default()
    };
    reg.pull(model, &opts)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The models of models.lock, for `/model` with no name.
pub fn models_text(current: Option<&str>) -> Result<String, String> {
    let reg = Registry::load().map_err(|e| format!("cannot read models.lock: {e}"))?;
    let mut s = String::from("Models (switch with /model NAME; a .gguf path works too):");
    for st in reg.list() {
        let mark = if Some(st.entry.name.as_str()) == current {
            "*"
        } else {
            " "
        };
        let pulled = if st.pulled {
            ""
        } else {
            " (not pulled yet: /model pulls it)"
        };
        s.push_str(&format!(
            "\n {mark} {} · {} · {} · {}{pulled}",
            st.entry.name,
            st.entry.arch,
            st.entry.quant,
            registry::format_size(st.entry.size)
        ));
    }
    Ok(s)
}

fn to_request(turns: &[Turn], s: &Settings) -> Request {
    let messages = turns
        .iter()
        .map(|t| ChatMessage::new(t.role.as_str(), t.content.clone()))
        .collect();
    let mut req = Request::new(Prompt::Chat(messages));
    req.sampling = SamplingParams {
        temperature: s.temperature,
        top_k: s.top_k,
        top_p: s.top_p,
        min_p: s.min_p,
        seed: s.seed,
        ..SamplingParams::default()
    };
    req.max_tokens = s.max_tokens;
    req
}

fn reply(ev: Event, model: &str, charger: Option<&owl_ledger::Charger>) -> Reply {
    match ev {
        Event::Started {
            prompt_tokens,
            cached_tokens,
        } => Reply::Started {
            prompt_tokens,
            cached_tokens,
        },
        Event::Token { text, .. } => Reply::Token(text),
        Event::Done {
            finish_reason,
            usage,
            timings,
            ..
        } => {
            let priced = charger.map(|c| {
                c.charge(
                    model,
                    "local",
                    &owl_ledger::Served {
                        prompt_tokens: usage.prompt_tokens as u64,
                        cached_tokens: usage.cached_tokens as u64,
                        completion_tokens: usage.completion_tokens as u64,
                        prefill_s: timings.prefill_s,
                        decode_s: timings.decode_s,
                    },
                )
            });
            Reply::Done {
            finish: match finish_reason {
                FinishReason::Stop => Finish::Stop,
                FinishReason::Length => Finish::Length,
                FinishReason::Cancelled => Finish::Cancelled,
            },
            run: LastRun {
                prompt_tokens: usage.prompt_tokens,
                cached_tokens: usage.cached_tokens,
                completion_tokens: usage.completion_tokens,
                prompt_tps: timings.prompt_tps,
                gen_tps: timings.gen_tps,
                cost_usd: priced.as_ref().map_or(0.0, |r| r.cost_usd),
                baseline_usd: priced.as_ref().map_or(0.0, |r| r.baseline_usd),
            },
        }
        }
        Event::Error(e) => Reply::Failed(e),
    }
}

impl ChatBackend for ChatEngine {
    fn status(&self) -> ModelStatus {
        let i = self.engine.info();
        ModelStatus {
            name: i.name.clone(),
            device: i.device.clone(),
            n_ctx: i.n_ctx,
            baseline: self.charger.as_ref().map_or(String::new(), |c| c.pricer.baseline_model.clone()),
        }
    }

    /// Checks that the conversation and room for an answer fit the context
    /// (the prompt as the engine will tokenize it), then submits it.
    fn submit(&self, turns: &[Turn], settings: &Settings) -> Result<ReplyStream, Refusal> {
        let req = to_request(turns, settings);
        let n_ctx = self.engine.info().n_ctx;
        let n_prompt = self
            .engine
            .prompt_tokens(&req.prompt)
            .map_err(|e| Refusal::Other(e.to_string()))?
            .len();
        let room = answer_room(settings, n_ctx);
        if n_prompt + room > n_ctx {
            return Err(Refusal::ContextFull {
                n_prompt,
                room,
                n_ctx,
            });
        }
        let mut handle = self.engine.submit(req).map_err(|e| match e {
            SubmitError::PromptTooLong {
                n_prompt, n_ctx, ..
            } => Refusal::ContextFull {
                n_prompt,
                room,
                n_ctx,
            },
            other => Refusal::Other(other.to_string()),
        })?;
        let token = handle.cancel.clone();
        let model = self.engine.info().name.clone();
        let charger = self.charger.clone();
        Ok(ReplyStream {
            next: Box::new(move || handle.next_blocking().map(|ev| reply(ev, &model, charger.as_deref()))),
            cancel: Arc::new(move || token.cancel()),
        })
    }

    fn stats(&self) -> String {
        let m = self.engine.metrics();
        let ttft = if m.ttft_count > 0 {
            format!("{:.0} ms", 1000.0 * m.ttft_sum / m.ttft_count as f64)
        } else {
            "–".into()
        };
        let itl = if m.itl_count > 0 {
            format!("{:.1} ms", 1000.0 * m.itl_sum / m.itl_count as f64)
        } else {
            "–".into()
        };
        let i = self.engine.info();
        format!(
            "Engine: {} {} on {} · {} requests ({} cancelled) · {} prompt and {} generated tokens · \
             mean time to first token {ttft}, between tokens {itl} · KV pages {}/{} of {} tokens",
            i.name,
            i.quant,
            i.device,
            m.requests_total,
            m.requests_cancelled,
            m.prompt_tokens_total,
            m.generated_tokens_total,
            m.kv_pages_used,
            m.kv_pages_total,
            m.kv_page_size
        )
    }
}
