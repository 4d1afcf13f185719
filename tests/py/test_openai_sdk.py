"""`owl serve` driven by the official openai SDK."""

import rawhttp
import openai
import pytest

from conftest import MODEL, Server

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


def chat(client, **kw):
    args = dict(model=MODEL, messages=QUESTION, max_tokens=24, temperature=0)
    args.update(kw)
    return client.chat.completions.create(**args)


def stream_text(client, **kw):
    """The concatenated deltas, the finish reason and the chunks of a streamed chat."""
    chunks = list(chat(client, stream=True, **kw))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    return text, finish, chunks


def test_models_list(client):
    models = client.models.list().data
    assert models[0].id == MODEL
    assert models[0].model_extra["loaded"] is True
    others = {m.id: m.model_extra for m in models[1:]}
    assert "gemma3-270m" in others and others["gemma3-270m"]["loaded"] is False


def test_chat_stream_equals_non_stream(client):
    r = chat(client)
    text = r.choices[0].message.content
    assert r.object == "chat.completion" and r.model == MODEL
    assert r.choices[0].message.role == "assistant"
    assert text.strip(), r
    assert r.choices[0].finish_reason in ("stop", "length")
    streamed, finish, chunks = stream_text(client)
    assert streamed == text
    assert finish == [r.choices[0].finish_reason]
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"


def test_completions(client):
    r = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert r.object == "text_completion"
    assert r.choices[0].text.strip(), r
    assert r.usage.completion_tokens <= 8
    if r.choices[0].finish_reason == "length":
        assert r.usage.completion_tokens == 8
    s = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in s if c.choices) == r.choices[0].text


def test_usage_matches_tokenize(server, client):
    prompt = "Write a haiku about owls."
    toks = rawhttp.post(server.url + "/tokenize", json={"content": prompt, "add_special": True}).json()["tokens"]
    r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=8, temperature=0)
    assert r.usage.prompt_tokens == len(toks)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens

    rendered = rawhttp.post(server.url + "/apply-template", json={"messages": QUESTION}).json()["prompt"]
    assert "France" in rendered
    toks = rawhttp.post(server.url + "/tokenize", json={"content": rendered, "add_special": True}).json()["tokens"]
    r = chat(client, max_tokens=4)
    assert r.usage.prompt_tokens == len(toks)
    assert r.usage.completion_tokens == 4 or r.choices[0].finish_reason == "stop"
    # Detokenizing gives the prompt's text back (control tokens render as nothing, as in llama.cpp).
    back = rawhttp.post(server.url + "/detokenize", json={"tokens": toks}).json()["content"]
    assert QUESTION[0]["content"] + "\n" in back and "<|im_start|>" not in back


def test_include_usage_and_cached_tokens(client):
    plain = chat(client, max_tokens=8)
    _, _, chunks = stream_text(client, max_tokens=8, stream_options={"include_usage": True})
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert all(c.usage is None for c in chunks[:-1])
    assert last.usage.prompt_tokens == plain.usage.prompt_tokens
    assert last.usage.completion_tokens == plain.usage.completion_tokens
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    # The same prompt again: its prefix comes from the cache.
    assert last.usage.prompt_tokens_details.cached_tokens > 0
    assert last.usage.prompt_tokens_details.cached_tokens < last.usage.prompt_tokens


def test_stop_strings(client):
    text = chat(client, max_tokens=24).choices[0].message.content
    words = text.split()
    assert len(words) >= 3, text
    stop = " " + words[2]
    expected = text[: text.index(stop)]
    r = chat(client, max_tokens=24, stop=[stop, "@@never@@"])
    assert r.choices[0].message.content == expected
    assert r.choices[0].finish_reason == "stop"
    streamed, finish, _ = stream_text(client, max_tokens=24, stop=stop)
    assert streamed == expected and finish == ["stop"]


def test_seed_determinism(client):
    # top_k and min_p are extensions: the SDK sends them through extra_body.
    kw = dict(max_tokens=16, temperature=1.0, top_p=1.0, extra_body={"top_k": 0, "min_p": 0.0})
    messages = [{"role": "user", "content": "Tell me a short story."}]
    a = chat(client, messages=messages, seed=1234, **kw).choices[0].message.content
    b = chat(client, messages=messages, seed=1234, **kw).choices[0].message.content
    assert a == b
    others = {chat(client, messages=messages, seed=s, **kw).choices[0].message.content for s in (1, 2, 3)}
    assert others - {a}, "different seeds should give different samples at temperature 1"


def test_logprobs(client):
    r = chat(client, max_tokens=4, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert 1 <= len(content) <= 4
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 3
        # Greedy: the chosen token is the most likely one.
        assert t.logprob >= max(x.logprob for x in t.top_logprobs) - 1e-3


def test_api_key():
    s = Server("--ctx", "1024", "--parallel", "1", "--api-key", "sekrit")
    try:
        bad = openai.OpenAI(base_url=s.url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=2)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
        good = openai.OpenAI(base_url=s.url + "/v1", api_key="sekrit", max_retries=0)
        r = good.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=2, temperature=0)
        assert r.choices[0].message.content
        assert rawhttp.get(s.url + "/health").status_code == 200
        assert rawhttp.get(s.url + "/metrics").status_code == 401
    finally:
        s.stop()


def test_api_key_from_env():
    s = Server("--ctx", "1024", "--parallel", "1", env={"OWL_API_KEY": "envkey"})
    try:
        assert rawhttp.get(s.url + "/v1/models").status_code == 401
        r = rawhttp.get(s.url + "/v1/models", headers={"Authorization": "Bearer envkey"})
        assert r.status_code == 200 and r.json()["data"][0]["id"] == MODEL
    finally:
        s.stop()


def test_logit_bias_bans_forces_and_refuses(server, client):
    def tokens(text):
        return rawhttp.post(server.url + "/tokenize", json={"content": text, "add_special": False}).json()["tokens"]

    first = chat(client, max_tokens=3, logprobs=True, top_logprobs=2).choices[0].logprobs.content[0]
    best, runner_up = first.token, first.top_logprobs[1].token
    ids = tokens(best)
    assert len(ids) == 1, (best, ids)
    # Banning the greedy first token makes the runner-up come first.
    banned = chat(client, max_tokens=3, logprobs=True, logit_bias={str(ids[0]): -100}).choices[0]
    assert banned.logprobs.content[0].token == runner_up
    # A +100 bias forces a token the model would not pick.
    forced_id = tokens(" owl")[0]
    forced = chat(client, max_tokens=1, logit_bias={str(forced_id): 100}).choices[0].message.content
    assert forced == rawhttp.post(server.url + "/detokenize", json={"tokens": [forced_id]}).json()["content"]
    assert forced != best
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, max_tokens=1, logit_bias={"999999999": 5})
    assert "logit_bias" in str(e.value) and "vocabulary" in str(e.value)
