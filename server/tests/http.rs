//! The HTTP layer in process, over a fake engine: shapes, validation and error
//! paths. The real binary with a real model is tested in tests/server_*.rs and
//! tests/py/ at the repository root.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request as HttpRequest, StatusCode};
use axum::Router;
use common::{chat_body, error_message, fake, post, send, sse_data, Fake};
use http_body_util::BodyExt;
use owl_engine::service::Prompt;
use owl_server::{router, AppState, KnownModel, ServerOptions};
use serde_json::{json, Value};
use tower::ServiceExt;

fn options() -> ServerOptions {
    ServerOptions {
        known_models: vec![
            KnownModel {
                name: "fake-model".into(),
                file: "Fake-Model.Q4_0.gguf".into(),
                aliases: vec!["fake".into()],
            },
            KnownModel {
                name: "other-model".into(),
                file: "other.gguf".into(),
                aliases: vec![],
            },
        ],
        model_arg: "fake-model".into(),
        max_body_bytes: 64 * 1024,
        ..Default::default()
    }
}

fn app_with(opts: ServerOptions) -> (Router, Arc<Fake>, AppState) {
    let f = fake();
    let state = AppState::new(opts);
    state.set_engine(f.clone());
    (router(state.clone()), f, state)
}

fn app() -> (Router, Arc<Fake>) {
    let (r, f, _) = app_with(options());
    (r, f)
}

#[tokio::test]
async fn chat_non_streaming_shape_and_usage() {
    let (app, fake) = app();
    let (s, v) = post(
        &app,
        "/v1/chat/completions",
        chat_body(json!({"max_tokens": 5, "seed": 3, "top_k": 7, "ignore_eos": true})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["model"], "fake-model");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], "hello");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    let prompt_len = 1 + "user: hi\nassistant:".len();
    assert_eq!(v["usage"]["prompt_tokens"], prompt_len);
    assert_eq!(v["usage"]["completion_tokens"], 5);
    assert_eq!(v["usage"]["total_tokens"], prompt_len + 5);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 2);
    let (req, _) = fake.submitted.lock().unwrap()[0].clone();
    assert_eq!(req.max_tokens, Some(5));
    assert_eq!(req.sampling.temperature, 0.0);
    assert_eq!(req.sampling.top_k, 7);
    assert_eq!(req.sampling.seed, Some(3));
    assert!(!req.stop_at_eog);
    assert!(matches!(req.prompt, Prompt::Chat(ref m) if m[0].content == "hi"));
}

