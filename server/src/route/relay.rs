//! Asking an upstream and giving its answer in owl's shape (owl's id and
//! fingerprint; a stream re-chunked as owl's SSE), charged into the ledger from
//! the upstream's `usage` once the answer is complete.
//!
//! A stream that ends without the upstream's usage chunk (the upstream broke off,
//! or the client went away and the relay was dropped) is still charged, for what
//! was relayed: the prompt as the local model counts its tokens, and one
//! completion token per content (or tool-call, or text) delta relayed, which is
//! how OpenAI-compatible servers stream; its record is marked `cut`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use owl_engine::service::Timings;
use owl_ledger::{Price, Routing};
use serde_json::{json, Value};

use super::capture::{self, Assembler, Capture};
use super::upstream::{self, Body, Upstream, UpstreamError};
use crate::cost::{self, CostBook};
use crate::error::ApiError;

/// Who is charged for an upstream answer, and how.
pub(crate) struct Charge {
    pub cost: Arc<CostBook>,
    pub client: String,
    pub routing: Routing,
    /// The upstream's price, when the price table has it.
    pub price: Option<Price>,
    /// Local busy time spent on a dropped probe draft.
    pub draft: Option<Timings>,
    /// Where a complete answer is captured, unless opted out.
    pub capture: Option<CaptureJob>,
    /// The prompt's tokens as the local model counts them (streams only): what a
    /// stream cut before its usage chunk is charged for its prompt.
    pub prompt_tokens: Option<u64>,
}

/// A capture record to write once the upstream's answer is complete.
#[derive(Clone)]
pub(crate) struct CaptureJob {
    pub sink: Arc<Capture>,
    pub meta: capture::Meta,
}

impl CaptureJob {
    fn push(&self, request: &Value, message: &Value, id: &str, teacher: &str, usage: &Value) {
        self.sink.push(&capture::record(
            request, message, id, teacher, usage, &self.meta,
        ));
    }
}

impl Charge {
    async fn charge(&self, model: &str, usage: &Value) -> owl_ledger::Record {
        self.cost
            .charge_upstream(
                model,
                &self.client,
                usage,
                self.price.as_ref(),
                self.draft.as_ref(),
                self.routing.clone(),
            )
            .await
    }

    /// Usage in the upstream's shape for a stream that never reported its own.
    fn counted(&self, completion_tokens: u64) -> Value {
        json!({"prompt_tokens": self.prompt_tokens.unwrap_or(0), "completion_tokens": completion_tokens})
    }
}

/// Asks the upstream (`path`: `/chat/completions` or `/completions`) and wraps its
/// answer in owl's shape.
pub(crate) async fn forward(
    up: &Upstream,
    path: &str,
    v: &Value,
    timeout: Duration,
    mut charge: Charge,
) -> Result<Response, UpstreamError> {
    let mut req = v.clone();
    match &up.model {
        Some(m) => req["model"] = Value::String(m.clone()),
        None => {
            if let Some(o) = req.as_object_mut() {
                o.remove("model");
            }
        }
    }
    let streaming = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    // A stream is only charged if the upstream says what it used: always ask for the
    // usage chunk, and pass it on only to a client that asked for it too.
    let client_usage = req["stream_options"]["include_usage"]
        .as_bool()
        .unwrap_or(false);
    if streaming {
        req["stream_options"] = json!({"include_usage": true});
    }
    let bytes = serde_json::to_vec(&req).unwrap_or_default();
    let mut body = upstream::post(up, path, &bytes, timeout).await?;
    let id = crate::generate::new_upstream_id(path == "/chat/completions");
    let fallback_model = up.model.clone().unwrap_or_else(|| up.name.clone());
    if !streaming {
        let raw = body.read_all().await.map_err(UpstreamError::Retryable)?;
        let mut answer: Value = serde_json::from_slice(&raw).map_err(|e| {
            UpstreamError::Retryable(format!(
                "upstream {} sent a body that is not JSON: {e}",
                up.name
            ))
        })?;
        rebrand(&mut answer, &id);
        let model = answer["model"]
            .as_str()
            .map_or(fallback_model, str::to_string);
        let rec = charge.charge(&model, &answer["usage"]).await;
        if let Some(job) = &charge.capture {
            let choice = &answer["choices"][0];
            let message = match &choice["message"] {
                m if m.is_object() => Some(m.clone()),
                _ => choice["text"].as_str().map(|t| json!({"content": t})),
            };
            if let Some(m) = message.filter(|_| choice["finish_reason"].is_string()) {
                job.push(v, &m, &id, &model, &answer["usage"]);
            }
        }
        if answer["usage"].is_object() {
            answer["usage"]["owl"] = cost::usage_owl(&rec);
        }
        return Ok(axum::Json(answer).into_response());
    }
    let relay = Relay {
        body,
        id,
        buf: Vec::new(),
        queue: VecDeque::new(),
        done: false,
        name: up.name.clone(),
        model: fallback_model,
        client_usage,
        capture: charge.capture.take().map(|job| (job, v.clone())),
        assembled: Assembler::default(),
        usage: Value::Null,
        relayed: 0,
        charge: Some(charge),
    };
    let events = stream::unfold(relay, |mut r| async move {
        loop {
            if let Some(data) = r.queue.pop_front() {
                return Some((Ok::<_, Infallible>(SseEvent::default().data(data)), r));
            }
            if r.done {
                return None;
            }
            r.pump().await;
        }
    });
    Ok(Sse::new(events).into_response())
}

