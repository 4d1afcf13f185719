//! Application state, the router and its middleware (auth, CORS, request
//! counting), and the small endpoints: health, models, metrics, tokenize.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::openai::{parse_body, parse_json};
use crate::service::LlmService;
use crate::cost::{Client, CostBook};
use crate::{cost, dashboard, drain, embeddings, metrics};
use owl_engine::service::Embedder;

/// Default request body limit.
pub const DEFAULT_MAX_BODY: usize = 4 << 20;

/// A models.lock entry, as `/v1/models` lists it and the `model` field may name it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KnownModel {
    pub name: String,
    /// File name in the model cache.
    pub file: String,
    /// Other names that refer to this model.
    pub aliases: Vec<String>,
}

impl KnownModel {
    fn names(&self) -> impl Iterator<Item = &str> {
        [self.name.as_str(), self.file.as_str()]
            .into_iter()
            .chain(self.aliases.iter().map(String::as_str))
    }
}

/// Settings of the HTTP layer.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Required as `Authorization: Bearer <key>` on every endpoint but /health and /dashboard
    /// (its requests are labelled "default" in the ledger).
    pub api_key: Option<String>,
    /// More keys, each with the label the ledger records its requests under (`--api-key LABEL:KEY`,
    /// `--api-keys FILE`). Any of them, or `api_key`, is accepted.
    pub api_keys: Vec<(String, String)>,
    /// Prices, the cost config and the ledger; None: laptop defaults, built-in prices, no ledger.
    pub cost: Option<Arc<CostBook>>,
    /// An allowed origin, or "*"; None leaves CORS off.
    pub cors: Option<String>,
    /// models.lock entries, for `/v1/models` and model-name checks.
    pub known_models: Vec<KnownModel>,
    /// The `--model` argument as given: also a valid name for the loaded model.
    pub model_arg: String,
    pub max_body_bytes: usize,
    /// Upstreams and the routing policy (route/mod.rs).
    pub route: Arc<crate::route::RouteConfig>,
    /// More names for the loaded model (`--alias`, repeatable), listed in `/v1/models`.
    pub aliases: Vec<String>,
    /// Refuse (404) a `model` that names neither the loaded model nor an alias
    /// (`--strict-model-names`); by default any name is served by the loaded model.
    pub strict_model_names: bool,
    /// `--request-timeout`: a generation still running after this long is stopped (408);
    /// a request's `timeout` field may shorten it (deadline.rs).
    pub request_timeout: Option<std::time::Duration>,
    /// `--max-tokens`: the most tokens an answer gets when its request sets no limit
    /// (llama-server's `--n-predict`, ollama's `num_predict`); None: up to the context.
    pub default_max_tokens: Option<usize>,
    /// `--seed`: the seed of requests that give none (llama-server's `--seed`); with `n` > 1,
    /// choice i samples with seed + i. None: each request draws a random one.
    pub default_seed: Option<u64>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            api_key: None,
            api_keys: Vec::new(),
            cost: None,
            cors: None,
            known_models: Vec::new(),
            model_arg: String::new(),
            max_body_bytes: DEFAULT_MAX_BODY,
            route: Arc::default(),
            aliases: Vec::new(),
            strict_model_names: false,
            request_timeout: None,
            default_max_tokens: None,
            default_seed: None,
        }
    }
}

