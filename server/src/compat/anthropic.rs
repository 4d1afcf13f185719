//! Anthropic's Messages API: `POST /v1/messages` and `POST /v1/messages/count_tokens`.
//!
//! A request becomes an OpenAI chat body: `system` (a string or text blocks)
//! the first message; text blocks joined; `tool_use` blocks an assistant's
//! `tool_calls` and `tool_result` blocks `role: "tool"` messages; `tools`
//! (`input_schema`) and `tool_choice` (auto/any/tool/none) their OpenAI forms;
//! `stop_sequences` `stop`. The answer's text and calls become `text` and
//! `tool_use` content blocks; a stream becomes Anthropic's events
//! (`message_start`, `content_block_start/delta/stop`, `message_delta`,
//! `message_stop`). Errors are `{"type": "error", "error": {"type", "message"}}`.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::{stream, StreamExt};
use serde_json::{json, Map, Value};

use super::{answer_json, feed_choice, openai_chat, prompt_tokens, sse_chunks, ChunkSink};
use crate::app::{AppState, JsonBody};
use crate::cost::Client;
use crate::error::ApiError;

/// Anthropic's error `type` for an HTTP status.
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    }
}

/// An OpenAI `error` object in Anthropic's shape.
pub(crate) fn shape_error(status: StatusCode, err: &Value) -> Value {
    json!({"type": "error", "error": {"type": error_type(status), "message": err["message"]}})
}

fn bad(field: &str, msg: impl Into<String>) -> ApiError {
    ApiError::invalid(field, msg)
}

/// The text of `system` or of a `tool_result`'s content: a string or text blocks.
fn text_of(v: &Value, field: &str) -> Result<String, ApiError> {
    match v {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => {
            let mut out = String::new();
            for (i, b) in blocks.iter().enumerate() {
                match (b["type"].as_str(), b["text"].as_str()) {
                    (Some("text"), Some(t)) => out.push_str(t),
                    (ty, _) => {
                        return Err(bad(
                            &format!("{field}[{i}]"),
                            format!(
                                "`{field}[{i}]` must be a text block {{\"type\": \"text\", \"text\": ...}}, got type {}",
                                ty.unwrap_or("(none)")
                            ),
                        ))
                    }
                }
            }
            Ok(out)
        }
        _ => Err(bad(
            field,
            format!("`{field}` must be a string or an array of text blocks"),
        )),
    }
}

/// Anthropic's messages as OpenAI chat messages.
fn messages(v: &Value) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::new();
    let system = text_of(&v["system"], "system")?;
    if !system.is_empty() {
        out.push(json!({"role": "system", "content": system}));
    }
    let Some(msgs) = v["messages"].as_array() else {
        return Err(bad(
            "messages",
            "`messages` is required: an array of {\"role\", \"content\"}",
        ));
    };
    for (i, m) in msgs.iter().enumerate() {
        let field = format!("messages[{i}]");
        let role = m["role"].as_str().unwrap_or_default();
        if role != "user" && role != "assistant" {
            return Err(bad(
                &format!("{field}.role"),
                format!(
                    "`{field}.role` must be \"user\" or \"assistant\", got {}",
                    m["role"]
                ),
            ));
        }
        let blocks = match &m["content"] {
            Value::String(s) => {
                out.push(json!({"role": role, "content": s}));
                continue;
            }
            Value::Array(b) => b,
            _ => {
                return Err(bad(
                    &format!("{field}.content"),
                    format!("`{field}.content` must be a string or an array of content blocks"),
                ))
            }
        };
        let (mut text, mut calls, mut results) = (String::new(), Vec::new(), Vec::new());
        // An earlier turn's thinking (clients such as Claude Code send it back): the
        // template may render it, as reasoning_content; redacted thinking has no text.
        let mut reasoning = String::new();
        for (j, b) in blocks.iter().enumerate() {
            let bf = format!("{field}.content[{j}]");
            match b["type"].as_str() {
                Some("text") => text.push_str(b["text"].as_str().unwrap_or_default()),
                Some("tool_use") if role == "assistant" => {
                    let (Some(id), Some(name)) = (b["id"].as_str(), b["name"].as_str()) else {
                        return Err(bad(&bf, format!("`{bf}`: a tool_use block needs `id` and `name`")));
                    };
                    let input = if b["input"].is_null() { json!({}) } else { b["input"].clone() };
                    calls.push(json!({"id": id, "type": "function",
                        "function": {"name": name, "arguments": input.to_string()}}));
                }
                Some("thinking") if role == "assistant" => {
                    reasoning.push_str(b["thinking"].as_str().unwrap_or_default())
                }
                Some("redacted_thinking") if role == "assistant" => {}
                Some("tool_result") if role == "user" => {
                    let Some(id) = b["tool_use_id"].as_str() else {
                        return Err(bad(&bf, format!("`{bf}`: a tool_result block needs `tool_use_id`")));
                    };
                    let content = text_of(&b["content"], &format!("{bf}.content"))?;
                    results.push(json!({"role": "tool", "tool_call_id": id, "content": content}));
                }
                Some(ty) => {
                    return Err(bad(
                        &bf,
                        format!("content blocks of type {ty:?} are not supported in a {role} message; use text, tool_use (assistant) or tool_result (user)"),
                    ))
                }
                None => return Err(bad(&bf, format!("`{bf}` has no `type`"))),
            }
        }
        // Tool results answer the previous assistant turn, so they come first.
        out.extend(results);
        let mut msg = if !calls.is_empty() {
            json!({"role": "assistant", "content": text, "tool_calls": calls})
        } else if !text.is_empty() || role == "assistant" {
            json!({"role": role, "content": text})
        } else {
            continue;
        };
        if !reasoning.is_empty() {
            msg["reasoning_content"] = json!(reasoning);
        }
        out.push(msg);
    }
    Ok(out)
}

