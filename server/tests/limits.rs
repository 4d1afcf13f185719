//! Request bounds and deadlines against a fake engine (no model): every limit
//! is a 400 that names it, and a request past its deadline is stopped (its
//! engine request cancelled) and answered 408, streaming or not.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request as HttpRequest, StatusCode};
use axum::Router;
use common::{fake_with_ctx, send, Fake};
use http_body_util::BodyExt;
use owl_server::{router, AppState, ServerOptions};
use serde_json::{json, Value};
use tower::ServiceExt;

/// Every request generates "x" every 5 ms until cancelled (the fake's `slow`).
fn app(request_timeout: Option<Duration>) -> (Router, Arc<Fake>) {
    let f = fake_with_ctx(4096);
    f.slow.store(true, Ordering::Relaxed);
    let state = AppState::new(ServerOptions {
        request_timeout,
        ..Default::default()
    });
    state.set_engine(f.clone());
    (router(state), f)
}

async fn post(app: &Router, uri: &str, body: Value) -> (StatusCode, String) {
    let (status, _, text) = send(app, "POST", uri, body.to_string(), &[]).await;
    (status, text)
}

fn message(text: &str) -> String {
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    v["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no error: {text}"))
        .to_string()
}

fn chat(extra: Value) -> Value {
    let mut b = json!({"messages": [{"role": "user", "content": "hi"}]});
    b.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    b
}

#[tokio::test]
async fn every_bound_is_a_400_that_says_the_limit() {
    let (app, fake) = app(None);
    let stops: Vec<String> = (0..17).map(|i| format!("s{i}")).collect();
    let cases = [
        (
            "/v1/chat/completions",
            chat(json!({"stop": stops})),
            "at most 16 stop strings",
        ),
        (
            "/v1/chat/completions",
            chat(json!({"stop": "y".repeat(257)})),
            "1 to 256 bytes",
        ),
        (
            "/v1/chat/completions",
            chat(json!({"stop": [""]})),
            "1 to 256 bytes",
        ),
        (
            "/v1/chat/completions",
            chat(json!({"logprobs": true, "top_logprobs": 21})),
            "between 0 and 20",
        ),
        (
            "/v1/completions",
            json!({"prompt": "hi", "logprobs": 21}),
            "between 0 and 20",
        ),
        (
            "/v1/chat/completions",
            chat(json!({"n": 17})),
            "`n` must be between 1 and 16",
        ),
        (
            "/v1/chat/completions",
            chat(json!({"max_tokens": 4097})),
            "over the context of 4096",
        ),
        (
            "/v1/chat/completions",
            chat(json!({"timeout": 0})),
            "at most 86400",
        ),
        (
            "/v1/completions",
            json!({"prompt": "hi", "timeout": 1e6}),
            "at most 86400",
        ),
        (
            "/v1/completions",
            json!({"prompt": "hi", "timeout": "soon"}),
            "timeout",
        ),
    ];
    for (uri, body, needle) in cases {
        let (s, text) = post(&app, uri, body.clone()).await;
        assert_eq!(s, 400, "{body}: {text}");
        let msg = message(&text);
        assert!(msg.contains(needle), "{body}: {msg:?} lacks {needle:?}");
    }
    assert!(
        fake.submitted.lock().unwrap().is_empty(),
        "no refused request reaches the engine"
    );
}

#[tokio::test]
async fn a_request_past_its_deadline_is_stopped_with_408() {
    let (app, fake) = app(Some(Duration::from_millis(300)));
    let (s, text) = post(&app, "/v1/completions", json!({"prompt": "hi"})).await;
    assert_eq!(s, 408, "{text}");
    assert!(message(&text).contains("deadline of 0.3 s"), "{text}");
    assert!(
        fake.submitted.lock().unwrap()[0].1.is_cancelled(),
        "the engine request is cancelled"
    );

    // The request's own `timeout` shortens the server's limit...
    let (s, text) = post(&app, "/v1/chat/completions", chat(json!({"timeout": 0.05}))).await;
    assert_eq!(s, 408, "{text}");
    assert!(message(&text).contains("deadline of 0.05 s"), "{text}");
    // ...and cannot lengthen it.
    let (s, text) = post(&app, "/v1/chat/completions", chat(json!({"timeout": 3600}))).await;
    assert_eq!(s, 408, "{text}");
    assert!(message(&text).contains("deadline of 0.3 s"), "{text}");

    // A stream that already sent tokens ends with an error chunk, then [DONE].
    let (s, text) = post(&app, "/v1/chat/completions", chat(json!({"stream": true}))).await;
    assert_eq!(s, 200);
    let data: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert!(
        data.iter().any(|d| d.contains("\"x\"")),
        "tokens came first: {text}"
    );
    assert_eq!(data.last(), Some(&"[DONE]"));
    let err = data[data.len() - 2];
    assert!(message(err).contains("deadline of 0.3 s"), "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(err).unwrap()["error"]["code"],
        "request_timeout"
    );

    // A request cancelled while it still waited for a sequence (no Done) is a 408 too, not a 500.
    fake.queued.store(true, Ordering::Relaxed);
    let (s, text) = post(&app, "/v1/completions", json!({"prompt": "hi"})).await;
    assert_eq!(s, 408, "{text}");
    assert!(fake
        .submitted
        .lock()
        .unwrap()
        .iter()
        .all(|(_, c)| c.is_cancelled()));
}

#[tokio::test]
async fn without_a_deadline_nothing_is_cut() {
    let (app, fake) = app(None);
    let req = HttpRequest::builder()
        .method("POST")
        .uri("/v1/chat/completions")
        .body(Body::from(chat(json!({"stream": true})).to_string()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let mut body = resp.into_body();
    let mut seen = String::new();
    // Well past the other test's limits, tokens still come and nothing is cancelled.
    while seen.matches("\"x\"").count() < 100 {
        let frame = body.frame().await.unwrap().unwrap();
        seen.push_str(std::str::from_utf8(frame.data_ref().unwrap()).unwrap());
    }
    assert!(!seen.contains("error"), "{seen}");
    assert!(!fake.submitted.lock().unwrap()[0].1.is_cancelled());
}
