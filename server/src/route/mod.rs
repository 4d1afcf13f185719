//! Routing: answer a chat or completions request locally or send it to an
//! OpenAI-compatible upstream (`owl serve --upstream NAME=URL[,key_env=VAR][,model=MODEL][,price=MODEL][,ca=FILE]`).
//!
//! The route is chosen per request, with a reason that `/metrics` counts
//! (`owl_route_requests_total{route,reason}`) and the response carries
//! (`x-owl-route`, `x-owl-route-reason`, `x-owl-upstream` headers):
//! - `header`: `x-owl-route: local | upstream | upstream:NAME` forces it;
//! - `model`: the request's `model` names an upstream (its NAME or its `model=`);
//! - `too_long`: the templated prompt has more tokens than `--route-max-local-tokens`;
//! - `low_confidence` / `confident`: with `--route-threshold T`, the local model's
//!   first `--route-probe-tokens` tokens score under T ([`probe`]): the draft is
//!   dropped (a streaming client saw none of it) and the first upstream answers;
//!   or they score T or more and the same local generation goes on as the answer.
//!   At T = 1 nothing could stay local, so no probe runs: the request escalates at
//!   once (no draft, no probe score). At T = 0 the probe runs but never escalates:
//!   its tokens are the answer's start, streamed as they come (nothing is held back,
//!   the `x-owl-probe-score` header is left out of a stream), and its score is
//!   recorded for `owl route calibrate --from-ledger`;
//! - `default`: none of these; the request is answered locally;
//! - `upstream_error`: the upstream failed twice (connect error, timeout, 5xx),
//!   so the request was answered locally after all.
//!
//! An upstream's 4xx is passed through as is. The upstream's answer is given
//! in owl's shape ([`relay`]) and charged from its `usage`; every request's
//! route, reason and probe score go into its ledger record.

pub mod capture;
pub mod probe;
mod relay;
pub mod tls;
pub mod upstream;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use owl_engine::service::Prompt;
use owl_ledger::Routing;
use serde_json::Value;

pub use upstream::Upstream;
use upstream::UpstreamError;

use crate::app::{AppState, JsonBody};
use crate::cost::Client;
use crate::error::ApiError;
use crate::generate::{LocalOpts, Started};
use crate::openai::{parse_body, ChatParams, CompletionParams};

/// Default `--route-probe-tokens`.
pub const DEFAULT_PROBE_TOKENS: usize = 16;

/// `owl serve`'s routing settings and counters.
#[derive(Debug)]
pub struct RouteConfig {
    pub upstreams: Vec<Upstream>,
    /// Connect, first-answer and between-chunks limit (`--upstream-timeout`).
    pub timeout: Duration,
    /// Prompts with more tokens go upstream (`--route-max-local-tokens`).
    pub max_local_tokens: Option<usize>,
    /// `--route-threshold`: with one, undecided requests are probed.
    pub threshold: Option<f64>,
    /// `--route-probe-tokens`.
    pub probe_tokens: usize,
    /// `--capture FILE`: upstream answers kept for distillation.
    pub capture: Option<Arc<capture::Capture>>,
    /// `--capture-all`: local answers are captured too (for evaluation).
    pub capture_all: bool,
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
            threshold: None,
            probe_tokens: DEFAULT_PROBE_TOKENS,
            capture: None,
            capture_all: false,
            counts: Mutex::new(BTreeMap::new()),
        }
    }

    /// Turns the confidence probe on: `threshold` in [0, 1], `tokens` at least 1.
    pub fn with_probe(mut self, threshold: f64, tokens: usize) -> Result<Self, String> {
        if !(0.0..=1.0).contains(&threshold) {
            return Err(format!(
                "--route-threshold {threshold}: must be between 0 (keep everything local) and 1 (escalate everything)"
            ));
        }
        if tokens == 0 {
            return Err("--route-probe-tokens must be at least 1".into());
        }
        self.threshold = Some(threshold);
        self.probe_tokens = tokens;
        Ok(self)
    }

    fn count(&self, route: &'static str, reason: &'static str) {
        if let Ok(mut c) = self.counts.lock() {
            *c.entry((route, reason)).or_default() += 1;
        }
    }

    /// Keeps every complete upstream chat answer in `c` (see [`capture`]).
    pub fn with_capture(mut self, c: capture::Capture, all: bool) -> Self {
        self.capture = Some(Arc::new(c));
        self.capture_all = all;
        self
    }

    /// `owl_route_requests_total{route,reason}` (and the capture counters) in Prometheus text.
    pub fn metrics_text(&self) -> String {
        let mut out = String::from(
            "# HELP owl_route_requests_total Chat and completions requests by the route that answered them and why.\n# TYPE owl_route_requests_total counter\n",
        );
        if let Ok(c) = self.counts.lock() {
            for ((route, reason), n) in c.iter() {
                out.push_str(&format!(
                    "owl_route_requests_total{{route=\"{route}\",reason=\"{reason}\"}} {n}\n"
                ));
            }
        }
        if let Some(c) = &self.capture {
            out.push_str(&c.metrics_text());
        }
        out
    }
}

