//! Ollama's API: `/api/version`, `/api/tags`, `/api/show`, `/api/ps`,
//! `/api/chat`, `/api/generate`, `/api/embed` (and the older `/api/embeddings`).
//!
//! `/api/chat` and `/api/generate` stream NDJSON by default (as ollama does):
//! one object per piece of text, then a `done: true` line with `done_reason`
//! and nanosecond `*_duration` fields. `options` map onto the OpenAI fields
//! (temperature, top_p, top_k, min_p, seed, num_predict, stop, penalties);
//! `options.num_ctx` is honoured — the prompt must fit in it (else a 400) and
//! generation stops when it is full — and a `num_ctx` over the server's
//! context is a 400: never a silent truncation. Errors are `{"error": "..."}`.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{stream, StreamExt};
use serde_json::{json, Map, Value};

use super::{answer_json, ms_to_ns, openai_chat, openai_completions, prompt_tokens, sse_chunks};
use crate::app::{AppState, JsonBody};
use crate::cost::Client;
use crate::error::ApiError;

/// The Ollama API version this module follows (clients check it before using newer fields).
const API_VERSION: &str = "0.12.0";

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/version", get(version))
        .route("/api/tags", get(tags))
        .route("/api/show", post(show))
        .route("/api/ps", get(ps))
        .route("/api/chat", post(chat))
        .route("/api/generate", post(generate))
        .route("/api/embed", post(embed))
        .route("/api/embeddings", post(embeddings_legacy))
}

/// An OpenAI `error` object in Ollama's shape.
pub(crate) fn shape_error(_: StatusCode, err: &Value) -> Value {
    json!({"error": err["message"]})
}

/// RFC 3339 UTC with nanoseconds, as ollama writes times.
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let hour = owl_ledger::report::hour(secs as f64);
    format!(
        "{hour}:{:02}:{:02}.{:09}Z",
        secs % 3600 / 60,
        secs % 60,
        d.subsec_nanos()
    )
}

fn now() -> String {
    rfc3339(SystemTime::now())
}

/// "135M", "1.5B": ollama's parameter_size.
fn param_size(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.1}B", n / 1e9)
    } else {
        format!("{:.0}M", n / 1e6)
    }
}

