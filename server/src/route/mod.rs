//! Routing: answer a chat request locally or send it to an OpenAI-compatible
//! upstream (`owl serve --upstream NAME=URL[,key_env=VAR][,model=MODEL]`).
//!
//! The route is chosen per request, with a reason that `/metrics` counts
//! (`owl_route_requests_total{route,reason}`) and the response carries
//! (`x-owl-route`, `x-owl-route-reason`, `x-owl-upstream` headers):
//! - `header`: `x-owl-route: local | upstream | upstream:NAME` forces it;
//! - `model`: the request's `model` names an upstream (its NAME or its `model=`);
//! - `too_long`: the templated prompt has more tokens than `--route-max-local-tokens`;
//! - `default`: none of these; the request is answered locally;
//! - `upstream_error`: the upstream failed twice (connect error, timeout, 5xx),
//!   so the request was answered locally after all.
//!
//! An upstream's 4xx is passed through as is. The upstream's answer is given
//! in owl's shape (owl's id and fingerprint; a stream re-chunked as owl's SSE).

pub mod upstream;

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde_json::Value;

pub use upstream::Upstream;
use upstream::{Body, UpstreamError};

use crate::app::{AppState, JsonBody};
use crate::cost::Client;
use crate::error::ApiError;
use crate::openai::{parse_body, ChatParams};

/// `owl serve`'s routing settings and counters.
#[derive(Debug)]
pub struct RouteConfig {
    pub upstreams: Vec<Upstream>,
    /// Connect, first-answer and between-chunks limit (`--upstream-timeout`).
    pub timeout: Duration,
    /// Prompts with more tokens go upstream (`--route-max-local-tokens`).
    pub max_local_tokens: Option<usize>,
    counts: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

impl Default for RouteConfig {
    fn default() -> Self {
        RouteConfig::new(Vec::new(), Duration::from_secs(60), None)
    }
}

impl RouteConfig {
    pub fn new(
        upstreams: Vec<Upstream>,
        timeout: Duration,
        max_local_tokens: Option<usize>,
    ) -> Self {
        RouteConfig {
            upstreams,
            timeout,
            max_local_tokens,
            counts: Mutex::new(BTreeMap::new()),
        }
    }

    fn count(&self, route: &'static str, reason: &'static str) {
        if let Ok(mut c) = self.counts.lock() {
            *c.entry((route, reason)).or_default() += 1;
        }
    }

