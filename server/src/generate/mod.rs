//! `/v1/chat/completions` and `/v1/completions`: validate, submit to the
//! engine, and answer either as one JSON object or as SSE chunks ending in
//! `data: [DONE]`. A streaming response owns the engine's request handle, so a
//! client that disconnects drops the stream and with it cancels the request.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use axum::Json;
use owl_engine::service::{Event, FinishReason, Prompt, Request, Timings, TokenLogprob, Usage};
use owl_ledger::{Record, Routing};

use crate::route::capture::LocalCapture;
use serde_json::{json, Value};

use crate::app::{unix_now, AppState};
use crate::cost::{self, Client, CostBook};
use crate::deadline::Deadline;
use crate::error::ApiError;
use crate::openai::{parse_body, ChatParams, CompletionParams, Generation, GenerationParams};
use crate::service::LlmService;
use owl_engine::tools::{Choice, Family};

pub(crate) mod native;
mod stream;
use stream::stream_response;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Chat,
    Text,
    /// llama-server's native `/completion` (native.rs).
    Native,
}

/// What the router adds to a local generation: the route recorded with it and
/// how many of its first tokens the confidence probe reads the logprobs of.
#[derive(Clone, Debug, Default)]
pub(crate) struct LocalOpts {
    pub routing: Routing,
    pub probe: Option<usize>,
    /// `--capture-all`: the answer is captured when complete.
    pub capture: Option<LocalCapture>,
}

/// Submits a chat request (`/v1/chat/completions`'s body) to the local engine.
pub(crate) async fn start_chat(
    st: AppState,
    client: Client,
    v: &Value,
    opts: LocalOpts,
) -> Result<Started, ApiError> {
    let gen = parse_body::<GenerationParams>(v)?.validate()?;
    let (messages, logprobs) = parse_body::<ChatParams>(v)?.validate()?;
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
    submit(st, client, Kind::Chat, prompt, gen, logprobs, opts).await
}

/// Submits a completions request (`/v1/completions`'s body) to the local engine.
pub(crate) async fn start_text(
    st: AppState,
    client: Client,
    v: &Value,
    opts: LocalOpts,
) -> Result<Started, ApiError> {
    let gen = parse_body::<GenerationParams>(v)?.validate()?;
    let (prompt, logprobs) = parse_body::<CompletionParams>(v)?.validate()?;
    submit(st, client, Kind::Text, prompt, gen, logprobs, opts).await
}

/// Submits llama-server's native `/completion` body (native.rs) to the local engine.
pub(crate) async fn start_native(st: AppState, client: Client, v: &Value) -> Result<Started, ApiError> {
    let (body, mut opts) = native::to_openai(v)?;
    let mut gen = parse_body::<GenerationParams>(&body)?.validate()?;
    gen.sampling.post_sampling_probs = opts.post_sampling;
    let (prompt, logprobs) = parse_body::<CompletionParams>(&body)?.validate()?;
    opts.prompt = match &prompt {
        Prompt::Text(t) => t.clone(),
        Prompt::Tokens(ids) => st.engine()?.detokenize(ids),
        Prompt::Chat(_) => String::new(),
    };
    let mut started = submit(st, client, Kind::Native, prompt, gen, logprobs, LocalOpts::default()).await?;
    started.ctx.native = Some(opts);
    Ok(started)
}

