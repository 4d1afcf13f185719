//! What the in-process HTTP tests share: a fake engine (no model) and request
//! helpers. Each test file is a crate of its own and uses part of this.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request as HttpRequest, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use owl_engine::service::{
    CancelToken, ChatMessage, Event, FinishReason, MetricsSnapshot, ModelInfo, Prompt, Request,
    RequestHandle, SubmitError, Timings, TokenLogprob, TopLogprob, Usage,
};
use owl_server::{LlmService, ServiceError};
use serde_json::{json, Value};
use tower::ServiceExt;

pub const REPLY: &str = "hello world, how are you";

/// Tokens are bytes (id 1 is BOS); the reply is always [`REPLY`], cut at
/// max_tokens or a stop string. With `slow`, "x" comes every 5 ms until the request
/// is cancelled, then Done(Cancelled), as the engine does; with `queued` as well, it
/// never starts and its channel closes without a Done when cancelled (a request
/// reaped while it waited for a sequence). `queue_full` refuses every submit.
pub struct Fake {
    pub info: ModelInfo,
    pub queue_full: AtomicBool,
    pub slow: AtomicBool,
    pub queued: AtomicBool,
    /// Every request submitted, with its cancel token.
    pub submitted: Mutex<Vec<(Request, CancelToken)>>,
}

/// A fake with a 64-token context.
pub fn fake() -> Arc<Fake> {
    fake_with_ctx(64)
}

pub fn fake_with_ctx(n_ctx: usize) -> Arc<Fake> {
    Arc::new(Fake {
        info: ModelInfo {
            name: "fake-model".into(),
            path: PathBuf::from("/models/Fake-Model.Q4_0.gguf"),
            arch: "llama".into(),
            quant: "Q4_0".into(),
            n_params: 1000,
            file_size: 2000,
            n_vocab: 256,
            n_ctx_train: 2048,
            n_ctx,
            n_parallel: 2,
            device: "cpu".into(),
            threads: 1,
        },
        queue_full: AtomicBool::new(false),
        slow: AtomicBool::new(false),
        queued: AtomicBool::new(false),
        submitted: Mutex::new(Vec::new()),
    })
}

