"""Bad requests over raw HTTP: each is a 4xx in OpenAI's error shape with a
clear message, and the server stays healthy."""

import rawhttp
import pytest

from conftest import CTX, MODEL

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0}


def with_(**kw):
    return {**CHAT, **kw}


CASES = [
    ("/v1/chat/completions", b'{"model": "x", "messages": [', 400, "not valid JSON"),
    ("/v1/chat/completions", b"not json at all", 400, "not valid JSON"),
    ("/v1/chat/completions", with_(max_tokens="ten"), 400, "max_tokens"),
    ("/v1/chat/completions", with_(temperature="hot"), 400, "temperature"),
    ("/v1/chat/completions", with_(messages="hello"), 400, "messages"),
    ("/v1/chat/completions", with_(messages=[{"role": "user", "content": 5}]), 400, "messages[0].content"),
    ("/v1/chat/completions", with_(stop=7), 400, "stop"),
    ("/v1/chat/completions", with_(max_tokens=-3), 400, "at least 1"),
    ("/v1/chat/completions", with_(max_tokens=10**12), 400, f"over the context of {CTX}"),
    ("/v1/chat/completions", with_(max_tokens=10**30), 400, "max_tokens"),
    ("/v1/chat/completions", with_(max_completion_tokens=0), 400, "max_completion_tokens"),
    ("/v1/chat/completions", with_(messages=[]), 400, "at least one message"),
    ("/v1/chat/completions", with_(n=17), 400, "`n`"),
    ("/v1/chat/completions", with_(n=0), 400, "`n`"),
    ("/v1/completions", {"model": MODEL, "prompt": "Hi", "best_of": 3}, 400, "`best_of`"),
    ("/v1/chat/completions", {"model": MODEL}, 400, "messages"),
    ("/v1/completions", {"model": MODEL, "prompt": {"a": 1}}, 400, "prompt"),
    ("/v1/completions", {"model": MODEL, "prompt": [1, 2, 10**9]}, 400, "vocabulary"),
    ("/tokenize", {"text": "hi"}, 400, "content"),
    ("/detokenize", {"tokens": [10**9]}, 400, "vocabulary"),
]


def check_error(r, status, needle):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"}, err
    assert needle in err["message"], err["message"]
    return err


@pytest.mark.parametrize("path,body,status,needle", CASES)
def test_bad_request(server, path, body, status, needle):
    kw = {"content": body, "headers": {"content-type": "application/json"}} if isinstance(body, bytes) else {"json": body}
    r = rawhttp.post(server.url + path, timeout=30, **kw)
    check_error(r, status, needle)
    assert rawhttp.get(server.url + "/health").status_code == 200


def test_prompt_over_context(server):
    prompt = "owl " * (CTX + 500)
    n = len(rawhttp.post(server.url + "/tokenize", json={"content": prompt, "add_special": True}).json()["tokens"])
    assert n > CTX
    r = rawhttp.post(server.url + "/v1/completions", json={"model": MODEL, "prompt": prompt, "max_tokens": 4}, timeout=60)
    err = check_error(r, 400, f"by {n + 1 - CTX}")
    assert err["code"] == "context_length_exceeded"
    assert f"{n} tokens" in err["message"]
    r = rawhttp.post(server.url + "/v1/chat/completions", json=with_(messages=[{"role": "user", "content": prompt}]), timeout=60)
    check_error(r, 400, "over the context")
    # Still serving.
    r = rawhttp.post(server.url + "/v1/chat/completions", json=CHAT, timeout=60)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]


def test_body_limit(server):
    r = rawhttp.post(server.url + "/v1/completions", json={"model": MODEL, "prompt": "x" * (5 << 20)}, timeout=60)
    check_error(r, 413, "limit")


def test_unknown_path_and_method(server):
    check_error(rawhttp.get(server.url + "/v1/nope"), 404, "no such endpoint")
    check_error(rawhttp.get(server.url + "/v1/chat/completions"), 405, "method")


def test_metrics_count_by_status(server):
    rawhttp.post(server.url + "/v1/chat/completions", json=with_(max_tokens=-1))
    text = rawhttp.get(server.url + "/metrics").text
    assert 'owl_http_requests_total{route="/v1/chat/completions",status="400"}' in text
    for name in ("owl_queue_depth", "owl_active_sequences", "owl_kv_pages_used", "owl_prompt_tokens_total",
                 "owl_generated_tokens_total", "owl_time_to_first_token_seconds_bucket",
                 "owl_inter_token_latency_seconds_bucket"):
        assert name in text, name