/// A fresh completion id (`chatcmpl-…`, or `cmpl-…` for `/v1/completions`), for
/// answers relayed from an upstream.
pub(crate) fn new_upstream_id(chat: bool) -> String {
    new_id(if chat { Kind::Chat } else { Kind::Text })
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

/// The finish reason of an answer that made calls: `length` when max_tokens cut it
/// (a call may be cut too, as OpenAI reports it), else `tool_calls`.
fn calls_finish_str(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Length => "length",
        FinishReason::Stop | FinishReason::Cancelled => "tool_calls",
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
    /// The route recorded with the request's ledger record.
    routing: Routing,
    capture: Option<LocalCapture>,
    /// The request's deadline, when one applies (deadline.rs).
    deadline: Option<Deadline>,
    /// For llama-server's native `/completion`: what its answer needs.
    native: Option<native::NativeOpts>,
}

impl Ctx {
    /// Charges the request (cost.rs) to its client; the record is fsynced before this returns.
    async fn charge(&self, usage: &Usage, timings: &Timings) -> Record {
        self.cost
            .charge(&self.model, &self.client, usage, timings, &self.routing)
            .await
    }

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
            Kind::Text | Kind::Native => self.text_logprobs(items, offset),
        }
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Text | Kind::Native, _) => "text_completion",
        }
    }

    fn envelope(&self, chunk: bool, choices: Value) -> Value {
        json!({
            "id": self.id, "object": self.object(chunk), "created": self.created, "model": self.echo_model,
            "system_fingerprint": concat!("owl-", env!("CARGO_PKG_VERSION")), "choices": choices,
        })
    }
}

/// Submits a generation: one engine sequence per choice. With `n` > 1 the first choice
/// runs alone until its prompt is prefilled (its first token or its end); its prompt's
/// pages are then in the prefix cache (engine kv.rs `share`), and the other choices,
/// submitted only now with seeds seed + 1 .. seed + n - 1, reuse them. Choice i with
/// seed s is thus the same answer as a single request with seed s + i.
async fn submit(
    st: AppState,
    client: Client,
    kind: Kind,
    prompt: Prompt,
    mut gen: Generation,
    logprobs: Option<usize>,
    opts: LocalOpts,
) -> Result<Started, ApiError> {
    if gen.sampling.seed.is_none() {
        gen.sampling.seed = st.default_seed();
    }
    let n = gen.n;
    let id = new_id(kind);
    let more_opts = LocalOpts { routing: opts.routing.clone(), probe: None, capture: None };
    let mut first = submit_one(st.clone(), client.clone(), kind, prompt.clone(), &gen, logprobs, opts, id.clone()).await?;
    if n == 1 {
        return Ok(first);
    }
    first.wait_prefilled().await;
    for i in 1..n {
        let mut g = gen.clone();
        g.sampling.seed = gen.sampling.seed.map(|s| s.wrapping_add(i as u64));
        let mut m = submit_one(st.clone(), client.clone(), kind, prompt.clone(), &g, logprobs, more_opts.clone(), id.clone()).await?;
        m.handle.share_prompt();
        m.ctx.created = first.ctx.created;
        first.more.push(m);
    }
    Ok(first)
}

#[allow(clippy::too_many_arguments)]
async fn submit_one(
    st: AppState,
    client: Client,
    kind: Kind,
    prompt: Prompt,
    gen: &Generation,
    logprobs: Option<usize>,
    opts: LocalOpts,
    id: String,
) -> Result<Started, ApiError> {
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
        // A request without a limit gets the server's --max-tokens, if set.
        max_tokens: gen.max_tokens.or(st.default_max_tokens()),
        stop: gen.stop.clone(),
        // The probe reads the first tokens' logprobs; the client gets them only if it
        // asked, and only then are they computed past the probe.
        logprobs: if opts.probe.is_some() {
            Some(logprobs.unwrap_or(0))
        } else {
            logprobs
        },
        logprobs_for: opts.probe.filter(|_| logprobs.is_none()),
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
        if kind != Kind::Chat && err.param.as_deref() == Some("messages") {
            err.param = Some("prompt".into());
        }
        if tools.is_some() && err.param.is_none() && err.status == 400 {
            err.param = Some("tools".into());
        }
        err
    })?;
    let deadline = crate::deadline::effective(st.request_timeout(), gen.timeout)
        .map(|limit| Deadline::start(limit, handle.cancel.clone()));
    let ctx = Ctx {
        deadline,
        kind,
        engine: engine.clone(),
        id,
        created: unix_now(),
        model: engine.info().name.clone(),
        echo_model: st.echo_model(gen.model.as_deref()),
        cost: st.cost(),
        client: client.0,
        tools,
        routing: opts.routing,
        capture: opts.capture,
        native: None,
    };
    let handle = ctx
        .cost
        .guard(handle, &ctx.model, &ctx.client, &ctx.routing);
    Ok(Started {
        ctx,
        handle,
        stream: gen.stream,
        include_usage: gen.include_usage,
        want_logprobs: logprobs.is_some(),
        early: VecDeque::new(),
        more: Vec::new(),
        stream_probe: None,
    })
}