/// Shared state of all handlers. The engine is set once it has loaded; until
/// then every endpoint that needs it answers 503.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    opts: ServerOptions,
    engine: OnceLock<Arc<dyn LlmService>>,
    /// The embedding model (`owl serve --embedding-model`), once loaded.
    embedder: OnceLock<Arc<Embedder>>,
    /// Whether one was asked for (503 while it loads, 400 when none was).
    embedder_wanted: std::sync::atomic::AtomicBool,
    /// Lower-cased names that refer to the loaded model.
    loaded_names: OnceLock<Vec<String>>,
    /// Requests answered, by (route, status).
    http: Mutex<BTreeMap<(String, u16), u64>>,
    created: u64,
    cost: Arc<CostBook>,
    drain: crate::drain::Drain,
    conns: Arc<crate::conn::Conns>,
    /// Stored `/v1/responses` answers, for `previous_response_id` and `GET`.
    responses: crate::compat::responses::Store,
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl AppState {
    pub fn new(opts: ServerOptions) -> AppState {
        let cost = opts.cost.clone().unwrap_or_else(|| Arc::new(CostBook::in_memory()));
        AppState(Arc::new(Inner {
            cost,
            opts,
            engine: OnceLock::new(),
            embedder: OnceLock::new(),
            embedder_wanted: std::sync::atomic::AtomicBool::new(false),
            loaded_names: OnceLock::new(),
            http: Mutex::new(BTreeMap::new()),
            created: unix_now(),
            drain: crate::drain::Drain::default(),
            conns: Arc::default(),
            responses: Default::default(),
        }))
    }

    /// The Responses API's store.
    pub(crate) fn responses(&self) -> &crate::compat::responses::Store {
        &self.0.responses
    }

    /// Makes the loaded engine available; /health turns 200. Only the first call counts.
    pub fn set_engine(&self, engine: Arc<dyn LlmService>) {
        let info = engine.info();
        let file = info
            .path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = info
            .path
            .file_stem()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut names = vec![
            info.name.clone(),
            file.clone(),
            stem,
            self.0.opts.model_arg.clone(),
        ];
        names.extend(self.0.opts.aliases.iter().cloned());
        for k in &self.0.opts.known_models {
            if k.name == info.name || (!file.is_empty() && k.file == file) {
                names.extend(k.names().map(str::to_string));
            }
        }
        let mut names: Vec<String> = names
            .into_iter()
            .filter(|n| !n.is_empty())
            .map(|n| n.to_lowercase())
            .collect();
        names.sort();
        names.dedup();
        let _ = self.0.loaded_names.set(names);
        let _ = self.0.engine.set(engine);
    }

    pub(crate) fn route(&self) -> Arc<crate::route::RouteConfig> {
        self.0.opts.route.clone()
    }

    pub fn cost(&self) -> Arc<CostBook> {
        self.0.cost.clone()
    }

    pub fn engine(&self) -> Result<Arc<dyn LlmService>, ApiError> {
        self.0.engine.get().cloned().ok_or_else(ApiError::loading)
    }

    /// Says an embedding model is loading (`/v1/embeddings` answers 503 until it is set).
    pub fn expect_embedder(&self) {
        self.0.embedder_wanted.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn set_embedder(&self, e: Arc<Embedder>) {
        let _ = self.0.embedder.set(e);
    }

    pub fn embedder(&self) -> Result<Arc<Embedder>, ApiError> {
        if let Some(e) = self.0.embedder.get() {
            return Ok(e.clone());
        }
        if self.0.embedder_wanted.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ApiError::loading());
        }
        Err(ApiError::bad_request("this server has no embedding model: start it with `owl serve --embedding-model nomic-embed-text-v1.5`"))
    }

    /// Whether the server drains (SIGTERM) and how many requests are still in flight.
    /// Open connections and write timeouts (conn.rs), for /metrics.
    pub(crate) fn conns(&self) -> Arc<crate::conn::Conns> {
        self.0.conns.clone()
    }

    pub fn drain(&self) -> &crate::drain::Drain {
        &self.0.drain
    }

    pub fn is_ready(&self) -> bool {
        self.0.engine.get().is_some()
    }

    pub(crate) fn model_name(&self) -> String {
        self.0
            .engine
            .get()
            .map(|e| e.info().name.clone())
            .unwrap_or_else(|| self.0.opts.model_arg.clone())
    }

    /// The `model` field may be omitted, empty, or name the loaded model (its
    /// name, file name, or an alias, with or without ollama's `:latest` tag).
    /// Any other name is served by the loaded model too, as llama-server does,
    /// unless `--strict-model-names` makes it a 404. (A name that routes to an
    /// upstream never gets here: route/mod.rs decides first.)
    pub fn check_model(&self, requested: Option<&str>) -> Result<(), ApiError> {
        if !self.0.opts.strict_model_names || self.names_loaded(requested) {
            return Ok(());
        }
        let req = requested.map(str::trim).unwrap_or_default();
        let lower = req.to_lowercase();
        let loaded = self.model_name();
        let known = self
            .0
            .opts
            .known_models
            .iter()
            .find(|k| k.names().any(|n| n.to_lowercase() == lower));
        Err(match known {
            Some(k) => ApiError::model_not_found(format!(
                "model {:?} is not loaded; this server serves {loaded:?} (start `owl serve --model {}` for it)",
                req, k.name
            )),
            None => ApiError::model_not_found(format!("unknown model {req:?}; this server serves {loaded:?}")),
        })
    }

    /// Whether `requested` is absent, empty, or one of the loaded model's names.
    fn names_loaded(&self, requested: Option<&str>) -> bool {
        let Some(req) = requested.map(str::trim).filter(|r| !r.is_empty()) else {
            return true;
        };
        let lower = req.to_lowercase();
        let bare = lower.strip_suffix(":latest").unwrap_or(&lower);
        self.0
            .loaded_names
            .get()
            .is_some_and(|names| names.iter().any(|n| n == &lower || n == bare))
    }

    /// The name an answer carries: the one the request gave, else the loaded model's.
    pub(crate) fn echo_model(&self, requested: Option<&str>) -> String {
        requested
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| self.model_name())
    }

    pub(crate) fn request_timeout(&self) -> Option<std::time::Duration> {
        self.0.opts.request_timeout
    }

    pub(crate) fn default_max_tokens(&self) -> Option<usize> {
        self.0.opts.default_max_tokens
    }

    pub(crate) fn default_seed(&self) -> Option<u64> {
        self.0.opts.default_seed
    }

    /// The `--alias` names of the loaded model.
    pub(crate) fn aliases(&self) -> &[String] {
        &self.0.opts.aliases
    }

    fn count(&self, route: String, status: u16) {
        if let Ok(mut m) = self.0.http.lock() {
            *m.entry((route, status)).or_insert(0) += 1;
        }
    }

    pub(crate) fn http_counts(&self) -> Vec<((String, u16), u64)> {
        self.0
            .http
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default()
    }
}