enum Decision {
    Local(&'static str),
    Upstream(usize, &'static str),
}

/// Which OpenAI endpoint a request came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Chat,
    Text,
}

impl Endpoint {
    fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "/chat/completions",
            Endpoint::Text => "/completions",
        }
    }
}

/// The prompt's length in tokens, as the local model counts it.
fn prompt_tokens(st: &AppState, ep: Endpoint, v: &Value) -> Result<usize, ApiError> {
    let engine = st.engine()?;
    let text = match ep {
        Endpoint::Chat => {
            let (messages, _) = parse_body::<ChatParams>(v)?.validate()?;
            engine
                .apply_chat_template(&messages, true)
                .map_err(|e| ApiError::invalid("messages", e.0))?
        }
        Endpoint::Text => match parse_body::<CompletionParams>(v)?.validate()?.0 {
            Prompt::Text(t) => t,
            Prompt::Tokens(t) => return Ok(t.len()),
            Prompt::Chat(_) => return Ok(0),
        },
    };
    let param = if ep == Endpoint::Chat {
        "messages"
    } else {
        "prompt"
    };
    Ok(engine
        .tokenize(&text, true, true)
        .map_err(|e| ApiError::invalid(param, e.0))?
        .len())
}

fn decide(
    st: &AppState,
    cfg: &RouteConfig,
    headers: &HeaderMap,
    v: &Value,
    ep: Endpoint,
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
        if prompt_tokens(st, ep, v)? > max {
            return Ok(Decision::Upstream(0, "too_long"));
        }
    }
    Ok(Decision::Local("default"))
}

fn set_headers(resp: &mut Response, r: &Routing) {
    let score = r.probe_score.map(|s| format!("{s:.4}"));
    let h = resp.headers_mut();
    for (k, v) in [
        ("x-owl-route", r.route.as_deref()),
        ("x-owl-route-reason", r.reason.as_deref()),
        ("x-owl-upstream", r.upstream.as_deref()),
        ("x-owl-probe-score", score.as_deref()),
    ] {
        if let Some(v) = v.and_then(|v| HeaderValue::from_str(v).ok()) {
            h.insert(k, v);
        }
    }
}

fn routing(route: &str, reason: &str, score: Option<f64>, upstream: Option<&str>) -> Routing {
    Routing {
        route: Some(route.into()),
        reason: Some(reason.into()),
        probe_score: score,
        upstream: upstream.map(str::to_string),
        upstream_usd: None,
        cut: false,
    }
}

/// `POST /v1/chat/completions`: picks the route, then answers.
pub async fn chat(
    State(st): State<AppState>,
    client: Client,
    headers: HeaderMap,
    JsonBody(v): JsonBody,
) -> Result<Response, ApiError> {
    answer(st, client, headers, v, Endpoint::Chat).await
}

/// `POST /v1/completions`: the same policy as chat.
pub async fn completions(
    State(st): State<AppState>,
    client: Client,
    headers: HeaderMap,
    JsonBody(v): JsonBody,
) -> Result<Response, ApiError> {
    answer(st, client, headers, v, Endpoint::Text).await
}

async fn start(
    st: AppState,
    client: Client,
    v: &Value,
    ep: Endpoint,
    opts: LocalOpts,
) -> Result<Started, ApiError> {
    match ep {
        Endpoint::Chat => crate::generate::start_chat(st, client, v, opts).await,
        Endpoint::Text => crate::generate::start_text(st, client, v, opts).await,
    }
}