/// A local generation submitted but not answered yet: the router's confidence
/// probe reads its first tokens ([`Started::probe`]) before deciding to answer
/// with it ([`Started::respond`], the same engine request going on) or to drop
/// it ([`Started::drop_draft`]). Dropped, it cancels the request (and charges it).
pub(crate) struct Started {
    ctx: Ctx,
    handle: cost::Guarded,
    stream: bool,
    include_usage: bool,
    want_logprobs: bool,
    /// Events the probe read, replayed before the engine's next ones.
    early: VecDeque<Event>,
    /// With `n` > 1: choices 1 .. n (this one is choice 0).
    more: Vec<Started>,
    /// A probe that cannot escalate (`--route-threshold 0`): the stream scores its
    /// first this-many tokens as they pass and records the score ([`Started::score_while_streaming`]).
    stream_probe: Option<usize>,
}

/// What the probe saw of a generation's start.
#[derive(Debug, Default)]
pub(crate) struct Draft {
    /// The chosen tokens' logprobs (natural log), in order.
    pub logprobs: Vec<f32>,
    pub text: String,
    /// The generation ended (or failed) within the probe.
    pub ended: bool,
}

async fn next_event(early: &mut VecDeque<Event>, handle: &mut cost::Guarded) -> Option<Event> {
    match early.pop_front() {
        Some(ev) => Some(ev),
        None => handle.recv().await,
    }
}

impl Started {
    /// Waits until the prompt is prefilled (a first token, or the end), keeping the events.
    async fn wait_prefilled(&mut self) {
        loop {
            let Some(ev) = self.handle.recv().await else { return };
            let done = !matches!(ev, Event::Started { .. });
            self.early.push_back(ev);
            if done {
                return;
            }
        }
    }

    /// Reads (and keeps, to be replayed) the events of the first `n` generated
    /// tokens, or all of them if the generation ends sooner.
    pub async fn probe(&mut self, n: usize) -> Draft {
        let mut d = Draft::default();
        while d.logprobs.len() < n {
            let Some(ev) = self.handle.recv().await else {
                d.ended = true;
                break;
            };
            match &ev {
                Event::Token { text, logprob, .. } => {
                    d.text.push_str(text);
                    if let Some(lp) = logprob {
                        d.logprobs.push(lp.logprob);
                    }
                }
                Event::Done { .. } | Event::Error(_) => d.ended = true,
                Event::Started { .. } => {}
            }
            self.early.push_back(ev);
            if d.ended {
                break;
            }
        }
        d
    }

    /// The probe of a route that cannot escalate: nothing is held back. A stream sends
    /// the first `n` tokens as they come and scores them as they pass, the score going
    /// into the ledger record (and the capture) at the `n`th token or the end, whichever
    /// is first; an answer that is not streamed is probed as usual first.
    pub async fn score_while_streaming(mut self, n: usize) -> Result<(Response, Option<f64>), ApiError> {
        if self.stream {
            self.stream_probe = Some(n);
            return Ok((self.respond().await?, None));
        }
        let draft = self.probe(n).await;
        let score = crate::route::probe::score(&draft.logprobs);
        let mut r = self.ctx.routing.clone();
        r.probe_score = Some(score);
        self.set_routing(r);
        Ok((self.respond().await?, Some(score)))
    }

    /// Sets the route recorded with the request (after the probe decided it).
    pub fn set_routing(&mut self, r: Routing) {
        if let Some(c) = &mut self.ctx.capture {
            c.meta.reason = r.reason.clone().unwrap_or_default();
            c.meta.probe_score = r.probe_score;
        }
        self.handle.set_routing(r.clone());
        self.ctx.routing = r;
    }

