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
//! Responses are stored (unless the request says `"store": false`) in a bounded
//! in-memory store (`store.rs`): `previous_response_id` continues a stored
//! conversation, `GET /v1/responses/{id}` (and `/input_items`) reads one back,
//! `DELETE` forgets it. An id the store does not hold (never stored, evicted, or
//! from before a restart) is a 404 that says to send the whole conversation in
//! `input`. `background` and `conversation` are 400s. Errors keep OpenAI's shape.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{answer_json, openai_chat, stream_refused};
use crate::app::{AppState, JsonBody};
use crate::cost::Client;
use crate::error::ApiError;

mod events;
mod request;
mod store;

use events::stream_answer;
pub(crate) use request::to_chat;
pub use store::Store;

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
        "previous_response_id": req["previous_response_id"], "store": req["store"] == true,
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

/// The request with `previous_response_id` resolved, and the input items it is
/// answered from: the stored conversation, then this request's `input`.
fn resolve(st: &AppState, v: &Value) -> Result<(Value, Vec<Value>), ApiError> {
    let mut input = match &v["input"] {
        Value::String(s) => vec![json!({"type": "message", "role": "user", "content": s})],
        Value::Array(items) => items.clone(),
        _ => Vec::new(), // to_chat says what is wrong
    };
    match &v["previous_response_id"] {
        Value::Null => Ok((v.clone(), input)),
        Value::String(id) => {
            let Some(mut conv) = st.responses().conversation(id) else {
                return Err(ApiError::not_found(format!(
                    "previous response {id:?} is not stored here: owl keeps the last {} responses in memory until it restarts, and not those sent with \"store\": false; send the whole conversation in `input`",
                    store::DEFAULT_MAX_RESPONSES
                )));
            };
            conv.append(&mut input);
            let mut eff = v.clone();
            if let Some(o) = eff.as_object_mut() {
                o.remove("previous_response_id");
                o.insert("input".into(), Value::Array(conv.clone()));
            }
            Ok((eff, conv))
        }
        _ => Err(ApiError::invalid(
            "previous_response_id",
            "`previous_response_id` must be a string: the id of a stored response",
        )),
    }
}

/// `POST /v1/responses`.
pub async fn create(
    State(st): State<AppState>,
    client: Client,
    headers: HeaderMap,
    JsonBody(mut v): JsonBody,
) -> Result<Response, ApiError> {
    let (eff, input) = resolve(&st, &v)?;
    let body = to_chat(&eff)?;
    let keep = v["store"] != false;
    if let Some(o) = v.as_object_mut() {
        o.insert("store".into(), json!(keep));
    }
    let resp = openai_chat(&st, client, headers, body.clone()).await?;
    if body["stream"] == true {
        if !resp.status().is_success() {
            return Err(stream_refused(resp).await);
        }
        let done: Option<events::Done> = keep.then(|| {
            let st = st.clone();
            Box::new(move |r: &Value| {
                st.responses().put(r.clone(), input);
            }) as events::Done
        });
        return Ok(stream_answer(resp, v, done));
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
    let r = response(
        &v,
        &id,
        &a["model"],
        created,
        output,
        Some(finish),
        usage(&a["usage"]),
    );
    if keep {
        st.responses().put(r.clone(), input);
    }
    Ok(Json(r).into_response())
}

fn not_stored(id: &str) -> ApiError {
    ApiError::not_found(format!(
        "no response {id:?} is stored here (owl keeps the last {} in memory until it restarts, and not those sent with \"store\": false)",
        store::DEFAULT_MAX_RESPONSES
    ))
}

/// `GET /v1/responses/{id}`: a stored response object.
pub async fn retrieve(State(st): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    st.responses().get(&id).map(Json).ok_or_else(|| not_stored(&id))
}

/// `GET /v1/responses/{id}/input_items`: the items a stored response was answered from.
pub async fn input_items(State(st): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let items = st.responses().input_items(&id).ok_or_else(|| not_stored(&id))?;
    Ok(Json(json!({
        "object": "list", "data": items, "has_more": false,
        "first_id": items.first().map(|i| i["id"].clone()).unwrap_or(Value::Null),
        "last_id": items.last().map(|i| i["id"].clone()).unwrap_or(Value::Null),
    })))
}

/// `DELETE /v1/responses/{id}`.
pub async fn delete(State(st): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    if st.responses().delete(&id) {
        Ok(Json(json!({"id": id, "object": "response", "deleted": true})))
    } else {
        Err(not_stored(&id))
    }
}

/// `POST /v1/responses/input_tokens`: the tokens the request's input renders to
/// (`{"object": "response.input_tokens", "input_tokens": N}`, as OpenAI and llama-server answer).
pub async fn input_tokens(State(st): State<AppState>, JsonBody(v): JsonBody) -> Result<Json<Value>, ApiError> {
    let (eff, _) = resolve(&st, &v)?;
    let chat = to_chat(&eff)?;
    let n = super::prompt_tokens(&st, &chat).await?;
    Ok(Json(json!({"object": "response.input_tokens", "input_tokens": n})))
}
