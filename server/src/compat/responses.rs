//! OpenAI's Responses API: `POST /v1/responses`, stateless.
//!
//! A request becomes a chat body: `instructions` the system message; `input`
//! (a string, or items: messages with `input_text`/`output_text` parts,
//! `function_call` and `function_call_output`) the messages; `tools` (flat
//! `{"type": "function", "name", "parameters"}`) and `tool_choice` their chat
//! forms; `text.format` the `response_format`; `max_output_tokens`
//! `max_tokens`. The answer becomes a `response` object whose `output` holds a
//! `message` item (one `output_text` part) and `function_call` items; a stream
//! becomes the API's typed events (`response.created`, `…output_item.added`,
//! `…output_text.delta`, `…function_call_arguments.delta`, `…completed`),
//! each with a `sequence_number`.
//!
//! owl keeps no responses: `previous_response_id` and `background` are 400s
//! that say to send the whole conversation in `input`. Errors keep OpenAI's shape.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::{stream, StreamExt};
use serde_json::{json, Map, Value};

use super::{answer_json, openai_chat, sse_chunks};
use crate::app::{AppState, JsonBody};
use crate::cost::Client;
use crate::error::ApiError;

fn bad(field: &str, msg: impl Into<String>) -> ApiError {
    ApiError::invalid(field, msg)
}

/// The text of a message's `content`: a string or `input_text`/`output_text` parts.
fn content_text(v: &Value, field: &str) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut out = String::new();
            for (i, p) in parts.iter().enumerate() {
                match (p["type"].as_str(), p["text"].as_str()) {
                    (Some("input_text" | "output_text" | "text"), Some(t)) => out.push_str(t),
                    (ty, _) => {
                        return Err(bad(
                            &format!("{field}[{i}]"),
                            format!(
                                "`{field}[{i}]` must be a text part {{\"type\": \"input_text\", \"text\": ...}}, got type {}",
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
            format!("`{field}` must be a string or an array of text parts"),
        )),
    }
}

/// `instructions` and `input` as chat messages.
fn messages(v: &Value) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::new();
    match &v["instructions"] {
        Value::Null => {}
        Value::String(s) if s.is_empty() => {}
        Value::String(s) => out.push(json!({"role": "system", "content": s})),
        _ => return Err(bad("instructions", "`instructions` must be a string")),
    }
    let items = match &v["input"] {
        Value::String(s) => {
            out.push(json!({"role": "user", "content": s}));
            return Ok(out);
        }
        Value::Array(items) => items,
        Value::Null => {
            return Err(bad(
                "input",
                "`input` is required: a string or an array of input items",
            ))
        }
        _ => {
            return Err(bad(
                "input",
                "`input` must be a string or an array of input items",
            ))
        }
    };
    for (i, it) in items.iter().enumerate() {
        let field = format!("input[{i}]");
        let ty = it["type"].as_str().unwrap_or("message");
        match ty {
            "message" => {
                let role = match it["role"].as_str() {
                    Some(r @ ("user" | "assistant" | "system")) => r,
                    Some("developer") => "system",
                    _ => {
                        return Err(bad(
                            &format!("{field}.role"),
                            format!("`{field}.role` must be user, assistant, system or developer, got {}", it["role"]),
                        ))
                    }
                };
                let text = content_text(&it["content"], &format!("{field}.content"))?;
                out.push(json!({"role": role, "content": text}));
            }
            "function_call" => {
                let (Some(id), Some(name)) = (it["call_id"].as_str(), it["name"].as_str()) else {
                    return Err(bad(&field, format!("`{field}`: a function_call item needs `call_id` and `name`")));
                };
                let args = it["arguments"].as_str().unwrap_or("{}");
                let call = json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}});
                // Consecutive calls are one assistant turn, as the model made them.
                let open_turn = out
                    .last_mut()
                    .filter(|last| last["role"] == "assistant")
                    .and_then(|last| last["tool_calls"].as_array_mut());
                match open_turn {
                    Some(calls) => calls.push(call),
                    None => out.push(json!({"role": "assistant", "content": "", "tool_calls": [call]})),
                }
            }
            "function_call_output" => {
                let Some(id) = it["call_id"].as_str() else {
                    return Err(bad(&field, format!("`{field}`: a function_call_output item needs `call_id`")));
                };
                let output = match &it["output"] {
                    Value::String(s) => s.clone(),
                    other => content_text(other, &format!("{field}.output"))?,
                };
                out.push(json!({"role": "tool", "tool_call_id": id, "content": output}));
            }
            other => {
                return Err(bad(
                    &field,
                    format!("input items of type {other:?} are not supported; use message, function_call or function_call_output"),
                ))
            }
        }
    }
    Ok(out)
}