impl LlmService for Fake {
    fn info(&self) -> &ModelInfo {
        &self.info
    }
    fn tokenize(
        &self,
        text: &str,
        add_special: bool,
        _parse_special: bool,
    ) -> Result<Vec<u32>, ServiceError> {
        Ok(add_special
            .then_some(1)
            .into_iter()
            .chain(text.bytes().map(u32::from))
            .collect())
    }
    fn detokenize(&self, ids: &[u32]) -> String {
        String::from_utf8_lossy(
            &ids.iter()
                .filter(|&&i| i > 1)
                .map(|&i| i as u8)
                .collect::<Vec<_>>(),
        )
        .into_owned()
    }
    fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        gen_prompt: bool,
    ) -> Result<String, ServiceError> {
        let mut s: String = messages
            .iter()
            .map(|m| format!("{}: {}\n", m.role, m.content))
            .collect();
        if gen_prompt {
            s.push_str("assistant:");
        }
        Ok(s)
    }
    fn submit(&self, req: Request) -> Result<RequestHandle, SubmitError> {
        if self.queue_full.load(Ordering::Relaxed) {
            return Err(SubmitError::QueueFull { capacity: 4 });
        }
        let tokens = match &req.prompt {
            Prompt::Text(t) => self.tokenize(t, true, true).unwrap(),
            Prompt::Tokens(t) => t.clone(),
            Prompt::Chat(m) => self
                .tokenize(&self.apply_chat_template(m, true).unwrap(), true, true)
                .unwrap(),
        };
        if tokens.len() >= self.info.n_ctx {
            let n_ctx = self.info.n_ctx;
            return Err(SubmitError::PromptTooLong {
                n_prompt: tokens.len(),
                n_ctx,
                over: tokens.len() + 1 - n_ctx,
            });
        }
        let (tx, rx) = tokio::sync::mpsc::channel(owl_engine::service::EVENT_BACKLOG);
        let cancel = CancelToken::default();
        self.submitted
            .lock()
            .unwrap()
            .push((req.clone(), cancel.clone()));
        let n_prompt = tokens.len();
        let queued = self.queued.load(Ordering::Relaxed);
        if !queued {
            let _ = tx.try_send(Event::Started {
                prompt_tokens: n_prompt,
                cached_tokens: 2,
            });
        }
        if self.slow.load(Ordering::Relaxed) || queued {
            let c = cancel.clone();
            tokio::spawn(async move {
                let mut n = 0;
                while !c.is_cancelled() {
                    if !queued {
                        let _ = tx.try_send(Event::Token {
                            id: b'x' as u32,
                            text: "x".into(),
                            logprob: None,
                        });
                        n += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                if !queued {
                    let _ = tx.try_send(Event::Done {
                        finish_reason: FinishReason::Cancelled,
                        usage: Usage {
                            prompt_tokens: n_prompt,
                            completion_tokens: n,
                            cached_tokens: 2,
                        },
                        timings: Timings::default(),
                        stop_word: None,
                    });
                }
            });
        } else {
            let mut text = REPLY.to_string();
            let mut finish = FinishReason::Stop;
            if let Some(m) = req.max_tokens.filter(|&m| m < text.len()) {
                text.truncate(m);
                finish = FinishReason::Length;
            }
            for s in &req.stop {
                if let Some(i) = text.find(s.as_str()) {
                    text.truncate(i);
                    finish = FinishReason::Stop;
                }
            }
            for b in text.bytes() {
                let logprob = req.logprobs.map(|k| TokenLogprob {
                    logprob: -0.5,
                    top: (0..k)
                        .map(|j| TopLogprob {
                            id: 97 + j as u32,
                            text: ((b'a' + j as u8) as char).to_string(),
                            logprob: -1.0,
                        })
                        .collect(),
                });
                let _ = tx.try_send(Event::Token {
                    id: b as u32,
                    text: (b as char).to_string(),
                    logprob,
                });
            }
            let usage = Usage {
                prompt_tokens: n_prompt,
                completion_tokens: text.len(),
                cached_tokens: 2,
            };
            let _ = tx.try_send(Event::Done {
                finish_reason: finish,
                usage,
                timings: Timings::default(),
                stop_word: None,
            });
        }
        Ok(RequestHandle {
            events: rx,
            cancel,
            prompt_tokens: n_prompt,
        })
    }
    fn metrics(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            requests_total: self.submitted.lock().unwrap().len() as u64,
            ..Default::default()
        }
    }
}

pub async fn send(
    app: &Router,
    method: &str,
    uri: &str,
    body: impl Into<Body>,
    headers: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap, String) {
    let mut b = HttpRequest::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = app
        .clone()
        .oneshot(b.body(body.into()).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8(bytes.to_vec()).unwrap(),
    )
}

pub async fn post(app: &Router, uri: &str, body: Value) -> (StatusCode, Value) {
    let (s, _, text) = send(app, "POST", uri, body.to_string(), &[]).await;
    (
        s,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")),
    )
}

/// Asserts OpenAI's error shape and returns the message.
pub fn error_message(v: &Value) -> String {
    let e = &v["error"];
    assert!(
        e["message"].is_string() && e["type"].is_string(),
        "not an OpenAI error: {v}"
    );
    assert!(
        e.get("param").is_some() && e.get("code").is_some(),
        "not an OpenAI error: {v}"
    );
    e["message"].as_str().unwrap().to_string()
}

pub fn chat_body(extra: Value) -> Value {
    let mut b = json!({"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "temperature": 0});
    b.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    b
}

pub fn sse_data(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("{e:?}"))
                .to_string()
        })
        .collect()
}
