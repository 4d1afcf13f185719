//! Errors on the Anthropic (`/v1/messages`) and Ollama (`/api/*`) routes come in
//! each API's own shape, including those made before any handler runs: the drain
//! gate's 503, a model still loading, auth's 401, the body limit's 413, and the
//! 404/405 fallbacks. OpenAI's routes keep OpenAI's shape. No engine is needed:
//! none of these requests reaches one.

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use owl_server::{router, AppState, ServerOptions};
use serde_json::{json, Value};
use tower::ServiceExt;

async fn send(app: &Router, method: &str, uri: &str, body: String, key: Option<&str>) -> (StatusCode, HeaderMap, Value) {
    let mut b = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(k) = key {
        b = b.header("x-api-key", k);
    }
    let resp = app.clone().oneshot(b.body(Body::from(body)).unwrap()).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{method} {uri}: not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    (parts.status, parts.headers, v)
}

fn messages_body() -> String {
    json!({"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}).to_string()
}

fn ollama_body() -> String {
    json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).to_string()
}

fn chat_body() -> String {
    json!({"messages": [{"role": "user", "content": "hi"}]}).to_string()
}

/// Anthropic's shape: `{"type":"error","error":{"type":T,"message":M}}`, nothing else.
fn anthropic_error(v: &Value, want_type: &str) -> String {
    assert_eq!(v["type"], "error", "not an Anthropic error: {v}");
    assert_eq!(v["error"]["type"], want_type, "{v}");
    assert_eq!(v.as_object().unwrap().len(), 2, "{v}");
    let m = v["error"]["message"].as_str().unwrap_or_else(|| panic!("no message: {v}"));
    assert!(!m.is_empty());
    m.to_string()
}

/// Ollama's shape: `{"error":"M"}`, a string and nothing else.
fn ollama_error(v: &Value) -> String {
    assert_eq!(v.as_object().map(|o| o.len()), Some(1), "not an Ollama error: {v}");
    let m = v["error"].as_str().unwrap_or_else(|| panic!("not an Ollama error: {v}"));
    assert!(!m.is_empty());
    m.to_string()
}

/// OpenAI's shape: an `error` object with message, type, param and code.
fn openai_error(v: &Value) -> &Value {
    let e = &v["error"];
    assert!(e["message"].is_string() && e["type"].is_string(), "not an OpenAI error: {v}");
    assert!(e.get("param").is_some() && e.get("code").is_some(), "not an OpenAI error: {v}");
    e
}

#[tokio::test]
async fn drain_refusals_come_in_each_apis_shape() {
    let state = AppState::new(ServerOptions::default());
    let app = router(state.clone());
    state.drain().start();

    let (s, h, v) = send(&app, "POST", "/v1/messages", messages_body(), None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(h.get(header::RETRY_AFTER).is_some(), "no Retry-After on {v}");
    assert!(anthropic_error(&v, "overloaded_error").contains("shutting down"), "{v}");

    let (s, _, v) = send(&app, "POST", "/v1/messages/count_tokens", messages_body(), None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    anthropic_error(&v, "overloaded_error");

    for (uri, body) in [("/api/chat", ollama_body()), ("/api/generate", json!({"model": "m", "prompt": "hi"}).to_string())] {
        let (s, h, v) = send(&app, "POST", uri, body, None).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{uri}");
        assert!(h.get(header::RETRY_AFTER).is_some(), "{uri}: no Retry-After");
        assert!(ollama_error(&v).contains("shutting down"), "{uri}: {v}");
    }
    let (s, _, v) = send(&app, "GET", "/api/tags", String::new(), None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    ollama_error(&v);

    // OpenAI's routes keep OpenAI's shape, with the code that says why.
    let (s, h, v) = send(&app, "POST", "/v1/chat/completions", chat_body(), None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(h.get(header::RETRY_AFTER).is_some());
    assert_eq!(openai_error(&v)["code"], "draining", "{v}");

    let (s, _, _) = send(&app, "GET", "/health", String::new(), None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "/health while draining");
}

#[tokio::test]
async fn errors_before_any_handler_come_in_each_apis_shape() {
    let opts = ServerOptions { max_body_bytes: 4096, ..Default::default() };
    let app = router(AppState::new(opts));

    // No model loaded yet: 503, Anthropic's overloaded_error / Ollama's {"error"}.
    let (s, _, v) = send(&app, "POST", "/v1/messages", messages_body(), None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    anthropic_error(&v, "overloaded_error");
    let (s, _, v) = send(&app, "POST", "/api/chat", ollama_body(), None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    ollama_error(&v);

    // A body over the limit.
    let big = json!({"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "x".repeat(8192)}]}).to_string();
    let (s, _, v) = send(&app, "POST", "/v1/messages", big.clone(), None).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    anthropic_error(&v, "request_too_large");
    let (s, _, v) = send(&app, "POST", "/api/chat", big, None).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    ollama_error(&v);

    // The router's own fallbacks: a wrong method, an unknown path.
    let (s, _, v) = send(&app, "GET", "/v1/messages", String::new(), None).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{v}");
    anthropic_error(&v, "invalid_request_error");
    let (s, _, v) = send(&app, "GET", "/api/no-such-thing", String::new(), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    ollama_error(&v);
    let (s, _, v) = send(&app, "GET", "/v1/no-such-thing", String::new(), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    openai_error(&v);
}

#[tokio::test]
async fn auth_refusals_come_in_each_apis_shape() {
    let opts = ServerOptions { api_key: Some("sekrit".into()), ..Default::default() };
    let app = router(AppState::new(opts));
    let (s, _, v) = send(&app, "POST", "/v1/messages", messages_body(), Some("wrong")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    anthropic_error(&v, "authentication_error");
    let (s, _, v) = send(&app, "POST", "/api/chat", ollama_body(), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    ollama_error(&v);
    // The right key gets past auth to the next refusal (no model loaded), still shaped.
    let (s, _, v) = send(&app, "POST", "/v1/messages", messages_body(), Some("sekrit")).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    anthropic_error(&v, "overloaded_error");
}