/// Anthropic's `tools` and `tool_choice` in OpenAI's form.
fn tools(v: &Value, body: &mut Map<String, Value>) -> Result<(), ApiError> {
    if let Some(list) = v["tools"].as_array() {
        let mut out = Vec::new();
        for (i, t) in list.iter().enumerate() {
            let Some(name) = t["name"].as_str() else {
                return Err(bad(
                    &format!("tools[{i}].name"),
                    format!("`tools[{i}].name` is required"),
                ));
            };
            let mut f = json!({"name": name, "parameters": t["input_schema"]});
            if let Some(d) = t["description"].as_str() {
                f["description"] = json!(d);
            }
            out.push(json!({"type": "function", "function": f}));
        }
        body.insert("tools".into(), Value::Array(out));
    } else if !v["tools"].is_null() {
        return Err(bad("tools", "`tools` must be an array"));
    }
    let choice = &v["tool_choice"];
    if !choice.is_null() {
        let c = match choice["type"].as_str() {
            Some("auto") => json!("auto"),
            Some("any") => json!("required"),
            Some("none") => json!("none"),
            Some("tool") => json!({"type": "function", "function": {"name": choice["name"]}}),
            _ => {
                return Err(bad(
                    "tool_choice",
                    "`tool_choice.type` must be auto, any, tool or none",
                ))
            }
        };
        body.insert("tool_choice".into(), c);
        if choice["disable_parallel_tool_use"] == true {
            body.insert("parallel_tool_calls".into(), json!(false));
        }
    }
    Ok(())
}

/// The OpenAI chat body of a Messages request; `need_max_tokens` for `/v1/messages`.
pub(crate) fn to_openai(v: &Value, need_max_tokens: bool) -> Result<Value, ApiError> {
    let mut body = Map::new();
    body.insert("messages".into(), Value::Array(messages(v)?));
    if let Some(m) = v.get("model").filter(|m| !m.is_null()) {
        body.insert("model".into(), m.clone());
    }
    match v.get("max_tokens").filter(|m| !m.is_null()) {
        Some(m) => {
            body.insert("max_tokens".into(), m.clone());
        }
        None if need_max_tokens => {
            return Err(bad(
                "max_tokens",
                "`max_tokens` is required (the most tokens to generate)",
            ))
        }
        None => {}
    }
    super::copy_fields(v, &mut body, &[
        ("stop_sequences", "stop"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("top_k", "top_k"),
    ]);
    tools(v, &mut body)?;
    if v["stream"] == true {
        body.insert("stream".into(), json!(true));
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(Value::Object(body))
}

/// Anthropic's `stop_reason` for an OpenAI `finish_reason`, and the stop string
/// that ended the answer (the choice's `stop_reason`, vLLM's name, when owl set it).
fn stop_reason(finish: &str, stop_word: &Value) -> &'static str {
    match finish {
        "length" => "max_tokens",
        "tool_calls" => "tool_use",
        _ if stop_word.is_string() => "stop_sequence",
        _ => "end_turn",
    }
}

/// The matched stop sequence, or null.
fn stop_sequence(stop_word: &Value) -> Value {
    if stop_word.is_string() {
        stop_word.clone()
    } else {
        Value::Null
    }
}

/// `chatcmpl-…` as `msg_…`.
fn message_id(openai_id: &Value) -> String {
    let id = openai_id.as_str().unwrap_or_default();
    format!("msg_{}", id.strip_prefix("chatcmpl-").unwrap_or(id))
}

/// A tool call's JSON-text arguments as the `input` object.
fn input_of(arguments: &Value) -> Value {
    match arguments {
        Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| json!({})),
        Value::Object(_) => arguments.clone(),
        _ => json!({}),
    }
}

