//! owl-server: the OpenAI-compatible HTTP API over the owl Engine service.
//!
//! This crate holds the OpenAI types and handlers and nothing of the model:
//! everything model-related goes through [`LlmService`], which the engine's
//! `Engine` implements (tests use a fake).
//!
//! Endpoints: `POST /v1/chat/completions`, `POST /v1/completions`,
//! `POST /v1/embeddings` (with `--embedding-model`), `GET /v1/models`, `GET /health` (503 while loading), `GET /metrics`
//! (Prometheus), and llama-server's `POST /tokenize`, `POST /detokenize`,
//! `POST /apply-template`; the cost of what was served: `GET /v1/owl/cost` and the
//! page `GET /dashboard` that draws it. The same path also answers Anthropic's
//! Messages API (`POST /v1/messages`, `/v1/messages/count_tokens`) and Ollama's
//! (`/api/chat`, `/api/generate`, `/api/embed`, `/api/tags`, `/api/show`, `/api/ps`,
//! `/api/version`): see compat/.

mod app;
mod compat;
pub mod cost;
mod dashboard;
mod embeddings;
mod error;
mod format;
mod generate;
mod metrics;
mod openai;
pub mod route;
mod service;
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
    let v = openai::parse_json(body)?;
    let gen = openai::parse_body::<openai::GenerationParams>(&v)?.validate()?;
    if chat {
        let (messages, _) = openai::parse_body::<openai::ChatParams>(&v)?.validate()?;
        if gen.tools.is_some() {
            let _ = tools::messages(&v["messages"], &messages);
        }
    } else {
        openai::parse_body::<openai::CompletionParams>(&v)?.validate()?;
    }
    Ok(())
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

/// Runs [`serve`] on its own tokio runtime until Ctrl-C or SIGTERM.
pub fn run_blocking(cfg: ServeConfig) -> Result<(), ServerError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        // The engine owns the compute threads; HTTP needs only a couple.
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(ServerError::Runtime)?;
    rt.block_on(serve(cfg))
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Binds, prints `owl: listening on http://ADDR (model NAME)` on stderr, then
/// loads the model in the background (/health answers 503 until it is ready)
/// and serves until a shutdown signal. A model that fails to load ends the server.
pub async fn serve(cfg: ServeConfig) -> Result<(), ServerError> {
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
    let state = AppState::new(ServerOptions {
        model_arg: model.clone(),
        ..cfg.options
    });
    eprintln!("owl: listening on http://{local} (model {model})");

    let server = axum::serve(listener, router(state.clone()))
        .with_graceful_shutdown(shutdown_signal())
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
    Ok(server.await?)
}

#[cfg(test)]
mod tests {
    use super::parse_request;

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
            (br#"{"messages":[{"role":"user","content":"hi"}],"n":2}"#, "`n`"),
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
