//! `/v1/chat/completions` and `/v1/completions`: validate, submit to the
//! engine, and answer either as one JSON object or as SSE chunks ending in
//! `data: [DONE]`. A streaming response owns the engine's request handle, so a
//! client that disconnects drops the stream and with it cancels the request.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream;
use owl_engine::service::{
    Event, FinishReason, Prompt, Request, RequestHandle, Timings, TokenLogprob, Usage,
};
use serde_json::{json, Value};

use crate::app::{unix_now, AppState, JsonBody};
use crate::cost::{self, Client, CostBook};
use crate::error::ApiError;
use crate::openai::{parse_body, ChatParams, CompletionParams, Generation, GenerationParams};
use crate::service::LlmService;
use owl_engine::tools::{Choice, Family};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Chat,
    Text,
}

pub async fn chat_completions(
    State(st): State<AppState>,
    client: Client,
    JsonBody(v): JsonBody,
) -> Result<Response, ApiError> {
    let gen = parse_body::<GenerationParams>(&v)?.validate()?;
    let (messages, logprobs) = parse_body::<ChatParams>(&v)?.validate()?;
    // With tools, or a conversation holding calls and results, the template sees the
    // messages as OpenAI sent them (`tool_calls`, `tool_call_id`).
    let has_calls = v["messages"].as_array().is_some_and(|ms| {
        ms.iter()
            .any(|m| m["role"] == "tool" || m.get("tool_calls").is_some_and(|c| !c.is_null()))
    });
    let prompt = if gen.tools.is_some() || has_calls {
        let msgs = crate::tools::messages(&v["messages"], &messages);
        let tools = gen
            .tools
            .as_ref()
            .map(|t| t.tools.as_slice())
            .unwrap_or(&[]);
        let text = st
            .engine()?
            .apply_chat_template_tools(&msgs, tools)
            .map_err(|e| {
                ApiError::invalid(
                    "messages",
                    format!(
                        "the chat template could not render the conversation with `tools`: {e}"
                    ),
                )
            })?;
        Prompt::Text(text)
    } else {
        Prompt::Chat(messages)
    };
    run(st, client, Kind::Chat, prompt, gen, logprobs).await
}

pub async fn completions(
    State(st): State<AppState>,
    client: Client,
    JsonBody(v): JsonBody,
) -> Result<Response, ApiError> {
    let gen = parse_body::<GenerationParams>(&v)?.validate()?;
    let (prompt, logprobs) = parse_body::<CompletionParams>(&v)?.validate()?;
    run(st, client, Kind::Text, prompt, gen, logprobs).await
}

/// A fresh chat completion id (`chatcmpl-…`), for answers relayed from an upstream.
pub(crate) fn new_chat_id() -> String {
    new_id(Kind::Chat)
}

fn new_id(kind: Kind) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let prefix = if kind == Kind::Chat {
        "chatcmpl"
    } else {
        "cmpl"
    };
    format!("{prefix}-{:x}{n:04x}", nanos & 0xffff_ffff_ffff)
}

fn finish_str(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Length => "length",
        // A cancelled request has no client left to read this.
        FinishReason::Stop | FinishReason::Cancelled => "stop",
    }
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    })
}

fn timings_json(t: &Timings) -> Value {
    json!({
        "ttft_ms": t.ttft_ms, "prompt_ms": t.prompt_ms, "gen_ms": t.gen_ms,
        "prompt_per_second": t.prompt_tps, "predicted_per_second": t.gen_tps,
    })
}

/// What a response needs besides the events.
struct Ctx {
    kind: Kind,
    engine: Arc<dyn LlmService>,
    id: String,
    created: u64,
    /// The loaded model: what the ledger records.
    model: String,
    /// The name the client asked for (or the loaded model's): what answers carry.
    echo_model: String,
    /// Where the request is charged (cost.rs), and to whom.
    cost: Arc<CostBook>,
    client: String,
    /// With tools: how the model writes calls, and what was asked of it.
    tools: Option<(Family, Choice)>,
}

impl Ctx {
    fn piece(&self, id: u32) -> String {
        self.engine.detokenize(&[id])
    }

    /// One token's logprobs in chat's shape.
    fn chat_logprob(&self, id: u32, lp: &TokenLogprob) -> Value {
        let token = self.piece(id);
        json!({
            "token": token, "logprob": lp.logprob, "bytes": token.as_bytes(),
            "top_logprobs": lp.top.iter().map(|t| json!({
                "token": t.text, "logprob": t.logprob, "bytes": t.text.as_bytes(),
            })).collect::<Vec<_>>(),
        })
    }