/// `POST /v1/messages`.
pub async fn messages_create(
    State(st): State<AppState>,
    client: Client,
    headers: HeaderMap,
    JsonBody(v): JsonBody,
) -> Result<Response, ApiError> {
    let body = to_openai(&v, true)?;
    if body["stream"] == true {
        let input_tokens = prompt_tokens(&st, &body).await?;
        let resp = openai_chat(&st, client, headers, body).await?;
        if !resp.status().is_success() {
            return Err(super::stream_refused(resp).await);
        }
        return Ok(stream_answer(resp, input_tokens));
    }
    let a = answer_json(openai_chat(&st, client, headers, body).await?).await?;
    let choice = &a["choices"][0];
    let msg = &choice["message"];
    let mut content = Vec::new();
    let text = msg["content"].as_str().unwrap_or_default();
    let calls = msg["tool_calls"].as_array().cloned().unwrap_or_default();
    if !text.is_empty() || calls.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    for c in &calls {
        content.push(
            json!({"type": "tool_use", "id": c["id"], "name": c["function"]["name"],
            "input": input_of(&c["function"]["arguments"])}),
        );
    }
    Ok(Json(json!({
        "id": message_id(&a["id"]), "type": "message", "role": "assistant", "model": a["model"],
        "content": content,
        "stop_reason": stop_reason(choice["finish_reason"].as_str().unwrap_or_default(), &choice["stop_reason"]),
        "stop_sequence": stop_sequence(&choice["stop_reason"]),
        "usage": usage(&a["usage"]),
    }))
    .into_response())
}

/// Anthropic's usage from OpenAI's: as Anthropic counts, `input_tokens` are the
/// prompt tokens not read from the (prefix) cache, `cache_read_input_tokens` those
/// that were; owl writes no explicit cache entries, so `cache_creation_input_tokens` is 0.
fn usage(u: &Value) -> Value {
    let prompt = u["prompt_tokens"].as_u64().unwrap_or(0);
    let cached = u["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0).min(prompt);
    json!({"input_tokens": prompt - cached, "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0, "output_tokens": u["completion_tokens"]})
}

/// Turns OpenAI chunks into Anthropic's events, block by block.
#[derive(Default)]
struct Events {
    out: Vec<(&'static str, Value)>,
    /// Index of the open block, and whether it is the text block.
    open: Option<(usize, bool)>,
    next_index: usize,
    /// OpenAI tool-call index -> its block index.
    calls: Vec<(u64, usize)>,
    finish: Option<String>,
    /// The stop string that ended the answer, if one did.
    stop_word: Value,
    output_tokens: u64,
    /// The last chunk's OpenAI usage (prompt and cached tokens), for message_delta.
    usage: Option<Value>,
    started: bool,
}

impl Events {
    fn emit(&mut self, name: &'static str, v: Value) {
        self.out.push((name, v));
    }

    fn close(&mut self) {
        if let Some((i, _)) = self.open.take() {
            self.emit(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": i}),
            );
        }
    }

    fn open_block(&mut self, block: Value, text: bool) -> usize {
        self.close();
        let i = self.next_index;
        self.next_index += 1;
        self.emit(
            "content_block_start",
            json!({"type": "content_block_start", "index": i, "content_block": block}),
        );
        self.open = Some((i, text));
        i
    }
}

impl ChunkSink for Events {
    fn text(&mut self, t: &str) {
        let i = match self.open {
            Some((i, true)) => i,
            _ => self.open_block(json!({"type": "text", "text": ""}), true),
        };
        self.emit(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": i,
            "delta": {"type": "text_delta", "text": t}}),
        );
    }

    fn call(&mut self, d: &Value) {
        let k = d["index"].as_u64().unwrap_or(0);
        let i = match self.calls.iter().find(|(c, _)| *c == k) {
            Some(&(_, i)) => i,
            None => {
                let block = json!({"type": "tool_use", "id": d["id"], "name": d["function"]["name"], "input": {}});
                let i = self.open_block(block, false);
                self.calls.push((k, i));
                i
            }
        };
        if let Some(args) = d["function"]["arguments"]
            .as_str()
            .filter(|a| !a.is_empty())
        {
            self.emit(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": i,
                "delta": {"type": "input_json_delta", "partial_json": args}}),
            );
        }
    }

    fn finish(&mut self, f: &str, choice: &Value) {
        self.finish = Some(f.to_string());
        self.stop_word = choice["stop_reason"].clone();
    }
}

