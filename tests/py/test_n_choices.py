"""`n` > 1 on /v1/completions and /v1/chat/completions, streamed and not, and
`owl serve --seed`. Choice i samples with seed + i, so it is the answer a single
request with seed + i gets; the prompt is prefilled once (the other choices reuse
its KV pages through the prefix cache, seen in owl_prompt_tokens_cached_total)."""

import json

import rawhttp

from conftest import MODEL, Server

PAGE = 16
PROMPT = ("The owl keeps a ledger of every mouse it has caught this winter, and each entry "
          "names the field, the hour and the weather. Tonight it writes: ")


def post(url, body, path="/v1/completions"):
    r = rawhttp.post(url + path, json=body, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()


def text_body(**kw):
    return {"model": MODEL, "prompt": PROMPT, "max_tokens": 12, "temperature": 1.0, "seed": 42, **kw}


def test_n_choices_are_seed_offsets_and_prefill_once(server):
    n_prompt = len(rawhttp.post(server.url + "/tokenize", json={"content": PROMPT, "add_special": True}).json()["tokens"])
    assert n_prompt > 2 * PAGE
    before = server.metrics()
    a = post(server.url, text_body(n=3))
    after = server.metrics()
    assert [c["index"] for c in a["choices"]] == [0, 1, 2]
    texts = [c["text"] for c in a["choices"]]
    assert len(set(texts)) > 1, texts
    # The prompt once, every choice's completion tokens.
    assert a["usage"]["prompt_tokens"] == n_prompt
    evaluated = (after["owl_prompt_tokens_total"] - before["owl_prompt_tokens_total"]) - (
        after["owl_prompt_tokens_cached_total"] - before["owl_prompt_tokens_cached_total"])
    first_cached = a["usage"]["prompt_tokens_details"]["cached_tokens"]
    # Choices 1 and 2 reuse the prompt's whole pages (one token at least is evaluated).
    reusable = (n_prompt - 1) // PAGE * PAGE
    assert evaluated == (n_prompt - first_cached) + 2 * (n_prompt - reusable), (evaluated, n_prompt, first_cached)
    # Reproducible, and choice i is the single request with seed 42 + i.
    b = post(server.url, text_body(n=3))
    assert [c["text"] for c in b["choices"]] == texts
    singles = [post(server.url, text_body(seed=42 + i)) for i in range(3)]
    assert [s["choices"][0]["text"] for s in singles] == texts
    assert a["usage"]["completion_tokens"] == sum(s["usage"]["completion_tokens"] for s in singles)


def read_sse(url, body, path):
    chunks = []
    with rawhttp.stream("POST", url + path, json=body, timeout=300) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("data: "):
                data = line[len("data: "):]
                if data == "[DONE]":
                    return chunks
                chunks.append(json.loads(data))
    raise AssertionError("stream ended without [DONE]")


def test_n_streamed_equals_non_streamed(server):
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "Name a bird."}], "max_tokens": 10,
            "temperature": 1.0, "seed": 7, "n": 2}
    whole = post(server.url, chat, "/v1/chat/completions")
    assert [c["index"] for c in whole["choices"]] == [0, 1]
    chunks = read_sse(server.url, {**chat, "stream": True, "stream_options": {"include_usage": True}},
                      "/v1/chat/completions")
    assert all("error" not in c for c in chunks), chunks
    got, finish = ["", ""], [None, None]
    for c in chunks:
        for ch in c["choices"]:
            got[ch["index"]] += ch["delta"].get("content") or ""
            finish[ch["index"]] = ch["finish_reason"] or finish[ch["index"]]
    assert got == [c["message"]["content"] for c in whole["choices"]]
    assert finish == [c["finish_reason"] for c in whole["choices"]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == whole["usage"]["prompt_tokens"]
    assert chunks[-1]["usage"]["completion_tokens"] == whole["usage"]["completion_tokens"]
    # Completions stream too.
    body = text_body(n=2, stream=True)
    texts = ["", ""]
    for c in read_sse(server.url, body, "/v1/completions"):
        for ch in c["choices"]:
            texts[ch["index"]] += ch["text"]
    assert texts == [c["text"] for c in post(server.url, text_body(n=2))["choices"]]


def test_n_over_the_cap_is_a_400(server):
    r = rawhttp.post(server.url + "/v1/completions", json=text_body(n=17), timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "n" and "between 1 and 16" in r.json()["error"]["message"]


def test_server_seed_is_the_default(server):
    s = Server("--ctx", "1024", "--parallel", "2", "--seed", "42")
    try:
        body = text_body()
        del body["seed"]
        a = post(s.url, body)["choices"][0]["text"]
        assert post(s.url, body)["choices"][0]["text"] == a
        # The same as seed 42 given in the request (to the session server, same model).
        assert post(server.url, text_body())["choices"][0]["text"] == a
    finally:
        s.stop()