#[tokio::test]
async fn chat_streaming_equals_non_streaming() {
    let (app, _) = app();
    let (_, v) = post(
        &app,
        "/v1/chat/completions",
        chat_body(json!({"stop": [","]})),
    )
    .await;
    let full = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(full, "hello world");
    let (s, h, text) = send(
        &app,
        "POST",
        "/v1/chat/completions",
        chat_body(json!({"stop": ",", "stream": true, "stream_options": {"include_usage": true}}))
            .to_string(),
        &[],
    )
    .await;
    assert_eq!(s, 200);
    assert!(h[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let data = sse_data(&text);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let mut streamed = String::new();
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        if let Some(t) = c["choices"][0]["delta"]["content"].as_str() {
            streamed.push_str(t);
        }
    }
    assert_eq!(streamed, full);
    let n = chunks.len();
    assert_eq!(chunks[n - 2]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[n - 1]["choices"], json!([]));
    assert_eq!(chunks[n - 1]["usage"]["completion_tokens"], full.len());
    assert!(chunks[1]["usage"].is_null());
}

#[tokio::test]
async fn completions_and_logprobs() {
    let (app, fake) = app();
    let (s, v) = post(
        &app,
        "/v1/completions",
        json!({"prompt": "abc", "max_tokens": 2, "logprobs": 2}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], "he");
    assert_eq!(v["usage"]["prompt_tokens"], 4);
    let lp = &v["choices"][0]["logprobs"];
    assert_eq!(lp["tokens"], json!(["h", "e"]));
    assert_eq!(lp["token_logprobs"], json!([-0.5, -0.5]));
    assert_eq!(lp["text_offset"], json!([0, 1]));
    assert_eq!(lp["top_logprobs"][0], json!({"a": -1.0, "b": -1.0}));
    assert_eq!(fake.submitted.lock().unwrap()[0].0.logprobs, Some(2));

    let (_, v) = post(
        &app,
        "/v1/chat/completions",
        chat_body(json!({"max_tokens": 1, "logprobs": true, "top_logprobs": 1})),
    )
    .await;
    let c = &v["choices"][0]["logprobs"]["content"][0];
    assert_eq!(c["token"], "h");
    assert_eq!(c["bytes"], json!([104]));
    assert_eq!(c["top_logprobs"][0]["token"], "a");

    let (_, _, text) = send(
        &app,
        "POST",
        "/v1/completions",
        json!({"prompt": [5, 6], "stream": true, "max_tokens": 3}).to_string(),
        &[],
    )
    .await;
    let data = sse_data(&text);
    let joined: String = data[..data.len() - 1]
        .iter()
        .map(|d| {
            serde_json::from_str::<Value>(d).unwrap()["choices"][0]["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(joined, "hel");
    assert!(
        fake.submitted.lock().unwrap()[2].0.stop_at_eog,
        "end-of-generation stops by default"
    );
    assert!(
        matches!(fake.submitted.lock().unwrap()[2].0.prompt, Prompt::Tokens(ref t) if t == &[5, 6])
    );
}

#[tokio::test]
async fn model_names() {
    // By default any name is served by the loaded model and echoed back (llama-server's rule).
    let (app, _) = app();
    for (name, echoed) in [
        (json!(null), "fake-model"),
        (json!(""), "fake-model"),
        (json!("FAKE-MODEL"), "FAKE-MODEL"),
        (json!("gpt-4o"), "gpt-4o"),
        (json!("other-model"), "other-model"),
    ] {
        let (s, v) = post(
            &app,
            "/v1/chat/completions",
            chat_body(json!({"model": name})),
        )
        .await;
        assert_eq!(s, 200, "{name}: {v}");
        assert_eq!(v["model"], echoed, "{name}: {v}");
    }
    let (s, v) = post(
        &app,
        "/v1/completions",
        json!({"model": "gpt-4", "prompt": "x"}),
    )
    .await;
    assert_eq!(
        (s.as_u16(), v["model"].as_str()),
        (200, Some("gpt-4")),
        "{v}"
    );

    // --strict-model-names: only the loaded model's names and aliases.
    let (app, _, _) = app_with(ServerOptions {
        strict_model_names: true,
        aliases: vec!["my-assistant".into()],
        ..options()
    });
    for ok in [
        json!(null),
        json!(""),
        json!("fake-model"),
        json!("FAKE-MODEL"),
        json!("fake-model:latest"),
        json!("Fake-Model.Q4_0.gguf"),
        json!("Fake-Model.Q4_0"),
        json!("fake"),
        json!("my-assistant"),
    ] {
        let (s, v) = post(
            &app,
            "/v1/chat/completions",
            chat_body(json!({"model": ok})),
        )
        .await;
        assert_eq!(s, 200, "{ok}: {v}");
    }
    let (s, v) = post(
        &app,
        "/v1/chat/completions",
        chat_body(json!({"model": "other-model"})),
    )
    .await;
    assert_eq!(s, 404);
    assert!(error_message(&v).contains("not loaded"));
    assert_eq!(v["error"]["code"], "model_not_found");
    let (s, v) = post(
        &app,
        "/v1/completions",
        json!({"model": "gpt-4", "prompt": "x"}),
    )
    .await;
    assert_eq!(s, 404);
    assert!(error_message(&v).contains("unknown model \"gpt-4\""));

    let (s, _, text) = send(&app, "GET", "/v1/models", Body::empty(), &[]).await;
    assert_eq!(s, 200);
    let v: Value = serde_json::from_str(&text).unwrap();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["fake-model", "my-assistant", "other-model"]);
    assert_eq!(v["data"][0]["loaded"], true);
    assert_eq!(v["data"][1]["alias_of"], "fake-model");
    assert_eq!(v["data"][2]["loaded"], false);
}

#[tokio::test]
async fn validation_errors_are_400_with_openai_shape() {
    let (app, fake) = app();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "/v1/chat/completions",
            "{\"messages\": [".into(),
            "not valid JSON",
        ),
        ("/v1/chat/completions", "[]".into(), "JSON object"),
        (
            "/v1/chat/completions",
            chat_body(json!({"max_tokens": "ten"})).to_string(),
            "max_tokens",
        ),
        (
            "/v1/chat/completions",
            chat_body(json!({"max_tokens": -5})).to_string(),
            "at least 1",
        ),
        (
            "/v1/chat/completions",
            chat_body(json!({"max_tokens": 1_000_000_000_000u64})).to_string(),
            "over the context of 64",
        ),
        (
            "/v1/chat/completions",
            chat_body(json!({"max_completion_tokens": 0})).to_string(),
            "max_completion_tokens",
        ),
        (
            "/v1/chat/completions",
            chat_body(json!({"temperature": "warm"})).to_string(),
            "temperature",
        ),
        (
            "/v1/chat/completions",
            chat_body(json!({"messages": []})).to_string(),
            "at least one message",
        ),
        (
            "/v1/chat/completions",
            chat_body(json!({"messages": "hi"})).to_string(),
            "messages",
        ),
        (
            "/v1/chat/completions",
            chat_body(json!({"messages": [{"role": "user", "content": 5}]})).to_string(),
            "messages[0].content",
        ),
        (
            "/v1/chat/completions",
            chat_body(json!({"n": 99})).to_string(),
            "n",
        ),
        (
            "/v1/chat/completions",
            chat_body(json!({"stream": "yes"})).to_string(),
            "stream",
        ),
        (
            "/v1/completions",
            json!({"prompt": 7}).to_string(),
            "prompt",
        ),
        (
            "/v1/completions",
            json!({"max_tokens": 3}).to_string(),
            "prompt",
        ),
        (
            "/v1/completions",
            json!({"prompt": "x".repeat(100)}).to_string(),
            "over the context of 64 by 38",
        ),
        ("/tokenize", json!({"content": 5}).to_string(), "content"),
        (
            "/detokenize",
            json!({"tokens": [1, 999]}).to_string(),
            "outside the vocabulary",
        ),
        ("/detokenize", json!({"tokens": [-1]}).to_string(), "tokens"),
    ];
    for (uri, body, needle) in cases {
        let (s, _, text) = send(&app, "POST", uri, body.clone(), &[]).await;
        assert_eq!(s, 400, "{uri} {body}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        let msg = error_message(&v);
        assert!(
            msg.contains(needle),
            "{uri} {body}: {msg:?} lacks {needle:?}"
        );
    }
    assert!(
        fake.submitted.lock().unwrap().is_empty(),
        "no invalid request reaches the engine"
    );
    let (s, _, _) = send(&app, "GET", "/health", Body::empty(), &[]).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn body_limit_queue_full_and_unknown_routes() {
    let (app, fake) = app();
    let big = json!({"prompt": "x".repeat(70 * 1024)}).to_string();
    let (s, _, text) = send(&app, "POST", "/v1/completions", big, &[]).await;
    assert_eq!(s, 413, "{text}");
    assert!(error_message(&serde_json::from_str(&text).unwrap()).contains("65536 bytes"));

    fake.queue_full.store(true, Ordering::Relaxed);
    let (s, h, text) = send(
        &app,
        "POST",
        "/v1/completions",
        json!({"prompt": "x"}).to_string(),
        &[],
    )
    .await;
    assert_eq!(s, 503, "{text}");
    assert_eq!(h[header::RETRY_AFTER], "1");
    assert!(error_message(&serde_json::from_str(&text).unwrap()).contains("queue is full"));
    fake.queue_full.store(false, Ordering::Relaxed);

    let (s, _, text) = send(&app, "GET", "/v2/nothing", Body::empty(), &[]).await;
    assert_eq!(s, 404);
    error_message(&serde_json::from_str(&text).unwrap());
    let (s, _, text) = send(&app, "GET", "/v1/chat/completions", Body::empty(), &[]).await;
    assert_eq!(s, 405);
    error_message(&serde_json::from_str(&text).unwrap());
}

#[tokio::test]
async fn api_key_and_cors() {
    let (app, _, _) = app_with(ServerOptions {
        api_key: Some("sekrit".into()),
        cors: Some("http://ui.example".into()),
        ..options()
    });
    let body = json!({"prompt": "x", "max_tokens": 1}).to_string();
    let (s, _, text) = send(&app, "POST", "/v1/completions", body.clone(), &[]).await;
    assert_eq!(s, 401);
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["error"]["type"],
        "authentication_error"
    );
    let (s, _, _) = send(
        &app,
        "POST",
        "/v1/completions",
        body.clone(),
        &[("authorization", "Bearer wrong")],
    )
    .await;
    assert_eq!(s, 401);
    let (s, _, _) = send(
        &app,
        "GET",
        "/v1/models",
        Body::empty(),
        &[("authorization", "Bearer sekri")],
    )
    .await;
    assert_eq!(s, 401);
    // Anthropic's header works like a bearer token.
    for (key, status) in [("sekrit", 200), ("sekri", 401)] {
        let (s, _, _) = send(
            &app,
            "GET",
            "/v1/models",
            Body::empty(),
            &[("x-api-key", key)],
        )
        .await;
        assert_eq!(s, status, "x-api-key {key}");
    }
    let (s, h, _) = send(
        &app,
        "POST",
        "/v1/completions",
        body,
        &[
            ("authorization", "Bearer sekrit"),
            ("origin", "http://ui.example"),
        ],
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "http://ui.example");
    // /health needs no key.
    let (s, _, _) = send(&app, "GET", "/health", Body::empty(), &[]).await;
    assert_eq!(s, 200);
    // Preflight needs no key; another origin gets no allow header.
    let pre = [
        ("origin", "http://ui.example"),
        ("access-control-request-method", "POST"),
    ];
    let (s, h, _) = send(&app, "OPTIONS", "/v1/chat/completions", Body::empty(), &pre).await;
    assert_eq!(s, 204);
    assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "http://ui.example");
    assert!(h[header::ACCESS_CONTROL_ALLOW_HEADERS]
        .to_str()
        .unwrap()
        .contains("authorization"));
    let (_, h, _) = send(
        &app,
        "GET",
        "/health",
        Body::empty(),
        &[("origin", "http://evil.example")],
    )
    .await;
    assert!(h.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());

    // Without --cors nothing is added.
    let (app, _) = self::app();
    let (_, h, _) = send(
        &app,
        "GET",
        "/health",
        Body::empty(),
        &[("origin", "http://ui.example")],
    )
    .await;
    assert!(h.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
}

#[tokio::test]
async fn loading_answers_503() {
    let state = AppState::new(options());
    let app = router(state.clone());
    let (s, h, text) = send(&app, "GET", "/health", Body::empty(), &[]).await;
    assert_eq!(s, 503);
    assert!(h.contains_key(header::RETRY_AFTER));
    assert!(error_message(&serde_json::from_str(&text).unwrap()).contains("loading"));
    let (s, _) = post(&app, "/v1/chat/completions", chat_body(json!({}))).await;
    assert_eq!(s, 503);
    // Validation still answers while loading.
    let (s, _) = post(
        &app,
        "/v1/chat/completions",
        chat_body(json!({"messages": []})),
    )
    .await;
    assert_eq!(s, 400);
    state.set_engine(fake());
    let (s, _, _) = send(&app, "GET", "/health", Body::empty(), &[]).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn tokenize_detokenize_apply_template_metrics() {
    let (app, _) = app();
    let (s, v) = post(&app, "/tokenize", json!({"content": "ab"})).await;
    assert_eq!((s, v), (StatusCode::OK, json!({"tokens": [97, 98]})));
    let (_, v) = post(
        &app,
        "/tokenize",
        json!({"content": "ab", "add_special": true, "with_pieces": true}),
    )
    .await;
    assert_eq!(
        v,
        json!({"tokens": [{"id": 1, "piece": ""}, {"id": 97, "piece": "a"}, {"id": 98, "piece": "b"}]})
    );
    let (_, v) = post(&app, "/detokenize", json!({"tokens": [104, 105]})).await;
    assert_eq!(v, json!({"content": "hi"}));
    let (_, v) = post(
        &app,
        "/apply-template",
        json!({"messages": [{"role": "user", "content": "q"}]}),
    )
    .await;
    assert_eq!(v, json!({"prompt": "user: q\nassistant:"}));

    post(
        &app,
        "/v1/completions",
        json!({"prompt": "x", "max_tokens": 1}),
    )
    .await;
    post(&app, "/v1/completions", json!({"prompt": 1})).await;
    let (s, h, text) = send(&app, "GET", "/metrics", Body::empty(), &[]).await;
    assert_eq!(s, 200);
    assert!(h[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert!(
        text.contains("owl_http_requests_total{route=\"/v1/completions\",status=\"200\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("owl_http_requests_total{route=\"/v1/completions\",status=\"400\"} 1"),
        "{text}"
    );
    assert!(text.contains("\nowl_requests_total 1\n"), "{text}");
    for name in [
        "owl_queue_depth",
        "owl_active_sequences",
        "owl_kv_pages_used",
        "owl_time_to_first_token_seconds_bucket",
        "owl_inter_token_latency_seconds_count",
        "owl_prompt_tokens_total",
        "owl_generated_tokens_total",
    ] {
        assert!(text.contains(name), "{name} missing");
    }
}

/// Dropping a streaming response (the client went away) cancels the request.
#[tokio::test]
async fn dropped_stream_cancels_the_request() {
    let (app, fake) = app();
    fake.slow.store(true, Ordering::Relaxed);
    let req = HttpRequest::builder()
        .method("POST")
        .uri("/v1/chat/completions")
        .body(Body::from(chat_body(json!({"stream": true})).to_string()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut seen = String::new();
    while !seen.contains("\"x\"") {
        let frame = body.frame().await.unwrap().unwrap();
        seen.push_str(std::str::from_utf8(frame.data_ref().unwrap()).unwrap());
    }
    let cancel = fake.submitted.lock().unwrap()[0].1.clone();
    assert!(!cancel.is_cancelled());
    drop(body);
    assert!(
        cancel.is_cancelled(),
        "dropping the stream must cancel the engine request"
    );
}