/// A JSON object body. Oversized bodies are a 413 and malformed JSON a 400,
/// both in OpenAI's error shape.
pub struct JsonBody(pub Value);

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large(state.0.opts.max_body_bytes)
            } else {
                ApiError::bad_request(format!(
                    "could not read the request body: {}",
                    e.body_text()
                ))
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/v1/chat/completions", post(crate::route::chat))
        .route("/v1/completions", post(crate::route::completions))
        .route("/v1/models", get(models))
        // llama-server's un-prefixed aliases, for clients given a base URL without /v1.
        .route("/chat/completions", post(crate::route::chat))
        .route("/completions", post(crate::route::completions))
        .route("/models", get(models))
        .route("/v1/responses", post(crate::compat::responses::create))
        .route("/responses", post(crate::compat::responses::create))
        .route("/v1/responses/{id}", get(crate::compat::responses::retrieve).delete(crate::compat::responses::delete))
        .route("/responses/{id}", get(crate::compat::responses::retrieve).delete(crate::compat::responses::delete))
        .route("/v1/responses/{id}/input_items", get(crate::compat::responses::input_items))
        .route("/responses/{id}/input_items", get(crate::compat::responses::input_items))
        // Token counting, as llama-server has it.
        .route("/v1/chat/completions/input_tokens", post(crate::compat::chat_input_tokens))
        .route("/chat/completions/input_tokens", post(crate::compat::chat_input_tokens))
        .route("/v1/responses/input_tokens", post(crate::compat::responses::input_tokens))
        .route("/responses/input_tokens", post(crate::compat::responses::input_tokens))
        // llama-server's native API, used by its web UI and other front ends.
        .route("/completion", post(crate::generate::native::completion))
        .route("/props", get(crate::generate::native::props))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/embeddings", post(embeddings::embeddings))
        .route("/metrics", get(metrics_text))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .route("/apply-template", post(apply_template))
        .route("/v1/owl/cost", get(cost::cost_summary))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/health", get(health))
        .route("/dashboard", get(dashboard::page))
        .merge(protected)
        .merge(compat_routes(&state))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(state.0.opts.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), drain::gate))
        // Outside the gate, so a draining replica's 503 is in each API's own shape too.
        .layer(middleware::from_fn(crate::compat::reshape_by_path))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .layer(middleware::from_fn_with_state(state.clone(), cors))
        .with_state(state)
}

