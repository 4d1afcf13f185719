//! The SSE side of a local generation: engine events become OpenAI chunks
//! (content, logprobs, tool-call deltas via tool_stream.rs, usage), with the
//! same answer as the non-streamed one.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use owl_engine::service::{Event, FinishReason, TokenLogprob, Usage};
use owl_engine::constrain::Scan;
use owl_engine::tools::Family;
use serde_json::{json, Value};

use super::*;

/// State of one SSE response: the request handle and the chunks not sent yet.
struct Streamer {
    ctx: Ctx,
    handle: cost::Guarded,
    early: VecDeque<Event>,
    include_usage: bool,
    want_logprobs: bool,
    /// Bytes of text sent so far (completions' text_offset).
    sent: usize,
    queue: VecDeque<String>,
    finished: bool,
    /// With tools: the answer so far, and the part not yet sent as content.
    all: String,
    pending: String,
    /// The trigger was seen (or content is not streamed): the rest is calls.
    holding: bool,
    /// With tools: what was sent of the calls, and logprobs of tokens not sent yet.
    calls: crate::tool_stream::CallStream,
    lps: Vec<(u32, TokenLogprob)>,
    /// Native `/completion`: ids and probabilities of tokens whose text is not sent yet.
    ids: Vec<u32>,
    probs: Vec<Value>,
    /// This choice's `index` (n > 1: one Streamer per choice, merged).
    index: usize,
    /// One of several choices: no `[DONE]` or usage chunk of its own; its usage and
    /// record wait in `total` for the merged stream's end.
    multi: bool,
    total: Option<(Usage, owl_ledger::Record)>,
    /// `--route-threshold 0`: the probe tokens stream as they come; their logprobs are
    /// gathered here (up to the count) and scored when the probe is over.
    probe: Option<(usize, Vec<f32>)>,
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
                json!({"index": self.index, "delta": delta, "logprobs": logprobs, "finish_reason": finish})
            }
            Kind::Text | Kind::Native => {
                json!({"index": self.index, "text": text, "logprobs": logprobs, "finish_reason": finish})
            }
        }
    }

    /// Native `/completion`: a token's object once it has text (held-back text waits
    /// for the next token; what is held at the end goes into the closing object).
    fn native_token(&mut self, o: &native::NativeOpts, id: u32, text: &str, logprob: Option<TokenLogprob>) {
        self.all.push_str(text);
        if id != owl_engine::service::TEXT_ONLY {
            self.ids.push(id);
            if let Some(lp) = logprob.filter(|_| o.n_probs > 0) {
                self.probs.push(native::probability(o, &self.ctx.piece(id), id, &lp));
            }
            self.pending.push_str(text);
        } else {
            self.pending.push_str(text);
            return;
        }
        if !self.pending.is_empty() {
            let text = std::mem::take(&mut self.pending);
            let c = native::chunk(o, &text, &std::mem::take(&mut self.ids), std::mem::take(&mut self.probs));
            self.queue.push_back(c.to_string());
        }
    }

    fn content_chunk(&mut self, text: &str) {
        if !text.is_empty() {
            let lp = self.take_logprobs();
            let c = self.chunk(self.delta(text, lp, None));
            self.queue.push_back(c);
        }
    }

    /// With tools: the logprobs of the tokens since the last chunk, for the next one.
    fn take_logprobs(&mut self) -> Value {
        if self.lps.is_empty() {
            return Value::Null;
        }
        let lps = std::mem::take(&mut self.lps);
        self.ctx.logprobs(&lps, 0)
    }

    fn call_chunks(&mut self, deltas: Vec<Value>) {
        for d in deltas {
            let lp = self.take_logprobs();
            let c = self.chunk(json!({"index": self.index, "delta": {"tool_calls": [d]}, "logprobs": lp, "finish_reason": null}));
            self.queue.push_back(c);
        }
    }

    /// A token's text with tools: content until the trigger (less what could
    /// be its start), then calls, streamed as far as they are known.
    fn tool_text(&mut self, family: Family, text: &str, lp: Option<(u32, TokenLogprob)>) {
        self.all.push_str(text);
        self.lps.extend(lp.filter(|_| self.want_logprobs));
        if !self.holding {
            self.pending.push_str(text);
            let openers = family.call_openers();
            let n = crate::tools::releasable_any(&self.pending, &openers);
            let rest = &self.pending.as_bytes()[n..];
            if openers.iter().any(|t| matches!(t.scan(rest, 0), Scan::Found { start: 0, .. })) {
                self.holding = true;
            }
            let out: String = self.pending.drain(..n).collect();
            self.content_chunk(&out);
        }
        if self.holding {
            if let Some(at) = crate::tool_stream::calls_start(family, &self.all) {
                let deltas = self.calls.feed(&self.all[at..], &mut crate::tools::call_id);
                self.call_chunks(deltas);
            }
        }
    }

    /// The end of an answer with tools: its calls, or the held text as content.
    /// Returns the finish reason.
    fn tool_end(&mut self, family: Family, streamed: bool, finish: FinishReason) -> &'static str {
        let parsed = owl_engine::tools::parse(family, &self.all);
        if parsed.calls.is_empty() && self.calls.started() > 0 {
            // A call cut off (by `max_tokens`) after its start went out: `length` says so.
            return finish_str(finish);
        }
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
        // Calls the stream did not see as they were written go out whole.
        let rest = self.calls.finish(&parsed.calls, &mut crate::tools::call_id);
        self.call_chunks(rest);
        calls_finish_str(finish)
    }

    /// With `--capture-all`: the whole answer, as the non-streamed one's message.
    fn capture(&self, usage: &Usage) {
        let Some(c) = &self.ctx.capture else {
            return;
        };
        let msg = match &self.ctx.tools {
            Some((family, _)) => {
                let parsed = owl_engine::tools::parse(*family, &self.all);
                let calls: Vec<Value> = parsed
                    .calls
                    .iter()
                    .map(|t| crate::tools::call_json(t, &crate::tools::call_id()))
                    .collect();
                json!({"role": "assistant", "content": parsed.content, "tool_calls": calls})
            }
            None => json!({"role": "assistant", "content": self.all}),
        };
        c.push(&msg, &self.ctx.id, &self.ctx.model, &usage_json(usage));
    }

    /// Ends this choice: `[DONE]`, unless the merged stream of several choices sends it.
    fn done(&mut self) {
        if !self.multi {
            self.queue.push_back("[DONE]".into());
        }
    }

    /// A streamed probe reads each event before it is sent: at its `n`th token's logprob,
    /// or when the generation ends first, the score goes into the route recorded with the
    /// request (ledger and capture), before any charge.
    fn observe_probe(&mut self, ev: Option<&Event>) {
        let Some((n, lps)) = &mut self.probe else {
            return;
        };
        let over = match ev {
            Some(Event::Token { logprob, .. }) => {
                if let Some(lp) = logprob {
                    lps.push(lp.logprob);
                }
                lps.len() >= *n
            }
            Some(Event::Started { .. }) => false,
            Some(Event::Done { .. } | Event::Error(_)) | None => true,
        };
        if !over {
            return;
        }
        let score = crate::route::probe::score(lps);
        self.probe = None;
        let mut r = self.ctx.routing.clone();
        r.probe_score = Some(score);
        if let Some(c) = &mut self.ctx.capture {
            c.meta.probe_score = Some(score);
        }
        self.handle.set_routing(r.clone());
        self.ctx.routing = r;
    }

    /// Waits for the next engine event and queues the chunks it makes.
    async fn pump(&mut self) {
        // A chat request with tools parses its text for calls; everything else streams as is.
        let tool_family = match self.ctx.kind {
            Kind::Chat => self.ctx.tools.as_ref().map(|t| t.0),
            _ => None,
        };
        let ev = next_event(&mut self.early, &mut self.handle).await;
        self.observe_probe(ev.as_ref());
        match ev {
            Some(Event::Started { .. }) => {}
            Some(Event::Token { id, text, logprob }) if self.ctx.native.is_some() => {
                let o = self.ctx.native.clone().unwrap_or_default();
                self.native_token(&o, id, &text, logprob);
            }
            Some(Event::Token { id, text, logprob }) if let Some(family) = tool_family => {
                self.tool_text(family, &text, logprob.map(|lp| (id, lp)));
            }
            Some(Event::Token { id, text, logprob }) => {
                if self.ctx.capture.is_some() {
                    self.all.push_str(&text);
                }
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
                stop_word,
            }) => {
                // One charge for every way a stream ends with a Done.
                let charged = self.ctx.charge(&usage, &timings).await;
                if let Some(e) = crate::deadline::passed(&self.ctx.deadline) {
                    self.queue.push_back(e.body().to_string());
                    self.done();
                    self.finished = true;
                    return;
                }
                if let Some(o) = self.ctx.native.clone() {
                    let rest = std::mem::take(&mut self.pending);
                    let probs = std::mem::take(&mut self.probs);
                    let ids = std::mem::take(&mut self.ids);
                    let last = native::final_object(&o, &self.ctx.echo_model, &rest, &ids, probs, finish_reason, stop_word.as_deref(), &usage, &timings, &self.all);
                    // llama-server ends a native stream with the closing object, no `[DONE]`.
                    self.queue.push_back(last.to_string());
                    self.finished = true;
                    return;
                }
                let finish = match self.ctx.tools.clone() {
                    Some((family, choice)) if self.ctx.kind == Kind::Chat => {
                        let streamed = crate::tools::streams_content(family, &choice);
                        self.tool_end(family, streamed, finish_reason)
                    }
                    _ => finish_str(finish_reason),
                };
                if finish_reason != FinishReason::Cancelled {
                    self.capture(&usage);
                }
                let lp = self.take_logprobs();
                let mut last = self.delta("", lp, Some(finish));
                last["stop_reason"] = json!(stop_word);
                let c = self.chunk(last);
                self.queue.push_back(c);
                if self.multi {
                    self.total = Some((usage, charged));
                } else if self.include_usage {
                    let mut u = self.ctx.envelope(true, json!([]));
                    u["usage"] = usage_json(&usage);
                    u["usage"]["owl"] = cost::usage_owl(&charged);
                    // llama-server's timings, also in a stream (the Ollama API's durations come from them).
                    u["timings"] = timings_json(&timings);
                    self.queue.push_back(u.to_string());
                }
                self.done();
                self.finished = true;
            }
            Some(Event::Error(e)) => {
                self.queue.push_back(
                    ApiError::internal(format!("generation failed: {e}"))
                        .body()
                        .to_string(),
                );
                self.done();
                self.finished = true;
            }
            None => {
                let e = crate::deadline::passed(&self.ctx.deadline)
                    .unwrap_or_else(|| ApiError::internal("the engine dropped the request"));
                self.queue.push_back(e.body().to_string());
                self.done();
                self.finished = true;
            }
        }
    }
}

