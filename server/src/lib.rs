//! owl-server: the OpenAI-compatible HTTP API over the owl Engine service.
//!
//! This crate holds the OpenAI types and handlers and nothing of the model:
//! everything model-related goes through [`LlmService`], which the engine's
//! `Engine` implements (tests use a fake).
//!
//! Endpoints: `POST /v1/chat/completions`, `POST /v1/completions`,
//! `POST /v1/embeddings` (with `--embedding-model`), `GET /v1/models`, `GET /health` (503 while loading or draining), `GET /metrics`
//! (Prometheus), and llama-server's `POST /tokenize`, `POST /detokenize`,
//! `POST /apply-template`; the cost of what was served: `GET /v1/owl/cost` and the
//! page `GET /dashboard` that draws it. The same path also answers Anthropic's
//! Messages API (`POST /v1/messages`, `/v1/messages/count_tokens`) and Ollama's
//! (`/api/chat`, `/api/generate`, `/api/embed`, `/api/tags`, `/api/show`, `/api/ps`,
//! `/api/version`): see compat/.

mod app;
mod compat;
mod conn;
pub mod cost;
mod dashboard;
mod deadline;
mod drain;
mod embeddings;
mod error;
mod format;
mod generate;
mod metrics;
mod openai;
pub mod route;
mod service;
mod tool_stream;
mod tools;

use std::future::IntoFuture;
use std::sync::Arc;

use owl_engine::service::{Engine, EngineConfig};

pub use app::{router, AppState, KnownModel, ServerOptions, DEFAULT_MAX_BODY};
pub use error::ApiError;
pub use service::{LlmService, ServiceError};

/// Parses and validates a `/v1/chat/completions` (`chat`) or `/v1/completions` body
/// as their handlers do before anything reaches the engine: JSON, every field,
/// messages, tools and output formats. The `request` fuzz target drives it.
pub fn parse_request(body: &[u8], chat: bool) -> Result<(), ApiError> {
    check_request(&openai::parse_json(body)?, chat)
}

fn check_request(v: &serde_json::Value, chat: bool) -> Result<(), ApiError> {
    let gen = openai::parse_body::<openai::GenerationParams>(v)?.validate()?;
    if chat {
        let (messages, _) = openai::parse_body::<openai::ChatParams>(v)?.validate()?;
        if gen.tools.is_some() {
            let _ = tools::messages(&v["messages"], &messages);
        }
    } else {
        openai::parse_body::<openai::CompletionParams>(v)?.validate()?;
    }
    Ok(())
}

/// The other APIs whose bodies [`parse_translated`] turns into OpenAI chat bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompatApi {
    /// Anthropic's `POST /v1/messages`.
    AnthropicMessages,
    /// Ollama's `POST /api/chat`.
    OllamaChat,
    /// OpenAI's `POST /v1/responses`.
    Responses,
}

/// Translates an Anthropic Messages, Ollama chat or Responses body into the OpenAI
/// chat body its handler answers through (compat/), then checks that body as the chat
/// handler does. The `compat` fuzz target drives it.
pub fn parse_translated(api: CompatApi, body: &[u8]) -> Result<serde_json::Value, ApiError> {
    let v = openai::parse_json(body)?;
    let chat = match api {
        CompatApi::AnthropicMessages => compat::anthropic::to_openai(&v, true)?,
        CompatApi::OllamaChat => serde_json::Value::Object(compat::ollama::chat_body(&v)?.0),
        CompatApi::Responses => compat::responses::to_chat(&v)?,
    };
    check_request(&chat, true)?;
    Ok(chat)
}

/// The output constraint (JSON Schema, regex, Lark, GBNF) a chat or completions body
/// asks for, built as the handlers build it; the engine compiles it at submit. The
/// `grammar` fuzz target compiles what this returns.
pub fn request_constraint(body: &[u8]) -> Result<Option<owl_engine::constrain::Constraint>, ApiError> {
    let v = openai::parse_json(body)?;
    Ok(openai::parse_body::<openai::GenerationParams>(&v)?.validate()?.constraint)
}

