"""llama-server's own API on owl: native `/completion` (text or token prompts,
streamed and not, `n_probs`, `return_tokens`, `stop_type`), `/props`, and token
counting (`/v1/chat/completions/input_tokens`, `/v1/responses/input_tokens`), plus
the matched stop string: `stop_reason` on OpenAI choices (vLLM's name) and
Anthropic's `stop_sequence` (smollm2-135m-instruct, the session server)."""

import json

import anthropic

import rawhttp

PROMPT = "I believe the meaning of life is"


def native(server, **body):
    r = rawhttp.post(server.url + "/completion", json={"prompt": PROMPT, "temperature": 0, **body}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def native_stream(server, **body):
    out = []
    with rawhttp.stream("POST", server.url + "/completion",
                        json={"prompt": PROMPT, "temperature": 0, "stream": True, **body}, timeout=120) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("data: "):
                assert line != "data: [DONE]", "a native stream ends with its closing object"
                out.append(json.loads(line[len("data: "):]))
    return out


def test_native_completion_matches_openai_completions(server):
    v = native(server, n_predict=8, return_tokens=True)
    oai = rawhttp.post(server.url + "/v1/completions",
                       json={"prompt": PROMPT, "max_tokens": 8, "temperature": 0}, timeout=120).json()
    assert v["content"] == oai["choices"][0]["text"]
    assert v["stop"] is True and v["stop_type"] == "limit" and v["stopping_word"] == ""
    assert v["tokens_predicted"] == 8 == v["timings"]["predicted_n"]
    assert v["tokens_evaluated"] == oai["usage"]["prompt_tokens"]
    assert len(v["tokens"]) == 8 and all(isinstance(t, int) for t in v["tokens"])
    # The ids are the text: detokenized they give the content back.
    d = rawhttp.post(server.url + "/detokenize", json={"tokens": v["tokens"]}, timeout=30).json()
    assert d["content"] == v["content"]
    assert v["generation_settings"]["n_predict"] == 8
    assert v["prompt"] == PROMPT and isinstance(v["has_new_line"], bool)
    assert native(server, n_predict=4)["tokens"] == [], "ids only with return_tokens"


def test_native_prompt_as_token_ids(server):
    ids = rawhttp.post(server.url + "/tokenize", json={"content": PROMPT}, timeout=30).json()["tokens"]
    assert native(server, prompt=ids, n_predict=6)["content"] == native(server, n_predict=6)["content"]


def test_native_stream_equals_non_stream(server):
    whole = native(server, n_predict=12)
    chunks = native_stream(server, n_predict=12)
    *tokens, last = chunks
    assert all(c["stop"] is False and len(c["tokens"]) >= 1 for c in tokens)
    assert last["stop"] is True and last["stop_type"] == "limit"
    assert last["timings"]["predicted_n"] == 12
    assert "".join(c["content"] for c in chunks) == whole["content"]
    assert sum(len(c["tokens"]) for c in chunks) == 12


def test_native_stop_word_and_n_probs(server):
    free = native(server, n_predict=16)["content"]
    word = free.split()[2]
    v = native(server, n_predict=16, stop=[word], n_probs=3)
    assert v["stop_type"] == "word" and v["stopping_word"] == word
    assert v["content"] == free[: free.index(word)]
    probs = v["completion_probabilities"]
    assert len(probs) == v["tokens_predicted"]
    for p in probs:
        assert p["logprob"] <= 0 and len(p["top_logprobs"]) == 3
        # Greedy: the chosen token is the most likely one.
        assert p["id"] == p["top_logprobs"][0]["id"]
    chunks = native_stream(server, n_predict=4, n_probs=2)
    assert all(len(c["completion_probabilities"]) >= 1 for c in chunks[:-1])


def test_native_post_sampling_probs(server):
    """`post_sampling_probs`: the distribution each token was drawn from (after top-k 3 here),
    as probabilities: at most 3 candidates, summing to 1, the drawn token among them; the
    draw itself is the one without it (same seed, same text)."""
    body = dict(n_predict=6, n_probs=10, temperature=1.0, top_k=3, top_p=1.0, min_p=0.0, seed=5)
    plain = native(server, **body)
    v = native(server, post_sampling_probs=True, **body)
    assert v["content"] == plain["content"]
    probs = v["completion_probabilities"]
    assert len(probs) == v["tokens_predicted"] == 6
    for p in probs:
        assert 0 < p["prob"] <= 1 and "logprob" not in p
        top = p["top_probs"]
        assert 1 <= len(top) <= 3 and all(0 < t["prob"] <= 1 for t in top)
        assert abs(sum(t["prob"] for t in top) - 1) < 1e-4
        assert [t["prob"] for t in top] == sorted((t["prob"] for t in top), reverse=True)
        assert p["prob"] == next(t["prob"] for t in top if t["id"] == p["id"])
    # Greedy: the one token, probability 1.
    g = native(server, n_predict=2, n_probs=5, post_sampling_probs=True)["completion_probabilities"]
    assert all(p["prob"] == 1 and len(p["top_probs"]) == 1 for p in g)


def test_native_refusals_name_the_field(server):
    for body, field in [({"n_predict": 0}, "n_predict"), ({"mirostat": 2}, "mirostat"),
                        ({"n_probs": 50}, "n_probs"), ({"no_such_field": 1}, "no_such_field")]:
        r = rawhttp.post(server.url + "/completion", json={"prompt": PROMPT, **body}, timeout=30)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["param"] == field


def test_props(server):
    v = rawhttp.get(server.url + "/props", timeout=30).json()
    assert v["model_path"].endswith(".gguf")
    assert v["total_slots"] == 4
    assert v["default_generation_settings"]["n_ctx"] == 4096
    assert "<|im_start|>" in v["chat_template"]


def test_input_tokens(server):
    msgs = [{"role": "system", "content": "Book"}, {"role": "user", "content": "What is the best book"}]
    r = rawhttp.post(server.url + "/v1/chat/completions/input_tokens", json={"messages": msgs}, timeout=30)
    assert r.status_code == 200, r.text
    n = r.json()["input_tokens"]
    answer = rawhttp.post(server.url + "/v1/chat/completions",
                          json={"messages": msgs, "max_tokens": 1}, timeout=60).json()
    assert n == answer["usage"]["prompt_tokens"]
    assert rawhttp.post(server.url + "/chat/completions/input_tokens", json={"messages": msgs},
                        timeout=30).json()["input_tokens"] == n
    r = rawhttp.post(server.url + "/v1/responses/input_tokens",
                     json={"instructions": "Book", "input": "What is the best book"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json() == {"object": "response.input_tokens", "input_tokens": n}
    bad = rawhttp.post(server.url + "/v1/chat/completions/input_tokens", json={"messages": "x"}, timeout=30)
    assert bad.status_code == 400


def test_stop_reason_and_anthropic_stop_sequence(server):
    msgs = [{"role": "user", "content": "Count from one to ten in words."}]
    free = rawhttp.post(server.url + "/v1/chat/completions",
                        json={"messages": msgs, "max_tokens": 24, "temperature": 0}, timeout=60).json()
    text = free["choices"][0]["message"]["content"]
    assert free["choices"][0]["stop_reason"] is None
    word = text.split()[1]
    r = rawhttp.post(server.url + "/v1/chat/completions",
                     json={"messages": msgs, "max_tokens": 24, "temperature": 0, "stop": [word]}, timeout=60).json()
    assert r["choices"][0]["finish_reason"] == "stop" and r["choices"][0]["stop_reason"] == word
    c = anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0)
    m = c.messages.create(model="claude-x", max_tokens=24, extra_body={"temperature": 0}, messages=msgs, stop_sequences=[word])
    assert (m.stop_reason, m.stop_sequence) == ("stop_sequence", word)
    with c.messages.stream(model="claude-x", max_tokens=24, extra_body={"temperature": 0}, messages=msgs,
                           stop_sequences=[word]) as s:
        final = s.get_final_message()
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", word)
    m = c.messages.create(model="claude-x", max_tokens=24, extra_body={"temperature": 0}, messages=msgs)
    assert m.stop_sequence is None and m.stop_reason in ("end_turn", "max_tokens")