fn streamer(started: Started, index: usize, multi: bool) -> Streamer {
    let Started {
        ctx,
        handle,
        include_usage,
        want_logprobs,
        early,
        stream_probe,
        ..
    } = started;
    let mut s = Streamer {
        ctx,
        handle,
        early,
        include_usage,
        want_logprobs,
        sent: 0,
        queue: VecDeque::new(),
        finished: false,
        all: String::new(),
        pending: String::new(),
        holding: false,
        calls: Default::default(),
        lps: Vec::new(),
        ids: Vec::new(),
        probs: Vec::new(),
        index,
        multi,
        total: None,
        probe: stream_probe.map(|n| (n, Vec::new())),
    };
    if let Some((family, choice)) = &s.ctx.tools {
        s.holding = !crate::tools::streams_content(*family, choice);
    }
    if s.ctx.kind == Kind::Chat {
        // OpenAI opens a chat stream with the role.
        let first = s.chunk(json!({"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}));
        s.queue.push_back(first);
    }
    s
}

/// What one choice's stream yields into the merged one.
enum Piece {
    Data(String),
    /// The choice ended normally: its usage and ledger record.
    Total(Usage, owl_ledger::Record),
}

pub(super) fn stream_response(mut started: Started) -> Response {
    let more = std::mem::take(&mut started.more);
    if more.is_empty() {
        let s = streamer(started, 0, false);
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
        return Sse::new(events).into_response();
    }
    // n > 1: every choice streams as its tokens come (chunks carry their `index`); the
    // usage chunk (prompt once, completions summed) and `[DONE]` close the merged stream.
    let include_usage = started.include_usage;
    let usage_envelope = started.ctx.envelope(true, json!([]));
    let subs = std::iter::once(started)
        .chain(more)
        .enumerate()
        .map(|(i, st)| {
            let s = streamer(st, i, true);
            Box::pin(stream::unfold(s, |mut s| async move {
                loop {
                    if let Some(data) = s.queue.pop_front() {
                        return Some((Piece::Data(data), s));
                    }
                    if s.finished {
                        let (u, r) = s.total.take()?;
                        return Some((Piece::Total(u, r), s));
                    }
                    s.pump().await;
                }
            }))
        });
    let merged = stream::select_all(subs);
    let state = (merged, Usage::default(), Vec::<owl_ledger::Record>::new(), VecDeque::<String>::new(), false);
    let events = stream::unfold(state, move |(mut merged, mut usage, mut records, mut tail, mut ended)| {
        let usage_envelope = usage_envelope.clone();
        async move {
            use futures_util::StreamExt;
            loop {
                if let Some(data) = tail.pop_front() {
                    let ev = Ok::<_, Infallible>(SseEvent::default().data(data));
                    return Some((ev, (merged, usage, records, tail, ended)));
                }
                if ended {
                    return None;
                }
                match merged.next().await {
                    Some(Piece::Data(d)) => tail.push_back(d),
                    Some(Piece::Total(u, r)) => {
                        add_usage(&mut usage, &u);
                        records.push(r);
                    }
                    None => {
                        if include_usage {
                            let mut u = usage_envelope.clone();
                            u["usage"] = usage_json(&usage);
                            u["usage"]["owl"] = sum_records(&records);
                            tail.push_back(u.to_string());
                        }
                        tail.push_back("[DONE]".into());
                        ended = true;
                    }
                }
            }
        }
    });
    Sse::new(events).into_response()
}