/// `tools`, `tool_choice` and `parallel_tool_calls` in chat's form.
fn tools(v: &Value, body: &mut Map<String, Value>) -> Result<(), ApiError> {
    if let Some(list) = v["tools"].as_array() {
        let mut out = Vec::new();
        for (i, t) in list.iter().enumerate() {
            if t["type"] != "function" {
                return Err(bad(
                    &format!("tools[{i}].type"),
                    format!(
                        "only function tools are served, got `tools[{i}].type` {}",
                        t["type"]
                    ),
                ));
            }
            let Some(name) = t["name"].as_str() else {
                return Err(bad(
                    &format!("tools[{i}].name"),
                    format!("`tools[{i}].name` is required"),
                ));
            };
            let mut f = json!({"name": name, "parameters": t["parameters"]});
            for k in ["description", "strict"] {
                if !t[k].is_null() {
                    f[k] = t[k].clone();
                }
            }
            out.push(json!({"type": "function", "function": f}));
        }
        body.insert("tools".into(), Value::Array(out));
    } else if !v["tools"].is_null() {
        return Err(bad("tools", "`tools` must be an array"));
    }
    match &v["tool_choice"] {
        Value::Null => {}
        c @ Value::String(_) => {
            body.insert("tool_choice".into(), c.clone());
        }
        c if c["type"] == "function" => {
            body.insert(
                "tool_choice".into(),
                json!({"type": "function", "function": {"name": c["name"]}}),
            );
        }
        _ => return Err(bad(
            "tool_choice",
            "`tool_choice` must be auto, none, required or {\"type\": \"function\", \"name\": ...}",
        )),
    }
    if let Some(p) = v.get("parallel_tool_calls").filter(|p| !p.is_null()) {
        body.insert("parallel_tool_calls".into(), p.clone());
    }
    Ok(())
}

/// `text.format` as chat's `response_format`.
fn format(v: &Value) -> Result<Option<Value>, ApiError> {
    let f = &v["text"]["format"];
    Ok(match f["type"].as_str() {
        None if f.is_null() => None,
        Some("text") => None,
        Some("json_object") => Some(json!({"type": "json_object"})),
        Some("json_schema") => {
            let mut js = json!({"name": f["name"], "schema": f["schema"]});
            if !f["strict"].is_null() {
                js["strict"] = f["strict"].clone();
            }
            Some(json!({"type": "json_schema", "json_schema": js}))
        }
        _ => {
            return Err(bad(
                "text.format",
                "`text.format.type` must be text, json_object or json_schema",
            ))
        }
    })
}