impl Events {
    fn chunk(&mut self, c: &Value) {
        if let Some(e) = c.get("error") {
            self.emit("error", shape_error(StatusCode::INTERNAL_SERVER_ERROR, e));
            return;
        }
        if let Some(n) = c["usage"]["completion_tokens"].as_u64() {
            self.output_tokens = n;
            self.usage = Some(c["usage"].clone());
        }
        feed_choice(c, self);
    }

    fn end(&mut self) {
        if self.next_index == 0 {
            self.open_block(json!({"type": "text", "text": ""}), true);
        }
        self.close();
        let reason = stop_reason(self.finish.as_deref().unwrap_or("stop"), &self.stop_word);
        // As Anthropic's API does, the final usage also carries the input counts,
        // now that the cached share is known (message_start counted the prompt alone).
        let usage = match &self.usage {
            Some(u) => usage(u),
            None => json!({"output_tokens": self.output_tokens}),
        };
        self.emit(
            "message_delta",
            json!({"type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": stop_sequence(&self.stop_word)},
            "usage": usage}),
        );
        self.emit("message_stop", json!({"type": "message_stop"}));
    }
}

fn stream_answer(resp: Response, input_tokens: usize) -> Response {
    let chunks = sse_chunks(resp).boxed();
    let state = (chunks, Events::default(), false);
    let events = stream::unfold(state, move |(mut chunks, mut ev, mut ended)| async move {
        loop {
            if !ev.out.is_empty() {
                let (name, v) = ev.out.remove(0);
                let e = SseEvent::default().event(name).data(v.to_string());
                return Some((Ok::<_, Infallible>(e), (chunks, ev, ended)));
            }
            if ended {
                return None;
            }
            match chunks.next().await {
                Some(c) => {
                    if !ev.started {
                        ev.started = true;
                        let model = c["model"].clone();
                        ev.emit("message_start", json!({"type": "message_start", "message": {
                            "id": message_id(&c["id"]), "type": "message", "role": "assistant",
                            "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
                            "usage": {"input_tokens": input_tokens, "cache_read_input_tokens": 0,
                                "cache_creation_input_tokens": 0, "output_tokens": 0}}}));
                    }
                    ev.chunk(&c);
                }
                None => {
                    if ev.started {
                        ev.end();
                    }
                    ended = true;
                }
            }
        }
    });
    Sse::new(events).into_response()
}