/// A stable hex id for the loaded file (ollama's manifest digest; owl has no manifests).
fn digest(path: &std::path::Path, size: u64) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path.to_string_lossy().bytes().chain(size.to_le_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The loaded model's entry in `/api/tags` and `/api/ps`.
fn loaded(st: &AppState) -> Result<Value, ApiError> {
    let engine = st.engine()?;
    let info = engine.info();
    let modified = std::fs::metadata(&info.path)
        .and_then(|m| m.modified())
        .unwrap_or(UNIX_EPOCH);
    let entry = json!({
        "name": info.name, "model": info.name, "modified_at": rfc3339(modified),
        "size": info.file_size, "digest": digest(&info.path, info.file_size),
        "details": {
            "parent_model": "", "format": "gguf", "family": info.arch, "families": [info.arch],
            "parameter_size": param_size(info.n_params), "quantization_level": info.quant,
        },
    });
    Ok(entry)
}

async fn version() -> Json<Value> {
    Json(json!({"version": API_VERSION}))
}

/// The loaded model and its `--alias` names.
async fn tags(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let entry = loaded(&st)?;
    let mut models = vec![entry.clone()];
    for a in st.aliases() {
        let mut e = entry.clone();
        e["name"] = json!(a);
        e["model"] = json!(a);
        models.push(e);
    }
    Ok(Json(json!({"models": models})))
}

async fn ps(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let mut e = loaded(&st)?;
    let info = st.engine()?.info().clone();
    let gpu = info.device != "cpu";
    e["size_vram"] = json!(if gpu { info.file_size } else { 0 });
    e["context_length"] = json!(info.n_ctx);
    // Loaded until the server stops.
    e["expires_at"] = json!("2318-01-01T00:00:00Z");
    Ok(Json(json!({"models": [e]})))
}

async fn show(State(st): State<AppState>, JsonBody(v): JsonBody) -> Result<Json<Value>, ApiError> {
    let name = v["model"]
        .as_str()
        .or_else(|| v["name"].as_str())
        .unwrap_or_default();
    if let Ok(e) = st.embedder() {
        if !name.is_empty()
            && e.info()
                .name
                .eq_ignore_ascii_case(name.trim_end_matches(":latest"))
        {
            let info = e.info();
            return Ok(Json(json!({
                "modelfile": "", "parameters": "", "template": "",
                "details": {"format": "gguf"},
                "model_info": {"embedding_length": info.n_embd, "context_length": info.n_ctx},
                "capabilities": ["embedding"],
            })));
        }
    }
    st.check_model(Some(name))?;
    let entry = loaded(&st)?;
    let engine = st.engine()?;
    let info = engine.info();
    let mut caps = vec!["completion"];
    if engine.tool_family() != owl_engine::tools::Family::Generic {
        caps.push("tools");
    }
    Ok(Json(json!({
        "modelfile": format!("FROM {}\n", info.path.display()),
        "parameters": format!("num_ctx {}", info.n_ctx),
        "template": "",
        "details": entry["details"],
        "model_info": {
            "general.architecture": info.arch,
            "general.parameter_count": info.n_params,
            format!("{}.context_length", info.arch): info.n_ctx_train,
        },
        "capabilities": caps,
        "modified_at": entry["modified_at"],
    })))
}

/// Ollama's `options` (and `format`) into an OpenAI body; returns `num_ctx` if given.
fn options(v: &Value, body: &mut Map<String, Value>) -> Result<Option<usize>, ApiError> {
    let o = &v["options"];
    if !o.is_null() && !o.is_object() {
        return Err(ApiError::invalid("options", "`options` must be an object"));
    }
    super::copy_fields(o, body, &[
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("top_k", "top_k"),
        ("min_p", "min_p"),
        ("seed", "seed"),
        ("stop", "stop"),
        ("repeat_penalty", "repeat_penalty"),
        ("presence_penalty", "presence_penalty"),
        ("frequency_penalty", "frequency_penalty"),
    ]);
    // num_predict: -1 (the default) and -2 mean "until done or the context is full".
    match o.get("num_predict").filter(|x| !x.is_null()) {
        Some(n) if n.as_i64().is_some_and(|n| n == -1 || n == -2) => {}
        Some(n) if n.as_i64().is_some_and(|n| n >= 1) => {
            body.insert("max_tokens".into(), n.clone());
        }
        Some(n) => {
            return Err(ApiError::invalid(
                "options.num_predict",
                format!("`options.num_predict` must be -1, -2 or at least 1, got {n}"),
            ))
        }
        None => {}
    }
    match &v["format"] {
        Value::Null => {}
        Value::String(s) if s == "json" => {
            body.insert("response_format".into(), json!({"type": "json_object"}));
        }
        Value::String(s) if s.is_empty() => {}
        Value::Object(_) => {
            body.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": {"name": "format", "schema": v["format"]}}),
            );
        }
        other => {
            return Err(ApiError::invalid(
                "format",
                format!("`format` must be \"json\" or a JSON Schema object, got {other}"),
            ))
        }
    }
    match o.get("num_ctx").filter(|x| !x.is_null()) {
        None => Ok(None),
        Some(n) => match n.as_u64().filter(|&n| n >= 1) {
            Some(n) => Ok(Some(n as usize)),
            None => Err(ApiError::invalid(
                "options.num_ctx",
                format!("`options.num_ctx` must be a positive integer, got {n}"),
            )),
        },
    }
}