    /// Answers with this generation: one JSON object, or SSE chunks.
    pub async fn respond(self) -> Result<Response, ApiError> {
        if self.stream {
            Ok(stream_response(self))
        } else {
            collect(self).await
        }
    }

    /// Cancels the generation, uncharged: returns the busy time it took, for the
    /// record of the answer that replaces it.
    pub async fn drop_draft(self) -> Option<Timings> {
        for m in self.more {
            m.handle.disarm().cancel.cancel();
        }
        let mut early = self.early;
        let mut h = self.handle.disarm();
        h.cancel.cancel();
        let wait = async {
            loop {
                let ev = match early.pop_front() {
                    Some(ev) => Some(ev),
                    None => h.events.recv().await,
                };
                match ev {
                    Some(Event::Done { timings, .. }) => return Some(timings),
                    Some(Event::Error(_)) | None => return None,
                    _ => {}
                }
            }
        };
        // The engine stops a cancelled request within a step.
        tokio::time::timeout(std::time::Duration::from_secs(10), wait)
            .await
            .ok()
            .flatten()
    }
}

/// One choice's whole generation, as the engine gave it.
struct Gathered {
    text: String,
    lps: Vec<(u32, TokenLogprob)>,
    ids: Vec<u32>,
    finish: FinishReason,
    usage: Usage,
    timings: Timings,
    stop_word: Option<String>,
    /// Its ledger record (charged once, when its Done came).
    charged: Record,
}

/// Reads one choice's events to its end (a passed deadline is charged and answered 408).
async fn gather(
    ctx: &Ctx,
    handle: &mut cost::Guarded,
    early: &mut VecDeque<Event>,
) -> Result<Gathered, ApiError> {
    let mut text = String::new();
    let mut lps: Vec<(u32, TokenLogprob)> = Vec::new();
    let mut ids: Vec<u32> = Vec::new();
    loop {
        match next_event(early, handle).await {
            Some(Event::Started { .. }) => {}
            Some(Event::Token {
                id,
                text: t,
                logprob,
            }) => {
                text.push_str(&t);
                if id != owl_engine::service::TEXT_ONLY {
                    ids.push(id);
                }
                if let Some(lp) = logprob {
                    lps.push((id, lp));
                }
            }
            Some(Event::Done {
                finish_reason,
                usage,
                timings,
                stop_word,
            }) => {
                // One charge for every way an answer ends with a Done.
                let charged = ctx.charge(&usage, &timings).await;
                if let Some(e) = crate::deadline::passed(&ctx.deadline) {
                    return Err(e);
                }
                return Ok(Gathered { text, lps, ids, finish: finish_reason, usage, timings, stop_word, charged });
            }
            Some(Event::Error(e)) => {
                return Err(ApiError::internal(format!("generation failed: {e}")))
            }
            // A request cancelled while it waited for a sequence ends without a Done.
            None => {
                return Err(crate::deadline::passed(&ctx.deadline)
                    .unwrap_or_else(|| ApiError::internal("the engine dropped the request")))
            }
        }
    }
}

/// One choice of a chat or completions answer, at `index`.
fn choice_json(ctx: &Ctx, g: &Gathered, index: usize, want_logprobs: bool) -> Value {
    let (text, finish, stop_word) = (&g.text, g.finish, &g.stop_word);
    let logprobs = if want_logprobs {
        ctx.logprobs(&g.lps, 0)
    } else {
        Value::Null
    };
    match (ctx.kind, &ctx.tools) {
        (Kind::Chat, Some((family, _))) => {
            let parsed = owl_engine::tools::parse(*family, text);
            if parsed.calls.is_empty() {
                // Call text that does not parse stays the answer's content.
                json!({
                    "index": index, "message": {"role": "assistant", "content": parsed.content},
                    "logprobs": logprobs, "finish_reason": finish_str(finish), "stop_reason": stop_word,
                })
            } else {
                let calls: Vec<Value> = parsed
                    .calls
                    .iter()
                    .map(|c| crate::tools::call_json(c, &crate::tools::call_id()))
                    .collect();
                let content = Some(parsed.content).filter(|c| !c.is_empty());
                json!({
                    "index": index, "message": {"role": "assistant", "content": content, "tool_calls": calls},
                    "logprobs": logprobs, "finish_reason": calls_finish_str(finish),
                })
            }
        }
        (Kind::Chat, None) => json!({
            "index": index, "message": {"role": "assistant", "content": text},
            "logprobs": logprobs, "finish_reason": finish_str(finish), "stop_reason": stop_word,
        }),
        (Kind::Text | Kind::Native, _) => json!({
            "index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_str(finish),
            "stop_reason": stop_word,
        }),
    }
}