async fn answer(
    st: AppState,
    client: Client,
    headers: HeaderMap,
    v: Value,
    ep: Endpoint,
) -> Result<Response, ApiError> {
    let cfg = st.route();
    let opted_out = headers
        .get("x-owl-capture")
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| h.trim().eq_ignore_ascii_case("off"));
    // --capture-all: local answers are captured too (meta filled in as the route is known).
    let local_capture = match &cfg.capture {
        Some(sink) if cfg.capture_all && capture::capturable(&v) && !opted_out => {
            Some(capture::LocalCapture {
                sink: sink.clone(),
                request: v.clone(),
                meta: capture::Meta {
                    reason: String::new(),
                    probe_score: None,
                    local_draft: None,
                },
            })
        }
        _ => None,
    };
    let (i, reason, score, draft, draft_text) = match decide(&st, &cfg, &headers, &v, ep)? {
        Decision::Upstream(i, reason) => (i, reason, None, None, None),
        // At --route-threshold 1 no score keeps a request local (even 1 escalates):
        // probing would only generate a draft to throw away. Escalate at once.
        Decision::Local("default")
            if !cfg.upstreams.is_empty() && cfg.threshold.is_some_and(probe::always_escalates) =>
        {
            (0, "low_confidence", None, None, None)
        }
        // At --route-threshold 0 no score escalates: the probe holds nothing back. A
        // stream's first tokens go out as they come, scored as they pass.
        Decision::Local("default")
            if !cfg.upstreams.is_empty() && cfg.threshold.is_some_and(probe::never_escalates) =>
        {
            let opts = LocalOpts {
                routing: routing("local", "confident", None, None),
                probe: Some(cfg.probe_tokens),
                capture: local_capture.clone(),
            };
            let started = start(st.clone(), client.clone(), &v, ep, opts).await?;
            let (mut resp, score) = started.score_while_streaming(cfg.probe_tokens).await?;
            cfg.count("local", "confident");
            // A stream's headers go out before its score is known: it is in the ledger only.
            set_headers(&mut resp, &routing("local", "confident", score, None));
            return Ok(resp);
        }
        Decision::Local("default") if !cfg.upstreams.is_empty() && cfg.threshold.is_some() => {
            let t = cfg.threshold.unwrap_or(0.0);
            let opts = LocalOpts {
                routing: routing("local", "confident", None, None),
                probe: Some(cfg.probe_tokens),
                capture: local_capture.clone(),
            };
            let mut started = start(st.clone(), client.clone(), &v, ep, opts).await?;
            let draft = started.probe(cfg.probe_tokens).await;
            let score = probe::score(&draft.logprobs);
            if !probe::escalates(score, t) {
                let r = routing("local", "confident", Some(score), None);
                started.set_routing(r.clone());
                let mut resp = started.respond().await?;
                cfg.count("local", "confident");
                set_headers(&mut resp, &r);
                return Ok(resp);
            }
            let timings = started.drop_draft().await;
            (0, "low_confidence", Some(score), timings, Some(draft.text))
        }
        Decision::Local(reason) => {
            return local(st, client, v, ep, reason, None, local_capture).await
        }
    };
    let up = &cfg.upstreams[i];
    let r = routing("upstream", reason, score, Some(&up.name));
    let cost = st.cost();
    let price = up
        .price
        .as_deref()
        .or(up.model.as_deref())
        .and_then(|m| cost.price(m).ok().cloned());
    let capture = match &cfg.capture {
        Some(sink) if capture::capturable(&v) && !opted_out => Some(relay::CaptureJob {
            sink: sink.clone(),
            meta: capture::Meta {
                reason: reason.to_string(),
                probe_score: score,
                local_draft: draft_text,
            },
        }),
        _ => None,
    };
    // What a stream cut before its usage chunk is charged for its prompt.
    let streaming = v.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let prompt_tokens = if streaming {
        prompt_tokens(&st, ep, &v).ok().map(|n| n as u64)
    } else {
        None
    };
    let mut last = String::new();
    for _attempt in 0..2 {
        let charge = relay::Charge {
            cost: cost.clone(),
            client: client.0.clone(),
            routing: r.clone(),
            price: price.clone(),
            draft,
            capture: capture.clone(),
            prompt_tokens,
        };
        match relay::forward(up, ep.path(), &v, cfg.timeout, charge).await {
            Ok(mut resp) => {
                cfg.count("upstream", reason);
                set_headers(&mut resp, &r);
                return Ok(resp);
            }
            Err(UpstreamError::Refused { status, body }) => {
                cfg.count("upstream", reason);
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
                let mut resp =
                    (status, [("content-type", "application/json")], body).into_response();
                set_headers(&mut resp, &r);
                return Ok(resp);
            }
            Err(UpstreamError::Retryable(msg)) => last = msg,
        }
    }
    eprintln!("owl: {last}; answering locally");
    local(st, client, v, ep, "upstream_error", score, local_capture).await
}

async fn local(
    st: AppState,
    client: Client,
    v: Value,
    ep: Endpoint,
    reason: &'static str,
    score: Option<f64>,
    capture: Option<capture::LocalCapture>,
) -> Result<Response, ApiError> {
    let cfg = st.route();
    let r = routing("local", reason, score, None);
    let capture = capture.map(|mut c| {
        c.meta.reason = reason.to_string();
        c.meta.probe_score = score;
        c
    });
    let opts = LocalOpts {
        routing: r.clone(),
        probe: None,
        capture,
    };
    let mut resp = start(st, client, &v, ep, opts).await?.respond().await?;
    cfg.count("local", reason);
    set_headers(&mut resp, &r);
    Ok(resp)
}