    /// `owl_route_requests_total{route,reason}` in Prometheus text.
    pub fn metrics_text(&self) -> String {
        let mut out = String::from(
            "# HELP owl_route_requests_total Chat requests by the route that answered them and why.\n# TYPE owl_route_requests_total counter\n",
        );
        if let Ok(c) = self.counts.lock() {
            for ((route, reason), n) in c.iter() {
                out.push_str(&format!(
                    "owl_route_requests_total{{route=\"{route}\",reason=\"{reason}\"}} {n}\n"
                ));
            }
        }
        out
    }
}

enum Decision {
    Local(&'static str),
    Upstream(usize, &'static str),
}

fn decide(
    st: &AppState,
    cfg: &RouteConfig,
    headers: &HeaderMap,
    v: &Value,
) -> Result<Decision, ApiError> {
    if let Some(h) = headers.get("x-owl-route") {
        let h = h.to_str().unwrap_or("").trim();
        let names = || {
            cfg.upstreams
                .iter()
                .map(|u| u.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        return match h.split_once(':').map_or((h, None), |(a, b)| (a, Some(b.trim()))) {
            ("local", None) => Ok(Decision::Local("header")),
            ("upstream", None) if !cfg.upstreams.is_empty() => Ok(Decision::Upstream(0, "header")),
            ("upstream", Some(name)) => match cfg.upstreams.iter().position(|u| u.name == name) {
                Some(i) => Ok(Decision::Upstream(i, "header")),
                None => Err(ApiError::invalid(
                    "x-owl-route",
                    format!("no upstream named {name:?}; this server has: [{}] (owl serve --upstream NAME=URL)", names()),
                )),
            },
            ("upstream", None) => Err(ApiError::invalid(
                "x-owl-route",
                "x-owl-route: upstream, but this server has no upstream: start it with --upstream NAME=URL",
            )),
            _ => Err(ApiError::invalid(
                "x-owl-route",
                format!("x-owl-route is {h:?}; write local, upstream or upstream:NAME"),
            )),
        };
    }
    if cfg.upstreams.is_empty() {
        return Ok(Decision::Local("default"));
    }
    if let Some(m) = v
        .get("model")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|m| !m.is_empty())
    {
        if let Some(i) = cfg
            .upstreams
            .iter()
            .position(|u| u.name == m || u.model.as_deref() == Some(m))
        {
            return Ok(Decision::Upstream(i, "model"));
        }
    }
    if let Some(max) = cfg.max_local_tokens {
        let engine = st.engine()?;
        let (messages, _) = parse_body::<ChatParams>(v)?.validate()?;
        let text = engine
            .apply_chat_template(&messages, true)
            .map_err(|e| ApiError::invalid("messages", e.0))?;
        let n = engine
            .tokenize(&text, true, true)
            .map_err(|e| ApiError::invalid("messages", e.0))?
            .len();
        if n > max {
            return Ok(Decision::Upstream(0, "too_long"));
        }
    }
    Ok(Decision::Local("default"))
}

fn set_headers(resp: &mut Response, route: &str, reason: &str, upstream: Option<&str>) {
    let h = resp.headers_mut();
    for (k, v) in [
        ("x-owl-route", Some(route)),
        ("x-owl-route-reason", Some(reason)),
        ("x-owl-upstream", upstream),
    ] {
        if let Some(v) = v.and_then(|v| HeaderValue::from_str(v).ok()) {
            h.insert(k, v);
        }
    }
}

/// `POST /v1/chat/completions`: picks the route, then answers.
pub async fn chat(
    State(st): State<AppState>,
    client: Client,
    headers: HeaderMap,
    JsonBody(v): JsonBody,
) -> Result<Response, ApiError> {
    let cfg = st.route();
    let (i, reason) = match decide(&st, &cfg, &headers, &v)? {
        Decision::Local(reason) => return local(st, client, v, reason).await,
        Decision::Upstream(i, reason) => (i, reason),
    };
    let up = &cfg.upstreams[i];
    let mut last = String::new();
    for _attempt in 0..2 {
        match forward(up, &v, cfg.timeout).await {
            Ok(mut resp) => {
                cfg.count("upstream", reason);
                set_headers(&mut resp, "upstream", reason, Some(&up.name));
                return Ok(resp);
            }
            Err(UpstreamError::Refused { status, body }) => {
                cfg.count("upstream", reason);
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
                let mut resp =
                    (status, [("content-type", "application/json")], body).into_response();
                set_headers(&mut resp, "upstream", reason, Some(&up.name));
                return Ok(resp);
            }
            Err(UpstreamError::Retryable(msg)) => last = msg,
        }
    }
    eprintln!("owl: {last}; answering locally");
    local(st, client, v, "upstream_error").await
}

async fn local(
    st: AppState,
    client: Client,
    v: Value,
    reason: &'static str,
) -> Result<Response, ApiError> {
    let cfg = st.route();
    let mut resp = crate::generate::chat_completions(State(st), client, JsonBody(v)).await?;
    cfg.count("local", reason);
    set_headers(&mut resp, "local", reason, None);
    Ok(resp)
}

/// Asks the upstream and wraps its answer in owl's shape.
async fn forward(up: &Upstream, v: &Value, timeout: Duration) -> Result<Response, UpstreamError> {
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
    let bytes = serde_json::to_vec(&req).unwrap_or_default();
    let mut body = upstream::post(up, "/chat/completions", &bytes, timeout).await?;
    let id = crate::generate::new_chat_id();
    if !streaming {
        let raw = body.read_all().await.map_err(UpstreamError::Retryable)?;
        let mut answer: Value = serde_json::from_slice(&raw).map_err(|e| {
            UpstreamError::Retryable(format!(
                "upstream {} sent a body that is not JSON: {e}",
                up.name
            ))
        })?;
        rebrand(&mut answer, &id);
        return Ok(axum::Json(answer).into_response());
    }
    let relay = Relay {
        body,
        id,
        buf: Vec::new(),
        queue: VecDeque::new(),
        done: false,
        name: up.name.clone(),
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
}

impl Relay {
    async fn pump(&mut self) {
        let piece = match self.body.next().await {
            Ok(Some(p)) => p,
            Ok(None) => {
                // A stream cut before [DONE] still ends as owl's streams do.
                self.queue.push_back("[DONE]".into());
                self.done = true;
                return;
            }
            Err(e) => {
                let err = ApiError::internal(format!("upstream {} broke off: {e}", self.name));
                self.queue.push_back(err.body().to_string());
                self.queue.push_back("[DONE]".into());
                self.done = true;
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
                self.queue.push_back("[DONE]".into());
                self.done = true;
                return;
            }
            match serde_json::from_str::<Value>(data) {
                Ok(mut chunk) => {
                    rebrand(&mut chunk, &self.id);
                    self.queue.push_back(chunk.to_string());
                }
                Err(_) => self.queue.push_back(data.to_string()),
            }
        }
    }
}