    /// Logprobs of several tokens in completions' (legacy) shape.
    fn text_logprobs(&self, items: &[(u32, TokenLogprob)], mut offset: usize) -> Value {
        let (mut tokens, mut lps, mut tops, mut offsets) = (vec![], vec![], vec![], vec![]);
        for (id, lp) in items {
            let piece = self.piece(*id);
            offsets.push(offset);
            offset += piece.len();
            tokens.push(piece);
            lps.push(lp.logprob);
            let top: serde_json::Map<String, Value> = lp
                .top
                .iter()
                .map(|t| (t.text.clone(), json!(t.logprob)))
                .collect();
            tops.push(Value::Object(top));
        }
        json!({"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets})
    }

    fn logprobs(&self, items: &[(u32, TokenLogprob)], offset: usize) -> Value {
        match self.kind {
            Kind::Chat => {
                json!({"content": items.iter().map(|(id, lp)| self.chat_logprob(*id, lp)).collect::<Vec<_>>()})
            }
            Kind::Text => self.text_logprobs(items, offset),
        }
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Text, _) => "text_completion",
        }
    }

    fn envelope(&self, chunk: bool, choices: Value) -> Value {
        json!({
            "id": self.id, "object": self.object(chunk), "created": self.created, "model": self.echo_model,
            "system_fingerprint": concat!("owl-", env!("CARGO_PKG_VERSION")), "choices": choices,
        })
    }
}

async fn run(
    st: AppState,
    client: Client,
    kind: Kind,
    prompt: Prompt,
    gen: Generation,
    logprobs: Option<usize>,
) -> Result<Response, ApiError> {
    let engine = st.engine()?;
    st.check_model(gen.model.as_deref())?;
    let n_ctx = engine.info().n_ctx;
    if let Some(m) = gen.max_tokens.filter(|&m| m > n_ctx) {
        let field = gen.max_tokens_field;
        return Err(ApiError::invalid(
            field,
            format!("`{field}` is {m}, over the context of {n_ctx} tokens"),
        ));
    }
    let tools = gen
        .tools
        .as_ref()
        .map(|t| (engine.tool_family(), t.choice.clone()));
    let constraint = match (&gen.tools, &tools) {
        (Some(t), Some((family, _))) => Some(owl_engine::tools::constraint(
            *family, &t.tools, &t.choice, t.parallel,
        )),
        _ => gen.constraint.clone(),
    };
    let req = Request {
        prompt,
        sampling: gen.sampling.clone(),
        max_tokens: gen.max_tokens,
        stop: gen.stop.clone(),
        logprobs,
        stop_at_eog: !gen.ignore_eos,
        constraint,
    };
    // Tokenizing and templating a long prompt is CPU work: keep it off the async workers.
    let submitter = engine.clone();
    let submitted = tokio::task::spawn_blocking(move || submitter.submit(req))
        .await
        .map_err(|e| ApiError::internal(format!("submit failed: {e}")))?;
    let handle = submitted.map_err(|e| {
        let mut err = ApiError::from(e);
        if kind == Kind::Text && err.param.as_deref() == Some("messages") {
            err.param = Some("prompt".into());
        }
        if tools.is_some() && err.param.is_none() && err.status == 400 {
            err.param = Some("tools".into());
        }
        err
    })?;
    let ctx = Ctx {
        kind,
        engine: engine.clone(),
        id: new_id(kind),
        created: unix_now(),
        model: engine.info().name.clone(),
        echo_model: st.echo_model(gen.model.as_deref()),
        cost: st.cost(),
        client: client.0,
        tools,
    };
    if gen.stream {
        Ok(stream_response(
            ctx,
            handle,
            gen.include_usage,
            logprobs.is_some(),
        ))
    } else {
        collect(ctx, handle, logprobs.is_some()).await
    }
}