/// `POST /v1/messages/count_tokens`: `{"input_tokens": N}` for the prompt the request renders to.
pub async fn count_tokens(
    State(st): State<AppState>,
    JsonBody(v): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let body = to_openai(&v, false)?;
    Ok(Json(
        json!({"input_tokens": prompt_tokens(&st, &body).await?}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_matched_stop_string_is_a_stop_sequence() {
        assert_eq!(stop_reason("stop", &json!("\n\n")), "stop_sequence");
        assert_eq!(stop_reason("stop", &Value::Null), "end_turn");
        assert_eq!(stop_reason("length", &json!("x")), "max_tokens");
        let mut ev = Events::default();
        ev.chunk(&json!({"choices": [{"delta": {"content": "hi"}, "finish_reason": null}]}));
        ev.chunk(&json!({"choices": [{"delta": {}, "finish_reason": "stop", "stop_reason": "END"}]}));
        ev.end();
        let (_, d) = ev.out.iter().find(|(n, _)| *n == "message_delta").unwrap();
        assert_eq!(d["delta"], json!({"stop_reason": "stop_sequence", "stop_sequence": "END"}));
    }

    #[test]
    fn request_maps_to_openai() {
        let v = json!({
            "model": "claude", "max_tokens": 9, "system": [{"type": "text", "text": "Be brief."}],
            "stop_sequences": ["\n"], "top_k": 3,
            "messages": [
                {"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": [{"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "t1", "name": "weather", "input": {"city": "Oslo"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "5C"}]},
            ],
            "tools": [{"name": "weather", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any"},
        });
        let b = to_openai(&v, true).unwrap();
        assert_eq!(
            b["messages"][0],
            json!({"role": "system", "content": "Be brief."})
        );
        assert_eq!(
            b["messages"][2]["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Oslo\"}"
        );
        assert_eq!(
            b["messages"][3],
            json!({"role": "tool", "tool_call_id": "t1", "content": "5C"})
        );
        assert_eq!(b["messages"].as_array().unwrap().len(), 4);
        assert_eq!(
            (b["stop"][0].as_str(), b["top_k"].as_i64()),
            (Some("\n"), Some(3))
        );
        assert_eq!(
            b["tools"][0]["function"]["parameters"],
            json!({"type": "object"})
        );
        assert_eq!(b["tool_choice"], "required");
    }

    #[test]
    fn bad_requests_name_the_field() {
        let msgs = json!([{"role": "user", "content": "hi"}]);
        for (v, field) in [
            (json!({"messages": msgs}), "max_tokens"),
            (json!({"max_tokens": 5}), "messages"),
            (
                json!({"max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}),
                "messages[0].role",
            ),
            (
                json!({"max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image"}]}]}),
                "messages[0].content[0]",
            ),
            (
                json!({"max_tokens": 5, "messages": msgs, "system": 5}),
                "system",
            ),
            (
                json!({"max_tokens": 5, "messages": msgs, "tool_choice": {"type": "maybe"}}),
                "tool_choice",
            ),
        ] {
            let e = to_openai(&v, true).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(field), "{v}: {}", e.message);
        }
        let e = shape_error(StatusCode::UNAUTHORIZED, &json!({"message": "no key"}));
        assert_eq!(
            e,
            json!({"type": "error", "error": {"type": "authentication_error", "message": "no key"}})
        );
    }

    #[test]
    fn thinking_history_and_cached_usage() {
        let v = json!({"max_tokens": 5, "messages": [
            {"role": "user", "content": "fix it"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "look first", "signature": "x"},
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "tool_use", "id": "c1", "name": "ls", "input": {}}]}]});
        let body = to_openai(&v, false).unwrap();
        let m = &body["messages"][1];
        assert_eq!(m["reasoning_content"], "look first");
        assert_eq!(m["tool_calls"][0]["function"]["name"], "ls");
        let e = to_openai(&json!({"max_tokens": 5, "messages": [
            {"role": "user", "content": [{"type": "thinking", "thinking": "x"}]}]}), false)
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].content[0]"));
        let u = usage(&json!({"prompt_tokens": 30, "completion_tokens": 4,
            "prompt_tokens_details": {"cached_tokens": 12}}));
        assert_eq!(u, json!({"input_tokens": 18, "cache_read_input_tokens": 12,
            "cache_creation_input_tokens": 0, "output_tokens": 4}));
    }

    #[test]
    fn stream_events_open_and_close_blocks() {
        let mut ev = Events::default();
        ev.chunk(&json!({"choices": [{"delta": {"content": "Hi"}, "finish_reason": null}]}));
        ev.chunk(&json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": ""}}]}}]}));
        ev.chunk(&json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}}]}));
        ev.chunk(&json!({"choices": [{"delta": {}, "finish_reason": "tool_calls"}]}));
        ev.chunk(&json!({"choices": [], "usage": {"completion_tokens": 7}}));
        ev.end();
        let names: Vec<&str> = ev.out.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(ev.out[3].1["index"], 1);
        assert_eq!(ev.out[6].1["delta"]["stop_reason"], "tool_use");
        assert_eq!(ev.out[6].1["usage"]["output_tokens"], 7);
    }
}