/// Applies `num_ctx`: refused over the server's context, or when the prompt does
/// not fit; otherwise generation is capped to what is left of it.
fn apply_num_ctx(
    st: &AppState,
    num_ctx: usize,
    prompt: usize,
    body: &mut Map<String, Value>,
) -> Result<(), ApiError> {
    let n_ctx = st.engine()?.info().n_ctx;
    if num_ctx > n_ctx {
        return Err(ApiError::invalid(
            "options.num_ctx",
            format!("`options.num_ctx` is {num_ctx}, over this server's context of {n_ctx} tokens; ask for at most {n_ctx} or start `owl serve --ctx {num_ctx}`"),
        ));
    }
    if prompt >= num_ctx {
        return Err(ApiError::invalid(
            "options.num_ctx",
            format!("the prompt has {prompt} tokens, which does not fit in `options.num_ctx` = {num_ctx}; raise num_ctx or shorten the prompt (owl never truncates it)"),
        ));
    }
    let left = num_ctx - prompt;
    let max = body
        .get("max_tokens")
        .and_then(Value::as_u64)
        .map_or(left, |m| (m as usize).min(left));
    body.insert("max_tokens".into(), json!(max));
    Ok(())
}

/// Ollama's messages (tool calls with object arguments, tool results by name) in OpenAI's shape.
fn messages(v: &Value) -> Result<Vec<Value>, ApiError> {
    let Some(msgs) = v["messages"].as_array() else {
        return Err(ApiError::invalid(
            "messages",
            "`messages` is required: an array of {\"role\", \"content\"}",
        ));
    };
    let mut out = Vec::new();
    let mut last_ids: Vec<String> = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        if m.get("images")
            .is_some_and(|x| !x.is_null() && x.as_array().is_none_or(|a| !a.is_empty()))
        {
            let field = format!("messages[{i}].images");
            return Err(ApiError::invalid(
                &field,
                format!("`{field}`: images are not supported by this server"),
            ));
        }
        let mut o = json!({"role": m["role"], "content": m["content"]});
        if let Some(calls) = m["tool_calls"].as_array() {
            last_ids.clear();
            let calls: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(k, c)| {
                    let id = format!("call_{i}_{k}");
                    last_ids.push(id.clone());
                    let args = match &c["function"]["arguments"] {
                        Value::String(s) => s.clone(),
                        a => a.to_string(),
                    };
                    json!({"id": id, "type": "function", "function": {"name": c["function"]["name"], "arguments": args}})
                })
                .collect();
            o["tool_calls"] = Value::Array(calls);
        }
        if m["role"] == "tool" {
            let id = if last_ids.is_empty() {
                format!("call_{i}")
            } else {
                last_ids.remove(0)
            };
            o["tool_call_id"] = json!(id);
            if let Some(n) = m["tool_name"].as_str() {
                o["name"] = json!(n);
            }
        }
        out.push(o);
    }
    Ok(out)
}

/// What a `/api/chat` or `/api/generate` answer needs besides the text.
struct Shape {
    /// `/api/chat` (`message`) rather than `/api/generate` (`response`).
    chat: bool,
    /// Answered by the OpenAI chat path (else completions: `raw` generate).
    via_chat: bool,
    model: String,
    started: Instant,
}

impl Shape {
    fn piece(&self, text: &str, calls: Option<Value>) -> Value {
        let mut v = json!({"model": self.model, "created_at": now(), "done": false});
        if self.chat {
            v["message"] = json!({"role": "assistant", "content": text});
            if let Some(c) = calls {
                v["message"]["tool_calls"] = c;
            }
        } else {
            v["response"] = json!(text);
        }
        v
    }

    /// The closing object: `done`, `done_reason`, counts and nanosecond durations.
    fn last(
        &self,
        text: &str,
        calls: Option<Value>,
        finish: &str,
        usage: &Value,
        timings: &Value,
    ) -> Value {
        let mut v = self.piece(text, calls);
        v["done"] = json!(true);
        v["done_reason"] = json!(if finish == "length" { "length" } else { "stop" });
        v["total_duration"] = json!(self.started.elapsed().as_nanos() as u64);
        v["load_duration"] = json!(0);
        v["prompt_eval_count"] = usage["prompt_tokens"].clone();
        v["prompt_eval_duration"] = json!(ms_to_ns(timings["prompt_ms"].as_f64().unwrap_or(0.0)));
        v["eval_count"] = usage["completion_tokens"].clone();
        v["eval_duration"] = json!(ms_to_ns(timings["gen_ms"].as_f64().unwrap_or(0.0)));
        v
    }
}