/// The chat body of a Responses request.
pub(crate) fn to_chat(v: &Value) -> Result<Value, ApiError> {
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    if v["previous_response_id"].is_string()
        || v["conversation"].is_string()
        || v["conversation"].is_object()
    {
        return Err(bad(
            "previous_response_id",
            "owl keeps no responses: send the whole conversation in `input` (earlier outputs as assistant messages and function_call items)",
        ));
    }
    if v["background"] == true {
        return Err(bad(
            "background",
            "background responses are not served; leave `background` unset",
        ));
    }
    let mut body = Map::new();
    body.insert("messages".into(), Value::Array(messages(v)?));
    for (from, to) in [
        ("model", "model"),
        ("max_output_tokens", "max_tokens"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("seed", "seed"),
        ("top_k", "top_k"),
        ("min_p", "min_p"),
    ] {
        if let Some(x) = v.get(from).filter(|x| !x.is_null()) {
            body.insert(to.into(), x.clone());
        }
    }
    tools(v, &mut body)?;
    if let Some(f) = format(v)? {
        body.insert("response_format".into(), f);
    }
    if v["stream"] == true {
        body.insert("stream".into(), json!(true));
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(Value::Object(body))
}

/// `chatcmpl-…` as `resp_…`, and the ids of its items.
fn ids(chat_id: &Value) -> String {
    let id = chat_id.as_str().unwrap_or_default();
    id.strip_prefix("chatcmpl-").unwrap_or(id).to_string()
}

fn usage(u: &Value) -> Value {
    let (i, o) = (
        u["prompt_tokens"].as_u64().unwrap_or(0),
        u["completion_tokens"].as_u64().unwrap_or(0),
    );
    json!({"input_tokens": i, "output_tokens": o, "total_tokens": i + o,
        "input_tokens_details": {"cached_tokens": u["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0)},
        "output_tokens_details": {"reasoning_tokens": 0}})
}

/// The `response` object around `output`; `finish` is chat's finish reason.
fn response(
    req: &Value,
    id: &str,
    model: &Value,
    created: u64,
    output: Vec<Value>,
    finish: Option<&str>,
    usage: Value,
) -> Value {
    let (status, incomplete) = match finish {
        None => ("in_progress", Value::Null),
        Some("length") => ("incomplete", json!({"reason": "max_output_tokens"})),
        Some(_) => ("completed", Value::Null),
    };
    json!({
        "id": format!("resp_{id}"), "object": "response", "created_at": created, "status": status,
        "error": null, "incomplete_details": incomplete, "instructions": req["instructions"],
        "max_output_tokens": req["max_output_tokens"], "model": model, "output": output,
        "parallel_tool_calls": req["parallel_tool_calls"].as_bool().unwrap_or(true),
        "previous_response_id": null, "store": false,
        "temperature": req["temperature"], "top_p": req["top_p"],
        "text": {"format": if req["text"]["format"].is_null() { json!({"type": "text"}) } else { req["text"]["format"].clone() }},
        "tool_choice": if req["tool_choice"].is_null() { json!("auto") } else { req["tool_choice"].clone() },
        "tools": if req["tools"].is_null() { json!([]) } else { req["tools"].clone() },
        "usage": usage, "metadata": {},
    })
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({"type": "message", "id": format!("msg_{id}"), "status": status, "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}]})
}

fn call_item(id: &str, k: usize, call_id: &Value, name: &Value, args: &str, status: &str) -> Value {
    json!({"type": "function_call", "id": format!("fc_{id}_{k}"), "call_id": call_id, "name": name,
        "arguments": args, "status": status})
}

/// `POST /v1/responses`.
pub async fn create(
    State(st): State<AppState>,
    client: Client,
    headers: HeaderMap,
    JsonBody(v): JsonBody,
) -> Result<Response, ApiError> {
    let body = to_chat(&v)?;
    let resp = openai_chat(&st, client, headers, body.clone()).await?;
    if body["stream"] == true {
        if !resp.status().is_success() {
            return Err(answer_json(resp)
                .await
                .err()
                .unwrap_or_else(|| ApiError::internal("the stream failed")));
        }
        return Ok(stream_answer(resp, v));
    }
    let a = answer_json(resp).await?;
    let choice = &a["choices"][0];
    let msg = &choice["message"];
    let id = ids(&a["id"]);
    let mut output = Vec::new();
    let text = msg["content"].as_str().unwrap_or_default();
    let calls = msg["tool_calls"].as_array().cloned().unwrap_or_default();
    if !text.is_empty() || calls.is_empty() {
        output.push(message_item(&id, text, "completed"));
    }
    for (k, c) in calls.iter().enumerate() {
        let args = c["function"]["arguments"].as_str().unwrap_or("{}");
        output.push(call_item(
            &id,
            k,
            &c["id"],
            &c["function"]["name"],
            args,
            "completed",
        ));
    }
    let created = a["created"].as_u64().unwrap_or(0);
    let finish = choice["finish_reason"].as_str().unwrap_or("stop");
    Ok(Json(response(
        &v,
        &id,
        &a["model"],
        created,
        output,
        Some(finish),
        usage(&a["usage"]),
    ))
    .into_response())
}

/// One output item being streamed.
enum Item {
    Text(String),
    /// Chat's call index, call id, name, arguments so far.
    Call(u64, Value, Value, String),
}

/// Turns chat chunks into Responses events.
#[derive(Default)]
struct Events {
    req: Value,
    out: Vec<Value>,
    seq: u64,
    id: String,
    model: Value,
    created: u64,
    items: Vec<Item>,
    /// Whether the last item is still open.
    open: bool,
    finish: Option<String>,
    usage: Value,
    failed: bool,
}

impl Events {
    fn emit(&mut self, ty: &str, mut v: Value) {
        v["type"] = json!(ty);
        v["sequence_number"] = json!(self.seq);
        self.seq += 1;
        self.out.push(v);
    }

    fn item_json(&self, k: usize, status: &str) -> Value {
        match &self.items[k] {
            Item::Text(t) => message_item(&self.id, t, status),
            Item::Call(_, cid, name, args) => call_item(&self.id, k, cid, name, args, status),
        }
    }

    /// The id `item_json` gives item `k`, without building the item (a delta per
    /// token must not copy the text so far).
    fn item_id(&self, k: usize) -> Value {
        match &self.items[k] {
            Item::Text(_) => json!(format!("msg_{}", self.id)),
            Item::Call(..) => json!(format!("fc_{}_{k}", self.id)),
        }
    }

    fn snapshot(&self, finish: Option<&str>) -> Value {
        let status = if finish.is_some() {
            "completed"
        } else {
            "in_progress"
        };
        let output = (0..self.items.len())
            .map(|k| self.item_json(k, status))
            .collect();
        response(
            &self.req,
            &self.id,
            &self.model,
            self.created,
            output,
            finish,
            self.usage.clone(),
        )
    }

    fn start(&mut self, c: &Value) {
        self.id = ids(&c["id"]);
        self.model = c["model"].clone();
        self.created = c["created"].as_u64().unwrap_or(0);
        let r = self.snapshot(None);
        self.emit("response.created", json!({"response": r}));
        let r = self.snapshot(None);
        self.emit("response.in_progress", json!({"response": r}));
    }

    fn close(&mut self) {
        if !self.open {
            return;
        }
        self.open = false;
        let k = self.items.len() - 1;
        let item_id = self.item_id(k);
        match &self.items[k] {
            Item::Text(t) => {
                let t = t.clone();
                let at = json!({"item_id": item_id, "output_index": k, "content_index": 0});
                let mut e = at.clone();
                e["text"] = json!(t);
                self.emit("response.output_text.done", e);
                let mut e = at;
                e["part"] = json!({"type": "output_text", "text": t, "annotations": []});
                self.emit("response.content_part.done", e);
            }
            Item::Call(_, _, _, args) => {
                let e = json!({"item_id": item_id, "output_index": k, "arguments": args});
                self.emit("response.function_call_arguments.done", e);
            }
        }
        let item = self.item_json(k, "completed");
        self.emit(
            "response.output_item.done",
            json!({"output_index": k, "item": item}),
        );
    }

    fn open_item(&mut self, item: Item) -> usize {
        self.close();
        self.items.push(item);
        self.open = true;
        let k = self.items.len() - 1;
        let mut it = self.item_json(k, "in_progress");
        if let Some(c) = it["content"].as_array_mut() {
            c.clear();
        }
        self.emit(
            "response.output_item.added",
            json!({"output_index": k, "item": it}),
        );
        if matches!(self.items[k], Item::Text(_)) {
            let item_id = self.item_id(k);
            self.emit(
                "response.content_part.added",
                json!({"item_id": item_id, "output_index": k, "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": []}}),
            );
        }
        k
    }

    fn text(&mut self, t: &str) {
        let k = match (self.open, self.items.last()) {
            (true, Some(Item::Text(_))) => self.items.len() - 1,
            _ => self.open_item(Item::Text(String::new())),
        };
        if let Item::Text(s) = &mut self.items[k] {
            s.push_str(t);
        }
        let item_id = self.item_id(k);
        self.emit(
            "response.output_text.delta",
            json!({"item_id": item_id, "output_index": k, "content_index": 0, "delta": t}),
        );
    }

    fn call(&mut self, d: &Value) {
        let idx = d["index"].as_u64().unwrap_or(0);
        let k = match (self.open, self.items.last()) {
            (true, Some(Item::Call(i, ..))) if *i == idx => self.items.len() - 1,
            _ => self.open_item(Item::Call(
                idx,
                d["id"].clone(),
                d["function"]["name"].clone(),
                String::new(),
            )),
        };
        let Some(args) = d["function"]["arguments"]
            .as_str()
            .filter(|a| !a.is_empty())
        else {
            return;
        };
        if let Item::Call(.., so_far) = &mut self.items[k] {
            so_far.push_str(args);
        }
        let item_id = self.item_id(k);
        self.emit(
            "response.function_call_arguments.delta",
            json!({"item_id": item_id, "output_index": k, "delta": args}),
        );
    }

    fn chunk(&mut self, c: &Value) {
        if let Some(e) = c.get("error") {
            self.failed = true;
            self.emit(
                "error",
                json!({"code": "server_error", "message": e["message"], "param": null}),
            );
            let mut r = self.snapshot(None);
            r["status"] = json!("failed");
            r["error"] = json!({"code": "server_error", "message": e["message"]});
            self.emit("response.failed", json!({"response": r}));
            return;
        }
        if !c["usage"].is_null() {
            self.usage = usage(&c["usage"]);
        }
        let Some(choice) = c["choices"].get(0) else {
            return;
        };
        let delta = &choice["delta"];
        if let Some(t) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            self.text(t);
        }
        for d in delta["tool_calls"].as_array().into_iter().flatten() {
            self.call(d);
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            self.finish = Some(f.to_string());
        }
    }

    /// After the last chunk: close the open item and complete the response. A
    /// stream that ended without a finish reason was cut: it fails, visibly.
    fn end(&mut self) {
        if self.failed {
            return;
        }
        let Some(finish) = self.finish.clone() else {
            let mut r = self.snapshot(None);
            r["status"] = json!("failed");
            r["error"] = json!({"code": "server_error", "message": "the answer ended before it was complete"});
            self.emit("response.failed", json!({"response": r}));
            return;
        };
        if self.items.is_empty() {
            self.open_item(Item::Text(String::new()));
        }
        self.close();
        let r = self.snapshot(Some(&finish));
        let ty = if finish == "length" {
            "response.incomplete"
        } else {
            "response.completed"
        };
        self.emit(ty, json!({"response": r}));
    }
}

/// `POST /v1/responses/input_tokens`: the tokens the request's input renders to
/// (`{"object": "response.input_tokens", "input_tokens": N}`, as OpenAI and llama-server answer).
pub async fn input_tokens(State(st): State<AppState>, JsonBody(v): JsonBody) -> Result<Json<Value>, ApiError> {
    let chat = to_chat(&v)?;
    let n = super::prompt_tokens(&st, &chat).await?;
    Ok(Json(json!({"object": "response.input_tokens", "input_tokens": n})))
}

fn stream_answer(resp: Response, req: Value) -> Response {
    let chunks = sse_chunks(resp).boxed();
    let ev = Events {
        req,
        usage: usage(&Value::Null),
        ..Default::default()
    };
    let events = stream::unfold(
        (chunks, ev, false, false),
        |(mut chunks, mut ev, mut started, mut ended)| async move {
            loop {
                if !ev.out.is_empty() {
                    let v = ev.out.remove(0);
                    let name = v["type"].as_str().unwrap_or("message").to_string();
                    let e = SseEvent::default().event(name).data(v.to_string());
                    return Some((Ok::<_, Infallible>(e), (chunks, ev, started, ended)));
                }
                if ended {
                    return None;
                }
                match chunks.next().await {
                    Some(c) => {
                        if !started && c.get("error").is_none() {
                            started = true;
                            ev.start(&c);
                        }
                        ev.chunk(&c);
                    }
                    None => {
                        ev.end();
                        ended = true;
                    }
                }
            }
        },
    );
    Sse::new(events).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_maps_to_chat() {
        let v = json!({
            "model": "m", "instructions": "Be brief.", "max_output_tokens": 9, "temperature": 0,
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "Weather in Oslo?"}]},
                {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{\"city\":\"Oslo\"}"},
                {"type": "function_call", "call_id": "c2", "name": "weather", "arguments": "{\"city\":\"Bergen\"}"},
                {"type": "function_call_output", "call_id": "c1", "output": "5C"},
            ],
            "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object"}, "strict": true}],
            "tool_choice": {"type": "function", "name": "weather"},
            "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}},
        });
        let b = to_chat(&v).unwrap();
        assert_eq!(
            b["messages"][0],
            json!({"role": "system", "content": "Be brief."})
        );
        assert_eq!(
            b["messages"][1],
            json!({"role": "user", "content": "Weather in Oslo?"})
        );
        assert_eq!(b["messages"][2]["tool_calls"].as_array().unwrap().len(), 2);
        assert_eq!(
            b["messages"][3],
            json!({"role": "tool", "tool_call_id": "c1", "content": "5C"})
        );
        assert_eq!(
            (b["max_tokens"].as_i64(), b["model"].as_str()),
            (Some(9), Some("m"))
        );
        assert_eq!(b["tools"][0]["function"]["strict"], true);
        assert_eq!(b["tool_choice"]["function"]["name"], "weather");
        assert_eq!(
            b["response_format"]["json_schema"]["schema"],
            json!({"type": "object"})
        );
        assert_eq!(
            to_chat(&json!({"input": "hi"})).unwrap()["messages"],
            json!([{"role": "user", "content": "hi"}])
        );
    }

    #[test]
    fn bad_requests_name_the_field() {
        for (v, field) in [
            (json!({}), "input"),
            (json!({"input": 5}), "input"),
            (
                json!({"input": "x", "previous_response_id": "resp_1"}),
                "previous_response_id",
            ),
            (json!({"input": "x", "background": true}), "background"),
            (
                json!({"input": [{"role": "wizard", "content": "x"}]}),
                "input[0].role",
            ),
            (
                json!({"input": [{"role": "user", "content": [{"type": "input_image"}]}]}),
                "input[0].content[0]",
            ),
            (json!({"input": [{"type": "reasoning"}]}), "input[0]"),
            (
                json!({"input": "x", "tools": [{"type": "web_search"}]}),
                "tools[0].type",
            ),
            (
                json!({"input": "x", "text": {"format": {"type": "yaml"}}}),
                "text.format",
            ),
            (json!({"input": "x", "instructions": 3}), "instructions"),
        ] {
            let e = to_chat(&v).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(field), "{v}: {}", e.message);
        }
    }

    #[test]
    fn stream_events_follow_the_items() {
        let mut ev = Events {
            req: json!({}),
            ..Default::default()
        };
        let c0 = json!({"id": "chatcmpl-abc", "model": "m", "created": 5,
            "choices": [{"delta": {"role": "assistant", "content": "Hi"}}]});
        ev.start(&c0);
        ev.chunk(&c0);
        ev.chunk(&json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": ""}}]}}]}));
        ev.chunk(&json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":"}}]}}]}));
        ev.chunk(&json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}}]}));
        ev.chunk(&json!({"choices": [{"delta": {}, "finish_reason": "tool_calls"}]}));
        ev.chunk(&json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 7}}));
        ev.end();
        let names: Vec<&str> = ev.out.iter().map(|v| v["type"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let seq: Vec<u64> = ev
            .out
            .iter()
            .map(|v| v["sequence_number"].as_u64().unwrap())
            .collect();
        assert_eq!(seq, (0..14).collect::<Vec<_>>());
        // Every event names its item by the id the item itself carries.
        assert_eq!(ev.out[4]["item_id"], ev.out[7]["item"]["id"]);
        assert_eq!(ev.out[9]["item_id"], ev.out[12]["item"]["id"]);
        assert_eq!(ev.out[12]["item"]["id"], "fc_abc_1");
        let done = &ev.out[13]["response"];
        assert_eq!(
            (done["id"].as_str(), done["status"].as_str()),
            (Some("resp_abc"), Some("completed"))
        );
        assert_eq!(done["output"][1]["arguments"], "{\"a\":1}");
        assert_eq!(done["output"][1]["call_id"], "call_1");
        assert_eq!(done["usage"]["total_tokens"], 10);
    }

    #[test]
    fn a_cut_stream_fails_visibly() {
        let mut ev = Events {
            req: json!({}),
            ..Default::default()
        };
        let c0 = json!({"id": "chatcmpl-x", "choices": [{"delta": {"content": "Hal"}}]});
        ev.start(&c0);
        ev.chunk(&c0);
        ev.end();
        let last = ev.out.last().unwrap();
        assert_eq!(last["type"], "response.failed");
        assert_eq!(last["response"]["status"], "failed");
    }
}
