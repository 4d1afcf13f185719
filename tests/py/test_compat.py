"""Drop-in details for clients written against llama-server or a paid API:
any model name is served and echoed back, `--alias`, `--strict-model-names`,
`x-api-key`, and the un-prefixed paths (smollm2-135m-instruct, raw HTTP)."""

import pytest

import rawhttp
from conftest import MODEL, Server

KEY = "sk-compat-key-7d2e"
MSG = [{"role": "user", "content": "Name a color."}]


@pytest.fixture(scope="module")
def strict():
    s = Server("--no-ledger", "--strict-model-names", "--alias", "my-assistant", "--alias", "helper:v1",
               "--api-key", KEY)
    yield s
    s.stop()


def chat(url, path="/v1/chat/completions", headers=None, **kw):
    body = {"messages": MSG, "max_tokens": 6, "temperature": 0, **kw}
    return rawhttp.post(url + path, json=body, headers=headers or {}, timeout=120)


def test_any_model_name_is_served_and_echoed(server):
    base = chat(server.url, model=MODEL).json()
    for name in ["gpt-4o", "claude-sonnet-4-5", "gemma3-270m"]:
        r = chat(server.url, model=name)
        assert r.status_code == 200, r.text
        v = r.json()
        assert v["model"] == name
        # The loaded model answered: the same greedy text as under its own name.
        assert v["choices"][0]["message"]["content"] == base["choices"][0]["message"]["content"]
    r = rawhttp.post(server.url + "/v1/completions", json={"model": "text-davinci-003", "prompt": "One, two,",
                                                           "max_tokens": 3, "temperature": 0})
    assert r.status_code == 200 and r.json()["model"] == "text-davinci-003", r.text
    # Without a name, the loaded model's.
    assert chat(server.url).json()["model"] == MODEL


def test_streamed_chunks_echo_the_name(server):
    r = rawhttp.post(server.url + "/v1/chat/completions",
                     json={"messages": MSG, "max_tokens": 4, "temperature": 0, "stream": True, "model": "gpt-4o-mini"})
    chunks = [line[6:] for line in r.text.splitlines() if line.startswith("data: ") and line != "data: [DONE]"]
    assert chunks and all('"model":"gpt-4o-mini"' in c for c in chunks), r.text


def test_unprefixed_paths(server):
    want = chat(server.url).json()["choices"][0]["message"]["content"]
    r = chat(server.url, path="/chat/completions")
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == want, r.text
    r = rawhttp.post(server.url + "/completions", json={"prompt": "One, two,", "max_tokens": 3, "temperature": 0})
    assert r.status_code == 200 and r.json()["object"] == "text_completion", r.text
    r = rawhttp.get(server.url + "/models")
    assert r.status_code == 200 and r.json()["data"][0]["id"] == MODEL, r.text
    r = rawhttp.post(server.url + "/embeddings", json={"input": "owl"})
    assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) > 0, r.text


def test_x_api_key_is_accepted_like_bearer(strict):
    assert chat(strict.url, headers={"x-api-key": KEY}).status_code == 200
    assert chat(strict.url, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    for headers in [{}, {"x-api-key": "wrong"}, {"Authorization": "Bearer wrong"}]:
        r = chat(strict.url, headers=headers)
        assert r.status_code == 401, r.text
        assert "x-api-key" in r.json()["error"]["message"]


def test_strict_names_and_aliases(strict):
    auth = {"x-api-key": KEY}
    for name in [MODEL, MODEL + ":latest", "my-assistant", "helper:v1"]:
        r = chat(strict.url, headers=auth, model=name)
        assert r.status_code == 200, r.text
        assert r.json()["model"] == name
    for name, needle in [("gemma3-270m", "not loaded"), ("gpt-4o", "unknown model")]:
        r = chat(strict.url, headers=auth, model=name)
        assert r.status_code == 404, r.text
        err = r.json()["error"]
        assert err["code"] == "model_not_found" and needle in err["message"], err
    models = rawhttp.get(strict.url + "/v1/models", headers=auth).json()["data"]
    ids = [m["id"] for m in models]
    assert ids[:3] == [MODEL, "my-assistant", "helper:v1"], ids
    assert all(m["loaded"] for m in models[:3])
    assert models[1]["alias_of"] == MODEL


def test_each_api_refuses_a_missing_key_in_its_own_shape(strict):
    r = rawhttp.get(strict.url + "/api/tags")
    assert r.status_code == 401 and isinstance(r.json()["error"], str) and "x-api-key" in r.json()["error"], r.text
    r = rawhttp.get(strict.url + "/api/tags", headers={"x-api-key": KEY})
    assert r.status_code == 200 and r.json()["models"][0]["model"] == MODEL, r.text
    r = rawhttp.post(strict.url + "/v1/messages", json={"max_tokens": 4, "messages": MSG})
    assert r.status_code == 401, r.text
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "authentication_error", r.text
    # OpenAI's own shape elsewhere.
    r = rawhttp.get(strict.url + "/v1/models")
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error", r.text
    # --strict-model-names holds on the other APIs too.
    r = rawhttp.post(strict.url + "/api/chat", headers={"x-api-key": KEY},
                     json={"model": "gpt-4o", "messages": MSG, "stream": False})
    assert r.status_code == 404 and "unknown model" in r.json()["error"], r.text
    r = rawhttp.post(strict.url + "/api/chat", headers={"x-api-key": KEY},
                     json={"model": "my-assistant", "messages": MSG, "stream": False, "options": {"num_predict": 2}})
    assert r.status_code == 200 and r.json()["model"] == "my-assistant" and r.json()["done"], r.text


def test_max_tokens_default_applies_only_without_a_limit():
    """`--max-tokens N` (llama-server's --n-predict) caps answers whose request sets
    no limit; a request's own max_tokens still wins, above N too."""
    s = Server("--no-ledger", "--max-tokens", "3")
    try:
        msgs = [{"role": "user", "content": "Write a long story about a dragon."}]
        r = rawhttp.post(s.url + "/v1/chat/completions", json={"messages": msgs, "temperature": 0},
                         timeout=120).json()
        assert r["usage"]["completion_tokens"] == 3 and r["choices"][0]["finish_reason"] == "length", r
        r = rawhttp.post(s.url + "/v1/completions", json={"prompt": "Once upon a time", "temperature": 0},
                         timeout=120).json()
        assert r["usage"]["completion_tokens"] == 3, r
        r = chat(s.url, max_tokens=5, messages=msgs).json()
        assert r["usage"]["completion_tokens"] == 5, r
    finally:
        s.stop()