/// Usage summed over choices: the prompt once (further choices report none, cost.rs
/// `share_prompt`), completion tokens of all.
fn add_usage(total: &mut Usage, u: &Usage) {
    total.prompt_tokens += u.prompt_tokens;
    total.cached_tokens += u.cached_tokens;
    total.completion_tokens += u.completion_tokens;
}

/// `usage.owl` of several records (one per choice): their dollars summed.
fn sum_records(records: &[owl_ledger::Record]) -> Value {
    let Some(first) = records.first() else { return Value::Null };
    let mut r = first.clone();
    for x in &records[1..] {
        r.cost_usd += x.cost_usd;
        r.baseline_usd += x.baseline_usd;
        r.savings_usd += x.savings_usd;
    }
    cost::usage_owl(&r)
}

/// Waits for the whole generation (every choice) and answers with one object. If the
/// client goes away, axum drops this future and the handles with it (cancelling).
async fn collect(started: Started) -> Result<Response, ApiError> {
    let Started {
        ctx,
        mut handle,
        want_logprobs,
        mut early,
        more,
        ..
    } = started;
    let g = gather(&ctx, &mut handle, &mut early).await?;
    if let Some(o) = &ctx.native {
        let probs = g.lps.iter().map(|(id, lp)| native::probability(o, &ctx.piece(*id), *id, lp)).collect();
        let body = native::final_object(o, &ctx.echo_model, &g.text, &g.ids, probs, g.finish, g.stop_word.as_deref(), &g.usage, &g.timings, &g.text);
        return Ok(Json(body).into_response());
    }
    let choice = choice_json(&ctx, &g, 0, want_logprobs);
    if let Some(c) = ctx
        .capture
        .as_ref()
        .filter(|_| g.finish != FinishReason::Cancelled)
    {
        // A completion's text is captured as its record's completion.
        let answer = match &choice["message"] {
            m if m.is_object() => m.clone(),
            _ => json!({"content": choice["text"]}),
        };
        c.push(&answer, &ctx.id, &ctx.model, &usage_json(&g.usage));
    }
    let mut choices = vec![choice];
    let mut usage = g.usage;
    let mut timings = g.timings;
    let mut records = vec![g.charged.clone()];
    // Further choices: each its own sequence and ledger record (without the prompt).
    for (i, m) in more.into_iter().enumerate() {
        let Started { ctx: mctx, mut handle, mut early, .. } = m;
        let g = gather(&mctx, &mut handle, &mut early).await?;
        choices.push(choice_json(&mctx, &g, i + 1, want_logprobs));
        add_usage(&mut usage, &g.usage);
        timings.prefill_s += g.timings.prefill_s;
        timings.decode_s += g.timings.decode_s;
        records.push(g.charged);
    }
    let mut body = ctx.envelope(false, json!(choices));
    body["usage"] = usage_json(&usage);
    body["usage"]["owl"] = sum_records(&records);
    body["timings"] = timings_json(&timings);
    let (cost_usd, savings_usd) = records
        .iter()
        .fold((0.0, 0.0), |(c, s), r| (c + r.cost_usd, s + r.savings_usd));
    let mut resp = Json(body).into_response();
    for (name, v) in [
        ("x-owl-cost-usd", cost_usd),
        ("x-owl-savings-usd", savings_usd),
    ] {
        if let Ok(v) = axum::http::HeaderValue::from_str(&v.to_string()) {
            resp.headers_mut().insert(name, v);
        }
    }
    Ok(resp)
}