/// Gives an upstream answer (or chunk) owl's id and fingerprint.
fn rebrand(answer: &mut Value, id: &str) {
    if let Some(o) = answer.as_object_mut() {
        o.insert("id".into(), Value::String(id.to_string()));
        o.insert(
            "system_fingerprint".into(),
            Value::String(concat!("owl-", env!("CARGO_PKG_VERSION")).into()),
        );
    }
}

/// Re-chunks an upstream SSE stream as owl's. Dropping it (the client went
/// away) closes the upstream connection, which cancels the upstream request.
struct Relay {
    body: Body,
    id: String,
    buf: Vec<u8>,
    queue: VecDeque<String>,
    done: bool,
    name: String,
    /// The model named in the chunks (else the upstream's model= or name).
    model: String,
    /// The client asked for the usage chunk.
    client_usage: bool,
    /// Taken when the usage chunk is charged.
    charge: Option<Charge>,
    /// The capture job and the client's request, and the answer assembled so far.
    capture: Option<(CaptureJob, Value)>,
    assembled: Assembler,
    usage: Value,
    /// Content, tool-call and text deltas relayed so far.
    relayed: u64,
}

impl Drop for Relay {
    fn drop(&mut self) {
        // The client went away before the usage chunk: charge what was relayed.
        if let Some((charge, model, usage)) = self.uncharged(true) {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { charge.charge(&model, &usage).await });
            }
        }
    }
}

impl Relay {
    fn end(&mut self) {
        self.queue.push_back("[DONE]".into());
        self.done = true;
    }

    /// The charge of a stream that ended without a usage chunk (`cut`: before its
    /// [DONE]), with the usage counted from what was relayed; None once charged.
    fn uncharged(&mut self, cut: bool) -> Option<(Charge, String, Value)> {
        let mut charge = self.charge.take()?;
        charge.routing.cut = cut;
        let usage = charge.counted(self.relayed);
        Some((charge, self.model.clone(), usage))
    }

    async fn charge_relayed(&mut self, cut: bool) {
        if let Some((charge, model, usage)) = self.uncharged(cut) {
            charge.charge(&model, &usage).await;
        }
    }

    /// Counts the token deltas of one chunk.
    fn count(&mut self, chunk: &Value) {
        let nonempty = |v: &Value| v.as_str().is_some_and(|t| !t.is_empty());
        for c in chunk["choices"].as_array().into_iter().flatten() {
            let d = &c["delta"];
            if nonempty(&d["content"]) || d["tool_calls"].is_array() || nonempty(&c["text"]) {
                self.relayed += 1;
            }
        }
    }

    async fn pump(&mut self) {
        let piece = match self.body.next().await {
            Ok(Some(p)) => p,
            Ok(None) => {
                // A stream cut before [DONE] still ends as owl's streams do.
                self.charge_relayed(true).await;
                self.end();
                return;
            }
            Err(e) => {
                self.charge_relayed(true).await;
                let err = ApiError::internal(format!("upstream {} broke off: {e}", self.name));
                self.queue.push_back(err.body().to_string());
                self.end();
                return;
            }
        };
        self.buf.extend_from_slice(&piece);
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line);
            let Some(data) = line.trim_end().strip_prefix("data:").map(str::trim) else {
                continue;
            };
            if data == "[DONE]" {
                // Only an answer that ran to its finish_reason and [DONE] is captured.
                if let Some((job, req)) = self.capture.take().filter(|_| self.assembled.finished) {
                    let msg = self.assembled.message();
                    job.push(&req, &msg, &self.id, &self.model, &self.usage);
                }
                // An upstream that never sends usage is charged for what it streamed.
                self.charge_relayed(false).await;
                self.end();
                return;
            }
            match serde_json::from_str::<Value>(data) {
                Ok(mut chunk) => {
                    rebrand(&mut chunk, &self.id);
                    if let Some(m) = chunk["model"].as_str() {
                        self.model = m.to_string();
                    }
                    if self.capture.is_some() {
                        self.assembled.add(&chunk);
                    }
                    self.count(&chunk);
                    if chunk["usage"].is_object() {
                        self.usage = chunk["usage"].clone();
                        if let Some(c) = self.charge.take() {
                            let rec = c.charge(&self.model, &chunk["usage"]).await;
                            chunk["usage"]["owl"] = cost::usage_owl(&rec);
                        }
                        if !self.client_usage {
                            let empty = chunk["choices"].as_array().is_none_or(|c| c.is_empty());
                            if empty {
                                continue;
                            }
                            chunk["usage"] = Value::Null;
                        }
                    } else if !self.client_usage {
                        if let Some(o) = chunk.as_object_mut() {
                            o.remove("usage");
                        }
                    }
                    self.queue.push_back(chunk.to_string());
                }
                Err(_) => self.queue.push_back(data.to_string()),
            }
        }
    }
}
