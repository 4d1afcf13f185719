//! Other clients' APIs over the same path as OpenAI's chat: Anthropic's Messages
//! (anthropic.rs), Ollama's (ollama.rs) and OpenAI's own Responses (responses.rs).
//!
//! Each handler turns its request into an OpenAI chat (or completions) body,
//! answers it through the OpenAI handlers — so validation, routing, tools,
//! constraints and cost accounting are the same code — and turns the answer
//! (one JSON object, or the SSE chunks of a stream) back into its API's shape.
//! Errors are reshaped by one middleware outside every route ([`reshape_by_path`]),
//! so those made before a handler runs (the drain gate's 503, auth's 401, 404 and
//! 405 fallbacks, the body limit's 413) are in the API's shape too.

pub mod anthropic;
pub mod ollama;
pub mod responses;

use std::collections::VecDeque;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::{stream, Stream, StreamExt};
use serde_json::{json, Map, Value};

use crate::app::{AppState, JsonBody};
use crate::cost::Client;
use crate::error::ApiError;
use crate::openai::{parse_body, ChatParams};

/// Error bodies are small; a larger one is not an error body of ours.
const MAX_ERROR_BODY: usize = 1 << 20;

/// Answers an OpenAI chat body as `POST /v1/chat/completions` would (routing included).
pub(crate) async fn openai_chat(
    st: &AppState,
    client: Client,
    headers: HeaderMap,
    body: Value,
) -> Result<Response, ApiError> {
    crate::route::chat(State(st.clone()), client, headers, JsonBody(body)).await
}

/// Answers an OpenAI completions body as `POST /v1/completions` would.
pub(crate) async fn openai_completions(
    st: &AppState,
    client: Client,
    headers: HeaderMap,
    body: Value,
) -> Result<Response, ApiError> {
    crate::route::completions(State(st.clone()), client, headers, JsonBody(body)).await
}

/// An error answer in OpenAI's shape (e.g. an upstream's 4xx passed through) as an [`ApiError`].
fn error_from(status: StatusCode, v: &Value) -> ApiError {
    let message = v["error"]["message"]
        .as_str()
        .or_else(|| v["error"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| format!("the request failed with status {status}"));
    let mut e = if status.is_server_error() {
        ApiError::internal(message)
    } else {
        ApiError::bad_request(message)
    };
    e.status = status;
    e.param = v["error"]["param"].as_str().map(str::to_string);
    e
}

/// The JSON object of a non-streamed answer, or the error it carries.
pub(crate) async fn answer_json(resp: Response) -> Result<Value, ApiError> {
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .map_err(|e| ApiError::internal(format!("could not read the answer: {e}")))?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::internal(format!("the answer is not JSON: {e}")))?;
    if !status.is_success() {
        return Err(error_from(status, &v));
    }
    Ok(v)
}

/// Copies each `(from, to)` field of `v` that is present and not null into `body` as `to`.
pub(crate) fn copy_fields(v: &Value, body: &mut Map<String, Value>, names: &[(&str, &str)]) {
    for (from, to) in names {
        if let Some(x) = v.get(*from).filter(|x| !x.is_null()) {
            body.insert((*to).into(), x.clone());
        }
    }
}

/// A translator of OpenAI stream chunks into another API's events.
pub(crate) trait ChunkSink {
    /// Text the chunk's choice carries (never empty).
    fn text(&mut self, t: &str);
    /// One tool-call delta of the chunk's choice.
    fn call(&mut self, delta: &Value);
    /// The choice's finish reason, with the choice (for `stop_reason`).
    fn finish(&mut self, reason: &str, choice: &Value);
}

/// Feeds a chunk's first choice to `sink`: its text, its call deltas, then its finish.
pub(crate) fn feed_choice(c: &Value, sink: &mut impl ChunkSink) {
    let Some(choice) = c["choices"].get(0) else {
        return;
    };
    let delta = &choice["delta"];
    if let Some(t) = delta["content"].as_str().filter(|t| !t.is_empty()) {
        sink.text(t);
    }
    for d in delta["tool_calls"].as_array().into_iter().flatten() {
        sink.call(d);
    }
    if let Some(f) = choice["finish_reason"].as_str() {
        sink.finish(f, choice);
    }
}

/// The error of an answer that should have been a stream but is not a success.
pub(crate) async fn stream_refused(resp: Response) -> ApiError {
    answer_json(resp)
        .await
        .err()
        .unwrap_or_else(|| ApiError::internal("the stream failed"))
}

/// The `data:` payloads of an OpenAI SSE answer, each parsed, until `[DONE]`.
/// An error inside the stream comes as an object with an `error` field.
pub(crate) fn sse_chunks(resp: Response) -> impl Stream<Item = Value> + Send {
    struct S {
        body: axum::body::BodyDataStream,
        buf: Vec<u8>,
        ready: VecDeque<Value>,
        done: bool,
    }
    let s = S {
        body: resp.into_body().into_data_stream(),
        buf: Vec::new(),
        ready: VecDeque::new(),
        done: false,
    };
    stream::unfold(s, |mut s| async move {
        loop {
            if let Some(v) = s.ready.pop_front() {
                return Some((v, s));
            }
            if s.done {
                return None;
            }
            match s.body.next().await {
                Some(Ok(bytes)) => {
                    s.buf.extend_from_slice(&bytes);
                    while let Some(end) = find_frame_end(&s.buf) {
                        let frame: Vec<u8> = s.buf.drain(..end).collect();
                        for line in String::from_utf8_lossy(&frame).lines() {
                            let Some(data) = line.strip_prefix("data:").map(str::trim) else {
                                continue;
                            };
                            if data == "[DONE]" {
                                s.done = true;
                            } else if let Ok(v) = serde_json::from_str::<Value>(data) {
                                s.ready.push_back(v);
                            }
                        }
                    }
                }
                Some(Err(e)) => {
                    s.ready
                        .push_back(json!({"error": {"message": format!("the stream broke: {e}")}}));
                    s.done = true;
                }
                None => s.done = true,
            }
        }
    })
}