/// OpenAI tool calls (JSON-text arguments) as Ollama's (object arguments).
fn ollama_calls(calls: &[Value]) -> Option<Value> {
    if calls.is_empty() {
        return None;
    }
    Some(Value::Array(
        calls
            .iter()
            .map(|c| {
                let args = c["function"]["arguments"]
                    .as_str()
                    .and_then(|a| serde_json::from_str::<Value>(a).ok())
                    .unwrap_or_else(|| json!({}));
                json!({"function": {"name": c["function"]["name"], "arguments": args}})
            })
            .collect(),
    ))
}

fn ndjson(lines: impl futures_util::Stream<Item = Value> + Send + 'static) -> Response {
    let body = Body::from_stream(lines.map(|v| {
        let mut b = v.to_string().into_bytes();
        b.push(b'\n');
        Ok::<_, std::convert::Infallible>(Bytes::from(b))
    }));
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

/// Answers an OpenAI body (chat or completions) in Ollama's shape, streamed or not.
async fn answer(
    st: AppState,
    client: Client,
    headers: HeaderMap,
    mut body: Map<String, Value>,
    stream_it: bool,
    shape: Shape,
) -> Result<Response, ApiError> {
    body.insert("stream".into(), json!(stream_it));
    if stream_it {
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    let body = Value::Object(body);
    let resp = if shape.via_chat {
        openai_chat(&st, client, headers, body).await?
    } else {
        openai_completions(&st, client, headers, body).await?
    };
    if !stream_it {
        let a = answer_json(resp).await?;
        let c = &a["choices"][0];
        let text = if shape.via_chat {
            c["message"]["content"].as_str()
        } else {
            c["text"].as_str()
        };
        let calls = c["message"]["tool_calls"]
            .as_array()
            .and_then(|c| ollama_calls(c));
        let v = shape.last(
            text.unwrap_or_default(),
            calls,
            c["finish_reason"].as_str().unwrap_or("stop"),
            &a["usage"],
            &a["timings"],
        );
        return Ok(Json(v).into_response());
    }
    if !resp.status().is_success() {
        return Err(super::stream_refused(resp).await);
    }
    // Text goes out as it comes; calls (sent whole at the end) and the counts close the stream.
    struct S {
        chunks: futures_util::stream::BoxStream<'static, Value>,
        shape: Shape,
        calls: Vec<Value>,
        finish: String,
        done: bool,
    }
    let s = S {
        chunks: sse_chunks(resp).boxed(),
        shape,
        calls: Vec::new(),
        finish: "stop".into(),
        done: false,
    };
    let lines = stream::unfold(s, |mut s| async move {
        loop {
            if s.done {
                return None;
            }
            let Some(c) = s.chunks.next().await else {
                s.done = true;
                let v = s.shape.last(
                    "",
                    ollama_calls(&s.calls),
                    &s.finish,
                    &Value::Null,
                    &Value::Null,
                );
                return Some((v, s));
            };
            if let Some(e) = c.get("error") {
                s.done = true;
                return Some((json!({"error": e["message"]}), s));
            }
            if c["usage"].is_object() {
                s.done = true;
                let v = s.shape.last(
                    "",
                    ollama_calls(&s.calls),
                    &s.finish,
                    &c["usage"],
                    &c["timings"],
                );
                return Some((v, s));
            }
            let Some(choice) = c["choices"].get(0) else {
                continue;
            };
            if let Some(f) = choice["finish_reason"].as_str() {
                s.finish = f.to_string();
            }
            for d in choice["delta"]["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let k = d["index"].as_u64().unwrap_or(0) as usize;
                if k >= s.calls.len() {
                    s.calls.push(
                        json!({"function": {"name": d["function"]["name"], "arguments": ""}}),
                    );
                }
                if let (Some(call), Some(a)) =
                    (s.calls.get_mut(k), d["function"]["arguments"].as_str())
                {
                    let so_far = call["function"]["arguments"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    call["function"]["arguments"] = json!(so_far + a);
                }
            }
            let text = if s.shape.via_chat {
                choice["delta"]["content"].as_str()
            } else {
                choice["text"].as_str()
            };
            if let Some(t) = text.filter(|t| !t.is_empty()) {
                let v = s.shape.piece(t, None);
                return Some((v, s));
            }
        }
    });
    Ok(ndjson(lines))
}

fn stream_flag(v: &Value) -> bool {
    v["stream"].as_bool().unwrap_or(true)
}

/// The OpenAI chat body of an `/api/chat` request, and its `options.num_ctx`.
pub(crate) fn chat_body(v: &Value) -> Result<(Map<String, Value>, Option<usize>), ApiError> {
    let mut body = Map::new();
    body.insert("messages".into(), Value::Array(messages(v)?));
    if let Some(m) = v.get("model").filter(|m| !m.is_null()) {
        body.insert("model".into(), m.clone());
    }
    if let Some(t) = v
        .get("tools")
        .filter(|t| t.as_array().is_some_and(|a| !a.is_empty()))
    {
        body.insert("tools".into(), t.clone());
    }
    let num_ctx = options(v, &mut body)?;
    Ok((body, num_ctx))
}

async fn chat(
    State(st): State<AppState>,
    client: Client,
    headers: HeaderMap,
    JsonBody(v): JsonBody,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let (mut body, num_ctx) = chat_body(&v)?;
    if let Some(n) = num_ctx {
        let prompt = prompt_tokens(&st, &Value::Object(body.clone())).await?;
        apply_num_ctx(&st, n, prompt, &mut body)?;
    }
    let shape = Shape {
        chat: true,
        via_chat: true,
        model: st.echo_model(v["model"].as_str()),
        started,
    };
    answer(st, client, headers, body, stream_flag(&v), shape).await
}

async fn generate(
    State(st): State<AppState>,
    client: Client,
    headers: HeaderMap,
    JsonBody(v): JsonBody,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let model = st.echo_model(v["model"].as_str());
    let prompt = match &v["prompt"] {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        _ => return Err(ApiError::invalid("prompt", "`prompt` must be a string")),
    };
    if prompt.is_empty() {
        // Ollama's way to load a model: the model is loaded already.
        st.check_model(v["model"].as_str())?;
        st.engine()?;
        return Ok(Json(json!({"model": model, "created_at": now(), "response": "", "done": true, "done_reason": "load"})).into_response());
    }
    // Fields owl cannot honour are refused, never silently dropped.
    for (field, what) in [
        ("images", "images are not supported by this server"),
        (
            "suffix",
            "fill-in-the-middle (`suffix`) is not supported; send the whole prompt",
        ),
        (
            "template",
            "a per-request `template` is not supported; start `owl serve --chat-template FILE`",
        ),
        (
            "context",
            "`context` is not supported (owl returns none); send the conversation to /api/chat",
        ),
    ] {
        let given = match &v[field] {
            Value::Null => false,
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            _ => true,
        };
        if given {
            return Err(ApiError::invalid(field, format!("`{field}`: {what}")));
        }
    }
    let raw = v["raw"] == true;
    let mut body = Map::new();
    if let Some(m) = v.get("model").filter(|m| !m.is_null()) {
        body.insert("model".into(), m.clone());
    }
    if raw {
        body.insert("prompt".into(), json!(prompt));
    } else {
        let mut msgs = Vec::new();
        if let Some(s) = v["system"].as_str().filter(|s| !s.is_empty()) {
            msgs.push(json!({"role": "system", "content": s}));
        }
        msgs.push(json!({"role": "user", "content": prompt}));
        body.insert("messages".into(), Value::Array(msgs));
    }
    let num_ctx = options(&v, &mut body)?;
    if let Some(n) = num_ctx {
        let tokens = if raw {
            st.engine()?
                .tokenize(&prompt, true, true)
                .map_err(|e| ApiError::invalid("prompt", e.0))?
                .len()
        } else {
            prompt_tokens(&st, &Value::Object(body.clone())).await?
        };
        apply_num_ctx(&st, n, tokens, &mut body)?;
    }
    let shape = Shape {
        chat: false,
        via_chat: !raw,
        model,
        started,
    };
    answer(st, client, headers, body, stream_flag(&v), shape).await
}

/// `POST /api/embed`: `input` a string or strings; served by `--embedding-model`.
async fn embed(State(st): State<AppState>, JsonBody(v): JsonBody) -> Result<Json<Value>, ApiError> {
    let started = Instant::now();
    let input = match &v["input"] {
        Value::String(_) | Value::Array(_) => v["input"].clone(),
        _ => {
            return Err(ApiError::invalid(
                "input",
                "`input` must be a string or an array of strings",
            ))
        }
    };
    let a = crate::embeddings::embeddings(State(st.clone()), JsonBody(json!({"input": input})))
        .await?
        .0;
    let vecs: Vec<Value> = a["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| d["embedding"].clone())
        .collect();
    let model = v["model"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| a["model"].as_str().unwrap_or_default().to_string());
    Ok(Json(json!({
        "model": model, "embeddings": vecs,
        "total_duration": started.elapsed().as_nanos() as u64, "load_duration": 0,
        "prompt_eval_count": a["usage"]["prompt_tokens"],
    })))
}

/// `POST /api/embeddings` (ollama's older endpoint): `prompt` in, one `embedding` out.
async fn embeddings_legacy(
    State(st): State<AppState>,
    JsonBody(v): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let Some(p) = v["prompt"].as_str() else {
        return Err(ApiError::invalid("prompt", "`prompt` must be a string"));
    };
    let a = crate::embeddings::embeddings(State(st), JsonBody(json!({"input": p})))
        .await?
        .0;
    Ok(Json(json!({"embedding": a["data"][0]["embedding"]})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_sizes() {
        let t = UNIX_EPOCH + std::time::Duration::new(1_764_790_000, 5);
        assert_eq!(rfc3339(t), "2025-12-03T19:26:40.000000005Z");
        assert_eq!(param_size(134_515_008), "135M");
        assert_eq!(param_size(1_543_714_304), "1.5B");
    }

    #[test]
    fn options_map_and_refuse() {
        let mut b = Map::new();
        let v = json!({"options": {"temperature": 0, "num_predict": 7, "stop": ["x"], "num_ctx": 512}, "format": "json"});
        assert_eq!(options(&v, &mut b).unwrap(), Some(512));
        assert_eq!(
            (b["temperature"].as_i64(), b["max_tokens"].as_i64()),
            (Some(0), Some(7))
        );
        assert_eq!(b["response_format"]["type"], "json_object");
        let mut b = Map::new();
        assert!(options(&json!({"options": {"num_predict": -1}}), &mut b)
            .unwrap()
            .is_none());
        assert!(!b.contains_key("max_tokens"));
        for bad in [
            json!({"options": {"num_ctx": 0}}),
            json!({"options": {"num_predict": 0}}),
            json!({"format": 3}),
        ] {
            assert!(options(&bad, &mut Map::new()).is_err(), "{bad}");
        }
    }

    #[test]
    fn tool_messages_get_ids() {
        let m = messages(&json!({"messages": [
            {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]},
            {"role": "tool", "content": "2", "tool_name": "f"},
        ]}))
        .unwrap();
        assert_eq!(m[0]["tool_calls"][0]["function"]["arguments"], "{\"a\":1}");
        assert_eq!(m[1]["tool_call_id"], m[0]["tool_calls"][0]["id"]);
    }
}