/// Waits for the whole generation and answers with one object. If the client
/// goes away, axum drops this future and the handle with it (cancelling).
async fn collect(
    ctx: Ctx,
    handle: RequestHandle,
    want_logprobs: bool,
) -> Result<Response, ApiError> {
    let mut handle = ctx.cost.guard(handle, &ctx.model, &ctx.client);
    let mut text = String::new();
    let mut lps: Vec<(u32, TokenLogprob)> = Vec::new();
    let (finish, usage, timings) = loop {
        match handle.events.recv().await {
            Some(Event::Started { .. }) => {}
            Some(Event::Token {
                id,
                text: t,
                logprob,
            }) => {
                text.push_str(&t);
                if let Some(lp) = logprob {
                    lps.push((id, lp));
                }
            }
            Some(Event::Done {
                finish_reason,
                usage,
                timings,
            }) => break (finish_reason, usage, timings),
            Some(Event::Error(e)) => {
                return Err(ApiError::internal(format!("generation failed: {e}")))
            }
            None => return Err(ApiError::internal("the engine dropped the request")),
        }
    };
    let logprobs = if want_logprobs {
        ctx.logprobs(&lps, 0)
    } else {
        Value::Null
    };
    let choice = match (ctx.kind, &ctx.tools) {
        (Kind::Chat, Some((family, _))) => {
            let parsed = owl_engine::tools::parse(*family, &text);
            if parsed.calls.is_empty() {
                // Call text that does not parse stays the answer's content.
                json!({
                    "index": 0, "message": {"role": "assistant", "content": parsed.content},
                    "logprobs": logprobs, "finish_reason": finish_str(finish),
                })
            } else {
                let calls: Vec<Value> = parsed
                    .calls
                    .iter()
                    .map(|c| crate::tools::call_json(c, &crate::tools::call_id()))
                    .collect();
                let content = Some(parsed.content).filter(|c| !c.is_empty());
                json!({
                    "index": 0, "message": {"role": "assistant", "content": content, "tool_calls": calls},
                    "logprobs": logprobs, "finish_reason": "tool_calls",
                })
            }
        }
        (Kind::Chat, None) => json!({
            "index": 0, "message": {"role": "assistant", "content": text},
            "logprobs": logprobs, "finish_reason": finish_str(finish),
        }),
        (Kind::Text, _) => {
            json!({"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish_str(finish)})
        }
    };
    let mut body = ctx.envelope(false, json!([choice]));
    let charged = ctx
        .cost
        .charge(&ctx.model, &ctx.client, &usage, &timings)
        .await;
    body["usage"] = usage_json(&usage);
    body["usage"]["owl"] = cost::usage_owl(&charged);
    body["timings"] = timings_json(&timings);
    let mut resp = Json(body).into_response();
    for (name, v) in [
        ("x-owl-cost-usd", charged.cost_usd),
        ("x-owl-savings-usd", charged.savings_usd),
    ] {
        if let Ok(v) = axum::http::HeaderValue::from_str(&v.to_string()) {
            resp.headers_mut().insert(name, v);
        }
    }
    Ok(resp)
}

/// State of one SSE response: the request handle and the chunks not sent yet.
struct Streamer {
    ctx: Ctx,
    handle: cost::Guarded,
    include_usage: bool,
    want_logprobs: bool,
    /// Bytes of text sent so far (completions' text_offset).
    sent: usize,
    queue: VecDeque<String>,
    finished: bool,
    /// With tools: the answer so far, and the part not yet sent as content.
    all: String,
    pending: String,
    /// The trigger was seen (or content is not streamed): the rest waits for the end.
    holding: bool,
}

impl Streamer {
    fn chunk(&self, choice: Value) -> String {
        let mut c = self.ctx.envelope(true, json!([choice]));
        if self.include_usage {
            c["usage"] = Value::Null;
        }
        c.to_string()
    }

    fn delta(&self, text: &str, logprobs: Value, finish: Option<&str>) -> Value {
        match self.ctx.kind {
            Kind::Chat => {
                let delta = if finish.is_some() {
                    json!({})
                } else {
                    json!({"content": text})
                };
                json!({"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish})
            }
            Kind::Text => {
                json!({"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish})
            }
        }
    }

    fn content_chunk(&mut self, text: &str) {
        if !text.is_empty() {
            let c = self.chunk(self.delta(text, Value::Null, None));
            self.queue.push_back(c);
        }
    }

    /// A token's text with tools: content until the trigger (less what could
    /// be its start), then held for the end.
    fn tool_text(&mut self, family: Family, text: &str) {
        self.all.push_str(text);
        if self.holding {
            return;
        }
        self.pending.push_str(text);
        let openers = family.call_openers();
        let n = crate::tools::releasable_any(&self.pending, openers);
        if openers.iter().any(|t| self.pending[n..].starts_with(t)) {
            self.holding = true;
        }
        let out: String = self.pending.drain(..n).collect();
        self.content_chunk(&out);
    }

    /// The end of an answer with tools: its calls, or the held text as content.
    /// Returns the finish reason.
    fn tool_end(&mut self, family: Family, streamed: bool, finish: FinishReason) -> &'static str {
        let parsed = owl_engine::tools::parse(family, &self.all);
        if parsed.calls.is_empty() {
            let rest = if streamed {
                std::mem::take(&mut self.pending)
            } else {
                parsed.content
            };
            self.content_chunk(&rest);
            return finish_str(finish);
        }
        if !streamed {
            self.content_chunk(&parsed.content);
        }
        for (i, call) in parsed.calls.iter().enumerate() {
            let id = crate::tools::call_id();
            let first = json!({"index": i, "id": id, "type": "function", "function": {"name": call.name, "arguments": ""}});
            let args = json!({"index": i, "function": {"arguments": call.arguments}});
            for d in [first, args] {
                let c = self.chunk(json!({"index": 0, "delta": {"tool_calls": [d]}, "logprobs": null, "finish_reason": null}));
                self.queue.push_back(c);
            }
        }
        "tool_calls"
    }

    /// Waits for the next engine event and queues the chunks it makes.
    async fn pump(&mut self) {
        match self.handle.events.recv().await {
            Some(Event::Started { .. }) => {}
            Some(Event::Token { text, .. })
                if self.ctx.tools.is_some() && self.ctx.kind == Kind::Chat =>
            {
                let family = self
                    .ctx
                    .tools
                    .as_ref()
                    .map(|t| t.0)
                    .unwrap_or(Family::Generic);
                self.tool_text(family, &text);
            }
            Some(Event::Token { id, text, logprob }) => {
                let lp = match (&logprob, self.want_logprobs) {
                    (Some(lp), true) => self.ctx.logprobs(&[(id, lp.clone())], self.sent),
                    _ => Value::Null,
                };
                // Text held back (a partial character or possible stop string) makes no chunk.
                if !text.is_empty() || !lp.is_null() {
                    let c = self.chunk(self.delta(&text, lp, None));
                    self.sent += text.len();
                    self.queue.push_back(c);
                }
            }
            Some(Event::Done {
                finish_reason,
                usage,
                timings,
            }) => {
                let charged = self
                    .ctx
                    .cost
                    .charge(&self.ctx.model, &self.ctx.client, &usage, &timings)
                    .await;
                let finish = match self.ctx.tools.clone() {
                    Some((family, choice)) if self.ctx.kind == Kind::Chat => {
                        let streamed = crate::tools::streams_content(family, &choice);
                        self.tool_end(family, streamed, finish_reason)
                    }
                    _ => finish_str(finish_reason),
                };
                let c = self.chunk(self.delta("", Value::Null, Some(finish)));
                self.queue.push_back(c);
                if self.include_usage {
                    let mut u = self.ctx.envelope(true, json!([]));
                    u["usage"] = usage_json(&usage);
                    u["usage"]["owl"] = cost::usage_owl(&charged);
                    // llama-server's timings, also in a stream (the Ollama API's durations come from them).
                    u["timings"] = timings_json(&timings);
                    self.queue.push_back(u.to_string());
                }
                self.queue.push_back("[DONE]".into());
                self.finished = true;
            }
            Some(Event::Error(e)) => {
                self.queue.push_back(
                    ApiError::internal(format!("generation failed: {e}"))
                        .body()
                        .to_string(),
                );
                self.queue.push_back("[DONE]".into());
                self.finished = true;
            }
            None => {
                self.queue.push_back(
                    ApiError::internal("the engine dropped the request")
                        .body()
                        .to_string(),
                );
                self.queue.push_back("[DONE]".into());
                self.finished = true;
            }
        }
    }
}

fn stream_response(
    ctx: Ctx,
    handle: RequestHandle,
    include_usage: bool,
    want_logprobs: bool,
) -> Response {
    let handle = ctx.cost.guard(handle, &ctx.model, &ctx.client);
    let mut s = Streamer {
        ctx,
        handle,
        include_usage,
        want_logprobs,
        sent: 0,
        queue: VecDeque::new(),
        finished: false,
        all: String::new(),
        pending: String::new(),
        holding: false,
    };
    if let Some((family, choice)) = &s.ctx.tools {
        s.holding = !crate::tools::streams_content(*family, choice);
    }
    if s.ctx.kind == Kind::Chat {
        // OpenAI opens a chat stream with the role.
        let first = s.chunk(json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}));
        s.queue.push_back(first);
    }
    let events = stream::unfold(s, |mut s| async move {
        loop {
            if let Some(data) = s.queue.pop_front() {
                return Some((Ok::<_, Infallible>(SseEvent::default().data(data)), s));
            }
            if s.finished {
                return None;
            }
            s.pump().await;
        }
    });
    Sse::new(events).into_response()
}