/// Anthropic's and Ollama's APIs (compat/); their error shapes come from
/// `compat::reshape_by_path` over the whole router.
fn compat_routes(state: &AppState) -> Router<AppState> {
    use crate::compat::{anthropic, ollama};
    let anthropic = Router::new()
        .route("/v1/messages", post(anthropic::messages_create))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    let ollama = ollama::routes().route_layer(middleware::from_fn_with_state(state.clone(), auth));
    anthropic.merge(ollama)
}

async fn auth(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let opts = &st.0.opts;
    if opts.api_key.is_some() || !opts.api_keys.is_empty() {
        // `Authorization: Bearer KEY`, or `x-api-key: KEY` (Anthropic's clients, llama-server).
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let x_api_key = req.headers().get("x-api-key").and_then(|v| v.to_str().ok());
        let given = bearer.or(x_api_key).map(str::trim);
        let keys = opts.api_key.iter().map(|k| ("default", k.as_str())).chain(opts.api_keys.iter().map(|(l, k)| (l.as_str(), k.as_str())));
        // Every key is compared, so the time taken says nothing about which one matched.
        let mut label = None;
        for (l, k) in keys {
            if given.is_some_and(|g| constant_time_eq(g.as_bytes(), k.as_bytes())) && label.is_none() {
                label = Some(l.to_string());
            }
        }
        match label {
            Some(l) => {
                req.extensions_mut().insert(Client(l));
            }
            None => return ApiError::unauthorized().into_response(),
        }
    }
    next.run(req).await
}

/// Whether `given` equals `key`, in time that depends only on `key`'s length: neither
/// where a guess first differs nor how long it is shows in the time taken.
pub(crate) fn constant_time_eq(given: &[u8], key: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != key.len());
    for (i, k) in key.iter().enumerate() {
        // A shorter guess is read cyclically, so every key byte costs one comparison.
        let g = if given.is_empty() { !*k } else { given[i % given.len()] };
        diff |= g ^ k;
    }
    diff == 0 && !key.is_empty()
}

/// Counts answered requests by route and status for /metrics.
async fn track(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "other".into());
    let resp = next.run(req).await;
    st.count(route, resp.status().as_u16());
    resp
}

/// CORS, only when `--cors ORIGIN` is given: answers preflights and adds the
/// allow-origin header for that origin (or any, with "*").
async fn cors(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let Some(allowed) = st.0.opts.cors.clone() else {
        return next.run(req).await;
    };
    let origin = req.headers().get(header::ORIGIN).cloned();
    let allow = match origin {
        Some(o) if allowed == "*" => Some(HeaderValue::from_static("*")).filter(|_| !o.is_empty()),
        Some(o) if o.as_bytes() == allowed.as_bytes() => Some(o),
        _ => None,
    };
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut resp = if preflight {
        let mut r = StatusCode::NO_CONTENT.into_response();
        if allow.is_some() {
            let h = r.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST, OPTIONS"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                // Anthropic's browser clients send their version headers too.
                HeaderValue::from_static("authorization, content-type, x-api-key, anthropic-version, anthropic-beta, anthropic-dangerous-direct-browser-access"),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
        }
        r
    } else {
        next.run(req).await
    };
    if let Some(a) = allow {
        resp.headers_mut()
            .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, a);
        resp.headers_mut()
            .insert(header::VARY, HeaderValue::from_static("origin"));
    }
    resp
}

/// 200 once the model is loaded; 503 while it loads and while the server drains.
async fn health(State(st): State<AppState>) -> Response {
    if st.drain().is_draining() {
        drain::draining_error().into_response()
    } else if st.is_ready() {
        Json(json!({"status": "ok"})).into_response()
    } else {
        ApiError::loading().into_response()
    }
}

fn model_entry(id: &str, created: u64, extra: Value) -> Value {
    let mut v = json!({"id": id, "object": "model", "created": created, "owned_by": "owl"});
    if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
        m.extend(e);
    }
    v
}