/// The end (after the blank line) of the first complete SSE frame in `buf`.
fn find_frame_end(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2)
}

/// `POST /v1/chat/completions/input_tokens` (llama-server's): `{"input_tokens": N}`
/// for the prompt a chat body renders to, tools included.
pub(crate) async fn chat_input_tokens(
    State(st): State<AppState>,
    JsonBody(v): JsonBody,
) -> Result<axum::Json<Value>, ApiError> {
    Ok(axum::Json(json!({"input_tokens": prompt_tokens(&st, &v).await?})))
}

/// Tokens the prompt of an OpenAI chat body renders to, as the engine would count them.
/// Templating and tokenizing a long prompt is CPU work: it runs off the async workers.
pub(crate) async fn prompt_tokens(st: &AppState, body: &Value) -> Result<usize, ApiError> {
    let (st, body) = (st.clone(), body.clone());
    tokio::task::spawn_blocking(move || count_prompt(&st, &body))
        .await
        .map_err(|e| ApiError::internal(format!("counting the prompt failed: {e}")))?
}

fn count_prompt(st: &AppState, body: &Value) -> Result<usize, ApiError> {
    let text = render_prompt(st, body)?;
    Ok(st
        .engine()?
        .tokenize(&text, true, true)
        .map_err(|e| ApiError::invalid("messages", e.0))?
        .len())
}

/// The prompt an OpenAI chat body renders to, as the chat handler renders it: with
/// `tools`, or a conversation holding calls and results, the template sees the
/// messages as sent (`tool_calls`, `tool_call_id`, `reasoning_content`). Serves
/// the token counts and `/apply-template`.
pub(crate) fn render_prompt(st: &AppState, body: &Value) -> Result<String, ApiError> {
    let engine = st.engine()?;
    let (messages, _) = parse_body::<ChatParams>(body)?.validate()?;
    let has_calls = body["messages"].as_array().is_some_and(|ms| {
        ms.iter()
            .any(|m| m["role"] == "tool" || m.get("tool_calls").is_some_and(|c| !c.is_null()))
    });
    let tools = body["tools"].as_array().cloned().unwrap_or_default();
    if !tools.is_empty() || has_calls {
        let msgs = crate::tools::messages(&body["messages"], &messages);
        engine.apply_chat_template_tools(&msgs, &tools)
    } else {
        engine.apply_chat_template(&messages, true)
    }
    .map_err(|e| ApiError::invalid("messages", e.0))
}

/// The error shape of the API a path belongs to: Anthropic's under `/v1/messages`,
/// Ollama's under `/api/`; None for OpenAI's (and owl's own) paths.
pub(crate) fn shape_for(path: &str) -> Option<fn(StatusCode, &Value) -> Value> {
    if path == "/v1/messages" || path.starts_with("/v1/messages/") {
        Some(anthropic::shape_error)
    } else if path == "/api" || path.starts_with("/api/") {
        Some(ollama::shape_error)
    } else {
        None
    }
}

/// Middleware over the whole router: an error answer on an Anthropic or Ollama
/// path is rewritten in that API's shape ([`shape_for`]); status and headers
/// (Retry-After) are kept.
pub(crate) async fn reshape_by_path(req: Request, next: Next) -> Response {
    match shape_for(req.uri().path()) {
        Some(shape) => reshape_errors(shape, req, next).await,
        None => next.run(req).await,
    }
}

/// Rewrites an error answer (status >= 400 with OpenAI's JSON body) with `shape`,
/// which gets the status and the OpenAI `error` object.
async fn reshape_errors(
    shape: fn(StatusCode, &Value) -> Value,
    req: Request,
    next: Next,
) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    if status.is_success() || status.is_informational() || status.is_redirection() {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_ERROR_BODY).await {
        Ok(b) => b,
        Err(_) => return (status, "the error answer could not be read").into_response(),
    };
    let Some(err) = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v.get("error").cloned())
    else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let out = serde_json::to_vec(&shape(status, &err)).unwrap_or_default();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(Bytes::from(out)))
}

/// Milliseconds as whole nanoseconds (Ollama's `*_duration` fields).
pub(crate) fn ms_to_ns(ms: f64) -> u64 {
    if ms.is_finite() && ms > 0.0 {
        (ms * 1e6).round() as u64
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_end_at_blank_lines() {
        assert_eq!(find_frame_end(b"data: 1\n\ndata: 2"), Some(9));
        assert_eq!(find_frame_end(b"data: 1\n"), None);
    }

    #[test]
    fn upstream_errors_keep_status_and_message() {
        let e = error_from(
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!({"error": {"message": "bad", "param": "x"}}),
        );
        assert_eq!((e.status.as_u16(), e.message.as_str()), (422, "bad"));
        assert_eq!(e.param.as_deref(), Some("x"));
        assert_eq!(ms_to_ns(1.5), 1_500_000);
        assert_eq!(ms_to_ns(f64::NAN), 0);
    }
}