/// Everything `owl serve` needs.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub engine: EngineConfig,
    pub host: String,
    /// 0 picks a free port (printed in the listening line).
    pub port: u16,
    pub options: ServerOptions,
    /// An encoder model for `/v1/embeddings` (a models.lock name or a path), loaded beside the chat model.
    pub embedding_model: Option<String>,
    /// On SIGTERM or SIGINT, how long requests in flight may take to finish before the server exits.
    pub drain_seconds: u64,
    /// A socket write that makes no progress this long drops its connection (conn.rs); None: never.
    pub write_timeout: Option<std::time::Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot load model {model}: {message}")]
    Load { model: String, message: String },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs [`serve`] on its own tokio runtime until Ctrl-C or SIGTERM (then drains).
pub fn run_blocking(cfg: ServeConfig) -> Result<(), ServerError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        // The engine owns the compute threads; HTTP needs only a couple.
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(ServerError::Runtime)?;
    rt.block_on(serve(cfg))
}

/// SIGTERM and SIGINT, caught from the moment this is made (before the model
/// loads), so a signal at any time starts the drain instead of killing the process.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Signals {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        {
            async fn one(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                _ = one(&mut self.term) => {}
                _ = one(&mut self.int) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Binds, prints `owl: listening on http://ADDR (model NAME)` on stderr, then
/// loads the model in the background (/health answers 503 until it is ready)
/// and serves until a shutdown signal. A model that fails to load ends the server.
///
/// A shutdown signal starts the drain (drain.rs): the server keeps listening so
/// that new requests and /health get a 503, requests in flight finish, and it
/// returns once none is left or `drain_seconds` have passed (a second signal
/// ends the wait), cutting what still runs then.
pub async fn serve(cfg: ServeConfig) -> Result<(), ServerError> {
    let mut signals = Signals::new();
    let host = if cfg.host.contains(':') && !cfg.host.starts_with('[') {
        format!("[{}]", cfg.host)
    } else {
        cfg.host.clone()
    };
    let addr = format!("{host}:{}", cfg.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: addr.clone(),
            source,
        })?;
    let local = listener.local_addr()?;
    let model = cfg.engine.model.clone();
    let no_key = cfg.options.api_key.is_none() && cfg.options.api_keys.is_empty();
    let state = AppState::new(ServerOptions {
        model_arg: model.clone(),
        ..cfg.options
    });
    eprintln!("owl: listening on http://{local} (model {model})");
    if no_key && !local.ip().is_loopback() {
        eprintln!("owl: warning: listening on {local} without --api-key: anyone who can reach this address can use the server; pass --api-key KEY (or set OWL_API_KEY), or keep the default --host 127.0.0.1");
    }

    let expired = Arc::new(tokio::sync::Notify::new());
    let drain_secs = cfg.drain_seconds;
    let (st, exp) = (state.clone(), expired.clone());
    let drained = async move {
        signals.recv().await;
        st.drain().start();
        eprintln!(
            "owl: draining: {} request(s) in flight, new ones refused with 503 (up to {drain_secs} s)",
            st.drain().in_flight()
        );
        let wait = tokio::time::timeout(
            std::time::Duration::from_secs(drain_secs),
            st.drain().idle(),
        );
        tokio::select! {
            r = wait => if r.is_ok() {
                eprintln!("owl: drained; exiting");
                return;
            } else {
                eprintln!("owl: {} request(s) still in flight after {drain_secs} s; exiting", st.drain().in_flight());
            },
            _ = signals.recv() => eprintln!("owl: second signal; exiting with {} request(s) in flight", st.drain().in_flight()),
        }
        exp.notify_one();
    };
    let listener = conn::TimedListener::new(listener, cfg.write_timeout, state.conns());
    let server = axum::serve(listener, router(state.clone()))
        .with_graceful_shutdown(drained)
        .into_future();
    tokio::pin!(server);
    let engine_cfg = cfg.engine;
    if let Some(name) = cfg.embedding_model.clone() {
        state.expect_embedder();
        let (threads, pull) = (engine_cfg.threads, engine_cfg.pull_if_missing);
        let st = state.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            owl_engine::service::Embedder::start(&name, threads, 2048, pull).map(|e| (name, e))
        })
        .await
        .map_err(|e| ServerError::Load {
            model: "embedding model".into(),
            message: e.to_string(),
        })?;
        match loaded {
            Ok((name, e)) => {
                eprintln!(
                    "owl: embedding model {name} ready (width {}, inputs up to {} tokens)",
                    e.info().n_embd,
                    e.info().n_ctx
                );
                st.set_embedder(Arc::new(e));
            }
            Err(e) => {
                return Err(ServerError::Load {
                    model: cfg.embedding_model.unwrap_or_default(),
                    message: e.to_string(),
                })
            }
        }
    }
    let load = tokio::task::spawn_blocking(move || Engine::start(engine_cfg));
    tokio::select! {
        r = &mut server => return Ok(r?),
        _ = expired.notified() => return Ok(()),
        loaded = load => match loaded {
            Ok(Ok(engine)) => {
                let info = engine.info();
                eprintln!("owl: model {} ready ({}, {}, ctx {}, parallel {})", info.name, info.quant, info.device, info.n_ctx, info.n_parallel);
                state.set_engine(Arc::new(engine));
            }
            Ok(Err(e)) => return Err(ServerError::Load { model, message: e.to_string() }),
            Err(e) => return Err(ServerError::Load { model, message: format!("the loader failed: {e}") }),
        },
    }
    tokio::select! {
        r = server => Ok(r?),
        // Connections still busy when the drain time is up are cut.
        _ = expired.notified() => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_request, parse_translated, request_constraint, CompatApi};

    #[test]
    fn other_apis_translate_to_checked_chat_bodies() {
        let msgs = r#"[{"role":"user","content":"hi"}]"#;
        let a = format!(r#"{{"model":"m","max_tokens":4,"system":"be brief","messages":{msgs}}}"#);
        let chat = parse_translated(CompatApi::AnthropicMessages, a.as_bytes()).unwrap();
        assert_eq!(chat["max_tokens"], 4);
        assert_eq!(chat["messages"][0]["role"], "system");
        let o = format!(r#"{{"model":"m","messages":{msgs},"options":{{"num_predict":3}}}}"#);
        let chat = parse_translated(CompatApi::OllamaChat, o.as_bytes()).unwrap();
        assert_eq!(chat["max_tokens"], 3);
        let r = br#"{"model":"m","input":"hi","max_output_tokens":5}"#;
        let chat = parse_translated(CompatApi::Responses, r).unwrap();
        assert_eq!(chat["max_tokens"], 5);
        // Each API's own refusals, then the chat handler's checks on what they translate to.
        let bad: [(CompatApi, String, &str); 4] = [
            (CompatApi::AnthropicMessages, format!(r#"{{"messages":{msgs}}}"#), "max_tokens"),
            (CompatApi::Responses, r#"{"input":"hi","previous_response_id":"r"}"#.into(), "previous_response_id"),
            (CompatApi::OllamaChat, format!(r#"{{"messages":{msgs},"options":"hot"}}"#), "options"),
            (CompatApi::AnthropicMessages, format!(r#"{{"max_tokens":4,"messages":{msgs},"stop_sequences":["{}"]}}"#, "x".repeat(300)), "stop"),
        ];
        for (api, body, want) in bad {
            let e = parse_translated(api, body.as_bytes()).unwrap_err();
            assert!(format!("{e:?}").contains(want), "{api:?} {body}: {e:?}");
        }
    }

    #[test]
    fn request_constraint_is_the_handlers_grammar() {
        let body = br#"{"prompt":"x","json_schema":{"type":"object"}}"#;
        assert!(request_constraint(body).unwrap().is_some());
        assert!(request_constraint(br#"{"prompt":"x"}"#).unwrap().is_none());
        assert!(request_constraint(br#"{"prompt":"x","grammar":"root ::= "a"","json_schema":{}}"#).is_err());
    }

    #[test]
    fn parse_request_checks_what_the_handlers_check() {
        let chat = br#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":4}"#;
        parse_request(chat, true).unwrap();
        let text = br#"{"prompt":"Once","max_tokens":4}"#;
        parse_request(text, false).unwrap();
        // A completions body is not a chat body, and the reverse.
        assert!(parse_request(text, true).is_err());
        let bad = [
            (&br#"{"messages":"#[..], "not valid JSON"),
            (br#"[1]"#, "must be a JSON object"),
            (br#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":0}"#, "max_tokens"),
            (br#"{"messages":[{"role":"user","content":"hi"}],"n":17}"#, "`n`"),
            (br#"{"messages":[{"role":"user","content":"hi"}],"grammar":"root ::= x","json_schema":{}}"#, "not both"),
        ];
        for (body, want) in bad {
            let e = parse_request(body, true).unwrap_err();
            assert!(
                format!("{e:?}").contains(want),
                "{}: {e:?}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