/// The loaded model first, then the other models.lock entries (not loaded).
async fn models(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let engine = st.engine()?;
    let info = engine.info();
    let created = st.0.created;
    let mut data = vec![model_entry(
        &info.name,
        created,
        json!({
            "loaded": true, "arch": info.arch, "quant": info.quant, "n_params": info.n_params,
            "file_size": info.file_size, "n_ctx": info.n_ctx, "n_ctx_train": info.n_ctx_train,
            "n_vocab": info.n_vocab, "n_parallel": info.n_parallel, "device": info.device,
        }),
    )];
    for a in st.aliases() {
        if !a.eq_ignore_ascii_case(&info.name) {
            data.push(model_entry(a, created, json!({"loaded": true, "alias_of": info.name})));
        }
    }
    for k in &st.0.opts.known_models {
        if !st.names_loaded(Some(&k.name)) {
            data.push(model_entry(
                &k.name,
                created,
                json!({"loaded": false, "file": k.file}),
            ));
        }
    }
    Ok(Json(json!({"object": "list", "data": data})))
}

async fn metrics_text(State(st): State<AppState>) -> Result<Response, ApiError> {
    let engine = st.engine()?;
    let m = engine.metrics();
    let mut text = metrics::render(&m, &st.http_counts());
    text.push_str(&metrics::render_vllm(&m, &engine.info().name));
    text.push_str(&st.cost().metrics_text(&m));
    text.push_str(&st.route().metrics_text());
    text.push_str(&st.0.conns.metrics_text());
    // Beside metrics.rs's gauges: used - cache_only is what live sequences hold.
    text.push_str(&format!(
        "# HELP owl_kv_pages_prefix_cache KV pages held only by the prefix cache.\n# TYPE owl_kv_pages_prefix_cache gauge\nowl_kv_pages_prefix_cache {}\n",
        m.kv_pages_cache_only
    ));
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok((headers, text).into_response())
}

#[derive(Deserialize)]
struct TokenizeBody {
    content: String,
    /// llama-server's defaults: no BOS, special tokens parsed.
    #[serde(default)]
    add_special: bool,
    #[serde(default = "yes")]
    parse_special: bool,
    #[serde(default)]
    with_pieces: bool,
}

fn yes() -> bool {
    true
}

async fn tokenize(
    State(st): State<AppState>,
    JsonBody(v): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let b: TokenizeBody = parse_body(&v)?;
    let engine = st.engine()?;
    let ids = engine
        .tokenize(&b.content, b.add_special, b.parse_special)
        .map_err(|e| ApiError::bad_request(e.0))?;
    let tokens: Vec<Value> = if b.with_pieces {
        ids.iter()
            .map(|&id| json!({"id": id, "piece": engine.detokenize(&[id])}))
            .collect()
    } else {
        ids.iter().map(|&id| json!(id)).collect()
    };
    Ok(Json(json!({"tokens": tokens})))
}

#[derive(Deserialize)]
struct DetokenizeBody {
    tokens: Vec<u32>,
}

async fn detokenize(
    State(st): State<AppState>,
    JsonBody(v): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let b: DetokenizeBody = parse_body(&v)?;
    let engine = st.engine()?;
    let n_vocab = engine.info().n_vocab;
    if let Some(bad) = b.tokens.iter().find(|&&t| t as usize >= n_vocab) {
        return Err(ApiError::invalid(
            "tokens",
            format!("token id {bad} is outside the vocabulary of {n_vocab}"),
        ));
    }
    Ok(Json(json!({"content": engine.detokenize(&b.tokens)})))
}

/// llama-server's `/apply-template`: the chat prompt a conversation renders to.
async fn apply_template(
    State(st): State<AppState>,
    JsonBody(v): JsonBody,
) -> Result<Json<Value>, ApiError> {
    // The same rendering as a chat request's, tools and calls included.
    let prompt = crate::compat::render_prompt(&st, &v)?;
    Ok(Json(json!({"prompt": prompt})))
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn key_comparison_is_exact() {
        assert!(constant_time_eq(b"sekrit", b"sekrit"));
        for wrong in [&b""[..], b"sekri", b"sekrit2", b"sekriT", b"ssekrit", b"xxxxxx"] {
            assert!(!constant_time_eq(wrong, b"sekrit"), "{wrong:?}");
        }
        // A guess repeating a prefix of the key is still a different length.
        assert!(!constant_time_eq(b"sek", b"seksek"));
        assert!(!constant_time_eq(b"", b""), "an empty key matches nothing");
    }
}
